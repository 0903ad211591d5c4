//! The session manager: settings, the store, and the load / commit cycle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response, StatusCode};
use scs_core::time::OffsetDateTime;
use scs_core::token::Token;
use scs_core::{
    Capabilities, Codec, Context, CtxStore, Error, ErrorKind, JsonCodec, MsgPackCodec, Result,
    SessionData, Status,
};

use crate::config::{CodecKind, SameSite, SessionConfig};
use crate::session::{Session, State};
use crate::transport;
use tracing::Instrument as _;

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

/// Counter handles, registered once with the `metrics` recorder installed when the
/// manager is built (install the recorder first), so the hot path does no key lookups.
struct Counters {
    loads: metrics::Counter,
    commits: metrics::Counter,
    conflicts: metrics::Counter,
    touches: metrics::Counter,
    /// `scs_store_calls_total` by operation, in the order of `STORE_OPS`.
    store_calls: Vec<metrics::Counter>,
}

const STORE_OPS: [&str; 6] = ["find", "commit", "commit_if", "delete", "touch", "all"];

impl Counters {
    fn new(backend: &'static str) -> Self {
        Self {
            loads: metrics::counter!("scs_loads_total", "backend" => backend),
            commits: metrics::counter!("scs_commits_total", "backend" => backend),
            conflicts: metrics::counter!("scs_conflicts_total", "backend" => backend),
            touches: metrics::counter!("scs_touches_total", "backend" => backend),
            store_calls: STORE_OPS
                .iter()
                .map(|op| metrics::counter!("scs_store_calls_total", "backend" => backend, "op" => *op))
                .collect(),
        }
    }

    fn store_call(&self, op: &str) {
        if let Some(c) = STORE_OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.store_calls.get(i))
        {
            c.increment(1);
        }
    }
}

