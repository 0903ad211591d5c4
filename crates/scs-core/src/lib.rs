#![doc = include_str!("../README.md")]

mod codec;
pub mod entry;
mod error;
mod session;
mod store;
pub mod token;
mod value;

pub use async_trait::async_trait;
pub use time;

#[cfg(feature = "json")]
pub use codec::JsonCodec;
pub use codec::{Codec, MsgPackCodec};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use session::{SessionData, Status};
pub use store::{
    Capabilities, Context, CtxStore, Entry, IterableCtxStore, IterableStore, Record, Store,
    new_version,
};
pub use value::{Value, Values};
