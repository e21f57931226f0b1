//! The Raft thread: it owns the [`RaftNode`], takes requests from Redis
//! threads over a channel, ticks on `periodic-interval`, and hands work to
//! the transport and the apply queue. Also the global handle to it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};
use raft::eraftpb::Message;
use slog::{error, info, Logger};

use crate::apply::RedisApplier;
use crate::config::Settings;
use crate::error::Error;
use crate::ffi::RedisClient;
use crate::log_writer::{ThreadLogWriter, WriterHooks};
use crate::node::{NodeConfig, RaftNode, Request, SharedStatus, Status, ThreadExit};
use crate::storage::LogStore;
use crate::transport::{Transport, TransportConfig};

/// What Redis threads hold to talk to the running node.
pub struct NodeHandle {
    pub tx: Sender<Request<RedisClient>>,
    pub status: SharedStatus,
    pub store: LogStore,
    pub transport: Arc<Transport>,
    pub dbid: String,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl NodeHandle {
    /// Sends a request; if the thread is gone, the client gets an error.
    pub fn send(&self, req: Request<RedisClient>) {
        if let Err(e) = self.tx.send(req) {
            fail_request(e.0, Error::Other("the Raft thread has stopped".into()));
        }
    }

    pub fn status(&self) -> Status {
        self.status.read().clone()
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Request::Shutdown);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.transport.shutdown();
    }
}

fn fail_request(req: Request<RedisClient>, err: Error) {
    use crate::node::{Client, Reply};
    match req {
        Request::Write { client, .. }
        | Request::Propose { client, .. }
        | Request::Multi { client, .. }
        | Request::Read { client, .. }
        | Request::AddNode { client, .. }
        | Request::RemoveNode { client, .. }
        | Request::TransferLeader { client, .. }
        | Request::WaitVoter { client, .. } => client.reply(Reply::Error(err)),
        _ => {}
    }
}

static NODE: RwLock<Option<Arc<NodeHandle>>> = RwLock::new(None);

/// The running node, if this Redis is initialized or joining.
pub fn node() -> Option<Arc<NodeHandle>> {
    NODE.read().clone()
}

/// Why this node fail-stopped, if it did (see [`fail_stop`]).
pub fn failed() -> Option<String> {
    node().and_then(|n| n.status.read().failed.clone())
}

/// Fail-stop: the node can no longer be trusted (its dataset matches no
/// index, or an internal error). It stops voting, replicating, applying,
/// snapshotting and serving, for good: INFO shows `raft_state:failed` and
/// the reason, and an operator must restart it, or wipe it and rejoin.
/// Callable from any thread; the first reason stays.
pub fn fail_stop(reason: String) {
    crate::logging::warning(&format!(
        "{reason}; this node stops (no votes, no applying, no snapshots, no serving) until an operator restarts it or wipes it and joins it again"
    ));
    let Some(n) = node() else {
        return;
    };
    n.status.write().fail(&reason);
    // The Raft thread stops at this request (as when its log cannot be
    // written); if it is gone already, nothing more to do.
    let _ = n.tx.send(Request::LogFailed(reason));
}

pub fn clear_node() {
    if let Some(n) = NODE.write().take() {
        n.stop();
    }
}

pub fn transport_config(s: &Settings) -> TransportConfig {
    TransportConfig {
        connect_timeout: s.connection_timeout,
        io_timeout: s.response_timeout,
        reconnect_interval: s.reconnect_interval,
        auth: s.auth(),
        max_batch_bytes: s.append_req_max_size as usize,
        snapshot_chunk_bytes: crate::config::get(&crate::config::SNAPSHOT_REQ_MAX_SIZE)
            .clamp(1, 512 << 20) as usize,
        snapshot_chunks_in_flight: crate::config::get(&crate::config::SNAPSHOT_REQ_MAX_COUNT)
            .clamp(1, 1 << 16) as usize,
    }
}

pub fn node_config(s: &Settings, id: u64) -> NodeConfig {
    NodeConfig {
        id,
        tick: s.periodic_interval,
        election_ticks: s.election_ticks(),
        heartbeat_ticks: s.heartbeat_ticks(),
        max_size_per_msg: s.append_req_max_size,
        max_inflight_msgs: s.append_req_max_count,
        lease_reads: crate::config::lease_reads(),
    }
}

