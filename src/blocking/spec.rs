//! What a blocking command waits for: its kind (list, sorted set, stream
//! read or consumer group), the keys it waits on, its timeout, how many
//! elements one serving takes, and the same command narrowed to some of its
//! keys.
//!
//! The parser is strict: a command line it does not fully accept is not
//! waited for by the module but proposed as it is, so Redis itself answers
//! it (its own syntax and timeout errors) when the entry applies.

/// What a command waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    List,
    Zset,
    /// XREAD ... BLOCK: reads, takes nothing.
    Stream,
    /// XREADGROUP ... BLOCK with `>`: waits on streams, and each serving
    /// is a write (it moves the group's last-delivered ID).
    Group,
}

/// Where the keys and the timeout are in the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `BLPOP key [key ...] timeout` (BRPOP, BZPOPMIN, BZPOPMAX).
    KeysThenTimeout,
    /// `BRPOPLPUSH source destination timeout`, `BLMOVE source destination
    /// LEFT|RIGHT LEFT|RIGHT timeout`: waits on the source only.
    Move,
    /// `BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]`
    /// (BZMPOP with MIN|MAX).
    Mpop,
    /// `XREAD [COUNT n] BLOCK ms STREAMS key [key ...] id [id ...]`: the
    /// position of STREAMS.
    Xread(usize),
    /// `XREADGROUP GROUP g c [COUNT n] BLOCK ms [NOACK] STREAMS key
    /// [key ...] > [> ...]` (options in any order): the position of
    /// STREAMS.
    XreadGroup(usize),
}

/// A blocking command line the module waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    form: Form,
    /// The keys it waits on, in the command's order.
    pub keys: Vec<Vec<u8>>,
    /// Milliseconds, as Redis computes them (seconds * 1000, truncated);
    /// 0 waits forever.
    pub timeout_ms: u64,
    /// How many elements one serving may take (COUNT, else 1).
    pub takes: usize,
    /// XREADGROUP's consumer group.
    pub group: Option<Vec<u8>>,
}

/// The commands the module serves as blocking commands, and their kind.
pub fn kind_of(name: &[u8]) -> Option<Kind> {
    let name = name.to_ascii_lowercase();
    Some(match name.as_slice() {
        b"blpop" | b"brpop" | b"brpoplpush" | b"blmove" | b"blmpop" => Kind::List,
        b"bzpopmin" | b"bzpopmax" | b"bzmpop" => Kind::Zset,
        b"xread" => Kind::Stream,
        b"xreadgroup" => Kind::Group,
        _ => return None,
    })
}

/// Whether an XREAD or XREADGROUP line asks to block: a BLOCK option
/// among its options, read as Redis reads them (GROUP takes two values,
/// COUNT and BLOCK one, NOACK none, STREAMS ends them), so a group,
/// consumer or stream named "block" is not the option. Without BLOCK,
/// XREAD is an ordinary read and XREADGROUP an ordinary write, not this
/// module's. A line cut short (the command filter sees two arguments)
/// may be found not to block: the whole line is judged again later.
pub fn xread_blocks(argv: &[&[u8]]) -> bool {
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        let is = |w: &str| a.eq_ignore_ascii_case(w.as_bytes());
        if is("block") {
            return true;
        } else if is("count") {
            i += 2;
        } else if is("group") {
            i += 3;
        } else if is("noack") {
            i += 1;
        } else {
            // STREAMS, or a syntax error Redis answers.
            return false;
        }
    }
    false
}

/// Redis's timeout in seconds (a float, never negative) as milliseconds;
/// None for anything Redis might read differently (hex floats, inf, ...).
fn timeout_ms(arg: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return None;
    }
    Some((secs * 1000.0) as u64)
}

fn positive(arg: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(arg).ok()?;
    if s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse::<usize>()
        .ok()
        .filter(|n| *n > 0 && *n <= i32::MAX as usize)
}

