use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::clients::{Client, Pool};
use fred::error::{Error as FredError, ErrorKind as FredErrorKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::{Builder, ClusterHash, CustomCommand, Expiration, Key, Value};
use futures_util::TryStreamExt as _;
use futures_util::future::try_join_all;
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};

use crate::BACKEND;

/// The key prefix used unless [`FredStoreBuilder::prefix`] sets another (the one Go's scs
/// goredisstore uses).
pub const DEFAULT_PREFIX: &str = "scs:session:";

/// `COUNT` hint of each `SCAN` call.
const SCAN_COUNT: u32 = 1000;
/// Keys read (`MGET`, or concurrent `GET`s on a cluster) or deleted at once: bounded so
/// that large sessions do not make one huge reply.
const BATCH: usize = 100;

/// What [`FredStore::from_url`] sets up.
const POOL_SIZE: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// A session store on Redis or Valkey — standalone, cluster or behind sentinels — through a
/// [`fred`] [`Pool`] or [`Client`].
///
/// Each session is one string key, `<prefix><store key>`, holding an 8-byte big-endian
/// version followed by the session bytes, with a native expiry set in the same command
/// (`SET key value PXAT <unix ms>`). The server removes expired keys itself, so there is no
/// cleanup task. Versioned reads and compare-and-set commits are small Lua scripts, sent as
/// `EVALSHA` (and as `EVAL` when the server's script cache does not have them). Every
/// command and script touches one key, so it works on a cluster; iteration scans every
/// primary node.
///
/// Cloning is cheap and clones share the connections.
///
/// ```no_run
/// # async fn demo() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_fredstore::FredStore;
/// use std::time::Duration;
///
/// let store = FredStore::from_url("redis-cluster://127.0.0.1:30001").await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FredStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Conn>,
    prefix: String,
    /// `SCAN ... MATCH` pattern: the prefix with its glob metacharacters escaped, then `*`.
    pattern: String,
}

/// The connections, shared by the stores [`FredStore::with_prefix`] makes.
struct Conn {
    handle: Handle,
    /// The connections were opened by [`FredStore::from_url`]: close them with the store.
    owned: bool,
}

enum Handle {
    Pool(Pool),
    Client(Client),
}

impl Handle {
    /// The client for the next command (round robin over a pool's connected clients).
    fn client(&self) -> &Client {
        match self {
            Self::Pool(pool) => pool.next_connected(),
            Self::Client(client) => client,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // fred's connection tasks outlive their handles: close what from_url opened.
        if !self.owned {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match &self.handle {
            Handle::Pool(pool) => {
                let pool = pool.clone();
                runtime.spawn(async move { pool.quit().await });
            }
            Handle::Client(client) => {
                let client = client.clone();
                runtime.spawn(async move { client.quit().await });
            }
        }
    }
}

impl FredStore {
    /// A store on a pool (connected with `pool.init()`) with the default prefix,
    /// `scs:session:`.
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool).build_unchecked()
    }

    /// A builder for the key prefix, on a pool.
    pub fn builder(pool: Pool) -> FredStoreBuilder {
        FredStoreBuilder::new(Handle::Pool(pool))
    }

    /// A store on a single client (connected with `client.init()`) with the default prefix.
    pub fn from_client(client: Client) -> Self {
        Self::client_builder(client).build_unchecked()
    }

    /// A builder for the key prefix, on a single client.
    pub fn client_builder(client: Client) -> FredStoreBuilder {
        FredStoreBuilder::new(Handle::Client(client))
    }

    /// Connects to the server(s) at `url` with the default prefix. The scheme picks the
    /// deployment: `redis://` (or `valkey://`) for one server, `redis-cluster://host:port`
    /// (more nodes as `?node=host:port&node=...`) for a cluster, `redis-sentinel://` for
    /// sentinels; `rediss` variants need a TLS feature of `fred`.
    ///
    /// The pool has 4 clients that reconnect forever with exponential backoff (0.1 s up to
    /// 5 s); connecting times out after 5 s and a command after 3 s. The connections close
    /// when the last clone of the store is dropped inside a Tokio runtime. Build a
    /// [`Pool`] yourself and use [`new`](Self::new) or [`builder`](Self::builder) for other
    /// settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] (or
    /// [`ErrorKind::Timeout`]) when the server cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        check_scheme(url)?;
        let config = Config::from_url(url).map_err(|e| {
            Error::new(ErrorKind::Config, "parsing the Redis URL")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| c.connection_timeout = CONNECT_TIMEOUT)
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_pool(POOL_SIZE)
            .map_err(|e| fred_error("building the client pool", e))?;
        // The initial connection fails fast (fred's default), reconnection applies after.
        pool.init()
            .await
            .map_err(|e| fred_error("connecting to the server", e))?;
        let mut builder = Self::builder(pool);
        builder.owned = true;
        Ok(builder.build_unchecked())
    }

