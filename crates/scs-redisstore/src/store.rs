use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncConnectionConfig, FromRedisValue, RedisError};
use deadpool_redis::{Connection, Manager, Pool, PoolError, Runtime};
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

/// A session store on Redis or Valkey, through a [`deadpool_redis::Pool`].
///
/// Each session is one string key, `<prefix><store key>`, holding an 8-byte big-endian
/// version followed by the session bytes, with a native expiry set in the same command
/// (`SET key value PXAT <unix ms>`). Redis removes expired keys itself, so there is no
/// cleanup task. Versioned reads and compare-and-set commits are small Lua scripts, sent as
/// `EVALSHA` (and as `EVAL` when the server's script cache does not have them).
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
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool).build_unchecked()
    }

    /// A builder for the key prefix.
    pub fn builder(pool: Pool) -> RedisStoreBuilder {
        RedisStoreBuilder {
            pool,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Connects to the server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` with a TLS feature of `deadpool-redis`, `redis+unix:///path`) with the
    /// default prefix, and checks the connection with a `PING`.
    ///
    /// The pool has deadpool's default size; connecting times out after 5 s, a command
    /// after 3 s, and waiting for a free pooled connection after 5 s. Build a
    /// [`deadpool_redis::Pool`] yourself and use [`new`](Self::new) or
    /// [`builder`](Self::builder) for other settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] (or
    /// [`ErrorKind::Timeout`]) when the server cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(url, connection).map_err(|e| {
            Error::new(ErrorKind::Config, "parsing the Redis URL")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        let pool = Pool::builder(manager)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RESPONSE_TIMEOUT))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "building the Redis connection pool")
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
        let store = Self::new(pool);
        store.ping().await?;
        Ok(store)
    }

    /// A store on the same pool under another key prefix (see
    /// [`RedisStoreBuilder::prefix`]).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix.
    pub fn with_prefix(&self, prefix: impl Into<String>) -> Result<Self> {
        Self::builder(self.inner.pool.clone())
            .prefix(prefix)
            .build()
    }

    /// Sends a `PING`: checks that the server answers.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        const WHAT: &str = "pinging the server";
        let mut conn = self.inner.conn(WHAT).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(WHAT, e))
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// How many keys are under this store's prefix (found with `SCAN`, never `KEYS`).
    ///
    /// # Errors
    /// A connection or command error.
    pub async fn count(&self) -> Result<usize> {
        const WHAT: &str = "counting the sessions";
        let mut conn = self.inner.conn(WHAT).await?;
        Ok(self.inner.scan(&mut conn, WHAT).await?.len())
    }

    /// Deletes every key under this store's prefix (found with `SCAN`, never `KEYS`): signs
    /// everyone out. Returns how many keys went.
    ///
    /// # Errors
    /// A connection or command error; keys deleted before it stay deleted.
    pub async fn clear(&self) -> Result<usize> {
        const WHAT: &str = "deleting every session";
        let mut conn = self.inner.conn(WHAT).await?;
        let keys = self.inner.scan(&mut conn, WHAT).await?;
        let mut removed = 0;
        for batch in keys.chunks(SCAN_COUNT) {
            removed += redis::cmd("DEL")
                .arg(batch)
                .query_async::<usize>(&mut conn)
                .await
                .map_err(|e| redis_error(WHAT, e))?;
        }
        Ok(removed)
    }
}

impl Inner {
    async fn conn(&self, what: &'static str) -> Result<Connection> {
        self.pool.get().await.map_err(|e| pool_error(what, e))
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Every key matching the prefix, once each (`SCAN` may repeat a key).
    async fn scan(&self, conn: &mut Connection, what: &'static str) -> Result<Vec<Vec<u8>>> {
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn)
                .await
                .map_err(|e| redis_error(what, e))?;
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
        conn: &mut Connection,
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
        match cmd("EVALSHA", &self.sha).query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                cmd("EVAL", self.code).query_async(conn).await
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
        let mut conn = self.inner.conn(WHAT).await?;
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.inner.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(WHAT, e))?;
        match value {
            Some(value) => Ok(Some(decode_value(WHAT, value)?.1)),
            None => Ok(None),
        }
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        const WHAT: &str = "committing a session";
        let at = expiry_millis(expiry);
        let mut conn = self.inner.conn(WHAT).await?;
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
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(WHAT, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        const WHAT: &str = "deleting a session";
        let mut conn = self.inner.conn(WHAT).await?;
        redis::cmd("DEL")
            .arg(self.inner.key(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| redis_error(WHAT, e))
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        const WHAT: &str = "touching a session";
        let at = expiry_millis(expiry);
        let mut conn = self.inner.conn(WHAT).await?;
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
        let n: i64 = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(WHAT, e))?;
        Ok(n > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let mut conn = self.inner.conn(WHAT).await?;
        let reply: Option<(Vec<u8>, i64)> = FIND_RECORD
            .call(&mut conn, &self.inner.key(key), &[])
            .await
            .map_err(|e| redis_error(WHAT, e))?;
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
        const WHAT: &str = "committing a session";
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
        let mut conn = self.inner.conn(WHAT).await?;
        let written: i64 = COMMIT_IF
            .call(
                &mut conn,
                &self.inner.key(key),
                &[
                    expected.as_ref().map_or(&[][..], |v| &v[..]),
                    at.as_bytes(),
                    &value,
                ],
            )
            .await
            .map_err(|e| redis_error(WHAT, e))?;
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
        let mut conn = self.inner.conn(WHAT).await?;
        let keys = self.inner.scan(&mut conn, WHAT).await?;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(MGET_BATCH) {
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(batch)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(WHAT, e))?;
            // A key that expired or was deleted since the SCAN reads as nil: skipped, like
            // anything under the prefix that is not valid UTF-8.
            for (key, value) in batch.iter().zip(values) {
                let Some(value) = value else { continue };
                let Some(key) = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.strip_prefix(self.inner.prefix.as_str()))
                else {
                    continue;
                };
                out.push((key.to_owned(), decode_value(WHAT, value)?.1));
            }
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

fn pool_error(what: &'static str, e: PoolError) -> Error {
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

    fn unconnected_pool(url: &str) -> Pool {
        deadpool_redis::Config::from_url(url)
            .create_pool(Some(Runtime::Tokio1))
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
        let builder = format!("{:?}", RedisStore::builder(store.pool().clone()));
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
        let cached = async |conn: &mut Connection| -> bool {
            let exists: Vec<bool> = redis::cmd("SCRIPT")
                .arg("EXISTS")
                .arg(&lua.sha)
                .query_async(conn)
                .await
                .unwrap();
            exists == [true]
        };
        assert!(!cached(&mut conn).await);
        let reply: String = lua.call(&mut conn, "k", &[]).await.unwrap();
        assert_eq!(reply, "ok");
        assert!(cached(&mut conn).await, "EVAL cached the script");
        let reply: String = lua.call(&mut conn, "k", &[]).await.unwrap();
        assert_eq!(reply, "ok");
    }

    #[test]
    fn expiry_is_the_millisecond_before() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_900_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        assert_eq!(expiry_millis(t), 1_700_000_000_122);
    }
}
