//! The apps under test: one handler logic, three ways of serving it.
//!
//! Every app answers `/read` (read `n`), `/write` (read `n`, write `n + 1`, so that the value
//! really changes and tower-sessions marks the session modified), `/new` (write `n = 1`,
//! sent without a cookie) and anything else (does not touch the session). Handlers are plain
//! `tower::service_fn`s, so that routing costs nothing and the middleware is what differs.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer as _, Service, ServiceExt as _};

/// The response body of every handler.
pub type Body = Full<Bytes>;

/// One request shape of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// (a) read a value of a live session.
    Read,
    /// (b) read and change a value of a live session.
    Write,
    /// (c) first request, no cookie: a new session with one value.
    New,
    /// (d) a request with the session cookie whose handler never touches the session.
    Untouched,
}

impl Case {
    /// Every case, in report order.
    pub const ALL: [Case; 4] = [Case::Read, Case::Write, Case::New, Case::Untouched];

    /// The short name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Case::Read => "read",
            Case::Write => "write",
            Case::New => "new",
            Case::Untouched => "none",
        }
    }

    /// The case named `name`.
    pub fn parse(name: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The request path of the case.
    pub fn path(self) -> &'static str {
        match self {
            Case::Read => "/read",
            Case::Write => "/write",
            Case::New => "/new",
            Case::Untouched => "/none",
        }
    }

    /// Whether the request carries the live session's cookie.
    pub fn sends_cookie(self) -> bool {
        self != Case::New
    }
}

/// The middleware under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    /// scs: `SessionManager` over `scs_memstore::MemoryStore`, default settings (token
    /// hashing on).
    Scs,
    /// tower-sessions: `SessionManagerLayer` over its `MemoryStore`, default settings.
    Tower,
    /// No middleware: the baseline of case (d).
    Bare,
}

impl Lib {
    /// Every lib, in report order.
    pub const ALL: [Lib; 3] = [Lib::Scs, Lib::Tower, Lib::Bare];

    /// The short name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Lib::Scs => "scs",
            Lib::Tower => "tower-sessions",
            Lib::Bare => "none",
        }
    }

    /// The lib named `name`.
    pub fn parse(name: &str) -> Option<Lib> {
        Lib::ALL.into_iter().find(|l| l.name() == name)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res
}

fn ok() -> Response<Body> {
    text(StatusCode::OK, "ok")
}

fn fail() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "session error")
}

// ---------------------------------------------------------------------------------------
// Handlers: the same logic for each library

async fn scs_handler<B>(req: Request<B>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if !matches!(path, "/read" | "/write" | "/new") {
        // Untouched: the handler never asks for its session, as tower_handler never
        // calls a session method.
        return Ok(ok());
    }
    let Ok(session) = scs::Session::from_request(&req).await else {
        return Ok(fail());
    };
    let done = match path {
        "/read" => {
            black_box(session.get::<i64>("n"));
            Ok(())
        }
        "/write" => {
            let n = session.get::<i64>("n").unwrap_or(0);
            session.put("n", &(n + 1))
        }
        "/new" => session.put("n", &1_i64),
        _ => Ok(()),
    };
    Ok(if done.is_ok() { ok() } else { fail() })
}

async fn tower_handler<B>(req: Request<B>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if !matches!(path, "/read" | "/write" | "/new") {
        return Ok(ok());
    }
    let Some(session) = req.extensions().get::<tower_sessions::Session>().cloned() else {
        return Ok(fail());
    };
    let done = match path {
        "/read" => session.get::<i64>("n").await.map(|n| {
            black_box(n);
        }),
        "/write" => match session.get::<i64>("n").await {
            Ok(n) => session.insert("n", n.unwrap_or(0) + 1).await,
            Err(e) => Err(e),
        },
        "/new" => session.insert("n", 1_i64).await,
        _ => Ok(()),
    };
    Ok(if done.is_ok() { ok() } else { fail() })
}

async fn bare_handler<B>(req: Request<B>) -> Result<Response<Body>, Infallible> {
    black_box(req.uri().path());
    Ok(ok())
}

// ---------------------------------------------------------------------------------------
// Apps

/// The scs manager of the benchmark: scs's defaults over its memory store. Call inside a
/// Tokio runtime (the store starts its cleanup task there).
pub fn scs_manager() -> scs::SessionManager {
    scs::SessionManager::new(scs_memstore::MemoryStore::new())
}

/// The handlers behind scs's `LoadAndSave` layer.
pub fn scs_app<B: Send + 'static>(
    manager: &scs::SessionManager,
) -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    manager.layer().layer(tower::service_fn(scs_handler::<B>))
}

/// The handlers behind tower-sessions' `SessionManagerLayer` over `store` (its defaults,
/// except `Secure`, which would keep the cookie off plain HTTP).
pub fn tower_app<B: Send + 'static>(
    store: &tower_sessions::MemoryStore,
) -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    tower_app_on(tower_sessions::SessionManagerLayer::new(store.clone()).with_secure(false))
}

/// The handlers behind a tower-sessions layer configured by the caller.
pub fn tower_app_on<B, St>(
    layer: tower_sessions::SessionManagerLayer<St>,
) -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    B: Send + 'static,
    St: tower_sessions::SessionStore + Clone,
{
    layer.layer(tower::service_fn(tower_handler::<B>))
}

/// The handlers with no middleware at all.
pub fn bare_app<B: Send + 'static>() -> impl Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(bare_handler::<B>)
}

/// A request of `case`, with `cookie` (`name=value`) when the case sends one.
pub fn request(case: Case, cookie: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = http::Uri::from_static(case.path());
    if let (true, Some(cookie)) = (case.sends_cookie(), cookie) {
        req.headers_mut().insert(COOKIE, cookie.clone());
    }
    req
}

/// The cookie sent to the app without middleware: the session cookie's shape (which
/// nothing there reads), so that case (d) compares the same request bytes and measures
/// the middleware, not the parsing of a longer request.
pub fn baseline_cookie() -> HeaderValue {
    let token = "A".repeat(scs_core::token::TOKEN_LEN);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("session={token}")))
        .unwrap_or_else(|_| HeaderValue::from_static("session=x"))
}

/// Makes a live session through `app` (a `/new` request) and returns its cookie as the
/// client sends it back (`name=value`), or `None` for an app without sessions.
///
/// # Panics
/// When the app answers `/new` with an error status.
pub async fn live_cookie<S, RB>(app: &mut S) -> Option<HeaderValue>
where
    S: Service<Request<Body>, Response = Response<RB>, Error = Infallible>,
{
    let Ok(ready) = app.ready().await;
    let Ok(res) = ready.call(request(Case::New, None)).await;
    assert!(res.status().is_success(), "/new answered {}", res.status());
    let set_cookie = res.headers().get(SET_COOKIE)?.to_str().ok()?;
    let pair = set_cookie.split(';').next()?.trim();
    HeaderValue::from_str(pair).ok()
}
