#![doc = include_str!("../README.md")]

mod store;

pub use fjall;
pub use store::{FjallStore, FjallStoreBuilder};

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "fjall";
