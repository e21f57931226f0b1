//! `local`: every node in its own network namespace on this machine,
//! joined by a private bridge in the root namespace (veth pairs), with
//! addresses from a private /24 derived from the runner's pid. Clients run
//! in the root namespace; partitions are iptables rules inside the nodes'
//! namespaces. Everything is named `rrj...<pid>...` and removed at the end.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use crate::env::{
    alive_local, run_local, runner_alive, signal_local, work_dir, Env, LocalProcs, Sig, PREFIX,
};

/// The port of every node (each has its own address).
pub const PORT: u16 = 6379;

pub struct NetnsEnv {
    pid: u32,
    n: usize,
    /// "10.77.X": the /24 of this run.
    net: Mutex<String>,
    dir: PathBuf,
    module: String,
    procs: LocalProcs,
    keep: bool,
    /// What setup made, for teardown: "ns:<name>", "link:<name>", "fw".
    made: Mutex<Vec<String>>,
}

impl NetnsEnv {
    pub fn new(n: usize, module: String, keep_data: bool) -> NetnsEnv {
        let pid = std::process::id();
        NetnsEnv {
            pid,
            n,
            net: Mutex::new(format!("10.77.{}", pid % 200 + 20)),
            dir: work_dir(),
            module,
            procs: LocalProcs::default(),
            keep: keep_data,
            made: Mutex::new(Vec::new()),
        }
    }

    fn ns(&self, i: usize) -> String {
        format!("{PREFIX}-{}-n{}", self.pid, i + 1)
    }

    fn bridge(&self) -> String {
        format!("{PREFIX}b{}", self.pid)
    }

    fn veth_host(&self, i: usize) -> String {
        format!("{PREFIX}{}h{}", self.pid, i + 1)
    }

    fn veth_node(&self, i: usize) -> String {
        format!("{PREFIX}{}p{}", self.pid, i + 1)
    }

    fn tag(&self) -> String {
        format!("{PREFIX}-{}", self.pid)
    }

    fn net(&self) -> String {
        self.net.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn made(&self, what: String) {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    /// Whether namespaces can be made here (root, `ip netns` works).
    pub fn available() -> Result<(), String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err("--env local needs root (network namespaces)".into());
        }
        run_local("iptables", &["--version"]).map_err(|e| format!("iptables is missing: {e}"))?;
        let probe = format!("{PREFIX}-{}-probe", std::process::id());
        run_local("ip", &["netns", "add", &probe])
            .map_err(|e| format!("ip netns does not work: {e}"))?;
        let r = run_local(
            "ip",
            &["netns", "exec", &probe, "iptables", "-L", "INPUT", "-n"],
        )
        .map(|_| ())
        .map_err(|e| format!("iptables does not work in a network namespace: {e}"));
        let _ = run_local("ip", &["netns", "del", &probe]);
        r
    }

    fn in_ns(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let ns = self.ns(i);
        let mut a = vec!["netns", "exec", ns.as_str()];
        a.extend_from_slice(args);
        run_local("ip", &a)
    }

    fn pick_net(&self) -> Result<(), String> {
        let used = run_local("ip", &["-4", "-o", "addr", "show"])?;
        let routes = run_local("ip", &["-4", "route", "show"]).unwrap_or_default();
        let base = self.pid % 200 + 20;
        for k in 0..200 {
            let x = (base + k - 20) % 200 + 20;
            let net = format!("10.77.{x}.");
            if !used.contains(&net) && !routes.contains(&format!("10.77.{x}.0/")) {
                *self.net.lock().unwrap_or_else(|e| e.into_inner()) = format!("10.77.{x}");
                return Ok(());
            }
        }
        Err("no free 10.77.X.0/24 network for the nodes".into())
    }
}

