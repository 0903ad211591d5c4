//! `migrate()` upgrades a table made by an earlier release (no `version` column), and
//! running it again changes nothing.

use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_mysqlstore::MySqlStore;
use scs_mysqlstore::sqlx::{self, AssertSqlSafe, MySqlPool};
use std::time::Duration;

#[tokio::test]
async fn migrate_adds_the_version_column_to_an_old_table() {
    let url = scs_conformance::env_url("SCS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let pool = match MySqlPool::connect(&url).await {
        Ok(pool) => pool,
        Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!("skipped: no MySQL at {url}: {e}");
            return;
        }
        Err(e) => panic!("no MySQL at {url}: {e}"),
    };
    let table = format!("scs_upgrade_{}", scs_core::new_version());
    let exec = |sql: String| {
        let pool = pool.clone();
        async move { sqlx::query(AssertSqlSafe(sql)).execute(&pool).await }
    };
    // The layout of the previous release, with one live session in it.
    exec(format!(
        "CREATE TABLE `{table}` (\
         token VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
         data LONGBLOB NOT NULL, expiry DATETIME(6) NOT NULL)"
    ))
    .await
    .unwrap();
    exec(format!(
        "INSERT INTO `{table}` VALUES ('old', 'data', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)"
    ))
    .await
    .unwrap();

    let store = MySqlStore::builder(pool.clone())
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
        // A live row is left alone by commit_if(None), with every column as it was.
        assert_eq!(store.commit_if("old", b"x", expiry, None).await?, None);
        assert_eq!(store.find_record("old").await?, Some(record));
        Ok::<(), scs_core::Error>(())
    }
    .await;
    exec(format!("DROP TABLE `{table}`")).await.unwrap();
    result.unwrap();
}
