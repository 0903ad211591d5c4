#![doc = include_str!("../README.md")]

mod store;

pub use sled;
pub use store::{SledStore, SledStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "sled";
