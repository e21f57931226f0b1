//! The Raft driver with in-memory nodes: real `RaftNode`s and real logs in
//! temporary directories, messages routed by the test, links cut at will.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;

use super::*;
use crate::storage::{LogStore, LogWrite, Membership, NodeMeta};

/// A client whose answer the test reads from a channel.
struct TestClient(mpsc::Sender<Result<String, Error>>);

impl Client for TestClient {
    fn reply(self, r: Reply) {
        let _ = self.0.send(match r {
            Reply::Ok => Ok("OK".into()),
            Reply::Error(e) => Err(e),
        });
    }
}

fn client() -> (TestClient, mpsc::Receiver<Result<String, Error>>) {
    let (tx, rx) = mpsc::channel();
    (TestClient(tx), rx)
}

#[derive(Default)]
struct TestNet {
    out: RefCell<Vec<Message>>,
    peers: RefCell<HashMap<u64, String>>,
    removed_notices: RefCell<Vec<u64>>,
}

impl Network for TestNet {
    fn send(&self, msg: Message) {
        self.out.borrow_mut().push(msg);
    }
    fn upsert_peer(&self, id: u64, addr: &str) {
        self.peers.borrow_mut().insert(id, addr.to_string());
    }
    fn remove_peer(&self, id: u64) {
        self.peers.borrow_mut().remove(&id);
    }
    fn notify_removed(&self, id: u64, _addr: &str) {
        self.removed_notices.borrow_mut().push(id);
    }
}

/// A tiny state machine: SET k v / GET k; reads answer with the value.
#[derive(Default)]
struct TestApplier {
    data: Rc<RefCell<BTreeMap<String, String>>>,
    applied: Rc<RefCell<Vec<u64>>>,
    /// (index, time) of the timed entries applied.
    times: Rc<RefCell<Vec<(u64, u64)>>>,
}

impl Applier<TestClient> for TestApplier {
    fn apply(&mut self, items: Vec<ApplyItem<TestClient>>) {
        for item in items {
            match item {
                ApplyItem::Entry {
                    index,
                    time_ms,
                    payload,
                    client,
                    ..
                } => {
                    if let Some(t) = time_ms {
                        self.times.borrow_mut().push((index, t));
                    }
                    if let Some(Payload::Command(argv)) = payload {
                        let k = String::from_utf8_lossy(&argv[1]).into_owned();
                        let v = String::from_utf8_lossy(&argv[2]).into_owned();
                        self.data.borrow_mut().insert(k, v);
                    }
                    self.applied.borrow_mut().push(index);
                    if let Some(c) = client {
                        let _ = c.0.send(Ok("OK".into()));
                    }
                }
                ApplyItem::Reads { requests } => {
                    for (c, argv) in requests {
                        let k = String::from_utf8_lossy(&argv[1]).into_owned();
                        let v = self.data.borrow().get(&k).cloned().unwrap_or_default();
                        let _ = c.0.send(Ok(v));
                    }
                }
                ApplyItem::Snapshot { index, .. } => self.applied.borrow_mut().push(index),
            }
        }
    }
}

struct TestNode {
    node: RaftNode<TestClient>,
    net: TestNet,
    app: TestApplier,
    dir: tempfile::TempDir,
    /// With a log writer: what it holds, run by the test (`Cluster::pump`).
    writer: Option<Arc<WriterQueue>>,
}

/// A log writer the test runs by hand: jobs wait until the pump (or a
/// `wait_idle`) persists them, so "staged but not durable" can last as long
/// as a test wants, and a crash can drop them.
#[derive(Default)]
struct WriterQueue {
    jobs: Mutex<VecDeque<WriteJob>>,
    /// Messages of persisted jobs, for the pump to deliver.
    released: Mutex<Vec<Message>>,
    /// Highest Ready number persisted and not yet reported to the node.
    persisted: Mutex<Option<u64>>,
    /// While set, the pump leaves the jobs alone (a slow disk).
    hold: std::sync::atomic::AtomicBool,
    store: Mutex<Option<LogStore>>,
}

impl WriterQueue {
    fn run_jobs(&self) -> bool {
        let jobs: Vec<WriteJob> = self.jobs.lock().drain(..).collect();
        if jobs.is_empty() {
            return false;
        }
        let store = self.store.lock().clone().unwrap();
        for j in jobs {
            if !j.write.is_empty() {
                store.persist(&j.write, true).unwrap();
                store.mark_durable(j.write.seq);
            }
            *self.persisted.lock() = Some(j.number);
            self.released.lock().extend(j.messages);
        }
        true
    }
}

struct TestWriter(Arc<WriterQueue>);

impl LogWriter for TestWriter {
    fn submit(&mut self, job: WriteJob) {
        self.0.jobs.lock().push_back(job);
    }
    fn wait_idle(&mut self) -> Result<(), String> {
        self.0.run_jobs();
        Ok(())
    }
}

struct Cluster {
    nodes: BTreeMap<u64, TestNode>,
    /// Directed links that drop messages.
    cut: HashSet<(u64, u64)>,
}

thread_local! {
    /// Election ticks and read-mode lease of the nodes this test thread
    /// starts next (Raft's timing is fixed when a node starts).
    static TIMING: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((10, false)) };
}

fn cfg(id: u64) -> NodeConfig {
    let (election_ticks, lease_reads) = TIMING.with(|t| t.get());
    NodeConfig {
        id,
        tick: Duration::from_millis(100),
        election_ticks,
        heartbeat_ticks: 2,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        lease_reads,
    }
}

fn logger() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// Opens a test node's log. A lock still held (seen about once in 20
/// loaded runs of the fuzz property, after the store's own 2 s wait) is
/// waited for longer, and if it never frees, the panic says who holds it
/// (/proc/locks) for the next reader.
fn open_test_store(dir: &std::path::Path) -> LogStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match LogStore::open(dir, false) {
            Ok(s) => return s,
            Err(crate::storage::StorageError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
                panic!(
                    "cannot open the test log {}: {e}\n/proc/locks:\n{locks}",
                    dir.display()
                );
            }
        }
    }
}

fn start_node(id: u64, dir: tempfile::TempDir) -> TestNode {
    let store = open_test_store(dir.path());
    let net = TestNet::default();
    let status: SharedStatus = Default::default();
    let node = RaftNode::new(cfg(id), store, status, &net, logger()).unwrap();
    TestNode {
        node,
        net,
        app: TestApplier::default(),
        dir,
        writer: None,
    }
}

/// A node with a [`TestWriter`], as the driver sets it up: used while it
/// leads; as a follower it writes itself.
fn start_async_node(id: u64, dir: tempfile::TempDir) -> TestNode {
    let mut n = start_node(id, dir);
    let q = Arc::new(WriterQueue::default());
    *q.store.lock() = Some(n.node.store().clone());
    n.node.set_log_writer(Box::new(TestWriter(q.clone())));
    n.writer = Some(q);
    n
}

