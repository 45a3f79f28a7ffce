//! The warp routes of the bootstrap server (`docs/bootstrap-protocol.md`): one pure parameter filter
//! per endpoint, handlers on an `Arc<BootstrapService>`, one place mapping errors to responses.

use databus_http::protocol;
use databus_http::protocol::{HEALTH_ERROR, Health, HealthProblem, HealthStatus};
use std::convert::Infallible;
use std::sync::Arc;

use databus_core::Checkpoint;
use databus_filters::FilterSpec;
use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::serve::{BootstrapService, ServeError, StreamReply};

/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The parameters of `GET /v1/bootstrap/stream`, parsed and bounded.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// Where the consumer is.
    pub checkpoint: Checkpoint,
    /// The consumer's filter.
    pub filter: FilterSpec,
    /// The response budget (`None`: the default).
    pub max_bytes: Option<usize>,
    /// The body format.
    pub format: StreamFormat,
}

/// The body format of a stream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Frames (`application/vnd.databus.frames`), the default.
    Binary,
    /// JSON lines (`application/x-ndjson`), as the relay renders them ([`crate::json`]).
    Json,
}

impl StreamFormat {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFormat::Binary => "binary",
            StreamFormat::Json => "json",
        }
    }
}

/// An error answered to a request.
#[derive(Debug)]
pub struct ApiError(pub ServeError);

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match &self.0 {
            ServeError::BadParameter { .. } => "bad_parameter",
            ServeError::UnknownSource(_) => "unknown_source",
            ServeError::SnapshotRequired { .. } => "snapshot_required",
            ServeError::LogTrimmed { .. } => "log_trimmed",
            ServeError::GenerationChanged { .. } => "generation_changed",
            ServeError::SchemaNotFound(_) => "schema_not_found",
            ServeError::NotYet { .. } => "not_yet_at_scn",
            ServeError::Overloaded(_) => "overloaded",
            ServeError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match &self.0 {
            ServeError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ServeError::UnknownSource(_) | ServeError::SchemaNotFound(_) => StatusCode::NOT_FOUND,
            ServeError::SnapshotRequired { .. }
            | ServeError::LogTrimmed { .. }
            | ServeError::GenerationChanged { .. } => StatusCode::GONE,
            ServeError::NotYet { .. } | ServeError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response: status, `X-Databus-Error`, JSON body with the details.
    pub fn to_response(&self) -> Response {
        crate::metrics::http_error(self.code());
        let mut body = json!({"error": self.code(), "message": self.0.to_string()});
        match &self.0 {
            ServeError::BadParameter { parameter, .. } => body["parameter"] = json!(parameter),
            ServeError::UnknownSource(s) => body["source"] = json!(s),
            ServeError::SnapshotRequired { requested, base } => {
                body["requested_scn"] = json!(requested);
                body["snapshot_base_scn"] = json!(base);
            }
            ServeError::LogTrimmed { requested, floor } => {
                body["requested_scn"] = json!(requested);
                body["log_floor_scn"] = json!(floor);
            }
            ServeError::GenerationChanged { had, now } => {
                body["checkpoint_generation"] = json!(had);
                body["generation"] = json!(now);
            }
            ServeError::NotYet {
                requested,
                log_last,
                applied,
            } => {
                body["requested_scn"] = json!(requested);
                body["log_last_scn"] = json!(log_last);
                body["applied_scn"] = json!(applied);
            }
            ServeError::Internal(_) | ServeError::SchemaNotFound(_) | ServeError::Overloaded(_) => {
            }
        }
        let mut resp =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        let h = resp.headers_mut();
        h.insert(
            protocol::ERROR_HEADER,
            HeaderValue::from_static(self.code()),
        );
        if matches!(
            self.0,
            ServeError::NotYet { .. } | ServeError::Overloaded(_)
        ) {
            h.insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError(ServeError::BadParameter {
        parameter: parameter.into(),
        message: message.into(),
    })
}

/// Parses the stream parameters out of a raw query string.
pub fn parse_stream_query(
    query: &str,
    max_response_bytes: usize,
) -> Result<StreamParams, ApiError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(bad(
            "query",
            format!("query of {} bytes exceeds {MAX_QUERY_BYTES}", query.len()),
        ));
    }
    let mut checkpoint = None;
    let mut max_bytes = None;
    let mut format = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "format" => {
                if format.is_some() {
                    return Err(bad("format", "given twice"));
                }
                format = Some(match &*value {
                    "binary" => StreamFormat::Binary,
                    "json" => StreamFormat::Json,
                    other => {
                        return Err(bad(
                            "format",
                            format!("{other:?} is not a format; use binary or json"),
                        ));
                    }
                });
            }
            "checkpoint" => {
                if checkpoint.is_some() {
                    return Err(bad("checkpoint", "given twice"));
                }
                checkpoint = Some(
                    Checkpoint::from_json(&value).map_err(|e| bad("checkpoint", e.to_string()))?,
                );
            }
            "max_bytes" => {
                let n: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=max_response_bytes).contains(n))
                    .ok_or_else(|| {
                        bad(
                            "max_bytes",
                            format!("{value:?} is not in 1..={max_response_bytes}"),
                        )
                    })?;
                max_bytes = Some(n);
            }
            n if n == "sources" || n == "partition" || n.starts_with("partition.") => {}
            other => {
                return Err(bad(
                    other,
                    "unknown parameter; see docs/bootstrap-protocol.md",
                ));
            }
        }
    }
    let filter = FilterSpec::from_query(query).map_err(|e| bad("filter", e.to_string()))?;
    let checkpoint =
        checkpoint.ok_or_else(|| bad("checkpoint", "missing; send the consumer's checkpoint"))?;
    Ok(StreamParams {
        checkpoint,
        filter,
        max_bytes,
        format: format.unwrap_or(StreamFormat::Binary),
    })
}

