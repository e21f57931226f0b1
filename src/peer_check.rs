//! The check every message from a peer passes on the Raft thread, against
//! the Raft state at the moment it is stepped (not against state another
//! thread read earlier). It drops what raft-rs 0.7 would panic on and what
//! no correct node sends; docs/peer-faults.md lists each raft-rs panic a
//! remote message can reach and the rule below that guards it.
//!
//! What it cannot tell: a well-formed message that a member could really
//! have sent at that moment (a forged append from the leader's id at the
//! current term, a forged vote). Only authentication stops those.

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfState, Message, MessageType};
use raft::{Changer, ProgressTracker, Raft, StateRole, Storage};

/// Any term up to here is followed, as Raft requires. A real cluster gains
/// about one term per election: at one election per millisecond it would
/// take 146 million years to get here.
pub const TERM_LIMIT: u64 = 1 << 62;

/// Above [`TERM_LIMIT`], a message may raise our term by at most this much
/// (counted from the larger of our term and the limit), so a peer can never
/// push a node near `u64::MAX`, where raft-rs's `term + 1` would overflow,
/// and a cluster that was pushed past the limit still elects: each node
/// follows a term up to 2^32 above it.
pub const TERM_STEP: u64 = 1 << 32;

/// No real log gets here (2^62 entries); past it raft-rs's index
/// arithmetic (`index + 1`, `index + entries`) could overflow.
pub const INDEX_LIMIT: u64 = 1 << 62;

/// The highest term a message may carry when our term is `ours`.
pub fn term_ceiling(ours: u64) -> u64 {
    ours.max(TERM_LIMIT)
        .saturating_add(TERM_STEP)
        .min(u64::MAX - TERM_STEP)
}

/// Why `m` must not be stepped into `r`, or Ok to step it.
pub fn check<S: Storage>(r: &Raft<S>, m: &Message) -> Result<(), &'static str> {
    use MessageType::*;
    let t = m.get_msg_type();
    match t {
        // raft-rs refuses these itself (StepLocalMsg); dropped here alike.
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            return Err("a local message type");
        }
        // This module proposes, reads and transfers only on the leader, so
        // these never travel between nodes. Stepped, an empty MsgPropose or
        // a MsgReadIndex without its entry panics the leader, and the rest
        // would let a peer write entries or move the leadership.
        MsgPropose | MsgReadIndex | MsgReadIndexResp | MsgTransferLeader => {
            return Err("a message type nodes never send each other");
        }
        _ => {}
    }
    if m.from == 0 || m.from == r.id {
        return Err("sender id 0 or this node's own");
    }
    if m.to != r.id {
        return Err("addressed to another node");
    }
    // raft-rs takes term 0 for a local message and skips its term checks:
    // a heartbeat or append at term 0 went straight to commit_to.
    if m.term == 0 {
        return Err("term 0");
    }
    if m.term > term_ceiling(r.term) {
        return Err("a term too far in the future");
    }
    let snap = m.get_snapshot().get_metadata();
    let inner_terms = [m.log_term, m.commit_term, snap.term];
    if inner_terms
        .into_iter()
        .chain(m.get_entries().iter().map(|e| e.term))
        .any(|x| x > m.term)
    {
        return Err("a log term above the message's own term");
    }
    let indexes = [
        m.index,
        m.commit,
        m.reject_hint,
        m.request_snapshot,
        snap.index,
    ];
    if indexes
        .into_iter()
        .chain(m.get_entries().iter().map(|e| e.index))
        .any(|i| i > INDEX_LIMIT)
    {
        return Err("an index no log can reach");
    }
    // A message of a lower term is only answered (with our term), never
    // acted on.
    if m.term < r.term {
        return Ok(());
    }
    let log = &r.raft_log;
    let same_term = m.term == r.term;
    if matches!(t, MsgAppend | MsgHeartbeat | MsgSnapshot)
        && same_term
        && r.leader_id != 0
        && r.leader_id != m.from
    {
        return Err("a second leader in this term");
    }
    match t {
        // handle_heartbeat: commit_to(m.commit) panics past the last index.
        MsgHeartbeat if m.commit > log.last_index() => Err("commit index past the log"),
        MsgAppend => check_append(m),
        MsgSnapshot => check_snapshot(m),
        // A forced election (leader transfer) only on the leader's word.
        MsgTimeoutNow if !same_term || m.from != r.leader_id => {
            Err("a forced election not from this term's leader")
        }
        // A follower acknowledges only what the leader sent it.
        MsgAppendResponse
            if r.state == StateRole::Leader && same_term && m.index > log.last_index() =>
        {
            Err("acknowledges entries past the leader's log")
        }
        _ => Ok(()),
    }
}

