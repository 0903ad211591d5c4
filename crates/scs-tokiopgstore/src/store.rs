use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use crate::BACKEND;

/// Default table name.
const DEFAULT_TABLE: &str = "sessions";

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Longest table name: the index is `<table>_expiry_idx`, and PostgreSQL cuts identifiers
/// at 63 bytes (two long names would then share one index name and the second table would
/// silently get no index).
const MAX_TABLE_NAME_LEN: usize = 63 - "_expiry_idx".len();

/// Pool size of [`TokioPostgresStore::from_url`] (sqlx's default, as the other SQL stores).
const DEFAULT_POOL_SIZE: usize = 10;

/// How long [`TokioPostgresStore::from_url`]'s pool waits for a free connection or a new
/// one (sqlx's default acquire timeout, as the other SQL stores).
const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL session store on tokio-postgres, through a deadpool-postgres [`Pool`].
///
/// One row per session (`token`, `data`, `expiry`, `version`); expiry is checked in every
/// query, and a background task deletes expired rows (every 5 minutes by default). Every
/// commit gives the row a new random `version`, so [`Store::commit_if`] can write only over
/// the version a request loaded (one conditional statement, no lost updates). Create the
/// table once with [`migrate`](Self::migrate). Cloning is cheap and clones share the pool;
/// dropping the last clone stops the task. Statements are prepared once per connection
/// (`prepare_cached`).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use scs_tokiopgstore::TokioPostgresStore;
/// use scs_tokiopgstore::deadpool_postgres::{Manager, Pool};
/// use scs_tokiopgstore::tokio_postgres::NoTls;
/// use std::time::Duration;
///
/// let config = "postgres://app@localhost/app".parse()?;
/// let pool = Pool::builder(Manager::new(config, NoTls)).max_size(16).build()?;
/// let store = TokioPostgresStore::builder(pool)
///     .table_name("web_sessions")
///     .cleanup_interval(Some(Duration::from_secs(60)))
///     .build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokioPostgresStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    pool: Pool,
    table: String,
    sql: Queries,
}

/// Every statement of one table, built once. The table name is validated by
/// [`check_table_name`] and quoted; every value is a bound parameter.
struct Queries {
    create_table: String,
    has_version: String,
    add_version: String,
    create_index: String,
    find: String,
    find_record: String,
    commit: String,
    commit_if_version: String,
    commit_if_absent: String,
    delete: String,
    touch: String,
    all: String,
    delete_expired: String,
}

impl Queries {
    fn new(table: &str) -> Self {
        // Safe to splice: `table` matched `[A-Za-z_][A-Za-z0-9_]*` (check_table_name).
        let t = format!("\"{table}\"");
        Self {
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 token TEXT PRIMARY KEY, \
                 data BYTEA NOT NULL, \
                 expiry TIMESTAMPTZ NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            ),
            // A table made by an earlier release has no `version` column. The catalog is
            // asked first: `ADD COLUMN IF NOT EXISTS` alone would take an exclusive lock on
            // the table at every start, queueing behind (and then blocking) live sessions.
            has_version: "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 AND column_name = 'version')"
                .to_owned(),
            add_version: format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0"
            ),
            create_index: format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_expiry_idx\" ON {t} (expiry)"
            ),
            find: format!("SELECT data FROM {t} WHERE token = $1 AND expiry > $2"),
            find_record: format!(
                "SELECT data, expiry, version FROM {t} WHERE token = $1 AND expiry > $2"
            ),
            commit: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token) DO UPDATE SET \
                 data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version"
            ),
            // Compare-and-set over a live row: the row lock and the re-check of the WHERE
            // clause on the newest row version let exactly one of several racing writers
            // with the same expected version through.
            commit_if_version: format!(
                "UPDATE {t} SET data = $2, expiry = $3, version = $4 \
                 WHERE token = $1 AND version = $5 AND expiry > $6"
            ),
            // Create when absent, or overwrite an expired row; a live row stays as it is
            // (the DO UPDATE's WHERE fails and no row counts as changed).
            commit_if_absent: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token) DO UPDATE SET \
                 data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version \
                 WHERE {t}.expiry <= $5"
            ),
            delete: format!("DELETE FROM {t} WHERE token = $1"),
            touch: format!("UPDATE {t} SET expiry = $2 WHERE token = $1 AND expiry > $3"),
            all: format!("SELECT token, data FROM {t} WHERE expiry > $1"),
            delete_expired: format!("DELETE FROM {t} WHERE expiry <= $1"),
        }
    }
}

