//! Node-to-node messages: one sender thread and one connection per peer.
//!
//! Raft messages travel as module commands over the peer's Redis port:
//! `RAFT.APPENDENTRIES <dbid> <from> <msg>...` (votes: RAFT.REQUESTVOTE),
//! each `<msg>` one protobuf-encoded message. Messages are one-way: answers
//! come back as commands from the peer. While a batch waits for its `+OK`s,
//! new messages queue up and go in the next batch: that is the batching.
//! A connection failure drops what is queued (Raft resends) and reconnects
//! after `reconnect-interval`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use slog::{info, Logger};

use crate::resp::{Connection, RespValue};

#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub reconnect_interval: Duration,
    pub auth: Option<(String, String)>,
    /// append-req-max-size: bytes of messages per command.
    pub max_batch_bytes: usize,
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

/// Bound of each peer's queue: a peer that is down must not make us grow.
const QUEUE_BOUND: usize = 4096;

struct PeerShared {
    addr: RwLock<String>,
    stop: AtomicBool,
    stats: Mutex<(PeerStats, Option<Instant>)>,
}

struct Peer {
    tx: Sender<Message>,
    shared: Arc<PeerShared>,
    thread: Option<JoinHandle<()>>,
}

struct Common {
    local_id: u64,
    dbid: RwLock<String>,
    cfg: RwLock<TransportConfig>,
    unreachable: Mutex<Vec<u64>>,
    logger: Logger,
}

pub struct Transport {
    common: Arc<Common>,
    peers: Mutex<HashMap<u64, Peer>>,
}

fn command_for(t: MessageType) -> &'static [u8] {
    match t {
        MessageType::MsgRequestVote
        | MessageType::MsgRequestVoteResponse
        | MessageType::MsgRequestPreVote
        | MessageType::MsgRequestPreVoteResponse => b"RAFT.REQUESTVOTE",
        _ => b"RAFT.APPENDENTRIES",
    }
}

