//! The Raft driver's logic: a [`RaftNode`] owns raft-rs's `RawNode` and turns
//! requests, ticks and `Ready`s into log writes, messages and items to apply.
//!
//! Nothing here calls Redis. The Redis side plugs in through three small
//! traits: [`Client`] (a waiting client to answer), [`Network`] (send a
//! message, learn a peer's address) and [`Applier`] (apply committed entries
//! and confirmed reads, in order). Unit tests drive three nodes in memory with
//! their own implementations of those traits.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, Entry, EntryType, HardState, Message, MessageType,
};
use raft::{RawNode, ReadOnlyOption, StateRole, Storage};
use slog::{info, warn, Logger};

use crate::entry::{self, Payload, ProposalId, Record};
use crate::error::Error;
use crate::storage::{LogStore, LogWrite, Membership, SnapshotDescriptor, StorageError};

/// A client waiting for an answer. For Redis this wraps a blocked client.
pub trait Client: Send + 'static {
    fn reply(self, reply: Reply);
}

/// An answer that does not come from executing a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Error(Error),
}

/// Something the state machine must do, in this order.
pub enum ApplyItem<C> {
    /// A committed entry. `payload` is None for Raft's no-op entries and
    /// membership changes: they only move the applied index.
    Entry {
        index: u64,
        term: u64,
        /// The entry's time (Unix ms, from the leader that proposed it);
        /// None for no-ops, membership changes and untimed old entries.
        time_ms: Option<u64>,
        payload: Option<Payload>,
        client: Option<C>,
        /// For membership changes: the membership from this entry on.
        conf: Option<ConfUpdate>,
    },
    /// Reads confirmed by ReadIndex; every entry they must see came before.
    Reads { requests: Vec<(C, Vec<Vec<u8>>)> },
    /// A received snapshot, already durable: replace the dataset with it.
    Snapshot {
        index: u64,
        term: u64,
        membership: Membership,
    },
}

/// What a membership-change entry tells the state machine.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfUpdate {
    /// The membership as of this entry.
    Known(Membership),
    /// An older change replayed at start-up, already superseded by the
    /// recovered membership: the exact membership at it is not known.
    Superseded,
}

/// A snapshot this node has taken and made durable (RDB file in place).
#[derive(Clone, Debug)]
pub struct TakenSnapshot {
    pub index: u64,
    pub term: u64,
    pub membership: Membership,
    /// Opaque descriptor sent to followers as the snapshot's `data`.
    pub descriptor: Vec<u8>,
}

/// The state machine side: gets batches in commit order.
pub trait Applier<C> {
    fn apply(&mut self, items: Vec<ApplyItem<C>>);
    /// A snapshot arrived from the leader: make its data durable as this
    /// node's snapshot before the log is reset to it.
    fn persist_received_snapshot(&mut self, _index: u64, _term: u64) -> Result<(), String> {
        Ok(())
    }
}

/// A staged log write for a [`LogWriter`]: persist `write`, then send
/// `messages` (they promise what it contains), then report `number`.
pub struct WriteJob {
    /// The number of the raft-rs `Ready` it comes from.
    pub number: u64,
    pub write: LogWrite,
    pub messages: Vec<Message>,
}

/// Persists staged log writes off the Raft thread, in the order given, so
/// the Raft thread keeps stepping messages and proposals while the disk
/// syncs (raft-rs's asynchronous Ready). Once a job is durable the writer
/// sends its messages and the node must hear [`RaftNode::on_persisted`]
/// with its number.
pub trait LogWriter: Send {
    fn submit(&mut self, job: WriteJob);
    /// Waits until every job submitted so far is durable (their messages
    /// sent); an error if the log could not be written.
    fn wait_idle(&mut self) -> Result<(), String>;
}

/// The transport side.
pub trait Network {
    /// Queues a message; it goes out at the next `flush` at the latest.
    fn send(&self, msg: Message);
    /// Writes what was queued (without blocking).
    fn flush(&self) {}
    fn upsert_peer(&self, id: u64, addr: &str);
    fn remove_peer(&self, id: u64);
    /// Tell a node it was removed (it may never see the entry commit).
    fn notify_removed(&self, id: u64, addr: &str);
}

/// Requests from Redis threads to the Raft thread.
pub enum Request<C> {
    Write {
        argv: Vec<Vec<u8>>,
        client: C,
    },
    /// A payload prepared by the caller (a script from a user with limited
    /// rights carries them: `Payload::Rights`).
    Propose {
        payload: Payload,
        client: C,
    },
    /// A MULTI/EXEC block: one entry, applied as one unit.
    Multi {
        cmds: Vec<Vec<Vec<u8>>>,
        client: C,
    },
    Read {
        argv: Vec<Vec<u8>>,
        client: C,
    },
    AddNode {
        id: u64,
        addr: String,
        client: C,
    },
    RemoveNode {
        id: u64,
        client: C,
    },
    TransferLeader {
        to: Option<u64>,
        client: C,
    },
    TimeoutNow,
    /// The leader's expiry cycle: delete these keys through the log if their
    /// expiry time has come by the entry's time. Nobody waits for it.
    Expire {
        keys: Vec<Vec<u8>>,
    },
    /// Messages from a peer, already decoded and checked.
    Messages(Vec<Message>),
    /// The leader told us we were removed from the cluster.
    Removed,
    /// A joining node learned these members (id, address) from RAFT.INFO:
    /// reach them now, and keep them while no membership entry or snapshot
    /// has arrived (so a restart before that still knows whom to answer).
    /// Written by the Raft thread, the one writer of the log.
    LearnPeers {
        peers: Vec<(u64, String)>,
    },
    /// Answer this client once this node is a voter (a joining node), or
    /// with an error once `deadline` passed (join-timeout).
    WaitVoter {
        client: C,
        deadline: Instant,
    },
    /// A snapshot was taken and is durable: compact the log up to it.
    SnapshotTaken {
        // Boxed: a membership is large beside the other requests.
        snapshot: Box<TakenSnapshot>,
        clients: Vec<C>,
    },
    /// The log writer made this Ready (and all before it) durable.
    Persisted(u64),
    /// The log writer could not write, or the node fail-stops for another
    /// reason (`driver::fail_stop`): the Raft thread stops.
    LogFailed(String),
    Shutdown,
}

/// The Raft timing and size settings (from the module configuration).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// read-mode lease: renew a read lease with quorum heartbeats.
    pub lease_reads: bool,
}

/// The lease is this share of the election timeout, counted from when the
/// confirming heartbeat was sent: followers that answered it vote for no
/// one else for a while after they heard it, and the rest is margin for
/// clocks ticking at slightly different rates.
const LEASE_SHARE: f64 = 0.8;

/// Fewest election ticks (election-timeout / periodic-interval) with which
/// read-mode lease is safe. raft-rs (check_quorum) refuses a vote while the
/// follower's `election_elapsed < election_timeout`; the heartbeat resets
/// it to 0 and each tick adds 1, so the refusal ends at the follower's E-th
/// tick after the heartbeat. In the worst phase that tick comes just after
/// the heartbeat arrives, so votes are refused for just over (E - 1) ticks,
/// not E. The lease must end first: 0.8 E <= E - 1, i.e. E >= 5. The margin
/// left for clocks that tick at different rates is (E - 1) / (0.8 E) - 1:
/// none at 5, 12.5% at the default 10, 25% at most. A node with fewer
/// ticks takes no lease (config.rs refuses the setting at load and at
/// CONFIG SET). Test: a_read_lease_never_outlasts_the_followers_refusal_to_vote.
pub const LEASE_MIN_ELECTION_TICKS: usize = 5;

/// In the refusal of an ADD that no retry can change (the id or address
/// belongs to a member, or the id was removed): JOIN answers it at once.
pub const REMOVE_FIRST: &str = "remove it first";
pub const ID_NOT_REUSABLE: &str = "cannot be reused";