/// Statement parameters as tokio-postgres takes them.
type Params<'a> = [&'a (dyn ToSql + Sync)];

impl Inner {
    fn new(pool: Pool, table: String) -> Self {
        let sql = Queries::new(&table);
        Self { pool, table, sql }
    }

    /// A pooled connection and its cached prepared statement for `sql`.
    async fn prepare(&self, sql: &str, what: &'static str) -> Result<(Object, Statement)> {
        let client = self.pool.get().await.map_err(pool_error(what))?;
        let statement = client.prepare_cached(sql).await.map_err(error(what))?;
        Ok((client, statement))
    }

    /// Runs `sql` and returns how many rows it changed.
    async fn execute(&self, sql: &str, params: &Params<'_>, what: &'static str) -> Result<u64> {
        let (client, statement) = self.prepare(sql, what).await?;
        client
            .execute(&statement, params)
            .await
            .map_err(error(what))
    }

    /// Runs `sql`, an idempotent read, and returns its rows; when the connection turns out
    /// to be broken ([`is_connection_failure`]), once more on another pooled connection.
    ///
    /// The pool checks a connection on checkout without a query (`RecyclingMethod::Fast`,
    /// see [`TokioPostgresStore::from_url`]): one the server closed is dropped there
    /// (tokio-postgres's connection task has read the close and marked the client closed),
    /// but one that breaks just before or during the statement is only found when the
    /// statement fails. A read can safely run again; a write is never retried (whether the
    /// server applied it before the connection broke is unknown), and neither is a timeout.
    async fn query(&self, sql: &str, params: &Params<'_>, what: &'static str) -> Result<Vec<Row>> {
        let client = self.pool.get().await.map_err(pool_error(what))?;
        match run_query(&client, sql, params).await {
            Err(e) if is_connection_failure(&e) => {
                // Never back into the pool.
                drop(Object::take(client));
                let client = self.pool.get().await.map_err(pool_error(what))?;
                run_query(&client, sql, params).await.map_err(error(what))
            }
            done => done.map_err(error(what)),
        }
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.execute(
            &self.sql.delete_expired,
            &[&now()],
            "removing expired sessions",
        )
        .await
    }

    /// Runs DDL (no parameters) over the simple query protocol: nothing to prepare.
    async fn batch(&self, sql: &str, what: &'static str) -> Result<()> {
        let client = self.pool.get().await.map_err(pool_error(what))?;
        client.batch_execute(sql).await.map_err(error(what))
    }
}