    /// A store on the same connections under another key prefix (see
    /// [`FredStoreBuilder::prefix`]).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix.
    pub fn with_prefix(&self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: self.inner.conn.clone(),
                pattern: pattern(&prefix),
                prefix,
            }),
        })
    }

    /// Sends a `PING`: checks that the server answers.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        self.inner
            .client()
            .ping::<()>(None)
            .await
            .map_err(|e| fred_error("pinging the server", e))
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How many keys are under this store's prefix (found with `SCAN` on every primary,
    /// never `KEYS`).
    ///
    /// # Errors
    /// A connection or command error.
    pub async fn count(&self) -> Result<usize> {
        Ok(self.inner.scan("counting the sessions").await?.len())
    }

    /// Deletes every key under this store's prefix (found with `SCAN` on every primary,
    /// never `KEYS`): signs everyone out. Returns how many keys went.
    ///
    /// # Errors
    /// A connection or command error; keys deleted before it stay deleted.
    pub async fn clear(&self) -> Result<usize> {
        const WHAT: &str = "deleting every session";
        let keys = self.inner.scan(WHAT).await?;
        let mut removed = 0;
        for batch in keys.chunks(BATCH) {
            let client = self.inner.client();
            if client.is_clustered() {
                // One key per command: keys of one batch live in different hash slots.
                let counts = try_join_all(batch.iter().map(|k| client.del::<usize, _>(k)))
                    .await
                    .map_err(|e| fred_error(WHAT, e))?;
                removed += counts.into_iter().sum::<usize>();
            } else {
                removed += client
                    .del::<usize, _>(batch.to_vec())
                    .await
                    .map_err(|e| fred_error(WHAT, e))?;
            }
        }
        Ok(removed)
    }
}

impl Inner {
    /// The client for the next command.
    fn client(&self) -> &Client {
        self.conn.handle.client()
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Every key matching the prefix, once each: `SCAN` on the server, or on every primary
    /// of a cluster (either may repeat a key).
    async fn scan(&self, what: &'static str) -> Result<Vec<Key>> {
        let client = self.client();
        let pattern = self.pattern.as_str();
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut push = |key: Key| {
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        };
        if client.is_clustered() {
            let mut stream =
                std::pin::pin!(client.scan_cluster_buffered(pattern, Some(SCAN_COUNT), None));
            while let Some(key) = stream.try_next().await.map_err(|e| fred_error(what, e))? {
                push(key);
            }
        } else {
            let mut stream = std::pin::pin!(client.scan_buffered(pattern, Some(SCAN_COUNT), None));
            while let Some(key) = stream.try_next().await.map_err(|e| fred_error(what, e))? {
                push(key);
            }
        }
        Ok(keys)
    }
}

impl std::fmt::Debug for FredStore {
    // Not the client config: it holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, clients) = match &self.inner.conn.handle {
            Handle::Pool(pool) => ("pool", pool.size()),
            Handle::Client(_) => ("client", 1),
        };
        f.debug_struct("FredStore")
            .field("prefix", &self.inner.prefix)
            .field(kind, &clients)
            .field("clustered", &self.inner.client().is_clustered())
            .finish()
    }
}

/// Options of a [`FredStore`].
#[must_use]
pub struct FredStoreBuilder {
    handle: Handle,
    prefix: String,
    owned: bool,
}

impl std::fmt::Debug for FredStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FredStoreBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl FredStoreBuilder {
    fn new(handle: Handle) -> Self {
        Self {
            handle,
            prefix: DEFAULT_PREFIX.to_owned(),
            owned: false,
        }
    }

