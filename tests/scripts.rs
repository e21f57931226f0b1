//! Scripts and functions through the cluster: EVALSHA on the replicated
//! script cache, SCRIPT LOAD / EXISTS / FLUSH, FUNCTION and FCALL, script
//! flags, and the cache and functions after failover, restarts and
//! snapshot installs. Replies are compared with a plain redis-server.
//!
//! Run: `REDISRAFT_MODULE=$PWD/redisraft.so cargo test --release --test
//! scripts -- --test-threads=2`.

mod common;

use common::*;
use redisraft::resp::{Connection, RespValue};

fn call(c: &mut Connection, args: &[&str]) -> RespValue {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.call(&a).expect("command")
}

/// The SHA-1 Redis gives a body, asked without caching it anywhere.
fn sha1(plain: &PlainRedis, body: &str) -> String {
    let r = call(
        &mut plain.connection(),
        &["EVAL", "return redis.sha1hex(ARGV[1])", "0", body],
    );
    bulk(&r).expect("sha1hex")
}

/// An error reply without the script location Redis appends
/// ("... script: <sha>, on @user_script:1."), which differs by line only.
fn same_reply(a: &RespValue, b: &RespValue) -> bool {
    match (a, b) {
        (RespValue::Error(x), RespValue::Error(y)) => {
            let head = |s: &str| s.split(" script: ").next().unwrap_or(s).to_string();
            head(x) == head(y)
        }
        _ => a == b,
    }
}

/// Sends each command to plain Redis and to the cluster's leader, and
/// requires the same reply.
fn compare(plain: &mut Connection, leader: &mut Connection, cmds: &[Vec<&str>]) {
    for cmd in cmds {
        let want = call(plain, cmd);
        let got = call(leader, cmd);
        assert!(
            same_reply(&want, &got),
            "{cmd:?}: plain Redis answered {want:?}, the cluster {got:?}"
        );
    }
}

/// Every running node has applied the same index and holds the same
/// script cache (INFO raft scripts_digest) and dataset.
fn assert_same_everywhere(c: &Cluster) -> String {
    let digest = c.assert_same_dataset();
    let caches = wait_for(30, "the same script cache on every node", || {
        let seen: Vec<(String, String, String)> = c
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                (
                    n.info_field("last_applied_index"),
                    n.info_field("scripts_cached"),
                    n.info_field("scripts_digest"),
                )
            })
            .collect();
        seen.iter().all(|s| *s == seen[0]).then_some(seen)
    });
    assert!(!caches[0].2.is_empty(), "no scripts_digest in INFO raft");
    digest
}

const SET_SCRIPT: &str = "return redis.call('SET', KEYS[1], ARGV[1])";
const GET_SCRIPT: &str = "return redis.call('GET', KEYS[1])";

