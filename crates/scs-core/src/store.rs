//! The store traits every backend implements.
//!
//! A store keeps opaque bytes under a key until an expiry. It never sees tokens (only the
//! store key derived from them), never sees values (only what the codec made of them), and
//! never returns an entry whose expiry has passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Error, Result};

/// One stored session as [`IterableStore::all`] hands it back: the store key and the bytes.
pub type Entry = (String, Vec<u8>);

/// A stored session with its expiry and version, as [`Store::find_record`] reads it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The bytes.
    pub data: Vec<u8>,
    /// When the entry expires (as kept by the backend, at its resolution).
    pub expiry: OffsetDateTime,
    /// Changes with every commit of the entry (not with a touch).
    pub version: u64,
}

impl Record {
    /// A record.
    pub fn new(data: Vec<u8>, expiry: OffsetDateTime, version: u64) -> Self {
        Self {
            data,
            expiry,
            version,
        }
    }
}

/// A fresh entry version for [`Store::commit`] and [`Store::commit_if`]: 63 bits, never
/// zero, that differ from every version handed out before with overwhelming probability,
/// so a key deleted and written again does not get a version it had before (no ABA)
/// without any counter to keep in the store.
///
/// Each thread steps its own counter, started at a random point read once from the OS
/// random source, through the SplitMix64 mixer (a bijection; the top bit is dropped to fit
/// a signed 64-bit column): two versions collide with odds of about 2^-63. No system call
/// per version (versions are not secrets; tokens are, and come from the OS CSPRNG).
///
/// ```
/// let (a, b) = (scs_core::new_version(), scs_core::new_version());
/// assert_ne!(a, b);
/// assert!(a > 0 && a <= i64::MAX as u64); // fits a signed BIGINT column
/// ```
pub fn new_version() -> u64 {
    thread_local! {
        static COUNTER: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    }
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    let next = COUNTER
        .try_with(|c| {
            let n = c.get().unwrap_or_else(random_start).wrapping_add(GAMMA);
            c.set(Some(n));
            n
        })
        // Thread teardown: a start of its own.
        .unwrap_or_else(|_| random_start());
    (splitmix64(next) >> 1).max(1)
}

fn random_start() -> u64 {
    let mut bytes = [0u8; 8];
    // On the vanishing chance the OS source fails, fall back to the clock: versions only
    // need to differ from the previous ones.
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => OffsetDateTime::now_utc().unix_timestamp_nanos() as u64,
    }
}

/// SplitMix64's output function: a bijection on `u64`.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("data", &self.data.len())
            .field("expiry", &self.expiry)
            .field("version", &self.version)
            .finish()
    }
}

/// What a store can do beyond find / commit / delete. The conformance suite reads these to
/// decide which trials run; a trial a store cannot run is shown as ignored with the reason.
///
/// ```
/// use scs_core::Capabilities;
/// use std::time::Duration;
///
/// let caps = Capabilities::new().with_iterate().with_touch();
/// assert!(caps.iterate && caps.touch && !caps.native_ttl);
/// assert_eq!(caps.expiry_resolution, Duration::from_millis(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`IterableStore::all`] is available ([`Store::as_iterable`] returns `Some`).
    pub iterate: bool,
    /// The backend expires entries itself (a TTL), rather than a cleanup task.
    pub native_ttl: bool,
    /// [`Store::touch`] extends an expiry without rewriting the data.
    pub touch: bool,
    /// [`Store::find_record`] and [`Store::commit_if`]: versioned reads and
    /// compare-and-set commits, so concurrent requests never lose each other's updates.
    pub versioned: bool,
    /// The store reads the per-request [`Context`] (a [`CtxStore`] that picks a tenant's
    /// database, say): the middleware then copies the request's extensions into it.
    /// Plain [`Store`]s ignore the context, and the copy is skipped.
    pub context: bool,
    /// The finest expiry the backend keeps (1 ms unless the backend is coarser).
    pub expiry_resolution: Duration,
}

