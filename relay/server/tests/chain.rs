//! Relay chaining over real loopback HTTP: a downstream relay follows an upstream relay's buffer and
//! serves exactly the same frames (SCNs, windows, heartbeats, keys, payloads) and schemas; restarted, it
//! resumes after its persisted SCN.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Relay, enc, get, shop_table, wait_status};
use databus_buffer::{BufferConfig, BufferWriter, event_buffer};
use databus_core::{
    Checkpoint, EventBuilder, KeyRef, Opcode, PartitionId, SchemaId, Scn, SourceId,
};
use databus_relay::config::{HttpSettings, RelayHttp};
use databus_relay::{RelayConfig, RelayService, SourceHandle};
use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema, Value as Cell};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn wait_until_max_scn(addr: SocketAddr, scn: u64) {
    wait_status(
        addr,
        Instant::now() + Duration::from_secs(30),
        &format!("downstream never reached {scn}"),
        |body| {
            if body["buffers"][0]["max_scn"].as_u64() == Some(scn) {
                return true;
            }
            assert_ne!(body["buffers"][0]["ingest"]["state"], "failed", "{body}");
            false
        },
    )
    .await;
}

/// `GET /v1/stream` from a checkpoint after `scn`.
async fn stream_after(addr: SocketAddr, scn: u64) -> common::Resp {
    let cp = Checkpoint::after(Scn::new(scn));
    get(
        addr,
        &format!("/v1/stream?checkpoint={}", enc(&cp.to_json())),
    )
    .await
}

struct Upstream {
    addr: SocketAddr,
    writer: BufferWriter,
    schema_id: SchemaId,
    registry: Arc<SchemaRegistry>,
    shutdown: CancellationToken,
}

impl Upstream {
    /// Serves the same buffer again on the same address (after `shutdown`).
    async fn serve_again(&mut self) {
        let service = RelayService::new(
            vec![shop_handle(self.writer.buffer().clone())],
            self.registry.clone(),
            HttpSettings::defaults::<RelayHttp>(),
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.shutdown = CancellationToken::new();
        tokio::spawn(databus_relay::serve(
            service,
            listener,
            self.shutdown.clone(),
        ));
    }

    /// A window of `n` rows of the registered table, keys `scn*100 + i`; `n == 0` is a heartbeat.
    fn window(&mut self, scn: u64, n: u64) {
        let schema = self.registry.get(self.schema_id).unwrap();
        for i in 0..n {
            let id = (scn * 100 + i) as i64;
            let mut payload = Vec::new();
            schema
                .encoder
                .encode(
                    &[Cell::Int(id), Cell::Text(format!("row {id}"))],
                    &mut payload,
                )
                .unwrap();
            let opcode = if i % 3 == 2 {
                Opcode::Delete
            } else {
                Opcode::Upsert
            };
            let event = EventBuilder::new(Scn::new(scn), opcode)
                .source(SourceId::new(1))
                .partition(PartitionId::new(i as u16))
                .timestamp_ns(scn * 1000)
                .schema(self.schema_id)
                .key(KeyRef::Int(id))
                .payload(&payload);
            self.writer.append(&event).unwrap();
        }
        self.writer.end_window(Scn::new(scn), scn * 1000).unwrap();
    }
}

fn shop_handle(buffer: Arc<databus_buffer::EventBuffer>) -> SourceHandle {
    SourceHandle {
        name: "shop".into(),
        buffer,
        tables: vec![shop_table(1, "orders")],
        status: Default::default(),
    }
}

async fn start_upstream() -> Upstream {
    let registry = Arc::new(SchemaRegistry::in_memory());
    let schema_id = registry
        .register(&TableSchema {
            database: "shop".into(),
            table: "orders".into(),
            columns: vec![
                Column::new("id", ColumnType::BigInt { unsigned: false }, false),
                Column::new("note", ColumnType::Text { max_chars: None }, true),
            ],
            primary_key: vec![0],
        })
        .unwrap()
        .id;
    let (writer, buffer) = event_buffer(BufferConfig::new(8 << 20)).unwrap();
    let service = RelayService::new(
        vec![shop_handle(buffer)],
        registry.clone(),
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));
    Upstream {
        addr,
        writer,
        schema_id,
        registry,
        shutdown,
    }
}

