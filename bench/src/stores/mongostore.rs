//! MongoDB, through `scs-mongostore`, next to a `mongodb::Collection` of the same driver
//! used by hand.
//!
//! The store's `find` is a `find_one` on `{_id: key, expiry: {$gt: now}}` projected to
//! `data`; its `commit` is an `update_one` of `{_id: key}` with `$set` of data, expiry and
//! a new version, with `upsert: true`. The raw side sends exactly these two commands on a
//! client of its own, so the difference is the store's own work around the driver. Both
//! clients connect directly to the one host given (as the conformance suite does), so that
//! the proxied pair stays behind the proxy whatever hosts the server advertises.

use scs_mongostore::MongoStore;
use scs_mongostore::mongodb::bson::spec::BinarySubtype;
use scs_mongostore::mongodb::bson::{Binary, DateTime, Document, doc};
use scs_mongostore::mongodb::options::ClientOptions;
use scs_mongostore::mongodb::{Client, Collection};

use super::*;

/// The bench's own database, dropped at the end.
const DATABASE: &str = "scs_bench";
/// The store's default collection name.
const COLLECTION: &str = "sessions";

/// A client of its own (its own connection pool) for `url`: server selection bounded by
/// [`CONNECT`], and a direct connection to a single host.
async fn client(url: &str) -> Result<Client> {
    let mut options = ClientOptions::parse(url).await?;
    options.server_selection_timeout = Some(CONNECT);
    if options.hosts.len() == 1 {
        options.direct_connection = Some(true);
    }
    Ok(Client::with_options(options)?)
}

/// The store on its own client, in the bench's database, with its TTL index.
async fn open(url: &str) -> Result<MongoStore> {
    let store = MongoStore::builder(client(url).await?)
        .database(DATABASE)
        .cleanup_interval(None)
        .build()?;
    store.migrate().await?;
    Ok(store)
}

/// The store's collection, on a client of its own.
async fn raw(url: &str) -> Result<Collection<Document>> {
    Ok(client(url).await?.database(DATABASE).collection(COLLECTION))
}

/// A BSON date, truncated to the millisecond as the store writes it.
fn bson_date(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

async fn raw_find(coll: &Collection<Document>, key: &str) -> Result<()> {
    let found = coll
        .find_one(doc! { "_id": key, "expiry": { "$gt": DateTime::now() } })
        .projection(doc! { "data": 1 })
        .await?;
    std::hint::black_box(found.map(|d| d.get_binary_generic("data").cloned()));
    Ok(())
}

async fn raw_commit(coll: &Collection<Document>, key: &str, fx: &Fixture) -> Result<()> {
    let data = Binary {
        subtype: BinarySubtype::Generic,
        bytes: fx.data.clone(),
    };
    coll.update_one(
        doc! { "_id": key },
        doc! { "$set": {
            "data": data,
            "expiry": bson_date(fx.expiry),
            "version": scs_core::new_version().cast_signed(),
        } },
    )
    .upsert(true)
    .await?;
    Ok(())
}

pub(super) async fn run(fx: &Fixture) -> Result<()> {
    let url = std::env::var("SCS_MONGODB_URL").unwrap_or("mongodb://127.0.0.1:27017".into());
    let ping = async {
        client(&url)
            .await?
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await?;
        Result::<()>::Ok(())
    };
    // Server selection is bounded by `CONNECT`: the driver's own error says what failed.
    if let Err(e) = ping.await {
        skipped("mongo", format!("server down at {url}: {e}"));
        return Ok(());
    }
    let result = measure(fx, &url).await;
    client(&url).await?.database(DATABASE).drop().await?;
    let mut row = result?;
    // As for Redis: one server process serves both sides, so it is left where it runs.
    row["pinned"] = "one server process for both sides, not pinned".into();
    emit(&store_row(
        row,
        "mongo",
        "mongodb Collection<Document>: the store's find_one (filter _id + expiry > now, \
         projection data) / update_one $set .. upsert",
        "store: MongoStore::builder on a client of its own (directConnection, the driver's \
         default pool: no command on checkout), so 1 round trip per call; the driver's \
         server monitor (its own connection, a hello every 10 s) passes the proxy too: at \
         most a trip or two in a run",
    ));
    Ok(())
}

async fn measure(fx: &Fixture, url: &str) -> Result<Json> {
    let store = open(url).await?;
    fx.fill(&store).await?;
    let coll = raw(url).await?;
    let (proxy, proxied) = proxied(url, 27017).await?;
    let ps = open(&proxied).await?;
    let pc = raw(&proxied).await?;
    measure_pair(
        fx,
        (&store, &coll),
        (&ps, &pc, &proxy),
        (raw_find, |c, key| raw_commit(c, key, fx)),
        async { Ok(Vec::new()) },
    )
    .await
}
