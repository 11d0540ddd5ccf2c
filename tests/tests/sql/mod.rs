//! SQL over topics through the HTTP endpoint and the PostgreSQL protocol, against a
//! real node.

mod fixtures;
mod t10_raw_topics;
mod t20_pg;
mod t30_slt;
