//! A list of servers with failover: requests go to the current server; on a transient error the next
//! server is tried after an exponential backoff with jitter.

use std::time::Duration;

use databus_core::{Checkpoint, Scn};

use crate::ClientError;
use crate::http::{HttpResponse, HttpServer};
use crate::stats::ClientStats;
use databus_http::backoff::{Backoff, BackoffConfig};
use databus_http::protocol::StreamAnswer;

/// Servers with failover.
#[derive(Debug)]
pub(crate) struct ServerPool {
    servers: Vec<HttpServer>,
    current: usize,
    backoff: Backoff,
    max_failures: Option<u32>,
    request_timeout: Duration,
    stats: std::sync::Arc<ClientStats>,
    /// Where failed requests are reported (to the consumer's `on_error`).
    warnings: Option<tokio::sync::mpsc::UnboundedSender<crate::fetcher::Delivery>>,
    /// The largest response body accepted (a single event may exceed `max_bytes`).
    body_limit: usize,
}

/// One answer of `GET /v1/stream`.
#[derive(Debug)]
pub(crate) struct StreamResponse {
    /// Concatenated frames.
    pub(crate) body: bytes::Bytes,
    /// The checkpoint to send next.
    pub(crate) checkpoint: Checkpoint,
    /// Which server answered.
    pub(crate) server: String,
}

impl ServerPool {
    pub(crate) fn new(
        urls: &[String],
        options: &databus_http::ClientOptions,
        backoff: BackoffConfig,
        max_failures: Option<u32>,
        request_timeout: Duration,
        stats: std::sync::Arc<ClientStats>,
    ) -> Result<ServerPool, ClientError> {
        let servers = urls
            .iter()
            .map(|u| HttpServer::new(u, options))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ClientError::Config("no server URL given".into()));
        }
        Ok(ServerPool {
            servers,
            current: 0,
            backoff: Backoff::new(backoff),
            max_failures,
            request_timeout,
            stats,
            warnings: None,
            body_limit: 16 << 20,
        })
    }

    /// Accepts response bodies up to `limit` bytes (and always up to `max_bytes`).
    pub(crate) fn set_body_limit(&mut self, limit: usize) {
        self.body_limit = limit;
    }

    /// Reports every failed request to `tx` as [`Delivery::Warning`](crate::fetcher::Delivery).
    pub(crate) fn report_to(
        &mut self,
        tx: tokio::sync::mpsc::UnboundedSender<crate::fetcher::Delivery>,
    ) {
        self.warnings = Some(tx);
    }

    /// The server requests currently go to.
    pub(crate) fn current_url(&self) -> &str {
        self.servers[self.current].url()
    }

    fn fail_over(&mut self) {
        self.current = (self.current + 1) % self.servers.len();
    }

    /// `GET path` with failover on transient errors; other statuses come back as errors (`4xx`) or
    /// responses (`2xx`). `accept` may turn a response into a result or an error (e.g. `410`), and says
    /// whether that error holds on every server.
    pub(crate) async fn request<T>(
        &mut self,
        path: &str,
        wait: Duration,
        limit: usize,
        mut accept: impl FnMut(HttpResponse, &str) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut failures = 0u32;
        let mut scn_not_found = vec![false; self.servers.len()];
        loop {
            let timeout = wait + self.request_timeout;
            let server = &mut self.servers[self.current];
            let url = server.url().to_owned();
            let result = match server.get(path, timeout, limit).await {
                Ok(resp) if resp.status == 410 || (200..300).contains(&resp.status) => {
                    accept(resp, &url)
                }
                Ok(resp) => Err(resp.into_error(&url)),
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => {
                    self.stats.on_request(true);
                    self.backoff.reset();
                    return Ok(value);
                }
                Err(e @ (ClientError::ScnNotFound { .. } | ClientError::NotYetAtScn { .. })) => {
                    // This server cannot serve the position (yet): another one may.
                    scn_not_found[self.current] = true;
                    if scn_not_found.iter().all(|x| *x) {
                        return Err(e);
                    }
                    tracing::warn!(server = %url, error = %e, "server cannot serve the checkpoint; trying the next");
                    if let Some(tx) = &self.warnings {
                        let _ = tx.send(crate::fetcher::Delivery::Warning(e));
                    }
                    self.fail_over();
                    continue;
                }
                Err(e) if e.is_transient() => {
                    failures += 1;
                    self.stats.on_request(false);
                    scn_not_found[self.current] = false;
                    if self.max_failures.is_some_and(|max| failures >= max) {
                        return Err(ClientError::Unavailable {
                            attempts: failures,
                            last: Box::new(e),
                        });
                    }
                    let delay = self.backoff.next_delay();
                    tracing::warn!(server = %url, error = %e, ?delay, "request failed; failing over");
                    if let Some(tx) = &self.warnings {
                        let _ = tx.send(crate::fetcher::Delivery::Warning(e));
                    }
                    self.fail_over();
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET path` as JSON, with failover.
    pub(crate) async fn get_json(&mut self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.request(path, Duration::ZERO, 16 << 20, |resp, url| {
            if resp.status == 410 {
                return Err(resp.into_error(url));
            }
            resp.json(url)
        })
        .await
    }

    /// One `GET /v1/stream` request from `checkpoint`.
    pub(crate) async fn stream(
        &mut self,
        checkpoint: &Checkpoint,
        filter_query: &str,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<StreamResponse, ClientError> {
        let cp: String = form_urlencoded::byte_serialize(checkpoint.to_json().as_bytes()).collect();
        let mut path = format!(
            "/v1/stream?checkpoint={cp}&max_bytes={max_bytes}&wait_ms={}",
            wait.as_millis()
        );
        if !filter_query.is_empty() {
            path.push('&');
            path.push_str(filter_query);
        }
        let requested = checkpoint.window_scn;
        // A body exceeds `max_bytes` only when its first frame alone does.
        let limit = max_bytes.max(self.body_limit);
        self.request(&path, wait, limit, |resp, url| {
            parse_stream(resp, url, requested)
        })
        .await
    }
}

fn parse_stream(
    resp: HttpResponse,
    url: &str,
    requested: Scn,
) -> Result<StreamResponse, ClientError> {
    let protocol = |message: String| ClientError::Protocol {
        server: url.to_owned(),
        message,
    };
    let headers = resp.headers;
    let answer = StreamAnswer::from_parts(
        resp.status,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        resp.body,
    )
    .map_err(|e| protocol(e.to_string()))?;
    match answer {
        StreamAnswer::Data {
            body, checkpoint, ..
        } => Ok(StreamResponse {
            body,
            checkpoint,
            server: url.to_owned(),
        }),
        StreamAnswer::Gone(e) => Err(ClientError::ScnNotFound {
            requested,
            message: e.message,
        }),
        // `request` hands over only 2xx and 410 answers.
        other => Err(protocol(format!("unexpected stream answer {other:?}"))),
    }
}
