#!/usr/bin/env python3
"""Crash-point campaign (make crash-campaign; issue 11).

For every failpoint in POINTS, N runs. Each run:
  1. starts a 3-node cluster of the module built with failpoints (MODULE) on
     loopback ports in its own directory, and a client that SETs unique keys
     through the leader all along; every +OK is recorded;
  2. arms the point on a node chosen at random (the leader or a follower)
     and triggers what reaches it, then waits for the process to exit:
     - log-before-fsync, log-after-fsync, apply-middle: the load itself;
       log-writer-staged: the same, on the leader (only a leader uses the
       log-writer thread);
     - snapshot-write, snapshot-after-rename, and snapshot-before-dir-fsync
       in odd runs: RAFT.DEBUG COMPACT on that node;
     - membership-apply: odd runs, a 4th node started and RAFT.CLUSTER JOIN
       (the learner's addition and promotion are applied on every node);
       even runs, RAFT.NODE REMOVE of another node (then it is stopped and
       left out of the checks);
     - snapshot-receive-chunk, snapshot-received, install-before-log-reset:
       a follower killed, the load goes on, the leader compacts its log, the
       follower restarted with REDISRAFT_FAILPOINTS=<point>: it must take a
       snapshot (4 KB chunks: many of them); so is snapshot-before-dir-fsync
       in even runs (a received snapshot moves into place the same way);
     - startup-between-compact-and-commit: crash at snapshot-after-rename
       (RAFT.DEBUG COMPACT), then a start with REDISRAFT_FAILPOINTS=<point>;
  3. restarts the node (without the point);
  4. stops the load and checks: the node is up again and applies, every
     acknowledged write is there (MGET through the leader), and every node's
     DEBUG DIGEST is equal at one raft_last_applied_index.
A run that passes leaves nothing behind; a failed one keeps its directory
(node logs, data) under OUT. Prints a table at the end; exits 1 on any lost
write or failed restart (or a run whose crash was not reached, or whose
nodes did not converge), 2 on a setup error, 130 when interrupted. Every server it starts is
stopped on exit, also on failure or Ctrl-C (and dies with the runner if the
runner is killed: PR_SET_PDEATHSIG).

Environment: MODULE (default target/failpoints/release/libredisraft.so),
N (runs per point, default 50), POINTS (comma or space list, default all),
OUT (default target/crash-campaign/<UTC timestamp>), SEED.
"""
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from miniresp import Conn, RespError  # noqa: E402

ALL_POINTS = [
    "log-writer-staged",
    "log-before-fsync",
    "log-after-fsync",
    "apply-middle",
    "membership-apply",
    "snapshot-write",
    "snapshot-before-dir-fsync",
    "snapshot-after-rename",
    "snapshot-receive-chunk",
    "snapshot-received",
    "install-before-log-reset",
    "startup-between-compact-and-commit",
]
LIVE = {"log-writer-staged", "log-before-fsync", "log-after-fsync", "apply-middle"}
SNAPSHOT = {"snapshot-write", "snapshot-before-dir-fsync", "snapshot-after-rename"}
RECEIVE = {"snapshot-receive-chunk", "snapshot-received", "install-before-log-reset"}

MODULE = os.path.realpath(
    os.environ.get("MODULE", "target/failpoints/release/libredisraft.so")
)
N = int(os.environ.get("N", "50"))
POINTS = os.environ.get("POINTS", "").replace(",", " ").split() or ALL_POINTS
OUT = os.path.realpath(
    os.environ.get(
        "OUT", "target/crash-campaign/" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    )
)
SEED = int(os.environ.get("SEED", str(int(time.time()))))
VALUE_PAD = "x" * 200  # so that a snapshot spans many chunks

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def call(port, *args, timeout=10.0):
    c = Conn(port, timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def free_port(used):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        # The Raft port is the Redis port: keep clear of ephemeral reuse.
        if p < 60000 and p not in used:
            used.add(p)
            return p


class Node:
    def __init__(self, idx, port, root):
        self.idx = idx
        self.port = port
        self.dir = os.path.join(root, "n%d" % idx)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.starts = 0

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def log(self):
        return os.path.join(self.dir, "redis.log")

    def start(self, failpoints=None):
        env = dict(os.environ)
        env.pop("REDISRAFT_FAILPOINTS", None)
        if failpoints:
            env["REDISRAFT_FAILPOINTS"] = failpoints
        self.starts += 1
        with open(self.log(), "a") as f:
            f.write(
                "\n### campaign: start %d%s\n"
                % (self.starts, " with REDISRAFT_FAILPOINTS=" + failpoints if failpoints else "")
            )
        args = [
            os.environ.get("REDIS_SERVER") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--logfile", self.log(),
            "--dbfilename", "raft.rdb", "--save", "", "--appendonly", "no",
            "--loadmodule", MODULE,
            "--raft.addr", self.addr, "--raft.log-filename", "raftlog.db",
            "--raft.election-timeout", "1000",
            "--raft.snapshot-req-max-size", "4096",
        ]
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, secs):
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=secs)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill9(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def wait_ping(self, secs=20):
        deadline = time.time() + secs
        while time.time() < deadline:
            if not self.alive():
                return False
            try:
                if call(self.port, "PING", timeout=2) == "PONG":
                    return True
            except (OSError, RespError):
                pass
            time.sleep(0.05)
        return False

    def info(self):
        text = call(self.port, "RAFT.INFO", timeout=5)
        out = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k.replace("raft_", "", 1)] = v.strip()
        return out


