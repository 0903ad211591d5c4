//! What the conformance suite cannot see of an embedded store: durability across a reopen,
//! the async runtime never blocked by the engine, one cleanup pass removing every expired
//! entry, the value layout and corrupt values, and stores sharing one database. The checks
//! are `scs_conformance::embedded`'s; this file gives them sled's raw access.

use scs_conformance::embedded;
use scs_sledstore::{SledStore, sled};

/// Opens the database at `path`, waiting (up to 10 s) while a handle dropped just before
/// still holds its file lock: sled's flusher thread lets go of the lock only after the last
/// handle is dropped, so a reopen straight after a drop can find it taken (seen once in CI).
fn reopen<T, E: std::fmt::Debug>(
    path: &std::path::Path,
    open: impl Fn(&std::path::Path) -> Result<T, E>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        match open(path) {
            Ok(db) => return db,
            // In the error's source chain, which `Debug` shows.
            Err(e) if format!("{e:?}").contains("could not acquire lock") => {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "the database lock was never released: {e:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening {}: {e:?}", path.display()),
        }
    }
}

fn temporary_db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

fn no_cleanup(db: &sled::Db, tree: &str) -> SledStore {
    SledStore::builder(db.clone())
        .tree(tree)
        .cleanup_interval(None)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_session_is_found_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    embedded::assert_survives_reopen(
        || reopen(dir.path(), |p| SledStore::open(p)),
        || {
            let db = reopen(dir.path(), |p| sled::open(p));
            let named = SledStore::builder(db.clone())
                .tree("app_sessions")
                .build()
                .unwrap();
            (named, SledStore::new(db))
        },
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn engine_work_never_blocks_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    embedded::assert_runtime_never_blocked(&store).await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_cleanup_pass_removes_every_expired_entry() {
    let db = temporary_db();
    let store = no_cleanup(&db, "sessions");
    embedded::assert_one_cleanup_pass_removes_every_expired_entry(
        &store,
        || store.remove_expired(),
        || db.open_tree("sessions").unwrap().len(),
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_value_too_short_for_its_header_is_a_codec_error() {
    let db = temporary_db();
    let store = no_cleanup(&db, "sessions");
    let tree = db.open_tree("sessions").unwrap();
    embedded::assert_short_values_are_codec_errors(
        &store,
        || store.remove_expired(),
        |key, value| drop(tree.insert(key, value).unwrap()),
    )
    .await;
}

/// The stored value is the expiry, the version, then the data, as the README says.
#[tokio::test(flavor = "current_thread")]
async fn the_stored_value_is_expiry_version_data() {
    let db = temporary_db();
    let store = no_cleanup(&db, "sessions");
    let tree = db.open_tree("sessions").unwrap();
    embedded::assert_value_is_expiry_version_data(&store, |key| {
        tree.get(key).unwrap().unwrap().to_vec()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn stores_in_one_database_keep_to_their_trees() {
    let db = temporary_db();
    let (a, b) = (no_cleanup(&db, "a"), no_cleanup(&db, "b"));
    db.insert("unrelated", &b"the app's own data"[..]).unwrap();
    embedded::assert_stores_keep_apart(
        &a,
        &b,
        || a.remove_expired(),
        || db.open_tree("b").unwrap().len(),
    )
    .await;
    assert!(db.contains_key("unrelated").unwrap());
}
