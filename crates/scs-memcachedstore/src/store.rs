use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_memcached::{AsciiProtocol, Client, Error as McError, MetaProtocol, Status, Value};
use deadpool::Runtime;
use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult};
use scs_core::time::OffsetDateTime;
use scs_core::{Capabilities, Error, ErrorKind, Record, Result, Store, async_trait};

use crate::BACKEND;

/// The key prefix used unless [`MemcachedStoreBuilder::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "scs:session:";

/// memcached's default largest item (`-I 1m`).
const DEFAULT_MAX_ITEM_SIZE: usize = 1024 * 1024;
/// Room left in each item for memcached's item header, the key and the CAS value.
const ITEM_OVERHEAD: usize = 1024;
/// The smallest `max_item_size` accepted (memcached's own floor is 1 KiB).
const MIN_MAX_ITEM_SIZE: usize = 4 * 1024;
/// The longest prefix accepted: memcached keys are at most 250 bytes, and a chunk key adds
/// the store key (43 characters from the manager) and a 28-byte suffix.
const MAX_PREFIX_LEN: usize = 150;
const MAX_KEY_LEN: usize = 250;
/// `.` + generation + `.` + chunk number (up to 10 digits).
const CHUNK_SUFFIX_LEN: usize = 1 + GEN_LEN + 1 + 10;
/// The longest relative `exptime`; memcached reads larger values as absolute unix time.
const MAX_RELATIVE_EXPTIME: u64 = 30 * 24 * 60 * 60;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeouts [`MemcachedStore::from_url`] gives its pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_PORT: u16 = 11211;

// ---------------------------------------------------------------------------------------
// The pool

/// How long a pooled connection may sit idle before [`Manager`] checks it with `version`
/// on checkout (unless [`Manager::idle_before_ping`] sets another): long enough that a busy
/// pool never pings, well under the minutes after which proxies and firewalls drop idle
/// connections. A connection that broke sooner fails its one command, is closed by
/// async-memcached, and is never handed out again.
pub const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// A [`deadpool`] manager of [`async_memcached::Client`] connections, for a [`Pool`].
///
/// A connection that was closed by an incomplete operation (an I/O error, a timeout, a
/// cancelled request) is dropped instead of being handed out again. One that has sat idle
/// for [`IDLE_BEFORE_PING`] or more is checked with `version` first; a busy connection is
/// handed out without a round trip of its own.
pub struct Manager {
    dsn: String,
    idle_before_ping: Duration,
}

impl Manager {
    /// A manager connecting to `dsn`, in the form async-memcached takes:
    /// `tcp://host:port`, `host:port` or `unix:///path/to/socket`.
    pub fn new(dsn: impl Into<String>) -> Self {
        Self {
            dsn: dsn.into(),
            idle_before_ping: IDLE_BEFORE_PING,
        }
    }

    /// How long a connection may sit idle before it is checked with `version` on checkout
    /// (default [`IDLE_BEFORE_PING`]). [`Duration::ZERO`] checks it on every checkout: one
    /// more round trip per store call.
    ///
    /// ```
    /// use scs_memcachedstore::Manager;
    /// use std::time::Duration;
    ///
    /// let manager = Manager::new("tcp://127.0.0.1:11211").idle_before_ping(Duration::ZERO);
    /// # let _ = manager;
    /// ```
    #[must_use]
    pub fn idle_before_ping(mut self, idle: Duration) -> Self {
        self.idle_before_ping = idle;
        self
    }
}

impl std::fmt::Debug for Manager {
    // memcached's text protocol has no credentials, so the address is no secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("dsn", &self.dsn)
            .field("idle_before_ping", &self.idle_before_ping)
            .finish()
    }
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = McError;

    async fn create(&self) -> std::result::Result<Client, McError> {
        Client::new(&self.dsn).await
    }

    async fn recycle(&self, conn: &mut Client, metrics: &Metrics) -> RecycleResult<McError> {
        // async-memcached closes a connection whose operation did not complete (an I/O
        // error, a cancelled call: its reply would otherwise answer the next request); such
        // a connection is never reused.
        if conn.is_closed() {
            return Err(RecycleError::message(
                "the connection was closed by an incomplete operation",
            ));
        }
        // A connection idle for a while may have been dropped by the server or the network
        // meanwhile: a round trip replaces it here instead of failing the caller's command.
        if metrics.last_used() >= self.idle_before_ping {
            conn.version().await?;
        }
        Ok(())
    }
}

/// A pool of memcached connections: what [`MemcachedStore::new`] takes.
///
/// ```no_run
/// use scs_memcachedstore::{Manager, MemcachedStore, Pool};
///
/// let pool = Pool::builder(Manager::new("tcp://127.0.0.1:11211"))
///     .max_size(16)
///     .runtime(scs_memcachedstore::deadpool::Runtime::Tokio1)
///     .wait_timeout(Some(std::time::Duration::from_secs(5)))
///     .build()
///     .expect("a runtime is set");
/// let store = MemcachedStore::new(pool);
/// # let _ = store;
/// ```
pub type Pool = managed::Pool<Manager>;

type Connection = managed::Object<Manager>;

// ---------------------------------------------------------------------------------------
// The store

/// A session store on memcached, through a [`Pool`] of async-memcached connections.
///
/// Each session is one item, `<prefix><store key>`, holding the session's expiry (unix
/// milliseconds, 8 bytes big-endian) followed by the session bytes, with a native
/// `exptime` rounded up to the next second. The expiry in the value is checked on every
/// read, so a session is never returned past its expiry even though memcached's clock ticks
/// in whole seconds. A session larger than one item is split into chunk items written
/// before the item that lists them, so a reader never sees a mix of two versions.
///
/// Versions ([`Store::find_record`], [`Store::commit_if`]) are memcached's CAS values, read
/// and compared with the meta commands (memcached 1.6 or later).
///
/// memcached cannot list keys, so this store does not iterate; there is no cleanup task:
/// memcached expires (and, under memory pressure, evicts) items itself.
///
/// ```no_run
/// # async fn demo() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_memcachedstore::MemcachedStore;
/// use std::time::Duration;
///
/// let store = MemcachedStore::from_url("memcache://127.0.0.1:11211").await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    prefix: String,
    max_item_size: usize,
    timeout: Option<Duration>,
}

