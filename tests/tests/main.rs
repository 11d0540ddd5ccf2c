//! Every integration test, in one binary: the workspace is linked once for all of them.
//!
//! - `api`: one node on loopback, spoken to at the wire level.
//! - `crash`: the real binary killed with SIGKILL under load, then restarted.
//! - `sql`: `.slt` files and prepared statements over the PostgreSQL protocol.
//! - `cluster`: three nodes, in one process and as real processes under a nemesis.
//!
//! `cargo test --release --workspace --test integration sql::` runs one group.

mod api;
mod cluster;
mod crash;
mod sql;
