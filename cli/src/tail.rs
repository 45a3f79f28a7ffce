//! `databus tail`: follow a relay's `stream` endpoint (JSON format) with long polls, like kcat follows a
//! Kafka topic. Data events are handed to a callback as the relay's JSON objects; end-of-window markers
//! only advance the checkpoint. Once the relay has answered, a lost connection (e.g. a relay restart) is
//! retried with backoff from the same checkpoint.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use databus_core::{Checkpoint, Scn};
use databus_http::HttpError;
use databus_http::backoff::BackoffConfig;
use databus_http::follow::{FollowError, OnTransient, StreamFollower};
use databus_http::protocol::StreamQuery;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::UsageError;
use crate::http::{AnswerJson, RelayUrl, get, transport_error, unauthorized};

/// Where a tail starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest window the buffer holds.
    Beginning,
    /// The first window whose SCN is at least this one.
    FromScn(Scn),
    /// After the newest window the buffer holds now.
    Now,
}

/// What to follow.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The relay.
    pub relay: RelayUrl,
    /// Source filter (`1,2,5-7`), as the relay's `sources` parameter.
    pub sources: Option<String>,
    /// Partition filters (`mod:<n>:<buckets>`, ...), ORed.
    pub partitions: Vec<String>,
    /// The buffer to read, when the relay has several.
    pub buffer: Option<String>,
    /// Where to start.
    pub start: Start,
    /// Stop after this many events (row changes and table events).
    pub max_events: Option<u64>,
    /// Long-poll wait per request.
    pub wait: Duration,
}

/// Why a tail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// `max_events` were delivered.
    Count,
    /// `shutdown` was cancelled.
    Shutdown,
    /// The callback asked to stop (e.g. stdout closed).
    Stopped,
}

/// What the callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep going.
    More,
    /// Stop now.
    Stop,
}

/// Follows the relay, calling `on_event` with `Some` for each event (row changes and table events, not
/// window ends: the relay's JSON object, with `payload` decoded) and with `None` after each response's
/// events (the moment to flush buffered output: nothing more is at hand), until `max_events` events
/// were delivered, `on_event` returns [`Next::Stop`], or `shutdown` is cancelled (observed between
/// requests: a long poll in flight is completed first, at most `wait` later).
pub async fn tail(
    opts: &TailOptions,
    shutdown: &CancellationToken,
    mut on_event: impl FnMut(Option<&Value>) -> Result<Next>,
) -> Result<TailEnd> {
    let checkpoint = match opts.start {
        Start::Beginning => oldest_checkpoint(opts, shutdown).await?,
        Start::FromScn(scn) => Some(Checkpoint::after(Scn::new(scn.get().saturating_sub(1)))),
        Start::Now => Some(now_checkpoint(opts, shutdown).await?),
    };
    let query = StreamQuery {
        buffer: opts.buffer.clone(),
        sources: opts.sources.clone(),
        partitions: opts.partitions.clone(),
        json: true,
        wait: opts.wait,
        max_bytes: None,
        filter: None,
        coalesce_empty_windows: false,
    };
    let mut follower = StreamFollower::new(query, checkpoint)
        .with_backoff(BackoffConfig::doubling(
            Duration::from_millis(100),
            Duration::from_secs(5),
        ))
        .with_timeout_slack(Duration::from_secs(10))
        .with_body_limit(crate::http::MAX_BODY);
    let mut delivered = 0u64;
    let mut answered = false;
    let mut floor_retries = 0u32;
    loop {
        if opts.max_events.is_some_and(|max| delivered >= max) {
            return Ok(TailEnd::Count);
        }
        if shutdown.is_cancelled() {
            return Ok(TailEnd::Shutdown);
        }
        // Transient failures are retried by the follower with the shared backoff: a relay that is
        // busy (503), and, once the relay has answered, a lost connection (a relay restart), and
        // also a connection the relay accepted and then closed (an overloaded relay shedding
        // connections); a relay that cannot be reached at all before it ever answered is an error
        // (wrong URL, relay down). A request in flight is finished (a long poll lasts at most
        // `wait`), so that the relay sees a clean end of connection.
        let next = follower
            .next(opts.relay.client(), shutdown, |e, delay| match e {
                FollowError::Busy { status: 503, .. } => {
                    answered = true;
                    tracing::warn!(relay = %opts.relay, error = %e, ?delay, "relay busy; retrying");
                    OnTransient::Retry
                }
                FollowError::Protocol { .. } => {
                    answered = true;
                    tracing::warn!(relay = %opts.relay, error = %e, ?delay, "bad answer; retrying");
                    OnTransient::Retry
                }
                FollowError::Http(HttpError::Connection { source: None, .. }) => {
                    tracing::warn!(relay = %opts.relay, error = %e, ?delay, "relay unreachable; retrying");
                    OnTransient::Retry
                }
                FollowError::Http(_) if answered => {
                    tracing::warn!(relay = %opts.relay, error = %e, ?delay, "relay unreachable; retrying");
                    OnTransient::Retry
                }
                _ => OnTransient::GiveUp,
            })
            .await;
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(TailEnd::Shutdown),
            Err(FollowError::Http(e)) => return Err(transport_error(&opts.relay, e)),
            // From the beginning means from the oldest window the relay holds: when the buffer moved
            // on between reading its floor and asking (or a fresh relay set its floor), ask again
            // after the floor it reports. Never once an event was delivered: then it is a real gap.
            Err(FollowError::Gone { envelope, .. })
                if opts.start == Start::Beginning && delivered == 0 && floor_retries < 5 =>
            {
                answered = true;
                floor_retries += 1;
                let Some(floor) = envelope.u64("prev_scn") else {
                    bail!("{}", envelope.message);
                };
                follower.set_checkpoint(Some(Checkpoint::after(Scn::new(floor))));
                continue;
            }
            Err(FollowError::Gone { envelope, .. }) => bail!(
                "{}; this relay cannot serve that position: tail through a bootstrap server with \
                 --bootstrap URL --from scn:N, or, accepting to miss the history before it, start \
                 from the oldest window the relay holds (no --from-scn) or with --from-now",
                envelope.message
            ),
            Err(FollowError::Unauthorized { envelope, .. }) => {
                return Err(unauthorized(&opts.relay, &envelope.message).into());
            }
            Err(FollowError::Refused {
                status: 400 | 404,
                envelope,
                ..
            }) => {
                return Err(UsageError(format!(
                    "the relay refused the request: {}",
                    envelope.message
                ))
                .into());
            }
            Err(
                FollowError::Refused {
                    status, envelope, ..
                }
                | FollowError::Busy {
                    status, envelope, ..
                },
            ) => bail!("the relay answered {status}: {}", envelope.message),
            Err(e @ FollowError::Protocol { .. }) => return Err(e.into()),
        };
        answered = true;
        let body =
            std::str::from_utf8(&batch.body).context("the relay's JSON lines are not UTF-8")?;
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("the relay sent a line that is not JSON: {line:.200}"))?;
            if value.get("checkpoint").is_some() {
                // The follower continues from the answer's checkpoint header (the same checkpoint).
                continue;
            }
            // Every event but window ends: row changes (`upsert`, `update`, `delete`) and table
            // events (`truncate`, `schema_change`), so a TRUNCATE or ALTER shows too.
            let opcode = value.get("opcode").and_then(Value::as_str).unwrap_or("");
            if opcode.is_empty() || opcode == "end_of_window" {
                continue;
            }
            if opts.max_events.is_some_and(|max| delivered >= max) {
                return Ok(TailEnd::Count);
            }
            delivered += 1;
            if on_event(Some(&value))? == Next::Stop {
                return Ok(TailEnd::Stopped);
            }
        }
        if on_event(None)? == Next::Stop {
            return Ok(TailEnd::Stopped);
        }
    }
}

