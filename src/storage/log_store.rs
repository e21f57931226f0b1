//! Durable Raft log on top of raft-engine.
//!
//! Everything lives in one raft-engine group ([`GROUP`]): the entries, plus four small key/values
//! (hard state, membership, node meta, snapshot point). A [`LogWrite`] becomes one raft-engine
//! `LogBatch`, i.e. one record, one write and at most one fsync, so entries and the state that
//! refers to them are always durable together.
//!
//! raft-engine behaviours this module relies on (checked against raft-engine 0.4.2):
//! * Appending entries whose first index is `<=` the last index drops the old suffix from that
//!   index on, both live (`MemTable::append`) and on replay; so conflicting suffixes are replaced
//!   without an explicit truncate. It *panics* on a hole or on rewriting compacted indexes, which
//!   [`LogStore::write`] therefore rejects up front with an error.
//! * `Command::Compact { index }` drops entries `< index`, also past the last entry (the group then
//!   is empty and accepts any next index). `compact` and `reset_to_snapshot` use it.
//! * Its recovery only checksums record footers (the entries block only of a file's last record),
//!   and `TolerateTailCorruption` truncates the newest file at the *first* bad record even when
//!   valid records follow, silently dropping acknowledged entries; its errors name no file.
//!   So [`LogStore::open`] runs its own full check first (see [`check_log_files`]), cuts a real
//!   torn tail itself, and then opens raft-engine with `AbsoluteConsistency`.
//! * Entry reads go through a *thread-local* one-block cache keyed by (queue, file seq, offset,
//!   len) only, not by engine: a second engine read on the same thread can be served a stale
//!   block of an earlier one at the same position (seen in practice: a fresh log reopened after
//!   a wipe returns the old log's entries). So every new log gets file numbers no other log in
//!   this process has used (see [`SEQ_FLOOR`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};
use raft_engine::internals::{EventListener, FileId, FileNameExt, LogQueue};
use raft_engine::{Command, Config, Engine, LogBatch, MessageExt, ReadableSize, RecoveryMode};

use super::entry_cache::EntryCache;
use super::membership::{put_bytes, Cursor};
use super::Membership;

/// The one raft-engine group holding this node's log.
const GROUP: u64 = 1;
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_META: &[u8] = b"meta";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// Version byte of our own small records (meta, snapshot point).
const RECORD_VERSION: u8 = 1;
/// Held (flock) for the store's lifetime. raft-engine has its own `LOCK`, but we must own the
/// directory *before* raft-engine opens it, because the pre-open check may truncate files.
const LOCK_FILE: &str = "redisraft-log.lock";

/// Entry cache size until the owner sets `log-max-cache-size` (its default).
const DEFAULT_CACHE_BYTES: u64 = 64_000_000;

/// Highest raft-engine file number any log of this process has used. A queue that starts empty
/// begins above it instead of at raft-engine's default 1, so no (file seq, offset) position can
/// mean different bytes to two engines of this process (see the block cache note above).
static SEQ_FLOOR: AtomicU64 = AtomicU64::new(0);

/// Keeps [`SEQ_FLOOR`] above every file raft-engine opens or creates.
struct SeqTracker;

impl EventListener for SeqTracker {
    fn post_new_log_file(&self, id: FileId) {
        SEQ_FLOOR.fetch_max(id.seq, Ordering::SeqCst);
    }
}

/// Per-node identity persisted with the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMeta {
    pub node_id: u64,
    pub dbid: String,
    pub removed: bool,
}

impl NodeMeta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 1 + 4 + self.dbid.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.push(self.removed as u8);
        put_bytes(&mut out, self.dbid.as_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Result<NodeMeta, StorageError> {
        let mut r = Cursor::new(buf, "node meta");
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(r.fail(format!("unsupported version {version}")));
        }
        let node_id = r.u64()?;
        let removed = match r.u8()? {
            0 => false,
            1 => true,
            b => return Err(r.fail(format!("bad removed flag {b}"))),
        };
        let dbid = std::str::from_utf8(r.bytes()?)
            .map_err(|e| r.fail(format!("dbid: {e}")))?
            .to_owned();
        r.finish()?;
        Ok(NodeMeta {
            node_id,
            dbid,
            removed,
        })
    }
}

fn encode_snapshot_point(index: u64, term: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out
}

fn decode_snapshot_point(buf: &[u8]) -> Result<(u64, u64), StorageError> {
    let mut r = Cursor::new(buf, "snapshot point");
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(r.fail(format!("unsupported version {version}")));
    }
    let point = (r.u64()?, r.u64()?);
    r.finish()?;
    Ok(point)
}

/// One group commit: everything here is written as one record with at most one fsync.
#[derive(Default)]
pub struct LogWrite {
    /// Appended; an entry at an index <= last_index replaces that index and everything after it.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub membership: Option<Membership>,
    pub meta: Option<NodeMeta>,
    /// Skip the fsync even when log-fsync is on: only for state that can be
    /// recomputed from fsynced entries after a crash (the commit index, and
    /// membership derived from committed entries). Later synced writes make
    /// it durable too, in order.
    pub no_sync: bool,
    /// Set by [`LogStore::stage`]: the number of this write among staged ones.
    pub seq: u64,
}

impl LogWrite {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.membership.is_none()
            && self.meta.is_none()
    }
}

/// fsync latency counters (only writes that actually fsynced).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsyncStats {
    pub count: u64,
    pub total_micros: u64,
    pub max_micros: u64,
}

/// Errors of the log store. Display is one line and names the file or directory when the problem
/// is on disk, because that is what an operator has to go and look at.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call on a file or directory of the log failed.
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// A log file (or the directory as a whole) is damaged before its tail: opening would silently
    /// drop records that were acknowledged, so we refuse. `offset` is where the damage starts.
    Corrupt {
        path: PathBuf,
        offset: Option<u64>,
        reason: String,
    },
    /// raft-engine failed; `path` is the log directory.
    Engine {
        path: PathBuf,
        op: &'static str,
        source: raft_engine::Error,
    },
    /// Another store (in this or another process) has the directory open.
    Locked { path: PathBuf },
    /// A record could not be decoded (see [`Membership::decode`]).
    Decode { what: &'static str, reason: String },
    /// The caller asked for something the log cannot do (index out of range, hole, ...).
    Invalid(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "raft log: {op} {}: {source}", path.display())
            }
            StorageError::Corrupt {
                path,
                offset: Some(off),
                reason,
            } => write!(
                f,
                "raft log file {} is corrupt at offset {off}: {reason}",
                path.display()
            ),
            StorageError::Corrupt {
                path,
                offset: None,
                reason,
            } => write!(f, "raft log {} is corrupt: {reason}", path.display()),
            StorageError::Engine { path, op, source } => {
                let msg = source.to_string().replace('\n', " ");
                write!(f, "raft log {}: {op} failed: {msg}", path.display())
            }
            StorageError::Locked { path } => write!(
                f,
                "raft log directory {} is in use by another process or store",
                path.display()
            ),
            StorageError::Decode { what, reason } => write!(f, "cannot decode {what}: {reason}"),
            StorageError::Invalid(msg) => write!(f, "raft log: {msg}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            StorageError::Engine { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Lets the Raft thread use `?` on store calls inside raft-rs-typed code.
impl From<StorageError> for raft::Error {
    fn from(e: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(e)))
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { path, op, source }
}

/// `MessageExt` is foreign and so is `Entry`: the orphan rule needs a local carrier type.
struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Sizes of raft-engine files; tests shrink them to exercise rotation and purge.
#[derive(Clone, Copy)]
struct Tuning {
    target_file_size: u64,
    purge_threshold: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            // Files are the unit of deletion after `compact`: 32 MiB keeps the space held by
            // compacted-but-unpurged entries small without rotating (close + fsync + dir fsync)
            // more than about once per 32 MiB written.
            target_file_size: 32 << 20,
            // raft-engine purges only when (file count x target size) exceeds this; 2 files'
            // worth means stale files go on the next `compact` once a third file exists, while a
            // young log is never rewritten.
            purge_threshold: 64 << 20,
        }
    }
}

