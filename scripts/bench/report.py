#!/usr/bin/env python3
"""Turn the benchmark's raw runs into the report (python3 standard library only).

Usage: report.py RAW_CSV META_FILE OUT_DIR "TARGET ..." MATRIX_CLIENTS [IDLE_CSV]

RAW_CSV has one row per redis-benchmark run:
  target,kind,test,pipeline,clients,run,requests,ops_per_sec,p50_ms,p99_ms,
  secs,fsync_per_sec,cpu_us_per_op
(fsync_per_sec empty = not reported; cpu_us_per_op is one value per server
process joined with ";", the leader first). META_FILE has key=value lines;
IDLE_CSV has "target,idle%;idle%;..." lines.

Writes OUT_DIR/results.csv, OUT_DIR/results.svg, OUT_DIR/sweep.svg and
prints the Markdown report on stdout.
"""
import csv
import math
import os
import statistics
import sys
from html import escape

BASELINE = "redis-aof-always"
TEST_ORDER = ["SET", "GET", "INCR", "LPUSH"]
COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
          "#b07aa1", "#ff9da7"]
FONT = 'font-family="Helvetica, Arial, sans-serif"'


def median(xs):
    return statistics.median(xs) if xs else None


def load(raw_path):
    groups = {}
    with open(raw_path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["target"], r["test"], int(r["pipeline"]), int(r["clients"]))
            groups.setdefault(key, []).append(r)
    results = {}
    for key, runs in groups.items():
        cpus = [[float(x) for x in r["cpu_us_per_op"].split(";")] for r in runs]
        fs = [float(r["fsync_per_sec"]) for r in runs if r["fsync_per_sec"] != ""]
        results[key] = {
            "runs": len(runs),
            "ops": median([float(r["ops_per_sec"]) for r in runs]),
            "p50": median([float(r["p50_ms"]) for r in runs]),
            "p99": median([float(r["p99_ms"]) for r in runs]),
            "fsync": median(fs),
            "cpu": [median([c[i] for c in cpus]) for i in range(len(cpus[0]))],
        }
    return results


def ratio(results, key):
    base = results.get((BASELINE,) + key[1:])
    if not base or not base["ops"]:
        return None
    return results[key]["ops"] / base["ops"]


def sort_key(targets):
    def k(key):
        t, test, p, c = key
        return (TEST_ORDER.index(test) if test in TEST_ORDER else 99, test, p, c,
                targets.index(t) if t in targets else 99, t)
    return k


def write_csv(path, results, keys):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "test", "pipeline", "clients", "ops_per_sec",
                    "p50_ms", "p99_ms", "ratio_vs_aof_always"])
        for key in keys:
            r = results[key]
            q = ratio(results, key)
            w.writerow(list(key) + [f"{r['ops']:.1f}", f"{r['p50']:.3f}",
                                    f"{r['p99']:.3f}", "" if q is None else f"{q:.3f}"])


# ---------------------------------------------------------------- Markdown

def fmt_int(x):
    return f"{x:,.0f}"


def fmt_cpu(vals):
    return " / ".join(f"{v:.1f}" for v in vals)


