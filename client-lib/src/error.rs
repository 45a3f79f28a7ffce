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
    /// A bootstrap server answered `503 not_yet_at_scn`: its database has not reached the SCN the
    /// consumer needs yet (or holds nothing yet). The client waits (a stall round) and asks again.
    #[error(
        "{server} has not reached SCN {requested} yet (its log ends at {log_last}); waiting for its producer (check its /health)",
        requested = fmt_scn(*requested), log_last = fmt_scn(*log_last)
    )]
    NotYetAtScn {
        /// The bootstrap server's URL.
        server: String,
        /// The SCN asked for (`None`: a snapshot).
        requested: Option<Scn>,
        /// The newest window of its log.
        log_last: Option<Scn>,
    },
    /// No relay and no bootstrap server could serve the checkpoint for longer than
    /// `stall.max_wait` (see [`StallConfig`](crate::StallConfig)).
    #[error(
        "no server could serve the events after SCN {scn} for {waited:?}: {reason}; consumption stopped at that checkpoint (raise stall.max_wait or unset it to keep waiting)"
    )]
    Stalled {
        /// The checkpoint's SCN.
        scn: Scn,
        /// How long the client waited.
        waited: std::time::Duration,
        /// Why, and what to check.
        reason: String,
    },
    /// Every relay (or bootstrap server) kept failing for longer than allowed.
    #[error("gave up after {attempts} failed requests; last error: {last}")]
    Unavailable {
        /// Requests attempted.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
}

fn fmt_scn(scn: Option<Scn>) -> String {
    scn.map_or_else(|| "none".into(), |s| s.to_string())
}

impl ClientError {
    /// Whether retrying (on this or another server) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Transient { .. })
    }
}