impl Capabilities {
    /// Nothing beyond the three basic operations, with millisecond expiry.
    pub const fn new() -> Self {
        Self {
            iterate: false,
            native_ttl: false,
            touch: false,
            versioned: false,
            context: false,
            expiry_resolution: Duration::from_millis(1),
        }
    }

    /// Declares [`IterableStore`].
    #[must_use]
    pub const fn with_iterate(mut self) -> Self {
        self.iterate = true;
        self
    }

    /// Declares native expiry.
    #[must_use]
    pub const fn with_native_ttl(mut self) -> Self {
        self.native_ttl = true;
        self
    }

    /// Declares [`Store::touch`].
    #[must_use]
    pub const fn with_touch(mut self) -> Self {
        self.touch = true;
        self
    }

    /// Declares [`Store::find_record`] and [`Store::commit_if`].
    #[must_use]
    pub const fn with_versioned(mut self) -> Self {
        self.versioned = true;
        self
    }

    /// Declares that the store reads the per-request [`Context`].
    #[must_use]
    pub const fn with_context(mut self) -> Self {
        self.context = true;
        self
    }

    /// Declares a coarser expiry resolution (etcd leases: whole seconds).
    #[must_use]
    pub const fn with_expiry_resolution(mut self, resolution: Duration) -> Self {
        self.expiry_resolution = resolution;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// A session store: bytes under a key until an expiry.
///
/// Implementations are cheap to share (`Arc<dyn Store>` works) and must:
/// - never return an entry whose expiry has passed, even before any cleanup ran;
/// - make [`commit`](Store::commit) an upsert that replaces data *and* expiry;
/// - treat [`delete`](Store::delete) of a missing key as success;
/// - map their driver's errors into [`Error`] with the source kept.
///
/// A minimal store (a single map, for illustration; use `scs-memstore` for real):
///
/// ```
/// use scs_core::{async_trait, Result, Store};
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use time::OffsetDateTime;
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<String, (Vec<u8>, OffsetDateTime)>>);
///
/// #[async_trait]
/// impl Store for MapStore {
///     fn backend(&self) -> &'static str { "map" }
///
///     async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
///         let map = self.0.lock().unwrap();
///         Ok(map.get(key)
///             .filter(|(_, exp)| *exp > OffsetDateTime::now_utc())
///             .map(|(data, _)| data.clone()))
///     }
///
///     async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
///         self.0.lock().unwrap().insert(key.to_owned(), (data.to_vec(), expiry));
///         Ok(())
///     }
///
///     async fn delete(&self, key: &str) -> Result<()> {
///         self.0.lock().unwrap().remove(key);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's short name (`"memory"`, `"postgres"`, ...), for errors and metrics.
    fn backend(&self) -> &'static str;

    /// What this store can do beyond the basics.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    /// The bytes under `key`, or `None` when there are none or they have expired.
    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `data` under `key` until `expiry`, replacing data and expiry of an existing
    /// entry. An expiry in the past must leave no live entry behind.
    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()>;