struct ManagerInner {
    counters: Counters,
    /// Striped per-session commit locks (versioned stores).
    commit_turns: Box<[tokio::sync::Mutex<()>]>,
    /// Keys are hashes or random tokens; seeded all the same (foldhash: SipHash is slow
    /// for a lock pick on every commit).
    turn_hasher: foldhash::fast::RandomState,
    store: Arc<dyn CtxStore>,
    /// The store's capabilities, read once (they never change).
    caps: Capabilities,
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
        let caps = store.capabilities();
        Self {
            inner: Arc::new(ManagerInner {
                counters: Counters::new(store.backend()),
                commit_turns: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
                turn_hasher: Default::default(),
                caps,
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

    /// This manager's session of `req`, a request that went through its layer, loaded from the
    /// store on first access (a request that never asks costs no store call). For plain
    /// hyper or tower handlers; axum handlers take [`Session`] as an extractor.
    ///
    /// # Errors
    /// [`SessionRejection::MissingLayer`](crate::SessionRejection::MissingLayer) when
    /// this manager's layer did not run for the request;
    /// [`SessionRejection::Load`](crate::SessionRejection::Load) when the store or codec
    /// failed (its [`response`](crate::SessionRejection::response) is the error handler's).
    pub fn session<B>(
        &self,
        req: &http::Request<B>,
    ) -> impl Future<Output = std::result::Result<Session, crate::SessionRejection>> + Send + 'static
    {
        // What the request holds is read now, so the future borrows nothing.
        let found = crate::sessions::of_request(req.extensions())
            .and_then(|all| all.iter().find(|s| s.manager().same_as(self)).cloned())
            .map(|s| {
                let token = s.load_token(req.headers());
                (s, token)
            });
        async move {
            let (session, token) = found.ok_or(crate::SessionRejection::MissingLayer)?;
            crate::sessions::loaded(session, token).await
        }
    }

    /// True when both handles are the same manager (clones of one another).
    pub(crate) fn same_as(&self, other: &SessionManager) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The error handler's response for `error` (counted in `scs_errors_total`).
    pub fn error_response(&self, error: &Error) -> Response<Bytes> {
        metrics::counter!(
            "scs_errors_total",
            "backend" => self.inner.store.backend(),
            "kind" => error.kind().as_str()
        )
        .increment(1);
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
        let token = token.and_then(Token::parse);
        let span = self.load_span();
        let found = traced(self.find_session(token, &ctx), span.clone()).await?;
        let state = span.in_scope(|| self.session_state(token, found))?;
        Ok(Session::new(self.clone(), ctx, state))
    }

    /// The span of one load (none when no subscriber listens).
    pub(crate) fn load_span(&self) -> tracing::Span {
        let backend = self.inner.store.backend();
        span(|| tracing::debug_span!("scs.load", backend))
    }

    /// The first half of a load: what the store has for `token` (well-formed). The
    /// second is [`session_state`](Self::session_state); the two are apart so that a
    /// layer's session is filled in place rather than passed up through its futures.
    pub(crate) async fn find_session(
        &self,
        token: Option<Token>,
        ctx: &Context,
    ) -> Result<Option<Found>> {
        self.inner.counters.loads.increment(1);
        match token {
            Some(token) => self.find_entry(ctx, self.store_key(&token)).await,
            None => Ok(None),
        }
    }

    /// The state of a session as [`find_session`](Self::find_session) found it, or of
    /// a new session.
    ///
    /// # Errors
    /// The codec's, when the stored bytes do not decode.
    pub(crate) fn session_state(
        &self,
        token: Option<Token>,
        found: Option<Found>,
    ) -> Result<State> {
        let Some(found) = found else {
            return Ok(State::fresh(self));
        };
        let forwarded = found.forwarded;
        let mut state = self.fill(found)?;
        if !forwarded {
            state.token = token;
        }
        // Otherwise reached through a renewed token's grace period: this request reads
        // and writes the renewed session, but cannot hand out its token.
        Ok(state)
    }

    /// [`find_session`](Self::find_session) when the store answers on the spot (an
    /// in-process store's `*_now` methods): no future is made or boxed. `None`, with
    /// nothing read or counted, when the store has no such path and the load must be
    /// awaited.
    pub(crate) fn find_session_now(
        &self,
        token: Option<Token>,
        ctx: &Context,
    ) -> Option<Result<Option<Found>>> {
        let found = match token {
            Some(token) => self.find_entry_now(ctx, self.store_key(&token))?,
            None => Ok(None),
        };
        self.inner.counters.loads.increment(1);
        Some(found)
    }

    /// [`find_entry`](Self::find_entry) through the store's on-the-spot path; `None`
    /// when it has none.
    fn find_entry_now(&self, ctx: &Context, mut key: Token) -> Option<Result<Option<Found>>> {
        if !self.inner.caps.versioned {
            return None;
        }
        for forwarded in [false, true] {
            let record =
                match self.now("find", || self.inner.store.find_record_now_ctx(ctx, &key))? {
                    Ok(Some(r)) => r,
                    Ok(None) => return Some(Ok(None)),
                    Err(e) => return Some(Err(e)),
                };
            match Lookup::of(
                key,
                record.data,
                Some(record.version),
                Some(record.expiry),
                forwarded,
            ) {
                Lookup::Next(next) => key = next,
                Lookup::Done(found) => return Some(Ok(found)),
            }
        }
        Some(Ok(None))
    }

    /// Reads an entry: with its version and expiry where the store keeps them, and
    /// following a renewed token's forwarding entry once.
    async fn find_entry(&self, ctx: &Context, mut key: Token) -> Result<Option<Found>> {
        for forwarded in [false, true] {
            let (data, version, expiry) = if self.inner.caps.versioned {
                let found =
                    match self.now("find", || self.inner.store.find_record_now_ctx(ctx, &key)) {
                        Some(found) => found?,
                        None => self.find_raw_record(ctx, &key).await?,
                    };
                match found {
                    Some(r) => (r.data, Some(r.version), Some(r.expiry)),
                    None => return Ok(None),
                }
            } else {
                match self.store_find(ctx, &key).await? {
                    Some(data) => (data, None, None),
                    None => return Ok(None),
                }
            };
            match Lookup::of(key, data, version, expiry, forwarded) {
                Lookup::Next(next) => key = next,
                Lookup::Done(found) => return Ok(found),
            }
        }
        Ok(None)
    }

    /// The state of a session read from the store (no token yet).
    fn fill(&self, found: Found) -> Result<State> {
        let data = self.inner.codec.decode(&found.data)?;
        Ok(State::stored(
            self,
            data,
            found.key,
            found.version,
            found.expiry,
        ))
    }

    /// Commits `session` to the store: mints a token if it has none, encodes the data,
    /// and stores it until `min(deadline, now + idle_timeout)`. Returns the token and that
    /// expiry.
    ///
    /// # Errors
    /// The codec's or store's error, or [`ErrorKind::TooLarge`] when the encoded session
    /// exceeds `max_session_bytes` (nothing is stored then).
    pub async fn commit(&self, session: &Session) -> Result<(String, OffsetDateTime)> {
        let (token, expiry) = self.commit_token(session).await?;
        Ok((
            token.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            expiry,
        ))
    }

    /// [`commit`](Self::commit), the token as it is kept (none: this request does not
    /// know the raw token).
    pub(crate) async fn commit_token(
        &self,
        session: &Session,
    ) -> Result<(Option<Token>, OffsetDateTime)> {
        let backend = self.inner.store.backend();
        let span = span(|| tracing::debug_span!("scs.commit", backend));
        traced(self.commit_inner(session), span).await
    }

    async fn commit_inner(&self, session: &Session) -> Result<(Option<Token>, OffsetDateTime)> {
        let ctx = &session.inner.ctx;
        // Commits of one session in this process take turns, so compare-and-set only has
        // to settle races with other processes (and with loads older than a commit).
        let _turn = match self.inner.caps.versioned {
            true => {
                let key = {
                    let mut state = session.inner.state.lock();
                    self.ensure_key(&mut state)?
                };
                Some(self.commit_turn(&key).await)
            }
            false => None,
        };
        // A session listed by `iterate` comes without its version: rather than a
        // compare-and-set bound to fail, read the entry's version first and merge onto it.
        let unknown = std::mem::take(&mut session.inner.state.lock().version_unknown);
        if unknown && self.inner.caps.versioned {
            let key = {
                let mut state = session.inner.state.lock();
                self.ensure_key(&mut state)?
            };
            Box::pin(self.rebase(session, key)).await?;
        }
        // Set at the first conflict: a commit that goes through (nearly all) reads no clock.
        let mut conflicts_since = None;
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            if attempt > 0 {
                // Jittered backoff against other processes; bounded by the store timeout.
                let since = *conflicts_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > self.inner.config.store_timeout {
                    break;
                }
                let cap = 1u64 << attempt.min(5);
                let jitter = scs_core::new_version() % (cap * 1000);
                // Cold paths (this one, a conflict's re-read, indexing a session under
                // its user) are boxed: the commit future stays small on the hot path.
                Box::pin(tokio::time::sleep(Duration::from_micros(jitter))).await;
            }
            let (token, key, bytes, expiry, expected) = {
                let mut state = session.inner.state.lock();
                let key = self.ensure_key(&mut state)?;
                let bytes = self.encode(&state.data)?;
                let expiry = self.expiry(state.data.deadline);
                (state.token, key, bytes, expiry, state.version)
            };
            if !self.inner.caps.versioned {
                self.store_commit_raw(ctx, &key, &bytes, expiry).await?;
                self.inner.counters.commits.increment(1);
                return Ok((token, expiry));
            }
            let committed = match self.now("commit_if", || {
                self.inner
                    .store
                    .commit_if_now_ctx(ctx, &key, &bytes, expiry, expected)
            }) {
                Some(committed) => committed?,
                None => {
                    self.timed(
                        self.inner
                            .store
                            .commit_if_ctx(ctx, &key, &bytes, expiry, expected),
                        "committing a session",
                        "commit_if",
                    )
                    .await?
                }
            };
            if let Some(version) = committed {
                let to_index = {
                    let mut state = session.inner.state.lock();
                    Self::committed(&mut state, version, expiry);
                    Self::to_index(&state, key)
                };
                if let Some(user) = to_index {
                    Box::pin(self.index_session(ctx, &user, &key, expiry)).await?;
                    let mut state = session.inner.state.lock();
                    // Unless the key changed meanwhile (a renewal through a clone).
                    if state.key == Some(key) {
                        state.key_indexed = true;
                    }
                }
                self.inner.counters.commits.increment(1);
                return Ok((token, expiry));
            }
            // Another request committed this session since we loaded it: take its data,
            // replay only what this request changed, and try again.
            self.inner.counters.conflicts.increment(1);
            {
                let mut state = session.inner.state.lock();
                if state.changes.is_none() {
                    // A new session, never stored, found its key taken: nothing it holds
                    // came from that entry, so it never merges into it. It moves, whole,
                    // to a new key instead.
                    state.key = None;
                    state.token = None;
                    state.key_indexed = false;
                    continue;
                }
            }
            Box::pin(self.rebase(session, key)).await?;
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the session kept changing under this request (gave up after {MAX_CONFLICT_RETRIES} retries or the store timeout)"
            ),
        )
        .with_backend(self.inner.store.backend()))
    }

