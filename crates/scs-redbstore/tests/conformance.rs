//! The conformance suite against the redb store: each store opens a fresh database file in
//! a temporary directory, removed after the trial.

use std::process::ExitCode;
use std::sync::Arc;

use scs_conformance::{Backend, Fixture};
use scs_core::{Error, ErrorKind};
use scs_redbstore::redb::{self, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use scs_redbstore::{BACKEND, RedbStore};

fn main() -> ExitCode {
    scs_conformance::run(Backend::new(BACKEND, |opts| async move {
        let dir = tempfile::tempdir().map_err(|e| {
            Error::new(ErrorKind::Connection, "creating a temporary directory").with_source(e)
        })?;
        let db = redb::Database::create(dir.path().join("sessions.redb")).map_err(|e| {
            Error::new(ErrorKind::Connection, "opening the database").with_source(e)
        })?;
        let db = Arc::new(db);
        let store = RedbStore::builder(db.clone())
            .table(opts.namespace.clone())
            .cleanup_interval(opts.cleanup_interval)
            .build()?;
        let stop = store.clone();
        Ok(Fixture::new(store)
            .with_raw_len(move || {
                // Every row of the table, expired ones included, read behind the store.
                let (db, table) = (db.clone(), opts.namespace.clone());
                async move {
                    let count = tokio::task::spawn_blocking(move || raw_len(&db, &table));
                    count.await.map_err(|e| {
                        Error::new(ErrorKind::Backend, "counting rows").with_source(e)
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

fn raw_len(db: &redb::Database, table: &str) -> scs_core::Result<usize> {
    let err = |e: redb::Error| Error::new(ErrorKind::Backend, "counting rows").with_source(e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
    match txn.open_table(def) {
        Ok(table) => Ok(table.len().map_err(|e| err(e.into()))? as usize),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(err(e.into())),
    }
}
