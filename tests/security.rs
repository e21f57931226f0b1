//! Security: a client's rights through the cluster are exactly those it has
//! on plain Redis (checked before anything is proposed), only the cluster
//! user speaks the node protocol, no script or transaction reaches a raft.*
//! command, and the unsafe test knob exists only in test builds.
//!
//! Run: `REDISRAFT_MODULE=$PWD/redisraft.so cargo test --release --test
//! security -- --test-threads=2 --nocapture` (the matrix is printed).

mod common;

use std::time::Duration;

use common::*;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

/// The users of the matrix, as ACL SETUSER rules (password "pw").
const USERS: &[(&str, &str)] = &[
    ("reader", "~app:* +get"),
    // +raft changes nothing: RAFT checks the command it carries.
    (
        "writer",
        "~app:* +get +set +del +incr +mset +multi +exec +eval +raft",
    ),
    // Read and write key patterns: COPY reads its source, writes its target.
    ("split", "%R~app:* %W~out:* +get +set +copy"),
    // Scripts: each command a script runs is checked against these rights.
    ("scripter", "~app:* +eval +eval_ro +get +set +multi +exec"),
    ("admin", "~* &* +@all"),
];

/// Each user runs these in order; MULTI blocks run on one connection.
const SCRIPT: &[&[&str]] = &[
    &["GET", "app:x"],
    &["GET", "other:x"],
    &["SET", "app:x", "2"],
    &["SET", "other:x", "2"],
    &["SET", "out:x", "2"],
    &["INCR", "app:n"],
    &["MSET", "app:a", "1", "other:b", "2"],
    &["COPY", "app:x", "out:copy", "REPLACE"],
    &["COPY", "out:x", "app:copy", "REPLACE"],
    &["DEL", "app:a"],
    &["GET"],
    &["SET", "app:x"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "app:x"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "other:x"],
    &["MULTI"],
    &["SET", "app:m", "1"],
    &["SET", "other:m", "1"],
    &["EXEC"],
    &["MULTI"],
    &["INCR", "app:n"],
    &["FLUSHALL"],
    &["EXEC"],
    &["EVAL", "return redis.call('SET', 'other:s', '1')", "0"],
    &["EVAL", "return redis.call('SET', 'app:s', '1')", "0"],
    &["EVAL", "return redis.call('GET', 'other:x')", "0"],
    &["EVAL_RO", "return redis.call('GET', 'other:x')", "0"],
    &["EVAL_RO", "return redis.call('GET', 'app:x')", "0"],
    &["EVAL", "return redis.call('DEL', 'app:s')", "0"],
    &["MULTI"],
    &["EVAL", "return redis.call('SET', 'other:t', '1')", "0"],
    &["SET", "app:t", "1"],
    &["EXEC"],
    &["FLUSHALL"],
    &["GET", "app:x"],
];

/// The matrix's users; plain Redis has no RAFT command to grant.
fn set_users(c: &mut Connection, plain: bool) {
    for (name, rules) in USERS {
        let mut args = vec!["ACL", "SETUSER", name, "on", ">pw"];
        args.extend(rules.split(' ').filter(|r| !(plain && *r == "+raft")));
        assert!(ok(&call(c, &args)), "ACL SETUSER {name}");
    }
}

