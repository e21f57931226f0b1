//! Snapshots as RDB files: taking one (fork + SAVE in the child), receiving
//! one from the leader in chunks, installing it, and reconciling the RDB
//! that Redis loaded at start with the Raft log.
//!
//! The dataset and "which log index it holds" travel together: the index,
//! term, membership and dbid are saved *inside* the RDB as module aux data
//! (data type `redisraft`, aux only, no keys), so no crash can separate
//! them. Only one RDB is the node's snapshot: `<dir>/<dbfilename>`, which
//! Redis loads by itself at start. Files move into place by rename after an
//! fsync, and only ever forward (a higher index replaces a lower one).

use std::ffi::c_void;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::apply;
use crate::config;
use crate::ffi::{self, RedisClient};
use crate::logging;
use crate::node::{Request, TakenSnapshot};
use crate::storage::{LogStore, LogWrite, Membership, SnapshotDescriptor};

/// Snapshots created by this node since it started.
pub static CREATED: AtomicU64 = AtomicU64::new(0);
/// Snapshots received from a leader and installed since start.
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// A fork child is writing a snapshot.
pub static IN_PROGRESS: AtomicBool = AtomicBool::new(false);
/// A snapshot was asked for and not started yet (keeps ticks from piling up requests).
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Size in bytes of the current snapshot file.
pub static SIZE: AtomicU64 = AtomicU64::new(0);

/// What an RDB written by this module says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct RdbMeta {
    pub index: u64,
    pub term: u64,
    pub dbid: String,
    pub membership: Membership,
}

/// Metadata found in the RDB that Redis loaded last (at start or by a
/// snapshot install); None if it had none.
static LOADED: Mutex<Option<RdbMeta>> = Mutex::new(None);

/// The snapshot being written by the fork child, and clients waiting for it.
struct Pending {
    meta: RdbMeta,
    tmp_dir: PathBuf,
    waiters: Vec<RedisClient>,
}
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// Serialises moving files into place; the index of the file in place.
static FILE_IN_PLACE: Mutex<u64> = Mutex::new(0);

static RDB_NAME: OnceLock<String> = OnceLock::new();

// ---------------------------------------------------------------------------
// Paths

/// Remembers `dbfilename` at load (it cannot change at run time: protected).
pub fn init(dbfilename: &str) {
    let _ = RDB_NAME.set(if dbfilename.is_empty() {
        "dump.rdb".into()
    } else {
        dbfilename.to_string()
    });
}

/// `<dir>/<dbfilename>`: Redis runs with `dir` as its working directory.
pub fn rdb_path() -> PathBuf {
    PathBuf::from(RDB_NAME.get().map_or("dump.rdb", String::as_str))
}

fn sibling(suffix: &str) -> PathBuf {
    let mut p = rdb_path().into_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

fn incoming_path() -> PathBuf {
    sibling(".incoming")
}

fn received_path(index: u64, term: u64) -> PathBuf {
    sibling(&format!(".received-{index}-{term}"))
}

fn tmp_dir() -> PathBuf {
    sibling(".snapshot-tmp")
}

fn fsync_dir_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(dir)?.sync_all()
}

/// Renames `from` over the snapshot file if `index` is newer than the file
/// there, with the fsyncs that make the rename durable. False if it was
/// older (then `from` is removed).
fn move_into_place(from: &Path, index: u64) -> std::io::Result<bool> {
    let mut in_place = FILE_IN_PLACE.lock();
    if index <= *in_place {
        let _ = fs::remove_file(from);
        return Ok(false);
    }
    File::open(from)?.sync_all()?;
    let to = rdb_path();
    fs::rename(from, &to)?;
    crate::failpoint::hit("snapshot-before-dir-fsync");
    fsync_dir_of(&to)?;
    *in_place = index;
    SIZE.store(
        fs::metadata(&to).map(|m| m.len()).unwrap_or(0),
        Ordering::Relaxed,
    );
    Ok(true)
}

/// CRC-32 and size of a whole file, read in blocks.
pub fn file_crc32(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, h.finalize()))
}

// ---------------------------------------------------------------------------
// Aux data in the RDB

/// Version 2 adds the WATCH history (`machine::watch`) after the
/// membership; version 1 (written before WATCH) still loads.
const AUX_VERSION: u64 = 2;

