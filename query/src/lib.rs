//! SQL over topics: DataFusion table providers for topics, and the engine that plans and
//! runs statements. The node is seen only through the [`topics::Topics`] trait.

pub mod engine;
pub mod error;
mod json;
pub mod pg;
pub mod source;
pub mod topic_table;
pub mod topics;
pub mod values;

pub use datafusion;
pub use engine::{Engine, Output};
pub use error::SqlError;
pub use topics::{CatalogError, Topics};
