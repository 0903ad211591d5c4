use std::sync::Arc;
use std::time::Duration;

use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Index, OnConflict, Query, Table};
use sea_orm::{
    ActiveValue, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryTrait, RuntimeErr, SqlErr, Statement,
};

use crate::BACKEND;
use entity::Column;

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The table used unless the builder names another.
const DEFAULT_TABLE: &str = "sessions";

/// The SeaORM entity of a session row: `token` (primary key), `data` (binary), `expiry`
/// (Unix milliseconds) and `version` (changed by every commit).
///
/// Its table name is the default, `sessions`; the store runs the same columns against the
/// table its builder names. Use it to query sessions with SeaORM yourself.
#[allow(missing_docs)]
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One session row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        /// The store key (the hashed token, by default).
        #[sea_orm(primary_key, auto_increment = false)]
        pub token: String,
        /// The encoded session.
        pub data: Vec<u8>,
        /// When the session expires, in Unix milliseconds.
        #[sea_orm(indexed)]
        pub expiry: i64,
        /// A random value that every commit changes (a touch does not): what a
        /// compare-and-set commit compares. 0 in rows written before the column existed.
        pub version: i64,
    }

    /// Sessions relate to nothing.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A session store on SeaORM: PostgreSQL, MySQL/MariaDB or SQLite, whichever the
/// connection is.
///
/// Rows are `(token, data, expiry, version)` with the expiry in Unix milliseconds (a
/// `BIGINT`, exact and portable across the three databases) and a version that every commit
/// changes, for compare-and-set commits. Every read filters on the expiry;
/// [`migrate`](Self::migrate) creates the table and its expiry index; a background task
/// deletes expired rows (every five minutes by default). Cloning is cheap; dropping the
/// last clone stops the task.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_seaormstore::SeaOrmStore;
///
/// let store = SeaOrmStore::from_url("postgres://postgres@127.0.0.1/app").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SeaOrmStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    db: DatabaseConnection,
    table: String,
}

/// What an insert of [`Inner::insert`] does when the key is already there.
enum Upsert {
    /// Replaces the row (a plain commit).
    Always,
    /// Replaces the row only when it expired by the given instant (PostgreSQL, SQLite).
    IfExpired(i64),
    /// Fails with a unique-constraint violation.
    Never,
}

impl Inner {
    fn table(&self) -> Alias {
        Alias::new(self.table.as_str())
    }

    /// Inserts a row, in one statement; returns the number of rows written.
    async fn insert(
        &self,
        key: &str,
        data: &[u8],
        expiry: i64,
        version: i64,
        upsert: Upsert,
    ) -> std::result::Result<u64, DbErr> {
        let row = entity::ActiveModel {
            token: ActiveValue::Set(key.to_owned()),
            data: ActiveValue::Set(data.to_vec()),
            expiry: ActiveValue::Set(expiry),
            version: ActiveValue::Set(version),
        };
        let mut on_conflict = OnConflict::column(Column::Token);
        on_conflict.update_columns([Column::Data, Column::Expiry, Column::Version]);
        let mut insert = match upsert {
            Upsert::Always => entity::Entity::insert(row).on_conflict(on_conflict),
            Upsert::IfExpired(now) => {
                on_conflict.action_and_where(Expr::col((self.table(), Column::Expiry)).lte(now));
                entity::Entity::insert(row).on_conflict(on_conflict)
            }
            Upsert::Never => entity::Entity::insert(row),
        };
        QueryTrait::query(&mut insert).into_table(self.table());
        insert.exec_without_returning(&self.db).await
    }

    async fn delete_expired(&self) -> Result<u64> {
        let stmt = Query::delete()
            .from_table(self.table())
            .and_where(Expr::col(Column::Expiry).lte(now_millis()))
            .to_owned();
        let result = self
            .db
            .execute(&stmt)
            .await
            .map_err(|e| map_err(e, "deleting expired sessions"))?;
        Ok(result.rows_affected())
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

/// The kind of a sqlx error, by what it says about the connection.
fn sqlx_kind(err: &sea_orm::sqlx::Error) -> ErrorKind {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Configuration(_) | E::InvalidArgument(_) => ErrorKind::Config,
        E::PoolTimedOut => ErrorKind::Timeout,
        E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        E::Io(_) | E::Tls(_) | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            ErrorKind::Connection
        }
        _ => ErrorKind::Backend,
    }
}

