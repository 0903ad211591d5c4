//! The conformance suite against the memory store.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_memstore::MemoryStore;

fn main() -> ExitCode {
    scs_conformance::run(Backend::new(scs_memstore::BACKEND, |opts| async move {
        let store = MemoryStore::builder()
            .cleanup_interval(opts.cleanup_interval)
            .build()?;
        let (len, stop) = (store.clone(), store.clone());
        Ok(Fixture::new(store)
            .with_raw_len(move || {
                let len = len.clone();
                async move { Ok(len.len()) }
            })
            .with_stop_cleanup(move || stop.stop_cleanup()))
    }))
}
