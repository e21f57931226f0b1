//! Replicas that never diverge: keys with a TTL give the same dataset on
//! every node, whatever each node's clock says when it applies an entry.
//! Every test ends by comparing DEBUG DIGEST on all nodes at the same
//! applied index.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn local(n: &Node, args: &[&str]) -> RespValue {
    let mut full = vec!["RAFT.DEBUG", "EXEC"];
    full.extend_from_slice(args);
    n.cmd(&full)
}

fn int(v: &RespValue) -> i64 {
    match v {
        RespValue::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The first experiment: SET k 1 PX 3, about 2.5 ms, INCR k. Each
/// node used to decide by its own clock whether k had expired when it
/// applied the INCR; 42 of 300 keys differed between nodes.
#[test]
fn keys_touched_as_their_ttl_runs_out_hold_the_same_value_on_every_node() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let mut conn = c.nodes[l].conn();
    const KEYS: usize = 300;
    for i in 0..KEYS {
        let k = format!("k{i}");
        let r = conn
            .call(&[b"SET", k.as_bytes(), b"1", b"PX", b"3"])
            .unwrap();
        assert!(ok(&r), "{r:?}");
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(2500) {}
        let r = conn.call(&[b"INCR", k.as_bytes()]).unwrap();
        assert!(matches!(r, RespValue::Integer(1 | 2)), "{r:?}");
    }
    c.assert_same_dataset();
    let mut differ = 0;
    for i in 0..KEYS {
        let k = format!("k{i}");
        let values: Vec<_> = c.nodes.iter().map(|n| local(n, &["GET", &k])).collect();
        if values.iter().any(|v| *v != values[0]) {
            differ += 1;
        }
    }
    assert_eq!(differ, 0, "keys that differ between nodes");
}

#[test]
fn ttl_queries_answer_the_logical_time_and_expiry_commands_set_absolute_times() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let n = &c.nodes[l];
    assert!(ok(&n.cmd(&["SET", "k", "v", "EX", "100"])));
    let ttl = int(&n.cmd(&["TTL", "k"]));
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    let pttl = int(&n.cmd(&["PTTL", "k"]));
    assert!((95_000..=100_000).contains(&pttl), "PTTL {pttl}");
    let at = int(&n.cmd(&["PEXPIRETIME", "k"]));
    assert!(
        (at - (now_ms() + 100_000)).abs() < 5_000,
        "PEXPIRETIME {at}"
    );
    assert_eq!(int(&n.cmd(&["EXPIRETIME", "k"])), (at + 500) / 1000);
    // Every node stores the same absolute time.
    for node in &c.nodes {
        wait_for(10, "the same stored expiry on every node", || {
            (local(node, &["PEXPIRETIME", "k"]) == local(n, &["PEXPIRETIME", "k"])).then_some(())
        });
    }

    assert!(ok(&n.cmd(&["SETEX", "s", "50", "v"])));
    assert!((49..=50).contains(&int(&n.cmd(&["TTL", "s"]))));
    assert_eq!(
        bulk(&n.cmd(&["GETEX", "s", "PX", "7000"])).as_deref(),
        Some("v")
    );
    assert!((6_000..=7_000).contains(&int(&n.cmd(&["PTTL", "s"]))));
    assert_eq!(int(&n.cmd(&["PERSIST", "s"])), 1);
    assert_eq!(int(&n.cmd(&["TTL", "s"])), -1);
    assert_eq!(int(&n.cmd(&["TTL", "missing"])), -2);
    assert_eq!(
        int(&n.cmd(&["EXPIRE", "s", "30", "GT"])),
        0,
        "no TTL counts as infinite"
    );
    assert_eq!(int(&n.cmd(&["EXPIRE", "s", "30", "NX"])), 1);
    assert_eq!(int(&n.cmd(&["EXPIRE", "s", "20", "GT"])), 0);
    assert_eq!(int(&n.cmd(&["EXPIRE", "s", "40", "GT"])), 1);
    assert!((39..=40).contains(&int(&n.cmd(&["TTL", "s"]))));

    // Redis's own errors for arguments it refuses.
    for (cmd, want) in [
        (
            &["SET", "e", "v", "EX", "0"][..],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SETEX", "e", "-1", "v"],
            "ERR invalid expire time in 'setex' command",
        ),
        (
            &["EXPIRE", "e", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        let r = n.cmd(cmd);
        assert_eq!(err_text(&r), Some(want), "{cmd:?}");
    }

    // A time already past deletes the key, on every node.
    assert!(ok(&n.cmd(&["SET", "gone", "v"])));
    assert_eq!(int(&n.cmd(&["EXPIRE", "gone", "-1"])), 1);
    assert_eq!(n.cmd(&["GET", "gone"]), RespValue::Bulk(None));
    assert!(ok(&n.cmd(&["SET", "gone2", "v", "PXAT", "1000"])));
    assert_eq!(int(&n.cmd(&["EXISTS", "gone2"])), 0);

    // Inside MULTI, at the entry's time.
    let mut conn = n.conn();
    assert!(ok(&conn.call(&[b"MULTI"]).unwrap()));
    conn.call(&[b"SET", b"m", b"v", b"PX", b"50000"]).unwrap();
    conn.call(&[b"PTTL", b"m"]).unwrap();
    let r = conn.call(&[b"EXEC"]).unwrap();
    let RespValue::Array(Some(items)) = r else {
        panic!("EXEC: {r:?}")
    };
    assert_eq!(int(&items[1]), 50_000, "PTTL right after SET in one entry");

    c.assert_same_dataset();
    for node in &c.nodes {
        assert_eq!(int(&local(node, &["EXISTS", "gone", "gone2"])), 0);
    }
}

/// No node deletes a key by its own clock: the leader's expiry entries
/// delete it on every node, and a read never sees it once its time came.
#[test]
fn expired_keys_are_never_read_and_are_deleted_through_the_log_on_every_node() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let n = &c.nodes[l];
    for i in 0..50 {
        assert!(ok(&n.cmd(&["SET", &format!("e{i}"), "v", "PX", "200"])));
    }
    assert!(ok(&n.cmd(&["SET", "keep", "v", "EX", "1000"])));
    let start = Instant::now();
    // Reads right at the expiry: once the time came, never a value.
    while start.elapsed() < Duration::from_millis(400) {
        let r = n.cmd(&["GET", "e0"]);
        if start.elapsed() > Duration::from_millis(260) {
            assert_eq!(r, RespValue::Bulk(None));
        }
    }
    for node in &c.nodes {
        wait_for(10, "expired keys deleted on every node", || {
            let left: i64 = (0..50)
                .map(|i| int(&local(node, &["EXISTS", &format!("e{i}")])))
                .sum();
            (left == 0).then_some(())
        });
        assert_eq!(int(&local(node, &["EXISTS", "keep"])), 1);
    }
    c.assert_same_dataset();
}

/// A log replayed after a restart used to run `SET k v PX 300` again
/// relative to the replay: an expired key came back with a fresh TTL.
#[test]
fn a_key_that_expired_before_a_restart_of_the_whole_cluster_stays_expired() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    assert!(ok(&c.nodes[l].cmd(&["SET", "short", "v", "PX", "300"])));
    assert!(ok(&c.nodes[l].cmd(&["SET", "long", "v", "EX", "1000"])));
    let at = int(&c.nodes[l].cmd(&["PEXPIRETIME", "long"]));
    // One node restarts from a snapshot (an RDB load), the others replay.
    assert!(ok(&c.nodes[(l + 1) % 3].cmd(&["RAFT.DEBUG", "COMPACT"])));
    std::thread::sleep(Duration::from_millis(600));
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        n.launch();
    }
    let l = c.wait_leader();
    assert_eq!(c.nodes[l].cmd(&["GET", "short"]), RespValue::Bulk(None));
    assert_eq!(int(&c.nodes[l].cmd(&["PEXPIRETIME", "long"])), at);
    c.assert_same_dataset();
    for n in &c.nodes {
        wait_for(10, "the expired key gone on every node", || {
            (int(&local(n, &["EXISTS", "short"])) == 0).then_some(())
        });
        assert_eq!(
            int(&local(n, &["PEXPIRETIME", "long"])),
            at + 1_000_000_000_000_000
        );
    }
}

