//! One test run: set up the environment and the cluster, run the workload's
//! processes and the nemesis for the time limit, heal, do the final reads,
//! compare the nodes, check the history and write the report. Everything
//! the run started is stopped at the end, also on error, panic, SIGINT or
//! SIGTERM (a Drop guard; `cleanup` removes what a killed runner left).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Anomaly, Outcome, Validity};
use crate::client::{Auth, Directory, NodeClient};
use crate::cluster::{sleep_unless, Cluster, Digests};
use crate::env::{Env, LoopbackEnv, SshEnv};
use crate::history::{self, Edn, Op, OpType};
use crate::nemesis::{self, Nemesis};
use crate::netns::NetnsEnv;
use crate::report::{self, RunInfo};
use crate::workload::{self, Workload};

/// What `run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub workload: String,
    pub nemesis: String,
    pub nodes: usize,
    pub time_limit_s: u64,
    pub concurrency: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub module: Option<PathBuf>,
    /// "local", "local-loopback", "docker"; None: local if it works.
    pub env: Option<String>,
    pub hosts: Vec<String>,
    /// Extra load options for every node: ("raft.x", "y").
    pub config: Vec<(String, String)>,
    /// Seconds between nemesis steps: random in [lo, hi].
    pub fault_interval: (f64, f64),
    /// Target operations per second over all processes.
    pub rate: f64,
    /// Seconds a client waits for a reply.
    pub op_timeout_s: f64,
    /// Keep the nodes' data directories (local envs).
    pub keep_data: bool,
    /// The ttl checker's clock tolerance, in ms.
    pub ttl_tolerance_ms: u64,
    /// Test knob: before the final comparison, write a key on this node
    /// alone (`RAFT.DEBUG EXEC SET`), so that the digests must differ.
    pub test_diverge: Option<String>,
    /// Nodes with `requirepass` and `raft.cluster-password` (and a named
    /// cluster user); every connection of the run authenticates.
    pub auth: Option<Auth>,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            workload: "list-append".into(),
            nemesis: "none".into(),
            nodes: 5,
            time_limit_s: 60,
            concurrency: 10,
            seed: 0,
            out: PathBuf::from("store/latest"),
            module: None,
            env: None,
            hosts: Vec::new(),
            config: Vec::new(),
            fault_interval: (1.0, 3.0),
            rate: 200.0,
            op_timeout_s: 3.0,
            keep_data: false,
            ttl_tolerance_ms: checker::ttl::DEFAULT_TOLERANCE_MS,
            test_diverge: None,
            auth: None,
        }
    }
}

/// println! that ignores a closed stdout.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

