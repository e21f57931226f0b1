//! Panics at the module's `extern "C"` entry points (commands, callbacks
//! Redis runs on its main thread, the command filter, RDB aux data). A panic
//! must not unwind into Redis (that aborts redis-server) nor leave a node
//! that looks healthy: it is caught, and the node fail-stops with the panic
//! as its reason (`driver::fail_stop`).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a caught panic.
pub fn panic_text(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// Runs `f`; if it panics, fail-stops the node ("internal error in
/// `what`: ...") and returns `on_panic(reason)` instead.
pub fn catch<R>(what: &str, f: impl FnOnce() -> R, on_panic: impl FnOnce(&str) -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let reason = format!("internal error in {what}: {}", panic_text(p.as_ref()));
            // Nothing in here may panic again (that would abort).
            let _ = catch_unwind(AssertUnwindSafe(|| {
                crate::driver::fail_stop(reason.clone())
            }));
            on_panic(&reason)
        }
    }
}
