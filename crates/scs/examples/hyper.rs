//! The same flow on bare hyper 1, no axum: the layer wraps a `tower::service_fn`.
//!
//! ```sh
//! cargo run -p scs --example hyper
//! curl -i --cookie-jar cj --cookie cj localhost:4001/put
//! curl -i --cookie-jar cj --cookie cj localhost:4001/get
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use scs::SessionManager;
use scs_memstore::MemoryStore;
use tower::{Layer, service_fn};

async fn handle(
    manager: SessionManager,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Loaded from the store here, on first access; a failure answers the error handler's
    // response.
    let session = match manager.session(&req).await {
        Ok(session) => session,
        Err(rejection) => return Ok(rejection.response().map(Full::from)),
    };
    let body = match req.uri().path() {
        "/put" => {
            let _ = session.put("message", "Hello from a session!");
            "Stored a message in the session.\n".to_owned()
        }
        "/get" => format!("{}\n", session.get_string("message").unwrap_or_default()),
        _ => "try /put then /get\n".to_owned(),
    };
    Ok(Response::new(Full::from(body)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let manager = SessionManager::new(MemoryStore::new());
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (bare hyper, store: memory)");
    loop {
        let (stream, _) = listener.accept().await?;
        let m = manager.clone();
        let service = manager
            .layer()
            .layer(service_fn(move |req| handle(m.clone(), req)));
        tokio::spawn(async move {
            let conn = Builder::new(TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
