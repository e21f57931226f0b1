//! Blocking commands (issue 12, item 1): BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
//! BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD ... BLOCK and XREADGROUP ...
//! BLOCK. Served at once through the log, or after waiting on the leader;
//! every pop (and every XREADGROUP delivery) is a log entry, so every node
//! pops the same element. Replies are compared with a plain redis-server.
//!
//! Run: `REDISRAFT_MODULE=$PWD/redisraft.so cargo test --release --test
//! blocking -- --test-threads=2`

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redisraft::resp::{Connection, RespValue};

fn call(c: &mut Connection, args: &[&str]) -> RespValue {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.call(&a).expect("command")
}

fn send(c: &mut Connection, args: &[&str]) {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.send(&a).expect("send");
}

fn arr(items: &[&str]) -> RespValue {
    RespValue::Array(Some(
        items
            .iter()
            .map(|s| RespValue::Bulk(Some(s.as_bytes().to_vec())))
            .collect(),
    ))
}

const NIL_ARRAY: RespValue = RespValue::Array(None);

/// Clients of the leader waiting in a blocking command.
fn waiting(n: &Node) -> usize {
    n.info_field("blocked_clients").parse().unwrap()
}

fn wait_waiting(n: &Node, want: usize) {
    wait_for(20, &format!("{want} blocked clients"), || {
        (waiting(n) == want).then_some(())
    });
}

/// Redis's own count of blocked clients (INFO clients).
fn redis_blocked(c: &mut Connection) -> usize {
    let info = bulk(&call(c, &["INFO", "clients"])).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// No reply arrives on `c` while the cluster applies one more entry.
fn still_blocked(leader: &Node, c: &mut Connection) {
    assert!(ok(&leader.cmd(&["SET", "barrier", "1"])));
    assert_eq!(
        c.try_recv(true).unwrap(),
        None,
        "answered while it should wait"
    );
}

fn leader_of(c: &Cluster) -> &Node {
    &c.nodes[c.wait_leader()]
}

#[test]
fn commands_that_can_pop_at_once_answer_as_redis_does() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut p = plain.connection();
    let mut r = leader.conn();
    let script: &[&[&str]] = &[
        &["RPUSH", "l", "a", "b", "c", "d", "e", "f"],
        &[
            "ZADD", "z", "1", "one", "2", "two", "3", "three", "4", "four",
        ],
        &["SET", "s", "x"],
        &["BLPOP", "none", "l", "0"],
        &["BRPOP", "l", "1"],
        &["BRPOPLPUSH", "l", "l2", "0"],
        &["BLMOVE", "l", "l2", "LEFT", "RIGHT", "0"],
        &["BLMPOP", "0", "2", "none", "l", "RIGHT", "COUNT", "5"],
        &["BZPOPMIN", "z", "0"],
        &["BZPOPMAX", "none", "z", "0.5"],
        &["BZMPOP", "0", "1", "z", "MIN", "COUNT", "3"],
        &["LRANGE", "l2", "0", "-1"],
        // Errors come from Redis itself.
        &["BLPOP", "s", "0"],
        &["BLPOP", "l2", "-1"],
        &["BLPOP", "l2", "abc"],
        &["BLMOVE", "l2", "s", "LEFT", "LEFT", "0"],
        &["BLMPOP", "0", "1", "l2", "UP"],
        &["BZMPOP", "0", "0", "z", "MIN"],
        &["BLPOP", "l2"],
        // Blocking commands in MULTI run without blocking: nil at once.
        &["MULTI"],
        &["BLPOP", "empty", "0"],
        &["BLMOVE", "empty", "x", "LEFT", "LEFT", "0"],
        &["BZPOPMIN", "empty", "0"],
        &["BLMPOP", "0", "1", "empty", "LEFT"],
        &["LPUSH", "empty", "v"],
        &["BRPOP", "empty", "0"],
        &["EXEC"],
    ];
    for cmd in script {
        let want = call(&mut p, cmd);
        let got = call(&mut r, cmd);
        assert_eq!(got, want, "{cmd:?}");
    }
    c.assert_same_dataset();
}

