//! The HTTP API (warp): one pure filter per endpoint that parses bounded, typed parameters, one handler per
//! endpoint over an `Arc<RelayService>`, and ONE place ([`ApiError::to_response`]) that turns errors into
//! responses. The protocol is documented in `docs/protocol.md`.
//!
//! | endpoint | what |
//! |----------|------|
//! | `GET /v1/sources` | the logical sources (tables) and the buffer holding each |
//! | `GET /v1/schemas?source=<id or name>` | every schema version of a source |
//! | `GET /v1/schemas/<id>` | one schema version, by its 16-hex-digit id |
//! | `GET /v1/stream?checkpoint=..&sources=..&max_bytes=..&wait_ms=..&format=binary\|json&buffer=..` | events after a checkpoint |
//! | `GET /v1/status` | per buffer: SCN range, bytes and events held, ingest state and lag |
//! | `GET /health` | `200` `ok` or `degraded` (a source reconnecting), `503` `unhealthy` once a source failed |
//! | `GET /metrics` | Prometheus text |
//! | `GET /`, `GET /status` | the HTML status page ([`crate::status_page`]) |

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use databus_core::{Checkpoint, ConsumptionMode, EventView, FrameHeader, SchemaId, SourceId};
use serde_json::{Value, json};
use tokio::time::Instant;
use warp::http::{HeaderValue, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::config::HttpSettings;
use crate::metrics as m;
use crate::service::{IngestState, RelayService, SourceHandle, now_ns};
use databus_buffer::{EmptyWindows, ReadError, ReadOutcome, WaitOutcome};
use databus_filters::{Filter as KeyFilter, FilterError, FilterSpec};
use databus_serde_formats::RegisteredSchema;
use databus_serde_formats::json_text::{JsonPlan, write_event_json};

pub use databus_http::protocol::{
    CHECKPOINT_HEADER, ERROR_HEADER, EVENTS_HEADER, FRAMES_CONTENT_TYPE, JSON_LINES_CONTENT_TYPE,
    MORE_HEADER,
};
use databus_http::protocol::{HEALTH_ERROR, Health, HealthProblem, HealthStatus};

/// The most logical sources a `sources` parameter may list.
pub const MAX_LISTED_SOURCES: usize = 1024;

/// Every way a request fails, each with its status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A parameter is missing, malformed or out of range (400).
    BadParameter {
        /// The parameter's name.
        parameter: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The query string is longer than allowed (414).
    QueryTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No such logical or physical source (404).
    UnknownSource(String),
    /// No such schema (404).
    SchemaNotFound(String),
    /// The checkpoint is older than the buffer: bootstrap (410).
    ScnNotFound {
        /// The buffer.
        buffer: String,
        /// The checkpoint's SCN.
        requested: u64,
        /// Oldest SCN held.
        min_scn: Option<u64>,
        /// Newest SCN held.
        max_scn: Option<u64>,
        /// SCN of the last evicted window.
        prev_scn: Option<u64>,
    },
    /// No such endpoint (404).
    NotFound,
    /// The endpoint exists but not for this method (405).
    MethodNotAllowed,
    /// The relay cannot serve (503), e.g. a source failed.
    Unavailable(String),
    /// The buffer has no origin yet: its source was not positioned since the relay started (503); retry
    /// later or ask another relay.
    NotPositioned(String),
    /// Too many `stream` requests in progress (503); retry later.
    Overloaded {
        /// The limit, `http.max_concurrent_streams`.
        max: usize,
    },
    /// A bug or corrupt state (500); never caused by input.
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    fn bad(parameter: &str, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    /// The machine-readable code (the body's `error` field and the `X-Databus-Error` header).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadParameter { .. } => "bad_parameter",
            ApiError::QueryTooLong { .. } => "query_too_long",
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::SchemaNotFound(_) => "schema_not_found",
            ApiError::ScnNotFound { .. } => "scn_not_found",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotPositioned(_) => "not_positioned",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::QueryTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::UnknownSource(_) | ApiError::SchemaNotFound(_) | ApiError::NotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::ScnNotFound { .. } => StatusCode::GONE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::NotPositioned(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A human-readable message naming the thing and the fix.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadParameter { parameter, message } => {
                format!("bad parameter {parameter}: {message}")
            }
            ApiError::QueryTooLong { len, max } => {
                format!(
                    "query string of {len} bytes exceeds the limit of {max} bytes; shorten it (source ranges like 1-9 instead of lists) or raise http.max_query_bytes"
                )
            }
            ApiError::UnknownSource(s) => {
                format!("unknown source {s}; GET /v1/sources lists the sources of this relay")
            }
            ApiError::SchemaNotFound(s) => format!("no schema {s} in this relay"),
            ApiError::ScnNotFound {
                buffer,
                requested,
                min_scn,
                max_scn,
                prev_scn,
            } => {
                let f = |s: &Option<u64>| s.map_or_else(|| "none".to_owned(), |v| v.to_string());
                format!(
                    "buffer {buffer} no longer holds the events after SCN {requested} (it holds {}..={}, \
                     the last evicted window is {}); bootstrap from a snapshot, then resume here",
                    f(min_scn),
                    f(max_scn),
                    f(prev_scn)
                )
            }
            ApiError::NotFound => {
                "no such endpoint; see docs/protocol.md for the relay's API".to_owned()
            }
            ApiError::MethodNotAllowed => "method not allowed; the relay's API is GET only".into(),
            ApiError::Overloaded { max } => format!(
                "{max} stream requests are in progress, the relay's limit (http.max_concurrent_streams); retry shortly"
            ),
            ApiError::Unavailable(s) | ApiError::NotPositioned(s) | ApiError::Internal(s) => {
                s.clone()
            }
        }
    }

    /// The response: status, `X-Databus-Error` header and a JSON body
    /// `{"error": code, "message": .., ..details}`. The one place errors become responses.
    pub fn to_response(&self) -> Response {
        let mut body = json!({ "error": self.code(), "message": self.message() });
        match self {
            ApiError::BadParameter { parameter, .. } => {
                body["parameter"] = json!(parameter);
            }
            ApiError::ScnNotFound {
                buffer,
                requested,
                min_scn,
                max_scn,
                prev_scn,
            } => {
                body["buffer"] = json!(buffer);
                body["requested_scn"] = json!(requested);
                body["min_scn"] = json!(min_scn);
                body["max_scn"] = json!(max_scn);
                body["prev_scn"] = json!(prev_scn);
            }
            _ => {}
        }
        m::http_error(self.code());
        let mut response = Response::new(body.to_string().into());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        response
    }
}

/// Query parameters: decoded, each at most once.
type Params = BTreeMap<String, String>;

fn parse_query(raw: &str, max_len: usize, allowed: &[&str]) -> Result<Params, ApiError> {
    if raw.len() > max_len {
        return Err(ApiError::QueryTooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    let mut params = Params::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        let allowed_name = allowed.contains(&name.as_ref())
            || (allowed.contains(&"partition.*") && name.starts_with("partition."));
        if !allowed_name {
            let mut shown: String = name.chars().take(64).collect();
            if shown.len() < name.len() {
                shown.push('…');
            }
            return Err(ApiError::bad(
                &shown,
                format!(
                    "unknown parameter; this endpoint takes {}",
                    if allowed.is_empty() {
                        "no parameters".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::bad(&name, "given more than once; give it once"));
        }
    }
    Ok(params)
}

fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn parse_u64_in(params: &Params, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(name) else {
        return Ok(None);
    };
    let value: u64 = text.trim().parse().map_err(|_| {
        ApiError::bad(
            name,
            format!("{text:?} is not a non-negative integer; use {min}..={max}"),
        )
    })?;
    if !(min..=max).contains(&value) {
        return Err(ApiError::bad(
            name,
            format!("{value} is out of range; use {min}..={max}"),
        ));
    }
    Ok(Some(value))
}

/// The body format of a stream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Concatenated binary event frames.
    Binary,
    /// JSON lines, one per event, then `{"checkpoint":..}`.
    Json,
}

/// A logical source named in a request, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceRef {
    /// By id.
    Id(SourceId),
    /// By name.
    Name(String),
}

/// The parsed parameters of `GET /v1/stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParams {
    /// Where to continue (default: the beginning).
    pub checkpoint: Checkpoint,
    /// The source and key-partition filter (`sources`, `partition`, `partition.<id>`; see
    /// `databus_filters::query`).
    pub filter: FilterSpec,
    /// The buffer (physical source) to read, when `sources` does not determine it.
    pub buffer: Option<String>,
    /// Response byte budget.
    pub max_bytes: usize,
    /// Long-poll wait when nothing is available.
    pub wait: Duration,
    /// Body format.
    pub format: StreamFormat,
    /// `empty_windows=every|coalesce`: whether windows with nothing for this request each get their
    /// end marker (`every`, the default) or a run of them gets only its last one (`coalesce`).
    pub empty_windows: EmptyWindows,
}

const STREAM_PARAMS: &[&str] = &[
    "checkpoint",
    "sources",
    "buffer",
    "max_bytes",
    "wait_ms",
    "format",
    "empty_windows",
    "partition",
    "partition.*",
];

fn parse_source_list(text: &str) -> Result<Vec<SourceRef>, ApiError> {
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(ApiError::bad(
                "sources",
                "empty entry; list ids or names separated by commas, e.g. sources=1,orders",
            ));
        }
        if part.len() > 64 {
            return Err(ApiError::bad(
                "sources",
                "an entry is longer than 64 characters",
            ));
        }
        let entry = if part.bytes().all(|b| b.is_ascii_digit()) {
            SourceRef::Id(part.parse().map_err(|e: databus_core::ParseIdError| {
                ApiError::bad("sources", format!("{e}; source ids are 0..=65535"))
            })?)
        } else {
            SourceRef::Name(part.to_owned())
        };
        out.insert(entry);
        if out.len() > MAX_LISTED_SOURCES {
            return Err(ApiError::bad(
                "sources",
                format!("more than {MAX_LISTED_SOURCES} sources listed"),
            ));
        }
    }
    Ok(out.into_iter().collect())
}

