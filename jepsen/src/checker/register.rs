//! Linearizability of read/write/cas registers, one independent register
//! per key (jepsen.independent: `:value [k v]`, cas `[k [old new]]`).
//! Registers start as nil; values are integers or nil.
//!
//! Per key, a Wing & Gong style search looks for a linearization: an order
//! of the ops in which each op takes effect at one instant between its
//! invocation and completion, and every read returns the value then held.
//! - ok ops must take effect before they completed;
//! - info (or never completed) writes and cas may take effect at any time
//!   after their invocation, or never;
//! - failed ops never happened; reads without an ok completion are dropped
//!   (their value is unknown).
//!
//! The search explores configurations (set of ops already linearized,
//! register value) depth first and never revisits one. A read (or a cas
//! from a value to itself) that is legal now is taken at once without
//! branching: it changes nothing, so doing it earlier can never hurt. A key whose search exceeds its budget is reported as
//! "budget-exhausted", which makes the outcome `Unknown`, not valid.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{calls, completions, malformed, outcome, Anomaly, Outcome, BUDGET_EXHAUSTED};
use crate::history::{Edn, Op, OpType};

/// A key's history has no linearization.
pub const NONLINEARIZABLE: &str = "nonlinearizable";

/// How much search one key may use before its result is `Unknown`.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Distinct configurations visited.
    pub max_states: usize,
    /// Wall-clock time.
    pub max_time: Duration,
}

impl Default for Budget {
    /// 2 s or 1,000,000 configurations per key, whichever comes first.
    fn default() -> Self {
        Budget {
            max_states: 1_000_000,
            max_time: Duration::from_secs(2),
        }
    }
}

/// A register value: nil or an integer.
type Val = Option<i64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read(Val),
    Write(Val),
    Cas(Val, Val),
}

impl Action {
    /// The register after this action from `state`, or `None` if the action
    /// cannot happen in that state.
    fn apply(self, state: Val) -> Option<Val> {
        match self {
            Action::Read(v) => (v == state).then_some(state),
            Action::Write(v) => Some(v),
            Action::Cas(old, new) => (old == state).then_some(new),
        }
    }

    /// Never changes the register, wherever it takes effect.
    fn is_read_like(self) -> bool {
        match self {
            Action::Read(_) => true,
            Action::Cas(old, new) => old == new,
            Action::Write(_) => false,
        }
    }
}

/// One op of a key, as the search sees it.
#[derive(Clone, Debug)]
struct KeyOp {
    action: Action,
    /// History position of the invocation.
    inv: usize,
    /// History position of the ok completion; `None` = may never happen.
    ok: Option<usize>,
    /// Index used in reports (the completion's, else the invocation's).
    index: u64,
}

/// Checks a register history with the default [`Budget`].
pub fn check(history: &[Op]) -> Outcome {
    check_with_budget(history, Budget::default())
}

