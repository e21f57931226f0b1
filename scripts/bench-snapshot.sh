#!/usr/bin/env bash
# Snapshot benchmark of a redisraft cluster (make bench-snapshot).
#
# For each dataset size (SIZES keys with random VALUE_SIZE-byte values), on a
# fresh 3-node cluster filled through the leader with pipelined MSETs of
# BATCH keys:
#   1. take snapshot   RAFT.DEBUG COMPACT on the leader, no load: time to +OK,
#                      raft_snapshot_size, the fork time (latest_fork_usec)
#   2. throughput      redis-benchmark SET -c CLIENTS -P 1 -r SET_KEYS for
#                      ~BENCH_SECS: once without a snapshot, once with
#                      RAFT.DEBUG COMPACT sent after COMPACT_DELAY s (also:
#                      the commit rate inside the COMPACT window)
#   3. catch-up        after one more COMPACT (so the log tail is short),
#                      a 4th, empty node JOINs; time until its applied index
#                      reaches the leader's commit index through a snapshot;
#                      peak RSS (VmHWM, and VmRSS sampled every SAMPLE_MS ms)
#                      of the leader and of the new node meanwhile
# The Markdown report goes to stdout (progress to stderr) and to
# $OUT_DIR/results.md, with the numbers in $OUT_DIR/results.csv.
#
# Environment:
#   MODULE=./redisraft.so   the module (make build)
#   SIZES="100000 1000000"  dataset sizes in keys
#   QUICK=1                 smoke run (under a minute): SIZES=20000, BENCH_SECS=3
#   BENCH_SECS=5            wanted length of one redis-benchmark run
#   COMPACT_DELAY=1         seconds into the loaded run when COMPACT is sent
#   VALUE_SIZE=100 BATCH=100 CLIENTS=50 SAMPLE_MS=50
#   FILL_CONNS=8            parallel redis-cli --pipe connections for the fill
#                           (a client has one command in flight: it is blocked
#                           until the command applies)
#   SET_KEYS=10000          redis-benchmark -r: the SETs overwrite this many of
#                           the filled keys (the key count stays the same)
#   LOG_FSYNC=yes           raft.log-fsync of every node
#   LOG_MAX_FILE_SIZE=10000000000  raft.log-max-file-size: high, so that only
#                           the benchmark's own COMPACTs take snapshots
#   CATCHUP_TIMEOUT=600     seconds to wait for the new node
#   OUT_DIR=target/bench-snapshot  (data dirs go to $OUT_DIR/tmp, removed on exit)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIB=$ROOT/scripts/bench

# ---------------------------------------------------------------- settings
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZES=${SIZES:-20000}; BENCH_SECS=${BENCH_SECS:-3}
else
    SIZES=${SIZES:-"100000 1000000"}; BENCH_SECS=${BENCH_SECS:-5}
fi
COMPACT_DELAY=${COMPACT_DELAY:-1}
VALUE_SIZE=${VALUE_SIZE:-100}
BATCH=${BATCH:-100}
FILL_CONNS=${FILL_CONNS:-8}
CLIENTS=${CLIENTS:-50}
SET_KEYS=${SET_KEYS:-10000}
SAMPLE_MS=${SAMPLE_MS:-50}
LOG_FSYNC=${LOG_FSYNC:-yes}
LOG_MAX_FILE_SIZE=${LOG_MAX_FILE_SIZE:-10000000000}
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-600}
MODULE=$(realpath -m "${MODULE:-./redisraft.so}")
OUT_DIR=$(realpath -m "${OUT_DIR:-target/bench-snapshot}")
TMP_ROOT=$OUT_DIR/tmp
COLUMNS="keys,dataset_bytes,fill_s,snapshot_bytes,take_s,fork_ms,base_rps,base_p99,base_max,snap_rps,snap_p99,snap_max,run_s,window_rps,take_load_s,join_s,catchup_s,leader_start_kb,leader_peak_kb,leader_sampled_kb,follower_peak_kb,follower_sampled_kb"

