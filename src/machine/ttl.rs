//! Expiry times as the log sees them: relative TTLs become absolute at the
//! entry's time, and every absolute time is stored in Redis shifted far
//! into the future, so that Redis never expires a key by its own clock.
//!
//! Pure functions over argument vectors and numbers: no Redis calls, so
//! they are unit-tested here. `docs/determinism.md` gives the reasons.

/// What Redis stores as a key's expire time is the logical expiry time
/// (Unix ms) plus this: about 31,700 years. No node's clock reaches a stored
/// time, so Redis's lazy and active expiry never fire; only entries of the
/// log delete expired keys (see `expiry`).
pub const SHIFT_MS: i64 = 1_000_000_000_000_000;

/// Stored times below this are not shifted: they were set before expiry
/// times were shifted (an upgraded node's dataset) and are taken as they are.
const UNSHIFTED_BELOW: i64 = SHIFT_MS / 2;

/// The stored (shifted) expire time for a logical one. Times before 1970
/// count as 0 (long past: the key is deleted); times too large to shift
/// are kept at the largest one Redis can hold (never expires).
pub fn to_stored(logical_ms: i64) -> i64 {
    logical_ms.max(0).checked_add(SHIFT_MS).unwrap_or(i64::MAX)
}

/// The logical expiry time of a stored one.
pub fn to_logical(stored_ms: i64) -> i64 {
    if stored_ms < UNSHIFTED_BELOW {
        stored_ms
    } else {
        stored_ms - SHIFT_MS
    }
}

/// Parses an integer argument the way Redis's `string2ll` does: an optional
/// minus sign and digits, no leading zeros, no spaces, no plus sign.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(arg).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    s.parse().ok()
}

fn is(arg: &[u8], name: &str) -> bool {
    arg.eq_ignore_ascii_case(name.as_bytes())
}

fn num(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// How a command's expiry options were rewritten.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub argv: Vec<Vec<u8>>,
    /// The logical expiry time the command sets, when it sets one: a key
    /// given a time at or before the entry's is deleted right after.
    pub expires_at: Option<i64>,
}

/// Rewrites the expiry arguments of `argv` (applied at entry time `now`,
/// Unix ms) into stored absolute times. Commands that set no expiry, and
/// arguments Redis itself would refuse, are returned unchanged: Redis then
/// answers with its own error, and sets no expiry. Arguments are changed in
/// place (a value is never copied).
pub fn rewrite(mut argv: Vec<Vec<u8>>, now: i64) -> Rewritten {
    let expires_at = match argv.first() {
        Some(name) if is(name, "set") && argv.len() > 3 => rewrite_option(&mut argv, 3, now),
        Some(name) if is(name, "getex") && argv.len() > 2 => rewrite_option(&mut argv, 2, now),
        Some(name) if (is(name, "setex") || is(name, "psetex")) && argv.len() == 4 => {
            let seconds = is(name, "setex");
            rewrite_setex(&mut argv, seconds, now)
        }
        Some(name)
            if ["expire", "pexpire", "expireat", "pexpireat"]
                .iter()
                .any(|n| is(name, n))
                && argv.len() >= 3 =>
        {
            rewrite_expire(&mut argv, now)
        }
        Some(name) if is(name, "restore") && argv.len() >= 4 => rewrite_restore(&mut argv, now),
        _ => None,
    };
    Rewritten { argv, expires_at }
}

/// SET and GETEX: one EX/PX/EXAT/PXAT option among the options from
/// `first`. Redis refuses a value <= 0 (or one that overflows once made
/// absolute): left to Redis.
fn rewrite_option(argv: &mut [Vec<u8>], first: usize, now: i64) -> Option<i64> {
    let mut found = None;
    let mut i = first;
    while i < argv.len() {
        let a = &argv[i];
        if ["ex", "px", "exat", "pxat"].iter().any(|o| is(a, o)) {
            if found.is_some() || i + 1 >= argv.len() {
                return None; // Redis's syntax error
            }
            found = Some(i);
            i += 2;
        } else {
            i += 1;
        }
    }
    let at = found?;
    let v = parse_i64(&argv[at + 1])?;
    if v <= 0 {
        return None;
    }
    let opt = &argv[at];
    let logical = if is(opt, "ex") {
        v.checked_mul(1000)?.checked_add(now)?
    } else if is(opt, "px") {
        v.checked_add(now)?
    } else if is(opt, "exat") {
        v.checked_mul(1000)?
    } else {
        v
    };
    argv[at] = b"PXAT".to_vec();
    argv[at + 1] = num(to_stored(logical));
    Some(logical)
}

