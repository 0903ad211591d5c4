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
#[cfg_attr(not(feature = "net"), allow(dead_code))]
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

/// [`compare`] of the store's `find` and `commit` (of `fx`'s keys and session) against
/// `raw_find` and `raw_commit`, the same operations sent with the raw driver:
/// `(find, commit)`.
async fn against<S, RF, RFF, RC, RCF>(
    fx: &Fixture,
    store: &S,
    raw_find: RF,
    raw_commit: RC,
) -> Result<(Json, Json)>
where
    S: Store,
    RF: FnMut(usize) -> RFF,
    RFF: Future<Output = Result<()>>,
    RC: FnMut(usize) -> RCF,
    RCF: Future<Output = Result<()>>,
{
    let find = compare(
        fx.ops,
        |i| async move {
            std::hint::black_box(store.find(fx.key(i)).await?);
            Ok(())
        },
        raw_find,
    )
    .await?;
    let commit = compare(
        fx.ops,
        |i| async move { Ok(store.commit(fx.key(i), &fx.data, fx.expiry).await?) },
        raw_commit,
    )
    .await?;
    Ok((find, commit))
}

/// Runs `f` on Tokio's blocking pool, as the embedded stores run their engine calls.
#[cfg_attr(
    not(any(
        feature = "sled",
        feature = "redb",
        feature = "fjall",
        feature = "leveldb"
    )),
    allow(dead_code)
)]
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// The session bytes of a stored entry (`scs_core::entry`'s layout) while it is live, as
/// an embedded store's `find` answers them.
#[cfg_attr(
    not(any(
        feature = "sled",
        feature = "redb",
        feature = "fjall",
        feature = "leveldb"
    )),
    allow(dead_code)
)]
fn live(value: &[u8], backend: &'static str) -> Result<Option<Vec<u8>>> {
    let (header, data) = scs_core::entry::decode(value, backend)?;
    Ok(header
        .is_live(scs_core::entry::now_ms())
        .then(|| data.to_vec()))
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
        #[cfg(feature = "tokio-postgres")]
        tokio_postgres::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "tokio-postgres"))]
        skipped(
            "tokio-postgres",
            "scs-bench built without the `tokio-postgres` feature",
        );
        #[cfg(feature = "mysql")]
        mysql::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "mysql"))]
        skipped("mysql", "scs-bench built without the `mysql` feature");
        #[cfg(feature = "sqlite")]
        sqlite::run(&Fixture::new(ops)?).await?;
        #[cfg(not(feature = "sqlite"))]
        skipped("sqlite", "scs-bench built without the `sqlite` feature");
        // The stores whose parts live in `stores/<crate>.rs`.
        macro_rules! part {
            ($feature:literal, $module:ident) => {
                #[cfg(feature = $feature)]
                $module::run(&Fixture::new(ops)?).await?;
                #[cfg(not(feature = $feature))]
                skipped(
                    $feature,
                    concat!("scs-bench built without the `", $feature, "` feature"),
                );
            };
        }
        part!("fred", fredstore);
        part!("memcached", memcachedstore);
        part!("etcd", etcdstore);
        part!("nats", natsstore);
        part!("mongo", mongostore);
        part!("diesel", dieselstore);
        part!("seaorm", seaormstore);
        part!("sled", sledstore);
        part!("redb", redbstore);
        part!("fjall", fjallstore);
        part!("leveldb", leveldbstore);
        part!("sqlx-sqlite", sqlxsqlitestore);
        Ok(())
    })
}