    /// Reads the entry under `key` again and replays onto it what this request changed:
    /// after a compare-and-set conflict, or before the first commit of a session listed
    /// without its version.
    async fn rebase(&self, session: &Session, key: Token) -> Result<()> {
        let fresh = self.find_entry(&session.inner.ctx, key).await?;
        let mut state = session.inner.state.lock();
        match fresh {
            Some(found) => {
                let mut data = self.inner.codec.decode(&found.data)?;
                state.replay_onto(&mut data);
                state.data = data;
                state.version = found.version;
                // Still indexed when it is the key we had (the usual case).
                state.key_indexed &= state.key == Some(found.key);
                state.key = Some(found.key);
            }
            None => {
                // Destroyed, renewed or expired meanwhile: never bring the old token
                // back; this request's changes go into a new session.
                let mut data = SessionData::new(state.data.deadline);
                state.replay_onto(&mut data);
                state.data = data;
                state.version = None;
                state.key = None;
                state.key_indexed = false;
                state.token = None;
            }
        }
        Ok(())
    }

    /// [`commit_token`](Self::commit_token) when the store answers on the spot (an
    /// in-process store) and the commit is the plain case: this process's turn is free,
    /// the store takes the write at once, and no user index needs the key. No future is
    /// made or boxed. `None`, with the store unchanged, when any of that does not hold and
    /// the commit must be awaited: a compare-and-set conflict is left to that path too,
    /// which reads the entry again and merges.
    fn commit_now(&self, session: &Session) -> Option<Result<(Option<Token>, OffsetDateTime)>> {
        if !self.inner.caps.versioned {
            return None;
        }
        let backend = self.inner.store.backend();
        span(|| tracing::debug_span!("scs.commit", backend)).in_scope(|| {
            let ctx = &session.inner.ctx;
            let (token, key, bytes, expiry, expected) = {
                let mut state = session.inner.state.lock();
                let key = match self.ensure_key(&mut state) {
                    Ok(key) => key,
                    Err(e) => return Some(Err(e)),
                };
                if Self::to_index(&state, key).is_some() {
                    return None;
                }
                let bytes = match self.encode(&state.data) {
                    Ok(bytes) => bytes,
                    Err(e) => return Some(Err(e)),
                };
                let expiry = self.expiry(state.data.deadline);
                (state.token, key, bytes, expiry, state.version)
            };
            let _turn = self.turn(&key).try_lock().ok()?;
            let committed = self.now("commit_if", || {
                self.inner
                    .store
                    .commit_if_now_ctx(ctx, &key, &bytes, expiry, expected)
            })?;
            let version = match committed {
                Ok(Some(version)) => version,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let mut state = session.inner.state.lock();
            Self::committed(&mut state, version, expiry);
            if Self::to_index(&state, key).is_some() {
                // Another task bound the session to a user meanwhile: the awaited path
                // commits again (at the new version) and indexes it.
                return None;
            }
            self.inner.counters.commits.increment(1);
            Some(Ok((token, expiry)))
        })
    }

    /// Records a commit that went through at `version`.
    fn committed(state: &mut State, version: u64, expiry: OffsetDateTime) {
        state.version = Some(version);
        state.stored_expiry = Some(expiry);
        // Stored now, so other requests can change it: from here on this request logs
        // what it changes (a new session starts its log here).
        state.changes.get_or_insert_with(Vec::new).clear();
    }

    /// The user whose index still needs `key`, when the session is bound to one. A key
    /// known to be indexed answers without decoding the user (every commit of a
    /// signed-in session asks).
    fn to_index(state: &State, key: Token) -> Option<String> {
        if state.key_indexed && state.key == Some(key) {
            return None;
        }
        state
            .data
            .values
            .get(crate::users::USER_KEY)
            .and_then(|v| v.to::<String>().ok())
    }

    /// This process's turn for commits of the session under `key`.
    fn turn(&self, key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher as _;
        let turns = &self.inner.commit_turns;
        &turns[(self.inner.turn_hasher.hash_one(key) as usize) % turns.len()]
    }

    /// Waits for this process's turn to commit the session under `key`.
    async fn commit_turn(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let turn = self.turn(key);
        match turn.try_lock() {
            Ok(guard) => guard,
            Err(_) => turn.lock().await,
        }
    }

    pub(crate) fn encode(&self, data: &SessionData) -> Result<Vec<u8>> {
        let bytes = self.inner.codec.encode(data)?;
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
        Ok(bytes)
    }

    /// Calls `f` with every live session of the store (the store must be iterable). The
    /// sessions are loaded but not committed: change one and call
    /// [`Session::commit`], or [`Session::destroy`] it. With a versioned store, a commit
    /// reads the entry's version first and keeps what other requests stored since the
    /// listing; a session destroyed since is not brought back (the changes go into a new
    /// session). An error from `f` stops the iteration and is returned. Entries that do
    /// not decode (not sessions of this codec) are skipped with a warning.
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
    /// [`ErrorKind::Unsupported`] when the store cannot iterate; the store's error; or
    /// `f`'s error.
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
        let entries = self
            .timed(store.all_ctx(&ctx), "listing sessions", "all")
            .await?;
        for (key, bytes) in entries {
            if moved_to(&bytes).is_some() || crate::users::is_index(&bytes) {
                // A renewed token's forwarding entry or a user index, not a session.
                continue;
            }
            let Some(key) = Token::parse(&key) else {
                // Every session key this library writes has a token's shape.
                tracing::warn!("iterate: skipping an entry whose key is not a session key");
                continue;
            };
            let mut state = State::fresh(self);
            // A stored session: a commit from here may race other requests, so it logs
            // its changes as a loaded session does.
            state.changes = self.versioned().then(Vec::new);
            // Listed without its version: its first commit reads it (see `commit`).
            state.version_unknown = self.versioned();
            state.data = match self.inner.codec.decode(&bytes) {
                Ok(data) => data,
                Err(e) => {
                    // Not a session this codec wrote (garbage, another app's data under
                    // the same prefix): one bad entry must not hide every other session.
                    tracing::warn!(error = %e, "iterate: skipping an entry that does not decode");
                    continue;
                }
            };
            state.key = Some(key);
            state.from_store = true;
            state.status = Status::Unmodified;
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

    pub(crate) fn store_key(&self, token: &Token) -> Token {
        token.store_key(self.inner.config.hash_token_in_store)
    }

    /// The session's store key, after minting its token if it has none yet.
    fn ensure_key(&self, state: &mut State) -> Result<Token> {
        if let Some(key) = state.key {
            return Ok(key);
        }
        let token = Token::try_generate()?;
        let key = self.store_key(&token);
        state.key = Some(key);
        state.key_indexed = false;
        state.token = Some(token);
        Ok(key)
    }

    /// A store call the store answers on the spot (an in-process store's `*_now`
    /// methods), traced and counted as [`timed`](Self::timed) does; `None` when the store
    /// has no such path and the call must be awaited.
    fn now<T>(
        &self,
        op: &'static str,
        call: impl FnOnce() -> Option<Result<T>>,
    ) -> Option<Result<T>> {
        let backend = self.inner.store.backend();
        let result = span(|| tracing::debug_span!("scs.store", op, backend)).in_scope(call)?;
        self.store_outcome(op, &result);
        Some(result)
    }

    /// Counts a finished store call, and its error.
    fn store_outcome<T>(&self, op: &'static str, result: &Result<T>) {
        self.inner.counters.store_call(op);
        if let Err(e) = result {
            metrics::counter!(
                "scs_store_errors_total",
                "backend" => self.inner.store.backend(),
                "op" => op,
                "kind" => e.kind().as_str()
            )
            .increment(1);
        }
    }

    /// One store call: bounded by the store timeout, traced, and counted.
    pub(crate) fn timed<'m, F>(
        &'m self,
        fut: F,
        what: &'static str,
        op: &'static str,
    ) -> Timed<'m, F>
    where
        F: Future + Unpin,
    {
        let backend = self.inner.store.backend();
        Timed {
            fut,
            span: span(|| tracing::debug_span!("scs.store", op, backend)),
            timer: None,
            manager: self,
            what,
            op,
        }
    }

    /// True when the store reads the per-request context (so the layer hands it the
    /// request's extensions; other stores skip that copy).
    pub(crate) fn wants_context(&self) -> bool {
        self.inner.caps.context
    }

    /// True when an unmodified session's expiry slides (an idle timeout is set).
    pub(crate) fn slides(&self) -> bool {
        self.inner.config.idle_timeout.is_some()
    }

    /// True when the store keeps versions (compare-and-set commits).
    pub(crate) fn versioned(&self) -> bool {
        self.inner.caps.versioned
    }

    pub(crate) fn store_find<'a>(
        &'a self,
        ctx: &'a Context,
        key: &'a str,
    ) -> Timed<'a, impl Future<Output = Result<Option<Vec<u8>>>> + Send + Unpin + 'a> {
        self.timed(
            self.inner.store.find_ctx(ctx, key),
            "finding a session",
            "find",
        )
    }

