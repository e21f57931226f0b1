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

    /// The reply as a list of strings, when it is an array of strings
    /// (SMEMBERS, HKEYS, KEYS, ...). An element of another type: None.
    pub fn as_strings(&self) -> Option<Vec<Vec<u8>>> {
        strings_of(self.0)
    }

    /// A SCAN-family reply: the cursor and the elements of the page.
    pub fn as_scan_page(&self) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
        // SAFETY: valid reply; elements live as long as it.
        unsafe {
            if api!(RedisModule_CallReplyType)(self.0) != raw::REDISMODULE_REPLY_ARRAY as c_int
                || api!(RedisModule_CallReplyLength)(self.0) != 2
            {
                return None;
            }
            let cursor = string_of(api!(RedisModule_CallReplyArrayElement)(self.0, 0))?;
            let items = strings_of(api!(RedisModule_CallReplyArrayElement)(self.0, 1))?;
            Some((cursor, items))
        }
    }

    /// Whether Redis answered nil (a null bulk string or null array).
    pub fn is_null(&self) -> bool {
        // SAFETY: valid reply.
        unsafe { api!(RedisModule_CallReplyType)(self.0) == raw::REDISMODULE_REPLY_NULL as c_int }
    }

    /// Whether Redis answered with an error.
    pub fn is_error(&self) -> bool {
        // SAFETY: valid reply.
        unsafe { api!(RedisModule_CallReplyType)(self.0) == raw::REDISMODULE_REPLY_ERROR as c_int }
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

/// A reply as a tree, for replies the module reads into or rewrites
/// (XREADGROUP's deliveries, XINFO STREAM FULL's delivery times). Status
/// strings read as bulk strings; booleans, doubles, big numbers, verbatim
/// strings and attributes are not read (None).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bulk(Vec<u8>),
    Integer(i64),
    Null,
    Error(String),
    Array(Vec<Value>),
    Set(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The value of field `name` of a RESP2 field-value array or a RESP3 map.
    pub fn field(&self, name: &[u8]) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.bytes() == Some(name))
                .map(|(_, v)| v),
            Value::Array(items) => items
                .chunks(2)
                .find(|kv| kv.len() == 2 && kv[0].bytes() == Some(name))
                .map(|kv| &kv[1]),
            _ => None,
        }
    }

    /// As [`field`](Value::field), to change it.
    pub fn field_mut(&mut self, name: &[u8]) -> Option<&mut Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter_mut()
                .find(|(k, _)| k.bytes() == Some(name))
                .map(|(_, v)| v),
            Value::Array(items) => items
                .chunks_mut(2)
                .find(|kv| kv.len() == 2 && kv[0].bytes() == Some(name))
                .map(|kv| &mut kv[1]),
            _ => None,
        }
    }

    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    pub fn integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array or set.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn items_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::Array(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Writes it as a reply, in the protocol of the client of `ctx`.
    pub fn write(&self, ctx: *mut raw::RedisModuleCtx) {
        match self {
            Value::Bulk(b) => reply_bulk(ctx, b),
            Value::Integer(n) => reply_integer(ctx, *n),
            Value::Null => reply_null(ctx),
            Value::Error(e) => reply_error(ctx, e),
            Value::Array(items) => {
                reply_array(ctx, items.len());
                items.iter().for_each(|v| v.write(ctx));
            }
            Value::Set(items) => {
                reply_set(ctx, items.len());
                items.iter().for_each(|v| v.write(ctx));
            }
            Value::Map(pairs) => {
                reply_map(ctx, pairs.len());
                for (k, v) in pairs {
                    k.write(ctx);
                    v.write(ctx);
                }
            }
        }
    }
}

impl CallReply {
    /// The reply as a [`Value`] tree; None if it holds a kind the tree
    /// does not read.
    pub fn to_value(&self) -> Option<Value> {
        value_of(self.0)
    }
}

