//! Every scs behaviour, through real HTTP requests against the layer.

mod common;

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use common::{Client, Probe, serve};
use scs::time::OffsetDateTime;
use scs::{Session, SessionManager, Sessions, Store, TokenTransport};

fn routes() -> Router {
    Router::new()
        .route(
            "/put/{key}/{value}",
            get(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.put(&k, &v).unwrap();
                    "ok"
                },
            ),
        )
        .route(
            "/get/{key}",
            get(|s: Session, Path(k): Path<String>| async move {
                s.get_string(&k).unwrap_or_else(|| "<none>".into())
            }),
        )
        .route("/noop", get(|| async { "noop" }))
        .route(
            "/read",
            get(|s: Session| async move { format!("{:?}", s.keys()) }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move {
                s.destroy().await.unwrap();
                format!("{:?}", s.status())
            }),
        )
        .route(
            "/destroy_then_put",
            get(|s: Session| async move {
                s.destroy().await.unwrap();
                s.put("after", "destroy").unwrap();
                "ok"
            }),
        )
        .route(
            "/renew",
            get(|s: Session| async move {
                s.renew_token().await.unwrap();
                "ok"
            }),
        )
        .route(
            "/remember/{on}",
            get(|s: Session, Path(on): Path<bool>| async move {
                s.remember_me(on);
                "ok"
            }),
        )
}

async fn start(manager: SessionManager) -> Client {
    Client::new(serve(routes().layer(manager.layer())).await)
}

fn cookie_pair(token: &str) -> String {
    format!("session={token}")
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn put_then_get_and_token_stays_the_same_across_modifications() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let r = c.get("/put/message/hello", None).await;
    let token = r
        .cookie("session")
        .expect("a cookie on the first modification");
    assert_eq!(token.len(), 43);
    assert!(scs::token::is_valid(&token));
    let r = c.get("/get/message", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "hello");
    let r = c.get("/put/other/value", Some(&cookie_pair(&token))).await;
    assert_eq!(
        r.cookie("session").as_deref(),
        Some(token.as_str()),
        "token changed on modification"
    );
    assert_eq!(store.keys().await.len(), 1);
}

#[tokio::test]
async fn unmodified_request_sends_no_cookie_and_writes_nothing() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    // A new visitor who is never modified: no cookie, no row.
    let r = c.get("/read", None).await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookies().is_empty());
    assert_eq!(store.writes(), 0);
    assert!(store.keys().await.is_empty());
    // A known session read without changes: one find, no write, no cookie.
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    let writes = store.writes();
    let r = c.get("/get/a", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "b");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    assert!(r.header_all("cache-control").is_empty());
    assert_eq!(
        store.writes(),
        writes,
        "an unmodified request wrote to the store"
    );
}

#[tokio::test]
async fn a_handler_that_never_asks_for_its_session_costs_no_store_call() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    let calls = store.calls();
    let r = c.get("/noop", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "noop");
    assert!(r.set_cookies().is_empty());
    assert_eq!(r.header_all("vary"), ["Cookie"]);
    assert_eq!(
        store.calls(),
        calls,
        "an untouched request called the store"
    );
    // And a store that is down does not fail a request that never asks.
    store.fail_find(true);
    let r = c.get("/noop", Some(&cookie_pair(&token))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "noop"));
    let r = c.get("/get/a", Some(&cookie_pair(&token))).await;
    assert_eq!(r.status, 500, "a handler that asks gets the error handler");
}

#[tokio::test]
async fn several_extractors_in_one_request_load_once() {
    let store = Probe::new();
    let manager = SessionManager::new(store.clone());
    let app = Router::new()
        .route(
            "/twice",
            get(|a: Session, b: Sessions| async move {
                let b = b.iter().next().unwrap().clone();
                b.put("n", &(a.get::<i64>("n").unwrap_or(0) + 1)).unwrap();
                a.get::<i64>("n").unwrap().to_string()
            }),
        )
        .layer(manager.layer());
    let c = Client::new(serve(app).await);
    let token = c.get("/twice", None).await.cookie("session").unwrap();
    let finds = store.finds();
    let r = c.get("/twice", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "2", "both extractors share one session");
    assert_eq!(store.finds() - finds, 1, "one load per request");
}

