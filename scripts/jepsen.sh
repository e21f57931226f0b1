#!/usr/bin/env bash
# The Jepsen-style suite over workloads x runs (make jepsen, make jepsen-docker).
#
# Env (defaults in brackets):
#   TIME      seconds of workload and faults per run [120]
#   RUNS      runs of each workload [1]
#   WORKLOAD  workloads, comma or space separated [list-append register counter ttl]
#   NEMESIS   nemesis list for every run [all]
#   NODES     cluster size [5]
#   JEPSEN_ENV  local | local-loopback | docker [what the runner picks]
#   JEPSEN_OUT  results root [target/jepsen]; each run in
#               <root>/<timestamp>-<workload>-<n>/
#   JEPSEN_ARGS extra arguments for every `redisraft-jepsen run` (shell
#               quoting, e.g. --config "raft.x y")
#   LOG_MAX_FILE_SIZE  raft.log-max-file-size of odd-numbered runs, so that
#               snapshots, compaction and snapshot catch-up happen under
#               faults; even-numbered runs keep the module's default.
#               Empty: the default everywhere [200000]
#   CARGO_TARGET_DIR  where the runner is built [target]
#   FP_TARGET_DIR     where the module is built with the failpoints feature,
#                     so that the crash nemesis works [target/failpoints]
#   SKIP_BUILD=1      use the binaries as they are
#   DOCKER=1          run through jepsen/docker (up.sh, run.sh, down.sh)
# Prints a table of the runs at the end (with each run's final DEBUG DIGEST
# comparison); exits 1 if any run was not valid or its digests differed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

TIME=${TIME:-120}
RUNS=${RUNS:-1}
WORKLOAD=${WORKLOAD:-list-append register counter ttl}
NEMESIS=${NEMESIS:-all}
NODES=${NODES:-5}
JEPSEN_OUT=${JEPSEN_OUT:-$ROOT/target/jepsen}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FP_TARGET=${FP_TARGET_DIR:-$ROOT/target/failpoints}
CARGO=${CARGO:-cargo}
LOG_MAX_FILE_SIZE=${LOG_MAX_FILE_SIZE-200000}
eval "EXTRA=(${JEPSEN_ARGS:-})" || die "JEPSEN_ARGS: bad quoting"
read -r -a WORKLOADS <<<"${WORKLOAD//,/ }"

die() { echo "jepsen.sh: $*" >&2; exit 2; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building the runner ($TARGET) and the module with failpoints ($FP_TARGET)"
    CARGO_TARGET_DIR=$TARGET $CARGO build --release -p redisraft-jepsen || die "building redisraft-jepsen failed"
    CARGO_TARGET_DIR=$FP_TARGET $CARGO build --release -p redisraft --features failpoints ||
        die "building the module with failpoints failed"
fi
BIN=$TARGET/release/redisraft-jepsen
MODULE=${JEPSEN_MODULE:-$FP_TARGET/release/libredisraft.so}
[[ -x $BIN ]] || die "$BIN missing"
[[ -f $MODULE ]] || die "$MODULE missing"

if [[ ${DOCKER:-0} == 1 ]]; then
    D=$ROOT/jepsen/docker
    echo "== docker: up.sh"
    "$D/up.sh" || die "jepsen/docker/up.sh failed"
    # The nodes get the module built with failpoints (up.sh staged a plain one).
    for n in n1 n2 n3 n4 n5; do
        docker cp "$MODULE" "$n:/opt/redisraft/redisraft.so" >/dev/null ||
            echo "jepsen.sh: WARNING: could not copy the failpoints module to $n (crash nemesis skipped)" >&2
    done
    trap '"$D/down.sh" >/dev/null 2>&1 || true' EXIT
fi

[[ ${DOCKER:-0} == 1 ]] || "$ROOT/scripts/jepsen-net-tools.sh"
mkdir -p "$JEPSEN_OUT"
stamp=$(date +%Y%m%dT%H%M%S)
dirs=()
t_all=$(date +%s)
for wl in "${WORKLOADS[@]}"; do
    for n in $(seq 1 "$RUNS"); do
        name=$stamp-$wl-$n
        out=$JEPSEN_OUT/$name
        args=("${EXTRA[@]}")
        if [[ -n $LOG_MAX_FILE_SIZE && $((n % 2)) == 1 ]]; then
            args+=(--config "raft.log-max-file-size $LOG_MAX_FILE_SIZE")
        fi
        echo
        echo "== $wl run $n/$RUNS: nemesis $NEMESIS, $NODES nodes, $TIME s ${args[*]} -> $out"
        t0=$(date +%s)
        rc=0
        if [[ ${DOCKER:-0} == 1 ]]; then
            mkdir -p "$out"
            NAME=$name TIME=$TIME NEMESIS=$NEMESIS WORKLOAD=$wl \
                "$ROOT/jepsen/docker/run.sh" --nodes "$NODES" "${args[@]}" || rc=$?
            # run.sh leaves the results in jepsen/docker/results/<name>.
            if [[ -d $ROOT/jepsen/docker/results/$name ]]; then
                rm -rf "$out" && cp -a "$ROOT/jepsen/docker/results/$name" "$out"
            fi
        else
            env_args=()
            [[ -n ${JEPSEN_ENV:-} ]] && env_args=(--env "$JEPSEN_ENV")
            "$BIN" run --workload "$wl" --nemesis "$NEMESIS" --nodes "$NODES" \
                --time-limit "$TIME" --module "$MODULE" --out "$out" \
                "${env_args[@]}" "${args[@]}" || rc=$?
        fi
        echo "$rc" >"$out/exit-code"
        echo "$(( $(date +%s) - t0 ))" >"$out/wall-seconds"
        dirs+=("$out")
    done
done

echo
echo "== $(( ${#dirs[@]} )) runs in $(( ($(date +%s) - t_all) / 60 )) min; results in $JEPSEN_OUT"
"$ROOT/scripts/jepsen-table.sh" "${dirs[@]}"
