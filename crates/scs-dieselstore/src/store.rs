use std::sync::Arc;
use std::time::Duration;

use diesel::backend::Backend;
use diesel::mysql::Mysql;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Text, Untyped};
use diesel::{OptionalExtension, QueryResult, QueryableByName};
use diesel_async::pooled_connection::deadpool::{Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The table used unless the builder names another.
const DEFAULT_TABLE: &str = "sessions";

/// The connection pool a [`DieselStore`] runs on: diesel-async's deadpool pool of
/// PostgreSQL or MySQL/MariaDB connections. Built with `From` from either pool.
#[derive(Clone)]
#[non_exhaustive]
pub enum DieselPool {
    /// PostgreSQL, over tokio-postgres.
    Postgres(Pool<AsyncPgConnection>),
    /// MySQL or MariaDB, over mysql_async.
    Mysql(Pool<AsyncMysqlConnection>),
}

impl From<Pool<AsyncPgConnection>> for DieselPool {
    fn from(pool: Pool<AsyncPgConnection>) -> Self {
        Self::Postgres(pool)
    }
}

impl From<Pool<AsyncMysqlConnection>> for DieselPool {
    fn from(pool: Pool<AsyncMysqlConnection>) -> Self {
        Self::Mysql(pool)
    }
}

impl std::fmt::Debug for DieselPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's manager holds the URL and its password: show only the kind and size.
        let (kind, status) = match self {
            Self::Postgres(pool) => ("Postgres", pool.status()),
            Self::Mysql(pool) => ("Mysql", pool.status()),
        };
        f.debug_struct(kind)
            .field("max_size", &status.max_size)
            .field("size", &status.size)
            .finish()
    }
}

/// A session store on diesel-async: PostgreSQL or MySQL/MariaDB, pooled with deadpool.
///
/// Rows are `(token, data, expiry, version)` with the expiry in Unix milliseconds (a
/// `BIGINT`) and a version that every commit changes, for compare-and-set commits.
/// Every read filters on the expiry; [`migrate`](Self::migrate) creates the table and its
/// expiry index; a background task deletes expired rows (every five minutes by default).
/// Cloning is cheap; dropping the last clone stops the task.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_dieselstore::DieselStore;
///
/// let store = DieselStore::from_url("postgres://postgres@127.0.0.1/app")?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DieselStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    pool: DieselPool,
    table: String,
}

/// The DDL of [`DieselStore::migrate`]. The table name is validated before it is quoted in.
fn create_statements(pool: &DieselPool, table: &str) -> Vec<String> {
    match pool {
        DieselPool::Postgres(_) => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" (\
                 token VARCHAR(255) NOT NULL PRIMARY KEY, \
                 data BYTEA NOT NULL, \
                 expiry BIGINT NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{table}_expiry_idx\" ON \"{table}\" (expiry)"),
        ],
        // BLOB stops at 64 KiB, hence LONGBLOB; the binary collation keeps keys that differ
        // only in case apart. CREATE INDEX has no IF NOT EXISTS in MySQL, so the index goes
        // inline.
        DieselPool::Mysql(_) => vec![format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (\
             token VARCHAR(255) NOT NULL PRIMARY KEY, \
             data LONGBLOB NOT NULL, \
             expiry BIGINT NOT NULL, \
             version BIGINT NOT NULL DEFAULT 0, \
             KEY `{table}_expiry_idx` (expiry)) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )],
    }
}

/// Counts the table's `version` column (0 or 1): a table made by an earlier version of
/// this crate has none. The table name is bound.
fn has_version_column(pool: &DieselPool) -> &'static str {
    match pool {
        DieselPool::Postgres(_) => {
            "SELECT COUNT(*) AS n FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'version'"
        }
        DieselPool::Mysql(_) => {
            "SELECT COUNT(*) AS n FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'version'"
        }
    }
}

