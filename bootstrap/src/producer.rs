//! The producer: reads the relay's stream and appends every window to the LOG store.
//!
//! - Each relay response's complete windows are appended in one store transaction; a window is never
//!   split across transactions. A response ending mid-window keeps the partial window in memory and
//!   continues with the relay's checkpoint; a restarted producer drops it and asks again after the
//!   last stored window, so nothing is lost or written twice.
//! - Where it starts: after the log's last window; for a new log, after the seed's SCN if a seed
//!   completed, else from the relay's beginning (and, if the relay answers `410`, from the relay's
//!   oldest point — a bootstrap database without a seed only knows changes after it started).
//! - Errors: network errors and relay 5xx are retried with exponential backoff (100 ms to 10 s); a
//!   `410` for a non-empty log means a gap: the producer fills it from the source ([`crate::gap`],
//!   `[source]` set); when it cannot (no `[source]`, or the source purged that binlog too) it ends with
//!   the gap error if re-seeding is on (the role then re-seeds into a new store generation,
//!   [`crate::generation`]), else reports itself `blocked` (so `/health` answers `503` with the fix)
//!   and retries (1 s to 30 s); storage errors stop it (reported `failed`). Its state is reported through [`Reporter`] (see [`crate::health`]).

use std::sync::Arc;
use std::time::Duration;

use databus_core::{Checkpoint, EventView, Scn, SourceId};
use databus_http::backoff::{Backoff, BackoffConfig};
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::health::Reporter;
use crate::relay_client::{RelayClient, StreamAnswer};
use crate::store::{BootstrapStore, LogWindow, Role, RoleState, SourceInfo, StoredEvent};

/// How the producer reads the relay.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// The relay, `http[s]://host:port`.
    pub relay_url: String,
    /// The relay buffer to copy (`None`: the relay's only buffer).
    pub buffer: Option<String>,
    /// Bytes per relay response.
    pub max_bytes: usize,
    /// Long-poll wait per request.
    pub wait: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The CA file of an `https` relay and the bearer token to send.
    pub client: databus_http::ClientOptions,
    /// The source database to fill relay gaps from (`None`: a gap blocks the producer).
    pub gap_source: Option<crate::gap::GapSource>,
    /// A gap that cannot be filled ends [`run_producer`] with the gap error instead of blocking, so
    /// that the role re-seeds into a new generation (`[seed]` set, `auto_reseed` on; see
    /// [`crate::generation`]).
    pub reseed: bool,
}

impl ProducerSettings {
    /// Defaults for the relay at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ProducerSettings {
            relay_url: url.into(),
            buffer: None,
            max_bytes: 4 << 20,
            wait: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
            client: databus_http::ClientOptions::default(),
            gap_source: None,
            reseed: false,
        }
    }
}

/// Counters of a producer run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Windows appended.
    pub windows: u64,
    /// Data events appended.
    pub events: u64,
}

pub(crate) struct Partial {
    scn: Scn,
    events: Vec<StoredEvent>,
}

/// Parses a relay response into complete windows, carrying a partial window across responses.
pub(crate) fn split_windows(
    body: &[u8],
    partial: &mut Option<Partial>,
) -> Result<Vec<LogWindow>, BootstrapError> {
    let views = EventView::parse_all(body)
        .map_err(|e| BootstrapError::Corrupt(format!("relay sent a bad frame: {e}")))?;
    let mut out = Vec::new();
    for view in views {
        if view.opcode().is_end_of_window() {
            let events = match partial.take() {
                Some(p) if p.scn == view.scn() => p.events,
                Some(p) => {
                    return Err(BootstrapError::Corrupt(format!(
                        "relay closed window {} while window {} was open",
                        view.scn(),
                        p.scn
                    )));
                }
                None => Vec::new(),
            };
            out.push(LogWindow {
                scn: view.scn(),
                timestamp_ns: view.timestamp_ns(),
                events,
            });
        } else if view.opcode().is_control() {
            continue;
        } else {
            let p = partial.get_or_insert_with(|| Partial {
                scn: view.scn(),
                events: Vec::new(),
            });
            if p.scn != view.scn() {
                return Err(BootstrapError::Corrupt(format!(
                    "relay sent an event of window {} inside window {}",
                    view.scn(),
                    p.scn
                )));
            }
            p.events.push(StoredEvent::from_view(&view)?);
        }
    }
    Ok(out)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BootstrapError> + Send + 'static,
) -> Result<T, BootstrapError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BootstrapError::Storage(format!("storage task failed: {e}")))?
}

