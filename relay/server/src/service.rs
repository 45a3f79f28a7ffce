//! The state the HTTP handlers serve from: the buffers of every source, their table mappings, ingest
//! status and the schema catalog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use databus_core::{SchemaId, Scn, SourceId};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::config::{HttpSettings, ValidatedTable};
use crate::store::EventStore;

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
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            inner: Mutex::new(IngestSnapshot {
                state: IngestState::Starting,
                position: None,
                last_scn: None,
                last_error: None,
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

/// One registered schema version, as served by `/v1/schemas`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaInfo {
    /// The schema id (fingerprint), rendered as 16 hex digits.
    #[serde(serialize_with = "ser_schema_id")]
    pub id: SchemaId,
    /// Version number of this schema for its table, from 1.
    pub version: u32,
    /// The logical source (table) it describes.
    pub source: SourceId,
    /// The table, `database.table`.
    pub table: String,
    /// The Avro schema as JSON.
    pub avro: serde_json::Value,
}

fn ser_schema_id<S: serde::Serializer>(id: &SchemaId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:016x}", id.get()))
}

/// Where the HTTP layer finds schemas. The relay's ingest registers versions in the schema registry of
/// `databus-serde-formats`; tests use [`StaticSchemas`].
pub trait SchemaCatalog: Send + Sync + 'static {
    /// Every version of the schemas of `source`, oldest first.
    fn by_source(&self, source: SourceId) -> Vec<SchemaInfo>;
    /// One schema version.
    fn by_id(&self, id: SchemaId) -> Option<SchemaInfo>;
}

/// A fixed list of schemas.
#[derive(Debug, Default, Clone)]
pub struct StaticSchemas(pub Vec<SchemaInfo>);

impl SchemaCatalog for StaticSchemas {
    fn by_source(&self, source: SourceId) -> Vec<SchemaInfo> {
        self.0
            .iter()
            .filter(|s| s.source == source)
            .cloned()
            .collect()
    }

    fn by_id(&self, id: SchemaId) -> Option<SchemaInfo> {
        self.0.iter().find(|s| s.id == id).cloned()
    }
}

/// One physical source as the HTTP layer sees it.
#[derive(Clone)]
pub struct SourceHandle {
    /// Unique name.
    pub name: String,
    /// Its buffer.
    pub store: Arc<dyn EventStore>,
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
    schemas: Arc<dyn SchemaCatalog>,
    http: HttpSettings,
    metrics: Option<PrometheusHandle>,
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
        schemas: Arc<dyn SchemaCatalog>,
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
        })
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

    /// The schema catalog.
    pub fn schemas(&self) -> &dyn SchemaCatalog {
        &*self.schemas
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

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
