//! A producer that fell off the relay fills the gap from the source: real MariaDB, a real relay with a
//! 1 MiB buffer, the producer stopped while the relay evicts far past the log's last window, then
//! started again with `[source]` configured. The log ends with no gap, window for window and frame
//! for frame what a relay that held everything serves (same SCNs, windows, schema ids, payloads), and
//! the snapshot equals the source row by row. When the source purged that binlog too, the producer
//! stays alive, writes no gap and reports itself blocked with the fix (re-seed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databus_bootstrap::BootstrapConfig;
use databus_bootstrap::applier::{ApplierSettings, apply_step};
use databus_bootstrap::producer::run_producer;
use databus_bootstrap::relay_client::{RelayClient, StreamAnswer};
use databus_bootstrap::store::{BootstrapStore, SqliteStore};
use databus_core::{Checkpoint, EventView, Key, Scn};
use databus_filters::FilterSpec;
use databus_relay::RelayConfig;
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn source_toml(db: &MariaDb, pw: &std::path::Path, server_id: u32, buffer: &str) -> String {
    format!(
        r#"name = "shop"
connector = {{ kind = "mariadb", url = "mysql://relay@127.0.0.1:{port}/?prefer_socket=false", password_file = {pw:?}, server_id = {server_id} }}
buffer_size = "{buffer}"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
"#,
        port = db.port(),
        pw = pw.display().to_string(),
    )
}

