//! `scs-demo`: a small server-rendered web app that shows what sessions are for. Sign in
//! with a name (the token is renewed), sign out (renewed again), flash messages, a visit
//! counter, remember-me, a theme kept in the session, and a page listing your live
//! sessions with a button that signs the others out.
//!
//! ```sh
//! cargo run -p scs-demo                                   # SQLite file, http://127.0.0.1:3000
//! SCS_STORE=memory:// cargo run -p scs-demo
//! SCS_STORE=postgres://postgres@127.0.0.1/test cargo run -p scs-demo --features postgres
//! PORT=8080 SCS_LIFETIME=2h SCS_IDLE_TIMEOUT=20m cargo run -p scs-demo
//! ```
//!
//! Settings come from `SCS_*` variables (and the file `SCS_CONFIG` names), see
//! `scs_stores::SessionSettings`; the demo's own defaults are a SQLite file next to the
//! binary, the cookie `scs_demo`, and a browser-session cookie unless "remember me" is
//! ticked. `ADDR` (default `127.0.0.1`, may carry a port) and `PORT` (default 3000; 0 picks
//! a free one) say where to listen. Any startup failure is one line on stderr and exit
//! code 2.

mod app;
mod page;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use scs_stores::SessionSettings;
use scs_stores::figment::Figment;
use scs_stores::figment::providers::Serialized;

const DEFAULT_PORT: u16 = 3000;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail("cannot start the async runtime", &e),
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => return fail("bad settings", &e),
    };
    let addr = match listen_addr() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("scs-demo: {message}");
            return ExitCode::from(2);
        }
    };
    let store_url = scs_stores::redact(&settings.store);
    let manager = match settings.build().await {
        Ok(m) => m,
        Err(e) => return fail(&format!("cannot open the session store {store_url}"), &e),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {addr}"), &e),
    };
    let local = listener.local_addr().unwrap_or(addr);
    let backend = manager.store().backend();
    println!("scs-demo: sessions in {backend} ({store_url})");
    println!("scs-demo: listening on http://{local}");

    let app = app::router(manager);
    let shutdown = async {
        // Without a signal handler the server just runs until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("the server stopped", &e),
    }
}

/// The demo's defaults under `SCS_CONFIG` and the `SCS_*` variables.
fn settings() -> scs::Result<SessionSettings> {
    let figment = Figment::new()
        .merge(Serialized::default("store", default_store()))
        .merge(Serialized::default("cookie.name", "scs_demo"))
        // A browser-session cookie, so that "remember me" makes a difference.
        .merge(Serialized::default("cookie.persist", false))
        .merge(SessionSettings::figment()?);
    SessionSettings::from_figment(&figment)
}

/// `sqlite://<dir of the binary>/scs-demo.db`: under the target directory with `cargo
/// run`, so the work tree stays clean; `scs-demo.db` in the working directory otherwise.
fn default_store() -> String {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("scs-demo.db")))
        .unwrap_or_else(|| PathBuf::from("scs-demo.db"));
    format!("sqlite://{}", path.display())
}

/// `ADDR` (an IP, or IP:port) and `PORT`.
fn listen_addr() -> Result<SocketAddr, String> {
    let port = match std::env::var("PORT") {
        Ok(p) if !p.trim().is_empty() => Some(
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("PORT must be a port number (0 to 65535), got {p:?}"))?,
        ),
        _ => None,
    };
    let addr = std::env::var("ADDR").unwrap_or_default();
    let addr = addr.trim();
    if addr.is_empty() {
        return Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port.unwrap_or(DEFAULT_PORT),
        ));
    }
    if let Ok(mut sock) = addr.parse::<SocketAddr>() {
        if let Some(port) = port {
            sock.set_port(port);
        }
        return Ok(sock);
    }
    let ip = match addr {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        other => other.trim_matches(['[', ']']).parse::<IpAddr>(),
    };
    ip.map(|ip| SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT)))
        .map_err(|_| {
            format!("ADDR must be an IP address or IP:port (127.0.0.1, 0.0.0.0:8080), got {addr:?}")
        })
}

/// One line on stderr, the error and its causes, and exit code 2.
fn fail(context: &str, error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("scs-demo: {context}: {}", one_line(error));
    ExitCode::from(2)
}

/// The error and its chain of sources on one line, without repeating a cause that an
/// outer message already quotes.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused\nreally");
        let err = scs::Error::new(scs::ErrorKind::Connection, "connecting")
            .with_backend("redis")
            .with_source(io);
        assert_eq!(
            one_line(&err),
            "redis: connection error: connecting: refused really"
        );
    }
}
