//! Running one command of an entry, or a read, under the machine's rules:
//! at the entry's time, with its keys' expiry decided by that time.

use redis_module::raw;

use super::{expiry, ttl};
use crate::ffi::{self, CallReply, KeyExpiry, RedisClient};

type Ctx = *mut raw::RedisModuleCtx;

/// What a command answered.
pub enum Outcome {
    Reply(CallReply),
    Integer(i64),
    Error(String),
}

impl From<Result<CallReply, String>> for Outcome {
    fn from(r: Result<CallReply, String>) -> Outcome {
        match r {
            Ok(reply) => Outcome::Reply(reply),
            Err(text) => Outcome::Error(text),
        }
    }
}

impl Outcome {
    /// Writes the answer into a reply context.
    pub fn write(&self, ctx: Ctx) {
        match self {
            Outcome::Reply(r) => ffi::reply_call(ctx, r),
            Outcome::Integer(n) => ffi::reply_integer(ctx, *n),
            Outcome::Error(text) => ffi::reply_error(ctx, text),
        }
    }

    /// Answers a blocked client with it.
    pub fn answer(self, client: RedisClient) {
        match self {
            Outcome::Reply(r) => client.reply_call(r),
            Outcome::Error(text) => client.reply_error_text(&text),
            Outcome::Integer(n) => client.reply_with(move |ctx| ffi::reply_integer(ctx, n)),
        }
    }
}

/// Runs one command of an entry whose time is `time` (Unix ms; None for an
/// entry written before entries were timed, run as it was then).
pub fn run_in_entry(ctx: Ctx, argv: Vec<Vec<u8>>, time: Option<i64>) -> Outcome {
    let Some(now) = time else {
        return ffi::call(ctx, &argv).into();
    };
    expiry::expire_keys_of(ctx, &argv, now);
    if let Some(q) = ttl::TtlQuery::of(&argv) {
        return ttl_answer(ctx, q, &argv[1], now);
    }
    let rw = ttl::rewrite(argv, now);
    let outcome = ffi::call(ctx, &rw.argv).into();
    if rw.expires_at.is_some_and(|at| at <= now) {
        // Given a time already past (EXPIRE k -1, SET k v PXAT <past>):
        // deleted at once, as Redis does.
        expiry::expire_due(ctx, &rw.argv[1..2], now);
    }
    outcome
}

/// Runs a read the leader serves at `now` (its clock, never before the
/// last applied entry's time). None: the read would see a key whose time
/// has come, and must go through the log, which deletes the key first.
pub fn run_read(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Option<Outcome> {
    if expiry::reads_an_expired_key(ctx, argv, now) {
        return None;
    }
    if let Some(q) = ttl::TtlQuery::of(argv) {
        return Some(ttl_answer(ctx, q, &argv[1], now));
    }
    Some(ffi::call(ctx, argv).into())
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME from the logical expiry time.
fn ttl_answer(ctx: Ctx, q: ttl::TtlQuery, key: &[u8], now: i64) -> Outcome {
    Outcome::Integer(match ffi::key_expiry(ctx, key) {
        KeyExpiry::Missing => -2,
        KeyExpiry::Persistent => q.answer(None, now),
        KeyExpiry::At(t) => q.answer(Some(t), now),
    })
}
