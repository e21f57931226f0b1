//! Node-to-node messages: one sender thread and one connection per peer.
//!
//! Raft messages travel as module commands over the peer's Redis port:
//! `RAFT.APPENDENTRIES <dbid> <from> <msg>...` (votes: RAFT.REQUESTVOTE),
//! each `<msg>` one protobuf-encoded message. Messages are one-way: answers
//! come back as commands from the peer, so a `+OK` only says "queued there".
//!
//! Batching: the thread takes everything queued (up to `max_batch_bytes`),
//! packs consecutive messages of one kind into one command, writes all the
//! commands in one write and reads their `+OK`s. Whatever Raft produces in
//! the meantime waits in the queue and goes in the next batch, so the busier
//! the node, the bigger the batches, with no added delay when idle.
//!
//! Failures: a message that cannot go out now is dropped (Raft resends, and
//! a stale message is worth nothing) and the peer is reported unreachable
//! so Raft slows down to probing. The thread keeps a connection open to its
//! peer, retrying every `reconnect_interval` while the peer is down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use slog::{debug, info, warn, Logger};

use crate::resp::{Closer, Connection, RespValue};

#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub reconnect_interval: Duration,
    pub auth: Option<(String, String)>,
    /// append-req-max-size: bytes of encoded messages per batch (one
    /// message bigger than this still goes, alone).
    pub max_batch_bytes: usize,
    /// snapshot-req-max-size: bytes per RAFT.LOADSNAPSHOT chunk.
    pub snapshot_chunk_bytes: usize,
    /// snapshot-req-max-count: chunks in flight per follower.
    pub snapshot_chunks_in_flight: usize,
}

#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    pub addr: String,
    pub connected: bool,
    /// Seconds since the last successful connect; 0 if never.
    pub last_conn_secs: u64,
    pub conn_errors: u64,
    pub conn_oks: u64,
}

/// Most messages waiting for one peer (while its connection is being made
/// or its socket is full): a peer that is down or slow must not make this
/// node's memory grow; Raft copes with the loss.
const QUEUE_BOUND: usize = 4096;
/// Most bytes waiting for one peer, for the same reason.
const QUEUE_MAX_BYTES: usize = 64 << 20;
/// How often the sender thread drains replies, checks for a silent peer and
/// looks at its stop flag and address.
const POLL: Duration = Duration::from_millis(100);
/// Floor of the reconnect interval, so a zero setting cannot spin.
const MIN_RECONNECT: Duration = Duration::from_millis(10);
/// The same peer error is logged at warning level at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

const APPEND_CMD: &[u8] = b"RAFT.APPENDENTRIES";
const VOTE_CMD: &[u8] = b"RAFT.REQUESTVOTE";

/// Where the connection to a peer is.
enum LinkState {
    /// None, and none being made before `Link::retry_at`: messages are
    /// dropped (a message queued now would be stale by then).
    Down,
    /// The sender thread is connecting: messages wait in the outbox.
    Connecting,
    /// Connected; whoever flushes writes without blocking.
    Up(Connection),
    /// The sender thread holds the connection for a blocking write (the
    /// socket was full); messages wait in the outbox.
    Busy,
}

/// One peer's connection and what waits to go through it. Shared by the
/// Raft thread (which queues and flushes) and the peer's sender thread
/// (which connects, finishes writes the socket could not take at once,
/// drains replies while the Raft thread is idle, and notices a silent peer).
struct Link {
    state: LinkState,
    /// Messages queued since the last flush, encoded.
    outbox: Vec<Encoded>,
    outbox_bytes: usize,
    /// When the oldest message in the outbox was queued.
    outbox_since: Option<Instant>,
    /// Commands being written; `wbuf[..wpos]` went out already.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Commands written whose reply has not been read yet.
    unanswered: usize,
    /// Last reply read or byte written while something was outstanding.
    last_progress: Instant,
    /// No connect attempt before this (while Down).
    retry_at: Instant,
    /// A snapshot transfer for the sender thread to run.
    snapshot: Option<Message>,
    last_error_log: Option<(String, Instant)>,
}

impl Link {
    fn new() -> Link {
        let now = Instant::now();
        Link {
            // The sender thread connects at once; messages queue meanwhile.
            state: LinkState::Connecting,
            outbox: Vec::new(),
            outbox_bytes: 0,
            outbox_since: None,
            wbuf: Vec::new(),
            wpos: 0,
            unanswered: 0,
            last_progress: now,
            retry_at: now,
            snapshot: None,
            last_error_log: None,
        }
    }

    fn write_pending(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Drops what is queued; returns how many messages that was.
    fn drop_outbox(&mut self) -> u64 {
        let n = self.outbox.len() as u64;
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.outbox_since = None;
        n
    }
}

/// What the peer's thread and the Transport share.
struct PeerShared {
    id: u64,
    addr: Mutex<String>,
    stop: AtomicBool,
    stats: Mutex<PeerStats>,
    last_conn: Mutex<Option<Instant>>,
    /// Closes the live connection, so `remove_peer` and `shutdown` need
    /// not wait for a reply timeout.
    closer: Mutex<Option<Closer>>,
    link: Mutex<Link>,
    /// Wakes the sender thread (a snapshot to send, a full socket, a
    /// failed connection, stop).
    wake: Sender<()>,
}

impl PeerShared {
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = self.closer.lock().as_ref() {
            c.close();
        }
        self.notify();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn notify(&self) {
        let _ = self.wake.try_send(());
    }
}

struct Peer {
    shared: Arc<PeerShared>,
    thread: Option<JoinHandle<()>>,
}

struct Common {
    local_id: u64,
    dbid: RwLock<String>,
    cfg: RwLock<TransportConfig>,
    unreachable: Mutex<BTreeSet<u64>>,
    dropped: AtomicU64,
    logger: Logger,
    /// The snapshot file followers are sent: its index and an open handle
    /// (a newer file renamed over it does not disturb a transfer).
    snapshot: Mutex<Option<(u64, Arc<std::fs::File>)>>,
    /// Outcomes of snapshot transfers (peer, delivered) for raft-rs.
    snapshot_reports: Mutex<Vec<(u64, bool)>>,
}

impl Common {
    fn mark_unreachable(&self, id: u64) {
        self.unreachable.lock().insert(id);
    }

