//! Opening a store from a URL: the scheme picks the backend, the backend's own `from_url` /
//! `open` does the rest.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use scs_core::{CtxStore, Error, ErrorKind, Result};

use crate::url::redact;

/// Default for [`OpenOptions::timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A backend this crate can open, with its URL schemes and the cargo feature that brings it.
///
/// ```
/// use scs_stores::Backend;
///
/// let b = Backend::from_url("postgresql://app@db.internal/app").unwrap();
/// assert_eq!(b, Backend::Postgres);
/// assert_eq!(b.feature(), "postgres");
/// assert_eq!(Backend::from_url("memory://").unwrap().crate_name(), "scs-memstore");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `memory://`: in-process (scs-memstore).
    Memory,
    /// `sqlite://path`, `sqlite::memory:` (scs-sqlitestore).
    Sqlite,
    /// `postgres://`, `postgresql://` (scs-pgstore).
    Postgres,
    /// `mysql://`, `mariadb://` (scs-mysqlstore).
    MySql,
    /// `redis://`, `rediss://` (scs-redisstore).
    Redis,
    /// `memcached://`, `memcache://` (scs-memcachedstore).
    Memcached,
    /// `etcd://host:port[,host:port...]` (scs-etcdstore).
    Etcd,
    /// `nats://` (scs-natsstore).
    Nats,
    /// `mongodb://`, `mongodb+srv://` (scs-mongostore).
    MongoDb,
    /// `sled://path` (scs-sledstore).
    Sled,
    /// `redb://path` (scs-redbstore).
    Redb,
    /// `fjall://path` (scs-fjallstore).
    Fjall,
    /// `leveldb://path` (scs-leveldbstore).
    LevelDb,
}

impl Backend {
    /// Every backend, in the order of the README's table.
    pub const ALL: [Backend; 13] = [
        Self::Memory,
        Self::Sqlite,
        Self::Postgres,
        Self::MySql,
        Self::Redis,
        Self::Memcached,
        Self::Etcd,
        Self::Nats,
        Self::MongoDb,
        Self::Sled,
        Self::Redb,
        Self::Fjall,
        Self::LevelDb,
    ];

