//! The relay's HTTP API over real loopback HTTP (127.0.0.1, port 0), served from real event buffers.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use common::{Resp, enc, get, request, shop_table};
use databus_buffer::{BufferConfig, BufferWriter, EventBuffer, event_buffer};
use databus_core::{Checkpoint, Event, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};
use databus_filters::{Filter, FilterSpec, bucket_of};
use databus_relay::config::{HttpSettings, RelayHttp};
use databus_relay::{IngestState, IngestStatus, RelayService, SourceHandle};
use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn event(source: u16, key: i64, payload_len: usize) -> Event {
    Event {
        scn: Scn::ZERO,
        opcode: Opcode::Upsert,
        source: SourceId::new(source),
        partition: PartitionId::new(0),
        timestamp_ns: 0,
        schema: SchemaId::new(0xabc),
        key: Key::Int(key),
        payload: vec![key as u8; payload_len],
    }
}

/// Appends a whole window through `writer`: `events` with the window's SCN and timestamp, then the end
/// marker.
fn append_window(writer: &mut BufferWriter, scn: Scn, timestamp_ns: u64, events: &[Event]) {
    for event in events {
        let mut event = event.clone();
        event.scn = scn;
        event.timestamp_ns = timestamp_ns;
        writer.append(&event.builder()).unwrap();
    }
    writer.end_window(scn, timestamp_ns).unwrap();
}

struct Relay {
    addr: SocketAddr,
    shop: BufferWriter,
    shop_buffer: Arc<EventBuffer>,
    other: BufferWriter,
    shop_status: Arc<IngestStatus>,
    registry: Arc<SchemaRegistry>,
    schema_id: SchemaId,
    service: Arc<RelayService>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(capacity: usize) -> Relay {
        let http = HttpSettings {
            max_wait: Duration::from_secs(60),
            ..HttpSettings::defaults::<RelayHttp>()
        };
        Relay::start_with(capacity, http).await
    }

