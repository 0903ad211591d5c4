//! The per-request session handle and its operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use scs_core::time::OffsetDateTime;
use scs_core::token::Token;
use scs_core::{Context, SessionData, Status, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, SessionManager};

/// Key of the remember-me flag among the values. Keys with the `__scs.` prefix are
/// internal: [`Session::keys`] does not list them.
pub(crate) const REMEMBER_ME_KEY: &str = "__scs.remember_me";
const INTERNAL_PREFIX: &str = "__scs.";

// Stored kinds each scs-style reader accepts (see `Value::kind`).
const STRING: &[&str] = &["string"];
const BOOL: &[&str] = &["bool"];
const INTEGER: &[&str] = &["integer"];
const NUMBER: &[&str] = &["integer", "float"];
const BYTES: &[&str] = &["bytes", "array"];

/// One request's session: read and change it with synchronous calls; only the calls that
/// reach the store (`destroy`, `renew_token`, `merge_session`, `commit`) are `async`.
///
/// Cheap to clone; clones share the same data. In axum, take it as an extractor:
///
/// ```
/// async fn handler(session: scs::Session) -> String {
///     let visits = session.get::<u64>("visits").unwrap_or(0) + 1;
///     session.put("visits", &visits).unwrap();
///     format!("visit number {visits}")
/// }
/// ```
///
/// Status rules are those of Go's scs: `put` always marks the session modified; `pop`,
/// `remove` and `clear` only when they removed something; reads never do.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) manager: SessionManager,
    pub(crate) ctx: Context,
    pub(crate) state: Mutex<State>,
    /// Set once `state` holds the loaded session. The layer hands handlers a session that
    /// is loaded on first access (so a request that never touches it costs no store call);
    /// a `Session` reaches user code only once loaded. Written under the `state` lock.
    loaded: AtomicBool,
    /// The token the client sent, when the layer read it already; `None`: read from the
    /// request's headers at first access (a request that never asks never parses its
    /// cookies).
    client_token: Option<Option<Token>>,
}

pub(crate) struct State {
    /// The raw token; none until the first commit (or for sessions handed out by
    /// `iterate`, or reached through a renewed token's grace period, whose raw token this
    /// request does not know).
    pub(crate) token: Option<Token>,
    /// The store key of the current token, computed once.
    pub(crate) key: Option<Token>,
    pub(crate) data: SessionData,
    pub(crate) status: Status,
    /// The session came from the store in this request (so an idle timeout slides it).
    pub(crate) from_store: bool,
    /// With a versioned store: the version loaded or last committed (`None`: new).
    pub(crate) version: Option<u64>,
    /// With a versioned store: the store expiry when loaded.
    pub(crate) stored_expiry: Option<OffsetDateTime>,
    /// With a versioned store: what this request changed, replayed onto fresh data when
    /// a concurrent request committed first.
    pub(crate) changes: Option<Vec<Change>>,
    /// The current `key` is known to be in its user's index (see `users`): true for a
    /// session as loaded, false again whenever the key changes.
    pub(crate) key_indexed: bool,
    /// With a versioned store: stored, but listed by `iterate` without its version. The
    /// first commit reads the version (and merges onto the entry) before it writes.
    pub(crate) version_unknown: bool,
}

/// One change a request made, kept to replay it after a compare-and-set conflict. A set
/// keeps only its key: the value replayed is the key's value at replay time, which gives
/// the same end state (when a later change removed the key, that change is replayed too).
pub(crate) enum Change {
    Set(String),
    Remove(String),
    Clear,
    Deadline(OffsetDateTime),
}

impl State {
    /// A new session. It keeps no change log: until its first commit no other request can
    /// hold it, so there is nothing to replay its changes onto (the commit starts the log;
    /// a new session costs no allocation per `put` for it).
    pub(crate) fn fresh(manager: &SessionManager) -> Self {
        Self {
            data: SessionData::new(manager.new_deadline()),
            ..Self::unloaded()
        }
    }

