//! The one follower of `GET /v1/stream` (docs/protocol.md): the client library, relay chaining, the
//! bootstrap producer and `databus tail` all follow a relay through a [`StreamFollower`], and put only
//! their own policy on top (the client's failover between relays and its switch to a bootstrap server
//! on `410`, chaining's reconnect after the last whole window, the producer's relay-gap handling,
//! `tail`'s retry of a relay that went away).
//!
//! The follower owns the protocol mechanics:
//! - the request: [`StreamQuery`] plus the checkpoint, with the long poll (`wait_ms`) and a timeout of
//!   the wait plus a slack;
//! - the checkpoint: sent with each request, replaced by the answer's `X-Databus-Checkpoint`; a
//!   follower started without one (the beginning of a relay's history) keeps sending none while the
//!   answers still stand at the beginning (a relay refuses the beginning as an explicit position once
//!   it has evicted anything);
//! - the answers, typed:
//!
//! | answer | result | class |
//! |--------|--------|-------|
//! | `200` | [`Batch`] (possibly empty: the long poll ended with nothing new) | — |
//! | `410` (`scn_not_found`) | [`FollowError::Gone`] | definite for this checkpoint on this server |
//! | `503` / other `5xx` (`not_positioned`, `too_many_connections`, `overloaded`, ...) | [`FollowError::Busy`], with `Retry-After` | transient |
//! | `401` | [`FollowError::Unauthorized`] | definite |
//! | other `4xx` | [`FollowError::Refused`] | definite |
//! | a `200` without a valid checkpoint header | [`FollowError::Protocol`] | transient |
//! | connection refused/lost, timeout | [`FollowError::Http`] | transient ([`HttpError::is_transient`]) |
//!
//! - the retry schedule: [`StreamFollower::retry_delay`] draws the next delay of the shared jittered
//!   [`Backoff`], never shorter than the server's `Retry-After`; [`StreamFollower::next`] retries
//!   transient failures with it (as its caller's policy allows) and resets it after an answer.

use std::time::Duration;

use bytes::Bytes;
use databus_core::Checkpoint;
use hyper::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, BackoffConfig};
use crate::protocol::{ErrorEnvelope, ProtocolError, StreamAnswer, StreamQuery};
use crate::{HttpClient, HttpError, Response};

/// The largest `Retry-After` honoured (a server asking for longer is retried after this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One `200` answer of `stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Whole frames back to back (or JSON lines); empty when the long poll ended with nothing new.
    pub body: Bytes,
    /// The checkpoint to continue from (the follower has moved to it).
    pub checkpoint: Checkpoint,
    /// The answer stopped at its byte budget: more is available now.
    pub more: bool,
}

impl Batch {
    /// Whether the answer carried nothing (the long poll ended first).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Why a `stream` request gave no [`Batch`]. [`FollowError::is_transient`] says whether the same
/// request may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The request did not complete (see [`HttpError::is_transient`]).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A `200` that breaks the protocol (transient: the next request may do better).
    #[error("{url}: {source}")]
    Protocol {
        /// The server's base URL.
        url: String,
        /// What is wrong.
        #[source]
        source: ProtocolError,
    },
    /// `410`: the server no longer (or not yet) holds what follows the checkpoint.
    #[error("{url}: {} ({})", envelope.message, envelope.error)]
    Gone {
        /// The server's base URL.
        url: String,
        /// The server's answer (`prev_scn`, `min_scn`, ... in its details).
        envelope: ErrorEnvelope,
    },
    /// `5xx`: the server cannot serve now; retry later (after `retry_after` when it said so).
    #[error("{url}: {status} {}: {}", envelope.error, envelope.message)]
    Busy {
        /// The server's base URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's answer.
        envelope: ErrorEnvelope,
        /// The server's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// `401`: the token is missing or not accepted.
    #[error("{url}: 401 unauthorized: {}", envelope.message)]
    Unauthorized {
        /// The server's base URL.
        url: String,
        /// The server's answer.
        envelope: ErrorEnvelope,
    },
    /// Another `4xx`: the request itself is wrong.
    #[error("{url}: {status} {}: {}", envelope.error, envelope.message)]
    Refused {
        /// The server's base URL.
        url: String,
        /// The status.
        status: u16,
        /// The server's answer.
        envelope: ErrorEnvelope,
    },
}

impl FollowError {
    /// Whether the same request may succeed later (a network failure, a timeout, a `5xx`, a broken
    /// answer). `410`, `401` and other `4xx` are definite.
    pub fn is_transient(&self) -> bool {
        match self {
            FollowError::Http(e) => e.is_transient(),
            FollowError::Protocol { .. } | FollowError::Busy { .. } => true,
            FollowError::Gone { .. }
            | FollowError::Unauthorized { .. }
            | FollowError::Refused { .. } => false,
        }
    }

