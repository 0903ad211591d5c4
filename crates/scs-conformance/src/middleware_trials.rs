//! The middleware tier: the real `LoadAndSave` layer over the store under test.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use scs::{SessionManager, SessionManagerBuilder};
use scs_core::time::OffsetDateTime;
use scs_core::{Context, CtxStore, token};
use tower::{Layer, ServiceExt};

use crate::counting::CountingStore;
use crate::{Needs, TrialCtx, TrialDef};

macro_rules! trials {
    ($($name:ident: $needs:ident,)*) => {
        /// Every middleware-tier trial, in order.
        pub(crate) fn all() -> Vec<TrialDef> {
            vec![$(TrialDef::new(concat!("middleware_", stringify!($name)), Needs::$needs, |t| Box::pin($name(t))),)*]
        }
    };
}

trials! {
    put_then_get: Nothing,
    token_is_stable_across_modifications: Nothing,
    unmodified_request_writes_nothing: Nothing,
    malformed_tokens_never_reach_the_store: Nothing,
    unknown_token_is_never_adopted: Nothing,
    renew_token_moves_the_data: Nothing,
    destroy_deletes_and_expires_the_cookie: Nothing,
    lifetime_ends_the_session: Nothing,
    idle_timeout_slides_and_expires: Nothing,
    remember_me_persists_the_cookie: Nothing,
    corrupt_stored_data_goes_to_the_error_handler: Nothing,
    token_hashing_off: Nothing,
    concurrent_sessions_stay_apart: Nothing,
    large_session_round_trips: Nothing,
    iterate_sees_committed_sessions: Iterate,
    concurrent_requests_lose_no_update: Versioned,
    concurrent_writes_to_one_key_keep_one_whole_value: Versioned,
    renewed_token_forwards_in_flight_requests_during_the_grace: Nothing,
    sign_out_everywhere_keeps_only_the_current_session: Versioned,
    encrypted_codec_keeps_no_plaintext_in_the_store: Nothing,
    idle_touch_is_throttled: VersionedTouch,
}

// ---------------------------------------------------------------------------------------
// A tiny app: the path says what the handler does with the session.
//   /put/<key>/<value>  /get/<key>  /noop  /destroy  /renew  /remember/<0|1>  /incr

pub(crate) struct App {
    manager: SessionManager,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) set_cookie: Vec<String>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn token(&self) -> Option<String> {
        self.set_cookie.iter().find_map(|c| {
            let first = c.split(';').next()?;
            first.strip_prefix("session=").map(str::to_owned)
        })
    }
}

