//! Client side of the bootstrap (`docs/bootstrap-protocol.md`): snapshot or consolidated delta,
//! catch-up, back to the relay.
//!
//! The fetcher enters a bootstrap when every relay answers `scn_not_found` (a consolidated delta since
//! the last consumed window) or when a new consumer is configured to start from a snapshot. Each
//! response of `GET /v1/bootstrap/stream` carries the checkpoint to send next; the phase is the mode of
//! that checkpoint:
//!
//! | request mode | body | delivered as |
//! |--------------|------|--------------|
//! | `bootstrap_snapshot` | data frames only (latest event per key, own SCNs) | one [`Phase::Snapshot`] window per response, checkpoint = the response's (snapshot token inside) |
//! | `bootstrap_catchup` | whole windows as from a relay (may end mid-window) | [`Phase::Catchup`] windows, checkpoint = catch-up mode after each window |
//! | `bootstrap_snapshot`, path `log_only`, no start SCN yet | catch-up windows (a delta served from the log alone) | as catch-up |
//!
//! A response whose checkpoint is in catch-up mode while the request was in snapshot mode ends the
//! snapshot phase (`on_start_catchup`); a checkpoint back in `online` mode ends the bootstrap
//! (`on_end_bootstrap`) and the relay is followed from the target SCN. If the relay no longer holds
//! it, the fetcher bootstraps again with a delta since the target (catch-up repeated). Every window's
//! checkpoint carries the bootstrap progress, so a crash mid-bootstrap resumes where it was.

use bytes::Bytes;
use databus_core::{Checkpoint, ConsumptionMode, EventView, Scn};

use crate::fetcher::{Delivery, FetchStop, Fetcher};
use crate::http::{HttpResponse, ResponseExt};
use crate::window::{Assembler, RawWindow};
use crate::{BootstrapInfo, ClientError, Phase};

/// One answer of `GET /v1/bootstrap/stream`.
struct BootstrapResponse {
    body: Bytes,
    checkpoint: Checkpoint,
    server: String,
    /// `X-Databus-Bootstrap-Path`.
    path: Option<String>,
}

/// A `410` of the bootstrap server: what to restart with.
enum Restart {
    /// `snapshot_required`: a delta from that far back is impossible; take a full snapshot.
    Snapshot,
    /// `log_trimmed` or `generation_changed`: the log moved on, or the server re-seeded; start this
    /// bootstrap again.
    Again,
}

fn parse(resp: HttpResponse, url: &str) -> Result<Result<BootstrapResponse, Restart>, ClientError> {
    if resp.status == 410 {
        let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        return match json["error"].as_str() {
            Some("snapshot_required") => Ok(Err(Restart::Snapshot)),
            // The server re-seeded into a new generation mid-snapshot: the snapshot's rows so far
            // belong to the old one; start again (the new one says if a delta is still possible).
            Some("log_trimmed" | "generation_changed") => Ok(Err(Restart::Again)),
            _ => Err(resp.into_error(url)),
        };
    }
    let protocol = |message: String| ClientError::Protocol {
        server: url.to_owned(),
        message,
    };
    let text = resp
        .header(databus_http::protocol::CHECKPOINT_HEADER)
        .ok_or_else(|| protocol("bootstrap response without X-Databus-Checkpoint".into()))?;
    let checkpoint = Checkpoint::from_json(text)
        .map_err(|e| protocol(format!("bad X-Databus-Checkpoint: {e}")))?;
    let path = resp
        .header(databus_http::protocol::BOOTSTRAP_PATH_HEADER)
        .map(str::to_owned);
    Ok(Ok(BootstrapResponse {
        path,
        body: resp.body,
        checkpoint,
        server: url.to_owned(),
    }))
}

