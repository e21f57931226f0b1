//! End-to-end tests against real redis-server processes with the module.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// GET through RAFT.DEBUG EXEC: what this node's dataset holds now.
fn local_get(n: &Node, key: &str) -> Option<String> {
    bulk(&n.cmd(&["RAFT.DEBUG", "EXEC", "GET", key]))
}

fn wait_local(n: &Node, key: &str, want: &str) {
    wait_for(20, &format!("{key}={want} on {}", n.addr()), || {
        (local_get(n, key).as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn info_before_init_and_commands_refused_until_then() {
    let n = Node::start(&[]);
    assert_eq!(n.info_field("state"), "uninitialized");
    assert_eq!(n.info_field("node_id"), "0");
    let info = match n.cmd(&["INFO", "raft"]) {
        RespValue::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        o => panic!("{o:?}"),
    };
    assert!(info.contains("raft_state:uninitialized"), "{info}");
    let r = n.cmd(&["SET", "k", "v"]);
    assert_eq!(err_text(&r), Some("NOCLUSTER No Raft cluster"));
    // Commands that are not data commands still work.
    assert!(matches!(n.cmd(&["PING"]), RespValue::Simple(s) if s == "PONG"));
}

#[test]
fn single_node_init_and_set_follow_the_index_layout() {
    let n = Node::start(&["--raft.id", "1"]);
    let r = n.cmd(&["RAFT.CLUSTER", "INIT"]);
    let RespValue::Simple(s) = &r else {
        panic!("{r:?}")
    };
    let dbid = s.strip_prefix("OK ").expect("OK <dbid>");
    assert_eq!(dbid.len(), 32);
    wait_for(10, "leader", || {
        (n.info_field("role") == "leader").then_some(())
    });
    assert!(ok(&n.cmd(&["SET", "k", "v"])));
    assert_eq!(n.info_field("current_index"), "3");
    assert_eq!(bulk(&n.cmd(&["GET", "k"])).as_deref(), Some("v"));
    // Reads add no entry.
    assert_eq!(n.info_field("current_index"), "3");
    assert_eq!(n.info_field("dbid"), dbid);
    assert_eq!(n.info_field("state"), "up");
    // A second INIT is refused.
    assert!(err_text(&n.cmd(&["RAFT.CLUSTER", "INIT"])).is_some());
    // The command's own error comes back after it applied.
    let r = n.cmd(&["LPUSH", "k", "x"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("WRONGTYPE")),
        "{r:?}"
    );
}

#[test]
fn three_nodes_replicate_redirect_and_proxy() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    assert_eq!(leader.info_field("current_index"), "6");
    assert_eq!(leader.info_field("num_voting_nodes"), "3");
    assert!(ok(&leader.cmd(&["SET", "k", "v1"])));
    for n in &c.nodes {
        wait_local(n, "k", "v1");
    }
    let f = (l + 1) % 3;
    let r = c.nodes[f].cmd(&["SET", "k", "v2"]);
    assert_eq!(
        err_text(&r),
        Some(format!("MOVED 0 {}", leader.addr()).as_str())
    );
    let r = c.nodes[f].cmd(&["GET", "k"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("MOVED")),
        "{r:?}"
    );

    // follower-proxy: the follower forwards and relays the leader's reply.
    assert!(ok(&c.nodes[f].cmd(&[
        "CONFIG",
        "SET",
        "raft.follower-proxy",
        "yes"
    ])));
    assert!(ok(&c.nodes[f].cmd(&["SET", "k", "v3"])));
    assert_eq!(bulk(&c.nodes[f].cmd(&["GET", "k"])).as_deref(), Some("v3"));
    assert_eq!(c.nodes[f].cmd(&["INCR", "n"]), RespValue::Integer(1));
    assert_ne!(c.nodes[f].info_field("proxy_reqs"), "0");

    // Refused commands say why.
    for cmd in [
        &["CLIENT", "PAUSE", "10"][..],
        &["BGSAVE"],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "1000"],
    ] {
        let r = leader.cmd(cmd);
        assert!(
            err_text(&r).is_some_and(|e| e.starts_with("ERR")),
            "{cmd:?}: {r:?}"
        );
    }
    // RAFT <command> is the explicit form.
    assert!(ok(&leader.cmd(&["RAFT", "SET", "e", "1"])));
    wait_local(&c.nodes[f], "e", "1");
    c.assert_same_dataset();
}

#[test]
fn leader_kill9_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let mut acked = Vec::new();
    for i in 0..50 {
        let r = c.nodes[l].cmd(&["RPUSH", "list", &i.to_string()]);
        assert!(matches!(r, RespValue::Integer(_)), "{r:?}");
        acked.push(i.to_string());
    }
    let killed_at = Instant::now();
    c.nodes[l].kill9();
    let nl = c.wait_leader();
    let failover = killed_at.elapsed();
    eprintln!("failover after leader kill -9: {} ms", failover.as_millis());
    assert_ne!(nl, l);
    for i in 50..60 {
        let r = c.nodes[nl].cmd(&["RPUSH", "list", &i.to_string()]);
        assert!(matches!(r, RespValue::Integer(_)), "{r:?}");
        acked.push(i.to_string());
    }
    let r = c.nodes[nl].cmd(&["LRANGE", "list", "0", "-1"]);
    let RespValue::Array(Some(items)) = r else {
        panic!("{r:?}")
    };
    let got: Vec<String> = items.iter().filter_map(bulk).collect();
    assert_eq!(got, acked);
    // The killed node comes back and catches up.
    c.nodes[l].launch();
    wait_for(30, "restarted node catches up", || {
        match c.nodes[l].cmd(&["RAFT.DEBUG", "EXEC", "LLEN", "list"]) {
            RespValue::Integer(60) => Some(()),
            _ => None,
        }
    });
    c.assert_same_dataset();
}

#[test]
fn paused_leader_serves_no_stale_read_after_resume() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "old"])));
    c.nodes[l].signal("-STOP");
    // The others elect a new leader and take a new write.
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let nl = wait_for(30, "new leader among the others", || {
        others
            .iter()
            .copied()
            .find(|i| c.nodes[*i].info_field("role") == "leader")
    });
    assert!(ok(&c.nodes[nl].cmd(&["SET", "k", "new"])));
    // A client already connected to the old leader sends a read while it is
    // paused; it is processed on resume.
    let mut conn = c.nodes[l].conn();
    conn.send(&[b"GET".as_slice(), b"k"]).unwrap();
    c.nodes[l].signal("-CONT");
    let r = conn.recv().unwrap();
    match r {
        RespValue::Bulk(Some(v)) => assert_eq!(v, b"new", "stale read served"),
        RespValue::Error(e) => assert!(
            e.starts_with("MOVED") || e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    c.assert_same_dataset();
}

#[test]
fn all_nodes_restarted_recover_their_data() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    for i in 0..20 {
        assert!(ok(&c.nodes[l].cmd(&[
            "SET",
            &format!("k{i}"),
            &i.to_string()
        ])));
    }
    assert_eq!(
        c.nodes[l].cmd(&["INCRBY", "counter", "5"]),
        RespValue::Integer(5)
    );
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        n.launch();
    }
    let l = c.wait_leader();
    for i in 0..20 {
        assert_eq!(
            bulk(&c.nodes[l].cmd(&["GET", &format!("k{i}")])),
            Some(i.to_string())
        );
    }
    // Not applied twice.
    assert_eq!(
        bulk(&c.nodes[l].cmd(&["GET", "counter"])).as_deref(),
        Some("5")
    );
    for n in &c.nodes {
        wait_local(n, "k19", "19");
    }
    c.assert_same_dataset();
}