/// Adds the `version` column to a table made by an earlier version of this crate.
fn add_version_column(pool: &DieselPool, table: &str) -> String {
    let quoted = match pool {
        DieselPool::Postgres(_) => format!("\"{table}\""),
        DieselPool::Mysql(_) => format!("`{table}`"),
    };
    format!("ALTER TABLE {quoted} ADD COLUMN version BIGINT NOT NULL DEFAULT 0")
}

/// One store operation on the sessions table, as a diesel query: diesel quotes the table
/// name and renders the bind parameters (`$1` or `?`) for the backend. Unlike
/// `diesel::sql_query`, it is safe to cache, so each connection prepares it once and every
/// later call is one round trip.
struct SessionQuery<'a> {
    table: &'a str,
    op: Op<'a>,
}

enum Op<'a> {
    Find {
        key: &'a str,
        now: i64,
    },
    FindRecord {
        key: &'a str,
        now: i64,
    },
    Upsert {
        key: &'a str,
        data: &'a [u8],
        expiry: i64,
        version: i64,
    },
    /// Only the live entry with the expected version.
    CommitIfCurrent {
        key: &'a str,
        data: &'a [u8],
        expiry: i64,
        version: i64,
        expected: i64,
        now: i64,
    },
    /// PostgreSQL: inserts, or takes over a row expired by `now`. MySQL: a plain insert
    /// (its upsert has no WHERE), followed by [`Op::CommitIfExpired`] on a duplicate key.
    CommitIfAbsent {
        key: &'a str,
        data: &'a [u8],
        expiry: i64,
        version: i64,
        now: i64,
    },
    /// Only a row expired by `now`.
    CommitIfExpired {
        key: &'a str,
        data: &'a [u8],
        expiry: i64,
        version: i64,
        now: i64,
    },
    /// An already expired commit: the entry goes, if it is the one expected.
    DeleteIfCurrent {
        key: &'a str,
        expected: i64,
        now: i64,
    },
    Delete {
        key: &'a str,
    },
    Touch {
        key: &'a str,
        expiry: i64,
        now: i64,
    },
    All {
        now: i64,
    },
    DeleteExpired {
        now: i64,
    },
}

/// What differs between the backends in the statements above: the upsert's tail.
trait Dialect: Backend {
    /// Turns `INSERT .. VALUES (..)` into an upsert on `token`.
    const UPSERT: &'static str;
    /// Whether the upsert's update can have a WHERE (PostgreSQL's can, MySQL's cannot).
    const UPSERT_WHERE: bool;
}

impl Dialect for Pg {
    const UPSERT: &'static str = " ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, \
         expiry = EXCLUDED.expiry, version = EXCLUDED.version";
    const UPSERT_WHERE: bool = true;
}

impl Dialect for Mysql {
    const UPSERT: &'static str = " ON DUPLICATE KEY UPDATE data = VALUES(data), \
         expiry = VALUES(expiry), version = VALUES(version)";
    const UPSERT_WHERE: bool = false;
}

/// `INSERT INTO t (token, data, expiry, version) VALUES (..)`.
fn push_insert<'b, DB>(
    out: &mut AstPass<'_, 'b, DB>,
    table: &'b str,
    row: (&'b &'b str, &'b &'b [u8], &'b i64, &'b i64),
) -> QueryResult<()>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Binary> + HasSqlType<BigInt>,
    str: ToSql<Text, DB>,
    [u8]: ToSql<Binary, DB>,
    i64: ToSql<BigInt, DB>,
{
    let (key, data, expiry, version) = row;
    out.push_sql("INSERT INTO ");
    out.push_identifier(table)?;
    out.push_sql(" (token, data, expiry, version) VALUES (");
    out.push_bind_param::<Text, _>(*key)?;
    out.push_sql(", ");
    out.push_bind_param::<Binary, _>(*data)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(expiry)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(version)?;
    out.push_sql(")");
    Ok(())
}