fn stream_response(r: StreamReply, json: Option<String>) -> Response {
    let bytes = json.as_ref().map_or(r.body.len(), String::len);
    let format = if json.is_some() {
        StreamFormat::Json
    } else {
        StreamFormat::Binary
    };
    crate::metrics::stream_out(r.path.as_str(), format.as_str(), u64::from(r.events), bytes);
    let (body, content_type) = match json {
        Some(text) => (Bytes::from(text), protocol::JSON_LINES_CONTENT_TYPE),
        None => (Bytes::from(r.body), protocol::FRAMES_CONTENT_TYPE),
    };
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("content-type", content_type.into());
    put(protocol::CHECKPOINT_HEADER, r.checkpoint.to_json());
    put(protocol::MORE_HEADER, r.more.to_string());
    put(protocol::EVENTS_HEADER, r.events.to_string());
    put(protocol::BOOTSTRAP_PHASE_HEADER, r.phase.as_str().into());
    put(protocol::BOOTSTRAP_PATH_HEADER, r.path.as_str().into());
    if let Some(s) = r.start_scn {
        put(protocol::BOOTSTRAP_START_SCN_HEADER, s.to_string());
    }
    if let Some(s) = r.target_scn {
        put("x-databus-bootstrap-target-scn", s.to_string());
    }
    resp
}

fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

fn no_params() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    raw_query()
        .and_then(|q: String| async move {
            if q.is_empty() {
                Ok(())
            } else {
                Err(warp::reject::custom(bad(
                    "query",
                    "this endpoint takes no parameters",
                )))
            }
        })
        .untuple_one()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServeError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError),
        Err(e) => Err(ApiError(ServeError::Internal(
            crate::BootstrapError::Storage(format!("request task failed: {e}")),
        ))),
    }
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| e.to_response())
}