#[test]
fn evalsha_runs_what_eval_and_script_load_cached_as_on_redis() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let (mut p, mut r) = (plain.connection(), c.nodes[l].conn());
    let set = sha1(&plain, SET_SCRIPT);
    let get = sha1(&plain, GET_SCRIPT);
    let bad = "return (";
    let bad_sha = sha1(&plain, bad);
    compare(
        &mut p,
        &mut r,
        &[
            // Unknown: Redis's NOSCRIPT, on which clients send EVAL.
            vec!["EVALSHA", &set, "1", "k", "v0"],
            vec!["EVALSHA_RO", &get, "1", "k"],
            vec!["SCRIPT", "EXISTS", &set, &get],
            // EVAL caches what it ran.
            vec!["EVAL", SET_SCRIPT, "1", "k", "v1"],
            vec!["SCRIPT", "EXISTS", &set, &get],
            vec!["EVALSHA", &set, "1", "k", "v2"],
            vec!["EVALSHA", &set.to_uppercase(), "1", "k2", "v3"],
            vec!["GET", "k"],
            // SCRIPT LOAD answers the SHA; EVALSHA_RO is a read.
            vec!["SCRIPT", "LOAD", GET_SCRIPT],
            vec!["EVALSHA_RO", &get, "1", "k"],
            vec!["EVALSHA_RO", &set, "1", "k", "no"],
            // A script that does not compile is not cached.
            vec!["EVAL", bad, "0"],
            vec!["SCRIPT", "LOAD", bad],
            vec!["SCRIPT", "EXISTS", &bad_sha, &set, "nosuchsha"],
            vec!["EVALSHA", &bad_sha, "0"],
            // FLUSH empties the cache.
            vec!["SCRIPT", "FLUSH"],
            vec!["SCRIPT", "EXISTS", &set, &get],
            vec!["EVALSHA", &get, "1", "k"],
            vec!["SCRIPT", "FLUSH", "SYNC"],
            vec!["SCRIPT", "FLUSH", "NOPE"],
            vec!["SCRIPT", "LOAD", SET_SCRIPT],
        ],
    );
    // In a transaction, as on Redis: loaded, then run by SHA.
    compare(
        &mut p,
        &mut r,
        &[
            vec!["MULTI"],
            vec!["SCRIPT", "LOAD", GET_SCRIPT],
            vec!["EVALSHA", &get, "1", "k"],
            vec!["EVALSHA", &set, "1", "k", "in-multi"],
            vec!["SCRIPT", "EXISTS", &get],
            vec!["EXEC"],
        ],
    );
    assert_same_everywhere(&c);
    assert_eq!(c.nodes[l].info_field("scripts_cached"), "2");
    // EVAL_RO is a read, served by the leader alone: it leaves the
    // replicated cache as it was (Redis's own cache would now differ from
    // the followers').
    let ro = "return redis.call('GET', KEYS[1]) .. 'ro'";
    let r = c.nodes[l].cmd(&["EVAL_RO", ro, "1", "k"]);
    assert_eq!(bulk(&r).as_deref(), Some("in-multiro"), "{r:?}");
    let r = c.nodes[l].cmd(&["EVALSHA_RO", &sha1(&plain, ro), "1", "k"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("NOSCRIPT")),
        "{r:?}"
    );
    assert_eq!(c.nodes[l].info_field("scripts_cached"), "2");
    assert_same_everywhere(&c);
}

fn transfer_to(c: &Cluster, target: usize) {
    let l = c.wait_leader();
    if l == target {
        return;
    }
    let id = c.nodes[target].info_field("node_id");
    assert!(ok(&c.nodes[l].cmd(&["RAFT.TRANSFER_LEADER", &id])));
    wait_for(30, "the transfer of leadership", || {
        (c.leader() == Some(target)).then_some(())
    });
}

/// EVALSHA of `sha` on the leader writes `value` to `key`.
fn evalsha_sets(c: &Cluster, sha: &str, key: &str, value: &str) {
    let l = c.wait_leader();
    let r = wait_for(30, "EVALSHA answered by the leader", || {
        match c.nodes[l].cmd(&["EVALSHA", sha, "1", key, value]) {
            RespValue::Error(e) if !e.starts_with("NOSCRIPT") => None,
            r => Some(r),
        }
    });
    assert!(ok(&r), "EVALSHA on {}: {r:?}", c.nodes[l].addr());
    assert_eq!(bulk(&c.nodes[l].cmd(&["GET", key])).as_deref(), Some(value));
}

