//! RAFT.DEBUG DIGEST: the state every node must hold alike at the same
//! applied index, as one string. `DEBUG DIGEST` covers keys, values and
//! expiry times, but not streams' consumer groups (their last IDs, pending
//! entries, owners, delivery counts and times, consumers), which entries
//! change too; nor the replicated script cache and function libraries.
//! Tests, the Jepsen runner and the crash campaign compare this instead.
//!
//! Left out, on purpose: consumers' seen and active times (each node's
//! clock, see `pending`) and the streams' radix-tree sizes (memory layout).
//! O(dataset): a debugging command.

use std::hash::Hasher;

use redis_module::raw;

use crate::ffi::{self, Value};

type Ctx = *mut raw::RedisModuleCtx;

/// `<DEBUG DIGEST>-<consumer groups and script cache, 16 hex digits>`.
pub fn of_dataset(ctx: Ctx) -> Result<String, String> {
    let base = ffi::call(ctx, &[b"DEBUG".to_vec(), b"DIGEST".to_vec()])?
        .as_bytes()
        .ok_or("DEBUG DIGEST gave no string")?;
    // SipHash with fixed keys: the same on every node of one build.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    for key in stream_keys(ctx)? {
        let argv = [
            b"XINFO".to_vec(),
            b"STREAM".to_vec(),
            key.clone(),
            b"FULL".to_vec(),
            b"COUNT".to_vec(),
            b"0".to_vec(),
        ];
        let info = ffi::call(ctx, &argv)?
            .to_value()
            .ok_or("XINFO STREAM FULL: an unexpected reply")?;
        h.write(&key);
        feed(&mut h, &info);
    }
    // Functions: each library's name and code (they define it whole), by
    // name (the server lists them in its hash table's order).
    let libs = ffi::call(
        ctx,
        &[b"FUNCTION".to_vec(), b"LIST".to_vec(), b"WITHCODE".to_vec()],
    )?
    .to_value()
    .ok_or("FUNCTION LIST: an unexpected reply")?;
    let mut libs: Vec<(Vec<u8>, Vec<u8>)> = libs
        .items()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let text = |f: &[u8]| {
                l.field(f)
                    .and_then(Value::bytes)
                    .unwrap_or_default()
                    .to_vec()
            };
            (text(b"library_name"), text(b"library_code"))
        })
        .collect();
    libs.sort();
    for (name, code) in libs {
        h.write(&name);
        h.write(&code);
    }
    let (scripts, cache) = super::script_cache::summary();
    h.write_usize(scripts);
    h.write_u64(cache);
    Ok(format!(
        "{}-{:016x}",
        String::from_utf8_lossy(&base),
        h.finish()
    ))
}

/// Every stream key, sorted.
fn stream_keys(ctx: Ctx) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let argv = [
            b"SCAN".to_vec(),
            cursor,
            b"TYPE".to_vec(),
            b"stream".to_vec(),
            b"COUNT".to_vec(),
            b"1000".to_vec(),
        ];
        let (next, page) = ffi::call(ctx, &argv)?
            .as_scan_page()
            .ok_or("SCAN: an unexpected reply")?;
        keys.extend(page);
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Fields of XINFO STREAM FULL that are not replicated state.
const NOT_STATE: &[&[u8]] = &[
    b"seen-time",
    b"active-time",
    b"radix-tree-keys",
    b"radix-tree-nodes",
];

fn feed(h: &mut impl Hasher, v: &Value) {
    match v {
        Value::Bulk(b) => {
            h.write_u8(b'$');
            h.write(b);
        }
        Value::Integer(n) => {
            h.write_u8(b':');
            h.write_i64(*n);
        }
        Value::Null => h.write_u8(b'_'),
        Value::Error(e) => {
            h.write_u8(b'-');
            h.write(e.as_bytes());
        }
        Value::Array(items) | Value::Set(items) => {
            h.write_u8(b'*');
            h.write_usize(items.len());
            // A RESP2 field list: skip the fields that are not state.
            let mut skip = false;
            for (i, x) in items.iter().enumerate() {
                if skip {
                    skip = false;
                    continue;
                }
                if i % 2 == 0 && x.bytes().is_some_and(|b| NOT_STATE.contains(&b)) {
                    skip = true;
                    continue;
                }
                feed(h, x);
            }
        }
        Value::Map(pairs) => {
            h.write_u8(b'%');
            for (k, x) in pairs {
                if k.bytes().is_some_and(|b| NOT_STATE.contains(&b)) {
                    continue;
                }
                feed(h, k);
                feed(h, x);
            }
        }
    }
}
