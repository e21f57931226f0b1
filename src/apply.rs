//! Applying committed entries and confirmed reads to the Redis dataset.
//!
//! The Raft thread pushes batches into one queue; a single one-shot
//! event-loop callback drains it on Redis's main thread (coalesced: one
//! callback however many batches arrived meanwhile), runs each command with
//! RM_Call and answers the waiting client with the command's own reply.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;

use crate::config;
use crate::entry::Payload;
use crate::ffi::{self, CallContext, RedisClient};
use crate::machine::command::{self, Outcome};
use crate::machine::{expiry, protocol, Moment};
use crate::node::{Applier, ApplyItem, ConfUpdate};
use crate::storage::Membership;

static QUEUE: Mutex<VecDeque<ApplyItem<RedisClient>>> = Mutex::new(VecDeque::new());
static SCHEDULED: AtomicBool = AtomicBool::new(false);
static CALL_CTX: OnceLock<CallContext> = OnceLock::new();
/// Index and term of the last entry applied to the dataset.
pub static APPLIED_INDEX: AtomicU64 = AtomicU64::new(0);
pub static APPLIED_TERM: AtomicU64 = AtomicU64::new(0);
/// The time of the last timed entry applied (Unix ms): reads the leader
/// serves never use an earlier time.
static APPLIED_TIME_MS: AtomicI64 = AtomicI64::new(0);

pub fn applied_time_ms() -> i64 {
    APPLIED_TIME_MS.load(Ordering::Acquire)
}
/// Set once the dataset has been checked at the first apply after start.
static DATASET_CHECKED: AtomicBool = AtomicBool::new(false);
/// Membership as of APPLIED_INDEX (None: the empty one, before any
/// entry). Main thread only, so a fork child can read it without fear of a
/// lock held by another thread.
static APPLIED_MEMBERSHIP: Mutex<Option<Membership>> = Mutex::new(None);
/// The membership at APPLIED_INDEX is not known exactly (replaying
/// superseded changes at start-up): no snapshot can be taken now.
static MEMBERSHIP_UNKNOWN: AtomicBool = AtomicBool::new(false);
/// The cluster's dbid, as the dataset records it (main thread only).
static DBID: Mutex<String> = Mutex::new(String::new());
/// Retry pending while snapshot-disable-load holds a snapshot back.
static RETRY_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// The applied state a snapshot of the dataset now would carry; None when
/// it cannot be one (nothing applied, or membership not known exactly).
pub fn applied_meta() -> Option<crate::snapshot::RdbMeta> {
    let index = APPLIED_INDEX.load(Ordering::Acquire);
    if index == 0 {
        return None;
    }
    if MEMBERSHIP_UNKNOWN.load(Ordering::Acquire) {
        return None;
    }
    let membership = APPLIED_MEMBERSHIP.lock().clone().unwrap_or_default();
    Some(crate::snapshot::RdbMeta {
        index,
        term: APPLIED_TERM.load(Ordering::Acquire),
        dbid: DBID.lock().clone(),
        membership,
    })
}

/// At start, after the dataset was loaded from a snapshot (main thread).
pub fn resume_from_snapshot(meta: &crate::snapshot::RdbMeta) {
    APPLIED_INDEX.store(meta.index, Ordering::Release);
    APPLIED_TERM.store(meta.term, Ordering::Release);
    set_membership(Some(meta.membership.clone()));
    *DBID.lock() = meta.dbid.clone();
    DATASET_CHECKED.store(true, Ordering::Release);
    expiry::rebuild_index(call_ctx());
    crate::machine::script_cache::adopt_loaded();
}

/// Some: the membership from now on; None: not known exactly.
fn set_membership(m: Option<Membership>) {
    MEMBERSHIP_UNKNOWN.store(m.is_none(), Ordering::Release);
    if m.is_some() {
        *APPLIED_MEMBERSHIP.lock() = m;
    }
}

pub fn set_dbid(dbid: &str) {
    *DBID.lock() = dbid.to_string();
}

/// Called once at load with the module's context.
pub fn init(ctx: *mut redis_module::raw::RedisModuleCtx) {
    let _ = CALL_CTX.set(CallContext::new(ctx));
}

pub fn call_ctx() -> *mut redis_module::raw::RedisModuleCtx {
    CALL_CTX.get().map_or(ptr::null_mut(), CallContext::ptr)
}

/// The Raft thread's [`Applier`]: queue and wake the main thread.
pub struct RedisApplier;

impl Applier<RedisClient> for RedisApplier {
    fn apply(&mut self, items: Vec<ApplyItem<RedisClient>>) {
        QUEUE.lock().extend(items);
        schedule();
    }

    fn persist_received_snapshot(&mut self, index: u64, term: u64) -> Result<(), String> {
        crate::snapshot::persist_received(index, term)
    }
}

fn schedule() {
    if !SCHEDULED.swap(true, Ordering::AcqRel) && !ffi::run_on_main_thread(drain, ptr::null_mut()) {
        SCHEDULED.store(false, Ordering::Release);
        crate::logging::warning("could not schedule the apply callback");
    }
}

