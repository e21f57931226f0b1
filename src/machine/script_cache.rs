//! The script cache EVALSHA runs on, replicated through the log.
//!
//! Redis's own cache cannot be the truth: a node adds to it when it serves
//! EVAL_RO as a read (outside the log), Valkey evicts EVAL's scripts by
//! their use, and an RDB does not carry it. So the machine keeps its own:
//! SHA-1 -> body, changed only by entries, in apply order:
//!
//! - `EVAL body` (or a MULTI's) adds the body once it ran, if it compiles
//!   (asked of Redis with SCRIPT LOAD, whose answer depends on the body
//!   only), as Redis caches what EVAL ran;
//! - `SCRIPT LOAD body` adds it, `SCRIPT FLUSH` empties it.
//!
//! `EVALSHA sha` and `EVALSHA_RO sha` run as `EVAL body` / `EVAL_RO body`
//! with the body the cache holds at that point of the log, or answer
//! Redis's -NOSCRIPT; `SCRIPT EXISTS` answers from it. So the cache at an
//! applied index is the same on every node.
//!
//! Snapshots carry it as aux data of its own type (`raftscrpt`) in the
//! RDB: saved with the dataset by the same fork, staged when Redis loads
//! the file and adopted only when that file becomes the node's applied
//! state (at start, or a snapshot installed), so it always matches the
//! index the dataset holds. Functions need none of this: Redis saves and
//! loads them with the dataset.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::os::raw::c_int;

use parking_lot::Mutex;
use redis_module::native_types::RedisType;
use redis_module::{raw, RedisValue};

use super::command::Outcome;
use crate::ffi;
use crate::intercept::text;

type Ctx = *mut raw::RedisModuleCtx;
type Cache = BTreeMap<Vec<u8>, Vec<u8>>;

/// Redis 7.0's reply to EVALSHA of a script it does not hold (clients fall
/// back to EVAL on it).
const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// This server's own NOSCRIPT text (Valkey's is shorter), asked of it once
/// with a SHA no script has (main thread).
fn noscript() -> String {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let argv = [b"EVALSHA".to_vec(), [b'0'; 40].to_vec(), b"0".to_vec()];
        match ffi::call(crate::apply::call_ctx(), &argv) {
            Ok(r) if r.is_error() => r
                .as_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .filter(|t| t.starts_with("NOSCRIPT"))
                .unwrap_or_else(|| NOSCRIPT.into()),
            _ => NOSCRIPT.into(),
        }
    })
    .clone()
}

/// The applied cache: lower-case SHA-1 hex -> body (main thread; ordered,
/// so its RDB form and digest are the same on every node).
static CACHE: Mutex<Cache> = Mutex::new(BTreeMap::new());
/// The cache read from the RDB Redis loaded last, until that file is
/// adopted as the applied state.
static STAGED: Mutex<Option<Cache>> = Mutex::new(None);

fn is(a: &[u8], name: &str) -> bool {
    a.eq_ignore_ascii_case(name.as_bytes())
}

/// How a command reads the cache: run as another command, or answered.
pub enum Resolved {
    Run(Vec<Vec<u8>>),
    Answer(Outcome),
}

/// EVALSHA(_RO) and SCRIPT EXISTS against the cache; None for every other
/// command (it runs as it is).
pub fn resolve(argv: &[Vec<u8>]) -> Option<Resolved> {
    let name = argv.first()?;
    if (is(name, "evalsha") || is(name, "evalsha_ro")) && argv.len() >= 2 {
        let body = CACHE.lock().get(&argv[1].to_ascii_lowercase()).cloned();
        return Some(match body {
            None => Resolved::Answer(Outcome::Error(noscript())),
            Some(body) => {
                let eval: &[u8] = if is(name, "evalsha") {
                    b"EVAL"
                } else {
                    b"EVAL_RO"
                };
                let mut run = Vec::with_capacity(argv.len());
                run.push(eval.to_vec());
                run.push(body);
                run.extend_from_slice(&argv[2..]);
                Resolved::Run(run)
            }
        });
    }
    if is(name, "script") && argv.get(1).is_some_and(|s| is(s, "exists")) && argv.len() >= 3 {
        let cache = CACHE.lock();
        let found = argv[2..]
            .iter()
            .map(|sha| cache.contains_key(&sha.to_ascii_lowercase()) as i64)
            .collect();
        return Some(Resolved::Answer(Outcome::Integers(found)));
    }
    None
}

