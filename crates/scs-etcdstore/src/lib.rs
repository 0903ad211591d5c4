#![doc = include_str!("../README.md")]

mod store;

pub use store::{DEFAULT_PREFIX, EtcdStore, EtcdStoreBuilder};

/// The etcd-client crate this store is built on (its `Client` is what [`EtcdStore::new`]
/// takes).
pub use etcd_client;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "etcd";
