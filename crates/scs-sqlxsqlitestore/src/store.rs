use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use crate::BACKEND;

/// Default table name.
const DEFAULT_TABLE: &str = "sessions";
/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long a connection waits for a lock held by another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A session store in SQLite, on a [`sqlx`] `SqlitePool` (for apps that already use sqlx;
/// Go scs has no counterpart, its `sqlite3store` is answered by `scs-sqlitestore`).
///
/// sqlx runs each SQLite connection on a worker thread of its own, so the async runtime is
/// never blocked. Expiry is kept in Unix milliseconds and checked in every query; a
/// background task deletes expired rows (every 5 minutes by default). Cloning is cheap and
/// clones share the pool. Dropping the last clone stops the task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_sqlxsqlitestore::SqlxSqliteStore;
///
/// let store = SqlxSqliteStore::open_in_memory().await?;
/// store.migrate().await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlxSqliteStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    table: String,
    sql: Sql,
    pool: SqlitePool,
}

/// The statements, built once from the validated table name (shared, not copied, per
/// query).
struct Sql {
    find: Arc<str>,
    find_record: Arc<str>,
    commit: Arc<str>,
    commit_if_current: Arc<str>,
    commit_if_absent: Arc<str>,
    delete_if_current: Arc<str>,
    delete: Arc<str>,
    touch: Arc<str>,
    all: Arc<str>,
    delete_expired: Arc<str>,
    create_table: Arc<str>,
    create_index: Arc<str>,
    has_version_column: Arc<str>,
    add_version_column: Arc<str>,
}

impl Sql {
    fn new(table: &str) -> Self {
        // The name is validated, and quoted so that keywords are fine too.
        let t = format!("\"{table}\"");
        Self {
            find: format!("SELECT data FROM {t} WHERE token = ? AND expiry > ?").into(),
            find_record: format!(
                "SELECT data, expiry, version FROM {t} WHERE token = ? AND expiry > ?"
            )
            .into(),
            commit: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
                 expiry = excluded.expiry, version = excluded.version"
            )
            .into(),
            // Only the live entry with the expected version.
            commit_if_current: format!(
                "UPDATE {t} SET data = ?, expiry = ?, version = ? \
                 WHERE token = ? AND version = ? AND expiry > ?"
            )
            .into(),
            // Inserts, or takes over an expired row; a live row stays as it is (no change).
            commit_if_absent: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
                 expiry = excluded.expiry, version = excluded.version WHERE {t}.expiry <= ?"
            )
            .into(),
            delete_if_current: format!(
                "DELETE FROM {t} WHERE token = ? AND version = ? AND expiry > ?"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE token = ?").into(),
            touch: format!("UPDATE {t} SET expiry = ? WHERE token = ? AND expiry > ?").into(),
            all: format!("SELECT token, data FROM {t} WHERE expiry > ?").into(),
            delete_expired: format!("DELETE FROM {t} WHERE expiry <= ?").into(),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 token TEXT PRIMARY KEY NOT NULL, \
                 data BLOB NOT NULL, \
                 expiry INTEGER NOT NULL, \
                 version INTEGER NOT NULL DEFAULT 0)"
            )
            .into(),
            create_index: format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_expiry_idx\" ON {t} (expiry)"
            )
            .into(),
            // A table made by a version of this crate before versioned commits lacks it.
            has_version_column: "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'version'"
                .into(),
            add_version_column: format!(
                "ALTER TABLE {t} ADD COLUMN version INTEGER NOT NULL DEFAULT 0"
            )
            .into(),
        }
    }
}

/// A query on one of the prepared statements (sqlx caches it per connection).
fn query(
    sql: &Arc<str>,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

impl Inner {
    fn new(pool: SqlitePool, table: String) -> Self {
        Self {
            sql: Sql::new(&table),
            table,
            pool,
        }
    }

    async fn delete_expired(&self) -> Result<u64> {
        let done = query(&self.sql.delete_expired)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| sqlx_error("deleting expired sessions", e))?;
        Ok(done.rows_affected())
    }
}

