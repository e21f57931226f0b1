//! Fault injection. Every `interval` (random in the configured range) the
//! nemesis heals the faults whose time is up (each lasts a random
//! `interval` too) and starts one of a random kind that is not active. So
//! with one kind, faults and quiet spells alternate; with several, faults
//! of different kinds overlap; each kind's fault is healed before its next.
//!
//! Kinds: `kill` (kill -9 one node, the leader, a majority or all; restart
//! at heal), `pause` (SIGSTOP of the leader or a majority), `partition`
//! (isolate the leader, random halves, a ring of overlapping majorities,
//! flapping), `member` (RAFT.NODE REMOVE of a node, the leader at times;
//! at heal it is wiped and joins again under a new id), `transfer`
//! (RAFT.TRANSFER_LEADER to a random node), `crash` (a crash failpoint of
//! the module on a random node; restarted after it died).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::Reply;
use crate::cluster::{field_u64, par, sleep_unless, Cluster};
use crate::report::FaultWindow;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Member,
    Transfer,
    Crash,
}

pub const ALL: [Kind; 6] = [
    Kind::Kill,
    Kind::Pause,
    Kind::Partition,
    Kind::Member,
    Kind::Transfer,
    Kind::Crash,
];

/// The module's crash failpoints.
pub const FAILPOINTS: [&str; 4] = [
    "log-before-fsync",
    "log-after-fsync",
    "apply-middle",
    "snapshot-write",
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Member => "member",
            Kind::Transfer => "transfer",
            Kind::Crash => "crash",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL.iter().copied().find(|k| k.name() == s)
    }
}

