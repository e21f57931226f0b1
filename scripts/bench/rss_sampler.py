#!/usr/bin/env python3
"""Peak memory of some processes over a time window, for bench-snapshot.sh.

Usage: rss_sampler.py INTERVAL_MS STOP_FILE LABEL=PID [LABEL=PID ...]

At start it resets each process's VmHWM (writing 5 to /proc/PID/clear_refs,
Linux >= 4.0, needs the right to write there), so that VmHWM at the end is
the peak of this window only. Then it reads VmRSS every INTERVAL_MS until
STOP_FILE exists or every process is gone, and prints one line per process:

    LABEL PEAK_SAMPLED_KB VMHWM_KB HWM_RESET SAMPLES

VMHWM_KB is "-" when the process is gone at the end; HWM_RESET is 1 when
the reset worked (else VmHWM counts from the process's start). SIGTERM ends
the window like STOP_FILE does.
"""
import os
import signal
import sys
import time


def status_kb(pid: int, field: str):
    """The value of FIELD (e.g. VmRSS) in /proc/PID/status, in kB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main() -> None:
    interval = int(sys.argv[1]) / 1000.0
    stop_file = sys.argv[2]
    procs = []
    for arg in sys.argv[3:]:
        label, pid = arg.split("=", 1)
        procs.append((label, int(pid)))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))

    reset = {pid: reset_hwm(pid) for _, pid in procs}
    peak = {pid: 0 for _, pid in procs}
    samples = {pid: 0 for _, pid in procs}
    while True:
        alive = 0
        for _, pid in procs:
            rss = status_kb(pid, "VmRSS")
            if rss is not None:
                alive += 1
                samples[pid] += 1
                peak[pid] = max(peak[pid], rss)
        if stopping or alive == 0 or os.path.exists(stop_file):
            break
        time.sleep(interval)

    for label, pid in procs:
        hwm = status_kb(pid, "VmHWM")
        print(label, peak[pid], "-" if hwm is None else hwm, int(reset[pid]), samples[pid])


if __name__ == "__main__":
    main()
