//! Checkpoint stores: where a consumer persists its [`Checkpoint`].
//!
//! The client persists a checkpoint only after every callback of a window succeeded, so a crash at any
//! point replays from the last persisted checkpoint and nothing is skipped (at-least-once). Stores:
//!
//! - [`FileCheckpointStore`]: a JSON file replaced atomically (write a temporary file, fsync, rename,
//!   fsync the directory), the previous version kept beside it as `<name>.prev`. A corrupt file is a
//!   clear error naming the file, never a silent restart from zero.
//! - [`MemoryCheckpointStore`]: for tests and consumers that keep no state.
//!
//! - [`SqliteCheckpointStore`]: a table in a SQLite database. A replica that wants effectively-once
//!   delivery commits its checkpoint in the same transaction as its data
//!   ([`SqliteCheckpointStore::store_in`]) and lets the client only load it
//!   ([`SqliteCheckpointStore::committed_by_consumer`]).
//! - [`CommittedOnCheckpoint`]: for a consumer that commits every checkpoint with its own data (in
//!   batches of windows) in [`DatabusConsumer::on_checkpoint`](crate::DatabusConsumer::on_checkpoint);
//!   the store only loads what it committed (the search indexer example keeps it in its index).

mod file;
mod memory;
mod on_checkpoint;
mod sqlite;

pub use file::FileCheckpointStore;
pub use memory::MemoryCheckpointStore;
pub use on_checkpoint::CommittedOnCheckpoint;
pub use sqlite::{CHECKPOINT_TABLE, SqliteCheckpointStore};

use databus_core::{Checkpoint, CheckpointError};

/// Why a checkpoint could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointStoreError {
    /// The stored checkpoint is unusable.
    #[error(transparent)]
    Corrupt(#[from] CheckpointError),
    /// An I/O failure on the store.
    #[error("checkpoint store {path}: {source}")]
    Io {
        /// The file or resource.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A failure in a user-provided store.
    #[error("checkpoint store: {0}")]
    Other(String),
}

/// Persists a consumer's checkpoint.
pub trait CheckpointStore: Send + Sync {
    /// The last stored checkpoint, or `None` if the consumer never stored one.
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError>;

    /// Durably stores `checkpoint`; when this returns `Ok`, a crash cannot lose it.
    fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError>;

    /// Whether [`store`](Self::store) may block (file I/O, fsync, a database): the client then calls
    /// it on `spawn_blocking`. A store that only touches memory returns `false` and is called inline
    /// (a thread hand-off per window costs more than such a store).
    fn store_blocks(&self) -> bool {
        true
    }

    /// Durably stores the checkpoint of a phase change (a bootstrap starts, its catch-up starts, it
    /// ends): a position only, with no data of its own, since every window before it was consumed
    /// (and, for a store committed by the consumer, committed) already. The default is
    /// [`store`](Self::store); a store whose `store` leaves writing to the consumer
    /// ([`SqliteCheckpointStore::committed_by_consumer`]) writes these itself, or the persisted
    /// checkpoint would stay in the previous phase until the next window. Called on `spawn_blocking`.
    fn store_transition(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        self.store(checkpoint)
    }
}

#[cfg(test)]
mod conformance {
    use databus_core::Scn;

    use super::*;

    /// The behaviour every store must have.
    fn suite(store: &dyn CheckpointStore) {
        assert_eq!(store.load().unwrap(), None);
        let mut cp = Checkpoint::after(Scn::new(5));
        store.store(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp.clone()));
        cp.start_bootstrap(Some(Scn::new(5)));
        store.store(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        let late = Checkpoint::after(Scn::new(900));
        store.store(&late).unwrap();
        assert_eq!(store.load().unwrap(), Some(late));
    }

    #[test]
    fn every_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        suite(&MemoryCheckpointStore::new());
        suite(&FileCheckpointStore::new(dir.path().join("cp.json")).unwrap());
        suite(&SqliteCheckpointStore::open(dir.path().join("cp.sqlite"), "c1").unwrap());
    }

    #[test]
    fn sqlite_store_survives_reopen_and_names_a_corrupt_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.sqlite");
        let store = SqliteCheckpointStore::open(&path, "c1").unwrap();
        store.store(&Checkpoint::after(Scn::new(3))).unwrap();
        drop(store);
        let external = SqliteCheckpointStore::open(&path, "c1")
            .unwrap()
            .committed_by_consumer();
        assert_eq!(
            external.load().unwrap(),
            Some(Checkpoint::after(Scn::new(3)))
        );
        // The consumer commits checkpoints itself: store() leaves the table alone.
        external.store(&Checkpoint::after(Scn::new(4))).unwrap();
        assert_eq!(
            external.load().unwrap(),
            Some(Checkpoint::after(Scn::new(3)))
        );
        // A phase change carries no data: the store writes it itself.
        external
            .store_transition(&Checkpoint::after(Scn::new(5)))
            .unwrap();
        assert_eq!(
            external.load().unwrap(),
            Some(Checkpoint::after(Scn::new(5)))
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE databus_checkpoint SET checkpoint = '{'", [])
            .unwrap();
        let err = external.load().unwrap_err().to_string();
        assert!(
            err.contains("consumer c1") && err.contains("databus_checkpoint"),
            "{err}"
        );
    }
}
