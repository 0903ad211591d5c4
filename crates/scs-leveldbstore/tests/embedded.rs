//! What the conformance suite cannot see of an embedded store: durability across a reopen,
//! the async runtime never blocked by the engine, one cleanup pass removing every expired
//! entry, the value layout and corrupt values, and stores sharing one database. The checks
//! are `scs_conformance::embedded`'s; this file gives them leveldb's raw access.

use std::sync::{Arc, Mutex};

use scs_conformance::embedded;
use scs_leveldbstore::LevelDbStore;
use scs_leveldbstore::rusty_leveldb::{self, DB, LdbIterator, Options};

fn memory_db() -> Arc<Mutex<DB>> {
    Arc::new(Mutex::new(
        DB::open("test", rusty_leveldb::in_memory()).unwrap(),
    ))
}

fn no_cleanup(db: &Arc<Mutex<DB>>, prefix: &str) -> LevelDbStore {
    LevelDbStore::builder(db.clone())
        .prefix(prefix)
        .cleanup_interval(None)
        .build()
        .unwrap()
}

fn raw_put(db: &Mutex<DB>, key: &str, value: &[u8]) {
    db.lock().unwrap().put(key.as_bytes(), value).unwrap();
}

fn raw_get(db: &Mutex<DB>, key: &str) -> Vec<u8> {
    db.lock().unwrap().get(key.as_bytes()).unwrap().to_vec()
}

fn raw_len(db: &Mutex<DB>, prefix: &str) -> usize {
    let mut db = db.lock().unwrap();
    let mut it = db.new_iter().unwrap();
    it.seek(prefix.as_bytes());
    let mut n = 0;
    while let Some((key, _)) = it.current() {
        if !key.starts_with(prefix.as_bytes()) {
            break;
        }
        n += 1;
        if !it.advance() {
            break;
        }
    }
    n
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_session_is_found_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    embedded::assert_survives_reopen(
        || LevelDbStore::open(dir.path()).unwrap(),
        || {
            let db = DB::open(dir.path(), Options::default()).unwrap();
            let db = Arc::new(Mutex::new(db));
            let named = LevelDbStore::builder(db.clone())
                .prefix("app_sessions")
                .build()
                .unwrap();
            (named, LevelDbStore::new(db))
        },
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn engine_work_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = LevelDbStore::open(dir.path()).unwrap();
    embedded::assert_runtime_never_blocked(&store).await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_cleanup_pass_removes_every_expired_entry() {
    let db = memory_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_one_cleanup_pass_removes_every_expired_entry(
        &store,
        || store.remove_expired(),
        || raw_len(&db, "sessions:"),
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_value_too_short_for_its_header_is_a_codec_error() {
    let db = memory_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_short_values_are_codec_errors(
        &store,
        || store.remove_expired(),
        |key, value| raw_put(&db, &format!("sessions:{key}"), value),
    )
    .await;
}

/// The stored value is the expiry, the version, then the data, as the README says.
#[tokio::test(flavor = "current_thread")]
async fn the_stored_value_is_expiry_version_data() {
    let db = memory_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_value_is_expiry_version_data(&store, |key| {
        raw_get(&db, &format!("sessions:{key}"))
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn stores_in_one_database_keep_to_their_prefixes() {
    let db = memory_db();
    // `a` is a prefix of `ab` as a string: the `:` separator keeps them apart.
    let (a, b) = (no_cleanup(&db, "a"), no_cleanup(&db, "ab"));
    for key in ["a", "a;", "b:k"] {
        raw_put(&db, key, b"the app's own data");
    }
    embedded::assert_stores_keep_apart(&a, &b, || a.remove_expired(), || raw_len(&db, "ab:")).await;
    let mut db = db.lock().unwrap();
    for key in [&b"a"[..], b"a;", b"b:k"] {
        assert!(db.get(key).is_some(), "{key:?} is not the stores'");
    }
}
