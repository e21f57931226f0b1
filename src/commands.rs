//! The module's commands: RAFT, RAFT.CLUSTER, RAFT.NODE, RAFT.INFO,
//! RAFT.TRANSFER_LEADER, RAFT.TIMEOUT_NOW, RAFT.DEBUG and the internal
//! node-to-node commands.

use std::sync::atomic::Ordering;

use protobuf::Message as _;
use raft::eraftpb::Message;
use raft::Storage as _;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use crate::apply;
use crate::config;
use crate::driver::{self, NodeHandle};
use crate::entry::Payload;
use crate::error::Error;
use crate::ffi::{self, RedisClient};
use crate::intercept::{classify, Class};
use crate::machine::protocol;
use crate::node::{Request, Role};
use crate::storage::{LogStore, NodeMeta};

fn err(e: Error) -> RedisError {
    RedisError::String(e.to_string())
}

fn args_bytes(args: &[RedisString]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_slice().to_vec()).collect()
}

/// A request was handed on; the client is blocked and answered later.
fn no_reply() -> RedisResult {
    Ok(RedisValue::NoReply)
}

/// The running node, or the contract's error for a node that has none.
pub(crate) fn running_node() -> Result<std::sync::Arc<NodeHandle>, RedisError> {
    driver::node().ok_or_else(|| {
        if starting() {
            RedisError::Str("LOADING the Raft node is starting")
        } else {
            err(Error::NoCluster)
        }
    })
}

pub(crate) fn check_serving(n: &NodeHandle) -> Result<(), RedisError> {
    let st = n.status.read();
    if let Some(f) = &st.failed {
        return Err(RedisError::String(format!(
            "ERR this node failed and stopped: {f}; use another node"
        )));
    }
    if st.removed {
        return Err(err(Error::Removed));
    }
    Ok(())
}

/// The raft.* commands (but RAFT, which carries client commands) run at
/// once or not at all: inside a transaction they are refused, and the
/// transaction fails, as Redis does for commands not allowed in MULTI.
fn not_in_transaction(ctx: &Context) -> Result<(), RedisError> {
    let me = ffi::client_id(ctx.ctx);
    if crate::txn::in_multi(me) {
        crate::txn::mark_failed(me);
        return Err(RedisError::Str(
            "ERR Command not allowed inside a transaction",
        ));
    }
    Ok(())
}

/// The node-to-node commands: from the cluster user only, never queued.
fn node_to_node(ctx: &Context) -> Result<(), RedisError> {
    not_in_transaction(ctx)?;
    crate::acl::require_cluster_user(ctx.ctx)
}

/// `RAFT <command> [args...]`, and every intercepted client command.
pub fn raft(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let argv = args_bytes(&args[1..]);
    let class = {
        // All arguments: CONFIG SET and REPLICAOF are judged by them.
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        classify(&refs)
    };
    let me = ffi::client_id(ctx.ctx);
    if class == Class::Unknown {
        if crate::txn::in_multi(me) {
            crate::txn::mark_failed(me);
        }
        return Err(RedisError::String(crate::intercept::unknown_command_error(
            &argv,
        )));
    }
    if class != Class::PassThrough {
        // As Redis does before it runs a command: the arity, then the
        // client's rights for the command it sent (RAFT grants nothing).
        // Inside MULTI, either fails the transaction (EXECABORT).
        let checked = match crate::intercept::arity_error(&argv) {
            Some(e) => Err(RedisError::String(e)),
            None => crate::acl::check(ctx.ctx, &argv),
        };
        if let Err(e) = checked {
            if argv[0].eq_ignore_ascii_case(b"exec") {
                // Redis refuses EXEC itself by aborting the transaction.
                if crate::txn::take(me).is_some() {
                    crate::machine::watch::take(me);
                }
                let text = error_text(&e);
                return Err(RedisError::String(format!(
                    "EXECABORT Transaction discarded because of: {text}"
                )));
            }
            if crate::txn::in_multi(me) {
                crate::txn::mark_failed(me);
            }
            return Err(e);
        }
    }
    if class == Class::Txn {
        return transaction(ctx, me, &argv);
    }
    if class == Class::Unblock {
        // Not a data command: runs at once, inside MULTI too.
        return crate::blocking::client_unblock(ctx, &argv);
    }
    if crate::txn::in_multi(me) {
        return match class {
            Class::Write | Class::Blocking if over_maxmemory(&argv) => {
                crate::txn::mark_failed(me);
                Err(RedisError::Str(OOM))
            }
            // A blocking command in MULTI runs in the block's entry without
            // blocking, as in Redis.
            Class::Write | Class::Read | Class::Blocking => {
                crate::txn::queue(me, argv);
                Ok(RedisValue::SimpleStringStatic("QUEUED"))
            }
            Class::Refuse(why) => {
                crate::txn::mark_failed(me);
                Err(err(Error::Unsupported(why)))
            }
            _ => Err(RedisError::Str("ERR not a data command")),
        };
    }
    match class {
        Class::Txn | Class::Unknown | Class::Unblock => unreachable!("handled above"),
        Class::Blocking => crate::blocking::command(ctx, argv),
        Class::Refuse(why) => Err(err(Error::Unsupported(why))),
        Class::PassThrough => Err(err(Error::Unsupported(format!(
            "'{}' is not a data command: run it without RAFT",
            String::from_utf8_lossy(&argv[0])
        )))),
        Class::Write => route(ctx, argv, false),
        Class::Read => route(ctx, argv, true),
    }
}

