//! The state the HTTP handlers serve from: the buffers of every source, their table mappings, ingest
//! status and the schema registry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use databus_buffer::EventBuffer;
use databus_core::{SchemaId, Scn, SourceId};
use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::json_text::{JsonPlan, JsonPlanCache};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{HttpSettings, ValidatedTable};

/// What the ingest side of one source is doing, as shown by `/v1/status` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestState {
    /// Not started yet.
    Starting,
    /// Connected and following the source.
    Streaming,
    /// A transient error: reconnecting with backoff.
    Reconnecting,
    /// A definite error: ingest stopped until an operator fixes the cause (see `last_error`).
    Failed,
    /// Shut down.
    Stopped,
}

/// The ingest status of one source, updated by its pipeline and read by the HTTP layer.
#[derive(Debug)]
pub struct IngestStatus {
    inner: Mutex<IngestSnapshot>,
}

/// A copy of an [`IngestStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestSnapshot {
    /// What ingest is doing.
    pub state: IngestState,
    /// The source position of the last transaction written (e.g. a GTID and binlog file:position).
    pub position: Option<String>,
    /// The SCN of the last window written.
    pub last_scn: Option<Scn>,
    /// Commit timestamp (ns since the epoch) of the last window written, for the ingest lag.
    pub last_timestamp_ns: Option<u64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Windows written since the relay started (for rates on the status page).
    pub windows_in: u64,
    /// Data events written since the relay started.
    pub events_in: u64,
    /// When (ns since the epoch, the relay's clock) the last window was written.
    pub last_write_ns: Option<u64>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            inner: Mutex::new(IngestSnapshot {
                state: IngestState::Starting,
                position: None,
                last_scn: None,
                last_timestamp_ns: None,
                last_error: None,
                windows_in: 0,
                events_in: 0,
                last_write_ns: None,
            }),
        }
    }
}

