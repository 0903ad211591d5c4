//! What the conformance suite cannot see of an embedded store: durability across a reopen,
//! the async runtime never blocked by the engine, one cleanup pass removing every expired
//! entry, the value layout and corrupt values, and stores sharing one database. The checks
//! are `scs_conformance::embedded`'s; this file gives them redb's raw access.

use std::sync::Arc;

use scs_conformance::embedded;
use scs_core::{IterableStore, Store};
use scs_redbstore::RedbStore;
use scs_redbstore::redb::{
    self, Database, ReadableDatabase, ReadableTableMetadata, TableDefinition,
};

fn memory_db() -> Arc<Database> {
    let backend = redb::backends::InMemoryBackend::new();
    Arc::new(Database::builder().create_with_backend(backend).unwrap())
}

fn no_cleanup(db: &Arc<Database>, table: &str) -> RedbStore {
    RedbStore::builder(db.clone())
        .table(table)
        .cleanup_interval(None)
        .build()
        .unwrap()
}

fn raw_put(db: &Database, table: &str, key: &str, value: &[u8]) {
    let txn = db.begin_write().unwrap();
    {
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        txn.open_table(def).unwrap().insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}

fn raw_get(db: &Database, table: &str, key: &str) -> Vec<u8> {
    let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(def).unwrap();
    table.get(key).unwrap().unwrap().value().to_vec()
}

fn raw_len(db: &Database, table: &str) -> usize {
    let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
    let len = db.begin_read().unwrap().open_table(def).unwrap().len();
    usize::try_from(len.unwrap()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_session_is_found_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    embedded::assert_survives_reopen(
        || RedbStore::open(&path).unwrap(),
        || {
            let db = Arc::new(Database::create(&path).unwrap());
            let named = RedbStore::builder(db.clone())
                .table("app_sessions")
                .build()
                .unwrap();
            (named, RedbStore::new(db))
        },
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn engine_work_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("sessions.redb")).unwrap();
    embedded::assert_runtime_never_blocked(&store).await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_cleanup_pass_removes_every_expired_entry() {
    let db = memory_db();
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
    let db = memory_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_short_values_are_codec_errors(
        &store,
        || store.remove_expired(),
        |key, value| raw_put(&db, "sessions", key, value),
    )
    .await;
}

/// The stored value is the expiry, the version, then the data, as the README says.
#[tokio::test(flavor = "current_thread")]
async fn the_stored_value_is_expiry_version_data() {
    let db = memory_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_value_is_expiry_version_data(&store, |key| raw_get(&db, "sessions", key))
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn stores_in_one_database_keep_to_their_tables() {
    let db = memory_db();
    let (a, b) = (no_cleanup(&db, "a"), no_cleanup(&db, "b"));
    assert!(
        a.all().await.unwrap().is_empty(),
        "no table yet is no error"
    );
    assert_eq!(a.find("k").await.unwrap(), None);
    raw_put(&db, "unrelated", "k", b"the app's own data");
    embedded::assert_stores_keep_apart(&a, &b, || a.remove_expired(), || raw_len(&db, "b")).await;
    assert_eq!(raw_len(&db, "unrelated"), 1);
}
