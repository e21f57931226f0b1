//! The run report: a plain-text summary a person reads top to bottom, plus
//! two SVG plots (per-op latency and throughput) with the fault windows
//! shaded in.
//!
//! `write_report` writes `summary.txt`, `latency.svg` and `throughput.svg`
//! into a directory; `summary_text` builds the text alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::checker::{Outcome, Validity};
use crate::history::{Edn, Op, OpType};

/// A span of the run during which a fault was active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// Nanoseconds since the start of the run.
    pub start_ns: u64,
    /// Nanoseconds since the start of the run.
    pub end_ns: u64,
    /// e.g. "partition majorities-ring", "kill n1 n3".
    pub label: String,
}

/// What the run was and what was observed about the cluster besides the
/// history itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub workload: String,
    pub nemesis: String,
    pub nodes: usize,
    pub time_limit_s: u64,
    pub seed: u64,
    pub concurrency: usize,
    pub faults: Vec<FaultWindow>,
    /// total time during the run in which no node reported a leader
    pub leaderless_ns: u64,
    /// from the final heal until the first ok op after it; None if none
    pub recovery_ns: Option<u64>,
    /// equality of every node's data at the end: None = not checked
    pub nodes_equal: Option<bool>,
    /// The digest comparison, one line (`equal (5 nodes at index 1234,
    /// ..)`, `differ at index ..: n1=.. n2=..`, `not compared: ..`).
    pub digests: Option<String>,
    pub notes: Vec<String>,
}

/// A checker's counts as `name N, name N`.
pub fn counts_line(counts: &[(&str, usize)]) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most this many involved ops are printed per anomaly.
const MAX_OPS_PER_ANOMALY: usize = 8;
/// At most this many distinct error texts are listed.
const MAX_ERROR_GROUPS: usize = 10;
/// Error texts longer than this are cut.
const MAX_ERROR_CHARS: usize = 200;
/// Op one-liners longer than this are cut.
const MAX_OP_LINE_CHARS: usize = 600;

const PLOT_SIZE: (u32, u32) = (1100, 620);
const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
const FAIL_COLOR: RGBColor = RGBColor(214, 39, 40);
const INFO_COLOR: RGBColor = RGBColor(255, 127, 14);
const FAULT_COLOR: RGBColor = RGBColor(120, 120, 120);
const FAULT_ALPHA: f64 = 0.2;

/// One completed op (ok/fail/info) with its latency, if its invoke was seen.
#[derive(Clone, Debug)]
struct Completion {
    f: String,
    typ: OpType,
    /// Completion time, ns since the start of the run.
    time: u64,
    latency_ns: Option<u64>,
    error: Option<String>,
}

/// The history's completions, paired with their processes' pending invokes.
#[derive(Debug, Default)]
struct Pairing {
    completions: Vec<Completion>,
    invokes: usize,
    /// Invokes that never completed.
    pending_at_end: usize,
}

fn pair_history(history: &[Op]) -> Pairing {
    let mut pending: HashMap<u64, u64> = HashMap::new();
    let mut out = Pairing::default();
    for op in history {
        match op.typ {
            OpType::Invoke => {
                out.invokes += 1;
                pending.insert(op.process, op.time);
            }
            OpType::Ok | OpType::Fail | OpType::Info => {
                let latency_ns = pending
                    .remove(&op.process)
                    .map(|t0| op.time.saturating_sub(t0));
                out.completions.push(Completion {
                    f: op.f.clone(),
                    typ: op.typ,
                    time: op.time,
                    latency_ns,
                    error: op.error.clone(),
                });
            }
        }
    }
    out.pending_at_end = pending.len();
    out
}

/// Nearest-rank percentile of an ascending slice; `p` in 0..=100.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

