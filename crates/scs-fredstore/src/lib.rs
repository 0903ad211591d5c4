#![doc = include_str!("../README.md")]

mod store;

pub use store::{DEFAULT_PREFIX, FredStore, FredStoreBuilder};

/// The fred crate this store is built on (its `Pool` or `Client` is what
/// [`FredStore::new`] and [`FredStore::from_client`] take).
pub use fred;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "fred";