#[cfg(feature = "diesel")]
mod dieselstore;
#[cfg(feature = "etcd")]
mod etcdstore;
#[cfg(feature = "fjall")]
mod fjallstore;
#[cfg(feature = "fred")]
mod fredstore;
#[cfg(feature = "leveldb")]
mod leveldbstore;
#[cfg(feature = "memcached")]
mod memcachedstore;
#[cfg(feature = "mongo")]
mod mongostore;
#[cfg(feature = "nats")]
mod natsstore;
#[cfg(feature = "redb")]
mod redbstore;
#[cfg(feature = "seaorm")]
mod seaormstore;
#[cfg(feature = "sled")]
mod sledstore;
#[cfg(feature = "sqlx-sqlite")]
mod sqlxsqlitestore;

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
    let (find, commit) = against(
        fx,
        store,
        |i| async move {
            let map = raw.read().map_err(|_| "poisoned")?;
            std::hint::black_box(map.get(fx.key(i)).cloned());
            Ok(())
        },
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
#[cfg_attr(not(feature = "net"), allow(dead_code))]
struct Proxy {
    port: u16,
    trips: Arc<AtomicU64>,
}

#[cfg_attr(not(feature = "net"), allow(dead_code))]
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

    /// Round trips per `find` and per `commit` through this proxy, of `store` and of the
    /// raw driver's `raw_find` and `raw_commit` (each also pointed at it):
    /// `{find: [store, raw], commit: [store, raw]}`, over 500 calls at most.
    async fn trips<S, RF, RFF, RC, RCF>(
        &self,
        fx: &Fixture,
        store: &S,
        raw_find: RF,
        raw_commit: RC,
    ) -> Result<Json>
    where
        S: Store,
        RF: FnMut(usize) -> RFF,
        RFF: Future<Output = Result<()>>,
        RC: FnMut(usize) -> RCF,
        RCF: Future<Output = Result<()>>,
    {
        let n = fx.ops.min(500);
        Ok(json!({
            "find": [
                self.per_call(n, |i| async move {
                    std::hint::black_box(store.find(fx.key(i)).await?);
                    Ok(())
                })
                .await?,
                self.per_call(n, raw_find).await?,
            ],
            "commit": [
                self.per_call(n, |i| async move {
                    Ok(store.commit(fx.key(i), &fx.data, fx.expiry).await?)
                })
                .await?,
                self.per_call(n, raw_commit).await?,
            ],
        }))
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
#[cfg_attr(not(feature = "net"), allow(dead_code))]
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

/// `url` with `params` added to its query string.
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "tokio-postgres",
        feature = "diesel",
        feature = "seaorm"
    )),
    allow(dead_code)
)]
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// A PostgreSQL `url` whose connections use `schema` (`search_path`), where the store's
/// default `sessions` table then lives: `from_url` builds the store with that table name.
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "tokio-postgres",
        feature = "diesel",
        feature = "seaorm"
    )),
    allow(dead_code)
)]
fn in_schema(url: &str, schema: &str) -> String {
    with_params(url, &format!("options=-c%20search_path%3D{schema}"))
}

/// A proxy in front of the server of `url`, and `url` pointed at it.
#[cfg_attr(not(feature = "net"), allow(dead_code))]
async fn proxied(url: &str, default_port: u16) -> Result<(Proxy, String)> {
    let (redirected, upstream) =
        redirect(url, default_port, "127.0.0.1:0").ok_or("bad server URL")?;
    let proxy = Proxy::start(upstream).await?;
    let redirected = redirected.replace("127.0.0.1:0", &format!("127.0.0.1:{}", proxy.port));
    Ok((proxy, redirected))
}

/// Latency next to the raw driver, then round trips of each through a proxy: `store` and
/// `raw` are the direct pair, `pstore` and `praw` the pair through `proxy`.
#[cfg_attr(not(feature = "pair"), allow(dead_code))]
async fn measure_pair<'a, S, R, FR, FRF, CR, CRF, W>(
    fx: &'a Fixture,
    direct: (&'a S, &'a R),
    through: (&'a S, &'a R, &'a Proxy),
    (raw_find, raw_commit): (FR, CR),
    workers: W,
) -> Result<Json>
where
    S: Store,
    FR: Fn(&'a R, &'a str) -> FRF,
    FRF: Future<Output = Result<()>>,
    CR: Fn(&'a R, &'a str) -> CRF,
    CRF: Future<Output = Result<()>>,
    W: Future<Output = Result<Vec<u32>>>,
{
    let (s, c) = direct;
    let (rf, rc) = (&raw_find, &raw_commit);
    // Both sides' connections opened (a pool opens what it needs under this load), then
    // their server workers pinned next to this process.
    for i in 0..50 {
        s.find(fx.key(i)).await?;
        s.commit(fx.key(i), &fx.data, fx.expiry).await?;
        rf(c, fx.key(i)).await?;
        rc(c, fx.key(i)).await?;
    }
    let mut pinning = Pinning::new();
    pinning.pin(&workers.await?);
    let (find, commit) = against(fx, s, |i| rf(c, fx.key(i)), |i| rc(c, fx.key(i))).await?;
    let pinned = pinning.note();
    drop(pinning);
    let (ps, pc, proxy) = through;
    let rt = proxy
        .trips(fx, ps, |i| rf(pc, fx.key(i)), |i| rc(pc, fx.key(i)))
        .await?;
    Ok(json!({ "find": find, "commit": commit, "rt": rt, "pinned": pinned }))
}