impl MemcachedStore {
    /// A store on `pool` with the defaults: prefix `scs:session:`, 1 MiB items, a 3 s
    /// timeout per store call.
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool).build_unchecked()
    }

    /// A builder for the key prefix, the item size and the timeout.
    pub fn builder(pool: Pool) -> MemcachedStoreBuilder {
        MemcachedStoreBuilder {
            pool,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// Connects to the server at `url` (`memcache://host[:port]`, also `memcached://` and
    /// `tcp://`; `unix:///path/to/socket`) with the defaults, and checks the connection
    /// with `version`.
    ///
    /// The pool has deadpool's default size; connecting times out after 5 s, the `version`
    /// check of a pooled connection idle for [`IDLE_BEFORE_PING`] after 3 s, and waiting
    /// for a free pooled connection after 5 s. Build a [`Pool`] yourself and use
    /// [`new`](Self::new) or [`builder`](Self::builder) for other settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL (memcached URLs carry no user or
    /// password), [`ErrorKind::Connection`] (or [`ErrorKind::Timeout`]) when the server
    /// cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        let dsn = dsn_from_url(url)?;
        let pool = Pool::builder(Manager::new(dsn))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "building the memcached connection pool")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
        let store = Self::new(pool);
        store.ping().await?;
        Ok(store)
    }

    /// Sends `version`: checks that the server answers.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        const WHAT: &str = "pinging the server";
        self.inner
            .timed(WHAT, async {
                let mut conn = self.inner.conn(WHAT).await?;
                conn.version().await.map_err(|e| mc_error(WHAT, e))?;
                Ok(())
            })
            .await
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("MemcachedStore")
            .field("prefix", &self.inner.prefix)
            .field("max_item_size", &self.inner.max_item_size)
            .field("timeout", &self.inner.timeout)
            .field("pool_max_size", &status.max_size)
            .field("pool_size", &status.size)
            .finish()
    }
}

