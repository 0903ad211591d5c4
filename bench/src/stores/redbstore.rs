//! redb: the raw side is one read transaction (`get`) or one write transaction (`insert`,
//! committed with redb's default durability) on the store's own table of the same
//! `Database` (a file opens once), with the store's value layout (expiry, version, data)
//! and its expiry check on read, each on a blocking-pool thread because the store makes
//! that same hop: what is left is the store's own overhead.

use scs_core::entry;
use scs_redbstore::RedbStore;
use scs_redbstore::redb::{self, ReadableDatabase as _, TableDefinition};

use super::*;

/// The store's default table, as it defines it.
const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("sessions");

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("scs-bench-{}-redb", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(fx, &dir.join("sessions.redb")).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(&result?);
    Ok(())
}

async fn measure(fx: &Fixture, path: &std::path::Path) -> Result<Json> {
    // As `RedbStore::open` opens it.
    let db = Arc::new(redb::Database::create(path)?);
    let store = RedbStore::builder(Arc::clone(&db))
        .cleanup_interval(None)
        .build()?;
    fx.fill(&store).await?;
    let raw_find = |key: String| {
        let db = Arc::clone(&db);
        async move {
            blocking(move || {
                let txn = db.begin_read()?;
                let table = txn.open_table(TABLE)?;
                let data = table
                    .get(key.as_str())?
                    .map(|v| live(v.value(), "redb"))
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
        let db = Arc::clone(&db);
        // A new version per write, as the store gives one.
        let value = entry::encode(expiry_ms, scs_core::new_version(), &fx.data);
        async move {
            blocking(move || {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(TABLE)?;
                    table.insert(key.as_str(), value.as_slice())?;
                }
                txn.commit()?;
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
        "store": "redb",
        "status": "ok",
        "raw": "redb read txn get / write txn insert + commit on spawn_blocking, the store's \
                value layout",
        "find": find,
        "commit": commit,
        "rt": null,
        "note": "file in the temp dir, every commit a write transaction with redb's default \
                 durability (fsync); in-process, no round trips (one blocking-pool hop per \
                 call); the store also checks on commit whether the expiry has passed already",
    }))
}
