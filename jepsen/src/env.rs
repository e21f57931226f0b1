//! Where the nodes run: the `Env` trait (run a command "on" a node, signal
//! its process, cut it off from other nodes) and its `local-loopback` and
//! `docker` (ssh) implementations. The `local` one (network namespaces)
//! is in `netns`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Prefix of everything the suite creates on this machine (namespaces,
/// links, firewall rule comments, work directories), followed by the
/// runner's pid: `cleanup` finds leftovers by it.
pub const PREFIX: &str = "rrj";

/// Signals the nemeses send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Kill,
    Stop,
    Cont,
}

impl Sig {
    pub fn name(self) -> &'static str {
        match self {
            Sig::Kill => "KILL",
            Sig::Stop => "STOP",
            Sig::Cont => "CONT",
        }
    }

    /// Linux numbers (the same on x86-64 and arm64).
    pub fn number(self) -> i32 {
        match self {
            Sig::Kill => 9,
            Sig::Stop => 19,
            Sig::Cont => 18,
        }
    }
}

/// A place to run a cluster. Node `i` is named `n{i+1}`.
pub trait Env: Send + Sync {
    /// "local", "local-loopback" or "docker".
    fn kind(&self) -> &'static str;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn name(&self, i: usize) -> String {
        format!("n{}", i + 1)
    }
    /// The address clients and other nodes use.
    fn ip(&self, i: usize) -> String;
    fn port(&self, i: usize) -> u16;
    fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.ip(i), self.port(i))
    }
    /// The node's Redis `dir`, as the node sees it.
    fn data_dir(&self, i: usize) -> String;
    /// The module's path, as the node sees it.
    fn module(&self) -> String;
    /// Creates what the nodes need (namespaces, directories, ...).
    fn setup(&self) -> Result<(), String>;
    /// Stops every process the run started and removes what `setup` made.
    /// Safe to call more than once.
    fn teardown(&self);
    /// Runs a program "on" node `i`.
    fn exec(&self, i: usize, argv: &[String]) -> io::Result<Output>;
    /// Runs a shell script on node `i`: its stdout, or a one-line reason.
    fn sh(&self, i: usize, script: &str) -> Result<String, String> {
        let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
        output_text(self.exec(i, &argv), script)
    }
    /// Sends a signal to a process of node `i`.
    fn signal(&self, i: usize, pid: u32, sig: Sig) -> Result<(), String> {
        self.sh(i, &format!("kill -{} {pid}", sig.name()))
            .map(|_| ())
    }
    /// Whether the process runs (a zombie does not).
    fn alive(&self, i: usize, pid: u32) -> bool {
        self.sh(
            i,
            &format!("test -d /proc/{pid} && ! grep -q '^State:[[:space:]]*Z' /proc/{pid}/status"),
        )
        .is_ok()
    }
    /// Remembers a process started on node `i`, to stop it at teardown.
    fn track(&self, i: usize, pid: u32);
    /// Ok if this environment can cut nodes off from each other.
    fn can_partition(&self) -> Result<(), String>;
    /// Node `i` drops all packets from these addresses (replacing earlier
    /// rules); an empty list heals it.
    fn block(&self, i: usize, ips: &[String]) -> Result<(), String> {
        let mut s = String::from("iptables -w -F INPUT");
        for ip in ips {
            s.push_str(&format!(" && iptables -w -A INPUT -s {ip} -j DROP"));
        }
        self.sh(i, &s).map(|_| ())
    }
    /// Copies a file of node `i` to this machine.
    fn fetch(&self, i: usize, remote: &str, local: &Path) -> Result<(), String> {
        let out = self
            .exec(i, &["cat".to_string(), remote.to_string()])
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "cat {remote}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        std::fs::write(local, &out.stdout).map_err(|e| format!("{}: {e}", local.display()))
    }
}

/// The stdout of a finished command, or a one-line reason.
pub fn output_text(out: io::Result<Output>, what: &str) -> Result<String, String> {
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let err = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            Err(format!("`{}` failed ({}): {err}", short(what), o.status))
        }
        Err(e) => Err(format!("`{}`: {e}", short(what))),
    }
}

fn short(s: &str) -> String {
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

/// Runs a program on this machine: its stdout, or a one-line reason.
pub fn run_local(prog: &str, args: &[&str]) -> Result<String, String> {
    let what = format!("{prog} {}", args.join(" "));
    output_text(
        Command::new(prog).args(args).stdin(Stdio::null()).output(),
        &what,
    )
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sends a signal to a process of this machine.
pub fn signal_local(pid: u32, sig: Sig) -> Result<(), String> {
    // SAFETY: kill(2) has no memory effects on this process.
    let r = unsafe { kill(pid as i32, sig.number()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill -{} {pid}: {}",
            sig.name(),
            io::Error::last_os_error()
        ))
    }
}

/// Whether a process of this machine runs (not a zombie).
pub fn alive_local(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(s) => match s.rfind(')') {
            Some(p) => !matches!(
                s[p + 1..].trim_start().chars().next(),
                Some('Z') | Some('X')
            ),
            None => false,
        },
        Err(_) => false,
    }
}

