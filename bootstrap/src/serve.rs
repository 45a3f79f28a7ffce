//! The bootstrap queries: consistent snapshot, consolidated delta and log-only catch-up, driven by the
//! consumer's checkpoint (the server keeps no per-consumer state besides retention pins).
//!
//! See `docs/bootstrap-protocol.md` for the protocol; this module is its implementation over any
//! [`BootstrapStore`]. Every call is blocking (storage reads): async callers use `spawn_blocking`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use databus_core::{BootstrapProgress, Checkpoint, ConsumptionMode, EventBuilder, Scn, SourceId};
use databus_filters::FilterSpec;
use serde::Serialize;

use crate::BootstrapError;
use crate::config::{BootstrapHttp, ServeSection};
use crate::store::{BootstrapStore, SnapshotQuery};
use databus_http::server::ServerLimits;

/// At most this many rows or events read from the store per query (and no more than the answer's byte
/// budget: see [`budget`]).
const PAGE: usize = 2048;

/// The bytes a store read may load for an answer of `max_bytes` that holds `used` already: what is
/// left, at least 1 (a read returns at least one row, so that one larger than the budget is served
/// alone in the next answer).
fn budget(max_bytes: usize, used: usize) -> usize {
    max_bytes.saturating_sub(used).max(1)
}

/// Whether a read of `room` bytes (and [`PAGE`] rows) returned everything there was: it stopped
/// neither at its row limit nor at its byte budget.
fn exhausted<T>(rows: &[T], bytes: impl Fn(&T) -> usize, room: usize) -> bool {
    rows.len() < PAGE && rows.iter().map(bytes).sum::<usize>() < room
}
/// Windows read per query in catch-up.
const WINDOW_PAGE: usize = 512;

/// How the server answers bootstrap requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSettings {
    /// A delta whose `since` leaves at most this many log events to replay is served from the log
    /// alone.
    pub log_only_max_events: u64,
    /// How long a bootstrap's pin on the log lasts after its last request.
    pub pin_ttl: Duration,
    /// How long a pin holds retention at most after its first request, however often refreshed.
    pub pin_max_age: Duration,
    /// Response budget when the request gives none.
    pub default_response_bytes: usize,
    /// The largest `max_bytes` accepted.
    pub max_response_bytes: usize,
    /// The most retention pins (bootstraps in progress, one per start SCN); a bootstrap that would add
    /// one more gets `503 overloaded`.
    pub max_pins: usize,
    /// The most `stream` requests served at once (each reads the store); more get `503 overloaded`.
    pub max_concurrent_streams: usize,
    /// The longest query string accepted.
    pub max_query_bytes: usize,
    /// When `/health` reports the roles as not ok.
    pub health: crate::health::HealthSettings,
}

impl Default for ServeSettings {
    /// The settings of a bootstrap.toml without `[http]` and `[serve]`.
    fn default() -> Self {
        let limits = ServerLimits::defaults::<BootstrapHttp>();
        let serve = ServeSection::default();
        ServeSettings {
            log_only_max_events: serve.log_only_max_events,
            pin_ttl: serve.pin_ttl,
            pin_max_age: serve.pin_max_age,
            default_response_bytes: limits.default_response_bytes,
            max_response_bytes: limits.max_response_bytes,
            max_pins: serve.max_pins,
            max_concurrent_streams: limits.max_concurrent_streams,
            max_query_bytes: limits.max_query_bytes,
            health: crate::health::HealthSettings::default(),
        }
    }
}

/// Which way the server serves a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapPath {
    /// Every live row, then catch-up.
    Snapshot,
    /// The rows changed since `T`, then catch-up.
    Delta,
    /// Catch-up from `T` only: the log holds little after `T`.
    LogOnly,
}

impl BootstrapPath {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            BootstrapPath::Snapshot => "snapshot",
            BootstrapPath::Delta => "delta",
            BootstrapPath::LogOnly => "log_only",
        }
    }
}

/// The phase of a returned checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading snapshot rows.
    Snapshot,
    /// Replaying log windows.
    Catchup,
    /// Done: follow the relay.
    Online,
}

impl Phase {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Snapshot => "snapshot",
            Phase::Catchup => "catchup",
            Phase::Online => "online",
        }
    }
}

