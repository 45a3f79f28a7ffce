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
//! A replica that wants effectively-once delivery commits its checkpoint in the same transaction as its
//! data through its own implementation of [`CheckpointStore`].

mod file;
mod memory;

pub use file::FileCheckpointStore;
pub use memory::MemoryCheckpointStore;

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
}
