//! The three examples (`client-lib/examples`) against a quickstart-like setup: a real MariaDB
//! (testkit) with the quickstart's two tables, a whole relay capturing it over loopback HTTP, and a
//! workload of insert/update/delete transactions. Each example's code is included as a module and run
//! through its `run(args, shutdown)` for exactly the workload's windows (`--max-windows`); its end
//! state is compared with the source database. The cache invalidator runs against a private Redis
//! (`databus_testkit::Redis`).
//!
//! The relay starts at the source's position when it starts (after the schema was created, as in the
//! quickstart), so it answers "no longer held" to a consumer starting from SCN 0; the replica and the
//! invalidator are given a checkpoint (the replica's in its SQLite file, the invalidator's in Redis)
//! at that position, which is also what a restarted example resumes from; the search indexer starts
//! with a new index, from the oldest window the relay holds (the workload's first). (Against a
//! quickstart, the indexer and the replica start from the bootstrap server's snapshot instead, and
//! the invalidator from "now".)

use crate::common;

#[path = "../examples/cache_invalidator.rs"]
#[allow(dead_code)]
mod cache_invalidator;
#[path = "../examples/replica.rs"]
#[allow(dead_code)]
mod replica;
#[path = "../examples/search_indexer.rs"]
#[allow(dead_code)]
mod search_indexer;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use common::{run_relay, wait_streaming};
use databus_testkit::{MariaDb, MariaDbOptions};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CUSTOMERS: u16 = 1;
const ORDERS: u16 = 2;

struct Setup {
    db: MariaDb,
    relay: String,
    stop_relay: CancellationToken,
    relay_task: tokio::task::JoinHandle<Result<(), databus_relay::RelayError>>,
    /// `(source, key)` of every row change, in commit order.
    changes: Vec<(u16, i64)>,
    /// Transactions written (= windows with data events).
    transactions: u64,
    /// The position the relay started at (before the workload).
    start: databus_core::Checkpoint,
    dir: tempfile::TempDir,
}

async fn start_relay(
    db: &MariaDb,
    dir: &Path,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), databus_relay::RelayError>>,
) {
    let password_file = dir.join("password");
    std::fs::write(&password_file, "pw\n").unwrap();
    let text = format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "mysql://databus@127.0.0.1:{port}/?prefer_socket=false", password_file = {pw:?}, server_id = 4344 }}
buffer_size = "8MiB"
tables = [
    {{ id = 1, name = "customers", table = "shop.customers" }},
    {{ id = 2, name = "orders", table = "shop.orders" }},
]
"#,
        port = db.port(),
        state = dir.join("relay-state").display().to_string(),
        pw = password_file.display().to_string(),
    );
    let relay = run_relay(&text, "127.0.0.1:0").await;
    (relay.addr, relay.shutdown, relay.task)
}

const CITIES: &[&str] = &["Paris", "Oslo", "Lima", "Kyoto"];
const NAMES: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Radia Perlman",
    "Ken Thompson",
];

/// MariaDB with the quickstart's tables, a relay capturing them, and the workload written.
async fn setup() -> Setup {
    setup_with(0).await
}

