//! Store wrappers that count the calls reaching the store: for scs, a
//! [`scs_core::CtxStore`]; for tower-sessions, a `SessionStore`. For the server stores one
//! store call is one round trip (the per-store part checks that on the wire).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scs_core::time::OffsetDateTime;
use scs_core::{Capabilities, Context, CtxStore, IterableCtxStore, async_trait};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// How many calls of each kind reached a store.
#[derive(Debug, Default)]
pub struct Counts {
    /// Loads (scs `find`, tower-sessions `load`).
    pub finds: AtomicU64,
    /// Full writes (scs `commit`, tower-sessions `create` and `save`).
    pub commits: AtomicU64,
    /// Expiry-only writes (scs `touch`).
    pub touches: AtomicU64,
    /// Deletes.
    pub deletes: AtomicU64,
}

impl Counts {
    /// `[finds, commits, touches, deletes]` now.
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.finds.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
            self.touches.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An scs store that counts calls to the store it wraps (every method of `CtxStore`:
/// versioned reads count as finds, compare-and-set commits as commits). With
/// `touch: false` it also hides the inner store's `touch` capability, as a store without
/// one would.
pub struct CountingStore {
    inner: Arc<dyn CtxStore>,
    counts: Arc<Counts>,
    touch: bool,
}

impl CountingStore {
    /// Wraps `inner`; `touch` says whether to keep its touch capability.
    pub fn new(inner: impl CtxStore, touch: bool) -> Self {
        Self {
            inner: Arc::new(inner),
            counts: Arc::default(),
            touch,
        }
    }

    /// The counters (shared: they stay valid after the store moved into a manager).
    pub fn counts(&self) -> Arc<Counts> {
        Arc::clone(&self.counts)
    }
}

#[async_trait]
impl CtxStore for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        caps.touch &= self.touch;
        caps
    }

    async fn find_ctx(&self, ctx: &Context, key: &str) -> scs_core::Result<Option<Vec<u8>>> {
        bump(&self.counts.finds);
        self.inner.find_ctx(ctx, key).await
    }

    async fn commit_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
    ) -> scs_core::Result<()> {
        bump(&self.counts.commits);
        self.inner.commit_ctx(ctx, key, data, expiry).await
    }

    async fn delete_ctx(&self, ctx: &Context, key: &str) -> scs_core::Result<()> {
        bump(&self.counts.deletes);
        self.inner.delete_ctx(ctx, key).await
    }

    async fn touch_ctx(
        &self,
        ctx: &Context,
        key: &str,
        expiry: OffsetDateTime,
    ) -> scs_core::Result<bool> {
        bump(&self.counts.touches);
        self.inner.touch_ctx(ctx, key, expiry).await
    }

    async fn find_record_ctx(
        &self,
        ctx: &Context,
        key: &str,
    ) -> scs_core::Result<Option<scs_core::Record>> {
        bump(&self.counts.finds);
        self.inner.find_record_ctx(ctx, key).await
    }

    async fn commit_if_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> scs_core::Result<Option<u64>> {
        bump(&self.counts.commits);
        self.inner
            .commit_if_ctx(ctx, key, data, expiry, expected)
            .await
    }

    // Passed through and counted, so the manager takes the same path as unwrapped.
    fn find_record_now_ctx(
        &self,
        ctx: &Context,
        key: &str,
    ) -> Option<scs_core::Result<Option<scs_core::Record>>> {
        let answer = self.inner.find_record_now_ctx(ctx, key)?;
        bump(&self.counts.finds);
        Some(answer)
    }

    fn commit_if_now_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<scs_core::Result<Option<u64>>> {
        let answer = self
            .inner
            .commit_if_now_ctx(ctx, key, data, expiry, expected)?;
        bump(&self.counts.commits);
        Some(answer)
    }

    fn as_iterable_ctx(&self) -> Option<&dyn IterableCtxStore> {
        None
    }
}

/// A tower-sessions store that counts calls to the one it wraps.
#[derive(Debug, Clone)]
pub struct CountingTowerStore<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S> CountingTowerStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counters.
    pub fn counts(&self) -> Arc<Counts> {
        Arc::clone(&self.counts)
    }
}

#[async_trait]
impl<S: SessionStore + Clone> SessionStore for CountingTowerStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        bump(&self.counts.commits);
        self.inner.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        bump(&self.counts.commits);
        self.inner.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        bump(&self.counts.finds);
        self.inner.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        bump(&self.counts.deletes);
        self.inner.delete(id).await
    }
}