# ---------------------------------------------------------------- state
WORK=""           # this run's temp dir, under $TMP_ROOT
NODE_DIRS=()      # data dir of every node started (its redis.pid names the process)
BG_PIDS=()        # background helpers: redis-benchmark, the RSS sampler
BENCH_ARGS=()     # redis-benchmark arguments of the current run
USED_PORTS=()
PORTS=()          # the current cluster's node ports; PORTS[0] is the leader
PIDS=()           # and their server pids
SIZE_DIR=""       # data dirs of the current size
SET_R=0           # redis-benchmark -r of the current size: min(SET_KEYS, keys)
declare -A R=()   # results of the current size, by column name

log() { echo "[bench-snapshot $(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench-snapshot: error: $*" >&2; exit 1; }
now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# ---------------------------------------------------------------- cleanup
alive() {  # alive PID: running and not a zombie
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || true
    [ -n "$st" ] && [ "$st" != Z ]
}

stop_pid() {  # stop_pid PID: SIGTERM, SIGKILL after 10 s
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_nodes() {  # stop every node started so far
    local d pid
    for d in "${NODE_DIRS[@]}"; do
        pid=$(cat "$d/redis.pid" 2>/dev/null) || continue
        stop_pid "$pid"
    done
    NODE_DIRS=(); PORTS=(); PIDS=()
}

cleanup() {
    local rc=$? pid d
    set +e
    trap - EXIT INT TERM
    for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; then  # a failure, not ^C
        for d in "${NODE_DIRS[@]}"; do
            [ -f "$d/redis.log" ] && { echo "---- $d/redis.log (last 15 lines)" >&2; tail -n 15 "$d/redis.log" >&2; }
        done
    fi
    stop_nodes
    [ -n "$WORK" ] && rm -rf "$WORK"
    rmdir "$TMP_ROOT" 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
check_tools() {
    local t
    for t in redis-server redis-cli redis-benchmark python3 awk; do
        command -v "$t" >/dev/null || die "$t not found in PATH (make setup / scripts/setup.sh)"
    done
    [ -f "$MODULE" ] || die "module $MODULE not found: run 'make build' or set MODULE=/path/to/module.so"
}

pick_port() {  # prints a free TCP port below the ephemeral range
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 10000))
        case " ${USED_PORTS[*]} " in *" $p "*) continue ;; esac
        if python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null; then
            echo "$p"; return
        fi
    done
    die "could not find a free TCP port"
}