/// Snapshot rows of one response as one window (frames checked, schemas collected).
fn snapshot_window(body: &Bytes, server: &str) -> Result<Option<RawWindow>, ClientError> {
    let mut window = RawWindow::new(Scn::ZERO);
    let mut offset = 0;
    while offset < body.len() {
        let (view, used) =
            EventView::parse(&body[offset..]).map_err(|e| ClientError::Protocol {
                server: server.to_owned(),
                message: format!("bad snapshot frame at byte {offset}: {e}"),
            })?;
        if !view.opcode().is_control() {
            window.scn = window.scn.max(view.scn());
            window.push_event(&view, body.slice(offset..offset + used));
        }
        offset += used;
    }
    if window.events.is_empty() {
        return Ok(None);
    }
    window.bytes = body.len();
    Ok(Some(window))
}

impl Fetcher {
    /// Runs a bootstrap from `checkpoint` (in a bootstrap mode) and returns the online checkpoint to
    /// follow the relay from.
    pub(crate) async fn bootstrap(
        &mut self,
        mut checkpoint: Checkpoint,
    ) -> Result<Checkpoint, FetchStop> {
        if self.bootstrap.is_none() {
            return Err(FetchStop::Error(ClientError::Config(
                "the checkpoint is in a bootstrap but bootstrap_servers is empty; configure one"
                    .into(),
            )));
        }
        let filter = self.config.filter_query(false);
        let mut assembler =
            Assembler::after(checkpoint.prev_scn).bounded(self.config.max_window_bytes);
        let mut in_catchup = checkpoint.mode == ConsumptionMode::BootstrapCatchup;
        loop {
            let cp_text: String =
                form_urlencoded::byte_serialize(checkpoint.to_json().as_bytes()).collect();
            let mut path = format!(
                "/v1/bootstrap/stream?checkpoint={cp_text}&max_bytes={}",
                self.config.max_response_bytes
            );
            if !filter.is_empty() {
                path.push('&');
                path.push_str(&filter);
            }
            let pool = self.bootstrap.as_mut().expect("checked above");
            let limit = self.config.max_response_bytes.max(self.config.buffer_bytes);
            let answer = match pool
                .request(&path, std::time::Duration::ZERO, limit, parse)
                .await
            {
                Err(e @ ClientError::NotYetAtScn { .. }) => {
                    // The bootstrap database has not reached the checkpoint: wait, then ask again.
                    let delay =
                        self.stall
                            .round(checkpoint.window_scn, &e.to_string(), &self.stats)?;
                    tokio::time::sleep(delay).await;
                    continue;
                }
                answer => answer?,
            };
            let response = match answer {
                Ok(r) => r,
                Err(restart) => {
                    let since = match restart {
                        Restart::Snapshot => None,
                        Restart::Again => checkpoint.bootstrap.as_ref().and_then(|b| b.since_scn),
                    };
                    tracing::warn!(?since, "bootstrap server asks to restart the bootstrap");
                    checkpoint = Checkpoint::after(since.unwrap_or(Scn::ZERO));
                    checkpoint.start_bootstrap(since);
                    assembler =
                        Assembler::after(checkpoint.prev_scn).bounded(self.config.max_window_bytes);
                    in_catchup = false;
                    self.send(Delivery::StartBootstrap(
                        BootstrapInfo { since_scn: since },
                        checkpoint.clone(),
                    ))?;
                    continue;
                }
            };
            let next = response.checkpoint.clone();
            // A new log-only bootstrap answers its first (snapshot-mode) request with catch-up
            // windows already; every other snapshot-mode request gets snapshot rows.
            let starts_log_only = checkpoint.mode == ConsumptionMode::BootstrapSnapshot
                && checkpoint
                    .bootstrap
                    .as_ref()
                    .is_some_and(|b| b.start_scn.is_none())
                && response.path.as_deref() == Some("log_only");
            if checkpoint.mode == ConsumptionMode::BootstrapSnapshot && !starts_log_only {
                if let Some(raw) = snapshot_window(&response.body, &response.server)? {
                    self.deliver(raw, Phase::Snapshot, next.clone()).await?;
                } else if next == checkpoint {
                    return Err(FetchStop::Error(ClientError::Protocol {
                        server: response.server,
                        message: "snapshot response with no rows and no progress".into(),
                    }));
                }
            } else {
                // The catch-up checkpoint before this response's windows: `on_start_catchup` persists
                // it (never `next`, which stands after every window of the body).
                let at_start = catchup_start(&next, &checkpoint, &response.server)?;
                if !in_catchup {
                    let target = target_of(&at_start, &response.server)?;
                    self.send(Delivery::StartCatchup(target, at_start.clone()))?;
                    in_catchup = true;
                    assembler =
                        Assembler::after(at_start.prev_scn).bounded(self.config.max_window_bytes);
                }
                // Window checkpoints: catch-up mode with the server's fixed SCNs, at each window.
                let base = if next.mode == ConsumptionMode::BootstrapCatchup {
                    next.clone()
                } else {
                    at_start
                };
                for raw in assembler.push(&response.body, &response.server)? {
                    let mut cp = base.clone();
                    cp.mode = ConsumptionMode::BootstrapCatchup;
                    cp.window_scn = raw.scn;
                    cp.window_offset = None;
                    cp.prev_scn = Some(raw.scn);
                    self.deliver(raw, Phase::Catchup, cp).await?;
                }
            }
            if next.mode != ConsumptionMode::BootstrapSnapshot && !in_catchup {
                // The snapshot phase ended with this response (its rows went out above).
                let at_start = catchup_start(&next, &checkpoint, &response.server)?;
                let target = target_of(&at_start, &response.server)?;
                self.send(Delivery::StartCatchup(target, at_start.clone()))?;
                in_catchup = true;
                assembler =
                    Assembler::after(at_start.prev_scn).bounded(self.config.max_window_bytes);
            }
            if next.mode == ConsumptionMode::Online {
                self.send(Delivery::EndBootstrap(next.window_scn, next.clone()))?;
                return Ok(next);
            }
            checkpoint = next;
        }
    }
}

