//! Seeding from a real PostgreSQL while writes continue: the seed (a `postgres://` `[seed]` url, the
//! password apart from it), then the stream of the relay's slot from the seed's SCN, taken from the
//! connector directly and encoded as the relay encodes it, appended to the log and applied by the
//! applier, as the bootstrap producer and applier do. Every streamed change is checked against the
//! rows the seed stored (an insert of a key the snapshot already holds is an overlap; an update or a
//! delete whose before image is not the stored row is a gap), and the snapshot store ends equal to the
//! source, row by row.
//!
//! (The connector stands in for the relay here; the real relay and bootstrap processes are tested
//! together in `integration/tests/pg_bootstrap.rs`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use databus_bootstrap::applier::{ApplierSettings, run_applier};
use databus_bootstrap::seed::{SeedSettings, SeedTable, dump_table, seed};
use databus_bootstrap::store::{
    BootstrapStore, LogWindow, SnapshotQuery, SqliteStore, StoredEvent,
};
use databus_connectors::conformance::next_transaction;
use databus_connectors::postgres::{PgConfig, PgConnector};
use databus_connectors::{ChangeKind, Secret, SourceConnector, StartPosition};
use databus_core::{EventBuilder, EventView, Key, Opcode, SchemaId, Scn, SourceId};
use databus_filters::FilterSpec;
use databus_serde_formats::model::Row;
use databus_serde_formats::{RegisteredSchema, SchemaRegistry, TableSchema, event_key};
use databus_testkit::Postgres;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type State = BTreeMap<(u16, Key), (SchemaId, Vec<u8>)>;

fn tables() -> Vec<SeedTable> {
    vec![
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
    ]
}

/// The rows of the snapshot store (tombstones left out).
fn stored_rows(store: &dyn BootstrapStore) -> State {
    let mut state = State::new();
    let filter = FilterSpec::all();
    for t in tables() {
        let mut after_row = 0;
        loop {
            let rows = store
                .read(&SnapshotQuery {
                    source: t.source,
                    after_row,
                    since: None,
                    tombstones: false,
                    filter: &filter,
                    limit: 500,
                    max_bytes: 1 << 20,
                })
                .unwrap();
            let Some(last) = rows.last() else { break };
            after_row = last.row_id;
            for r in &rows {
                let (v, _) = EventView::parse(&r.frame).unwrap();
                assert_eq!(v.opcode(), Opcode::Upsert);
                state.insert(
                    (t.source.get(), v.key().to_owned()),
                    (v.schema(), v.payload().to_vec()),
                );
            }
        }
    }
    state
}

/// Encodes connector changes as the relay does (upserts of the after image, deletes with the before
/// image; the schema registry's encoder and ids).
struct Encoder {
    registry: SchemaRegistry,
    schemas: HashMap<String, RegisteredSchema>,
}

