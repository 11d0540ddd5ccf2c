//! Errors of the storage layer.

use std::path::PathBuf;

/// What can go wrong below the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open data directory {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt {what}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("corrupt value: {0}")]
    BadValue(String),
}