pub static META_TYPE: RedisType = RedisType::new("redisraft", 1, aux_only(aux_load, aux_save));

/// The methods of a module type that holds no keys and only writes aux
/// data into the RDB, before the keyspace (this metadata, and the script
/// cache in `machine::script_cache`). Version 2: aux_load, aux_save and
/// aux_save_triggers (Redis 7.0 reads these).
pub const fn aux_only(
    aux_load: unsafe extern "C" fn(*mut raw::RedisModuleIO, c_int, c_int) -> c_int,
    aux_save: unsafe extern "C" fn(*mut raw::RedisModuleIO, c_int),
) -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        version: 2,
        rdb_load: Some(never_load),
        rdb_save: Some(never_save),
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: Some(never_free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::Aux::Before as i32,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    }
}

// No keys of these types exist: the key callbacks are never called.
unsafe extern "C" fn never_load(_rdb: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    std::ptr::null_mut()
}
unsafe extern "C" fn never_save(_rdb: *mut raw::RedisModuleIO, _value: *mut c_void) {}
unsafe extern "C" fn never_free(_value: *mut c_void) {}

/// Writes the applied state (of the process doing the save: in a fork
/// child, exactly the dataset being written). Index 0 means "not a
/// snapshot" (the membership at the applied index is not known yet).
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    // A snapshot without the metadata is refused when loaded.
    crate::guard::catch("saving snapshot metadata", || save_meta(rdb, when), |_| ())
}

fn save_meta(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::Aux::Before as c_int {
        return;
    }
    let meta = apply::applied_meta();
    raw::save_unsigned(rdb, AUX_VERSION);
    match meta {
        Some(m) => {
            raw::save_unsigned(rdb, m.index);
            raw::save_unsigned(rdb, m.term);
            raw::save_slice(rdb, m.dbid.as_bytes());
            raw::save_slice(rdb, &m.membership.encode());
        }
        None => {
            raw::save_unsigned(rdb, 0);
            raw::save_unsigned(rdb, 0);
            raw::save_slice(rdb, b"");
            raw::save_slice(rdb, &Membership::default().encode());
        }
    }
    // The history of modifications at the same applied index: part of the
    // replicated state (what a watched EXEC decides from).
    raw::save_slice(rdb, &crate::machine::watch::encode_history());
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, _encver: c_int, when: c_int) -> c_int {
    crate::guard::catch(
        "loading snapshot metadata",
        || load_meta(rdb, when),
        |_| raw::REDISMODULE_ERR as c_int,
    )
}