    /// The prefix of every key this store writes (default `scs:session:`). Stores with
    /// different prefixes on one server are kept apart, unless one prefix starts with the
    /// other: then the shorter one's `all()` also lists the longer one's sessions.
    ///
    /// On a cluster, a hash tag in the prefix (`{sessions}:`) puts every session in one
    /// slot, so on one node: usually not what you want.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds the store. Nothing is sent to the server.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix (iteration and
    /// [`clear`](FredStore::clear) would then cover the whole database).
    pub fn build(self) -> Result<FredStore> {
        check_prefix(&self.prefix)?;
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> FredStore {
        FredStore {
            inner: Arc::new(Inner {
                conn: Arc::new(Conn {
                    handle: self.handle,
                    owned: self.owned,
                }),
                pattern: pattern(&self.prefix),
                prefix: self.prefix,
            }),
        }
    }
}

/// fred reads any other scheme as `redis://`: an `http://` URL would connect to port 80.
fn check_scheme(url: &str) -> Result<()> {
    const SCHEMES: &[&str] = &[
        "redis",
        "rediss",
        "redis-cluster",
        "rediss-cluster",
        "redis-sentinel",
        "rediss-sentinel",
        "redis+unix",
        "valkey",
        "valkeys",
        "valkey-cluster",
        "valkeys-cluster",
        "valkey-sentinel",
        "valkeys-sentinel",
        "valkey+unix",
    ];
    match url.split_once("://") {
        Some((scheme, _)) if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Config,
            "the URL must start with redis://, rediss://, redis-cluster://, redis-sentinel://, \
             redis+unix:// or their valkey equivalents",
        )
        .with_backend(BACKEND)),
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "the key prefix must not be empty: the store would span the whole database",
        )
        .with_backend(BACKEND));
    }
    Ok(())
}

/// The `SCAN ... MATCH` pattern of every key under `prefix`.
fn pattern(prefix: &str) -> String {
    format!("{}*", escape_glob(prefix))
}

/// Escapes the glob metacharacters of `SCAN ... MATCH` (`* ? [ ] \`) so that the prefix
/// matches only itself.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Expiry

/// The `PXAT` / `PEXPIREAT` value for `expiry`.
///
/// Redis treats a key as live while its clock in whole milliseconds is `<=` the stored
/// unix-ms expiry, i.e. up to one millisecond past it. Storing the millisecond *before* the
/// expiry (rounded down) makes the server drop the key no later than `expiry`, never after.
fn expiry_millis(expiry: OffsetDateTime) -> i64 {
    let ms = expiry.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms)
        .unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
        .saturating_sub(1)
}

fn now_millis() -> i64 {
    let ms = OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Options for writes: one attempt, and fail at once when the connection is down. fred
/// otherwise queues a command during a reconnect, or writes it again after the
/// connection broke, so a commit the caller was told had failed (it timed out) could still
/// land later and overwrite a newer one.
fn write_options() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        // fred drops a command it could not send in time from its queues: a write queued
        // while a broken connection is being noticed is never sent after a reconnect,
        // long after its caller gave up.
        timeout: Some(WRITE_TIMEOUT),
        ..Options::default()
    }
}

/// How long fred may hold a write before sending it; below the manager's store timeout,
/// so that a write the caller was told had failed cannot land later.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Versions and scripts

/// Bytes of the version in front of the session bytes in every stored value.
const VERSION_LEN: usize = 8;

/// The stored value: the version, big-endian, then the session bytes.
fn encode_value(version: u64, data: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(VERSION_LEN + data.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(data);
    value
}

/// Splits a stored value into its version and the session bytes.
fn decode_value(what: &'static str, mut value: Vec<u8>) -> Result<(u64, Vec<u8>)> {
    let Some(version) = value.first_chunk::<VERSION_LEN>().copied() else {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "{what}: a stored value of {} bytes is shorter than its {VERSION_LEN}-byte version",
                value.len()
            ),
        )
        .with_backend(BACKEND));
    };
    value.drain(..VERSION_LEN);
    Ok((u64::from_be_bytes(version), value))
}

/// Reads a key's value and expiry in one atomic step: nil for a missing (or expired) key,
/// else `{value, PEXPIRETIME}`.
const FIND_RECORD_LUA: &str = "\
local value = redis.call('GET', KEYS[1])
if not value then return false end
return {value, redis.call('PEXPIRETIME', KEYS[1])}
";

/// Compare-and-set. `ARGV[1]`: the expected version (8 bytes), or empty for "no live key"
/// (`GETRANGE` of a missing or expired key is empty too); `ARGV[2]`: the `PXAT` expiry, or
/// empty to delete; `ARGV[3]`: the new value. Answers 1 when it wrote, 0 on a mismatch.
const COMMIT_IF_LUA: &str = "\
if redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[2])
end
return 1
";

