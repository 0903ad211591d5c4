use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::response::Response;
use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt as _;
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;
use serde::de::IgnoredAny;

use crate::BACKEND;

/// The bucket used unless [`NatsStoreBuilder::bucket`] sets another.
pub const DEFAULT_BUCKET: &str = "scs_sessions";

/// Default bucket max age: the backstop for entries the cleanup task never saw.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Timeout [`NatsStore::from_url`] gives the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// NATS's default `max_payload`, when the server did not say.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Room left in each message below `max_payload`.
const PAYLOAD_OVERHEAD: usize = 1024;
const MAX_BUCKET_LEN: usize = 64;
/// The header carrying a value's expiry (unix ms) for the cleanup's headers-only read.
const EXPIRES_HEADER: &str = "Scs-Expires";
/// How long the round trip before a write may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one cleanup sweep may take to list the bucket.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A session store on a NATS JetStream key-value bucket, through an
/// [`async_nats::jetstream::Context`].
///
/// Each session is one key of the bucket (the store key itself), holding the session's
/// expiry (unix milliseconds, 8 bytes big-endian) followed by the session bytes. The bucket
/// keeps one value per key. The expiry is checked on every read; a background task purges
/// expired keys (every minute by default), and the bucket's max age (30 days by default)
/// is a backstop. A session larger than one message is split into chunk keys written before
/// the key that lists them, so a reader never sees a mix of two versions.
///
/// Versions ([`Store::find_record`], [`Store::commit_if`]) are the key's revision, which
/// JetStream compares on publish.
///
/// The bucket is created by [`migrate`](Self::migrate), never silently. Cloning is cheap
/// and clones share the connection; dropping the last clone stops the cleanup task.
///
/// ```no_run
/// # async fn demo() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_natsstore::NatsStore;
/// use std::time::Duration;
///
/// let store = NatsStore::from_url("nats://127.0.0.1:4222").await?;
/// store.migrate().await?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    context: jetstream::Context,
    bucket: String,
    max_age: Duration,
    /// The bucket handle, fetched on first use (or made by `migrate`).
    handle: RwLock<Option<Arc<kv::Store>>>,
}

impl NatsStore {
    /// A store on `context` with the defaults: bucket `scs_sessions`, 30-day max age,
    /// cleanup every minute when built inside a Tokio runtime (outside one there is no
    /// cleanup task; expired sessions are still never returned). Call
    /// [`migrate`](Self::migrate) once to create the bucket.
    pub fn new(context: jetstream::Context) -> Self {
        let builder = Self::builder(context);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.cleanup_interval(None).build_unchecked()
    }

