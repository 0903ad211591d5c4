//! The conformance suite against the fjall store: each store opens a fresh database in a
//! temporary directory, removed after the trial.

use std::process::ExitCode;

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_fjallstore::fjall::{self, KeyspaceCreateOptions, Readable};
use scs_fjallstore::{BACKEND, FjallStore};

fn main() -> ExitCode {
    scs_conformance::run(Backend::new(BACKEND, |opts| async move {
        let dir = tempfile::tempdir().map_err(|e| {
            Error::new(ErrorKind::Connection, "creating a temporary directory").with_source(e)
        })?;
        let db = fjall::SingleWriterTxDatabase::builder(dir.path())
            .open()
            .map_err(|e| {
                Error::new(ErrorKind::Connection, "opening the database").with_source(e)
            })?;
        let store = FjallStore::builder(db.clone())
            .keyspace(opts.namespace.clone())
            .cleanup_interval(opts.cleanup_interval)
            .build()?;
        let stop = store.clone();
        Ok(Fixture::new(store)
            .with_raw_len(move || {
                // Every entry of the keyspace, expired ones included, read behind the store.
                let (db, keyspace) = (db.clone(), opts.namespace.clone());
                async move {
                    let count = tokio::task::spawn_blocking(move || {
                        let keyspace = db.keyspace(&keyspace, KeyspaceCreateOptions::default)?;
                        Ok::<_, fjall::Error>(db.read_tx().iter(&keyspace).count())
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
