use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{self, AsyncConnectionConfig, FromRedisValue, RedisError};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};

use crate::BACKEND;

/// The key prefix used unless [`RedisStoreBuilder::prefix`] sets another (the one Go's scs
/// redisstore uses).
pub const DEFAULT_PREFIX: &str = "scs:session:";

/// `COUNT` hint of each `SCAN` call.
const SCAN_COUNT: usize = 1000;
/// Keys per `MGET` in [`IterableStore::all`]: bounded so that large sessions do not make one
/// huge reply.
const MGET_BATCH: usize = 100;

/// Timeouts [`RedisStore::from_url`] sets (go-redis uses the same order of magnitude).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A session store on Redis or Valkey, through a pool of redis-rs multiplexed connections.
///
/// Each session is one string key, `<prefix><store key>`, holding an 8-byte big-endian
/// version followed by the session bytes, with a native expiry set in the same command
/// (`SET key value PXAT <unix ms>`). Redis removes expired keys itself, so there is no
/// cleanup task. Versioned reads and compare-and-set commits are small Lua scripts, sent as
/// `EVALSHA` (and as `EVAL` when the server's script cache does not have them).
///
/// A store from [`from_url`](Self::from_url) makes one round trip per call: its pool hands
/// out connections without checking them with the server. Instead, a connection goes back
/// to the pool only after its last command was answered (with a reply or a server-side
/// error); one whose command timed out, failed on the wire or was cancelled mid-flight is
/// closed. Reads (`find`, `find_record`, `all`, [`count`](Self::count),
/// [`ping`](Self::ping)) that fail because a pooled connection was found broken (the server
/// restarted) are tried once more on a new connection; writes are not repeated.
///
/// Cloning is cheap and clones share the pool.
///
/// ```no_run
/// # async fn demo() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_redisstore::RedisStore;
/// use std::time::Duration;
///
/// let store = RedisStore::from_url("redis://127.0.0.1:6379").await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    prefix: String,
    /// `SCAN ... MATCH` pattern: the prefix with its glob metacharacters escaped, then `*`.
    pattern: String,
}

impl RedisStore {
    /// A store on `pool` with the default prefix, `scs:session:`.
    ///
    /// deadpool-redis checks every connection it hands out with `UNWATCH` + `PING`: each
    /// call then costs two round trips. [`from_url`](Self::from_url) builds a pool that
    /// does not.
    pub fn new(pool: deadpool_redis::Pool) -> Self {
        Self::builder(pool).build_unchecked()
    }

