//! Workloads: what operations the processes invoke (generators) and how a
//! process's client runs them against Redis.
//!
//! - `list-append`: `:txn` of 1 to `MAX_TXN_LEN` micro-ops `[:append k v]`
//!   (RPUSH) and `[:r k nil]` (LRANGE k 0 -1) over a small rotating pool of
//!   keys. One micro-op is sent as a plain command; several as one
//!   MULTI/EXEC block (one Raft entry, applied atomically).
//! - `register`: independent keys (`[k v]` values), `:read` (GET),
//!   `:write` (SET) and `:cas [old new]` (an EVAL script: SET to new if GET
//!   is old; a missing key, nil, never equals old).
//! - `counter`: `:add 1` (INCR) and `:read` (GET) of one key.
//! - `ttl`: keys with short TTLs over a small rotating pool: `:set [k id
//!   ttl]` (`SET k s<id> PX ttl`, ids unique over the run), `:append [k id]`
//!   (`APPEND k a<id>`), `:persist [k nil]` (PERSIST, ok value `[k 0|1]`),
//!   `:get [k nil]` (GET, ok value `[k "s5a9"|nil]`) and `:read [k nil nil]`
//!   (`MULTI GET PTTL EXEC`, ok value `[k "s5a9"|nil pttl]`).
//! - `queue`: one stream with one consumer group used as a work queue
//!   (setup: `XGROUP CREATE queue:q g $ MKSTREAM`): `:enqueue v` (`XADD
//!   queue:q * v <v>`, values unique over the run), `:dequeue :ack|:skip-ack`
//!   (`XREADGROUP GROUP g c<process> COUNT 1 STREAMS queue:q >`, then `XACK`
//!   unless `:skip-ack`, a worker that dies before acking), `:reclaim nil`
//!   (`XAUTOCLAIM queue:q g c<process> 300 0-0 COUNT 5`, then `XACK`) and
//!   `:claim nil` (`XPENDING queue:q g - + 5`, `XCLAIM` of those ids with
//!   min-idle 300, then `XACK`). Their ok value lists what was delivered:
//!   `[[v "id" ack] ...]`, `ack` the XACK's count (1 or 0) or nil (not
//!   acked, or the XACK's outcome is unknown). The final reads drain the
//!   group: `:drain [:xreadgroup nil]` (COUNT 100, `>`) until empty, then
//!   `:drain [:autoclaim "cursor"]` (min-idle 0) passes from 0-0 until one
//!   pass claims nothing; ok value `[kind next-cursor [[v "id" ack] ...]]`.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Failure, NodeClient, Reply};
use crate::history::{Edn, OpType};

/// Most micro-ops per list-append transaction (MULTI/EXEC when above 1).
pub const MAX_TXN_LEN: usize = 4;
/// Whether the register workload issues compare-and-set (EVAL).
pub const CAS_ENABLED: bool = true;

/// The error of a cas whose old value did not match (a certain failure).
pub const CAS_MISMATCH: &str = "cas mismatch";

/// The names `--workload` accepts.
pub const NAMES: &[&str] = &["list-append", "register", "counter", "ttl", "queue"];

/// How one operation completed.
#[derive(Clone, Debug)]
pub struct Completion {
    pub typ: OpType,
    pub value: Edn,
    pub error: Option<String>,
}

impl Completion {
    fn ok(value: Edn) -> Completion {
        Completion {
            typ: OpType::Ok,
            value,
            error: None,
        }
    }

    /// A failure; reads are safe to count as failed even when their outcome
    /// is unknown (they change nothing), as Jepsen's clients do.
    fn failed(value: Edn, f: Failure, read_only: bool) -> Completion {
        match f {
            Failure::Fail(e) => Completion {
                typ: OpType::Fail,
                value,
                error: Some(e),
            },
            Failure::Info(e) if read_only => Completion {
                typ: OpType::Fail,
                value,
                error: Some(format!("{e} (read: no effect)")),
            },
            Failure::Info(e) => Completion {
                typ: OpType::Info,
                value,
                error: Some(e),
            },
        }
    }
}

pub trait Workload: Send + Sync {
    fn name(&self) -> &'static str;
    /// The next operation to invoke: its `f` and `value`.
    fn next(&self) -> (String, Edn);
    /// Runs an operation of `process` with its client.
    fn invoke(&self, client: &mut NodeClient, process: u64, f: &str, value: &Edn) -> Completion;
    /// The reads of every key used, run after the cluster healed.
    fn final_reads(&self) -> Vec<(String, Edn)>;
    /// What must exist before the processes start (not recorded in the
    /// history); retried by the runner until it succeeds.
    fn setup(&self, _client: &mut NodeClient) -> Result<(), Failure> {
        Ok(())
    }
    /// A final read to run after the final read `f` completed ok with
    /// `value` (a drain that goes on until nothing is left); None: none.
    fn final_next(&self, _f: &str, _value: &Edn) -> Option<(String, Edn)> {
        None
    }
}

pub fn make(name: &str, seed: u64) -> Option<Box<dyn Workload>> {
    let rng = StdRng::seed_from_u64(seed ^ 0x5eed_0fa1);
    match name {
        "list-append" => Some(Box::new(ListAppend::new(rng))),
        "register" => Some(Box::new(Register::new(rng))),
        "counter" => Some(Box::new(Counter {
            rng: Mutex::new(rng),
        })),
        "ttl" => Some(Box::new(Ttl::new(rng))),
        "queue" => Some(Box::new(Queue::new(rng))),
        _ => None,
    }
}

