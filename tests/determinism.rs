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

    // A write or a read of a key whose time has come sees no key, as in
    // Redis, before any expiry entry of the leader deleted it.
    assert!(ok(&n.cmd(&[
        "CONFIG",
        "SET",
        "raft.expire-cycle-disable",
        "yes"
    ])));
    assert!(ok(&n.cmd(&["SET", "counter", "41", "PX", "100"])));
    assert!(ok(&n.cmd(&["SET", "read", "v", "PX", "100"])));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        int(&local(n, &["EXISTS", "counter", "read"])),
        2,
        "not deleted yet"
    );
    assert_eq!(int(&n.cmd(&["INCR", "counter"])), 1);
    assert_eq!(n.cmd(&["GET", "read"]), RespValue::Bulk(None));
    assert_eq!(
        int(&local(n, &["EXISTS", "read"])),
        0,
        "the read went through the log"
    );
    // Keyspace reads do not count keys whose time has come either.
    for i in 0..5 {
        assert!(ok(&n.cmd(&["SET", &format!("ks{i}"), "v", "PX", "50"])));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = int(&local(n, &["DBSIZE"]));
    let r = n.cmd(&["KEYS", "ks*"]);
    assert_eq!(r, RespValue::Array(Some(vec![])), "{r:?}");
    assert_eq!(int(&n.cmd(&["DBSIZE"])), before - 5);
    // Inside MULTI too (a full pass deletes what is due first).
    for i in 0..3 {
        assert!(ok(&n.cmd(&["SET", &format!("km{i}"), "v", "PX", "50"])));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut conn = n.conn();
    assert!(ok(&conn.call(&[b"MULTI"]).unwrap()));
    conn.call(&[b"KEYS", b"km*"]).unwrap();
    let r = conn.call(&[b"EXEC"]).unwrap();
    assert_eq!(
        r,
        RespValue::Array(Some(vec![RespValue::Array(Some(vec![]))]))
    );
    let r = n.cmd(&["SCAN", "0", "MATCH", "ks*"]);
    assert!(
        matches!(&r, RespValue::Array(Some(a)) if a[1] == RespValue::Array(Some(vec![]))),
        "{r:?}"
    );
    assert!(ok(&n.cmd(&[
        "CONFIG",
        "SET",
        "raft.expire-cycle-disable",
        "no"
    ])));

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

/// One random write of a family, on keys of a small pool, many with short
/// TTLs, so that keys expire while the run goes on.
fn random_write(rng: &mut rand::rngs::StdRng) -> Vec<String> {
    use rand::Rng;
    let k = |rng: &mut rand::rngs::StdRng, fam: &str| format!("{fam}:{}", rng.gen_range(0..12));
    let ttl = |rng: &mut rand::rngs::StdRng| rng.gen_range(20..400).to_string();
    let v = |rng: &mut rand::rngs::StdRng| rng.gen_range(0..1000).to_string();
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match rng.gen_range(0..22) {
        0 => s(&["SET", &k(rng, "str"), &v(rng), "PX", &ttl(rng)]),
        1 => s(&["INCR", &k(rng, "str")]),
        2 => s(&["APPEND", &k(rng, "str"), &v(rng)]),
        3 => s(&["GETEX", &k(rng, "str"), "PX", &ttl(rng)]),
        4 => s(&["SET", &k(rng, "str"), &v(rng), "KEEPTTL"]),
        5 => s(&["RPUSH", &k(rng, "list"), &v(rng), &v(rng)]),
        6 => s(&["LMOVE", &k(rng, "list"), &k(rng, "list"), "LEFT", "RIGHT"]),
        7 => s(&["HSET", &k(rng, "hash"), &v(rng), &v(rng)]),
        8 => s(&["HINCRBY", &k(rng, "hash"), "f", "3"]),
        9 => s(&["SADD", &k(rng, "set"), &v(rng), &v(rng), &v(rng)]),
        10 => s(&["SPOP", &k(rng, "set"), "2"]),
        11 => s(&["SINTERSTORE", &k(rng, "set"), &k(rng, "set"), &k(rng, "set")]),
        12 => s(&["ZADD", &k(rng, "zset"), &v(rng), &v(rng)]),
        13 => s(&["ZPOPMIN", &k(rng, "zset")]),
        14 => s(&["XADD", &k(rng, "stream"), "MAXLEN", "~", "10", "*", "f", &v(rng)]),
        15 => s(&["SETBIT", &k(rng, "bits"), &v(rng), "1"]),
        16 => s(&["PFADD", &k(rng, "hll"), &v(rng), &v(rng)]),
        17 => s(&["GEOADD", &k(rng, "geo"), "13.36", "38.11", &v(rng)]),
        18 => {
            let fam = ["str", "list", "hash", "set", "zset", "stream", "bits"][rng.gen_range(0..7)];
            let cmd = ["EXPIRE", "PEXPIRE", "PERSIST", "RENAME"][rng.gen_range(0..4)];
            let key = k(rng, fam);
            match cmd {
                "PERSIST" => s(&["PERSIST", &key]),
                "RENAME" => s(&["RENAME", &key, &k(rng, fam)]),
                "EXPIRE" => s(&["EXPIRE", &key, &rng.gen_range(-1..2).to_string()]),
                _ => s(&["PEXPIRE", &key, &ttl(rng)]),
            }
        }
        19 => s(&[
            "EVAL",
            "local m = redis.call('SPOP', KEYS[1]); if m then redis.call('RPUSH', KEYS[2], m, redis.call('TIME')[1]) end; \
             redis.call('PEXPIRE', KEYS[2], ARGV[1]); return redis.call('PTTL', KEYS[2])",
            "2",
            &k(rng, "set"),
            &k(rng, "list"),
            &ttl(rng),
        ]),
        20 => s(&[
            "EVAL",
            "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do redis.call('RPUSH', KEYS[2], f) end; \
             redis.call('SET', KEYS[3], math.random(100000), 'PX', ARGV[1])",
            "3",
            &k(rng, "hash"),
            &k(rng, "list"),
            &k(rng, "str"),
            &ttl(rng),
        ]),
        _ => vec![], // a MULTI block, sent by the caller
    }
}

fn run_random_writes(n: &Node, rng: &mut rand::rngs::StdRng, count: usize) {
    let mut conn = n.conn();
    for _ in 0..count {
        let cmd = random_write(rng);
        let cmds: Vec<Vec<String>> = if cmd.is_empty() {
            let mut block = vec![vec!["MULTI".to_string()]];
            for _ in 0..3 {
                let c = random_write(rng);
                if !c.is_empty() {
                    block.push(c);
                }
            }
            block.push(vec!["EXEC".to_string()]);
            block
        } else {
            vec![cmd]
        };
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
            // Errors (a wrong type, a missing key for RENAME) are part of it.
            let r = conn.call(&args).unwrap();
            if let Some(e) = err_text(&r) {
                assert!(
                    !e.contains("internal") && !e.contains("not supported"),
                    "{c:?}: {e}"
                );
            }
        }
    }
}

/// Every write family with TTLs, scripts and MULTI, a follower restarted,
/// one caught up by a snapshot install, the whole cluster restarted: the
/// digests stay equal at every check.
#[test]
fn random_writes_of_every_family_with_ttls_leave_equal_datasets_through_restarts_and_snapshots() {
    use rand::SeedableRng;
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("random writes: SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    run_random_writes(&c.nodes[l], &mut rng, 400);
    c.assert_same_dataset();

    // A follower restarts and replays its log.
    let f = (l + 1) % 3;
    c.nodes[f].kill9();
    run_random_writes(&c.nodes[l], &mut rng, 200);
    c.nodes[f].launch();
    c.wait_leader();
    c.assert_same_dataset();

    // The other follower falls behind compactions: it gets a snapshot.
    let g = (l + 2) % 3;
    c.nodes[g].kill9();
    for _ in 0..2 {
        run_random_writes(&c.nodes[l], &mut rng, 150);
        assert!(ok(&c.nodes[l].cmd(&["RAFT.DEBUG", "COMPACT"])));
    }
    c.nodes[g].launch();
    let l = c.wait_leader();
    run_random_writes(&c.nodes[l], &mut rng, 100);
    c.assert_same_dataset();
    let received: u64 = c.nodes[g].info_field("snapshots_received").parse().unwrap();
    assert!(received >= 1, "the node behind was not sent a snapshot");

    // The whole cluster restarts while keys are still expiring.
    run_random_writes(&c.nodes[l], &mut rng, 100);
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        n.launch();
    }
    let l = c.wait_leader();
    run_random_writes(&c.nodes[l], &mut rng, 100);
    c.assert_same_dataset();
}