#[test]
fn the_script_cache_survives_failover_restarts_and_compaction() {
    let plain = PlainRedis::start();
    let set = sha1(&plain, SET_SCRIPT);
    let get = sha1(&plain, GET_SCRIPT);
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["EVAL", SET_SCRIPT, "1", "a", "1"])));
    // Every node in turn leads: each has the script.
    for i in 0..3 {
        transfer_to(&c, (l + 1 + i) % 3);
        evalsha_sets(&c, &set, "a", &format!("lead{i}"));
    }
    // Compacted, then a script loaded after the snapshot (from the log on
    // restart) and one before it (from the RDB only).
    for n in &c.nodes {
        assert!(ok(&n.cmd(&["RAFT.DEBUG", "COMPACT"])), "{}", n.addr());
        assert!(n.info_field("snapshot_last_idx") != "0");
    }
    let l = c.wait_leader();
    let r = c.nodes[l].cmd(&["SCRIPT", "LOAD", GET_SCRIPT]);
    assert_eq!(bulk(&r).as_deref(), Some(get.as_str()));
    assert_same_everywhere(&c);
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        n.launch();
    }
    c.wait_leader();
    evalsha_sets(&c, &set, "a", "after-restart");
    let l = c.wait_leader();
    let r = c.nodes[l].cmd(&["EVALSHA_RO", &get, "1", "a"]);
    assert_eq!(bulk(&r).as_deref(), Some("after-restart"), "{r:?}");
    let r = c.nodes[l].cmd(&["SCRIPT", "EXISTS", &set, &get]);
    assert_eq!(
        r,
        RespValue::Array(Some(vec![RespValue::Integer(1), RespValue::Integer(1)]))
    );
    assert_same_everywhere(&c);
    // The killed leader: another node leads, with the same cache.
    let l = c.wait_leader();
    c.nodes[l].kill9();
    evalsha_sets(&c, &set, "a", "after-failover");
    c.nodes[l].launch();
    assert_same_everywhere(&c);
}

#[test]
fn a_node_that_joins_after_compaction_gets_the_script_cache_in_the_snapshot() {
    let plain = PlainRedis::start();
    let set = sha1(&plain, SET_SCRIPT);
    let get = sha1(&plain, GET_SCRIPT);
    let flushed = "return 'flushed'";
    let flushed_sha = sha1(&plain, flushed);
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    assert!(bulk(&leader.cmd(&["SCRIPT", "LOAD", flushed])).is_some());
    assert!(ok(&leader.cmd(&["SCRIPT", "FLUSH"])));
    assert!(ok(&leader.cmd(&["EVAL", SET_SCRIPT, "1", "k", "v"])));
    assert!(bulk(&leader.cmd(&["SCRIPT", "LOAD", GET_SCRIPT])).is_some());
    for n in &c.nodes {
        assert!(ok(&n.cmd(&["RAFT.DEBUG", "COMPACT"])), "{}", n.addr());
    }
    assert_eq!(leader.info_field("log_entries"), "0");
    let n4 = Node::start(&[]);
    let r = n4.cmd(&["RAFT.CLUSTER", "JOIN", &leader.addr()]);
    assert!(ok(&r), "JOIN: {r:?}; log:\n{}", n4.log());
    c.nodes.push(n4);
    wait_for(60, "the new node installs the snapshot", || {
        (c.nodes[3].info_field("snapshots_received") != "0").then_some(())
    });
    assert_same_everywhere(&c);
    assert_eq!(c.nodes[3].info_field("scripts_cached"), "2");
    // The new node leads: it runs the scripts by SHA, and the flushed one
    // is unknown there as everywhere.
    transfer_to(&c, 3);
    evalsha_sets(&c, &set, "k", "on-new-node");
    let r = c.nodes[3].cmd(&["SCRIPT", "EXISTS", &set, &get, &flushed_sha]);
    assert_eq!(
        r,
        RespValue::Array(Some(vec![
            RespValue::Integer(1),
            RespValue::Integer(1),
            RespValue::Integer(0)
        ]))
    );
    let r = c.nodes[3].cmd(&["EVALSHA", &flushed_sha, "0"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("NOSCRIPT")),
        "{r:?}"
    );
    assert_same_everywhere(&c);
}

