//! Every raw Redis module API call the module makes that the redis-module
//! crate does not wrap, in one place. Each `unsafe` block says why it holds.

// Context pointers passed in here always come from Redis (a command, filter,
// blocked-client or detached context), as in the redis-module crate itself.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};
use std::ptr;

use redis_module::raw;

use crate::error::Error;
use crate::node::{Client, Reply};

/// Panics with a clear message if Redis lacks an API we rely on (never on
/// Redis >= 7.0, which we check at load).
macro_rules! api {
    ($name:ident) => {
        // SAFETY: the function pointers are set once by RedisModule_Init
        // before any of our code runs and never change afterwards.
        {
            #[allow(unused_unsafe)]
            let f = unsafe { raw::$name.expect(concat!(stringify!($name), " is not available")) };
            f
        }
    };
}

/// Writes one line to the Redis log. Safe from any thread (RM_Log with a
/// NULL context only formats and appends to the log file).
pub fn log(level: &str, msg: &str) {
    let Some(f) = (unsafe { raw::RedisModule_Log }) else {
        eprintln!("[{level}] {msg}");
        return;
    };
    let level = CString::new(level).unwrap_or_default();
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid NUL-terminated strings; "%s" so '%' in msg is literal.
    unsafe {
        f(
            ptr::null_mut(),
            level.as_ptr(),
            c"%s".as_ptr(),
            msg.as_ptr(),
        )
    };
}

/// A context for calls the module makes on its own behalf (applying
/// entries). Detached, so our command filter (NOSELF) skips its calls.
pub struct CallContext(*mut raw::RedisModuleCtx);

// SAFETY: used only on the main thread (one-shot callbacks); the pointer is
// just carried across threads in a static.
unsafe impl Send for CallContext {}
unsafe impl Sync for CallContext {}

impl CallContext {
    pub fn new(ctx: *mut raw::RedisModuleCtx) -> CallContext {
        // SAFETY: ctx is the module's load context.
        CallContext(unsafe { api!(RedisModule_GetDetachedThreadSafeContext)(ctx) })
    }
    pub fn ptr(&self) -> *mut raw::RedisModuleCtx {
        self.0
    }
}

/// The owned reply of an RM_Call.
pub struct CallReply(*mut raw::RedisModuleCallReply);

// SAFETY: made and read on the main thread only; Send lets it travel inside
// a blocked client's answer, which Redis runs on the main thread.
unsafe impl Send for CallReply {}

impl Drop for CallReply {
    fn drop(&mut self) {
        // SAFETY: we own the reply and free it once.
        unsafe { api!(RedisModule_FreeCallReply)(self.0) };
    }
}

