//! Crash points for fault injection (the Jepsen suite's `crash` nemesis).
//! Compiled in only with the `failpoints` cargo feature; otherwise every
//! point is a no-op and RAFT.DEBUG FAILPOINT says it is not available.
//!
//! Points, in the order a write goes through them:
//! - `log-writer-staged`: the log writer holds a staged group (in memory,
//!   the node already treats it as written) and has written none of it;
//! - `log-before-fsync`, `log-after-fsync`: a synced log write;
//! - `apply-middle`: between two applied entries;
//! - `membership-apply`: a committed membership change applied in memory
//!   (raft-rs and the peers know it), its log record not yet written;
//! - `snapshot-write`: a taken snapshot, written but not yet in place;
//! - `snapshot-before-dir-fsync`: a snapshot (taken or received) renamed
//!   into place, the directory not yet fsynced;
//! - `snapshot-after-rename`: a taken snapshot in place, the log not yet
//!   compacted to it;
//! - `snapshot-receive-chunk`: a follower wrote a RAFT.LOADSNAPSHOT chunk
//!   past the first (it dies with the transfer under way; a snapshot of one
//!   chunk never gets there);
//! - `snapshot-received`: a received snapshot complete and kept, durable,
//!   not yet installed;
//! - `install-before-log-reset`: a received snapshot in place as this
//!   node's snapshot, the log not yet reset to it;
//! - `startup-between-compact-and-commit`: start-up reconciliation with a
//!   snapshot newer than the log: where the log compaction and the commit
//!   index were once two writes.
//!
//! Besides RAFT.DEBUG FAILPOINT, points can be armed before the module loads
//! with the environment variable `REDISRAFT_FAILPOINTS` (a comma list), for
//! points on the start-up path.

/// Armed points and whether they panic instead of killing the process (a
/// handful at most: a linear search is fine).
#[cfg(feature = "failpoints")]
static ARMED: parking_lot::Mutex<Vec<(&'static str, bool)>> = parking_lot::Mutex::new(Vec::new());

/// The names RAFT.DEBUG FAILPOINT accepts.
pub const POINTS: &[&str] = &[
    "log-writer-staged",
    "log-before-fsync",
    "log-after-fsync",
    "apply-middle",
    "membership-apply",
    "snapshot-write",
    "snapshot-before-dir-fsync",
    "snapshot-after-rename",
    "snapshot-receive-chunk",
    "snapshot-received",
    "install-before-log-reset",
    "startup-between-compact-and-commit",
];

/// Arms the points listed in `REDISRAFT_FAILPOINTS` (at module load).
pub fn arm_from_env() {
    let Ok(list) = std::env::var("REDISRAFT_FAILPOINTS") else {
        return;
    };
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match configure(name, "crash") {
            Ok(()) => {
                crate::logging::warning(&format!("failpoint {name} armed (REDISRAFT_FAILPOINTS)"))
            }
            Err(e) => crate::logging::warning(&format!("REDISRAFT_FAILPOINTS: {e}")),
        }
    }
}

/// Kills the process at once when the point is armed with `crash`; panics
/// (once: the point disarms) when armed with `panic`, which tests that a
/// panic fail-stops the node instead of aborting redis-server.
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    let armed = ARMED
        .lock()
        .iter()
        .find(|(p, _)| *p == name)
        .map(|(_, panic)| *panic);
    #[cfg(feature = "failpoints")]
    if armed == Some(true) {
        ARMED.lock().retain(|(p, _)| *p != name);
        panic!("failpoint {name}: panicking now");
    }
    #[cfg(feature = "failpoints")]
    if armed == Some(false) {
        crate::logging::warning(&format!("failpoint {name}: crashing now"));
        // SIGKILL, like kill -9 at exactly this point (abort would run
        // Redis's slow crash report first, holding the port and files).
        extern "C" {
            fn kill(pid: i32, sig: i32) -> i32;
        }
        // SAFETY: a plain syscall on our own pid.
        unsafe { kill(std::process::id() as i32, 9) };
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Arms (`crash`) or disarms (`off`) a point.
pub fn configure(name: &str, action: &str) -> Result<(), String> {
    if !POINTS.contains(&name) {
        return Err(format!(
            "unknown failpoint '{name}'; known: {}",
            POINTS.join(", ")
        ));
    }
    #[cfg(feature = "failpoints")]
    {
        let name = POINTS
            .iter()
            .copied()
            .find(|p| *p == name)
            .unwrap_or_default();
        let mut armed = ARMED.lock();
        armed.retain(|(p, _)| *p != name);
        match action {
            "crash" => armed.push((name, false)),
            "panic" => armed.push((name, true)),
            "off" => {}
            _ => return Err(format!("unknown action '{action}': crash, panic or off")),
        }
        Ok(())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = action;
        Err("failpoints are not compiled in (build with --features failpoints)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::POINTS;

    /// Every point is hit somewhere, named in the README, and crashed by
    /// `make crash-campaign` (scripts/crash-campaign.py lists them all).
    #[test]
    fn every_point_is_hit_documented_and_in_the_crash_campaign() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = String::new();
        let mut dirs = vec![root.join("src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    sources.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let campaign = std::fs::read_to_string(root.join("scripts/crash-campaign.py")).unwrap();
        for p in POINTS {
            assert!(
                sources.contains(&format!("failpoint::hit(\"{p}\")")),
                "{p} is hit nowhere"
            );
            assert!(readme.contains(&format!("`{p}`")), "{p} not in README");
            assert!(
                campaign.contains(&format!("\"{p}\",")),
                "{p} not in crash-campaign.py"
            );
        }
    }
}