    /// A versioned read of any entry (session, forwarding entry, index).
    pub(crate) fn find_raw_record<'a>(
        &'a self,
        ctx: &'a Context,
        key: &'a str,
    ) -> Timed<'a, impl Future<Output = Result<Option<scs_core::Record>>> + Send + Unpin + 'a> {
        self.timed(
            self.inner.store.find_record_ctx(ctx, key),
            "finding a session",
            "find",
        )
    }

    /// A compare-and-set write of any entry.
    pub(crate) fn commit_raw_if<'a>(
        &'a self,
        ctx: &'a Context,
        key: &'a str,
        bytes: &'a [u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Timed<'a, impl Future<Output = Result<Option<u64>>> + Send + Unpin + 'a> {
        self.timed(
            self.inner
                .store
                .commit_if_ctx(ctx, key, bytes, expiry, expected),
            "committing a session",
            "commit_if",
        )
    }

    pub(crate) fn store_delete<'a>(
        &'a self,
        ctx: &'a Context,
        key: &'a str,
    ) -> Timed<'a, impl Future<Output = Result<()>> + Send + Unpin + 'a> {
        self.timed(
            self.inner.store.delete_ctx(ctx, key),
            "deleting a session",
            "delete",
        )
    }

    pub(crate) fn store_commit_raw<'a>(
        &'a self,
        ctx: &'a Context,
        key: &'a str,
        bytes: &'a [u8],
        expiry: OffsetDateTime,
    ) -> Timed<'a, impl Future<Output = Result<()>> + Send + Unpin + 'a> {
        self.timed(
            self.inner.store.commit_ctx(ctx, key, bytes, expiry),
            "committing a session",
            "commit",
        )
    }

    /// True when `finish` has store work or a cookie to write for `session`.
    pub(crate) fn has_work(&self, session: &Session) -> bool {
        let state = session.inner.state.lock();
        match state.status {
            Status::Modified | Status::Destroyed => true,
            Status::Unmodified => state.from_store && self.slides(),
        }
    }

    /// [`finish`](Self::finish) when it needs no awaiting: nothing to store, or a commit
    /// the store takes on the spot (see [`commit_now`](Self::commit_now)). `None`, with
    /// nothing done, when it must be awaited.
    pub(crate) fn finish_now(
        &self,
        session: &Session,
        headers: &mut HeaderMap,
    ) -> Option<Result<()>> {
        let (status, from_store) = {
            let state = session.inner.state.lock();
            (state.status, state.from_store)
        };
        match status {
            Status::Modified => {
                let (token, expiry) = match self.commit_now(session)? {
                    Ok(committed) => committed,
                    Err(e) => return Some(Err(e)),
                };
                self.send_token(headers, token, expiry, session);
            }
            Status::Destroyed => {
                transport::write(self, headers, None, OffsetDateTime::UNIX_EPOCH, false);
            }
            Status::Unmodified if from_store && self.inner.config.idle_timeout.is_some() => {
                return None;
            }
            Status::Unmodified => {}
        }
        Some(Ok(()))
    }

    /// End of request: commit, delete, or slide, and set the cookie accordingly.
    pub(crate) async fn finish(&self, session: &Session, headers: &mut HeaderMap) -> Result<()> {
        let (status, from_store) = {
            let state = session.inner.state.lock();
            (state.status, state.from_store)
        };
        match status {
            Status::Modified => {
                let (token, expiry) = self.commit_token(session).await?;
                self.send_token(headers, token, expiry, session);
            }
            Status::Destroyed => {
                transport::write(self, headers, None, OffsetDateTime::UNIX_EPOCH, false);
            }
            Status::Unmodified if from_store && self.inner.config.idle_timeout.is_some() => {
                // Boxed: it holds a commit future of its own, which would double the size
                // of every finish future.
                Box::pin(self.slide(session, headers)).await?;
            }
            Status::Unmodified => {}
        }
        Ok(())
    }

    /// Sends the token with its expiry, unless this request does not know the raw token
    /// (a session reached through a renewed token's grace period keeps the cookie the
    /// renewing response set).
    fn send_token(
        &self,
        headers: &mut HeaderMap,
        token: Option<Token>,
        expiry: OffsetDateTime,
        session: &Session,
    ) {
        if let Some(token) = token {
            transport::write(self, headers, Some(&token), expiry, session.remembered());
        }
    }

    /// Extends an unmodified session's idle expiry: by `touch` where the store can (no
    /// data rewritten), by a full commit where it cannot; and, where the store tells the
    /// current expiry, only once it moved by the touch interval.
    async fn slide(&self, session: &Session, headers: &mut HeaderMap) -> Result<()> {
        let (token, key, expiry, stored) = {
            let state = session.inner.state.lock();
            (
                state.token,
                state.key,
                self.expiry(state.data.deadline),
                state.stored_expiry,
            )
        };
        if let Some(stored) = stored
            && expiry - stored < self.touch_interval()
        {
            // Extended recently enough: no write, and the cookie the client has still
            // matches the store.
            return Ok(());
        }
        let Some(key) = key.filter(|_| self.inner.caps.touch) else {
            let (token, expiry) = self.commit_token(session).await?;
            self.send_token(headers, token, expiry, session);
            return Ok(());
        };
        let touched = self
            .timed(
                self.inner.store.touch_ctx(&session.inner.ctx, &key, expiry),
                "touching a session",
                "touch",
            )
            .await?;
        if touched {
            self.inner.counters.touches.increment(1);
            session.inner.state.lock().stored_expiry = Some(expiry);
            self.send_token(headers, token, expiry, session);
        }
        Ok(())
    }

    /// The least an idle expiry must move before it is written again.
    fn touch_interval(&self) -> Duration {
        let config = &self.inner.config;
        config
            .touch_interval
            .or_else(|| config.idle_timeout.map(|idle| idle / 10))
            .unwrap_or(Duration::ZERO)
    }

    /// Renew grace period (zero: off).
    pub(crate) fn renew_grace(&self) -> Duration {
        self.inner.config.renew_grace
    }
}

