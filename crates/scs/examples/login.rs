//! Login and logout with `renew_token` (against session fixation), remember-me with a
//! browser-session cookie by default, and flash messages with `pop`.
//!
//! ```sh
//! cargo run -p scs --example login
//! curl -i -c cj -b cj 'localhost:4002/login?user=ada&remember=1'
//! curl -i -c cj -b cj localhost:4002/
//! curl -i -c cj -b cj localhost:4002/logout
//! ```

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::response::Redirect;
use axum::routing::get;
use scs::{Session, SessionManager};
use scs_memstore::MemoryStore;

async fn home(session: Session) -> String {
    let flash = session
        .pop_string("flash")
        .map(|f| format!("[{f}]\n"))
        .unwrap_or_default();
    match session.get_string("user") {
        Some(user) => format!("{flash}Signed in as {user}.\n"),
        None => format!("{flash}Not signed in. Try /login?user=ada&remember=1\n"),
    }
}

async fn login(
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Redirect, String> {
    let user = q.get("user").cloned().unwrap_or_else(|| "guest".into());
    // A privilege change: new token, same data, the old token removed from the store.
    session.renew_token().await.map_err(|e| e.to_string())?;
    session.put("user", &user).map_err(|e| e.to_string())?;
    session.remember_me(q.get("remember").is_some_and(|v| v == "1"));
    session
        .put("flash", "Welcome back!")
        .map_err(|e| e.to_string())?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, String> {
    session.renew_token().await.map_err(|e| e.to_string())?;
    session.remove("user");
    session
        .put("flash", "Signed out.")
        .map_err(|e| e.to_string())?;
    Ok(Redirect::to("/"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = SessionManager::builder(MemoryStore::new())
        .cookie_persist(false) // a browser-session cookie unless the user asks to be remembered
        .build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .layer(manager.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4002").await?;
    println!("listening on http://127.0.0.1:4002");
    axum::serve(listener, app).await?;
    Ok(())
}
