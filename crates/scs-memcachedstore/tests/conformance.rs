//! The conformance suite against memcached.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_memcachedstore::MemcachedStore;

fn main() -> ExitCode {
    let url = scs_conformance::env_url("SCS_MEMCACHED_URL", "memcache://127.0.0.1:11211");
    let server = url.clone();
    scs_conformance::run(
        Backend::new(scs_memcachedstore::BACKEND, move |opts| {
            // The suite's URL: the server's, or a fault proxy's in front of it.
            let url = opts.url.clone().unwrap_or_else(|| url.clone());
            async move {
                // One key prefix per trial. memcached cannot count or list keys, so there is
                // no raw_len hook (the native-TTL trial shows as ignored) and no teardown:
                // every item expires by itself.
                let store =
                    MemcachedStore::builder(MemcachedStore::from_url(&url).await?.pool().clone())
                        .prefix(format!("{}:", opts.namespace))
                        .build()?;
                Ok(Fixture::new(store))
            }
        })
        .server(server),
    )
}
