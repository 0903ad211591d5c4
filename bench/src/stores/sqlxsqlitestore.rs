//! SQLite through sqlx: the raw side is the store's own statements on one
//! `SqliteConnection` opened with the store's settings (WAL, `synchronous=NORMAL`), the
//! driver at its most direct; each statement hops to the connection's sqlx worker thread,
//! as the store's do. As for MySQL, the row's `pool` gives the same statements through
//! the store's own `SqlitePool`: what is left of the store once the pool's cost is out.

use scs_sqlxsqlitestore::SqlxSqliteStore;
use scs_sqlxsqlitestore::sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use scs_sqlxsqlitestore::sqlx::{self, ConnectOptions as _, Row as _};
use tokio::sync::Mutex;

use super::*;

const FIND: &str = "SELECT data FROM \"sessions\" WHERE token = ? AND expiry > ?";
const COMMIT: &str = "INSERT INTO \"sessions\" (token, data, expiry, version) \
     VALUES (?, ?, ?, ?) ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
     expiry = excluded.expiry, version = excluded.version";

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

async fn find_on<'c>(on: impl sqlx::SqliteExecutor<'c>, key: &str) -> Result<()> {
    let row = sqlx::query(FIND)
        .bind(key)
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .fetch_optional(on)
        .await?;
    let data: Option<Vec<u8>> = row.map(|r| r.try_get(0)).transpose()?;
    std::hint::black_box(data);
    Ok(())
}

async fn commit_on<'c>(on: impl sqlx::SqliteExecutor<'c>, key: &str, fx: &Fixture) -> Result<()> {
    sqlx::query(COMMIT)
        .bind(key)
        .bind(fx.data.as_slice())
        .bind(unix_ms(fx.expiry))
        // A new version per write, as the store gives one.
        .bind(scs_core::new_version().cast_signed())
        .execute(on)
        .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("scs-bench-{}-sqlx-sqlite", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(fx, &dir.join("sessions.db")).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(&result?);
    Ok(())
}

async fn measure(fx: &Fixture, path: &std::path::Path) -> Result<Json> {
    // As `SqlxSqliteStore::open` sets up its pool (sqlx's defaults, no ping at checkout).
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await?;
    let store = SqlxSqliteStore::builder(pool)
        .cleanup_interval(None)
        .build()?;
    store.migrate().await?;
    fx.fill(&store).await?;
    let conn: Mutex<SqliteConnection> = Mutex::new(options.connect().await?);
    let (s, c, pool) = (&store, &conn, store.pool());
    let (find, commit) = against(
        fx,
        s,
        |i| async move { find_on(&mut *c.lock().await, fx.key(i)).await },
        |i| async move { commit_on(&mut *c.lock().await, fx.key(i), fx).await },
    )
    .await?;
    let pool_find = compare(
        fx.ops,
        |i| async move {
            std::hint::black_box(s.find(fx.key(i)).await?);
            Ok(())
        },
        |i| find_on(pool, fx.key(i)),
    )
    .await?;
    let pool_commit = compare(
        fx.ops,
        |i| async move { Ok(s.commit(fx.key(i), &fx.data, fx.expiry).await?) },
        |i| commit_on(pool, fx.key(i), fx),
    )
    .await?;
    Ok(json!({
        "part": "store",
        "store": "sqlx-sqlite",
        "status": "ok",
        "raw": "sqlx SqliteConnection: the store's SELECT / INSERT .. ON CONFLICT",
        "find": find,
        "commit": commit,
        "pool": { "find": pool_find, "commit": pool_commit },
        "rt": null,
        "note": "file in WAL mode, synchronous=NORMAL; in-process, no round trips (each \
                 statement hops to the connection's sqlx worker thread); the store's pool \
                 as `open` builds it (sqlx's defaults, test_before_acquire(false)); `pool` \
                 is the same statements through that same pool",
    }))
}
