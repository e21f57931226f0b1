//! Which client commands go through Raft, decided from Redis's own command
//! flags, and the command filter that routes them to the `RAFT` command.
//!
//! The table is built from `COMMAND` at load (and again once the server has
//! finished starting, to see commands of modules loaded after us).

use std::collections::HashMap;

use parking_lot::RwLock;
use redis_module::{Context, RedisValue};

use crate::config;
use crate::ffi;

/// What to do with a client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Not intercepted: runs locally as usual (PING, INFO, CONFIG, ...).
    PassThrough,
    /// Replicated through the log.
    Write,
    /// Served after a ReadIndex confirmation.
    Read,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: handled by the module's own
    /// transaction state (`txn`, `machine::watch`).
    Txn,
    /// Cannot be made consistent (yet): refused with this reason.
    Refuse(String),
    /// Not a command this server knows: Redis's own error.
    Unknown,
    /// A blocking command the module serves (`blocking`).
    Blocking,
    /// CLIENT UNBLOCK: the module's waiting clients are unblocked by it.
    Unblock,
}

/// Redis's error for an unknown command (7.0 and later alike).
pub fn unknown_command_error(argv: &[Vec<u8>]) -> String {
    let mut args = String::new();
    for a in argv.iter().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = String::from_utf8_lossy(a);
        let a: String = a.chars().take(room).collect();
        args.push_str(&format!("'{a}' "));
    }
    let name: String = String::from_utf8_lossy(&argv[0])
        .chars()
        .take(128)
        .collect();
    format!("ERR unknown command '{name}', with args beginning with: {args}")
}

#[derive(Clone, Debug, Default)]
struct CommandInfo {
    /// Redis's arity: n exactly, or at least -n when negative.
    arity: i64,
    flags: Vec<String>,
    tips: Vec<String>,
    /// A key spec says the command writes a key (RW, OW or RM), whatever
    /// its flags: PFCOUNT is `readonly` yet rewrites its key's cache.
    writes_keys: bool,
    /// Container commands (CONFIG, OBJECT, ...): subcommand -> info.
    subcommands: HashMap<Vec<u8>, CommandInfo>,
}

static TABLE: RwLock<Option<HashMap<Vec<u8>, CommandInfo>>> = RwLock::new(None);