def wait_for(secs, f):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except (OSError, RespError, ValueError):
            pass
        time.sleep(0.1)
    return None


class Cluster:
    def __init__(self, root):
        self.root = root
        self.used = set()
        self.nodes = []
        self.removed = []  # nodes a RAFT.NODE REMOVE took out

    def add_node(self):
        n = Node(len(self.nodes) + 1, free_port(self.used), self.root)
        self.nodes.append(n)
        return n

    def stop(self):
        for n in self.nodes:
            n.kill9()

    def leader(self, nodes=None):
        for n in nodes or self.nodes:
            if not n.alive():
                continue
            try:
                i = n.info()
            except (OSError, RespError):
                continue
            if i.get("role") == "leader" and i.get("state") == "up":
                return n
        return None

    def wait_leader(self, secs=30):
        return wait_for(secs, self.leader)


class Load:
    """SETs unique keys through the leader; records every +OK."""

    def __init__(self, cluster, tag):
        self.cluster = cluster
        self.tag = tag
        self.acked = {}
        self.unknown = 0
        self.failed = 0
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.t.start()

    def stop(self):
        self.stopping.set()
        self.t.join(30)

    def run(self):
        seq = 0
        conn = None
        port = None
        while not self.stopping.is_set():
            if conn is None:
                ln = self.cluster.leader()
                port = ln.port if ln else None
                if port is None:
                    time.sleep(0.1)
                    continue
                try:
                    conn = Conn(port, timeout=5)
                except OSError:
                    conn = None
                    time.sleep(0.1)
                    continue
            seq += 1
            key = "%s:%d" % (self.tag, seq)
            val = "%d:%s" % (seq, VALUE_PAD)
            try:
                r = conn.call("SET", key, val)
                if r == "OK":
                    self.acked[key] = val
                else:
                    self.unknown += 1
            except RespError as e:
                # -MOVED, -CLUSTERDOWN, -TRYAGAIN: not done; -TIMEOUT and
                # the like: unknown. Neither is recorded as acknowledged.
                if str(e).startswith(("MOVED", "CLUSTERDOWN", "TRYAGAIN")):
                    self.failed += 1
                else:
                    self.unknown += 1
                conn.close()
                conn = None
                time.sleep(0.05)
            except (OSError, ConnectionError, ValueError):
                self.unknown += 1
                conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.002)
        if conn:
            conn.close()


def arm(node, point):
    """RAFT.DEBUG FAILPOINT <point> crash. Under load the point can be
    reached before the reply is sent: a closed connection is no error (the
    node's log must then say it died at the point)."""
    try:
        call(node.port, "RAFT.DEBUG", "FAILPOINT", point, "crash")
    except ConnectionError:
        pass


def bg(f, *args, **kw):
    """Runs f in a thread (a command whose connection the crash cuts)."""
    t = threading.Thread(target=lambda: _swallow(f, *args, **kw), daemon=True)
    t.start()
    return t


def _swallow(f, *args, **kw):
    try:
        f(*args, **kw)
    except Exception:  # noqa: BLE001 - the crash cuts the connection
        pass


class RunFailed(Exception):
    pass


