#!/usr/bin/env bash
# Stops and removes the containers, their data volumes and the network.
# Images are kept unless PURGE=1 (then node/control/base images go too).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

compose down --volumes --remove-orphans --timeout 5
if [[ ${PURGE:-0} == 1 ]]; then
    docker image rm -f "$CONTROL_IMAGE" "$NODE_IMAGE" "$BASE_IMAGE" 2>/dev/null || true
    rm -rf "$BUILD_DIR" "${SCRATCH:-/var/tmp/redisraft-jepsen}"
fi
