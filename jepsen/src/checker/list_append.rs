//! Elle-style checker for list-append transactions (`:f :txn`, value
//! `[[:append k v] [:r k [v ...]]]`, appended values unique per key).
//!
//! Every read of a list reveals a prefix of that key's version order, so
//! reads show which transaction's append came after which, and which
//! version each read saw. From that the checker builds a dependency graph
//! among committed transactions (ok ones, plus info ones whose appends
//! some read observed) and looks for cycles:
//! - ww: the appender of one element → the appender of the next element;
//! - wr: the appender of the last element a read saw → the reader;
//! - rw: a reader → the appender of the first element its read missed;
//! - rt: a transaction → those invoked after it completed (kept as a
//!   transitive reduction so the graph stays small).
//!
//! The version order of a key is its longest ok read; every other read
//! must be a prefix of it. Appends of committed transactions that no read
//! saw must come after that longest read, so its readers get rw edges to
//! them (and its last appender ww edges).
//!
//! A cycle of ww edges only is "G0", of ww/wr with a wr edge "G1c", with an
//! rw edge "G2" (the detail says "G-single" when it has exactly one), and a
//! cycle that needs an rt edge "strict-serializability-violation" (e.g. a
//! read that goes back in time). Each strongly connected component is
//! reported once per class, with one short cycle of that class.
//!
//! Checks on single reads and appends:
//! - "duplicate-append": a read holds an element twice;
//! - "garbage-read": a read holds an element nobody appended;
//! - "G1a": a read holds an element appended by a failed transaction;
//! - "G1b": another transaction's read ends with an element that its
//!   appender followed by another append to the same key (an intermediate
//!   version);
//! - "internal": a read disagrees with its own transaction's earlier read
//!   and appends of that key;
//! - "incompatible-order": a read is not a prefix of the longest read;
//! - "lost-append": an ok append no read ever saw, although some ok read of
//!   the key began after the append's transaction had completed (sound for
//!   strict serializability: that read had to see it);
//! - "non-unique-append": the same value appended twice to a key (the
//!   workload promised unique values, so the checker cannot tell them
//!   apart: fix the generator).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use super::{calls, completions, malformed, outcome, Anomaly, Call, Outcome};
use crate::history::{Edn, Op, OpType};

/// A read holds an element twice.
pub const DUPLICATE_APPEND: &str = "duplicate-append";
/// A value appended twice to one key (a generator bug; unanalysable).
pub const NON_UNIQUE_APPEND: &str = "non-unique-append";
/// A read holds an element nobody appended.
pub const GARBAGE_READ: &str = "garbage-read";
/// Aborted read: a read holds an element from a failed transaction.
pub const G1A: &str = "G1a";
/// Intermediate read: a read ends inside another transaction's appends.
pub const G1B: &str = "G1b";
/// A read disagrees with its own transaction's earlier ops on the key.
pub const INTERNAL: &str = "internal";
/// Two reads of a key where neither is a prefix of the other.
pub const INCOMPATIBLE_ORDER: &str = "incompatible-order";
/// An ok append never read, though a read began after it completed.
pub const LOST_APPEND: &str = "lost-append";
/// A cycle of ww edges.
pub const G0: &str = "G0";
/// A cycle of ww/wr edges with a wr edge.
pub const G1C: &str = "G1c";
/// A cycle of ww/wr/rw edges with an rw edge.
pub const G2: &str = "G2";
/// A cycle that needs a real-time edge.
pub const STRICT_SERIALIZABILITY_VIOLATION: &str = "strict-serializability-violation";

/// Checks a list-append history (see the module docs).
pub fn check(history: &[Op]) -> Outcome {
    let calls = calls(history, &["txn"]);
    let checked = completions(&calls);
    let mut anomalies = Vec::new();
    let mut txns = Vec::new();
    for call in calls {
        match parse_txn(&call) {
            Ok(mops) => txns.push(Txn { call, mops }),
            Err(why) => anomalies.push(malformed(&call, &why)),
        }
    }
    Checker::new(&txns, &mut anomalies).run(&mut anomalies);
    outcome(anomalies, checked)
}

/// A micro-op. A read's list is known only on an ok transaction.
enum Mop {
    Append(Edn, Edn),
    Read(Edn, Option<Vec<Edn>>),
}

struct Txn<'a> {
    call: Call<'a>,
    mops: Vec<Mop>,
}

impl Txn<'_> {
    fn ok(&self) -> bool {
        self.call.outcome() == OpType::Ok
    }
    fn name(&self) -> String {
        format!("op {}", self.call.index())
    }
}

