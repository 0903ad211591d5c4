use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;
use parking_lot::RwLock;
use scs_core::entry::now_nanos;
use scs_core::time::OffsetDateTime;
use scs_core::{Capabilities, Entry, IterableStore, Record, Result, Store, async_trait};
use scs_tokio::CleanupTask;

use crate::BACKEND;

/// Default interval of the expired-entry cleanup.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// An in-process session store: a sharded hash map, so that a multi-threaded runtime does
/// not serialize on one lock.
///
/// Expiry is checked on every read; a background task removes expired entries (every
/// minute by default). Cloning is cheap and clones share the same map. Dropping the last
/// clone stops the task.
///
/// ```
/// # #[tokio::main] async fn main() -> scs_core::Result<()> {
/// use scs_core::Store;
/// use scs_memstore::MemoryStore;
/// use std::time::Duration;
///
/// let store = MemoryStore::builder()
///     .cleanup_interval(Some(Duration::from_secs(30)))
///     .build()?;
/// let expiry = scs_core::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
/// store.commit("key", b"data", expiry).await?;
/// assert_eq!(store.find("key").await?.as_deref(), Some(&b"data"[..]));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    cleanup: Option<Arc<CleanupTask>>,
}

/// One shard: a hash table of slots, probed with the key's hash computed once per call
/// (it picks the shard and the bucket). foldhash rather than SipHash: HashDoS resistance
/// comes from the per-store random seed, which foldhash keeps.
type Map = HashTable<Slot>;

/// 64 bytes, and one heap block: the key's bytes and then the data's. The key's hash is
/// kept so that growing a shard's table rehashes without reading each key from the heap.
struct Slot {
    /// The key, then the data.
    buf: Box<[u8]>,
    key_len: usize,
    hash: u64,
    /// Unix nanoseconds.
    expiry: i128,
    version: u64,
}

// Key length and hash cost no memory: they fill what the 16-byte-aligned expiry leaves.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Slot>() == 64);

impl Slot {
    fn key(&self) -> &[u8] {
        self.buf.get(..self.key_len).unwrap_or_default()
    }

    fn data(&self) -> &[u8] {
        self.buf.get(self.key_len..).unwrap_or_default()
    }

    /// `key` and `data` in one block of exactly their size.
    fn block(key: &str, data: &[u8]) -> Box<[u8]> {
        let mut buf = Vec::with_capacity(key.len() + data.len());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(data);
        buf.into_boxed_slice()
    }
}

struct Inner {
    shards: Box<[RwLock<Map>]>,
    hasher: foldhash::fast::RandomState,
    /// Source of versions: store-wide, so a key deleted and written again never gets a
    /// version it had before.
    versions: AtomicU64,
}

impl Inner {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The key's hash and its shard. The shard comes from bits 40 and up (at most 16 of
    /// them; the count is a power of two): the table inside uses the low bits for the
    /// bucket and the top seven for its tags, so those stay spread within a shard.
    fn shard(&self, key: &str) -> (u64, &RwLock<Map>) {
        let hash = self.hash(key);
        (
            hash,
            &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)],
        )
    }

    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn remove_expired(&self) -> u64 {
        let now = now_nanos();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write();
            let before = map.len();
            map.retain(|slot| slot.expiry > now);
            removed += (before - map.len()) as u64;
        }
        removed
    }
}

/// Matches the slot of `key`.
fn is(key: &str) -> impl Fn(&Slot) -> bool + '_ {
    move |slot| slot.key() == key.as_bytes()
}

/// Stores `data` until `expiry` (Unix nanoseconds) in `slot`, or, when `expiry` is not
/// after `now`, leaves nothing live there. An existing key keeps its slot, and a rewrite of
/// the same length (the usual commit: a counter or a flag changed) reuses the entry's
/// block; a rewrite of another length writes key and data into a new one.
fn put(
    slot: TableEntry<'_, Slot>,
    hash: u64,
    key: &str,
    data: &[u8],
    expiry: i128,
    now: i128,
    version: u64,
) {
    if expiry <= now {
        if let TableEntry::Occupied(slot) = slot {
            slot.remove();
        }
        return;
    }
    match slot {
        TableEntry::Occupied(mut slot) => {
            let item = slot.get_mut();
            match item.buf.get_mut(item.key_len..) {
                Some(old) if old.len() == data.len() => old.copy_from_slice(data),
                _ => item.buf = Slot::block(key, data),
            }
            item.expiry = expiry;
            item.version = version;
        }
        TableEntry::Vacant(slot) => {
            slot.insert(Slot {
                buf: Slot::block(key, data),
                key_len: key.len(),
                hash,
                expiry,
                version,
            });
        }
    }
}

