//! Regression tests for the hardening findings of issue 11, each named
//! after what it catches, against real redis-server processes.

mod common;

use common::*;
use redisraft::resp::RespValue;
use redisraft::storage::{LogStore, LogWrite};

fn info_u64(n: &Node, field: &str) -> u64 {
    n.info_field(field).parse().unwrap()
}

/// Finding 3. The precondition: an RDB whose snapshot index is above the
/// durable commit index and above the log's snapshot point (a snapshot put in
/// place just before a crash, on a node whose commit-only write was lost to a
/// power loss). Start-up reconciliation then compacts the log to the
/// snapshot and raises the commit index; if a crash falls between the two,
/// the log starts after the commit index and raft-rs panics in
/// `RawNode::new` on every later start.
#[test]
fn a_crash_during_startup_reconciliation_does_not_crash_loop() {
    let Some(mut n) = Node::start_failpoints(&[]) else {
        return;
    };
    let r = n.cmd(&["RAFT.CLUSTER", "INIT"]);
    assert!(
        matches!(&r, RespValue::Simple(s) if s.starts_with("OK")),
        "{r:?}"
    );
    wait_for(10, "a leader", || {
        (n.info_field("role") == "leader").then_some(())
    });
    for i in 0..20 {
        let k = format!("k{i}");
        wait_for(10, "SET accepted", || {
            ok(&n.cmd(&["SET", &k, "v"])).then_some(())
        });
    }
    let applied = info_u64(&n, "last_applied_index");
    // The snapshot lands in place; the node dies before compacting its log.
    assert!(ok(&n.cmd(&[
        "RAFT.DEBUG",
        "FAILPOINT",
        "snapshot-after-rename",
        "crash"
    ])));
    let _ = n.conn().call(&[b"RAFT.DEBUG", b"COMPACT"]);
    assert!(
        n.wait_exit(20),
        "the node did not crash at snapshot-after-rename"
    );

    // A power loss took the last commit-only write (it is not fsynced): the
    // durable commit index is below the snapshot's index.
    {
        let store = LogStore::open(&n.dir.join("raftlog.db"), true).unwrap();
        let (snap_index, _) = store.snapshot_point();
        assert!(snap_index < applied, "the log was compacted already");
        let mut hs = store.hard_state();
        assert!(hs.commit >= applied);
        hs.commit = applied - 1;
        store
            .write(LogWrite {
                hard_state: Some(hs),
                ..Default::default()
            })
            .unwrap();
    }

    // Crash in the middle of start-up reconciliation.
    n.env = vec![(
        "REDISRAFT_FAILPOINTS".into(),
        "startup-between-compact-and-commit".into(),
    )];
    n.spawn();
    assert!(
        n.wait_exit(20),
        "the node did not crash at startup-between-compact-and-commit; log:\n{}",
        n.log()
    );
    n.env.clear();

    // Every later start must succeed (twice: no loop).
    for round in 0..2 {
        n.spawn();
        wait_for(20, "the restarted node up and leading", || {
            assert!(
                !n.wait_exit(0),
                "start {round} after the crash failed; log:\n{}",
                n.log()
            );
            let mut c = n.try_conn().ok()?;
            let info = match c.call(&[b"RAFT.INFO"]).ok()? {
                RespValue::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => return None,
            };
            (info.contains("raft_state:up") && info.contains("raft_role:leader")).then_some(())
        });
        for i in 0..20 {
            let r = n.cmd(&["GET", &format!("k{i}")]);
            assert_eq!(bulk(&r).as_deref(), Some("v"), "k{i} after restart {round}");
        }
        n.kill9();
    }
}