/// Whether Redis would refuse this EVAL, EVALSHA or FCALL while over
/// maxmemory before running it: a script with a shebang, or a function, is
/// checked at its start unless its flags say `allow-oom` or `no-writes`. The leader decides it
/// before proposing (at apply, every node runs what was proposed). A
/// script without a shebang is not refused (Redis checks it at its first
/// write, by each node's memory, which would split the nodes).
pub fn denies_oom(argv: &[Vec<u8>]) -> bool {
    let body = match argv {
        [name, function, ..] if is(name, "fcall") => {
            // A function has flags always (none: it may write).
            return function_flags(function)
                .is_some_and(|flags| !flags.iter().any(|f| f == "allow-oom" || f == "no-writes"));
        }
        [name, body, ..] if is(name, "eval") => body.clone(),
        [name, sha, ..] if is(name, "evalsha") => {
            match CACHE.lock().get(&sha.to_ascii_lowercase()) {
                Some(body) => body.clone(),
                None => return false, // NOSCRIPT when applied
            }
        }
        _ => return false,
    };
    let Some(shebang) = body.strip_prefix(b"#!") else {
        return false;
    };
    let line = shebang.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    !line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("flags="))
        .flat_map(|f| f.split(','))
        .any(|f| f == "allow-oom" || f == "no-writes")
}

/// The value after `key` in a RESP2 map given as a flat array.
fn field<'a>(map: &'a [RedisValue], key: &str) -> Option<&'a RedisValue> {
    map.chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some(key))
        .and_then(|kv| kv.get(1))
}

