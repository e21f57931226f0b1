//! Pub/sub on every node. PUBLISH and SPUBLISH are log entries (the
//! command filter sends them to the leader's log as writes); applying one
//! publishes the message on each node, to that node's own subscribers, so
//! a subscriber on any node receives each message once. SUBSCRIBE,
//! PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBE are each node's own and
//! pass through untouched.
//!
//! The reply to the publisher is the number of clients that received the
//! message on the node that answers it (the leader), as Redis Cluster
//! answers PUBLISH: a count over every node would mean waiting for every
//! node to apply the entry, and would still be out of date once written.
//!
//! A message is delivered when its entry applies: a follower that lags
//! delivers it late, and one that catches up through a snapshot never
//! sees the entries the snapshot covers. A node that restarts replays its
//! log up to the commit index it recovered without publishing again: those
//! messages went out before it restarted, to the subscribers it had then.
//! Publishing changes no key, so the dataset stays the same either way.

use std::sync::atomic::Ordering;

use super::command::Outcome;

/// Whether `name` publishes a message (lower case).
pub fn is_publish(name: &str) -> bool {
    matches!(name, "publish" | "spublish")
}

/// A PUBLISH or SPUBLISH applied again while the node replays its own log
/// after a restart: nobody receives it (0), nothing is published.
pub fn replayed(argv: &[Vec<u8>]) -> Option<Outcome> {
    let name = String::from_utf8_lossy(argv.first()?).to_ascii_lowercase();
    if !is_publish(&name) || argv.len() != 3 {
        return None;
    }
    let applied = crate::apply::APPLIED_INDEX.load(Ordering::Acquire);
    // The entry being applied is the one after `applied`.
    (applied < crate::info::RECOVERY_TARGET.load(Ordering::Acquire)).then_some(Outcome::Integer(0))
}
