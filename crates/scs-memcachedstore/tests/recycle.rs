//! The pool hands out a busy connection without a `version` check, so a connection the
//! network dropped must be caught another way: checked when it has sat idle, and never handed
//! out again once a command on it failed. Through a fault proxy in front of
//! `SCS_MEMCACHED_URL`; a missing server skips the tests, or fails them under
//! `SCS_REQUIRE_BACKENDS=1`.

use std::time::{Duration, Instant};

use scs_conformance::{Fault, FaultProxy};
use scs_core::Store;
use scs_core::time::OffsetDateTime;
use scs_memcachedstore::{Manager, MemcachedStore, Pool, deadpool};

/// A store on a pool whose connections go through a new fault proxy, with `idle` as the
/// manager's idle time before a check; `None` when memcached is not reachable (and not
/// required).
async fn proxied(idle: Duration) -> Option<(FaultProxy, MemcachedStore)> {
    let url = scs_conformance::env_url("SCS_MEMCACHED_URL", "memcache://127.0.0.1:11211");
    let (proxy, _) = FaultProxy::in_front_of(&url).await.unwrap();
    let pool =
        Pool::builder(Manager::new(format!("tcp://{}", proxy.addr())).idle_before_ping(idle))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(3)))
            .build()
            .unwrap();
    let store = MemcachedStore::builder(pool)
        .prefix(format!("{}:", scs_conformance::namespace()))
        .build()
        .unwrap();
    if let Err(e) = store.ping().await {
        let require = std::env::var(scs_conformance::REQUIRE_BACKENDS_VAR)
            .is_ok_and(|v| v == "1" || v == "true");
        assert!(!require, "{url}: {e}");
        eprintln!("!!! skipped: {url} is not reachable ({e})");
        return None;
    }
    Some((proxy, store))
}

/// Stores a session, reads it through four pooled connections at once, then has the proxy
/// reset every connection.
async fn fill_then_reset(proxy: &FaultProxy, store: &MemcachedStore) {
    let expiry = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store.commit("k", b"v", expiry).await.unwrap();
    for found in scs_conformance::find_at_once(store, "k", 4).await.unwrap() {
        assert_eq!(found.as_deref(), Some(&b"v"[..]));
    }
    assert!(
        store.pool().status().size >= 2,
        "the reads did not open several connections"
    );
    proxy.set(Fault::Reset);
    // Let the proxy close every open relay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set(Fault::Forward);
}

#[tokio::test]
async fn an_idle_connection_is_checked_before_use() {
    let Some((proxy, store)) = proxied(Duration::from_millis(200)).await else {
        return;
    };
    fill_then_reset(&proxy, &store).await;
    // Every pooled connection is now dead and has been idle past the threshold: each is
    // checked, found dead and replaced, so not one call fails.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let found = store.find("k").await;
        assert_eq!(
            found.unwrap_or_else(|e| panic!("call {i} after the reset failed: {e}")),
            Some(b"v".to_vec())
        );
    }
}

#[tokio::test]
async fn a_busy_connection_that_failed_is_never_handed_out_again() {
    // The default: a connection used a moment ago is handed out unchecked.
    let Some((proxy, store)) = proxied(scs_memcachedstore::IDLE_BEFORE_PING).await else {
        return;
    };
    fill_then_reset(&proxy, &store).await;
    let dead = store.pool().status().size;
    assert!(
        store.find("k").await.is_err(),
        "a dead connection answered: was it checked after all?"
    );
    // Each dead connection fails one call at most (async-memcached closes it, the pool
    // drops it); then every call succeeds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut failures, mut ok_in_a_row) = (1, 0);
    while ok_in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "the pool kept handing out dead connections"
        );
        match store.find("k").await {
            Ok(found) => {
                assert_eq!(found.as_deref(), Some(&b"v"[..]));
                ok_in_a_row += 1;
            }
            Err(_) => {
                failures += 1;
                ok_in_a_row = 0;
            }
        }
    }
    assert!(
        failures <= dead,
        "{failures} calls failed on {dead} dead connections"
    );
}
