//! The crate's one error type.

use databus_core::Scn;

/// Everything that can go wrong in the bootstrap server outside of a single HTTP request (those are
/// [`crate::http::ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The configuration is invalid.
    #[error("invalid bootstrap configuration: {0}")]
    Config(String),
    /// The storage failed (I/O, SQLite). Transient unless the database is corrupt.
    #[error("bootstrap storage: {0}")]
    Storage(String),
    /// Stored or received data does not make sense.
    #[error("corrupt bootstrap data: {0}")]
    Corrupt(String),
    /// An append to the log before it was started.
    #[error("the bootstrap log was never started; start the producer (or a seed) first")]
    LogNotStarted,
    /// A window not after the last one stored.
    #[error("SCN regression in the bootstrap log: last window {last}, got window {got}")]
    ScnRegression {
        /// The last window stored.
        last: Scn,
        /// The window refused.
        got: Scn,
    },
    /// The relay could not be reached or answered with an error worth retrying.
    #[error("relay {url}: {message}")]
    RelayTransient {
        /// The relay.
        url: String,
        /// What happened.
        message: String,
        /// When the relay asked to be retried (its `Retry-After`), if it did.
        retry_after: Option<std::time::Duration>,
    },
    /// The relay no longer holds the events after the log's last window: the log has a gap.
    #[error(
        "relay {url} no longer holds the events after SCN {scn}: the bootstrap log would have a gap; \
         configure [source] (to fill it from the source's binlog) and [seed] (to re-seed by itself when the binlog is gone too)"
    )]
    RelayGap {
        /// The relay.
        url: String,
        /// The log's last window.
        scn: Scn,
        /// The SCN after which the relay still holds every window (its `prev_scn`), if it said.
        relay_floor: Option<Scn>,
    },
    /// The relay gap cannot be filled from the source: its binlog no longer has the windows after the
    /// log's last one (or the source refuses the stream).
    #[error(
        "cannot fill the relay gap after SCN {after} from the source: {message}; the source no longer has those changes: configure [seed] so that the producer re-seeds into a new generation by itself"
    )]
    GapUnfillable {
        /// The log's last window.
        after: Scn,
        /// The source's error.
        message: String,
    },
    /// The relay answered in a way that will not change by retrying.
    #[error("relay {url}: {message}")]
    RelayDefinite {
        /// The relay.
        url: String,
        /// What happened and how to fix it.
        message: String,
    },
    /// The source database (seeding) failed.
    #[error("seed source: {0}")]
    Seed(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl BootstrapError {
    /// Whether retrying (with backoff) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BootstrapError::RelayTransient { .. }
                | BootstrapError::Storage(_)
                | BootstrapError::Io { .. }
        )
    }

    /// How long the relay asked to wait before a retry (`Retry-After` of a busy relay), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            BootstrapError::RelayTransient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
