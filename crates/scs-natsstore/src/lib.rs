#![doc = include_str!("../README.md")]

mod store;

pub use store::{DEFAULT_BUCKET, NatsStore, NatsStoreBuilder};

/// The async-nats crate this store is built on (its `jetstream::Context` is what
/// [`NatsStore::new`] takes).
pub use async_nats;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "nats";
