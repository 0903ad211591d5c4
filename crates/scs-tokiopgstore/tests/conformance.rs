//! The conformance suite against PostgreSQL through tokio-postgres (`SCS_POSTGRES_URL`).

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_tokiopgstore::TokioPostgresStore;
use scs_tokiopgstore::deadpool_postgres::{Manager, Pool};
use scs_tokiopgstore::tokio_postgres::NoTls;

fn main() -> ExitCode {
    let url = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_tokiopgstore::BACKEND, move |opts| {
            // The suite may put a fault proxy in front of the server.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                // A small pool per fixture: eight trials run at once, some with two stores.
                let config = url
                    .parse()
                    .map_err(|e| driver_error(ErrorKind::Config, "parsing the URL", e))?;
                // `Manager::new` recycles with `RecyclingMethod::Fast`, as from_url's pool.
                let pool = Pool::builder(Manager::new(config, NoTls))
                    .max_size(2)
                    .build()
                    .map_err(|e| driver_error(ErrorKind::Config, "building the pool", e))?;
                let store = TokioPostgresStore::builder(pool.clone())
                    .table_name(&opts.namespace)
                    .cleanup_interval(opts.cleanup_interval)
                    .build()?;
                store.migrate().await?;
                let count = format!("SELECT COUNT(*) FROM \"{}\"", opts.namespace);
                let drop_sql = format!("DROP TABLE IF EXISTS \"{}\"", opts.namespace);
                let (len_pool, stop, down) = (pool.clone(), store.clone(), store.clone());
                Ok(Fixture::new(store)
                    .with_raw_len(move || {
                        let (pool, count) = (len_pool.clone(), count.clone());
                        async move {
                            let client = pool.get().await.map_err(|e| {
                                driver_error(ErrorKind::Connection, "counting rows", e)
                            })?;
                            let n: i64 = client
                                .query_one(&count, &[])
                                .await
                                .and_then(|row| row.try_get(0))
                                .map_err(|e| {
                                    driver_error(ErrorKind::Backend, "counting rows", e)
                                })?;
                            usize::try_from(n)
                                .map_err(|e| driver_error(ErrorKind::Backend, "counting rows", e))
                        }
                    })
                    .with_stop_cleanup(move || stop.stop_cleanup())
                    .with_teardown(move || async move {
                        down.stop_cleanup();
                        let client = pool.get().await.map_err(|e| {
                            driver_error(ErrorKind::Connection, "dropping the table", e)
                        })?;
                        let dropped = client.batch_execute(&drop_sql).await;
                        drop(client);
                        pool.close();
                        dropped
                            .map_err(|e| driver_error(ErrorKind::Backend, "dropping the table", e))
                    }))
            }
        })
        .server(server),
    )
}

fn driver_error(
    kind: ErrorKind,
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::new(kind, what)
        .with_backend(scs_tokiopgstore::BACKEND)
        .with_source(e)
}