/// Every route of the bootstrap server, with errors mapped to responses.
pub fn routes(
    service: Arc<BootstrapService>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let page = crate::status_page::route(service.clone());
    let svc = warp::any().map(move || service.clone());
    let stream = warp::path!("v1" / "bootstrap" / "stream")
        .and(warp::get())
        .and(raw_query())
        .and(svc.clone())
        .then(|q: String, svc: Arc<BootstrapService>| async move {
            let settings = *svc.settings();
            if q.len() > settings.max_query_bytes {
                return bad(
                    "query",
                    format!(
                        "a query string of {} bytes exceeds the limit of {} bytes; shorten it or \
                         raise http.max_query_bytes",
                        q.len(),
                        settings.max_query_bytes
                    ),
                )
                .to_response();
            }
            let params = match parse_stream_query(&q, settings.max_response_bytes) {
                Ok(p) => p,
                Err(e) => return e.to_response(),
            };
            let max = params.max_bytes.unwrap_or(settings.default_response_bytes);
            let format = params.format;
            // Each request holds a store reader (and its page cache) while it runs: bounded.
            let Some(_permit) = svc.try_stream_permit() else {
                return ApiError(ServeError::Overloaded(format!(
                    "{} bootstrap requests are in progress, the server's limit (http.max_concurrent_streams)",
                    settings.max_concurrent_streams
                )))
                .to_response();
            };
            let reply = {
                let svc = svc.clone();
                blocking(move || svc.stream(params.checkpoint, &params.filter, max)).await
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => return e.to_response(),
            };
            match format {
                StreamFormat::Binary => stream_response(reply, None),
                StreamFormat::Json => {
                    svc.schemas().resolve(&svc.store(), &reply.body).await;
                    // Decoding up to max_bytes of Avro payloads takes long: off the async workers.
                    respond(
                        blocking(move || {
                            let text = crate::json::render(svc.schemas(), &reply)?;
                            Ok(stream_response(reply, Some(text)))
                        })
                        .await,
                    )
                }
            }
        });
    let sources = warp::path!("v1" / "sources")
        .and(warp::get())
        .and(no_params())
        .and(svc.clone())
        .then(|svc: Arc<BootstrapService>| async move {
            respond(
                blocking(move || Ok(svc.store().sources()?))
                    .await
                    .map(|s| warp::reply::json(&json!({"sources": s})).into_response()),
            )
        });
    let schema = warp::path!("v1" / "schemas" / String)
        .and(warp::get())
        .and(no_params())
        .and(svc.clone())
        .then(|segment: String, svc: Arc<BootstrapService>| async move {
            let id = match u64::from_str_radix(&segment, 16) {
                Ok(v) if segment.len() == 16 => databus_core::SchemaId::new(v),
                _ => {
                    return bad("schema", format!("{segment:?} is not 16 hex digits"))
                        .to_response();
                }
            };
            respond(
                blocking(move || {
                    svc.store()
                        .schema(id)?
                        .ok_or(ServeError::SchemaNotFound(segment))
                })
                .await
                .map(|s| {
                    let avro: serde_json::Value =
                        serde_json::from_str(&s.avro_json).unwrap_or(serde_json::Value::Null);
                    warp::reply::json(&json!({
                        "id": format!("{:016x}", s.id.get()),
                        "source": s.source,
                        "table": s.table,
                        "avro": avro,
                    }))
                    .into_response()
                }),
            )
        });
    let svc_metrics = svc.clone();
    let svc_health = svc.clone();
    let status = warp::path!("v1" / "status")
        .and(warp::get())
        .and(no_params())
        .and(svc)
        .then(|svc: Arc<BootstrapService>| async move {
            respond(
                blocking(move || {
                    // One generation's figures, even across a switch.
                    let svc = svc.current()?;
                    let log = svc.store().log_status()?;
                    let snap = svc.store().snapshot_status()?;
                    let pins = svc.store().pins(crate::serve::now_ms())?;
                    let (roles, problems) = svc.health()?;
                    Ok(json!({
                        "generation": svc.generation()?,
                        "log_floor_scn": log.floor_scn, "log_first_scn": log.first_scn,
                        "log_last_scn": log.last_scn, "log_windows": log.windows,
                        "log_events": log.events, "log_bytes": log.bytes,
                        "applied_scn": snap.applied_scn, "snapshot_base_scn": snap.base_scn,
                        "snapshot_rows": snap.rows, "seeded": snap.seeded,
                        "pins": pins.len(), "pin_min_scn": pins.first().map(|p| p.0),
                        "health": health_json(&problems), "roles": roles,
                    }))
                })
                .await
                .map(|v| warp::reply::json(&v).into_response()),
            )
        });
    let health = warp::path!("health").and(warp::get()).and(svc_health).then(
        |svc: Arc<BootstrapService>| async move {
            respond(
                blocking(move || Ok(svc.health()?))
                    .await
                    .map(|(_, problems)| {
                        let health = health(&problems);
                        let status = StatusCode::from_u16(health.http_status())
                            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                        let mut response =
                            warp::reply::with_status(warp::reply::json(&health.to_json()), status)
                                .into_response();
                        if health.status == HealthStatus::Unhealthy {
                            response.headers_mut().insert(
                                protocol::ERROR_HEADER,
                                HeaderValue::from_static(HEALTH_ERROR),
                            );
                        }
                        response
                    }),
            )
        },
    );
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(svc_metrics)
        .then(|svc: Arc<BootstrapService>| metrics_response(svc.store()));
    // Boxed: the combined filter's futures stay small (a deep `or` chain of large handler futures
    // overflows a test thread's stack in debug builds).
    stream
        .boxed()
        .or(sources.boxed())
        .unify()
        .or(schema.boxed())
        .unify()
        .or(status.boxed())
        .unify()
        .or(health.boxed())
        .unify()
        .or(metrics.boxed())
        .unify()
        .or(page.boxed())
        .unify()
        .recover(recover)
        .unify()
}

