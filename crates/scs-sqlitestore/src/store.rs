use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::BACKEND;

/// Default table name.
const DEFAULT_TABLE: &str = "sessions";
/// Default interval of the expired-row cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default number of connections to a database file (one writer, the rest readers).
const DEFAULT_MAX_CONNECTIONS: usize = 4;
/// How long a connection waits for a lock held by another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A session store in SQLite, on [`rusqlite`] (the answer to Go scs's `sqlite3store`).
///
/// rusqlite is blocking, so every statement runs on Tokio's blocking pool, never on the
/// async runtime. A database file is opened in WAL mode with one writer connection and a
/// few reader connections, so reads do not wait behind writes; a user-provided connection
/// or `:memory:` uses that one connection for everything (each connection to `:memory:` is
/// a database of its own).
///
/// Expiry is kept in Unix milliseconds and checked in every query; a background task
/// deletes expired rows (every 5 minutes by default). Cloning is cheap and clones share
/// the connections. Dropping the last clone stops the task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_sqlitestore::SqliteStore;
///
/// let store = SqliteStore::open_in_memory()?;
/// store.migrate().await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + std::time::Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    table: String,
    sql: Sql,
    /// The database file, or `:memory:`; for `Debug`.
    location: String,
    writer: ConnSet,
    /// Reader connections of a WAL database file; `None` when the writer does everything.
    readers: Option<ConnSet>,
}

/// The statements, built once from the validated table name.
struct Sql {
    find: String,
    find_record: String,
    commit: String,
    commit_if_current: String,
    commit_if_absent: String,
    delete_if_current: String,
    delete: String,
    touch: String,
    all: String,
    delete_expired: String,
    create_table: String,
    create_index: String,
    has_version_column: String,
    add_version_column: String,
}

impl Sql {
    fn new(table: &str) -> Self {
        // The name is validated, and quoted so that keywords are fine too.
        let t = format!("\"{table}\"");
        Self {
            find: format!("SELECT data FROM {t} WHERE token = ? AND expiry > ?"),
            find_record: format!(
                "SELECT data, expiry, version FROM {t} WHERE token = ? AND expiry > ?"
            ),
            commit: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
                 expiry = excluded.expiry, version = excluded.version"
            ),
            // Only the live entry with the expected version.
            commit_if_current: format!(
                "UPDATE {t} SET data = ?, expiry = ?, version = ? \
                 WHERE token = ? AND version = ? AND expiry > ?"
            ),
            // Inserts, or takes over an expired row; a live row stays as it is (no change).
            commit_if_absent: format!(
                "INSERT INTO {t} (token, data, expiry, version) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
                 expiry = excluded.expiry, version = excluded.version WHERE {t}.expiry <= ?"
            ),
            delete_if_current: format!(
                "DELETE FROM {t} WHERE token = ? AND version = ? AND expiry > ?"
            ),
            delete: format!("DELETE FROM {t} WHERE token = ?"),
            touch: format!("UPDATE {t} SET expiry = ? WHERE token = ? AND expiry > ?"),
            all: format!("SELECT token, data FROM {t} WHERE expiry > ?"),
            delete_expired: format!("DELETE FROM {t} WHERE expiry <= ?"),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 token TEXT PRIMARY KEY NOT NULL, \
                 data BLOB NOT NULL, \
                 expiry INTEGER NOT NULL, \
                 version INTEGER NOT NULL DEFAULT 0)"
            ),
            create_index: format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_expiry_idx\" ON {t} (expiry)"
            ),
            // A table made by a version of this crate before versioned commits lacks it.
            has_version_column: "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'version'"
                .to_owned(),
            add_version_column: format!(
                "ALTER TABLE {t} ADD COLUMN version INTEGER NOT NULL DEFAULT 0"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connections

/// A few connections handed out one caller at a time. The semaphore is awaited on the
/// runtime, so no blocking thread ever parks waiting for a connection.
struct ConnSet {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
    size: usize,
}

impl ConnSet {
    fn new(conns: Vec<Connection>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(conns.len())),
            size: conns.len(),
            idle: Mutex::new(conns),
        }
    }
}