#[test]
fn acl_matrix_matches_plain_redis() {
    let plain = PlainRedis::start();
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let leader = &cluster.nodes[l];
    // ACLs are each node's own: the same users on every node.
    set_users(&mut plain.conn(None).unwrap(), true);
    for n in &cluster.nodes {
        set_users(&mut n.conn(), false);
    }
    for c in [&mut plain.conn(None).unwrap(), &mut leader.conn()] {
        assert!(ok(&call(c, &["SET", "app:x", "1"])));
        assert!(ok(&call(c, &["SET", "out:x", "1"])));
    }
    let mut rows = Vec::new();
    let mut differ = Vec::new();
    for (user, _) in USERS {
        if *user == "admin" {
            // Before admin writes everywhere: nothing refused was applied.
            cluster.assert_same_dataset();
            for n in &cluster.nodes {
                assert_eq!(local(n, "app:n"), Some("1".into()));
                assert_eq!(local(n, "app:m"), None);
                assert_eq!(local(n, "app:x"), Some("2".into()));
                assert_eq!(local(n, "other:x"), None);
                assert_eq!(local(n, "other:m"), None);
                assert_eq!(local(n, "other:b"), None);
                assert_eq!(local(n, "app:copy"), None);
                assert_eq!(local(n, "app:s"), Some("1".into()));
                assert_eq!(local(n, "app:t"), Some("1".into()));
                assert_eq!(local(n, "other:s"), None);
                assert_eq!(local(n, "other:t"), None);
            }
        }
        let mut p = plain.conn(Some((user, "pw"))).unwrap();
        let mut r = connect(&leader.addr(), Some((user, "pw"))).unwrap();
        for cmd in SCRIPT {
            let want = show(&call(&mut p, cmd));
            let got = show(&call(&mut r, cmd));
            if want != got {
                differ.push(format!(
                    "{user} {cmd:?}: plain Redis {want:?}, cluster {got:?}"
                ));
            }
            rows.push(format!("{user:<7} {:<58} {got}", cmd.join(" ")));
        }
    }
    println!("user    command                                                    reply (plain Redis and the cluster alike)");
    for r in &rows {
        println!("{r}");
    }
    assert!(differ.is_empty(), "replies differ:\n{}", differ.join("\n"));
    let refused = rows.iter().filter(|r| r.contains("-NOPERM")).count();
    assert!(refused >= 10, "the matrix must refuse things: {refused}");

    // RAFT grants nothing, even to a user given +raft explicitly.
    let mut w = connect(&leader.addr(), Some(("writer", "pw"))).unwrap();
    let r = call(&mut w, &["RAFT", "SET", "other:z", "1"]);
    assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
    // Each refusal is in the ACL LOG, with the original command's object.
    let log = show(&call(&mut leader.conn(), &["ACL", "LOG", "128"]));
    assert!(log.contains("\"flushall\""), "{log}");
    assert!(
        log.contains("\"other:x\"") || log.contains("\"other:b\""),
        "{log}"
    );
    cluster.assert_same_dataset();
}

fn local(n: &Node, key: &str) -> Option<String> {
    bulk(&n.cmd(&["RAFT.DEBUG", "EXEC", "GET", key]))
}

#[test]
fn follower_proxy_checks_the_clients_own_rights_before_forwarding() {
    let cluster = Cluster::new(3, &["--raft.follower-proxy", "yes"]);
    let l = cluster.wait_leader();
    for n in &cluster.nodes {
        set_users(&mut n.conn(), false);
    }
    let f = &cluster.nodes[(l + 1) % 3];
    let mut w = connect(&f.addr(), Some(("writer", "pw"))).unwrap();
    // The nodes forward as the cluster user (default, +@all): the follower
    // refuses what the client may not do before anything is forwarded.
    let r = call(&mut w, &["SET", "other:p", "1"]);
    assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
    let r = call(&mut w, &["FLUSHALL"]);
    assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
    assert!(ok(&call(&mut w, &["SET", "app:p", "1"])));
    assert_eq!(
        bulk(&cluster.nodes[l].cmd(&["GET", "app:p"])),
        Some("1".into())
    );
    assert_eq!(bulk(&cluster.nodes[l].cmd(&["GET", "other:p"])), None);
    // A script of a user with limited rights is not forwarded: the leader
    // would run its commands as the cluster user.
    let r = call(
        &mut w,
        &["EVAL", "return redis.call('SET', 'other:p', '1')", "0"],
    );
    assert!(show(&r).starts_with("-MOVED"), "{r:?}");
}