// ---------------------------------------------------------------------------------------
// Errors, names, time

fn sqlx_error(what: &'static str, e: sqlx::Error) -> Error {
    let kind = match &e {
        sqlx::Error::Configuration(_) => ErrorKind::Config,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Connection,
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        // SQLite's extended result code; the primary code is its low byte.
        sqlx::Error::Database(db) => match db.code().and_then(|c| c.parse::<i32>().ok()) {
            // SQLITE_BUSY, SQLITE_LOCKED: still locked after the busy timeout.
            Some(code) if matches!(code & 0xff, 5 | 6) => ErrorKind::Timeout,
            // SQLITE_PERM, SQLITE_IOERR, SQLITE_CANTOPEN.
            Some(code) if matches!(code & 0xff, 3 | 10 | 14) => ErrorKind::Connection,
            _ => ErrorKind::Backend,
        },
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message).with_backend(BACKEND)
}

/// `[A-Za-z_][A-Za-z0-9_]{0,62}`, and not SQLite's reserved `sqlite_` prefix.
fn validate_table_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let well_formed = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if !well_formed {
        return Err(config_error(format!(
            "invalid table name {name:?}: use 1 to 63 of [A-Za-z0-9_], not starting with a digit"
        )));
    }
    if name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_") {
        return Err(config_error(format!(
            "invalid table name {name:?}: the sqlite_ prefix is reserved by SQLite"
        )));
    }
    Ok(())
}

/// Unix milliseconds, rounded down (so an entry is never taken for live after its expiry).
fn unix_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// The instant of a stored expiry (Unix milliseconds).
fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A version as the signed `INTEGER` column keeps it (the same 64 bits).
fn version_to_sql(version: u64) -> i64 {
    version as i64
}

fn version_from_sql(version: i64) -> u64 {
    version as u64
}

/// What a `sqlite:` URL names, as far as the pool setup cares.
#[derive(Debug, PartialEq)]
enum Target {
    Memory,
    /// A file; `mode` tells whether the URL sets `mode=` itself.
    File {
        mode: bool,
    },
}

/// `sqlite://path`, `sqlite:path`, `sqlite:///absolute/path`, `sqlite::memory:`,
/// `sqlite://:memory:`, with sqlx's parameters (`mode`, `cache`, `immutable`, `vfs`).
fn parse_url(url: &str) -> Result<Target> {
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
        config_error("the URL must start with sqlite: (sqlite://sessions.db, sqlite::memory:)")
    })?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, query) = match rest.split_once('?') {
        Some((database, query)) => (database, query),
        None => (rest, ""),
    };
    let mut memory = database == ":memory:";
    let mut mode = false;
    for param in query.split('&') {
        if let Some(value) = param.strip_prefix("mode=") {
            mode = true;
            memory |= value == "memory";
        }
    }
    if memory {
        Ok(Target::Memory)
    } else if database.is_empty() {
        Err(config_error(
            "the URL names no database file (sqlite://sessions.db)",
        ))
    } else {
        Ok(Target::File { mode })
    }
}

/// WAL (readers never wait behind the writer) and `synchronous=NORMAL` (a crash may lose
/// the last commits, never corrupt the file) for a database file.
fn file_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
}

/// The pool of a database this crate opens. Connections are not tested before each
/// statement (`test_before_acquire(false)`): an SQLite connection is a handle on a local
/// file, not a socket that can go stale while idle, and sqlx's test is a ping through the
/// connection's worker thread, one more hop per store call.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

/// One connection that is never closed: an in-memory database lives as long as it.
fn memory_pool_options() -> SqlitePoolOptions {
    pool_options()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
}

// ---------------------------------------------------------------------------------------
// Construction

