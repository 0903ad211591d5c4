//! What the conformance suite cannot see of an embedded store: durability across a reopen,
//! the async runtime never blocked by the engine, one cleanup pass removing every expired
//! entry, the value layout and corrupt values, and stores sharing one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, IterableStore, Store};
use scs_fjallstore::FjallStore;
use scs_fjallstore::fjall::{KeyspaceCreateOptions, Readable, SingleWriterTxDatabase};

const HOUR: Duration = Duration::from_secs(3600);

fn in_(d: Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc() + d
}

fn is_codec<T>(r: scs_core::Result<T>) -> bool {
    r.is_err_and(|e| e.kind() == ErrorKind::Codec)
}

fn raw_len(db: &SingleWriterTxDatabase, keyspace: &str) -> usize {
    let keyspace = db
        .keyspace(keyspace, KeyspaceCreateOptions::default)
        .unwrap();
    db.read_tx().iter(&keyspace).count()
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_session_is_found_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    // Opened from a path, with its cleanup task running.
    let store = FjallStore::open(dir.path()).unwrap();
    store.commit("k1", &data, in_(HOUR)).await.unwrap();
    store.commit("gone", b"x", in_(HOUR)).await.unwrap();
    store.delete("gone").await.unwrap();
    drop(store);

    let store = FjallStore::open(dir.path()).unwrap();
    assert_eq!(store.find("k1").await.unwrap(), Some(data.clone()));
    assert_eq!(store.find("gone").await.unwrap(), None);
    drop(store);

    // Through a database handle the application owns, in a named keyspace.
    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let store = FjallStore::builder(db.clone())
        .keyspace("app_sessions")
        .build()
        .unwrap();
    store.commit("k2", b"two", in_(HOUR)).await.unwrap();
    drop(store);
    drop(db);

    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let store = FjallStore::builder(db.clone())
        .keyspace("app_sessions")
        .build()
        .unwrap();
    assert_eq!(
        store.find("k2").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        store.find("k1").await.unwrap(),
        None,
        "k1 is in the other keyspace"
    );
    let default_keyspace = FjallStore::new(db);
    assert_eq!(default_keyspace.find("k1").await.unwrap(), Some(data));
}

