//! SQL over topics through the HTTP endpoint, against a real node.

mod t10_raw_topics;
