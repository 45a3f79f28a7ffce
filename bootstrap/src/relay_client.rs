//! A minimal client of the relay's HTTP API (`docs/protocol.md`): `/v1/sources`, schemas, and the
//! `stream` through the shared follower ([`databus_http::follow::StreamFollower`], the one
//! implementation of the protocol every follower uses); the producer's own policy (relay gaps) is in
//! [`crate::producer`].
//!
//! Requests go through the shared [`databus_http::HttpClient`]: `http` or `https` (a custom CA file
//! for self-signed certificates), an optional bearer token, one kept-alive connection, bounded bodies.
//! A `401` (missing or wrong token) and an untrusted certificate are definite errors.

use std::time::Duration;

use databus_core::{Checkpoint, Scn};
use databus_http::follow::{FollowError, StreamFollower};
use databus_http::protocol::StreamQuery;
use databus_http::{ClientOptions, HttpClient};
use serde::Deserialize;

use crate::BootstrapError;

/// Largest response accepted (the relay's own maximum is 16 MiB of frames).
const MAX_RESPONSE: usize = 64 << 20;

/// An HTTP response: the shared [`databus_http::Response`] (status, headers, the whole body).
pub use databus_http::Response as HttpResponse;

/// One relay, by base URL `http[s]://host:port`.
#[derive(Debug, Clone)]
pub struct RelayClient {
    url: String,
    http: HttpClient,
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
    /// A client of the relay at `url` (`http[s]://host:port`, no path), no CA file, no token.
    pub fn new(url: &str, timeout: Duration) -> Result<RelayClient, BootstrapError> {
        RelayClient::with_options(url, timeout, &ClientOptions::default())
    }

    /// A client of the relay at `url` trusting `options.ca_cert` and sending `options.token`.
    pub fn with_options(
        url: &str,
        timeout: Duration,
        options: &ClientOptions,
    ) -> Result<RelayClient, BootstrapError> {
        let bad = |why: String| BootstrapError::Config(format!("relay url: {why}"));
        let http = HttpClient::new(url, options).map_err(|e| bad(e.to_string()))?;
        if !http.endpoint().prefix().is_empty() {
            return Err(bad(format!(
                "{url:?} is not of the form http://host:port or https://host:port"
            )));
        }
        Ok(RelayClient {
            url: http.url().to_owned(),
            http: http.with_user_agent("databus-bootstrap"),
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
            retry_after: None,
        }
    }

    /// `GET path_and_query`.
    pub async fn get(&self, path_and_query: &str) -> Result<HttpResponse, BootstrapError> {
        self.http
            .get(path_and_query, self.timeout, MAX_RESPONSE)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    self.transient(e.to_string())
                } else {
                    BootstrapError::RelayDefinite {
                        url: self.url.clone(),
                        message: e.to_string(),
                    }
                }
            })
    }

    fn definite(&self, what: &str, r: &HttpResponse) -> BootstrapError {
        if r.status == 401 {
            let message: Option<String> = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned));
            return BootstrapError::RelayDefinite {
                url: self.url.clone(),
                message: format!(
                    "{what} answered 401 unauthorized: {}; set relay.token_env or relay.token_file to a token the relay accepts",
                    message.unwrap_or_default()
                ),
            };
        }
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

    /// A follower of `buffer`'s `stream` after `checkpoint`, unfiltered, binary, with the long poll
    /// `wait` and the budget `max_bytes`: the shared [`StreamFollower`] (one implementation of the
    /// protocol for every follower).
    pub fn follower(
        &self,
        buffer: &str,
        checkpoint: Checkpoint,
        max_bytes: usize,
        wait: Duration,
    ) -> StreamFollower {
        let query = StreamQuery {
            buffer: Some(buffer.to_owned()),
            wait,
            max_bytes: Some(max_bytes),
            ..StreamQuery::default()
        };
        StreamFollower::new(query, Some(checkpoint))
            .with_timeout_slack(self.timeout.saturating_sub(wait))
            .with_body_limit(MAX_RESPONSE)
    }

    /// The next answer of `follower` (which moves to the answer's checkpoint): data, or the relay's
    /// `410 scn_not_found`; every other failure is an error, transient (unreachable, `5xx`, a broken
    /// answer) or definite (`401` naming the token settings, other `4xx`, an untrusted certificate).
    pub async fn stream(
        &self,
        follower: &mut StreamFollower,
    ) -> Result<StreamAnswer, BootstrapError> {
        match follower.poll(&self.http).await {
            Ok(batch) => Ok(StreamAnswer::Data {
                body: batch.body.to_vec(),
                checkpoint: batch.checkpoint,
                more: batch.more,
            }),
            Err(FollowError::Gone { envelope, .. }) => Ok(StreamAnswer::ScnNotFound {
                prev_scn: envelope.u64("prev_scn").map(Scn::new),
                min_scn: envelope.u64("min_scn").map(Scn::new),
            }),
            Err(FollowError::Unauthorized { envelope, .. }) => Err(BootstrapError::RelayDefinite {
                url: self.url.clone(),
                message: format!(
                    "/v1/stream answered 401 unauthorized: {}; set relay.token_env or relay.token_file to a token the relay accepts",
                    envelope.message
                ),
            }),
            Err(e) if e.is_transient() => Err(BootstrapError::RelayTransient {
                url: self.url.clone(),
                message: e.to_string(),
                retry_after: e.retry_after(),
            }),
            Err(e) => Err(BootstrapError::RelayDefinite {
                url: self.url.clone(),
                message: e.to_string(),
            }),
        }
    }
}