    /// Removes `key`. A missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Moves the expiry of a live entry to `expiry` without rewriting its data. Returns
    /// `false` when there was no live entry. Stores that declare
    /// [`Capabilities::touch`] implement it; the default says it is unsupported.
    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let _ = (key, expiry);
        Err(Error::unsupported(self.backend(), "touch"))
    }

    /// The live entry under `key` with its expiry and version, in one round trip. Stores
    /// that declare [`Capabilities::versioned`] implement it.
    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let _ = key;
        Err(Error::unsupported(self.backend(), "versioned reads"))
    }

    /// Commits only when the live entry's version is `expected` (`None`: only when there
    /// is no live entry), in one atomic step. Returns the new version, or `None` when the
    /// version did not match (nothing written). Every successful write, by `commit` or
    /// `commit_if`, gives the entry a new version; a touch does not. Stores that declare
    /// [`Capabilities::versioned`] implement it.
    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        let _ = (key, data, expiry, expected);
        Err(Error::unsupported(
            self.backend(),
            "compare-and-set commits",
        ))
    }

    /// For a store that never waits (an in-process map): [`find_record`](Self::find_record)
    /// answered on the spot, with no future to allocate and poll. `None`, the default, when
    /// the store has no such path: callers then await `find_record`. A store that answers
    /// must answer exactly as `find_record` would.
    fn find_record_now(&self, key: &str) -> Option<Result<Option<Record>>> {
        let _ = key;
        None
    }

    /// [`commit_if`](Self::commit_if) answered on the spot, as
    /// [`find_record_now`](Self::find_record_now) is: `None` (the default) when the store
    /// has no such path.
    fn commit_if_now(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        let _ = (key, data, expiry, expected);
        None
    }

    /// This store as an [`IterableStore`], when it is one.
    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        None
    }
}

/// A store that can list every live session.
#[async_trait]
pub trait IterableStore: Store {
    /// Every unexpired entry: store key and bytes. Empty (not an error) when there are
    /// none.
    async fn all(&self) -> Result<Vec<Entry>>;
}

/// Per-request context handed to a [`CtxStore`]: the request's deadline, and its
/// extensions (a tenant id, a trace context, ...).
#[derive(Debug, Clone, Default)]
pub struct Context {
    deadline: Option<Instant>,
    extensions: http::Extensions,
}

impl Context {
    /// An empty context: no deadline, no extensions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the instant by which the request wants an answer.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the extensions (usually the request's).
    #[must_use]
    pub fn with_extensions(mut self, extensions: http::Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// The request's deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The request's extensions.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }
}

/// A store whose operations see the per-request [`Context`]. Every [`Store`] is one for
/// free (it ignores the context); implement this directly when the backend needs the
/// request, e.g. to pick a tenant's database.
#[async_trait]
pub trait CtxStore: Send + Sync + 'static {
    /// The backend's short name.
    fn backend(&self) -> &'static str;

    /// What this store can do beyond the basics.
    fn capabilities(&self) -> Capabilities;

    /// [`Store::find`] with context.
    async fn find_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Vec<u8>>>;

    /// [`Store::commit`] with context.
    async fn commit_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
    ) -> Result<()>;

    /// [`Store::delete`] with context.
    async fn delete_ctx(&self, ctx: &Context, key: &str) -> Result<()>;

    /// [`Store::touch`] with context.
    async fn touch_ctx(&self, ctx: &Context, key: &str, expiry: OffsetDateTime) -> Result<bool>;

    /// [`Store::find_record`] with context.
    async fn find_record_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Record>> {
        let _ = (ctx, key);
        Err(Error::unsupported(self.backend(), "versioned reads"))
    }

    /// [`Store::commit_if`] with context.
    async fn commit_if_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        let _ = (ctx, key, data, expiry, expected);
        Err(Error::unsupported(
            self.backend(),
            "compare-and-set commits",
        ))
    }

    /// [`Store::find_record_now`] with context.
    fn find_record_now_ctx(&self, ctx: &Context, key: &str) -> Option<Result<Option<Record>>> {
        let _ = (ctx, key);
        None
    }

    /// [`Store::commit_if_now`] with context.
    fn commit_if_now_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        let _ = (ctx, key, data, expiry, expected);
        None
    }

    /// This store as an [`IterableCtxStore`], when it can iterate.
    fn as_iterable_ctx(&self) -> Option<&dyn IterableCtxStore>;
}

/// A [`CtxStore`] that can list every live session.
#[async_trait]
pub trait IterableCtxStore: CtxStore {
    /// [`IterableStore::all`] with context.
    async fn all_ctx(&self, ctx: &Context) -> Result<Vec<Entry>>;
}