    /// A session read from the store under `key`.
    pub(crate) fn stored(
        manager: &SessionManager,
        data: SessionData,
        key: Token,
        version: Option<u64>,
        stored_expiry: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            data,
            // A stored session bound to a user is in the user's index already.
            key_indexed: true,
            key: Some(key),
            from_store: true,
            version,
            stored_expiry,
            changes: manager.versioned().then(Vec::new),
            ..Self::unloaded()
        }
    }

    /// The placeholder of a session not loaded yet: no clock read, no allocation.
    fn unloaded() -> Self {
        Self {
            token: None,
            key: None,
            data: SessionData::new(OffsetDateTime::UNIX_EPOCH),
            status: Status::Unmodified,
            from_store: false,
            version: None,
            stored_expiry: None,
            changes: None,
            key_indexed: false,
            version_unknown: false,
        }
    }

    fn log(&mut self, change: impl FnOnce() -> Change) {
        if let Some(changes) = &mut self.changes {
            changes.push(change());
        }
    }

    pub(crate) fn set(&mut self, key: String, value: Value) {
        if self.changes.is_some() {
            let k = key.clone();
            self.log(|| Change::Set(k));
        }
        self.data.values.insert(key, value);
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        let value = self.data.values.remove(key)?;
        self.log(|| Change::Remove(key.to_owned()));
        Some(value)
    }

    pub(crate) fn clear(&mut self) {
        self.data.values.clear();
        self.log(|| Change::Clear);
    }

    pub(crate) fn set_deadline(&mut self, deadline: OffsetDateTime) {
        self.data.deadline = deadline;
        self.log(|| Change::Deadline(deadline));
    }

    /// This request's changes, applied to `data` (what another request committed).
    pub(crate) fn replay_onto(&self, data: &mut SessionData) {
        for change in self.changes.iter().flatten() {
            match change {
                Change::Set(k) => {
                    if let Some(v) = self.data.values.get(k) {
                        data.values.insert(k.clone(), v.clone());
                    }
                }
                Change::Remove(k) => {
                    data.values.remove(k);
                }
                Change::Clear => data.values.clear(),
                Change::Deadline(t) => data.deadline = *t,
            }
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token, never the values.
        let state = self.inner.state.lock();
        f.debug_struct("Session")
            .field("cookie", &self.inner.manager.config().cookie.name)
            .field("status", &state.status)
            .field("has_token", &state.token.is_some())
            .field("deadline", &state.data.deadline)
            .field("values", &state.data.values.len())
            .finish()
    }
}