fn parse_txn(call: &Call) -> Result<Vec<Mop>, String> {
    let ok = call.outcome() == OpType::Ok;
    // Reads are filled in only in an ok completion.
    let value = match call.done {
        Some((done, _)) if ok => &done.value,
        _ => &call.invoke.value,
    };
    let mops = value.as_vec().ok_or("a txn value must be a vector")?;
    mops.iter()
        .map(|mop| match mop.as_vec() {
            Some([f, k, x]) => match f.as_keyword() {
                Some("append") => Ok(Mop::Append(k.clone(), x.clone())),
                Some("r") if !ok => Ok(Mop::Read(k.clone(), None)),
                Some("r") => match x {
                    Edn::Nil => Ok(Mop::Read(k.clone(), Some(Vec::new()))),
                    Edn::Vector(list) => Ok(Mop::Read(k.clone(), Some(list.clone()))),
                    _ => Err(format!("read result must be a vector or nil: {mop}")),
                },
                _ => Err(format!("unknown micro-op {mop}")),
            },
            _ => Err(format!("micro-op must be [f k v]: {mop}")),
        })
        .collect()
}

/// One ok read.
struct Read<'t> {
    txn: usize,
    key: &'t Edn,
    list: &'t [Edn],
    /// Length of the part not written by the reader itself: the version it
    /// read from others (its own earlier appends to the key trail it).
    ext_len: usize,
}

impl<'t> Read<'t> {
    fn external(&self) -> &'t [Edn] {
        &self.list[..self.ext_len]
    }
}

/// Edge classes, as bits, from the least to the most permissive.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const EDGE_NAMES: [(u8, &str); 4] = [(WW, "ww"), (WR, "wr"), (RW, "rw"), (RT, "rt")];

/// The edges from one transaction to another: which classes, and for each
/// data class the first key that gave it.
#[derive(Default)]
struct Edge<'t> {
    mask: u8,
    keys: [Option<&'t Edn>; 3],
}

struct Checker<'t, 'a> {
    txns: &'t [Txn<'a>],
    /// (key, value) → the transaction that appended it (the first, if many).
    appender: HashMap<(&'t Edn, &'t Edn), usize>,
    /// (key, value) → the value its appender appended next to that key.
    next_append: HashMap<(&'t Edn, &'t Edn), &'t Edn>,
    reads: Vec<Read<'t>>,
    /// Values seen by any ok read, per key.
    observed: HashMap<&'t Edn, HashSet<&'t Edn>>,
    /// Version order per key: its longest read, and that read's position.
    orders: BTreeMap<&'t Edn, (&'t [Edn], usize)>,
    is_node: Vec<bool>,
    edges: BTreeMap<(usize, usize), Edge<'t>>,
}

