//! A store for a consumer that commits every checkpoint itself, in
//! [`DatabusConsumer::on_checkpoint`](crate::DatabusConsumer::on_checkpoint).

use std::fmt;

use databus_core::Checkpoint;

use super::{CheckpointStore, CheckpointStoreError};

/// The load function of a [`CommittedOnCheckpoint`] store.
type LoadFn = dyn Fn() -> Result<Option<Checkpoint>, CheckpointStoreError> + Send + Sync;

/// The checkpoint store of a consumer that keeps its checkpoint with its own data and commits both
/// together in [`DatabusConsumer::on_checkpoint`](crate::DatabusConsumer::on_checkpoint) (e.g. a
/// search index storing the checkpoint as its commit's payload).
///
/// The push API ([`DatabusClient::run`](crate::DatabusClient::run)) calls `on_checkpoint` right
/// before every persistence: after every `checkpoint_every_windows` windows (so a consumer commits
/// a batch of windows at once), after each phase change (a bootstrap starts, its catch-up starts, it
/// ends) and at shutdown for windows not yet persisted. When `on_checkpoint` returns `Success` the
/// consumer has committed that checkpoint, so this store's [`store`](CheckpointStore::store) and
/// [`store_transition`](CheckpointStore::store_transition) do nothing; when it fails, the client
/// skips the persistence and the next one covers it. [`load`](CheckpointStore::load) reads the last
/// committed checkpoint through the function given to [`new`](Self::new).
///
/// Differs from [`SqliteCheckpointStore::committed_by_consumer`](super::SqliteCheckpointStore::committed_by_consumer)
/// (the consumer commits each window in `on_end_window`; the store writes phase changes): here the
/// consumer commits every checkpoint, windows' and phase changes' alike, and decides nothing about
/// when (the client's `checkpoint_every_windows` does). With the pull API
/// ([`WindowStream`](crate::WindowStream)) no `on_checkpoint` is called: commit your checkpoints
/// yourself and do not call `commit`.
///
/// A crash between two commits loses the uncommitted windows' effects and the restarted consumer
/// gets them again from the last committed checkpoint: nothing is applied twice or missed, as long
/// as the consumer's uncommitted changes are lost with it (they are not visible before the commit).
///
/// ```
/// use databus_client::checkpoint::{CheckpointStore, CommittedOnCheckpoint};
/// use databus_core::{Checkpoint, Scn};
///
/// let store = CommittedOnCheckpoint::new(|| Ok(Some(Checkpoint::after(Scn::new(7)))));
/// store.store(&Checkpoint::after(Scn::new(9))).unwrap(); // the consumer committed it
/// assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(7))));
/// ```
pub struct CommittedOnCheckpoint {
    load: Box<LoadFn>,
}

impl CommittedOnCheckpoint {
    /// A store whose [`load`](CheckpointStore::load) calls `load` (on a blocking thread): the
    /// checkpoint of the consumer's last commit, `None` if it never committed one.
    pub fn new(
        load: impl Fn() -> Result<Option<Checkpoint>, CheckpointStoreError> + Send + Sync + 'static,
    ) -> Self {
        CommittedOnCheckpoint {
            load: Box::new(load),
        }
    }
}

impl fmt::Debug for CommittedOnCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommittedOnCheckpoint")
            .finish_non_exhaustive()
    }
}

impl CheckpointStore for CommittedOnCheckpoint {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        (self.load)()
    }

    /// Nothing: the consumer committed `checkpoint` in `on_checkpoint`.
    fn store(&self, _: &Checkpoint) -> Result<(), CheckpointStoreError> {
        Ok(())
    }

    fn store_blocks(&self) -> bool {
        false
    }

    /// Nothing: `on_checkpoint` runs before a phase change's persistence too.
    fn store_transition(&self, _: &Checkpoint) -> Result<(), CheckpointStoreError> {
        Ok(())
    }
}