impl Spec {
    /// The spec of a blocking command line; None when it is not one of
    /// ours or not a line this parser fully accepts.
    pub fn parse(argv: &[Vec<u8>]) -> Option<Spec> {
        let kind = kind_of(argv.first()?)?;
        let name = argv[0].to_ascii_lowercase();
        match name.as_slice() {
            b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" => {
                if argv.len() < 3 {
                    return None;
                }
                Some(Spec {
                    kind,
                    form: Form::KeysThenTimeout,
                    keys: argv[1..argv.len() - 1].to_vec(),
                    timeout_ms: timeout_ms(argv.last()?)?,
                    takes: 1,
                    group: None,
                })
            }
            b"xread" => {
                let mut i = 1;
                let mut timeout = None;
                while i < argv.len() && !argv[i].eq_ignore_ascii_case(b"streams") {
                    let value = argv.get(i + 1)?;
                    if argv[i].eq_ignore_ascii_case(b"block") {
                        let s = std::str::from_utf8(value).ok()?;
                        timeout = Some(s.parse::<u64>().ok().filter(|ms| *ms < 1 << 50)?);
                    } else if argv[i].eq_ignore_ascii_case(b"count") {
                        std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
                    } else {
                        return None;
                    }
                    i += 2;
                }
                let rest = argv.len().checked_sub(i + 1)?;
                if rest == 0 || rest % 2 != 0 {
                    return None;
                }
                let n = rest / 2;
                Some(Spec {
                    kind,
                    form: Form::Xread(i),
                    keys: argv[i + 1..i + 1 + n].to_vec(),
                    timeout_ms: timeout?,
                    takes: 0,
                    group: None,
                })
            }
            b"xreadgroup" => {
                // Options as Redis reads them, each at most once here.
                let mut i = 1;
                let (mut timeout, mut group, mut count, mut noack) = (None, None, false, false);
                while i < argv.len() && !argv[i].eq_ignore_ascii_case(b"streams") {
                    let a = &argv[i];
                    if a.eq_ignore_ascii_case(b"noack") && !noack {
                        noack = true;
                        i += 1;
                    } else if a.eq_ignore_ascii_case(b"group") && group.is_none() {
                        argv.get(i + 2)?;
                        group = Some(argv[i + 1].clone());
                        i += 3;
                    } else if a.eq_ignore_ascii_case(b"block") && timeout.is_none() {
                        let s = std::str::from_utf8(argv.get(i + 1)?).ok()?;
                        timeout = Some(s.parse::<u64>().ok().filter(|ms| *ms < 1 << 50)?);
                        i += 2;
                    } else if a.eq_ignore_ascii_case(b"count") && !count {
                        std::str::from_utf8(argv.get(i + 1)?)
                            .ok()?
                            .parse::<u64>()
                            .ok()?;
                        count = true;
                        i += 2;
                    } else {
                        return None;
                    }
                }
                let rest = argv.len().checked_sub(i + 1)?;
                if rest == 0 || rest % 2 != 0 {
                    return None;
                }
                let n = rest / 2;
                // Only `>` waits: an ID reads the consumer's pending
                // entries, which Redis answers at once.
                if argv[i + 1 + n..].iter().any(|id| id.as_slice() != b">") {
                    return None;
                }
                Some(Spec {
                    kind,
                    form: Form::XreadGroup(i),
                    keys: argv[i + 1..i + 1 + n].to_vec(),
                    timeout_ms: timeout?,
                    takes: 0,
                    group: Some(group?),
                })
            }
            b"brpoplpush" | b"blmove" => {
                let at = if name == b"brpoplpush" {
                    if argv.len() != 4 {
                        return None;
                    }
                    3
                } else {
                    if argv.len() != 6 {
                        return None;
                    }
                    for side in &argv[3..5] {
                        if !side.eq_ignore_ascii_case(b"left")
                            && !side.eq_ignore_ascii_case(b"right")
                        {
                            return None;
                        }
                    }
                    5
                };
                Some(Spec {
                    kind,
                    form: Form::Move,
                    keys: vec![argv[1].clone()],
                    timeout_ms: timeout_ms(&argv[at])?,
                    takes: 1,
                    group: None,
                })
            }
            _ => {
                // BLMPOP / BZMPOP timeout numkeys key... where [COUNT n]
                let timeout = timeout_ms(argv.get(1)?)?;
                let n = positive(argv.get(2)?)?;
                let rest = argv.get(3 + n..)?;
                let (a, b) = match kind {
                    Kind::List => (b"left".as_slice(), b"right".as_slice()),
                    Kind::Zset | Kind::Stream | Kind::Group => {
                        (b"min".as_slice(), b"max".as_slice())
                    }
                };
                let takes = match rest {
                    [w] if w.eq_ignore_ascii_case(a) || w.eq_ignore_ascii_case(b) => 1,
                    [w, c, count]
                        if (w.eq_ignore_ascii_case(a) || w.eq_ignore_ascii_case(b))
                            && c.eq_ignore_ascii_case(b"count") =>
                    {
                        positive(count)?
                    }
                    _ => return None,
                };
                Some(Spec {
                    kind,
                    form: Form::Mpop,
                    keys: argv[3..3 + n].to_vec(),
                    timeout_ms: timeout,
                    takes,
                    group: None,
                })
            }
        }
    }

    /// XREAD's `$` ids replaced by `last(key)`: the stream's last ID when
    /// the client started to wait, as Redis fixes it when it blocks.
    pub fn fix_last_ids(&self, argv: &mut [Vec<u8>], last: impl Fn(&[u8]) -> Vec<u8>) {
        if let Form::Xread(at) = self.form {
            let n = self.keys.len();
            for (i, key) in self.keys.iter().enumerate() {
                if argv[at + 1 + n + i] == b"$" {
                    argv[at + 1 + n + i] = last(key);
                }
            }
        }
    }

    /// The same command on `keys` only (a subset of its keys, in order):
    /// what the log runs to serve it from those keys.
    pub fn narrowed(&self, argv: &[Vec<u8>], keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        match self.form {
            Form::KeysThenTimeout => {
                let mut out = vec![argv[0].clone()];
                out.extend(keys.iter().cloned());
                out.push(argv[argv.len() - 1].clone());
                out
            }
            Form::Move => argv.to_vec(),
            Form::Xread(at) => {
                let n = self.keys.len();
                let mut out = argv[..=at].to_vec();
                let ids: Vec<&Vec<u8>> = keys
                    .iter()
                    .filter_map(|k| self.keys.iter().position(|x| x == k))
                    .map(|i| &argv[at + 1 + n + i])
                    .collect();
                out.extend(keys.iter().cloned());
                out.extend(ids.into_iter().cloned());
                out
            }
            Form::XreadGroup(at) => {
                // Its options without BLOCK: the entry never blocks.
                let mut out = vec![argv[0].clone()];
                let mut i = 1;
                while i < at {
                    let take = if argv[i].eq_ignore_ascii_case(b"group") {
                        3
                    } else if argv[i].eq_ignore_ascii_case(b"noack") {
                        1
                    } else {
                        2
                    };
                    if !argv[i].eq_ignore_ascii_case(b"block") {
                        out.extend(argv[i..i + take].iter().cloned());
                    }
                    i += take;
                }
                out.push(argv[at].clone());
                out.extend(keys.iter().cloned());
                out.extend(keys.iter().map(|_| b">".to_vec()));
                out
            }
            Form::Mpop => {
                let n = self.keys.len();
                let mut out = vec![
                    argv[0].clone(),
                    argv[1].clone(),
                    keys.len().to_string().into_bytes(),
                ];
                out.extend(keys.iter().cloned());
                out.extend(argv[3 + n..].iter().cloned());
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_every_form() {
        let s = Spec::parse(&v(&["BLPOP", "a", "b", "1.5"])).unwrap();
        assert_eq!(
            (s.kind, s.keys.clone(), s.timeout_ms, s.takes),
            (Kind::List, v(&["a", "b"]), 1500, 1)
        );
        assert_eq!(
            s.narrowed(&v(&["BLPOP", "a", "b", "1.5"]), &v(&["b"])),
            v(&["BLPOP", "b", "1.5"])
        );
        let s = Spec::parse(&v(&["bzpopmax", "z", "0"])).unwrap();
        assert_eq!((s.kind, s.timeout_ms), (Kind::Zset, 0));
        let s = Spec::parse(&v(&["BLMOVE", "s", "d", "LEFT", "right", "0.25"])).unwrap();
        assert_eq!((s.keys.clone(), s.timeout_ms), (v(&["s"]), 250));
        let s = Spec::parse(&v(&["BRPOPLPUSH", "s", "d", "0"])).unwrap();
        assert_eq!(s.keys, v(&["s"]));
        let line = v(&["BLMPOP", "2", "2", "a", "b", "LEFT", "COUNT", "3"]);
        let s = Spec::parse(&line).unwrap();
        assert_eq!(
            (s.keys.clone(), s.timeout_ms, s.takes),
            (v(&["a", "b"]), 2000, 3)
        );
        assert_eq!(
            s.narrowed(&line, &v(&["b"])),
            v(&["BLMPOP", "2", "1", "b", "LEFT", "COUNT", "3"])
        );
        let line = v(&[
            "XREAD", "COUNT", "2", "BLOCK", "100", "STREAMS", "a", "b", "1-0", "$",
        ]);
        let s = Spec::parse(&line).unwrap();
        assert_eq!(
            (s.kind, s.keys.clone(), s.timeout_ms, s.takes),
            (Kind::Stream, v(&["a", "b"]), 100, 0)
        );
        assert_eq!(
            s.narrowed(&line, &v(&["b"])),
            v(&["XREAD", "COUNT", "2", "BLOCK", "100", "STREAMS", "b", "$"])
        );
        assert!(xread_blocks(&[b"xread", b"block"]));
        assert!(!xread_blocks(&[b"XREAD", b"STREAMS", b"block", b"0"]));
        let line = v(&[
            "XREADGROUP",
            "COUNT",
            "3",
            "GROUP",
            "block",
            "c",
            "BLOCK",
            "250",
            "NOACK",
            "STREAMS",
            "a",
            "b",
            ">",
            ">",
        ]);
        let s = Spec::parse(&line).unwrap();
        assert_eq!(
            (s.kind, s.keys.clone(), s.timeout_ms, s.group.clone()),
            (Kind::Group, v(&["a", "b"]), 250, Some(b"block".to_vec()))
        );
        // Narrowed, it no longer blocks.
        assert_eq!(
            s.narrowed(&line, &v(&["b"])),
            v(&[
                "XREADGROUP",
                "COUNT",
                "3",
                "GROUP",
                "block",
                "c",
                "NOACK",
                "STREAMS",
                "b",
                ">"
            ])
        );
        let blocks = |l: &[&str]| {
            let a = v(l);
            let r: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            xread_blocks(&r)
        };
        assert!(blocks(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "0",
            "STREAMS",
            "s",
            ">"
        ]));
        assert!(!blocks(&[
            "XREADGROUP",
            "GROUP",
            "block",
            "block",
            "STREAMS",
            "s",
            ">"
        ]));
        assert!(!blocks(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "NOACK",
            "STREAMS",
            "block",
            ">"
        ]));
        assert!(!blocks(&["XREADGROUP", "GROUP"]));
        let s = Spec::parse(&v(&["BZMPOP", "0", "1", "z", "min"])).unwrap();
        assert_eq!((s.kind, s.takes), (Kind::Zset, 1));
        // Redis truncates: 0.0001 s is 0 ms, which waits forever.
        assert_eq!(
            Spec::parse(&v(&["BLPOP", "a", "0.0001"]))
                .unwrap()
                .timeout_ms,
            0
        );
    }

    #[test]
    fn leaves_what_redis_must_judge_to_redis() {
        for bad in [
            &["BLPOP", "a", "-1"][..],
            &["BLPOP", "a", "x"],
            &["BLPOP", "a", "inf"],
            &["BLPOP", "a", "0x10"],
            &["BLPOP", "a"],
            &["BLMOVE", "s", "d", "UP", "LEFT", "0"],
            &["BRPOPLPUSH", "s", "d"],
            &["BLMPOP", "0", "2", "a", "LEFT"],
            &["BLMPOP", "0", "1", "a", "MIN"],
            &["BLMPOP", "0", "1", "a", "LEFT", "COUNT", "0"],
            &["BLMPOP", "0", "0", "LEFT"],
            &["BZMPOP", "0", "1", "z", "LEFT"],
            &["XREAD", "STREAMS", "a", "0"],
            &["XREAD", "BLOCK", "-1", "STREAMS", "a", "0"],
            &["XREAD", "BLOCK", "0", "STREAMS", "a", "b", "0"],
            &["XREAD", "BLOCK", "0", "NOACK", "STREAMS", "a", "0"],
            // An ID other than `>` reads history: Redis answers at once.
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "a",
                "0",
            ],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "a",
                "b",
                ">",
                "0",
            ],
            &["XREADGROUP", "BLOCK", "0", "STREAMS", "a", ">"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "a",
                "b",
                ">",
            ],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "BLOCK",
                "1",
                "STREAMS",
                "a",
                ">",
            ],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "BLOCK",
                "0",
                "STREAMS",
                "a",
                ">",
            ],
            &["GET", "a"],
        ] {
            assert_eq!(Spec::parse(&v(bad)), None, "{bad:?}");
        }
    }
}