/// Parses the query of `GET /v1/stream` (pure: no service state).
pub fn parse_stream_params(raw: &str, http: &HttpSettings) -> Result<StreamParams, ApiError> {
    let params = parse_query(raw, http.max_query_bytes, STREAM_PARAMS)?;

    let checkpoint = match params.get("checkpoint") {
        None => Checkpoint::beginning(),
        Some(text) => {
            let cp = Checkpoint::from_json(text)
                .map_err(|e| ApiError::bad("checkpoint", e.to_string()))?;
            if cp.mode != ConsumptionMode::Online {
                return Err(ApiError::bad(
                    "checkpoint",
                    format!(
                        "mode is {:?}; a relay serves online checkpoints only (bootstrap from the bootstrap server)",
                        cp.mode
                    ),
                ));
            }
            cp
        }
    };
    let filter = FilterSpec::from_pairs(
        params
            .iter()
            .filter(|(k, _)| k.as_str() == "sources" || k.starts_with("partition")),
    )
    .map_err(|e| match e {
        FilterError::InvalidParam { param, reason } => ApiError::bad(&param, reason),
        other => ApiError::bad("partition", other.to_string()),
    })?;
    let buffer = params.get("buffer").cloned();
    if let Some(name) = &buffer {
        if name.is_empty() || name.len() > 64 {
            return Err(ApiError::bad(
                "buffer",
                "use a buffer name from GET /v1/sources",
            ));
        }
    }
    let max_bytes = parse_u64_in(&params, "max_bytes", 1, http.max_response_bytes as u64)?
        .map_or(http.default_response_bytes, |v| v as usize);
    let max_wait_ms = u64::try_from(http.max_wait.as_millis()).unwrap_or(u64::MAX);
    let wait =
        Duration::from_millis(parse_u64_in(&params, "wait_ms", 0, max_wait_ms)?.unwrap_or(0));
    let format = match params.get("format").map(String::as_str) {
        None | Some("binary") => StreamFormat::Binary,
        Some("json") => StreamFormat::Json,
        Some(other) => {
            return Err(ApiError::bad(
                "format",
                format!("{other:?} is not a format; use binary or json"),
            ));
        }
    };
    let empty_windows = match params.get("empty_windows").map(String::as_str) {
        None | Some("every") => EmptyWindows::Every,
        Some("coalesce") => EmptyWindows::Coalesce,
        Some(other) => {
            return Err(ApiError::bad(
                "empty_windows",
                format!("{other:?} is not a choice; use every or coalesce"),
            ));
        }
    };
    Ok(StreamParams {
        checkpoint,
        filter,
        buffer,
        max_bytes,
        wait,
        format,
        empty_windows,
    })
}

