//! Blocking commands: BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN,
//! BZPOPMAX, BZMPOP, XREAD ... BLOCK and XREADGROUP ... BLOCK.
//!
//! Every pop is a log entry, so every node pops the same element; who waits
//! is the leader's business only (in memory, never in the dataset):
//!
//! - A client that comes runs its command through the log at once, on the
//!   keys nobody waits on yet. Applied with RM_Call, a blocking command
//!   never blocks: it pops, fails (WRONGTYPE, a bad timeout) or answers
//!   nil. Nil: the client waits on the leader, in each of its keys' queues.
//! - A write applied on the leader that touches a waited key (keyspace
//!   events) makes the leader propose, for the first waiters of that key,
//!   the same command narrowed to that key, as many as there are elements
//!   not already promised to an entry in the log. Applied, it pops for that
//!   client (answered with it), or finds nothing (someone else took it):
//!   the client waits on, in its place.
//! - Timeouts run on the leader's clock; they only decide when to answer
//!   nil. A client whose entry is in the log is answered by that entry.
//! - CLIENT UNBLOCK is routed here: a waiting client is answered at once
//!   (nil, or `-UNBLOCKED ...`); one whose entry is in the log, once it
//!   applies (then CLIENT UNBLOCK answers 0 if it popped, 1 if not).
//! - A leader change ends every wait with `-TRYAGAIN`: nothing was popped
//!   for those clients, and nothing is afterwards.
//! - A client that disconnects leaves the queues at once.
//! - XREAD ... BLOCK takes nothing: its first attempt runs through the log
//!   on all its keys (`$` becomes the stream's last ID at that point); then
//!   each entry added to a stream is read, on the leader, for every reader
//!   waiting there, from committed and applied data: no log entry.
//! - XREADGROUP ... BLOCK with `>` is a write (it moves the group's
//!   last-delivered ID and fills its pending entries list): its first
//!   attempt and every serving are log entries, the command without BLOCK.
//!   A stream that gets an entry after a group's last-delivered ID makes
//!   the leader propose it for that group's first waiting client, one
//!   entry per group at a time (it may take every new entry, up to its
//!   COUNT; the next waiter is tried once it applied). An entry that
//!   delivers nothing (another consumer took them) leaves the client in its
//!   place. As Redis 7.0 does, a waited key deleted or given another type
//!   ends the wait with `-UNBLOCKED the stream key no longer exists`, and a
//!   group destroyed with `-NOGROUP ...`, decided on the leader from
//!   applied data (nothing is delivered to the client); on Redis 7.2 and
//!   Valkey, which run a blocked command again, the command runs again in
//!   an entry and answers with its own error. With an ID other
//!   than `>` (the consumer's pending entries), Redis answers at once: the
//!   line runs through the log as it is.
//!
//! Inside MULTI (the module's own) a blocking command is queued like any
//! write and runs in the block's entry, without blocking, as in Redis.

pub mod spec;
pub mod waiters;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis_module::{raw, Context, RedisError, RedisResult, RedisValue};

use crate::driver;
use crate::ffi::{self, KeyKind, RedisClient};
use crate::intercept::Class;
use crate::machine::command::Outcome;
use crate::node::{Request, Role};
use spec::{Kind, Spec};
use waiters::{News, Peek, Returned, UnblockMode, Unblocked, Waiters};

/// The error a waiting client gets when the leader changes.
pub const LEADER_CHANGED: &str =
    "TRYAGAIN the Raft leader changed while this client waited; nothing was popped for it";

/// How often the leader checks its waiters' timeouts and its own role
/// while clients wait.
const CHECK_EVERY: Duration = Duration::from_millis(50);

struct State {
    waiters: Waiters<RedisClient>,
    /// The term the waiters wait in (None: nobody waits).
    term: Option<u64>,
    /// When the next check timer fires.
    timer_at: Option<Instant>,
}

thread_local! {
    /// The leader's wait lists (main thread only).
    static STATE: RefCell<State> = RefCell::new(State {
        waiters: Waiters::default(),
        term: None,
        timer_at: None,
    });
}

