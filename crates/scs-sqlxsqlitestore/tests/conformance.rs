//! The conformance suite against the sqlx SQLite store, on a database file.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture, StoreOptions};
use scs_sqlxsqlitestore::SqlxSqliteStore;
use scs_sqlxsqlitestore::sqlx;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

fn main() -> ExitCode {
    // A fresh file per store, removed in teardown.
    scs_conformance::run(Backend::new(
        scs_sqlxsqlitestore::BACKEND,
        |opts: StoreOptions| async move {
            let dir = tempfile::tempdir().map_err(|e| {
                scs_core::Error::new(scs_core::ErrorKind::Config, "creating a temp dir")
                    .with_source(e)
            })?;
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join("sessions.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let pool = SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .map_err(|e| {
                    scs_core::Error::new(scs_core::ErrorKind::Connection, "opening the database")
                        .with_source(e)
                })?;
            let store = SqlxSqliteStore::builder(pool)
                .table_name(&opts.namespace)
                .cleanup_interval(opts.cleanup_interval)
                .build()?;
            fixture(store, dir).await
        },
    ))
}

async fn fixture(store: SqlxSqliteStore, dir: tempfile::TempDir) -> scs_core::Result<Fixture> {
    store.migrate().await?;
    let table = store.table_name().to_owned();
    let count = format!("SELECT COUNT(*) FROM \"{table}\"");
    let drop_sql = format!("DROP TABLE IF EXISTS \"{table}\"");
    let (len, stop, down) = (store.clone(), store.clone(), store.clone());
    Ok(Fixture::new(store)
        .with_raw_len(move || {
            let (len, count) = (len.clone(), count.clone());
            async move {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
                    .fetch_one(len.pool())
                    .await
                    .map_err(|e| backend("counting rows", e))?;
                Ok(usize::try_from(n).unwrap_or(0))
            }
        })
        .with_stop_cleanup(move || stop.stop_cleanup())
        .with_teardown(move || async move {
            down.stop_cleanup();
            sqlx::query(sqlx::AssertSqlSafe(drop_sql))
                .execute(down.pool())
                .await
                .map_err(|e| backend("dropping the table", e))?;
            down.pool().close().await;
            drop(down);
            dir.close().map_err(|e| backend("removing the temp dir", e))
        }))
}

fn backend(what: &'static str, e: impl Into<scs_core::BoxError>) -> scs_core::Error {
    scs_core::Error::new(scs_core::ErrorKind::Backend, what).with_source(e)
}
