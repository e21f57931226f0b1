//! Issue 15: peer messages never stop a node. Messages that raft-rs 0.7
//! panicked on, one test each, then a property-based fuzzer that sends
//! random well-formed and malformed messages into a 3-node in-memory
//! cluster (the same `Cluster` as the other driver tests).
//!
//! `cargo test` runs 256 cases of each property; PROPTEST_CASES sets more
//! (`make fuzz`).

use proptest::prelude::*;
use protobuf::ProtobufEnum;
use raft::eraftpb::{ConfState, Snapshot};

use super::*;

/// A 3-node cluster with a leader and a few committed writes; returns the
/// leader and a follower.
fn busy_cluster() -> (Cluster, u64, u64) {
    let mut c = Cluster::new(3);
    let l = c.elect();
    for i in 0..3 {
        let _ = c.write(l, &format!("k{i}"), "v");
        c.pump();
    }
    let f = if l == 1 { 2 } else { 1 };
    (c, l, f)
}

fn deliver_one(c: &mut Cluster, m: Message) {
    let n = c.node(m.to);
    n.node.handle(Request::Messages(vec![m]), &n.net);
}

fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

/// (last index, term, commit) of a node.
fn log_of(c: &Cluster, id: u64) -> (u64, u64, u64) {
    let r = &c.nodes[&id].node.raw.raft;
    (r.raft_log.last_index(), r.term, r.raft_log.committed)
}

/// Each message here made raft-rs 0.7 panic (checked by stepping it
/// without `peer_check`); now it is dropped, and the cluster goes on.
#[test]
fn messages_raft_rs_panicked_on_are_dropped_and_the_cluster_goes_on() {
    type Make = fn(&Cluster, u64, u64) -> Message;
    let cases: Vec<(&str, Make)> = vec![
        (
            "heartbeat at term 0, commit past the log (the real run)",
            |c, l, f| {
                let (last, _, _) = log_of(c, f);
                let mut m = msg(MessageType::MsgHeartbeat, l, f, 0);
                m.commit = last + 5;
                m
            },
        ),
        ("heartbeat of the leader, commit past the log", |c, l, f| {
            let (last, term, _) = log_of(c, f);
            let mut m = msg(MessageType::MsgHeartbeat, l, f, term);
            m.commit = last + 5;
            m
        }),
        ("append with a gap in its entries", |c, l, f| {
            let (last, term, _) = log_of(c, f);
            let mut m = msg(MessageType::MsgAppend, l, f, term);
            m.index = last;
            m.log_term = term;
            m.entries = vec![entry(last + 1, term), entry(last + 3, term)].into();
            m
        }),
        (
            "append whose entries step back before its index",
            |c, l, f| {
                let (last, term, _) = log_of(c, f);
                let mut m = msg(MessageType::MsgAppend, l, f, term);
                m.index = last;
                m.log_term = term;
                m.entries = vec![entry(last - 1, term + 1)].into();
                m.term = term + 1;
                m
            },
        ),
        ("append far past the log with log term 0", |c, l, f| {
            let (last, term, _) = log_of(c, f);
            let mut m = msg(MessageType::MsgAppend, l, f, term);
            m.index = last + 100;
            m.entries = vec![entry(last + 101, term)].into();
            m
        }),
        ("snapshot far past the log with term 0", |c, l, f| {
            let (last, term, _) = log_of(c, f);
            let mut m = msg(MessageType::MsgSnapshot, l, f, term);
            let meta = m.mut_snapshot().mut_metadata();
            meta.index = last + 50;
            meta.mut_conf_state().voters = vec![1, 2, 3];
            m
        }),
        (
            "snapshot whose membership raft-rs cannot restore",
            |c, l, f| {
                let (last, term, _) = log_of(c, f);
                let mut m = msg(MessageType::MsgSnapshot, l, f, term);
                let meta = m.mut_snapshot().mut_metadata();
                meta.index = last + 50;
                meta.term = term;
                meta.mut_conf_state().voters = vec![1, 2, 3];
                meta.mut_conf_state().learners_next = vec![9];
                m
            },
        ),
        ("empty proposal to the leader", |c, l, f| {
            let (_, term, _) = log_of(c, l);
            msg(MessageType::MsgPropose, f, l, term)
        }),
        (
            "read-index request without its entry to the leader",
            |c, l, f| {
                let (_, term, _) = log_of(c, l);
                msg(MessageType::MsgReadIndex, f, l, term)
            },
        ),
        ("read-index answer at term 0 past the log", |c, l, f| {
            let (last, _, _) = log_of(c, f);
            let mut m = msg(MessageType::MsgReadIndexResp, l, f, 0);
            m.index = last + 5;
            m.entries = vec![Entry::default()].into();
            m
        }),
        // The term wraps to 0 at the next election, and raft-rs refuses to
        // send a vote request at term 0.
        ("heartbeat at term u64::MAX, then an election", |c, l, f| {
            let (_, _, commit) = log_of(c, f);
            let mut m = msg(MessageType::MsgHeartbeat, l, f, u64::MAX);
            m.commit = commit;
            m
        }),
    ];
    for (what, make) in cases {
        let (mut c, l, f) = busy_cluster();
        let m = make(&c, l, f);
        let to = m.to;
        let before = c.nodes[&to].node.peer_messages_dropped;
        deliver_one(&mut c, m);
        c.pump();
        assert_eq!(
            c.nodes[&to].node.peer_messages_dropped,
            before + 1,
            "{what}: not dropped"
        );
        // An election afterwards (the leader cut off), and a write.
        c.isolate(l);
        c.tick(40);
        c.heal();
        let l = c.elect();
        let rx = c.write(l, "after", what);
        c.tick(3);
        assert_eq!(rx.try_recv().ok(), Some(Ok("OK".into())), "{what}");
        for id in 1..=3 {
            assert_eq!(c.value(id, "after").as_deref(), Some(what), "{what}");
        }
    }
}

