use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};
use scs_core::time::OffsetDateTime;
use scs_core::{
    Capabilities, Entry, Error, ErrorKind, IterableStore, Record, Result, Store, async_trait,
};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-document cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// The collection used unless the builder names another.
const DEFAULT_COLLECTION: &str = "sessions";
/// The database used when the URL names none.
const DEFAULT_DATABASE: &str = "scs";
/// The name of the TTL index [`MongoStore::migrate`] creates.
const TTL_INDEX: &str = "expiry_ttl";
/// The server's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// A session store on MongoDB: one document per session, `{_id: key, data: binary,
/// expiry: date, version: long}`.
///
/// Every query filters on `expiry > now`, so an expired session is never returned even
/// though the server's TTL monitor may remove it a minute late. [`migrate`](Self::migrate)
/// creates the TTL index; a background task deletes expired documents too (every minute by
/// default), so expired data goes even on servers whose TTL sweep lags or is off. Cloning is
/// cheap; dropping the last clone stops the task.
///
/// Every write gives the document a new random `version`; compare-and-set commits
/// ([`Store::commit_if`]) filter on it, so two requests on one session never overwrite each
/// other's changes.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_mongostore::MongoStore;
///
/// let store = MongoStore::from_url("mongodb://127.0.0.1:27017/app").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

struct Inner {
    collection: Collection<Document>,
}

impl Inner {
    async fn delete_expired(&self) -> Result<u64> {
        let result = self
            .collection
            .delete_many(doc! { "expiry": { "$lte": now() } })
            .await
            .map_err(|e| map_err(e, "deleting expired sessions"))?;
        Ok(result.deleted_count)
    }
}

/// Now, as a BSON date (milliseconds).
fn now() -> DateTime {
    to_bson_date(OffsetDateTime::now_utc())
}

/// A BSON date, truncated to the millisecond (never later than the instant given).
fn to_bson_date(t: OffsetDateTime) -> DateTime {
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    DateTime::from_millis(i64::try_from(millis).unwrap_or(if millis < 0 {
        i64::MIN
    } else {
        i64::MAX
    }))
}

/// Maps a driver error to the core error, keeping it as the source.
fn map_err(err: mongodb::error::Error, what: &'static str) -> Error {
    use mongodb::error::ErrorKind as K;
    let kind = match &*err.kind {
        K::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        K::Io(_)
        | K::ServerSelection { .. }
        | K::ConnectionPoolCleared { .. }
        | K::DnsResolve { .. }
        | K::Authentication { .. }
        | K::Shutdown => ErrorKind::Connection,
        K::InvalidArgument { .. } | K::InvalidTlsConfig { .. } => ErrorKind::Config,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, what)
        .with_backend(BACKEND)
        .with_source(err)
}

/// True for the server's duplicate-key error: an upsert that found no matching document
/// tried to insert an `_id` that exists.
fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    match &*err.kind {
        K::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        K::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message).with_backend(BACKEND)
}

/// Collection names: `[A-Za-z_][A-Za-z0-9_]{0,62}`, like the SQL stores' table names.
fn validate_collection(name: &str) -> Result<()> {
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
            "invalid collection name {name:?}: use 1 to 63 of [A-Za-z0-9_], not starting with a digit"
        )))
    }
}

/// Database names: 1 to 63 of `[A-Za-z0-9_-]` (MongoDB forbids `/\. "$` and more).
fn validate_database(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(config_error(format!(
            "invalid database name {name:?}: use 1 to 63 of [A-Za-z0-9_-]"
        )))
    }
}

impl MongoStore {
    /// A store on `client` with the defaults: the database named in the client's URL (or
    /// `scs`), the collection `sessions`, and a cleanup task every minute when called inside
    /// a Tokio runtime (outside one there is no task; expired sessions are still never
    /// returned).
    pub fn new(client: Client) -> Self {
        let builder = Self::builder(client);
        if scs_tokio::runtime_available()
            && let Ok(store) = builder.clone().build()
        {
            return store;
        }
        builder.build_unchecked()
    }

