//! Checker of the `ttl` workload: keys with short TTLs, written with unique
//! values and read back.
//!
//! Ops (see `workload.rs`): `:set [k id ttl-ms]` stores `s<id>` with that
//! TTL; `:append [k id]` appends `a<id>` (on a missing key it creates one
//! holding `a<id>` and no TTL); `:persist [k nil]` (ok value `[k 0|1]`);
//! `:get [k nil]` (ok value `[k "s5a9"|nil]`); `:read [k nil nil]`, GET and
//! PTTL in one MULTI (ok value `[k "s5a9"|nil pttl]`). A value read is a
//! sequence of tokens: the first one (the base) names the write that created
//! that version of the key, the others the appends made to it since. Every
//! id is written once, so a base is created once: a version of a key exists
//! during one interval of time, from its write until it is replaced (a
//! later set or an append on a missing key) or expires.
//!
//! Time. Every node and the client run on one clock (one machine, or
//! containers of one kernel). An entry's time (the leader's clock when it
//! proposed it) lies between the invocation and the completion of the op
//! that sent it; a read is served at a time in its own interval; an op
//! that did not complete (`:info`) took effect at some time after its
//! invocation, or never. A key expires when its expiry time (its set's
//! entry time plus the TTL) is at or before the time of an entry or read.
//! `tolerance` widens every bound taken from real time (clock reads in ms
//! and ns on different clocks, rounding): a bound is violated only by more
//! than that.
//!
//! What a version's write is known to have taken effect by (`applied_by`):
//! its ok completion, or the completion of the earliest ok read that saw it,
//! whichever is first.
//!
//! Anomalies:
//! - `ttl-resurrection`: a read saw the key missing although the version it
//!   did not see had certainly been written before that read began; a read
//!   that began after that read ended saw the version again. Once gone a
//!   version never comes back (its value is unique).
//! - `ttl-stale-version`: the same with the earlier read seeing another
//!   version: a newer version, then the older one again.
//! - `ttl-expired-read`: a read began later than the latest time its
//!   version's write can have taken effect plus its TTL (plus the
//!   tolerance), so the key had expired, and yet returned it; no PERSIST of
//!   the key that may have taken effect after the write (ok with 1,
//!   indeterminate) excuses it.
//! - `ttl-lost-key`: a read returned nil although a set with a TTL longer
//!   than the read's distance from the set's invocation (plus the tolerance)
//!   had certainly taken effect before the read began, and no set that may
//!   have replaced it had a TTL short enough to expire by the read's end.
//!   (Appends and PERSIST never make a key missing; nothing here deletes.)
//! - `ttl-wrong-pttl`: PTTL in the same MULTI as GET disagrees with the
//!   value or with real time: nil with a PTTL other than -2, a value with
//!   -2, -1 on a set's version no PERSIST may have touched, a TTL on a
//!   version an append created, or a remaining time that puts the set's
//!   entry outside the set's interval (`ttl - pttl` must lie between the
//!   read's start minus `applied_by` and the read's end minus the set's
//!   invocation, within the tolerance).
//! - `ttl-garbage-read`: a token no write of this key wrote (or a set's
//!   token after the base, a token twice, a write invoked after the read
//!   ended); `ttl-aborted-read`: the token of a write that failed.
//!
//! When unsure the checker does not flag: indeterminate writes may take
//! effect at any time after their invocation, indeterminate PERSISTs excuse
//! every expired read after them, indeterminate sets may replace anything.

use std::collections::{HashMap, HashSet};

use super::{calls, completions, malformed, outcome, Anomaly, Outcome};
use crate::history::{Edn, Op, OpType};

pub const RESURRECTION: &str = "ttl-resurrection";
pub const STALE_VERSION: &str = "ttl-stale-version";
pub const EXPIRED_READ: &str = "ttl-expired-read";
pub const LOST_KEY: &str = "ttl-lost-key";
pub const WRONG_PTTL: &str = "ttl-wrong-pttl";
pub const GARBAGE_READ: &str = "ttl-garbage-read";
pub const ABORTED_READ: &str = "ttl-aborted-read";