    /// The server's `Retry-After` of a `Busy` answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FollowError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The server's error envelope, for answers that carry one.
    pub fn envelope(&self) -> Option<&ErrorEnvelope> {
        match self {
            FollowError::Gone { envelope, .. }
            | FollowError::Busy { envelope, .. }
            | FollowError::Unauthorized { envelope, .. }
            | FollowError::Refused { envelope, .. } => Some(envelope),
            FollowError::Http(_) | FollowError::Protocol { .. } => None,
        }
    }
}

/// `Retry-After` in seconds (the form both servers send), capped at a minute.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Reads one `stream` answer of the server at `url` (see the [module docs](self)).
pub fn answer(url: &str, response: Response) -> Result<Batch, FollowError> {
    let retry_after = retry_after(&response.headers);
    let status = response.status;
    match StreamAnswer::from_response(response) {
        Err(source) => Err(FollowError::Protocol {
            url: url.to_owned(),
            source,
        }),
        Ok(StreamAnswer::Data {
            body,
            checkpoint,
            more,
        }) => Ok(Batch {
            body,
            checkpoint,
            more,
        }),
        Ok(StreamAnswer::Gone(envelope)) => Err(FollowError::Gone {
            url: url.to_owned(),
            envelope,
        }),
        Ok(StreamAnswer::Busy(envelope)) => Err(FollowError::Busy {
            url: url.to_owned(),
            status,
            envelope,
            retry_after,
        }),
        Ok(StreamAnswer::Unauthorized(envelope)) => Err(FollowError::Unauthorized {
            url: url.to_owned(),
            envelope,
        }),
        Ok(StreamAnswer::Refused { status, envelope }) => Err(FollowError::Refused {
            url: url.to_owned(),
            status,
            envelope,
        }),
    }
}

/// What a caller of [`StreamFollower::next`] wants after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTransient {
    /// Wait the backoff delay and ask again.
    Retry,
    /// Return the error.
    GiveUp,
}

/// The position and mechanics of following one relay buffer (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct StreamFollower {
    query: StreamQuery,
    checkpoint: Option<Checkpoint>,
    backoff: Backoff,
    slack: Duration,
    body_limit: usize,
}

impl StreamFollower {
    /// Follows `query` after `checkpoint` (`None`: from the beginning of the relay's history). Backoff
    /// 100 ms doubling to 5 s; timeout the long poll plus 10 s; bodies up to 64 MiB.
    pub fn new(query: StreamQuery, checkpoint: Option<Checkpoint>) -> StreamFollower {
        StreamFollower {
            query,
            checkpoint,
            backoff: Backoff::new(BackoffConfig::doubling(
                Duration::from_millis(100),
                Duration::from_secs(5),
            )),
            slack: Duration::from_secs(10),
            body_limit: 64 << 20,
        }
    }

    /// The retry schedule of transient failures.
    pub fn with_backoff(mut self, config: BackoffConfig) -> StreamFollower {
        self.backoff = Backoff::new(config);
        self
    }

    /// How long a request may take beyond the long poll.
    pub fn with_timeout_slack(mut self, slack: Duration) -> StreamFollower {
        self.slack = slack;
        self
    }

    /// The largest body accepted (at least the query's `max_bytes`: one event may exceed the budget).
    pub fn with_body_limit(mut self, limit: usize) -> StreamFollower {
        self.body_limit = limit;
        self
    }

    /// The request, but for the checkpoint.
    pub fn query(&self) -> &StreamQuery {
        &self.query
    }

    /// Where the next request continues from (`None`: the beginning).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// Moves the follower (a restart after a gap, a new floor).
    pub fn set_checkpoint(&mut self, checkpoint: Option<Checkpoint>) {
        self.checkpoint = checkpoint;
    }

    /// The path and query of the next request.
    pub fn path(&self) -> String {
        self.query.path(self.checkpoint.as_ref())
    }

    /// The timeout of one request: the long poll plus the slack.
    pub fn timeout(&self) -> Duration {
        self.query.wait + self.slack
    }

    /// The largest body accepted.
    pub fn body_limit(&self) -> usize {
        self.body_limit.max(self.query.max_bytes.unwrap_or(0))
    }

    /// Reads the answer to [`StreamFollower::path`] from the server at `url`; a [`Batch`] moves the
    /// follower to its checkpoint (a follower at the beginning stays there while the answer is still
    /// the beginning).
    pub fn accept(&mut self, url: &str, response: Response) -> Result<Batch, FollowError> {
        let batch = answer(url, response)?;
        if self.checkpoint.is_some() || batch.checkpoint != Checkpoint::beginning() {
            self.checkpoint = Some(batch.checkpoint.clone());
        }
        Ok(batch)
    }