/// Options of a [`MemcachedStore`].
#[must_use]
pub struct MemcachedStoreBuilder {
    pool: Pool,
    prefix: String,
    max_item_size: usize,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for MemcachedStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStoreBuilder")
            .field("prefix", &self.prefix)
            .field("max_item_size", &self.max_item_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MemcachedStoreBuilder {
    /// The prefix of every key this store writes (default `scs:session:`): 1 to 150
    /// printable ASCII characters, no spaces.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The server's largest item, its `-I` setting (default 1 MiB, memcached's default).
    /// Sessions that do not fit in one item (less 1 KiB for the item header and key) are
    /// split into chunks.
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// How long one store call may take before it fails with [`ErrorKind::Timeout`]
    /// (default 3 s; `None` for no limit). async-memcached has no timeouts of its own.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the store. Nothing is sent to the server.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty, too long or non-printable prefix, a
    /// `max_item_size` under 4 KiB, or a zero timeout.
    pub fn build(self) -> Result<MemcachedStore> {
        validate_prefix(&self.prefix)?;
        if self.max_item_size < MIN_MAX_ITEM_SIZE {
            return Err(config_error(format!(
                "max_item_size must be at least {MIN_MAX_ITEM_SIZE} bytes, was {}",
                self.max_item_size
            )));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(config_error("the timeout must not be zero"));
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> MemcachedStore {
        MemcachedStore {
            inner: Arc::new(Inner {
                pool: self.pool,
                prefix: self.prefix,
                max_item_size: self.max_item_size,
                timeout: self.timeout,
            }),
        }
    }
}

fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err(config_error(format!(
            "the key prefix must be 1 to {MAX_PREFIX_LEN} characters, was {}",
            prefix.len()
        )));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(config_error(
            "the key prefix must be printable ASCII without spaces (memcached keys are text tokens)",
        ));
    }
    Ok(())
}

/// The async-memcached DSN for a `memcache://` URL.
fn dsn_from_url(url: &str) -> Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::new(ErrorKind::Config, "parsing the memcached URL")
            .with_backend(BACKEND)
            .with_source(e)
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config_error(
            "the memcached URL must not carry a user or password: the text protocol has no authentication",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(config_error("the memcached URL takes no query or fragment"));
    }
    match parsed.scheme() {
        "memcache" | "memcached" | "tcp" => {
            let host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| config_error("the memcached URL has no host"))?;
            if !matches!(parsed.path(), "" | "/") {
                return Err(config_error("the memcached URL takes no path"));
            }
            let port = parsed.port().unwrap_or(DEFAULT_PORT);
            Ok(format!("tcp://{host}:{port}"))
        }
        "unix" => {
            if parsed.path().is_empty() || parsed.path() == "/" {
                return Err(config_error(
                    "the unix URL has no socket path (unix:///path/to/memcached.sock)",
                ));
            }
            Ok(format!("unix://{}", parsed.path()))
        }
        other => Err(config_error(format!(
            "unsupported URL scheme `{other}`: use memcache://, memcached://, tcp:// or unix://"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Store operations

impl Inner {
    async fn conn(&self, what: &'static str) -> Result<Connection> {
        self.pool.get().await.map_err(|e| pool_error(what, e))
    }

    async fn timed<T>(&self, what: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        match self.timeout {
            None => f.await,
            // Cancelling an async-memcached operation closes its connection, which the pool
            // then drops: nothing half-read is ever reused.
            Some(limit) => tokio::time::timeout(limit, f).await.map_err(|e| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("{what}: no answer within {limit:?}"),
                )
                .with_backend(BACKEND)
                .with_source(e)
            })?,
        }
    }

    /// The item key of a session, after checking that the store key fits memcached.
    fn key(&self, key: &str) -> Result<String> {
        let fits = self.prefix.len() + key.len() + CHUNK_SUFFIX_LEN <= MAX_KEY_LEN;
        // `.` separates chunk keys; memcached keys are text tokens.
        if key.is_empty() || !fits || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the store key must be printable ASCII without `.` or spaces, short enough for memcached's 250-byte keys",
            )
            .with_backend(BACKEND));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// The data a single item can hold.
    fn item_capacity(&self) -> usize {
        self.max_item_size.saturating_sub(ITEM_OVERHEAD)
    }

    /// The live session under `key` with its expiry and version (the CAS value of its
    /// item: of the manifest for a chunked session), in one `mg` (and one more request for
    /// the chunks of a large session).
    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let item = self.key(key)?;
        let mut conn = self.conn(WHAT).await?;
        // A second look when a chunk is missing: the session was replaced while it was read.
        for _ in 0..2 {
            let Some(current) = meta_get(&mut conn, &item, WHAT).await? else {
                return Ok(None);
            };
            let now = now_millis();
            match decode(&current.value)? {
                Stored::Inline { expiry, data } => {
                    return if expiry > now {
                        record(data.to_vec(), expiry, current.cas).map(Some)
                    } else {
                        Ok(None)
                    };
                }
                Stored::Chunked(manifest) => {
                    if manifest.expiry <= now {
                        return Ok(None);
                    }
                    if let Some(data) = self.read_chunks(&mut conn, &item, &manifest).await? {
                        return record(data, manifest.expiry, current.cas).map(Some);
                    }
                }
            }
        }
        // Still incomplete: memcached evicted a chunk (it may drop any item under memory
        // pressure). The session is gone, as if the whole item had been evicted.
        Ok(None)
    }

    async fn read_chunks(
        &self,
        conn: &mut Connection,
        item: &str,
        manifest: &Manifest,
    ) -> Result<Option<Vec<u8>>> {
        const WHAT: &str = "reading the chunks of a session";
        let keys: Vec<String> = (0..manifest.count)
            .map(|i| chunk_key(item, &manifest.generation, i))
            .collect();
        let values = get_multi(conn, &keys, WHAT).await?;
        let mut data = Vec::with_capacity(usize::try_from(manifest.len).unwrap_or(0));
        for key in &keys {
            let Some(chunk) = values
                .iter()
                .find(|v| v.key == key.as_bytes())
                .and_then(|v| v.data.as_deref())
            else {
                return Ok(None);
            };
            let (_, piece) = split_expiry(chunk)?;
            data.extend_from_slice(piece);
        }
        if data.len() as u64 != manifest.len {
            return Err(codec_error(
                "the chunks of a session do not add up to its length",
            ));
        }
        Ok(Some(data))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        const WHAT: &str = "committing a session";
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        if expiry <= now {
            // Already expired: remove what is there, never write an item without a TTL.
            return self.delete(key).await;
        }
        let item = self.key(key)?;
        let ttl = exptime(expiry, now);
        let mut conn = self.conn(WHAT).await?;
        let capacity = self.item_capacity();
        if EXPIRY_LEN + data.len() <= capacity {
            // One `set` replaces data and expiry together.
            return set(&mut conn, &item, &encode_inline(expiry, data), ttl, WHAT).await;
        }
        // Too big for one item: chunks under a fresh generation first, then the manifest
        // that names them, so a reader sees either the old version or the new one whole.
        let previous = manifest_of(&mut conn, &item, WHAT).await?;
        let manifest = write_chunks(&mut conn, &item, data, expiry, ttl, capacity, WHAT).await?;
        set(&mut conn, &item, &encode_manifest(&manifest), ttl, WHAT).await?;
        if let Some(old) = previous {
            // The version this one replaced; chunks of versions it never saw (concurrent
            // commits, or a small commit in between) expire with their own TTL.
            delete_chunks(&mut conn, &item, &old, WHAT).await?;
        }
        Ok(())
    }

    /// Writes only when the live session's CAS value is `expected` (`None`: only when no
    /// live session is stored). A small session is one `ms` with `C<cas>` (compare) or `ME`
    /// (add) and `c` (return the new CAS value): memcached checks and stores atomically and
    /// answers with the new version in the same reply.
    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        let item = self.key(key)?;
        let mut conn = self.conn(WHAT).await?;
        if expiry <= now {
            return delete_if(&mut conn, &item, expected, now, WHAT).await;
        }
        let ttl = exptime(expiry, now);
        let capacity = self.item_capacity();
        if EXPIRY_LEN + data.len() <= capacity {
            let value = encode_inline(expiry, data);
            if let Some(version) = expected {
                return store_if(&mut conn, &item, &value, ttl, Some(version), WHAT).await;
            }
            if let Some(version) = store_if(&mut conn, &item, &value, ttl, None, WHAT).await? {
                return Ok(Some(version));
            }
            // `add` found an item. An expired session counts as absent: replace it, if it
            // is still the one just read.
            return match meta_get(&mut conn, &item, WHAT).await? {
                Some(current) if !current.is_live(now)? => {
                    let written =
                        store_if(&mut conn, &item, &value, ttl, Some(current.cas), WHAT).await?;
                    if written.is_some() {
                        delete_chunks_of(&mut conn, &item, &current, WHAT).await?;
                    }
                    Ok(written)
                }
                // Live, or gone since: a conflict either way (the caller reloads).
                _ => Ok(None),
            };
        }
        // Too big for one item: read what is there first (its CAS value and the chunks it
        // lists), and write nothing when it is not the expected version. Then the chunks
        // under a fresh generation, then the manifest, stored only if the item still has
        // the CAS value read (or, when nothing was there, only if it is still absent).
        let current = meta_get(&mut conn, &item, WHAT).await?;
        let live = match &current {
            Some(c) if c.is_live(now)? => Some(c.cas),
            _ => None,
        };
        if live != expected {
            return Ok(None);
        }
        let manifest = write_chunks(&mut conn, &item, data, expiry, ttl, capacity, WHAT).await?;
        let compare = current.as_ref().map(|c| c.cas);
        match store_if(
            &mut conn,
            &item,
            &encode_manifest(&manifest),
            ttl,
            compare,
            WHAT,
        )
        .await?
        {
            Some(version) => {
                // The version replaced is exactly the one read: remove its chunks.
                if let Some(old) = &current {
                    delete_chunks_of(&mut conn, &item, old, WHAT).await?;
                }
                Ok(Some(version))
            }
            None => {
                // Another commit won: the chunks just written belong to nothing.
                delete_chunks(&mut conn, &item, &manifest, WHAT).await?;
                Ok(None)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        const WHAT: &str = "deleting a session";
        let item = self.key(key)?;
        let mut conn = self.conn(WHAT).await?;
        let previous = manifest_of(&mut conn, &item, WHAT).await?;
        delete_item(&mut conn, &item, WHAT).await?;
        if let Some(old) = previous {
            delete_chunks(&mut conn, &item, &old, WHAT).await?;
        }
        Ok(())
    }
}

async fn get(conn: &mut Connection, item: &str, what: &'static str) -> Result<Option<Vec<u8>>> {
    let value = conn.get(item).await.map_err(|e| mc_error(what, e))?;
    Ok(value.and_then(|v| v.data))
}

async fn get_multi(
    conn: &mut Connection,
    items: &[String],
    what: &'static str,
) -> Result<Vec<Value>> {
    match conn.get_multi(items).await {
        Ok(values) => Ok(values),
        // async-memcached answers "none of them" with NotFound.
        Err(McError::Protocol(Status::NotFound)) => Ok(Vec::new()),
        Err(e) => Err(mc_error(what, e)),
    }
}

async fn set(
    conn: &mut Connection,
    item: &str,
    value: &[u8],
    ttl: i64,
    what: &'static str,
) -> Result<()> {
    conn.set(item, value, Some(ttl), None)
        .await
        .map_err(|e| mc_error(what, e))
}

async fn delete_item(conn: &mut Connection, item: &str, what: &'static str) -> Result<()> {
    match conn.delete(item).await {
        Ok(()) | Err(McError::Protocol(Status::NotFound)) => Ok(()),
        Err(e) => Err(mc_error(what, e)),
    }
}

/// The chunk manifest stored under `item`, if that is what it holds. Anything else
/// (nothing, an inline session, bytes that do not decode) has no chunks to remove.
async fn manifest_of(
    conn: &mut Connection,
    item: &str,
    what: &'static str,
) -> Result<Option<Manifest>> {
    Ok(get(conn, item, what)
        .await?
        .and_then(|value| match decode(&value) {
            Ok(Stored::Chunked(m)) => Some(m),
            _ => None,
        }))
}

/// What `mg <item> v c` found: the stored bytes and the item's CAS value.
struct Current {
    value: Vec<u8>,
    cas: u64,
}

impl Current {
    /// Whether the session it holds has not expired at `now`.
    fn is_live(&self, now: u64) -> Result<bool> {
        Ok(match decode(&self.value)? {
            Stored::Inline { expiry, .. } => expiry > now,
            Stored::Chunked(manifest) => manifest.expiry > now,
        })
    }
}

/// The value and CAS value of `item`, in one `mg` (a meta get with `v` and `c`).
async fn meta_get(
    conn: &mut Connection,
    item: &str,
    what: &'static str,
) -> Result<Option<Current>> {
    let Some(found) = conn
        .meta_get(item, false, None, Some(&["v", "c"]))
        .await
        .map_err(|e| mc_error(what, e))?
    else {
        return Ok(None);
    };
    let cas = found.cas.ok_or_else(no_cas_error)?;
    Ok(Some(Current {
        value: found.data.unwrap_or_default(),
        cas,
    }))
}

/// Stores `value` under `item` only if the item's CAS value is `compare` (`None`: only if
/// there is no item), in one `ms`; returns the new CAS value, or `None` when the item did
/// not match (nothing stored).
async fn store_if(
    conn: &mut Connection,
    item: &str,
    value: &[u8],
    ttl: i64,
    compare: Option<u64>,
    what: &'static str,
) -> Result<Option<u64>> {
    let ttl = format!("T{ttl}");
    let condition = match compare {
        Some(cas) => format!("C{cas}"),
        // Mode E: add.
        None => "ME".to_owned(),
    };
    let flags = [ttl.as_str(), condition.as_str(), "c"];
    match conn.meta_set(item, value, false, None, Some(&flags)).await {
        Ok(Some(reply)) => match reply.status {
            Some(Status::Stored) => reply.cas.map(Some).ok_or_else(no_cas_error),
            Some(Status::Exists | Status::NotFound | Status::NotStored) => Ok(None),
            _ => Err(Error::new(
                ErrorKind::Backend,
                format!("{what}: an unexpected reply to a compare-and-set"),
            )
            .with_backend(BACKEND)),
        },
        Ok(None) => Err(no_cas_error()),
        Err(McError::Protocol(Status::Exists | Status::NotFound | Status::NotStored)) => Ok(None),
        Err(e) => Err(mc_error(what, e)),
    }
}

/// Deletes `item` only if its CAS value is still `cas`; false when it changed or went.
async fn delete_item_if(
    conn: &mut Connection,
    item: &str,
    cas: u64,
    what: &'static str,
) -> Result<bool> {
    let compare = format!("C{cas}");
    match conn.meta_delete(item, false, None, Some(&[&compare])).await {
        Ok(_) => Ok(true),
        Err(McError::Protocol(Status::Exists | Status::NotFound)) => Ok(false),
        Err(e) => Err(mc_error(what, e)),
    }
}

/// `commit_if` with an expiry already past: deletes the item when the live version is
/// `expected` (an expired item when `expected` is `None`), by its CAS value.
async fn delete_if(
    conn: &mut Connection,
    item: &str,
    expected: Option<u64>,
    now: u64,
    what: &'static str,
) -> Result<Option<u64>> {
    let current = meta_get(conn, item, what).await?;
    let live = match &current {
        Some(c) if c.is_live(now)? => Some(c.cas),
        _ => None,
    };
    if live != expected {
        return Ok(None);
    }
    if let Some(current) = current {
        if !delete_item_if(conn, item, current.cas, what).await? {
            return Ok(None);
        }
        delete_chunks_of(conn, item, &current, what).await?;
    }
    // Nothing stored any more: a version no item has, never one the key had.
    Ok(Some(scs_core::new_version()))
}

/// Writes `data` as chunks of `capacity` bytes under a fresh generation and returns the
/// manifest that names them (not yet stored).
async fn write_chunks(
    conn: &mut Connection,
    item: &str,
    data: &[u8],
    expiry: u64,
    ttl: i64,
    capacity: usize,
    what: &'static str,
) -> Result<Manifest> {
    let generation = new_generation()?;
    let chunk_size = capacity - EXPIRY_LEN;
    let mut count = 0u32;
    for (i, piece) in data.chunks(chunk_size).enumerate() {
        let i = u32::try_from(i).map_err(|_| {
            Error::new(ErrorKind::TooLarge, "a session of over 4 billion chunks")
                .with_backend(BACKEND)
        })?;
        let chunk = chunk_key(item, &generation, i);
        set(conn, &chunk, &encode_inline(expiry, piece), ttl, what).await?;
        count = i + 1;
    }
    Ok(Manifest {
        expiry,
        generation,
        count,
        len: data.len() as u64,
    })
}

/// Deletes the chunks `current` lists, when it is a manifest.
async fn delete_chunks_of(
    conn: &mut Connection,
    item: &str,
    current: &Current,
    what: &'static str,
) -> Result<()> {
    if let Ok(Stored::Chunked(old)) = decode(&current.value) {
        delete_chunks(conn, item, &old, what).await?;
    }
    Ok(())
}

async fn delete_chunks(
    conn: &mut Connection,
    item: &str,
    manifest: &Manifest,
    what: &'static str,
) -> Result<()> {
    for i in 0..manifest.count {
        delete_item(conn, &chunk_key(item, &manifest.generation, i), what).await?;
    }
    Ok(())
}

fn chunk_key(item: &str, generation: &str, i: u32) -> String {
    format!("{item}.{generation}.{i}")
}

// ---------------------------------------------------------------------------------------
// Expiry

fn expiry_millis(expiry: OffsetDateTime) -> u64 {
    let ms = expiry.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(ms.clamp(0, i128::from(MAX_EXPIRY))).unwrap_or(0)
}

fn now_millis() -> u64 {
    expiry_millis(OffsetDateTime::now_utc())
}

/// A [`Record`] of data stored until `expiry` (unix ms) at `version`.
fn record(data: Vec<u8>, expiry: u64, version: u64) -> Result<Record> {
    let expiry = OffsetDateTime::from_unix_timestamp_nanos(i128::from(expiry) * 1_000_000)
        .map_err(|_| codec_error("a stored expiry is out of range"))?;
    Ok(Record::new(data, expiry, version))
}

/// memcached's `exptime` for an expiry still ahead: whole seconds, rounded up and one more,
/// because memcached's clock ticks once a second and may drop an item up to a second before
/// its nominal time. Reads check the exact millisecond in the value, so the item outliving
/// the session by a second is never seen. Up to 30 days it is relative; beyond, memcached
/// takes absolute unix seconds.
fn exptime(expiry: u64, now: u64) -> i64 {
    let relative = expiry.saturating_sub(now).div_ceil(1000) + 1;
    let secs = if relative <= MAX_RELATIVE_EXPTIME {
        relative
    } else {
        expiry.div_ceil(1000) + 1
    };
    i64::try_from(secs).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------
// Value layout
//
// inline:   expiry (u64 BE, unix ms) | data
// manifest: expiry | CHUNKED (u64 BE) | generation (16 bytes) | count (u32 BE) | len (u64 BE)
// chunk:    expiry (u64 BE) | a slice of the data, stored under `<item>.<generation>.<i>`

/// Bit 63 of the expiry word marks a manifest; no expiry comes near it.
const CHUNKED: u64 = 1 << 63;
const MAX_EXPIRY: u64 = CHUNKED - 1;
const EXPIRY_LEN: usize = 8;
const GEN_LEN: usize = 16;

enum Stored<'a> {
    Inline { expiry: u64, data: &'a [u8] },
    Chunked(Manifest),
}

#[derive(Debug, PartialEq)]
struct Manifest {
    expiry: u64,
    generation: String,
    count: u32,
    len: u64,
}

fn split_expiry(value: &[u8]) -> Result<(u64, &[u8])> {
    let (word, rest) = value
        .split_first_chunk::<EXPIRY_LEN>()
        .ok_or_else(|| codec_error("a stored value is shorter than its 8-byte expiry"))?;
    Ok((u64::from_be_bytes(*word), rest))
}

fn decode(value: &[u8]) -> Result<Stored<'_>> {
    let (word, rest) = split_expiry(value)?;
    if word & CHUNKED == 0 {
        return Ok(Stored::Inline {
            expiry: word,
            data: rest,
        });
    }
    let malformed = || codec_error("a stored chunk manifest is malformed");
    let (generation, rest) = rest.split_first_chunk::<GEN_LEN>().ok_or_else(malformed)?;
    let (count, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    // The generation becomes part of a key: only base64url characters.
    if !rest.is_empty()
        || !generation
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(malformed());
    }
    Ok(Stored::Chunked(Manifest {
        expiry: word & !CHUNKED,
        generation: String::from_utf8_lossy(generation).into_owned(),
        count: u32::from_be_bytes(*count),
        len: u64::from_be_bytes(*len),
    }))
}

fn encode_inline(expiry: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_LEN + data.len());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_LEN + GEN_LEN + 12);
    out.extend_from_slice(&(m.expiry | CHUNKED).to_be_bytes());
    out.extend_from_slice(m.generation.as_bytes());
    out.extend_from_slice(&m.count.to_be_bytes());
    out.extend_from_slice(&m.len.to_be_bytes());
    out
}