impl CallReply {
    /// The reply as text when it is a string, status or error.
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        let mut len = 0usize;
        // SAFETY: the reply is valid; the pointer it returns lives as long as it.
        let p = unsafe { api!(RedisModule_CallReplyStringPtr)(self.0, &mut len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: Redis returned a pointer to len bytes.
        Some(unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec())
    }

    pub fn as_integer(&self) -> Option<i64> {
        // SAFETY: valid reply.
        let t = unsafe { api!(RedisModule_CallReplyType)(self.0) };
        if t == raw::REDISMODULE_REPLY_INTEGER as c_int {
            // SAFETY: valid integer reply.
            Some(unsafe { api!(RedisModule_CallReplyInteger)(self.0) })
        } else {
            None
        }
    }
}

/// Runs a command through RM_Call on `ctx`. A failure to run it at all
/// (unknown command, wrong arity, ...) comes back as an error text.
pub fn call(ctx: *mut raw::RedisModuleCtx, argv: &[Vec<u8>]) -> Result<CallReply, String> {
    let (name, args) = argv.split_first().ok_or("empty command")?;
    let cname = CString::new(name.clone()).map_err(|_| "command name contains NUL")?;
    let create = api!(RedisModule_CreateString);
    let free = api!(RedisModule_FreeString);
    // SAFETY: each string is created from a valid slice and freed below.
    let mut strs: Vec<*mut raw::RedisModuleString> = args
        .iter()
        .map(|a| unsafe { create(ctx, a.as_ptr() as *const c_char, a.len()) })
        .collect();
    let rm_call = api!(RedisModule_Call);
    // SAFETY: "v" takes (RedisModuleString **argv, size_t argc); argv is
    // valid for the call. No "!": the module does its own replication.
    let reply = unsafe {
        rm_call(
            ctx,
            cname.as_ptr(),
            c"v".as_ptr(),
            strs.as_mut_ptr(),
            strs.len(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    for s in strs {
        // SAFETY: created above, not retained by RM_Call.
        unsafe { free(ctx, s) };
    }
    if reply.is_null() {
        let name = String::from_utf8_lossy(name);
        return Err(match errno {
            libc_errno::ENOENT => format!("ERR unknown command '{name}'"),
            libc_errno::EINVAL => format!("ERR wrong number of arguments for '{name}' command"),
            libc_errno::EPERM => format!("ERR '{name}' is not allowed here"),
            libc_errno::ENOSPC => {
                "OOM command not allowed when used memory > 'maxmemory'".to_string()
            }
            _ => format!("ERR '{name}' could not be executed (errno {errno})"),
        });
    }
    Ok(CallReply(reply))
}

/// errno values RM_Call reports (Linux).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EPERM: i32 = 1;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
}

/// Context flags of the client currently running a command.
pub fn context_flags(ctx: *mut raw::RedisModuleCtx) -> u32 {
    // SAFETY: ctx is a valid command context or NULL (allowed).
    unsafe { api!(RedisModule_GetContextFlags)(ctx) as u32 }
}

/// Whether a client in this context may be blocked (not inside MULTI, a
/// script, or another context that denies blocking).
pub fn can_block(ctx: *mut raw::RedisModuleCtx) -> bool {
    let f = context_flags(ctx);
    let deny = raw::REDISMODULE_CTX_FLAGS_MULTI
        | raw::REDISMODULE_CTX_FLAGS_LUA
        | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    f & deny == 0
}

/// A blocked Redis client waiting for the Raft thread or the apply step.
/// It must be answered exactly once; if dropped unanswered (a bug or a
/// shutdown) it gets an error saying the outcome is unknown.
pub struct RedisClient {
    bc: *mut raw::RedisModuleBlockedClient,
}

// SAFETY: a blocked client handle may be unblocked from any thread, which is
// all we do with it off the main thread.
unsafe impl Send for RedisClient {}

/// How a blocked client is to be answered: run by Redis on the main thread,
/// with the client's own context, when it unblocks the client.
type Answer = Box<dyn FnOnce(*mut raw::RedisModuleCtx) + Send>;

/// Redis's reply callback of our blocked clients: writes the answer given
/// to UnblockClient straight into the client (no temporary client, no
/// second copy of the reply, as a thread-safe context would need).
unsafe extern "C" fn write_answer(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: ctx is the reply context Redis made for our blocked client;
    // its private data is the Answer box `answer` passed to UnblockClient.
    let pd = unsafe { api!(RedisModule_GetBlockedClientPrivateData)(ctx) as *mut Answer };
    if !pd.is_null() {
        // Leave a no-op behind (no allocation): free_answer frees the box.
        // SAFETY: as above; only the main thread touches it now.
        let f = unsafe { std::mem::replace(&mut *pd, Box::new(|_| {})) };
        crate::guard::catch(
            "answering a client",
            || f(ctx),
            |why| reply_error(ctx, &format!("ERR {why}")),
        );
    }
    raw::REDISMODULE_OK as c_int
}

/// Frees the answer, whether or not it was written (the client may have
/// disconnected meanwhile).
unsafe extern "C" fn free_answer(_ctx: *mut raw::RedisModuleCtx, pd: *mut c_void) {
    if !pd.is_null() {
        // SAFETY: pd is the box `answer` leaked into UnblockClient.
        drop(unsafe { Box::from_raw(pd as *mut Answer) });
    }
}

impl RedisClient {
    /// Blocks the client of `ctx` with no timeout (the answer comes when the
    /// entry commits, or an error when that becomes impossible).
    pub fn block(ctx: *mut raw::RedisModuleCtx) -> Result<RedisClient, Error> {
        if !can_block(ctx) {
            return Err(Error::Unsupported(
                "this command cannot run inside MULTI, a script or a non-blocking context".into(),
            ));
        }
        // SAFETY: ctx is the current command's context; the callbacks
        // match the signatures Redis calls them with.
        let bc = unsafe {
            api!(RedisModule_BlockClient)(ctx, Some(write_answer), None, Some(free_answer), 0)
        };
        if bc.is_null() {
            return Err(Error::Other("could not block the client".into()));
        }
        Ok(RedisClient { bc })
    }

    fn answer(mut self, f: Answer) {
        let bc = std::mem::replace(&mut self.bc, ptr::null_mut());
        let pd = Box::into_raw(Box::new(f));
        // SAFETY: bc is a live blocked client we own; Redis hands pd to
        // write_answer and then to free_answer.
        unsafe { api!(RedisModule_UnblockClient)(bc, pd as *mut c_void) };
    }

    /// Answers with a command's own reply, verbatim.
    pub fn reply_call(self, reply: CallReply) {
        self.answer(Box::new(move |ctx| reply_call(ctx, &reply)));
    }

    pub fn reply_error_text(self, text: &str) {
        let text = text.to_string();
        self.answer(Box::new(move |ctx| reply_error(ctx, &text)));
    }

    pub fn reply_with(self, f: impl FnOnce(*mut raw::RedisModuleCtx) + Send + 'static) {
        self.answer(Box::new(f));
    }
}

impl Client for RedisClient {
    fn reply(self, r: Reply) {
        match r {
            Reply::Ok => self.answer(Box::new(|ctx| reply_simple(ctx, "OK"))),
            Reply::Error(e) => self.reply_error_text(&e.to_string()),
        }
    }
}

impl Drop for RedisClient {
    fn drop(&mut self) {
        if !self.bc.is_null() {
            let me = RedisClient {
                bc: std::mem::replace(&mut self.bc, ptr::null_mut()),
            };
            me.reply_error_text("TIMEOUT request abandoned; it may or may not have been applied");
        }
    }
}

pub fn reply_error(ctx: *mut raw::RedisModuleCtx, text: &str) {
    let s = CString::new(text.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid context and string.
    unsafe { api!(RedisModule_ReplyWithError)(ctx, s.as_ptr()) };
}

pub fn reply_simple(ctx: *mut raw::RedisModuleCtx, text: &str) {
    let s = CString::new(text.replace(['\r', '\n', '\0'], " ")).unwrap_or_default();
    // SAFETY: valid context and string.
    unsafe { api!(RedisModule_ReplyWithSimpleString)(ctx, s.as_ptr()) };
}

pub fn reply_bulk(ctx: *mut raw::RedisModuleCtx, b: &[u8]) {
    // SAFETY: valid context and buffer.
    unsafe { api!(RedisModule_ReplyWithStringBuffer)(ctx, b.as_ptr() as *const c_char, b.len()) };
}

pub fn reply_integer(ctx: *mut raw::RedisModuleCtx, n: i64) {
    // SAFETY: valid context.
    unsafe { api!(RedisModule_ReplyWithLongLong)(ctx, n) };
}

pub fn reply_null(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: valid context.
    unsafe { api!(RedisModule_ReplyWithNull)(ctx) };
}

pub fn reply_array(ctx: *mut raw::RedisModuleCtx, len: usize) {
    // SAFETY: valid context; the caller adds len elements.
    unsafe { api!(RedisModule_ReplyWithArray)(ctx, len as _) };
}

pub fn reply_call(ctx: *mut raw::RedisModuleCtx, reply: &CallReply) {
    // SAFETY: valid context and reply.
    unsafe { api!(RedisModule_ReplyWithCallReply)(ctx, reply.0) };
}

/// Schedules `f(data)` on Redis's main thread, from any thread.
pub fn run_on_main_thread(f: extern "C" fn(*mut c_void), data: *mut c_void) -> bool {
    // SAFETY: EventLoopAddOneShot is thread-safe (Redis >= 7.0) and calls f
    // once from the event loop.
    unsafe { api!(RedisModule_EventLoopAddOneShot)(Some(f), data) == raw::REDISMODULE_OK as c_int }
}

/// The command filter callback type.
pub type FilterFn = extern "C" fn(*mut raw::RedisModuleCommandFilterCtx);

/// Registers the command filter; NOSELF so our own calls are not filtered.
pub fn register_filter(ctx: *mut raw::RedisModuleCtx, f: FilterFn) -> bool {
    // SAFETY: called once at load with the load context.
    let h = unsafe {
        api!(RedisModule_RegisterCommandFilter)(
            ctx,
            Some(f),
            raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
        )
    };
    !h.is_null()
}

pub fn filter_argc(fctx: *mut raw::RedisModuleCommandFilterCtx) -> usize {
    // SAFETY: fctx is the live filter context.
    unsafe { api!(RedisModule_CommandFilterArgsCount)(fctx) as usize }
}

/// Argument `i` of the filtered command, borrowed for the filter's duration.
pub fn filter_arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, i: usize) -> &'a [u8] {
    // SAFETY: i < argc (callers check); the string outlives the filter call.
    unsafe {
        let s = api!(RedisModule_CommandFilterArgGet)(fctx, i as c_int);
        if s.is_null() {
            return &[];
        }
        let mut len = 0usize;
        let p = api!(RedisModule_StringPtrLen)(s, &mut len);
        std::slice::from_raw_parts(p as *const u8, len)
    }
}

/// Inserts `arg` before argument `pos` of the filtered command.
pub fn filter_insert(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: usize, arg: &[u8]) {
    // SAFETY: the filter takes ownership of a string created with a NULL ctx.
    unsafe {
        let s = api!(RedisModule_CreateString)(
            ptr::null_mut(),
            arg.as_ptr() as *const c_char,
            arg.len(),
        );
        api!(RedisModule_CommandFilterArgInsert)(fctx, pos as c_int, s);
    }
}

/// Whether this Redis offers RM_RdbLoad (7.2+); detected at run time.
pub fn has_rdb_load() -> bool {
    // SAFETY: reading a function pointer set at init.
    let f = unsafe { raw::RedisModule_RdbLoad };
    f.is_some()
}

/// Loads an RDB file into the dataset with RM_RdbLoad (Redis 7.2+),
/// replacing what is there.
pub fn rdb_load_file(ctx: *mut raw::RedisModuleCtx, path: &std::path::Path) -> Result<(), String> {
    // SAFETY: reading function pointers set at init.
    let (create, load, free) = unsafe {
        (
            raw::RedisModule_RdbStreamCreateFromFile,
            raw::RedisModule_RdbLoad,
            raw::RedisModule_RdbStreamFree,
        )
    };
    let (Some(create), Some(load), Some(free)) = (create, load, free) else {
        return Err("RedisModule_RdbLoad is not available".into());
    };
    let name =
        CString::new(path.to_string_lossy().into_owned()).map_err(|_| "path contains NUL")?;
    // SAFETY: valid NUL-terminated file name; the stream is freed below.
    let stream = unsafe { create(name.as_ptr()) };
    if stream.is_null() {
        return Err(format!("cannot open {} as an RDB stream", path.display()));
    }
    // SAFETY: ctx is a valid context on the main thread; stream is live.
    let rc = unsafe { load(ctx, stream, 0) };
    // SAFETY: created above, not used afterwards.
    unsafe { free(stream) };
    if rc == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err("RedisModule_RdbLoad failed; see the Redis log".into())
    }
}

/// The id of the client running the current command.
pub fn client_id(ctx: *mut raw::RedisModuleCtx) -> u64 {
    // SAFETY: ctx is a command context.
    unsafe { api!(RedisModule_GetClientId)(ctx) }
}