/// The parsed parameters of `GET /v1/schemas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemasParams {
    /// The logical source.
    pub source: SourceRef,
}

/// Parses the query of `GET /v1/schemas`.
pub fn parse_schemas_params(raw: &str, http: &HttpSettings) -> Result<SchemasParams, ApiError> {
    let params = parse_query(raw, http.max_query_bytes, &["source"])?;
    let text = params.get("source").ok_or_else(|| {
        ApiError::bad(
            "source",
            "missing; give a source id or name, e.g. ?source=orders",
        )
    })?;
    let mut list = parse_source_list(text).map_err(|e| match e {
        ApiError::BadParameter { message, .. } => ApiError::bad("source", message),
        other => other,
    })?;
    if list.len() != 1 {
        return Err(ApiError::bad("source", "give exactly one source"));
    }
    Ok(SchemasParams {
        source: list.remove(0),
    })
}

/// Parses a schema id path segment: 16 hex digits (as `/v1/schemas` lists them).
pub fn parse_schema_id(segment: &str) -> Result<SchemaId, ApiError> {
    if segment.is_empty() || segment.len() > 16 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(
            "id",
            format!("{segment:?} is not a schema id; use the 16 hex digits listed by /v1/schemas"),
        ));
    }
    u64::from_str_radix(segment, 16)
        .map(SchemaId::new)
        .map_err(|e| ApiError::bad("id", e.to_string()))
}

fn no_params(max: usize) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    raw_query()
        .and_then(move |raw: String| async move {
            parse_query(&raw, max, &[])
                .map(|_| ())
                .map_err(warp::reject::custom)
        })
        .untuple_one()
}

/// The filter of `GET /v1/stream`: parsed parameters or a rejection carrying an [`ApiError`].
pub fn stream_params(
    http: HttpSettings,
) -> impl Filter<Extract = (StreamParams,), Error = Rejection> + Clone {
    warp::path!("v1" / "stream")
        .and(warp::get())
        .and(raw_query())
        .and_then(move |raw: String| async move {
            parse_stream_params(&raw, &http).map_err(warp::reject::custom)
        })
}

/// The filter of `GET /v1/schemas?source=`.
pub fn schemas_params(
    http: HttpSettings,
) -> impl Filter<Extract = (SchemasParams,), Error = Rejection> + Clone {
    warp::path!("v1" / "schemas")
        .and(warp::get())
        .and(raw_query())
        .and_then(move |raw: String| async move {
            parse_schemas_params(&raw, &http).map_err(warp::reject::custom)
        })
}

/// The filter of `GET /v1/schemas/<id>`.
pub fn schema_id_param(
    http: HttpSettings,
) -> impl Filter<Extract = (SchemaId,), Error = Rejection> + Clone {
    warp::path!("v1" / "schemas" / String)
        .and(warp::get())
        .and(no_params(http.max_query_bytes))
        .and_then(|segment: String| async move {
            parse_schema_id(&segment).map_err(warp::reject::custom)
        })
}