/// `UPDATE t SET data = .., expiry = .., version = .. WHERE token = ..`.
fn push_update<'b, DB>(
    out: &mut AstPass<'_, 'b, DB>,
    table: &'b str,
    row: (&'b &'b str, &'b &'b [u8], &'b i64, &'b i64),
) -> QueryResult<()>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Binary> + HasSqlType<BigInt>,
    str: ToSql<Text, DB>,
    [u8]: ToSql<Binary, DB>,
    i64: ToSql<BigInt, DB>,
{
    let (key, data, expiry, version) = row;
    out.push_sql("UPDATE ");
    out.push_identifier(table)?;
    out.push_sql(" SET data = ");
    out.push_bind_param::<Binary, _>(*data)?;
    out.push_sql(", expiry = ");
    out.push_bind_param::<BigInt, _>(expiry)?;
    out.push_sql(", version = ");
    out.push_bind_param::<BigInt, _>(version)?;
    out.push_sql(" WHERE token = ");
    out.push_bind_param::<Text, _>(*key)?;
    Ok(())
}

impl<DB> QueryFragment<DB> for SessionQuery<'_>
where
    DB: Dialect + HasSqlType<Text> + HasSqlType<Binary> + HasSqlType<BigInt>,
    str: ToSql<Text, DB>,
    [u8]: ToSql<Binary, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match &self.op {
            Op::Find { key, now } => {
                out.push_sql("SELECT data FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::FindRecord { key, now } => {
                out.push_sql("SELECT data, expiry, version FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::Upsert {
                key,
                data,
                expiry,
                version,
            } => {
                push_insert(&mut out, self.table, (key, data, expiry, version))?;
                out.push_sql(DB::UPSERT);
            }
            Op::CommitIfCurrent {
                key,
                data,
                expiry,
                version,
                expected,
                now,
            } => {
                push_update(&mut out, self.table, (key, data, expiry, version))?;
                out.push_sql(" AND version = ");
                out.push_bind_param::<BigInt, _>(expected)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::CommitIfAbsent {
                key,
                data,
                expiry,
                version,
                now,
            } => {
                push_insert(&mut out, self.table, (key, data, expiry, version))?;
                if DB::UPSERT_WHERE {
                    out.push_sql(DB::UPSERT);
                    out.push_sql(" WHERE ");
                    out.push_identifier(self.table)?;
                    out.push_sql(".expiry <= ");
                    out.push_bind_param::<BigInt, _>(now)?;
                }
            }
            Op::CommitIfExpired {
                key,
                data,
                expiry,
                version,
                now,
            } => {
                push_update(&mut out, self.table, (key, data, expiry, version))?;
                out.push_sql(" AND expiry <= ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::DeleteIfCurrent { key, expected, now } => {
                out.push_sql("DELETE FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(" AND version = ");
                out.push_bind_param::<BigInt, _>(expected)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::Delete { key } => {
                out.push_sql("DELETE FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
            }
            Op::Touch { key, expiry, now } => {
                out.push_sql("UPDATE ");
                out.push_identifier(self.table)?;
                out.push_sql(" SET expiry = ");
                out.push_bind_param::<BigInt, _>(expiry)?;
                out.push_sql(" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::All { now } => {
                out.push_sql("SELECT token, data FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Op::DeleteExpired { now } => {
                out.push_sql("DELETE FROM ");
                out.push_identifier(self.table)?;
                out.push_sql(" WHERE expiry <= ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
        }
        Ok(())
    }
}

impl QueryId for SessionQuery<'_> {
    type QueryId = ();
    // The table name is only known at run time: diesel caches the prepared statement by
    // its SQL text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for SessionQuery<'_> {
    type SqlType = Untyped;
}

impl Inner {
    fn query<'a>(&'a self, op: Op<'a>) -> SessionQuery<'a> {
        SessionQuery {
            table: &self.table,
            op,
        }
    }
}

#[derive(QueryableByName)]
struct DataRow {
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

#[derive(QueryableByName)]
struct RecordRow {
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    expiry: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = Text)]
    token: String,
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend the pool
/// is (the body is compiled once per backend).
macro_rules! with_conn {
    ($inner:expr, $what:expr, |$conn:ident| $body:expr) => {
        match &$inner.pool {
            DieselPool::Postgres(pool) => {
                let mut $conn = pool.get().await.map_err(|e| pool_err(e, $what))?;
                let $conn = &mut *$conn;
                $body
            }
            DieselPool::Mysql(pool) => {
                let mut $conn = pool.get().await.map_err(|e| pool_err(e, $what))?;
                let $conn = &mut *$conn;
                $body
            }
        }
    };
}

impl Inner {
    async fn delete_expired(&self) -> Result<u64> {
        const WHAT: &str = "deleting expired sessions";
        let n = with_conn!(self, WHAT, |conn| {
            self.query(Op::DeleteExpired { now: now_millis() })
                .execute(conn)
                .await
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(n as u64)
    }
}

/// Now, in Unix milliseconds.
fn now_millis() -> i64 {
    to_millis(OffsetDateTime::now_utc())
}

/// Unix milliseconds, truncated (never later than the instant given).
fn to_millis(t: OffsetDateTime) -> i64 {
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

/// The instant of a stored expiry (Unix milliseconds).
fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A version as the signed `BIGINT` column keeps it (the same 64 bits).
fn version_to_sql(version: u64) -> i64 {
    version as i64
}

fn version_from_sql(version: i64) -> u64 {
    version as u64
}

/// Maps a failed query to the core error, keeping it as the source.
fn query_err(err: DieselError, what: &'static str) -> Error {
    let kind = match &err {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::BrokenTransactionManager => ErrorKind::Connection,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what)
        .with_backend(BACKEND)
        .with_source(err)
}

/// Maps a failure to get a pooled connection to the core error, keeping it as the source.
fn pool_err(err: PoolError, what: &'static str) -> Error {
    use deadpool_error::*;
    let kind = match &err {
        PoolError::Timeout(_) => ErrorKind::Timeout,
        PoolError::Backend(Backend::ConnectionError(ConnectionError::InvalidConnectionUrl(_))) => {
            ErrorKind::Config
        }
        _ => ErrorKind::Connection,
    };
    Error::new(kind, what)
        .with_backend(BACKEND)
        .with_source(err)
}

mod deadpool_error {
    pub(super) use diesel_async::pooled_connection::PoolError as Backend;
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message).with_backend(BACKEND)
}

/// Table names: `[A-Za-z_][A-Za-z0-9_]{0,62}`.
fn validate_table(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(config_error(format!(
            "invalid table name {name:?}: use 1 to 63 of [A-Za-z0-9_], not starting with a digit"
        )))
    }
}

impl DieselStore {
    /// A store on `pool` with the defaults: the table `sessions`, and a cleanup task every
    /// five minutes when called inside a Tokio runtime (outside one there is no task;
    /// expired sessions are still never returned).
    pub fn new(pool: impl Into<DieselPool>) -> Self {
        let builder = Self::builder(pool);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.build_unchecked()
    }

    /// A builder for the table name and cleanup interval.
    pub fn builder(pool: impl Into<DieselPool>) -> DieselStoreBuilder {
        DieselStoreBuilder {
            pool: pool.into(),
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// A deadpool pool with default options for a `postgres://` or `mysql://` (or
    /// `mariadb://`) URL, and a store with the defaults on it (see [`new`](Self::new)).
    /// Connections are opened on first use. With PostgreSQL a pooled connection is handed
    /// out without a test query first (a closed one never is); with MySQL, diesel-async's
    /// default `SELECT 1` on checkout stays (its driver does not tell a closed connection).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is malformed or of another database.
    pub fn from_url(url: &str) -> Result<Self> {
        let pool = pool_from_url(url)?;
        Ok(Self::new(pool))
    }

    /// Creates the sessions table and its expiry index when they do not exist, and adds the
    /// `version` column to a table made by an earlier version of this crate. Idempotent.
    /// Run it once at deployment or startup; nothing is created anywhere else.
    ///
    /// # Errors
    /// The database's error, mapped.
    pub async fn migrate(&self) -> Result<()> {
        const WHAT: &str = "creating the sessions table";
        let inner = &self.inner;
        with_conn!(inner, WHAT, |conn| {
            for stmt in create_statements(&inner.pool, &inner.table) {
                diesel::sql_query(stmt)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| query_err(e, WHAT))?;
            }
            let has_version = diesel::sql_query(has_version_column(&inner.pool))
                .bind::<Text, _>(inner.table.as_str());
            let found = has_version
                .clone()
                .get_result::<CountRow>(&mut *conn)
                .await
                .map_err(|e| query_err(e, WHAT))?;
            if found.n == 0 {
                let added = diesel::sql_query(add_version_column(&inner.pool, &inner.table))
                    .execute(&mut *conn)
                    .await;
                if let Err(e) = added {
                    // Another process may have added it meanwhile.
                    let found = has_version
                        .get_result::<CountRow>(&mut *conn)
                        .await
                        .map_err(|e| query_err(e, WHAT))?;
                    if found.n == 0 {
                        return Err(query_err(e, WHAT));
                    }
                }
            }
        });
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
    /// The database's error, mapped.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &DieselPool {
        &self.inner.pool
    }

    /// The table the sessions live in.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }
}

/// Checks `url` with the driver's own parser and builds a lazy pool for it.
fn pool_from_url(url: &str) -> Result<DieselPool> {
    let bad_url = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::new(ErrorKind::Config, "the database URL is malformed")
            .with_backend(BACKEND)
            .with_source(e)
    };
    let build_err = |e| {
        Error::new(ErrorKind::Config, "building the connection pool")
            .with_backend(BACKEND)
            .with_source(e)
    };
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("postgres" | "postgresql") => {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| bad_url(Box::new(e)))?;
            // No `SELECT 1` before each checkout (diesel-async's default), a second round
            // trip on every store call: a PostgreSQL connection whose client has closed (the
            // server or the network dropped it) counts as broken and is never handed out,
            // and one that breaks mid-statement fails that statement either way.
            let mut config = ManagerConfig::default();
            config.recycling_method = RecyclingMethod::Fast;
            let manager =
                AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
            Ok(Pool::builder(manager).build().map_err(build_err)?.into())
        }
        Some(scheme @ ("mysql" | "mariadb")) => {
            // mysql_async knows only mysql://.
            let url = format!("mysql{}", &url[scheme.len()..]);
            mysql_async::Opts::from_url(&url).map_err(|e| bad_url(Box::new(e)))?;
            let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(url);
            Ok(Pool::builder(manager).build().map_err(build_err)?.into())
        }
        Some(scheme) => Err(config_error(format!(
            "unsupported URL scheme {scheme:?}: use postgres:// or mysql://"
        ))),
        None => Err(config_error(
            "the database URL has no scheme: use postgres:// or mysql://".to_owned(),
        )),
    }
}

impl std::fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselStore")
            .field("pool", &self.inner.pool)
            .field("table", &self.inner.table)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`DieselStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct DieselStoreBuilder {
    pool: DieselPool,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl DieselStoreBuilder {
    /// The table (default `sessions`); `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How often expired rows are deleted; `None` for no cleanup task (default: five
    /// minutes).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid table name, a zero interval, or a cleanup task
    /// asked for outside a Tokio runtime.
    pub fn build(self) -> Result<DieselStore> {
        validate_table(&self.table)?;
        let interval = self.cleanup_interval;
        let mut store = self.build_unchecked();
        if let Some(interval) = interval {
            let inner = store.inner.clone();
            let task = CleanupTask::spawn(BACKEND, interval, move || {
                let inner = inner.clone();
                async move { inner.delete_expired().await }
            })?;
            store.cleanup = Some(Arc::new(task));
        }
        Ok(store)
    }

    fn build_unchecked(self) -> DieselStore {
        DieselStore {
            inner: Arc::new(Inner {
                pool: self.pool,
                table: self.table,
            }),
            cleanup: None,
        }
    }
}

#[async_trait]
impl Store for DieselStore {
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
        const WHAT: &str = "finding a session";
        let inner = &self.inner;
        let row = with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::Find {
                    key,
                    now: now_millis(),
                })
                .get_result::<DataRow>(conn)
                .await
                .optional()
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(row.map(|r| r.data))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        const WHAT: &str = "committing a session";
        let expiry = to_millis(expiry);
        if expiry <= now_millis() {
            // Already expired: leave nothing behind.
            return self.delete(key).await;
        }
        let inner = &self.inner;
        let version = version_to_sql(scs_core::new_version());
        with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::Upsert {
                    key,
                    data,
                    expiry,
                    version,
                })
                .execute(conn)
                .await
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        const WHAT: &str = "deleting a session";
        let inner = &self.inner;
        with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::Delete { key })
                .execute(conn)
                .await
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        const WHAT: &str = "touching a session";
        let inner = &self.inner;
        // Both drivers report matched rows (MySQL's CLIENT_FOUND_ROWS is set by
        // diesel-async), so touching to the same expiry still says true.
        let n = with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::Touch {
                    key,
                    expiry: to_millis(expiry),
                    now: now_millis(),
                })
                .execute(conn)
                .await
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(n > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let inner = &self.inner;
        let row = with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::FindRecord {
                    key,
                    now: now_millis(),
                })
                .get_result::<RecordRow>(conn)
                .await
                .optional()
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(row.map(|r| Record::new(r.data, from_millis(r.expiry), version_from_sql(r.version))))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        let (expiry, now) = (to_millis(expiry), now_millis());
        let version = scs_core::new_version();
        let new = version_to_sql(version);
        let inner = &self.inner;
        let op = match expected.map(version_to_sql) {
            Some(expected) if expiry <= now => Op::DeleteIfCurrent { key, expected, now },
            Some(expected) => Op::CommitIfCurrent {
                key,
                data,
                expiry,
                version: new,
                expected,
                now,
            },
            None => Op::CommitIfAbsent {
                key,
                data,
                expiry,
                version: new,
                now,
            },
        };
        let written = with_conn!(inner, WHAT, |conn| {
            match inner.query(op).execute(&mut *conn).await {
                Ok(n) => n,
                // MySQL, no live entry expected: the key is there, so take the row over
                // only if it has expired. (Its upsert has no WHERE, and with the found-rows
                // flag its count cannot tell an insert from a row left alone.)
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                    if expected.is_none() =>
                {
                    inner
                        .query(Op::CommitIfExpired {
                            key,
                            data,
                            expiry,
                            version: new,
                            now,
                        })
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| query_err(e, WHAT))?
                }
                Err(e) => return Err(query_err(e, WHAT)),
            }
        });
        Ok((written > 0).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for DieselStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing sessions";
        let inner = &self.inner;
        let rows = with_conn!(inner, WHAT, |conn| {
            inner
                .query(Op::All { now: now_millis() })
                .load::<EntryRow>(conn)
                .await
                .map_err(|e| query_err(e, WHAT))?
        });
        Ok(rows.into_iter().map(|r| (r.token, r.data)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_urls_are_config_errors() {
        for url in [
            "not a url",
            "redis://127.0.0.1",
            "postgres://host:notaport/db",
            "mysql://host:notaport/db",
        ] {
            let err = DieselStore::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[test]
    fn table_names_are_validated_and_debug_hides_the_password() {
        let pool = pool_from_url("postgres://user:s3cret@127.0.0.1:1/db").unwrap();
        for bad in ["", "1abc", "a.b", "a b", "a\"b", "a`b", &"x".repeat(64)] {
            let err = DieselStore::builder(pool.clone())
                .table_name(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        let store = DieselStore::builder(pool.clone())
            .table_name("web_sessions")
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert_eq!(store.table_name(), "web_sessions");
        let shown = format!("{store:?} {:?}", DieselStore::builder(pool));
        assert!(
            shown.contains("web_sessions") && !shown.contains("s3cret"),
            "{shown}"
        );
        let store = DieselStore::from_url("mariadb://root:s3cret@127.0.0.1:1/db").unwrap();
        assert!(matches!(store.pool(), DieselPool::Mysql(_)));
        assert!(!format!("{store:?}").contains("s3cret"));
    }

    #[test]
    fn cleanup_needs_a_runtime_and_a_nonzero_interval() {
        let pool = pool_from_url("postgres://127.0.0.1:1/db").unwrap();
        assert!(DieselStore::new(pool.clone()).cleanup.is_none());
        let err = DieselStore::builder(pool.clone()).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = DieselStore::builder(pool.clone())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(DieselStore::new(pool).cleanup.is_some());
    }

    #[test]
    fn statements_per_backend() {
        let q = SessionQuery {
            table: "my_sessions",
            op: Op::Upsert {
                key: "k",
                data: b"d",
                expiry: 7,
                version: 9,
            },
        };
        let pg = diesel::debug_query::<Pg, _>(&q).to_string();
        assert!(
            pg.starts_with(
                "INSERT INTO \"my_sessions\" (token, data, expiry, version) VALUES ($1, $2, $3, $4) ON CONFLICT (token)"
            ),
            "{pg}"
        );
        let my = diesel::debug_query::<Mysql, _>(&q).to_string();
        assert!(
            my.starts_with(
                "INSERT INTO `my_sessions` (token, data, expiry, version) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
            ),
            "{my}"
        );
        let q = SessionQuery {
            table: "my_sessions",
            op: Op::Touch {
                key: "k",
                expiry: 7,
                now: 5,
            },
        };
        let pg = diesel::debug_query::<Pg, _>(&q).to_string();
        assert!(
            pg.starts_with(
                "UPDATE \"my_sessions\" SET expiry = $1 WHERE token = $2 AND expiry > $3"
            ),
            "{pg}"
        );
        let q = SessionQuery {
            table: "my_sessions",
            op: Op::CommitIfAbsent {
                key: "k",
                data: b"d",
                expiry: 7,
                version: 9,
                now: 5,
            },
        };
        let pg = diesel::debug_query::<Pg, _>(&q).to_string();
        assert!(
            pg.contains("version = EXCLUDED.version WHERE \"my_sessions\".expiry <= $5"),
            "{pg}"
        );
        let my = diesel::debug_query::<Mysql, _>(&q).to_string();
        assert!(
            my.starts_with(
                "INSERT INTO `my_sessions` (token, data, expiry, version) VALUES (?, ?, ?, ?) --"
            ),
            "a plain insert on MySQL: {my}"
        );
        let q = SessionQuery {
            table: "my_sessions",
            op: Op::CommitIfCurrent {
                key: "k",
                data: b"d",
                expiry: 7,
                version: 9,
                expected: 8,
                now: 5,
            },
        };
        let pg = diesel::debug_query::<Pg, _>(&q).to_string();
        assert!(
            pg.starts_with(
                "UPDATE \"my_sessions\" SET data = $1, expiry = $2, version = $3 \
                 WHERE token = $4 AND version = $5 AND expiry > $6"
            ),
            "{pg}"
        );
    }

    #[test]
    fn millis_truncate() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(to_millis(t), 1_700_000_000_123);
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(to_millis(t), -2);
    }
}
