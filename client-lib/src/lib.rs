//! Client library: callbacks and pull API, checkpoints, failover, parallel dispatch, bootstrap
//! switchover.
//!
//! Built so far: [`checkpoint`] stores (file with atomic replace, in-memory, and the trait a replica
//! implements to commit its checkpoint with its data).

#![forbid(unsafe_code)]

pub mod checkpoint;

pub use checkpoint::{
    CheckpointStore, CheckpointStoreError, FileCheckpointStore, MemoryCheckpointStore,
};