/// The store next to the same statements run through the driver's own pool, with the
/// server workers pinned as in [`measure_pair`]: `{find, commit}` as [`compare`] gives them.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn against_pool<'a, S, PF, PFF, PC, PCF, W>(
    fx: &'a Fixture,
    store: &'a S,
    (pool_find, pool_commit): (PF, PC),
    workers: W,
) -> Result<Json>
where
    S: Store,
    PF: Fn(&'a str) -> PFF,
    PFF: Future<Output = Result<()>>,
    PC: Fn(&'a str) -> PCF,
    PCF: Future<Output = Result<()>>,
    W: Future<Output = Result<Vec<u32>>>,
{
    for i in 0..50 {
        pool_find(fx.key(i)).await?;
        pool_commit(fx.key(i)).await?;
    }
    let mut pinning = Pinning::new();
    pinning.pin(&workers.await?);
    let (find, commit) = against(
        fx,
        store,
        |i| pool_find(fx.key(i)),
        |i| pool_commit(fx.key(i)),
    )
    .await?;
    Ok(json!({ "find": find, "commit": commit }))
}

/// Fills in the fields every store row has.
#[cfg_attr(not(feature = "pair"), allow(dead_code))]
fn store_row(mut row: Json, store: &str, raw: &str, note: &str) -> Json {
    row["part"] = "store".into();
    row["store"] = store.into();
    row["status"] = "ok".into();
    row["raw"] = raw.into();
    let pinned = row["pinned"].as_str().unwrap_or_default().to_owned();
    row["note"] = format!("{note}; {pinned}").into();
    row
}

/// Why a server is listed as down, or `None` when `connect` answered in time.
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "tokio-postgres",
        feature = "mysql",
        feature = "diesel",
        feature = "seaorm",
        feature = "etcd",
        feature = "nats"
    )),
    allow(dead_code)
)]
async fn down<T, E: std::fmt::Display>(
    url: &str,
    connect: impl Future<Output = std::result::Result<T, E>>,
) -> Option<String> {
    match tokio::time::timeout(CONNECT, connect).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("server down at {url}: {e}")),
        Err(_) => Some(format!("server down at {url}: timed out")),
    }
}

/// The server-side workers behind this run's connections (PostgreSQL backend processes,
/// MariaDB connection threads, memcached's threads), moved for the measurement onto the one
/// core this process is pinned to, and put back as they were on drop. (A PostgreSQL backend
/// serves only the bench's own connection and ends with it; a MariaDB thread goes back to
/// the server's thread cache, and memcached's threads serve on, on the cores they had
/// unless the run was killed before the drop.)
///
/// Left to the kernel, a worker on this process's core answers a statement in about 20 µs
/// and one on the other core in about 100 µs (the wake-up of an idle virtual CPU), and
/// which one a connection gets changes from run to run: the same statement on two
/// connections to the same PostgreSQL measured 25 µs on one and 100 µs on the other, with
/// the raw driver on both, while pinned both gave 21 µs. Pinned, store and raw driver are
/// timed under the same conditions.
#[cfg_attr(not(feature = "pair"), allow(dead_code))]
struct Pinning {
    /// This process's core, when it is pinned to exactly one (`cargo xtask bench` runs the
    /// part under `taskset`).
    core: Option<String>,
    /// Each worker moved, with the CPU list it had.
    moved: Vec<(u32, String)>,
}

