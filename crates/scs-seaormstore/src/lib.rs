#![doc = include_str!("../README.md")]

mod store;

pub use sea_orm;
pub use store::{IDLE_BEFORE_PING, SeaOrmStore, SeaOrmStoreBuilder, entity};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "sea-orm";
