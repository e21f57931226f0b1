#!/usr/bin/env bash
# Side-by-side benchmark: plain Redis vs a 3-node redisraft cluster.
#
# Targets, each started fresh, one after another:
#   redis-none          redis-server without persistence
#   redis-aof-always    appendonly yes, appendfsync always
#   redis-aof-everysec  appendonly yes, appendfsync everysec
#   raft-fsync-yes      3 nodes loading $MODULE, raft.log-fsync yes
#   raft-fsync-no       3 nodes loading $MODULE, raft.log-fsync no
#   compare-module      3 nodes loading $COMPARE_MODULE (only when it is set)
#
# Load: redis-benchmark -t SET,GET,INCR,LPUSH -c 50 -P 1|16 -d 100 -r 100000
# against the leader, RUNS times each (median), plus SET -P 1 with 1/10/50/200
# clients. The Markdown report goes to stdout (progress to stderr); files go
# to $OUT_DIR: results.csv, results.md, results.svg, sweep.svg, raw.csv.
#
# Environment:
#   MODULE=./redisraft.so  our module (make build)
#   RUNS=3                 runs per measurement; the median is reported
#   REQUESTS=              fixed -n for every run (default: calibrated per target
#                          and test so that one run takes about BENCH_SECS)
#   BENCH_SECS=3           wanted duration of one run
#   QUICK=1                smoke test (~1 min): RUNS=1, BENCH_SECS=0.5, SET+GET,
#                          clients sweep 1/50
#   TARGETS="a b ..."      which targets, in this order (default: all above)
#   TESTS="set get incr lpush"  PIPELINES="1 16"  SWEEP_CLIENTS="1 10 50 200"
#   OUT_DIR=target/bench   where the report files go
#   BENCH_TMPDIR=$OUT_DIR  parent of the temporary data dirs (must be on the
#                          disk you want to measure, not tmpfs); removed on exit
#   COMPARE_MODULE=/path/other.so   another Raft module to run the same way:
#     COMPARE_MODULE_ARGS  its load arguments; {port}, {dir}, {node} are
#                          replaced per node; split on spaces. Default:
#                          "--raft.addr 127.0.0.1:{port} --raft.log-filename raftlog.db --raft.log-fsync yes"
#     COMPARE_INIT         shell commands that form the cluster; $P1 $P2 $P3 are
#                          the node ports. Default: RAFT.CLUSTER INIT on $P1,
#                          RAFT.CLUSTER JOIN 127.0.0.1:$P1 on $P2 and $P3.
#     The leader is the node whose INFO raft says raft_role:leader (else $P1).
#   Example (RedisLabs/redisraft built for Redis 7, which takes the same --raft.*
#   configs and RAFT.CLUSTER commands, so the defaults fit):
#     COMPARE_MODULE=~/redisraft/redisraft.so scripts/bench.sh
#   Example with old-style (key=value) module arguments and an explicit init:
#     COMPARE_MODULE=/x.so COMPARE_MODULE_ARGS="addr=127.0.0.1:{port} raft-log-filename=raftlog.db" \
#     COMPARE_INIT='redis-cli -p $P1 RAFT.CLUSTER INIT && redis-cli -p $P2 RAFT.CLUSTER JOIN 127.0.0.1:$P1 && redis-cli -p $P3 RAFT.CLUSTER JOIN 127.0.0.1:$P1' \
#     scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIB=$ROOT/scripts/bench

# ---------------------------------------------------------------- settings
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1}; BENCH_SECS=${BENCH_SECS:-0.5}
    TESTS=${TESTS:-"set get"}; SWEEP_CLIENTS=${SWEEP_CLIENTS:-"1 50"}
    PROBE_ITERS=200; IDLE_SECS=1
else
    RUNS=${RUNS:-3}; BENCH_SECS=${BENCH_SECS:-3}
    TESTS=${TESTS:-"set get incr lpush"}; SWEEP_CLIENTS=${SWEEP_CLIENTS:-"1 10 50 200"}
    PROBE_ITERS=1000; IDLE_SECS=3