fn kw(s: &str) -> Edn {
    Edn::Keyword(s.to_string())
}

fn int_of(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// A GET of an integer key: `done` turns the value (None: no key) into the
/// op's completed value. Reads are idempotent, so every failure is `:fail`.
fn read_int(
    client: &mut NodeClient,
    key: &str,
    value: &Edn,
    done: impl FnOnce(Option<Edn>) -> Edn,
) -> Completion {
    match client.call(&["GET", key]) {
        Ok(Reply::Bulk(None)) => Completion::ok(done(None)),
        Ok(Reply::Bulk(Some(b))) => match int_of(&b) {
            Some(x) => Completion::ok(done(Some(Edn::Int(x)))),
            None => Completion::failed(
                value.clone(),
                Failure::Fail(format!("non-integer value {b:?}")),
                true,
            ),
        },
        Ok(Reply::Error(e)) => {
            Completion::failed(value.clone(), crate::client::classify_error(e), true)
        }
        Ok(other) => Completion::failed(value.clone(), unexpected(&other), true),
        Err(e) => Completion::failed(value.clone(), e, true),
    }
}

fn unexpected(r: &Reply) -> Failure {
    // A reply we cannot read: the command ran, its effect is unknown to us.
    Failure::Info(format!("unexpected reply {r:?}"))
}

// ----- list-append -----

/// Active keys at a time.
const LA_KEYS: usize = 8;
/// Appends before a key is retired.
const LA_APPENDS_PER_KEY: u64 = 100;

struct LaKey {
    key: i64,
    next_value: i64,
    appends: u64,
}

struct LaState {
    rng: StdRng,
    active: Vec<LaKey>,
    next_key: i64,
    used: Vec<i64>,
}

pub struct ListAppend {
    state: Mutex<LaState>,
}

impl ListAppend {
    fn new(rng: StdRng) -> ListAppend {
        let active = (0..LA_KEYS as i64)
            .map(|k| LaKey {
                key: k,
                next_value: 1,
                appends: 0,
            })
            .collect();
        ListAppend {
            state: Mutex::new(LaState {
                rng,
                active,
                next_key: LA_KEYS as i64,
                used: Vec::new(),
            }),
        }
    }

    fn redis_key(k: i64) -> String {
        format!("la:{k}")
    }
}

/// One list-append micro-op.
#[derive(Clone, Debug, PartialEq)]
enum Mop {
    Append(i64, i64),
    Read(i64),
}

fn mops_of(value: &Edn) -> Option<Vec<Mop>> {
    let Edn::Vector(v) = value else { return None };
    v.iter()
        .map(|m| match m {
            Edn::Vector(t) => match t.as_slice() {
                [Edn::Keyword(f), Edn::Int(k), Edn::Int(v)] if f == "append" => {
                    Some(Mop::Append(*k, *v))
                }
                [Edn::Keyword(f), Edn::Int(k), _] if f == "r" => Some(Mop::Read(*k)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn mop_cmd(m: &Mop) -> Vec<Vec<u8>> {
    match m {
        Mop::Append(k, v) => vec![
            b"RPUSH".to_vec(),
            ListAppend::redis_key(*k).into_bytes(),
            v.to_string().into_bytes(),
        ],
        Mop::Read(k) => vec![
            b"LRANGE".to_vec(),
            ListAppend::redis_key(*k).into_bytes(),
            b"0".to_vec(),
            b"-1".to_vec(),
        ],
    }
}

/// The completed micro-op for a reply.
fn mop_result(m: &Mop, r: &Reply) -> Result<Edn, Failure> {
    match (m, r) {
        (Mop::Append(k, v), Reply::Int(_)) => {
            Ok(Edn::Vector(vec![kw("append"), Edn::Int(*k), Edn::Int(*v)]))
        }
        (Mop::Read(k), Reply::Array(Some(items))) => {
            let mut vals = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Reply::Bulk(Some(b)) => match int_of(b) {
                        Some(x) => vals.push(Edn::Int(x)),
                        None => {
                            return Err(Failure::Fail(format!("non-integer list element {b:?}")))
                        }
                    },
                    other => {
                        return Err(Failure::Fail(format!("unexpected list element {other:?}")))
                    }
                }
            }
            Ok(Edn::Vector(vec![kw("r"), Edn::Int(*k), Edn::Vector(vals)]))
        }
        (_, Reply::Error(e)) => Err(crate::client::classify_error(e.clone())),
        (_, other) => Err(unexpected(other)),
    }
}

impl Workload for ListAppend {
    fn name(&self) -> &'static str {
        "list-append"
    }

    fn next(&self) -> (String, Edn) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let len = st.rng.gen_range(1..=MAX_TXN_LEN);
        let mut mops = Vec::with_capacity(len);
        for _ in 0..len {
            let slot = st.rng.gen_range(0..st.active.len());
            let append = st.rng.gen_bool(0.5);
            let k = &mut st.active[slot];
            let key = k.key;
            if !st.used.contains(&key) {
                st.used.push(key);
            }
            if append {
                let v = k.next_value;
                k.next_value += 1;
                k.appends += 1;
                mops.push(Edn::Vector(vec![kw("append"), Edn::Int(key), Edn::Int(v)]));
                if k.appends >= LA_APPENDS_PER_KEY {
                    *k = LaKey {
                        key: st.next_key,
                        next_value: 1,
                        appends: 0,
                    };
                    st.next_key += 1;
                }
            } else {
                mops.push(Edn::Vector(vec![kw("r"), Edn::Int(key), Edn::Nil]));
            }
        }
        ("txn".into(), Edn::Vector(mops))
    }

    fn invoke(&self, client: &mut NodeClient, _process: u64, _f: &str, value: &Edn) -> Completion {
        let Some(mops) = mops_of(value) else {
            return Completion::failed(value.clone(), Failure::Fail("malformed txn".into()), true);
        };
        let read_only = mops.iter().all(|m| matches!(m, Mop::Read(_)));
        let result = if mops.len() == 1 {
            client
                .call(&mop_cmd(&mops[0]))
                .and_then(|r| mop_result(&mops[0], &r))
                .map(|m| vec![m])
        } else {
            let cmds: Vec<Vec<Vec<u8>>> = mops.iter().map(mop_cmd).collect();
            client.transaction(&cmds).and_then(|replies| {
                if replies.len() != mops.len() {
                    return Err(Failure::Info(format!(
                        "EXEC returned {} replies for {} commands",
                        replies.len(),
                        mops.len()
                    )));
                }
                // An error inside EXEC's array: the block was applied, that
                // command failed but the others took effect.
                if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_)))
                {
                    return Err(Failure::Info(format!("error inside EXEC: {e}")));
                }
                mops.iter()
                    .zip(&replies)
                    .map(|(m, r)| mop_result(m, r))
                    .collect()
            })
        };
        match result {
            Ok(done) => Completion::ok(Edn::Vector(done)),
            Err(f) => Completion::failed(value.clone(), f, read_only),
        }
    }

    fn final_reads(&self) -> Vec<(String, Edn)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = st.used.clone();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| {
                (
                    "txn".to_string(),
                    Edn::Vector(vec![Edn::Vector(vec![kw("r"), Edn::Int(k), Edn::Nil])]),
                )
            })
            .collect()
    }
}