/// A fresh chunk generation: 16 random base64url characters.
fn new_generation() -> Result<String> {
    let token = scs_core::token::try_generate().map_err(|e| e.with_backend(BACKEND))?;
    Ok(token.chars().take(GEN_LEN).collect())
}

// ---------------------------------------------------------------------------------------
// The store trait

#[async_trait]
impl Store for MemcachedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // No iteration: memcached cannot list keys. No touch: memcached's `touch` moves the
        // item's TTL but not the millisecond expiry inside the value, so a read would still
        // see the old expiry; extending it means rewriting the value, which is a commit.
        // Reads are exact to the millisecond (the expiry in the value), so the resolution
        // stays 1 ms although memcached's own TTL ticks in seconds.
        Capabilities::new().with_native_ttl().with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let found = self
            .inner
            .timed("finding a session", self.inner.find_record(key))
            .await?;
        Ok(found.map(|record| record.data))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        self.inner
            .timed("committing a session", self.inner.commit(key, data, expiry))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner
            .timed("deleting a session", self.inner.delete(key))
            .await
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        self.inner
            .timed("finding a session", self.inner.find_record(key))
            .await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        self.inner
            .timed(
                "committing a session",
                self.inner.commit_if(key, data, expiry, expected),
            )
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message).with_backend(BACKEND)
}

