//! The session manager: settings, the store, and the load / commit cycle.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Response, StatusCode};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Codec, Context, CtxStore, Error, ErrorKind, JsonCodec, MsgPackCodec, Result, Status, token,
};

use crate::config::{CodecKind, SameSite, SessionConfig};
use crate::session::{Session, State};
use crate::transport;

/// Turns a load or commit failure into the response the client gets.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> Response<Bytes> + Send + Sync>;

/// Manages sessions: holds the settings, the store and the codec, loads a session at the
/// start of a request and commits it at the end. Cheap to clone; clones share everything.
///
/// ```
/// # #[tokio::main] async fn main() -> scs::Result<()> {
/// use std::time::Duration;
/// use scs::{SameSite, SessionManager};
/// use scs_memstore::MemoryStore;
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .lifetime(Duration::from_secs(12 * 3600))
///     .idle_timeout(Duration::from_secs(20 * 60))
///     .cookie_name("sid")
///     .cookie_secure(true)
///     .cookie_same_site(SameSite::Strict)
///     .build()?;
///
/// // Without the middleware: load, change, commit.
/// let session = manager.load(None).await?;
/// session.put("user_id", &42)?;
/// let (token, _expiry) = session.commit().await?;
/// let again = manager.load(Some(&token)).await?;
/// assert_eq!(again.get::<i32>("user_id"), Some(42));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    store: Arc<dyn CtxStore>,
    codec: Arc<dyn Codec>,
    config: SessionConfig,
    token_header: Option<HeaderName>,
    error_handler: ErrorHandler,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store.backend())
            .field("codec", &self.inner.codec.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SessionManager {
    /// A manager with scs's defaults over `store`.
    pub fn new(store: impl CtxStore) -> Self {
        Self::from_parts(
            Arc::new(store),
            None,
            SessionConfig::default(),
            default_error_handler(),
        )
    }

    /// A manager over a shared store (what a URL opener hands back).
    pub fn with_shared_store(store: Arc<dyn CtxStore>) -> Self {
        Self::from_parts(
            store,
            None,
            SessionConfig::default(),
            default_error_handler(),
        )
    }

    /// A builder for every setting.
    pub fn builder(store: impl CtxStore) -> SessionManagerBuilder {
        SessionManagerBuilder::new(Arc::new(store))
    }

    /// A manager from deserialized settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a setting cannot be right (an invalid cookie name, a
    /// zero lifetime, ...).
    pub fn from_config(store: Arc<dyn CtxStore>, config: SessionConfig) -> Result<Self> {
        let mut b = SessionManagerBuilder::new(store);
        b.config = config;
        b.build()
    }

    fn from_parts(
        store: Arc<dyn CtxStore>,
        codec: Option<Arc<dyn Codec>>,
        config: SessionConfig,
        error_handler: ErrorHandler,
    ) -> Self {
        let codec = codec.unwrap_or_else(|| match config.codec {
            CodecKind::MsgPack => Arc::new(MsgPackCodec),
            CodecKind::Json => Arc::new(JsonCodec),
        });
        let token_header = config.token_transport.header().ok().flatten();
        Self {
            inner: Arc::new(ManagerInner {
                store,
                codec,
                config,
                token_header,
                error_handler,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CtxStore> {
        &self.inner.store
    }

    /// The codec.
    pub fn codec(&self) -> &dyn Codec {
        &*self.inner.codec
    }

    pub(crate) fn token_header(&self) -> Option<&HeaderName> {
        self.inner.token_header.as_ref()
    }

    /// The tower layer that loads and saves this manager's sessions around every request.
    pub fn layer(&self) -> crate::LoadAndSave {
        crate::LoadAndSave::new(self.clone())
    }

    /// This manager's session among a request's extensions (after the layer ran).
    pub fn session(&self, extensions: &Extensions) -> Option<Session> {
        extensions
            .get::<crate::Sessions>()
            .and_then(|s| s.of(self))
            .cloned()
    }

    /// True when both handles are the same manager (clones of one another).
    pub(crate) fn same_as(&self, other: &SessionManager) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The error handler's response for `error`.
    pub fn error_response(&self, error: &Error) -> Response<Bytes> {
        (self.inner.error_handler)(error)
    }

    // -----------------------------------------------------------------------------------
    // Load and commit

    /// Loads the session of `token` (or a new one). A token that is not of the shape this
    /// library makes, or that the store does not know, gives a new, empty session; the
    /// client's token is never adopted.
    ///
    /// # Errors
    /// The store's error, or [`ErrorKind::Codec`] when the stored bytes do not decode.
    pub async fn load(&self, token: Option<&str>) -> Result<Session> {
        self.load_with_context(token, Context::new()).await
    }

    /// [`load`](Self::load) with a per-request context for context-aware stores.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn load_with_context(&self, token: Option<&str>, ctx: Context) -> Result<Session> {
        let mut state = State::fresh(self);
        if let Some(token) = token.filter(|t| token::is_valid(t)) {
            let key = self.store_key(token);
            if let Some(bytes) = self.store_find(&ctx, &key).await? {
                state.data = self.inner.codec.decode(&bytes)?;
                state.token = token.to_owned();
                state.key = Some(key);
                state.from_store = true;
            }
        }
        Ok(Session::new(self.clone(), ctx, state))
    }

    /// Commits `session` to the store: mints a token if it has none, encodes the data,
    /// and stores it until `min(deadline, now + idle_timeout)`. Returns the token and that
    /// expiry.
    ///
    /// # Errors
    /// The codec's or store's error, or [`ErrorKind::TooLarge`] when the encoded session
    /// exceeds `max_session_bytes` (nothing is stored then).
    pub async fn commit(&self, session: &Session) -> Result<(String, OffsetDateTime)> {
        let (token, key, bytes, expiry) = {
            let mut state = session.inner.state.lock();
            if state.key.is_none() {
                let token = token::try_generate()?;
                state.key = Some(self.store_key(&token));
                state.token = token;
            }
            let bytes = self.inner.codec.encode(&state.data)?;
            let limit = self.inner.config.max_session_bytes;
            if bytes.len() > limit {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "the session encodes to {} bytes, over the limit of {limit}",
                        bytes.len()
                    ),
                ));
            }
            let expiry = self.expiry(state.data.deadline);
            let key = state.key.clone().unwrap_or_default();
            (state.token.clone(), key, bytes, expiry)
        };
        self.store_commit(&session.inner.ctx, &key, &bytes, expiry)
            .await?;
        Ok((token, expiry))
    }

    /// Calls `f` with every live session of the store (the store must be iterable). The
    /// sessions are loaded but not committed: change one and call
    /// [`Session::commit`], or [`Session::destroy`] it. An error from `f` stops the
    /// iteration and is returned.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> scs::Result<()> {
    /// # let manager = scs::SessionManager::new(scs_memstore::MemoryStore::new());
    /// # let s = manager.load(None).await?; s.put("user_id", &7)?; s.commit().await?;
    /// // Sign user 7 out everywhere.
    /// manager.iterate(|session| async move {
    ///     if session.get::<i64>("user_id") == Some(7) {
    ///         session.destroy().await?;
    ///     }
    ///     Ok(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] when the store cannot iterate; the store's or codec's
    /// error; or `f`'s error.
    pub async fn iterate<F, Fut>(&self, mut f: F) -> Result<()>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let ctx = Context::new();
        let store = self
            .inner
            .store
            .as_iterable_ctx()
            .ok_or_else(|| Error::unsupported(self.inner.store.backend(), "iteration"))?;
        let entries = self.timed(store.all_ctx(&ctx), "listing sessions").await?;
        for (key, bytes) in entries {
            let data = self.inner.codec.decode(&bytes)?;
            let state = State {
                token: String::new(),
                key: Some(key),
                data,
                status: Status::Unmodified,
                from_store: true,
            };
            f(Session::new(self.clone(), ctx.clone(), state)).await?;
        }
        Ok(())
    }

    /// Writes the session cookie (and/or token header) for `token` expiring at `expiry`
    /// into `headers`; with `token = None`, the deletion cookie. For custom middleware;
    /// the layer calls it for you.
    pub fn write_session_cookie(
        &self,
        headers: &mut HeaderMap,
        token: Option<&str>,
        expiry: OffsetDateTime,
        remember_me: bool,
    ) {
        transport::write(self, headers, token, expiry, remember_me);
    }

    // -----------------------------------------------------------------------------------
    // Internals used by the session and the layer

    pub(crate) fn new_deadline(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.inner.config.lifetime
    }

    pub(crate) fn expiry(&self, deadline: OffsetDateTime) -> OffsetDateTime {
        match self.inner.config.idle_timeout {
            Some(idle) => deadline.min(OffsetDateTime::now_utc() + idle),
            None => deadline,
        }
    }

    pub(crate) fn store_key(&self, token: &str) -> String {
        token::store_key(token, self.inner.config.hash_token_in_store)
    }

    async fn timed<T>(&self, fut: impl Future<Output = Result<T>>, what: &str) -> Result<T> {
        let limit = self.inner.config.store_timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{what} took over {}", humanize(limit)),
            )
            .with_backend(self.inner.store.backend())),
        }
    }

    pub(crate) async fn store_find(&self, ctx: &Context, key: &str) -> Result<Option<Vec<u8>>> {
        self.timed(self.inner.store.find_ctx(ctx, key), "finding a session")
            .await
    }

    pub(crate) async fn store_delete(&self, ctx: &Context, key: &str) -> Result<()> {
        self.timed(self.inner.store.delete_ctx(ctx, key), "deleting a session")
            .await
    }

    async fn store_commit(
        &self,
        ctx: &Context,
        key: &str,
        bytes: &[u8],
        expiry: OffsetDateTime,
    ) -> Result<()> {
        self.timed(
            self.inner.store.commit_ctx(ctx, key, bytes, expiry),
            "committing a session",
        )
        .await
    }

    /// End of request: commit, delete, or slide, and set the cookie accordingly.
    pub(crate) async fn finish(&self, session: &Session, headers: &mut HeaderMap) -> Result<()> {
        let (status, from_store) = {
            let state = session.inner.state.lock();
            (state.status, state.from_store)
        };
        match status {
            Status::Modified => {
                let (token, expiry) = self.commit(session).await?;
                transport::write(self, headers, Some(&token), expiry, session.remembered());
            }
            Status::Destroyed => {
                transport::write(self, headers, None, OffsetDateTime::UNIX_EPOCH, false);
            }
            Status::Unmodified if from_store && self.inner.config.idle_timeout.is_some() => {
                self.slide(session, headers).await?;
            }
            Status::Unmodified => {}
        }
        Ok(())
    }

    /// Extends an unmodified session's idle expiry: by `touch` where the store can (no
    /// data rewritten), by a full commit where it cannot.
    async fn slide(&self, session: &Session, headers: &mut HeaderMap) -> Result<()> {
        if !self.inner.store.capabilities().touch {
            let (token, expiry) = self.commit(session).await?;
            transport::write(self, headers, Some(&token), expiry, session.remembered());
            return Ok(());
        }
        let (token, key, expiry) = {
            let state = session.inner.state.lock();
            (
                state.token.clone(),
                state.key.clone().unwrap_or_default(),
                self.expiry(state.data.deadline),
            )
        };
        let touched = self
            .timed(
                self.inner.store.touch_ctx(&session.inner.ctx, &key, expiry),
                "touching a session",
            )
            .await?;
        if touched {
            transport::write(self, headers, Some(&token), expiry, session.remembered());
        }
        Ok(())
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The default error handler: logs the error (never a token or value) and answers a
/// plain `500 Internal Server Error`.
pub fn default_error_handler() -> ErrorHandler {
    Arc::new(|error: &Error| {
        tracing::error!(error = %error, source = ?std::error::Error::source(error), "session error");
        let mut res = Response::new(Bytes::from_static(b"Internal Server Error"));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    })
}

/// Builds a [`SessionManager`]; every setting has scs's default.
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn CtxStore>,
    codec: Option<Arc<dyn Codec>>,
    config: SessionConfig,
    error_handler: ErrorHandler,
}

