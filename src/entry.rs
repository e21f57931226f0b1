//! What our Raft log entries carry, and the small contexts attached to them.
//!
//! A normal entry's `data` is a [`Payload`]; its `context` is a [`ProposalId`]
//! so the proposing node can find the waiting client when the entry commits.
//! A conf-change entry's `ConfChange.context` is the node's address.

use std::fmt;

/// Entry payload kinds. The first byte of `Entry.data` says which; an empty
/// `data` is Raft's own no-op (a new leader's first entry).
const KIND_COMMAND: u8 = 1;
const KIND_MULTI: u8 = 2;

/// One replicated client command, as its argument vector (`argv[0]` is the
/// command name), or a MULTI/EXEC block applied as one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Command(Vec<Vec<u8>>),
    Multi(Vec<Vec<Vec<u8>>>),
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
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Command(argv) => {
                let size: usize = argv.iter().map(|a| a.len() + 5).sum();
                let mut out = Vec::with_capacity(size + 6);
                out.push(KIND_COMMAND);
                put_argv(&mut out, argv);
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

    pub fn decode(buf: &[u8]) -> Result<Payload, DecodeError> {
        let (&kind, _) = buf.split_first().ok_or(DecodeError("empty"))?;
        let mut pos = 1;
        let payload = match kind {
            KIND_COMMAND => Payload::Command(get_argv(buf, &mut pos)?),
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
    fn command_round_trip_keeps_binary_arguments() {
        let p = Payload::Command(vec![b"SET".to_vec(), b"k\r\n\0".to_vec(), vec![0xff; 300]]);
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
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
