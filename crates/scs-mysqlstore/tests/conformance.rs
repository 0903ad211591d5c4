//! The conformance suite against MySQL / MariaDB (`SCS_MYSQL_URL`).

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_mysqlstore::MySqlStore;
use scs_mysqlstore::sqlx::{self, AssertSqlSafe, mysql::MySqlPoolOptions};

fn main() -> ExitCode {
    let url = scs_conformance::env_url("SCS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_mysqlstore::BACKEND, move |opts| {
            // The suite may put a fault proxy in front of the server.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                // A small pool per fixture: eight trials run at once, some with two stores.
                // Untested checkouts, as `MySqlStore::from_url` builds its pool: the fault
                // tier then covers the retry of reads over connections that broke idle.
                let pool = MySqlPoolOptions::new()
                    .max_connections(2)
                    .test_before_acquire(false)
                    .connect(&url)
                    .await
                    .map_err(|e| driver_error(ErrorKind::Connection, "connecting", e))?;
                let store = MySqlStore::builder(pool.clone())
                    .table_name(&opts.namespace)
                    .cleanup_interval(opts.cleanup_interval)
                    .build()?;
                store.migrate().await?;
                let count = format!("SELECT COUNT(*) FROM `{}`", opts.namespace);
                let drop_sql = format!("DROP TABLE IF EXISTS `{}`", opts.namespace);
                let (len_pool, stop, down) = (pool.clone(), store.clone(), store.clone());
                Ok(Fixture::new(store)
                    .with_raw_len(move || {
                        let (pool, count) = (len_pool.clone(), count.clone());
                        async move {
                            let n: i64 = sqlx::query_scalar(AssertSqlSafe(count))
                                .fetch_one(&pool)
                                .await
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
                        let dropped = sqlx::query(AssertSqlSafe(drop_sql)).execute(&pool).await;
                        pool.close().await;
                        dropped.map_err(|e| {
                            driver_error(ErrorKind::Backend, "dropping the table", e)
                        })?;
                        Ok(())
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
        .with_backend(scs_mysqlstore::BACKEND)
        .with_source(e)
}
