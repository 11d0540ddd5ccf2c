//! Everything Quarry keeps on disk, in one RocksDB per node.
//!
//! - [`db`]: opening the database, its column families, and the group-commit syncer that
//!   makes many raft appends durable with one fsync.
//! - [`raft_log`]: openraft's log storage for any number of raft groups, generic over the
//!   group's type config and ignorant of what the entries mean.
//! - [`partition_log`]: a Kafka partition's record batches by base offset, and the sparse
//!   timestamp index behind ListOffsets by time.
//! - [`segments`]: the files that hold a partition's produced bytes, written once; the
//!   raft log and the partition log both point into them.
//! - [`offsets`]: consumer group offsets, kept by the offsets topic's state machines.
//! - [`state`]: small per-group values (state machine metadata) kept beside the data they
//!   describe so both change in one atomic write.
//!
//! Keys start with the raft group id, big-endian, so each group's keys are one contiguous
//! range and RocksDB order is offset order.

pub mod db;
pub mod error;
pub mod offsets;
pub mod partition_log;
pub mod raft_log;
pub mod segments;
pub mod state;

pub use db::{Cf, Db, Durability};
pub use error::Error;
pub use offsets::{CommittedOffset, OffsetStore};
pub use partition_log::{BatchInfo, PartitionLog, RecordsLoc, StoredBatch};
pub use raft_log::RaftLogStore;
pub use segments::{Blob, BlobLoc, HasBlobs, Segments};
pub use state::StateStore;

/// A raft group id: the controller is 0, every partition has its own.
pub type GroupId = u64;

/// `group ++ n`, both big-endian.
pub fn key(group: GroupId, n: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Reads the second half of a [`key`].
pub fn key_suffix(k: &[u8]) -> u64 {
    u64::from_be_bytes(k[8..16].try_into().expect("16-byte key"))
}

#[cfg(test)]
mod tests;