impl IngestStatus {
    /// Applies `f` to the status.
    pub fn update(&self, f: impl FnOnce(&mut IngestSnapshot)) {
        // Updates are plain field assignments: a poisoned lock still holds a consistent value.
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> IngestSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One physical source as the HTTP layer sees it.
#[derive(Clone)]
pub struct SourceHandle {
    /// Unique name.
    pub name: String,
    /// Its event buffer (read side).
    pub buffer: Arc<EventBuffer>,
    /// The logical sources (tables) whose events the buffer holds.
    pub tables: Vec<ValidatedTable>,
    /// Ingest status.
    pub status: Arc<IngestStatus>,
}

impl std::fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceHandle")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// Everything the HTTP handlers serve from; shared as an `Arc`.
pub struct RelayService {
    sources: Vec<SourceHandle>,
    by_id: BTreeMap<SourceId, usize>,
    by_name: BTreeMap<String, SourceId>,
    schemas: Arc<SchemaRegistry>,
    http: HttpSettings,
    metrics: Option<PrometheusHandle>,
    stopping: CancellationToken,
    streams: Arc<Semaphore>,
    /// `format=json`: plans of the direct renderer, one per schema id.
    json_plans: JsonPlanCache,
    /// `format=json` through apache-avro values and `serde_json` (the renderer before the direct one),
    /// for benchmarks that compare the two.
    value_json: AtomicBool,
    /// Whether large `format=json` answers are rendered in two halves on two threads (the default);
    /// off for benchmarks that compare with one thread.
    json_split: AtomicBool,
}

impl std::fmt::Debug for RelayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayService")
            .field("sources", &self.sources)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl RelayService {
    /// A service over `sources` (whose table ids must be unique, as a validated config guarantees).
    pub fn new(
        sources: Vec<SourceHandle>,
        schemas: Arc<SchemaRegistry>,
        http: HttpSettings,
        metrics: Option<PrometheusHandle>,
    ) -> Arc<Self> {
        let mut by_id = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (i, source) in sources.iter().enumerate() {
            for table in &source.tables {
                by_id.insert(table.id, i);
                by_name.insert(table.name.clone(), table.id);
            }
        }
        Arc::new(RelayService {
            sources,
            by_id,
            by_name,
            schemas,
            http,
            metrics,
            stopping: CancellationToken::new(),
            streams: Arc::new(Semaphore::new(http.max_concurrent_streams)),
            json_plans: JsonPlanCache::default(),
            value_json: AtomicBool::new(false),
            json_split: AtomicBool::new(true),
        })
    }

    /// The direct JSON renderer's plan of schema `id` (compiled on first use), `None` when the
    /// registry does not know `id`.
    pub fn json_plan(&self, id: SchemaId) -> Option<Arc<JsonPlan>> {
        self.json_plans
            .get_or_compile(id, || self.schemas.get(id).map(|s| s.avro))
    }

    /// Renders `format=json` through apache-avro values and `serde_json` (`true`), the renderer the
    /// relay had before it wrote JSON straight from the Avro binary (`false`, the default). The output
    /// is the same; this exists so that benchmarks can compare the two.
    pub fn use_value_json_renderer(&self, on: bool) {
        // Relaxed: a mode flag read per response; no other memory depends on it.
        self.value_json.store(on, Ordering::Relaxed);
    }

    /// Whether [`RelayService::use_value_json_renderer`] is on.
    pub fn uses_value_json_renderer(&self) -> bool {
        // Relaxed: see `use_value_json_renderer`.
        self.value_json.load(Ordering::Relaxed)
    }

    /// Renders large `format=json` answers in two halves on two threads (`true`, the default) or on one
    /// (`false`). The output is the same; this exists so that benchmarks can compare the two.
    pub fn split_json_rendering(&self, on: bool) {
        // Relaxed: a mode flag read per response; no other memory depends on it.
        self.json_split.store(on, Ordering::Relaxed);
    }

    /// Whether [`RelayService::split_json_rendering`] is on.
    pub fn splits_json_rendering(&self) -> bool {
        // Relaxed: see `split_json_rendering`.
        self.json_split.load(Ordering::Relaxed)
    }

    /// A permit for one `stream` request, `None` when `http.max_concurrent_streams` are in progress.
    pub fn try_stream_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Cancelled when the server shuts down: long polls in progress return at once (with what they
    /// have) so that the server drains quickly.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// The physical sources.
    pub fn sources(&self) -> &[SourceHandle] {
        &self.sources
    }

    /// The physical source holding logical source `id`.
    pub fn source_of(&self, id: SourceId) -> Option<&SourceHandle> {
        self.by_id.get(&id).map(|&i| &self.sources[i])
    }

    /// The physical source named `name`.
    pub fn source_named(&self, name: &str) -> Option<&SourceHandle> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Resolves a logical source given as an id or a name.
    pub fn logical_source(&self, text: &str) -> Option<SourceId> {
        match text.parse::<SourceId>() {
            Ok(id) => self.by_id.contains_key(&id).then_some(id),
            Err(_) => self.by_name.get(text).copied(),
        }
    }

    /// The schema registry.
    pub fn schemas(&self) -> &SchemaRegistry {
        &self.schemas
    }

    /// The table mapping of logical source `id`.
    pub fn table_of(&self, id: SourceId) -> Option<&ValidatedTable> {
        self.source_of(id)?.tables.iter().find(|t| t.id == id)
    }

    /// The logical source a table is mapped to.
    pub fn source_of_table(&self, database: &str, table: &str) -> Option<SourceId> {
        self.sources
            .iter()
            .flat_map(|s| &s.tables)
            .find(|t| t.database == database && t.table == table)
            .map(|t| t.id)
    }

    /// HTTP limits.
    pub fn http(&self) -> &HttpSettings {
        &self.http
    }

    /// The Prometheus exporter's handle, if one is installed.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.metrics.as_ref()
    }
}

impl IngestSnapshot {
    /// Counts one window of `events` data events written now.
    pub fn count_window(&mut self, events: u64) {
        self.windows_in += 1;
        self.events_in += events;
        self.last_write_ns = Some(now_ns());
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