    /// A builder for the database, collection and cleanup interval.
    pub fn builder(client: Client) -> MongoStoreBuilder {
        MongoStoreBuilder {
            client,
            database: None,
            collection: DEFAULT_COLLECTION.to_owned(),
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Connects with the driver's default options and builds a store with the defaults
    /// (see [`new`](Self::new)). The database is the URL's path (`mongodb://host/app`), or
    /// `scs`. The driver connects lazily: an unreachable server shows at the first call.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the URL is malformed; [`ErrorKind::Connection`] when a
    /// `mongodb+srv` URL cannot be resolved.
    pub async fn from_url(url: &str) -> Result<Self> {
        let client = Client::with_uri_str(url)
            .await
            .map_err(|e| map_err(e, "parsing the MongoDB URL"))?;
        let builder = Self::builder(client);
        if let Some(db) = &builder.client.default_database() {
            validate_database(db.name())?;
        }
        if scs_tokio::runtime_available() {
            builder.build()
        } else {
            builder.cleanup_interval(None).build()
        }
    }

    /// Creates the TTL index on `expiry` (`expireAfterSeconds: 0`), which also creates the
    /// collection. Idempotent; nothing is created anywhere else.
    ///
    /// # Errors
    /// [`ErrorKind::Connection`] when the server cannot be reached, [`ErrorKind::Backend`]
    /// when it refuses the index.
    pub async fn migrate(&self) -> Result<()> {
        let index = IndexModel::builder()
            .keys(doc! { "expiry": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_owned())
                    .expire_after(Duration::ZERO)
                    .build(),
            )
            .build();
        self.inner
            .collection
            .create_index(index)
            .await
            .map_err(|e| map_err(e, "creating the sessions TTL index"))?;
        Ok(())
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Deletes every expired document now and returns how many went.
    ///
    /// # Errors
    /// The driver's error, mapped.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// The collection the sessions live in.
    pub fn collection(&self) -> &Collection<Document> {
        &self.inner.collection
    }
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's options may hold credentials: show only the names.
        f.debug_struct("MongoStore")
            .field("database", &self.inner.collection.namespace().db)
            .field("collection", &self.inner.collection.name())
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`MongoStore`].
#[derive(Clone)]
#[must_use]
pub struct MongoStoreBuilder {
    client: Client,
    database: Option<String>,
    collection: String,
    cleanup_interval: Option<Duration>,
}

impl std::fmt::Debug for MongoStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStoreBuilder")
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("cleanup_interval", &self.cleanup_interval)
            .finish()
    }
}

impl MongoStoreBuilder {
    /// The database (default: the one named in the client's URL, or `scs`).
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// The collection (default `sessions`); `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// How often expired documents are deleted; `None` for no cleanup task (default: one
    /// minute). The TTL index removes them too, on the server's own schedule.
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an invalid database or collection name, a zero interval,
    /// or a cleanup task asked for outside a Tokio runtime.
    pub fn build(self) -> Result<MongoStore> {
        validate_collection(&self.collection)?;
        if let Some(db) = &self.database {
            validate_database(db)?;
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

    fn build_unchecked(self) -> MongoStore {
        let db = match &self.database {
            Some(name) => self.client.database(name),
            None => self
                .client
                .default_database()
                .unwrap_or_else(|| self.client.database(DEFAULT_DATABASE)),
        };
        MongoStore {
            inner: Arc::new(Inner {
                collection: db.collection(&self.collection),
            }),
            cleanup: None,
        }
    }
}

/// A new version, as stored.
fn fresh_version() -> i64 {
    // new_version() is at most i64::MAX.
    stored_version(scs_core::new_version()).unwrap_or(i64::MAX)
}

fn binary(data: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: data.to_vec(),
    }
}

/// A version as stored: a signed 64-bit integer ([`scs_core::new_version`] fits one).
fn stored_version(version: u64) -> Option<i64> {
    i64::try_from(version).ok()
}

/// The `version` field of a stored document. A document written before versions were kept
/// has none: it reads as version 0, which [`scs_core::new_version`] never makes.
fn version_of(doc: &Document) -> Result<u64> {
    let version = match doc.get("version") {
        None | Some(Bson::Null) => Some(0),
        Some(Bson::Int64(v)) => u64::try_from(*v).ok(),
        Some(Bson::Int32(v)) => u64::try_from(*v).ok(),
        Some(_) => None,
    };
    version.ok_or_else(|| {
        Error::new(
            ErrorKind::Backend,
            "a session document's version is not a non-negative integer",
        )
        .with_backend(BACKEND)
    })
}

/// The `expiry` field of a stored document.
fn expiry_of(doc: &Document) -> Result<OffsetDateTime> {
    let expiry = match doc.get("expiry") {
        Some(Bson::DateTime(t)) => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.timestamp_millis()) * 1_000_000)
                .ok()
        }
        _ => None,
    };
    expiry.ok_or_else(|| {
        Error::new(ErrorKind::Backend, "a session document has no date expiry")
            .with_backend(BACKEND)
    })
}

