//! Snapshots, log compaction and catch-up through snapshots, against real
//! redis-server processes.

mod common;

use std::process::Command;

use common::*;
use redisraft::resp::RespValue;

/// Writes `count` keys `{prefix}:{i}` with `size`-byte values, pipelined.
fn write_keys(n: &Node, prefix: &str, count: usize, size: usize) {
    let mut c = n.conn();
    let value = "v".repeat(size);
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let cmds: Vec<Vec<Vec<u8>>> = chunk
            .iter()
            .map(|i| {
                vec![
                    b"SET".to_vec(),
                    format!("{prefix}:{i}").into_bytes(),
                    value.clone().into_bytes(),
                ]
            })
            .collect();
        c.send_many(&cmds).unwrap();
        for _ in 0..cmds.len() {
            let r = c.recv().unwrap();
            assert!(ok(&r), "SET: {r:?}");
        }
    }
}

fn local(n: &Node, args: &[&str]) -> RespValue {
    let mut a = vec!["RAFT.DEBUG", "EXEC"];
    a.extend_from_slice(args);
    n.cmd(&a)
}

fn digest(n: &Node) -> String {
    match local(n, &["DEBUG", "DIGEST"]) {
        RespValue::Simple(s) => s,
        other => bulk(&other).unwrap_or_else(|| panic!("DEBUG DIGEST: {other:?}")),
    }
}

fn dbsize(n: &Node) -> i64 {
    match local(n, &["DBSIZE"]) {
        RespValue::Integer(i) => i,
        other => panic!("DBSIZE: {other:?}"),
    }
}

fn num(n: &Node, field: &str) -> u64 {
    n.info_field(field).parse().unwrap()
}

/// Every running node has applied what the leader committed, and all hold
/// the same keyspace.
fn wait_converged(c: &Cluster, secs: u64) -> String {
    let l = c.wait_leader();
    let target = num(&c.nodes[l], "commit_index");
    wait_for(secs, "every node applied the leader's commit index", || {
        c.nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| n.try_conn().is_ok() && num(n, "last_applied_index") >= target)
            .then_some(())
    });
    let d = digest(&c.nodes[l]);
    for n in c.nodes.iter().filter(|n| n.is_running()) {
        assert_eq!(
            digest(n),
            d,
            "keyspace of {} differs from the leader's",
            n.addr()
        );
    }
    d
}

fn compact(n: &Node) {
    let r = n.cmd(&["RAFT.DEBUG", "COMPACT"]);
    assert!(ok(&r), "RAFT.DEBUG COMPACT on {}: {r:?}", n.addr());
}

/// `redis-check-rdb` accepts the node's snapshot file.
fn check_rdb(n: &Node) {
    let path = n.dir.join("raft.rdb");
    let out = Command::new(check_rdb_bin()).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RDB looks OK"),
        "redis-check-rdb {}: {text}",
        path.display()
    );
}

#[test]
fn continuous_writes_with_a_tiny_log_limit_compact_repeatedly_and_keep_all_data() {
    let c = Cluster::new(3, &["--raft.log-max-file-size", "100000"]);
    let l = c.wait_leader();
    let mut max_entries = 0u64;
    let mut max_file = 0u64;
    for round in 0..10 {
        write_keys(&c.nodes[l], &format!("r{round}"), 500, 200);
        for n in &c.nodes {
            max_entries = max_entries.max(num(n, "log_entries"));
            max_file = max_file.max(num(n, "file_size"));
        }
    }
    wait_for(30, "the leader to have taken several snapshots", || {
        (num(&c.nodes[l], "snapshots_created") >= 3).then_some(())
    });
    // 5000 entries of ~250 bytes were written: without compaction the log
    // would hold all of them (about 1.2 MB).
    assert!(max_entries < 2500, "log kept {max_entries} entries");
    assert!(max_file < 8 << 20, "log files grew to {max_file} bytes");
    wait_converged(&c, 30);
    for n in &c.nodes {
        assert_eq!(dbsize(n), 5000, "keys on {}", n.addr());
        assert!(
            num(n, "snapshot_last_idx") > 0,
            "{} never compacted",
            n.addr()
        );
        wait_for(20, "no snapshot in progress", || {
            (n.info_field("snapshot_in_progress") == "no").then_some(())
        });
        check_rdb(n);
    }
}