#[test]
fn a_scripts_rights_travel_in_its_entry_so_nodes_with_other_acls_agree() {
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    for (i, n) in cluster.nodes.iter().enumerate() {
        // One follower would let this user touch every key; the others
        // only app:*. The leader's rules decide, on every node.
        let keys = if i == (l + 1) % 3 { "~*" } else { "~app:*" };
        let r = n.cmd(&[
            "ACL", "SETUSER", "s", "on", ">pw", keys, "+eval", "+set", "+get",
        ]);
        assert!(ok(&r), "{r:?}");
    }
    let mut c = connect(&cluster.nodes[l].addr(), Some(("s", "pw"))).unwrap();
    let script = "redis.call('SET', 'app:a', '1'); return redis.call('SET', 'other:a', '1')";
    let r = call(&mut c, &["EVAL", script, "0"]);
    // 7.0's text, or 7.2's and Valkey's.
    let text = show(&r);
    assert!(
        text.contains("The user executing the script") || text.contains("ACL failure in script"),
        "{r:?}"
    );
    cluster.assert_same_dataset();
    for n in &cluster.nodes {
        assert_eq!(local(n, "app:a"), Some("1".into()));
        assert_eq!(local(n, "other:a"), None);
    }
}

#[test]
fn users_from_the_acl_file_and_acl_load_can_use_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(
        &acl,
        "user default on nopass ~* &* +@all\nuser fromfile on >pw ~app:* +get +set\n",
    )
    .unwrap();
    let n = Node::start(&["--aclfile", acl.to_str().unwrap()]);
    assert!(matches!(
        n.cmd(&["RAFT.CLUSTER", "INIT"]),
        RespValue::Simple(_)
    ));
    let mut c = connect(&n.addr(), Some(("fromfile", "pw"))).unwrap();
    wait_for(10, "a write as the ACL file's user", || {
        ok(&call(&mut c, &["SET", "app:f", "1"])).then_some(())
    });
    assert_eq!(show(&call(&mut c, &["GET", "app:f"])), "\"1\"");
    std::fs::write(
        &acl,
        "user default on nopass ~* &* +@all\nuser loaded on >pw ~app:* +get\n",
    )
    .unwrap();
    assert!(ok(&n.cmd(&["ACL", "LOAD"])));
    let mut c = connect(&n.addr(), Some(("loaded", "pw"))).unwrap();
    wait_for(10, "a read as a user from ACL LOAD", || {
        (show(&call(&mut c, &["GET", "app:f"])) == "\"1\"").then_some(())
    });
    let r = call(&mut c, &["SET", "app:f", "2"]);
    assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
}

/// A heartbeat from `from` to `to` at a term far above the cluster's.
fn forged(msg_type: MessageType, from: u64, to: u64, term: u64) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = from;
    m.to = to;
    m.term = term;
    m.commit = 1_000_000;
    m.index = 1_000_000;
    m.log_term = term;
    m.write_to_bytes().unwrap()
}

#[test]
fn internal_commands_from_clients_are_refused_and_change_nothing() {
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
        assert!(ok(&n.cmd(&[
            "ACL", "SETUSER", "app", "on", ">apppw", "~*", "&*", "+@all"
        ])));
    }
    let before: Vec<(String, String)> = c
        .nodes
        .iter()
        .map(|n| (n.info_field("current_term"), n.info_field("role")))
        .collect();
    let leader_id: u64 = c.nodes[l].info_field("node_id").parse().unwrap();
    for (i, n) in c.nodes.iter().enumerate() {
        let dbid = n.info_field("dbid");
        let me: u64 = n.info_field("node_id").parse().unwrap();
        let other = if i == l { me % 3 + 1 } else { leader_id };
        // Unauthenticated: Redis's own NOAUTH, for data commands too.
        let mut anon = connect(&n.addr(), None).unwrap();
        let r = call(&mut anon, &["SET", "k", "anon"]);
        assert!(show(&r).starts_with("-NOAUTH"), "{r:?}");
        // A user with +@all is still not a node.
        let mut app = connect(&n.addr(), Some(("app", "apppw"))).unwrap();
        let term = 1u64 << 40;
        for (cmd, ty) in [
            ("RAFT.APPENDENTRIES", MessageType::MsgHeartbeat),
            ("RAFT.APPENDENTRIES", MessageType::MsgAppend),
            ("RAFT.APPENDENTRIES", MessageType::MsgAppendResponse),
            ("RAFT.REQUESTVOTE", MessageType::MsgRequestVote),
        ] {
            let msg = forged(ty, other, me, term);
            let r = app
                .call(&[
                    cmd.as_bytes(),
                    dbid.as_bytes(),
                    other.to_string().as_bytes(),
                    &msg,
                ])
                .unwrap();
            assert!(show(&r).starts_with("-NOPERM"), "{cmd} {ty:?}: {r:?}");
        }
        let r = call(
            &mut app,
            &[
                "RAFT.LOADSNAPSHOT",
                &dbid,
                &other.to_string(),
                "9",
                "9",
                "0",
                "1",
                "0",
                "x",
            ],
        );
        assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
        let r = call(&mut app, &["RAFT.NODESHUTDOWN", &dbid, &me.to_string()]);
        assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<(String, String)> = c
        .nodes
        .iter()
        .map(|n| (n.info_field("current_term"), n.info_field("role")))
        .collect();
    assert_eq!(before, after, "a refused message changed a node");
    for n in &c.nodes {
        assert_eq!(n.info_field("state"), "up", "{}", n.log());
    }
    // The cluster user (the nodes themselves) still works.
    assert!(ok(&c.nodes[l].cmd(&["SET", "k", "after"])));
    c.assert_same_dataset();
}