/// Clients in a wait, for INFO (`raft_blocked_clients`).
static WAITING: AtomicUsize = AtomicUsize::new(0);

pub fn waiting_count() -> usize {
    WAITING.load(Ordering::Relaxed)
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| {
        let mut st = s.borrow_mut();
        let r = f(&mut st);
        WAITING.store(st.waiters.len(), Ordering::Relaxed);
        r
    })
}

/// The class of a command this module handles, if it is one.
pub fn classify(name: &str, argv: &[&[u8]]) -> Option<Class> {
    if name == "xread" || name == "xreadgroup" {
        // Without BLOCK an ordinary read (XREAD) or write (XREADGROUP),
        // not this module's.
        return spec::xread_blocks(argv).then_some(Class::Blocking);
    }
    if spec::kind_of(name.as_bytes()).is_some() {
        return Some(Class::Blocking);
    }
    if name == "client"
        && argv
            .get(1)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"unblock"))
    {
        return Some(Class::Unblock);
    }
    None
}

/// At load: keyspace events and the error hook. Events of every type: a
/// stream overwritten by a value of another type (SET, SUNIONSTORE, ...)
/// or expired ends its consumer-group waits.
pub fn init(ctx: *mut raw::RedisModuleCtx) -> bool {
    ffi::set_tag_hook(entry_failed);
    let mask = (raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_STRING
        | raw::REDISMODULE_NOTIFY_LIST
        | raw::REDISMODULE_NOTIFY_SET
        | raw::REDISMODULE_NOTIFY_HASH
        | raw::REDISMODULE_NOTIFY_ZSET
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_STREAM) as std::os::raw::c_int;
    ffi::subscribe_events(ctx, mask, on_event)
}

/// Database 0 is flushed or swapped (no keyspace event per key): every
/// waited key may have changed.
pub fn database_emptied() {
    STATE.with(|s| {
        if let Ok(mut st) = s.try_borrow_mut() {
            st.waiters.touched_all();
        }
    });
}

unsafe extern "C" fn on_event(
    _ctx: *mut raw::RedisModuleCtx,
    _type: std::os::raw::c_int,
    _event: *const std::os::raw::c_char,
    key: *mut raw::RedisModuleString,
) -> std::os::raw::c_int {
    let anyone = || STATE.with(|s| s.try_borrow().map_or(true, |st| !st.waiters.is_empty()));
    if WAITING.load(Ordering::Relaxed) > 0 || anyone() {
        let key = ffi::bytes_of(key);
        STATE.with(|s| {
            if let Ok(mut st) = s.try_borrow_mut() {
                st.waiters.touched(&key);
            }
        });
    }
    raw::REDISMODULE_OK as std::os::raw::c_int
}

fn peek(key: &[u8]) -> Peek {
    match ffi::key_kind(crate::apply::call_ctx(), key) {
        KeyKind::Missing => Peek::Missing,
        KeyKind::List(n) => Peek::Holds(Kind::List, n),
        KeyKind::Zset(n) => Peek::Holds(Kind::Zset, n),
        KeyKind::Stream(n) => Peek::Holds(Kind::Stream, n),
        KeyKind::Other => Peek::Other,
    }
}

/// This node's role now: Some(term) while it leads and serves.
fn leading() -> Option<u64> {
    let n = driver::node()?;
    let st = n.status.read();
    (st.role == Role::Leader && st.failed.is_none() && !st.removed).then_some(st.term)
}

/// Ends every wait if the node no longer leads in the waiters' term.
fn check_leadership(st: &mut State) {
    let now = leading();
    if st.term.is_some() && st.term != now {
        let (waiting, callers) = st.waiters.clear();
        for mut c in waiting {
            c.set_tag(0);
            c.reply_error_text(LEADER_CHANGED);
        }
        for c in callers {
            c.reply_with(|ctx| ffi::reply_integer(ctx, 0));
        }
        st.term = None;
    }
    if !st.waiters.is_empty() {
        st.term = now;
    }
}