/// Where catch-up starts (windows after this SCN): the start SCN the server fixed, else the delta's
/// `since` (a log-only catch-up that ended in its first response).
fn start_of(next: &Checkpoint, request: &Checkpoint) -> Option<Scn> {
    let progress = |cp: &Checkpoint| cp.bootstrap.clone().unwrap_or_default();
    progress(next)
        .start_scn
        .or(progress(request).start_scn)
        .or(progress(request).since_scn)
}

/// The catch-up checkpoint at its start SCN, before any catch-up window: what a crash right after
/// `on_start_catchup` resumes from. `next` is the response's checkpoint (catch-up somewhere after the
/// start, or online at the target when the catch-up ended in the same response) and `request` the
/// checkpoint the response answers.
fn catchup_start(
    next: &Checkpoint,
    request: &Checkpoint,
    server: &str,
) -> Result<Checkpoint, FetchStop> {
    let protocol = |message: &str| {
        FetchStop::Error(ClientError::Protocol {
            server: server.to_owned(),
            message: message.to_owned(),
        })
    };
    let start = start_of(next, request).ok_or_else(|| protocol("catch-up without a start SCN"))?;
    let (mut progress, target) = match next.mode {
        ConsumptionMode::Online => (
            request.bootstrap.clone().unwrap_or_default(),
            next.window_scn,
        ),
        _ => (
            next.bootstrap.clone().unwrap_or_default(),
            target_of(next, server)?,
        ),
    };
    if target < start {
        return Err(protocol("catch-up target before its start"));
    }
    progress.start_scn = Some(start);
    progress.target_scn = Some(target);
    progress.snapshot_source = None;
    progress.snapshot_token = None;
    progress.rows_done = request.bootstrap.as_ref().map_or(0, |b| b.rows_done);
    let mut cp = Checkpoint::after(start);
    cp.mode = ConsumptionMode::BootstrapCatchup;
    cp.bootstrap = Some(progress);
    Ok(cp)
}

fn target_of(cp: &Checkpoint, server: &str) -> Result<Scn, FetchStop> {
    cp.bootstrap
        .as_ref()
        .and_then(|b| b.target_scn)
        .ok_or_else(|| {
            FetchStop::Error(ClientError::Protocol {
                server: server.to_owned(),
                message: "catch-up checkpoint without target_scn".into(),
            })
        })
}
