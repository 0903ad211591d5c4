//! A context-aware store wrapper that counts the calls reaching the store it wraps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Context, CtxStore, Entry, IterableCtxStore, Record, Result, async_trait,
};

/// Counts every call to the wrapped store: versioned reads count as finds, compare-and-set
/// commits as commits, and the on-the-spot paths (`*_now_ctx`) are passed through and
/// counted when the store answers, so a manager over the wrapper takes the same paths as
/// over the store itself. The middleware tier uses it to prove that an unmodified request
/// writes nothing and that a malformed token never reaches the store; the benchmark uses
/// it to count store calls per request.
///
/// ```
/// use scs_conformance::CountingStore;
///
/// let store = CountingStore::new(scs_memstore::MemoryStore::new());
/// let counts = store.counts();
/// let manager = scs::SessionManager::new(store);
/// assert_eq!(counts.calls(), 0);
/// ```
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn CtxStore>,
    counts: Arc<Counts>,
    touch: bool,
}

/// How many calls of each kind reached the store.
#[derive(Debug, Default)]
pub struct Counts {
    /// `find`, `find_record` (awaited or on the spot).
    pub finds: AtomicU64,
    /// `commit`, `commit_if` (awaited or on the spot).
    pub commits: AtomicU64,
    /// `delete`.
    pub deletes: AtomicU64,
    /// `touch`.
    pub touches: AtomicU64,
}

impl Counts {
    /// Commits, deletes and touches.
    pub fn writes(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
            + self.deletes.load(Ordering::SeqCst)
            + self.touches.load(Ordering::SeqCst)
    }

    /// Every call.
    pub fn calls(&self) -> u64 {
        self.finds.load(Ordering::SeqCst) + self.writes()
    }

    /// `[finds, commits, touches, deletes]` now.
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.finds.load(Ordering::SeqCst),
            self.commits.load(Ordering::SeqCst),
            self.touches.load(Ordering::SeqCst),
            self.deletes.load(Ordering::SeqCst),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: impl CtxStore) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    /// Wraps a shared store.
    pub fn from_arc(inner: Arc<dyn CtxStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
            touch: true,
        }
    }

    /// Hides the wrapped store's `touch` capability, as a store without one would.
    #[must_use]
    pub fn without_touch(mut self) -> Self {
        self.touch = false;
        self
    }

    /// The counters (shared: they stay readable after the store moved into a manager).
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

    async fn find_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Vec<u8>>> {
        bump(&self.counts.finds);
        self.inner.find_ctx(ctx, key).await
    }

    async fn commit_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
    ) -> Result<()> {
        bump(&self.counts.commits);
        self.inner.commit_ctx(ctx, key, data, expiry).await
    }

    async fn delete_ctx(&self, ctx: &Context, key: &str) -> Result<()> {
        bump(&self.counts.deletes);
        self.inner.delete_ctx(ctx, key).await
    }

    async fn touch_ctx(&self, ctx: &Context, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        bump(&self.counts.touches);
        self.inner.touch_ctx(ctx, key, expiry).await
    }

    async fn find_record_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Record>> {
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
    ) -> Result<Option<u64>> {
        bump(&self.counts.commits);
        self.inner
            .commit_if_ctx(ctx, key, data, expiry, expected)
            .await
    }

    fn find_record_now_ctx(&self, ctx: &Context, key: &str) -> Option<Result<Option<Record>>> {
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
    ) -> Option<Result<Option<u64>>> {
        let answer = self
            .inner
            .commit_if_now_ctx(ctx, key, data, expiry, expected)?;
        bump(&self.counts.commits);
        Some(answer)
    }

    fn as_iterable_ctx(&self) -> Option<&dyn IterableCtxStore> {
        self.inner
            .as_iterable_ctx()
            .map(|_| self as &dyn IterableCtxStore)
    }
}

#[async_trait]
impl IterableCtxStore for CountingStore {
    async fn all_ctx(&self, ctx: &Context) -> Result<Vec<Entry>> {
        match self.inner.as_iterable_ctx() {
            Some(it) => it.all_ctx(ctx).await,
            None => Err(scs_core::Error::unsupported(
                self.inner.backend(),
                "iteration",
            )),
        }
    }
}