/// A relay over `db` in process; `from_oldest`: it starts from the oldest transaction the binlog has
/// (a reference relay holding everything), else from the current position.
async fn start_relay(
    source: &str,
    state: &std::path::Path,
    from_oldest: bool,
) -> (SocketAddr, CancellationToken) {
    let text = format!(
        "state_dir = {:?}\n[[sources]]\n{source}",
        state.display().to_string()
    );
    let config = RelayConfig::from_toml(&text).unwrap().validate().unwrap();
    if from_oldest {
        std::fs::create_dir_all(state).unwrap();
        databus_relay::state::StateFile::new(state, "shop")
            .store(Scn::ZERO, None)
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(addr).await["buffers"][0]["ingest"]["state"] != "streaming" {
        assert!(Instant::now() < deadline, "relay never streamed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, shutdown)
}

async fn status(addr: SocketAddr) -> serde_json::Value {
    let client = RelayClient::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap();
    let r = client.get("/v1/status").await.unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

/// Every window a relay serves after `after`, as (SCN, frames of its data events).
async fn relay_windows(addr: SocketAddr, after: Scn, upto: Scn) -> Vec<(Scn, Vec<Vec<u8>>)> {
    let client = RelayClient::new(&format!("http://{addr}"), Duration::from_secs(30)).unwrap();
    let mut follower = client.follower(
        "shop",
        Checkpoint::after(after),
        1 << 20,
        Duration::from_millis(200),
    );
    let mut out = Vec::new();
    let mut open: Vec<Vec<u8>> = Vec::new();
    while out.last().is_none_or(|(s, _): &(Scn, _)| *s < upto) {
        let StreamAnswer::Data { body, .. } = client.stream(&mut follower).await.unwrap() else {
            panic!(
                "the reference relay no longer holds {:?}",
                follower.checkpoint()
            );
        };
        for v in EventView::parse_all(&body).unwrap() {
            if v.opcode().is_end_of_window() {
                out.push((v.scn(), std::mem::take(&mut open)));
            } else if !v.opcode().is_control() {
                open.push(v.as_bytes().to_vec());
            }
        }
    }
    out
}

/// Every window of the log after `after`, as (SCN, frames).
fn log_windows(store: &dyn BootstrapStore, after: Scn) -> Vec<(Scn, Vec<Vec<u8>>)> {
    let last = store.log_status().unwrap().last_scn.unwrap();
    store
        .windows(after, last, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|w| {
            let frames = if w.events == 0 {
                Vec::new()
            } else {
                store
                    .events(
                        w.first_seq,
                        w.first_seq + u64::from(w.events) - 1,
                        &FilterSpec::all(),
                        usize::MAX,
                        usize::MAX,
                    )
                    .unwrap()
                    .into_iter()
                    .map(|r| r.frame)
                    .collect()
            };
            (w.scn, frames)
        })
        .collect()
}

async fn write_rows(db: &MariaDb, from: u64, transactions: u64) {
    for t in from..from + transactions {
        let values: Vec<String> = (0..5)
            .map(|i| {
                let id = (t * 5 + i) % 3000;
                format!("({id}, '{}')", "x".repeat(200 + (t % 50) as usize))
            })
            .collect();
        db.exec(&[&format!(
            "INSERT INTO shop.orders VALUES {} ON DUPLICATE KEY UPDATE note = VALUES(note)",
            values.join(",")
        )])
        .await
        .unwrap();
        if t % 7 == 0 {
            db.exec(&[&format!(
                "DELETE FROM shop.orders WHERE id = {}",
                (t * 3) % 3000
            )])
            .await
            .unwrap();
        }
    }
}

async fn wait_logged(store: &Arc<dyn BootstrapStore>, scn: Scn) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.log_status().unwrap().last_scn < Some(scn) {
        assert!(
            Instant::now() < deadline,
            "the log never reached {scn}: {:?}",
            store.log_status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_fell_off_the_relay_fills_the_gap_from_the_source() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(1000))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "relaypw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "relaypw\n").unwrap();
    let (relay, relay_stop) = start_relay(
        &source_toml(&db, &pw, 4401, "1MiB"),
        &dir.path().join("relay"),
        false,
    )
    .await;
    let (reference, reference_stop) = start_relay(
        &source_toml(&db, &pw, 4402, "256MiB"),
        &dir.path().join("reference"),
        true,
    )
    .await;

    // The bootstrap configuration, with [source]: the relay's entry with its own server_id.
    let boot_toml = format!(
        "db_path = {:?}\n[relay]\nurl = \"http://{relay}\"\nwait = \"100ms\"\n[source]\n{}",
        dir.path().join("shop.sqlite").display().to_string(),
        source_toml(&db, &pw, 4403, "64MiB")
    );
    let config = BootstrapConfig::from_toml(&boot_toml)
        .unwrap()
        .validate()
        .unwrap();
    let settings = config.producer.clone().unwrap();
    assert!(settings.gap_source.is_some());
    let store: Arc<dyn BootstrapStore> = Arc::new(SqliteStore::open(&config.db_path).unwrap());
    let run = |token: CancellationToken| {
        let (store, settings) = (store.clone(), settings.clone());
        tokio::spawn(async move { run_producer(store, settings, token).await })
    };

    // The producer copies the first windows, then is down while the relay evicts far past them.
    let producer = CancellationToken::new();
    let task = run(producer.clone());
    write_rows(&db, 1, 20).await;
    let first_last = Scn::new(
        status(relay).await["buffers"][0]["max_scn"]
            .as_u64()
            .unwrap(),
    );
    wait_logged(&store, first_last).await;
    producer.cancel();
    task.await.unwrap().unwrap();
    let mut t = 21;
    loop {
        write_rows(&db, t, 100).await;
        t += 100;
        let st = status(relay).await;
        if st["buffers"][0]["prev_scn"].as_u64() > Some(first_last.get() + 100) {
            break;
        }
    }
    write_rows(&db, t, 10).await;
    let head = Scn::new(
        status(relay).await["buffers"][0]["max_scn"]
            .as_u64()
            .unwrap(),
    );

    // Started again: it fills the gap from the source, then follows the relay.
    let producer = CancellationToken::new();
    let task = run(producer.clone());
    wait_logged(&store, head).await;
    producer.cancel();
    task.await.unwrap().unwrap();

    // No gap, and exactly what a relay holding everything serves.
    let floor = store.log_status().unwrap().floor_scn.unwrap();
    let logged = log_windows(store.as_ref(), floor);
    let scns: Vec<u64> = logged.iter().map(|w| w.0.get()).collect();
    let expected: Vec<u64> = (floor.get() + 1..=head.get()).collect();
    assert_eq!(scns.first(), expected.first());
    assert_eq!(scns, expected, "the log has a gap");
    let served = relay_windows(reference, floor, head).await;
    assert_eq!(logged.len(), served.len());
    for (l, s) in logged.iter().zip(&served) {
        assert_eq!(l, s, "window {} differs from the relay's", l.0);
    }

    // The snapshot built from that log equals the source, row by row.
    while apply_step(store.as_ref(), &ApplierSettings::default())
        .unwrap()
        .windows
        > 0
    {}
    let mut snapshot: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, frames) in &logged {
        for f in frames {
            let v = EventView::parse(f).unwrap().0;
            let Key::Int(id) = v.key().to_owned() else {
                panic!("integer keys")
            };
            if v.opcode() == databus_core::Opcode::Delete {
                snapshot.remove(&id);
            } else {
                snapshot.insert(id, v.payload().len());
            }
        }
    }
    let ids = db
        .query_string("SELECT GROUP_CONCAT(id ORDER BY id) FROM shop.orders")
        .await
        .unwrap()
        .unwrap();
    let source: Vec<i64> = ids.split(',').map(|s| s.parse().unwrap()).collect();
    assert_eq!(snapshot.keys().copied().collect::<Vec<_>>(), source);
    let applied = store.snapshot_status().unwrap();
    assert_eq!(applied.applied_scn, Some(head));
    relay_stop.cancel();
    reference_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_source_purged_too_blocks_the_producer_and_health_says_re_seed() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(1000))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "relaypw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "relaypw\n").unwrap();
    let (relay, relay_stop) = start_relay(
        &source_toml(&db, &pw, 4411, "1MiB"),
        &dir.path().join("relay"),
        false,
    )
    .await;
    let boot_toml = format!(
        "db_path = {:?}\n[relay]\nurl = \"http://{relay}\"\nwait = \"100ms\"\n[source]\n{}",
        dir.path().join("shop.sqlite").display().to_string(),
        source_toml(&db, &pw, 4413, "64MiB")
    );
    let config = BootstrapConfig::from_toml(&boot_toml)
        .unwrap()
        .validate()
        .unwrap();
    let store: Arc<dyn BootstrapStore> = Arc::new(SqliteStore::open(&config.db_path).unwrap());
    let run = |token: CancellationToken| {
        let (store, settings) = (store.clone(), config.producer.clone().unwrap());
        tokio::spawn(async move { run_producer(store, settings, token).await })
    };
    let producer = CancellationToken::new();
    let task = run(producer.clone());
    write_rows(&db, 1, 20).await;
    let first_last = Scn::new(
        status(relay).await["buffers"][0]["max_scn"]
            .as_u64()
            .unwrap(),
    );
    wait_logged(&store, first_last).await;
    producer.cancel();
    task.await.unwrap().unwrap();
    // The relay evicts past the log, and the source purges the binlog holding the gap.
    let mut t = 21;
    while status(relay).await["buffers"][0]["prev_scn"].as_u64() <= Some(first_last.get() + 100) {
        write_rows(&db, t, 100).await;
        t += 100;
    }
    db.exec(&["FLUSH BINARY LOGS"]).await.unwrap();
    let current: String = {
        use mysql_async::prelude::Queryable;
        let mut conn = db.root_conn().await.unwrap();
        let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await.unwrap();
        row.unwrap().get(0).unwrap()
    };
    db.purge_binary_logs_to(&current).await.unwrap();

    // Restarted: it cannot fill the gap; it stays alive, reports blocked with the fix, never writes
    // a gap into the log.
    let producer = CancellationToken::new();
    let task = run(producer.clone());
    let service = databus_bootstrap::serve::BootstrapService::new(
        store.clone(),
        databus_bootstrap::serve::ServeSettings::default(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let problem = loop {
        let (_, problems) = service.health().unwrap();
        if let Some(p) = problems.into_iter().find(|p| p.state == "blocked") {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the producer never reported blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        problem.message.contains("cannot fill the relay gap")
            && problem.message.contains("re-seed"),
        "{problem:?}"
    );
    assert!(!task.is_finished(), "the blocked producer keeps running");
    assert_eq!(store.log_status().unwrap().last_scn, Some(first_last));
    producer.cancel();
    task.await.unwrap().unwrap();
    relay_stop.cancel();
}
