//! Bad input through real HTTP (axum on a loopback port): oversized and numerous cookies,
//! duplicate session cookies, non-UTF-8 header bytes, tokens of the right length but the
//! wrong shape, a session over the size limit, and garbage stored under a live token. Then
//! what must never show up in `Debug` or the logs: tokens and session values.
//!
//! Where the client library would refuse to send the input (bytes that are not UTF-8, a
//! hundred `Cookie` lines), it goes over a raw TCP socket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use common::{Client, Probe, serve};
use scs::time::OffsetDateTime;
use scs::{ErrorKind, JsonCodec, Session, SessionManager, Store, TokenTransport, token};

/// The error handler of these tests: the kind in the body, 413 for a session over the size
/// limit, 500 for the rest, and a count of its calls.
fn manager(store: Probe, calls: Arc<AtomicUsize>) -> scs::SessionManagerBuilder {
    SessionManager::builder(store).error_handler(move |err| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut res = http::Response::new(Bytes::from(format!("error: {}", err.kind())));
        *res.status_mut() = if err.kind() == ErrorKind::TooLarge {
            http::StatusCode::PAYLOAD_TOO_LARGE
        } else {
            http::StatusCode::INTERNAL_SERVER_ERROR
        };
        res
    })
}

/// Handlers, each counting its calls in `ran`.
fn routes(ran: Arc<AtomicUsize>) -> Router {
    let count = move || {
        ran.fetch_add(1, Ordering::SeqCst);
    };
    let (c1, c2, c3, c4) = (count.clone(), count.clone(), count.clone(), count);
    Router::new()
        .route(
            "/put/{key}/{value}",
            get(
                move |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    c1();
                    s.put(&k, &v).unwrap();
                    "ok"
                },
            ),
        )
        .route(
            "/get/{key}",
            get(move |s: Session, Path(k): Path<String>| async move {
                c2();
                s.get_string(&k).unwrap_or_else(|| "<none>".into())
            }),
        )
        .route(
            "/big/{bytes}",
            get(move |s: Session, Path(n): Path<usize>| async move {
                c3();
                s.put("big", &"x".repeat(n)).unwrap();
                "ok"
            }),
        )
        .route(
            "/debug",
            get(move |s: Session| async move {
                c4();
                format!("{s:?} {:?}", s.manager())
            }),
        )
}

struct App {
    client: Client,
    store: Probe,
    /// Error handler calls.
    errors: Arc<AtomicUsize>,
    /// Handler calls.
    ran: Arc<AtomicUsize>,
}

impl App {
    async fn start(
        configure: impl FnOnce(scs::SessionManagerBuilder) -> scs::SessionManagerBuilder,
    ) -> Self {
        let store = Probe::new();
        let errors = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let manager = configure(manager(store.clone(), errors.clone()))
            .build()
            .unwrap();
        let client = Client::new(serve(routes(ran.clone()).layer(manager.layer())).await);
        Self {
            client,
            store,
            errors,
            ran,
        }
    }

    async fn default() -> Self {
        Self::start(|b| b).await
    }

    /// A live session holding `key = value`; returns its token.
    async fn live(&self, key: &str, value: &str) -> String {
        let r = self.client.get(&format!("/put/{key}/{value}"), None).await;
        assert_eq!(r.status, 200);
        r.cookie("session").unwrap()
    }

    fn errors(&self) -> usize {
        self.errors.load(Ordering::SeqCst)
    }

    fn ran(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }

    /// The bytes stored for `token`.
    async fn stored(&self, token: &str) -> Option<Vec<u8>> {
        self.store
            .mem()
            .find(&token::store_key(token, true))
            .await
            .unwrap()
    }
}

/// What came back over a raw socket.
struct Raw {
    /// None when the server closed the connection without an answer.
    status: Option<u16>,
    head: String,
    body: String,
}