fn value_of(r: *mut raw::RedisModuleCallReply) -> Option<Value> {
    if r.is_null() {
        return None;
    }
    // SAFETY: r is a live reply; its elements live as long as it.
    unsafe {
        let t = api!(RedisModule_CallReplyType)(r) as isize;
        let n = || api!(RedisModule_CallReplyLength)(r);
        Some(match t {
            raw::REDISMODULE_REPLY_STRING => Value::Bulk(string_of(r)?),
            raw::REDISMODULE_REPLY_ERROR => {
                let mut len = 0usize;
                let p = api!(RedisModule_CallReplyStringPtr)(r, &mut len);
                let b = if p.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p as *const u8, len)
                };
                Value::Error(String::from_utf8_lossy(b).into_owned())
            }
            raw::REDISMODULE_REPLY_INTEGER => Value::Integer(api!(RedisModule_CallReplyInteger)(r)),
            raw::REDISMODULE_REPLY_NULL => Value::Null,
            raw::REDISMODULE_REPLY_ARRAY => Value::Array(
                (0..n())
                    .map(|i| value_of(api!(RedisModule_CallReplyArrayElement)(r, i)))
                    .collect::<Option<_>>()?,
            ),
            raw::REDISMODULE_REPLY_SET => Value::Set(
                (0..n())
                    .map(|i| value_of(api!(RedisModule_CallReplySetElement)(r, i)))
                    .collect::<Option<_>>()?,
            ),
            raw::REDISMODULE_REPLY_MAP => {
                let mut pairs = Vec::with_capacity(n());
                for i in 0..n() {
                    let (mut k, mut v) = (ptr::null_mut(), ptr::null_mut());
                    if api!(RedisModule_CallReplyMapElement)(r, i, &mut k, &mut v)
                        != raw::REDISMODULE_OK as c_int
                    {
                        return None;
                    }
                    pairs.push((value_of(k)?, value_of(v)?));
                }
                Value::Map(pairs)
            }
            _ => return None,
        })
    }
}

fn string_of(r: *mut raw::RedisModuleCallReply) -> Option<Vec<u8>> {
    if r.is_null() {
        return None;
    }
    // SAFETY: r is a live reply element.
    unsafe {
        if api!(RedisModule_CallReplyType)(r) != raw::REDISMODULE_REPLY_STRING as c_int {
            return None;
        }
        let mut len = 0usize;
        let p = api!(RedisModule_CallReplyStringPtr)(r, &mut len);
        if p.is_null() {
            return Some(Vec::new());
        }
        Some(std::slice::from_raw_parts(p as *const u8, len).to_vec())
    }
}

fn strings_of(r: *mut raw::RedisModuleCallReply) -> Option<Vec<Vec<u8>>> {
    // SAFETY: r is a live reply; its elements live as long as it.
    unsafe {
        let t = api!(RedisModule_CallReplyType)(r);
        if t != raw::REDISMODULE_REPLY_ARRAY as c_int && t != raw::REDISMODULE_REPLY_SET as c_int {
            return None;
        }
        let n = api!(RedisModule_CallReplyLength)(r);
        (0..n)
            .map(|i| string_of(api!(RedisModule_CallReplyArrayElement)(r, i)))
            .collect()
    }
}