/// Parses `--nemesis`: a comma list of kinds, `all`, or `none`. `all`
/// leaves out kinds the environment cannot do (partitions on loopback);
/// naming such a kind is an error.
pub fn parse_list(
    s: &str,
    can_partition: Result<(), String>,
) -> Result<(Vec<Kind>, Vec<String>), String> {
    let mut kinds = Vec::new();
    let mut notes = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match w {
            "none" => {}
            "all" => {
                for k in ALL {
                    if k == Kind::Partition {
                        if let Err(e) = &can_partition {
                            notes.push(format!("nemesis all: partition left out: {e}"));
                            continue;
                        }
                    }
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
            }
            _ => {
                let k = Kind::parse(w).ok_or_else(|| {
                    format!("unknown nemesis '{w}' (known: kill, pause, partition, member, transfer, crash, all, none)")
                })?;
                if k == Kind::Partition {
                    can_partition.clone()?;
                }
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
        }
    }
    Ok((kinds, notes))
}

/// Flapping partitions: a thread that cuts and heals until stopped.
struct Flapper {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

enum Undo {
    /// Start these nodes again.
    Restart(Vec<usize>),
    /// SIGCONT these pids.
    Resume(Vec<(usize, u32)>),
    /// Flush the firewall rules (and stop flapping).
    Heal(Option<Flapper>),
    /// A node was removed; at heal it is wiped and joins again.
    /// `tries`: heals attempted while the removal had not taken effect.
    Removed {
        node: usize,
        old_id: u64,
        tries: u32,
    },
    /// The removed node is rejoining (a thread waits for its JOIN).
    /// It returns when the JOIN ended (ns since the origin).
    Rejoining(JoinHandle<(Result<(), String>, u64)>),
    /// A crash failpoint was armed on a node running `pid`.
    Crash { node: usize, pid: u32, name: String },
}

struct Active {
    label: String,
    start_ns: u64,
    undo: Undo,
}

pub struct Nemesis {
    cluster: Arc<Cluster>,
    kinds: Vec<Kind>,
    rng: StdRng,
    interval: (f64, f64),
    origin: Instant,
    active: HashMap<Kind, Active>,
    /// When each active fault is due to be healed (ns since the origin).
    heal_at: HashMap<Kind, u64>,
    pub windows: Vec<FaultWindow>,
    pub notes: Vec<String>,
    disabled: Vec<Kind>,
}

/// How long a removed node may take to rejoin.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Timeout of the nemesis's own commands.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

impl Nemesis {
    pub fn new(
        cluster: Arc<Cluster>,
        kinds: Vec<Kind>,
        seed: u64,
        interval: (f64, f64),
        origin: Instant,
    ) -> Nemesis {
        Nemesis {
            cluster,
            kinds,
            rng: StdRng::seed_from_u64(seed ^ 0x4e3e_5151),
            interval,
            origin,
            active: HashMap::new(),
            heal_at: HashMap::new(),
            windows: Vec::new(),
            notes: Vec::new(),
            disabled: Vec::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn note(&mut self, s: String) {
        if self.notes.len() < 40 && !self.notes.contains(&s) {
            eprintln!("nemesis: {s}");
            self.notes.push(s);
        }
    }

    fn n(&self) -> usize {
        self.cluster.len()
    }

    fn majority(&self) -> usize {
        self.n() / 2 + 1
    }

    fn random_node(&mut self) -> usize {
        self.rng.gen_range(0..self.n())
    }

    fn random_subset(&mut self, size: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.n()).collect();
        all.shuffle(&mut self.rng);
        all.truncate(size);
        all.sort_unstable();
        all
    }

    /// Runs until `stop` is set, then heals every active fault.
    fn random_interval(&mut self) -> Duration {
        let (lo, hi) = self.interval;
        Duration::from_secs_f64(if hi > lo {
            self.rng.gen_range(lo..hi)
        } else {
            lo
        })
    }

    /// Runs until `stop` is set, then heals every active fault. Each step
    /// (every `interval`) heals the faults whose time is up (each lasts a
    /// random `interval`), then starts a fault of a random kind that is
    /// neither active nor healed in this step.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let d = self.random_interval();
            sleep_unless(stop, d);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            self.poll_rejoin();
            let now = self.now_ns();
            let mut due: Vec<Kind> = self
                .active
                .keys()
                .copied()
                .filter(|k| self.heal_at.get(k).is_none_or(|&t| now >= t))
                .collect();
            due.sort();
            for &k in &due {
                if let Some(a) = self.active.remove(&k) {
                    self.heal(k, a, false);
                }
            }
            let kinds: Vec<Kind> = self
                .kinds
                .iter()
                .copied()
                .filter(|k| {
                    !self.disabled.contains(k) && !self.active.contains_key(k) && !due.contains(k)
                })
                .collect();
            if let Some(&kind) = kinds.choose(&mut self.rng) {
                let d = self.random_interval();
                self.heal_at.insert(kind, now + d.as_nanos() as u64);
                self.start(kind);
            }
        }
        self.heal_everything();
    }

    /// Heals every active fault (waiting for rejoins to finish).
    pub fn heal_everything(&mut self) {
        let mut kinds: Vec<Kind> = self.active.keys().copied().collect();
        kinds.sort();
        for k in kinds {
            if let Some(a) = self.active.remove(&k) {
                self.heal(k, a, true);
            }
        }
    }

    fn close(&mut self, a: &Active) {
        let end_ns = self.now_ns();
        eprintln!("nemesis: healed {} at {:.1}s", a.label, end_ns as f64 / 1e9);
        self.windows.push(FaultWindow {
            start_ns: a.start_ns,
            end_ns,
            label: a.label.clone(),
        });
    }

    /// A rejoin finished? Then its fault window closes.
    fn poll_rejoin(&mut self) {
        if let Some(a) = self.active.get(&Kind::Member) {
            if let Undo::Rejoining(h) = &a.undo {
                if h.is_finished() {
                    let a = self.active.remove(&Kind::Member).expect("member fault");
                    self.finish_rejoin(a);
                }
            }
        }
    }

    fn finish_rejoin(&mut self, a: Active) {
        let Undo::Rejoining(h) = a.undo else {
            return;
        };
        let end_ns = match h.join() {
            Ok((r, end_ns)) => {
                if let Err(e) = r {
                    self.note(format!("{}: rejoin failed: {e}", a.label));
                }
                end_ns
            }
            Err(_) => {
                self.note(format!("{}: rejoin thread panicked", a.label));
                self.now_ns()
            }
        };
        self.windows.push(FaultWindow {
            start_ns: a.start_ns,
            end_ns,
            label: a.label,
        });
    }

    fn start(&mut self, kind: Kind) {
        let start_ns = self.now_ns();
        let r = match kind {
            Kind::Kill => self.start_kill(),
            Kind::Pause => self.start_pause(),
            Kind::Partition => self.start_partition(),
            Kind::Member => self.start_member(),
            Kind::Transfer => {
                self.transfer(start_ns);
                None
            }
            Kind::Crash => self.start_crash(),
        };
        if let Some((label, undo)) = r {
            eprintln!(
                "nemesis: {label} at {:.1}s (took {:.1}s)",
                start_ns as f64 / 1e9,
                (self.now_ns() - start_ns) as f64 / 1e9
            );
            self.active.insert(
                kind,
                Active {
                    label,
                    start_ns,
                    undo,
                },
            );
        }
    }

    fn heal(&mut self, kind: Kind, a: Active, last: bool) {
        let Active {
            label,
            start_ns,
            undo,
        } = a;
        let done = |label: String| Active {
            label,
            start_ns,
            undo: Undo::Heal(None),
        };
        match undo {
            Undo::Restart(nodes) => {
                let c = Arc::clone(&self.cluster);
                for (_, r) in par(&nodes, |i| c.start(i)) {
                    if let Err(e) = r {
                        self.note(format!("restart after '{label}': {e}"));
                    }
                }
            }
            Undo::Resume(pids) => {
                let c = Arc::clone(&self.cluster);
                let nodes: Vec<usize> = (0..pids.len()).collect();
                par(&nodes, |k| c.resume(pids[k].0, pids[k].1));
            }
            Undo::Heal(flapper) => {
                if let Some(f) = flapper {
                    f.stop.store(true, Ordering::Relaxed);
                    let _ = f.handle.join();
                }
                self.heal_network();
            }
            Undo::Removed {
                node,
                old_id,
                tries,
            } => {
                let removed = self.is_removed(node, old_id);
                if !removed && !last && tries < 3 {
                    // Not applied yet: heal again later.
                    let undo = Undo::Removed {
                        node,
                        old_id,
                        tries: tries + 1,
                    };
                    self.active.insert(
                        kind,
                        Active {
                            label,
                            start_ns,
                            undo,
                        },
                    );
                    return;
                }
                if !removed {
                    // The remove did not take (yet): should it later, the
                    // final heal rejoins strays.
                    self.note(format!("{label}: the node was not removed (yet)"));
                    self.close(&done(label));
                    return;
                }
                let c = Arc::clone(&self.cluster);
                let origin = self.origin;
                let h = thread::spawn(move || {
                    let r = c
                        .wipe_and_start(node)
                        .and_then(|_| c.join(node, REJOIN_TIMEOUT));
                    (r, origin.elapsed().as_nanos() as u64)
                });
                let a = Active {
                    label,
                    start_ns,
                    undo: Undo::Rejoining(h),
                };
                if last {
                    self.finish_rejoin(a);
                } else {
                    self.active.insert(kind, a);
                }
                return;
            }
            Undo::Rejoining(h) => {
                let a = Active {
                    label,
                    start_ns,
                    undo: Undo::Rejoining(h),
                };
                if last {
                    self.finish_rejoin(a);
                } else {
                    // Still joining: leave it be.
                    self.active.insert(kind, a);
                }
                return;
            }
            Undo::Crash { node, pid, name } => {
                let wait = Duration::from_secs(if last { 0 } else { 1 });
                if !self.wait_dead(node, pid, wait) {
                    let off = self.cluster.cmd(
                        node,
                        &["RAFT.DEBUG", "FAILPOINT", &name, "off"],
                        Duration::from_secs(2),
                    );
                    if matches!(off, Ok(Reply::Simple(_))) {
                        self.note(format!("failpoint {name} did not fire (disarmed)"));
                    } else {
                        self.note(format!(
                            "failpoint {name} did not fire (disarmed by kill -9 and restart)"
                        ));
                        let _ = self.cluster.kill(node);
                    }
                }
                if let Err(e) = self.cluster.start(node) {
                    self.note(format!("restart after '{label}': {e}"));
                }
            }
        }
        self.close(&done(label));
    }

    fn wait_dead(&self, node: usize, pid: u32, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if !self.cluster.env.alive(node, pid) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    // ----- kill / pause -----

    fn leader_or_random(&mut self) -> (usize, bool) {
        match self.cluster.leader() {
            Some(l) => (l, true),
            None => (self.random_node(), false),
        }
    }

    fn start_kill(&mut self) -> Option<(String, Undo)> {
        let (targets, what) = match self.rng.gen_range(0..4) {
            0 => (vec![self.random_node()], String::new()),
            1 => {
                let (l, is) = self.leader_or_random();
                (vec![l], if is { "leader ".into() } else { String::new() })
            }
            2 => (self.random_subset(self.majority()), "majority ".into()),
            _ => ((0..self.n()).collect(), "all ".into()),
        };
        let c = Arc::clone(&self.cluster);
        for (i, r) in par(&targets, |i| c.kill(i)) {
            if let Err(e) = r {
                self.note(format!("kill {}: {e}", self.cluster.name(i)));
            }
        }
        let label = format!("kill {what}{}", self.cluster.names(&targets));
        Some((label, Undo::Restart(targets)))
    }

    fn start_pause(&mut self) -> Option<(String, Undo)> {
        let (targets, what) = if self.rng.gen_bool(0.5) {
            let (l, is) = self.leader_or_random();
            (vec![l], if is { "leader " } else { "" })
        } else {
            (self.random_subset(self.majority()), "majority ")
        };
        let mut pids = Vec::new();
        let c = Arc::clone(&self.cluster);
        let results = par(
            &targets,
            |i| if c.running(i) { Some(c.pause(i)) } else { None },
        );
        for (i, r) in results {
            match r {
                Some(Ok(pid)) => pids.push((i, pid)),
                Some(Err(e)) => self.note(format!("pause {}: {e}", self.cluster.name(i))),
                None => {}
            }
        }
        if pids.is_empty() {
            return None;
        }
        let paused: Vec<usize> = pids.iter().map(|p| p.0).collect();
        Some((
            format!("pause {what}{}", self.cluster.names(&paused)),
            Undo::Resume(pids),
        ))
    }

    // ----- partitions -----

    fn heal_network(&mut self) {
        let all: Vec<usize> = (0..self.n()).collect();
        let c = Arc::clone(&self.cluster);
        for (i, r) in par(&all, |i| c.env.block(i, &[])) {
            if let Err(e) = r {
                self.note(format!("heal {}: {e}", self.cluster.name(i)));
            }
        }
    }

    fn start_partition(&mut self) -> Option<(String, Undo)> {
        let n = self.n();
        let (label, conn, flap) = match self.rng.gen_range(0..4) {
            0 => {
                let (l, is) = self.leader_or_random();
                let rest: Vec<usize> = (0..n).filter(|&j| j != l).collect();
                let label = format!(
                    "partition {}{} | {}",
                    if is { "leader " } else { "" },
                    self.cluster.names(&[l]),
                    self.cluster.names(&rest)
                );
                (label, halves(n, &[l]), false)
            }
            1 => {
                let minority = self.random_subset(n - self.majority());
                let label = partition_label(&self.cluster, &minority);
                (label, halves(n, &minority), false)
            }
            2 => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let names: Vec<String> = order.iter().map(|&i| self.cluster.name(i)).collect();
                (
                    format!("partition ring {}", names.join("-")),
                    ring(&order),
                    false,
                )
            }
            _ => ("partition flapping".to_string(), Vec::new(), true),
        };
        if flap {
            let stop = Arc::new(AtomicBool::new(false));
            let c = Arc::clone(&self.cluster);
            let s = Arc::clone(&stop);
            let mut rng = StdRng::seed_from_u64(self.rng.gen());
            let handle = thread::spawn(move || {
                let n = c.len();
                while !s.load(Ordering::Relaxed) {
                    let mut all: Vec<usize> = (0..n).collect();
                    all.shuffle(&mut rng);
                    all.truncate(n - (n / 2 + 1));
                    let _ = apply(&c, &halves(n, &all));
                    sleep_unless(&s, Duration::from_millis(rng.gen_range(200..600)));
                    let _ = apply(&c, &vec![vec![true; n]; n]);
                    sleep_unless(&s, Duration::from_millis(rng.gen_range(200..600)));
                }
            });
            return Some((label, Undo::Heal(Some(Flapper { stop, handle }))));
        }
        if let Err(e) = apply(&self.cluster, &conn) {
            self.note(format!("{label}: {e}"));
        }
        Some((label, Undo::Heal(None)))
    }

    // ----- membership -----

    /// Whether node `i` (Raft id `old_id`) is out of the cluster: it says
    /// so, or the leader's configuration no longer lists it.
    fn is_removed(&self, i: usize, old_id: u64) -> bool {
        is_removed(&self.cluster, i, old_id)
    }

    fn start_member(&mut self) -> Option<(String, Undo)> {
        if self.n() < 4 {
            self.disabled.push(Kind::Member);
            self.note("member nemesis needs at least 4 nodes (it never goes below 3 voting nodes): skipped".into());
            return None;
        }
        let leader = self.cluster.leader()?;
        let info = self.cluster.sampled(leader)?;
        if field_u64(&info, "raft_num_voting_nodes").unwrap_or(0) < 4 {
            return None;
        }
        let eligible: Vec<usize> = (0..self.n())
            .filter(|&i| {
                let p = self.cluster.proc(i);
                !p.paused
                    && self.cluster.running(i)
                    && self
                        .cluster
                        .sampled(i)
                        .map(|s| s.get("raft_state").map(String::as_str) == Some("up"))
                        .unwrap_or(false)
            })
            .collect();
        let target = if self.rng.gen_bool(0.25) && eligible.contains(&leader) {
            leader
        } else {
            let others: Vec<usize> = eligible.iter().copied().filter(|&i| i != leader).collect();
            *others.choose(&mut self.rng)?
        };
        let id = self.cluster.node_id(target)?;
        let label = format!(
            "member remove {}{}",
            if target == leader { "leader " } else { "" },
            self.cluster.name(target)
        );
        match self.cluster.cmd(
            leader,
            &["RAFT.NODE", "REMOVE", &id.to_string()],
            CMD_TIMEOUT,
        ) {
            Ok(Reply::Simple(_)) => {}
            Ok(Reply::Error(e)) if !e.starts_with("TIMEOUT") => {
                // Certainly not applied: no fault.
                self.note(format!("{label}: RAFT.NODE REMOVE: {}", first_words(&e, 8)));
                return None;
            }
            Ok(other) => self.note(format!("{label}: RAFT.NODE REMOVE replied {other:?}")),
            Err(e) => self.note(format!("{label}: RAFT.NODE REMOVE: {e}")),
        }
        Some((
            label,
            Undo::Removed {
                tries: 0,
                node: target,
                old_id: id,
            },
        ))
    }

    // ----- leadership transfer -----

    fn transfer(&mut self, start_ns: u64) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let others: Vec<usize> = (0..self.n()).filter(|&i| i != leader).collect();
        let Some(&target) = others.choose(&mut self.rng) else {
            return;
        };
        let Some(id) = self.cluster.node_id(target) else {
            return;
        };
        let label = format!(
            "transfer {} -> {}",
            self.cluster.name(leader),
            self.cluster.name(target)
        );
        eprintln!("nemesis: {label} at {:.1}s", start_ns as f64 / 1e9);
        match self.cluster.cmd(
            leader,
            &["RAFT.TRANSFER_LEADER", &id.to_string()],
            CMD_TIMEOUT,
        ) {
            Ok(Reply::Simple(_)) => {}
            Ok(Reply::Error(e)) => self.note(format!("transfer: {}", first_words(&e, 6))),
            Ok(other) => self.note(format!("transfer: unexpected reply {other:?}")),
            Err(e) => self.note(format!("transfer: {}", first_words(&e, 6))),
        }
        let a = Active {
            label,
            start_ns,
            undo: Undo::Heal(None),
        };
        self.close(&a);
    }

    // ----- crash points -----

    fn start_crash(&mut self) -> Option<(String, Undo)> {
        let running: Vec<usize> = (0..self.n())
            .filter(|&i| self.cluster.running(i) && !self.cluster.proc(i).paused)
            .collect();
        let &node = running.choose(&mut self.rng)?;
        let pid = self.cluster.proc(node).pid?;
        let name = *FAILPOINTS.choose(&mut self.rng).expect("failpoints");
        match self.cluster.cmd(
            node,
            &["RAFT.DEBUG", "FAILPOINT", name, "crash"],
            CMD_TIMEOUT,
        ) {
            Ok(Reply::Simple(_)) => Some((
                format!("crash {} {name}", self.cluster.name(node)),
                Undo::Crash {
                    node,
                    pid,
                    name: name.to_string(),
                },
            )),
            Ok(Reply::Error(e)) => {
                self.disabled.push(Kind::Crash);
                self.note(format!(
                    "crash nemesis skipped: the module refused RAFT.DEBUG FAILPOINT (built without failpoints?): {e}"
                ));
                None
            }
            Ok(other) => {
                self.disabled.push(Kind::Crash);
                self.note(format!(
                    "crash nemesis skipped: RAFT.DEBUG FAILPOINT replied {other:?}"
                ));
                None
            }
            Err(e) => {
                self.note(format!("crash {}: {e}", self.cluster.name(node)));
                None
            }
        }
    }
}