fn engine_config(dir: &Path, t: Tuning) -> Config {
    Config {
        dir: dir.to_string_lossy().into_owned(),
        // `check_log_files` has already cut any torn tail; whatever raft-engine still finds wrong
        // is real damage and must not be "repaired" by truncation.
        recovery_mode: RecoveryMode::AbsoluteConsistency,
        // Redis is mostly single threaded and the machine shared; recovery is I/O bound anyway.
        recovery_threads: 2,
        // V2 (the default) signs each record's checksum with its file number, so stale bytes of
        // an older file generation can never pass as live records.
        format_version: raft_engine::Version::V2,
        // Recycling would keep purged files (and their stale contents) around: file_size() would
        // lie and the tail of a reused file would hold old records. Not worth it for one group.
        enable_log_recycle: false,
        prefill_for_recycle: false,
        target_file_size: ReadableSize(t.target_file_size),
        purge_threshold: ReadableSize(t.purge_threshold),
        // Default LZ4 compression of batches >= 8 KiB: Redis command streams compress well.
        ..Config::default()
    }
}

/// In-memory mirror of what is durable, so reads and stats never touch disk for metadata.
#[derive(Default)]
struct State {
    hard_state: HardState,
    membership: Membership,
    meta: NodeMeta,
    snap_index: u64,
    snap_term: u64,
    /// Last entry index, or `snap_index` when there are no entries.
    last_index: u64,
    /// Terms of entries `snap_index+1 ..= last_index` as runs `(first index of run, term)`,
    /// ascending. raft-rs asks for terms constantly; this avoids reading entry bodies for it.
    term_runs: Vec<(u64, u64)>,
    /// Approximate stored size of each kept entry, oldest first (drives compaction).
    entry_sizes: std::collections::VecDeque<u32>,
    /// Sum of `entry_sizes`.
    entry_bytes: u64,
    /// Number of the last staged write.
    stage_seq: u64,
}

/// Approximate bytes an entry takes in the log (payload plus fixed overhead).
fn entry_size(e: &Entry) -> u32 {
    (e.data.len() + e.context.len() + 24).min(u32::MAX as usize) as u32
}

impl State {
    fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.snap_index {
            return Some(self.snap_term);
        }
        if idx < self.snap_index || idx > self.last_index {
            return None;
        }
        let pos = self.term_runs.partition_point(|r| r.0 <= idx);
        Some(self.term_runs[pos - 1].1)
    }

    /// Forget entries with index >= `idx` (`idx` > snap_index).
    fn truncate_from(&mut self, idx: u64) {
        let pos = self.term_runs.partition_point(|r| r.0 < idx);
        self.term_runs.truncate(pos);
        while self.last_index >= idx && self.last_index > self.snap_index {
            if let Some(sz) = self.entry_sizes.pop_back() {
                self.entry_bytes -= sz as u64;
            }
            self.last_index -= 1;
        }
        self.last_index = self.last_index.min(idx - 1);
    }

    fn push(&mut self, index: u64, term: u64, size: u32) {
        debug_assert_eq!(index, self.last_index + 1);
        self.entry_sizes.push_back(size);
        self.entry_bytes += size as u64;
        if self.term_runs.last().map(|r| r.1) != Some(term) {
            self.term_runs.push((index, term));
        }
        self.last_index = index;
    }

    /// New snapshot point; entries <= `index` are gone, and all of them if `drop_all`.
    fn set_snapshot(&mut self, index: u64, term: u64, drop_all: bool) {
        if drop_all || index >= self.last_index {
            self.term_runs.clear();
            self.entry_sizes.clear();
            self.entry_bytes = 0;
            self.last_index = index;
        } else {
            for _ in self.snap_index..index {
                if let Some(sz) = self.entry_sizes.pop_front() {
                    self.entry_bytes -= sz as u64;
                }
            }
            let keep_from = self.term_runs.partition_point(|r| r.0 <= index + 1) - 1;
            self.term_runs.drain(..keep_from);
            self.term_runs[0].0 = index + 1;
        }
        self.snap_index = index;
        self.snap_term = term;
    }
}

struct Inner {
    dir: PathBuf,
    // Field order matters: the engine must be dropped (its files closed) before our lock goes.
    engine: Engine,
    _lock: File,
    fsync: AtomicBool,
    /// Serialises writers; `state` is only locked briefly, so stats readers never wait on fsync.
    write_lock: Mutex<()>,
    state: RwLock<State>,
    stats: Mutex<FsyncStats>,
    /// The snapshot offered to followers that need compacted entries (set by the owner of the
    /// snapshot files; metadata plus a small descriptor, never the dataset itself).
    snapshot: RwLock<Option<Snapshot>>,
    /// raft-rs asked for a snapshot that the current one cannot serve.
    snapshot_wanted: AtomicBool,
    /// The newest entries, so the Raft thread's reads rarely touch disk.
    cache: Mutex<EntryCache>,
}

/// The durable Raft log of this node. Cheap to clone; all clones share one open log.
///
/// Writes come from the Raft thread, which also performs the `raft::Storage` reads; the getters
/// may be called from any thread.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.read();
        f.debug_struct("LogStore")
            .field("dir", &self.inner.dir)
            .field("snapshot", &(st.snap_index, st.snap_term))
            .field("last_index", &st.last_index)
            .finish()
    }
}

impl LogStore {
    /// Opens (creating if missing) the log in directory `dir`. Recovers hard state, membership,
    /// meta, snapshot point and entries.
    ///
    /// A torn/partial tail left by a crash is cut off silently (it was never acknowledged).
    /// Corruption before the tail refuses to open with an error naming the file.
    pub fn open(dir: &Path, fsync: bool) -> Result<LogStore, StorageError> {
        Self::open_tuned(dir, fsync, Tuning::default())
    }

    /// Like [`LogStore::open`], with raft-engine's file size scaled to `max_log_bytes` (the
    /// compaction threshold), so that a small threshold also keeps the files on disk small:
    /// compacted entries are freed a whole file at a time.
    pub fn open_sized(
        dir: &Path,
        fsync: bool,
        max_log_bytes: u64,
    ) -> Result<LogStore, StorageError> {
        let target = (max_log_bytes / 2).clamp(256 << 10, 32 << 20);
        Self::open_tuned(
            dir,
            fsync,
            Tuning {
                target_file_size: target,
                purge_threshold: target * 2,
            },
        )
    }

