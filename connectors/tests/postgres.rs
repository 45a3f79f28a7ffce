//! Behaviour of the PostgreSQL connector against a real, private PostgreSQL: types, TRUNCATE, key
//! changes, schema changes, TOAST, the replica-identity check, resume after restarts, and the slot's
//! confirmed position following only acknowledgements.

use std::time::Duration;

use databus_connectors::conformance::{DEADLINE, next_transaction};
use databus_connectors::postgres::{PgConfig, PgConnector};
use databus_connectors::{
    ChangeKind, ConnectorError, ConnectorEvent, DdlKind, SourceConnector, StartPosition,
};
use databus_core::Scn;
use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::decode::decode_json;
use databus_serde_formats::model::{ColumnType, Value};
use databus_testkit::Postgres;

async fn server(setup: &[&str]) -> Postgres {
    let pg = Postgres::start().await.expect("start postgres");
    pg.exec(setup).await.expect("setup");
    pg
}

fn config(pg: &Postgres, tables: &[&str]) -> PgConfig {
    let mut c = PgConfig::new(
        "127.0.0.1",
        pg.port(),
        "postgres",
        Postgres::PASSWORD,
        "postgres",
    );
    c.tables = tables.iter().map(|t| (*t).to_owned()).collect();
    c.heartbeat_interval = Duration::from_millis(200);
    c
}

async fn started(pg: &Postgres, tables: &[&str], from: StartPosition) -> PgConnector {
    let mut c = PgConnector::new(config(pg, tables)).expect("config");
    c.start(from).await.expect("start");
    c
}