    /// A builder for the key prefix, on a deadpool-redis pool (see [`new`](Self::new)).
    pub fn builder(pool: deadpool_redis::Pool) -> RedisStoreBuilder {
        RedisStoreBuilder::on(Pool::DeadpoolRedis(pool))
    }

    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` with a TLS feature of `deadpool-redis`, `redis+unix:///path`) with the
    /// default prefix, and checks the connection with a `PING`.
    ///
    /// The pool has deadpool's default size; connecting times out after 5 s, a command
    /// after 3 s, and waiting for a free pooled connection after 5 s. It sends nothing when
    /// it hands out a connection, so every store call is one round trip (see
    /// [`RedisStore`]). For other pool settings, build a [`deadpool_redis::Pool`] and use
    /// [`new`](Self::new) or [`builder`](Self::builder).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] (or
    /// [`ErrorKind::Timeout`]) when the server cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let client = redis::Client::open(url).map_err(|e| {
            Error::new(ErrorKind::Config, "parsing the Redis URL")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        let pool = managed::Pool::builder(ConnManager { client, config })
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            // No recycle timeout: recycling sends nothing.
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "building the Redis connection pool")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
        let store = RedisStoreBuilder::on(Pool::Own(pool)).build_unchecked();
        store.ping().await?;
        Ok(store)
    }

    /// A store on the same pool under another key prefix (see
    /// [`RedisStoreBuilder::prefix`]).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix.
    pub fn with_prefix(&self, prefix: impl Into<String>) -> Result<Self> {
        RedisStoreBuilder::on(self.inner.pool.clone())
            .prefix(prefix)
            .build()
    }

    /// Sends a `PING`: checks that the server answers.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        let cmd = &redis::cmd("PING");
        self.inner
            .run("pinging the server", Retry::Once, |mut conn| async move {
                conn.query::<()>(cmd).await
            })
            .await
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The deadpool-redis pool this store was built on with [`new`](Self::new) or
    /// [`builder`](Self::builder); `None` for a store from [`from_url`](Self::from_url),
    /// whose pool is the store's own.
    pub fn pool(&self) -> Option<&deadpool_redis::Pool> {
        match &self.inner.pool {
            Pool::DeadpoolRedis(pool) => Some(pool),
            Pool::Own(_) => None,
        }
    }

    /// How many keys are under this store's prefix (found with `SCAN`, never `KEYS`).
    ///
    /// # Errors
    /// A connection or command error.
    pub async fn count(&self) -> Result<usize> {
        let inner = &*self.inner;
        inner
            .run(
                "counting the sessions",
                Retry::Once,
                |mut conn| async move { Ok(inner.scan(&mut conn).await?.len()) },
            )
            .await
    }

    /// Deletes every key under this store's prefix (found with `SCAN`, never `KEYS`): signs
    /// everyone out. Returns how many keys went.
    ///
    /// # Errors
    /// A connection or command error; keys deleted before it stay deleted.
    pub async fn clear(&self) -> Result<usize> {
        let inner = &*self.inner;
        inner
            .run(
                "deleting every session",
                Retry::Never,
                |mut conn| async move {
                    let keys = inner.scan(&mut conn).await?;
                    let mut removed = 0;
                    for batch in keys.chunks(SCAN_COUNT) {
                        let mut cmd = redis::cmd("DEL");
                        cmd.arg(batch);
                        removed += conn.query::<usize>(&cmd).await?;
                    }
                    Ok(removed)
                },
            )
            .await
    }
}

/// Whether [`Inner::run`] tries a failed call once more on a new connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: repeating it changes nothing.
    Once,
    /// A write: it may have been applied before the connection broke, and repeating it
    /// could undo what another request wrote in between.
    Never,
}

impl Inner {
    async fn conn(&self, what: &'static str) -> Result<Conn> {
        self.pool.get().await.map_err(|e| pool_error(what, e))
    }