    async fn start_with(capacity: usize, http: HttpSettings) -> Relay {
        // "shop" has a side index, as a relay's buffers do (filtered streams read it); "other" has
        // none (they scan frames).
        let (shop, shop_buffer) =
            event_buffer(BufferConfig::new(capacity).with_side_index()).unwrap();
        let (other, other_buffer) = event_buffer(BufferConfig::new(capacity)).unwrap();
        let shop_status = Arc::new(IngestStatus::default());
        let sources = vec![
            SourceHandle {
                name: "shop".into(),
                buffer: shop_buffer.clone(),
                tables: (1..=4).map(|i| shop_table(i, &format!("t{i}"))).collect(),
                status: shop_status.clone(),
            },
            SourceHandle {
                name: "other".into(),
                buffer: other_buffer,
                tables: vec![shop_table(9, "nine")],
                status: Default::default(),
            },
        ];
        let schemas = Arc::new(SchemaRegistry::in_memory());
        let schema_id = schemas
            .register(&TableSchema {
                database: "shop".into(),
                table: "t1".into(),
                columns: vec![Column::new(
                    "id",
                    ColumnType::BigInt { unsigned: false },
                    false,
                )],
                primary_key: vec![0],
            })
            .unwrap()
            .id;
        let service = RelayService::new(sources, schemas.clone(), http, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(databus_relay::serve(
            service.clone(),
            listener,
            shutdown.clone(),
        ));
        Relay {
            addr,
            shop,
            shop_buffer,
            other,
            shop_status,
            registry: schemas.clone(),
            schema_id,
            service,
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server drains and stops")
            .unwrap();
    }
}

/// Waits for `cond` with a deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn assert_error(resp: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("x-databus-error"), code);
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

#[tokio::test]
async fn sources_schemas_status_and_health() {
    let mut relay = Relay::start(1 << 20).await;
    append_window(&mut relay.shop, Scn::new(5), 1_000, &[event(1, 1, 10)]);
    relay.shop_status.update(|s| {
        s.state = IngestState::Streaming;
        s.last_scn = Some(Scn::new(5));
        s.last_timestamp_ns = Some(1_000);
        s.position = Some("0-1-5 mariadb-bin.000001:4567".into());
    });
    let id = format!("{:016x}", relay.schema_id.get());

    let resp = get(relay.addr, "/v1/sources").await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    let list = body["sources"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(
        list[0],
        json!({"id": 1, "name": "t1", "table": "shop.t1", "buffer": "shop"})
    );
    assert_eq!(list[4]["buffer"], "other");

    for path in ["/v1/schemas?source=1", "/v1/schemas?source=t1"] {
        let resp = get(relay.addr, path).await;
        assert_eq!(resp.status, 200);
        let body = resp.json();
        assert_eq!(body["schemas"][0]["id"], id, "{body}");
        assert_eq!(body["schemas"][0]["version"], 1);
        assert_eq!(body["schemas"][0]["source"], 1);
        assert_eq!(body["schemas"][0]["avro"]["type"], "record");
    }
    let resp = get(relay.addr, "/v1/schemas?source=2").await;
    assert_eq!(resp.json()["schemas"], json!([]));
    let resp = get(relay.addr, &format!("/v1/schemas/{id}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["table"], "shop.t1");
    assert_error(
        &get(relay.addr, "/v1/schemas/0000000000000abd").await,
        404,
        "schema_not_found",
    );
    assert_error(
        &get(relay.addr, "/v1/schemas?source=77").await,
        404,
        "unknown_source",
    );
    assert_error(
        &get(relay.addr, "/v1/schemas?source=nope").await,
        404,
        "unknown_source",
    );
    let body = assert_error(
        &get(relay.addr, "/v1/schemas/zz").await,
        400,
        "bad_parameter",
    );
    assert_eq!(body["parameter"], "id");

    let resp = get(relay.addr, "/v1/status").await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    let shop = &body["buffers"][0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["min_scn"], 5);
    assert_eq!(shop["max_scn"], 5);
    assert_eq!(shop["prev_scn"], Value::Null);
    assert_eq!(shop["events"], 1);
    assert_eq!(shop["windows"], 1);
    // The event ring: the configured size less the side index's ninth (whole 16-byte entries).
    assert_eq!(shop["capacity_bytes"], (1 << 20) - (1 << 20) / 9 / 16 * 16);
    assert_eq!(body["buffers"][1]["capacity_bytes"], 1 << 20);
    assert_eq!(shop["ingest"]["state"], "streaming");
    assert_eq!(shop["ingest"]["last_scn"], 5);
    assert_eq!(shop["ingest"]["position"], "0-1-5 mariadb-bin.000001:4567");
    assert!(shop["ingest_lag_ms"].as_u64().unwrap() > 0);
    assert_eq!(body["buffers"][1]["max_scn"], Value::Null);

    let resp = get(relay.addr, "/health").await;
    assert_eq!(resp.status, 200);
    relay.shop_status.update(|s| {
        s.state = IngestState::Failed;
        s.last_error = Some("binlog_format is STATEMENT; set binlog_format=ROW".into());
    });
    let body = assert_error(&get(relay.addr, "/health").await, 503, "unavailable");
    assert!(body["message"].as_str().unwrap().contains("shop"), "{body}");
    let resp = get(relay.addr, "/v1/status").await;
    assert_eq!(resp.json()["buffers"][0]["ingest"]["state"], "failed");

    // No exporter installed in this service.
    assert_error(&get(relay.addr, "/metrics").await, 503, "unavailable");
    relay.stop().await;
}

/// `/health` means what it means on the bootstrap server (docs/operations.md, "Health"): `200 ok`;
/// `200 degraded` while a source reconnects (it recovers by itself), naming it; `503 unhealthy` once a
/// source failed, naming it and the fix, as an error envelope too.
#[tokio::test]
async fn health_is_ok_degraded_or_unhealthy() {
    let relay = Relay::start(1 << 20).await;
    relay
        .shop_status
        .update(|s| s.state = IngestState::Streaming);
    let resp = get(relay.addr, "/health").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"status": "ok", "problems": []}));

    relay.shop_status.update(|s| {
        s.state = IngestState::Reconnecting;
        s.last_error = Some("connection refused".into());
    });
    let resp = get(relay.addr, "/health").await;
    assert_eq!(resp.status, 200, "reconnecting recovers by itself");
    let body = resp.json();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["problems"][0]["component"], "source shop", "{body}");
    assert_eq!(body["problems"][0]["source"], "shop", "{body}");
    assert_eq!(body["problems"][0]["state"], "reconnecting", "{body}");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    assert!(body.get("error").is_none(), "{body}");

    relay.shop_status.update(|s| {
        s.state = IngestState::Failed;
        s.last_error = Some("binlog_format is STATEMENT; set binlog_format=ROW".into());
    });
    let body = assert_error(&get(relay.addr, "/health").await, 503, "unavailable");
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["problems"][0]["component"], "source shop", "{body}");
    assert_eq!(body["problems"][0]["state"], "failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("set binlog_format=ROW"), "{body}");
    assert!(message.contains("/v1/status"), "{body}");
    relay.stop().await;
}

#[tokio::test]
async fn bad_requests_are_typed_errors_never_500() {
    let relay = Relay::start(1 << 20).await;
    for (path, status, code, parameter) in [
        (
            "/v1/stream?max_bytes=0",
            400,
            "bad_parameter",
            Some("max_bytes"),
        ),
        (
            "/v1/stream?max_bytes=abc",
            400,
            "bad_parameter",
            Some("max_bytes"),
        ),
        (
            "/v1/stream?wait_ms=60001",
            400,
            "bad_parameter",
            Some("wait_ms"),
        ),
        (
            "/v1/stream?format=avro",
            400,
            "bad_parameter",
            Some("format"),
        ),
        (
            "/v1/stream?checkpoint=%7Bgarbage",
            400,
            "bad_parameter",
            Some("checkpoint"),
        ),
        (
            "/v1/stream?checkpoint=%FF%FE",
            400,
            "bad_parameter",
            Some("checkpoint"),
        ),
        (
            "/v1/stream?sources=1,9",
            400,
            "bad_parameter",
            Some("sources"),
        ),
        (
            "/v1/stream?sources=42",
            400,
            "bad_parameter",
            Some("sources"),
        ),
        ("/v1/stream", 400, "bad_parameter", Some("sources")),
        (
            "/v1/stream?buffer=nope",
            400,
            "bad_parameter",
            Some("buffer"),
        ),
        (
            "/v1/stream?sources=1&buffer=other",
            400,
            "bad_parameter",
            Some("buffer"),
        ),
        ("/v1/stream?what=1", 400, "bad_parameter", Some("what")),
        ("/v1/sources?x=1", 400, "bad_parameter", Some("x")),
        ("/v1/schemas", 400, "bad_parameter", Some("source")),
        ("/v1/nothing", 404, "not_found", None),
        // `/` and `/status` are the HTML status page; other paths are not found.
        ("/index.html", 404, "not_found", None),
    ] {
        let resp = get(relay.addr, path).await;
        let body = assert_error(&resp, status, code);
        if let Some(p) = parameter {
            assert_eq!(body["parameter"], p, "{path}: {body}");
        }
    }
    let long = format!("/v1/stream?sources={}", "1,".repeat(5000));
    let body = assert_error(&get(relay.addr, &long).await, 414, "query_too_long");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("raise http.max_query_bytes"),
        "the fix is named: {body}"
    );
    assert_error(
        &request(relay.addr, "POST", "/v1/stream?buffer=shop").await,
        405,
        "method_not_allowed",
    );
    relay.stop().await;
}

