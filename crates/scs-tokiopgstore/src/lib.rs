#![doc = include_str!("../README.md")]

mod store;

pub use store::{TokioPostgresStore, TokioPostgresStoreBuilder};

/// The pool crate, re-exported so that the pool you hand to the store comes from the same
/// deadpool-postgres.
pub use deadpool_postgres;
/// The driver, re-exported (the same one `deadpool_postgres::tokio_postgres` names).
pub use tokio_postgres;

/// The backend name this crate reports in errors, metrics and the conformance table.
pub const BACKEND: &str = "tokio-postgres";
