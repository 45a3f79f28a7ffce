//! Relay chaining: a source that follows a buffer of another relay over its `stream` API, preserving
//! SCNs, windows (heartbeats included), event frames and schemas — the way Databus replicated relays.
//!
//! The pipeline long-polls the upstream relay (binary format) and appends each frame to its own buffer
//! as it is; the upstream end-of-window marker publishes the window. A response may end mid-window: the
//! window stays open in the writer until its marker arrives. Schemas of new schema ids are fetched from
//! the upstream relay's `/v1/schemas/<id>` (which carries the table schema) and registered locally; a
//! schema whose id differs after registration is a definite error.
//!
//! | failure | class | effect |
//! |---------|-------|--------|
//! | connection refused/reset, a non-JSON answer, 5xx | transient | drop the open window, reconnect after the last window written, backoff 100 ms doubling to 30 s, jittered, never sooner than the upstream's `Retry-After`; status `reconnecting` |
//! | upstream `410 scn_not_found` | definite | status `failed`: the upstream no longer holds what this relay needs next; remove this relay's state file to restart from the upstream's oldest window |
//! | `401 unauthorized` (missing or wrong `upstream.token_*`), an untrusted TLS certificate (`upstream.ca_cert`) | definite | status `failed`, the message names the setting |
//! | other 4xx, a bad frame, a schema that cannot be registered | definite | status `failed` |
//!
//! Start: after the persisted last SCN when there is one, else from the oldest window the upstream holds
//! (after its `prev_scn`), where this buffer is anchored: older checkpoints are refused here.

use std::time::Duration;

use databus_core::{Checkpoint, EventBuilder, EventView, SchemaId, Scn};
use databus_http::backoff::Backoff;
use databus_http::follow::{FollowError, StreamFollower};
use databus_http::protocol::StreamQuery;
use databus_http::{ClientOptions, HttpClient, Response};
use databus_serde_formats::TableSchema;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::RelayError;
use crate::ingest::IngestParts;
use crate::metrics as m;
use crate::service::IngestState;
use crate::state::Persister;

/// Long-poll wait asked of the upstream relay.
const UPSTREAM_WAIT_MS: u64 = 5_000;
/// Byte budget asked of the upstream relay per response.
const UPSTREAM_MAX_BYTES: usize = 4 << 20;
/// Largest response accepted from the upstream (its budget, one event of up to the frame limit aside).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// How long one request may take: the long-poll wait plus room for a slow upstream.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(UPSTREAM_WAIT_MS + 30_000);

/// Where to follow.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The upstream relay's base URL, `http[s]://host:port`.
    pub url: String,
    /// The upstream buffer's name.
    pub buffer: String,
    /// The CA file of an `https` upstream and the bearer token to send.
    pub client: ClientOptions,
}

enum Failure {
    Transient(String),
    /// The upstream is busy and said when to come back (`Retry-After`): transient, retried no sooner.
    Busy(String, Duration),
    Definite(String),
}

/// One GET to the upstream relay (over its kept-alive connection), cancellable by `shutdown`
/// (`Ok(None)`).
async fn get(
    http: &HttpClient,
    path: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Response>, Failure> {
    let request = async {
        http.get(path, REQUEST_TIMEOUT, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    Failure::Transient(format!("upstream relay {e}"))
                } else {
                    Failure::Definite(format!("upstream relay {e}"))
                }
            })
    };
    tokio::select! {
        () = shutdown.cancelled() => Ok(None),
        answer = request => answer.map(Some),
    }
}

/// The definite failure of a `4xx` answer; a `401` names the settings to fix.
fn refused(http: &HttpClient, what: &str, answer: &Response) -> Failure {
    if answer.status == 401 {
        return Failure::Definite(format!(
            "upstream relay {} refused {what} (401): {}; set upstream.token_env or upstream.token_file to a token it accepts",
            http.url(),
            answer.error_message()
        ));
    }
    Failure::Definite(format!(
        "upstream relay {} answered {what} with {}: {}",
        http.url(),
        answer.status,
        answer.error_message()
    ))
}

fn error_of(answer: &Response) -> String {
    answer.error_message()
}

struct Chain {
    parts: IngestParts,
    upstream: Upstream,
    http: HttpClient,
    persister: Persister,
    counters: m::IngestCounters,
}

