//! Checker of the `queue` workload: a Redis stream with one consumer group
//! used as a work queue.
//!
//! Ops (see `workload.rs`): `:enqueue v` (XADD of the unique value `v`);
//! `:dequeue :ack|:skip-ack` (XREADGROUP `>` of one entry, then XACK unless
//! `:skip-ack`), `:reclaim nil` (XAUTOCLAIM, then XACK), `:claim nil`
//! (XPENDING, XCLAIM, then XACK), each with the ok value `[[v "id" ack]
//! ...]`; and the final drain's `:drain [kind cursor]` with the ok value
//! `[kind next-cursor [[v "id" ack] ...]]`. `ack` is the XACK's count (1:
//! this XACK removed the entry from the group's pending list; 0: it was not
//! pending), or nil: not acked, or the XACK's outcome is unknown. Only ok
//! completions deliver: an indeterminate XREADGROUP or claim leaves its
//! entries pending, where a later claim or the drain finds them.
//!
//! An entry can be delivered more than once (a worker that did not ack, a
//! claim racing an ack): that is the queue's at-least-once contract, and
//! counted as `redelivered`. Anomalies:
//! - `queue-lost`: an enqueue that completed ok whose value was never
//!   delivered (by a dequeue, a claim or the final drain, which takes every
//!   entry left pending or never delivered).
//! - `queue-phantom`: a delivered value no enqueue invoked before the
//!   delivery completed (or not an integer at all).
//! - `queue-aborted-delivery`: a delivered value whose only enqueue failed
//!   (`:fail`: certainly not applied).
//! - `queue-duplicate-after-ack`: a value delivered by an op invoked after
//!   an op whose XACK of that value returned 1 had completed: an acked
//!   entry is never pending again, nor new (`>` delivers past the group's
//!   last ID only).
//! - `queue-double-ack`: two XACKs of one value both returned 1 (the entry
//!   was pending again after an ack).
//! - `queue-duplicate-enqueue`: one value delivered under two entry IDs
//!   (an enqueue applied twice).
//!
//! Counts reported: enqueued-ok, enqueued-indeterminate, enqueued-failed,
//! delivered (distinct values), deliveries, redelivered (values delivered
//! more than once), acked (values with an XACK that returned 1), lost,
//! phantoms.

use std::collections::HashMap;

use super::{calls, completions, malformed, outcome, Anomaly, Call, Outcome, Validity};
use crate::history::{Edn, Op, OpType};

pub const LOST: &str = "queue-lost";
/// An ok enqueue not delivered, when the final drain did not finish (no
/// complete XAUTOCLAIM pass over the pending list claimed nothing): not
/// evidence of loss; the run's verdict is unknown.
pub const UNDRAINED: &str = "queue-undrained";
pub const PHANTOM: &str = "queue-phantom";
/// One value delivered under two stream entry IDs: its enqueue (one XADD)
/// was applied twice.
pub const DUPLICATE_ENQUEUE: &str = "queue-duplicate-enqueue";
pub const ABORTED_DELIVERY: &str = "queue-aborted-delivery";
pub const DUPLICATE_AFTER_ACK: &str = "queue-duplicate-after-ack";
pub const DOUBLE_ACK: &str = "queue-double-ack";

/// The ops that deliver entries.
const DELIVERING: &[&str] = &["dequeue", "reclaim", "claim", "drain"];

/// One delivery of a value by an ok op.
struct Delivery<'a> {
    call: &'a Call<'a>,
    /// Position of the op's ok completion.
    done_pos: usize,
    /// The XACK's count, if known.
    ack: Option<i64>,
    /// The stream entry's ID.
    id: String,
}

