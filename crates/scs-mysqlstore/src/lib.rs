#![doc = include_str!("../README.md")]

mod store;

pub use store::{MySqlStore, MySqlStoreBuilder};

/// The driver, re-exported so that the pool you hand to the store comes from the same sqlx.
pub use sqlx;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "mysql";