/// Finding 2. A node whose snapshot load failed has a dataset that matches
/// no index. It must stop for good: no votes (it could win and send that
/// state on), no applying (over the old dataset), no snapshots (of that
/// state under a valid index), no serving; INFO says why.
#[test]
fn a_failed_snapshot_load_stops_the_node_it_neither_votes_applies_snapshots_nor_serves() {
    let mut c = Cluster::new(3, &[]);
    let leader = c.wait_leader();
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.nodes[victim].kill9();
    for i in 0..50 {
        assert!(ok(&c.nodes[leader].cmd(&["SET", &format!("k{i}"), "v"])));
    }
    // The victim now needs the leader's snapshot to catch up.
    let r = c.nodes[leader].cmd(&["RAFT.DEBUG", "COMPACT"]);
    assert!(ok(&r), "COMPACT: {r:?}");
    c.nodes[victim]
        .extra
        .extend(["--raft.snapshot-fail-load".into(), "yes".into()]);
    c.nodes[victim].launch();
    wait_for(30, "the victim's failed snapshot load", || {
        c.nodes[victim]
            .log()
            .contains("failed: refused by the test knob")
            .then_some(())
    });
    let mut wrong = Vec::new();

    // INFO says why.
    let info = c.nodes[victim].info();
    if !info.contains("raft_state:failed")
        || !info.contains("raft_failed_reason:loading the snapshot")
    {
        wrong.push(format!("INFO does not say failed and why:\n{info}"));
    }
    // No serving.
    let r = c.nodes[victim].cmd(&["GET", "k1"]);
    if !err_text(&r).is_some_and(|e| e.contains("snapshot")) {
        wrong.push(format!("GET on the failed node answered {r:?}"));
    }
    // No applying: a write the others apply never reaches its dataset.
    assert!(ok(&c.nodes[leader].cmd(&["SET", "after", "v"])));
    wait_for(10, "the other follower applies", || {
        (bulk(&c.nodes[other].cmd(&["RAFT.DEBUG", "EXEC", "GET", "after"])).as_deref() == Some("v"))
            .then_some(())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let r = c.nodes[victim].cmd(&["RAFT.DEBUG", "EXEC", "GET", "after"]);
        if bulk(&r).is_some() {
            wrong.push("the failed node applied an entry after the failed load".into());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // No snapshots.
    let r = c.nodes[victim].cmd(&["RAFT.DEBUG", "COMPACT"]);
    if ok(&r) {
        wrong.push("the failed node took a snapshot".into());
    }
    // No votes: with the leader gone, the other follower needs the failed
    // node's vote; for 5 election timeouts no one may lead.
    c.nodes[leader].kill9();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if c.nodes[other].info_field("role") == "leader"
            || c.nodes[victim].info_field("role") == "leader"
        {
            wrong.push("a leader was elected with the failed node's vote".into());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Finding 6. raft-rs refuses to remove the last voter when it applies the
/// change; the change was answered +OK anyway, and the membership at that
/// index became unknown, so no snapshot or compaction could be taken until
/// the next membership change.
#[test]
fn removing_the_only_voter_is_refused_before_proposing_and_snapshots_keep_working() {
    let n = Node::start(&[]);
    assert!(
        matches!(n.cmd(&["RAFT.CLUSTER", "INIT"]), RespValue::Simple(s) if s.starts_with("OK"))
    );
    wait_for(10, "a leader", || {
        (n.info_field("role") == "leader").then_some(())
    });
    let id = n.info_field("node_id");
    let before = info_u64(&n, "current_index");
    let r = n.cmd(&["RAFT.NODE", "REMOVE", &id]);
    let mut wrong = Vec::new();
    if !err_text(&r).is_some_and(|e| e.contains("only voter")) {
        wrong.push(format!("REMOVE of the only voter answered {r:?}"));
    }
    if info_u64(&n, "current_index") != before {
        wrong.push("REMOVE of the only voter was proposed".into());
    }
    wait_for(10, "SET accepted", || {
        ok(&n.cmd(&["SET", "k", "v"])).then_some(())
    });
    let r = n.cmd(&["RAFT.DEBUG", "COMPACT"]);
    if !ok(&r) {
        wrong.push(format!("no snapshot after the refused change: {r:?}"));
    }
    assert_eq!(n.info_field("state"), "up");
    assert_eq!(n.info_field("role"), "leader");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Finding 1. RAFT.CLUSTER INIT answered before the node led, so a SET
/// right after it failed with -CLUSTERDOWN.
#[test]
fn init_answers_once_the_node_leads_so_the_next_commands_succeed() {
    for round in 0..3 {
        let n = Node::start(&[]);
        let mut c = n.conn();
        let started = std::time::Instant::now();
        let r = c.call(&[b"RAFT.CLUSTER", b"INIT"]).unwrap();
        let took = started.elapsed();
        assert!(
            matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
            "{r:?}"
        );
        let r = c.call(&[b"SET", b"k", b"v"]).unwrap();
        assert!(ok(&r), "round {round}: SET right after INIT answered {r:?}");
        let r = c.call(&[b"GET", b"k"]).unwrap();
        assert_eq!(
            bulk(&r).as_deref(),
            Some("v"),
            "round {round}: GET after INIT"
        );
        eprintln!("round {round}: INIT answered in {took:?}");
        // A lone voter campaigns at once: no election timeout (1 s here).
        assert!(
            took < std::time::Duration::from_millis(900),
            "INIT took {took:?}"
        );
    }
}

/// Finding 11. RAFT.TRANSFER_LEADER answered +OK as soon as the transfer
/// began, also when it could never finish.
#[test]
fn transfer_leader_answers_ok_only_when_done_and_errors_otherwise() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let a = (l + 1) % 3;
    let b = (l + 2) % 3;
    let id = |i: usize| c.nodes[i].info_field("node_id");
    let mut wrong = Vec::new();

    // On a follower: -MOVED to the leader.
    let r = c.nodes[a].cmd(&["RAFT.TRANSFER_LEADER", &id(b)]);
    if !err_text(&r).is_some_and(|e| e.starts_with("MOVED")) {
        wrong.push(format!("on a follower: {r:?}"));
    }
    // Unknown target.
    let r = c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", "424242"]);
    if !err_text(&r).is_some_and(|e| e.contains("not a member")) {
        wrong.push(format!("to an unknown node: {r:?}"));
    }
    // A target that cannot take over (stopped): a timeout error within
    // about the election timeout (1 s), not +OK.
    c.nodes[a].signal("-STOP");
    let started = std::time::Instant::now();
    let r = c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", &id_of_stopped(&c, a)]);
    let took = started.elapsed();
    c.nodes[a].signal("-CONT");
    eprintln!("transfer to a stopped node answered {r:?} in {took:?}");
    if !err_text(&r).is_some_and(|e| e.starts_with("TIMEOUT")) {
        wrong.push(format!("to a stopped node: {r:?}"));
    }
    if took > std::time::Duration::from_secs(3) {
        wrong.push(format!("to a stopped node: answered after {took:?}"));
    }
    // A transfer that works: +OK once the target leads. First the resumed
    // node must have heard from the leader at its term (which restarts its
    // election timer): otherwise the heartbeats it missed while stopped
    // can make it start an election that cuts the transfer short
    // (CLUSTERDOWN).
    // The leader is read again each time: the resumed node may have
    // started an election meanwhile, and then someone else leads.
    wait_for(20, "the resumed node follows the leader", || {
        let l = c.leader()?;
        let term = c.nodes[l].info_field("current_term");
        let commit = c.nodes[l].info_field("commit_index");
        let n = &c.nodes[a];
        (n.info_field("leader_id") == id(l)
            && n.info_field("current_term") == term
            && n.info_field("commit_index") == commit)
            .then_some(())
    });
    let l = c.wait_leader();
    let t = (l + 1) % 3;
    let r = c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", &id(t)]);
    if !ok(&r) {
        wrong.push(format!("to a live voter: {r:?}"));
    } else {
        // +OK came once this node heard from the target as leader; the
        // target's INFO may publish its role a moment after its first
        // appends went out.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while c.nodes[t].info_field("role") != "leader" {
            if std::time::Instant::now() > deadline {
                wrong.push("+OK, but the target does not lead".into());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    // A learner (added with an address nothing listens on: it stays one).
    let l = c.wait_leader();
    let r = c.nodes[l].cmd(&["RAFT.NODE", "ADD", "777", "127.0.0.1:1"]);
    assert!(ok(&r), "ADD: {r:?}");
    let r = c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", "777"]);
    if !err_text(&r).is_some_and(|e| e.contains("not a voter")) {
        wrong.push(format!("to a learner: {r:?}"));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    c.assert_same_dataset();
}

/// The node id of a node, read before it was stopped (INFO of a stopped
/// server does not answer): from another node's INFO, by port.
fn id_of_stopped(c: &Cluster, i: usize) -> String {
    let port = c.nodes[i].port.to_string();
    let other = (0..c.nodes.len()).find(|&j| j != i).unwrap();
    let info = c.nodes[other].info();
    info.lines()
        .filter(|l| l.starts_with("raft_node"))
        .find(|l| l.contains(&format!("port={port},")))
        .and_then(|l| l.split("id=").nth(1))
        .and_then(|s| s.split(',').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no id for port {port} in {info}"))
}

/// Two consecutive free loopback ports.
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Stops what `scripts/cluster.sh` started, at the end or on a panic.
struct ScriptCluster {
    data: tempfile::TempDir,
    ports: Vec<u16>,
}

impl ScriptCluster {
    fn run(&self, base_port: u16, args: &[&str]) -> std::process::Output {
        std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh"),
        )
        .args(args)
        .env("NODES", "2")
        .env("BASE_PORT", base_port.to_string())
        .env("DATA_DIR", self.data.path())
        .env("MODULE", module_path())
        .output()
        .expect("run scripts/cluster.sh")
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        for p in self.ports.clone() {
            let _ = self.run(p, &["stop"]);
        }
    }
}

/// Finding 12. cluster.sh keys data directories by node number: started
/// with another BASE_PORT over an existing ./data, it revived the old
/// membership, whose addresses may now be other servers.
#[test]
fn cluster_sh_refuses_data_made_for_other_ports() {
    let (old, new) = (free_port_pair(), free_port_pair());
    let sc = ScriptCluster {
        data: tempfile::tempdir().unwrap(),
        ports: vec![old, new],
    };
    let out = sc.run(old, &["start"]);
    assert!(out.status.success(), "first start: {out:?}");
    let out = sc.run(old, &["stop"]);
    assert!(out.status.success(), "stop: {out:?}");
    let out = sc.run(new, &["start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let served = Node::attach(new).try_conn().is_ok();
    assert!(
        !out.status.success() && stderr.contains("refusing") && !served,
        "start over data made for ports {old}.. with BASE_PORT={new}: exit {:?}, server on {new}: {served}, stderr: {stderr}, stdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    // The same ports still start.
    let out = sc.run(old, &["start"]);
    assert!(out.status.success(), "restart on the old ports: {out:?}");
}

/// Finding 10 (panics). A panic in an `extern "C"` entry point (here the
/// apply callback on Redis's main thread) aborted redis-server; it must
/// fail-stop the node instead, which keeps answering INFO.
#[test]
fn a_panic_in_a_redis_callback_fail_stops_the_node_instead_of_aborting_redis() {
    let Some(mut n) = Node::start_failpoints(&[]) else {
        return;
    };
    assert!(
        matches!(n.cmd(&["RAFT.CLUSTER", "INIT"]), RespValue::Simple(s) if s.starts_with("OK"))
    );
    wait_for(10, "SET accepted", || {
        ok(&n.cmd(&["SET", "a", "1"])).then_some(())
    });
    assert!(ok(&n.cmd(&[
        "RAFT.DEBUG",
        "FAILPOINT",
        "apply-middle",
        "panic"
    ])));
    let r = n.conn().call(&[b"SET", b"b", b"2"]);
    assert!(
        !n.wait_exit(1),
        "redis-server ended on the panic (SET answered {r:?}); log:\n{}",
        n.log()
    );
    let info = n.info();
    assert!(
        info.contains("raft_state:failed") && info.contains("raft_failed_reason:internal error"),
        "{info}"
    );
    let r = n.cmd(&["GET", "a"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("failed and stopped")),
        "{r:?}"
    );
}

/// Finding 3, for logs already broken by the old two-write reconciliation:
/// a log compacted past its durable commit index is repaired at start (the
/// commit index is raised to the snapshot point, which only committed
/// entries reach), instead of failing every start.
#[test]
fn a_log_compacted_past_its_commit_index_is_repaired_at_start() {
    let mut n = Node::start(&[]);
    assert!(
        matches!(n.cmd(&["RAFT.CLUSTER", "INIT"]), RespValue::Simple(s) if s.starts_with("OK"))
    );
    for i in 0..20 {
        let k = format!("k{i}");
        wait_for(10, "SET accepted", || {
            ok(&n.cmd(&["SET", &k, "v"])).then_some(())
        });
    }
    let r = n.cmd(&["RAFT.DEBUG", "COMPACT"]);
    assert!(ok(&r), "COMPACT: {r:?}");
    n.kill9();
    {
        let store = LogStore::open(&n.dir.join("raftlog.db"), true).unwrap();
        let (snap_index, _) = store.snapshot_point();
        assert!(snap_index > 1);
        let mut hs = store.hard_state();
        hs.commit = snap_index - 1;
        store
            .write(LogWrite {
                hard_state: Some(hs),
                ..Default::default()
            })
            .unwrap();
    }
    n.spawn();
    wait_for(20, "the node up and leading", || {
        assert!(!n.wait_exit(0), "the start failed; log:\n{}", n.log());
        let mut c = n.try_conn().ok()?;
        let info = match c.call(&[b"RAFT.INFO"]).ok()? {
            RespValue::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => return None,
        };
        (info.contains("raft_state:up") && info.contains("raft_role:leader")).then_some(())
    });
    for i in 0..20 {
        assert_eq!(
            bulk(&n.cmd(&["GET", &format!("k{i}")])).as_deref(),
            Some("v")
        );
    }
}

/// Finding 10 (a panic on the Raft thread, as raft-engine panics when an
/// fsync fails): the node fail-stops and says so, instead of a dead Raft
/// thread behind a node that looks up.
#[test]
fn a_panic_on_a_followers_raft_thread_fail_stops_it() {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let Some(n) = Node::start_failpoints(&[]) else {
            return;
        };
        nodes.push(n);
    }
    assert!(
        matches!(nodes[0].cmd(&["RAFT.CLUSTER", "INIT"]), RespValue::Simple(s) if s.starts_with("OK"))
    );
    let first = nodes[0].addr();
    for n in &nodes[1..] {
        let r = n.cmd(&["RAFT.CLUSTER", "JOIN", &first]);
        assert!(ok(&r), "JOIN: {r:?}");
    }
    let c = Cluster { nodes };
    let l = c.wait_leader();
    let f = (l + 1) % 3;
    assert!(ok(&c.nodes[f].cmd(&[
        "RAFT.DEBUG",
        "FAILPOINT",
        "log-after-fsync",
        "panic"
    ])));
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "v"])));
    wait_for(10, "the follower fail-stopped", || {
        (c.nodes[f].info_field("state") == "failed").then_some(())
    });
    let reason = c.nodes[f].info_field("failed_reason");
    assert!(reason.contains("failpoint log-after-fsync"), "{reason}");
    let r = c.nodes[f].cmd(&["GET", "k"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("failed and stopped")),
        "{r:?}"
    );
    // The two others go on.
    assert!(ok(&c.nodes[l].cmd(&["SET", "k2", "v"])));
}