#[test]
fn waiters_are_served_in_arrival_order_by_pushes_of_other_clients() {
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut waiters: Vec<Connection> = (0..3).map(|_| leader.conn()).collect();
    for (i, w) in waiters.iter_mut().enumerate() {
        send(w, &["BLPOP", "q", "0"]);
        wait_waiting(leader, i + 1);
    }
    still_blocked(leader, &mut waiters[0]);
    assert_eq!(
        leader.cmd(&["RPUSH", "q", "a", "b", "c"]),
        RespValue::Integer(3)
    );
    for (w, want) in waiters.iter_mut().zip(["a", "b", "c"]) {
        assert_eq!(w.recv().unwrap(), arr(&["q", want]));
    }
    wait_waiting(leader, 0);
    // Every kind of blocking command, each served by a push.
    let mut w = leader.conn();
    let cases: &[(&[&str], &[&str], RespValue)] = &[
        (&["BRPOP", "l", "0"], &["LPUSH", "l", "x"], arr(&["l", "x"])),
        (
            &["BRPOPLPUSH", "l", "d", "0"],
            &["RPUSH", "l", "y"],
            RespValue::Bulk(Some(b"y".to_vec())),
        ),
        (
            &["BLMOVE", "l", "d", "LEFT", "LEFT", "0"],
            &["RPUSH", "l", "z"],
            RespValue::Bulk(Some(b"z".to_vec())),
        ),
        (
            &["BLMPOP", "0", "2", "a", "l", "LEFT", "COUNT", "2"],
            &["RPUSH", "l", "1", "2", "3"],
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(b"l".to_vec())),
                arr(&["1", "2"]),
            ])),
        ),
        (
            &["BZPOPMIN", "z", "0"],
            &["ZADD", "z", "5", "m"],
            arr(&["z", "m", "5"]),
        ),
        (
            &["BZPOPMAX", "z", "0"],
            &["ZADD", "z", "6", "n", "1", "o"],
            arr(&["z", "n", "6"]),
        ),
        (
            &["BZMPOP", "0", "1", "y", "MIN"],
            &["ZADD", "y", "2", "p"],
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(b"y".to_vec())),
                RespValue::Array(Some(vec![arr(&["p", "2"])])),
            ])),
        ),
    ];
    for (block, push, want) in cases {
        send(&mut w, block);
        wait_waiting(leader, 1);
        leader.cmd(push);
        assert_eq!(&w.recv().unwrap(), want, "{block:?}");
        wait_waiting(leader, 0);
    }
    assert_eq!(leader.cmd(&["LRANGE", "l", "0", "-1"]), arr(&["3"]));
    assert_eq!(leader.cmd(&["LRANGE", "d", "0", "-1"]), arr(&["z", "y"]));
    c.assert_same_dataset();
}

#[test]
fn timeouts_answer_nil_and_zero_waits_until_served() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut w = leader.conn();
    let mut p = plain.connection();
    for cmd in [
        &["BLPOP", "none", "0.1"][..],
        &["BRPOP", "none", "none2", "0.2"],
        &["BLMOVE", "none", "d", "LEFT", "LEFT", "0.05"],
        &["BRPOPLPUSH", "none", "d", "1"],
        &["BZPOPMIN", "none", "0.01"],
        &["BLMPOP", "0.1", "1", "none", "LEFT"],
        &["BZMPOP", "0.1", "1", "none", "MAX", "COUNT", "2"],
    ] {
        let want = call(&mut p, cmd);
        assert_eq!(want, NIL_ARRAY, "{cmd:?} on Redis");
        assert_eq!(call(&mut w, cmd), want, "{cmd:?}");
    }
    wait_waiting(leader, 0);
    // 0 waits for as long as it takes.
    send(&mut w, &["BLPOP", "later", "0"]);
    wait_waiting(leader, 1);
    std::thread::sleep(Duration::from_millis(1500));
    still_blocked(leader, &mut w);
    leader.cmd(&["RPUSH", "later", "v"]);
    assert_eq!(w.recv().unwrap(), arr(&["later", "v"]));
    // Nothing was popped for the clients that timed out.
    assert_eq!(leader.cmd(&["EXISTS", "d"]), RespValue::Integer(0));
    c.assert_same_dataset();
}

#[test]
fn client_unblock_ends_a_wait_with_nil_or_an_error() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    for mode in ["TIMEOUT", "ERROR"] {
        let mut w = leader.conn();
        let id = call(&mut w, &["CLIENT", "ID"]);
        let RespValue::Integer(id) = id else {
            panic!("{id:?}")
        };
        send(&mut w, &["BLPOP", "k", "0"]);
        wait_waiting(leader, 1);
        let r = leader.cmd(&["CLIENT", "UNBLOCK", &id.to_string(), mode]);
        assert_eq!(r, RespValue::Integer(1), "{mode}");
        let got = w.recv().unwrap();
        // The same as plain Redis answers.
        let mut pw = plain.connection();
        let RespValue::Integer(pid) = call(&mut pw, &["CLIENT", "ID"]) else {
            panic!()
        };
        send(&mut pw, &["BLPOP", "k", "0"]);
        let mut pc = plain.connection();
        wait_for(10, "blocked on plain Redis", || {
            (redis_blocked(&mut pc) == 1).then_some(())
        });
        assert_eq!(
            call(&mut pc, &["CLIENT", "UNBLOCK", &pid.to_string(), mode]),
            RespValue::Integer(1)
        );
        assert_eq!(got, pw.recv().unwrap(), "{mode}");
        wait_waiting(leader, 0);
        // Unblocked: a push later stays in the list.
        assert_eq!(leader.cmd(&["RPUSH", "k", "v"]), RespValue::Integer(1));
        still_blocked(leader, &mut w);
        assert_eq!(
            leader.cmd(&["LPOP", "k"]),
            RespValue::Bulk(Some(b"v".to_vec()))
        );
    }
    // A client that is not blocked, or no such client: 0, as Redis says.
    let mut w = leader.conn();
    let RespValue::Integer(id) = call(&mut w, &["CLIENT", "ID"]) else {
        panic!()
    };
    assert_eq!(
        leader.cmd(&["CLIENT", "UNBLOCK", &id.to_string()]),
        RespValue::Integer(0)
    );
    assert_eq!(
        leader.cmd(&["CLIENT", "UNBLOCK", "999999"]),
        RespValue::Integer(0)
    );
    let mut p = plain.connection();
    for bad in [
        &["CLIENT", "UNBLOCK", "x"][..],
        &["CLIENT", "UNBLOCK", "1", "MAYBE"],
    ] {
        assert_eq!(leader.cmd(bad), call(&mut p, bad), "{bad:?}");
    }
    c.assert_same_dataset();
}

