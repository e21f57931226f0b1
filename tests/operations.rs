//! Operations that keep the guarantees (issue 16): live and at-load
//! settings, Redis settings refused at run time, open transactions, and a
//! redis.conf written for RedisRaft.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn config_get(n: &Node, name: &str) -> String {
    match n.cmd(&["CONFIG", "GET", name]) {
        RespValue::Array(Some(a)) => a.get(1).and_then(bulk).unwrap_or_default(),
        other => panic!("CONFIG GET {name}: {other:?}"),
    }
}

fn single_node(extra: &[&str]) -> Node {
    let n = Node::start(extra);
    let r = n.cmd(&["RAFT.CLUSTER", "INIT"]);
    assert!(
        matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
        "{r:?}"
    );
    n
}

/// A leader holding a read lease is cut off from its followers, and its
/// read-mode is switched to readindex: from then on it serves no read it
/// cannot confirm with a quorum, although its lease has not run out.
#[test]
fn switching_to_readindex_stops_lease_reads_at_once() {
    // A long lease (0.8 x 10 s), so it surely still holds after the switch.
    let c = Cluster::new(
        3,
        &[
            "--raft.read-mode",
            "lease",
            "--raft.election-timeout",
            "10000",
        ],
    );
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    assert!(ok(&leader.cmd(&["SET", "k", "v1"])));
    wait_for(30, "a read served", || {
        (bulk(&leader.cmd(&["GET", "k"])).as_deref() == Some("v1")).then_some(())
    });
    for (i, n) in c.nodes.iter().enumerate() {
        if i != l {
            n.signal("-STOP");
        }
    }
    let short = || {
        Connection::connect(
            &leader.addr(),
            Duration::from_secs(2),
            Duration::from_secs(3),
            None,
        )
        .unwrap()
    };
    // Cut off, the leader still serves from its lease (read-mode lease).
    let r = short().call(&[b"GET".as_slice(), b"k"]);
    assert!(
        matches!(&r, Ok(v) if bulk(v).as_deref() == Some("v1")),
        "lease read: {r:?}"
    );
    assert!(ok(&leader.cmd(&[
        "CONFIG",
        "SET",
        "raft.read-mode",
        "readindex"
    ])));
    // Now the read needs a quorum it cannot reach: an error or no answer,
    // never the value.
    let r = short().call(&[b"GET".as_slice(), b"k"]);
    assert!(
        !matches!(&r, Ok(RespValue::Bulk(_))),
        "served a read it cannot confirm after the switch: {r:?}"
    );
    for (i, n) in c.nodes.iter().enumerate() {
        if i != l {
            n.signal("-CONT");
        }
    }
    wait_for(60, "a confirmed read once the followers are back", || {
        let l = c.leader()?;
        (bulk(&c.nodes[l].cmd(&["GET", "k"])).as_deref() == Some("v1")).then_some(())
    });
    // Turning leases back on at run time is refused, with the reason.
    let r = leader.cmd(&["CONFIG", "SET", "raft.read-mode", "lease"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("read-mode lease is set at load only")),
        "{r:?}"
    );
    assert_eq!(config_get(leader, "raft.read-mode"), "readindex");
}

/// A node that loaded with another read-mode than the cluster's is
/// refused at JOIN, at once and with the reason.
#[test]
fn a_node_with_another_read_mode_cannot_join() {
    let first = single_node(&["--raft.read-mode", "lease"]);
    let other = Node::start(&[]);
    let r = other.cmd(&["RAFT.CLUSTER", "JOIN", &first.addr()]);
    let e = err_text(&r).unwrap_or_else(|| panic!("joined: {r:?}"));
    assert!(
        e.contains("read-mode readindex") && e.contains("the cluster has lease"),
        "{e}"
    );
    assert_eq!(other.info_field("state"), "uninitialized");
    assert_eq!(first.info_field("num_nodes"), "1");
}

