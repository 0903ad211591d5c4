//! A context-aware wrapper that counts the calls reaching the store under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Context, CtxStore, Entry, IterableCtxStore, Record, Result, async_trait,
};

/// Counts every call to the wrapped store; the middleware tier uses it to prove that an
/// unmodified request writes nothing and that a malformed token never reaches the store.
#[derive(Clone)]
pub(crate) struct Counting {
    inner: Arc<dyn CtxStore>,
    counts: Arc<Counts>,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) finds: AtomicUsize,
    pub(crate) commits: AtomicUsize,
    pub(crate) deletes: AtomicUsize,
    pub(crate) touches: AtomicUsize,
}

impl Counts {
    pub(crate) fn writes(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
            + self.deletes.load(Ordering::SeqCst)
            + self.touches.load(Ordering::SeqCst)
    }

    pub(crate) fn calls(&self) -> usize {
        self.finds.load(Ordering::SeqCst) + self.writes()
    }
}

impl Counting {
    pub(crate) fn new(inner: Arc<dyn CtxStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[async_trait]
impl CtxStore for Counting {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn find_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Vec<u8>>> {
        self.counts.finds.fetch_add(1, Ordering::SeqCst);
        self.inner.find_ctx(ctx, key).await
    }

    async fn commit_ctx(
        &self,
        ctx: &Context,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
    ) -> Result<()> {
        self.counts.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit_ctx(ctx, key, data, expiry).await
    }

    async fn delete_ctx(&self, ctx: &Context, key: &str) -> Result<()> {
        self.counts.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_ctx(ctx, key).await
    }

    async fn touch_ctx(&self, ctx: &Context, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        self.counts.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch_ctx(ctx, key, expiry).await
    }

    async fn find_record_ctx(&self, ctx: &Context, key: &str) -> Result<Option<Record>> {
        self.counts.finds.fetch_add(1, Ordering::SeqCst);
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
        self.counts.commits.fetch_add(1, Ordering::SeqCst);
        self.inner
            .commit_if_ctx(ctx, key, data, expiry, expected)
            .await
    }

    // The on-the-spot paths are passed through (and counted when the store answers), so
    // that the middleware trials run the manager as it runs over this store unwrapped.
    fn find_record_now_ctx(&self, ctx: &Context, key: &str) -> Option<Result<Option<Record>>> {
        let answer = self.inner.find_record_now_ctx(ctx, key)?;
        self.counts.finds.fetch_add(1, Ordering::SeqCst);
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
        self.counts.commits.fetch_add(1, Ordering::SeqCst);
        Some(answer)
    }

    fn as_iterable_ctx(&self) -> Option<&dyn IterableCtxStore> {
        self.inner
            .as_iterable_ctx()
            .map(|_| self as &dyn IterableCtxStore)
    }
}

#[async_trait]
impl IterableCtxStore for Counting {
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