thread_local! {
    /// How deep the module is in its own RM_Calls (main thread): the
    /// command filter leaves the module's own calls alone.
    static OWN_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// True while a command the module itself runs is executing.
pub fn in_own_call() -> bool {
    OWN_CALLS.with(|c| c.get() > 0)
}

/// Whether a script (Lua or a function) is running now.
pub fn in_script() -> bool {
    // SAFETY: a NULL context is allowed: it reports the server's state.
    let f = unsafe { api!(RedisModule_GetContextFlags)(ptr::null_mut()) as u32 };
    f & raw::REDISMODULE_CTX_FLAGS_LUA != 0
}

/// Runs a command through RM_Call on `ctx`, its reply in RESP2. A failure
/// to run it at all (unknown command, wrong arity, ...) comes back as an
/// error text.
pub fn call(ctx: *mut raw::RedisModuleCtx, argv: &[Vec<u8>]) -> Result<CallReply, String> {
    call_in(ctx, argv, false)
}

/// As [`call`], the reply in RESP3 when `resp3` (RM_Call's "3" flag: the
/// command runs for a RESP3 client and answers as Redis answers one).
pub fn call_in(
    ctx: *mut raw::RedisModuleCtx,
    argv: &[Vec<u8>],
    resp3: bool,
) -> Result<CallReply, String> {
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
    OWN_CALLS.with(|c| c.set(c.get() + 1));
    let format = if resp3 { c"v3" } else { c"v" };
    // SAFETY: "v" takes (RedisModuleString **argv, size_t argc); argv is
    // valid for the call. No "!": the module does its own replication.
    let reply = unsafe {
        rm_call(
            ctx,
            cname.as_ptr(),
            format.as_ptr(),
            strs.as_mut_ptr(),
            strs.len(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    OWN_CALLS.with(|c| c.set(c.get() - 1));
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

/// Whether the client running the current command speaks RESP3 (HELLO 3).
pub fn is_resp3(ctx: *mut raw::RedisModuleCtx) -> bool {
    !ctx.is_null() && context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_RESP3 != 0
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
    /// The client spoke RESP3 when it was blocked: its reply, written
    /// later, must be RESP3 too.
    resp3: bool,
    /// Non-zero for a client waiting in a blocking command (`blocking`):
    /// an error answer to it is reported to the tag hook.
    tag: u64,
}

/// Called on the main thread with the tag of a tagged client that was
/// answered with an error by anyone (the Raft thread refusing or losing
/// its entry), when that answer is written or dropped.
static TAG_HOOK: std::sync::OnceLock<fn(u64)> = std::sync::OnceLock::new();

/// Sets the tag hook (once, at load).
pub fn set_tag_hook(f: fn(u64)) {
    let _ = TAG_HOOK.set(f);
}

/// Reports a tag to the hook when dropped (with the answer that carries it).
struct TagReport(u64);

impl Drop for TagReport {
    fn drop(&mut self) {
        if let Some(f) = TAG_HOOK.get() {
            let tag = self.0;
            crate::guard::catch("a blocking client's error", || f(tag), |_| ());
        }
    }
}

/// The disconnect callback type of a blocked client.
pub type DisconnectFn =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut raw::RedisModuleBlockedClient);

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
        Ok(RedisClient {
            bc,
            resp3: is_resp3(ctx),
            tag: 0,
        })
    }

    /// Whether the client expects RESP3 replies.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// The tag (0: none).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    pub fn set_tag(&mut self, tag: u64) {
        self.tag = tag;
    }

    /// Calls `f` if the client disconnects while it is blocked (on the
    /// main thread, with a context whose client is this one).
    pub fn on_disconnect(&self, f: DisconnectFn) {
        // SAFETY: bc is a live blocked client we own; f matches Redis's
        // RedisModuleDisconnectFunc.
        unsafe { api!(RedisModule_SetDisconnectCallback)(self.bc, Some(f)) };
    }

    /// Releases a client that disconnected: nothing is written.
    pub fn release(self) {
        self.answer(Box::new(|_| {}));
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
        let report = (self.tag != 0).then_some(TagReport(self.tag));
        self.answer(Box::new(move |ctx| {
            let _report = report;
            reply_error(ctx, &text)
        }));
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
                resp3: self.resp3,
                tag: self.tag,
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

/// A null array (what EXEC answers when a watched key was modified).
pub fn reply_null_array(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: valid context.
    unsafe { api!(RedisModule_ReplyWithNullArray)(ctx) };
}

pub fn reply_array(ctx: *mut raw::RedisModuleCtx, len: usize) {
    // SAFETY: valid context; the caller adds len elements.
    unsafe { api!(RedisModule_ReplyWithArray)(ctx, len as _) };
}

/// A set of `len` elements (RESP3 `~`; an array for a RESP2 client).
pub fn reply_set(ctx: *mut raw::RedisModuleCtx, len: usize) {
    // SAFETY: valid context; the caller adds len elements.
    unsafe { api!(RedisModule_ReplyWithSet)(ctx, len as _) };
}

/// A map of `len` pairs (RESP3 `%`; a flat array of 2*len for RESP2).
pub fn reply_map(ctx: *mut raw::RedisModuleCtx, len: usize) {
    // SAFETY: valid context; the caller adds 2*len elements.
    unsafe { api!(RedisModule_ReplyWithMap)(ctx, len as _) };
}

pub fn reply_bulks(ctx: *mut raw::RedisModuleCtx, items: &[Vec<u8>]) {
    reply_array(ctx, items.len());
    for i in items {
        reply_bulk(ctx, i);
    }
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

/// Registers the command filter. Not NOSELF: the commands a script runs
/// inside an entry the module applies must reach the filter too (it tells
/// the module's own calls apart with `in_own_call`).
pub fn register_filter(ctx: *mut raw::RedisModuleCtx, f: FilterFn) -> bool {
    // SAFETY: called once at load with the load context.
    let h = unsafe { api!(RedisModule_RegisterCommandFilter)(ctx, Some(f), 0) };
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

/// The client whose command the filter sees (Redis 7.2+; None on 7.0,
/// whose filter API does not tell).
pub fn filter_client_id(fctx: *mut raw::RedisModuleCommandFilterCtx) -> Option<u64> {
    // SAFETY: the pointer is set by RedisModule_Init when the server has
    // the API; fctx is the filter context Redis passed in.
    unsafe { raw::RedisModule_CommandFilterGetClientId }.map(|f| unsafe { f(fctx) })
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

/// A Redis string made from bytes, freed on drop (NULL context: not
/// auto-memory, so it may outlive the call that made it).
struct OwnedString(*mut raw::RedisModuleString);

impl OwnedString {
    fn new(b: &[u8]) -> OwnedString {
        // SAFETY: a valid slice; a NULL context is allowed for CreateString.
        OwnedString(unsafe {
            api!(RedisModule_CreateString)(ptr::null_mut(), b.as_ptr() as *const c_char, b.len())
        })
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        // SAFETY: created with a NULL context above, freed once.
        unsafe { api!(RedisModule_FreeString)(ptr::null_mut(), self.0) };
    }
}

fn string_bytes(s: *mut raw::RedisModuleString) -> Vec<u8> {
    let mut len = 0usize;
    // SAFETY: s is a live string given to us by Redis.
    let p = unsafe { api!(RedisModule_StringPtrLen)(s, &mut len) };
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: Redis returned a pointer to len bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec()
}

/// The keys a command names, as Redis's own key specs find them (none for
/// an unknown command, a wrong arity, or a command without keys).
pub fn command_keys(ctx: *mut raw::RedisModuleCtx, argv: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if argv.len() < 2 {
        return Vec::new();
    }
    let strs: Vec<OwnedString> = argv.iter().map(|a| OwnedString::new(a)).collect();
    let mut ptrs: Vec<*mut raw::RedisModuleString> = strs.iter().map(|s| s.0).collect();
    let mut n: c_int = 0;
    // SAFETY: ptrs holds argc live strings; the result is freed with RM_Free.
    let pos = unsafe {
        api!(RedisModule_GetCommandKeys)(ctx, ptrs.as_mut_ptr(), ptrs.len() as c_int, &mut n)
    };
    if pos.is_null() {
        return Vec::new();
    }
    // SAFETY: Redis returned n key positions.
    let positions = unsafe { std::slice::from_raw_parts(pos, n.max(0) as usize) };
    let keys = positions
        .iter()
        .filter_map(|&i| argv.get(i as usize).cloned())
        .collect();
    // SAFETY: allocated by Redis for us.
    unsafe { api!(RedisModule_Free)(pos as *mut c_void) };
    keys
}

/// What the dataset holds for a key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyExpiry {
    Missing,
    Persistent,
    /// The stored absolute expire time (Unix ms, as Redis holds it).
    At(i64),
}

/// A key's stored expire time. The lookup does not touch the key's access
/// time; stored times are never reached by the clock, so it expires nothing.
pub fn key_expiry(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> KeyExpiry {
    let name = OwnedString::new(key);
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int;
    // SAFETY: main thread, valid context and name; the key is closed below.
    unsafe {
        let k = api!(RedisModule_OpenKey)(ctx, name.0, mode);
        if k.is_null() {
            return KeyExpiry::Missing;
        }
        let t = if api!(RedisModule_KeyType)(k) == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
            KeyExpiry::Missing
        } else {
            match api!(RedisModule_GetAbsExpire)(k) {
                t if t < 0 => KeyExpiry::Persistent,
                t => KeyExpiry::At(t),
            }
        };
        api!(RedisModule_CloseKey)(k);
        t
    }
}

/// Deletes a key whose expiry time has come, as Redis's own expiry does:
/// an `expired` keyspace event, and watchers and client caches told.
pub fn expire_key(ctx: *mut raw::RedisModuleCtx, key: &[u8]) {
    let name = OwnedString::new(key);
    let mode = raw::REDISMODULE_WRITE as c_int;
    // SAFETY: main thread, valid context and name; closing a key opened
    // for writing signals the change to WATCH and client tracking.
    unsafe {
        let k = api!(RedisModule_OpenKey)(ctx, name.0, mode);
        if k.is_null() {
            return;
        }
        let existed = api!(RedisModule_KeyType)(k) != raw::REDISMODULE_KEYTYPE_EMPTY as c_int;
        api!(RedisModule_DeleteKey)(k);
        api!(RedisModule_CloseKey)(k);
        if existed {
            api!(RedisModule_NotifyKeyspaceEvent)(
                ctx,
                raw::REDISMODULE_NOTIFY_EXPIRED as c_int,
                c"expired".as_ptr(),
                name.0,
            );
        }
    }
}

/// Calls `f(key, stored expire time)` for every key that has one (a full
/// pass over the keyspace: at start and after a snapshot load only).
pub fn for_each_expiring_key(ctx: *mut raw::RedisModuleCtx, f: &mut dyn FnMut(Vec<u8>, i64)) {
    unsafe extern "C" fn one(
        _ctx: *mut raw::RedisModuleCtx,
        keyname: *mut raw::RedisModuleString,
        key: *mut raw::RedisModuleKey,
        pd: *mut c_void,
    ) {
        if key.is_null() {
            return;
        }
        // SAFETY: key is the handle RM_Scan opened for this callback; pd is
        // the closure passed below, alive for the whole scan.
        unsafe {
            let t = api!(RedisModule_GetAbsExpire)(key);
            if t >= 0 {
                let f = &mut *(pd as *mut &mut dyn FnMut(Vec<u8>, i64));
                f(string_bytes(keyname), t);
            }
        }
    }
    let mut f = f;
    // SAFETY: the cursor is created and destroyed here; `one` matches
    // RedisModuleScanCB and pd points to `f` for the whole loop.
    unsafe {
        let cursor = api!(RedisModule_ScanCursorCreate)();
        let pd = &mut f as *mut &mut dyn FnMut(Vec<u8>, i64) as *mut c_void;
        while api!(RedisModule_Scan)(ctx, cursor, Some(one), pd) != 0 {}
        api!(RedisModule_ScanCursorDestroy)(cursor);
    }
}

/// The keyspace-event callback type.
pub type EventFn = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    c_int,
    *const c_char,
    *mut raw::RedisModuleString,
) -> c_int;

/// Subscribes `f` to the generic keyspace events (expire, rename, copy,
/// restore, ...), whatever notify-keyspace-events says.
pub fn subscribe_generic_events(ctx: *mut raw::RedisModuleCtx, f: EventFn) -> bool {
    // SAFETY: called once at load with the load context.
    unsafe {
        api!(RedisModule_SubscribeToKeyspaceEvents)(
            ctx,
            raw::REDISMODULE_NOTIFY_GENERIC as c_int,
            Some(f),
        ) == raw::REDISMODULE_OK as c_int
    }
}

/// Subscribes `f` to every keyspace event (all of Redis's classes, module
/// types' too), whatever notify-keyspace-events says.
pub fn subscribe_all_keyspace_events(ctx: *mut raw::RedisModuleCtx, f: EventFn) -> bool {
    // SAFETY: called once at load with the load context.
    unsafe {
        api!(RedisModule_SubscribeToKeyspaceEvents)(
            ctx,
            raw::REDISMODULE_NOTIFY_ALL as c_int,
            Some(f),
        ) == raw::REDISMODULE_OK as c_int
    }
}

/// The database a context (e.g. a keyspace event's) has selected.
pub fn selected_db(ctx: *mut raw::RedisModuleCtx) -> i32 {
    // SAFETY: a valid context passed by Redis.
    unsafe { api!(RedisModule_GetSelectedDb)(ctx) }
}

/// Calls `f(false)` when database 0 is about to be flushed (FLUSHALL,
/// FLUSHDB, and loads) and `f(true)` when it is swapped with another
/// (SWAPDB), on the main thread.
pub fn on_database_emptied(ctx: *mut raw::RedisModuleCtx, f: fn(bool)) -> bool {
    static CALLBACK: std::sync::OnceLock<fn(bool)> = std::sync::OnceLock::new();
    unsafe extern "C" fn event(
        _ctx: *mut raw::RedisModuleCtx,
        eid: raw::RedisModuleEvent,
        subevent: u64,
        data: *mut c_void,
    ) {
        if data.is_null() {
            return;
        }
        // SAFETY: for these events Redis passes RedisModuleFlushInfoV1 /
        // RedisModuleSwapDbInfoV1: a u64 version, then two i32.
        let (a, b) = unsafe {
            let p = (data as *const u8).add(8) as *const i32;
            (*p, *p.add(1))
        };
        let which = if eid.id == raw::REDISMODULE_EVENT_SWAPDB {
            (a == 0 || b == 0).then_some(true)
        } else {
            (subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START && (b == -1 || b == 0))
                .then_some(false)
        };
        if let (Some(swapped), Some(f)) = (which, CALLBACK.get()) {
            crate::guard::catch("the flush event", || f(swapped), |_| ());
        }
    }
    let _ = CALLBACK.set(f);
    [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
    ]
    .into_iter()
    .all(|id| {
        // SAFETY: called once at load with the load context.
        unsafe {
            api!(RedisModule_SubscribeToServerEvent)(
                ctx,
                raw::RedisModuleEvent { id, dataver: 1 },
                Some(event),
            ) == raw::REDISMODULE_OK as c_int
        }
    })
}

/// Subscribes `f` to keyspace events of the types in `mask`
/// (REDISMODULE_NOTIFY_*), whatever notify-keyspace-events says.
pub fn subscribe_events(ctx: *mut raw::RedisModuleCtx, mask: c_int, f: EventFn) -> bool {
    // SAFETY: called once at load with the load context.
    unsafe {
        api!(RedisModule_SubscribeToKeyspaceEvents)(ctx, mask, Some(f))
            == raw::REDISMODULE_OK as c_int
    }
}

/// What a key holds, for the blocking commands' wait lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Missing,
    List(usize),
    Zset(usize),
    Stream(usize),
    Other,
}

/// A key's type and length, without touching its access time (stored
/// expiry times are never reached by the clock: it expires nothing).
pub fn key_kind(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> KeyKind {
    let name = OwnedString::new(key);
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int;
    // SAFETY: main thread, valid context and name; the key is closed below.
    unsafe {
        let k = api!(RedisModule_OpenKey)(ctx, name.0, mode);
        if k.is_null() {
            return KeyKind::Missing;
        }
        let t = api!(RedisModule_KeyType)(k);
        let kind = if t == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
            KeyKind::Missing
        } else if t == raw::REDISMODULE_KEYTYPE_LIST as c_int {
            KeyKind::List(api!(RedisModule_ValueLength)(k))
        } else if t == raw::REDISMODULE_KEYTYPE_ZSET as c_int {
            KeyKind::Zset(api!(RedisModule_ValueLength)(k))
        } else if t == raw::REDISMODULE_KEYTYPE_STREAM as c_int {
            KeyKind::Stream(api!(RedisModule_ValueLength)(k))
        } else {
            KeyKind::Other
        };
        api!(RedisModule_CloseKey)(k);
        kind
    }
}

/// The bytes of a string Redis passed to a callback.
pub fn bytes_of(s: *mut raw::RedisModuleString) -> Vec<u8> {
    if s.is_null() {
        return Vec::new();
    }
    string_bytes(s)
}

/// The timer callback type.
pub type TimerFn = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void);

/// Runs `f` on the main thread once, after `ms` milliseconds.
pub fn start_timer(ctx: *mut raw::RedisModuleCtx, ms: i64, f: TimerFn) {
    // SAFETY: main thread; the timer owns no data.
    unsafe {
        api!(RedisModule_CreateTimer)(ctx, ms, Some(f), ptr::null_mut());
    }
}

/// Used memory relative to maxmemory (0 when there is no limit; above 1
/// when over it).
pub fn used_memory_ratio() -> f32 {
    // SAFETY: main thread; no arguments.
    unsafe { api!(RedisModule_GetUsedMemoryRatio)() }
}

/// The server's version as 0x00MMmmpp (Redis 7.0.15 is 0x0007000f).
pub fn server_version() -> u32 {
    // SAFETY: a plain getter without arguments.
    unsafe { api!(RedisModule_GetServerVersion)() as u32 }
}

/// The ACL user the client running the current command is authenticated
/// as. None for the module's own calls and for other modules' RM_Call
/// clients: those run as root, without a user (RM_GetCurrentUserName would
/// dereference the missing user; looking the client up by id finds no
/// such fake client and says so).
pub fn current_user(ctx: *mut raw::RedisModuleCtx) -> Option<Vec<u8>> {
    if in_own_call() || ctx.is_null() {
        return None;
    }
    // SAFETY: a command context; the string, if any, is freed below.
    unsafe {
        let id = api!(RedisModule_GetClientId)(ctx);
        if id == 0 {
            return None;
        }
        let s = api!(RedisModule_GetClientUserNameById)(ctx, id);
        if s.is_null() {
            return None;
        }
        let name = string_bytes(s);
        api!(RedisModule_FreeString)(ctx, s);
        Some(name)
    }
}

/// A user looked up by name for ACL checks, released on drop.
struct AclUser(*mut raw::RedisModuleUser);

impl AclUser {
    fn find(name: &[u8]) -> Option<AclUser> {
        let n = OwnedString::new(name);
        // SAFETY: a live string; a NULL result means no such user.
        let u = unsafe { api!(RedisModule_GetModuleUserFromUserName)(n.0) };
        (!u.is_null()).then_some(AclUser(u))
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        // SAFETY: obtained from GetModuleUserFromUserName, freed once.
        unsafe { api!(RedisModule_FreeModuleUser)(self.0) };
    }
}

/// What an ACL check of a whole command line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclCheck {
    Allowed,
    Denied,
    /// The user no longer exists.
    NoUser,
    /// Redis does not know the command: its own error comes later.
    UnknownCommand,
}

/// Checks `user`'s right to run `argv` as Redis does before it runs a
/// command: the command or subcommand, its keys by their key specs (read or
/// write), and its channels. The caller checks the arity first.
pub fn acl_check(user: &[u8], argv: &[Vec<u8>]) -> AclCheck {
    let Some(u) = AclUser::find(user) else {
        return AclCheck::NoUser;
    };
    let strs: Vec<OwnedString> = argv.iter().map(|a| OwnedString::new(a)).collect();
    let mut ptrs: Vec<*mut raw::RedisModuleString> = strs.iter().map(|s| s.0).collect();
    // SAFETY: a live user and argc live strings for the call's duration.
    let rc = unsafe {
        api!(RedisModule_ACLCheckCommandPermissions)(u.0, ptrs.as_mut_ptr(), ptrs.len() as c_int)
    };
    if rc == raw::REDISMODULE_OK as c_int {
        return AclCheck::Allowed;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc_errno::ENOENT) => AclCheck::UnknownCommand,
        _ => AclCheck::Denied,
    }
}

