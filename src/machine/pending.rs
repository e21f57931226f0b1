//! Consumer groups' pending entries with delivery times from the log:
//! XREADGROUP, XCLAIM, XAUTOCLAIM, XPENDING and XINFO STREAM FULL.
//!
//! Redis stamps a pending entry with its own clock when it delivers or
//! claims it, and XCLAIM / XAUTOCLAIM claim an entry only when it has been
//! idle long enough by that clock: each node would record other times and
//! claim other entries. Here:
//!
//! - Every delivery time is the entry's time (its *logical* time), written
//!   with XCLAIM's `TIME` option: XREADGROUP's deliveries are stamped again
//!   right after it runs ([`restamp_deliveries`]), XCLAIM runs with `TIME`
//!   ([`xclaim`]), XAUTOCLAIM runs as such an XCLAIM ([`xautoclaim`]).
//! - Stored [`SHIFT_MS`] in the past: Redis replaces a `TIME` in its future
//!   by its own clock, and a follower's clock may be behind the leader's.
//! - The idle tests are decided here, from the stored times (read exactly,
//!   from XINFO STREAM FULL) and the entry's time; Redis is given only the
//!   IDs that pass, with min-idle 0.
//! - XPENDING's idle times and XINFO STREAM FULL's delivery times are
//!   answered from the logical times ([`read`]).
//!
//! A stored time less than `SHIFT_MS / 2` before the current time was not
//! written this way (a stream from a plain Redis, through RESTORE) and is
//! taken as it is.
//!
//! Not covered: a consumer's seen time (and active time, 7.2+), which
//! Redis sets from its clock and no command sets; they are not in DEBUG
//! DIGEST and no command decides anything from them.

use std::collections::HashMap;

use redis_module::raw;

use super::command::Outcome;
use super::protocol;
use crate::ffi::{self, CallReply, Value};

type Ctx = *mut raw::RedisModuleCtx;

/// How far in the past delivery times are stored: 10^11 ms, about 3 years,
/// more than any node's clock can lag behind the leader's.
pub const SHIFT_MS: i64 = 100_000_000_000;

/// The stored form of logical delivery time `logical` (never negative:
/// Redis would replace a negative time by its clock).
pub fn stored(logical: i64) -> i64 {
    logical.saturating_sub(SHIFT_MS).max(0)
}

/// The logical delivery time of stored time `stored`, read at `now`.
pub fn logical(stored: i64, now: i64) -> i64 {
    if stored < now.saturating_sub(SHIFT_MS / 2) {
        stored.saturating_add(SHIFT_MS)
    } else {
        stored
    }
}

/// A stream entry ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id {
    ms: u64,
    seq: u64,
}

impl Id {
    const MIN: Id = Id { ms: 0, seq: 0 };

    fn text(&self) -> Vec<u8> {
        format!("{}-{}", self.ms, self.seq).into_bytes()
    }

    fn next(self) -> Option<Id> {
        if self.seq < u64::MAX {
            Some(Id {
                seq: self.seq + 1,
                ..self
            })
        } else if self.ms < u64::MAX {
            Some(Id {
                ms: self.ms + 1,
                seq: 0,
            })
        } else {
            None
        }
    }

    fn prev(self) -> Option<Id> {
        if self.seq > 0 {
            Some(Id {
                seq: self.seq - 1,
                ..self
            })
        } else if self.ms > 0 {
            Some(Id {
                ms: self.ms - 1,
                seq: u64::MAX,
            })
        } else {
            None
        }
    }
}