    /// One request to `server` (see [`StreamFollower::accept`]).
    pub async fn poll(&mut self, server: &HttpClient) -> Result<Batch, FollowError> {
        let response = server
            .get(&self.path(), self.timeout(), self.body_limit())
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                // A broken connection is not reused.
                server.reset();
                return Err(e.into());
            }
        };
        self.accept(server.url(), response)
    }

    /// The delay before retrying after `error`: the next jittered backoff delay, at least the
    /// server's `Retry-After`.
    pub fn retry_delay(&mut self, error: &FollowError) -> Duration {
        let delay = self.backoff.next_delay();
        error.retry_after().map_or(delay, |floor| delay.max(floor))
    }

    /// Back to the first backoff delay (after a success).
    pub fn reset_backoff(&mut self) {
        self.backoff.reset();
    }

    /// Requests until an answer (a [`Batch`], possibly empty) or a definite failure. Transient failures
    /// are shown to `on_transient` with the delay before the retry: [`OnTransient::Retry`] waits it
    /// and asks again, [`OnTransient::GiveUp`] returns the error. `Ok(None)` when `stop` is cancelled
    /// before a request or during a wait; a request in flight is completed first (a long poll lasts
    /// at most its wait), so that the server sees a clean end of connection: callers that must stop at
    /// once drop the future instead.
    pub async fn next(
        &mut self,
        server: &HttpClient,
        stop: &CancellationToken,
        mut on_transient: impl FnMut(&FollowError, Duration) -> OnTransient,
    ) -> Result<Option<Batch>, FollowError> {
        loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            match self.poll(server).await {
                Ok(batch) => {
                    self.backoff.reset();
                    return Ok(Some(batch));
                }
                Err(e) if e.is_transient() => {
                    let delay = self.retry_delay(&e);
                    if on_transient(&e, delay) == OnTransient::GiveUp {
                        return Err(e);
                    }
                    tokio::select! {
                        () = stop.cancelled() => return Ok(None),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::Scn;
    use hyper::header::HeaderValue;

    fn response(status: u16, headers: &[(&'static str, String)], body: &'static [u8]) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Response {
            status,
            headers: map,
            body: Bytes::from_static(body),
        }
    }

    fn data(cp: &Checkpoint) -> Response {
        response(
            200,
            &[(crate::protocol::CHECKPOINT_HEADER, cp.to_json())],
            b"",
        )
    }

    #[test]
    fn data_moves_the_checkpoint_and_the_beginning_stays_implicit() {
        let q = StreamQuery::default();
        let mut f = StreamFollower::new(q.clone(), None);
        f.accept("u", data(&Checkpoint::beginning())).unwrap();
        assert_eq!(f.checkpoint(), None, "still at the beginning: none sent");
        assert!(!f.path().contains("checkpoint"));
        let b = f
            .accept("u", data(&Checkpoint::after(Scn::new(5))))
            .unwrap();
        assert!(b.is_empty() && !b.more);
        assert_eq!(f.checkpoint(), Some(&Checkpoint::after(Scn::new(5))));
        let mut g = StreamFollower::new(q, Some(Checkpoint::beginning()));
        g.accept("u", data(&Checkpoint::beginning())).unwrap();
        assert_eq!(g.checkpoint(), Some(&Checkpoint::beginning()));
    }

    #[test]
    fn answers_are_typed_and_classified() {
        let mut f =
            StreamFollower::new(StreamQuery::default(), Some(Checkpoint::after(Scn::new(3))));
        let gone = f
            .accept(
                "u",
                response(
                    410,
                    &[],
                    br#"{"error":"scn_not_found","message":"gone","prev_scn":9}"#,
                ),
            )
            .unwrap_err();
        assert!(
            matches!(&gone, FollowError::Gone { envelope, .. } if envelope.u64("prev_scn") == Some(9))
        );
        assert!(!gone.is_transient());
        assert_eq!(
            f.checkpoint(),
            Some(&Checkpoint::after(Scn::new(3))),
            "unchanged"
        );
        let busy = f
            .accept(
                "u",
                response(
                    503,
                    &[("retry-after", "2".into())],
                    br#"{"error":"too_many_connections","message":"later"}"#,
                ),
            )
            .unwrap_err();
        assert!(busy.is_transient());
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(busy.envelope().unwrap().error, "too_many_connections");
        assert!(
            f.retry_delay(&busy) >= Duration::from_secs(2),
            "Retry-After is a floor"
        );
        let e = f.accept("u", response(401, &[], b"")).unwrap_err();
        assert!(matches!(e, FollowError::Unauthorized { .. }) && !e.is_transient());
        let e = f.accept("u", response(400, &[], b"bad")).unwrap_err();
        assert!(matches!(e, FollowError::Refused { status: 400, .. }) && !e.is_transient());
        let e = f.accept("u", response(200, &[], b"")).unwrap_err();
        assert!(matches!(e, FollowError::Protocol { .. }) && e.is_transient());
    }
}
