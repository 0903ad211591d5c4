use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use scs_core::entry::{self, encode, is_dead, now_ms, unix_ms};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Default name of the tree that holds the sessions.
const DEFAULT_TREE: &str = "sessions";

/// A session store in a [sled](https://docs.rs/sled/0.34) tree.
///
/// Each session is one entry of its own tree: the key is the store key, the value is the
/// expiry (8 bytes, big-endian Unix milliseconds), the version (8 bytes, big-endian), then
/// the data. Expiry is checked
/// on every read; a background task removes every expired entry (every minute by default).
/// Every sled call runs on Tokio's blocking pool, never on the async runtime.
///
/// Cloning is cheap and clones share the database. Dropping the last clone stops the
/// cleanup task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_sledstore::SledStore;
/// use std::time::Duration;
///
/// # let db = sled::Config::new().temporary(true).open().unwrap();
/// // let db = sled::open("data/app")?;  (the application's own database)
/// let store = SledStore::builder(db)
///     .tree("sessions")
///     .cleanup_interval(Some(Duration::from_secs(30)))
///     .build()?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    db: sled::Db,
    tree_name: String,
    /// Opened on first use, on the blocking pool (opening a new tree writes to disk).
    tree: OnceLock<sled::Tree>,
}

impl SledStore {
    /// A store in the tree `sessions` of `db`, with cleanup every minute when called inside
    /// a Tokio runtime. Outside a runtime there is no cleanup task (expired entries are
    /// still never returned); use [`builder`](Self::builder) to make that an error.
    ///
    /// `sled::Db` is a cheap handle: pass a clone of the application's own database to
    /// keep sessions beside its other trees.
    pub fn new(db: sled::Db) -> Self {
        let builder = Self::builder(db);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.cleanup_interval(None).build_unchecked()
    }

    /// Opens (or creates) the sled database in the directory `path` and returns
    /// [`SledStore::new`] over it.
    ///
    /// Opening is synchronous file I/O: do it at startup (or inside
    /// `tokio::task::spawn_blocking`). To pick the tree or the interval, open the database
    /// with `sled::open` and use [`builder`](Self::builder).
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the directory cannot be opened (missing permissions,
    /// or another process holds the database), [`ErrorKind::Backend`] for other sled
    /// failures.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = sled::open(path).map_err(|e| sled_error(e, "opening the sled database"))?;
        Ok(Self::new(db))
    }

