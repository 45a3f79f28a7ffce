//! The producer, applier and server of a split bootstrap deployment are separate processes that open
//! the same SQLite file, usually all at once on a first start. Every one of them must open it: a
//! fresh file's switch to WAL and its schema are set up under contention without "database is locked".

use std::sync::{Arc, Barrier};

use databus_bootstrap::store::SqliteStore;

#[test]
fn roles_opening_a_fresh_database_at_once_all_succeed() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("bootstrap.sqlite"));
        let start = Arc::new(Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SqliteStore::open(path.as_path()).map(|_| ())
                })
            })
            .collect();
        for (i, opener) in openers.into_iter().enumerate() {
            let opened = opener.join().unwrap();
            assert!(opened.is_ok(), "round {round}, opener {i}: {opened:?}");
        }
    }
}
