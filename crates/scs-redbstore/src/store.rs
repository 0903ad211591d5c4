use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use scs_core::entry::{self, encode, is_dead, now_ms, unix_ms};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Default name of the table that holds the sessions.
const DEFAULT_TABLE: &str = "sessions";

/// A session store in a [redb](https://docs.rs/redb) table: one B-tree in a single file,
/// with ACID transactions.
///
/// Each session is one row of its own table (`&str` keys, `&[u8]` values): the value is the
/// expiry (8 bytes, big-endian Unix milliseconds), the version (8 bytes, big-endian), then
/// the data. Expiry is checked on every read; a background task removes every expired row (every minute by default).
/// Every redb call runs on Tokio's blocking pool, never on the async runtime.
///
/// Cloning is cheap and clones share the database. Dropping the last clone stops the
/// cleanup task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_redbstore::RedbStore;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # let db = redb::Database::builder()
/// #     .create_with_backend(redb::backends::InMemoryBackend::new())
/// #     .unwrap();
/// // let db = redb::Database::create("app.redb")?;  (the application's own database)
/// let store = RedbStore::builder(Arc::new(db))
///     .table("sessions")
///     .cleanup_interval(Some(Duration::from_secs(30)))
///     .build()?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    db: Arc<Database>,
    table_name: String,
}

impl RedbStore {
    /// A store in the table `sessions` of `db`, with cleanup every minute when called
    /// inside a Tokio runtime. Outside a runtime there is no cleanup task (expired rows are
    /// still never returned); use [`builder`](Self::builder) to make that an error.
    ///
    /// Takes the database in an `Arc` (a plain `Database` converts), so the application
    /// keeps using it for its own tables.
    pub fn new(db: impl Into<Arc<Database>>) -> Self {
        let builder = Self::builder(db);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.cleanup_interval(None).build_unchecked()
    }

    /// Opens (or creates) the redb database file at `path` and returns
    /// [`RedbStore::new`] over it.
    ///
    /// Opening is synchronous file I/O: do it at startup (or inside
    /// `tokio::task::spawn_blocking`). To pick the table or the interval, open the database
    /// with `redb::Database::create` and use [`builder`](Self::builder).
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the file cannot be opened (missing permissions, or
    /// the database is already open), [`ErrorKind::Backend`] for other redb failures.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = Database::create(path).map_err(|e| redb_error(e, "opening the redb database"))?;
        Ok(Self::new(db))
    }