/// Checks a register history, giving each key `budget`.
pub fn check_with_budget(history: &[Op], budget: Budget) -> Outcome {
    let calls = calls(history, &["read", "write", "cas"]);
    let mut anomalies = Vec::new();
    let mut keys: BTreeMap<Edn, Vec<KeyOp>> = BTreeMap::new();
    for call in &calls {
        let outcome = call.outcome();
        if outcome == OpType::Fail || (call.invoke.f == "read" && outcome != OpType::Ok) {
            continue;
        }
        // A read's value is only in its completion; writes and cas carry
        // theirs in the invocation.
        let value = match (call.invoke.f.as_str(), call.done) {
            ("read", Some((done, _))) => &done.value,
            _ => &call.invoke.value,
        };
        let Some((key, arg)) = split_pair(value) else {
            anomalies.push(malformed(call, "value must be [key value]"));
            continue;
        };
        let action = match call.invoke.f.as_str() {
            "read" => as_val(arg).map(Action::Read),
            "write" => as_val(arg).map(Action::Write),
            _ => {
                split_pair(arg).and_then(|(old, new)| Some(Action::Cas(as_val(old)?, as_val(new)?)))
            }
        };
        let Some(action) = action else {
            anomalies.push(malformed(
                call,
                "register values must be integers or nil, cas [old new]",
            ));
            continue;
        };
        keys.entry(key.clone()).or_default().push(KeyOp {
            action,
            inv: call.inv_pos,
            ok: call.ok_pos(),
            index: call.index(),
        });
    }
    for (key, ops) in &keys {
        match search(ops, budget) {
            Search::Linearizable => {}
            Search::Unknown { states, elapsed } => anomalies.push(Anomaly {
                kind: BUDGET_EXHAUSTED.to_string(),
                detail: format!(
                    "key {key}: gave up after {states} configurations in {} ms ({} ops); not proven linearizable",
                    elapsed.as_millis(),
                    ops.len()
                ),
                ops: Vec::new(),
            }),
            Search::Nonlinearizable { placed, state, stuck } => {
                let total = ops.iter().filter(|o| o.ok.is_some()).count();
                let mut detail = format!(
                    "key {key}: no linearization; after placing {placed} of {total} acknowledged ops the register held {}, and none of these could come next:",
                    show(state)
                );
                for &i in &stuck {
                    let _ = write!(detail, " op {} {};", ops[i].index, describe(ops[i].action));
                }
                detail.pop();
                anomalies.push(Anomaly {
                    kind: NONLINEARIZABLE.to_string(),
                    detail,
                    ops: stuck.iter().map(|&i| ops[i].index).collect(),
                });
            }
        }
    }
    outcome(anomalies, completions(&calls))
}

/// `[a b]` as `(a, b)`.
fn split_pair(v: &Edn) -> Option<(&Edn, &Edn)> {
    match v.as_vec()? {
        [a, b] => Some((a, b)),
        _ => None,
    }
}

fn as_val(v: &Edn) -> Option<Val> {
    match v {
        Edn::Nil => Some(None),
        Edn::Int(i) => Some(Some(*i)),
        _ => None,
    }
}

fn show(v: Val) -> String {
    v.map_or("nil".to_string(), |i| i.to_string())
}

fn describe(a: Action) -> String {
    match a {
        Action::Read(v) => format!("read {}", show(v)),
        Action::Write(v) => format!("write {}", show(v)),
        Action::Cas(o, n) => format!("cas {}->{}", show(o), show(n)),
    }
}

enum Search {
    Linearizable,
    /// The deepest configuration reached: ok ops placed, register value, and
    /// the ops (positions in the key's list) one of which had to come next.
    Nonlinearizable {
        placed: usize,
        state: Val,
        stuck: Vec<usize>,
    },
    Unknown {
        states: usize,
        elapsed: Duration,
    },
}

/// Which ops are linearized, as a bit set.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The ops of one key, ordered for the search.
struct Key<'a> {
    ops: &'a [KeyOp],
    /// Op positions by invocation.
    by_inv: Vec<usize>,
    /// Ok op positions by completion.
    by_ok: Vec<usize>,
}

impl Key<'_> {
    /// The earliest completion among ok ops not yet linearized: every op to
    /// be linearized next must have been invoked before it. `None` when all
    /// ok ops are placed (the search has succeeded).
    fn horizon(&self, lin: &Bits) -> Option<usize> {
        self.by_ok
            .iter()
            .find(|&&i| !lin.has(i))
            .and_then(|&i| self.ops[i].ok)
    }

    /// Ops that may be linearized next, in invocation order.
    fn frontier<'b>(&'b self, lin: &'b Bits, horizon: usize) -> impl Iterator<Item = usize> + 'b {
        self.by_inv
            .iter()
            .copied()
            .take_while(move |&i| self.ops[i].inv < horizon)
            .filter(move |&i| !lin.has(i))
    }

    /// The legal next ops from (lin, state). If one of them is a legal
    /// read-like op, it alone: it changes nothing wherever it goes, so
    /// moving it to the front of any linearization keeps that valid. (A
    /// write of the current value is not read-like: later it may not be.)
    fn candidates(&self, lin: &Bits, state: Val, horizon: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for i in self.frontier(lin, horizon) {
            let action = self.ops[i].action;
            if action.apply(state).is_some() {
                if action.is_read_like() {
                    return vec![i];
                }
                out.push(i);
            }
        }
        out
    }
}