/// An entry as read from the store.
pub(crate) struct Found {
    key: Token,
    data: Vec<u8>,
    version: Option<u64>,
    expiry: Option<OffsetDateTime>,
    /// Reached through a renewed token's forwarding entry.
    forwarded: bool,
}

/// What one read of an entry under `key` leads to.
enum Lookup {
    /// A renewed token's forwarding entry: read this key next.
    Next(Token),
    /// The session (or nothing, for a forwarding entry whose target is not a key).
    Done(Option<Found>),
}

impl Lookup {
    fn of(
        key: Token,
        data: Vec<u8>,
        version: Option<u64>,
        expiry: Option<OffsetDateTime>,
        forwarded: bool,
    ) -> Self {
        match moved_to(&data) {
            Some(Some(next)) => Self::Next(next),
            Some(None) => Self::Done(None),
            None => Self::Done(Some(Found {
                key,
                data,
                version,
                expiry,
                forwarded,
            })),
        }
    }
}

/// Bytes a renewed token's old key holds during the grace period: this marker, then the
/// new key. No codec output starts with a zero byte.
pub(crate) const MOVED: &[u8] = b"\0scs:moved\0";

/// The key a forwarding entry points to.
/// `None`: not a forwarding entry; `Some(None)`: one whose target is not a key.
fn moved_to(data: &[u8]) -> Option<Option<Token>> {
    let rest = data.strip_prefix(MOVED)?;
    Some(std::str::from_utf8(rest).ok().and_then(Token::parse))
}

