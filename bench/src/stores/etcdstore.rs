//! etcd, through `scs-etcdstore`, next to the same etcd-client `Client` used by hand.
//!
//! The store's `find` is one range get of `<prefix><key>`; its `commit` is a lease grant,
//! a transaction (a keys-only get of the key, for the lease it replaces, and a put with the
//! new lease) and a revoke of the replaced lease. The raw side does what an application
//! writing "this key with this TTL" on etcd-client does: a get, and a lease grant plus a
//! put with that lease, leaving the replaced lease to run out (as Go scs's etcdstore does).
//! Both sides write the store's value layout (the 8-byte big-endian expiry, then the
//! session bytes) under prefixes of the same length, so that the requests are the same
//! size; the raw side keeps to its own prefix so the store never revokes its leases. The
//! raw side's leases are revoked at the end, untimed.

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
/// settings, and the leases it granted, shared with the proxied one.
struct Raw {
    client: Client,
    leases: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl Raw {
    /// `from_url` is only the connect: it parses the URL (credentials, several endpoints)
    /// and sets the timeouts exactly as for the store; the bench then uses the bare client.
    async fn connect(url: &str, leases: Arc<std::sync::Mutex<Vec<i64>>>) -> Result<Self> {
        let client = EtcdStore::from_url(url).await?.client().clone();
        Ok(Self { client, leases })
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
    let now = millis(OffsetDateTime::now_utc());
    // Whole seconds, rounded up, as the store's lease.
    let ttl = i64::try_from(expiry.saturating_sub(now).div_ceil(1000).max(1))?;
    let lease = raw.client.lease_client().grant(ttl, None).await?.id();
    raw.leases.lock().map_err(|_| "poisoned")?.push(lease);
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
        "raw": "etcd-client Client: Range get / LeaseGrant + Put with the lease",
        "find": find,
        "commit": commit,
        "rt": rt,
        "note": "store: EtcdStore::from_url, prefix scs-bench:s:; find = 1 Range; commit = \
            LeaseGrant + Txn [keys-only Range, Put with lease] + LeaseRevoke of the replaced \
            lease (3 unary calls); raw commit = LeaseGrant + Put (2 unary calls), its replaced \
            leases left to run out (revoked at the end, untimed); both write the 8-byte expiry \
            + session bytes; rt counts more than the unary calls (1, 1 / 3, 2): etcd's gRPC \
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
