//! diesel-async on PostgreSQL, through `scs-dieselstore`, next to one
//! `diesel_async::AsyncPgConnection` used by hand.
//!
//! The store's `find` is `SELECT data FROM "sessions" WHERE token = $1 AND expiry > $2` and
//! its `commit` `INSERT INTO "sessions" (token, data, expiry, version) VALUES ($1, $2, $3,
//! $4) ON CONFLICT (token) DO UPDATE ..`, written by its own diesel query type, which each
//! connection prepares once (cached by its SQL text). The raw side sends the same texts
//! with the same bind types through a query type of the same shape: `diesel::sql_query` is
//! never cached, so it would prepare the statement again on every call (one more round
//! trip) and would not be the floor the store is measured against.

use scs_dieselstore::DieselStore;
use scs_dieselstore::diesel::pg::Pg;
use scs_dieselstore::diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use scs_dieselstore::diesel::sql_types::{BigInt, Binary, Integer, Text, Untyped};
use scs_dieselstore::diesel::{self, OptionalExtension as _, QueryResult, QueryableByName};
use scs_dieselstore::diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use tokio::sync::Mutex;

use super::*;

/// The store's table (`from_url` uses the default name) lives in this schema.
const SCHEMA: &str = "scs_bench_diesel";

/// The store's two statements, texts and bind types as it sends them.
enum Stmt<'a> {
    Find {
        key: &'a str,
        now: i64,
    },
    Upsert {
        key: &'a str,
        data: &'a [u8],
        expiry: i64,
        version: i64,
    },
}

impl QueryFragment<Pg> for Stmt<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            Self::Find { key, now } => {
                out.push_sql("SELECT data FROM \"sessions\" WHERE token = ");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(" AND expiry > ");
                out.push_bind_param::<BigInt, _>(now)?;
            }
            Self::Upsert {
                key,
                data,
                expiry,
                version,
            } => {
                out.push_sql("INSERT INTO \"sessions\" (token, data, expiry, version) VALUES (");
                out.push_bind_param::<Text, _>(*key)?;
                out.push_sql(", ");
                out.push_bind_param::<Binary, _>(*data)?;
                out.push_sql(", ");
                out.push_bind_param::<BigInt, _>(expiry)?;
                out.push_sql(", ");
                out.push_bind_param::<BigInt, _>(version)?;
                out.push_sql(
                    ") ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, \
                     expiry = EXCLUDED.expiry, version = EXCLUDED.version",
                );
            }
        }
        Ok(())
    }
}

impl QueryId for Stmt<'_> {
    type QueryId = ();
    // Cached by its SQL text, as the store's query is.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Stmt<'_> {
    type SqlType = Untyped;
}

#[derive(QueryableByName)]
struct DataRow {
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

#[derive(QueryableByName)]
struct PidRow {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Unix milliseconds, as the store keeps expiries.
fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The store as `DieselStore::from_url` builds it.
async fn open(url: &str) -> Result<DieselStore> {
    let store = DieselStore::from_url(url)?;
    store.stop_cleanup();
    store.migrate().await?;
    Ok(store)
}

async fn raw_find(conn: &Mutex<AsyncPgConnection>, key: &str) -> Result<()> {
    let mut c = conn.lock().await;
    let now = millis(OffsetDateTime::now_utc());
    let row = Stmt::Find { key, now }
        .get_result::<DataRow>(&mut *c)
        .await
        .optional()?;
    std::hint::black_box(row.map(|r| r.data));
    Ok(())
}

async fn raw_commit(conn: &Mutex<AsyncPgConnection>, key: &str, fx: &Fixture) -> Result<()> {
    let mut c = conn.lock().await;
    Stmt::Upsert {
        key,
        data: &fx.data,
        expiry: millis(fx.expiry),
        version: scs_core::new_version().cast_signed(),
    }
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_POSTGRES_URL")
        .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    if let Some(reason) = down(&url, AsyncPgConnection::establish(&url)).await {
        skipped("diesel", reason);
        return Ok(());
    }
    let mut admin = AsyncPgConnection::establish(&url).await?;
    diesel::sql_query(format!("CREATE SCHEMA IF NOT EXISTS \"{SCHEMA}\""))
        .execute(&mut admin)
        .await?;
    let result = measure(fx, &url).await;
    diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE"))
        .execute(&mut admin)
        .await?;
    let row = result?;
    emit(&store_row(
        row,
        "diesel",
        "diesel-async AsyncPgConnection, statements cached by their SQL text: the store's \
         SELECT / INSERT .. ON CONFLICT",
        "store: from_url (deadpool pool, RecyclingMethod::Fast: no SELECT 1 on checkout, a \
         closed connection is dropped instead, so 1 round trip per call)",
    ));
    Ok(())
}

async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
    let url = in_schema(url, SCHEMA);
    let store = open(&url).await?;
    fx.fill(&store).await?;
    let conn = Mutex::new(AsyncPgConnection::establish(&url).await?);
    let (proxy, proxied) = proxied(&url, 5432).await?;
    let ps = open(&proxied).await?;
    let pc = Mutex::new(AsyncPgConnection::establish(&proxied).await?);
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
async fn backends(conn: &Mutex<AsyncPgConnection>) -> Result<Vec<u32>> {
    let mut c = conn.lock().await;
    let rows = diesel::sql_query(PG_BACKENDS)
        .load::<PidRow>(&mut *c)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| u32::try_from(r.pid).ok())
        .collect())
}