/// SETEX key seconds value / PSETEX key ms value -> SET key value PXAT t
/// (same reply, same keyspace events).
fn rewrite_setex(argv: &mut Vec<Vec<u8>>, seconds: bool, now: i64) -> Option<i64> {
    let v = parse_i64(&argv[2])?;
    if v <= 0 {
        return None;
    }
    let ms = if seconds { v.checked_mul(1000)? } else { v };
    let logical = ms.checked_add(now)?;
    let value = std::mem::take(&mut argv[3]);
    let key = std::mem::take(&mut argv[1]);
    *argv = vec![
        b"SET".to_vec(),
        key,
        value,
        b"PXAT".to_vec(),
        num(to_stored(logical)),
    ];
    Some(logical)
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key t [NX|XX|GT|LT] -> PEXPIREAT.
/// Negative and past times are allowed, as in Redis: the key is deleted.
fn rewrite_expire(argv: &mut [Vec<u8>], now: i64) -> Option<i64> {
    let name = &argv[0];
    let v = parse_i64(&argv[2])?;
    let ms = if is(name, "expire") || is(name, "expireat") {
        v.checked_mul(1000)?
    } else {
        v
    };
    let absolute = is(name, "expireat") || is(name, "pexpireat");
    let logical = if absolute { ms } else { ms.checked_add(now)? };
    argv[0] = b"PEXPIREAT".to_vec();
    argv[2] = num(to_stored(logical));
    Some(logical)
}

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]: a TTL
/// of 0 is none; otherwise it becomes an absolute stored time.
fn rewrite_restore(argv: &mut Vec<Vec<u8>>, now: i64) -> Option<i64> {
    let ttl = parse_i64(&argv[2])?;
    if ttl <= 0 {
        return None; // 0: no expiry; negative: Redis's error
    }
    let has_abs = argv[4..].iter().any(|a| is(a, "absttl"));
    let logical = if has_abs { ttl } else { ttl.checked_add(now)? };
    argv[2] = num(to_stored(logical));
    if !has_abs {
        argv.push(b"ABSTTL".to_vec());
    }
    Some(logical)
}

/// The commands that report a key's expiry, answered by the module from
/// the logical time (Redis would report the shifted one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlQuery {
    Ttl,
    Pttl,
    ExpireTime,
    PexpireTime,
}

impl TtlQuery {
    /// The query `argv` is, if it is one with the right arity.
    pub fn of(argv: &[Vec<u8>]) -> Option<TtlQuery> {
        if argv.len() != 2 {
            return None;
        }
        let name = &argv[0];
        [
            ("ttl", TtlQuery::Ttl),
            ("pttl", TtlQuery::Pttl),
            ("expiretime", TtlQuery::ExpireTime),
            ("pexpiretime", TtlQuery::PexpireTime),
        ]
        .into_iter()
        .find(|(n, _)| is(name, n))
        .map(|(_, q)| q)
    }