impl<'t, 'a> Checker<'t, 'a> {
    /// Indexes appends and reads; reports non-unique appends and internal
    /// inconsistencies on the way.
    fn new(txns: &'t [Txn<'a>], anomalies: &mut Vec<Anomaly>) -> Self {
        let mut c = Checker {
            txns,
            appender: HashMap::new(),
            next_append: HashMap::new(),
            reads: Vec::new(),
            observed: HashMap::new(),
            orders: BTreeMap::new(),
            is_node: vec![false; txns.len()],
            edges: BTreeMap::new(),
        };
        let mut reported = HashSet::new();
        for (t, txn) in txns.iter().enumerate() {
            let mut last: HashMap<&Edn, &Edn> = HashMap::new();
            for mop in &txn.mops {
                let Mop::Append(k, v) = mop else { continue };
                if let Some(&first) = c.appender.get(&(k, v)) {
                    if reported.insert((k, v)) {
                        anomalies.push(Anomaly {
                            kind: NON_UNIQUE_APPEND.to_string(),
                            detail: format!(
                                "{v} appended to key {k} more than once ({} and {}); appends must be unique",
                                txns[first].name(),
                                txn.name()
                            ),
                            ops: vec![txns[first].call.index(), txn.call.index()],
                        });
                    }
                    continue;
                }
                c.appender.insert((k, v), t);
                if let Some(prev) = last.insert(k, v) {
                    c.next_append.insert((k, prev), v);
                }
            }
            if txn.ok() {
                c.index_reads(t, anomalies);
            }
        }
        for r in &c.reads {
            c.observed.entry(r.key).or_default().extend(r.list.iter());
            let longest = c.orders.entry(r.key).or_insert((r.list, r.txn));
            if r.list.len() > longest.0.len() {
                *longest = (r.list, r.txn);
            }
        }
        for (t, txn) in txns.iter().enumerate() {
            // An info transaction committed if anyone saw one of its appends.
            c.is_node[t] = match txn.call.outcome() {
                OpType::Ok => true,
                OpType::Info => txn.mops.iter().any(|m| match m {
                    Mop::Append(k, v) => c.observed.get(k).is_some_and(|s| s.contains(v)),
                    Mop::Read(..) => false,
                }),
                _ => false,
            };
        }
        c
    }

    /// Records the reads of ok transaction `t`, checking each against the
    /// transaction's own earlier reads and appends of the same key.
    fn index_reads(&mut self, t: usize, anomalies: &mut Vec<Anomaly>) {
        /// Per key: the last read, own appends since it, all own appends.
        type KeySoFar<'t> = (Option<&'t [Edn]>, Vec<&'t Edn>, Vec<&'t Edn>);
        let txn = &self.txns[t];
        let mut seen: HashMap<&Edn, KeySoFar> = HashMap::new();
        for mop in &txn.mops {
            match mop {
                Mop::Append(k, v) => {
                    let (_, since, all) = seen.entry(k).or_default();
                    since.push(v);
                    all.push(v);
                }
                Mop::Read(k, Some(list)) => {
                    let (prev, since, all) = seen.entry(k).or_default();
                    let consistent = match prev {
                        Some(p) => {
                            list.len() == p.len() + since.len()
                                && list.starts_with(p)
                                && list[p.len()..].iter().eq(since.iter().copied())
                        }
                        None => ends_with(list, since),
                    };
                    if !consistent {
                        anomalies.push(Anomaly {
                            kind: INTERNAL.to_string(),
                            detail: format!(
                                "{} read key {k} as {} after its own {}",
                                txn.name(),
                                Edn::Vector(list.clone()),
                                match prev {
                                    Some(p) => format!(
                                        "read {} and appends {}",
                                        Edn::Vector(p.to_vec()),
                                        show_list(since)
                                    ),
                                    None => format!("appends {}", show_list(since)),
                                }
                            ),
                            ops: vec![txn.call.index()],
                        });
                    }
                    let ext_len = if ends_with(list, all) {
                        list.len() - all.len()
                    } else {
                        list.len()
                    };
                    self.reads.push(Read {
                        txn: t,
                        key: k,
                        list,
                        ext_len,
                    });
                    *prev = Some(list);
                    since.clear();
                }
                Mop::Read(_, None) => {}
            }
        }
    }

    fn run(mut self, anomalies: &mut Vec<Anomaly>) {
        self.check_reads(anomalies);
        self.check_orders(anomalies);
        let unobserved = self.unobserved_appends();
        self.check_lost(&unobserved, anomalies);
        self.data_edges(&unobserved);
        self.realtime_edges();
        self.cycles(anomalies);
    }

    /// Per-read checks: duplicates, garbage, aborted and intermediate reads.
    fn check_reads(&self, anomalies: &mut Vec<Anomaly>) {
        for r in &self.reads {
            let reader = &self.txns[r.txn];
            let shown = Edn::Vector(r.list.to_vec());
            let mut counts: HashMap<&Edn, usize> = HashMap::new();
            for v in r.list {
                *counts.entry(v).or_default() += 1;
            }
            let mut dups: Vec<&Edn> = r.list.iter().filter(|v| counts[v] > 1).collect();
            dups.dedup();
            if !dups.is_empty() {
                anomalies.push(Anomaly {
                    kind: DUPLICATE_APPEND.to_string(),
                    detail: format!(
                        "{} read key {} as {shown}: {} more than once",
                        reader.name(),
                        r.key,
                        show_list(&dups)
                    ),
                    ops: vec![reader.call.index()],
                });
            }
            let garbage: Vec<&Edn> = r
                .list
                .iter()
                .filter(|v| !self.appender.contains_key(&(r.key, *v)))
                .collect();
            if !garbage.is_empty() {
                anomalies.push(Anomaly {
                    kind: GARBAGE_READ.to_string(),
                    detail: format!(
                        "{} read key {} as {shown}: nobody appended {}",
                        reader.name(),
                        r.key,
                        show_list(&garbage)
                    ),
                    ops: vec![reader.call.index()],
                });
            }
            for v in r.list {
                let Some(&a) = self.appender.get(&(r.key, v)) else {
                    continue;
                };
                if self.txns[a].call.outcome() == OpType::Fail {
                    anomalies.push(Anomaly {
                        kind: G1A.to_string(),
                        detail: format!(
                            "{} read key {} as {shown}, seeing {v} from failed {}",
                            reader.name(),
                            r.key,
                            self.txns[a].name()
                        ),
                        ops: vec![reader.call.index(), self.txns[a].call.index()],
                    });
                }
            }
            let Some(last) = r.external().last() else {
                continue;
            };
            let Some(&a) = self.appender.get(&(r.key, last)) else {
                continue;
            };
            if a == r.txn || self.txns[a].call.outcome() == OpType::Fail {
                continue;
            }
            if let Some(next) = self.next_append.get(&(r.key, last)) {
                anomalies.push(Anomaly {
                    kind: G1B.to_string(),
                    detail: format!(
                        "{} read key {} as {shown}, ending at {last} from {}, which appended {next} after it",
                        reader.name(),
                        r.key,
                        self.txns[a].name()
                    ),
                    ops: vec![reader.call.index(), self.txns[a].call.index()],
                });
            }
        }
    }

    /// Every read of a key must be a prefix of its longest read.
    fn check_orders(&self, anomalies: &mut Vec<Anomaly>) {
        let mut reported: HashSet<(&Edn, &[Edn])> = HashSet::new();
        for r in &self.reads {
            let (longest, by) = self.orders[r.key];
            if longest.starts_with(r.list) || !reported.insert((r.key, r.list)) {
                continue;
            }
            anomalies.push(Anomaly {
                kind: INCOMPATIBLE_ORDER.to_string(),
                detail: format!(
                    "key {}: {} read {} and {} read {}; neither is a prefix of the other",
                    r.key,
                    self.txns[r.txn].name(),
                    Edn::Vector(r.list.to_vec()),
                    self.txns[by].name(),
                    Edn::Vector(longest.to_vec())
                ),
                ops: vec![self.txns[r.txn].call.index(), self.txns[by].call.index()],
            });
        }
    }

    /// Per key, the committed transactions with an append no read saw, with
    /// that value.
    fn unobserved_appends(&self) -> BTreeMap<&'t Edn, Vec<(usize, &'t Edn)>> {
        let mut out: BTreeMap<&Edn, Vec<(usize, &Edn)>> = BTreeMap::new();
        for (t, txn) in self.txns.iter().enumerate() {
            if !self.is_node[t] {
                continue;
            }
            for mop in &txn.mops {
                let Mop::Append(k, v) = mop else { continue };
                let seen = self.observed.get(k).is_some_and(|s| s.contains(v));
                if !seen && self.appender.get(&(k, v)) == Some(&t) {
                    out.entry(k).or_default().push((t, v));
                }
            }
        }
        out
    }

    /// An ok append no read saw, though a read of its key began after the
    /// append's transaction completed.
    fn check_lost(
        &self,
        unobserved: &BTreeMap<&'t Edn, Vec<(usize, &'t Edn)>>,
        anomalies: &mut Vec<Anomaly>,
    ) {
        let mut latest: HashMap<&Edn, &Read> = HashMap::new();
        for r in &self.reads {
            let e = latest.entry(r.key).or_insert(r);
            if self.txns[r.txn].call.inv_pos > self.txns[e.txn].call.inv_pos {
                *e = r;
            }
        }
        for (k, appends) in unobserved {
            let Some(r) = latest.get(k) else { continue };
            let reader = &self.txns[r.txn];
            for &(a, v) in appends {
                let Some(done) = self.txns[a].call.ok_pos() else {
                    continue;
                };
                if reader.call.inv_pos > done {
                    anomalies.push(Anomaly {
                        kind: LOST_APPEND.to_string(),
                        detail: format!(
                            "{} appended {v} to key {k} and completed, but {} began later and read {}; no read ever saw {v}",
                            self.txns[a].name(),
                            reader.name(),
                            Edn::Vector(r.list.to_vec())
                        ),
                        ops: vec![self.txns[a].call.index(), reader.call.index()],
                    });
                }
            }
        }
    }

    fn add_edge(&mut self, from: usize, to: usize, class: u8, key: Option<&'t Edn>) {
        if from == to {
            return;
        }
        let e = self.edges.entry((from, to)).or_default();
        e.mask |= class;
        let slot = match class {
            WW => 0,
            WR => 1,
            RW => 2,
            _ => return,
        };
        if e.keys[slot].is_none() {
            e.keys[slot] = key;
        }
    }

    /// The committed appender of `v` to `k`, if any.
    fn node_appender(&self, k: &Edn, v: &Edn) -> Option<usize> {
        self.appender
            .get(&(k, v))
            .copied()
            .filter(|&a| self.is_node[a])
    }

    /// ww, wr and rw edges from each key's version order.
    fn data_edges(&mut self, unobserved: &BTreeMap<&'t Edn, Vec<(usize, &'t Edn)>>) {
        let mut new_edges = Vec::new();
        let no_unobserved = Vec::new();
        let mut reads_of: HashMap<&Edn, Vec<&Read>> = HashMap::new();
        for r in &self.reads {
            reads_of.entry(r.key).or_default().push(r);
        }
        // Only read keys have an order; unread keys give no data edges.
        for (&k, &(order, _)) in &self.orders {
            let apps: Vec<Option<usize>> = order.iter().map(|v| self.node_appender(k, v)).collect();
            let tail = unobserved.get(k).unwrap_or(&no_unobserved);
            // prev[j]: last committed appender in order[..j]; next[j]: first
            // in order[j..]. Elements of others (garbage, failed) are skipped.
            let mut prev = vec![None; order.len() + 1];
            for j in 0..order.len() {
                prev[j + 1] = apps[j].or(prev[j]);
            }
            let mut next = vec![None; order.len() + 1];
            for j in (0..order.len()).rev() {
                next[j] = apps[j].or(next[j + 1]);
            }
            for j in 0..order.len() {
                if let (Some(a), Some(b)) = (prev[j], apps[j]) {
                    new_edges.push((a, b, WW, k));
                }
            }
            if let Some(last) = prev[order.len()] {
                for &(u, _) in tail {
                    new_edges.push((last, u, WW, k));
                }
            }
            for r in reads_of.get(k).into_iter().flatten() {
                let ext = r.external();
                if !order.starts_with(ext) {
                    // Not in the order (reported): it still read its last
                    // element's appender.
                    if let Some(a) = ext.iter().rev().find_map(|v| self.node_appender(k, v)) {
                        new_edges.push((a, r.txn, WR, k));
                    }
                    continue;
                }
                let j = ext.len();
                if let Some(a) = prev[j] {
                    new_edges.push((a, r.txn, WR, k));
                }
                match next[j] {
                    Some(b) => new_edges.push((r.txn, b, RW, k)),
                    None => {
                        for &(u, _) in tail {
                            new_edges.push((r.txn, u, RW, k));
                        }
                    }
                }
            }
        }
        for (a, b, class, k) in new_edges {
            self.add_edge(a, b, class, Some(k));
        }
    }

    /// rt edges: A → B when A completed before B was invoked, reduced to a
    /// frontier of recent completions (reachability is unchanged).
    fn realtime_edges(&mut self) {
        let mut events: Vec<(usize, bool, usize)> = Vec::new(); // (pos, is_completion, txn)
        for (t, txn) in self.txns.iter().enumerate() {
            if !self.is_node[t] {
                continue;
            }
            events.push((txn.call.inv_pos, false, t));
            if let Some(pos) = txn.call.ok_pos() {
                events.push((pos, true, t));
            }
        }
        events.sort_unstable();
        // Completed transactions not yet followed by a later one.
        let mut frontier: Vec<usize> = Vec::new();
        let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut new_edges = Vec::new();
        for (_, completion, t) in events {
            if completion {
                let before = preds.remove(&t).unwrap_or_default();
                frontier.retain(|f| !before.contains(f));
                frontier.push(t);
            } else {
                for &f in &frontier {
                    new_edges.push((f, t));
                }
                preds.insert(t, frontier.clone());
            }
        }
        for (a, b) in new_edges {
            self.add_edge(a, b, RT, None);
        }
    }

    /// Finds cycles class by class: for each strongly connected component
    /// of the edges allowed so far that holds an edge of the new class,
    /// one shortest cycle through such an edge.
    fn cycles(&self, anomalies: &mut Vec<Anomaly>) {
        let levels = [
            (WW, G0),
            (WW | WR, G1C),
            (WW | WR | RW, G2),
            (WW | WR | RW | RT, STRICT_SERIALIZABILITY_VIOLATION),
        ];
        let mut lower = 0u8;
        for (mask, kind) in levels {
            let new = mask & !lower;
            let mut adj = vec![Vec::new(); self.txns.len()];
            for (&(a, b), e) in &self.edges {
                if e.mask & mask != 0 {
                    adj[a].push(b);
                }
            }
            let comp = components(&adj);
            // Edges of only the new class, within a component, by component.
            let mut starts: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
            for (&(a, b), e) in &self.edges {
                if e.mask & lower == 0
                    && e.mask & new != 0
                    && comp[a].is_some()
                    && comp[a] == comp[b]
                {
                    starts.entry(comp[a].unwrap_or(0)).or_default().push((a, b));
                }
            }
            for (c, candidates) in starts {
                // Try a few edges and keep the shortest cycle.
                let best = candidates
                    .iter()
                    .take(8)
                    .filter_map(|&(a, b)| {
                        let mut path = shortest_path(&adj, &comp, c, b, a)?;
                        path.insert(0, a);
                        Some(path)
                    })
                    .min_by_key(Vec::len);
                if let Some(cycle) = best {
                    anomalies.push(self.cycle_anomaly(kind, mask, &cycle));
                }
            }
            lower = mask;
        }
    }

    /// `cycle` is [a, b, ..., a].
    fn cycle_anomaly(&self, kind: &str, mask: u8, cycle: &[usize]) -> Anomaly {
        let mut detail = format!("cycle: {}", self.txns[cycle[0]].name());
        let mut rw_edges = 0;
        for w in cycle.windows(2) {
            let e = &self.edges[&(w[0], w[1])];
            // Label each step with its most restrictive class.
            let (slot, (class, name)) = EDGE_NAMES
                .iter()
                .enumerate()
                .find(|(_, (c, _))| e.mask & mask & c != 0)
                .expect("cycle edges are in the mask");
            rw_edges += usize::from(*class == RW);
            match e.keys.get(slot).copied().flatten() {
                Some(k) => {
                    let _ = write!(detail, " -{name} key {k}-> ");
                }
                None => {
                    let _ = write!(detail, " -{name}-> ");
                }
            }
            detail.push_str(&self.txns[w[1]].name());
        }
        if kind == G2 && rw_edges == 1 {
            detail.push_str(" (one rw edge: G-single)");
        }
        Anomaly {
            kind: kind.to_string(),
            detail,
            ops: cycle[1..]
                .iter()
                .map(|&t| self.txns[t].call.index())
                .collect(),
        }
    }
}