#[tokio::test]
async fn stream_binary_and_json_with_checkpoints() {
    let mut relay = Relay::start(1 << 20).await;
    append_window(
        &mut relay.shop,
        Scn::new(10),
        1,
        &[event(1, 1, 8), event(2, 2, 8)],
    );
    append_window(&mut relay.shop, Scn::new(12), 2, &[event(1, 3, 8)]);

    let resp = get(relay.addr, "/v1/stream?buffer=shop").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        "application/vnd.databus.frames"
    );
    let events = resp.events();
    let shape: Vec<(u64, bool)> = events
        .iter()
        .map(|e| (e.scn.get(), e.opcode.is_end_of_window()))
        .collect();
    assert_eq!(
        shape,
        [
            (10, false),
            (10, false),
            (10, true),
            (12, false),
            (12, true)
        ]
    );
    assert_eq!(events[1].key, Key::Int(2));
    assert_eq!(resp.checkpoint(), Checkpoint::after(Scn::new(12)));
    assert_eq!(resp.header("x-databus-events"), "5");
    assert_eq!(resp.header("x-databus-more"), "false");

    // Source filter: window boundaries always pass.
    let resp = get(relay.addr, "/v1/stream?sources=2").await;
    let shape: Vec<(u64, u16, bool)> = resp
        .events()
        .iter()
        .map(|e| (e.scn.get(), e.source.get(), e.opcode.is_end_of_window()))
        .collect();
    assert_eq!(shape, [(10, 2, false), (10, 0, true), (12, 0, true)]);

    // Resume from a checkpoint: only later windows.
    let cp = enc(&Checkpoint::after(Scn::new(10)).to_json());
    let resp = get(relay.addr, &format!("/v1/stream?sources=1&checkpoint={cp}")).await;
    assert_eq!(resp.events().len(), 2);
    assert_eq!(resp.events()[0].scn, Scn::new(12));
    // An SCN that never existed continues at the next window.
    let cp = enc(&Checkpoint::after(Scn::new(11)).to_json());
    let resp = get(relay.addr, &format!("/v1/stream?sources=1&checkpoint={cp}")).await;
    assert_eq!(resp.events()[0].scn, Scn::new(12));
    // At the head: nothing, same checkpoint.
    let cp = Checkpoint::after(Scn::new(12));
    let resp = get(
        relay.addr,
        &format!("/v1/stream?buffer=shop&checkpoint={}", enc(&cp.to_json())),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(resp.checkpoint(), cp);

    // JSON lines.
    let resp = get(relay.addr, "/v1/stream?buffer=shop&format=json").await;
    assert_eq!(resp.header("content-type"), "application/x-ndjson");
    let text = String::from_utf8(resp.body.clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["scn"], 10);
    assert_eq!(lines[0]["key"], 1);
    assert_eq!(lines[0]["opcode"], "upsert");
    assert_eq!(lines[2]["opcode"], "end_of_window");
    // Schema 0xabc is not registered: the payload stays base64, with the reason.
    assert_eq!(lines[0]["payload_base64"], "AQEBAQEBAQE=");
    assert!(
        lines[0]["decode_error"]
            .as_str()
            .unwrap()
            .contains("not registered")
    );
    assert_eq!(
        lines[5],
        json!({"checkpoint": serde_json::to_value(Checkpoint::after(Scn::new(12))).unwrap(), "more": false})
    );
    assert_eq!(resp.checkpoint(), Checkpoint::after(Scn::new(12)));

    // A payload written with a registered schema is decoded.
    let schema = relay.registry.get(relay.schema_id).unwrap();
    let mut payload = Vec::new();
    schema
        .encoder
        .encode(&[databus_serde_formats::Value::Int(-77)], &mut payload)
        .unwrap();
    let mut decoded = event(1, -77, 0);
    decoded.schema = relay.schema_id;
    decoded.payload = payload;
    append_window(&mut relay.shop, Scn::new(13), 3, &[decoded]);
    let cp = enc(&Checkpoint::after(Scn::new(12)).to_json());
    let resp = get(
        relay.addr,
        &format!("/v1/stream?buffer=shop&format=json&checkpoint={cp}"),
    )
    .await;
    let first: Value = serde_json::from_str(
        std::str::from_utf8(&resp.body)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["payload"], json!({"id": -77}), "{first}");
    assert_eq!(first["key"], -77);
    relay.stop().await;
}

