//! The crate's one error type.

/// Why a filter spec was rejected.
///
/// Every variant is *definite*: retrying the same input fails the same way. [`FilterError::InvalidParam`]
/// and [`FilterError::InvalidQuery`] come from what a client sent and map to HTTP 400 (see
/// [`FilterError::is_client_error`]); [`FilterError::BadColumn`] is a mistake in the calling code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A filter parameter (query parameter or the same field of the serde form) is malformed or out of
    /// bounds. `param` is its name as in the query (`sources`, `partition`, `partition.2`).
    #[error("invalid filter parameter `{param}`: {reason}")]
    InvalidParam {
        /// The parameter's name.
        param: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The query string as a whole is malformed (too long, bad percent-encoding, an unknown
    /// filter-looking parameter).
    #[error("invalid filter query: {0}")]
    InvalidQuery(String),
    /// A SQL column name given to [`SqlColumns::new`](crate::SqlColumns::new) is not a plain identifier.
    #[error(
        "invalid sql column name {0:?}: use an identifier of ASCII letters, digits and underscores, \
         optionally qualified as table.column"
    )]
    BadColumn(String),
}

impl FilterError {
    /// Whether the error is the client's (HTTP 400) rather than the calling code's.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            FilterError::InvalidParam { .. } | FilterError::InvalidQuery(_)
        )
    }

    pub(crate) fn param(param: impl Into<String>, reason: impl Into<String>) -> Self {
        FilterError::InvalidParam {
            param: param.into(),
            reason: reason.into(),
        }
    }
}