/// A term far in the future but under the limit is followed (Raft must),
/// and the cluster elects above it; one past the window is dropped.
#[test]
fn terms_up_to_the_ceiling_are_followed_and_the_cluster_still_elects() {
    use crate::peer_check::{term_ceiling, TERM_LIMIT, TERM_STEP};
    let (mut c, _, f) = busy_cluster();
    for term in [TERM_LIMIT, TERM_LIMIT + TERM_STEP, u64::MAX] {
        // A leader's heartbeat at that term: Raft follows it.
        let (_, now, commit) = log_of(&c, f);
        let ceiling = term_ceiling(now);
        let mut m = msg(MessageType::MsgHeartbeat, 99, f, term);
        m.commit = commit;
        deliver_one(&mut c, m);
        c.pump();
        let after = log_of(&c, f).1;
        if term <= ceiling {
            assert_eq!(
                after, term,
                "term {term} under ceiling {ceiling} not followed"
            );
        } else {
            assert_eq!(after, now, "term {term} over ceiling {ceiling} followed");
        }
        // The old leader steps down once it hears the higher term; a
        // leader above it follows. (A dropped term changes nothing.)
        let floor = if after == now { after - 1 } else { after };
        let mut l = 0;
        for _ in 0..100 {
            c.tick(1);
            if let [one] = c.leaders()[..] {
                if log_of(&c, one).1 > floor {
                    l = one;
                    break;
                }
            }
        }
        assert_ne!(
            l,
            0,
            "no leader above term {after}: {:?}",
            (1..=3).map(|i| log_of(&c, i)).collect::<Vec<_>>()
        );
        c.tick(2);
        let rx = c.write(l, "t", &term.to_string());
        c.tick(3);
        assert_eq!(
            rx.try_recv().ok(),
            Some(Ok("OK".into())),
            "after term {term}"
        );
        for id in 1..=3 {
            assert_eq!(c.value(id, "t"), Some(term.to_string()));
        }
    }
}

// ---------------------------------------------------------------------
// The fuzzer.

/// A number drawn among 0, 1, near a base (the target's log end or term),
/// small ones, and around 2^62, 2^63 and u64::MAX.
#[derive(Clone, Debug)]
enum Num {
    Zero,
    One,
    Near(i8),
    Small(u16),
    Pow62(i8),
    Pow63(i8),
    Max(u8),
    Any(u64),
}