/// What `GET /health` (and `health` in `/v1/status`) says: the relay's shape and meaning
/// ([`Health`]): `ok`, or `unhealthy` (`503`) with each problem (`component` and `role`: the role,
/// `state`, `message`). Every problem the roles report needs an operator (a role that stopped,
/// failed, is blocked, gone or behind for longer than `health.max_lag`), so none is `degraded`.
pub fn health(problems: &[crate::health::Problem]) -> Health {
    Health::of(
        problems
            .iter()
            .map(|p| {
                let mut details = serde_json::Map::new();
                details.insert("role".into(), p.role.name().into());
                let problem = HealthProblem {
                    component: p.role.name().to_owned(),
                    state: p.state.to_owned(),
                    message: p.message.clone(),
                    details,
                };
                (problem, false)
            })
            .collect(),
    )
}

fn health_json(problems: &[crate::health::Problem]) -> serde_json::Value {
    health(problems).to_json()
}

/// `GET /metrics`: the process's Prometheus text with the store gauges refreshed (`503` when no
/// recorder is installed in this process).
pub async fn metrics_response(store: Arc<dyn crate::store::BootstrapStore>) -> Response {
    let rendered = blocking(move || Ok(crate::metrics::render(store.as_ref())?)).await;
    match rendered {
        Ok(Some(text)) => {
            let mut resp = Response::new(text.into());
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        Ok(None) => {
            let mut resp = warp::reply::with_status(
                warp::reply::json(&json!({
                    "error": "unavailable",
                    "message": "no metrics recorder is installed in this process",
                })),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response();
            resp.headers_mut().insert(
                protocol::ERROR_HEADER,
                HeaderValue::from_static("unavailable"),
            );
            resp
        }
        Err(e) => e.to_response(),
    }
}

async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(e) = rejection.find::<ApiError>() {
        return Ok(e.to_response());
    }
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see docs/bootstrap-protocol.md",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the bootstrap API is GET only",
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            "malformed request",
        )
    };
    crate::metrics::http_error(code);
    let mut resp = warp::reply::with_status(
        warp::reply::json(&json!({"error": code, "message": message})),
        status,
    )
    .into_response();
    resp.headers_mut()
        .insert(protocol::ERROR_HEADER, HeaderValue::from_static(code));
    Ok(resp)
}

