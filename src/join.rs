//! RAFT.CLUSTER JOIN: runs on its own thread. It tries each address in
//! turn, follows -MOVED to the leader, asks it to add this node
//! (RAFT.NODE ADD), and answers the client once this node is a voter, or
//! with a clear error when join-timeout runs out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::{self, Settings};
use crate::driver;
use crate::error::Error;
use crate::ffi::RedisClient;
use crate::node::{Client, Reply, Request};
use crate::resp::{Connection, RespValue};
use crate::storage::{LogWrite, NodeMeta};

/// A JOIN is running on this server. Two at once could pick two random
/// ids for one address, and one of them, giving up, would wipe the log
/// the other's node was added with.
static JOINING: AtomicBool = AtomicBool::new(false);

/// Cleared when the join thread ends, however it ends.
struct Joining;

impl Drop for Joining {
    fn drop(&mut self) {
        JOINING.store(false, Ordering::Release);
    }
}

pub fn in_progress() -> bool {
    JOINING.load(Ordering::Acquire)
}

/// Starts a JOIN. On the main thread, after `commands::cluster` found
/// none in progress (only the main thread starts one).
pub fn start(targets: Vec<String>, my_addr: String, client: RedisClient) {
    JOINING.store(true, Ordering::Release);
    let joining = Joining;
    // On the main thread: a failed spawn must not panic (it would abort
    // redis-server). The client, dropped with the closure, is then told the
    // request was abandoned.
    if let Err(e) = std::thread::Builder::new()
        .name("raft-join".into())
        .spawn(move || {
            let _joining = joining;
            if let Err(e) = join(&targets, &my_addr, client) {
                crate::logging::warning(&format!("join failed: {e}"));
            }
        })
    {
        crate::logging::warning(&format!("cannot start the join thread: {e}"));
    }
}

enum Attempt {
    Added,
    Moved(String),
    Failed(String),
    /// Refused for a reason no retry changes (`node::REMOVE_FIRST`,
    /// `node::ID_NOT_REUSABLE`): JOIN answers at once.
    Refused(String),
    /// RAFT.NODE ADD was sent but got no answer (or -TIMEOUT): it may
    /// still commit.
    Unknown(String),
}

fn info_field(info: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(info);
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("raft_{name}:"))
            .map(|v| v.trim().to_string())
    })
}

/// The node that answered (its id, at the address we used) and the other
/// nodes its RAFT.INFO lists.
fn known_members(info: &[u8], addr: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if let Some(id) = info_field(info, "node_id").and_then(|v| v.parse().ok()) {
        out.push((id, addr.to_string()));
    }
    let text = String::from_utf8_lossy(info);
    for line in text
        .lines()
        .filter(|l| l.starts_with("raft_node") && l.contains("id="))
    {
        let kv: std::collections::HashMap<&str, &str> = line
            .split_once(':')
            .map_or("", |(_, v)| v)
            .split(',')
            .filter_map(|p| p.split_once('='))
            .collect();
        if let (Some(id), Some(a), Some(p)) = (
            kv.get("id").and_then(|v| v.parse().ok()),
            kv.get("addr"),
            kv.get("port"),
        ) {
            out.push((id, format!("{a}:{p}")));
        }
    }
    out
}

