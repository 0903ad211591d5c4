use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, KvClient,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use tokio::sync::OnceCell;

use crate::BACKEND;

/// The key prefix used unless [`EtcdStoreBuilder::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "scs:session:";

/// Keys per range request in [`IterableStore::all`] and [`EtcdStore::clear`]: bounded so
/// that large sessions do not make one huge reply.
const PAGE: i64 = 256;
/// Timeouts [`EtcdStore::from_url`] sets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most leases a store keeps at hand (one per second in which sessions expire): past
/// it, the soonest to run out is forgotten (and granted anew if a session needs it again).
const MAX_LEASES: usize = 4096;

/// A session store on etcd (v3 API), through an [`etcd_client::Client`]. It answers Go
/// scs's `etcdstore`.
///
/// Each session is one key, `<prefix><store key>`, holding the session's expiry (unix
/// milliseconds, 8 bytes big-endian) followed by the session bytes, attached to a lease:
/// etcd deletes the key when the lease runs out, so there is no cleanup task. Sessions that
/// expire within the same second share one lease, granted by the first commit that needs
/// it, so a commit is a single request. Leases count whole seconds; the expiry in the value
/// is checked on every read, so a session is never returned past its expiry.
///
/// Versions ([`Store::find_record`], [`Store::commit_if`]) are the key's `mod_revision`,
/// compared in a transaction.
///
/// Cloning is cheap and clones share the client.
///
/// ```no_run
/// # async fn demo() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_etcdstore::EtcdStore;
/// use std::time::Duration;
///
/// let store = EtcdStore::from_url("http://127.0.0.1:2379").await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    leases: Leases,
}

impl EtcdStore {
    /// A store on `client` with the default prefix, `scs:session:`.
    pub fn new(client: Client) -> Self {
        Self::builder(client).build_unchecked()
    }