impl Encoder {
    fn event(
        &mut self,
        scn: Scn,
        ts: u64,
        table: &Arc<TableSchema>,
        opcode: Opcode,
        row: &Row,
    ) -> (u16, Key, SchemaId, Vec<u8>, StoredEvent) {
        let name = format!("{}.{}", table.database, table.table);
        let source = tables()
            .iter()
            .find(|t| format!("{}.{}", t.database, t.table) == name)
            .expect("a seeded table")
            .source;
        let registered = self
            .schemas
            .entry(format!("{name}/{:?}", table.columns))
            .or_insert_with(|| self.registry.register(table).unwrap())
            .clone();
        let key = event_key(table, row).unwrap();
        let mut payload = Vec::new();
        registered.encoder.encode(row, &mut payload).unwrap();
        let mut frame = Vec::new();
        EventBuilder::new(scn, opcode)
            .source(source)
            .timestamp_ns(ts)
            .schema(registered.id)
            .key(key.as_ref())
            .payload(&payload)
            .write_to_vec(&mut frame);
        let stored = StoredEvent::from_frame(&frame).unwrap();
        (source.get(), key, registered.id, payload, stored)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_then_stream_from_its_scn_equals_the_source_row_by_row() {
    let pg = Postgres::start().await.unwrap();
    pg.exec(&[
        "CREATE SCHEMA shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64), total NUMERIC(10,2), \
         created TIMESTAMP(3), flag SMALLINT NOT NULL DEFAULT 0)",
        "CREATE TABLE shop.customers (name VARCHAR(32) PRIMARY KEY, age INT)",
        "ALTER TABLE shop.orders REPLICA IDENTITY FULL",
        "ALTER TABLE shop.customers REPLICA IDENTITY FULL",
        "INSERT INTO shop.orders SELECT id, 'note ' || id, id + 0.25, \
         TIMESTAMP '2024-01-02 03:04:05' + (id % 1000) * INTERVAL '1 millisecond', id % 3 \
         FROM generate_series(0, 1999) AS id",
        "INSERT INTO shop.customers VALUES ('ada', 36), ('bob', 41), ('cy', NULL)",
    ])
    .await
    .unwrap();
    // The relay's connector: its first start creates the publication and the slot the seed is
    // positioned in.
    let mut config = PgConfig::new(
        "127.0.0.1",
        pg.port(),
        "postgres",
        Postgres::PASSWORD,
        "postgres",
    );
    config.tables = vec!["shop.orders".into(), "shop.customers".into()];
    config.heartbeat_interval = Duration::from_millis(200);
    let mut relay = PgConnector::new(config.clone()).unwrap();
    relay.start(StartPosition::Now).await.unwrap();
    relay.shutdown().await.unwrap();

    // Writes continue for the whole test.
    let writes = Arc::new(AtomicU64::new(0));
    let writer_stop = CancellationToken::new();
    let mut writer = Some({
        let stop = writer_stop.clone();
        let writes = writes.clone();
        let client = pg.client().await.unwrap();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let id = (n * 7919) % 2600;
                let stmt = match n % 5 {
                    0 => format!("DELETE FROM shop.orders WHERE id = {id}"),
                    1 => format!(
                        "INSERT INTO shop.orders (id, note) VALUES ({id}, 'w{n}') \
                         ON CONFLICT (id) DO UPDATE SET note = 'w{n}', total = {n}.5"
                    ),
                    2 => format!(
                        "UPDATE shop.orders SET flag = flag + 1, created = now() WHERE id = {id}"
                    ),
                    3 => format!(
                        "INSERT INTO shop.customers VALUES ('c{}', {n}) \
                         ON CONFLICT (name) DO UPDATE SET age = {n}",
                        n % 40
                    ),
                    _ => format!("UPDATE shop.orders SET note = NULL WHERE id = {id}"),
                };
                client.batch_execute(&stmt).await.unwrap();
                writes.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while writes.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the writer did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The seed, as `[seed] url = "postgres://…"` with password_file gives it.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("shop.sqlite")).unwrap());
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?slot=databus&publication=databus",
        pg.port()
    );
    let password = Secret::new(Postgres::PASSWORD);
    let settings = SeedSettings {
        url: url.clone(),
        password: Some(password.clone()),
        tables: tables(),
        chunk_rows: 300,
    };
    let writes_before = writes.load(Ordering::SeqCst);
    let report = seed(store.clone(), &settings, |_| {}).await.unwrap();
    let writes_during = writes.load(Ordering::SeqCst) - writes_before;
    assert!(store.snapshot_status().unwrap().seeded);
    assert!(report.rows > 1500, "{report}");
    let mut model = stored_rows(store.as_ref());
    assert_eq!(model.len() as u64, report.rows, "{report}");

    // The stream from the seed's SCN, applied as the producer and the applier would.
    store.start_log(report.scn).unwrap();
    let stop = CancellationToken::new();
    let applier = tokio::spawn(run_applier(
        store.clone(),
        ApplierSettings::default(),
        stop.clone(),
    ));
    let mut stream = PgConnector::new(config.clone()).unwrap();
    stream
        .start(StartPosition::After(report.scn))
        .await
        .unwrap();
    let mut encoder = Encoder {
        registry: SchemaRegistry::in_memory(),
        schemas: HashMap::new(),
    };
    let mut streamed = 0u64;
    let mut last_scn = report.scn;
    loop {
        assert!(Instant::now() < deadline, "the stream did not catch up");
        let t = next_transaction(&mut stream).await;
        assert!(t.scn > last_scn, "scns increase from the seed's");
        last_scn = t.scn;
        streamed += 1;
        let mut events = Vec::new();
        let mut final_marker = false;
        for change in &t.changes {
            let ts = t.commit_timestamp_ns;
            if let Some(before) = &change.before {
                // The before image is the row the store holds: the stream continues the seed.
                let (source, key, schema, payload, _) =
                    encoder.event(t.scn, ts, &change.table, Opcode::Upsert, before);
                assert_eq!(
                    model.get(&(source, key.clone())),
                    Some(&(schema, payload)),
                    "gap: {:?} at SCN {} of a row the seed does not hold as its before image",
                    change.kind,
                    t.scn
                );
            }
            match change.kind {
                ChangeKind::Insert | ChangeKind::Update => {
                    let after = change.after.as_ref().unwrap();
                    let (source, key, schema, payload, event) =
                        encoder.event(t.scn, ts, &change.table, Opcode::Upsert, after);
                    if change.kind == ChangeKind::Insert {
                        assert!(
                            !model.contains_key(&(source, key.clone())),
                            "overlap: an insert at SCN {} of a row the seed already holds",
                            t.scn
                        );
                    }
                    final_marker |= change.table.table == "customers"
                        && after[0] == databus_serde_formats::model::Value::Text("zz-final".into());
                    model.insert((source, key), (schema, payload));
                    events.push(event);
                }
                ChangeKind::Delete => {
                    let before = change.before.as_ref().unwrap();
                    let (source, key, _, _, event) =
                        encoder.event(t.scn, ts, &change.table, Opcode::Delete, before);
                    model.remove(&(source, key));
                    events.push(event);
                }
            }
        }
        store
            .append(&[LogWindow {
                scn: t.scn,
                timestamp_ns: t.commit_timestamp_ns,
                events,
            }])
            .unwrap();
        if streamed >= 30
            && let Some(writer) = writer.take()
        {
            // Enough of the stream after the seed: stop the writer and mark the end.
            writer_stop.cancel();
            writer.await.unwrap();
            pg.exec(&["INSERT INTO shop.customers VALUES ('zz-final', 1)"])
                .await
                .unwrap();
        }
        if final_marker {
            break;
        }
    }
    stream.shutdown().await.unwrap();
    while store.snapshot_status().unwrap().applied_scn < Some(last_scn) {
        assert!(Instant::now() < deadline, "the applier did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    applier.await.unwrap().unwrap();

    // Row by row: the snapshot store equals the model and the source.
    let mut source = State::new();
    for t in tables() {
        for (key, schema, payload) in dump_table(&url, Some(&password), &t).await.unwrap() {
            source.insert((t.source.get(), key), (schema, payload));
        }
    }
    let stored = stored_rows(store.as_ref());
    eprintln!(
        "seed at SCN {} ({} rows, {writes_during} writes during the seed), {streamed} transactions \
         streamed after it, {} rows at the end",
        report.scn,
        report.rows,
        source.len()
    );
    assert!(writes_during > 0, "writes continued during the seed");
    assert!(source.len() > 1500);
    assert_eq!(
        model, source,
        "the seed plus the stream after it is the source"
    );
    for (k, v) in &source {
        assert_eq!(stored.get(k), Some(v), "row {k:?}");
    }
    assert_eq!(stored, source);
}