fn first_words(s: &str, n: usize) -> String {
    s.split_whitespace().take(n).collect::<Vec<_>>().join(" ")
}

/// Whether node `i` (Raft id `old_id`) is out of the cluster: it reports
/// `removed`, or the acknowledged leader (another node) no longer lists it.
pub fn is_removed(c: &Cluster, i: usize, old_id: u64) -> bool {
    if let Ok(info) = c.info(i, Duration::from_secs(2)) {
        match info.get("raft_state").map(String::as_str) {
            Some("removed") => return true,
            Some("uninitialized") => return false,
            _ => {}
        }
        if field_u64(&info, "raft_node_id") != Some(old_id) {
            return false;
        }
    }
    let Some(l) = c.leader() else { return false };
    if l == i {
        return false;
    }
    match c.info(l, Duration::from_secs(2)) {
        Ok(info) => !member_ids(&info).contains(&old_id),
        Err(_) => false,
    }
}

/// The ids of the members a node knows (itself and its `raft_nodeN` peers).
pub fn member_ids(info: &crate::cluster::Info) -> Vec<u64> {
    let mut ids: Vec<u64> = field_u64(info, "raft_node_id").into_iter().collect();
    for (k, v) in info {
        let Some(rest) = k.strip_prefix("raft_node") else {
            continue;
        };
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Some(id) = v
            .split(',')
            .find_map(|kv| kv.strip_prefix("id="))
            .and_then(|x| x.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

fn partition_label(c: &Cluster, minority: &[usize]) -> String {
    let rest: Vec<usize> = (0..c.len()).filter(|j| !minority.contains(j)).collect();
    format!("partition {} | {}", c.names(minority), c.names(&rest))
}

/// Connectivity of two halves: `side` and the rest.
pub fn halves(n: usize, side: &[usize]) -> Vec<Vec<bool>> {
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| side.contains(&i) == side.contains(&j))
                .collect()
        })
        .collect()
}

