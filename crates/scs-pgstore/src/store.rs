use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, SqlStr};

use crate::BACKEND;

/// Default table name.
const DEFAULT_TABLE: &str = "sessions";

/// How long [`from_url`](PostgresStore::from_url) waits for its first connection (sqlx's default
/// acquire timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Longest table name: the index is `<table>_expiry_idx`, and PostgreSQL cuts identifiers
/// at 63 bytes (two long names would then share one index name and the second table would
/// silently get no index).
const MAX_TABLE_NAME_LEN: usize = 63 - "_expiry_idx".len();

/// A PostgreSQL session store on a sqlx [`PgPool`]. Its SQL is accepted by CockroachDB too.
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
/// use scs_pgstore::PostgresStore;
/// use scs_pgstore::sqlx::PgPool;
/// use std::time::Duration;
///
/// let pool = PgPool::connect("postgres://app@localhost/app").await?;
/// let store = PostgresStore::builder(pool)
///     .table_name("web_sessions")
///     .cleanup_interval(Some(Duration::from_secs(60)))
///     .build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    pool: PgPool,
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
        let t = format!("\"{table}\"");
        Self {
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 token TEXT PRIMARY KEY, \
                 data BYTEA NOT NULL, \
                 expiry TIMESTAMPTZ NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            )),
            // A table made by an earlier release has no `version` column. The catalog is
            // asked first: `ADD COLUMN IF NOT EXISTS` alone would take an exclusive lock on
            // the table at every start, queueing behind (and then blocking) live sessions.
            has_version: sql("SELECT EXISTS (SELECT 1 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 AND column_name = 'version')"
                .to_owned()),
            add_version: sql(format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0"
            )),
            create_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_expiry_idx\" ON {t} (expiry)"
            )),
            find: sql(format!(
                "SELECT data FROM {t} WHERE token = $1 AND expiry > $2"
            )),
            find_record: sql(format!(
                "SELECT data, expiry, version FROM {t} WHERE token = $1 AND expiry > $2"
            )),
            commit: sql(format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token) DO UPDATE SET \
                 data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version"
            )),
            // Compare-and-set over a live row: the row lock and the re-check of the WHERE
            // clause on the newest row version let exactly one of several racing writers
            // with the same expected version through.
            commit_if_version: sql(format!(
                "UPDATE {t} SET data = $2, expiry = $3, version = $4 \
                 WHERE token = $1 AND version = $5 AND expiry > $6"
            )),
            // Create when absent, or overwrite an expired row; a live row stays as it is
            // (the DO UPDATE's WHERE fails and no row counts as changed).
            commit_if_absent: sql(format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token) DO UPDATE SET \
                 data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version \
                 WHERE {t}.expiry <= $5"
            )),
            delete: sql(format!("DELETE FROM {t} WHERE token = $1")),
            touch: sql(format!(
                "UPDATE {t} SET expiry = $2 WHERE token = $1 AND expiry > $3"
            )),
            all: sql(format!("SELECT token, data FROM {t} WHERE expiry > $1")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expiry <= $1")),
        }
    }
}

/// Runs an idempotent read on a pooled connection and, when that connection turns out to
/// be broken ([`is_connection_failure`]), once more on a live one
/// ([`Inner::live_connection`]). `$op` is the statement on `$conn` (a
/// [`PoolConnection`]), evaluated again for the second try; the whole is a
/// `Result<_, sqlx::Error>`.
///
/// [`from_url`](PostgresStore::from_url)'s pool hands out idle connections untested
/// (`test_before_acquire(false)`: no ping before each statement), so a connection that the
/// server or the network closed while it sat idle is only found when a statement fails on
/// it. A read can safely run again. A write is never retried (it returns the error, as it
/// would have with a tested connection that broke during the statement): whether the
/// server applied it before the connection broke is unknown. A timeout is not retried
/// either: the server may be slow rather than gone, and a second try would double the
/// wait. (A macro rather than a function taking an async closure: the future of such a
/// function cannot yet be proven `Send` for the `async_trait` methods.)
macro_rules! read_with_retry {
    ($inner:expr, |$conn:ident| $op:expr) => {
        async {
            let inner: &Inner = &$inner;
            let mut $conn = inner.pool.acquire().await?;
            match $op.await {
                Err(e) if is_connection_failure(&e) => {
                    // Broken: close it now rather than have the pool ping it on return.
                    drop($conn.detach());
                    inner.sweep_idle();
                    let mut $conn = inner.live_connection().await?;
                    $op.await
                }
                done => done,
            }
        }
    };
}