/// A connection taken from a [`ConnSet`]; it goes back (even on a panic) before the permit
/// is released.
struct Checkout<'a> {
    set: &'a ConnSet,
    conn: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.set.idle.lock().push(conn);
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Read,
    Write,
}

impl Inner {
    fn new(table: String, location: String, writer: Connection, readers: Vec<Connection>) -> Self {
        Self {
            sql: Sql::new(&table),
            table,
            location,
            writer: ConnSet::new(vec![writer]),
            readers: (!readers.is_empty()).then(|| ConnSet::new(readers)),
        }
    }

    /// Opens a database file (creating it) in WAL mode: one writer, `max - 1` readers.
    fn open_file(path: &Path, table: String, max: usize) -> Result<Self> {
        let writer = open_connection(path)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| sqlite_error("switching the database to WAL mode", e))?;
        // Without WAL, readers would block the writer: use the one connection.
        let wal = mode.eq_ignore_ascii_case("wal");
        if wal {
            // Safe in WAL mode: a crash may lose the last commits, never corrupt the file.
            writer
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| sqlite_error("configuring the database connection", e))?;
        }
        let readers = if wal {
            (1..max)
                .map(|_| {
                    let conn = open_connection(path)?;
                    conn.pragma_update(None, "query_only", true)
                        .map_err(|e| sqlite_error("configuring the database connection", e))?;
                    Ok(conn)
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self::new(
            table,
            path.display().to_string(),
            writer,
            readers,
        ))
    }

    fn from_connection(conn: Connection, table: String) -> Self {
        let location = match conn.path() {
            Some(path) if !path.is_empty() => path.to_owned(),
            _ => ":memory:".to_owned(),
        };
        Self::new(table, location, conn, Vec::new())
    }

    fn conns(&self, role: Role) -> &ConnSet {
        match (role, &self.readers) {
            (Role::Read, Some(readers)) => readers,
            _ => &self.writer,
        }
    }

    fn connection_count(&self) -> usize {
        self.writer.size + self.readers.as_ref().map_or(0, |r| r.size)
    }

    /// Runs `f` on a connection of `role`, on the blocking pool.
    async fn run<T, F>(self: &Arc<Self>, role: Role, what: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .conns(role)
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Connection, "waiting for a database connection")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
        let inner = Arc::clone(self);
        scs_tokio::blocking(BACKEND, move || {
            let set = inner.conns(role);
            let mut checkout = Checkout {
                set,
                conn: None,
                _permit: permit,
            };
            checkout.conn = set.idle.lock().pop();
            let conn = checkout.conn.as_mut().ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    "no idle connection although one was reserved",
                )
                .with_backend(BACKEND)
            })?;
            f(&inner, conn).map_err(|e| sqlite_error(what, e))
        })
        .await
    }

    async fn delete_expired(self: &Arc<Self>) -> Result<u64> {
        let now = now_ms();
        self.run(
            Role::Write,
            "deleting expired sessions",
            move |inner, conn| {
                let n = conn
                    .prepare_cached(&inner.sql.delete_expired)?
                    .execute(params![now])?;
                Ok(n as u64)
            },
        )
        .await
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| sqlite_error("opening the database file", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sqlite_error("configuring the database connection", e))?;
    Ok(conn)
}

// ---------------------------------------------------------------------------------------
// Errors, names, time

