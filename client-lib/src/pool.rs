//! A list of servers with failover: requests go to the current server; on a transient error the next
//! server is tried after an exponential backoff with jitter.

use std::time::Duration;

use databus_core::Scn;

use crate::ClientError;
use crate::http::{HttpResponse, HttpServer, ResponseExt};
use crate::stats::ClientStats;
use databus_http::backoff::{Backoff, BackoffConfig};
use databus_http::follow::{Batch, FollowError, StreamFollower};

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
            let mut retry_after = None;
            let result = match server.get(path, timeout, limit).await {
                Ok(resp) if resp.status == 410 || (200..300).contains(&resp.status) => {
                    accept(resp, &url)
                }
                Ok(resp) => {
                    retry_after = databus_http::follow::retry_after(&resp.headers);
                    Err(resp.into_error(&url))
                }
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
                    // The shared jittered backoff, never shorter than the server's Retry-After.
                    let delay = self
                        .backoff
                        .next_delay()
                        .max(retry_after.unwrap_or_default());
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

    /// One `GET /v1/stream` request of `follower` (the shared follower: request, checkpoint, answer),
    /// with this pool's failover; `410` is [`ClientError::ScnNotFound`] once every relay answered it.
    pub(crate) async fn stream(
        &mut self,
        follower: &mut StreamFollower,
    ) -> Result<(Batch, String), ClientError> {
        let requested = follower.checkpoint().map_or(Scn::ZERO, |cp| cp.window_scn);
        let path = follower.path();
        let wait = follower.query().wait;
        // A body exceeds `max_bytes` only when its first frame alone does.
        let limit = follower.query().max_bytes.unwrap_or(0).max(self.body_limit);
        self.request(&path, wait, limit, |resp, url| {
            match follower.accept(url, resp) {
                Ok(batch) => Ok((batch, url.to_owned())),
                Err(FollowError::Gone { envelope, .. }) => Err(ClientError::ScnNotFound {
                    requested,
                    message: envelope.message,
                }),
                Err(e) => Err(ClientError::Protocol {
                    server: url.to_owned(),
                    message: e.to_string(),
                }),
            }
        })
        .await
    }
}