const LIB: &str = "#!lua name=counters
local function incr_by(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end
local function get(keys, args)
  return redis.call('GET', keys[1])
end
local function stamp(keys, args)
  redis.call('SET', keys[1], tostring(math.random()) .. ':' .. redis.call('TIME')[1])
  return redis.call('GET', keys[1])
end
redis.register_function('incr_by', incr_by)
redis.register_function{function_name='get', callback=get, flags={'no-writes'}}
redis.register_function('stamp', stamp)";

const LIB2: &str = "#!lua name=other
redis.register_function('hello', function(keys, args) return 'hello' end)";

fn raw(n: &Node, args: &[&[u8]]) -> RespValue {
    n.conn().call(args).expect("command")
}

#[test]
fn functions_are_replicated_restored_and_installed_with_snapshots() {
    let plain = PlainRedis::start();
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let (mut p, mut r) = (plain.connection(), c.nodes[l].conn());
    compare(
        &mut p,
        &mut r,
        &[
            vec!["FCALL", "incr_by", "1", "n", "5"],
            vec!["FUNCTION", "LOAD", LIB],
            vec!["FUNCTION", "LOAD", LIB],
            vec!["FUNCTION", "LOAD", LIB2],
            vec!["FCALL", "incr_by", "1", "n", "5"],
            vec!["FCALL", "incr_by", "1", "n", "2"],
            vec!["FCALL_RO", "get", "1", "n"],
            vec!["FCALL_RO", "incr_by", "1", "n", "1"],
            vec!["FCALL", "hello", "0"],
            vec!["FUNCTION", "DELETE", "other"],
            vec!["FUNCTION", "DELETE", "other"],
            vec!["FCALL", "hello", "0"],
        ],
    );
    // Functions' writes run at the entry's time and seed: the same on
    // every node.
    assert!(bulk(&c.nodes[l].cmd(&["FCALL", "stamp", "1", "s"])).is_some());
    let digest = assert_same_everywhere(&c);
    // FUNCTION DUMP is each node's own, and the same everywhere (one
    // library: FUNCTION LIST orders its functions by a hash table's order).
    let list = |n: &Node| raw(n, &[b"FUNCTION", b"DUMP"]);
    for n in &c.nodes {
        assert_eq!(list(n), list(&c.nodes[l]), "FUNCTION DUMP on {}", n.addr());
    }
    // DUMP on one node, FLUSH, RESTORE: replicated.
    let dump = match raw(&c.nodes[(l + 1) % 3], &[b"FUNCTION", b"DUMP"]) {
        RespValue::Bulk(Some(b)) => b,
        other => panic!("FUNCTION DUMP: {other:?}"),
    };
    assert!(ok(&c.nodes[l].cmd(&["FUNCTION", "FLUSH"])));
    let r = c.nodes[l].cmd(&["FCALL", "incr_by", "1", "n", "1"]);
    assert!(err_text(&r).is_some(), "{r:?}");
    assert_same_everywhere(&c);
    for n in &c.nodes {
        assert_eq!(n.cmd(&["FUNCTION", "LIST"]), RespValue::Array(Some(vec![])));
    }
    let r = raw(&c.nodes[l], &[b"FUNCTION", b"RESTORE", &dump]);
    assert!(ok(&r), "FUNCTION RESTORE: {r:?}");
    assert_eq!(
        c.nodes[l].cmd(&["FCALL", "incr_by", "1", "n", "1"]),
        RespValue::Integer(8)
    );
    let r = raw(&c.nodes[l], &[b"FUNCTION", b"RESTORE", &dump]);
    assert!(
        err_text(&r).is_some(),
        "RESTORE over the same library: {r:?}"
    );
    assert_ne!(assert_same_everywhere(&c), digest);
    // A node that joins after compaction gets the functions in the RDB.
    for n in &c.nodes {
        assert!(ok(&n.cmd(&["RAFT.DEBUG", "COMPACT"])), "{}", n.addr());
    }
    let n4 = Node::start(&[]);
    let r = n4.cmd(&["RAFT.CLUSTER", "JOIN", &c.nodes[l].addr()]);
    assert!(ok(&r), "JOIN: {r:?}; log:\n{}", n4.log());
    c.nodes.push(n4);
    wait_for(60, "the new node installs the snapshot", || {
        (c.nodes[3].info_field("snapshots_received") != "0").then_some(())
    });
    assert_same_everywhere(&c);
    assert_eq!(list(&c.nodes[3]), list(&c.nodes[l]));
    transfer_to(&c, 3);
    assert_eq!(
        c.nodes[3].cmd(&["FCALL", "incr_by", "1", "n", "1"]),
        RespValue::Integer(9)
    );
    // And after a restart of every node (functions from the RDB, the
    // entries after it from the log).
    for n in &mut c.nodes {
        n.kill9();
    }
    for n in &mut c.nodes {
        n.launch();
    }
    let l = c.wait_leader();
    let r = wait_for(30, "FCALL after restart", || {
        match c.nodes[l].cmd(&["FCALL", "incr_by", "1", "n", "1"]) {
            RespValue::Integer(n) => Some(n),
            _ => None,
        }
    });
    assert_eq!(r, 10);
    assert_same_everywhere(&c);
}

#[test]
fn script_flags_and_rights_are_those_of_redis() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let (mut p, mut r) = (plain.connection(), c.nodes[l].conn());
    let ro_write = "#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 'x')";
    let ro_read = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])";
    let writes = "#!lua\nreturn redis.call('SET', KEYS[1], 'w')";
    let ro_write_sha = sha1(&plain, ro_write);
    compare(
        &mut p,
        &mut r,
        &[
            vec!["SET", "k", "v"],
            vec!["EVAL", ro_write, "1", "k"],
            vec!["SCRIPT", "LOAD", ro_write],
            vec!["EVALSHA", &ro_write_sha, "1", "k"],
            vec!["EVAL", ro_read, "1", "k"],
            vec!["EVAL_RO", ro_read, "1", "k"],
            vec!["EVAL_RO", writes, "1", "k"],
            vec!["EVAL", "#!lua flags=no-such-flag\nreturn 1", "0"],
            vec!["EVAL", "#!lua flags=allow-oom,no-cluster\nreturn 1", "0"],
            vec!["GET", "k"],
            vec![
                "FUNCTION",
                "LOAD",
                "#!lua name=ro\nredis.register_function{function_name='w', callback=function(k) return redis.call('SET', k[1], 'f') end, flags={'no-writes'}}",
            ],
            vec!["FCALL", "w", "1", "k"],
            vec!["FCALL_RO", "w", "1", "k"],
            vec!["GET", "k"],
        ],
    );
    // Over maxmemory: a script that may write is refused before it runs,
    // unless its flags say allow-oom (checked by the leader before it
    // proposes; maxmemory only there).
    let oom_ok = "#!lua flags=allow-oom\nreturn redis.call('SET', KEYS[1], 'm')";
    let oom_ok_sha = sha1(&plain, oom_ok);
    let oom_lib = "#!lua name=oom
