//! Expiry decided by the log (see `docs/determinism.md`).
//!
//! Redis never expires a key here by itself: stored expire times are
//! shifted beyond any clock (`ttl::SHIFT_MS`). Instead:
//! - before an entry runs a command, the command's keys whose logical
//!   expiry time is at or before the entry's time are deleted (as Redis's
//!   lazy expiry would, but at the entry's time, so on every node alike);
//! - the leader finds keys whose time has come and proposes their deletion
//!   as an `Expire` entry, in bounded batches (Redis's active expiry);
//! - a read the leader serves that would see an expired key goes through
//!   the log instead, so the deletion comes first.
//!
//! The index of expiring keys is this node's own bookkeeping for finding
//! candidates: it is never part of the state machine, and every candidate
//! is checked against the dataset before it is proposed and again when
//! the entry is applied.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis_module::raw;

use super::ttl;
use crate::ffi::{self, KeyExpiry};
use crate::node::{Request, Role};

type Ctx = *mut raw::RedisModuleCtx;

/// Keys this node deleted because their time had come (INFO).
pub static EXPIRED: AtomicU64 = AtomicU64::new(0);

/// Deletes those of `keys` whose expiry time is at or before `now` (an
/// entry's time). Returns how many it deleted.
pub fn expire_due(ctx: Ctx, keys: &[Vec<u8>], now: i64) -> usize {
    let mut n = 0;
    for key in keys {
        if let KeyExpiry::At(t) = ffi::key_expiry(ctx, key) {
            if ttl::to_logical(t) <= now {
                ffi::expire_key(ctx, key);
                n += 1;
            }
        }
    }
    EXPIRED.fetch_add(n as u64, Ordering::Relaxed);
    n
}

/// Before a command runs at `now`: its keys whose time has come are gone.
pub fn expire_keys_of(ctx: Ctx, argv: &[Vec<u8>], now: i64) {
    let keys = ffi::command_keys(ctx, argv);
    if !keys.is_empty() {
        expire_due(ctx, &keys, now);
    }
}

/// Whether a read at `now` would see a key whose time has come (it must
/// then go through the log, which deletes the key first).
pub fn reads_an_expired_key(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> bool {
    ffi::command_keys(ctx, argv)
        .iter()
        .any(|k| matches!(ffi::key_expiry(ctx, k), KeyExpiry::At(t) if ttl::to_logical(t) <= now))
}

/// Expiring keys by logical expiry time, and the keys this leader proposed
/// lately (out of `by_time` while their entry is on its way; back in if it
/// was lost, e.g. with a leader change).
#[derive(Default)]
struct Index {
    by_time: BTreeSet<(i64, Vec<u8>)>,
    proposed: VecDeque<(Instant, i64, Vec<u8>)>,
}

/// Main thread only (events, timers, apply); a Mutex for the static.
static INDEX: Mutex<Option<Index>> = Mutex::new(None);

fn with_index<R>(f: impl FnOnce(&mut Index) -> R) -> R {
    f(INDEX.lock().get_or_insert_with(Index::default))
}

/// Most keys one expiry entry deletes; a cycle that fills it runs again
/// soon (BUSY_MS) instead of waiting the whole period.
const BATCH: usize = 1000;
const PERIOD_MS: i64 = 100;
const BUSY_MS: i64 = 5;
/// Index entries one cycle may look at (stale ones are dropped on the way;
/// a follower looks at the due keys it keeps until entries delete them).
const SCAN_LIMIT: usize = 4 * BATCH;
/// A proposed key is not proposed again before this (its entry commits in
/// far less; if it was lost with a leader change, it is proposed again).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Subscribes to the events that give keys an expiry and starts the
/// leader's expiry cycle. Called once at load.
pub fn init(ctx: Ctx) -> bool {
    ffi::start_timer(ctx, PERIOD_MS, on_timer);
    ffi::subscribe_generic_events(ctx, on_event)
}

/// Turns off Redis's own active expiry: with shifted times it finds nothing
/// anyway, but keys stored before times were shifted must not expire by
/// this node's clock either.
pub fn stop_redis_expiry(ctx: Ctx) {
    let argv = [
        b"DEBUG".to_vec(),
        b"SET-ACTIVE-EXPIRE".to_vec(),
        b"0".to_vec(),
    ];
    if let Err(e) = ffi::call(ctx, &argv) {
        crate::logging::warning(&format!("could not turn off Redis's active expiry: {e}"));
    }
}

/// The events after which a key may have a (new) expiry time.
const EXPIRY_EVENTS: &[&[u8]] = &[b"expire", b"rename_to", b"copy_to", b"move_to", b"restore"];

unsafe extern "C" fn on_event(
    ctx: Ctx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    if event.is_null() {
        return 0;
    }
    // SAFETY: Redis passes a NUL-terminated event name.
    let name = unsafe { CStr::from_ptr(event) }.to_bytes();
    if EXPIRY_EVENTS.contains(&name) {
        crate::guard::catch(
            "the expiry index",
            || {
                let key = ffi::bytes_of(key);
                if let KeyExpiry::At(t) = ffi::key_expiry(ctx, &key) {
                    with_index(|ix| ix.by_time.insert((ttl::to_logical(t), key)));
                }
            },
            |_| (),
        );
    }
    0
}

/// Rebuilds the index from the whole dataset (after a load).
pub fn rebuild_index(ctx: Ctx) {
    let mut by_time = BTreeSet::new();
    ffi::for_each_expiring_key(ctx, &mut |key, t| {
        by_time.insert((ttl::to_logical(t), key));
    });
    with_index(|ix| {
        ix.by_time = by_time;
        ix.proposed.clear();
    });
}

/// Reads that look at the whole keyspace (no key of their own to check).
const KEYSPACE_READS: &[&str] = &["keys", "scan", "dbsize", "randomkey"];

pub fn reads_the_keyspace(argv: &[Vec<u8>]) -> bool {
    argv.first().is_some_and(|n| {
        KEYSPACE_READS
            .iter()
            .any(|k| n.eq_ignore_ascii_case(k.as_bytes()))
    })
}

/// Inside an entry, before a keyspace command (KEYS, SCAN, DBSIZE,
/// RANDOMKEY in MULTI or a script): every key whose time has come is
/// deleted, found by a full pass over the dataset, so the same on every
/// node (O(keys), like KEYS itself).
pub fn expire_all_due(ctx: Ctx, now: i64) {
    let mut due = Vec::new();
    ffi::for_each_expiring_key(ctx, &mut |key, t| {
        if ttl::to_logical(t) <= now {
            due.push(key);
        }
    });
    if !due.is_empty() {
        expire_due(ctx, &due, now);
    }
}

/// Whether this node knows of keys whose time has come that entries may
/// not have deleted yet (due in the index, or proposed lately).
pub fn any_due(now: i64) -> bool {
    with_index(|ix| !ix.proposed.is_empty() || ix.by_time.first().is_some_and(|(t, _)| *t <= now))
}

/// All keys due by `now`, taken out of the index as proposed (for a
/// keyspace read the leader sends through the log behind their deletion).
pub fn take_due(ctx: Ctx, now: i64) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let (keys, busy) = due_keys(ctx, now, true);
        all.extend(keys);
        if !busy {
            return all;
        }
    }
}

