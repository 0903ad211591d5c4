use std::sync::Arc;
use std::time::Duration;

use scs_core::time::OffsetDateTime;
use scs_core::{Capabilities, Entry, Error, ErrorKind, IterableStore, Result, Store, async_trait};
use scs_tokio::CleanupTask;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Index, OnConflict, Query, Table};
use sea_orm::{
    ActiveValue, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryTrait, RuntimeErr,
};

use crate::BACKEND;
use entity::Column;

/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The table used unless the builder names another.
const DEFAULT_TABLE: &str = "sessions";

/// The SeaORM entity of a session row: `token` (primary key), `data` (binary) and `expiry`
/// (Unix milliseconds).
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
    }

    /// Sessions relate to nothing.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A session store on SeaORM: PostgreSQL, MySQL/MariaDB or SQLite, whichever the
/// connection is.
///
/// Rows are `(token, data, expiry)` with the expiry in Unix milliseconds (a `BIGINT`, exact
/// and portable across the three databases). Every read filters on the expiry;
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

impl Inner {
    fn table(&self) -> Alias {
        Alias::new(self.table.as_str())
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

    /// Connects with SeaORM's default options (`postgres://`, `mysql://`, `mariadb://` or
    /// `sqlite:`) and builds a store with the defaults (see [`new`](Self::new)).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is malformed or of another database;
    /// [`ErrorKind::Connection`] when the database cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        check_url(url)?;
        let db = Database::connect(url)
            .await
            .map_err(|e| map_err(e, "connecting to the database"))?;
        Ok(Self::new(db))
    }

    /// Creates the sessions table and its expiry index when they do not exist. Run it once
    /// at deployment or startup; nothing is created anywhere else.
    ///
    /// # Errors
    /// The database's error, mapped.
    pub async fn migrate(&self) -> Result<()> {
        for stmt in migration(self.inner.db.get_database_backend(), &self.inner.table) {
            self.inner
                .db
                .execute_raw(stmt)
                .await
                .map_err(|e| map_err(e, "creating the sessions table"))?;
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
                .index(Index::create().name(&index_name).col(Column::Expiry))
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
            vec![backend.build(&create)]
        }
        _ => {
            create
                .col(ColumnDef::new(Column::Data).blob().not_null())
                .col(ColumnDef::new(Column::Expiry).big_integer().not_null());
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
        Capabilities::new().with_iterate().with_touch()
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
        let row = entity::ActiveModel {
            token: ActiveValue::Set(key.to_owned()),
            data: ActiveValue::Set(data.to_vec()),
            expiry: ActiveValue::Set(expiry),
        };
        // One statement: INSERT .. ON CONFLICT (token) DO UPDATE on PostgreSQL and SQLite,
        // INSERT .. ON DUPLICATE KEY UPDATE on MySQL.
        let mut insert = entity::Entity::insert(row).on_conflict(
            OnConflict::column(Column::Token)
                .update_columns([Column::Data, Column::Expiry])
                .to_owned(),
        );
        QueryTrait::query(&mut insert).into_table(self.inner.table());
        insert
            .exec_without_returning(&self.inner.db)
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