#[test]
fn scripts_and_transactions_cannot_call_raft_commands() {
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let leader = &cluster.nodes[l];
    let term = leader.info_field("current_term");
    for cmd in [
        "redis.call('RAFT.DEBUG', 'EXEC', 'SET', 'k', 'local')",
        "redis.call('RAFT.TIMEOUT_NOW')",
        "redis.call('RAFT', 'SET', 'k', 'v')",
        "redis.call('RAFT.NODE', 'REMOVE', '2')",
        "redis.call('RAFT.APPENDENTRIES', 'x', '1', 'y')",
        "redis.call('RAFT.INFO')",
    ] {
        let r = leader.cmd(&["EVAL", &format!("return {cmd}"), "0"]);
        assert!(show(&r).contains("not allowed from script"), "{cmd}: {r:?}");
    }
    let mut c = leader.conn();
    assert!(ok(&call(&mut c, &["MULTI"])));
    assert_eq!(show(&call(&mut c, &["SET", "k", "m"])), "QUEUED");
    let r = call(&mut c, &["RAFT.NODE", "REMOVE", "2"]);
    assert_eq!(show(&r), "-ERR Command not allowed inside a transaction");
    let r = call(&mut c, &["EXEC"]);
    assert!(show(&r).starts_with("-EXECABORT"), "{r:?}");
    assert_eq!(bulk(&leader.cmd(&["GET", "k"])), None);
    // Nothing moved: same leader, same term, three members.
    assert_eq!(cluster.wait_leader(), l);
    assert_eq!(leader.info_field("current_term"), term);
    assert_eq!(leader.info_field("num_nodes"), "3");
    cluster.assert_same_dataset();
}

#[test]
fn the_unsafe_read_knob_exists_only_in_test_builds() {
    let n = Node::start(&[]);
    let r = n.cmd(&["CONFIG", "SET", "raft.unsafe-local-reads", "yes"]);
    let e = err_text(&r).unwrap_or_default().to_string();
    assert!(e.contains("only in test builds"), "{r:?}");
    assert!(ok(&n.cmd(&[
        "CONFIG",
        "SET",
        "raft.unsafe-local-reads",
        "no"
    ])));
    if let Some(fp) = Node::start_failpoints(&[]) {
        assert!(ok(&fp.cmd(&[
            "CONFIG",
            "SET",
            "raft.unsafe-local-reads",
            "yes"
        ])));
    }
}

