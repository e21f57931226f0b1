//! The `INFO raft` fields (also the text of RAFT.INFO), in the contract's
//! names and order.

use std::sync::atomic::{AtomicU64, Ordering};

use raft::Storage;
use redis_module::InfoContext;

use crate::apply::APPLIED_INDEX;
use crate::driver;
use crate::machine::expiry;

/// Commit index recovered at start: the node is "loading" until applied.
pub static RECOVERY_TARGET: AtomicU64 = AtomicU64::new(0);
/// Client commands forwarded to the leader (follower-proxy).
pub static PROXY_REQS: AtomicU64 = AtomicU64::new(0);

pub fn fields() -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = Vec::with_capacity(40);
    let mut put = |k: &str, v: String| f.push((k.to_string(), v));
    let applied = APPLIED_INDEX.load(Ordering::Acquire);
    let Some(n) = driver::node() else {
        put("node_id", "0".into());
        put("state", "uninitialized".into());
        put("role", "follower".into());
        put("is_voting", "no".into());
        put("leader_id", "-1".into());
        put("current_term", "0".into());
        put("peer_messages_dropped", "0".into());
        put("num_nodes", "0".into());
        put("num_voting_nodes", "0".into());
        for k in ["log_entries", "current_index", "commit_index"] {
            put(k, "0".into());
        }
        put("last_applied_index", applied.to_string());
        put("dbid", String::new());
        for k in [
            "snapshot_last_idx",
            "snapshot_last_term",
            "snapshot_size",
            "snapshot_in_progress",
            "snapshots_created",
            "snapshots_received",
            "fsync_count",
            "fsync_avg_microseconds",
            "fsync_max_microseconds",
            "file_size",
        ] {
            put(
                k,
                if k == "snapshot_in_progress" {
                    "no".into()
                } else {
                    "0".into()
                },
            );
        }
        put("proxy_reqs", PROXY_REQS.load(Ordering::Relaxed).to_string());
        put("open_transactions", crate::txn::open_count().to_string());
        put(
            "watching_clients",
            crate::machine::watch::watching_clients().to_string(),
        );
        put(
            "blocked_clients",
            crate::blocking::waiting_count().to_string(),
        );
        server_api(&mut put);
        return f;
    };
    let st = n.status();
    let cs = &st.membership.conf_state;
    let state = if st.failed.is_some() {
        "failed"
    } else if st.removed {
        "removed"
    } else if !st.is_voter() {
        "joining"
    } else if applied < RECOVERY_TARGET.load(Ordering::Acquire) {
        "loading"
    } else {
        "up"
    };
    put("node_id", st.node_id.to_string());
    put("state", state.into());
    if let Some(why) = &st.failed {
        // Only on a failed node: why it stopped (one line).
        put("failed_reason", why.replace(['\r', '\n'], " "));
    }
    put("role", st.role.as_str().into());
    put("is_voting", if st.is_voter() { "yes" } else { "no" }.into());
    put(
        "leader_id",
        if st.leader_id == 0 {
            "-1".into()
        } else {
            st.leader_id.to_string()
        },
    );
    put("current_term", st.term.to_string());
    put(
        "peer_messages_dropped",
        st.peer_messages_dropped.to_string(),
    );
    put(
        "num_nodes",
        (cs.voters.len() + cs.learners.len()).to_string(),
    );
    put("num_voting_nodes", cs.voters.len().to_string());
    let peers = n.transport.stats();
    let mut i = 0;
    for (id, addr) in &st.membership.addrs {
        if *id == st.node_id {
            continue;
        }
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
        let ps = peers.get(id).cloned().unwrap_or_default();
        put(
            &format!("node{i}"),
            format!(
                "id={id},state={},voting={},addr={host},port={port},last_conn_secs={},conn_errors={},conn_oks={}",
                if ps.connected { "connected" } else { "disconnected" },
                if cs.voters.contains(id) { "yes" } else { "no" },
                ps.last_conn_secs,
                ps.conn_errors,
                ps.conn_oks
            ),
        );
        i += 1;
    }
    let (snap_idx, snap_term) = n.store.snapshot_point();
    put("log_entries", n.store.entry_count().to_string());
    let (cache_entries, cache_bytes) = n.store.cache_stats();
    put("cache_num_entries", cache_entries.to_string());
    put("cache_memory_size", cache_bytes.to_string());
    put(
        "current_index",
        n.store.last_index().unwrap_or(st.last_index).to_string(),
    );
    put("commit_index", st.commit_index.to_string());
    put("last_applied_index", applied.to_string());
    put("dbid", n.dbid.clone());
    put("snapshot_last_idx", snap_idx.to_string());
    put("snapshot_last_term", snap_term.to_string());
    {
        use crate::snapshot as snap;
        put(
            "snapshot_size",
            snap::SIZE.load(Ordering::Relaxed).to_string(),
        );
        let busy = snap::IN_PROGRESS.load(Ordering::Relaxed);
        put(
            "snapshot_in_progress",
            if busy { "yes" } else { "no" }.into(),
        );
        put(
            "snapshots_created",
            snap::CREATED.load(Ordering::Relaxed).to_string(),
        );
        put(
            "snapshots_received",
            snap::RECEIVED.load(Ordering::Relaxed).to_string(),
        );
    }
    let fs = n.store.fsync_stats();
    put("fsync_count", fs.count.to_string());
    put(
        "fsync_avg_microseconds",
        fs.total_micros
            .checked_div(fs.count)
            .unwrap_or(0)
            .to_string(),
    );
    put("fsync_max_microseconds", fs.max_micros.to_string());
    put("file_size", n.store.file_size().to_string());
    put("proxy_reqs", PROXY_REQS.load(Ordering::Relaxed).to_string());
    // Clients with a MULTI open here (queued by this node, not Redis).
    put("open_transactions", crate::txn::open_count().to_string());
    // Clients with WATCHed keys here, and the WATCH history (replicated).
    put(
        "watching_clients",
        crate::machine::watch::watching_clients().to_string(),
    );
    let (records, floor) = crate::machine::watch::history_size();
    put("watch_history_records", records.to_string());
    put("watch_history_floor", floor.to_string());
    put(
        "blocked_clients",
        crate::blocking::waiting_count().to_string(),
    );
    put(
        "keys_expired",
        expiry::EXPIRED.load(Ordering::Relaxed).to_string(),
    );
    put("expiry_index_keys", expiry::indexed_keys().to_string());
    // The replicated script cache: equal on every node at one applied index.
    let (scripts, digest) = crate::machine::script_cache::summary();
    put("scripts_cached", scripts.to_string());
    put("scripts_digest", format!("{digest:016x}"));
    server_api(&mut put);
    f
}

/// Which module API paths this server gives the node (detected at load):
/// how a received snapshot is loaded (`rdbload`: RM_RdbLoad, Redis 7.2+ and
/// Valkey; `debug-reload`: DEBUG RELOAD NOSAVE on 7.0) and how many were,
/// and whether raft.* commands have ACL categories (7.2+).
fn server_api(put: &mut impl FnMut(&str, String)) {
    let api = if crate::ffi::has_rdb_load() {
        "rdbload"
    } else {
        "debug-reload"
    };
    put("snapshot_load_api", api.into());
    put(
        "snapshots_loaded",
        crate::snapshot::LOADS.load(Ordering::Relaxed).to_string(),
    );
    let cats = crate::acl::CATEGORIES_SET.load(Ordering::Relaxed);
    put("acl_categories", if cats { "yes" } else { "no" }.into());
}

/// The `# raft` section of INFO.
#[allow(deprecated)] // the builder cannot add the module's default section
pub fn info_handler(ctx: &InfoContext, _for_crash_report: bool) {
    ctx.add_info_section(None);
    for (k, v) in fields() {
        // Redis copies the value as a C string: a NUL (from an address a
        // peer sent) would abort it.
        ctx.add_info_field_str(&k, &v.replace('\0', "?"));
    }
}