fn eval(n: &Node, script: &str, keys: &[&str]) -> RespValue {
    let nk = keys.len().to_string();
    let mut args = vec!["EVAL", script, &nk];
    args.extend_from_slice(keys);
    n.cmd(&args)
}

/// The second experiment and its kin: a script runs on every node,
/// so whatever it reads (time, chance, hash-table order, expiry) must give
/// every node the same answer.
#[test]
fn scripts_get_the_same_answers_on_every_node() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let n = &c.nodes[l];
    let members: Vec<String> = (0..200).map(|i| format!("member-{i}")).collect();
    let mut sadd = vec!["SADD", "s"];
    sadd.extend(members.iter().map(String::as_str));
    assert_eq!(int(&n.cmd(&sadd)), 200);
    for _ in 0..3 {
        let r = eval(n, "return redis.call('SPOP', KEYS[1])", &["s"]);
        assert!(bulk(&r).is_some_and(|m| m.starts_with("member-")), "{r:?}");
    }
    let r = eval(n, "return redis.call('SPOP', KEYS[1], 5)", &["s"]);
    assert!(
        matches!(&r, RespValue::Array(Some(a)) if a.len() == 5),
        "{r:?}"
    );
    assert_eq!(int(&n.cmd(&["SCARD", "s"])), 192);
    // Top-level SPOP is a write now, drawn from the entry.
    assert!(bulk(&n.cmd(&["SPOP", "s"])).is_some());
    // TIME, Lua's math.random and SRANDMEMBER, stored.
    eval(
        n,
        "local t = redis.call('TIME'); redis.call('SET', KEYS[1], t[1] .. '.' .. t[2]); \
         redis.call('SET', KEYS[2], math.random(1000000000)); \
         redis.call('SET', KEYS[3], redis.call('SRANDMEMBER', 's'))",
        &["time", "random", "srand"],
    );
    // The order of a large set (a hash table) and of a scan, stored in lists.
    eval(
        n,
        "redis.call('RPUSH', KEYS[1], unpack(redis.call('SMEMBERS', 's'))); \
         local page = redis.call('SSCAN', 's', 0, 'COUNT', 3); \
         redis.call('RPUSH', KEYS[2], page[1], unpack(page[2]))",
        &["order", "scanned"],
    );
    assert_eq!(
        int(&n.cmd(&["LLEN", "scanned"])),
        192,
        "one page, cursor 0, all members"
    );
    // TTLs inside a script: set and read at the entry's time.
    let r = eval(
        n,
        "redis.call('SET', KEYS[1], 'v', 'EX', 100); return redis.call('TTL', KEYS[1])",
        &["x"],
    );
    assert_eq!(r, RespValue::Integer(100));
    // A key whose time has come, read by a script that did not declare it.
    assert!(ok(&n.cmd(&["SET", "u", "v", "PX", "50"])));
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(
        eval(n, "return redis.call('GET', 'u')", &[]),
        RespValue::Bulk(None)
    );
    // The internal read-only script call runs no write, and neither does a
    // read-only script; outside a script the call is refused.
    let r = eval(
        n,
        "return redis.call('RAFT._SCRIPTR', 'SET', 'a', 'b')",
        &[],
    );
    assert!(
        err_text(&r).is_some_and(|e| e.contains("read-only")),
        "{r:?}"
    );
    let r = n.cmd(&[
        "EVAL_RO",
        "return redis.call('RAFT._SCRIPTR', 'SET', 'a', 'b')",
        "0",
    ]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("read-only")),
        "{r:?}"
    );
    let r = n.cmd(&["EVAL_RO", "return redis.call('TTL', KEYS[1])", "1", "x"]);
    assert!(matches!(r, RespValue::Integer(99 | 100)), "{r:?}");
    let r = n.cmd(&["RAFT._SCRIPTW", "SET", "a", "b"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("internal")),
        "{r:?}"
    );
    assert_eq!(int(&n.cmd(&["EXISTS", "a"])), 0);

    c.assert_same_dataset();
    for node in &c.nodes {
        assert_eq!(int(&local(node, &["EXISTS", "u"])), 0);
    }
}

