//! The conformance suite against the SQLite store, on a database file and on `:memory:`.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture, StoreOptions};
use scs_sqlitestore::SqliteStore;
use scs_sqlitestore::rusqlite::Connection;

fn main() -> ExitCode {
    scs_conformance::run_all(vec![
        // A fresh file per store, removed in teardown.
        Backend::new("sqlite-file", |opts: StoreOptions| async move {
            let dir = tempfile::tempdir().map_err(|e| {
                scs_core::Error::new(scs_core::ErrorKind::Config, "creating a temp dir")
                    .with_source(e)
            })?;
            let store = SqliteStore::file_builder(dir.path().join("sessions.db"))
                .table_name(&opts.namespace)
                .cleanup_interval(opts.cleanup_interval)
                .build()?;
            fixture(store, Some(dir)).await
        }),
        // One connection to a private in-memory database per store.
        Backend::new("sqlite-memory", |opts: StoreOptions| async move {
            let conn = Connection::open_in_memory().map_err(|e| {
                scs_core::Error::new(scs_core::ErrorKind::Connection, "opening :memory:")
                    .with_source(e)
            })?;
            let store = SqliteStore::builder(conn)
                .table_name(&opts.namespace)
                .cleanup_interval(opts.cleanup_interval)
                .build()?;
            fixture(store, None).await
        }),
    ])
}

async fn fixture(store: SqliteStore, dir: Option<tempfile::TempDir>) -> scs_core::Result<Fixture> {
    store.migrate().await?;
    let table = store.table_name().to_owned();
    let count = format!("SELECT COUNT(*) FROM \"{table}\"");
    let drop_sql = format!("DROP TABLE IF EXISTS \"{table}\"");
    let (len, stop, down) = (store.clone(), store.clone(), store.clone());
    Ok(Fixture::new(store)
        .with_raw_len(move || {
            let (len, count) = (len.clone(), count.clone());
            async move {
                let n: i64 = len
                    .call(move |c| c.query_row(&count, [], |row| row.get(0)))
                    .await?;
                Ok(usize::try_from(n).unwrap_or(0))
            }
        })
        .with_stop_cleanup(move || stop.stop_cleanup())
        .with_teardown(move || async move {
            down.stop_cleanup();
            down.call(move |c| c.execute(&drop_sql, [])).await?;
            drop(down);
            if let Some(dir) = dir {
                dir.close().map_err(|e| {
                    scs_core::Error::new(scs_core::ErrorKind::Backend, "removing the temp dir")
                        .with_source(e)
                })?;
            }
            Ok(())
        }))
}
