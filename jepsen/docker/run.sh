#!/usr/bin/env bash
# Runs the suite inside control; results land in jepsen/docker/results/<name>.
# Env: TIME (60), NEMESIS (all), WORKLOAD (list-append), NAME (timestamped).
# Extra arguments are passed to `redisraft-jepsen run` as they are.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TIME=${TIME:-60}
NEMESIS=${NEMESIS:-all}
WORKLOAD=${WORKLOAD:-list-append}
NAME=${NAME:-$(date +%Y%m%dT%H%M%S)-$WORKLOAD-$NEMESIS}
HOSTS=$(IFS=,; echo "${NODES[*]}")

docker inspect -f '{{.State.Running}}' control 2>/dev/null | grep -q true ||
    { echo "run.sh: control is not running; start it with up.sh" >&2; exit 1; }

tty=(); [[ -t 1 ]] && tty=(-t)
rc=0
docker exec "${tty[@]}" control redisraft-jepsen run \
    --env docker --hosts "$HOSTS" --module /opt/redisraft/redisraft.so \
    --out "/results/$NAME" \
    --time-limit "$TIME" --nemesis "$NEMESIS" --workload "$WORKLOAD" \
    "$@" || rc=$?

# results/latest -> the run just made.
[[ -d $DOCKER_DIR/results/$NAME ]] && ln -sfn "$NAME" "$DOCKER_DIR/results/latest"
echo "run.sh: exit $rc; results in $DOCKER_DIR/results/$NAME"
exit "$rc"