#[test]
fn a_node_added_after_compaction_catches_up_through_a_snapshot() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    write_keys(&c.nodes[l], "k", 2000, 100);
    for n in &c.nodes {
        compact(n);
    }
    assert_eq!(c.nodes[l].info_field("log_entries"), "0");
    let n4 = Node::start(&[]);
    let r = n4.cmd(&["RAFT.CLUSTER", "JOIN", &c.nodes[l].addr()]);
    assert!(ok(&r), "JOIN: {r:?}; log:\n{}", n4.log());
    c.nodes.push(n4);
    wait_converged(&c, 30);
    let n4 = &c.nodes[3];
    assert!(num(n4, "snapshots_received") >= 1, "{}", n4.info());
    // Loaded through the server's own path: RM_RdbLoad on Redis 7.2+ and
    // Valkey, DEBUG RELOAD NOSAVE on 7.0.
    assert!(num(n4, "snapshots_loaded") >= 1, "{}", n4.info());
    let want = if is_valkey() {
        "rdbload"
    } else {
        "debug-reload"
    };
    assert_eq!(n4.info_field("snapshot_load_api"), want);
    assert_eq!(dbsize(n4), 2000);
    assert_eq!(n4.info_field("state"), "up");
    // The installed snapshot is the new node's own, and valid.
    check_rdb(n4);
    // It takes part in commits from now on.
    assert!(ok(&c.nodes[l].cmd(&["SET", "after", "join"])));
    wait_converged(&c, 20);
}

#[test]
fn a_node_left_behind_by_many_compactions_catches_up_after_restart() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let behind = (l + 1) % 3;
    write_keys(&c.nodes[l], "before", 300, 50);
    wait_converged(&c, 20);
    c.nodes[behind].kill9();
    for round in 0..3 {
        write_keys(&c.nodes[l], &format!("r{round}"), 300, 50);
        compact(&c.nodes[l]);
    }
    assert!(num(&c.nodes[l], "snapshots_created") >= 3);
    c.nodes[behind].launch();
    wait_converged(&c, 30);
    assert!(num(&c.nodes[behind], "snapshots_received") >= 1);
    assert_eq!(dbsize(&c.nodes[behind]), 1200);
}

#[test]
fn every_node_restarted_after_compaction_has_its_data_back() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    write_keys(&c.nodes[l], "a", 500, 100);
    assert!(matches!(
        c.nodes[l].cmd(&["INCR", "counter"]),
        RespValue::Integer(1)
    ));
    wait_converged(&c, 20);
    for n in &c.nodes {
        compact(n);
    }
    // Entries after the snapshot: replayed from the log on restart.
    write_keys(&c.nodes[l], "b", 100, 100);
    assert!(matches!(
        c.nodes[l].cmd(&["INCR", "counter"]),
        RespValue::Integer(2)
    ));
    let before = wait_converged(&c, 20);
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        n.launch();
    }
    let after = wait_converged(&c, 30);
    assert_eq!(before, after, "dataset changed across the restart");
    let l = c.wait_leader();
    assert_eq!(dbsize(&c.nodes[l]), 601);
    // The counter was not applied twice (snapshot + replay).
    assert_eq!(
        bulk(&c.nodes[l].cmd(&["GET", "counter"])).as_deref(),
        Some("2")
    );
}

#[test]
fn kill_during_snapshot_creation_then_restart_converges() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let victim = (l + 1) % 3;
    write_keys(&c.nodes[l], "k", 500, 100);
    wait_converged(&c, 20);
    // The fork child sleeps before writing: the snapshot is in progress.
    assert!(ok(&c.nodes[victim].cmd(&[
        "CONFIG",
        "SET",
        "raft.snapshot-delay",
        "5000"
    ])));
    let mut conn = c.nodes[victim].conn();
    conn.send_many(&[vec![b"RAFT.DEBUG".to_vec(), b"COMPACT".to_vec()]])
        .unwrap();
    wait_for(10, "snapshot in progress", || {
        (c.nodes[victim].info_field("snapshot_in_progress") == "yes").then_some(())
    });
    c.nodes[victim].kill9();
    // The orphaned child (it sleeps) must not leave a half-written file in place.
    write_keys(&c.nodes[l], "more", 100, 100);
    c.nodes[victim].launch();
    wait_converged(&c, 30);
    assert_eq!(dbsize(&c.nodes[victim]), 600);
    // And the node can take a snapshot afterwards.
    compact(&c.nodes[victim]);
    check_rdb(&c.nodes[victim]);
}

