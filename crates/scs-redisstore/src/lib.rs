#![doc = include_str!("../README.md")]

mod store;

pub use store::{DEFAULT_PREFIX, RedisStore, RedisStoreBuilder};

/// The deadpool-redis crate this store is built on (its `Pool` is what
/// [`RedisStore::new`] takes).
pub use deadpool_redis;
/// The redis-rs crate underneath deadpool-redis.
pub use deadpool_redis::redis;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "redis";