#[test]
fn a_waited_key_deleted_retyped_or_renamed_into_as_redis_does() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut w = leader.conn();
    let mut pw = plain.connection();
    let mut p = plain.connection();
    send(&mut w, &["BLPOP", "k", "0"]);
    send(&mut pw, &["BLPOP", "k", "0"]);
    wait_waiting(leader, 1);
    wait_for(10, "blocked on plain Redis", || {
        (redis_blocked(&mut p) == 1).then_some(())
    });
    // Another type, then deleted: the client waits on, as on Redis.
    for cmd in [
        &["SET", "k", "str"][..],
        &["DEL", "k"],
        &["ZADD", "k", "1", "m"],
        &["DEL", "k"],
    ] {
        assert_eq!(leader.cmd(cmd), call(&mut p, cmd), "{cmd:?}");
        still_blocked(leader, &mut w);
        assert_eq!(redis_blocked(&mut p), 1, "{cmd:?}");
    }
    // A list renamed onto the key serves it.
    for cmd in [&["RPUSH", "src", "v1", "v2"][..], &["RENAME", "src", "k"]] {
        assert_eq!(leader.cmd(cmd), call(&mut p, cmd), "{cmd:?}");
    }
    let want = pw.recv().unwrap();
    assert_eq!(want, arr(&["k", "v1"]));
    assert_eq!(w.recv().unwrap(), want);
    assert_eq!(leader.cmd(&["LRANGE", "k", "0", "-1"]), arr(&["v2"]));
    // A client that comes to a key of another type gets WRONGTYPE at once,
    // even while others wait on that key.
    send(&mut w, &["BLPOP", "s", "0"]);
    wait_waiting(leader, 1);
    leader.cmd(&["SET", "s", "str"]);
    let mut other = leader.conn();
    call(&mut p, &["SET", "s", "str"]);
    let want = call(&mut p, &["BLPOP", "k2", "s", "0"]);
    assert!(
        err_text(&want).is_some_and(|e| e.starts_with("WRONGTYPE")),
        "{want:?}"
    );
    assert_eq!(call(&mut other, &["BLPOP", "k2", "s", "0"]), want);
    still_blocked(leader, &mut w);
    assert!(ok(&leader.cmd(&["SET", "s", "str2"])));
    c.assert_same_dataset();
}

#[test]
fn a_leader_change_tells_waiters_and_pops_nothing_for_them() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    let mut w = leader.conn();
    send(&mut w, &["BRPOP", "jobs", "0"]);
    wait_waiting(leader, 1);
    let target = (l + 1) % 3;
    let target_id = c.nodes[target].info_field("node_id");
    assert!(ok(&leader.cmd(&["RAFT.TRANSFER_LEADER", &target_id])));
    let r = w.recv().unwrap();
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("TRYAGAIN") && e.contains("nothing was popped")),
        "{r:?}"
    );
    assert_eq!(c.wait_leader(), target);
    assert_eq!(waiting(&c.nodes[l]), 0);
    // The element pushed afterwards stays in the list.
    assert_eq!(
        c.nodes[target].cmd(&["LPUSH", "jobs", "j1"]),
        RespValue::Integer(1)
    );
    assert_eq!(
        c.nodes[target].cmd(&["LLEN", "jobs"]),
        RespValue::Integer(1)
    );
    // The old leader refuses new waiters: they go to the leader.
    let r = c.nodes[l].cmd(&["BLPOP", "jobs", "0"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("MOVED")),
        "{r:?}"
    );
    // On the new leader it pops at once.
    assert_eq!(
        c.nodes[target].cmd(&["BLPOP", "jobs", "0"]),
        arr(&["jobs", "j1"])
    );
    c.assert_same_dataset();
}

#[test]
fn waiters_survive_snapshots_taken_and_installed() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let mut w = c.nodes[l].conn();
    send(&mut w, &["BLPOP", "q", "0"]);
    wait_waiting(&c.nodes[l], 1);
    for i in 0..50 {
        c.nodes[l].cmd(&["SET", &format!("k{i}"), "v"]);
    }
    for n in &c.nodes {
        assert!(ok(&n.cmd(&["RAFT.DEBUG", "COMPACT"])), "{}", n.log());
    }
    // A new node catches up through a snapshot while the client waits.
    let n4 = Node::start(&[]);
    let r = n4.cmd(&["RAFT.CLUSTER", "JOIN", &c.nodes[l].addr()]);
    assert!(ok(&r), "JOIN: {r:?}");
    wait_for(30, "snapshot installed", || {
        (n4.info_field("snapshots_received") != "0").then_some(())
    });
    c.nodes.push(n4);
    still_blocked(&c.nodes[l], &mut w);
    assert_eq!(waiting(&c.nodes[l]), 1);
    c.nodes[l].cmd(&["RPUSH", "q", "x"]);
    assert_eq!(w.recv().unwrap(), arr(&["q", "x"]));
    c.assert_same_dataset();
}