/// `format=json` written straight from the Avro binary (the default) and through apache-avro values
/// (`use_value_json_renderer`) are the same bytes: upserts, updates with before images, deletes,
/// payloads that do not decode and unknown schemas, and end markers.
#[tokio::test]
async fn both_json_renderers_answer_the_same_bytes() {
    let mut relay = Relay::start(1 << 20).await;
    let schema = relay.registry.get(relay.schema_id).unwrap();
    let encode = |v: i64| {
        let mut out = Vec::new();
        schema
            .encoder
            .encode(&[databus_serde_formats::Value::Int(v)], &mut out)
            .unwrap();
        out
    };
    let with = |mut e: Event, opcode: Opcode, payload: Vec<u8>| {
        e.schema = relay.schema_id;
        e.opcode = opcode;
        e.payload = payload;
        e
    };
    let mut update = Vec::new();
    databus_core::event::update_payload(&encode(5), &encode(-5), &mut update);
    append_window(
        &mut relay.shop,
        Scn::new(3),
        7,
        &[
            with(event(1, 1, 0), Opcode::Upsert, encode(i64::MIN)),
            with(event(1, 5, 0), Opcode::Update, update),
            with(event(1, 6, 0), Opcode::Delete, encode(6)),
            // Not a datum of the schema (a string where a long is): decode_error.
            with(event(1, 7, 0), Opcode::Upsert, vec![0x80, 0x80]),
            // Schema 0xabc is not registered.
            event(2, 8, 4),
        ],
    );
    let direct = get(relay.addr, "/v1/stream?buffer=shop&format=json").await;
    relay.service.use_value_json_renderer(true);
    let values = get(relay.addr, "/v1/stream?buffer=shop&format=json").await;
    let text = String::from_utf8(direct.body.clone()).unwrap();
    assert_eq!(text, String::from_utf8(values.body.clone()).unwrap());
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["payload"], json!({"id": i64::MIN}), "{text}");
    assert_eq!(lines[1]["before"], json!({"id": -5}), "{text}");
    assert_eq!(lines[1]["payload"], json!({"id": 5}), "{text}");
    assert_eq!(lines[2]["payload"], json!({"id": 6}), "{text}");
    assert!(lines[3]["decode_error"].is_string(), "{text}");
    assert!(lines[4]["decode_error"].is_string(), "{text}");
    assert_eq!(lines[5]["opcode"], "end_of_window");
    relay.stop().await;
}