    /// A builder for the table name and cleanup interval, over the application's database.
    pub fn builder(db: impl Into<Arc<Database>>) -> RedbStoreBuilder {
        RedbStoreBuilder {
            db: db.into(),
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Removes every expired row of the table now (and any value too short to hold the
    /// expiry and version, which could never be read) and returns how many went.
    ///
    /// # Errors
    /// The redb error, mapped.
    pub async fn remove_expired(&self) -> Result<u64> {
        self.blocking(Inner::remove_expired).await
    }

    /// The name of the table that holds the sessions.
    pub fn table_name(&self) -> &str {
        &self.inner.table_name
    }

    /// Runs `f` against the database on Tokio's blocking pool: redb calls block on disk
    /// I/O, fsync and the writer lock, and must never stall the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        scs_tokio::blocking(BACKEND, move || f(&inner)).await
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("table", &self.inner.table_name)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`RedbStore`].
#[derive(Clone)]
#[must_use]
pub struct RedbStoreBuilder {
    db: Arc<Database>,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for RedbStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStoreBuilder")
            .field("table", &self.table)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl RedbStoreBuilder {
    /// The table that holds the sessions (default `sessions`):
    /// `[A-Za-z_][A-Za-z0-9_]{0,62}`. The store owns the whole table; give each store its
    /// own. It is created by the first commit.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How often expired rows are removed; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task. Does no I/O.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid table name, a zero interval, or a cleanup
    /// interval without a running Tokio runtime.
    pub fn build(self) -> Result<RedbStore> {
        entry::check_name(&self.table, "table", BACKEND)?;
        let interval = self.cleanup_interval;
        let mut store = self.build_unchecked();
        if let Some(interval) = interval {
            // The task holds the store weakly, so that dropping the last clone closes the
            // database at once (its file can be opened again right away).
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

    fn build_unchecked(self) -> RedbStore {
        RedbStore {
            inner: Arc::new(Inner {
                db: self.db,
                table_name: self.table,
            }),
            cleanup: None,
        }
    }
}

fn redb_error(e: impl Into<redb::Error>, what: &'static str) -> Error {
    let e = e.into();
    let kind = match e {
        redb::Error::Io(_)
        | redb::Error::PreviousIo
        | redb::Error::DatabaseAlreadyOpen
        | redb::Error::DatabaseClosed => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

// ---------------------------------------------------------------------------------------
// The engine calls, run on the blocking pool. Every write is one transaction, committed
// with redb's default (immediate) durability.

type Table<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

impl Inner {
    fn table(&self) -> Table<'_> {
        TableDefinition::new(&self.table_name)
    }

    /// Runs `f` over the table in a read transaction; `None` when the table does not
    /// exist yet (nothing was ever committed).
    fn read<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T>,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| redb_error(e, what))?;
        match txn.open_table(self.table()) {
            Ok(table) => f(&table).map(Some),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(redb_error(e, what)),
        }
    }

    /// Runs `f` over the table in a write transaction and commits it when `f` returns
    /// `Some`; `None` (nothing to write) and errors roll the transaction back.
    fn write<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_write().map_err(|e| redb_error(e, what))?;
        let out = {
            let mut table = txn
                .open_table(self.table())
                .map_err(|e| redb_error(e, what))?;
            f(&mut table)
        };
        match out {
            Ok(Some(out)) => {
                txn.commit().map_err(|e| redb_error(e, what))?;
                Ok(Some(out))
            }
            Ok(None) => {
                txn.abort().map_err(|e| redb_error(e, what))?;
                Ok(None)
            }
            Err(e) => {
                // Nothing to keep; an abort failure would only hide the first error.
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// Writes `value` under `key`, or removes the key when `expiry` has passed already, so
    /// that nothing is left live behind.
    fn put(
        table: &mut redb::Table<'_, &'static str, &'static [u8]>,
        key: &str,
        value: &[u8],
        expiry: u64,
        what: &'static str,
    ) -> Result<()> {
        if expiry <= now_ms() {
            table.remove(key).map(drop)
        } else {
            table.insert(key, value).map(drop)
        }
        .map_err(|e| redb_error(e, what))
    }

    fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let found = self.read(what, |table| {
            let Some(value) = table.get(key).map_err(|e| redb_error(e, what))? else {
                return Ok(None);
            };
            let (stored, data) = entry::decode(value.value(), BACKEND)?;
            Ok((stored.expiry_ms > now_ms()).then(|| data.to_vec()))
        })?;
        Ok(found.flatten())
    }

    /// One `get` in a read transaction, like [`find`](Self::find).
    fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let what = "finding a session";
        let found = self.read(what, |table| {
            let Some(value) = table.get(key).map_err(|e| redb_error(e, what))? else {
                return Ok(None);
            };
            let (stored, data) = entry::decode(value.value(), BACKEND)?;
            if stored.expiry_ms > now_ms() {
                stored.record(data, BACKEND).map(Some)
            } else {
                Ok(None)
            }
        })?;
        Ok(found.flatten())
    }

    fn commit(&self, key: &str, value: &[u8], expiry: u64) -> Result<()> {
        let what = "committing a session";
        self.write(what, |table| {
            Self::put(table, key, value, expiry, what).map(Some)
        })?;
        Ok(())
    }

    /// Read, compare and write in one write transaction: writers are serialized, so no
    /// other write can land between the version check and the write.
    fn commit_if(
        &self,
        key: &str,
        value: &[u8],
        expiry: u64,
        expected: Option<u64>,
    ) -> Result<bool> {
        let what = "committing a session";
        let written = self.write(what, |table| {
            let current = match table.get(key).map_err(|e| redb_error(e, what))? {
                Some(old) => entry::decode(old.value(), BACKEND)?
                    .0
                    .live_version(now_ms()),
                None => None,
            };
            if current != expected {
                return Ok(None);
            }
            Self::put(table, key, value, expiry, what).map(Some)
        })?;
        Ok(written.is_some())
    }

    fn delete(&self, key: &str) -> Result<()> {
        let what = "deleting a session";
        self.write(what, |table| {
            table.remove(key).map_err(|e| redb_error(e, what))?;
            Ok(Some(()))
        })?;
        Ok(())
    }

    /// Read and rewrite in one write transaction: writers are serialized, so nothing can
    /// slip in between and the new expiry lands on the data (and version) that was read.
    fn touch(&self, key: &str, expiry: u64) -> Result<bool> {
        let what = "touching a session";
        let touched = self.write(what, |table| {
            let new = {
                let Some(old) = table.get(key).map_err(|e| redb_error(e, what))? else {
                    return Ok(None);
                };
                let (old, old_data) = entry::decode(old.value(), BACKEND)?;
                if old.expiry_ms <= now_ms() {
                    return Ok(None);
                }
                encode(expiry, old.version, old_data)
            };
            Self::put(table, key, &new, expiry, what).map(Some)
        })?;
        Ok(touched.is_some())
    }

    fn all(&self) -> Result<Vec<Entry>> {
        let what = "listing sessions";
        let now = now_ms();
        let all = self.read(what, |table| {
            let mut out = Vec::new();
            for row in table.iter().map_err(|e| redb_error(e, what))? {
                let (key, value) = row.map_err(|e| redb_error(e, what))?;
                let (stored, data) = entry::decode(value.value(), BACKEND)?;
                if stored.expiry_ms > now {
                    out.push((key.value().to_owned(), data.to_vec()));
                }
            }
            Ok(out)
        })?;
        Ok(all.unwrap_or_default())
    }

    /// A scan in a read transaction (which does not hold up writers), then one write
    /// transaction that removes the expired rows found, each checked again so that a row
    /// recommitted meanwhile stays.
    fn remove_expired(&self) -> Result<u64> {
        let what = "removing expired sessions";
        let now = now_ms();
        let candidates = self.read(what, |table| {
            let mut keys = Vec::new();
            for row in table.iter().map_err(|e| redb_error(e, what))? {
                let (key, value) = row.map_err(|e| redb_error(e, what))?;
                if is_dead(value.value(), now) {
                    keys.push(key.value().to_owned());
                }
            }
            Ok(keys)
        })?;
        let candidates = candidates.unwrap_or_default();
        if candidates.is_empty() {
            return Ok(0);
        }
        self.write(what, |table| {
            let now = now_ms();
            let mut removed = 0;
            for key in &candidates {
                let still_dead = match table.get(key.as_str()).map_err(|e| redb_error(e, what))? {
                    Some(value) => is_dead(value.value(), now),
                    None => false,
                };
                if still_dead {
                    table
                        .remove(key.as_str())
                        .map_err(|e| redb_error(e, what))?;
                    removed += 1;
                }
            }
            Ok(Some(removed))
        })
        .map(Option::unwrap_or_default)
    }
}

#[async_trait]
impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Touch rewrites the value (a copy-on-write B-tree rewrites the page anyway) but in
        // one serialized write transaction, so it never races a concurrent commit; so does
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
impl IterableStore for RedbStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.blocking(Inner::all).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap()
    }

    #[test]
    fn table_names_are_validated() {
        for bad in ["", "1abc", "a-b", "a b", "sessions;", "é", &"a".repeat(64)] {
            let err = RedbStore::builder(temp_db())
                .table(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
        for good in ["a", "_", "sessions", "scs_abc123", &"a".repeat(63)] {
            let store = RedbStore::builder(temp_db())
                .table(good)
                .cleanup_interval(None)
                .build();
            assert!(store.is_ok(), "{good:?}");
        }
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup_and_builder_says_why() {
        let store = RedbStore::new(temp_db());
        assert!(store.cleanup.is_none());
        assert_eq!(store.table_name(), "sessions");
        let err = RedbStore::builder(temp_db()).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn zero_interval_is_a_config_error() {
        let err = RedbStore::builder(temp_db())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(RedbStore::new(temp_db()).cleanup.is_some());
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_cleanup_and_releases_the_database() {
        let store = RedbStore::builder(temp_db())
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
        let store = RedbStore::builder(temp_db())
            .table("my_table")
            .cleanup_interval(None)
            .build()
            .unwrap();
        let out = format!("{store:?}");
        assert!(out.contains("RedbStore") && out.contains("my_table"));
        let builder = format!("{:?}", RedbStore::builder(temp_db()));
        assert!(builder.contains("sessions"));
    }
}