impl Num {
    fn at(&self, base: u64) -> u64 {
        match *self {
            Num::Zero => 0,
            Num::One => 1,
            Num::Near(d) => base.saturating_add_signed(d.into()),
            Num::Small(v) => v.into(),
            Num::Pow62(d) => (1u64 << 62).saturating_add_signed(d.into()),
            Num::Pow63(d) => (1u64 << 63).saturating_add_signed(d.into()),
            Num::Max(d) => u64::MAX - u64::from(d),
            Num::Any(v) => v,
        }
    }
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        1 => Just(Num::Zero),
        1 => Just(Num::One),
        6 => (-3i8..=3).prop_map(Num::Near),
        1 => any::<u16>().prop_map(Num::Small),
        1 => (-2i8..=2).prop_map(Num::Pow62),
        1 => (-2i8..=2).prop_map(Num::Pow63),
        1 => (0u8..3).prop_map(Num::Max),
        1 => any::<u64>().prop_map(Num::Any),
    ]
}

#[derive(Clone, Debug)]
enum Sender {
    /// A member, by position (0..3).
    Member(usize),
    /// The leader the target follows (or a member if none), at the
    /// target's term with the right log term: well-formed forgeries.
    Mimic,
    Zero,
    Itself,
    Stranger,
}

#[derive(Clone, Debug)]
enum Shape {
    Consecutive,
    Gap(u8),
    Backwards,
    Random,
}

#[derive(Clone, Debug)]
struct SnapSpec {
    index: Num,
    term: Num,
    voters: Vec<u64>,
    learners: Vec<u64>,
    outgoing: Vec<u64>,
    learners_next: Vec<u64>,
    auto_leave: bool,
}

#[derive(Clone, Debug)]
struct Wild {
    to: usize,
    from: Sender,
    kind: usize,
    term: Num,
    log_term: Num,
    index: Num,
    commit: Num,
    commit_term: Num,
    reject: bool,
    reject_hint: Num,
    request_snapshot: Option<Num>,
    shape: Shape,
    entry_terms: Vec<Num>,
    /// None: empty entries; Some(b): `SET fz<b> x`.
    entry_data: Option<u8>,
    snapshot: Option<SnapSpec>,
    context: Vec<u8>,
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(prop_oneof![4 => 1u64..=3, 1 => 0u64..=9], 0..4)
}

fn snap_spec() -> impl Strategy<Value = SnapSpec> {
    (
        num(),
        num(),
        ids(),
        ids(),
        prop_oneof![3 => Just(vec![]), 1 => ids()],
        prop_oneof![3 => Just(vec![]), 1 => ids()],
        any::<bool>(),
    )
        .prop_map(
            |(index, term, voters, learners, outgoing, learners_next, auto_leave)| SnapSpec {
                index,
                term,
                voters,
                learners,
                outgoing,
                learners_next,
                auto_leave,
            },
        )
}

fn wild() -> impl Strategy<Value = Wild> {
    let sender = prop_oneof![
        4 => (0usize..3).prop_map(Sender::Member),
        4 => Just(Sender::Mimic),
        1 => Just(Sender::Zero),
        1 => Just(Sender::Itself),
        1 => Just(Sender::Stranger),
    ];
    let shape = prop_oneof![
        4 => Just(Shape::Consecutive),
        1 => (2u8..5).prop_map(Shape::Gap),
        1 => Just(Shape::Backwards),
        1 => Just(Shape::Random),
    ];
    (
        (
            0usize..3,
            sender,
            0..MessageType::values().len(),
            num(),
            num(),
        ),
        (num(), num(), num(), any::<bool>(), num()),
        (
            prop::option::weighted(0.1, num()),
            shape,
            prop::collection::vec(num(), 0..4),
            prop::option::of(any::<u8>()),
            prop::option::weighted(0.3, snap_spec()),
            prop::collection::vec(any::<u8>(), 0..3),
        ),
    )
        .prop_map(
            |(
                (to, from, kind, term, log_term),
                (index, commit, commit_term, reject, reject_hint),
                (request_snapshot, shape, entry_terms, entry_data, snapshot, context),
            )| Wild {
                to,
                from,
                kind,
                term,
                log_term,
                index,
                commit,
                commit_term,
                reject,
                reject_hint,
                request_snapshot,
                shape,
                entry_terms,
                entry_data,
                snapshot,
                context,
            },
        )
}