/// The buffer's status once it is positioned: a relay restarted while its source is down knows
/// neither its oldest nor its newest position until ingest positions the source, so the start is
/// resolved only then. `None` when `shutdown` is cancelled first.
async fn positioned_buffer_status(
    opts: &TailOptions,
    shutdown: &CancellationToken,
) -> Result<Option<Value>> {
    let mut told = false;
    loop {
        let buffer = buffer_status(opts).await?;
        if buffer["anchored"] != false {
            return Ok(Some(buffer));
        }
        if !told {
            tracing::warn!(relay = %opts.relay, "the relay has not positioned its source yet; waiting");
            told = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The status of the buffer being followed (`--buffer`, or the relay's only buffer).
async fn buffer_status(opts: &TailOptions) -> Result<Value> {
    let answer = get(&opts.relay, "/v1/status", Duration::from_secs(10)).await?;
    if answer.status != 200 {
        bail!(
            "/v1/status answered {}: {}",
            answer.status,
            answer.error_message()
        );
    }
    let status = answer.json()?;
    let buffers = status["buffers"].as_array().cloned().unwrap_or_default();
    match &opts.buffer {
        Some(name) => buffers
            .iter()
            .find(|b| b["name"].as_str() == Some(name.as_str()))
            .cloned()
            .ok_or_else(|| UsageError(format!("the relay has no buffer {name:?}")).into()),
        None if buffers.len() == 1 => Ok(buffers[0].clone()),
        None => Err(UsageError(format!(
            "the relay has {} buffers; choose one with --buffer",
            buffers.len()
        ))
        .into()),
    }
}

/// The checkpoint before the oldest window the buffer holds: after its `prev_scn` (the last window
/// evicted, or the point a fresh relay started at), or none when the buffer has never evicted or
/// skipped anything.
async fn oldest_checkpoint(
    opts: &TailOptions,
    shutdown: &CancellationToken,
) -> Result<Option<Checkpoint>> {
    let buffer = match (&opts.buffer, &opts.sources) {
        // The relay picks the buffer from the sources; a position is only needed with a floor.
        (None, Some(_)) => match positioned_buffer_status(opts, shutdown).await {
            Ok(b) => b,
            Err(e) if e.is::<UsageError>() => return Ok(None),
            Err(e) => return Err(e),
        },
        _ => positioned_buffer_status(opts, shutdown).await?,
    };
    let Some(buffer) = buffer else {
        return Ok(None);
    };
    Ok(buffer["prev_scn"]
        .as_u64()
        .map(|scn| Checkpoint::after(Scn::new(scn))))
}

/// The checkpoint after the newest window of the buffer being followed.
async fn now_checkpoint(opts: &TailOptions, shutdown: &CancellationToken) -> Result<Checkpoint> {
    let Some(buffer) = positioned_buffer_status(opts, shutdown).await? else {
        return Ok(Checkpoint::beginning());
    };
    let newest = buffer["max_scn"]
        .as_u64()
        .or_else(|| buffer["prev_scn"].as_u64());
    Ok(newest.map_or_else(Checkpoint::beginning, |scn| {
        Checkpoint::after(Scn::new(scn))
    }))
}