#[test]
fn admin_commands_are_in_acl_categories_where_the_server_has_them() {
    let n = Node::start(&[]);
    assert!(matches!(
        n.cmd(&["RAFT.CLUSTER", "INIT"]),
        RespValue::Simple(_)
    ));
    let r = n.cmd(&[
        "ACL", "SETUSER", "ops", "on", ">pw", "~*", "&*", "+@all", "-@admin",
    ]);
    assert!(ok(&r), "{r:?}");
    let mut c = connect(&n.addr(), Some(("ops", "pw"))).unwrap();
    let r = call(&mut c, &["RAFT.DEBUG", "EXEC", "GET", "k"]);
    if n.info_field("acl_categories") == "yes" {
        // Redis 7.2+ and Valkey: -@admin takes the raft.* admin commands.
        assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
        assert!(is_valkey() || n.info_field("snapshot_load_api") == "rdbload");
    } else {
        // Redis 7.0: module commands have no category (README, Security).
        assert_eq!(show(&r), "(nil)");
        assert!(!is_valkey());
    }
    // Node-to-node commands are the cluster user's whatever the categories.
    let r = call(&mut c, &["RAFT.REQUESTVOTE", "x", "1", "y"]);
    assert!(show(&r).starts_with("-NOPERM"), "{r:?}");
}

/// Found in review: a script's PUBLISH (flagged neither write nor read)
/// ran as root, past the caller's channel rights. Every command a script
/// runs is now checked, as Redis checks it.
#[test]
fn a_scripts_publish_and_other_commands_are_checked_against_the_callers_rights() {
    let plain = PlainRedis::start();
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let rules = [
        "on",
        ">pw",
        "~*",
        "resetchannels",
        "&news:*",
        "-@all",
        "+eval",
        "+publish",
    ];
    let mut p_admin = plain.connection();
    let mut args = vec!["ACL", "SETUSER", "pub"];
    args.extend(rules);
    assert!(ok(&call(&mut p_admin, &args)));
    for n in &cluster.nodes {
        assert!(ok(&call(&mut n.conn(), &args)));
    }
    let mut p = plain.conn(Some(("pub", "pw"))).unwrap();
    let mut c = connect(&cluster.nodes[l].addr(), Some(("pub", "pw"))).unwrap();
    for script in [
        "return redis.call('publish', 'secret', 'x')",
        "return redis.call('publish', 'news:1', 'x')",
        "return redis.call('slowlog', 'len')",
    ] {
        let want = show(&call(&mut p, &["EVAL", script, "0"]));
        let got = show(&call(&mut c, &["EVAL", script, "0"]));
        assert_eq!(got, want, "{script}");
    }
}

/// Found in review: EXEC ran queued commands whose rights were taken away
/// after they were queued. As in Redis, such a command answers -NOPERM in
/// its place and the others run.
#[test]
fn exec_rechecks_rights_changed_after_queueing() {
    let plain = PlainRedis::start();
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let setuser = ["ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all"];
    let narrow = ["ACL", "SETUSER", "alice", "resetkeys", "~public:*"];
    let mut admins = vec![plain.connection()];
    admins.extend(cluster.nodes.iter().map(|n| n.conn()));
    for a in admins.iter_mut() {
        assert!(ok(&call(a, &setuser)));
    }
    let mut p = plain.conn(Some(("alice", "pw"))).unwrap();
    let mut c = connect(&cluster.nodes[l].addr(), Some(("alice", "pw"))).unwrap();
    for conn in [&mut p, &mut c] {
        assert!(ok(&call(conn, &["MULTI"])));
        assert_eq!(show(&call(conn, &["SET", "secret:1", "x"])), "QUEUED");
        assert_eq!(show(&call(conn, &["SET", "public:1", "y"])), "QUEUED");
    }
    for a in admins.iter_mut() {
        assert!(ok(&call(a, &narrow)));
    }
    let want = show(&call(&mut p, &["EXEC"]));
    let got = show(&call(&mut c, &["EXEC"]));
    assert_eq!(got, want);
    assert!(got.contains("NOPERM ACLs rules changed"), "{got}");
    cluster.assert_same_dataset();
    for n in &cluster.nodes {
        assert_eq!(local(n, "secret:1"), None);
        assert_eq!(local(n, "public:1"), Some("y".into()));
    }
}
