//! The conformance suite on PostgreSQL (`SCS_POSTGRES_URL`), MySQL/MariaDB
//! (`SCS_MYSQL_URL`) and SQLite (a temporary file per trial).

use std::process::ExitCode;
use std::time::Duration;

use scs_conformance::{Backend, Fixture, StoreOptions};
use scs_core::{Error, ErrorKind, Result};
use scs_seaormstore::SeaOrmStore;
use scs_seaormstore::sea_orm::sea_query::{Alias, Expr, Query, Table};
use scs_seaormstore::sea_orm::{ConnectOptions, ConnectionTrait, Database};

fn main() -> ExitCode {
    let pg = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let my = scs_conformance::env_url("SCS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    scs_conformance::run_all(vec![
        server_backend("postgres", pg),
        server_backend("mysql", my),
        Backend::new(
            format!("{}-sqlite", scs_seaormstore::BACKEND),
            |opts| async move {
                let path = std::env::temp_dir()
                    .join(format!("scs-seaormstore-{}.sqlite3", opts.namespace));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                fixture(&url, opts, Some(path)).await
            },
        ),
    ])
}

fn server_backend(db: &str, url: String) -> Backend {
    let server = url.clone();
    Backend::new(format!("{}-{db}", scs_seaormstore::BACKEND), move |opts| {
        // The suite may put a fault proxy in front of the server.
        let url = opts.url.clone().unwrap_or_else(|| url.clone());
        async move { fixture(&url, opts, None).await }
    })
    .server(server)
}

fn err(what: &'static str) -> impl FnOnce(scs_seaormstore::sea_orm::DbErr) -> Error {
    move |e| Error::new(ErrorKind::Backend, what).with_source(e)
}

async fn fixture(
    url: &str,
    opts: StoreOptions,
    file: Option<std::path::PathBuf>,
) -> Result<Fixture> {
    let mut connect = ConnectOptions::new(url);
    // Trials run side by side, each with its own pool: keep each one small.
    connect
        .max_connections(4)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(connect)
        .await
        .map_err(|e| Error::new(ErrorKind::Connection, "connecting").with_source(e))?;
    let store = SeaOrmStore::builder(db)
        .table_name(&opts.namespace)
        .cleanup_interval(opts.cleanup_interval)
        .build()?;
    store.migrate().await?;
    let (len, stop, drop) = (store.clone(), store.clone(), store.clone());
    Ok(Fixture::new(store)
        .with_raw_len(move || {
            let len = len.clone();
            async move {
                let count = Query::select()
                    .expr_as(Expr::cust("COUNT(*)"), Alias::new("n"))
                    .from(Alias::new(len.table_name()))
                    .to_owned();
                let row = len
                    .connection()
                    .query_one(&count)
                    .await
                    .map_err(err("counting"))?;
                let n: i64 = match row {
                    Some(row) => row.try_get("", "n").map_err(err("counting"))?,
                    None => 0,
                };
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        })
        .with_stop_cleanup(move || stop.stop_cleanup())
        .with_teardown(move || async move {
            drop.stop_cleanup();
            let stmt = Table::drop()
                .table(Alias::new(drop.table_name()))
                .if_exists()
                .to_owned();
            drop.connection()
                .execute(&stmt)
                .await
                .map_err(err("dropping the table"))?;
            if let Some(file) = file {
                let _ = drop.connection().close_by_ref().await;
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut name = file.clone().into_os_string();
                    name.push(suffix);
                    let _ = std::fs::remove_file(name);
                }
            }
            Ok(())
        }))
}