#[test]
fn auto_ids_are_unique_and_remove_stops_the_node() {
    let c = Cluster::new(3, &[]);
    let ids: Vec<String> = c.nodes.iter().map(|n| n.info_field("node_id")).collect();
    for id in &ids {
        assert_ne!(id, "0");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{ids:?}");

    let l = c.wait_leader();
    let victim = (l + 1) % 3;
    let before: u64 = c.nodes[l].info_field("current_index").parse().unwrap();
    let r = c.nodes[l].cmd(&["RAFT.NODE", "REMOVE", &ids[victim]]);
    assert!(ok(&r), "{r:?}");
    assert_eq!(
        c.nodes[l]
            .info_field("current_index")
            .parse::<u64>()
            .unwrap(),
        before + 1
    );
    assert_eq!(c.nodes[l].info_field("num_voting_nodes"), "2");
    wait_for(20, "removed node says so", || {
        let r = c.nodes[victim].cmd(&["SET", "x", "1"]);
        err_text(&r)
            .is_some_and(|e| e.contains("removed"))
            .then_some(())
    });
    // The two left still take writes.
    assert!(ok(&c.nodes[l].cmd(&["SET", "after", "1"])));
}

#[test]
fn join_to_an_unreachable_address_fails_clearly() {
    let n = Node::start(&["--raft.join-timeout", "1500"]);
    let dead = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let r = n.cmd(&["RAFT.CLUSTER", "JOIN", &dead]);
    let e = err_text(&r).unwrap_or_else(|| panic!("{r:?}")).to_string();
    assert!(e.contains("failed to join") && e.contains(&dead), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Still uninitialized, and a bad address is refused at once.
    assert_eq!(n.info_field("state"), "uninitialized");
    assert!(err_text(&n.cmd(&["RAFT.CLUSTER", "JOIN", "nohost"])).is_some());
}

#[test]
fn garbage_to_appendentries_is_refused_and_the_node_keeps_serving() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let n = &c.nodes[(l + 1) % 3];
    let dbid = n.info_field("dbid");
    for args in [
        vec!["RAFT.APPENDENTRIES"],
        vec!["RAFT.APPENDENTRIES", "wrongdbid", "1", "xxx"],
        vec!["RAFT.APPENDENTRIES", &dbid, "notanumber", "xxx"],
        vec!["RAFT.APPENDENTRIES", &dbid, "1", "\u{1}\u{2}garbage\u{ff}"],
        vec!["RAFT.REQUESTVOTE", &dbid, "1", "garbage"],
    ] {
        let r = n.cmd(&args);
        assert!(err_text(&r).is_some(), "{args:?}: {r:?}");
    }
    assert!(ok(&c.nodes[l].cmd(&["SET", "still", "ok"])));
    wait_local(n, "still", "ok");
    c.assert_same_dataset();
}

#[test]
fn bad_load_arguments_refuse_to_start_and_the_positional_form_loads() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::server_bin())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .args(["--save", "", "--loadmodule"])
        .arg(module_path())
        .args(["bogus=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unknown argument 'bogus'"), "{text}");

    // RedisRaft's older positional form.
    let port = free_port();
    let child = ChildGuard(
        Command::new(common::server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir.path())
            .args(["--save", "", "--loadmodule"])
            .arg(module_path())
            .args([
                "id=5".to_string(),
                format!("addr=127.0.0.1:{port}"),
                "raftlog=pos.db".into(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let v = wait_for(20, "positional node answers", || {
        let mut c =
            Connection::connect(&addr, Duration::from_secs(1), Duration::from_secs(5), None)
                .ok()?;
        match c.call(&[b"CONFIG".as_slice(), b"GET", b"raft.id"]).ok()? {
            RespValue::Array(Some(a)) => a.get(1).and_then(bulk),
            _ => None,
        }
    });
    drop(child);
    assert_eq!(v, "5");
}

#[test]
fn nodes_authenticate_with_cluster_password_and_unauthenticated_internal_commands_are_refused() {
    let extra = [
        "--requirepass",
        "s3cret",
        "--raft.cluster-password",
        "s3cret",
    ];
    let c = Cluster::form(
        (0..3)
            .map(|_| Node::start_with_auth(&extra, "s3cret"))
            .collect(),
    );
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "v"])));
    for n in &c.nodes {
        wait_local(n, "k", "v");
    }
    // Without AUTH, an internal command changes nothing.
    let f = &c.nodes[(l + 1) % 3];
    let mut raw = Connection::connect(
        &f.addr(),
        Duration::from_secs(1),
        Duration::from_secs(5),
        None,
    )
    .unwrap();
    let dbid = f.info_field("dbid");
    let r = raw
        .call(&[
            b"RAFT.APPENDENTRIES".as_slice(),
            dbid.as_bytes(),
            b"1",
            b"x",
        ])
        .unwrap();
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("NOAUTH")),
        "{r:?}"
    );
}

