//! The conformance suite against the LevelDB store: each store opens a fresh database in a
//! temporary directory, removed after the trial.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_leveldbstore::rusty_leveldb::{DB, LdbIterator, Options};
use scs_leveldbstore::{BACKEND, LevelDbStore};

fn main() -> ExitCode {
    scs_conformance::run(Backend::new(BACKEND, |opts| async move {
        let dir = tempfile::tempdir().map_err(|e| {
            Error::new(ErrorKind::Connection, "creating a temporary directory").with_source(e)
        })?;
        let db = DB::open(dir.path(), Options::default()).map_err(|e| {
            Error::new(ErrorKind::Connection, "opening the database").with_source(e)
        })?;
        let db = Arc::new(Mutex::new(db));
        let store = LevelDbStore::builder(db.clone())
            .prefix(opts.namespace.clone())
            .cleanup_interval(opts.cleanup_interval)
            .build()?;
        let stop = store.clone();
        Ok(Fixture::new(store)
            .with_raw_len(move || {
                // Every key under the prefix, expired ones included, read behind the store.
                let (db, prefix) = (db.clone(), format!("{}:", opts.namespace));
                async move {
                    let count = tokio::task::spawn_blocking(move || raw_len(&db, &prefix));
                    count.await.map_err(|e| {
                        Error::new(ErrorKind::Backend, "counting entries").with_source(e)
                    })?
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

fn raw_len(db: &Mutex<DB>, prefix: &str) -> scs_core::Result<usize> {
    let mut db = db
        .lock()
        .map_err(|_| Error::new(ErrorKind::Backend, "the database lock is poisoned"))?;
    let mut it = db
        .new_iter()
        .map_err(|e| Error::new(ErrorKind::Backend, "counting entries").with_source(e))?;
    it.seek(prefix.as_bytes());
    let mut n = 0;
    while let Some((key, _)) = it.current() {
        if !key.starts_with(prefix.as_bytes()) {
            break;
        }
        n += 1;
        if !it.advance() {
            break;
        }
    }
    Ok(n)
}