/// Runs a node's log writer unless held: its messages go to `out`, and the
/// node hears what became durable. True if anything happened.
fn run_writer(n: &mut TestNode, out: &mut Vec<Message>) -> bool {
    let Some(w) = &n.writer else {
        return false;
    };
    let mut wrote = false;
    if !w.hold.load(std::sync::atomic::Ordering::SeqCst) {
        wrote = w.run_jobs();
    }
    out.append(&mut w.released.lock());
    if let Some(number) = w.persisted.lock().take() {
        n.node.on_persisted(number);
        wrote = true;
    }
    wrote
}

impl Cluster {
    /// `n` voters that all start from the same membership.
    fn new(n: u64) -> Cluster {
        Cluster::build(n, start_node)
    }

    /// The same, with a log writer (which the pump runs) for whichever node
    /// leads.
    fn new_async(n: u64) -> Cluster {
        Cluster::build(n, start_async_node)
    }

    fn build(n: u64, start: fn(u64, tempfile::TempDir) -> TestNode) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        Cluster::build_members(&voters, &[], start)
    }

    /// Nodes that all start from the membership `voters` + `learners`.
    fn build_members(
        voters: &[u64],
        learners: &[u64],
        start: fn(u64, tempfile::TempDir) -> TestNode,
    ) -> Cluster {
        let mut nodes = BTreeMap::new();
        for &id in voters.iter().chain(learners) {
            let dir = tempfile::tempdir().unwrap();
            let store = open_test_store(dir.path());
            let mut m = Membership::default();
            m.conf_state.voters = voters.to_vec();
            m.conf_state.learners = learners.to_vec();
            for &p in voters.iter().chain(learners) {
                m.addrs.insert(p, format!("127.0.0.1:{}", 5000 + p));
            }
            store
                .write(LogWrite {
                    membership: Some(m),
                    meta: Some(NodeMeta {
                        node_id: id,
                        dbid: "test".into(),
                        removed: false,
                    }),
                    ..Default::default()
                })
                .unwrap();
            drop(store);
            nodes.insert(id, start(id, dir));
        }
        Cluster {
            nodes,
            cut: HashSet::new(),
        }
    }

    /// A new, empty node `id` (its meta only: no membership), not yet a
    /// member: it joins when the leader adds it.
    fn add_blank_node(&mut self, id: u64) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_test_store(dir.path());
            store
                .write(LogWrite {
                    meta: Some(NodeMeta {
                        node_id: id,
                        dbid: "test".into(),
                        removed: false,
                    }),
                    ..Default::default()
                })
                .unwrap();
        }
        self.nodes.insert(id, start_node(id, dir));
    }

    fn node(&mut self, id: u64) -> &mut TestNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Kills a node: what its log writer still holds is lost, what reached
    /// its log files survives. Returns its directory for a restart.
    fn crash(&mut self, id: u64) -> tempfile::TempDir {
        let TestNode { dir, .. } = self.nodes.remove(&id).unwrap();
        dir
    }

    /// Crashes a node and starts it again from its files.
    fn restart(&mut self, id: u64, start: fn(u64, tempfile::TempDir) -> TestNode) {
        let dir = self.crash(id);
        self.nodes.insert(id, start(id, dir));
    }

    /// Processes readies and delivers messages until the network is quiet.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut inflight = Vec::new();
            let mut wrote = false;
            for n in self.nodes.values_mut() {
                n.node.issue_reads();
                n.node.process_ready(&n.net, &mut n.app).unwrap();
                inflight.append(&mut n.net.out.borrow_mut());
                wrote |= run_writer(n, &mut inflight);
            }
            if inflight.is_empty() && !wrote {
                return;
            }
            // As the peer commands and the transport do it.
            let mut told_removed = Vec::new();
            for m in inflight {
                if self.cut.contains(&(m.from, m.to)) {
                    continue;
                }
                let from = m.from;
                if let Some(t) = self.nodes.get_mut(&m.to) {
                    match admit_from(&t.node.membership, from, vec![m]) {
                        Some(msgs) => t.node.handle(Request::Messages(msgs), &t.net),
                        None => told_removed.push(from),
                    }
                }
            }
            for id in told_removed {
                if let Some(s) = self.nodes.get_mut(&id) {
                    s.node.handle(Request::Removed, &s.net);
                }
            }
        }
        panic!("network never went quiet");
    }

    fn tick(&mut self, times: usize) {
        for _ in 0..times {
            for n in self.nodes.values_mut() {
                n.node.tick(&n.net);
            }
            self.pump();
        }
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.node.is_leader())
            .map(|(id, _)| *id)
            .collect()
    }

    fn elect(&mut self) -> u64 {
        for _ in 0..100 {
            self.tick(1);
            let l = self.leaders();
            if l.len() == 1 {
                // Let the leader commit its first entry.
                self.tick(2);
                return l[0];
            }
        }
        panic!("no leader elected");
    }

    fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for o in ids {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn write(&mut self, on: u64, k: &str, v: &str) -> mpsc::Receiver<Result<String, Error>> {
        let (c, rx) = client();
        let n = self.node(on);
        n.node.handle(
            Request::Write {
                argv: vec![b"SET".to_vec(), k.into(), v.into()],
                client: c,
            },
            &n.net,
        );
        rx
    }

    fn read(&mut self, on: u64, k: &str) -> mpsc::Receiver<Result<String, Error>> {
        let (c, rx) = client();
        let n = self.node(on);
        n.node.handle(
            Request::Read {
                argv: vec![b"GET".to_vec(), k.into()],
                client: c,
            },
            &n.net,
        );
        rx
    }

    fn value(&self, on: u64, k: &str) -> Option<String> {
        self.nodes[&on].app.data.borrow().get(k).cloned()
    }
}

#[test]
fn election_elects_exactly_one_leader_that_all_agree_on() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    assert_eq!(c.leaders(), vec![leader]);
    for n in c.nodes.values() {
        assert_eq!(n.node.raw().raft.leader_id, leader);
    }
}

#[test]
fn replication_applies_a_write_on_every_node_and_answers_the_client() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let rx = c.write(l, "k", "v1");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    for id in 1..=3 {
        assert_eq!(c.value(id, "k").as_deref(), Some("v1"), "node {id}");
    }
}

#[test]
fn a_write_on_a_follower_is_refused_with_the_leaders_address() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    let rx = c.write(f, "k", "v");
    let err = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(err, Error::Moved(format!("127.0.0.1:{}", 5000 + l)));
}

#[test]
fn a_cut_off_leader_steps_down_and_the_others_elect_a_new_one() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    let old_term = c.nodes[&old].node.raw().raft.term;
    c.isolate(old);
    // A write accepted by the isolated leader can never commit.
    let lost = c.write(old, "k", "lost");
    c.tick(40);
    assert!(
        !c.nodes[&old].node.is_leader(),
        "check-quorum must make it step down"
    );
    // Randomized timeouts can split the two votes a few times in a row.
    for _ in 0..200 {
        if !c.leaders().is_empty() {
            break;
        }
        c.tick(1);
    }
    let new = c.leaders();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], old);
    assert!(c.nodes[&new[0]].node.raw().raft.term > old_term);
    let ok = c.write(new[0], "k", "kept");
    c.pump();
    assert_eq!(ok.try_recv().unwrap(), Ok("OK".into()));
    assert!(lost.try_recv().is_err(), "no answer while cut off");
    c.heal();
    c.tick(10);
    // The old leader's entry was overwritten: the client learns it was not applied.
    assert!(matches!(lost.try_recv().unwrap(), Err(Error::TryAgain(_))));
    for id in 1..=3 {
        assert_eq!(c.value(id, "k").as_deref(), Some("kept"), "node {id}");
    }
}