/// The messages from `from` that a member steps, as the peer commands get
/// them. From a removed node, only a removed leader's request to take over
/// (MsgTimeoutNow) is; None when nothing is left: the sender is then told
/// it was removed (`transport::removed_reply`), which is how a node
/// removed while it was down learns it when it comes back.
pub fn admit_from(
    membership: &Membership,
    from: u64,
    mut msgs: Vec<Message>,
) -> Option<Vec<Message>> {
    if membership.removed.contains(&from) {
        msgs.retain(|m| m.get_msg_type() == MessageType::MsgTimeoutNow);
        if msgs.is_empty() {
            return None;
        }
    }
    Some(msgs)
}
/// At most one warning per this interval about dropped peer messages.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// A client waits at most this many election timeouts for its write.
const PROPOSAL_TIMEOUT_ELECTIONS: usize = 10;

/// A read-index request context that marks a lease probe, not client reads.
const LEASE_PROBE: u8 = b'L';

impl NodeConfig {
    /// How long a confirmed heartbeat keeps the lease.
    fn lease(&self) -> Duration {
        (self.tick * self.election_ticks as u32).mul_f64(LEASE_SHARE)
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_ticks.max(2),
            heartbeat_tick: self
                .heartbeat_ticks
                .clamp(1, self.election_ticks.max(2) - 1),
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs.max(1),
            // A cut-off leader steps down, and a returning node cannot
            // disrupt a healthy leader: both are needed for no stale reads.
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        }
    }

    /// Ticks a proposal's client may wait for its entry to commit (or be
    /// known lost) before it hears that the outcome is unknown.
    pub(crate) fn proposal_timeout_ticks(&self) -> usize {
        self.election_ticks.max(2) * PROPOSAL_TIMEOUT_ELECTIONS
    }

    /// How long a read may wait for its quorum confirmation.
    fn read_timeout(&self) -> Duration {
        self.tick * (self.election_ticks as u32).max(2) * 2
    }
}

/// The node's role as INFO shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    Candidate,
    PreCandidate,
    Leader,
    Learner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
            Role::Leader => "leader",
            Role::Learner => "learner",
        }
    }
}

/// What the Raft thread publishes for Redis threads (routing, INFO).
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub node_id: u64,
    pub role: Role,
    /// 0 when unknown.
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// Highest index handed to the state machine.
    pub applied_index: u64,
    pub membership: Membership,
    pub removed: bool,
    /// Set when the log cannot be written: the node stops.
    pub failed: Option<String>,
    /// read-mode lease: until when this leader may serve reads at once.
    pub lease_until: Option<Instant>,
    /// Peer messages dropped by `peer_check` since the node started.
    pub peer_messages_dropped: u64,
}

impl Status {
    pub fn is_voter(&self) -> bool {
        self.membership.conf_state.voters.contains(&self.node_id)
    }

    pub fn leader_addr(&self) -> Option<&str> {
        if self.leader_id == 0 {
            return None;
        }
        self.membership
            .addrs
            .get(&self.leader_id)
            .map(String::as_str)
    }

    /// The error for "this node cannot take that request; the leader can".
    pub fn not_leader_error(&self) -> Error {
        match self.leader_addr() {
            Some(addr) if self.leader_id != self.node_id => Error::Moved(addr.to_string()),
            _ => Error::NoLeader,
        }
    }
}

impl Status {
    /// Fail-stop: the first reason stays. No leader to send clients to and
    /// no lease: a stopped node knows neither any more. False if it had
    /// failed already.
    pub fn fail(&mut self, why: &str) -> bool {
        self.leader_id = 0;
        self.lease_until = None;
        if self.failed.is_some() {
            return false;
        }
        self.failed = Some(why.to_string());
        true
    }
}

pub type SharedStatus = Arc<RwLock<Status>>;

/// How the Raft thread's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ThreadExit {
    /// The module asked it to stop (unload, RAFT.CLUSTER reset).
    Shutdown,
    /// It could not go on; the reason.
    Failed(String),
}

/// Runs the Raft thread's body. Whatever ends it other than a requested
/// shutdown (an error, a panic in raft-rs or raft-engine) fail-stops the
/// node: a dead Raft thread behind a node that still looks like a healthy
/// follower would be a zombie. Returns the reason when this exit failed the
/// node, for the log.
pub fn guard_raft_thread(
    status: &SharedStatus,
    body: impl FnOnce() -> ThreadExit,
) -> Option<String> {
    let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(ThreadExit::Shutdown) => return None,
        Ok(ThreadExit::Failed(why)) => why,
        Err(p) => format!(
            "the Raft thread stopped on an internal error: {}",
            crate::guard::panic_text(p.as_ref())
        ),
    };
    status.write().fail(&why).then_some(why)
}

struct Proposal<C> {
    client: C,
    /// Where raft-rs appended its entry, known from the moment it was
    /// proposed: the entry can leave raft-rs's memory (a new leader's
    /// append) before any Ready shows it.
    index: u64,
    /// `ticks` when it was proposed, for the proposal bound.
    since_tick: usize,
}

/// A waiting client and the read command it sent.
type ReadRequest<C> = (C, Vec<Vec<u8>>);

struct ReadBatch<C> {
    requests: Vec<ReadRequest<C>>,
    started: Instant,
}

/// The Raft driver for one node.
pub struct RaftNode<C: Client> {
    raw: RawNode<LogStore>,
    store: LogStore,
    cfg: NodeConfig,
    logger: Logger,
    status: SharedStatus,
    membership: Membership,
    removed: bool,

    next_seq: u64,
    /// The highest entry time in the log as far as this node has seen it:
    /// a leader never stamps an entry lower, so times never go backwards
    /// along the log, across leader changes too.
    last_time_ms: u64,
    /// Tests: this node's clock runs this far ahead.
    #[cfg(test)]
    pub(crate) clock_offset_ms: u64,
    proposals: HashMap<u64, Proposal<C>>,
    /// (log index, proposal seq) of every waiting proposal. Several can
    /// share an index (one replaced another in our log): none of them is
    /// lost until another entry commits there.
    by_index: BTreeSet<(u64, u64)>,

    /// Reads waiting for the next ReadIndex round.
    read_queue: Vec<(C, Vec<Vec<u8>>, Instant)>,
    read_batches: HashMap<u64, ReadBatch<C>>,
    /// Confirmed reads waiting until their index reaches the state machine.
    confirmed_reads: Vec<(u64, Vec<ReadRequest<C>>)>,
    next_read_batch: u64,

    /// Highest committed index handed to the applier.
    sent_to_apply: u64,
    /// Joining clients waiting for this node to be a voter, with their
    /// deadlines.
    voter_waiters: Vec<(C, Instant)>,
    /// RAFT.TRANSFER_LEADER: the client, the target and when to give up.
    transfer_waiter: Option<(C, u64, Instant)>,
    /// read-mode lease: probes in flight (id -> when sent) and the lease.
    lease_probes: HashMap<u64, Instant>,
    lease_until: Option<Instant>,
    /// read-mode readindex was set at run time: no more leases (turning
    /// them on again is refused until a restart, see config.rs).
    leases_off: bool,
    /// Ticks since start: with leases, a node that just started votes for
    /// no one for an election timeout, so it cannot help elect a new leader
    /// inside an old leader's lease that it acknowledged before a restart.
    ticks_since_start: usize,
    /// Ticks since start, for the proposal bound.
    ticks: usize,
    /// `ticks` when a message from each peer last arrived, and when this
    /// node last became leader: a learner quiet since both for an election
    /// timeout no longer answers (see `add_node`).
    last_heard: HashMap<u64, usize>,
    leader_since: usize,
    /// Ticks left during which a removed leader keeps asking its best
    /// follower to take over (the first request can arrive before the
    /// follower has applied the removal, and raft-rs ignores it then).
    handover_ticks: usize,
    /// Persists log writes off this thread when set; else they are written
    /// (and fsynced) inside `process_ready`.
    writer: Option<Box<dyn LogWriter>>,
    /// Number of the last Ready handed to the writer.
    last_submitted: u64,
    /// Peer messages the check dropped (INFO), those since the last
    /// warning, and when that warning was.
    peer_messages_dropped: u64,
    drops_unwarned: u64,
    last_drop_warning: Option<Instant>,
    /// Highest Ready number the writer reported durable.
    last_persisted: u64,
}