/// Sends `GET path` with `headers` (raw lines, each without CRLF) over a fresh TCP
/// connection and reads the answer to the end (`Connection: close`).
async fn raw(base: &str, path: &str, headers: &[&[u8]]) -> Raw {
    let addr = base.strip_prefix("http://").unwrap().to_owned();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    for h in headers {
        req.extend_from_slice(h);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    // A blocking socket on the blocking pool: the server keeps running on the test's
    // runtime meanwhile.
    let buf = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        // Bounded only so that a hang fails the test instead of stalling it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The server may answer and close before it has read everything: not an error.
        let _ = stream.write_all(&req);
        let mut buf = Vec::new();
        match stream.read_to_end(&mut buf) {
            Ok(_) => {}
            // Closed with unread input: a reset after (or instead of) the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
        buf
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Oversized and numerous cookies

#[tokio::test]
async fn a_64_kib_cookie_header_is_read_and_its_junk_never_reaches_the_store() {
    let app = App::default().await;
    let token = app.live("a", "kept").await;
    let (finds, writes) = (app.store.finds(), app.store.writes());
    // 64 KiB of junk, a 64 KiB session cookie that is no token, then the real one: hyper
    // takes the header (its limit is far above), the layer skips the junk.
    let junk = "x".repeat(64 * 1024);
    let cookie = format!("junk={junk}; session={junk}; session={token}");
    let r = app.client.get("/get/a", Some(&cookie)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "kept");
    assert_eq!(
        app.store.finds(),
        finds + 1,
        "one lookup, for the real token"
    );
    // Junk alone: a fresh session, no store call at all.
    let r = app
        .client
        .get("/get/a", Some(&format!("session={junk}")))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "<none>"));
    assert_eq!(app.store.finds(), finds + 1);
    assert_eq!(app.store.writes(), writes);
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn a_header_block_over_hypers_limit_is_refused_cleanly_without_a_store_call() {
    let app = App::default().await;
    // 1 MiB: over hyper's default read buffer (~400 KiB). hyper answers
    // 431 Request Header Fields Too Large and closes; the layer never runs.
    let cookie = format!("Cookie: session={}", "y".repeat(1024 * 1024));
    let r = raw(&app.client.base, "/get/a", &[cookie.as_bytes()]).await;
    assert_eq!(r.status, Some(431), "{}", r.head);
    assert_eq!(app.ran(), 0);
    assert_eq!(app.store.calls(), 0);
    assert_eq!(app.errors(), 0);
}

#[tokio::test]
async fn thousands_of_cookies_in_one_header() {
    let app = App::default().await;
    let token = app.live("a", "found").await;
    let finds = app.store.finds();
    let mut pairs: Vec<String> = (0..5_000).map(|i| format!("c{i}=v{i}")).collect();
    // Two thousand session cookies that are not tokens before the real one.
    for i in 0..2_000 {
        pairs.insert(i * 2, format!("session=bad{i}"));
    }
    pairs.push(format!("session={token}"));
    let cookie = pairs.join("; ");
    assert!(cookie.len() > 64 * 1024);
    let r = app.client.get("/get/a", Some(&cookie)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "found"));
    assert_eq!(
        app.store.finds(),
        finds + 1,
        "only the one token was looked up"
    );
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn more_cookie_lines_than_hyper_takes_are_refused_cleanly() {
    let app = App::default().await;
    let token = app.live("a", "b").await;
    let calls = app.store.calls();
    // hyper parses at most 100 header lines by default: 1000 Cookie lines are refused
    // with 431 before the layer runs.
    let lines: Vec<Vec<u8>> = (0..1_000)
        .map(|i| format!("Cookie: c{i}=v; session={token}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let r = raw(&app.client.base, "/get/a", &refs).await;
    assert_eq!(r.status, Some(431), "{}", r.head);
    assert_eq!(app.store.calls(), calls);
    // Fifty lines are fine: the first line holding a well-formed token wins.
    let r = raw(&app.client.base, "/get/a", &refs[..50]).await;
    assert_eq!((r.status, r.body.as_str()), (Some(200), "b"));
    assert_eq!(app.store.calls(), calls + 1);
}

// ---------------------------------------------------------------------------------------
// Duplicates and the token's shape

#[tokio::test]
async fn duplicate_session_cookies_first_well_formed_token_wins() {
    let app = App::default().await;
    let a = app.live("k", "from_a").await;
    let b = app.live("k", "from_b").await;
    let get = |cookie: String| {
        let c = &app.client;
        async move { c.get("/get/k", Some(&cookie)).await.body }
    };
    assert_eq!(get(format!("session={a}; session={b}")).await, "from_a");
    assert_eq!(get(format!("session={b}; session={a}")).await, "from_b");
    // Malformed values are skipped, not counted as "the first".
    assert_eq!(
        get(format!("session=junk; session=; session={b}")).await,
        "from_b"
    );
    // A well-formed token the store does not know still wins, and gives a fresh session:
    // the next cookie is not tried (one lookup per request, whatever the client sends).
    let unknown = token::generate();
    let finds = app.store.finds();
    assert_eq!(
        get(format!("session={unknown}; session={a}")).await,
        "<none>"
    );
    assert_eq!(app.store.finds(), finds + 1);
    // Across two Cookie header lines: the first line's token wins.
    let r = app
        .client
        .send(
            app.client
                .http
                .get(format!("{}/get/k", app.client.base))
                .header("cookie", format!("session={b}"))
                .header("cookie", format!("session={a}")),
        )
        .await;
    assert_eq!(r.body, "from_b");
    // Nothing was written by any of this.
    assert_eq!(app.store.writes(), 2);
}

#[tokio::test]
async fn non_utf8_header_bytes() {
    let app =
        App::start(|b| b.token_transport(TokenTransport::Both("x-session-token".into()))).await;
    let token = app.live("a", "b").await;
    let calls = app.store.calls();
    let with_token = |prefix: &[u8]| [prefix, token.as_bytes()].concat();
    // A Cookie line with a byte that is not UTF-8 anywhere in it is skipped whole, even
    // when it also holds a valid token: a fresh session, no store call.
    let bad = with_token(b"Cookie: x=\xff\xfe; session=");
    let r = raw(&app.client.base, "/get/a", &[&bad]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (Some(200), "<none>"),
        "{}",
        r.head
    );
    assert!(!r.head.to_ascii_lowercase().contains("set-cookie"));
    assert_eq!(app.store.calls(), calls);
    // The same in the token header.
    let bad_header = [b"X-Session-Token: \xc3\x28".as_slice(), token.as_bytes()].concat();
    let r = raw(&app.client.base, "/get/a", &[&bad_header]).await;
    assert_eq!((r.status, r.body.as_str()), (Some(200), "<none>"));
    assert_eq!(app.store.calls(), calls);
    // A later, clean Cookie line is still read.
    let good = with_token(b"Cookie: session=");
    let r = raw(&app.client.base, "/get/a", &[&bad, &good]).await;
    assert_eq!((r.status, r.body.as_str()), (Some(200), "b"));
    assert_eq!(app.store.calls(), calls + 1);
    // Bytes no header may hold (NUL, a bare CR): hyper refuses the request with 400.
    for ctl in [&b"Cookie: session=\x00"[..], b"Cookie: a=\rb"] {
        let r = raw(&app.client.base, "/get/a", &[ctl]).await;
        assert_eq!(r.status, Some(400), "{:?}: {}", ctl, r.head);
    }
    assert_eq!(app.store.calls(), calls + 1);
    assert_eq!(app.errors(), 0);
}

#[tokio::test]
async fn a_43_character_token_that_is_not_base64url_never_reaches_the_store() {
    let app = App::default().await;
    let token = app.live("a", "secret").await;
    let calls = app.store.calls();
    let mut cases: Vec<String> = ["+", "/", ".", "=", "%", "~", "!", "*"]
        .iter()
        .map(|c| format!("{c}{}", &token[1..]))
        .collect();
    cases.push(format!("{}==", &token[..41]));
    cases.push("-".repeat(42) + "=");
    // 43 characters but 44 bytes: a two-byte character.
    cases.push(format!("{}é", &token[..42]));
    // The same 32 bytes in a non-canonical spelling: the last character of a token
    // carries 4 data bits and 2 bits that must be zero. Flipping those gives a string
    // that lenient decoders map to the live session's bytes; it must not load it.
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = ALPHABET.find(&token[42..]).unwrap();
    assert_eq!(last % 4, 0);
    for low in 1..4 {
        let c = &ALPHABET[last + low..=last + low];
        cases.push(format!("{}{c}", &token[..42]));
    }
    for case in &cases {
        assert_eq!(case.chars().count(), 43, "{case}");
        assert!(!token::is_valid(case), "{case}");
        let r = app
            .client
            .get("/get/a", Some(&format!("session={case}")))
            .await;
        assert_eq!((r.status, r.body.as_str()), (200, "<none>"), "{case}");
        assert!(r.set_cookies().is_empty());
    }
    assert_eq!(
        app.store.calls(),
        calls,
        "a malformed token reached the store"
    );
    // The real one still works.
    let r = app
        .client
        .get("/get/a", Some(&format!("session={token}")))
        .await;
    assert_eq!(r.body, "secret");
}

// ---------------------------------------------------------------------------------------
// Size limit and garbage in the store

#[tokio::test]
async fn a_session_over_max_session_bytes_is_a_clear_error_and_nothing_is_stored() {
    let app = App::start(|b| b.max_session_bytes(1024)).await;
    // A new session: the error handler answers, no cookie, no store write at all.
    let r = app.client.get("/big/2000", None).await;
    assert_eq!((r.status, r.body.as_str()), (413, "error: too_large"));
    assert!(r.set_cookies().is_empty(), "a cookie for data not stored");
    assert!(r.header_all("cache-control").is_empty());
    assert_eq!(app.store.writes(), 0);
    assert!(app.store.keys().await.is_empty());
    // A live session that grows over the limit keeps what it had.
    let token = app.live("a", "before").await;
    let before = app.stored(&token).await.unwrap();
    let writes = app.store.writes();
    let cookie = format!("session={token}");
    let r = app.client.get("/big/5000", Some(&cookie)).await;
    assert_eq!(r.status, 413);
    assert!(r.set_cookies().is_empty());
    assert_eq!(app.store.writes(), writes);
    assert_eq!(app.stored(&token).await.unwrap(), before);
    assert_eq!(app.client.get("/get/a", Some(&cookie)).await.body, "before");
    // Just under the limit is fine.
    let r = app.client.get("/big/900", Some(&cookie)).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.errors(), 2);
}

#[tokio::test]
async fn garbage_under_a_live_token_goes_to_the_error_handler_and_touches_nothing_else() {
    let app = App::default().await;
    let others: Vec<(String, String)> = {
        let mut v = Vec::new();
        for i in 0..5 {
            let value = format!("other{i}");
            v.push((app.live("k", &value).await, value));
        }
        v
    };
    let victim = app.live("k", "victim").await;
    let valid = app.stored(&victim).await.unwrap();
    let far = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xc1\xff garbage".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        // Well-formed MessagePack of the wrong shape: a string, a map, a 3-array.
        b"\xa5hello".to_vec(),
        b"\x81\xa1k\xa1v".to_vec(),
        b"\x93\x00\x80\x00".to_vec(),
        // JSON under the MessagePack codec.
        br#"[0,{"k":"v"}]"#.to_vec(),
        // A deadline of the wrong type.
        b"\x92\xa1x\x80".to_vec(),
        vec![0xff; 4096],
    ];
    let snapshot: Vec<Vec<u8>> = {
        let mut v = Vec::new();
        for (t, _) in &others {
            v.push(app.stored(t).await.unwrap());
        }
        v
    };
    let ran = app.ran();
    for (i, g) in garbage.iter().enumerate() {
        let key = token::store_key(&victim, true);
        app.store.mem().commit(&key, g, far).await.unwrap();
        let writes = app.store.writes();
        let r = app
            .client
            .get("/put/k/overwritten", Some(&format!("session={victim}")))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "error: codec"),
            "garbage #{i}"
        );
        assert!(r.set_cookies().is_empty(), "garbage #{i}");
        assert_eq!(app.ran(), ran, "the handler ran on undecodable data");
        assert_eq!(app.store.writes(), writes, "garbage #{i} was overwritten");
        assert_eq!(app.stored(&victim).await.as_deref(), Some(g.as_slice()));
    }
    assert_eq!(app.errors(), garbage.len());
    // No other session was touched, in the store or over HTTP.
    for ((t, value), bytes) in others.iter().zip(&snapshot) {
        assert_eq!(app.stored(t).await.as_ref(), Some(bytes));
        let r = app
            .client
            .get("/get/k", Some(&format!("session={t}")))
            .await;
        assert_eq!((r.status, &r.body), (200, value));
    }
}

