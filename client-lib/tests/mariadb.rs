//! The client against a whole relay (`databus_relay::run_with`: MariaDB binlog connector, Avro encoder,
//! buffer, HTTP) capturing a real MariaDB: rows decode into serde structs with the relay's schemas, in
//! commit order, and consumption survives a relay restart.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ConfiguredRelay, run_relay, wait_streaming};
use databus_client::{
    ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, FileCheckpointStore,
};
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, serde::Deserialize)]
struct Order {
    id: i64,
    note: Option<String>,
}

/// Applies orders to a map, as a replica would.
#[derive(Default)]
struct Orders {
    state: Mutex<BTreeMap<i64, Option<String>>>,
}

impl DatabusConsumer for Orders {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let order: Order = match event.decode() {
            Ok(o) => o,
            Err(e) => panic!("decode: {e}"),
        };
        let json = event.json().unwrap();
        assert_eq!(json["id"], order.id, "{json}");
        let mut state = self.state.lock().unwrap();
        if event.is_delete() {
            state.remove(&order.id);
        } else {
            state.insert(order.id, order.note);
        }
        ConsumerOutcome::Success
    }
}

async fn start_relay(
    db: &MariaDb,
    state_dir: &Path,
    password_file: &Path,
    addr: &str,
) -> ConfiguredRelay {
    let url = format!("mysql://relay@127.0.0.1:{}/?prefer_socket=false", db.port());
    let text = format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = {url:?}, password_file = {pw:?}, server_id = 4343 }}
buffer_size = "8MiB"
tables = [ {{ id = 1, name = "orders", table = "shop.orders" }} ]
"#,
        state = state_dir.display().to_string(),
        pw = password_file.display().to_string(),
    );
    run_relay(&text, addr).await
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_from_mariadb_decode_in_order_across_a_relay_restart() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total DECIMAL(10,2))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw\n").unwrap();
    let state_dir = dir.path().join("relay-state");
    let relay = start_relay(&db, &state_dir, &password_file, "127.0.0.1:0").await;
    let addr = relay.addr;

    let mut config = databus_client::ClientConfig::with_relays([format!("http://{addr}")]);
    // From what the relay captures: it started at the source's position, after the schema's DDL, so
    // the history before it is not in any relay (and no bootstrap server is configured).
    config.start = databus_client::StartPosition::Oldest;
    config.workers = 2;
    config.long_poll = Duration::from_millis(500);
    config.fetch_backoff.max = Duration::from_millis(200);
    let store = Arc::new(FileCheckpointStore::new(dir.path().join("client/cp.json")).unwrap());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let orders = Arc::new(Orders::default());
    let shutdown = CancellationToken::new();
    let run = {
        let (client, orders, token) = (client.clone(), orders.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(orders, token).await })
    };
    // The relay starts at the source's current position; wait until it streams before writing.
    wait_streaming(addr).await;

    let mut expected = BTreeMap::new();
    for tx in 0..10i64 {
        let mut stmts = Vec::new();
        for i in 0..5 {
            let id = tx * 5 + i;
            stmts.push(format!(
                "INSERT INTO shop.orders VALUES ({id}, 'n{id}', {id}.50)"
            ));
            expected.insert(id, Some(format!("n{id}")));
        }
        stmts.push(format!(
            "UPDATE shop.orders SET note = NULL WHERE id = {}",
            tx * 5
        ));
        expected.insert(tx * 5, None);
        if tx > 0 {
            stmts.push(format!("DELETE FROM shop.orders WHERE id = {}", tx * 5 - 1));
            expected.remove(&(tx * 5 - 1));
        }
        let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
        db.exec_tx(&refs).await.unwrap();
    }
    wait_until("first batch", || *orders.state.lock().unwrap() == expected).await;

    // Restart the relay on the same port; the client keeps its place and gets what follows.
    relay.shutdown.cancel();
    relay.task.await.unwrap().unwrap();
    db.exec_tx(&["INSERT INTO shop.orders VALUES (1000, 'after', 1.00)"])
        .await
        .unwrap();
    expected.insert(1000, Some("after".into()));
    let relay = start_relay(&db, &state_dir, &password_file, &addr.to_string()).await;
    wait_streaming(addr).await;
    wait_until("row written while the relay was down", || {
        *orders.state.lock().unwrap() == expected
    })
    .await;
    db.exec_tx(&["DELETE FROM shop.orders WHERE id = 1"])
        .await
        .unwrap();
    expected.remove(&1);
    wait_until("row after restart", || {
        *orders.state.lock().unwrap() == expected
    })
    .await;
    shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert!(summary.windows >= 12, "{summary:?}");
    let cp = databus_client::CheckpointStore::load(&*store)
        .unwrap()
        .unwrap();
    assert_eq!(Some(cp), summary.last_checkpoint);
    relay.shutdown.cancel();
    relay.task.await.unwrap().unwrap();
}