fn sqlite_error(what: &'static str, e: rusqlite::Error) -> Error {
    let kind = match e.sqlite_error_code() {
        // Still locked after the busy timeout.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Timeout,
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied) => {
            ErrorKind::Connection
        }
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

/// Checks what [`CleanupTask::spawn`] would refuse, before any file is opened.
fn check_cleanup(interval: Option<Duration>) -> Result<()> {
    match interval {
        Some(i) if i.is_zero() => Err(config_error("the cleanup interval must not be zero")),
        Some(_) if !scs_tokio::runtime_available() => Err(config_error(
            "the cleanup task needs a Tokio runtime: build the store inside one, or turn cleanup off",
        )),
        _ => Ok(()),
    }
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

/// What a `sqlite:` URL names.
#[derive(Debug, PartialEq)]
enum Target {
    Memory,
    File(PathBuf),
}

/// `sqlite://path`, `sqlite:path`, `sqlite:///absolute/path`, `sqlite::memory:`,
/// `sqlite://:memory:`; the parameters `mode=rwc` (the default) and `mode=memory`.
fn parse_url(url: &str) -> Result<Target> {
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
        config_error("the URL must start with sqlite: (sqlite://sessions.db, sqlite::memory:)")
    })?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, query) = match rest.split_once('?') {
        Some((database, query)) => (database, Some(query)),
        None => (rest, None),
    };
    let mut memory = database == ":memory:";
    for param in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        match param {
            "mode=memory" => memory = true,
            "mode=rwc" => {}
            _ => {
                return Err(config_error(format!(
                    "unsupported URL parameter {param:?}: only mode=rwc and mode=memory are known"
                )));
            }
        }
    }
    if memory {
        Ok(Target::Memory)
    } else if database.is_empty() {
        Err(config_error(
            "the URL names no database file (sqlite://sessions.db)",
        ))
    } else {
        Ok(Target::File(PathBuf::from(database)))
    }
}

// ---------------------------------------------------------------------------------------
// Construction

impl SqliteStore {
    /// A store over a connection you opened, with the defaults: table `sessions`, cleanup
    /// every 5 minutes when created inside a Tokio runtime (outside one there is no cleanup
    /// task; expired rows are still never returned). The connection is used as it is
    /// (set its busy timeout yourself) and serves one statement at a time.
    pub fn new(conn: Connection) -> Self {
        Self::start_default(Inner::from_connection(conn, DEFAULT_TABLE.to_owned()))
    }

    /// A builder over a connection you opened, for the table name and cleanup interval.
    pub fn builder(conn: Connection) -> SqliteStoreBuilder {
        SqliteStoreBuilder::with_source(Source::Connection(conn))
    }

