//! What our Raft log entries carry, and the small contexts attached to them.
//!
//! A normal entry's `data` is a [`Record`]: a [`Payload`] and the leader's
//! clock when it was proposed (the entry's time, which every node uses when
//! it applies the entry, so the effect never depends on the node's clock).
//! Its `context` is a [`ProposalId`] so the proposing node can find the
//! waiting client when the entry commits. A conf-change entry's
//! `ConfChange.context` is the node's address.

use std::fmt;

/// Entry payload kinds. The first byte of `Entry.data` says which; an empty
/// `data` is Raft's own no-op (a new leader's first entry). Kinds 1 and 2
/// are the untimed records of logs written before entries carried a time;
/// `KIND_TIMED` is followed by the time (8 bytes, big endian) and one of
/// the other kinds.
const KIND_COMMAND: u8 = 1;
const KIND_MULTI: u8 = 2;
const KIND_EXPIRE: u8 = 3;
const KIND_RIGHTS: u8 = 4;
const KIND_WATCHED: u8 = 5;
const KIND_TIMED: u8 = 0x10;

/// One replicated client command, as its argument vector (`argv[0]` is the
/// command name), a MULTI/EXEC block applied as one unit, or the leader's
/// request to delete keys whose expiry time has come (each is deleted only
/// if its expiry time is at or before the entry's time when it is applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Command(Vec<Vec<u8>>),
    Multi(Vec<Vec<Vec<u8>>>),
    Expire(Vec<Vec<u8>>),
    /// A command or MULTI block with a script, from a user whose rights
    /// are limited: the user's name and ACL rules travel with it, so every
    /// node checks the script's commands against the same rights (never
    /// against its own ACLs, which may differ).
    Rights(Rights, Box<Payload>),
    /// A MULTI/EXEC block (a `Multi`, or `Rights` around one) of a client
    /// that WATCHed keys: it runs only if none of them was modified since
    /// it was watched (decided from the log alone, `machine::watch`).
    Watched(Vec<WatchedKey>, Box<Payload>),
}

/// A key a client WATCHed on the leader: the leader's applied index then
/// (`since`), and what the key was then (present; present but its time had
/// come, which Redis 7.0 treats as not modified when it is deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedKey {
    pub key: Vec<u8>,
    pub since: u64,
    pub existed: bool,
    pub expired: bool,
}

/// A user's ACL rules (as ACL LIST shows them, without passwords) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rights {
    pub user: Vec<u8>,
    pub rules: Vec<Vec<u8>>,
}

/// A normal entry's content: the payload and the entry's time (Unix ms,
/// from the leader's clock, never lower than an earlier entry's). `None`
/// only for entries written before entries were timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time_ms: Option<u64>,
    pub payload: Payload,
}

impl Record {
    pub fn timed(time_ms: u64, payload: Payload) -> Record {
        Record {
            time_ms: Some(time_ms),
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self.time_ms {
            None => self.payload.encode(),
            Some(t) => {
                let body = self.payload.encode();
                let mut out = Vec::with_capacity(body.len() + 9);
                out.push(KIND_TIMED);
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&body);
                out
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        match buf.first() {
            Some(&KIND_TIMED) => {
                let t = time_of(buf).ok_or(DecodeError("truncated time"))?;
                let payload = Payload::decode(&buf[9..])?;
                Ok(Record::timed(t, payload))
            }
            _ => {
                let payload = Payload::decode(buf)?;
                if matches!(payload, Payload::Expire(_) | Payload::Watched(..)) {
                    return Err(DecodeError("expiry or watched block without a time"));
                }
                Ok(Record {
                    time_ms: None,
                    payload,
                })
            }
        }
    }
}

/// The time of an encoded record, without decoding the rest (the Raft
/// thread reads it from every entry it appends).
pub fn time_of(buf: &[u8]) -> Option<u64> {
    if buf.first() != Some(&KIND_TIMED) {
        return None;
    }
    Some(u64::from_be_bytes(buf.get(1..9)?.try_into().ok()?))
}

fn put_argv(out: &mut Vec<u8>, argv: &[Vec<u8>]) {
    put_varint(out, argv.len() as u64);
    for a in argv {
        put_varint(out, a.len() as u64);
        out.extend_from_slice(a);
    }
}

fn get_argv(buf: &[u8], pos: &mut usize) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = get_varint(buf, pos)? as usize;
    if n == 0 || n > buf.len() {
        return Err(DecodeError("bad argument count"));
    }
    let mut argv = Vec::with_capacity(n);
    for _ in 0..n {
        let len = get_varint(buf, pos)? as usize;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or(DecodeError("argument past the end"))?;
        argv.push(buf[*pos..end].to_vec());
        *pos = end;
    }
    Ok(argv)
}

#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed entry: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(DecodeError("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint too long"))
}

