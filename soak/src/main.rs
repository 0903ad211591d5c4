//! The soak test app and its load driver; `cargo xtask soak` runs them.
//!
//! ```text
//! scs-soak prepare --store URL --namespace NS      create the table (PostgreSQL)
//! scs-soak serve   --store URL --namespace NS [--port P] [--max-seconds S]
//! scs-soak drive   --targets URL,URL --requests N --sessions N [--concurrency C] [--seconds S]
//! scs-soak cleanup --store URL --namespace NS      drop the table / delete the keys
//! ```
//!
//! `serve` answers `GET /inc` (adds one to the session's counter `n` and returns it) and
//! `GET /get` (returns `n`, changes nothing), prints `listening on http://ADDR` once ready,
//! and stops when its standard input closes (so it never outlives the xtask that started
//! it) or after `--max-seconds`.
//!
//! `drive` spreads the requests over the sessions, sends each session's requests one after
//! another (never two at once, so no update can be lost to a race) alternating between the
//! targets, with `--concurrency` requests in flight over all sessions; checks every answer
//! (the counter is one more than the last, the token never changes); then reads every
//! session back and compares its counter with the requests it was sent. It prints a report
//! and a `RESULT key=value ...` line, and exits 1 on any error, lost session or wrong count.

use std::collections::VecDeque;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Response, StatusCode};
use scs::{Session, SessionManager};
use scs_pgstore::PostgresStore;
use scs_pgstore::sqlx::postgres::PgPoolOptions;
use scs_pgstore::sqlx::{self, AssertSqlSafe};
use scs_redisstore::RedisStore;
use tokio::sync::Mutex;

const USAGE: &str = "\
usage: scs-soak prepare|serve|cleanup --store URL --namespace NS [--port P] [--max-seconds S]
       scs-soak drive --targets URL,URL --requests N --sessions N [--concurrency C] [--seconds S]
(run it through `cargo xtask soak`)
";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scs-soak: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("scs-soak: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--name value` options after the subcommand.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument `{a}`\n{USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            out.push((name.to_owned(), value.clone()));
        }
        Ok(Self(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str> {
        self.get(name)
            .with_context(|| format!("--{name} is required\n{USAGE}"))
    }

    fn num(&self, name: &str, default: u64) -> Result<u64> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("--{name}: a whole number"))
        })
    }
}

async fn run(args: &[String]) -> Result<bool> {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(false);
    };
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "prepare" => {
            let store = open(opts.need("store")?, opts.need("namespace")?).await?;
            store.prepare().await?;
            Ok(true)
        }
        "cleanup" => {
            let store = open(opts.need("store")?, opts.need("namespace")?).await?;
            store.cleanup().await?;
            Ok(true)
        }
        "serve" => serve(&opts).await.map(|()| true),
        "drive" => drive(&opts).await,
        _ => {
            eprint!("{USAGE}");
            Ok(false)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stores

enum SoakStore {
    Postgres(PostgresStore, sqlx::PgPool, String),
    Redis(RedisStore),
}

/// The store for `url`, in namespace `ns` (a table name for PostgreSQL, a key prefix for
/// Redis). Opened directly with the store crates, not through a URL opener.
async fn open(url: &str, ns: &str) -> Result<SoakStore> {
    if !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || ns.is_empty() {
        bail!("the namespace must be letters, digits and underscores");
    }
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "postgres" | "postgresql" => {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            let store = PostgresStore::builder(pool.clone())
                .table_name(ns)
                .build()?;
            Ok(SoakStore::Postgres(store, pool, ns.to_owned()))
        }
        "redis" | "rediss" | "valkey" => {
            let store = RedisStore::from_url(url).await?;
            Ok(SoakStore::Redis(store.with_prefix(format!("{ns}:"))?))
        }
        other => bail!("no soak store for `{other}://` (postgres:// or redis://)"),
    }
}