/// Runs on the main thread.
extern "C" fn drain(_: *mut c_void) {
    crate::guard::catch("applying committed entries", drain_queue, |_| ());
}

fn drain_queue() {
    // Clear first: a push after this point schedules another callback.
    SCHEDULED.store(false, Ordering::Release);
    if config::LOG_DISABLE_APPLY.get() {
        return; // test knob: committed entries wait; resumed on the next push
    }
    let delay = config::get(&config::LOG_DELAY_APPLY);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay as u64));
    }
    let items: Vec<_> = QUEUE.lock().drain(..).collect();
    if items.is_empty() {
        return;
    }
    let ctx = call_ctx();
    if DBID.lock().is_empty() {
        if let Some(n) = crate::driver::node() {
            set_dbid(&n.dbid);
        }
    }
    if !DATASET_CHECKED.swap(true, Ordering::AcqRel) {
        replace_unreplicated_dataset(ctx);
    }
    let mut items = items.into_iter();
    while let Some(item) = items.next() {
        if let Some(why) = crate::driver::failed() {
            // Fail-stopped: nothing more reaches the dataset.
            refuse(item, &why);
            continue;
        }
        match item {
            ApplyItem::Snapshot {
                index,
                term,
                membership,
            } => {
                if config::SNAPSHOT_DISABLE_LOAD.get() {
                    // Test knob: hold the snapshot and what follows it.
                    let mut q = QUEUE.lock();
                    let rest: Vec<_> = items.collect();
                    for it in rest.into_iter().rev() {
                        q.push_front(it);
                    }
                    q.push_front(ApplyItem::Snapshot {
                        index,
                        term,
                        membership,
                    });
                    drop(q);
                    retry_later();
                    return;
                }
                load_snapshot(ctx, index, term, membership);
            }
            ApplyItem::Entry { index, client, .. }
                if index <= APPLIED_INDEX.load(Ordering::Acquire) =>
            {
                // Already in the dataset through a snapshot loaded meanwhile.
                if let Some(c) = client {
                    c.reply_error_text("TIMEOUT replaced by a snapshot; the outcome is unknown");
                }
            }
            ApplyItem::Entry {
                index,
                term,
                time_ms,
                payload,
                client,
                conf,
            } => {
                match conf {
                    Some(ConfUpdate::Known(m)) => set_membership(Some(m)),
                    Some(ConfUpdate::Superseded) => set_membership(None),
                    None => {}
                }
                let time = time_ms.map(|t| t as i64);
                if let Some(t) = time {
                    APPLIED_TIME_MS.fetch_max(t, Ordering::AcqRel);
                }
                // The client's reply in its protocol (RESP2 or RESP3).
                let resp3 = client.as_ref().is_some_and(RedisClient::resp3);
                protocol::with(resp3, || {
                    crate::machine::watch::applying(index, || {
                        apply_payload(ctx, index, time, payload, client)
                    })
                });
                APPLIED_INDEX.store(index, Ordering::Release);
                APPLIED_TERM.store(term, Ordering::Release);
                crate::failpoint::hit("apply-middle");
            }
            ApplyItem::Reads { requests } => {
                let now = read_time();
                for (client, argv) in requests {
                    match protocol::with(client.resp3(), || command::run_read(ctx, &argv, now)) {
                        Some(outcome) => outcome.answer(client),
                        None => through_the_log(argv, client),
                    }
                }
            }
        }
    }
    // Keys that got elements serve the clients waiting on them.
    crate::blocking::after_apply();
}

/// Replaces the dataset with a snapshot received from the leader.
fn load_snapshot(
    ctx: *mut redis_module::raw::RedisModuleCtx,
    index: u64,
    term: u64,
    membership: Membership,
) {
    let started = std::time::Instant::now();
    crate::machine::script_cache::forget_loaded();
    match crate::snapshot::load_into_dataset(ctx) {
        Ok(meta) => {
            crate::machine::script_cache::adopt_loaded();
            if meta.index < index {
                fail_node(format!(
                    "loaded snapshot holds index {} but {index} was expected",
                    meta.index
                ));
                return;
            }
            APPLIED_INDEX.store(meta.index, Ordering::Release);
            APPLIED_TERM.store(meta.term, Ordering::Release);
            set_membership(Some(if meta.index == index {
                membership
            } else {
                meta.membership
            }));
            DATASET_CHECKED.store(true, Ordering::Release);
            crate::snapshot::RECEIVED.fetch_add(1, Ordering::Relaxed);
            expiry::rebuild_index(ctx);
            crate::logging::notice(&format!(
                "loaded the snapshot at index {index} (term {term}) in {} ms",
                started.elapsed().as_millis()
            ));
        }
        Err(e) => fail_node(format!("loading the snapshot at index {index} failed: {e}")),
    }
}