#[cfg_attr(not(feature = "pair"), allow(dead_code))]
impl Pinning {
    fn new() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let core = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .filter(|list| list.parse::<u32>().is_ok())
            .map(str::to_owned);
        Self {
            core,
            moved: Vec::new(),
        }
    }

    /// Moves each of `workers` (process or thread ids) not moved yet onto this process's
    /// core; a worker that cannot be moved (gone, or not ours to move) is left alone.
    fn pin(&mut self, workers: &[u32]) {
        let Some(core) = &self.core else { return };
        for &id in workers {
            if self.moved.iter().any(|(m, _)| *m == id) {
                continue;
            }
            let Some(before) = affinity(id) else { continue };
            if taskset(&["-cp", core, &id.to_string()]) {
                self.moved.push((id, before));
            }
        }
    }

    /// What the report says about it.
    fn note(&self) -> String {
        match &self.core {
            Some(core) if !self.moved.is_empty() => format!(
                "{} server worker(s) pinned to core {core} with the client while timed",
                self.moved.len()
            ),
            Some(_) => "server workers not pinned (none found, or taskset refused)".into(),
            None => "server workers not pinned (this process is not pinned to one core)".into(),
        }
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        for (id, before) in self.moved.drain(..) {
            taskset(&["-cp", &before, &id.to_string()]);
        }
    }
}

/// The CPU list of process or thread `id`, as `taskset -cp` prints it.
#[cfg_attr(not(feature = "pair"), allow(dead_code))]
fn affinity(id: u32) -> Option<String> {
    let out = std::process::Command::new("taskset")
        .args(["-cp", &id.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.rsplit_once(':')?.1.trim().to_owned()).filter(|l| !l.is_empty())
}

/// Runs `taskset` quietly; true when it succeeded.
#[cfg_attr(not(feature = "pair"), allow(dead_code))]
fn taskset(args: &[&str]) -> bool {
    std::process::Command::new("taskset")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
        // Not pinned: both sides talk to the one server process, so wherever the kernel
        // runs it, it runs there for both (and a server-wide pin would outlive a run
        // stopped with Ctrl-C).
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

        let (proxy, proxied) = proxied(&url, 6379).await?;
        let (ps, pc) = connect(&proxied).await?;
        let (ps, pc) = (&ps, &pc);
        let rt = proxy
            .trips(
                fx,
                ps,
                |i| raw_get(pc, fx.key(i)),
                |i| raw_set(pc, fx.key(i), fx),
            )
            .await?;
        store.clear().await?;
        emit(&json!({
            "part": "store",
            "store": "redis",
            "status": "ok",
            "raw": "redis-rs MultiplexedConnection: GET / SET .. PXAT",
            "find": find,
            "commit": commit,
            "rt": rt,
            "note": "store: RedisStore::from_url (its own pool: no PING on checkout); one \
                server process for both sides, not pinned",
        }));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL, sqlx

/// The backend processes of the current database's client connections: the bench's own
/// (anything else connected to it meanwhile is moved and put back too).
#[cfg(any(
    feature = "postgres",
    feature = "tokio-postgres",
    feature = "diesel",
    feature = "seaorm"
))]
const PG_BACKENDS: &str = "SELECT pid FROM pg_stat_activity \
    WHERE datname = current_database() AND backend_type = 'client backend'";

/// Notes on the sqlx rows: what `from_url` sets, and why the wire shows two exchanges.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const SQLX_NOTE: &str = "store: from_url (sqlx pool, test_before_acquire(false): no ping \
    before a statement, so 1 round trip on the request path); sqlx's hard-coded ping when a \
    connection returns to the pool stays, on its own task after the caller has its answer, \
    so the proxy counts 2 exchanges per call";

#[cfg(feature = "postgres")]
mod postgres {
    use scs_pgstore::PostgresStore;
    use scs_pgstore::sqlx::postgres::PgConnection;
    use scs_pgstore::sqlx::{self, Connection as _};
    use tokio::sync::Mutex;

    use super::*;

    /// The store's table (`from_url` uses the default name) lives in this schema.
    const SCHEMA: &str = "scs_bench_sqlx";
    const FIND: &str = "SELECT data FROM \"sessions\" WHERE token = $1 AND expiry > $2";
    const COMMIT: &str = "INSERT INTO \"sessions\" (token, data, expiry, version) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO UPDATE SET \
         data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version";

    /// The store as `PostgresStore::from_url` builds it.
    async fn open(url: &str) -> Result<PostgresStore> {
        let store = PostgresStore::from_url(url).await?;
        store.stop_cleanup();
        store.migrate().await?;
        Ok(store)
    }

