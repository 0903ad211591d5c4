//! fred (Redis / Valkey). The raw side is one fred `Client` sending the one command the
//! store sends for a plain `find` / `commit`: `GET <prefix><key>`, and
//! `SET <prefix><key> <value> PXAT <ms>` with the store's value (an 8-byte big-endian
//! version, then the session bytes) and its expiry (the millisecond before). Same driver,
//! same key, same bytes: what differs is the store's own work (its pool's round robin,
//! the version, the error mapping).

use scs_fredstore::FredStore;
use scs_fredstore::fred::bytes::Bytes;
use scs_fredstore::fred::clients::Client;
use scs_fredstore::fred::interfaces::{ClientLike as _, KeysInterface as _};
use scs_fredstore::fred::types::config::Config;
use scs_fredstore::fred::types::{Builder, Expiration};

use super::*;

/// Its own prefix: the redis part (`scs-bench:`) may use the same server.
const PREFIX: &str = "scs-bench-fred:";

/// The store as `from_url` builds it (under [`PREFIX`]) and a raw client, both connected.
async fn open(url: &str) -> Result<(FredStore, Client)> {
    let store = FredStore::from_url(url).await?.with_prefix(PREFIX)?;
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    Ok((store, client))
}

async fn connect(url: &str) -> Result<(FredStore, Client)> {
    tokio::time::timeout(CONNECT, open(url))
        .await
        .map_err(|_| "timed out")?
}

async fn raw_get(client: &Client, key: &str) -> Result<()> {
    let v: Option<Bytes> = client.get(format!("{PREFIX}{key}")).await?;
    std::hint::black_box(v);
    Ok(())
}

async fn raw_set(client: &Client, key: &str, fx: &Fixture) -> Result<()> {
    let mut value = Vec::with_capacity(8 + fx.data.len());
    value.extend_from_slice(&scs_core::new_version().to_be_bytes());
    value.extend_from_slice(&fx.data);
    let at = (fx.expiry.unix_timestamp_nanos() / 1_000_000) as i64 - 1;
    client
        .set::<(), _, _>(
            format!("{PREFIX}{key}"),
            Bytes::from(value),
            Some(Expiration::PXAT(at)),
            None,
            false,
        )
        .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let (store, client) = match connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            skipped("fred", format!("server down at {url}: {e}"));
            return Ok(());
        }
    };
    let row = measure(fx, &url, &store, &client).await;
    // Every key the run wrote is under the prefix, the raw side's too.
    store.clear().await?;
    client.quit().await?;
    let (find, commit, rt) = row?;
    emit(&json!({
        "part": "store",
        "store": "fred",
        "status": "ok",
        "raw": "fred Client: GET / SET .. PXAT (the store's value: version ++ data)",
        "find": find,
        "commit": commit,
        "rt": rt,
        "note": "store: FredStore::from_url (pool of 4 clients, round robin; writes with \
            one attempt, fail fast) under a bench-only prefix; raw: one fred Client with \
            default options; one server process for both sides, not pinned",
    }));
    Ok(())
}

async fn measure(
    fx: &Fixture,
    url: &str,
    store: &FredStore,
    client: &Client,
) -> Result<(Json, Json, Json)> {
    fx.fill(store).await?;
    let (s, c) = (store, client);
    // Not pinned: both sides talk to the one server process (see the redis part).
    let (find, commit) = against(
        fx,
        s,
        |i| raw_get(c, fx.key(i)),
        |i| raw_set(c, fx.key(i), fx),
    )
    .await?;

    let (proxy, proxied) = proxied(url, 6379).await?;
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
    pc.quit().await?;
    Ok((find, commit, rt))
}
