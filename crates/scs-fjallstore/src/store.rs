use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use fjall::{KeyspaceCreateOptions, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace};
use scs_core::entry::{self, encode, is_dead, now_ms, unix_ms};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Default name of the keyspace that holds the sessions.
const DEFAULT_KEYSPACE: &str = "sessions";

/// A session store in a [fjall](https://docs.rs/fjall) keyspace: an LSM tree, like Badger.
///
/// Each session is one entry of its own keyspace: the key is the store key, the value is
/// the expiry (8 bytes, big-endian Unix milliseconds), the version (8 bytes, big-endian),
/// then the data. Expiry is checked on every read; a background task removes every expired entry (every minute by
/// default). Every fjall call runs on Tokio's blocking pool, never on the async runtime.
///
/// The store takes a [`SingleWriterTxDatabase`]: its write transactions make touch,
/// `commit_if` and the cleanup atomic read-modify-writes.
///
/// Cloning is cheap and clones share the database. Dropping the last clone stops the
/// cleanup task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_fjallstore::FjallStore;
/// use std::time::Duration;
///
/// # let dir = tempfile::tempdir().unwrap();
/// // The application's own database, opened for transactions:
/// let db = fjall::SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
/// let store = FjallStore::builder(db)
///     .keyspace("sessions")
///     .cleanup_interval(Some(Duration::from_secs(30)))
///     .build()?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FjallStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    db: SingleWriterTxDatabase,
    keyspace_name: String,
    /// Opened on first use, on the blocking pool (creating a keyspace writes to disk).
    keyspace: OnceLock<SingleWriterTxKeyspace>,
}

impl FjallStore {
    /// A store in the keyspace `sessions` of `db`, with cleanup every minute when called
    /// inside a Tokio runtime. Outside a runtime there is no cleanup task (expired entries
    /// are still never returned); use [`builder`](Self::builder) to make that an error.
    ///
    /// `SingleWriterTxDatabase` is a cheap handle: pass a clone of the application's own
    /// database to keep sessions beside its other keyspaces.
    pub fn new(db: SingleWriterTxDatabase) -> Self {
        let builder = Self::builder(db);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.cleanup_interval(None).build_unchecked()
    }

    /// Opens (or creates) the fjall database in the directory `path` and returns
    /// [`FjallStore::new`] over it.
    ///
    /// Opening is synchronous file I/O: do it at startup (or inside
    /// `tokio::task::spawn_blocking`). To pick the keyspace or the interval, open the
    /// database with `SingleWriterTxDatabase::builder` and use [`builder`](Self::builder).
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the directory cannot be opened (missing permissions,
    /// or the database is already open), [`ErrorKind::Backend`] for other fjall failures.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = SingleWriterTxDatabase::builder(path)
            .open()
            .map_err(|e| fjall_error(e, "opening the fjall database"))?;
        Ok(Self::new(db))
    }