#[tokio::test]
async fn idle_timeout_slides_on_requests_that_never_ask_for_the_session() {
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .idle_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let c = start(manager).await;
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c.get("/noop", Some(&cookie_pair(&token))).await;
        assert_eq!(r.body, "noop");
        assert_eq!(r.cookie("session").as_deref(), Some(token.as_str()));
    }
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&token))).await.body,
        "b",
        "activity that never read the session kept it alive"
    );
    assert_eq!(store.commits(), 1, "slid by touch, data never rewritten");
    // A new visitor on such a route: no cookie, no store call beyond nothing at all.
    let calls = store.calls();
    let r = c.get("/noop", None).await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(store.calls(), calls);
}

#[tokio::test]
async fn vary_always_and_cache_control_with_every_cookie() {
    let c = start(SessionManager::new(Probe::new())).await;
    for path in ["/noop", "/read"] {
        let r = c.get(path, None).await;
        assert_eq!(r.header_all("vary"), ["Cookie"], "{path}");
    }
    let r = c.get("/put/a/b", None).await;
    assert_eq!(r.header_all("vary"), ["Cookie"]);
    assert_eq!(r.header_all("cache-control"), [r#"no-cache="Set-Cookie""#]);
    let token = r.cookie("session").unwrap();
    let r = c.get("/destroy", Some(&cookie_pair(&token))).await;
    assert_eq!(r.header_all("cache-control"), [r#"no-cache="Set-Cookie""#]);
}

#[tokio::test]
async fn cookie_has_scs_attributes() {
    let c = start(SessionManager::new(Probe::new())).await;
    let r = c.get("/put/a/b", None).await;
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1);
    let v = &cookies[0];
    let token = r.cookie("session").unwrap();
    assert!(
        v.starts_with(&format!("session={token}; Path=/; Expires=")),
        "{v}"
    );
    assert!(
        v.ends_with("; Max-Age=86400; HttpOnly; SameSite=Lax"),
        "{v}"
    );
}

#[tokio::test]
async fn destroy_sends_the_exact_deletion_cookie_and_deletes_from_the_store() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    assert_eq!(store.keys().await.len(), 1);
    let r = c.get("/destroy", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "Destroyed");
    assert_eq!(
        r.set_cookies(),
        [
            "session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
        ]
    );
    assert!(store.keys().await.is_empty());
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&token))).await.body,
        "<none>"
    );
}

#[tokio::test]
async fn put_after_destroy_commits_a_new_token() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    let r = c.get("/destroy_then_put", Some(&cookie_pair(&token))).await;
    let new = r.cookie("session").expect("a new session cookie");
    assert_ne!(new, token);
    assert!(!new.is_empty());
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&new))).await.body,
        "<none>"
    );
    assert_eq!(
        c.get("/get/after", Some(&cookie_pair(&new))).await.body,
        "destroy"
    );
    assert_eq!(store.keys().await.len(), 1);
}

#[tokio::test]
async fn renew_token_changes_token_keeps_data_and_removes_the_old_one() {
    let store = Probe::new();
    let manager = SessionManager::new(store.clone());
    let c = start(manager.clone()).await;
    let old = c
        .get("/put/user/ada", None)
        .await
        .cookie("session")
        .unwrap();
    let r = c.get("/renew", Some(&cookie_pair(&old))).await;
    let new = r.cookie("session").unwrap();
    assert_ne!(new, old);
    assert_eq!(
        c.get("/get/user", Some(&cookie_pair(&new))).await.body,
        "ada"
    );
    assert_eq!(
        c.get("/get/user", Some(&cookie_pair(&old))).await.body,
        "<none>"
    );
    let keys = store.keys().await;
    assert_eq!(keys, [scs::token::store_key(&new, true)]);
}

#[tokio::test]
async fn lifetime_expiry_ends_the_session() {
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .lifetime(Duration::from_millis(700))
        .build()
        .unwrap();
    let c = start(manager).await;
    let r = c.get("/put/a/b", None).await;
    let token = r.cookie("session").unwrap();
    assert!(
        r.set_cookies()[0].contains("Max-Age=1;"),
        "{:?}",
        r.set_cookies()
    );
    assert_eq!(c.get("/get/a", Some(&cookie_pair(&token))).await.body, "b");
    // Activity does not extend an absolute lifetime.
    c.get("/put/c/d", Some(&cookie_pair(&token))).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&token))).await.body,
        "<none>"
    );
}

