use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use scs_core::time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, SqlStr};

use crate::BACKEND;

/// Default table name.
const DEFAULT_TABLE: &str = "sessions";

/// How long [`from_url`](MySqlStore::from_url) waits for its first connection (sqlx's default
/// acquire timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Longest table name: the index is `<table>_expiry_idx`, and identifiers stop at 64
/// characters in MySQL (63 bytes in PostgreSQL: the PostgreSQL stores use the same limit).
const MAX_TABLE_NAME_LEN: usize = 63 - "_expiry_idx".len();

/// MySQL's `ER_DUP_KEYNAME`: the index exists already.
const ER_DUP_KEYNAME: u16 = 1061;

/// MySQL's `ER_DUP_FIELDNAME`: the column exists already.
const ER_DUP_FIELDNAME: u16 = 1060;

/// A MySQL / MariaDB session store on a sqlx [`MySqlPool`].
///
/// One row per session (`token`, `data`, `expiry`, `version`); expiry is checked in every
/// query, and a background task deletes expired rows (every 5 minutes by default). Every
/// commit gives the row a new random `version`, so [`Store::commit_if`] can write only over
/// the version a request loaded (one conditional statement, no lost updates). Create the
/// table once with [`migrate`](Self::migrate). Cloning is cheap and clones share the pool;
/// dropping the last clone stops the task.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use scs_mysqlstore::MySqlStore;
/// use scs_mysqlstore::sqlx::MySqlPool;
/// use std::time::Duration;
///
/// let pool = MySqlPool::connect("mysql://app@localhost/app").await?;
/// let store = MySqlStore::builder(pool)
///     .table_name("web_sessions")
///     .cleanup_interval(Some(Duration::from_secs(60)))
///     .build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    pool: MySqlPool,
    table: String,
    sql: Queries,
}

/// Every statement of one table, built once. The table name is validated by
/// [`check_table_name`] and quoted; every value is a bound parameter.
struct Queries {
    create_table: SqlStr,
    has_version: SqlStr,
    add_version: SqlStr,
    create_index: SqlStr,
    find: SqlStr,
    find_record: SqlStr,
    commit: SqlStr,
    commit_if_version: SqlStr,
    commit_if_absent: SqlStr,
    delete: SqlStr,
    touch: SqlStr,
    all: SqlStr,
    delete_expired: SqlStr,
}

impl Queries {
    fn new(table: &str) -> Self {
        // Safe to splice: `table` matched `[A-Za-z_][A-Za-z0-9_]*` (check_table_name).
        let sql = |s: String| AssertSqlSafe(s).into_sql_str();
        let t = format!("`{table}`");
        Self {
            // Keys are case-sensitive base64url: an ASCII column with a binary collation
            // compares them byte for byte (a `_ci` collation would merge `aB` and `Ab`).
            // DATETIME holds the UTC wall clock as written: no session `time_zone`
            // conversion (TIMESTAMP has one) and no 2038 limit.
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 token VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
                 data LONGBLOB NOT NULL, \
                 expiry DATETIME(6) NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            )),
            // A table made by an earlier release has no `version` column. MySQL 8 has no
            // `ADD COLUMN IF NOT EXISTS` (MariaDB has), so the catalog is asked first, which
            // also spares every start an `ALTER TABLE` and its metadata lock.
            has_version: sql("SELECT COUNT(*) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'version'"
                .to_owned()),
            add_version: sql(format!(
                "ALTER TABLE {t} ADD COLUMN version BIGINT NOT NULL DEFAULT 0"
            )),
            create_index: sql(format!("CREATE INDEX `{table}_expiry_idx` ON {t} (expiry)")),
            find: sql(format!(
                "SELECT data FROM {t} WHERE token = ? AND expiry > ?"
            )),
            find_record: sql(format!(
                "SELECT data, expiry, version FROM {t} WHERE token = ? AND expiry > ?"
            )),
            commit: sql(format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE \
                 data = VALUES(data), expiry = VALUES(expiry), version = VALUES(version)"
            )),
            // Compare-and-set over a live row. The WHERE clause is checked on the newest
            // row under its lock, so of several racing writers with the same expected
            // version exactly one matches; the one that matches always changes `version`,
            // so "affected" is exact even though sqlx counts matched rows.
            commit_if_version: sql(format!(
                "UPDATE {t} SET data = ?, expiry = ?, version = ? \
                 WHERE token = ? AND version = ? AND expiry > ?"
            )),
            // Create when absent, or overwrite an expired row; a live row keeps every
            // column (`expiry` is assigned last: MySQL's assignments see the ones before).
            // sqlx connects with CLIENT_FOUND_ROWS, so a live row left as it is counts as
            // one affected row, like an insert: the live branch also calls
            // `LAST_INSERT_ID(1)`, which the server reports back as the statement's insert
            // id (0 otherwise: the table has no AUTO_INCREMENT column). One statement, no
            // transaction.
            commit_if_absent: sql(format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE \
                 data = IF(expiry > ?, data, VALUES(data)), \
                 version = IF(expiry > ?, IF(LAST_INSERT_ID(1), version, version), \
                 VALUES(version)), \
                 expiry = IF(expiry > ?, expiry, VALUES(expiry))"
            )),
            delete: sql(format!("DELETE FROM {t} WHERE token = ?")),
            touch: sql(format!(
                "UPDATE {t} SET expiry = ? WHERE token = ? AND expiry > ?"
            )),
            all: sql(format!("SELECT token, data FROM {t} WHERE expiry > ?")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expiry <= ?")),
        }
    }
}

