//! The ttl checker catches a real unsafe setting, not only hand-made
//! histories: with the module's hidden `raft.unsafe-local-reads yes` every
//! node serves reads from its own data, so under partitions a cut-off
//! follower answers with versions the leader has replaced or that expired,
//! and the run must exit 1 with ttl anomalies (when written: 197 in a 30 s
//! run, `ttl-stale-version`, `ttl-resurrection` and `ttl-lost-key`).
//!
//! Ignored by default (it adds a 30 s run; the smoke stays short):
//! `REDISRAFT_MODULE=$PWD/target/failpoints/release/libredisraft.so cargo test --release -p
//! redisraft-jepsen --test ttl_detection -- --ignored --nocapture`. Needs
//! network namespaces (root, `ip netns`); skipped with a note without them
//! or without `REDISRAFT_MODULE`.

use std::path::PathBuf;
use std::process::Command;

use redisraft_jepsen::netns::NetnsEnv;

#[test]
#[ignore = "a 30 s cluster run; run with --ignored"]
fn unsafe_local_reads_break_the_ttl_checker() {
    let Ok(module) = std::env::var("REDISRAFT_MODULE") else {
        println!("note: skipped: set REDISRAFT_MODULE to the module .so");
        return;
    };
    if let Err(e) = NetnsEnv::available() {
        println!("note: skipped: no network namespaces ({e})");
        return;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("ttl-detection")
        .join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("out dir");
    let log = std::fs::File::create(out.join("runner.log")).expect("runner.log");
    let status = Command::new(env!("CARGO_BIN_EXE_redisraft-jepsen"))
        .args(["run", "--workload", "ttl", "--nemesis", "partition"])
        .args(["--nodes", "5", "--time-limit", "30", "--env", "local"])
        .args(["--seed", "5", "--module", &module])
        .args(["--config", "raft.unsafe-local-reads yes"])
        .arg("--out")
        .arg(&out)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .expect("run redisraft-jepsen");
    let summary = std::fs::read_to_string(out.join("summary.txt"))
        .or_else(|_| std::fs::read_to_string(out.join("runner.log")))
        .unwrap_or_default();
    let tsv = std::fs::read_to_string(out.join("result.tsv")).unwrap_or_default();
    println!(
        "out {}\n{}",
        out.display(),
        tsv.lines().last().unwrap_or("")
    );
    assert_eq!(status.code(), Some(1), "{summary}");
    assert!(summary.contains("Verdict: INVALID"), "{summary}");
    assert!(
        [
            "ttl-stale-version",
            "ttl-resurrection",
            "ttl-lost-key",
            "ttl-expired-read"
        ]
        .iter()
        .any(|k| summary.contains(k)),
        "{summary}"
    );
}
