//! `from_url`'s PostgreSQL pool hands out connections without a test query, so a
//! connection the network reset must never be handed out again: after a reset, calls fail
//! until the pool has opened fresh connections, then succeed. Through a fault proxy in
//! front of `SCS_POSTGRES_URL`; a missing server skips the test, or fails it under
//! `SCS_REQUIRE_BACKENDS=1`.

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl as _;
use scs_conformance::{Fault, FaultProxy};
use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_dieselstore::{DieselPool, DieselStore, diesel, diesel_async};

#[tokio::test]
async fn a_reset_connection_is_never_handed_out_again() {
    let url = scs_conformance::env_url(
        "SCS_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let (proxy, proxied) = FaultProxy::in_front_of(&url).await.unwrap();
    let table = scs_conformance::namespace();
    let pool = DieselStore::from_url(&proxied).unwrap().pool().clone();
    let store = DieselStore::builder(pool)
        .table_name(&table)
        .cleanup_interval(None)
        .build()
        .unwrap();
    if let Err(e) = store.migrate().await {
        if std::env::var(scs_conformance::REQUIRE_BACKENDS_VAR).is_ok() {
            panic!("{url}: {e}");
        }
        eprintln!("!!! skipped: {url} is not reachable ({e})");
        return;
    }
    let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store.commit("k", b"v", expiry).await.unwrap();
    // Several pooled connections at once, all to be reset together.
    for found in scs_conformance::find_at_once(&store, "k", 4).await.unwrap() {
        assert_eq!(found.as_deref(), Some(&b"v"[..]));
    }

    proxy.set(Fault::Reset);
    assert!(
        store.find("k").await.is_err(),
        "a find through a reset answered"
    );
    proxy.set(Fault::Forward);

    // Each dead connection may fail one more call at most (it is found closed and
    // dropped); then every call succeeds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "the pool kept handing out reset connections"
        );
        match store.find("k").await {
            Ok(Some(data)) => {
                assert_eq!(data, b"v");
                ok_in_a_row += 1;
            }
            Ok(None) => panic!("the session vanished"),
            Err(_) => {
                ok_in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let DieselPool::Postgres(pool) = store.pool() else {
        panic!("a postgres:// URL made another pool");
    };
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(format!("DROP TABLE \"{table}\""))
        .execute(&mut *conn)
        .await
        .unwrap();
}
