//! A redisraft cluster on an `Env`: starting, killing, pausing and wiping
//! nodes, forming the cluster, the INFO monitor (who leads, leaderless
//! time), and the final convergence and digest checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, Auth, Reply};
use crate::env::{Env, Sig};

/// INFO raft of one node, as a map of its `raft_*` fields.
pub type Info = HashMap<String, String>;

/// What the run knows about one node's process.
#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub pid: Option<u32>,
    /// Stopped with SIGSTOP and not resumed yet.
    pub paused: bool,
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    info: Option<Info>,
}

pub struct Cluster {
    pub env: Arc<dyn Env>,
    /// Extra `--raft.x y` load options for every node.
    pub extra: Vec<(String, String)>,
    /// Credentials: the nodes start with them (`Auth::server_args`) and
    /// every connection to a node authenticates.
    pub auth: Option<Auth>,
    procs: Mutex<Vec<Proc>>,
    /// Serializes start/kill/wipe per node.
    locks: Vec<Mutex<()>>,
    samples: Mutex<Vec<Option<Sample>>>,
    /// Set when the whole run should wind down (signal, error).
    pub stop: Arc<AtomicBool>,
}

pub fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Runs `f` for every node at once (one thread each); results in order.
pub fn par<T: Send>(nodes: &[usize], f: impl Fn(usize) -> T + Sync) -> Vec<(usize, T)> {
    thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = nodes.iter().map(|&i| (i, s.spawn(move || f(i)))).collect();
        handles
            .into_iter()
            .map(|(i, h)| (i, h.join().expect("node worker panicked")))
            .collect()
    })
}

pub fn field_u64(info: &Info, k: &str) -> Option<u64> {
    info.get(k).and_then(|v| v.parse().ok())
}

fn field<'a>(info: &'a Info, k: &str) -> &'a str {
    info.get(k).map(String::as_str).unwrap_or("")
}

impl Cluster {
    pub fn new(
        env: Arc<dyn Env>,
        extra: Vec<(String, String)>,
        auth: Option<Auth>,
        stop: Arc<AtomicBool>,
    ) -> Cluster {
        let n = env.len();
        Cluster {
            env,
            extra,
            auth,
            procs: Mutex::new(vec![Proc::default(); n]),
            locks: (0..n).map(|_| Mutex::new(())).collect(),
            samples: Mutex::new(vec![None; n]),
            stop,
        }
    }