#[test]
fn a_follower_that_was_cut_off_catches_up() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    c.isolate(f);
    for i in 0..20 {
        let rx = c.write(l, &format!("k{i}"), &i.to_string());
        c.pump();
        assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    }
    assert_eq!(c.value(f, "k19"), None);
    c.heal();
    c.tick(5);
    for i in 0..20 {
        assert_eq!(c.value(f, &format!("k{i}")), Some(i.to_string()));
    }
}

#[test]
fn quorum_read_sees_the_latest_write_and_an_isolated_leader_serves_no_read() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let w = c.write(l, "k", "v");
    c.pump();
    assert!(w.try_recv().unwrap().is_ok());
    let r = c.read(l, "k");
    c.pump();
    assert_eq!(r.try_recv().unwrap(), Ok("v".into()));

    // Cut off, the leader cannot confirm a read: it must not answer with data.
    c.isolate(l);
    let stale = c.read(l, "k");
    c.pump();
    assert!(stale.try_recv().is_err());
    c.tick(40);
    match stale.try_recv().unwrap() {
        Ok(v) => panic!("isolated leader served a read: {v}"),
        Err(e) => assert!(
            matches!(e, Error::TryAgain(_) | Error::Moved(_) | Error::NoLeader),
            "{e:?}"
        ),
    }
}

#[test]
fn restart_recovers_the_log_and_reapplies_committed_entries() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    for i in 0..5 {
        let rx = c.write(l, &format!("k{i}"), "x");
        c.pump();
        assert!(rx.try_recv().unwrap().is_ok());
    }
    let f = (1..=3).find(|i| *i != l).unwrap();
    let term = c.nodes[&f].node.raw().raft.term;
    let old = c.nodes.remove(&f).unwrap();
    let TestNode { node, dir, .. } = old;
    drop(node);
    let restarted = start_node(f, dir);
    assert_eq!(restarted.node.raw().raft.term, term);
    c.nodes.insert(f, restarted);
    c.tick(3);
    for i in 0..5 {
        assert_eq!(c.value(f, &format!("k{i}")).as_deref(), Some("x"));
    }
}

#[test]
fn a_new_node_joins_as_learner_and_is_promoted_once_caught_up() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    for i in 0..5 {
        c.write(l, &format!("k{i}"), "x");
    }
    c.pump();
    c.add_blank_node(4);
    let (cl, rx) = client();
    let n = c.node(l);
    n.node.handle(
        Request::AddNode {
            id: 4,
            addr: "127.0.0.1:5004".into(),
            client: cl,
        },
        &n.net,
    );
    // A second change while the first is pending in the log is refused.
    let rx5 = add_node(&mut c, l, 5, "127.0.0.1:5005");
    assert!(matches!(rx5.try_recv(), Ok(Err(Error::TryAgain(_)))));
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    // Or while the promotion is (proposed at the leader's next tick).
    let n = c.node(l);
    n.node.tick(&n.net);
    assert!(n.node.raw().raft.has_pending_conf());
    let rx5 = add_node(&mut c, l, 5, "127.0.0.1:5005");
    assert!(matches!(rx5.try_recv(), Ok(Err(Error::TryAgain(_)))));
    c.tick(5);
    let voters = c.nodes[&l]
        .node
        .raw()
        .raft
        .prs()
        .conf()
        .to_conf_state()
        .voters;
    assert!(voters.contains(&4), "node 4 promoted: {voters:?}");
    for i in 0..5 {
        assert_eq!(c.value(4, &format!("k{i}")).as_deref(), Some("x"));
    }
    // Entries: membership (learner, then voter) are two entries.
    let last = c.nodes[&l].node.raw().raft.raft_log.last_index();
    assert_eq!(c.nodes[&4].node.raw().raft.raft_log.last_index(), last);
}

#[test]
fn removing_a_node_stops_it_and_notifies_it() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    let (cl, rx) = client();
    let n = c.node(l);
    n.node
        .handle(Request::RemoveNode { id: f, client: cl }, &n.net);
    c.pump();
    c.tick(2);
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    assert!(c.nodes[&l].net.removed_notices.borrow().contains(&f));
    // The leader tells it; it stops serving.
    let t = c.node(f);
    t.node.handle(Request::Removed, &t.net);
    let rx = c.write(f, "k", "v");
    assert_eq!(rx.try_recv().unwrap(), Err(Error::Removed));
    // The two left still make progress.
    let w = c.write(l, "k", "v");
    c.pump();
    assert!(w.try_recv().unwrap().is_ok());
}

#[test]
fn a_leader_that_removes_itself_hands_over_to_a_follower() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let (cl, rx) = client();
    let n = c.node(l);
    n.node
        .handle(Request::RemoveNode { id: l, client: cl }, &n.net);
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    assert!(c.nodes[&l].node.is_removed());
    // Well before an election timeout (10 ticks), another node leads.
    c.tick(3);
    let others: Vec<u64> = c.leaders().into_iter().filter(|x| *x != l).collect();
    assert_eq!(others.len(), 1, "a new leader among the others");
    let w = c.write(others[0], "k", "v");
    c.pump();
    assert!(w.try_recv().unwrap().is_ok());
    let rx = c.write(l, "k", "x");
    assert_eq!(rx.try_recv().unwrap(), Err(Error::Removed));
}

/// Found by the Jepsen suite (list-append, member nemesis): a write pending
/// on a leader that is removed was answered "removed" (= not applied) while
/// its entry, already replicated, committed under the next leader.
#[test]
fn a_write_pending_on_a_removed_leader_is_answered_as_unknown_not_failed() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let (cl, removal) = client();
    let n = c.node(l);
    n.node
        .handle(Request::RemoveNode { id: l, client: cl }, &n.net);
    let w = c.write(l, "k", "v");
    c.pump();
    assert_eq!(removal.try_recv().unwrap(), Ok("OK".into()));
    c.tick(5);
    let applied = c
        .nodes
        .keys()
        .filter(|id| **id != l)
        .any(|id| c.value(*id, "k").as_deref() == Some("v"));
    match w.try_recv().unwrap() {
        Ok(_) => assert!(applied, "acknowledged but not applied"),
        Err(Error::Unknown(_)) => {}
        Err(e) => assert!(!applied, "answered {e:?} (not applied) but it was applied"),
    }
}