async fn idle_timeout_slides(store: Probe) {
    let manager = SessionManager::builder(store.clone())
        .idle_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let c = start(manager).await;
    let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c.get("/get/a", Some(&cookie_pair(&token))).await;
        assert_eq!(
            r.body, "b",
            "activity within the idle timeout keeps the session"
        );
        assert_eq!(
            r.cookie("session").as_deref(),
            Some(token.as_str()),
            "the cookie is re-sent with the slid expiry"
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&token))).await.body,
        "<none>"
    );
}

#[tokio::test]
async fn idle_timeout_slides_by_touch_without_rewriting() {
    let store = Probe::new();
    idle_timeout_slides(store.clone()).await;
    assert_eq!(store.commits(), 1, "only the first request wrote data");
    assert!(store.touches() >= 4);
}

#[tokio::test]
async fn idle_timeout_slides_by_commit_when_the_store_cannot_touch() {
    let store = Probe::without_touch();
    idle_timeout_slides(store.clone()).await;
    assert!(store.commits() >= 5);
    assert_eq!(store.touches(), 0);
}

#[tokio::test]
async fn remember_me_with_persist_off() {
    let manager = SessionManager::builder(Probe::new())
        .cookie_persist(false)
        .build()
        .unwrap();
    let c = start(manager).await;
    let r = c.get("/put/a/b", None).await;
    let v = &r.set_cookies()[0];
    assert!(
        !v.contains("Expires") && !v.contains("Max-Age"),
        "a browser-session cookie: {v}"
    );
    let token = r.cookie("session").unwrap();
    let r = c.get("/remember/true", Some(&cookie_pair(&token))).await;
    let v = &r.set_cookies()[0];
    assert!(
        v.contains("; Expires=") && v.contains("; Max-Age=86400"),
        "remember-me persists: {v}"
    );
    let r = c.get("/put/c/d", Some(&cookie_pair(&token))).await;
    assert!(
        r.set_cookies()[0].contains("Max-Age="),
        "remembered across requests"
    );
    let r = c.get("/remember/false", Some(&cookie_pair(&token))).await;
    assert!(!r.set_cookies()[0].contains("Max-Age="));
}

#[tokio::test]
async fn store_error_on_load_calls_the_error_handler_not_the_handler() {
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .error_handler(|err| {
            let mut res =
                http::Response::new(bytes::Bytes::from(format!("custom: {}", err.kind())));
            *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            res
        })
        .build()
        .unwrap();
    let called = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = called.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |s: Session| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    s.put("x", &1).unwrap();
                    "handler"
                }
            }),
        )
        .layer(manager.layer());
    let c = Client::new(serve(app).await);
    let token = c.get("/", None).await.cookie("session").unwrap();
    assert_eq!(called.load(std::sync::atomic::Ordering::SeqCst), 1);
    store.fail_find(true);
    let r = c.get("/", Some(&cookie_pair(&token))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "custom: connection");
    assert_eq!(r.header_all("vary"), ["Cookie"]);
    assert_eq!(
        called.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the handler ran after a failed load"
    );
}

#[tokio::test]
async fn commit_failure_replaces_the_response() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    store.fail_commit(true);
    let r = c.get("/put/a/b", None).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "Internal Server Error");
    assert!(
        r.set_cookies().is_empty(),
        "no cookie for data that was not stored"
    );
    assert!(store.keys().await.is_empty());
}

#[tokio::test]
async fn corrupt_stored_bytes_go_to_the_error_handler() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let good = c.get("/put/a/good", None).await.cookie("session").unwrap();
    let bad = c.get("/put/a/b", None).await.cookie("session").unwrap();
    let far = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store
        .mem()
        .commit(&scs::token::store_key(&bad, true), b"\xc1\xff garbage", far)
        .await
        .unwrap();
    let r = c.get("/get/a", Some(&cookie_pair(&bad))).await;
    assert_eq!(r.status, 500);
    // The other session is untouched.
    assert_eq!(
        c.get("/get/a", Some(&cookie_pair(&good))).await.body,
        "good"
    );
}

