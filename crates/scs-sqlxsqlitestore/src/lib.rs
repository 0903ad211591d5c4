#![doc = include_str!("../README.md")]

mod store;

pub use store::{SqlxSqliteStore, SqlxSqliteStoreBuilder};

/// The driver, re-exported so that callers use the same version (for
/// [`SqlxSqliteStore::new`] and [`SqlxSqliteStore::pool`]).
pub use sqlx;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "sqlx-sqlite";
