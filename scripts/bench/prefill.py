#!/usr/bin/env python3
"""RESP stream for `redis-cli --pipe` that creates every key redis-benchmark's
GET can ask for: key:000000000000 .. key:<KEYSPACE-1>, 12-digit zero padded
(the form of -r's __rand_int__), with a SIZE-byte value like -d SIZE.

Keys go in MSET batches so that a Raft target commits them in a few hundred
log entries instead of one entry (and fsync) per key.

Usage: prefill.py KEYSPACE [SIZE] [BATCH] > prefill.resp
"""
import sys


def main() -> None:
    keyspace = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    value = b"x" * size
    vpart = b"$%d\r\n%s\r\n" % (len(value), value)
    out = sys.stdout.buffer
    for start in range(0, keyspace, batch):
        keys = range(start, min(keyspace, start + batch))
        parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(keys))]
        for i in keys:
            k = b"key:%012d" % i
            parts.append(b"$%d\r\n%s\r\n" % (len(k), k))
            parts.append(vpart)
        out.write(b"".join(parts))


if __name__ == "__main__":
    main()