#[test]
fn a_client_that_disconnects_while_waiting_gets_nothing_popped() {
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut rc = leader.conn();
    let before = redis_blocked(&mut rc);
    {
        let mut w = leader.conn();
        send(&mut w, &["BLPOP", "q", "0"]);
        wait_waiting(leader, 1);
        w.closer().unwrap().close();
    }
    wait_waiting(leader, 0);
    wait_for(10, "Redis released the client", || {
        (redis_blocked(&mut rc) == before).then_some(())
    });
    leader.cmd(&["RPUSH", "q", "x"]);
    assert_eq!(leader.cmd(&["LRANGE", "q", "0", "-1"]), arr(&["x"]));
    c.assert_same_dataset();
}

#[test]
fn a_job_queue_consumes_every_job_exactly_once() {
    const PRODUCERS: usize = 2;
    const JOBS: usize = 150;
    const CONSUMERS: usize = 4;
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let addr = leader.addr();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let mut conn = leader.conn();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match conn.call(&[b"BRPOP", b"jobs", b"0"]).expect("BRPOP") {
                        RespValue::Array(Some(v)) => {
                            let job = bulk(&v[1]).unwrap();
                            if job == "stop" {
                                return got;
                            }
                            got.push(job);
                        }
                        other => panic!("BRPOP: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut conn = Connection::connect(
                    &addr,
                    Duration::from_secs(2),
                    Duration::from_secs(30),
                    None,
                )
                .unwrap();
                for j in 0..JOBS {
                    let job = format!("job-{p}-{j}");
                    let r = conn.call(&[b"LPUSH", b"jobs", job.as_bytes()]).unwrap();
                    assert!(matches!(r, RespValue::Integer(_)), "{r:?}");
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for _ in 0..CONSUMERS {
        leader.cmd(&["LPUSH", "jobs", "stop"]);
    }
    let mut all = Vec::new();
    for t in consumers {
        all.extend(t.join().unwrap());
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), PRODUCERS * JOBS, "a job consumed twice or lost");
    assert_eq!(unique.len(), PRODUCERS * JOBS);
    assert_eq!(leader.cmd(&["LLEN", "jobs"]), RespValue::Integer(0));
    c.assert_same_dataset();
}

#[test]
fn client_unblock_while_the_clients_pop_is_in_the_log_waits_for_its_outcome() {
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let apply = |on: bool| {
        let v = if on { "no" } else { "yes" };
        assert!(ok(&leader.cmd(&[
            "CONFIG",
            "SET",
            "raft.log-disable-apply",
            v
        ])));
    };
    for (pushed_first, want_target, want_unblock) in [
        (false, NIL_ARRAY, RespValue::Integer(1)),
        (true, arr(&["k", "v"]), RespValue::Integer(0)),
    ] {
        let mut w = leader.conn();
        let RespValue::Integer(id) = call(&mut w, &["CLIENT", "ID"]) else {
            panic!()
        };
        let mut pusher = leader.conn();
        apply(false);
        if pushed_first {
            send(&mut pusher, &["RPUSH", "k", "v"]);
        }
        // Its first attempt is in the log, not applied yet.
        send(&mut w, &["BLPOP", "k", "0"]);
        wait_waiting(leader, 1);
        let mut u = leader.conn();
        send(&mut u, &["CLIENT", "UNBLOCK", &id.to_string()]);
        if !pushed_first {
            send(&mut pusher, &["RPUSH", "k", "v"]);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            u.try_recv(true).unwrap(),
            None,
            "answered before the entry applied"
        );
        apply(true);
        assert!(ok(&leader.cmd(&["SET", "resume", "1"])));
        assert_eq!(
            w.recv().unwrap(),
            want_target,
            "pushed first: {pushed_first}"
        );
        assert_eq!(
            u.recv().unwrap(),
            want_unblock,
            "pushed first: {pushed_first}"
        );
        assert_eq!(pusher.recv().unwrap(), RespValue::Integer(1));
        wait_waiting(leader, 0);
        // Nothing popped for an unblocked client: the element stays.
        let left = if pushed_first { 0 } else { 1 };
        assert_eq!(leader.cmd(&["LLEN", "k"]), RespValue::Integer(left));
        leader.cmd(&["DEL", "k"]);
    }
    c.assert_same_dataset();
}

fn stream_reply(key: &str, entries: &[(&str, &str, &str)]) -> RespValue {
    RespValue::Array(Some(vec![RespValue::Array(Some(vec![
        RespValue::Bulk(Some(key.as_bytes().to_vec())),
        RespValue::Array(Some(
            entries
                .iter()
                .map(|(id, f, v)| {
                    RespValue::Array(Some(vec![
                        RespValue::Bulk(Some(id.as_bytes().to_vec())),
                        arr(&[f, v]),
                    ]))
                })
                .collect(),
        )),
    ]))]))
}

#[test]
fn xread_block_waits_for_new_entries_and_every_reader_sees_them() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut p = plain.connection();
    let mut r = leader.conn();
    for cmd in [
        &["XADD", "s", "1-1", "f", "v1"][..],
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "0"],
        &[
            "XREAD", "COUNT", "1", "BLOCK", "100", "STREAMS", "none", "s", "0", "0",
        ],
        &["XREAD", "BLOCK", "50", "STREAMS", "s", "$"],
        &["XREAD", "BLOCK", "10", "STREAMS", "s", "1-1"],
        &["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"],
        &["MULTI"],
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        &["EXEC"],
    ] {
        assert_eq!(call(&mut r, cmd), call(&mut p, cmd), "{cmd:?}");
    }
    // Two readers wait with `$` (the last ID when they block), a third on
    // a stream that does not exist yet: a new entry reaches all of them.
    let mut readers: Vec<Connection> = (0..2).map(|_| leader.conn()).collect();
    for (i, w) in readers.iter_mut().enumerate() {
        send(w, &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]);
        wait_waiting(leader, i + 1);
    }
    let mut fresh = leader.conn();
    send(&mut fresh, &["XREAD", "BLOCK", "0", "STREAMS", "t", "$"]);
    wait_waiting(leader, 3);
    still_blocked(leader, &mut readers[0]);
    assert_eq!(
        leader.cmd(&["XADD", "s", "2-1", "f", "v2"]),
        RespValue::Bulk(Some(b"2-1".to_vec()))
    );
    for w in &mut readers {
        assert_eq!(w.recv().unwrap(), stream_reply("s", &[("2-1", "f", "v2")]));
    }
    still_blocked(leader, &mut fresh);
    leader.cmd(&["XADD", "t", "5-5", "a", "b"]);
    assert_eq!(
        fresh.recv().unwrap(),
        stream_reply("t", &[("5-5", "a", "b")])
    );
    wait_waiting(leader, 0);
    // Its timeout: nil, as Redis.
    assert_eq!(
        call(&mut r, &["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]),
        NIL_ARRAY
    );
    c.assert_same_dataset();
}

// ---------------------------------------------------------------------------
// XREADGROUP ... BLOCK

/// XPENDING's summary and its entries without their idle times (each
/// node's own clock), as node `n` holds them.
fn pending_on(n: &Node, key: &str, group: &str) -> (RespValue, Vec<RespValue>) {
    let summary = n.cmd(&["RAFT.DEBUG", "EXEC", "XPENDING", key, group]);
    let RespValue::Array(Some(entries)) = n.cmd(&[
        "RAFT.DEBUG",
        "EXEC",
        "XPENDING",
        key,
        group,
        "-",
        "+",
        "1000",
    ]) else {
        panic!("XPENDING on {}", n.addr())
    };
    let entries = entries
        .into_iter()
        .map(|e| match e {
            // [id, consumer, idle, deliveries]: idle dropped.
            RespValue::Array(Some(mut f)) if f.len() == 4 => {
                f.remove(2);
                RespValue::Array(Some(f))
            }
            other => other,
        })
        .collect();
    (summary, entries)
}

/// Every node holds the same pending entries for `group`; returns them.
fn same_pending_everywhere(c: &Cluster, key: &str, group: &str) -> (RespValue, Vec<RespValue>) {
    c.assert_same_dataset();
    let all: Vec<_> = c.nodes.iter().map(|n| pending_on(n, key, group)).collect();
    for p in &all[1..] {
        assert_eq!(p, &all[0], "pending entries differ between nodes");
    }
    all[0].clone()
}

fn xrg<'a>(group: &'a str, consumer: &'a str, block: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "XREADGROUP",
        "GROUP",
        group,
        consumer,
        "BLOCK",
        block,
        "STREAMS",
        key,
        ">",
    ]
}