fn refused(n: &Node, args: &[&str]) -> String {
    let r = n.cmd(args);
    let e = err_text(&r)
        .unwrap_or_else(|| panic!("{args:?} accepted: {r:?}"))
        .to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

#[test]
fn config_set_that_would_split_the_nodes_or_change_an_at_load_setting_is_refused() {
    // appendonly yes at load: overridden with the reason CONFIG SET gives.
    let n = single_node(&["--appendonly", "yes"]);
    let aof = "the Raft log is the persistence; AOF would replay commands twice";
    assert!(n.log().contains(aof), "{}", n.log());

    let e = refused(&n, &["CONFIG", "SET", "appendonly", "yes"]);
    assert!(e.contains(aof), "{e}");
    let e = refused(&n, &["CONFIG", "SET", "save", "900 1"]);
    assert!(
        e.contains("RDB saves are taken by RedisRaft as snapshots only"),
        "{e}"
    );
    let e = refused(&n, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    assert!(
        e.contains("eviction would make nodes' datasets differ"),
        "{e}"
    );
    let other = free_port().to_string();
    for cmd in ["REPLICAOF", "SLAVEOF"] {
        let e = refused(&n, &[cmd, "127.0.0.1", &other]);
        assert!(
            e.contains("a RedisRaft node must not be a Redis replica"),
            "{e}"
        );
    }
    assert!(ok(&n.cmd(&["REPLICAOF", "NO", "ONE"])));
    for (name, value) in [
        ("raft.id", "9"),
        ("raft.addr", "127.0.0.1:1"),
        ("raft.log-filename", "other.db"),
        ("raft.periodic-interval", "50"),
        ("raft.request-timeout", "100"),
        ("raft.election-timeout", "2000"),
    ] {
        let e = refused(&n, &["CONFIG", "SET", name, value]);
        assert!(e.contains(&format!("{name} is set at load")), "{name}: {e}");
    }
    let e = refused(&n, &["CONFIG", "SET", "raft.read-mode", "lease"]);
    assert!(e.contains("read-mode lease is set at load only"), "{e}");
    let e = refused(&n, &["CONFIG", "SET", "raft.sharding", "yes"]);
    assert!(e.contains("no sharding"), "{e}");
    let e = refused(&n, &["CONFIG", "SET", "raft.external-sharding", "yes"]);
    assert!(e.contains("no sharding"), "{e}");
    // Several pairs: one bad pair refuses all of them.
    let e = refused(
        &n,
        &["CONFIG", "SET", "maxmemory", "1000000", "save", "60 1"],
    );
    assert!(e.contains("save"), "{e}");
    // Inside MULTI the refusal aborts the transaction, as Redis does.
    let mut conn = n.conn();
    assert!(ok(&conn.call(&[b"MULTI".as_slice()]).unwrap()));
    let r = conn
        .call(&[b"CONFIG".as_slice(), b"SET", b"appendonly", b"yes"])
        .unwrap();
    assert!(err_text(&r).is_some_and(|e| e.contains(aof)), "{r:?}");
    let r = conn.call(&[b"EXEC".as_slice()]).unwrap();
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("EXECABORT")),
        "{r:?}"
    );

    // Nothing changed.
    assert_eq!(config_get(&n, "appendonly"), "no");
    assert_eq!(config_get(&n, "save"), "");
    assert_eq!(config_get(&n, "maxmemory-policy"), "noeviction");
    assert_eq!(config_get(&n, "maxmemory"), "0");
    assert_eq!(config_get(&n, "raft.election-timeout"), "1000");
    match n.cmd(&["ROLE"]) {
        RespValue::Array(Some(a)) => assert_eq!(bulk(&a[0]).as_deref(), Some("master")),
        other => panic!("ROLE: {other:?}"),
    }

    // Live settings and harmless values still change, several at once.
    assert!(ok(&n.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        "100000000",
        "save",
        "",
        "appendonly",
        "no",
        "maxmemory-policy",
        "noeviction",
        "raft.append-req-max-count",
        "8",
        "raft.append-req-max-size",
        "65536",
        "raft.read-mode",
        "readindex",
        "raft.scan-size",
        "50",
    ])));
    assert_eq!(config_get(&n, "maxmemory"), "100000000");
    assert_eq!(config_get(&n, "raft.append-req-max-count"), "8");
    assert_eq!(config_get(&n, "raft.scan-size"), "50");
    assert!(n.log().contains("raft.scan-size '50' has no effect"));
    // The node still replicates with the new append limits.
    assert!(ok(&n.cmd(&["SET", "k", "v"])));
    assert_eq!(bulk(&n.cmd(&["GET", "k"])).as_deref(), Some("v"));
}

#[test]
fn a_client_that_disconnects_inside_multi_leaves_no_transaction_behind() {
    let n = single_node(&[]);
    let mut a = n.conn();
    assert!(ok(&a.call(&[b"MULTI".as_slice()]).unwrap()));
    for _ in 0..3 {
        let mut b = n.conn();
        assert!(ok(&b.call(&[b"MULTI".as_slice()]).unwrap()));
        let r = b.call(&[b"SET".as_slice(), b"k", b"from-b"]).unwrap();
        assert!(matches!(&r, RespValue::Simple(s) if s == "QUEUED"), "{r:?}");
    }
    // The three clients are gone: only A's transaction is left.
    wait_for(30, "the disconnected clients' transactions to go", || {
        (n.info_field("open_transactions") == "1").then_some(())
    });
    let r = a.call(&[b"SET".as_slice(), b"k", b"from-a"]).unwrap();
    assert!(matches!(&r, RespValue::Simple(s) if s == "QUEUED"), "{r:?}");
    let r = a.call(&[b"EXEC".as_slice()]).unwrap();
    assert!(
        matches!(&r, RespValue::Array(Some(v)) if v.len() == 1),
        "{r:?}"
    );
    assert_eq!(bulk(&n.cmd(&["GET", "k"])).as_deref(), Some("from-a"));
    assert_eq!(n.info_field("open_transactions"), "0");
}

