//! An in-memory checkpoint store.

use std::sync::Mutex;

use databus_core::Checkpoint;

use super::{CheckpointStore, CheckpointStoreError};

/// Keeps the checkpoint in memory: lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    current: Mutex<Option<Checkpoint>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `checkpoint`: for a consumer that keeps its checkpoint in its own database,
    /// committed in the same transaction as each window's data (effectively-once with the pull API).
    /// It loads the checkpoint from its database, gives the client this store, and writes each
    /// window's (and each phase change's) checkpoint itself; `store` here only keeps it in memory.
    pub fn starting_at(checkpoint: Option<Checkpoint>) -> Self {
        MemoryCheckpointStore {
            current: Mutex::new(checkpoint),
        }
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(checkpoint.clone());
        Ok(())
    }

    fn store_blocks(&self) -> bool {
        false
    }
}
