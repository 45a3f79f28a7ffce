//! The whole relay against a real MariaDB (databus-testkit): rows committed in MariaDB reach an HTTP
//! client as windows, decoded; a second relay chained on the first serves the same frames; a restarted
//! relay resumes after its persisted SCN, and consumers resume from their checkpoints without loss or
//! duplicates.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Relay, Resp, enc, wait_status, wait_streaming};
use databus_core::{Checkpoint, Event, Key, Opcode, Scn};
use databus_testkit::{MariaDb, MariaDbOptions};
use serde_json::{Value, json};
use tokio::time::Instant;

/// GET over loopback; the relay answers with a length, never chunked.
async fn get(addr: SocketAddr, path: &str) -> Resp {
    let resp = common::get(addr, path).await;
    assert!(!resp.chunked, "{path}: a chunked response");
    resp
}

async fn start_relay(db: &MariaDb, state_dir: &Path, password_file: &Path, history: u64) -> Relay {
    let relay = start_relay_unchecked(db, state_dir, password_file, history).await;
    // Wait until ingest is connected, so rows committed from now on are captured.
    wait_streaming(relay.addr, Instant::now() + Duration::from_secs(60)).await;
    relay
}

async fn start_relay_unchecked(
    db: &MariaDb,
    state_dir: &Path,
    password_file: &Path,
    history: u64,
) -> Relay {
    let url = format!(
        "mysql://relay@127.0.0.1:{}/?max_allowed_packet=1073741824&prefer_socket=false",
        db.port()
    );
    Relay::from_toml(&format!(
        r#"
state_dir = {state:?}
[http]
max_wait = "30s"
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = {url:?}, password_file = {pw:?}, server_id = 4242 }}
buffer_size = "8MiB"
history_transactions = {history}
tables = [
    {{ id = 1, name = "orders", table = "shop.orders" }},
    {{ id = 2, name = "customers", table = "shop.customers" }},
]
"#,
        state = state_dir.display().to_string(),
        pw = password_file.display().to_string(),
    ))
    .await
}

async fn start_chained(upstream: SocketAddr, state_dir: &Path) -> Relay {
    Relay::from_toml(&format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
upstream = {{ url = "http://{upstream}" }}
buffer_size = "8MiB"
tables = [
    {{ id = 1, name = "orders", table = "shop.orders" }},
    {{ id = 2, name = "customers", table = "shop.customers" }},
]
"#,
        state = state_dir.display().to_string(),
    ))
    .await
}

/// Follows the stream from `cp` until `until` windows have been seen (heartbeat windows included).
async fn follow(
    addr: SocketAddr,
    mut cp: Checkpoint,
    extra: &str,
    until: impl Fn(&[Event]) -> bool,
) -> (Vec<Event>, Checkpoint) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while !until(&events) {
        assert!(Instant::now() < deadline, "timed out; got {events:?}");
        let resp = get(
            addr,
            &format!(
                "/v1/stream?wait_ms=5000&max_bytes=1000{extra}&checkpoint={}",
                enc(&cp.to_json())
            ),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        events.extend(resp.events());
        cp = Checkpoint::from_json(&resp.headers["x-databus-checkpoint"]).unwrap();
    }
    (events, cp)
}