#[test]
fn xreadgroup_block_answers_as_redis_does_and_waits_for_new_entries() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut p = plain.connection();
    let mut r = leader.conn();
    let script: &[&[&str]] = &[
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
        &["XADD", "s", "1-1", "f", "v1"],
        &["XADD", "s", "1-2", "f", "v2"],
        // Entries there: delivered at once, through the log.
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c2",
            "BLOCK",
            "0",
            "NOACK",
            "STREAMS",
            "s",
            ">",
        ],
        // Nothing new: its timeout answers nil.
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "100",
            "STREAMS",
            "s",
            ">",
        ],
        // An ID reads the consumer's pending entries: at once, never waits.
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            "0",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c3",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            "0",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            "s",
            ">",
            "0",
        ],
        // Errors, Redis's own.
        &[
            "XREADGROUP",
            "GROUP",
            "nog",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "none",
            ">",
        ],
        &["SET", "str", "x"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "str",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "-1",
            "STREAMS",
            "s",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
        ],
        // In MULTI it runs without blocking, as in Redis.
        &["MULTI"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">",
        ],
        &["EXEC"],
        &["XPENDING", "s", "g"],
    ];
    for cmd in script {
        let want = call(&mut p, cmd);
        assert_eq!(call(&mut r, cmd), want, "{cmd:?}");
    }
    // A client waits; an XADD from another client serves it, as on Redis.
    let mut w = leader.conn();
    let mut pw = plain.connection();
    send(&mut w, &xrg("g", "c3", "0", "s"));
    send(&mut pw, &xrg("g", "c3", "0", "s"));
    wait_waiting(leader, 1);
    wait_for(10, "blocked on plain Redis", || {
        (redis_blocked(&mut p) == 1).then_some(())
    });
    still_blocked(leader, &mut w);
    let add = ["XADD", "s", "2-1", "f", "v3"];
    assert_eq!(leader.cmd(&add), call(&mut p, &add));
    let want = pw.recv().unwrap();
    assert_eq!(want, stream_reply("s", &[("2-1", "f", "v3")]));
    assert_eq!(w.recv().unwrap(), want);
    wait_waiting(leader, 0);
    // The delivery is in the group on every node: c3 holds 2-1 pending.
    let (summary, entries) = same_pending_everywhere(&c, "s", "g");
    assert_eq!(summary, call(&mut p, &["XPENDING", "s", "g"]));
    let mut want = pending_on_plain(&mut p, "s", "g");
    want.sort_by_key(show);
    let mut got = entries;
    got.sort_by_key(show);
    assert_eq!(got, want);
    // Another group's reads and new group: nothing for the waiter of
    // group g until g has something new.
    assert_eq!(
        call(&mut r, &["XGROUP", "CREATE", "s", "late", "0"]),
        call(&mut p, &["XGROUP", "CREATE", "s", "late", "0"])
    );
    send(&mut w, &xrg("g", "c1", "0", "s"));
    wait_waiting(leader, 1);
    let read_late = ["XREADGROUP", "GROUP", "late", "x", "STREAMS", "s", ">"];
    assert_eq!(call(&mut r, &read_late), call(&mut p, &read_late));
    still_blocked(leader, &mut w);
    leader.cmd(&["XADD", "s", "3-1", "f", "v4"]);
    assert_eq!(w.recv().unwrap(), stream_reply("s", &[("3-1", "f", "v4")]));
    same_pending_everywhere(&c, "s", "g");
}

