//! The crate's error type.

/// Everything that can go wrong in the relay outside of a single HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration file is not valid TOML or does not match the schema.
    #[error("invalid relay configuration: {0}")]
    ConfigSyntax(String),
    /// A configuration field has a bad value.
    #[error("invalid relay configuration: {field}: {message}")]
    Config {
        /// The field, e.g. `sources[0].buffer_size`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The persisted state file is corrupt.
    #[error(
        "relay state file {path} is unusable: {reason}; fix or remove it (the relay then starts from the source's current position)"
    )]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A source's connector failed with a definite error (see its message for the fix).
    #[error("source {name}: {error}")]
    Connector {
        /// The source's name.
        name: String,
        /// The connector's error.
        #[source]
        error: databus_connectors::ConnectorError,
    },
    /// A source's pipeline cannot go on (a row that does not encode, a window larger than the buffer).
    #[error("source {name}: {message}")]
    Ingest {
        /// The source's name.
        name: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The relay cannot be set up (buffer, schema registry, connector construction).
    #[error("cannot start the relay: {0}")]
    Setup(String),
}

impl RelayError {
    /// Whether this is a file operation that failed for a passing reason: out of file descriptors
    /// (`EMFILE`, `ENFILE`), a full disk or quota (`ENOSPC`, `EDQUOT`), no memory, interrupted or
    /// would block. Such failures of the state file are retried, never fatal.
    pub fn is_transient_io(&self) -> bool {
        let RelayError::Io { source, .. } = self else {
            return false;
        };
        matches!(
            source.raw_os_error(),
            Some(4 | 11 | 12 | 23 | 24 | 28 | 122)
        ) || matches!(
            source.kind(),
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
        )
    }
}