static FIND_RECORD: LazyLock<Lua> = LazyLock::new(|| Lua::new(FIND_RECORD_LUA));
static COMMIT_IF: LazyLock<Lua> = LazyLock::new(|| Lua::new(COMMIT_IF_LUA));

/// A Lua script on one key, with its SHA-1 computed here (no `SCRIPT LOAD` round trip).
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            sha: fred::util::sha1_hash(code),
        }
    }

    /// `EVALSHA`, one round trip, routed by the key's hash slot. When the server's script
    /// cache does not have the script (`NOSCRIPT`: first use, a restart, `SCRIPT FLUSH`, a
    /// cluster node that never ran it), `EVAL` sends the source, which also caches it for
    /// the next `EVALSHA`. Sent through `client`, so write options apply to both.
    async fn call<C: ClientLike>(
        &self,
        client: &C,
        key: &str,
        args: &[Value],
    ) -> std::result::Result<Value, FredError> {
        let run = |name: &'static str, script: &str| {
            let mut all = Vec::with_capacity(3 + args.len());
            all.push(Value::from(script));
            all.push(Value::Integer(1));
            all.push(Value::from(key));
            // Cheap clones: byte arguments are reference-counted.
            all.extend(args.iter().cloned());
            let cmd = CustomCommand::new_static(name, ClusterHash::from(key), false);
            client.custom::<Value, Value>(cmd, all)
        };
        match run("EVALSHA", &self.sha).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => run("EVAL", self.code).await,
            reply => reply,
        }
    }
}

/// The expiry `PEXPIRETIME` answered: the unix millisecond the key was stored with
/// ([`expiry_millis`]: the one before the session's expiry), plus one.
fn expiry_from_millis(what: &'static str, ms: i64) -> Result<OffsetDateTime> {
    let expiry = (ms >= 0)
        .then(|| OffsetDateTime::from_unix_timestamp_nanos((i128::from(ms) + 1) * 1_000_000).ok())
        .flatten();
    expiry.ok_or_else(|| {
        Error::new(
            ErrorKind::Backend,
            format!("{what}: the session key has no expiry (PEXPIRETIME {ms})"),
        )
        .with_backend(BACKEND)
    })
}

/// An unexpected reply shape.
fn reply_error(what: &'static str, got: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!("{what}: the server answered an unexpected {got}"),
    )
    .with_backend(BACKEND)
}

/// A `GET` reply: the bytes, or `None` for nil.
fn reply_bytes(what: &'static str, value: Value) -> Result<Option<Vec<u8>>> {
    match value {
        Value::Null => Ok(None),
        Value::Bytes(bytes) => Ok(Some(bytes.to_vec())),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        other => Err(Error::new(
            ErrorKind::Backend,
            format!(
                "{what}: the server answered a {} instead of a string",
                other.kind()
            ),
        )
        .with_backend(BACKEND)),
    }
}

// ---------------------------------------------------------------------------------------
// The store traits