def markdown(results, keys, meta, targets, idle):
    out = []
    m = meta.get
    out.append("# redisraft benchmark")
    out.append("")
    out.append(f"- Date: {m('date')}; host: {m('cpu')}, {m('cores')} cores, "
               f"Linux {m('kernel')}; data dirs on {m('fs')}")
    out.append(f"- {m('redis')}; our module: `{m('module')}` ({m('module_info')})")
    if m("compare_module"):
        out.append(f"- compare-module: `{m('compare_module')}` args `{m('compare_args')}`")
    out.append(f"- Mode: {m('mode')}; {m('runs')} run(s) per measurement, median shown; "
               f"{m('sizing')}")
    out.append(f"- redis-benchmark `-d 100 -r {m('keyspace')}`, against the leader; "
               f"all {m('keyspace')} keys prefilled (MSET) before the runs so GET hits; "
               "SET runs before GET")
    for when in ("before", "after"):
        if m(f"fsync_{when}"):
            avg, p50, p99, mx = m(f"fsync_{when}").split()
            out.append(f"- Disk fsync latency {when} the targets ({m('fsync_probe_desc')}): "
                       f"**avg {avg} µs, p99 {p99} µs** (p50 {p50} µs, max {mx} µs)")
    if m("leader_fsync_avg"):
        out.append(f"- raft-fsync-yes leader's own fsync latency (INFO raft_fsync_avg_microseconds "
                   f"at the end): **{m('leader_fsync_avg')} µs**")
    if m("fsync_warning"):
        out.append(f"- **WARNING: {m('fsync_warning')}**")
    out.append(f"- The load generator shares the machine's {m('cores')} cores with the servers; "
               f"load average (1/5/15 min) {m('loadavg_before')} at the start, "
               f"{m('loadavg_after')} at the end (anything else running skews the numbers).")
    out.append("")
    hdr = ["target", "test", "pipeline", "clients", "ops/s", "p50 ms", "p99 ms",
           "vs aof-always", "leader fsync/s", "fsync/op",
           "CPU µs/op per node (leader / followers)", "server cores busy"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---", "---", "--:", "--:", "--:", "--:", "--:", "--:",
                               "--:", "--:", "--:", "--:"]) + "|")
    for key in keys:
        r = results[key]
        t, test, p, c = key
        q = ratio(results, key)
        fs = "n/a" if r["fsync"] is None else fmt_int(r["fsync"])
        fpo = "n/a" if r["fsync"] is None or not r["ops"] else f"{r['fsync'] / r['ops']:.3f}"
        cores = sum(r["cpu"]) * r["ops"] / 1e6
        name = f"**{t}**" if t == BASELINE else t
        out.append("| " + " | ".join([
            name, test, str(p), str(c), fmt_int(r["ops"]), f"{r['p50']:.3f}",
            f"{r['p99']:.3f}", "n/a" if q is None else f"{q:.2f}x", fs, fpo,
            fmt_cpu(r["cpu"]), f"{cores:.2f}"]) + " |")
    out.append("")
    if idle:
        out.append(f"Idle CPU, no load, over {m('idle_secs')} s after start "
                   "(% of one core; cluster: leader / followers):")
        out.append("")
        out.append("| target | idle CPU % per node |")
        out.append("|---|--:|")
        for t in targets:
            if t in idle:
                out.append(f"| {t} | {' / '.join(idle[t])} |")
        out.append("")
    out.append("Columns:")
    out.append("- ops/s, p50, p99: median over the runs of `redis-benchmark --csv` "
               "(latency percentiles as reported by redis-benchmark).")
    out.append(f"- vs aof-always: ops/s divided by {BASELINE}'s ops/s for the same "
               "test, pipeline and clients in this run.")
    out.append("- leader fsync/s: delta of `raft_fsync_count` (INFO raft) on the leader "
               "over the run, divided by its wall time; fsync/op = that / ops/s. "
               "n/a for plain Redis, which does not report its fsyncs "
               "(aof-always does at most one per event-loop iteration, "
               "everysec one per second).")
    out.append("- CPU µs/op: utime+stime delta from /proc/PID/stat over the run divided "
               "by the requests, for each redis-server process (the cluster: leader "
               "first, then the two followers); 10 ms tick resolution. "
               "server cores busy = sum of those × ops/s (what the servers used of the "
               f"{m('cores')} cores; the rest went to redis-benchmark or waiting).")
    out.append("")
    d = m("out_dir", "target/bench")
    out.append(f"Files: `{d}/results.csv`, `{d}/results.svg` "
               f"(ops/s per test per target), `{d}/sweep.svg` "
               f"(SET -P 1 ops/s vs clients), `{d}/raw.csv` (every run).")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- SVG

def nice_step(vmax, n=5):
    raw = vmax / n if vmax > 0 else 1
    mag = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 2.5, 5, 10):
        if raw <= f * mag:
            return f * mag
    return 10 * mag


def short(v):
    """12345 -> 12k, 1500 -> 1.5k, 2000 -> 2k, 1.2e6 -> 1.2M."""
    for div, unit in ((1e6, "M"), (1e3, "k"), (1, "")):
        if v >= div:
            x = v / div
            s = f"{x:.0f}" if x >= 10 or unit == "" else f"{x:.1f}"
            return (s[:-2] if s.endswith(".0") else s) + unit
    return f"{v:.0f}"