/// One answer of the stream endpoint.
#[derive(Debug, Clone)]
pub struct StreamReply {
    /// Frames, concatenated.
    pub body: Vec<u8>,
    /// Frames in the body.
    pub events: u32,
    /// The checkpoint to send next.
    pub checkpoint: Checkpoint,
    /// Whether more is available right away.
    pub more: bool,
    /// The returned checkpoint's phase.
    pub phase: Phase,
    /// The path of this bootstrap.
    pub path: BootstrapPath,
    /// The fixed start SCN.
    pub start_scn: Option<Scn>,
    /// The fixed target SCN, once known.
    pub target_scn: Option<Scn>,
}

/// Why a bootstrap request is refused (mapped to HTTP in [`crate::http`]).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad request.
    #[error("bad parameter {parameter}: {message}")]
    BadParameter {
        /// The parameter.
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// A source the database does not have.
    #[error("unknown source {0}; GET /v1/sources lists the sources of this bootstrap server")]
    UnknownSource(SourceId),
    /// A delta older than what the snapshot can answer.
    #[error(
        "a consolidated delta since SCN {requested} is not possible: the snapshot only knows changes after SCN {}; take a full snapshot instead",
        fmt_scn(*base)
    )]
    SnapshotRequired {
        /// The delta's `since`.
        requested: Scn,
        /// The snapshot's base.
        base: Option<Scn>,
    },
    /// Catch-up needs log windows already trimmed.
    #[error(
        "the bootstrap log no longer holds the windows after SCN {requested} (it is complete after {floor}); start the bootstrap again"
    )]
    LogTrimmed {
        /// Where catch-up is.
        requested: Scn,
        /// The log's floor.
        floor: Scn,
    },
    /// The server is at one of its limits (concurrent requests, bootstraps in progress); retry later.
    #[error("{0}; retry shortly")]
    Overloaded(String),
    /// The snapshot in progress was started in another store generation (the server re-seeded since):
    /// its resume token means nothing in the current one.
    #[error(
        "this bootstrap server re-seeded its database (generation {had} -> {now}) since this snapshot started; start the bootstrap again"
    )]
    GenerationChanged {
        /// The generation the snapshot started in.
        had: u64,
        /// The current generation.
        now: u64,
    },
    /// The database has not reached the SCN yet.
    #[error(
        "the bootstrap database is not yet at SCN {} (log at {}, snapshot at {}); retry later",
        fmt_scn(*requested), fmt_scn(*log_last), fmt_scn(*applied)
    )]
    NotYet {
        /// What was asked for.
        requested: Option<Scn>,
        /// The producer's position.
        log_last: Option<Scn>,
        /// The applier's position.
        applied: Option<Scn>,
    },
    /// No such schema.
    #[error(
        "no schema {0} in this bootstrap server (it serves the schemas its seed wrote rows with; ask the relay for others)"
    )]
    SchemaNotFound(String),
    /// Storage failed.
    #[error("internal error: {0}")]
    Internal(#[from] BootstrapError),
}

