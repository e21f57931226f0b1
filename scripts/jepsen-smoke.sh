#!/usr/bin/env bash
# Jepsen smoke (about two minutes; make jepsen-smoke, part of make test):
#   1. list-append, nemesis kill,partition,member, 40 s, raft.log-max-file-size
#      200000 (snapshots and snapshot catch-up under faults);
#   2. register, nemesis partition,pause, 30 s;
#   3. cargo test -p redisraft-jepsen: the checkers' unit tests and the
#      unsafe-setting detection test (raft.unsafe-local-reads yes must be
#      reported nonlinearizable, the default must pass).
# Without network namespaces (not root, no `ip netns`) it runs on
# local-loopback and leaves partitions out.
# Env: MODULE (the module .so) [./redisraft.so], CARGO_TARGET_DIR [target],
#      JEPSEN_OUT [target/jepsen], JEPSEN_ENV (local-loopback forces the
#      fallback) [local if it works].
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MODULE=${MODULE:-$ROOT/redisraft.so}
JEPSEN_OUT=${JEPSEN_OUT:-$ROOT/target/jepsen}
t_all=$(date +%s)

[[ -f $MODULE ]] || { echo "jepsen-smoke: $MODULE missing (make build)" >&2; exit 2; }
MODULE=$(cd "$(dirname "$MODULE")" && pwd)/$(basename "$MODULE")
echo "== jepsen-smoke: building redisraft-jepsen"
CARGO_TARGET_DIR=$TARGET $CARGO build --release -p redisraft-jepsen || exit 2
BIN=$TARGET/release/redisraft-jepsen

"$ROOT/scripts/jepsen-net-tools.sh"
ENV=${JEPSEN_ENV:-$("$BIN" env)}
if [[ $ENV == local ]]; then
    LA_NEMESIS=kill,partition,member
    REG_NEMESIS=partition,pause
else
    echo "jepsen-smoke: network namespaces not usable: local-loopback, no partitions"
    LA_NEMESIS=kill,member
    REG_NEMESIS=pause
fi

stamp=$(date +%Y%m%dT%H%M%S)
dirs=()
run() { # name args...
    local name=$1
    shift
    local out=$JEPSEN_OUT/smoke-$stamp-$name
    echo
    echo "== jepsen-smoke: $name -> $out"
    local t0 rc=0
    t0=$(date +%s)
    "$BIN" run --env "$ENV" --nodes 5 --module "$MODULE" --out "$out" "$@" || rc=$?
    mkdir -p "$out"
    echo "$rc" >"$out/exit-code"
    echo "$(( $(date +%s) - t0 ))" >"$out/wall-seconds"
    echo "jepsen-smoke: $name exit $rc in $(( $(date +%s) - t0 )) s"
    dirs+=("$out")
}

run list-append-1 --workload list-append --nemesis "$LA_NEMESIS" --time-limit 40 \
    --config "raft.log-max-file-size 200000"
run register-1 --workload register --nemesis "$REG_NEMESIS" --time-limit 30

echo
echo "== jepsen-smoke: cargo test -p redisraft-jepsen (checkers, unsafe-setting detection)"
t0=$(date +%s)
test_rc=0
JEPSEN_TEST_ENV=$ENV REDISRAFT_MODULE=$MODULE CARGO_TARGET_DIR=$TARGET \
    $CARGO test --release -p redisraft-jepsen -- --nocapture || test_rc=$?
echo "jepsen-smoke: cargo test exit $test_rc in $(( $(date +%s) - t0 )) s"

echo
echo "== jepsen-smoke: done in $(( $(date +%s) - t_all )) s"
table_rc=0
"$ROOT/scripts/jepsen-table.sh" "${dirs[@]}" || table_rc=$?
if [[ $test_rc != 0 ]]; then
    echo "jepsen-smoke: cargo test -p redisraft-jepsen FAILED"
    exit 1
fi
exit "$table_rc"