// ---------------------------------------------------------------------------------------
// Tokens and values never in Debug or the logs

/// Every field of every event and span, as text.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Fields(&mut self.0.lock().unwrap()));
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut out = self.0.lock().unwrap();
        out.push_str(event.metadata().target());
        out.push(' ');
        event.record(&mut Fields(&mut out));
        out.push('\n');
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn debug_output_never_shows_a_token_or_a_value() {
    let app = App::default().await;
    let token = app.live("user", "value-d3b07384").await;
    let r = app
        .client
        .get("/debug", Some(&format!("session={token}")))
        .await;
    assert!(r.body.starts_with("Session {"), "{}", r.body);
    assert!(r.body.contains("SessionManager {"), "{}", r.body);
    assert!(!r.body.contains(&token), "a token in Debug: {}", r.body);
    assert!(!r.body.contains(&token::store_key(&token, true)));
    assert!(
        !r.body.contains("value-d3b07384"),
        "a value in Debug: {}",
        r.body
    );
    assert!(!r.body.contains("\"user\""), "a key in Debug: {}", r.body);

    // And without the layer: a loaded session, its data, the manager.
    let manager = SessionManager::new(app.store.clone());
    let s = manager.load(Some(&token)).await.unwrap();
    assert_eq!(s.get_string("user").as_deref(), Some("value-d3b07384"));
    let all = format!("{s:?} {manager:?} {:?}", s.manager());
    assert!(!all.contains(&token), "{all}");
    assert!(!all.contains("value-d3b07384"), "{all}");
}