impl Wild {
    /// The message, with numbers taken near the target's state now.
    fn resolve(&self, c: &Cluster) -> Message {
        let to = self.to as u64 + 1;
        let r = &c.nodes[&to].node.raw.raft;
        let (last, term) = (r.raft_log.last_index(), r.term);
        let mut m = Message::default();
        m.set_msg_type(MessageType::values()[self.kind]);
        m.to = to;
        m.term = self.term.at(term);
        m.log_term = self.log_term.at(term);
        m.index = self.index.at(last);
        m.commit = self.commit.at(last);
        m.commit_term = self.commit_term.at(term);
        m.reject = self.reject;
        m.reject_hint = self.reject_hint.at(last);
        m.request_snapshot = self.request_snapshot.as_ref().map_or(0, |n| n.at(last));
        m.context = self.context.clone().into();
        m.from = match self.from {
            Sender::Member(i) => i as u64 + 1,
            Sender::Zero => 0,
            Sender::Itself => to,
            Sender::Stranger => 99,
            Sender::Mimic => {
                m.term = term;
                m.index = m.index.min(last);
                m.log_term = r.raft_log.term(m.index).unwrap_or(0);
                if r.leader_id != 0 && r.leader_id != to {
                    r.leader_id
                } else {
                    to % 3 + 1
                }
            }
        };
        let terms = self.entry_terms.iter().map(|n| n.at(term));
        let entries: Vec<Entry> = match self.shape {
            Shape::Consecutive => {
                // Terms as a leader's would be: not below the log term.
                let lo = m.log_term.max(1);
                let hi = m.term.max(lo);
                let mut t: Vec<u64> = terms.map(|x| x.clamp(lo, hi)).collect();
                t.sort_unstable();
                t.into_iter()
                    .enumerate()
                    .map(|(i, t)| entry(m.index.saturating_add(i as u64 + 1), t))
                    .collect()
            }
            Shape::Gap(g) => terms
                .enumerate()
                .map(|(i, t)| entry(m.index.saturating_add(1 + i as u64 * u64::from(g)), t))
                .collect(),
            Shape::Backwards => terms
                .enumerate()
                .map(|(i, t)| entry(m.index.saturating_sub(i as u64), t))
                .collect(),
            Shape::Random => self
                .entry_terms
                .iter()
                .map(|n| entry(n.at(last), n.at(term)))
                .collect(),
        };
        m.entries = entries
            .into_iter()
            .map(|mut e| {
                // Normal entries only: a committed membership change would
                // be a forgery Raft cannot tell (and V2 is ignored here).
                if let Some(b) = self.entry_data {
                    let argv = vec![
                        b"SET".to_vec(),
                        format!("fz{b}").into_bytes(),
                        b"x".to_vec(),
                    ];
                    e.data = Record::timed(1, Payload::Command(argv)).encode().into();
                }
                e
            })
            .collect::<Vec<_>>()
            .into();
        if let Some(s) = &self.snapshot {
            let mut snap = Snapshot::default();
            let meta = snap.mut_metadata();
            meta.index = s.index.at(last);
            meta.term = s.term.at(term);
            meta.set_conf_state(ConfState {
                voters: s.voters.clone(),
                learners: s.learners.clone(),
                voters_outgoing: s.outgoing.clone(),
                learners_next: s.learners_next.clone(),
                auto_leave: s.auto_leave,
                ..Default::default()
            });
            m.set_snapshot(snap);
        }
        m
    }
}

/// What must hold for every node at any time, whatever it was sent.
#[derive(Default)]
struct Seen {
    term: HashMap<u64, u64>,
    commit: HashMap<u64, u64>,
}