// ----- signals -----

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_signal(_sig: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the run early, through the normal teardown.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        signal(2, on_signal);
        signal(15, on_signal);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

// ----- the history -----

/// Records the history: indexes in order, times since `origin`.
pub struct Recorder {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
    max_process: AtomicU64,
}

impl Recorder {
    pub fn new(origin: Instant) -> Recorder {
        Recorder {
            origin,
            ops: Mutex::new(Vec::new()),
            max_process: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn push(
        &self,
        typ: OpType,
        f: &str,
        value: Edn,
        process: u64,
        node: Option<String>,
        error: Option<String>,
    ) {
        self.max_process.fetch_max(process, Ordering::Relaxed);
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let index = ops.len() as u64;
        let time = self.now_ns();
        ops.push(Op {
            index,
            typ,
            f: f.to_string(),
            value,
            process,
            time,
            node,
            error,
        });
    }

    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Runs one operation for `process` and records both ends.
fn perform(
    rec: &Recorder,
    wl: &dyn Workload,
    client: &mut NodeClient,
    process: u64,
    f: &str,
    value: Edn,
) -> workload::Completion {
    rec.push(OpType::Invoke, f, value.clone(), process, None, None);
    let c = wl.invoke(client, process, f, &value);
    rec.push(
        c.typ,
        f,
        c.value.clone(),
        process,
        Some(client.node_name()),
        c.error.clone(),
    );
    c
}

// ----- the teardown guard -----

struct Guard {
    env: Arc<dyn Env>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.env.teardown();
    }
}

// ----- environment and module -----

/// The module to load: --module, $REDISRAFT_MODULE, ./redisraft.so,
/// release/libredisraft.so in this binary's target directory, or
/// ./target/release/libredisraft.so.
pub fn find_module(given: Option<&Path>) -> Result<PathBuf, String> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(g) = given {
        cands.push(g.to_path_buf());
    } else {
        if let Ok(p) = std::env::var("REDISRAFT_MODULE") {
            cands.push(p.into());
        }
        cands.push("redisraft.so".into());
        // The module built with this runner (same target directory) first.
        if let Ok(exe) = std::env::current_exe() {
            if let Some(target) = exe.parent().and_then(Path::parent) {
                cands.push(target.join("release/libredisraft.so"));
            }
        }
        cands.push("target/release/libredisraft.so".into());
    }
    for c in &cands {
        if c.is_file() {
            return c
                .canonicalize()
                .map_err(|e| format!("{}: {e}", c.display()));
        }
    }
    match given {
        Some(g) => Err(format!("module {} not found", g.display())),
        None => Err("module not found: pass --module PATH (build it with `cargo build --release -p redisraft`)".into()),
    }
}

fn make_env(o: &RunOpts, notes: &mut Vec<String>) -> Result<Arc<dyn Env>, String> {
    let kind = match o.env.as_deref() {
        Some(k) => k.to_string(),
        None => match NetnsEnv::available() {
            Ok(()) => "local".into(),
            Err(e) => {
                notes.push(format!("env local-loopback: {e}"));
                "local-loopback".into()
            }
        },
    };
    match kind.as_str() {
        "local" => {
            NetnsEnv::available()?;
            let m = find_module(o.module.as_deref())?;
            Ok(Arc::new(NetnsEnv::new(
                o.nodes,
                m.to_string_lossy().into_owned(),
                o.keep_data,
            )))
        }
        "local-loopback" => {
            let m = find_module(o.module.as_deref())?;
            Ok(Arc::new(LoopbackEnv::new(
                o.nodes,
                m.to_string_lossy().into_owned(),
                o.keep_data,
            )?))
        }
        "docker" => {
            let mut hosts = if o.hosts.is_empty() {
                (1..=o.nodes).map(|i| format!("n{i}")).collect()
            } else {
                o.hosts.clone()
            };
            if hosts.len() < o.nodes {
                return Err(format!(
                    "--nodes {} but only {} hosts",
                    o.nodes,
                    hosts.len()
                ));
            }
            hosts.truncate(o.nodes);
            let module = o.module.as_ref().map(|p| p.to_string_lossy().into_owned());
            Ok(Arc::new(SshEnv::new(hosts, module)?))
        }
        other => Err(format!(
            "unknown --env '{other}' (local, local-loopback, docker)"
        )),
    }
}

// ----- the run -----

/// Runs a test; returns the process exit code (0 valid, 1 anomaly or no
/// operation succeeded, 2 setup failure or usage error, 130 interrupted).
pub fn run(o: &RunOpts) -> i32 {
    install_signal_handlers();
    if workload::make(&o.workload, 0).is_none() {
        eprintln!(
            "redisraft-jepsen: unknown workload '{}' (known: {})",
            o.workload,
            workload::NAMES.join(", ")
        );
        return 2;
    }
    if o.nodes == 0 || o.concurrency == 0 {
        eprintln!("redisraft-jepsen: --nodes and --concurrency must be at least 1");
        return 2;
    }
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("redisraft-jepsen: setup failed: {}: {e}", o.out.display());
        return 2;
    }
    let mut notes = Vec::new();
    let env = match make_env(o, &mut notes) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("redisraft-jepsen: setup failed: {e}");
            return 2;
        }
    };
    let kinds = match nemesis::parse_list(&o.nemesis, env.can_partition()) {
        Ok((k, n)) => {
            notes.extend(n);
            k
        }
        Err(e) => {
            eprintln!("redisraft-jepsen: setup failed: {e}");
            return 2;
        }
    };
    let guard = Guard {
        env: Arc::clone(&env),
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_with(o, &env, kinds, notes)
    }));
    let code = match r {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("redisraft-jepsen: setup failed: {e}");
            copy_logs(&*env, &o.out);
            eprintln!("(node logs in {})", o.out.display());
            2
        }
        Err(_) => {
            eprintln!("redisraft-jepsen: the runner panicked; cleaning up");
            copy_logs(&*env, &o.out);
            2
        }
    };
    drop(guard);
    code
}