    pub fn len(&self) -> usize {
        self.env.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn name(&self, i: usize) -> String {
        self.env.name(i)
    }

    pub fn names(&self, set: &[usize]) -> String {
        let v: Vec<String> = set.iter().map(|&i| self.name(i)).collect();
        format!("[{}]", v.join(" "))
    }

    pub fn addr(&self, i: usize) -> String {
        self.env.addr(i)
    }

    pub fn proc(&self, i: usize) -> Proc {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    fn set_proc(&self, i: usize, f: impl FnOnce(&mut Proc)) {
        f(&mut self.procs.lock().unwrap_or_else(|e| e.into_inner())[i]);
    }

    /// Runs a command on node `i` (one connection, `timeout` for the reply).
    pub fn cmd(&self, i: usize, args: &[&str], timeout: Duration) -> Result<Reply, String> {
        client::command(&self.addr(i), args, timeout, self.auth.as_ref())
    }

    /// With `auth`: checks that node `i` refuses a connection that did not
    /// authenticate (`-NOAUTH` to PING): a line for the notes, or why not.
    pub fn refuses_unauthenticated(&self, i: usize) -> Result<String, String> {
        match client::command(&self.addr(i), &["PING"], Duration::from_secs(5), None) {
            Ok(Reply::Error(e)) if e.starts_with("NOAUTH") => Ok(format!(
                "{} refused an unauthenticated PING: -{}",
                self.name(i),
                client::first_line(&e)
            )),
            other => Err(format!(
                "{}: an unauthenticated PING got {other:?}, not -NOAUTH: requirepass is not in effect",
                self.name(i)
            )),
        }
    }

    /// INFO raft of node `i`, asked now.
    pub fn info(&self, i: usize, timeout: Duration) -> Result<Info, String> {
        match self.cmd(i, &["INFO", "raft"], timeout)? {
            Reply::Bulk(Some(b)) => Ok(client::parse_info(&String::from_utf8_lossy(&b))),
            other => Err(format!("INFO raft: unexpected reply {other:?}")),
        }
    }

    fn pidfile(&self, i: usize) -> String {
        format!("{}/redis.pid", self.env.data_dir(i))
    }

    /// Whether node `i`'s process runs.
    pub fn running(&self, i: usize) -> bool {
        match self.proc(i).pid {
            Some(pid) => self.env.alive(i, pid),
            None => false,
        }
    }

    /// Starts node `i` unless it runs; waits until it answers PING.
    pub fn start(&self, i: usize) -> Result<(), String> {
        let _g = self.locks[i].lock().unwrap_or_else(|e| e.into_inner());
        self.start_locked(i)
    }

    fn start_locked(&self, i: usize) -> Result<(), String> {
        if self.running(i) {
            return Ok(());
        }
        let env = &self.env;
        let d = env.data_dir(i);
        let port = env.port(i).to_string();
        let server = crate::env::server_bin();
        let mut argv: Vec<String> = [
            server.as_str(),
            "--port",
            &port,
            "--bind",
            &env.ip(i),
            "--dir",
            &d,
            "--dbfilename",
            "raft.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            &self.pidfile(i),
            "--logfile",
            &format!("{d}/redis.log"),
            "--loadmodule",
            &env.module(),
            "--raft.addr",
            &self.addr(i),
            "--raft.log-filename",
            "raftlog.db",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(a) = &self.auth {
            argv.extend(a.server_args());
        }
        for (k, v) in &self.extra {
            argv.push(format!("--{k}"));
            argv.push(v.clone());
        }
        env.sh(i, &format!("mkdir -p {d} && rm -f {}", self.pidfile(i)))?;
        let out = env
            .exec(i, &argv)
            .map_err(|e| format!("{}: redis-server: {e}", self.name(i)))?;
        if !out.status.success() {
            return Err(format!(
                "{}: redis-server exited with {}: {} (see {d}/redis.log)",
                self.name(i),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Wait for the pid file and a PONG.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut pid = None;
        let mut last = String::from("no pid file");
        while Instant::now() < deadline {
            if pid.is_none() {
                if let Ok(s) = env.sh(i, &format!("cat {}", self.pidfile(i))) {
                    if let Ok(p) = s.trim().parse::<u32>() {
                        env.track(i, p);
                        self.set_proc(i, |pr| {
                            pr.pid = Some(p);
                            pr.paused = false;
                        });
                        pid = Some(p);
                    }
                }
            }
            if let Some(p) = pid {
                if !env.alive(i, p) {
                    return Err(format!(
                        "{}: redis-server exited at start (see {d}/redis.log)",
                        self.name(i)
                    ));
                }
                match self.cmd(i, &["PING"], Duration::from_millis(500)) {
                    Ok(Reply::Simple(s)) if s == "PONG" => return Ok(()),
                    Ok(other) => last = format!("PING: {other:?}"),
                    Err(e) => last = e,
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{}: redis-server did not answer within 20 s: {} (see {d}/redis.log)",
            self.name(i),
            client::first_line(&last)
        ))
    }

    /// kill -9 of node `i` (also when paused); waits until it is gone.
    pub fn kill(&self, i: usize) -> Result<(), String> {
        let _g = self.locks[i].lock().unwrap_or_else(|e| e.into_inner());
        self.kill_locked(i)
    }

    fn kill_locked(&self, i: usize) -> Result<(), String> {
        let Some(pid) = self.proc(i).pid else {
            return Ok(());
        };
        if self.env.alive(i, pid) {
            self.env.signal(i, pid, Sig::Kill)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.env.alive(i, pid) {
            if Instant::now() > deadline {
                return Err(format!("{}: pid {pid} survived kill -9", self.name(i)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.set_proc(i, |p| p.paused = false);
        Ok(())
    }

    /// SIGSTOP of node `i`: returns the pid to resume.
    pub fn pause(&self, i: usize) -> Result<u32, String> {
        let _g = self.locks[i].lock().unwrap_or_else(|e| e.into_inner());
        let pid = self
            .proc(i)
            .pid
            .ok_or_else(|| format!("{}: not started", self.name(i)))?;
        self.env.signal(i, pid, Sig::Stop)?;
        self.set_proc(i, |p| p.paused = true);
        Ok(pid)
    }

    /// SIGCONT of a pid paused earlier (if node `i` still runs it).
    pub fn resume(&self, i: usize, pid: u32) {
        let _g = self.locks[i].lock().unwrap_or_else(|e| e.into_inner());
        if self.env.alive(i, pid) {
            let _ = self.env.signal(i, pid, Sig::Cont);
        }
        self.set_proc(i, |p| {
            if p.pid == Some(pid) {
                p.paused = false;
            }
        });
    }

    /// Resumes node `i` whatever paused it.
    pub fn resume_any(&self, i: usize) {
        if let Some(pid) = self.proc(i).pid {
            self.resume(i, pid);
        }
    }

    /// Kills node `i`, removes its Raft log and dataset (the Redis log
    /// stays) and starts it again, empty: it then needs a JOIN.
    pub fn wipe_and_start(&self, i: usize) -> Result<(), String> {
        let _g = self.locks[i].lock().unwrap_or_else(|e| e.into_inner());
        self.kill_locked(i)?;
        let d = self.env.data_dir(i);
        self.env
            .sh(i, &format!("rm -rf {d}/raftlog.db {d}/raft.rdb"))?;
        self.start_locked(i)
    }

    /// RAFT.CLUSTER JOIN of node `i` through the other nodes; waits for
    /// +OK (a voting member) up to `timeout`.
    pub fn join(&self, i: usize, timeout: Duration) -> Result<(), String> {
        let mut args: Vec<String> = vec!["RAFT.CLUSTER".into(), "JOIN".into()];
        for j in 0..self.len() {
            if j != i {
                args.push(self.addr(j));
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match self.cmd(i, &refs, left + Duration::from_secs(5)) {
                Ok(Reply::Simple(s)) if s.starts_with("OK") => return Ok(()),
                Ok(Reply::Error(e)) if e.contains("Already cluster member") => return Ok(()),
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "{}: RAFT.CLUSTER JOIN failed: {last}",
            self.name(i)
        ))
    }

    /// Starts every node and forms the cluster: INIT on n1, JOIN on the
    /// others (each retried for up to 30 s).
    pub fn form(&self) -> Result<(), String> {
        for i in 0..self.len() {
            self.start(i)?;
        }
        match self.cmd(0, &["RAFT.CLUSTER", "INIT"], Duration::from_secs(10))? {
            Reply::Simple(s) if s.starts_with("OK") => {}
            other => return Err(format!("n1: RAFT.CLUSTER INIT: {other:?}")),
        }
        for i in 1..self.len() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let args = ["RAFT.CLUSTER", "JOIN", &self.addr(0)];
                let last = match self.cmd(i, &args, Duration::from_secs(35)) {
                    Ok(Reply::Simple(s)) if s.starts_with("OK") => break,
                    Ok(other) => format!("{other:?}"),
                    Err(e) => e,
                };
                if Instant::now() > deadline || self.stop.load(Ordering::Relaxed) {
                    return Err(format!(
                        "{}: RAFT.CLUSTER JOIN {}: {last}",
                        self.name(i),
                        self.addr(0)
                    ));
                }
                thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(())
    }

    // ----- the monitor -----

    /// Starts one INFO poller per node (every ~100 ms) until `until` is set.
    pub fn start_monitor(self: &Arc<Self>, until: Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
        (0..self.len())
            .map(|i| {
                let c = Arc::clone(self);
                let until = Arc::clone(&until);
                thread::spawn(move || {
                    let mut conn: Option<client::Conn> = None;
                    while !until.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let info = c.poll_info(i, &mut conn);
                        c.samples.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(Sample {
                            at: Instant::now(),
                            info,
                        });
                        let spent = t0.elapsed();
                        if spent < Duration::from_millis(100) {
                            thread::sleep(Duration::from_millis(100) - spent);
                        }
                    }
                })
            })
            .collect()
    }

    fn poll_info(&self, i: usize, conn: &mut Option<client::Conn>) -> Option<Info> {
        if conn.is_none() {
            *conn = client::Conn::connect(
                &self.addr(i),
                Duration::from_millis(300),
                Duration::from_millis(500),
                self.auth.as_ref(),
            )
            .ok();
        }
        let c = conn.as_mut()?;
        match c.call(&["INFO", "raft"]) {
            Ok(Reply::Bulk(Some(b))) => Some(client::parse_info(&String::from_utf8_lossy(&b))),
            _ => {
                *conn = None;
                None
            }
        }
    }

    /// The latest INFO of node `i`, if fresh (under a second old).
    pub fn sampled(&self, i: usize) -> Option<Info> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match &s[i] {
            Some(Sample {
                at,
                info: Some(info),
            }) if at.elapsed() < Duration::from_secs(1) => Some(info.clone()),
            _ => None,
        }
    }

    fn all_sampled(&self) -> Vec<Option<Info>> {
        (0..self.len()).map(|i| self.sampled(i)).collect()
    }

    /// The node that leads with a majority of the voting nodes agreeing,
    /// from the monitor's latest samples.
    pub fn leader(&self) -> Option<usize> {
        leader_of(&self.all_sampled())
    }

    /// The Raft node id of node `i`, from its latest sample.
    pub fn node_id(&self, i: usize) -> Option<u64> {
        self.sampled(i)
            .and_then(|s| field_u64(&s, "raft_node_id"))
            .filter(|id| *id > 0)
    }

    /// Whether every node is up, a voter, and follows one leader.
    pub fn converged(&self) -> bool {
        let all = self.all_sampled();
        let Some(l) = leader_of(&all) else {
            return false;
        };
        let lid = field(all[l].as_ref().expect("leader sampled"), "raft_node_id").to_string();
        all.iter().all(|s| match s {
            Some(s) => field(s, "raft_state") == "up" && field(s, "raft_leader_id") == lid,
            None => false,
        })
    }

    /// Counts leaderless time (sampled every 100 ms) until `until` is set.
    pub fn start_leader_watch(
        self: &Arc<Self>,
        until: Arc<AtomicBool>,
        leaderless_ns: Arc<AtomicU64>,
    ) -> thread::JoinHandle<()> {
        let c = Arc::clone(self);
        thread::spawn(move || {
            let mut last = Instant::now();
            while !until.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
                let now = Instant::now();
                if c.leader().is_none() {
                    leaderless_ns.fetch_add((now - last).as_nanos() as u64, Ordering::Relaxed);
                }
                last = now;
            }
        })
    }

    /// Waits until `converged()`, up to `timeout`; the time it took.
    pub fn wait_converged(&self, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.converged() {
                return Some(t0.elapsed());
            }
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Undoes every fault: flushes the firewall rules, resumes paused nodes,
    /// starts dead ones. Returns problems met.
    pub fn heal_all(&self) -> Vec<String> {
        let all: Vec<usize> = (0..self.len()).collect();
        let mut problems = Vec::new();
        if self.env.can_partition().is_ok() {
            for (i, r) in par(&all, |i| self.env.block(i, &[])) {
                if let Err(e) = r {
                    problems.push(format!("heal {}: {e}", self.name(i)));
                }
            }
        }
        let restarted = par(&all, |i| {
            self.resume_any(i);
            if self.running(i) {
                Ok(())
            } else {
                self.start(i)
            }
        });
        for (i, r) in restarted {
            if let Err(e) = r {
                problems.push(format!("restart {}: {e}", self.name(i)));
            }
        }
        problems
    }

    /// Nodes no longer members (removed, or wiped and never joined): rejoins
    /// them (wiping removed ones first). Returns problems met.
    pub fn rejoin_strays(&self, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        for i in 0..self.len() {
            let Ok(info) = self.info(i, Duration::from_secs(2)) else {
                continue;
            };
            let state = field(&info, "raft_state").to_string();
            let r = match state.as_str() {
                "removed" => self.wipe_and_start(i).and_then(|_| self.join(i, timeout)),
                "uninitialized" => self.join(i, timeout),
                _ => Ok(()),
            };
            if let Err(e) = r {
                problems.push(e);
            }
        }
        problems
    }

    /// Waits until every node has applied the leader's commit index, then
    /// compares `DEBUG DIGEST` (values and stored expiry times) of every
    /// node. The applied indexes are read before and after the digests, so
    /// that all digests belong to one index; when they moved (the leader's
    /// expiry cycle may still propose deletions) it tries again, every 200
    /// ms up to `timeout`. Differing digests at one index three times in a
    /// row are a difference.
    pub fn compare_digests(&self, timeout: Duration) -> Digests {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no leader");
        let mut mismatches = 0;
        while Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(200));
            let infos: Vec<Option<Info>> = (0..self.len())
                .map(|i| self.info(i, Duration::from_secs(2)).ok())
                .collect();
            let Some(l) = leader_of(&infos) else {
                last = "no leader".into();
                continue;
            };
            let commit =
                field_u64(infos[l].as_ref().expect("leader"), "raft_commit_index").unwrap_or(0);
            let lagging: Vec<String> = (0..self.len())
                .filter(|&i| match &infos[i] {
                    Some(s) => field_u64(s, "raft_last_applied_index") != Some(commit),
                    None => true,
                })
                .map(|i| self.name(i))
                .collect();
            if !lagging.is_empty() {
                last = format!("nodes {lagging:?} had not applied index {commit}");
                continue;
            }
            let mut digests = Vec::new();
            for i in 0..self.len() {
                // DEBUG DIGEST plus consumer groups and the script cache.
                match self.cmd(i, &["RAFT.DEBUG", "DIGEST"], Duration::from_secs(5)) {
                    Ok(r) => match r.text() {
                        Some(d) => digests.push(d),
                        None => {
                            last = format!("{}: RAFT.DEBUG DIGEST: {r:?}", self.name(i));
                            break;
                        }
                    },
                    Err(e) => {
                        last = format!("{}: RAFT.DEBUG DIGEST: {e}", self.name(i));
                        break;
                    }
                }
            }
            if digests.len() != self.len() {
                continue;
            }
            // Still at the same index everywhere? (Else compare again.)
            let again: Vec<Option<u64>> = (0..self.len())
                .map(|i| {
                    self.info(i, Duration::from_secs(2))
                        .ok()
                        .and_then(|s| field_u64(&s, "raft_last_applied_index"))
                })
                .collect();
            if again.iter().any(|a| *a != Some(commit)) {
                last = "the applied index moved while comparing".into();
                continue;
            }
            let per: Vec<(String, String)> =
                (0..self.len()).map(|i| self.name(i)).zip(digests).collect();
            match Digests::of(commit, per) {
                d @ Digests::Equal { .. } => return d,
                d => {
                    mismatches += 1;
                    if mismatches >= 3 {
                        return d;
                    }
                    last = d.line();
                }
            }
        }
        Digests::Unchecked(format!(
            "no comparison within {} s: {last}",
            timeout.as_secs()
        ))
    }
}

/// The final comparison of the nodes' datasets (`RAFT.DEBUG DIGEST`:
/// `DEBUG DIGEST` plus consumer groups and the script cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digests {
    /// Every node has this digest at this applied index.
    Equal {
        nodes: usize,
        index: u64,
        digest: String,
    },
    /// At this applied index the nodes' digests differ.
    Differ {
        index: u64,
        per_node: Vec<(String, String)>,
    },
    /// Not compared, and why.
    Unchecked(String),
}

impl Digests {
    /// Equal or Differ from each node's digest at `index`.
    pub fn of(index: u64, per_node: Vec<(String, String)>) -> Digests {
        match per_node.first() {
            Some((_, d0)) if per_node.iter().all(|(_, d)| d == d0) => Digests::Equal {
                nodes: per_node.len(),
                index,
                digest: d0.clone(),
            },
            _ => Digests::Differ { index, per_node },
        }
    }

    /// One line for the report: `equal (5 nodes at index 1234, <digest>)`,
    /// `differ at index 1234: n1=<digest> ...`, `not compared: <why>`.
    pub fn line(&self) -> String {
        match self {
            Digests::Equal {
                nodes,
                index,
                digest,
            } => format!("equal ({nodes} nodes at index {index}, {digest})"),
            Digests::Differ { index, per_node } => {
                let per: Vec<String> = per_node.iter().map(|(n, d)| format!("{n}={d}")).collect();
                format!("differ at index {index}: {}", per.join(" "))
            }
            Digests::Unchecked(why) => format!("not compared: {why}"),
        }
    }

    /// The `digests` cell of result.tsv: `equal@1234`, `DIFFER@1234`,
    /// `unchecked`.
    pub fn cell(&self) -> String {
        match self {
            Digests::Equal { index, .. } => format!("equal@{index}"),
            Digests::Differ { index, .. } => format!("DIFFER@{index}"),
            Digests::Unchecked(_) => "unchecked".into(),
        }
    }
}

/// The node that leads with a majority of the voting nodes agreeing (as
/// followers, not campaigning). A leader cut off from the others still
/// counts until they time out: the monitor cannot see more.
pub fn leader_of(infos: &[Option<Info>]) -> Option<usize> {
    for (i, s) in infos.iter().enumerate() {
        let Some(s) = s else { continue };
        if field(s, "raft_role") != "leader" || field(s, "raft_state") != "up" {
            continue;
        }
        let id = field(s, "raft_node_id");
        let voters = field_u64(s, "raft_num_voting_nodes").unwrap_or(0) as usize;
        let agree = infos
            .iter()
            .flatten()
            .filter(|o| {
                // A node that timed out and campaigns follows no one, even
                // if it still names its old leader.
                field(o, "raft_leader_id") == id
                    && field(o, "raft_state") == "up"
                    && matches!(field(o, "raft_role"), "leader" | "follower")
            })
            .count();
        if voters > 0 && agree > voters / 2 {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, role: &str, leader: i64, voters: u64) -> Option<Info> {
        let mut m = Info::new();
        m.insert("raft_node_id".into(), id.to_string());
        m.insert("raft_role".into(), role.into());
        m.insert("raft_state".into(), "up".into());
        m.insert("raft_leader_id".into(), leader.to_string());
        m.insert("raft_num_voting_nodes".into(), voters.to_string());
        Some(m)
    }

    #[test]
    fn digests_equal_or_differ() {
        let per = |ds: &[&str]| -> Vec<(String, String)> {
            ds.iter()
                .enumerate()
                .map(|(i, d)| (format!("n{}", i + 1), d.to_string()))
                .collect()
        };
        let eq = Digests::of(7, per(&["ab", "ab", "ab"]));
        assert_eq!(eq.line(), "equal (3 nodes at index 7, ab)");
        assert_eq!(eq.cell(), "equal@7");
        let ne = Digests::of(7, per(&["ab", "ab", "cd"]));
        assert_eq!(ne.line(), "differ at index 7: n1=ab n2=ab n3=cd");
        assert_eq!(ne.cell(), "DIFFER@7");
        assert_eq!(Digests::Unchecked("x".into()).cell(), "unchecked");
    }

    #[test]
    fn leader_needs_a_majority() {
        let v = vec![info(1, "leader", 1, 3), info(2, "follower", 1, 3), None];
        assert_eq!(leader_of(&v), Some(0));
        let v = vec![info(1, "leader", 1, 3), info(2, "follower", -1, 3), None];
        assert_eq!(leader_of(&v), None);
        // A stale leader cut off while the others elected a new one.
        let v = vec![
            info(1, "leader", 1, 3),
            info(2, "leader", 2, 3),
            info(3, "follower", 2, 3),
        ];
        assert_eq!(leader_of(&v), Some(1));
        // The others campaign: nobody leads.
        let v = vec![
            info(1, "leader", 1, 3),
            info(2, "pre-candidate", 1, 3),
            info(3, "candidate", 1, 3),
        ];
        assert_eq!(leader_of(&v), None);
    }
}