/// The transport as the Raft node sees it.
struct Net {
    transport: Arc<Transport>,
    dbid: String,
    logger: Logger,
}

impl crate::node::Network for Net {
    fn send(&self, msg: Message) {
        self.transport.send(msg);
    }
    fn flush(&self) {
        self.transport.flush();
    }
    fn upsert_peer(&self, id: u64, addr: &str) {
        self.transport.upsert_peer(id, addr);
    }
    fn remove_peer(&self, id: u64) {
        self.transport.remove_peer(id);
    }
    fn notify_removed(&self, id: u64, addr: &str) {
        // Best effort, off the Raft thread: the removed node may be down.
        let (addr, dbid, logger) = (addr.to_string(), self.dbid.clone(), self.logger.clone());
        let s = Settings::current();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let auth = s.auth();
                let auth_ref = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                if let Ok(mut c) =
                    crate::tls::connect(&addr, s.connection_timeout, s.response_timeout, auth_ref)
                {
                    let id_s = id.to_string();
                    if c.call(&[b"RAFT.NODESHUTDOWN", dbid.as_bytes(), id_s.as_bytes()])
                        .is_ok()
                    {
                        info!(logger, "told the removed node"; "id" => id);
                        return;
                    }
                }
                std::thread::sleep(s.reconnect_interval.max(Duration::from_millis(100)));
            }
            // It is down: its messages are answered "removed" when it is back.
            info!(logger, "could not tell the removed node; it learns when it comes back"; "id" => id);
        });
    }
}

/// Starts the Raft thread for an opened log and publishes its handle.
pub fn start(
    store: LogStore,
    id: u64,
    dbid: String,
    campaign: bool,
) -> Result<Arc<NodeHandle>, String> {
    let s = Settings::current();
    store.set_cache_limit(crate::config::get(&crate::config::LOG_MAX_CACHE_SIZE).max(0) as u64);
    let logger = crate::logging::logger();
    let transport = Arc::new(Transport::new(
        id,
        dbid.clone(),
        transport_config(&s),
        logger.clone(),
    ));
    let status: SharedStatus = Arc::new(RwLock::new(Status::default()));
    let net = Net {
        transport: transport.clone(),
        dbid: dbid.clone(),
        logger: logger.clone(),
    };
    let node: RaftNode<RedisClient> = RaftNode::new(
        node_config(&s, id),
        store.clone(),
        status.clone(),
        &net,
        crate::logging::raft_logger(),
    )
    .map_err(|e| format!("cannot start Raft: {e}"))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let writer_tx = tx.clone();
    let thread_status = status.clone();
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            // raft-rs and raft-engine panic on what they take for broken
            // invariants (a failed fsync; a peer's impossible message that
            // peer_check missed). Any end but a shutdown fail-stops the node.
            let failed = crate::node::guard_raft_thread(&thread_status, || {
                run(node, rx, writer_tx, net, logger, campaign)
            });
            if let Some(why) = failed {
                crate::logging::warning(&format!(
                    "{why}; this node stops (no votes, no applying, no snapshots, no serving) until an operator restarts it or wipes it and joins it again"
                ));
            }
        })
        .map_err(|e| format!("cannot start the Raft thread: {e}"))?;
    let handle = Arc::new(NodeHandle {
        tx,
        status,
        store,
        transport,
        dbid,
        thread: Mutex::new(Some(thread)),
    });
    *NODE.write() = Some(handle.clone());
    Ok(handle)
}

/// A node that cannot write its log must not take part any more:
/// acknowledging without persisting could lose data.
fn stop_failed(node: &mut RaftNode<RedisClient>, logger: &Logger, why: String) -> ThreadExit {
    let msg = format!("{why}; node stopped");
    error!(logger, "{}", msg);
    // Failed before the clients hear it, so what they read next agrees.
    node.status().write().fail(&msg);
    node.fail_all(Error::Unknown(msg.clone()));
    ThreadExit::Failed(msg)
}

/// Readies handled in a row before requests are looked at again.
const MAX_READIES_PER_ROUND: usize = 16;

/// Requests handled before each Ready: enough to batch many proposals into
/// one append and one fsync, few enough to keep ticks on time.
const MAX_REQUESTS_PER_ROUND: usize = 4096;