fn copy_logs(env: &dyn Env, out: &Path) {
    for i in 0..env.len() {
        let d = out.join(env.name(i));
        if std::fs::create_dir_all(&d).is_ok() {
            let remote = format!("{}/redis.log", env.data_dir(i));
            if let Err(e) = env.fetch(i, &remote, &d.join("redis.log")) {
                eprintln!("copying the log of {}: {e}", env.name(i));
            }
        }
    }
}

fn log(origin: Option<Instant>, msg: &str) {
    match origin {
        Some(o) => eprintln!("[{:7.1}s] {msg}", o.elapsed().as_secs_f64()),
        None => eprintln!("[  setup ] {msg}"),
    }
}

fn run_with(
    o: &RunOpts,
    env: &Arc<dyn Env>,
    kinds: Vec<nemesis::Kind>,
    mut notes: Vec<String>,
) -> Result<i32, String> {
    let n = env.len();
    log(None, &format!("env {}: setting up {n} nodes", env.kind()));
    env.setup()?;
    let addrs: Vec<String> = (0..n)
        .map(|i| format!("{}={}", env.name(i), env.addr(i)))
        .collect();
    notes.insert(
        0,
        format!(
            "env {}: {}; server {}; module {}{}",
            env.kind(),
            addrs.join(" "),
            crate::env::server_bin(),
            env.module(),
            if o.config.is_empty() {
                String::new()
            } else {
                let c: Vec<String> = o.config.iter().map(|(k, v)| format!("--{k} {v}")).collect();
                format!("; extra options {}", c.join(" "))
            }
        ),
    );
    if let Some(a) = &o.auth {
        notes.insert(
            1,
            format!(
                "auth: requirepass and raft.cluster-password set; every connection authenticates as {}",
                match &a.user {
                    Some(u) => format!("ACL user {u} (also raft.cluster-user)"),
                    None => "default".into(),
                }
            ),
        );
    }
    let stop_all = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(Cluster::new(
        Arc::clone(env),
        o.config.clone(),
        o.auth.clone(),
        Arc::clone(&stop_all),
    ));

    // Signals set the flags the loops watch.
    let run_stop = Arc::new(AtomicBool::new(false));
    let watcher_done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop_all, run_stop, done) = (
            Arc::clone(&stop_all),
            Arc::clone(&run_stop),
            Arc::clone(&watcher_done),
        );
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if interrupted() {
                    run_stop.store(true, Ordering::SeqCst);
                    stop_all.store(true, Ordering::SeqCst);
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let result = run_cluster(o, &cluster, kinds, &mut notes, &run_stop);
    watcher_done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    result
}