// ----- register -----

/// Operations on a key before it is retired.
const REG_OPS_PER_KEY: u64 = 200;
/// Keys in use at a time.
const REG_KEYS: usize = 2;

struct RegState {
    rng: StdRng,
    active: Vec<(i64, u64)>,
    next_key: i64,
    used: Vec<i64>,
}

pub struct Register {
    state: Mutex<RegState>,
}

impl Register {
    fn new(rng: StdRng) -> Register {
        Register {
            state: Mutex::new(RegState {
                rng,
                active: (0..REG_KEYS as i64).map(|k| (k, 0)).collect(),
                next_key: REG_KEYS as i64,
                used: Vec::new(),
            }),
        }
    }

    fn redis_key(k: i64) -> String {
        format!("reg:{k}")
    }
}

fn pair(k: i64, v: Edn) -> Edn {
    Edn::Vector(vec![Edn::Int(k), v])
}

impl Workload for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn next(&self) -> (String, Edn) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let slot = st.rng.gen_range(0..st.active.len());
        let key = st.active[slot].0;
        if !st.used.contains(&key) {
            st.used.push(key);
        }
        st.active[slot].1 += 1;
        if st.active[slot].1 >= REG_OPS_PER_KEY {
            st.active[slot] = (st.next_key, 0);
            st.next_key += 1;
        }
        let choices = if CAS_ENABLED { 3 } else { 2 };
        match st.rng.gen_range(0..choices) {
            0 => ("read".into(), pair(key, Edn::Nil)),
            1 => ("write".into(), pair(key, Edn::Int(st.rng.gen_range(0..5)))),
            _ => {
                let old = st.rng.gen_range(0..5);
                let new = st.rng.gen_range(0..5);
                (
                    "cas".into(),
                    pair(key, Edn::Vector(vec![Edn::Int(old), Edn::Int(new)])),
                )
            }
        }
    }

    fn invoke(&self, client: &mut NodeClient, _process: u64, f: &str, value: &Edn) -> Completion {
        let Edn::Vector(kv) = value else {
            return Completion::failed(
                value.clone(),
                Failure::Fail("malformed value".into()),
                true,
            );
        };
        let (Some(Edn::Int(k)), Some(v)) = (kv.first(), kv.get(1)) else {
            return Completion::failed(
                value.clone(),
                Failure::Fail("malformed value".into()),
                true,
            );
        };
        let key = Register::redis_key(*k);
        match (f, v) {
            ("read", _) => read_int(client, &key, value, |v| pair(*k, v.unwrap_or(Edn::Nil))),
            ("write", Edn::Int(x)) => match client.call(&["SET", key.as_str(), &x.to_string()]) {
                Ok(Reply::Simple(s)) if s == "OK" => Completion::ok(value.clone()),
                Ok(Reply::Error(e)) => {
                    Completion::failed(value.clone(), crate::client::classify_error(e), false)
                }
                Ok(other) => Completion::failed(value.clone(), unexpected(&other), false),
                Err(e) => Completion::failed(value.clone(), e, false),
            },
            ("cas", Edn::Vector(on)) if on.len() == 2 => {
                // An atomic compare-and-set, replicated as a script. GET of
                // a missing key is false in Lua: never equal to ARGV[1].
                const CAS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]); return 1 else return 0 end";
                let (Edn::Int(old), Edn::Int(new)) = (&on[0], &on[1]) else {
                    return Completion::failed(
                        value.clone(),
                        Failure::Fail("malformed cas".into()),
                        true,
                    );
                };
                match client.call(&[
                    "EVAL",
                    CAS,
                    "1",
                    key.as_str(),
                    &old.to_string(),
                    &new.to_string(),
                ]) {
                    Ok(Reply::Int(1)) => Completion::ok(value.clone()),
                    Ok(Reply::Int(0)) => {
                        Completion::failed(value.clone(), Failure::Fail(CAS_MISMATCH.into()), false)
                    }
                    Ok(Reply::Error(e)) => {
                        Completion::failed(value.clone(), crate::client::classify_error(e), false)
                    }
                    Ok(other) => Completion::failed(value.clone(), unexpected(&other), false),
                    Err(e) => Completion::failed(value.clone(), e, false),
                }
            }
            _ => Completion::failed(
                value.clone(),
                Failure::Fail(format!("unknown register op {f}")),
                true,
            ),
        }
    }

    fn final_reads(&self) -> Vec<(String, Edn)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = st.used.clone();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| ("read".to_string(), pair(k, Edn::Nil)))
            .collect()
    }
}