    fn open_tuned(dir: &Path, fsync: bool, tuning: Tuning) -> Result<LogStore, StorageError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        // Held a little longer than by its owner at times: a process forked
        // (to exec another program) just before the owner closed the file
        // keeps the lock until its exec. Wait a moment before refusing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StorageError::Locked {
                        path: dir.to_path_buf(),
                    })
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, "lock")(e)),
            }
        }

        let last_seqs = check_log_files(dir)?;
        for (queue, last) in [LogQueue::Append, LogQueue::Rewrite]
            .into_iter()
            .zip(last_seqs)
        {
            match last {
                Some(seq) => {
                    SEQ_FLOOR.fetch_max(seq, Ordering::SeqCst);
                }
                None => {
                    let seq = SEQ_FLOOR.fetch_add(1, Ordering::SeqCst) + 1;
                    create_empty_log_file(dir, queue, seq)?;
                }
            }
        }

        let engine_err = |op, source| StorageError::Engine {
            path: dir.to_path_buf(),
            op,
            source,
        };
        let listeners: Vec<Arc<dyn EventListener>> = vec![Arc::new(SeqTracker)];
        let engine = Engine::open_with_listeners(engine_config(dir, tuning), listeners)
            .map_err(|e| engine_err("open", e))?;
        let corrupt = |reason: String| StorageError::Corrupt {
            path: dir.to_path_buf(),
            offset: None,
            reason,
        };
        let unreadable = |e: StorageError| corrupt(format!("stored record unreadable: {e}"));

        let mut st = State {
            hard_state: engine
                .get_message::<HardState>(GROUP, KEY_HARD_STATE)
                .map_err(|e| engine_err("read hard state", e))?
                .unwrap_or_default(),
            ..State::default()
        };
        if let Some(v) = engine.get(GROUP, KEY_MEMBERSHIP) {
            st.membership = Membership::decode(&v).map_err(unreadable)?;
        }
        if let Some(v) = engine.get(GROUP, KEY_META) {
            st.meta = NodeMeta::decode(&v).map_err(unreadable)?;
        }
        if let Some(v) = engine.get(GROUP, KEY_SNAPSHOT) {
            (st.snap_index, st.snap_term) = decode_snapshot_point(&v).map_err(unreadable)?;
        }
        st.last_index = st.snap_index;
        if let (Some(first), Some(last)) = (engine.first_index(GROUP), engine.last_index(GROUP)) {
            if first != st.snap_index + 1 {
                return Err(corrupt(format!(
                    "entries start at {first} but the snapshot point is {}",
                    st.snap_index
                )));
            }
            // Rebuild the term cache, a bounded chunk at a time (at least one entry per call).
            let mut next = first;
            let mut chunk = Vec::new();
            while next <= last {
                chunk.clear();
                engine
                    .fetch_entries_to::<EntryExt>(GROUP, next, last + 1, Some(4 << 20), &mut chunk)
                    .map_err(|e| engine_err("read entries", e))?;
                for e in &chunk {
                    st.push(e.index, e.term, entry_size(e));
                }
                next += chunk.len() as u64;
            }
        }

        Ok(LogStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                engine,
                _lock: lock,
                fsync: AtomicBool::new(fsync),
                write_lock: Mutex::new(()),
                state: RwLock::new(st),
                stats: Mutex::new(FsyncStats::default()),
                snapshot: RwLock::new(None),
                snapshot_wanted: AtomicBool::new(false),
                cache: Mutex::new(EntryCache::new(DEFAULT_CACHE_BYTES)),
            }),
        })
    }

    fn engine_err(&self, op: &'static str) -> impl FnOnce(raft_engine::Error) -> StorageError {
        let path = self.inner.dir.clone();
        move |source| StorageError::Engine { path, op, source }
    }

    /// Writes `batch` as one record; fsyncs it when `sync`, and times that for [`FsyncStats`].
    fn commit(
        &self,
        batch: &mut LogBatch,
        sync: bool,
        op: &'static str,
    ) -> Result<(), StorageError> {
        if sync {
            crate::failpoint::hit("log-before-fsync");
        }
        let start = Instant::now();
        // Note: raft-engine panics if the fsync itself fails; after a failed fsync the page cache
        // state is unknowable, so crashing is the only safe answer anyway.
        self.inner
            .engine
            .write(batch, sync)
            .map_err(self.engine_err(op))?;
        if sync {
            crate::failpoint::hit("log-after-fsync");
            // A real fsync never takes 0 us; rounding up keeps count > 0 => total > 0.
            let us = (start.elapsed().as_micros() as u64).max(1);
            let mut s = self.inner.stats.lock();
            s.count += 1;
            s.total_micros += us;
            s.max_micros = s.max_micros.max(us);
        }
        Ok(())
    }

    /// One batch, one write, one fsync when fsync is on (group commit): [`LogStore::stage`] then
    /// [`LogStore::persist`]. Entries must be consecutive and start in
    /// `first_index()..=last_index()+1`.
    ///
    /// Not for entries while staged writes are still pending elsewhere (a log writer): marking
    /// these durable would mark those durable too.
    pub fn write(&self, mut w: LogWrite) -> Result<(), StorageError> {
        self.stage(&mut w)?;
        self.persist(&w, !w.no_sync)?;
        if !w.entries.is_empty() {
            self.mark_durable(w.seq);
        }
        Ok(())
    }

    /// Makes `w` visible to readers (raft-rs through `raft::Storage`, the getters) before it is
    /// durable; [`LogStore::persist`] must follow, for staged writes in the order they were
    /// staged. Entries staged and not yet durable are always served from memory.
    pub fn stage(&self, w: &mut LogWrite) -> Result<(), StorageError> {
        let mut st = self.inner.state.write();
        if let Some(first) = w.entries.first() {
            let (snap, last) = (st.snap_index, st.last_index);
            if first.index <= snap || first.index > last + 1 {
                return Err(StorageError::Invalid(format!(
                    "append at index {} outside {}..={} (snapshot at {snap})",
                    first.index,
                    snap + 1,
                    last + 1
                )));
            }
            if let Some(w) = w.entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
                return Err(StorageError::Invalid(format!(
                    "entries not consecutive: {} then {}",
                    w[0].index, w[1].index
                )));
            }
        }
        st.stage_seq += 1;
        w.seq = st.stage_seq;
        if let Some(first) = w.entries.first() {
            self.inner.cache.lock().append(&w.entries, w.seq);
            st.truncate_from(first.index);
            for e in &w.entries {
                st.push(e.index, e.term, entry_size(e));
            }
        }
        if let Some(hs) = &w.hard_state {
            st.hard_state = hs.clone();
        }
        if let Some(m) = &w.membership {
            st.membership = m.clone();
        }
        if let Some(m) = &w.meta {
            st.meta = m.clone();
        }
        Ok(())
    }

    /// Writes a staged write as one record, fsynced when fsync is on and `sync` is asked. A write
    /// without fsync becomes durable with the next fsync.
    pub fn persist(&self, w: &LogWrite, sync: bool) -> Result<(), StorageError> {
        let _writer = self.inner.write_lock.lock();
        let mut batch = LogBatch::default();
        if !w.entries.is_empty() {
            batch
                .add_entries::<EntryExt>(GROUP, &w.entries)
                .map_err(self.engine_err("encode entries"))?;
        }
        if let Some(hs) = &w.hard_state {
            batch
                .put_message(GROUP, KEY_HARD_STATE.to_vec(), hs)
                .map_err(self.engine_err("encode hard state"))?;
        }
        if let Some(m) = &w.membership {
            batch
                .put(GROUP, KEY_MEMBERSHIP.to_vec(), m.encode())
                .map_err(self.engine_err("encode membership"))?;
        }
        if let Some(m) = &w.meta {
            batch
                .put(GROUP, KEY_META.to_vec(), m.encode())
                .map_err(self.engine_err("encode meta"))?;
        }
        if !batch.is_empty() {
            self.commit(
                &mut batch,
                sync && self.inner.fsync.load(Ordering::Relaxed),
                "write",
            )?;
        }
        Ok(())
    }

    /// Staged writes up to `seq` are durable (their entries may leave memory).
    pub fn mark_durable(&self, seq: u64) {
        self.inner.cache.lock().mark_durable(seq);
    }

    /// Whether fsync is on (`log-fsync`).
    pub fn fsync_enabled(&self) -> bool {
        self.inner.fsync.load(Ordering::Relaxed)
    }

    /// `log-max-cache-size`: bytes of newest entries kept in memory (0: none).
    pub fn set_cache_limit(&self, bytes: u64) {
        self.inner.cache.lock().set_max_bytes(bytes);
    }

    /// Entries and bytes in the entry cache.
    pub fn cache_stats(&self) -> (usize, u64) {
        let c = self.inner.cache.lock();
        (c.len(), c.bytes())
    }

    /// Runtime `CONFIG SET raft.log-fsync`.
    pub fn set_fsync(&self, on: bool) {
        self.inner.fsync.store(on, Ordering::Relaxed);
    }

    pub fn hard_state(&self) -> HardState {
        self.inner.state.read().hard_state.clone()
    }

    pub fn membership(&self) -> Membership {
        self.inner.state.read().membership.clone()
    }

    pub fn meta(&self) -> NodeMeta {
        self.inner.state.read().meta.clone()
    }

    /// Drops entries <= `index`, remembering `(index, term)` as the snapshot point so
    /// `term(index)` still answers; purges raft-engine files no longer needed.
    ///
    /// `index` must be <= last applied (caller's duty); errors if `index > last_index()` or if
    /// `term` is not the term of the kept entry at `index`. No-op if `index <= ` snapshot index.
    pub fn compact(&self, index: u64, term: u64) -> Result<(), StorageError> {
        let _writer = self.inner.write_lock.lock();
        {
            let st = self.inner.state.read();
            if index <= st.snap_index {
                return Ok(());
            }
            if index > st.last_index {
                return Err(StorageError::Invalid(format!(
                    "cannot compact to {index}: last index is {}",
                    st.last_index
                )));
            }
            let have = st.term_of(index);
            if have != Some(term) {
                return Err(StorageError::Invalid(format!(
                    "cannot compact to {index} with term {term}: entry has term {have:?}"
                )));
            }
        }
        self.write_snapshot_point(index, term, index + 1, false, None)
    }

    /// [`LogStore::compact`] and a new hard state in ONE fsynced record: start-up reconciliation
    /// with a snapshot newer than the durable commit index. As two records, a crash between them
    /// would leave the log starting after the commit index, which raft-rs refuses (a panic in
    /// `RawNode::new`) on every start.
    pub fn compact_and_commit(
        &self,
        index: u64,
        term: u64,
        hard_state: HardState,
    ) -> Result<(), StorageError> {
        let _writer = self.inner.write_lock.lock();
        {
            let st = self.inner.state.read();
            let have = st.term_of(index);
            if index <= st.snap_index || index > st.last_index || have != Some(term) {
                return Err(StorageError::Invalid(format!(
                    "cannot compact to {index} with term {term}: log holds {}..={} (term there {have:?})",
                    st.snap_index + 1,
                    st.last_index
                )));
            }
        }
        self.write_snapshot_point(index, term, index + 1, false, Some(hard_state))
    }

    /// Resets the log to start right after a snapshot at `(index, term)`: drops all entries,
    /// `first_index()` becomes `index + 1`. Used when a snapshot is installed.
    pub fn reset_to_snapshot(&self, index: u64, term: u64) -> Result<(), StorageError> {
        let _writer = self.inner.write_lock.lock();
        // Compact past the engine's own last entry too: entries above `index` must go as well.
        let engine_last = self.inner.engine.last_index(GROUP).unwrap_or(0);
        self.write_snapshot_point(index, term, index.max(engine_last) + 1, true, None)
    }

    /// Records the snapshot point and compacts the engine below `compact_to` in one record, with
    /// `hard_state` if given.
    fn write_snapshot_point(
        &self,
        index: u64,
        term: u64,
        compact_to: u64,
        drop_all: bool,
        hard_state: Option<HardState>,
    ) -> Result<(), StorageError> {
        let mut batch = LogBatch::default();
        batch.add_command(GROUP, Command::Compact { index: compact_to });
        batch
            .put(
                GROUP,
                KEY_SNAPSHOT.to_vec(),
                encode_snapshot_point(index, term),
            )
            .map_err(self.engine_err("encode snapshot point"))?;
        if let Some(hs) = &hard_state {
            batch
                .put_message(GROUP, KEY_HARD_STATE.to_vec(), hs)
                .map_err(self.engine_err("encode hard state"))?;
        }
        // Always fsynced, whatever the fsync setting: the purge below deletes files, and if this
        // record were lost in a crash after that, the log would restart with a hole.
        self.commit(&mut batch, true, "compact")?;
        if drop_all {
            self.inner.cache.lock().clear();
        } else {
            self.inner.cache.lock().compact_to(index);
        }
        {
            let mut st = self.inner.state.write();
            st.set_snapshot(index, term, drop_all);
            if let Some(hs) = hard_state {
                st.hard_state = hs;
            }
        }
        self.inner
            .engine
            .purge_expired_files()
            .map_err(self.engine_err("purge"))?;
        Ok(())
    }

    /// Installs a received snapshot: the log restarts right after `(index, term)`, with the
    /// snapshot's membership and a hard state whose commit covers it, all in ONE fsynced record
    /// (as separate records, a crash between them would leave a commit index outside the log).
    pub fn install_snapshot(
        &self,
        index: u64,
        term: u64,
        membership: Membership,
        hard_state: HardState,
    ) -> Result<(), StorageError> {
        let _writer = self.inner.write_lock.lock();
        let engine_last = self.inner.engine.last_index(GROUP).unwrap_or(0);
        let mut batch = LogBatch::default();
        batch.add_command(
            GROUP,
            Command::Compact {
                index: index.max(engine_last) + 1,
            },
        );
        batch
            .put(
                GROUP,
                KEY_SNAPSHOT.to_vec(),
                encode_snapshot_point(index, term),
            )
            .map_err(self.engine_err("encode snapshot point"))?;
        batch
            .put(GROUP, KEY_MEMBERSHIP.to_vec(), membership.encode())
            .map_err(self.engine_err("encode membership"))?;
        batch
            .put_message(GROUP, KEY_HARD_STATE.to_vec(), &hard_state)
            .map_err(self.engine_err("encode hard state"))?;
        self.commit(&mut batch, true, "install snapshot")?;
        self.inner.cache.lock().clear();
        {
            let mut st = self.inner.state.write();
            st.set_snapshot(index, term, true);
            st.membership = membership;
            st.hard_state = hard_state;
        }
        self.inner
            .engine
            .purge_expired_files()
            .map_err(self.engine_err("purge"))?;
        Ok(())
    }

    /// Sets the snapshot that `raft::Storage::snapshot` hands to raft-rs.
    pub fn set_snapshot(&self, snap: Option<Snapshot>) {
        *self.inner.snapshot.write() = snap;
    }

    /// Whether raft-rs needed a newer snapshot than the one offered (clears the flag).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.inner.snapshot_wanted.swap(false, Ordering::AcqRel)
    }

    /// The snapshot currently offered, if any.
    pub fn current_snapshot(&self) -> Option<Snapshot> {
        self.inner.snapshot.read().clone()
    }

    /// Approximate bytes of the entries kept (payloads plus a fixed overhead each).
    pub fn log_bytes(&self) -> u64 {
        self.inner.state.read().entry_bytes
    }

    /// `(index, term)` of the snapshot point; `(0, 0)` initially.
    pub fn snapshot_point(&self) -> (u64, u64) {
        let st = self.inner.state.read();
        (st.snap_index, st.snap_term)
    }

    pub fn fsync_stats(&self) -> FsyncStats {
        *self.inner.stats.lock()
    }

    /// Entries currently kept.
    pub fn entry_count(&self) -> u64 {
        let st = self.inner.state.read();
        st.last_index - st.snap_index
    }

    /// Bytes on disk of the log directory's files (including preallocated space).
    pub fn file_size(&self) -> u64 {
        let Ok(rd) = fs::read_dir(&self.inner.dir) else {
            return 0;
        };
        rd.filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

fn store_err(e: StorageError) -> raft::Error {
    e.into()
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.inner.state.read();
        Ok(RaftState::new(
            st.hard_state.clone(),
            st.membership.conf_state.clone(),
        ))
    }

    /// Entries `[low, high)`, at least one if any, limited by `max_size` like raft's `limit_size`.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        {
            let st = self.inner.state.read();
            if low <= st.snap_index {
                return Err(raft::Error::Store(raft::StorageError::Compacted));
            }
            if high > st.last_index + 1 {
                panic!(
                    "index out of bound (last: {}, high: {})",
                    st.last_index + 1,
                    high
                );
            }
        }
        if low >= high {
            return Ok(Vec::new());
        }
        // Entries below the cache are durable in the files; those in it may not be yet.
        let cache_first = {
            let cache = self.inner.cache.lock();
            if let Some(ents) = cache.get(low, high, max_size) {
                return Ok(ents);
            }
            cache.first_index().filter(|f| *f < high).unwrap_or(high)
        };
        let file_high = cache_first.max(low);
        // raft-engine applies the same rule as raft's limit_size (stop once the running size
        // exceeds max, always keep the first), so only the needed bodies are read from disk.
        let engine_limit = match max_size {
            None | Some(raft::NO_LIMIT) => None,
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        };
        let mut ents = Vec::with_capacity((high - low).min(1024) as usize);
        self.inner
            .engine
            .fetch_entries_to::<EntryExt>(GROUP, low, file_high, engine_limit, &mut ents)
            .map_err(|e| store_err(self.engine_err("read entries")(e)))?;
        if low < file_high && file_high < high && ents.len() as u64 == file_high - low {
            // The rest is in memory (the cache could have moved on meanwhile: only the Raft
            // thread stages, so it only lost durable entries, which are in the files).
            ents.extend(self.entries(file_high, high, None, GetEntriesContext::empty(false))?);
        }
        raft::util::limit_size(&mut ents, max_size);
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.inner.state.read();
        match st.term_of(idx) {
            Some(t) => Ok(t),
            None if idx < st.snap_index => Err(raft::Error::Store(raft::StorageError::Compacted)),
            None => Err(raft::Error::Store(raft::StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.state.read().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.state.read().last_index)
    }

    /// The snapshot set with [`LogStore::set_snapshot`]; "temporarily unavailable" (raft-rs
    /// retries later) while there is none, or none as recent as `request_index`.
    ///
    /// A snapshot older than the membership that added `to` is of no use to it (raft-rs on the
    /// receiving side refuses a snapshot whose members do not include itself): then a newer one
    /// is asked for through [`LogStore::take_snapshot_wanted`].
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if let Some(s) = &*self.inner.snapshot.read() {
            let cs = s.get_metadata().get_conf_state();
            let member = cs.voters.contains(&to) || cs.learners.contains(&to);
            if s.get_metadata().index >= request_index && member {
                return Ok(s.clone());
            }
        }
        self.inner.snapshot_wanted.store(true, Ordering::Release);
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-open verification of raft-engine files.
//
// raft-engine 0.4 file layout (file_pipe_log/format.rs, log_batch.rs):
//   file   = magic (52 bytes) | version u64 BE | [V2: alignment u64 BE] | record*
//   record = header { len<<8 | compression u8 : u64 BE, footer_offset: u64 BE }
//            | entries block [ bytes | crc32 u32 LE ]   (absent when footer_offset == 16)
//            | footer        [ items | crc32 u32 LE ^ signature ]  (signature = file seq for V2)
// ---------------------------------------------------------------------------------------------

const FILE_MAGIC: &[u8] = b"RAFT-LOG-FILE-HEADER-9986AB3E47F320B394C8E84916EB0ED5";
const RECORD_HEADER_LEN: usize = 16;
const CHECKSUM_LEN: usize = 4;

/// Checks every record of every raft-engine file in `dir` (both checksums, unlike raft-engine's
/// own recovery). Damage in the newest file of a queue with no valid record after it is a torn
/// tail from a crash: it is cut off (the file deleted if even its header is incomplete). Any
/// other damage, or a missing file in the sequence, is an error naming the file.
///
/// Returns the newest remaining file number of the append and of the rewrite queue.
fn check_log_files(dir: &Path) -> Result<[Option<u64>; 2], StorageError> {
    let mut queues: [Vec<(u64, PathBuf)>; 2] = [Vec::new(), Vec::new()];
    for e in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let e = e.map_err(io_err(dir, "list"))?;
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(FileId::parse_file_name) else {
            continue;
        };
        let q = match id.queue {
            LogQueue::Append => 0,
            LogQueue::Rewrite => 1,
        };
        queues[q].push((id.seq, e.path()));
    }
    let mut last_seqs = [None, None];
    for (q, files) in queues.iter_mut().enumerate() {
        files.sort();
        for w in files.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                return Err(StorageError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: None,
                    reason: format!(
                        "log file(s) missing between {} and {}",
                        w[0].1.display(),
                        w[1].1.display()
                    ),
                });
            }
        }
        for (i, (seq, path)) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            if check_file(dir, path, *seq, is_last)? || !is_last {
                last_seqs[q] = Some(*seq);
            }
        }
    }
    Ok(last_seqs)
}

