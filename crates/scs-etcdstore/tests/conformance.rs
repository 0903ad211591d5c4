//! The conformance suite against etcd.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_etcdstore::EtcdStore;

fn main() -> ExitCode {
    let url = scs_conformance::env_url("SCS_ETCD_URL", "http://127.0.0.1:2379");
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_etcdstore::BACKEND, move |opts| {
            // The suite's URL: the server's, or a fault proxy's in front of it.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                // One key prefix per trial; leases expire the keys, so there is no cleanup.
                let store = EtcdStore::builder(EtcdStore::from_url(&url).await?.client().clone())
                    .prefix(format!("{}:", opts.namespace))
                    .build()?;
                let (len, teardown) = (store.clone(), store.clone());
                Ok(Fixture::new(store)
                    .with_raw_len(move || {
                        let len = len.clone();
                        async move { len.count().await }
                    })
                    .with_teardown(move || async move { teardown.clear().await.map(drop) }))
            }
        })
        .server(server),
    )
}