/// The dataset can no longer be trusted: fail-stop, loudly.
fn fail_node(msg: String) {
    crate::driver::fail_stop(msg);
}

/// Answers the clients of an item that will not be applied.
fn refuse(item: ApplyItem<RedisClient>, why: &str) {
    let text = format!("ERR this node failed and stopped ({why}); the outcome is unknown");
    match item {
        ApplyItem::Entry {
            client: Some(c), ..
        } => c.reply_error_text(&text),
        ApplyItem::Reads { requests } => {
            for (c, _) in requests {
                c.reply_error_text(&text);
            }
        }
        _ => {}
    }
}

fn retry_later() {
    if RETRY_SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(100));
        RETRY_SCHEDULED.store(false, Ordering::Release);
        schedule();
    });
}

/// The time a read served now runs at: this node's clock, but never
/// before the last entry applied.
fn read_time() -> i64 {
    crate::machine::now_ms().max(applied_time_ms())
}

/// A read that would see a key whose time has come is proposed as an
/// entry: applying it deletes the key first, on every node.
pub fn through_the_log(argv: Vec<Vec<u8>>, client: RedisClient) {
    let Some(n) = crate::driver::node() else {
        client.reply_error_text("TRYAGAIN the node is stopping");
        return;
    };
    if expiry::reads_the_keyspace(&argv) {
        // The deletion of every key whose time has come goes first.
        let due = expiry::take_due(call_ctx(), read_time());
        for keys in due.chunks(1000) {
            n.send(crate::node::Request::Expire {
                keys: keys.to_vec(),
            });
        }
    }
    n.send(crate::node::Request::Write { argv, client });
}

/// The dataset is the Raft log applied from its start: keys that Redis
/// loaded from an old RDB or that were written before this node joined
/// would be applied twice or never replicated, so they are dropped once,
/// with a warning, before the first entry is applied.
fn replace_unreplicated_dataset(ctx: *mut redis_module::raw::RedisModuleCtx) {
    let size = ffi::call(ctx, &[b"DBSIZE".to_vec()])
        .ok()
        .and_then(|r| r.as_integer())
        .unwrap_or(0);
    if size > 0 && APPLIED_INDEX.load(Ordering::Acquire) == 0 {
        crate::logging::warning(&format!(
            "dropping {size} keys that are not from the Raft log; the dataset is rebuilt from the log"
        ));
        let _ = ffi::call(ctx, &[b"FLUSHALL".to_vec()]);
    }
}

/// Runs a read right now (quorum-reads no, or a lease, on a leader that has
/// applied an entry of its term). None: it must go through the log (it
/// would see a key whose time has come).
pub fn read_now(argv: &[Vec<u8>]) -> Option<Outcome> {
    command::run_read(call_ctx(), argv, read_time())
}

/// What one entry's payload does to the dataset, and its client's reply.
fn apply_payload(
    ctx: *mut redis_module::raw::RedisModuleCtx,
    index: u64,
    time: Option<i64>,
    payload: Option<Payload>,
    client: Option<RedisClient>,
) {
    match payload {
        Some(Payload::Rights(rights, inner)) => {
            // The script's commands are checked against these rights.
            crate::machine::script::with_rights(&rights, || {
                apply_payload(ctx, index, time, Some(*inner), client)
            })
        }
        Some(Payload::Watched(keys, inner)) => {
            // Decided from the dataset and the entry only: the same on
            // every node (`machine::watch`).
            let dirty = time.is_none_or(|t| crate::machine::watch::dirty(ctx, &keys, t));
            if !dirty {
                apply_payload(ctx, index, time, Some(*inner), client);
            } else if let Some(c) = client {
                c.reply_with(ffi::reply_null_array);
            }
        }
        Some(Payload::Command(argv)) => {
            let m = time.map(|t| Moment::of_entry(t, index, 0));
            let outcome = command::run_in_entry(ctx, argv, m);
            if let Some(c) = client {
                // A blocking command's entry goes back to its wait list.
                crate::blocking::answer(c, outcome);
            }
        }
        Some(Payload::Multi(cmds)) => {
            // One callback runs the whole block: nothing interleaves.
            let outcomes: Vec<Outcome> = cmds
                .into_iter()
                .enumerate()
                .map(|(i, argv)| {
                    let m = time.map(|t| Moment::of_entry(t, index, i));
                    command::run_in_entry(ctx, argv, m)
                })
                .collect();
            if let Some(c) = client {
                c.reply_with(move |ctx| {
                    ffi::reply_array(ctx, outcomes.len());
                    for o in &outcomes {
                        o.write(ctx);
                    }
                });
            }
        }
        Some(Payload::Expire(keys)) => {
            if let Some(t) = time {
                expiry::expire_due(ctx, &keys, t);
            }
            if let Some(c) = client {
                c.reply_with(|ctx| ffi::reply_simple(ctx, "OK"));
            }
        }
        None => {
            if let Some(c) = client {
                c.reply_with(|ctx| ffi::reply_simple(ctx, "OK"));
            }
        }
    }
}