/// Writes an empty raft-engine file (header only, as raft-engine itself would) so that the
/// queue starts at `seq`.
fn create_empty_log_file(dir: &Path, queue: LogQueue, seq: u64) -> Result<(), StorageError> {
    let path = FileId { queue, seq }.build_file_path(dir);
    let mut header = FILE_MAGIC.to_vec();
    header.extend_from_slice(&2u64.to_be_bytes()); // format version 2
    header.extend_from_slice(&0u64.to_be_bytes()); // no alignment
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path, "create"))?;
    f.write_all(&header).map_err(io_err(&path, "write"))?;
    f.sync_all().map_err(io_err(&path, "fsync"))?;
    sync_dir(dir)
}

/// Returns false if the file was removed (torn before its header was complete).
fn check_file(dir: &Path, path: &Path, seq: u64, is_last: bool) -> Result<bool, StorageError> {
    let buf = fs::read(path).map_err(io_err(path, "read"))?;
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: Some(offset as u64),
        reason,
    };
    let (mut pos, signature) = match parse_file_header(&buf, seq) {
        Ok(h) => h,
        Err(reason) => {
            // A crash between creating a file and writing its header leaves it empty or partial.
            let sigs = [seq as u32, 0];
            if let Some(at) = sigs.iter().find_map(|&s| find_record(&buf, 0, s)) {
                return Err(corrupt(
                    0,
                    format!("{reason}; a valid record follows at {at}"),
                ));
            }
            if !is_last {
                return Err(corrupt(0, reason));
            }
            fs::remove_file(path).map_err(io_err(path, "remove torn file"))?;
            sync_dir(dir)?;
            return Ok(false);
        }
    };
    while pos < buf.len() {
        match check_record(&buf, pos, signature) {
            Ok(len) => pos += len,
            Err(reason) => {
                if !is_last {
                    return Err(corrupt(pos, reason.to_owned()));
                }
                if let Some(at) = find_record(&buf, pos + 1, signature) {
                    return Err(corrupt(
                        pos,
                        format!("{reason}; a valid record follows at offset {at}"),
                    ));
                }
                // Torn tail (or preallocated zeros after the last record): never acknowledged.
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path, "open for truncation"))?;
                f.set_len(pos as u64).map_err(io_err(path, "truncate"))?;
                f.sync_all().map_err(io_err(path, "fsync"))?;
                return Ok(true);
            }
        }
    }
    Ok(true)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// Returns (offset of the first record, checksum signature).
