//! The leader's wait lists: which clients wait on which keys, in the order
//! they came (first come, first served per key, as Redis serves them), and
//! which of them have an entry in the log that may serve them now.
//!
//! Pure logic, generic over the client handle, so it is tested without a
//! server. Nothing here touches the dataset: the caller proposes the
//! entries this returns, and reports their outcome back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::spec::{Kind, Spec};

type Key = Vec<u8>;

/// What the leader's dataset holds at a key, as of the last applied entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    Missing,
    /// A list or sorted set and its length.
    Holds(Kind, usize),
    /// A value of another type.
    Other,
}

/// Whether a consumer group has entries to deliver (XREADGROUP's `>`), as
/// of the last applied entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// An entry after the group's last-delivered ID.
    Yes,
    No,
    /// The stream has no group by that name (XGROUP DESTROY).
    NoGroup,
}

/// Why a consumer-group waiter's wait ends without an entry, as Redis 7.0
/// ends it when the key is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The key was deleted or now holds another type.
    KeyGone,
    /// The group was destroyed.
    NoGroup,
}

impl Ended {
    /// Redis's error for it.
    pub fn error_text(self) -> &'static str {
        match self {
            Ended::KeyGone => "UNBLOCKED the stream key no longer exists",
            Ended::NoGroup => {
                "NOGROUP the consumer group this client was blocked on no longer exists"
            }
        }
    }
}

/// What one round of serving gives: entries to propose (waiter id,
/// command, client), and consumer-group waiters to answer with an error.
pub type Served<C> = (Vec<(u64, Vec<Vec<u8>>, C)>, Vec<(C, Ended)>);

/// How CLIENT UNBLOCK ends a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnblockMode {
    /// Answered as if its timeout had come: nil.
    Timeout,
    /// Answered `-UNBLOCKED ...`.
    Error,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Its first attempt (the command on the keys nobody waits on) is in
    /// the log.
    Trying(Vec<Key>),
    /// Waiting for one of its keys to get data.
    Waiting,
    /// An entry serving it from this key is in the log.
    Serving(Key),
}

struct Waiter<C> {
    client_id: u64,
    spec: Spec,
    argv: Vec<Vec<u8>>,
    deadline: Option<Instant>,
    state: State,
    /// Held while it waits; in the log's hands while an entry is out.
    client: Option<C>,
    /// A CLIENT UNBLOCK that came while an entry was out, and its caller.
    unblock: Option<(UnblockMode, Option<C>)>,
    /// Disconnected while an entry was out: nobody to answer.
    gone: bool,
}

/// The outcome of an entry that served (or tried to serve) a waiter.
pub enum Returned<C> {
    /// Answer the client with the entry's reply (it popped, or failed);
    /// the caller of a CLIENT UNBLOCK that came meanwhile gets 0.
    Answer { unblock_caller: Option<C> },
    /// Nothing popped, and it waits on (the client is kept).
    Waits,
    /// Nothing popped and its wait is over: its timeout came (`None`), or a
    /// CLIENT UNBLOCK asked (its caller gets 1).
    Ends(Option<(UnblockMode, Option<C>)>),
    /// Not one of ours (any more): its wait was ended meanwhile.
    Unknown,
}

/// What CLIENT UNBLOCK found.
pub enum Unblocked<C> {
    /// A waiting client: answer it so; its caller gets 1.
    Now(C, UnblockMode),
    /// Its entry is in the log: the caller (if it could be held: true) is
    /// answered when it applies.
    Later(bool),
    /// No client of ours by that id.
    NotOurs,
}

pub struct Waiters<C> {
    waiters: HashMap<u64, Waiter<C>>,
    /// Per key, waiter ids in arrival order.
    queues: HashMap<Key, VecDeque<u64>>,
    /// Per key, how many elements entries in the log may take from it.
    in_flight: HashMap<Key, usize>,
    /// Per stream key and consumer group, XREADGROUP entries of waiters in
    /// the log: one at a time serves a group (it may take every new entry).
    group_in_flight: HashMap<(Key, Vec<u8>), usize>,
    /// Keys whose content may have changed, with someone waiting on them.
    dirty: Vec<Key>,
    dirty_set: HashSet<Key>,
    next_id: u64,
    /// How a consumer-group wait ends when its key or group goes: false,
    /// answered here with Redis 7.0's errors ([`Ended`]); true, its
    /// command runs again (an entry) and answers, as Redis 7.2 and Valkey
    /// serve a blocked client by running its command again.
    pub rerun_ended: bool,
}

