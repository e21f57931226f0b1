#!/usr/bin/env python3
"""Markdown report of bench-snapshot.sh: the summary table and the details.

Usage: snapshot_report.py RESULTS_CSV META_FILE > results.md

RESULTS_CSV has one row per dataset size (columns: see COLUMNS in
bench-snapshot.sh); META_FILE has key=value lines about the run.
"""
import csv
import sys


def num(v, fmt="{:.1f}"):
    """Formats a number; '-' for an empty or missing value."""
    if v is None or v == "":
        return "-"
    try:
        return fmt.format(float(v))
    except ValueError:
        return v


def mb_from_bytes(v):
    return "" if v in (None, "") else float(v) / 1e6


def mb_from_kb(v):
    return "" if v in (None, "", "-") else float(v) / 1024


def keys_label(n):
    n = int(n)
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    meta = {}
    with open(sys.argv[2]) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v

    print("# Snapshot benchmark\n")
    print(f"{meta.get('date', '?')}, {meta.get('cpu', '?')} ({meta.get('cores', '?')} cores), "
          f"kernel {meta.get('kernel', '?')}, {meta.get('redis', '?')}.  ")
    print(f"Module: {meta.get('module', '?')} ({meta.get('module_info', '?')}).  ")
    print(f"Load average (1/5/15 min) before {meta.get('loadavg_before', '?')}, "
          f"after {meta.get('loadavg_after', '?')}: anything else running on the machine "
          "shows up in these numbers.  ")
    print(f"Mode: {meta.get('mode', '?')}. {meta.get('setup', '')}\n")

    summary = []
    for r in rows:
        summary.append([
            keys_label(r["keys"]),
            num(mb_from_bytes(r["snapshot_bytes"])),
            num(r["take_s"], "{:.2f}"),
            num(r["catchup_s"], "{:.2f}"),
            num(mb_from_kb(r["leader_peak_kb"])),
            num(mb_from_kb(r["follower_peak_kb"])),
            f"{num(r['base_rps'], '{:.0f}')} / {num(r['snap_rps'], '{:.0f}')}",
            num(r["window_rps"], "{:.0f}"),
        ])
    print(table(["keys", "snapshot MB", "take snapshot s", "catch-up s",
                 "leader peak RSS MB", "follower peak RSS MB",
                 "SET ops/s without / with snapshot", "SET ops/s in the COMPACT window"],
                summary))
    print()

    details = []
    for r in rows:
        details.append([
            keys_label(r["keys"]),
            num(mb_from_bytes(r["dataset_bytes"])),
            num(r["fill_s"], "{:.1f}"),
            num(r["fork_ms"], "{:.1f}"),
            num(r["take_load_s"], "{:.2f}"),
            num(r["run_s"], "{:.1f}"),
            num(r["join_s"], "{:.2f}"),
            f"{num(mb_from_kb(r['leader_start_kb']))} / {num(mb_from_kb(r['leader_sampled_kb']))}",
            num(mb_from_kb(r["follower_sampled_kb"])),
            f"{num(r['base_p99'], '{:.2f}')} / {num(r['snap_p99'], '{:.2f}')}",
            f"{num(r['base_max'], '{:.0f}')} / {num(r['snap_max'], '{:.0f}')}",
        ])
    print("Details:\n")
    print(table(["keys", "dataset MB (used_memory)", "fill s", "fork ms",
                 "take snapshot under SET load s", "SET run s", "JOIN +OK s",
                 "leader RSS MB before / sampled peak", "follower sampled peak MB",
                 "SET p99 ms without / with", "SET max ms without / with"],
                details))
    print()
    print("""- snapshot MB: `raft_snapshot_size` on the leader after `RAFT.DEBUG COMPACT`;
  take snapshot s: from sending `RAFT.DEBUG COMPACT` to its `+OK` (fork, RDB
  write and fsync in the child, log compaction), no client load.
- catch-up s: after one more COMPACT on the leader (so that the log tail
  is short), a new, empty 4th node: from `RAFT.CLUSTER JOIN` until its
  `raft_last_applied_index` >= the leader's `raft_commit_index` and
  `raft_snapshots_received` >= 1; JOIN +OK s is when JOIN answered.
- peak RSS: `VmHWM` from /proc/PID/status over the catch-up (the leader's
  high-water mark is reset first through /proc/PID/clear_refs; where that
  was refused, the VmRSS sampled every {ms} ms); the fork child that writes a
  snapshot is another process and is not counted.
- SET ops/s: `redis-benchmark -t set -c {c} -P 1 -d {d} -r min({k}, keys)`
  (overwriting filled keys) against the leader for about {secs} s (longer
  when the snapshot takes long), without a snapshot, then the same run with
  `RAFT.DEBUG COMPACT` sent after {delay} s; the COMPACT window rate is the
  leader's `raft_commit_index` increase from COMPACT's start to its reply,
  divided by that time.""".format(ms=meta.get("sample_ms", "?"), c=meta.get("clients", "?"), k=meta.get("set_keys", "?"),
                                  d=meta.get("value_size", "?"), secs=meta.get("bench_secs", "?"),
                                  delay=meta.get("compact_delay", "?")))


if __name__ == "__main__":
    main()