redis.register_function{function_name='oom_ok', callback=function(k) return redis.call('SET', k[1], 'f') end, flags={'allow-oom'}}
redis.register_function('oom_no', function(k) return redis.call('SET', k[1], 'f') end)";
    for conn in [&mut p, &mut r] {
        assert!(bulk(&call(conn, &["SCRIPT", "LOAD", oom_ok])).is_some());
        assert!(bulk(&call(conn, &["FUNCTION", "LOAD", oom_lib])).is_some());
    }
    for conn in [&mut p, &mut r] {
        assert!(ok(&call(conn, &["CONFIG", "SET", "maxmemory", "1"])));
    }
    compare(
        &mut p,
        &mut r,
        &[
            vec!["EVAL", "#!lua\nreturn 1", "0"],
            vec!["EVAL", "#!lua flags=no-writes\nreturn 2", "0"],
            vec!["EVAL", oom_ok, "1", "m1"],
            vec!["EVALSHA", &oom_ok_sha, "1", "m2"],
            vec!["EVALSHA", &ro_write_sha, "1", "k"],
            vec!["FCALL", "oom_no", "1", "m4"],
            vec!["FCALL", "oom_ok", "1", "m5"],
            vec!["FCALL", "w", "1", "m6"],
            vec!["SET", "m3", "x"],
        ],
    );
    for conn in [&mut p, &mut r] {
        assert!(ok(&call(conn, &["CONFIG", "SET", "maxmemory", "0"])));
    }
    // A user who may touch app:* only: the function's and the cached
    // script's commands carry the user's rights, on every node.
    let lib = "#!lua name=acl\nredis.register_function('setother', function(k, a) return redis.call('SET', a[1], 'x') end)";
    let users: [&[&str]; 2] = [
        &["ACL", "SETUSER", "app", "on", ">pw", "~app:*", "+@all"],
        &["FUNCTION", "LOAD", lib],
    ];
    for cmd in users {
        assert!(!matches!(call(&mut p, cmd), RespValue::Error(_)));
    }
    for n in &c.nodes {
        assert!(ok(&n.cmd(users[0])), "{}", n.addr());
    }
    assert!(bulk(&c.nodes[l].cmd(users[1])).is_some());
    let auth = |conn: &mut Connection| {
        assert!(ok(&call(conn, &["AUTH", "app", "pw"])));
    };
    let (mut p, mut r) = (plain.connection(), c.nodes[l].conn());
    auth(&mut p);
    auth(&mut r);
    let set_sha = sha1(&plain, SET_SCRIPT);
    compare(
        &mut p,
        &mut r,
        &[
            vec!["FCALL", "setother", "0", "app:1"],
            vec!["FCALL", "setother", "0", "other"],
            vec!["EVAL", SET_SCRIPT, "1", "app:2", "v"],
            vec!["EVALSHA", &set_sha, "1", "app:3", "v"],
            vec!["EVALSHA", &set_sha, "1", "other", "v"],
            vec!["EVALSHA", &set_sha, "0", "other", "v"],
            vec!["GET", "app:3"],
        ],
    );
    assert!(matches!(
        c.nodes[l].cmd(&["EXISTS", "other"]),
        RespValue::Integer(0)
    ));
    assert_same_everywhere(&c);
}