impl<C> Default for Waiters<C> {
    fn default() -> Self {
        Waiters {
            waiters: HashMap::new(),
            queues: HashMap::new(),
            in_flight: HashMap::new(),
            group_in_flight: HashMap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            next_id: 1,
            rerun_ended: false,
        }
    }
}

impl<C> Waiters<C> {
    /// Clients with a wait in progress (waiting or with an entry out).
    pub fn len(&self) -> usize {
        self.waiters.values().filter(|w| !w.gone).count()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Whether someone waits on `key`.
    pub fn watches(&self, key: &[u8]) -> bool {
        self.queues.contains_key(key)
    }

    /// `key` was written: serve its waiters if it now holds data.
    pub fn touched(&mut self, key: &[u8]) {
        if self.queues.contains_key(key) && !self.dirty_set.contains(key) {
            self.dirty_set.insert(key.to_vec());
            self.dirty.push(key.to_vec());
        }
    }

    fn take_in_flight(&mut self, keys: &[Key], n: usize) {
        for k in keys {
            if let Some(c) = self.in_flight.get_mut(k) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    self.in_flight.remove(k);
                }
            }
        }
    }

    fn add_in_flight(&mut self, keys: &[Key], n: usize) {
        for k in keys {
            *self.in_flight.entry(k.clone()).or_default() += n;
        }
    }

    fn add_group_in_flight(&mut self, keys: &[Key], group: &Option<Vec<u8>>) {
        if let Some(g) = group {
            for k in keys {
                *self
                    .group_in_flight
                    .entry((k.clone(), g.clone()))
                    .or_default() += 1;
            }
        }
    }

    fn take_group_in_flight(&mut self, keys: &[Key], group: &Option<Vec<u8>>) {
        if let Some(g) = group {
            for k in keys {
                let at = (k.clone(), g.clone());
                if let Some(c) = self.group_in_flight.get_mut(&at) {
                    *c -= 1;
                    if *c == 0 {
                        self.group_in_flight.remove(&at);
                    }
                }
            }
        }
    }

    /// Whether a client of consumer group `group` waits on `key` already.
    fn group_waits(&self, key: &[u8], group: &Option<Vec<u8>>) -> bool {
        self.queues.get(key).is_some_and(|q| {
            q.iter().any(|id| {
                self.waiters.get(id).is_some_and(|w| {
                    !w.gone && w.spec.kind == Kind::Group && w.spec.group == *group
                })
            })
        })
    }

    /// Every key someone waits on may have changed (a flush of the
    /// database, a swap).
    pub fn touched_all(&mut self) {
        let keys: Vec<Key> = self.queues.keys().cloned().collect();
        for k in keys {
            self.touched(&k);
        }
    }

    /// A client comes with a blocking command. Keys somebody already waits
    /// on are left to those before it (unless they hold another type: then
    /// Redis's WRONGTYPE comes first); on the others, its first attempt
    /// runs through the log. Returns that attempt's id, command and client,
    /// or None when it only waits (its client kept).
    pub fn arrive(
        &mut self,
        client_id: u64,
        spec: Spec,
        argv: Vec<Vec<u8>>,
        deadline: Option<Instant>,
        client: C,
        peek: impl Fn(&[u8]) -> Peek,
    ) -> Option<(u64, Vec<Vec<u8>>, C)> {
        let id = self.next_id;
        self.next_id += 1;
        let try_keys: Vec<Key> = spec
            .keys
            .iter()
            .filter(|k| match spec.kind {
                // A read takes nothing: nobody before it is owed anything.
                Kind::Stream => true,
                // New entries of a stream are owed to the clients of the
                // same group waiting there; not a stream: Redis's error.
                Kind::Group => {
                    !self.group_waits(k, &spec.group)
                        || !matches!(peek(k), Peek::Holds(Kind::Stream, _))
                }
                _ => {
                    !self.queues.contains_key(*k)
                        || matches!(peek(k), Peek::Other)
                        || matches!(peek(k), Peek::Holds(kind, _) if kind != spec.kind)
                }
            })
            .cloned()
            .collect();
        for k in &spec.keys {
            let q = self.queues.entry(k.clone()).or_default();
            if !q.contains(&id) {
                q.push_back(id);
            }
        }
        let mut w = Waiter {
            client_id,
            spec,
            argv,
            deadline,
            state: State::Waiting,
            client: Some(client),
            unblock: None,
            gone: false,
        };
        let attempt = if try_keys.is_empty() {
            None
        } else {
            let line = w.spec.narrowed(&w.argv, &try_keys);
            let takes = w.spec.takes;
            w.state = State::Trying(try_keys.clone());
            let c = w.client.take().expect("just set");
            self.add_in_flight(&try_keys, takes);
            self.add_group_in_flight(&try_keys, &w.spec.group);
            Some((id, line, c))
        };
        self.waiters.insert(id, w);
        attempt
    }

    fn remove(&mut self, id: u64) -> Option<Waiter<C>> {
        let w = self.waiters.remove(&id)?;
        for k in &w.spec.keys {
            if let Some(q) = self.queues.get_mut(k) {
                q.retain(|x| *x != id);
                if q.is_empty() {
                    self.queues.remove(k);
                }
            }
        }
        Some(w)
    }

    fn leave_queues(&mut self, id: u64) {
        let Some(w) = self.waiters.get(&id) else {
            return;
        };
        for k in w.spec.keys.clone() {
            if let Some(q) = self.queues.get_mut(&k) {
                q.retain(|x| *x != id);
                if q.is_empty() {
                    self.queues.remove(&k);
                }
            }
        }
    }

    fn out_keys(w: &Waiter<C>) -> Vec<Key> {
        match &w.state {
            State::Trying(keys) => keys.clone(),
            State::Serving(k) => vec![k.clone()],
            State::Waiting => Vec::new(),
        }
    }

    /// The entry of waiter `id` applied; `served` says whether it popped or
    /// failed (its reply is final) rather than finding nothing.
    pub fn returned(
        &mut self,
        id: u64,
        served: bool,
        client: C,
        now: Instant,
    ) -> (Returned<C>, Option<C>) {
        let Some(w) = self.waiters.get(&id) else {
            return (Returned::Unknown, Some(client));
        };
        if matches!(w.state, State::Waiting) {
            return (Returned::Unknown, Some(client));
        }
        let out = Self::out_keys(w);
        let takes = w.spec.takes;
        let keys = w.spec.keys.clone();
        let reads = w.spec.kind == Kind::Stream;
        let group = w.spec.group.clone();
        self.take_in_flight(&out, takes);
        self.take_group_in_flight(&out, &group);
        if !reads {
            // What it did not take may serve those after it.
            for k in &keys {
                self.touched(k);
            }
        }
        let w = self.waiters.get_mut(&id).expect("checked");
        let timed_out = w.deadline.is_some_and(|d| now >= d);
        if served || w.gone {
            let w = self.remove(id).expect("checked");
            return (
                Returned::Answer {
                    unblock_caller: w.unblock.and_then(|(_, c)| c),
                },
                Some(client),
            );
        }
        if w.unblock.is_some() || timed_out {
            let w = self.remove(id).expect("checked");
            return (Returned::Ends(w.unblock), Some(client));
        }
        w.state = State::Waiting;
        w.client = Some(client);
        (Returned::Waits, None)
    }

    /// The log refused or lost the entry of waiter `id`, and its client
    /// was answered with that error: its wait is over. Returns the caller
    /// of a CLIENT UNBLOCK that waited on it (it gets 0).
    pub fn failed(&mut self, id: u64) -> Option<C> {
        let w = self.waiters.get(&id)?;
        if matches!(w.state, State::Waiting) {
            return None;
        }
        let out = Self::out_keys(w);
        let takes = w.spec.takes;
        let keys = w.spec.keys.clone();
        let group = w.spec.group.clone();
        self.take_in_flight(&out, takes);
        self.take_group_in_flight(&out, &group);
        for k in keys {
            self.touched(&k);
        }
        self.remove(id).and_then(|w| w.unblock).and_then(|(_, c)| c)
    }

    /// Entries to propose now: for each key that changed, its waiters in
    /// order, as many as the elements there not already promised to an
    /// entry in the log. Each comes with the command narrowed to that key.
    /// Consumer-group waiters ([`Waiters::serve_groups`]) are decided with
    /// `news`, and some of them may end (returned with why).
    pub fn serve(
        &mut self,
        peek: impl Fn(&[u8]) -> Peek,
        news: impl Fn(&[u8], &[u8]) -> News,
    ) -> Served<C> {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        let dirty = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        for key in dirty {
            let Some(q) = self.queues.get(&key) else {
                continue;
            };
            let order: Vec<u64> = q.iter().copied().collect();
            let held = peek(&key);
            self.serve_groups(&key, &order, held, &news, &mut out, &mut ended);
            let Peek::Holds(kind, len) = held else {
                continue;
            };
            let mut budget = if kind == Kind::Stream {
                usize::MAX // a read takes nothing: every reader may look
            } else {
                len.saturating_sub(self.in_flight.get(&key).copied().unwrap_or(0))
            };
            for id in order {
                if budget == 0 {
                    break;
                }
                let Some(w) = self.waiters.get_mut(&id) else {
                    continue;
                };
                if w.state != State::Waiting || w.spec.kind != kind || w.gone {
                    continue;
                }
                let Some(c) = w.client.take() else { continue };
                w.state = State::Serving(key.clone());
                let line = w.spec.narrowed(&w.argv, std::slice::from_ref(&key));
                let takes = w.spec.takes;
                budget = budget.saturating_sub(takes);
                self.add_in_flight(std::slice::from_ref(&key), takes);
                out.push((id, line, c));
            }
        }
        (out, ended)
    }

    /// XREADGROUP waiters on `key`, in order, as Redis 7.0 serves them when
    /// the key is signalled: a key deleted or of another type ends every
    /// such wait (`-UNBLOCKED`), a group destroyed those of its clients
    /// (`-NOGROUP`); a group with an entry after its last-delivered ID
    /// gets an entry for its first waiting client, unless one of its
    /// entries is already in the log (the one that applies first may take
    /// everything: the next is proposed once it applied, if entries are
    /// left).
    fn serve_groups(
        &mut self,
        key: &Key,
        order: &[u64],
        held: Peek,
        news: &impl Fn(&[u8], &[u8]) -> News,
        out: &mut Vec<(u64, Vec<Vec<u8>>, C)>,
        ended: &mut Vec<(C, Ended)>,
    ) {
        let stream = matches!(held, Peek::Holds(Kind::Stream, _));
        let mut decided: HashMap<Vec<u8>, News> = HashMap::new();
        for &id in order {
            let Some(w) = self.waiters.get(&id) else {
                continue;
            };
            if w.spec.kind != Kind::Group || w.state != State::Waiting || w.gone {
                continue;
            }
            let group = w.spec.group.clone().unwrap_or_default();
            // Ok(true): propose, the group's one entry in the log; Ok(false):
            // propose (to be answered by the command's own error).
            let verdict = if !stream {
                Err(Ended::KeyGone)
            } else {
                let busy = self
                    .group_in_flight
                    .contains_key(&(key.clone(), group.clone()));
                let n = *decided.entry(group.clone()).or_insert_with(|| {
                    if busy {
                        News::No
                    } else {
                        news(key, &group)
                    }
                });
                match n {
                    News::No => continue,
                    News::NoGroup => Err(Ended::NoGroup),
                    News::Yes => Ok(true),
                }
            };
            let verdict = match verdict {
                Err(_) if self.rerun_ended => Ok(false),
                v => v,
            };
            match verdict {
                Err(why) => {
                    if let Some(c) = self.remove(id).and_then(|w| w.client) {
                        ended.push((c, why));
                    }
                }
                Ok(exclusive) => {
                    let w = self.waiters.get_mut(&id).expect("found above");
                    let Some(c) = w.client.take() else { continue };
                    w.state = State::Serving(key.clone());
                    let line = w.spec.narrowed(&w.argv, std::slice::from_ref(key));
                    let g = w.spec.group.clone();
                    self.add_group_in_flight(std::slice::from_ref(key), &g);
                    if exclusive {
                        decided.insert(group, News::No);
                    }
                    out.push((id, line, c));
                }
            }
        }
    }

    /// Fixes waiter `id`'s XREAD `$` ids to the streams' last IDs now.
    pub fn fix_last_ids(&mut self, id: u64, last: impl Fn(&[u8]) -> Vec<u8>) {
        if let Some(w) = self.waiters.get_mut(&id) {
            w.spec.fix_last_ids(&mut w.argv, last);
        }
    }

    /// Whether waiter `id` reads (XREAD) rather than pops.
    pub fn reads(&self, id: u64) -> bool {
        self.waiters
            .get(&id)
            .is_some_and(|w| w.spec.kind == Kind::Stream)
    }

    /// Waiting clients whose timeout came: their wait ends (answer nil).
    /// Those with an entry out are answered when it applies.
    pub fn expire(&mut self, now: Instant) -> Vec<C> {
        let due: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.state == State::Waiting && w.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.remove(id).and_then(|w| w.client))
            .collect()
    }

    /// The earliest timeout of a waiting client.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiters.values().filter_map(|w| w.deadline).min()
    }

    /// The client `client_id` disconnected. A waiting one is dropped (its
    /// handle returned, to be released); one with an entry out is marked
    /// gone and leaves the queues at once.
    pub fn gone(&mut self, client_id: u64) -> Option<C> {
        let id = self
            .waiters
            .iter()
            .find(|(_, w)| w.client_id == client_id && !w.gone)
            .map(|(id, _)| *id)?;
        if self.waiters[&id].state == State::Waiting {
            return self.remove(id).and_then(|w| w.client);
        }
        self.leave_queues(id);
        if let Some(w) = self.waiters.get_mut(&id) {
            w.gone = true;
        }
        None
    }

    /// CLIENT UNBLOCK `client_id`.
    pub fn unblock(
        &mut self,
        client_id: u64,
        mode: UnblockMode,
        caller: impl FnOnce() -> Option<C>,
    ) -> Unblocked<C> {
        let Some(id) = self
            .waiters
            .iter()
            .find(|(_, w)| w.client_id == client_id && !w.gone && w.unblock.is_none())
            .map(|(id, _)| *id)
        else {
            return Unblocked::NotOurs;
        };
        if self.waiters[&id].state == State::Waiting {
            let w = self.remove(id).expect("found");
            return Unblocked::Now(w.client.expect("a waiting client is held"), mode);
        }
        let caller = caller();
        let held = caller.is_some();
        if held {
            self.waiters.get_mut(&id).expect("found").unblock = Some((mode, caller));
        }
        Unblocked::Later(held)
    }

    /// The leader changed: every wait ends. Returns the waiting clients
    /// (to be told nothing was popped for them) and the callers of pending
    /// CLIENT UNBLOCKs; entries still out are answered as they apply.
    pub fn clear(&mut self) -> (Vec<C>, Vec<C>) {
        let mut waiting = Vec::new();
        let mut callers = Vec::new();
        for (_, w) in self.waiters.drain() {
            waiting.extend(w.client);
            callers.extend(w.unblock.and_then(|(_, c)| c));
        }
        self.queues.clear();
        self.in_flight.clear();
        self.group_in_flight.clear();
        self.dirty.clear();
        self.dirty_set.clear();
        (waiting, callers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str]) -> (Spec, Vec<Vec<u8>>) {
        let argv: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        (Spec::parse(&argv).unwrap(), argv)
    }

    fn empty(_: &[u8]) -> Peek {
        Peek::Missing
    }

    fn no_news(_: &[u8], _: &[u8]) -> News {
        News::No
    }

    fn arrive(
        w: &mut Waiters<&'static str>,
        cid: u64,
        args: &[&str],
        name: &'static str,
    ) -> Option<u64> {
        let (s, a) = spec(args);
        w.arrive(cid, s, a, None, name, empty).map(|(id, _, _)| id)
    }

    #[test]
    fn first_come_first_served_per_key() {
        let mut w: Waiters<&str> = Waiters::default();
        let now = Instant::now();
        // The first tries through the log and finds nothing.
        let a = arrive(&mut w, 1, &["BLPOP", "k", "0"], "a").expect("tries");
        // Later ones only queue: their key has someone before them.
        assert_eq!(arrive(&mut w, 2, &["BLPOP", "k", "0"], "b"), None);
        assert_eq!(arrive(&mut w, 3, &["BLPOP", "k", "0"], "c"), None);
        assert!(matches!(w.returned(a, false, "a", now).0, Returned::Waits));
        // Two elements arrive: the first two are served, in order.
        w.touched(b"k");
        let served = w.serve(|_| Peek::Holds(Kind::List, 2), no_news).0;
        let names: Vec<_> = served.iter().map(|s| s.2).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            served[0].1,
            vec![b"BLPOP".to_vec(), b"k".to_vec(), b"0".to_vec()]
        );
        // Promised elements are not promised twice.
        w.touched(b"k");
        assert!(w
            .serve(|_| Peek::Holds(Kind::List, 2), no_news)
            .0
            .is_empty());
        // "a" got its element; "b" found nothing (someone else took it) and
        // waits on, still before "c".
        assert!(matches!(
            w.returned(served[0].0, true, "a", now).0,
            Returned::Answer { .. }
        ));
        assert!(matches!(
            w.returned(served[1].0, false, "b", now).0,
            Returned::Waits
        ));
        let next = w.serve(|_| Peek::Holds(Kind::List, 1), no_news).0;
        assert_eq!(next.iter().map(|s| s.2).collect::<Vec<_>>(), ["b"]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn keys_with_waiters_are_left_to_them() {
        let mut w: Waiters<&str> = Waiters::default();
        let now = Instant::now();
        let a = arrive(&mut w, 1, &["BLPOP", "k", "0"], "a").unwrap();
        w.returned(a, false, "a", now);
        let (s, argv) = spec(&["BLPOP", "k", "other", "0"]);
        let (_, line, _) = w.arrive(2, s, argv, None, "b", empty).unwrap();
        assert_eq!(
            line,
            vec![b"BLPOP".to_vec(), b"other".to_vec(), b"0".to_vec()]
        );
        // A key of another type goes into the attempt: Redis says WRONGTYPE.
        let (s, argv) = spec(&["BLPOP", "k", "0"]);
        let peek = |k: &[u8]| {
            if k == b"k" {
                Peek::Other
            } else {
                Peek::Missing
            }
        };
        assert!(w.arrive(3, s, argv, None, "c", peek).is_some());
        // Not served from a key of another type or kind.
        w.touched(b"k");
        assert!(w
            .serve(|_| Peek::Holds(Kind::Zset, 3), no_news)
            .0
            .is_empty());
        assert!(w.serve(|_| Peek::Other, no_news).0.is_empty());
    }

    #[test]
    fn timeouts_unblock_disconnects_and_leader_changes() {
        let mut w: Waiters<&str> = Waiters::default();
        let now = Instant::now();
        let soon = now + std::time::Duration::from_millis(10);
        let (s, argv) = spec(&["BLPOP", "k", "0.01"]);
        let (a, _, c) = w.arrive(1, s, argv, Some(soon), "a", empty).unwrap();
        assert!(
            w.expire(soon).is_empty(),
            "an entry is out: not timed out yet"
        );
        assert!(matches!(
            w.returned(a, false, c, soon).0,
            Returned::Ends(None)
        ));
        assert!(w.is_empty());

        // CLIENT UNBLOCK of a waiting client: at once.
        let b = arrive(&mut w, 2, &["BLPOP", "k", "0"], "b").unwrap();
        w.returned(b, false, "b", now);
        assert!(matches!(
            w.unblock(2, UnblockMode::Error, || Some("caller")),
            Unblocked::Now("b", UnblockMode::Error)
        ));
        assert!(matches!(
            w.unblock(2, UnblockMode::Error, || Some("caller")),
            Unblocked::NotOurs
        ));

        // CLIENT UNBLOCK while its entry is out: decided by the entry.
        let c = arrive(&mut w, 3, &["BLPOP", "k", "0"], "c").unwrap();
        assert!(matches!(
            w.unblock(3, UnblockMode::Timeout, || Some("caller")),
            Unblocked::Later(true)
        ));
        match w.returned(c, false, "c", now).0 {
            Returned::Ends(Some((UnblockMode::Timeout, Some("caller")))) => {}
            _ => panic!("the unblock ends it"),
        }

        // A disconnect while waiting drops it: nothing is served for it.
        let d = arrive(&mut w, 4, &["BLPOP", "k", "0"], "d").unwrap();
        w.returned(d, false, "d", now);
        assert_eq!(w.gone(4), Some("d"));
        w.touched(b"k");
        assert!(w
            .serve(|_| Peek::Holds(Kind::List, 1), no_news)
            .0
            .is_empty());

        // A leader change ends every wait.
        let e = arrive(&mut w, 5, &["BLPOP", "k", "0"], "e").unwrap();
        w.returned(e, false, "e", now);
        assert_eq!(w.clear().0, vec!["e"]);
        assert!(w.is_empty());
        w.touched(b"k");
        assert!(w
            .serve(|_| Peek::Holds(Kind::List, 1), no_news)
            .0
            .is_empty());
    }

    #[test]
    fn consumer_groups_are_served_one_entry_at_a_time_in_order() {
        let mut w: Waiters<&str> = Waiters::default();
        let now = Instant::now();
        let stream = |_: &[u8]| Peek::Holds(Kind::Stream, 0);
        let line = |g: &str| {
            spec(&[
                "XREADGROUP",
                "GROUP",
                g,
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">",
            ])
        };
        let (sa, la) = line("g");
        let (a, tried, _) = w.arrive(1, sa, la, None, "a", stream).expect("tries");
        assert_eq!(
            tried,
            ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]
                .map(|a| a.as_bytes().to_vec())
                .to_vec(),
            "the entry does not block"
        );
        assert!(matches!(w.returned(a, false, "a", now).0, Returned::Waits));
        // Another client of the same group only queues behind "a"; one of
        // another group tries at once.
        let (sb, lb) = line("g");
        assert!(w.arrive(2, sb, lb, None, "b", stream).is_none());
        let (sc, lc) = line("h");
        let (c, _, _) = w.arrive(3, sc, lc, None, "c", stream).expect("tries");
        assert!(matches!(w.returned(c, false, "c", now).0, Returned::Waits));

        // New entries: the first waiter of each group, one entry a group.
        w.touched(b"s");
        let (served, ended) = w.serve(stream, |_, _| News::Yes);
        assert!(ended.is_empty());
        assert_eq!(served.iter().map(|s| s.2).collect::<Vec<_>>(), ["a", "c"]);
        w.touched(b"s");
        assert!(w.serve(stream, |_, _| News::Yes).0.is_empty());
        // "a" took them; nothing new for "g" afterwards: "b" waits on.
        assert!(matches!(
            w.returned(served[0].0, true, "a", now).0,
            Returned::Answer { .. }
        ));
        assert!(w.serve(stream, |_, _| News::No).0.is_empty());
        // "c" found nothing (another consumer took them): it waits on.
        assert!(matches!(
            w.returned(served[1].0, false, "c", now).0,
            Returned::Waits
        ));
        // Its group destroyed: "b" gets NOGROUP, "c" of the other group
        // waits on; then the key deleted: "c" gets UNBLOCKED.
        w.touched(b"s");
        let (served, ended) = w.serve(
            stream,
            |_, g| {
                if g == b"g" {
                    News::NoGroup
                } else {
                    News::No
                }
            },
        );
        assert!(served.is_empty());
        assert_eq!(ended, vec![("b", Ended::NoGroup)]);
        w.touched(b"s");
        let (served, ended) = w.serve(empty, |_, _| News::Yes);
        assert!(served.is_empty());
        assert_eq!(ended, vec![("c", Ended::KeyGone)]);
        assert!(w.is_empty());

        // Redis 7.2 and Valkey run the command again: an entry for each.
        w.rerun_ended = true;
        for (cid, name) in [(4, "d"), (5, "e")] {
            let (sd, ld) = line("g");
            if let Some((id, _, c)) = w.arrive(cid, sd, ld, None, name, stream) {
                w.returned(id, false, c, now);
            }
        }
        w.touched(b"s");
        let (served, ended) = w.serve(stream, |_, _| News::NoGroup);
        assert!(ended.is_empty());
        assert_eq!(served.iter().map(|s| s.2).collect::<Vec<_>>(), ["d", "e"]);
    }
}