fn join(targets: &[String], my_addr: &str, client: RedisClient) -> Result<(), String> {
    let s = Settings::current();
    let deadline = Instant::now() + s.join_timeout;
    // Resuming a join that was cut short: keep the id already in the log.
    let resuming = driver::node().map(|n| n.status().node_id);
    let id = match (resuming, config::get(&config::ID) as u64) {
        (Some(id), _) => id,
        (None, 0) => {
            use rand::Rng;
            rand::thread_rng().gen_range(1..=i32::MAX as u64)
        }
        (None, id) => id,
    };
    let mut queue: Vec<String> = targets.to_vec();
    let mut last_error = String::from("no address answered");
    // An ADD of ours whose outcome is unknown: this node may be a member.
    let mut maybe_added = false;
    let mut refused = false;
    let mut i = 0;
    while Instant::now() < deadline {
        let addr = queue[i % queue.len()].clone();
        i += 1;
        match attempt(&addr, id, my_addr, &s, resuming.is_some() || maybe_added) {
            Attempt::Added => {
                crate::logging::notice(&format!("joined the cluster through {addr} as node {id}"));
                match driver::node() {
                    Some(n) => n.send(Request::WaitVoter { client, deadline }),
                    None => client.reply(Reply::Error(Error::Other(
                        "join succeeded but the node stopped".into(),
                    ))),
                }
                return Ok(());
            }
            Attempt::Moved(leader) => {
                if !queue.contains(&leader) {
                    queue.push(leader.clone());
                }
                // Try the leader next.
                i = queue.iter().position(|a| *a == leader).unwrap_or(0);
                continue;
            }
            Attempt::Failed(e) => last_error = format!("{addr}: {e}"),
            Attempt::Refused(e) => {
                last_error = format!("{addr}: {e}");
                refused = true;
                break;
            }
            Attempt::Unknown(e) => {
                maybe_added = true;
                last_error = format!("{addr}: {e}");
            }
        }
        std::thread::sleep(
            s.reconnect_interval
                .max(std::time::Duration::from_millis(50)),
        );
    }
    if maybe_added {
        // The ADD may still commit: wiping the log now would leave the
        // cluster a learner that can never catch up. The node keeps its id
        // and log; if it was added it catches up and is promoted.
        let msg = format!(
            "no answer to RAFT.NODE ADD within join-timeout ({last_error}); this node may have been added: it keeps its id {id} and its log and is promoted once it has caught up if so; run JOIN again to wait for that"
        );
        client.reply(Reply::Error(Error::Unknown(msg.clone())));
        return Err(msg);
    }
    // Never added: go back to uninitialized so JOIN can be retried.
    if let Some(n) = driver::node() {
        if !n.status().membership.addrs.contains_key(&id) {
            driver::clear_node();
            let _ = std::fs::remove_dir_all(config::LOG_FILENAME.get());
        }
    }
    let msg = if refused {
        format!("cannot join: {last_error}")
    } else {
        format!("failed to join the cluster within join-timeout: {last_error}")
    };
    client.reply(Reply::Error(Error::Other(msg.clone())));
    Err(msg)
}

fn attempt(addr: &str, id: u64, my_addr: &str, s: &Settings, resuming: bool) -> Attempt {
    let auth = s.auth();
    let auth_ref = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let mut conn =
        match crate::tls::connect(addr, s.connection_timeout, s.response_timeout, auth_ref) {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(format!("cannot connect: {e}")),
        };
    // Learn the cluster's dbid first, so this node accepts its messages.
    let (dbid, members) = match conn.call(&[b"RAFT.INFO".as_slice()]) {
        Ok(RespValue::Bulk(Some(info))) => match info_field(&info, "dbid") {
            Some(d) if !d.is_empty() => (d, known_members(&info, addr)),
            _ => return Attempt::Failed("that node is not part of a cluster".into()),
        },
        Ok(other) => return Attempt::Failed(format!("unexpected RAFT.INFO reply: {other:?}")),
        Err(e) => return Attempt::Failed(format!("RAFT.INFO failed: {e}")),
    };
    if let Some(e) = read_mode_mismatch(&mut conn) {
        return Attempt::Refused(e);
    }
    // Our id is a member's, and not because of an earlier JOIN of ours: a
    // server that lost its data under a fixed raft.id. It must not start a
    // node under that id: the leader still counts it as that member, and
    // an empty log that votes can undo committed entries.
    if !resuming && !is_member(id) {
        if let Some((_, at)) = members.iter().find(|(m, _)| *m == id) {
            return Attempt::Refused(format!(
                "node id {id} already exists (a member at {at}); if that node's data was wiped, {} (RAFT.NODE REMOVE {id}) and join it with a new id",
                crate::node::REMOVE_FIRST
            ));
        }
    }
    if let Err(e) = ensure_node(id, &dbid) {
        return Attempt::Failed(e);
    }
    // Until this node applies the membership entries it cannot answer the
    // leader: teach its transport the members it can see now.
    // They are also kept, so that a restart before the first membership
    // entry still knows whom to answer (the leader waits for replies before
    // it sends a snapshot). The Raft thread does both: it alone writes the
    // log, and it skips them once a newer membership has arrived (this
    // thread could read an old one and write it back over a newer one).
    if let (Some(n), Ok(RespValue::Bulk(Some(info)))) =
        (driver::node(), conn.call(&[b"RAFT.INFO".as_slice()]))
    {
        let peers = known_members(&info, addr)
            .into_iter()
            .filter(|(peer, _)| *peer != id)
            .collect();
        n.send(Request::LearnPeers { peers });
    }
    let id_s = id.to_string();
    // Adding waits for a commit: allow it the join budget, not one response.
    conn.set_io_timeout(s.response_timeout.max(std::time::Duration::from_secs(10)));
    match conn.call(&[
        b"RAFT.NODE".as_slice(),
        b"ADD",
        id_s.as_bytes(),
        my_addr.as_bytes(),
    ]) {
        Ok(RespValue::Simple(ref ok)) if ok == "OK" => Attempt::Added,
        Ok(RespValue::Error(e)) if e.starts_with("MOVED ") => match e.split_whitespace().nth(2) {
            Some(leader) => Attempt::Moved(leader.to_string()),
            None => Attempt::Failed(e),
        },
        // An earlier ADD of ours went through but its reply was lost (or
        // this node was killed after it, before hearing of it).
        Ok(RespValue::Error(e)) if e.contains("already exists") && (is_member(id) || resuming) => {
            Attempt::Added
        }
        Ok(RespValue::Error(e))
            if e.starts_with("ERR")
                && (e.contains(crate::node::REMOVE_FIRST)
                    || e.contains(crate::node::ID_NOT_REUSABLE)) =>
        {
            Attempt::Refused(e.trim_start_matches("ERR ").to_string())
        }
        Ok(RespValue::Error(e)) if e.starts_with("TIMEOUT") => Attempt::Unknown(e),
        Ok(RespValue::Error(e)) => Attempt::Failed(e),
        Ok(other) => Attempt::Failed(format!("unexpected reply {other:?}")),
        Err(e) => Attempt::Unknown(format!("RAFT.NODE ADD failed: {e}")),
    }
}