fn fmt_ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn fmt_s(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

fn write_edn(out: &mut String, v: &Edn) {
    match v {
        Edn::Nil => out.push_str("nil"),
        Edn::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Edn::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Edn::Str(s) => write_edn_str(out, s),
        Edn::Keyword(k) => {
            out.push(':');
            out.push_str(k);
        }
        Edn::Vector(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_edn(out, item);
            }
            out.push(']');
        }
        Edn::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_edn(out, k);
                out.push(' ');
                write_edn(out, v);
            }
            out.push('}');
        }
    }
}

fn write_edn_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn type_name(t: OpType) -> &'static str {
    match t {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

/// An op as a Jepsen-style EDN one-liner.
fn op_line(op: &Op) -> String {
    let mut s = String::new();
    let _ = write!(s, "{{:type :{}, :f :{}, :value ", type_name(op.typ), op.f);
    write_edn(&mut s, &op.value);
    let _ = write!(
        s,
        ", :process {}, :time {}, :index {}",
        op.process, op.time, op.index
    );
    if let Some(node) = &op.node {
        s.push_str(", :node ");
        write_edn_str(&mut s, node);
    }
    if let Some(err) = &op.error {
        s.push_str(", :error ");
        write_edn_str(&mut s, err);
    }
    s.push('}');
    truncate(&s, MAX_OP_LINE_CHARS)
}

/// Formats rows as aligned columns: the first left-aligned, the rest right.
/// A table whose last column is free text: the other columns are aligned
/// as in [`table`], the text follows left-aligned outside it.
fn table_with_text(out: &mut String, mut rows: Vec<Vec<String>>) {
    let texts: Vec<String> = rows
        .iter_mut()
        .map(|r| r.pop().unwrap_or_default())
        .collect();
    for r in &mut rows {
        r.insert(0, String::new());
    }
    for (line, text) in table(&rows, "").lines().zip(texts) {
        let _ = writeln!(out, "{line}  {text}");
    }
}

fn table(rows: &[Vec<String>], indent: &str) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[derive(Default)]
struct FStats {
    ok: usize,
    fail: usize,
    info: usize,
    latencies: Vec<u64>,
}

impl FStats {
    fn add(&mut self, c: &Completion) {
        match c.typ {
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            OpType::Info => self.info += 1,
            OpType::Invoke => {}
        }
        if let Some(l) = c.latency_ns {
            self.latencies.push(l);
        }
    }

    fn row(&mut self, name: &str) -> Vec<String> {
        self.latencies.sort_unstable();
        let lat = |p: f64| percentile(&self.latencies, p).map_or("-".to_string(), fmt_ms);
        vec![
            name.to_string(),
            (self.ok + self.fail + self.info).to_string(),
            self.ok.to_string(),
            self.fail.to_string(),
            self.info.to_string(),
            lat(50.0),
            lat(99.0),
            lat(100.0),
        ]
    }
}

fn heading(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n{title}\n{}", "-".repeat(title.chars().count()));
}

/// The plain-text report: header, verdict, op table, errors, faults,
/// leadership, anomalies, notes.
pub fn summary_text(info: &RunInfo, history: &[Op], outcome: &Outcome) -> String {
    let pairing = pair_history(history);
    let span_ns = history.iter().map(|o| o.time).max().unwrap_or(0);
    let mut out = String::new();

    // Header.
    let title = format!("redisraft-jepsen run: {} / {}", info.workload, info.nemesis);
    let _ = writeln!(out, "{title}\n{}", "=".repeat(title.chars().count()));
    let header = vec![
        vec!["workload".into(), info.workload.clone()],
        vec!["nemesis".into(), info.nemesis.clone()],
        vec!["nodes".into(), info.nodes.to_string()],
        vec!["time limit".into(), format!("{} s", info.time_limit_s)],
        vec!["seed".into(), info.seed.to_string()],
        vec!["concurrency".into(), info.concurrency.to_string()],
        vec![
            "history".into(),
            format!(
                "{} entries, {} invokes, {} completed, {} pending at end, span {} s",
                history.len(),
                pairing.invokes,
                pairing.completions.len(),
                pairing.pending_at_end,
                fmt_s(span_ns)
            ),
        ],
    ];
    for row in &header {
        let _ = writeln!(out, "{:<12} {}", row[0], row[1]);
    }

    // Verdict.
    let verdict = match outcome.validity {
        Validity::Valid => "VALID",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "UNKNOWN",
    };
    let equal = match info.nodes_equal {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not checked",
    };
    let _ = writeln!(out, "\nVerdict: {verdict}    nodes' data equal: {equal}");
    if let Some(d) = &info.digests {
        let _ = writeln!(out, "digests: {d}");
    }
    let _ = writeln!(
        out,
        "checker looked at {} completed ops and found {} anomal{}",
        outcome.ops_checked,
        outcome.anomalies.len(),
        if outcome.anomalies.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );

    if !outcome.counts.is_empty() {
        let _ = writeln!(out, "checker counts: {}", counts_line(&outcome.counts));
    }

    // Op table.
    heading(&mut out, "Completed ops by :f (latency in ms)");
    if pairing.completions.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut by_f: BTreeMap<&str, FStats> = BTreeMap::new();
        let mut all = FStats::default();
        for c in &pairing.completions {
            by_f.entry(c.f.as_str()).or_default().add(c);
            all.add(c);
        }
        let mut rows: Vec<Vec<String>> =
            vec![[":f", "total", "ok", "fail", "info", "p50", "p99", "max"]
                .iter()
                .map(|s| s.to_string())
                .collect()];
        for (f, stats) in by_f.iter_mut() {
            rows.push(stats.row(f));
        }
        if by_f.len() > 1 {
            rows.push(all.row("all"));
        }
        out.push_str(&table(&rows, "  "));
    }

    // Errors.
    heading(&mut out, "Errors of fail/info ops");
    let mut groups: HashMap<String, (usize, usize)> = HashMap::new();
    for c in &pairing.completions {
        let (fail, info_n) = match c.typ {
            OpType::Fail => (1, 0),
            OpType::Info => (0, 1),
            _ => continue,
        };
        let text = match &c.error {
            Some(e) => truncate(
                &e.split_whitespace().collect::<Vec<_>>().join(" "),
                MAX_ERROR_CHARS,
            ),
            None => "(no error text)".to_string(),
        };
        let g = groups.entry(text).or_default();
        g.0 += fail;
        g.1 += info_n;
    }
    if groups.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut groups: Vec<(String, (usize, usize))> = groups.into_iter().collect();
        groups.sort_by(|a, b| {
            (b.1 .0 + b.1 .1)
                .cmp(&(a.1 .0 + a.1 .1))
                .then(a.0.cmp(&b.0))
        });
        let mut rows: Vec<Vec<String>> = vec![vec![
            "count".into(),
            "fail".into(),
            "info".into(),
            "error".into(),
        ]];
        for (text, (fail, info_n)) in groups.iter().take(MAX_ERROR_GROUPS) {
            rows.push(vec![
                (fail + info_n).to_string(),
                fail.to_string(),
                info_n.to_string(),
                text.clone(),
            ]);
        }
        table_with_text(&mut out, rows);
        if groups.len() > MAX_ERROR_GROUPS {
            let _ = writeln!(
                out,
                "  ... and {} more distinct error texts",
                groups.len() - MAX_ERROR_GROUPS
            );
        }
    }

    // Faults.
    heading(&mut out, "Fault windows");
    if info.faults.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut rows: Vec<Vec<String>> = vec![vec![
            "start s".into(),
            "end s".into(),
            "length s".into(),
            "label".into(),
        ]];
        let mut faults: Vec<&FaultWindow> = info.faults.iter().collect();
        faults.sort_by_key(|w| (w.start_ns, w.end_ns));
        for w in faults {
            rows.push(vec![
                fmt_s(w.start_ns),
                fmt_s(w.end_ns),
                fmt_s(w.end_ns.saturating_sub(w.start_ns)),
                w.label.clone(),
            ]);
        }
        table_with_text(&mut out, rows);
    }

    // Leadership and recovery.
    heading(&mut out, "Availability");
    let leaderless = if span_ns > 0 {
        format!(
            "{} s ({:.1}% of the {} s history)",
            fmt_s(info.leaderless_ns),
            100.0 * info.leaderless_ns as f64 / span_ns as f64,
            fmt_s(span_ns)
        )
    } else {
        format!("{} s", fmt_s(info.leaderless_ns))
    };
    let _ = writeln!(out, "  time without a leader:   {leaderless}");
    let recovery = match info.recovery_ns {
        Some(ns) => format!("{} s", fmt_s(ns)),
        None if info.faults.is_empty() => "n/a (no faults)".to_string(),
        None => "none: no ok op after the final heal".to_string(),
    };
    let _ = writeln!(out, "  recovery after heal:     {recovery}");

    // Anomalies.
    heading(&mut out, "Anomalies");
    if outcome.anomalies.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let by_index: HashMap<u64, &Op> = history.iter().map(|o| (o.index, o)).collect();
        for (i, a) in outcome.anomalies.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", i + 1, a.kind);
            for line in a.detail.lines() {
                let _ = writeln!(out, "     {line}");
            }
            if !a.ops.is_empty() {
                let _ = writeln!(out, "     ops ({}):", a.ops.len());
            }
            for idx in a.ops.iter().take(MAX_OPS_PER_ANOMALY) {
                match by_index.get(idx) {
                    Some(op) => {
                        let _ = writeln!(out, "       {}", op_line(op));
                    }
                    None => {
                        let _ = writeln!(out, "       #{idx}: (not in the history)");
                    }
                }
            }
            if a.ops.len() > MAX_OPS_PER_ANOMALY {
                let _ = writeln!(
                    out,
                    "       ... and {} more",
                    a.ops.len() - MAX_OPS_PER_ANOMALY
                );
            }
        }
    }

    if !info.notes.is_empty() {
        heading(&mut out, "Notes");
        for note in &info.notes {
            let mut lines = note.lines();
            if let Some(first) = lines.next() {
                let _ = writeln!(out, "  - {first}");
            }
            for line in lines {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// Writes `summary.txt`, `latency.svg` and `throughput.svg` into `dir`
/// (creating it) and returns the summary text.
pub fn write_report(
    dir: &Path,
    info: &RunInfo,
    history: &[Op],
    outcome: &Outcome,
) -> io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let summary = summary_text(info, history, outcome);
    std::fs::write(dir.join("summary.txt"), &summary)?;
    let pairing = pair_history(history);
    std::fs::write(dir.join("latency.svg"), latency_svg(info, &pairing)?)?;
    std::fs::write(dir.join("throughput.svg"), throughput_svg(info, &pairing)?)?;
    Ok(summary)
}

fn plot_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plotting failed: {e}"))
}

fn type_color(t: OpType) -> RGBColor {
    match t {
        OpType::Fail => FAIL_COLOR,
        OpType::Info => INFO_COLOR,
        OpType::Ok | OpType::Invoke => OK_COLOR,
    }
}

/// The end of the plotted time axis in seconds: the last completion or
/// fault end, at least one second.
fn x_end_s(info: &RunInfo, pairing: &Pairing) -> f64 {
    let last = pairing
        .completions
        .iter()
        .map(|c| c.time)
        .chain(info.faults.iter().map(|w| w.end_ns.max(w.start_ns)))
        .max()
        .unwrap_or(0);
    (last as f64 / 1e9).max(1.0)
}

/// Axis tick labels: up to four decimals, trailing zeros trimmed.
fn axis_num(v: &f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

type Chart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;
type PlotResult = Result<(), DrawingAreaErrorKind<io::Error>>;

/// Shades each fault window across the whole height of the chart, with its
/// label at the top (staggered so neighbouring labels don't collide).
fn shade_faults<Y>(chart: &mut Chart<'_, '_, Y>, faults: &[FaultWindow]) -> PlotResult
where
    Y: Ranged<ValueType = f64>,
{
    if faults.is_empty() {
        return Ok(());
    }
    let Range {
        start: x_lo,
        end: x_hi,
    } = chart.x_range();
    let Range {
        start: y_lo,
        end: y_hi,
    } = chart.y_range();
    let clamp_x = |ns: u64| (ns as f64 / 1e9).clamp(x_lo, x_hi);
    let shade = FAULT_COLOR.mix(FAULT_ALPHA);
    chart
        .draw_series(faults.iter().map(|w| {
            let (a, b) = (w.start_ns.min(w.end_ns), w.start_ns.max(w.end_ns));
            Rectangle::new([(clamp_x(a), y_lo), (clamp_x(b), y_hi)], shade.filled())
        }))?
        .label("fault")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], shade.filled()));
    let label_color = BLACK.mix(0.75);
    let label_style = TextStyle::from(("sans-serif", 13).into_font()).color(&label_color);
    chart.draw_series(faults.iter().enumerate().map(|(i, w)| {
        let x = clamp_x(w.start_ns.min(w.end_ns));
        EmptyElement::at((x, y_hi))
            + Text::new(
                truncate(&w.label, 40),
                (3, 4 + 15 * (i % 3) as i32),
                label_style.clone(),
            )
    }))?;
    Ok(())
}

