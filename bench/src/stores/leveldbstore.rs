//! LevelDB (rusty-leveldb): the raw side is `DB::get` / a one-put `WriteBatch` written with
//! `sync = true` (as the store writes) under the store's key prefix, on the same
//! `Arc<Mutex<DB>>` (a directory opens once), with the store's value layout (expiry,
//! version, data) and its expiry check on read, each on a blocking-pool thread because the
//! store makes that same hop: what is left is the store's own overhead.

use std::sync::Mutex;

use scs_core::entry;
use scs_leveldbstore::LevelDbStore;
use scs_leveldbstore::rusty_leveldb::{DB, Options, WriteBatch};

use super::*;

/// The store's default key prefix: keys are stored as `sessions:<key>`.
const PREFIX: &str = "sessions";

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("scs-bench-{}-leveldb", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(fx, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(&result?);
    Ok(())
}

/// The key the store writes for `key`.
fn full_key(key: &str) -> Vec<u8> {
    format!("{PREFIX}:{key}").into_bytes()
}

async fn measure(fx: &Fixture, dir: &std::path::Path) -> Result<Json> {
    // As `LevelDbStore::open` opens it.
    let db = Arc::new(Mutex::new(DB::open(dir, Options::default())?));
    let store = LevelDbStore::builder(Arc::clone(&db))
        .prefix(PREFIX)
        .cleanup_interval(None)
        .build()?;
    fx.fill(&store).await?;
    let raw_find = |key: String| {
        let db = Arc::clone(&db);
        async move {
            blocking(move || {
                let value = db.lock().map_err(|_| "poisoned")?.get(&full_key(&key));
                let data = value.map(|v| live(&v, "leveldb")).transpose()?.flatten();
                std::hint::black_box(data);
                Ok(())
            })
            .await
        }
    };
    let expiry_ms = entry::unix_ms(fx.expiry);
    let raw_commit = |key: String| {
        let db = Arc::clone(&db);
        // A new version per write, as the store gives one.
        let value = entry::encode(expiry_ms, scs_core::new_version(), &fx.data);
        async move {
            blocking(move || {
                let mut batch = WriteBatch::default();
                batch.put(&full_key(&key), &value);
                db.lock().map_err(|_| "poisoned")?.write(batch, true)?;
                Ok(())
            })
            .await
        }
    };
    let s = &store;
    let (find, commit) = against(
        fx,
        s,
        |i| raw_find(fx.key(i).to_owned()),
        |i| raw_commit(fx.key(i).to_owned()),
    )
    .await?;
    Ok(json!({
        "part": "store",
        "store": "leveldb",
        "status": "ok",
        "raw": "rusty-leveldb get / WriteBatch put written with sync on spawn_blocking, the \
                store's key prefix and value layout",
        "find": find,
        "commit": commit,
        "rt": null,
        "note": "directory in the temp dir, default options, every commit a batch written \
                 with sync = true (log flushed to the OS); in-process, no round trips (one \
                 blocking-pool hop per call, under the DB's mutex); the store reads through \
                 a snapshot (get_at, which keeps read errors that get turns into not-found) \
                 and also checks on commit whether the expiry has passed already",
    }))
}
