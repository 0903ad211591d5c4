//! `from_url`'s pool checks connections on checkout without a query
//! (`RecyclingMethod::Fast`). A connection the server closed while idle is dropped there;
//! one the server closes during a read fails the read, which then runs once more on
//! another connection and succeeds; one the server closes during a write returns a
//! connection error (and the write is not applied).
//!
//! The store's connections carry an `application_name` of their own, so only they are
//! terminated (never another test's), and a `search_path` of their own, so that the
//! store's default `sessions` table lives in a schema that this test drops.

use std::time::{Duration, Instant};

use scs_core::time::OffsetDateTime;
use scs_core::{ErrorKind, Store};
use scs_tokiopgstore::TokioPostgresStore;
use scs_tokiopgstore::tokio_postgres::{self, Client, NoTls};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// `url` with `application_name` and `search_path` set to `marker`.
fn marked(url: &str, marker: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={marker}&options=-c%20search_path%3D{marker}")
}

/// The store's server connections (`application_name` = `marker`) that wait on a lock,
/// other than `not`; waits up to 10 s for one.
async fn lock_waiter(admin: &Client, marker: &str, not: Option<i32>) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock'",
                &[&marker],
            )
            .await?;
        if let Some(pid) = rows
            .iter()
            .map(|r| r.get::<_, i32>(0))
            .find(|p| Some(*p) != not)
        {
            return Ok(pid);
        }
        ensure!(
            Instant::now() < deadline,
            "no statement of the store waits on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn terminate(admin: &Client, pid: i32) -> Result {
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await?
        .get(0);
    ensure!(terminated, "backend {pid} was not terminated");
    Ok(())
}

/// Terminates every server connection named `marker` and waits until the server lists
/// none. Returns how many there were.
async fn terminate_all(admin: &Client, marker: &str) -> Result<usize> {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&marker],
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&marker],
            )
            .await?
            .get(0);
        if left == 0 {
            return Ok(rows.len());
        }
        ensure!(
            Instant::now() < deadline,
            "{left} connections still listed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_retry_when_the_connection_breaks_and_writes_report_it() {
    let url = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    };
    let admin = match connect().await {
        Ok(client) => client,
        Err(e) if std::env::var("SCS_REQUIRE_BACKENDS").as_deref() != Ok("1") => {
            eprintln!(
                "!!! SKIPPED: no PostgreSQL at {url}: {e} (set SCS_REQUIRE_BACKENDS=1 to make this a failure)"
            );
            return;
        }
        Err(e) => panic!("no PostgreSQL at {url}: {e}"),
    };
    // Holds the table lock. Apart from `admin`, which watches: inside a transaction, the
    // server shows the same snapshot of pg_stat_activity until it ends.
    let locker = connect().await.unwrap();
    let marker = format!("scs_retry_{}", scs_core::new_version());
    admin
        .batch_execute(&format!("CREATE SCHEMA \"{marker}\""))
        .await
        .unwrap();
    let result = run(&admin, &locker, &marked(&url, &marker), &marker).await;
    // Whatever happened, no lock stays behind.
    let _ = locker.batch_execute("ROLLBACK").await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{marker}\" CASCADE"))
        .await
        .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn run(admin: &Client, locker: &Client, url: &str, marker: &str) -> Result {
    let store = TokioPostgresStore::from_url(url).await?;
    store.stop_cleanup();
    store.migrate().await?;
    let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store.commit("k", b"one", expiry).await?;
    let lock = format!("BEGIN; LOCK TABLE \"{marker}\".\"sessions\" IN ACCESS EXCLUSIVE MODE");

    // Closed while idle: dropped at checkout (no query), so even a write, which is never
    // retried, meets a live connection.
    ensure!(
        terminate_all(admin, marker).await? >= 1,
        "no pooled connection to terminate"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.commit("k", b"two", expiry).await?;

    // Closed during a read: the read runs once more, on another connection (which waits
    // on the lock in turn until it is released).
    locker.batch_execute(&lock).await?;
    let reader = store.clone();
    let mut read = tokio::spawn(async move { reader.find("k").await });
    let first = lock_waiter(admin, marker, None).await?;
    terminate(admin, first).await?;
    tokio::select! {
        waiting = lock_waiter(admin, marker, Some(first)) => waiting.map(drop)?,
        done = &mut read => {
            return Err(format!("the read ended while the lock was held: {:?}", done?).into());
        }
    }
    locker.batch_execute("COMMIT").await?;
    let found = read.await?;
    ensure!(
        matches!(&found, Ok(Some(v)) if v == b"two"),
        "find whose connection the server closed mid-statement: {found:?}"
    );

    // Closed during a write: a Connection error, and the write is not applied.
    locker.batch_execute(&lock).await?;
    let writer = store.clone();
    let write = tokio::spawn(async move { writer.commit("k", b"three", expiry).await });
    let pid = lock_waiter(admin, marker, None).await?;
    terminate(admin, pid).await?;
    let written = write.await?;
    locker.batch_execute("COMMIT").await?;
    ensure!(
        matches!(&written, Err(e) if e.kind() == ErrorKind::Connection),
        "commit whose connection the server closed mid-statement: {written:?}, expected a \
         Connection error"
    );
    let found = store.find("k").await?;
    ensure!(
        found.as_deref() == Some(&b"two"[..]),
        "the failed commit was applied: {found:?}"
    );
    store.commit("k", b"four", expiry).await?;
    let found = store.find("k").await?;
    ensure!(
        found.as_deref() == Some(&b"four"[..]),
        "after recovery: {found:?}"
    );
    Ok(())
}
