#![doc = include_str!("../README.md")]

mod store;

pub use store::{SqliteStore, SqliteStoreBuilder};

/// The driver, re-exported so that callers use the same version (for
/// [`SqliteStore::new`] and [`SqliteStore::call`]).
pub use rusqlite;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "sqlite";
