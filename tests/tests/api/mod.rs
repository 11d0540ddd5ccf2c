//! Kafka API behaviour of a single node, over real sockets and real RocksDB.

mod t10_produce_fetch;
mod t20_bad_input;
mod t30_admin;
mod t40_restart_retention;
mod t50_http;
mod t60_group_offsets;
mod t70_idempotence;