impl SessionManagerBuilder {
    fn new(store: Arc<dyn CtxStore>) -> Self {
        Self {
            store,
            codec: None,
            config: SessionConfig::default(),
            error_handler: default_error_handler(),
        }
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Absolute lifetime (default 24 h).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.config.lifetime = lifetime;
        self
    }

    /// Sliding inactivity limit (default none).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = Some(idle);
        self
    }

    /// Cookie name (default `session`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie.name = name.into();
        self
    }

    /// Cookie `Domain` (default none).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie.domain = Some(domain.into());
        self
    }

    /// Cookie `Path` (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.config.cookie.path = path.into();
        self
    }

    /// Cookie `HttpOnly` (default true).
    pub fn cookie_http_only(mut self, on: bool) -> Self {
        self.config.cookie.http_only = on;
        self
    }

    /// Cookie `Secure` (default false).
    pub fn cookie_secure(mut self, on: bool) -> Self {
        self.config.cookie.secure = on;
        self
    }

    /// Cookie `SameSite` (default Lax).
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.config.cookie.same_site = same_site;
        self
    }

    /// Cookie `Partitioned` (default false).
    pub fn cookie_partitioned(mut self, on: bool) -> Self {
        self.config.cookie.partitioned = on;
        self
    }

    /// Persistent cookie with `Expires`/`Max-Age` (default true).
    pub fn cookie_persist(mut self, on: bool) -> Self {
        self.config.cookie.persist = on;
        self
    }

    /// Store the hashed token (default true).
    pub fn hash_token_in_store(mut self, on: bool) -> Self {
        self.config.hash_token_in_store = on;
        self
    }

    /// Token in a header rather than (or besides) the cookie.
    pub fn token_transport(mut self, transport: crate::TokenTransport) -> Self {
        self.config.token_transport = transport;
        self
    }

    /// Any codec (default MessagePack).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Some(Arc::new(codec));
        self
    }

    /// Longest a store call may take (default 5 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// Largest encoded session accepted at commit (default 1 MiB).
    pub fn max_session_bytes(mut self, bytes: usize) -> Self {
        self.config.max_session_bytes = bytes;
        self
    }

    /// The response for a load or commit failure (default: logged, plain 500).
    pub fn error_handler(
        mut self,
        handler: impl Fn(&Error) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.error_handler = Arc::new(handler);
        self
    }

    /// Checks the settings and builds the manager.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a setting that cannot be right.
    pub fn build(self) -> Result<SessionManager> {
        self.config.validate()?;
        Ok(SessionManager::from_parts(
            self.store,
            self.codec,
            self.config,
            self.error_handler,
        ))
    }
}
