//! Streams (without BLOCK), pub/sub on every node and RESP3 replies,
//! against real nodes (issue 12, items 4, 6 and 7).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{bulk, err_text, now_ms, ok, wait_for, Cluster, Node, PlainRedis};
use redisraft::resp::RespValue;

/// A raw connection that returns each reply as the bytes the server sent
/// (any RESP2 or RESP3 type), so replies compare byte for byte.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let w = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// A connection that said HELLO 3.
    fn resp3(port: u16) -> Raw {
        let mut c = Raw::connect(port);
        let hello = c.call(&["HELLO", "3"]);
        assert!(hello.starts_with(b"%"), "HELLO 3: {}", show(&hello));
        c
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.w.write_all(&out).unwrap();
    }

    fn call(&mut self, args: &[&str]) -> Vec<u8> {
        self.send(args);
        self.reply()
    }

    /// One complete reply (a push message too), raw.
    fn reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.value(&mut out);
        out
    }

    fn value(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        self.r.read_until(b'\n', out).expect("read a reply");
        assert!(out.len() > start + 2, "connection closed");
        let line = String::from_utf8_lossy(&out[start + 1..out.len() - 2]).into_owned();
        let n = || line.parse::<i64>().unwrap_or(-1);
        match out[start] {
            b'$' | b'=' | b'!' if n() >= 0 => {
                let mut body = vec![0; n() as usize + 2];
                self.r.read_exact(&mut body).expect("read a bulk");
                out.extend_from_slice(&body);
            }
            b'*' | b'~' | b'>' => {
                for _ in 0..n().max(0) {
                    self.value(out);
                }
            }
            b'%' => {
                for _ in 0..2 * n().max(0) {
                    self.value(out);
                }
            }
            b'|' => {
                for _ in 0..2 * n().max(0) {
                    self.value(out);
                }
                self.value(out); // the value the attribute belongs to
            }
            _ => {}
        }
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", " ")
}

