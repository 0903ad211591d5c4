//! Part 4: per store, `find` and `commit` latency through the scs `Store` trait next to the
//! same statement sent with the raw driver, and the network round trips of each, counted
//! by a relaying proxy on 127.0.0.1 (a round trip = the client speaking again after the
//! server answered, so pipelined commands count once).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scs_bench::stats;
use scs_core::time::OffsetDateTime;
use scs_core::{Codec as _, MsgPackCodec, SessionData, Store, Value, token};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::{Opts, Result, emit, runtime};

/// Live sessions each store holds during the run; operations cycle through them.
const KEYS: usize = 256;
/// How long to wait for a server before listing it as down.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
const CONNECT: Duration = Duration::from_secs(5);

struct Fixture {
    keys: Vec<String>,
    data: Vec<u8>,
    expiry: OffsetDateTime,
    ops: usize,
}

impl Fixture {
    fn new(ops: usize) -> Result<Self> {
        let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let mut session = SessionData::new(expiry);
        session
            .values
            .insert("n".to_owned(), Value::from_serialize(&1_i64)?);
        Ok(Self {
            keys: (0..KEYS)
                .map(|_| token::store_key(&token::generate(), true))
                .collect(),
            data: MsgPackCodec.encode(&session)?,
            expiry,
            ops,
        })
    }

    fn key(&self, i: usize) -> &str {
        &self.keys[i % KEYS]
    }

    /// Commits every key through the store.
    async fn fill(&self, store: &impl Store) -> Result<()> {
        for key in &self.keys {
            store.commit(key, &self.data, self.expiry).await?;
        }
        Ok(())
    }
}

fn micros(since: Instant) -> f64 {
    since.elapsed().as_nanos() as f64 / 1000.0
}

/// Latencies (µs) of `n` calls of `a` and of `b`, after a warm-up, interleaved in blocks
/// so that drift on a shared machine hits both alike.
async fn compare<A, FA, B, FB>(n: usize, mut a: A, mut b: B) -> Result<Json>
where
    A: FnMut(usize) -> FA,
    FA: Future<Output = Result<()>>,
    B: FnMut(usize) -> FB,
    FB: Future<Output = Result<()>>,
{
    for i in 0..(n / 10).max(10) {
        a(i).await?;
        b(i).await?;
    }
    const BLOCK: usize = 50;
    let (mut la, mut lb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut i = 0;
    while la.len() < n {
        let m = BLOCK.min(n - la.len());
        for j in 0..m {
            let t = Instant::now();
            a(i + j).await?;
            la.push(micros(t));
        }
        for j in 0..m {
            let t = Instant::now();
            b(i + j).await?;
            lb.push(micros(t));
        }
        i += m;
    }
    Ok(json!({
        "store": [stats::percentile(&mut la, 50.0), stats::percentile(&mut la, 99.0)],
        "raw": [stats::percentile(&mut lb, 50.0), stats::percentile(&mut lb, 99.0)],
        "ops": n,
    }))
}

fn skipped(store: &str, reason: impl std::fmt::Display) {
    emit(
        &json!({ "part": "store", "store": store, "status": "skipped", "reason": reason.to_string() }),
    );
}

/// `stores [--smoke] [--ops N]`.
pub(crate) fn main(opts: &Opts) -> Result<()> {
    let ops: usize = opts.num("ops", if opts.flag("smoke") { 50 } else { 3000 })?;
    runtime()?.block_on(async {
        memory(&Fixture::new(ops)?).await?;
        #[cfg(feature = "redis")]
        redis::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "redis"))]
        skipped("redis", "scs-bench built without the `redis` feature");
        #[cfg(feature = "postgres")]
        postgres::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "postgres"))]
        skipped("postgres", "scs-bench built without the `postgres` feature");
        #[cfg(feature = "sqlite")]
        sqlite::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "sqlite"))]
        skipped("sqlite", "scs-bench built without the `sqlite` feature");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Memory: no driver; the raw side is a plain map behind one lock.

