#![doc = include_str!("../README.md")]

mod store;

pub use rusty_leveldb;
pub use store::{LevelDbStore, LevelDbStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "leveldb";