#[test]
fn transfer_leader_and_timeout_now_move_leadership() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let target = (l + 1) % 3;
    let target_id = c.nodes[target].info_field("node_id");
    assert!(ok(&c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", &target_id])));
    wait_for(20, "transfer", || {
        (c.nodes[target].info_field("role") == "leader").then_some(())
    });
    // Every node knows the new leader (the old one may not have heard from
    // it yet: it would answer CLUSTERDOWN, not MOVED).
    assert_eq!(c.wait_leader(), target);
    // A follower asked for a transfer is redirected.
    let r = c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("MOVED")),
        "{r:?}"
    );
    let third = 3 - l - target;
    assert!(ok(&c.nodes[third].cmd(&["RAFT.TIMEOUT_NOW"])));
    wait_for(20, "election on timeout-now", || {
        (c.nodes[third].info_field("role") == "leader").then_some(())
    });
    assert!(ok(&c.nodes[third].cmd(&["SET", "k", "v"])));
}

#[test]
fn join_through_a_follower_follows_moved_to_the_leader() {
    let c = Cluster::new(2, &[]);
    let l = c.wait_leader();
    let follower = &c.nodes[1 - l];
    let n = Node::start(&[]);
    // The first address is dead, the second a follower: JOIN skips the one
    // and follows -MOVED from the other.
    let dead = format!("127.0.0.1:{}", free_port());
    let r = n.cmd(&["RAFT.CLUSTER", "JOIN", &dead, &follower.addr()]);
    assert!(ok(&r), "{r:?}\n{}", n.log());
    assert_eq!(n.info_field("is_voting"), "yes");
    assert_eq!(c.nodes[l].info_field("num_voting_nodes"), "3");
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "v"])));
    wait_local(&n, "k", "v");
}