/// maybe_append trusts the entries to follow `m.index` one by one: a gap or
/// a step back sliced out of bounds, appended past the unstable log, or
/// committed past the last index; and term() answers 0 past the log, so
/// (index past the log, log term 0) "matched" anything.
fn check_append(m: &Message) -> Result<(), &'static str> {
    if m.log_term == 0 && m.index != 0 {
        return Err("log term 0 at an index above 0");
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.get_entries().iter().enumerate() {
        if Some(e.index) != m.index.checked_add(i as u64 + 1) {
            return Err("entries not consecutive after the message index");
        }
        if e.term == 0 || e.term < prev_term {
            return Err("entry terms go backwards");
        }
        prev_term = e.term;
    }
    Ok(())
}

/// restore: term() answers 0 past the log, so a (far index, term 0)
/// snapshot "matched" and committed past the log; a membership raft-rs
/// cannot rebuild panics ("unable to restore config", "invalid restore").
fn check_snapshot(m: &Message) -> Result<(), &'static str> {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.term == 0 {
        return Err("snapshot without index or term");
    }
    if !restorable(meta.get_conf_state()) {
        return Err("a snapshot membership raft-rs cannot restore");
    }
    Ok(())
}

/// Replays raft-rs's `confchange::restore` (not public) on an empty tracker:
/// true if it succeeds and yields the same membership.
fn restorable(cs: &ConfState) -> bool {
    let single = |id: u64, t: ConfChangeType| {
        let mut c = ConfChangeSingle {
            node_id: id,
            ..Default::default()
        };
        c.set_change_type(t);
        c
    };
    let outgoing: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(id, ConfChangeType::AddNode))
        .collect();
    let incoming: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(id, ConfChangeType::RemoveNode))
        .chain(
            cs.voters
                .iter()
                .map(|&id| single(id, ConfChangeType::AddNode)),
        )
        .chain(
            cs.learners
                .iter()
                .chain(&cs.learners_next)
                .map(|&id| single(id, ConfChangeType::AddLearnerNode)),
        )
        .collect();
    let mut tracker = ProgressTracker::new(1);
    // Outgoing voters one by one, then the incoming set: simple changes
    // without a joint state, one joint change with one.
    let mut steps: Vec<(Vec<ConfChangeSingle>, bool)> =
        outgoing.into_iter().map(|c| (vec![c], false)).collect();
    if cs.voters_outgoing.is_empty() {
        steps.extend(incoming.into_iter().map(|c| (vec![c], false)));
    } else {
        steps.push((incoming, true));
    }
    for (changes, joint) in steps {
        let mut changer = Changer::new(&tracker);
        let next = if joint {
            changer.enter_joint(cs.auto_leave, &changes)
        } else {
            changer.simple(&changes)
        };
        match next {
            Ok((cfg, map)) => tracker.apply_conf(cfg, map, 1),
            Err(_) => return false,
        }
    }
    same_members(&tracker.conf().to_conf_state(), cs)
}

/// raft-proto's `conf_state_eq`: the same sets, in any order.
fn same_members(a: &ConfState, b: &ConfState) -> bool {
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    sorted(&a.voters) == sorted(&b.voters)
        && sorted(&a.learners) == sorted(&b.learners)
        && sorted(&a.voters_outgoing) == sorted(&b.voters_outgoing)
        && sorted(&a.learners_next) == sorted(&b.learners_next)
        && a.auto_leave == b.auto_leave
}