/// Serves the routes on `listener` (plain HTTP, no authentication) until `shutdown` is cancelled,
/// then drains requests in flight.
pub async fn serve(
    service: Arc<BootstrapService>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) {
    serve_with(service, listener, ServerSecurity::plain(), shutdown).await;
}

/// As [`serve`], with TLS and/or bearer-token authentication (`http.tls`, `http.auth`; see
/// [`databus_http::server`]).
pub async fn serve_with(
    service: Arc<BootstrapService>,
    listener: tokio::net::TcpListener,
    security: ServerSecurity,
    shutdown: tokio_util::sync::CancellationToken,
) {
    databus_http::server::serve(
        warp::service(routes(service)),
        listener,
        security.on_refused(|| crate::metrics::http_error("unauthorized")),
        async move { shutdown.cancelled_owned().await },
    )
    .await;
}

pub use databus_http::server::ServerSecurity;

#[cfg(test)]
mod tests {
    use databus_core::Scn;

    use super::*;
    use crate::serve::ServeSettings;
    use crate::store::MemoryStore;

    fn cp_query(extra: &str) -> String {
        let mut cp = Checkpoint::after(Scn::new(4));
        cp.start_bootstrap(Some(Scn::new(4)));
        let text: String = form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect();
        format!("checkpoint={text}{extra}")
    }