#[test]
fn a_read_lease_is_renewed_by_quorum_heartbeats_and_dropped_on_transfer_or_isolation() {
    let mut c = Cluster::new(3);
    for n in c.nodes.values_mut() {
        n.node.cfg.lease_reads = true;
    }
    let l = c.elect();
    c.tick(2);
    let lease = |c: &Cluster, id: u64| c.nodes[&id].node.status().read().lease_until;
    let until = lease(&c, l).expect("a lease after quorum heartbeats");
    assert!(until > Instant::now());
    for id in c.nodes.keys() {
        if *id != l {
            assert!(lease(&c, *id).is_none(), "a follower holds no lease");
        }
    }
    // Cut off: no renewal, so it runs out (0.8 x 10 ticks of 100 ms).
    c.isolate(l);
    c.tick(1);
    let stale = lease(&c, l).expect("still held for now");
    assert!(
        stale <= until + Duration::from_millis(300),
        "not renewed while cut off"
    );
    assert_eq!(stale, until, "not renewed while cut off");
    std::thread::sleep(stale.saturating_duration_since(Instant::now()));
    assert!(lease(&c, l).is_none_or(|t| t <= Instant::now()));
    // Still cut off after it ran out: ticking does not bring it back.
    c.tick(1);
    assert!(lease(&c, l).is_none_or(|t| t <= Instant::now()));
    c.heal();
    let l = c.elect();
    c.tick(2);
    assert!(lease(&c, l).is_some());
    // A transfer drops the lease before the transferee can campaign.
    let (cl, _rx) = client();
    let n = c.node(l);
    n.node.handle(
        Request::TransferLeader {
            to: None,
            client: cl,
        },
        &n.net,
    );
    assert!(lease(&c, l).is_none());
}

/// Issue 16: read-mode switched to readindex at run time ends the lease at
/// once and it is not renewed; the append limits apply to every follower.
#[test]
fn run_time_settings_end_the_lease_and_change_the_append_limits() {
    let mut c = Cluster::new(3);
    for n in c.nodes.values_mut() {
        n.node.cfg.lease_reads = true;
    }
    let l = c.elect();
    c.tick(2);
    let lease = |c: &Cluster, id: u64| c.nodes[&id].node.status().read().lease_until;
    assert!(lease(&c, l).is_some());
    c.node(l).node.apply_settings(false, 2, 4096);
    assert!(lease(&c, l).is_none(), "switched off: no lease at once");
    c.tick(3);
    assert!(lease(&c, l).is_none(), "switched off: never renewed");

    // Followers that answer nothing: at most 2 appends in flight each.
    let followers: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != l).collect();
    c.isolate(l);
    for i in 0..4 {
        let _ = c.write(l, &format!("k{i}"), "v");
        c.pump();
    }
    let raft = &c.nodes[&l].node.raw().raft;
    assert_eq!(raft.max_msg_size, 4096);
    for f in followers {
        assert!(raft.prs().get(f).unwrap().ins.full(), "follower {f}");
    }
}

fn hold_writer(c: &Cluster, id: u64, hold: bool) {
    let w = c.nodes[&id].writer.as_ref().expect("an async node");
    w.hold.store(hold, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn with_a_log_writer_writes_replicate_and_a_cut_off_leader_is_replaced() {
    let mut c = Cluster::new_async(3);
    let old = c.elect();
    for i in 0..20 {
        let rx = c.write(old, &format!("k{i}"), "v");
        c.pump();
        assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    }
    c.isolate(old);
    let lost = c.write(old, "k0", "lost");
    c.tick(40);
    for _ in 0..200 {
        if c.leaders().iter().any(|l| *l != old) {
            break;
        }
        c.tick(1);
    }
    let new = c.leaders();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], old);
    let ok = c.write(new[0], "k0", "kept");
    c.pump();
    assert_eq!(ok.try_recv().unwrap(), Ok("OK".into()));
    c.heal();
    c.tick(10);
    assert!(matches!(lost.try_recv().unwrap(), Err(Error::TryAgain(_))));
    for id in 1..=3 {
        assert_eq!(c.value(id, "k0").as_deref(), Some("kept"), "node {id}");
        assert_eq!(c.value(id, "k19").as_deref(), Some("v"), "node {id}");
    }
}

/// One node's Ready, then its writer unless held: what it sent.
fn step(c: &mut Cluster, id: u64) -> Vec<Message> {
    let n = c.node(id);
    n.node.process_ready(&n.net, &mut n.app).unwrap();
    let mut out: Vec<Message> = n.net.out.borrow_mut().drain(..).collect();
    run_writer(n, &mut out);
    out
}

fn deliver(c: &mut Cluster, msgs: Vec<Message>) {
    for m in msgs {
        if let Some(t) = c.nodes.get_mut(&m.to) {
            t.node.handle(Request::Messages(vec![m]), &t.net);
        }
    }
}

#[test]
fn with_a_log_writer_a_leader_removing_itself_from_two_nodes_hands_over_to_the_other() {
    // The other node wins alone, with no vote to wait for, and raft-rs
    // asserts that such a node has its whole log durable.
    let mut c = Cluster::new_async(2);
    let l = c.elect();
    let f = if l == 1 { 2 } else { 1 };
    let (cl, removal) = client();
    let n = c.node(l);
    n.node
        .handle(Request::RemoveNode { id: l, client: cl }, &n.net);
    let to_f = step(&mut c, l);
    deliver(&mut c, to_f);
    let ack = step(&mut c, f);
    // The leader appends one more write before it learns the removal
    // committed.
    let w = c.write(l, "k", "v");
    let to_f = step(&mut c, l);
    deliver(&mut c, to_f);
    step(&mut c, f);
    deliver(&mut c, ack);
    // Removal commits; the old leader hands over; the follower, now the
    // only voter, campaigns (on TimeoutNow or its own timeout).
    c.tick(30);
    assert_eq!(removal.try_recv().unwrap(), Ok("OK".into()));
    assert!(c.nodes[&l].node.is_removed());
    assert!(c.nodes[&f].node.is_leader());
    assert!(
        w.try_recv().is_ok(),
        "the old leader's client hears an outcome"
    );
    c.pump();
    assert_eq!(c.value(f, "k").as_deref(), Some("v"));
}

#[test]
fn a_leaders_slow_disk_holds_back_the_answer_and_a_new_leader_takes_over_cleanly() {
    let mut c = Cluster::new_async(3);
    let l = c.elect();
    let rx = c.write(l, "k", "v1");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    // The followers write for themselves: their writers stay empty.
    for id in (1..=3).filter(|i| *i != l) {
        assert!(c.nodes[&id].writer.as_ref().unwrap().jobs.lock().is_empty());
    }
    hold_writer(&c, l, true);
    let rx = c.write(l, "k", "v2");
    c.pump();
    // Both followers made it durable (a quorum: it is committed), but the
    // leader applies and answers only once its own copy is durable too.
    assert!(rx.try_recv().is_err());
    assert_eq!(c.value(l, "k").as_deref(), Some("v1"));
    hold_writer(&c, l, false);
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    // Leadership moves while the old leader's disk is slow again: it steps
    // down with a write in its writer, and as a follower writes itself.
    hold_writer(&c, l, true);
    let pending = c.write(l, "k", "v3");
    c.pump();
    c.isolate(l);
    c.tick(40);
    for _ in 0..200 {
        if c.leaders().iter().any(|x| *x != l) {
            break;
        }
        c.tick(1);
    }
    let new = *c.leaders().iter().find(|x| **x != l).unwrap();
    let rx = c.write(new, "k", "v4");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    hold_writer(&c, l, false);
    c.heal();
    c.tick(10);
    // v3 reached the followers before the cut, so it may have committed
    // under the new leader: whatever the old leader's client heard, every
    // node ends with v4 and agrees.
    let _ = pending.try_recv();
    for id in 1..=3 {
        assert_eq!(c.value(id, "k").as_deref(), Some("v4"), "node {id}");
    }
}