/// Maps a SeaORM error to the core error, keeping it as the source.
fn map_err(err: DbErr, what: &'static str) -> Error {
    let kind = match &err {
        DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout) => ErrorKind::Timeout,
        DbErr::ConnectionAcquire(_) => ErrorKind::Connection,
        DbErr::Conn(RuntimeErr::SqlxError(e)) => match sqlx_kind(e) {
            ErrorKind::Backend => ErrorKind::Connection,
            kind => kind,
        },
        DbErr::Conn(_) => ErrorKind::Connection,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_kind(e)
        }
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what)
        .with_backend(BACKEND)
        .with_source(err)
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

/// The URL schemes SeaORM's sqlx drivers accept.
const SCHEMES: [&str; 5] = ["postgres", "postgresql", "mysql", "mariadb", "sqlite"];

fn check_url(url: &str) -> Result<()> {
    match url.split_once(':') {
        Some((scheme, _)) if SCHEMES.contains(&scheme) => Ok(()),
        Some((scheme, _)) => Err(config_error(format!(
            "unsupported URL scheme {scheme:?}: use postgres://, mysql://, mariadb:// or sqlite:"
        ))),
        None => Err(config_error(
            "the database URL has no scheme: use postgres://, mysql://, mariadb:// or sqlite:"
                .to_owned(),
        )),
    }
}

/// How long a pooled connection may sit idle before [`SeaOrmStore::from_url`]'s pool pings
/// it on checkout: long enough that a busy pool never pings, well under the minutes after
/// which proxies and firewalls drop idle connections. A connection that broke sooner fails
/// its statement, and sqlx closes it.
pub const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// The options [`SeaOrmStore::from_url`] connects with.
fn connect_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options.test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
    options
}

impl SeaOrmStore {
    /// A store on `db` with the defaults: the table `sessions`, and a cleanup task every
    /// five minutes when called inside a Tokio runtime (outside one there is no task;
    /// expired sessions are still never returned).
    pub fn new(db: DatabaseConnection) -> Self {
        let builder = Self::builder(db);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.build_unchecked()
    }