    fn count_dropped(&self, id: u64, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        self.mark_unreachable(id);
        if before / 1024 != (before + n) / 1024 {
            warn!(self.logger, "messages to node dropped (not connected or queue full)";
                "id" => id, "dropped_total" => before + n);
        }
    }

    /// Counts a connection failure and reports the peer unreachable.
    fn connection_failed(&self, shared: &PeerShared, first: bool, why: &str) {
        if shared.stopped() {
            return;
        }
        shared.stats.lock().conn_errors += 1;
        self.mark_unreachable(shared.id);
        if first {
            info!(self.logger, "connection to node failed"; "id" => shared.id, "reason" => why);
        } else {
            debug!(self.logger, "node still unreachable"; "id" => shared.id, "reason" => why);
        }
    }

    /// The connection broke: drop it and what waits for it, and let the
    /// sender thread reconnect at once (likely a restarted peer; a failed
    /// connect then backs off).
    fn fail_link(&self, shared: &PeerShared, link: &mut Link, why: String) {
        link.state = LinkState::Down;
        link.wbuf.clear();
        link.wpos = 0;
        link.unanswered = 0;
        let n = link.drop_outbox();
        self.count_dropped(shared.id, n);
        link.retry_at = Instant::now();
        *shared.closer.lock() = None;
        shared.stats.lock().connected = false;
        self.connection_failed(shared, true, &why);
        shared.notify();
    }

    /// The peer answered an error (dbid mismatch, not ready...): those
    /// messages were lost but the connection is fine, so keep it.
    fn refused(&self, shared: &PeerShared, link: &mut Link, e: String) {
        shared.stats.lock().conn_errors += 1;
        self.mark_unreachable(shared.id);
        let now = Instant::now();
        let repeat = link
            .last_error_log
            .as_ref()
            .is_some_and(|(last, at)| *last == e && now.duration_since(*at) < ERROR_LOG_EVERY);
        if repeat {
            debug!(self.logger, "node refused messages"; "id" => shared.id, "error" => e);
        } else {
            warn!(self.logger, "node refused messages"; "id" => shared.id, "error" => &e);
            link.last_error_log = Some((e, now));
        }
    }

    /// Reads the replies that have arrived (one system call at most), then
    /// writes what is queued without blocking. Returns true when the socket
    /// did not take everything (the sender thread finishes the write).
    fn flush_link(&self, shared: &PeerShared, link: &mut Link, send_outbox: bool) -> bool {
        let LinkState::Up(conn) = &mut link.state else {
            return false;
        };
        let now = Instant::now();
        let mut refused = Vec::new();
        let mut read_socket = link.unanswered > 0;
        while link.unanswered > 0 {
            match conn.try_recv(read_socket) {
                Ok(Some(v)) => {
                    link.unanswered -= 1;
                    link.last_progress = now;
                    match v {
                        RespValue::Simple(_) => {}
                        RespValue::Error(e) => refused.push(e),
                        other => refused.push(format!("unexpected reply {other:?}")),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail_link(shared, link, format!("connection failed: {e}"));
                    return false;
                }
            }
            read_socket = false;
        }
        if !link.write_pending() && send_outbox && !link.outbox.is_empty() {
            link.wbuf.clear();
            link.wpos = 0;
            let batch = std::mem::take(&mut link.outbox);
            link.outbox_bytes = 0;
            link.outbox_since = None;
            let max = self.cfg.read().max_batch_bytes.max(1);
            let n = encode_commands(batch, &self.dbid.read(), self.local_id, max, &mut link.wbuf);
            if link.unanswered == 0 {
                link.last_progress = now;
            }
            link.unanswered += n;
        }
        if link.write_pending() {
            let LinkState::Up(conn) = &mut link.state else {
                unreachable!("checked above")
            };
            match conn.try_write(&link.wbuf[link.wpos..]) {
                Ok(0) => {}
                Ok(n) => {
                    link.wpos += n;
                    link.last_progress = now;
                }
                Err(e) => {
                    self.fail_link(shared, link, format!("connection failed: {e}"));
                    return false;
                }
            }
        }
        for e in refused {
            self.refused(shared, link, e);
        }
        link.write_pending()
    }
}

/// Sends Raft messages to the peers. All methods take `&self`; none blocks
/// on the network, except `shutdown` (and so Drop), which waits for the
/// peer threads to end.
///
/// `send` only queues; `flush` writes what is queued to the sockets from
/// the caller's thread (the Raft thread, once per Ready), so a message costs
/// no thread hand-off on this side. Each peer's sender thread only steps in
/// for what cannot be done without blocking: connecting, a write the socket
/// could not take at once, snapshot transfers.
pub struct Transport {
    common: Arc<Common>,
    peers: Mutex<HashMap<u64, Peer>>,
    /// Threads of removed peers: told to stop, joined by `shutdown`.
    retired: Mutex<Vec<JoinHandle<()>>>,
    down: AtomicBool,
}

fn is_vote(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse
    )
}

impl Transport {
    pub fn new(local_id: u64, dbid: String, cfg: TransportConfig, logger: Logger) -> Transport {
        Transport {
            common: Arc::new(Common {
                local_id,
                dbid: RwLock::new(dbid),
                cfg: RwLock::new(cfg),
                unreachable: Mutex::new(BTreeSet::new()),
                dropped: AtomicU64::new(0),
                logger,
                snapshot: Mutex::new(None),
                snapshot_reports: Mutex::new(Vec::new()),
            }),
            peers: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
        }
    }

    /// The dbid sent with every message from the next batch on.
    pub fn set_dbid(&self, dbid: String) {
        *self.common.dbid.write() = dbid;
    }

    /// Run-time settings: used from the next connect or batch on. Cheap,
    /// so it can be called on every tick.
    pub fn set_config(&self, cfg: TransportConfig) {
        *self.common.cfg.write() = cfg;
    }