fn parse_file_header(buf: &[u8], seq: u64) -> Result<(usize, u32), String> {
    let n = FILE_MAGIC.len();
    if buf.len() < n + 8 || &buf[..n] != FILE_MAGIC {
        return Err("missing or damaged file header".to_owned());
    }
    match u64::from_be_bytes(buf[n..n + 8].try_into().unwrap()) {
        1 => Ok((n + 8, 0)),
        2 => {
            if buf.len() < n + 16 {
                return Err("truncated file header".to_owned());
            }
            let alignment = u64::from_be_bytes(buf[n + 8..n + 16].try_into().unwrap());
            if alignment != 0 {
                return Err(format!("unsupported record alignment {alignment}"));
            }
            Ok((n + 16, seq as u32))
        }
        v => Err(format!("unknown file format version {v}")),
    }
}

/// Validates the record at `pos`; returns its length.
fn check_record(buf: &[u8], pos: usize, signature: u32) -> Result<usize, &'static str> {
    let rest = &buf[pos..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err("truncated record header");
    }
    let len_and_type = u64::from_be_bytes(rest[..8].try_into().unwrap());
    if len_and_type & 0xff > 1 {
        return Err("bad record header (compression type)");
    }
    let len = usize::try_from(len_and_type >> 8).unwrap_or(usize::MAX);
    let footer =
        usize::try_from(u64::from_be_bytes(rest[8..16].try_into().unwrap())).unwrap_or(usize::MAX);
    if footer < RECORD_HEADER_LEN || footer > len {
        return Err("bad record header (offsets)");
    }
    if len > rest.len() {
        return Err("record extends past end of file");
    }
    let entries = &rest[RECORD_HEADER_LEN..footer];
    if !entries.is_empty() && !checksum_ok(entries, 0) {
        return Err("entries checksum mismatch");
    }
    if !checksum_ok(&rest[footer..len], signature) {
        return Err("record checksum mismatch");
    }
    Ok(len)
}