/// Runs the producer until `shutdown` (returns its counters) or a definite error.
pub async fn run_producer(
    store: Arc<dyn BootstrapStore>,
    settings: ProducerSettings,
    shutdown: CancellationToken,
) -> Result<ProducerStats, BootstrapError> {
    let relay = RelayClient::with_options(
        &settings.relay_url,
        settings.timeout + settings.wait,
        &settings.client,
    )?;
    let mut stats = ProducerStats::default();
    let mut reporter = Reporter::new(store.clone(), Role::Producer);
    let result = produce_with_retries(
        &store,
        &relay,
        &settings,
        &shutdown,
        &mut stats,
        &mut reporter,
    )
    .await;
    match &result {
        Ok(()) => reporter.set(RoleState::Stopped, "shut down".into()).await,
        Err(e) => reporter.set(RoleState::Failed, e.to_string()).await,
    }
    result.map(|()| stats)
}

/// [`produce`] again after transient errors (relay unreachable, 5xx: 100 ms doubling to 10 s) and
/// after a relay gap (the relay no longer holds what follows the log: 1 s doubling to 30 s, reported
/// as `blocked` so that `/health` says so, never a silent stop).
async fn produce_with_retries(
    store: &Arc<dyn BootstrapStore>,
    relay: &RelayClient,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
    stats: &mut ProducerStats,
    reporter: &mut Reporter,
) -> Result<(), BootstrapError> {
    let mut backoff = Backoff::new(BackoffConfig::doubling(
        Duration::from_millis(100),
        Duration::from_secs(10),
    ));
    let mut gap_backoff = Backoff::new(BackoffConfig::doubling(
        Duration::from_secs(1),
        Duration::from_secs(30),
    ));
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let delay = match produce(store, relay, settings, shutdown, stats, reporter).await {
            Ok(()) => return Ok(()),
            Err(BootstrapError::RelayGap {
                relay_floor: Some(until),
                ..
            }) if settings.gap_source.is_some() => {
                let source = settings.gap_source.as_ref().expect("checked by the guard");
                reporter.running(false).await;
                match crate::gap::fill_gap(store, source, until, shutdown, stats, reporter).await {
                    Ok(()) => {
                        gap_backoff.reset();
                        continue;
                    }
                    Err(e @ BootstrapError::GapUnfillable { .. }) if settings.reseed => {
                        return Err(e);
                    }
                    Err(e @ BootstrapError::GapUnfillable { .. }) => {
                        let d = gap_backoff.next_delay();
                        tracing::error!(error = %e, retry_in = ?d, "producer: the relay gap cannot be filled; retrying");
                        reporter.set(RoleState::Blocked, e.to_string()).await;
                        d
                    }
                    Err(e) if e.is_transient() => {
                        let d = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in = ?d, "producer: filling the relay gap failed; retrying");
                        d
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e @ BootstrapError::RelayGap { .. }) if settings.reseed => return Err(e),
            Err(e @ BootstrapError::RelayGap { .. }) => {
                let d = gap_backoff.next_delay();
                tracing::error!(error = %e, retry_in = ?d, "producer: the log would have a gap; retrying");
                let fix = if settings.gap_source.is_none() {
                    "; or configure [source] in bootstrap.toml (the relay's [[sources]] entry with its own server_id) so that the producer fills the gap from the source's binlog"
                } else {
                    ""
                };
                reporter.set(RoleState::Blocked, format!("{e}{fix}")).await;
                d
            }
            Err(e) if e.is_transient() && !matches!(e, BootstrapError::Storage(_)) => {
                // The shared jittered backoff, never sooner than a busy relay's Retry-After.
                let d = backoff
                    .next_delay()
                    .max(e.retry_after().unwrap_or_default());
                tracing::warn!(error = %e, retry_in = ?d, "producer: relay error; retrying");
                reporter.running(false).await;
                d
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn produce(
    store: &Arc<dyn BootstrapStore>,
    relay: &RelayClient,
    settings: &ProducerSettings,
    shutdown: &CancellationToken,
    stats: &mut ProducerStats,
    reporter: &mut Reporter,
) -> Result<(), BootstrapError> {
    let sources = relay.sources().await?;
    let buffer = match &settings.buffer {
        Some(b) => b.clone(),
        None => {
            let mut names: Vec<&str> = sources.iter().map(|s| s.buffer.as_str()).collect();
            names.dedup();
            match names.as_slice() {
                [one] => (*one).to_owned(),
                _ => {
                    return Err(BootstrapError::Config(format!(
                        "relay {} has buffers {names:?}; set relay.buffer to the one to copy",
                        relay.url()
                    )));
                }
            }
        }
    };
    let infos: Vec<SourceInfo> = sources
        .iter()
        .filter(|s| s.buffer == buffer)
        .map(|s| SourceInfo {
            id: SourceId::new(s.id),
            name: s.name.clone(),
        })
        .collect();
    {
        let store = store.clone();
        blocking(move || store.set_sources(&infos)).await?;
    }
    let (log, snap) = {
        let store = store.clone();
        blocking(move || Ok((store.log_status()?, store.snapshot_status()?))).await?
    };
    let checkpoint = match (log.last_scn, snap.seeded, snap.applied_scn) {
        (Some(last), _, _) => Checkpoint::after(last),
        (None, true, Some(seed)) => {
            let store = store.clone();
            blocking(move || store.start_log(seed)).await?;
            Checkpoint::after(seed)
        }
        _ => Checkpoint::beginning(),
    };
    let mut follower = relay.follower(&buffer, checkpoint, settings.max_bytes, settings.wait);
    let mut partial: Option<Partial> = None;
    loop {
        let asked = follower.checkpoint().map_or(Scn::ZERO, |cp| cp.window_scn);
        let answer = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = relay.stream(&mut follower) => a?,
        };
        match answer {
            StreamAnswer::Data { body, more, .. } => {
                let windows = split_windows(&body, &mut partial)?;
                if !windows.is_empty() {
                    let n_events: u64 = windows.iter().map(|w| w.events.len() as u64).sum();
                    let n_windows = windows.len() as u64;
                    let store = store.clone();
                    let first = windows[0].scn;
                    blocking(move || {
                        if store.log_status()?.floor_scn.is_none() {
                            store.start_log(Scn::new(first.get().saturating_sub(1)))?;
                        }
                        store.append(&windows)
                    })
                    .await?;
                    stats.windows += n_windows;
                    stats.events += n_events;
                    crate::metrics::produced(n_windows, n_events);
                }
                // Caught up: the relay had nothing more right now.
                reporter.running(!more && partial.is_none()).await;
            }
            StreamAnswer::ScnNotFound { prev_scn, min_scn } => {
                let empty = log.last_scn.is_none() && !snap.seeded && stats.windows == 0;
                let floor = prev_scn.or(min_scn.map(|m| Scn::new(m.get().saturating_sub(1))));
                let (Some(floor), true) = (floor, empty) else {
                    return Err(BootstrapError::RelayGap {
                        url: relay.url().to_owned(),
                        scn: asked,
                        relay_floor: floor,
                    });
                };
                tracing::warn!(%floor, "producer: new bootstrap database without a seed starts at the relay's oldest point");
                let store = store.clone();
                blocking(move || store.start_log(floor)).await?;
                follower.set_checkpoint(Some(Checkpoint::after(floor)));
                partial = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use databus_core::{EventBuilder, Key, Opcode};

    use super::*;

    fn frame(scn: u64, key: i64) -> Vec<u8> {
        let mut out = Vec::new();
        EventBuilder::new(Scn::new(scn), Opcode::Upsert)
            .source(SourceId::new(1))
            .key(Key::Int(key).as_ref())
            .write_to_vec(&mut out);
        out
    }

    fn end(scn: u64) -> Vec<u8> {
        let mut out = Vec::new();
        EventBuilder::end_of_window(Scn::new(scn), 7).write_to_vec(&mut out);
        out
    }

    #[test]
    fn windows_split_across_responses() {
        let mut partial = None;
        let first = [frame(3, 1), end(3), frame(4, 1), frame(4, 2)].concat();
        let w = split_windows(&first, &mut partial).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].scn, w[0].events.len()), (Scn::new(3), 1));
        let second = [frame(4, 3), end(4), end(5)].concat();
        let w = split_windows(&second, &mut partial).unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (w.scn.get(), w.events.len()))
                .collect::<Vec<_>>(),
            vec![(4, 3), (5, 0)]
        );
        assert!(partial.is_none());
        let bad = [frame(6, 1), end(7)].concat();
        assert!(split_windows(&bad, &mut partial).is_err());
    }
}