/// Every route of the relay, with errors mapped to responses.
pub fn routes(
    service: Arc<RelayService>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let http = *service.http();
    let page = crate::status_page::route(service.clone());
    let svc = warp::any().map(move || service.clone());
    let sources = warp::path!("v1" / "sources")
        .and(warp::get())
        .and(no_params(http.max_query_bytes))
        .and(svc.clone())
        .map(|svc: Arc<RelayService>| respond(handle_sources(&svc)));
    let schemas = schemas_params(http)
        .and(svc.clone())
        .map(|p: SchemasParams, svc: Arc<RelayService>| respond(handle_schemas(&svc, &p)));
    let schema = schema_id_param(http)
        .and(svc.clone())
        .map(|id: SchemaId, svc: Arc<RelayService>| respond(handle_schema(&svc, id)));
    let stream =
        stream_params(http).and(svc.clone()).then(
            |p: StreamParams, svc: Arc<RelayService>| async move {
                respond(handle_stream(svc, p).await)
            },
        );
    let status = warp::path!("v1" / "status")
        .and(warp::get())
        .and(no_params(http.max_query_bytes))
        .and(svc.clone())
        .map(|svc: Arc<RelayService>| respond(handle_status(&svc)));
    let health = warp::path!("health")
        .and(warp::get())
        .and(no_params(http.max_query_bytes))
        .and(svc.clone())
        .map(|svc: Arc<RelayService>| respond(handle_health(&svc)));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(no_params(http.max_query_bytes))
        .and(svc)
        .map(|svc: Arc<RelayService>| respond(handle_metrics(&svc)));
    sources
        .or(schemas)
        .unify()
        .or(schema)
        .unify()
        .or(stream)
        .unify()
        .or(status)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
        .or(page)
        .unify()
        .recover(recover)
        .unify()
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.to_response())
}

async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else {
        ApiError::bad("request", format!("{rejection:?}"))
    };
    Ok(error.to_response())
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(value.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn handle_sources(svc: &RelayService) -> Result<Response, ApiError> {
    let list: Vec<Value> = svc
        .sources()
        .iter()
        .flat_map(|s| {
            s.tables.iter().map(move |t| {
                json!({
                    "id": t.id.get(),
                    "name": t.name,
                    "table": format!("{}.{}", t.database, t.table),
                    "buffer": s.name,
                })
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "sources": list })))
}

fn resolve(svc: &RelayService, source: &SourceRef) -> Result<SourceId, String> {
    match source {
        SourceRef::Id(id) => svc
            .source_of(*id)
            .map(|_| *id)
            .ok_or_else(|| id.to_string()),
        SourceRef::Name(name) => svc.logical_source(name).ok_or_else(|| format!("{name:?}")),
    }
}

fn schema_json(svc: &RelayService, schema: &RegisteredSchema) -> Value {
    let avro: Value = serde_json::from_str(&schema.avro_json).unwrap_or(Value::Null);
    json!({
        "id": format!("{:016x}", schema.id.get()),
        "version": schema.version,
        "source": svc.source_of_table(&schema.table.database, &schema.table.table).map(|s| s.get()),
        "table": format!("{}.{}", schema.table.database, schema.table.table),
        "avro": avro,
        "table_schema": &*schema.table,
    })
}

fn handle_schemas(svc: &RelayService, p: &SchemasParams) -> Result<Response, ApiError> {
    let id = resolve(svc, &p.source).map_err(ApiError::UnknownSource)?;
    let table = svc
        .table_of(id)
        .ok_or_else(|| ApiError::UnknownSource(id.to_string()))?;
    let schemas: Vec<Value> = svc
        .schemas()
        .versions(&table.database, &table.table)
        .iter()
        .map(|s| schema_json(svc, s))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "source": id.get(), "schemas": schemas }),
    ))
}

fn handle_schema(svc: &RelayService, id: SchemaId) -> Result<Response, ApiError> {
    let schema = svc
        .schemas()
        .get(id)
        .ok_or_else(|| ApiError::SchemaNotFound(format!("{:016x}", id.get())))?;
    Ok(json_response(StatusCode::OK, &schema_json(svc, &schema)))
}

fn pick_buffer<'a>(svc: &'a RelayService, p: &StreamParams) -> Result<&'a SourceHandle, ApiError> {
    let mut buffer: Option<&SourceHandle> = None;
    for &id in p.filter.sources().into_iter().flatten() {
        let holder = svc.source_of(id).ok_or_else(|| {
            ApiError::bad(
                "sources",
                format!("unknown source {id}; GET /v1/sources lists the sources of this relay"),
            )
        })?;
        if let Some(b) = buffer.filter(|b| b.name != holder.name) {
            return Err(ApiError::bad(
                "sources",
                format!(
                    "the listed sources are in different buffers ({} and {}); a stream reads one buffer, so request them separately",
                    b.name, holder.name
                ),
            ));
        }
        buffer = Some(holder);
    }
    if let Some(name) = &p.buffer {
        let named = svc.source_named(name).ok_or_else(|| {
            ApiError::bad(
                "buffer",
                format!("unknown buffer {name:?}; GET /v1/sources lists the buffers"),
            )
        })?;
        if let Some(b) = buffer.filter(|b| b.name != named.name) {
            return Err(ApiError::bad(
                "buffer",
                format!("the listed sources are in buffer {}, not {name}", b.name),
            ));
        }
        buffer = Some(named);
    }
    match buffer {
        Some(b) => Ok(b),
        None => match svc.sources() {
            [only] => Ok(only),
            _ => Err(ApiError::bad(
                "sources",
                "this relay has several buffers; list sources or name a buffer",
            )),
        },
    }
}