impl SqlxSqliteStore {
    /// A store over a pool you built, with the defaults: table `sessions`, cleanup every 5
    /// minutes when created inside a Tokio runtime (outside one there is no cleanup task;
    /// expired rows are still never returned).
    pub fn new(pool: SqlitePool) -> Self {
        let inner = Arc::new(Inner::new(pool, DEFAULT_TABLE.to_owned()));
        let cleanup = if scs_tokio::runtime_available() {
            spawn_cleanup(&inner, DEFAULT_CLEANUP_INTERVAL)
                .ok()
                .map(Arc::new)
        } else {
            None
        };
        Self { inner, cleanup }
    }

    /// A builder over a pool you built, for the table name and cleanup interval.
    pub fn builder(pool: SqlitePool) -> SqlxSqliteStoreBuilder {
        SqlxSqliteStoreBuilder {
            pool,
            table_name: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Opens (creating it if missing) a database file with the defaults: WAL mode,
    /// `synchronous=NORMAL`, a 5 s busy timeout, sqlx's default pool except that
    /// connections are not pinged before each statement (a local file's connection does
    /// not go stale), table `sessions`, cleanup as in [`new`](Self::new).
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the file cannot be opened.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = file_options(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        );
        let pool = pool_options()
            .connect_with(options)
            .await
            .map_err(|e| sqlx_error("opening the database file", e))?;
        Ok(Self::new(pool))
    }

    /// A private in-memory database on one connection that is kept open, with the
    /// defaults of [`new`](Self::new). Its sessions are gone when the store is dropped.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when SQLite cannot open it.
    pub async fn open_in_memory() -> Result<Self> {
        let pool = memory_pool_options()
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .map_err(|e| sqlx_error("opening an in-memory database", e))?;
        Ok(Self::new(pool))
    }

    /// Opens the database a `sqlite:` URL names, as sqlx reads it, with the defaults of
    /// [`open`](Self::open): `sqlite://sessions.db` (relative; created if missing unless
    /// the URL sets `mode=`), `sqlite:///var/lib/app/sessions.db` (absolute),
    /// `sqlite::memory:` (one connection, kept open).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL; [`ErrorKind::Connection`] when the file
    /// cannot be opened.
    pub async fn from_url(url: &str) -> Result<Self> {
        let target = parse_url(url)?;
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| sqlx_error("reading the database URL", e))?;
        let pool = match target {
            Target::Memory => memory_pool_options().connect_with(options).await,
            Target::File { mode } => {
                let options = if mode {
                    options
                } else {
                    options.create_if_missing(true)
                };
                pool_options().connect_with(file_options(options)).await
            }
        }
        .map_err(|e| sqlx_error("opening the database", e))?;
        Ok(Self::new(pool))
    }

    /// Creates the table and its expiry index when they do not exist, and adds the
    /// `version` column to a table made by an earlier version of this crate. Idempotent.
    /// Nothing is created anywhere else: call this once at startup (or create the schema
    /// yourself, see the crate docs).
    ///
    /// # Errors
    /// [`ErrorKind::Backend`] when SQLite refuses the statements.
    pub async fn migrate(&self) -> Result<()> {
        const WHAT: &str = "creating the sessions table";
        let (sql, pool) = (&self.inner.sql, &self.inner.pool);
        for stmt in [&sql.create_table, &sql.create_index] {
            query(stmt)
                .execute(pool)
                .await
                .map_err(|e| sqlx_error(WHAT, e))?;
        }
        let has_version = || async {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&sql.has_version_column)))
                .bind(self.inner.table.as_str())
                .fetch_one(pool)
                .await
                .map_err(|e| sqlx_error(WHAT, e))?;
            Ok::<_, Error>(n > 0)
        };
        if !has_version().await?
            && let Err(e) = query(&sql.add_version_column).execute(pool).await
        {
            // Another process may have added it meanwhile.
            if !has_version().await? {
                return Err(sqlx_error(WHAT, e));
            }
        }
        Ok(())
    }

    /// Deletes every expired row now and returns how many went.
    ///
    /// # Errors
    /// When SQLite refuses the statement.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// The table the sessions live in.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The store's pool: for statements of your own, such as a count or a custom schema.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> scs_core::Result<()> {
    /// let store = scs_sqlxsqlitestore::SqlxSqliteStore::open_in_memory().await?;
    /// store.migrate().await?;
    /// use scs_sqlxsqlitestore::sqlx;
    ///
    /// let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
    ///     .fetch_one(store.pool())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(rows, 0);
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }
}