impl MemoryStore {
    /// A store with the defaults: 64 shards, cleanup every minute when built inside a
    /// Tokio runtime. Outside a runtime there is no cleanup task (expired entries are
    /// still never returned); use [`builder`](Self::builder) to make that an error.
    pub fn new() -> Self {
        if scs_tokio::runtime_available()
            && let Ok(store) = Self::builder().build()
        {
            return store;
        }
        Self::builder().cleanup_interval(None).build_unchecked()
    }

    /// A builder for the shard count and cleanup interval.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            shards: 64,
            cleanup_interval: Some(DEFAULT_CLEANUP_INTERVAL),
        }
    }

    /// Stops the cleanup task. Returns at once; calling it twice is fine.
    pub fn stop_cleanup(&self) {
        if let Some(task) = &self.cleanup {
            task.stop();
        }
    }

    /// Removes every expired entry now and returns how many went.
    pub fn remove_expired(&self) -> u64 {
        self.inner.remove_expired()
    }

    /// How many entries are held, expired ones included.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().len()).sum()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// Options of a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    shards: usize,
    cleanup_interval: Option<Duration>,
}

impl MemoryStoreBuilder {
    /// How many independently locked shards (rounded up to a power of two; default 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// How often expired entries are removed; `None` for no cleanup task (default: one
    /// minute).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Builds the store and starts the cleanup task.
    ///
    /// # Errors
    /// [`scs_core::ErrorKind::Config`] when a cleanup interval is set and no Tokio runtime
    /// is running, or the interval is zero.
    pub fn build(self) -> Result<MemoryStore> {
        let interval = self.cleanup_interval;
        let mut store = self.build_unchecked();
        if let Some(interval) = interval {
            let inner = store.inner.clone();
            let task = CleanupTask::spawn(BACKEND, interval, move || {
                let inner = inner.clone();
                async move { Ok(inner.remove_expired()) }
            })?;
            store.cleanup = Some(Arc::new(task));
        }
        Ok(store)
    }

    fn build_unchecked(self) -> MemoryStore {
        let n = self.shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..n).map(|_| RwLock::new(Map::new())).collect();
        MemoryStore {
            inner: Arc::new(Inner {
                shards,
                hasher: Default::default(),
                versions: AtomicU64::new(0),
            }),
            cleanup: None,
        }
    }
}

impl MemoryStore {
    /// The live entry under `key` (what `find_record` answers).
    fn record(&self, key: &str) -> Option<Record> {
        let now = now_nanos();
        let (hash, shard) = self.inner.shard(key);
        let map = shard.read();
        map.find(hash, is(key))
            .filter(|slot| slot.expiry > now)
            .and_then(|slot| {
                let expiry = OffsetDateTime::from_unix_timestamp_nanos(slot.expiry).ok()?;
                Some(Record::new(slot.data().to_vec(), expiry, slot.version))
            })
    }

    /// A compare-and-set write (what `commit_if` answers).
    fn put_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<u64> {
        let now = now_nanos();
        let (hash, shard) = self.inner.shard(key);
        let mut map = shard.write();
        let slot = map.entry(hash, is(key), |s| s.hash);
        let current = match &slot {
            TableEntry::Occupied(o) if o.get().expiry > now => Some(o.get().version),
            _ => None,
        };
        if current != expected {
            return None;
        }
        let version = self.inner.next_version();
        put(
            slot,
            hash,
            key,
            data,
            expiry.unix_timestamp_nanos(),
            now,
            version,
        );
        Some(version)
    }
}