def form(cluster):
    for _ in range(3):
        cluster.add_node()
    for n in cluster.nodes:
        n.start()
        if not n.wait_ping():
            raise RunFailed("setup: node %d did not start" % n.idx)
    n1 = cluster.nodes[0]
    call(n1.port, "RAFT.CLUSTER", "INIT", timeout=30)
    for n in cluster.nodes[1:]:
        call(n.port, "RAFT.CLUSTER", "JOIN", n1.addr, timeout=60)
    if not cluster.wait_leader():
        raise RunFailed("setup: no leader")


def one_run(point, run_no, rng):
    root = os.path.join(OUT, "%s-%d" % (point, run_no))
    os.makedirs(root, exist_ok=True)
    cluster = Cluster(root)
    res = {"hit": False, "restart": False, "lost": 0, "why": "", "dir": root}
    load = None
    try:
        form(cluster)
        load = Load(cluster, "r%d" % run_no)
        load.start()
        time.sleep(1.0 + rng.random())
        leader = cluster.leader()
        if leader is None:
            raise RunFailed("no leader before the fault")
        followers = [n for n in cluster.nodes if n is not leader]
        victim = rng.choice(cluster.nodes)

        if point == "log-writer-staged":
            # Only a leader hands its log writes to the writer thread.
            victim = leader
            arm(victim, point)
        elif point in LIVE:
            arm(victim, point)
        elif point in RECEIVE or (point == "snapshot-before-dir-fsync" and run_no % 2 == 0):
            victim = rng.choice(followers)
            res["change"] = "receives"
            victim.kill9()
            time.sleep(1.0 + rng.random())
            # The log moves past what the victim holds: it needs a snapshot.
            call(leader.port, "RAFT.DEBUG", "COMPACT", timeout=60)
            victim.start(failpoints=point)
        elif point in SNAPSHOT:
            arm(victim, point)
            bg(call, victim.port, "RAFT.DEBUG", "COMPACT", timeout=60)
        elif point == "membership-apply" and run_no % 2 == 0:
            # Even runs: RAFT.NODE REMOVE of another node (the leader at times).
            gone = rng.choice([n for n in cluster.nodes if n is not victim])
            gone_id = gone.info()["node_id"]
            arm(victim, point)
            cluster.removed.append(gone)
            res["change"] = "remove n%d" % gone.idx
            bg(call, leader.port, "RAFT.NODE", "REMOVE", gone_id, timeout=60)
        elif point == "membership-apply":
            # Odd runs: a 4th node joins (added as a learner, then promoted).
            arm(victim, point)
            res["change"] = "join n4"
            new = cluster.add_node()
            new.start()
            if not new.wait_ping():
                raise RunFailed("the new node did not start")
            bg(call, new.port, "RAFT.CLUSTER", "JOIN",
               *[n.addr for n in cluster.nodes[:3]], timeout=120)
        elif point == "startup-between-compact-and-commit":
            # A snapshot in place and the log not compacted to it ...
            call(victim.port, "RAFT.DEBUG", "FAILPOINT", "snapshot-after-rename", "crash")
            bg(call, victim.port, "RAFT.DEBUG", "COMPACT", timeout=60)
            if not victim.wait_exit(30):
                raise RunFailed("no crash at snapshot-after-rename (setup)")
            # ... then a start that dies reconciling the two.
            victim.start(failpoints=point)
        else:
            raise RunFailed("unknown point")
        res["victim"] = "n%d%s" % (victim.idx, " (leader)" if victim is leader else "")

        if not victim.wait_exit(45):
            raise RunFailed("point not reached in 45 s")
        with open(victim.log()) as f:
            res["hit"] = ("failpoint %s: crashing now" % point) in f.read()
        if not res["hit"]:
            raise RunFailed("the node exited, but not at the point")

        victim.start()  # without the point
        ok = wait_for(60, lambda: victim.alive() and victim.info().get("state") == "up")
        if not ok:
            res["why"] = "restart: not up in 60 s" + (
                "" if victim.alive() else " (exited %s)" % victim.proc.returncode
            )
            raise RunFailed(res["why"])
        res["restart"] = True
        time.sleep(1.0)
        load.stop()
        check(cluster, load, victim, res)
    except RunFailed as e:
        res["why"] = res["why"] or str(e)
    except Exception as e:  # noqa: BLE001
        res["why"] = "runner: %s: %s" % (type(e).__name__, e)
        traceback.print_exc()
    finally:
        if load:
            load.stop()
        cluster.stop()
    res["acked"] = len(load.acked) if load else 0
    if not res["why"]:
        shutil.rmtree(root, ignore_errors=True)
    return res