/// Proposes the entries that serve waiters now.
fn pump(st: &mut State) {
    check_leadership(st);
    if st.waiters.is_empty() {
        return;
    }
    st.waiters.rerun_ended = ffi::server_version() >= 0x0007_0200;
    let (proposals, ended) = st.waiters.serve(peek, group_news);
    for (mut c, why) in ended {
        c.set_tag(0);
        c.reply_error_text(why.error_text());
    }
    if proposals.is_empty() {
        return;
    }
    let Some(n) = driver::node() else { return };
    for (id, argv, mut client) in proposals {
        client.set_tag(id);
        if st.waiters.reads(id) {
            // XREAD: a read of committed, applied data on the leader;
            // nothing to put in the log. A key whose time has come (None)
            // is not read: its deletion comes through the log.
            let outcome = crate::apply::read_now(&argv);
            let found_nothing = outcome.as_ref().is_none_or(is_nil);
            if let (Some((mut c, _)), Some(o)) = (settle(st, client, found_nothing), outcome) {
                c.set_tag(0);
                o.answer(c);
            }
            continue;
        }
        n.send(Request::Write { argv, client });
    }
}

fn is_nil(o: &Outcome) -> bool {
    matches!(o, Outcome::Reply(r) if r.is_null())
}

/// After a batch of entries applied: serve the keys that got data.
pub fn after_apply() {
    with(|st| {
        if !st.waiters.is_empty() || st.term.is_some() {
            pump(st);
        }
    });
}

/// A blocking command sent to this node (not inside MULTI).
pub fn command(ctx: &Context, argv: Vec<Vec<u8>>) -> RedisResult {
    let n = crate::commands::running_node()?;
    crate::commands::check_serving(&n)?;
    let (role, leader_err) = {
        let st = n.status.read();
        (st.role, st.not_leader_error())
    };
    if role != Role::Leader {
        // Clients wait on the leader only (never through follower-proxy).
        return Err(RedisError::String(leader_err.to_string()));
    }
    if crate::commands::over_maxmemory(&argv) {
        return Err(RedisError::Str(crate::commands::OOM));
    }
    let client = RedisClient::block(ctx.ctx).map_err(|e| RedisError::String(e.to_string()))?;
    let Some(spec) = Spec::parse(&argv) else {
        // Not a line we wait for: Redis answers it (its own error).
        n.send(Request::Write { argv, client });
        return Ok(RedisValue::NoReply);
    };
    client.on_disconnect(on_disconnect);
    let client_id = ffi::client_id(ctx.ctx);
    let deadline =
        (spec.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(spec.timeout_ms));
    let keys = spec.keys.clone();
    with(|st| {
        check_leadership(st);
        let Some(term) = leading() else {
            // It stopped leading since the check above: nothing ran.
            client.reply_error_text(&leader_err.to_string());
            return;
        };
        st.term = Some(term);
        let attempt = st
            .waiters
            .arrive(client_id, spec, argv, deadline, client, peek);
        match attempt {
            Some((id, line, mut c)) => {
                c.set_tag(id);
                n.send(Request::Write {
                    argv: line,
                    client: c,
                });
            }
            None => {
                // Only waits: its keys may hold elements not yet promised.
                for k in &keys {
                    st.waiters.touched(k);
                }
                pump(st);
            }
        }
        arm_timer(st, deadline);
    });
    Ok(RedisValue::NoReply)
}

fn arm_timer(st: &mut State, deadline: Option<Instant>) {
    if st.waiters.is_empty() {
        return;
    }
    let now = Instant::now();
    let at = match deadline.or_else(|| st.waiters.next_deadline()) {
        Some(d) => d.min(now + CHECK_EVERY),
        None => now + CHECK_EVERY,
    };
    if st.timer_at.is_some_and(|t| t <= at) {
        return;
    }
    st.timer_at = Some(at);
    let ms = at.saturating_duration_since(now).as_millis() as i64;
    ffi::start_timer(crate::apply::call_ctx(), ms.max(1), on_timer);
}

unsafe extern "C" fn on_timer(_ctx: *mut raw::RedisModuleCtx, _data: *mut std::ffi::c_void) {
    crate::guard::catch("the blocking commands' timer", tick, |_| ());
}

