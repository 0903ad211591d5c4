//! etcd, through `scs-etcdstore`, next to the same etcd-client `Client` used by hand.
//!
//! The store's `find` is one range get of `<prefix><key>`; its `commit` is one put with the
//! lease it keeps for the expiry's second (granted by the first commit of that second). The
//! raw side does the same by hand on etcd-client: a get, and a put with one lease it
//! granted for the fixture's expiry. Both sides write the store's value layout (the 8-byte
//! big-endian expiry, then the session bytes) under prefixes of the same length, so that
//! the requests are the same size. Every fixture session has the same expiry, so after the
//! warm-up neither side grants again. The raw side's leases are revoked at the end, untimed.

use scs_etcdstore::EtcdStore;
use scs_etcdstore::etcd_client::{Client, DeleteOptions, PutOptions};

use super::*;

/// The store's keys, and the raw side's: same length, apart from each other and the tests'.
const PREFIX: &str = "scs-bench:s:";
const RAW_PREFIX: &str = "scs-bench:r:";

/// The store as `from_url` connects it (5 s connect and request timeouts), on the bench's
/// prefix.
async fn open(url: &str) -> Result<EtcdStore> {
    let base = EtcdStore::from_url(url).await?;
    Ok(EtcdStore::builder(base.client().clone())
        .prefix(PREFIX)
        .build()?)
}

/// A driver client of its own (one more HTTP/2 connection), connected with the store's
/// settings; the lease its puts use; and the leases granted, shared with the proxied one.
struct Raw {
    client: Client,
    lease: tokio::sync::OnceCell<i64>,
    leases: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl Raw {
    /// `from_url` is only the connect: it parses the URL (credentials, several endpoints)
    /// and sets the timeouts exactly as for the store; the bench then uses the bare client.
    async fn connect(url: &str, leases: Arc<std::sync::Mutex<Vec<i64>>>) -> Result<Self> {
        let client = EtcdStore::from_url(url).await?.client().clone();
        Ok(Self {
            client,
            lease: tokio::sync::OnceCell::new(),
            leases,
        })
    }

    /// Deletes the raw side's keys and revokes every lease it granted (those that already
    /// ran out are fine).
    async fn clear(&self) -> Result<()> {
        self.client
            .kv_client()
            .delete(RAW_PREFIX, Some(DeleteOptions::new().with_prefix()))
            .await?;
        let leases = std::mem::take(&mut *self.leases.lock().map_err(|_| "poisoned")?);
        let mut lease_client = self.client.lease_client();
        for lease in leases {
            let _ = lease_client.revoke(lease).await;
        }
        Ok(())
    }
}

fn millis(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

async fn raw_get(raw: &Raw, key: &str) -> Result<()> {
    let resp = raw
        .client
        .kv_client()
        .get(format!("{RAW_PREFIX}{key}"), None)
        .await?;
    std::hint::black_box(resp.kvs().first().map(|kv| kv.value().to_vec()));
    Ok(())
}

async fn raw_put(raw: &Raw, key: &str, fx: &Fixture) -> Result<()> {
    let expiry = millis(fx.expiry);
    let lease = *raw
        .lease
        .get_or_try_init(|| async {
            let now = millis(OffsetDateTime::now_utc());
            // Whole seconds, rounded up, as the store's lease.
            let ttl = i64::try_from(expiry.saturating_sub(now).div_ceil(1000).max(1))?;
            let lease = raw.client.lease_client().grant(ttl, None).await?.id();
            raw.leases.lock().map_err(|_| "poisoned")?.push(lease);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(lease)
        })
        .await?;
    let value = [&expiry.to_be_bytes()[..], &fx.data].concat();
    raw.client
        .kv_client()
        .put(
            format!("{RAW_PREFIX}{key}"),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_ETCD_URL").unwrap_or("http://127.0.0.1:2379".into());
    if let Some(reason) = down(&url, EtcdStore::from_url(&url)).await {
        skipped("etcd", reason);
        return Ok(());
    }
    let store = open(&url).await?;
    let raw = Raw::connect(&url, Arc::default()).await?;
    let result = measure(fx, &url, &store, &raw).await;
    store.clear().await?;
    raw.clear().await?;
    let (find, commit, rt) = result?;
    emit(&json!({
        "part": "store",
        "store": "etcd",
        "status": "ok",
        "raw": "etcd-client Client: Range get / Put with a lease granted once",
        "find": find,
        "commit": commit,
        "rt": rt,
        "note": "store: EtcdStore::from_url, prefix scs-bench:s:; find = 1 Range; commit = \
            1 Put with the store's lease for the expiry's second (a LeaseGrant only for the \
            first commit of a second: every fixture session has one expiry, so none after the \
            warm-up); raw commit = 1 Put with a lease granted once; both write the 8-byte \
            expiry + session bytes; rt can count more than the unary calls (1, 1): etcd's gRPC \
            server (grpc-go, BDP estimation on) answers every request with a WINDOW_UPDATE and \
            a PING, and the client's PING ack is a write of its own, an extra trip whenever the \
            PING arrives in a read before the reply (the caller never waits for it); no \
            keep-alive pings (etcd-client's default); one server process for both sides, not \
            pinned",
    }));
    Ok(())
}

async fn measure(
    fx: &Fixture,
    url: &str,
    store: &EtcdStore,
    raw: &Raw,
) -> Result<(Json, Json, Json)> {
    fx.fill(store).await?;
    for key in &fx.keys {
        raw_put(raw, key, fx).await?;
    }
    let (s, r) = (store, raw);
    let (find, commit) = against(
        fx,
        s,
        |i| raw_get(r, fx.key(i)),
        |i| raw_put(r, fx.key(i), fx),
    )
    .await?;

    let (proxy, proxied) = proxied(url, 2379).await?;
    let ps = open(&proxied).await?;
    let pr = Raw::connect(&proxied, Arc::clone(&raw.leases)).await?;
    let (ps, pr) = (&ps, &pr);
    let rt = proxy
        .trips(
            fx,
            ps,
            |i| raw_get(pr, fx.key(i)),
            |i| raw_put(pr, fx.key(i), fx),
        )
        .await?;
    Ok((find, commit, rt))
}
