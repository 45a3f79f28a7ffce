//! End to end against a real MariaDB: relay (binlog connector) -> bootstrap producer/applier (SQLite
//! file) seeded from the source -> a new replica bootstraps from a snapshot while writes continue,
//! then follows the relay; it ends identical to the source, row by row.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databus_bootstrap::applier::{ApplierSettings, run_applier};
use databus_bootstrap::producer::{ProducerSettings, run_producer};
use databus_bootstrap::relay_client::RelayClient;
use databus_bootstrap::seed::{SeedSettings, SeedTable, dump_table, seed};
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::{BootstrapStore, SqliteStore};
use databus_core::{Checkpoint, ConsumptionMode, EventView, Key, Opcode, SchemaId, Scn, SourceId};
use databus_relay::RelayConfig;
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type State = BTreeMap<(u16, Key), (SchemaId, Vec<u8>)>;

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn apply(state: &mut State, body: &[u8]) -> Option<Scn> {
    let mut last_end = None;
    for v in EventView::parse_all(body).unwrap() {
        if v.opcode().is_end_of_window() {
            last_end = Some(v.scn());
            continue;
        }
        let k = (v.source().get(), v.key().to_owned());
        match v.opcode() {
            Opcode::Delete => {
                state.remove(&k);
            }
            _ => {
                state.insert(k, (v.schema(), v.payload().to_vec()));
            }
        }
    }
    last_end
}

async fn start_relay(db: &MariaDb, dir: &std::path::Path) -> (SocketAddr, CancellationToken) {
    let pw = dir.join("password");
    std::fs::write(&pw, "relaypw\n").unwrap();
    let url = format!("mysql://relay@127.0.0.1:{}/?prefer_socket=false", db.port());
    let text = format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = {url:?}, password_file = {pw:?}, server_id = 4343 }}