fn spawn_cleanup(inner: &Arc<Inner>, interval: Duration) -> Result<CleanupTask> {
    let inner = Arc::clone(inner);
    CleanupTask::spawn(BACKEND, interval, move || {
        let inner = inner.clone();
        async move { inner.delete_expired().await }
    })
}

impl std::fmt::Debug for SqlxSqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxSqliteStore")
            .field("table", &self.inner.table)
            .field("connections", &self.inner.pool.size())
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Builder

/// Options of a [`SqlxSqliteStore`], from [`SqlxSqliteStore::builder`].
#[must_use]
pub struct SqlxSqliteStoreBuilder {
    pool: SqlitePool,
    table_name: String,
    cleanup_interval: Option<Duration>,
}

impl SqlxSqliteStoreBuilder {
    /// The table the sessions live in (default `sessions`): `[A-Za-z_][A-Za-z0-9_]{0,62}`,
    /// not starting with `sqlite_`.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = name.into();
        self
    }

    /// How often expired rows are deleted; `None` for no cleanup task (default: 5
    /// minutes).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid table name, a zero cleanup interval, or a
    /// cleanup interval without a Tokio runtime.
    pub fn build(self) -> Result<SqlxSqliteStore> {
        validate_table_name(&self.table_name)?;
        let inner = Arc::new(Inner::new(self.pool, self.table_name));
        let cleanup = match self.cleanup_interval {
            Some(interval) => Some(Arc::new(spawn_cleanup(&inner, interval)?)),
            None => None,
        };
        Ok(SqlxSqliteStore { inner, cleanup })
    }
}

impl std::fmt::Debug for SqlxSqliteStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxSqliteStoreBuilder")
            .field("table_name", &self.table_name)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Store

