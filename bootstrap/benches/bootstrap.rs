//! Throughput of the bootstrap roles (a bench binary: prints figures, asserts nothing about time).
//!
//! `cargo bench -p databus-bootstrap --bench bootstrap` (add `-- quick` for a smaller run). Figures
//! and the machine are recorded in docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use databus_bootstrap::applier::{ApplierSettings, apply_step};
use databus_bootstrap::producer::{ProducerSettings, run_producer};
use databus_bootstrap::relay_client::RelayClient;
use databus_bootstrap::seed::{SeedSettings, SeedTable, seed};
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::{BootstrapStore, LogStore, LogWindow, SqliteStore, StoredEvent};
use databus_buffer::{BufferConfig, event_buffer};
use databus_core::{
    Checkpoint, ConsumptionMode, EventBuilder, EventView, KeyRef, Opcode, Scn, SourceId,
};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use tokio_util::sync::CancellationToken;

const EVENTS_PER_WINDOW: u64 = 10;
const PAYLOAD: usize = 100;

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{:>9.0}/s ({n} in {:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

fn frame(scn: u64, key: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    EventBuilder::new(Scn::new(scn), Opcode::Upsert)
        .source(SourceId::new(1 + (key % 2) as u16))
        .timestamp_ns(scn)
        .key(KeyRef::Int(key))
        .payload(payload)
        .write_to_vec(&mut out);
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // `seed`: only the seeding stage (MariaDB -> SQLite snapshot).
    let seed_only = std::env::args().any(|a| a == "seed");
    let events: u64 = if quick { 50_000 } else { 300_000 };
    let seed_rows: u64 = if quick { 50_000 } else { 300_000 };
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![b'x'; PAYLOAD];
    if !seed_only {
        store_stages(&dir, events, &payload).await;
    }
    seed_stage(&dir, seed_rows).await;
}

async fn store_stages(dir: &tempfile::TempDir, events: u64, payload: &[u8]) {
    // 0. Raw log appends (no HTTP): the SQLite store alone.
    {
        let store = SqliteStore::open(dir.path().join("raw.sqlite")).unwrap();
        store.start_log(Scn::ZERO).unwrap();
        let windows: Vec<LogWindow> = (1..=events / EVENTS_PER_WINDOW)
            .map(|w| LogWindow {
                scn: Scn::new(w),
                timestamp_ns: w,
                events: (0..EVENTS_PER_WINDOW)
                    .map(|i| {
                        StoredEvent::from_frame(&frame(
                            w,
                            (w * EVENTS_PER_WINDOW + i) as i64,
                            payload,
                        ))
                        .unwrap()
                    })
                    .collect(),
            })
            .collect();
        let t = Instant::now();
        for batch in windows.chunks(100) {
            store.append(batch).unwrap();
        }
        println!(
            "log append (store only, 100 windows/txn):   {}",
            rate(events, t.elapsed())
        );
    }

    // 1. Producer: relay over HTTP -> SQLite log.
    let (mut writer, buffer) = event_buffer(BufferConfig::new(256 << 20)).unwrap();
    let table = |id: u16, name: &str| ValidatedTable {
        id: SourceId::new(id),
        name: name.into(),
        database: "shop".into(),
        table: name.into(),
    };
    let service = RelayService::new(
        vec![SourceHandle {
            name: "shop".into(),
            buffer,
            tables: vec![table(1, "orders"), table(2, "customers")],
            status: Default::default(),
        }],
        Arc::new(SchemaRegistry::in_memory()),
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let relay_stop = CancellationToken::new();
    tokio::spawn(databus_relay::serve(service, listener, relay_stop.clone()));
    let last_window = events / EVENTS_PER_WINDOW;
    for w in 1..=last_window {
        for i in 0..EVENTS_PER_WINDOW {
            let key = (w * EVENTS_PER_WINDOW + i) as i64;
            let e = EventBuilder::new(Scn::new(w), Opcode::Upsert)
                .source(SourceId::new(1 + (key % 2) as u16))
                .timestamp_ns(w)
                .key(KeyRef::Int(key))
                .payload(payload);
            writer.append(&e).unwrap();
        }
        writer.end_window(Scn::new(w), w).unwrap();
    }
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("shop.sqlite")).unwrap());
    let stop = CancellationToken::new();
    let mut ps = ProducerSettings::new(format!("http://{relay_addr}"));
    ps.max_bytes = 8 << 20;
    ps.wait = Duration::from_millis(50);
    let t = Instant::now();
    let producer = tokio::spawn(run_producer(store.clone(), ps, stop.clone()));
    while store.log_status().unwrap().last_scn < Some(Scn::new(last_window)) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t.elapsed();
    stop.cancel();
    producer.await.unwrap().unwrap();
    println!(
        "producer (relay HTTP -> SQLite log):         {}",
        rate(events, took)
    );

    // 2. Applier: log -> snapshot.
    let settings = ApplierSettings::default();
    let t = Instant::now();
    while apply_step(store.as_ref(), &settings).unwrap().windows > 0 {}
    println!(
        "applier (log -> snapshot, distinct keys):    {}",
        rate(events, t.elapsed())
    );

    // 3. Snapshot served to one HTTP client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bs_addr = listener.local_addr().unwrap();
    let bs_stop = CancellationToken::new();
    tokio::spawn(databus_bootstrap::http::serve(
        BootstrapService::new(store.clone(), ServeSettings::default()),
        listener,
        bs_stop.clone(),
    ));
    let client = RelayClient::new(&format!("http://{bs_addr}"), Duration::from_secs(60)).unwrap();
    let mut cp = Checkpoint::beginning();
    cp.start_bootstrap(None);
    let mut rows = 0u64;
    let t = Instant::now();
    while cp.mode == ConsumptionMode::BootstrapSnapshot {
        let q: String = form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect();
        let r = client
            .get(&format!(
                "/v1/bootstrap/stream?max_bytes={}&checkpoint={q}",
                8 << 20
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        rows += EventView::parse_all(&r.body).unwrap().len() as u64;
        cp = Checkpoint::from_json(r.header("x-databus-checkpoint").unwrap()).unwrap();
    }
    println!(
        "snapshot served (HTTP, one client, 8 MiB pages): {}",
        rate(rows, t.elapsed())
    );
    assert_eq!(rows, events);
    bs_stop.cancel();
    relay_stop.cancel();
}

async fn seed_stage(dir: &tempfile::TempDir, seed_rows: u64) {
    // 4. Seeding from MariaDB.
    let db = databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default())
        .await
        .unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total DECIMAL(10,2), created DATETIME(3), qty INT NOT NULL)",
        &format!("INSERT INTO shop.orders SELECT seq, CONCAT('order note ', seq), seq / 100, '2024-05-06 07:08:09.123', seq % 1000 FROM shop.seq_1_to_{seed_rows}"),
    ])
    .await
    .unwrap();
    let seed_store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("seed.sqlite")).unwrap());
    let settings = SeedSettings {
        url: db.url(),
        password: None,
        tables: vec![SeedTable {
            source: SourceId::new(1),
            database: "shop".into(),
            table: "orders".into(),
        }],
        chunk_rows: 20_000,
    };
    let mariadbd = db.pid().unwrap_or(0);
    let cpu_before = (cpu_secs(std::process::id()), cpu_secs(mariadbd));
    let t = Instant::now();
    let report = seed(seed_store.clone(), &settings, |_| {}).await.unwrap();
    let took = t.elapsed();
    let cpu = (
        cpu_secs(std::process::id()) - cpu_before.0,
        cpu_secs(mariadbd) - cpu_before.1,
    );
    println!(
        "seeding (MariaDB -> SQLite snapshot, 5 cols): {}",
        rate(report.rows, took)
    );
    // CPU time does not depend on what else the machine runs: rows per CPU-second of this process
    // and of mariadbd together, and how many cores the seed kept busy.
    println!(
        "seeding CPU: {:.2} s here + {:.2} s mariadbd = {:.2} us/row ({:.0} rows per CPU-second), {:.2} cores busy",
        cpu.0,
        cpu.1,
        (cpu.0 + cpu.1) * 1e6 / report.rows as f64,
        report.rows as f64 / (cpu.0 + cpu.1),
        (cpu.0 + cpu.1) / took.as_secs_f64()
    );
    assert_eq!(seed_store.snapshot_status().unwrap().rows, seed_rows);
}

/// User + system CPU seconds of process `pid` so far (0 if it cannot be read).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is the 3rd field overall, utime the 14th, stime the 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports clock ticks of USER_HZ = 100 on x86_64.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