#[async_trait]
impl Store for FredStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_iterate()
            .with_touch()
            .with_native_ttl()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // The expiry check on read is the server's: Redis and Valkey check a key's expiry on
        // every access (and on replicas too) and never return a key past its PXAT, even
        // before their background expiry removed it. Every key is written with its expiry
        // in the same command, so a plain GET is the read-side check.
        const WHAT: &str = "finding a session";
        let value = self
            .inner
            .client()
            .get::<Value, _>(self.inner.key(key))
            .await
            .map_err(|e| fred_error(WHAT, e))?;
        match reply_bytes(WHAT, value)? {
            Some(value) => Ok(Some(decode_value(WHAT, value)?.1)),
            None => Ok(None),
        }
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        const WHAT: &str = "committing a session";
        let at = expiry_millis(expiry);
        let client = self.inner.client().with_options(&write_options());
        let key = self.inner.key(key);
        if at <= now_millis() {
            // Already expired: remove what is there, never write a key without a TTL.
            client.del::<(), _>(key).await
        } else {
            // One command replaces data, version and expiry together.
            let value = Bytes::from(encode_value(scs_core::new_version(), data));
            client
                .set::<(), _, _>(key, value, Some(Expiration::PXAT(at)), None, false)
                .await
        }
        .map_err(|e| fred_error(WHAT, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner
            .client()
            .with_options(&write_options())
            .del::<(), _>(self.inner.key(key))
            .await
            .map_err(|e| fred_error("deleting a session", e))
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let at = expiry_millis(expiry);
        let client = self.inner.client().with_options(&write_options());
        let key = self.inner.key(key);
        // PEXPIREAT answers 0 for a missing (or already expired) key and creates nothing, and
        // leaves the value, version included, as it is; a past expiry deletes the key, like
        // DEL, which answers how many keys went.
        let n = if at <= now_millis() {
            client.del::<i64, _>(key).await
        } else {
            client.pexpire_at::<i64, _>(key, at, None).await
        }
        .map_err(|e| fred_error("touching a session", e))?;
        Ok(n > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let reply = FIND_RECORD
            .call(self.inner.client(), &self.inner.key(key), &[])
            .await
            .map_err(|e| fred_error(WHAT, e))?;
        let (value, ms) = match reply {
            Value::Null => return Ok(None),
            Value::Array(pair) => match <[Value; 2]>::try_from(pair) {
                Ok([value, Value::Integer(ms)]) => (value, ms),
                _ => return Err(reply_error(WHAT, "array, not [value, integer]")),
            },
            other => return Err(reply_error(WHAT, other.kind())),
        };
        let Some(value) = reply_bytes(WHAT, value)? else {
            return Ok(None);
        };
        let (version, data) = decode_value(WHAT, value)?;
        Ok(Some(Record::new(
            data,
            expiry_from_millis(WHAT, ms)?,
            version,
        )))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        let version = scs_core::new_version();
        let expected = match expected {
            Some(v) => Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes())),
            None => Value::from(""),
        };
        let at = expiry_millis(expiry);
        // An expiry already past deletes the key (when the version matches): never a key
        // without a TTL.
        let (at, value) = if at <= now_millis() {
            (Value::from(""), Value::from(""))
        } else {
            (
                Value::Integer(at),
                Value::Bytes(Bytes::from(encode_value(version, data))),
            )
        };
        let client = self.inner.client().with_options(&write_options());
        let reply = COMMIT_IF
            .call(&client, &self.inner.key(key), &[expected, at, value])
            .await
            .map_err(|e| fred_error(WHAT, e))?;
        match reply {
            Value::Integer(1) => Ok(Some(version)),
            Value::Integer(0) => Ok(None),
            other => Err(reply_error(WHAT, other.kind())),
        }
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for FredStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing the sessions";
        let keys = self.inner.scan(WHAT).await?;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(BATCH) {
            let client = self.inner.client();
            let values = if client.is_clustered() {
                // One key per command: keys of one batch live in different hash slots.
                try_join_all(batch.iter().map(|k| client.get::<Value, _>(k))).await
            } else {
                client
                    .mget::<Value, _>(batch.to_vec())
                    .await
                    .map(|reply| match reply {
                        Value::Array(values) => values,
                        other => vec![other],
                    })
            }
            .map_err(|e| fred_error(WHAT, e))?;
            // A key that expired or was deleted since the SCAN reads as nil: skipped, like
            // anything under the prefix that is not valid UTF-8.
            for (key, value) in batch.iter().zip(values) {
                let Some(value) = reply_bytes(WHAT, value)? else {
                    continue;
                };
                let (_, value) = decode_value(WHAT, value)?;
                let Some(key) = std::str::from_utf8(key.as_bytes())
                    .ok()
                    .and_then(|k| k.strip_prefix(self.inner.prefix.as_str()))
                else {
                    continue;
                };
                out.push((key.to_owned(), value));
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn fred_error(what: &'static str, e: FredError) -> Error {
    let kind = match e.kind() {
        FredErrorKind::Timeout => ErrorKind::Timeout,
        FredErrorKind::IO
        | FredErrorKind::Canceled
        | FredErrorKind::Routing
        | FredErrorKind::Cluster
        | FredErrorKind::Backpressure
        | FredErrorKind::Auth
        | FredErrorKind::Sentinel => ErrorKind::Connection,
        FredErrorKind::Config | FredErrorKind::Url => ErrorKind::Config,
        // Rejected commands, parse errors, and the kinds of optional fred features (TLS,
        // replicas), which this crate cannot name.
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconnected_pool(url: &str) -> Pool {
        Builder::from_config(Config::from_url(url).unwrap())
            .build_pool(2)
            .unwrap()
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("scs:session:"), "scs:session:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn pattern_and_key_use_the_prefix() {
        let store = FredStore::builder(unconnected_pool("redis://127.0.0.1:1"))
            .prefix("app[1]:")
            .build()
            .unwrap();
        assert_eq!(store.inner.pattern, r"app\[1\]:*");
        assert_eq!(store.inner.key("k"), "app[1]:k");
        let store = FredStore::new(unconnected_pool("redis://127.0.0.1:1"));
        assert_eq!(store.prefix(), DEFAULT_PREFIX);
        assert_eq!(store.inner.pattern, "scs:session:*");
    }

    #[test]
    fn empty_prefix_is_a_config_error() {
        let err = FredStore::builder(unconnected_pool("redis://127.0.0.1:1"))
            .prefix("")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.backend(), Some(BACKEND));
    }

    #[test]
    fn debug_does_not_leak_the_password() {
        let url = "redis://user:hunter2secret@127.0.0.1:1/0";
        let store = FredStore::new(unconnected_pool(url));
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2secret"), "{debug}");
        assert!(debug.contains("scs:session:"), "{debug}");
        let client = Builder::from_config(Config::from_url(url).unwrap())
            .build()
            .unwrap();
        let debug = format!("{:?}", FredStore::client_builder(client));
        assert!(!debug.contains("hunter2secret"), "{debug}");
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in [
            "http://127.0.0.1:6379",
            "not a url",
            "redis://127.0.0.1:notaport",
        ] {
            let err = FredStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:#}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error() {
        // Port 1 on loopback: nothing listens there.
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            FredStore::from_url("redis://127.0.0.1:1"),
        )
        .await
        .expect("fails fast, without retrying")
        .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err:#}"
        );
    }

    #[test]
    fn values_carry_a_big_endian_version() {
        let value = encode_value(0x0102_0304_0506_0708, b"data");
        assert_eq!(value, b"\x01\x02\x03\x04\x05\x06\x07\x08data");
        assert_eq!(
            decode_value("x", value).unwrap(),
            (0x0102_0304_0506_0708, b"data".to_vec())
        );
        assert_eq!(
            decode_value("x", encode_value(7, b"")).unwrap(),
            (7, Vec::new())
        );
        for short in [&b""[..], b"1234567"] {
            let err = decode_value("finding a session", short.to_vec()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec);
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[test]
    fn script_hashes_are_sha1_hex() {
        for lua in [&*FIND_RECORD, &*COMMIT_IF] {
            assert_eq!(lua.sha.len(), 40);
            assert!(lua.sha.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(FIND_RECORD.sha, COMMIT_IF.sha);
    }

    #[test]
    fn pexpiretime_maps_back_to_the_expiry() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_900_000).unwrap();
        let back = expiry_from_millis("x", expiry_millis(t)).unwrap();
        assert_eq!(back.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
        for no_expiry in [-1, -2] {
            let err = expiry_from_millis("x", no_expiry).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Backend);
        }
    }

    /// A script the server has never seen takes the `NOSCRIPT` → `EVAL` path, which caches
    /// it for `EVALSHA`. Needs a server (`SCS_REDIS_URL`); skipped without one unless
    /// `SCS_REQUIRE_BACKENDS` is set.
    #[tokio::test]
    async fn an_uncached_script_falls_back_to_eval() {
        let url =
            std::env::var("SCS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let Ok(store) = FredStore::from_url(&url).await else {
            assert!(
                std::env::var_os("SCS_REQUIRE_BACKENDS").is_none(),
                "no server at {url}"
            );
            eprintln!("skipped: no server at {url}");
            return;
        };
        // A fresh comment makes a script no server has cached.
        let code = format!("return 'ok' -- {}", scs_core::new_version());
        let lua = Lua::new(Box::leak(code.into_boxed_str()));
        let client = store.inner.client();
        let cached = async || -> bool {
            let cmd = CustomCommand::new_static("SCRIPT", ClusterHash::Random, false);
            let exists: Vec<bool> = client
                .custom(
                    cmd,
                    vec![Value::from("EXISTS"), Value::from(lua.sha.as_str())],
                )
                .await
                .unwrap();
            exists == [true]
        };
        assert!(!cached().await);
        let reply = lua.call(client, "k", &[]).await.unwrap();
        assert_eq!(reply.as_str().as_deref(), Some("ok"));
        assert!(cached().await, "EVAL cached the script");
        let reply = lua.call(client, "k", &[]).await.unwrap();
        assert_eq!(reply.as_str().as_deref(), Some("ok"));
    }

    #[test]
    fn expiry_is_the_millisecond_before() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_900_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
    }
}
