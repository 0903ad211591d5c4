//! The one error type of the workspace.

use std::borrow::Cow;
use std::fmt;

/// A boxed error source, kept as it came from the driver or codec.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend answered with an error (a failed query, a rejected command).
    Backend,
    /// Session data could not be encoded or decoded.
    Codec,
    /// The configuration is invalid (a bad URL, a bad setting).
    Config,
    /// The backend could not be reached, or the connection broke.
    Connection,
    /// A store call took longer than allowed.
    Timeout,
    /// A compare-and-set commit lost against a concurrent writer.
    Conflict,
    /// The store does not offer this operation.
    Unsupported,
    /// A value or session is over the configured size limit.
    TooLarge,
    /// Input from the client or the caller is malformed.
    InvalidInput,
}

impl ErrorKind {
    /// A short lowercase name, stable for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::Codec => "codec",
            Self::Config => "config",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::Unsupported => "unsupported",
            Self::TooLarge => "too_large",
            Self::InvalidInput => "invalid_input",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every scs crate: a [kind](ErrorKind), the backend it came from, what failed,
/// and the underlying source, kept (never flattened to a string).
///
/// ```
/// use scs_core::{Error, ErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = Error::new(ErrorKind::Connection, "connecting to the server")
///     .with_backend("redis")
///     .with_source(io);
/// assert_eq!(err.kind(), ErrorKind::Connection);
/// assert_eq!(err.backend(), Some("redis"));
/// assert!(std::error::Error::source(&err).is_some());
/// assert_eq!(err.to_string(), "redis: connection error: connecting to the server");
/// ```
pub struct Error {
    kind: ErrorKind,
    backend: Option<&'static str>,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            backend: None,
            message: message.into(),
            source: None,
        }
    }

    /// Names the backend the error came from (`"postgres"`, `"redis"`, ...).
    #[must_use]
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Keeps the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Shorthand for a [`ErrorKind::Backend`] error with a source.
    pub fn backend_error(
        backend: &'static str,
        message: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::new(ErrorKind::Backend, message)
            .with_backend(backend)
            .with_source(source)
    }

    /// Shorthand for an [`ErrorKind::Unsupported`] error.
    pub fn unsupported(backend: &'static str, operation: &'static str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("the {backend} store does not support {operation}"),
        )
        .with_backend(backend)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend the error came from, if any.
    pub fn backend(&self) -> Option<&'static str> {
        self.backend
    }

    /// What failed, without the kind, backend or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for failures that may pass when tried again (connection, timeout, conflict).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Conflict
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(backend) = self.backend {
            d.field("backend", &backend);
        }
        d.field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(backend) = self.backend {
            write!(f, "{backend}: ")?;
        }
        write!(f, "{} error: {}", self.kind, self.message)?;
        if let Some(source) = &self.source
            && f.alternate()
        {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
