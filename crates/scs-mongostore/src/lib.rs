#![doc = include_str!("../README.md")]

mod store;

pub use mongodb;
pub use store::{MongoStore, MongoStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "mongodb";