    /// A builder over a database file (created if missing), opened in WAL mode with
    /// several connections when [`build`](SqliteStoreBuilder::build) runs.
    pub fn file_builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::with_source(Source::File(path.as_ref().to_path_buf()))
    }

    /// Opens (creating it if missing) a database file with the defaults: WAL mode, 4
    /// connections (one writer, three readers), a 5 s busy timeout, table `sessions`,
    /// cleanup as in [`new`](Self::new). This opens files: call it at startup, not on a
    /// hot path of the async runtime.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let inner = Inner::open_file(
            path.as_ref(),
            DEFAULT_TABLE.to_owned(),
            DEFAULT_MAX_CONNECTIONS,
        )?;
        Ok(Self::start_default(inner))
    }

    /// A private in-memory database on one connection, with the defaults of
    /// [`new`](Self::new). Its sessions are gone when the store is dropped.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when SQLite cannot open it (out of memory).
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()
            .map_err(|e| sqlite_error("opening an in-memory database", e))?;
        Ok(Self::new(conn))
    }

    /// Opens the database a `sqlite:` URL names, with the defaults of [`open`](Self::open):
    /// `sqlite://sessions.db` (relative), `sqlite:///var/lib/app/sessions.db` (absolute),
    /// `sqlite::memory:`. The file is opened on the blocking pool.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL; [`ErrorKind::Connection`] when the file
    /// cannot be opened.
    pub async fn from_url(url: &str) -> Result<Self> {
        match parse_url(url)? {
            Target::Memory => Self::open_in_memory(),
            Target::File(path) => {
                let inner = scs_tokio::blocking(BACKEND, move || {
                    Inner::open_file(&path, DEFAULT_TABLE.to_owned(), DEFAULT_MAX_CONNECTIONS)
                })
                .await?;
                Ok(Self::start_default(inner))
            }
        }
    }

    fn start_default(inner: Inner) -> Self {
        let inner = Arc::new(inner);
        let cleanup = if scs_tokio::runtime_available() {
            spawn_cleanup(&inner, DEFAULT_CLEANUP_INTERVAL)
                .ok()
                .map(Arc::new)
        } else {
            None
        };
        Self { inner, cleanup }
    }

    fn start(inner: Inner, interval: Option<Duration>) -> Result<Self> {
        let inner = Arc::new(inner);
        let cleanup = match interval {
            Some(interval) => Some(Arc::new(spawn_cleanup(&inner, interval)?)),
            None => None,
        };
        Ok(Self { inner, cleanup })
    }

    /// Creates the table and its expiry index when they do not exist, and adds the
    /// `version` column to a table made by an earlier version of this crate. Idempotent.
    /// Nothing is created anywhere else: call this once at startup (or create the schema
    /// yourself, see the crate docs).
    ///
    /// # Errors
    /// [`ErrorKind::Backend`] when SQLite refuses the statements.
    pub async fn migrate(&self) -> Result<()> {
        self.inner
            .run(Role::Write, "creating the sessions table", |inner, conn| {
                conn.execute(&inner.sql.create_table, [])?;
                conn.execute(&inner.sql.create_index, [])?;
                let has_version = |conn: &Connection| {
                    conn.query_row(&inner.sql.has_version_column, [&inner.table], |row| {
                        row.get::<_, i64>(0)
                    })
                    .map(|n| n > 0)
                };
                if !has_version(conn)?
                    && let Err(e) = conn.execute(&inner.sql.add_version_column, [])
                {
                    // Another process may have added it meanwhile.
                    if !has_version(conn)? {
                        return Err(e);
                    }
                }
                Ok(())
            })
            .await
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

    /// Runs `f` on the store's (writer) connection, on the blocking pool: for statements
    /// of your own, such as a count or a custom schema. Store calls wait meanwhile.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> scs_core::Result<()> {
    /// let store = scs_sqlitestore::SqliteStore::open_in_memory()?;
    /// store.migrate().await?;
    /// let rows: i64 = store
    ///     .call(|conn| conn.query_row("SELECT COUNT(*) FROM sessions", [], |row| row.get(0)))
    ///     .await?;
    /// assert_eq!(rows, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `f`'s error, mapped like the store's own.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner
            .run(
                Role::Write,
                "running a caller's statement",
                move |_, conn| f(conn),
            )
            .await
    }
}

