//! Phase changes of a consumer, as the pull API ([`WindowStream::next_item`]) yields them between
//! windows. The push API calls the matching [`DatabusConsumer`] callbacks instead.
//!
//! [`WindowStream::next_item`]: crate::WindowStream::next_item
//! [`DatabusConsumer`]: crate::DatabusConsumer

use databus_core::{Checkpoint, Scn};

use crate::{BootstrapInfo, Window};

/// A phase change, with the checkpoint that stands before what follows it (persist it with
/// [`WindowStream::commit_transition`](crate::WindowStream::commit_transition)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A bootstrap starts (`on_start_bootstrap`): snapshot or delta windows follow.
    StartBootstrap {
        /// Snapshot or delta since an SCN.
        info: BootstrapInfo,
        /// The bootstrap's start.
        checkpoint: Checkpoint,
    },
    /// The snapshot is done (`on_start_catchup`): catch-up windows from the log up to `target`
    /// follow.
    StartCatchup {
        /// The SCN catch-up ends at.
        target: Scn,
        /// Catch-up at its start.
        checkpoint: Checkpoint,
    },
    /// The bootstrap is over and caught up at `scn` (`on_end_bootstrap`): relay windows follow.
    EndBootstrap {
        /// The SCN the consumer holds the source's state at.
        scn: Scn,
        /// Online at `scn`.
        checkpoint: Checkpoint,
    },
}

impl Transition {
    /// The checkpoint to persist once the phase change is handled.
    pub fn checkpoint(&self) -> &Checkpoint {
        match self {
            Transition::StartBootstrap { checkpoint, .. }
            | Transition::StartCatchup { checkpoint, .. }
            | Transition::EndBootstrap { checkpoint, .. } => checkpoint,
        }
    }
}

/// What [`WindowStream::next_item`](crate::WindowStream::next_item) yields.
#[derive(Debug)]
pub enum StreamItem {
    /// A whole window (commit it with [`WindowStream::commit`](crate::WindowStream::commit)).
    Window(Window),
    /// A phase change between windows.
    Transition(Transition),
}
