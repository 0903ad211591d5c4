//! Two managers side by side (distinct cookie names), and a JSON API that carries its
//! token in the `X-Session-Token` header instead of a cookie.
//!
//! ```sh
//! cargo run -p scs --example several
//! curl -i -c cj -b cj localhost:4003/both
//! curl -i localhost:4003/api/count            # note the X-Session-Token response header
//! curl -i -H 'X-Session-Token: <token>' localhost:4003/api/count
//! ```

use axum::Router;
use axum::routing::get;
use scs::{Session, SessionManager, Sessions, TokenTransport};
use scs_memstore::MemoryStore;

async fn both(sessions: Sessions) -> String {
    let (Some(user), Some(prefs)) = (sessions.get("user_session"), sessions.get("prefs")) else {
        return "missing a session".into();
    };
    let visits = user.get_i64("visits").unwrap_or(0) + 1;
    let _ = user.put("visits", &visits);
    let _ = prefs.put("theme", "dark");
    format!("visits: {visits}, theme: dark\n")
}

async fn count(session: Session) -> String {
    let n = session.get_i64("n").unwrap_or(0) + 1;
    let _ = session.put("n", &n);
    format!("{{\"count\": {n}}}\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let user = SessionManager::builder(store.clone())
        .cookie_name("user_session")
        .build()?;
    let prefs = SessionManager::builder(store.clone())
        .cookie_name("prefs")
        .lifetime(std::time::Duration::from_secs(365 * 24 * 3600))
        .build()?;
    let api = SessionManager::builder(store)
        .token_transport(TokenTransport::Header("X-Session-Token".into()))
        .build()?;
    let browser = Router::new()
        .route("/both", get(both))
        .layer(user.layer())
        .layer(prefs.layer());
    let json_api = Router::new()
        .route("/api/count", get(count))
        .layer(api.layer());
    let app = browser.merge(json_api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4003").await?;
    println!("listening on http://127.0.0.1:4003");
    axum::serve(listener, app).await?;
    Ok(())
}
