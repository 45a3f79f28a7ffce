//! `/metrics` serves the relay's Prometheus metrics (this test binary installs the global recorder).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::shop_table;
use databus_buffer::{BufferConfig, event_buffer};
use databus_core::{Event, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};
use databus_relay::config::{HttpSettings, RelayHttp};
use databus_relay::{IngestStatus, RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use tokio_util::sync::CancellationToken;

/// `GET path`: the status and the body as text.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let resp = common::get(addr, path).await;
    (resp.status, resp.text())
}

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_events_errors_and_buffer_state() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let (mut writer, buffer) = event_buffer(BufferConfig::new(1 << 20)).unwrap();
    let status = Arc::new(IngestStatus::default());
    status.update(|s| s.last_timestamp_ns = Some(1));
    let source = SourceHandle {
        name: "shop".into(),
        buffer,
        tables: vec![shop_table(1, "orders")],
        status,
    };
    let service = RelayService::new(
        vec![source],
        Arc::new(SchemaRegistry::in_memory()),
        HttpSettings::defaults::<RelayHttp>(),
        Some(handle),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));

    for scn in 1..=3u64 {
        let event = Event {
            scn: Scn::new(scn),
            opcode: Opcode::Upsert,
            source: SourceId::new(1),
            partition: PartitionId::new(0),
            timestamp_ns: scn,
            schema: SchemaId::new(1),
            key: Key::Int(scn as i64),
            payload: vec![0; 10],
        };
        writer.append(&event.builder()).unwrap();
        writer.end_window(Scn::new(scn), scn).unwrap();
    }
    let (status, _) = get(addr, "/v1/stream").await;
    assert_eq!(status, 200);
    let (status, _) = get(addr, "/v1/stream?max_bytes=nope").await;
    assert_eq!(status, 400);
    let (status, _) = get(addr, "/v1/stream?wait_ms=10&checkpoint=%7B%22version%22%3A1%2C%22mode%22%3A%22online%22%2C%22window_scn%22%3A3%2C%22prev_scn%22%3A3%7D").await;
    assert_eq!(status, 200);

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for (series, value) in [
        (
            "databus_relay_stream_requests_total{buffer=\"shop\",format=\"binary\"}",
            2.0,
        ),
        ("databus_relay_events_out_total{buffer=\"shop\"}", 6.0),
        ("databus_relay_windows_out_total{buffer=\"shop\"}", 3.0),
        ("databus_relay_long_polls_total{buffer=\"shop\"}", 1.0),
        ("databus_relay_long_polls_in_progress{buffer=\"shop\"}", 0.0),
        (
            "databus_relay_http_errors_total{kind=\"bad_parameter\"}",
            1.0,
        ),
        ("databus_relay_buffer_min_scn{buffer=\"shop\"}", 1.0),
        ("databus_relay_buffer_max_scn{buffer=\"shop\"}", 3.0),
    ] {
        assert_eq!(value_of(&text, series), value, "{series}");
    }
    assert!(value_of(&text, "databus_relay_buffer_fill_ratio{buffer=\"shop\"}") > 0.0);
    assert!(value_of(&text, "databus_relay_source_lag_seconds{buffer=\"shop\"}") > 1e6);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}