    /// The URL schemes of this backend, the first one being the usual spelling.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            Self::Memory => &["memory"],
            Self::Sqlite => &["sqlite"],
            Self::Postgres => &["postgres", "postgresql"],
            Self::MySql => &["mysql", "mariadb"],
            Self::Redis => &["redis", "rediss"],
            Self::Memcached => &["memcached", "memcache"],
            Self::Etcd => &["etcd"],
            Self::Nats => &["nats"],
            Self::MongoDb => &["mongodb", "mongodb+srv"],
            Self::Sled => &["sled"],
            Self::Redb => &["redb"],
            Self::Fjall => &["fjall"],
            Self::LevelDb => &["leveldb"],
        }
    }

    /// The cargo feature of `scs-stores` that brings this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Redis => "redis",
            Self::Memcached => "memcached",
            Self::Etcd => "etcd",
            Self::Nats => "nats",
            Self::MongoDb => "mongodb",
            Self::Sled => "sled",
            Self::Redb => "redb",
            Self::Fjall => "fjall",
            Self::LevelDb => "leveldb",
        }
    }

    /// The store crate behind this backend.
    pub fn crate_name(self) -> &'static str {
        match self {
            Self::Memory => "scs-memstore",
            Self::Sqlite => "scs-sqlitestore",
            Self::Postgres => "scs-pgstore",
            Self::MySql => "scs-mysqlstore",
            Self::Redis => "scs-redisstore",
            Self::Memcached => "scs-memcachedstore",
            Self::Etcd => "scs-etcdstore",
            Self::Nats => "scs-natsstore",
            Self::MongoDb => "scs-mongostore",
            Self::Sled => "scs-sledstore",
            Self::Redb => "scs-redbstore",
            Self::Fjall => "scs-fjallstore",
            Self::LevelDb => "scs-leveldbstore",
        }
    }

    /// True when this build of `scs-stores` has the backend's feature on.
    pub fn is_enabled(self) -> bool {
        match self {
            Self::Memory => cfg!(feature = "memory"),
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::MySql => cfg!(feature = "mysql"),
            Self::Redis => cfg!(feature = "redis"),
            Self::Memcached => cfg!(feature = "memcached"),
            Self::Etcd => cfg!(feature = "etcd"),
            Self::Nats => cfg!(feature = "nats"),
            Self::MongoDb => cfg!(feature = "mongodb"),
            Self::Sled => cfg!(feature = "sled"),
            Self::Redb => cfg!(feature = "redb"),
            Self::Fjall => cfg!(feature = "fjall"),
            Self::LevelDb => cfg!(feature = "leveldb"),
        }
    }

    /// The backends this build can open.
    pub fn enabled() -> impl Iterator<Item = Backend> {
        Self::ALL.into_iter().filter(|b| b.is_enabled())
    }

    /// True for the backends that keep their data in local files (or in the process).
    pub fn is_embedded(self) -> bool {
        matches!(
            self,
            Self::Memory | Self::Sqlite | Self::Sled | Self::Redb | Self::Fjall | Self::LevelDb
        )
    }

    /// The backend a store URL names, by its scheme (case-insensitive). Checks only the
    /// scheme and the `//` after it: the backend's own parser checks the rest when the
    /// store is opened.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty URL, a URL without a scheme, an unknown scheme,
    /// or a scheme not followed by `//`. Whether the feature is on is not checked here
    /// (see [`open`]).
    pub fn from_url(url: &str) -> Result<Backend> {
        let (scheme, rest) = split_scheme(url)?;
        let backend = Self::ALL
            .into_iter()
            .find(|b| b.schemes().contains(&scheme.as_str()))
            .ok_or_else(|| {
                config(format!(
                    "unknown store URL scheme `{scheme}` in `{}`: use one of {}",
                    redact(url),
                    Self::ALL
                        .iter()
                        .map(|b| format!("{}://", b.schemes()[0]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        // `sqlite::memory:` and `sqlite:file.db` are sqlx's spellings; every other URL
        // has an authority or a path after `//`.
        if backend != Self::Sqlite && !rest.starts_with("//") {
            return Err(config(format!(
                "malformed store URL `{}`: expected `{scheme}://` followed by {}",
                redact(url),
                backend.url_shape()
            )));
        }
        Ok(backend)
    }

    /// What follows `scheme://`, for error messages.
    fn url_shape(self) -> &'static str {
        match self {
            Self::Memory => "nothing",
            Self::Sqlite | Self::Redb => "a file path",
            Self::Sled | Self::Fjall | Self::LevelDb => "a directory path",
            Self::Etcd => "host:port[,host:port...]",
            _ => "[user[:password]@]host[:port][/...]",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
}

/// Splits off the lowercased scheme; `rest` is what follows the `:`.
fn split_scheme(url: &str) -> Result<(String, &str)> {
    if url.trim().is_empty() {
        return Err(config(
            "the store URL is empty: use memory://, sqlite://path, postgres://..., redis://...",
        ));
    }
    let scheme_ok = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    };
    match url.split_once(':') {
        Some((scheme, rest)) if scheme_ok(scheme) => Ok((scheme.to_ascii_lowercase(), rest)),
        _ => Err(config(format!(
            "`{}` is not a store URL: it must start with a scheme such as memory://, \
             sqlite://, postgres:// or redis://",
            redact(url)
        ))),
    }
}

fn config(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// How [`open`] opens a store: whether to create the schema, how long to wait.
///
/// ```no_run
/// # async fn f() -> scs_core::Result<()> {
/// use std::time::Duration;
/// use scs_stores::OpenOptions;
///
/// // The schema is managed by the deployment's migrations: do not create it here.
/// let store = OpenOptions::new()
///     .migrate(false)
///     .timeout(Duration::from_secs(5))
///     .open("postgres://app@db.internal/app")
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Run the store's `migrate()` (create the table and expiry index, the collection and
    /// TTL index, or the NATS bucket) after connecting. Default true.
    pub migrate: bool,
    /// Longest the whole open (connect, check, migrate) may take. Default 15 seconds.
    pub timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl OpenOptions {
    /// The defaults: migrate, 15 s timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to create the schema (table, collection, bucket) after connecting.
    #[must_use]
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Longest the whole open may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens the store `url` names. See [`open`].
    ///
    /// # Errors
    /// As [`open`].
    pub async fn open(&self, url: &str) -> Result<Arc<dyn CtxStore>> {
        let backend = Backend::from_url(url)?;
        if !backend.is_enabled() {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            return Err(config(format!(
                "{}:// needs the `{}` feature of scs-stores",
                scheme.to_ascii_lowercase(),
                backend.feature()
            )));
        }
        match tokio::time::timeout(self.timeout, open_enabled(backend, url, self.migrate)).await {
            Ok(result) => result,
            Err(elapsed) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "opening the {backend} store at `{}` took longer than {:?}",
                    redact(url),
                    self.timeout
                ),
            )
            .with_source(elapsed)),
        }
    }
}

/// Opens the store `url` names, with the store's defaults, its cleanup task started (for
/// stores that have one), and its schema created: `scs-stores` is the "just make it work"
/// path. Use [`OpenOptions`] to leave the schema alone or change the timeout.
///
/// | URL | store |
/// |---|---|
/// | `memory://` | `MemoryStore::new()` |
/// | `sqlite://sessions.db`, `sqlite:///abs/path.db`, `sqlite::memory:` | `SqliteStore::from_url` + `migrate` |
/// | `postgres://user:pw@host:5432/db` (`postgresql://`) | `PostgresStore::from_url` + `migrate` |
/// | `mysql://user:pw@host:3306/db` (`mariadb://`) | `MySqlStore::from_url` + `migrate` |
/// | `redis://host:6379/0` (`rediss://`) | `RedisStore::from_url` |
/// | `memcached://host:11211` (`memcache://`) | `MemcachedStore::from_url` |
/// | `etcd://[user:pw@]host:2379[,host:2379]` | `EtcdStore::from_url("http://host:2379,...")` |
/// | `nats://[user:pw@]host:4222` | `NatsStore::from_url` + `migrate` (the bucket) |
/// | `mongodb://host:27017/db` (`mongodb+srv://`) | `MongoStore::from_url` + `migrate` |
/// | `sled://dir`, `sled:///abs/dir` | `SledStore::open(dir)` |
/// | `redb://file`, `redb:///abs/file` | `RedbStore::open(file)` |
/// | `fjall://dir` | `FjallStore::open(dir)` |
/// | `leveldb://dir` | `LevelDbStore::open(dir)` |
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// let store = scs_stores::open("memory://").await?;
/// let manager = scs::SessionManager::with_shared_store(store);
/// # let _ = manager;
///
/// let Err(err) = scs_stores::open("postgres//localhost").await else { panic!() };
/// assert_eq!(err.kind(), scs_core::ErrorKind::Config);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`ErrorKind::Config`] for a malformed URL (naming the problem) or a backend whose
/// feature is off (naming the feature: "postgres:// needs the `postgres` feature of
/// scs-stores"); the store's own error when it cannot connect or create its schema
/// (`Connection`, `Backend`); [`ErrorKind::Timeout`] after 15 seconds.
pub async fn open(url: &str) -> Result<Arc<dyn CtxStore>> {
    OpenOptions::new().open(url).await
}

// ---------------------------------------------------------------------------------------
// Per backend

#[allow(unused_variables)] // `migrate` with only the embedded backends on
async fn open_enabled(backend: Backend, url: &str, migrate: bool) -> Result<Arc<dyn CtxStore>> {
    match backend {
        #[cfg(feature = "memory")]
        Backend::Memory => {
            memory_url(url)?;
            Ok(Arc::new(scs_memstore::MemoryStore::new()))
        }
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let store = scs_sqlitestore::SqliteStore::from_url(url).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let store = scs_pgstore::PostgresStore::from_url(url).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        Backend::MySql => {
            let store = scs_mysqlstore::MySqlStore::from_url(url).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "redis")]
        Backend::Redis => Ok(Arc::new(scs_redisstore::RedisStore::from_url(url).await?)),
        #[cfg(feature = "memcached")]
        Backend::Memcached => Ok(Arc::new(
            scs_memcachedstore::MemcachedStore::from_url(url).await?,
        )),
        #[cfg(feature = "etcd")]
        Backend::Etcd => {
            let endpoints = etcd_endpoints(url)?;
            Ok(Arc::new(
                scs_etcdstore::EtcdStore::from_url(&endpoints).await?,
            ))
        }
        #[cfg(feature = "nats")]
        Backend::Nats => {
            let store = scs_natsstore::NatsStore::from_url(url).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mongodb")]
        Backend::MongoDb => {
            let store = scs_mongostore::MongoStore::from_url(url).await?;
            if migrate {
                store.migrate().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(feature = "sled")]
        Backend::Sled => {
            let path = embedded_path(url, backend)?;
            let store = scs_tokio::blocking(scs_sledstore::BACKEND, move || {
                scs_sledstore::SledStore::open(path)
            })
            .await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "redb")]
        Backend::Redb => {
            let path = embedded_path(url, backend)?;
            let store = scs_tokio::blocking(scs_redbstore::BACKEND, move || {
                scs_redbstore::RedbStore::open(path)
            })
            .await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "fjall")]
        Backend::Fjall => {
            let path = embedded_path(url, backend)?;
            let store = scs_tokio::blocking(scs_fjallstore::BACKEND, move || {
                scs_fjallstore::FjallStore::open(path)
            })
            .await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "leveldb")]
        Backend::LevelDb => {
            let path = embedded_path(url, backend)?;
            let store = scs_tokio::blocking(scs_leveldbstore::BACKEND, move || {
                scs_leveldbstore::LevelDbStore::open(path)
            })
            .await?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)] // with every feature on
        _ => Err(config(format!(
            "{}:// needs the `{}` feature of scs-stores",
            backend.schemes()[0],
            backend.feature()
        ))),
    }
}