    /// A builder for the table name and cleanup interval.
    pub fn builder(db: DatabaseConnection) -> SeaOrmStoreBuilder {
        SeaOrmStoreBuilder {
            db,
            table: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Connects (`postgres://`, `mysql://`, `mariadb://` or `sqlite:`) with SeaORM's default
    /// options but one: a pooled connection is pinged before use only once it has sat idle
    /// for [`IDLE_BEFORE_PING`] (SeaORM's default pings before every statement, a second
    /// round trip on each store call).
    /// Builds a store with the defaults (see [`new`](Self::new)).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is malformed or of another database;
    /// [`ErrorKind::Connection`] when the database cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        check_url(url)?;
        let db = Database::connect(connect_options(url))
            .await
            .map_err(|e| map_err(e, "connecting to the database"))?;
        Ok(Self::new(db))
    }

    /// Creates the sessions table and its expiry index when they do not exist, and adds the
    /// `version` column to a table made by an earlier version of this crate. Idempotent.
    /// Run it once at deployment or startup; nothing is created anywhere else.
    ///
    /// # Errors
    /// The database's error, mapped.
    pub async fn migrate(&self) -> Result<()> {
        const WHAT: &str = "creating the sessions table";
        let (db, table) = (&self.inner.db, &self.inner.table);
        let backend = db.get_database_backend();
        for stmt in migration(backend, table) {
            db.execute_raw(stmt).await.map_err(|e| map_err(e, WHAT))?;
        }
        let has_version = || async {
            let row = db
                .query_one_raw(has_version_column(backend, table))
                .await
                .map_err(|e| map_err(e, WHAT))?;
            let n: i64 = match row {
                Some(row) => row.try_get_by_index(0).map_err(|e| map_err(e, WHAT))?,
                None => 0,
            };
            Ok::<_, Error>(n > 0)
        };
        if !has_version().await?
            && let Err(e) = db.execute_raw(add_version_column(backend, table)).await
        {
            // Another process may have added it meanwhile.
            if !has_version().await? {
                return Err(map_err(e, WHAT));
            }
        }
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

    /// The connection the store uses.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// The table the sessions live in.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }
}

/// The `version` column's definition, the same in the table and in the upgrade.
fn version_column() -> ColumnDef {
    ColumnDef::new(Column::Version)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

/// Counts the table's `version` column (0 or 1): a table made by an earlier version of
/// this crate has none.
fn has_version_column(backend: DbBackend, table: &str) -> Statement {
    let sql = match backend {
        DbBackend::MySql => {
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'version'"
        }
        DbBackend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'version'"
        }
        _ => "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'version'",
    };
    Statement::from_sql_and_values(backend, sql, [table.into()])
}

/// Adds the `version` column to a table made by an earlier version of this crate.
fn add_version_column(backend: DbBackend, table: &str) -> Statement {
    let alter = Table::alter()
        .table(Alias::new(table))
        .add_column(version_column())
        .to_owned();
    backend.build(&alter)
}

/// The DDL of [`SeaOrmStore::migrate`] for `backend`, built with SeaORM's schema builder.
fn migration(backend: DbBackend, table: &str) -> Vec<sea_orm::Statement> {
    let name = Alias::new(table);
    let index_name = format!("{table}_expiry_idx");
    let mut create = Table::create();
    create.table(name.clone()).if_not_exists().col(
        ColumnDef::new(Column::Token)
            .string_len(255)
            .not_null()
            .primary_key(),
    );
    match backend {
        // MySQL: BLOB stops at 64 KiB, and the default collation would make keys that
        // differ only in case collide. CREATE INDEX has no IF NOT EXISTS in MySQL, so the
        // index goes inline.
        DbBackend::MySql => {
            create
                .col(
                    ColumnDef::new(Column::Data)
                        .custom(Alias::new("LONGBLOB"))
                        .not_null(),
                )
                .col(ColumnDef::new(Column::Expiry).big_integer().not_null())
                .col(version_column())
                .index(Index::create().name(&index_name).col(Column::Expiry))
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
            vec![backend.build(&create)]
        }
        _ => {
            create
                .col(ColumnDef::new(Column::Data).blob().not_null())
                .col(ColumnDef::new(Column::Expiry).big_integer().not_null())
                .col(version_column());
            let index = Index::create()
                .if_not_exists()
                .name(&index_name)
                .table(name)
                .col(Column::Expiry)
                .to_owned();
            vec![backend.build(&create), backend.build(&index)]
        }
    }
}

impl std::fmt::Debug for SeaOrmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection's options hold the URL and its password: show only the kind.
        f.debug_struct("SeaOrmStore")
            .field("backend", &self.inner.db.get_database_backend())
            .field("table", &self.inner.table)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`SeaOrmStore`].
#[derive(Clone)]
#[must_use]
pub struct SeaOrmStoreBuilder {
    db: DatabaseConnection,
    table: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for SeaOrmStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaOrmStoreBuilder")
            .field("table", &self.table)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish()
    }
}