#[test]
fn corruption_in_the_middle_of_the_log_refuses_start_naming_the_file() {
    let mut n = Node::start(&[]);
    assert!(matches!(
        n.cmd(&["RAFT.CLUSTER", "INIT"]),
        RespValue::Simple(_)
    ));
    wait_for(10, "leader", || {
        (n.info_field("role") == "leader").then_some(())
    });
    for i in 0..200 {
        assert!(ok(&n.cmd(&["SET", &format!("key{i}"), &"x".repeat(100)])));
    }
    n.kill9();
    let logdir = n.dir.join("raftlog.db");
    let file = std::fs::read_dir(&logdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .expect("a log file");
    let mut bytes = std::fs::read(&file).unwrap();
    // Early in the file: inside the first records, with many valid ones
    // after (the file's end may be preallocated zeros).
    for b in &mut bytes[200..216] {
        *b ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    let mut child = ChildGuard(n.spawn_with(&n.extra.clone()));
    let status = wait_for(20, "the server to refuse to start", || {
        child.0.try_wait().ok().flatten()
    });
    assert!(!status.success());
    let log = n.log();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(log.contains("corrupt") && log.contains(&name), "{log}");
}

#[test]
fn removing_the_leader_hands_over_leadership() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let id = c.nodes[l].info_field("node_id");
    assert!(ok(&c.nodes[l].cmd(&["RAFT.NODE", "REMOVE", &id])));
    assert_eq!(c.nodes[l].info_field("state"), "removed");
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let nl = wait_for(10, "a new leader among the others", || {
        others
            .iter()
            .copied()
            .find(|i| c.nodes[*i].info_field("role") == "leader")
    });
    assert!(ok(&c.nodes[nl].cmd(&["SET", "k", "v"])));
    assert_eq!(c.nodes[nl].info_field("num_voting_nodes"), "2");
}

fn config_get(n: &Node, name: &str) -> String {
    match n.cmd(&["CONFIG", "GET", name]) {
        RespValue::Array(Some(a)) => a.get(1).and_then(bulk).unwrap_or_default(),
        o => panic!("{o:?}"),
    }
}

#[test]
fn configs_work_through_redis_conf_and_config_set_and_unsafe_redis_settings_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nappendonly yes\nsave 60 1\nmaxmemory-policy allkeys-lru\n\
             loadmodule {}\nraft.addr 127.0.0.1:{port}\nraft.election-timeout 1500\nraft.quorum-reads no\n",
            dir.path().display(),
            module_path().display()
        ),
    )
    .unwrap();
    let child = ChildGuard(
        Command::new(common::server_bin())
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let n = Node::attach(port);
    wait_for(20, "server from redis.conf", || n.try_conn().ok());
    assert_eq!(config_get(&n, "raft.election-timeout"), "1500");
    assert_eq!(config_get(&n, "raft.quorum-reads"), "no");
    // Overridden, with a warning, at load.
    assert_eq!(config_get(&n, "appendonly"), "no");
    assert_eq!(config_get(&n, "save"), "");
    assert_eq!(config_get(&n, "maxmemory-policy"), "noeviction");
    // Run-time changes, and refusals with a reason.
    assert!(ok(&n.cmd(&[
        "CONFIG",
        "SET",
        "raft.response-timeout",
        "2000"
    ])));
    assert_eq!(config_get(&n, "raft.response-timeout"), "2000");
    // Raft's timing is fixed when the Raft node starts: CONFIG SET says so.
    let r = n.cmd(&["CONFIG", "SET", "raft.election-timeout", "2000"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("set at load")),
        "{r:?}"
    );
    // So is tls-enabled: the stored addresses are TLS ports or plain ones.
    let r = n.cmd(&["CONFIG", "SET", "raft.tls-enabled", "yes"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("set at load")),
        "{r:?}"
    );
    let r = n.cmd(&["CONFIG", "SET", "raft.id", "9"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("set at load")),
        "{r:?}"
    );
    let r = n.cmd(&["CONFIG", "SET", "raft.trace", "bogus"]);
    assert!(err_text(&r).is_some(), "{r:?}");
    drop(child);

    // Redis Cluster mode is refused at load.
    let out = Command::new(common::server_bin())
        .args([
            "--port",
            &free_port().to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--dir",
        ])
        .arg(dir.path())
        .arg("--loadmodule")
        .arg(module_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster-enabled"));
}

#[test]
fn multi_exec_is_one_entry_applied_atomically_on_every_node() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    let before: u64 = leader.info_field("current_index").parse().unwrap();
    let mut conn = leader.conn();
    let mut call = |args: &[&str]| {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        conn.call(&a).unwrap()
    };
    assert!(ok(&call(&["MULTI"])));
    assert!(matches!(call(&["SET", "a", "1"]), RespValue::Simple(s) if s == "QUEUED"));
    assert!(matches!(call(&["INCR", "a"]), RespValue::Simple(s) if s == "QUEUED"));
    assert!(matches!(call(&["RPUSH", "l", "x", "y"]), RespValue::Simple(s) if s == "QUEUED"));
    assert!(matches!(call(&["GET", "a"]), RespValue::Simple(s) if s == "QUEUED"));
    match call(&["EXEC"]) {
        RespValue::Array(Some(r)) => {
            assert_eq!(r.len(), 4, "{r:?}");
            assert!(ok(&r[0]));
            assert!(matches!(r[1], RespValue::Integer(2)));
            assert!(matches!(r[2], RespValue::Integer(2)));
            assert_eq!(bulk(&r[3]).as_deref(), Some("2"));
        }
        other => panic!("EXEC: {other:?}"),
    }
    let after: u64 = leader.info_field("current_index").parse().unwrap();
    assert_eq!(after, before + 1, "a MULTI/EXEC block is one log entry");
    for n in &c.nodes {
        wait_local(n, "a", "2");
    }
    // Errors while queueing abort the block, as in Redis.
    assert!(ok(&call(&["MULTI"])));
    assert!(err_text(&call(&["MIGRATE", "127.0.0.1", "1", "a", "0", "1000"])).is_some());
    assert!(err_text(&call(&["EXEC"])).is_some_and(|e| e.starts_with("EXECABORT")));
    assert!(ok(&call(&["MULTI"])));
    assert!(err_text(&call(&["SET", "a"])).is_some());
    assert!(err_text(&call(&["EXEC"])).is_some_and(|e| e.starts_with("EXECABORT")));
    assert!(ok(&call(&["MULTI"])));
    assert!(err_text(&call(&["MULTI"])).is_some_and(|e| e.contains("nested")));
    assert!(matches!(call(&["SET", "a", "9"]), RespValue::Simple(s) if s == "QUEUED"));
    assert!(ok(&call(&["DISCARD"])));
    assert!(err_text(&call(&["EXEC"])).is_some_and(|e| e.contains("without MULTI")));
    assert_eq!(bulk(&call(&["GET", "a"])).as_deref(), Some("2"));
    // WATCH works (tests/watch.rs); inside MULTI it is not allowed.
    assert!(ok(&call(&["WATCH", "a"])));
    assert!(ok(&call(&["MULTI"])));
    assert!(err_text(&call(&["WATCH", "a"])).is_some());
    assert!(ok(&call(&["DISCARD"])));
    c.assert_same_dataset();
}

