use std::time::Duration;

/// Every way the HTTP layer fails. [`HttpError::is_transient`] says whether a retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A setting is wrong: a URL, a token, a certificate or key file (definite).
    #[error("{0}")]
    Config(String),
    /// The server cannot be reached or the connection broke (transient).
    #[error("{url}: {message}")]
    Connection {
        /// The server's base URL.
        url: String,
        /// What happened (the cause's text included).
        message: String,
        /// The socket error behind it, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The server's certificate is not trusted or does not match its name (definite: retrying gets the
    /// same certificate).
    #[error(
        "{url}: the server's TLS certificate is not accepted ({message}); give the CA that signed it (--ca-cert / ca_cert) or fix the URL's host name"
    )]
    Certificate {
        /// The server's base URL.
        url: String,
        /// rustls's reason.
        message: String,
    },
    /// No answer within the timeout (transient).
    #[error("{url}: no answer within {after:?}")]
    Timeout {
        /// The server's base URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The response body exceeds the caller's limit (definite: the same request gets the same body).
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge {
        /// The server's base URL.
        url: String,
        /// The limit.
        limit: usize,
    },
}

impl HttpError {
    /// Whether retrying (possibly elsewhere) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Connection { .. } | HttpError::Timeout { .. }
        )
    }
}