fn tick() {
    with(|st| {
        st.timer_at = None;
        check_leadership(st);
        for c in st.waiters.expire(Instant::now()) {
            answer_timeout(c);
        }
        pump(st);
        arm_timer(st, None);
    });
}

/// Redis's reply to a blocking command whose timeout came: a null array
/// (for every one of these commands, BLMOVE included).
fn answer_timeout(mut c: RedisClient) {
    c.set_tag(0);
    c.reply_with(ffi::reply_null_array);
}

fn answer_unblocked(c: RedisClient, mode: UnblockMode) {
    match mode {
        UnblockMode::Timeout => answer_timeout(c),
        UnblockMode::Error => {
            let mut c = c;
            c.set_tag(0);
            c.reply_error_text("UNBLOCKED client unblocked via CLIENT UNBLOCK");
        }
    }
}

/// The reply of an applied command entry to its client: a blocking
/// command's entry goes back to its wait list; any other is answered.
pub fn answer(client: RedisClient, outcome: Outcome) {
    if client.tag() == 0 {
        outcome.answer(client);
        return;
    }
    let found_nothing = is_nil(&outcome);
    let done = with(|st| {
        let done = settle(st, client, found_nothing);
        arm_timer(st, None);
        done
    });
    if let Some((mut c, ours)) = done {
        c.set_tag(0);
        if !ours && found_nothing {
            // Its wait ended with a leader change: it was told or is told
            // now that nothing was popped for it.
            c.reply_error_text(LEADER_CHANGED);
        } else {
            outcome.answer(c);
        }
    }
}

/// Takes the outcome of waiter `client.tag()`'s entry (or read). Returns
/// the client to answer with that outcome (true: one of ours; false: its
/// wait had already ended), or None when it waits on or was answered here.
fn settle(st: &mut State, client: RedisClient, found_nothing: bool) -> Option<(RedisClient, bool)> {
    let tag = client.tag();
    let reads = st.waiters.reads(tag);
    let (ret, client) = st
        .waiters
        .returned(tag, !found_nothing, client, Instant::now());
    match ret {
        Returned::Answer { unblock_caller } => {
            if let Some(c) = unblock_caller {
                c.reply_with(|ctx| ffi::reply_integer(ctx, 0));
            }
            client.map(|c| (c, true))
        }
        Returned::Waits => {
            if reads {
                // XREAD's `$`: the last IDs at the moment it waits.
                st.waiters.fix_last_ids(tag, last_id);
            }
            None
        }
        Returned::Ends(unblock) => {
            if let Some(c) = client {
                match unblock {
                    Some((mode, caller)) => {
                        answer_unblocked(c, mode);
                        if let Some(caller) = caller {
                            caller.reply_with(|ctx| ffi::reply_integer(ctx, 1));
                        }
                    }
                    None => answer_timeout(c),
                }
            }
            None
        }
        Returned::Unknown => client.map(|c| (c, false)),
    }
}

/// Whether consumer group `group` of stream `key` has an entry after its
/// last-delivered ID (what XREADGROUP's `>` would deliver), from the
/// leader's applied data.
fn group_news(key: &[u8], group: &[u8]) -> News {
    let ctx = crate::apply::call_ctx();
    let argv = [b"XINFO".to_vec(), b"GROUPS".to_vec(), key.to_vec()];
    let Some(groups) = ffi::call(ctx, &argv).ok().and_then(|r| r.to_value()) else {
        return News::No;
    };
    fn field<'a>(g: &'a ffi::Value, name: &[u8]) -> Option<&'a [u8]> {
        g.field(name).and_then(ffi::Value::bytes)
    }
    let Some(last) = groups
        .items()
        .unwrap_or_default()
        .iter()
        .find(|g| field(g, b"name") == Some(group))
        .and_then(|g| field(g, b"last-delivered-id"))
    else {
        return News::NoGroup;
    };
    let mut after = b"(".to_vec();
    after.extend_from_slice(last);
    let argv = [
        b"XRANGE".to_vec(),
        key.to_vec(),
        after,
        b"+".to_vec(),
        b"COUNT".to_vec(),
        b"1".to_vec(),
    ];
    // An error (the last possible ID delivered): nothing can come after.
    let entries = ffi::call(ctx, &argv).ok().and_then(|r| r.to_value());
    match entries.as_ref().and_then(ffi::Value::items) {
        Some(entries) if !entries.is_empty() => News::Yes,
        _ => News::No,
    }
}