/// Compare-and-set retries before a commit gives up with a `Conflict` error (also bounded
/// by the store timeout).
const MAX_CONFLICT_RETRIES: u32 = 64;

/// `fut` inside `span`. A plain function, not an `async fn`: an async wrapper would hold
/// `fut` twice over (argument and awaited value) and copy it on every request; entering a
/// disabled span (the common case, see [`span`]) is one branch.
pub(crate) fn traced<F: Future>(
    fut: F,
    span: tracing::Span,
) -> tracing::instrument::Instrumented<F> {
    fut.instrument(span)
}

/// The future of [`SessionManager::timed`]: a store call (its future already boxed, as
/// every store method's is) inside its span, bounded by the store timeout and counted when
/// it ends. A plain struct, not an `async fn`: it stays a few words in size, so the
/// session futures that hold it are cheap to move on every request.
pub(crate) struct Timed<'m, F> {
    fut: F,
    span: tracing::Span,
    /// Armed at the first poll that finds the store not ready: in-process stores answer
    /// at once and never need one. On the heap, as it is needed only by stores that wait
    /// (a network round trip dwarfs the allocation).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    manager: &'m SessionManager,
    what: &'static str,
    op: &'static str,
}

impl<F, T> Future for Timed<'_, F>
where
    F: Future<Output = Result<T>> + Unpin,
{
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let polled = {
            let _entered = this.span.enter();
            Pin::new(&mut this.fut).poll(cx)
        };
        let inner = &this.manager.inner;
        let result = match polled {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let limit = inner.config.store_timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                std::task::ready!(timer.as_mut().poll(cx));
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{} took over {}", this.what, humanize(limit)),
                )
                .with_backend(inner.store.backend()))
            }
        };
        this.manager.store_outcome(this.op, &result);
        Poll::Ready(result)
    }
}

/// A span only when a subscriber wants it: building one costs even when nobody listens.
pub(crate) fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::enabled!(tracing::Level::DEBUG) {
        make()
    } else {
        tracing::Span::none()
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
        if error.kind() == ErrorKind::Codec {
            // A codec's source may quote the stored bytes it could not read: user data.
            tracing::error!(error = %error, "session error");
        } else {
            tracing::error!(error = %error, source = ?std::error::Error::source(error), "session error");
        }
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

    /// With an idle timeout, the least the expiry must move before it is written again
    /// (default a tenth of the idle timeout). Needs a store that reports expiries
    /// (versioned); others are touched on every request.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = Some(interval);
        self
    }

    /// How long a token replaced by `renew_token` keeps leading to the renewed session,
    /// for requests already in flight (default zero: off; see
    /// [`SessionConfig::renew_grace`]).
    pub fn renew_grace(mut self, grace: Duration) -> Self {
        self.config.renew_grace = grace;
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
