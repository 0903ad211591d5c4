#![doc = include_str!("../README.md")]

mod store;

pub use redb;
pub use store::{RedbStore, RedbStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "redb";