#[test]
fn entry_times_never_go_backwards_across_leader_changes_and_restarts() {
    let mut c = Cluster::new(3);
    let first = c.elect();
    // The first leader's clock runs an hour ahead.
    c.node(first).node.clock_offset_ms = 3_600_000;
    for i in 0..3 {
        let rx = c.write(first, &format!("a{i}"), "v");
        c.pump();
        assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    }
    let ahead = c.node(first).node.last_time_ms();
    c.isolate(first);
    c.tick(40);
    for _ in 0..200 {
        if c.leaders().iter().any(|l| *l != first) {
            break;
        }
        c.tick(1);
    }
    let second = *c.leaders().iter().find(|l| **l != first).unwrap();
    let rx = c.write(second, "b", "v");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.heal();
    c.tick(10);
    let mine = c.node(second).node.last_time_ms();
    assert!(
        mine >= ahead,
        "the new leader stamped {mine}, below {ahead}"
    );
    // Every node applied the same times, never decreasing.
    let seen: Vec<Vec<(u64, u64)>> = (1..=3)
        .map(|id| c.nodes[&id].app.times.borrow().clone())
        .collect();
    assert_eq!(seen[0].len(), 4, "{seen:?}");
    for s in &seen {
        assert_eq!(s, &seen[0]);
        assert!(s.windows(2).all(|w| w[0].1 <= w[1].1), "{s:?}");
    }
    // A restarted node reads the newest time back from its log.
    assert_eq!(last_time_in_log(c.nodes[&second].node.store()), mine);
}

#[test]
fn a_transfer_is_answered_once_the_target_leads_and_one_that_cannot_finish_times_out() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let t = (1..=3).find(|i| *i != l).unwrap();
    let transfer = |c: &mut Cluster, on: u64, to: Option<u64>| {
        let (cl, rx) = client();
        let n = c.node(on);
        n.node
            .handle(Request::TransferLeader { to, client: cl }, &n.net);
        rx
    };
    // Not a member: refused at once.
    let rx = transfer(&mut c, l, Some(99));
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Other(e))) if e.contains("not a member")));
    // Under way: no answer until the target leads.
    let rx = transfer(&mut c, l, Some(t));
    assert!(rx.try_recv().is_err(), "answered before the target leads");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    assert_eq!(c.leaders(), vec![t]);
    // A target that hears nothing: TIMEOUT once Raft gives the transfer up
    // (an election timeout of ticks).
    let cut_off = (1..=3).find(|i| *i != t).unwrap();
    c.isolate(cut_off);
    let rx = transfer(&mut c, t, Some(cut_off));
    for _ in 0..12 {
        if rx.try_recv().is_ok() {
            panic!("answered before the election timeout ran out");
        }
        c.tick(1);
        if c.nodes[&t].node.raw().raft.lead_transferee.is_none() {
            break;
        }
    }
    c.tick(1);
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Unknown(_)))));
    assert_eq!(c.leaders(), vec![t]);
}

#[test]
fn removing_the_only_voter_is_refused_at_once_and_nothing_is_proposed() {
    let mut c = Cluster::new(1);
    let l = c.elect();
    let last = c.nodes[&l].node.raw().raft.raft_log.last_index();
    let (cl, rx) = client();
    let n = c.node(l);
    n.node
        .handle(Request::RemoveNode { id: l, client: cl }, &n.net);
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Other(e))) if e.contains("only voter")));
    c.pump();
    assert_eq!(c.nodes[&l].node.raw().raft.raft_log.last_index(), last);
    let w = c.write(l, "k", "v");
    c.pump();
    assert_eq!(w.try_recv().unwrap(), Ok("OK".into()));
}

/// Finding 4 (issue 11): a sole voter wins an election in one step, and the
/// Ready with its new term and vote also carries appends to its learners.
/// Sent before that term is durable, a crash lets it win the same term again
/// and write a different entry at an (index, term) a learner already holds:
/// the learner keeps the old one and the two diverge once it commits.
#[test]
fn a_sole_voters_new_term_is_durable_before_its_appends_leave() {
    let mut c = Cluster::build_members(&[1], &[2], start_async_node);
    c.node(1).node.campaign_if_alone();
    c.pump();
    assert!(c.nodes[&1].node.is_leader());
    let w0 = c.write(1, "k", "w0");
    c.pump();
    assert_eq!(w0.try_recv().unwrap(), Ok("OK".into()));
    assert_eq!(c.value(2, "k").as_deref(), Some("w0"));

    // A clean restart; its disk is slow from now on.
    c.restart(1, start_async_node);
    let old_term = c.nodes[&1].node.raw().raft.term;
    hold_writer(&c, 1, true);
    c.node(1).node.campaign_if_alone();
    assert!(c.nodes[&1].node.is_leader());
    let mut sent = step(&mut c, 1);
    deliver(&mut c, sent.clone());
    let acks = step(&mut c, 2);
    deliver(&mut c, acks);
    let _w1 = c.write(1, "k", "w1");
    let more = step(&mut c, 1);
    deliver(&mut c, more.clone());
    step(&mut c, 2);
    sent.extend(more);
    let new_term = c.nodes[&1].node.raw().raft.term;
    assert!(new_term > old_term);
    assert!(sent.iter().any(|m| m.to == 2 && m.term == new_term));

    // Node 1 dies before its writer ran: what did it promise on disk?
    c.restart(1, start_async_node);
    let durable_term = c.nodes[&1].node.raw().raft.term;
    let early: Vec<_> = sent.iter().filter(|m| m.term > durable_term).collect();

    c.node(1).node.campaign_if_alone();
    c.pump();
    let w2 = c.write(1, "k", "w2");
    c.pump();
    c.tick(3);
    assert_eq!(w2.try_recv().unwrap(), Ok("OK".into()));
    assert_eq!(c.value(1, "k").as_deref(), Some("w2"));
    assert_eq!(
        c.value(2, "k").as_deref(),
        Some("w2"),
        "the learner diverged from the leader; messages sent at a term not yet durable: {:?}",
        early
            .iter()
            .map(|m| (m.get_msg_type(), m.term))
            .collect::<Vec<_>>()
    );
    assert!(early.is_empty(), "sent before the term was durable");
}

