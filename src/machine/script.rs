//! Scripts under the machine's rules. A script an entry runs (EVAL) calls
//! Redis commands from Lua; each of them passes the command filter, which
//! sends it to `RAFT._SCRIPTW` / `RAFT._SCRIPTR` (write / read-only, so that
//! Redis's own script checks still apply). That command runs it as any
//! command of an entry: at the entry's time, its keys' expiry decided by
//! that time, TTL queries from logical times, TIME from the entry, random
//! choices from the entry's seed and hash-table orders sorted. Lua's own
//! math.random is seeded from the entry before the script runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use redis_module::raw;

use super::command::{self, Outcome};
use super::Moment;
use crate::entry::Rights;
use crate::ffi::{self, ModuleUser};

type Ctx = *mut raw::RedisModuleCtx;

pub const WRITE_CALL: &[u8] = b"RAFT._SCRIPTW";
pub const READ_CALL: &[u8] = b"RAFT._SCRIPTR";

thread_local! {
    /// Set while a script's command runs inside RAFT._SCRIPT*: the filter
    /// then leaves that command alone.
    static INNER: Cell<bool> = const { Cell::new(false) };
}

/// A module user built from an entry's rules; None if this server refused
/// a rule (then the script may run nothing: fail closed).
type BuiltUser = Rc<Option<ModuleUser>>;

thread_local! {
    /// The rights the running entry's scripts have (`Payload::Rights`):
    /// the user's name and the module user built from its rules.
    static RIGHTS: RefCell<Option<(Vec<u8>, BuiltUser)>> = const { RefCell::new(None) };
    /// Module users built from rules, reused across entries.
    static USERS: RefCell<HashMap<Rights, BuiltUser>> = RefCell::new(HashMap::new());
}

/// Runs `f` (an entry's command or block) with its scripts' commands
/// checked against `rights`, the same on every node.
pub fn with_rights<T>(rights: &Rights, f: impl FnOnce() -> T) -> T {
    let user = USERS.with(|u| {
        let mut u = u.borrow_mut();
        if u.len() > 256 {
            u.clear();
        }
        u.entry(rights.clone())
            .or_insert_with(|| {
                // Rules this server refuses allow nothing (fail closed).
                Rc::new(ModuleUser::with_rules("redisraft-script-rights", &rights.rules).ok())
            })
            .clone()
    });
    let before = RIGHTS.with(|r| r.replace(Some((rights.user.clone(), user))));
    let out = f();
    RIGHTS.with(|r| *r.borrow_mut() = before);
    out
}

/// The error a script's command gets when the rights its entry carries do
/// not allow it: Redis's own text for a script (7.0's or 7.2's).
fn denied(user: &[u8], mu: Option<&ModuleUser>, argv: &[Vec<u8>]) -> Option<String> {
    use crate::ffi::AclDenial;
    let mu = match mu {
        Some(mu) if mu.allows(argv) => return None,
        Some(mu) => mu,
        None => {
            return Some(crate::acl::script_denied_text(
                user,
                argv,
                AclDenial::Command,
            ))
        }
    };
    let keys = ffi::command_keys(crate::apply::call_ctx(), argv);
    let publishes =
        argv[0].eq_ignore_ascii_case(b"publish") || argv[0].eq_ignore_ascii_case(b"spublish");
    let why = if keys.iter().any(|k| !mu.may_touch_key(k)) {
        AclDenial::Key
    } else if publishes && argv.get(1).is_some_and(|ch| !mu.may_publish(ch)) {
        AclDenial::Channel
    } else {
        AclDenial::Command
    };
    Some(crate::acl::script_denied_text(user, argv, why))
}

/// Whether the command filter should route this command through a script
/// call: it runs inside a script that the machine runs, and is not our own
/// inner call.
pub fn routes_through_script_call() -> bool {
    super::active() && !INNER.with(Cell::get) && ffi::in_script()
}

/// A command that runs a script or a function (EVALSHA's body comes from
/// the script cache): its commands follow the machine's rules, and the
/// caller's rights travel with it.
pub fn is_script(argv: &[Vec<u8>]) -> bool {
    argv.first().is_some_and(|a| {
        [
            "eval",
            "eval_ro",
            "evalsha",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
        ]
        .iter()
        .any(|s| a.eq_ignore_ascii_case(s.as_bytes()))
    })
}

/// Seeds Lua's math.random from the entry, so a script that uses it draws
/// the same numbers on every node.
pub fn seed_lua(ctx: Ctx, m: Moment) {
    let seed = (m.seed >> 33) as i32;
    let argv = [
        b"EVAL".to_vec(),
        b"math.randomseed(tonumber(ARGV[1]))".to_vec(),
        b"0".to_vec(),
        seed.to_string().into_bytes(),
    ];
    if let Err(e) = ffi::call(ctx, &argv) {
        crate::logging::warning(&format!("could not seed the script's random numbers: {e}"));
    }
}

/// Runs `f`, a script or function an entry runs, without Redis's memory
/// check at the script's start: it reads this node's OOM state (kept from
/// the last client command), and an entry must do the same on every node
/// (the leader checked before proposing). Redis has no switch for it but
/// maxmemory itself, so maxmemory is 0 meanwhile (policy noeviction: the
/// restore evicts nothing; Redis logs a warning if the node is over it).
pub fn without_memory_check<T>(ctx: Ctx, f: impl FnOnce() -> T) -> T {
    if ffi::used_memory_ratio() <= 0.0 {
        return f(); // no maxmemory
    }
    let config = |args: &[&[u8]]| {
        let mut argv = vec![b"CONFIG".to_vec()];
        argv.extend(args.iter().map(|a| a.to_vec()));
        ffi::call(ctx, &argv).ok()
    };
    let limit = config(&[b"GET", b"maxmemory"])
        .and_then(|r| r.as_strings())
        .and_then(|kv| kv.get(1).cloned());
    let Some(limit) = limit.filter(|l| l.as_slice() != b"0") else {
        return f();
    };
    config(&[b"SET", b"maxmemory", b"0"]);
    let out = f();
    if config(&[b"SET", b"maxmemory", &limit]).is_none_or(|r| r.is_error()) {
        crate::logging::warning("could not restore maxmemory after a script");
    }
    out
}

/// RAFT._SCRIPTW / RAFT._SCRIPTR: one command of a script the machine runs.
/// Outside such a script: an error (it is internal).
/// `writes` is false for RAFT._SCRIPTR: a write through it would dodge
/// Redis's read-only script check (and a read the leader serves outside the
/// log must change nothing), so it is refused.
pub fn call(ctx: Ctx, argv: Vec<Vec<u8>>, writes: bool) -> Outcome {
    let Some(m) = super::draw() else {
        return Outcome::Error("ERR this command is internal to RedisRaft's scripts".into());
    };
    if argv.is_empty() {
        return Outcome::Error("ERR wrong number of arguments".into());
    }
    if crate::intercept::has_flag(&argv, "noscript") {
        return Outcome::Error("ERR This Redis command is not allowed from script".into());
    }
    if (!writes || !m.in_log) && crate::intercept::has_flag(&argv, "write") {
        return Outcome::Error("ERR Write commands are not allowed from read-only scripts.".into());
    }
    let refusal = RIGHTS.with(|r| {
        r.borrow()
            .as_ref()
            .and_then(|(user, mu)| denied(user, Option::as_ref(mu), &argv))
    });
    if let Some(text) = refusal {
        return Outcome::Error(text);
    }
    let before = INNER.with(|c| c.replace(true));
    let outcome = command::run_at(ctx, argv, m);
    INNER.with(|c| c.set(before));
    outcome
}
