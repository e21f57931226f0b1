#!/usr/bin/env bash
# Manages a local redisraft cluster:
#   start|stop|status|killnode N|startnode N|replacenode N|clean
#   NODES (3), BASE_PORT (5001), DATA_DIR (./data), MODULE (./redisraft.so)
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
BASE_PORT=${BASE_PORT:-5001}
DATA_DIR=$(realpath -m "${DATA_DIR:-./data}")
MODULE=$(realpath -m "${MODULE:-./redisraft.so}")

port_of() { echo $((BASE_PORT + $1 - 1)); }
dir_of() { echo "$DATA_DIR/node$1"; }
pid_of() { cat "$(dir_of "$1")/redis.pid" 2>/dev/null || true; }
running() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
cli() { local n=$1; shift; redis-cli -p "$(port_of "$n")" "$@"; }
# Node N's raft.id: N, or the id replacenode gave it (removed ids are never
# reused, so a replaced node takes the next one never used here).
id_of() { cat "$(dir_of "$1")/id" 2>/dev/null || echo "$1"; }

# The port node N's Raft data were made with: recorded at start in
# <dir>/port; for data of an older cluster.sh, the port in its redis.log.
stored_port() {
    local dir; dir=$(dir_of "$1")
    if [ -f "$dir/port" ]; then cat "$dir/port"
    elif [ -f "$dir/redis.log" ]; then
        sed -n 's/.*Running mode=[a-z]*, port=\([0-9]*\).*/\1/p' "$dir/redis.log" | tail -n 1
    fi
}

# Refuses to start node N on another port than the one its Raft log was made
# with: the stored membership names the old addresses (this node's and the
# others'), which may now belong to other servers.
check_port() {
    local n=$1 want had dir
    want=$(port_of "$n"); dir=$(dir_of "$n")
    [ -d "$dir/raftlog$n.db" ] || return 0
    had=$(stored_port "$n")
    if [ -z "$had" ]; then
        echo "refusing to start node $n: its Raft data in $dir record no port; 'scripts/cluster.sh clean' (or DATA_DIR=...) to start anew" >&2
        exit 1
    fi
    if [ "$had" != "$want" ]; then
        echo "refusing to start node $n on port $want: its Raft data in $dir were made on port $had, and the stored membership names the old ports ($((had - n + 1))...), which may now be other servers; start with BASE_PORT=$((BASE_PORT + had - want)), or 'scripts/cluster.sh clean' (or DATA_DIR=...) to start anew" >&2
        exit 1
    fi
}

start_node() {
    local n=$1 port dir
    port=$(port_of "$n"); dir=$(dir_of "$n")
    if running "$n"; then echo "node $n already running (pid $(pid_of "$n"))"; return; fi
    [ -f "$MODULE" ] || { echo "module $MODULE not found: run 'make build' first" >&2; exit 1; }
    check_port "$n"
    mkdir -p "$dir"
    echo "$port" > "$dir/port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --dbfilename "raft$n.rdb" --save "" --appendonly no \
        --loadmodule "$MODULE" --raft.addr "127.0.0.1:$port" \
        --raft.log-filename "raftlog$n.db" --raft.id "$(id_of "$n")"
    for _ in $(seq 1 100); do
        if cli "$n" PING >/dev/null 2>&1; then echo "node $n up on port $port"; return; fi
        sleep 0.1
    done
    echo "node $n did not start; see $dir/redis.log" >&2
    exit 1
}

# The running node other than N that leads, or nothing.
leader_except() {
    local n=$1 m
    for m in $(seq 1 "$NODES"); do
        [ "$m" = "$n" ] && continue
        running "$m" || continue
        if cli "$m" RAFT.INFO 2>/dev/null | tr -d '\r' | grep -qx 'raft_role:leader'; then
            echo "$m"; return
        fi
    done
}