fn run_cluster(
    o: &RunOpts,
    cluster: &Arc<Cluster>,
    kinds: Vec<nemesis::Kind>,
    notes: &mut Vec<String>,
    run_stop: &Arc<AtomicBool>,
) -> Result<i32, String> {
    let n = cluster.len();
    log(None, "starting the nodes and forming the cluster");
    cluster.form()?;
    if cluster.auth.is_some() {
        notes.push(cluster.refuses_unauthenticated(0)?);
    }
    let monitor_stop = Arc::new(AtomicBool::new(false));
    let monitors = cluster.start_monitor(Arc::clone(&monitor_stop));
    let stop_monitors = |monitors: Vec<thread::JoinHandle<()>>| {
        monitor_stop.store(true, Ordering::Relaxed);
        for m in monitors {
            let _ = m.join();
        }
    };
    if cluster.wait_converged(Duration::from_secs(30)).is_none() {
        stop_monitors(monitors);
        return Err(if interrupted() {
            "interrupted".into()
        } else {
            "the cluster did not elect a leader followed by every node within 30 s of forming"
                .into()
        });
    }
    let leader = cluster
        .leader()
        .map(|l| cluster.name(l))
        .unwrap_or_default();
    log(None, &format!("cluster formed: {n} nodes, leader {leader}"));

    let dir = Arc::new(Directory {
        names: (0..n).map(|i| cluster.name(i)).collect(),
        addrs: (0..n).map(|i| cluster.addr(i)).collect(),
        connect_timeout: Duration::from_secs(1),
        op_timeout: Duration::from_secs_f64(o.op_timeout_s),
        auth: o.auth.clone(),
    });
    let wl: Arc<dyn Workload> =
        Arc::from(workload::make(&o.workload, o.seed).expect("workload checked"));

    workload_setup(&*wl, &dir, cluster, Duration::from_secs(30))?;

    let origin = Instant::now();
    let rec = Arc::new(Recorder::new(origin));
    let leaderless = Arc::new(AtomicU64::new(0));
    let watch = cluster.start_leader_watch(Arc::clone(&monitor_stop), Arc::clone(&leaderless));

    let kinds_used = kinds.clone();
    log(
        Some(origin),
        &format!(
            "{} for {} s, {} processes, nemesis {}",
            o.workload,
            o.time_limit_s,
            o.concurrency,
            kind_names(&kinds)
        ),
    );
    let workers: Vec<thread::JoinHandle<()>> = (0..o.concurrency)
        .map(|t| {
            let (rec, wl, dir, stop) = (
                Arc::clone(&rec),
                Arc::clone(&wl),
                Arc::clone(&dir),
                Arc::clone(run_stop),
            );
            let (seed, conc, rate) = (o.seed, o.concurrency, o.rate);
            thread::spawn(move || worker(t, conc, seed, rate, &rec, &*wl, dir, &stop))
        })
        .collect();
    let nem = {
        let mut nem = Nemesis::new(Arc::clone(cluster), kinds, o.seed, o.fault_interval, origin);
        let stop = Arc::clone(run_stop);
        thread::spawn(move || {
            nem.run(&stop);
            nem
        })
    };

    sleep_unless(run_stop, Duration::from_secs(o.time_limit_s));
    run_stop.store(true, Ordering::SeqCst);
    log(
        Some(origin),
        "time limit reached: stopping the processes and the nemesis",
    );
    for w in workers {
        let _ = w.join();
    }
    let (faults, nem_notes) = match nem.join() {
        Ok(nem) => (nem.windows, nem.notes),
        Err(_) => (Vec::new(), vec!["the nemesis thread panicked".to_string()]),
    };
    notes.extend(nem_notes);

    // Heal everything.
    log(Some(origin), "healing: network, paused and dead nodes");
    for p in cluster.heal_all() {
        notes.push(p);
    }
    let heal_ns = rec.now_ns();
    let strays = cluster.rejoin_strays(Duration::from_secs(60));
    notes.extend(strays);

    let mut extra_anomalies: Vec<Anomaly> = Vec::new();
    let mut nodes_equal = None;
    let mut digests: Option<Digests> = None;
    if interrupted() {
        notes.push("interrupted: no final reads nor node comparison".into());
    } else {
        log(Some(origin), "final reads");
        let ok = final_reads(&rec, &*wl, &dir, cluster, Duration::from_secs(60));
        if !ok {
            extra_anomalies.push(Anomaly {
                kind: "no-recovery".into(),
                detail: "the final reads did not all succeed within 60 s of healing every fault"
                    .into(),
                ops: Vec::new(),
            });
        }
        match cluster.wait_converged(Duration::from_secs(60)) {
            Some(_) => notes.push(format!(
                "all nodes up and following one leader {:.1} s after the final heal",
                rec.now_ns().saturating_sub(heal_ns) as f64 / 1e9
            )),
            None => {
                let states: Vec<String> = (0..n)
                    .map(|i| {
                        let s = cluster.sampled(i);
                        format!(
                            "{}:{}/{}",
                            cluster.name(i),
                            s.as_ref()
                                .and_then(|s| s.get("raft_state").cloned())
                                .unwrap_or_else(|| "?".into()),
                            s.as_ref()
                                .and_then(|s| s.get("raft_role").cloned())
                                .unwrap_or_else(|| "?".into())
                        )
                    })
                    .collect();
                extra_anomalies.push(Anomaly {
                    kind: "not-converged".into(),
                    detail: format!(
                        "60 s after the final heal not every node was up and following one leader: {}",
                        states.join(" ")
                    ),
                    ops: Vec::new(),
                });
            }
        }
        if let Some(name) = &o.test_diverge {
            match (0..n).find(|&i| cluster.name(i) == *name) {
                Some(i) => {
                    let r = cluster.cmd(
                        i,
                        &["RAFT.DEBUG", "EXEC", "SET", "jepsen:diverged", "1"],
                        Duration::from_secs(5),
                    );
                    notes.push(format!(
                        "--test-diverge: SET jepsen:diverged on {name} alone: {r:?}"
                    ));
                }
                None => notes.push(format!("--test-diverge: no node {name}")),
            }
        }
        log(
            Some(origin),
            "comparing the nodes' data (RAFT.DEBUG DIGEST)",
        );
        let d = cluster.compare_digests(Duration::from_secs(60));
        log(Some(origin), &format!("digests: {}", d.line()));
        match &d {
            Digests::Equal { .. } => nodes_equal = Some(true),
            Digests::Differ { .. } => {
                nodes_equal = Some(false);
                extra_anomalies.push(Anomaly {
                    kind: "nodes-differ".into(),
                    detail: format!("the nodes' datasets {}", d.line()),
                    ops: Vec::new(),
                });
            }
            Digests::Unchecked(why) => extra_anomalies.push(Anomaly {
                kind: "digests-unchecked".into(),
                detail: format!("the nodes' datasets could not be compared: {why}"),
                ops: Vec::new(),
            }),
        }
        digests = Some(d);
    }
    stop_monitors(monitors);
    let _ = watch.join();

    let ops = rec.take();
    // From the final heal until the first ok op after it.
    let recovery_ns = ops
        .iter()
        .find(|op| op.typ == OpType::Ok && op.time >= heal_ns)
        .map(|op| op.time - heal_ns);
    let hist_path = o.out.join("history.edn");
    history::write_history(&hist_path, &ops)
        .map_err(|e| format!("{}: {e}", hist_path.display()))?;
    log(
        Some(origin),
        &format!("checking {} history entries", ops.len()),
    );
    let copts = checker::CheckOpts {
        ttl_tolerance_ms: o.ttl_tolerance_ms,
    };
    let mut outcome = checker::check_with(&o.workload, &ops, &copts);
    if !extra_anomalies.is_empty() {
        outcome.anomalies.extend(extra_anomalies);
        outcome.validity = Validity::Invalid;
    }
    copy_logs(&*cluster.env, &o.out);

    let info = RunInfo {
        workload: o.workload.clone(),
        nemesis: o.nemesis.clone(),
        nodes: n,
        time_limit_s: o.time_limit_s,
        seed: o.seed,
        concurrency: o.concurrency,
        faults,
        leaderless_ns: leaderless.load(Ordering::Relaxed),
        recovery_ns,
        nodes_equal,
        digests: Some(
            digests
                .as_ref()
                .map_or_else(|| "not compared (interrupted)".into(), Digests::line),
        ),
        notes: notes.clone(),
    };
    match report::write_report(&o.out, &info, &ops, &outcome) {
        Ok(summary) => say!("{summary}"),
        Err(e) => {
            eprintln!("writing the report: {e}");
            print_outcome(&outcome);
        }
    }
    let oks = ops.iter().filter(|op| op.typ == OpType::Ok).count();
    say!("out: {}", o.out.display());
    let (code, verdict) = if interrupted() {
        (130, "interrupted")
    } else if outcome.validity != Validity::Valid {
        say!(
            "result: {} ({} anomalies)",
            validity_name(outcome.validity),
            outcome.anomalies.len()
        );
        (1, validity_name(outcome.validity))
    } else if oks == 0 {
        say!("result: no operation succeeded");
        (1, "no-ok-op")
    } else {
        say!("result: valid ({oks} ok ops)");
        (0, "valid")
    };
    let kinds_used = kind_names(&kinds_used);
    let digest_cell = digests.as_ref().map_or_else(|| "-".into(), Digests::cell);
    let line = result_line(
        o,
        cluster.env.kind(),
        &kinds_used,
        &ops,
        &outcome,
        verdict,
        code,
        &digest_cell,
    );
    if let Err(e) = std::fs::write(o.out.join(RESULT_FILE), line) {
        eprintln!("writing {}: {e}", RESULT_FILE);
    }
    Ok(code)
}

