//! memcached. The raw side is one async-memcached `Client` sending the data command the
//! store sends for a plain `find` / `commit`: `mg <prefix><key> v c`, and
//! `set <prefix><key>` with the store's value (the expiry in unix ms, 8 bytes big-endian,
//! then the session bytes) and its `exptime` (whole seconds rounded up, plus one). The
//! store also takes a connection from its deadpool pool for every call; the pool checks a
//! connection with `version` only once it has sat idle for 10 s, which never happens here.
//! memcached hands each connection to one of its worker threads, so the two sides are
//! served by different threads; left to the kernel, one side got 20 µs and the other 75 µs
//! for the same command, in either order from run to run. While timed, every thread of the
//! server is pinned to the bench's core, as the SQL servers' workers are.

use scs_memcachedstore::MemcachedStore;
use scs_memcachedstore::async_memcached::{AsciiProtocol as _, Client, MetaProtocol as _};
use tokio::sync::Mutex;

use super::*;

/// Apart from the conformance tests' per-trial prefixes.
const PREFIX: &str = "scs-bench:";

/// memcached's port when the URL names none.
const PORT: u16 = 11211;

/// A single connection: the driver's calls take `&mut`.
type Raw = Mutex<Client>;

/// The store on `from_url`'s pool (under [`PREFIX`]) and a raw client, both connected.
async fn open(url: &str) -> Result<(MemcachedStore, Raw)> {
    let pool = MemcachedStore::from_url(url).await?.pool().clone();
    let store = MemcachedStore::builder(pool).prefix(PREFIX).build()?;
    // The URL's `host:port`, as the driver's DSN (TCP only).
    let (_, upstream) = redirect(url, PORT, "").ok_or("bad memcached URL")?;
    let client = Client::new(format!("tcp://{upstream}")).await?;
    Ok((store, Mutex::new(client)))
}

async fn connect(url: &str) -> Result<(MemcachedStore, Raw)> {
    tokio::time::timeout(CONNECT, open(url))
        .await
        .map_err(|_| "timed out")?
}

fn millis(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

async fn raw_get(raw: &Raw, key: &str) -> Result<()> {
    let found = raw
        .lock()
        .await
        .meta_get(format!("{PREFIX}{key}"), false, None, Some(&["v", "c"]))
        .await?;
    std::hint::black_box(found.and_then(|v| v.data));
    Ok(())
}

async fn raw_set(raw: &Raw, key: &str, fx: &Fixture) -> Result<()> {
    let expiry = millis(fx.expiry);
    let now = millis(OffsetDateTime::now_utc());
    let ttl = i64::try_from(expiry.saturating_sub(now).div_ceil(1000) + 1)?;
    let value = [&expiry.to_be_bytes()[..], &fx.data].concat();
    raw.lock()
        .await
        .set(format!("{PREFIX}{key}"), &value[..], Some(ttl), None)
        .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_MEMCACHED_URL").unwrap_or("memcache://127.0.0.1:11211".into());
    let (store, raw) = match connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            skipped("memcached", format!("server down at {url}: {e}"));
            return Ok(());
        }
    };
    let row = measure(fx, &url, &store, &raw).await;
    // memcached cannot list keys: each one the run wrote (the raw side's are the same).
    for key in &fx.keys {
        store.delete(key).await?;
    }
    emit(&store_row(
        row?,
        "memcached",
        "async-memcached Client: mg <key> v c / set <key> (the store's value: expiry ++ data, \
            and exptime)",
        "store: MemcachedStore::from_url's pool (deadpool, default size; its recycle sends \
            `version` only for a connection idle 10 s or more, so each call here is one mg or \
            one set), rebuilt with builder().prefix(..); the store also checks the expiry in \
            the value on find and runs each call under its 3 s timeout; raw: one Client behind \
            a Mutex; memcached hands each connection to one of its worker threads, so the two \
            sides are served by different threads: all of the server's threads are pinned",
    ));
    Ok(())
}

async fn measure(fx: &Fixture, url: &str, store: &MemcachedStore, raw: &Raw) -> Result<Json> {
    fx.fill(store).await?;
    let (proxy, proxied) = proxied(url, PORT).await?;
    let (ps, pr) = connect(&proxied).await?;
    measure_pair(
        fx,
        (store, raw),
        (&ps, &pr, &proxy),
        (raw_get, |r, key| raw_set(r, key, fx)),
        threads(raw),
    )
    .await
}

/// Every thread of the memcached process (its pid from `stats`): the worker threads serving
/// both sides' connections, and the rest, which do little.
async fn threads(raw: &Raw) -> Result<Vec<u32>> {
    let stats = raw.lock().await.stats().await?;
    let pid = stats.get("pid").ok_or("memcached's stats have no pid")?;
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(id) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}
