//! Checks for embedded stores (redb, sled, fjall, leveldb) that the conformance suite
//! cannot make through the [`Store`] trait alone: durability across a reopen, the async
//! runtime never blocked by the engine, one cleanup pass removing every expired entry,
//! corrupt values, the stored value layout, and stores sharing one database.
//!
//! Each `assert_*` function panics on failure, so a crate's `tests/embedded.rs` calls one
//! per `#[tokio::test(flavor = "current_thread")]` fn, passing what only the crate knows
//! (how to open the store, how to read or write raw engine values) as closures.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, IterableStore, Result, Store};

/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// `d` from now.
pub fn from_now(d: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + d
}

fn is_codec<T>(r: Result<T>) -> bool {
    r.is_err_and(|e| e.kind() == ErrorKind::Codec)
}

/// A committed (large) session survives dropping and reopening the store, and a deleted
/// one stays deleted; then, through a database handle the application owns, a store in a
/// named namespace survives a reopen and keeps apart from the default namespace.
///
/// `open` opens the store from its path (as `XStore::open` does); `open_named_and_default`
/// opens the database once and returns a store in the namespace `app_sessions` and one in
/// the default namespace, over that same handle. Every store is dropped before the next
/// open.
pub async fn assert_survives_reopen<S: Store>(
    open: impl Fn() -> S,
    open_named_and_default: impl Fn() -> (S, S),
) {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    let store = open();
    store.commit("k1", &data, from_now(HOUR)).await.unwrap();
    store.commit("gone", b"x", from_now(HOUR)).await.unwrap();
    store.delete("gone").await.unwrap();
    drop(store);

    let store = open();
    assert_eq!(store.find("k1").await.unwrap(), Some(data.clone()));
    assert_eq!(store.find("gone").await.unwrap(), None);
    drop(store);

    let (named, default) = open_named_and_default();
    named.commit("k2", b"two", from_now(HOUR)).await.unwrap();
    drop((named, default));

    let (named, default) = open_named_and_default();
    assert_eq!(
        named.find("k2").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        named.find("k1").await.unwrap(),
        None,
        "k1 is in the other namespace"
    );
    assert_eq!(default.find("k1").await.unwrap(), Some(data));
}

/// On a single-threaded runtime, a ticker task must keep ticking while the store does
/// heavy engine work: the work runs on the blocking pool. Called on the runtime thread
/// instead, each call would stall the ticker for as long as the engine works.
///
/// Call it from a `#[tokio::test(flavor = "current_thread")]`.
pub async fn assert_runtime_never_blocked(store: &impl Store) {
    let stop = Arc::new(AtomicBool::new(false));
    let max_gap_us = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let (stop, max_gap_us) = (stop.clone(), max_gap_us.clone());
        async move {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = u64::try_from(last.elapsed().as_micros()).unwrap_or(u64::MAX);
                max_gap_us.fetch_max(gap, Ordering::Relaxed);
                last = Instant::now();
            }
        }
    });
    tokio::task::yield_now().await; // let the ticker start

    // Large, incompressible values; run until the engine has worked long enough that a
    // stalled runtime would show unmistakably, even on a loaded machine.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let value: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect();
    let mut engine = Duration::ZERO;
    let mut ops = 0;
    while engine < Duration::from_millis(600) && ops < 4000 {
        let key = format!("key{}", ops % 16);
        let t = Instant::now();
        store.commit(&key, &value, from_now(HOUR)).await.unwrap();
        let found = store.find(&key).await.unwrap();
        engine += t.elapsed();
        assert_eq!(found.map(|v| v.len()), Some(value.len()));
        ops += 2;
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // a last tick after the work
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();

    let max_gap = Duration::from_micros(max_gap_us.load(Ordering::Relaxed));
    eprintln!("engine {engine:?} over {ops} calls; longest runtime stall {max_gap:?}");
    assert!(
        max_gap < engine / 4,
        "the runtime stalled for {max_gap:?} while the engine worked {engine:?} over {ops} calls"
    );
}

