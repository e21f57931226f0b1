//! Module logs go to the Redis log, filtered by `raft.loglevel`.
//!
//! raft-rs logs through slog; [`RedisDrain`] formats a record and its
//! key-values into one line. raft-rs's own info-level chatter (every vote)
//! is logged at `verbose`, ours at `notice`.

use std::fmt::Write as _;

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

use crate::config::{loglevel, LogLevel};

pub struct RedisDrain {
    raftlib: bool,
}

struct LineSerializer<'a>(&'a mut String);

impl Serializer for LineSerializer<'_> {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, ", {key}: {val}");
        Ok(())
    }
}

/// Whether `raft.trace` turns on debug output for raft-rs (`raftlib`) or
/// for the module itself (any other area).
fn traced(raftlib: bool) -> bool {
    let t = crate::config::TRACE.get();
    t.split(',').map(str::trim).any(|a| {
        a == "all"
            || (raftlib && a == "raftlib")
            || (!raftlib && matches!(a, "node" | "conn" | "raftlog" | "generic"))
    })
}

fn redis_level(level: Level, raftlib: bool) -> Option<(&'static str, LogLevel)> {
    if matches!(level, Level::Debug | Level::Trace | Level::Info) && traced(raftlib) {
        return Some(("notice", LogLevel::notice));
    }
    Some(match level {
        Level::Critical | Level::Error | Level::Warning => ("warning", LogLevel::warning),
        Level::Info if raftlib => ("verbose", LogLevel::verbose),
        Level::Info => ("notice", LogLevel::notice),
        Level::Debug => ("debug", LogLevel::debug),
        Level::Trace => return None,
    })
}

impl Drain for RedisDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let Some((name, lvl)) = redis_level(record.level(), self.raftlib) else {
            return Ok(());
        };
        if (lvl.clone() as i32) < (loglevel() as i32) {
            return Ok(());
        }
        let mut line = format!("{}", record.msg());
        let _ = record
            .kv()
            .serialize(record, &mut LineSerializer(&mut line));
        let _ = values.serialize(record, &mut LineSerializer(&mut line));
        crate::ffi::log(name, &line);
        Ok(())
    }
}

/// Our own logger.
pub fn logger() -> slog::Logger {
    slog::Logger::root(RedisDrain { raftlib: false }.fuse(), slog::o!())
}

/// The logger handed to raft-rs.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(RedisDrain { raftlib: true }.fuse(), slog::o!())
}

pub fn notice(msg: &str) {
    if (loglevel() as i32) <= LogLevel::notice as i32 {
        crate::ffi::log("notice", msg);
    }
}

pub fn warning(msg: &str) {
    crate::ffi::log("warning", msg);
}

pub fn verbose(msg: &str) {
    if (loglevel() as i32) <= LogLevel::verbose as i32 {
        crate::ffi::log("verbose", msg);
    }
}
