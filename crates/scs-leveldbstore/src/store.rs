use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusty_leveldb::{DB, LdbIterator, Options, Status, StatusCode, WriteBatch};
use scs_core::entry::{self, encode, is_dead, now_ms, unix_ms};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Default name of the key prefix (keys are stored as `<name>:<key>`).
const DEFAULT_PREFIX: &str = "sessions";

/// A session store in a LevelDB database, through
/// [rusty-leveldb](https://docs.rs/rusty-leveldb) (pure Rust, no C library).
///
/// Each session is one entry under the store's key prefix (`sessions:<key>` by default):
/// the value is the expiry (8 bytes, big-endian Unix milliseconds), the version (8 bytes,
/// big-endian), then the data.
/// Expiry is checked on every read; a background task removes every expired entry (every
/// minute by default), in one atomic batch. Every LevelDB call runs on Tokio's blocking
/// pool, never on the async runtime.
///
/// `rusty_leveldb::DB` needs `&mut` for every call, so the database is shared as
/// `Arc<Mutex<DB>>`: the store locks it for each call, and so can the application. Touch
/// and `commit_if` read and write under one hold of that lock, which makes them atomic
/// against every other call of the store.
///
/// Cloning is cheap and clones share the database. Dropping the last clone stops the
/// cleanup task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_leveldbstore::LevelDbStore;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// # let db = rusty_leveldb::DB::open("doc", rusty_leveldb::in_memory()).unwrap();
/// // let db = rusty_leveldb::DB::open("data/app", rusty_leveldb::Options::default())?;
/// let store = LevelDbStore::builder(Arc::new(Mutex::new(db)))
///     .prefix("sessions")
///     .cleanup_interval(Some(Duration::from_secs(30)))
///     .build()?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LevelDbStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    db: Arc<Mutex<DB>>,
    name: String,
    /// `name` and `:`; the separator keeps prefix `a` from seeing the keys of prefix `ab`.
    prefix: Vec<u8>,
}

impl LevelDbStore {
    /// A store under the prefix `sessions:` of `db`, with cleanup every minute when called
    /// inside a Tokio runtime. Outside a runtime there is no cleanup task (expired entries
    /// are still never returned); use [`builder`](Self::builder) to make that an error.
    pub fn new(db: Arc<Mutex<DB>>) -> Self {
        let builder = Self::builder(db);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.cleanup_interval(None).build_unchecked()
    }

    /// Opens (or creates) the LevelDB database in the directory `path` with default options
    /// and returns [`LevelDbStore::new`] over it.
    ///
    /// Opening is synchronous file I/O: do it at startup (or inside
    /// `tokio::task::spawn_blocking`). To pick the prefix, the interval or LevelDB options,
    /// open the database with `rusty_leveldb::DB::open` and use [`builder`](Self::builder).
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the directory cannot be opened (missing permissions,
    /// or another process holds its lock), [`ErrorKind::Backend`] for other LevelDB
    /// failures.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = DB::open(path.as_ref(), Options::default())
            .map_err(|e| leveldb_error(e, "opening the LevelDB database"))?;
        Ok(Self::new(Arc::new(Mutex::new(db))))
    }