/// The command line of a process of this machine.
pub fn cmdline_local(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` is a live runner of this suite (so its resources are
/// not leftovers).
pub fn runner_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (alive_local(pid)
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().starts_with("redisraft-jeps"))
                .unwrap_or(false))
}

/// Processes started on this machine, killed at teardown.
#[derive(Default)]
pub struct LocalProcs {
    pids: Mutex<Vec<u32>>,
}

impl LocalProcs {
    pub fn track(&self, pid: u32) {
        let mut p = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if !p.contains(&pid) {
            p.push(pid);
        }
    }

    /// Kills every tracked process that still is a redis-server.
    pub fn kill_all(&self) {
        let pids: Vec<u32> =
            std::mem::take(&mut *self.pids.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in pids {
            if alive_local(pid) && is_server_cmdline(&cmdline_local(pid)) {
                let _ = signal_local(pid, Sig::Kill);
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (below 55000 so that Redis's cluster bus
/// port, +10000, stays valid).
pub fn free_port(taken: &[u16]) -> Result<u16, String> {
    for _ in 0..200 {
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if p < 55_000 && !taken.contains(&p) {
            return Ok(p);
        }
    }
    Err("no free port below 55000".into())
}

/// This run's work directory on this machine: /tmp/rrj-<pid>.
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()))
}

/// `local-loopback`: every node on 127.0.0.1 with its own port; no
/// partitions.
pub struct LoopbackEnv {
    ports: Vec<u16>,
    dir: PathBuf,
    module: String,
    procs: LocalProcs,
    keep: bool,
}

impl LoopbackEnv {
    pub fn new(n: usize, module: String, keep_data: bool) -> Result<LoopbackEnv, String> {
        let mut ports = Vec::new();
        for _ in 0..n {
            let p = free_port(&ports)?;
            ports.push(p);
        }
        Ok(LoopbackEnv {
            ports,
            dir: work_dir(),
            module,
            procs: LocalProcs::default(),
            keep: keep_data,
        })
    }
}

impl Env for LoopbackEnv {
    fn kind(&self) -> &'static str {
        "local-loopback"
    }
    fn len(&self) -> usize {
        self.ports.len()
    }
    fn ip(&self, _i: usize) -> String {
        "127.0.0.1".into()
    }
    fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }
    fn data_dir(&self, i: usize) -> String {
        self.dir.join(self.name(i)).to_string_lossy().into_owned()
    }
    fn module(&self) -> String {
        self.module.clone()
    }
    fn setup(&self) -> Result<(), String> {
        for i in 0..self.len() {
            std::fs::create_dir_all(self.data_dir(i))
                .map_err(|e| format!("{}: {e}", self.data_dir(i)))?;
        }
        Ok(())
    }
    fn teardown(&self) {
        self.procs.kill_all();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
    fn exec(&self, _i: usize, argv: &[String]) -> io::Result<Output> {
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
    }
    fn signal(&self, _i: usize, pid: u32, sig: Sig) -> Result<(), String> {
        signal_local(pid, sig)
    }
    fn alive(&self, _i: usize, pid: u32) -> bool {
        alive_local(pid)
    }
    fn track(&self, _i: usize, pid: u32) {
        self.procs.track(pid);
    }
    fn can_partition(&self) -> Result<(), String> {
        Err("--env local-loopback cannot partition nodes (they share 127.0.0.1): use --env local (root, network namespaces) or --env docker".into())
    }
    fn block(&self, _i: usize, ips: &[String]) -> Result<(), String> {
        if ips.is_empty() {
            Ok(())
        } else {
            self.can_partition()
        }
    }
    fn fetch(&self, _i: usize, remote: &str, local: &Path) -> Result<(), String> {
        std::fs::copy(remote, local)
            .map(|_| ())
            .map_err(|e| format!("{remote}: {e}"))
    }
}

/// `docker` (or any hosts): nodes are hosts reachable by `ssh root@host`,
/// with the module at /opt/redisraft/redisraft.so, data in
/// /var/lib/redisraft and iptables.
pub struct SshEnv {
    hosts: Vec<String>,
    ips: Vec<String>,
    module: String,
    procs: Mutex<Vec<(usize, u32)>>,
    /// ssh's ControlPath (%C: a hash of host, port and user).
    control_path: String,
}

pub const SSH_DATA_DIR: &str = "/var/lib/redisraft";
pub const SSH_MODULE: &str = "/opt/redisraft/redisraft.so";
pub const SSH_PORT: u16 = 6379;

/// Quotes a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl SshEnv {
    pub fn new(hosts: Vec<String>, module: Option<String>) -> Result<SshEnv, String> {
        use std::net::ToSocketAddrs;
        let mut ips = Vec::new();
        for h in &hosts {
            let ip = (h.as_str(), SSH_PORT)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve host {h}: {e}"))?
                .find(|a| a.is_ipv4())
                .ok_or_else(|| format!("host {h} has no IPv4 address"))?
                .ip()
                .to_string();
            ips.push(ip);
        }
        Ok(SshEnv {
            hosts,
            ips,
            module: module.unwrap_or_else(|| SSH_MODULE.to_string()),
            procs: Mutex::new(Vec::new()),
            control_path: format!("/tmp/{PREFIX}-{}-ssh-%C", std::process::id()),
        })
    }

    fn ssh(&self, i: usize, script: &str) -> io::Result<Output> {
        Command::new("ssh")
            .args([
                // One multiplexed connection per host: a command costs a
                // round trip, not a handshake.
                "-o",
                "ControlMaster=auto",
                "-o",
                &format!("ControlPath={}", self.control_path),
                "-o",
                "ControlPersist=30",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("root@{}", self.hosts[i]))
            .arg(script)
            .stdin(Stdio::null())
            .output()
    }
}

impl Env for SshEnv {
    fn kind(&self) -> &'static str {
        "docker"
    }
    fn len(&self) -> usize {
        self.hosts.len()
    }
    fn ip(&self, i: usize) -> String {
        self.ips[i].clone()
    }
    fn port(&self, _i: usize) -> u16 {
        SSH_PORT
    }
    fn data_dir(&self, _i: usize) -> String {
        SSH_DATA_DIR.into()
    }
    fn module(&self) -> String {
        self.module.clone()
    }
    fn setup(&self) -> Result<(), String> {
        for i in 0..self.len() {
            let d = SSH_DATA_DIR;
            let script = format!(
                "set -e; command -v redis-server >/dev/null || {{ echo 'redis-server missing' >&2; exit 1; }}; \
                 test -f {m} || {{ echo 'module {m} missing' >&2; exit 1; }}; \
                 if [ -f {d}/redis.pid ]; then kill -9 $(cat {d}/redis.pid) 2>/dev/null || true; fi; \
                 iptables -w -F INPUT; mkdir -p {d}; find {d} -mindepth 1 -delete",
                m = shell_quote(&self.module),
            );
            self.sh(i, &script)
                .map_err(|e| format!("host {}: {e}", self.hosts[i]))?;
        }
        Ok(())
    }
    fn teardown(&self) {
        let procs: Vec<(usize, u32)> =
            std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, pid) in procs {
            let _ = self.sh(i, &format!("kill -9 {pid} 2>/dev/null; true"));
        }
        for i in 0..self.len() {
            let _ = self.sh(i, "iptables -w -F INPUT");
        }
        // Close the multiplexing masters.
        for h in &self.hosts {
            let _ = Command::new("ssh")
                .args([
                    "-o",
                    &format!("ControlPath={}", self.control_path),
                    "-O",
                    "exit",
                ])
                .arg(format!("root@{h}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    fn exec(&self, i: usize, argv: &[String]) -> io::Result<Output> {
        let script: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        self.ssh(i, &script.join(" "))
    }
    fn sh(&self, i: usize, script: &str) -> Result<String, String> {
        output_text(self.ssh(i, script), script)
    }
    fn track(&self, i: usize, pid: u32) {
        let mut p = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if !p.contains(&(i, pid)) {
            p.push((i, pid));
        }
    }
    fn can_partition(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Removes leftovers of earlier runs on this machine whose runner is gone:
/// namespaces, links, firewall rules (see `netns::cleanup`), and work
/// directories with their redis-server processes. Returns what it did.
pub fn cleanup_local() -> Vec<String> {
    let mut done = crate::netns::cleanup();
    let tmp = std::env::temp_dir();
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(&format!("{PREFIX}-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if runner_alive(pid) {
                continue;
            }
            if let Ok(nodes) = std::fs::read_dir(e.path()) {
                for n in nodes.flatten() {
                    let pf = n.path().join("redis.pid");
                    if let Some(p) = std::fs::read_to_string(&pf)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                    {
                        if alive_local(p) && is_server_cmdline(&cmdline_local(p)) {
                            let _ = signal_local(p, Sig::Kill);
                            done.push(format!("killed redis-server {p} ({})", pf.display()));
                        }
                    }
                }
            }
            if std::fs::remove_dir_all(e.path()).is_ok() {
                done.push(format!("removed {}", e.path().display()));
            }
        }
    }
    done
}

/// The server binary nodes run: $REDIS_SERVER (a path, e.g. Valkey's
/// valkey-server; local environments only), or redis-server.
pub fn server_bin() -> String {
    std::env::var("REDIS_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

/// Whether a process's command line is a node's server (Redis or Valkey).
fn is_server_cmdline(cmdline: &str) -> bool {
    cmdline.contains("redis-server") || cmdline.contains("valkey-server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn own_process_is_alive() {
        assert!(alive_local(std::process::id()));
        assert!(runner_alive(std::process::id()));
    }
}