impl Seen {
    fn check(&mut self, c: &Cluster) -> Result<(), TestCaseError> {
        use raft::Storage as _;
        for (&id, n) in &c.nodes {
            let r = &n.node.raw.raft;
            let (last, commit, term) = (r.raft_log.last_index(), r.raft_log.committed, r.term);
            prop_assert!(
                commit <= last,
                "node {id}: commit {commit} past last index {last}"
            );
            let prev_term = self.term.insert(id, term).unwrap_or(0);
            prop_assert!(term >= prev_term, "node {id}: term {prev_term} -> {term}");
            let prev_commit = self.commit.insert(id, commit).unwrap_or(0);
            prop_assert!(
                commit >= prev_commit,
                "node {id}: commit {prev_commit} -> {commit}"
            );
            // Far from u64::MAX, where raft-rs's `term + 1` would wrap.
            prop_assert!(term < 1 << 63, "node {id}: term {term}");
            // The durable log: consecutive indexes, terms never going
            // down nor above the node's term, commit inside it.
            let store = n.node.store();
            let (first, slast) = (store.first_index().unwrap(), store.last_index().unwrap());
            let hs = store.hard_state();
            prop_assert!(
                hs.commit <= slast,
                "node {id}: stored commit {} past {slast}",
                hs.commit
            );
            let ents = store
                .entries(
                    first,
                    slast + 1,
                    None,
                    raft::GetEntriesContext::empty(false),
                )
                .unwrap();
            let mut prev = store.term(first - 1).unwrap_or(0);
            for (i, e) in ents.iter().enumerate() {
                prop_assert_eq!(
                    e.index,
                    first + i as u64,
                    "node {}: log not consecutive",
                    id
                );
                prop_assert!(
                    e.term >= prev && e.term <= term,
                    "node {id}: entry {} term {} after {prev}, node term {term}",
                    e.index,
                    e.term
                );
                prev = e.term;
            }
        }
        Ok(())
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Sends `wilds` into a busy cluster, ticking now and then; `keep` picks
/// which are delivered. Checks the invariants after each.
fn run_wild(
    wilds: &[Wild],
    keep: impl Fn(&Cluster, &Message) -> bool,
) -> Result<Cluster, TestCaseError> {
    let (mut c, _, _) = busy_cluster();
    let mut seen = Seen::default();
    seen.check(&c)?;
    for (i, w) in wilds.iter().enumerate() {
        let m = w.resolve(&c);
        if keep(&c, &m) {
            deliver_one(&mut c, m);
            c.pump();
        }
        if i % 8 == 7 {
            c.tick(1);
        }
        seen.check(&c)?;
    }
    Ok(c)
}

/// Waits (ticks) for exactly one leader: Err if none within 200 ticks.
fn leader_after(c: &mut Cluster) -> Result<u64, TestCaseError> {
    for _ in 0..200 {
        c.tick(1);
        if let [l] = c.leaders()[..] {
            c.tick(2);
            return Ok(l);
        }
    }
    Err(TestCaseError::fail(format!(
        "no leader; terms {:?}",
        c.nodes
            .values()
            .map(|n| n.node.raw.raft.term)
            .collect::<Vec<_>>()
    )))
}

proptest! {
    #![proptest_config(config())]

    /// Anything, including well-formed forgeries: no panic, every node's
    /// log and hard state stay valid, and a leader is elected afterwards.
    #[test]
    fn no_peer_message_panics_a_node_or_breaks_its_log(wilds in prop::collection::vec(wild(), 1..40)) {
        let mut c = run_wild(&wilds, |_, _| true)?;
        leader_after(&mut c)?;
    }

    /// Messages the check refuses, stale ones, and vote requests from a
    /// stranger (any term: far-future ones move the terms): afterwards a
    /// leader, a write committed on every node, and the same data on all.
    /// (Forgeries that a member could really have sent are left out: only
    /// authentication can refuse those.)
    #[test]
    fn after_wild_messages_the_cluster_elects_and_commits_everywhere(wilds in prop::collection::vec(wild(), 1..40)) {
        let mut c = run_wild(&wilds, |c, m| {
            let r = &c.nodes[&m.to].node.raw.raft;
            crate::peer_check::check(r, m).is_err()
                || m.term < r.term
                || (m.from == 99
                    && matches!(m.get_msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote))
        })?;
        let l = leader_after(&mut c)?;
        let rx = c.write(l, "after", "fuzz");
        c.tick(5);
        prop_assert_eq!(rx.try_recv().ok(), Some(Ok("OK".into())));
        let data = c.nodes[&l].app.data.borrow().clone();
        for id in 1..=3 {
            prop_assert_eq!(c.value(id, "after"), Some("fuzz".to_string()));
            prop_assert_eq!(&*c.nodes[&id].app.data.borrow(), &data);
        }
    }
}
