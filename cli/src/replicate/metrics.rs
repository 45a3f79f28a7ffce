//! `databus replicate`'s Prometheus metrics, served on `--metrics-listen ADDR` at `GET /metrics`
//! (docs/replicate.md, "Progress, metrics and errors").
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `databus_replicate_windows_total` | counter | windows applied (committed with their checkpoint) |
//! | `databus_replicate_rows_total{kind="upsert"\|"delete"}` | counter | rows written and keys deleted |
//! | `databus_replicate_table_events_total` | counter | truncates, drops and schema changes followed |
//! | `databus_replicate_last_scn` | gauge | SCN of the last window committed in the target |
//! | `databus_replicate_lag_seconds` | gauge | now minus the source commit time of that window |
//! | `databus_replicate_online` | gauge | 1 following the relay, 0 inside a bootstrap |
//! | `databus_replicate_reconnects_total` | counter | target connections lost and made again |

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::apply::Applied;

/// Installs the Prometheus recorder and serves it on `addr` until `shutdown`; returns the bound
/// address.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for --metrics-listen"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    describe();
    use warp::Filter;
    let route = warp::path!("metrics")
        .and(warp::get())
        .map(move || handle.render());
    tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(async move { shutdown.cancelled_owned().await })
            .run(),
    );
    Ok(bound)
}

fn describe() {
    metrics::describe_counter!(
        "databus_replicate_windows_total",
        "windows applied to the target with their checkpoint"
    );
    metrics::describe_counter!(
        "databus_replicate_rows_total",
        "rows upserted and keys deleted in the target"
    );
    metrics::describe_gauge!(
        "databus_replicate_last_scn",
        "SCN of the last window committed in the target"
    );
    metrics::describe_gauge!(
        "databus_replicate_lag_seconds",
        "now minus the source commit time of the last applied window"
    );
}

/// One window committed.
pub fn windows(windows: u64, applied: &Applied, scn: u64) {
    counter!("databus_replicate_windows_total").increment(windows);
    counter!("databus_replicate_rows_total", "kind" => "upsert").increment(applied.upserts);
    counter!("databus_replicate_rows_total", "kind" => "delete").increment(applied.deletes);
    counter!("databus_replicate_table_events_total").increment(applied.table_events);
    // An SCN fits an f64 exactly below 2^53 (MariaDB GTID sequence numbers and PostgreSQL LSNs of
    // any real server).
    gauge!("databus_replicate_last_scn").set(scn as f64);
}

/// The lag of the last applied window.
pub fn lag(lag: Option<Duration>) {
    if let Some(lag) = lag {
        gauge!("databus_replicate_lag_seconds").set(lag.as_secs_f64());
    }
}

/// Following the relay or inside a bootstrap.
pub fn online(online: bool) {
    gauge!("databus_replicate_online").set(if online { 1.0 } else { 0.0 });
}

/// A lost target connection made again.
pub fn reconnected() {
    counter!("databus_replicate_reconnects_total").increment(1);
}