#[test]
fn eval_replicates_the_script_as_one_entry() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    // Compare-and-set, as the Jepsen register workload uses it.
    let cas = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]); return 1 else return 0 end";
    assert!(ok(&leader.cmd(&["SET", "r", "1"])));
    assert!(matches!(
        leader.cmd(&["EVAL", cas, "1", "r", "1", "5"]),
        RespValue::Integer(1)
    ));
    assert!(matches!(
        leader.cmd(&["EVAL", cas, "1", "r", "1", "7"]),
        RespValue::Integer(0)
    ));
    for n in &c.nodes {
        wait_local(n, "r", "5");
    }
    assert_eq!(
        bulk(&leader.cmd(&["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "r"])).as_deref(),
        Some("5")
    );
    // An unknown SHA: Redis's NOSCRIPT, on which clients send EVAL
    // (tests/scripts.rs covers the replicated script cache).
    assert!(
        err_text(&leader.cmd(&["EVALSHA", "abc", "0"])).is_some_and(|e| e.starts_with("NOSCRIPT")),
        "EVALSHA of an unknown script"
    );
    c.assert_same_dataset();
}

/// Found by the Jepsen suite (member + kill nemeses): a node killed during
/// RAFT.CLUSTER JOIN, before the leader added it, restarted in no
/// configuration and refused a new JOIN ("Already cluster member") forever.
#[test]
fn a_join_cut_short_by_a_crash_can_be_resumed_after_restart() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "v"])));
    // The leader loses its quorum, so the new node's ADD cannot commit.
    for i in 0..3 {
        if i != l {
            c.nodes[i].kill9();
        }
    }
    let mut n4 = Node::start(&[]);
    let leader_addr = c.nodes[l].addr();
    let mut conn = n4.conn();
    conn.send_many(&[vec![
        b"RAFT.CLUSTER".to_vec(),
        b"JOIN".to_vec(),
        leader_addr.into_bytes(),
    ]])
    .unwrap();
    wait_for(10, "the joining node to start its Raft node", || {
        (n4.info_field("state") == "joining").then_some(())
    });
    n4.kill9();
    for i in 0..3 {
        if i != l {
            c.nodes[i].launch();
        }
    }
    c.wait_leader();
    n4.launch();
    assert_eq!(n4.info_field("state"), "joining");
    let targets: Vec<String> = c.nodes.iter().map(|n| n.addr()).collect();
    let mut args = vec!["RAFT.CLUSTER", "JOIN"];
    args.extend(targets.iter().map(String::as_str));
    let r = n4.cmd(&args);
    assert!(ok(&r), "JOIN after restart: {r:?}; log:\n{}", n4.log());
    wait_for(30, "the resumed node to be an up voter", || {
        (n4.info_field("state") == "up" && n4.info_field("is_voting") == "yes").then_some(())
    });
    wait_local(&n4, "k", "v");
}