impl Inner {
    fn new(pool: PgPool, table: String) -> Self {
        let sql = Queries::new(&table);
        Self { pool, table, sql }
    }

    /// A pooled connection that has just answered a ping, for the retry of a read. The
    /// failure that called for it suggests that other idle connections died with the one
    /// that failed (a restarted server, a dropped network path): each one that does not
    /// answer is closed and the next taken, until the pool opens a new one. Bounded by the
    /// pool's size (plus one); a pool that tests connections itself
    /// (`test_before_acquire(true)`) is trusted as it is.
    async fn live_connection(&self) -> std::result::Result<PoolConnection<Postgres>, sqlx::Error> {
        let options = self.pool.options();
        if options.get_test_before_acquire() {
            return self.pool.acquire().await;
        }
        let mut tries = options.get_max_connections().saturating_add(1);
        loop {
            let mut conn = self.pool.acquire().await?;
            match conn.ping().await {
                Ok(()) => return Ok(conn),
                Err(e) => {
                    drop(conn.detach());
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
                let Some(mut conn) = pool.try_acquire() else {
                    break;
                };
                if conn.ping().await.is_err() {
                    drop(conn.detach());
                }
            }
        });
    }

    /// Maps the error of a statement that is not retried, after sweeping the pool
    /// ([`sweep_idle`](Self::sweep_idle)) when the connection failed.
    fn failed(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        move |e| {
            if is_connection_failure(&e) {
                self.sweep_idle();
            }
            error(what)(e)
        }
    }

    async fn delete_expired(&self) -> Result<u64> {
        let done = sqlx::query(self.sql.delete_expired.clone())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(self.failed("removing expired sessions"))?;
        Ok(done.rows_affected())
    }
}

/// "Now" is taken from the application's clock and bound, so that the app and the database
/// never disagree about whether an expiry the app just computed has passed.
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
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

impl PostgresStore {
    /// A store on `pool` with the defaults: table `sessions`, cleanup every 5 minutes when
    /// built inside a Tokio runtime. Outside a runtime there is no cleanup task (expired
    /// rows are still never returned); use [`builder`](Self::builder) to make that an
    /// error.
    pub fn new(pool: PgPool) -> Self {
        let inner = Arc::new(Inner::new(pool, DEFAULT_TABLE.to_owned()));
        let cleanup = scs_tokio::runtime_available()
            .then(|| spawn_cleanup(inner.clone(), DEFAULT_CLEANUP_INTERVAL).ok())
            .flatten()
            .map(Arc::new);
        Self { inner, cleanup }
    }

