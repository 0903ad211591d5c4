//! A tower-sessions `SessionStore` that counts the calls reaching the store it wraps, into
//! the same [`Counts`] as scs's counting store ([`scs_conformance::CountingStore`]). For
//! the server stores one store call is one round trip (the per-store part checks that on
//! the wire).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use scs_conformance::{CountingStore, Counts};
use scs_core::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
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