    /// Redis's answer for a key whose stored expire time is `stored`
    /// (None: the key has none), at time `now` (Unix ms); a missing key
    /// answers -2 before this is asked.
    pub fn answer(self, stored: Option<i64>, now: i64) -> i64 {
        let Some(stored) = stored else { return -1 };
        let at = to_logical(stored);
        let remaining = (at - now).max(0);
        match self {
            TtlQuery::Ttl => (remaining + 500) / 1000,
            TtlQuery::Pttl => remaining,
            TtlQuery::ExpireTime => (at + 500) / 1000,
            TtlQuery::PexpireTime => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    fn text(argv: &[Vec<u8>]) -> String {
        argv.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn relative_ttls_become_stored_absolute_times_at_the_entry_time() {
        let st = |ms: i64| to_stored(NOW + ms).to_string();
        let cases = [
            ("SET k v EX 10", format!("SET k v PXAT {}", st(10_000))),
            (
                "set k v nx px 3 get",
                format!("set k v nx PXAT {} get", st(3)),
            ),
            (
                "SET k v EXAT 1800000000",
                format!("SET k v PXAT {}", to_stored(1_800_000_000_000)),
            ),
            ("SET k v PXAT 5", format!("SET k v PXAT {}", to_stored(5))),
            ("SETEX k 2 v", format!("SET k v PXAT {}", st(2000))),
            ("PSETEX k 7 v", format!("SET k v PXAT {}", st(7))),
            ("GETEX k PX 50", format!("GETEX k PXAT {}", st(50))),
            ("EXPIRE k 10 GT", format!("PEXPIREAT k {} GT", st(10_000))),
            ("PEXPIRE k -5", format!("PEXPIREAT k {}", st(-5))),
            ("EXPIREAT k 1", format!("PEXPIREAT k {}", to_stored(1000))),
            (
                "RESTORE k 100 payload",
                format!("RESTORE k {} payload ABSTTL", st(100)),
            ),
            (
                "RESTORE k 100 payload ABSTTL",
                format!("RESTORE k {} payload ABSTTL", to_stored(100)),
            ),
        ];
        for (input, want) in cases {
            let got = rewrite(args(input), NOW);
            assert_eq!(text(&got.argv), want, "{input}");
            assert!(got.expires_at.is_some(), "{input}");
        }
        assert_eq!(
            rewrite(args("EXPIRE k 10"), NOW).expires_at,
            Some(NOW + 10_000)
        );
    }

    #[test]
    fn arguments_redis_refuses_and_commands_without_expiry_are_left_to_redis() {
        for input in [
            "SET k v",
            "SET k v KEEPTTL",
            "SET k v EX 0",
            "SET k v EX -1",
            "SET k v EX 10 PX 10",
            "SET k v EX",
            "SET k v EX 1.5",
            "SET k v EX 010",
            "SET k v EX 9223372036854775807",
            "SETEX k 0 v",
            "SETEX k abc v",
            "GETEX k PERSIST",
            "GETEX k",
            "EXPIRE k +5",
            "EXPIRE k 9223372036854775807",
            "RESTORE k 0 payload",
            "RESTORE k -1 payload",
            "GET k",
            "INCR k",
        ] {
            let got = rewrite(args(input), NOW);
            assert_eq!(text(&got.argv), input);
            assert_eq!(got.expires_at, None, "{input}");
        }
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_queries_answer_from_the_logical_time() {
        let stored = to_stored(NOW + 10_400);
        assert_eq!(TtlQuery::Ttl.answer(Some(stored), NOW), 10);
        assert_eq!(TtlQuery::Pttl.answer(Some(stored), NOW), 10_400);
        assert_eq!(
            TtlQuery::PexpireTime.answer(Some(stored), NOW),
            NOW + 10_400
        );
        assert_eq!(
            TtlQuery::ExpireTime.answer(Some(stored), NOW),
            (NOW + 10_400 + 500) / 1000
        );
        assert_eq!(TtlQuery::Ttl.answer(None, NOW), -1);
        assert_eq!(TtlQuery::of(&args("pttl k")), Some(TtlQuery::Pttl));
        assert_eq!(TtlQuery::of(&args("ttl k extra")), None);
        assert_eq!(to_stored(i64::MAX - 1), i64::MAX);
        assert_eq!(to_stored(-7), SHIFT_MS);
        assert_eq!(to_logical(to_stored(NOW)), NOW);
        // Set before times were shifted: taken as it is.
        assert_eq!(to_logical(NOW), NOW);
    }
}