fn error_text(e: &RedisError) -> String {
    match e {
        RedisError::Str(s) => s.to_string(),
        RedisError::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// RAFT._ERR <text>: answers the error `text` (a command of a MULTI block
/// refused at EXEC, in its place in the block, on every node alike).
pub const ERROR_CALL: &[u8] = b"RAFT._ERR";

/// RAFT._ERR <text>.
pub fn error_call(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    match args.get(1) {
        Some(text) => Err(RedisError::String(text.to_string_lossy())),
        None => Err(RedisError::WrongArity),
    }
}

/// Redis's own reply to a write refused for memory.
pub(crate) const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// A write that may grow the dataset (`denyoom`) while this node uses more
/// than maxmemory: refused as Redis refuses it.
pub(crate) fn over_maxmemory(argv: &[Vec<u8>]) -> bool {
    ffi::used_memory_ratio() > 1.0
        && (crate::intercept::has_flag(argv, "denyoom")
            || crate::machine::script_cache::denies_oom(argv))
}

/// RAFT._SCRIPTW / RAFT._SCRIPTR: a command of a script an entry runs,
/// under the machine's rules (`machine::script`).
pub fn script_call(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let writes = args[0]
        .as_slice()
        .eq_ignore_ascii_case(crate::machine::script::WRITE_CALL);
    let argv = args_bytes(&args[1..]);
    // In the script's protocol (redis.setresp).
    protocol::of_caller(ctx.ctx, || {
        crate::machine::script::call(ctx.ctx, argv, writes)
    })
    .write(ctx.ctx);
    no_reply()
}

/// WATCH: on the leader only (the EXEC must run there; a follower answers
/// -MOVED); see `machine::watch`.
fn watch(me: u64, argv: &[Vec<u8>]) -> RedisResult {
    if crate::txn::in_multi(me) {
        // As this server does: Redis 7.0 answers this, newer servers (WATCH
        // flagged no-multi) refuse it and fail the transaction.
        if crate::intercept::has_flag(argv, "no_multi") {
            crate::txn::mark_failed(me);
            return Err(RedisError::Str(
                "ERR Command not allowed inside a transaction",
            ));
        }
        return Err(RedisError::Str("ERR WATCH inside MULTI is not allowed"));
    }
    let n = running_node()?;
    check_serving(&n)?;
    let (role, leader_err) = {
        let st = n.status.read();
        (st.role, st.not_leader_error())
    };
    if role != Role::Leader {
        return Err(err(leader_err));
    }
    let now = crate::machine::now_ms().max(apply::applied_time_ms());
    let applied = apply::APPLIED_INDEX.load(Ordering::Acquire);
    crate::machine::watch::watch(apply::call_ctx(), me, &argv[1..], applied, now);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// MULTI / EXEC / DISCARD / WATCH / UNWATCH (see `txn`).
fn transaction(ctx: &Context, me: u64, argv: &[Vec<u8>]) -> RedisResult {
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
    match name.as_str() {
        "WATCH" => return watch(me, argv),
        "UNWATCH" if crate::txn::in_multi(me) => {
            // Queued, as Redis does: it answers OK inside EXEC's reply.
            crate::txn::queue(me, argv.to_vec());
            return Ok(RedisValue::SimpleStringStatic("QUEUED"));
        }
        "UNWATCH" => {
            crate::machine::watch::take(me);
            return Ok(RedisValue::SimpleStringStatic("OK"));
        }
        _ => {}
    }
    if argv.len() != 1 {
        return Err(RedisError::String(format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        )));
    }
    match name.as_str() {
        "MULTI" => {
            if crate::txn::begin(me) {
                Ok(RedisValue::SimpleStringStatic("OK"))
            } else {
                Err(RedisError::Str("ERR MULTI calls can not be nested"))
            }
        }
        "DISCARD" => match crate::txn::take(me) {
            Some(_) => {
                crate::machine::watch::take(me);
                Ok(RedisValue::SimpleStringStatic("OK"))
            }
            None => Err(RedisError::Str("ERR DISCARD without MULTI")),
        },
        _ => {
            let Some(q) = crate::txn::take(me) else {
                return Err(RedisError::Str("ERR EXEC without MULTI"));
            };
            let watched = crate::machine::watch::take(me);
            if q.failed {
                return Err(RedisError::Str(
                    "EXECABORT Transaction discarded because of previous errors.",
                ));
            }
            if q.cmds.is_empty() && watched.is_none() {
                return Ok(RedisValue::Array(Vec::new()));
            }
            let n = running_node()?;
            check_serving(&n)?;
            let (role, leader_err) = {
                let st = n.status.read();
                (st.role, st.not_leader_error())
            };
            if role != Role::Leader {
                return Err(err(leader_err));
            }
            // Rights may have changed since the commands were queued: as
            // Redis does at EXEC, a command no longer allowed answers
            // -NOPERM in its place (every node runs the same error) and
            // the others run.
            let q_cmds: Vec<Vec<Vec<u8>>> = q
                .cmds
                .into_iter()
                .map(|argv| match crate::acl::exec_recheck(ctx.ctx, &argv) {
                    None => argv,
                    Some(text) => vec![ERROR_CALL.to_vec(), text.into_bytes()],
                })
                .collect();
            let q = crate::txn::Queued { cmds: q_cmds, ..q };
            let rights = if q.cmds.iter().any(|c| crate::machine::script::is_script(c)) {
                crate::acl::script_rights(ctx.ctx)
            } else {
                None
            };
            let client = RedisClient::block(ctx.ctx).map_err(err)?;
            n.send(match (rights, watched) {
                (None, None) => Request::Multi {
                    cmds: q.cmds,
                    client,
                },
                (rights, watched) => {
                    let mut payload = Payload::Multi(q.cmds);
                    if let Some(r) = rights {
                        payload = Payload::Rights(r, Box::new(payload));
                    }
                    if let Some(keys) = watched {
                        payload = Payload::Watched(keys, Box::new(payload));
                    }
                    Request::Propose { payload, client }
                }
            });
            no_reply()
        }
    }
}

fn route(ctx: &Context, argv: Vec<Vec<u8>>, read: bool) -> RedisResult {
    let n = running_node()?;
    check_serving(&n)?;
    let (role, term, leader_err, lease_until) = {
        let st = n.status.read();
        (st.role, st.term, st.not_leader_error(), st.lease_until)
    };
    // A script of a user with limited rights carries them in its entry, so
    // every node checks its commands alike: through the log even when it
    // only reads, and never forwarded (the leader would run it as the
    // cluster user).
    let rights = if crate::machine::script::is_script(&argv) {
        crate::acl::script_rights(ctx.ctx)
    } else {
        None
    };
    if let Some(rights) = rights {
        if role != Role::Leader {
            return Err(err(leader_err));
        }
        let client = RedisClient::block(ctx.ctx).map_err(err)?;
        n.send(Request::Propose {
            payload: Payload::Rights(rights, Box::new(Payload::Command(argv))),
            client,
        });
        return no_reply();
    }
    if read && config::UNSAFE_LOCAL_READS.get() {
        // Test knob (unsafe): serve from this node's dataset, unchecked.
        if let Some(outcome) = protocol::of_caller(ctx.ctx, || apply::read_now(&argv)) {
            outcome.write(ctx.ctx);
            return no_reply();
        }
    }
    if role != Role::Leader {
        // The proxy relays RESP2 replies: a RESP3 client is sent to the
        // leader instead, where it gets Redis's own RESP3 reply.
        if config::FOLLOWER_PROXY.get() && !ffi::is_resp3(ctx.ctx) {
            if let Error::Moved(addr) = &leader_err {
                let client = RedisClient::block(ctx.ctx).map_err(err)?;
                crate::proxy::forward(addr.clone(), argv, client);
                return no_reply();
            }
        }
        return Err(err(leader_err));
    }
    if !read && over_maxmemory(&argv) {
        // Refused before it is proposed: once committed, an entry is applied
        // on every node whatever its memory, so nodes never split on it.
        return Err(RedisError::Str(OOM));
    }
    // The setting is read here too: switched to readindex, no read is
    // served from a lease, even before the Raft thread's next tick.
    let in_lease =
        config::lease_reads() && lease_until.is_some_and(|t| std::time::Instant::now() < t);
    if read
        && (!config::QUORUM_READS.get() || in_lease)
        && apply::APPLIED_TERM.load(Ordering::Acquire) == term
    {
        // Opt-in: a leader that has applied an entry of its own term serves
        // reads locally, without a quorum round: under a lease still held
        // (read-mode lease), or unchecked (quorum-reads no: may be stale if
        // it was cut off).
        match protocol::of_caller(ctx.ctx, || apply::read_now(&argv)) {
            Some(outcome) => {
                outcome.write(ctx.ctx);
                return no_reply();
            }
            None => {
                // It would see a key whose time has come: through the log.
                let client = RedisClient::block(ctx.ctx).map_err(err)?;
                apply::through_the_log(argv, client);
                return no_reply();
            }
        }
    }
    let client = RedisClient::block(ctx.ctx).map_err(err)?;
    n.send(if read {
        Request::Read { argv, client }
    } else {
        Request::Write { argv, client }
    });
    no_reply()
}

fn random_hex(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}

fn random_id() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(1..=i32::MAX as u64)
}

/// This node's address for other nodes: `raft.addr`, else the first
/// non-loopback IPv4 interface and the Redis port (the TLS port with
/// tls-enabled yes: other nodes connect there).
pub fn self_addr(ctx: &Context) -> Result<String, RedisError> {
    let a = config::ADDR.get();
    if !a.is_empty() {
        return Ok(a);
    }
    let port_setting = if config::TLS_ENABLED.get() {
        "tls-port"
    } else {
        "port"
    };
    let port = match ctx.call("CONFIG", &["GET", port_setting]) {
        Ok(RedisValue::Array(v)) if v.len() == 2 => match &v[1] {
            RedisValue::SimpleString(s) | RedisValue::BulkString(s) => s.clone(),
            RedisValue::StringBuffer(b) => String::from_utf8_lossy(b).into_owned(),
            _ => "6379".into(),
        },
        _ => "6379".into(),
    };
    Ok(format!(
        "{}:{port}",
        crate::netif::first_non_loopback_ipv4().unwrap_or_else(|| "127.0.0.1".into())
    ))
}

fn open_store() -> Result<LogStore, RedisError> {
    open_log().map_err(|e| RedisError::String(format!("ERR cannot open the Raft log: {e}")))
}

/// Opens the Raft log named by log-filename, its file size scaled to the
/// compaction threshold.
pub fn open_log() -> Result<LogStore, crate::storage::StorageError> {
    let path = config::LOG_FILENAME.get();
    LogStore::open_sized(
        std::path::Path::new(&path),
        config::LOG_FSYNC.get(),
        config::get(&config::LOG_MAX_FILE_SIZE).max(0) as u64,
    )
}

/// RAFT.CLUSTER INIT [dbid] | JOIN addr [addr ...]
pub fn cluster(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let sub = args[1].to_string_lossy().to_ascii_uppercase();
    if crate::join::in_progress() {
        return Err(RedisError::Str(
            "ERR a RAFT.CLUSTER JOIN is already in progress on this node; wait for its answer",
        ));
    }
    if let Some(n) = driver::node() {
        let st = n.status();
        if st.removed || n.store.meta().removed {
            // Its log says it was removed, and its id cannot be reused.
            return Err(RedisError::String(format!(
                "ERR this node was removed from the cluster; to join again, stop it, delete its Raft log '{}' and RDB file, and start it with a new id (raft.id 0, or one never used in this cluster)",
                config::LOG_FILENAME.get()
            )));
        }
        // A JOIN that was cut short (the node was killed before the leader
        // added it) leaves a node in no configuration: JOIN resumes it.
        let never_joined = st.membership.index == 0;
        if !(sub == "JOIN" && never_joined) {
            return Err(RedisError::Str("ERR Already cluster member"));
        }
    }
    match sub.as_str() {
        "INIT" => {
            if args.len() > 3 {
                return Err(RedisError::WrongArity);
            }
            let dbid = match args.get(2) {
                Some(d) => {
                    let d = d.to_string_lossy();
                    if d.len() != 32 || !d.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(RedisError::Str(
                            "ERR invalid dbid: expected 32 alphanumeric characters",
                        ));
                    }
                    d
                }
                None => random_hex(32),
            };
            let id = match config::get(&config::ID) as u64 {
                0 => random_id(),
                id => id,
            };
            let addr = self_addr(ctx)?;
            let store = open_store()?;
            if !store.meta().dbid.is_empty() || store.last_index().unwrap_or(0) > 0 {
                return Err(RedisError::String(format!(
                    "ERR the Raft log '{}' already holds a cluster; remove it to start anew",
                    config::LOG_FILENAME.get()
                )));
            }
            let meta = NodeMeta {
                node_id: id,
                dbid: dbid.clone(),
                removed: false,
            };
            store
                .write(crate::storage::LogWrite {
                    meta: Some(meta),
                    ..Default::default()
                })
                .and_then(|_| crate::node::RaftNode::<RedisClient>::bootstrap(&store, id, &addr))
                .map_err(|e| RedisError::String(format!("ERR cannot write the Raft log: {e}")))?;
            driver::start(store, id, dbid.clone(), true)
                .map_err(|e| RedisError::String(format!("ERR {e}")))?;
            crate::logging::notice(&format!(
                "initialized a new cluster: dbid {dbid}, node id {id}, addr {addr}"
            ));
            // Blocked only now: a client blocked and then answered by an
            // error return would get two replies.
            match RedisClient::block(ctx.ctx).ok() {
                Some(client) => {
                    answer_init_when_ready(client, dbid);
                    no_reply()
                }
                // A context that cannot block (MULTI, a script).
                None => Ok(RedisValue::SimpleString(format!("OK {dbid}"))),
            }
        }
        "JOIN" => {
            if args.len() < 3 {
                return Err(RedisError::WrongArity);
            }
            let mut targets = Vec::new();
            for a in &args[2..] {
                let a = a.to_string_lossy();
                config::parse_addr(&a).map_err(|e| RedisError::String(format!("ERR {e}")))?;
                targets.push(a);
            }
            let addr = self_addr(ctx)?;
            let client = RedisClient::block(ctx.ctx).map_err(err)?;
            crate::join::start(targets, addr, client);
            no_reply()
        }
        _ => Err(RedisError::String(format!(
            "ERR unknown RAFT.CLUSTER subcommand '{sub}'"
        ))),
    }
}

