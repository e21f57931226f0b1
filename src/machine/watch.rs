//! WATCH: optimistic locking, decided from the log alone.
//!
//! A client WATCHes keys on the leader; each key records the leader's
//! applied index then (`since`) and what the key was (present; present but
//! its time had come). EXEC proposes the block with those keys
//! (`Payload::Watched`). Applying it at index E, every node runs the block
//! only if no watched key was modified by an entry in (since, E), the rule
//! Redis 7.0 applies between WATCH and EXEC, and answers a null array
//! otherwise.
//!
//! What "modified" means comes from Redis itself: the keyspace events that
//! entries fire while they are applied (every write, DEL, expiry deletion;
//! a FLUSHALL / FLUSHDB or SWAPDB by its server event). Each node keeps
//! the index of the last entry that modified each key, in the [`History`]:
//! part of the replicated state, the same on every node at the same applied
//! index (fed only by applied entries, saved in the snapshot with the
//! dataset, see `snapshot.rs`), and bounded by a rule that depends only on
//! it: it holds the last [`MAX_RECORDS`] modifications; older ones are
//! forgotten and `floor` rises to the entry of the last forgotten one, and
//! a key watched before `floor` counts as modified (its EXEC answers nil).
//!
//! Which keys a client watches is connection state, kept on the node the
//! client talks to (always the leader when it watched), until EXEC,
//! DISCARD, UNWATCH or the disconnect.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

use parking_lot::Mutex;
use redis_module::raw;

use super::ttl;
use crate::entry::WatchedKey;
use crate::ffi::{self, KeyExpiry};

type Ctx = *mut raw::RedisModuleCtx;

/// Modifications the history remembers; a key watched before the oldest
/// one it still holds counts as modified (see the module's doc).
pub const MAX_RECORDS: usize = 200_000;

// ---------------------------------------------------------------------------
// Connection state: the keys each client watches (main thread only)

static WATCHING: Mutex<Option<HashMap<u64, Vec<WatchedKey>>>> = Mutex::new(None);

/// WATCH on the leader: records `keys` as of this node's applied index
/// (the leader's; its entries up to there are committed, so the index
/// means the same on every node). A key already watched keeps its first
/// record, as in Redis.
pub fn watch(ctx: Ctx, client: u64, keys: &[Vec<u8>], applied: u64, now: i64) {
    let mut g = WATCHING.lock();
    let list = g
        .get_or_insert_with(HashMap::new)
        .entry(client)
        .or_default();
    for key in keys {
        if list.iter().any(|w| &w.key == key) {
            continue;
        }
        let (existed, expired) = match ffi::key_expiry(ctx, key) {
            KeyExpiry::Missing => (false, false),
            KeyExpiry::Persistent => (true, false),
            KeyExpiry::At(t) => (true, ttl::to_logical(t) <= now),
        };
        list.push(WatchedKey {
            key: key.clone(),
            since: applied,
            existed,
            expired,
        });
    }
}

/// UNWATCH, EXEC, DISCARD, a disconnect: the client's watched keys, gone.
pub fn take(client: u64) -> Option<Vec<WatchedKey>> {
    WATCHING.lock().as_mut().and_then(|m| m.remove(&client))
}

/// A client disconnected.
pub fn forget(client: u64) {
    take(client);
}

/// Clients that watch keys (INFO raft).
pub fn watching_clients() -> usize {
    WATCHING.lock().as_ref().map_or(0, HashMap::len)
}

// ---------------------------------------------------------------------------
// The replicated history of modifications

/// The last modification of a key: by any entry, and by one that did more
/// than delete it because its time had come (`real`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Last {
    any: u64,
    real: u64,
}

/// The keys one entry modified: (entry index, [(key, real)]).
type EntryKeys = (u64, Vec<(Vec<u8>, bool)>);

/// Which entries modified which keys, for the last [`MAX_RECORDS`]
/// modifications. Identical on every node at the same applied index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Modifications at or before this index may be forgotten.
    floor: u64,
    /// The last entry that flushed database 0 (FLUSHALL, FLUSHDB).
    flushed: u64,
    /// The last entry that swapped database 0 with another (SWAPDB).
    swapped: u64,
    last: HashMap<Vec<u8>, Last>,
    /// The modifications in log order.
    records: VecDeque<EntryKeys>,
    len: usize,
}

impl History {
    /// A history that knows nothing before `floor`.
    pub fn starting_at(floor: u64) -> History {
        History {
            floor,
            ..History::default()
        }
    }

