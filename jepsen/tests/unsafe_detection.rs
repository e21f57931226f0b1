//! The suite detects an unsafe setting: with the module's hidden
//! `raft.unsafe-local-reads yes` every node, a follower cut off from the
//! leader too, serves reads from its own dataset, so a register run under
//! partitions must end with exit status 1 and a `nonlinearizable` anomaly in
//! its report; the same run without the knob must pass (exit 0, VALID).
//!
//! The two runs (30 s each) go side by side. With partitions, a follower cut
//! off for seconds answers every read from its old data (about 20 keys of a
//! run are found nonlinearizable). Where network namespaces are not usable
//! (not root, no `ip netns`), both run on `local-loopback` with the
//! `kill,pause` nemesis and 20 processes at 500 ops/s instead: a follower
//! serves reads before it applied what the leader already acknowledged, a
//! restarted node before it caught up, a paused old leader after it resumes
//! (8 to 15 keys per run when this was written; 1 to 10 at the default 200
//! ops/s).
//!
//! Needs `REDISRAFT_MODULE` (path to the module .so, the test build with
//! the `failpoints` feature: only it accepts the knob); skipped with a note
//! without it. `JEPSEN_TEST_OUT` sets where the runs write (default: a
//! directory under Cargo's target tmp dir), `JEPSEN_TEST_SEED` the seed,
//! `JEPSEN_TEST_ENV=local-loopback` forces the fallback and
//! `JEPSEN_TEST_NEMESIS` replaces the nemesis, `JEPSEN_TEST_ARGS` adds run
//! options (split at spaces).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redisraft_jepsen::netns::NetnsEnv;

const TIME_LIMIT_S: u64 = 30;
/// A run that takes longer than this is stopped (SIGTERM, then SIGKILL).
const RUN_DEADLINE: Duration = Duration::from_secs(150);

struct Run {
    label: &'static str,
    out: PathBuf,
    child: Child,
}

fn start(
    label: &'static str,
    out: &Path,
    env: &str,
    nemesis: &str,
    seed: u64,
    unsafe_reads: bool,
) -> Run {
    std::fs::create_dir_all(out).expect("out dir");
    let log = std::fs::File::create(out.join("runner.log")).expect("runner.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redisraft-jepsen"));
    cmd.args(["run", "--workload", "register", "--nodes", "5"])
        .args(["--nemesis", nemesis, "--env", env])
        .args(["--time-limit", &TIME_LIMIT_S.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg("--out")
        .arg(out);
    if env == "local-loopback" {
        // More reads on followers right after acknowledged writes.
        cmd.args(["--rate", "500", "--concurrency", "20"]);
    }
    if let Ok(extra) = std::env::var("JEPSEN_TEST_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    if unsafe_reads {
        cmd.args(["--config", "raft.unsafe-local-reads yes"]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start redisraft-jepsen");
    Run {
        label,
        out: out.to_path_buf(),
        child,
    }
}

/// Waits for the run (stopping it past the deadline): its exit status and
/// its summary.txt (or the runner's output when there is none).
fn finish(mut r: Run, started: Instant) -> (i32, String) {
    let mut termed = false;
    let status = loop {
        if let Some(st) = r.child.try_wait().expect("wait") {
            break st;
        }
        let late = started.elapsed();
        if late > RUN_DEADLINE && !termed {
            eprintln!("{}: past {RUN_DEADLINE:?}: SIGTERM", r.label);
            let _ = Command::new("kill")
                .args(["-TERM", &r.child.id().to_string()])
                .status();
            termed = true;
        } else if late > RUN_DEADLINE + Duration::from_secs(60) {
            let _ = r.child.kill();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let summary = std::fs::read_to_string(r.out.join("summary.txt"))
        .or_else(|_| std::fs::read_to_string(r.out.join("runner.log")))
        .unwrap_or_default();
    (status.code().unwrap_or(-1), summary)
}

/// The Anomalies section of a summary (or the text's end).
fn anomalies(summary: &str) -> &str {
    match summary.find("Anomalies\n") {
        Some(i) => &summary[i..summary.len().min(i + 3000)],
        None => &summary[summary.len().saturating_sub(3000)..],
    }
}

#[test]
fn unsafe_local_reads_are_detected_and_the_default_passes() {
    let Ok(module) = std::env::var("REDISRAFT_MODULE") else {
        println!(
            "note: unsafe_local_reads_are_detected_and_the_default_passes skipped: \
             set REDISRAFT_MODULE to the module .so to run it"
        );
        return;
    };
    assert!(
        Path::new(&module).is_file(),
        "REDISRAFT_MODULE={module}: no such file"
    );
    let forced = std::env::var("JEPSEN_TEST_ENV").ok();
    let (env, nemesis) = match NetnsEnv::available() {
        Ok(()) if forced.as_deref() != Some("local-loopback") => ("local", "partition"),
        Ok(()) => ("local-loopback", "kill,pause"),
        Err(e) => {
            println!(
                "note: no network namespaces ({e}): local-loopback with the kill,pause nemesis"
            );
            ("local-loopback", "kill,pause")
        }
    };
    let nemesis = std::env::var("JEPSEN_TEST_NEMESIS").unwrap_or_else(|_| nemesis.to_string());
    let nemesis = nemesis.as_str();
    let seed: u64 = std::env::var("JEPSEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_611);
    let base = match std::env::var("JEPSEN_TEST_OUT") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("unsafe-detection")
                .join(format!("{stamp}-{}", std::process::id()))
        }
    };
    println!(
        "env {env}, nemesis {nemesis}, seed {seed}, module {module}, out {}",
        base.display()
    );
    let t0 = Instant::now();
    let unsafe_run = start("unsafe", &base.join("unsafe"), env, nemesis, seed, true);
    let safe_run = start("safe", &base.join("safe"), env, nemesis, seed, false);
    let (unsafe_out, safe_out) = (unsafe_run.out.clone(), safe_run.out.clone());
    let (unsafe_code, unsafe_summary) = finish(unsafe_run, t0);
    let (safe_code, safe_summary) = finish(safe_run, t0);
    println!("both runs done in {:.0} s", t0.elapsed().as_secs_f64());

    assert!(
        unsafe_code == 1
            && unsafe_summary.contains("Verdict: INVALID")
            && unsafe_summary.contains("nonlinearizable"),
        "with raft.unsafe-local-reads yes the run must find a nonlinearizable history \
         (exit 1), got exit {unsafe_code}; out {}\n{}",
        unsafe_out.display(),
        anomalies(&unsafe_summary)
    );
    println!(
        "unsafe run: exit 1, {}",
        unsafe_summary
            .lines()
            .find(|l| l.starts_with("checker looked at"))
            .unwrap_or("")
    );
    assert!(
        safe_code == 0 && safe_summary.contains("Verdict: VALID"),
        "without the knob the same run must pass, got exit {safe_code}; out {}\n{}",
        safe_out.display(),
        anomalies(&safe_summary)
    );
    println!(
        "safe run: exit 0, {}",
        safe_summary
            .lines()
            .find(|l| l.starts_with("checker looked at"))
            .unwrap_or("")
    );
}