/// XPENDING's entries on a plain Redis, without idle times.
fn pending_on_plain(p: &mut Connection, key: &str, group: &str) -> Vec<RespValue> {
    let RespValue::Array(Some(entries)) = call(p, &["XPENDING", key, group, "-", "+", "1000"])
    else {
        panic!("XPENDING")
    };
    entries
        .into_iter()
        .map(|e| match e {
            RespValue::Array(Some(mut f)) if f.len() == 4 => {
                f.remove(2);
                RespValue::Array(Some(f))
            }
            other => other,
        })
        .collect()
}

#[test]
fn xreadgroup_block_consumers_of_a_group_are_served_first_come_each_entry_once() {
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    assert!(ok(
        &leader.cmd(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
    ));
    assert!(ok(&leader.cmd(&["XGROUP", "CREATE", "s", "h", "$"])));
    // Two consumers of g wait, in this order, and one of group h.
    let mut a = leader.conn();
    let mut b = leader.conn();
    let mut x = leader.conn();
    send(&mut a, &xrg("g", "a", "0", "s"));
    wait_waiting(leader, 1);
    send(&mut b, &xrg("g", "b", "0", "s"));
    wait_waiting(leader, 2);
    send(&mut x, &xrg("h", "x", "0", "s"));
    wait_waiting(leader, 3);
    still_blocked(leader, &mut b);
    // One entry: the first of g gets it, and h's consumer too (its group
    // is another); b waits on, in its place.
    leader.cmd(&["XADD", "s", "1-1", "f", "one"]);
    let one = stream_reply("s", &[("1-1", "f", "one")]);
    assert_eq!(a.recv().unwrap(), one);
    assert_eq!(x.recv().unwrap(), one);
    wait_waiting(leader, 1);
    still_blocked(leader, &mut b);
    // A non-blocking read of another consumer of g is in the log right
    // behind the next entry: it takes the entry (b's own entry, if one was
    // proposed, finds nothing), and b keeps its place.
    let apply = |on: bool| {
        let v = if on { "no" } else { "yes" };
        assert!(ok(&leader.cmd(&[
            "CONFIG",
            "SET",
            "raft.log-disable-apply",
            v
        ])));
    };
    let mut adder = leader.conn();
    let mut thief = leader.conn();
    apply(false);
    send(&mut adder, &["XADD", "s", "2-1", "f", "two"]);
    std::thread::sleep(Duration::from_millis(100));
    send(
        &mut thief,
        &["XREADGROUP", "GROUP", "g", "thief", "STREAMS", "s", ">"],
    );
    std::thread::sleep(Duration::from_millis(100));
    apply(true);
    assert!(ok(&leader.cmd(&["SET", "resume", "1"])));
    assert_eq!(
        adder.recv().unwrap(),
        RespValue::Bulk(Some(b"2-1".to_vec()))
    );
    assert_eq!(
        thief.recv().unwrap(),
        stream_reply("s", &[("2-1", "f", "two")])
    );
    still_blocked(leader, &mut b);
    assert_eq!(waiting(leader), 1);
    leader.cmd(&["XADD", "s", "3-1", "f", "three"]);
    assert_eq!(
        b.recv().unwrap(),
        stream_reply("s", &[("3-1", "f", "three")])
    );
    wait_waiting(leader, 0);

    // Many consumers, COUNT 1, producers adding concurrently: every entry
    // is delivered to exactly one consumer of the group.
    const JOBS: usize = 120;
    const CONSUMERS: usize = 3;
    assert!(ok(
        &leader.cmd(&["XGROUP", "CREATE", "jobs", "workers", "$", "MKSTREAM"])
    ));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|i| {
            let mut conn = leader.conn();
            std::thread::spawn(move || {
                let name = format!("w{i}");
                let mut got = Vec::new();
                loop {
                    let r = conn
                        .call(&[
                            b"XREADGROUP",
                            b"GROUP",
                            b"workers",
                            name.as_bytes(),
                            b"COUNT",
                            b"1",
                            b"BLOCK",
                            b"0",
                            b"STREAMS",
                            b"jobs",
                            b">",
                        ])
                        .expect("XREADGROUP");
                    let RespValue::Array(Some(streams)) = &r else {
                        panic!("XREADGROUP: {r:?}")
                    };
                    let RespValue::Array(Some(pair)) = &streams[0] else {
                        panic!("{r:?}")
                    };
                    let RespValue::Array(Some(entries)) = &pair[1] else {
                        panic!("{r:?}")
                    };
                    assert_eq!(entries.len(), 1, "COUNT 1: {r:?}");
                    let RespValue::Array(Some(entry)) = &entries[0] else {
                        panic!("{r:?}")
                    };
                    let RespValue::Array(Some(fields)) = &entry[1] else {
                        panic!("{r:?}")
                    };
                    let job = bulk(&fields[1]).unwrap();
                    if job == "stop" {
                        return (name, got);
                    }
                    got.push(job);
                }
            })
        })
        .collect();
    let addr = leader.addr();
    let producer = std::thread::spawn(move || {
        let mut conn =
            Connection::connect(&addr, Duration::from_secs(2), Duration::from_secs(30), None)
                .unwrap();
        for j in 0..JOBS {
            let job = format!("job-{j}");
            let r = conn
                .call(&[b"XADD", b"jobs", b"*", b"job", job.as_bytes()])
                .unwrap();
            assert!(bulk(&r).is_some(), "{r:?}");
        }
    });
    producer.join().unwrap();
    wait_for(30, "every job delivered", || {
        let (summary, _) = pending_on(leader, "jobs", "workers");
        let RespValue::Array(Some(s)) = summary else {
            return None;
        };
        (s[0] == RespValue::Integer(JOBS as i64)).then_some(())
    });
    for _ in 0..CONSUMERS {
        leader.cmd(&["XADD", "jobs", "*", "job", "stop"]);
    }
    let mut all = Vec::new();
    let mut per_consumer = Vec::new();
    for t in consumers {
        let (name, got) = t.join().unwrap();
        per_consumer.push((name, got.len()));
        all.extend(got);
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), JOBS, "an entry delivered twice or lost");
    assert_eq!(unique.len(), JOBS);
    // The pending entries say the same, on every node.
    let (summary, entries) = same_pending_everywhere(&c, "jobs", "workers");
    let RespValue::Array(Some(s)) = summary else {
        panic!()
    };
    assert_eq!(s[0], RespValue::Integer((JOBS + CONSUMERS) as i64));
    assert_eq!(entries.len(), JOBS + CONSUMERS);
    for (name, n) in per_consumer {
        let held = entries
            .iter()
            .filter(|e| matches!(e, RespValue::Array(Some(f)) if bulk(&f[1]).as_deref() == Some(name.as_str())))
            .count();
        assert_eq!(held, n + 1, "{name}: its jobs and its stop");
    }
}

