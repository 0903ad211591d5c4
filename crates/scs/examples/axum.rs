//! scs's README flow on axum: `/put` stores a message, `/get` reads it.
//!
//! ```sh
//! cargo run -p scs --example axum
//! curl -i --cookie-jar cj --cookie cj localhost:4000/put
//! curl -i --cookie-jar cj --cookie cj localhost:4000/get
//! ```

use axum::{Router, routing::get};
use scs::{Session, SessionManager};
use scs_memstore::MemoryStore;

async fn put(session: Session) -> &'static str {
    match session.put("message", "Hello from a session!") {
        Ok(()) => "Stored a message in the session.\n",
        Err(_) => "Could not store the message.\n",
    }
}

async fn get_message(session: Session) -> String {
    let message = session.get_string("message").unwrap_or_default();
    format!("{message}\n")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let manager = SessionManager::new(MemoryStore::new());
    let app = Router::new()
        .route("/put", get(put))
        .route("/get", get(get_message))
        .layer(manager.layer());
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:4000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (store: memory); try /put then /get");
    axum::serve(listener, app).await
}