/// Offset of the first position >= `from` where a whole valid record starts.
fn find_record(buf: &[u8], from: usize, signature: u32) -> Option<usize> {
    (from..buf.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .find(|&p| check_record(buf, p, signature).is_ok())
}

/// `data | crc32(data) ^ signature` (u32 LE); too short counts as a mismatch.
fn checksum_ok(block: &[u8], signature: u32) -> bool {
    if block.len() <= CHECKSUM_LEN {
        return false;
    }
    let (data, sum) = block.split_at(block.len() - CHECKSUM_LEN);
    crc32(data) == u32::from_le_bytes(sum.try_into().unwrap()) ^ signature
}

/// CRC-32 (IEEE, reflected 0xEDB88320), the one raft-engine uses via crc32fast.
/// CRC-32 (IEEE), as raft-engine computes it (it uses crc32fast too).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn ent_data(index: u64, term: u64, len: usize) -> Entry {
        let mut e = ent(index, term);
        e.data = (0..len)
            .map(|i| (i as u64 * 31 + index) as u8)
            .collect::<Vec<u8>>()
            .into();
        e
    }

    fn append(s: &LogStore, ents: Vec<Entry>) {
        s.write(LogWrite {
            entries: ents,
            ..LogWrite::default()
        })
        .unwrap();
    }

    fn all_entries(s: &LogStore) -> Vec<Entry> {
        let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
        s.entries(lo, hi, None, GetEntriesContext::empty(false))
            .unwrap()
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    /// Tiny files so a handful of writes spans several of them.
    fn tiny() -> Tuning {
        Tuning {
            target_file_size: 1024,
            purge_threshold: 2048,
        }
    }

    fn append_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".raftlog"))
            .collect();
        v.sort();
        v
    }

    /// Offsets of the records of a raft-engine file (via our own parser).
    fn record_offsets(path: &Path) -> Vec<usize> {
        let buf = fs::read(path).unwrap();
        let seq = FileId::parse_file_name(path.file_name().unwrap().to_str().unwrap())
            .unwrap()
            .seq;
        let (mut pos, sig) = parse_file_header(&buf, seq).unwrap();
        let mut out = Vec::new();
        while pos < buf.len() {
            out.push(pos);
            pos += check_record(&buf, pos, sig).unwrap();
        }
        out
    }

    fn flip_byte(path: &Path, offset: usize) {
        let mut buf = fs::read(path).unwrap();
        buf[offset] ^= 0x5a;
        fs::write(path, buf).unwrap();
    }

    #[test]
    fn crc32_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn fresh_store_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.entry_count(), 0);
        assert_eq!(s.snapshot_point(), (0, 0));
        assert_eq!(s.hard_state(), HardState::default());
        assert_eq!(s.membership(), Membership::default());
        assert_eq!(s.meta(), NodeMeta::default());
        assert_eq!(s.dir(), d.path());
        assert!(s.file_size() > 0);
        assert_eq!(
            s.snapshot(0, 2).unwrap_err(),
            raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)
        );
        assert!(matches!(
            LogStore::open(d.path(), false).unwrap_err(),
            StorageError::Locked { .. }
        ));
    }

    #[test]
    fn log_bytes_follow_appends_overwrites_and_compaction() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        let sized = |i: u64, len: usize| {
            let mut e = ent(i, 1);
            e.data = vec![7u8; len].into();
            e
        };
        let w = |es: Vec<Entry>| {
            s.write(LogWrite {
                entries: es,
                ..Default::default()
            })
            .unwrap()
        };
        w(vec![sized(1, 100), sized(2, 200), sized(3, 300)]);
        let each = |len: usize| entry_size(&sized(0, len)) as u64;
        assert_eq!(s.log_bytes(), each(100) + each(200) + each(300));
        // Overwriting from index 2 drops 2 and 3.
        w(vec![sized(2, 50)]);
        assert_eq!(s.log_bytes(), each(100) + each(50));
        s.compact(1, 1).unwrap();
        assert_eq!(s.log_bytes(), each(50));
        // Reopened: rebuilt from the entries on disk.
        drop(s);
        let s = LogStore::open(d.path(), false).unwrap();
        assert_eq!(s.log_bytes(), each(50));
    }

    #[test]
    fn append_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        let ents: Vec<Entry> = (1..=20).map(|i| ent_data(i, 1 + i / 7, 100)).collect();
        append(&s, ents[..5].to_vec());
        append(&s, ents[5..].to_vec());
        assert_eq!(s.last_index().unwrap(), 20);
        assert_eq!(s.entry_count(), 20);
        assert_eq!(all_entries(&s), ents);
        for e in &ents {
            assert_eq!(s.term(e.index).unwrap(), e.term);
        }
        // Gaps and rewriting the snapshot point are refused, not panics inside raft-engine.
        let err = s
            .write(LogWrite {
                entries: vec![ent(22, 3)],
                ..LogWrite::default()
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err}");
        let err = s
            .write(LogWrite {
                entries: vec![ent(0, 3)],
                ..LogWrite::default()
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err}");
        let err = s
            .write(LogWrite {
                entries: vec![ent(21, 3), ent(23, 3)],
                ..LogWrite::default()
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err}");
        assert_eq!(s.last_index().unwrap(), 20);
    }

    /// Mirrors raft-rs MemStorage `test_storage_append`: overlapping appends replace the suffix.
    #[test]
    fn overlapping_append_replaces_suffix() {
        // Snapshot point (2, 2), entries 3(3) 4(4) 5(5), as in MemStorage's test.
        let base = vec![ent(3, 3), ent(4, 4), ent(5, 5)];
        let cases = vec![
            (base.clone(), base.clone()),
            (
                vec![ent(3, 3), ent(4, 6), ent(5, 6)],
                vec![ent(3, 3), ent(4, 6), ent(5, 6)],
            ),
            (
                vec![ent(3, 3), ent(4, 4), ent(5, 5), ent(6, 5)],
                vec![ent(3, 3), ent(4, 4), ent(5, 5), ent(6, 5)],
            ),
            // Truncate the existing entries and append: a shorter suffix wins.
            (vec![ent(4, 5)], vec![ent(3, 3), ent(4, 5)]),
            // Direct append.
            (
                vec![ent(6, 6)],
                vec![ent(3, 3), ent(4, 4), ent(5, 5), ent(6, 6)],
            ),
        ];
        for (i, (ents, want)) in cases.into_iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            {
                let s = LogStore::open(d.path(), false).unwrap();
                s.reset_to_snapshot(2, 2).unwrap();
                append(&s, base.clone());
                append(&s, ents);
                assert_eq!(all_entries(&s), want, "case {i}");
                for e in &want {
                    assert_eq!(s.term(e.index).unwrap(), e.term, "case {i}");
                }
                assert_eq!(s.last_index().unwrap(), want.last().unwrap().index);
            }
            // raft-engine's replay applies the same truncation.
            let s = LogStore::open(d.path(), false).unwrap();
            assert_eq!(all_entries(&s), want, "case {i} after reopen");
            assert_eq!(s.last_index().unwrap(), want.last().unwrap().index);
        }
        // Overwriting compacted entries is refused.
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        s.reset_to_snapshot(2, 2).unwrap();
        append(&s, base);
        let err = s
            .write(LogWrite {
                entries: vec![ent(2, 3), ent(3, 3), ent(4, 5)],
                ..LogWrite::default()
            })
            .unwrap_err();
        assert!(matches!(err, StorageError::Invalid(_)), "{err}");
    }

    /// The overwritten suffix lives in an older file than its replacement.
    #[test]
    fn overlapping_append_across_files_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open_tuned(d.path(), false, tiny()).unwrap();
            append(&s, (1..=10).map(|i| ent_data(i, 1, 200)).collect());
            append(&s, (11..=20).map(|i| ent_data(i, 1, 200)).collect());
            append(&s, vec![ent_data(5, 2, 10), ent_data(6, 2, 10)]);
            assert!(append_files(d.path()).len() >= 3);
        }
        let s = LogStore::open_tuned(d.path(), false, tiny()).unwrap();
        let got = all_entries(&s);
        assert_eq!(got.len(), 6);
        assert_eq!(got[4], ent_data(5, 2, 10));
        assert_eq!(got[5], ent_data(6, 2, 10));
        assert_eq!(s.term(4).unwrap(), 1);
        assert_eq!(s.term(6).unwrap(), 2);
        assert_eq!(
            s.term(7).unwrap_err(),
            raft::Error::Store(raft::StorageError::Unavailable)
        );
    }

    /// Mirrors MemStorage `test_storage_term`.
    #[test]
    fn term_contract() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        s.reset_to_snapshot(3, 3).unwrap();
        append(&s, vec![ent(4, 4), ent(5, 5)]);
        let cases = vec![
            (2, Err(raft::Error::Store(raft::StorageError::Compacted))),
            (3, Ok(3)),
            (4, Ok(4)),
            (5, Ok(5)),
            (6, Err(raft::Error::Store(raft::StorageError::Unavailable))),
        ];
        for (idx, want) in cases {
            assert_eq!(s.term(idx), want, "term({idx})");
        }
    }

    /// Mirrors MemStorage `test_storage_entries`, including max_size.
    #[test]
    fn entries_contract() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        s.reset_to_snapshot(2, 2).unwrap();
        let ents = vec![ent(3, 3), ent(4, 4), ent(5, 5), ent(6, 6)];
        append(&s, ents.clone());
        let sz = |e: &Entry| u64::from(protobuf::Message::compute_size(e));
        let max = u64::MAX;
        let cases = vec![
            (
                2,
                6,
                max,
                Err(raft::Error::Store(raft::StorageError::Compacted)),
            ),
            (3, 4, max, Ok(vec![ent(3, 3)])),
            (4, 5, max, Ok(vec![ent(4, 4)])),
            (4, 6, max, Ok(vec![ent(4, 4), ent(5, 5)])),
            (4, 7, max, Ok(vec![ent(4, 4), ent(5, 5), ent(6, 6)])),
            // Even if max_size is zero, the first entry is returned.
            (4, 7, 0, Ok(vec![ent(4, 4)])),
            (
                4,
                7,
                sz(&ents[1]) + sz(&ents[2]),
                Ok(vec![ent(4, 4), ent(5, 5)]),
            ),
            (
                4,
                7,
                sz(&ents[1]) + sz(&ents[2]) + sz(&ents[3]) / 2,
                Ok(vec![ent(4, 4), ent(5, 5)]),
            ),
            (
                4,
                7,
                sz(&ents[1]) + sz(&ents[2]) + sz(&ents[3]) - 1,
                Ok(vec![ent(4, 4), ent(5, 5)]),
            ),
            (
                4,
                7,
                sz(&ents[1]) + sz(&ents[2]) + sz(&ents[3]),
                Ok(vec![ent(4, 4), ent(5, 5), ent(6, 6)]),
            ),
        ];
        for (i, (lo, hi, max_size, want)) in cases.into_iter().enumerate() {
            assert_eq!(s.entries(lo, hi, max_size, ctx()), want, "case {i}");
        }
        assert_eq!(s.entries(4, 4, None, ctx()).unwrap(), vec![]);
        // high beyond last_index + 1 panics, as in MemStorage.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.entries(4, 8, None, ctx());
        }));
        assert!(r.is_err());
    }

    /// Mirrors MemStorage `test_storage_first_index` / `test_storage_last_index`.
    #[test]
    fn first_and_last_index() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), false).unwrap();
        s.reset_to_snapshot(2, 2).unwrap();
        append(&s, vec![ent(3, 3), ent(4, 4), ent(5, 5)]);
        assert_eq!(s.first_index(), Ok(3));
        assert_eq!(s.last_index(), Ok(5));
        append(&s, vec![ent(6, 5)]);
        assert_eq!(s.last_index(), Ok(6));
        s.compact(3, 3).unwrap();
        assert_eq!(s.first_index(), Ok(4));
        assert_eq!(s.last_index(), Ok(6));
    }

    #[test]
    fn reopen_recovers_everything() {
        let d = tempfile::tempdir().unwrap();
        let hs = HardState {
            term: 7,
            vote: 2,
            commit: 12,
            ..HardState::default()
        };
        let mut m = Membership::default();
        m.conf_state.voters = vec![1, 2, 3];
        m.conf_state.learners = vec![4];
        m.addrs.insert(1, "127.0.0.1:5001".into());
        m.addrs.insert(2, "127.0.0.1:5002".into());
        m.addrs.insert(4, "host-4:5004".into());
        m.index = 9;
        let meta = NodeMeta {
            node_id: 2,
            dbid: "0123456789abcdef0123456789abcdef".into(),
            removed: true,
        };
        let ents: Vec<Entry> = (1..=30).map(|i| ent_data(i, 1 + i / 10, 300)).collect();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            s.write(LogWrite {
                entries: ents[..20].to_vec(),
                hard_state: Some(hs.clone()),
                membership: Some(m.clone()),
                meta: Some(meta.clone()),
                ..Default::default()
            })
            .unwrap();
            append(&s, ents[20..].to_vec());
            s.compact(5, ents[4].term).unwrap();
        }
        let s = LogStore::open(d.path(), true).unwrap();
        assert_eq!(s.hard_state(), hs);
        assert_eq!(s.membership(), m);
        assert_eq!(s.meta(), meta);
        assert_eq!(s.snapshot_point(), (5, 1));
        assert_eq!(all_entries(&s), ents[5..].to_vec());
        assert_eq!(s.entry_count(), 25);
        let rs = s.initial_state().unwrap();
        assert_eq!(rs.hard_state, hs);
        assert_eq!(rs.conf_state, m.conf_state);
    }

    #[test]
    fn torn_tail_is_cut_silently() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            append(&s, (1..=5).map(|i| ent_data(i, 1, 64)).collect());
            append(&s, (6..=8).map(|i| ent_data(i, 1, 64)).collect());
            append(&s, (9..=12).map(|i| ent_data(i, 2, 64)).collect());
        }
        let files = append_files(d.path());
        let newest = files.last().unwrap();
        assert_eq!(record_offsets(newest).len(), 3);
        let len = fs::metadata(newest).unwrap().len();
        // Cut into the last record (its footer), like a crash in the middle of the write.
        OpenOptions::new()
            .write(true)
            .open(newest)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let s = LogStore::open(d.path(), true).unwrap();
        assert_eq!(s.last_index().unwrap(), 8);
        assert_eq!(
            all_entries(&s),
            (1..=8).map(|i| ent_data(i, 1, 64)).collect::<Vec<_>>()
        );
        // The log continues cleanly after the cut.
        append(&s, vec![ent_data(9, 3, 64)]);
        drop(s);
        let s = LogStore::open(d.path(), true).unwrap();
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.term(9).unwrap(), 3);
    }

    /// A crash leaves raft-engine's fallocate()d zeros after the last record.
    #[test]
    fn zero_filled_tail_is_cut_silently() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            append(&s, (1..=4).map(|i| ent_data(i, 1, 64)).collect());
        }
        let newest = append_files(d.path()).pop().unwrap();
        let mut buf = fs::read(&newest).unwrap();
        buf.extend(std::iter::repeat_n(0u8, 64 * 1024));
        fs::write(&newest, buf).unwrap();
        let s = LogStore::open(d.path(), true).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(all_entries(&s).len(), 4);
    }

    /// A newest file that never got its header (crash right after creating it) is removed.
    #[test]
    fn headerless_newest_file_is_removed() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            append(&s, (1..=4).map(|i| ent_data(i, 1, 64)).collect());
        }
        let newest = append_files(d.path()).pop().unwrap();
        let seq = FileId::parse_file_name(newest.file_name().unwrap().to_str().unwrap())
            .unwrap()
            .seq;
        let next = FileId {
            queue: LogQueue::Append,
            seq: seq + 1,
        }
        .build_file_path(d.path());
        fs::write(&next, &FILE_MAGIC[..10]).unwrap();
        let s = LogStore::open(d.path(), true).unwrap();
        assert!(!next.exists());
        assert_eq!(s.last_index().unwrap(), 4);
        append(&s, vec![ent(5, 1)]);
        assert_eq!(s.term(5).unwrap(), 1);
    }

    /// raft-engine's thread-local block cache is keyed by file position only. Two fresh logs read
    /// on one thread must not see each other's entries (they did when both started at file 1).
    #[test]
    fn fresh_logs_on_one_thread_do_not_share_cached_blocks() {
        for term in 1..=3 {
            let d = tempfile::tempdir().unwrap();
            let s = LogStore::open(d.path(), false).unwrap();
            append(&s, vec![ent_data(1, term, 32), ent_data(2, term, 32)]);
            let got = all_entries(&s);
            assert_eq!(got, vec![ent_data(1, term, 32), ent_data(2, term, 32)]);
        }
    }

    /// A flipped byte in an entry body of an older file. raft-engine alone does not notice this
    /// (it only checksums entries of a file's last record); we must refuse and name the file.
    #[test]
    fn corruption_in_older_file_refuses_open() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open_tuned(d.path(), true, tiny()).unwrap();
            for b in 0..6 {
                append(
                    &s,
                    (b * 4 + 1..=b * 4 + 4)
                        .map(|i| ent_data(i, 1, 200))
                        .collect(),
                );
            }
        }
        let files = append_files(d.path());
        assert!(files.len() >= 3, "{files:?}");
        let victim = &files[0];
        let first = record_offsets(victim)[0];
        flip_byte(victim, first + RECORD_HEADER_LEN + 50);
        let err = LogStore::open_tuned(d.path(), true, tiny()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&victim.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'));
    }

    /// A flipped byte in an early record of the active file, valid records after it: not a torn
    /// tail. (raft-engine's TolerateTailCorruption would silently drop the later records.)
    #[test]
    fn corruption_mid_active_file_refuses_open() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            for b in 0..5 {
                append(
                    &s,
                    (b * 3 + 1..=b * 3 + 3)
                        .map(|i| ent_data(i, 1, 80))
                        .collect(),
                );
            }
        }
        let files = append_files(d.path());
        assert_eq!(files.len(), 1);
        let offs = record_offsets(&files[0]);
        assert_eq!(offs.len(), 5);
        // Damage the second record's footer (its item index), so only the checksum can tell.
        flip_byte(&files[0], offs[2] - 6);
        let err = LogStore::open(d.path(), true).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&files[0].display().to_string()) && msg.contains("valid record follows"),
            "{msg}"
        );
        // Nothing was truncated by the failed open.
        assert_eq!(
            fs::read(&files[0]).unwrap().len(),
            offs[4] + (offs[4] - offs[3])
        );
    }

    #[test]
    fn no_sync_writes_skip_the_fsync_but_are_durable_after_a_synced_one() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), true).unwrap();
            let hs = HardState {
                term: 3,
                ..Default::default()
            };
            s.write(LogWrite {
                hard_state: Some(hs),
                no_sync: true,
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.fsync_stats().count, 0);
            s.write(LogWrite {
                meta: Some(NodeMeta {
                    node_id: 1,
                    dbid: "x".into(),
                    removed: false,
                }),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.fsync_stats().count, 1);
        }
        let s = LogStore::open(d.path(), true).unwrap();
        assert_eq!(s.hard_state().term, 3);
    }

    #[test]
    fn fsync_counted_only_when_on() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), true).unwrap();
        for i in 1..=5 {
            append(&s, vec![ent(i, 1)]);
        }
        let st = s.fsync_stats();
        assert_eq!(st.count, 5);
        assert!(
            st.max_micros > 0 && st.total_micros >= st.max_micros,
            "{st:?}"
        );
        // An empty write does nothing at all.
        s.write(LogWrite::default()).unwrap();
        assert_eq!(s.fsync_stats().count, 5);
        s.set_fsync(false);
        append(&s, vec![ent(6, 1)]);
        assert_eq!(s.fsync_stats().count, 5);

        let d2 = tempfile::tempdir().unwrap();
        let s2 = LogStore::open(d2.path(), false).unwrap();
        for i in 1..=5 {
            s2.write(LogWrite {
                entries: vec![ent(i, 1)],
                hard_state: Some(HardState::default()),
                ..LogWrite::default()
            })
            .unwrap();
        }
        assert_eq!(s2.fsync_stats(), FsyncStats::default());
    }

    #[test]
    fn compact_drops_prefix_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let ents: Vec<Entry> = (1..=10).map(|i| ent_data(i, 1 + i / 4, 50)).collect();
        {
            let s = LogStore::open(d.path(), false).unwrap();
            append(&s, ents.clone());
            assert!(matches!(
                s.compact(11, 3).unwrap_err(),
                StorageError::Invalid(_)
            ));
            assert!(matches!(
                s.compact(5, 9).unwrap_err(),
                StorageError::Invalid(_)
            ));
            s.compact(5, 2).unwrap();
            // Compacting below the snapshot point is a no-op.
            s.compact(3, 1).unwrap();
            assert_eq!(s.snapshot_point(), (5, 2));
        }
        let s = LogStore::open(d.path(), false).unwrap();
        assert_eq!(s.snapshot_point(), (5, 2));
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.entry_count(), 5);
        assert_eq!(s.term(5).unwrap(), 2);
        assert_eq!(
            s.term(4).unwrap_err(),
            raft::Error::Store(raft::StorageError::Compacted)
        );
        assert_eq!(
            s.entries(5, 7, None, ctx()).unwrap_err(),
            raft::Error::Store(raft::StorageError::Compacted)
        );
        assert_eq!(all_entries(&s), ents[5..].to_vec());
        // Compacting everything leaves an empty log that still knows its last term.
        s.compact(10, 3).unwrap();
        assert_eq!(s.entry_count(), 0);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(10).unwrap(), 3);
        append(&s, vec![ent(11, 3)]);
        drop(s);
        let s = LogStore::open(d.path(), false).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(all_entries(&s), vec![ent(11, 3)]);
    }

    /// Mirrors MemStorage `test_storage_compact` (its `compact(i)` keeps i; ours takes i - 1).
    #[test]
    fn compact_table() {
        for (idx, want_first, want_term, want_len) in [(3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)] {
            let d = tempfile::tempdir().unwrap();
            let s = LogStore::open(d.path(), false).unwrap();
            s.reset_to_snapshot(2, 2).unwrap();
            append(&s, vec![ent(3, 3), ent(4, 4), ent(5, 5)]);
            s.compact(idx - 1, idx - 1).unwrap();
            let first = s.first_index().unwrap();
            assert_eq!(first, want_first);
            assert_eq!(
                s.entries(first, first + 1, 1, ctx()).unwrap()[0].term,
                want_term
            );
            let last = s.last_index().unwrap();
            assert_eq!(
                s.entries(first, last + 1, 100, ctx()).unwrap().len(),
                want_len
            );
        }
    }

    #[test]
    fn compact_purges_old_files() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open_tuned(d.path(), false, tiny()).unwrap();
        let mut m = Membership::default();
        m.conf_state.voters = vec![1, 2];
        m.addrs.insert(2, "10.1.1.2:6379".into());
        let meta = NodeMeta {
            node_id: 1,
            dbid: "abc".into(),
            removed: false,
        };
        // Written once, into what becomes the oldest file: purge must carry them over.
        s.write(LogWrite {
            membership: Some(m.clone()),
            meta: Some(meta.clone()),
            ..LogWrite::default()
        })
        .unwrap();
        for b in 0..20u64 {
            append(
                &s,
                (b * 4 + 1..=b * 4 + 4)
                    .map(|i| ent_data(i, 1, 200))
                    .collect(),
            );
        }
        let before = append_files(d.path()).len();
        assert!(before >= 10, "{before}");
        s.compact(78, 1).unwrap();
        let after = append_files(d.path()).len();
        assert!(after < before / 2, "{before} -> {after}");
        drop(s);
        let s = LogStore::open_tuned(d.path(), false, tiny()).unwrap();
        assert_eq!(s.snapshot_point(), (78, 1));
        assert_eq!(s.membership(), m);
        assert_eq!(s.meta(), meta);
        assert_eq!(
            all_entries(&s),
            vec![ent_data(79, 1, 200), ent_data(80, 1, 200)]
        );
    }

    #[test]
    fn reset_to_snapshot_drops_everything_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open(d.path(), false).unwrap();
            append(&s, (1..=10).map(|i| ent(i, 1)).collect());
            // Snapshot ahead of the log.
            s.reset_to_snapshot(20, 5).unwrap();
            assert_eq!(s.first_index().unwrap(), 21);
            assert_eq!(s.last_index().unwrap(), 20);
            assert_eq!(s.entry_count(), 0);
            assert_eq!(s.term(20).unwrap(), 5);
            assert_eq!(
                s.term(10).unwrap_err(),
                raft::Error::Store(raft::StorageError::Compacted)
            );
            append(&s, vec![ent(21, 5), ent(22, 6)]);
        }
        {
            let s = LogStore::open(d.path(), false).unwrap();
            assert_eq!(s.snapshot_point(), (20, 5));
            assert_eq!(all_entries(&s), vec![ent(21, 5), ent(22, 6)]);
            // Snapshot inside the log: entries above it must go too.
            append(&s, (23..=30).map(|i| ent(i, 6)).collect());
            s.reset_to_snapshot(25, 6).unwrap();
            assert_eq!(s.last_index().unwrap(), 25);
            assert_eq!(s.entry_count(), 0);
            assert_eq!(
                s.term(26).unwrap_err(),
                raft::Error::Store(raft::StorageError::Unavailable)
            );
            append(&s, vec![ent(26, 7)]);
        }
        let s = LogStore::open(d.path(), false).unwrap();
        assert_eq!(s.snapshot_point(), (25, 6));
        assert_eq!(s.first_index().unwrap(), 26);
        assert_eq!(all_entries(&s), vec![ent(26, 7)]);
        assert_eq!(s.term(25).unwrap(), 6);
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<LogStore>();
        fn err<T: std::error::Error + Send + Sync + 'static>() {}
        err::<StorageError>();
    }
}