/// One tab-separated line per run, for tables over many runs (`make jepsen`).
pub const RESULT_FILE: &str = "result.tsv";
/// The columns of [`RESULT_FILE`] (its first line).
pub const RESULT_HEADER: &str =
    "workload\tnemesis\tenv\tnodes\tseconds\tok\tfail\tinfo\tops checked\tanomalies\tverdict\texit\tdigests";

fn kind_names(kinds: &[nemesis::Kind]) -> String {
    if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    }
}

/// The header and the line of [`RESULT_FILE`]: anomalies as `kind xN`
/// joined by commas (`-` for none); `digests` as [`Digests::cell`] (`-`
/// when not compared).
#[allow(clippy::too_many_arguments)]
pub fn result_line(
    o: &RunOpts,
    env_kind: &str,
    nemeses: &str,
    ops: &[Op],
    outcome: &Outcome,
    verdict: &str,
    code: i32,
    digests: &str,
) -> String {
    let count = |t: OpType| ops.iter().filter(|op| op.typ == t).count();
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for a in &outcome.anomalies {
        match kinds.iter_mut().find(|(k, _)| *k == a.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((&a.kind, 1)),
        }
    }
    let anomalies = if kinds.is_empty() {
        "-".to_string()
    } else {
        kinds
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{RESULT_HEADER}\n{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        o.workload,
        nemeses,
        env_kind,
        o.nodes,
        o.time_limit_s,
        count(OpType::Ok),
        count(OpType::Fail),
        count(OpType::Info),
        outcome.ops_checked,
        anomalies,
        verdict,
        code,
        digests
    )
}

pub fn validity_name(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "UNKNOWN",
    }
}

