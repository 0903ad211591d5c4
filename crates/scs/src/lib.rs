#![doc = include_str!("../README.md")]

mod config;
#[cfg(feature = "encryption")]
mod encrypt;
#[cfg(feature = "axum")]
mod extract;
mod layer;
mod manager;
mod session;
mod sessions;
mod transport;
mod users;

pub use config::{CodecKind, CookieConfig, SameSite, SessionConfig, TokenTransport};
#[cfg(feature = "encryption")]
pub use encrypt::AeadCodec;
pub use layer::{LoadAndSave, LoadAndSaveFuture, LoadAndSaveService, ResponseBody};
pub use manager::{ErrorHandler, SessionManager, SessionManagerBuilder, default_error_handler};
pub use scs_core::{
    self as core, Capabilities, Codec, Context, CtxStore, Error, ErrorKind, IterableCtxStore,
    IterableStore, JsonCodec, MsgPackCodec, Result, SessionData, Status, Store, Value, Values,
    time, token,
};
pub use session::Session;
pub use sessions::{SessionRejection, Sessions};
pub use users::UserSession;