/// The old bound dropped the oldest open transaction once 100,000 clients
/// had opened one: its next command then ran at once, outside it. Now
/// nothing is dropped; clients that left take theirs with them.
#[test]
fn an_open_transaction_is_never_dropped_to_make_room() {
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("redis.sock");
    let n = single_node(&["--unixsocket", sock.to_str().unwrap()]);
    let mut a = n.conn();
    assert!(ok(&a.call(&[b"MULTI".as_slice()]).unwrap()));
    let mut reply = [0u8; 5];
    for i in 0..100_001 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock)
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        s.write_all(b"MULTI\r\n").unwrap();
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n", "client {i}");
    }
    let r = a.call(&[b"SET".as_slice(), b"k", b"v"]).unwrap();
    assert!(
        matches!(&r, RespValue::Simple(s) if s == "QUEUED"),
        "A's transaction was dropped: {r:?}"
    );
    let r = a.call(&[b"EXEC".as_slice()]).unwrap();
    assert!(
        matches!(&r, RespValue::Array(Some(v)) if v.len() == 1),
        "{r:?}"
    );
    wait_for(60, "the disconnected clients' transactions to go", || {
        (n.info_field("open_transactions") == "0").then_some(())
    });
}

/// Every setting RedisRaft's Deployment doc lists (and its two others,
/// external-sharding and migration-debug), in a redis.conf as written for
/// RedisRaft: the node starts and serves. The sharding settings we do not
/// use are accepted; one away from its default is logged.
#[test]
fn a_redis_conf_written_for_redisraft_starts_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    let log = dir.path().join("redis.log");
    let settings = format!(
        "raft.id 7
raft.addr 127.0.0.1:{port}
raft.log-filename raftlog.db
raft.periodic-interval 100
raft.request-timeout 200
raft.election-timeout 1000
raft.connection-timeout 3000
raft.join-timeout 120000
raft.reconnect-interval 100
raft.proxy-response-timeout 10000
raft.response-timeout 1000
raft.follower-proxy no
raft.log-max-file-size 128000000
raft.log-max-cache-size 64000000
raft.log-fsync yes
raft.quorum-reads yes
raft.sharding no
raft.slot-config 0:16383
raft.shardgroup-update-interval 5000
raft.ignored-commands \"\"
raft.loglevel notice
raft.trace off
raft.append-req-max-count 2
raft.append-req-max-size 2097152
raft.snapshot-req-max-count 32
raft.snapshot-req-max-size 65536
raft.scan-size 500
raft.tls-enabled no
raft.cluster-user default
raft.cluster-password \"\"
raft.external-sharding no
raft.migration-debug none
"
    );
    let write_conf = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\ndbfilename raft.rdb\nsave \"\"\n\
                 appendonly no\ndatabases 1\nmaxmemory-policy noeviction\nloadmodule {}\n{settings}{extra}",
                dir.path().display(),
                log.display(),
                module_path().display()
            ),
        )
        .unwrap();
    };
    write_conf("");
    let child = ChildGuard(
        Command::new(common::server_bin())
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let n = Node::attach(port);
    wait_for(20, "the server started from redis.conf", || {
        n.try_conn().ok()
    });
    let r = n.cmd(&["RAFT.CLUSTER", "INIT"]);
    assert!(
        matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
        "{r:?}"
    );
    assert!(ok(&n.cmd(&["SET", "k", "v"])));
    assert_eq!(bulk(&n.cmd(&["GET", "k"])).as_deref(), Some("v"));
    assert_eq!(n.info_field("node_id"), "7");
    assert_eq!(config_get(&n, "raft.sharding"), "no");
    assert_eq!(config_get(&n, "raft.slot-config"), "0:16383");
    assert_eq!(config_get(&n, "raft.scan-size"), "500");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("raft.scan-size '500' has no effect: this RedisRaft has no sharding"),
        "{text}"
    );
    drop(child);

    // sharding yes needs a feature we do not have: refused at load.
    write_conf("raft.sharding yes\n");
    let mut child = Command::new(common::server_bin())
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited, "a node with sharding yes started");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("sharding yes is not supported: this RedisRaft has no sharding"),
        "{text}"
    );
}