    /// A builder for the key prefix.
    pub fn builder(client: Client) -> EtcdStoreBuilder {
        EtcdStoreBuilder {
            client,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Connects to the endpoints in `url` (`http://[user:password@]host:port`, several
    /// separated by commas) with the default prefix, and checks the connection with a
    /// count of the keys under the prefix.
    ///
    /// Connecting times out after 5 s, each request after 5 s. Build an
    /// [`etcd_client::Client`] yourself (TLS, other timeouts) and use [`new`](Self::new) or
    /// [`builder`](Self::builder) for other settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] (or
    /// [`ErrorKind::Timeout`]) when the server cannot be reached.
    pub async fn from_url(url: &str) -> Result<Self> {
        let (endpoints, user) = parse_url(url)?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| etcd_error("connecting to the server", e))?;
        let store = Self::new(client);
        store.ping().await?;
        Ok(store)
    }

    /// Counts the keys under the prefix: checks that the server answers.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        self.inner.count("pinging the server").await.map(drop)
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The client this store uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// How many keys are under this store's prefix (etcd may keep an expired one for up to
    /// a second past its lease).
    ///
    /// # Errors
    /// A connection or request error.
    pub async fn count(&self) -> Result<usize> {
        self.inner.count("counting the sessions").await
    }

    /// Deletes every key under this store's prefix, in one request: signs everyone out.
    /// Returns how many keys went. The leases stay, holding no key, until they run out.
    ///
    /// # Errors
    /// A connection or request error.
    pub async fn clear(&self) -> Result<usize> {
        const WHAT: &str = "deleting every session";
        let deleted = self
            .inner
            .kv()
            .delete(
                self.inner.prefix.as_bytes(),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| etcd_error(WHAT, e))?
            .deleted();
        Ok(usize::try_from(deleted).unwrap_or(0))
    }
}

impl std::fmt::Debug for EtcdStore {
    // Not the client: its options hold the user and password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Options of an [`EtcdStore`].
#[must_use]
pub struct EtcdStoreBuilder {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStoreBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStoreBuilder {
    /// The prefix of every key this store writes (default `scs:session:`). Stores with
    /// different prefixes on one cluster are kept apart, unless one prefix starts with the
    /// other: then the shorter one's `all()` also lists the longer one's sessions. End it
    /// with a separator such as `:` or `/`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds the store. Nothing is sent to the server.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty prefix (iteration and
    /// [`clear`](EtcdStore::clear) would then cover the whole keyspace).
    pub fn build(self) -> Result<EtcdStore> {
        if self.prefix.is_empty() {
            return Err(config_error(
                "the key prefix must not be empty: the store would span the whole keyspace",
            ));
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> EtcdStore {
        EtcdStore {
            inner: Arc::new(Inner {
                client: self.client,
                prefix: self.prefix,
                leases: Leases::default(),
            }),
        }
    }
}

/// The endpoints of an `http://[user:password@]host:port[,...]` URL, without their
/// credentials, and the credentials.
type Endpoints = (Vec<String>, Option<(String, String)>);

fn parse_url(url: &str) -> Result<Endpoints> {
    let mut endpoints = Vec::new();
    let mut user = None;
    for part in url.split(',') {
        let parsed = url::Url::parse(part.trim()).map_err(|e| {
            Error::new(ErrorKind::Config, "parsing the etcd URL")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "unsupported URL scheme `{}`: use http:// (https:// needs a TLS feature of etcd-client and a client you build)",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| config_error("the etcd URL has no host"))?;
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(config_error("the etcd URL takes no path or query"));
        }
        if !parsed.username().is_empty() {
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            user = Some((
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default()),
            ));
        }
        let port = parsed.port().unwrap_or(2379);
        endpoints.push(format!("{}://{host}:{port}", parsed.scheme()));
    }
    Ok((endpoints, user))
}

// ---------------------------------------------------------------------------------------
// Store operations

impl Inner {
    /// A KV client without tonic's 4 MiB limit on replies: sessions of up to etcd's
    /// request limit (1.5 MiB by default) come back in pages of up to [`PAGE`] keys.
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    async fn count(&self, what: &'static str) -> Result<usize> {
        let resp = self
            .kv()
            .get(
                self.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| etcd_error(what, e))?;
        Ok(usize::try_from(resp.count()).unwrap_or(0))
    }

    /// Calls `f` with every key-value under the prefix, a page at a time, in key order.
    async fn scan(&self, what: &'static str, mut f: impl FnMut(&KeyValue)) -> Result<()> {
        let end = prefix_end(self.prefix.as_bytes());
        let mut start = self.prefix.as_bytes().to_vec();
        let mut kv = self.kv();
        loop {
            let options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let resp = kv
                .get(start.clone(), Some(options))
                .await
                .map_err(|e| etcd_error(what, e))?;
            resp.kvs().iter().for_each(&mut f);
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key seen.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// The lease for keys expiring at `expiry` (unix ms): the one this store granted for
    /// that second, or a new one. Concurrent callers wait for one grant.
    async fn lease(&self, what: &'static str, expiry: u64, now: u64) -> Result<(u64, i64)> {
        let second = expiry.div_ceil(1000);
        let cell = self.leases.cell(second, now / 1000);
        let lease = cell
            .get_or_try_init(|| async {
                let ttl = lease_ttl(second * 1000, now_millis());
                let granted = self.client.lease_client().grant(ttl, None).await;
                granted.map(|r| r.id()).map_err(|e| etcd_error(what, e))
            })
            .await?;
        Ok((second, *lease))
    }

    /// Runs `request` with the lease for `expiry`, and once more with a new lease when etcd
    /// no longer knows the one at hand (revoked by someone else, or run out early because
    /// the server's clock is ahead of ours).
    async fn with_lease<T, F>(
        &self,
        what: &'static str,
        expiry: u64,
        now: u64,
        mut request: impl FnMut(i64) -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let (second, lease) = self.lease(what, expiry, now).await?;
        match request(lease).await {
            Err(e) if lease_not_found(&e) => {
                self.leases.forget(second, lease);
                let (_, lease) = self.lease(what, expiry, now).await?;
                request(lease).await.map_err(|e| etcd_error(what, e))
            }
            result => result.map_err(|e| etcd_error(what, e)),
        }
    }

    /// The live session under `key` with its expiry and version (the key's mod revision),
    /// in one range request.
    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        let resp = self
            .kv()
            .get(self.key(key), None)
            .await
            .map_err(|e| etcd_error(WHAT, e))?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let (expiry, data) = split_expiry(kv.value())?;
        // The lease may outlive the expiry by up to a second: the value decides.
        if expiry <= now_millis() {
            return Ok(None);
        }
        let version = u64::try_from(kv.mod_revision()).unwrap_or(0);
        record(data.to_vec(), expiry, version).map(Some)
    }

    /// Writes only when the live session's mod revision is `expected` (`None`: only when
    /// no live session is stored), in one transaction; see the README for its shape.
    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        let expected = match expected.map(i64::try_from) {
            None => None,
            Some(Ok(revision)) => Some(revision),
            // No key has such a revision.
            Some(Err(_)) => return Ok(None),
        };
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        let full = self.key(key);
        // The value starts with the expiry, big-endian, so it sorts below `now + 1` exactly
        // when the session has expired (a value compare is false for a missing key).
        let expired = Compare::value(
            full.clone(),
            CompareOp::Less,
            now.saturating_add(1).to_be_bytes().to_vec(),
        );
        let txn = |write: TxnOp| match expected {
            // At the expected revision and not expired.
            Some(revision) => Txn::new()
                .when([Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::txn(
                    Txn::new().when([expired.clone()]).or_else([write]),
                )]),
            // Absent, or present and expired.
            None => Txn::new()
                .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                .and_then([write.clone()])
                .or_else([TxnOp::txn(
                    Txn::new().when([expired.clone()]).and_then([write]),
                )]),
        };
        let resp = if expiry <= now {
            // Already expired: a delete, never a key without a lease.
            let write = TxnOp::delete(full.clone(), None);
            self.kv()
                .txn(txn(write))
                .await
                .map_err(|e| etcd_error(WHAT, e))?
        } else {
            self.with_lease(WHAT, expiry, now, |lease| {
                let write = TxnOp::put(
                    full.clone(),
                    encode(expiry, data),
                    Some(PutOptions::new().with_lease(lease)),
                );
                let mut kv = self.kv();
                let txn = txn(write);
                async move { kv.txn(txn).await }
            })
            .await?
        };
        if !written(&resp) {
            return Ok(None);
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Some(u64::try_from(revision).unwrap_or(0)))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        const WHAT: &str = "committing a session";
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        if expiry <= now {
            // Already expired: remove what is there, never write a key without a lease.
            return self.delete(key).await;
        }
        let full = self.key(key);
        self.with_lease(WHAT, expiry, now, |lease| {
            let (mut kv, key, value) = (self.kv(), full.clone(), encode(expiry, data));
            async move {
                kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await
        .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        const WHAT: &str = "deleting a session";
        self.kv()
            .delete(self.key(key), None)
            .await
            .map_err(|e| etcd_error(WHAT, e))
            .map(drop)
    }

    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing the sessions";
        let now = now_millis();
        let mut out = Vec::new();
        self.scan(WHAT, |kv| {
            // Keys that are not UTF-8, or values too short to hold an expiry, were not
            // written by this store: skipped, like expired ones.
            let Some(key) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            else {
                return;
            };
            if let Ok((expiry, data)) = split_expiry(kv.value())
                && expiry > now
            {
                out.push((key.to_owned(), data.to_vec()));
            }
        })
        .await?;
        Ok(out)
    }
}

/// Whether a transaction of [`Inner::commit_if`] wrote (its put or delete ran, at any
/// depth).
fn written(resp: &TxnResponse) -> bool {
    resp.op_responses().into_iter().any(|op| match op {
        TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) => true,
        TxnOpResponse::Txn(inner) => written(&inner),
        TxnOpResponse::Get(_) => false,
    })
}

// ---------------------------------------------------------------------------------------
// Shared leases

/// The leases of one store's keys, by the second in which their sessions expire: granted by
/// the first commit that needs one and used by every later commit with an expiry in that
/// second. Seconds that have passed are dropped as new ones come in (their leases have run
/// out), and at most [`MAX_LEASES`] are kept.
#[derive(Default)]
struct Leases {
    by_second: Mutex<BTreeMap<u64, Arc<OnceCell<i64>>>>,
}

impl Leases {
    /// The lease for keys expiring in `second` (unix seconds), granted or still to grant.
    fn cell(&self, second: u64, now: u64) -> Arc<OnceCell<i64>> {
        // A panic while holding the map cannot leave it inconsistent: every change is one
        // call on it.
        let mut map = self
            .by_second
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = map.get(&second) {
            return Arc::clone(cell);
        }
        // Leases whose second has passed have run out: keep the rest.
        *map = map.split_off(&now.saturating_add(1));
        while map.len() >= MAX_LEASES {
            map.pop_first();
        }
        Arc::clone(map.entry(second).or_default())
    }

    /// Forgets `lease` for `second`, which etcd no longer knows; the next caller grants
    /// another. A lease granted meanwhile by a concurrent caller stays.
    fn forget(&self, second: u64, lease: i64) {
        let mut map = self
            .by_second
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&second).and_then(|cell| cell.get()) == Some(&lease) {
            map.remove(&second);
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a
/// prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (never for a UTF-8 prefix): to the end of the keyspace.
    vec![0]
}

// ---------------------------------------------------------------------------------------
// Expiry and value layout: expiry (u64 BE, unix ms) | data

const EXPIRY_LEN: usize = 8;

fn expiry_millis(expiry: OffsetDateTime) -> u64 {
    let ms = expiry.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(ms.clamp(0, i128::from(i64::MAX))).unwrap_or(0)
}

fn now_millis() -> u64 {
    expiry_millis(OffsetDateTime::now_utc())
}

/// A [`Record`] of data stored until `expiry` (unix ms) at `version`.
fn record(data: Vec<u8>, expiry: u64, version: u64) -> Result<Record> {
    let expiry = OffsetDateTime::from_unix_timestamp_nanos(i128::from(expiry) * 1_000_000)
        .map_err(|_| {
            Error::new(ErrorKind::Codec, "a stored expiry is out of range").with_backend(BACKEND)
        })?;
    Ok(Record::new(data, expiry, version))
}

/// The lease TTL for an expiry still ahead: whole seconds, rounded up (at least 1), so the
/// key never goes before its session does.
fn lease_ttl(expiry: u64, now: u64) -> i64 {
    i64::try_from(expiry.saturating_sub(now).div_ceil(1000).max(1)).unwrap_or(i64::MAX)
}

fn encode(expiry: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_LEN + data.len());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn split_expiry(value: &[u8]) -> Result<(u64, &[u8])> {
    let (word, rest) = value.split_first_chunk::<EXPIRY_LEN>().ok_or_else(|| {
        Error::new(
            ErrorKind::Codec,
            "a stored value is shorter than its 8-byte expiry",
        )
        .with_backend(BACKEND)
    })?;
    Ok((u64::from_be_bytes(*word), rest))
}

// ---------------------------------------------------------------------------------------
// The store traits

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // No touch: a lease's TTL cannot be moved (keep-alive only restarts it at its
        // original TTL), and the millisecond expiry lives in the value, so extending a
        // session means a new lease and a new value: a commit. Leases count whole
        // seconds, but reads check the millisecond expiry kept in the value, so the
        // expiry a caller sees is exact to the millisecond.
        Capabilities::new()
            .with_iterate()
            .with_native_ttl()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.find_record(key).await?.map(|record| record.data))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        self.inner.commit(key, data, expiry).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        self.inner.find_record(key).await
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        self.inner.commit_if(key, data, expiry, expected).await
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for EtcdStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.inner.all().await
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message).with_backend(BACKEND)
}

/// Whether etcd refused a request because the lease it names does not exist (any more).
fn lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::NotFound && s.message().contains("lease not found"))
}

fn etcd_error(what: &'static str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    let kind = match &e {
        // tonic reports its own request timeout as `Cancelled`.
        E::GRpcStatus(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
            ErrorKind::Timeout
        }
        E::GRpcStatus(s) if s.code() == Code::Unavailable => ErrorKind::Connection,
        E::TransportError(_) | E::IoError(_) => ErrorKind::Connection,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::EndpointError(_) => ErrorKind::Config,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_endpoints_and_credentials() {
        let (eps, user) = parse_url("http://127.0.0.1:2379").unwrap();
        assert_eq!(eps, ["http://127.0.0.1:2379"]);
        assert!(user.is_none());
        let (eps, user) = parse_url("http://root:p%40ss@10.0.0.1:2379, http://10.0.0.2").unwrap();
        assert_eq!(eps, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(user, Some(("root".to_owned(), "p@ss".to_owned())));
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in [
            "not a url",
            "etcd://127.0.0.1:2379",
            "http://127.0.0.1:notaport",
            "http://127.0.0.1:2379/v3",
            "http://127.0.0.1:2379,",
        ] {
            let err = EtcdStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:#}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error() {
        let err = EtcdStore::from_url("http://127.0.0.1:1").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err:#}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds() {
        let now = 1_700_000_000_000;
        assert_eq!(lease_ttl(now + 1, now), 1);
        assert_eq!(lease_ttl(now + 1000, now), 1);
        assert_eq!(lease_ttl(now + 1001, now), 2);
        assert_eq!(lease_ttl(now + 86_400_000, now), 86_400);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"scs:session:"), b"scs:session;");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn values_round_trip_and_short_ones_are_codec_errors() {
        let v = encode(42, b"data");
        assert_eq!(split_expiry(&v).unwrap(), (42, &b"data"[..]));
        assert_eq!(split_expiry(&encode(7, b"")).unwrap(), (7, &b""[..]));
        for short in [&b""[..], b"1234567"] {
            assert_eq!(split_expiry(short).unwrap_err().kind(), ErrorKind::Codec);
        }
    }

    /// A store on a fresh prefix of the test server, or `None` (skipped) when there is no
    /// server and `SCS_REQUIRE_BACKENDS` is not set.
    async fn server_store() -> Option<EtcdStore> {
        let url = scs_conformance::env_url("SCS_ETCD_URL", "http://127.0.0.1:2379");
        let base = match EtcdStore::from_url(&url).await {
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
            EtcdStore::builder(base.client().clone())
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    }

    async fn lease_of(store: &EtcdStore, key: &str) -> i64 {
        let resp = store
            .inner
            .kv()
            .get(store.inner.key(key), None)
            .await
            .unwrap();
        resp.kvs().first().map_or(0, KeyValue::lease)
    }

    /// Seconds left on a lease; -1 once it is gone.
    async fn lease_ttl_left(store: &EtcdStore, lease: i64) -> i64 {
        store
            .client()
            .lease_client()
            .time_to_live(lease, None)
            .await
            .unwrap()
            .ttl()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_expiring_in_one_second_share_a_lease() {
        let Some(store) = server_store().await else {
            return;
        };
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store.commit("a", b"a", hour).await.unwrap();
        store.commit("b", b"b", hour).await.unwrap();
        let lease = lease_of(&store, "a").await;
        assert_ne!(lease, 0);
        assert_eq!(lease_of(&store, "b").await, lease);
        // The lease runs at least as long as the sessions on it.
        assert!(lease_ttl_left(&store, lease).await >= 3599);
        store.commit("a", b"a2", hour).await.unwrap();
        assert_eq!(lease_of(&store, "a").await, lease);

        // Another second, another lease.
        let later = hour + Duration::from_secs(5);
        store.commit("c", b"c", later).await.unwrap();
        let other = lease_of(&store, "c").await;
        assert_ne!(other, lease);
        assert!(lease_ttl_left(&store, other).await >= 3604);

        // Deleting or moving one session leaves the others on its lease alone.
        store.delete("a").await.unwrap();
        store.commit("b", b"b2", later).await.unwrap();
        assert_eq!(lease_of(&store, "b").await, other);
        assert!(lease_ttl_left(&store, lease).await > 0);
        assert_eq!(store.find("c").await.unwrap().as_deref(), Some(&b"c"[..]));
        assert_eq!(store.find("b").await.unwrap().as_deref(), Some(&b"b2"[..]));
        assert_eq!(store.clear().await.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_commits_of_a_second_wait_for_one_grant() {
        let Some(store) = server_store().await else {
            return;
        };
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let keys: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
        let commits = keys.iter().map(|key| store.commit(key, b"v", hour));
        for result in futures_util::future::join_all(commits).await {
            result.unwrap();
        }
        let first = lease_of(&store, &keys[0]).await;
        assert_ne!(first, 0);
        for key in &keys {
            assert_eq!(
                lease_of(&store, key).await,
                first,
                "{key} has a lease of its own"
            );
        }
        assert_eq!(store.clear().await.unwrap(), keys.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_etcd_no_longer_knows_is_granted_anew() {
        let Some(store) = server_store().await else {
            return;
        };
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store.commit("a", b"a", hour).await.unwrap();
        let lease = lease_of(&store, "a").await;
        // Someone else revokes it (which deletes its keys).
        store.client().lease_client().revoke(lease).await.unwrap();
        assert_eq!(store.find("a").await.unwrap(), None);

        store.commit("b", b"b", hour).await.unwrap();
        let renewed = lease_of(&store, "b").await;
        assert!(renewed != 0 && renewed != lease);
        assert_eq!(store.find("b").await.unwrap().as_deref(), Some(&b"b"[..]));

        store.client().lease_client().revoke(renewed).await.unwrap();
        let v = store.commit_if("c", b"c", hour, None).await.unwrap();
        assert!(v.is_some(), "a conditional commit is retried the same way");
        assert_eq!(store.find("c").await.unwrap().as_deref(), Some(&b"c"[..]));
        store.clear().await.unwrap();
    }

    #[test]
    fn passed_seconds_are_dropped_and_the_lease_count_is_bounded() {
        let leases = Leases::default();
        let cell = leases.cell(100, 50);
        assert!(cell.set(7).is_ok());
        assert!(
            Arc::ptr_eq(&cell, &leases.cell(100, 60)),
            "one cell a second"
        );
        leases.cell(101, 60);
        // Second 100 has passed by 100: the next new second drops it.
        leases.cell(102, 100);
        let seconds = |l: &Leases| {
            l.by_second
                .lock()
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(seconds(&leases), [101, 102]);

        let many = u64::try_from(MAX_LEASES).unwrap();
        for second in 1000..1000 + many + 10 {
            leases.cell(second, 0);
        }
        let kept = seconds(&leases);
        assert_eq!(kept.len(), MAX_LEASES);
        assert_eq!(kept.last(), Some(&(1000 + many + 9)), "the latest are kept");

        // Forgetting needs the lease it holds.
        let cell = leases.cell(5000, 0);
        assert!(cell.set(9).is_ok());
        leases.forget(5000, 8);
        assert!(Arc::ptr_eq(&cell, &leases.cell(5000, 0)));
        leases.forget(5000, 9);
        assert!(!Arc::ptr_eq(&cell, &leases.cell(5000, 0)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compare_and_set_commits_use_mod_revisions() {
        let Some(store) = server_store().await else {
            return;
        };
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let v1 = store
            .commit_if("k", b"one", hour, None)
            .await
            .unwrap()
            .unwrap();
        let raw = store
            .inner
            .kv()
            .get(store.inner.key("k"), None)
            .await
            .unwrap();
        assert_eq!(raw.kvs()[0].mod_revision(), i64::try_from(v1).unwrap());
        let first = lease_of(&store, "k").await;
        assert!(
            store
                .commit_if("k", b"x", hour, None)
                .await
                .unwrap()
                .is_none()
        );

        let v2 = store
            .commit_if("k", b"two", hour, Some(v1))
            .await
            .unwrap()
            .unwrap();
        assert!(v2 > v1);
        let second = lease_of(&store, "k").await;
        assert_eq!(second, first, "same expiry, same lease");
        assert!(
            store
                .commit_if("k", b"x", hour, Some(v1))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            lease_of(&store, "k").await,
            second,
            "a conflict changes nothing"
        );
        assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&b"two"[..]));

        // A past expiry at the current version deletes the key.
        let past = OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(
            store
                .commit_if("k", b"", past, Some(v1))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .commit_if("k", b"", past, Some(v2))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.count().await.unwrap(), 0);
        store.clear().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_key_its_lease_still_holds_counts_as_absent() {
        let Some(store) = server_store().await else {
            return;
        };
        // Leases count whole seconds: a key outlives the expiry in its value by up to one.
        let expired = encode(now_millis() - 10, b"old");
        let put = store
            .inner
            .kv()
            .put(store.inner.key("e"), expired, None)
            .await
            .unwrap();
        let held = u64::try_from(put.header().unwrap().revision()).unwrap();
        assert_eq!(store.find_record("e").await.unwrap(), None);
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        assert!(
            store
                .commit_if("e", b"x", hour, Some(held))
                .await
                .unwrap()
                .is_none(),
            "its own revision does not match once expired"
        );
        let v = store.commit_if("e", b"new", hour, None).await.unwrap();
        assert!(v.is_some_and(|v| v > held));
        assert_eq!(store.find("e").await.unwrap().as_deref(), Some(&b"new"[..]));
        store.clear().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_too_short_for_its_expiry_is_a_codec_error() {
        let Some(store) = server_store().await else {
            return;
        };
        store
            .inner
            .kv()
            .put(store.inner.key("short"), b"abc".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(
            store.find("short").await.unwrap_err().kind(),
            ErrorKind::Codec
        );
        assert!(store.all().await.unwrap().is_empty(), "all() skips it");
        store.clear().await.unwrap();
    }

    #[tokio::test]
    async fn empty_prefix_is_a_config_error_and_debug_hides_the_client() {
        // A client for a server that is not there: building it sends nothing.
        let Ok(client) = Client::connect(["http://127.0.0.1:1"], None).await else {
            return;
        };
        let err = EtcdStore::builder(client.clone())
            .prefix("")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let store = EtcdStore::builder(client).prefix("app/").build().unwrap();
        assert_eq!(store.inner.key("k"), "app/k");
        let debug = format!("{store:?}");
        assert!(debug.contains("app/"), "{debug}");
    }
}
