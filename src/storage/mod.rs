//! Durable Raft log: entries, hard state, membership and node meta in one raft-engine directory.

mod descriptor;
mod entry_cache;
mod log_store;
mod membership;

pub use descriptor::SnapshotDescriptor;
pub use log_store::{FsyncStats, LogStore, LogWrite, NodeMeta, StorageError};
pub use membership::Membership;
