# Shared by up.sh, run.sh, down.sh (sourced, not run).
DOCKER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DOCKER_DIR/../.." && pwd)
BUILD_DIR=$DOCKER_DIR/.build
BASE_IMAGE=redisraft-jepsen-base:latest
NODE_IMAGE=redisraft-jepsen-node:latest
CONTROL_IMAGE=redisraft-jepsen-control:latest
NODES=(n1 n2 n3 n4 n5)
export COMPOSE_PROJECT_NAME=redisraft-jepsen

# docker-compose (v1) or the `docker compose` plugin, on our compose file.
compose() {
    if command -v docker-compose >/dev/null; then
        docker-compose -f "$DOCKER_DIR/docker-compose.yml" "$@"
    else
        docker compose -f "$DOCKER_DIR/docker-compose.yml" "$@"
    fi
}