#[async_trait]
impl Store for MemoryStore {
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
        let now = now_nanos();
        let (hash, shard) = self.inner.shard(key);
        let map = shard.read();
        Ok(map
            .find(hash, is(key))
            .filter(|slot| slot.expiry > now)
            .map(|slot| slot.data().to_vec()))
    }

    async fn commit(&self, key: &str, data: &[u8], expiry: OffsetDateTime) -> Result<()> {
        let expiry = expiry.unix_timestamp_nanos();
        let (hash, shard) = self.inner.shard(key);
        let mut map = shard.write();
        let slot = map.entry(hash, is(key), |s| s.hash);
        put(
            slot,
            hash,
            key,
            data,
            expiry,
            now_nanos(),
            self.inner.next_version(),
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let (hash, shard) = self.inner.shard(key);
        if let Ok(slot) = shard.write().find_entry(hash, is(key)) {
            slot.remove();
        }
        Ok(())
    }

    async fn touch(&self, key: &str, expiry: OffsetDateTime) -> Result<bool> {
        let now = now_nanos();
        let (hash, shard) = self.inner.shard(key);
        let mut map = shard.write();
        match map.find_mut(hash, is(key)) {
            Some(slot) if slot.expiry > now => {
                slot.expiry = expiry.unix_timestamp_nanos();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn find_record(&self, key: &str) -> Result<Option<Record>> {
        Ok(self.record(key))
    }

    async fn commit_if(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Result<Option<u64>> {
        Ok(self.put_if(key, data, expiry, expected))
    }

    // An in-process map never waits: the manager takes these answers on the spot, with no
    // future to allocate.
    fn find_record_now(&self, key: &str) -> Option<Result<Option<Record>>> {
        Some(Ok(self.record(key)))
    }

    fn commit_if_now(
        &self,
        key: &str,
        data: &[u8],
        expiry: OffsetDateTime,
        expected: Option<u64>,
    ) -> Option<Result<Option<u64>>> {
        Some(Ok(self.put_if(key, data, expiry, expected)))
    }

    fn as_iterable(&self) -> Option<&dyn IterableStore> {
        Some(self)
    }
}

#[async_trait]
impl IterableStore for MemoryStore {
    async fn all(&self) -> Result<Vec<Entry>> {
        let now = now_nanos();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let map = shard.read();
            out.extend(map.iter().filter(|slot| slot.expiry > now).map(|slot| {
                let key = String::from_utf8_lossy(slot.key()).into_owned();
                (key, slot.data().to_vec())
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_clone_stops_cleanup() {
        let store = MemoryStore::builder()
            .cleanup_interval(Some(Duration::from_millis(10)))
            .build()
            .unwrap();
        let task = Arc::downgrade(store.cleanup.as_ref().unwrap());
        let clone = store.clone();
        drop(store);
        assert!(task.upgrade().is_some_and(|t| !t.is_stopped()));
        drop(clone);
        assert!(
            task.upgrade().is_none(),
            "the task handle went with the store"
        );
    }

    #[test]
    fn new_outside_a_runtime_has_no_cleanup_and_builder_says_why() {
        let store = MemoryStore::new();
        assert!(store.cleanup.is_none());
        let err = MemoryStore::builder().build().unwrap_err();
        assert_eq!(err.kind(), scs_core::ErrorKind::Config);
        let ok = MemoryStore::builder().cleanup_interval(None).build();
        assert!(ok.is_ok());
    }

    #[tokio::test]
    async fn keys_spread_over_shards_and_overwrite_in_place() {
        let store = MemoryStore::builder()
            .shards(8)
            .cleanup_interval(None)
            .build()
            .unwrap();
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(60);
        for i in 0..800 {
            store.commit(&format!("k{i}"), b"a", expiry).await.unwrap();
            store.commit(&format!("k{i}"), b"b", expiry).await.unwrap();
        }
        let sizes: Vec<usize> = store.inner.shards.iter().map(|s| s.read().len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 800, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (50..=150).contains(&n)), "{sizes:?}");
        for i in 0..800 {
            let found = store.find(&format!("k{i}")).await.unwrap();
            assert_eq!(found.as_deref(), Some(&b"b"[..]));
        }
        // Rewrites longer, shorter and of the same length each read back exactly; the
        // same length keeps the entry's buffer.
        let buffer = |store: &MemoryStore| {
            let (hash, shard) = store.inner.shard("k0");
            let map = shard.read();
            map.find(hash, is("k0")).map(|s| s.buf.as_ptr() as usize)
        };
        for data in [&b"longer"[..], b"xy", b"zw", b""] {
            let before = buffer(&store);
            let version = store.find_record("k0").await.unwrap().unwrap().version;
            store
                .commit_if("k0", data, expiry, Some(version))
                .await
                .unwrap();
            assert_eq!(store.find("k0").await.unwrap().as_deref(), Some(data));
            if data == b"zw" {
                assert_eq!(buffer(&store), before);
            }
        }
    }

    #[test]
    fn shard_count_is_a_power_of_two() {
        let s = MemoryStore::builder()
            .shards(5)
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert_eq!(s.inner.shards.len(), 8);
        let s = MemoryStore::builder()
            .shards(0)
            .cleanup_interval(None)
            .build()
            .unwrap();
        assert_eq!(s.inner.shards.len(), 1);
    }
}