impl<C: Client> RaftNode<C> {
    /// Writes the first entry of a new cluster (RAFT.CLUSTER INIT): index 1,
    /// term 1, this node as the only voter.
    pub fn bootstrap(store: &LogStore, id: u64, addr: &str) -> Result<(), StorageError> {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        cc.context = addr.as_bytes().to_vec().into();
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.index = 1;
        e.term = 1;
        e.data = cc.write_to_bytes().expect("encode ConfChange").into();
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        let mut m = Membership::default();
        m.conf_state.voters = vec![id];
        m.addrs.insert(id, addr.to_string());
        m.index = 1;
        store.write(LogWrite {
            entries: vec![e],
            hard_state: Some(hs),
            membership: Some(m),
            ..Default::default()
        })
    }

    pub fn new(
        cfg: NodeConfig,
        store: LogStore,
        status: SharedStatus,
        net: &dyn Network,
        logger: Logger,
    ) -> Result<Self, raft::Error> {
        let (snap_index, _) = store.snapshot_point();
        let raw = RawNode::new(&cfg.raft_config(snap_index), store.clone(), &logger)?;
        let membership = store.membership();
        for (id, addr) in &membership.addrs {
            if *id != cfg.id {
                net.upsert_peer(*id, addr);
            }
        }
        let removed = store.meta().removed;
        let last_time_ms = last_time_in_log(&store);
        let next_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let node = RaftNode {
            raw,
            store,
            cfg,
            logger,
            status,
            membership,
            removed,
            next_seq,
            last_time_ms,
            #[cfg(test)]
            clock_offset_ms: 0,
            proposals: HashMap::new(),
            by_index: BTreeSet::new(),
            read_queue: Vec::new(),
            read_batches: HashMap::new(),
            confirmed_reads: Vec::new(),
            next_read_batch: 1,
            sent_to_apply: snap_index,
            voter_waiters: Vec::new(),
            transfer_waiter: None,
            handover_ticks: 0,
            lease_probes: HashMap::new(),
            lease_until: None,
            leases_off: false,
            ticks_since_start: 0,
            ticks: 0,
            last_heard: HashMap::new(),
            leader_since: 0,
            writer: None,
            last_submitted: 0,
            last_persisted: 0,
            peer_messages_dropped: 0,
            drops_unwarned: 0,
            last_drop_warning: None,
        };
        node.publish_status();
        Ok(node)
    }

    /// From now on log writes are persisted by `writer`, off this thread.
    pub fn set_log_writer(&mut self, writer: Box<dyn LogWriter>) {
        self.writer = Some(writer);
    }

    /// The writer made the Ready `number` (and all before it) durable.
    pub fn on_persisted(&mut self, number: u64) {
        self.last_persisted = self.last_persisted.max(number);
        self.raw.on_persist_ready(number);
    }

    /// Waits for the log writer to finish everything handed to it, so the
    /// log can be changed directly (compaction, a snapshot, node meta).
    fn drain_writer(&mut self) -> Result<(), StorageError> {
        if self.last_persisted >= self.last_submitted {
            return Ok(());
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        w.wait_idle().map_err(StorageError::Invalid)?;
        if self.last_submitted > 0 {
            self.on_persisted(self.last_submitted);
        }
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn raw(&self) -> &RawNode<LogStore> {
        &self.raw
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// A single voter that is alone in its configuration campaigns at once
    /// rather than after an election timeout (right after INIT).
    pub fn campaign_if_alone(&mut self) {
        if self.is_sole_voter() && !self.is_leader() {
            self.settle_log_if_sole_voter();
            let _ = self.raw.campaign();
        }
    }

    fn is_sole_voter(&self) -> bool {
        let voters = &self.membership.conf_state.voters;
        voters.len() == 1 && voters[0] == self.cfg.id
    }

    /// A sole voter that campaigns becomes leader in the same step, with no
    /// vote message to wait for its log; raft-rs then requires every entry
    /// to be durable already (it asserts so). So such a node lets the log
    /// writer finish before anything that may start an election. (Only a
    /// node that just stopped leading can have writes in the writer, and
    /// its next Ready drains them anyway: this is the belt to those braces.)
    fn settle_log_if_sole_voter(&mut self) {
        if self.writer.is_none()
            || self.is_leader()
            || self.last_persisted >= self.last_submitted
            || !self.is_sole_voter()
        {
            return;
        }
        if let Err(e) = self.drain_writer() {
            warn!(self.logger, "log writer failed"; "error" => %e);
        }
    }

    fn not_leader(&self) -> Error {
        self.status.read().not_leader_error()
    }

    /// Handles one request. Errors that are certain (the request was not
    /// applied) are answered at once.
    pub fn handle(&mut self, req: Request<C>, net: &dyn Network) {
        if let Request::Persisted(number) = req {
            self.on_persisted(number);
            return;
        }
        if self.removed {
            match req {
                Request::Persisted(_)
                | Request::LogFailed(_)
                | Request::Messages(_)
                | Request::Removed
                | Request::LearnPeers { .. }
                | Request::Shutdown
                | Request::Expire { .. }
                | Request::TimeoutNow => {}
                Request::Write { client, .. }
                | Request::Propose { client, .. }
                | Request::Multi { client, .. }
                | Request::Read { client, .. }
                | Request::AddNode { client, .. }
                | Request::RemoveNode { client, .. }
                | Request::TransferLeader { client, .. }
                | Request::WaitVoter { client, .. } => client.reply(Reply::Error(Error::Removed)),
                Request::SnapshotTaken { clients, .. } => {
                    for c in clients {
                        c.reply(Reply::Error(Error::Removed));
                    }
                }
            }
            return;
        }
        match req {
            Request::Messages(msgs) => {
                let dropped_before = self.peer_messages_dropped;
                let just_started =
                    self.cfg.lease_reads && self.ticks_since_start < self.cfg.election_ticks;
                if msgs
                    .iter()
                    .any(|m| m.get_msg_type() == MessageType::MsgTimeoutNow)
                {
                    self.settle_log_if_sole_voter();
                }
                for m in msgs {
                    // Members only: the sender id of a peer command is
                    // anyone's to choose.
                    if self.membership.addrs.contains_key(&m.from) {
                        self.last_heard.insert(m.from, self.ticks);
                    }
                    if just_started
                        && matches!(
                            m.get_msg_type(),
                            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                        )
                    {
                        // It may have acked an old leader's lease before a
                        // restart: no vote until that lease surely expired.
                        continue;
                    }
                    // Checked here, on the Raft thread, against the state
                    // it is stepped into (see peer_check).
                    if let Err(why) = crate::peer_check::check(&self.raw.raft, &m) {
                        self.note_dropped((m.from, m.get_msg_type(), m.term), why);
                        continue;
                    }
                    let head = (m.from, m.get_msg_type(), m.term);
                    if let Err(e) = self.raw.step(m) {
                        self.note_dropped(head, &format!("raft-rs refused it: {e}"));
                    }
                }
                if self.peer_messages_dropped != dropped_before {
                    self.publish_status();
                }
                self.check_transfer();
            }
            Request::Write { argv, client } => self.propose(Payload::Command(argv), client),
            Request::Multi { cmds, client } => self.propose(Payload::Multi(cmds), client),
            Request::Propose { payload, client } => self.propose(payload, client),
            Request::Expire { keys } => {
                // Only a leader's clock decides that a key's time has come.
                if self.is_leader() && !keys.is_empty() {
                    let data = self.stamp(Payload::Expire(keys));
                    if let Err(e) = self.raw.propose(Vec::new(), data) {
                        warn!(self.logger, "expiry proposal dropped"; "error" => %e);
                    }
                }
            }
            Request::Read { argv, client } => {
                if self.is_leader() {
                    self.read_queue.push((client, argv, Instant::now()));
                } else {
                    client.reply(Reply::Error(self.not_leader()));
                }
            }
            Request::AddNode { id, addr, client } => self.add_node(id, addr, client),
            Request::RemoveNode { id, client } => self.remove_node(id, client),
            Request::TransferLeader { to, client } => self.transfer_leader(to, client),
            Request::TimeoutNow => {
                self.settle_log_if_sole_voter();
                // A local MsgTimeoutNow starts a real election at once,
                // without pre-vote, as a leader transfer does.
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgTimeoutNow);
                m.to = self.cfg.id;
                m.from = self.raw.raft.leader_id;
                if let Err(e) = self.raw.step(m) {
                    warn!(self.logger, "timeout-now failed"; "error" => %e);
                }
            }
            Request::Removed => self.mark_removed(net),
            Request::LearnPeers { peers } => self.learn_peers(peers, net),
            Request::WaitVoter { client, deadline } => {
                if self.membership.conf_state.voters.contains(&self.cfg.id) {
                    client.reply(Reply::Ok);
                } else {
                    self.voter_waiters.push((client, deadline));
                }
            }
            Request::SnapshotTaken { snapshot, clients } => {
                let reply = match self.compact_to(&snapshot) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(Error::Other(format!("log compaction failed: {e}"))),
                };
                for c in clients {
                    c.reply(reply.clone());
                }
            }
            // Handled by the owner of the node (it stops it).
            Request::Persisted(_) | Request::LogFailed(_) | Request::Shutdown => {}
        }
    }

    /// A joining node's members as RAFT.INFO showed them. Once a membership
    /// entry or a snapshot reached this node, its membership is the truth
    /// and is left alone (a JOIN retry can read RAFT.INFO long before it
    /// gets here).
    fn learn_peers(&mut self, peers: Vec<(u64, String)>, net: &dyn Network) {
        if self.membership.index > 0 || self.store.snapshot_point().0 > 0 {
            return;
        }
        let mut m = self.membership.clone();
        for (id, addr) in peers {
            if id != self.cfg.id && id != 0 {
                net.upsert_peer(id, &addr);
                m.addrs.insert(id, addr);
            }
        }
        if m == self.membership {
            return;
        }
        if let Err(e) = self.drain_writer().and_then(|()| {
            self.store.write(LogWrite {
                membership: Some(m.clone()),
                ..Default::default()
            })
        }) {
            warn!(self.logger, "could not keep the learned members"; "error" => %e);
            return;
        }
        self.membership = m;
        self.publish_status();
    }

    /// Counts a peer message the check dropped and warns about it, at most
    /// once per [`DROP_WARNING_INTERVAL`] (a broken or hostile peer can
    /// send thousands), with how many were dropped since the last warning.
    fn note_dropped(&mut self, (from, kind, term): (u64, MessageType, u64), why: &str) {
        self.peer_messages_dropped += 1;
        self.drops_unwarned += 1;
        let now = Instant::now();
        if self
            .last_drop_warning
            .is_some_and(|t| now.duration_since(t) < DROP_WARNING_INTERVAL)
        {
            return;
        }
        warn!(self.logger, "dropped a peer message raft-rs must not step";
            "from" => from, "type" => ?kind, "term" => term, "why" => why, "dropped_since_last_warning" => self.drops_unwarned);
        self.last_drop_warning = Some(now);
        self.drops_unwarned = 0;
    }

    /// Offers `snap` to followers from now on and drops the log entries it
    /// covers. The snapshot is durable before this is called, so a crash
    /// in between only leaves entries the restart skips.
    fn compact_to(&mut self, snap: &TakenSnapshot) -> Result<(), StorageError> {
        let (current, _) = self.store.snapshot_point();
        if snap.index <= current {
            return Ok(());
        }
        self.drain_writer()?;
        let mut s = raft::eraftpb::Snapshot::default();
        s.mut_metadata().index = snap.index;
        s.mut_metadata().term = snap.term;
        s.mut_metadata()
            .set_conf_state(snap.membership.conf_state.clone());
        s.data = snap.descriptor.clone().into();
        self.store.set_snapshot(Some(s));
        self.store.compact(snap.index, snap.term)?;
        info!(self.logger, "log compacted"; "index" => snap.index, "term" => snap.term,
              "entries_left" => self.store.entry_count());
        self.publish_status();
        Ok(())
    }

    fn next_proposal_id(&mut self) -> ProposalId {
        self.next_seq += 1;
        ProposalId {
            node: self.cfg.id,
            seq: self.next_seq,
        }
    }

    fn propose(&mut self, payload: Payload, client: C) {
        if !self.is_leader() {
            client.reply(Reply::Error(self.not_leader()));
            return;
        }
        let pid = self.next_proposal_id();
        let data = self.stamp(payload);
        match self.raw.propose(pid.encode(), data) {
            Ok(()) => self.track_proposal(pid.seq, client),
            Err(e) => client.reply(Reply::Error(self.proposal_error(e))),
        }
    }

    /// Encodes `payload` with this entry's time: the leader's clock, but
    /// never below the time of an entry already in the log.
    fn stamp(&mut self, payload: Payload) -> Vec<u8> {
        #[allow(unused_mut)]
        let mut now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        #[cfg(test)]
        {
            now += self.clock_offset_ms;
        }
        self.last_time_ms = self.last_time_ms.max(now);
        Record::timed(self.last_time_ms, payload).encode()
    }

    /// The highest entry time seen (for tests and INFO).
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }

    /// A proposal raft-rs accepted: as leader it appended the entry at
    /// once, at the end of the log. (A conf change it refuses there becomes
    /// an empty entry: it is then answered as lost once that commits.)
    fn track_proposal(&mut self, seq: u64, client: C) {
        let index = self.raw.raft.raft_log.last_index();
        self.proposals.insert(
            seq,
            Proposal {
                client,
                index,
                since_tick: self.ticks,
            },
        );
        self.by_index.insert((index, seq));
    }

    /// Answers the clients that waited longer than the bound. Their
    /// entries may still commit: the outcome is unknown.
    fn expire_proposals(&mut self) {
        let bound = self.cfg.proposal_timeout_ticks();
        let now = self.ticks;
        let expired: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.since_tick) > bound)
            .map(|(seq, _)| *seq)
            .collect();
        if expired.is_empty() {
            return;
        }
        let ms = (self.cfg.tick * bound as u32).as_millis();
        for seq in expired {
            if let Some(p) = self.proposals.remove(&seq) {
                self.by_index.remove(&(p.index, seq));
                p.client.reply(Reply::Error(Error::Unknown(format!(
                    "no outcome within {ms} ms; the command may or may not have been applied"
                ))));
            }
        }
    }

    /// Joining clients whose deadline passed before this node was promoted.
    fn expire_voter_waiters(&mut self) {
        let now = Instant::now();
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.voter_waiters)
            .into_iter()
            .partition(|(_, deadline)| now >= *deadline);
        self.voter_waiters = keep;
        for (c, _) in late {
            c.reply(Reply::Error(Error::Unknown(format!(
                "node {} was added as a learner but not promoted to voter within join-timeout; the leader may still promote it once it catches up",
                self.cfg.id
            ))));
        }
    }

    fn proposal_error(&self, e: raft::Error) -> Error {
        match e {
            raft::Error::ProposalDropped if self.is_leader() => {
                Error::TryAgain("leadership transfer in progress".into())
            }
            raft::Error::ProposalDropped => self.not_leader(),
            other => Error::Other(format!("proposal failed: {other}")),
        }
    }

    /// No message from `id` for an election timeout, counted from when
    /// this node became leader at the earliest.
    fn quiet(&self, id: u64) -> bool {
        let since = self
            .last_heard
            .get(&id)
            .copied()
            .unwrap_or(0)
            .max(self.leader_since);
        self.ticks.saturating_sub(since) >= self.cfg.election_ticks
    }

    fn add_node(&mut self, id: u64, addr: String, client: C) {
        if !self.is_leader() {
            return client.reply(Reply::Error(self.not_leader()));
        }
        match self.add_refusal(id, &addr) {
            Some(e) => client.reply(Reply::Error(e)),
            // A new node first joins as a learner; the leader promotes it
            // once it has caught up (see promote_caught_up_learner).
            None => self.propose_conf_change(
                ConfChangeType::AddLearnerNode,
                id,
                addr.into_bytes(),
                Some(client),
            ),
        }
    }

    /// Why `id` at `addr` cannot be added now, if it cannot. One change at
    /// a time means one pending in the log: a learner waiting to catch up
    /// does not count (it is in no quorum), so one that never does blocks
    /// nothing.
    fn add_refusal(&mut self, id: u64, addr: &str) -> Option<Error> {
        let m = &self.membership;
        let cs = &m.conf_state;
        let member = |n: &u64| cs.voters.contains(n) || cs.learners.contains(n);
        if id == 0 {
            return Some(Error::Other("node id 0 is invalid".into()));
        }
        if m.removed.contains(&id) {
            return Some(Error::Other(format!(
                "node id {id} was removed from the cluster and {ID_NOT_REUSABLE}; give the new node another id (raft.id, or 0 for a random one)"
            )));
        }
        if member(&id) {
            let at = m
                .addrs
                .get(&id)
                .map_or(String::new(), |a| format!(" at {a}"));
            return Some(Error::Other(format!(
                "node id {id} already exists (a member{at}); if that node's data was wiped, {REMOVE_FIRST} (RAFT.NODE REMOVE {id}) and join it with a new id"
            )));
        }
        if self.raw.raft.has_pending_conf() {
            return Some(Error::TryAgain("a membership change is in progress".into()));
        }
        // One server answers as one node: a second id at a member's address
        // (a JOIN after a wipe) could never catch up.
        let holder = m
            .addrs
            .iter()
            .find(|(other, a)| a.as_str() == addr && member(other))
            .map(|(other, _)| *other);
        let other = holder?;
        if !cs.learners.contains(&other) {
            return Some(Error::Other(format!(
                "address {addr} already belongs to node {other}; if that node's data was wiped, {REMOVE_FIRST} (RAFT.NODE REMOVE {other}) and join again"
            )));
        }
        // A learner at that address that no longer answers is an earlier
        // identity of the server asking now (wiped, or a JOIN that gave
        // up): it would never catch up. It is in no quorum, so it is
        // removed, through the log, and the JOIN's retry adds the new id.
        if !self.quiet(other) {
            return Some(Error::TryAgain(format!(
                "address {addr} belongs to learner {other}, which still answers; retry once it stops, or remove it (RAFT.NODE REMOVE {other})"
            )));
        }
        info!(self.logger, "replacing a learner that no longer answers"; "id" => other, "by" => id, "addr" => addr);
        self.propose_conf_change(ConfChangeType::RemoveNode, other, Vec::new(), None);
        Some(Error::TryAgain(format!(
            "replacing learner {other} at {addr}, which no longer answers; retry"
        )))
    }

    fn remove_node(&mut self, id: u64, client: C) {
        if !self.is_leader() {
            return client.reply(Reply::Error(self.not_leader()));
        }
        let cs = &self.membership.conf_state;
        if !cs.voters.contains(&id) && !cs.learners.contains(&id) {
            return client.reply(Reply::Error(Error::Other(format!(
                "node id {id} is not a member"
            ))));
        }
        if self.raw.raft.has_pending_conf() {
            return client.reply(Reply::Error(Error::TryAgain(
                "a membership change is in progress".into(),
            )));
        }
        if cs.voters.len() == 1 && cs.voters.contains(&id) {
            return client.reply(Reply::Error(Error::Other(format!(
                "node {id} is the only voter and cannot be removed; add another voter first"
            ))));
        }
        self.propose_conf_change(ConfChangeType::RemoveNode, id, Vec::new(), Some(client));
    }

    fn propose_conf_change(
        &mut self,
        t: ConfChangeType,
        id: u64,
        context: Vec<u8>,
        client: Option<C>,
    ) {
        // A change raft-rs would refuse when applying it is refused now:
        // never answered +OK, and never in the log.
        let mut single = raft::eraftpb::ConfChangeSingle::default();
        single.set_change_type(t);
        single.node_id = id;
        if let Err(e) = raft::Changer::new(self.raw.raft.prs()).simple(&[single]) {
            let err = Error::Other(format!("membership change refused by Raft: {e}"));
            match client {
                Some(c) => c.reply(Reply::Error(err)),
                None => warn!(self.logger, "conf change not proposed"; "error" => %err),
            }
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(t);
        cc.node_id = id;
        cc.context = context.into();
        let pid = self.next_proposal_id();
        match self.raw.propose_conf_change(pid.encode(), cc) {
            Ok(()) => {
                if let Some(client) = client {
                    self.track_proposal(pid.seq, client);
                }
            }
            Err(e) => {
                let err = self.proposal_error(e);
                match client {
                    Some(c) => c.reply(Reply::Error(err)),
                    None => warn!(self.logger, "conf change not proposed"; "error" => %err),
                }
            }
        }
    }

    /// Answered +OK once the target leads; an error at once for a target
    /// that is not a voter; TIMEOUT if it does not lead within the
    /// election timeout (raft-rs gives the transfer up then).
    fn transfer_leader(&mut self, to: Option<u64>, client: C) {
        if !self.is_leader() {
            return client.reply(Reply::Error(self.not_leader()));
        }
        let cs = &self.membership.conf_state;
        let target = match to {
            Some(t) if t == self.cfg.id => return client.reply(Reply::Ok),
            Some(t) if cs.learners.contains(&t) => {
                return client.reply(Reply::Error(Error::Other(format!(
                    "node {t} is not a voter (a learner still catching up)"
                ))))
            }
            Some(t) if !cs.voters.contains(&t) => {
                return client.reply(Reply::Error(Error::Other(format!(
                    "node {t} is not a member"
                ))))
            }
            Some(t) => t,
            None => match self.best_follower() {
                Some(t) => t,
                None => {
                    return client.reply(Reply::Error(Error::Other(
                        "no other voter to transfer leadership to".into(),
                    )))
                }
            },
        };
        if let Some((old, t, _)) = self.transfer_waiter.take() {
            old.reply(Reply::Error(Error::Other(format!(
                "the transfer to node {t} was replaced by one to node {target}"
            ))));
        }
        // The transferee campaigns at once, ignoring leases: stop serving
        // lease reads before it can hear of it.
        self.lease_until = None;
        self.publish_status();
        self.raw.transfer_leader(target);
        let deadline = Instant::now() + self.cfg.tick * self.cfg.election_ticks as u32;
        self.transfer_waiter = Some((client, target, deadline));
        self.check_transfer();
    }

    /// Answers a waiting RAFT.TRANSFER_LEADER once its outcome is known.
    fn check_transfer(&mut self) {
        let Some((_, target, deadline)) = &self.transfer_waiter else {
            return;
        };
        let (target, deadline) = (*target, *deadline);
        let leader = self.raw.raft.leader_id;
        let reply = if leader == target {
            Reply::Ok
        } else if leader != 0 && leader != self.cfg.id {
            Reply::Error(Error::Other(format!(
                "node {leader} took the leadership, not node {target}"
            )))
        } else if Instant::now() >= deadline
            || (self.is_leader() && self.raw.raft.lead_transferee.is_none())
        {
            Reply::Error(Error::Unknown(format!(
                "the transfer to node {target} did not finish within the election timeout"
            )))
        } else {
            return;
        };
        if let Some((client, _, _)) = self.transfer_waiter.take() {
            client.reply(reply);
        }
    }

    /// The voter, other than us, with the most of the log.
    fn best_follower(&self) -> Option<u64> {
        let me = self.cfg.id;
        self.membership
            .conf_state
            .voters
            .iter()
            .copied()
            .filter(|&v| v != me)
            .max_by_key(|v| self.raw.raft.prs().get(*v).map_or(0, |p| p.matched))
    }

    /// Called every tick interval.
    pub fn tick(&mut self, net: &dyn Network) {
        if self.removed {
            // A removed node takes no part any more, except to hand over.
            if self.handover_ticks > 0 {
                self.handover_ticks -= 1;
                self.send_timeout_now(net);
            }
            return;
        }
        self.settle_log_if_sole_voter();
        self.raw.tick();
        self.ticks_since_start = self.ticks_since_start.saturating_add(1);
        self.ticks = self.ticks.saturating_add(1);
        self.expire_proposals();
        self.expire_voter_waiters();
        if self.is_leader() && !self.removed {
            self.promote_caught_up_learner();
            self.probe_lease();
        }
        self.expire_reads();
        self.check_transfer();
    }

    /// The settings that change at run time, applied at each tick.
    /// `lease_reads` false ends the lease at once (the Redis side checks
    /// the setting itself too); the append limits apply to every follower,
    /// including ones added later.
    pub fn apply_settings(&mut self, lease_reads: bool, max_inflight: usize, max_msg_size: u64) {
        if !lease_reads && self.cfg.lease_reads && !self.leases_off {
            self.leases_off = true;
            self.lease_until = None;
            self.lease_probes.clear();
            self.publish_status();
        }
        let max_inflight = max_inflight.max(1);
        let raft = &mut self.raw.raft;
        raft.max_msg_size = max_msg_size;
        raft.max_inflight = max_inflight;
        let me = raft.id;
        let peers: Vec<u64> = raft.prs().iter().map(|(id, _)| *id).collect();
        for id in peers.into_iter().filter(|id| *id != me) {
            // Not inside raft-rs's full()/add() pair: safe here.
            raft.adjust_max_inflight_msgs(id, max_inflight);
        }
    }

    /// read-mode lease: a read-index round with no reads attached, whose
    /// confirmation by a quorum renews the lease from when it was sent.
    fn probe_lease(&mut self) {
        if !self.cfg.lease_reads
            || self.leases_off
            || self.cfg.election_ticks < LEASE_MIN_ELECTION_TICKS
            || !self.raw.raft.commit_to_current_term()
        {
            return;
        }
        if self.raw.raft.lead_transferee.is_some() {
            // The transferee may campaign at once, ignoring leases.
            self.lease_until = None;
            return;
        }
        let now = Instant::now();
        let limit = self.cfg.read_timeout();
        self.lease_probes
            .retain(|_, sent| now.duration_since(*sent) < limit);
        let id = self.next_read_batch;
        self.next_read_batch += 1;
        self.lease_probes.insert(id, now);
        let mut ctx = vec![LEASE_PROBE];
        ctx.extend_from_slice(&id.to_be_bytes());
        self.raw.read_index(ctx);
    }

    fn promote_caught_up_learner(&mut self) {
        if self.raw.raft.has_pending_conf() {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let ready = self
            .membership
            .conf_state
            .learners
            .iter()
            .copied()
            .find(|l| {
                self.raw
                    .raft
                    .prs()
                    .get(*l)
                    .is_some_and(|p| p.matched >= committed)
            });
        if let Some(l) = ready {
            let addr = self.membership.addrs.get(&l).cloned().unwrap_or_default();
            info!(self.logger, "promoting caught-up learner"; "id" => l);
            self.propose_conf_change(ConfChangeType::AddNode, l, addr.into_bytes(), None);
        }
    }

    fn expire_reads(&mut self) {
        let limit = self.cfg.read_timeout();
        let now = Instant::now();
        let expired: Vec<u64> = self
            .read_batches
            .iter()
            .filter(|(_, b)| now.duration_since(b.started) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(b) = self.read_batches.remove(&id) {
                for (c, _) in b.requests {
                    c.reply(Reply::Error(Error::TryAgain(
                        "read not confirmed by a quorum in time".into(),
                    )));
                }
            }
        }
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.read_queue)
            .into_iter()
            .partition(|(_, _, t)| now.duration_since(*t) > limit);
        self.read_queue = keep;
        for (c, _, _) in old {
            c.reply(Reply::Error(Error::TryAgain(
                "leader has not committed an entry of its term yet".into(),
            )));
        }
    }

    /// Starts one ReadIndex round for all reads waiting now. raft-rs drops
    /// read requests until the leader has committed an entry of its own
    /// term, so they wait for that here.
    pub fn issue_reads(&mut self) {
        if self.read_queue.is_empty()
            || !self.is_leader()
            || !self.raw.raft.commit_to_current_term()
        {
            return;
        }
        let id = self.next_read_batch;
        self.next_read_batch += 1;
        let requests = self.read_queue.drain(..).map(|(c, a, _)| (c, a)).collect();
        self.read_batches.insert(
            id,
            ReadBatch {
                requests,
                started: Instant::now(),
            },
        );
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    /// Handles whatever raft-rs has ready, in raft-rs's documented order.
    pub fn process_ready(
        &mut self,
        net: &dyn Network,
        applier: &mut dyn Applier<C>,
    ) -> Result<(), StorageError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // raft-rs lets a leader send its Ready's messages before the write,
        // which is safe for entries but not for a new term or vote: a sole
        // voter wins its election inside one step, so the Ready with its new
        // term also carries its first appends. Were they sent first, a crash
        // before the fsync would let it win the same term again and write
        // other entries at (index, term) pairs a learner already holds. Such
        // a Ready is written, and fsynced, before any of its messages leave.
        let new_term_or_vote = rd.hs().is_some_and(|hs| {
            let old = self.store.hard_state();
            hs.term != old.term || hs.vote != old.vote
        });
        if self.writer.is_some() {
            let leading = self.raw.raft.state == StateRole::Leader;
            if rd.snapshot().is_empty() && leading && !new_term_or_vote {
                return self.process_ready_async(rd, net, applier);
            }
            // A snapshot resets the log: everything before it first. A
            // follower writes itself: it could not acknowledge before its
            // fsync anyway, and the hand-offs to and from the writer cost
            // more CPU than the overlap gains it.
            self.drain_writer()?;
        }
        let mut items = Vec::new();
        let mut replies = Vec::new();

        // 1. Messages that need no persistence (a leader's appends and
        // heartbeats) go out first, in parallel with our own fsync; with a
        // new term or vote, only after it (step 6).
        let early = rd.take_messages();
        let held = if new_term_or_vote {
            early
        } else {
            for m in early {
                net.send(m);
            }
            net.flush();
            Vec::new()
        };
        // 2. A snapshot from the leader: durable data first, then the log
        // restarts after it, then the dataset is replaced (in apply order).
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(
                &snap,
                rd.hs().cloned(),
                net,
                applier,
                &mut items,
                &mut replies,
            )?;
        }
        // 3. Committed entries to the state machine; 4. new entries and
        // 5. the hard state, in one batch, one fsync.
        let write = self.take_ready_write(&mut rd, &mut items, &mut replies, net);
        let read_states = rd.take_read_states();
        if !write.is_empty() {
            self.store.write(write)?;
        }
        // 6. Messages that must follow persistence (votes, append acks).
        for m in held.into_iter().chain(rd.take_persisted_messages()) {
            net.send(m);
        }
        // 7. Advance, then the light ready.
        let mut light = self.raw.advance(rd);
        // Only the commit index and derived membership: both are recomputed
        // from the fsynced log after a crash, so no second fsync per cycle.
        let mut write = LogWrite {
            no_sync: true,
            ..Default::default()
        };
        if let Some(commit) = light.commit_index() {
            let mut hs: HardState = self.store.hard_state();
            hs.commit = commit;
            write.hard_state = Some(hs);
        }
        for m in light.take_messages() {
            net.send(m);
        }
        self.handle_committed(
            light.take_committed_entries(),
            &mut write,
            &mut items,
            &mut replies,
            net,
        );
        if !write.is_empty() {
            self.store.write(write)?;
        }
        self.raw.advance_apply();
        self.finish_ready(read_states, items, replies, net, applier);
        Ok(())
    }

    /// `process_ready` with a log writer: the write is staged (raft-rs reads
    /// it back from memory) and handed to the writer with the messages that
    /// must wait for it; this thread goes on at once. raft-rs hands out
    /// committed entries only once they are durable here too.
    fn process_ready_async(
        &mut self,
        mut rd: raft::Ready,
        net: &dyn Network,
        applier: &mut dyn Applier<C>,
    ) -> Result<(), StorageError> {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        // A leader's appends and heartbeats go at once, in parallel with
        // its own write.
        for m in rd.take_messages() {
            net.send(m);
        }
        net.flush();
        let mut write = self.take_ready_write(&mut rd, &mut items, &mut replies, net);
        let read_states = rd.take_read_states();
        // A leader's Ready has none (raft-rs sends all its messages at
        // once); whatever there is waits for the write, as it must.
        let messages = rd.take_persisted_messages();
        if !write.is_empty() {
            self.store.stage(&mut write)?;
        }
        if !write.is_empty() || !messages.is_empty() {
            self.last_submitted = rd.number();
            let job = WriteJob {
                number: rd.number(),
                write,
                messages,
            };
            if let Some(w) = self.writer.as_mut() {
                w.submit(job);
            }
        }
        self.raw.advance_append_async(rd);
        self.raw.advance_apply();
        self.finish_ready(read_states, items, replies, net, applier);
        Ok(())
    }

    /// The soft state, the committed entries (to `items`) and the log write
    /// of a Ready: its new entries, its hard state and the membership its
    /// committed changes made.
    fn take_ready_write(
        &mut self,
        rd: &mut raft::Ready,
        items: &mut Vec<ApplyItem<C>>,
        replies: &mut Vec<(C, Reply)>,
        net: &dyn Network,
    ) -> LogWrite {
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.raft_state, ss.leader_id);
        }
        let mut write = LogWrite::default();
        let committed = rd.take_committed_entries();
        self.handle_committed(committed, &mut write, items, replies, net);
        write.entries = rd.take_entries();
        for e in &write.entries {
            if let Some(t) = time_of_entry(e) {
                self.last_time_ms = self.last_time_ms.max(t);
            }
        }
        write.hard_state = rd.hs().cloned();
        write.no_sync = self.commit_only(&write);
        write
    }

    /// True when `write` only moves the commit index (plus derived
    /// membership): no fsync of its own is needed, as the commit index is
    /// recomputed from the replicated log after a crash (term and vote
    /// changes are always synced).
    fn commit_only(&self, write: &LogWrite) -> bool {
        if !write.entries.is_empty() || write.membership.is_some() {
            return false;
        }
        let Some(hs) = &write.hard_state else {
            return false;
        };
        let old = self.store.hard_state();
        hs.term == old.term && hs.vote == old.vote
    }

    /// The end of every Ready: confirmed reads, the apply batch, replies.
    fn finish_ready(
        &mut self,
        read_states: Vec<raft::ReadState>,
        mut items: Vec<ApplyItem<C>>,
        replies: Vec<(C, Reply)>,
        net: &dyn Network,
        applier: &mut dyn Applier<C>,
    ) {
        for rs in read_states {
            if rs.request_ctx.len() == 9 && rs.request_ctx[0] == LEASE_PROBE {
                let id = u64::from_be_bytes(rs.request_ctx[1..].try_into().unwrap_or_default());
                if let Some(sent) = self.lease_probes.remove(&id) {
                    if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
                        let until = sent + self.cfg.lease();
                        self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
                    }
                }
                continue;
            }
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(batch) = self.read_batches.remove(&u64::from_be_bytes(bytes)) {
                self.confirmed_reads.push((rs.index, batch.requests));
            }
        }
        let sent = self.sent_to_apply;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(i, _)| *i <= sent);
        self.confirmed_reads = later;
        for (_, requests) in due {
            items.push(ApplyItem::Reads { requests });
        }
        net.flush();
        // Publish first: a client told +OK then reads INFO and must see it.
        self.publish_status();
        if !items.is_empty() {
            applier.apply(items);
        }
        for (c, r) in replies {
            c.reply(r);
        }
        if self.membership.conf_state.voters.contains(&self.cfg.id) {
            for (c, _) in self.voter_waiters.drain(..) {
                c.reply(Reply::Ok);
            }
        }
    }

    /// Installs a snapshot received from the leader (raft-rs accepted it).
    fn install_snapshot(
        &mut self,
        snap: &raft::eraftpb::Snapshot,
        hs: Option<HardState>,
        net: &dyn Network,
        applier: &mut dyn Applier<C>,
        items: &mut Vec<ApplyItem<C>>,
        replies: &mut Vec<(C, Reply)>,
    ) -> Result<(), StorageError> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let mut membership = match SnapshotDescriptor::decode(&snap.data) {
            Ok(d) => d.membership,
            Err(e) => {
                warn!(self.logger, "snapshot descriptor unreadable, keeping known addresses"; "error" => %e);
                let mut m = self.membership.clone();
                m.index = index;
                m
            }
        };
        membership.conf_state = meta.get_conf_state().clone();
        info!(self.logger, "installing a snapshot from the leader"; "index" => index, "term" => term,
              "voters" => ?membership.conf_state.voters);
        applier
            .persist_received_snapshot(index, term)
            .map_err(|e| {
                StorageError::Invalid(format!("cannot keep the received snapshot: {e}"))
            })?;
        crate::failpoint::hit("install-before-log-reset");
        let mut hs = hs.unwrap_or_else(|| self.store.hard_state());
        hs.commit = hs.commit.max(index);
        self.store
            .install_snapshot(index, term, membership.clone(), hs)?;
        self.store.set_snapshot(Some(snap.clone()));
        // Our proposals the snapshot covers committed or were overwritten;
        // which one cannot be told any more.
        let covered: Vec<(u64, u64)> = self.by_index.range(..=(index, u64::MAX)).copied().collect();
        for (i, seq) in covered {
            self.by_index.remove(&(i, seq));
            if let Some(p) = self.proposals.remove(&seq) {
                replies.push((
                    p.client,
                    Reply::Error(Error::Unknown(
                        "replaced by a snapshot from the leader; the outcome is unknown".into(),
                    )),
                ));
            }
        }
        for (id, addr) in &membership.addrs {
            if *id != self.cfg.id && !self.membership.addrs.contains_key(id) {
                net.upsert_peer(*id, addr);
            }
        }
        for id in self.membership.addrs.keys() {
            if *id != self.cfg.id && !membership.addrs.contains_key(id) {
                net.remove_peer(*id);
            }
        }
        self.membership = membership.clone();
        self.sent_to_apply = index;
        items.push(ApplyItem::Snapshot {
            index,
            term,
            membership,
        });
        Ok(())
    }

    fn on_soft_state(&mut self, role: StateRole, leader_id: u64) {
        info!(self.logger, "role changed"; "role" => ?role, "leader" => leader_id, "term" => self.raw.raft.term);
        if role == StateRole::Leader {
            self.leader_since = self.ticks;
        }
        if role != StateRole::Leader {
            self.lease_until = None;
            self.lease_probes.clear();
            // Reads can only be confirmed by a leader: fail them (a read has
            // no effect, so failing it is always safe). Proposals stay: their
            // entries may still commit under the next leader.
            let err = {
                let mut st = self.status.write();
                st.leader_id = leader_id;
                st.not_leader_error()
            };
            for (c, _, _) in self.read_queue.drain(..) {
                c.reply(Reply::Error(err.clone()));
            }
            for (_, b) in self.read_batches.drain() {
                for (c, _) in b.requests {
                    c.reply(Reply::Error(err.clone()));
                }
            }
        }
    }

    /// The waiting client of a committed entry, if we proposed it. Our
    /// proposals at lower or equal indexes that this entry is not are lost:
    /// an entry keeps its index, and another one committed there.
    fn take_client(&mut self, e: &Entry) -> Option<C> {
        let mine = ProposalId::decode(&e.context)
            .filter(|p| p.node == self.cfg.id)
            .and_then(|p| self.proposals.remove(&p.seq).map(|pr| (p.seq, pr)));
        if let Some((seq, pr)) = &mine {
            self.by_index.remove(&(pr.index, *seq));
        }
        while let Some(&(idx, seq)) = self.by_index.first() {
            if idx > e.index {
                break;
            }
            self.by_index.remove(&(idx, seq));
            if let Some(p) = self.proposals.remove(&seq) {
                p.client.reply(Reply::Error(lost_entry()));
            }
        }
        mine.map(|(_, pr)| pr.client)
    }

    fn handle_committed(
        &mut self,
        entries: Vec<Entry>,
        write: &mut LogWrite,
        items: &mut Vec<ApplyItem<C>>,
        replies: &mut Vec<(C, Reply)>,
        net: &dyn Network,
    ) {
        for e in entries {
            let client = self.take_client(&e);
            self.sent_to_apply = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    let record = if e.data.is_empty() {
                        None
                    } else {
                        match Record::decode(&e.data) {
                            Ok(r) => Some(r),
                            Err(err) => {
                                warn!(self.logger, "skipping an entry it cannot decode"; "index" => e.index, "error" => %err);
                                None
                            }
                        }
                    };
                    items.push(ApplyItem::Entry {
                        index: e.index,
                        term: e.term,
                        time_ms: record.as_ref().and_then(|r| r.time_ms),
                        payload: record.map(|r| r.payload),
                        client,
                        conf: None,
                    });
                }
                EntryType::EntryConfChange => {
                    let refused = self.apply_conf_change(&e, write, net);
                    // Applied (the membership is as of this entry) or refused
                    // (it is unchanged): known. Replayed below a membership
                    // recovered from the log: not known exactly.
                    let conf = if e.index >= self.membership.index {
                        ConfUpdate::Known(self.membership.clone())
                    } else {
                        ConfUpdate::Superseded
                    };
                    items.push(ApplyItem::Entry {
                        index: e.index,
                        term: e.term,
                        time_ms: None,
                        payload: None,
                        client: None,
                        conf: Some(conf),
                    });
                    if let Some(c) = client {
                        replies.push((
                            c,
                            match refused {
                                None => Reply::Ok,
                                Some(why) => Reply::Error(Error::Other(format!(
                                    "membership change refused by Raft: {why}"
                                ))),
                            },
                        ));
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    warn!(self.logger, "ignoring a joint-consensus entry"; "index" => e.index);
                    items.push(ApplyItem::Entry {
                        index: e.index,
                        term: e.term,
                        time_ms: None,
                        payload: None,
                        client: None,
                        conf: None,
                    });
                }
            }
        }
    }

    /// Applies a committed membership change; Some(why) if it was refused
    /// (the membership is unchanged).
    fn apply_conf_change(
        &mut self,
        e: &Entry,
        write: &mut LogWrite,
        net: &dyn Network,
    ) -> Option<String> {
        if e.index <= self.membership.index {
            // Already part of the membership we recovered from the log.
            return None;
        }
        let cc = match ConfChange::parse_from_bytes(&e.data) {
            Ok(cc) => cc,
            Err(err) => {
                warn!(self.logger, "undecodable conf change"; "index" => e.index, "error" => %err);
                return Some(format!("undecodable: {err}"));
            }
        };
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                warn!(self.logger, "conf change refused"; "index" => e.index, "error" => %err);
                return Some(err.to_string());
            }
        };
        let id = cc.node_id;
        let mut m = self.membership.clone();
        m.conf_state = cs;
        m.index = e.index;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                // Refused at proposal since removed ids are kept; a log from
                // before that may still re-add one, and it did commit.
                m.removed.remove(&id);
                let addr = String::from_utf8_lossy(&cc.context).into_owned();
                if !addr.is_empty() {
                    m.addrs.insert(id, addr.clone());
                }
                if id != self.cfg.id {
                    if let Some(a) = m.addrs.get(&id) {
                        net.upsert_peer(id, a);
                    }
                }
            }
            ConfChangeType::RemoveNode => {
                let addr = m.addrs.remove(&id);
                m.removed.insert(id);
                self.last_heard.remove(&id);
                if id != self.cfg.id {
                    net.remove_peer(id);
                    if self.is_leader() {
                        if let Some(a) = addr {
                            net.notify_removed(id, &a);
                        }
                    }
                }
            }
        }
        info!(self.logger, "membership changed"; "index" => e.index, "change" => ?cc.get_change_type(), "node" => id,
              "voters" => ?m.conf_state.voters, "learners" => ?m.conf_state.learners);
        self.membership = m.clone();
        write.membership = Some(m);
        crate::failpoint::hit("membership-apply");
        if cc.get_change_type() == ConfChangeType::RemoveNode && id == self.cfg.id {
            self.mark_removed(net);
        }
        None
    }

    /// This node is no longer a member: it stops serving. A removed leader
    /// hands over at once so the others need not wait for a timeout.
    fn mark_removed(&mut self, net: &dyn Network) {
        if self.removed {
            return;
        }
        warn!(self.logger, "this node was removed from the cluster");
        self.removed = true;
        if let Some((c, _, _)) = self.transfer_waiter.take() {
            c.reply(Reply::Error(Error::Removed));
        }
        if self.is_leader() {
            self.handover_ticks = self.cfg.election_ticks;
            self.send_timeout_now(net);
        }
        if let Err(e) = self.drain_writer() {
            warn!(self.logger, "log writer failed"; "error" => %e);
        }
        let mut meta = self.store.meta();
        meta.removed = true;
        if let Err(e) = self.store.write(LogWrite {
            meta: Some(meta),
            ..Default::default()
        }) {
            warn!(self.logger, "could not record the removal"; "error" => %e);
        }
        // Pending writes may already be in the others' logs and commit
        // under the next leader: their outcome is unknown, not failed.
        for (_, p) in self.proposals.drain() {
            p.client.reply(Reply::Error(Error::Unknown(
                "this node was removed from the cluster; the command may or may not have been applied"
                    .into(),
            )));
        }
        self.by_index.clear();
        for (c, _) in self.voter_waiters.drain(..) {
            c.reply(Reply::Error(Error::Removed));
        }
        self.publish_status();
    }

    fn send_timeout_now(&mut self, net: &dyn Network) {
        self.lease_until = None;
        self.publish_status();
        if let Some(t) = self.best_follower() {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgTimeoutNow);
            m.to = t;
            m.from = self.cfg.id;
            m.term = self.raw.raft.term;
            net.send(m);
        }
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// The transport finished sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    pub fn store(&self) -> &LogStore {
        &self.store
    }

    pub fn status(&self) -> &SharedStatus {
        &self.status
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    pub fn publish_status(&self) {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Follower if self.membership.conf_state.learners.contains(&self.cfg.id) => {
                Role::Learner
            }
            StateRole::Follower => Role::Follower,
        };
        let mut st = self.status.write();
        st.node_id = self.cfg.id;
        st.role = role;
        st.leader_id = r.leader_id;
        st.term = r.term;
        st.commit_index = r.raft_log.committed;
        st.first_index = self.raw.store().first_index().unwrap_or(1);
        st.last_index = r.raft_log.last_index();
        st.applied_index = self.sent_to_apply;
        if st.membership != self.membership {
            st.membership = self.membership.clone();
        }
        st.removed = self.removed;
        st.peer_messages_dropped = self.peer_messages_dropped;
        st.lease_until = if self.is_leader() && !self.removed {
            self.lease_until
        } else {
            None
        };
    }

    /// Answers every waiting client before the thread stops.
    pub fn fail_all(&mut self, err: Error) {
        for (_, p) in self.proposals.drain() {
            p.client.reply(Reply::Error(err.clone()));
        }
        self.by_index.clear();
        for (c, _, _) in self.read_queue.drain(..) {
            c.reply(Reply::Error(err.clone()));
        }
        for (_, b) in self.read_batches.drain() {
            for (c, _) in b.requests {
                c.reply(Reply::Error(err.clone()));
            }
        }
        for (_, reqs) in self.confirmed_reads.drain(..) {
            for (c, _) in reqs {
                c.reply(Reply::Error(err.clone()));
            }
        }
        for (c, _) in self.voter_waiters.drain(..) {
            c.reply(Reply::Error(err.clone()));
        }
        if let Some((c, _, _)) = self.transfer_waiter.take() {
            c.reply(Reply::Error(err.clone()));
        }
    }
}

fn lost_entry() -> Error {
    Error::TryAgain("entry was not committed (leader changed); not applied".into())
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

/// How far back from the end of the log a starting node looks for the
/// newest entry time (no-ops and membership changes carry none).
const TIME_SCAN_ENTRIES: u64 = 1024;

/// The newest entry time in the log, 0 when none is found near its end.
fn last_time_in_log(store: &LogStore) -> u64 {
    use raft::Storage as _;
    let last = store.last_index().unwrap_or(0);
    let first = store.first_index().unwrap_or(1);
    let from = first.max(last.saturating_sub(TIME_SCAN_ENTRIES) + 1);
    if from > last {
        return 0;
    }
    let entries = store
        .entries(from, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap_or_default();
    entries.iter().rev().find_map(time_of_entry).unwrap_or(0)
}

/// The time of a normal entry (membership changes carry none, and their
/// data is no record).
fn time_of_entry(e: &Entry) -> Option<u64> {
    if e.get_entry_type() != EntryType::EntryNormal {
        return None;
    }
    entry::time_of(&e.data)
}
