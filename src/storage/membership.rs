//! Cluster membership as persisted next to the Raft log.
//!
//! raft-rs only knows node ids (`ConfState`); to reach a node we also need its address, and both
//! must change atomically with the conf-change entry that introduced them, so they travel together
//! in one record written in the same batch as the Raft hard state.

use std::collections::{BTreeMap, BTreeSet};

use protobuf::Message;
use raft::eraftpb::ConfState;

use super::log_store::StorageError;

/// Version byte of the encoding produced by [`Membership::encode`]; bump it when the layout changes
/// so an older binary refuses a newer record instead of misreading it. Version 2 adds the removed
/// ids; a membership with none is still written as version 1, so binaries from before can read it
/// (a rolling upgrade) until the first removal.
const MEMBERSHIP_VERSION: u8 = 2;
const MEMBERSHIP_VERSION_NO_REMOVED: u8 = 1;

/// Voters/learners plus the address of every known node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Membership {
    /// raft-rs's view: voters, learners (and joint-consensus fields).
    pub conf_state: ConfState,
    /// Node id -> "host:port".
    pub addrs: BTreeMap<u64, String>,
    /// Log index of the last conf change applied into this membership (0 at start).
    pub index: u64,
    /// Ids removed from the cluster: never added again (a node that comes back under such an
    /// id is told it was removed, and a new node must take another id).
    pub removed: BTreeSet<u64>,
}

impl Membership {
    /// Layout (little endian): `version u8 | index u64 | conf_state_len u32 | conf_state (protobuf)
    /// | addr_count u32 | { node_id u64 | addr_len u32 | addr utf-8 }*`, then in version 2
    /// `removed_count u32 | { node_id u64 }*`.
    pub fn encode(&self) -> Vec<u8> {
        let cs = self
            .conf_state
            .write_to_bytes()
            .expect("ConfState has no required fields, encoding cannot fail");
        let mut out = Vec::with_capacity(1 + 8 + 4 + cs.len() + 4 + self.addrs.len() * 32);
        out.push(if self.removed.is_empty() {
            MEMBERSHIP_VERSION_NO_REMOVED
        } else {
            MEMBERSHIP_VERSION
        });
        out.extend_from_slice(&self.index.to_le_bytes());
        put_bytes(&mut out, &cs);
        out.extend_from_slice(&(self.addrs.len() as u32).to_le_bytes());
        for (id, addr) in &self.addrs {
            out.extend_from_slice(&id.to_le_bytes());
            put_bytes(&mut out, addr.as_bytes());
        }
        if !self.removed.is_empty() {
            out.extend_from_slice(&(self.removed.len() as u32).to_le_bytes());
            for id in &self.removed {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// Inverse of [`Membership::encode`]; rejects unknown versions, truncation and trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Membership, StorageError> {
        let mut r = Cursor::new(buf, "membership");
        let version = r.u8()?;
        if version != MEMBERSHIP_VERSION && version != MEMBERSHIP_VERSION_NO_REMOVED {
            return Err(r.fail(format!("unsupported version {version}")));
        }
        let index = r.u64()?;
        let cs_bytes = r.bytes()?;
        let conf_state = ConfState::parse_from_bytes(cs_bytes)
            .map_err(|e| r.fail(format!("conf state: {e}")))?;
        let count = r.u32()?;
        let mut addrs = BTreeMap::new();
        for _ in 0..count {
            let id = r.u64()?;
            let addr = std::str::from_utf8(r.bytes()?)
                .map_err(|e| r.fail(format!("address of node {id}: {e}")))?;
            addrs.insert(id, addr.to_owned());
        }
        let mut removed = BTreeSet::new();
        if version == MEMBERSHIP_VERSION {
            for _ in 0..r.u32()? {
                removed.insert(r.u64()?);
            }
        }
        r.finish()?;
        Ok(Membership {
            conf_state,
            addrs,
            index,
            removed,
        })
    }
}

/// Appends a u32 length prefix and the bytes.
pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Bounds-checked reader for the small little-endian records of this module.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }

    pub(super) fn fail(&self, reason: String) -> StorageError {
        StorageError::Decode {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.buf.len() - self.pos < n {
            return Err(self.fail(format!(
                "truncated: need {n} bytes at offset {}, have {}",
                self.pos,
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, StorageError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub(super) fn u64(&mut self) -> Result<u64, StorageError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A u32-length-prefixed byte string.
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], StorageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Errors if bytes remain: a longer record than expected means a layout we do not understand.
    pub(super) fn finish(self) -> Result<(), StorageError> {
        if self.pos != self.buf.len() {
            return Err(self.fail(format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Membership {
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![7],
            ..ConfState::default()
        };
        let mut addrs = BTreeMap::new();
        addrs.insert(1, "10.0.0.1:6379".to_owned());
        addrs.insert(2, "node-2.example:6380".to_owned());
        addrs.insert(7, "[::1]:7000".to_owned());
        Membership {
            conf_state: cs,
            addrs,
            index: 42,
            removed: [4, 9].into(),
        }
    }

    #[test]
    fn membership_roundtrip() {
        let m = sample();
        let buf = m.encode();
        assert_eq!(buf[0], MEMBERSHIP_VERSION);
        assert_eq!(Membership::decode(&buf).unwrap(), m);
        let empty = Membership::default();
        assert_eq!(Membership::decode(&empty.encode()).unwrap(), empty);
    }

    /// A record written before removed ids were kept (version 1, as the binary of c5b0019 wrote
    /// it) still loads, with no removed ids; a membership without any is still written that way.
    #[test]
    fn membership_of_the_old_format_still_decodes() {
        let mut old = vec![1u8];
        old.extend_from_slice(&42u64.to_le_bytes());
        let cs = ConfState {
            voters: vec![1, 2],
            ..ConfState::default()
        }
        .write_to_bytes()
        .unwrap();
        put_bytes(&mut old, &cs);
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&2u64.to_le_bytes());
        put_bytes(&mut old, b"10.0.0.2:6379");
        let m = Membership::decode(&old).unwrap();
        assert_eq!(m.index, 42);
        assert_eq!(m.conf_state.voters, vec![1, 2]);
        assert_eq!(m.addrs[&2], "10.0.0.2:6379");
        assert!(m.removed.is_empty());
        assert_eq!(m.encode(), old, "no removed ids: the old layout");
    }

    #[test]
    fn membership_decode_rejects_bad_input() {
        let buf = sample().encode();
        for cut in 0..buf.len() {
            let err = Membership::decode(&buf[..cut]).unwrap_err();
            assert!(matches!(err, StorageError::Decode { .. }), "{err}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(Membership::decode(&longer)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        let mut newer = buf;
        newer[0] = MEMBERSHIP_VERSION + 1;
        assert!(Membership::decode(&newer)
            .unwrap_err()
            .to_string()
            .contains("version"));
    }
}