/// Runs requests that make the library log (a store error on load, a session over the
/// limit, garbage data) with a capturing subscriber on this thread (the test runtime is
/// single-threaded, so the server's tasks run here too) and returns what was logged and
/// the token of a live session.
async fn logged_during_errors(garbage: &[u8]) -> (String, String) {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let store = Probe::new();
    let manager = SessionManager::builder(store.clone())
        .codec(JsonCodec)
        .max_session_bytes(256)
        .build()
        .unwrap();
    let client = Client::new(serve(routes(Arc::default()).layer(manager.layer())).await);
    let r = client.get("/put/user/value-c157a79031e1", None).await;
    let token = r.cookie("session").unwrap();
    let cookie = format!("session={token}");
    // Over the limit.
    assert_eq!(client.get("/big/1000", Some(&cookie)).await.status, 500);
    // The store fails.
    store.fail_find(true);
    assert_eq!(client.get("/get/user", Some(&cookie)).await.status, 500);
    store.fail_find(false);
    // Garbage under the token.
    let far = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    store
        .mem()
        .commit(&token::store_key(&token, true), garbage, far)
        .await
        .unwrap();
    assert_eq!(client.get("/get/user", Some(&cookie)).await.status, 500);
    let out = capture.0.lock().unwrap().clone();
    (out, token)
}

#[tokio::test]
async fn the_logs_never_show_a_token_or_a_value() {
    let (logged, token) = logged_during_errors(b"\x00 not json").await;
    assert!(
        logged.contains("session error"),
        "nothing was logged: {logged}"
    );
    assert_eq!(logged.matches("session error").count(), 3, "{logged}");
    assert!(!logged.contains(&token), "a token in the logs: {logged}");
    assert!(
        !logged.contains(&token::store_key(&token, true)),
        "{logged}"
    );
    assert!(!logged.contains("value-c157a79031e1"), "{logged}");
}

#[tokio::test]
async fn the_logs_never_quote_undecodable_stored_data() {
    // Data another program (or an older version) left under a live token.
    let (logged, _) = logged_during_errors(br#"["stored-secret-9f86d081",{}]"#).await;
    assert!(
        !logged.contains("stored-secret-9f86d081"),
        "stored data in the logs: {logged}"
    );
}