/// `memory://` takes nothing else.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn memory_url(url: &str) -> Result<()> {
    let rest = after_slashes(url);
    if rest.is_empty() || rest == "/" {
        Ok(())
    } else {
        Err(config(format!(
            "malformed store URL `{}`: memory:// takes no host, path or options",
            redact(url)
        )))
    }
}

/// The file or directory of an embedded store: everything after `scheme://`, so
/// `sled://data/sessions` is relative to the working directory and `sled:///var/lib/x`
/// absolute.
#[cfg_attr(
    not(any(
        feature = "sled",
        feature = "redb",
        feature = "fjall",
        feature = "leveldb"
    )),
    allow(dead_code)
)]
fn embedded_path(url: &str, backend: Backend) -> Result<std::path::PathBuf> {
    let path = after_slashes(url);
    let scheme = backend.schemes()[0];
    if path.is_empty() {
        return Err(config(format!(
            "malformed store URL `{url}`: {scheme}:// needs {} (`{scheme}://sessions` or \
             `{scheme}:///absolute/path`)",
            backend.url_shape()
        )));
    }
    if path.contains(['?', '#']) {
        return Err(config(format!(
            "malformed store URL `{url}`: {scheme}:// takes a path only, no query or fragment"
        )));
    }
    Ok(std::path::PathBuf::from(path))
}