/// The default clock tolerance in ms (`--ttl-tolerance`).
pub const DEFAULT_TOLERANCE_MS: u64 = 50;

const MS: i128 = 1_000_000;

struct Write {
    key: i64,
    /// TTL in ns for a set; None for an append.
    ttl: Option<i128>,
    inv: i128,
    /// Ok completion time.
    ok: Option<i128>,
    failed: bool,
    index: u64,
}

struct Persist {
    key: i64,
    inv: i128,
    ok: Option<i128>,
    /// The ok reply (0 or 1).
    result: Option<i64>,
    failed: bool,
}

struct Read {
    key: i64,
    inv: i128,
    done: i128,
    /// Tokens (kind, id); None: nil.
    value: Option<Vec<(char, i64)>>,
    pttl: Option<i64>,
    index: u64,
}

/// `"s5a9"` to `[('s', 5), ('a', 9)]`; None if it is not such a string.
fn tokens(s: &str) -> Option<Vec<(char, i64)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c != 's' && c != 'a' {
            return None;
        }
        let digits = rest[1..]
            .find(|ch: char| !ch.is_ascii_digit())
            .map_or(rest.len() - 1, |i| i);
        let id = rest[1..1 + digits].parse().ok()?;
        out.push((c, id));
        rest = &rest[1 + digits..];
    }
    (!out.is_empty()).then_some(out)
}

fn show(v: &Option<Vec<(char, i64)>>) -> String {
    match v {
        None => "nil".into(),
        Some(t) => t.iter().map(|(c, i)| format!("{c}{i}")).collect(),
    }
}

fn ms(t: i128) -> String {
    format!("{:.1} ms", t as f64 / 1e6)
}