/// A stream's last generated ID ("0-0" for no stream), as XREAD's `$`
/// means it when the client blocks.
fn last_id(key: &[u8]) -> Vec<u8> {
    let argv = [b"XINFO".to_vec(), b"STREAM".to_vec(), key.to_vec()];
    ffi::call(crate::apply::call_ctx(), &argv)
        .ok()
        .and_then(|r| r.to_value())
        .and_then(|info| Some(info.field(b"last-generated-id")?.bytes()?.to_vec()))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| b"0-0".to_vec())
}

/// The tag hook: the entry of waiter `id` was refused or lost by the log,
/// and its client answered with that error.
fn entry_failed(id: u64) {
    STATE.with(|s| {
        let Ok(mut st) = s.try_borrow_mut() else {
            return;
        };
        if let Some(caller) = st.waiters.failed(id) {
            caller.reply_with(|ctx| ffi::reply_integer(ctx, 0));
        }
        WAITING.store(st.waiters.len(), Ordering::Relaxed);
        if !st.waiters.is_empty() {
            // Serve what it left from the timer, outside this callback.
            st.timer_at = None;
            arm_timer(&mut st, Some(Instant::now()));
        }
    });
}

unsafe extern "C" fn on_disconnect(
    ctx: *mut raw::RedisModuleCtx,
    _bc: *mut raw::RedisModuleBlockedClient,
) {
    let id = ffi::client_id(ctx);
    crate::guard::catch(
        "a blocked client's disconnect",
        || {
            let released = STATE.with(|s| {
                let mut st = s.try_borrow_mut().ok()?;
                let c = st.waiters.gone(id);
                WAITING.store(st.waiters.len(), Ordering::Relaxed);
                c
            });
            if let Some(c) = released {
                c.release();
            }
        },
        |_| (),
    );
}

/// CLIENT UNBLOCK <id> [TIMEOUT|ERROR]: a client of ours is unblocked here;
/// anything else is Redis's.
pub fn client_unblock(ctx: &Context, argv: &[Vec<u8>]) -> RedisResult {
    let parsed = match argv {
        [_, _, id] => Some((id, UnblockMode::Timeout)),
        [_, _, id, m] if m.eq_ignore_ascii_case(b"timeout") => Some((id, UnblockMode::Timeout)),
        [_, _, id, m] if m.eq_ignore_ascii_case(b"error") => Some((id, UnblockMode::Error)),
        _ => None,
    };
    let Some((target, mode)) = parsed.and_then(|(id, mode)| {
        let id: u64 = std::str::from_utf8(id).ok()?.parse().ok()?;
        Some((id, mode))
    }) else {
        return redis_client_unblock(ctx, argv);
    };
    let outcome = with(|st| {
        st.waiters.unblock(target, mode, || {
            // Answered once the entry that may serve the target applies.
            RedisClient::block(ctx.ctx).ok()
        })
    });
    match outcome {
        Unblocked::Now(c, mode) => {
            answer_unblocked(c, mode);
            Ok(RedisValue::Integer(1))
        }
        Unblocked::Later(true) => Ok(RedisValue::NoReply),
        // Cannot wait for the entry here (a script): not unblocked now.
        Unblocked::Later(false) => Ok(RedisValue::Integer(0)),
        Unblocked::NotOurs => redis_client_unblock(ctx, argv),
    }
}

fn redis_client_unblock(ctx: &Context, argv: &[Vec<u8>]) -> RedisResult {
    match ffi::call(ctx.ctx, argv) {
        Ok(r) => {
            ffi::reply_call(ctx.ctx, &r);
            Ok(RedisValue::NoReply)
        }
        Err(e) => Err(RedisError::String(e)),
    }
}