def check(cluster, load, victim, res):
    members = [n for n in cluster.nodes if n not in cluster.removed]
    for n in cluster.removed:
        # It must have learnt that it was removed; then it goes.
        if not wait_for(30, lambda: n.info().get("state") == "removed"):
            raise RunFailed("n%d was not removed" % n.idx)
        n.kill9()
    nodes = [n for n in members if n.alive()]
    if len(nodes) != len(members):
        raise RunFailed("nodes down at the check: %s" % [n.idx for n in members if not n.alive()])
    # Members that are up and at one applied index, with equal digests.
    digests = None

    def converged():
        nonlocal digests
        infos = [n.info() for n in nodes]
        if any(i.get("state") != "up" for i in infos):
            return False
        applied = {i["last_applied_index"] for i in infos}
        commit = {i["commit_index"] for i in infos}
        if len(applied) != 1 or applied != commit:
            return False
        d = [call(n.port, "RAFT.DEBUG", "DIGEST") for n in nodes]
        again = {n.info()["last_applied_index"] for n in nodes}
        if again != applied:
            return False
        digests = (applied.pop(), d)
        return True

    if not wait_for(60, converged):
        raise RunFailed("no convergence: applied %s" % [
            (n.idx, _try(lambda: n.info().get("last_applied_index"))) for n in nodes])
    at, d = digests
    res["applied"] = at
    if len(set(d)) != 1:
        raise RunFailed("digests differ at %s: %s" % (at, d))
    leader = cluster.wait_leader()
    if leader is None:
        raise RunFailed("no leader at the check")
    keys = list(load.acked)
    lost = []
    for i in range(0, len(keys), 500):
        batch = keys[i:i + 500]
        got = call(leader.port, "MGET", *batch, timeout=30)
        lost += [k for k, v in zip(batch, got) if v != load.acked[k]]
    res["lost"] = len(lost)
    if lost:
        raise RunFailed("%d acknowledged writes lost, e.g. %s" % (len(lost), lost[:3]))


def _try(f):
    try:
        return f()
    except Exception:  # noqa: BLE001
        return "?"


def main():
    if not os.path.exists(MODULE):
        print("crash-campaign: %s not found (build with --features failpoints)" % MODULE)
        return 2
    bad = [p for p in POINTS if p not in ALL_POINTS]
    if bad:
        print("crash-campaign: unknown points %s; known: %s" % (bad, " ".join(ALL_POINTS)))
        return 2
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(SEED)
    print("crash-campaign: %d run(s) x %d point(s), seed %d, module %s, out %s"
          % (N, len(POINTS), SEED, MODULE, OUT), flush=True)

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    rows = []
    failures = []
    interrupted_at = None
    t0 = time.time()
    try:
        for point in POINTS:
            row = {"point": point, "runs": 0, "hit": 0, "restart": 0, "lost": 0, "acked": 0, "why": []}
            rows.append(row)
            for i in range(1, N + 1):
                t = time.time()
                r = one_run(point, i, rng)
                row["runs"] += 1
                row["hit"] += r["hit"]
                row["restart"] += r["restart"]
                row["lost"] += r["lost"]
                row["acked"] += r["acked"]
                status = "ok" if not r["why"] else "FAIL: " + r["why"]
                print("  %-36s run %3d  victim %-12s%s acked %5d  %4.1fs  %s"
                      % (point, i, r.get("victim", "-"),
                         " (%s)" % r["change"] if "change" in r else "",
                         r["acked"], time.time() - t, status),
                      flush=True)
                if r["why"]:
                    row["why"].append("run %d: %s" % (i, r["why"]))
                    failures.append((point, i, r["why"], r["dir"]))
    except KeyboardInterrupt:
        interrupted_at = time.time()
        print("crash-campaign: interrupted (the run under way is not counted)", flush=True)
    print()
    print("| point | runs | crashes hit | restarts ok | acked writes | writes lost | failures |")
    print("| --- | --: | --: | --: | --: | --: | --- |")
    for r in rows:
        print("| %s | %d | %d | %d | %d | %d | %s |" % (
            r["point"], r["runs"], r["hit"], r["restart"], r["acked"], r["lost"],
            "; ".join(r["why"]) or "-"))
    print("\n%d runs in %.0f s, seed %d" % (sum(r["runs"] for r in rows), time.time() - t0, SEED))
    for p, i, why, d in failures:
        print("kept %s (%s run %d: %s)" % (d, p, i, why))
    if not failures:
        shutil.rmtree(OUT, ignore_errors=True)
    if interrupted_at:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
