//! Benchmarks of scs against its peers; run with `cargo xtask bench`.
//!
//! The library holds what every part shares: the apps under test (the same handler logic
//! behind scs, behind tower-sessions, and behind no middleware at all), a call-counting
//! store wrapper, and the statistics. The `scs-bench` binary runs one part per invocation
//! and prints JSON lines; `cargo xtask bench` runs the parts and writes the report.

pub mod apps;
pub mod counting;
pub mod stats;
