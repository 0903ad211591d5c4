//! fjall: the raw side is `get` / `insert` (a single-writer transaction, committed as fjall
//! commits by default) on the store's own keyspace of the same `SingleWriterTxDatabase` (a
//! directory opens once), with the store's value layout (expiry, version, data) and its
//! expiry check on read, each on a blocking-pool thread because the store makes that same
//! hop: what is left is the store's own overhead.

use scs_core::entry;
use scs_fjallstore::FjallStore;
use scs_fjallstore::fjall::{KeyspaceCreateOptions, SingleWriterTxDatabase};

use super::*;

/// The store's default keyspace.
const KEYSPACE: &str = "sessions";

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("scs-bench-{}-fjall", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(fx, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(&result?);
    Ok(())
}

async fn measure(fx: &Fixture, dir: &std::path::Path) -> Result<Json> {
    // As `FjallStore::open` opens it.
    let db = SingleWriterTxDatabase::builder(dir).open()?;
    let store = FjallStore::builder(db.clone())
        .keyspace(KEYSPACE)
        .cleanup_interval(None)
        .build()?;
    fx.fill(&store).await?;
    let keyspace = db.keyspace(KEYSPACE, KeyspaceCreateOptions::default)?;
    let raw_find = |key: String| {
        let keyspace = keyspace.clone();
        async move {
            blocking(move || {
                let data = keyspace
                    .get(key)?
                    .map(|v| live(&v, "fjall"))
                    .transpose()?
                    .flatten();
                std::hint::black_box(data);
                Ok(())
            })
            .await
        }
    };
    let expiry_ms = entry::unix_ms(fx.expiry);
    let raw_commit = |key: String| {
        let keyspace = keyspace.clone();
        // A new version per write, as the store gives one.
        let value = entry::encode(expiry_ms, scs_core::new_version(), &fx.data);
        async move {
            blocking(move || {
                keyspace.insert(key, value)?;
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
        "store": "fjall",
        "status": "ok",
        "raw": "fjall SingleWriterTxKeyspace get / insert on spawn_blocking, the store's value \
                layout",
        "find": find,
        "commit": commit,
        "rt": null,
        "note": "directory in the temp dir, fjall defaults (each insert a write transaction, \
                 its journal flushed to the OS at commit, no fsync); in-process, no round \
                 trips (one blocking-pool hop per call); the store also checks on commit \
                 whether the expiry has passed already",
    }))
}