/// `etcd://[user:pw@]h1:p1,h2:p2[/]` to the `http://` list the etcd store takes.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn etcd_endpoints(url: &str) -> Result<String> {
    let rest = after_slashes(url);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = |what: &str| {
        config(format!(
            "malformed store URL `{}`: {what} (etcd://[user:password@]host:port[,host:port...])",
            redact(url)
        ))
    };
    if rest.contains(['/', '?', '#']) {
        return Err(bad("etcd:// takes no path, query or fragment"));
    }
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, rest),
    };
    let mut out = Vec::new();
    for (i, host) in hosts.split(',').enumerate() {
        if host.trim().is_empty() {
            return Err(bad("a host is missing"));
        }
        match (i, user) {
            (0, Some(user)) => out.push(format!("http://{user}@{host}")),
            _ => out.push(format!("http://{host}")),
        }
    }
    Ok(out.join(","))
}

/// What follows `scheme://` (or `scheme:`).
fn after_slashes(url: &str) -> &str {
    let rest = url.split_once(':').map_or("", |(_, r)| r);
    rest.strip_prefix("//").unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> Error {
        Backend::from_url(url).unwrap_err()
    }

    async fn open_err(url: &str) -> Error {
        match open(url).await {
            Ok(store) => panic!("{url} opened a {} store", store.backend()),
            Err(e) => e,
        }
    }

    #[test]
    fn schemes_pick_backends() {
        for (url, backend) in [
            ("memory://", Backend::Memory),
            ("sqlite://sessions.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("SQLite://x.db", Backend::Sqlite),
            ("postgres://u@h/db", Backend::Postgres),
            ("postgresql://u@h/db", Backend::Postgres),
            ("mysql://root@h/test", Backend::MySql),
            ("mariadb://root@h/test", Backend::MySql),
            ("redis://h:6379", Backend::Redis),
            ("rediss://h:6380", Backend::Redis),
            ("memcached://h:11211", Backend::Memcached),
            ("memcache://h", Backend::Memcached),
            ("etcd://h:2379", Backend::Etcd),
            ("nats://h:4222", Backend::Nats),
            ("mongodb://h:27017", Backend::MongoDb),
            ("mongodb+srv://cluster.example", Backend::MongoDb),
            ("sled://dir", Backend::Sled),
            ("redb:///abs/file.redb", Backend::Redb),
            ("fjall://dir", Backend::Fjall),
            ("leveldb://dir", Backend::LevelDb),
        ] {
            assert_eq!(Backend::from_url(url).unwrap(), backend, "{url}");
        }
    }

    #[test]
    fn malformed_urls_name_the_problem() {
        let e = err("");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("empty"), "{e}");

        let e = err("localhost:5432");
        assert!(
            e.message().contains("unknown store URL scheme `localhost`"),
            "{e}"
        );

        let e = err("/var/lib/sessions.db");
        assert!(e.message().contains("is not a store URL"), "{e}");

        let e = err("cassandra://h");
        assert!(
            e.message().contains("unknown store URL scheme `cassandra`"),
            "{e}"
        );
        assert!(
            e.message().contains("postgres://"),
            "lists the known schemes: {e}"
        );

        let e = err("postgres:localhost");
        assert!(e.message().contains("expected `postgres://`"), "{e}");

        // The password never shows in an error.
        let e = err("postgres:u:hunter2@h");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = err("cassandra://u:hunter2@h");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn bad_urls_fail_before_connecting() {
        let e = memory_url("memory://somewhere").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("memory:// takes no"), "{e}");
        memory_url("memory://").unwrap();
        if cfg!(feature = "memory") {
            let e = open_err("memory://somewhere").await;
            assert!(e.message().contains("memory:// takes no"), "{e}");
        }

        for url in ["sled://", "redb://", "fjall://", "leveldb://"] {
            let e = embedded_path(url, Backend::from_url(url).unwrap()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.message().contains("needs a"), "{e}");
        }
        let e = embedded_path("sled://dir?mode=x", Backend::Sled).unwrap_err();
        assert!(e.message().contains("no query"), "{e}");
        assert_eq!(
            embedded_path("sled:///var/lib/s", Backend::Sled).unwrap(),
            std::path::PathBuf::from("/var/lib/s")
        );
        assert_eq!(
            embedded_path("redb://data/s.redb", Backend::Redb).unwrap(),
            std::path::PathBuf::from("data/s.redb")
        );
    }

    #[test]
    fn etcd_urls_become_http_endpoints() {
        assert_eq!(
            etcd_endpoints("etcd://127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            etcd_endpoints("etcd://u:p@a:1,b:2/").unwrap(),
            "http://u:p@a:1,http://b:2"
        );
        assert!(etcd_endpoints("etcd://a:1,,b:2").is_err());
        assert!(etcd_endpoints("etcd://").is_err());
        assert!(etcd_endpoints("etcd://a:1/prefix").is_err());
    }

    #[tokio::test]
    async fn features_that_are_off_are_named() {
        for backend in Backend::ALL.into_iter().filter(|b| !b.is_enabled()) {
            let url = format!("{}://somewhere", backend.schemes()[0]);
            let e = open_err(&url).await;
            assert_eq!(e.kind(), ErrorKind::Config);
            assert_eq!(
                e.message(),
                format!(
                    "{}:// needs the `{}` feature of scs-stores",
                    backend.schemes()[0],
                    backend.feature()
                )
            );
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn opens_memory() {
        let store = open("memory://").await.unwrap();
        assert_eq!(store.backend(), "memory");
        assert!(store.capabilities().iterate);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn opens_sqlite_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = open(&url).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        // migrate ran: a session round-trips at once.
        let manager = scs::SessionManager::with_shared_store(store);
        let s = manager.load(None).await.unwrap();
        s.put("k", &1).unwrap();
        let (token, _) = s.commit().await.unwrap();
        let again = manager.load(Some(&token)).await.unwrap();
        assert_eq!(again.get::<i32>("k"), Some(1));

        let store = open("sqlite::memory:").await.unwrap();
        assert_eq!(store.backend(), "sqlite");
    }

    /// Every embedded backend this build has opens from a URL and keeps a session.
    #[tokio::test]
    async fn opens_embedded_backends() {
        let dir = tempfile::tempdir().unwrap();
        for backend in Backend::enabled().filter(|b| b.is_embedded()) {
            let scheme = backend.schemes()[0];
            let url = match backend {
                Backend::Memory => "memory://".to_owned(),
                _ => format!("{scheme}://{}", dir.path().join(scheme).display()),
            };
            let store = open(&url).await.unwrap_or_else(|e| panic!("{url}: {e:#}"));
            let manager = scs::SessionManager::with_shared_store(store);
            let s = manager.load(None).await.unwrap();
            s.put("k", &backend.feature()).unwrap();
            let (token, _) = s.commit().await.unwrap();
            let again = manager.load(Some(&token)).await.unwrap();
            assert_eq!(
                again.get_string("k").as_deref(),
                Some(backend.feature()),
                "{url}"
            );
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn without_migrate_the_table_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = OpenOptions::new().migrate(false).open(&url).await.unwrap();
        let manager = scs::SessionManager::with_shared_store(store);
        let s = manager.load(None).await.unwrap();
        s.put("k", &1).unwrap();
        assert!(s.commit().await.is_err());
    }
}