def text(x, y, s, size=12, anchor="middle", extra=""):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'{FONT} {extra}>{escape(str(s))}</text>')


def legend(targets, colors, x, y, line=False):
    parts = []
    for i, t in enumerate(targets):
        yy = y + i * 18
        if line:
            parts.append(f'<line x1="{x}" y1="{yy + 5}" x2="{x + 18}" y2="{yy + 5}" '
                         f'stroke="{colors[t]}" stroke-width="2.5"/>')
            parts.append(f'<circle cx="{x + 9}" cy="{yy + 5}" r="3.5" fill="{colors[t]}"/>')
        else:
            parts.append(f'<rect x="{x}" y="{yy}" width="12" height="12" fill="{colors[t]}"/>')
        parts.append(text(x + 24, yy + 10, t, 12, "start"))
    return parts


def bars_svg(results, targets, colors, clients, meta):
    """Grouped bars: one panel per pipeline depth, groups = tests, bars = targets."""
    pipes = sorted({p for (t, test, p, c) in results if c == clients})
    tests = [x for x in TEST_ORDER if any(k[1] == x and k[3] == clients for k in results)]
    tgts = [t for t in targets if any(k[0] == t for k in results)]
    left, right, top, ph, pgap = 80, 190, 70, 230, 70
    nt, nb = max(len(tests), 1), max(len(tgts), 1)
    pw = max((16 * nb + 26) * nt, 420)      # plot width
    gw = pw / nt                            # width of one test's group
    bw = min(28, (gw - 26) / nb)            # bar pitch
    gap = gw - bw * nb
    width = left + pw + right
    height = top + len(pipes) * (ph + pgap) + 10
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         text(width / 2, 22, "Throughput per test and target", 16, extra='font-weight="bold"'),
         text(width / 2, 42, f"redis-benchmark -c {clients} -d 100, median of "
              f"{meta.get('runs')} run(s); bar labels in ops/s", 12)]
    for pi, p in enumerate(pipes):
        y0 = top + pi * (ph + pgap)          # panel top
        base = y0 + ph                        # x axis
        vals = [results[k]["ops"] for k in results if k[2] == p and k[3] == clients]
        vmax = max(vals) if vals else 1
        step = nice_step(vmax)
        ymax = step * math.ceil(vmax * 1.08 / step)
        sy = lambda v: base - v / ymax * ph  # noqa: E731
        s.append(text(left + gw * len(tests) / 2, y0 - 8, f"pipeline -P {p}", 13,
                      extra='font-weight="bold"'))
        tick = 0.0
        while tick <= ymax + 1e-9:
            y = sy(tick)
            s.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + gw * len(tests)}" '
                     f'y2="{y:.1f}" stroke="#ddd"/>')
            s.append(text(left - 6, y + 4, short(tick), 11, "end"))
            tick += step
        s.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{base}" stroke="black"/>')
        s.append(f'<line x1="{left}" y1="{base}" x2="{left + gw * len(tests)}" '
                 f'y2="{base}" stroke="black"/>')
        s.append(text(22, y0 + ph / 2, "ops/s", 12,
                      extra=f'transform="rotate(-90 22 {y0 + ph / 2:.1f})"'))
        for ti, test in enumerate(tests):
            gx = left + ti * gw + gap / 2
            for bi, t in enumerate(tgts):
                r = results.get((t, test, p, clients))
                if not r:
                    continue
                x, y = gx + bi * bw, sy(r["ops"])
                s.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2}" '
                         f'height="{base - y:.1f}" fill="{colors[t]}">'
                         f'<title>{escape(t)} {test} -P {p}: {r["ops"]:.0f} ops/s</title></rect>')
                lx, ly = x + (bw - 2) / 2, y - 3
                s.append(text(lx, ly, short(r["ops"]), 9, "start",
                              extra=f'transform="rotate(-90 {lx + 3:.1f} {ly:.1f})"'))
            s.append(text(gx + bw * len(tgts) / 2, base + 16, test, 12))
    s += legend(tgts, colors, left + gw * len(tests) + 20, top)
    s.append("</svg>")
    return "\n".join(s) + "\n"