/// Number of keys the index holds (INFO).
pub fn indexed_keys() -> usize {
    with_index(|ix| ix.by_time.len())
}

unsafe extern "C" fn on_timer(ctx: Ctx, _: *mut c_void) {
    let busy = crate::guard::catch("the expiry cycle", || cycle(ctx), |_| false);
    ffi::start_timer(ctx, if busy { BUSY_MS } else { PERIOD_MS }, on_timer);
}

/// One round of expiry: on the leader, proposes the deletion of up to
/// BATCH keys whose time has come; on every node, drops index entries of
/// keys that are gone. True when there may be more to propose at once.
fn cycle(ctx: Ctx) -> bool {
    let node = crate::driver::node();
    let leading = !crate::config::EXPIRE_CYCLE_DISABLE.get()
        && node.as_ref().is_some_and(|n| {
            let st = n.status.read();
            st.role == Role::Leader && st.failed.is_none() && !st.removed
        });
    let now = super::now_ms().max(crate::apply::applied_time_ms());
    let (keys, busy) = due_keys(ctx, now, leading);
    if let (Some(n), false) = (node, keys.is_empty()) {
        n.send(Request::Expire { keys });
    }
    busy
}

/// Takes from the index the keys whose time has come, checked against the
/// dataset (only a leader proposes them); entries that are stale (key gone,
/// expiry removed or moved) are dropped or put back at the key's real time.
fn due_keys(ctx: Ctx, now: i64, propose: bool) -> (Vec<Vec<u8>>, bool) {
    with_index(|ix| {
        let fresh = Instant::now();
        // Proposed long enough ago: if still there, its entry was lost.
        while let Some((at, _, _)) = ix.proposed.front() {
            if fresh.duration_since(*at) < RETRY_AFTER {
                break;
            }
            let (_, t, k) = ix.proposed.pop_front().expect("front exists");
            ix.by_time.insert((t, k));
        }
        let mut keys = Vec::new();
        let mut later = Vec::new();
        let mut looked = 0;
        while keys.len() < BATCH && looked < SCAN_LIMIT {
            let Some(first) = ix.by_time.first() else {
                break;
            };
            if first.0 > now {
                break;
            }
            let (_, key) = ix.by_time.pop_first().expect("first exists");
            looked += 1;
            match ffi::key_expiry(ctx, &key) {
                KeyExpiry::At(t) if ttl::to_logical(t) <= now => {
                    let t = ttl::to_logical(t);
                    if propose {
                        ix.proposed.push_back((fresh, t, key.clone()));
                        keys.push(key);
                    } else {
                        // A follower only keeps it until an entry deletes it.
                        later.push((t, key));
                    }
                }
                KeyExpiry::At(t) => {
                    ix.by_time.insert((ttl::to_logical(t), key));
                }
                KeyExpiry::Missing | KeyExpiry::Persistent => {}
            }
        }
        ix.by_time.extend(later);
        let busy = propose && (keys.len() >= BATCH || looked >= SCAN_LIMIT);
        (keys, busy)
    })
}