    /// A builder for the bucket name, max age and cleanup interval.
    pub fn builder(context: jetstream::Context) -> NatsStoreBuilder {
        NatsStoreBuilder {
            context,
            bucket: DEFAULT_BUCKET.to_owned(),
            max_age: DEFAULT_MAX_AGE,
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Connects to the server at `url` (`nats://[user:password@]host[:port]`, also
    /// `tls://`) with the defaults, and checks that JetStream answers. The bucket is not
    /// created: call [`migrate`](Self::migrate).
    ///
    /// Connecting times out after 5 s; JetStream requests after async-nats's default of
    /// 5 s. Build an [`async_nats::jetstream::Context`] yourself and use
    /// [`new`](Self::new) or [`builder`](Self::builder) for other settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URL, [`ErrorKind::Connection`] (or
    /// [`ErrorKind::Timeout`]) when the server cannot be reached or has no JetStream.
    pub async fn from_url(url: &str) -> Result<Self> {
        let addr: async_nats::ServerAddr = url.parse().map_err(|e| {
            Error::new(ErrorKind::Config, "parsing the NATS URL")
                .with_backend(BACKEND)
                .with_source(e)
        })?;
        if addr
            .clone()
            .into_inner()
            .host_str()
            .is_none_or(str::is_empty)
        {
            return Err(
                Error::new(ErrorKind::Config, "the NATS URL has no host").with_backend(BACKEND)
            );
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(addr)
            .await
            .map_err(|e| nats_error("connecting to the server", e))?;
        let store = Self::new(jetstream::new(client));
        store.ping().await?;
        Ok(store)
    }

    /// Creates the bucket, or updates its settings (the max age) when it exists: one value
    /// per key, file storage. Idempotent.
    ///
    /// The bucket's stream is made here with the key-value conventions (`KV_<bucket>` on
    /// `$KV.<bucket>.>`, rollups allowed, direct gets) rather than with async-nats's
    /// `create_key_value`, whose account lookup cannot read NATS 2.9's reply.
    ///
    /// # Errors
    /// A connection error, or [`ErrorKind::Backend`] when JetStream refuses the bucket.
    pub async fn migrate(&self) -> Result<()> {
        const WHAT: &str = "creating the sessions bucket";
        let bucket = &self.inner.bucket;
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("scs sessions".to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: self.inner.max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        self.inner
            .context
            .create_or_update_stream(config)
            .await
            .map_err(|e| nats_error(WHAT, e))?;
        // A fresh handle: its cached stream info carries the max age just set.
        self.inner.open(WHAT).await.map(drop)
    }

    /// Asks JetStream for the account's information: checks that the server answers and
    /// has JetStream.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] or [`ErrorKind::Timeout`] when it does not,
    /// [`ErrorKind::Backend`] when JetStream is not enabled for the account.
    pub async fn ping(&self) -> Result<()> {
        const WHAT: &str = "pinging JetStream";
        // The reply is not parsed: async-nats's account type does not fit NATS 2.9's.
        let reply: Response<IgnoredAny> = self
            .inner
            .context
            .request("INFO", &())
            .await
            .map_err(|e| nats_error(WHAT, e))?;
        match reply {
            Response::Ok(_) => Ok(()),
            Response::Err { error } => Err(Error::new(ErrorKind::Backend, WHAT)
                .with_backend(BACKEND)
                .with_source(error)),
        }
    }

    /// The bucket of this store.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The JetStream context this store uses.
    pub fn context(&self) -> &jetstream::Context {
        &self.inner.context
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Purges every expired key now and returns how many sessions went.
    ///
    /// # Errors
    /// A connection or request error; keys purged before it stay purged.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// How many sessions the bucket holds, expired ones not yet purged included.
    ///
    /// # Errors
    /// A connection or request error.
    pub async fn count(&self) -> Result<usize> {
        Ok(self
            .inner
            .session_keys("counting the sessions")
            .await?
            .len())
    }

    /// Purges every key of the bucket: signs everyone out. Returns how many sessions went.
    ///
    /// # Errors
    /// A connection or request error.
    pub async fn clear(&self) -> Result<usize> {
        const WHAT: &str = "deleting every session";
        let n = self.inner.session_keys(WHAT).await?.len();
        let kv = self.inner.kv(WHAT).await?;
        kv.stream.purge().await.map_err(|e| nats_error(WHAT, e))?;
        Ok(n)
    }

    /// Deletes the bucket and everything in it (the inverse of
    /// [`migrate`](Self::migrate)).
    ///
    /// # Errors
    /// A connection or request error.
    pub async fn delete_bucket(&self) -> Result<()> {
        self.inner
            .context
            .delete_key_value(&self.inner.bucket)
            .await
            .map_err(|e| nats_error("deleting the sessions bucket", e))?;
        *self.inner.handle.write().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

impl std::fmt::Debug for NatsStore {
    // Not the context: its client holds the connection options, credentials included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.inner.bucket)
            .field("max_age", &self.inner.max_age)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`NatsStore`].
#[derive(Clone)]
#[must_use]
pub struct NatsStoreBuilder {
    context: jetstream::Context,
    bucket: String,
    max_age: Duration,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for NatsStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStoreBuilder")
            .field("bucket", &self.bucket)
            .field("max_age", &self.max_age)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl NatsStoreBuilder {
    /// The key-value bucket (default `scs_sessions`): 1 to 64 characters of
    /// `[A-Za-z0-9_-]`. One bucket per store keeps stores apart.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = bucket.into();
        self
    }

    /// The bucket's max age, set by [`migrate`](NatsStore::migrate) (default 30 days;
    /// zero for none): JetStream drops any value older than this, a backstop behind the
    /// cleanup task. It must be at least the longest session lifetime: committing a
    /// session that expires later is a `Config` error.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How often expired keys are purged; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task. Nothing is sent to the server.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad bucket name, or when a cleanup interval is set and
    /// no Tokio runtime is running, or the interval is zero.
    pub fn build(self) -> Result<NatsStore> {
        let valid = !self.bucket.is_empty()
            && self.bucket.len() <= MAX_BUCKET_LEN
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the bucket name must be 1 to {MAX_BUCKET_LEN} characters of [A-Za-z0-9_-]"
                ),
            )
            .with_backend(BACKEND));
        }
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

    fn build_unchecked(self) -> NatsStore {
        NatsStore {
            inner: Arc::new(Inner {
                context: self.context,
                bucket: self.bucket,
                max_age: self.max_age,
                handle: RwLock::new(None),
            }),
            cleanup: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Store operations

impl Inner {
    /// The bucket handle: the one `migrate` made, or the existing bucket's.
    async fn kv(&self, what: &'static str) -> Result<Arc<kv::Store>> {
        if let Some(kv) = self
            .handle
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(kv);
        }
        self.open(what).await
    }

    /// Fetches the bucket handle and keeps it for later calls.
    async fn open(&self, what: &'static str) -> Result<Arc<kv::Store>> {
        let kv = Arc::new(
            self.context
                .get_key_value(&self.bucket)
                .await
                .map_err(|e| {
                    Error::new(
                        classify(&e),
                        format!(
                            "{what}: opening bucket `{}` (does it exist? run migrate() once)",
                            self.bucket
                        ),
                    )
                    .with_backend(BACKEND)
                    .with_source(e)
                })?,
        );
        if kv.use_jetstream_prefix || kv.put_prefix.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{what}: buckets behind a JetStream domain, API prefix or mirror are not supported"
                ),
            )
            .with_backend(BACKEND));
        }
        *self.handle.write().unwrap_or_else(|e| e.into_inner()) = Some(kv.clone());
        Ok(kv)
    }

    /// The most one message may carry, below the server's `max_payload` and the bucket's
    /// largest value.
    fn capacity(&self, kv: &kv::Store) -> usize {
        let mut max = self.context.client().max_payload();
        if max == 0 {
            max = DEFAULT_MAX_PAYLOAD;
        }
        let max_value = kv.stream.cached_info().config.max_message_size;
        if let Ok(limit) = usize::try_from(max_value)
            && limit > 0
        {
            max = max.min(limit);
        }
        max.saturating_sub(PAYLOAD_OVERHEAD).max(EXPIRY_LEN + 1)
    }

    async fn get(
        &self,
        kv: &kv::Store,
        key: &str,
        what: &'static str,
    ) -> Result<Option<bytes::Bytes>> {
        Ok(self
            .entry(kv, key, what)
            .await?
            .and_then(|current| current.value))
    }

    /// The last message of `key` with its revision (its stream sequence), in one direct
    /// get.
    async fn entry(
        &self,
        kv: &kv::Store,
        key: &str,
        what: &'static str,
    ) -> Result<Option<Current>> {
        let entry = kv.entry(key).await.map_err(|e| nats_error(what, e))?;
        Ok(entry.map(|entry| Current {
            value: (entry.operation == kv::Operation::Put).then_some(entry.value),
            revision: entry.revision,
        }))
    }

    /// Makes sure the connection works right now, before a write.
    ///
    /// async-nats queues what is published while it reconnects and sends it once it is
    /// back: a write the caller already saw fail (a timeout) would then land later and
    /// overwrite newer data. So no write is handed to the client unless it is connected
    /// and a round trip (a request nobody answers, which the server refuses at once)
    /// just succeeded.
    async fn ensure_connected(&self, what: &'static str) -> Result<()> {
        let client = self.context.client();
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::new(
                ErrorKind::Connection,
                format!("{what}: not connected to the server (a write is never queued for later)"),
            )
            .with_backend(BACKEND));
        }
        let subject = format!("_SCS.PING.{}", new_generation()?);
        match tokio::time::timeout(PING_TIMEOUT, client.request(subject, bytes::Bytes::new())).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(nats_error(what, e)),
            Err(e) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{what}: the server did not answer a ping within {PING_TIMEOUT:?}"),
            )
            .with_backend(BACKEND)
            .with_source(e)),
        }
    }

    /// Publishes `value` as the new value of `key`, with the expiry also in a header, so
    /// that the cleanup can find expired keys without reading their data.
    async fn put(
        &self,
        kv: &kv::Store,
        key: &str,
        expiry: u64,
        value: Vec<u8>,
        what: &'static str,
    ) -> Result<()> {
        self.publish(kv, key, expiry, value, None, what)
            .await
            .map(drop)
    }

    /// [`put`](Self::put), and with `expected` only if the key's last message is that
    /// revision (0: only if the key has no message): the server checks the
    /// `Nats-Expected-Last-Subject-Sequence` header and stores atomically, as
    /// async-nats's `kv::Store::update` does (which cannot add the expiry header). Returns
    /// the new revision, or `None` when the key was at another revision (nothing stored).
    async fn publish(
        &self,
        kv: &kv::Store,
        key: &str,
        expiry: u64,
        value: Vec<u8>,
        expected: Option<u64>,
        what: &'static str,
    ) -> Result<Option<u64>> {
        use async_nats::jetstream::context::PublishErrorKind;
        self.ensure_connected(what).await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EXPIRES_HEADER, expiry.to_string().as_str());
        if let Some(revision) = expected {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                revision.to_string().as_str(),
            );
        }
        let ack = self
            .context
            .publish_with_headers(Self::subject(kv, key), headers, value.into())
            .await
            .map_err(|e| nats_error(what, e))?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if expected.is_some() && e.kind() == PublishErrorKind::WrongLastSequence => {
                Ok(None)
            }
            Err(e) => Err(nats_error(what, e)),
        }
    }

    /// Removes every message of `filter` (a subject or wildcard of this bucket) older than
    /// `before` (a stream sequence), or all of them: no delete marker is left behind.
    async fn purge(
        &self,
        kv: &kv::Store,
        filter: String,
        before: Option<u64>,
        what: &'static str,
    ) -> Result<u64> {
        self.ensure_connected(what).await?;
        let purge = kv.stream.purge().filter(filter);
        let resp = match before {
            Some(seq) => purge.sequence(seq).await,
            None => purge.await,
        };
        resp.map(|r| r.purged).map_err(|e| nats_error(what, e))
    }

    fn subject(kv: &kv::Store, key: &str) -> String {
        format!("{}{key}", kv.prefix)
    }

    /// The live session under `key` with its expiry and version (the revision of the key:
    /// of the manifest for a chunked session), in one direct get (and one more per chunk of
    /// a large session).
    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        const WHAT: &str = "finding a session";
        validate_key(key)?;
        let kv = self.kv(WHAT).await?;
        // A second look when a chunk is missing: the session was replaced while it was read.
        for _ in 0..2 {
            let Some(Current {
                value: Some(value),
                revision,
            }) = self.entry(&kv, key, WHAT).await?
            else {
                return Ok(None);
            };
            let now = now_millis();
            match decode(&value)? {
                Stored::Inline { expiry, data } => {
                    return if expiry > now {
                        record(data.to_vec(), expiry, revision).map(Some)
                    } else {
                        Ok(None)
                    };
                }
                Stored::Chunked(manifest) => {
                    if manifest.expiry <= now {
                        return Ok(None);
                    }
                    if let Some(data) = self.read_chunks(&kv, key, &manifest).await? {
                        return record(data, manifest.expiry, revision).map(Some);
                    }
                }
            }
        }
        // Still incomplete: the session was replaced or deleted twice while it was read.
        Ok(None)
    }

    async fn read_chunks(
        &self,
        kv: &kv::Store,
        key: &str,
        manifest: &Manifest,
    ) -> Result<Option<Vec<u8>>> {
        const WHAT: &str = "reading the chunks of a session";
        let mut data = Vec::with_capacity(usize::try_from(manifest.len).unwrap_or(0));
        for i in 0..manifest.count {
            let chunk = chunk_key(key, &manifest.generation, i);
            let Some(value) = self.get(kv, &chunk, WHAT).await? else {
                return Ok(None);
            };
            let (_, piece) = split_expiry(&value)?;
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
        validate_key(key)?;
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        if expiry <= now {
            // Already expired: remove what is there, never write it.
            return self.delete(key).await;
        }
        let kv = self.kv(WHAT).await?;
        check_max_age(&kv, expiry, now, WHAT)?;
        let capacity = self.capacity(&kv);
        if EXPIRY_LEN + data.len() <= capacity {
            // One put replaces data and expiry together (the bucket keeps one value per key).
            return self
                .put(&kv, key, expiry, encode_inline(expiry, data), WHAT)
                .await;
        }
        // Too big for one message: chunks under a fresh generation first, then the
        // manifest that names them, so a reader sees either the old version or the new one
        // whole.
        let previous = self
            .get(&kv, key, WHAT)
            .await?
            .and_then(|value| match decode(&value) {
                Ok(Stored::Chunked(m)) => Some(m),
                _ => None,
            });
        let manifest = self
            .write_chunks(&kv, key, data, expiry, capacity, WHAT)
            .await?;
        self.put(&kv, key, expiry, encode_manifest(&manifest), WHAT)
            .await?;
        if let Some(old) = previous {
            // The version this one replaced; chunks of versions it never saw (concurrent
            // commits, or a small commit in between) are purged by the cleanup task once
            // their expiry passes.
            let filter = format!("{}.{}.>", Self::subject(&kv, key), old.generation);
            self.purge(&kv, filter, None, WHAT).await?;
        }
        Ok(())
    }

    /// Writes only when the live session's revision is `expected` (`None`: only when no
    /// live session is stored). A small session is one publish that the server stores only
    /// if the key's last message is that revision (0 for none), in the same step.
    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        validate_key(key)?;
        let expiry = expiry_millis(expiry);
        let now = now_millis();
        let kv = self.kv(WHAT).await?;
        if expiry <= now {
            return self.delete_if(&kv, key, expiry, expected, now).await;
        }
        check_max_age(&kv, expiry, now, WHAT)?;
        let capacity = self.capacity(&kv);
        if EXPIRY_LEN + data.len() <= capacity {
            let value = encode_inline(expiry, data);
            let compare = Some(expected.unwrap_or(0));
            let written = self
                .publish(&kv, key, expiry, value.clone(), compare, WHAT)
                .await?;
            if written.is_some() || expected.is_some() {
                return Ok(written);
            }
            // The key has a message. An expired session (or a delete marker) counts as
            // absent: replace it, if it is still the message just read.
            return match self.entry(&kv, key, WHAT).await? {
                Some(current) if !current.is_live(now)? => {
                    let written = self
                        .publish(&kv, key, expiry, value, Some(current.revision), WHAT)
                        .await?;
                    if written.is_some() {
                        self.purge_chunks_of(&kv, key, &current, WHAT).await?;
                    }
                    Ok(written)
                }
                // Live, or purged since: a conflict either way (the caller reloads).
                _ => Ok(None),
            };
        }
        // Too big for one message: read what is there first (its revision and the chunks
        // it lists), and write nothing when it is not the expected version. Then the chunks
        // under a fresh generation, then the manifest, stored only if the key is still at
        // the revision read (or still has no message).
        let current = self.entry(&kv, key, WHAT).await?;
        let live = match &current {
            Some(c) if c.is_live(now)? => Some(c.revision),
            _ => None,
        };
        if live != expected {
            return Ok(None);
        }
        let manifest = self
            .write_chunks(&kv, key, data, expiry, capacity, WHAT)
            .await?;
        let compare = current.as_ref().map_or(0, |c| c.revision);
        let written = self
            .publish(
                &kv,
                key,
                expiry,
                encode_manifest(&manifest),
                Some(compare),
                WHAT,
            )
            .await?;
        match (&written, &current) {
            // The version replaced is exactly the one read: purge its chunks.
            (Some(_), Some(old)) => self.purge_chunks_of(&kv, key, old, WHAT).await?,
            (Some(_), None) => {}
            // Another commit won: the chunks just written belong to nothing.
            (None, _) => {
                let filter = format!("{}.{}.>", Self::subject(&kv, key), manifest.generation);
                self.purge(&kv, filter, None, WHAT).await?;
            }
        }
        Ok(written)
    }

    /// `commit_if` with an expiry already past: when the live version is `expected` (an
    /// expired or no value when `expected` is `None`), replaces the value with an expired
    /// one at that revision (JetStream cannot purge conditionally), then purges the key up
    /// to that write, and the chunks the replaced value listed.
    async fn delete_if(
        &self,
        kv: &kv::Store,
        key: &str,
        expiry: u64,
        expected: Option<u64>,
        now: u64,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "deleting a session";
        let current = self.entry(kv, key, WHAT).await?;
        let live = match &current {
            Some(c) if c.is_live(now)? => Some(c.revision),
            _ => None,
        };
        if live != expected {
            return Ok(None);
        }
        let Some(current) = current else {
            // Nothing stored: a version no message has, never one the key had.
            return Ok(Some(scs_core::new_version()));
        };
        let expired = encode_inline(expiry, &[]);
        let Some(revision) = self
            .publish(kv, key, expiry, expired, Some(current.revision), WHAT)
            .await?
        else {
            return Ok(None);
        };
        // Up to that write only: a commit that landed since is kept.
        self.purge(kv, Self::subject(kv, key), Some(revision + 1), WHAT)
            .await?;
        self.purge_chunks_of(kv, key, &current, WHAT).await?;
        Ok(Some(revision))
    }

    /// Writes `data` as chunks of `capacity` bytes (less the expiry) under a fresh
    /// generation and returns the manifest that names them (not yet stored).
    async fn write_chunks(
        &self,
        kv: &kv::Store,
        key: &str,
        data: &[u8],
        expiry: u64,
        capacity: usize,
        what: &'static str,
    ) -> Result<Manifest> {
        let generation = new_generation()?;
        let mut count = 0u32;
        for (i, piece) in data.chunks(capacity - EXPIRY_LEN).enumerate() {
            let i = u32::try_from(i).map_err(|_| {
                Error::new(ErrorKind::TooLarge, "a session of over 4 billion chunks")
                    .with_backend(BACKEND)
            })?;
            let chunk = chunk_key(key, &generation, i);
            self.put(kv, &chunk, expiry, encode_inline(expiry, piece), what)
                .await?;
            count = i + 1;
        }
        Ok(Manifest {
            expiry,
            generation,
            count,
            len: data.len() as u64,
        })
    }

    /// Purges the chunks `current` lists, when it is a manifest.
    async fn purge_chunks_of(
        &self,
        kv: &kv::Store,
        key: &str,
        current: &Current,
        what: &'static str,
    ) -> Result<()> {
        if let Some(value) = &current.value
            && let Ok(Stored::Chunked(old)) = decode(value)
        {
            let filter = format!("{}.{}.>", Self::subject(kv, key), old.generation);
            self.purge(kv, filter, None, what).await?;
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        const WHAT: &str = "deleting a session";
        validate_key(key)?;
        let kv = self.kv(WHAT).await?;
        // Purge rather than a delete marker: nothing stays behind. The key first, so that
        // readers stop at once, then every chunk it may have had.
        let subject = Self::subject(&kv, key);
        self.purge(&kv, subject.clone(), None, WHAT).await?;
        self.purge(&kv, format!("{subject}.>"), None, WHAT).await?;
        Ok(())
    }

    /// Every key of the bucket that is a session (not a chunk).
    async fn session_keys(&self, what: &'static str) -> Result<Vec<String>> {
        let kv = self.kv(what).await?;
        let keys: Vec<String> = kv
            .keys()
            .await
            .map_err(|e| nats_error(what, e))?
            .try_collect()
            .await
            .map_err(|e| nats_error(what, e))?;
        Ok(keys.into_iter().filter(|k| !k.contains('.')).collect())
    }

    async fn all(&self) -> Result<Vec<Entry>> {
        const WHAT: &str = "listing the sessions";
        let mut out = Vec::new();
        for key in self.session_keys(WHAT).await? {
            match self.find_record(&key).await {
                Ok(Some(record)) => out.push((key, record.data)),
                // Gone since listed, or expired.
                Ok(None) => {}
                // Not written by this store (a key NATS allows but a store key may not
                // have, a value without an expiry): skipped.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Codec) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn delete_expired(&self) -> Result<u64> {
        const WHAT: &str = "purging expired sessions";
        let kv = self.kv(WHAT).await?;
        let now = now_millis();
        let expired = tokio::time::timeout(SWEEP_TIMEOUT, self.expired_keys(&kv, now))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Timeout, WHAT)
                    .with_backend(BACKEND)
                    .with_source(e)
            })??;
        let mut removed = 0;
        for (key, revision) in expired {
            // Only up to the revision seen: a commit that landed since is kept.
            let subject = Self::subject(&kv, &key);
            self.purge(&kv, subject, Some(revision + 1), WHAT).await?;
            if !key.contains('.') {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The key and revision of every value whose expiry header has passed, read with a
    /// headers-only consumer: no session data crosses the wire. Values without the header
    /// were not written by this store and are left alone.
    async fn expired_keys(&self, kv: &kv::Store, now: u64) -> Result<Vec<(String, u64)>> {
        const WHAT: &str = "listing expired sessions";
        use jetstream::consumer::{DeliverPolicy, ReplayPolicy, push::OrderedConfig};
        let consumer = kv
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.context.client().new_inbox(),
                description: Some("scs session cleanup".to_owned()),
                filter_subject: format!("{}>", kv.prefix),
                headers_only: true,
                deliver_policy: DeliverPolicy::LastPerSubject,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error(WHAT, e))?;
        let mut expired = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(expired);
        }
        let mut messages = consumer.messages().await.map_err(|e| nats_error(WHAT, e))?;
        while let Some(message) = messages.try_next().await.map_err(|e| nats_error(WHAT, e))? {
            let info = message.info().map_err(|e| {
                Error::new(ErrorKind::Backend, WHAT)
                    .with_backend(BACKEND)
                    .with_source(e)
            })?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            let expiry = message
                .headers
                .as_ref()
                .and_then(|h| h.get(EXPIRES_HEADER))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            if let (Some(expiry), Some(key)) =
                (expiry, message.subject.strip_prefix(kv.prefix.as_str()))
                && expiry <= now
            {
                expired.push((key.to_owned(), revision));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(expired)
    }
}

/// Store keys are NATS key-value keys: `[-/_=a-zA-Z0-9]`, and no `.`, which separates
/// chunk keys.
fn validate_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'='));
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            "the store key must be characters of [-/_=A-Za-z0-9] (a NATS key-value key without `.`)",
        )
        .with_backend(BACKEND))
    }
}