fi
REQUESTS=${REQUESTS:-}
PIPELINES=${PIPELINES:-"1 16"}
CLIENTS=50                  # clients for the test x pipeline matrix
DATA_SIZE=100               # -d
KEYSPACE=100000             # -r; all of these keys are prefilled
MAX_REQUESTS=5000000
MODULE=$(realpath -m "${MODULE:-./redisraft.so}")
COMPARE_MODULE=${COMPARE_MODULE:-}
COMPARE_MODULE_ARGS=${COMPARE_MODULE_ARGS:-"--raft.addr 127.0.0.1:{port} --raft.log-filename raftlog.db --raft.log-fsync yes"}
COMPARE_INIT=${COMPARE_INIT:-}
OUT_DIR=$(realpath -m "${OUT_DIR:-target/bench}")
BENCH_TMPDIR=$(realpath -m "${BENCH_TMPDIR:-$OUT_DIR}")
DEFAULT_TARGETS="redis-none redis-aof-always redis-aof-everysec raft-fsync-yes raft-fsync-no"
[ -n "$COMPARE_MODULE" ] && DEFAULT_TARGETS+=" compare-module"
TARGETS=${TARGETS:-$DEFAULT_TARGETS}
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- state
WORK=""            # temp dir of this run
RAW=""             # raw.csv being written
USED_PORTS=()      # ports handed out in this run
NODE_PIDS=()       # the running target's servers (leader first once formed); the exit trap stops them
NODE_PORTS=()
NODE_DIRS=()
LEADER_PORT=""
HAS_FSYNC_COUNT=0  # 1 if the leader's INFO raft has raft_fsync_count
CUR_TARGET=""
FREE_PORT=""
CAL_N=0
LAST_RPS=0

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup
alive() {  # alive PID: running and not a zombie
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || true
    [ -n "$st" ] && [ "$st" != Z ]
}

stop_pids() {  # stop_pids PID...: SIGTERM, then SIGKILL after 10 s
    local pid i
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

show_logs() {  # tail of the current target's server logs, for a failure
    local d
    for d in "${NODE_DIRS[@]}"; do
        [ -f "$d/redis.log" ] || continue
        echo "---- $d/redis.log (last 15 lines)" >&2
        tail -n 15 "$d/redis.log" >&2 || true
    done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && [ ${#NODE_DIRS[@]} -gt 0 ]; then show_logs; fi
    if [ ${#NODE_PIDS[@]} -gt 0 ]; then stop_pids "${NODE_PIDS[@]}"; fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
check_tools() {
    command -v redis-benchmark >/dev/null ||
        die "redis-benchmark not found in PATH: install redis-tools (make setup / scripts/setup.sh)"
    local t
    for t in redis-server redis-cli python3 awk; do
        command -v "$t" >/dev/null || die "$t not found in PATH (make setup / scripts/setup.sh)"
    done
    case " $TARGETS " in *" raft-"*)
        [ -f "$MODULE" ] || die "module $MODULE not found: run 'make build' or set MODULE=/path/to/module.so" ;;
    esac
    case " $TARGETS " in *" compare-module "*)
        [ -f "$COMPARE_MODULE" ] || die "COMPARE_MODULE=$COMPARE_MODULE not found" ;;
    esac
    for t in $TARGETS; do
        case $t in
        redis-none | redis-aof-always | redis-aof-everysec | raft-fsync-yes | raft-fsync-no | compare-module) ;;
        *) die "unknown target '$t' in TARGETS" ;;
        esac
    done
}

pick_port() {  # sets FREE_PORT to a port below the ephemeral range that we can bind
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 10000))
        case " ${USED_PORTS[*]} " in *" $p "*) continue ;; esac
        if python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null; then
            USED_PORTS+=("$p"); FREE_PORT=$p; return
        fi
    done
    die "could not find a free TCP port"
}

info_field() {  # info_field PORT SECTION FIELD: the value, or empty
    redis-cli -p "$1" INFO "$2" 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p" || true
}