/// The flags of the function `name` (FUNCTION LIST of this node: the
/// leader's, deciding before it proposes); None if there is none. Asked
/// only over maxmemory.
fn function_flags(name: &[u8]) -> Option<Vec<String>> {
    let ctx = redis_module::Context::new(crate::apply::call_ctx());
    let RedisValue::Array(libs) = ctx.call("FUNCTION", &["LIST"]).ok()? else {
        return None;
    };
    let name = String::from_utf8_lossy(name);
    libs.iter()
        .filter_map(|lib| match lib {
            RedisValue::Array(lib) => match field(lib, "functions") {
                Some(RedisValue::Array(fs)) => Some(fs),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .filter_map(|f| match f {
            RedisValue::Array(f) => Some(f),
            _ => None,
        })
        .find(|f| {
            field(f, "name")
                .and_then(text)
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        })
        .map(|f| match field(f, "flags") {
            Some(RedisValue::Array(flags)) => flags.iter().filter_map(text).collect(),
            _ => Vec::new(),
        })
}

/// What an entry's command does to the cache once it ran.
enum Learns {
    Nothing,
    /// EVAL: its body, if it compiles.
    Eval(Vec<u8>),
    /// SCRIPT LOAD: the SHA it answers.
    Load(Vec<u8>),
    Flush,
}

fn learns(argv: &[Vec<u8>]) -> Learns {
    match argv {
        [name, body, ..] if is(name, "eval") => Learns::Eval(body.clone()),
        [name, sub, body] if is(name, "script") && is(sub, "load") => Learns::Load(body.clone()),
        [name, sub, ..] if is(name, "script") && is(sub, "flush") => Learns::Flush,
        _ => Learns::Nothing,
    }
}

/// Runs one command of an entry (`run` runs it under the machine's rules)
/// with the cache: EVALSHA from it, EVAL, SCRIPT LOAD and FLUSH into it.
pub fn in_entry(
    ctx: Ctx,
    argv: Vec<Vec<u8>>,
    run: impl FnOnce(Vec<Vec<u8>>) -> Outcome,
) -> Outcome {
    let learns = learns(&argv);
    let outcome = match resolve(&argv) {
        Some(Resolved::Answer(outcome)) => return outcome,
        Some(Resolved::Run(eval)) => run(eval),
        None => run(argv),
    };
    match learns {
        Learns::Nothing => {}
        Learns::Eval(body) => {
            // Redis caches what EVAL compiled, even if the script then
            // failed; SCRIPT LOAD compiles it (or finds it) the same way
            // on every node.
            let load = [b"SCRIPT".to_vec(), b"LOAD".to_vec(), body.clone()];
            if let Ok(r) = ffi::call(ctx, &load) {
                if let Some(sha) = r.as_bytes().filter(|_| !r.is_error()) {
                    CACHE.lock().insert(sha.to_ascii_lowercase(), body);
                }
            }
        }
        Learns::Load(body) => {
            if let Outcome::Reply(r) = &outcome {
                if let Some(sha) = r.as_bytes().filter(|_| !r.is_error()) {
                    CACHE.lock().insert(sha.to_ascii_lowercase(), body);
                }
            }
        }
        Learns::Flush => {
            let failed = match &outcome {
                Outcome::Reply(r) => r.is_error(),
                Outcome::Error(_) => true,
                _ => false,
            };
            if !failed {
                CACHE.lock().clear();
            }
        }
    }
    outcome
}

/// Scripts cached, and a digest of the cache (INFO raft: equal on every
/// node at the same applied index).
pub fn summary() -> (usize, u64) {
    let cache = CACHE.lock();
    // SipHash with fixed keys: the same on every node of one build.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    for (sha, body) in cache.iter() {
        h.write(sha);
        h.write(body);
    }
    (cache.len(), h.finish())
}

// ---------------------------------------------------------------------------
// Snapshots

/// Before a snapshot file is loaded: nothing staged from an earlier one.
pub fn forget_loaded() {
    *STAGED.lock() = None;
}

/// The RDB Redis loaded is now the applied state: its cache (empty if it
/// carried none) is the cache.
pub fn adopt_loaded() {
    *CACHE.lock() = STAGED.lock().take().unwrap_or_default();
}

const AUX_VERSION: u64 = 1;

pub static CACHE_TYPE: RedisType = RedisType::new(
    "raftscrpt",
    1,
    crate::snapshot::aux_only(aux_load, aux_save),
);

/// Writes the applied cache (in a snapshot's fork child: exactly the one
/// of the dataset being written).
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    crate::guard::catch("saving the script cache", || save(rdb, when), |_| ())
}

fn save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::Aux::Before as c_int {
        return;
    }
    let cache = CACHE.lock();
    raw::save_unsigned(rdb, AUX_VERSION);
    raw::save_unsigned(rdb, cache.len() as u64);
    for (sha, body) in cache.iter() {
        raw::save_slice(rdb, sha);
        raw::save_slice(rdb, body);
    }
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, _encver: c_int, when: c_int) -> c_int {
    crate::guard::catch(
        "loading the script cache",
        || load(rdb, when),
        |_| raw::REDISMODULE_ERR as c_int,
    )
}

fn load(rdb: *mut raw::RedisModuleIO, when: c_int) -> c_int {
    if when != raw::Aux::Before as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    let read = || -> Result<Cache, String> {
        let version = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        if version != AUX_VERSION {
            return Err(format!("unsupported script cache version {version}"));
        }
        let n = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        let mut cache = Cache::new();
        for _ in 0..n {
            let sha = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            let body = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            cache.insert(sha.as_ref().to_vec(), body.as_ref().to_vec());
        }
        Ok(cache)
    };
    match read() {
        Ok(cache) => {
            *STAGED.lock() = Some(cache);
            raw::REDISMODULE_OK as c_int
        }
        Err(e) => {
            crate::logging::warning(&format!("cannot read the script cache from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
    }
}