#[test]
fn xreadgroup_block_ends_as_redis_does_when_its_group_or_key_goes() {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, &[]);
    let leader = leader_of(&c);
    let mut p = plain.connection();
    let setup: &[&str] = &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"];
    let cases: &[&[&str]] = &[
        &["XGROUP", "DESTROY", "s", "g"],
        &["DEL", "s"],
        &["SET", "s", "x"],
        &["RENAME", "s", "s2"],
        &["PEXPIRE", "s", "100"],
        &["FLUSHALL"],
    ];
    for how in cases {
        leader.cmd(&["DEL", "s", "s2"]);
        call(&mut p, &["DEL", "s", "s2"]);
        assert_eq!(leader.cmd(setup), call(&mut p, setup));
        let mut w = leader.conn();
        let mut pw = plain.connection();
        send(&mut w, &xrg("g", "c", "0", "s"));
        send(&mut pw, &xrg("g", "c", "0", "s"));
        wait_waiting(leader, 1);
        wait_for(10, "blocked on plain Redis", || {
            (redis_blocked(&mut p) == 1).then_some(())
        });
        assert_eq!(leader.cmd(how), call(&mut p, how), "{how:?}");
        let want = pw.recv().unwrap();
        assert!(err_text(&want).is_some(), "{how:?}: {want:?}");
        assert_eq!(w.recv().unwrap(), want, "{how:?}");
        wait_waiting(leader, 0);
    }
    // Deleting its consumer, or a group it does not read, or setting the
    // group's ID back: it waits on, as on Redis.
    leader.cmd(&["DEL", "s"]);
    call(&mut p, &["DEL", "s"]);
    for cmd in [setup, &["XGROUP", "CREATE", "s", "other", "$"]] {
        assert_eq!(leader.cmd(cmd), call(&mut p, cmd));
    }
    let mut w = leader.conn();
    let mut pw = plain.connection();
    send(&mut w, &xrg("g", "c", "0", "s"));
    send(&mut pw, &xrg("g", "c", "0", "s"));
    wait_waiting(leader, 1);
    wait_for(10, "blocked on plain Redis", || {
        (redis_blocked(&mut p) == 1).then_some(())
    });
    for cmd in [
        &["XGROUP", "DELCONSUMER", "s", "g", "c"][..],
        &["XGROUP", "DESTROY", "s", "other"],
        &["XGROUP", "SETID", "s", "g", "0"],
        &["XTRIM", "s", "MAXLEN", "0"],
    ] {
        assert_eq!(leader.cmd(cmd), call(&mut p, cmd), "{cmd:?}");
        still_blocked(leader, &mut w);
        assert_eq!(redis_blocked(&mut p), 1, "{cmd:?}");
    }
    let add = ["XADD", "s", "5-1", "f", "v"];
    assert_eq!(leader.cmd(&add), call(&mut p, &add));
    let want = pw.recv().unwrap();
    assert_eq!(want, stream_reply("s", &[("5-1", "f", "v")]));
    assert_eq!(w.recv().unwrap(), want);
    // CLIENT UNBLOCK and a timeout end it as they end the other commands.
    for mode in ["TIMEOUT", "ERROR"] {
        let RespValue::Integer(id) = call(&mut w, &["CLIENT", "ID"]) else {
            panic!()
        };
        send(&mut w, &xrg("g", "c", "0", "s"));
        wait_waiting(leader, 1);
        let r = leader.cmd(&["CLIENT", "UNBLOCK", &id.to_string(), mode]);
        assert_eq!(r, RespValue::Integer(1), "{mode}");
        let RespValue::Integer(pid) = call(&mut pw, &["CLIENT", "ID"]) else {
            panic!()
        };
        send(&mut pw, &xrg("g", "c", "0", "s"));
        wait_for(10, "blocked on plain Redis", || {
            (redis_blocked(&mut p) == 1).then_some(())
        });
        call(&mut p, &["CLIENT", "UNBLOCK", &pid.to_string(), mode]);
        assert_eq!(w.recv().unwrap(), pw.recv().unwrap(), "{mode}");
    }
    wait_waiting(leader, 0);
    // Nothing was delivered to the unblocked client.
    leader.cmd(&["XADD", "s", "6-1", "f", "v"]);
    call(&mut p, &["XADD", "s", "6-1", "f", "v"]);
    assert_eq!(
        leader.cmd(&["XPENDING", "s", "g"]),
        call(&mut p, &["XPENDING", "s", "g"])
    );
    same_pending_everywhere(&c, "s", "g");
}