fn ends_with(list: &[Edn], suffix: &[&Edn]) -> bool {
    list.len() >= suffix.len()
        && list[list.len() - suffix.len()..]
            .iter()
            .eq(suffix.iter().copied())
}

fn show_list(vals: &[&Edn]) -> String {
    Edn::Vector(vals.iter().map(|v| (*v).clone()).collect()).to_string()
}

/// Tarjan's strongly connected components (iterative). Returns, per node,
/// the id of its component if that has two or more nodes.
fn components(adj: &[Vec<usize>]) -> Vec<Option<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comp = vec![None; n];
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
            if let Some(&w) = adj[v].get(*edge) {
                *edge += 1;
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                if members.len() > 1 {
                    for w in members {
                        comp[w] = Some(next_comp);
                    }
                    next_comp += 1;
                }
            }
        }
    }
    comp
}

/// Breadth-first path `from` → `to` inside component `c`, both ends included.
fn shortest_path(
    adj: &[Vec<usize>],
    comp: &[Option<usize>],
    c: usize,
    from: usize,
    to: usize,
) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    parent.insert(from, from);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to];
            let mut at = to;
            while at != from {
                at = parent[&at];
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for &w in &adj[v] {
            if comp[w] == Some(c) && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;
    use crate::history::parse_history;
    use crate::history::testing::{edn, Hist};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The invocation form of a transaction: reads blanked to nil.
    fn blank(txn: &str) -> String {
        let Edn::Vector(mops) = edn(txn) else {
            panic!("not a txn: {txn}")
        };
        let mops = mops
            .into_iter()
            .map(|m| match m.as_vec() {
                Some([f, k, _]) if f.as_keyword() == Some("r") => {
                    Edn::Vector(vec![f.clone(), k.clone(), Edn::Nil])
                }
                _ => m,
            })
            .collect();
        Edn::Vector(mops).to_string()
    }

    trait Txns {
        /// Invokes `txn` (its completed form) on `p`.
        fn inv(&mut self, p: u64, txn: &str) -> &mut Self;
        /// Invokes and completes `txn` as ok at once.
        fn txn(&mut self, p: u64, txn: &str) -> &mut Self;
    }

    impl Txns for Hist {
        fn inv(&mut self, p: u64, txn: &str) -> &mut Self {
            self.invoke(p, "txn", &blank(txn))
        }
        fn txn(&mut self, p: u64, txn: &str) -> &mut Self {
            self.inv(p, txn).ok(p, txn)
        }
    }

    fn kinds(o: &Outcome) -> Vec<&str> {
        o.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    fn assert_kinds(h: &Hist, want: &[&str]) -> Outcome {
        let o = check(&h.build());
        assert_eq!(kinds(&o), want, "{:#?}", o.anomalies);
        o
    }

    #[test]
    fn valid_history_with_concurrency_info_and_failures() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1] [:r 1 [1]]]")
            .inv(1, "[[:append 1 2]]")
            .ok(0, "[[:append 1 1] [:r 1 [1]]]")
            .ok(1, "[[:append 1 2]]")
            .txn(2, "[[:r 1 [1 2]]]")
            // An info append that happened, and one that did not.
            .inv(3, "[[:append 2 5]]")
            .info(3)
            .inv(4, "[[:append 3 9]]")
            .info(4)
            .txn(2, "[[:r 2 [5]] [:r 3 nil]]")
            // A failed append nobody sees.
            .inv(5, "[[:append 3 10]]")
            .fail(5)
            // Reads of the transaction's own appends.
            .txn(
                2,
                "[[:r 1 [1 2]] [:append 1 3] [:r 1 [1 2 3]] [:append 1 4]]",
            )
            .txn(2, "[[:r 1 [1 2 3 4]] [:r 3 nil]]")
            // An append no later read could have seen.
            .txn(0, "[[:append 4 1]]");
        let o = assert_kinds(&h, &[]);
        assert_eq!(o.validity, Validity::Valid);
        assert_eq!(o.ops_checked, 10);
    }

    #[test]
    fn jepsen_text_history_is_valid() {
        let text = "\
{:type :invoke, :f :txn, :value [[:append 9 1] [:r 9 nil]], :time 61543869, :process 0, :index 0}
{:type :invoke, :f :txn, :value [[:r 9 nil]], :time 61600000, :process 1, :index 1}
{:type :ok, :f :txn, :value [[:r 9 []]], :time 61700000, :process 1, :index 2}
{:type :ok, :f :txn, :value [[:append 9 1] [:r 9 [1]]], :time 61800000, :process 0, :index 3}
{:type :info, :f :start-partition, :value :majority, :time 61900000, :process :nemesis, :index 4}
{:type :invoke, :f :txn, :value [[:r 9 nil]], :time 62000000, :process 1, :index 5}
{:type :ok, :f :txn, :value [[:r 9 [1]]], :time 62100000, :process 1, :index 6}
";
        let o = check(&parse_history(text).unwrap());
        assert_eq!(o.validity, Validity::Valid, "{:#?}", o.anomalies);
        assert_eq!(o.ops_checked, 3);
    }

    #[test]
    fn g0_write_cycle() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1] [:append 2 2]]")
            .inv(1, "[[:append 1 2] [:append 2 1]]")
            .ok(0, "")
            .ok(1, "")
            .txn(2, "[[:r 1 [1 2]] [:r 2 [1 2]]]");
        let o = assert_kinds(&h, &[G0]);
        assert_eq!(o.anomalies[0].ops.len(), 2);
        assert!(
            o.anomalies[0].detail.contains("-ww key 1->"),
            "{}",
            o.anomalies[0].detail
        );
    }

    #[test]
    fn g1c_circular_information_flow() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1] [:r 2 [1]]]")
            .inv(1, "[[:append 2 1] [:r 1 [1]]]")
            .ok(0, "[[:append 1 1] [:r 2 [1]]]")
            .ok(1, "[[:append 2 1] [:r 1 [1]]]");
        assert_kinds(&h, &[G1C]);
    }

    #[test]
    fn g2_write_skew() {
        let mut h = Hist::new();
        h.inv(0, "[[:r 1 nil] [:append 2 1]]")
            .inv(1, "[[:r 2 nil] [:append 1 1]]")
            .ok(0, "[[:r 1 nil] [:append 2 1]]")
            .ok(1, "[[:r 2 nil] [:append 1 1]]")
            .txn(2, "[[:r 1 [1]] [:r 2 [1]]]");
        let o = assert_kinds(&h, &[G2]);
        assert!(!o.anomalies[0].detail.contains("G-single"));
    }

    #[test]
    fn g_single_is_a_g2_with_one_rw_edge() {
        // Op 1 sees op 0's append to key 2 but not its append to key 1.
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1] [:append 2 1]]")
            .inv(1, "[[:r 1 nil] [:r 2 [1]]]")
            .ok(0, "")
            .ok(1, "[[:r 1 nil] [:r 2 [1]]]");
        let o = assert_kinds(&h, &[G2]);
        assert!(
            o.anomalies[0].detail.contains("G-single"),
            "{}",
            o.anomalies[0].detail
        );
    }

    #[test]
    fn stale_read_violates_strict_serializability() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]")
            .txn(1, "[[:r 1 nil]]")
            .txn(2, "[[:r 1 [1]]]");
        let o = assert_kinds(&h, &[STRICT_SERIALIZABILITY_VIOLATION]);
        assert!(o.anomalies[0].detail.contains("-rt->"));
        // Concurrent, the same read is fine.
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1]]")
            .txn(1, "[[:r 1 nil]]")
            .ok(0, "")
            .txn(2, "[[:r 1 [1]]]");
        assert_kinds(&h, &[]);
    }

    #[test]
    fn going_back_in_time_through_a_long_real_time_chain() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]");
        for v in 0..20 {
            h.inv(1, &format!("[[:append 2 {v}]]"))
                .inv(2, "[[:r 3 nil]]")
                .ok(1, "")
                .ok(2, "");
        }
        h.txn(3, "[[:r 1 nil]]").txn(3, "[[:r 1 [1]]]");
        assert_kinds(&h, &[STRICT_SERIALIZABILITY_VIOLATION]);
    }

    #[test]
    fn lost_append() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]").txn(1, "[[:r 1 nil]]");
        let o = assert_kinds(&h, &[LOST_APPEND, STRICT_SERIALIZABILITY_VIOLATION]);
        assert_eq!(o.anomalies[0].ops, [1, 3]);
    }

    #[test]
    fn incompatible_order() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1]]")
            .inv(1, "[[:append 1 2]]")
            .inv(2, "[[:append 1 3]]")
            .ok(0, "")
            .ok(1, "")
            .ok(2, "")
            .inv(3, "[[:r 1 [1 2]]]")
            .inv(4, "[[:r 1 [1 3]]]")
            .ok(3, "[[:r 1 [1 2]]]")
            .ok(4, "[[:r 1 [1 3]]]");
        assert_kinds(&h, &[INCOMPATIBLE_ORDER]);
    }

    #[test]
    fn garbage_read() {
        let mut h = Hist::new();
        h.txn(0, "[[:r 1 [7]]]");
        assert_kinds(&h, &[GARBAGE_READ]);
    }

    #[test]
    fn g1a_aborted_read() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1]]").fail(0).txn(1, "[[:r 1 [1]]]");
        let o = assert_kinds(&h, &[G1A]);
        assert_eq!(o.anomalies[0].ops, [3, 1]);
    }

    #[test]
    fn g1b_intermediate_read() {
        let mut h = Hist::new();
        h.inv(0, "[[:append 1 1] [:append 1 2]]")
            .inv(1, "[[:r 1 [1]]]")
            .ok(0, "")
            .ok(1, "[[:r 1 [1]]]");
        // Reading half of op 2 is also a wr + rw cycle with it.
        assert_kinds(&h, &[G1B, G2]);
    }

    #[test]
    fn duplicate_append() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]").txn(1, "[[:r 1 [1 1]]]");
        assert_kinds(&h, &[DUPLICATE_APPEND]);
    }

    #[test]
    fn internal_inconsistency() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]")
            .txn(1, "[[:r 1 [1]] [:append 1 2] [:r 1 [1]]]");
        assert_kinds(&h, &[INTERNAL]);
        let mut h = Hist::new();
        h.txn(1, "[[:append 1 2] [:r 1 nil]]");
        assert_kinds(&h, &[INTERNAL]);
    }

    #[test]
    fn non_unique_append_and_malformed_ops() {
        let mut h = Hist::new();
        h.txn(0, "[[:append 1 1]]").txn(1, "[[:append 1 1]]");
        assert_kinds(&h, &[NON_UNIQUE_APPEND]);
        let mut h = Hist::new();
        h.call(0, "txn", "[[:put 1 1]]", "").call(0, "txn", "7", "");
        assert_kinds(&h, &["malformed-op", "malformed-op"]);
    }

    /// Random histories from an in-memory store that applies each
    /// transaction atomically between its invocation and completion (so they
    /// are strict serializable), with failures and indeterminate outcomes.
    #[test]
    fn simulated_strict_serializable_histories_are_valid() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut db: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            let mut next = 0i64;
            // process → (txn as (append?, key, value), result once applied)
            type Pending = (Vec<(bool, i64, i64)>, Option<Edn>);
            let mut pending: HashMap<u64, Pending> = HashMap::new();
            let mut h = Hist::new();
            for _ in 0..400 {
                let p = rng.gen_range(0..6u64);
                match pending.remove(&p) {
                    None => {
                        let txn: Vec<(bool, i64, i64)> = (0..rng.gen_range(1..4))
                            .map(|_| {
                                next += 1;
                                (rng.gen_bool(0.5), rng.gen_range(0..4), next)
                            })
                            .collect();
                        let inv = txn
                            .iter()
                            .map(|&(append, k, v)| match append {
                                true => format!("[:append {k} {v}]"),
                                false => format!("[:r {k} nil]"),
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                        h.invoke(p, "txn", &format!("[{inv}]"));
                        pending.insert(p, (txn, None));
                    }
                    Some((txn, None)) => match rng.gen_range(0..10) {
                        0 => {
                            h.fail(p);
                        }
                        1 => {
                            h.info(p);
                        }
                        _ => {
                            let mut out = Vec::new();
                            for &(append, k, v) in &txn {
                                let list = db.entry(k).or_default();
                                if append {
                                    list.push(v);
                                    out.push(edn(&format!("[:append {k} {v}]")));
                                } else {
                                    let read =
                                        Edn::Vector(list.iter().map(|&x| Edn::Int(x)).collect());
                                    out.push(Edn::Vector(vec![Edn::kw("r"), Edn::Int(k), read]));
                                }
                            }
                            pending.insert(p, (txn, Some(Edn::Vector(out))));
                        }
                    },
                    Some((_, Some(result))) => {
                        if rng.gen_range(0..10) == 0 {
                            h.info(p);
                        } else {
                            h.ok(p, &result.to_string());
                        }
                    }
                }
            }
            let o = check(&h.build());
            assert_eq!(
                o.validity,
                Validity::Valid,
                "seed {seed}: {:#?}",
                o.anomalies
            );
        }
    }
}