/// One level of the depth-first search.
struct Frame {
    candidates: Vec<usize>,
    next: usize,
    /// The op whose linearization led here, and the value before it.
    via: Option<(usize, Val)>,
}

fn search(ops: &[KeyOp], budget: Budget) -> Search {
    let start = Instant::now();
    let mut by_inv: Vec<usize> = (0..ops.len()).collect();
    by_inv.sort_by_key(|&i| ops[i].inv);
    let mut by_ok: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ok.is_some()).collect();
    by_ok.sort_by_key(|&i| ops[i].ok);
    let key = Key { ops, by_inv, by_ok };

    let mut lin = Bits::new(ops.len());
    let mut state: Val = None;
    let Some(h) = key.horizon(&lin) else {
        return Search::Linearizable;
    };
    let mut seen: HashSet<(Bits, Val)> = HashSet::new();
    seen.insert((lin.clone(), state));
    let mut placed = 0; // ok ops in `lin`
    let mut best = (0, state, lin.clone());
    let mut stack = vec![Frame {
        candidates: key.candidates(&lin, state, h),
        next: 0,
        via: None,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(&c) = top.candidates.get(top.next) else {
            // Dead end: undo the op that led here.
            if let Some((op, prev)) = stack.pop().and_then(|f| f.via) {
                lin.clear(op);
                state = prev;
                placed -= usize::from(ops[op].ok.is_some());
            }
            continue;
        };
        top.next += 1;
        let Some(next) = ops[c].action.apply(state) else {
            continue;
        };
        lin.set(c);
        if !seen.insert((lin.clone(), next)) {
            lin.clear(c);
            continue;
        }
        if seen.len() > budget.max_states
            || (seen.len().is_multiple_of(256) && start.elapsed() > budget.max_time)
        {
            return Search::Unknown {
                states: seen.len(),
                elapsed: start.elapsed(),
            };
        }
        let prev = state;
        state = next;
        placed += usize::from(ops[c].ok.is_some());
        let Some(h) = key.horizon(&lin) else {
            return Search::Linearizable;
        };
        if placed > best.0 {
            best = (placed, state, lin.clone());
        }
        stack.push(Frame {
            candidates: key.candidates(&lin, state, h),
            next: 0,
            via: Some((c, prev)),
        });
    }
    let (placed, state, lin) = best;
    let h = key.horizon(&lin).unwrap_or(usize::MAX);
    let stuck = key
        .frontier(&lin, h)
        .filter(|&i| ops[i].ok.is_some())
        .collect();
    Search::Nonlinearizable {
        placed,
        state,
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;
    use crate::history::testing::Hist;

    fn kinds(o: &Outcome) -> Vec<&str> {
        o.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    fn valid(h: &[Op]) {
        let o = check(h);
        assert_eq!(o.validity, Validity::Valid, "{:#?}", o.anomalies);
    }

    #[test]
    fn sequential_ops_are_valid() {
        let h = Hist::new()
            .call(0, "read", "[1 nil]", "[1 nil]")
            .call(0, "write", "[1 3]", "")
            .call(1, "read", "[1 nil]", "[1 3]")
            .call(1, "cas", "[1 [3 4]]", "")
            .call(0, "read", "[1 nil]", "[1 4]")
            .invoke(0, "cas", "[1 [3 5]]")
            .fail(0) // cas on a stale value fails: never happened
            .call(0, "read", "[1 nil]", "[1 4]")
            .build();
        valid(&h);
        assert_eq!(check(&h).ops_checked, 7);
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        let h = Hist::new()
            .invoke(0, "write", "[1 1]")
            .invoke(1, "write", "[1 2]")
            .invoke(2, "read", "[1 nil]")
            .invoke(3, "read", "[1 nil]")
            .ok(2, "[1 2]")
            .ok(0, "")
            .ok(1, "")
            .ok(3, "[1 1]") // overlaps both writes: 2 then 1
            .call(2, "read", "[1 nil]", "[1 1]")
            .build();
        valid(&h);
    }

    #[test]
    fn info_ops_may_or_may_not_happen() {
        // An info write that took effect much later.
        let h = Hist::new()
            .invoke(0, "write", "[1 1]")
            .info(0)
            .call(1, "read", "[1 nil]", "[1 nil]")
            .call(1, "read", "[1 nil]", "[1 1]")
            .build();
        valid(&h);
        // One that never did, and a cas that never completed.
        let h = Hist::new()
            .invoke(0, "write", "[1 1]")
            .info(0)
            .invoke(2, "cas", "[1 [nil 7]]")
            .call(1, "read", "[1 nil]", "[1 nil]")
            .build();
        valid(&h);
        // An info read tells nothing.
        let h = Hist::new().invoke(0, "read", "[1 nil]").info(0).build();
        valid(&h);
    }

    #[test]
    fn stale_read_is_nonlinearizable() {
        let h = Hist::new()
            .call(0, "write", "[1 1]", "")
            .call(0, "write", "[1 2]", "")
            .call(1, "read", "[1 nil]", "[1 1]")
            .build();
        let o = check(&h);
        assert_eq!(o.validity, Validity::Invalid);
        assert_eq!(kinds(&o), [NONLINEARIZABLE]);
        assert_eq!(o.anomalies[0].ops, [5]);
        assert!(
            o.anomalies[0].detail.starts_with("key 1:"),
            "{}",
            o.anomalies[0].detail
        );
    }

    #[test]
    fn reading_a_failed_write_is_nonlinearizable() {
        let h = Hist::new()
            .invoke(0, "write", "[1 1]")
            .fail(0)
            .call(1, "read", "[1 nil]", "[1 1]")
            .build();
        assert_eq!(kinds(&check(&h)), [NONLINEARIZABLE]);
    }

    #[test]
    fn info_write_cannot_be_undone() {
        let h = Hist::new()
            .invoke(0, "write", "[1 1]")
            .info(0)
            .call(1, "read", "[1 nil]", "[1 1]")
            .call(1, "read", "[1 nil]", "[1 nil]")
            .build();
        assert_eq!(kinds(&check(&h)), [NONLINEARIZABLE]);
    }

    #[test]
    fn two_ok_cas_from_the_same_value_are_nonlinearizable() {
        let h = Hist::new()
            .call(0, "write", "[1 0]", "")
            .invoke(0, "cas", "[1 [0 1]]")
            .invoke(1, "cas", "[1 [0 2]]")
            .ok(0, "")
            .ok(1, "")
            .build();
        assert_eq!(kinds(&check(&h)), [NONLINEARIZABLE]);
    }

    #[test]
    fn a_write_of_the_current_value_may_still_belong_later() {
        // write 3 overlaps everything; it must come after write 5 and read 5.
        let h = Hist::new()
            .call(0, "write", "[1 3]", "")
            .invoke(1, "write", "[1 3]")
            .call(0, "write", "[1 5]", "")
            .call(0, "read", "[1 nil]", "[1 5]")
            .call(0, "read", "[1 nil]", "[1 3]")
            .ok(1, "")
            .build();
        valid(&h);
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = Hist::new()
            .call(0, "write", "[1 5]", "")
            .call(1, "read", "[2 nil]", "[2 nil]") // other key: fine
            .call(1, "read", "[3 nil]", "[3 5]") // wrong key: not fine
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [NONLINEARIZABLE]);
        assert!(o.anomalies[0].detail.starts_with("key 3:"));
    }

    #[test]
    fn many_concurrent_reads_do_not_blow_up() {
        let mut h = Hist::new();
        h.invoke(100, "write", "[1 1]");
        for p in 0..60 {
            h.invoke(p, "read", "[1 nil]");
        }
        for p in 0..60 {
            h.ok(p, if p % 2 == 0 { "[1 nil]" } else { "[1 1]" });
        }
        h.ok(100, "");
        let o = check_with_budget(
            &h.build(),
            Budget {
                max_states: 1_000,
                max_time: Duration::from_secs(5),
            },
        );
        assert_eq!(o.validity, Validity::Valid, "{:?}", o.anomalies);
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        let mut h = Hist::new();
        for v in 0..20 {
            h.call(0, "write", &format!("[1 {v}]"), "");
        }
        let tiny = Budget {
            max_states: 5,
            max_time: Duration::from_secs(5),
        };
        let o = check_with_budget(&h.build(), tiny);
        assert_eq!(o.validity, Validity::Unknown);
        assert_eq!(kinds(&o), [BUDGET_EXHAUSTED]);
        // The same history passes with room to search.
        assert_eq!(check(&h.build()).validity, Validity::Valid);
    }

    #[test]
    fn malformed_values_are_reported() {
        let h = Hist::new()
            .call(0, "write", "7", "")
            .call(0, "cas", "[1 [2]]", "")
            .build();
        assert_eq!(kinds(&check(&h)), ["malformed-op", "malformed-op"]);
    }

    /// Random histories from an in-memory store that applies each op
    /// atomically between invocation and completion (so they are
    /// linearizable), with failed cas and indeterminate outcomes.
    #[test]
    fn simulated_linearizable_histories_are_valid() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut regs: HashMap<i64, Option<i64>> = HashMap::new();
            // process → (f, key, arg, completion once applied)
            let mut pending: HashMap<u64, (String, i64, Option<String>)> = HashMap::new();
            let mut h = Hist::new();
            for _ in 0..600 {
                let p = rng.gen_range(0..8u64);
                match pending.remove(&p) {
                    None => {
                        let k = rng.gen_range(0..3);
                        let (f, v) = match rng.gen_range(0..3) {
                            0 => ("read", format!("[{k} nil]")),
                            1 => ("write", format!("[{k} {}]", rng.gen_range(0..4))),
                            _ => (
                                "cas",
                                format!("[{k} [{} {}]]", rng.gen_range(0..4), rng.gen_range(0..4)),
                            ),
                        };
                        h.invoke(p, f, &v);
                        pending.insert(p, (f.to_string(), k, None));
                    }
                    Some((f, k, None)) => {
                        if rng.gen_range(0..10) == 0 {
                            h.info(p); // never applied
                            continue;
                        }
                        let reg = regs.entry(k).or_insert(None);
                        let inv = h
                            .ops
                            .iter()
                            .rev()
                            .find(|o| o.process == p)
                            .unwrap()
                            .value
                            .clone();
                        let arg = &inv.as_vec().unwrap()[1];
                        let done = match f.as_str() {
                            "read" => Some(format!("[{k} {}]", show(*reg))),
                            "write" => {
                                *reg = arg.as_int();
                                Some(String::new())
                            }
                            _ => {
                                let [old, new] = arg.as_vec().unwrap() else {
                                    unreachable!()
                                };
                                if *reg == old.as_int() {
                                    *reg = new.as_int();
                                    Some(String::new())
                                } else {
                                    None
                                }
                            }
                        };
                        match done {
                            Some(done) => {
                                pending.insert(p, (f, k, Some(done)));
                            }
                            None => {
                                h.fail(p);
                            }
                        }
                    }
                    Some((_, _, Some(done))) => {
                        if rng.gen_range(0..10) == 0 {
                            h.info(p); // applied, but the client never heard
                        } else {
                            h.ok(p, &done);
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