/// As [`setup`], with `existing` customers and orders (ids from 1000) written before the relay starts:
/// rows no relay ever carries, which only a seeded bootstrap snapshot can deliver.
async fn setup_with(existing: i64) -> Setup {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, \
         city VARCHAR(64) NOT NULL)",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, \
         item VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL)",
    ])
    .await
    .unwrap();
    for id in 1000..1000 + existing {
        db.exec_tx(&[
            &format!(
                "INSERT INTO shop.customers VALUES ({id}, '{}', '{}')",
                NAMES[id as usize % NAMES.len()],
                CITIES[id as usize % CITIES.len()]
            ),
            &format!("INSERT INTO shop.orders VALUES ({id}, {id}, 'old lamp {id}', 'archived')"),
        ])
        .await
        .unwrap();
    }
    db.create_user_with_grants("databus", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop_relay, relay_task) = start_relay(&db, dir.path()).await;
    // The relay starts at the source's current position: write only once it streams.
    wait_streaming(addr).await;
    let pos = db.gtid_binlog_pos().await.unwrap();
    let seq: u64 = pos.rsplit('-').next().unwrap().parse().unwrap();
    let start = databus_core::Checkpoint::after(databus_core::Scn::new(seq));

    let mut changes = Vec::new();
    let mut transactions = 0;
    for i in 1..=24i64 {
        let mut stmts = Vec::new();
        if i % 3 == 1 {
            let c = (i + 2) / 3;
            let name = NAMES[(c as usize - 1) % NAMES.len()];
            let city = CITIES[(c as usize - 1) % CITIES.len()];
            stmts.push(format!(
                "INSERT INTO shop.customers VALUES ({c}, '{name}', '{city}')"
            ));
            changes.push((CUSTOMERS, c));
        }
        stmts.push(format!(
            "INSERT INTO shop.orders VALUES ({i}, {}, 'blue widget number {i}', 'new')",
            1 + i % 3
        ));
        changes.push((ORDERS, i));
        if i % 4 == 0 {
            // Two rows in one transaction: one window, two events in statement order.
            stmts.push(format!(
                "UPDATE shop.orders SET status = 'shipped', item = 'red gadget' WHERE id = {}",
                i - 1
            ));
            stmts.push(format!(
                "UPDATE shop.orders SET status = 'paid' WHERE id = {i}"
            ));
            changes.push((ORDERS, i - 1));
            changes.push((ORDERS, i));
        }
        if i % 5 == 0 {
            stmts.push(format!(
                "UPDATE shop.customers SET city = 'New {}' WHERE id = 1",
                CITIES[i as usize % CITIES.len()]
            ));
            changes.push((CUSTOMERS, 1));
        }
        let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
        db.exec_tx(&refs).await.unwrap();
        transactions += 1;
        if i % 7 == 0 {
            db.exec_tx(&[&format!("DELETE FROM shop.orders WHERE id = {}", i - 2)])
                .await
                .unwrap();
            changes.push((ORDERS, i - 2));
            transactions += 1;
        }
    }
    Setup {
        db,
        relay: format!("http://{addr}"),
        stop_relay,
        relay_task,
        changes,
        transactions,
        start,
        dir,
    }
}

impl Setup {
    /// The source's rows: `(source, id)` -> the row as JSON (every column).
    async fn source_rows(&self) -> BTreeMap<(u16, i64), Value> {
        let mut rows = BTreeMap::new();
        for (source, sql) in [
            (
                CUSTOMERS,
                "SELECT JSON_ARRAYAGG(JSON_OBJECT('id', id, 'name', name, 'city', city)) \
                 FROM shop.customers",
            ),
            (
                ORDERS,
                "SELECT JSON_ARRAYAGG(JSON_OBJECT('id', id, 'customer_id', customer_id, \
                 'item', item, 'status', status)) FROM shop.orders",
            ),
        ] {
            let text = self.db.query_string(sql).await.unwrap().unwrap();
            let Value::Array(items) = serde_json::from_str(&text).unwrap() else {
                panic!("not an array: {text}");
            };
            for item in items {
                rows.insert((source, item["id"].as_i64().unwrap()), item);
            }
        }
        rows
    }

    async fn stop(self) {
        self.stop_relay.cancel();
        self.relay_task.await.unwrap().unwrap();
    }
}

