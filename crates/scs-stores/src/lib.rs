#![doc = include_str!("../README.md")]

mod open;
mod settings;
mod url;

pub use figment;
pub use open::{Backend, OpenOptions, open};
pub use settings::{CONFIG_FILE_VAR, DEFAULT_STORE, ENV_PREFIX, SessionSettings};
pub use url::redact;
