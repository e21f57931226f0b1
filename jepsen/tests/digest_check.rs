//! Every run ends with the comparison of the nodes' datasets (`DEBUG
//! DIGEST` at one applied index), and a difference fails the run: a short
//! counter run without faults, with the `--test-diverge n2` knob (a key SET
//! on n2 alone through `RAFT.DEBUG EXEC` just before the comparison), must
//! exit 1 with a `nodes-differ` anomaly, `digests: differ at index ...` in
//! summary.txt and `DIFFER@<index>` in result.tsv. The same run without the
//! knob is the control: exit 0, `digests: equal (3 nodes at index ...)`.
//!
//! Needs `REDISRAFT_MODULE` (path to the module .so); skipped with a note
//! without it. `JEPSEN_TEST_ENV=local-loopback` forces the fallback env.

use std::path::PathBuf;
use std::process::Command;

use redisraft_jepsen::netns::NetnsEnv;

fn run(out: &PathBuf, env: &str, diverge: bool) -> (i32, String, String) {
    std::fs::create_dir_all(out).expect("out dir");
    let log = std::fs::File::create(out.join("runner.log")).expect("runner.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redisraft-jepsen"));
    cmd.args(["run", "--workload", "counter", "--nemesis", "none"])
        .args(["--nodes", "3", "--time-limit", "3", "--env", env])
        .arg("--out")
        .arg(out);
    if diverge {
        cmd.args(["--test-diverge", "n2"]);
    }
    let status = cmd
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .expect("run redisraft-jepsen");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    let summary = read("summary.txt");
    let summary = if summary.is_empty() {
        read("runner.log")
    } else {
        summary
    };
    (status.code().unwrap_or(-1), summary, read("result.tsv"))
}

/// The `digests` column of result.tsv.
fn digest_cell(tsv: &str) -> String {
    let header: Vec<&str> = tsv.lines().next().unwrap_or("").split('\t').collect();
    let col = header.iter().position(|h| *h == "digests");
    let line: Vec<&str> = tsv.lines().last().unwrap_or("").split('\t').collect();
    col.and_then(|c| line.get(c))
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[test]
fn a_node_with_different_data_fails_the_run() {
    let Ok(module) = std::env::var("REDISRAFT_MODULE") else {
        println!(
            "note: a_node_with_different_data_fails_the_run skipped: \
             set REDISRAFT_MODULE to the module .so to run it"
        );
        return;
    };
    assert!(
        PathBuf::from(&module).is_file(),
        "REDISRAFT_MODULE={module}"
    );
    let forced = std::env::var("JEPSEN_TEST_ENV").ok();
    let env = match NetnsEnv::available() {
        Ok(()) if forced.as_deref() != Some("local-loopback") => "local",
        _ => "local-loopback",
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("digest-check")
        .join(format!("{stamp}-{}", std::process::id()));

    let out = base.join("diverged");
    let (code, summary, tsv) = run(&out, env, true);
    println!("diverged run: exit {code}, out {}", out.display());
    assert_eq!(code, 1, "a differing digest must fail the run\n{summary}");
    assert!(summary.contains("nodes-differ"), "{summary}");
    assert!(summary.contains("\ndigests: differ at index "), "{summary}");
    assert!(digest_cell(&tsv).starts_with("DIFFER@"), "{tsv}");

    let out = base.join("control");
    let (code, summary, tsv) = run(&out, env, false);
    println!("control run: exit {code}, out {}", out.display());
    assert_eq!(
        code, 0,
        "the same run without the knob must pass\n{summary}"
    );
    assert!(
        summary.contains("\ndigests: equal (3 nodes at index "),
        "{summary}"
    );
    assert!(digest_cell(&tsv).starts_with("equal@"), "{tsv}");
}
