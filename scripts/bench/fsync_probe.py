#!/usr/bin/env python3
"""Disk fsync latency: append SIZE bytes + fdatasync, ITERS times, in DIR.

Usage: fsync_probe.py DIR ITERS [SIZE]
Prints one line: "avg_us p50_us p99_us max_us" (microseconds).
"""
import os
import sys
import time


def main() -> None:
    directory, iters = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    path = os.path.join(directory, "fsync-probe.dat")
    buf = b"x" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    lat = []
    try:
        for i in range(iters + 10):
            t0 = time.perf_counter_ns()
            os.write(fd, buf)
            os.fdatasync(fd)
            if i >= 10:  # the first few are warm-up (file creation, allocation)
                lat.append((time.perf_counter_ns() - t0) / 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    print(f"{sum(lat) / len(lat):.0f} {pct(0.50):.0f} {pct(0.99):.0f} {lat[-1]:.0f}")


if __name__ == "__main__":
    main()
