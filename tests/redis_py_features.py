"""redis-py's features against a RedisRaft cluster (run by tests/redis_py.rs).

Usage: redis_py_features.py <leader host:port> <follower host:port>
Prints one line per feature and exits 1 on the first failure.
"""
import sys
import threading
import time

import redis


def check(name, cond, detail=""):
    print(f"{'ok  ' if cond else 'FAIL'} {name} {detail}".rstrip(), flush=True)
    if not cond:
        sys.exit(1)


def main():
    leader, follower = sys.argv[1], sys.argv[2]
    host, port = leader.split(":")
    r = redis.Redis(host=host, port=int(port), decode_responses=True)
    r.flushall()

    # Pipeline, with and without a transaction.
    p = r.pipeline(transaction=False)
    p.set("py:a", 1).incr("py:a").get("py:a")
    check("pipeline", p.execute() == [True, 2, "2"])
    p = r.pipeline(transaction=True)
    p.set("py:b", "x").append("py:b", "y").get("py:b")
    check("pipeline in MULTI/EXEC", p.execute() == [True, 2, "xy"])

    # transaction() with WATCH: concurrent increments, none lost.
    r.set("py:counter", 0)

    def bump(n):
        c = redis.Redis(host=host, port=int(port), decode_responses=True)
        for _ in range(n):
            def incr(pipe):
                v = int(pipe.get("py:counter"))
                pipe.multi()
                pipe.set("py:counter", v + 1)
            c.transaction(incr, "py:counter")

    threads = [threading.Thread(target=bump, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check("transaction() with WATCH", r.get("py:counter") == "60", r.get("py:counter"))

    # Script (EVALSHA, falling back to EVAL on NOSCRIPT).
    r.script_flush()
    s = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    check("Script (EVALSHA/EVAL)", s(keys=["py:s"], args=[5]) == 5 and s(keys=["py:s"], args=[2]) == 7)
    check("SCRIPT EXISTS", r.script_exists(s.sha) == [True])

    # Lock: acquire, contend, release (its release is a script).
    lock = r.lock("py:lock", timeout=10)
    check("Lock acquire", lock.acquire(blocking=False))
    other = r.lock("py:lock", timeout=10)
    check("Lock held", not other.acquire(blocking=False))
    lock.release()
    check("Lock release", other.acquire(blocking=False))
    other.release()

    # Pub/sub: a subscriber on a follower gets a message published on the
    # leader.
    fh, fp = follower.split(":")
    sub = redis.Redis(host=fh, port=int(fp), decode_responses=True).pubsub()
    sub.subscribe("py:news")
    deadline = time.time() + 5
    while time.time() < deadline:
        m = sub.get_message(timeout=0.2)
        if m and m["type"] == "subscribe":
            break
    r.publish("py:news", "hello")
    got = None
    deadline = time.time() + 10
    while time.time() < deadline and got is None:
        m = sub.get_message(timeout=0.5)
        if m and m["type"] == "message":
            got = m["data"]
    check("pub/sub across nodes", got == "hello", repr(got))
    sub.close()

    # A stream consumer group.
    r.xadd("py:stream", {"n": "1"}, id="1-0")
    r.xadd("py:stream", {"n": "2"}, id="2-0")
    r.xgroup_create("py:stream", "workers", id="0")
    msgs = r.xreadgroup("workers", "w1", {"py:stream": ">"}, count=10)
    ids = [i for _, entries in msgs for i, _ in entries]
    check("XREADGROUP", ids == ["1-0", "2-0"], repr(ids))
    check("XACK", r.xack("py:stream", "workers", "1-0") == 1)
    pending = r.xpending("py:stream", "workers")
    check("XPENDING", pending["pending"] == 1, repr(pending))
    # A crashed worker's entry, taken over once idle (XAUTOCLAIM, XCLAIM).
    time.sleep(0.3)
    cursor, claimed, deleted = r.xautoclaim("py:stream", "workers", "w2", min_idle_time=200, start_id="0-0")
    check("XAUTOCLAIM", [i for i, _ in claimed] == ["2-0"], repr(claimed))
    again = r.xclaim("py:stream", "workers", "w3", min_idle_time=200, message_ids=["2-0"])
    check("XCLAIM (just claimed: not idle)", again == [], repr(again))
    detail = r.xpending_range("py:stream", "workers", min="-", max="+", count=10)
    check(
        "XPENDING range",
        [(d["message_id"], d["consumer"], d["times_delivered"]) for d in detail] == [("2-0", "w2", 2)]
        and 0 <= detail[0]["time_since_delivered"] < 10000,
        repr(detail),
    )

    # A blocking pop served by a push from another client.
    result = {}

    def pop():
        c = redis.Redis(host=host, port=int(port), decode_responses=True)
        result["v"] = c.brpop("py:jobs", timeout=10)

    t = threading.Thread(target=pop)
    t.start()
    # Push once the leader has the client waiting (INFO raft counts it).
    deadline = time.time() + 10
    while time.time() < deadline and int(r.info("raft").get("raft_blocked_clients", 0)) < 1:
        time.sleep(0.02)
    r.lpush("py:jobs", "job-1")
    t.join()
    check("BRPOP served by a push", result.get("v") == ("py:jobs", "job-1"), repr(result))
    print("all redis-py features passed")


if __name__ == "__main__":
    main()
