//! INCR counter checker. `:f :add` adds its value (usually 1) to a counter
//! starting at 0; `:f :read` returns the counter on its ok completion (nil
//! reads as 0, as for a missing Redis key).
//!
//! Each ok read must lie within bounds set by real time: at least the sum
//! of the ok adds completed before the read was invoked, at most that plus
//! every add that may have taken effect while the read was pending (ok or
//! indeterminate adds invoked before the read completed). Negative
//! increments widen the other bound. Failed adds never happened. When no
//! increment can be negative, a read is also at least every ok read that
//! completed before it was invoked (this catches going back in time after an
//! indeterminate add that a read proved had happened).

use super::{calls, completions, malformed, outcome, Anomaly, Call, Outcome};
use crate::history::{Edn, Op, OpType};

/// A read below every value the counter could have had.
pub const READ_TOO_LOW: &str = "counter-read-too-low";
/// A read above every value the counter could have had.
pub const READ_TOO_HIGH: &str = "counter-read-too-high";

/// Running sums of a set of increments: total, positive part, negative part.
#[derive(Clone, Copy, Default)]
struct Sums {
    total: i128,
    up: i128,
    down: i128,
}

impl Sums {
    fn add(mut self, d: i64) -> Sums {
        let d = d as i128;
        self.total += d;
        self.up += d.max(0);
        self.down += d.min(0);
        self
    }
}

/// Prefix sums over increments ordered by position: `sums_before(pos)` is
/// the sum of those at positions `< pos`.
struct Prefix {
    positions: Vec<usize>,
    sums: Vec<Sums>, // sums[i] = first i increments
}

impl Prefix {
    fn new(mut items: Vec<(usize, i64)>) -> Prefix {
        items.sort_unstable();
        let mut sums = vec![Sums::default()];
        for &(_, d) in &items {
            sums.push(sums[sums.len() - 1].add(d));
        }
        Prefix {
            positions: items.iter().map(|&(p, _)| p).collect(),
            sums,
        }
    }

    fn sums_before(&self, pos: usize) -> Sums {
        self.sums[self.positions.partition_point(|&p| p < pos)]
    }
}

/// Checks an add/read counter history (see the module docs).
pub fn check(history: &[Op]) -> Outcome {
    let calls = calls(history, &["add", "read"]);
    let mut anomalies = Vec::new();
    let mut acked = Vec::new(); // (ok completion position, increment)
    let mut possible = Vec::new(); // (invoke position, increment), not failed
    for call in calls.iter().filter(|c| c.invoke.f == "add") {
        if call.outcome() == OpType::Fail {
            continue;
        }
        let Some(d) = call.invoke.value.as_int() else {
            anomalies.push(malformed(call, "an add's value must be an integer"));
            continue;
        };
        possible.push((call.inv_pos, d));
        if let Some(pos) = call.ok_pos() {
            acked.push((pos, d));
        }
    }
    let monotonic = possible.iter().all(|&(_, d)| d >= 0);
    let acked = Prefix::new(acked);
    let possible = Prefix::new(possible);
    // (completion position, value) of ok reads, for the monotonic bound.
    let mut reads: Vec<(usize, i128)> = Vec::new();
    let mut read_bounds = Vec::new();

    for call in calls.iter().filter(|c| c.invoke.f == "read") {
        let (Some((done, done_pos)), OpType::Ok) = (call.done, call.outcome()) else {
            continue;
        };
        let read = match done.value {
            Edn::Int(v) => v as i128,
            Edn::Nil => 0,
            _ => {
                anomalies.push(malformed(call, "a read's value must be an integer or nil"));
                continue;
            }
        };
        let certain = acked.sums_before(call.inv_pos);
        let maybe = possible.sums_before(done_pos);
        // Adds acked before the read began are certain; the rest of those
        // invoked before it ended may or may not be included.
        let low = certain.total + (maybe.down - certain.down);
        let high = certain.total + (maybe.up - certain.up);
        reads.push((done_pos, read));
        read_bounds.push((call, read, low, high));
    }
    // Prefix maxima of read values by completion position.
    reads.sort_unstable();
    let mut max_before = Vec::with_capacity(reads.len() + 1);
    max_before.push(i128::MIN);
    for &(_, v) in &reads {
        max_before.push(v.max(max_before[max_before.len() - 1]));
    }
    for (call, read, mut low, high) in read_bounds {
        if monotonic {
            low = low.max(max_before[reads.partition_point(|&(p, _)| p < call.inv_pos)]);
        }
        if read < low {
            anomalies.push(bound_anomaly(READ_TOO_LOW, call, read, low, high));
        } else if read > high {
            anomalies.push(bound_anomaly(READ_TOO_HIGH, call, read, low, high));
        }
    }
    outcome(anomalies, completions(&calls))
}