impl Payload {
    fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Command(argv) | Payload::Expire(argv) => {
                let kind = if matches!(self, Payload::Command(_)) {
                    KIND_COMMAND
                } else {
                    KIND_EXPIRE
                };
                let size: usize = argv.iter().map(|a| a.len() + 5).sum();
                let mut out = Vec::with_capacity(size + 6);
                out.push(kind);
                put_argv(&mut out, argv);
                out
            }
            Payload::Rights(r, inner) => {
                let mut out = vec![KIND_RIGHTS];
                put_argv(&mut out, std::slice::from_ref(&r.user));
                put_varint(&mut out, r.rules.len() as u64);
                for rule in &r.rules {
                    put_varint(&mut out, rule.len() as u64);
                    out.extend_from_slice(rule);
                }
                out.extend_from_slice(&inner.encode());
                out
            }
            Payload::Watched(keys, inner) => {
                let mut out = vec![KIND_WATCHED];
                put_varint(&mut out, keys.len() as u64);
                for k in keys {
                    put_varint(&mut out, k.since);
                    out.push(u8::from(k.existed) | (u8::from(k.expired) << 1));
                    put_varint(&mut out, k.key.len() as u64);
                    out.extend_from_slice(&k.key);
                }
                out.extend_from_slice(&inner.encode());
                out
            }
            Payload::Multi(cmds) => {
                let size: usize = cmds.iter().flatten().map(|a| a.len() + 5).sum();
                let mut out = Vec::with_capacity(size + 6 * (cmds.len() + 1));
                out.push(KIND_MULTI);
                put_varint(&mut out, cmds.len() as u64);
                for argv in cmds {
                    put_argv(&mut out, argv);
                }
                out
            }
        }
    }

    fn decode(buf: &[u8]) -> Result<Payload, DecodeError> {
        let (&kind, _) = buf.split_first().ok_or(DecodeError("empty"))?;
        let mut pos = 1;
        let payload = match kind {
            KIND_COMMAND => Payload::Command(get_argv(buf, &mut pos)?),
            KIND_EXPIRE => Payload::Expire(get_argv(buf, &mut pos)?),
            KIND_MULTI => {
                let n = get_varint(buf, &mut pos)? as usize;
                if n > buf.len() {
                    return Err(DecodeError("bad command count"));
                }
                let mut cmds = Vec::with_capacity(n);
                for _ in 0..n {
                    cmds.push(get_argv(buf, &mut pos)?);
                }
                Payload::Multi(cmds)
            }
            KIND_RIGHTS => {
                let user = get_argv(buf, &mut pos)?.remove(0);
                let n = get_varint(buf, &mut pos)? as usize;
                if n > buf.len() {
                    return Err(DecodeError("bad rule count"));
                }
                let mut rules = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = get_varint(buf, &mut pos)? as usize;
                    let end = pos
                        .checked_add(len)
                        .filter(|&e| e <= buf.len())
                        .ok_or(DecodeError("rule past the end"))?;
                    rules.push(buf[pos..end].to_vec());
                    pos = end;
                }
                let inner = Payload::decode(&buf[pos..])?;
                if !matches!(inner, Payload::Command(_) | Payload::Multi(_)) {
                    return Err(DecodeError("rights around neither a command nor a block"));
                }
                return Ok(Payload::Rights(Rights { user, rules }, Box::new(inner)));
            }
            KIND_WATCHED => {
                let n = get_varint(buf, &mut pos)? as usize;
                if n > buf.len() {
                    return Err(DecodeError("bad watched key count"));
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    let since = get_varint(buf, &mut pos)?;
                    let flags = *buf.get(pos).ok_or(DecodeError("truncated watched key"))?;
                    pos += 1;
                    if flags > 3 {
                        return Err(DecodeError("bad watched key flags"));
                    }
                    let len = get_varint(buf, &mut pos)? as usize;
                    let end = pos
                        .checked_add(len)
                        .filter(|&e| e <= buf.len())
                        .ok_or(DecodeError("watched key past the end"))?;
                    keys.push(WatchedKey {
                        key: buf[pos..end].to_vec(),
                        since,
                        existed: flags & 1 != 0,
                        expired: flags & 2 != 0,
                    });
                    pos = end;
                }
                let inner = Payload::decode(&buf[pos..])?;
                let block = match &inner {
                    Payload::Rights(_, b) => b.as_ref(),
                    other => other,
                };
                if !matches!(block, Payload::Multi(_)) {
                    return Err(DecodeError("watched keys around no block"));
                }
                return Ok(Payload::Watched(keys, Box::new(inner)));
            }
            _ => return Err(DecodeError("unknown payload kind")),
        };
        if pos != buf.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(payload)
    }
}

/// Identifies a proposal: the proposing node and a sequence number that is
/// unique across that node's restarts (it starts from the clock), so an old
/// entry replayed after a restart never matches a new waiting client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId {
    pub node: u64,
    pub seq: u64,
}

