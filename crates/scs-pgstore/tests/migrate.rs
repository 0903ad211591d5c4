//! `migrate()` upgrades a table made by an earlier release (no `version` column), and
//! running it again changes nothing.

use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_pgstore::PostgresStore;
use scs_pgstore::sqlx::{self, AssertSqlSafe, PgPool};
use std::time::Duration;

#[tokio::test]
async fn migrate_adds_the_version_column_to_an_old_table() {
    let url = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let pool = match PgPool::connect(&url).await {
        Ok(pool) => pool,
        Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!("skipped: no PostgreSQL at {url}: {e}");
            return;
        }
        Err(e) => panic!("no PostgreSQL at {url}: {e}"),
    };
    let table = format!("scs_upgrade_{}", scs_core::new_version());
    let exec = |sql: String| {
        let pool = pool.clone();
        async move { sqlx::query(AssertSqlSafe(sql)).execute(&pool).await }
    };
    // The layout of the previous release, with one live session in it.
    exec(format!(
        "CREATE TABLE \"{table}\" (token TEXT PRIMARY KEY, data BYTEA NOT NULL, \
         expiry TIMESTAMPTZ NOT NULL)"
    ))
    .await
    .unwrap();
    exec(format!(
        "INSERT INTO \"{table}\" VALUES ('old', 'data'::bytea, now() + interval '1 hour')"
    ))
    .await
    .unwrap();

    let store = PostgresStore::builder(pool.clone())
        .table_name(&table)
        .cleanup_interval(None)
        .build()
        .unwrap();
    let result = async {
        store.migrate().await?;
        store.migrate().await?;
        let record = store.find_record("old").await?.expect("the old row");
        assert_eq!((record.data.as_slice(), record.version), (&b"data"[..], 0));
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let v = store.commit_if("old", b"new", expiry, Some(0)).await?;
        let record = store.find_record("old").await?.expect("the new row");
        assert_eq!(Some(record.version), v);
        assert_eq!(record.data, b"new");
        Ok::<(), scs_core::Error>(())
    }
    .await;
    exec(format!("DROP TABLE \"{table}\"")).await.unwrap();
    result.unwrap();
}