#[test]
fn the_entry_cache_holds_the_newest_entries_and_can_be_turned_off() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    for i in 0..50 {
        assert!(ok(&leader.cmd(&["SET", &format!("k{i}"), "v"])));
    }
    let cached: u64 = leader.info_field("cache_num_entries").parse().unwrap();
    let entries: u64 = leader.info_field("log_entries").parse().unwrap();
    assert_eq!(cached, entries, "a small log is cached whole");
    assert_ne!(leader.info_field("cache_memory_size"), "0");

    // Off: emptied at the next tick, and replication reads from the files.
    assert!(ok(&leader.cmd(&[
        "CONFIG",
        "SET",
        "raft.log-max-cache-size",
        "0"
    ])));
    wait_for(5, "the cache to empty", || {
        (leader.info_field("cache_memory_size") == "0").then_some(())
    });
    // A follower down meanwhile must be sent what it missed: with no cache,
    // the leader reads those entries back from its files.
    let f = (l + 1) % 3;
    c.nodes[f].kill9();
    let leader = &c.nodes[l];
    for i in 50..100 {
        assert!(ok(&leader.cmd(&["SET", &format!("k{i}"), "w"])));
    }
    assert_eq!(leader.info_field("cache_num_entries"), "0");
    c.nodes[f].launch();
    for n in &c.nodes {
        wait_local(n, "k99", "w");
        wait_local(n, "k0", "v");
        wait_local(n, "k50", "w");
    }
    c.assert_same_dataset();
}