// ----- counter -----

pub struct Counter {
    rng: Mutex<StdRng>,
}

const COUNTER_KEY: &str = "counter";

impl Workload for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn next(&self) -> (String, Edn) {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.gen_bool(0.5) {
            ("add".into(), Edn::Int(1))
        } else {
            ("read".into(), Edn::Nil)
        }
    }

    fn invoke(&self, client: &mut NodeClient, _process: u64, f: &str, value: &Edn) -> Completion {
        match f {
            "add" => match client.call(&["INCR", COUNTER_KEY]) {
                Ok(Reply::Int(_)) => Completion::ok(Edn::Int(1)),
                Ok(Reply::Error(e)) => {
                    Completion::failed(value.clone(), crate::client::classify_error(e), false)
                }
                Ok(other) => Completion::failed(value.clone(), unexpected(&other), false),
                Err(e) => Completion::failed(value.clone(), e, false),
            },
            _ => read_int(client, COUNTER_KEY, value, |v| v.unwrap_or(Edn::Int(0))),
        }
    }

    fn final_reads(&self) -> Vec<(String, Edn)> {
        vec![("read".into(), Edn::Nil)]
    }
}

// ----- ttl -----

/// Keys in use at a time.
const TTL_KEYS: usize = 10;
/// Operations on a key before it is retired.
const TTL_OPS_PER_KEY: u64 = 60;
/// Short TTLs of `:set`, in ms (most sets).
pub const TTL_SHORT_MS: (i64, i64) = (50, 1000);
/// Long TTLs of `:set`, in ms (one set in four): they must outlive the
/// reads that follow them closely.
pub const TTL_LONG_MS: (i64, i64) = (3000, 8000);

struct TtlState {
    rng: StdRng,
    active: Vec<(i64, u64)>,
    next_key: i64,
    next_id: i64,
    used: Vec<i64>,
}

pub struct Ttl {
    state: Mutex<TtlState>,
}

impl Ttl {
    fn new(rng: StdRng) -> Ttl {
        Ttl {
            state: Mutex::new(TtlState {
                rng,
                active: (0..TTL_KEYS as i64).map(|k| (k, 0)).collect(),
                next_key: TTL_KEYS as i64,
                next_id: 1,
                used: Vec::new(),
            }),
        }
    }

    fn redis_key(k: i64) -> String {
        format!("ttl:{k}")
    }
}

/// A string value or nil.
fn str_or_nil(r: &Reply) -> Option<Edn> {
    match r {
        Reply::Bulk(None) => Some(Edn::Nil),
        Reply::Bulk(Some(b)) => Some(Edn::Str(String::from_utf8_lossy(b).into_owned())),
        _ => None,
    }
}

