//! What the SQL engine needs of the node: which topics there are, where each
//! partition's records start and end, and the stored batches themselves. The broker
//! implements [`Topics`]; the engine never sees raft groups or RocksDB.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

/// A topic's records as the SQL engine reads them, and the catalog of sources. Reads are
/// blocking (RocksDB and segment files): the engine calls them from blocking threads.
#[async_trait]
pub trait Topics: Send + Sync + 'static {
    /// Names of the topics that can be queried (internal topics left out).
    fn topic_names(&self) -> Vec<String>;

    /// How many partitions `topic` has, if it exists.
    fn partition_count(&self, topic: &str) -> Option<i32>;

    /// `(log start offset, high watermark)` of one partition now: the offsets a query
    /// started now may read.
    fn bounds(&self, topic: &str, partition: i32) -> Option<(i64, i64)>;

    /// The base offset of the first batch that may hold a record with a timestamp at or
    /// after `timestamp_ms` (every batch before it holds only earlier ones); `None` if no
    /// batch does.
    fn offset_for_timestamp(&self, topic: &str, partition: i32, timestamp_ms: i64) -> Result<Option<i64>, String>;

    /// Whole stored batches from the one that holds `offset`, none at or past `end`, about
    /// `max_bytes` of them (at least one), as produced (v2 record batches, with their
    /// assigned offsets).
    fn read(&self, topic: &str, partition: i32, offset: i64, end: i64, max_bytes: usize) -> Result<Bytes, String>;

    /// Every source's definition (JSON, see [`crate::source::SourceDef`]) by name.
    fn sources(&self) -> BTreeMap<String, String>;

    /// Stores a source's definition under `name`, durably (it survives restarts and is
    /// seen by every node). Refused if the name is taken.
    async fn create_source(&self, name: &str, definition: String) -> Result<(), CatalogError>;

    /// Removes a source's definition.
    async fn drop_source(&self, name: &str) -> Result<(), CatalogError>;
}

/// Why the catalog refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogError {
    Exists,
    Unknown,
    /// The change could not be made (no controller leader, shutting down, ...).
    Unavailable(String),
}