impl ProposalId {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.node.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v
    }

    pub fn decode(buf: &[u8]) -> Option<ProposalId> {
        if buf.len() != 16 {
            return None;
        }
        Some(ProposalId {
            node: u64::from_be_bytes(buf[..8].try_into().ok()?),
            seq: u64::from_be_bytes(buf[8..].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_round_trip_around_a_command_and_a_block() {
        let rights = Rights {
            user: b"app".to_vec(),
            rules: vec![b"~app:*".to_vec(), b"(~x +get)".to_vec(), b"+eval".to_vec()],
        };
        for inner in [
            Payload::Command(vec![b"EVAL".to_vec(), b"return 1".to_vec(), b"0".to_vec()]),
            Payload::Multi(vec![vec![b"EVAL".to_vec(), b"s".to_vec(), b"0".to_vec()]]),
        ] {
            let p = Payload::Rights(rights.clone(), Box::new(inner));
            let r = Record::timed(7, p.clone());
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
        let nested = Payload::Rights(
            rights.clone(),
            Box::new(Payload::Rights(
                rights,
                Box::new(Payload::Command(vec![b"x".to_vec()])),
            )),
        );
        assert!(Payload::decode(&nested.encode()).is_err());
    }

    #[test]
    fn watched_blocks_round_trip_and_need_a_time_and_a_block() {
        let keys = vec![
            WatchedKey {
                key: b"k\0\r\n".to_vec(),
                since: 300,
                existed: true,
                expired: false,
            },
            WatchedKey {
                key: vec![0xff; 200],
                since: u64::MAX,
                existed: true,
                expired: true,
            },
            WatchedKey {
                key: Vec::new(),
                since: 0,
                existed: false,
                expired: false,
            },
        ];
        let rights = Rights {
            user: b"app".to_vec(),
            rules: vec![b"+@all".to_vec()],
        };
        for inner in [
            Payload::Multi(vec![vec![b"INCR".to_vec(), b"k".to_vec()]]),
            Payload::Multi(Vec::new()),
            Payload::Rights(
                rights,
                Box::new(Payload::Multi(vec![vec![b"EVAL".to_vec()]])),
            ),
        ] {
            let r = Record::timed(9, Payload::Watched(keys.clone(), Box::new(inner)));
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }
        let untimed = Payload::Watched(keys.clone(), Box::new(Payload::Multi(Vec::new())));
        assert!(Record::decode(&untimed.encode()).is_err());
        let around_a_command =
            Payload::Watched(keys, Box::new(Payload::Command(vec![b"x".to_vec()])));
        assert!(Payload::decode(&around_a_command.encode()).is_err());
        let mut bad_flags =
            Payload::Watched(Vec::new(), Box::new(Payload::Multi(Vec::new()))).encode();
        bad_flags[1] = 1;
        bad_flags.splice(2..2, [0u8, 7, 0]);
        assert!(Payload::decode(&bad_flags).is_err());
    }

    #[test]
    fn command_round_trip_keeps_binary_arguments() {
        let p = Payload::Command(vec![b"SET".to_vec(), b"k\r\n\0".to_vec(), vec![0xff; 300]]);
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn timed_records_round_trip_and_untimed_ones_still_decode() {
        for payload in [
            Payload::Command(vec![b"SET".to_vec(), b"k".to_vec()]),
            Payload::Multi(vec![vec![b"INCR".to_vec(), b"a".to_vec()]]),
            Payload::Expire(vec![b"a".to_vec(), b"b".to_vec()]),
        ] {
            let r = Record::timed(1_700_000_000_123, payload);
            let buf = r.encode();
            assert_eq!(time_of(&buf), Some(1_700_000_000_123));
            assert_eq!(Record::decode(&buf).unwrap(), r);
        }
        // A log written before entries were timed.
        let old = Payload::Command(vec![b"SET".to_vec(), b"k".to_vec()]).encode();
        assert_eq!(time_of(&old), None);
        assert_eq!(Record::decode(&old).unwrap().time_ms, None);
        // An expiry always needs a time; a time needs its 8 bytes.
        let untimed_expire = Payload::Expire(vec![b"a".to_vec()]).encode();
        assert!(Record::decode(&untimed_expire).is_err());
        assert!(Record::decode(&[KIND_TIMED, 0, 0]).is_err());
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let good = Payload::Command(vec![b"SET".to_vec(), b"key".to_vec()]).encode();
        assert!(Payload::decode(&[]).is_err());
        assert!(Payload::decode(&[9, 1, 1, b'x']).is_err());
        assert!(Payload::decode(&good[..good.len() - 1]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(Payload::decode(&extra).is_err());
        assert!(Payload::decode(&[KIND_COMMAND, 0]).is_err());
    }

    #[test]
    fn proposal_id_round_trip() {
        let id = ProposalId {
            node: 7,
            seq: u64::MAX - 3,
        };
        assert_eq!(ProposalId::decode(&id.encode()), Some(id));
        assert_eq!(ProposalId::decode(b"short"), None);
    }
}
