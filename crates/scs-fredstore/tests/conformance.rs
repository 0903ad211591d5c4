//! The conformance suite against Redis and Valkey, through fred.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_fredstore::FredStore;

/// A backend named `name` whose stores live on the server at `url`, one key prefix per
/// trial.
fn backend(name: &str, url: String) -> Backend {
    let server = url.clone();
    Backend::new(name, move |opts| {
        // The suite may put a fault proxy in front of the server.
        let url = opts.url.clone().unwrap_or_else(|| url.clone());
        async move {
            let store = FredStore::from_url(&url).await?;
            let store = store.with_prefix(format!("{}:", opts.namespace))?;
            let (len, teardown) = (store.clone(), store.clone());
            Ok(Fixture::new(store)
                .with_raw_len(move || {
                    let len = len.clone();
                    async move { len.count().await }
                })
                .with_teardown(move || async move { teardown.clear().await.map(drop) }))
        }
    })
    .server(server)
}

fn main() -> ExitCode {
    scs_conformance::run_all(vec![
        backend(
            scs_fredstore::BACKEND,
            scs_conformance::env_url("SCS_REDIS_URL", "redis://127.0.0.1:6379"),
        ),
        backend(
            "fred-valkey",
            scs_conformance::env_url("SCS_VALKEY_URL", "redis://127.0.0.1:6380"),
        ),
    ])
}