/// The future every store method returns (what `#[async_trait]` makes of an `async fn`).
type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

// Hands back the store's own future rather than boxing a second one around it: one
// allocation per store call, not two (this runs on every load and commit). The signatures
// are those `#[async_trait]` gives the trait's methods.
impl<S: Store> CtxStore for S {
    fn backend(&self) -> &'static str {
        Store::backend(self)
    }

    fn capabilities(&self) -> Capabilities {
        Store::capabilities(self)
    }

    fn find_ctx<'s, 'c, 'k, 'f>(
        &'s self,
        _ctx: &'c Context,
        key: &'k str,
    ) -> StoreFuture<'f, Option<Vec<u8>>>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.find(key)
    }

    fn commit_ctx<'s, 'c, 'k, 'd, 'f>(
        &'s self,
        _ctx: &'c Context,
        key: &'k str,
        data: &'d [u8],
        expiry: OffsetDateTime,
    ) -> StoreFuture<'f, ()>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        'd: 'f,
        Self: 'f,
    {
        self.commit(key, data, expiry)
    }

    fn delete_ctx<'s, 'c, 'k, 'f>(&'s self, _ctx: &'c Context, key: &'k str) -> StoreFuture<'f, ()>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.delete(key)
    }

    fn touch_ctx<'s, 'c, 'k, 'f>(
        &'s self,
        _ctx: &'c Context,
        key: &'k str,
        expiry: OffsetDateTime,
    ) -> StoreFuture<'f, bool>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.touch(key, expiry)
    }

    fn find_record_ctx<'s, 'c, 'k, 'f>(
        &'s self,
        _ctx: &'c Context,
        key: &'k str,
    ) -> StoreFuture<'f, Option<Record>>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.find_record(key)
    }

    fn commit_if_ctx<'s, 'c, 'k, 'd, 'f>(
        &'s self,
        _ctx: &'c Context,
        key: &'k str,
        data: &'d [u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> StoreFuture<'f, Option<u64>>
    where
        's: 'f,
        'c: 'f,
        'k: 'f,
        'd: 'f,
        Self: 'f,
    {
        self.commit_if(key, data, expiry, expected)
    }

    fn find_record_now_ctx(&self, _ctx: &Context, key: &str) -> Option<Result<Option<Record>>> {
        self.find_record_now(key)
    }

    fn commit_if_now_ctx(
        &self,
        _ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        self.commit_if_now(key, data, expiry, expected)
    }

    fn as_iterable_ctx(&self) -> Option<&dyn IterableCtxStore> {
        self.as_iterable().map(|_| self as &dyn IterableCtxStore)
    }
}

#[async_trait]
impl<S: Store> IterableCtxStore for S {
    async fn all_ctx(&self, _ctx: &Context) -> Result<Vec<Entry>> {
        match self.as_iterable() {
            Some(it) => it.all().await,
            None => Err(Error::unsupported(Store::backend(self), "iteration")),
        }
    }
}

// Shared handles are stores too, so `Arc<dyn Store>` (what a URL opener returns) plugs in
// wherever a store is expected.
#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).find(key).await
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        (**self).commit(key, data, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        (**self).touch(key, expiry).await
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        (**self).find_record(key).await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        (**self).commit_if(key, data, expiry, expected).await
    }

    fn find_record_now(&self, key: &str) -> Option<Result<Option<Record>>> {
        (**self).find_record_now(key)
    }

    fn commit_if_now(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        (**self).commit_if_now(key, data, expiry, expected)
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        (**self).as_iterable()
    }
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn versions_differ_across_calls_and_threads() {
        let mut seen = std::collections::HashSet::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..10_000)
                        .map(|_| super::new_version())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for v in t.join().unwrap() {
                assert!(v > 0 && v <= i64::MAX as u64);
                assert!(seen.insert(v), "version {v} handed out twice");
            }
        }
    }
}
