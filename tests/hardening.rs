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
