//! The store conformance suite, run against every implementation.

use databus_bootstrap::store::{MemoryStore, SqliteStore};

databus_bootstrap::store_conformance_suite!(memory, || (MemoryStore::new(), ()));

databus_bootstrap::store_conformance_suite!(sqlite_file, || {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("bootstrap.sqlite")).expect("open store");
    (store, dir)
});