#[async_trait]
impl Store for SqlxSqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_iterate()
            .with_touch()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = "finding a session";
        let row = query(&self.inner.sql.find)
            .bind(key)
            .bind(now_ms())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error(what, e))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| sqlx_error(what, e))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        query(&self.inner.sql.commit)
            .bind(key)
            .bind(data)
            .bind(unix_ms(expiry))
            .bind(version_to_sql(scs_core::new_version()))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error("committing a session", e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        query(&self.inner.sql.delete)
            .bind(key)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error("deleting a session", e))?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let done = query(&self.inner.sql.touch)
            .bind(unix_ms(expiry))
            .bind(key)
            .bind(now_ms())
            .execute(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error("extending a session's expiry", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let what = "finding a session";
        let row = query(&self.inner.sql.find_record)
            .bind(key)
            .bind(now_ms())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error(what, e))?;
        row.map(|row| {
            Ok(Record::new(
                row.try_get(0)?,
                from_ms(row.try_get(1)?),
                version_from_sql(row.try_get(2)?),
            ))
        })
        .transpose()
        .map_err(|e| sqlx_error(what, e))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        let (expiry, now) = (unix_ms(expiry), now_ms());
        let version = scs_core::new_version();
        let sql = &self.inner.sql;
        // One statement each, so SQLite's write lock makes it atomic.
        let statement = match expected.map(version_to_sql) {
            // Already expired: the entry goes, if it is the one expected.
            Some(old) if expiry <= now => {
                query(&sql.delete_if_current).bind(key).bind(old).bind(now)
            }
            Some(old) => query(&sql.commit_if_current)
                .bind(data)
                .bind(expiry)
                .bind(version_to_sql(version))
                .bind(key)
                .bind(old)
                .bind(now),
            None => query(&sql.commit_if_absent)
                .bind(key)
                .bind(data)
                .bind(expiry)
                .bind(version_to_sql(version))
                .bind(now),
        };
        let done = statement
            .execute(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error("committing a session", e))?;
        Ok((done.rows_affected() > 0).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for SqlxSqliteStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let what = "listing sessions";
        let rows = query(&self.inner.sql.all)
            .bind(now_ms())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| sqlx_error(what, e))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| sqlx_error(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    const HOUR: Duration = Duration::from_secs(3600);

    fn in_(d: Duration) -> OffsetDateTime {
        OffsetDateTime::now_utc() + d
    }

    async fn memory_pool() -> SqlitePool {
        memory_pool_options()
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn table_names_are_validated() {
        for good in ["sessions", "_x", "S1_2", &"a".repeat(63)] {
            assert!(validate_table_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x\"; DROP TABLE y; --",
            "é",
            &long,
            "sqlite_x",
            "SQLITE_",
        ] {
            let err = validate_table_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
        let err = SqlxSqliteStore::builder(memory_pool().await)
            .table_name("no-dashes")
            .cleanup_interval(None)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn urls_are_parsed() {
        assert_eq!(parse_url("sqlite::memory:").unwrap(), Target::Memory);
        assert_eq!(parse_url("sqlite://:memory:").unwrap(), Target::Memory);
        assert_eq!(parse_url("sqlite://?mode=memory").unwrap(), Target::Memory);
        assert_eq!(
            parse_url("sqlite://sessions.db").unwrap(),
            Target::File { mode: false }
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/app/s.db?mode=rwc").unwrap(),
            Target::File { mode: true }
        );
        assert_eq!(
            parse_url("sqlite:data/s.db").unwrap(),
            Target::File { mode: false }
        );
        for (bad, says) in [
            ("postgres://localhost/db", "sqlite:"),
            ("sessions.db", "sqlite:"),
            ("sqlite://", "no database file"),
            ("sqlite:", "no database file"),
        ] {
            let err = parse_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.message().contains(says), "{bad}: {}", err.message());
        }
    }

    #[tokio::test]
    async fn from_url_opens_files_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("from_url.db");
        let store = SqlxSqliteStore::from_url(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.exists(), "the file is created");
        assert!(store.cleanup.is_some(), "defaults include the cleanup task");
        store.migrate().await.unwrap();
        store.commit("k", b"v", in_(HOUR)).await.unwrap();
        assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");

        let mem = SqlxSqliteStore::from_url("sqlite::memory:").await.unwrap();
        mem.migrate().await.unwrap();
        mem.commit("k", b"m", in_(HOUR)).await.unwrap();
        assert_eq!(mem.find("k").await.unwrap().as_deref(), Some(&b"m"[..]));

        let err = SqlxSqliteStore::from_url("redis://x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = SqlxSqliteStore::from_url("sqlite://s.db?mode=bogus")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
        let err = SqlxSqliteStore::from_url("sqlite:///nonexistent-dir-scs/x/s.db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
        // A URL that sets its own mode is taken at its word: rw does not create.
        let missing = dir.path().join("missing.db");
        let err = SqlxSqliteStore::from_url(&format!("sqlite://{}?mode=rw", missing.display()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
        assert!(!missing.exists());
    }

    #[tokio::test]
    async fn builder_config_errors() {
        let pool = memory_pool().await;
        let err = SqlxSqliteStore::builder(pool.clone())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let store = SqlxSqliteStore::builder(pool)
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert!(store.cleanup.is_none());
    }

    #[test]
    fn no_runtime_means_no_cleanup_task_or_a_config_error() {
        // The pool is made inside a runtime (sqlx needs one), the store outside it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = rt.block_on(async {
            SqlitePoolOptions::new().connect_lazy_with(SqliteConnectOptions::new())
        });
        let err = SqlxSqliteStore::builder(pool.clone()).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let store = SqlxSqliteStore::new(pool);
        assert!(store.cleanup.is_none());
        rt.block_on(async move { drop(store) });
    }

    #[tokio::test]
    async fn debug_shows_no_data() {
        let store = SqlxSqliteStore::builder(memory_pool().await)
            .table_name("web_sessions")
            .cleanup_interval(None)
            .build()
            .unwrap();
        store.migrate().await.unwrap();
        store
            .commit("secret-key", b"secret-data", in_(HOUR))
            .await
            .unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("web_sessions"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[tokio::test]
    async fn tables_in_one_file_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let base = SqlxSqliteStore::open(dir.path().join("shared.db"))
            .await
            .unwrap();
        let open = |table: &str| {
            SqlxSqliteStore::builder(base.pool().clone())
                .table_name(table)
                .cleanup_interval(None)
                .build()
                .unwrap()
        };
        let (a, b) = (open("a_sessions"), open("b_sessions"));
        a.migrate().await.unwrap();
        b.migrate().await.unwrap();
        a.commit("k", b"a", in_(HOUR)).await.unwrap();
        assert_eq!(b.find("k").await.unwrap(), None);
        b.commit("k", b"b", in_(HOUR)).await.unwrap();
        b.delete("k").await.unwrap();
        assert_eq!(a.find("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(b.all().await.unwrap().len(), 0);
        assert_eq!(a.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn expired_rows_stay_until_cleanup_and_migrate_is_idempotent() {
        let store = SqlxSqliteStore::builder(memory_pool().await)
            .cleanup_interval(None)
            .build()
            .unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        store
            .commit("dead", b"x", in_(Duration::ZERO) - HOUR)
            .await
            .unwrap();
        store.commit("live", b"y", in_(HOUR)).await.unwrap();
        assert_eq!(store.find("dead").await.unwrap(), None);
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert_eq!(store.delete_expired().await.unwrap(), 0);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn migrate_upgrades_a_table_without_versions() {
        let store = SqlxSqliteStore::builder(memory_pool().await)
            .cleanup_interval(None)
            .build()
            .unwrap();
        // The table as the crate made it before versioned commits, with a live row.
        sqlx::query(
            "CREATE TABLE sessions (token TEXT PRIMARY KEY NOT NULL, \
             data BLOB NOT NULL, expiry INTEGER NOT NULL)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query("INSERT INTO sessions (token, data, expiry) VALUES ('old', x'01', ?)")
            .bind(unix_ms(in_(HOUR)))
            .execute(store.pool())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let record = store.find_record("old").await.unwrap().unwrap();
        assert_eq!((record.data.as_slice(), record.version), (&[1u8][..], 0));
        let v = store
            .commit_if("old", b"new", in_(HOUR), Some(0))
            .await
            .unwrap()
            .expect("the old row's version is 0");
        assert_ne!(v, 0);
        assert_eq!(
            store
                .commit_if("old", b"x", in_(HOUR), Some(0))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.find_record("old").await.unwrap().unwrap().version, v);
    }

    #[tokio::test]
    async fn commit_if_with_a_past_expiry_deletes_only_the_expected_entry() {
        let store = SqlxSqliteStore::open_in_memory().await.unwrap();
        store.migrate().await.unwrap();
        store.commit("k", b"v", in_(HOUR)).await.unwrap();
        let v = store.find_record("k").await.unwrap().unwrap().version;
        let past = in_(Duration::ZERO) - HOUR;
        assert_eq!(
            store.commit_if("k", b"x", past, Some(v + 1)).await.unwrap(),
            None
        );
        assert!(store.find("k").await.unwrap().is_some());
        assert!(
            store
                .commit_if("k", b"x", past, Some(v))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.find_record("k").await.unwrap(), None);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0, "the row is deleted, not left expired");
    }

    #[tokio::test]
    async fn a_missing_table_is_a_backend_error() {
        let store = SqlxSqliteStore::open_in_memory().await.unwrap();
        let err = store.find("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert_eq!(err.backend(), Some(BACKEND));
        assert_eq!(err.message(), "finding a session");
        assert!(std::error::Error::source(&err).is_some());
    }

    /// The pools this crate opens hand out connections without a ping first (one worker
    /// hop less per store call); a pool the caller built keeps its own setting.
    #[tokio::test]
    async fn opened_pools_do_not_ping_before_each_statement() {
        let dir = tempfile::tempdir().unwrap();
        let file = SqlxSqliteStore::open(dir.path().join("a.db"))
            .await
            .unwrap();
        let url = format!("sqlite://{}", dir.path().join("b.db").display());
        let from_url = SqlxSqliteStore::from_url(&url).await.unwrap();
        let memory = SqlxSqliteStore::open_in_memory().await.unwrap();
        for store in [&file, &from_url, &memory] {
            assert!(!store.pool().options().get_test_before_acquire());
        }
        let own = SqlitePoolOptions::new()
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .unwrap();
        let store = SqlxSqliteStore::new(own);
        assert!(store.pool().options().get_test_before_acquire());
    }

    /// On a current-thread runtime, a ticker keeps ticking while large commits and finds
    /// run: sqlx does the engine work on its connection threads.
    #[tokio::test(flavor = "current_thread")]
    async fn the_runtime_is_never_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePoolOptions::new()
            .connect_with(file_options(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("busy.db"))
                    .create_if_missing(true),
            ))
            .await
            .unwrap();
        let store = SqlxSqliteStore::builder(pool)
            .cleanup_interval(None)
            .build()
            .unwrap();
        store.migrate().await.unwrap();

        // Made before the ticker starts: building it is slow in a debug build.
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let max_gap_us = Arc::new(AtomicU64::new(0));
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let (stop, max_gap_us, ticks) = (stop.clone(), max_gap_us.clone(), ticks.clone());
            async move {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let now = Instant::now();
                    let gap = now.duration_since(last).as_micros() as u64;
                    max_gap_us.fetch_max(gap, Ordering::Relaxed);
                    ticks.fetch_add(1, Ordering::Relaxed);
                    last = now;
                }
            }
        });
        tokio::task::yield_now().await;

        let started = Instant::now();
        let mut rounds = 0u32;
        while started.elapsed() < Duration::from_secs(1) || rounds < 10 {
            let key = format!("k{}", rounds % 4);
            store.commit(&key, &data, in_(HOUR)).await.unwrap();
            let got = store.find(&key).await.unwrap().unwrap();
            assert_eq!(got.len(), data.len());
            rounds += 1;
        }
        let busy = started.elapsed();
        // Blocked, the ticker would stall for the whole busy second (about one tick);
        // 200 ms (ten times the usual worst gap) leaves room for a loaded machine.
        stop.store(true, Ordering::Relaxed);
        ticker.await.unwrap();

        let max_gap = Duration::from_micros(max_gap_us.load(Ordering::Relaxed));
        let ticks = ticks.load(Ordering::Relaxed);
        assert!(
            max_gap < Duration::from_millis(200),
            "the runtime stalled for {max_gap:?} during {rounds} rounds of 4 MiB commits \
             and finds ({busy:?}, {ticks} ticks): a store call blocked it"
        );
        // Tokio's cooperative budget may let a blocked loop yield now and then; a free
        // runtime ticks about every 5 ms, so ask for a quarter of that.
        let expected = busy.as_millis() as u64 / 5;
        assert!(
            ticks >= expected / 4,
            "only {ticks} ticks in {busy:?} (about {expected} expected): a store call blocked the runtime"
        );
    }
}