/// Finding 5 (issue 11): a healed partition. The old leader, not yet aware
/// of the new term, takes a write, and within the same batch (no Ready in
/// between) the new leader's first append reaches it: raft-rs cuts the
/// write's entry out of memory before any Ready shows it, so its index was
/// never learned and, before the fix, its client waited forever.
#[test]
fn a_write_cut_from_memory_before_any_ready_is_still_answered() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    c.isolate(old);
    // Only the others tick: the old leader does not notice it lost quorum.
    let mut stashed = Vec::new();
    for _ in 0..200 {
        for id in &others {
            let n = c.node(*id);
            n.node.tick(&n.net);
        }
        for _ in 0..10 {
            let mut inflight = Vec::new();
            for id in &others {
                inflight.extend(step(&mut c, *id));
            }
            let (to_old, rest): (Vec<_>, Vec<_>) = inflight.into_iter().partition(|m| m.to == old);
            stashed.extend(to_old);
            deliver(&mut c, rest);
        }
        if others.iter().any(|id| c.nodes[id].node.is_leader()) {
            break;
        }
    }
    let new = *others
        .iter()
        .find(|id| c.nodes[id].node.is_leader())
        .expect("the others elect a leader");
    assert!(
        c.nodes[&old].node.is_leader(),
        "the old leader still thinks it leads"
    );
    let appends: Vec<Message> = stashed
        .into_iter()
        .filter(|m| m.from == new && m.get_msg_type() == MessageType::MsgAppend)
        .collect();
    assert!(!appends.is_empty(), "the new leader's first append");
    c.heal();
    // One batch: the write, then the append of the new term.
    let w = c.write(old, "k", "cut");
    let n = c.node(old);
    n.node.handle(Request::Messages(appends), &n.net);
    assert!(!c.nodes[&old].node.is_leader());
    c.pump();
    c.tick(5);
    match w.try_recv() {
        Err(_) => panic!("the write cut before any Ready was never answered"),
        Ok(Ok(v)) => panic!("answered {v} but it was never applied"),
        Ok(Err(e)) => assert!(matches!(e, Error::TryAgain(_)), "{e:?}"),
    }
    for id in 1..=3 {
        assert_ne!(c.value(id, "k").as_deref(), Some("cut"), "node {id}");
    }
}

/// Finding 5: a leader cut off for good takes a write; its entry never
/// commits and nothing else commits at its index either. The client hears
/// -TIMEOUT (outcome unknown) within the proposal bound, not never.
#[test]
fn a_write_whose_outcome_never_settles_is_answered_timeout_within_the_bound() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    c.isolate(l);
    let w = c.write(l, "k", "v");
    c.pump();
    let bound = c.nodes[&l].node.cfg.proposal_timeout_ticks();
    for _ in 0..bound + 1 {
        let n = c.node(l);
        n.node.tick(&n.net);
        c.pump();
    }
    match w.try_recv() {
        Err(_) => panic!("no answer after {} ticks", bound + 1),
        Ok(r) => assert!(matches!(r, Err(Error::Unknown(_))), "{r:?}"),
    }
}

/// Finding 5: RAFT.CLUSTER JOIN waits on the joining node until it is a
/// voter. A learner that never catches up (here: cut off) must still answer
/// once the join deadline passes.
#[test]
fn a_join_waiting_for_promotion_is_answered_when_its_deadline_passes() {
    let mut c = Cluster::build_members(&[1], &[2], start_node);
    c.node(1).node.campaign_if_alone();
    c.pump();
    c.isolate(2);
    let (cl, rx) = client();
    let n = c.node(2);
    n.node.handle(
        Request::WaitVoter {
            client: cl,
            deadline: Instant::now(),
        },
        &n.net,
    );
    c.tick(1);
    let err = rx
        .try_recv()
        .expect("answered at the first tick after the deadline");
    assert!(matches!(err, Err(Error::Unknown(_))), "{err:?}");
}

/// Finding 7 (issue 11): a joining node remembers the members it learned
/// from RAFT.INFO (an index-0 membership) so that a restart before its first
/// membership entry still knows whom to answer. The JOIN thread used to
/// write that itself, on every attempt, racing the Raft thread: read before
/// a snapshot from the leader was installed, written after it, it replaced
/// the snapshot's membership. After the node's promotion and a restart, the
/// promotion replayed onto an empty configuration: a node that elected
/// itself alone. Now the Raft thread writes it, and only while no
/// membership entry or snapshot has reached the node.
#[test]
fn learned_peers_of_a_join_retry_never_replace_a_newer_membership() {
    use crate::storage::SnapshotDescriptor;
    let mut c = Cluster::new(3);
    let l = c.elect();
    for i in 0..5 {
        let w = c.write(l, &format!("k{i}"), "x");
        c.pump();
        assert!(w.try_recv().unwrap().is_ok());
    }
    // The joining node 4, as ensure_node and the first attempt leave it.
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<(u64, String)> = (1..=3)
        .map(|p| (p, format!("127.0.0.1:{}", 5000 + p)))
        .collect();
    {
        let store = open_test_store(dir.path());
        store
            .write(LogWrite {
                meta: Some(NodeMeta {
                    node_id: 4,
                    dbid: "test".into(),
                    removed: false,
                }),
                ..Default::default()
            })
            .unwrap();
    }
    c.nodes.insert(4, start_node(4, dir));
    let n = c.node(4);
    n.node.handle(
        Request::LearnPeers {
            peers: peers.clone(),
        },
        &n.net,
    );
    // Known to the transport, and kept (index 0) for a restart.
    let kept = c.nodes[&4].node.store().membership();
    assert_eq!(kept.index, 0);
    assert_eq!(kept.addrs.len(), 3);
    assert_eq!(c.nodes[&4].net.peers.borrow().len(), 3);
    c.isolate(4);
    let (cl, added) = client();
    let n = c.node(l);
    n.node.handle(
        Request::AddNode {
            id: 4,
            addr: "127.0.0.1:5004".into(),
            client: cl,
        },
        &n.net,
    );
    c.pump();
    assert_eq!(added.try_recv().unwrap(), Ok("OK".into()));
    // The leader compacts past the learner's entry: node 4 gets a snapshot.
    let (index, term, membership) = {
        let n = &c.nodes[&l].node;
        let index = n.status().read().applied_index;
        let term = n.raw().raft.raft_log.term(index).unwrap();
        (index, term, n.membership.clone())
    };
    let descriptor = SnapshotDescriptor {
        size: 0,
        crc32: 0,
        membership: membership.clone(),
    }
    .encode();
    let n = c.node(l);
    n.node.handle(
        Request::SnapshotTaken {
            snapshot: Box::new(TakenSnapshot {
                index,
                term,
                membership,
                descriptor,
            }),
            clients: Vec::new(),
        },
        &n.net,
    );
    c.heal();
    for _ in 0..20 {
        if c.nodes[&4].node.store().membership().index > 0 {
            break;
        }
        c.tick(1);
    }
    let installed = c.nodes[&4].node.store().membership();
    assert!(installed.index > 0, "node 4 installed the snapshot");
    assert!(installed.conf_state.learners.contains(&4), "{installed:?}");
    assert!(c.nodes[&4].node.store().snapshot_point().0 > 0);

    // The JOIN thread's retry, finishing after the install.
    let n = c.node(4);
    n.node.handle(Request::LearnPeers { peers }, &n.net);
    assert_eq!(c.nodes[&4].node.store().membership(), installed);

    // Node 4 restarts, then the leader promotes it.
    c.restart(4, start_node);
    c.tick(5);
    let voters = |c: &Cluster, id: u64| {
        let mut v = c.nodes[&id]
            .node
            .raw()
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters;
        v.sort();
        v
    };
    assert_eq!(voters(&c, l), vec![1, 2, 3, 4]);
    assert_eq!(voters(&c, 4), vec![1, 2, 3, 4], "node 4's configuration");
    c.isolate(4);
    for _ in 0..50 {
        let n = c.node(4);
        n.node.tick(&n.net);
        c.pump();
    }
    assert!(!c.nodes[&4].node.is_leader(), "node 4 elected itself alone");
}