impl Transport {
    pub fn new(local_id: u64, dbid: String, cfg: TransportConfig, logger: Logger) -> Transport {
        Transport {
            common: Arc::new(Common {
                local_id,
                dbid: RwLock::new(dbid),
                cfg: RwLock::new(cfg),
                unreachable: Mutex::new(Vec::new()),
                logger,
            }),
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_dbid(&self, dbid: String) {
        *self.common.dbid.write() = dbid;
    }

    pub fn set_config(&self, cfg: TransportConfig) {
        *self.common.cfg.write() = cfg;
    }

    /// Adds a peer (spawning its sender thread) or updates its address.
    pub fn upsert_peer(&self, id: u64, addr: &str) {
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&id) {
            *p.shared.addr.write() = addr.to_string();
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BOUND);
        let shared = Arc::new(PeerShared {
            addr: RwLock::new(addr.to_string()),
            stop: AtomicBool::new(false),
            stats: Mutex::new((
                PeerStats {
                    addr: addr.to_string(),
                    ..Default::default()
                },
                None,
            )),
        });
        let (c, s) = (self.common.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("raft-peer-{id}"))
            .spawn(move || peer_loop(id, rx, c, s))
            .ok();
        peers.insert(id, Peer { tx, shared, thread });
    }

    pub fn remove_peer(&self, id: u64) {
        let p = self.peers.lock().remove(&id);
        if let Some(mut p) = p {
            p.shared.stop.store(true, Ordering::Release);
            drop(p.tx);
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn peer_ids(&self) -> Vec<u64> {
        self.peers.lock().keys().copied().collect()
    }

    /// Queues a message; never blocks. False if the peer is unknown or its
    /// queue is full (Raft tolerates the loss).
    pub fn send(&self, msg: Message) -> bool {
        let peers = self.peers.lock();
        let Some(p) = peers.get(&msg.to) else {
            return false;
        };
        match p.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Peers whose connection failed since the last call.
    pub fn take_unreachable(&self) -> Vec<u64> {
        let mut v = std::mem::take(&mut *self.common.unreachable.lock());
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn stats(&self) -> BTreeMap<u64, PeerStats> {
        self.peers
            .lock()
            .iter()
            .map(|(id, p)| {
                let (mut s, last) = p.shared.stats.lock().clone();
                s.addr = p.shared.addr.read().clone();
                s.last_conn_secs = last.map_or(0, |t| t.elapsed().as_secs());
                (*id, s)
            })
            .collect()
    }

    pub fn shutdown(&self) {
        let ids = self.peer_ids();
        for id in ids {
            self.remove_peer(id);
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn peer_loop(id: u64, rx: Receiver<Message>, c: Arc<Common>, s: Arc<PeerShared>) {
    let mut conn: Option<(String, Connection)> = None;
    let mut retry_at = Instant::now();
    while !s.stop.load(Ordering::Acquire) {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(QUEUE_BOUND));
        let addr = s.addr.read().clone();
        let cfg = c.cfg.read().clone();
        if conn.as_ref().is_some_and(|(a, _)| *a != addr) {
            conn = None;
        }
        if conn.is_none() {
            if Instant::now() < retry_at {
                continue; // still backing off: drop, Raft resends
            }
            let auth = cfg.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            match Connection::connect(&addr, cfg.connect_timeout, cfg.io_timeout, auth) {
                Ok(cn) => {
                    info!(c.logger, "connected to node"; "id" => id, "addr" => &addr);
                    let mut st = s.stats.lock();
                    st.0.conn_oks += 1;
                    st.0.connected = true;
                    st.1 = Some(Instant::now());
                    conn = Some((addr.clone(), cn));
                }
                Err(e) => {
                    fail(id, &c, &s, &format!("cannot connect to {addr}: {e}"));
                    retry_at = Instant::now() + cfg.reconnect_interval;
                    continue;
                }
            }
        }
        let Some((_, cn)) = conn.as_mut() else {
            continue;
        };
        cn.set_io_timeout(cfg.io_timeout);
        let cmds = encode_batch(&batch, &c.dbid.read(), c.local_id, cfg.max_batch_bytes);
        let result = cn.send_many(&cmds).and_then(|_| {
            for _ in 0..cmds.len() {
                if let RespValue::Error(e) = cn.recv()? {
                    slog::warn!(c.logger, "node refused a message"; "id" => id, "error" => e);
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            fail(id, &c, &s, &format!("connection to {addr} failed: {e}"));
            conn = None;
            retry_at = Instant::now() + cfg.reconnect_interval;
        }
    }
}

fn fail(id: u64, c: &Common, s: &PeerShared, why: &str) {
    let was_connected = {
        let mut st = s.stats.lock();
        st.0.conn_errors += 1;
        std::mem::replace(&mut st.0.connected, false)
    };
    if was_connected {
        info!(c.logger, "lost connection to node"; "id" => id, "reason" => why);
    } else {
        slog::debug!(c.logger, "node unreachable"; "id" => id, "reason" => why);
    }
    c.unreachable.lock().push(id);
}

/// Groups consecutive messages of one command kind into commands of at most
/// `max_bytes` of payload (always at least one message per command).
pub fn encode_batch(
    batch: &[Message],
    dbid: &str,
    from: u64,
    max_bytes: usize,
) -> Vec<Vec<Vec<u8>>> {
    let from_s = from.to_string().into_bytes();
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut cur_kind: &[u8] = b"";
    let mut cur_bytes = 0usize;
    for m in batch {
        let kind = command_for(m.get_msg_type());
        let body = m.write_to_bytes().unwrap_or_default();
        let start_new =
            cmds.is_empty() || kind != cur_kind || cur_bytes + body.len() > max_bytes.max(1);
        if start_new {
            cmds.push(vec![
                kind.to_vec(),
                dbid.as_bytes().to_vec(),
                from_s.clone(),
            ]);
            cur_kind = kind;
            cur_bytes = 0;
        }
        cur_bytes += body.len();
        cmds.last_mut().expect("a command").push(body);
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn msg(t: MessageType, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 1;
        m.to = to;
        m.index = index;
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
            auth: Some(("default".into(), "secret".into())),
            max_batch_bytes: 1 << 20,
        }
    }

    #[test]
    fn batches_group_by_kind_and_respect_the_size_bound() {
        let b = vec![
            msg(MessageType::MsgAppend, 2, 1),
            msg(MessageType::MsgHeartbeat, 2, 2),
            msg(MessageType::MsgRequestVote, 2, 3),
            msg(MessageType::MsgAppend, 2, 4),
        ];
        let cmds = encode_batch(&b, "db", 1, 1 << 20);
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0][0], b"RAFT.APPENDENTRIES");
        assert_eq!(cmds[0].len(), 5);
        assert_eq!(cmds[1][0], b"RAFT.REQUESTVOTE");
        assert_eq!(&cmds[1][1..3], &[b"db".to_vec(), b"1".to_vec()]);
        let back = Message::parse_from_bytes(&cmds[2][3]).unwrap();
        assert_eq!(back, b[3]);
        assert_eq!(encode_batch(&b[..2], "db", 1, 1).len(), 2);
    }

    /// A fake peer: accepts connections, answers +OK to every command, and
    /// reports the commands it got.
    fn fake_peer(l: TcpListener, tx: std::sync::mpsc::Sender<Vec<Vec<u8>>>) {
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Ok(Some((v, used))) = crate::resp::parse(&buf) {
                            buf.drain(..used);
                            if let RespValue::Array(Some(items)) = v {
                                let args: Vec<Vec<u8>> = items
                                    .into_iter()
                                    .filter_map(|i| {
                                        if let RespValue::Bulk(Some(b)) = i {
                                            Some(b)
                                        } else {
                                            None
                                        }
                                    })
                                    .collect();
                                if tx.send(args).is_err() {
                                    return;
                                }
                            }
                            if s.write_all(b"+OK\r\n").is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn messages_arrive_in_order_after_auth_and_a_down_peer_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let dead = {
            let d = TcpListener::bind("127.0.0.1:0").unwrap();
            d.local_addr().unwrap().to_string()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        fake_peer(l, tx);
        let t = Transport::new(1, "db".into(), cfg(), logger());
        assert!(!t.send(msg(MessageType::MsgAppend, 2, 1)), "unknown peer");
        t.upsert_peer(2, &addr);
        for i in 0..100 {
            assert!(t.send(msg(MessageType::MsgAppend, 2, i)));
        }
        let auth = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            auth,
            vec![b"AUTH".to_vec(), b"default".to_vec(), b"secret".to_vec()]
        );
        let mut got = Vec::new();
        while got.len() < 100 {
            let cmd = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(cmd[0], b"RAFT.APPENDENTRIES");
            assert_eq!(cmd[1], b"db");
            assert_eq!(cmd[2], b"1");
            for body in &cmd[3..] {
                got.push(Message::parse_from_bytes(body).unwrap().index);
            }
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(t.stats()[&2].connected);

        t.upsert_peer(3, &dead);
        t.send(msg(MessageType::MsgAppend, 3, 1));
        wait(|| t.stats()[&3].conn_errors > 0);
        assert!(t.take_unreachable().contains(&3));
        t.remove_peer(3);
        assert!(!t.peer_ids().contains(&3));
    }

    #[test]
    fn reconnects_when_the_peer_comes_up() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut c = cfg();
        c.auth = None;
        let t = Transport::new(1, "db".into(), c, logger());
        t.upsert_peer(2, &addr);
        t.send(msg(MessageType::MsgHeartbeat, 2, 1));
        wait(|| t.stats()[&2].conn_errors > 0);
        let l = TcpListener::bind(&addr).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        fake_peer(l, tx);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            t.send(msg(MessageType::MsgHeartbeat, 2, 7));
            if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(200)) {
                assert_eq!(cmd[0], b"RAFT.APPENDENTRIES");
                break;
            }
            assert!(Instant::now() < deadline, "never reconnected");
        }
        assert!(t.stats()[&2].conn_oks >= 1);
    }

    fn wait(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "condition not reached");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