fn fmt_scn(s: Option<Scn>) -> String {
    s.map_or_else(|| "none".into(), |s| s.to_string())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state the handlers serve from.
///
/// A service made by [`BootstrapService::following`] serves whichever store generation is current
/// (see [`crate::generation`]): each request is answered by the service of one generation from start
/// to end, and a new generation's service is made when the pointer changes.
#[derive(Debug)]
pub struct BootstrapService {
    store: Arc<dyn BootstrapStore>,
    generation: u64,
    follower: Option<Follower>,
    settings: ServeSettings,
    schemas: Arc<crate::json::SchemaSource>,
    streams: Arc<tokio::sync::Semaphore>,
}

/// The current generation's service, looked up at most every [`crate::generation::POLL`].
#[derive(Debug)]
struct Follower {
    generations: crate::generation::Generations,
    options: crate::store::SqliteOptions,
    state: std::sync::Mutex<(std::time::Instant, Arc<BootstrapService>)>,
}

fn bad(parameter: &str, message: impl Into<String>) -> ServeError {
    ServeError::BadParameter {
        parameter: parameter.into(),
        message: message.into(),
    }
}

impl BootstrapService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn BootstrapStore>, settings: ServeSettings) -> Arc<BootstrapService> {
        BootstrapService::with_relay(store, settings, None)
    }

    /// A service over `store` that renders `format=json` with writer schemas from the bootstrap
    /// database and, for the others, from `relay` (the relay the producer copies).
    pub fn with_relay(
        store: Arc<dyn BootstrapStore>,
        settings: ServeSettings,
        relay: Option<crate::relay_client::RelayClient>,
    ) -> Arc<BootstrapService> {
        Arc::new(BootstrapService {
            store,
            generation: 0,
            follower: None,
            settings,
            schemas: Arc::new(crate::json::SchemaSource::new(relay)),
            streams: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_streams)),
        })
    }

    /// A service over the current generation of the database at `generations`, moving to each new
    /// generation once it is published.
    pub fn following(
        generations: crate::generation::Generations,
        options: crate::store::SqliteOptions,
        settings: ServeSettings,
        relay: Option<crate::relay_client::RelayClient>,
    ) -> Result<Arc<BootstrapService>, BootstrapError> {
        let (n, store) = generations.open_current(options)?;
        let first = Arc::new(BootstrapService {
            generation: n,
            ..Arc::into_inner(BootstrapService::with_relay(store.clone(), settings, relay))
                .expect("just made")
        });
        crate::metrics::generation(n);
        Ok(Arc::new(BootstrapService {
            store,
            generation: n,
            follower: Some(Follower {
                generations,
                options,
                state: std::sync::Mutex::new((std::time::Instant::now(), first.clone())),
            }),
            settings,
            schemas: first.schemas.clone(),
            streams: first.streams.clone(),
        }))
    }

    /// The service of the current generation (this one unless it follows generations).
    pub fn current(&self) -> Result<Arc<BootstrapService>, BootstrapError> {
        let Some(f) = &self.follower else {
            return Ok(Arc::new(BootstrapService {
                store: self.store.clone(),
                generation: self.generation,
                follower: None,
                settings: self.settings,
                schemas: self.schemas.clone(),
                streams: self.streams.clone(),
            }));
        };
        let mut state = f.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.elapsed() >= crate::generation::POLL {
            state.0 = std::time::Instant::now();
            let n = f.generations.current()?;
            if n != state.1.generation {
                let store = f.generations.open(n, f.options)?;
                tracing::info!(
                    from = state.1.generation,
                    to = n,
                    "bootstrap server: serving a new generation"
                );
                crate::metrics::generation(n);
                state.1 = Arc::new(BootstrapService {
                    store,
                    generation: n,
                    follower: None,
                    settings: self.settings,
                    schemas: self.schemas.clone(),
                    streams: self.streams.clone(),
                });
            }
        }
        Ok(state.1.clone())
    }

    /// The store generation this service serves now.
    pub fn generation(&self) -> Result<u64, BootstrapError> {
        Ok(self.current()?.generation)
    }

    /// A permit for one `stream` request; `None` at `max_concurrent_streams`.
    pub fn try_stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Where `format=json` finds writer schemas.
    pub fn schemas(&self) -> &crate::json::SchemaSource {
        &self.schemas
    }

    /// The current generation's store.
    pub fn store(&self) -> Arc<dyn BootstrapStore> {
        match &self.follower {
            None => self.store.clone(),
            Some(_) => self
                .current()
                .map_or_else(|_| self.store.clone(), |s| s.store.clone()),
        }
    }

    /// The roles' reports and what is wrong with them (see [`crate::health`]).
    pub fn health(
        &self,
    ) -> Result<(Vec<crate::store::RoleReport>, Vec<crate::health::Problem>), BootstrapError> {
        let roles = self.store().roles()?;
        let problems =
            crate::health::assess(&roles, crate::health::now_ms(), &self.settings.health);
        Ok((roles, problems))
    }

    /// The settings.
    pub fn settings(&self) -> &ServeSettings {
        &self.settings
    }

    /// Answers one stream request. `max_bytes` is already bounded by the caller.
    pub fn stream(
        &self,
        checkpoint: Checkpoint,
        filter: &FilterSpec,
        max_bytes: usize,
    ) -> Result<StreamReply, ServeError> {
        if self.follower.is_some() {
            return self.current()?.stream(checkpoint, filter, max_bytes);
        }
        let mut cp = checkpoint;
        if let Some(b) = cp.bootstrap.as_ref().filter(|b| {
            cp.mode == ConsumptionMode::BootstrapSnapshot
                && b.start_scn.is_some()
                && b.generation.unwrap_or(0) != self.generation
        }) {
            return Err(ServeError::GenerationChanged {
                had: b.generation.unwrap_or(0),
                now: self.generation,
            });
        }
        if cp.mode == ConsumptionMode::Online {
            return Err(bad(
                "checkpoint",
                "mode online is for the relay; call Checkpoint::start_bootstrap first",
            ));
        }
        let known = self.store.sources()?;
        if known.is_empty() {
            // Nothing recorded yet (the producer has not reached the relay, no seed ran): an empty
            // snapshot would be wrong, not merely incomplete.
            let log = self.store.log_status()?;
            return Err(ServeError::NotYet {
                requested: cp.bootstrap.as_ref().and_then(|b| b.since_scn),
                log_last: log.last_scn,
                applied: self.store.snapshot_status()?.applied_scn,
            });
        }
        let sources: Vec<SourceId> = match filter.sources() {
            Some(set) => {
                for s in set {
                    if !known.iter().any(|k| k.id == *s) {
                        return Err(ServeError::UnknownSource(*s));
                    }
                }
                set.iter().copied().collect()
            }
            None => known.iter().map(|k| k.id).collect(),
        };
        let mut progress = cp.bootstrap.clone().unwrap_or_default();
        let mut path = match progress.since_scn {
            None => BootstrapPath::Snapshot,
            Some(t) if progress.start_scn == Some(t) => BootstrapPath::LogOnly,
            Some(_) => BootstrapPath::Delta,
        };
        if cp.mode == ConsumptionMode::BootstrapSnapshot && progress.start_scn.is_none() {
            let (start, log_only) = self.begin(&progress)?;
            progress.start_scn = Some(start);
            progress.generation = (self.generation > 0).then_some(self.generation);
            if log_only {
                path = BootstrapPath::LogOnly;
                let target = self.store.log_status()?.last_scn.unwrap_or(start);
                enter_catchup(&mut cp, progress, start, target)?;
            } else {
                cp.bootstrap = Some(progress);
            }
        }
        let progress = cp.bootstrap.clone().unwrap_or_default();
        let start = progress
            .start_scn
            .ok_or_else(|| bad("checkpoint", "bootstrap.start_scn is missing"))?;
        self.pin(start)?;
        let mut reply = match cp.mode {
            ConsumptionMode::BootstrapSnapshot => {
                self.snapshot_page(cp, progress, &sources, filter, max_bytes)?
            }
            _ => self.catchup_page(cp, filter, max_bytes)?,
        };
        reply.path = path;
        Ok(reply)
    }

    /// Pins the log after `start` for `pin_ttl` (refreshed by each request of the bootstrap), for
    /// `pin_max_age` at most after its first request (then it holds nothing, refreshed or not). A start
    /// before the log's floor pins nothing (its catch-up is refused with `log_trimmed` anyway), so a
    /// client claiming an old start cannot stop trimming; a new start beyond `max_pins` pins in
    /// place is refused with `503 overloaded`.
    fn pin(&self, start: Scn) -> Result<(), ServeError> {
        let floor = self.store.log_status()?.floor_scn;
        if floor.is_some_and(|f| start < f) {
            return Ok(());
        }
        let now = now_ms();
        let pins = self.store.pins(now)?;
        if pins.len() >= self.settings.max_pins && !pins.iter().any(|&(s, _)| s == start) {
            crate::metrics::pin_refused();
            return Err(ServeError::Overloaded(format!(
                "{} bootstraps are in progress, the server's limit (serve.max_pins)",
                pins.len()
            )));
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.store.pin_until(
            start,
            now.saturating_add(ms(self.settings.pin_ttl)),
            now.saturating_add(ms(self.settings.pin_max_age)),
        )?;
        Ok(())
    }

    /// Fixes the start SCN of a new bootstrap; `true` when the log alone serves it.
    fn begin(&self, progress: &BootstrapProgress) -> Result<(Scn, bool), ServeError> {
        let log = self.store.log_status()?;
        let snap = self.store.snapshot_status()?;
        let not_yet = |requested| ServeError::NotYet {
            requested,
            log_last: log.last_scn,
            applied: snap.applied_scn,
        };
        if let Some(t) = progress.since_scn {
            let Some(last) = log.last_scn else {
                return Err(not_yet(Some(t)));
            };
            if t > last {
                return Err(not_yet(Some(t)));
            }
            if log.floor_scn.is_some_and(|f| f <= t) {
                let limit = self.settings.log_only_max_events;
                let windows = self.store.windows(t, Scn::MAX, 10_001)?;
                let events: u64 = windows.iter().map(|w| u64::from(w.events)).sum();
                if windows.len() <= 10_000 && events <= limit {
                    return Ok((t, true));
                }
            }
            let Some(applied) = snap.applied_scn else {
                return Err(not_yet(Some(t)));
            };
            match snap.base_scn {
                Some(base) if base <= t => Ok((applied.max(t), false)),
                base => Err(ServeError::SnapshotRequired { requested: t, base }),
            }
        } else {
            let applied = snap.applied_scn.ok_or_else(|| not_yet(None))?;
            Ok((applied, false))
        }
    }

    fn snapshot_page(
        &self,
        mut cp: Checkpoint,
        mut progress: BootstrapProgress,
        sources: &[SourceId],
        filter: &FilterSpec,
        max_bytes: usize,
    ) -> Result<StreamReply, ServeError> {
        let start = progress.start_scn.unwrap_or(Scn::ZERO);
        let mut body = Vec::new();
        let mut events = 0u32;
        let mut idx = match progress.snapshot_source {
            Some(s) => sources
                .iter()
                .position(|x| *x >= s)
                .unwrap_or(sources.len()),
            None => 0,
        };
        let mut after_row: u64 = match (&progress.snapshot_token, progress.snapshot_source) {
            (Some(t), Some(s)) if sources.get(idx) == Some(&s) => t
                .parse()
                .map_err(|_| bad("checkpoint", format!("bad snapshot_token {t:?}")))?,
            _ => 0,
        };
        while idx < sources.len() {
            let source = sources[idx];
            let rows = self.store.read(&SnapshotQuery {
                source,
                after_row,
                since: progress.since_scn,
                tombstones: progress.since_scn.is_some(),
                filter,
                limit: PAGE,
                max_bytes: budget(max_bytes, body.len()),
            })?;
            let exhausted = exhausted(&rows, |r| r.frame.len(), budget(max_bytes, body.len()));
            for row in rows {
                if !body.is_empty() && body.len() + row.frame.len() > max_bytes {
                    progress.snapshot_source = Some(source);
                    progress.snapshot_token = Some(after_row.to_string());
                    cp.bootstrap = Some(progress);
                    return Ok(reply(body, events, cp, true, Phase::Snapshot, start, None));
                }
                body.extend_from_slice(&row.frame);
                events += 1;
                progress.rows_done += 1;
                after_row = row.row_id;
            }
            if exhausted {
                idx += 1;
                after_row = 0;
            }
        }
        // Every source read: catch-up from the start to the producer's position now.
        let log = self.store.log_status()?;
        let target = log.last_scn.unwrap_or(start).max(start);
        enter_catchup(&mut cp, progress, start, target)?;
        Ok(reply(
            body,
            events,
            cp,
            true,
            Phase::Catchup,
            start,
            Some(target),
        ))
    }

    fn catchup_page(
        &self,
        mut cp: Checkpoint,
        filter: &FilterSpec,
        max_bytes: usize,
    ) -> Result<StreamReply, ServeError> {
        let mut progress = cp.bootstrap.clone().unwrap_or_default();
        let (Some(start), Some(target)) = (progress.start_scn, progress.target_scn) else {
            return Err(bad(
                "checkpoint",
                "catch-up needs bootstrap.start_scn and target_scn",
            ));
        };
        let log = self.store.log_status()?;
        // The first window still needed: window_scn itself when mid-window, else the one after it.
        let after = match cp.window_offset {
            Some(_) => Scn::new(cp.window_scn.get().saturating_sub(1)),
            None => cp.window_scn,
        };
        if let Some(floor) = log.floor_scn {
            if after < floor && after < target {
                return Err(ServeError::LogTrimmed {
                    requested: after,
                    floor,
                });
            }
        }
        if log.last_scn.is_none_or(|l| l < target) {
            return Err(ServeError::NotYet {
                requested: Some(target),
                log_last: log.last_scn,
                applied: None,
            });
        }
        let mut body = Vec::new();
        let mut events = 0u32;
        let ws = self.store.windows(after, target, WINDOW_PAGE)?;
        let full_page = ws.len() == WINDOW_PAGE;
        let end_len = EventBuilder::end_of_window(Scn::ZERO, 0).encoded_len();
        let mut wi = 0usize;
        if !ws.is_empty() {
            let skip = match cp.window_offset {
                Some(k) if ws[0].scn == cp.window_scn => u64::from(k),
                _ => 0,
            };
            let end_seq = ws.last().map_or(0, |w| w.first_seq + u64::from(w.events));
            let mut next_seq = ws[0].first_seq + skip;
            'rows: while next_seq < end_seq {
                let room = budget(max_bytes, body.len());
                let rows = self
                    .store
                    .events(next_seq, end_seq - 1, filter, PAGE, room)?;
                let exhausted = exhausted(&rows, |r| r.frame.len(), room);
                for row in rows {
                    next_seq = row.seq + 1;
                    while row.seq >= ws[wi].first_seq + u64::from(ws[wi].events) {
                        if !close_window(
                            &mut cp,
                            &mut body,
                            &mut events,
                            ws[wi],
                            max_bytes,
                            end_len,
                        ) {
                            return Ok(self.catchup_reply(body, events, cp, progress, true));
                        }
                        wi += 1;
                    }
                    let w = ws[wi];
                    if !body.is_empty() && body.len() + row.frame.len() > max_bytes {
                        let k = (row.seq - w.first_seq) as u32;
                        if k > 0 {
                            cp.window_scn = w.scn;
                            cp.window_offset = Some(k);
                        }
                        return Ok(self.catchup_reply(body, events, cp, progress, true));
                    }
                    body.extend_from_slice(&row.frame);
                    events += 1;
                    progress.rows_done += 1;
                    cp.window_scn = w.scn;
                    cp.window_offset = Some((row.seq - w.first_seq + 1) as u32);
                }
                if exhausted {
                    break 'rows;
                }
            }
            while wi < ws.len() {
                if !close_window(&mut cp, &mut body, &mut events, ws[wi], max_bytes, end_len) {
                    return Ok(self.catchup_reply(body, events, cp, progress, true));
                }
                wi += 1;
            }
        }
        if full_page {
            return Ok(self.catchup_reply(body, events, cp, progress, true));
        }
        // Every window up to the target delivered: back online at the target.
        cp.bootstrap = Some(progress);
        cp.finish_bootstrap(target)
            .map_err(|e| bad("checkpoint", e.to_string()))?;
        Ok(reply(
            body,
            events,
            cp,
            false,
            Phase::Online,
            start,
            Some(target),
        ))
    }

    fn catchup_reply(
        &self,
        body: Vec<u8>,
        events: u32,
        mut cp: Checkpoint,
        progress: BootstrapProgress,
        more: bool,
    ) -> StreamReply {
        let (start, target) = (progress.start_scn, progress.target_scn);
        cp.bootstrap = Some(progress);
        let mut r = reply(
            body,
            events,
            cp,
            more,
            Phase::Catchup,
            start.unwrap_or(Scn::ZERO),
            target,
        );
        r.start_scn = start;
        r
    }
}

