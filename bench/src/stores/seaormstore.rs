//! SeaORM on PostgreSQL, through `scs-seaormstore`, next to one sqlx `PgConnection` (the
//! driver under SeaORM) used by hand.
//!
//! The store builds its statements with sea-query and runs them on SeaORM's sqlx pool:
//! `find` is `SELECT "data" FROM "sessions" WHERE "token" = $1 AND "expiry" > $2`, `commit`
//! `INSERT INTO "sessions" (..) VALUES ($1, $2, $3, $4) ON CONFLICT ("token") DO UPDATE
//! SET ..` (the texts below are what sea-query renders). The raw side sends the same texts
//! with the same bind types on a single sqlx connection, prepared once and cached as
//! SeaORM's are: the floor under SeaORM's statement building, its pool and the pool's
//! connection checks.

use scs_seaormstore::SeaOrmStore;
use scs_seaormstore::sea_orm::sqlx::postgres::PgConnection;
use scs_seaormstore::sea_orm::sqlx::{self, Connection as _};
use tokio::sync::Mutex;

use super::*;

/// The store's table (`from_url` uses the default name) lives in this schema.
const SCHEMA: &str = "scs_bench_seaorm";
const FIND: &str = "SELECT \"data\" FROM \"sessions\" WHERE \"token\" = $1 AND \"expiry\" > $2";
const COMMIT: &str = "INSERT INTO \"sessions\" (\"token\", \"data\", \"expiry\", \"version\") \
     VALUES ($1, $2, $3, $4) ON CONFLICT (\"token\") DO UPDATE SET \
     \"data\" = \"excluded\".\"data\", \"expiry\" = \"excluded\".\"expiry\", \
     \"version\" = \"excluded\".\"version\"";

/// Unix milliseconds, as the store keeps expiries.
fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The store as `SeaOrmStore::from_url` builds it.
async fn open(url: &str) -> Result<SeaOrmStore> {
    let store = SeaOrmStore::from_url(url).await?;
    store.stop_cleanup();
    store.migrate().await?;
    Ok(store)
}

async fn raw_find(conn: &Mutex<PgConnection>, key: &str) -> Result<()> {
    let mut c = conn.lock().await;
    let v: Option<Vec<u8>> = sqlx::query_scalar(FIND)
        .bind(key)
        .bind(millis(OffsetDateTime::now_utc()))
        .fetch_optional(&mut *c)
        .await?;
    std::hint::black_box(v);
    Ok(())
}

async fn raw_commit(conn: &Mutex<PgConnection>, key: &str, fx: &Fixture) -> Result<()> {
    let mut c = conn.lock().await;
    sqlx::query(COMMIT)
        .bind(key)
        .bind(&fx.data)
        .bind(millis(fx.expiry))
        .bind(scs_core::new_version().cast_signed())
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_POSTGRES_URL")
        .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    if let Some(reason) = down(&url, PgConnection::connect(&url)).await {
        skipped("seaorm", reason);
        return Ok(());
    }
    let mut admin = PgConnection::connect(&url).await?;
    let schema = format!("CREATE SCHEMA IF NOT EXISTS \"{SCHEMA}\"");
    sqlx::query(sqlx::AssertSqlSafe(schema))
        .execute(&mut admin)
        .await?;
    let result = measure(fx, &url).await;
    let drop_schema = format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop_schema))
        .execute(&mut admin)
        .await?;
    let row = result?;
    emit(&store_row(
        row,
        "seaorm",
        "sqlx PgConnection (the driver under SeaORM): the SELECT / INSERT .. ON CONFLICT \
         texts sea-query renders for the store",
        "store: from_url (SeaORM's sqlx pool, a ping before a statement only on a \
         connection idle for 10 s or more: 1 round trip on the request path); sqlx's \
         hard-coded ping when a connection returns to the pool follows, on its own task \
         after the caller has its answer, so the proxy counts 2 exchanges per call",
    ));
    Ok(())
}

async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
    let url = in_schema(url, SCHEMA);
    let store = open(&url).await?;
    fx.fill(&store).await?;
    let conn = Mutex::new(PgConnection::connect(&url).await?);
    let (proxy, proxied) = proxied(&url, 5432).await?;
    let ps = open(&proxied).await?;
    let pc = Mutex::new(PgConnection::connect(&proxied).await?);
    measure_pair(
        fx,
        (&store, &conn),
        (&ps, &pc, &proxy),
        (raw_find, |c, key| raw_commit(c, key, fx)),
        backends(&conn),
    )
    .await
}

/// The backend processes serving this database's connections.
async fn backends(conn: &Mutex<PgConnection>) -> Result<Vec<u32>> {
    let mut c = conn.lock().await;
    let pids: Vec<i32> = sqlx::query_scalar(PG_BACKENDS).fetch_all(&mut *c).await?;
    Ok(pids
        .into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect())
}