    /// A builder for the tree name and cleanup interval, over the application's database.
    pub fn builder(db: sled::Db) -> SledStoreBuilder {
        SledStoreBuilder {
            db,
            tree: DEFAULT_TREE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Removes every expired entry of the tree now (and any value too short to hold the
    /// expiry and version, which could never be read) and returns how many went.
    ///
    /// # Errors
    /// The sled error, mapped.
    pub async fn remove_expired(&self) -> Result<u64> {
        self.blocking(Inner::remove_expired).await
    }

    /// The name of the tree that holds the sessions.
    pub fn tree_name(&self) -> &str {
        &self.inner.tree_name
    }

    /// Runs `f` against the database on Tokio's blocking pool: sled calls block on disk
    /// I/O and locks, and must never stall the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        scs_tokio::blocking(BACKEND, move || f(&inner)).await
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("tree", &self.inner.tree_name)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`SledStore`].
#[derive(Clone)]
#[must_use]
pub struct SledStoreBuilder {
    db: sled::Db,
    tree: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for SledStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStoreBuilder")
            .field("tree", &self.tree)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl SledStoreBuilder {
    /// The tree that holds the sessions (default `sessions`): `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    /// The store owns the whole tree; give each store its own.
    pub fn tree(mut self, name: impl Into<String>) -> Self {
        self.tree = name.into();
        self
    }

    /// How often expired entries are removed; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task. Does no I/O: the tree is opened by
    /// the first store call, on the blocking pool.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid tree name, a zero interval, or a cleanup
    /// interval without a running Tokio runtime.
    pub fn build(self) -> Result<SledStore> {
        entry::check_name(&self.tree, "tree", BACKEND)?;
        let interval = self.cleanup_interval;
        let mut store = self.build_unchecked();
        if let Some(interval) = interval {
            // The task holds the store weakly, so that dropping the last clone closes the
            // database at once (its directory can be opened again right away).
            let inner = Arc::downgrade(&store.inner);
            let task = CleanupTask::spawn(BACKEND, interval, move || {
                let inner: Weak<Inner> = inner.clone();
                scs_tokio::blocking(BACKEND, move || match inner.upgrade() {
                    Some(inner) => inner.remove_expired(),
                    None => Ok(0),
                })
            })?;
            store.cleanup = Some(Arc::new(task));
        }
        Ok(store)
    }

    fn build_unchecked(self) -> SledStore {
        SledStore {
            inner: Arc::new(Inner {
                db: self.db,
                tree_name: self.tree,
                tree: OnceLock::new(),
            }),
            cleanup: None,
        }
    }
}

fn sled_error(e: sled::Error, what: &'static str) -> Error {
    let kind = match e {
        sled::Error::Io(_) => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

// ---------------------------------------------------------------------------------------
// The engine calls, run on the blocking pool.

impl Inner {
    fn tree(&self) -> Result<&sled::Tree> {
        if let Some(tree) = self.tree.get() {
            return Ok(tree);
        }
        let tree = self
            .db
            .open_tree(&self.tree_name)
            .map_err(|e| sled_error(e, "opening the sessions tree"))?;
        Ok(self.tree.get_or_init(|| tree))
    }

    fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let Some(value) = self.tree()?.get(key).map_err(|e| sled_error(e, what))? else {
            return Ok(None);
        };
        let (stored, data) = entry::decode(&value, BACKEND)?;
        Ok((stored.expiry_ms > now_ms()).then(|| data.to_vec()))
    }

    /// One `get`, like [`find`](Self::find).
    fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let what = "finding a session";
        let Some(value) = self.tree()?.get(key).map_err(|e| sled_error(e, what))? else {
            return Ok(None);
        };
        let (stored, data) = entry::decode(&value, BACKEND)?;
        if stored.expiry_ms > now_ms() {
            stored.record(data, BACKEND).map(Some)
        } else {
            Ok(None)
        }
    }

    fn commit(&self, key: &str, value: Vec<u8>, expiry: u64) -> Result<()> {
        let what = "committing a session";
        let tree = self.tree()?;
        if expiry <= now_ms() {
            // Already expired: leave nothing behind.
            tree.remove(key).map_err(|e| sled_error(e, what))?;
        } else {
            tree.insert(key, value).map_err(|e| sled_error(e, what))?;
        }
        Ok(())
    }

    /// Read, compare the version, then compare-and-swap against the exact bytes read: the
    /// write lands only if nothing changed in between. When the bytes did change, the
    /// swap hands back the current value and the version is compared again: a touch
    /// (same version) lets the commit through, any other write makes it a conflict.
    fn commit_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expiry: u64,
        expected: Option<u64>,
    ) -> Result<bool> {
        let what = "committing a session";
        let tree = self.tree()?;
        let value = sled::IVec::from(value);
        let mut old = tree.get(key).map_err(|e| sled_error(e, what))?;
        loop {
            let now = now_ms();
            let current = match &old {
                Some(old) => entry::decode(old, BACKEND)?.0.live_version(now),
                None => None,
            };
            if current != expected {
                return Ok(false);
            }
            // An expiry already past leaves nothing behind.
            let new = (expiry > now).then(|| value.clone());
            match tree
                .compare_and_swap(key, old.as_ref(), new)
                .map_err(|e| sled_error(e, what))?
            {
                Ok(()) => return Ok(true),
                Err(changed) => old = changed.current,
            }
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.tree()?
            .remove(key)
            .map_err(|e| sled_error(e, "deleting a session"))?;
        Ok(())
    }

    /// Read, check, compare-and-swap: the new expiry lands only on the value that was
    /// read (its data and version kept), so a concurrent commit is never overwritten with
    /// older data.
    fn touch(&self, key: &str, expiry: u64) -> Result<bool> {
        let what = "touching a session";
        let tree = self.tree()?;
        let mut old = tree.get(key).map_err(|e| sled_error(e, what))?;
        loop {
            let Some(value) = &old else {
                return Ok(false);
            };
            let (stored, data) = entry::decode(value, BACKEND)?;
            let now = now_ms();
            if stored.expiry_ms <= now {
                return Ok(false);
            }
            let new = (expiry > now).then(|| encode(expiry, stored.version, data));
            match tree
                .compare_and_swap(key, old.as_ref(), new)
                .map_err(|e| sled_error(e, what))?
            {
                Ok(()) => return Ok(true),
                // Changed under us: look again at what is there now.
                Err(changed) => old = changed.current,
            }
        }
    }

    fn all(&self) -> Result<Vec<Entry>> {
        let what = "listing sessions";
        let now = now_ms();
        let mut out = Vec::new();
        for item in self.tree()?.iter() {
            let (key, value) = item.map_err(|e| sled_error(e, what))?;
            let (stored, data) = entry::decode(&value, BACKEND)?;
            if stored.expiry_ms <= now {
                continue;
            }
            let key = String::from_utf8(key.to_vec()).map_err(|e| {
                Error::new(ErrorKind::Codec, "a stored session key is not UTF-8")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
            out.push((key, data.to_vec()));
        }
        Ok(out)
    }

    /// One pass over the tree. Each expired entry is removed with a compare-and-swap
    /// against the value seen, so an entry recommitted meanwhile stays.
    fn remove_expired(&self) -> Result<u64> {
        let what = "removing expired sessions";
        let tree = self.tree()?;
        let now = now_ms();
        let mut removed = 0;
        for item in tree.iter() {
            let (key, value) = item.map_err(|e| sled_error(e, what))?;
            if is_dead(&value, now)
                && tree
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                    .map_err(|e| sled_error(e, what))?
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl Store for SledStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Touch rewrites the value (sled has no partial update) but atomically, by
        // compare-and-swap, so it never races a concurrent commit; so does commit_if,
        // after comparing the version of the value it swaps.
        Capabilities::new()
            .with_iterate()
            .with_touch()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.find(&key)).await
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let (key, expiry) = (key.to_owned(), unix_ms(expiry));
        let value = encode(expiry, scs_core::new_version(), data);
        self.blocking(move |inner| inner.commit(&key, value, expiry))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.delete(&key)).await
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let (key, expiry) = (key.to_owned(), unix_ms(expiry));
        self.blocking(move |inner| inner.touch(&key, expiry)).await
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.find_record(&key)).await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        let (key, expiry, version) = (key.to_owned(), unix_ms(expiry), scs_core::new_version());
        let value = encode(expiry, version, data);
        let written = self
            .blocking(move |inner| inner.commit_if(&key, value, expiry, expected))
            .await?;
        Ok(written.then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for SledStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.blocking(Inner::all).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    #[test]
    fn tree_names_are_validated() {
        for bad in ["", "1abc", "a-b", "a b", "sessions;", "é", &"a".repeat(64)] {
            let err = SledStore::builder(temp_db())
                .tree(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
        for good in ["a", "_", "sessions", "scs_abc123", &"a".repeat(63)] {
            let store = SledStore::builder(temp_db())
                .tree(good)
                .cleanup_interval(None)
                .build();
            assert!(store.is_ok(), "{good:?}");
        }
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup_and_builder_says_why() {
        let store = SledStore::new(temp_db());
        assert!(store.cleanup.is_none());
        assert_eq!(store.tree_name(), "sessions");
        let err = SledStore::builder(temp_db()).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn zero_interval_is_a_config_error() {
        let err = SledStore::builder(temp_db())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(SledStore::new(temp_db()).cleanup.is_some());
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_cleanup_and_releases_the_database() {
        let store = SledStore::builder(temp_db())
            .cleanup_interval(Some(Duration::from_millis(10)))
            .build()
            .unwrap();
        let task = Arc::downgrade(store.cleanup.as_ref().unwrap());
        let inner = Arc::downgrade(&store.inner);
        let clone = store.clone();
        drop(store);
        assert!(task.upgrade().is_some_and(|t| !t.is_stopped()));
        drop(clone);
        assert!(
            task.upgrade().is_none(),
            "the task handle went with the store"
        );
        assert!(
            inner.upgrade().is_none(),
            "the task does not keep the database open"
        );
    }

    #[test]
    fn debug_shows_the_namespace_and_no_handle() {
        let store = SledStore::builder(temp_db())
            .tree("secret_tree_name_is_fine")
            .cleanup_interval(None)
            .build()
            .unwrap();
        let out = format!("{store:?}");
        assert!(out.contains("SledStore") && out.contains("secret_tree_name_is_fine"));
        let builder = format!("{:?}", SledStore::builder(temp_db()));
        assert!(builder.contains("sessions"));
    }
}
