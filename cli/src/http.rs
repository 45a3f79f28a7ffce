//! A minimal HTTP/1.1 GET client for the relay API (one request per connection, bounded body).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// The largest response body accepted (the relay's largest budget plus room for JSON rendering).
const MAX_BODY: usize = 256 << 20;

/// A relay base URL, `http://host:port`, split into its authority.
#[derive(Debug, Clone)]
pub struct RelayUrl {
    authority: String,
}

impl RelayUrl {
    /// Parses `http://host:port` (a trailing `/` is accepted; `https` is not supported yet).
    pub fn parse(url: &str) -> Result<RelayUrl> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("relay URL {url:?} does not start with http://; use http://host:port")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            bail!("relay URL {url:?} is not of the form http://host:port");
        }
        Ok(RelayUrl {
            authority: authority.to_owned(),
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl std::fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl Answer {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the relay's answer is not JSON")
    }

    /// The relay's error message (`message` of its JSON error body), or the status.
    pub fn error_message(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// One `GET path_and_query` on a fresh connection to `relay`, within `timeout`.
pub async fn get(relay: &RelayUrl, path_and_query: &str, timeout: Duration) -> Result<Answer> {
    tokio::time::timeout(timeout, get_inner(relay, path_and_query))
        .await
        .with_context(|| format!("no answer from {relay} within {timeout:?}"))?
}

async fn get_inner(relay: &RelayUrl, path_and_query: &str) -> Result<Answer> {
    let stream = tokio::net::TcpStream::connect(relay.authority())
        .await
        .with_context(|| format!("cannot connect to the relay at {relay}; is it running?"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {relay}"))?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path_and_query)
        .header(hyper::header::HOST, relay.authority())
        .body(Empty::<bytes::Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {path_and_query} on {relay}"))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer of {relay}: {e}"))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
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
        for bad in ["127.0.0.1:1", "https://x:1", "http://x", "http://x:1/a"] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