/// Answers INIT once the new node leads and has applied an entry of its
/// term, so that the next command is served (the lone voter campaigns at
/// once; this takes milliseconds).
fn answer_init_when_ready(client: RedisClient, dbid: String) {
    let wait = move || {
        let deadline = std::time::Instant::now()
            + (config::Settings::current().election_timeout * 10)
                .max(std::time::Duration::from_secs(10));
        loop {
            let Some(n) = driver::node() else {
                return client.reply_error_text("ERR the node stopped");
            };
            let st = n.status();
            if let Some(why) = &st.failed {
                return client.reply_error_text(&format!("ERR {why}"));
            }
            if st.role == Role::Leader && apply::APPLIED_TERM.load(Ordering::Acquire) == st.term {
                let text = format!("OK {dbid}");
                return client.reply_with(move |ctx| ffi::reply_simple(ctx, &text));
            }
            if std::time::Instant::now() > deadline {
                return client.reply_error_text(&format!(
                    "TIMEOUT cluster {dbid} was created, but this node does not lead yet; see INFO raft"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("raft-init".into())
        .spawn(wait)
    {
        // The client was moved into the closure and is dropped with it:
        // it gets the TIMEOUT of an abandoned request.
        crate::logging::warning(&format!("cannot wait for the first election: {e}"));
    }
}

fn parse_u64(a: &RedisString, what: &str) -> Result<u64, RedisError> {
    a.to_string_lossy()
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| RedisError::String(format!("ERR invalid {what}")))
}

/// RAFT.NODE ADD id addr | REMOVE id
pub fn node(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    if args.len() < 3 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    check_serving(&n)?;
    let sub = args[1].to_string_lossy().to_ascii_uppercase();
    match sub.as_str() {
        "ADD" if args.len() == 4 => {
            let id = parse_u64(&args[2], "node id")?;
            let addr = args[3].to_string_lossy();
            config::parse_addr(&addr).map_err(|e| RedisError::String(format!("ERR {e}")))?;
            let client = RedisClient::block(ctx.ctx).map_err(err)?;
            n.send(Request::AddNode { id, addr, client });
            no_reply()
        }
        "REMOVE" if args.len() == 3 => {
            let id = parse_u64(&args[2], "node id")?;
            let client = RedisClient::block(ctx.ctx).map_err(err)?;
            n.send(Request::RemoveNode { id, client });
            no_reply()
        }
        "ADD" | "REMOVE" => Err(RedisError::WrongArity),
        _ => Err(RedisError::String(format!(
            "ERR unknown RAFT.NODE subcommand '{sub}'"
        ))),
    }
}

/// RAFT.TRANSFER_LEADER [id]
pub fn transfer_leader(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    if args.len() > 2 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    check_serving(&n)?;
    let to = match args.get(1) {
        Some(a) => Some(parse_u64(a, "node id")?),
        None => None,
    };
    let client = RedisClient::block(ctx.ctx).map_err(err)?;
    n.send(Request::TransferLeader { to, client });
    no_reply()
}

/// RAFT.TIMEOUT_NOW
pub fn timeout_now(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    check_serving(&n)?;
    n.send(Request::TimeoutNow);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// RAFT.DEBUG EXEC <command...> | DIGEST | COMPACT | CLASSIFY <command...> | FAILPOINT <name> crash|off
pub fn debug(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    let sub = args[1].to_string_lossy().to_ascii_uppercase();
    match sub.as_str() {
        "EXEC" if args.len() >= 3 => {
            // Runs locally through this command's context: our filter skips
            // the module's own calls, so nothing is replicated.
            let argv = args_bytes(&args[2..]);
            match ffi::call(ctx.ctx, &argv) {
                Ok(reply) => {
                    ffi::reply_call(ctx.ctx, &reply);
                    no_reply()
                }
                Err(text) => Err(RedisError::String(text)),
            }
        }
        "DIGEST" if args.len() == 2 => {
            // DEBUG DIGEST plus what it leaves out (consumer groups, the
            // script cache): equal on every node at one applied index.
            crate::machine::digest::of_dataset(ctx.ctx)
                .map(RedisValue::BulkString)
                .map_err(|e| RedisError::String(format!("ERR {e}")))
        }
        "COMPACT" => {
            running_node()?;
            if config::SNAPSHOT_DISABLE.get() {
                return Err(RedisError::Str(
                    "ERR snapshots are disabled (raft.snapshot-disable)",
                ));
            }
            let client = RedisClient::block(ctx.ctx).map_err(err)?;
            // On success the client is answered once the log is compacted.
            match crate::snapshot::start(Some(client)) {
                Ok(_) => no_reply(),
                Err(e) => Err(RedisError::String(format!("ERR {e}"))),
            }
        }
        "CLASSIFY" if args.len() >= 3 => {
            // How this node treats a command line (the README's command
            // table is made from this: tests/command_table.rs).
            let argv = args_bytes(&args[2..]);
            let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            let class = match classify(&refs) {
                Class::Write => "write".to_string(),
                Class::Read => "read".into(),
                Class::PassThrough => "local".into(),
                Class::Txn => "transaction".into(),
                Class::Blocking | Class::Unblock => "blocking".into(),
                Class::Unknown => "unknown".into(),
                Class::Refuse(why) => format!("refused: {why}"),
            };
            Ok(RedisValue::BulkString(class))
        }
        "FAILPOINT" if args.len() == 4 => {
            let name = args[2].to_string_lossy();
            let action = args[3].to_string_lossy().to_ascii_lowercase();
            crate::failpoint::configure(&name, &action)
                .map_err(|e| RedisError::String(format!("ERR {e}")))?;
            Ok(RedisValue::SimpleStringStatic("OK"))
        }
        _ => Err(RedisError::String(format!(
            "ERR unknown RAFT.DEBUG subcommand '{sub}'"
        ))),
    }
}

/// RAFT.INFO: the same text as INFO raft.
pub fn info(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    not_in_transaction(ctx)?;
    let mut out = String::from("# Raft\r\n");
    for (k, v) in crate::info::fields() {
        out.push_str(&format!("raft_{k}:{v}\r\n"));
    }
    Ok(RedisValue::BulkString(out))
}

/// RAFT.APPENDENTRIES / RAFT.REQUESTVOTE <dbid> <from> <msg> [<msg> ...]
/// Every message is decoded and checked before any is stepped, so a
/// malformed request changes nothing.
pub fn peer_messages(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    node_to_node(ctx)?;
    if args.len() < 4 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    if args[1].as_slice() != n.dbid.as_bytes() {
        return Err(RedisError::Str(
            "ERR dbid mismatch: the sender belongs to another cluster",
        ));
    }
    if let Some(why) = &n.status.read().failed {
        // A stopped node takes no part: its peers must not count on it.
        return Err(RedisError::String(format!(
            "ERR this node failed and stopped: {why}"
        )));
    }
    let from = parse_u64(&args[2], "sender id")?;
    let me = n.status.read().node_id;
    let mut msgs = Vec::with_capacity(args.len() - 3);
    for a in &args[3..] {
        let m = Message::parse_from_bytes(a.as_slice())
            .map_err(|_| RedisError::Str("ERR malformed Raft message"))?;
        if m.from != from || m.to != me {
            return Err(RedisError::Str(
                "ERR Raft message addressed to another node",
            ));
        }
        if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            // The data came in RAFT.LOADSNAPSHOT chunks: step the message
            // only if the whole file arrived intact.
            let meta = m.get_snapshot().get_metadata();
            let desc = crate::storage::SnapshotDescriptor::decode(&m.get_snapshot().data)
                .map_err(|e| RedisError::String(format!("ERR bad snapshot descriptor: {e}")))?;
            crate::snapshot::accept_received(meta.index, meta.term, &desc)
                .map_err(|e| RedisError::String(format!("ERR {e}")))?;
        }
        msgs.push(m);
    }
    // Its transport recognises the "removed" answer.
    let Some(msgs) = crate::node::admit_from(&n.status.read().membership, from, msgs) else {
        return Err(RedisError::String(crate::transport::removed_reply(from)));
    };
    n.send(Request::Messages(msgs));
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// RAFT.LOADSNAPSHOT <dbid> <from> <index> <term> <offset> <total> <crc32> <chunk>:
/// one chunk of a snapshot file streamed by the leader.
pub fn load_snapshot(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    node_to_node(ctx)?;
    if args.len() != 9 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    if args[1].as_slice() != n.dbid.as_bytes() {
        return Err(RedisError::Str(
            "ERR dbid mismatch: the sender belongs to another cluster",
        ));
    }
    let index = parse_u64(&args[3], "index")?;
    let term = parse_u64(&args[4], "term")?;
    let num = |a: &RedisString, what: &str| {
        a.to_string_lossy()
            .parse::<u64>()
            .map_err(|_| RedisError::String(format!("ERR invalid {what}")))
    };
    let offset = num(&args[5], "offset")?;
    let total = num(&args[6], "size")?;
    let crc =
        u32::try_from(num(&args[7], "crc")?).map_err(|_| RedisError::Str("ERR invalid crc"))?;
    crate::snapshot::receive_chunk(index, term, offset, total, crc, args[8].as_slice())
        .map_err(|e| RedisError::String(format!("ERR {e}")))?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// RAFT.NODESHUTDOWN <dbid> <id>: the leader tells a node it was removed.
pub fn node_shutdown(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    node_to_node(ctx)?;
    if args.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let n = running_node()?;
    if args[1].as_slice() != n.dbid.as_bytes() {
        return Err(RedisError::Str("ERR dbid mismatch"));
    }
    let id = parse_u64(&args[2], "node id")?;
    if id != n.status.read().node_id {
        return Err(RedisError::Str("ERR node id mismatch"));
    }
    n.send(Request::Removed);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// At load: start the node if a log with a cluster is already there.
pub fn start_existing(_ctx: &Context) -> Result<(), String> {
    let path = config::LOG_FILENAME.get();
    if !std::path::Path::new(&path).exists() {
        return Ok(());
    }
    // A snapshot child of a killed predecessor may hold the log's lock for
    // a moment longer (it dies with its parent).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let store = loop {
        match open_log() {
            Err(crate::storage::StorageError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    let meta = store.meta();
    if meta.dbid.is_empty() || meta.node_id == 0 {
        return Ok(()); // an empty log (e.g. an aborted join): start uninitialized
    }
    let configured = config::get(&config::ID) as u64;
    if configured != 0 && configured != meta.node_id {
        return Err(format!(
            "raft.id {configured} does not match node id {} recorded in the Raft log '{path}'",
            meta.node_id
        ));
    }
    crate::logging::notice(&format!(
        "recovering from the Raft log '{path}': node id {}, dbid {}, commit index {}",
        meta.node_id,
        meta.dbid,
        store.hard_state().commit
    ));
    // A damaged or missing snapshot refuses the load now, before Redis
    // tries to load it.
    crate::snapshot::check_before_load(&store)?;
    // INFO says "loading" until the recovered commit index is applied again.
    crate::info::RECOVERY_TARGET.store(
        store.hard_state().commit,
        std::sync::atomic::Ordering::Release,
    );
    // The Raft thread starts once Redis has loaded the RDB: only then is it
    // known which index the dataset holds.
    *PENDING_START.lock() = Some((store, meta));
    extern "C" fn finish_start(_: *mut std::ffi::c_void) {
        let Some((store, meta)) = PENDING_START.lock().take() else {
            return;
        };
        // A panic (raft-rs refusing the recovered state) refuses the start
        // too, with its reason, instead of aborting.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::snapshot::reconcile_at_start(&store, &meta.dbid).and_then(|_| {
                driver::start(store, meta.node_id, meta.dbid.clone(), false).map(|_| ())
            })
        }))
        .unwrap_or_else(|p| {
            Err(format!(
                "internal error: {}",
                crate::guard::panic_text(p.as_ref())
            ))
        });
        match started {
            Ok(()) => crate::snapshot::publish_source_at_start(),
            Err(e) => {
                // Serving without a consistent dataset is never an option.
                crate::logging::warning(&format!("RedisRaft: refusing to start: {e}"));
                std::process::exit(1);
            }
        }
    }
    if !ffi::run_on_main_thread(finish_start, std::ptr::null_mut()) {
        return Err("cannot schedule the start of the Raft node".into());
    }
    Ok(())
}

/// A recovered log waiting for Redis to finish loading the RDB.
static PENDING_START: parking_lot::Mutex<Option<(LogStore, NodeMeta)>> =
    parking_lot::Mutex::new(None);

/// True between load and the start of a recovered node.
pub fn starting() -> bool {
    PENDING_START.lock().is_some()
}

/// A Redis setting's value through CONFIG GET ("" if unknown).
pub fn redis_config(ctx: &Context, name: &str) -> String {
    match ctx.call("CONFIG", &["GET", name]) {
        Ok(RedisValue::Array(v)) if v.len() == 2 => match &v[1] {
            RedisValue::SimpleString(s) | RedisValue::BulkString(s) => s.clone(),
            RedisValue::StringBuffer(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// Settings check at load: refuse or override Redis settings that would
/// break consistency, with a logged reason.
pub fn check_redis_settings(ctx: &Context) -> Result<(), String> {
    use crate::intercept::{AOF_WHY, EVICTION_WHY, REPLICA_WHY, SAVE_WHY};
    let get = |name: &str| redis_config(ctx, name);
    if get("cluster-enabled") == "yes" {
        return Err(
            "cluster-enabled yes is not compatible with RedisRaft: disable Redis Cluster".into(),
        );
    }
    let role = ctx.call("ROLE", &[] as &[&str]);
    if let Ok(RedisValue::Array(v)) = role {
        if matches!(v.first(), Some(RedisValue::SimpleString(s)) | Some(RedisValue::BulkString(s)) if s == "slave")
        {
            return Err(format!("replicaof is set: {REPLICA_WHY}"));
        }
    }
    let set = |name: &str, value: &str, why: &str| {
        crate::logging::warning(&format!("overriding {name} to '{value}': {why}"));
        let _ = ctx.call("CONFIG", &["SET", name, value]);
    };
    if get("appendonly") == "yes" {
        set("appendonly", "no", AOF_WHY);
    }
    if !get("save").is_empty() {
        set("save", "", SAVE_WHY);
    }
    let policy = get("maxmemory-policy");
    if !policy.is_empty() && policy != "noeviction" {
        set("maxmemory-policy", "noeviction", EVICTION_WHY);
    }
    if get("databases").parse::<u32>().unwrap_or(1) > 1 {
        crate::logging::warning(
            "databases > 1: only database 0 is replicated; SELECT of another database is refused",
        );
    }
    Ok(())
}

pub fn log_loaded() {
    crate::logging::notice(&format!(
        "RedisRaft {} loaded (raft-rs {}, RdbLoad API {})",
        env!("CARGO_PKG_VERSION"),
        "0.7",
        if ffi::has_rdb_load() {
            "available"
        } else {
            "not available: Redis < 7.2"
        }
    ));
}
