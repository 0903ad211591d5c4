//! `migrate()` upgrades a table made before versioned commits, on PostgreSQL
//! (`SCS_POSTGRES_URL`) and MySQL/MariaDB (`SCS_MYSQL_URL`). A missing server skips its
//! part, or fails it under `SCS_REQUIRE_BACKENDS=1`.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_dieselstore::{DieselPool, DieselStore, diesel, diesel_async};

const HOUR: Duration = Duration::from_secs(3600);

/// Runs statements of the test's own on the store's pool.
async fn run(pool: &DieselPool, statements: &[String]) -> Result<(), String> {
    macro_rules! on {
        ($pool:expr) => {{
            let mut conn = $pool.get().await.map_err(|e| e.to_string())?;
            for sql in statements {
                diesel::sql_query(sql.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }};
    }
    match pool {
        DieselPool::Postgres(p) => on!(p),
        DieselPool::Mysql(p) => on!(p),
        _ => Err("a pool this test does not know".to_owned()),
    }
}

async fn upgrade(url: &str) {
    let table = scs_conformance::namespace();
    let store = DieselStore::from_url(url).unwrap();
    let store = DieselStore::builder(store.pool().clone())
        .table_name(&table)
        .cleanup_interval(None)
        .build()
        .unwrap();
    let expiry = (OffsetDateTime::now_utc() + HOUR).unix_timestamp() * 1000;
    // The table as the crate made it before versioned commits, with a live row.
    let old = match store.pool() {
        DieselPool::Postgres(_) => vec![
            format!(
                "CREATE TABLE \"{table}\" (token VARCHAR(255) NOT NULL PRIMARY KEY, \
                 data BYTEA NOT NULL, expiry BIGINT NOT NULL)"
            ),
            format!(
                "INSERT INTO \"{table}\" (token, data, expiry) VALUES ('old', '\\x01', {expiry})"
            ),
        ],
        _ => vec![
            format!(
                "CREATE TABLE `{table}` (token VARCHAR(255) NOT NULL PRIMARY KEY, \
                 data LONGBLOB NOT NULL, expiry BIGINT NOT NULL, \
                 KEY `{table}_expiry_idx` (expiry)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ),
            format!("INSERT INTO `{table}` (token, data, expiry) VALUES ('old', x'01', {expiry})"),
        ],
    };
    match run(store.pool(), &old).await {
        Ok(()) => {}
        Err(e) if std::env::var(scs_conformance::REQUIRE_BACKENDS_VAR).is_err() => {
            eprintln!("!!! skipped: {url} is not reachable ({e})");
            return;
        }
        Err(e) => panic!("{url}: {e}"),
    }

    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let record = store.find_record("old").await.unwrap().unwrap();
    assert_eq!((record.data.as_slice(), record.version), (&[1u8][..], 0));
    let later = OffsetDateTime::now_utc() + HOUR;
    let v = store
        .commit_if("old", b"new", later, Some(0))
        .await
        .unwrap()
        .expect("the old row's version is 0");
    assert_ne!(v, 0);
    assert_eq!(
        store.commit_if("old", b"x", later, Some(0)).await.unwrap(),
        None
    );
    assert_eq!(store.find_record("old").await.unwrap().unwrap().version, v);
    run(store.pool(), &[format!("DROP TABLE {table}")])
        .await
        .unwrap();
}

#[tokio::test]
async fn migrate_upgrades_a_table_without_versions() {
    upgrade(&scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ))
    .await;
    upgrade(&scs_conformance::env_url(
        "SCS_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ))
    .await;
}