/// The last message of a key, as [`Inner::entry`] read it.
struct Current {
    /// The value; `None` for a delete or purge marker.
    value: Option<bytes::Bytes>,
    revision: u64,
}

impl Current {
    /// Whether it holds a session that has not expired at `now`.
    fn is_live(&self, now: u64) -> Result<bool> {
        let Some(value) = &self.value else {
            return Ok(false);
        };
        Ok(match decode(value)? {
            Stored::Inline { expiry, .. } => expiry > now,
            Stored::Chunked(manifest) => manifest.expiry > now,
        })
    }
}

/// A session that would outlive the bucket's max age is refused: JetStream would drop it
/// early.
fn check_max_age(kv: &kv::Store, expiry: u64, now: u64, what: &'static str) -> Result<()> {
    let max_age = kv.stream.cached_info().config.max_age;
    if !max_age.is_zero() && Duration::from_millis(expiry.saturating_sub(now)) > max_age {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{what}: the session expires after the bucket's max age ({max_age:?}) would drop it; raise max_age and run migrate()"
            ),
        )
        .with_backend(BACKEND));
    }
    Ok(())
}

fn chunk_key(key: &str, generation: &str, i: u32) -> String {
    format!("{key}.{generation}.{i}")
}

// ---------------------------------------------------------------------------------------
// Expiry and value layout
//
// inline:   expiry (u64 BE, unix ms) | data
// manifest: expiry | CHUNKED (u64 BE) | generation (16 bytes) | count (u32 BE) | len (u64 BE)
// chunk:    expiry (u64 BE) | a slice of the data, stored under `<key>.<generation>.<i>`