    /// Entry `index` modified `key` (`real`: more than an expiry deletion).
    fn touch(&mut self, index: u64, key: &[u8], real: bool) {
        let last = self.last.entry(key.to_vec()).or_default();
        let new_any = last.any != index;
        let new_real = real && last.real != index;
        if !new_any && !new_real {
            return;
        }
        last.any = index;
        if real {
            last.real = index;
        }
        match self.records.back_mut() {
            Some((i, recs)) if *i == index => recs.push((key.to_vec(), real)),
            _ => self.records.push_back((index, vec![(key.to_vec(), real)])),
        }
        self.len += 1;
    }

    /// Forgets the oldest modifications beyond `max` (whole entries).
    fn trim(&mut self, max: usize) {
        while self.len > max {
            let Some((index, recs)) = self.records.pop_front() else {
                break;
            };
            self.len -= recs.len();
            self.floor = self.floor.max(index);
            for (key, _) in recs {
                if self.last.get(&key).is_some_and(|l| l.any <= index) {
                    self.last.remove(&key);
                }
            }
        }
    }

    /// Whether `w` was modified by an entry after it was watched and
    /// before `index` (the entry deciding, not applied yet).
    fn modified(&self, w: &WatchedKey) -> bool {
        if w.since < self.floor || self.swapped > w.since {
            return true;
        }
        let last = self.last.get(&w.key).copied().unwrap_or_default();
        if w.expired {
            // Watched when its time had come: its deletion is no change
            // (Redis 7.0), anything written to it afterwards is.
            return last.real > w.since;
        }
        last.any > w.since || (w.existed && self.flushed > w.since)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [self.floor, self.flushed, self.swapped] {
            put_varint(&mut out, v);
        }
        put_varint(&mut out, self.records.len() as u64);
        for (index, recs) in &self.records {
            put_varint(&mut out, *index);
            put_varint(&mut out, recs.len() as u64);
            for (key, real) in recs {
                out.push(u8::from(*real));
                put_varint(&mut out, key.len() as u64);
                out.extend_from_slice(key);
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<History, String> {
        let mut pos = 0;
        let mut next = || get_varint(buf, &mut pos);
        let mut h = History::starting_at(next()?);
        h.flushed = next()?;
        h.swapped = next()?;
        let groups = get_varint(buf, &mut pos)?;
        for _ in 0..groups {
            let index = get_varint(buf, &mut pos)?;
            let n = get_varint(buf, &mut pos)?;
            if n as usize > buf.len() {
                return Err("bad record count".into());
            }
            for _ in 0..n {
                let real = match buf.get(pos) {
                    Some(0) => false,
                    Some(1) => true,
                    _ => return Err("bad record".into()),
                };
                pos += 1;
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or("record past the end")?;
                h.touch(index, &buf[pos..end], real);
                pos = end;
            }
        }
        if pos != buf.len() {
            return Err("trailing bytes".into());
        }
        Ok(h)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// Main thread only (apply, events, the snapshot's aux data); a Mutex for
/// the static. A fork child reads it: no other thread ever locks it.
static HISTORY: Mutex<Option<History>> = Mutex::new(None);

fn with_history<R>(f: impl FnOnce(&mut History) -> R) -> R {
    f(HISTORY.lock().get_or_insert_with(History::default))
}

thread_local! {
    /// The index of the entry being applied (0: none). Only its events
    /// count: loads, reads and anything else on this node do not.
    static APPLYING: Cell<u64> = const { Cell::new(0) };
}

/// Applies entry `index` through `f`, recording the keys it modifies.
pub fn applying<R>(index: u64, f: impl FnOnce() -> R) -> R {
    let before = APPLYING.with(|a| a.replace(index));
    let r = f();
    APPLYING.with(|a| a.set(before));
    with_history(|h| h.trim(MAX_RECORDS));
    r
}

/// At apply of the watched block at `index` and time `now`: whether it
/// must not run (a watched key was modified, or its time came since).
pub fn dirty(ctx: Ctx, keys: &[WatchedKey], now: i64) -> bool {
    if with_history(|h| keys.iter().any(|w| h.modified(w))) {
        return true;
    }
    // Redis 7.0: a watched key whose time has come by EXEC counts as
    // modified, even before it is deleted (not if it had come at WATCH).
    keys.iter().filter(|w| !w.expired).any(
        |w| matches!(ffi::key_expiry(ctx, &w.key), KeyExpiry::At(t) if ttl::to_logical(t) <= now),
    )
}

/// The history a snapshot carries (written by the fork child).
pub fn encode_history() -> Vec<u8> {
    with_history(|h| h.encode())
}

/// A snapshot was loaded: its history replaces ours. A snapshot written
/// before WATCH existed has none: nothing before its index is known.
pub fn install_history(h: History) {
    *HISTORY.lock() = Some(h);
}

/// Modifications the history holds, and its floor (INFO raft).
pub fn history_size() -> (usize, u64) {
    with_history(|h| (h.len, h.floor))
}

// ---------------------------------------------------------------------------
// Events

/// Subscribes to every keyspace event and to flushes and swaps of the
/// database. Called once at load.
pub fn init(ctx: Ctx) -> bool {
    ffi::subscribe_all_keyspace_events(ctx, on_keyspace_event)
        && ffi::on_database_emptied(ctx, on_database_emptied)
}

unsafe extern "C" fn on_keyspace_event(
    ctx: Ctx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let index = APPLYING.with(Cell::get);
    if index == 0 || event.is_null() || ffi::selected_db(ctx) != 0 {
        return 0;
    }
    // SAFETY: Redis passes a NUL-terminated event name.
    let name = unsafe { CStr::from_ptr(event) }.to_bytes();
    let real = !matches!(name, b"expired" | b"evicted");
    crate::guard::catch(
        "the WATCH history",
        || {
            let key = ffi::bytes_of(key);
            with_history(|h| h.touch(index, &key, real));
        },
        |_| (),
    );
    0
}

/// Database 0 was flushed (`swapped` false) or swapped with another.
fn on_database_emptied(swapped: bool) {
    // Clients waiting on its keys (one callback serves both).
    crate::blocking::database_emptied();
    let index = APPLYING.with(Cell::get);
    if index == 0 {
        return;
    }
    with_history(|h| {
        if swapped {
            h.swapped = index;
        } else {
            h.flushed = index;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, since: u64) -> WatchedKey {
        WatchedKey {
            key: key.as_bytes().to_vec(),
            since,
            existed: true,
            expired: false,
        }
    }

    #[test]
    fn a_key_modified_after_it_was_watched_is_dirty() {
        let mut h = History::default();
        h.touch(5, b"a", true);
        h.touch(9, b"b", true);
        assert!(!h.modified(&w("a", 5)));
        assert!(h.modified(&w("a", 4)));
        assert!(h.modified(&w("b", 8)));
        assert!(!h.modified(&w("c", 0)));
    }

    #[test]
    fn flushes_touch_keys_that_existed_and_swaps_every_key() {
        let mut h = History {
            flushed: 7,
            ..History::default()
        };
        assert!(h.modified(&w("a", 6)));
        assert!(!h.modified(&WatchedKey {
            existed: false,
            ..w("a", 6)
        }));
        assert!(!h.modified(&w("a", 7)));
        h.swapped = 10;
        assert!(h.modified(&WatchedKey {
            existed: false,
            ..w("a", 9)
        }));
    }

    #[test]
    fn a_key_expired_when_watched_is_not_modified_by_its_deletion() {
        let mut h = History::default();
        let expired = WatchedKey {
            expired: true,
            ..w("a", 3)
        };
        h.touch(4, b"a", false);
        assert!(!h.modified(&expired));
        assert!(h.modified(&w("a", 3)));
        h.touch(6, b"a", true);
        h.touch(8, b"a", false);
        assert!(h.modified(&expired));
    }

    #[test]
    fn trimming_raises_the_floor_and_old_watches_are_dirty() {
        let mut h = History::default();
        for i in 1..=10 {
            h.touch(i, b"hot", true);
            h.touch(i, format!("k{i}").as_bytes(), true);
            h.trim(6);
        }
        assert_eq!(h.len, 6);
        assert_eq!(h.floor, 7);
        assert!(h.modified(&w("k1", 6)));
        assert!(!h.modified(&w("k1", 7)));
        assert!(h.modified(&w("hot", 9)));
        assert!(!h.last.contains_key(b"k7".as_slice()));
        assert!(h.last.contains_key(b"k8".as_slice()));
    }

    #[test]
    fn history_round_trips_exactly() {
        let mut h = History::starting_at(2);
        h.flushed = 3;
        h.swapped = 1;
        h.touch(4, b"a", false);
        h.touch(4, b"a", true);
        h.touch(4, b"b\0", true);
        h.touch(6, b"a", false);
        let back = History::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert!(History::decode(&h.encode()[..5]).is_err());
        assert_eq!(
            History::decode(&History::starting_at(9).encode()).unwrap(),
            History::starting_at(9)
        );
    }
}