/// Found by a review (a client reproduced it): any client that knows the
/// dbid (INFO shows it) could send a heartbeat whose commit index lies past
/// the log, or appended entries with a gap; raft-rs panics on both and the
/// Raft thread died behind a node that still said `role:leader`.
#[test]
fn forged_peer_messages_that_would_panic_raft_are_dropped_and_the_node_keeps_serving() {
    use protobuf::Message as _;
    use raft::eraftpb::{Entry, Message, MessageType};
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    for target in [l, (l + 1) % 3] {
        let n = &c.nodes[target];
        let dbid = n.info_field("dbid");
        let me: u64 = n.info_field("node_id").parse().unwrap();
        let term: u64 = n.info_field("current_term").parse().unwrap();
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        hb.from = 99;
        hb.to = me;
        hb.term = term + 1;
        hb.commit = 1_000_000_000;
        let mut app = Message::default();
        app.set_msg_type(MessageType::MsgAppend);
        app.from = 99;
        app.to = me;
        app.term = term + 1;
        app.index = 1;
        app.log_term = 1;
        app.entries = vec![
            Entry {
                index: 2,
                term: term + 1,
                ..Default::default()
            },
            Entry {
                index: 7,
                term: term + 1,
                ..Default::default()
            },
        ]
        .into();
        for m in [hb, app] {
            let body = m.write_to_bytes().unwrap();
            let args: Vec<&[u8]> = vec![b"RAFT.APPENDENTRIES", dbid.as_bytes(), b"99", &body];
            let _ = n.conn().call(&args);
        }
    }
    // Every node still works: writes commit and reach all of them.
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["SET", "after", "forged"])));
    for n in &c.nodes {
        wait_local(n, "after", "forged");
        assert_eq!(n.info_field("state"), "up", "{}", n.info());
    }
    c.assert_same_dataset();
}

/// Found by a review (a client reproduced both): a NUL byte in a node
/// address or a string config was accepted, and the next INFO or CONFIG GET
/// aborted redis-server (Redis copies them as C strings).
#[test]
fn nul_bytes_in_addresses_and_string_configs_are_refused() {
    let c = Cluster::new(1, &[]);
    let n = &c.nodes[0];
    let add: Vec<&[u8]> = vec![b"RAFT.NODE", b"ADD", b"5", b"a\0b:6379"];
    let r = n.conn().call(&add).unwrap();
    assert!(
        err_text(&r).is_some_and(|e| e.contains("bad host")),
        "{r:?}"
    );
    let set: Vec<&[u8]> = vec![b"CONFIG", b"SET", b"raft.ignored-commands", b"a\0b"];
    let r = n.conn().call(&set).unwrap();
    assert!(err_text(&r).is_some(), "{r:?}");
    // The server is alive and both still read back.
    assert_eq!(n.info_field("num_nodes"), "1");
    let got = n.cmd(&["CONFIG", "GET", "raft.ignored-commands"]);
    assert!(!format!("{got:?}").contains('\0'), "{got:?}");
}
