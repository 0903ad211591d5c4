//! The conformance suite against a MongoDB-wire server (`SCS_MONGODB_URL`).

use std::process::ExitCode;
use std::time::Duration;

use scs_conformance::{Backend, Fixture};
use scs_mongostore::MongoStore;
use scs_mongostore::mongodb::Client;
use scs_mongostore::mongodb::bson::doc;
use scs_mongostore::mongodb::options::ClientOptions;

fn main() -> ExitCode {
    let url = scs_conformance::env_url("SCS_MONGODB_URL", "mongodb://127.0.0.1:27017");
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_mongostore::BACKEND, move |opts| {
            // The suite may put a fault proxy in front of the server.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                let connect = |e| {
                    scs_core::Error::new(scs_core::ErrorKind::Connection, "connecting")
                        .with_source(e)
                };
                let mut options = ClientOptions::parse(&url).await.map_err(connect)?;
                // Fail fast when the server is missing, so the suite skips (or fails) early.
                options.server_selection_timeout = Some(Duration::from_secs(5));
                // Talk to the address given, not to the hosts the server advertises, so a
                // fault proxy in front of it stays in the path.
                if options.hosts.len() == 1 {
                    options.direct_connection = Some(true);
                }
                let client = Client::with_options(options).map_err(connect)?;
                let store = MongoStore::builder(client)
                    .database("scs_test")
                    .collection(&opts.namespace)
                    .cleanup_interval(opts.cleanup_interval)
                    .build()?;
                store.migrate().await?;
                let (len, stop, drop) = (store.clone(), store.clone(), store.clone());
                Ok(Fixture::new(store)
                    .with_raw_len(move || {
                        let len = len.clone();
                        async move {
                            let n =
                                len.collection()
                                    .count_documents(doc! {})
                                    .await
                                    .map_err(|e| {
                                        scs_core::Error::new(
                                            scs_core::ErrorKind::Backend,
                                            "counting",
                                        )
                                        .with_source(e)
                                    })?;
                            Ok(usize::try_from(n).unwrap_or(usize::MAX))
                        }
                    })
                    .with_stop_cleanup(move || stop.stop_cleanup())
                    .with_teardown(move || async move {
                        drop.stop_cleanup();
                        drop.collection().drop().await.map_err(|e| {
                            scs_core::Error::new(scs_core::ErrorKind::Backend, "dropping")
                                .with_source(e)
                        })
                    }))
            }
        })
        .server(server),
    )
}
