//! The snapshot conformance suite against a real PostgreSQL (one private server per test): every
//! column type the connector supports (JSON and JSONB, arrays, an enum), a composite primary key whose
//! text part holds a quote and a backslash; plus the PostgreSQL-specific positions: commits the stream
//! does not deliver (unpublished tables) between the last delivered transaction and the snapshot, and
//! a slot with nothing to deliver before the snapshot.
//!
//! The stream's slot (`databus`) and publication exist before anything is written, as they do when a
//! relay runs: the snapshot is positioned in that slot's stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use databus_connectors::conformance::next_transaction;
use databus_connectors::postgres::{PgConfig, PgConnector, PgSnapshotSource};
use databus_connectors::snapshot_conformance::SnapshotHarness;
use databus_connectors::{Snapshot, SnapshotSource, SourceConnector, StartPosition, TableName};
use databus_core::Scn;
use databus_testkit::Postgres;

struct PgHarness {
    pg: Postgres,
    next_id: Arc<AtomicU64>,
}

/// The statements inserting row `k` into both tables.
fn insert_statements(k: u64) -> [String; 2] {
    let d = k % 28 + 1;
    let h = k % 256;
    [
        format!(
            "INSERT INTO s.t1 VALUES ({k}, {i2}, {i4}, {k}.{c:02}, {k}.125, 1.5, {k}/3.0, {b}, 'héllo {k}', \
             'v{k}', 'ab', '\\x00ff{h:02x}', '2024-01-{d:02}', '12:34:56.789', \
             '2024-02-03 04:05:06.123456', '2024-01-01 00:00:{d:02}.5+02', '1 day {k} hours', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a{h:02x}', '{{\"k\": {k}, \"a\": [1, 2]}}', \
             '{{\"b\": {k}}}', '{m}', '{{1,{k}}}', '{{\"x y\",NULL}}', NULL)",
            i2 = (k % 100) as i64 - 50,
            i4 = k as i64 * 7 - 100,
            c = k % 100,
            b = k % 2 == 0,
            m = ["sad", "ok", "happy"][(k % 3) as usize],
        ),
        format!("INSERT INTO s.t2 VALUES ({}, 'o''k\\{k}', {k})", k % 3),
    ]
}

async fn commit(client: &tokio_postgres::Client, next_id: &AtomicU64, rows: usize) {
    let mut sql = String::from("BEGIN;");
    for i in 0..rows {
        let k = next_id.fetch_add(1, Ordering::SeqCst);
        let [t1, t2] = insert_statements(k);
        sql.push_str(if i % 2 == 0 { &t1 } else { &t2 });
        sql.push(';');
    }
    sql.push_str("COMMIT");
    client.batch_execute(&sql).await.expect("insert");
}