    /// Adds a peer (spawning its sender thread) or updates its address
    /// (the thread then reconnects). Ignored after `shutdown`.
    pub fn upsert_peer(&self, id: u64, addr: &str) {
        if self.down.load(Ordering::Acquire) {
            return;
        }
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&id) {
            let mut a = p.shared.addr.lock();
            if *a != addr {
                *a = addr.to_string();
                p.shared.stats.lock().addr = addr.to_string();
                p.shared.notify();
            }
            return;
        }
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(PeerShared {
            id,
            addr: Mutex::new(addr.to_string()),
            stop: AtomicBool::new(false),
            stats: Mutex::new(PeerStats {
                addr: addr.to_string(),
                ..Default::default()
            }),
            last_conn: Mutex::new(None),
            closer: Mutex::new(None),
            link: Mutex::new(Link::new()),
            wake,
        });
        let worker = Worker {
            wake: wake_rx,
            common: self.common.clone(),
            shared: shared.clone(),
            conn_addr: None,
            failures: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-peer-{id}"))
            .spawn(move || worker.run());
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Its queue fills and send() reports the loss.
                slog::error!(self.common.logger, "cannot start the sender thread";
                    "id" => id, "error" => %e);
                None
            }
        };
        peers.insert(id, Peer { shared, thread });
    }

    /// Forgets a peer. Its thread stops without sending anything further;
    /// this does not wait for it (it runs on the Raft thread).
    pub fn remove_peer(&self, id: u64) {
        let p = self.peers.lock().remove(&id);
        let Some(p) = p else { return };
        p.shared.stop();
        self.common.unreachable.lock().remove(&id);
        let mut retired = self.retired.lock();
        retired.retain(|t| !t.is_finished());
        retired.extend(p.thread);
    }

    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Queues a message for its peer (`msg.to`) until the next `flush`;
    /// never blocks. False when it was dropped: unknown peer, no
    /// connection, or the peer's queue is full (then the peer is also
    /// reported unreachable, so Raft sends less).
    pub fn send(&self, msg: Message) -> bool {
        let peers = self.peers.lock();
        let Some(p) = peers.get(&msg.to) else {
            return false;
        };
        let mut link = p.shared.link.lock();
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            if let Some(old) = link.snapshot.replace(msg) {
                // Superseded before it started: raft-rs hears it failed.
                self.common.snapshot_reports.lock().push((old.to, false));
            }
            p.shared.notify();
            return true;
        }
        let full = link.outbox.len() >= QUEUE_BOUND || link.outbox_bytes >= QUEUE_MAX_BYTES;
        if matches!(link.state, LinkState::Down) || full {
            drop(link);
            self.common.count_dropped(msg.to, 1);
            return false;
        }
        let body = match msg.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                warn!(self.common.logger, "cannot encode a Raft message"; "id" => msg.to, "error" => %e);
                return false;
            }
        };
        link.outbox_bytes += body.len();
        link.outbox_since.get_or_insert_with(Instant::now);
        link.outbox.push(Encoded {
            vote: is_vote(msg.get_msg_type()),
            body,
        });
        true
    }

    /// Writes what `send` queued, to every peer, without blocking.
    pub fn flush(&self) {
        let peers = self.peers.lock();
        for p in peers.values() {
            let mut link = p.shared.link.lock();
            if link.outbox.is_empty() && !link.write_pending() {
                continue;
            }
            if self.common.flush_link(&p.shared, &mut link, true) {
                p.shared.notify();
            }
        }
    }

    /// The snapshot file to stream to followers that need it.
    pub fn set_snapshot_source(&self, index: u64, file: std::fs::File) {
        *self.common.snapshot.lock() = Some((index, Arc::new(file)));
    }

    /// Snapshot transfers finished since the last call: (peer, delivered).
    pub fn take_snapshot_reports(&self) -> Vec<(u64, bool)> {
        std::mem::take(&mut *self.common.snapshot_reports.lock())
    }

    /// Peers whose connection failed, or whose messages were dropped,
    /// since the last call (for `report_unreachable`). Drains.
    pub fn take_unreachable(&self) -> Vec<u64> {
        std::mem::take(&mut *self.common.unreachable.lock())
            .into_iter()
            .collect()
    }

    pub fn stats(&self) -> BTreeMap<u64, PeerStats> {
        self.peers
            .lock()
            .iter()
            .map(|(id, p)| {
                let mut s = p.shared.stats.lock().clone();
                s.last_conn_secs = p
                    .shared
                    .last_conn
                    .lock()
                    .map_or(0, |t| t.elapsed().as_secs());
                (*id, s)
            })
            .collect()
    }

    /// Messages dropped since start because a queue was full or a peer
    /// could not be reached.
    pub fn dropped_messages(&self) -> u64 {
        self.common.dropped.load(Ordering::Relaxed)
    }

    /// Stops every peer thread and waits for them (a connect in progress
    /// can take up to `connect_timeout`). Later `upsert_peer`s are ignored.
    pub fn shutdown(&self) {
        self.down.store(true, Ordering::Release);
        let peers: Vec<Peer> = self.peers.lock().drain().map(|(_, p)| p).collect();
        let mut threads = std::mem::take(&mut *self.retired.lock());
        for p in peers {
            p.shared.stop();
            threads.extend(p.thread);
        }
        for t in threads {
            let _ = t.join();
        }
        self.common.unreachable.lock().clear();
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One message, encoded once, with the command it goes in.
struct Encoded {
    vote: bool,
    body: Vec<u8>,
}

/// The state of one peer's sender thread.
struct Worker {
    wake: Receiver<()>,
    common: Arc<Common>,
    shared: Arc<PeerShared>,
    /// The address of the live connection.
    conn_addr: Option<String>,
    /// Failures in a row: the first is logged at info, the rest at debug.
    failures: u64,
}

impl Worker {
    fn run(mut self) {
        let id = self.shared.id;
        debug!(self.common.logger, "sender thread started"; "id" => id);
        while !self.shared.stopped() {
            self.follow_address();
            let connect_in = {
                let link = self.shared.link.lock();
                match link.state {
                    LinkState::Connecting => Some(Duration::ZERO),
                    LinkState::Down => {
                        Some(link.retry_at.saturating_duration_since(Instant::now()))
                    }
                    _ => None,
                }
            };
            if connect_in == Some(Duration::ZERO) {
                self.connect();
                continue;
            }
            let snapshot = self.shared.link.lock().snapshot.take();
            if let Some(m) = snapshot {
                self.send_snapshot(m);
                continue;
            }
            self.service();
            let wait = connect_in.map_or(POLL, |d| d.min(POLL));
            match self.wake.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.shared.link.lock().state = LinkState::Down;
        *self.shared.closer.lock() = None;
        debug!(self.common.logger, "sender thread stopped"; "id" => id);
    }

    /// Drops the connection if the peer's address changed.
    fn follow_address(&mut self) {
        let addr = self.shared.addr.lock().clone();
        if self.conn_addr.as_ref().is_some_and(|a| *a != addr) {
            info!(self.common.logger, "node address changed, reconnecting";
                "id" => self.shared.id, "addr" => &addr);
            self.conn_addr = None;
            let mut link = self.shared.link.lock();
            if let LinkState::Up(_) = link.state {
                link.state = LinkState::Connecting;
                link.wbuf.clear();
                link.wpos = 0;
                link.unanswered = 0;
            }
            *self.shared.closer.lock() = None;
            self.shared.stats.lock().connected = false;
        }
    }

    fn connect(&mut self) {
        let addr = self.shared.addr.lock().clone();
        let cfg = self.common.cfg.read().clone();
        let auth = cfg.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        self.shared.link.lock().state = LinkState::Connecting;
        match Connection::connect(&addr, cfg.connect_timeout, cfg.io_timeout, auth) {
            Ok(c) => {
                // Registered before the stop check, so stop() either sees
                // the closer or this thread sees the stop flag.
                *self.shared.closer.lock() = c.closer().ok();
                if self.shared.stopped() {
                    return;
                }
                {
                    let mut st = self.shared.stats.lock();
                    st.conn_oks += 1;
                    st.connected = true;
                }
                *self.shared.last_conn.lock() = Some(Instant::now());
                info!(self.common.logger, "connected to node";
                    "id" => self.shared.id, "addr" => &addr, "failed_attempts" => self.failures);
                self.failures = 0;
                self.conn_addr = Some(addr);
                let mut link = self.shared.link.lock();
                link.state = LinkState::Up(c);
                link.wbuf.clear();
                link.wpos = 0;
                link.unanswered = 0;
                // What queued while connecting goes now.
                let more = self.common.flush_link(&self.shared, &mut link, true);
                drop(link);
                if more {
                    self.finish_write();
                }
            }
            Err(e) => {
                self.failures += 1;
                self.common.connection_failed(
                    &self.shared,
                    self.failures == 1,
                    &format!("cannot connect to {addr}: {e}"),
                );
                let mut link = self.shared.link.lock();
                link.state = LinkState::Down;
                link.retry_at = Instant::now() + cfg.reconnect_interval.max(MIN_RECONNECT);
                // What was queued meanwhile is stale by the next attempt.
                let n = link.drop_outbox();
                drop(link);
                self.common.count_dropped(self.shared.id, n);
                self.common.mark_unreachable(self.shared.id);
            }
        }
    }

    /// Periodic care of an idle link: replies read, a silent peer noticed,
    /// messages nobody flushed sent, a write the socket did not take
    /// finished.
    fn service(&mut self) {
        let io_timeout = self.common.cfg.read().io_timeout;
        let mut link = self.shared.link.lock();
        if !matches!(link.state, LinkState::Up(_)) {
            return;
        }
        let stale_outbox = link.outbox_since.is_some_and(|t| t.elapsed() >= POLL / 2);
        let more = self
            .common
            .flush_link(&self.shared, &mut link, stale_outbox);
        let outstanding = link.unanswered > 0 || link.write_pending();
        if outstanding && link.last_progress.elapsed() > io_timeout {
            self.conn_addr = None;
            self.common.fail_link(
                &self.shared,
                &mut link,
                format!("no reply within {} ms", io_timeout.as_millis()),
            );
            return;
        }
        drop(link);
        if more {
            self.finish_write();
        }
    }

    /// Writes the rest of the write buffer, waiting up to the I/O timeout,
    /// with the connection taken out of the link (the Raft thread queues
    /// meanwhile), then flushes what queued.
    fn finish_write(&mut self) {
        loop {
            let mut link = self.shared.link.lock();
            if !link.write_pending() {
                return;
            }
            let LinkState::Up(mut conn) = std::mem::replace(&mut link.state, LinkState::Busy)
            else {
                return;
            };
            let rest = link.wbuf[link.wpos..].to_vec();
            drop(link);
            let result = conn.write_all(&rest);
            let mut link = self.shared.link.lock();
            match result {
                Ok(()) => {
                    link.wpos = link.wbuf.len();
                    link.last_progress = Instant::now();
                    link.state = LinkState::Up(conn);
                    if !self.common.flush_link(&self.shared, &mut link, true) {
                        return;
                    }
                }
                Err(e) => {
                    self.conn_addr = None;
                    self.common.fail_link(
                        &self.shared,
                        &mut link,
                        format!("connection failed: {e}"),
                    );
                    return;
                }
            }
        }
    }

    /// Streams the snapshot file as RAFT.LOADSNAPSHOT chunks, up to
    /// `snapshot_chunks_in_flight` pipelined, then sends the MsgSnapshot
    /// itself; the receiver checks the whole file against the descriptor
    /// the message carries. The outcome goes to raft-rs either way.
    fn send_snapshot(&mut self, msg: Message) {
        let ok = match self.stream_snapshot(&msg) {
            Ok(()) => true,
            Err(e) => {
                warn!(self.common.logger, "snapshot transfer failed"; "id" => self.shared.id, "error" => &e);
                false
            }
        };
        if ok {
            info!(self.common.logger, "snapshot sent"; "id" => self.shared.id,
                "index" => msg.get_snapshot().get_metadata().index);
        }
        self.common
            .snapshot_reports
            .lock()
            .push((self.shared.id, ok));
    }

    /// Runs on a connection of its own, so heartbeats keep flowing on the
    /// main one while a large file streams.
    fn stream_snapshot(&mut self, msg: &Message) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        let meta = msg.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let file = match &*self.common.snapshot.lock() {
            Some((i, f)) if *i == index => f.clone(),
            _ => return Err(format!("no snapshot file for index {index}")),
        };
        let total = file.metadata().map_err(|e| e.to_string())?.len();
        let cfg = self.common.cfg.read().clone();
        let addr = self.shared.addr.lock().clone();
        let auth = cfg.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let mut cn = Connection::connect(&addr, cfg.connect_timeout, cfg.io_timeout, auth)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let dbid = self.common.dbid.read().clone();
        let from = self.common.local_id.to_string();
        let chunk = cfg.snapshot_chunk_bytes.max(1);
        let window = cfg.snapshot_chunks_in_flight.max(1);
        let header = |offset: u64, data: &[u8]| -> Vec<Vec<u8>> {
            vec![
                b"RAFT.LOADSNAPSHOT".to_vec(),
                dbid.as_bytes().to_vec(),
                from.as_bytes().to_vec(),
                index.to_string().into_bytes(),
                term.to_string().into_bytes(),
                offset.to_string().into_bytes(),
                total.to_string().into_bytes(),
                crc32fast::hash(data).to_string().into_bytes(),
                data.to_vec(),
            ]
        };
        let mut offset = 0u64;
        let mut buf = vec![0u8; chunk];
        let mut first = true;
        while first || offset < total {
            let mut cmds = Vec::with_capacity(window);
            while cmds.len() < window && (first || offset < total) {
                first = false;
                let n = ((total - offset) as usize).min(chunk);
                file.read_exact_at(&mut buf[..n], offset)
                    .map_err(|e| format!("cannot read the snapshot file: {e}"))?;
                cmds.push(header(offset, &buf[..n]));
                offset += n as u64;
            }
            let sent = cn.send_many(&cmds).and_then(|_| {
                let mut err = None;
                for _ in 0..cmds.len() {
                    if let RespValue::Error(e) = cn.recv()? {
                        err.get_or_insert(e);
                    }
                }
                Ok(err)
            });
            match sent {
                Ok(None) => {}
                Ok(Some(e)) => return Err(format!("refused: {e}")),
                Err(e) => return Err(format!("connection failed: {e}")),
            }
            if self.shared.stopped() {
                return Err("stopped".into());
            }
        }
        let body = msg.write_to_bytes().map_err(|e| e.to_string())?;
        let cmd = vec![
            APPEND_CMD.to_vec(),
            dbid.into_bytes(),
            from.into_bytes(),
            body,
        ];
        match cn.send_many(&[cmd]).and_then(|_| cn.recv()) {
            Ok(RespValue::Simple(_)) => Ok(()),
            Ok(RespValue::Error(e)) => Err(format!("snapshot refused: {e}")),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(format!("connection failed: {e}")),
        }
    }
}

/// Encodes `batch` into `out` as commands: consecutive messages of one kind
/// share a command, up to `max_bytes` of messages each (a bigger message
/// still goes, alone). Returns the number of commands.
fn encode_commands(
    batch: Vec<Encoded>,
    dbid: &str,
    from: u64,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> usize {
    let from = from.to_string().into_bytes();
    let mut n = 0;
    let mut rest = &batch[..];
    while let Some(first) = rest.first() {
        let mut len = 1;
        let mut bytes = first.body.len();
        while let Some(m) = rest.get(len) {
            if m.vote != first.vote || bytes + m.body.len() > max_bytes {
                break;
            }
            bytes += m.body.len();
            len += 1;
        }
        let name = if first.vote { VOTE_CMD } else { APPEND_CMD };
        let mut args: Vec<&[u8]> = Vec::with_capacity(3 + len);
        args.extend([name, dbid.as_bytes(), &from[..]]);
        args.extend(rest[..len].iter().map(|m| &m.body[..]));
        crate::resp::encode_args(&args, out);
        n += 1;
        rest = &rest[len..];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::parse;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn msg(t: MessageType, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 1;
        m.to = to;
        m.term = 3;
        m.index = index;
        m
    }

    fn append(to: u64, index: u64) -> Message {
        let mut m = msg(MessageType::MsgAppend, to, index);
        let e = raft::eraftpb::Entry {
            index: index + 1,
            term: 3,
            data: format!("SET k{index} \r\n\0 v").into_bytes().into(),
            ..Default::default()
        };
        m.entries = vec![e].into();
        m
    }

    fn logger() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn cfg() -> TransportConfig {
        TransportConfig {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(2),
            reconnect_interval: Duration::from_millis(50),
            auth: None,
            max_batch_bytes: 1 << 20,
            snapshot_chunk_bytes: 1 << 16,
            snapshot_chunks_in_flight: 4,
        }
    }

    #[derive(Debug)]
    enum Event {
        /// A command on connection number `conn`.
        Cmd {
            conn: usize,
            args: Vec<Vec<u8>>,
        },
        Closed {
            conn: usize,
        },
    }

    /// How the fake peer answers one command.
    type Answer = Box<dyn Fn(usize, &[Vec<u8>]) -> Reply + Send + Sync>;

    enum Reply {
        Ok,
        Raw(&'static [u8]),
        /// Answer after the test sends on the gate.
        Gated,
        /// Close the connection without answering.
        Hangup,
        Silence,
    }

    /// A fake peer on `l`: parses RESP commands, reports them, answers as
    /// `answer` says. Connections are numbered from 0.
    struct FakePeer {
        events: mpsc::Receiver<Event>,
        gate: mpsc::Sender<()>,
    }

    fn fake_peer(l: TcpListener, answer: Answer) -> FakePeer {
        let (tx, events) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel::<()>();
        let gate_rx = Arc::new(std::sync::Mutex::new(gate_rx));
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for (conn, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { return };
                let (tx, gate_rx, answer) = (tx.clone(), gate_rx.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        while let Ok(Some((v, used))) = parse(&buf) {
                            buf.drain(..used);
                            let args = match v {
                                RespValue::Array(Some(items)) => items
                                    .into_iter()
                                    .map(|i| match i {
                                        RespValue::Bulk(Some(b)) => b,
                                        other => panic!("not a bulk: {other:?}"),
                                    })
                                    .collect::<Vec<_>>(),
                                other => panic!("not a command: {other:?}"),
                            };
                            let reply = answer(conn, &args);
                            if tx.send(Event::Cmd { conn, args }).is_err() {
                                return;
                            }
                            let out: &[u8] = match reply {
                                Reply::Ok => b"+OK\r\n",
                                Reply::Raw(r) => r,
                                Reply::Gated => {
                                    let _ = gate_rx.lock().unwrap().recv();
                                    b"+OK\r\n"
                                }
                                Reply::Hangup => return,
                                Reply::Silence => continue,
                            };
                            if s.write_all(out).is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(Event::Closed { conn });
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        FakePeer { events, gate }
    }

    fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    /// An address where nothing listens (for now).
    fn dead_addr() -> String {
        listener().1
    }

    impl FakePeer {
        fn next(&self) -> Event {
            self.events
                .recv_timeout(Duration::from_secs(10))
                .expect("no event from the fake peer")
        }

        /// The next command (skipping nothing: closes are a failure).
        fn cmd(&self) -> (usize, Vec<Vec<u8>>) {
            match self.next() {
                Event::Cmd { conn, args } => (conn, args),
                e => panic!("expected a command, got {e:?}"),
            }
        }

        /// The next Raft command, checked, with its messages decoded.
        fn raft_cmd(&self, name: &[u8]) -> Vec<Message> {
            let (_, args) = self.cmd();
            assert_eq!(args[0], name, "{}", String::from_utf8_lossy(&args[0]));
            assert_eq!(args[1], b"the-dbid");
            assert_eq!(args[2], b"1");
            assert!(args.len() > 3);
            args[3..]
                .iter()
                .map(|b| Message::parse_from_bytes(b).unwrap())
                .collect()
        }
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn transport(c: TransportConfig) -> Transport {
        Transport::new(1, "the-dbid".into(), c, logger())
    }

    #[test]
    fn transport_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Transport>();
    }

    #[test]
    fn send_to_an_unknown_peer_is_dropped() {
        let t = transport(cfg());
        assert!(!t.send(append(2, 1)));
        assert!(t.peer_ids().is_empty());
        assert!(t.stats().is_empty());
    }

    #[test]
    fn messages_arrive_in_order_with_the_exact_wire_format() {
        let (l, addr) = listener();
        let peer = fake_peer(l, Box::new(|_, _| Reply::Ok));
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        let sent: Vec<Message> = (0..300).map(|i| append(2, i)).collect();
        for m in &sent {
            assert!(t.send(m.clone()));
        }
        t.flush();
        let mut got = Vec::new();
        while got.len() < sent.len() {
            got.extend(peer.raft_cmd(APPEND_CMD));
        }
        assert_eq!(got, sent);
        assert_eq!(t.peer_ids(), vec![2]);
        let st = &t.stats()[&2];
        assert!(
            st.connected && st.conn_oks == 1 && st.conn_errors == 0,
            "{st:?}"
        );
        assert_eq!(st.addr, addr);
        assert!(t.take_unreachable().is_empty());
    }

    #[test]
    fn a_burst_is_batched_and_votes_go_to_requestvote() {
        let (l, addr) = listener();
        // The first command's reply waits for the gate: meanwhile the
        // burst queues up and must then go out as few commands.
        let first = Arc::new(AtomicBool::new(true));
        let peer = fake_peer(
            l,
            Box::new(move |_, _| {
                if first.swap(false, Ordering::SeqCst) {
                    Reply::Gated
                } else {
                    Reply::Ok
                }
            }),
        );
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        assert!(t.send(msg(MessageType::MsgHeartbeat, 2, 0)));
        t.flush();
        assert_eq!(peer.raft_cmd(APPEND_CMD).len(), 1);
        let mut burst: Vec<Message> = (1..=50).map(|i| append(2, i)).collect();
        burst.push(msg(MessageType::MsgRequestVote, 2, 51));
        burst.push(msg(MessageType::MsgRequestPreVoteResponse, 2, 52));
        burst.push(msg(MessageType::MsgRequestVoteResponse, 2, 53));
        burst.push(msg(MessageType::MsgRequestPreVote, 2, 54));
        burst.push(msg(MessageType::MsgAppendResponse, 2, 55));
        burst.push(msg(MessageType::MsgHeartbeatResponse, 2, 56));
        for m in &burst {
            assert!(t.send(m.clone()));
        }
        t.flush();
        peer.gate.send(()).unwrap();
        assert_eq!(peer.raft_cmd(APPEND_CMD), burst[..50]);
        assert_eq!(peer.raft_cmd(VOTE_CMD), burst[50..54]);
        assert_eq!(peer.raft_cmd(APPEND_CMD), burst[54..]);
    }

    #[test]
    fn batches_respect_max_batch_bytes() {
        let (l, addr) = listener();
        let first = Arc::new(AtomicBool::new(true));
        let peer = fake_peer(
            l,
            Box::new(move |_, _| {
                if first.swap(false, Ordering::SeqCst) {
                    Reply::Gated
                } else {
                    Reply::Ok
                }
            }),
        );
        let one = append(2, 10).write_to_bytes().unwrap().len();
        let mut c = cfg();
        c.max_batch_bytes = 3 * one;
        let t = transport(c);
        t.upsert_peer(2, &addr);
        t.send(append(2, 0));
        t.flush();
        peer.raft_cmd(APPEND_CMD);
        let burst: Vec<Message> = (10..30).map(|i| append(2, i)).collect();
        for m in &burst {
            t.send(m.clone());
        }
        t.flush();
        peer.gate.send(()).unwrap();
        let mut got = Vec::new();
        while got.len() < burst.len() {
            let c = peer.raft_cmd(APPEND_CMD);
            assert!(!c.is_empty() && c.len() <= 3, "{} messages", c.len());
            got.extend(c);
        }
        assert_eq!(got, burst);
    }

    #[test]
    fn auth_goes_first_on_every_connection() {
        let (l, addr) = listener();
        let peer = fake_peer(l, Box::new(|_, _| Reply::Ok));
        let mut c = cfg();
        c.auth = Some(("raftuser".into(), "pa ss".into()));
        let t = transport(c);
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        let (conn, args) = peer.cmd();
        assert_eq!(conn, 0);
        assert_eq!(
            args,
            vec![b"AUTH".to_vec(), b"raftuser".to_vec(), b"pa ss".to_vec()]
        );
        assert_eq!(peer.raft_cmd(APPEND_CMD), vec![append(2, 1)]);
    }

    #[test]
    fn rejected_auth_is_a_connection_error() {
        let (l, addr) = listener();
        let peer = fake_peer(l, Box::new(|_, _| Reply::Raw(b"-WRONGPASS nope\r\n")));
        let mut c = cfg();
        c.auth = Some(("u".into(), "bad".into()));
        let t = transport(c);
        t.upsert_peer(2, &addr);
        wait("auth failures", || t.stats()[&2].conn_errors >= 2);
        assert!(t.take_unreachable().contains(&2));
        let st = &t.stats()[&2];
        assert!(!st.connected && st.conn_oks == 0, "{st:?}");
        while let Ok(e) = peer.events.try_recv() {
            if let Event::Cmd { args, .. } = e {
                assert_eq!(args[0], b"AUTH");
            }
        }
    }

    #[test]
    fn down_peer_is_reported_then_reconnected_when_it_comes_up() {
        let addr = dead_addr();
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        // The first connect can fail before this send (a loaded machine):
        // then the link is down and the message is dropped at once, which
        // the count below sees as well as a drop from the queue.
        let _ = t.send(append(2, 1));
        t.flush();
        wait("connect errors", || t.stats()[&2].conn_errors >= 2);
        assert_eq!(t.take_unreachable(), vec![2]);
        let st = &t.stats()[&2];
        assert!(
            !st.connected && st.conn_oks == 0 && st.last_conn_secs == 0,
            "{st:?}"
        );
        assert!(t.dropped_messages() >= 1);

        let peer = fake_peer(
            TcpListener::bind(&addr).unwrap(),
            Box::new(|_, _| Reply::Ok),
        );
        wait("reconnect", || t.stats()[&2].connected);
        assert!(t.send(append(2, 7)));
        t.flush();
        // What was queued while down was dropped: 7 comes first.
        assert_eq!(peer.raft_cmd(APPEND_CMD), vec![append(2, 7)]);
        assert_eq!(t.stats()[&2].conn_oks, 1);
    }

    #[test]
    fn broken_connection_reconnects_and_later_messages_arrive() {
        let (l, addr) = listener();
        // The first connection hangs up on its first command.
        let peer = fake_peer(
            l,
            Box::new(|conn, _| if conn == 0 { Reply::Hangup } else { Reply::Ok }),
        );
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        let (conn, _) = peer.cmd();
        assert_eq!(conn, 0);
        wait("error counted", || t.stats()[&2].conn_errors == 1);
        assert_eq!(t.take_unreachable(), vec![2]);
        wait("reconnected", || t.stats()[&2].conn_oks == 2);
        t.send(append(2, 2));
        t.flush();
        loop {
            match peer.next() {
                Event::Closed { conn: 0 } => continue,
                Event::Cmd { conn, args } => {
                    assert_eq!(conn, 1);
                    assert_eq!(Message::parse_from_bytes(&args[3]).unwrap(), append(2, 2));
                    break;
                }
                e => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn silent_peer_times_out() {
        let (l, addr) = listener();
        let _peer = fake_peer(l, Box::new(|_, _| Reply::Silence));
        let mut c = cfg();
        c.io_timeout = Duration::from_millis(100);
        let t = transport(c);
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        wait("timeout counted", || t.stats()[&2].conn_errors >= 1);
        assert!(t.take_unreachable().contains(&2));
    }

    #[test]
    fn error_reply_is_counted_but_keeps_the_connection() {
        let (l, addr) = listener();
        let peer = fake_peer(
            l,
            Box::new(|_, a| {
                if Message::parse_from_bytes(&a[3]).unwrap().index == 1 {
                    Reply::Raw(b"-ERR dbid mismatch\r\n")
                } else {
                    Reply::Ok
                }
            }),
        );
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        peer.raft_cmd(APPEND_CMD);
        wait("error counted", || t.stats()[&2].conn_errors == 1);
        assert_eq!(t.take_unreachable(), vec![2]);
        t.send(append(2, 2));
        t.flush();
        let (conn, _) = peer.cmd();
        assert_eq!(conn, 0, "no reconnect for an error reply");
        let st = &t.stats()[&2];
        assert!(st.connected && st.conn_oks == 1, "{st:?}");
    }

    #[test]
    fn address_change_moves_the_connection() {
        let (l1, a1) = listener();
        let (l2, a2) = listener();
        let p1 = fake_peer(l1, Box::new(|_, _| Reply::Ok));
        let p2 = fake_peer(l2, Box::new(|_, _| Reply::Ok));
        let t = transport(cfg());
        t.upsert_peer(2, &a1);
        t.send(append(2, 1));
        t.flush();
        assert_eq!(p1.raft_cmd(APPEND_CMD), vec![append(2, 1)]);
        t.upsert_peer(2, &a2);
        assert_eq!(t.stats()[&2].addr, a2);
        assert!(matches!(p1.next(), Event::Closed { conn: 0 }));
        t.send(append(2, 2));
        t.flush();
        assert_eq!(p2.raft_cmd(APPEND_CMD), vec![append(2, 2)]);
    }

    #[test]
    fn remove_peer_stops_its_thread_and_connection() {
        let (l, addr) = listener();
        // Silence: the thread is blocked waiting for a reply when removed.
        let peer = fake_peer(l, Box::new(|_, _| Reply::Silence));
        let mut c = cfg();
        c.io_timeout = Duration::from_secs(60);
        let t = transport(c);
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        peer.cmd();
        let start = Instant::now();
        t.remove_peer(2);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "remove_peer blocked"
        );
        assert!(matches!(peer.next(), Event::Closed { conn: 0 }));
        wait("thread ended", || {
            t.retired.lock().iter().all(|h| h.is_finished())
        });
        assert_eq!(t.retired.lock().len(), 1);
        assert!(!t.send(append(2, 2)));
        assert!(t.peer_ids().is_empty());
        assert!(peer
            .events
            .recv_timeout(Duration::from_millis(200))
            .is_err());
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        let (l, addr) = listener();
        let peer = fake_peer(l, Box::new(|_, _| Reply::Silence));
        let mut c = cfg();
        c.io_timeout = Duration::from_secs(60);
        let t = transport(c);
        t.upsert_peer(2, &addr);
        t.send(append(2, 0));
        t.flush();
        peer.cmd(); // the thread now waits for a reply that never comes
        let start = Instant::now();
        let accepted = (0..QUEUE_BOUND + 100)
            .filter(|&i| t.send(append(2, i as u64)))
            .count();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(accepted, QUEUE_BOUND);
        assert_eq!(t.dropped_messages(), 100);
        assert_eq!(t.take_unreachable(), vec![2]);
        // Shutdown does not wait for the 60 s reply timeout.
        let start = Instant::now();
        t.shutdown();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!t.send(append(2, 1)));
        t.upsert_peer(3, &addr);
        assert!(t.peer_ids().is_empty());
    }

    #[test]
    fn commands_group_consecutive_kinds_within_the_byte_limit() {
        let e = |vote: bool, b: u8| Encoded {
            vote,
            body: vec![b; 2],
        };
        let batch = vec![
            e(false, 1),
            e(false, 2),
            e(false, 5),
            e(true, 3),
            e(false, 4),
        ];
        let mut out = Vec::new();
        assert_eq!(encode_commands(batch, "db", 42, 4, &mut out), 4);
        let a = |x: &[u8]| x.to_vec();
        let mut cmds = Vec::new();
        let mut pos = 0;
        while let Some((RespValue::Array(Some(v)), used)) = parse(&out[pos..]).unwrap() {
            cmds.push(
                v.into_iter()
                    .map(|x| match x {
                        RespValue::Bulk(Some(b)) => b,
                        other => panic!("{other:?}"),
                    })
                    .collect::<Vec<_>>(),
            );
            pos += used;
        }
        assert_eq!(pos, out.len());
        assert_eq!(
            cmds,
            vec![
                vec![a(APPEND_CMD), a(b"db"), a(b"42"), a(&[1, 1]), a(&[2, 2])],
                vec![a(APPEND_CMD), a(b"db"), a(b"42"), a(&[5, 5])],
                vec![a(VOTE_CMD), a(b"db"), a(b"42"), a(&[3, 3])],
                vec![a(APPEND_CMD), a(b"db"), a(b"42"), a(&[4, 4])],
            ]
        );
    }

    #[test]
    fn dbid_change_applies_to_later_batches() {
        let (l, addr) = listener();
        let peer = fake_peer(l, Box::new(|_, _| Reply::Ok));
        let t = transport(cfg());
        t.upsert_peer(2, &addr);
        t.send(append(2, 1));
        t.flush();
        peer.raft_cmd(APPEND_CMD);
        t.set_dbid("other".into());
        t.send(append(2, 2));
        t.flush();
        let (_, args) = peer.cmd();
        assert_eq!(args[1], b"other");
    }

    fn snapshot_msg(to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = to;
        m.from = 1;
        m.mut_snapshot().mut_metadata().index = index;
        m.mut_snapshot().mut_metadata().term = 1;
        m
    }

    #[test]
    fn a_refused_chunk_fails_the_transfer_and_the_next_one_starts_over() {
        let (l, addr) = listener();
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = refusals.clone();
        // Refuses the second chunk of the first transfer only.
        let peer = fake_peer(
            l,
            Box::new(move |_, a| {
                if a[0] == b"RAFT.LOADSNAPSHOT"
                    && a[5] == b"4"
                    && r2.fetch_add(1, Ordering::SeqCst) == 0
                {
                    Reply::Raw(b"-ERR snapshot chunk at offset 4 fails its CRC check\r\n")
                } else {
                    Reply::Ok
                }
            }),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.rdb");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut c = cfg();
        c.snapshot_chunk_bytes = 4;
        c.snapshot_chunks_in_flight = 2;
        let t = transport(c);
        t.set_snapshot_source(9, std::fs::File::open(&path).unwrap());
        t.upsert_peer(2, &addr);

        t.send(snapshot_msg(2, 9));
        wait("first transfer reported", || {
            let r = t.take_snapshot_reports();
            assert!(r.iter().all(|x| *x == (2, false)), "{r:?}");
            !r.is_empty()
        });
        t.send(snapshot_msg(2, 9));
        wait("second transfer reported", || {
            let r = t.take_snapshot_reports();
            assert!(r.iter().all(|x| *x == (2, true)), "{r:?}");
            !r.is_empty()
        });
        // The second transfer sent every chunk from offset 0, each with the
        // CRC of its bytes, then the message itself.
        let mut chunks = Vec::new();
        let mut got_msg = false;
        while let Ok(ev) = peer.events.try_recv() {
            if let Event::Cmd { args, .. } = ev {
                if args[0] == b"RAFT.LOADSNAPSHOT" {
                    assert_eq!(
                        args[7],
                        crc32fast::hash(&args[8]).to_string().into_bytes(),
                        "chunk CRC"
                    );
                    chunks.push((String::from_utf8(args[5].clone()).unwrap(), args[8].clone()));
                } else if args[0] == APPEND_CMD {
                    got_msg = true;
                }
            }
        }
        let second: Vec<_> = chunks
            .iter()
            .skip_while(|(o, _)| o != "0")
            .skip(1)
            .skip_while(|(o, _)| o != "0")
            .collect();
        let data: Vec<u8> = second.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(
            data, b"0123456789",
            "resent whole from offset 0: {chunks:?}"
        );
        assert!(got_msg, "MsgSnapshot sent after the chunks");
    }
}