    /// Runs `op` on a pooled connection. When it fails because the connection broke (an
    /// I/O error that is not a timeout: typically a connection that died while idle in the
    /// pool, e.g. a server restart), the idle connections are dropped, and a read is tried
    /// once more on a new one.
    async fn run<T, F>(&self, what: &'static str, retry: Retry, op: impl Fn(Conn) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, RedisError>>,
    {
        // `op` owns the connection: when it is done (or dropped mid-flight), the connection
        // goes back to the pool, or is closed if out of step.
        let first = op(self.conn(what).await?).await;
        let e = match first {
            Ok(value) => return Ok(value),
            Err(e) if connection_broke(&e) => e,
            Err(e) => return Err(redis_error(what, e)),
        };
        // The others idle in the pool most likely broke the same way.
        self.pool.drop_idle();
        if retry == Retry::Never {
            return Err(redis_error(what, e));
        }
        op(self.conn(what).await?).await.map_err(|e| {
            if connection_broke(&e) {
                self.pool.drop_idle();
            }
            redis_error(what, e)
        })
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Every key matching the prefix, once each (`SCAN` may repeat a key).
    async fn scan(&self, conn: &mut Conn) -> std::result::Result<Vec<Vec<u8>>, RedisError> {
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, batch): (u64, Vec<Vec<u8>>) = conn.query(&cmd).await?;
            for key in batch {
                if seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// An I/O error that is not a timeout: the connection is gone (reset, closed by the
/// server, or found closed when the command was sent), and nothing suggests that the
/// server is slow. A timeout is not retried: the server may be overloaded or cut off.
fn connection_broke(e: &RedisError) -> bool {
    e.is_io_error() && !e.is_timeout()
}

// ---------------------------------------------------------------------------------------
// Connections

/// Opens redis-rs multiplexed connections for the pool of [`RedisStore::from_url`], and
/// recycles them without a word to the server (deadpool-redis' manager sends `UNWATCH` +
/// `PING` each time: a second round trip per call). No check is needed: [`Conn`] returns a
/// connection to the pool only when it is in step, and the store never sends `WATCH`,
/// `MULTI` or `SUBSCRIBE`, so there is no state to reset. A connection that broke while
/// idle is found on its next use ([`Inner::run`]).
struct ConnManager {
    client: redis::Client,
    config: AsyncConnectionConfig,
}

impl managed::Manager for ConnManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> std::result::Result<MultiplexedConnection, RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        _: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        Ok(())
    }
}

/// The store's pool: its own (from [`RedisStore::from_url`]), or one the caller built with
/// deadpool-redis.
#[derive(Clone)]
enum Pool {
    Own(managed::Pool<ConnManager>),
    DeadpoolRedis(deadpool_redis::Pool),
}

impl Pool {
    async fn get(&self) -> std::result::Result<Conn, PoolError<RedisError>> {
        let pooled = match self {
            Self::Own(pool) => Pooled::Own(pool.get().await?),
            Self::DeadpoolRedis(pool) => Pooled::DeadpoolRedis(pool.get().await?),
        };
        Ok(Conn {
            pooled: Some(pooled),
            in_step: true,
        })
    }

    fn status(&self) -> deadpool::Status {
        match self {
            Self::Own(pool) => pool.status(),
            Self::DeadpoolRedis(pool) => pool.status(),
        }
    }

    /// Closes the idle connections of the store's own pool. (deadpool-redis checks each
    /// connection with a `PING` before it hands it out, so its pool sorts them out itself.)
    fn drop_idle(&self) {
        if let Self::Own(pool) = self {
            drop(pool.retain(|_, _| false));
        }
    }
}

enum Pooled {
    Own(Object<ConnManager>),
    DeadpoolRedis(deadpool_redis::Connection),
}

/// A pooled connection that goes back to the pool only in step: each command through
/// [`query`](Self::query) marks it out of step until its reply (or a server-side error
/// reply) arrived. Dropped out of step (the command timed out, failed on the wire, or the
/// caller's future was dropped mid-flight), it is taken out of the pool and closed, so that
/// no one else ever reads a reply meant for this command.
struct Conn {
    /// `None` only once dropped.
    pooled: Option<Pooled>,
    in_step: bool,
}

impl Conn {
    /// Sends `cmd` and reads its reply: the only way the store talks to the server.
    async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> std::result::Result<T, RedisError> {
        let conn: &mut MultiplexedConnection = match &mut self.pooled {
            Some(Pooled::Own(obj)) => obj,
            Some(Pooled::DeadpoolRedis(conn)) => conn,
            None => {
                return Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "the connection went back to the pool",
                )));
            }
        };
        self.in_step = false;
        let reply = match conn.req_packed_command(cmd).await {
            Ok(reply) => reply,
            Err(e) => {
                // A server-side error (NOSCRIPT, WRONGTYPE, a Lua error, ...) is a whole
                // reply: the connection is still in step. (redis-rs mostly hands those over
                // as an `Ok` reply holding the error.)
                self.in_step = is_server_error(&e);
                return Err(e);
            }
        };
        // The whole reply arrived, even if it is a server-side error or not what `T` can
        // hold: the connection is in step.
        self.in_step = true;
        Ok(redis::from_redis_value(reply.extract_error()?)?)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.in_step {
            // `Object`'s own drop returns it to the pool.
            return;
        }
        match self.pooled.take() {
            Some(Pooled::Own(obj)) => drop(Object::take(obj)),
            Some(Pooled::DeadpoolRedis(conn)) => drop(deadpool_redis::Connection::take(conn)),
            None => {}
        }
    }
}