/// The words the indexer takes from a row: every text column, split on non-alphanumerics.
fn words(row: &Value) -> Vec<String> {
    let mut out: Vec<String> = row
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_str)
        .flat_map(|s| {
            s.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The search index holds exactly the source's rows (document `shop.<table>:<id>` = the row), and
/// each word of the source's rows finds exactly the rows holding it.
fn check_index(index: &search_indexer::SearchIndex, source: &BTreeMap<(u16, i64), Value>) {
    let got: BTreeMap<(u16, i64), Value> = index
        .documents()
        .unwrap()
        .into_iter()
        .map(|hit| {
            let (table, id) = hit.id.split_once(':').unwrap();
            assert_eq!(table, hit.table, "{hit:?}");
            ((source_of(table), id.parse().unwrap()), hit.row)
        })
        .collect();
    assert_eq!(&got, source);
    for (source_id, table) in [(CUSTOMERS, "shop.customers"), (ORDERS, "shop.orders")] {
        assert_eq!(
            index.count(table).unwrap(),
            source.keys().filter(|(s, _)| *s == source_id).count(),
            "documents of {table}"
        );
    }
    let all_words: BTreeSet<String> = source.values().flat_map(words).collect();
    for word in all_words {
        let found: BTreeSet<String> = index
            .search(&word)
            .unwrap()
            .into_iter()
            .map(|hit| hit.id)
            .collect();
        let want: BTreeSet<String> = source
            .iter()
            .filter(|(_, row)| words(row).contains(&word))
            .map(|((s, id), _)| format!("{}:{id}", table_name(*s)))
            .collect();
        assert_eq!(found, want, "documents with {word:?}");
    }
}

/// The source of a quickstart table's name.
fn source_of(table: &str) -> u16 {
    match table {
        "shop.customers" => CUSTOMERS,
        "shop.orders" => ORDERS,
        other => panic!("not a quickstart table: {other}"),
    }
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_example_reaches_the_source_state_against_a_quickstart_like_setup() {
    let setup = setup().await;
    let source = setup.source_rows().await;
    let windows = setup.transactions.to_string();
    let dir = setup.dir.path();
    assert!(source.len() > 20, "{source:?}");
    // search_indexer: the index holds exactly the live rows, each found by each of its words; its
    // last commit holds the last window's checkpoint. A new index: from the relay's oldest window,
    // the workload's first.
    let index_dir = dir.join("index");
    let args = search_indexer::Args::parse_from([
        "search_indexer",
        "--relay",
        &setup.relay,
        "--index",
        index_dir.to_str().unwrap(),
        "--max-windows",
        &windows,
        "--commit-every",
        "4",
    ]);
    assert_eq!(args.workers, 4);
    let (index, summary) = bounded(
        "search_indexer",
        search_indexer::run(args, CancellationToken::new()),
    )
    .await
    .unwrap();
    check_index(&index, &source);
    assert!(!index.search("ada").unwrap().is_empty());
    assert_eq!(summary.events, setup.changes.len() as u64, "{summary:?}");
    assert!(summary.last_checkpoint.is_some());
    assert_eq!(
        index.committed_checkpoint().unwrap(),
        summary.last_checkpoint,
        "the index's last commit holds the last window's checkpoint"
    );

    // cache_invalidator: every change deleted from Redis, in commit order; untouched keys still
    // cached; the checkpoint in Redis is the last window's.
    let redis = databus_testkit::Redis::start().await.unwrap();
    let cache = Cache::new(&redis, &setup).await;
    cache.preload(30).await;
    let args = cache_invalidator::Args::parse_from([
        "cache_invalidator",
        "--relay",
        &setup.relay,
        "--redis",
        &redis.url(),
        "--max-windows",
        &windows,
    ]);
    let (invalidator, summary) = bounded(
        "cache_invalidator",
        cache_invalidator::run(args, CancellationToken::new()),
    )
    .await
    .unwrap();
    let log: Vec<(String, databus_core::Scn)> =
        invalidator.log.lock().unwrap().iter().cloned().collect();
    let keys: Vec<(u16, i64)> = log.iter().map(|(k, _)| parse_cache_key(k)).collect();
    assert_eq!(keys, setup.changes, "deletions in commit order");
    assert!(
        log.windows(2).all(|w| w[0].1 <= w[1].1),
        "SCNs never go back"
    );
    let changed: BTreeSet<(u16, i64)> = setup.changes.iter().copied().collect();
    for source_id in [CUSTOMERS, ORDERS] {
        for id in 1..=30 {
            assert_eq!(
                cache.cached(source_id, id).await.is_some(),
                !changed.contains(&(source_id, id)),
                "{source_id}:{id}"
            );
        }
    }
    assert_eq!(
        invalidator.hits.load(Ordering::Relaxed),
        changed.iter().filter(|(_, id)| *id <= 30).count() as u64
    );
    assert_eq!(summary.events, setup.changes.len() as u64);
    assert_eq!(cache.checkpoint(), summary.last_checkpoint);

    // replica: the SQLite replica equals the source, and its checkpoint is the last window.
    let db_path = dir.join("replica.sqlite");
    {
        let mut conn = replica::open(&db_path).unwrap();
        let tx = conn.transaction().unwrap();
        databus_client::checkpoint::SqliteCheckpointStore::store_in(&tx, "replica", &setup.start)
            .unwrap();
        tx.commit().unwrap();
    }
    let args = replica::Args::parse_from([
        "replica",
        "--relay",
        &setup.relay,
        "--checkpoint",
        db_path.to_str().unwrap(),
        "--max-windows",
        &windows,
    ]);
    let summary = bounded("replica", replica::run(args, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(replica_rows(&db_path).unwrap(), source);
    let stored =
        databus_client::checkpoint::SqliteCheckpointStore::open(&db_path, "replica").unwrap();
    let cp = databus_client::CheckpointStore::load(&stored).unwrap();
    assert_eq!(cp, summary.last_checkpoint);
    assert!(cp.is_some());

    // Run again: the replica resumes after its checkpoint and applies nothing twice.
    db_write_one_more(&setup).await;
    let args = replica::Args::parse_from([
        "replica",
        "--relay",
        &setup.relay,
        "--checkpoint",
        db_path.to_str().unwrap(),
        "--max-windows",
        "1",
    ]);
    let again = bounded(
        "replica again",
        replica::run(args, CancellationToken::new()),
    )
    .await
    .unwrap();
    assert_eq!(again.events, 1, "{again:?}");
    let source = setup.source_rows().await;
    let count: i64 = replica::open(&db_path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count as usize, source.len());
    setup.stop().await;
}

/// The replica's rows: `(source, id)` -> the row as JSON.
fn replica_rows(db_path: &Path) -> rusqlite::Result<BTreeMap<(u16, i64), Value>> {
    let conn = rusqlite::Connection::open(db_path)?;
    let mut stmt = conn.prepare("SELECT source, key, json FROM rows ORDER BY source, key")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get::<_, u16>(0)?, r.get::<_, String>(1)?),
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let ((source, key), json) = row?;
        out.insert(
            (source, key.parse().unwrap()),
            serde_json::from_str(&json).unwrap(),
        );
    }
    Ok(out)
}

/// The replica example as a quickstart user runs it with `--bootstrap`: a new replica starts from the
/// bootstrap server's snapshot (seeded from MariaDB, so it holds rows written before the relay
/// started, which no relay carries), then follows the relay; writes made while it runs reach it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_example_starts_from_a_seeded_snapshot_then_follows_the_relay() {
    let setup = setup_with(40).await;
    let dir = setup.dir.path();
    let text = format!(
        "db_path = {db:?}\n[relay]\nurl = \"{relay}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [seed]\nurl = \"mysql://databus@127.0.0.1:{port}/?prefer_socket=false\"\npassword_file = {pw:?}\n",
        db = dir.join("bootstrap.sqlite").display().to_string(),
        relay = setup.relay,
        port = setup.db.port(),
        pw = dir.join("password").display().to_string(),
    );
    let config = databus_bootstrap::BootstrapConfig::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = format!("http://{}", listener.local_addr().unwrap());
    let stop_bootstrap = CancellationToken::new();
    let bootstrap_task = tokio::spawn(databus_bootstrap::run_all_on(
        config,
        listener,
        stop_bootstrap.clone(),
    ));

    let db_path = dir.join("replica.sqlite");
    let args = replica::Args::parse_from([
        "replica",
        "--relay",
        &setup.relay,
        "--bootstrap",
        &bootstrap,
        "--checkpoint",
        db_path.to_str().unwrap(),
    ]);
    let stop_replica = CancellationToken::new();
    let replica_task = tokio::spawn(replica::run(args, stop_replica.clone()));
    let source = converge(&setup, &db_path, &replica_task, "after the snapshot").await;
    assert!(
        source.keys().filter(|(_, id)| *id >= 1000).count() == 80,
        "the seeded rows are in the source and so in the replica"
    );

    // Live changes while the replica runs: inserts, updates of seeded rows, deletes.
    for i in 0..10i64 {
        setup
            .db
            .exec_tx(&[
                &format!(
                    "INSERT INTO shop.orders VALUES ({}, 1, 'late order {i}', 'new')",
                    500 + i
                ),
                &format!(
                    "UPDATE shop.customers SET city = 'Moved {i}' WHERE id = {}",
                    1000 + i
                ),
                &format!("DELETE FROM shop.orders WHERE id = {}", 1020 + i),
            ])
            .await
            .unwrap();
    }
    converge(&setup, &db_path, &replica_task, "after live changes").await;
    stop_replica.cancel();
    let summary = bounded("replica", replica_task).await.unwrap().unwrap();
    let cp = summary.last_checkpoint.expect("a checkpoint");
    assert_eq!(cp.mode, databus_core::ConsumptionMode::Online, "{cp:?}");
    let stored =
        databus_client::checkpoint::SqliteCheckpointStore::open(&db_path, "replica").unwrap();
    assert_eq!(
        databus_client::CheckpointStore::load(&stored).unwrap(),
        Some(cp)
    );
    stop_bootstrap.cancel();
    bounded("bootstrap server", bootstrap_task)
        .await
        .unwrap()
        .unwrap();
    setup.stop().await;
}

/// Waits until the replica in `db_path` equals the source; returns the source's rows.
async fn converge(
    setup: &Setup,
    db_path: &Path,
    replica: &tokio::task::JoinHandle<anyhow::Result<databus_client::RunSummary>>,
    what: &str,
) -> BTreeMap<(u16, i64), Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let source = setup.source_rows().await;
        // A read may meet the replica mid-commit (busy): try again.
        if replica_rows(db_path).ok().as_ref() == Some(&source) {
            return source;
        }
        assert!(
            !replica.is_finished(),
            "the replica stopped before reaching the source state ({what})"
        );
        assert!(
            Instant::now() < deadline,
            "the replica never reached the source state ({what})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The quickstart tables' names in cache keys.
fn table_name(source: u16) -> &'static str {
    match source {
        CUSTOMERS => "shop.customers",
        _ => "shop.orders",
    }
}

/// `(source, id)` of a cache key `cache:shop.<table>:<epoch>.<generation>:<id>`.
fn parse_cache_key(key: &str) -> (u16, i64) {
    let parts: Vec<&str> = key.split(':').collect();
    let [_, table, _, id] = parts.as_slice() else {
        panic!("not a row key: {key}")
    };
    let source = if *table == "shop.customers" {
        CUSTOMERS
    } else {
        ORDERS
    };
    (source, id.parse().unwrap())
}

/// The example's cache in a private Redis, seen by a test.
struct Cache {
    conn: redis::aio::MultiplexedConnection,
    reader: cache_invalidator::Reader,
    store: cache_invalidator::RedisCheckpointStore,
}

impl Cache {
    /// The cache under the default prefix, with the invalidator's checkpoint at the relay's start.
    async fn new(redis: &databus_testkit::Redis, setup: &Setup) -> Cache {
        let client = redis::Client::open(redis.url()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys = cache_invalidator::CacheKeys::new("cache");
        let store = cache_invalidator::RedisCheckpointStore::new(
            client,
            keys.checkpoint("cache_invalidator"),
        );
        databus_client::CheckpointStore::store_transition(&store, &setup.start).unwrap();
        Cache {
            reader: cache_invalidator::Reader::new("cache", conn.clone()),
            conn,
            store,
        }
    }

    /// Caches rows `1..=n` of both tables (as a reader would: the value does not matter here).
    async fn preload(&self, n: i64) {
        for source in [CUSTOMERS, ORDERS] {
            for id in 1..=n {
                let (_, read) = self
                    .reader
                    .read_through(table_name(source), &[id.into()], || async move {
                        Ok(Some(format!("{{\"id\":{id}}}")))
                    })
                    .await
                    .unwrap();
                assert_eq!(read, cache_invalidator::Read::Filled);
            }
        }
    }

    /// The cached entry of a row, at its current key.
    async fn cached(&self, source: u16, id: i64) -> Option<String> {
        let key = self
            .reader
            .key(table_name(source), &[id.into()])
            .await
            .unwrap();
        redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await
            .unwrap()
    }

    /// The invalidator's checkpoint in Redis.
    fn checkpoint(&self) -> Option<databus_core::Checkpoint> {
        databus_client::CheckpointStore::load(&self.store).unwrap()
    }
}

async fn db_write_one_more(setup: &Setup) {
    setup
        .db
        .exec_tx(&["INSERT INTO shop.customers VALUES (99, 'Late Comer', 'Bergen')"])
        .await
        .unwrap();
}

/// Key changes, TRUNCATE and DROP + CREATE after the quickstart workload: each example ends at the
/// source's state (the replica row by row, the index word by word) and the invalidator drops every
/// cached key of a truncated table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_example_follows_key_changes_and_truncates() {
    let setup = setup().await;
    // 1. A key change (orders 3 -> 503); 2. TRUNCATE customers; 3. a customer after it;
    // 4. DROP + CREATE orders (two windows) and 5. an order in the new table.
    setup
        .db
        .exec(&[
            "UPDATE shop.orders SET id = 503 WHERE id = 3",
            "TRUNCATE TABLE shop.customers",
            "INSERT INTO shop.customers VALUES (7, 'Ada After', 'Oslo')",
            "DROP TABLE shop.orders",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, \
             item VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL)",
            "INSERT INTO shop.orders VALUES (1, 7, 'fresh lamp', 'new')",
        ])
        .await
        .unwrap();
    let source = setup.source_rows().await;
    assert_eq!(source.len(), 2, "{source:?}");
    // Windows with events: the workload's, the key change, two truncates and two inserts.
    let windows = (setup.transactions + 5).to_string();
    let dir = setup.dir.path();
    let index_dir = dir.join("index");
    let args = search_indexer::Args::parse_from([
        "search_indexer",
        "--relay",
        &setup.relay,
        "--index",
        index_dir.to_str().unwrap(),
        "--max-windows",
        &windows,
    ]);
    let (index, _) = bounded(
        "search_indexer",
        search_indexer::run(args, CancellationToken::new()),
    )
    .await
    .unwrap();
    check_index(&index, &source);
    assert_eq!(index.count("shop.customers").unwrap(), 1);
    assert_eq!(index.count("shop.orders").unwrap(), 1);

    let redis = databus_testkit::Redis::start().await.unwrap();
    let cache = Cache::new(&redis, &setup).await;
    cache.preload(30).await;
    let args = cache_invalidator::Args::parse_from([
        "cache_invalidator",
        "--relay",
        &setup.relay,
        "--redis",
        &redis.url(),
        "--max-windows",
        &windows,
    ]);
    let (invalidator, _) = bounded(
        "cache_invalidator",
        cache_invalidator::run(args, CancellationToken::new()),
    )
    .await
    .unwrap();
    let mut truncated: Vec<String> = invalidator
        .truncates
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    truncated.dedup();
    assert_eq!(truncated, vec!["shop.customers", "shop.orders"]);
    for source_id in [CUSTOMERS, ORDERS] {
        for id in 1..=30 {
            // Row 7 of customers and 1 of orders exist again, but nobody cached them since.
            assert_eq!(
                cache.cached(source_id, id).await,
                None,
                "{source_id}:{id} survived its truncate"
            );
        }
    }
    let log: Vec<(u16, i64)> = invalidator
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| parse_cache_key(k))
        .collect();
    assert!(
        log.contains(&(ORDERS, 3)) && log.contains(&(ORDERS, 503)),
        "both keys of the key change are deleted: {log:?}"
    );

    let db_path = dir.join("replica.sqlite");
    {
        let mut conn = replica::open(&db_path).unwrap();
        let tx = conn.transaction().unwrap();
        databus_client::checkpoint::SqliteCheckpointStore::store_in(&tx, "replica", &setup.start)
            .unwrap();
        tx.commit().unwrap();
    }
    let args = replica::Args::parse_from([
        "replica",
        "--relay",
        &setup.relay,
        "--checkpoint",
        db_path.to_str().unwrap(),
        "--max-windows",
        &windows,
    ]);
    bounded("replica", replica::run(args, CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(replica_rows(&db_path).unwrap(), source);
    setup.stop().await;
}
