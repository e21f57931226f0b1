//! The replicated state machine: what a log entry means to Redis.
//!
//! The rule every part of it keeps: the effect of an entry depends only on
//! the dataset and on the entry itself (its commands and its time), never
//! on the node, its clock, or when the entry is applied. `docs/determinism.md`
//! says how, and what is not covered yet.
//!
//! - `ttl`: relative expiry times made absolute at the entry's time, stored
//!   shifted so that Redis never expires a key by its own clock; the TTL
//!   queries answered from the logical times.
//! - `expiry`: keys whose time has come are deleted by entries only: checked
//!   before each command an entry runs, and proposed in batches by the
//!   leader's expiry cycle.
//! - `command`: one command of an entry, or a read, run under these rules.

pub mod command;
pub mod expiry;
pub mod ttl;

/// This node's clock, Unix ms. Only the leader's reaches the log (as an
/// entry's time); elsewhere it is used for reads the leader serves.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