/// An error the server answered with.
fn is_server_error(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

impl std::fmt::Debug for RedisStore {
    // Not the pool: its manager holds the connection info, password included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("pool_max_size", &status.max_size)
            .field("pool_size", &status.size)
            .finish()
    }
}

/// Options of a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    pool: Pool,
    prefix: String,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    fn on(pool: Pool) -> Self {
        Self {
            pool,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// The prefix of every key this store writes (default `scs:session:`). Stores with
    /// different prefixes on one server are kept apart, unless one prefix starts with the
    /// other: then the shorter one's `all()` also lists the longer one's sessions.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds the store. Nothing is sent to the server.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix (iteration and
    /// [`clear`](RedisStore::clear) would then cover the whole database).
    pub fn build(self) -> Result<RedisStore> {
        if self.prefix.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the key prefix must not be empty: the store would span the whole database",
            )
            .with_backend(BACKEND));
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> RedisStore {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        RedisStore {
            inner: Arc::new(Inner {
                pool: self.pool,
                prefix: self.prefix,
                pattern,
            }),
        }
    }
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
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// `EVALSHA`, one round trip. When the server's script cache does not have the script
    /// (`NOSCRIPT`: first use, a restart, `SCRIPT FLUSH`), `EVAL` sends the source, which
    /// also caches it for the next `EVALSHA`.
    async fn call<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        key: &str,
        args: &[&[u8]],
    ) -> std::result::Result<T, RedisError> {
        let cmd = |name: &str, script: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(script).arg(1).arg(key);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        match conn.query(&cmd("EVALSHA", &self.sha)).await {
            // A server-side error: the connection is in step for the EVAL.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                conn.query(&cmd("EVAL", self.code)).await
            }
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

// ---------------------------------------------------------------------------------------
// The store traits

#[async_trait]
impl Store for RedisStore {
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
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.inner.key(key));
        let cmd = &cmd;
        let value: Option<Vec<u8>> = self
            .inner
            .run(WHAT, Retry::Once, |mut conn| async move {
                conn.query(cmd).await
            })
            .await?;
        match value {
            Some(value) => Ok(Some(decode_value(WHAT, value)?.1)),
            None => Ok(None),
        }
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let at = expiry_millis(expiry);
        let cmd = if at <= now_millis() {
            // Already expired: remove what is there, never write a key without a TTL.
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.inner.key(key));
            cmd
        } else {
            // One command replaces data, version and expiry together.
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.inner.key(key))
                .arg(encode_value(scs_core::new_version(), data))
                .arg("PXAT")
                .arg(at);
            cmd
        };
        let cmd = &cmd;
        self.inner
            .run(
                "committing a session",
                Retry::Never,
                |mut conn| async move { conn.query::<()>(cmd).await },
            )
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.inner.key(key));
        let cmd = &cmd;
        self.inner
            .run("deleting a session", Retry::Never, |mut conn| async move {
                conn.query::<()>(cmd).await
            })
            .await
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let at = expiry_millis(expiry);
        // PEXPIREAT answers 0 for a missing (or already expired) key and creates nothing, and
        // leaves the value, version included, as it is; a past expiry deletes the key, like
        // DEL, which answers how many keys went.
        let cmd = if at <= now_millis() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.inner.key(key));
            cmd
        } else {
            let mut cmd = redis::cmd("PEXPIREAT");
            cmd.arg(self.inner.key(key)).arg(at);
            cmd
        };
        // Not retried: a repeated DEL answers 0 for a key the first one removed, and a
        // repeated PEXPIREAT would undo the expiry of a commit that came in between.
        let cmd = &cmd;
        let n: i64 = self
            .inner
            .run("touching a session", Retry::Never, |mut conn| async move {
                conn.query(cmd).await
            })
            .await?;
        Ok(n > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let key = &self.inner.key(key);
        let reply: Option<(Vec<u8>, i64)> = self
            .inner
            .run(WHAT, Retry::Once, |mut conn| async move {
                FIND_RECORD.call(&mut conn, key, &[]).await
            })
            .await?;
        let Some((value, ms)) = reply else {
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
        let version = scs_core::new_version();
        let expected = expected.map(u64::to_be_bytes);
        let at = expiry_millis(expiry);
        // An expiry already past deletes the key (when the version matches): never a key
        // without a TTL.
        let (at, value) = if at <= now_millis() {
            (String::new(), Vec::new())
        } else {
            (at.to_string(), encode_value(version, data))
        };
        let key = &self.inner.key(key);
        let args = &[
            expected.as_ref().map_or(&[][..], |v| &v[..]),
            at.as_bytes(),
            &value,
        ];
        let written: i64 = self
            .inner
            .run(
                "committing a session",
                Retry::Never,
                |mut conn| async move { COMMIT_IF.call(&mut conn, key, args).await },
            )
            .await?;
        Ok((written == 1).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for RedisStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing the sessions";
        let inner = &*self.inner;
        let found = inner
            .run(WHAT, Retry::Once, |mut conn| async move {
                let keys = inner.scan(&mut conn).await?;
                let mut found = Vec::with_capacity(keys.len());
                for batch in keys.chunks(MGET_BATCH) {
                    let mut cmd = redis::cmd("MGET");
                    cmd.arg(batch);
                    let values: Vec<Option<Vec<u8>>> = conn.query(&cmd).await?;
                    // A key that expired or was deleted since the SCAN reads as nil: skipped.
                    found.extend(
                        batch
                            .iter()
                            .zip(values)
                            .filter_map(|(key, value)| Some((key.clone(), value?))),
                    );
                }
                Ok(found)
            })
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for (key, value) in found {
            // Skipped, like a key that expired: anything under the prefix that is not valid
            // UTF-8.
            let Some(key) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.strip_prefix(self.inner.prefix.as_str()))
            else {
                continue;
            };
            out.push((key.to_owned(), decode_value(WHAT, value)?.1));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn redis_error(what: &'static str, e: RedisError) -> Error {
    use redis::ErrorKind as K;
    use redis::ServerErrorKind as S;
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            K::AuthenticationFailed
                | K::ClusterConnectionNotFound
                | K::Server(S::BusyLoading | S::ClusterDown | S::MasterDown | S::TryAgain)
        )
    {
        ErrorKind::Connection
    } else if e.kind() == K::InvalidClientConfig {
        ErrorKind::Config
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

fn pool_error(what: &'static str, e: PoolError<RedisError>) -> Error {
    let kind = match &e {
        PoolError::Timeout(_) => ErrorKind::Timeout,
        PoolError::Backend(re) if re.is_timeout() => ErrorKind::Timeout,
        PoolError::Backend(re) if re.kind() == redis::ErrorKind::InvalidClientConfig => {
            ErrorKind::Config
        }
        PoolError::NoRuntimeSpecified => ErrorKind::Config,
        // Failing to open or recycle a connection, a closed pool, a failed hook.
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("{what}: getting a connection"))
        .with_backend(BACKEND)
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconnected_pool(url: &str) -> deadpool_redis::Pool {
        deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap()
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("scs:session:"), "scs:session:");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn pattern_and_key_use_the_prefix() {
        let store = RedisStore::builder(unconnected_pool("redis://127.0.0.1:1"))
            .prefix("app[1]:")
            .build()
            .unwrap();
        assert_eq!(store.inner.pattern, r"app\[1\]:*");
        assert_eq!(store.inner.key("k"), "app[1]:k");
        let store = RedisStore::new(unconnected_pool("redis://127.0.0.1:1"));
        assert_eq!(store.prefix(), DEFAULT_PREFIX);
        assert_eq!(store.inner.pattern, "scs:session:*");
    }

    #[test]
    fn empty_prefix_is_a_config_error() {
        let err = RedisStore::builder(unconnected_pool("redis://127.0.0.1:1"))
            .prefix("")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.backend(), Some(BACKEND));
    }

    #[test]
    fn debug_does_not_leak_the_password() {
        let store = RedisStore::new(unconnected_pool("redis://user:hunter2secret@127.0.0.1:1/0"));
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2secret"), "{debug}");
        assert!(debug.contains("scs:session:"), "{debug}");
        let builder = format!("{:?}", RedisStore::builder(store.pool().unwrap().clone()));
        assert!(!builder.contains("hunter2secret"), "{builder}");
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in [
            "http://127.0.0.1:6379",
            "not a url",
            "redis://127.0.0.1:notaport",
        ] {
            let err = RedisStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:#}");
            assert_eq!(err.backend(), Some(BACKEND));
            assert!(std::error::Error::source(&err).is_some());
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error() {
        // Port 1 on loopback: nothing listens there.
        let err = RedisStore::from_url("redis://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err:#}"
        );
        assert!(err.message().contains("pinging"), "{err:#}");
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
        let Ok(store) = RedisStore::from_url(&url).await else {
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
        let mut conn = store.inner.conn("testing").await.unwrap();
        let cached = async |conn: &mut Conn| -> bool {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("EXISTS").arg(&lua.sha);
            let exists: Vec<bool> = conn.query(&cmd).await.unwrap();
            exists == [true]
        };
        assert!(!cached(&mut conn).await);
        let reply: String = lua.call(&mut conn, "k", &[]).await.unwrap();
        assert_eq!(reply, "ok");
        assert!(conn.in_step, "NOSCRIPT is a whole reply");
        assert!(cached(&mut conn).await, "EVAL cached the script");
        let reply: String = lua.call(&mut conn, "k", &[]).await.unwrap();
        assert_eq!(reply, "ok");
    }

    /// A command that timed out (`BLPOP` blocks on the server longer than the response
    /// timeout) leaves its connection out of step: it is closed, not pooled; one answered,
    /// even with a server-side error, goes back. Needs a server, like the test above.
    #[tokio::test]
    async fn only_a_connection_in_step_goes_back_to_the_pool() {
        let url =
            std::env::var("SCS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(Duration::from_millis(100)));
        let manager = ConnManager {
            client: redis::Client::open(url.as_str()).unwrap(),
            config,
        };
        let pool = Pool::Own(
            managed::Pool::builder(manager)
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .unwrap(),
        );
        let Ok(mut conn) = pool.get().await else {
            assert!(
                std::env::var_os("SCS_REQUIRE_BACKENDS").is_none(),
                "no server at {url}"
            );
            eprintln!("!!! SKIPPED: no server at {url}");
            return;
        };
        conn.query::<()>(&redis::cmd("PING")).await.unwrap();
        let err = conn
            .query::<()>(&redis::cmd("NOSUCHCOMMAND"))
            .await
            .unwrap_err();
        assert!(is_server_error(&err), "{err:?}");
        assert!(conn.in_step);
        drop(conn);
        assert_eq!(pool.status().size, 1, "an answered connection is pooled");

        let mut conn = pool.get().await.unwrap();
        let mut blpop = redis::cmd("BLPOP");
        blpop
            .arg(format!("scs-test:empty:{}", scs_core::new_version()))
            .arg(1);
        let err = conn.query::<()>(&blpop).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(!connection_broke(&err), "a timeout is not retried");
        assert!(!conn.in_step);
        drop(conn);
        assert_eq!(pool.status().size, 0, "a timed-out connection is closed");

        let mut conn = pool.get().await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(20), conn.query::<()>(&blpop));
        assert!(cancelled.await.is_err(), "BLPOP answered within 20 ms");
        assert!(!conn.in_step);
        drop(conn);
        assert_eq!(pool.status().size, 0, "a cancelled connection is closed");
    }

    #[test]
    fn expiry_is_the_millisecond_before() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_900_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
    }
}