impl Workload for Ttl {
    fn name(&self) -> &'static str {
        "ttl"
    }

    fn next(&self) -> (String, Edn) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let slot = st.rng.gen_range(0..st.active.len());
        let key = st.active[slot].0;
        if !st.used.contains(&key) {
            st.used.push(key);
        }
        st.active[slot].1 += 1;
        if st.active[slot].1 >= TTL_OPS_PER_KEY {
            st.active[slot] = (st.next_key, 0);
            st.next_key += 1;
        }
        let k = Edn::Int(key);
        match st.rng.gen_range(0..100) {
            0..=19 => {
                let id = st.next_id;
                st.next_id += 1;
                let (lo, hi) = if st.rng.gen_bool(0.25) {
                    TTL_LONG_MS
                } else {
                    TTL_SHORT_MS
                };
                let ttl = st.rng.gen_range(lo..=hi);
                (
                    "set".into(),
                    Edn::Vector(vec![k, Edn::Int(id), Edn::Int(ttl)]),
                )
            }
            20..=29 => {
                let id = st.next_id;
                st.next_id += 1;
                ("append".into(), Edn::Vector(vec![k, Edn::Int(id)]))
            }
            30..=34 => ("persist".into(), Edn::Vector(vec![k, Edn::Nil])),
            35..=69 => ("get".into(), Edn::Vector(vec![k, Edn::Nil])),
            _ => ("read".into(), Edn::Vector(vec![k, Edn::Nil, Edn::Nil])),
        }
    }

    fn invoke(&self, client: &mut NodeClient, _process: u64, f: &str, value: &Edn) -> Completion {
        let bad =
            || Completion::failed(value.clone(), Failure::Fail("malformed value".into()), true);
        let Some(v) = value.as_vec() else {
            return bad();
        };
        let Some(Edn::Int(k)) = v.first() else {
            return bad();
        };
        let k = *k;
        let key = Ttl::redis_key(k);
        // A write's reply: `done` maps it to the completed value.
        let write = |r: Result<Reply, Failure>, done: &dyn Fn(&Reply) -> Option<Edn>| match r {
            Ok(Reply::Error(e)) => {
                Completion::failed(value.clone(), crate::client::classify_error(e), false)
            }
            Ok(r) => match done(&r) {
                Some(v) => Completion::ok(v),
                None => Completion::failed(value.clone(), unexpected(&r), false),
            },
            Err(e) => Completion::failed(value.clone(), e, false),
        };
        match (f, &v[1..]) {
            ("set", [Edn::Int(id), Edn::Int(ttl)]) => {
                let r = client.call(&[
                    "SET",
                    key.as_str(),
                    &format!("s{id}"),
                    "PX",
                    &ttl.to_string(),
                ]);
                write(r, &|r| {
                    matches!(r, Reply::Simple(s) if s == "OK").then(|| value.clone())
                })
            }
            ("append", [Edn::Int(id)]) => {
                let r = client.call(&["APPEND", key.as_str(), &format!("a{id}")]);
                write(r, &|r| matches!(r, Reply::Int(_)).then(|| value.clone()))
            }
            ("persist", [_]) => {
                let r = client.call(&["PERSIST", key.as_str()]);
                write(r, &|r| match r {
                    Reply::Int(x @ (0 | 1)) => Some(Edn::Vector(vec![Edn::Int(k), Edn::Int(*x)])),
                    _ => None,
                })
            }
            ("get", [_]) => match client.call(&["GET", key.as_str()]) {
                Ok(Reply::Error(e)) => {
                    Completion::failed(value.clone(), crate::client::classify_error(e), true)
                }
                Ok(r) => match str_or_nil(&r) {
                    Some(x) => Completion::ok(Edn::Vector(vec![Edn::Int(k), x])),
                    None => Completion::failed(value.clone(), unexpected(&r), true),
                },
                Err(e) => Completion::failed(value.clone(), e, true),
            },
            ("read", [_, _]) => {
                let cmds = vec![
                    vec![b"GET".to_vec(), key.clone().into_bytes()],
                    vec![b"PTTL".to_vec(), key.clone().into_bytes()],
                ];
                match client.transaction(&cmds) {
                    Ok(replies) => match replies.as_slice() {
                        [g, Reply::Int(p)] => match str_or_nil(g) {
                            Some(x) => {
                                Completion::ok(Edn::Vector(vec![Edn::Int(k), x, Edn::Int(*p)]))
                            }
                            None => Completion::failed(value.clone(), unexpected(g), true),
                        },
                        other => Completion::failed(
                            value.clone(),
                            Failure::Info(format!("unexpected EXEC replies {other:?}")),
                            true,
                        ),
                    },
                    Err(e) => Completion::failed(value.clone(), e, true),
                }
            }
            _ => Completion::failed(
                value.clone(),
                Failure::Fail(format!("unknown ttl op {f}")),
                true,
            ),
        }
    }

    fn final_reads(&self) -> Vec<(String, Edn)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = st.used.clone();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| {
                (
                    "read".to_string(),
                    Edn::Vector(vec![Edn::Int(k), Edn::Nil, Edn::Nil]),
                )
            })
            .collect()
    }
}

// ----- queue -----

/// The stream the queue workload uses.
pub const QUEUE_KEY: &str = "queue:q";
/// Its consumer group.
pub const QUEUE_GROUP: &str = "g";
/// The min-idle time (ms) of `:reclaim` and `:claim`: an entry delivered
/// but not acked for this long counts as its worker's being dead.
pub const QUEUE_MIN_IDLE_MS: u64 = 300;
/// Entries one `:reclaim` or `:claim` takes at most.
const QUEUE_CLAIM_COUNT: usize = 5;
/// Entries one step of the final drain takes at most.
const QUEUE_DRAIN_COUNT: usize = 100;
/// Percent of dequeues that skip their XACK (a worker dying after delivery).
pub const QUEUE_SKIP_ACK_PCT: u32 = 20;

struct QueueState {
    rng: StdRng,
    next_value: i64,
    /// Whether the current autoclaim pass of the final drain claimed
    /// anything (then another pass from 0-0 follows).
    pass_claimed: bool,
}

pub struct Queue {
    state: Mutex<QueueState>,
}

impl Queue {
    fn new(rng: StdRng) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                rng,
                next_value: 1,
                pass_claimed: false,
            }),
        }
    }
}

/// One delivered stream entry: its ID and its `v` field (an Int, or the
/// raw text if it is not one, which the checker reports).
type Delivered = (String, Edn);