/// Why an ACL check refused a command, for the ACL LOG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclDenial {
    Command,
    Key,
    Channel,
}

/// Adds an entry to the ACL LOG (context "module"), as Redis does for a
/// command it refuses.
pub fn acl_log(ctx: *mut raw::RedisModuleCtx, user: &[u8], object: &[u8], why: AclDenial) {
    let Some(u) = AclUser::find(user) else {
        return;
    };
    let reason = match why {
        AclDenial::Command => raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CMD,
        AclDenial::Key => raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_KEY,
        AclDenial::Channel => raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CHANNEL,
    };
    let obj = OwnedString::new(object);
    // SAFETY: a command context with its client, a live user and string;
    // Redis copies the object.
    unsafe { api!(RedisModule_ACLAddLogEntry)(ctx, u.0, obj.0, reason) };
}

/// A user made by the module from ACL rules (not in Redis's user list),
/// for checking a script's commands against rights an entry carries.
pub struct ModuleUser(*mut raw::RedisModuleUser);

// SAFETY: only created, used and freed on the main thread (the apply path);
// the pointer is merely stored in a cache there.
unsafe impl Send for ModuleUser {}

impl ModuleUser {
    /// A user with `rules` applied one by one (ACL SETUSER's syntax, one
    /// rule or one parenthesized selector each), switched on. Err names
    /// the first rule Redis refused.
    pub fn with_rules(name: &str, rules: &[Vec<u8>]) -> Result<ModuleUser, String> {
        let cname = CString::new(name).map_err(|_| "user name contains NUL")?;
        // SAFETY: a valid C string; freed in Drop.
        let u = ModuleUser(unsafe { api!(RedisModule_CreateModuleUser)(cname.as_ptr()) });
        if u.0.is_null() {
            return Err("cannot create a module user".into());
        }
        for rule in std::iter::once(&b"on".to_vec()).chain(rules) {
            let r = CString::new(rule.clone()).map_err(|_| "rule contains NUL")?;
            // SAFETY: a live user and C string.
            let rc = unsafe { api!(RedisModule_SetModuleUserACL)(u.0, r.as_ptr()) };
            if rc != raw::REDISMODULE_OK as c_int {
                return Err(format!("rule '{}' refused", String::from_utf8_lossy(rule)));
            }
        }
        Ok(u)
    }

