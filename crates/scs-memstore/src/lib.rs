#![doc = include_str!("../README.md")]

mod store;

pub use store::{MemoryStore, MemoryStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "memory";