async fn handle(
    manager: SessionManager,
    req: Request<()>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = match manager.session(&req).await {
        Ok(session) => session,
        Err(rejection) => return Ok(rejection.response().map(Full::from)),
    };
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match parts.as_slice() {
        ["put", k, v] => session
            .put(k, v)
            .map(|()| "ok".to_owned())
            .unwrap_or_else(|e| e.to_string()),
        ["put_big", k, n] => {
            let n: usize = n.parse().unwrap_or(0);
            session
                .put_bytes(k, &vec![0xA5; n])
                .map(|()| "ok".to_owned())
                .unwrap_or_else(|e| e.to_string())
        }
        ["get", k] => session.get_string(k).unwrap_or_else(|| "<none>".into()),
        ["len", k] => session
            .get_bytes(k)
            .map_or("<none>".into(), |b| b.len().to_string()),
        ["incr"] => {
            let n = session.get_i64("n").unwrap_or(0) + 1;
            session
                .put("n", &n)
                .map(|()| n.to_string())
                .unwrap_or_else(|e| e.to_string())
        }
        ["destroy"] => session
            .destroy()
            .await
            .map(|()| "destroyed".to_owned())
            .unwrap_or_else(|e| e.to_string()),
        ["renew"] => session
            .renew_token()
            .await
            .map(|()| "renewed".to_owned())
            .unwrap_or_else(|e| e.to_string()),
        ["login", user] => match session
            .renew_token()
            .await
            .and_then(|()| session.set_user(user))
        {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
        ["remember", on] => {
            session.remember_me(*on == "1");
            "ok".to_owned()
        }
        _ => "noop".to_owned(),
    };
    Ok(Response::new(Full::from(body)))
}

impl App {
    pub(crate) fn new(manager: SessionManager) -> Self {
        Self { manager }
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Reply> {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::COOKIE, format!("session={t}"));
        }
        let req = req.body(()).context("building a request")?;
        let manager = self.manager.clone();
        let svc = self
            .manager
            .layer()
            .layer(tower::service_fn(move |req| handle(manager.clone(), req)));
        let res = svc.oneshot(req).await.context("calling the layer")?;
        let status = res.status().as_u16();
        let set_cookie = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let body = res
            .into_body()
            .collect()
            .await
            .context("reading the body")?
            .to_bytes();
        Ok(Reply {
            status,
            set_cookie,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

async fn counted(t: &TrialCtx) -> anyhow::Result<(Arc<dyn CtxStore>, CountingStore)> {
    let o = t.open().await?;
    let counting = CountingStore::from_arc(o.store.clone());
    Ok((o.store, counting))
}

pub(crate) fn builder(store: CountingStore) -> SessionManagerBuilder {
    // The error in the body, so that a failing trial says what went wrong.
    SessionManager::builder(store).error_handler(|e| {
        let mut res = http::Response::new(Bytes::from(format!("{e:#}")));
        *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        res
    })
}

pub(crate) async fn new_session(app: &App, key: &str, value: &str) -> anyhow::Result<String> {
    let r = app.get(&format!("/put/{key}/{value}"), None).await?;
    ensure!(r.status == 200, "put answered {}: {}", r.status, r.body);
    r.token().context("no session cookie after a put")
}

pub(crate) async fn expect_value(
    app: &App,
    token: &str,
    key: &str,
    want: &str,
) -> anyhow::Result<()> {
    let r = app.get(&format!("/get/{key}"), Some(token)).await?;
    ensure!(r.status == 200, "get answered {}: {}", r.status, r.body);
    ensure!(
        r.body == want,
        "get {key} gave {:?}, expected {want:?}",
        r.body
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------

async fn put_then_get(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let token = new_session(&app, "message", "hello").await?;
    ensure!(
        token::is_valid(&token),
        "the cookie token {token:?} is not a 43-character token"
    );
    expect_value(&app, &token, "message", "hello").await
}

async fn token_is_stable_across_modifications(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let token = new_session(&app, "a", "1").await?;
    for i in 0..3 {
        let r = app.get(&format!("/put/k{i}/v"), Some(&token)).await?;
        ensure!(
            r.token().as_deref() == Some(token.as_str()),
            "the token changed on modification {i}"
        );
    }
    expect_value(&app, &token, "k2", "v").await
}

async fn unmodified_request_writes_nothing(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let counts = store.clone();
    let app = App::new(builder(store).build()?);
    let r = app.get("/noop", None).await?;
    ensure!(
        r.set_cookie.is_empty() && counts.counts().calls() == 0,
        "a new visitor who changed nothing touched the store or got a cookie"
    );
    let token = new_session(&app, "a", "1").await?;
    let writes = counts.counts().writes();
    let r = app.get("/get/a", Some(&token)).await?;
    ensure!(r.body == "1", "read gave {:?}", r.body);
    ensure!(
        r.set_cookie.is_empty(),
        "an unmodified request got a cookie"
    );
    ensure!(
        counts.counts().writes() == writes,
        "an unmodified request wrote to the store"
    );
    Ok(())
}

async fn malformed_tokens_never_reach_the_store(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let counts = store.clone();
    let app = App::new(builder(store).build()?);
    let long = "A".repeat(5000);
    for bad in [
        "",
        "short",
        "../../etc/passwd",
        "'; DROP TABLE sessions; --",
        &long,
        &"+".repeat(43),
        &"a".repeat(44),
    ] {
        let r = app.get("/noop", Some(bad)).await?;
        ensure!(r.status == 200, "a malformed token gave {}", r.status);
    }
    ensure!(
        counts.counts().calls() == 0,
        "a malformed token reached the store"
    );
    Ok(())
}

async fn unknown_token_is_never_adopted(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let chosen = token::generate();
    let r = app.get("/put/a/1", Some(&chosen)).await?;
    let minted = r.token().context("no cookie")?;
    ensure!(
        minted != chosen,
        "the client's unknown token was adopted (session fixation)"
    );
    Ok(())
}

async fn renew_token_moves_the_data(t: &TrialCtx) -> anyhow::Result<()> {
    let (raw, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let old = new_session(&app, "user", "ada").await?;
    let r = app.get("/renew", Some(&old)).await?;
    let new = r.token().context("no cookie after renew")?;
    ensure!(new != old, "renew_token kept the token");
    expect_value(&app, &new, "user", "ada").await?;
    expect_value(&app, &old, "user", "<none>").await?;
    let old_key = token::store_key(&old, true);
    ensure!(
        raw.find_ctx(&Context::new(), &old_key).await?.is_none(),
        "the old token is still in the store"
    );
    Ok(())
}

async fn destroy_deletes_and_expires_the_cookie(t: &TrialCtx) -> anyhow::Result<()> {
    let (raw, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let token = new_session(&app, "a", "1").await?;
    let r = app.get("/destroy", Some(&token)).await?;
    ensure!(
        r.set_cookie
            == [
                "session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
            ],
        "deletion cookie was {:?}",
        r.set_cookie
    );
    let key = token::store_key(&token, true);
    ensure!(
        raw.find_ctx(&Context::new(), &key).await?.is_none(),
        "destroy left the session in the store"
    );
    expect_value(&app, &token, "a", "<none>").await
}

async fn lifetime_ends_the_session(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let lifetime = t.short_ttl() + Duration::from_millis(1000);
    let app = App::new(builder(store).lifetime(lifetime).build()?);
    let token = new_session(&app, "a", "1").await?;
    expect_value(&app, &token, "a", "1").await?;
    let r = app.get("/put/b/2", Some(&token)).await?;
    ensure!(r.status == 200, "put answered {}", r.status);
    tokio::time::sleep(t.after(lifetime)).await;
    expect_value(&app, &token, "a", "<none>").await
}

async fn idle_timeout_slides_and_expires(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    // Requests every quarter of the idle timeout: the rest is room for slow round trips.
    let idle = (t.short_ttl() * 2).max(Duration::from_secs(2));
    let app = App::new(builder(store).idle_timeout(idle).build()?);
    let token = new_session(&app, "a", "1").await?;
    for _ in 0..3 {
        tokio::time::sleep(idle / 4).await;
        let r = app.get("/get/a", Some(&token)).await?;
        ensure!(r.body == "1", "the session ended within its idle timeout");
        ensure!(
            r.token().as_deref() == Some(token.as_str()),
            "the slid expiry was not re-sent in the cookie"
        );
    }
    tokio::time::sleep(t.after(idle)).await;
    expect_value(&app, &token, "a", "<none>").await
}

async fn remember_me_persists_the_cookie(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(builder(store).cookie_persist(false).build()?);
    let r = app.get("/put/a/1", None).await?;
    let token = r.token().context("no cookie")?;
    ensure!(
        !r.set_cookie[0].contains("Max-Age"),
        "persist off still sent Max-Age"
    );
    let r = app.get("/remember/1", Some(&token)).await?;
    ensure!(
        r.set_cookie
            .first()
            .is_some_and(|c| c.contains("; Expires=") && c.contains("; Max-Age=")),
        "remember-me did not persist the cookie: {:?}",
        r.set_cookie
    );
    let r = app.get("/put/b/2", Some(&token)).await?;
    ensure!(
        r.set_cookie
            .first()
            .is_some_and(|c| c.contains("; Max-Age=")),
        "remember-me was not kept in the store"
    );
    Ok(())
}

async fn corrupt_stored_data_goes_to_the_error_handler(t: &TrialCtx) -> anyhow::Result<()> {
    let (raw, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let good = new_session(&app, "a", "good").await?;
    let bad = new_session(&app, "a", "bad").await?;
    let far = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    raw.commit_ctx(
        &Context::new(),
        &token::store_key(&bad, true),
        b"\xc1\x00 not a session",
        far,
    )
    .await?;
    let r = app.get("/get/a", Some(&bad)).await?;
    ensure!(
        r.status == 500,
        "corrupt data answered {} {:?}, not the error handler's 500",
        r.status,
        r.body
    );
    expect_value(&app, &good, "a", "good").await
}

async fn token_hashing_off(t: &TrialCtx) -> anyhow::Result<()> {
    let (raw, store) = counted(t).await?;
    let app = App::new(builder(store).hash_token_in_store(false).build()?);
    let token = new_session(&app, "a", "1").await?;
    ensure!(
        raw.find_ctx(&Context::new(), &token).await?.is_some(),
        "with hashing off the raw token is the key"
    );
    expect_value(&app, &token, "a", "1").await
}

async fn concurrent_sessions_stay_apart(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = Arc::new(App::new(builder(store).build()?));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..20 {
        let app = app.clone();
        tasks.spawn(async move {
            let token = new_session(&app, "client", &client.to_string()).await?;
            for _ in 0..5 {
                app.get("/incr", Some(&token)).await?;
            }
            expect_value(&app, &token, "client", &client.to_string()).await?;
            let r = app.get("/incr", Some(&token)).await?;
            ensure!(r.body == "6", "client {client} counted {}", r.body);
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a client task panicked")??;
    }
    Ok(())
}

async fn large_session_round_trips(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(builder(store).build()?);
    let r = app.get("/put_big/blob/524288", None).await?;
    let token = r.token().context("no cookie after a large put")?;
    let r = app.get("/len/blob", Some(&token)).await?;
    ensure!(
        r.body == "524288",
        "a 512 KiB value came back as {:?}",
        r.body
    );
    Ok(())
}

async fn iterate_sees_committed_sessions(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let manager = builder(store).build()?;
    let app = App::new(manager.clone());
    for i in 0..5 {
        new_session(&app, "i", &i.to_string()).await?;
    }
    let mut seen = Vec::new();
    manager
        .iterate(|s| {
            seen.push(s.get_string("i").unwrap_or_default());
            async { Ok(()) }
        })
        .await?;
    seen.sort();
    if seen != ["0", "1", "2", "3", "4"] {
        bail!("iterate saw {seen:?}");
    }
    Ok(())
}

async fn concurrent_requests_lose_no_update(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = Arc::new(App::new(builder(store).build()?));
    let token = new_session(&app, "base", "0").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move { app.get(&format!("/put/k{i}/v{i}"), Some(&token)).await });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.context("a request task panicked")??;
        if r.status != 200 {
            failed += 1;
        }
    }
    ensure!(failed == 0, "{failed} of 50 concurrent requests failed");
    let mut lost = Vec::new();
    for i in 0..50 {
        let r = app.get(&format!("/get/k{i}"), Some(&token)).await?;
        if r.body != format!("v{i}") {
            lost.push(i);
        }
    }
    ensure!(
        lost.is_empty(),
        "{} of 50 concurrent updates were lost: {lost:?}",
        lost.len()
    );
    expect_value(&app, &token, "base", "0").await
}

async fn concurrent_writes_to_one_key_keep_one_whole_value(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = Arc::new(App::new(builder(store).build()?));
    let token = new_session(&app, "k", "start").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move {
            app.get(
                &format!("/put/k/{}", format!("value{i}-").repeat(50)),
                Some(&token),
            )
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        let r = r.context("a request task panicked")??;
        ensure!(
            r.status == 200,
            "a concurrent write failed with {}",
            r.status
        );
    }
    let r = app.get("/get/k", Some(&token)).await?;
    let whole = (0..20).any(|i| r.body == format!("value{i}-").repeat(50));
    ensure!(
        whole,
        "the key holds {:?}, none of the values written",
        r.body
    );
    Ok(())
}

async fn renewed_token_forwards_in_flight_requests_during_the_grace(
    t: &TrialCtx,
) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let app = App::new(
        builder(store)
            .renew_grace(Duration::from_secs(30))
            .build()?,
    );
    let old = new_session(&app, "user", "ada").await?;
    let new = app
        .get("/renew", Some(&old))
        .await?
        .token()
        .context("no cookie after renew")?;
    ensure!(new != old, "renew kept the token");
    // In flight with the old token: reads and writes reach the renewed session.
    expect_value(&app, &old, "user", "ada").await?;
    let r = app.get("/put/cart/3", Some(&old)).await?;
    ensure!(
        r.status == 200,
        "a write with the old token answered {}: {}",
        r.status,
        r.body
    );
    ensure!(
        r.set_cookie.is_empty(),
        "the old token's response set a cookie: {:?}",
        r.set_cookie
    );
    expect_value(&app, &new, "cart", "3").await
}

async fn sign_out_everywhere_keeps_only_the_current_session(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let manager = builder(store).build()?;
    let app = App::new(manager.clone());
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let r = app.get("/login/ada", None).await?;
        ensure!(r.status == 200, "login answered {}: {}", r.status, r.body);
        tokens.push(r.token().context("no cookie after login")?);
    }
    let bob = app
        .get("/login/bob", None)
        .await?
        .token()
        .context("no cookie")?;
    let listed = manager.user_sessions("ada").await?;
    ensure!(
        listed.len() == 3,
        "user_sessions listed {} sessions, expected 3",
        listed.len()
    );
    let current = manager.load(Some(&tokens[0])).await?;
    let revoked = manager.revoke_user("ada", Some(&current)).await?;
    ensure!(revoked == 2, "revoke_user revoked {revoked}, expected 2");
    for t in &tokens[1..] {
        ensure!(
            manager.load(Some(t)).await?.user().is_none(),
            "a revoked session still loads"
        );
    }
    ensure!(
        manager.load(Some(&tokens[0])).await?.user().as_deref() == Some("ada"),
        "the kept session is gone"
    );
    ensure!(
        manager.load(Some(&bob)).await?.user().as_deref() == Some("bob"),
        "another user was signed out"
    );
    Ok(())
}

async fn encrypted_codec_keeps_no_plaintext_in_the_store(t: &TrialCtx) -> anyhow::Result<()> {
    let (raw, store) = counted(t).await?;
    let app = App::new(
        builder(store)
            .codec(scs::AeadCodec::new(1, [7; 32]))
            .build()?,
    );
    let token = new_session(&app, "secret", "plaintext-marker-4111").await?;
    let bytes = raw
        .find_ctx(&Context::new(), &token::store_key(&token, true))
        .await?
        .context("nothing stored")?;
    ensure!(
        !bytes.windows(21).any(|w| w == b"plaintext-marker-4111"),
        "the value is readable in the store"
    );
    expect_value(&app, &token, "secret", "plaintext-marker-4111").await
}

async fn idle_touch_is_throttled(t: &TrialCtx) -> anyhow::Result<()> {
    let (_, store) = counted(t).await?;
    let counts = store.clone();
    let app = App::new(
        builder(store)
            .idle_timeout(Duration::from_secs(600))
            .touch_interval(Duration::from_secs(60))
            .build()?,
    );
    let token = new_session(&app, "a", "1").await?;
    let writes = counts.counts().writes();
    for _ in 0..10 {
        let r = app.get("/get/a", Some(&token)).await?;
        ensure!(r.body == "1", "read gave {:?}", r.body);
        ensure!(
            r.set_cookie.is_empty(),
            "a read within the touch interval re-sent the cookie"
        );
    }
    ensure!(
        counts.counts().writes() == writes,
        "{} store writes for 10 reads within the touch interval",
        counts.counts().writes() - writes
    );
    Ok(())
}
