//! WATCH / UNWATCH: EXEC answers nil and runs nothing when a watched key
//! was modified between WATCH and EXEC (by any client, a flush or an
//! expiry), exactly as a plain redis-server does, and every node decides
//! alike (also one that installed a snapshot meanwhile).
//!
//! Run: `REDISRAFT_MODULE=$PWD/redisraft.so cargo test --release --test
//! watch -- --test-threads=2`.

mod common;

use std::time::Duration;

use common::*;
use redisraft::resp::{Connection, RespValue};

fn connect(addr: &str) -> Result<Connection, redisraft::resp::RespError> {
    Connection::connect(addr, Duration::from_secs(2), Duration::from_secs(30), None)
}

fn call(c: &mut Connection, args: &[&str]) -> RespValue {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.call(&a).expect("command")
}

fn nil_array(v: &RespValue) -> bool {
    matches!(v, RespValue::Array(None))
}

/// Steps of a scenario: which connection (0 or 1) sends which command.
type Step<'a> = (usize, &'a [&'a str]);

/// Scenarios run on a plain redis-server and on the cluster's leader, each
/// on two fresh connections; every reply must be the same.
const SCENARIOS: &[(&str, &[Step])] = &[
    (
        "untouched",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k", "other"]),
            (1, &["SET", "unrelated", "x"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "set by another client",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["SET", "k", "2"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
            (0, &["GET", "k"]),
        ],
    ),
    (
        "set to the same value",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["SET", "k", "1"]),
            (0, &["MULTI"]),
            (0, &["SET", "done", "yes"]),
            (0, &["EXEC"]),
            (0, &["EXISTS", "done"]),
        ],
    ),
    (
        "del",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["DEL", "k"]),
            (0, &["MULTI"]),
            (0, &["SET", "k", "mine"]),
            (0, &["EXEC"]),
            (0, &["EXISTS", "k"]),
        ],
    ),
    (
        "incr of a key that did not exist",
        &[
            (0, &["WATCH", "counter"]),
            (1, &["INCR", "counter"]),
            (0, &["MULTI"]),
            (0, &["INCR", "counter"]),
            (0, &["EXEC"]),
            (0, &["GET", "counter"]),
        ],
    ),
    (
        "del of a missing key changes nothing",
        &[
            (0, &["WATCH", "missing"]),
            (1, &["DEL", "missing"]),
            (0, &["MULTI"]),
            (0, &["SET", "done", "1"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "a transaction of another client",
        &[
            (0, &["RPUSH", "list", "a"]),
            (0, &["WATCH", "list"]),
            (1, &["MULTI"]),
            (1, &["RPUSH", "list", "b"]),
            (1, &["EXEC"]),
            (0, &["MULTI"]),
            (0, &["RPUSH", "list", "c"]),
            (0, &["EXEC"]),
            (0, &["LRANGE", "list", "0", "-1"]),
        ],
    ),
    (
        "flushall of a key that existed",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["FLUSHALL"]),
            (0, &["MULTI"]),
            (0, &["SET", "k", "2"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "flushall of a key that did not exist",
        &[
            (0, &["SET", "other", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["FLUSHDB"]),
            (0, &["MULTI"]),
            (0, &["SET", "k", "2"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "own write after watch",
        &[
            (0, &["WATCH", "k"]),
            (0, &["SET", "k", "1"]),
            (0, &["MULTI"]),
            (0, &["SET", "k", "2"]),
            (0, &["EXEC"]),
            (0, &["GET", "k"]),
        ],
    ),
    (
        "expire set by another client",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (1, &["EXPIRE", "k", "100"]),
            (0, &["MULTI"]),
            (0, &["SET", "k", "2"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "unwatch",
        &[
            (0, &["SET", "k", "1"]),
            (0, &["WATCH", "k"]),
            (0, &["UNWATCH"]),
            (1, &["SET", "k", "2"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "discard clears the watch",
        &[
            (0, &["WATCH", "k"]),
            (0, &["MULTI"]),
            (0, &["DISCARD"]),
            (1, &["SET", "k", "2"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "exec clears the watch, also an aborted one",
        &[
            (0, &["WATCH", "k"]),
            (1, &["SET", "k", "1"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
            (1, &["SET", "k", "5"]),
            (0, &["MULTI"]),
            (0, &["INCR", "k"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "watch inside multi",
        &[
            (0, &["MULTI"]),
            (0, &["WATCH", "k"]),
            (0, &["SET", "k", "1"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "unwatch inside multi",
        &[
            (0, &["WATCH", "k"]),
            (0, &["MULTI"]),
            (0, &["UNWATCH"]),
            (0, &["SET", "k", "1"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "an empty block",
        &[
            (0, &["WATCH", "k"]),
            (0, &["MULTI"]),
            (0, &["EXEC"]),
            (0, &["WATCH", "k"]),
            (1, &["SET", "k", "x"]),
            (0, &["MULTI"]),
            (0, &["EXEC"]),
        ],
    ),
    (
        "queueing errors win over a modified key",
        &[
            (0, &["WATCH", "k"]),
            (1, &["SET", "k", "x"]),
            (0, &["MULTI"]),
            (0, &["SET", "k"]),
            (0, &["EXEC"]),
            (0, &["WATCH"]),
        ],
    ),
    (
        "several watches, the later one after the write",
        &[
            (0, &["WATCH", "a"]),
            (1, &["SET", "b", "1"]),
            (0, &["WATCH", "b"]),
            (0, &["MULTI"]),
            (0, &["SET", "c", "1"]),
            (0, &["EXEC"]),
        ],
    ),
];

fn run_scenario(conns: &mut [Connection; 2], steps: &[Step]) -> Vec<RespValue> {
    steps
        .iter()
        .map(|(who, args)| call(&mut conns[*who], args))
        .collect()
}

#[test]
fn exec_after_watch_answers_as_plain_redis() {
    let plain = PlainRedis::start();
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let leader = &cluster.nodes[l];
    let mut aborted = 0;
    for (name, steps) in SCENARIOS {
        let mut p = [plain.conn(None).unwrap(), plain.conn(None).unwrap()];
        let mut r = [leader.conn(), leader.conn()];
        call(&mut p[0], &["FLUSHALL"]);
        call(&mut r[0], &["FLUSHALL"]);
        let want = run_scenario(&mut p, steps);
        let got = run_scenario(&mut r, steps);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                g, w,
                "scenario '{name}', step {i} {:?}: cluster answered {g:?}, plain Redis {w:?}",
                steps[i]
            );
        }
        aborted += got.iter().filter(|v| nil_array(v)).count();
    }
    // The scenarios above abort some blocks: not a vacuous comparison.
    assert!(aborted >= 8, "only {aborted} EXEC answered nil");
    cluster.assert_same_dataset();
}

/// WATCHes `key` (with a TTL of `px` ms set just before) on `c`; false if
/// the key was already gone when WATCH ran (a slow machine): try again.
fn watch_live_key(c: &mut Connection, key: &str, px: &str) -> bool {
    assert!(ok(&call(c, &["SET", key, "v", "PX", px])));
    assert!(ok(&call(c, &["WATCH", key])));
    // Answered after the WATCH: positive means alive when it ran.
    matches!(call(c, &["PTTL", key]), RespValue::Integer(t) if t > 0)
}

/// A watched key whose time comes before EXEC: EXEC answers nil, whether
/// the key is still there (deleted by nothing yet) or already deleted by
/// the expiry cycle, on plain Redis and on the cluster.
#[test]
fn a_watched_key_that_expires_before_exec_aborts_it() {
    let plain = PlainRedis::start();
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let targets: Vec<Connection> = vec![plain.conn(None).unwrap(), cluster.nodes[l].conn()];
    for (t, mut c) in targets.into_iter().enumerate() {
        for attempt in 0.. {
            let key = format!("short:{attempt}");
            if !watch_live_key(&mut c, &key, "300") {
                assert!(ok(&call(&mut c, &["UNWATCH"])));
                continue;
            }
            wait_for(10, "the key's time to pass", || {
                (call(&mut c, &["PTTL", &key]) == RespValue::Integer(-2)).then_some(())
            });
            assert!(ok(&call(&mut c, &["MULTI"])));
            call(&mut c, &["SET", "ran", &key]);
            let r = call(&mut c, &["EXEC"]);
            assert!(nil_array(&r), "target {t}: EXEC answered {r:?}");
            assert_eq!(call(&mut c, &["EXISTS", "ran"]), RespValue::Integer(0));
            break;
        }
        // A key with a TTL that does not come before EXEC: it runs.
        assert!(ok(&call(&mut c, &["SET", "long", "v", "PX", "100000"])));
        assert!(ok(&call(&mut c, &["WATCH", "long"])));
        assert!(ok(&call(&mut c, &["MULTI"])));
        call(&mut c, &["SET", "ran", "long"]);
        let r = call(&mut c, &["EXEC"]);
        assert!(
            matches!(&r, RespValue::Array(Some(v)) if v.len() == 1),
            "{r:?}"
        );
    }
    cluster.assert_same_dataset();
}

/// Several clients increment one counter with WATCH / GET / MULTI / SET /
/// EXEC, retrying when EXEC answers nil: no update is lost.
#[test]
fn concurrent_increments_with_watch_lose_no_update() {
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let addr = cluster.nodes[l].addr();
    const CLIENTS: usize = 4;
    const EACH: usize = 25;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = connect(&addr).unwrap();
                let mut retries = 0;
                for _ in 0..EACH {
                    loop {
                        assert!(ok(&call(&mut c, &["WATCH", "counter"])));
                        let v: i64 = bulk(&call(&mut c, &["GET", "counter"]))
                            .map_or(0, |s| s.parse().unwrap());
                        assert!(ok(&call(&mut c, &["MULTI"])));
                        let next = (v + 1).to_string();
                        call(&mut c, &["SET", "counter", &next]);
                        match call(&mut c, &["EXEC"]) {
                            RespValue::Array(Some(_)) => break,
                            RespValue::Array(None) => retries += 1,
                            other => panic!("EXEC: {other:?}"),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    let retries: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let got = bulk(&cluster.nodes[l].cmd(&["GET", "counter"]));
    assert_eq!(
        got.as_deref(),
        Some((CLIENTS * EACH).to_string().as_str()),
        "after {retries} retries"
    );
    cluster.assert_same_dataset();
}

#[test]
fn watch_on_a_follower_is_redirected_and_a_disconnect_drops_it() {
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let follower = &cluster.nodes[(l + 1) % 3];
    let r = follower.cmd(&["WATCH", "k"]);
    assert!(
        err_text(&r).is_some_and(|e| e.starts_with("MOVED")),
        "{r:?}"
    );
    // WATCH on the leader, then the connection goes: nothing is left.
    let leader = &cluster.nodes[l];
    {
        let mut c = leader.conn();
        assert!(ok(&call(&mut c, &["WATCH", "a", "b"])));
        assert_eq!(leader.info_field("watching_clients"), "1");
    }
    wait_for(10, "the watch of a closed connection dropped", || {
        (leader.info_field("watching_clients") == "0").then_some(())
    });
}

/// W is an index of the log: a block watched before its node lost and
/// regained leadership still decides from the entries in between.
#[test]
fn a_leader_change_between_watch_and_exec_still_decides_right() {
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let leader = &cluster.nodes[l];
    let mut touched = leader.conn();
    let mut untouched = leader.conn();
    assert!(ok(&call(&mut touched, &["WATCH", "a"])));
    assert!(ok(&call(&mut untouched, &["WATCH", "b"])));
    // Leadership goes to another node, which modifies a, and comes back.
    let other = (l + 1) % 3;
    let other_id = cluster.nodes[other].info_field("node_id");
    assert!(ok(&leader.cmd(&["RAFT.TRANSFER_LEADER", &other_id])));
    wait_for(20, "transfer", || {
        (cluster.leader() == Some(other)).then_some(())
    });
    assert!(ok(&cluster.nodes[other].cmd(&["SET", "a", "changed"])));
    let my_id = leader.info_field("node_id");
    assert!(ok(
        &cluster.nodes[other].cmd(&["RAFT.TRANSFER_LEADER", &my_id])
    ));
    wait_for(20, "transfer back", || {
        (cluster.leader() == Some(l)).then_some(())
    });
    for c in [&mut touched, &mut untouched] {
        assert!(ok(&call(c, &["MULTI"])));
        call(c, &["INCR", "ran"]);
    }
    assert!(nil_array(&call(&mut touched, &["EXEC"])));
    let r = call(&mut untouched, &["EXEC"]);
    assert_eq!(r, RespValue::Array(Some(vec![RespValue::Integer(1)])));
    cluster.assert_same_dataset();
}

/// A node that joins through a snapshot taken between WATCH and EXEC gets
/// the history of modifications with it, and decides as the others.
#[test]
fn a_node_that_installed_a_snapshot_decides_alike() {
    let mut cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let leader_addr = cluster.nodes[l].addr();
    let mut aborts = Vec::new();
    let mut runs = Vec::new();
    for i in 0..5 {
        let key = format!("k{i}");
        let mut c = connect(&leader_addr).unwrap();
        assert!(ok(&call(&mut c, &["SET", &key, "0"])));
        assert!(ok(&call(&mut c, &["WATCH", &key])));
        aborts.push(c);
        let mut c = connect(&leader_addr).unwrap();
        assert!(ok(&call(&mut c, &["WATCH", &format!("quiet{i}")])));
        runs.push(c);
    }
    // Modified before the snapshot: only the history in it tells.
    for i in 0..5 {
        assert!(ok(&cluster.nodes[l].cmd(&["SET", &format!("k{i}"), "1"])));
    }
    for n in &cluster.nodes {
        let r = n.cmd(&["RAFT.DEBUG", "COMPACT"]);
        assert!(ok(&r), "COMPACT: {r:?}");
    }
    let n4 = Node::start(&[]);
    let r = n4.cmd(&["RAFT.CLUSTER", "JOIN", &leader_addr]);
    assert!(ok(&r), "JOIN: {r:?}; log:\n{}", n4.log());
    cluster.nodes.push(n4);
    wait_for(30, "the new node installed the snapshot", || {
        (cluster.nodes[3].info_field("snapshots_received") != "0").then_some(())
    });
    for (i, c) in aborts.iter_mut().chain(runs.iter_mut()).enumerate() {
        assert!(ok(&call(c, &["MULTI"])));
        call(c, &["SET", &format!("ran{i}"), "yes"]);
        call(c, &["INCR", "runs"]);
    }
    for c in &mut aborts {
        let r = call(c, &["EXEC"]);
        assert!(nil_array(&r), "{r:?}");
    }
    for c in &mut runs {
        let r = call(c, &["EXEC"]);
        assert!(
            matches!(&r, RespValue::Array(Some(v)) if v.len() == 2),
            "{r:?}"
        );
    }
    let before = cluster.assert_same_dataset();
    assert_eq!(
        bulk(&cluster.nodes[l].cmd(&["GET", "runs"])).as_deref(),
        Some("5")
    );
    // And after restarts (snapshot + log replay), the same again.
    for n in cluster.nodes.iter_mut() {
        n.kill9();
    }
    for n in cluster.nodes.iter_mut() {
        n.launch();
    }
    cluster.wait_leader();
    assert_eq!(cluster.assert_same_dataset(), before);
}

/// RESET ends the client's MULTI and its WATCHes, which the module keeps
/// itself: on servers whose command filter says which client sent it
/// (Redis 7.2+, Valkey). Redis 7.0's does not (README, MULTI/EXEC).
#[test]
fn reset_ends_the_clients_transaction_and_watches() {
    if !is_valkey() {
        eprintln!("skipped: Redis 7.0's command filter does not say which client sent RESET");
        return;
    }
    let c = Cluster::new(3, &[]);
    let l = c.wait_leader();
    let mut w = c.nodes[l].conn();
    let mut call = |a: &[&str]| {
        let a: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
        w.call(&a).unwrap()
    };
    assert!(ok(&call(&["MULTI"])));
    assert!(matches!(call(&["SET", "a", "1"]), RespValue::Simple(s) if s == "QUEUED"));
    assert!(matches!(call(&["RESET"]), RespValue::Simple(s) if s == "RESET"));
    // Not queued any more: it runs.
    assert!(ok(&call(&["SET", "a", "2"])));
    assert_eq!(bulk(&call(&["GET", "a"])).as_deref(), Some("2"));
    let r = call(&["EXEC"]);
    assert!(
        err_text(&r).is_some_and(|e| e.contains("without MULTI")),
        "{r:?}"
    );
    // A WATCH before RESET no longer holds.
    assert!(ok(&call(&["WATCH", "a"])));
    assert!(matches!(call(&["RESET"]), RespValue::Simple(s) if s == "RESET"));
    assert!(ok(&c.nodes[l].cmd(&["SET", "a", "3"])));
    assert!(ok(&call(&["MULTI"])));
    call(&["SET", "b", "1"]);
    let r = call(&["EXEC"]);
    assert!(
        matches!(&r, RespValue::Array(Some(v)) if v.len() == 1),
        "{r:?}"
    );
    c.assert_same_dataset();
}
