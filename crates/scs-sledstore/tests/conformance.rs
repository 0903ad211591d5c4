//! The conformance suite against the sled store: each store opens a fresh database in a
//! temporary directory, removed after the trial.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_sledstore::{BACKEND, SledStore, sled};

fn main() -> ExitCode {
    scs_conformance::run(Backend::new(BACKEND, |opts| async move {
        let dir = tempfile::tempdir().map_err(|e| {
            Error::new(ErrorKind::Connection, "creating a temporary directory").with_source(e)
        })?;
        let db = sled::open(dir.path()).map_err(|e| {
            Error::new(ErrorKind::Connection, "opening the database").with_source(e)
        })?;
        let store = SledStore::builder(db.clone())
            .tree(opts.namespace.clone())
            .cleanup_interval(opts.cleanup_interval)
            .build()?;
        let stop = store.clone();
        Ok(Fixture::new(store)
            .with_raw_len(move || {
                // Every entry of the tree, expired ones included, read behind the store.
                let (db, tree) = (db.clone(), opts.namespace.clone());
                async move {
                    let count = tokio::task::spawn_blocking(move || {
                        db.open_tree(tree).map(|tree| tree.len())
                    });
                    let count = count.await.map_err(|e| {
                        Error::new(ErrorKind::Backend, "counting entries").with_source(e)
                    })?;
                    count.map_err(|e| {
                        Error::new(ErrorKind::Backend, "counting entries").with_source(e)
                    })
                }
            })
            .with_stop_cleanup(move || stop.stop_cleanup())
            .with_teardown(move || async move {
                dir.close().map_err(|e| {
                    Error::new(ErrorKind::Backend, "removing the temporary directory")
                        .with_source(e)
                })
            }))
    }))
}