fn finish_chart<'a, 'b: 'a, Y>(chart: &mut Chart<'a, 'b, Y>) -> PlotResult
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

fn latency_chart<YS>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    info: &RunInfo,
    x_end: f64,
    y_spec: YS,
    y_desc: &str,
    points: &[(f64, f64, OpType)],
) -> PlotResult
where
    YS: AsRangedCoord<Value = f64>,
    YS::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{} / {}: op latency", info.workload, info.nemesis),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, y_spec)?;
    chart
        .configure_mesh()
        .x_desc("completion time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&axis_num)
        .y_label_formatter(&axis_num)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    shade_faults(&mut chart, &info.faults)?;
    for typ in [OpType::Ok, OpType::Fail, OpType::Info] {
        let color = type_color(typ);
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.2 == typ)
                    .map(move |&(x, y, _)| Circle::new((x, y), 2, color.mix(0.7).filled())),
            )?
            .label(type_name(typ))
            .legend(move |(x, y)| Circle::new((x + 7, y), 4, color.filled()));
    }
    finish_chart(&mut chart)
}

/// Scatter of every completed op whose invoke was seen: x = completion time
/// (s), y = latency (ms; log scale if the latencies span over 2 decades).
fn latency_svg(info: &RunInfo, pairing: &Pairing) -> io::Result<String> {
    // Zero latencies can't sit on a log axis: floor them at 1 µs.
    const FLOOR_MS: f64 = 0.001;
    let points: Vec<(f64, f64, OpType)> = pairing
        .completions
        .iter()
        .filter_map(|c| {
            c.latency_ns
                .map(|l| (c.time as f64 / 1e9, (l as f64 / 1e6).max(FLOOR_MS), c.typ))
        })
        .collect();
    let x_end = x_end_s(info, pairing) * 1.02;
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        if !points.is_empty() && hi / lo > 100.0 {
            let lo = 10f64.powf(lo.log10().floor());
            let hi = 10f64.powf(hi.log10().ceil());
            latency_chart(
                &root,
                info,
                x_end,
                (lo..hi).log_scale(),
                "latency (ms, log scale)",
                &points,
            )
        } else {
            let hi = if hi > 0.0 { hi * 1.08 } else { 1.0 };
            latency_chart(&root, info, x_end, 0.0..hi, "latency (ms)", &points)
        }
        .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Completions per 1 s bucket for each of ok/fail/info, as step lines.
fn throughput_svg(info: &RunInfo, pairing: &Pairing) -> io::Result<String> {
    let x_end = x_end_s(info, pairing);
    let buckets = x_end.floor() as usize + 1;
    let mut counts: HashMap<&'static str, Vec<usize>> = HashMap::new();
    for c in &pairing.completions {
        let b = ((c.time / 1_000_000_000) as usize).min(buckets - 1);
        counts
            .entry(type_name(c.typ))
            .or_insert_with(|| vec![0; buckets])[b] += 1;
    }
    let y_max = counts
        .values()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(0);
    let y_end = ((y_max as f64) * 1.1).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let draw = || -> PlotResult {
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("{} / {}: throughput", info.workload, info.nemesis),
                    ("sans-serif", 22),
                )
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..buckets as f64, 0.0..y_end)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("completed ops/s (1 s buckets)")
                .x_label_formatter(&axis_num)
                .y_label_formatter(&axis_num)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(BLACK.mix(0.05))
                .draw()?;
            shade_faults(&mut chart, &info.faults)?;
            let empty = vec![0; buckets];
            for typ in [OpType::Ok, OpType::Fail, OpType::Info] {
                let color = type_color(typ);
                let series = counts.get(type_name(typ)).unwrap_or(&empty);
                let steps = series
                    .iter()
                    .enumerate()
                    .flat_map(|(b, &n)| [(b as f64, n as f64), ((b + 1) as f64, n as f64)]);
                chart
                    .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
                    .label(type_name(typ))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            finish_chart(&mut chart)
        };
        draw().map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Anomaly;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    struct Builder {
        ops: Vec<Op>,
    }

    impl Builder {
        fn push(&mut self, typ: OpType, f: &str, value: Edn, process: u64, time: u64) {
            let error = match typ {
                OpType::Fail => Some("ERR not leader".to_string()),
                OpType::Info => Some("timeout".to_string()),
                _ => None,
            };
            self.ops.push(Op {
                index: self.ops.len() as u64,
                typ,
                f: f.to_string(),
                value,
                process,
                time,
                node: Some(format!("n{}", process + 1)),
                error,
            });
        }

        /// An invoke at `t` and its completion `lat` later.
        fn op(&mut self, typ: OpType, f: &str, process: u64, t: u64, lat: u64) {
            let v = match f {
                "write" => Edn::Vector(vec![Edn::Int(1), Edn::Int(t as i64 / MS as i64)]),
                _ => Edn::Vector(vec![Edn::Int(1), Edn::Nil]),
            };
            self.push(OpType::Invoke, f, v.clone(), process, t);
            self.push(typ, f, v, process, t + lat);
        }
    }

    /// 2 processes over 5 s: writes ok 3 / fail 1, reads ok 3 / info 1,
    /// a partition from 2 s to 3.5 s.
    fn fixture() -> (RunInfo, Vec<Op>, Outcome) {
        let mut b = Builder { ops: Vec::new() };
        b.op(OpType::Ok, "write", 0, 100 * MS, 10 * MS);
        b.op(OpType::Ok, "read", 1, 200 * MS, 5 * MS);
        b.op(OpType::Ok, "write", 0, 1000 * MS, 20 * MS);
        b.op(OpType::Ok, "read", 1, 1100 * MS, MS);
        b.op(OpType::Fail, "write", 0, 2100 * MS, 30 * MS);
        b.op(OpType::Info, "read", 1, 2200 * MS, 1000 * MS);
        b.op(OpType::Ok, "write", 0, 3600 * MS, 40 * MS);
        b.op(OpType::Ok, "read", 2, 4000 * MS, 2 * MS);
        // Still pending when the history ends.
        b.push(OpType::Invoke, "write", Edn::Nil, 0, 4900 * MS);
        let info = RunInfo {
            workload: "register".into(),
            nemesis: "partition".into(),
            nodes: 3,
            time_limit_s: 5,
            seed: 42,
            concurrency: 2,
            faults: vec![FaultWindow {
                start_ns: 2 * S,
                end_ns: 3 * S + 500 * MS,
                label: "partition n1 | n2 n3".into(),
            }],
            leaderless_ns: 1_200 * MS,
            recovery_ns: Some(100 * MS),
            nodes_equal: Some(true),
            digests: Some("equal (3 nodes at index 42, 0123abcd)".into()),
            notes: vec!["synthetic history".into()],
        };
        let outcome = Outcome {
            validity: Validity::Invalid,
            anomalies: vec![Anomaly {
                kind: "stale-read".into(),
                detail: "read of key 1 saw nil after write 1000 was acknowledged".into(),
                ops: vec![5, 15, 999],
            }],
            ops_checked: 8,
            counts: vec![("enqueued-ok", 3)],
        };
        (info, b.ops, outcome)
    }

    fn row<'a>(summary: &'a str, first: &str) -> Vec<&'a str> {
        summary
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&first))
            .unwrap_or_else(|| panic!("no row {first:?} in\n{summary}"))
    }

    fn line_with<'a>(summary: &'a str, needle: &str) -> Vec<&'a str> {
        let mut hits = summary.lines().filter(|l| l.contains(needle));
        let line = hits
            .next()
            .unwrap_or_else(|| panic!("no {needle:?} in\n{summary}"));
        assert!(hits.next().is_none(), "{needle:?} twice in\n{summary}");
        line.split_whitespace().collect()
    }

    fn unique_dir(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!(
            "redisraft-jepsen-report-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn summary_counts_latencies_and_sections() {
        let (info, history, outcome) = fixture();
        let s = summary_text(&info, &history, &outcome);
        assert!(
            s.contains("Verdict: INVALID    nodes' data equal: yes"),
            "{s}"
        );
        assert!(s.contains("\ndigests: equal (3 nodes at index 42, 0123abcd)\n"));
        assert!(s.contains("\nchecker counts: enqueued-ok 3\n"));
        assert!(s.contains("17 entries, 9 invokes, 8 completed, 1 pending at end"));
        // :f total ok fail info p50 p99 max
        assert_eq!(
            row(&s, "write"),
            ["write", "4", "3", "1", "0", "20.0", "40.0", "40.0"]
        );
        assert_eq!(
            row(&s, "read"),
            ["read", "4", "3", "0", "1", "2.00", "1000", "1000"]
        );
        assert_eq!(
            row(&s, "all"),
            ["all", "8", "6", "1", "1", "10.0", "1000", "1000"]
        );
        // Errors: count fail info text.
        assert_eq!(
            line_with(&s, "ERR not leader"),
            ["1", "1", "0", "ERR", "not", "leader"]
        );
        assert_eq!(line_with(&s, "timeout"), ["1", "0", "1", "timeout"]);
        // Fault window.
        assert_eq!(
            row(&s, "2.000"),
            [
                "2.000",
                "3.500",
                "1.500",
                "partition",
                "n1",
                "|",
                "n2",
                "n3"
            ]
        );
        assert!(s.contains("time without a leader:   1.200 s (24.5% of the 4.900 s history)"));
        assert!(s.contains("recovery after heal:     0.100 s"));
        // Anomaly: kind, detail, ops by index, missing index.
        assert!(s.contains("1. stale-read"));
        assert!(s.contains("read of key 1 saw nil after write 1000 was acknowledged"));
        assert!(s.contains(
            "{:type :ok, :f :write, :value [1 1000], :process 0, :time 1020000000, :index 5, :node \"n1\"}"
        ));
        assert!(s.contains(":index 15, :node \"n3\"}"));
        assert!(s.contains("#999: (not in the history)"));
        assert!(s.contains("synthetic history"));
        // Sections appear in reading order.
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(pos("Verdict") < pos("Completed ops"));
        assert!(pos("Completed ops") < pos("Errors"));
        assert!(pos("Errors") < pos("Fault windows"));
        assert!(pos("Fault windows") < pos("Availability"));
        assert!(pos("Availability") < pos("Anomalies"));
    }

    #[test]
    fn write_report_writes_three_files() {
        let (info, history, outcome) = fixture();
        let dir = unique_dir("full");
        let summary = write_report(&dir, &info, &history, &outcome).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("summary.txt")).unwrap(),
            summary
        );
        assert!(summary.contains("stale-read"));
        let shade = format!(
            "fill=\"#{:02X}{:02X}{:02X}\"",
            FAULT_COLOR.0, FAULT_COLOR.1, FAULT_COLOR.2
        );
        for (name, title) in [
            ("latency.svg", "register / partition: op latency"),
            ("throughput.svg", "register / partition: throughput"),
        ] {
            let svg = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(svg.len() > 2000, "{name} too small: {}", svg.len());
            assert!(svg.starts_with("<svg"), "{name}");
            assert!(svg.trim_end().ends_with("</svg>"), "{name}");
            assert!(svg.contains(title), "{name}");
            let shaded = svg.lines().any(|l| {
                l.starts_with("<rect") && l.contains(&shade) && l.contains("opacity=\"0.2\"")
            });
            assert!(shaded, "{name} has no fault shading");
            assert!(
                svg.contains("partition n1 | n2 n3"),
                "{name} lacks the fault label"
            );
            for legend in [">\nok\n<", ">\nfail\n<", ">\ninfo\n<", ">\nfault\n<"] {
                assert!(svg.contains(legend), "{name} lacks legend {legend:?}");
            }
        }
        let latency = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
        // 8 points plus 3 legend markers.
        assert_eq!(latency.matches("<circle").count(), 11);
        // 1 ms .. 1000 ms spans 3 decades: log scale.
        assert!(latency.contains("latency (ms, log scale)"));
        assert!(latency.contains("completion time (s)"));
        let throughput = std::fs::read_to_string(dir.join("throughput.svg")).unwrap();
        assert!(throughput.contains("completed ops/s (1 s buckets)"));
        assert!(throughput.contains("<polyline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn narrow_latencies_use_a_linear_axis() {
        let (mut info, history, outcome) = fixture();
        info.faults.clear();
        info.recovery_ns = None;
        let history: Vec<Op> = history.into_iter().filter(|o| o.f == "write").collect();
        let s = summary_text(&info, &history, &outcome);
        assert!(s.contains("recovery after heal:     n/a (no faults)"));
        assert!(s.contains("Fault windows\n-------------\n  (none)"));
        let svg = latency_svg(&info, &pair_history(&history)).unwrap();
        assert!(svg.contains(">\nlatency (ms)\n<"));
    }

    #[test]
    fn empty_history_still_reports() {
        let (info, _, _) = fixture();
        let outcome = Outcome {
            validity: Validity::Unknown,
            anomalies: vec![],
            ops_checked: 0,
            counts: Vec::new(),
        };
        let dir = unique_dir("empty");
        let s = write_report(
            &dir,
            &RunInfo {
                nodes_equal: None,
                ..info
            },
            &[],
            &outcome,
        )
        .unwrap();
        assert!(s.contains("Verdict: UNKNOWN    nodes' data equal: not checked"));
        assert!(s.contains("Anomalies\n---------\n  (none)"));
        for f in ["summary.txt", "latency.svg", "throughput.svg"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn helpers() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        let mut s = String::new();
        write_edn(
            &mut s,
            &Edn::Map(vec![
                (Edn::Keyword("a".into()), Edn::Str("x\"y\n".into())),
                (
                    Edn::Keyword("b".into()),
                    Edn::Vector(vec![Edn::Nil, Edn::Bool(true), Edn::Int(-3)]),
                ),
            ]),
        );
        assert_eq!(s, r#"{:a "x\"y\n", :b [nil true -3]}"#);
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(axis_num(&2.5), "2.5");
        assert_eq!(axis_num(&100.0), "100");
        assert_eq!(axis_num(&0.001), "0.001");
    }
}
