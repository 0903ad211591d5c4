#![doc = include_str!("../README.md")]

mod store;

pub use store::{
    DEFAULT_PREFIX, IDLE_BEFORE_PING, Manager, MemcachedStore, MemcachedStoreBuilder, Pool,
};

/// The async-memcached crate this store talks to memcached with (its `Client` is what the
/// [`Pool`] holds).
pub use async_memcached;
/// The deadpool crate whose managed pool ([`Pool`]) this store takes.
pub use deadpool;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "memcached";
