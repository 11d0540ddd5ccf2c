//! The Kafka wire protocol as Quarry speaks it.
//!
//! - [`frame`]: size-prefixed request framing and response encoding around the
//!   `kafka-protocol` message types, which are re-exported unchanged.
//! - [`batch`]: the v2 record batch header: reading it, checking its CRC and setting the
//!   fields the broker owns (base offset, partition leader epoch). Records are never
//!   decompressed on the produce or fetch path.
//! - [`alloc`]: the allocator that keeps a hostile array length from aborting the process.

pub mod alloc;
pub mod batch;
pub mod frame;

pub use kafka_protocol;
