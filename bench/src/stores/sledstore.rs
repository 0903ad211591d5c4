//! sled: the raw side is `Tree::get` / `Tree::insert` on the store's own tree of the same
//! `sled::Db` (a directory opens once per process), with the store's value layout (expiry,
//! version, data) and its expiry check on read, each on a blocking-pool thread because the
//! store makes that same hop: what is left is the store's own overhead.

use scs_core::entry;
use scs_sledstore::{SledStore, sled};

use super::*;

/// The store's default tree.
const TREE: &str = "sessions";

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("scs-bench-{}-sled", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(fx, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(&result?);
    Ok(())
}

async fn measure(fx: &Fixture, dir: &std::path::Path) -> Result<Json> {
    // As `SledStore::open` opens it: sled's default config (flush every 500 ms).
    let db = sled::open(dir)?;
    let store = SledStore::builder(db.clone())
        .tree(TREE)
        .cleanup_interval(None)
        .build()?;
    fx.fill(&store).await?;
    let tree = db.open_tree(TREE)?;
    let raw_find = |key: String| {
        let tree = tree.clone();
        async move {
            blocking(move || {
                let data = tree
                    .get(key)?
                    .map(|v| live(&v, "sled"))
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
        let tree = tree.clone();
        // A new version per write, as the store gives one.
        let value = entry::encode(expiry_ms, scs_core::new_version(), &fx.data);
        async move {
            blocking(move || {
                tree.insert(key, value)?;
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
        "store": "sled",
        "status": "ok",
        "raw": "sled Tree get / insert on spawn_blocking, the store's value layout",
        "find": find,
        "commit": commit,
        "rt": null,
        "note": "directory in the temp dir, sled defaults (insert goes to the page cache, \
                 flushed every 500 ms, no fsync per commit); in-process, no round trips (one \
                 blocking-pool hop per call); the store also checks on commit whether the \
                 expiry has passed already",
    }))
}
