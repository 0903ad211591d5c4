//! `from_url`'s pool hands out idle connections untested (`test_before_acquire(false)`).
//! When the server has closed them, a read runs once more on a live connection and
//! succeeds, while a write returns a connection error (and is not applied); the failure
//! sets off a sweep of the other idle connections, after which the store writes again.
//! And a call cancelled mid-flight closes its connection instead of returning it to the
//! pool (sqlx's MySQL driver is not cancel-safe).
//!
//! Each test works in a database of its own: it marks the store's connections (only they
//! are killed, never another test's, found by their current database in
//! `information_schema.PROCESSLIST`) and holds the store's default `sessions` table.

use std::time::{Duration, Instant};

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, IterableStore as _, Store};
use scs_mysqlstore::MySqlStore;
use scs_mysqlstore::sqlx::mysql::{MySqlConnection, MySqlPoolOptions};
use scs_mysqlstore::sqlx::{self, AssertSqlSafe, Connection as _};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// The server's connections whose current database is `db`.
async fn connections(admin: &mut MySqlConnection, db: &str) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?")
            .bind(db)
            .fetch_all(&mut *admin)
            .await?,
    )
}

/// Waits until the server lists no connection in `db`.
async fn wait_gone(admin: &mut MySqlConnection, db: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = connections(admin, db).await?.len();
        if left == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{left} connection(s) still listed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills every server connection in `db` and waits until the server lists none. Returns
/// how many there were.
async fn kill(admin: &mut MySqlConnection, db: &str) -> Result<usize> {
    // Let the pool's release pings (on tasks of their own) finish, so that every
    // connection of the store sits idle in the pool when it is cut.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = connections(admin, db).await?;
    for id in &ids {
        // Gone already is fine (ER_NO_SUCH_THREAD).
        let _ = sqlx::query(AssertSqlSafe(format!("KILL {id}")))
            .execute(&mut *admin)
            .await;
    }
    wait_gone(admin, db).await?;
    Ok(ids.len())
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{db}{query}")
}

/// Runs `test` with an admin connection and the URL of a fresh database (dropped after).
async fn in_own_database<F>(test: F)
where
    F: AsyncFnOnce(&mut MySqlConnection, &str, &str) -> Result,
{
    let url = scs_conformance::env_url("SCS_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let mut admin = match MySqlConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!(
                "!!! SKIPPED: no MySQL at {url}: {e} (set SCS_REQUIRE_BACKENDS=1 to make this a failure)"
            );
            return;
        }
        Err(e) => panic!("no MySQL at {url}: {e}"),
    };
    let db = format!("scs_retry_{}", scs_core::new_version());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&mut admin)
        .await
        .unwrap();
    let result = test(&mut admin, &with_database(&url, &db), &db).await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`")))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reads_retry_on_a_live_connection_and_writes_report_the_broken_one() {
    in_own_database(async |admin, url, db| {
        let store = MySqlStore::from_url(url).await?;
        store.stop_cleanup();
        store.migrate().await?;
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store.commit("k", b"one", expiry).await?;
        // Several connections in the pool, so that the retry has to pass over more than
        // one dead connection before the pool opens a new one.
        let (a, b, c) = tokio::join!(store.find("k"), store.find("k"), store.find("k"));
        for found in [a?, b?, c?] {
            ensure!(found.as_deref() == Some(&b"one"[..]), "read {found:?}");
        }

        let killed = kill(admin, db).await?;
        ensure!(killed >= 2, "only {killed} pooled connection(s) to kill");
        let found = store.find("k").await;
        ensure!(
            matches!(&found, Ok(Some(v)) if v == b"one"),
            "find after the server closed every pooled connection: {found:?}"
        );

        kill(admin, db).await?;
        let record = store.find_record("k").await;
        ensure!(
            matches!(&record, Ok(Some(r)) if r.data == b"one"),
            "find_record after the server closed the pooled connection: {record:?}"
        );

        kill(admin, db).await?;
        let all = store.all().await;
        ensure!(
            matches!(&all, Ok(entries) if entries.len() == 1),
            "all after the server closed the pooled connection: {all:?}"
        );

        // A write is not retried: it reports the broken connection, and is not applied.
        let (a, b, c) = tokio::join!(store.find("k"), store.find("k"), store.find("k"));
        for found in [a?, b?, c?] {
            ensure!(found.as_deref() == Some(&b"one"[..]), "read {found:?}");
        }
        let killed = kill(admin, db).await?;
        ensure!(killed >= 2, "only {killed} pooled connection(s) to kill");
        let err = store.commit("k2", b"two", expiry).await;
        ensure!(
            matches!(&err, Err(e) if e.kind() == ErrorKind::Connection),
            "commit on a connection the server closed: {err:?}, expected a Connection error"
        );
        // The failure set off a sweep of the other idle connections (on a task of its
        // own): once it is done, the next write does not meet another dead one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.commit("k", b"three", expiry).await?;
        let found = store.find("k").await?;
        ensure!(
            found.as_deref() == Some(&b"three"[..]),
            "after recovery: {found:?}"
        );
        let found = store.find("k2").await?;
        ensure!(found.is_none(), "the failed commit was applied: {found:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_call_cancelled_mid_flight_closes_its_connection() {
    in_own_database(async |admin, url, db| {
        // One connection, untested on checkout, as from_url's pool hands them out.
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        let store = MySqlStore::builder(pool.clone())
            .cleanup_interval(None)
            .build()?;
        store.migrate().await?;
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store.commit("k", b"one", expiry).await?;
        ensure!(store.find("k").await?.is_some(), "no row");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ensure!(pool.size() == 1, "pool size {}", pool.size());

        // The table locked, the statement waits on the server; the timeout drops the call
        // after it was sent, before its answer.
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLES `{db}`.`sessions` WRITE"
        )))
        .execute(&mut *admin)
        .await?;
        let cancelled = tokio::time::timeout(Duration::from_millis(300), store.find("k")).await;
        sqlx::query("UNLOCK TABLES").execute(&mut *admin).await?;
        ensure!(
            cancelled.is_err(),
            "the find was not held up: {cancelled:?}"
        );

        // Closed, not handed back to the pool (where sqlx would read the stream on).
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(
            pool.size() == 0,
            "the cancelled call's connection went back to the pool"
        );
        wait_gone(admin, db).await?;
        let found = store.find("k").await?;
        ensure!(
            found.as_deref() == Some(&b"one"[..]),
            "after the cancel: {found:?}"
        );
        pool.close().await;
        Ok(())
    })
    .await;
}
