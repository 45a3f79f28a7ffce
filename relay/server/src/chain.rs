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
//! | connection refused/reset, a non-JSON answer, 5xx | transient | drop the open window, reconnect after the last window written, backoff 100 ms doubling to 30 s; status `reconnecting` |
//! | upstream `410 scn_not_found` | definite | status `failed`: the upstream no longer holds what this relay needs next; remove this relay's state file to restart from the upstream's oldest window |
//! | other 4xx, a bad frame, a schema that cannot be registered | definite | status `failed` |
//!
//! Start: after the persisted last SCN when there is one, else from the oldest window the upstream holds
//! (after its `prev_scn`), which becomes this buffer's resume floor.

use std::time::Duration;

use databus_core::{Checkpoint, EventBuilder, EventView, SchemaId, Scn};
use databus_serde_formats::TableSchema;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::RelayError;
use crate::ingest::{IngestParts, PERSIST_INTERVAL};
use crate::metrics as m;
use crate::service::IngestState;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Long-poll wait asked of the upstream relay.
const UPSTREAM_WAIT_MS: u64 = 5_000;
/// Byte budget asked of the upstream relay per response.
const UPSTREAM_MAX_BYTES: usize = 4 << 20;
/// Largest response accepted from the upstream (its budget, one event of up to the frame limit aside).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Where to follow.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` of the upstream relay.
    pub authority: String,
    /// The upstream buffer's name.
    pub buffer: String,
}

enum Failure {
    Transient(String),
    Definite(String),
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One GET on a fresh connection (`Connection: close`), cancellable by `shutdown` (`Ok(None)`).
async fn get(
    authority: &str,
    path: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Answer>, Failure> {
    let request = async {
        let transient = |what: &str, e: std::io::Error| {
            Failure::Transient(format!("{what} upstream relay {authority}: {e}"))
        };
        let mut stream = TcpStream::connect(authority)
            .await
            .map_err(|e| transient("cannot connect to", e))?;
        let _ = stream.set_nodelay(true);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: databus-relay\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| transient("cannot send to", e))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| transient("cannot read from", e))?;
        parse_answer(raw)
            .map_err(|e| Failure::Transient(format!("upstream relay {authority}: {e}")))
    };
    tokio::select! {
        () = shutdown.cancelled() => Ok(None),
        answer = request => answer.map(Some),
    }
}

fn parse_answer(raw: Vec<u8>) -> Result<Answer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or("bad chunked body")?;
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        if body.len() != len {
            return Err(format!(
                "body of {} bytes, content-length {len}: the connection was cut",
                body.len()
            ));
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn error_of(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {}", answer.status))
}

struct Chain {
    parts: IngestParts,
    upstream: Upstream,
    last_persist: Option<Instant>,
    persisted_scn: Scn,
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
        let Some(answer) = get(&self.upstream.authority, &path, shutdown).await? else {
            return Ok(());
        };
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
        if last == Scn::ZERO || last == self.persisted_scn {
            return Ok(());
        }
        if !force
            && self
                .last_persist
                .is_some_and(|t| t.elapsed() < PERSIST_INTERVAL)
        {
            return Ok(());
        }
        let file = self.parts.state.clone();
        tokio::task::spawn_blocking(move || file.store(last, None))
            .await
            .map_err(|e| RelayError::Ingest {
                name: self.parts.name.clone(),
                message: format!("state writer panicked: {e}"),
            })??;
        self.persisted_scn = last;
        self.last_persist = Some(Instant::now());
        Ok(())
    }

    /// Where to start when nothing was persisted: after the upstream's last evicted window.
    async fn initial_scn(&self, shutdown: &CancellationToken) -> Result<Option<Scn>, Failure> {
        let Some(answer) = get(&self.upstream.authority, "/v1/status", shutdown).await? else {
            return Ok(None);
        };
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
        Ok(Some(Scn::new(buffer["prev_scn"].as_u64().unwrap_or(0))))
    }

    /// Follows the upstream from `from` (a whole-window checkpoint) until shutdown or a failure.
    async fn follow(&mut self, from: Scn, shutdown: &CancellationToken) -> Result<(), Failure> {
        let mut cp = Checkpoint::after(from);
        loop {
            let path = format!(
                "/v1/stream?buffer={}&wait_ms={UPSTREAM_WAIT_MS}&max_bytes={UPSTREAM_MAX_BYTES}&checkpoint={}",
                encode(&self.upstream.buffer),
                encode(&cp.to_json())
            );
            let Some(answer) = get(&self.upstream.authority, &path, shutdown).await? else {
                return Ok(());
            };
            match answer.status {
                200 => {}
                410 => {
                    return Err(Failure::Definite(format!(
                        "the upstream relay no longer holds the windows after SCN {}: {}",
                        cp.window_scn,
                        error_of(&answer)
                    )));
                }
                400..=499 => return Err(Failure::Definite(error_of(&answer))),
                _ => return Err(Failure::Transient(error_of(&answer))),
            }
            let next = answer
                .header("x-databus-checkpoint")
                .and_then(|t| Checkpoint::from_json(t).ok())
                .ok_or_else(|| Failure::Transient("no checkpoint header from upstream".into()))?;
            let views = EventView::parse_all(&answer.body)
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
                    m::ingest_window(&self.parts.name, u64::from(info.events), info.bytes);
                    self.parts.status.update(|s| {
                        s.count_window(u64::from(info.events));
                        s.last_scn = Some(view.scn());
                        s.last_timestamp_ns = Some(view.timestamp_ns());
                        s.position = Some(format!(
                            "relay {} buffer {} scn {}",
                            self.upstream.authority,
                            self.upstream.buffer,
                            view.scn()
                        ));
                    });
                }
            }
            cp = next;
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
    let persisted = parts.state.load();
    let mut chain = Chain {
        persisted_scn: match &persisted {
            Ok(Some(state)) => state.last_scn,
            _ => Scn::ZERO,
        },
        parts,
        upstream,
        last_persist: None,
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
    let mut backoff = INITIAL_BACKOFF;
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
            chain.parts.floor.set_if_unset(from);
            let resume = chain.parts.writer.last_scn().max(from);
            chain.follow(resume, &shutdown).await
        };
        match attempt.await {
            Ok(()) => break Ok(()),
            Err(Failure::Definite(message)) => break Err(definite(&chain.parts.name, message)),
            Err(Failure::Transient(message)) => {
                if chain.parts.writer.last_scn() > before {
                    // It streamed for a while: this is a new failure, not a repeated one.
                    backoff = INITIAL_BACKOFF;
                }
                chain.parts.writer.rollback();
                tracing::warn!(source = %chain.parts.name, error = %message, ?backoff, "upstream relay error; reconnecting");
                chain.parts.status.update(|s| {
                    s.state = IngestState::Reconnecting;
                    s.last_error = Some(message);
                });
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
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
