//! MULTI/EXEC: commands a client queues between MULTI and EXEC are kept
//! here (Redis itself never sees the MULTI, which our filter rewrote), and
//! EXEC proposes them as ONE log entry, applied in one main-thread callback
//! so nothing interleaves. The keys a client WATCHes are kept by
//! `machine::watch`. Main thread only.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A transaction being queued by one client.
#[derive(Default)]
pub struct Queued {
    pub cmds: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queueing: EXEC must abort (as Redis).
    pub failed: bool,
}

/// One entry per client with a MULTI open: removed at EXEC, DISCARD and
/// when the client disconnects (see [`forget`]), so there are never more
/// than connected clients (maxclients) and none is dropped to make room.
static OPEN: Mutex<Option<HashMap<u64, Queued>>> = Mutex::new(None);

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
    m.insert(client, Queued::default());
    true
}

/// A client disconnected: its open transaction and watched keys go with it.
pub fn forget(client: u64) {
    crate::machine::watch::forget(client);
    if let Some(m) = OPEN.lock().as_mut() {
        m.remove(&client);
    }
}

/// Clients with a MULTI open (INFO raft).
pub fn open_count() -> usize {
    OPEN.lock().as_ref().map_or(0, HashMap::len)
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