impl Chain {
    async fn fetch_schema(
        &self,
        id: SchemaId,
        shutdown: &CancellationToken,
    ) -> Result<(), Failure> {
        if self.parts.registry.get(id).is_some() {
            return Ok(());
        }
        let path = format!("/v1/schemas/{:016x}", id.get());
        let Some(answer) = get(&self.http, &path, shutdown).await? else {
            return Ok(());
        };
        if answer.status == 401 {
            return Err(refused(&self.http, "a schema request", &answer));
        }
        if answer.status != 200 {
            return Err(Failure::Definite(format!(
                "upstream has no schema {:016x}: {}",
                id.get(),
                error_of(&answer)
            )));
        }
        let value: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| Failure::Transient(format!("schema {:016x}: {e}", id.get())))?;
        let table: TableSchema = serde_json::from_value(value["table_schema"].clone())
            .map_err(|e| {
                Failure::Definite(format!(
                    "upstream schema {:016x} carries no table schema ({e}); upgrade the upstream relay",
                    id.get()
                ))
            })?;
        let registered = self.parts.registry.register(&table).map_err(|e| {
            Failure::Definite(format!("cannot register schema {:016x}: {e}", id.get()))
        })?;
        if registered.id != id {
            return Err(Failure::Definite(format!(
                "schema {:016x} of {} registers here as {:016x}; the relays disagree on the Avro mapping",
                id.get(),
                table.qualified_name(),
                registered.id.get()
            )));
        }
        Ok(())
    }

    async fn persist(&mut self, force: bool) -> Result<(), RelayError> {
        let last = self.parts.writer.last_scn();
        self.persister.persist(last, None, force).await
    }

    /// Where to start when nothing was persisted: after the upstream's last evicted window.
    async fn initial_scn(&self, shutdown: &CancellationToken) -> Result<Option<Scn>, Failure> {
        let Some(answer) = get(&self.http, "/v1/status", shutdown).await? else {
            return Ok(None);
        };
        if (400..500).contains(&answer.status) {
            return Err(refused(&self.http, "/v1/status", &answer));
        }
        if answer.status != 200 {
            return Err(Failure::Transient(format!(
                "upstream status: {}",
                error_of(&answer)
            )));
        }
        let status: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| Failure::Transient(format!("upstream status: {e}")))?;
        let buffer = status["buffers"]
            .as_array()
            .and_then(|b| {
                b.iter()
                    .find(|b| b["name"] == self.upstream.buffer.as_str())
            })
            .ok_or_else(|| {
                Failure::Definite(format!(
                    "the upstream relay has no buffer {:?}; set upstream.buffer",
                    self.upstream.buffer
                ))
            })?;
        if buffer["anchored"] == false {
            // A restarted upstream that has not positioned its own source yet cannot say where its
            // history starts.
            return Err(Failure::Transient(format!(
                "the upstream relay's buffer {:?} is not positioned yet",
                self.upstream.buffer
            )));
        }
        Ok(Some(Scn::new(buffer["prev_scn"].as_u64().unwrap_or(0))))
    }

    /// Follows the upstream from `from` (a whole-window checkpoint) until shutdown or a failure.
    async fn follow(&mut self, from: Scn, shutdown: &CancellationToken) -> Result<(), Failure> {
        let query = StreamQuery {
            buffer: Some(self.upstream.buffer.clone()),
            wait: Duration::from_millis(UPSTREAM_WAIT_MS),
            max_bytes: Some(UPSTREAM_MAX_BYTES),
            ..StreamQuery::default()
        };
        let mut follower = StreamFollower::new(query, Some(Checkpoint::after(from)))
            .with_timeout_slack(REQUEST_TIMEOUT - Duration::from_millis(UPSTREAM_WAIT_MS))
            .with_body_limit(MAX_RESPONSE_BYTES);
        loop {
            let asked = follower.checkpoint().map_or(from, |cp| cp.window_scn);
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                answer = follower.poll(&self.http) => answer,
            };
            let body = match batch {
                Ok(batch) => batch.body,
                Err(FollowError::Gone { envelope, .. }) => {
                    return Err(Failure::Definite(format!(
                        "the upstream relay no longer holds the windows after SCN {asked}: {}",
                        envelope.message
                    )));
                }
                Err(FollowError::Unauthorized { envelope, .. }) => {
                    return Err(Failure::Definite(format!(
                        "upstream relay {} refused /v1/stream (401): {}; set upstream.token_env or upstream.token_file to a token it accepts",
                        self.http.url(),
                        envelope.message
                    )));
                }
                Err(FollowError::Refused {
                    status, envelope, ..
                }) => {
                    return Err(Failure::Definite(format!(
                        "upstream relay {} answered /v1/stream with {status}: {}",
                        self.http.url(),
                        envelope.message
                    )));
                }
                Err(FollowError::Busy {
                    envelope,
                    retry_after,
                    ..
                }) => {
                    return Err(match retry_after {
                        Some(floor) => Failure::Busy(envelope.message, floor),
                        None => Failure::Transient(envelope.message),
                    });
                }
                Err(e @ FollowError::Protocol { .. }) => {
                    return Err(Failure::Transient(format!("upstream: {e}")));
                }
                Err(FollowError::Http(e)) if e.is_transient() => {
                    return Err(Failure::Transient(format!("upstream relay {e}")));
                }
                Err(FollowError::Http(e)) => {
                    return Err(Failure::Definite(format!("upstream relay {e}")));
                }
            };
            let views = EventView::parse_all(&body)
                .map_err(|e| Failure::Transient(format!("bad frame from upstream: {e}")))?;
            self.parts.status.update(|s| {
                s.state = IngestState::Streaming;
                s.last_error = None;
            });
            for view in views {
                if !view.opcode().is_control() {
                    self.fetch_schema(view.schema(), shutdown).await?;
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    let event = EventBuilder::new(view.scn(), view.opcode())
                        .source(view.source())
                        .partition(view.partition())
                        .timestamp_ns(view.timestamp_ns())
                        .schema(view.schema())
                        .key(view.key())
                        .payload(view.payload());
                    self.parts.writer.append(&event).map_err(|e| {
                        Failure::Definite(format!("cannot append window {}: {e}", view.scn()))
                    })?;
                } else {
                    let info = self
                        .parts
                        .writer
                        .end_window(view.scn(), view.timestamp_ns())
                        .map_err(|e| {
                            Failure::Definite(format!("cannot publish window {}: {e}", view.scn()))
                        })?;
                    self.counters.window(u64::from(info.events), info.bytes);
                    self.parts.status.update(|s| {
                        s.count_window(u64::from(info.events));
                        s.last_scn = Some(view.scn());
                        s.last_timestamp_ns = Some(view.timestamp_ns());
                        s.position = Some(format!(
                            "relay {} buffer {} scn {}",
                            self.upstream.url,
                            self.upstream.buffer,
                            view.scn()
                        ));
                    });
                }
            }
            self.persist(false)
                .await
                .map_err(|e| Failure::Definite(e.to_string()))?;
        }
    }
}

