//! Part 2: the HTTP server (hyper, single-threaded runtime) and the Rust load generator.

use std::convert::Infallible;
use std::io::Read as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{COOKIE, HOST};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use scs_bench::apps::{self, Body, Lib};
use scs_bench::stats;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

use crate::{Opts, Result, emit, runtime};

/// `serve --lib L`: binds 127.0.0.1 on a free port, makes one live session through the
/// app's own store, prints `{"port": .., "cookie": ..}` and serves until stdin closes.
pub(crate) fn serve(opts: &Opts) -> Result<()> {
    let lib = Lib::parse(opts.req("lib")?).ok_or("unknown --lib")?;
    // The parent closes our stdin to stop us: exit then, whatever the runtime is doing.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    runtime()?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let announce = |cookie: Option<HeaderValue>| {
            let cookie = cookie.and_then(|c| c.to_str().ok().map(str::to_owned));
            emit(&json!({ "port": port, "cookie": cookie }));
        };
        match lib {
            Lib::Scs => {
                let manager = apps::scs_manager();
                announce(apps::live_cookie(&mut apps::scs_app::<Body>(&manager)).await);
                accept_loop(listener, apps::scs_app::<Incoming>(&manager)).await
            }
            Lib::Tower => {
                let store = tower_sessions::MemoryStore::default();
                announce(apps::live_cookie(&mut apps::tower_app::<Body>(&store)).await);
                accept_loop(listener, apps::tower_app::<Incoming>(&store)).await
            }
            Lib::Bare => {
                announce(Some(apps::baseline_cookie()));
                accept_loop(listener, apps::bare_app::<Incoming>()).await
            }
        }
    })
}

async fn accept_loop<S, RB>(listener: TcpListener, app: S) -> Result<()>
where
    S: Service<Request<Incoming>, Response = Response<RB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // A client going away mid-request is not our business here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `load --port P --path /x [--cookie c] [--conns 32] [--secs 5]`: keep-alive connections,
/// each sending its next request when the last answer is in, for a fixed duration.
pub(crate) fn load(opts: &Opts) -> Result<()> {
    let port: u16 = opts.num("port", 0)?;
    let path = opts.req("path")?.to_owned();
    let cookie = opts.get("cookie").map(HeaderValue::from_str).transpose()?;
    let conns: usize = opts.num("conns", 32)?;
    let secs: f64 = opts.num("secs", 5.0)?;
    runtime()?.block_on(async move {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (path, cookie) = (path.clone(), cookie.clone());
            tasks.push(tokio::spawn(connection(port, path, cookie, deadline)));
        }
        let (mut latencies, mut errors) = (Vec::new(), 0_u64);
        for task in tasks {
            let (l, e) = task.await??;
            latencies.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let requests = latencies.len();
        emit(&json!({
            "rps": requests as f64 / elapsed,
            "p50_us": stats::percentile(&mut latencies, 50.0),
            "p99_us": stats::percentile(&mut latencies, 99.0),
            "requests": requests,
            "errors": errors,
        }));
        Ok(())
    })
}

/// One keep-alive connection: latencies (µs) of its answered requests and its error count.
async fn connection(
    port: u16,
    path: String,
    cookie: Option<HeaderValue>,
    deadline: Instant,
) -> Result<(Vec<f64>, u64)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let host = HeaderValue::from_str(&format!("127.0.0.1:{port}"))?;
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = path.parse()?;
        req.headers_mut().insert(HOST, host.clone());
        if let Some(cookie) = &cookie {
            req.headers_mut().insert(COOKIE, cookie.clone());
        }
        sender.ready().await?;
        let t0 = Instant::now();
        let res = sender.send_request(req).await?;
        let ok = res.status().is_success();
        res.into_body().collect().await?;
        latencies.push(t0.elapsed().as_nanos() as f64 / 1000.0);
        errors += u64::from(!ok);
    }
    Ok((latencies, errors))
}