impl Env for NetnsEnv {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn len(&self) -> usize {
        self.n
    }
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.net(), 11 + i)
    }
    fn port(&self, _i: usize) -> u16 {
        PORT
    }
    fn data_dir(&self, i: usize) -> String {
        self.dir.join(self.name(i)).to_string_lossy().into_owned()
    }
    fn module(&self) -> String {
        self.module.clone()
    }

    fn setup(&self) -> Result<(), String> {
        if self.n > 200 {
            return Err("at most 200 nodes".into());
        }
        self.pick_net()?;
        let br = self.bridge();
        let net = self.net();
        run_local("ip", &["link", "add", &br, "type", "bridge"])?;
        self.made(format!("link:{br}"));
        run_local("ip", &["addr", "add", &format!("{net}.1/24"), "dev", &br])?;
        run_local("ip", &["link", "set", &br, "up"])?;
        // With br_netfilter loaded, bridged packets traverse the root
        // namespace's FORWARD chain, whose policy may be DROP (Docker).
        let tag = self.tag();
        run_local(
            "iptables",
            &[
                "-w",
                "-I",
                "FORWARD",
                "1",
                "-i",
                &br,
                "-o",
                &br,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "ACCEPT",
            ],
        )?;
        self.made("fw".into());
        for i in 0..self.n {
            let ns = self.ns(i);
            let (h, p) = (self.veth_host(i), self.veth_node(i));
            run_local("ip", &["netns", "add", &ns])?;
            self.made(format!("ns:{ns}"));
            self.in_ns(i, &["ip", "link", "set", "lo", "up"])?;
            run_local(
                "ip",
                &["link", "add", &h, "type", "veth", "peer", "name", &p],
            )?;
            self.made(format!("link:{h}"));
            run_local("ip", &["link", "set", &p, "netns", &ns])?;
            run_local("ip", &["link", "set", &h, "master", &br])?;
            run_local("ip", &["link", "set", &h, "up"])?;
            self.in_ns(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", self.ip(i)),
                    "dev",
                    &p,
                ],
            )?;
            self.in_ns(i, &["ip", "link", "set", &p, "up"])?;
            self.in_ns(i, &["iptables", "-w", "-F", "INPUT"])?;
            std::fs::create_dir_all(self.data_dir(i))
                .map_err(|e| format!("{}: {e}", self.data_dir(i)))?;
        }
        Ok(())
    }

    fn teardown(&self) {
        self.procs.kill_all();
        let made: Vec<String> =
            std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for m in made.iter().rev() {
            if let Some(ns) = m.strip_prefix("ns:") {
                kill_ns_processes(ns);
                let _ = run_local("ip", &["netns", "del", ns]);
            } else if let Some(l) = m.strip_prefix("link:") {
                // veth ends vanish with their namespace; the bridge does not.
                if link_exists(l) {
                    let _ = run_local("ip", &["link", "del", l]);
                }
            } else if m == "fw" {
                delete_forward_rules(&self.tag());
            }
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn exec(&self, i: usize, argv: &[String]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .args(argv)
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
        Ok(())
    }
    fn fetch(&self, _i: usize, remote: &str, local: &Path) -> Result<(), String> {
        std::fs::copy(remote, local)
            .map(|_| ())
            .map_err(|e| format!("{remote}: {e}"))
    }
}

fn link_exists(name: &str) -> bool {
    run_local("ip", &["link", "show", "dev", name]).is_ok()
}

/// Kills the processes inside one of our namespaces.
fn kill_ns_processes(ns: &str) -> Vec<u32> {
    let mut killed = Vec::new();
    if let Ok(out) = run_local("ip", &["netns", "pids", ns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if signal_local(pid, Sig::Kill).is_ok() {
                killed.push(pid);
            }
        }
    }
    killed
}

/// Deletes the FORWARD rules carrying this comment.
fn delete_forward_rules(tag: &str) -> usize {
    let mut n = 0;
    let Ok(rules) = run_local("iptables", &["-S", "FORWARD"]) else {
        return 0;
    };
    for line in rules.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let has = words
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == tag);
        if has && words.first() == Some(&"-A") {
            let mut args: Vec<String> = words
                .iter()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            args[0] = "-D".into();
            args.insert(0, "-w".into());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if run_local("iptables", &refs).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// The runner pid in one of our names: `rrj-<pid>-n1`, `rrjb<pid>`,
/// `rrj<pid>h1`, `rrj<pid>p1`, `rrj-<pid>`.
fn owner_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest
        .strip_prefix('-')
        .or_else(|| rest.strip_prefix('b'))
        .unwrap_or(rest);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Removes namespaces, links and firewall rules of runs whose runner is
/// gone. Returns what it did.
pub fn cleanup() -> Vec<String> {
    let mut done = Vec::new();
    if let Ok(list) = run_local("ip", &["netns", "list"]) {
        for line in list.lines() {
            let Some(ns) = line.split_whitespace().next() else {
                continue;
            };
            let Some(owner) = owner_of(ns) else { continue };
            if runner_alive(owner) {
                continue;
            }
            for pid in kill_ns_processes(ns) {
                done.push(format!("killed {pid} in namespace {ns}"));
            }
            if run_local("ip", &["netns", "del", ns]).is_ok() {
                done.push(format!("removed namespace {ns}"));
            }
        }
    }
    if let Ok(links) = run_local("ip", &["-o", "link", "show"]) {
        for line in links.lines() {
            // "12: rrjb123: <...>" or "13: rrj123h1@if2: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            let Some(owner) = owner_of(name) else {
                continue;
            };
            if runner_alive(owner) {
                continue;
            }
            if link_exists(name) && run_local("ip", &["link", "del", name]).is_ok() {
                done.push(format!("removed link {name}"));
            }
        }
    }
    if let Ok(rules) = run_local("iptables", &["-S", "FORWARD"]) {
        let mut tags: Vec<String> = Vec::new();
        for line in rules.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "--comment" {
                    let t = w[1].trim_matches('"').to_string();
                    if t.starts_with(&format!("{PREFIX}-")) && !tags.contains(&t) {
                        tags.push(t);
                    }
                }
            }
        }
        for t in tags {
            match owner_of(&t) {
                Some(owner) if !runner_alive(owner) => {
                    let n = delete_forward_rules(&t);
                    if n > 0 {
                        done.push(format!("removed {n} FORWARD rule(s) {t}"));
                    }
                }
                _ => {}
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner_of("rrj-123-n1"), Some(123));
        assert_eq!(owner_of("rrjb4567"), Some(4567));
        assert_eq!(owner_of("rrj89h2"), Some(89));
        assert_eq!(owner_of("rrj-77"), Some(77));
        assert_eq!(owner_of("eth0"), None);
    }
}