fn int(v: &RespValue) -> i64 {
    match v {
        RespValue::Integer(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn strings(v: &RespValue) -> Vec<String> {
    match v {
        RespValue::Array(Some(a)) => a.iter().map(|x| bulk(x).unwrap_or_default()).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A reply without the idle times (which each node's clock measures), as
/// one line: the state of a consumer group.
fn without_idle(v: &RespValue) -> String {
    match v {
        RespValue::Array(Some(a)) => {
            let mut parts = Vec::new();
            let mut skip = false;
            for x in a {
                if skip {
                    skip = false;
                    continue;
                }
                if bulk(x).is_some_and(|s| s == "idle" || s == "inactive") {
                    skip = true;
                    continue;
                }
                parts.push(without_idle(x));
            }
            format!("[{}]", parts.join(", "))
        }
        RespValue::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        RespValue::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// XPENDING's extended form without the idle times: id, consumer and
/// delivery count of each pending entry.
fn pending_entries(v: &RespValue) -> Vec<String> {
    match v {
        RespValue::Array(Some(a)) => a
            .iter()
            .map(|e| match e {
                RespValue::Array(Some(f)) => format!(
                    "{} {} {}",
                    bulk(&f[0]).unwrap(),
                    bulk(&f[1]).unwrap(),
                    int(&f[3])
                ),
                other => panic!("pending entry: {other:?}"),
            })
            .collect(),
        other => panic!("XPENDING: {other:?}"),
    }
}

#[test]
fn publish_reaches_the_subscribers_of_every_node_once() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    // On every node: SUBSCRIBE and PSUBSCRIBE in RESP2, SSUBSCRIBE and
    // SUBSCRIBE in RESP3 (push messages).
    let mut subs = Vec::new();
    for n in &c.nodes {
        let mut s = Raw::connect(n.port);
        assert!(show(&s.call(&["SUBSCRIBE", "news"])).contains("subscribe"));
        subs.push(("subscribe", s));
        let mut p = Raw::connect(n.port);
        assert!(show(&p.call(&["PSUBSCRIBE", "ne*"])).contains("psubscribe"));
        subs.push(("psubscribe", p));
        let mut s3 = Raw::resp3(n.port);
        assert!(show(&s3.call(&["SSUBSCRIBE", "shard"])).starts_with(">3 "));
        subs.push(("ssubscribe", s3));
        let mut r3 = Raw::resp3(n.port);
        assert!(show(&r3.call(&["SUBSCRIBE", "news"])).starts_with(">3 "));
        // Valkey 8.1 does not let a module block a subscribed client, so
        // there a RESP3 subscriber runs only commands answered at once.
        if n.port == leader.port && !common::is_valkey() {
            // A RESP3 subscriber may run other commands, replicated ones too.
            assert_eq!(show(&r3.call(&["GET", "nothing"])), "_ ");
        }
        subs.push(("subscribe3", r3));
    }
    let mut pubc = leader.conn();
    for i in 0..5 {
        let msg = format!("m{i}");
        // Counted on the leader: its three subscribers of "news".
        let r = pubc.call(&[b"PUBLISH", b"news", msg.as_bytes()]).unwrap();
        assert_eq!(int(&r), 3, "PUBLISH: {r:?}");
        let r = pubc.call(&[b"SPUBLISH", b"shard", msg.as_bytes()]).unwrap();
        assert_eq!(int(&r), 1, "SPUBLISH: {r:?}");
    }
    // Inside MULTI too: the block is one entry.
    assert!(ok(&pubc.call(&[b"MULTI"]).unwrap()));
    pubc.call(&[b"PUBLISH", b"news", b"m5"]).unwrap();
    pubc.call(&[b"SPUBLISH", b"shard", b"m5"]).unwrap();
    let exec = pubc.call(&[b"EXEC"]).unwrap();
    assert_eq!(
        exec,
        RespValue::Array(Some(vec![RespValue::Integer(3), RespValue::Integer(1)]))
    );
    // From a script (an entry: it runs on every node). A read-only script
    // may not publish, as in Redis.
    let script = |n: usize| {
        format!(
            "redis.call('SPUBLISH', 'shard', 'm{n}'); return redis.call('PUBLISH', 'news', 'm{n}')"
        )
    };
    let r = pubc.call(&[b"EVAL", script(6).as_bytes(), b"0"]).unwrap();
    assert_eq!(int(&r), 3, "EVAL: {r:?}");
    let r = pubc
        .call(&[b"EVAL_RO", script(7).as_bytes(), b"0"])
        .unwrap();
    let refused = "Write commands are not allowed from read-only scripts";
    assert!(
        err_text(&r).is_some_and(|e| e.contains(refused)),
        "EVAL_RO: {r:?}"
    );
    // A follower sends the publisher to the leader.
    let f = (l + 1) % 3;
    let r = c.nodes[f].cmd(&["PUBLISH", "news", "nope"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("MOVED")),
        "{r:?}"
    );
    // The last message, then: each subscriber got m0..m5 in order and then
    // "end", so none was lost, repeated or published from the follower.
    let r = pubc.call(&[b"PUBLISH", b"news", b"end"]).unwrap();
    assert_eq!(int(&r), 3);
    pubc.call(&[b"SPUBLISH", b"shard", b"end"]).unwrap();
    for (kind, s) in subs.iter_mut() {
        let mut got = Vec::new();
        loop {
            let m = show(&s.reply());
            let text = m.rsplit(' ').nth(1).unwrap_or_default().to_string();
            assert!(m.contains("message"), "{kind}: {m}");
            if text == "end" {
                break;
            }
            got.push(text);
        }
        let want: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "{kind}");
    }
    c.assert_same_dataset();
}

#[test]
fn with_follower_proxy_publish_is_forwarded_and_resp3_clients_are_moved() {
    let c = Cluster::new(3, &["--raft.follower-proxy", "yes"]);
    let l = c.wait_leader();
    let f = (l + 1) % 3;
    let mut sub = Raw::connect(c.nodes[(l + 2) % 3].port);
    assert!(show(&sub.call(&["SUBSCRIBE", "news"])).contains("subscribe"));
    // Forwarded to the leader, which has no subscriber of its own.
    let r = c.nodes[f].cmd(&["PUBLISH", "news", "via-follower"]);
    assert_eq!(r, RespValue::Integer(0));
    assert!(show(&sub.reply()).ends_with("$12 via-follower "));
    // The proxy relays RESP2 only: a RESP3 client goes to the leader.
    let mut r3 = Raw::resp3(c.nodes[f].port);
    let moved = show(&r3.call(&["GET", "k"]));
    assert!(moved.starts_with("-MOVED"), "{moved}");
    let mut r3 = Raw::resp3(c.nodes[l].port);
    assert_eq!(show(&r3.call(&["GET", "k"])), "_ ");
}

#[test]
fn a_restarted_node_does_not_publish_its_replayed_log_again() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let f = (l + 1) % 3;
    let mut pubc = c.nodes[l].conn();
    for m in ["m1", "m2", "m3"] {
        pubc.call(&[b"PUBLISH", b"news", m.as_bytes()]).unwrap();
    }
    // From a script too.
    let body = b"return redis.call('PUBLISH', 'news', 'm4')";
    let r = pubc.call(&[b"EVAL", body, b"0"]).unwrap();
    assert!(matches!(r, RespValue::Integer(_)), "EVAL: {r:?}");
    // The follower has applied them (and its log's commit index covers
    // them) before it is killed.
    assert!(ok(&pubc.call(&[b"SET", b"after", b"1"]).unwrap()));
    let target = c.nodes[l].info_field("last_applied_index");
    wait_for(30, "the follower applies the messages", || {
        (c.nodes[f]
            .info_field("last_applied_index")
            .parse::<u64>()
            .ok()?
            >= target.parse::<u64>().ok()?)
        .then_some(())
    });
    c.nodes[f].kill9();
    // Restarted with its entries held back, so that a subscriber is there
    // while it replays its log.
    c.nodes[f]
        .extra
        .extend(["--raft.log-disable-apply".to_string(), "yes".to_string()]);
    c.nodes[f].launch();
    let mut sub = Raw::connect(c.nodes[f].port);
    assert!(show(&sub.call(&["SUBSCRIBE", "news"])).contains("subscribe"));
    let r = c.nodes[f].cmd(&["CONFIG", "SET", "raft.log-disable-apply", "no"]);
    assert!(ok(&r), "{r:?}");
    let l = c.wait_leader();
    let r = c.nodes[l].cmd(&["PUBLISH", "news", "end"]);
    assert!(matches!(r, RespValue::Integer(_)), "{r:?}");
    // The first message the new subscriber gets is the new one.
    let m = show(&sub.reply());
    assert!(m.ends_with("$3 end "), "{m}");
    c.assert_same_dataset();
}

#[test]
fn streams_work_end_to_end_and_consumer_groups_survive_failover() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let mut w = c.nodes[l].conn();
    let mut cmd = |args: &[&str]| -> RespValue {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        w.call(&a).unwrap()
    };
    for i in 1..=6 {
        let id = format!("{i}-0");
        assert_eq!(
            bulk(&cmd(&["XADD", "s", &id, "n", &i.to_string()])),
            Some(id)
        );
    }
    // An automatic ID, from the entry's time.
    assert!(bulk(&cmd(&["XADD", "auto", "*", "n", "7"])).is_some());
    assert_eq!(int(&cmd(&["XLEN", "s"])), 6);
    assert_eq!(int(&cmd(&["XDEL", "s", "6-0"])), 1);
    let range = cmd(&["XRANGE", "s", "-", "+", "COUNT", "2"]);
    assert_eq!(without_idle(&range), "[[1-0, [n, 1]], [2-0, [n, 2]]]");
    let rev = cmd(&["XREVRANGE", "s", "5-0", "-", "COUNT", "1"]);
    assert_eq!(without_idle(&rev), "[[5-0, [n, 5]]]");
    // XREAD without BLOCK: a read.
    let read = cmd(&["XREAD", "COUNT", "2", "STREAMS", "s", "3-0"]);
    assert_eq!(without_idle(&read), "[[s, [[4-0, [n, 4]], [5-0, [n, 5]]]]]");
    // XREAD with BLOCK waits on the leader (blocking commands): nothing
    // new within 10 ms is a null array, as in Redis.
    assert!(matches!(
        cmd(&["XREAD", "BLOCK", "10", "STREAMS", "s", "$"]),
        RespValue::Array(None)
    ));
    // XREADGROUP with BLOCK is a blocking command (tests/blocking.rs): on
    // a group that does not exist yet, Redis's error at once.
    let r = cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "10",
        "STREAMS",
        "s",
        ">",
    ]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("NOGROUP")),
        "{r:?}"
    );
    assert!(ok(&cmd(&["XGROUP", "CREATE", "s", "g", "0"])));
    assert!(ok(&cmd(&[
        "XGROUP", "CREATE", "s", "other", "$", "MKSTREAM"
    ])));
    assert_eq!(
        int(&cmd(&["XGROUP", "CREATECONSUMER", "s", "g", "idle"])),
        1
    );
    assert_eq!(
        int(&cmd(&["XGROUP", "CREATECONSUMER", "s", "g", "gone"])),
        1
    );
    assert_eq!(int(&cmd(&["XGROUP", "DELCONSUMER", "s", "g", "gone"])), 0);
    // XREADGROUP: a write (the group's PEL changes on every node).
    let r = cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "COUNT",
        "2",
        "STREAMS",
        "s",
        ">",
    ]);
    assert_eq!(without_idle(&r), "[[s, [[1-0, [n, 1]], [2-0, [n, 2]]]]]");
    let r = cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "bob",
        "COUNT",
        "3",
        "STREAMS",
        "s",
        ">",
    ]);
    assert_eq!(
        without_idle(&r),
        "[[s, [[3-0, [n, 3]], [4-0, [n, 4]], [5-0, [n, 5]]]]]"
    );
    // Read again from the PEL (ID 0): delivery counts go up.
    let r = cmd(&["XREADGROUP", "GROUP", "g", "bob", "STREAMS", "s", "0"]);
    assert_eq!(strings(&r).len(), 1, "{r:?}");
    assert_eq!(int(&cmd(&["XACK", "s", "g", "1-0"])), 1);
    assert_eq!(int(&cmd(&["XACK", "s", "g", "3-0", "9-9"])), 1);
    assert_eq!(int(&cmd(&["XGROUP", "DELCONSUMER", "s", "g", "alice"])), 1);
    assert!(ok(&cmd(&["XGROUP", "CREATE", "s", "doomed", "0"])));
    assert_eq!(int(&cmd(&["XGROUP", "DESTROY", "s", "doomed"])), 1);
    assert!(ok(&cmd(&["XGROUP", "SETID", "s", "other", "2-0"])));
    assert_eq!(int(&cmd(&["XTRIM", "s", "MAXLEN", "4"])), 1);
    assert!(ok(&cmd(&["XSETID", "s", "99-0"])));
    // XCLAIM to bob again, its own entry: the delivery count goes up.
    let r = cmd(&["XCLAIM", "s", "g", "bob", "0", "4-0"]);
    assert_eq!(without_idle(&r), "[[4-0, [n, 4]]]");
    let stream = cmd(&["XINFO", "STREAM", "s"]);
    assert!(
        without_idle(&stream).contains("last-generated-id, 99-0"),
        "{stream:?}"
    );
    let state = |n: &Node| {
        let call = |a: &[&str]| n.cmd(a);
        (
            without_idle(&call(&["XINFO", "GROUPS", "s"])),
            without_idle(&call(&["XINFO", "CONSUMERS", "s", "g"])),
            without_idle(&call(&["XPENDING", "s", "g"])),
            pending_entries(&call(&["XPENDING", "s", "g", "-", "+", "10"])),
            without_idle(&call(&["XRANGE", "s", "-", "+"])),
        )
    };
    let before = state(&c.nodes[l]);
    // alice's pending entry went with her; bob's were delivered twice,
    // 4-0 three times (the XCLAIM).
    assert_eq!(before.3, vec!["4-0 bob 3", "5-0 bob 2"]);
    assert!(
        before.0.contains("[name, g, consumers, 2, pending, 2"),
        "{}",
        before.0
    );
    c.assert_same_dataset();
    // Every node holds the same groups; the new leader too.
    for n in &c.nodes {
        let local = |a: &[&str]| {
            let mut v = vec!["RAFT.DEBUG", "EXEC"];
            v.extend_from_slice(a);
            n.cmd(&v)
        };
        assert_eq!(
            without_idle(&local(&["XINFO", "GROUPS", "s"])),
            before.0,
            "node {}",
            n.port
        );
        assert_eq!(
            pending_entries(&local(&["XPENDING", "s", "g", "-", "+", "10"])),
            before.3
        );
    }

    c.nodes[l].kill9();
    let nl = wait_for(30, "a new leader", || c.leader().filter(|&i| i != l));
    let after = state(&c.nodes[nl]);
    assert_eq!(after, before);
    // The group goes on from where it was on the new leader.
    let mut w = c.nodes[nl].conn();
    let r = w.call(&[b"XADD", b"s", b"100-0", b"n", b"100"]).unwrap();
    assert_eq!(bulk(&r).as_deref(), Some("100-0"));
    let r = w
        .call(&[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"carol",
            b"STREAMS",
            b"s",
            b">",
        ])
        .unwrap();
    assert_eq!(without_idle(&r), "[[s, [[100-0, [n, 100]]]]]");
    assert_eq!(
        int(&w
            .call(&[b"XACK", b"s", b"g", b"4-0", b"5-0", b"100-0"])
            .unwrap()),
        3
    );
    c.assert_same_dataset();
}

