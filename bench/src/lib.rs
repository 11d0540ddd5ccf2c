//! Helpers of the benchmarks.

pub mod wire;