    /// A builder for the key prefix and cleanup interval, over the application's database.
    pub fn builder(db: Arc<Mutex<DB>>) -> LevelDbStoreBuilder {
        LevelDbStoreBuilder {
            db,
            prefix: DEFAULT_PREFIX.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Removes every expired entry under the prefix now (and any value too short to hold
    /// the expiry and version, which could never be read) and returns how many went.
    ///
    /// # Errors
    /// The LevelDB error, mapped.
    pub async fn remove_expired(&self) -> Result<u64> {
        self.blocking(Inner::remove_expired).await
    }

    /// The name of the key prefix (keys are stored as `<name>:<key>`).
    pub fn prefix(&self) -> &str {
        &self.inner.name
    }

    /// Runs `f` against the database on Tokio's blocking pool: LevelDB calls block on disk
    /// I/O and on the database's mutex, and must never stall the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        scs_tokio::blocking(BACKEND, move || f(&inner)).await
    }
}

impl std::fmt::Debug for LevelDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelDbStore")
            .field("prefix", &self.inner.name)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`LevelDbStore`].
#[derive(Clone)]
#[must_use]
pub struct LevelDbStoreBuilder {
    db: Arc<Mutex<DB>>,
    prefix: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for LevelDbStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelDbStoreBuilder")
            .field("prefix", &self.prefix)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl LevelDbStoreBuilder {
    /// The name of the key prefix (default `sessions`): `[A-Za-z_][A-Za-z0-9_]{0,62}`. Keys
    /// are stored as `<name>:<key>`; the store owns every key under `<name>:`.
    pub fn prefix(mut self, name: impl Into<String>) -> Self {
        self.prefix = name.into();
        self
    }

    /// How often expired entries are removed; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task. Does no I/O.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid prefix name, a zero interval, or a cleanup
    /// interval without a running Tokio runtime.
    pub fn build(self) -> Result<LevelDbStore> {
        entry::check_name(&self.prefix, "prefix", BACKEND)?;
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

    fn build_unchecked(self) -> LevelDbStore {
        let mut prefix = self.prefix.clone().into_bytes();
        prefix.push(b':');
        LevelDbStore {
            inner: Arc::new(Inner {
                db: self.db,
                name: self.prefix,
                prefix,
            }),
            cleanup: None,
        }
    }
}

fn leveldb_error(e: Status, what: &'static str) -> Error {
    let kind = match e.code {
        StatusCode::IOError
        | StatusCode::Errno(_)
        | StatusCode::LockError
        | StatusCode::PermissionDenied => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

// ---------------------------------------------------------------------------------------
// The engine calls, run on the blocking pool, each under the database's mutex. Writes are
// batches written with `sync = true`: the log is flushed to the OS at each one.

impl Inner {
    fn lock(&self) -> Result<MutexGuard<'_, DB>> {
        self.db.lock().map_err(|_| {
            Error::new(
                ErrorKind::Backend,
                "the LevelDB database is unusable: a thread panicked while holding its lock",
            )
            .with_backend(BACKEND)
        })
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn write(&self, batch: WriteBatch, what: &'static str) -> Result<()> {
        self.lock()?
            .write(batch, true)
            .map_err(|e| leveldb_error(e, what))
    }

    /// The value under the full key `key`. `get` would turn read errors into "not found";
    /// `get_at` keeps them.
    fn get(
        db: &mut DB,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<impl AsRef<[u8]> + use<>>> {
        let snapshot = db.get_snapshot();
        db.get_at(&snapshot, key)
            .map_err(|e| leveldb_error(e, what))
    }

    /// A batch that writes `value` under the full key `key`, or removes the key when
    /// `expiry` has passed already, so that nothing is left live behind.
    fn put(key: &[u8], value: &[u8], expiry: u64) -> WriteBatch {
        let mut batch = WriteBatch::default();
        if expiry <= now_ms() {
            batch.delete(key);
        } else {
            batch.put(key, value);
        }
        batch
    }

    fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let value = Self::get(&mut *self.lock()?, &self.key(key), what)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (stored, data) = entry::decode(value.as_ref(), BACKEND)?;
        Ok((stored.expiry_ms > now_ms()).then(|| data.to_vec()))
    }

    /// One `get`, like [`find`](Self::find).
    fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let what = "finding a session";
        let value = Self::get(&mut *self.lock()?, &self.key(key), what)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (stored, data) = entry::decode(value.as_ref(), BACKEND)?;
        if stored.expiry_ms > now_ms() {
            stored.record(data, BACKEND).map(Some)
        } else {
            Ok(None)
        }
    }

    fn commit(&self, key: &str, value: &[u8], expiry: u64) -> Result<()> {
        self.write(
            Self::put(&self.key(key), value, expiry),
            "committing a session",
        )
    }

    /// Read, compare the version and write under one hold of the database's lock: no
    /// other call of the store can come in between.
    fn commit_if(
        &self,
        key: &str,
        value: &[u8],
        expiry: u64,
        expected: Option<u64>,
    ) -> Result<bool> {
        let what = "committing a session";
        let key = self.key(key);
        let mut db = self.lock()?;
        let current = match Self::get(&mut db, &key, what)? {
            Some(old) => entry::decode(old.as_ref(), BACKEND)?
                .0
                .live_version(now_ms()),
            None => None,
        };
        if current != expected {
            return Ok(false);
        }
        db.write(Self::put(&key, value, expiry), true)
            .map_err(|e| leveldb_error(e, what))?;
        Ok(true)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(&self.key(key));
        self.write(batch, "deleting a session")
    }

    /// Read and rewrite under one hold of the database's lock, so the new expiry lands on
    /// the data (and version) that was read.
    fn touch(&self, key: &str, expiry: u64) -> Result<bool> {
        let what = "touching a session";
        let key = self.key(key);
        let mut db = self.lock()?;
        let Some(old) = Self::get(&mut db, &key, what)? else {
            return Ok(false);
        };
        let (old, old_data) = entry::decode(old.as_ref(), BACKEND)?;
        if old.expiry_ms <= now_ms() {
            return Ok(false);
        }
        let value = encode(expiry, old.version, old_data);
        db.write(Self::put(&key, &value, expiry), true)
            .map_err(|e| leveldb_error(e, what))?;
        Ok(true)
    }

    /// Calls `f` for every entry under the prefix, in key order, with the key's suffix.
    fn scan(
        &self,
        db: &mut DB,
        what: &'static str,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut it = db.new_iter().map_err(|e| leveldb_error(e, what))?;
        it.seek(&self.prefix);
        while let Some((key, value)) = it.current() {
            let Some(suffix) = key.strip_prefix(self.prefix.as_slice()) else {
                break;
            };
            f(suffix, &value)?;
            if !it.advance() {
                break;
            }
        }
        Ok(())
    }

    fn all(&self) -> Result<Vec<Entry>> {
        let what = "listing sessions";
        let now = now_ms();
        let mut out = Vec::new();
        let mut db = self.lock()?;
        self.scan(&mut db, what, |key, value| {
            let (stored, data) = entry::decode(value, BACKEND)?;
            if stored.expiry_ms > now {
                let key = String::from_utf8(key.to_vec()).map_err(|e| {
                    Error::new(ErrorKind::Codec, "a stored session key is not UTF-8")
                        .with_backend(BACKEND)
                        .with_source(e)
                })?;
                out.push((key, data.to_vec()));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// One scan and one batch, both under the lock: every expired entry goes at once, and
    /// nothing can be recommitted in between.
    fn remove_expired(&self) -> Result<u64> {
        let what = "removing expired sessions";
        let now = now_ms();
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut db = self.lock()?;
        self.scan(&mut db, what, |key, value| {
            if is_dead(value, now) {
                let mut full = self.prefix.clone();
                full.extend_from_slice(key);
                batch.delete(&full);
                removed += 1;
            }
            Ok(())
        })?;
        if removed > 0 {
            db.write(batch, true).map_err(|e| leveldb_error(e, what))?;
        }
        Ok(removed)
    }
}

#[async_trait]
impl Store for LevelDbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Touch rewrites the value (LevelDB has no partial update) but under the
        // database's lock, so it never races a concurrent commit; so does commit_if,
        // which compares the version under that lock.
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
        self.blocking(move |inner| inner.commit(&key, &value, expiry))
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
            .blocking(move |inner| inner.commit_if(&key, &value, expiry, expected))
            .await?;
        Ok(written.then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for LevelDbStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.blocking(Inner::all).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> Arc<Mutex<DB>> {
        Arc::new(Mutex::new(
            DB::open("test", rusty_leveldb::in_memory()).unwrap(),
        ))
    }

    #[test]
    fn prefix_names_are_validated() {
        for bad in ["", "1abc", "a-b", "a b", "a:b", "é", &"a".repeat(64)] {
            let err = LevelDbStore::builder(temp_db())
                .prefix(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
        for good in ["a", "_", "sessions", "scs_abc123", &"a".repeat(63)] {
            let store = LevelDbStore::builder(temp_db())
                .prefix(good)
                .cleanup_interval(None)
                .build()
                .unwrap();
            assert_eq!(store.inner.key("k"), format!("{good}:k").into_bytes());
        }
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup_and_builder_says_why() {
        let store = LevelDbStore::new(temp_db());
        assert!(store.cleanup.is_none());
        assert_eq!(store.prefix(), "sessions");
        let err = LevelDbStore::builder(temp_db()).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn zero_interval_is_a_config_error() {
        let err = LevelDbStore::builder(temp_db())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(LevelDbStore::new(temp_db()).cleanup.is_some());
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_cleanup_and_releases_the_database() {
        let store = LevelDbStore::builder(temp_db())
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
        let store = LevelDbStore::builder(temp_db())
            .prefix("my_prefix")
            .cleanup_interval(None)
            .build()
            .unwrap();
        let out = format!("{store:?}");
        assert!(out.contains("LevelDbStore") && out.contains("my_prefix"));
        let builder = format!("{:?}", LevelDbStore::builder(temp_db()));
        assert!(builder.contains("sessions"));
    }
}