async fn handle_stream(svc: Arc<RelayService>, p: StreamParams) -> Result<Response, ApiError> {
    let source = pick_buffer(&svc, &p)?;
    let _permit = svc.try_stream_permit().ok_or(ApiError::Overloaded {
        max: svc.http().max_concurrent_streams,
    })?;
    m::stream_request(&source.name, p.format == StreamFormat::Json);
    let filter = KeyFilter::new(&p.filter);
    let deadline = Instant::now() + p.wait;
    let mut from = p.checkpoint.clone();
    let mut out = Vec::with_capacity(p.max_bytes.min(64 << 10));
    let to_api = |e: ReadError| match e {
        ReadError::ScnNotFound {
            requested,
            min_scn,
            max_scn,
            prev_scn,
        } => {
            m::scn_not_found(&source.name);
            ApiError::ScnNotFound {
                buffer: source.name.clone(),
                requested: requested.get(),
                min_scn: min_scn.map(|s| s.get()),
                max_scn: max_scn.map(|s| s.get()),
                prev_scn: prev_scn.map(|s| s.get()),
            }
        }
        e @ ReadError::Overtaken { .. } => ApiError::Unavailable(e.to_string()),
        e => ApiError::Internal(e.to_string()),
    };
    // Whether the checkpoint may be served is decided by each read itself, against the buffer's origin
    // at that moment (the last evicted window, or where ingest positioned the source), never by a check
    // made before the long poll: the writer may anchor or evict while this request waits.
    //
    // With `empty_windows=coalesce`, a read that found windows but nothing of them for this request (only
    // the marker of their last one) does not end a long poll: the request waits on from their end, and
    // answers that marker (`covered`) only if the wait ends with nothing newer. A partitioned client
    // that gets one event in many windows is then answered once per event, not once per window.
    let coalesce = p.empty_windows == EmptyWindows::Coalesce;
    let mut covered: Option<(Vec<u8>, ReadOutcome)> = None;
    let outcome = loop {
        out.clear();
        // The side index decides the filter without touching dropped frames (a plain scan without a
        // filter, or for RANGE filters, which need the keys).
        let read =
            source
                .buffer
                .read_indexed(&from, p.max_bytes, &filter, p.empty_windows, &mut out);
        let timed_out = Instant::now() >= deadline;
        let waited_on = match read {
            Ok(o) => {
                let markers_only =
                    o.events_copied == 0 && o.windows_completed > 0 && !o.more_available;
                if coalesce && markers_only && !timed_out {
                    from = o.checkpoint.clone();
                    covered = Some((std::mem::take(&mut out), o.clone()));
                    Some(o)
                } else if o.events_copied + o.windows_completed > 0 || o.more_available || timed_out
                {
                    break o;
                } else {
                    from = o.checkpoint.clone();
                    Some(o)
                }
            }
            // Ingest has not positioned the source yet: wait for it until the deadline.
            Err(ReadError::NotAnchored) if timed_out => return Err(not_positioned(source)),
            Err(ReadError::NotAnchored) => None,
            Err(e) => return Err(to_api(e)),
        };
        let _poll = m::LongPoll::start(&source.name);
        let woken = tokio::select! {
            outcome = source.buffer.wait_for_data_after(&from, deadline) => outcome,
            () = svc.stopping().cancelled() => WaitOutcome::TimedOut,
        };
        if woken == WaitOutcome::TimedOut {
            match waited_on {
                Some(outcome) => break outcome,
                // One more read decides: served, refused, or still not positioned (503).
                None if svc.stopping().is_cancelled() => return Err(not_positioned(source)),
                None => {}
            }
        }
    };
    let outcome = match covered {
        // Nothing newer than the covered windows (the wait ended first): answer their marker.
        Some((marker, covering)) if out.is_empty() => {
            out = marker;
            covering
        }
        _ => outcome,
    };
    let frames = outcome.events_copied + outcome.windows_completed;
    m::stream_out(&source.name, frames, outcome.windows_completed, out.len());
    let checkpoint = outcome.checkpoint.to_json();
    let checkpoint_header = HeaderValue::from_str(&checkpoint)
        .map_err(|e| ApiError::Internal(format!("checkpoint is not a valid header value: {e}")))?;
    let (body, content_type) = match p.format {
        StreamFormat::Binary => (Bytes::from(out), FRAMES_CONTENT_TYPE),
        StreamFormat::Json => {
            // Decoding up to max_bytes of Avro payloads takes long: off the async workers.
            let (svc, checkpoint, more) = (
                svc.clone(),
                outcome.checkpoint.clone(),
                outcome.more_available,
            );
            let text =
                tokio::task::spawn_blocking(move || render_json(&svc, &out, &checkpoint, more))
                    .await
                    .map_err(|e| ApiError::Internal(format!("JSON rendering failed: {e}")))??;
            (Bytes::from(text), JSON_LINES_CONTENT_TYPE)
        }
    };
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CHECKPOINT_HEADER, checkpoint_header);
    headers.insert(
        MORE_HEADER,
        HeaderValue::from_static(if outcome.more_available {
            "true"
        } else {
            "false"
        }),
    );
    headers.insert(EVENTS_HEADER, HeaderValue::from(frames));
    Ok(response)
}