buffer_size = "32MiB"
tables = [
    {{ id = 1, name = "orders", table = "shop.orders" }},
    {{ id = 2, name = "customers", table = "shop.customers" }},
]
"#,
        state = dir.join("relay").display().to_string(),
        pw = pw.display().to_string(),
    );
    let config = RelayConfig::from_toml(&text).unwrap().validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    let client = RelayClient::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get("/v1/status").await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["buffers"][0]["ingest"]["state"] == "streaming" {
            break;
        }
        assert!(Instant::now() < deadline, "relay never streamed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_replica_from_snapshot_while_writes_continue_matches_the_source() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total DECIMAL(10,2), \
         created DATETIME(3), flag TINYINT UNSIGNED NOT NULL DEFAULT 0)",
        "CREATE TABLE shop.customers (name VARCHAR(32) PRIMARY KEY, age INT)",
    ])
    .await
    .unwrap();
    // Rows that exist before the relay starts: only a seed can bring them.
    for chunk in 0..10 {
        let values: Vec<String> = (0..200)
            .map(|i| {
                let id = chunk * 200 + i;
                format!(
                    "({id}, 'note {id}', {id}.25, '2024-01-02 03:04:05.{:03}', {})",
                    id % 1000,
                    id % 3
                )
            })
            .collect();
        db.exec(&[&format!(
            "INSERT INTO shop.orders VALUES {}",
            values.join(",")
        )])
        .await
        .unwrap();
    }
    db.exec(&["INSERT INTO shop.customers VALUES ('ada', 36), ('bob', 41), ('cy', NULL)"])
        .await
        .unwrap();
    db.create_user_with_grants("relay", "relaypw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (relay, relay_stop) = start_relay(&db, dir.path()).await;

    // Writes continue for the whole test.
    let writer_stop = CancellationToken::new();
    let url = db.url();
    let writer = {
        let stop = writer_stop.clone();
        let db_url = url.clone();
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&db_url).unwrap())
                .await
                .unwrap();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let id = (n * 7919) % 2600;
                let stmt = match n % 5 {
                    0 => format!("DELETE FROM shop.orders WHERE id = {id}"),
                    1 => format!(
                        "INSERT INTO shop.orders (id, note) VALUES ({id}, 'w{n}') ON DUPLICATE KEY UPDATE note = 'w{n}', total = {n}.5"
                    ),
                    2 => format!(
                        "UPDATE shop.orders SET flag = flag + 1, created = NOW(3) WHERE id = {id}"
                    ),
                    3 => format!(
                        "INSERT INTO shop.customers VALUES ('c{}', {n}) ON DUPLICATE KEY UPDATE age = {n}",
                        n % 40
                    ),
                    _ => format!("UPDATE shop.orders SET note = NULL WHERE id = {id}"),
                };
                conn.query_drop(stmt).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };

    // Seed, interrupted after the first chunks, then resumed.
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("shop.sqlite")).unwrap());
    let tables = vec![
        SeedTable {
            source: SourceId::new(1),
            database: "shop".into(),
            table: "orders".into(),
        },
        SeedTable {
            source: SourceId::new(2),
            database: "shop".into(),
            table: "customers".into(),
        },
    ];
    let settings = SeedSettings {
        url: url.clone(),
        password: None,
        tables: tables.clone(),
        chunk_rows: 300,
    };
    // The first run "crashes" (panics) right after its second chunk was stored.
    let first = {
        let store = store.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            seed(store, &settings, |t| {
                assert!(t.rows < 600, "simulated crash after {} rows", t.rows);
            })
            .await
        })
    };
    assert!(first.await.unwrap_err().is_panic());
    let progress = store
        .seed_progress()
        .unwrap()
        .expect("an interrupted seed left its progress");
    // Two chunks of 300 orders were stored (the writer may have deleted some ids below 600).
    let token: serde_json::Value = serde_json::from_str(&progress.token).unwrap();
    assert_eq!(token["table"], 0, "{token}");
    let after = token["after"][0].as_u64().unwrap();
    assert!((599..700).contains(&after), "{token}");
    let report = seed(store.clone(), &settings, |_| {}).await.unwrap();
    assert!(report.resumed);
    assert!(
        report.rows < 2003,
        "the resumed run loads only the rest ({} rows)",
        report.rows
    );
    assert_eq!(
        report.scn, progress.scn,
        "a resumed seed finishes at its first snapshot's SCN"
    );
    assert!(store.snapshot_status().unwrap().seeded);

    // Producer, applier and server.
    let stop = CancellationToken::new();
    let mut ps = ProducerSettings::new(format!("http://{relay}"));
    ps.wait = Duration::from_millis(200);
    let producer = tokio::spawn(run_producer(store.clone(), ps, stop.clone()));
    let applier = tokio::spawn(run_applier(
        store.clone(),
        ApplierSettings::default(),
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bs_addr = listener.local_addr().unwrap();
    let service = BootstrapService::new(store.clone(), ServeSettings::default());
    tokio::spawn(databus_bootstrap::http::serve(
        service,
        listener,
        stop.clone(),
    ));

    // A new replica: full snapshot (small pages, writes continuing), then the relay.
    let bs = RelayClient::new(&format!("http://{bs_addr}"), Duration::from_secs(30)).unwrap();
    let mut state = State::new();
    let mut cp = Checkpoint::beginning();
    cp.start_bootstrap(None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut paused = false;
    while cp.mode != ConsumptionMode::Online {
        assert!(Instant::now() < deadline, "bootstrap did not finish");
        let r = bs
            .get(&format!(
                "/v1/bootstrap/stream?max_bytes=4000&checkpoint={}",
                enc(&cp.to_json())
            ))
            .await
            .unwrap();
        if r.status == 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        apply(&mut state, &r.body);
        cp = Checkpoint::from_json(r.header("x-databus-checkpoint").unwrap()).unwrap();
        // A slow consumer: after its first page, the source changes at least 25 more times (and the
        // producer logged them) before it goes on.
        if !paused {
            paused = true;
            let want = Some(Scn::new(report.scn.get() + 25));
            while store.log_status().unwrap().last_scn < want {
                assert!(Instant::now() < deadline, "writes did not reach the log");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(
        cp.window_scn.get() > report.scn.get() + 20,
        "catch-up replayed writes made during the snapshot: {cp:?}, seed {report:?}"
    );
    writer_stop.cancel();
    let writes = writer.await.unwrap();
    assert!(
        writes >= 25,
        "writes continued during the bootstrap ({writes})"
    );
    let final_gtid = db.gtid_binlog_pos().await.unwrap();
    let final_scn: u64 = final_gtid.rsplit('-').next().unwrap().parse().unwrap();
    // Follow the relay from the bootstrap's target until the source's last transaction.
    let relay_client =
        RelayClient::new(&format!("http://{relay}"), Duration::from_secs(30)).unwrap();
    let mut follower =
        relay_client.follower("shop", cp.clone(), 1 << 20, Duration::from_millis(1000));
    while cp.window_scn.get() < final_scn || cp.window_offset.is_some() {
        assert!(
            Instant::now() < deadline,
            "relay catch-up did not finish at {cp:?}"
        );
        match relay_client.stream(&mut follower).await.unwrap() {
            databus_bootstrap::relay_client::StreamAnswer::Data {
                body, checkpoint, ..
            } => {
                apply(&mut state, &body);
                cp = checkpoint;
            }
            other => panic!("relay answered {other:?}"),
        }
    }
    // Row by row: the replica equals the source.
    let mut expected = State::new();
    for t in &tables {
        for (key, schema, payload) in dump_table(&url, None, t).await.unwrap() {
            expected.insert((t.source.get(), key), (schema, payload));
        }
    }
    eprintln!(
        "seed at SCN {} ({} rows after resume), {writes} writes, replica at SCN {}, {} rows",
        report.scn,
        report.rows,
        cp.window_scn,
        expected.len()
    );
    assert!(expected.len() > 1500);
    assert_eq!(state.len(), expected.len());
    for (k, v) in &expected {
        assert_eq!(state.get(k), Some(v), "row {k:?}");
    }
    assert_eq!(state, expected);
    // The seed's writer schemas are served by the bootstrap server (the relay may never have seen them).
    let (_, (schema, _)) = expected.iter().next().unwrap();
    let r = bs
        .get(&format!("/v1/schemas/{:016x}", schema.get()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["avro"]["type"], "record", "{v}");
    let r = bs.get("/v1/schemas/00000000000000ff").await.unwrap();
    assert_eq!(
        (r.status, r.header("x-databus-error")),
        (404, Some("schema_not_found"))
    );
    stop.cancel();
    producer.await.unwrap().unwrap();
    applier.await.unwrap().unwrap();
    relay_stop.cancel();
}

/// `format=json` renders every event as the relay does: seeded rows decode with the seed's writer
/// schema (from the bootstrap database), captured rows with the relay's (fetched from the relay), and
/// a captured event's line equals the relay's own line for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_renders_seeded_and_captured_rows_like_the_relay() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64))",
        "CREATE TABLE shop.customers (name VARCHAR(32) PRIMARY KEY, age INT)",
        "INSERT INTO shop.orders VALUES (1, 'seeded one'), (2, 'seeded two')",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "relaypw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (relay, relay_stop) = start_relay(&db, dir.path()).await;
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("shop.sqlite")).unwrap());
    let settings = SeedSettings {
        url: db.url(),
        password: None,
        tables: vec![
            SeedTable {
                source: SourceId::new(1),
                database: "shop".into(),
                table: "orders".into(),
            },
            SeedTable {
                source: SourceId::new(2),
                database: "shop".into(),
                table: "customers".into(),
            },
        ],
        chunk_rows: 100,
    };
    let report = seed(store.clone(), &settings, |_| {}).await.unwrap();
    assert_eq!(report.rows, 2);
    // A change only the relay captured: its schema is the relay's, unknown to the bootstrap database.
    db.exec(&["INSERT INTO shop.customers VALUES ('ada', 36)"])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let mut ps = ProducerSettings::new(format!("http://{relay}"));
    ps.wait = Duration::from_millis(100);
    let producer = tokio::spawn(run_producer(store.clone(), ps, stop.clone()));
    let applier = tokio::spawn(run_applier(
        store.clone(),
        ApplierSettings::default(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.snapshot_status().unwrap().applied_scn <= Some(report.scn) {
        assert!(Instant::now() < deadline, "the change was never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bs_addr = listener.local_addr().unwrap();
    let relay_client =
        RelayClient::new(&format!("http://{relay}"), Duration::from_secs(30)).unwrap();
    let service = BootstrapService::with_relay(
        store.clone(),
        ServeSettings::default(),
        Some(relay_client.clone()),
    );
    tokio::spawn(databus_bootstrap::http::serve(
        service,
        listener,
        stop.clone(),
    ));
    let bs = RelayClient::new(&format!("http://{bs_addr}"), Duration::from_secs(30)).unwrap();
    let mut cp = Checkpoint::beginning();
    cp.start_bootstrap(None);
    let mut events: Vec<serde_json::Value> = Vec::new();
    while cp.mode != ConsumptionMode::Online {
        assert!(Instant::now() < deadline, "bootstrap did not finish");
        let r = bs
            .get(&format!(
                "/v1/bootstrap/stream?format=json&max_bytes=200&checkpoint={}",
                enc(&cp.to_json())
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let header_cp = Checkpoint::from_json(r.header("x-databus-checkpoint").unwrap()).unwrap();
        let phase = r.header("x-databus-bootstrap-phase").unwrap().to_owned();
        let n_events = r.header("x-databus-events").unwrap().to_owned();
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let mut lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = lines.pop().expect("a checkpoint line");
        assert_eq!(
            Checkpoint::from_json(&last["checkpoint"].to_string()).unwrap(),
            header_cp
        );
        assert_eq!(last["phase"], phase.as_str());
        assert_eq!(last["path"], "snapshot");
        assert_eq!(lines.len().to_string(), n_events);
        events.extend(lines.into_iter().filter(|l| l["opcode"] != "end_of_window"));
        cp = header_cp;
    }
    for e in &events {
        assert!(e.get("decode_error").is_none(), "{e}");
    }
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e["payload"]).collect();
    assert!(
        payloads.contains(&&serde_json::json!({"id": 1, "note": "seeded one"})),
        "{payloads:?}"
    );
    assert!(
        payloads.contains(&&serde_json::json!({"id": 2, "note": "seeded two"})),
        "{payloads:?}"
    );
    let ada: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["payload"]["name"] == "ada")
        .collect();
    assert!(!ada.is_empty(), "{events:?}");
    assert_eq!(ada[0]["payload"]["age"], 36);
    // The relay's line for the same event is the same JSON.
    let r = relay_client
        .get(&format!(
            "/v1/stream?format=json&checkpoint={}",
            enc(&Checkpoint::after(report.scn).to_json())
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let relay_lines: Vec<serde_json::Value> = String::from_utf8(r.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let relay_ada = relay_lines
        .iter()
        .find(|l| l["payload"]["name"] == "ada")
        .expect("the relay holds the change");
    assert_eq!(relay_ada, ada[0]);
    // An unknown format is a typed error.
    let r = bs
        .get(&format!(
            "/v1/bootstrap/stream?format=xml&checkpoint={}",
            enc(&Checkpoint::beginning().to_json())
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-databus-error")),
        (400, Some("bad_parameter"))
    );
    stop.cancel();
    producer.await.unwrap().unwrap();
    applier.await.unwrap().unwrap();
    relay_stop.cancel();
}