/// The log-writer thread's hooks: results come back as requests.
fn writer_hooks(tx: Sender<Request<RedisClient>>, transport: Arc<Transport>) -> WriterHooks {
    let failed_tx = tx.clone();
    WriterHooks {
        persisted: Box::new(move |n| {
            let _ = tx.send(Request::Persisted(n));
        }),
        send: Box::new(move |msgs| {
            for m in msgs {
                transport.send(m);
            }
            transport.flush();
        }),
        failed: Box::new(move |e| {
            let _ = failed_tx.send(Request::LogFailed(e));
        }),
    }
}

fn run(
    mut node: RaftNode<RedisClient>,
    rx: Receiver<Request<RedisClient>>,
    tx: Sender<Request<RedisClient>>,
    net: Net,
    logger: Logger,
    mut campaign: bool,
) -> ThreadExit {
    let mut applier = RedisApplier;
    match ThreadLogWriter::start(
        node.store().clone(),
        writer_hooks(tx, net.transport.clone()),
    ) {
        Ok(w) => node.set_log_writer(Box::new(w)),
        Err(e) => {
            error!(logger, "cannot start the log writer thread; writing the log on the Raft thread"; "error" => %e)
        }
    }
    let tick = Settings::current().periodic_interval;
    let mut next_tick = Instant::now() + tick;
    info!(logger, "Raft thread started"; "id" => node.id());
    // Right after INIT: no waiting for requests or a tick until the lone
    // voter has campaigned and handled the Ready that makes it leader.
    let mut no_wait = campaign;
    loop {
        let wait = if std::mem::take(&mut no_wait) {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(Request::Shutdown) => break,
            Ok(req) => {
                let mut failed = None;
                for req in std::iter::once(req).chain(rx.try_iter().take(MAX_REQUESTS_PER_ROUND)) {
                    match req {
                        Request::Shutdown => {
                            node.fail_all(Error::Unknown("node is shutting down".into()));
                            return ThreadExit::Shutdown;
                        }
                        Request::LogFailed(e) => failed = Some(e),
                        req => node.handle(req, &net),
                    }
                }
                if let Some(msg) = failed {
                    return stop_failed(&mut node, &logger, msg);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return stop_failed(
                    &mut node,
                    &logger,
                    "the Raft thread's request channel closed".into(),
                )
            }
        }
        if Instant::now() >= next_tick {
            node.tick(&net);
            for id in net.transport.take_unreachable() {
                node.report_unreachable(id);
            }
            for (id, delivered) in net.transport.take_snapshot_reports() {
                node.report_snapshot(id, delivered);
            }
            if net.transport.take_told_removed() {
                // Removed while it was down: it never saw the entry.
                node.handle(Request::Removed, &net);
            }
            // Compaction: a snapshot once the log outgrows log-max-file-size.
            let max = crate::config::get(&crate::config::LOG_MAX_FILE_SIZE).max(0) as u64;
            let wanted = node.store().take_snapshot_wanted();
            if (wanted || node.store().log_bytes() > max) && !node.is_removed() {
                crate::snapshot::request();
            }
            // Run-time settings; Raft's timing is load-time only (CONFIG SET
            // refuses it).
            let fresh = Settings::current();
            node.apply_settings(
                crate::config::lease_reads(),
                fresh.append_req_max_count,
                fresh.append_req_max_size,
            );
            net.transport.set_config(transport_config(&fresh));
            node.store().set_fsync(fresh.log_fsync);
            node.store().set_cache_limit(
                crate::config::get(&crate::config::LOG_MAX_CACHE_SIZE).max(0) as u64,
            );
            next_tick = Instant::now() + tick;
        }
        node.issue_reads();
        // Until nothing is ready: a Ready hands out a bounded share of the
        // committed entries, and the rest must not wait for the next tick.
        let mut failed = None;
        for _ in 0..MAX_READIES_PER_ROUND {
            if !node.raw().has_ready() {
                break;
            }
            if let Err(e) = node.process_ready(&net, &mut applier) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            return stop_failed(&mut node, &logger, format!("Raft log write failed: {e}"));
        }
        // Messages sent outside a Ready (a leader transfer's TimeoutNow).
        net.transport.flush();
        if campaign {
            // Right after INIT, once the first membership entry is applied,
            // a lone voter need not wait for an election timeout.
            campaign = false;
            node.campaign_if_alone();
            no_wait = true;
        }
    }
    node.fail_all(Error::Unknown("node is shutting down".into()));
    ThreadExit::Shutdown
}
