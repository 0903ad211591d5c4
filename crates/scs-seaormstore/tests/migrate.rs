//! `migrate()` upgrades a table made before versioned commits, on PostgreSQL
//! (`SCS_POSTGRES_URL`), MySQL/MariaDB (`SCS_MYSQL_URL`) and SQLite (in memory). A missing
//! server skips its part, or fails it under `SCS_REQUIRE_BACKENDS=1`.

use std::time::Duration;

use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_seaormstore::SeaOrmStore;
use scs_seaormstore::sea_orm::{ConnectionTrait, Database, DbBackend};

const HOUR: Duration = Duration::from_secs(3600);

async fn upgrade(url: &str) {
    let db = match Database::connect(url).await {
        Ok(db) => db,
        Err(e) if std::env::var(scs_conformance::REQUIRE_BACKENDS_VAR).is_err() => {
            eprintln!("!!! skipped: {url} is not reachable ({e})");
            return;
        }
        Err(e) => panic!("{url}: {e}"),
    };
    let table = scs_conformance::namespace();
    // The table as the crate made it before versioned commits, with a live row.
    let (create, insert) = match db.get_database_backend() {
        DbBackend::MySql => (
            format!(
                "CREATE TABLE `{table}` (`token` varchar(255) NOT NULL PRIMARY KEY, \
                 `data` LONGBLOB NOT NULL, `expiry` bigint NOT NULL, \
                 KEY `{table}_expiry_idx` (`expiry`)) \
                 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            format!("INSERT INTO `{table}` (token, data, expiry) VALUES ('old', x'01', "),
        ),
        DbBackend::Postgres => (
            format!(
                "CREATE TABLE \"{table}\" (\"token\" varchar(255) NOT NULL PRIMARY KEY, \
                 \"data\" bytea NOT NULL, \"expiry\" bigint NOT NULL)"
            ),
            format!("INSERT INTO \"{table}\" (token, data, expiry) VALUES ('old', '\\x01', "),
        ),
        _ => (
            format!(
                "CREATE TABLE \"{table}\" (\"token\" varchar(255) NOT NULL PRIMARY KEY, \
                 \"data\" blob NOT NULL, \"expiry\" integer NOT NULL)"
            ),
            format!("INSERT INTO \"{table}\" (token, data, expiry) VALUES ('old', x'01', "),
        ),
    };
    let expiry = (OffsetDateTime::now_utc() + HOUR).unix_timestamp() * 1000;
    db.execute_unprepared(&create).await.unwrap();
    db.execute_unprepared(&format!("{insert}{expiry})"))
        .await
        .unwrap();

    let store = SeaOrmStore::builder(db.clone())
        .table_name(&table)
        .cleanup_interval(None)
        .build()
        .unwrap();
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
    db.execute_unprepared(&format!("DROP TABLE {table}"))
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
    upgrade("sqlite::memory:").await;
}
