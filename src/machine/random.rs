//! Commands whose outcome Redis leaves to chance or to the layout of its
//! hash tables, made the same on every node: the choice comes from the
//! entry's seed, and the order from sorting.
//!
//! Each function returns None when Redis's own command can run as it is
//! (a missing key, a wrong type, bad arguments: Redis answers with no
//! effect and no chance involved).

use redis_module::raw;

use super::command::Outcome;
use super::ttl::parse_i64;
use super::Moment;
use crate::ffi;

type Ctx = *mut raw::RedisModuleCtx;

/// SplitMix64's finaliser: spreads a counter into a well-mixed word.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small generator, fixed here so that every version and node draws the
/// same numbers from the same seed (not the `rand` crate's, which may
/// change its algorithm).
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Draw {
        Draw(seed)
    }

    /// A number in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(1);
        (mix(self.0) % n as u64) as usize
    }
}

fn call(ctx: Ctx, args: &[&[u8]]) -> Result<ffi::CallReply, String> {
    let argv: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    ffi::call(ctx, &argv)
}

/// `count` distinct picks from `items` (all of them, in a drawn order, if
/// count >= len).
fn pick_distinct(mut items: Vec<Vec<u8>>, count: usize, d: &mut Draw) -> Vec<Vec<u8>> {
    let k = count.min(items.len());
    for i in 0..k {
        let j = i + d.below(items.len() - i);
        items.swap(i, j);
    }
    items.truncate(k);
    items
}

/// The command run deterministically at `m`, if it is one of ours.
pub fn run(ctx: Ctx, argv: &[Vec<u8>], m: Moment) -> Option<Outcome> {
    // Runs for every command an entry applies: most are none of ours, so
    // they leave before any allocation.
    let first = argv.first()?;
    if first.len() > 11
        || !matches!(
            first.first()?.to_ascii_lowercase(),
            b't' | b's' | b'r' | b'k' | b'h' | b'z'
        )
    {
        return None;
    }
    let name = String::from_utf8_lossy(first).to_ascii_lowercase();
    let mut d = Draw::new(m.seed);
    match name.as_str() {
        "time" if argv.len() == 1 => Some(Outcome::Strings(vec![
            (m.time / 1000).to_string().into_bytes(),
            ((m.time % 1000) * 1000).to_string().into_bytes(),
        ])),
        "spop" => spop(ctx, argv, &mut d),
        "srandmember" => srandmember(ctx, argv, &mut d),
        "randomkey" if argv.len() == 1 => randomkey(ctx, &mut d),
        "smembers" | "sinter" | "sunion" | "sdiff" => sorted(ctx, argv).map(Outcome::Set),
        "hkeys" | "hvals" | "keys" => sorted(ctx, argv).map(Outcome::Strings),
        "hgetall" => sorted_pairs(ctx, argv),
        "scan" | "sscan" | "hscan" | "zscan" => whole_scan(ctx, argv, &name),
        _ => None,
    }
}

/// SPOP key [count]: the members sorted, then drawn; removed with SREM.
fn spop(ctx: Ctx, argv: &[Vec<u8>], d: &mut Draw) -> Option<Outcome> {
    let count = match argv.len() {
        2 => None,
        3 => Some(
            usize::try_from(parse_i64(&argv[2])?)
                .ok()
                .filter(|&c| c > 0)?,
        ),
        _ => return None,
    };
    let members = call(ctx, &[b"SMEMBERS", &argv[1]]).ok()?.as_strings()?;
    if members.is_empty() {
        return None;
    }
    let mut sorted = members;
    sorted.sort();
    let chosen = pick_distinct(sorted, count.unwrap_or(1), d);
    let mut srem: Vec<Vec<u8>> = vec![b"SREM".to_vec(), argv[1].clone()];
    srem.extend(chosen.iter().cloned());
    if let Err(e) = ffi::call(ctx, &srem) {
        return Some(Outcome::Error(e));
    }
    Some(match count {
        None => Outcome::Bulk(chosen.into_iter().next()),
        Some(_) => Outcome::Set(chosen),
    })
}