impl PgHarness {
    async fn new() -> Self {
        let pg = Postgres::start().await.expect("start postgres");
        pg.exec(&[
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
            "CREATE SCHEMA s",
            "CREATE TABLE s.t1 (id BIGINT PRIMARY KEY, i2 SMALLINT, i4 INT, n NUMERIC(10,2), nu NUMERIC, \
             f4 REAL, f8 DOUBLE PRECISION, b BOOLEAN, tx TEXT, vc VARCHAR(20), ch CHAR(5), by BYTEA, \
             d DATE, tm TIME(3), ts TIMESTAMP, tz TIMESTAMPTZ(3), iv INTERVAL, u UUID, j JSON, jb JSONB, \
             m mood, ai INT[], at TEXT[], nn INT)",
            "CREATE TABLE s.t2 (a INT, b VARCHAR(10), v BIGINT, PRIMARY KEY (a, b))",
            "ALTER TABLE s.t1 REPLICA IDENTITY FULL",
            "ALTER TABLE s.t2 REPLICA IDENTITY FULL",
            "CREATE SCHEMA other",
            "CREATE TABLE other.x (id BIGSERIAL PRIMARY KEY)",
            "CREATE PUBLICATION databus FOR TABLE s.t1, s.t2",
            // The relay's slot, as a running relay has it.
            "SELECT pg_create_logical_replication_slot('databus', 'pgoutput')",
        ])
        .await
        .expect("schema");
        Self {
            pg,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn config(&self) -> PgConfig {
        let mut config = PgConfig::new(
            "127.0.0.1",
            self.pg.port(),
            "postgres",
            Postgres::PASSWORD,
            "postgres",
        );
        config.tables = vec!["s.t1".into(), "s.t2".into()];
        config.heartbeat_interval = Duration::from_millis(200);
        config.read_timeout = Duration::from_secs(10);
        config
    }
}

impl SnapshotHarness for PgHarness {
    type Source = PgSnapshotSource;
    type Connector = PgConnector;

    async fn snapshot_source(&mut self) -> PgSnapshotSource {
        PgSnapshotSource::new(&self.config()).expect("config")
    }

    async fn connector(&mut self) -> PgConnector {
        PgConnector::new(self.config()).expect("config")
    }

    fn tables(&self) -> Vec<TableName> {
        vec![TableName::new("s", "t1"), TableName::new("s", "t2")]
    }

    async fn insert(&mut self, rows: usize) {
        let client = self.pg.client().await.expect("connect");
        commit(&client, &self.next_id, rows).await;
    }

    async fn concurrent_inserts(
        &mut self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.pg.client().await.expect("connect");
        let next_id = self.next_id.clone();
        // Paced, so that the stream has a few hundred transactions rather than thousands while a
        // snapshot (two SCRAM logins, a slot copy, a slot) opens.
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let last = stop.is_cancelled();
                commit(&client, &next_id, 1 + n % 3).await;
                n += 1;
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    }
}

databus_connectors::snapshot_conformance_suite!(PgHarness::new());

/// Transactions the stream does not deliver (an unpublished table) commit after the last delivered
/// one: the snapshot is still at the last delivered transaction, not at the last commit before it,
/// and the stream after it starts with the next delivered one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_commits_before_the_snapshot_do_not_move_its_position() {
    let mut h = PgHarness::new().await;
    let mut c = h.connector().await;
    c.start(StartPosition::Now).await.expect("start");
    h.insert(2).await;
    let delivered = next_transaction(&mut c).await.scn;
    for _ in 0..3 {
        h.pg.exec(&["INSERT INTO other.x DEFAULT VALUES"])
            .await
            .expect("uncaptured");
    }
    let mut source = h.snapshot_source().await;
    let snapshot = source.open().await.expect("open");
    assert_eq!(snapshot.position().scn, delivered);
    snapshot.close().await.expect("close");
    h.insert(1).await;
    let next = next_transaction(&mut c).await;
    c.shutdown().await.expect("shutdown");
    let mut resumed = h.connector().await;
    resumed
        .start(StartPosition::After(delivered))
        .await
        .expect("start after the snapshot");
    assert_eq!(next_transaction(&mut resumed).await.scn, next.scn);
    resumed.shutdown().await.expect("shutdown");
}

/// A slot created after the last write has nothing to deliver before the snapshot: the position is the
/// slot's confirmed position, and the stream after it is exactly what follows the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_with_nothing_before_the_snapshot() {
    let mut h = PgHarness::new().await;
    h.insert(3).await;
    h.pg.exec(&[
        "SELECT pg_drop_replication_slot('databus')",
        "SELECT pg_create_logical_replication_slot('databus', 'pgoutput')",
    ])
    .await
    .expect("a new slot");
    let confirmed =
        h.pg.query_string("SELECT (confirmed_flush_lsn - '0/0')::text FROM pg_replication_slots")
            .await
            .expect("slot")
            .expect("one slot");
    let mut source = h.snapshot_source().await;
    let mut snapshot = source.open().await.expect("open");
    assert_eq!(
        snapshot.position().scn,
        Scn::new(confirmed.parse().expect("a number"))
    );
    let t = TableName::new("s", "t1");
    let rows = snapshot.read_chunk(&t, None, 100).await.expect("rows");
    assert_eq!(rows.rows.len(), 2, "rows 1 and 3 of the first transaction");
    let at = snapshot.position().clone();
    snapshot.close().await.expect("close");
    h.insert(1).await;
    let mut c = h.connector().await;
    c.start(at.resume())
        .await
        .expect("start after the snapshot");
    let next = next_transaction(&mut c).await;
    assert!(next.scn > at.scn);
    assert_eq!(
        next.changes.len(),
        1,
        "only the transaction after the snapshot"
    );
    c.shutdown().await.expect("shutdown");
}
