#!/usr/bin/env bash
# Builds the module and the jepsen binary, the base/node/control images,
# starts n1..n5 + control, and waits until control can ssh to every node.
# SKIP_CARGO=1 reuses target/release as it is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
t0=$(date +%s)

# 1. Binaries (bookworm host -> bookworm image, so glibc matches).
if [[ ${SKIP_CARGO:-0} != 1 ]]; then
    cd "$REPO_ROOT"
    if ! cargo build --release -p redisraft -p redisraft-jepsen; then
        echo "up.sh: WARNING: building redisraft-jepsen failed; building the module alone" >&2
        cargo build --release -p redisraft
    fi
fi
SO=$REPO_ROOT/target/release/libredisraft.so
JEPSEN=$REPO_ROOT/target/release/redisraft-jepsen
[[ -f $SO ]] || { echo "up.sh: $SO missing" >&2; exit 1; }

# 2. Base image (cached).
"$DOCKER_DIR/build-base.sh"

# 3. ssh key pair, made once into the gitignored .build dir.
mkdir -p "$BUILD_DIR/ssh" "$BUILD_DIR/node" "$BUILD_DIR/control"
if [[ ! -f $BUILD_DIR/ssh/id_ed25519 ]]; then
    docker run --rm -v "$BUILD_DIR/ssh:/k" "$BASE_IMAGE" \
        ssh-keygen -q -t ed25519 -N '' -C redisraft-jepsen -f /k/id_ed25519
fi

# 4. Stage the build contexts and build the images.
cp "$SO" "$BUILD_DIR/node/redisraft.so"
cp "$BUILD_DIR/ssh/id_ed25519.pub" "$BUILD_DIR/node/authorized_keys"
cp "$DOCKER_DIR/node/node-entrypoint.sh" "$BUILD_DIR/node/"
cp "$BUILD_DIR/ssh/id_ed25519" "$BUILD_DIR/control/id_ed25519"
if [[ -f $JEPSEN ]]; then
    cp "$JEPSEN" "$BUILD_DIR/control/redisraft-jepsen"
else
    echo "up.sh: WARNING: $JEPSEN missing; control gets a placeholder" >&2
    printf '#!/bin/sh\necho "redisraft-jepsen was not built" >&2\nexit 127\n' \
        > "$BUILD_DIR/control/redisraft-jepsen"
fi
docker build -q -t "$NODE_IMAGE" -f "$DOCKER_DIR/node/Dockerfile" "$BUILD_DIR/node"
docker build -q -t "$CONTROL_IMAGE" -f "$DOCKER_DIR/control/Dockerfile" "$BUILD_DIR/control"
docker image prune -f --filter label=redisraft-jepsen=1 >/dev/null   # old untagged builds

# 5. Fresh containers and data volumes every time (down first: recreating
#    in place would leak the old anonymous volumes).
mkdir -p "$DOCKER_DIR/results"
compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
compose up -d

# 6. Wait until control reaches every node over ssh.
for i in $(seq 1 60); do
    if docker exec control sh -c \
        'for h in "$@"; do ssh -o BatchMode=yes "root@$h" true || exit 1; done' \
        sh "${NODES[@]}" 2>/dev/null; then
        echo "up.sh: cluster up (${NODES[*]} + control) in $(( $(date +%s) - t0 ))s"
        exit 0
    fi
    sleep 1
done
echo "up.sh: control cannot ssh to all nodes after 60s" >&2
compose ps >&2
exit 1