/// SRANDMEMBER key [count]: positive counts are distinct members, negative
/// ones may repeat, as in Redis.
fn srandmember(ctx: Ctx, argv: &[Vec<u8>], d: &mut Draw) -> Option<Outcome> {
    let count = match argv.len() {
        2 => None,
        3 => Some(parse_i64(&argv[2])?),
        _ => return None,
    };
    if count == Some(0) {
        return None;
    }
    let mut members = call(ctx, &[b"SMEMBERS", &argv[1]]).ok()?.as_strings()?;
    if members.is_empty() {
        return None;
    }
    members.sort();
    Some(match count {
        None => Outcome::Bulk(pick_distinct(members, 1, d).pop()),
        Some(c) if c > 0 => Outcome::Strings(pick_distinct(members, c as usize, d)),
        Some(c) => {
            let n = c.unsigned_abs().min(1 << 24) as usize;
            Outcome::Strings(
                (0..n)
                    .map(|_| members[d.below(members.len())].clone())
                    .collect(),
            )
        }
    })
}

/// RANDOMKEY: drawn from all keys, sorted (a full pass: O(keys)).
fn randomkey(ctx: Ctx, d: &mut Draw) -> Option<Outcome> {
    let mut keys = call(ctx, &[b"KEYS", b"*"]).ok()?.as_strings()?;
    if keys.is_empty() {
        return Some(Outcome::Bulk(None));
    }
    keys.sort();
    let i = d.below(keys.len());
    Some(Outcome::Bulk(Some(keys.swap_remove(i))))
}

/// A reply whose order follows the hash tables, sorted.
fn sorted(ctx: Ctx, argv: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let reply = ffi::call(ctx, argv).ok()?;
    let mut items = reply.as_strings()?;
    items.sort();
    Some(items)
}

/// HGETALL: field-value pairs sorted by field.
fn sorted_pairs(ctx: Ctx, argv: &[Vec<u8>]) -> Option<Outcome> {
    let items = ffi::call(ctx, argv).ok()?.as_strings()?;
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = items
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    pairs.sort();
    Some(Outcome::Map(pairs))
}

/// SCAN, SSCAN, HSCAN, ZSCAN: the whole iteration in one page, sorted and
/// without the repeats a scan may return, with cursor 0 (a complete scan,
/// as Redis defines it). A scan resumed from another cursor gets nothing
/// more.
fn whole_scan(ctx: Ctx, argv: &[Vec<u8>], name: &str) -> Option<Outcome> {
    let cursor_at = if name == "scan" { 1 } else { 2 };
    let start = argv.get(cursor_at)?;
    if start.as_slice() != b"0" {
        return Some(Outcome::ScanPage(Vec::new()));
    }
    let pairs = name == "hscan" || name == "zscan";
    let mut args = argv.to_vec();
    let mut seen = std::collections::BTreeMap::new();
    loop {
        let (next, items) = ffi::call(ctx, &args).ok()?.as_scan_page()?;
        if pairs {
            for c in items.chunks(2).filter(|c| c.len() == 2) {
                seen.insert(c[0].clone(), Some(c[1].clone()));
            }
        } else {
            for i in items {
                seen.insert(i, None);
            }
        }
        if next.as_slice() == b"0" {
            break;
        }
        args[cursor_at] = next;
    }
    Some(Outcome::ScanPage(
        seen.into_iter()
            .flat_map(|(k, v)| std::iter::once(k).chain(v))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_the_seed() {
        let picks = |seed| {
            let mut d = Draw::new(seed);
            (0..20).map(|_| d.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(picks(42), picks(42));
        assert_ne!(picks(42), picks(43));
        // Fixed values: a change of algorithm would split mixed versions.
        assert_eq!(mix(0), 0xE220_A839_7B1D_CDAF);
        let items: Vec<Vec<u8>> = (0..10).map(|i| vec![i]).collect();
        let mut d = Draw::new(7);
        let chosen = pick_distinct(items.clone(), 4, &mut d);
        assert_eq!(chosen.len(), 4);
        let mut uniq = chosen.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 4);
        assert_eq!(pick_distinct(items, 40, &mut Draw::new(7)).len(), 10);
    }
}