/// Checks a ttl history with a clock tolerance of `tolerance_ms`.
pub fn check(history: &[Op], tolerance_ms: u64) -> Outcome {
    let tol = tolerance_ms as i128 * MS;
    let calls = calls(history, &["set", "append", "persist", "get", "read"]);
    let checked = completions(&calls);
    let mut anomalies = Vec::new();
    let mut writes: HashMap<i64, Write> = HashMap::new();
    let mut persists: Vec<Persist> = Vec::new();
    let mut reads: Vec<Read> = Vec::new();

    for c in &calls {
        let v = c.invoke.value.as_vec().unwrap_or(&[]);
        let Some(key) = v.first().and_then(Edn::as_int) else {
            anomalies.push(malformed(c, "the value must start with an integer key"));
            continue;
        };
        let inv = c.invoke.time as i128;
        let ok = c.done.filter(|(op, _)| op.typ == OpType::Ok);
        let failed = c.outcome() == OpType::Fail;
        match c.invoke.f.as_str() {
            "set" | "append" => {
                let id = v.get(1).and_then(Edn::as_int);
                let ttl = v.get(2).and_then(Edn::as_int);
                let (Some(id), true) = (id, c.invoke.f == "append" || ttl.is_some()) else {
                    anomalies.push(malformed(c, "expected [k id ttl] or [k id]"));
                    continue;
                };
                writes.insert(
                    id,
                    Write {
                        key,
                        ttl: ttl.map(|t| t as i128 * MS),
                        inv,
                        ok: ok.map(|(op, _)| op.time as i128),
                        failed,
                        index: c.index(),
                    },
                );
            }
            "persist" => persists.push(Persist {
                key,
                inv,
                ok: ok.map(|(op, _)| op.time as i128),
                result: ok.and_then(|(op, _)| op.value.as_vec()?.get(1)?.as_int()),
                failed,
            }),
            _ => {
                let Some((op, _)) = ok else { continue };
                let rv = op.value.as_vec().unwrap_or(&[]);
                let value = match rv.get(1) {
                    Some(Edn::Nil) => None,
                    Some(Edn::Str(s)) => match tokens(s) {
                        Some(t) => Some(t),
                        None => {
                            anomalies.push(Anomaly {
                                kind: GARBAGE_READ.into(),
                                detail: format!("op {}: key {key} read {s:?}, which no write of this workload writes", op.index),
                                ops: vec![op.index],
                            });
                            continue;
                        }
                    },
                    _ => {
                        anomalies.push(malformed(c, "a read's ok value must be [k str|nil ..]"));
                        continue;
                    }
                };
                let pttl = if c.invoke.f == "read" {
                    match rv.get(2).and_then(Edn::as_int) {
                        Some(p) => Some(p),
                        None => {
                            anomalies.push(malformed(c, "a :read's ok value must be [k v pttl]"));
                            continue;
                        }
                    }
                } else {
                    None
                };
                reads.push(Read {
                    key,
                    inv,
                    done: op.time as i128,
                    value,
                    pttl,
                    index: op.index,
                });
            }
        }
    }

    // Tokens: known, of this key, in place, not failed; applied_by.
    let mut applied_by: HashMap<i64, i128> = writes
        .iter()
        .filter_map(|(id, w)| Some((*id, w.ok?)))
        .collect();
    let mut sound = vec![true; reads.len()];
    for (ri, r) in reads.iter().enumerate() {
        let Some(toks) = &r.value else { continue };
        let mut seen = HashSet::new();
        for (pos, &(c, id)) in toks.iter().enumerate() {
            let why = match writes.get(&id) {
                None => Some(format!("no write wrote {c}{id}")),
                Some(w) if w.key != r.key => Some(format!("{c}{id} was written to key {}", w.key)),
                Some(w) if (c == 's') != w.ttl.is_some() => {
                    Some(format!("{c}{id} is not what write {id} wrote"))
                }
                Some(_) if pos > 0 && c == 's' => {
                    Some(format!("set value {c}{id} after the start"))
                }
                Some(_) if !seen.insert(id) => Some(format!("{c}{id} twice")),
                Some(w) if w.inv > r.done => Some(format!(
                    "write of {c}{id} (op {}) was invoked after the read ended",
                    w.index
                )),
                Some(w) if w.failed => {
                    anomalies.push(Anomaly {
                        kind: ABORTED_READ.into(),
                        detail: format!(
                            "op {}: key {} read {} containing {c}{id}, whose write (op {}) failed",
                            r.index,
                            r.key,
                            show(&r.value),
                            w.index
                        ),
                        ops: vec![w.index, r.index],
                    });
                    sound[ri] = false;
                    None
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                anomalies.push(Anomaly {
                    kind: GARBAGE_READ.into(),
                    detail: format!(
                        "op {}: key {} read {}: {why}",
                        r.index,
                        r.key,
                        show(&r.value)
                    ),
                    ops: vec![r.index],
                });
                sound[ri] = false;
            }
        }
        if sound[ri] {
            for &(_, id) in toks {
                let e = applied_by.entry(id).or_insert(r.done);
                *e = (*e).min(r.done);
            }
        }
    }

    // A PERSIST that may have taken effect after write `w` and before the
    // end of read `r` (ok with 1, or indeterminate).
    let persist_may_keep = |w: &Write, r: &Read| {
        persists.iter().any(|p| {
            p.key == w.key
                && !p.failed
                && p.result != Some(0)
                && p.inv < r.done
                && p.ok.is_none_or(|t| t >= w.inv)
        })
    };

    let mut by_key: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, r) in reads.iter().enumerate() {
        if sound[i] {
            by_key.entry(r.key).or_default().push(i);
        }
    }
    let mut sets_by_key: HashMap<i64, Vec<(i64, &Write)>> = HashMap::new();
    for (id, w) in &writes {
        if w.ttl.is_some() && !w.failed {
            sets_by_key.entry(w.key).or_default().push((*id, w));
        }
    }
    for v in sets_by_key.values_mut() {
        v.sort_by_key(|(id, _)| *id);
    }

    let mut keys: Vec<i64> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let rs = &by_key[&key];
        let sets = sets_by_key.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        for &ri in rs {
            let r = &reads[ri];
            match &r.value {
                Some(toks) => {
                    let (base_kind, b) = toks[0];
                    let w = &writes[&b];
                    let ub = applied_by[&b];
                    // Resurrection and stale versions.
                    if let Some(&r1) = rs.iter().find(|&&j| {
                        let r1 = &reads[j];
                        r1.done < r.inv
                            && ub < r1.inv
                            && r1.value.as_ref().map(|t| t[0].1) != Some(b)
                    }) {
                        let r1 = &reads[r1];
                        let kind = if r1.value.is_none() {
                            RESURRECTION
                        } else {
                            STALE_VERSION
                        };
                        anomalies.push(Anomaly {
                            kind: kind.into(),
                            detail: format!(
                                "key {key}: op {} read {} (write op {} certainly applied by {}), then op {} ({}-{}) read {}, then op {} ({}-{}) read {} again",
                                r1.index,
                                show(&r1.value),
                                w.index,
                                ms(ub),
                                r1.index,
                                ms(r1.inv),
                                ms(r1.done),
                                show(&r1.value),
                                r.index,
                                ms(r.inv),
                                ms(r.done),
                                show(&r.value)
                            ),
                            ops: vec![w.index, r1.index, r.index],
                        });
                    }
                    if let Some(ttl) = w.ttl {
                        // Expired, yet read.
                        if r.inv > ub + ttl + tol && !persist_may_keep(w, r) {
                            anomalies.push(Anomaly {
                                kind: EXPIRED_READ.into(),
                                detail: format!(
                                    "key {key}: op {} read {} at {}-{}, but s{b} (op {}, ttl {}) took effect by {} and expired by {}; no PERSIST may have kept it",
                                    r.index,
                                    show(&r.value),
                                    ms(r.inv),
                                    ms(r.done),
                                    w.index,
                                    ms(ttl),
                                    ms(ub),
                                    ms(ub + ttl)
                                ),
                                ops: vec![w.index, r.index],
                            });
                        }
                    }
                    if let Some(p) = r.pttl {
                        let wrong = match (base_kind, w.ttl, p) {
                            (_, _, -2) => Some("PTTL -2 (no key) with a value".to_string()),
                            (_, _, p) if p < -2 => Some(format!("PTTL {p}")),
                            ('a', _, p) if p >= 0 => {
                                Some(format!("PTTL {p} on a version an append created (no TTL)"))
                            }
                            ('s', Some(_), -1) if !persist_may_keep(w, r) => Some(
                                "PTTL -1 (no TTL) but no PERSIST may have touched this version"
                                    .into(),
                            ),
                            ('s', Some(ttl), p) if p >= 0 => {
                                // Time from the set's entry to the read.
                                let d = ttl - p as i128 * MS;
                                let lo = (r.inv - ub).max(0);
                                let hi = r.done - w.inv;
                                (d < lo - tol || d > hi + tol).then(|| {
                                    format!(
                                        "PTTL {p} of ttl {}: the set took effect {} before the read, outside [{}, {}]",
                                        ms(ttl),
                                        ms(d),
                                        ms(lo),
                                        ms(hi)
                                    )
                                })
                            }
                            _ => None,
                        };
                        if let Some(why) = wrong {
                            anomalies.push(Anomaly {
                                kind: WRONG_PTTL.into(),
                                detail: format!(
                                    "key {key}: op {} read {} at {}-{}: {why} (write op {})",
                                    r.index,
                                    show(&r.value),
                                    ms(r.inv),
                                    ms(r.done),
                                    w.index
                                ),
                                ops: vec![w.index, r.index],
                            });
                        }
                    }
                }
                None => {
                    if let Some(p) = r.pttl.filter(|&p| p != -2) {
                        anomalies.push(Anomaly {
                            kind: WRONG_PTTL.into(),
                            detail: format!(
                                "key {key}: op {} read nil with PTTL {p} in the same MULTI",
                                r.index
                            ),
                            ops: vec![r.index],
                        });
                    }
                    // A set that must still hold, with nothing that may
                    // have replaced it and expired.
                    let lost = sets.iter().find(|(id, w)| {
                        let ttl = w.ttl.expect("sets have a ttl");
                        applied_by.get(id).is_some_and(|&t| t < r.inv)
                            && w.inv + ttl > r.done + tol
                            && !sets.iter().any(|(xid, x)| {
                                xid != id
                                    && x.inv < r.done
                                    && applied_by.get(xid).is_none_or(|&t| t >= w.inv)
                                    && x.inv + x.ttl.expect("ttl") <= r.done + tol
                            })
                    });
                    if let Some((id, w)) = lost {
                        anomalies.push(Anomaly {
                            kind: LOST_KEY.into(),
                            detail: format!(
                                "key {key}: op {} read nil at {}-{}, but s{id} (op {}, invoked at {}, ttl {}) took effect by {} and cannot have expired, and no set that may have replaced it can have expired",
                                r.index,
                                ms(r.inv),
                                ms(r.done),
                                w.index,
                                ms(w.inv),
                                ms(w.ttl.unwrap_or(0)),
                                ms(applied_by[id])
                            ),
                            ops: vec![w.index, r.index],
                        });
                    }
                }
            }
        }
    }
    outcome(anomalies, checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;
    use crate::history::testing::edn;

    /// A history with explicit times in ms.
    #[derive(Default)]
    struct H {
        ops: Vec<Op>,
        open: HashMap<u64, (String, Edn)>,
    }

    impl H {
        fn push(&mut self, p: u64, typ: OpType, f: String, value: Edn, t_ms: u64) {
            self.ops.push(Op {
                index: self.ops.len() as u64,
                typ,
                f,
                value,
                process: p,
                time: t_ms * 1_000_000,
                node: None,
                error: None,
            });
        }
        fn inv(&mut self, p: u64, f: &str, v: &str, t: u64) -> &mut Self {
            self.open.insert(p, (f.into(), edn(v)));
            self.push(p, OpType::Invoke, f.into(), edn(v), t);
            self
        }
        fn end(&mut self, p: u64, typ: OpType, v: &str, t: u64) -> &mut Self {
            let (f, iv) = self.open.remove(&p).expect("open");
            let v = if v.is_empty() { iv } else { edn(v) };
            self.push(p, typ, f, v, t);
            self
        }
        fn ok(&mut self, p: u64, v: &str, t: u64) -> &mut Self {
            self.end(p, OpType::Ok, v, t)
        }
        fn info(&mut self, p: u64, t: u64) -> &mut Self {
            self.end(p, OpType::Info, "", t)
        }
        fn fail(&mut self, p: u64, t: u64) -> &mut Self {
            self.end(p, OpType::Fail, "", t)
        }
        /// `set` of s<id> with `ttl` ms on key 1, from `a` to `b` (ok).
        fn set(&mut self, p: u64, id: i64, ttl: i64, a: u64, b: u64) -> &mut Self {
            self.inv(p, "set", &format!("[1 {id} {ttl}]"), a)
                .ok(p, "", b)
        }
        /// `get` of key 1 returning `v` (EDN: nil or "s1").
        fn get(&mut self, p: u64, v: &str, a: u64, b: u64) -> &mut Self {
            self.inv(p, "get", "[1 nil]", a)
                .ok(p, &format!("[1 {v}]"), b)
        }
        fn read(&mut self, p: u64, v: &str, pttl: i64, a: u64, b: u64) -> &mut Self {
            self.inv(p, "read", "[1 nil nil]", a)
                .ok(p, &format!("[1 {v} {pttl}]"), b)
        }
        fn check(&self) -> Outcome {
            check(&self.ops, DEFAULT_TOLERANCE_MS)
        }
    }

    fn kinds(o: &Outcome) -> Vec<&str> {
        let mut k: Vec<&str> = o.anomalies.iter().map(|a| a.kind.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    #[test]
    fn valid_history_passes() {
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5)
            .get(1, "\"s1\"", 10, 12)
            // 20..22 - (0..5): the set took effect 15-22 ms before.
            .read(1, "\"s1\"", 82, 20, 22)
            // Expired (100 ms after 0..5), within the tolerance both ways.
            .get(1, "\"s1\"", 140, 141)
            .get(1, "nil", 110, 160)
            .read(1, "nil", -2, 200, 202)
            // An append on the missing key creates a2 with no TTL.
            .inv(0, "append", "[1 2]", 210)
            .ok(0, "", 215)
            .read(1, "\"a2\"", -1, 220, 222)
            .inv(0, "append", "[1 3]", 230)
            .ok(0, "", 231)
            .get(1, "\"a2a3\"", 240, 241)
            // A long set, persisted: readable long after its TTL.
            .set(0, 4, 3000, 300, 305)
            .inv(0, "persist", "[1 nil]", 310)
            .ok(0, "[1 1]", 312)
            .read(1, "\"s4\"", -1, 5000, 5002)
            // A failed set never happened; an indeterminate one may happen
            // late and replace s4 (then expire).
            .inv(2, "set", "[1 5 60]", 5010)
            .fail(2, 5011)
            .inv(3, "set", "[1 6 60]", 5020)
            .info(3, 8000)
            .get(1, "\"s4\"", 5030, 5031)
            .get(1, "nil", 6000, 6001);
        let o = h.check();
        assert_eq!(o.validity, Validity::Valid, "{:#?}", o.anomalies);
    }

    #[test]
    fn resurrection_is_caught() {
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5)
            .get(1, "nil", 60, 61)
            .get(2, "\"s1\"", 70, 71);
        let o = h.check();
        assert_eq!(kinds(&o), vec![RESURRECTION], "{:#?}", o.anomalies);
        // The write's completion is unknown, but a read saw it first.
        let mut h = H::default();
        h.inv(0, "set", "[1 1 100]", 0)
            .get(1, "\"s1\"", 10, 11)
            .get(1, "nil", 60, 61)
            .get(2, "\"s1\"", 70, 71)
            .info(0, 3000);
        assert_eq!(kinds(&h.check()), vec![RESURRECTION]);
        // Without the read that saw it, the set may have come late: valid.
        let mut h = H::default();
        h.inv(0, "set", "[1 1 100]", 0)
            .get(1, "nil", 60, 61)
            .get(2, "\"s1\"", 70, 71)
            .info(0, 3000);
        assert_eq!(h.check().validity, Validity::Valid);
        // Overlapping reads are not ordered: valid.
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5)
            .inv(1, "get", "[1 nil]", 60)
            .get(2, "\"s1\"", 62, 63)
            .ok(1, "[1 nil]", 64);
        assert_eq!(h.check().validity, Validity::Valid);
    }

    #[test]
    fn stale_version_is_caught() {
        let mut h = H::default();
        h.set(0, 1, 5000, 0, 5)
            .set(0, 2, 5000, 10, 15)
            .get(1, "\"s2\"", 20, 21)
            .get(2, "\"s1\"", 30, 31);
        assert_eq!(kinds(&h.check()), vec![STALE_VERSION]);
    }

    #[test]
    fn expired_read_is_caught_unless_a_persist_may_have_kept_it() {
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5).get(1, "\"s1\"", 200, 201);
        let o = h.check();
        assert_eq!(kinds(&o), vec![EXPIRED_READ], "{:#?}", o.anomalies);
        // Within the tolerance: valid.
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5).get(1, "\"s1\"", 150, 151);
        assert_eq!(h.check().validity, Validity::Valid);
        // An indeterminate PERSIST may have kept it.
        let mut h = H::default();
        h.set(0, 1, 100, 0, 5)
            .inv(2, "persist", "[1 nil]", 50)
            .info(2, 3000)
            .get(1, "\"s1\"", 200, 201);
        assert_eq!(h.check().validity, Validity::Valid);
        // A PERSIST that answered 0 kept nothing; one done before the set
        // was invoked did not touch it.
        let mut h = H::default();
        h.inv(2, "persist", "[1 nil]", 0)
            .ok(2, "[1 1]", 1)
            .set(0, 1, 100, 2, 5)
            .inv(2, "persist", "[1 nil]", 50)
            .ok(2, "[1 0]", 51)
            .get(1, "\"s1\"", 200, 201);
        assert_eq!(kinds(&h.check()), vec![EXPIRED_READ]);
        // The write observed early (info) bounds its time too.
        let mut h = H::default();
        h.inv(0, "set", "[1 1 100]", 0)
            .get(1, "\"s1\"", 10, 11)
            .get(1, "\"s1\"", 300, 301)
            .info(0, 3000);
        assert_eq!(kinds(&h.check()), vec![EXPIRED_READ]);
    }

    #[test]
    fn lost_key_is_caught_unless_a_short_set_may_have_replaced_it() {
        let mut h = H::default();
        h.set(0, 1, 5000, 0, 5).get(1, "nil", 100, 101);
        let o = h.check();
        assert_eq!(kinds(&o), vec![LOST_KEY], "{:#?}", o.anomalies);
        // An indeterminate short set may have replaced it and expired.
        let mut h = H::default();
        h.set(0, 1, 5000, 0, 5)
            .inv(2, "set", "[1 2 40]", 20)
            .info(2, 3000)
            .get(1, "nil", 100, 101);
        assert_eq!(h.check().validity, Validity::Valid);
        // A short set done before the long one was invoked cannot.
        let mut h = H::default();
        h.set(2, 2, 40, 0, 1)
            .set(0, 1, 5000, 2, 5)
            .get(1, "nil", 100, 101);
        assert_eq!(kinds(&h.check()), vec![LOST_KEY]);
        // A long set still in flight when the read began: valid.
        let mut h = H::default();
        h.inv(0, "set", "[1 1 5000]", 0)
            .get(1, "nil", 100, 101)
            .ok(0, "", 102);
        assert_eq!(h.check().validity, Validity::Valid);
    }

    #[test]
    fn wrong_pttl_is_caught() {
        // 500 ms left of 1000 after at most 101 ms.
        let mut h = H::default();
        h.set(0, 1, 1000, 0, 5).read(1, "\"s1\"", 500, 100, 101);
        let o = h.check();
        assert_eq!(kinds(&o), vec![WRONG_PTTL], "{:#?}", o.anomalies);
        // More left than the TTL allows.
        let mut h = H::default();
        h.set(0, 1, 1000, 0, 5).read(1, "\"s1\"", 990, 200, 201);
        assert_eq!(kinds(&h.check()), vec![WRONG_PTTL]);
        // -1 without a PERSIST; -2 with a value; a TTL on nil; a TTL on an
        // append's version.
        for p in [-1, -2, -3] {
            let mut h = H::default();
            h.set(0, 1, 1000, 0, 5).read(1, "\"s1\"", p, 100, 101);
            assert_eq!(kinds(&h.check()), vec![WRONG_PTTL], "{p}");
        }
        let mut h = H::default();
        h.read(1, "nil", 300, 100, 101);
        assert_eq!(kinds(&h.check()), vec![WRONG_PTTL]);
        let mut h = H::default();
        h.inv(0, "append", "[1 1]", 0)
            .ok(0, "", 1)
            .read(1, "\"a1\"", 500, 10, 11);
        assert_eq!(kinds(&h.check()), vec![WRONG_PTTL]);
        // Right: 1000 - 900 = 100 ms in [95, 101].
        let mut h = H::default();
        h.set(0, 1, 1000, 0, 5).read(1, "\"s1\"", 900, 100, 101);
        assert_eq!(h.check().validity, Validity::Valid);
    }

    #[test]
    fn garbage_and_aborted_reads_are_caught() {
        let mut h = H::default();
        h.get(1, "\"s9\"", 0, 1);
        assert_eq!(kinds(&h.check()), vec![GARBAGE_READ]);
        let mut h = H::default();
        h.get(1, "\"hello\"", 0, 1);
        assert_eq!(kinds(&h.check()), vec![GARBAGE_READ]);
        let mut h = H::default();
        h.set(0, 1, 1000, 0, 1).get(1, "\"s1s1\"", 2, 3);
        assert_eq!(kinds(&h.check()), vec![GARBAGE_READ]);
        let mut h = H::default();
        h.inv(0, "set", "[1 1 1000]", 0)
            .fail(0, 1)
            .get(1, "\"s1\"", 2, 3);
        assert_eq!(kinds(&h.check()), vec![ABORTED_READ]);
    }
}