#[test]
fn xadd_ids_come_from_the_entry_and_writes_over_maxmemory_are_refused_before_the_log() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let n = &c.nodes[l];
    let before = now_ms();
    let id = bulk(&n.cmd(&["XADD", "st", "*", "f", "1"])).unwrap();
    let ms: i64 = id.split('-').next().unwrap().parse().unwrap();
    assert!((ms - before).abs() < 5_000, "{id}");
    for i in 0..20 {
        let r = n.cmd(&["XADD", "st", "MAXLEN", "~", "5", "*", "f", &i.to_string()]);
        assert!(bulk(&r).is_some(), "{r:?}");
    }
    // A stream whose last ID is ahead of the clock: the next is after it.
    let r = n.cmd(&["XADD", "ahead", "99999999999999-5", "f", "v"]);
    assert_eq!(bulk(&r).as_deref(), Some("99999999999999-5"));
    assert_eq!(
        bulk(&n.cmd(&["XADD", "ahead", "*", "f", "v"])).as_deref(),
        Some("99999999999999-6")
    );
    // An explicit ID is left as it is, with Redis's own error when too low.
    let r = n.cmd(&["XADD", "ahead", "1-1", "f", "v"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("equal or smaller")),
        "{r:?}"
    );

    assert!(ok(&n.cmd(&["CONFIG", "SET", "maxmemory", "1"])));
    let r = n.cmd(&["SET", "big", "v"]);
    assert_eq!(
        err_text(&r),
        Some("OOM command not allowed when used memory > 'maxmemory'.")
    );
    // Writes that free memory and reads still work.
    assert_eq!(int(&n.cmd(&["DEL", "ahead"])), 1);
    assert!(bulk(&n.cmd(&["GET", "big"])).is_none());
    assert!(ok(&n.cmd(&["CONFIG", "SET", "maxmemory", "0"])));
    assert!(ok(&n.cmd(&["SET", "big", "v"])));
    c.assert_same_dataset();
}