/// A pooled connection lent to one operation ([`on_connection!`], [`read_with_retry!`]).
///
/// sqlx's MySQL driver is not cancel-safe: a call dropped mid-flight (a store timeout
/// dropping the future) can leave a packet header read without its payload, a prepared
/// statement's reply unread while the driver's count of pending results says otherwise, or
/// half a command in the write buffer. sqlx's ping when the connection returns to the pool
/// would then read the stream out of step: it may fail (the connection is closed), hang
/// waiting for a payload that never comes (the connection and its pool slot stay taken
/// until the server's `wait_timeout`), or pass over a stream still out of step. So a lease
/// dropped before [`finish`](Self::finish) closes its connection, without flushing a
/// half-written command, instead of returning it to the pool.
struct Lease(Option<PoolConnection<MySql>>);

impl Lease {
    async fn acquire(pool: &MySqlPool) -> std::result::Result<Self, sqlx::Error> {
        Ok(Self(Some(pool.acquire().await?)))
    }

    /// The connection; `None` never happens before [`finish`](Self::finish), which
    /// consumes the lease.
    fn conn(&mut self) -> Option<&mut MySqlConnection> {
        self.0.as_deref_mut()
    }

    /// The operation ended with `result`: the connection goes back to the pool (where
    /// sqlx pings it, off the request path), or is closed when the connection failed.
    /// Returns whether it failed.
    fn finish<T>(mut self, result: &std::result::Result<T, sqlx::Error>) -> bool {
        let broken = matches!(result, Err(e) if is_connection_failure(e));
        let conn = self.0.take();
        if broken && let Some(conn) = conn {
            drop(conn.detach());
        }
        // Otherwise `conn` is dropped here: back to the pool.
        broken
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not finished: the operation was dropped mid-flight (or the connection failed a
        // ping). Detached and dropped, the socket closes at once and nothing buffered is
        // sent.
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Runs `$op` (a statement on `$conn`, a `&mut MySqlConnection`) on a [`Lease`]d
/// connection, once. A connection failure closes the connection and sweeps the pool
/// ([`Inner::sweep_idle`]); the whole is a `Result<_, sqlx::Error>`. For writes and DDL:
/// whether the server applied a statement before its connection broke is unknown, so it
/// is never run again. (A macro rather than a function taking an async closure: the
/// future of such a function cannot yet be proven `Send` for the `async_trait` methods.)
macro_rules! on_connection {
    ($inner:expr, |$conn:ident| $op:expr) => {
        async {
            let inner: &Inner = &$inner;
            let mut lease = Lease::acquire(&inner.pool).await?;
            let result = match lease.conn() {
                Some($conn) => $op.await,
                None => Err(sqlx::Error::PoolClosed),
            };
            if lease.finish(&result) {
                inner.sweep_idle();
            }
            result
        }
    };
}

/// Runs the idempotent read `$op` as [`on_connection!`] does and, when the connection
/// turns out to be broken ([`is_connection_failure`]), once more on a live one
/// ([`Inner::live_lease`]).
///
/// [`from_url`](MySqlStore::from_url)'s pool hands out idle connections untested
/// (`test_before_acquire(false)`: no ping before each statement), so a connection that the
/// server or the network closed while it sat idle (`wait_timeout`, `KILL`, a restart) is
/// only found when a statement fails on it. A read can safely run again. A timeout is not
/// retried: the server may be slow rather than gone, and a second try would double the
/// wait.
macro_rules! read_with_retry {
    ($inner:expr, |$conn:ident| $op:expr) => {
        async {
            let inner: &Inner = &$inner;
            let mut lease = Lease::acquire(&inner.pool).await?;
            let result = match lease.conn() {
                Some($conn) => $op.await,
                None => Err(sqlx::Error::PoolClosed),
            };
            if !lease.finish(&result) {
                return result;
            }
            inner.sweep_idle();
            let mut lease = inner.live_lease().await?;
            let result = match lease.conn() {
                Some($conn) => $op.await,
                None => Err(sqlx::Error::PoolClosed),
            };
            lease.finish(&result);
            result
        }
    };
}

impl Inner {
    fn new(pool: MySqlPool, table: String) -> Self {
        let sql = Queries::new(&table);
        Self { pool, table, sql }
    }

    /// A pooled connection that has just answered a ping, for the retry of a read. The
    /// failure that called for it suggests that other idle connections died with the one
    /// that failed: each one that does not answer is closed and the next taken, until the
    /// pool opens a new one. Bounded by the pool's size (plus one); a pool that tests
    /// connections itself (`test_before_acquire(true)`) is trusted as it is.
    async fn live_lease(&self) -> std::result::Result<Lease, sqlx::Error> {
        let options = self.pool.options();
        if options.get_test_before_acquire() {
            return Lease::acquire(&self.pool).await;
        }
        let mut tries = options.get_max_connections().saturating_add(1);
        loop {
            let mut lease = Lease::acquire(&self.pool).await?;
            let pinged = match lease.conn() {
                Some(conn) => conn.ping().await,
                None => Err(sqlx::Error::PoolClosed),
            };
            match pinged {
                Ok(()) => return Ok(lease),
                // Dropped unfinished: closed.
                Err(e) => {
                    drop(lease);
                    tries -= 1;
                    if tries == 0 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// After a connection failed, checks the pool's other idle connections on a task of
    /// its own: each is pinged, and closed when it does not answer. Connections rarely die
    /// alone (a restarted server, a dropped network path), and writes are not retried:
    /// without this, each write that follows could meet another dead connection. Off the
    /// request path, and only after a failure; a pool that tests connections itself
    /// (`test_before_acquire(true)`) is left alone, as is one outside a Tokio runtime.
    fn sweep_idle(&self) {
        if self.pool.options().get_test_before_acquire() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        runtime.spawn(async move {
            for _ in 0..pool.num_idle() {
                let Some(conn) = pool.try_acquire() else {
                    break;
                };
                let mut lease = Lease(Some(conn));
                let pinged = match lease.conn() {
                    Some(conn) => conn.ping().await,
                    None => Ok(()),
                };
                // A connection that answered goes back; one that did not is closed.
                if pinged.is_ok() {
                    lease.finish(&pinged);
                }
            }
        });
    }

    async fn delete_expired(&self) -> Result<u64> {
        let done = on_connection!(self, |conn| {
            sqlx::query(self.sql.delete_expired.clone())
                .bind(now())
                .execute(conn)
        })
        .await
        .map_err(error("removing expired sessions"))?;
        Ok(done.rows_affected())
    }
}

/// An instant as the UTC wall-clock time the `expiry` column holds. Converted here rather
/// than left to the connection, so a pool whose session `time_zone` is not UTC cannot shift
/// expiries.
fn utc(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

/// "Now" is taken from the application's clock and bound, so that the app and the database
/// never disagree about whether an expiry the app just computed has passed.
fn now() -> PrimitiveDateTime {
    utc(OffsetDateTime::now_utc())
}

/// A version as the signed `BIGINT` column holds it (bit for bit: [`scs_core::new_version`]
/// fits 63 bits anyway, and any value read back compares equal when written again).
fn to_db(version: u64) -> i64 {
    version.cast_signed()
}

/// A version read from the `BIGINT` column.
fn from_db(version: i64) -> u64 {
    version.cast_unsigned()
}

/// Whether `commit_if_absent` wrote: 1 affected row is an insert, or a live row left as it
/// was (then the insert id is the `LAST_INSERT_ID(1)` marker); 2 is an expired row
/// overwritten. (Without CLIENT_FOUND_ROWS the live row would count 0.)
fn absent_commit_won(rows_affected: u64, last_insert_id: u64) -> bool {
    match rows_affected {
        1 => last_insert_id == 0,
        2 => true,
        _ => false,
    }
}

impl MySqlStore {
    /// A store on `pool` with the defaults: table `sessions`, cleanup every 5 minutes when
    /// built inside a Tokio runtime. Outside a runtime there is no cleanup task (expired
    /// rows are still never returned); use [`builder`](Self::builder) to make that an
    /// error.
    pub fn new(pool: MySqlPool) -> Self {
        let inner = Arc::new(Inner::new(pool, DEFAULT_TABLE.to_owned()));
        let cleanup = scs_tokio::runtime_available()
            .then(|| spawn_cleanup(inner.clone(), DEFAULT_CLEANUP_INTERVAL).ok())
            .flatten()
            .map(Arc::new);
        Self { inner, cleanup }
    }

    /// A builder for the table name and cleanup interval.
    pub fn builder(pool: MySqlPool) -> MySqlStoreBuilder {
        MySqlStoreBuilder {
            pool,
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Opens one connection to `url` (`mysql://user:password@host:port/database?options`,
    /// or `mariadb://`) to check it, then builds a pool and the store as [`new`](Self::new)
    /// does. Does not create the table: call [`migrate`](Self::migrate).
    ///
    /// The pool has sqlx's defaults (at most 10 connections, 30 s to get one) except
    /// `test_before_acquire(false)`: sqlx would otherwise ping every idle connection before
    /// handing it out, one extra round trip before each statement. Without it a `find` or a
    /// `commit` is one round trip on the request path. A pooled connection that broke while
    /// idle is then found when a statement fails on it: `find`, `find_record` and `all` run
    /// once more on a live connection, and writes return the [`ErrorKind::Connection`]
    /// error (see the README). sqlx still pings each connection when it returns to the
    /// pool, on a task of its own after the caller has its answer, so the wire shows two
    /// exchanges per call, one of them on the request path. A pool you build yourself and
    /// pass to [`new`](Self::new) or [`builder`](Self::builder) keeps your options.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] when the server
    /// cannot be reached or refuses the login, [`ErrorKind::Timeout`] when connecting
    /// takes over 30 s.
    pub async fn from_url(url: &str) -> Result<Self> {
        check_scheme(url)?;
        let options = MySqlConnectOptions::from_str(url).map_err(|e| {
            Error::new(ErrorKind::Config, "the MySQL URL is malformed")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        // One plain connection first, so that a wrong URL or a server that is down fails at
        // once with the real cause (sqlx's pool retries a refused connection until its 30 s
        // acquire timeout, then reports only that it timed out).
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Timeout, "connecting to MySQL")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?
            .map_err(connect_error)?;
        // The check passed; how that connection says goodbye does not matter.
        let _ = conn.close().await;
        Ok(Self::new(
            MySqlPoolOptions::new()
                .test_before_acquire(false)
                .connect_lazy_with(options),
        ))
    }

    /// Creates the table and its expiry index when they do not exist yet, and adds the
    /// `version` column to a table made by an earlier release of this crate (rows already
    /// there get version 0). Run it once at startup (or apply the DDL from the README with
    /// your own migrations); running it again changes nothing.
    ///
    /// MySQL 8 has no `CREATE INDEX IF NOT EXISTS` (MariaDB has), so the index is created
    /// unconditionally and "duplicate key name" counts as done: one statement, no race
    /// between two migrating processes, on both servers. Likewise a "duplicate column
    /// name" from adding `version` (another process added it since the catalog was read).
    ///
    /// # Errors
    /// [`ErrorKind::Backend`] when the database rejects the DDL (e.g. no permission).
    pub async fn migrate(&self) -> Result<()> {
        let inner = &self.inner;
        on_connection!(inner, |conn| {
            sqlx::query(inner.sql.create_table.clone()).execute(conn)
        })
        .await
        .map_err(error("creating the sessions table"))?;
        let has_version: i64 = read_with_retry!(inner, |conn| {
            sqlx::query_scalar(inner.sql.has_version.clone())
                .bind(&inner.table)
                .fetch_one(conn)
        })
        .await
        .map_err(error("checking the sessions table for a version column"))?;
        if has_version == 0 {
            match on_connection!(inner, |conn| {
                sqlx::query(inner.sql.add_version.clone()).execute(conn)
            })
            .await
            {
                Err(e) if error_number(&e) == Some(ER_DUP_FIELDNAME) => {}
                done => {
                    done.map_err(error("adding a version column to the sessions table"))?;
                }
            }
        }
        match on_connection!(inner, |conn| {
            sqlx::query(inner.sql.create_index.clone()).execute(conn)
        })
        .await
        {
            Err(e) if error_number(&e) == Some(ER_DUP_KEYNAME) => Ok(()),
            done => done
                .map(drop)
                .map_err(error("creating the sessions expiry index")),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Deletes every expired row now and returns how many went.
    ///
    /// # Errors
    /// The mapped driver error when the delete fails.
    pub async fn remove_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
}

impl std::fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the pool or its options: they hold the password.
        f.debug_struct("MySqlStore")
            .field("table", &self.inner.table)
            .field("cleanup", &self.cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Options of a [`MySqlStore`].
#[must_use]
pub struct MySqlStoreBuilder {
    pool: MySqlPool,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl MySqlStoreBuilder {
    /// The table name (default `sessions`): 1 to 52 ASCII letters, digits or underscores,
    /// not starting with a digit. It is quoted in SQL.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
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
    /// [`ErrorKind::Config`] for an invalid table name, a zero interval, or a cleanup
    /// interval with no Tokio runtime running.
    pub fn build(self) -> Result<MySqlStore> {
        check_table_name(&self.table)?;
        let inner = Arc::new(Inner::new(self.pool, self.table));
        let cleanup = match self.cleanup_interval {
            Some(interval) => Some(Arc::new(spawn_cleanup(inner.clone(), interval)?)),
            None => None,
        };
        Ok(MySqlStore { inner, cleanup })
    }
}

impl std::fmt::Debug for MySqlStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlStoreBuilder")
            .field("table", &self.table)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

fn spawn_cleanup(inner: Arc<Inner>, interval: Duration) -> Result<CleanupTask> {
    CleanupTask::spawn(BACKEND, interval, move || {
        let inner = inner.clone();
        async move { inner.delete_expired().await }
    })
}

#[async_trait]
impl Store for MySqlStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // DATETIME(6) keeps microseconds, so the default 1 ms resolution holds.
        Capabilities::new()
            .with_iterate()
            .with_touch()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let sql = &self.inner.sql.find;
        read_with_retry!(self.inner, |conn| {
            sqlx::query_scalar::<_, Vec<u8>>(sql.clone())
                .bind(key)
                .bind(now())
                .fetch_optional(conn)
        })
        .await
        .map_err(error("finding a session"))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        // One upsert; a past expiry leaves a row that no read returns and cleanup deletes.
        on_connection!(self.inner, |conn| {
            sqlx::query(self.inner.sql.commit.clone())
                .bind(key)
                .bind(data)
                .bind(utc(expiry))
                .bind(to_db(scs_core::new_version()))
                .execute(conn)
        })
        .await
        .map_err(error("committing a session"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        on_connection!(self.inner, |conn| {
            sqlx::query(self.inner.sql.delete.clone())
                .bind(key)
                .execute(conn)
        })
        .await
        .map_err(error("deleting a session"))?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        // sqlx connects with CLIENT_FOUND_ROWS, so "affected" counts matched rows: a touch
        // to the expiry a row already has still reports the row as live.
        let done = on_connection!(self.inner, |conn| {
            sqlx::query(self.inner.sql.touch.clone())
                .bind(utc(expiry))
                .bind(key)
                .bind(now())
                .execute(conn)
        })
        .await
        .map_err(error("touching a session"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let sql = &self.inner.sql.find_record;
        let row = read_with_retry!(self.inner, |conn| {
            sqlx::query_as::<_, (Vec<u8>, PrimitiveDateTime, i64)>(sql.clone())
                .bind(key)
                .bind(now())
                .fetch_optional(conn)
        })
        .await
        .map_err(error("finding a session"))?;
        Ok(row.map(|(data, expiry, version)| {
            Record::new(data, expiry.assume_utc(), from_db(version))
        }))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        // One statement either way. A past expiry leaves a row that no read returns, as
        // `commit` does: the entry is gone.
        let version = scs_core::new_version();
        let now = now();
        let won = match expected {
            Some(expected) => {
                let done = on_connection!(self.inner, |conn| {
                    sqlx::query(self.inner.sql.commit_if_version.clone())
                        .bind(data)
                        .bind(utc(expiry))
                        .bind(to_db(version))
                        .bind(key)
                        .bind(to_db(expected))
                        .bind(now)
                        .execute(conn)
                })
                .await
                .map_err(error("committing a session"))?;
                done.rows_affected() > 0
            }
            None => {
                let done = on_connection!(self.inner, |conn| {
                    sqlx::query(self.inner.sql.commit_if_absent.clone())
                        .bind(key)
                        .bind(data)
                        .bind(utc(expiry))
                        .bind(to_db(version))
                        .bind(now)
                        .bind(now)
                        .bind(now)
                        .execute(conn)
                })
                .await
                .map_err(error("committing a session"))?;
                absent_commit_won(done.rows_affected(), done.last_insert_id())
            }
        };
        Ok(won.then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for MySqlStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let sql = &self.inner.sql.all;
        read_with_retry!(self.inner, |conn| {
            sqlx::query_as::<_, (String, Vec<u8>)>(sql.clone())
                .bind(now())
                .fetch_all(conn)
        })
        .await
        .map_err(error("listing sessions"))
    }
}

// ---------------------------------------------------------------------------------------
// Validation and errors

/// Table names are spliced into SQL, so only plain identifiers pass.
fn check_table_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_TABLE_NAME_LEN;
    if valid {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "invalid table name {name:?}: use 1 to {MAX_TABLE_NAME_LEN} ASCII letters, digits \
             or underscores, not starting with a digit"
        ),
    )
    .with_backend(BACKEND))
}

/// sqlx's parser accepts any scheme; a `postgres://` URL here is a mistake worth naming.
fn check_scheme(url: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("mysql" | "mariadb") => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Config,
            "the MySQL URL must start with mysql:// or mariadb://",
        )
        .with_backend(BACKEND)),
    }
}

/// Maps a driver error to the core error saying `what` failed, with the source kept.
fn error(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        Error::new(error_kind(&e), what)
            .with_backend(BACKEND)
            .with_source(e)
    }
}

/// A failed first connection is a connection error whatever the server said (a refused
/// login comes back as a database error), except for a malformed option or a timeout.
fn connect_error(e: sqlx::Error) -> Error {
    let kind = match error_kind(&e) {
        kind @ (ErrorKind::Config | ErrorKind::Timeout) => kind,
        _ => ErrorKind::Connection,
    };
    Error::new(kind, "connecting to MySQL")
        .with_backend(BACKEND)
        .with_source(e)
}

/// Whether `e` says the connection failed rather than the statement: an I/O error (other
/// than a timeout), a protocol error, or the server telling the client it closes the
/// session (1053 shutdown, 1927 connection killed, 4031 idle disconnect; it sends these as
/// errors, which is why they are the only database errors here). Such a connection is
/// closed, and a read is run once more on another one.
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::TimedOut,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(_) => matches!(error_number(e), Some(1053 | 1927 | 4031)),
        _ => false,
    }
}

fn error_kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => ErrorKind::Config,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Connection,
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::Database(_) => error_number(e).map_or(ErrorKind::Backend, number_kind),
        _ => ErrorKind::Backend,
    }
}

/// The server's error number, for a database error.
fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Statement and lock timeouts (1205 lock wait, 1969 MariaDB `max_statement_time`, 3024
/// MySQL `max_execution_time`) and errors of the connection rather than the query (1040
/// too many connections, 1044/1045 access denied, 1053 shutdown, 1927 connection killed,
/// 4031 idle disconnect).
fn number_kind(number: u16) -> ErrorKind {
    match number {
        1205 | 1969 | 3024 => ErrorKind::Timeout,
        1040 | 1044 | 1045 | 1053 | 1927 | 4031 => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy_pool(url: &str) -> MySqlPool {
        MySqlPoolOptions::new()
            .connect_lazy(url)
            .expect("a well-formed URL")
    }

    #[test]
    fn table_names_are_checked() {
        for good in ["sessions", "_s", "S1_x", &"a".repeat(MAX_TABLE_NAME_LEN)] {
            assert!(check_table_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(MAX_TABLE_NAME_LEN + 1);
        for bad in ["", "1s", "s-x", "s x", "s;drop", "`s`", "sé", &too_long] {
            let err = check_table_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn from_url_rejects_malformed_urls_without_connecting() {
        for (url, why) in [
            ("postgres://postgres@localhost/test", "mysql://"),
            ("localhost:3306", "mysql://"),
            ("mysql://u@host:notaport/db", "malformed"),
        ] {
            let err = MySqlStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.message().contains(why), "{url}: {}", err.message());
        }
    }

    #[tokio::test]
    async fn from_url_without_a_server_is_a_connection_error() {
        // Port 1 on loopback: nothing listens there.
        let err = MySqlStore::from_url("mysql://u@127.0.0.1:1/db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn builder_rejects_bad_config() {
        let pool = lazy_pool("mysql://u@127.0.0.1:1/db");
        let err = MySqlStore::builder(pool.clone())
            .table_name("no-dashes")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = MySqlStore::builder(pool)
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn debug_does_not_leak_the_password() {
        let pool = lazy_pool("mysql://app:hunter2secret@127.0.0.1:1/db");
        let store = MySqlStore::builder(pool.clone())
            .table_name("web_sessions")
            .build()
            .unwrap();
        let builder = MySqlStore::builder(pool);
        for shown in [
            format!("{store:?}"),
            format!("{store:#?}"),
            format!("{builder:?}"),
        ] {
            assert!(!shown.contains("hunter2secret"), "{shown}");
        }
        assert!(format!("{store:?}").contains("web_sessions"));
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_cleanup() {
        let store = MySqlStore::new(lazy_pool("mysql://u@127.0.0.1:1/db"));
        let task = Arc::downgrade(store.cleanup.as_ref().unwrap());
        let clone = store.clone();
        drop(store);
        assert!(task.upgrade().is_some_and(|t| !t.is_stopped()));
        drop(clone);
        assert!(
            task.upgrade().is_none(),
            "the task handle went with the store"
        );
    }

    #[test]
    fn expiries_are_written_as_utc_wall_clock() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
            + Duration::from_micros(123_456);
        let east = t.to_offset(UtcOffset::from_hms(9, 0, 0).unwrap());
        assert_eq!(utc(east), utc(t));
        assert_eq!(utc(east).assume_utc(), t);
    }

    #[test]
    fn versions_round_trip_through_bigint() {
        for v in [1, i64::MAX as u64, u64::MAX, scs_core::new_version()] {
            assert_eq!(from_db(to_db(v)), v);
        }
        assert!(to_db(scs_core::new_version()) > 0);
    }

    #[test]
    fn absent_commit_outcomes_are_read_from_affected_rows_and_the_marker() {
        assert!(absent_commit_won(1, 0), "inserted");
        assert!(absent_commit_won(2, 0), "an expired row overwritten");
        assert!(
            !absent_commit_won(1, 1),
            "a live row kept (CLIENT_FOUND_ROWS)"
        );
        assert!(
            !absent_commit_won(0, 1),
            "a live row kept (no CLIENT_FOUND_ROWS)"
        );
    }

    #[test]
    fn connection_failures_are_told_from_statement_failures() {
        use std::io::{Error as IoError, ErrorKind as Io};
        let io = |kind| sqlx::Error::Io(IoError::from(kind));
        for broken in [
            io(Io::UnexpectedEof),
            io(Io::ConnectionReset),
            io(Io::BrokenPipe),
            sqlx::Error::Protocol("packets out of order".into()),
        ] {
            assert!(is_connection_failure(&broken), "{broken:?}");
        }
        for not in [
            io(Io::TimedOut),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::RowNotFound,
        ] {
            assert!(!is_connection_failure(&not), "{not:?}");
        }
    }

    #[test]
    fn error_numbers_map_to_kinds() {
        assert_eq!(number_kind(1969), ErrorKind::Timeout);
        assert_eq!(number_kind(3024), ErrorKind::Timeout);
        assert_eq!(number_kind(1045), ErrorKind::Connection);
        assert_eq!(number_kind(1146), ErrorKind::Backend);
    }
}
