//! The client's error type.

use databus_core::{CheckpointError, Scn};

use crate::checkpoint::CheckpointStoreError;

/// Everything that can go wrong in the client, classified by recovery: [`ClientError::is_transient`]
/// errors are retried (with failover and backoff); the others stop consumption and tell the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A network failure, timeout or `5xx` answer from one server (retried on the next server).
    #[error("{server}: {message}")]
    Transient {
        /// The server's URL.
        server: String,
        /// What failed.
        message: String,
    },
    /// Every relay answered `410 scn_not_found`: the checkpoint is older than what the relays hold.
    #[error(
        "no relay holds the events after SCN {requested}: {message}; configure a bootstrap server to replay the missing history, or start from the oldest window the relay holds (StartPosition::Oldest) or from now, accepting to miss it"
    )]
    ScnNotFound {
        /// The SCN asked for.
        requested: Scn,
        /// The relay's explanation (the last one seen).
        message: String,
    },
    /// A server refused the request as malformed (a `4xx` other than `410`): a configuration error.
    #[error("{server} refused the request ({status} {code}): {message}")]
    Refused {
        /// The server's URL.
        server: String,
        /// HTTP status.
        status: u16,
        /// The machine-readable error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A server sent something that breaks the protocol (bad frame, bad header, SCN going backwards).
    #[error("protocol error from {server}: {message}")]
    Protocol {
        /// The server's URL.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// The client configuration is invalid.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A checkpoint store failed.
    #[error(transparent)]
    Store(#[from] CheckpointStoreError),
    /// A checkpoint transition was refused (a bug or a server breaking the window order).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A callback returned [`ConsumerOutcome::Fatal`](crate::ConsumerOutcome::Fatal).
    #[error("consumer callback {callback} returned fatal at window {scn}")]
    Fatal {
        /// Which callback.
        callback: &'static str,
        /// The window.
        scn: Scn,
    },
    /// A window kept failing after every retry, and the failure policy is to stop.
    #[error(
        "window {scn} failed {attempts} times (last: {last}); consumption stopped at the previous checkpoint (policy stop; opt in to skip-and-record to go on)"
    )]
    RetriesExhausted {
        /// The window.
        scn: Scn,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A payload could not be decoded.
    #[error("cannot decode event of window {scn}: {message}")]
    Decode {
        /// The window.
        scn: Scn,
        /// Why.
        message: String,
    },
    /// The bootstrap server failed in a way that is not retried.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// Every relay (or bootstrap server) kept failing for longer than allowed.
    #[error("gave up after {attempts} failed requests; last error: {last}")]
    Unavailable {
        /// Requests attempted.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether retrying (on this or another server) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Transient { .. })
    }
}
