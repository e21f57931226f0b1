//! History checkers. `check` dispatches on the workload name.

pub mod counter;
pub mod list_append;
pub mod queue;
pub mod register;
pub mod ttl;

use crate::history::{pair, Op, OpType};

/// Whether a history was proven safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker ran out of its budget: counts as a failure.
    Unknown,
}

/// One anomaly found in a history.
#[derive(Clone, Debug)]
pub struct Anomaly {
    /// e.g. "lost-append", "G1c", "nonlinearizable", "stale-read".
    pub kind: String,
    /// One or a few lines a person can follow.
    pub detail: String,
    /// `index` of the history entries involved.
    pub ops: Vec<u64>,
}

/// The result of checking one history.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub validity: Validity,
    pub anomalies: Vec<Anomaly>,
    /// Completed operations (ok/fail/info) the checker looked at.
    pub ops_checked: usize,
    /// Counts a checker reports besides its anomalies, e.g. the queue's
    /// `("enqueued-ok", 812)`; printed in the summary and by `check`.
    pub counts: Vec<(&'static str, usize)>,
}

/// Kind of the anomaly for a workload name `check` does not know.
pub const UNKNOWN_WORKLOAD: &str = "unknown-workload";
/// Kind of an op the checker could not interpret (bad `:value` shape).
pub const MALFORMED_OP: &str = "malformed-op";
/// Kind of the note left when a checker ran out of its budget. Alone it makes
/// the outcome `Unknown` rather than `Invalid`.
pub const BUDGET_EXHAUSTED: &str = "budget-exhausted";

/// Checks `history` with the checker for `workload`: "register"
/// ([`register::check`]), "list-append" ([`list_append::check`]), "counter"
/// ([`counter::check`]), "ttl" ([`ttl::check`], default options) or "queue"
/// ([`queue::check`]). An unknown workload is `Invalid` with an
/// "unknown-workload" anomaly.
///
/// `validity` is `Valid` only when there is no anomaly at all; `Unknown`
/// when the only anomalies are "budget-exhausted" ones; `Invalid` otherwise.
pub fn check(workload: &str, history: &[Op]) -> Outcome {
    check_with(workload, history, &CheckOpts::default())
}

/// Options of the checkers.
#[derive(Clone, Debug)]
pub struct CheckOpts {
    /// The clock tolerance of the ttl checker, in ms.
    pub ttl_tolerance_ms: u64,
}

impl Default for CheckOpts {
    fn default() -> Self {
        CheckOpts {
            ttl_tolerance_ms: ttl::DEFAULT_TOLERANCE_MS,
        }
    }
}

/// [`check`] with options; "ttl" ([`ttl::check`]) takes the tolerance.
pub fn check_with(workload: &str, history: &[Op], opts: &CheckOpts) -> Outcome {
    match workload {
        "register" => register::check(history),
        "list-append" => list_append::check(history),
        "counter" => counter::check(history),
        "ttl" => ttl::check(history, opts.ttl_tolerance_ms),
        "queue" => queue::check(history),
        _ => outcome(
            vec![Anomaly {
                kind: UNKNOWN_WORKLOAD.to_string(),
                detail: format!(
                    "no checker for workload {workload:?} (known: register, list-append, counter, ttl, queue)"
                ),
                ops: Vec::new(),
            }],
            history.iter().filter(|op| op.typ != OpType::Invoke).count(),
        ),
    }
}

/// Builds an `Outcome`, deriving its validity from the anomalies.
pub(crate) fn outcome(anomalies: Vec<Anomaly>, ops_checked: usize) -> Outcome {
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else if anomalies.iter().all(|a| a.kind == BUDGET_EXHAUSTED) {
        Validity::Unknown
    } else {
        Validity::Invalid
    };
    Outcome {
        validity,
        anomalies,
        ops_checked,
        counts: Vec::new(),
    }
}

/// One invocation with its completion, if any.
pub(crate) struct Call<'a> {
    pub invoke: &'a Op,
    /// Position of the invocation in the history slice.
    pub inv_pos: usize,
    /// The completion and its position.
    pub done: Option<(&'a Op, usize)>,
}

impl Call<'_> {
    /// Ok, Fail or Info; an invocation never completed counts as Info.
    pub fn outcome(&self) -> OpType {
        self.done.map_or(OpType::Info, |(op, _)| op.typ)
    }

    /// Position of an ok completion; `None` for anything else.
    pub fn ok_pos(&self) -> Option<usize> {
        match self.done {
            Some((op, pos)) if op.typ == OpType::Ok => Some(pos),
            _ => None,
        }
    }

    /// The index to name this op by: its completion's, else its invocation's.
    pub fn index(&self) -> u64 {
        self.done.map_or(self.invoke.index, |(op, _)| op.index)
    }
}

/// The invocations whose `f` is one of `fs`, paired with their completions
/// (see [`pair`]), in invocation order.
pub(crate) fn calls<'a>(history: &'a [Op], fs: &[&str]) -> Vec<Call<'a>> {
    pair(history)
        .into_iter()
        .filter(|&(inv, _)| fs.contains(&history[inv].f.as_str()))
        .map(|(inv, done)| Call {
            invoke: &history[inv],
            inv_pos: inv,
            done: done.map(|pos| (&history[pos], pos)),
        })
        .collect()
}

/// Completions among `calls`: what `Outcome::ops_checked` counts.
pub(crate) fn completions(calls: &[Call]) -> usize {
    calls.iter().filter(|c| c.done.is_some()).count()
}

/// A "malformed-op" anomaly for `call`.
pub(crate) fn malformed(call: &Call, why: &str) -> Anomaly {
    Anomaly {
        kind: MALFORMED_OP.to_string(),
        detail: format!(
            "op {} ({} by process {}): {why}",
            call.index(),
            call.invoke.f,
            call.invoke.process
        ),
        ops: vec![call.index()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::testing::Hist;

    #[test]
    fn dispatches_by_workload() {
        let counter = Hist::new()
            .call(0, "add", "1", "")
            .call(0, "read", "nil", "1")
            .build();
        let o = check("counter", &counter);
        assert_eq!((o.validity, o.ops_checked), (Validity::Valid, 2));
        let register = Hist::new().call(0, "read", "[1 nil]", "[1 3]").build();
        assert_eq!(check("register", &register).validity, Validity::Invalid);
        let txns = Hist::new()
            .call(0, "txn", "[[:r 1 nil]]", "[[:r 1 [1]]]")
            .build();
        assert_eq!(check("list-append", &txns).validity, Validity::Invalid);
    }

    #[test]
    fn unknown_workload_is_invalid() {
        let o = check("bank", &Hist::new().call(0, "read", "nil", "").build());
        assert_eq!(o.validity, Validity::Invalid);
        assert_eq!(o.anomalies[0].kind, UNKNOWN_WORKLOAD);
        assert_eq!(o.ops_checked, 1);
    }

    #[test]
    fn budget_notes_alone_make_unknown() {
        let note = |kind: &str| Anomaly {
            kind: kind.to_string(),
            detail: String::new(),
            ops: Vec::new(),
        };
        assert_eq!(outcome(vec![], 0).validity, Validity::Valid);
        assert_eq!(
            outcome(vec![note(BUDGET_EXHAUSTED)], 0).validity,
            Validity::Unknown
        );
        assert_eq!(
            outcome(vec![note(BUDGET_EXHAUSTED), note("G0")], 0).validity,
            Validity::Invalid
        );
    }
}
