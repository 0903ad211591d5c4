//! The conformance suite on PostgreSQL (`SCS_POSTGRES_URL`) and MySQL/MariaDB
//! (`SCS_MYSQL_URL`).

use std::process::ExitCode;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl};
use scs_conformance::{Backend, Fixture, StoreOptions};
use scs_core::{Error, ErrorKind, Result};
use scs_dieselstore::{DieselPool, DieselStore, diesel, diesel_async};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn main() -> ExitCode {
    let pg = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let my = scs_conformance::env_url("SCS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    scs_conformance::run_all(vec![backend("postgres", pg), backend("mysql", my)])
}

fn backend(db: &'static str, url: String) -> Backend {
    let server = url.clone();
    Backend::new(format!("{}-{db}", scs_dieselstore::BACKEND), move |opts| {
        // The suite may put a fault proxy in front of the server.
        let url = opts.url.clone().unwrap_or_else(|| url.clone());
        async move {
            // Trials run side by side, each with its own pool: keep each one small.
            let build = |e| Error::new(ErrorKind::Config, "building the pool").with_source(e);
            let pool: DieselPool = if db == "postgres" {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
                Pool::builder(manager)
                    .max_size(4)
                    .build()
                    .map_err(build)?
                    .into()
            } else {
                // mysql_async moves a loopback connection onto the server's Unix socket by
                // default, which would slip past the suite's fault proxy: stay on TCP.
                let sep = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{sep}prefer_socket=false");
                let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(url);
                Pool::builder(manager)
                    .max_size(4)
                    .build()
                    .map_err(build)?
                    .into()
            };
            fixture(pool, opts).await
        }
    })
    .server(server)
}

/// Runs one statement on whichever pool it is.
async fn run(pool: &DieselPool, sql: String, count: bool) -> Result<i64> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::new(ErrorKind::Backend, "running a test statement").with_source(e)
    };
    macro_rules! on {
        ($pool:expr) => {{
            let mut conn = $pool.get().await.map_err(|e| err(Box::new(e)))?;
            if count {
                let row: Count = diesel::sql_query(sql)
                    .get_result(&mut *conn)
                    .await
                    .map_err(|e| err(Box::new(e)))?;
                Ok(row.n)
            } else {
                diesel::sql_query(sql)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| err(Box::new(e)))?;
                Ok(0)
            }
        }};
    }
    match pool {
        DieselPool::Postgres(p) => on!(p),
        DieselPool::Mysql(p) => on!(p),
        _ => Err(Error::new(
            ErrorKind::Unsupported,
            "a pool this test does not know",
        )),
    }
}

async fn fixture(pool: DieselPool, opts: StoreOptions) -> Result<Fixture> {
    let store = DieselStore::builder(pool)
        .table_name(&opts.namespace)
        .cleanup_interval(opts.cleanup_interval)
        .build()?;
    store.migrate().await?;
    let (len, stop, drop) = (store.clone(), store.clone(), store.clone());
    Ok(Fixture::new(store)
        .with_raw_len(move || {
            let len = len.clone();
            async move {
                let sql = format!("SELECT COUNT(*) AS n FROM {}", len.table_name());
                let n = run(len.pool(), sql, true).await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        })
        .with_stop_cleanup(move || stop.stop_cleanup())
        .with_teardown(move || async move {
            drop.stop_cleanup();
            run(
                drop.pool(),
                format!("DROP TABLE IF EXISTS {}", drop.table_name()),
                false,
            )
            .await?;
            Ok(())
        }))
}