/// The next schema change (skipping heartbeats), then the transaction it precedes.
async fn next_schema_change(c: &mut PgConnector) -> (Scn, Vec<(String, ColumnType)>) {
    loop {
        let e = tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("an event before the deadline")
            .expect("no error")
            .expect("not stopped");
        match e {
            ConnectorEvent::SchemaChange { scn, schema, .. } => {
                return (
                    scn,
                    schema
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), c.column_type.clone()))
                        .collect(),
                );
            }
            ConnectorEvent::Transaction(t) => panic!("a transaction before a schema change: {t:?}"),
            ConnectorEvent::Heartbeat { .. } => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_type_round_trips() {
    let pg = server(&[
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
        "CREATE TABLE public.t (id INT PRIMARY KEY, i2 SMALLINT, i8 BIGINT, n NUMERIC(10,2), nu NUMERIC, \
         f4 REAL, f8 DOUBLE PRECISION, b BOOLEAN, tx TEXT, vc VARCHAR(5), ch CHAR(3), by BYTEA, d DATE, \
         tm TIME(3), ts TIMESTAMP, tz TIMESTAMPTZ, iv INTERVAL, u UUID, j JSON, jb JSONB, m mood, \
         ai INT[], at TEXT[], ab BOOLEAN[])",
        "ALTER TABLE public.t REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.t"], StartPosition::Now).await;
    pg.exec(&[
        "INSERT INTO public.t VALUES (1, -7, 9007199254740993, -12.30, 123456789012345678901234.5, 1.5, \
         -2.25, true, 'héllo', 'ab', 'x', '\\x00ff10', '2024-02-29', '13:14:15.123', \
         '2001-02-03 04:05:06.789012', '2001-02-03 04:05:06.5+02', '1 year 2 mons 3 days 04:05:06.5', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null}', 'happy', \
         '{{1,2},{3,NULL}}', '{\"a b\",\"c\\\"d\",NULL}', '{t,f}')",
        "INSERT INTO public.t (id) VALUES (2)",
    ])
    .await
    .expect("insert");
    let (_, columns) = next_schema_change(&mut c).await;
    let types: Vec<ColumnType> = columns.into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        types,
        vec![
            ColumnType::Int { unsigned: false },
            ColumnType::SmallInt { unsigned: false },
            ColumnType::BigInt { unsigned: false },
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            },
            ColumnType::Text { max_chars: None },
            ColumnType::Float,
            ColumnType::Double,
            ColumnType::TinyInt { unsigned: false },
            ColumnType::Text { max_chars: None },
            ColumnType::Text { max_chars: Some(5) },
            ColumnType::Text { max_chars: Some(3) },
            ColumnType::Bytes { max_bytes: None },
            ColumnType::Date,
            ColumnType::Time { fsp: 3 },
            ColumnType::DateTime { fsp: 6 },
            ColumnType::Timestamp { fsp: 6 },
            ColumnType::Text { max_chars: None },
            ColumnType::Text {
                max_chars: Some(36)
            },
            ColumnType::Json,
            ColumnType::Json,
            ColumnType::Enum {
                values: vec!["sad".into(), "ok".into(), "happy".into()]
            },
            ColumnType::Json,
            ColumnType::Json,
            ColumnType::Json,
        ]
    );
    let t1 = next_transaction(&mut c).await;
    let row = t1.changes[0].after.clone().expect("after");
    assert_eq!(
        row,
        vec![
            Value::Int(1),
            Value::Int(-7),
            Value::Int(9_007_199_254_740_993),
            Value::Decimal("-12.30".into()),
            Value::Text("123456789012345678901234.5".into()),
            Value::Float(1.5),
            Value::Double(-2.25),
            Value::Int(1),
            Value::Text("héllo".into()),
            Value::Text("ab".into()),
            Value::Text("x  ".into()),
            Value::Bytes(vec![0, 0xff, 0x10]),
            Value::Date {
                year: 2024,
                month: 2,
                day: 29
            },
            Value::Time {
                negative: false,
                micros: 47_655_123_000
            },
            Value::DateTime {
                year: 2001,
                month: 2,
                day: 3,
                hour: 4,
                minute: 5,
                second: 6,
                micros: 789_012
            },
            // 2001-02-03T02:05:06.5Z
            Value::Timestamp(981_165_906_500_000),
            Value::Text("P1Y2M3DT4H5M6.5S".into()),
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            Value::Json("{\"a\": [1, 2]}".into()),
            Value::Json("{\"b\": null}".into()),
            Value::Enum(3),
            Value::Json("[[1,2],[3,null]]".into()),
            Value::Json("[\"a b\",\"c\\\"d\",null]".into()),
            Value::Json("[true,false]".into()),
        ]
    );
    // Through the Avro mapping: the row encodes with the table's Avro schema and reads back as the
    // expected values (rendered as JSON by the serde-formats decoder).
    let registry = SchemaRegistry::in_memory();
    let registered = registry.register(&t1.changes[0].table).expect("register");
    let mut payload = Vec::new();
    registered
        .encoder
        .encode(&row, &mut payload)
        .expect("encode");
    let writer = registry.get(registered.id).expect("schema").avro;
    let json = decode_json(&payload, &writer, None).expect("decode");
    assert_eq!(
        json,
        serde_json::json!({
            "id": 1, "i2": -7, "i8": 9_007_199_254_740_993_i64, "n": "-12.30",
            "nu": "123456789012345678901234.5", "f4": 1.5, "f8": -2.25, "b": 1, "tx": "héllo",
            "vc": "ab", "ch": "x  ", "by": "AP8Q", "d": "2024-02-29", "tm": "13:14:15.123000",
            "ts": "2001-02-03T04:05:06.789012", "tz": "2001-02-03T02:05:06.500000Z",
            "iv": "P1Y2M3DT4H5M6.5S", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "j": {"a": [1, 2]}, "jb": {"b": null}, "m": "happy",
            "ai": [[1, 2], [3, null]], "at": ["a b", "c\"d", null], "ab": [true, false],
        })
    );
    let t2 = next_transaction(&mut c).await;
    let row = t2.changes[0].after.clone().expect("after");
    assert_eq!(row[0], Value::Int(2));
    assert!(row[1..].iter().all(|v| *v == Value::Null), "{row:?}");
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_types_are_refused_naming_the_column() {
    let pg = server(&[
        "CREATE TABLE public.g (id INT PRIMARY KEY, p POINT)",
        "ALTER TABLE public.g REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.g"], StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.g VALUES (1, '(1,2)')"])
        .await
        .expect("insert");
    let err = loop {
        match tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("deadline")
        {
            Err(e) => break e,
            Ok(Some(ConnectorEvent::Heartbeat { .. })) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    };
    let text = err.to_string();
    assert!(matches!(err, ConnectorError::Decode { .. }), "{text}");
    assert!(
        text.contains("public.g") && text.contains("column p") && text.contains("point"),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_full_replica_identity_or_primary_key_are_refused() {
    let pg = server(&[
        "CREATE TABLE public.d (id INT PRIMARY KEY)",
        "CREATE TABLE public.nopk (v INT)",
        "ALTER TABLE public.nopk REPLICA IDENTITY FULL",
        "CREATE TABLE public.parted (id INT PRIMARY KEY) PARTITION BY RANGE (id)",
        "CREATE TABLE public.fine (id INT PRIMARY KEY)",
        "ALTER TABLE public.fine REPLICA IDENTITY FULL",
    ])
    .await;
    // `check-source`: the same problems, without starting or creating anything.
    let problems = PgConnector::check_source(&config(&pg, &["public.d", "public.nopk"]))
        .await
        .expect("check");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("ALTER TABLE \"public\".\"d\" REPLICA IDENTITY FULL"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("table public.nopk has no primary key"),
        "{problems:?}"
    );
    let parted = PgConnector::check_source(&config(&pg, &["public.parted"]))
        .await
        .expect("check");
    assert!(
        parted.len() == 1 && parted[0].contains("table public.parted is partitioned"),
        "{parted:?}"
    );
    pg.exec(&[
        "CREATE PUBLICATION partial FOR TABLE public.fine WITH (publish = 'insert, update')",
    ])
    .await
    .expect("publication");
    let mut partial = config(&pg, &["public.fine"]);
    partial.publication = "partial".into();
    let problems = PgConnector::check_source(&partial).await.expect("check");
    assert!(
        problems.len() == 1 && problems[0].contains("does not publish every kind of change"),
        "{problems:?}"
    );
    let ready = PgConnector::check_source(&config(&pg, &["public.fine"]))
        .await
        .expect("check");
    assert!(ready.is_empty(), "{ready:?}");
    assert_eq!(
        pg.query_string("SELECT count(*)::text FROM pg_replication_slots")
            .await
            .expect("slots")
            .as_deref(),
        Some("0"),
        "check_source creates no slot"
    );
    let mut c = PgConnector::new(config(&pg, &["public.d", "public.nopk"])).expect("config");
    let err = c.start(StartPosition::Now).await.expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(err, ConnectorError::Misconfigured { .. }),
        "{text}"
    );
    assert!(
        text.contains("table public.d has REPLICA IDENTITY DEFAULT; run ALTER TABLE \"public\".\"d\" REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert!(
        text.contains("table public.nopk has no primary key"),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_key_change_and_full_before_images() {
    let pg = server(&[
        "CREATE TABLE public.k (a INT, b INT, v TEXT, PRIMARY KEY (a, b))",
        "ALTER TABLE public.k REPLICA IDENTITY FULL",
        "INSERT INTO public.k VALUES (1, 1, 'x'), (2, 2, 'y')",
    ])
    .await;
    let mut c = started(&pg, &["public.k"], StartPosition::Now).await;
    pg.exec(&["UPDATE public.k SET b = 5 WHERE a = 1 AND b = 1"])
        .await
        .expect("key change");
    pg.exec(&["DELETE FROM public.k WHERE a = 2"])
        .await
        .expect("delete");
    pg.exec_tx(&[
        "INSERT INTO public.k VALUES (7, 7, 'gone')",
        "TRUNCATE public.k",
        "INSERT INTO public.k VALUES (8, 8, 'kept')",
    ])
    .await
    .expect("truncate");
    let update = next_transaction(&mut c).await;
    let ch = &update.changes[0];
    assert_eq!(ch.kind, ChangeKind::Update);
    assert_eq!(
        ch.before,
        Some(vec![Value::Int(1), Value::Int(1), Value::Text("x".into())])
    );
    assert_eq!(
        ch.after,
        Some(vec![Value::Int(1), Value::Int(5), Value::Text("x".into())])
    );
    assert_eq!(ch.table.primary_key, vec![0, 1]);
    let delete = next_transaction(&mut c).await;
    assert_eq!(delete.changes[0].kind, ChangeKind::Delete);
    assert_eq!(
        delete.changes[0].before,
        Some(vec![Value::Int(2), Value::Int(2), Value::Text("y".into())]),
        "a delete carries the whole old row"
    );
    let truncate = next_transaction(&mut c).await;
    assert_eq!(truncate.table_changes.len(), 1);
    assert_eq!(truncate.table_changes[0].kind, DdlKind::Truncate);
    assert_eq!(truncate.table_changes[0].table.to_string(), "public.k");
    assert_eq!(
        truncate.changes.len(),
        1,
        "the insert before the truncate is erased by it; the one after stays: {:?}",
        truncate.changes
    );
    assert_eq!(
        truncate.changes[0].after.as_ref().map(|r| r[2].clone()),
        Some(Value::Text("kept".into()))
    );
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_column_is_a_new_schema_version() {
    let pg = server(&[
        "CREATE TABLE public.s (id INT PRIMARY KEY, v TEXT)",
        "ALTER TABLE public.s REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.s"], StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.s VALUES (1, 'a')"])
        .await
        .expect("insert");
    let (_, v1) = next_schema_change(&mut c).await;
    assert_eq!(v1.len(), 2);
    let first = next_transaction(&mut c).await;
    pg.exec(&[
        "ALTER TABLE public.s ADD COLUMN w INT",
        "INSERT INTO public.s VALUES (2, 'b', 3)",
    ])
    .await
    .expect("alter");
    let (scn, v2) = next_schema_change(&mut c).await;
    assert_eq!(
        v2.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["id", "v", "w"]
    );
    let second = next_transaction(&mut c).await;
    assert_eq!(
        second.scn, scn,
        "the schema change carries its first transaction's SCN"
    );
    assert!(second.scn > first.scn);
    assert_eq!(
        second.changes[0].after,
        Some(vec![Value::Int(2), Value::Text("b".into()), Value::Int(3)])
    );
    assert_eq!(second.changes[0].table.columns.len(), 3);
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_values_arrive_complete() {
    let pg = server(&[
        "CREATE TABLE public.big (id INT PRIMARY KEY, body TEXT, n INT)",
        "ALTER TABLE public.big ALTER COLUMN body SET STORAGE EXTERNAL",
        "ALTER TABLE public.big REPLICA IDENTITY FULL",
    ])
    .await;
    // 100 kB of text that does not compress away: stored out of line (TOAST).
    let body: String = (0..100_000u32)
        .map(|i| char::from(b'a' + ((i * 7919) % 26) as u8))
        .collect();
    pg.exec(&[&format!("INSERT INTO public.big VALUES (1, '{body}', 0)")])
        .await
        .expect("insert");
    let mut c = started(&pg, &["public.big"], StartPosition::Now).await;
    pg.exec(&["UPDATE public.big SET n = 1 WHERE id = 1"])
        .await
        .expect("update");
    let t = next_transaction(&mut c).await;
    let ch = &t.changes[0];
    let expected = vec![Value::Int(1), Value::Text(body.clone()), Value::Int(1)];
    assert_eq!(
        ch.after.as_ref(),
        Some(&expected),
        "the TOASTed body arrives whole"
    );
    assert_eq!(
        ch.before.as_ref().map(|r| r[1].clone()),
        Some(Value::Text(body))
    );
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_connector_and_server_restarts_and_slot_follows_acknowledgements() {
    let mut pg = server(&[
        "CREATE TABLE public.r (id INT PRIMARY KEY)",
        "ALTER TABLE public.r REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.r"], StartPosition::Now).await;
    for i in 1..=3 {
        pg.exec(&[&format!("INSERT INTO public.r VALUES ({i})")])
            .await
            .expect("insert");
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_transaction(&mut c).await);
    }
    // Acknowledge only the first: the slot's confirmed position follows it, not what was read.
    c.acknowledge(seen[0].scn);
    let slot_lsn = || async {
        pg.query_string(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'databus'",
        )
        .await
        .expect("slot")
        .expect("slot exists")
        .parse::<u64>()
        .expect("number")
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while slot_lsn().await != seen[0].scn.get() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never reached the acknowledged SCN"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stream has delivered past the acknowledgement: the slot stays where it was told.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slot_lsn().await, seen[0].scn.get());
    let lag = c.slot_lag_bytes().await.expect("lag").expect("slot");
    assert!(
        lag >= seen[2].scn.get() - seen[0].scn.get(),
        "the lag covers the unacknowledged transactions: {lag}"
    );
    c.shutdown().await.expect("shutdown");

    // A connector restart resumes exactly after the first transaction.
    let mut r = started(&pg, &["public.r"], StartPosition::After(seen[0].scn)).await;
    assert_eq!(next_transaction(&mut r).await.scn, seen[1].scn);
    assert_eq!(next_transaction(&mut r).await.scn, seen[2].scn);
    r.shutdown().await.expect("shutdown");

    // A resume point before the slot's confirmed position continues at it (the slot moves past the
    // last acknowledged transaction only while nothing unrecorded lies before it).
    let mut early = started(
        &pg,
        &["public.r"],
        StartPosition::After(Scn::new(seen[0].scn.get() - 1)),
    )
    .await;
    // The transaction at the confirmed position itself is re-sent (its commit is not before it).
    assert_eq!(next_transaction(&mut early).await.scn, seen[0].scn);
    assert_eq!(next_transaction(&mut early).await.scn, seen[1].scn);
    early.shutdown().await.expect("shutdown");

    // A PostgreSQL restart (crash): resume after the second, then a new commit follows the third.
    pg.kill9();
    pg.start_again().await.expect("restart postgres");
    let mut r = started(&pg, &["public.r"], StartPosition::After(seen[1].scn)).await;
    pg.exec(&["INSERT INTO public.r VALUES (4)"])
        .await
        .expect("insert");
    let third = next_transaction(&mut r).await;
    assert_eq!(
        third.scn, seen[2].scn,
        "no gap, no duplicate across the server restart"
    );
    let fourth = next_transaction(&mut r).await;
    assert!(fourth.scn > third.scn);
    assert_eq!(fourth.changes[0].after, Some(vec![Value::Int(4)]));
    r.shutdown().await.expect("shutdown");

    // A failover-like loss of the slot: a new slot holds nothing before its creation.
    pg.exec(&["SELECT pg_drop_replication_slot('databus')"])
        .await
        .expect("drop slot");
    let mut lost = PgConnector::new(config(&pg, &["public.r"])).expect("config");
    match lost.start(StartPosition::After(fourth.scn)).await {
        Err(ConnectorError::Purged { resume_after, .. }) => {
            assert!(resume_after.is_some_and(|s| s > fourth.scn))
        }
        other => panic!("expected Purged, got {other:?}"),
    }
    // A position beyond the server's WAL (a standby that had not replayed it) is refused.
    let mut ahead = PgConnector::new(config(&pg, &["public.r"])).expect("config");
    match ahead
        .start(StartPosition::After(Scn::new(u64::MAX / 2)))
        .await
    {
        Err(ConnectorError::UnknownPosition { .. }) => {}
        other => panic!("expected UnknownPosition, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_while_streaming_is_a_transient_error_then_resumes_exactly() {
    let pg = server(&[
        "CREATE TABLE public.q (id INT PRIMARY KEY)",
        "ALTER TABLE public.q REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.q"], StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.q VALUES (1)"])
        .await
        .expect("insert");
    let first = next_transaction(&mut c).await;
    // The relay recorded it: the connector may confirm the idle stream's position, and the fast
    // shutdown below can finish (its walsender waits for the connector to confirm all WAL sent).
    c.acknowledge(first.scn);
    // The relay's ingest polls the connector all the time; here the test does, while the server
    // restarts.
    let started_stop = std::time::Instant::now();
    let restart = tokio::spawn(async move {
        let mut pg = pg;
        pg.restart().await.expect("restart postgres");
        (pg, started_stop.elapsed())
    });
    let err = loop {
        match tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("the broken stream is noticed before the deadline")
        {
            Err(e) => break e,
            Ok(Some(ConnectorEvent::Heartbeat { .. })) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    };
    let (pg, stop_took) = restart.await.expect("restart task");
    assert!(
        stop_took < Duration::from_secs(25),
        "the fast shutdown finished without escalation: {stop_took:?}"
    );
    assert!(err.is_transient(), "{err}");
    pg.exec(&["INSERT INTO public.q VALUES (2)"])
        .await
        .expect("insert");
    // The relay retries with backoff; the old walsender may hold the slot for a moment (transient).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match c.start(StartPosition::After(first.scn)).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    }
    let second = next_transaction(&mut c).await;
    assert!(second.scn > first.scn);
    assert_eq!(second.changes[0].after, Some(vec![Value::Int(2)]));
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_spilled_by_the_server_is_one_transaction() {
    let pg = server(&[
        "CREATE TABLE public.l (id INT PRIMARY KEY, v TEXT)",
        "ALTER TABLE public.l REPLICA IDENTITY FULL",
        // Decoding spills to disk beyond 64 kB; protocol-v2 streaming is not requested, so the
        // transaction still arrives whole at its commit.
        "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'",
        "SELECT pg_reload_conf()",
    ])
    .await;
    let mut c = started(&pg, &["public.l"], StartPosition::Now).await;
    pg.exec_tx(&[
        "INSERT INTO public.l SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
        "UPDATE public.l SET v = 'y' WHERE id <= 5000",
    ])
    .await
    .expect("large transaction");
    pg.exec(&["INSERT INTO public.l VALUES (0, 'next')"])
        .await
        .expect("insert");
    let big = next_transaction(&mut c).await;
    assert_eq!(big.changes.len(), 25_000, "one transaction, whole");
    assert_eq!(big.changes[20_000].kind, ChangeKind::Update);
    let next = next_transaction(&mut c).await;
    assert!(next.scn > big.scn);
    assert_eq!(next.changes.len(), 1);
    c.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_enum_label_is_a_transient_error_then_a_new_schema_version() {
    let pg = server(&[
        "CREATE TYPE state AS ENUM ('new', 'done')",
        "CREATE TABLE public.e (id INT PRIMARY KEY, s state)",
        "ALTER TABLE public.e REPLICA IDENTITY FULL",
    ])
    .await;
    let mut c = started(&pg, &["public.e"], StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.e VALUES (1, 'done')"])
        .await
        .expect("insert");
    let (_, v1) = next_schema_change(&mut c).await;
    let first = next_transaction(&mut c).await;
    assert_eq!(
        first.changes[0].after,
        Some(vec![Value::Int(1), Value::Enum(2)])
    );
    pg.exec(&[
        "ALTER TYPE state ADD VALUE 'late'",
        "INSERT INTO public.e VALUES (2, 'late')",
    ])
    .await
    .expect("new label");
    let err = loop {
        match tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("deadline")
        {
            Err(e) => break e,
            Ok(Some(ConnectorEvent::Heartbeat { .. })) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    };
    assert!(matches!(err, ConnectorError::StaleSchema { .. }), "{err}");
    assert!(err.is_transient());
    c.start(StartPosition::After(first.scn))
        .await
        .expect("restart");
    let (_, v2) = next_schema_change(&mut c).await;
    assert_ne!(v1, v2);
    assert_eq!(
        v2[1].1,
        ColumnType::Enum {
            values: vec!["new".into(), "done".into(), "late".into()]
        }
    );
    let second = next_transaction(&mut c).await;
    assert_eq!(
        second.changes[0].after,
        Some(vec![Value::Int(2), Value::Enum(3)])
    );
    c.shutdown().await.expect("shutdown");
}

/// The next error from the stream, skipping heartbeats and transactions without captured changes;
/// panics on anything else.
async fn next_error(c: &mut PgConnector) -> ConnectorError {
    loop {
        match tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("an error before the deadline")
        {
            Err(e) => return e,
            Ok(Some(ConnectorEvent::Heartbeat { .. })) => {}
            // Transactions on published tables this connector does not capture.
            Ok(Some(ConnectorEvent::Transaction(t))) if t.changes.is_empty() => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_or_dropping_a_captured_table_stops_with_the_fix() {
    let pg = server(&[
        "CREATE TABLE public.n (id INT PRIMARY KEY)",
        "ALTER TABLE public.n REPLICA IDENTITY FULL",
        "CREATE TABLE public.o (id INT PRIMARY KEY)",
        "ALTER TABLE public.o REPLICA IDENTITY FULL",
        "CREATE PUBLICATION databus FOR TABLE public.n, public.o",
    ])
    .await;
    let mut c = started(&pg, &["public.n"], StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.n VALUES (1)"])
        .await
        .expect("insert");
    let first = next_transaction(&mut c).await;
    pg.exec(&[
        "ALTER TABLE public.n RENAME TO n2",
        "INSERT INTO public.n2 VALUES (2)",
    ])
    .await
    .expect("rename");
    let err = next_error(&mut c).await;
    let text = err.to_string();
    assert!(matches!(err, ConnectorError::RenamedAway { .. }), "{text}");
    assert!(
        text.contains("public.n") && text.contains("public.n2"),
        "{text}"
    );
    assert!(!err.is_transient());
    drop(c);

    let mut d = started(&pg, &["public.o"], StartPosition::After(first.scn)).await;
    pg.exec(&["DROP TABLE public.o"]).await.expect("drop");
    let err = next_error(&mut d).await;
    let text = err.to_string();
    assert!(
        matches!(err, ConnectorError::Misconfigured { .. }),
        "{text}"
    );
    assert!(
        text.contains("captured table public.o left publication databus")
            && text.contains("ALTER PUBLICATION \"databus\" ADD TABLE \"public\".\"o\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_a_unix_socket() {
    let pg = server(&[
        "CREATE TABLE public.us (id INT PRIMARY KEY)",
        "ALTER TABLE public.us REPLICA IDENTITY FULL",
    ])
    .await;
    let mut config = config(&pg, &["public.us"]);
    config.host = pg.socket_dir().to_string_lossy().into_owned();
    config.password = None;
    let mut c = PgConnector::new(config).expect("config");
    c.start(StartPosition::Now)
        .await
        .expect("start over the socket");
    pg.exec(&["INSERT INTO public.us VALUES (1)"])
        .await
        .expect("insert");
    let t = next_transaction(&mut c).await;
    assert_eq!(t.changes[0].after, Some(vec![Value::Int(1)]));
    c.shutdown().await.expect("shutdown");
}

/// A connector that falls behind the source reads rows whose relation or column was dropped since:
/// the catalog no longer has them under the Relation message's OID, and re-reading it never brings
/// them back (it used to be a transient stale-schema error, retried forever: the relay hung). The
/// table dropped and created again shows as a `Drop` table change before the new table's first row
/// (PostgreSQL does not decode the DROP; without it consumers kept the old table's rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_dropped_column_or_a_re_created_table_read_behind_the_source() {
    let pg = server(&[
        "CREATE TABLE public.d (id INT PRIMARY KEY, v TEXT, gone INT)",
        "ALTER TABLE public.d REPLICA IDENTITY FULL",
        "CREATE TABLE public.r (id INT PRIMARY KEY, v TEXT)",
        "ALTER TABLE public.r REPLICA IDENTITY FULL",
        "CREATE PUBLICATION databus FOR TABLE public.d, public.r",
    ])
    .await;
    let tables = ["public.d", "public.r"];
    let mut c = started(&pg, &tables, StartPosition::Now).await;
    pg.exec(&["INSERT INTO public.d VALUES (1, 'a', 10)"])
        .await
        .expect("insert");
    let first = next_transaction(&mut c).await;
    c.shutdown().await.expect("shutdown");
    // While the connector is away: a column dropped after a row that has it, and a table dropped and
    // created again (and published again) after a row of the old one.
    pg.exec(&[
        "INSERT INTO public.d VALUES (2, 'b', 20)",
        "ALTER TABLE public.d DROP COLUMN gone",
        "INSERT INTO public.d VALUES (3, 'c')",
        "INSERT INTO public.r VALUES (1, 'old')",
    ])
    .await
    .expect("writes");
    pg.exec_tx(&[
        "DROP TABLE public.r",
        "CREATE TABLE public.r (id INT PRIMARY KEY, v TEXT)",
        "ALTER TABLE public.r REPLICA IDENTITY FULL",
        "ALTER PUBLICATION databus ADD TABLE public.r",
        "INSERT INTO public.r VALUES (2, 'new')",
    ])
    .await
    .expect("drop and create");
    let mut c = started(&pg, &tables, StartPosition::After(first.scn)).await;
    let mut rows = Vec::new();
    let mut drops = Vec::new();
    for i in 0..4 {
        let t = next_transaction(&mut c).await;
        for d in &t.table_changes {
            drops.push((i, d.kind, d.table.to_string()));
        }
        for ch in t.changes {
            rows.push((
                ch.table.table.clone(),
                ch.table.primary_key.clone(),
                ch.after.expect("an insert"),
            ));
        }
    }
    let key = vec![0usize];
    assert_eq!(
        rows,
        vec![
            (
                "d".to_owned(),
                key.clone(),
                vec![Value::Int(2), Value::Text("b".into()), Value::Int(20)]
            ),
            (
                "d".to_owned(),
                key.clone(),
                vec![Value::Int(3), Value::Text("c".into())]
            ),
            (
                "r".to_owned(),
                key.clone(),
                vec![Value::Int(1), Value::Text("old".into())]
            ),
            (
                "r".to_owned(),
                key.clone(),
                vec![Value::Int(2), Value::Text("new".into())]
            ),
        ]
    );
    assert_eq!(
        drops,
        vec![(3, DdlKind::Drop, "public.r".to_owned())],
        "the drop comes with the new table's first row, before it"
    );
    c.shutdown().await.expect("shutdown");
}
