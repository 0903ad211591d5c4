//! NATS JetStream key-value, through `scs-natsstore`, next to async-nats's own bucket API.
//!
//! The store keeps each session in one key of a bucket, its value the 8-byte big-endian
//! expiry then the session bytes. Its `find` is one direct get of the key; its `commit` is
//! a request nobody answers (the check that the connection is live before a write) and a
//! publish to the key's subject with an `Scs-Expires` header, awaiting JetStream's ack.
//! The raw side is async-nats's `kv::Store` on the same bucket, as an application uses it:
//! `get` (the same direct get) and `put` of the same value bytes (a publish awaiting its
//! ack, no header). Both sides share the bench's bucket, deleted at the end.

use scs_natsstore::NatsStore;
use scs_natsstore::async_nats::{self, jetstream};

use super::*;

/// The bench's own bucket, apart from the default one and the tests'.
const BUCKET: &str = "scs_bench";

/// The store as `from_url` connects it, on the bench's bucket, with no cleanup task.
async fn open(url: &str) -> Result<NatsStore> {
    let base = NatsStore::from_url(url).await?;
    base.stop_cleanup();
    Ok(NatsStore::builder(base.context().clone())
        .bucket(BUCKET)
        .cleanup_interval(None)
        .build()?)
}

/// A connection of its own, with the store's connect timeout, and the bucket's handle.
async fn raw(url: &str) -> Result<jetstream::kv::Store> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT)
        .connect(url)
        .await?;
    Ok(jetstream::new(client).get_key_value(BUCKET).await?)
}

async fn raw_get(kv: &jetstream::kv::Store, key: &str) -> Result<()> {
    std::hint::black_box(kv.get(key).await?);
    Ok(())
}

async fn raw_put(kv: &jetstream::kv::Store, key: &str, fx: &Fixture) -> Result<()> {
    let expiry = u64::try_from(fx.expiry.unix_timestamp_nanos() / 1_000_000)?;
    let value = [&expiry.to_be_bytes()[..], &fx.data].concat();
    kv.put(key, value.into()).await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_NATS_URL").unwrap_or("nats://127.0.0.1:4222".into());
    if let Some(reason) = down(&url, NatsStore::from_url(&url)).await {
        skipped("nats", reason);
        return Ok(());
    }
    let store = open(&url).await?;
    store.migrate().await?;
    let result = measure(fx, &url, &store).await;
    store.delete_bucket().await?;
    let (find, commit, rt) = result?;
    emit(&json!({
        "part": "store",
        "store": "nats",
        "status": "ok",
        "raw": "async-nats kv::Store: get (direct get) / put (publish + ack)",
        "find": find,
        "commit": commit,
        "rt": rt,
        "note": "store: NatsStore::from_url, bucket scs_bench made by migrate() (file storage, \
            1 value per key, direct gets), no cleanup task; find = 1 direct get on both sides; \
            store commit = a request to _SCS.PING.<random> (answered at once with no \
            responders: the write is never queued on a dead connection) + publish with an \
            Scs-Expires header and its ack, raw put = the publish and its ack; both write the \
            8-byte expiry + session bytes; rt may include the client's own PING every 60 s \
            (async-nats's default) or a reply to the server's, if one falls in the window; \
            one server process for both sides, not pinned",
    }));
    Ok(())
}

async fn measure(fx: &Fixture, url: &str, store: &NatsStore) -> Result<(Json, Json, Json)> {
    fx.fill(store).await?;
    let kv = raw(url).await?;
    let (s, r) = (store, &kv);
    let (find, commit) = against(
        fx,
        s,
        |i| raw_get(r, fx.key(i)),
        |i| raw_put(r, fx.key(i), fx),
    )
    .await?;

    let (proxy, proxied) = proxied(url, 4222).await?;
    let ps = open(&proxied).await?;
    let pr = raw(&proxied).await?;
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