    async fn find_on<'c>(on: impl sqlx::PgExecutor<'c>, key: &str) -> Result<()> {
        let v: Option<Vec<u8>> = sqlx::query_scalar(FIND)
            .bind(key)
            .bind(OffsetDateTime::now_utc())
            .fetch_optional(on)
            .await?;
        std::hint::black_box(v);
        Ok(())
    }

    async fn commit_on<'c>(on: impl sqlx::PgExecutor<'c>, key: &str, fx: &Fixture) -> Result<()> {
        sqlx::query(COMMIT)
            .bind(key)
            .bind(&fx.data)
            .bind(fx.expiry)
            .bind(scs_core::new_version().cast_signed())
            .execute(on)
            .await?;
        Ok(())
    }

    async fn raw_find(conn: &Mutex<PgConnection>, key: &str) -> Result<()> {
        find_on(&mut *conn.lock().await, key).await
    }

    async fn raw_commit(conn: &Mutex<PgConnection>, key: &str, fx: &Fixture) -> Result<()> {
        commit_on(&mut *conn.lock().await, key, fx).await
    }

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let url = std::env::var("SCS_POSTGRES_URL")
            .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
        if let Some(reason) = down(&url, PgConnection::connect(&url)).await {
            skipped("postgres", reason);
            return Ok(());
        }
        let mut admin = PgConnection::connect(&url).await?;
        let schema = format!("CREATE SCHEMA IF NOT EXISTS \"{SCHEMA}\"");
        sqlx::query(sqlx::AssertSqlSafe(schema))
            .execute(&mut admin)
            .await?;
        let result = measure(fx, &url).await;
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(drop_schema))
            .execute(&mut admin)
            .await?;
        let row = result?;
        emit(&store_row(
            row,
            "postgres",
            "sqlx PgConnection: the store's SELECT / INSERT .. ON CONFLICT",
            SQLX_NOTE,
        ));
        Ok(())
    }

    async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
        let url = in_schema(url, SCHEMA);
        let store = open(&url).await?;
        fx.fill(&store).await?;
        let conn = Mutex::new(PgConnection::connect(&url).await?);
        let (proxy, proxied) = proxied(&url, 5432).await?;
        let ps = open(&proxied).await?;
        let pc = Mutex::new(PgConnection::connect(&proxied).await?);
        let mut row = measure_pair(
            fx,
            (&store, &conn),
            (&ps, &pc, &proxy),
            (raw_find, |c, key| raw_commit(c, key, fx)),
            backends(&conn),
        )
        .await?;
        // The same statements through sqlx's own pool, set up as `from_url` sets the
        // store's: the part of the store's time that is the pool's.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .connect(&url)
            .await?;
        let pool = &pool;
        row["pool"] = against_pool(
            fx,
            &store,
            (|key| find_on(pool, key), |key| commit_on(pool, key, fx)),
            backends(&conn),
        )
        .await?;
        Ok(row)
    }

    /// The backend processes serving this database's connections.
    async fn backends(conn: &Mutex<PgConnection>) -> Result<Vec<u32>> {
        let mut c = conn.lock().await;
        let pids: Vec<i32> = sqlx::query_scalar(PG_BACKENDS).fetch_all(&mut *c).await?;
        Ok(pids
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL, tokio-postgres

#[cfg(feature = "tokio-postgres")]
mod tokio_postgres {
    use scs_tokiopgstore::TokioPostgresStore;
    use scs_tokiopgstore::tokio_postgres::{self as driver, Client, NoTls, Statement};

    use super::*;

    /// The store's table (`from_url` uses the default name) lives in this schema.
    const SCHEMA: &str = "scs_bench_tokio";
    const FIND: &str = "SELECT data FROM \"sessions\" WHERE token = $1 AND expiry > $2";
    const COMMIT: &str = "INSERT INTO \"sessions\" (token, data, expiry, version) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO UPDATE SET \
         data = EXCLUDED.data, expiry = EXCLUDED.expiry, version = EXCLUDED.version";

    /// A raw client with both statements prepared once, as the store caches them.
    struct Raw {
        client: Client,
        find: Statement,
        commit: Statement,
    }

    async fn client(url: &str) -> std::result::Result<Client, driver::Error> {
        let (client, connection) = driver::connect(url, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn raw(url: &str) -> Result<Raw> {
        let client = client(url).await?;
        let find = client.prepare(FIND).await?;
        let commit = client.prepare(COMMIT).await?;
        Ok(Raw {
            client,
            find,
            commit,
        })
    }

    /// The store as `TokioPostgresStore::from_url` builds it.
    async fn open(url: &str) -> Result<TokioPostgresStore> {
        let store = TokioPostgresStore::from_url(url).await?;
        store.stop_cleanup();
        store.migrate().await?;
        Ok(store)
    }

    async fn raw_find(raw: &Raw, key: &str) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let row = raw.client.query_opt(&raw.find, &[&key, &now]).await?;
        std::hint::black_box(row.map(|r| r.get::<_, Vec<u8>>(0)));
        Ok(())
    }

    async fn raw_commit(raw: &Raw, key: &str, fx: &Fixture) -> Result<()> {
        let version = scs_core::new_version().cast_signed();
        raw.client
            .execute(&raw.commit, &[&key, &fx.data, &fx.expiry, &version])
            .await?;
        Ok(())
    }

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let url = std::env::var("SCS_POSTGRES_URL")
            .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
        if let Some(reason) = down(&url, client(&url)).await {
            skipped("tokio-postgres", reason);
            return Ok(());
        }
        let admin = client(&url).await?;
        admin
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{SCHEMA}\""))
            .await?;
        let result = measure(fx, &url).await;
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE"))
            .await?;
        let row = result?;
        emit(&store_row(
            row,
            "tokio-postgres",
            "tokio-postgres Client, statements prepared once: the store's SELECT / INSERT .. \
             ON CONFLICT",
            "store: from_url (deadpool-postgres pool, RecyclingMethod::Fast: no query on \
             checkout)",
        ));
        Ok(())
    }

    async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
        let url = in_schema(url, SCHEMA);
        let store = open(&url).await?;
        fx.fill(&store).await?;
        let conn = raw(&url).await?;
        let (proxy, proxied) = proxied(&url, 5432).await?;
        let ps = open(&proxied).await?;
        let pc = raw(&proxied).await?;
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
    async fn backends(raw: &Raw) -> Result<Vec<u32>> {
        let rows = raw.client.query(PG_BACKENDS, &[]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// MySQL / MariaDB, sqlx

#[cfg(feature = "mysql")]
mod mysql {
    use scs_mysqlstore::MySqlStore;
    use scs_mysqlstore::sqlx::mysql::MySqlConnection;
    use scs_mysqlstore::sqlx::{self, Connection as _};
    use tokio::sync::Mutex;

    use super::*;

    /// The store's table (`from_url` uses the default name) lives in this database.
    const DATABASE: &str = "scs_bench";
    const FIND: &str = "SELECT data FROM `sessions` WHERE token = ? AND expiry > ?";
    const COMMIT: &str = "INSERT INTO `sessions` (token, data, expiry, version) \
         VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
         data = VALUES(data), expiry = VALUES(expiry), version = VALUES(version)";

    /// `url` with its database replaced by `db`.
    fn with_database(url: &str, db: &str) -> String {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = base[authority..]
            .find('/')
            .map_or(base, |i| &base[..authority + i]);
        match query {
            Some(q) => format!("{base}/{db}?{q}"),
            None => format!("{base}/{db}"),
        }
    }

    /// UTC wall-clock time, as the store writes the DATETIME column.
    fn utc(t: OffsetDateTime) -> scs_core::time::PrimitiveDateTime {
        let t = t.to_offset(scs_core::time::UtcOffset::UTC);
        scs_core::time::PrimitiveDateTime::new(t.date(), t.time())
    }

    /// The store as `MySqlStore::from_url` builds it.
    async fn open(url: &str) -> Result<MySqlStore> {
        let store = MySqlStore::from_url(url).await?;
        store.stop_cleanup();
        store.migrate().await?;
        Ok(store)
    }

    async fn find_on<'c>(on: impl sqlx::MySqlExecutor<'c>, key: &str) -> Result<()> {
        let v: Option<Vec<u8>> = sqlx::query_scalar(FIND)
            .bind(key)
            .bind(utc(OffsetDateTime::now_utc()))
            .fetch_optional(on)
            .await?;
        std::hint::black_box(v);
        Ok(())
    }

    async fn commit_on<'c>(
        on: impl sqlx::MySqlExecutor<'c>,
        key: &str,
        fx: &Fixture,
    ) -> Result<()> {
        sqlx::query(COMMIT)
            .bind(key)
            .bind(&fx.data)
            .bind(utc(fx.expiry))
            .bind(scs_core::new_version().cast_signed())
            .execute(on)
            .await?;
        Ok(())
    }

    async fn raw_find(conn: &Mutex<MySqlConnection>, key: &str) -> Result<()> {
        find_on(&mut *conn.lock().await, key).await
    }

    async fn raw_commit(conn: &Mutex<MySqlConnection>, key: &str, fx: &Fixture) -> Result<()> {
        commit_on(&mut *conn.lock().await, key, fx).await
    }

    pub(super) async fn run(fx: &Fixture) -> Result<()> {
        let url =
            std::env::var("SCS_MYSQL_URL").unwrap_or("mysql://root@127.0.0.1:3306/test".into());
        if let Some(reason) = down(&url, MySqlConnection::connect(&url)).await {
            skipped("mysql", reason);
            return Ok(());
        }
        let mut admin = MySqlConnection::connect(&url).await?;
        let create = format!("CREATE DATABASE IF NOT EXISTS `{DATABASE}`");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await?;
        let result = measure(fx, &with_database(&url, DATABASE)).await;
        let drop_db = format!("DROP DATABASE IF EXISTS `{DATABASE}`");
        sqlx::query(sqlx::AssertSqlSafe(drop_db))
            .execute(&mut admin)
            .await?;
        let row = result?;
        emit(&store_row(
            row,
            "mysql",
            "sqlx MySqlConnection: the store's SELECT / INSERT .. ON DUPLICATE KEY UPDATE",
            SQLX_NOTE,
        ));
        Ok(())
    }

    async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
        let store = open(url).await?;
        fx.fill(&store).await?;
        let conn = Mutex::new(MySqlConnection::connect(url).await?);
        let (proxy, proxied) = proxied(url, 3306).await?;
        let ps = open(&proxied).await?;
        let pc = Mutex::new(MySqlConnection::connect(&proxied).await?);
        let mut row = measure_pair(
            fx,
            (&store, &conn),
            (&ps, &pc, &proxy),
            (raw_find, |c, key| raw_commit(c, key, fx)),
            threads(&conn),
        )
        .await?;
        // The same statements through sqlx's own pool, set up as `from_url` sets the
        // store's: the part of the store's time that is the pool's.
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .test_before_acquire(false)
            .connect(url)
            .await?;
        let pool = &pool;
        row["pool"] = against_pool(
            fx,
            &store,
            (|key| find_on(pool, key), |key| commit_on(pool, key, fx)),
            threads(&conn),
        )
        .await?;
        Ok(row)
    }

    /// The server threads serving this database's connections: MariaDB lists each one's
    /// OS thread id (`TID`); a server without that column gets none pinned.
    async fn threads(conn: &Mutex<MySqlConnection>) -> Result<Vec<u32>> {
        let mut c = conn.lock().await;
        let tids: std::result::Result<Vec<i64>, _> = sqlx::query_scalar(
            "SELECT CAST(TID AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE DB = DATABASE()",
        )
        .fetch_all(&mut *c)
        .await;
        match tids {
            Ok(tids) => Ok(tids
                .into_iter()
                .filter_map(|t| u32::try_from(t).ok())
                .collect()),
            Err(e) => {
                eprintln!("scs-bench: mysql: no server thread ids to pin ({e})");
                Ok(Vec::new())
            }
        }
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
    const COMMIT: &str = "INSERT INTO \"sessions\" (token, data, expiry, version) \
         VALUES (?, ?, ?, ?) ON CONFLICT (token) DO UPDATE SET data = excluded.data, \
         expiry = excluded.expiry, version = excluded.version";

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
                    // A new version per write, as the store gives one.
                    let version = (scs_core::new_version() & i64::MAX as u64) as i64;
                    c.prepare_cached(COMMIT)?
                        .execute(params![key, data, expiry_ms, version])?;
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