/// A ring of overlapping majorities: along `order`, each node reaches the
/// nodes within distance d, so that it sees a majority (itself included).
pub fn ring(order: &[usize]) -> Vec<Vec<bool>> {
    let n = order.len();
    let d = (n / 2).div_ceil(2);
    let mut pos = vec![0; n];
    for (p, &i) in order.iter().enumerate() {
        pos[i] = p;
    }
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    let a = pos[i].abs_diff(pos[j]);
                    a.min(n - a) <= d
                })
                .collect()
        })
        .collect()
}

/// Installs a connectivity matrix: node i drops packets of every j it does
/// not reach.
pub fn apply(c: &Cluster, conn: &[Vec<bool>]) -> Result<(), String> {
    let nodes: Vec<usize> = (0..conn.len()).collect();
    let results = par(&nodes, |i| {
        let ips: Vec<String> = conn[i]
            .iter()
            .enumerate()
            .filter(|&(j, ok)| j != i && !ok)
            .map(|(j, _)| c.env.ip(j))
            .collect();
        c.env.block(i, &ips)
    });
    results.into_iter().try_for_each(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_majorities() {
        for n in 3..=9 {
            let order: Vec<usize> = (0..n).collect();
            let r = ring(&order);
            for (i, row) in r.iter().enumerate() {
                let seen = row.iter().filter(|b| **b).count();
                assert!(seen > n / 2, "n={n} node {i} sees {seen}");
                for (j, &b) in row.iter().enumerate() {
                    assert_eq!(b, r[j][i], "symmetric");
                }
            }
            if n >= 5 {
                assert!(
                    r.iter().any(|row| row.iter().any(|b| !b)),
                    "n={n}: a real partition"
                );
            }
        }
    }

    #[test]
    fn kinds() {
        let (k, notes) = parse_list("all", Err("no".into())).unwrap();
        assert!(!k.contains(&Kind::Partition));
        assert_eq!(notes.len(), 1);
        assert!(parse_list("partition", Err("no".into())).is_err());
        assert_eq!(
            parse_list("kill,pause", Ok(())).unwrap().0,
            vec![Kind::Kill, Kind::Pause]
        );
        assert!(parse_list("bogus", Ok(())).is_err());
    }

    #[test]
    fn member_ids_of_info() {
        let mut m = crate::cluster::Info::new();
        m.insert("raft_node_id".into(), "5".into());
        m.insert(
            "raft_node0".into(),
            "id=7,state=connected,voting=yes,addr=x,port=1".into(),
        );
        m.insert("raft_node_count".into(), "2".into());
        let mut ids = member_ids(&m);
        ids.sort();
        assert_eq!(ids, vec![5, 7]);
    }
}