#[test]
fn xreadgroup_block_leader_change_and_disconnect_deliver_nothing() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    assert!(ok(
        &leader.cmd(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"])
    ));
    // A client that disconnects while it waits: nothing delivered to it.
    {
        let mut w = leader.conn();
        send(&mut w, &xrg("g", "gone", "0", "s"));
        wait_waiting(leader, 1);
        w.closer().unwrap().close();
    }
    wait_waiting(leader, 0);
    leader.cmd(&["XADD", "s", "1-1", "f", "v"]);
    // A leader change: the waiter is told, and nothing is delivered.
    let mut w = leader.conn();
    send(&mut w, &xrg("g", "c", "0", "s"));
    // The entry 1-1 is new for g: the waiter gets it at once.
    assert_eq!(w.recv().unwrap(), stream_reply("s", &[("1-1", "f", "v")]));
    send(&mut w, &xrg("g", "c", "0", "s"));
    wait_waiting(leader, 1);
    let target = (l + 1) % 3;
    let target_id = c.nodes[target].info_field("node_id");
    assert!(ok(&leader.cmd(&["RAFT.TRANSFER_LEADER", &target_id])));
    let r = w.recv().unwrap();
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("TRYAGAIN")),
        "{r:?}"
    );
    assert_eq!(c.wait_leader(), target);
    let new = &c.nodes[target];
    new.cmd(&["XADD", "s", "2-1", "f", "v"]);
    // Only 1-1 is pending, delivered to c: nothing to "gone", nor for
    // the client told TRYAGAIN.
    let (summary, entries) = same_pending_everywhere(&c, "s", "g");
    let RespValue::Array(Some(s)) = summary else {
        panic!()
    };
    assert_eq!(s[0], RespValue::Integer(1));
    assert_eq!(
        entries,
        vec![RespValue::Array(Some(vec![
            RespValue::Bulk(Some(b"1-1".to_vec())),
            RespValue::Bulk(Some(b"c".to_vec())),
            RespValue::Integer(1),
        ]))]
    );
    // On the new leader the next reader gets 2-1 at once.
    assert_eq!(
        new.cmd(&xrg("g", "c", "0", "s")),
        stream_reply("s", &[("2-1", "f", "v")])
    );
}