/// Runs a chained source until `shutdown` (returns `Ok`) or a definite error (returns it, also shown in
/// the status). See the [module docs](self).
pub async fn run_chain(
    upstream: Upstream,
    parts: IngestParts,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let definite = |name: &str, message: String| RelayError::Ingest {
        name: name.to_owned(),
        message,
    };
    let http = match HttpClient::new(&upstream.url, &upstream.client) {
        Ok(http) => http.with_user_agent("databus-relay"),
        Err(e) => {
            let message = format!("upstream.url: {e}");
            parts.status.update(|s| {
                s.state = IngestState::Failed;
                s.last_error = Some(message.clone());
            });
            return Err(definite(&parts.name, message));
        }
    };
    let persisted = parts.state.load();
    let mut chain = Chain {
        http,
        persister: Persister::new(
            parts.state.clone(),
            &parts.name,
            match &persisted {
                Ok(Some(state)) => state.last_scn,
                _ => Scn::ZERO,
            },
        ),
        counters: m::IngestCounters::new(&parts.name),
        parts,
        upstream,
    };
    let mut start = match persisted {
        Ok(state) => state.map(|s| s.last_scn),
        Err(e) => {
            let message = e.to_string();
            chain.parts.status.update(|s| {
                s.state = IngestState::Failed;
                s.last_error = Some(message);
            });
            return Err(e);
        }
    };
    let mut backoff = Backoff::new(crate::ingest::RECONNECT_BACKOFF);
    let result = loop {
        let before = chain.parts.writer.last_scn();
        let attempt = async {
            let from = match start {
                Some(scn) => scn,
                None => match chain.initial_scn(&shutdown).await? {
                    Some(scn) => scn,
                    None => return Ok(()),
                },
            };
            start = Some(from);
            if chain.parts.writer.last_scn() == Scn::ZERO {
                // This buffer continues the upstream's stream after `from`: older checkpoints are
                // refused by every read here (the upstream answers for them itself).
                chain
                    .parts
                    .writer
                    .anchor(from)
                    .map_err(|e| Failure::Definite(format!("cannot anchor the buffer: {e}")))?;
            }
            let resume = chain.parts.writer.last_scn().max(from);
            chain.follow(resume, &shutdown).await
        };
        let (message, floor) = match attempt.await {
            Ok(()) => break Ok(()),
            Err(Failure::Definite(message)) => break Err(definite(&chain.parts.name, message)),
            Err(Failure::Transient(message)) => (message, Duration::ZERO),
            Err(Failure::Busy(message, floor)) => (message, floor),
        };
        if chain.parts.writer.last_scn() > before {
            // It streamed for a while: this is a new failure, not a repeated one.
            backoff.reset();
        }
        chain.parts.writer.rollback();
        tracing::warn!(source = %chain.parts.name, error = %message, "upstream relay error; reconnecting");
        chain.parts.status.update(|s| {
            s.state = IngestState::Reconnecting;
            s.last_error = Some(message);
        });
        // The shared jittered backoff, never sooner than the upstream's Retry-After.
        if !backoff.sleep_at_least_or(floor, shutdown.cancelled()).await {
            break Ok(());
        }
    };
    chain.parts.writer.rollback();
    let persisted = chain.persist(true).await;
    match &result {
        Ok(()) => chain
            .parts
            .status
            .update(|s| s.state = IngestState::Stopped),
        Err(e) => {
            tracing::error!(source = %chain.parts.name, error = %e, "chained ingest stopped");
            let message = e.to_string();
            chain.parts.status.update(|s| {
                s.state = IngestState::Failed;
                s.last_error = Some(message);
            });
        }
    }
    result.and(persisted)
}
