//! Kafka error codes, and the one mapping from internal errors to them.
//!
//! A Kafka code is a value inside a response, not an error that climbs the stack:
//! handlers produce per-partition `Result<T, ResponseError>`.

use openraft::error::{ClientWriteError, RaftError};

pub use kafka_protocol::ResponseError;

/// Maps a storage error; exhaustive so that a new variant must pick its code.
pub fn storage_code(e: &storage::Error) -> ResponseError {
    match e {
        storage::Error::Corrupt { .. } => ResponseError::CorruptMessage,
        storage::Error::Rocks(_)
        | storage::Error::Io(_)
        | storage::Error::Open { .. }
        | storage::Error::BadValue(_) => ResponseError::KafkaStorageError,
    }
}

/// Maps a failed raft write: not the leader, or the group is shutting down or broken.
pub fn raft_write_code<N>(e: &RaftError<u64, ClientWriteError<u64, N>>) -> ResponseError
where
    N: openraft::Node,
{
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ResponseError::NotLeaderOrFollower,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => ResponseError::UnknownServerError,
        RaftError::Fatal(f) => {
            tracing::error!(error = %f, "raft group failed");
            ResponseError::KafkaStorageError
        }
    }
}