fn codec_error(message: &'static str) -> Error {
    Error::new(ErrorKind::Codec, message).with_backend(BACKEND)
}

fn no_cas_error() -> Error {
    Error::new(
        ErrorKind::Backend,
        "the server sent no CAS value with a meta command (memcached 1.6 or later is needed)",
    )
    .with_backend(BACKEND)
}

fn mc_error(what: &'static str, e: McError) -> Error {
    let kind = match &e {
        McError::Io(io) | McError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ErrorKind::Timeout
        }
        McError::Connect(_) | McError::Io(_) | McError::ConnectionClosed => ErrorKind::Connection,
        McError::Protocol(_) | McError::ParseError(_) => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

fn pool_error(what: &'static str, e: PoolError<McError>) -> Error {
    let kind = match &e {
        PoolError::Timeout(_) => ErrorKind::Timeout,
        PoolError::NoRuntimeSpecified => ErrorKind::Config,
        // Failing to connect, a closed pool, a failed hook.
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("{what}: getting a connection"))
        .with_backend(BACKEND)
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconnected_pool() -> Pool {
        Pool::builder(Manager::new("tcp://127.0.0.1:1"))
            .runtime(Runtime::Tokio1)
            .build()
            .unwrap()
    }

    #[test]
    fn urls_become_dsns() {
        assert_eq!(
            dsn_from_url("memcache://127.0.0.1:11211").unwrap(),
            "tcp://127.0.0.1:11211"
        );
        assert_eq!(
            dsn_from_url("memcached://cache.local").unwrap(),
            "tcp://cache.local:11211"
        );
        assert_eq!(
            dsn_from_url("tcp://10.0.0.1:4000/").unwrap(),
            "tcp://10.0.0.1:4000"
        );
        assert_eq!(
            dsn_from_url("unix:///run/mc.sock").unwrap(),
            "unix:///run/mc.sock"
        );
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in [
            "not a url",
            "http://127.0.0.1:11211",
            "memcache://127.0.0.1:notaport",
            "memcache://user:hunter2@127.0.0.1:11211",
            "memcache://127.0.0.1:11211/db",
            "memcache://127.0.0.1:11211?x=1",
            "unix://",
        ] {
            let err = MemcachedStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:#}");
            assert_eq!(err.backend(), Some(BACKEND));
            assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error() {
        let err = MemcachedStore::from_url("memcache://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err:#}"
        );
        assert!(err.message().contains("pinging"), "{err:#}");
    }

    #[tokio::test]
    async fn prefix_item_size_and_timeout_are_checked() {
        let build = |b: MemcachedStoreBuilder| b.build().map(drop).unwrap_err().kind();
        let b = || MemcachedStore::builder(unconnected_pool());
        assert_eq!(build(b().prefix("")), ErrorKind::Config);
        assert_eq!(build(b().prefix("has space:")), ErrorKind::Config);
        assert_eq!(build(b().prefix("x".repeat(151))), ErrorKind::Config);
        assert_eq!(build(b().max_item_size(1000)), ErrorKind::Config);
        assert_eq!(build(b().timeout(Some(Duration::ZERO))), ErrorKind::Config);
        let store = b().prefix("app:").timeout(None).build().unwrap();
        assert_eq!(store.prefix(), "app:");
        assert_eq!(store.inner.key("k").unwrap(), "app:k");
        assert_eq!(
            MemcachedStore::new(unconnected_pool()).prefix(),
            DEFAULT_PREFIX
        );
    }

    #[tokio::test]
    async fn keys_that_memcached_cannot_take_are_invalid_input() {
        let store = MemcachedStore::new(unconnected_pool());
        for key in ["", "a b", "a\r\nflush_all", "a.b", &"k".repeat(220)] {
            let err = store.inner.key(key).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{key:?}");
        }
        assert!(store.inner.key(&"k".repeat(43)).is_ok());
    }

    #[tokio::test]
    async fn debug_shows_settings_only() {
        let store = MemcachedStore::new(unconnected_pool());
        let debug = format!("{store:?}");
        assert!(debug.contains("scs:session:"), "{debug}");
        assert!(format!("{:?}", MemcachedStore::builder(unconnected_pool())).contains("prefix"));
    }

    #[test]
    fn exptime_rounds_up_plus_one_second_and_goes_absolute_after_30_days() {
        let now = 1_700_000_000_000;
        assert_eq!(exptime(now + 1, now), 2);
        assert_eq!(exptime(now + 1000, now), 2);
        assert_eq!(exptime(now + 1001, now), 3);
        let day = 86_400_000;
        assert_eq!(exptime(now + 30 * day - 1000, now), 30 * 86_400);
        let edge = now + 30 * day;
        assert_eq!(exptime(edge, now), i64::try_from(edge / 1000 + 1).unwrap());
        let far = now + 31 * day + 500;
        assert_eq!(
            exptime(far, now),
            i64::try_from(far.div_ceil(1000) + 1).unwrap()
        );
    }

    #[test]
    fn values_round_trip_and_short_ones_are_codec_errors() {
        let v = encode_inline(42, b"data");
        assert!(matches!(
            decode(&v).unwrap(),
            Stored::Inline {
                expiry: 42,
                data: b"data"
            }
        ));
        assert!(matches!(
            decode(&encode_inline(7, b"")).unwrap(),
            Stored::Inline {
                expiry: 7,
                data: b""
            }
        ));
        for short in [&b""[..], b"1234567"] {
            assert_eq!(
                decode(short).map(drop).unwrap_err().kind(),
                ErrorKind::Codec
            );
        }
        let m = Manifest {
            expiry: 1_700_000_000_000,
            generation: "abcdefghijklmn-_".to_owned(),
            count: 3,
            len: 2_000_000,
        };
        match decode(&encode_manifest(&m)).unwrap() {
            Stored::Chunked(back) => assert_eq!(back, m),
            Stored::Inline { .. } => panic!("a manifest decoded as inline"),
        }
        let mut bad = encode_manifest(&m);
        bad[10] = b' ';
        assert_eq!(decode(&bad).map(drop).unwrap_err().kind(), ErrorKind::Codec);
        bad.truncate(20);
        assert_eq!(decode(&bad).map(drop).unwrap_err().kind(), ErrorKind::Codec);
    }

    /// A store on a fresh prefix of the test server, or `None` (skipped) when there is no
    /// server and `SCS_REQUIRE_BACKENDS` is not set.
    async fn server_store() -> Option<MemcachedStore> {
        let url = scs_conformance::env_url("SCS_MEMCACHED_URL", "memcache://127.0.0.1:11211");
        let base = match MemcachedStore::from_url(&url).await {
            Ok(base) => base,
            Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").is_ok_and(|v| v == "1") => {
                panic!("{e:#}")
            }
            Err(e) => {
                eprintln!("skipped, no server: {e:#}");
                return None;
            }
        };
        let prefix = format!("{}:", scs_conformance::namespace());
        Some(
            MemcachedStore::builder(base.pool().clone())
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    }

    /// How many of the chunks `manifest` names are stored.
    async fn chunks_present(store: &MemcachedStore, key: &str, manifest: &Manifest) -> usize {
        let item = store.inner.key(key).unwrap();
        let mut conn = store.inner.conn("test").await.unwrap();
        let keys: Vec<String> = (0..manifest.count)
            .map(|i| chunk_key(&item, &manifest.generation, i))
            .collect();
        get_multi(&mut conn, &keys, "test").await.unwrap().len()
    }

    async fn manifest(store: &MemcachedStore, key: &str) -> Manifest {
        let item = store.inner.key(key).unwrap();
        let mut conn = store.inner.conn("test").await.unwrap();
        manifest_of(&mut conn, &item, "test")
            .await
            .unwrap()
            .expect("a manifest")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_sessions_are_chunked_replaced_and_deleted() {
        let Some(store) = server_store().await else {
            return;
        };
        let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);

        store.commit("k", &big, hour).await.unwrap();
        assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&big[..]));
        let first = manifest(&store, "k").await;
        assert_eq!((first.count, first.len), (3, 2_500_000));
        assert_eq!(chunks_present(&store, "k", &first).await, 3);

        // A large commit deletes the chunks of the version it replaces.
        store.commit("k", &big[..1_500_000], hour).await.unwrap();
        assert_eq!(
            store.find("k").await.unwrap().as_deref(),
            Some(&big[..1_500_000])
        );
        let second = manifest(&store, "k").await;
        assert_ne!(second.generation, first.generation);
        assert_eq!(chunks_present(&store, "k", &first).await, 0);
        assert_eq!(chunks_present(&store, "k", &second).await, 2);

        // delete removes the item and its chunks.
        store.delete("k").await.unwrap();
        assert_eq!(store.find("k").await.unwrap(), None);
        assert_eq!(chunks_present(&store, "k", &second).await, 0);

        // A chunk gone (evicted): the session reads as missing, never as partial data.
        store.commit("k", &big, hour).await.unwrap();
        let third = manifest(&store, "k").await;
        let item = store.inner.key("k").unwrap();
        let mut conn = store.inner.conn("test").await.unwrap();
        delete_item(&mut conn, &chunk_key(&item, &third.generation, 1), "test")
            .await
            .unwrap();
        drop(conn);
        assert_eq!(store.find("k").await.unwrap(), None);
        store.delete("k").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_compare_and_set_commits_keep_the_chunks_consistent() {
        let Some(store) = server_store().await else {
            return;
        };
        let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);

        // Created: the version is the manifest item's CAS value.
        let v1 = store
            .commit_if("k", &big, hour, None)
            .await
            .unwrap()
            .unwrap();
        let r = store.find_record("k").await.unwrap().unwrap();
        assert_eq!((r.data.as_slice(), r.version), (&big[..], v1));
        let first = manifest(&store, "k").await;
        assert!(
            store
                .commit_if("k", &big, hour, None)
                .await
                .unwrap()
                .is_none()
        );

        // A stale version writes nothing, not even chunks.
        let v2 = store
            .commit_if("k", &big[..1_500_000], hour, Some(v1))
            .await
            .unwrap()
            .unwrap();
        let second = manifest(&store, "k").await;
        assert_eq!(chunks_present(&store, "k", &first).await, 0, "replaced");
        assert_eq!(chunks_present(&store, "k", &second).await, 2);
        assert!(
            store
                .commit_if("k", &big, hour, Some(v1))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(manifest(&store, "k").await, second);
        assert_eq!(
            store.find("k").await.unwrap().as_deref(),
            Some(&big[..1_500_000])
        );

        // A small session over a large one; the old chunks go with their TTL.
        let v3 = store
            .commit_if("k", b"small", hour, Some(v2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.find_record("k").await.unwrap().unwrap().version, v3);

        // A past expiry at the current version deletes the item (and a manifest's chunks).
        let v4 = store
            .commit_if("k", &big, hour, Some(v3))
            .await
            .unwrap()
            .unwrap();
        let fourth = manifest(&store, "k").await;
        let past = OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(
            store
                .commit_if("k", b"", past, Some(v3))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .commit_if("k", b"", past, Some(v4))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.find_record("k").await.unwrap(), None);
        assert_eq!(chunks_present(&store, "k", &fourth).await, 0);
        store.delete("k").await.unwrap();
    }

    /// How many chunk items of `key` memcached holds (any generation), by a metadump.
    async fn all_chunks(store: &MemcachedStore, key: &str) -> usize {
        let item = store.inner.key(key).unwrap();
        // metadump URL-encodes keys: compare the part after the prefix.
        let suffix = format!("{}.", &item[store.prefix().len()..]);
        let ns = store.prefix().trim_end_matches(':').to_owned();
        let mut conn = store.inner.conn("test").await.unwrap();
        let mut dump = conn.dump_keys().await.unwrap();
        let mut n = 0;
        while let Some(entry) = dump.next().await {
            let key = String::from_utf8_lossy(&entry.unwrap().key).into_owned();
            if key.contains(&ns) && key.contains(&suffix) {
                n += 1;
            }
        }
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_commit_that_loses_leaves_no_chunks() {
        let Some(store) = server_store().await else {
            return;
        };
        let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let v = store
            .commit_if("k", &big, hour, None)
            .await
            .unwrap()
            .unwrap();
        let (a, b) = (store.clone(), store.clone());
        let (big_a, big_b) = (big.clone(), big[..2_000_000].to_vec());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.commit_if("k", &big_a, hour, Some(v)).await }),
            tokio::spawn(async move { b.commit_if("k", &big_b, hour, Some(v)).await }),
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        assert!(ra.is_some() != rb.is_some(), "exactly one wins");
        let winner = manifest(&store, "k").await;
        assert_eq!(
            chunks_present(&store, "k", &winner).await,
            winner.count as usize
        );
        assert_eq!(
            all_chunks(&store, "k").await,
            winner.count as usize,
            "the first version's and the loser's chunks are gone"
        );
        store.delete("k").await.unwrap();
        assert_eq!(all_chunks(&store, "k").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_item_still_held_counts_as_absent() {
        let Some(store) = server_store().await else {
            return;
        };
        // memcached keeps the item a second or two past the expiry in its value.
        let item = store.inner.key("e").unwrap();
        let past = now_millis() - 10;
        let mut conn = store.inner.conn("test").await.unwrap();
        set(&mut conn, &item, &encode_inline(past, b"old"), 60, "test")
            .await
            .unwrap();
        let held = meta_get(&mut conn, &item, "test").await.unwrap().unwrap();
        drop(conn);
        assert_eq!(store.find_record("e").await.unwrap(), None);
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let v = store.commit_if("e", b"new", hour, None).await.unwrap();
        assert!(v.is_some_and(|v| v != held.cas));
        assert_eq!(store.find("e").await.unwrap().as_deref(), Some(&b"new"[..]));
        store.delete("e").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_too_short_for_its_expiry_is_a_codec_error() {
        let Some(store) = server_store().await else {
            return;
        };
        let item = store.inner.key("short").unwrap();
        let mut conn = store.inner.conn("test").await.unwrap();
        set(&mut conn, &item, b"abc", 60, "test").await.unwrap();
        drop(conn);
        assert_eq!(
            store.find("short").await.unwrap_err().kind(),
            ErrorKind::Codec
        );
        store.delete("short").await.unwrap();
    }

    #[test]
    fn generations_are_key_safe() {
        let g = new_generation().unwrap();
        assert_eq!(g.len(), GEN_LEN);
        assert!(
            g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(g, new_generation().unwrap());
    }
}