    /// Whether this user may run `argv` (command, keys, channels); an
    /// unknown command passes (Redis answers it).
    pub fn allows(&self, argv: &[Vec<u8>]) -> bool {
        let strs: Vec<OwnedString> = argv.iter().map(|a| OwnedString::new(a)).collect();
        let mut ptrs: Vec<*mut raw::RedisModuleString> = strs.iter().map(|s| s.0).collect();
        // SAFETY: a live user and argc live strings.
        let rc = unsafe {
            api!(RedisModule_ACLCheckCommandPermissions)(
                self.0,
                ptrs.as_mut_ptr(),
                ptrs.len() as c_int,
            )
        };
        rc == raw::REDISMODULE_OK as c_int
            || std::io::Error::last_os_error().raw_os_error() == Some(libc_errno::ENOENT)
    }

    /// Whether this user may publish to `channel`.
    pub fn may_publish(&self, channel: &[u8]) -> bool {
        let c = OwnedString::new(channel);
        // SAFETY: a live user and string.
        unsafe {
            api!(RedisModule_ACLCheckChannelPermissions)(
                self.0,
                c.0,
                raw::REDISMODULE_CMD_CHANNEL_PUBLISH as c_int,
            ) == raw::REDISMODULE_OK as c_int
        }
    }

    /// Whether this user may touch `key` at all (any of its key patterns).
    pub fn may_touch_key(&self, key: &[u8]) -> bool {
        let k = OwnedString::new(key);
        // SAFETY: a live user and string; flags 0 asks for any access.
        unsafe {
            api!(RedisModule_ACLCheckKeyPermissions)(self.0, k.0, 0) == raw::REDISMODULE_OK as c_int
        }
    }
}

