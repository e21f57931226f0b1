#!/usr/bin/env python3
"""RESP streams for `redis-cli --pipe` that fill a dataset for
bench-snapshot.sh: KEYS keys key:000000000000 .. key:<KEYS-1> (the names
redis-benchmark -r uses), each with its own random SIZE-byte value, in MSET
batches of BATCH keys (one Raft log entry per MSET), dealt round-robin
into PARTS files OUT_PREFIX.0 .. OUT_PREFIX.<PARTS-1>, one per connection:
the module blocks a client until its command is applied, so one connection
has one command in flight however deep it pipelines, and the fill goes
about PARTS times faster over PARTS connections.

The values are random hex, so the RDB snapshot cannot shrink them much with
its LZF compression (redis-benchmark's 'xxx...' values compress ~10x, which
would make the snapshot unrealistically small). Fixed seed: the same data
every run.

Usage: snapshot_fill.py KEYS SIZE BATCH PARTS OUT_PREFIX
"""
import random
import sys


def main() -> None:
    keys, size, batch, nparts = (int(a) for a in sys.argv[1:5])
    prefix = sys.argv[5]
    rng = random.Random(1)
    vhead = b"$%d\r\n" % size
    outs = [open(f"{prefix}.{i}", "wb") for i in range(nparts)]
    for b, start in enumerate(range(0, keys, batch)):
        n = min(keys, start + batch) - start
        # one random block per batch, cut into the values
        blob = rng.randbytes((size + 1) // 2 * n).hex().encode()
        step = (size + 1) // 2 * 2
        parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * n)]
        for j in range(n):
            k = b"key:%012d" % (start + j)
            parts.append(b"$%d\r\n%s\r\n" % (len(k), k))
            parts.append(vhead + blob[j * step:j * step + size] + b"\r\n")
        outs[b % nparts].write(b"".join(parts))
    for f in outs:
        f.close()


if __name__ == "__main__":
    main()
