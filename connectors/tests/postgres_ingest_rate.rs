//! A first measurement of the PostgreSQL connector's ingest rate (WAL → decoded rows → Avro payloads)
//! beside `pg_recvlogical` writing the raw pgoutput stream of the same WAL to /dev/null, which bounds what
//! the server can send. Ignored by default (it prints, it does not assert a time):
//!
//! ```sh
//! DATABUS_PG_BENCH_ROWS=200000 cargo test --release -p databus-connectors --test postgres_ingest_rate -- --ignored --nocapture
//! ```

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use databus_connectors::postgres::{PgConfig, PgConnector};
use databus_connectors::{ConnectorEvent, SourceConnector, StartPosition};
use databus_core::Scn;
use databus_serde_formats::{RegisteredSchema, SchemaRegistry, TableSchema};
use databus_testkit::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn ingest_rate_beside_pg_recvlogical() {
    let rows: u64 = std::env::var("DATABUS_PG_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pg = Postgres::start().await.expect("start postgres");
    pg.exec(&[
        "CREATE TABLE public.w (id BIGINT PRIMARY KEY, n INT, v TEXT, t TIMESTAMPTZ)",
        "ALTER TABLE public.w REPLICA IDENTITY FULL",
        "CREATE PUBLICATION databus FOR TABLE public.w",
        "SELECT pg_create_logical_replication_slot('databus', 'pgoutput')",
        "SELECT pg_create_logical_replication_slot('baseline', 'pgoutput')",
    ])
    .await
    .expect("setup");
    // One change per transaction (the shape of most OLTP sources), in batches of 1000 transactions:
    // 6 in 10 insert a new row, 3 update a live one, 1 deletes the oldest live one.
    let start_lsn = pg
        .query_string("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text")
        .await
        .expect("lsn")
        .expect("lsn")
        .parse::<u64>()
        .expect("number");
    let (mut change, mut id, mut deleted) = (0u64, 0u64, 0u64);
    while change < rows {
        let mut batch = Vec::new();
        for _ in 0..1000.min(rows - change) {
            change += 1;
            let live = id - deleted;
            batch.push(match change % 10 {
                _ if live < 10 || change % 10 < 6 => {
                    id += 1;
                    format!(
                        "INSERT INTO public.w VALUES ({id}, {}, 'value {id}', now())",
                        id % 1000
                    )
                }
                6..=8 => format!(
                    "UPDATE public.w SET n = n + 1, v = 'value {change}' WHERE id = {}",
                    deleted + 1 + change.wrapping_mul(7919) % live
                ),
                _ => {
                    deleted += 1;
                    format!("DELETE FROM public.w WHERE id = {deleted}")
                }
            });
        }
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        pg.exec(&refs).await.expect("insert");
    }
    let end_lsn_text = pg
        .query_string("SELECT pg_current_wal_insert_lsn()::text")
        .await
        .expect("lsn")
        .expect("lsn");

    // Baseline: pg_recvlogical to /dev/null until the end LSN.
    let t = Instant::now();
    let out = Command::new("pg_recvlogical")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
        ])
        .args([
            "-d",
            "postgres",
            "-S",
            "baseline",
            "--start",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=1", "-o", "publication_names=databus"])
        .arg(format!("--endpos={end_lsn_text}"))
        .env("PGPASSWORD", Postgres::PASSWORD)
        .output()
        .expect("run pg_recvlogical");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let baseline = t.elapsed();

    // The connector, encoding every row as the relay does.
    let mut config = PgConfig::new(
        "127.0.0.1",
        pg.port(),
        "postgres",
        Postgres::PASSWORD,
        "postgres",
    );
    config.tables = vec!["public.w".into()];
    config.heartbeat_interval = Duration::from_secs(5);
    let mut c = PgConnector::new(config).expect("config");
    let registry = SchemaRegistry::in_memory();
    let t = Instant::now();
    c.start(StartPosition::After(Scn::new(start_lsn)))
        .await
        .expect("start");
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut payload = Vec::new();
    let mut cached: Option<(Arc<TableSchema>, RegisteredSchema)> = None;
    while seen < rows {
        match c.next_event().await.expect("event").expect("running") {
            ConnectorEvent::Transaction(tx) => {
                for ch in &tx.changes {
                    // Registered once per schema version, as the relay does.
                    if cached
                        .as_ref()
                        .is_none_or(|(t, _)| !Arc::ptr_eq(t, &ch.table))
                    {
                        let r = registry.register(&ch.table).expect("register");
                        cached = Some((Arc::clone(&ch.table), r));
                    }
                    let (_, schema) = cached.as_ref().expect("cached");
                    payload.clear();
                    schema
                        .encoder
                        // A delete's event carries the row as it was (REPLICA IDENTITY FULL).
                        .encode(
                            ch.after
                                .as_ref()
                                .or(ch.before.as_ref())
                                .expect("a row image"),
                            &mut payload,
                        )
                        .expect("encode");
                    bytes += payload.len();
                    seen += 1;
                }
            }
            ConnectorEvent::SchemaChange { .. } | ConnectorEvent::Heartbeat { .. } => {}
        }
    }
    let ours = t.elapsed();
    c.shutdown().await.expect("shutdown");
    assert_eq!(seen, rows, "every change arrived");
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "rows {rows}: pg_recvlogical {:.2?} ({:.0} rows/s); connector + Avro {:.2?} ({:.0} rows/s, {bytes} payload bytes); ratio {:.2}x",
        baseline,
        rate(baseline),
        ours,
        rate(ours),
        rate(ours) / rate(baseline)
    );
}