impl Session {
    /// A loaded session.
    pub(crate) fn new(manager: SessionManager, ctx: Context, state: State) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                manager,
                ctx,
                state: Mutex::new(state),
                loaded: AtomicBool::new(true),
                client_token: None,
            }),
        }
    }

    /// The layer's session of one request, loaded by [`ensure_loaded`](Self::ensure_loaded)
    /// on first access.
    pub(crate) fn pending(
        manager: SessionManager,
        ctx: Context,
        client_token: Option<Option<Token>>,
    ) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                manager,
                ctx,
                state: Mutex::new(State::unloaded()),
                loaded: AtomicBool::new(false),
                client_token,
            }),
        }
    }

    /// True once the session holds what the store has (or is new).
    pub(crate) fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// The token to load with: the one the layer read, or the one in `headers` (the
    /// request's); nothing to read once loaded.
    pub(crate) fn load_token(&self, headers: &http::HeaderMap) -> Option<Token> {
        match self.inner.client_token {
            Some(token) => token,
            None if self.is_loaded() => None,
            None => crate::transport::read(&self.inner.manager, headers),
        }
    }

    /// Loads the session of `token` (from [`load_token`](Self::load_token)) if it is not
    /// loaded yet; once loaded, never again.
    ///
    /// # Errors
    /// The store's error, or the codec's when the stored bytes do not decode; the next
    /// access tries again.
    pub(crate) async fn ensure_loaded(&self, token: Option<Token>) -> Result<()> {
        if self.is_loaded() {
            return Ok(());
        }
        let manager = &self.inner.manager;
        let span = manager.load_span();
        let found =
            crate::manager::traced(manager.find_session(token, &self.inner.ctx), span.clone())
                .await?;
        self.install(token, found, &span)
    }

    /// [`ensure_loaded`](Self::ensure_loaded) when the store answers on the spot (an
    /// in-process store): no future to make, box and move. `None` when the load must be
    /// awaited.
    pub(crate) fn ensure_loaded_now(&self, token: Option<Token>) -> Option<Result<()>> {
        if self.is_loaded() {
            return Some(Ok(()));
        }
        let manager = &self.inner.manager;
        let span = manager.load_span();
        let found = span.in_scope(|| manager.find_session_now(token, &self.inner.ctx))?;
        Some(found.and_then(|found| self.install(token, found, &span)))
    }

    /// Installs what the store had as this session's state, unless another load did it
    /// first.
    fn install(
        &self,
        token: Option<Token>,
        found: Option<crate::manager::Found>,
        span: &tracing::Span,
    ) -> Result<()> {
        // No lock across the store call: should two tasks load at once, the first to
        // finish installs its state and the other's is dropped. Nothing can have changed
        // the session in between, since no handle reaches user code before it is loaded.
        // The state is built here, under the lock, not passed up through futures.
        let manager = &self.inner.manager;
        let mut state = self.inner.state.lock();
        if !self.is_loaded() {
            *state = span.in_scope(|| manager.session_state(token, found))?;
            self.inner.loaded.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The manager this session belongs to.
    pub fn manager(&self) -> &SessionManager {
        &self.inner.manager
    }

    // -----------------------------------------------------------------------------------
    // Writing values

    /// Stores `value` under `key` (replacing any value) and marks the session modified.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the value's `Serialize`
    /// implementation fails; the session is then unchanged.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let value = Value::from_serialize(value)?;
        let mut state = self.inner.state.lock();
        state.set(key.to_owned(), value);
        state.status = Status::Modified;
        Ok(())
    }

    /// Stores bytes as bytes (rather than as a list of numbers), for
    /// [`get_bytes`](Self::get_bytes).
    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put(key, serde_bytes::Bytes::new(bytes))
    }

    /// Removes `key`. Marks the session modified only when the key existed.
    pub fn remove(&self, key: &str) {
        let mut state = self.inner.state.lock();
        if state.take(key).is_some() {
            state.status = Status::Modified;
        }
    }

    /// Removes every value. Marks the session modified only when there were values.
    pub fn clear(&self) {
        let mut state = self.inner.state.lock();
        if !state.data.values.is_empty() {
            state.clear();
            state.status = Status::Modified;
        }
    }

    // -----------------------------------------------------------------------------------
    // Reading values

    /// The value under `key` as `T`; `None` when missing *or* of another type. Never
    /// panics and never changes the status.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.try_get(key).ok().flatten()
    }

    /// The value under `key` as `T`, `Ok(None)` when missing, or the decode error when the
    /// stored value is not a `T`.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) when the value has another type.
    pub fn try_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let state = self.inner.state.lock();
        state.data.values.get(key).map(Value::to).transpose()
    }

    /// The value under `key` as `T`, only when its stored kind is one of `kinds`, so that
    /// the scs-style readers never reinterpret a value (bytes as a string, say).
    fn get_kind<T: DeserializeOwned>(&self, key: &str, kinds: &[&str]) -> Option<T> {
        let state = self.inner.state.lock();
        let value = state.data.values.get(key)?;
        if kinds.contains(&value.kind()) {
            value.to().ok()
        } else {
            None
        }
    }

    fn pop_kind<T: DeserializeOwned>(&self, key: &str, kinds: &[&str]) -> Option<T> {
        let mut state = self.inner.state.lock();
        let value = state.take(key)?;
        state.status = Status::Modified;
        if kinds.contains(&value.kind()) {
            value.to().ok()
        } else {
            None
        }
    }

    /// A string value.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.get_kind(key, STRING)
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get_kind(key, BOOL)
    }

    /// An integer value (any integer that fits an `i64`).
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get_kind(key, INTEGER)
    }

    /// A floating-point value (integers are read as floats too).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get_kind(key, NUMBER)
    }

    /// A bytes value (stored with [`put_bytes`](Self::put_bytes), or a list of small
    /// numbers).
    pub fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.get_kind::<serde_bytes::ByteBuf>(key, BYTES)
            .map(|b| b.into_vec())
    }

    /// A timestamp value.
    pub fn get_time(&self, key: &str) -> Option<OffsetDateTime> {
        self.get(key)
    }

    /// Removes `key` and returns its value as `T`; for one-time "flash" messages. Marks
    /// the session modified only when the key existed. A value of another type is removed
    /// all the same, and `None` returned.
    pub fn pop<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let mut state = self.inner.state.lock();
        let value = state.take(key)?;
        state.status = Status::Modified;
        value.to().ok()
    }

    /// [`pop`](Self::pop) a string.
    pub fn pop_string(&self, key: &str) -> Option<String> {
        self.pop_kind(key, STRING)
    }

    /// [`pop`](Self::pop) a boolean.
    pub fn pop_bool(&self, key: &str) -> Option<bool> {
        self.pop_kind(key, BOOL)
    }

    /// [`pop`](Self::pop) an integer.
    pub fn pop_i64(&self, key: &str) -> Option<i64> {
        self.pop_kind(key, INTEGER)
    }

    /// [`pop`](Self::pop) a float.
    pub fn pop_f64(&self, key: &str) -> Option<f64> {
        self.pop_kind(key, NUMBER)
    }

    /// [`pop`](Self::pop) bytes.
    pub fn pop_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.pop_kind::<serde_bytes::ByteBuf>(key, BYTES)
            .map(|b| b.into_vec())
    }

    /// [`pop`](Self::pop) a timestamp.
    pub fn pop_time(&self, key: &str) -> Option<OffsetDateTime> {
        self.pop(key)
    }

    /// True when `key` holds a value.
    pub fn exists(&self, key: &str) -> bool {
        self.inner.state.lock().data.values.contains_key(key)
    }

    /// The keys, sorted, without internal ones (such as the remember-me flag).
    pub fn keys(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        state
            .data
            .values
            .keys()
            .filter(|k| !k.starts_with(INTERNAL_PREFIX))
            .cloned()
            .collect()
    }

    // -----------------------------------------------------------------------------------
    // Lifecycle

    /// Where the session stands: unmodified, modified or destroyed.
    pub fn status(&self) -> Status {
        self.inner.state.lock().status
    }

    /// The session token, as the client sees it. Empty until the session is first
    /// committed (and for sessions handed out by [`SessionManager::iterate`] while token
    /// hashing is on, whose raw token the server never knew).
    pub fn token(&self) -> String {
        let token = self.inner.state.lock().token;
        token.map(|t| t.as_str().to_owned()).unwrap_or_default()
    }

    /// The absolute deadline of the session.
    pub fn deadline(&self) -> OffsetDateTime {
        self.inner.state.lock().data.deadline
    }

    /// Moves the absolute deadline and marks the session modified.
    pub fn set_deadline(&self, deadline: OffsetDateTime) {
        let mut state = self.inner.state.lock();
        state.set_deadline(deadline);
        state.status = Status::Modified;
    }

    /// With `true`, the cookie gets `Expires`/`Max-Age` even when the manager's cookie
    /// does not persist ("remember me" at login). Marks the session modified.
    pub fn remember_me(&self, remember: bool) {
        let mut state = self.inner.state.lock();
        // A bool always serializes.
        if let Ok(v) = Value::from_serialize(&remember) {
            state.set(REMEMBER_ME_KEY.to_owned(), v);
        }
        state.status = Status::Modified;
    }

    pub(crate) fn remembered(&self) -> bool {
        let state = self.inner.state.lock();
        state
            .data
            .values
            .get(REMEMBER_ME_KEY)
            .and_then(|v| v.to::<bool>().ok())
            .unwrap_or(false)
    }

    /// Deletes the session from the store now and resets it: no token, no values, a new
    /// lifetime, status destroyed (the response deletes the cookie). Later calls in the
    /// same request act on a fresh session: a `put` after `destroy` commits a new token.
    ///
    /// # Errors
    /// The store's error; the session is then left as it was.
    pub async fn destroy(&self) -> Result<()> {
        let span = crate::manager::span(|| tracing::debug_span!("scs.destroy"));
        crate::manager::traced(self.destroy_inner(), span).await
    }

    async fn destroy_inner(&self) -> Result<()> {
        let key = self.inner.state.lock().key;
        if let Some(key) = key {
            self.inner
                .manager
                .store_delete(&self.inner.ctx, &key)
                .await?;
        }
        let mut state = self.inner.state.lock();
        *state = State::fresh(&self.inner.manager);
        state.status = Status::Destroyed;
        Ok(())
    }

    /// Gives the session a new token, keeping its data: the old token is removed from the
    /// store, the deadline starts a new lifetime, and the session is marked modified.
    /// Call it at every privilege change (login, logout) against session fixation.
    ///
    /// # Errors
    /// The store's error when deleting the old token; the session is then unchanged.
    pub async fn renew_token(&self) -> Result<()> {
        let span = crate::manager::span(|| tracing::debug_span!("scs.renew"));
        crate::manager::traced(self.renew_inner(), span).await
    }

    async fn renew_inner(&self) -> Result<()> {
        let manager = &self.inner.manager;
        let old_key = self.inner.state.lock().key;
        let grace = manager.renew_grace();
        if let Some(key) = &old_key
            && grace.is_zero()
        {
            manager.store_delete(&self.inner.ctx, key).await?;
        }
        let new_token = Token::try_generate()?;
        {
            let mut state = self.inner.state.lock();
            state.key = Some(manager.store_key(&new_token));
            state.key_indexed = false;
            state.token = Some(new_token);
            state.set_deadline(manager.new_deadline());
            // A new key: the first commit under it creates the entry.
            state.version = None;
            state.status = Status::Modified;
        }
        if let Some(old_key) = old_key
            && !grace.is_zero()
        {
            // Safe renewal: the renewed session is stored now, and the old key forwards
            // to it for the grace period, for requests already in flight.
            let (_, _) = manager.commit(self).await?;
            let new_key = self.inner.state.lock().key;
            let Some(new_key) = new_key else {
                // Destroyed through a clone meanwhile: nothing to forward to.
                return manager.store_delete(&self.inner.ctx, &old_key).await;
            };
            let mut forward = crate::manager::MOVED.to_vec();
            forward.extend_from_slice(new_key.as_bytes());
            let until = OffsetDateTime::now_utc() + grace;
            manager
                .store_commit_raw(&self.inner.ctx, &old_key, &forward, until)
                .await?;
        }
        Ok(())
    }

    /// Merges the session of `other_token` into this one: its values win over ours, the
    /// later deadline wins, and the other session is deleted from the store. Merging with
    /// ourselves, or with a token the store does not know, does nothing.
    ///
    /// # Errors
    /// The store's or codec's error.
    pub async fn merge_session(&self, other_token: &str) -> Result<()> {
        let Some(other_token) = Token::parse(other_token) else {
            return Ok(());
        };
        if self.inner.state.lock().token == Some(other_token) {
            return Ok(());
        }
        let manager = &self.inner.manager;
        let key = manager.store_key(&other_token);
        let Some(bytes) = manager.store_find(&self.inner.ctx, &key).await? else {
            return Ok(());
        };
        let other = manager.codec().decode(&bytes)?;
        {
            let mut state = self.inner.state.lock();
            if other.deadline > state.data.deadline {
                state.set_deadline(other.deadline);
            }
            for (k, v) in other.values {
                state.set(k, v);
            }
            state.status = Status::Modified;
        }
        manager.store_delete(&self.inner.ctx, &key).await
    }

    /// Commits the session to the store now (the middleware does this for you at the end
    /// of the request) and returns the token and the store expiry.
    ///
    /// # Errors
    /// The store's or codec's error, or `TooLarge` over the configured size.
    pub async fn commit(&self) -> Result<(String, OffsetDateTime)> {
        self.inner.manager.commit(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(n: i64) -> Value {
        Value::from_serialize(&n).unwrap()
    }

    /// A new session whose key turns out to be taken (a token collision, forced here)
    /// never merges into the entry under it: it moves, whole, to a new key, and the entry
    /// stays as it was.
    #[tokio::test]
    async fn a_new_session_never_merges_into_an_entry_under_its_key() {
        use scs_core::Store as _;
        let store = scs_memstore::MemoryStore::new();
        let manager = SessionManager::new(store.clone());
        let theirs = manager.load(None).await.unwrap();
        theirs.put("owner", "them").unwrap();
        theirs.commit().await.unwrap();
        let their_key = theirs.inner.state.lock().key.unwrap();
        let stored = store.find(&their_key).await.unwrap();
        assert!(stored.is_some());

        let ours = manager.load(None).await.unwrap();
        ours.put("mine", &1).unwrap();
        ours.inner.state.lock().key = Some(their_key);
        let (token, _) = ours.commit().await.unwrap();

        assert_eq!(store.find(&their_key).await.unwrap(), stored);
        let our_key = ours.inner.state.lock().key.unwrap();
        assert_ne!(our_key, their_key);
        assert_eq!(token, ours.token());
        let reloaded = manager.load(Some(&token)).await.unwrap();
        assert_eq!(reloaded.get::<i64>("mine"), Some(1));
        assert_eq!(reloaded.get::<String>("owner"), None);
    }

    /// Replaying a request's change log onto another request's data ends where applying
    /// the same operations there would, for sets, removes and clears in any order.
    #[test]
    fn replay_matches_applying_the_operations() {
        // (op, key, value): 's' set, 'r' remove, 'c' clear.
        let scripts: &[&[(char, &str, i64)]] = &[
            &[('s', "a", 1), ('r', "a", 0)],
            &[('s', "a", 1), ('c', "", 0), ('s', "b", 2)],
            &[('s', "a", 1), ('r', "a", 0), ('s', "a", 3)],
            &[('s', "a", 1), ('s', "a", 2), ('r', "x", 0)],
            &[('c', "", 0), ('s', "a", 5)],
            &[('r', "x", 0), ('s', "y", 6), ('c', "", 0)],
        ];
        for script in scripts {
            let mut theirs = SessionData::new(OffsetDateTime::UNIX_EPOCH);
            for (k, n) in [("a", 10), ("x", 11), ("z", 12)] {
                theirs.values.insert(k.to_owned(), val(n));
            }
            // This request started from its own copy and logged its changes.
            let mut ours = State::unloaded();
            ours.data = theirs.clone();
            ours.changes = Some(Vec::new());
            let mut expected = theirs.clone();
            for &(op, k, n) in *script {
                match op {
                    's' => {
                        ours.set(k.to_owned(), val(n));
                        expected.values.insert(k.to_owned(), val(n));
                    }
                    'r' => {
                        ours.take(k);
                        expected.values.remove(k);
                    }
                    _ => {
                        ours.clear();
                        expected.values.clear();
                    }
                }
            }
            // Meanwhile the other request changed `z` and added `w`.
            let mut fresh = theirs.clone();
            fresh.values.insert("z".to_owned(), val(99));
            fresh.values.insert("w".to_owned(), val(98));
            let mut want = fresh.clone();
            for &(op, k, n) in *script {
                match op {
                    's' => drop(want.values.insert(k.to_owned(), val(n))),
                    'r' => drop(want.values.remove(k)),
                    _ => want.values.clear(),
                }
            }
            ours.replay_onto(&mut fresh);
            assert_eq!(fresh.values, want.values, "{script:?}");
            assert_eq!(ours.data.values, expected.values, "{script:?}");
        }
    }
}