fn load_meta(rdb: *mut raw::RedisModuleIO, when: c_int) -> c_int {
    if when != raw::Aux::Before as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    let read = || -> Result<Option<RdbMeta>, String> {
        let version = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        if version != AUX_VERSION && version != 1 {
            return Err(format!(
                "unsupported RedisRaft RDB metadata version {version}"
            ));
        }
        let index = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        let term = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        let dbid = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
        let dbid = String::from_utf8_lossy(dbid.as_ref()).into_owned();
        let m = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
        let membership = Membership::decode(m.as_ref()).map_err(|e| e.to_string())?;
        let history = if version >= 2 {
            let h = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            crate::machine::watch::History::decode(h.as_ref())
                .map_err(|e| format!("WATCH history: {e}"))?
        } else {
            // Written before WATCH: nothing is known before its index.
            crate::machine::watch::History::starting_at(index)
        };
        // The dataset being loaded replaces ours, and its history ours.
        crate::machine::watch::install_history(history);
        Ok((index > 0).then_some(RdbMeta {
            index,
            term,
            dbid,
            membership,
        }))
    };
    match read() {
        Ok(meta) => {
            *LOADED.lock() = meta;
            raw::REDISMODULE_OK as c_int
        }
        Err(e) => {
            logging::warning(&format!("cannot read RedisRaft metadata from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

/// Clears what an earlier load left, before a new load.
fn forget_loaded() {
    *LOADED.lock() = None;
}

pub fn loaded_meta() -> Option<RdbMeta> {
    LOADED.lock().clone()
}

// ---------------------------------------------------------------------------
// The RDB's own checksum (Redis's CRC-64, Jones polynomial, reflected)

fn crc64_table() -> &'static [u64; 256] {
    static T: OnceLock<[u64; 256]> = OnceLock::new();
    T.get_or_init(|| {
        const POLY: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9, bit-reversed
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *slot = c;
        }
        t
    })
}

fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    let t = crc64_table();
    for &b in data {
        crc = t[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Checks an RDB file's header and trailing CRC-64 (as Redis writes it),
/// so a damaged snapshot is refused with a clear reason before Redis tries
/// to load it. A file saved with `rdbchecksum no` (CRC 0) passes.
pub fn verify_rdb_file(path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    if len < 9 + 1 + 8 {
        return Err(format!("{} is truncated ({len} bytes)", path.display()));
    }
    let mut crc = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len - 8;
    let mut first = true;
    while left > 0 {
        let n = f
            .read(&mut buf[..(left.min(1 << 20)) as usize])
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            return Err(format!("{} is truncated", path.display()));
        }
        if first && !buf.starts_with(b"REDIS") {
            return Err(format!("{} is not an RDB file", path.display()));
        }
        first = false;
        crc = crc64(crc, &buf[..n]);
        left -= n as u64;
    }
    let mut tail = [0u8; 8];
    f.read_exact(&mut tail)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stored = u64::from_le_bytes(tail);
    if stored != 0 && stored != crc {
        return Err(format!(
            "{} is corrupt: RDB checksum {stored:016x}, computed {crc:016x}",
            path.display()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Taking a snapshot

/// Asks the main thread to take a snapshot (from the Raft thread's tick).
pub fn request() {
    if config::SNAPSHOT_DISABLE.get()
        || IN_PROGRESS.load(Ordering::Acquire)
        || REQUESTED.swap(true, Ordering::AcqRel)
    {
        return;
    }
    extern "C" fn start_cb(_: *mut c_void) {
        REQUESTED.store(false, Ordering::Release);
        crate::guard::catch(
            "starting a snapshot",
            || {
                if let Err(e) = start(None) {
                    logging::verbose(&format!("snapshot not started: {e}"));
                }
            },
            |_| (),
        )
    }
    if !ffi::run_on_main_thread(start_cb, std::ptr::null_mut()) {
        REQUESTED.store(false, Ordering::Release);
    }
}

/// Starts a snapshot of the applied dataset (main thread). `waiter` is
/// answered when the log is compacted (RAFT.DEBUG COMPACT). Ok(false): the
/// snapshot in place is already as recent as the dataset.
pub fn start(waiter: Option<RedisClient>) -> Result<bool, String> {
    if IN_PROGRESS.load(Ordering::Acquire) {
        // Join the snapshot under way.
        if let (Some(w), Some(p)) = (waiter, PENDING.lock().as_mut()) {
            p.waiters.push(w);
            return Ok(true);
        }
        return Err("a snapshot is already being taken".into());
    }
    let node = crate::driver::node().ok_or("no Raft cluster")?;
    if let Some(why) = crate::driver::failed() {
        return Err(format!("this node failed and stopped: {why}"));
    }
    let meta = apply::applied_meta().ok_or(
        "the membership at the applied index is not known yet (replaying the log); try again later",
    )?;
    if meta.index <= *FILE_IN_PLACE.lock() {
        if let Some(w) = waiter {
            // Nothing new to save; make sure the log is compacted to it.
            node.send(Request::SnapshotTaken {
                snapshot: Box::new(current_taken(&meta)?),
                clients: vec![w],
            });
        }
        return Ok(false);
    }
    let tmp = tmp_dir();
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let tmp_abs = fs::canonicalize(&tmp).map_err(|e| e.to_string())?;
    let delay = config::get(&config::SNAPSHOT_DELAY).max(0) as u64;
    let fail = config::SNAPSHOT_FAIL.get();
    let fork = unsafe { raw::RedisModule_Fork }.ok_or("RedisModule_Fork is not available")?;
    // SAFETY: called on the main thread; the done handler runs there too.
    let pid = unsafe { fork(Some(snapshot_done), std::ptr::null_mut()) };
    if pid < 0 {
        return Err("fork failed (another child, e.g. a BGSAVE, is running?)".into());
    }
    if pid == 0 {
        child_main(&tmp_abs, delay, fail);
    }
    IN_PROGRESS.store(true, Ordering::Release);
    logging::notice(&format!(
        "taking a snapshot at index {} (term {}) in child {pid}",
        meta.index, meta.term
    ));
    *PENDING.lock() = Some(Pending {
        meta,
        tmp_dir: tmp_abs,
        waiters: waiter.into_iter().collect(),
    });
    Ok(true)
}

/// The fork child: write the RDB into the temporary directory and exit.
/// Only the main thread exists here; touch nothing another thread may lock.
fn child_main(tmp: &Path, delay_ms: u64, fail: bool) -> ! {
    let exit = |code: c_int| -> ! {
        if let Some(f) = unsafe { raw::RedisModule_ExitFromChild } {
            // SAFETY: we are the module's fork child.
            unsafe { f(code) };
        }
        std::process::exit(code)
    };
    // Die with the parent: an orphaned child would keep the Raft log's
    // lock (inherited) and stop a restarted server from opening it.
    extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
        fn getppid() -> c_int;
    }
    const PR_SET_PDEATHSIG: c_int = 1;
    const SIGKILL: c_int = 9;
    // SAFETY: plain syscalls with constant arguments.
    unsafe {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if getppid() == 1 {
            exit(1);
        }
    }
    if delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(delay_ms));
    }
    if fail || std::env::set_current_dir(tmp).is_err() {
        exit(1);
    }
    match ffi::call(apply::call_ctx(), &[b"SAVE".to_vec()]) {
        Ok(r) if r.as_bytes().is_some_and(|b| b == b"OK") => exit(0),
        _ => exit(1),
    }
}

/// The fork child ended (main thread).
unsafe extern "C" fn snapshot_done(exitcode: c_int, bysignal: c_int, _: *mut c_void) {
    crate::guard::catch(
        "a finished snapshot",
        || snapshot_finished(exitcode, bysignal),
        |_| IN_PROGRESS.store(false, Ordering::Release),
    )
}

fn snapshot_finished(exitcode: c_int, bysignal: c_int) {
    let Some(p) = PENDING.lock().take() else {
        IN_PROGRESS.store(false, Ordering::Release);
        return;
    };
    let failed = crate::driver::failed();
    if exitcode != 0 || bysignal != 0 || failed.is_some() {
        IN_PROGRESS.store(false, Ordering::Release);
        let _ = fs::remove_dir_all(&p.tmp_dir);
        let why = match failed {
            // Taken before the node failed, but it goes nowhere now.
            Some(f) => format!("snapshot dropped: this node failed and stopped ({f})"),
            None => format!("snapshot child failed (exit code {exitcode}, signal {bysignal})"),
        };
        logging::warning(&why);
        for w in p.waiters {
            w.reply_error_text(&format!("ERR {why}"));
        }
        return;
    }
    // fsync, rename and CRC off the main thread.
    std::thread::spawn(move || {
        let result = finish(&p);
        IN_PROGRESS.store(false, Ordering::Release);
        let _ = fs::remove_dir_all(&p.tmp_dir);
        match result {
            Ok(Some(taken)) => {
                CREATED.fetch_add(1, Ordering::Relaxed);
                logging::notice(&format!(
                    "snapshot at index {} is in place ({} bytes)",
                    taken.index,
                    SIZE.load(Ordering::Relaxed)
                ));
                match crate::driver::node() {
                    Some(n) => n.send(Request::SnapshotTaken {
                        snapshot: Box::new(taken),
                        clients: p.waiters,
                    }),
                    None => {
                        for w in p.waiters {
                            w.reply_error_text("ERR the node stopped");
                        }
                    }
                }
            }
            Ok(None) => {
                for w in p.waiters {
                    w.reply_with(|ctx| ffi::reply_simple(ctx, "OK"));
                }
            }
            Err(e) => {
                logging::warning(&format!("snapshot failed: {e}"));
                for w in p.waiters {
                    w.reply_error_text(&format!("ERR snapshot failed: {e}"));
                }
            }
        }
    });
}

/// Moves the child's RDB into place. None if a newer snapshot got there
/// first (one received from the leader meanwhile).
fn finish(p: &Pending) -> Result<Option<TakenSnapshot>, String> {
    let written = p.tmp_dir.join(rdb_path());
    let (size, crc32) =
        file_crc32(&written).map_err(|e| format!("cannot read {}: {e}", written.display()))?;
    crate::failpoint::hit("snapshot-write");
    if !move_into_place(&written, p.meta.index)
        .map_err(|e| format!("cannot move the snapshot into place: {e}"))?
    {
        return Ok(None);
    }
    crate::failpoint::hit("snapshot-after-rename");
    set_transport_source(p.meta.index);
    Ok(Some(TakenSnapshot {
        index: p.meta.index,
        term: p.meta.term,
        membership: p.meta.membership.clone(),
        descriptor: SnapshotDescriptor {
            size,
            crc32,
            membership: p.meta.membership.clone(),
        }
        .encode(),
    }))
}

/// The snapshot in place, described for the Raft thread (when there is
/// nothing newer to save, RAFT.DEBUG COMPACT still compacts to it).
fn current_taken(applied: &RdbMeta) -> Result<TakenSnapshot, String> {
    let meta = verify_meta_of_file_in_place(applied)?;
    let (size, crc32) = file_crc32(&rdb_path()).map_err(|e| e.to_string())?;
    Ok(TakenSnapshot {
        index: meta.index,
        term: meta.term,
        membership: meta.membership.clone(),
        descriptor: SnapshotDescriptor {
            size,
            crc32,
            membership: meta.membership,
        }
        .encode(),
    })
}

/// The file in place holds the applied state when nothing was applied since.
fn verify_meta_of_file_in_place(applied: &RdbMeta) -> Result<RdbMeta, String> {
    if applied.index == *FILE_IN_PLACE.lock() {
        Ok(applied.clone())
    } else {
        Err("the snapshot in place is older than the dataset; take a new one".into())
    }
}

/// Followers are sent the file in place from now on; the transport keeps
/// it open, so a later rename over it does not disturb a transfer.
fn set_transport_source(index: u64) {
    let Some(n) = crate::driver::node() else {
        return;
    };
    match File::open(rdb_path()) {
        Ok(f) => n.transport.set_snapshot_source(index, f),
        Err(e) => logging::warning(&format!("cannot open the snapshot for sending: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Receiving a snapshot (RAFT.LOADSNAPSHOT chunks, on the main thread)

struct Incoming {
    index: u64,
    term: u64,
    total: u64,
    written: u64,
    file: File,
    crc: crc32fast::Hasher,
}
static INCOMING: Mutex<Option<Incoming>> = Mutex::new(None);

/// One chunk of the snapshot `(index, term)` of `total` bytes at `offset`.
/// A chunk at offset 0 (re)starts the file; any other must continue it
/// exactly, and its CRC must match: otherwise the sender starts over.
pub fn receive_chunk(
    index: u64,
    term: u64,
    offset: u64,
    total: u64,
    chunk_crc: u32,
    data: &[u8],
) -> Result<(), String> {
    if crc32fast::hash(data) != chunk_crc {
        return Err(format!(
            "snapshot chunk at offset {offset} fails its CRC check"
        ));
    }
    let mut inc = INCOMING.lock();
    if offset == 0 {
        let path = incoming_path();
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        *inc = Some(Incoming {
            index,
            term,
            total,
            written: 0,
            file,
            crc: crc32fast::Hasher::new(),
        });
    }
    let Some(cur) = inc.as_mut() else {
        return Err(format!(
            "unexpected snapshot chunk at offset {offset}: no transfer under way"
        ));
    };
    if (cur.index, cur.term, cur.total) != (index, term, total) || cur.written != offset {
        return Err(format!(
            "unexpected snapshot chunk at offset {offset} of snapshot {index}/{term}; expected offset {} of {}/{}",
            cur.written, cur.index, cur.term
        ));
    }
    if offset + data.len() as u64 > total {
        return Err("snapshot chunk goes past the announced size".into());
    }
    cur.file
        .write_all(data)
        .map_err(|e| format!("cannot write the incoming snapshot: {e}"))?;
    cur.crc.update(data);
    cur.written += data.len() as u64;
    if offset > 0 {
        // Mid-transfer: the chunks before this one are written too.
        crate::failpoint::hit("snapshot-receive-chunk");
    }
    Ok(())
}

/// The leader's MsgSnapshot arrived: the streamed file must be complete and
/// match the descriptor; then it is kept, durable, for the Raft thread.
pub fn accept_received(index: u64, term: u64, desc: &SnapshotDescriptor) -> Result<(), String> {
    let mut inc = INCOMING.lock();
    let Some(cur) = inc.take() else {
        return Err(format!("snapshot {index}/{term} was not received"));
    };
    let complete = (cur.index, cur.term) == (index, term)
        && cur.written == desc.size
        && cur.total == desc.size
        && cur.crc.clone().finalize() == desc.crc32;
    if !complete {
        let _ = fs::remove_file(incoming_path());
        return Err(format!(
            "snapshot {index}/{term} incomplete or damaged ({} of {} bytes); it will be resent",
            cur.written, desc.size
        ));
    }
    cur.file
        .sync_all()
        .map_err(|e| format!("cannot fsync the incoming snapshot: {e}"))?;
    drop(cur);
    fs::rename(incoming_path(), received_path(index, term))
        .map_err(|e| format!("cannot keep the received snapshot: {e}"))?;
    crate::failpoint::hit("snapshot-received");
    Ok(())
}

/// Raft thread, before the log is reset to a received snapshot: the file
/// takes its place as this node's snapshot.
pub fn persist_received(index: u64, term: u64) -> Result<(), String> {
    let path = received_path(index, term);
    match move_into_place(&path, index) {
        Ok(_) => {
            set_transport_source(index);
            Ok(())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

// ---------------------------------------------------------------------------
// Loading a snapshot into the dataset (main thread, in apply order)

/// Snapshot files loaded into the dataset (INFO `snapshots_loaded`).
pub static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replaces the dataset with the snapshot file in place. Returns the
/// metadata the loaded file carried.
pub fn load_into_dataset(ctx: *mut raw::RedisModuleCtx) -> Result<RdbMeta, String> {
    if config::SNAPSHOT_FAIL_LOAD.get() {
        return Err("refused by the test knob raft.snapshot-fail-load".into());
    }
    forget_loaded();
    let path = rdb_path();
    verify_rdb_file(&path)?;
    let loaded = if ffi::has_rdb_load() {
        ffi::rdb_load_file(ctx, &path)
    } else {
        // Redis 7.0: reload `<dir>/<dbfilename>` without saving first.
        ffi::call(
            ctx,
            &[b"DEBUG".to_vec(), b"RELOAD".to_vec(), b"NOSAVE".to_vec()],
        )
        .and_then(|r| match r.as_bytes() {
            Some(b) if b == b"OK" => Ok(()),
            _ => Err("DEBUG RELOAD NOSAVE failed; see the Redis log".into()),
        })
    };
    loaded?;
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    loaded_meta().ok_or_else(|| "the loaded snapshot carries no RedisRaft metadata".into())
}

// ---------------------------------------------------------------------------
// Start-up: the RDB Redis loaded versus the Raft log

/// Called before Redis loads the RDB: refuse a damaged snapshot file, or a
/// missing one when the log needs it.
pub fn check_before_load(store: &LogStore) -> Result<(), String> {
    let (snap_index, _) = store.snapshot_point();
    cleanup_leftovers();
    let path = rdb_path();
    if !path.exists() {
        if snap_index > 0 {
            return Err(format!(
                "the Raft log starts after a snapshot at index {snap_index}, but the snapshot file {} is missing; restore it, or remove this node's files and rejoin",
                path.display()
            ));
        }
        return Ok(());
    }
    verify_rdb_file(&path).map_err(|e| {
        format!("snapshot file unusable: {e}; restore it, or remove this node's files and rejoin")
    })
}

fn cleanup_leftovers() {
    let _ = fs::remove_file(incoming_path());
    let _ = fs::remove_dir_all(tmp_dir());
    let name = rdb_path();
    let prefix = format!("{}.received-", name.display());
    if let Ok(rd) = fs::read_dir(".") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Called after Redis loaded the RDB (if any): bring the log in line with
/// the snapshot the dataset holds, and say where applying resumes.
pub fn reconcile_at_start(store: &LogStore, dbid: &str) -> Result<(), String> {
    let (snap_index, _) = store.snapshot_point();
    let Some(meta) = loaded_meta() else {
        if snap_index > 0 {
            return Err(format!(
                "the Raft log starts after index {snap_index} but the RDB loaded holds no RedisRaft snapshot"
            ));
        }
        return Ok(());
    };
    if !meta.dbid.is_empty() && meta.dbid != dbid {
        return Err(format!(
            "the snapshot file belongs to cluster {} but the Raft log to {dbid}",
            meta.dbid
        ));
    }
    if meta.index < snap_index {
        return Err(format!(
            "the snapshot file holds index {} but the Raft log starts after {snap_index}: entries in between are missing",
            meta.index
        ));
    }
    let mut hs = store.hard_state();
    if meta.index > snap_index {
        // A snapshot made durable just before a crash: the log catches up.
        let term_there = raft::Storage::term(store, meta.index).ok();
        if term_there == Some(meta.term) {
            // One record: the compaction and the commit index that covers
            // it (as two, a crash between them left a log that raft-rs
            // refuses on every start).
            crate::failpoint::hit("startup-between-compact-and-commit");
            hs.commit = hs.commit.max(meta.index);
            store
                .compact_and_commit(meta.index, meta.term, hs)
                .map_err(|e| e.to_string())?;
        } else {
            // Our log disagrees with the snapshot at its index (or ends
            // before it): everything it holds from there on is another
            // history, its membership included; the snapshot's is the truth.
            hs.commit = hs.commit.max(meta.index);
            store
                .install_snapshot(meta.index, meta.term, meta.membership.clone(), hs)
                .map_err(|e| e.to_string())?;
        }
    }
    // A log left by an older build that wrote the two separately and
    // crashed in between: everything up to the snapshot point is committed
    // (a snapshot holds only committed entries), so say so.
    let (snap_index, _) = store.snapshot_point();
    let mut hs = store.hard_state();
    if hs.commit < snap_index {
        logging::warning(&format!(
            "the durable commit index {} is below the log's snapshot point {snap_index}; raising it",
            hs.commit
        ));
        hs.commit = snap_index;
        store
            .write(LogWrite {
                hard_state: Some(hs),
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
    }
    let path = rdb_path();
    let (size, crc32) = file_crc32(&path).map_err(|e| e.to_string())?;
    SIZE.store(size, Ordering::Relaxed);
    *FILE_IN_PLACE.lock() = meta.index;
    let mut snap = raft::eraftpb::Snapshot::default();
    snap.mut_metadata().index = meta.index;
    snap.mut_metadata().term = meta.term;
    snap.mut_metadata()
        .set_conf_state(meta.membership.conf_state.clone());
    snap.data = SnapshotDescriptor {
        size,
        crc32,
        membership: meta.membership.clone(),
    }
    .encode()
    .into();
    store.set_snapshot(Some(snap));
    apply::resume_from_snapshot(&meta);
    logging::notice(&format!(
        "dataset loaded from the snapshot at index {} (term {}); the log resumes after it",
        meta.index, meta.term
    ));
    Ok(())
}

/// After the node started: followers can be sent the file in place.
pub fn publish_source_at_start() {
    let index = *FILE_IN_PLACE.lock();
    if index > 0 {
        set_transport_source(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_redis_test_vector() {
        // Redis's crc64 self-test: "123456789" -> e9c6d914c4b8d9ca.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn verify_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.rdb");
        let mut body = b"REDIS0010".to_vec();
        body.extend_from_slice(&[0xfe, 0x00, 0xff]);
        let crc = crc64(0, &body);
        let mut good = body.clone();
        good.extend_from_slice(&crc.to_le_bytes());
        fs::write(&p, &good).unwrap();
        verify_rdb_file(&p).unwrap();
        let mut bad = good.clone();
        bad[10] ^= 1;
        fs::write(&p, &bad).unwrap();
        assert!(verify_rdb_file(&p).unwrap_err().contains("corrupt"));
        fs::write(&p, &good[..8]).unwrap();
        assert!(verify_rdb_file(&p).unwrap_err().contains("truncated"));
    }
}