async fn start_downstream(upstream: SocketAddr, state_dir: &Path) -> Relay {
    Relay::from_toml(&format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
upstream = {{ url = "http://{upstream}" }}
buffer_size = "8MiB"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
"#,
        state = state_dir.display().to_string(),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_relay_serves_the_same_frames_and_schemas() {
    let mut up = start_upstream().await;
    // History the downstream copies on its first start.
    up.window(3, 4);
    up.window(5, 0);
    up.window(6, 7);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let downstream = start_downstream(up.addr, &state_dir).await;
    let down = downstream.addr;
    wait_until_max_scn(down, 6).await;
    // New windows while the downstream follows (long polling the upstream).
    for scn in 7..=20 {
        up.window(scn, scn % 5);
    }
    wait_until_max_scn(down, 20).await;

    let a = get(up.addr, "/v1/stream").await;
    let b = get(down, "/v1/stream").await;
    assert_eq!((a.status, b.status), (200, 200));
    assert!(!a.body.is_empty());
    assert_eq!(a.body, b.body, "frames differ");
    assert_eq!(a.checkpoint_header(), b.checkpoint_header());
    // Same with a MOD filter and a mid-window budget.
    for query in [
        "partition=mod:3:1",
        "max_bytes=300",
        "partition=mod:2:0&max_bytes=500",
    ] {
        let a = get(up.addr, &format!("/v1/stream?{query}")).await;
        let b = get(down, &format!("/v1/stream?{query}")).await;
        assert_eq!(a.body, b.body, "{query}");
        assert_eq!(a.checkpoint_header(), b.checkpoint_header(), "{query}");
    }
    // Schemas were copied: JSON decodes, and the schema is served by id.
    let resp = get(down, "/v1/stream?format=json&max_bytes=1").await;
    let line: Value = serde_json::from_str(
        std::str::from_utf8(&resp.body)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line["payload"],
        serde_json::json!({"id": 300, "note": "row 300"}),
        "{line}"
    );
    let resp = get(down, &format!("/v1/schemas/{:016x}", up.schema_id.get())).await;
    assert_eq!(resp.status, 200);

    // Restart: resumes after the persisted SCN; windows written meanwhile arrive, nothing twice.
    downstream.stop().await;
    up.window(21, 2);
    let downstream = start_downstream(up.addr, &state_dir).await;
    let down = downstream.addr;
    up.window(22, 3);
    wait_until_max_scn(down, 22).await;
    let (a, b) = (
        stream_after(up.addr, 20).await,
        stream_after(down, 20).await,
    );
    assert_eq!(a.body, b.body);
    // Windows before the restart were never in the new buffer: a consumer from before must bootstrap.
    let resp = get(down, "/v1/stream").await;
    assert_eq!(resp.status, 410);
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["prev_scn"], 20);

    // The upstream goes away: the downstream reconnects with backoff and catches up when it is back.
    up.shutdown.cancel();
    let body = wait_status(
        down,
        Instant::now() + Duration::from_secs(30),
        "never reconnecting",
        |body| body["buffers"][0]["ingest"]["state"] == "reconnecting",
    )
    .await;
    assert!(
        body["buffers"][0]["ingest"]["last_error"]
            .as_str()
            .is_some()
    );
    up.window(23, 2);
    up.serve_again().await;
    wait_until_max_scn(down, 23).await;
    let (a, b) = (
        stream_after(up.addr, 20).await,
        stream_after(down, 20).await,
    );
    assert_eq!(a.body, b.body);
    downstream.stop().await;
    up.shutdown.cancel();
}

/// Chaining over TLS with a token; a wrong token stops the chained source at once (status `failed`,
/// the message naming the setting), instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaining_over_tls_with_a_token_and_a_wrong_token_fails_definitely() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let mut up = start_upstream().await;
    up.shutdown.cancel();
    let security = databus_relay::ServerSecurity::plain()
        .with_tls_files(&cert, &key)
        .unwrap()
        .with_tokens(vec![databus_http::Token::new("up-token").unwrap()], false);
    let service = RelayService::new(
        vec![shop_handle(up.writer.buffer().clone())],
        up.registry.clone(),
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop_up = CancellationToken::new();
    tokio::spawn(databus_relay::serve_with(
        service,
        listener,
        security,
        stop_up.clone(),
    ));
    up.window(3, 4);
    up.window(4, 2);

    for (token, works) in [("up-token", true), ("bad-token", false)] {
        let text = format!(
            r#"
state_dir = {state:?}
[[sources]]
name = "shop"
upstream = {{ url = "https://127.0.0.1:{port}", ca_cert = {cert:?}, token_env = "UP_TOKEN" }}
buffer_size = "8MiB"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
"#,
            state = dir.path().join(token).display().to_string(),
            port = addr.port(),
            cert = cert.display().to_string(),
        );
        let config = RelayConfig::from_toml(&text)
            .unwrap()
            .validate_with_env(&|v| (v == "UP_TOKEN").then(|| token.to_owned()))
            .unwrap();
        let downstream = Relay::run(config).await;
        let down = downstream.addr;
        if works {
            wait_until_max_scn(down, 4).await;
        } else {
            let body = wait_status(
                down,
                Instant::now() + Duration::from_secs(30),
                "never failed",
                |body| {
                    let ingest = &body["buffers"][0]["ingest"];
                    if ingest["state"] == "failed" {
                        return true;
                    }
                    assert_ne!(ingest["state"], "streaming", "{ingest}");
                    false
                },
            )
            .await;
            let ingest = &body["buffers"][0]["ingest"];
            let error = ingest["last_error"].as_str().unwrap();
            assert!(
                error.contains("401") && error.contains("upstream.token_env"),
                "{error}"
            );
            assert!(!error.contains("bad-token") && !error.contains("up-token"));
        }
        downstream.stop().await;
    }
    stop_up.cancel();
}

/// A busy upstream (`503 too_many_connections` with `Retry-After: 2`, as the relay's connection limit
/// answers) is retried no sooner than it asked, with the shared backoff: the downstream shows
/// `reconnecting` with the upstream's message meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_upstream_is_retried_no_sooner_than_its_retry_after() {
    use warp::Filter;
    let asked: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let seen = asked.clone();
    let status = warp::path!("v1" / "status").map(|| {
        warp::reply::json(&serde_json::json!({
            "buffers": [{"name": "shop", "anchored": true, "prev_scn": 0}]
        }))
    });
    let stream = warp::path!("v1" / "stream").map(move || {
        seen.lock().unwrap().push(Instant::now());
        warp::http::Response::builder()
            .status(503)
            .header("retry-after", "2")
            .header("x-databus-error", "too_many_connections")
            .body(r#"{"error":"too_many_connections","message":"the relay holds its most connections"}"#)
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(status.or(stream)).incoming(listener).run());
    let dir = tempfile::tempdir().unwrap();
    let down = start_downstream(addr, dir.path()).await;
    let body = wait_status(
        down.addr,
        Instant::now() + Duration::from_secs(30),
        "never reconnecting",
        |body| body["buffers"][0]["ingest"]["state"] == "reconnecting",
    )
    .await;
    let error = body["buffers"][0]["ingest"]["last_error"].as_str().unwrap();
    assert!(error.contains("most connections"), "{error}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while asked.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the downstream stopped asking");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times = asked.lock().unwrap().clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1990),
            "asked again after {gap:?}, before the upstream's Retry-After of 2 s"
        );
    }
    down.stop().await;
}