impl Drop for ModuleUser {
    fn drop(&mut self) {
        // SAFETY: created by CreateModuleUser, freed once.
        unsafe { api!(RedisModule_FreeModuleUser)(self.0) };
    }
}

/// Puts module command `name` into ACL categories (space separated), where
/// the server can (Redis 7.2+; `new_category` is created first where the
/// server can, 7.4+). Returns which it did, for the start-up log.
pub fn set_acl_categories(
    ctx: *mut raw::RedisModuleCtx,
    name: &str,
    categories: &str,
    new_category: Option<&str>,
) -> Result<(), &'static str> {
    // SAFETY: reading function pointers set at init.
    let (get, set, add) = unsafe {
        (
            raw::RedisModule_GetCommand,
            raw::RedisModule_SetCommandACLCategories,
            raw::RedisModule_AddACLCategory,
        )
    };
    let (Some(get), Some(set)) = (get, set) else {
        return Err("no module ACL categories on this server (Redis < 7.2)");
    };
    let mut cats = categories.to_string();
    if let (Some(new), Some(add)) = (new_category, add) {
        let c = CString::new(new).map_err(|_| "category contains NUL")?;
        // SAFETY: the load context; an existing category is an error we
        // ignore (a reload).
        unsafe { add(ctx, c.as_ptr()) };
        cats = format!("{cats} {new}");
    }
    let cname = CString::new(name).map_err(|_| "name contains NUL")?;
    let ccats = CString::new(cats.trim()).map_err(|_| "category contains NUL")?;
    // SAFETY: the load context and C strings; the command was registered.
    unsafe {
        let cmd = get(ctx, cname.as_ptr());
        if cmd.is_null() {
            return Err("command not found");
        }
        if set(cmd, ccats.as_ptr()) != raw::REDISMODULE_OK as c_int {
            return Err("category refused");
        }
    }
    Ok(())
}