impl SoakStore {
    async fn prepare(&self) -> Result<()> {
        if let Self::Postgres(store, ..) = self {
            store.migrate().await?;
        }
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        match self {
            Self::Postgres(store, pool, table) => {
                store.stop_cleanup();
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{table}\"")))
                    .execute(pool)
                    .await
                    .context("dropping the soak table")?;
            }
            Self::Redis(store) => {
                store.clear().await?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The app

async fn serve(opts: &Opts) -> Result<()> {
    let store = open(opts.need("store")?, opts.need("namespace")?).await?;
    let port: u16 = opts
        .num("port", 0)?
        .try_into()
        .context("--port: 0 to 65535")?;
    let max = Duration::from_secs(opts.num("max-seconds", 3600)?);
    let builder = match store {
        SoakStore::Postgres(store, ..) => SessionManager::builder(store),
        SoakStore::Redis(store) => SessionManager::builder(store),
    };
    let manager = builder
        .error_handler(|err| {
            // Kind and message only: never a token or a value.
            eprintln!("scs-soak serve: session error: {err}");
            let mut res = Response::new(Bytes::from(format!("session error: {}", err.kind())));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        })
        .build()?;
    let app = Router::new()
        .route("/inc", get(inc))
        .route("/get", get(read))
        .layer(manager.layer());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .context("binding the port")?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    // Stop when the parent closes our stdin (or dies), or at the time limit.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let mut stdin = std::io::stdin().lock();
        while stdin.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = tx.send(());
    });
    let shutdown = async move {
        tokio::select! {
            _ = rx => {}
            () = tokio::time::sleep(max) => eprintln!("scs-soak serve: --max-seconds reached"),
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving")?;
    Ok(())
}

async fn inc(session: Session) -> Result<String, StatusCode> {
    let n = session.get::<u64>("n").unwrap_or(0) + 1;
    session
        .put("n", &n)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

async fn read(session: Session) -> String {
    session.get::<u64>("n").unwrap_or(0).to_string()
}

// ---------------------------------------------------------------------------------------
// The driver

#[derive(Default)]
struct Sess {
    token: Option<String>,
    /// Requests to send in all.
    plan: u64,
    /// Requests sent, and answered with the expected counter.
    sent: u64,
    ok: u64,
    /// Something went wrong with this session (error, wrong counter, new token).
    broken: bool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    wrong_count: AtomicU64,
    token_changed: AtomicU64,
    per_target: [AtomicU64; 2],
}

async fn drive(opts: &Opts) -> Result<bool> {
    let targets: Vec<String> = opts
        .need("targets")?
        .split(',')
        .map(|t| t.trim_end_matches('/').to_owned())
        .collect();
    if targets.len() != 2 {
        bail!("--targets takes two URLs, comma-separated");
    }
    let requests = opts.num("requests", 100_000)?;
    let sessions = opts.num("sessions", 1_000)?;
    let concurrency = opts.num("concurrency", 64)?;
    let limit = Duration::from_secs(opts.num("seconds", 600)?);
    if sessions == 0 || requests < sessions || concurrency == 0 {
        bail!("need sessions > 0, requests >= sessions, concurrency > 0");
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::try_from(concurrency)?)
        .build()?;

    let per = requests / sessions;
    let extra = requests % sessions;
    let state: Arc<Vec<Mutex<Sess>>> = Arc::new(
        (0..sessions)
            .map(|i| {
                Mutex::new(Sess {
                    plan: per + u64::from(i < extra),
                    ..Sess::default()
                })
            })
            .collect(),
    );
    // Each session is in the queue at most once: one request in flight per session.
    let queue: Arc<std::sync::Mutex<VecDeque<usize>>> = Arc::new(std::sync::Mutex::new(
        (0..usize::try_from(sessions)?).collect(),
    ));
    let counters = Arc::new(Counters::default());
    let targets = Arc::new(targets);
    let started = Instant::now();
    let deadline = started + limit;

    println!(
        "soak: {requests} requests over {sessions} sessions, {concurrency} in flight, two app \
         processes ({} and {}), at most {} s",
        targets[0],
        targets[1],
        limit.as_secs()
    );
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, state, queue, counters, targets) = (
            client.clone(),
            state.clone(),
            queue.clone(),
            counters.clone(),
            targets.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let Some(i) = queue.lock().map_or(None, |mut q| q.pop_front()) else {
                    break;
                };
                let mut s = state[i].lock().await;
                one_request(&client, &targets, i, &mut s, &counters).await;
                if s.sent < s.plan {
                    drop(s);
                    if let Ok(mut q) = queue.lock() {
                        q.push_back(i);
                    }
                }
            }
        }));
    }
    let progress = {
        let counters = counters.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = counters.requests.load(Ordering::Relaxed);
                println!(
                    "  {:>4.0} s: {n} requests, {} errors",
                    started.elapsed().as_secs_f64(),
                    counters.errors.load(Ordering::Relaxed)
                );
            }
        })
    };
    for w in workers {
        w.await?;
    }
    progress.abort();
    let load_time = started.elapsed();

    // Read every session back, from the process its next request would have gone to.
    let mut lost = 0u64;
    let mut mismatched = 0u64;
    let mut read_errors = 0u64;
    let (mut total_read, mut total_sent, mut total_ok) = (0u64, 0u64, 0u64);
    let mut incomplete = 0u64;
    let mut broken = 0u64;
    for (i, s) in state.iter().enumerate() {
        let s = s.lock().await;
        broken += u64::from(s.broken);
        total_sent += s.sent;
        total_ok += s.ok;
        if s.sent < s.plan {
            incomplete += 1;
        }
        let Some(token) = &s.token else {
            if s.sent > 0 {
                lost += 1;
            }
            continue;
        };
        let target = &targets[(i + usize::try_from(s.sent)?) % 2];
        let res = client
            .get(format!("{target}/get"))
            .header("cookie", format!("session={token}"))
            .send()
            .await;
        let n = match res {
            Ok(r) if r.status() == 200 => r.text().await.ok().and_then(|b| b.parse::<u64>().ok()),
            _ => None,
        };
        match n {
            None => read_errors += 1,
            Some(0) => lost += 1,
            Some(n) => {
                total_read += n;
                if n != s.sent {
                    mismatched += 1;
                }
            }
        }
    }
    let duration = started.elapsed();
    let sent = counters.requests.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let wrong = counters.wrong_count.load(Ordering::Relaxed);
    let renamed = counters.token_changed.load(Ordering::Relaxed);
    let rps = sent as f64 / load_time.as_secs_f64().max(1e-9);
    println!("  requests sent        {sent} (of {requests})");
    println!(
        "  per process          {} / {}",
        counters.per_target[0].load(Ordering::Relaxed),
        counters.per_target[1].load(Ordering::Relaxed)
    );
    println!("  errors               {errors} (transport or non-200)");
    println!("  wrong counters       {wrong} (an answer that was not the last plus one)");
    println!("  tokens changed       {renamed}");
    println!(
        "  sessions             {sessions}: lost {lost}, wrong count {mismatched}, unreadable \
         {read_errors}, incomplete {incomplete}, with any error {broken}"
    );
    println!(
        "  counter total        {total_read} read back, {total_sent} requests sent, \
         {total_ok} answered as expected"
    );
    println!(
        "  duration             {:.1} s load, {:.1} s with read-back; {rps:.0} req/s",
        load_time.as_secs_f64(),
        duration.as_secs_f64()
    );
    println!(
        "RESULT requests={sent} errors={errors} wrong={wrong} lost={lost} mismatched={mismatched} \
         unreadable={read_errors} incomplete={incomplete} total_read={total_read} \
         total_sent={total_sent} seconds={:.1} rps={rps:.0}",
        load_time.as_secs_f64()
    );
    let ok = sent == requests
        && errors == 0
        && wrong == 0
        && renamed == 0
        && lost == 0
        && mismatched == 0
        && read_errors == 0
        && incomplete == 0
        && total_read == total_sent;
    if !ok {
        println!("soak: FAILED");
    }
    Ok(ok)
}