cpu_ticks() {  # cpu_ticks PID: utime+stime in clock ticks (all threads)
    local s
    s=$(cat "/proc/$1/stat") || die "server pid $1 is gone (target $CUR_TARGET)"
    s=${s##*) }
    # shellcheck disable=SC2086  # split the fields of /proc/PID/stat
    set -- $s
    echo $((${12} + ${13}))
}

fsync_count() {  # the leader's raft_fsync_count, empty when not reported
    [ "$HAS_FSYNC_COUNT" = 1 ] && info_field "$LEADER_PORT" raft raft_fsync_count
    return 0
}

# ---------------------------------------------------------------- servers
spawn_server() {  # spawn_server NODE_DIR PORT ARGS...: start one redis-server, wait for PING
    local dir=$1 port=$2 pid
    shift 2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
        --daemonize no --logfile "$dir/redis.log" "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    NODE_PIDS+=("$pid"); NODE_PORTS+=("$port"); NODE_DIRS+=("$dir")
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && return
        alive "$pid" || die "redis-server on port $port exited at start ($CUR_TARGET)"
        sleep 0.1
    done
    die "redis-server on port $port did not answer PING in 10 s ($CUR_TARGET)"
}

start_redis() {  # start_redis ARGS...: one plain redis-server
    pick_port
    spawn_server "$WORK/$CUR_TARGET" "$FREE_PORT" --dbfilename dump.rdb "$@"
    LEADER_PORT=$FREE_PORT
    HAS_FSYNC_COUNT=0
}

start_cluster() {  # start_cluster MODULE ARGS_TEMPLATE INIT_CMDS: 3 nodes + form + wait
    local module=$1 tmpl=$2 init=$3 i args
    for i in 1 2 3; do
        pick_port
        args=${tmpl//\{port\}/$FREE_PORT}
        args=${args//\{dir\}/$WORK/$CUR_TARGET/node$i}
        args=${args//\{node\}/$i}
        # shellcheck disable=SC2086  # the module arguments are a space-separated list
        spawn_server "$WORK/$CUR_TARGET/node$i" "$FREE_PORT" --dbfilename raft.rdb \
            --appendonly no --loadmodule "$module" $args
    done
    if [ -z "$init" ]; then
        form_cluster
    else
        P1=${NODE_PORTS[0]} P2=${NODE_PORTS[1]} P3=${NODE_PORTS[2]} \
            bash -euo pipefail -c "$init" >&2 || die "COMPARE_INIT failed"
    fi
    wait_cluster
}

form_cluster() {  # RAFT.CLUSTER INIT on node 1, JOIN on the others
    local p1=${NODE_PORTS[0]} out i
    out=$(redis-cli -p "$p1" RAFT.CLUSTER INIT 2>&1) || true
    [[ $out == OK* ]] || die "RAFT.CLUSTER INIT on port $p1 answered: $out"
    for i in 1 2; do
        out=$(timeout 130 redis-cli -p "${NODE_PORTS[$i]}" RAFT.CLUSTER JOIN "127.0.0.1:$p1" 2>&1) || true
        [[ $out == OK* ]] || die "RAFT.CLUSTER JOIN on port ${NODE_PORTS[$i]} answered: $out"
    done
}

wait_cluster() {  # wait for 3 voters, all nodes up, a leader that accepts SET
    local i leader vn st ok any_role
    for _ in $(seq 1 600); do
        leader=""; any_role=0; ok=1
        for i in 0 1 2; do
            case $(info_field "${NODE_PORTS[$i]}" raft raft_role) in
            leader) leader=$i; any_role=1 ;;
            "") ;;
            *) any_role=1 ;;
            esac
            st=$(info_field "${NODE_PORTS[$i]}" raft raft_state)
            [ -z "$st" ] || [ "$st" = up ] || ok=0
        done
        [ "$any_role" = 0 ] && leader=0   # module without raft_role: use node 1
        if [ -n "$leader" ] && [ "$ok" = 1 ]; then
            vn=$(info_field "${NODE_PORTS[$leader]}" raft raft_num_voting_nodes)
            if { [ -z "$vn" ] || [ "$vn" = 3 ]; } &&
                [ "$(redis-cli -p "${NODE_PORTS[$leader]}" SET bench:probe 1 2>/dev/null)" = OK ]; then
                LEADER_PORT=${NODE_PORTS[$leader]}
                # leader first, so the CPU column reads "leader / followers"
                if [ "$leader" != 0 ]; then
                    local t=${NODE_PIDS[0]}; NODE_PIDS[0]=${NODE_PIDS[$leader]}; NODE_PIDS[$leader]=$t
                fi
                HAS_FSYNC_COUNT=0
                [ -n "$(info_field "$LEADER_PORT" raft raft_fsync_count)" ] && HAS_FSYNC_COUNT=1
                log "$CUR_TARGET: cluster ready, leader on port $LEADER_PORT"
                return
            fi
        fi
        sleep 0.1
    done
    die "$CUR_TARGET: cluster not ready after 60 s (no leader with 3 voting nodes accepting SET)"
}

start_target() {
    NODE_PIDS=(); NODE_PORTS=(); NODE_DIRS=(); LEADER_PORT=""
    case $CUR_TARGET in
    redis-none) start_redis --appendonly no ;;
    redis-aof-always) start_redis --appendonly yes --appendfsync always ;;
    redis-aof-everysec) start_redis --appendonly yes --appendfsync everysec ;;
    raft-fsync-yes | raft-fsync-no)
        start_cluster "$MODULE" "--raft.addr 127.0.0.1:{port} --raft.log-filename raftlog.db --raft.log-fsync ${CUR_TARGET#raft-fsync-}" "" ;;
    compare-module) start_cluster "$COMPARE_MODULE" "$COMPARE_MODULE_ARGS" "$COMPARE_INIT" ;;
    esac
}