#[tokio::test]
async fn malformed_cookies_never_reach_the_store() {
    let store = Probe::new();
    let c = start(SessionManager::new(store.clone())).await;
    let near_miss = format!("{}B", &scs::token::generate()[..42]);
    let cases = [
        "session=".to_owned(),
        "session=short".to_owned(),
        format!("session={}", "a".repeat(44)),
        format!("session={}", "+".repeat(43)),
        format!("session={near_miss}"),
        "session=../../etc/passwd".to_owned(),
        "session='; DROP TABLE sessions; --".to_owned(),
        format!("session={}", "x".repeat(8000)),
    ];
    for cookie in &cases {
        let r = c.get("/read", Some(cookie)).await;
        assert_eq!(r.status, 200, "{cookie}");
    }
    assert_eq!(store.calls(), 0, "a malformed token reached the store");
    // A well-formed but unknown token is looked up, and never adopted.
    let unknown = scs::token::generate();
    let r = c.get("/put/a/b", Some(&cookie_pair(&unknown))).await;
    assert_eq!(store.finds(), 1);
    let minted = r.cookie("session").unwrap();
    assert_ne!(minted, unknown, "an unknown client token was adopted");
}

#[tokio::test]
async fn two_managers_in_one_request() {
    let (a, b) = (Probe::new(), Probe::new());
    let user = SessionManager::builder(a.clone())
        .cookie_name("user_session")
        .build()
        .unwrap();
    let admin = SessionManager::builder(b.clone())
        .cookie_name("admin_session")
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|sessions: Sessions| async move {
                let user = sessions.get("user_session").unwrap();
                let admin = sessions.get("admin_session").unwrap();
                let n = user.get::<u32>("n").unwrap_or(0) + 1;
                user.put("n", &n).unwrap();
                admin.put("role", "root").unwrap();
                format!("{n}")
            }),
        )
        .route("/single", get(|_s: Session| async { "unreachable" }))
        .layer(user.layer())
        .layer(admin.layer());
    let c = Client::new(serve(app).await);
    let r = c.get("/", None).await;
    let (tu, ta) = (
        r.cookie("user_session").unwrap(),
        r.cookie("admin_session").unwrap(),
    );
    assert_ne!(tu, ta);
    let r = c
        .get("/", Some(&format!("user_session={tu}; admin_session={ta}")))
        .await;
    assert_eq!(r.body, "2");
    assert_eq!(a.keys().await.len(), 1);
    assert_eq!(b.keys().await.len(), 1);
    // Asking for one Session with two managers is a clear error, not a guess.
    let r = c.get("/single", None).await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("several session managers"), "{}", r.body);
}

#[tokio::test]
async fn header_transport() {
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .token_transport(TokenTransport::Header("X-Session-Token".into()))
        .build()
        .unwrap();
    let c = start(manager).await;
    let r = c.get("/put/a/b", None).await;
    assert!(
        r.set_cookies().is_empty(),
        "no cookie with header transport"
    );
    let token = r.header_all("x-session-token").pop().unwrap();
    assert!(scs::token::is_valid(&token));
    assert_eq!(r.header_all("vary"), ["X-Session-Token"]);
    let r = c
        .send(
            c.http
                .get(format!("{}/get/a", c.base))
                .header("x-session-token", &token),
        )
        .await;
    assert_eq!(r.body, "b");
    assert!(
        r.header_all("x-session-token").is_empty(),
        "unmodified: no token header"
    );
    let r = c
        .send(
            c.http
                .get(format!("{}/destroy", c.base))
                .header("x-session-token", &token),
        )
        .await;
    assert_eq!(r.header_all("x-session-token"), [""]);
    // A cookie is ignored with header-only transport.
    let r = c.get("/get/a", Some(&cookie_pair(&token))).await;
    assert_eq!(r.body, "<none>");
}

#[tokio::test]
async fn token_hashing_on_and_off() {
    for hash in [true, false] {
        let store = Probe::new();
        let manager = SessionManager::builder(store.clone())
            .hash_token_in_store(hash)
            .build()
            .unwrap();
        let c = start(manager).await;
        let token = c.get("/put/a/b", None).await.cookie("session").unwrap();
        let keys = store.keys().await;
        if hash {
            assert!(!keys.contains(&token), "the raw token is in the store");
            assert_eq!(keys, [scs::token::store_key(&token, true)]);
        } else {
            assert_eq!(keys, std::slice::from_ref(&token));
        }
        assert_eq!(c.get("/get/a", Some(&cookie_pair(&token))).await.body, "b");
    }
}
