//! What a snapshot's `data` field carries between nodes: not the dataset
//! (that is streamed as an RDB file beside the Raft messages) but enough to
//! check the received file and to restore the membership with addresses.

use super::membership::{put_bytes, Cursor};
use super::{Membership, StorageError};

const DESCRIPTOR_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotDescriptor {
    /// Bytes of the RDB file.
    pub size: u64,
    /// CRC-32 (IEEE) of the whole RDB file.
    pub crc32: u32,
    /// Membership as of the snapshot's index, with node addresses.
    pub membership: Membership,
}

impl SnapshotDescriptor {
    /// `version u8 | size u64 | crc32 u32 | membership_len u32 | membership`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(DESCRIPTOR_VERSION);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.crc32.to_le_bytes());
        put_bytes(&mut out, &self.membership.encode());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<SnapshotDescriptor, StorageError> {
        let mut r = Cursor::new(buf, "snapshot descriptor");
        let version = r.u8()?;
        if version != DESCRIPTOR_VERSION {
            return Err(r.fail(format!("unsupported version {version}")));
        }
        let size = r.u64()?;
        let crc32 = r.u32()?;
        let membership = Membership::decode(r.bytes()?)?;
        r.finish()?;
        Ok(SnapshotDescriptor {
            size,
            crc32,
            membership,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refuses_garbage() {
        let mut m = Membership::default();
        m.conf_state.voters = vec![1, 2];
        m.addrs.insert(1, "127.0.0.1:5001".into());
        m.index = 7;
        let d = SnapshotDescriptor {
            size: 1234,
            crc32: 0xdead_beef,
            membership: m,
        };
        assert_eq!(SnapshotDescriptor::decode(&d.encode()).unwrap(), d);
        assert!(SnapshotDescriptor::decode(&d.encode()[..10]).is_err());
        assert!(SnapshotDescriptor::decode(b"").is_err());
    }
}