stop_target() {
    stop_pids "${NODE_PIDS[@]}"
    rm -rf "${WORK:?}/$CUR_TARGET"
    NODE_PIDS=(); NODE_PORTS=(); NODE_DIRS=()
}

idle_cpu() {  # CPU use of each server with no load, in % of one core, to idle.csv
    local pid c0=() c1=() i out=""
    for pid in "${NODE_PIDS[@]}"; do c0+=("$(cpu_ticks "$pid")"); done
    sleep "$IDLE_SECS"
    for pid in "${NODE_PIDS[@]}"; do c1+=("$(cpu_ticks "$pid")"); done
    for i in "${!c0[@]}"; do
        out+=${out:+;}$(awk -v d=$((c1[i] - c0[i])) -v hz="$CLK_TCK" -v s="$IDLE_SECS" \
            'BEGIN { printf "%.1f", d / hz / s * 100 }')
    done
    echo "$CUR_TARGET,$out" >>"$WORK/idle.csv"
    log "$CUR_TARGET: idle CPU % per node: $out"
}

prefill() {  # create every key GET can ask for, in MSET batches
    local out n
    out=$(redis-cli -p "$LEADER_PORT" --pipe <"$WORK/prefill.resp" 2>&1) ||
        die "$CUR_TARGET: prefill failed: $out"
    [[ $out == *"errors: 0,"* ]] || die "$CUR_TARGET: prefill had errors: $out"
    n=$(redis-cli -p "$LEADER_PORT" DBSIZE)
    [ "$n" -ge "$KEYSPACE" ] || die "$CUR_TARGET: only $n keys after the prefill"
}

# ---------------------------------------------------------------- measuring
# measure KIND TEST PIPELINE CLIENTS RUN REQUESTS: one redis-benchmark run
# against the leader; sets LAST_RPS and, unless KIND is "cal", appends to raw.csv.
measure() {
    local kind=$1 test=$2 p=$3 c=$4 run=$5 n=$6
    local pid cpu0=() cpu1=() f0 f1 t0 t1 out line name rps p50 p99 secs fps cpu i
    for pid in "${NODE_PIDS[@]}"; do cpu0+=("$(cpu_ticks "$pid")"); done
    f0=$(fsync_count)
    t0=$(date +%s%N)
    out=$(redis-benchmark -h 127.0.0.1 -p "$LEADER_PORT" -t "$test" -c "$c" -P "$p" \
        -d "$DATA_SIZE" -r "$KEYSPACE" -n "$n" --csv 2>"$WORK/bench.err") ||
        die "$CUR_TARGET: redis-benchmark -t $test -P $p -c $c failed: $(head -c 500 "$WORK/bench.err")"
    t1=$(date +%s%N)
    f1=$(fsync_count)
    for pid in "${NODE_PIDS[@]}"; do cpu1+=("$(cpu_ticks "$pid")"); done
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    line=$(grep -i "^\"$test\"," <<<"$out" | tr -d '"\r') ||
        die "$CUR_TARGET: no $test line in redis-benchmark output: $out"
    IFS=, read -r name rps _ _ p50 _ p99 _ <<<"$line"
    LAST_RPS=$rps
    [ "$kind" = cal ] && return
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    fps=""
    [ -n "$f0" ] && [ -n "$f1" ] && fps=$(awk -v d=$((f1 - f0)) -v s="$secs" 'BEGIN { printf "%.1f", d / s }')
    cpu=""
    for i in "${!cpu0[@]}"; do
        cpu+=${cpu:+;}$(awk -v d=$((cpu1[i] - cpu0[i])) -v hz="$CLK_TCK" -v n="$n" \
            'BEGIN { printf "%.2f", d / hz / n * 1e6 }')
    done
    echo "$CUR_TARGET,$kind,$name,$p,$c,$run,$n,$rps,$p50,$p99,$secs,$fps,$cpu" >>"$RAW"
    log "  $CUR_TARGET $name -P $p -c $c run $run: $rps ops/s p50 $p50 ms p99 $p99 ms (n=$n, ${secs}s${fps:+, leader fsync/s $fps}, cpu us/op $cpu)"
}