/// The `[[v "id" ack] ...]` of an ok delivering op.
fn delivered(call: &Call) -> Result<Vec<(Edn, String, Option<i64>)>, String> {
    let Some((done, _)) = call.done else {
        return Ok(Vec::new());
    };
    let list = if call.invoke.f == "drain" {
        done.value.as_vec().and_then(|v| v.get(2))
    } else {
        Some(&done.value)
    };
    let Some(list) = list.and_then(Edn::as_vec) else {
        return Err("a delivering op's value must list [v \"id\" ack] entries".into());
    };
    list.iter()
        .map(|e| match e.as_vec() {
            Some([v, Edn::Str(id), ack]) => match ack {
                Edn::Int(n) => Ok((v.clone(), id.clone(), Some(*n))),
                Edn::Nil => Ok((v.clone(), id.clone(), None)),
                _ => Err(format!("bad ack {ack} in {e}")),
            },
            _ => Err(format!("bad delivered entry {e}")),
        })
        .collect()
}

/// Checks a queue history (see the module docs).
pub fn check(history: &[Op]) -> Outcome {
    let mut fs = vec!["enqueue"];
    fs.extend_from_slice(DELIVERING);
    let calls = calls(history, &fs);
    let mut anomalies = Vec::new();

    // Enqueues by value: every attempt, any outcome.
    let mut enqueues: HashMap<&Edn, Vec<&Call>> = HashMap::new();
    let (mut ok, mut indeterminate, mut failed) = (0, 0, 0);
    for c in calls.iter().filter(|c| c.invoke.f == "enqueue") {
        if c.invoke.value.as_int().is_none() {
            anomalies.push(malformed(c, "an enqueue's value must be an integer"));
            continue;
        }
        match c.outcome() {
            OpType::Ok => ok += 1,
            OpType::Fail => failed += 1,
            _ => indeterminate += 1,
        }
        enqueues.entry(&c.invoke.value).or_default().push(c);
    }

    // Deliveries by value, in invocation order of their ops.
    let mut deliveries: HashMap<Edn, Vec<Delivery>> = HashMap::new();
    let mut total = 0;
    for c in calls
        .iter()
        .filter(|c| DELIVERING.contains(&c.invoke.f.as_str()))
    {
        let Some(done_pos) = c.ok_pos() else { continue };
        match delivered(c) {
            Ok(got) => {
                for (v, id, ack) in got {
                    total += 1;
                    deliveries.entry(v).or_default().push(Delivery {
                        call: c,
                        done_pos,
                        ack,
                        id,
                    });
                }
            }
            Err(why) => anomalies.push(malformed(c, &why)),
        }
    }

    let mut values: Vec<&Edn> = deliveries.keys().collect();
    values.sort();
    let (mut phantoms, mut redelivered, mut acked) = (0, 0, 0);
    for v in values {
        let ds = &deliveries[v];
        redelivered += usize::from(ds.len() > 1);
        // One enqueue is one XADD (values are unique, enqueues never
        // retried): one value under two entry IDs was added twice.
        if let Some(other) = ds.iter().find(|d| d.id != ds[0].id) {
            anomalies.push(Anomaly {
                kind: DUPLICATE_ENQUEUE.into(),
                detail: format!(
                    "value {v} was delivered as entry {} (op {}) and as entry {} (op {}): one enqueue added it twice",
                    ds[0].id,
                    ds[0].call.index(),
                    other.id,
                    other.call.index()
                ),
                ops: vec![ds[0].call.index(), other.call.index()],
            });
        }
        acked += usize::from(ds.iter().any(|d| d.ack == Some(1)));
        let first = ds
            .iter()
            .min_by_key(|d| d.done_pos)
            .expect("a delivered value has a delivery");
        // Enqueues that may have put v there before its first delivery.
        let attempts: Vec<&&Call> = enqueues
            .get(v)
            .map(|es| es.iter().filter(|e| e.inv_pos < first.done_pos).collect())
            .unwrap_or_default();
        if attempts.is_empty() {
            phantoms += 1;
            anomalies.push(Anomaly {
                kind: PHANTOM.into(),
                detail: format!(
                    "value {v} was delivered by op {} ({} by process {}), but no enqueue of it was invoked before",
                    first.call.index(),
                    first.call.invoke.f,
                    first.call.invoke.process
                ),
                ops: vec![first.call.invoke.index, first.call.index()],
            });
        } else if attempts.iter().all(|e| e.outcome() == OpType::Fail) {
            let e = attempts[0];
            anomalies.push(Anomaly {
                kind: ABORTED_DELIVERY.into(),
                detail: format!(
                    "value {v} was delivered by op {}, but its enqueue (op {}) failed",
                    first.call.index(),
                    e.index()
                ),
                ops: vec![e.index(), first.call.index()],
            });
        }
        // An ack that removed v, then a delivery by an op invoked after it.
        let acks: Vec<&Delivery> = ds.iter().filter(|d| d.ack == Some(1)).collect();
        if let Some(a) = acks.iter().min_by_key(|d| d.done_pos) {
            if let Some(d) = ds
                .iter()
                .filter(|d| d.call.inv_pos > a.done_pos)
                .min_by_key(|d| d.call.inv_pos)
            {
                anomalies.push(Anomaly {
                    kind: DUPLICATE_AFTER_ACK.into(),
                    detail: format!(
                        "value {v} was acked (XACK returned 1) by op {} (process {}), and delivered again by op {} ({} by process {}) invoked after that",
                        a.call.index(),
                        a.call.invoke.process,
                        d.call.index(),
                        d.call.invoke.f,
                        d.call.invoke.process
                    ),
                    ops: vec![a.call.index(), d.call.invoke.index, d.call.index()],
                });
            }
        }
        if acks.len() > 1 {
            anomalies.push(Anomaly {
                kind: DOUBLE_ACK.into(),
                detail: format!(
                    "value {v} was acked with XACK returning 1 {} times (ops {})",
                    acks.len(),
                    acks.iter()
                        .map(|d| d.call.index().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ops: acks.iter().map(|d| d.call.index()).collect(),
            });
        }
    }

    // Whether the final drain finished: a pass of XAUTOCLAIMs from 0-0 back
    // to cursor 0-0 that claimed nothing (so nothing was left pending).
    let mut drains: Vec<&Call> = calls
        .iter()
        .filter(|c| c.invoke.f == "drain" && c.outcome() == OpType::Ok)
        .collect();
    drains.sort_by_key(|c| c.ok_pos());
    let (mut drained, mut in_pass, mut empty) = (false, false, true);
    for d in drains {
        let asked = d.invoke.value.as_vec();
        let got = d
            .done
            .and_then(|(op, _)| op.value.as_vec().map(<[Edn]>::to_vec));
        let (Some(asked), Some(got)) = (asked, got) else {
            continue;
        };
        if asked.first().and_then(Edn::as_keyword) != Some("autoclaim") {
            continue;
        }
        if asked.get(1) == Some(&Edn::Str("0-0".into())) {
            (in_pass, empty) = (true, true);
        }
        if in_pass {
            empty &= got
                .get(2)
                .and_then(Edn::as_vec)
                .is_none_or(<[Edn]>::is_empty);
            if got.get(1) == Some(&Edn::Str("0-0".into())) {
                drained |= empty;
                in_pass = false;
            }
        }
    }

    // Acknowledged enqueues never delivered.
    let mut lost = 0;
    let mut ok_enqueues: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.invoke.f == "enqueue"
                && c.outcome() == OpType::Ok
                && c.invoke.value.as_int().is_some()
        })
        .collect();
    ok_enqueues.sort_by_key(|c| c.inv_pos);
    for e in ok_enqueues {
        if !deliveries.contains_key(&e.invoke.value) {
            lost += 1;
            anomalies.push(Anomaly {
                kind: if drained { LOST } else { UNDRAINED }.into(),
                detail: format!(
                    "enqueue of {} (op {}, process {}) completed ok, but the value was never delivered, not even by the final drain",
                    e.invoke.value,
                    e.index(),
                    e.invoke.process
                ),
                ops: vec![e.invoke.index, e.index()],
            });
        }
    }

    let only_undrained = !anomalies.is_empty() && anomalies.iter().all(|a| a.kind == UNDRAINED);
    let mut o = outcome(anomalies, completions(&calls));
    if only_undrained {
        o.validity = Validity::Unknown;
    }
    o.counts = vec![
        ("enqueued-ok", ok),
        ("enqueued-indeterminate", indeterminate),
        ("enqueued-failed", failed),
        ("delivered", deliveries.len()),
        ("deliveries", total),
        ("redelivered", redelivered),
        ("acked", acked),
        ("lost", lost),
        ("phantoms", phantoms),
    ];
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;
    use crate::history::testing::Hist;

    fn kinds(o: &Outcome) -> Vec<&str> {
        o.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    fn count(o: &Outcome, name: &str) -> usize {
        o.counts.iter().find(|(k, _)| *k == name).unwrap().1
    }

    #[test]
    fn redelivery_of_unacked_entries_is_valid() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(0, "enqueue", "2", "")
            .invoke(1, "enqueue", "3")
            .info(1) // indeterminate: may stay undelivered
            .invoke(0, "enqueue", "4")
            .fail(0) // failed: never delivered
            .call(2, "dequeue", ":skip-ack", r#"[[1 "1-0" nil]]"#) // a dead worker
            .call(3, "dequeue", ":ack", "[]")
            .call(3, "reclaim", "nil", r#"[[1 "1-0" 1]]"#) // the claim finishes it
            .call(4, "dequeue", ":ack", r#"[[2 "2-0" 1]]"#)
            .call(5, "claim", "nil", "[]")
            .call(6, "drain", "[:xreadgroup nil]", "[:xreadgroup nil []]")
            .call(
                6,
                "drain",
                r#"[:autoclaim "0-0"]"#,
                r#"[:autoclaim "0-0" []]"#,
            )
            .build();
        let o = check(&h);
        assert_eq!(o.validity, Validity::Valid, "{:?}", o.anomalies);
        assert_eq!(o.ops_checked, 11);
        assert_eq!(count(&o, "enqueued-ok"), 2);
        assert_eq!(count(&o, "enqueued-indeterminate"), 1);
        assert_eq!(count(&o, "delivered"), 2);
        assert_eq!(count(&o, "deliveries"), 3);
        assert_eq!(count(&o, "redelivered"), 1);
        assert_eq!(count(&o, "acked"), 2);
        assert_eq!((count(&o, "lost"), count(&o, "phantoms")), (0, 0));
    }

    #[test]
    fn the_final_drain_delivers_and_an_ack_racing_a_claim_is_valid() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(0, "enqueue", "2", "")
            .invoke(1, "dequeue", ":ack")
            .invoke(2, "reclaim", "nil")
            // Delivered to 1, claimed by 2 while 1 was paused, acked by both.
            .ok(2, r#"[[1 "1-0" 1]]"#)
            .ok(1, r#"[[1 "1-0" 0]]"#)
            .invoke(3, "dequeue", ":ack")
            .info(3) // XREADGROUP timed out: 2 is pending
            .call(
                4,
                "drain",
                r#"[:autoclaim "0-0"]"#,
                r#"[:autoclaim "0-0" [[2 "2-0" 1]]]"#,
            )
            .build();
        let o = check(&h);
        assert_eq!(o.validity, Validity::Valid, "{:?}", o.anomalies);
        assert_eq!(count(&o, "redelivered"), 1);
    }

    #[test]
    fn an_acknowledged_enqueue_never_delivered_is_lost() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(0, "enqueue", "2", "")
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" 1]]"#)
            .call(2, "drain", "[:xreadgroup nil]", "[:xreadgroup nil []]")
            .call(
                2,
                "drain",
                r#"[:autoclaim "0-0"]"#,
                r#"[:autoclaim "0-0" []]"#,
            )
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [LOST]);
        assert_eq!(o.anomalies[0].ops, [2, 3]);
        assert_eq!(count(&o, "lost"), 1);
    }

    #[test]
    fn without_a_finished_drain_an_undelivered_enqueue_is_unknown_not_lost() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(0, "enqueue", "7", "")
            // The drain's pass from 0-0 claimed something and stopped
            // (the run timed out): the value may still be pending.
            .call(
                2,
                "drain",
                r#"[:autoclaim "0-0"]"#,
                r#"[:autoclaim "0-0" [[7 "9-0" 1]]]"#,
            )
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [UNDRAINED]);
        assert_eq!(o.validity, Validity::Unknown);
    }

    #[test]
    fn one_value_under_two_entry_ids_is_a_duplicate_enqueue() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(1, "dequeue", ":skip-ack", r#"[[1 "1-0" nil]]"#)
            .call(1, "reclaim", "nil", r#"[[1 "2-0" 1]]"#)
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [DUPLICATE_ENQUEUE]);
    }

    #[test]
    fn a_value_never_enqueued_is_a_phantom() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" 1]]"#)
            .call(1, "dequeue", ":ack", r#"[[9 "2-0" 1]]"#)
            // Enqueued only after it was delivered: a phantom too.
            .call(1, "reclaim", "nil", r#"[[5 "3-0" nil]]"#)
            .call(0, "enqueue", "5", "")
            .call(1, "claim", "nil", r#"[["x" "4-0" nil]]"#)
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [PHANTOM, PHANTOM, PHANTOM]);
        assert_eq!(count(&o, "phantoms"), 3);
    }

    #[test]
    fn a_failed_enqueue_delivered_is_an_aborted_delivery() {
        let h = Hist::new()
            .invoke(0, "enqueue", "1")
            .fail(0)
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" 1]]"#)
            .build();
        assert_eq!(kinds(&check(&h)), [ABORTED_DELIVERY]);
    }

    #[test]
    fn delivery_after_a_completed_ack_is_a_duplicate() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" 1]]"#)
            .call(2, "reclaim", "nil", r#"[[1 "1-0" 0]]"#)
            .build();
        let o = check(&h);
        assert_eq!(kinds(&o), [DUPLICATE_AFTER_ACK]);
        assert_eq!(o.anomalies[0].ops, [3, 4, 5]);
        // The same claim invoked before the ack completed is fine.
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .invoke(2, "reclaim", "nil")
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" 1]]"#)
            .ok(2, r#"[[1 "1-0" 0]]"#)
            .build();
        assert_eq!(check(&h).validity, Validity::Valid);
        // So is an ack whose outcome is unknown, or a skipped one.
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .call(1, "dequeue", ":ack", r#"[[1 "1-0" nil]]"#)
            .call(
                2,
                "drain",
                r#"[:autoclaim "0-0"]"#,
                r#"[:autoclaim "0-0" [[1 "1-0" 1]]]"#,
            )
            .build();
        assert_eq!(check(&h).validity, Validity::Valid);
    }

    #[test]
    fn two_acks_that_both_removed_the_entry_are_a_double_ack() {
        let h = Hist::new()
            .call(0, "enqueue", "1", "")
            .invoke(1, "dequeue", ":ack")
            .invoke(2, "reclaim", "nil")
            .ok(1, r#"[[1 "1-0" 1]]"#)
            .ok(2, r#"[[1 "1-0" 1]]"#)
            .build();
        assert_eq!(kinds(&check(&h)), [DOUBLE_ACK]);
    }

    #[test]
    fn malformed_values_are_reported() {
        let h = Hist::new()
            .call(0, "enqueue", ":one", "")
            .call(1, "dequeue", ":ack", "[1 2]")
            .call(
                1,
                "drain",
                "[:xreadgroup nil]",
                "[:xreadgroup nil [[1 2 3]]]",
            )
            .build();
        assert_eq!(
            kinds(&check(&h)),
            ["malformed-op", "malformed-op", "malformed-op"]
        );
    }
}