async fn one_request(
    client: &reqwest::Client,
    targets: &[String],
    i: usize,
    s: &mut Sess,
    counters: &Counters,
) {
    let which = (i + usize::try_from(s.sent).unwrap_or(0)) % 2;
    let mut req = client.get(format!("{}/inc", targets[which]));
    if let Some(t) = &s.token {
        req = req.header("cookie", format!("session={t}"));
    }
    s.sent += 1;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.per_target[which].fetch_add(1, Ordering::Relaxed);
    let res = match req.send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            s.broken = true;
            if counters.errors.load(Ordering::Relaxed) <= 5 {
                eprintln!("  error: status {}", r.status());
            }
            return;
        }
        Err(e) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            s.broken = true;
            if counters.errors.load(Ordering::Relaxed) <= 5 {
                eprintln!("  error: {e}");
            }
            return;
        }
    };
    let token = res.headers().get_all("set-cookie").iter().find_map(|v| {
        let pair = v.to_str().ok()?.split(';').next()?;
        pair.strip_prefix("session=").map(str::to_owned)
    });
    match (&s.token, token) {
        (None, Some(t)) => s.token = Some(t),
        (Some(old), Some(t)) if *old != t => {
            counters.token_changed.fetch_add(1, Ordering::Relaxed);
            s.broken = true;
            s.token = Some(t);
        }
        (_, None) => {
            // A modified session always gets its cookie.
            counters.errors.fetch_add(1, Ordering::Relaxed);
            s.broken = true;
        }
        _ => {}
    }
    let n = res.text().await.ok().and_then(|b| b.parse::<u64>().ok());
    if n == Some(s.ok + 1) {
        s.ok += 1;
    } else {
        counters.wrong_count.fetch_add(1, Ordering::Relaxed);
        s.broken = true;
    }
}