#[test]
fn kill_during_snapshot_load_then_restart_converges() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let behind = (l + 1) % 3;
    write_keys(&c.nodes[l], "a", 200, 100);
    wait_converged(&c, 20);
    c.nodes[behind].kill9();
    write_keys(&c.nodes[l], "b", 300, 100);
    compact(&c.nodes[l]);
    // Restarted with loading held back: it receives the snapshot, makes it
    // its own, but does not load it yet.
    let mut extra = c.nodes[behind].extra.clone();
    extra.extend([
        "--raft.snapshot-disable-load".to_string(),
        "yes".to_string(),
    ]);
    let port = c.nodes[behind].port;
    let child = ChildGuard(c.nodes[behind].spawn_with(&extra));
    let n = Node::attach(port);
    wait_for(30, "the snapshot received and installed in the log", || {
        n.try_conn().ok()?;
        (num(&n, "snapshot_last_idx") > 0).then_some(())
    });
    assert_eq!(num(&n, "snapshots_received"), 0, "loaded despite the knob");
    drop(child); // kill -9 while the load is pending
    c.nodes[behind].launch();
    wait_converged(&c, 30);
    assert_eq!(dbsize(&c.nodes[behind]), 500);
}

#[test]
fn damaged_snapshot_chunks_are_refused() {
    let c = Cluster::new(1, &[]);
    let n = &c.nodes[0];
    let dbid = n.info_field("dbid");
    let chunk = |offset: &str, total: &str, crc: &str, data: &str| {
        n.cmd(&[
            "RAFT.LOADSNAPSHOT",
            &dbid,
            "77",
            "10",
            "2",
            offset,
            total,
            crc,
            data,
        ])
    };
    let crc_of = |d: &str| crc32fast::hash(d.as_bytes()).to_string();
    // A chunk whose bytes do not match its CRC.
    let r = chunk("0", "8", "12345", "abcd");
    assert!(err_text(&r).is_some_and(|e| e.contains("CRC")), "{r:?}");
    // A good first chunk, then one that skips ahead: refused, the sender
    // has to start over.
    assert!(ok(&chunk("0", "8", &crc_of("abcd"), "abcd")));
    let r = chunk("6", "8", &crc_of("gh"), "gh");
    assert!(
        err_text(&r).is_some_and(|e| e.contains("expected offset 4")),
        "{r:?}"
    );
    // Past the announced size.
    let r = chunk("4", "8", &crc_of("efghij"), "efghij");
    assert!(err_text(&r).is_some_and(|e| e.contains("past")), "{r:?}");
    // Another cluster's chunk.
    let r = n.cmd(&[
        "RAFT.LOADSNAPSHOT",
        "x",
        "77",
        "10",
        "2",
        "0",
        "4",
        &crc_of("abcd"),
        "abcd",
    ]);
    assert!(err_text(&r).is_some_and(|e| e.contains("dbid")), "{r:?}");
}

#[test]
fn a_corrupt_snapshot_file_refuses_start_with_a_clear_message() {
    let mut c = Cluster::new(1, &[]);
    write_keys(&c.nodes[0], "k", 300, 100);
    compact(&c.nodes[0]);
    c.nodes[0].kill9();
    let path = c.nodes[0].dir.join("raft.rdb");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let mut child = ChildGuard(c.nodes[0].spawn_with(&c.nodes[0].extra.clone()));
    let status = wait_for(20, "redis-server to refuse to start", || {
        child.0.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = c.nodes[0].log();
    assert!(
        log.contains("snapshot file unusable") && log.contains("corrupt"),
        "log:\n{log}"
    );
    // A missing snapshot file, with a log that starts after it: refused too.
    std::fs::remove_file(&path).unwrap();
    let mut child = ChildGuard(c.nodes[0].spawn_with(&c.nodes[0].extra.clone()));
    let status = wait_for(20, "redis-server to refuse to start", || {
        child.0.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(
        c.nodes[0].log().contains("is missing"),
        "{}",
        c.nodes[0].log()
    );
}