/// An answer of several 64 KiB chunks of frames (rendered as JSON in two halves on two threads)
/// holds every frame exactly once and in order: one line per event and end marker, the same lines as
/// the same frames read in answers under 64 KiB (rendered on one thread), then the checkpoint line.
#[tokio::test]
async fn large_json_answer_renders_every_frame_once_in_order() {
    let mut relay = Relay::start(8 << 20).await;
    let schema = relay.registry.get(relay.schema_id).unwrap();
    let mut expected = Vec::new();
    let mut key = 0i64;
    for w in 1..=400u64 {
        let events: Vec<Event> = (0..9)
            .map(|i| {
                key += 1;
                let mut e = event(1, key, 0);
                e.schema = relay.schema_id;
                e.opcode = if i == 4 {
                    Opcode::Delete
                } else {
                    Opcode::Upsert
                };
                schema
                    .encoder
                    .encode(
                        &[databus_serde_formats::Value::Int(key * 7)],
                        &mut e.payload,
                    )
                    .unwrap();
                if i == 8 {
                    // Payloads of varied length, some not decoding (decode_error).
                    e.payload.resize((key % 300) as usize, 0x80);
                }
                e
            })
            .collect();
        append_window(&mut relay.shop, Scn::new(w * 2), w, &events);
        for e in &events {
            expected.push((w * 2, Some(e.key.clone())));
        }
        expected.push((w * 2, None));
    }
    let big = get(
        relay.addr,
        "/v1/stream?buffer=shop&format=json&max_bytes=4194304",
    )
    .await;
    assert_eq!(big.status, 200);
    let text = String::from_utf8(big.body.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (checkpoint, events) = lines.split_last().unwrap();
    let checkpoint: Value = serde_json::from_str(checkpoint).unwrap();
    assert_eq!(checkpoint["more"], false);
    assert_eq!(events.len(), expected.len(), "one line per frame");
    assert_eq!(big.header("x-databus-events"), expected.len().to_string());
    let frame_bytes: usize = relay.shop_buffer.stats().bytes_held as usize;
    assert!(
        frame_bytes >= 4 * (64 << 10),
        "the answer spans several 64 KiB chunks of frames: {frame_bytes}"
    );
    for (line, (scn, key)) in events.iter().zip(&expected) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["scn"], *scn, "{line}");
        match key {
            Some(Key::Int(k)) => {
                assert_eq!(v["key"], *k, "{line}");
                if v.get("decode_error").is_none() {
                    assert_eq!(v["payload"], json!({ "id": k * 7 }), "{line}");
                }
            }
            _ => assert_eq!(v["opcode"], "end_of_window", "{line}"),
        }
    }
    // The same answer rendered on one thread: the same bytes.
    relay.service.split_json_rendering(false);
    let one_thread = get(
        relay.addr,
        "/v1/stream?buffer=shop&format=json&max_bytes=4194304",
    )
    .await;
    relay.service.split_json_rendering(true);
    assert!(
        one_thread.body == big.body,
        "one thread and two answer the same bytes"
    );
    // The same frames in answers under 64 KiB: the same lines.
    let mut cp = Checkpoint::beginning();
    let mut small = Vec::new();
    loop {
        let resp = get(
            relay.addr,
            &format!(
                "/v1/stream?buffer=shop&format=json&max_bytes=16384&checkpoint={}",
                enc(&cp.to_json())
            ),
        )
        .await;
        assert_eq!(resp.status, 200);
        let body = String::from_utf8(resp.body.clone()).unwrap();
        let mut lines: Vec<&str> = body.lines().collect();
        let last: Value = serde_json::from_str(lines.pop().unwrap()).unwrap();
        small.extend(lines.into_iter().map(str::to_owned));
        cp = serde_json::from_value(last["checkpoint"].clone()).unwrap();
        if last["more"] == false {
            break;
        }
    }
    assert_eq!(small.len(), events.len());
    for (i, (a, b)) in small.iter().zip(events).enumerate() {
        assert_eq!(a, b, "line {i}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn byte_budget_splits_windows_and_resumes_exactly() {
    let mut relay = Relay::start(1 << 20).await;
    let mut expected = Vec::new();
    for w in 1..=5u64 {
        let events: Vec<Event> = (0..7)
            .map(|i| event(1 + (i % 4) as u16, (w * 100 + i) as i64, 100))
            .collect();
        append_window(&mut relay.shop, Scn::new(w * 3), w, &events);
        for e in &events {
            expected.push((w * 3, Key::clone(&e.key)));
        }
        expected.push((w * 3, Key::None));
    }
    let frame_len = event(1, 1, 100).to_frame().len();
    let budget = frame_len * 3;
    let mut cp = Checkpoint::beginning();
    let mut got = Vec::new();
    let mut responses = 0;
    loop {
        let resp = get(
            relay.addr,
            &format!(
                "/v1/stream?buffer=shop&max_bytes={budget}&checkpoint={}",
                enc(&cp.to_json())
            ),
        )
        .await;
        assert_eq!(resp.status, 200);
        assert!(resp.body.len() <= budget, "{} > {budget}", resp.body.len());
        let events = resp.events();
        if events.is_empty() {
            assert_eq!(resp.header("x-databus-more"), "false");
            break;
        }
        got.extend(events.iter().map(|e| (e.scn.get(), e.key.clone())));
        let next = resp.checkpoint();
        if resp.header("x-databus-more") == "true"
            && !events.last().unwrap().opcode.is_end_of_window()
        {
            assert!(next.is_mid_window(), "{next:?}");
        }
        cp = next;
        responses += 1;
        assert!(responses < 100);
    }
    assert_eq!(got, expected);
    assert!(responses >= 5 * 8 / 3);

    // A budget smaller than one event still returns one event.
    let resp = get(relay.addr, "/v1/stream?buffer=shop&max_bytes=1").await;
    assert_eq!(resp.events().len(), 1);
    let cp = resp.checkpoint();
    assert_eq!(cp.window_scn, Scn::new(3));
    assert_eq!(cp.window_offset, Some(1));
    relay.stop().await;
}

#[tokio::test]
async fn scn_not_found_carries_the_buffer_range() {
    // 1 MiB (the smallest) store filled with ~100 KiB windows: the oldest get evicted.
    let mut relay = Relay::start(1 << 20).await;
    for w in 1..=20u64 {
        append_window(
            &mut relay.shop,
            Scn::new(w * 10),
            w,
            &[event(1, w as i64, 100_000)],
        );
    }
    let stats = relay.shop_buffer.stats();
    let prev = stats.prev_scn.expect("windows were evicted").get();
    let min = stats.min_scn.unwrap().get();
    assert_eq!(stats.max_scn, Some(Scn::new(200)));

    let cp = enc(&Checkpoint::after(Scn::new(prev - 10)).to_json());
    let resp = get(
        relay.addr,
        &format!("/v1/stream?buffer=shop&checkpoint={cp}"),
    )
    .await;
    let body = assert_error(&resp, 410, "scn_not_found");
    assert_eq!(body["requested_scn"], prev - 10);
    assert_eq!(body["min_scn"], min);
    assert_eq!(body["max_scn"], 200);
    assert_eq!(body["prev_scn"], prev);
    assert_eq!(body["buffer"], "shop");

    // From the beginning after eviction: also gone.
    assert_error(
        &get(relay.addr, "/v1/stream?buffer=shop").await,
        410,
        "scn_not_found",
    );
    // Exactly prev_scn: nothing was missed, served from the oldest window.
    let cp = enc(&Checkpoint::after(Scn::new(prev)).to_json());
    let resp = get(
        relay.addr,
        &format!("/v1/stream?buffer=shop&checkpoint={cp}&max_bytes=1"),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.events()[0].scn.get(), min);
    relay.stop().await;
}

#[tokio::test]
async fn long_poll_is_woken_by_the_writer_and_times_out_at_its_deadline() {
    let mut relay = Relay::start(1 << 20).await;
    append_window(&mut relay.shop, Scn::new(1), 1, &[]);
    let cp = enc(&Checkpoint::after(Scn::new(1)).to_json());

    // Timeout: nothing arrives, an empty answer with the same checkpoint, after the wait.
    let started = Instant::now();
    let resp = get(
        relay.addr,
        &format!("/v1/stream?buffer=shop&wait_ms=300&checkpoint={cp}"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(resp.checkpoint(), Checkpoint::after(Scn::new(1)));

    // Wake: the request is parked before the writer publishes.
    let addr = relay.addr;
    let path = format!("/v1/stream?buffer=shop&wait_ms=60000&checkpoint={cp}");
    let poll = tokio::spawn(async move { get(addr, &path).await });
    let store = relay.shop_buffer.clone();
    wait_until("the long poll to park", || store.waiting_readers() == 1).await;
    append_window(&mut relay.shop, Scn::new(2), 2, &[event(3, 5, 10)]);
    let resp = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("woken long before its 60 s deadline")
        .unwrap();
    assert_eq!(resp.events().len(), 2);
    assert_eq!(resp.checkpoint(), Checkpoint::after(Scn::new(2)));

    // A long poll with a source filter that the new window does not match still returns the window's end
    // marker (time advances for the consumer).
    let cp = enc(&Checkpoint::after(Scn::new(2)).to_json());
    let path = format!("/v1/stream?sources=1&wait_ms=60000&checkpoint={cp}");
    let poll = tokio::spawn(async move { get(addr, &path).await });
    wait_until("the long poll to park", || store.waiting_readers() == 1).await;
    append_window(&mut relay.shop, Scn::new(3), 3, &[event(3, 6, 10)]);
    let resp = poll.await.unwrap();
    let events = resp.events();
    assert_eq!(events.len(), 1);
    assert!(events[0].opcode.is_end_of_window());
    relay.stop().await;
}

/// Filtered streams from a buffer with a side index (MOD, source lists, per-source MOD, and RANGE, which
/// scans frames) in small responses, with and without coalesced markers: every client gets exactly the
/// events its filter accepts, in order, and a window boundary for the last window.
#[tokio::test]
async fn filtered_streams_from_the_side_index_get_exactly_their_events() {
    const WINDOWS: u64 = 60;
    let mut relay = Relay::start(1 << 20).await;
    let mut written: Vec<Event> = Vec::new();
    for w in 1..=WINDOWS {
        let events: Vec<Event> = (0..(w % 7))
            .map(|i| {
                let mut e = event(1 + ((w * 3 + i) % 4) as u16, (w * 100 + i) as i64 - 900, 30);
                if i % 4 == 1 {
                    e.key = Key::Bytes(format!("k{w}.{i}").into_bytes());
                }
                if w % 13 == 0 && i == 0 {
                    e.opcode = Opcode::Truncate;
                    e.key = Key::None;
                }
                e.scn = Scn::new(w);
                e
            })
            .collect();
        append_window(&mut relay.shop, Scn::new(w), w, &events);
        written.extend(events);
    }
    assert!(relay.shop_buffer.has_side_index());
    for query in [
        "partition=mod:5:2",
        "partition=mod:3:0&empty_windows=coalesce",
        "sources=1,3&partition.3=mod:2:1",
        "sources=2,4&partition=mod:8:1-5&empty_windows=coalesce",
        "partition=range:100:0-40",
    ] {
        let filter =
            Filter::new(&FilterSpec::from_query(query.split("&empty").next().unwrap()).unwrap());
        let want: Vec<(u64, u16, Key)> = written
            .iter()
            .filter(|e| filter.matches_event(e))
            .map(|e| (e.scn.get(), e.source.get(), e.key.clone()))
            .collect();
        let mut cp = Checkpoint::beginning();
        let mut got = Vec::new();
        let mut windows = Vec::new();
        while cp.prev_scn != Some(Scn::new(WINDOWS)) {
            let resp = get(
                relay.addr,
                &format!(
                    "/v1/stream?buffer=shop&{query}&max_bytes=300&checkpoint={}",
                    enc(&cp.to_json())
                ),
            )
            .await;
            assert_eq!(
                resp.status,
                200,
                "{query}: {}",
                String::from_utf8_lossy(&resp.body)
            );
            for e in resp.events() {
                if e.opcode.is_end_of_window() {
                    windows.push(e.scn.get());
                } else {
                    got.push((e.scn.get(), e.source.get(), e.key));
                }
            }
            let next = resp.checkpoint();
            assert_ne!(next, cp, "{query}: no progress");
            cp = next;
        }
        assert_eq!(got, want, "{query}");
        assert!(!want.is_empty(), "{query}");
        assert_eq!(windows.last(), Some(&WINDOWS), "{query}");
        if !query.contains("coalesce") {
            assert_eq!(windows, (1..=WINDOWS).collect::<Vec<_>>(), "{query}");
        }
    }
    relay.stop().await;
}

/// 200 clients long-poll at once, each with its own MOD bucket of 200: each receives exactly the events
/// of its bucket (integer and byte keys), in commit order, and every window boundary.
#[tokio::test]
async fn many_concurrent_long_polling_clients_each_get_their_partition_in_order() {
    const CLIENTS: u32 = 200;
    const WINDOWS: u64 = 40;
    const PER_WINDOW: u64 = 50;
    let mut relay = Relay::start(64 << 20).await;
    let addr = relay.addr;
    let mut clients = Vec::new();
    for bucket in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let mut cp = Checkpoint::beginning();
            let mut got: Vec<(u64, Key)> = Vec::new();
            let mut windows = Vec::new();
            while cp.prev_scn != Some(Scn::new(WINDOWS)) {
                let resp = get(
                    addr,
                    &format!(
                        "/v1/stream?buffer=shop&partition=mod:{CLIENTS}:{bucket}&wait_ms=30000&max_bytes=2000&checkpoint={}",
                        enc(&cp.to_json())
                    ),
                )
                .await;
                assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
                for e in resp.events() {
                    if e.opcode.is_end_of_window() {
                        windows.push(e.scn.get());
                    } else {
                        got.push((e.scn.get(), e.key));
                    }
                }
                cp = resp.checkpoint();
            }
            (bucket, got, windows)
        }));
    }
    let store = relay.shop_buffer.clone();
    wait_until("every client to park", || {
        store.waiting_readers() == CLIENTS as usize
    })
    .await;
    let buckets = NonZeroU32::new(CLIENTS).unwrap();
    let mut expected: BTreeMap<u32, Vec<(u64, Key)>> = BTreeMap::new();
    for w in 1..=WINDOWS {
        let events: Vec<Event> = (0..PER_WINDOW)
            .map(|i| {
                let mut e = event(1 + ((w + i) % 4) as u16, (w * 1000 + i) as i64 - 20_000, 20);
                if i % 3 == 0 {
                    e.key = Key::Bytes(format!("user-{w}-{i}").into_bytes());
                }
                e
            })
            .collect();
        for e in &events {
            expected
                .entry(bucket_of(e.key.as_ref(), buckets))
                .or_default()
                .push((w, e.key.clone()));
        }
        append_window(&mut relay.shop, Scn::new(w), w, &events);
        tokio::task::yield_now().await;
    }
    let mut total = 0;
    for client in clients {
        let (bucket, got, windows) = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("client finishes")
            .unwrap();
        assert_eq!(
            got,
            expected.get(&bucket).cloned().unwrap_or_default(),
            "bucket {bucket}"
        );
        assert_eq!(windows, (1..=WINDOWS).collect::<Vec<_>>());
        total += got.len();
    }
    assert_eq!(total as u64, WINDOWS * PER_WINDOW);
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_and_drains() {
    let mut relay = Relay::start(1 << 20).await;
    append_window(&mut relay.shop, Scn::new(1), 1, &[]);
    let cp = enc(&Checkpoint::after(Scn::new(1)).to_json());
    let addr = relay.addr;
    let path = format!("/v1/stream?buffer=shop&wait_ms=60000&checkpoint={cp}");
    let poll = tokio::spawn(async move { get(addr, &path).await });
    let store = relay.shop_buffer.clone();
    wait_until("the long poll to park", || store.waiting_readers() == 1).await;
    // `stop` allows 10 s for the drain; the poll would otherwise wait 60 s.
    relay.stop().await;
    let resp = poll.await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());
    assert_eq!(resp.checkpoint(), Checkpoint::after(Scn::new(1)));
}

