#![doc = include_str!("../README.md")]

mod store;

pub use diesel;
pub use diesel_async;
pub use store::{DieselPool, DieselStore, DieselStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "diesel";
