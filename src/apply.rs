//! Applying committed entries and confirmed reads to the Redis dataset.
//!
//! The Raft thread pushes batches into one queue; a single one-shot
//! event-loop callback drains it on Redis's main thread (coalesced: one
//! callback however many batches arrived meanwhile), runs each command with
//! RM_Call and answers the waiting client with the command's own reply.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;

use crate::config;
use crate::entry::Payload;
use crate::ffi::{self, CallContext, RedisClient};
use crate::node::{Applier, ApplyItem};

static QUEUE: Mutex<VecDeque<ApplyItem<RedisClient>>> = Mutex::new(VecDeque::new());
static SCHEDULED: AtomicBool = AtomicBool::new(false);
static CALL_CTX: OnceLock<CallContext> = OnceLock::new();
/// Index and term of the last entry applied to the dataset.
pub static APPLIED_INDEX: AtomicU64 = AtomicU64::new(0);
pub static APPLIED_TERM: AtomicU64 = AtomicU64::new(0);
/// Set once the dataset has been checked at the first apply after start.
static DATASET_CHECKED: AtomicBool = AtomicBool::new(false);

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
}

fn schedule() {
    if !SCHEDULED.swap(true, Ordering::AcqRel) && !ffi::run_on_main_thread(drain, ptr::null_mut()) {
        SCHEDULED.store(false, Ordering::Release);
        crate::logging::warning("could not schedule the apply callback");
    }
}

/// Runs on the main thread.
extern "C" fn drain(_: *mut c_void) {
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
    if !DATASET_CHECKED.swap(true, Ordering::AcqRel) {
        replace_unreplicated_dataset(ctx);
    }
    for item in items {
        match item {
            ApplyItem::Entry {
                index,
                term,
                payload,
                client,
            } => {
                if let Some(Payload::Command(argv)) = payload {
                    let result = ffi::call(ctx, &argv);
                    if let Some(c) = client {
                        answer(c, result);
                    }
                } else if let Some(c) = client {
                    c.reply_with(|ctx| ffi::reply_simple(ctx, "OK"));
                }
                APPLIED_INDEX.store(index, Ordering::Release);
                APPLIED_TERM.store(term, Ordering::Release);
            }
            ApplyItem::Reads { requests } => {
                for (client, argv) in requests {
                    answer(client, ffi::call(ctx, &argv));
                }
            }
        }
    }
}

fn answer(client: RedisClient, result: Result<ffi::CallReply, String>) {
    match result {
        Ok(reply) => client.reply_call(&reply),
        Err(text) => client.reply_error_text(&text),
    }
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

/// Runs a read right now (quorum-reads no, on a leader that has applied an
/// entry of its term).
pub fn read_now(argv: &[Vec<u8>]) -> Result<ffi::CallReply, String> {
    ffi::call(call_ctx(), argv)
}