/// Calls `f` with the id of each client that disconnects (the client-change
/// server event), on the main thread.
pub fn on_client_disconnect(ctx: *mut raw::RedisModuleCtx, f: fn(u64)) -> bool {
    static CALLBACK: std::sync::OnceLock<fn(u64)> = std::sync::OnceLock::new();
    unsafe extern "C" fn event(
        _ctx: *mut raw::RedisModuleCtx,
        _eid: raw::RedisModuleEvent,
        subevent: u64,
        data: *mut c_void,
    ) {
        if subevent != raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED || data.is_null() {
            return;
        }
        // SAFETY: for this event Redis passes a RedisModuleClientInfo (v1),
        // which starts with the u64 fields version, flags and id.
        let id = unsafe { *(data as *const u64).add(2) };
        if let Some(f) = CALLBACK.get() {
            crate::guard::catch("the client disconnect event", || f(id), |_| ());
        }
    }
    let _ = CALLBACK.set(f);
    // SAFETY: called once at load with the load context.
    unsafe {
        api!(RedisModule_SubscribeToServerEvent)(
            ctx,
            raw::RedisModuleEvent {
                id: raw::REDISMODULE_EVENT_CLIENT_CHANGE,
                dataver: 1,
            },
            Some(event),
        ) == raw::REDISMODULE_OK as c_int
    }
}