info_field() {  # info_field PORT SECTION FIELD: the value, or empty
    redis-cli -p "$1" INFO "$2" 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p" || true
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------- nodes
start_node() {  # start_node NAME: a daemonized node; appends to PORTS and PIDS
    local dir=$SIZE_DIR/$1 port pid
    port=$(pick_port); USED_PORTS+=("$port")
    mkdir -p "$dir"
    NODE_DIRS+=("$dir")
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --dbfilename raft.rdb \
        --save "" --appendonly no --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" --loadmodule "$MODULE" --raft.addr "127.0.0.1:$port" \
        --raft.log-filename raftlog.db --raft.log-fsync "$LOG_FSYNC" \
        --raft.log-max-file-size "$LOG_MAX_FILE_SIZE" >/dev/null 2>&1 ||
        die "redis-server on port $port did not start: see $dir/redis.log"
    for _ in $(seq 1 100); do
        pid=$(cat "$dir/redis.pid" 2>/dev/null) || pid=""
        if [ -n "$pid" ] && [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ]; then
            PORTS+=("$port"); PIDS+=("$pid")
            return
        fi
        sleep 0.1
    done
    die "redis-server on port $port did not answer PING in 10 s"
}

join_node() {  # join_node PORT: RAFT.CLUSTER JOIN to the leader, must answer OK
    local out
    out=$(timeout 300 redis-cli -p "$1" RAFT.CLUSTER JOIN "127.0.0.1:${PORTS[0]}" 2>&1) || true
    [ "$out" = OK ] || die "RAFT.CLUSTER JOIN on port $1 answered: $out"
}

start_cluster() {  # 3 nodes, INIT on the first, JOIN the others; wait for the leader
    local out i
    for i in 1 2 3; do start_node "node$i"; done
    out=$(redis-cli -p "${PORTS[0]}" RAFT.CLUSTER INIT 2>&1) || true
    [[ $out == OK* ]] || die "RAFT.CLUSTER INIT answered: $out"
    join_node "${PORTS[1]}"
    join_node "${PORTS[2]}"
    for _ in $(seq 1 300); do
        if [ "$(info_field "${PORTS[0]}" raft raft_role)" = leader ] &&
            [ "$(info_field "${PORTS[0]}" raft raft_num_voting_nodes)" = 3 ] &&
            [ "$(redis-cli -p "${PORTS[0]}" SET bench:probe 1 2>/dev/null)" = OK ]; then
            return
        fi
        sleep 0.1
    done
    die "node 1 is not a leader of 3 voters accepting SET after 30 s"
}

wait_applied() {  # wait_applied PORT...: until each applied >= the leader's commit
    local port commit applied caught_up
    for _ in $(seq 1 3000); do
        commit=$(info_field "${PORTS[0]}" raft raft_commit_index)
        caught_up=1
        for port in "$@"; do
            applied=$(info_field "$port" raft raft_last_applied_index)
            if [ -z "$applied" ] || [ "$applied" -lt "$commit" ]; then caught_up=0; break; fi
        done
        [ "$caught_up" = 1 ] && return
        sleep 0.1
    done
    die "nodes $* did not apply up to the leader's commit index in 5 minutes"
}

# ---------------------------------------------------------------- steps
fill() {  # fill N: N keys in MSETs of BATCH keys, FILL_CONNS pipes to the leader
    local n=$1 t0 i pid keys pids=()
    python3 "$LIB/snapshot_fill.py" "$n" "$VALUE_SIZE" "$BATCH" "$FILL_CONNS" "$WORK/fill"
    t0=$(now_ns)
    for i in $(seq 0 $((FILL_CONNS - 1))); do
        redis-cli -p "${PORTS[0]}" --pipe <"$WORK/fill.$i" >"$WORK/fill.$i.out" 2>&1 &
        pids+=("$!"); BG_PIDS+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "fill failed: $(cat "$WORK"/fill.*.out)"; done
    BG_PIDS=()
    R[fill_s]=$(secs_since "$t0")
    for i in $(seq 0 $((FILL_CONNS - 1))); do
        grep -q "errors: 0," "$WORK/fill.$i.out" || die "fill had errors: $(cat "$WORK/fill.$i.out")"
    done
    rm -f "$WORK"/fill.*
    keys=$(redis-cli -p "${PORTS[0]}" DBSIZE)
    [ "$keys" -ge "$n" ] || die "only $keys keys after the fill of $n"
    R[dataset_bytes]=$(info_field "${PORTS[0]}" memory used_memory)
}

compact() {  # RAFT.DEBUG COMPACT on the leader; prints the seconds to +OK
    local t0 out
    t0=$(now_ns)
    out=$(redis-cli -p "${PORTS[0]}" RAFT.DEBUG COMPACT 2>&1) || true
    [ "$out" = OK ] || die "RAFT.DEBUG COMPACT answered: $out"
    secs_since "$t0"
}

take_snapshot() {
    local created
    created=$(info_field "${PORTS[0]}" raft raft_snapshots_created)
    R[take_s]=$(compact)
    [ "$(info_field "${PORTS[0]}" raft raft_snapshots_created)" -gt "$created" ] ||
        die "RAFT.DEBUG COMPACT answered OK but raft_snapshots_created did not grow"
    R[snapshot_bytes]=$(info_field "${PORTS[0]}" raft raft_snapshot_size)
    R[fork_ms]=$(awk -v u="$(info_field "${PORTS[0]}" stats latest_fork_usec)" 'BEGIN { printf "%.1f", u / 1000 }')
}

set_args() {  # set_args N: BENCH_ARGS for redis-benchmark SET against the leader
    BENCH_ARGS=(-h 127.0.0.1 -p "${PORTS[0]}" -t set -c "$CLIENTS" -P 1
        -d "$VALUE_SIZE" -r "$SET_R" -n "$1" --csv)
}

parse_set() {  # parse_set OUTFILE PREFIX: R[PREFIX_rps|_p99|_max] from redis-benchmark --csv
    local line
    line=$(grep -i '^"set",' "$1" | tr -d '"\r') ||
        die "no SET line in redis-benchmark output: $(head -c 500 "$1" "$1.err")"
    # test,rps,avg,min,p50,p95,p99,max
    IFS=, read -r _ "R[${2}_rps]" _ _ _ _ "R[${2}_p99]" "R[${2}_max]" <<<"$line"
}

throughput() {  # SET without, then with a COMPACT in the run
    local n secs bpid c0 c1
    # size both runs from a short warm-up, long enough to hold the COMPACT
    set_args $((CLIENTS * 200))
    redis-benchmark "${BENCH_ARGS[@]}" >"$WORK/warm.csv" 2>"$WORK/warm.csv.err" ||
        die "redis-benchmark failed: $(head -c 500 "$WORK/warm.csv.err")"
    parse_set "$WORK/warm.csv" warm
    secs=$(awk -v b="$BENCH_SECS" -v d="$COMPACT_DELAY" -v t="${R[take_s]}" \
        'BEGIN { s = d + 3 * t + 1; if (s < b) s = b; printf "%.1f", s }')
    n=$(awk -v r="${R[warm_rps]}" -v s="$secs" 'BEGIN { printf "%d", r * s }')
    R[run_s]=$secs
    set_args "$n"
    log "  SET -c $CLIENTS -P 1, $n requests (~$secs s) without a snapshot"
    redis-benchmark "${BENCH_ARGS[@]}" >"$WORK/base.csv" 2>"$WORK/base.csv.err" ||
        die "redis-benchmark failed: $(head -c 500 "$WORK/base.csv.err")"
    parse_set "$WORK/base.csv" base
    wait_applied "${PORTS[@]}"

    log "  the same with RAFT.DEBUG COMPACT after $COMPACT_DELAY s"
    redis-benchmark "${BENCH_ARGS[@]}" >"$WORK/snap.csv" 2>"$WORK/snap.csv.err" &
    bpid=$!; BG_PIDS+=("$bpid")
    sleep "$COMPACT_DELAY"
    # the COMPACT window rate: entries committed while COMPACT ran
    c0=$(info_field "${PORTS[0]}" raft raft_commit_index)
    R[take_load_s]=$(compact)
    c1=$(info_field "${PORTS[0]}" raft raft_commit_index)
    alive "$bpid" || log "  WARNING: the SET run ended before COMPACT did; the window rate covers idle time"
    wait "$bpid" || die "redis-benchmark failed: $(head -c 500 "$WORK/snap.csv.err")"
    BG_PIDS=()
    parse_set "$WORK/snap.csv" snap
    R[window_rps]=$(awk -v d=$((c1 - c0)) -v s="${R[take_load_s]}" 'BEGIN { printf "%.0f", d / s }')
}

catch_up() {  # a 4th, empty node joins and catches up through a snapshot
    local leader_pid=${PIDS[0]} port pid spid t0 received commit applied label peak hwm reset samples
    start_node node4
    port=${PORTS[3]}; pid=${PIDS[3]}
    R[leader_start_kb]=$(rss_kb "$leader_pid")
    rm -f "$WORK/rss.stop"
    python3 "$LIB/rss_sampler.py" "$SAMPLE_MS" "$WORK/rss.stop" \
        "leader=$leader_pid" "follower=$pid" >"$WORK/rss.out" &
    spid=$!; BG_PIDS+=("$spid")
    t0=$(now_ns)
    join_node "$port"
    R[join_s]=$(secs_since "$t0")
    # caught up: applied >= the leader's commit, through at least one snapshot
    while :; do
        commit=$(info_field "${PORTS[0]}" raft raft_commit_index)
        applied=$(info_field "$port" raft raft_last_applied_index)
        received=$(info_field "$port" raft raft_snapshots_received)
        if [ -n "$applied" ] && [ "$applied" -ge "$commit" ] && [ "${received:-0}" -ge 1 ]; then
            break
        fi
        awk -v s="$(secs_since "$t0")" -v m="$CATCHUP_TIMEOUT" 'BEGIN { exit !(s > m) }' &&
            die "the new node did not catch up in $CATCHUP_TIMEOUT s (applied $applied, commit $commit, snapshots received $received)"
        sleep 0.05
    done
    R[catchup_s]=$(secs_since "$t0")
    touch "$WORK/rss.stop"
    wait "$spid" || die "the RSS sampler failed"
    BG_PIDS=()
    # peak = VmHWM when its reset worked, else the largest sampled VmRSS
    while read -r label peak hwm reset samples; do
        R[${label}_sampled_kb]=$peak
        if [ "$reset" = 1 ] && [ "$hwm" != - ]; then R[${label}_peak_kb]=$hwm; else R[${label}_peak_kb]=$peak; fi
        log "  $label: VmHWM ${hwm} kB (reset $reset), sampled peak $peak kB in $samples samples"
    done <"$WORK/rss.out"
}

run_size() {  # run_size N: the three measurements on a fresh cluster
    local n=$1 col row=""
    R=([keys]=$n)
    SET_R=$((SET_KEYS < n ? SET_KEYS : n))
    SIZE_DIR=$WORK/$n
    log "== $n keys: starting a 3-node cluster"
    start_cluster
    fill "$n"
    log "  filled $n keys in ${R[fill_s]} s (used_memory $((R[dataset_bytes] / 1000000)) MB); waiting for the followers"
    wait_applied "${PORTS[@]}"

    take_snapshot
    log "  snapshot: ${R[take_s]} s, $((R[snapshot_bytes] / 1000000)) MB, fork ${R[fork_ms]} ms"

    throughput
    log "  SET ops/s: ${R[base_rps]} without, ${R[snap_rps]} with a snapshot, ${R[window_rps]} in the COMPACT window (${R[take_load_s]} s)"
    wait_applied "${PORTS[@]}"

    compact >/dev/null
    log "  a 4th node joins"
    catch_up
    log "  caught up in ${R[catchup_s]} s (JOIN +OK after ${R[join_s]} s)"

    for col in ${COLUMNS//,/ }; do row+=${row:+,}${R[$col]:-}; done
    echo "$row" >>"$WORK/results.csv"
    stop_nodes
    rm -rf "$SIZE_DIR"
}

write_meta() {  # facts about this machine and run, for the report header
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev+="+dirty src"
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
        echo "cores=$(nproc)"
        echo "kernel=$(uname -r)"
        echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "redis=$(redis-server --version | cut -d' ' -f1-3)"
        echo "module=$(realpath -m --relative-to="$ROOT" "$MODULE")"
        case $MODULE in
        "$ROOT"/*) echo "module_info=built $(date -u -r "$MODULE" '+%Y-%m-%d %H:%M UTC'), repo at $rev" ;;
        *) echo "module_info=built $(date -u -r "$MODULE" '+%Y-%m-%d %H:%M UTC')" ;;
        esac
        if [ "$QUICK" = 1 ]; then echo "mode=QUICK=1 (smoke run)"; else echo "mode=full"; fi
        echo "setup=3 nodes on 127.0.0.1, raft.log-fsync $LOG_FSYNC, raft.log-max-file-size $LOG_MAX_FILE_SIZE; keys filled by MSETs of $BATCH keys over $FILL_CONNS connections, with random $VALUE_SIZE-byte values; data dirs in $(realpath -m --relative-to="$ROOT" "$TMP_ROOT") ($(df --output=fstype "$WORK" | tail -n 1))."
        echo "sample_ms=$SAMPLE_MS"
        echo "clients=$CLIENTS"
        echo "set_keys=$SET_KEYS"
        echo "value_size=$VALUE_SIZE"
        echo "bench_secs=$BENCH_SECS"
        echo "compact_delay=$COMPACT_DELAY"
    } >"$WORK/meta"
}

# ---------------------------------------------------------------- main
main() {
    local n
    check_tools
    mkdir -p "$OUT_DIR" "$TMP_ROOT"
    WORK=$(mktemp -d "$TMP_ROOT/run.XXXXXX")
    write_meta
    echo "$COLUMNS" >"$WORK/results.csv"
    log "sizes: $SIZES; module $MODULE; report to $OUT_DIR"
    for n in $SIZES; do run_size "$n"; done
    echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta"
    cp "$WORK/results.csv" "$OUT_DIR/results.csv"
    python3 "$LIB/snapshot_report.py" "$WORK/results.csv" "$WORK/meta" >"$OUT_DIR/results.md"
    cat "$OUT_DIR/results.md"
    log "wrote $OUT_DIR/results.md and results.csv"
}

main "$@"