/// Prepares `sql` on `client` (once per connection) and runs it.
async fn run_query(
    client: &Object,
    sql: &str,
    params: &Params<'_>,
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
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

impl TokioPostgresStore {
    /// A store on `pool` with the defaults: table `sessions`, cleanup every 5 minutes when
    /// built inside a Tokio runtime. Outside a runtime there is no cleanup task (expired
    /// rows are still never returned); use [`builder`](Self::builder) to make that an
    /// error.
    pub fn new(pool: Pool) -> Self {
        let inner = Arc::new(Inner::new(pool, DEFAULT_TABLE.to_owned()));
        let cleanup = scs_tokio::runtime_available()
            .then(|| spawn_cleanup(inner.clone(), DEFAULT_CLEANUP_INTERVAL).ok())
            .flatten()
            .map(Arc::new);
        Self { inner, cleanup }
    }

    /// A builder for the table name and cleanup interval.
    pub fn builder(pool: Pool) -> TokioPostgresStoreBuilder {
        TokioPostgresStoreBuilder {
            pool,
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Builds a pool for `url` (`postgres://user:password@host:port/database?options`;
    /// without TLS, at most 10 connections, 30 s to get or open one), opens one connection
    /// to check it, and builds the store as [`new`](Self::new) does. Does not create the
    /// table: call [`migrate`](Self::migrate).
    ///
    /// The pool recycles connections with [`RecyclingMethod::Fast`]: a checkout sends no
    /// query (`Verified` would send one before each statement), so a `find` or a `commit` is
    /// one round trip, and nothing else goes over the wire. A connection the server closed
    /// is dropped at checkout all the same (its client reads as closed); one that breaks
    /// during a read is replaced and the read run once more, while a write returns the
    /// [`ErrorKind::Connection`] error (see the README). A pool you build yourself and pass
    /// to [`new`](Self::new) or [`builder`](Self::builder) keeps your options.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] when the server
    /// cannot be reached or refuses the login, [`ErrorKind::Timeout`] when connecting
    /// takes over 30 s.
    pub async fn from_url(url: &str) -> Result<Self> {
        check_scheme(url)?;
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::new(ErrorKind::Config, "the PostgreSQL URL is malformed")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        // `Fast` (deadpool-postgres's default, spelled out because the one-round-trip
        // promise rests on it) only asks `Client::is_closed()` on checkout: no query. That
        // is safe for two reasons.
        // - A dead connection: tokio-postgres drives each connection on a task of its own,
        //   which reads the server's FATAL message or EOF as soon as it arrives, ends, and
        //   leaves the client closed, so `is_closed()` catches a connection the server
        //   closed while it sat idle. What it cannot catch (a connection that breaks just
        //   before or during a statement) fails that statement; reads then run once more
        //   (`Inner::query`).
        // - A cancelled call (a store timeout dropping the future mid-flight) does not
        //   desynchronise the connection: the client hands each request, encoded whole, to
        //   the connection task in one synchronous channel send (so it is queued whole or
        //   not at all), the task alone writes the socket, and it routes replies to requests
        //   in order, reading through (and discarding) the replies of a request whose caller
        //   went away (`Connection::poll_read`). A prepared statement is cached by the pool
        //   only once prepared. So a client whose call was dropped can go back to the pool
        //   and serve the next call, and `Verified`'s query would add nothing.
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(DEFAULT_POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(DEFAULT_POOL_TIMEOUT))
            .create_timeout(Some(DEFAULT_POOL_TIMEOUT))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "building the connection pool")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
        // Connect once, so that a wrong URL fails here (as the sqlx stores do) rather than
        // at the first request.
        drop(
            pool.get()
                .await
                .map_err(pool_error("connecting to PostgreSQL"))?,
        );
        Ok(Self::new(pool))
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
        inner
            .batch(&inner.sql.create_table, "creating the sessions table")
            .await?;
        const CHECK: &str = "checking the sessions table for a version column";
        let rows = inner
            .query(&inner.sql.has_version, &[&inner.table], CHECK)
            .await?;
        let has_version = rows
            .first()
            .map(|row| row.try_get::<_, bool>(0))
            .transpose()
            .map_err(error(CHECK))?
            .unwrap_or(false);
        if !has_version {
            inner
                .batch(
                    &inner.sql.add_version,
                    "adding a version column to the sessions table",
                )
                .await?;
        }
        inner
            .batch(
                &inner.sql.create_index,
                "creating the sessions expiry index",
            )
            .await
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

impl std::fmt::Debug for TokioPostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the pool or its config: they hold the password.
        f.debug_struct("TokioPostgresStore")
            .field("table", &self.inner.table)
            .field("cleanup", &self.cleanup.is_some())
            .finish_non_exhaustive()
    }
}

/// Options of a [`TokioPostgresStore`].
#[must_use]
pub struct TokioPostgresStoreBuilder {
    pool: Pool,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl TokioPostgresStoreBuilder {
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
    pub fn build(self) -> Result<TokioPostgresStore> {
        check_table_name(&self.table)?;
        let inner = Arc::new(Inner::new(self.pool, self.table));
        let cleanup = match self.cleanup_interval {
            Some(interval) => Some(Arc::new(spawn_cleanup(inner.clone(), interval)?)),
            None => None,
        };
        Ok(TokioPostgresStore { inner, cleanup })
    }
}

impl std::fmt::Debug for TokioPostgresStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioPostgresStoreBuilder")
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
impl Store for TokioPostgresStore {
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
        const WHAT: &str = "finding a session";
        let rows = self
            .inner
            .query(&self.inner.sql.find, &[&key, &now()], WHAT)
            .await?;
        rows.first()
            .map(|row| row.try_get::<_, Vec<u8>>(0))
            .transpose()
            .map_err(error(WHAT))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        // One upsert; a past expiry leaves a row that no read returns and cleanup deletes.
        self.inner
            .execute(
                &self.inner.sql.commit,
                &[&key, &data, &expiry, &to_db(scs_core::new_version())],
                "committing a session",
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner
            .execute(&self.inner.sql.delete, &[&key], "deleting a session")
            .await?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let changed = self
            .inner
            .execute(
                &self.inner.sql.touch,
                &[&key, &expiry, &now()],
                "touching a session",
            )
            .await?;
        Ok(changed > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let rows = self
            .inner
            .query(&self.inner.sql.find_record, &[&key, &now()], WHAT)
            .await?;
        rows.first()
            .map(|row| {
                Ok(Record::new(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    from_db(row.try_get(2)?),
                ))
            })
            .transpose()
            .map_err(error(WHAT))
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
        const WHAT: &str = "committing a session";
        let version = scs_core::new_version();
        let changed = match expected {
            Some(expected) => {
                let params: &Params<'_> = &[
                    &key,
                    &data,
                    &expiry,
                    &to_db(version),
                    &to_db(expected),
                    &now(),
                ];
                self.inner
                    .execute(&self.inner.sql.commit_if_version, params, WHAT)
                    .await?
            }
            None => {
                let params: &Params<'_> = &[&key, &data, &expiry, &to_db(version), &now()];
                self.inner
                    .execute(&self.inner.sql.commit_if_absent, params, WHAT)
                    .await?
            }
        };
        Ok((changed > 0).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for TokioPostgresStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing sessions";
        let rows = self
            .inner
            .query(&self.inner.sql.all, &[&now()], WHAT)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(error(WHAT))
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

/// tokio-postgres also parses `key=value` strings; `from_url` takes URLs only, and a
/// `mysql://` URL here is a mistake worth naming.
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
fn error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| {
        Error::new(error_kind(&e), what)
            .with_backend(BACKEND)
            .with_source(e)
    }
}

/// Maps a failure to get a pooled connection. Any driver error here comes from opening a
/// connection, so it is a connection error whatever the server said (a refused login comes
/// back as a database error).
fn pool_error(what: &'static str) -> impl FnOnce(PoolError) -> Error {
    move |e| {
        let kind = match &e {
            PoolError::Timeout(_) => ErrorKind::Timeout,
            PoolError::NoRuntimeSpecified => ErrorKind::Config,
            PoolError::Backend(_) | PoolError::Closed | PoolError::PostCreateHook(_) => {
                ErrorKind::Connection
            }
        };
        Error::new(kind, what).with_backend(BACKEND).with_source(e)
    }
}

/// Whether `e` says the connection failed rather than the statement: the connection is
/// closed, an I/O error (other than a timeout), or the server telling the client it is
/// closing the session (SQLSTATE class 08, 57P01 `admin_shutdown` as from
/// `pg_terminate_backend`, 57P02 `crash_shutdown`, 57P05 `idle_session_timeout`).
fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P05");
    }
    e.is_closed()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() != std::io::ErrorKind::TimedOut)
}

fn error_kind(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(code) = e.code() {
        return sqlstate_kind(code.code());
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        ErrorKind::Connection
    } else {
        ErrorKind::Backend
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

    /// A pool that has not connected (deadpool connects on the first `get`).
    fn lazy_pool(url: &str) -> Pool {
        let config = url.parse().expect("a well-formed URL");
        Pool::builder(Manager::new(config, NoTls))
            .build()
            .expect("a pool")
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
            ("host=localhost user=postgres", "postgres://"),
            ("postgres://u@host:notaport/db", "malformed"),
        ] {
            let err = TokioPostgresStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.message().contains(why), "{url}: {}", err.message());
        }
    }

    #[tokio::test]
    async fn from_url_without_a_server_is_a_connection_error() {
        // Port 1 on loopback: nothing listens there.
        let err = TokioPostgresStore::from_url("postgres://u@127.0.0.1:1/db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn builder_rejects_bad_config() {
        let pool = lazy_pool("postgres://u@127.0.0.1:1/db");
        let err = TokioPostgresStore::builder(pool.clone())
            .table_name("no-dashes")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = TokioPostgresStore::builder(pool)
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn debug_does_not_leak_the_password() {
        let pool = lazy_pool("postgres://app:hunter2secret@127.0.0.1:1/db");
        let store = TokioPostgresStore::builder(pool.clone())
            .table_name("web_sessions")
            .build()
            .unwrap();
        let builder = TokioPostgresStore::builder(pool);
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
        let store = TokioPostgresStore::new(lazy_pool("postgres://u@127.0.0.1:1/db"));
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
    fn sqlstates_map_to_kinds() {
        assert_eq!(sqlstate_kind("57014"), ErrorKind::Timeout);
        assert_eq!(sqlstate_kind("08006"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("28P01"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("57P01"), ErrorKind::Connection);
        assert_eq!(sqlstate_kind("42P01"), ErrorKind::Backend);
    }
}