/// A follower over its own maxmemory applies a committed script like every
/// node (Redis would refuse one without allow-oom by that node's memory).
#[test]
fn a_follower_over_maxmemory_applies_committed_scripts() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let f = (l + 1) % 3;
    let lib = "#!lua name=mem
redis.register_function('setf', function(k) return redis.call('SET', k[1], 'f') end)";
    assert!(bulk(&c.nodes[l].cmd(&["FUNCTION", "LOAD", lib])).is_some());
    c.assert_same_dataset();
    assert!(ok(&c.nodes[f].cmd(&["CONFIG", "SET", "maxmemory", "1"])));
    // The follower's next command sees it over maxmemory (Redis keeps that
    // state for the scripts it runs next).
    c.nodes[f].cmd(&["PING"]);
    let leader = &c.nodes[l];
    assert!(ok(&leader.cmd(&["FCALL", "setf", "1", "a"])));
    assert!(ok(&leader.cmd(&[
        "EVAL",
        "#!lua\nreturn redis.call('SET', KEYS[1], 'e')",
        "1",
        "b"
    ])));
    let digest = c.assert_same_dataset();
    assert!(ok(&c.nodes[f].cmd(&["CONFIG", "SET", "maxmemory", "0"])));
    assert_eq!(
        c.nodes[f].cmd(&["RAFT.DEBUG", "EXEC", "EXISTS", "a", "b"]),
        RespValue::Integer(2),
        "dataset {digest}"
    );
}