/// Prints a checker outcome (for `check`, and when the report fails).
pub fn print_outcome(o: &Outcome) {
    use std::io::Write as _;
    const MAX: usize = 50;
    let mut out = std::io::stdout().lock();
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for a in &o.anomalies {
        match kinds.iter_mut().find(|(k, _)| *k == a.kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((&a.kind, 1)),
        }
    }
    let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    // Write errors (a closed pipe) are ignored.
    let _ = writeln!(out, "validity: {}", validity_name(o.validity));
    let _ = writeln!(out, "ops checked: {}", o.ops_checked);
    if !o.counts.is_empty() {
        let _ = writeln!(out, "counts: {}", report::counts_line(&o.counts));
    }
    let _ = writeln!(
        out,
        "anomalies: {} {}",
        o.anomalies.len(),
        by_kind.join(", ")
    );
    for a in o.anomalies.iter().take(MAX) {
        let ops: Vec<String> = a.ops.iter().take(10).map(|i| i.to_string()).collect();
        let _ = writeln!(
            out,
            "anomaly {}: {} (ops {})",
            a.kind,
            a.detail,
            ops.join(" ")
        );
    }
    if o.anomalies.len() > MAX {
        let _ = writeln!(out, "... and {} more", o.anomalies.len() - MAX);
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    t: usize,
    conc: usize,
    seed: u64,
    rate: f64,
    rec: &Recorder,
    wl: &dyn Workload,
    dir: Arc<Directory>,
    stop: &AtomicBool,
) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(t as u64));
    let mut process = t as u64;
    let mut client = NodeClient::new(Arc::clone(&dir), t);
    // Each process waits a random 0..2*gap between ops: `rate` ops/s overall.
    let gap = if rate > 0.0 { conc as f64 / rate } else { 0.0 };
    while !stop.load(Ordering::Relaxed) {
        if gap > 0.0 {
            sleep_unless(stop, Duration::from_secs_f64(rng.gen_range(0.0..2.0 * gap)));
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let (f, value) = wl.next();
        let c = perform(rec, wl, &mut client, process, &f, value);
        match c.typ {
            OpType::Info => {
                // Jepsen: a process whose op is indeterminate is replaced.
                process += conc as u64;
                client = NodeClient::new(Arc::clone(&dir), process as usize);
            }
            OpType::Fail if node_trouble(c.error.as_deref().unwrap_or("")) => {
                client.rotate(&mut rng);
            }
            _ => {}
        }
    }
}

