//! MULTI/EXEC: commands a client queues between MULTI and EXEC are kept
//! here (Redis itself never sees the MULTI, which our filter rewrote), and
//! EXEC proposes them as ONE log entry, applied in one main-thread callback
//! so nothing interleaves. WATCH cannot be made consistent and is refused.
//! Main thread only.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A transaction being queued by one client.
#[derive(Default)]
pub struct Queued {
    pub cmds: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queueing: EXEC must abort (as Redis).
    pub failed: bool,
}

static OPEN: Mutex<Option<HashMap<u64, Queued>>> = Mutex::new(None);

/// Bound on open transactions: clients that disconnect inside MULTI leave
/// theirs behind; the oldest ids (smallest, ids only grow) are dropped.
const MAX_OPEN: usize = 100_000;

pub fn in_multi(client: u64) -> bool {
    OPEN.lock()
        .as_ref()
        .is_some_and(|m| m.contains_key(&client))
}

/// MULTI: false if the client already is in one.
pub fn begin(client: u64) -> bool {
    let mut g = OPEN.lock();
    let m = g.get_or_insert_with(HashMap::new);
    if m.contains_key(&client) {
        return false;
    }
    if m.len() >= MAX_OPEN {
        if let Some(oldest) = m.keys().min().copied() {
            m.remove(&oldest);
        }
    }
    m.insert(client, Queued::default());
    true
}

pub fn queue(client: u64, argv: Vec<Vec<u8>>) {
    if let Some(q) = OPEN.lock().as_mut().and_then(|m| m.get_mut(&client)) {
        q.cmds.push(argv);
    }
}

pub fn mark_failed(client: u64) {
    if let Some(q) = OPEN.lock().as_mut().and_then(|m| m.get_mut(&client)) {
        q.failed = true;
    }
}

/// EXEC or DISCARD: ends the transaction, returning what was queued.
pub fn take(client: u64) -> Option<Queued> {
    OPEN.lock().as_mut().and_then(|m| m.remove(&client))
}
