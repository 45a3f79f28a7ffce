//! The CLI's view of a relay (or bootstrap server): its URL with the client settings (`--ca-cert`,
//! `--token`), over the shared [`databus_http::HttpClient`] (http or https, bearer token, bounded body).

use std::time::Duration;

use anyhow::{Context, Result};
use databus_http::{ClientOptions, HttpClient};

use crate::UsageError;

/// The largest response body accepted (the relay's largest budget plus room for JSON rendering).
pub(crate) const MAX_BODY: usize = 256 << 20;

/// A server base URL, `http[s]://host:port`, with the CA and token requests use.
#[derive(Debug, Clone)]
pub struct RelayUrl {
    client: HttpClient,
}

impl RelayUrl {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` is accepted), no CA file, no
    /// token.
    pub fn parse(url: &str) -> Result<RelayUrl> {
        RelayUrl::with_options(url, &ClientOptions::default())
    }

    /// Parses `url` and reads the CA file of `options` (`--ca-cert`); requests send its token.
    pub fn with_options(url: &str, options: &ClientOptions) -> Result<RelayUrl> {
        let client = HttpClient::new(url, options)?;
        let endpoint = client.endpoint();
        if !endpoint.prefix().is_empty() {
            anyhow::bail!("URL {url:?} has a path; use http://host:port or https://host:port");
        }
        Ok(RelayUrl {
            client: client.with_user_agent(concat!("databus-cli/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        self.client.endpoint().authority()
    }

    /// The client requests go through.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }
}

impl std::fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.client.url())
    }
}

/// An answer: the shared [`databus_http::Response`] (status, headers, the whole body; `header` and
/// `error_message`), read as JSON through [`AnswerJson`].
pub use databus_http::Response as Answer;

/// The body of an [`Answer`] as JSON.
pub trait AnswerJson {
    /// The body as JSON.
    fn json(&self) -> Result<serde_json::Value>;
}

impl AnswerJson for Answer {
    fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the relay's answer is not JSON")
    }
}

/// A connection to a server that was reached and then broke or was closed (a restart, an overloaded
/// server shedding connections): worth retrying, unlike a server that cannot be reached at all.
#[derive(Debug)]
pub struct ConnectionLost(pub String);

impl std::fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectionLost {}

/// One `GET path_and_query` to `relay` within `timeout`. A `401` (missing or wrong token) is a
/// [`UsageError`] naming `--token`; any other status is returned.
pub async fn get(relay: &RelayUrl, path_and_query: &str, timeout: Duration) -> Result<Answer> {
    let answer = relay
        .client
        .get(path_and_query, timeout, MAX_BODY)
        .await
        .map_err(|e| transport_error(relay, e))?;
    if answer.status == 401 {
        return Err(unauthorized(relay, &answer.error_message()).into());
    }
    Ok(answer)
}

/// A request to `relay` that did not complete: a server that cannot be reached ("is it running?"), a
/// [`ConnectionLost`], an untrusted certificate (a [`UsageError`]), a timeout.
pub fn transport_error(relay: &RelayUrl, e: databus_http::HttpError) -> anyhow::Error {
    match e {
        databus_http::HttpError::Connection {
            source: Some(io), ..
        } => anyhow::Error::new(io).context(format!("cannot connect to {relay}; is it running?")),
        databus_http::HttpError::Connection { message, .. } => {
            anyhow::Error::new(ConnectionLost(message))
                .context(format!("lost the connection to {relay}"))
        }
        databus_http::HttpError::Certificate { .. } => UsageError(e.to_string()).into(),
        other => other.into(),
    }
}

/// The [`UsageError`] of a `401` of `relay`, naming `--token`.
pub fn unauthorized(relay: &RelayUrl, message: &str) -> UsageError {
    UsageError(format!(
        "{relay} refused the request (401 unauthorized): {message}; {}",
        if relay.client().has_token() {
            "check --token / DATABUS_TOKEN against the server's tokens"
        } else {
            "give a token with --token or DATABUS_TOKEN"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        assert_eq!(
            RelayUrl::parse("http://127.0.0.1:11140/")
                .unwrap()
                .authority(),
            "127.0.0.1:11140"
        );
        let https = RelayUrl::parse("https://localhost:1").unwrap();
        assert_eq!(https.to_string(), "https://localhost:1");
        for bad in ["127.0.0.1:1", "ftp://x:1", "http://x:1/a"] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