/// Redis's `string2ll`: an optional minus, then digits without a leading
/// zero (or "0"), in range.
pub fn string2ll(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b {
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for d in digits {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// Redis's `string2ull`: `string2ll` when it is non-negative, else C's
/// `strtoull` over the whole string (leading spaces, a sign).
fn string2ull(b: &[u8]) -> Option<u64> {
    if let Some(v) = string2ll(b) {
        return (v >= 0).then_some(v as u64);
    }
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = &b[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for d in digits {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Redis's stream ID parser (`streamGenericParseIDOrReply`, no `ms-*`).
fn parse_id(arg: &[u8], strict: bool, missing_seq: u64) -> Option<Id> {
    // Redis copies the argument into a C string: it ends at a NUL.
    if arg.len() > 127 {
        return None;
    }
    let b = arg.split(|&c| c == 0).next().unwrap_or_default();
    match b {
        b"-" | b"+" if strict => None,
        b"-" => Some(Id::MIN),
        b"+" => Some(Id {
            ms: u64::MAX,
            seq: u64::MAX,
        }),
        _ => match b.iter().position(|&c| c == b'-') {
            Some(dash) => Some(Id {
                ms: string2ull(&b[..dash])?,
                seq: string2ull(&b[dash + 1..])?,
            }),
            None => Some(Id {
                ms: string2ull(b)?,
                seq: missing_seq,
            }),
        },
    }
}

/// Redis's interval bound (`streamParseIntervalIDOrReply`): `(` excludes.
fn parse_bound(arg: &[u8], missing_seq: u64, start: bool) -> Option<Id> {
    if arg.len() > 1 && arg[0] == b'(' {
        let id = parse_id(&arg[1..], true, missing_seq)?;
        if start {
            id.next()
        } else {
            id.prev()
        }
    } else {
        parse_id(arg, false, missing_seq)
    }
}

/// An argument as Redis's `strcasecmp` / `strcmp` see it: up to its first
/// NUL (`FORCE\0x` is FORCE to Redis).
fn c_str(a: &[u8]) -> &[u8] {
    a.split(|&c| c == 0).next().unwrap_or_default()
}

fn is(a: &[u8], name: &str) -> bool {
    c_str(a).eq_ignore_ascii_case(name.as_bytes())
}

/// Whether XREADGROUP's ID argument asks for new entries (`>`).
fn is_new(id: &[u8]) -> bool {
    c_str(id) == b">"
}

/// One pending entry of a consumer group.
#[derive(Clone, Debug)]
struct Pending {
    id: Id,
    consumer: Vec<u8>,
    /// The delivery time as Redis stores it.
    stored: i64,
    deliveries: i64,
}

/// The pending entries of group `group` of stream `key`, in ID order,
/// with their delivery times exactly as stored: all of them, or the first
/// `first` when that is enough. None when there is no such stream or group
/// (the command then answers Redis's own error).
///
/// XINFO STREAM FULL is the only exact view of the stored times (XPENDING
/// gives idle times, by the clock), and it lists from the start of the
/// list (and as many stream entries, and of every group): O(the list).
fn pending_list(ctx: Ctx, key: &[u8], group: &[u8], first: Option<i64>) -> Option<Vec<Pending>> {
    let summary = ffi::call(ctx, &[b"XPENDING".to_vec(), key.to_vec(), group.to_vec()]).ok()?;
    let count = summary.to_value()?.items()?.first()?.integer()?;
    let count = first.map_or(count, |n| n.min(count));
    if count <= 0 {
        return Some(Vec::new());
    }
    let info = ffi::call(
        ctx,
        &[
            b"XINFO".to_vec(),
            b"STREAM".to_vec(),
            key.to_vec(),
            b"FULL".to_vec(),
            b"COUNT".to_vec(),
            count.to_string().into_bytes(),
        ],
    )
    .ok()?
    .to_value()?;
    let g = info
        .field(b"groups")?
        .items()?
        .iter()
        .find(|g| g.field(b"name").and_then(Value::bytes) == Some(group))?;
    g.field(b"pending")?
        .items()?
        .iter()
        .map(|p| {
            let f = p.items()?;
            Some(Pending {
                id: parse_id(f.first()?.bytes()?, true, 0)?,
                consumer: f.get(1)?.bytes()?.to_vec(),
                stored: f.get(2)?.integer()?,
                deliveries: f.get(3)?.integer()?,
            })
        })
        .collect()
}

/// Whether the stream holds entry `id` (Redis's `streamEntryExists`).
fn entry_exists(ctx: Ctx, key: &[u8], id: Id) -> bool {
    let argv = [b"XRANGE".to_vec(), key.to_vec(), id.text(), id.text()];
    ffi::call(ctx, &argv)
        .ok()
        .and_then(|r| r.to_value())
        .and_then(|v| v.items().map(|i| !i.is_empty()))
        .unwrap_or(false)
}

/// `XCLAIM key group consumer min-idle id [id ...] [options]` at entry time
/// `now`, rewritten to claim exactly the IDs Redis would claim at that
/// time: min-idle 0, only the IDs whose idle test passes by the logical
/// times, and the delivery time as `TIME`. None: Redis answers the command
/// as it is (an error of its own: bad arguments, no such group).
pub fn xclaim(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Option<Vec<Vec<u8>>> {
    if !is(argv.first()?, "xclaim") || argv.len() < 6 {
        return None;
    }
    let min_idle = string2ll(&argv[4])?.max(0);
    let mut j = 5;
    let mut ids = Vec::new();
    while j < argv.len() {
        match parse_id(&argv[j], true, 0) {
            Some(id) => ids.push((id, j)),
            None => break,
        }
        j += 1;
    }
    let (mut force, mut justid) = (false, false);
    let mut delivery = None;
    let (mut retry, mut last_id) = (None, None);
    while j < argv.len() {
        let more = argv.len() - 1 - j > 0;
        let opt = &argv[j];
        if is(opt, "force") {
            force = true;
        } else if is(opt, "justid") {
            justid = true;
        } else if is(opt, "idle") && more {
            j += 1;
            delivery = Some(now.checked_sub(string2ll(&argv[j])?).unwrap_or(-1));
        } else if is(opt, "time") && more {
            j += 1;
            delivery = Some(string2ll(&argv[j])?);
        } else if is(opt, "retrycount") && more {
            j += 1;
            string2ll(&argv[j])?;
            retry = Some(argv[j].clone());
        } else if is(opt, "lastid") && more {
            j += 1;
            parse_id(&argv[j], true, 0)?;
            last_id = Some(argv[j].clone());
        } else {
            return None;
        }
        j += 1;
    }
    // Redis takes its clock for a delivery time that is negative or in its
    // future; here the entry's time.
    let new_time = delivery.filter(|d| (0..=now).contains(d)).unwrap_or(now);
    let (key, group) = (&argv[1], &argv[2]);
    let mut times: HashMap<Id, i64> = pending_list(ctx, key, group, None)?
        .into_iter()
        .map(|p| (p.id, logical(p.stored, now)))
        .collect();
    let mut exists: HashMap<Id, bool> = HashMap::new();
    let mut kept = Vec::new();
    for (id, at) in ids {
        let here = *exists
            .entry(id)
            .or_insert_with(|| entry_exists(ctx, key, id));
        if !here {
            // Redis drops it from the pending list (if there).
            if times.remove(&id).is_some() {
                kept.push(argv[at].clone());
            }
            continue;
        }
        match times.get(&id) {
            Some(&t) if min_idle > 0 && now.saturating_sub(t) < min_idle => {}
            Some(_) => {
                kept.push(argv[at].clone());
                times.insert(id, new_time);
            }
            None if force => {
                kept.push(argv[at].clone());
                times.insert(id, new_time);
            }
            None => {}
        }
    }
    let mut out = claim_exactly(key, group, &argv[3], kept, force, justid, new_time);
    if let Some(r) = retry {
        out.extend([b"RETRYCOUNT".to_vec(), r]);
    }
    if let Some(l) = last_id {
        out.extend([b"LASTID".to_vec(), l]);
    }
    Some(out)
}

/// `XCLAIM key group consumer 0 <ids> [FORCE] [JUSTID] TIME <time stored>`:
/// claims exactly `ids` (min-idle 0), delivered at logical time `time`.
/// With no ID, `0-0`, which no stream holds: no entry changes, but LASTID
/// applies and the consumer is made on 7.2+, as Redis would.
fn claim_exactly(
    key: &[u8],
    group: &[u8],
    consumer: &[u8],
    ids: Vec<Vec<u8>>,
    force: bool,
    justid: bool,
    time: i64,
) -> Vec<Vec<u8>> {
    let mut out = vec![
        b"XCLAIM".to_vec(),
        key.to_vec(),
        group.to_vec(),
        consumer.to_vec(),
        b"0".to_vec(),
    ];
    if ids.is_empty() {
        out.push(b"0-0".to_vec());
    }
    out.extend(ids);
    if force {
        out.push(b"FORCE".to_vec());
    }
    if justid {
        out.push(b"JUSTID".to_vec());
    }
    out.push(b"TIME".to_vec());
    out.push(stored(time).to_string().into_bytes());
    out
}

/// `XAUTOCLAIM key group consumer min-idle start [COUNT count] [JUSTID]` at
/// entry time `now`: the scan Redis makes (at most COUNT entries claimed or
/// found deleted, at most 10 * COUNT looked at), decided here from the
/// logical times; the claim itself is an XCLAIM with `TIME`. None: Redis
/// answers the command as it is (an error of its own).
pub fn xautoclaim(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Option<Outcome> {
    if !is(argv.first()?, "xautoclaim") || argv.len() < 6 {
        return None;
    }
    let min_idle = string2ll(&argv[4])?.max(0);
    let start = parse_bound(&argv[5], 0, true)?;
    let (mut count, mut justid) = (100i64, false);
    let mut j = 6;
    while j < argv.len() {
        let more = argv.len() - 1 - j > 0;
        if is(&argv[j], "count") && more {
            let c = string2ll(&argv[j + 1])?;
            if !(1..=i64::MAX / 16).contains(&c) {
                return None;
            }
            count = c;
            j += 1;
        } else if is(&argv[j], "justid") {
            justid = true;
        } else {
            return None;
        }
        j += 1;
    }
    let (key, group) = (&argv[1], &argv[2]);
    // From the start of the list, the scan looks at 10 * COUNT entries at
    // most and the cursor is the one after.
    let first = (start == Id::MIN).then(|| count.saturating_mul(10).saturating_add(1));
    let list = pending_list(ctx, key, group, first)?;
    let mut attempts = count.saturating_mul(10);
    let mut claim = Vec::new();
    let mut deleted = Vec::new();
    let mut at = list.partition_point(|p| p.id < start);
    while attempts > 0 && count > 0 && at < list.len() {
        attempts -= 1;
        let p = &list[at];
        at += 1;
        if !entry_exists(ctx, key, p.id) {
            claim.push(p.id.text());
            deleted.push(p.id.text());
            count -= 1;
            continue;
        }
        if min_idle > 0 && now.saturating_sub(logical(p.stored, now)) < min_idle {
            continue;
        }
        claim.push(p.id.text());
        count -= 1;
    }
    let cursor = list.get(at).map_or(b"0-0".to_vec(), |p| p.id.text());
    let xclaim = claim_exactly(key, group, &argv[3], claim, false, justid, now);
    let claimed = match protocol::call(ctx, &xclaim) {
        Ok(r) if !r.is_error() => r,
        other => return Some(other.into()),
    };
    Some(Outcome::Array(vec![
        Outcome::Bulk(Some(cursor)),
        Outcome::Reply(claimed),
        Outcome::Strings(deleted),
    ]))
}

/// After XREADGROUP ran at entry time `now` and answered `reply`: each
/// entry it delivered into a pending list (every entry with its fields:
/// new ones, and history read again) gets the entry's time as its
/// delivery time, in place of the clock Redis stamped it with.
pub fn restamp_deliveries(ctx: Ctx, argv: &[Vec<u8>], reply: &CallReply, now: i64) {
    if !argv.first().is_some_and(|n| is(n, "xreadgroup")) {
        return;
    }
    let Some(read) = ReadGroup::parse(argv) else {
        return;
    };
    let Some(reply) = reply.to_value() else {
        return;
    };
    let per_key: Vec<(&Value, &Value)> = match &reply {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|kv| match kv.items()? {
                [k, v] => Some((k, v)),
                _ => None,
            })
            .collect(),
        _ => return,
    };
    for (key, entries) in per_key {
        let Some(key) = key.bytes() else { continue };
        // The IDs this key was read with (a key may be given twice).
        let asked: Vec<&[u8]> = (read.keys.iter().zip(&read.ids))
            .filter(|(k, _)| k.as_slice() == key)
            .map(|(_, id)| id.as_slice())
            .collect();
        if read.noack && asked.iter().all(|id| is_new(id)) {
            continue; // nothing entered the pending list
        }
        // With NOACK, a key read both for new entries and its history:
        // only the history read's entries (this consumer's) changed.
        let mixed = read.noack && asked.iter().any(|id| is_new(id));
        let mut delivered: Vec<Vec<u8>> = entries
            .items()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match e.items()? {
                [id, fields] if *fields != Value::Null => Some(id.bytes()?.to_vec()),
                _ => None,
            })
            .collect();
        if mixed {
            delivered.retain(|id| owned_by(ctx, key, &read.group, &read.consumer, id));
        }
        if delivered.is_empty() {
            continue;
        }
        let xclaim = claim_exactly(
            key,
            &read.group,
            &read.consumer,
            delivered,
            false,
            true,
            now,
        );
        if let Ok(r) = ffi::call(ctx, &xclaim) {
            if r.is_error() {
                crate::logging::warning("could not set the delivery time of XREADGROUP's entries");
            }
        }
    }
}

/// Whether pending entry `id` of the group belongs to `consumer`.
fn owned_by(ctx: Ctx, key: &[u8], group: &[u8], consumer: &[u8], id: &[u8]) -> bool {
    let argv = [
        b"XPENDING".to_vec(),
        key.to_vec(),
        group.to_vec(),
        id.to_vec(),
        id.to_vec(),
        b"1".to_vec(),
        consumer.to_vec(),
    ];
    ffi::call(ctx, &argv)
        .ok()
        .and_then(|r| r.to_value())
        .and_then(|v| v.items().map(|i| !i.is_empty()))
        .unwrap_or(false)
}

/// What an XREADGROUP that ran reads: its group, consumer, NOACK, streams
/// and IDs (options read as Redis reads them).
struct ReadGroup {
    group: Vec<u8>,
    consumer: Vec<u8>,
    noack: bool,
    keys: Vec<Vec<u8>>,
    ids: Vec<Vec<u8>>,
}

impl ReadGroup {
    fn parse(argv: &[Vec<u8>]) -> Option<ReadGroup> {
        let (mut group, mut consumer, mut noack) = (None, None, false);
        let mut i = 1;
        while i < argv.len() {
            let a = &argv[i];
            if is(a, "streams") {
                let rest = &argv[i + 1..];
                if rest.is_empty() || !rest.len().is_multiple_of(2) {
                    return None;
                }
                let (keys, ids) = rest.split_at(rest.len() / 2);
                return Some(ReadGroup {
                    group: group?,
                    consumer: consumer?,
                    noack,
                    keys: keys.to_vec(),
                    ids: ids.to_vec(),
                });
            } else if is(a, "group") {
                group = Some(argv.get(i + 1)?.clone());
                consumer = Some(argv.get(i + 2)?.clone());
                i += 3;
            } else if is(a, "noack") {
                noack = true;
                i += 1;
            } else {
                i += 2; // COUNT n, BLOCK ms
            }
        }
        None
    }
}

/// XPENDING's extended form and XINFO STREAM ... FULL read at `now` (the
/// entry's time, or the leader's clock for a read it serves): idle and
/// delivery times from the logical times. None: any other command, or
/// another form (Redis answers it as it is).
pub fn read(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Option<Outcome> {
    let name = argv.first()?;
    if is(name, "xpending") && argv.len() >= 6 {
        return Some(xpending(ctx, argv, now));
    }
    if is(name, "xinfo") && argv.len() >= 4 && is(&argv[1], "stream") && is(&argv[3], "full") {
        return Some(xinfo_full(ctx, argv, now));
    }
    None
}

fn xpending(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Outcome {
    // Redis checks the arguments (its own errors) and the group; the
    // entries are computed here.
    let reply = match protocol::call(ctx, argv) {
        Ok(r) if !r.is_error() => r,
        other => return other.into(),
    };
    let pick = || -> Option<Vec<Pending>> {
        let mut at = 3;
        let mut min_idle = 0;
        if is(&argv[3], "idle") {
            min_idle = string2ll(&argv[4])?;
            at = 5;
        }
        let count = string2ll(argv.get(at + 2)?)?.max(0) as usize;
        let start = parse_bound(argv.get(at)?, 0, true)?;
        let end = parse_bound(argv.get(at + 1)?, u64::MAX, false)?;
        let consumer = argv.get(at + 3);
        // From the start, unfiltered: the first COUNT are enough.
        let first =
            (start == Id::MIN && min_idle == 0 && consumer.is_none()).then_some(count as i64);
        let list = pending_list(ctx, &argv[1], &argv[2], first)?;
        Some(
            list.into_iter()
                .filter(|p| p.id >= start && p.id <= end)
                .filter(|p| consumer.is_none_or(|c| *c == p.consumer))
                .filter(|p| min_idle == 0 || now.saturating_sub(logical(p.stored, now)) >= min_idle)
                .take(count)
                .collect(),
        )
    };
    let Some(entries) = pick() else {
        return Outcome::Reply(reply);
    };
    Outcome::Array(
        entries
            .into_iter()
            .map(|p| {
                let idle = now.saturating_sub(logical(p.stored, now)).max(0);
                Outcome::Array(vec![
                    Outcome::Bulk(Some(p.id.text())),
                    Outcome::Bulk(Some(p.consumer)),
                    Outcome::Integer(idle),
                    Outcome::Integer(p.deliveries),
                ])
            })
            .collect(),
    )
}

fn xinfo_full(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Outcome {
    let reply = match protocol::call(ctx, argv) {
        Ok(r) if !r.is_error() => r,
        other => return other.into(),
    };
    let Some(mut v) = reply.to_value() else {
        return Outcome::Reply(reply);
    };
    let set = |entry: &mut Value, at: usize| {
        if let Some(Value::Integer(t)) = entry.items_mut().and_then(|f| f.get_mut(at)) {
            *t = logical(*t, now);
        }
    };
    if let Some(groups) = v.field_mut(b"groups").and_then(Value::items_mut) {
        for g in groups {
            // Group pending: [id, consumer, delivery time, count].
            if let Some(list) = g.field_mut(b"pending").and_then(Value::items_mut) {
                list.iter_mut().for_each(|p| set(p, 2));
            }
            // Consumer pending: [id, delivery time, count].
            if let Some(consumers) = g.field_mut(b"consumers").and_then(Value::items_mut) {
                for c in consumers {
                    if let Some(list) = c.field_mut(b"pending").and_then(Value::items_mut) {
                        list.iter_mut().for_each(|p| set(p, 1));
                    }
                }
            }
        }
    }
    Outcome::Value(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_redis_parses_them() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-12"), Some(-12));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(string2ll(b"9223372036854775808"), None);
        for bad in ["", "-", "01", "-0", "+1", " 1", "1 ", "1x"] {
            assert_eq!(string2ll(bad.as_bytes()), None, "{bad}");
        }
        // strtoull's leniency after string2ll fails.
        assert_eq!(string2ull(b"007"), Some(7));
        assert_eq!(string2ull(b" +5"), Some(5));
        assert_eq!(string2ull(b"-1"), None);
        assert_eq!(string2ull(b" -1"), Some(u64::MAX));
        assert_eq!(string2ull(b"18446744073709551616"), None);
        assert_eq!(string2ull(b" "), None);
    }

    #[test]
    fn stream_ids_parse_as_redis_parses_them() {
        let id = |ms, seq| Some(Id { ms, seq });
        assert_eq!(parse_id(b"5-3", true, 0), id(5, 3));
        assert_eq!(parse_id(b"5", true, 0), id(5, 0));
        assert_eq!(parse_id(b"5", false, u64::MAX), id(5, u64::MAX));
        assert_eq!(parse_id(b"-", true, 0), None);
        assert_eq!(parse_id(b"-", false, 0), id(0, 0));
        assert_eq!(parse_id(b"+", false, 0), id(u64::MAX, u64::MAX));
        assert_eq!(parse_id(b"5-*", true, 0), None);
        assert_eq!(parse_id(b"FORCE", true, 0), None);
        assert_eq!(parse_id(b"1-2-3", true, 0), None);
        assert_eq!(parse_bound(b"(5-3", 0, true), id(5, 4));
        assert_eq!(parse_bound(b"(5-0", u64::MAX, false), id(4, u64::MAX));
        assert_eq!(parse_bound(b"(0-0", 0, false), None);
    }

    #[test]
    fn stored_times_are_in_the_past_and_read_back() {
        let t = 1_800_000_000_000;
        assert_eq!(logical(stored(t), t), t);
        assert_eq!(logical(stored(t - 5000), t + 10), t - 5000);
        assert!(stored(t) < t - SHIFT_MS / 2);
        // A time Redis stamped by its clock (a RESTOREd stream) stays.
        assert_eq!(logical(t - 5000, t), t - 5000);
        // Never negative: Redis would take its clock.
        assert_eq!(stored(1000), 0);
    }
}
