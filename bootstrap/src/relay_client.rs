//! A minimal client of the relay's HTTP API (`docs/protocol.md`), isolated here until the client
//! library offers a consumer API the producer can use.
//!
//! Requests are HTTP/1.0 `GET`s on a fresh loopback-friendly connection: the server answers without
//! chunked encoding and closes, so the body is everything up to EOF. Bodies are bounded.

use std::time::Duration;

use databus_core::{Checkpoint, Scn};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BootstrapError;

/// Largest response accepted (the relay's own maximum is 16 MiB of frames).
const MAX_RESPONSE: usize = 64 << 20;

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One relay, by base URL `http://host:port`.
#[derive(Debug, Clone)]
pub struct RelayClient {
    url: String,
    authority: String,
    timeout: Duration,
}

/// A source as `/v1/sources` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RelaySource {
    /// Its id.
    pub id: u16,
    /// Its name.
    pub name: String,
    /// `database.table`.
    pub table: String,
    /// The relay buffer holding it.
    pub buffer: String,
}

/// What one `/v1/stream` call returned.
#[derive(Debug)]
pub enum StreamAnswer {
    /// Frames and the next checkpoint.
    Data {
        /// The frames.
        body: Vec<u8>,
        /// The checkpoint to send next.
        checkpoint: Checkpoint,
        /// Whether more is available at once.
        more: bool,
    },
    /// `410 scn_not_found`: the relay no longer holds what follows the checkpoint.
    ScnNotFound {
        /// The relay's `prev_scn` (the last window it evicted, or its resume floor).
        prev_scn: Option<Scn>,
        /// The relay's oldest window.
        min_scn: Option<Scn>,
    },
}

impl RelayClient {
    /// A client of the relay at `url` (`http://host:port`, no path).
    pub fn new(url: &str, timeout: Duration) -> Result<RelayClient, BootstrapError> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| {
                BootstrapError::Config(format!(
                    "relay url {url:?} is not of the form http://host:port"
                ))
            })?;
        Ok(RelayClient {
            url: url.trim_end_matches('/').to_owned(),
            authority: authority.to_owned(),
            timeout,
        })
    }

    /// The relay's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn transient(&self, message: String) -> BootstrapError {
        BootstrapError::RelayTransient {
            url: self.url.clone(),
            message,
        }
    }

    /// `GET path_and_query`.
    pub async fn get(&self, path_and_query: &str) -> Result<HttpResponse, BootstrapError> {
        tokio::time::timeout(self.timeout, self.get_inner(path_and_query))
            .await
            .map_err(|_| self.transient(format!("no answer within {:?}", self.timeout)))?
    }

    async fn get_inner(&self, path_and_query: &str) -> Result<HttpResponse, BootstrapError> {
        let mut conn = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.transient(format!("cannot connect: {e}")))?;
        let request = format!(
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\nAccept: */*\r\n\r\n",
            self.authority
        );
        conn.write_all(request.as_bytes())
            .await
            .map_err(|e| self.transient(format!("cannot send request: {e}")))?;
        let mut raw = Vec::with_capacity(64 * 1024);
        loop {
            let mut chunk = [0u8; 64 * 1024];
            let n = conn
                .read(&mut chunk)
                .await
                .map_err(|e| self.transient(format!("cannot read response: {e}")))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
            if raw.len() > MAX_RESPONSE {
                return Err(self.transient(format!("response larger than {MAX_RESPONSE} bytes")));
            }
        }
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| self.transient("response without a header end".into()))?;
        let head = std::str::from_utf8(&raw[..head_end])
            .map_err(|_| self.transient("response header is not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.transient("malformed status line".into()))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect::<Vec<_>>();
        let mut body = raw.split_off(head_end + 4);
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
        {
            body = dechunk(&body).ok_or_else(|| self.transient("malformed chunked body".into()))?;
        } else if let Some(len) = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            if body.len() < len {
                return Err(self.transient(format!(
                    "response body cut short ({} of {len} bytes)",
                    body.len()
                )));
            }
            body.truncate(len);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    fn definite(&self, what: &str, r: &HttpResponse) -> BootstrapError {
        let message = format!(
            "{what} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
        );
        if r.status >= 500 {
            self.transient(message)
        } else {
            BootstrapError::RelayDefinite {
                url: self.url.clone(),
                message,
            }
        }
    }

    /// `GET /v1/sources`.
    pub async fn sources(&self) -> Result<Vec<RelaySource>, BootstrapError> {
        #[derive(Deserialize)]
        struct Sources {
            sources: Vec<RelaySource>,
        }
        let r = self.get("/v1/sources").await?;
        if r.status != 200 {
            return Err(self.definite("/v1/sources", &r));
        }
        serde_json::from_slice::<Sources>(&r.body)
            .map(|s| s.sources)
            .map_err(|e| self.transient(format!("/v1/sources is not the expected JSON: {e}")))
    }

    /// `GET /v1/stream` of `buffer` after `checkpoint`, unfiltered, binary.
    pub async fn stream(
        &self,
        buffer: &str,
        checkpoint: &Checkpoint,
        max_bytes: usize,
        wait_ms: u64,
    ) -> Result<StreamAnswer, BootstrapError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("buffer", buffer)
            .append_pair("checkpoint", &checkpoint.to_json())
            .append_pair("max_bytes", &max_bytes.to_string())
            .append_pair("wait_ms", &wait_ms.to_string())
            .finish();
        let r = self.get(&format!("/v1/stream?{query}")).await?;
        match r.status {
            200 => {
                let cp = r.header("x-databus-checkpoint").ok_or_else(|| {
                    self.transient("stream answer without X-Databus-Checkpoint".into())
                })?;
                let checkpoint = Checkpoint::from_json(cp)
                    .map_err(|e| self.transient(format!("bad checkpoint header: {e}")))?;
                let more = r.header("x-databus-more") == Some("true");
                Ok(StreamAnswer::Data {
                    body: r.body,
                    checkpoint,
                    more,
                })
            }
            410 => {
                #[derive(Deserialize)]
                struct Gone {
                    prev_scn: Option<u64>,
                    min_scn: Option<u64>,
                }
                let g: Gone = serde_json::from_slice(&r.body)
                    .map_err(|e| self.transient(format!("bad 410 body: {e}")))?;
                Ok(StreamAnswer::ScnNotFound {
                    prev_scn: g.prev_scn.map(Scn::new),
                    min_scn: g.min_scn.map(Scn::new),
                })
            }
            _ => Err(self.definite("/v1/stream", &r)),
        }
    }
}

/// Decodes a chunked body (`None` if malformed).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}