# calibrate TEST PIPELINE CLIENTS: sets CAL_N so that a run takes ~BENCH_SECS
# (short runs, 2-20x longer each time, until one lasts 0.2 s); REQUESTS wins.
calibrate() {
    local test=$1 p=$2 c=$3 n secs
    if [ -n "$REQUESTS" ]; then CAL_N=$REQUESTS; return; fi
    n=$((c * p * 2 > 200 ? c * p * 2 : 200))
    for _ in 1 2 3 4 5 6; do
        measure cal "$test" "$p" "$c" 0 "$n"
        secs=$(awk -v n="$n" -v r="$LAST_RPS" 'BEGIN { printf "%.4f", (r > 0 ? n / r : 1) }')
        awk -v s="$secs" 'BEGIN { exit !(s >= 0.2) }' && break
        n=$(awk -v n="$n" -v s="$secs" 'BEGIN { f = 0.3 / (s > 0 ? s : 0.001);
            if (f > 20) f = 20; if (f < 2) f = 2; printf "%d", n * f }')
    done
    CAL_N=$(awk -v r="$LAST_RPS" -v s="$BENCH_SECS" -v lo=$((c * p * 2)) -v hi="$MAX_REQUESTS" \
        'BEGIN { n = int(r * s); if (n < lo) n = lo; if (n < 200) n = 200; if (n > hi) n = hi; print n }')
}

# The leader's own fsync latency against the disk probe's: a log that says it
# fsyncs but takes far less than the disk needs is not fsyncing (this caught
# a no-op group fsync once).
check_leader_fsync() {
    local avg probe
    avg=$(info_field "$LEADER_PORT" raft raft_fsync_avg_microseconds)
    [ -n "$avg" ] || return 0
    echo "leader_fsync_avg=$avg" >>"$WORK/meta"
    probe=$(sed -n 's/^fsync_before=\([0-9.]*\).*/\1/p' "$WORK/meta" | head -n1)
    log "raft-fsync-yes: leader fsync avg $avg us (disk probe avg ${probe:-?} us)"
    if [ -n "$probe" ] && awk -v a="$avg" -v p="$probe" 'BEGIN { exit !(a * 5 < p) }'; then
        local w="the leader's fsyncs took $avg us on average, under a fifth of the disk's $probe us: the log may not be fsyncing"
        log "WARNING: $w"
        echo "fsync_warning=$w" >>"$WORK/meta"
    fi
}

run_target() {
    CUR_TARGET=$1
    local p t c run
    local -A nreq=()
    log "== $CUR_TARGET: starting"
    start_target
    idle_cpu
    prefill
    log "$CUR_TARGET: $KEYSPACE keys prefilled"
    # tests x pipelines at $CLIENTS clients; SET before GET in every round
    for p in $PIPELINES; do
        for t in $TESTS; do calibrate "$t" "$p" "$CLIENTS"; nreq[$t]=$CAL_N; done
        for run in $(seq 1 "$RUNS"); do
            for t in $TESTS; do measure matrix "$t" "$p" "$CLIENTS" "$run" "${nreq[$t]}"; done
        done
    done
    # clients sweep, SET -P 1 (the matrix already has SET -P 1 at $CLIENTS)
    for c in $SWEEP_CLIENTS; do
        if [ "$c" = "$CLIENTS" ] && [[ " $PIPELINES " == *" 1 "* ]] && [[ " $TESTS " == *" set "* ]]; then
            continue
        fi
        calibrate set 1 "$c"
        for run in $(seq 1 "$RUNS"); do measure sweep set 1 "$c" "$run" "$CAL_N"; done
    done
    [ "$CUR_TARGET" = raft-fsync-yes ] && check_leader_fsync
    stop_target
    log "== $CUR_TARGET: done"
}