fn data(events: &[Event]) -> Vec<(u64, u16, Opcode, Key)> {
    events
        .iter()
        .filter(|e| !e.opcode.is_control())
        .map(|e| (e.scn.get(), e.source.get(), e.opcode, e.key.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_flow_from_mariadb_to_http_clients_and_survive_a_relay_restart() {
    let mut db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total DECIMAL(10,2))",
        "CREATE TABLE shop.customers (name VARCHAR(32) PRIMARY KEY, age INT)",
        "CREATE TABLE shop.ignored (id INT PRIMARY KEY)",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "s3cr@t:pw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "s3cr@t:pw\n").unwrap();
    let state_dir = dir.path().join("state");

    let relay = start_relay(&db, &state_dir, &password_file, 0).await;
    // The relay started from the source's current position: a consumer starts after it. (A consumer from
    // the very beginning would be told to bootstrap; see the end of this test.)
    let gtid = db.gtid_binlog_pos().await.unwrap();
    let start_scn: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();
    // One multi-table transaction, then an update and a delete, then a transaction on an uncaptured table.
    db.exec_tx(&[
        "INSERT INTO shop.orders VALUES (1, 'first', 10.50), (2, 'second', -3.25)",
        "INSERT INTO shop.customers VALUES ('ada', 36)",
    ])
    .await
    .unwrap();
    db.exec(&["UPDATE shop.orders SET note = 'changed' WHERE id = 2"])
        .await
        .unwrap();
    db.exec(&["DELETE FROM shop.orders WHERE id = 1"])
        .await
        .unwrap();
    db.exec(&["INSERT INTO shop.ignored VALUES (5)"])
        .await
        .unwrap();

    let windows = |events: &[Event]| {
        events
            .iter()
            .filter(|e| e.opcode.is_end_of_window())
            .count()
    };
    let start = Checkpoint::after(Scn::new(start_scn));
    let (events, cp) = follow(relay.addr, start.clone(), "", |e| windows(e) >= 4).await;
    let d = data(&events);
    let scn1 = d[0].0;
    assert_eq!(scn1, start_scn + 1);
    let resp = get(relay.addr, "/v1/stream").await;
    assert_eq!(
        resp.status, 410,
        "from the beginning: windows before the relay started are unknown"
    );
    assert_eq!(
        d,
        vec![
            (scn1, 1, Opcode::Upsert, Key::Int(1)),
            (scn1, 1, Opcode::Upsert, Key::Int(2)),
            (scn1, 2, Opcode::Upsert, d[2].3.clone()),
            (scn1 + 1, 1, Opcode::Upsert, Key::Int(2)),
            (scn1 + 2, 1, Opcode::Delete, Key::Int(1)),
        ]
    );
    assert!(matches!(d[2].3, Key::Bytes(_)));
    // Whole windows: each transaction is one window, closed by its end marker; the uncaptured table's
    // transaction is a heartbeat window.
    let shape: Vec<(u64, bool)> = events
        .iter()
        .map(|e| (e.scn.get(), e.opcode.is_end_of_window()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (scn1, false),
            (scn1, false),
            (scn1, false),
            (scn1, true),
            (scn1 + 1, false),
            (scn1 + 1, true),
            (scn1 + 2, false),
            (scn1 + 2, true),
            (scn1 + 3, true),
        ]
    );
    assert_eq!(cp, Checkpoint::after(Scn::new(scn1 + 3)));

    // JSON with payloads decoded through the registry, and a source filter.
    let resp = get(
        relay.addr,
        &format!(
            "/v1/stream?sources=1&format=json&checkpoint={}",
            enc(&start.to_json())
        ),
    )
    .await;
    let text = String::from_utf8(resp.body).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["payload"],
        json!({"id": 1, "note": "first", "total": "10.50"})
    );
    assert_eq!(
        lines[1]["payload"],
        json!({"id": 2, "note": "second", "total": "-3.25"})
    );
    assert_eq!(lines[2]["opcode"], "end_of_window");
    assert_eq!(lines[3]["payload"]["note"], "changed");
    assert_eq!(lines[5]["opcode"], "delete");
    assert_eq!(lines[5]["payload"]["id"], 1);
    assert_eq!(
        lines.last().unwrap()["checkpoint"],
        serde_json::to_value(Checkpoint::after(Scn::new(scn1 + 3))).unwrap()
    );
    // Schemas are served per source and by id.
    let resp = get(relay.addr, "/v1/schemas?source=orders").await;
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    let id = body["schemas"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["schemas"][0]["table"], "shop.orders");
    assert_eq!(lines[0]["schema"], id.as_str());
    let resp = get(relay.addr, &format!("/v1/schemas/{id}")).await;
    assert_eq!(resp.status, 200);

    // A second relay chained on the first serves the same frames and decodes the same payloads.
    let chained = start_chained(relay.addr, &dir.path().join("chained-state")).await;
    wait_status(
        chained.addr,
        Instant::now() + Duration::from_secs(30),
        "chain never caught up",
        |body| body["buffers"][0]["max_scn"].as_u64() == Some(scn1 + 3),
    )
    .await;
    for query in ["", "&format=json", "&partition=mod:2:1"] {
        let path = format!("/v1/stream?checkpoint={}{query}", enc(&start.to_json()));
        let (a, b) = (get(relay.addr, &path).await, get(chained.addr, &path).await);
        assert_eq!((a.status, b.status), (200, 200));
        assert_eq!(a.body, b.body, "{query}");
        assert_eq!(
            a.headers["x-databus-checkpoint"],
            b.headers["x-databus-checkpoint"]
        );
    }
    chained.stop().await;
    relay.stop().await;

    // The relay persisted its last SCN.
    let state: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("shop.state.json")).unwrap()).unwrap();
    assert_eq!(state["last_scn"], scn1 + 3);

    // Rows committed while the relay is down are picked up after the restart, after the persisted SCN.
    db.exec(&["INSERT INTO shop.orders VALUES (3, 'while down', 1.00)"])
        .await
        .unwrap();
    // Restart with a history refill of 2 transactions: the relay re-reads them from the binlog.
    let relay = start_relay(&db, &state_dir, &password_file, 2).await;
    db.exec(&["INSERT INTO shop.orders VALUES (4, 'after restart', 2.00)"])
        .await
        .unwrap();
    // A consumer resumes from its checkpoint: exactly the new windows, no loss, no duplicate.
    let (events, cp2) = follow(relay.addr, cp.clone(), "&sources=1", |e| data(e).len() >= 2).await;
    assert_eq!(
        data(&events),
        vec![
            (scn1 + 4, 1, Opcode::Upsert, Key::Int(3)),
            (scn1 + 5, 1, Opcode::Upsert, Key::Int(4)),
        ]
    );
    assert_eq!(cp2, Checkpoint::after(Scn::new(scn1 + 5)));
    // A consumer from before the restart's floor must bootstrap: the new buffer never held those windows.
    let old = Checkpoint::after(Scn::new(scn1));
    let resp = get(
        relay.addr,
        &format!("/v1/stream?checkpoint={}", enc(&old.to_json())),
    )
    .await;
    assert_eq!(resp.status, 410, "{}", String::from_utf8_lossy(&resp.body));
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"], "scn_not_found");
    assert_eq!(body["prev_scn"], scn1 + 1);
    // The refilled history is served again: windows scn1+2 (the delete) and scn1+3 (a heartbeat).
    let refilled = Checkpoint::after(Scn::new(scn1 + 1));
    let (events, _) = follow(relay.addr, refilled, "&sources=1", |e| data(e).len() >= 3).await;
    assert_eq!(
        data(&events),
        vec![
            (scn1 + 2, 1, Opcode::Delete, Key::Int(1)),
            (scn1 + 4, 1, Opcode::Upsert, Key::Int(3)),
            (scn1 + 5, 1, Opcode::Upsert, Key::Int(4)),
        ]
    );
    assert_eq!(events[1].scn.get(), scn1 + 2);
    assert!(events[1].opcode.is_end_of_window());
    assert_eq!(events[2].scn.get(), scn1 + 3);
    assert!(events[2].opcode.is_end_of_window());

    // MariaDB restarts under the running relay: ingest reconnects and resumes after its last window.
    db.restart().await.unwrap();
    db.exec(&["INSERT INTO shop.orders VALUES (5, 'after db restart', 3.00)"])
        .await
        .unwrap();
    let (events, _) = follow(relay.addr, cp2, "&sources=1", |e| !data(e).is_empty()).await;
    let d = data(&events);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].3, Key::Int(5));
    assert!(d[0].0 > scn1 + 5);
    relay.stop().await;
}

/// A definite source error (binlog_format=STATEMENT) stops that source's ingest with the fix in the
/// status, turns /health to 503, and the relay keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_source_fails_with_its_fix_in_status_and_health() {
    let db = MariaDb::start(MariaDbOptions::default().arg("--binlog-format=STATEMENT"))
        .await
        .unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total DECIMAL(10,2))",
        "CREATE TABLE shop.customers (name VARCHAR(32) PRIMARY KEY, age INT)",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw").unwrap();
    let relay = start_relay_unchecked(&db, &dir.path().join("state"), &password_file, 0).await;
    let body = wait_status(
        relay.addr,
        Instant::now() + Duration::from_secs(60),
        "never failed",
        |body| body["buffers"][0]["ingest"]["state"] == "failed",
    )
    .await;
    let error = body["buffers"][0]["ingest"]["last_error"].as_str().unwrap();
    assert!(error.contains("binlog_format"), "{error}");
    let health = get(relay.addr, "/health").await;
    assert_eq!(health.status, 503);
    let sources = get(relay.addr, "/v1/sources").await;
    assert_eq!(sources.status, 200);
    relay.stop().await;
}
