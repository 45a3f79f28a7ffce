//! Client side of the bootstrap: snapshot or consolidated delta, catch-up, back to the relay.

use databus_core::Checkpoint;

use crate::ClientError;
use crate::fetcher::{FetchStop, Fetcher};

impl Fetcher {
    /// Runs a bootstrap from `checkpoint` (in a bootstrap mode) and returns the online checkpoint to
    /// follow the relay from.
    pub(crate) async fn bootstrap(
        &mut self,
        checkpoint: Checkpoint,
    ) -> Result<Checkpoint, FetchStop> {
        let _ = checkpoint;
        Err(FetchStop::Error(ClientError::Bootstrap(
            "bootstrap is not implemented yet".into(),
        )))
    }
}
