//! What the conformance suite cannot see of an embedded store: durability across a reopen,
//! the async runtime never blocked by the engine, one cleanup pass removing every expired
//! entry, the value layout and corrupt values, and stores sharing one database. The checks
//! are `scs_conformance::embedded`'s; this file gives them fjall's raw access.

use scs_conformance::embedded;
use scs_fjallstore::FjallStore;
use scs_fjallstore::fjall::{
    KeyspaceCreateOptions, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
};

fn open_db(dir: &tempfile::TempDir) -> SingleWriterTxDatabase {
    SingleWriterTxDatabase::builder(dir.path()).open().unwrap()
}

fn no_cleanup(db: &SingleWriterTxDatabase, keyspace: &str) -> FjallStore {
    FjallStore::builder(db.clone())
        .keyspace(keyspace)
        .cleanup_interval(None)
        .build()
        .unwrap()
}

fn raw_keyspace(db: &SingleWriterTxDatabase, keyspace: &str) -> SingleWriterTxKeyspace {
    db.keyspace(keyspace, KeyspaceCreateOptions::default)
        .unwrap()
}

fn raw_len(db: &SingleWriterTxDatabase, keyspace: &str) -> usize {
    db.read_tx().iter(raw_keyspace(db, keyspace)).count()
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_session_is_found_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    embedded::assert_survives_reopen(
        || FjallStore::open(dir.path()).unwrap(),
        || {
            let db = open_db(&dir);
            let named = FjallStore::builder(db.clone())
                .keyspace("app_sessions")
                .build()
                .unwrap();
            (named, FjallStore::new(db))
        },
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn engine_work_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    embedded::assert_runtime_never_blocked(&store).await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_cleanup_pass_removes_every_expired_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let store = no_cleanup(&db, "sessions");
    embedded::assert_one_cleanup_pass_removes_every_expired_entry(
        &store,
        || store.remove_expired(),
        || raw_len(&db, "sessions"),
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_value_too_short_for_its_header_is_a_codec_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let store = no_cleanup(&db, "sessions");
    let sessions = raw_keyspace(&db, "sessions");
    embedded::assert_short_values_are_codec_errors(
        &store,
        || store.remove_expired(),
        |key, value| sessions.insert(key, value).unwrap(),
    )
    .await;
}

/// The stored value is the expiry, the version, then the data, as the README says.
#[tokio::test(flavor = "current_thread")]
async fn the_stored_value_is_expiry_version_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let store = no_cleanup(&db, "sessions");
    let sessions = raw_keyspace(&db, "sessions");
    embedded::assert_value_is_expiry_version_data(&store, |key| {
        sessions.get(key).unwrap().unwrap().to_vec()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn stores_in_one_database_keep_to_their_keyspaces() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(&dir);
    let (a, b) = (no_cleanup(&db, "a"), no_cleanup(&db, "b"));
    let unrelated = raw_keyspace(&db, "unrelated");
    unrelated.insert("k", &b"the app's own data"[..]).unwrap();
    embedded::assert_stores_keep_apart(&a, &b, || a.remove_expired(), || raw_len(&db, "b")).await;
    assert_eq!(raw_len(&db, "unrelated"), 1);
}