# ---------------------------------------------------------------- report
probe_disk() {  # probe_disk WHEN: the disk's fsync latency, appended to meta
    local avg p50 p99 max
    log "disk fsync latency ($1): $PROBE_ITERS x 4 KiB append + fdatasync in $WORK"
    read -r avg p50 p99 max < <(python3 "$LIB/fsync_probe.py" "$WORK" "$PROBE_ITERS" 4096) ||
        die "fsync probe failed"
    log "disk fsync latency ($1): avg $avg us, p99 $p99 us"
    echo "fsync_$1=$avg $p50 $p99 $max" >>"$WORK/meta"
}

write_meta() {  # facts about this machine and run, for the report header
    local fs
    fs=$(df --output=fstype "$WORK" | tail -n 1)
    [ "$fs" = tmpfs ] && log "WARNING: $WORK is on tmpfs; fsync costs nothing there (set BENCH_TMPDIR)"
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
        echo "cores=$(nproc)"
        echo "kernel=$(uname -r)"
        echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "fs=$fs"
        echo "redis=$(redis-server --version | cut -d' ' -f1-3), $(redis-benchmark --version)"
        echo "module=$MODULE"
        echo "module_info=$(module_info)"
        [ -n "$COMPARE_MODULE" ] && echo "compare_module=$COMPARE_MODULE" &&
            echo "compare_args=$COMPARE_MODULE_ARGS"
        if [ "$QUICK" = 1 ]; then echo "mode=QUICK=1 (smoke test: fewer tests, short runs)"; else echo "mode=full"; fi
        echo "runs=$RUNS"
        if [ -n "$REQUESTS" ]; then
            echo "sizing=-n $REQUESTS for every run (REQUESTS)"
        else
            echo "sizing=-n calibrated per target and test so that one run takes about ${BENCH_SECS} s"
        fi
        echo "keyspace=$KEYSPACE"
        echo "out_dir=$(realpath -m --relative-to="$ROOT" "$OUT_DIR")"
        echo "fsync_probe_desc=$PROBE_ITERS x 4 KiB append + fdatasync in the data dir, python3"
        echo "idle_secs=$IDLE_SECS"
    } >"$WORK/meta"
}

module_info() {  # size, mtime and git revision of our module, if known
    [ -f "$MODULE" ] || { echo "not used"; return; }
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev+="+dirty src"
    echo "built $(date -u -r "$MODULE" '+%Y-%m-%d %H:%M UTC'), repo at $rev"
}

# ---------------------------------------------------------------- main
main() {
    check_tools
    mkdir -p "$OUT_DIR" "$BENCH_TMPDIR"
    WORK=$(mktemp -d "$BENCH_TMPDIR/tmp.XXXXXX")
    RAW=$WORK/raw.csv
    : >"$WORK/idle.csv"
    echo "target,kind,test,pipeline,clients,run,requests,ops_per_sec,p50_ms,p99_ms,secs,fsync_per_sec,cpu_us_per_op" >"$RAW"
    log "targets: $TARGETS; tests: $TESTS; pipelines: $PIPELINES; sweep clients: $SWEEP_CLIENTS; runs: $RUNS"
    write_meta
    probe_disk before
    python3 "$LIB/prefill.py" "$KEYSPACE" "$DATA_SIZE" >"$WORK/prefill.resp"
    local t
    for t in $TARGETS; do run_target "$t"; done
    probe_disk after
    echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta"
    cp "$RAW" "$OUT_DIR/raw.csv"
    python3 "$LIB/report.py" "$RAW" "$WORK/meta" "$OUT_DIR" "$TARGETS" "$CLIENTS" "$WORK/idle.csv" >"$OUT_DIR/results.md"
    cat "$OUT_DIR/results.md"
    log "wrote $OUT_DIR/{results.md,results.csv,results.svg,sweep.svg,raw.csv}"
}

main "$@"