/// On a single-threaded runtime, a ticker task must keep ticking while the store does
/// heavy engine work: the work runs on the blocking pool. Called on the runtime thread
/// instead, each call would stall the ticker for as long as the engine works.
#[tokio::test(flavor = "current_thread")]
async fn engine_work_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let max_gap_us = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let (stop, max_gap_us) = (stop.clone(), max_gap_us.clone());
        async move {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = last.elapsed().as_micros() as u64;
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
            seed as u8
        })
        .collect();
    let mut engine = Duration::ZERO;
    let mut ops = 0;
    while engine < Duration::from_millis(600) && ops < 4000 {
        let key = format!("key{}", ops % 16);
        let t = Instant::now();
        store.commit(&key, &value, in_(HOUR)).await.unwrap();
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

/// Go scs's leveldbstore removed one expired entry per cleanup run; here one run removes
/// them all.
#[tokio::test(flavor = "current_thread")]
async fn one_cleanup_pass_removes_every_expired_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let store = FjallStore::builder(db.clone())
        .cleanup_interval(None)
        .build()
        .unwrap();
    let soon = in_(Duration::from_millis(400));
    for i in 0..50 {
        store.commit(&format!("dead{i}"), b"x", soon).await.unwrap();
    }
    store.commit("live", b"y", in_(HOUR)).await.unwrap();
    assert_eq!(raw_len(&db, "sessions"), 51);
    tokio::time::sleep(
        (soon - OffsetDateTime::now_utc()).unsigned_abs() + Duration::from_millis(20),
    )
    .await;

    assert_eq!(store.remove_expired().await.unwrap(), 50);
    assert_eq!(raw_len(&db, "sessions"), 1);
    assert_eq!(
        store.find("live").await.unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(store.remove_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_value_too_short_for_its_header_is_a_codec_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let store = FjallStore::builder(db.clone())
        .cleanup_interval(None)
        .build()
        .unwrap();
    store.commit("good", b"fine", in_(HOUR)).await.unwrap();
    let sessions = db
        .keyspace("sessions", KeyspaceCreateOptions::default)
        .unwrap();
    // Too short for the expiry; long enough for a (far future) expiry, not the version.
    sessions.insert("bad", &b"1234567"[..]).unwrap();
    sessions.insert("bad15", &[0x7f; 15][..]).unwrap();

    for bad in ["bad", "bad15"] {
        assert!(is_codec(store.find(bad).await), "{bad}");
        assert!(is_codec(store.find_record(bad).await), "{bad}");
        assert!(is_codec(store.touch(bad, in_(HOUR)).await), "{bad}");
        assert!(
            is_codec(store.commit_if(bad, b"x", in_(HOUR), None).await),
            "{bad}"
        );
    }
    assert_eq!(store.all().await.unwrap_err().kind(), ErrorKind::Codec);

    // They can never be read, so the cleanup removes them, and only them.
    assert_eq!(store.remove_expired().await.unwrap(), 2);
    assert_eq!(store.find("bad").await.unwrap(), None);
    assert_eq!(store.all().await.unwrap().len(), 1);
}

/// The stored value is the expiry, the version, then the data, as the README says.
#[tokio::test(flavor = "current_thread")]
async fn the_stored_value_is_expiry_version_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let store = FjallStore::builder(db.clone())
        .cleanup_interval(None)
        .build()
        .unwrap();
    let expiry = in_(HOUR);
    store.commit("k", b"data", expiry).await.unwrap();
    let record = store.find_record("k").await.unwrap().unwrap();
    let sessions = db
        .keyspace("sessions", KeyspaceCreateOptions::default)
        .unwrap();
    let value = sessions.get("k").unwrap().unwrap();
    let ms = (expiry.unix_timestamp_nanos() / 1_000_000) as u64;
    assert_eq!(value[..8], ms.to_be_bytes());
    assert_eq!(value[8..16], record.version.to_be_bytes());
    assert_eq!(&value[16..], b"data");

    // A touch rewrites the expiry only.
    assert!(store.touch("k", in_(HOUR * 2)).await.unwrap());
    let touched = sessions.get("k").unwrap().unwrap();
    assert_ne!(touched[..8], value[..8]);
    assert_eq!(touched[8..], value[8..]);
}

#[tokio::test(flavor = "current_thread")]
async fn stores_in_one_database_keep_to_their_keyspaces() {
    let dir = tempfile::tempdir().unwrap();
    let db = SingleWriterTxDatabase::builder(dir.path()).open().unwrap();
    let a = FjallStore::builder(db.clone())
        .keyspace("a")
        .cleanup_interval(None)
        .build()
        .unwrap();
    let b = FjallStore::builder(db.clone())
        .keyspace("b")
        .cleanup_interval(None)
        .build()
        .unwrap();
    a.commit("k", b"in a", in_(HOUR)).await.unwrap();
    a.commit("short", b"x", in_(Duration::from_millis(50)))
        .await
        .unwrap();
    b.commit("k", b"in b", in_(HOUR)).await.unwrap();
    b.commit("short", b"y", in_(Duration::from_millis(50)))
        .await
        .unwrap();
    let unrelated = db
        .keyspace("unrelated", KeyspaceCreateOptions::default)
        .unwrap();
    unrelated.insert("k", &b"the app's own data"[..]).unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;

    assert_eq!(a.remove_expired().await.unwrap(), 1);
    assert_eq!(raw_len(&db, "b"), 2, "a's cleanup left b alone");
    b.delete("k").await.unwrap();
    assert_eq!(a.find("k").await.unwrap().as_deref(), Some(&b"in a"[..]));
    assert_eq!(
        a.all().await.unwrap(),
        vec![("k".to_owned(), b"in a".to_vec())]
    );
    assert!(b.all().await.unwrap().is_empty());
    assert_eq!(raw_len(&db, "unrelated"), 1);
}