    /// A builder for the keyspace name and cleanup interval, over the application's
    /// database.
    pub fn builder(db: SingleWriterTxDatabase) -> FjallStoreBuilder {
        FjallStoreBuilder {
            db,
            keyspace: DEFAULT_KEYSPACE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Removes every expired entry of the keyspace now (and any value too short to hold the
    /// expiry and version, which could never be read) and returns how many went.
    ///
    /// # Errors
    /// The fjall error, mapped.
    pub async fn remove_expired(&self) -> Result<u64> {
        self.blocking(Inner::remove_expired).await
    }

    /// The name of the keyspace that holds the sessions.
    pub fn keyspace_name(&self) -> &str {
        &self.inner.keyspace_name
    }

    /// Runs `f` against the database on Tokio's blocking pool: fjall calls block on disk
    /// I/O, the journal and the writer lock, and must never stall the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        scs_tokio::blocking(BACKEND, move || f(&inner)).await
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("keyspace", &self.inner.keyspace_name)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`FjallStore`].
#[derive(Clone)]
#[must_use]
pub struct FjallStoreBuilder {
    db: SingleWriterTxDatabase,
    keyspace: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for FjallStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStoreBuilder")
            .field("keyspace", &self.keyspace)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl FjallStoreBuilder {
    /// The keyspace that holds the sessions (default `sessions`):
    /// `[A-Za-z_][A-Za-z0-9_]{0,62}`. The store owns the whole keyspace; give each store
    /// its own.
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = name.into();
        self
    }

    /// How often expired entries are removed; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task. Does no I/O: the keyspace is opened by
    /// the first store call, on the blocking pool.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid keyspace name, a zero interval, or a cleanup
    /// interval without a running Tokio runtime.
    pub fn build(self) -> Result<FjallStore> {
        entry::check_name(&self.keyspace, "keyspace", BACKEND)?;
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

    fn build_unchecked(self) -> FjallStore {
        FjallStore {
            inner: Arc::new(Inner {
                db: self.db,
                keyspace_name: self.keyspace,
                keyspace: OnceLock::new(),
            }),
            cleanup: None,
        }
    }
}

fn fjall_error(e: fjall::Error, what: &'static str) -> Error {
    let kind = match e {
        fjall::Error::Io(_)
        | fjall::Error::Storage(fjall::LsmError::Io(_))
        | fjall::Error::Locked => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

// ---------------------------------------------------------------------------------------
// The engine calls, run on the blocking pool. Writes go through the single-writer
// transactions, flushed to the journal (the OS) at each commit.

impl Inner {
    fn keyspace(&self) -> Result<&SingleWriterTxKeyspace> {
        if let Some(keyspace) = self.keyspace.get() {
            return Ok(keyspace);
        }
        let keyspace = self
            .db
            .keyspace(&self.keyspace_name, KeyspaceCreateOptions::default)
            .map_err(|e| fjall_error(e, "opening the sessions keyspace"))?;
        Ok(self.keyspace.get_or_init(|| keyspace))
    }

    fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let Some(value) = self
            .keyspace()?
            .get(key)
            .map_err(|e| fjall_error(e, what))?
        else {
            return Ok(None);
        };
        let (stored, data) = entry::decode(&value, BACKEND)?;
        Ok((stored.expiry_ms > now_ms()).then(|| data.to_vec()))
    }

    /// One `get`, like [`find`](Self::find).
    fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let what = "finding a session";
        let Some(value) = self
            .keyspace()?
            .get(key)
            .map_err(|e| fjall_error(e, what))?
        else {
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
        let keyspace = self.keyspace()?;
        if expiry <= now_ms() {
            // Already expired: leave nothing behind.
            keyspace.remove(key).map_err(|e| fjall_error(e, what))
        } else {
            keyspace
                .insert(key, value)
                .map_err(|e| fjall_error(e, what))
        }
    }

    /// Runs `f` on the value under `key` in one write transaction; when `f` returns a new
    /// value and its expiry, writes it (or removes the key when that expiry has passed
    /// already, so that nothing is left live behind) and commits; `None` rolls back. The
    /// single writer lock keeps every other write out between the read and the write.
    fn read_modify_write(
        &self,
        key: &str,
        what: &'static str,
        f: impl FnOnce(Option<&[u8]>) -> Result<Option<(Vec<u8>, u64)>>,
    ) -> Result<bool> {
        let keyspace = self.keyspace()?;
        let mut tx = self.db.write_tx();
        let write = match tx.get(keyspace, key) {
            Ok(old) => f(old.as_deref()),
            Err(e) => Err(fjall_error(e, what)),
        };
        match write {
            Ok(Some((_, expiry))) if expiry <= now_ms() => tx.remove(keyspace, key),
            Ok(Some((value, _))) => tx.insert(keyspace, key, value),
            Ok(None) => {
                tx.rollback();
                return Ok(false);
            }
            Err(e) => {
                tx.rollback();
                return Err(e);
            }
        }
        tx.commit().map_err(|e| fjall_error(e, what))?;
        Ok(true)
    }

    /// Read, compare the version and write in one write transaction.
    fn commit_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expiry: u64,
        expected: Option<u64>,
    ) -> Result<bool> {
        self.read_modify_write(key, "committing a session", |old| {
            let current = match old {
                Some(old) => entry::decode(old, BACKEND)?.0.live_version(now_ms()),
                None => None,
            };
            Ok((current == expected).then_some((value, expiry)))
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.keyspace()?
            .remove(key)
            .map_err(|e| fjall_error(e, "deleting a session"))
    }

    /// Read and rewrite in one write transaction, so the new expiry lands on the data (and
    /// version) that was read.
    fn touch(&self, key: &str, expiry: u64) -> Result<bool> {
        self.read_modify_write(key, "touching a session", |old| {
            let Some(old) = old else {
                return Ok(None);
            };
            let (old, old_data) = entry::decode(old, BACKEND)?;
            if old.expiry_ms <= now_ms() {
                return Ok(None);
            }
            Ok(Some((encode(expiry, old.version, old_data), expiry)))
        })
    }

    fn all(&self) -> Result<Vec<Entry>> {
        let what = "listing sessions";
        let keyspace = self.keyspace()?;
        let now = now_ms();
        let mut out = Vec::new();
        for item in self.db.read_tx().iter(keyspace) {
            let (key, value) = item.into_inner().map_err(|e| fjall_error(e, what))?;
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

    /// A scan of a snapshot (which does not hold up writers), then one write transaction
    /// that removes the expired entries found, each checked again so that an entry
    /// recommitted meanwhile stays.
    fn remove_expired(&self) -> Result<u64> {
        let what = "removing expired sessions";
        let keyspace = self.keyspace()?;
        let now = now_ms();
        let mut candidates = Vec::new();
        for item in self.db.read_tx().iter(keyspace) {
            let (key, value) = item.into_inner().map_err(|e| fjall_error(e, what))?;
            if is_dead(&value, now) {
                candidates.push(key);
            }
        }
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.write_tx();
        let now = now_ms();
        let mut removed = 0;
        for key in candidates {
            let still_dead = match tx.get(keyspace, &key) {
                Ok(value) => value.is_some_and(|value| is_dead(&value, now)),
                Err(e) => {
                    tx.rollback();
                    return Err(fjall_error(e, what));
                }
            };
            if still_dead {
                tx.remove(keyspace, key);
                removed += 1;
            }
        }
        tx.commit().map_err(|e| fjall_error(e, what))?;
        Ok(removed)
    }
}

#[async_trait]
impl Store for FjallStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Touch rewrites the value (an LSM tree has no partial update) but in one
        // single-writer transaction, so it never races a concurrent commit; so does
        // commit_if, which compares the version in that transaction.
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
impl IterableStore for FjallStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.blocking(Inner::all).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in a fresh temporary directory (kept alive by the returned guard).
    fn temp_db() -> (SingleWriterTxDatabase, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = SingleWriterTxDatabase::builder(dir.path())
            .temporary(true)
            .open()
            .unwrap();
        (db, dir)
    }

    #[test]
    fn keyspace_names_are_validated() {
        let (db, _dir) = temp_db();
        for bad in ["", "1abc", "a-b", "a b", "sessions;", "é", &"a".repeat(64)] {
            let err = FjallStore::builder(db.clone())
                .keyspace(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
        for good in ["a", "_", "sessions", "scs_abc123", &"a".repeat(63)] {
            let store = FjallStore::builder(db.clone())
                .keyspace(good)
                .cleanup_interval(None)
                .build();
            assert!(store.is_ok(), "{good:?}");
        }
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup_and_builder_says_why() {
        let (db, _dir) = temp_db();
        let store = FjallStore::new(db.clone());
        assert!(store.cleanup.is_none());
        assert_eq!(store.keyspace_name(), "sessions");
        let err = FjallStore::builder(db).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn zero_interval_is_a_config_error() {
        let (db, _dir) = temp_db();
        let err = FjallStore::builder(db.clone())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(FjallStore::new(db).cleanup.is_some());
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_cleanup_and_releases_the_database() {
        let (db, _dir) = temp_db();
        let store = FjallStore::builder(db)
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
        let (db, _dir) = temp_db();
        let store = FjallStore::builder(db.clone())
            .keyspace("my_keyspace")
            .cleanup_interval(None)
            .build()
            .unwrap();
        let out = format!("{store:?}");
        assert!(out.contains("FjallStore") && out.contains("my_keyspace"));
        let builder = format!("{:?}", FjallStore::builder(db));
        assert!(builder.contains("sessions"));
    }
}
