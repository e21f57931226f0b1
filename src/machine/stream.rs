//! XADD with an automatic ID (`*`): Redis takes the milliseconds from its
//! clock. Here they come from the entry's time, never below the stream's
//! last ID, so every node gives the entry the same ID.
//!
//! XREAD and XREADGROUP are flagged `blocking` by Redis, but block only
//! with a BLOCK option ([`blocks`]): without it XREAD is a read and
//! XREADGROUP a write (it moves the group's last-delivered ID and fills
//! its pending entries list).

use redis_module::raw;

use crate::ffi;

type Ctx = *mut raw::RedisModuleCtx;

/// Where XADD's ID argument is, parsing the options before it the way
/// Redis does ([NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]]).
pub fn xadd_id_position(argv: &[Vec<u8>]) -> Option<usize> {
    let is = |a: &[u8], n: &str| a.eq_ignore_ascii_case(n.as_bytes());
    let mut i = 2;
    while i < argv.len() {
        let more = argv.len() - 1 - i;
        let a = &argv[i];
        if a.as_slice() == b"*" {
            return Some(i);
        } else if (is(a, "maxlen") || is(a, "minid")) && more > 0 {
            let next = &argv[i + 1];
            if (next.as_slice() == b"~" || next.as_slice() == b"=") && more > 1 {
                i += 1;
            }
            i += 2;
        } else if is(a, "limit") && more > 0 {
            i += 2;
        } else if is(a, "nomkstream") {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// Whether a command Redis flags `blocking` would block as given: XREAD and
/// XREADGROUP only with a BLOCK option (among their options, read as Redis
/// reads them: a group, consumer or stream named "block" is not one),
/// every other one always. With only the first arguments (the command
/// filter's view) an XREAD may be found not to block; `raft()` decides
/// again from the whole command line.
pub fn blocks(name: &str, argv: &[&[u8]]) -> bool {
    if !matches!(name, "xread" | "xreadgroup") {
        return true;
    }
    crate::blocking::spec::xread_blocks(argv)
}

/// XADD ... * ... becomes XADD ... <ms>-* ..., with ms the entry's time or
/// the stream's last ID's, whichever is later. Anything else: None.
pub fn xadd_at(ctx: Ctx, argv: &[Vec<u8>], now: i64) -> Option<Vec<Vec<u8>>> {
    if !argv.first()?.eq_ignore_ascii_case(b"xadd") || argv.len() < 5 {
        return None;
    }
    let at = xadd_id_position(argv)?;
    if argv[at].as_slice() != b"*" {
        return None;
    }
    let last_ms = last_id_ms(ctx, &argv[1]).unwrap_or(0);
    let ms = (now.max(0) as u64).max(last_ms);
    let mut out = argv.to_vec();
    out[at] = format!("{ms}-*").into_bytes();
    Some(out)
}

/// The milliseconds of the stream's last generated ID (None: no stream).
fn last_id_ms(ctx: Ctx, key: &[u8]) -> Option<u64> {
    let argv = [b"XINFO".to_vec(), b"STREAM".to_vec(), key.to_vec()];
    let info = ffi::call(ctx, &argv).ok()?.to_value()?;
    let id = info.field(b"last-generated-id")?.bytes()?;
    let ms = id.split(|&b| b == b'-').next()?;
    std::str::from_utf8(ms).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_id_is_found_after_the_options_as_redis_parses_them() {
        assert_eq!(xadd_id_position(&args("XADD s * f v")), Some(2));
        assert_eq!(
            xadd_id_position(&args("XADD s NOMKSTREAM MAXLEN ~ 10 * f v")),
            Some(6)
        );
        assert_eq!(
            xadd_id_position(&args("XADD s MINID = 5 LIMIT 3 * f v")),
            Some(7)
        );
        assert_eq!(xadd_id_position(&args("XADD s maxlen 10 1-1 f v")), Some(4));
        assert_eq!(xadd_id_position(&args("XADD s 5-* f v")), Some(2));
    }

    #[test]
    fn xread_blocks_only_with_a_block_option_before_streams() {
        let blocks_as = |s: &str| {
            let a = args(s);
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            blocks(&s.split(' ').next().unwrap().to_lowercase(), &refs)
        };
        assert!(!blocks_as("XREAD COUNT 2 STREAMS s 0"));
        assert!(blocks_as("XREAD COUNT 2 BLOCK 0 STREAMS s 0"));
        assert!(blocks_as("XREAD block 10 STREAMS s 0"));
        assert!(!blocks_as("XREAD STREAMS block 0"));
        assert!(!blocks_as("XREADGROUP GROUP g c COUNT 1 NOACK STREAMS s >"));
        assert!(blocks_as("XREADGROUP GROUP g c BLOCK 100 STREAMS s >"));
        assert!(!blocks_as("XREADGROUP GROUP g c STREAMS block >"));
        assert!(!blocks_as("XREADGROUP GROUP block c STREAMS s >"));
        assert!(!blocks_as("XREADGROUP GROUP g block NOACK STREAMS s >"));
        assert!(blocks_as("BLPOP k 0"));
    }
}