/// The `data` field of a stored document.
fn data_of(doc: &Document) -> Result<Vec<u8>> {
    match doc.get("data") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        _ => Err(Error::new(
            ErrorKind::Backend,
            "a session document has no binary data field",
        )
        .with_backend(BACKEND)),
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // No native TTL declared: the server's TTL monitor is periodic (60 s on mongod), so
        // the cleanup task is what bounds how long expired data is kept.
        Capabilities::new()
            .with_iterate()
            .with_touch()
            .with_versioned()
    }

    async fn find(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let found = self
            .inner
            .collection
            .find_one(doc! { "_id": key, "expiry": { "$gt": now() } })
            .projection(doc! { "data": 1 })
            .await
            .map_err(|e| map_err(e, "finding a session"))?;
        found.as_ref().map(data_of).transpose()
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let expiry = to_bson_date(expiry);
        if expiry <= now() {
            // Already expired: leave nothing behind.
            return self.delete(key).await;
        }
        self.inner
            .collection
            .update_one(
                doc! { "_id": key },
                doc! { "$set": {
                    "data": binary(data),
                    "expiry": expiry,
                    "version": fresh_version(),
                } },
            )
            .upsert(true)
            .await
            .map_err(|e| map_err(e, "committing a session"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner
            .collection
            .delete_one(doc! { "_id": key })
            .await
            .map_err(|e| map_err(e, "deleting a session"))?;
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let result = self
            .inner
            .collection
            .update_one(
                doc! { "_id": key, "expiry": { "$gt": now() } },
                doc! { "$set": { "expiry": to_bson_date(expiry) } },
            )
            .await
            .map_err(|e| map_err(e, "touching a session"))?;
        Ok(result.matched_count > 0)
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        let found = self
            .inner
            .collection
            .find_one(doc! { "_id": key, "expiry": { "$gt": now() } })
            .projection(doc! { "data": 1, "expiry": 1, "version": 1 })
            .await
            .map_err(|e| map_err(e, "finding a session"))?;
        found
            .map(|doc| {
                Ok(Record::new(
                    data_of(&doc)?,
                    expiry_of(&doc)?,
                    version_of(&doc)?,
                ))
            })
            .transpose()
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        const WHAT: &str = "committing a session";
        let now = now();
        let expiry = to_bson_date(expiry);
        let new = fresh_version();
        let version = new.unsigned_abs();
        let set = doc! { "$set": { "data": binary(data), "expiry": expiry, "version": new } };
        let Some(expected) = expected else {
            // Only when no live document exists: the filter matches a missing or an expired
            // one. Missing: the upsert inserts it. Live: the filter does not match, and the
            // insert of an existing `_id` fails with a duplicate key: a conflict. (A past
            // expiry writes an expired document, which nothing returns and the cleanup
            // removes.)
            return match self
                .inner
                .collection
                .update_one(doc! { "_id": key, "expiry": { "$lte": now } }, set)
                .upsert(true)
                .await
            {
                Ok(_) => Ok(Some(version)),
                Err(e) if is_duplicate_key(&e) => Ok(None),
                Err(e) => Err(map_err(e, WHAT)),
            };
        };
        // No stored document can hold a version that does not fit the field.
        let Some(expected) = stored_version(expected) else {
            return Ok(None);
        };
        let mut filter = doc! { "_id": key, "expiry": { "$gt": now }, "version": expected };
        if expected == 0 {
            // Written before versions were kept: no version field.
            filter.insert("version", doc! { "$in": [0_i64, Bson::Null] });
        }
        let matched = if expiry <= now {
            // Already expired: delete the document, when it is the expected one.
            self.inner
                .collection
                .delete_one(filter)
                .await
                .map_err(|e| map_err(e, WHAT))?
                .deleted_count
        } else {
            self.inner
                .collection
                .update_one(filter, set)
                .await
                .map_err(|e| map_err(e, WHAT))?
                .matched_count
        };
        Ok((matched == 1).then_some(version))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for MongoStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let docs: Vec<Document> = self
            .inner
            .collection
            .find(doc! { "expiry": { "$gt": now() } })
            .projection(doc! { "data": 1 })
            .await
            .map_err(|e| map_err(e, "listing sessions"))?
            .try_collect()
            .await
            .map_err(|e| map_err(e, "listing sessions"))?;
        docs.iter()
            .map(|doc| {
                let key = doc.get_str("_id").map_err(|e| {
                    Error::new(ErrorKind::Backend, "a session document has no string _id")
                        .with_backend(BACKEND)
                        .with_source(e)
                })?;
                Ok((key.to_owned(), data_of(doc)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        for url in ["not a url", "http://127.0.0.1:27017", "mongodb://"] {
            let err = MongoStore::from_url(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:?}");
            assert_eq!(err.backend(), Some(BACKEND));
        }
    }

    #[tokio::test]
    async fn names_are_validated() {
        let client = Client::with_uri_str("mongodb://127.0.0.1:1").await.unwrap();
        for bad in ["", "1abc", "a.b", "a b", "a$", &"x".repeat(64)] {
            let err = MongoStore::builder(client.clone())
                .collection(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        for bad in ["", "a.b", "a/b", "a b"] {
            let err = MongoStore::builder(client.clone())
                .database(bad)
                .cleanup_interval(None)
                .build()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
        let err = MongoStore::builder(client.clone())
            .cleanup_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let store = MongoStore::builder(client)
            .database("my-app")
            .collection("web_sessions")
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert_eq!(store.collection().name(), "web_sessions");
        assert_eq!(store.collection().namespace().db, "my-app");
    }

    #[tokio::test]
    async fn database_comes_from_the_url_and_debug_hides_credentials() {
        let store = MongoStore::from_url("mongodb://user:s3cret@127.0.0.1:1/appdb")
            .await
            .unwrap();
        assert_eq!(store.collection().namespace().db, "appdb");
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        let store = MongoStore::from_url("mongodb://127.0.0.1:1").await.unwrap();
        assert_eq!(store.collection().namespace().db, DEFAULT_DATABASE);
        assert!(store.cleanup.is_some());
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::with_uri_str("mongodb://127.0.0.1:1"))
            .unwrap();
        let store = MongoStore::new(client.clone());
        assert!(store.cleanup.is_none());
        let err = MongoStore::builder(client).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    /// A document written before versions were kept (no `version` field) reads as version
    /// 0, and a compare-and-set on 0 replaces it. Needs a server (`SCS_MONGODB_URL`);
    /// skipped without one unless `SCS_REQUIRE_BACKENDS` is set.
    #[tokio::test]
    async fn a_document_without_a_version_is_version_zero() {
        let url =
            std::env::var("SCS_MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
        let mut options = mongodb::options::ClientOptions::parse(&url).await.unwrap();
        options.server_selection_timeout = Some(Duration::from_secs(3));
        options.direct_connection = Some(true);
        let store = MongoStore::builder(Client::with_options(options).unwrap())
            .database("scs_test")
            .collection(format!("legacy_{}", scs_core::new_version()))
            .cleanup_interval(None)
            .build()
            .unwrap();
        if let Err(e) = store.migrate().await {
            assert!(
                std::env::var_os("SCS_REQUIRE_BACKENDS").is_none(),
                "no server at {url}: {e:#}"
            );
            eprintln!("skipped: no server at {url}");
            return;
        }
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store
            .collection()
            .insert_one(doc! { "_id": "k", "data": binary(b"old"), "expiry": to_bson_date(expiry) })
            .await
            .unwrap();
        let record = store.find_record("k").await.unwrap().unwrap();
        assert_eq!((record.data.as_slice(), record.version), (&b"old"[..], 0));
        assert_eq!(
            store.commit_if("k", b"x", expiry, Some(1)).await.unwrap(),
            None
        );
        assert_eq!(
            store.commit_if("k", b"x", expiry, None).await.unwrap(),
            None
        );
        let v = store.commit_if("k", b"new", expiry, Some(0)).await.unwrap();
        let record = store.find_record("k").await.unwrap().unwrap();
        assert_eq!(
            (record.data.as_slice(), Some(record.version)),
            (&b"new"[..], v)
        );
        assert_ne!(record.version, 0);
        assert_eq!(
            store.commit_if("k", b"x", expiry, Some(0)).await.unwrap(),
            None
        );
        store.collection().drop().await.unwrap();
    }

    #[test]
    fn bson_dates_truncate_to_the_millisecond() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(to_bson_date(t).timestamp_millis(), 1_700_000_000_123);
        let t = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(to_bson_date(t).timestamp_millis(), -2);
    }
}