/// The answer while a buffer awaits its origin: its source was never positioned since the relay
/// started (the source is down, or ingest failed before its first connection).
fn not_positioned(source: &SourceHandle) -> ApiError {
    let ingest = source.status.snapshot();
    let why = ingest
        .last_error
        .map_or_else(String::new, |e| format!(": {e}"));
    ApiError::NotPositioned(format!(
        "buffer {} cannot serve any checkpoint yet: the relay has not positioned its source since it \
         started (ingest {}{why}); retry shortly or use another relay",
        source.name,
        serde_json::to_value(ingest.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    ))
}

/// Answers of at least this many bytes of frames are rendered as JSON in two halves on two threads
/// (rendering costs about 1 µs per event; a thread costs tens of µs to start).
pub const SPLIT_JSON_RENDER_BYTES: usize = 64 << 10;

/// The JSON-lines body: one line per frame of `frames`, then the checkpoint line. Each event is
/// `core::json`'s header fields plus `payload`, the record decoded with its writer schema from the
/// registry (or `payload_base64` when the schema is unknown or the payload does not decode, with
/// `decode_error` saying why); see `databus_serde_formats::json_text`.
///
/// From [`SPLIT_JSON_RENDER_BYTES`] of frames on, the frames are cut in two at the first frame
/// boundary at or past their middle; a second thread renders the second half while this one renders the first,
/// and the second half's lines are appended after the first's: every frame is rendered once, in order.
fn render_json(
    svc: &RelayService,
    frames: &[u8],
    checkpoint: &Checkpoint,
    more: bool,
) -> Result<Vec<u8>, ApiError> {
    let split = if svc.splits_json_rendering() {
        split_point(frames)
    } else {
        None
    };
    let mut text = match split {
        Some(mid) => {
            let (first, second) = frames.split_at(mid);
            std::thread::scope(|scope| {
                let other = std::thread::Builder::new()
                    .name("json-render".into())
                    .spawn_scoped(scope, || render_lines(svc, second, 0));
                // The first half's buffer holds the whole answer: the second half is copied in once.
                let mut text = render_lines(svc, first, frames.len() * 2)?;
                let rest = match other {
                    Ok(handle) => handle.join().map_err(|_| {
                        ApiError::Internal("JSON rendering of the second half panicked".into())
                    })??,
                    // No thread to be had: render the second half here.
                    Err(_) => render_lines(svc, second, 0)?,
                };
                text.extend_from_slice(&rest);
                Ok::<_, ApiError>(text)
            })?
        }
        None => render_lines(svc, frames, frames.len() * 2)?,
    };
    let _ = serde_json::to_writer(
        &mut text,
        &json!({ "checkpoint": checkpoint, "more": more }),
    );
    text.push(b'\n');
    Ok(text)
}

/// Where [`render_json`] cuts `frames` in two (the first frame boundary at or past the middle), or
/// `None` to render them on one thread: fewer than [`SPLIT_JSON_RENDER_BYTES`], a single frame, or a
/// header that does not parse (rendering reports it).
fn split_point(frames: &[u8]) -> Option<usize> {
    if frames.len() < SPLIT_JSON_RENDER_BYTES {
        return None;
    }
    let half = frames.len() / 2;
    let (mut at, mut before) = (0, 0);
    while at < half {
        // The buffer built and verified these frames; rendering checks each one fully.
        let len = FrameHeader::parse_verified_earlier(&frames[at..])
            .ok()?
            .frame_len();
        before = at;
        at += len;
    }
    if at < frames.len() {
        Some(at)
    } else {
        // The last frame spans the middle: cut before it.
        (before > 0).then_some(before)
    }
}

/// One JSON line per frame of `frames`, in a buffer of at least `capacity` bytes.
fn render_lines(svc: &RelayService, frames: &[u8], capacity: usize) -> Result<Vec<u8>, ApiError> {
    let mut text = Vec::with_capacity(capacity.max(frames.len() * 2));
    let values = svc.uses_value_json_renderer();
    // Consecutive events mostly share a schema: look its plan up once per run of them.
    let mut plan: Option<(SchemaId, Option<Arc<JsonPlan>>)> = None;
    let mut rest = frames;
    while !rest.is_empty() {
        // The buffer built these frames and checked its copy of them: no checksums again.
        let (view, used) = EventView::parse_verified_earlier(rest)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        rest = &rest[used..];
        let id = view.schema();
        if values {
            let _ = serde_json::to_writer(&mut text, &event_json(svc, &view));
        } else {
            if plan.as_ref().is_none_or(|(cached, _)| *cached != id) {
                plan = Some((id, svc.json_plan(id)));
            }
            let writer = plan
                .as_ref()
                .and_then(|(_, p)| p.as_deref())
                .ok_or_else(|| unknown_schema(id));
            write_event_json(&view, writer, &mut text);
        }
        text.push(b'\n');
    }
    Ok(text)
}

fn unknown_schema(id: SchemaId) -> String {
    format!("schema {:016x} is not registered", id.get())
}

/// One event as JSON through apache-avro values (the renderer before `json_text`; kept for
/// [`RelayService::use_value_json_renderer`]).
fn event_json(svc: &RelayService, view: &EventView<'_>) -> Value {
    let schema = svc.schemas().get(view.schema());
    let writer = schema
        .as_ref()
        .map(|s| s.avro.as_ref())
        .ok_or_else(|| unknown_schema(view.schema()));
    databus_serde_formats::decode::event_json(view, writer)
}

fn handle_status(svc: &RelayService) -> Result<Response, ApiError> {
    let now = now_ns();
    let buffers: Vec<Value> = svc
        .sources()
        .iter()
        .map(|s| {
            let stats = s.buffer.stats();
            let ingest = s.status.snapshot();
            let lag_ms = ingest
                .last_timestamp_ns
                .map(|ts| now.saturating_sub(ts) / 1_000_000);
            json!({
                "name": s.name,
                "min_scn": stats.min_scn,
                "max_scn": stats.max_scn,
                "prev_scn": stats.prev_scn,
                "anchored": stats.anchored,
                                "bytes": stats.bytes_held,
                "events": stats.events_held,
                "windows": stats.windows_held,
                "waiting_readers": s.buffer.waiting_readers(),
                "capacity_bytes": stats.capacity_bytes,
                "ingest_lag_ms": lag_ms,
                "ingest": ingest,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "buffers": buffers }),
    ))
}

/// `GET /health` (docs/operations.md, "Health"): `200 ok`; `200 degraded` while a source reconnects
/// (it recovers by itself); `503 unhealthy` once a source's ingest failed (an operator must fix the
/// cause). The same body as the bootstrap server's ([`Health`]).
fn handle_health(svc: &RelayService) -> Result<Response, ApiError> {
    let problems = svc
        .sources()
        .iter()
        .filter_map(|s| {
            let ingest = s.status.snapshot();
            let why = ingest.last_error.unwrap_or_default();
            let (state, message, recovering) = match ingest.state {
                IngestState::Failed => (
                    "failed",
                    format!(
                        "ingest failed for {}: {why}; fix the cause and restart the relay (details in GET /v1/status)",
                        s.name
                    ),
                    false,
                ),
                IngestState::Reconnecting => (
                    "reconnecting",
                    format!("ingest of {} is reconnecting after: {why}", s.name),
                    true,
                ),
                IngestState::Starting | IngestState::Streaming | IngestState::Stopped => {
                    return None;
                }
            };
            let mut details = serde_json::Map::new();
            details.insert("source".into(), s.name.clone().into());
            Some((
                HealthProblem {
                    component: format!("source {}", s.name),
                    state: state.into(),
                    message,
                    details,
                },
                recovering,
            ))
        })
        .collect();
    let health = Health::of(problems);
    let status = StatusCode::from_u16(health.http_status())
        .map_err(|e| ApiError::Internal(format!("health status: {e}")))?;
    let mut response = json_response(status, &health.to_json());
    if health.status == HealthStatus::Unhealthy {
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(HEALTH_ERROR));
    }
    Ok(response)
}