/// Leases are safe only if every node loaded with read-mode lease and the
/// same election timing (config.rs): a node that differs from the member
/// it asks is refused before it is added. A member that does not let the
/// cluster user run CONFIG GET is not checked.
fn read_mode_mismatch(conn: &mut Connection) -> Option<String> {
    let mut theirs = Vec::new();
    for name in [
        "raft.read-mode",
        "raft.election-timeout",
        "raft.periodic-interval",
    ] {
        match conn.call(&[b"CONFIG".as_slice(), b"GET", name.as_bytes()]) {
            Ok(RespValue::Array(Some(v))) if v.len() == 2 => match &v[1] {
                RespValue::Bulk(Some(b)) => theirs.push(String::from_utf8_lossy(b).into_owned()),
                _ => return None,
            },
            _ => return None,
        }
    }
    let ours = [
        config::READ_MODE.get(),
        config::get(&config::ELECTION_TIMEOUT).to_string(),
        config::get(&config::PERIODIC_INTERVAL).to_string(),
    ];
    let lease = ours[0] == "lease" || theirs[0] == "lease";
    if ours[0] != theirs[0] || (lease && ours[1..] != theirs[1..]) {
        return Some(format!(
            "this node has read-mode {} (election-timeout {}, periodic-interval {}) but the cluster has {} ({}, {}): with lease reads every node must load the same read-mode and timing",
            ours[0], ours[1], ours[2], theirs[0], theirs[1], theirs[2]
        ));
    }
    None
}

fn is_member(id: u64) -> bool {
    driver::node().is_some_and(|n| n.status().membership.addrs.contains_key(&id))
}

/// Opens the log and starts the Raft thread of the joining node, once.
fn ensure_node(id: u64, dbid: &str) -> Result<(), String> {
    if let Some(n) = driver::node() {
        if n.dbid != dbid {
            return Err(format!(
                "cluster dbid {dbid} differs from the one being joined ({})",
                n.dbid
            ));
        }
        return Ok(());
    }
    let store =
        crate::commands::open_log().map_err(|e| format!("cannot open the Raft log: {e}"))?;
    store
        .write(LogWrite {
            meta: Some(NodeMeta {
                node_id: id,
                dbid: dbid.to_string(),
                removed: false,
            }),
            ..Default::default()
        })
        .map_err(|e| format!("cannot write the Raft log: {e}"))?;
    driver::start(store, id, dbid.to_string(), false)?;
    Ok(())
}