impl SeaOrmStoreBuilder {
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
    pub fn build(self) -> Result<SeaOrmStore> {
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

    fn build_unchecked(self) -> SeaOrmStore {
        SeaOrmStore {
            inner: Arc::new(Inner {
                db: self.db,
                table: self.table,
            }),
            cleanup: None,
        }
    }
}

#[async_trait]
impl Store for SeaOrmStore {
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
        let stmt = Query::select()
            .column(Column::Data)
            .from(self.inner.table())
            .and_where(Expr::col(Column::Token).eq(key))
            .and_where(Expr::col(Column::Expiry).gt(now_millis()))
            .to_owned();
        let row = self
            .inner
            .db
            .query_one(&stmt)
            .await
            .map_err(|e| map_err(e, "finding a session"))?;
        row.map(|row| row.try_get::<Vec<u8>>("", "data"))
            .transpose()
            .map_err(|e| map_err(e, "reading a session row"))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let expiry = to_millis(expiry);
        if expiry <= now_millis() {
            // Already expired: leave nothing behind.
            return self.delete(key).await;
        }
        // One statement: INSERT .. ON CONFLICT (token) DO UPDATE on PostgreSQL and SQLite,
        // INSERT .. ON DUPLICATE KEY UPDATE on MySQL.
        let version = version_to_sql(scs_core::new_version());
        self.inner
            .insert(key, data, expiry, version, Upsert::Always)
            .await
            .map_err(|e| map_err(e, "committing a session"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let stmt = Query::delete()
            .from_table(self.inner.table())
            .and_where(Expr::col(Column::Token).eq(key))
            .to_owned();
        self.inner
            .db
            .execute(&stmt)
            .await
            .map_err(|e| map_err(e, "deleting a session"))?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let stmt = Query::update()
            .table(self.inner.table())
            .value(Column::Expiry, to_millis(expiry))
            .and_where(Expr::col(Column::Token).eq(key))
            .and_where(Expr::col(Column::Expiry).gt(now_millis()))
            .to_owned();
        let result = self
            .inner
            .db
            .execute(&stmt)
            .await
            .map_err(|e| map_err(e, "touching a session"))?;
        Ok(result.rows_affected() > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let stmt = Query::select()
            .columns([Column::Data, Column::Expiry, Column::Version])
            .from(self.inner.table())
            .and_where(Expr::col(Column::Token).eq(key))
            .and_where(Expr::col(Column::Expiry).gt(now_millis()))
            .to_owned();
        let row = self
            .inner
            .db
            .query_one(&stmt)
            .await
            .map_err(|e| map_err(e, WHAT))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = || -> std::result::Result<Record, DbErr> {
            Ok(Record::new(
                row.try_get("", "data")?,
                from_millis(row.try_get("", "expiry")?),
                version_from_sql(row.try_get("", "version")?),
            ))
        };
        read()
            .map(Some)
            .map_err(|e| map_err(e, "reading a session row"))
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
        let written = match expected.map(version_to_sql) {
            // Already expired: the entry goes, if it is the one expected.
            Some(old) if expiry <= now => {
                let stmt = Query::delete()
                    .from_table(inner.table())
                    .and_where(Expr::col(Column::Token).eq(key))
                    .and_where(Expr::col(Column::Version).eq(old))
                    .and_where(Expr::col(Column::Expiry).gt(now))
                    .to_owned();
                inner
                    .db
                    .execute(&stmt)
                    .await
                    .map_err(|e| map_err(e, WHAT))?
                    .rows_affected()
            }
            // Only the live entry with the expected version.
            Some(old) => {
                let stmt = Query::update()
                    .table(inner.table())
                    .value(Column::Data, data)
                    .value(Column::Expiry, expiry)
                    .value(Column::Version, new)
                    .and_where(Expr::col(Column::Token).eq(key))
                    .and_where(Expr::col(Column::Version).eq(old))
                    .and_where(Expr::col(Column::Expiry).gt(now))
                    .to_owned();
                inner
                    .db
                    .execute(&stmt)
                    .await
                    .map_err(|e| map_err(e, WHAT))?
                    .rows_affected()
            }
            // No live entry: PostgreSQL and SQLite insert or take over an expired row in one
            // statement (an upsert whose update has a WHERE).
            None if inner.db.get_database_backend() != DbBackend::MySql => inner
                .insert(key, data, expiry, new, Upsert::IfExpired(now))
                .await
                .map_err(|e| map_err(e, WHAT))?,
            // MySQL's upsert has no WHERE, and with the found-rows flag (set by sqlx) its
            // count cannot tell an insert from a row left alone: a plain insert, and on a
            // duplicate key an update of the row only if it has expired.
            None => match inner.insert(key, data, expiry, new, Upsert::Never).await {
                Ok(n) => n,
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    let stmt = Query::update()
                        .table(inner.table())
                        .value(Column::Data, data)
                        .value(Column::Expiry, expiry)
                        .value(Column::Version, new)
                        .and_where(Expr::col(Column::Token).eq(key))
                        .and_where(Expr::col(Column::Expiry).lte(now))
                        .to_owned();
                    inner
                        .db
                        .execute(&stmt)
                        .await
                        .map_err(|e| map_err(e, WHAT))?
                        .rows_affected()
                }
                Err(e) => return Err(map_err(e, WHAT)),
            },
        };
        Ok((written > 0).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for SeaOrmStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let stmt = Query::select()
            .columns([Column::Token, Column::Data])
            .from(self.inner.table())
            .and_where(Expr::col(Column::Expiry).gt(now_millis()))
            .to_owned();
        let rows = self
            .inner
            .db
            .query_all(&stmt)
            .await
            .map_err(|e| map_err(e, "listing sessions"))?;
        rows.iter()
            .map(|row| {
                let key = row.try_get::<String>("", "token");
                let data = row.try_get::<Vec<u8>>("", "data");
                match (key, data) {
                    (Ok(key), Ok(data)) => Ok((key, data)),
                    (Err(e), _) | (_, Err(e)) => Err(map_err(e, "reading a session row")),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from_url`'s pool pings only connections idle for a while, not one per statement.
    #[test]
    fn from_url_pings_only_idle_connections() {
        let options = connect_options("postgres://127.0.0.1/test");
        assert!(!options.get_test_before_acquire());
        assert_eq!(
            options.get_test_before_acquire_if_idle_for(),
            Some(IDLE_BEFORE_PING)
        );
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in ["not a url", "redis://127.0.0.1", "http://x"] {
            let err = SeaOrmStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn table_names_are_validated_and_debug_hides_the_url() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        for bad in ["", "1abc", "a.b", "a b", "a;drop", &"x".repeat(64)] {
            let err = SeaOrmStore::builder(db.clone())
                .table_name(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        let err = SeaOrmStore::builder(db.clone())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let store = SeaOrmStore::builder(db)
            .table_name("web_sessions")
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert_eq!(store.table_name(), "web_sessions");
        let shown = format!("{store:?}");
        assert!(
            shown.contains("web_sessions") && !shown.contains("memory"),
            "{shown}"
        );
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(Database::connect("sqlite::memory:")).unwrap();
        let store = SeaOrmStore::new(db.clone());
        assert!(store.cleanup.is_none());
        let err = SeaOrmStore::builder(db).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn migration_ddl_per_backend() {
        let sql = |b| {
            migration(b, "sessions")
                .into_iter()
                .map(|s| s.sql)
                .collect::<Vec<_>>()
        };
        let pg = sql(DbBackend::Postgres);
        assert!(pg[0].contains("\"data\" bytea NOT NULL"), "{pg:?}");
        for b in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let create = &sql(b)[0];
            // SQLite's INTEGER is 64 bits.
            let column = match b {
                DbBackend::MySql => "`version` bigint NOT NULL DEFAULT 0",
                DbBackend::Postgres => "\"version\" bigint NOT NULL DEFAULT 0",
                _ => "\"version\" integer NOT NULL DEFAULT 0",
            };
            assert!(create.contains(column), "{create}");
            let alter = add_version_column(b, "sessions").sql;
            assert!(alter.ends_with(&format!("ADD COLUMN {column}")), "{alter}");
        }
        assert!(pg[1].starts_with("CREATE INDEX IF NOT EXISTS"), "{pg:?}");
        let my = sql(DbBackend::MySql);
        assert_eq!(my.len(), 1);
        assert!(
            my[0].contains("LONGBLOB") && my[0].contains("utf8mb4_bin"),
            "{my:?}"
        );
        let lite = sql(DbBackend::Sqlite);
        // SQLite's INTEGER is 64 bits.
        assert!(lite[0].contains("\"expiry\" integer NOT NULL"), "{lite:?}");
        assert!(lite[0].contains("\"data\" blob NOT NULL"), "{lite:?}");
    }

    #[test]
    fn millis_truncate() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(to_millis(t), 1_700_000_000_123);
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(to_millis(t), -2);
    }
}