/// Bit 63 of the expiry word marks a manifest; no expiry comes near it.
const CHUNKED: u64 = 1 << 63;
const MAX_EXPIRY: u64 = CHUNKED - 1;
const EXPIRY_LEN: usize = 8;
const GEN_LEN: usize = 16;

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
// The store traits

#[async_trait]
impl Store for NatsStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // No native TTL: NATS 2.9 expires values only by the bucket's max age, the same for
        // every key, so the cleanup task removes expired sessions. No touch: the expiry
        // lives in the value, and rewriting the value is a commit.
        Capabilities::new().with_iterate().with_versioned()
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
impl IterableStore for NatsStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        self.inner.all().await
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn codec_error(message: &'static str) -> Error {
    Error::new(ErrorKind::Codec, message).with_backend(BACKEND)
}

fn nats_error<E>(what: &'static str, e: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&e);
    Error::new(kind, what).with_backend(BACKEND).with_source(e)
}

/// The kind of an async-nats error: the first timeout or connection failure found along
/// its chain of sources, else a backend error.
fn classify(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(kind) = kind_of(err) {
            return kind;
        }
        next = err.source();
    }
    ErrorKind::Backend
}

fn kind_of(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use async_nats::jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, PublishError, PublishErrorKind, RequestError,
        RequestErrorKind,
    };
    use async_nats::jetstream::kv::{EntryError, EntryErrorKind, WatchError, WatchErrorKind};
    use async_nats::jetstream::stream::{PurgeError, PurgeErrorKind};
    use async_nats::{ConnectError, ConnectErrorKind};

    if let Some(e) = err.downcast_ref::<RequestError>() {
        return match e.kind() {
            RequestErrorKind::TimedOut => Some(ErrorKind::Timeout),
            // No JetStream behind the subject: not enabled, or not reachable.
            RequestErrorKind::NoResponders => Some(ErrorKind::Connection),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<async_nats::RequestError>() {
        return match e.kind() {
            async_nats::RequestErrorKind::TimedOut => Some(ErrorKind::Timeout),
            async_nats::RequestErrorKind::NoResponders => Some(ErrorKind::Connection),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<PublishError>() {
        return match e.kind() {
            PublishErrorKind::TimedOut => Some(ErrorKind::Timeout),
            PublishErrorKind::BrokenPipe => Some(ErrorKind::Connection),
            PublishErrorKind::MaxPayloadExceeded => Some(ErrorKind::TooLarge),
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<EntryError>() {
        return matches!(e.kind(), EntryErrorKind::TimedOut).then_some(ErrorKind::Timeout);
    }
    if let Some(e) = err.downcast_ref::<WatchError>() {
        return matches!(e.kind(), WatchErrorKind::TimedOut).then_some(ErrorKind::Timeout);
    }
    if let Some(e) = err.downcast_ref::<PurgeError>() {
        return matches!(e.kind(), PurgeErrorKind::TimedOut).then_some(ErrorKind::Timeout);
    }
    if let Some(e) = err.downcast_ref::<CreateKeyValueError>() {
        return match e.kind() {
            CreateKeyValueErrorKind::TimedOut => Some(ErrorKind::Timeout),
            CreateKeyValueErrorKind::InvalidStoreName | CreateKeyValueErrorKind::TooLongHistory => {
                Some(ErrorKind::Config)
            }
            _ => None,
        };
    }
    if let Some(e) = err.downcast_ref::<ConnectError>() {
        return Some(match e.kind() {
            ConnectErrorKind::ServerParse => ErrorKind::Config,
            ConnectErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Connection,
        });
    }
    if err.downcast_ref::<std::io::Error>().is_some() {
        return Some(ErrorKind::Connection);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in [
            "nats://127.0.0.1:notaport",
            "nats://[::1",
            "http://127.0.0.1:4222",
            "",
        ] {
            let err = NatsStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:#}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_connection_error() {
        let err = NatsStore::from_url("nats://127.0.0.1:1").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
            "{err:#}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn store_keys_must_be_nats_keys_without_dots() {
        for key in ["abc-_/=XYZ09", &scs_core::token::generate()] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
        for key in ["", "a.b", "a b", "a*", "a>", "ü"] {
            assert_eq!(
                validate_key(key).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{key}"
            );
        }
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
        bad[10] = b'.';
        assert_eq!(decode(&bad).map(drop).unwrap_err().kind(), ErrorKind::Codec);
    }

    /// A store on a fresh bucket of the test server, or `None` (skipped) when there is no
    /// server and `SCS_REQUIRE_BACKENDS` is not set.
    async fn server_store() -> Option<NatsStore> {
        let url = scs_conformance::env_url("SCS_NATS_URL", "nats://127.0.0.1:4222");
        let base = match NatsStore::from_url(&url).await {
            Ok(base) => base,
            Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").is_ok_and(|v| v == "1") => {
                panic!("{e:#}")
            }
            Err(e) => {
                eprintln!("skipped, no server: {e:#}");
                return None;
            }
        };
        let store = NatsStore::builder(base.context().clone())
            .bucket(scs_conformance::namespace())
            .cleanup_interval(None)
            .build()
            .unwrap();
        store.migrate().await.unwrap();
        Some(store)
    }

    /// Every key of the bucket, chunks included.
    async fn raw_keys(store: &NatsStore) -> usize {
        let kv = store.inner.kv("test").await.unwrap();
        let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
        keys.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_sessions_are_chunked_replaced_and_purged() {
        let Some(store) = server_store().await else {
            return;
        };
        let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);

        store.commit("k", &big, hour).await.unwrap();
        assert_eq!(store.find("k").await.unwrap().as_deref(), Some(&big[..]));
        assert_eq!(raw_keys(&store).await, 1 + 3, "a manifest and three chunks");
        assert_eq!(store.count().await.unwrap(), 1, "chunks are not sessions");
        assert_eq!(store.all().await.unwrap(), [("k".to_owned(), big.clone())]);

        // A large commit purges the chunks of the version it replaces.
        store.commit("k", &big[..1_500_000], hour).await.unwrap();
        assert_eq!(
            store.find("k").await.unwrap().as_deref(),
            Some(&big[..1_500_000])
        );
        assert_eq!(raw_keys(&store).await, 1 + 2);

        // A small one leaves them to the cleanup, which keeps them until their expiry.
        store.commit("k", b"small", hour).await.unwrap();
        assert_eq!(
            store.find("k").await.unwrap().as_deref(),
            Some(&b"small"[..])
        );
        assert_eq!(store.delete_expired().await.unwrap(), 0);
        assert_eq!(raw_keys(&store).await, 1 + 2);

        // delete purges the key and every chunk.
        store.commit("k", &big, hour).await.unwrap();
        store.delete("k").await.unwrap();
        assert_eq!(store.find("k").await.unwrap(), None);
        assert_eq!(raw_keys(&store).await, 0);

        // Expired manifests and chunks are swept; a session counts once.
        let soon = OffsetDateTime::now_utc() + Duration::from_millis(300);
        store.commit("e", &big, soon).await.unwrap();
        store.commit("live", b"x", hour).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.find("e").await.unwrap(), None);
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert_eq!(raw_keys(&store).await, 1);

        store.delete_bucket().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_compare_and_set_commits_keep_the_chunks_consistent() {
        let Some(store) = server_store().await else {
            return;
        };
        let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let hour = OffsetDateTime::now_utc() + Duration::from_secs(3600);

        // Created: the version is the manifest's revision.
        let v1 = store
            .commit_if("k", &big, hour, None)
            .await
            .unwrap()
            .unwrap();
        let r = store.find_record("k").await.unwrap().unwrap();
        assert_eq!((r.data.as_slice(), r.version), (&big[..], v1));
        assert_eq!(raw_keys(&store).await, 1 + 3);
        assert!(
            store
                .commit_if("k", &big, hour, None)
                .await
                .unwrap()
                .is_none()
        );

        // The replaced version's chunks are purged; a stale version writes nothing.
        let v2 = store
            .commit_if("k", &big[..1_500_000], hour, Some(v1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw_keys(&store).await, 1 + 2);
        assert!(
            store
                .commit_if("k", &big, hour, Some(v1))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(raw_keys(&store).await, 1 + 2);
        assert_eq!(store.find_record("k").await.unwrap().unwrap().version, v2);

        // Two large commits on one version: one wins, the loser's chunks are purged.
        let (a, b) = (store.clone(), store.clone());
        let (big_a, big_b) = (big.clone(), big[..2_000_000].to_vec());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.commit_if("k", &big_a, hour, Some(v2)).await }),
            tokio::spawn(async move { b.commit_if("k", &big_b, hour, Some(v2)).await }),
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        assert!(ra.is_some() != rb.is_some(), "exactly one wins");
        let v3 = ra.or(rb).unwrap();
        let chunks = if ra.is_some() { 3 } else { 2 };
        assert_eq!(raw_keys(&store).await, 1 + chunks);

        // A past expiry at the current version removes the key and its chunks.
        let past = OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(
            store
                .commit_if("k", b"", past, Some(v2))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .commit_if("k", b"", past, Some(v3))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.find_record("k").await.unwrap(), None);
        assert_eq!(raw_keys(&store).await, 0);

        // An expired value the cleanup has not purged yet counts as absent.
        let soon = OffsetDateTime::now_utc() + Duration::from_millis(200);
        store.commit("e", b"old", soon).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.find_record("e").await.unwrap(), None);
        assert!(
            store
                .commit_if("e", b"new", hour, None)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.find("e").await.unwrap().as_deref(), Some(&b"new"[..]));

        store.delete_bucket().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_too_short_for_its_expiry_is_a_codec_error() {
        let Some(store) = server_store().await else {
            return;
        };
        let kv = store.inner.kv("test").await.unwrap();
        kv.put("short", bytes::Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let err = store.find("short").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        // all() and the cleanup skip what this store did not write.
        assert!(store.all().await.unwrap().is_empty());
        assert_eq!(store.delete_expired().await.unwrap(), 0);
        let err = store.commit(
            "k",
            b"x",
            OffsetDateTime::now_utc() + Duration::from_secs(40 * 86_400),
        );
        assert_eq!(
            err.await.unwrap_err().kind(),
            ErrorKind::Config,
            "beyond the bucket's max age"
        );
        store.delete_bucket().await.unwrap();
    }

    #[test]
    fn classify_finds_io_errors_down_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&io), ErrorKind::Connection);
        let other = std::fmt::Error;
        assert_eq!(classify(&other), ErrorKind::Backend);
    }
}