/// Appends window `w`'s end marker unless the budget is spent; `false` = stop here.
fn close_window(
    cp: &mut Checkpoint,
    body: &mut Vec<u8>,
    events: &mut u32,
    w: crate::store::WindowInfo,
    max_bytes: usize,
    end_len: usize,
) -> bool {
    if !body.is_empty() && body.len() + end_len > max_bytes {
        if w.events > 0 {
            cp.window_scn = w.scn;
            cp.window_offset = Some(w.events);
        }
        return false;
    }
    EventBuilder::end_of_window(w.scn, w.timestamp_ns).write_to_vec(body);
    *events += 1;
    cp.window_scn = w.scn;
    cp.window_offset = None;
    cp.prev_scn = Some(w.scn);
    true
}

fn enter_catchup(
    cp: &mut Checkpoint,
    progress: BootstrapProgress,
    start: Scn,
    target: Scn,
) -> Result<(), ServeError> {
    let mut next = Checkpoint::after(start);
    next.mode = ConsumptionMode::BootstrapSnapshot;
    next.bootstrap = Some(progress);
    next.start_catchup(start, target)
        .map_err(|e| bad("checkpoint", e.to_string()))?;
    *cp = next;
    Ok(())
}

fn reply(
    body: Vec<u8>,
    events: u32,
    checkpoint: Checkpoint,
    more: bool,
    phase: Phase,
    start: Scn,
    target: Option<Scn>,
) -> StreamReply {
    StreamReply {
        body,
        events,
        checkpoint,
        more,
        phase,
        path: BootstrapPath::Snapshot,
        start_scn: Some(start),
        target_scn: target,
    }
}