/// Go scs's leveldbstore removed one expired entry per cleanup run; here one run
/// (`remove_expired`) removes them all. `raw_len` counts the entries physically in the
/// store's namespace, expired included. `store` has no cleanup task.
pub async fn assert_one_cleanup_pass_removes_every_expired_entry<S, F>(
    store: &S,
    remove_expired: impl Fn() -> F,
    raw_len: impl Fn() -> usize,
) where
    S: Store,
    F: Future<Output = Result<u64>>,
{
    let soon = from_now(Duration::from_millis(400));
    for i in 0..50 {
        store.commit(&format!("dead{i}"), b"x", soon).await.unwrap();
    }
    store.commit("live", b"y", from_now(HOUR)).await.unwrap();
    assert_eq!(raw_len(), 51);
    tokio::time::sleep(
        (soon - OffsetDateTime::now_utc()).unsigned_abs() + Duration::from_millis(20),
    )
    .await;

    assert_eq!(remove_expired().await.unwrap(), 50);
    assert_eq!(raw_len(), 1);
    assert_eq!(
        store.find("live").await.unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(remove_expired().await.unwrap(), 0);
}

/// A value too short for its 16-byte header is a Codec error on every read, and the
/// cleanup removes it (it can never be read). `raw_put(key, value)` writes a raw value
/// under `key` in the store's namespace. `store` has no cleanup task.
pub async fn assert_short_values_are_codec_errors<S, F>(
    store: &S,
    remove_expired: impl Fn() -> F,
    raw_put: impl Fn(&str, &[u8]),
) where
    S: Store + IterableStore,
    F: Future<Output = Result<u64>>,
{
    store.commit("good", b"fine", from_now(HOUR)).await.unwrap();
    // Too short for the expiry; long enough for a (far future) expiry, not the version.
    raw_put("bad", b"1234567");
    raw_put("bad15", &[0x7f; 15]);

    for bad in ["bad", "bad15"] {
        assert!(is_codec(store.find(bad).await), "{bad}");
        assert!(is_codec(store.find_record(bad).await), "{bad}");
        assert!(is_codec(store.touch(bad, from_now(HOUR)).await), "{bad}");
        assert!(
            is_codec(store.commit_if(bad, b"x", from_now(HOUR), None).await),
            "{bad}"
        );
    }
    assert_eq!(store.all().await.unwrap_err().kind(), ErrorKind::Codec);

    // They can never be read, so the cleanup removes them, and only them.
    assert_eq!(remove_expired().await.unwrap(), 2);
    assert_eq!(store.find("bad").await.unwrap(), None);
    assert_eq!(store.all().await.unwrap().len(), 1);
}

/// The stored value is the expiry (big-endian Unix ms), the version, then the data
/// (see `scs_core::entry`), and a touch rewrites the expiry only. `raw_get(key)` reads
/// the raw value under `key` in the store's namespace.
pub async fn assert_value_is_expiry_version_data(
    store: &impl Store,
    raw_get: impl Fn(&str) -> Vec<u8>,
) {
    let expiry = from_now(HOUR);
    store.commit("k", b"data", expiry).await.unwrap();
    let record = store.find_record("k").await.unwrap().unwrap();
    let value = raw_get("k");
    let ms = u64::try_from(expiry.unix_timestamp_nanos() / 1_000_000).unwrap();
    assert_eq!(value[..8], ms.to_be_bytes());
    assert_eq!(value[8..16], record.version.to_be_bytes());
    assert_eq!(&value[16..], b"data");

    assert!(store.touch("k", from_now(HOUR * 2)).await.unwrap());
    let touched = raw_get("k");
    assert_ne!(touched[..8], value[..8]);
    assert_eq!(touched[8..], value[8..]);
}

/// Two stores in one database, in namespaces `a` and `b`, keep to their own entries:
/// `a`'s cleanup (`remove_expired_a`) leaves `b`'s expired entry alone (`raw_len_b`
/// counts `b`'s entries physically), and deletes and listings stay in their namespace.
/// Neither store has a cleanup task. Check the application's own data afterwards.
pub async fn assert_stores_keep_apart<S, F>(
    a: &S,
    b: &S,
    remove_expired_a: impl Fn() -> F,
    raw_len_b: impl Fn() -> usize,
) where
    S: Store + IterableStore,
    F: Future<Output = Result<u64>>,
{
    a.commit("k", b"in a", from_now(HOUR)).await.unwrap();
    a.commit("short", b"x", from_now(Duration::from_millis(50)))
        .await
        .unwrap();
    b.commit("k", b"in b", from_now(HOUR)).await.unwrap();
    b.commit("short", b"y", from_now(Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;

    assert_eq!(remove_expired_a().await.unwrap(), 1);
    assert_eq!(raw_len_b(), 2, "a's cleanup left b alone");
    b.delete("k").await.unwrap();
    assert_eq!(a.find("k").await.unwrap().as_deref(), Some(&b"in a"[..]));
    assert_eq!(
        a.all().await.unwrap(),
        vec![("k".to_owned(), b"in a".to_vec())]
    );
    assert!(b.all().await.unwrap().is_empty());
}
