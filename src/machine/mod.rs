//! The replicated state machine: what a log entry means to Redis.
//!
//! The rule every part of it keeps: the effect of an entry depends only on
//! the dataset and on the entry itself (its commands, its time and its
//! index), never on the node, its clock, or when the entry is applied.
//! `docs/determinism.md` says how, and what is not covered yet.
//!
//! - `ttl`: relative expiry times made absolute at the entry's time, stored
//!   shifted so that Redis never expires a key by its own clock; the TTL
//!   queries answered from the logical times.
//! - `expiry`: keys whose time has come are deleted by entries only: checked
//!   before each command an entry runs, and proposed in batches by the
//!   leader's expiry cycle.
//! - `random`: commands whose choice is random (SPOP, SRANDMEMBER,
//!   RANDOMKEY), or whose order follows the node's hash tables (SMEMBERS,
//!   HGETALL, KEYS, SCAN, ...), made deterministic; TIME from the entry.
//! - `script`: every command a script runs goes through the same rules.
//! - `script_cache`: the script cache EVALSHA runs on, changed by entries
//!   only and carried by snapshots.
//! - `stream`: XADD's automatic IDs from the entry's time.
//! - `pending`: consumer groups' delivery times from the entry's time, and
//!   XCLAIM / XAUTOCLAIM's idle tests decided from them.
//! - `watch`: WATCH's modified keys, decided from the log.
//! - `command`: one command of an entry, or a read, run under these rules.
//! - `protocol`: replies in the client's protocol (RESP2 or RESP3).
//! - `pubsub`: PUBLISH and SPUBLISH as entries, delivered on every node.
//! - `digest`: RAFT.DEBUG DIGEST, what must be equal on every node (DEBUG
//!   DIGEST plus consumer groups and the script cache).

use std::cell::Cell;

pub mod command;
pub mod digest;
pub mod expiry;
pub mod pending;
pub mod protocol;
pub mod pubsub;
pub mod random;
pub mod script;
pub mod script_cache;
pub mod stream;
pub mod ttl;
pub mod watch;

/// This node's clock, Unix ms. Only the leader's reaches the log (as an
/// entry's time); elsewhere it is used for reads the leader serves.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a command runs in the log's terms: the entry's time (Unix ms) and
/// a seed that is the same on every node (from the entry's index and the
/// command's place in it) for the choices random commands make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    pub time: i64,
    pub seed: u64,
    /// False for a read the leader serves outside the log: it deletes
    /// nothing (its declared keys were checked before it ran).
    pub in_log: bool,
}

impl Moment {
    /// The moment of command `position` of the entry at `index`.
    pub fn of_entry(time: i64, index: u64, position: usize) -> Moment {
        Moment {
            time,
            seed: random::mix(index ^ ((position as u64) << 48)),
            in_log: true,
        }
    }
}

thread_local! {
    /// The moment of the command the main thread is running for the
    /// machine, and how many seeds were drawn from it (a script's commands
    /// each draw one, in the same order on every node).
    static CURRENT: Cell<Option<(Moment, u64)>> = const { Cell::new(None) };
}

/// Runs `f` with `m` as the current moment.
pub fn at<R>(m: Moment, f: impl FnOnce() -> R) -> R {
    let before = CURRENT.with(|c| c.replace(Some((m, 0))));
    let r = f();
    CURRENT.with(|c| c.set(before));
    r
}

/// The current moment, with a fresh seed drawn from it; None outside the
/// machine's commands.
pub fn draw() -> Option<Moment> {
    CURRENT.with(|c| {
        let (m, n) = c.get()?;
        c.set(Some((m, n + 1)));
        Some(Moment {
            seed: random::mix(m.seed.wrapping_add(n + 1)),
            ..m
        })
    })
}

/// Whether the main thread runs a command for the machine now.
pub fn active() -> bool {
    CURRENT.with(|c| c.get().is_some())
}