def sweep_svg(results, targets, colors, meta):
    """ops/s vs clients for SET -P 1, log-log."""
    pts = {}
    for (t, test, p, c), r in results.items():
        if test == "SET" and p == 1:
            pts.setdefault(t, []).append((c, r["ops"]))
    tgts = [t for t in targets if t in pts and len(pts[t]) > 1]
    left, right, top, pw, ph = 80, 190, 60, 480, 320
    width, height = left + pw + right, top + ph + 60
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         text(width / 2, 22, "SET throughput vs concurrent clients", 16, extra='font-weight="bold"'),
         text(width / 2, 42, f"redis-benchmark -t set -P 1 -d 100, median of "
              f"{meta.get('runs')} run(s)", 12)]
    if not tgts:
        s.append(text(width / 2, height / 2, "no sweep data", 14))
        s.append("</svg>")
        return "\n".join(s) + "\n"
    cs = sorted({c for t in tgts for c, _ in pts[t]})
    vs = [v for t in tgts for _, v in pts[t] if v > 0]
    xlo, xhi = math.log10(min(cs)), math.log10(max(cs))
    if xhi == xlo:
        xhi = xlo + 1
    ylo = math.floor(math.log10(min(vs)))
    yhi = math.ceil(math.log10(max(vs)))
    if yhi == ylo:
        yhi += 1
    sx = lambda c: left + 20 + (math.log10(c) - xlo) / (xhi - xlo) * (pw - 40)  # noqa: E731
    sy = lambda v: top + ph - (math.log10(v) - ylo) / (yhi - ylo) * ph  # noqa: E731
    for d in range(ylo, yhi + 1):
        for f in (1, 2, 5):
            v = f * 10 ** d
            if v > 10 ** yhi:
                break
            y = sy(v)
            s.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                     f'stroke="{"#ccc" if f == 1 else "#eee"}"/>')
            s.append(text(left - 6, y + 4, short(v), 11, "end"))
    for c in cs:
        x = sx(c)
        s.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
        s.append(text(x, top + ph + 16, str(c), 11))
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    s.append(text(left + pw / 2, top + ph + 38, "clients (-c, log scale)", 12))
    s.append(text(22, top + ph / 2, "ops/s (log scale)", 12,
                  extra=f'transform="rotate(-90 22 {top + ph / 2:.1f})"'))
    for t in tgts:
        line = sorted(pts[t])
        d = " ".join(f"{sx(c):.1f},{sy(v):.1f}" for c, v in line if v > 0)
        s.append(f'<polyline points="{d}" fill="none" stroke="{colors[t]}" stroke-width="2.5"/>')
        for c, v in line:
            if v > 0:
                s.append(f'<circle cx="{sx(c):.1f}" cy="{sy(v):.1f}" r="3.5" fill="{colors[t]}">'
                         f'<title>{escape(t)} -c {c}: {v:.0f} ops/s</title></circle>')
    s += legend(tgts, colors, left + pw + 20, top, line=True)
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    raw, meta_path, outdir, targets, clients = sys.argv[1:6]
    idle = {}
    if len(sys.argv) > 6 and os.path.exists(sys.argv[6]):
        with open(sys.argv[6]) as f:
            for line in f:
                if "," in line:
                    t, vals = line.strip().split(",", 1)
                    idle[t] = vals.split(";")
    targets, clients = targets.split(), int(clients)
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    results = load(raw)
    known = targets + sorted({k[0] for k in results} - set(targets))
    keys = sorted(results, key=sort_key(known))
    colors = {t: COLORS[i % len(COLORS)] for i, t in enumerate(known)}
    os.makedirs(outdir, exist_ok=True)
    write_csv(os.path.join(outdir, "results.csv"), results, keys)
    with open(os.path.join(outdir, "results.svg"), "w") as f:
        f.write(bars_svg(results, known, colors, clients, meta))
    with open(os.path.join(outdir, "sweep.svg"), "w") as f:
        f.write(sweep_svg(results, known, colors, meta))
    sys.stdout.write(markdown(results, keys, meta, known, idle))


if __name__ == "__main__":
    main()