#[tokio::test]
async fn stream_requests_beyond_the_limit_are_refused_as_overloaded() {
    let mut relay = Relay::start_with(
        1 << 20,
        HttpSettings {
            max_concurrent_streams: 2,
            ..HttpSettings::defaults::<RelayHttp>()
        },
    )
    .await;
    append_window(&mut relay.shop, Scn::new(1), 1, &[]);
    let cp = enc(&Checkpoint::after(Scn::new(1)).to_json());
    let addr = relay.addr;
    let mut polls = Vec::new();
    for _ in 0..2 {
        let path = format!("/v1/stream?buffer=shop&wait_ms=30000&checkpoint={cp}");
        polls.push(tokio::spawn(async move { get(addr, &path).await }));
    }
    let store = relay.shop_buffer.clone();
    wait_until("both long polls to park", || store.waiting_readers() == 2).await;
    let body = assert_error(
        &get(addr, "/v1/stream?buffer=shop").await,
        503,
        "overloaded",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_streams")
    );
    // Other endpoints still answer.
    assert_eq!(get(addr, "/v1/status").await.status, 200);
    append_window(&mut relay.shop, Scn::new(2), 2, &[]);
    for poll in polls {
        assert_eq!(poll.await.unwrap().status, 200);
    }
    // Permits are released when requests end.
    assert_eq!(get(addr, "/v1/stream?buffer=shop").await.status, 200);
    relay.stop().await;
}

#[tokio::test]
async fn two_buffers_are_independent() {
    let mut relay = Relay::start(1 << 20).await;
    append_window(&mut relay.shop, Scn::new(100), 1, &[event(1, 1, 1)]);
    append_window(&mut relay.other, Scn::new(7), 1, &[event(9, 2, 1)]);
    let resp = get(relay.addr, "/v1/stream?sources=9").await;
    let events = resp.events();
    assert_eq!(events[0].scn, Scn::new(7));
    assert_eq!(events[0].source, SourceId::new(9));
    let resp = get(relay.addr, "/v1/stream?buffer=shop").await;
    assert_eq!(resp.events()[0].scn, Scn::new(100));
    relay.stop().await;
}
