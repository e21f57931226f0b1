//! RESP3: a client that said `HELLO 3` gets its replies as Redis sends them
//! to a RESP3 client (maps, sets, doubles, nulls, big numbers, verbatim
//! strings), whether the reply is written at once (a read served locally)
//! or later, when its entry applies.
//!
//! The protocol is the client's: read when its command runs (the blocked
//! client remembers it, `RedisClient::resp3`) and set here while the
//! machine runs the command for it. The command whose reply the client
//! gets runs through RM_Call in that protocol ([`call`]), so its reply is
//! Redis's own bytes; the replies the machine builds itself (sorted sets
//! and hashes, `random`) say whether they are a set or a map, and Redis
//! writes them in the client's protocol. The machine's internal calls
//! (`ffi::call`) stay RESP2. The protocol never changes what a command
//! does to the dataset: followers, which answer no one, run it in RESP2.

use std::cell::Cell;

use redis_module::raw;

use crate::ffi::{self, CallReply};

type Ctx = *mut raw::RedisModuleCtx;

thread_local! {
    /// Whether the client the machine runs a command for speaks RESP3.
    static RESP3: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` for a client that speaks RESP3 (`resp3`) or RESP2.
pub fn with<R>(resp3: bool, f: impl FnOnce() -> R) -> R {
    let before = RESP3.with(|c| c.replace(resp3));
    let r = f();
    RESP3.with(|c| c.set(before));
    r
}

/// Runs `f` in the protocol of the client running the command of `ctx`.
pub fn of_caller<R>(ctx: Ctx, f: impl FnOnce() -> R) -> R {
    with(ffi::is_resp3(ctx), f)
}

/// Whether the current client speaks RESP3.
pub fn resp3() -> bool {
    RESP3.with(Cell::get)
}

/// Runs the command whose reply goes to the client, in its protocol.
pub fn call(ctx: Ctx, argv: &[Vec<u8>]) -> Result<CallReply, String> {
    ffi::call_in(ctx, argv, resp3())
}