/// Finding 9 (issue 11): how long after a leader's lease-confirming
/// heartbeat a follower that acknowledged it first grants a vote, against
/// the lease that heartbeat gave. Worst case for the follower's tick phase:
/// it ticks right after the heartbeat arrives, then every `tick`; a vote
/// granted at its k-th tick is granted (k - 1) ticks after the heartbeat,
/// which left the leader no earlier than the lease's start.
fn lease_and_earliest_vote(election_ticks: usize) -> (Option<Duration>, Duration) {
    TIMING.with(|t| t.set((election_ticks, true)));
    let mut c = Cluster::new(3);
    let l = c.elect();
    c.tick(election_ticks + 2);
    let others: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    let (f1, f2) = (others[0], others[1]);
    // One lease probe: its heartbeat reaches the followers, their acks the
    // leader.
    // (With no lease to probe for, the next regular heartbeat.)
    let mut to_followers = Vec::new();
    for _ in 0..election_ticks {
        let n = c.node(l);
        n.node.tick(&n.net);
        to_followers = step(&mut c, l);
        if to_followers
            .iter()
            .any(|m| m.to == f2 && m.get_msg_type() == MessageType::MsgHeartbeat)
        {
            break;
        }
        deliver(&mut c, std::mem::take(&mut to_followers));
        c.pump();
    }
    assert!(!to_followers.is_empty(), "a heartbeat");
    deliver(&mut c, to_followers);
    let acks: Vec<Message> = step(&mut c, f1)
        .into_iter()
        .chain(step(&mut c, f2))
        .collect();
    let probe_sent = Instant::now();
    deliver(&mut c, acks);
    step(&mut c, l);
    let lease = c.nodes[&l]
        .node
        .status()
        .read()
        .lease_until
        .map(|u| u.saturating_duration_since(probe_sent));
    // From now on f2 hears nothing from the leader; f1 asks it for a vote
    // after each of its ticks.
    let (term, last, last_term) = {
        let r = &c.nodes[&f1].node.raw().raft;
        let last = r.raft_log.last_index();
        (r.term, last, r.raft_log.term(last).unwrap())
    };
    let tick = c.nodes[&f2].node.cfg.tick;
    for k in 1..=4 * election_ticks {
        let n = c.node(f2);
        n.node.tick(&n.net);
        step(&mut c, f2);
        let vote = Message {
            msg_type: MessageType::MsgRequestPreVote,
            to: f2,
            from: f1,
            term: term + 1,
            index: last,
            log_term: last_term,
            ..Default::default()
        };
        deliver(&mut c, vec![vote]);
        let granted = step(&mut c, f2).iter().any(|m| {
            m.get_msg_type() == MessageType::MsgRequestPreVoteResponse && m.to == f1 && !m.reject
        });
        if granted {
            TIMING.with(|t| t.set((10, false)));
            return (lease, tick * (k as u32 - 1));
        }
    }
    panic!("f2 never granted a vote");
}

/// Finding 9: raft-rs withholds a follower's vote for (election ticks - 1)
/// ticks after a heartbeat in the worst tick phase, and the lease is 0.8 of
/// the election timeout: with fewer than 5 election ticks the lease
/// outlasted the vote refusal, so a new leader could be elected while the
/// old one still served reads at once. Such settings now get no lease.
#[test]
fn a_read_lease_never_outlasts_the_followers_refusal_to_vote() {
    for e in [2, 3, 4, 5, 6, 10] {
        let (lease, vote) = lease_and_earliest_vote(e);
        assert_eq!(
            vote,
            Duration::from_millis(100) * (e as u32 - 1),
            "{e} ticks"
        );
        match lease {
            Some(lease) => assert!(
                lease <= vote,
                "{e} election ticks: lease {lease:?} outlasts the earliest vote at {vote:?}"
            ),
            None => assert!(e < LEASE_MIN_ELECTION_TICKS, "{e} ticks: no lease"),
        }
    }
}

fn add_node(
    c: &mut Cluster,
    on: u64,
    id: u64,
    addr: &str,
) -> mpsc::Receiver<Result<String, Error>> {
    let (cl, rx) = client();
    let n = c.node(on);
    n.node.handle(
        Request::AddNode {
            id,
            addr: addr.into(),
            client: cl,
        },
        &n.net,
    );
    rx
}

/// Finding 8 (issue 11): two JOINs from one server that picked different
/// random ids (or a JOIN after a wiped one) asked to add a second node at
/// an address a member already has. That node can never answer as itself:
/// once promoted it counts in every quorum and never acknowledges, and as
/// a learner it blocks every later ADD. The ADD is refused, naming the
/// member that holds the address.
#[test]
fn an_add_at_an_address_a_member_already_has_is_refused() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    // Node 4 joins and is promoted.
    c.add_blank_node(4);
    let rx = add_node(&mut c, l, 4, "127.0.0.1:5004");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.tick(5);
    assert!(c.nodes[&l].node.membership.conf_state.voters.contains(&4));
    // The same server again under another id, and a voter's address.
    for (id, addr, holder) in [(5, "127.0.0.1:5004", 4), (6, "127.0.0.1:5002", 2)] {
        let rx = add_node(&mut c, l, id, addr);
        c.pump();
        c.tick(3);
        match rx.try_recv().unwrap() {
            Err(Error::Other(e)) => assert!(
                e.contains(&format!("already belongs to node {holder}")),
                "{e}"
            ),
            other => panic!(
                "ADD {id} at {addr}: {other:?}, members now {:?}",
                c.nodes[&l].node.membership.conf_state
            ),
        }
    }
    // Nothing stuck: the next ADD at a new address goes through.
    let rx = add_node(&mut c, l, 7, "127.0.0.1:5007");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
}

fn remove_node(c: &mut Cluster, on: u64, id: u64) -> mpsc::Receiver<Result<String, Error>> {
    let (cl, rx) = client();
    let n = c.node(on);
    n.node
        .handle(Request::RemoveNode { id, client: cl }, &n.net);
    rx
}

fn refusal(rx: mpsc::Receiver<Result<String, Error>>) -> String {
    match rx.try_recv() {
        Ok(Err(Error::Other(e))) | Ok(Err(Error::TryAgain(e))) => e,
        other => panic!("not refused: {other:?}"),
    }
}