/// The commands compared with a plain server, in order: writes, reads
/// served after a ReadIndex round, a MULTI block (applied as an entry,
/// with its sorted replies) and scripts.
const COMPARED: &[&[&str]] = &[
    &["HSET", "h", "a", "1", "b", "2"],
    &["HGETALL", "h"],
    &["HGETALL", "nohash"],
    &["SADD", "s", "1", "2", "3"],
    &["SMEMBERS", "s"],
    &["SINTER", "s", "s"],
    &["ZADD", "z", "1.5", "a", "2", "b", "3.25", "c"],
    &["ZSCORE", "z", "a"],
    &["ZINCRBY", "z", "0.5", "b"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &[
        "ZRANGEBYSCORE",
        "z",
        "-inf",
        "+inf",
        "WITHSCORES",
        "LIMIT",
        "0",
        "2",
    ],
    &["ZPOPMIN", "z"],
    &["GET", "nokey"],
    &["SET", "f", "10.5"],
    &["INCRBYFLOAT", "f", "0.1"],
    &["LPOP", "nolist"],
    &["XADD", "st", "1-1", "a", "1"],
    &["XADD", "st", "2-1", "b", "2"],
    &["XINFO", "STREAM", "st"],
    &["XREAD", "STREAMS", "st", "0"],
    &["XREAD", "STREAMS", "st", "9-9"],
    &["XGROUP", "CREATE", "st", "g", "0"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "st",
        ">",
    ],
    &["XINFO", "STREAM", "st"],
    &["XPENDING", "st", "g"],
    &["XAUTOCLAIM", "st", "g", "c2", "0", "0-0"],
    &["XCLAIM", "st", "g", "c", "0", "1-1", "2-1", "JUSTID"],
    &["XPENDING", "st", "g", "IDLE", "3600000", "-", "+", "10"],
    &["MULTI"],
    &["HGETALL", "h"],
    &["SMEMBERS", "s"],
    &["ZSCORE", "z", "c"],
    &["GET", "nokey"],
    &["INCRBYFLOAT", "f", "1"],
    &["HKEYS", "h"],
    &["EXEC"],
    &["EVAL", "return {1, 'a', {2, 3}, false}", "0"],
    &[
        "EVAL",
        "redis.setresp(3); return redis.call('HGETALL', KEYS[1])",
        "1",
        "h",
    ],
    &[
        "EVAL",
        "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'c')",
        "1",
        "z",
    ],
    &["EVAL", "return {double = 3.5}", "0"],
    &[
        "EVAL",
        "return {big_number = '123456789012345678901234567890'}",
        "0",
    ],
    &[
        "EVAL",
        "return {verbatim_string = {format = 'txt', string = 'hi'}}",
        "0",
    ],
    &[
        "EVAL_RO",
        "return redis.call('SMEMBERS', KEYS[1])",
        "1",
        "s",
    ],
    &["HELLO", "2"],
    &["HGETALL", "h"],
    &["ZSCORE", "z", "c"],
    &["GET", "nokey"],
];

#[test]
fn resp3_and_resp2_replies_are_byte_for_byte_redis_s_own() {
    compare_with_plain_redis(&[]);
}

/// Reads served locally by the leader (quorum-reads no), not after a
/// ReadIndex round, answer in the client's protocol too.
#[test]
fn resp3_replies_of_reads_the_leader_serves_at_once_are_redis_s_own() {
    compare_with_plain_redis(&["--raft.quorum-reads", "no"]);
}

fn compare_with_plain_redis(extra: &[&str]) {
    let plain = PlainRedis::start();
    let c = Cluster::new(3, extra);
    let l = c.wait_leader();
    for resp3 in [true, false] {
        let mut a = if resp3 {
            Raw::resp3(plain.port)
        } else {
            Raw::connect(plain.port)
        };
        let mut b = if resp3 {
            Raw::resp3(c.nodes[l].port)
        } else {
            Raw::connect(c.nodes[l].port)
        };
        // Each protocol from an empty dataset.
        assert_eq!(a.call(&["FLUSHALL"]), b.call(&["FLUSHALL"]));
        let mut differ = Vec::new();
        for args in COMPARED {
            if args[0] == "HELLO" {
                a.call(args);
                b.call(args);
                continue;
            }
            let (x, y) = (a.call(args), b.call(args));
            if x != y {
                differ.push(format!(
                    "{args:?}\n  redis: {}\n  raft:  {}",
                    show(&x),
                    show(&y)
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "RESP{} replies differ:\n{}",
            if resp3 { 3 } else { 2 },
            differ.join("\n")
        );
    }
    // A double and a map, as RESP3 writes them (not the RESP2 forms).
    let mut b = Raw::resp3(c.nodes[l].port);
    assert_eq!(show(&b.call(&["ZSCORE", "z", "c"])), ",3.25 ");
    assert!(show(&b.call(&["HGETALL", "h"])).starts_with("%2 "));
    c.assert_same_dataset();
}

/// The pending entries of every group and consumer in a raw
/// `XINFO STREAM key FULL` (RESP2) as each node stores them: ID, consumer,
/// delivery time and count.
fn stored_pending(v: &RespValue) -> Vec<String> {
    fn field<'a>(v: &'a RespValue, name: &str) -> &'a RespValue {
        let RespValue::Array(Some(a)) = v else {
            panic!("not a field list: {v:?}")
        };
        let at = a
            .chunks(2)
            .position(|kv| bulk(&kv[0]).as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {v:?}"));
        &a[2 * at + 1]
    }
    fn items(v: &RespValue) -> &[RespValue] {
        match v {
            RespValue::Array(Some(a)) => a,
            other => panic!("not an array: {other:?}"),
        }
    }
    let show = |e: &RespValue| {
        items(e)
            .iter()
            .map(|x| bulk(x).unwrap_or_else(|| int(x).to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = Vec::new();
    for g in items(field(v, "groups")) {
        let name = bulk(field(g, "name")).unwrap();
        for p in items(field(g, "pending")) {
            out.push(format!("{name}: {}", show(p)));
        }
        for c in items(field(g, "consumers")) {
            let cname = bulk(field(c, "name")).unwrap();
            for p in items(field(c, "pending")) {
                out.push(format!("{name}/{cname}: {}", show(p)));
            }
        }
    }
    out
}

/// A command line's words.
fn w(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

/// XCLAIM and XAUTOCLAIM against a 3-node cluster and a plain Redis, the
/// same commands at the same moments: the same replies (which entries are
/// idle long enough is decided by the entries' times), and the delivery
/// times stored the same on every node, although one follower applies
/// the entries seconds late (paused) and another replays its log after a
/// restart: Redis would have stamped each with its own clock.
#[test]
fn claims_decide_idle_times_from_the_log_the_same_on_every_node() {
    let mut c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let late = (l + 1) % 3;
    let plain = PlainRedis::start();
    let mut p = plain.connection();
    let port = c.nodes[l].port;
    let mut leader = Node::attach(port).conn();
    let mut both = |a: &[&str]| {
        let ours = leader
            .call(&a.iter().map(|x| x.as_bytes()).collect::<Vec<_>>())
            .unwrap();
        let theirs = common::call(&mut p, a);
        assert_eq!(ours, theirs, "{a:?}");
        ours
    };
    for i in 1..=6 {
        both(&["XADD", "s", &format!("{i}-0"), "n", &i.to_string()]);
    }
    both(&w("XGROUP CREATE s g 0"));
    c.nodes[late].signal("-STOP");
    let start = now_ms();
    both(&w("XREADGROUP GROUP g alice COUNT 4 STREAMS s >"));
    // Not idle for two seconds yet: nothing claimed, by either command.
    let r = both(&w("XCLAIM s g bob 2000 1-0 2-0 JUSTID"));
    assert_eq!(strings(&r), Vec::<String>::new());
    let r = both(&w("XAUTOCLAIM s g bob 2000 0-0 JUSTID"));
    assert_eq!(without_idle(&r), "[0-0, [], []]");
    std::thread::sleep(Duration::from_millis(2300));
    // Idle for over two seconds now: claimed; 1-0 given twice is claimed once
    // (the second time it has just been claimed).
    let r = both(&w("XCLAIM s g bob 2000 1-0 2-0 1-0"));
    assert_eq!(without_idle(&r), "[[1-0, [n, 1]], [2-0, [n, 2]]]");
    // 3-0 and 4-0 are idle, 1-0 and 2-0 were just claimed.
    let r = both(&w("XAUTOCLAIM s g carol 2000 0-0 COUNT 10"));
    assert_eq!(
        without_idle(&r),
        "[0-0, [[3-0, [n, 3]], [4-0, [n, 4]]], []]"
    );
    // IDLE sets the delivery time in the past: claimable again at once.
    let r = both(&w("XCLAIM s g dave 0 1-0 IDLE 5000 JUSTID"));
    assert_eq!(strings(&r), vec!["1-0"]);
    let r = both(&w("XAUTOCLAIM s g erin 4000 0-0 JUSTID"));
    assert_eq!(without_idle(&r), "[0-0, [1-0], []]");
    // FORCE puts an entry that was never delivered into the list; a
    // missing one is left out.
    let r = both(&w("XCLAIM s g erin 0 6-0 9-0 FORCE RETRYCOUNT 7 JUSTID"));
    assert_eq!(strings(&r), vec!["6-0"]);
    // A deleted entry leaves the pending list; the cursor goes on.
    both(&w("XDEL s 2-0"));
    let r = both(&w("XAUTOCLAIM s g erin 0 0-0 COUNT 1 JUSTID"));
    assert_eq!(without_idle(&r), "[2-0, [1-0], []]");
    let r = both(&w("XAUTOCLAIM s g erin 0 2-0 COUNT 1 JUSTID"));
    assert_eq!(without_idle(&r), "[3-0, [], [2-0]]");
    // In a script and in MULTI, the same.
    let script =
        "return redis.call('XAUTOCLAIM', KEYS[1], 'g', 'zed', 0, '0-0', 'COUNT', 1, 'JUSTID')";
    let r = both(&["EVAL", script, "1", "s"]);
    assert_eq!(without_idle(&r), "[3-0, [1-0], []]");
    both(&w("MULTI"));
    both(&w("XCLAIM s g erin 0 1-0 JUSTID"));
    both(&w("XPENDING s g IDLE 100000 - + 10"));
    let r = both(&w("EXEC"));
    assert_eq!(without_idle(&r), "[[1-0], []]");
    // Options as Redis reads them (a C string: up to a NUL).
    let r = both(&["XCLAIM", "s", "g", "erin", "0", "1-0", "JUSTID\0x"]);
    assert_eq!(strings(&r), vec!["1-0"]);
    // A key read twice with NOACK, new entries (none) and its history:
    // the history read's entries get the entry's time.
    both(&w("XREADGROUP GROUP g erin NOACK STREAMS s s > 0"));
    // History read again: its delivery count and time change too.
    both(&w("XREADGROUP GROUP g carol STREAMS s 0"));
    // Errors are Redis's own, and change nothing.
    for bad in [
        &["XCLAIM", "s", "g", "x", "abc", "1-0"][..],
        &["XCLAIM", "s", "g", "x", "0", "1-0", "BOGUS"],
        &["XCLAIM", "s", "nogroup", "x", "0", "1-0"],
        &["XCLAIM", "nokey", "g", "x", "0", "1-0"],
        &["XAUTOCLAIM", "s", "g", "x", "0", "0-0", "COUNT", "0"],
        &["XAUTOCLAIM", "s", "g", "x", "0", "bad"],
        &["XAUTOCLAIM", "s", "nogroup", "x", "0", "0-0"],
    ] {
        let r = both(bad);
        assert!(err_text(&r).is_some(), "{bad:?}: {r:?}");
    }
    // XPENDING: entries, consumers and counts as Redis's; idle times from
    // the log's times (dave's IDLE 5000 is long gone: erin's claims reset it).
    let r = both(&w("XPENDING s g IDLE 100000 - + 10"));
    assert_eq!(strings(&r), Vec::<String>::new());
    let ours = Node::attach(port).cmd(&["XPENDING", "s", "g", "-", "+", "10"]);
    assert_eq!(
        pending_entries(&ours),
        pending_entries(&common::call(
            &mut p,
            &["XPENDING", "s", "g", "-", "+", "10"]
        ))
    );
    let elapsed = now_ms() - start;
    let RespValue::Array(Some(list)) = &ours else {
        panic!("{ours:?}")
    };
    for e in list {
        let RespValue::Array(Some(f)) = e else {
            panic!()
        };
        let idle = int(&f[2]);
        assert!(
            (0..=elapsed).contains(&idle),
            "idle {idle} after {elapsed} ms: {ours:?}"
        );
    }
    // XINFO STREAM FULL through the leader: delivery times are real times.
    let full = Node::attach(port).cmd(&["XINFO", "STREAM", "s", "FULL"]);
    for line in stored_pending(&full) {
        let t: i64 = line.split(' ').rev().nth(1).unwrap().parse().unwrap();
        assert!((start - 5000..=now_ms()).contains(&t), "{line}");
    }
    c.nodes[late].signal("-CONT");
    c.assert_same_dataset();
    let raw =
        |n: &Node| stored_pending(&n.cmd(&["RAFT.DEBUG", "EXEC", "XINFO", "STREAM", "s", "FULL"]));
    let on_leader = raw(&c.nodes[l]);
    assert_eq!(on_leader.len(), 8, "{on_leader:?}");
    for n in &c.nodes {
        assert_eq!(
            raw(n),
            on_leader,
            "node {} (the late one is {})",
            n.port,
            c.nodes[late].port
        );
    }
    // A restarted follower replays its log: the same times again.
    let other = (l + 2) % 3;
    c.nodes[other].kill9();
    c.nodes[other].spawn();
    wait_for(30, "the restarted node", || c.nodes[other].try_conn().ok());
    c.assert_same_dataset();
    assert_eq!(raw(&c.nodes[other]), on_leader);
}

/// RAFT.DEBUG DIGEST, which tests and the Jepsen runner compare, covers
/// consumer groups and function libraries where DEBUG DIGEST does not: a
/// group or a library changed on one node alone (through RAFT.DEBUG EXEC,
/// not replicated) leaves DEBUG DIGEST equal and RAFT.DEBUG DIGEST
/// different; seen times (each node's clock) are not part of it.
#[test]
fn the_nodes_digest_covers_consumer_groups() {
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let leader = &c.nodes[l];
    for a in [
        &["XADD", "s", "1-0", "n", "1"][..],
        &["XADD", "s", "2-0", "n", "2"],
        &["XGROUP", "CREATE", "s", "g", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
    ] {
        let r = leader.cmd(a);
        assert!(err_text(&r).is_none(), "{a:?}: {r:?}");
    }
    let before = c.assert_same_dataset();
    let f = (l + 1) % 3;
    let local = |n: &Node, a: &[&str]| {
        let mut v = vec!["RAFT.DEBUG", "EXEC"];
        v.extend_from_slice(a);
        n.cmd(&v)
    };
    let plain_digest = |n: &Node| format!("{:?}", local(n, &["DEBUG", "DIGEST"]));
    // A consumer's seen time changes (XINFO CONSUMERS' idle): not state.
    std::thread::sleep(Duration::from_millis(20));
    local(
        &c.nodes[f],
        &["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "s", "9-0"],
    );
    assert_eq!(c.assert_same_dataset(), before);
    // The group's last ID moves on one node only.
    assert!(ok(&local(
        &c.nodes[f],
        &["XGROUP", "SETID", "s", "g", "2-0"]
    )));
    assert_eq!(plain_digest(&c.nodes[f]), plain_digest(leader));
    let ours = |n: &Node| bulk(&n.cmd(&["RAFT.DEBUG", "DIGEST"])).unwrap();
    assert_ne!(ours(&c.nodes[f]), ours(leader));
    assert_eq!(ours(leader), before);
    // A function library on one node only: the same.
    let other = (l + 2) % 3;
    let lib = "#!lua name=onlyhere\nredis.register_function('f', function() return 1 end)";
    let before = ours(&c.nodes[other]);
    assert!(bulk(&local(&c.nodes[other], &["FUNCTION", "LOAD", lib])).is_some());
    assert_eq!(plain_digest(&c.nodes[other]), plain_digest(leader));
    assert_ne!(ours(&c.nodes[other]), before);
}