async fn memory(fx: &Fixture) -> Result<()> {
    let store = scs_memstore::MemoryStore::builder()
        .cleanup_interval(None)
        .build()?;
    fx.fill(&store).await?;
    let raw: std::sync::RwLock<HashMap<String, Vec<u8>>> = std::sync::RwLock::new(
        fx.keys
            .iter()
            .map(|k| (k.clone(), fx.data.clone()))
            .collect(),
    );
    let (store, raw) = (&store, &raw);
    let find = compare(
        fx.ops,
        |i| async move {
            std::hint::black_box(store.find(fx.key(i)).await?);
            Ok(())
        },
        |i| async move {
            let map = raw.read().map_err(|_| "poisoned")?;
            std::hint::black_box(map.get(fx.key(i)).cloned());
            Ok(())
        },
    )
    .await?;
    let commit = compare(
        fx.ops,
        |i| async move { Ok(store.commit(fx.key(i), &fx.data, fx.expiry).await?) },
        |i| async move {
            let mut map = raw.write().map_err(|_| "poisoned")?;
            map.insert(fx.key(i).to_owned(), fx.data.clone());
            Ok(())
        },
    )
    .await?;
    emit(&json!({
        "part": "store",
        "store": "memory",
        "status": "ok",
        "raw": "std RwLock<HashMap> get / insert (no expiry, no shards)",
        "find": find,
        "commit": commit,
        "rt": null,
        "note": "in-process: no round trips",
    }));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Round-trip counting proxy

/// A TCP relay on 127.0.0.1 that counts round trips: each time the client sends after the
/// server last spoke (or first) is one.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
struct Proxy {
    port: u16,
    trips: Arc<AtomicU64>,
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
impl Proxy {
    async fn start(upstream: String) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let trips = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&trips);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counter) = (upstream.clone(), Arc::clone(&counter));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Self { port, trips })
    }

    /// Round trips per call of `f`, over `n` calls after a few unmeasured ones.
    async fn per_call<F, Fut>(&self, n: usize, mut f: F) -> Result<f64>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        for i in 0..5 {
            f(i).await?;
        }
        let before = self.trips.load(Ordering::SeqCst);
        for i in 0..n {
            f(i).await?;
        }
        Ok((self.trips.load(Ordering::SeqCst) - before) as f64 / n as f64)
    }
}