# Replaces node N (dead, or its data lost) by an empty node at the same
# port, the documented procedure: remove its id, wipe, join under a new id.
replace_node() {
    local n=$1 old new leader dir out last
    dir=$(dir_of "$n"); old=$(id_of "$n")
    kill_node "$n"
    leader=$(leader_except "$n")
    [ -n "$leader" ] || { echo "no leader among the other nodes: a majority must be up to replace node $n" >&2; exit 1; }
    out=$(cli "$leader" RAFT.NODE REMOVE "$old" 2>&1 || true)
    case "$out" in
        OK) echo "node id $old removed" ;;
        *"is not a member"*) echo "node id $old was already removed" ;;
        *) echo "RAFT.NODE REMOVE $old failed: $out" >&2; exit 1 ;;
    esac
    rm -rf "$dir/raftlog$n.db" "$dir/raft$n.rdb"
    last=$(cat "$DATA_DIR/last_id" 2>/dev/null || echo 0)
    new=$(( (last > NODES ? last : NODES) + 1 ))
    echo "$new" > "$DATA_DIR/last_id"
    echo "$new" > "$dir/id"
    start_node "$n"
    leader=$(leader_except "$n")
    out=$(timeout 130 redis-cli -p "$(port_of "$n")" RAFT.CLUSTER JOIN "127.0.0.1:$(port_of "${leader:-1}")" 2>&1 || true)
    echo "node $n (id $new): $out"
    [ "$out" = "OK" ] || { echo "join of node $n failed; see $dir/redis.log" >&2; exit 1; }
}

# kill -9, then wait until the process is gone (so a restart finds the port free).
kill_node() {
    local n=$1 p
    running "$n" || return 0
    p=$(pid_of "$n")
    kill -9 "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || { echo "node $n killed"; return 0; }; sleep 0.1; done
    echo "node $n (pid $p) did not exit" >&2
    exit 1
}

stop_node() {
    local n=$1 p
    running "$n" || return 0
    p=$(pid_of "$n")
    cli "$n" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}

cmd=${1:-}
case "$cmd" in
start)
    # All checked before any starts.
    for n in $(seq 1 "$NODES"); do running "$n" || check_port "$n"; done
    for n in $(seq 1 "$NODES"); do start_node "$n"; done
    if [ ! -f "$DATA_DIR/.initialized" ]; then
        echo "forming the cluster: INIT on node 1, JOIN on the others"
        cli 1 RAFT.CLUSTER INIT
        for n in $(seq 2 "$NODES"); do
            out=$(timeout 130 redis-cli -p "$(port_of "$n")" RAFT.CLUSTER JOIN "127.0.0.1:$(port_of 1)")
            echo "node $n: $out"
            [ "$out" = "OK" ] || { echo "join of node $n failed; see $(dir_of "$n")/redis.log" >&2; exit 1; }
        done
        touch "$DATA_DIR/.initialized"
    fi
    echo
    echo "Cluster running. Connect with:  redis-cli -p $(port_of 1)"
    echo "Followers answer -MOVED with the leader's address; 'scripts/cluster.sh status' shows who leads."
    ;;
stop)
    for n in $(seq 1 "$NODES"); do stop_node "$n"; done
    ;;
status)
    for n in $(seq 1 "$NODES"); do
        if running "$n"; then
            info=$(cli "$n" RAFT.INFO 2>/dev/null | tr -d '\r')
            f() { echo "$info" | sed -n "s/^raft_$1://p"; }
            echo "node $n: running pid $(pid_of "$n") port $(port_of "$n") id=$(f node_id) role=$(f role) leader=$(f leader_id) term=$(f current_term) commit=$(f commit_index)"
        else
            echo "node $n: not running"
        fi
    done
    ;;
killnode)
    n=${2:?usage: killnode N}
    kill_node "$n"
    ;;
startnode)
    start_node "${2:?usage: startnode N}"
    ;;
replacenode)
    replace_node "${2:?usage: replacenode N}"
    ;;
clean)
    for n in $(seq 1 "$NODES"); do stop_node "$n"; done
    rm -rf "$DATA_DIR"
    ;;
*)
    echo "usage: $0 start|stop|status|killnode N|startnode N|replacenode N|clean" >&2
    exit 2
    ;;
esac