/// Finding 8 (issue 11): ids of removed nodes could be added again. Such a
/// node may come back with its old log, and raft-rs would take its stale
/// progress for the new node's. Removed ids are now kept in the membership
/// record (durable, on every node), and an ADD that reuses one is refused
/// with what to do; an ADD of a member's id says to remove it first.
#[test]
fn removed_ids_are_kept_durably_and_an_add_reusing_one_is_refused() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let others: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    let (gone, kept) = (others[0], others[1]);
    let rx = remove_node(&mut c, l, gone);
    c.pump();
    c.tick(2);
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.restart(kept, start_node);
    let m = c.nodes[&kept].node.store().membership();
    assert!(m.removed.contains(&gone), "kept on disk: {m:?}");
    assert!(!m.addrs.contains_key(&gone));
    let l = c.elect();
    let e = refusal(add_node(&mut c, l, gone, "127.0.0.1:5099"));
    assert!(e.contains(&format!("node id {gone} was removed")), "{e}");
    assert!(e.contains("cannot be reused"), "{e}");
    let e = refusal(add_node(&mut c, l, kept, "127.0.0.1:5099"));
    assert!(
        e.contains(&format!("remove it first (RAFT.NODE REMOVE {kept})")),
        "{e}"
    );
    assert!(c.nodes[&l].node.membership.conf_state.learners.is_empty());
}

/// Finding 8 (issue 11): a learner that never catches up (its server died,
/// or was wiped) blocked every later ADD with "a membership change is in
/// progress" until an operator removed it. A learner is in no quorum, so
/// only a change pending in the log holds the next one back.
#[test]
fn a_learner_that_never_catches_up_does_not_block_a_later_add() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    // Node 4 never runs: it stays a learner.
    let rx = add_node(&mut c, l, 4, "127.0.0.1:5004");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.tick(5);
    assert_eq!(c.nodes[&l].node.membership.conf_state.learners, vec![4]);
    c.add_blank_node(5);
    let rx = add_node(&mut c, l, 5, "127.0.0.1:5005");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.tick(5);
    let cs = &c.nodes[&l].node.membership.conf_state;
    assert!(cs.voters.contains(&5), "node 5 promoted: {cs:?}");
    assert_eq!(cs.learners, vec![4]);
}

/// Finding 8 (issue 11): a server that joined as a learner and lost its
/// data (wiped, or a JOIN that gave up) asks again under a new id at the
/// same address. The old learner can never catch up: once it has been
/// quiet for an election timeout, the leader removes it through the log
/// and the JOIN's retry adds the new id. No operator needed.
#[test]
fn a_learner_that_no_longer_answers_is_replaced_by_an_add_at_its_address() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let rx = add_node(&mut c, l, 4, "127.0.0.1:5004");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    // Not yet quiet for an election timeout: not replaced.
    let e = refusal(add_node(&mut c, l, 5, "127.0.0.1:5004"));
    assert!(e.contains("learner 4, which still answers"), "{e}");
    c.tick(12);
    let e = refusal(add_node(&mut c, l, 5, "127.0.0.1:5004"));
    assert!(e.contains("replacing learner 4"), "{e}");
    c.pump();
    c.tick(2);
    let m = c.nodes[&l].node.membership.clone();
    assert!(m.conf_state.learners.is_empty(), "{m:?}");
    assert!(m.removed.contains(&4));
    // The JOIN's retry.
    c.add_blank_node(5);
    let rx = add_node(&mut c, l, 5, "127.0.0.1:5004");
    c.pump();
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    c.tick(5);
    let cs = &c.nodes[&l].node.membership.conf_state;
    assert!(cs.voters.contains(&5), "{cs:?}");
}

/// Finding 8 (issue 11): a node removed while it was cut off (down) never
/// saw the entry, and when it came back it campaigned forever and served
/// as before. The members answer its messages "removed" (`admit_from`),
/// and it stops: it neither serves, nor votes, nor campaigns, and says so
/// in its log record; the others' term does not move.
#[test]
fn a_node_removed_while_cut_off_learns_it_when_it_is_back() {
    let mut c = Cluster::new(3);
    let l = c.elect();
    let f = (1..=3).find(|i| *i != l).unwrap();
    c.isolate(f);
    let rx = remove_node(&mut c, l, f);
    c.pump();
    c.tick(2);
    assert_eq!(rx.try_recv().unwrap(), Ok("OK".into()));
    // It never hears of it (the leader's notice is lost).
    assert!(!c.nodes[&f].node.is_removed());
    let term = c.nodes[&l].node.raw().raft.term;
    c.heal();
    c.tick(30);
    assert!(c.nodes[&f].node.is_removed(), "it learned it was removed");
    assert!(c.nodes[&f].node.store().meta().removed);
    let rx = c.write(f, "k", "v");
    assert_eq!(rx.try_recv().unwrap(), Err(Error::Removed));
    assert_eq!(c.nodes[&l].node.raw().raft.term, term);
    assert!(c.nodes[&l].node.is_leader());
    let w = c.write(l, "k", "v");
    c.pump();
    assert!(w.try_recv().unwrap().is_ok());
}
/// Issue 15: a Raft thread that died on a peer's message kept a node that
/// looked like a follower. Any end of the thread but a shutdown (a panic,
/// an error) now fails the node: the first reason stays, and it names no
/// leader and holds no lease any more.
#[test]
fn any_end_of_the_raft_thread_but_a_shutdown_fail_stops_the_node() {
    let status: SharedStatus = Default::default();
    let healthy = |s: &SharedStatus| {
        let mut st = s.write();
        st.leader_id = 2;
        st.lease_until = Some(Instant::now() + Duration::from_secs(60));
    };
    healthy(&status);
    assert_eq!(guard_raft_thread(&status, || ThreadExit::Shutdown), None);
    assert_eq!(status.read().failed, None);
    assert_eq!(status.read().leader_id, 2);

    let why = guard_raft_thread(&status, || {
        panic!("to_commit 512 is out of range [last_index 507]")
    })
    .expect("a panic fails the node");
    assert!(why.contains("to_commit 512"), "{why}");
    let st = status.read().clone();
    assert_eq!(st.failed.as_deref(), Some(why.as_str()));
    assert_eq!((st.leader_id, st.lease_until), (0, None));
    // A later failure keeps the first reason.
    assert_eq!(
        guard_raft_thread(&status, || ThreadExit::Failed("later".into())),
        None
    );
    assert_eq!(status.read().failed.as_deref(), Some(why.as_str()));

    let other: SharedStatus = Default::default();
    healthy(&other);
    let why = guard_raft_thread(&other, || {
        ThreadExit::Failed("Raft log write failed: no space".into())
    });
    assert_eq!(why.as_deref(), Some("Raft log write failed: no space"));
    let st = other.read().clone();
    assert_eq!(st.failed, why);
    assert_eq!((st.leader_id, st.lease_until), (0, None));
}

#[path = "node_fuzz_tests.rs"]
mod fuzz;