fn handle_metrics(svc: &RelayService) -> Result<Response, ApiError> {
    let handle = svc.metrics().ok_or_else(|| {
        ApiError::Unavailable("no metrics exporter is installed in this process".into())
    })?;
    for source in svc.sources() {
        let stats = source.buffer.stats();
        m::buffer_gauges(
            &source.name,
            &stats,
            source.status.snapshot().last_timestamp_ns,
        );
    }
    let mut response = Response::new(handle.render().into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::KeyRef;

    fn http() -> HttpSettings {
        HttpSettings::defaults::<crate::config::RelayHttp>()
    }

    fn frames_of(payload_lens: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let (mut frames, mut starts) = (Vec::new(), Vec::new());
        for (i, &len) in payload_lens.iter().enumerate() {
            starts.push(frames.len());
            let payload = vec![7u8; len];
            let key = i as i64;
            databus_core::EventBuilder::new(
                databus_core::Scn::new(1),
                databus_core::Opcode::Upsert,
            )
            .key(KeyRef::Int(key))
            .payload(&payload)
            .write_to_vec(&mut frames);
        }
        (frames, starts)
    }

    #[test]
    fn json_answers_split_at_the_frame_boundary_nearest_past_the_middle() {
        // Under 64 KiB: one thread.
        let (frames, _) = frames_of(&[100; 300]);
        assert!(frames.len() < SPLIT_JSON_RENDER_BYTES);
        assert_eq!(split_point(&frames), None);
        // Even frames: the first boundary at or past the middle.
        let (frames, starts) = frames_of(&[1000; 200]);
        let mid = split_point(&frames).unwrap();
        assert!(starts.contains(&mid), "{mid} is a frame boundary");
        assert!(mid >= frames.len() / 2 && mid - frames.len() / 2 < 1100);
        // Uneven frames.
        let lens: Vec<usize> = (0..500).map(|i| (i * 37) % 900).collect();
        let (frames, starts) = frames_of(&lens);
        let mid = split_point(&frames).unwrap();
        assert!(starts.contains(&mid) && mid >= frames.len() / 2);
        // One frame spanning the middle and reaching the end: cut before it.
        let (frames, starts) = frames_of(&[10, 10, 200_000]);
        assert_eq!(split_point(&frames), Some(starts[2]));
        // One huge first frame: cut after it.
        let (frames, starts) = frames_of(&[200_000, 10, 10]);
        assert_eq!(split_point(&frames), Some(starts[1]));
        // A single frame: one thread.
        let (frames, _) = frames_of(&[200_000]);
        assert_eq!(split_point(&frames), None);
        // A damaged header: one thread (rendering reports it).
        let (mut frames, _) = frames_of(&[1000; 200]);
        frames[0] = b'X';
        assert_eq!(split_point(&frames), None);
    }

    fn bad(raw: &str) -> (String, String) {
        match parse_stream_params(raw, &http()).unwrap_err() {
            ApiError::BadParameter { parameter, message } => (parameter, message),
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn stream_params_defaults_and_values() {
        let p = parse_stream_params("", &http()).unwrap();
        assert_eq!(p.checkpoint, Checkpoint::beginning());
        assert_eq!(p.max_bytes, http().default_response_bytes);
        assert_eq!(p.wait, Duration::ZERO);
        assert_eq!(p.format, StreamFormat::Binary);
        assert_eq!(p.empty_windows, EmptyWindows::Every);
        let p = parse_stream_params("empty_windows=coalesce", &http()).unwrap();
        assert_eq!(p.empty_windows, EmptyWindows::Coalesce);
        let (param, message) = bad("empty_windows=some");
        assert_eq!(param, "empty_windows");
        assert!(message.contains("use every or coalesce"), "{message}");
        let cp = Checkpoint::after(databus_core::Scn::new(42)).to_json();
        let raw = format!(
            "checkpoint={}&sources=2,1&partition=mod:8:0,2-3&max_bytes=4096&wait_ms=250&format=json&buffer=shop",
            form_urlencoded::byte_serialize(cp.as_bytes()).collect::<String>()
        );
        let p = parse_stream_params(&raw, &http()).unwrap();
        assert_eq!(p.checkpoint.window_scn.get(), 42);
        assert_eq!(
            p.filter,
            FilterSpec::from_query("sources=1-2&partition=mod:8:0,2-3").unwrap()
        );
        assert_eq!(p.max_bytes, 4096);
        assert_eq!(p.wait, Duration::from_millis(250));
        assert_eq!(p.format, StreamFormat::Json);
        assert_eq!(p.buffer.as_deref(), Some("shop"));
    }

    #[test]
    fn bad_stream_params_name_the_parameter() {
        for (raw, param, needle) in [
            ("max_bytes=0", "max_bytes", "out of range"),
            ("max_bytes=999999999999", "max_bytes", "out of range"),
            ("max_bytes=-1", "max_bytes", "not a non-negative integer"),
            ("max_bytes=1e3", "max_bytes", "not a non-negative integer"),
            ("wait_ms=30001", "wait_ms", "use 0..=30000"),
            ("format=xml", "format", "use binary or json"),
            ("checkpoint=%7B", "checkpoint", "not valid JSON"),
            (
                "checkpoint=%7B%22version%22%3A9%7D",
                "checkpoint",
                "unsupported checkpoint version 9",
            ),
            ("sources=1,,2", "sources", ""),
            ("sources=70000", "sources", ""),
            ("partition=mod:0:1", "partition", "num_buckets 0"),
            ("partition.3=mod:4:9", "partition.3", ""),
            ("max_bytes=1&max_bytes=2", "max_bytes", "more than once"),
            ("bogus=1", "bogus", "unknown parameter"),
        ] {
            let (p, m) = bad(raw);
            assert_eq!(p, param, "{raw}: {m}");
            assert!(m.contains(needle), "{raw}: {m}");
        }
        let cp = r#"{"version":1,"mode":"bootstrap_snapshot","window_scn":1,"window_offset":null,"prev_scn":1,"bootstrap":{}}"#;
        let raw = format!(
            "checkpoint={}",
            form_urlencoded::byte_serialize(cp.as_bytes()).collect::<String>()
        );
        let (p, m) = bad(&raw);
        assert_eq!(p, "checkpoint");
        assert!(m.contains("online checkpoints only"), "{m}");
    }

    #[test]
    fn long_query_is_refused() {
        let raw = format!("sources={}", "1,".repeat(5000));
        assert!(matches!(
            parse_stream_params(&raw, &http()),
            Err(ApiError::QueryTooLong { .. })
        ));
    }

    #[test]
    fn schema_params() {
        let p = parse_schemas_params("source=orders", &http()).unwrap();
        assert_eq!(p.source, SourceRef::Name("orders".into()));
        assert!(matches!(
            parse_schemas_params("", &http()),
            Err(ApiError::BadParameter { parameter, .. }) if parameter == "source"
        ));
        assert_eq!(
            parse_schema_id("00000000000000ff").unwrap(),
            SchemaId::new(255)
        );
        assert!(parse_schema_id("xyz").is_err());
        assert!(parse_schema_id("00000000000000000").is_err());
    }

    #[tokio::test]
    async fn filters_parse_through_warp() {
        let f = stream_params(http());
        let p = warp::test::request()
            .path("/v1/stream?max_bytes=100&wait_ms=5")
            .filter(&f)
            .await
            .unwrap();
        assert_eq!(p.max_bytes, 100);
        assert_eq!(p.wait, Duration::from_millis(5));
        let rejection = warp::test::request()
            .path("/v1/stream?max_bytes=abc")
            .filter(&f)
            .await
            .unwrap_err();
        assert!(matches!(
            rejection.find::<ApiError>(),
            Some(ApiError::BadParameter { parameter, .. }) if parameter == "max_bytes"
        ));
        let rejection = warp::test::request()
            .method("POST")
            .path("/v1/stream")
            .filter(&f)
            .await
            .unwrap_err();
        assert!(rejection.find::<ApiError>().is_none());
        let id = warp::test::request()
            .path("/v1/schemas/00000000000000ff")
            .filter(&schema_id_param(http()))
            .await
            .unwrap();
        assert_eq!(id, SchemaId::new(255));
    }
}
