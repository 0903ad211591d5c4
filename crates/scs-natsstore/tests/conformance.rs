//! The conformance suite against NATS JetStream key-value.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_natsstore::NatsStore;

fn main() -> ExitCode {
    let url = scs_conformance::env_url("SCS_NATS_URL", "nats://127.0.0.1:4222");
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_natsstore::BACKEND, move |opts| {
            // The suite's URL: the server's, or a fault proxy's in front of it.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                // One bucket per trial, created by migrate() and deleted by the teardown.
                let context = NatsStore::from_url(&url).await?.context().clone();
                let store = NatsStore::builder(context)
                    .bucket(opts.namespace)
                    .cleanup_interval(opts.cleanup_interval)
                    .build()?;
                store.migrate().await?;
                let (len, stop, teardown) = (store.clone(), store.clone(), store.clone());
                Ok(Fixture::new(store)
                    .with_raw_len(move || {
                        let len = len.clone();
                        async move { len.count().await }
                    })
                    .with_stop_cleanup(move || stop.stop_cleanup())
                    .with_teardown(move || async move { teardown.delete_bucket().await }))
            }
        })
        .server(server),
    )
}