fn spawn_cleanup(inner: &Arc<Inner>, interval: Duration) -> Result<CleanupTask> {
    let inner = Arc::clone(inner);
    CleanupTask::spawn(BACKEND, interval, move || {
        let inner = inner.clone();
        async move { inner.delete_expired().await }
    })
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("database", &self.inner.location)
            .field("table", &self.inner.table)
            .field("connections", &self.inner.connection_count())
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Builder

enum Source {
    Connection(Connection),
    File(PathBuf),
}

/// Options of a [`SqliteStore`], from [`SqliteStore::builder`] (a connection of yours) or
/// [`SqliteStore::file_builder`] (a database file).
#[must_use]
pub struct SqliteStoreBuilder {
    source: Source,
    table_name: String,
    cleanup_interval: Option<Duration>,
    max_connections: usize,
}

impl SqliteStoreBuilder {
    fn with_source(source: Source) -> Self {
        Self {
            source,
            table_name: DEFAULT_TABLE.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

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

    /// How many connections a database file gets: one writer and `n - 1` readers
    /// (default 4; 1 means the writer does everything). A connection of yours is always
    /// the only one.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Opens the file (for [`SqliteStore::file_builder`]) and starts the cleanup task.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid table name, zero connections, a zero cleanup
    /// interval, or a cleanup interval without a Tokio runtime;
    /// [`ErrorKind::Connection`] when the file cannot be opened.
    pub fn build(self) -> Result<SqliteStore> {
        validate_table_name(&self.table_name)?;
        check_cleanup(self.cleanup_interval)?;
        if self.max_connections == 0 {
            return Err(config_error("max_connections must be at least 1"));
        }
        let inner = match self.source {
            Source::Connection(conn) => Inner::from_connection(conn, self.table_name),
            Source::File(path) => Inner::open_file(&path, self.table_name, self.max_connections)?,
        };
        SqliteStore::start(inner, self.cleanup_interval)
    }
}

impl std::fmt::Debug for SqliteStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Connection(_) => "connection".to_owned(),
            Source::File(path) => path.display().to_string(),
        };
        f.debug_struct("SqliteStoreBuilder")
            .field("source", &source)
            .field("table_name", &self.table_name)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Store

#[async_trait]
impl Store for SqliteStore {
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
        let (key, now) = (key.to_owned(), now_ms());
        self.inner
            .run(Role::Read, "finding a session", move |inner, conn| {
                conn.prepare_cached(&inner.sql.find)?
                    .query_row(params![key, now], |row| row.get(0))
                    .optional()
            })
            .await
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let (key, data, expiry) = (key.to_owned(), data.to_vec(), unix_ms(expiry));
        let version = version_to_sql(scs_core::new_version());
        self.inner
            .run(Role::Write, "committing a session", move |inner, conn| {
                conn.prepare_cached(&inner.sql.commit)?
                    .execute(params![key, data, expiry, version])?;
                Ok(())
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.inner
            .run(Role::Write, "deleting a session", move |inner, conn| {
                conn.prepare_cached(&inner.sql.delete)?
                    .execute(params![key])?;
                Ok(())
            })
            .await
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let (key, expiry, now) = (key.to_owned(), unix_ms(expiry), now_ms());
        self.inner
            .run(
                Role::Write,
                "extending a session's expiry",
                move |inner, conn| {
                    let n = conn
                        .prepare_cached(&inner.sql.touch)?
                        .execute(params![expiry, key, now])?;
                    Ok(n > 0)
                },
            )
            .await
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let (key, now) = (key.to_owned(), now_ms());
        self.inner
            .run(Role::Read, "finding a session", move |inner, conn| {
                conn.prepare_cached(&inner.sql.find_record)?
                    .query_row(params![key, now], |row| {
                        Ok(Record::new(
                            row.get(0)?,
                            from_ms(row.get(1)?),
                            version_from_sql(row.get(2)?),
                        ))
                    })
                    .optional()
            })
            .await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        let (key, data, expiry, now) = (key.to_owned(), data.to_vec(), unix_ms(expiry), now_ms());
        let version = scs_core::new_version();
        let new = version_to_sql(version);
        // One statement each, so SQLite's write lock makes it atomic.
        let written = self
            .inner
            .run(Role::Write, "committing a session", move |inner, conn| {
                let n = match expected.map(version_to_sql) {
                    // Already expired: the entry goes, if it is the one expected.
                    Some(old) if expiry <= now => conn
                        .prepare_cached(&inner.sql.delete_if_current)?
                        .execute(params![key, old, now])?,
                    Some(old) => conn
                        .prepare_cached(&inner.sql.commit_if_current)?
                        .execute(params![data, expiry, new, key, old, now])?,
                    None => conn
                        .prepare_cached(&inner.sql.commit_if_absent)?
                        .execute(params![key, data, expiry, new, now])?,
                };
                Ok(n > 0)
            })
            .await?;
        Ok(written.then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for SqliteStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let now = now_ms();
        self.inner
            .run(Role::Read, "listing sessions", move |inner, conn| {
                let mut stmt = conn.prepare_cached(&inner.sql.all)?;
                let rows = stmt.query_map(params![now], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect()
            })
            .await
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

    #[test]
    fn table_names_are_validated() {
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
        let conn = Connection::open_in_memory().unwrap();
        let err = SqliteStore::builder(conn)
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
            Target::File("sessions.db".into())
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/app/s.db?mode=rwc").unwrap(),
            Target::File("/var/lib/app/s.db".into())
        );
        assert_eq!(
            parse_url("sqlite:data/s.db").unwrap(),
            Target::File("data/s.db".into())
        );
        for (bad, says) in [
            ("postgres://localhost/db", "sqlite:"),
            ("sessions.db", "sqlite:"),
            ("sqlite://", "no database file"),
            ("sqlite:", "no database file"),
            ("sqlite://s.db?mode=ro", "mode=ro"),
            ("sqlite://s.db?cache=shared", "cache=shared"),
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
        let store = SqliteStore::from_url(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.exists(), "the file is created");
        assert!(store.cleanup.is_some(), "defaults include the cleanup task");
        assert_eq!(store.inner.connection_count(), DEFAULT_MAX_CONNECTIONS);
        store.migrate().await.unwrap();
        store.commit("k", b"v", in_(HOUR)).await.unwrap();
        assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"v"[..]));

        let mem = SqliteStore::from_url("sqlite::memory:").await.unwrap();
        assert_eq!(
            mem.inner.connection_count(),
            1,
            ":memory: must use one connection"
        );
        mem.migrate().await.unwrap();
        mem.commit("k", b"m", in_(HOUR)).await.unwrap();
        assert_eq!(mem.find("k").await.unwrap().as_deref(), Some(&b"m"[..]));

        let err = SqliteStore::from_url("redis://x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = SqliteStore::from_url("sqlite:///nonexistent-dir-scs/x/s.db")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    }

    #[test]
    fn builder_config_errors_and_no_runtime() {
        let conn = Connection::open_in_memory().unwrap();
        let err = SqliteStore::builder(conn).build().unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Config,
            "no runtime for the cleanup task"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let err = SqliteStore::file_builder(&path)
            .max_connections(0)
            .cleanup_interval(None)
            .build();
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Config);
        let err = SqliteStore::file_builder(&path)
            .cleanup_interval(Some(Duration::ZERO))
            .build();
        assert_eq!(err.unwrap_err().kind(), ErrorKind::Config);
        assert!(!path.exists(), "no file is created for a bad config");
        // `new` outside a runtime has no task, and still works as a value.
        let store = SqliteStore::new(Connection::open_in_memory().unwrap());
        assert!(store.cleanup.is_none());
    }

    #[tokio::test]
    async fn debug_shows_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::file_builder(dir.path().join("d.db"))
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
        assert!(
            shown.contains("web_sessions") && shown.contains("d.db"),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[tokio::test]
    async fn tables_in_one_file_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let open = |table: &str| {
            SqliteStore::file_builder(&path)
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
        let store = SqliteStore::builder(Connection::open_in_memory().unwrap())
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
        let n: i64 = store
            .call(|c| c.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn migrate_upgrades_a_table_without_versions() {
        let store = SqliteStore::builder(Connection::open_in_memory().unwrap())
            .cleanup_interval(None)
            .build()
            .unwrap();
        // The table as the crate made it before versioned commits, with a live row.
        let expiry = unix_ms(in_(HOUR));
        store
            .call(move |c| {
                c.execute(
                    "CREATE TABLE sessions (token TEXT PRIMARY KEY NOT NULL, \
                     data BLOB NOT NULL, expiry INTEGER NOT NULL)",
                    [],
                )?;
                c.execute(
                    "INSERT INTO sessions (token, data, expiry) VALUES ('old', x'01', ?)",
                    [expiry],
                )
            })
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
        let store = SqliteStore::open_in_memory().unwrap();
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
        let rows: i64 = store
            .call(|c| c.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(rows, 0, "the row is deleted, not left expired");
    }

    #[tokio::test]
    async fn a_missing_table_is_a_backend_error() {
        let store = SqliteStore::open_in_memory().unwrap();
        let err = store.find("k").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert_eq!(err.backend(), Some(BACKEND));
        assert_eq!(err.message(), "finding a session");
        assert!(std::error::Error::source(&err).is_some());
    }

    /// On a current-thread runtime, a ticker keeps ticking while large commits and finds
    /// run: the engine work happens off the runtime thread.
    #[tokio::test(flavor = "current_thread")]
    async fn the_runtime_is_never_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::file_builder(dir.path().join("busy.db"))
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