/// A string reply's text (any of the crate's string kinds).
pub(crate) fn text(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s.clone()),
        RedisValue::SimpleStringStatic(s) => Some(s.to_string()),
        RedisValue::BulkRedisString(s) => Some(s.to_string_lossy()),
        RedisValue::StringBuffer(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn texts(v: Option<&RedisValue>) -> Vec<String> {
    match v {
        Some(RedisValue::Array(a)) => a
            .iter()
            .filter_map(text)
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether any key spec (COMMAND's 9th field: maps as flat arrays) has
/// a flag that writes the key.
fn key_specs_write(v: Option<&RedisValue>) -> bool {
    let Some(RedisValue::Array(specs)) = v else {
        return false;
    };
    specs.iter().any(|spec| {
        let RedisValue::Array(kv) = spec else {
            return false;
        };
        kv.chunks(2).any(|pair| {
            pair.first().and_then(text).as_deref() == Some("flags")
                && texts(pair.get(1))
                    .iter()
                    .any(|f| matches!(f.as_str(), "rw" | "ow" | "rm"))
        })
    })
}

fn parse_command(v: &RedisValue) -> Option<(Vec<u8>, CommandInfo)> {
    let RedisValue::Array(f) = v else { return None };
    let name = text(f.first()?)?.to_ascii_lowercase();
    let mut info = CommandInfo {
        arity: match f.get(1) {
            Some(RedisValue::Integer(n)) => *n,
            _ => 0,
        },
        flags: texts(f.get(2)),
        tips: texts(f.get(7)),
        writes_keys: key_specs_write(f.get(8)),
        subcommands: HashMap::new(),
    };
    if let Some(RedisValue::Array(subs)) = f.get(9) {
        for s in subs {
            if let Some((sname, sinfo)) = parse_command(s) {
                // Subcommands are named "container|sub".
                let short = sname
                    .rsplit(|&b| b == b'|')
                    .next()
                    .unwrap_or(&sname)
                    .to_vec();
                info.subcommands.insert(short, sinfo);
            }
        }
    }
    Some((name.into_bytes(), info))
}

/// (Re)builds the table from `COMMAND`.
pub fn build_table(ctx: &Context) -> Result<usize, String> {
    let reply = ctx
        .call("COMMAND", &[] as &[&str])
        .map_err(|e| format!("COMMAND failed: {e}"))?;
    let RedisValue::Array(cmds) = reply else {
        return Err("COMMAND returned no array".into());
    };
    let table: HashMap<_, _> = cmds.iter().filter_map(parse_command).collect();
    let n = table.len();
    *TABLE.write() = Some(table);
    Ok(n)
}

const TXN: &[&str] = &["multi", "exec", "discard", "watch", "unwatch"];
fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// Classifies a command line (argv[0] is the command name).
pub fn classify(argv: &[&[u8]]) -> Class {
    let Some(first) = argv.first() else {
        return Class::PassThrough;
    };
    let name = lower(first);
    let name_s = String::from_utf8_lossy(&name).into_owned();
    if name.starts_with(b"raft") {
        return Class::PassThrough;
    }
    let ignored = config::IGNORED_COMMANDS.get();
    if ignored
        .split(',')
        .map(str::trim)
        .any(|c| c.eq_ignore_ascii_case(&name_s))
    {
        return Class::PassThrough;
    }
    if let Some(class) = crate::blocking::classify(&name_s, argv) {
        return class;
    }
    if TXN.contains(&name_s.as_str()) {
        return Class::Txn;
    }
    // A script runs on every node from the log, so it must be deterministic.
    // EVALSHA's body and SCRIPT's answers come from the replicated script
    // cache (machine::script_cache); FUNCTION's writes are flagged `write`.
    match name_s.as_str() {
        "eval" | "evalsha" | "fcall" => return Class::Write,
        "eval_ro" | "evalsha_ro" | "fcall_ro" => return Class::Read,
        "script" => {
            let sub = argv.get(1).map(|s| lower(s)).unwrap_or_default();
            match sub.as_slice() {
                b"load" | b"flush" => return Class::Write,
                b"exists" => return Class::Read,
                _ => {} // KILL, DEBUG, HELP: this node's own
            }
        }
        _ => {}
    }
    if matches!(name_s.as_str(), "save" | "bgsave") {
        // The RDB file is the node's Raft snapshot: only RedisRaft writes it,
        // at a moment when the index it holds is known.
        return Class::Refuse(format!(
            "{}: the RDB file is RedisRaft's snapshot; use RAFT.DEBUG COMPACT",
            name_s.to_uppercase()
        ));
    }
    if name_s == "select" && argv.get(1).is_some_and(|db| *db != b"0") {
        return Class::Refuse(
            "SELECT of a database other than 0 is not supported: Raft replicates database 0".into(),
        );
    }
    if let Some(why) = splits_the_nodes(&name_s, argv) {
        return Class::Refuse(why);
    }
    if name_s == "client"
        && argv
            .get(1)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"pause"))
    {
        return Class::Refuse("CLIENT PAUSE is not supported with RedisRaft".into());
    }
    if crate::machine::pubsub::is_publish(&name_s) {
        // Not a write to Redis, but delivered on every node from the log.
        return Class::Write;
    }
    let table = TABLE.read();
    let Some(info) = table.as_ref().and_then(|t| t.get(&name)) else {
        // Through RAFT, which answers Redis's own error: inside MULTI it
        // must fail the transaction, as in Redis.
        return if table.is_some() {
            Class::Unknown
        } else {
            Class::PassThrough
        };
    };
    let info = match argv.get(1).map(|s| lower(s)) {
        Some(sub) if !info.subcommands.is_empty() => match info.subcommands.get(&sub) {
            Some(si) => si,
            None => return Class::PassThrough,
        },
        _ => info,
    };
    let has = |f: &str| info.flags.iter().any(|x| x == f);
    if has("blocking") && crate::machine::stream::blocks(&name_s, argv) {
        // XREAD and XREADGROUP with BLOCK, and the blocking list and
        // sorted-set commands, are crate::blocking's (above).
        return Class::Refuse(format!(
            "{}: blocking commands are not supported by this RedisRaft yet",
            name_s.to_uppercase()
        ));
    }
    if has("write") {
        if let Some(why) = nondeterministic_write(&name_s) {
            return Class::Refuse(why);
        }
        if info.tips.iter().any(|t| t == "nondeterministic_output")
            && !DETERMINISTIC_HERE.contains(&name_s.as_str())
        {
            return Class::Refuse(format!(
                "{}: non-deterministic write commands cannot be replicated consistently",
                name_s.to_uppercase()
            ));
        }
        return Class::Write;
    }
    if has("readonly") {
        if info.writes_keys {
            // It changes its key's bytes (PFCOUNT's cache): every node
            // must do it alike, so through the log.
            return Class::Write;
        }
        return Class::Read;
    }
    Class::PassThrough
}

// Why a Redis setting would split the nodes: the same words at load
// (commands::check_redis_settings) and at run time (below).
pub const AOF_WHY: &str = "the Raft log is the persistence; AOF would replay commands twice";
pub const SAVE_WHY: &str = "RDB saves are taken by RedisRaft as snapshots only";
pub const EVICTION_WHY: &str = "eviction would make nodes' datasets differ";
pub const REPLICA_WHY: &str = "a RedisRaft node must not be a Redis replica";

/// Whether a command sees all its arguments in the filter (most need two).
fn needs_all_args(name: &[u8]) -> bool {
    [b"config".as_slice(), b"replicaof", b"slaveof"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// The refusal of a command that would make this node's dataset or
/// settings part from the others': REPLICAOF, and CONFIG SET of a Redis
/// setting the load-time check refuses or of a raft.* setting fixed at
/// load. A CONFIG SET with several pairs is refused whole if one is bad.
fn splits_the_nodes(name: &str, argv: &[&[u8]]) -> Option<String> {
    let arg = |i: usize| {
        argv.get(i)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
    };
    match name {
        "replicaof" | "slaveof" => {
            let no_one = arg(1).as_deref() == Some("no") && arg(2).as_deref() == Some("one");
            (!no_one).then(|| format!("{}: {REPLICA_WHY}", name.to_uppercase()))
        }
        "config" if arg(1).as_deref() == Some("set") => argv[2..]
            .chunks(2)
            .filter_map(|pair| match pair {
                [n, v] => config_set_refusal(
                    &String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).trim(),
                ),
                _ => None, // Redis answers the arity error
            })
            .next(),
        _ => None,
    }
}

fn config_set_refusal(name: &str, value: &str) -> Option<String> {
    let refuse = |why: &str| Some(format!("CONFIG SET {name} {value}: {why}"));
    match name {
        "appendonly" if value.eq_ignore_ascii_case("yes") => refuse(AOF_WHY),
        "save" if !value.is_empty() => refuse(SAVE_WHY),
        "maxmemory-policy" if !value.eq_ignore_ascii_case("noeviction") => refuse(EVICTION_WHY),
        _ => {
            let raft = name.strip_prefix("raft.")?;
            if let Some(why) = config::set_at_load(raft) {
                return Some(why);
            }
            if let Some(w) = config::unused_setting_warning(raft, value) {
                crate::logging::warning(&w);
            }
            None
        }
    }
}

/// Writes Redis marks `nondeterministic_output` that the machine runs the
/// same on every node (README, "Deterministic writes"): SPOP draws from the
/// entry's seed; XADD's automatic ID takes the entry's time; XTRIM's
/// approximate trimming follows the stream's node layout, which the same
/// history and settings make equal everywhere; XCLAIM and XAUTOCLAIM decide
/// idle times and record delivery times by the entry's time
/// (`machine::pending`).
const DETERMINISTIC_HERE: &[&str] = &["spop", "xtrim", "xadd", "xclaim", "xautoclaim"];

/// Writes that cannot be made deterministic (yet), with the reason and
/// what to use instead.
fn nondeterministic_write(name: &str) -> Option<String> {
    Some(match name {
        "migrate" => "MIGRATE: every node would connect to the target and move the keys; copy them with DUMP and RESTORE".into(),
        _ => return None,
    })
}

/// Whether the command `argv` names carries a Redis command flag.
pub fn has_flag(argv: &[Vec<u8>], flag: &str) -> bool {
    let table = TABLE.read();
    let Some(info) = argv
        .first()
        .and_then(|n| table.as_ref().and_then(|t| t.get(&lower(n))))
    else {
        return false;
    };
    let info = match argv.get(1).map(|s| lower(s)) {
        Some(sub) if !info.subcommands.is_empty() => match info.subcommands.get(&sub) {
            Some(si) => si,
            None => return false,
        },
        _ => info,
    };
    info.flags.iter().any(|f| f == flag)
}

/// A command's full name as Redis prints it: `config|set` for a
/// subcommand, else the name (lower case).
pub fn full_name(argv: &[Vec<u8>]) -> String {
    let Some(first) = argv.first() else {
        return String::new();
    };
    let name = lower(first);
    let table = TABLE.read();
    let sub = argv.get(1).map(|s| lower(s)).filter(|sub| {
        table
            .as_ref()
            .and_then(|t| t.get(&name))
            .is_some_and(|info| info.subcommands.contains_key(sub))
    });
    match sub {
        Some(sub) => format!(
            "{}|{}",
            String::from_utf8_lossy(&name),
            String::from_utf8_lossy(&sub)
        ),
        None => String::from_utf8_lossy(&name).into_owned(),
    }
}

/// Redis's own error for a command line of the wrong length, checked
/// before anything is proposed ("wrong number of arguments for 'set'
/// command"); None when the arity is right or the command unknown.
pub fn arity_error(argv: &[Vec<u8>]) -> Option<String> {
    let table = TABLE.read();
    let name = lower(argv.first()?);
    let mut info = table.as_ref()?.get(&name)?;
    let mut full = String::from_utf8_lossy(&name).into_owned();
    if !info.subcommands.is_empty() {
        if let Some((sub, si)) = argv
            .get(1)
            .and_then(|s| info.subcommands.get(&lower(s)).map(|si| (lower(s), si)))
        {
            full = format!("{full}|{}", String::from_utf8_lossy(&sub));
            info = si;
        }
    }
    let n = argv.len() as i64;
    let ok = if info.arity >= 0 {
        info.arity == 0 || n == info.arity
    } else {
        n >= -info.arity
    };
    (!ok).then(|| format!("ERR wrong number of arguments for '{full}' command"))
}

/// Which script call a command a script runs goes through: the write one
/// for writes, the read-only one for everything else (reads, TIME, and
/// PUBLISH, INFO, ... too: the caller's rights are checked there, and the
/// module runs the script as root, so Lua's own check never sees them).
/// Commands Redis 7.0 and 7.2 flag `may-replicate` that a script can call.
const MAY_REPLICATE: &[&str] = &["pfcount", "publish", "spublish"];

fn script_call_for(argv: &[&[u8]]) -> Option<&'static [u8]> {
    let name = lower(argv.first()?);
    if !TABLE.read().as_ref().is_some_and(|t| t.contains_key(&name)) {
        // Unknown: Lua answers it ("Unknown Redis command called from script").
        return None;
    }
    let owned: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
    // Redis's `may-replicate` commands count as writes for scripts: a
    // read-only script may not run them (Redis's own error, from
    // RAFT._SCRIPTW's write flag). COMMAND does not list that flag on 7.0:
    // the commands that carry it a script can call are named here.
    if has_flag(&owned, "write")
        || has_flag(&owned, "may_replicate")
        || MAY_REPLICATE
            .iter()
            .any(|m| m.as_bytes() == name.as_slice())
    {
        Some(crate::machine::script::WRITE_CALL)
    } else {
        Some(crate::machine::script::READ_CALL)
    }
}

extern "C" fn rebuild_table(_: *mut std::ffi::c_void) {
    crate::guard::catch(
        "the command table rebuild",
        || {
            let ctx = redis_module::Context::new(crate::apply::call_ctx());
            if let Err(e) = build_table(&ctx) {
                crate::logging::warning(&format!("command table rebuild failed: {e}"));
            }
        },
        |_| (),
    )
}

/// The command filter: rewrites `CMD args...` to `RAFT CMD args...` for
/// every command that is not passed through. Runs for every command, so it
/// only reads the table.
pub extern "C" fn filter(fctx: *mut redis_module::raw::RedisModuleCommandFilterCtx) {
    // On a panic the command still goes to RAFT, which refuses it on the
    // fail-stopped node: never run unreplicated.
    crate::guard::catch(
        "the command filter",
        || filter_command(fctx),
        |_| ffi::filter_insert(fctx, 0, b"RAFT"),
    )
}

fn filter_command(fctx: *mut redis_module::raw::RedisModuleCommandFilterCtx) {
    let argc = ffi::filter_argc(fctx);
    if argc == 0 {
        return;
    }
    let first = ffi::filter_arg(fctx, 0);
    if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"raft") {
        return;
    }
    if first.eq_ignore_ascii_case(b"module") && !ffi::in_own_call() {
        // MODULE LOAD may add commands: the table learns them once it ran
        // (until then they would be answered as unknown commands).
        ffi::run_on_main_thread(rebuild_table, std::ptr::null_mut());
        return;
    }
    if first.eq_ignore_ascii_case(b"reset") && argc == 1 && !ffi::in_own_call() {
        // RESET ends the client's MULTI and its WATCHes, which the module
        // keeps: forgotten too, where the server tells whose RESET it is
        // (7.2+, Valkey); on 7.0 they stay until EXEC, DISCARD or a
        // disconnect (README, "MULTI/EXEC").
        if let Some(client) = ffi::filter_client_id(fctx) {
            crate::txn::forget(client);
        }
        return;
    }
    if first.eq_ignore_ascii_case(b"acl") && !ffi::in_own_call() {
        crate::acl::on_acl_command(fctx, argc);
        return;
    }
    let n = if needs_all_args(first) {
        argc
    } else {
        argc.min(2)
    };
    let argv = || -> Vec<&[u8]> { (0..n).map(|i| ffi::filter_arg(fctx, i)).collect() };
    if ffi::in_own_call() {
        // The module's own commands run as they are, but those of a script
        // it runs for an entry follow the machine's rules.
        if crate::machine::script::routes_through_script_call() {
            if let Some(call) = script_call_for(&argv()) {
                ffi::filter_insert(fctx, 0, call);
            }
        }
        return;
    }
    let argv = argv();
    if classify(&argv) != Class::PassThrough {
        ffi::filter_insert(fctx, 0, b"RAFT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(flags: &[&str], tips: &[&str]) -> CommandInfo {
        CommandInfo {
            arity: -1,
            writes_keys: false,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            tips: tips.iter().map(|s| s.to_string()).collect(),
            subcommands: HashMap::new(),
        }
    }

    #[test]
    fn classes_follow_redis_flags() {
        let mut t = HashMap::new();
        t.insert(b"set".to_vec(), info(&["write", "denyoom"], &[]));
        t.insert(b"get".to_vec(), info(&["readonly", "fast"], &[]));
        t.insert(
            b"spop".to_vec(),
            info(&["write", "fast"], &["nondeterministic_output"]),
        );
        t.insert(b"blpop".to_vec(), info(&["write", "blocking"], &[]));
        t.insert(
            b"migrate".to_vec(),
            info(&["write"], &["nondeterministic_output"]),
        );
        t.insert(b"ping".to_vec(), info(&["fast"], &[]));
        t.insert(b"select".to_vec(), info(&["loading", "fast"], &[]));
        t.insert(b"client".to_vec(), info(&["noscript", "loading"], &[]));
        t.insert(b"script".to_vec(), info(&["noscript"], &[]));
        t.insert(b"xread".to_vec(), info(&["readonly", "blocking"], &[]));
        t.insert(b"xreadgroup".to_vec(), info(&["write", "blocking"], &[]));
        t.insert(
            b"publish".to_vec(),
            info(&["pubsub", "loading", "stale", "fast"], &[]),
        );
        t.insert(b"subscribe".to_vec(), info(&["pubsub", "noscript"], &[]));
        let mut config = info(&[], &[]);
        config
            .subcommands
            .insert(b"set".to_vec(), info(&["admin"], &[]));
        t.insert(b"config".to_vec(), config);
        *TABLE.write() = Some(t);

        assert_eq!(classify(&[b"SET", b"k"]), Class::Write);
        assert_eq!(classify(&[b"get", b"k"]), Class::Read);
        assert_eq!(classify(&[b"PING"]), Class::PassThrough);
        assert_eq!(classify(&[b"CONFIG", b"SET"]), Class::PassThrough);
        assert_eq!(classify(&[b"raft.info"]), Class::PassThrough);
        assert_eq!(classify(&[b"nosuchcommand"]), Class::Unknown);
        assert_eq!(classify(&[b"SPOP", b"k"]), Class::Write);
        assert_eq!(classify(&[b"XREAD", b"STREAMS", b"s", b"0"]), Class::Read);
        assert_eq!(
            classify(&[b"xreadgroup", b"GROUP", b"g", b"c", b"STREAMS", b"s", b">"]),
            Class::Write
        );
        assert_eq!(
            classify(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"]),
            Class::Blocking
        );
        assert_eq!(
            classify(&[
                b"XREADGROUP",
                b"GROUP",
                b"g",
                b"c",
                b"BLOCK",
                b"0",
                b"STREAMS",
                b"s",
                b">"
            ]),
            Class::Blocking
        );
        // A group named "block" is not the option.
        assert_eq!(
            classify(&[
                b"xreadgroup",
                b"GROUP",
                b"block",
                b"c",
                b"STREAMS",
                b"s",
                b">"
            ]),
            Class::Write
        );
        assert_eq!(classify(&[b"PUBLISH", b"c", b"m"]), Class::Write);
        assert_eq!(classify(&[b"SPUBLISH", b"c", b"m"]), Class::Write);
        assert_eq!(classify(&[b"SUBSCRIBE", b"c"]), Class::PassThrough);
        assert_eq!(classify(&[b"BLPOP", b"k"]), Class::Blocking);
        assert_eq!(classify(&[b"client", b"UNBLOCK"]), Class::Unblock);
        assert_eq!(classify(&[b"CLIENT", b"LIST"]), Class::PassThrough);
        for refused in [
            &[b"MIGRATE".as_slice(), b"h"][..],
            &[b"SELECT", b"1"],
            &[b"BGSAVE"],
            &[b"save"],
        ] {
            assert!(matches!(classify(refused), Class::Refuse(_)), "{refused:?}");
        }
        assert_eq!(classify(&[b"multi"]), Class::Txn);
        assert_eq!(classify(&[b"EXEC"]), Class::Txn);
        assert_eq!(classify(&[b"WATCH", b"k"]), Class::Txn);
        assert_eq!(classify(&[b"unwatch"]), Class::Txn);
        assert_eq!(classify(&[b"EVAL", b"x"]), Class::Write);
        assert_eq!(classify(&[b"EVAL_RO", b"x"]), Class::Read);
        assert_eq!(classify(&[b"EVALSHA", b"x"]), Class::Write);
        assert_eq!(classify(&[b"evalsha_ro", b"x"]), Class::Read);
        assert_eq!(classify(&[b"FCALL", b"f"]), Class::Write);
        assert_eq!(classify(&[b"FCALL_RO", b"f"]), Class::Read);
        assert_eq!(classify(&[b"SCRIPT", b"load"]), Class::Write);
        assert_eq!(classify(&[b"script", b"FLUSH"]), Class::Write);
        assert_eq!(classify(&[b"SCRIPT", b"exists"]), Class::Read);
        assert_eq!(classify(&[b"SCRIPT", b"KILL"]), Class::PassThrough);
        assert_eq!(classify(&[b"SELECT", b"0"]), Class::PassThrough);
    }

    #[test]
    fn settings_that_split_the_nodes_are_refused_at_run_time() {
        let why = |a: &[&[u8]]| match classify(a) {
            Class::Refuse(why) => Some(why),
            _ => None,
        };
        let set = |pairs: &[&[u8]]| {
            let mut a: Vec<&[u8]> = vec![b"config", b"SET"];
            a.extend_from_slice(pairs);
            why(&a)
        };
        assert!(set(&[b"appendonly", b"YES"]).unwrap().contains(AOF_WHY));
        assert!(set(&[b"save", b"900 1"]).unwrap().contains(SAVE_WHY));
        assert!(set(&[b"maxmemory-policy", b"allkeys-lru"])
            .unwrap()
            .contains(EVICTION_WHY));
        assert!(set(&[b"raft.election-timeout", b"5"])
            .unwrap()
            .contains("set at load"));
        // One bad pair refuses the whole command.
        assert!(set(&[b"maxmemory", b"1mb", b"save", b"60 1"]).is_some());
        for fine in [
            &[b"appendonly".as_slice(), b"no"][..],
            &[b"save", b""],
            &[b"maxmemory-policy", b"noeviction", b"maxmemory", b"1mb"],
            &[b"raft.follower-proxy", b"yes"],
        ] {
            assert_eq!(set(fine), None, "{fine:?}");
        }
        assert!(why(&[b"REPLICAOF", b"127.0.0.1", b"6379"])
            .unwrap()
            .contains(REPLICA_WHY));
        assert!(why(&[b"slaveof", b"h", b"1"]).is_some());
        assert_eq!(why(&[b"replicaof", b"no", b"one"]), None);
    }
}
