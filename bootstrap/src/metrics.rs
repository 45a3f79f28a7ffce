//! The bootstrap roles' metrics, through the `metrics` facade. Every name is documented in
//! `docs/operations.md` ("Bootstrap server"); labels are bounded (`path` is a bootstrap path,
//! `format` a body format, `kind` an error code of `docs/bootstrap-protocol.md`).
//!
//! The process installs the Prometheus recorder once ([`install`]); the server serves it on
//! `GET /metrics`, and roles without the server (producer, applier, seed) on their own small listener
//! ([`serve`]). Without an installed recorder the macros record nothing.

use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::BootstrapError;
use crate::store::BootstrapStore;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, BootstrapError> {
    // Two first calls at once (tests of one process) must not both try to install.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
        BootstrapError::Config(format!(
            "cannot install the Prometheus metrics recorder: {e}"
        ))
    })?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The installed recorder, if any.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// `databus_bootstrap_producer_windows_total`, `databus_bootstrap_producer_events_total`.
pub(crate) fn produced(windows: u64, events: u64) {
    counter!("databus_bootstrap_producer_windows_total").increment(windows);
    counter!("databus_bootstrap_producer_events_total").increment(events);
}

/// `databus_bootstrap_applier_windows_total`, `databus_bootstrap_applier_events_total`.
pub(crate) fn applied(windows: u64, events: u64) {
    counter!("databus_bootstrap_applier_windows_total").increment(windows);
    counter!("databus_bootstrap_applier_events_total").increment(events);
}

/// `databus_bootstrap_retention_trimmed_windows_total`, `..._events_total`.
pub(crate) fn trimmed(windows: u64, events: u64) {
    counter!("databus_bootstrap_retention_trimmed_windows_total").increment(windows);
    counter!("databus_bootstrap_retention_trimmed_events_total").increment(events);
}

/// `databus_bootstrap_seed_rows_total`.
pub(crate) fn seeded(rows: u64) {
    counter!("databus_bootstrap_seed_rows_total").increment(rows);
}

/// `databus_bootstrap_stream_requests_total{path, format}`, `databus_bootstrap_events_out_total`,
/// `databus_bootstrap_bytes_out_total`.
pub(crate) fn stream_out(path: &'static str, format: &'static str, events: u64, bytes: usize) {
    counter!("databus_bootstrap_stream_requests_total", "path" => path, "format" => format)
        .increment(1);
    counter!("databus_bootstrap_events_out_total").increment(events);
    counter!("databus_bootstrap_bytes_out_total").increment(bytes as u64);
}

/// `databus_bootstrap_http_errors_total{kind}`.
pub(crate) fn http_error(kind: &'static str) {
    counter!("databus_bootstrap_http_errors_total", "kind" => kind).increment(1);
}

/// `databus_bootstrap_pins_refused_total`: bootstraps refused at `serve.max_pins`.
pub(crate) fn pin_refused() {
    counter!("databus_bootstrap_pins_refused_total").increment(1);
}

fn scn(s: Option<databus_core::Scn>) -> f64 {
    s.map_or(0.0, |s| s.get() as f64)
}

/// The store generation served (`databus_bootstrap_generation`).
pub fn generation(n: u64) {
    gauge!("databus_bootstrap_generation").set(n as f64);
}

/// A re-seed into a new generation began (`databus_bootstrap_reseeds_total`).
pub fn reseed_started() {
    counter!("databus_bootstrap_reseeds_total").increment(1);
}

/// Refreshes the store gauges (`databus_bootstrap_log_*`, `databus_bootstrap_snapshot_*`,
/// `databus_bootstrap_applied_scn`); called when `/metrics` is scraped.
pub fn refresh_store_gauges(store: &dyn BootstrapStore) -> Result<(), BootstrapError> {
    let log = store.log_status()?;
    let snap = store.snapshot_status()?;
    gauge!("databus_bootstrap_log_floor_scn").set(scn(log.floor_scn));
    gauge!("databus_bootstrap_log_first_scn").set(scn(log.first_scn));
    gauge!("databus_bootstrap_log_last_scn").set(scn(log.last_scn));
    gauge!("databus_bootstrap_log_windows").set(log.windows as f64);
    gauge!("databus_bootstrap_log_events").set(log.events as f64);
    gauge!("databus_bootstrap_log_bytes").set(log.bytes as f64);
    gauge!("databus_bootstrap_applied_scn").set(scn(snap.applied_scn));
    gauge!("databus_bootstrap_snapshot_base_scn").set(scn(snap.base_scn));
    gauge!("databus_bootstrap_snapshot_rows").set(snap.rows as f64);
    gauge!("databus_bootstrap_seeded").set(if snap.seeded { 1.0 } else { 0.0 });
    let pins = store.pins(crate::serve::now_ms())?;
    gauge!("databus_bootstrap_pins").set(pins.len() as f64);
    gauge!("databus_bootstrap_pin_min_scn").set(scn(pins.first().map(|p| p.0)));
    Ok(())
}

/// The Prometheus text of this process, with the store gauges refreshed first (`None`: no recorder
/// is installed).
pub fn render(store: &dyn BootstrapStore) -> Result<Option<String>, BootstrapError> {
    let Some(handle) = handle() else {
        return Ok(None);
    };
    refresh_store_gauges(store)?;
    Ok(Some(handle.render()))
}

/// Serves `GET /metrics` (and `GET /health`) alone on `listener` until `shutdown`: for the roles that
/// run without the bootstrap server (producer, applier, seed).
pub async fn serve(
    store: std::sync::Arc<dyn BootstrapStore>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use warp::{Filter, Reply};
    let store = warp::any().map(move || store.clone());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(store)
        .then(crate::http::metrics_response)
        .boxed();
    let health = warp::path!("health")
        .and(warp::get())
        // The process is up (liveness; the roles' health is the server's `/health`), in the shape
        // of every `/health`.
        .map(|| {
            let ok = databus_http::protocol::Health::of(Vec::new());
            warp::reply::json(&ok.to_json()).into_response()
        })
        .boxed();
    warp::serve(metrics.or(health).unify())
        .incoming(listener)
        .graceful(async move { shutdown.cancelled_owned().await })
        .run()
        .await;
}
