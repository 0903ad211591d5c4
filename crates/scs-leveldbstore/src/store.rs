use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusty_leveldb::{DB, LdbIterator, Options, Status, StatusCode, WriteBatch};
use scs_core::time::OffsetDateTime;
use scs_core::{Capabilities, Entry, Error, ErrorKind, IterableStore, Result, Store, async_trait};
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
/// the value is the expiry (8 bytes, big-endian Unix milliseconds) followed by the data.
/// Expiry is checked on every read; a background task removes every expired entry (every
/// minute by default), in one atomic batch. Every LevelDB call runs on Tokio's blocking
/// pool, never on the async runtime.
///
/// `rusty_leveldb::DB` needs `&mut` for every call, so the database is shared as
/// `Arc<Mutex<DB>>`: the store locks it for each call, and so can the application.
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
    /// an expiry, which could never be read) and returns how many went.
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
        validate_name(&self.prefix)?;
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

fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "invalid prefix name {name:?}: use 1 to 63 ASCII letters, digits or underscores, not starting with a digit"
            ),
        )
        .with_backend(BACKEND))
    }
}

// ---------------------------------------------------------------------------------------
// Value layout: 8-byte big-endian expiry in Unix milliseconds, then the data.

const EXPIRY_LEN: usize = 8;

fn unix_ms(t: OffsetDateTime) -> u64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    unix_ms(OffsetDateTime::now_utc())
}

fn encode(expiry_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(EXPIRY_LEN + data.len());
    value.extend_from_slice(&expiry_ms.to_be_bytes());
    value.extend_from_slice(data);
    value
}

/// Splits a stored value into expiry and data; `None` when it is too short.
fn decode(value: &[u8]) -> Option<(u64, &[u8])> {
    let (expiry, data) = value.split_first_chunk::<EXPIRY_LEN>()?;
    Some((u64::from_be_bytes(*expiry), data))
}

fn decode_or_error(value: &[u8]) -> Result<(u64, &[u8])> {
    decode(value).ok_or_else(|| {
        Error::new(
            ErrorKind::Codec,
            "a stored session is shorter than its 8-byte expiry prefix",
        )
        .with_backend(BACKEND)
    })
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

    fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let key = self.key(key);
        let value = {
            let mut db = self.lock()?;
            // `get` would turn read errors into "not found"; `get_at` keeps them.
            let snapshot = db.get_snapshot();
            db.get_at(&snapshot, &key)
                .map_err(|e| leveldb_error(e, what))?
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let (expiry, data) = decode_or_error(&value)?;
        Ok((expiry > now_ms()).then(|| data.to_vec()))
    }

    fn commit(&self, key: &str, value: &[u8], expiry: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        if expiry <= now_ms() {
            // Already expired: leave nothing behind.
            batch.delete(&self.key(key));
        } else {
            batch.put(&self.key(key), value);
        }
        self.write(batch, "committing a session")
    }

    fn delete(&self, key: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(&self.key(key));
        self.write(batch, "deleting a session")
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
            let (expiry, data) = decode_or_error(value)?;
            if expiry > now {
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
            if decode(value).is_none_or(|(expiry, _)| expiry <= now) {
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
        // No touch: LevelDB has neither partial updates nor transactions, so extending an
        // expiry means reading and rewriting the whole value; the manager's commit does
        // the same work.
        Capabilities::new().with_iterate()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.find(&key)).await
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let (key, expiry) = (key.to_owned(), unix_ms(expiry));
        let value = encode(expiry, data);
        self.blocking(move |inner| inner.commit(&key, &value, expiry))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.delete(&key)).await
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

    #[tokio::test]
    async fn touch_is_unsupported() {
        let store = LevelDbStore::new(temp_db());
        let err = store
            .touch("k", OffsetDateTime::now_utc())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(!store.capabilities().touch);
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

    #[test]
    fn value_layout_round_trips_and_rejects_short_values() {
        let v = encode(0x0102_0304_0506_0708, b"data");
        assert_eq!(&v[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode(&v), Some((0x0102_0304_0506_0708, &b"data"[..])));
        assert_eq!(decode(&encode(5, b"")), Some((5, &b""[..])));
        for short in [&b""[..], b"1234567"] {
            assert!(decode(short).is_none());
            assert_eq!(decode_or_error(short).unwrap_err().kind(), ErrorKind::Codec);
        }
        let before_epoch = OffsetDateTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(unix_ms(before_epoch), 0);
        let t = OffsetDateTime::UNIX_EPOCH + Duration::from_micros(1_234_567);
        assert_eq!(unix_ms(t), 1234);
    }
}