/// Whether a failed op's error may be its node's trouble (then the process
/// moves to another node): not a redirection nor a compare-and-set whose
/// old value did not match.
fn node_trouble(error: &str) -> bool {
    !(error.starts_with("MOVED") || error == workload::CAS_MISMATCH)
}

/// The workload's setup (e.g. the queue's consumer group), sent to the
/// leader and retried every 200 ms until it succeeds or `timeout` passes.
fn workload_setup(
    wl: &dyn Workload,
    dir: &Arc<Directory>,
    cluster: &Cluster,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut client = NodeClient::new(Arc::clone(dir), cluster.leader().unwrap_or(0));
        match wl.setup(&mut client) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline || interrupted() => {
                return Err(format!(
                    "the {} workload's setup failed: {}",
                    wl.name(),
                    e.text()
                ))
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The final reads, as ordinary ops of fresh processes, each retried until
/// it succeeds or `timeout` passes (an ok one may be followed by more, see
/// [`Workload::final_next`]). True if all succeeded.
fn final_reads(
    rec: &Recorder,
    wl: &dyn Workload,
    dir: &Arc<Directory>,
    cluster: &Cluster,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut process = rec.max_process.load(Ordering::Relaxed) + 1;
    let start = cluster.leader().unwrap_or(0);
    let mut client = NodeClient::new(Arc::clone(dir), start);
    let mut rng = StdRng::seed_from_u64(process);
    let mut todo: std::collections::VecDeque<(String, Edn)> = wl.final_reads().into();
    while let Some((f, value)) = todo.pop_front() {
        loop {
            let c = perform(rec, wl, &mut client, process, &f, value.clone());
            match c.typ {
                OpType::Ok => {
                    if let Some(next) = wl.final_next(&f, &c.value) {
                        todo.push_front(next);
                    }
                    break;
                }
                OpType::Info => {
                    process += 1;
                    client = NodeClient::new(Arc::clone(dir), cluster.leader().unwrap_or(0));
                }
                _ => {
                    if let Some(l) = cluster.leader() {
                        client = NodeClient::new(Arc::clone(dir), l);
                    } else {
                        client.rotate(&mut rng);
                    }
                }
            }
            if Instant::now() > deadline || interrupted() {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    true
}
