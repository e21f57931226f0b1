#!/usr/bin/env bash
# Jepsen smoke (about three minutes; make jepsen-smoke, part of make test):
#   1. list-append, nemesis kill,partition,member, 40 s, raft.log-max-file-size
#      200000 (snapshots and snapshot catch-up under faults);
#   2. register, nemesis partition,pause, 30 s, with passwords: every node
#      runs with requirepass and raft.cluster-password (--password), so the
#      nodes authenticate to each other and every client connection (the
#      workload's, the nemesis's, JOIN, the digest comparison) sends AUTH;
#      the run fails at setup unless n1 refuses a PING without AUTH;
#   3. ttl (short TTLs, PERSIST, APPEND, GET and PTTL), nemesis
#      kill,pause,partition, 30 s;
#   4. queue (stream consumer group as a work queue: XADD, XREADGROUP, XACK,
#      XAUTOCLAIM, XPENDING and XCLAIM), nemesis kill,partition,pause, 15 s;
#   5. cargo test -p redisraft-jepsen: the checkers' unit tests, the
#      unsafe-setting detection test (raft.unsafe-local-reads yes must be
#      reported nonlinearizable, the default must pass) and the digest test
#      (a node written alone must fail a run with nodes-differ).
# Every run ends with the comparison of the nodes' DEBUG DIGEST at one
# applied index (the digests column of the table).
# Without network namespaces (not root, no `ip netns`) it runs on
# local-loopback and leaves partitions out.
# Env: REDIS_SERVER (the server binary, e.g. Valkey's) [redis-server],
#      SMOKE_ONLY (names of runs to do, no cargo test) [all],
#      MODULE (the module .so) [./redisraft.so], TEST_MODULE (the test build,
#      feature failpoints, for step 5: raft.unsafe-local-reads exists only
#      there) [$MODULE], CARGO_TARGET_DIR [target],
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
TEST_MODULE=${TEST_MODULE:-$MODULE}
echo "== jepsen-smoke: building redisraft-jepsen"
CARGO_TARGET_DIR=$TARGET $CARGO build --release -p redisraft-jepsen || exit 2
BIN=$TARGET/release/redisraft-jepsen

"$ROOT/scripts/jepsen-net-tools.sh"
ENV=${JEPSEN_ENV:-$("$BIN" env)}
if [[ $ENV == local ]]; then
    LA_NEMESIS=kill,partition,member
    REG_NEMESIS=partition,pause
    TTL_NEMESIS=kill,pause,partition
    QUEUE_NEMESIS=kill,partition,pause
else
    echo "jepsen-smoke: network namespaces not usable: local-loopback, no partitions"
    LA_NEMESIS=kill,member
    REG_NEMESIS=pause
    TTL_NEMESIS=kill,pause
    QUEUE_NEMESIS=kill,pause
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

# SMOKE_ONLY="list-append ..." runs only those runs and no cargo test
# (make test's second server).
want() { [[ -z ${SMOKE_ONLY:-} || " $SMOKE_ONLY " == *" $1 "* ]]; }
echo "jepsen-smoke: server ${REDIS_SERVER:-redis-server}"
want list-append && run list-append-1 --workload list-append --nemesis "$LA_NEMESIS" --time-limit 40 \
    --config "raft.log-max-file-size 200000"
want register && run register-1 --workload register --nemesis "$REG_NEMESIS" --time-limit 30 \
    --password smoke-pw
want ttl && run ttl-1 --workload ttl --nemesis "$TTL_NEMESIS" --time-limit 30
want queue && run queue-1 --workload queue --nemesis "$QUEUE_NEMESIS" --time-limit 15

test_rc=0
if [[ -z ${SMOKE_ONLY:-} ]]; then
    echo
    echo "== jepsen-smoke: cargo test -p redisraft-jepsen (checkers, unsafe-setting detection, digest check)"
    t0=$(date +%s)
    JEPSEN_TEST_ENV=$ENV REDISRAFT_MODULE=$TEST_MODULE CARGO_TARGET_DIR=$TARGET \
        $CARGO test --release -p redisraft-jepsen -- --nocapture || test_rc=$?
    echo "jepsen-smoke: cargo test exit $test_rc in $(( $(date +%s) - t0 )) s"
fi

echo
echo "== jepsen-smoke: done in $(( $(date +%s) - t_all )) s"
table_rc=0
"$ROOT/scripts/jepsen-table.sh" "${dirs[@]}" || table_rc=$?
if [[ $test_rc != 0 ]]; then
    echo "jepsen-smoke: cargo test -p redisraft-jepsen FAILED"
    exit 1
fi
exit "$table_rc"