fn bound_anomaly(kind: &str, call: &Call, read: i128, low: i128, high: i128) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        detail: format!(
            "read {} (process {}) returned {read}, but the counter could only be in [{low}, {high}] while it ran",
            call.index(),
            call.invoke.process
        ),
        ops: vec![call.invoke.index, call.index()],
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

    #[test]
    fn concurrent_and_indeterminate_adds_are_valid() {
        let h = Hist::new()
            .call(0, "add", "1", "")
            .call(1, "read", "nil", "1")
            .invoke(0, "add", "1")
            .invoke(2, "add", "1") // info: may or may not have happened
            .invoke(1, "read", "nil")
            .ok(0, "")
            .info(2)
            .ok(1, "2") // one of the two concurrent adds seen
            .call(1, "read", "nil", "2") // the info add has not happened yet
            .invoke(0, "add", "5")
            .fail(0) // failed: never counted
            .call(1, "read", "nil", "3") // now it has: an info op may land late
            .build();
        let o = check(&h);
        assert_eq!(o.validity, Validity::Valid, "{:?}", o.anomalies);
        assert_eq!(o.ops_checked, 8);
    }

    #[test]
    fn nil_read_is_zero() {
        let h = Hist::new().call(0, "read", "nil", "nil").build();
        assert_eq!(check(&h).validity, Validity::Valid);
    }

    #[test]
    fn read_missing_an_acknowledged_add_is_too_low() {
        let h = Hist::new()
            .call(0, "add", "1", "")
            .call(0, "add", "1", "")
            .call(1, "read", "nil", "1")
            .build();
        let o = check(&h);
        assert_eq!(o.validity, Validity::Invalid);
        assert_eq!(kinds(&o), [READ_TOO_LOW]);
        assert_eq!(o.anomalies[0].ops, [4, 5]);
    }

    #[test]
    fn read_going_back_in_time_is_too_low() {
        let h = Hist::new()
            .invoke(0, "add", "1")
            .info(0)
            .call(1, "read", "nil", "1") // the info add happened...
            .call(1, "read", "nil", "0") // ...so it cannot be undone
            .build();
        // Only the first read proves the indeterminate add happened.
        assert_eq!(kinds(&check(&h)), [READ_TOO_LOW]);
        let h = Hist::new()
            .call(0, "add", "1", "")
            .call(1, "read", "nil", "1")
            .call(1, "read", "nil", "0")
            .build();
        assert_eq!(kinds(&check(&h)), [READ_TOO_LOW]);
    }

    #[test]
    fn read_counting_a_failed_add_is_too_high() {
        let h = Hist::new()
            .call(0, "add", "1", "")
            .invoke(0, "add", "1")
            .fail(0)
            .call(1, "read", "nil", "2")
            .build();
        assert_eq!(kinds(&check(&h)), [READ_TOO_HIGH]);
    }

    #[test]
    fn read_ahead_of_invoked_adds_is_too_high() {
        let h = Hist::new()
            .invoke(1, "read", "nil")
            .ok(1, "1")
            .call(0, "add", "1", "") // invoked after the read completed
            .build();
        assert_eq!(kinds(&check(&h)), [READ_TOO_HIGH]);
    }

    #[test]
    fn concurrent_reads_may_disagree_in_either_order() {
        let h = Hist::new()
            .invoke(0, "add", "1")
            .invoke(1, "read", "nil")
            .invoke(2, "read", "nil")
            .ok(1, "1")
            .ok(2, "0") // overlaps the first read: may be ordered before it
            .ok(0, "")
            .build();
        assert_eq!(check(&h).validity, Validity::Valid);
    }

    #[test]
    fn negative_increments_widen_the_low_bound() {
        let h = Hist::new()
            .call(0, "add", "3", "")
            .invoke(0, "add", "-2")
            .call(1, "read", "nil", "1")
            .ok(0, "")
            .build();
        assert_eq!(check(&h).validity, Validity::Valid);
        let h = Hist::new()
            .call(0, "add", "3", "")
            .invoke(0, "add", "-2")
            .call(1, "read", "nil", "0")
            .ok(0, "")
            .build();
        assert_eq!(kinds(&check(&h)), [READ_TOO_LOW]);
    }

    #[test]
    fn malformed_values_are_reported() {
        let h = Hist::new()
            .call(0, "add", ":one", "")
            .call(1, "read", "nil", "[1]")
            .build();
        assert_eq!(kinds(&check(&h)), ["malformed-op", "malformed-op"]);
    }
}
