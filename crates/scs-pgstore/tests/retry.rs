//! `from_url`'s pool hands out idle connections untested (`test_before_acquire(false)`).
//! When the server has closed them, a read runs once more on a live connection and
//! succeeds, while a write returns a connection error (and is not applied); the failure
//! sets off a sweep of the other idle connections, after which the store writes again.
//!
//! And a call cancelled mid-flight leaves a connection that serves on (no code needed).
//!
//! The store's connections carry an `application_name` of their own, so only they are
//! terminated (never another test's), and a `search_path` of their own, so that the
//! store's default `sessions` table lives in a schema that this test drops.

use std::time::{Duration, Instant};

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, IterableStore as _, Store};
use scs_pgstore::PostgresStore;
use scs_pgstore::sqlx::postgres::PgPoolOptions;
use scs_pgstore::sqlx::{self, AssertSqlSafe, Connection as _, PgConnection};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Terminates every server connection named `marker` and waits until the server lists
/// none. Returns how many there were.
async fn terminate(admin: &mut PgConnection, marker: &str) -> Result<i64> {
    // Let the pool's release pings (on tasks of their own) finish, so that every
    // connection of the store sits idle in the pool when it is cut.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()) AS t",
    )
    .bind(marker)
    .fetch_one(&mut *admin)
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(marker)
                .fetch_one(&mut *admin)
                .await?;
        if left == 0 {
            return Ok(killed);
        }
        ensure!(
            Instant::now() < deadline,
            "{left} terminated connections still listed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `url` with `application_name` and `search_path` set to `marker`.
fn marked(url: &str, marker: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={marker}&options=-c%20search_path%3D{marker}")
}

/// Runs `test` with an admin connection, the URL of the store's connections and their
/// marker (a fresh schema, dropped after).
async fn in_own_schema<F>(test: F)
where
    F: AsyncFnOnce(&mut PgConnection, &str, &str) -> Result,
{
    let url = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let mut admin = match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!(
                "!!! SKIPPED: no PostgreSQL at {url}: {e} (set SCS_REQUIRE_BACKENDS=1 to make this a failure)"
            );
            return;
        }
        Err(e) => panic!("no PostgreSQL at {url}: {e}"),
    };
    let marker = format!("scs_retry_{}", scs_core::new_version());
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{marker}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let result = test(&mut admin, &marked(&url, &marker), &marker).await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{marker}\" CASCADE"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn reads_retry_on_a_live_connection_and_writes_report_the_broken_one() {
    in_own_schema(async |admin, url, marker| run(admin, url, marker).await).await;
}

/// sqlx's PostgreSQL connection is cancel-safe: a call dropped after its statement was
/// sent leaves the reply owed, and sqlx's ping when the connection returns to the pool
/// reads and discards it first. The connection goes back to the pool and serves on.
#[tokio::test]
async fn a_call_cancelled_mid_flight_leaves_a_working_connection() {
    in_own_schema(async |admin, url, marker| {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        let store = PostgresStore::builder(pool.clone())
            .cleanup_interval(None)
            .build()?;
        store.migrate().await?;
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        store.commit("k", b"one", expiry).await?;
        let backend = || {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(marker)
        };
        let before = backend().fetch_all(&mut *admin).await?;

        // The table locked, the statement waits on the server; the timeout drops the call
        // after it was sent, before its answer.
        sqlx::query("BEGIN").execute(&mut *admin).await?;
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE \"{marker}\".\"sessions\" IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *admin)
        .await?;
        let cancelled = tokio::time::timeout(Duration::from_millis(300), store.find("k")).await;
        sqlx::query("COMMIT").execute(&mut *admin).await?;
        ensure!(
            cancelled.is_err(),
            "the find was not held up: {cancelled:?}"
        );

        for _ in 0..3 {
            let found = store.find("k").await?;
            ensure!(
                found.as_deref() == Some(&b"one"[..]),
                "after the cancel: {found:?}"
            );
        }
        store.commit("k", b"two", expiry).await?;
        let found = store.find("k").await?;
        ensure!(
            found.as_deref() == Some(&b"two"[..]),
            "after the cancel: {found:?}"
        );
        // Still the same connection: the cancelled call's went back and served on.
        let after = backend().fetch_all(&mut *admin).await?;
        ensure!(
            before.len() == 1 && after == before,
            "server connections {before:?} before the cancel, {after:?} after"
        );
        pool.close().await;
        Ok(())
    })
    .await;
}

async fn run(admin: &mut PgConnection, url: &str, marker: &str) -> Result {
    let store = PostgresStore::from_url(url).await?;
    store.stop_cleanup();
    store.migrate().await?;
    let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store.commit("k", b"one", expiry).await?;
    // Several connections in the pool, so that the retry has to pass over more than one
    // dead connection before the pool opens a new one.
    let (a, b, c) = tokio::join!(store.find("k"), store.find("k"), store.find("k"));
    for found in [a?, b?, c?] {
        ensure!(found.as_deref() == Some(&b"one"[..]), "read {found:?}");
    }

    let killed = terminate(admin, marker).await?;
    ensure!(
        killed >= 2,
        "only {killed} pooled connection(s) to terminate"
    );
    let found = store.find("k").await;
    ensure!(
        matches!(&found, Ok(Some(v)) if v == b"one"),
        "find after the server closed every pooled connection: {found:?}"
    );

    terminate(admin, marker).await?;
    let record = store.find_record("k").await;
    ensure!(
        matches!(&record, Ok(Some(r)) if r.data == b"one"),
        "find_record after the server closed the pooled connection: {record:?}"
    );

    terminate(admin, marker).await?;
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
    let killed = terminate(admin, marker).await?;
    ensure!(
        killed >= 2,
        "only {killed} pooled connection(s) to terminate"
    );
    let err = store.commit("k2", b"two", expiry).await;
    ensure!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::Connection),
        "commit on a connection the server closed: {err:?}, expected a Connection error"
    );
    // The failure set off a sweep of the other idle connections (on a task of its own):
    // once it is done, the next write does not meet another dead one.
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
}