async fn relay(client: TcpStream, server: TcpStream, trips: Arc<AtomicU64>) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    // True while the client spoke last.
    let client_spoke = Arc::new(AtomicBool::new(false));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, Arc::clone(&client_spoke), Some(trips));
    let down = pump(sr, cw, client_spoke, None);
    tokio::join!(up, down);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    client_spoke: Arc<AtomicBool>,
    trips: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match &trips {
            // Client to server: a new round trip unless the client is still speaking.
            Some(trips) => {
                if !client_spoke.swap(true, Ordering::SeqCst) {
                    trips.fetch_add(1, Ordering::SeqCst);
                }
            }
            // Server to client, noted before the client can see it and answer.
            None => client_spoke.store(false, Ordering::SeqCst),
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `url` with its `host:port` replaced, and the `host:port` it had (`default_port` when it
/// named none).
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
fn redirect(url: &str, default_port: u16, new_host_port: &str) -> Option<(String, String)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let host_port = &url[host_start..end];
    let upstream = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    let redirected = format!("{}{new_host_port}{}", &url[..host_start], &url[end..]);
    Some((redirected, upstream))
}

// ---------------------------------------------------------------------------------------
// Redis

#[cfg(feature = "redis")]
mod redis {
    use scs_redisstore::RedisStore;
    use scs_redisstore::redis::{self, aio::MultiplexedConnection};

    use super::*;

    const PREFIX: &str = "scs-bench:";

    async fn connect(url: &str) -> Result<(RedisStore, MultiplexedConnection)> {
        let store = tokio::time::timeout(CONNECT, RedisStore::from_url(url))
            .await
            .map_err(|_| "timed out")??
            .with_prefix(PREFIX)?;
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok((store, conn))
    }

    async fn raw_get(conn: &MultiplexedConnection, key: &str) -> Result<()> {
        let mut c = conn.clone();
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{PREFIX}{key}"))
            .query_async(&mut c)
            .await?;
        std::hint::black_box(v);
        Ok(())
    }

    async fn raw_set(conn: &MultiplexedConnection, key: &str, fx: &Fixture) -> Result<()> {
        let mut c = conn.clone();
        let at = (fx.expiry.unix_timestamp_nanos() / 1_000_000) as i64;
        redis::cmd("SET")
            .arg(format!("{PREFIX}{key}"))
            .arg(&fx.data)
            .arg("PXAT")
            .arg(at)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let url = std::env::var("SCS_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
        let (store, conn) = match connect(&url).await {
            Ok(c) => c,
            Err(e) => {
                skipped("redis", format!("server down at {url}: {e}"));
                return Ok(());
            }
        };
        fx.fill(&store).await?;
        let (s, c) = (&store, &conn);
        let find = compare(
            fx.ops,
            |i| async move {
                std::hint::black_box(s.find(fx.key(i)).await?);
                Ok(())
            },
            |i| raw_get(c, fx.key(i)),
        )
        .await?;
        let commit = compare(
            fx.ops,
            |i| async move { Ok(s.commit(fx.key(i), &fx.data, fx.expiry).await?) },
            |i| raw_set(c, fx.key(i), fx),
        )
        .await?;

        let (proxied, upstream) = redirect(&url, 6379, "127.0.0.1:0").ok_or("bad Redis URL")?;
        let proxy = Proxy::start(upstream).await?;
        let proxied = proxied.replace("127.0.0.1:0", &format!("127.0.0.1:{}", proxy.port));
        let (ps, pc) = connect(&proxied).await?;
        let (ps, pc) = (&ps, &pc);
        let n = fx.ops.min(500);
        let rt = json!({
            "find": [
                proxy.per_call(n, |i| async move { ps.find(fx.key(i)).await.map(drop).map_err(Into::into) }).await?,
                proxy.per_call(n, |i| raw_get(pc, fx.key(i))).await?,
            ],
            "commit": [
                proxy.per_call(n, |i| async move { Ok(ps.commit(fx.key(i), &fx.data, fx.expiry).await?) }).await?,
                proxy.per_call(n, |i| raw_set(pc, fx.key(i), fx)).await?,
            ],
        });
        store.clear().await?;
        emit(&json!({
            "part": "store",
            "store": "redis",
            "status": "ok",
            "raw": "redis-rs MultiplexedConnection: GET / SET .. PXAT",
            "find": find,
            "commit": commit,
            "rt": rt,
            "note": "store: RedisStore::from_url (deadpool-redis pool)",
        }));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
mod postgres {
    use scs_pgstore::PostgresStore;
    use scs_pgstore::sqlx::postgres::{PgConnection, PgPoolOptions};
    use scs_pgstore::sqlx::{self, Connection as _};
    use tokio::sync::Mutex;

    use super::*;

    const TABLE: &str = "scs_bench_sessions";
    const FIND: &str = "SELECT data FROM \"scs_bench_sessions\" WHERE token = $1 AND expiry > $2";
    const COMMIT: &str = "INSERT INTO \"scs_bench_sessions\" (token, data, expiry) VALUES ($1, $2, $3) \
         ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry";

    /// The store over a default sqlx pool (as `PostgresStore::from_url` builds it), or with
    /// `test_before_acquire` off.
    async fn open(url: &str, ping: bool) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .test_before_acquire(ping)
            .connect(url)
            .await?;
        let store = PostgresStore::builder(pool)
            .table_name(TABLE)
            .cleanup_interval(None)
            .build()?;
        store.migrate().await?;
        Ok(store)
    }

    async fn raw_find(conn: &Mutex<PgConnection>, key: &str) -> Result<()> {
        let mut c = conn.lock().await;
        let v: Option<Vec<u8>> = sqlx::query_scalar(FIND)
            .bind(key)
            .bind(OffsetDateTime::now_utc())
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
            .bind(fx.expiry)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    async fn measure(
        fx: &Fixture,
        url: &str,
        proxied: &str,
        proxy: &Proxy,
        ping: bool,
    ) -> Result<Json> {
        let store = open(url, ping).await?;
        fx.fill(&store).await?;
        let conn = Mutex::new(PgConnection::connect(url).await?);
        let (s, c) = (&store, &conn);
        let find = compare(
            fx.ops,
            |i| async move {
                std::hint::black_box(s.find(fx.key(i)).await?);
                Ok(())
            },
            |i| raw_find(c, fx.key(i)),
        )
        .await?;
        let commit = compare(
            fx.ops,
            |i| async move { Ok(s.commit(fx.key(i), &fx.data, fx.expiry).await?) },
            |i| raw_commit(c, fx.key(i), fx),
        )
        .await?;
        let ps = &open(proxied, ping).await?;
        let pc = &Mutex::new(PgConnection::connect(proxied).await?);
        let n = fx.ops.min(500);
        let rt = json!({
            "find": [
                proxy.per_call(n, |i| async move { ps.find(fx.key(i)).await.map(drop).map_err(Into::into) }).await?,
                proxy.per_call(n, |i| raw_find(pc, fx.key(i))).await?,
            ],
            "commit": [
                proxy.per_call(n, |i| async move { Ok(ps.commit(fx.key(i), &fx.data, fx.expiry).await?) }).await?,
                proxy.per_call(n, |i| raw_commit(pc, fx.key(i), fx)).await?,
            ],
        });
        Ok(json!({ "find": find, "commit": commit, "rt": rt }))
    }

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let url = std::env::var("SCS_POSTGRES_URL")
            .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
        match tokio::time::timeout(CONNECT, PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => drop(conn.close().await),
            Ok(Err(e)) => {
                skipped("postgres", format!("server down at {url}: {e}"));
                return Ok(());
            }
            Err(_) => {
                skipped("postgres", format!("server down at {url}: timed out"));
                return Ok(());
            }
        }
        let (proxied, upstream) =
            redirect(&url, 5432, "127.0.0.1:0").ok_or("bad PostgreSQL URL")?;
        let proxy = Proxy::start(upstream).await?;
        let proxied = proxied.replace("127.0.0.1:0", &format!("127.0.0.1:{}", proxy.port));
        let raw = "sqlx PgConnection: the store's SELECT / INSERT .. ON CONFLICT";
        let mut row = measure(fx, &url, &proxied, &proxy, true).await?;
        row["part"] = "store".into();
        row["store"] = "postgres".into();
        row["status"] = "ok".into();
        row["raw"] = raw.into();
        row["note"] = "store: sqlx PgPool with default options (test_before_acquire on)".into();
        emit(&row);
        let mut row = measure(fx, &url, &proxied, &proxy, false).await?;
        row["part"] = "store".into();
        row["store"] = "postgres, pool test_before_acquire(false)".into();
        row["status"] = "ok".into();
        row["raw"] = raw.into();
        row["note"] = "the same store over a pool that does not ping on checkout".into();
        emit(&row);
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::query("DROP TABLE IF EXISTS \"scs_bench_sessions\"")
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// SQLite

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::sync::Mutex;

    use scs_sqlitestore::SqliteStore;
    use scs_sqlitestore::rusqlite::{self, OptionalExtension as _, params};

    use super::*;

    fn now_ms() -> i64 {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }

    const FIND: &str = "SELECT data FROM \"sessions\" WHERE token = ? AND expiry > ?";
    const COMMIT: &str = "INSERT INTO \"sessions\" (token, data, expiry) VALUES (?, ?, ?) \
         ON CONFLICT (token) DO UPDATE SET data = excluded.data, expiry = excluded.expiry";

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let dir = std::env::temp_dir().join(format!("scs-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("sessions.db");
        let result = measure(fx, &path).await;
        let _ = std::fs::remove_dir_all(&dir);
        emit(&result?);
        Ok(())
    }

    async fn measure(fx: &Fixture, path: &std::path::Path) -> Result<Json> {
        let store = SqliteStore::file_builder(path)
            .cleanup_interval(None)
            .build()?;
        store.migrate().await?;
        fx.fill(&store).await?;
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // As the store sets its connections (WAL is a property of the file already).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The same hop the store makes: a blocking-pool thread per statement.
        let conn = Arc::new(Mutex::new(conn));
        let raw_find = |key: String| {
            let conn = Arc::clone(&conn);
            async move {
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let c = conn.lock().map_err(|_| "poisoned")?;
                    let v: Option<Vec<u8>> = c
                        .prepare_cached(FIND)?
                        .query_row(params![key, now_ms()], |r| r.get(0))
                        .optional()?;
                    std::hint::black_box(v);
                    Ok(())
                })
                .await?
            }
        };
        let expiry_ms = (fx.expiry.unix_timestamp_nanos() / 1_000_000) as i64;
        let raw_commit = |key: String| {
            let conn = Arc::clone(&conn);
            let data = fx.data.clone();
            async move {
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let c = conn.lock().map_err(|_| "poisoned")?;
                    c.prepare_cached(COMMIT)?
                        .execute(params![key, data, expiry_ms])?;
                    Ok(())
                })
                .await?
            }
        };
        let s = &store;
        let find = compare(
            fx.ops,
            |i| async move {
                std::hint::black_box(s.find(fx.key(i)).await?);
                Ok(())
            },
            |i| raw_find(fx.key(i).to_owned()),
        )
        .await?;
        let commit = compare(
            fx.ops,
            |i| async move { Ok(s.commit(fx.key(i), &fx.data, fx.expiry).await?) },
            |i| raw_commit(fx.key(i).to_owned()),
        )
        .await?;
        Ok(json!({
            "part": "store",
            "store": "sqlite",
            "status": "ok",
            "raw": "rusqlite on spawn_blocking: the store's SELECT / INSERT .. ON CONFLICT",
            "find": find,
            "commit": commit,
            "rt": null,
            "note": "file in WAL mode; in-process, no round trips (one blocking-pool hop per call)",
        }))
    }
}