/// Stream entries `[[id [field value ...]] ...]`; nil entries (deleted
/// while pending, in older servers' XCLAIM) are skipped.
fn stream_entries(r: &Reply) -> Option<Vec<Delivered>> {
    let Reply::Array(Some(items)) = r else {
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        match it {
            Reply::Array(None) | Reply::Bulk(None) => continue,
            Reply::Array(Some(e)) if e.len() == 2 => {
                let id = e[0].text()?;
                let Reply::Array(Some(fields)) = &e[1] else {
                    return None;
                };
                let mut v = Edn::Nil;
                for fv in fields.chunks(2) {
                    if let [Reply::Bulk(Some(f)), val] = fv {
                        if f.as_slice() == b"v" {
                            let t = val.text().unwrap_or_default();
                            v = match int_of(t.as_bytes()) {
                                Some(x) => Edn::Int(x),
                                None => Edn::Str(t),
                            };
                        }
                    }
                }
                out.push((id, v));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// XREADGROUP's reply: nil (nothing new) or `[[stream entries]]`.
fn xreadgroup_entries(r: &Reply) -> Option<Vec<Delivered>> {
    match r {
        Reply::Array(None) | Reply::Bulk(None) => Some(Vec::new()),
        Reply::Array(Some(streams)) => {
            let mut out = Vec::new();
            for s in streams {
                let Reply::Array(Some(kv)) = s else {
                    return None;
                };
                let [_, entries] = kv.as_slice() else {
                    return None;
                };
                out.extend(stream_entries(entries)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// XAUTOCLAIM's reply: `[next-cursor entries]` or `[next-cursor entries
/// deleted-ids]` (Redis 7).
fn xautoclaim_entries(r: &Reply) -> Option<(String, Vec<Delivered>)> {
    let Reply::Array(Some(parts)) = r else {
        return None;
    };
    if parts.len() < 2 {
        return None;
    }
    Some((parts[0].text()?, stream_entries(&parts[1])?))
}

/// Result of a delivering command: the reply's entries or how it failed.
fn delivered(
    r: Result<Reply, Failure>,
    parse: impl FnOnce(&Reply) -> Option<Vec<Delivered>>,
) -> Result<Vec<Delivered>, Failure> {
    match r {
        Ok(Reply::Error(e)) => Err(crate::client::classify_error(e)),
        Ok(r) => parse(&r).ok_or_else(|| unexpected(&r)),
        Err(e) => Err(e),
    }
}

/// XACK of each delivered entry (one at a time, so each count is that
/// entry's), unless `ack` is false: `[[v "id" ack] ...]`, ack 1 or 0, nil
/// when not acked or the XACK's outcome is unknown.
fn ack_all(client: &mut NodeClient, got: Vec<Delivered>, ack: bool) -> Edn {
    let mut out = Vec::with_capacity(got.len());
    for (id, v) in got {
        let a = if ack {
            match client.call(&["XACK", QUEUE_KEY, QUEUE_GROUP, id.as_str()]) {
                Ok(Reply::Int(n)) => Edn::Int(n),
                _ => Edn::Nil,
            }
        } else {
            Edn::Nil
        };
        out.push(Edn::Vector(vec![v, Edn::Str(id), a]));
    }
    Edn::Vector(out)
}

impl Workload for Queue {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn next(&self) -> (String, Edn) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        match st.rng.gen_range(0..100) {
            0..=49 => {
                let v = st.next_value;
                st.next_value += 1;
                ("enqueue".into(), Edn::Int(v))
            }
            50..=84 => {
                let skip = st.rng.gen_range(0..100) < QUEUE_SKIP_ACK_PCT;
                ("dequeue".into(), kw(if skip { "skip-ack" } else { "ack" }))
            }
            85..=94 => ("reclaim".into(), Edn::Nil),
            _ => ("claim".into(), Edn::Nil),
        }
    }

    fn setup(&self, client: &mut NodeClient) -> Result<(), Failure> {
        match client.call(&["XGROUP", "CREATE", QUEUE_KEY, QUEUE_GROUP, "$", "MKSTREAM"]) {
            Ok(Reply::Simple(s)) if s == "OK" => Ok(()),
            Err(Failure::Fail(e)) if e.starts_with("BUSYGROUP") => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        }
    }

    fn invoke(&self, client: &mut NodeClient, process: u64, f: &str, value: &Edn) -> Completion {
        let consumer = format!("c{process}");
        let c = consumer.as_str();
        let claim_count = QUEUE_CLAIM_COUNT.to_string();
        let min_idle = QUEUE_MIN_IDLE_MS.to_string();
        let drain_count = QUEUE_DRAIN_COUNT.to_string();
        match (f, value) {
            ("enqueue", Edn::Int(v)) => {
                match client.call(&["XADD", QUEUE_KEY, "*", "v", &v.to_string()]) {
                    Ok(Reply::Bulk(Some(_))) => Completion::ok(value.clone()),
                    Ok(Reply::Error(e)) => {
                        Completion::failed(value.clone(), crate::client::classify_error(e), false)
                    }
                    Ok(other) => Completion::failed(value.clone(), unexpected(&other), false),
                    Err(e) => Completion::failed(value.clone(), e, false),
                }
            }
            ("dequeue", Edn::Keyword(how)) => {
                let r = client.call(&[
                    "XREADGROUP",
                    "GROUP",
                    QUEUE_GROUP,
                    c,
                    "COUNT",
                    "1",
                    "STREAMS",
                    QUEUE_KEY,
                    ">",
                ]);
                match delivered(r, xreadgroup_entries) {
                    Ok(got) => Completion::ok(ack_all(client, got, how == "ack")),
                    Err(e) => Completion::failed(value.clone(), e, false),
                }
            }
            ("reclaim", _) => {
                let r = client.call(&[
                    "XAUTOCLAIM",
                    QUEUE_KEY,
                    QUEUE_GROUP,
                    c,
                    &min_idle,
                    "0-0",
                    "COUNT",
                    &claim_count,
                ]);
                match delivered(r, |r| xautoclaim_entries(r).map(|(_, e)| e)) {
                    Ok(got) => Completion::ok(ack_all(client, got, true)),
                    Err(e) => Completion::failed(value.clone(), e, false),
                }
            }
            ("claim", _) => {
                // XPENDING only reads: a failure there changed nothing.
                let ids: Vec<String> = match client.call(&[
                    "XPENDING",
                    QUEUE_KEY,
                    QUEUE_GROUP,
                    "-",
                    "+",
                    &claim_count,
                ]) {
                    Ok(Reply::Array(Some(rows))) => {
                        let ids: Option<Vec<String>> = rows
                            .iter()
                            .map(|row| match row {
                                Reply::Array(Some(cols)) => cols.first().and_then(Reply::text),
                                _ => None,
                            })
                            .collect();
                        match ids {
                            Some(ids) => ids,
                            None => {
                                return Completion::failed(
                                    value.clone(),
                                    Failure::Fail("unexpected XPENDING reply".into()),
                                    true,
                                )
                            }
                        }
                    }
                    Ok(Reply::Error(e)) => {
                        return Completion::failed(
                            value.clone(),
                            crate::client::classify_error(e),
                            true,
                        )
                    }
                    Ok(other) => {
                        return Completion::failed(value.clone(), unexpected(&other), true)
                    }
                    Err(e) => return Completion::failed(value.clone(), e, true),
                };
                if ids.is_empty() {
                    return Completion::ok(Edn::Vector(Vec::new()));
                }
                let mut args: Vec<&str> = vec!["XCLAIM", QUEUE_KEY, QUEUE_GROUP, c, &min_idle];
                args.extend(ids.iter().map(String::as_str));
                match delivered(client.call(&args), stream_entries) {
                    Ok(got) => Completion::ok(ack_all(client, got, true)),
                    Err(e) => Completion::failed(value.clone(), e, false),
                }
            }
            ("drain", Edn::Vector(step)) => match step.as_slice() {
                [Edn::Keyword(k), _] if k == "xreadgroup" => {
                    let r = client.call(&[
                        "XREADGROUP",
                        "GROUP",
                        QUEUE_GROUP,
                        c,
                        "COUNT",
                        &drain_count,
                        "STREAMS",
                        QUEUE_KEY,
                        ">",
                    ]);
                    match delivered(r, xreadgroup_entries) {
                        Ok(got) => Completion::ok(Edn::Vector(vec![
                            kw("xreadgroup"),
                            Edn::Nil,
                            ack_all(client, got, true),
                        ])),
                        Err(e) => Completion::failed(value.clone(), e, false),
                    }
                }
                [Edn::Keyword(k), Edn::Str(cursor)] if k == "autoclaim" => {
                    let r = client.call(&[
                        "XAUTOCLAIM",
                        QUEUE_KEY,
                        QUEUE_GROUP,
                        c,
                        "0",
                        cursor.as_str(),
                        "COUNT",
                        &drain_count,
                    ]);
                    let mut next = String::new();
                    match delivered(r, |r| {
                        xautoclaim_entries(r).map(|(n, e)| {
                            next = n;
                            e
                        })
                    }) {
                        Ok(got) => Completion::ok(Edn::Vector(vec![
                            kw("autoclaim"),
                            Edn::Str(next),
                            ack_all(client, got, true),
                        ])),
                        Err(e) => Completion::failed(value.clone(), e, false),
                    }
                }
                _ => {
                    Completion::failed(value.clone(), Failure::Fail("malformed drain".into()), true)
                }
            },
            _ => Completion::failed(
                value.clone(),
                Failure::Fail(format!("unknown queue op {f}")),
                true,
            ),
        }
    }

    fn final_reads(&self) -> Vec<(String, Edn)> {
        vec![(
            "drain".into(),
            Edn::Vector(vec![kw("xreadgroup"), Edn::Nil]),
        )]
    }

    fn final_next(&self, f: &str, value: &Edn) -> Option<(String, Edn)> {
        if f != "drain" {
            return None;
        }
        let v = value.as_vec()?;
        let got = v.get(2).and_then(Edn::as_vec).map_or(0, <[Edn]>::len);
        let autoclaim = |cursor: &str| {
            Some((
                "drain".to_string(),
                Edn::Vector(vec![kw("autoclaim"), Edn::Str(cursor.into())]),
            ))
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match v.first()?.as_keyword()? {
            "xreadgroup" if got > 0 => Some((
                "drain".into(),
                Edn::Vector(vec![kw("xreadgroup"), Edn::Nil]),
            )),
            "xreadgroup" => {
                st.pass_claimed = false;
                autoclaim("0-0")
            }
            "autoclaim" => {
                st.pass_claimed |= got > 0;
                match v.get(1) {
                    Some(Edn::Str(next)) if next != "0-0" => autoclaim(next),
                    // A pass that claimed something: another from the start
                    // (an XACK that failed left its entry pending).
                    _ if st.pass_claimed => {
                        st.pass_claimed = false;
                        autoclaim("0-0")
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_append_values_increase_per_key() {
        let w = make("list-append", 1).unwrap();
        let mut last: std::collections::HashMap<i64, i64> = Default::default();
        let mut lens = [0usize; MAX_TXN_LEN + 1];
        let mut mixed = 0;
        for _ in 0..5000 {
            let (f, v) = w.next();
            assert_eq!(f, "txn");
            let mops = mops_of(&v).unwrap();
            lens[mops.len()] += 1;
            if mops.iter().any(|m| matches!(m, Mop::Read(_)))
                && mops.iter().any(|m| matches!(m, Mop::Append(..)))
            {
                mixed += 1;
            }
            for m in mops {
                if let Mop::Append(k, x) = m {
                    let prev = last.insert(k, x).unwrap_or(0);
                    assert_eq!(x, prev + 1);
                }
            }
        }
        assert!(last.len() > LA_KEYS, "keys rotate");
        assert_eq!(lens[0], 0);
        assert!(
            lens[1..].iter().all(|&n| n > 0),
            "every length 1..=MAX: {lens:?}"
        );
        assert!(mixed > 0, "transactions mix appends and reads");
        assert!(!w.final_reads().is_empty());
    }

    #[test]
    fn register_keys_rotate() {
        let w = make("register", 1).unwrap();
        let mut cas = 0;
        for _ in 0..1000 {
            let (f, v) = w.next();
            assert!(f == "read" || f == "write" || f == "cas");
            assert!(matches!(v, Edn::Vector(_)));
            cas += usize::from(f == "cas");
        }
        assert!(cas > 0, "cas is issued");
        assert!(w.final_reads().len() >= 1000 / REG_OPS_PER_KEY as usize);
    }

    #[test]
    fn ttl_ids_are_unique_and_keys_rotate() {
        let w = make("ttl", 1).unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut fs = std::collections::HashMap::new();
        let mut keys = std::collections::HashSet::new();
        for _ in 0..3000 {
            let (f, v) = w.next();
            let v = v.as_vec().unwrap().to_vec();
            keys.insert(v[0].as_int().unwrap());
            if f == "set" || f == "append" {
                assert!(ids.insert(v[1].as_int().unwrap()), "unique ids");
            }
            if f == "set" {
                let ttl = v[2].as_int().unwrap();
                assert!(
                    (TTL_SHORT_MS.0..=TTL_SHORT_MS.1).contains(&ttl)
                        || (TTL_LONG_MS.0..=TTL_LONG_MS.1).contains(&ttl)
                );
            }
            *fs.entry(f).or_insert(0) += 1;
        }
        for f in ["set", "append", "persist", "get", "read"] {
            assert!(fs.get(f).copied().unwrap_or(0) > 0, "{f} is issued");
        }
        assert!(keys.len() > TTL_KEYS, "keys rotate");
        assert_eq!(w.final_reads().len(), keys.len());
    }

    #[test]
    fn queue_values_are_unique_and_every_op_is_issued() {
        let w = make("queue", 1).unwrap();
        let mut vals = std::collections::HashSet::new();
        let mut fs = std::collections::HashMap::new();
        let mut skips = 0;
        for _ in 0..3000 {
            let (f, v) = w.next();
            match f.as_str() {
                "enqueue" => assert!(vals.insert(v.as_int().unwrap()), "unique values"),
                "dequeue" => skips += usize::from(v.as_keyword() == Some("skip-ack")),
                _ => {}
            }
            *fs.entry(f).or_insert(0) += 1;
        }
        for f in ["enqueue", "dequeue", "reclaim", "claim"] {
            assert!(fs.get(f).copied().unwrap_or(0) > 0, "{f} is issued");
        }
        assert!(
            skips > 0 && skips < fs["dequeue"],
            "some dequeues skip the ack"
        );
    }

    #[test]
    fn queue_drain_goes_on_until_a_pass_claims_nothing() {
        let w = make("queue", 1).unwrap();
        let [(f, v)] = w.final_reads().try_into().unwrap();
        assert_eq!(
            (f.as_str(), v.to_string().as_str()),
            ("drain", "[:xreadgroup nil]")
        );
        let next = |v: &str| {
            w.final_next("drain", &crate::history::parse_edn(v).unwrap())
                .map(|(_, v)| v.to_string())
        };
        let one = "[[1 \"1-0\" 1]]";
        assert_eq!(
            next(&format!("[:xreadgroup nil {one}]")).unwrap(),
            "[:xreadgroup nil]"
        );
        assert_eq!(
            next("[:xreadgroup nil []]").unwrap(),
            "[:autoclaim \"0-0\"]"
        );
        assert_eq!(
            next(&format!("[:autoclaim \"5-0\" {one}]")).unwrap(),
            "[:autoclaim \"5-0\"]"
        );
        // The pass claimed something: one more pass.
        assert_eq!(
            next("[:autoclaim \"0-0\" []]").unwrap(),
            "[:autoclaim \"0-0\"]"
        );
        assert_eq!(next("[:autoclaim \"0-0\" []]"), None);
    }

    #[test]
    fn queue_replies_are_parsed() {
        let bulk = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        let entry = |id: &str, v: &str| {
            Reply::Array(Some(vec![
                bulk(id),
                Reply::Array(Some(vec![bulk("v"), bulk(v)])),
            ]))
        };
        let r = Reply::Array(Some(vec![Reply::Array(Some(vec![
            bulk(QUEUE_KEY),
            Reply::Array(Some(vec![entry("1-0", "7"), entry("2-0", "x")])),
        ]))]));
        assert_eq!(
            xreadgroup_entries(&r).unwrap(),
            vec![
                ("1-0".into(), Edn::Int(7)),
                ("2-0".into(), Edn::Str("x".into()))
            ]
        );
        assert_eq!(xreadgroup_entries(&Reply::Array(None)).unwrap(), vec![]);
        let r = Reply::Array(Some(vec![
            bulk("3-0"),
            Reply::Array(Some(vec![entry("1-0", "7"), Reply::Array(None)])),
            Reply::Array(Some(vec![])),
        ]));
        assert_eq!(
            xautoclaim_entries(&r).unwrap(),
            ("3-0".into(), vec![("1-0".into(), Edn::Int(7))])
        );
        assert!(xautoclaim_entries(&Reply::Int(1)).is_none());
    }
}