    #[test]
    fn stream_parameters_are_parsed_and_bounded() {
        let p = parse_stream_query(
            &cp_query("&max_bytes=100&sources=1-2&partition=mod:4:1"),
            1000,
        )
        .unwrap();
        assert_eq!(p.max_bytes, Some(100));
        assert_eq!(p.format, StreamFormat::Binary);
        let j = parse_stream_query(&cp_query("&format=json"), 1000).unwrap();
        assert_eq!(j.format, StreamFormat::Json);
        assert_eq!(p.filter.to_query(), "sources=1-2&partition=mod:4:1");
        assert_eq!(p.checkpoint.bootstrap.unwrap().since_scn, Some(Scn::new(4)));
        for (query, parameter) in [
            ("max_bytes=5".to_owned(), "checkpoint"),
            (cp_query("&max_bytes=0"), "max_bytes"),
            (cp_query("&max_bytes=1001"), "max_bytes"),
            (cp_query("&wait_ms=5"), "wait_ms"),
            (cp_query("&format=xml"), "format"),
            (cp_query("&format=json&format=json"), "format"),
            (cp_query("&partition=mod:0:1"), "filter"),
            (cp_query("&partitions=all"), "partitions"),
            ("checkpoint=%7B".to_owned(), "checkpoint"),
            (format!("{}&{}", cp_query(""), cp_query("")), "checkpoint"),
        ] {
            let err = parse_stream_query(&query, 1000).unwrap_err();
            assert_eq!(err.code(), "bad_parameter", "{query}");
            match err.0 {
                ServeError::BadParameter { parameter: p, .. } => {
                    assert_eq!(p, parameter, "{query}")
                }
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn routes_map_errors_to_typed_responses() {
        let store = Arc::new(MemoryStore::new());
        let routes = routes(BootstrapService::new(store, ServeSettings::default()));
        let r = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(
            (r.status(), r.headers()["x-databus-error"].to_str().unwrap()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let r = warp::test::request()
            .method("POST")
            .path("/v1/status")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = warp::test::request()
            .path("/v1/status?x=1")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = warp::test::request()
            .path("/v1/schemas/xyz")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = warp::test::request()
            .path("/v1/schemas/00000000000000ff")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Nothing recorded yet: retry later, never an empty snapshot.
        let r = warp::test::request()
            .path(&format!("/v1/bootstrap/stream?{}", cp_query("")))
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["x-databus-error"], "not_yet_at_scn");
        assert_eq!(r.headers()["retry-after"], "1");
        let r = warp::test::request().path("/health").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn health_is_503_with_the_reason_while_a_role_does_not_do_its_job() {
        use crate::store::{Role, RoleReport, RoleState, RoleStore};
        let store = Arc::new(MemoryStore::new());
        let routes = routes(BootstrapService::new(
            store.clone(),
            ServeSettings::default(),
        ));
        let now = crate::health::now_ms();
        let report = |role, state, message: Option<&str>, updated_ms, caught_up_ms| RoleReport {
            role,
            state,
            message: message.map(str::to_owned),
            updated_ms,
            since_ms: now - 1000,
            caught_up_ms,
        };
        let get = |path: &'static str| {
            let routes = routes.clone();
            async move {
                let r = warp::test::request().path(path).reply(&routes).await;
                let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
                (r.status(), body)
            }
        };
        let fresh = |role| report(role, RoleState::Running, None, now, Some(now));
        store.put_role(&fresh(Role::Producer)).unwrap();
        store.put_role(&fresh(Role::Applier)).unwrap();
        let (status, body) = get("/health").await;
        assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ok")));
        assert_eq!(body, json!({"status": "ok", "problems": []}));

        let cases = [
            (
                report(
                    Role::Producer,
                    RoleState::Blocked,
                    Some("relay gap; re-seed"),
                    now,
                    None,
                ),
                "blocked",
                "relay gap; re-seed",
            ),
            (
                report(
                    Role::Producer,
                    RoleState::Failed,
                    Some("disk full"),
                    now,
                    None,
                ),
                "failed",
                "disk full",
            ),
            (
                report(
                    Role::Producer,
                    RoleState::Stopped,
                    Some("shut down"),
                    now,
                    None,
                ),
                "stopped",
                "start it again",
            ),
            (
                report(
                    Role::Producer,
                    RoleState::Running,
                    None,
                    now - 60_000,
                    Some(now - 60_000),
                ),
                "not_running",
                "has not reported for",
            ),
            (
                report(
                    Role::Producer,
                    RoleState::Running,
                    None,
                    now,
                    Some(now - 3_600_000),
                ),
                "behind",
                "health.max_lag",
            ),
        ];
        for (r, state, says) in cases {
            store.put_role(&r).unwrap();
            let (status, body) = get("/health").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["status"], "unhealthy", "{body}");
            assert_eq!(body["problems"][0]["role"], "producer", "{body}");
            // The relay's shape and meaning: the component, and an error envelope for the 503.
            assert_eq!(body["problems"][0]["component"], "producer", "{body}");
            assert_eq!(body["error"], "unavailable", "{body}");
            assert!(body["message"].as_str().unwrap().contains(says), "{body}");
            assert_eq!(body["problems"][0]["state"], state, "{body}");
            let message = body["problems"][0]["message"].as_str().unwrap();
            assert!(message.contains(says), "{body}");
            let (_, st) = get("/v1/status").await;
            assert_eq!(st["health"], body);
            assert_eq!(st["roles"][0]["role"], "producer", "{st}");
            let page = warp::test::request().path("/").reply(&routes).await;
            let page = String::from_utf8(page.body().to_vec()).unwrap();
            assert!(page.contains("not ok (1 problems"), "{page}");
        }
        store.put_role(&fresh(Role::Producer)).unwrap();
        store
            .put_role(&report(
                Role::Applier,
                RoleState::Running,
                None,
                now,
                Some(now - 3_600_000),
            ))
            .unwrap();
        let (status, body) = get("/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["problems"][0]["role"], "applier", "{body}");
        let r = warp::test::request().path("/health").reply(&routes).await;
        assert_eq!(r.headers()["x-databus-error"], "unavailable");
    }
}
