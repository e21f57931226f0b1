//! redis-py against a 3-node cluster: pipeline, transaction() with WATCH,
//! Script (EVALSHA), Lock, pub/sub across nodes, a stream consumer group
//! and a blocking pop (tests/redis_py_features.py). redis-py comes from
//! Debian's python3-redis (scripts/setup.sh), run by Debian's python3.

mod common;

use std::process::Command;

use common::*;

/// Debian's python3 with its python3-redis, or None (skipped with a note).
fn python_with_redis() -> Option<String> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import redis"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.to_string());
        }
    }
    None
}

#[test]
fn redis_py_features_work_against_the_cluster() {
    let Some(py) = python_with_redis() else {
        println!("SKIPPED: no python3 with redis-py (scripts/setup.sh installs python3-redis)");
        return;
    };
    let cluster = Cluster::new(3, &[]);
    let l = cluster.wait_leader();
    let follower = &cluster.nodes[(l + 1) % 3];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/redis_py_features.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(cluster.nodes[l].addr())
        .arg(follower.addr())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "redis-py features failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all redis-py features passed"), "{stdout}");
    cluster.assert_same_dataset();
}
