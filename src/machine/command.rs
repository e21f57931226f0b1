//! Running one command of an entry, or a read, under the machine's rules:
//! at the entry's time, with its keys' expiry decided by that time, and
//! with random choices drawn from the entry's seed.

use redis_module::raw;

use super::{expiry, pending, protocol, pubsub, random, script, script_cache, stream, ttl, Moment};
use crate::ffi::{self, CallReply, KeyExpiry, RedisClient};

type Ctx = *mut raw::RedisModuleCtx;

/// What a command answered.
pub enum Outcome {
    Reply(CallReply),
    Integer(i64),
    Error(String),
    /// A bulk string, or nil.
    Bulk(Option<Vec<u8>>),
    /// An array of bulk strings.
    Strings(Vec<Vec<u8>>),
    /// A complete scan: cursor 0 and these elements.
    ScanPage(Vec<Vec<u8>>),
    /// A set of bulk strings (SMEMBERS, SINTER, ...): a RESP3 set, an
    /// array in RESP2.
    Set(Vec<Vec<u8>>),
    /// Field-value pairs (HGETALL): a RESP3 map, a flat array in RESP2.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
    /// An array of integers (SCRIPT EXISTS from the script cache).
    Integers(Vec<i64>),
    /// An array of answers (XAUTOCLAIM's, XPENDING's built here).
    Array(Vec<Outcome>),
    /// A reply read and rewritten (XINFO STREAM FULL's delivery times).
    Value(ffi::Value),
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
            Outcome::Bulk(Some(b)) => ffi::reply_bulk(ctx, b),
            Outcome::Bulk(None) => ffi::reply_null(ctx),
            Outcome::Strings(items) => ffi::reply_bulks(ctx, items),
            Outcome::ScanPage(items) => {
                ffi::reply_array(ctx, 2);
                ffi::reply_bulk(ctx, b"0");
                ffi::reply_bulks(ctx, items);
            }
            Outcome::Set(items) => {
                ffi::reply_set(ctx, items.len());
                for i in items {
                    ffi::reply_bulk(ctx, i);
                }
            }
            Outcome::Map(pairs) => {
                ffi::reply_map(ctx, pairs.len());
                for (f, v) in pairs {
                    ffi::reply_bulk(ctx, f);
                    ffi::reply_bulk(ctx, v);
                }
            }
            Outcome::Integers(ns) => {
                ffi::reply_array(ctx, ns.len());
                for n in ns {
                    ffi::reply_integer(ctx, *n);
                }
            }
            Outcome::Array(items) => {
                ffi::reply_array(ctx, items.len());
                items.iter().for_each(|o| o.write(ctx));
            }
            Outcome::Value(v) => v.write(ctx),
        }
    }

    /// Answers a blocked client with it.
    pub fn answer(self, client: RedisClient) {
        match self {
            Outcome::Reply(r) => client.reply_call(r),
            Outcome::Error(text) => client.reply_error_text(&text),
            other => client.reply_with(move |ctx| other.write(ctx)),
        }
    }
}

/// Runs one command of an entry at moment `m` (None for an entry written
/// before entries were timed, run as it was then).
pub fn run_in_entry(ctx: Ctx, argv: Vec<Vec<u8>>, m: Option<Moment>) -> Outcome {
    // EVALSHA from the replicated script cache; EVAL and SCRIPT into it.
    script_cache::in_entry(ctx, argv, |argv| match m {
        None => protocol::call(ctx, &argv).into(),
        Some(m) => super::at(m, || run_at(ctx, argv, m)),
    })
}

/// One command at moment `m` (also each command a script runs).
pub fn run_at(ctx: Ctx, argv: Vec<Vec<u8>>, m: Moment) -> Outcome {
    let now = m.time;
    if m.in_log {
        expiry::expire_keys_of(ctx, &argv, now);
        if expiry::reads_the_keyspace(&argv) {
            expiry::expire_all_due(ctx, now);
        }
    }
    if let Some(q) = ttl::TtlQuery::of(&argv) {
        return ttl_answer(ctx, q, &argv[1], now);
    }
    if let Some(outcome) = random::run(ctx, &argv, m) {
        return outcome;
    }
    if let Some(outcome) = pubsub::replayed(&argv) {
        return outcome;
    }
    if script::is_script(&argv) {
        script::seed_lua(ctx, m);
    }
    if let Some(outcome) = pending::read(ctx, &argv, now) {
        return outcome;
    }
    if let Some(outcome) = pending::xautoclaim(ctx, &argv, now) {
        return outcome;
    }
    let argv = stream::xadd_at(ctx, &argv, now)
        .or_else(|| pending::xclaim(ctx, &argv, now))
        .unwrap_or(argv);
    let rw = ttl::rewrite(argv, now);
    let outcome = if m.in_log && script::is_script(&rw.argv) {
        script::without_memory_check(ctx, || protocol::call(ctx, &rw.argv)).into()
    } else {
        protocol::call(ctx, &rw.argv).into()
    };
    if let Outcome::Reply(r) = &outcome {
        // XREADGROUP's deliveries get the entry's time.
        pending::restamp_deliveries(ctx, &rw.argv, r, now);
    }
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
    let resolved;
    let argv = match script_cache::resolve(argv) {
        Some(script_cache::Resolved::Answer(outcome)) => return Some(outcome),
        Some(script_cache::Resolved::Run(eval)) => {
            resolved = eval;
            &resolved[..]
        }
        None => argv,
    };
    if expiry::reads_an_expired_key(ctx, argv, now) {
        return None;
    }
    if expiry::reads_the_keyspace(argv) && expiry::any_due(now) {
        // KEYS, SCAN, DBSIZE, RANDOMKEY would count keys whose time has
        // come: through the log, behind their deletion.
        return None;
    }
    if let Some(q) = ttl::TtlQuery::of(argv) {
        return Some(ttl_answer(ctx, q, &argv[1], now));
    }
    if let Some(outcome) = pending::read(ctx, argv, now) {
        return Some(outcome);
    }
    if script::is_script(argv) {
        // A read-only script: its commands see the same time rules.
        let m = Moment {
            time: now,
            seed: random::mix(now as u64),
            in_log: false,
        };
        return Some(super::at(m, || protocol::call(ctx, argv).into()));
    }
    Some(protocol::call(ctx, argv).into())
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME from the logical expiry time.
fn ttl_answer(ctx: Ctx, q: ttl::TtlQuery, key: &[u8], now: i64) -> Outcome {
    Outcome::Integer(match ffi::key_expiry(ctx, key) {
        KeyExpiry::Missing => -2,
        KeyExpiry::Persistent => q.answer(None, now),
        KeyExpiry::At(t) => q.answer(Some(t), now),
    })
}
