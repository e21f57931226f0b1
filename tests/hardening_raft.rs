//! Hardening (issue 11) checks that need a real redis-server with the module.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn config_get(n: &Node, name: &str) -> String {
    match n.cmd(&["CONFIG", "GET", name]) {
        RespValue::Array(Some(a)) => a.get(1).and_then(bulk).unwrap_or_default(),
        other => panic!("CONFIG GET {name}: {other:?}"),
    }
}

/// Starts redis-server with the module and `args`: the log if it refused
/// to load (exited), None if it was still running after 20 s.
fn refused_load(args: &[&str]) -> Option<String> {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log)
        .args(["--save", "", "--loadmodule"])
        .arg(module_path())
        .args(args)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Finding 9: with fewer than 5 election ticks a lease outlasts the
/// followers' refusal to vote (see node::LEASE_MIN_ELECTION_TICKS), so
/// `read-mode lease` is refused with such timing, at load in either
/// argument order and at CONFIG SET.
#[test]
fn read_mode_lease_is_refused_with_fewer_than_5_election_ticks() {
    for args in [
        [
            "--raft.election-timeout",
            "400",
            "--raft.read-mode",
            "lease",
        ],
        [
            "--raft.read-mode",
            "lease",
            "--raft.election-timeout",
            "400",
        ],
    ] {
        let text = refused_load(&args).unwrap_or_else(|| panic!("{args:?} loaded"));
        assert!(
            text.contains("read-mode lease needs an election-timeout of at least 5"),
            "{args:?}: {text}"
        );
    }

    let short = Node::start(&["--raft.election-timeout", "400"]);
    let r = short.cmd(&["CONFIG", "SET", "raft.read-mode", "lease"]);
    let e = err_text(&r).unwrap_or_else(|| panic!("accepted: {r:?}"));
    assert!(e.contains("read-mode lease needs"), "{e}");
    assert_eq!(config_get(&short, "raft.read-mode"), "readindex");

    let enough = Node::start(&["--raft.election-timeout", "500"]);
    assert!(ok(&enough.cmd(&[
        "CONFIG",
        "SET",
        "raft.read-mode",
        "lease"
    ])));
    assert_eq!(config_get(&enough, "raft.read-mode"), "lease");
}