    /// A builder for the table name and cleanup interval.
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            pool,
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Opens one connection to `url` (`postgres://user:password@host:port/database?options`)
    /// to check it, then builds a pool and the store as [`new`](Self::new) does. Does not
    /// create the table: call [`migrate`](Self::migrate).
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
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::new(ErrorKind::Config, "the PostgreSQL URL is malformed")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        // One plain connection first, so that a wrong URL or a server that is down fails at
        // once with the real cause (sqlx's pool retries a refused connection until its 30 s
        // acquire timeout, then reports only that it timed out).
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Timeout, "connecting to PostgreSQL")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?
            .map_err(connect_error)?;
        // The check passed; how that connection says goodbye does not matter.
        let _ = conn.close().await;
        Ok(Self::new(
            PgPoolOptions::new()
                .test_before_acquire(false)
                .connect_lazy_with(options),
        ))
    }

    /// Creates the table and its expiry index when they do not exist yet, and adds the
    /// `version` column to a table made by an earlier release of this crate (rows already
    /// there get version 0). Run it once at startup (or apply the DDL from the README with
    /// your own migrations); running it again changes nothing.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`] when the database rejects the DDL (e.g. no permission).
    pub async fn migrate(&self) -> Result<()> {
        let inner = &self.inner;
        sqlx::query(inner.sql.create_table.clone())
            .execute(&inner.pool)
            .await
            .map_err(error("creating the sessions table"))?;
        let has_version: bool = sqlx::query_scalar(inner.sql.has_version.clone())
            .bind(&inner.table)
            .fetch_one(&inner.pool)
            .await
            .map_err(error("checking the sessions table for a version column"))?;
        if !has_version {
            sqlx::query(inner.sql.add_version.clone())
                .execute(&inner.pool)
                .await
                .map_err(error("adding a version column to the sessions table"))?;
        }
        sqlx::query(inner.sql.create_index.clone())
            .execute(&inner.pool)
            .await
            .map_err(error("creating the sessions expiry index"))?;
        Ok(())
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

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the pool or its options: they hold the password.
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table)
            .field("cleanup", &self.cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Options of a [`PostgresStore`].
#[must_use]
pub struct PostgresStoreBuilder {
    pool: PgPool,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl PostgresStoreBuilder {
    /// The table name (default `sessions`): 1 to 52 ASCII letters, digits or underscores,
    /// not starting with a digit. It is quoted in SQL, so it is case-sensitive.
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
    pub fn build(self) -> Result<PostgresStore> {
        check_table_name(&self.table)?;
        let inner = Arc::new(Inner::new(self.pool, self.table));
        let cleanup = match self.cleanup_interval {
            Some(interval) => Some(Arc::new(spawn_cleanup(inner.clone(), interval)?)),
            None => None,
        };
        Ok(PostgresStore { inner, cleanup })
    }
}

impl std::fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
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
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // TIMESTAMPTZ keeps microseconds, so the default 1 ms resolution holds.
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
                .fetch_optional(&mut *conn)
        })
        .await
        .map_err(error("finding a session"))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        // One upsert; a past expiry leaves a row that no read returns and cleanup deletes.
        sqlx::query(self.inner.sql.commit.clone())
            .bind(key)
            .bind(data)
            .bind(expiry)
            .bind(to_db(scs_core::new_version()))
            .execute(&self.inner.pool)
            .await
            .map_err(self.inner.failed("committing a session"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        sqlx::query(self.inner.sql.delete.clone())
            .bind(key)
            .execute(&self.inner.pool)
            .await
            .map_err(self.inner.failed("deleting a session"))?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let done = sqlx::query(self.inner.sql.touch.clone())
            .bind(key)
            .bind(expiry)
            .bind(now())
            .execute(&self.inner.pool)
            .await
            .map_err(self.inner.failed("touching a session"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let sql = &self.inner.sql.find_record;
        let row = read_with_retry!(self.inner, |conn| {
            sqlx::query_as::<_, (Vec<u8>, OffsetDateTime, i64)>(sql.clone())
                .bind(key)
                .bind(now())
                .fetch_optional(&mut *conn)
        })
        .await
        .map_err(error("finding a session"))?;
        Ok(row.map(|(data, expiry, version)| Record::new(data, expiry, from_db(version))))
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
        let query = match expected {
            Some(expected) => sqlx::query(self.inner.sql.commit_if_version.clone())
                .bind(key)
                .bind(data)
                .bind(expiry)
                .bind(to_db(version))
                .bind(to_db(expected))
                .bind(now()),
            None => sqlx::query(self.inner.sql.commit_if_absent.clone())
                .bind(key)
                .bind(data)
                .bind(expiry)
                .bind(to_db(version))
                .bind(now()),
        };
        let done = query
            .execute(&self.inner.pool)
            .await
            .map_err(self.inner.failed("committing a session"))?;
        Ok((done.rows_affected() > 0).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for PostgresStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let sql = &self.inner.sql.all;
        read_with_retry!(self.inner, |conn| {
            sqlx::query_as::<_, (String, Vec<u8>)>(sql.clone())
                .bind(now())
                .fetch_all(&mut *conn)
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

/// sqlx's parser accepts any scheme; a `mysql://` URL here is a mistake worth naming.
fn check_scheme(url: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Config,
            "the PostgreSQL URL must start with postgres:// or postgresql://",
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
    Error::new(kind, "connecting to PostgreSQL")
        .with_backend(BACKEND)
        .with_source(e)
}

/// Whether `e` says the connection failed rather than the statement: an I/O error (other
/// than a timeout), a protocol error, or the server telling the client it is closing the
/// session (SQLSTATE class 08, 57P01 `admin_shutdown` as from `pg_terminate_backend`, 57P02
/// `crash_shutdown`, 57P05 `idle_session_timeout`; it sends these as errors, which is why
/// they are the only database errors here). Such a connection is closed, and a read is
/// run once more on another one.
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::TimedOut,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P05")
        }),
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
        sqlx::Error::Database(db) => db
            .code()
            .map_or(ErrorKind::Backend, |code| sqlstate_kind(&code)),
        _ => ErrorKind::Backend,
    }
}

/// SQLSTATE 57014 is a cancelled statement (`statement_timeout`); classes 08 (connection
/// exception), 28 (invalid authorization) and 57P (server shutting down) mean the
/// connection, not the query, failed.
fn sqlstate_kind(code: &str) -> ErrorKind {
    match code {
        "57014" => ErrorKind::Timeout,
        c if c.starts_with("08") || c.starts_with("28") || c.starts_with("57P") => {
            ErrorKind::Connection
        }
        _ => ErrorKind::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy_pool(url: &str) -> PgPool {
        PgPoolOptions::new()
            .connect_lazy(url)
            .expect("a well-formed URL")
    }

    #[test]
    fn table_names_are_checked() {
        for good in ["sessions", "_s", "S1_x", &"a".repeat(MAX_TABLE_NAME_LEN)] {
            assert!(check_table_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(MAX_TABLE_NAME_LEN + 1);
        for bad in ["", "1s", "s-x", "s x", "s;drop", "\"s\"", "sé", &too_long] {
            let err = check_table_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn from_url_rejects_malformed_urls_without_connecting() {
        for (url, why) in [
            ("mysql://root@localhost/test", "postgres://"),
            ("localhost:5432", "postgres://"),
            ("postgres://u@host:notaport/db", "malformed"),
        ] {
            let err = PostgresStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.message().contains(why), "{url}: {}", err.message());
        }
    }

    #[tokio::test]
    async fn from_url_without_a_server_is_a_connection_error() {
        // Port 1 on loopback: nothing listens there.
        let err = PostgresStore::from_url("postgres://u@127.0.0.1:1/db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn builder_rejects_bad_config() {
        let pool = lazy_pool("postgres://u@127.0.0.1:1/db");
        let err = PostgresStore::builder(pool.clone())
            .table_name("no-dashes")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = PostgresStore::builder(pool)
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn debug_does_not_leak_the_password() {
        let pool = lazy_pool("postgres://app:hunter2secret@127.0.0.1:1/db");
        let store = PostgresStore::builder(pool.clone())
            .table_name("web_sessions")
            .build()
            .unwrap();
        let builder = PostgresStore::builder(pool);
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
        let store = PostgresStore::new(lazy_pool("postgres://u@127.0.0.1:1/db"));
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
    fn versions_round_trip_through_bigint() {
        for v in [1, i64::MAX as u64, u64::MAX, scs_core::new_version()] {
            assert_eq!(from_db(to_db(v)), v);
        }
        assert!(to_db(scs_core::new_version()) > 0);
    }

    #[test]
    fn connection_failures_are_told_from_statement_failures() {
        use std::io::{Error as IoError, ErrorKind as Io};
        let io = |kind| sqlx::Error::Io(IoError::from(kind));
        for broken in [
            io(Io::UnexpectedEof),
            io(Io::ConnectionReset),
            io(Io::BrokenPipe),
            sqlx::Error::Protocol("unexpected message".into()),
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
    fn sqlstates_map_to_kinds() {
        assert_eq!(sqlstate_kind("57014"), ErrorKind::Timeout);
        assert_eq!(sqlstate_kind("08006"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("28P01"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("57P01"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("42P01"), ErrorKind::Backend);
    }
}
