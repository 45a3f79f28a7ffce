//! Stream behaviour against a real MariaDB: atomicity, concurrency, DDL, resume, failures.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use databus_connectors::mysql::MySqlPosition;
use databus_connectors::{
    ChangeKind, ConnectorError, ConnectorEvent, SourceConnector, StartPosition,
};
use databus_core::Scn;
use databus_serde_formats::model::{ColumnType, Value};
use databus_testkit::MariaDbOptions;
use mysql_async::prelude::Queryable;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_transactions_and_concurrent_writers_lose_nothing() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE cw",
        "CREATE TABLE cw.t (writer INT, seq INT, PRIMARY KEY (writer, seq))",
        "CREATE TABLE cw.counter (writer INT PRIMARY KEY, n INT)",
        "INSERT INTO cw.counter VALUES (0, 0), (1, 0), (2, 0), (3, 0)",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["cw"]), StartPosition::Now).await;

    // One multi-statement, multi-table transaction is one transaction.
    db.exec_tx(&[
        "INSERT INTO cw.t VALUES (9, 1), (9, 2)",
        "UPDATE cw.counter SET n = 5 WHERE writer = 0",
        "DELETE FROM cw.t WHERE writer = 9 AND seq = 1",
        "INSERT INTO cw.t VALUES (9, 3)",
    ])
    .await
    .unwrap();
    let t = next_transaction(&mut c).await;
    let kinds: Vec<_> = t
        .changes
        .iter()
        .map(|ch| (ch.table.table.as_str(), ch.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("t", ChangeKind::Insert),
            ("t", ChangeKind::Insert),
            ("counter", ChangeKind::Update),
            ("t", ChangeKind::Delete),
            ("t", ChangeKind::Insert)
        ]
    );
    assert_eq!(
        t.changes[2].before.as_ref().unwrap(),
        &vec![Value::Int(0), Value::Int(0)]
    );
    assert_eq!(
        t.changes[2].after.as_ref().unwrap(),
        &vec![Value::Int(0), Value::Int(5)]
    );
    let position = MySqlPosition::from_position(&t.position).unwrap();
    assert!(
        position.gtid.ends_with(&format!("-{}", t.scn)),
        "{position:?}"
    );
    assert!(
        position.file.starts_with("mariadb-bin.")
            && position.file.len() == "mariadb-bin.000001".len()
    );
    let first_scn = t.scn;

    // Four concurrent writers, each transaction = insert (writer, k) + set the writer's counter to k.
    const PER_WRITER: i64 = 60;
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let mut conn = db.root_conn().await.unwrap();
        writers.push(tokio::spawn(async move {
            for k in 1..=PER_WRITER {
                conn.query_drop("BEGIN").await.unwrap();
                conn.query_drop(format!("INSERT INTO cw.t VALUES ({w}, {k})"))
                    .await
                    .unwrap();
                conn.query_drop(format!("UPDATE cw.counter SET n = {k} WHERE writer = {w}"))
                    .await
                    .unwrap();
                conn.query_drop("COMMIT").await.unwrap();
            }
        }));
    }
    let mut seen = BTreeSet::new();
    let mut last_per_writer = [0i64; 4];
    let mut last_scn = first_scn;
    while seen.len() < 4 * PER_WRITER as usize {
        let t = next_transaction(&mut c).await;
        assert!(t.scn > last_scn, "scn {} after {}", t.scn, last_scn);
        last_scn = t.scn;
        assert_eq!(t.changes.len(), 2, "whole transactions: {t:?}");
        let ins = t.changes[0].after.as_ref().unwrap();
        let upd = t.changes[1].after.as_ref().unwrap();
        let (Value::Int(w), Value::Int(k)) = (&ins[0], &ins[1]) else {
            panic!("{ins:?}")
        };
        assert_eq!(
            upd,
            &vec![Value::Int(*w), Value::Int(*k)],
            "the counter matches the insert of its transaction"
        );
        assert!(
            *k == last_per_writer[*w as usize] + 1,
            "writer {w}: {k} after {}",
            last_per_writer[*w as usize]
        );
        last_per_writer[*w as usize] = *k;
        assert!(seen.insert((*w, *k)), "duplicate ({w}, {k})");
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(last_per_writer, [PER_WRITER; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_mid_stream_emits_schema_changes_and_rows_decode_per_schema() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE dd",
        "CREATE TABLE dd.t (id INT PRIMARY KEY, a INT)",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["dd"]), StartPosition::Now).await;
    db.exec(&[
        "INSERT INTO dd.t VALUES (1, 10)",
        "ALTER TABLE dd.t ADD COLUMN b VARCHAR(10) DEFAULT 'x'",
        "INSERT INTO dd.t VALUES (2, 20, 'y')",
        "ALTER TABLE dd.t MODIFY COLUMN a BIGINT UNSIGNED",
        "INSERT INTO dd.t VALUES (3, 18446744073709551615, 'z')",
        "ALTER TABLE dd.t DROP COLUMN b",
        "INSERT INTO dd.t VALUES (4, 40)",
    ])
    .await
    .unwrap();
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, ConnectorEvent::Transaction(_)))
        .count()
        < 7
    {
        let e = next_event(&mut c).await.unwrap();
        if !matches!(e, ConnectorEvent::Heartbeat { .. }) {
            events.push(e);
        }
    }
    let mut schema_cols = Vec::new();
    let mut rows = Vec::new();
    let mut empty = 0;
    for e in &events {
        match e {
            ConnectorEvent::SchemaChange { schema, scn, .. } => {
                let next = events
                    .iter()
                    .find_map(|x| x.as_transaction().filter(|t| t.scn == *scn));
                assert!(
                    next.is_some_and(|t| !t.changes.is_empty()),
                    "a schema change precedes its transaction"
                );
                schema_cols.push(
                    schema
                        .columns
                        .iter()
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>(),
                );
            }
            ConnectorEvent::Transaction(t) if t.changes.is_empty() => empty += 1,
            ConnectorEvent::Transaction(t) => {
                assert_eq!(
                    t.changes[0].after.as_ref().unwrap().len(),
                    t.changes[0].table.columns.len()
                );
                rows.push(t.changes[0].after.clone().unwrap());
            }
            ConnectorEvent::Heartbeat { .. } => {}
        }
    }
    assert_eq!(empty, 3, "each DDL is an empty transaction");
    assert_eq!(
        schema_cols,
        vec![
            vec!["id", "a"],
            vec!["id", "a", "b"],
            vec!["id", "a", "b"],
            vec!["id", "a"]
        ],
        "one schema change per schema"
    );
    assert_eq!(rows[0], vec![Value::Int(1), Value::Int(10)]);
    assert_eq!(
        rows[1],
        vec![Value::Int(2), Value::Int(20), Value::Text("y".into())]
    );
    assert_eq!(
        rows[2],
        vec![
            Value::Int(3),
            Value::UInt(u64::MAX),
            Value::Text("z".into())
        ]
    );
    assert_eq!(rows[3], vec![Value::Int(4), Value::UInt(40)]);
    let third = events.iter().filter_map(|e| match e {
        ConnectorEvent::SchemaChange { schema, .. } => Some(schema.clone()),
        _ => None,
    });
    let modified = third.clone().nth(2).unwrap();
    assert_eq!(
        modified.columns[1].column_type,
        ColumnType::BigInt { unsigned: true }
    );

    // Replaying the old binlog after the ALTERs decodes each row with the schema it was written with.
    let mut replay = started(config(&url, &["dd"]), StartPosition::After(Scn::ZERO)).await;
    let mut replayed = Vec::new();
    while replayed.len() < 4 {
        let t = next_transaction(&mut replay).await;
        if let Some(ch) = t.changes.first() {
            replayed.push(ch.after.clone().unwrap());
        }
    }
    assert_eq!(replayed, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_random_scns_is_exact_across_rotations() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE rr",
        "CREATE TABLE rr.t (id INT PRIMARY KEY, v INT)",
    ])
    .await
    .unwrap();
    for i in 0..40 {
        db.exec(&[&format!("INSERT INTO rr.t VALUES ({i}, {i})")])
            .await
            .unwrap();
        if i % 10 == 5 {
            db.exec(&["FLUSH BINARY LOGS"]).await.unwrap();
        }
    }
    let mut c = started(config(&url, &["rr"]), StartPosition::After(Scn::ZERO)).await;
    let all = transactions_until(&mut c, |t| {
        t.changes
            .first()
            .is_some_and(|ch| ch.after.as_ref().unwrap()[0] == Value::Int(39))
    })
    .await;
    c.shutdown().await.unwrap();
    let files: BTreeSet<_> = all
        .iter()
        .map(|t| MySqlPosition::from_position(&t.position).unwrap().file)
        .collect();
    assert!(
        files.len() >= 4,
        "the history spans several binlog files: {files:?}"
    );
    for w in all.windows(2) {
        assert_eq!(
            w[1].scn.get(),
            w[0].scn.get() + 1,
            "single domain: seq_no rises by one"
        );
    }
    for _ in 0..6 {
        let k = rand::random_range(0..all.len() - 1);
        let from = all[k].scn;
        let mut r = started(config(&url, &["rr"]), StartPosition::After(from)).await;
        for expected in &all[k + 1..(k + 6).min(all.len())] {
            let got = next_transaction(&mut r).await;
            assert_eq!(got.scn, expected.scn, "resume after {from}");
            assert_eq!(got.changes, expected.changes, "resume after {from}");
            assert_eq!(got.position, expected.position, "resume after {from}");
        }
        r.shutdown().await.unwrap();
        // The full position resumes the same way.
        let mut r = started(
            config(&url, &["rr"]),
            StartPosition::AfterPosition(all[k].position.clone()),
        )
        .await;
        assert_eq!(next_transaction(&mut r).await.scn, all[k + 1].scn);
        r.shutdown().await.unwrap();
    }
}

/// Keeps reading until row `id` of `db.t` arrives, checking SCNs are contiguous.
async fn read_through(
    c: &mut databus_connectors::mysql::MySqlConnector,
    last: &mut Scn,
    until_id: i64,
) {
    loop {
        let t = next_transaction(c).await;
        assert_eq!(
            t.scn.get(),
            last.get() + 1,
            "no gap, no duplicate: {} after {}",
            t.scn,
            last
        );
        *last = t.scn;
        if t.changes
            .first()
            .is_some_and(|ch| ch.after.as_ref().unwrap()[0] == Value::Int(until_id))
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_flush_logs_restart_kill9_and_killed_connections() {
    let (mut db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE fx",
        "CREATE TABLE fx.t (id INT PRIMARY KEY)",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["fx"]), StartPosition::Now).await;
    let mut last = c.last_scn();

    db.exec(&[
        "INSERT INTO fx.t VALUES (1)",
        "FLUSH BINARY LOGS",
        "INSERT INTO fx.t VALUES (2)",
    ])
    .await
    .unwrap();
    read_through(&mut c, &mut last, 2).await;

    db.restart().await.unwrap();
    db.exec(&["INSERT INTO fx.t VALUES (3)"]).await.unwrap();
    read_through(&mut c, &mut last, 3).await;

    db.kill9();
    db.start_again().await.unwrap();
    db.exec(&["INSERT INTO fx.t VALUES (4)"]).await.unwrap();
    read_through(&mut c, &mut last, 4).await;

    // The server kills the dump thread: the connector reconnects and resumes.
    let ids: Vec<u64> = {
        let mut conn = db.root_conn().await.unwrap();
        conn.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await
        .unwrap()
    };
    assert_eq!(ids.len(), 1, "one replication connection");
    db.exec(&[&format!("KILL {}", ids[0]), "INSERT INTO fx.t VALUES (5)"])
        .await
        .unwrap();
    read_through(&mut c, &mut last, 5).await;

    // A dropped connector resumes from the last SCN it delivered.
    c.shutdown().await.unwrap();
    db.exec(&["INSERT INTO fx.t VALUES (6)", "INSERT INTO fx.t VALUES (7)"])
        .await
        .unwrap();
    let mut c = started(config(&url, &["fx"]), StartPosition::After(last)).await;
    read_through(&mut c, &mut last, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_resume_point_is_a_definite_error_naming_the_oldest_position() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE pg",
        "CREATE TABLE pg.t (id INT PRIMARY KEY)",
    ])
    .await
    .unwrap();
    for i in 0..5 {
        db.exec(&[&format!("INSERT INTO pg.t VALUES ({i})")])
            .await
            .unwrap();
    }
    db.exec(&["FLUSH BINARY LOGS", "INSERT INTO pg.t VALUES (99)"])
        .await
        .unwrap();
    let current: String = db
        .query_string("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    db.purge_binary_logs_to(&current).await.unwrap();

    let mut c = started(config(&url, &["pg"]), StartPosition::After(Scn::new(2))).await;
    let e = first_error(&mut c).await;
    assert!(!e.is_transient(), "{e}");
    let ConnectorError::Purged { ref oldest, .. } = e else {
        panic!("expected Purged, got {e:?}")
    };
    assert!(oldest.contains(&current), "names the oldest file: {e}");
    let msg = e.to_string();
    assert!(msg.contains("purged") && msg.contains("bootstrap"), "{msg}");

    // Resuming at the oldest position the message names works.
    let pos = db
        .query_string(&format!("SELECT BINLOG_GTID_POS('{current}', 4)"))
        .await
        .unwrap()
        .unwrap();
    let seq: u64 = pos.rsplit('-').next().unwrap().parse().unwrap();
    assert!(msg.contains(&format!("SCN {seq}")), "{msg}");
    let mut c = started(config(&url, &["pg"]), StartPosition::After(Scn::new(seq))).await;
    let t = next_transaction(&mut c).await;
    assert_eq!(t.scn.get(), seq + 1);

    // A resume point beyond the binlog is definite too.
    let mut c = started(
        config(&url, &["pg"]),
        StartPosition::After(Scn::new(10_000)),
    )
    .await;
    let e = first_error(&mut c).await;
    assert!(
        !e.is_transient() && matches!(e, ConnectorError::UnknownPosition { .. }),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_no_primary_key_size_limit_compression_and_statements() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE np",
        "CREATE TABLE np.t (a INT)",
        "CREATE TABLE np.k (id INT PRIMARY KEY, v LONGBLOB)",
    ])
    .await
    .unwrap();

    // No primary key: refused by default, captured when allowed.
    let mut c = started(config(&url, &["np"]), StartPosition::Now).await;
    db.exec(&["INSERT INTO np.t VALUES (1)"]).await.unwrap();
    let e = first_error(&mut c).await;
    assert!(
        matches!(e, ConnectorError::NoPrimaryKey { .. }) && !e.is_transient(),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("np.t has no primary key")
            && e.to_string().contains("allow_tables_without_primary_key")
    );
    let mut cfg = config(&url, &["np"]);
    cfg.allow_tables_without_primary_key = true;
    let start = c.last_scn();
    let mut c = started(cfg, StartPosition::After(start)).await;
    let t = next_transaction(&mut c).await;
    assert_eq!(t.changes[0].after.as_ref().unwrap(), &vec![Value::Int(1)]);
    assert!(t.changes[0].table.primary_key.is_empty());

    // Large values pass (max_allowed_packet); a transaction over the limits is a clear error.
    let big = 20 * 1024 * 1024;
    db.exec(&[&format!("INSERT INTO np.k VALUES (1, REPEAT('x', {big}))")])
        .await
        .unwrap();
    let t = next_transaction(&mut c).await;
    assert_eq!(
        t.changes[0].after.as_ref().unwrap()[1],
        Value::Bytes(vec![b'x'; big])
    );
    let after_big = t.scn;
    let mut cfg = config(&url, &["np"]);
    cfg.max_transaction_rows = 3;
    let mut c = started(cfg, StartPosition::After(after_big)).await;
    db.exec_tx(&["INSERT INTO np.k VALUES (2, ''), (3, ''), (4, ''), (5, '')"])
        .await
        .unwrap();
    let e = first_error(&mut c).await;
    assert!(
        matches!(e, ConnectorError::TransactionTooLarge { .. }) && !e.is_transient(),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_transaction_rows"), "{e}");
    let after_rows = after_big.get() + 1;
    let mut cfg = config(&url, &["np"]);
    cfg.max_transaction_bytes = 4096;
    let mut c = started(cfg, StartPosition::After(Scn::new(after_big.get() - 1))).await;
    let e = first_error(&mut c).await;
    assert!(
        matches!(e, ConnectorError::TransactionTooLarge { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_transaction_bytes"), "{e}");

    // Compressed rows events are an error, never skipped.
    let mut c = started(
        config(&url, &["np"]),
        StartPosition::After(Scn::new(after_rows)),
    )
    .await;
    db.exec(&[
        "SET GLOBAL log_bin_compress = ON",
        "SET GLOBAL log_bin_compress_min_len = 10",
    ])
    .await
    .unwrap();
    db.exec(&["INSERT INTO np.k VALUES (10, REPEAT('y', 1000))"])
        .await
        .unwrap();
    let e = first_error(&mut c).await;
    assert!(
        matches!(e, ConnectorError::UndecodableEvent { .. }) && !e.is_transient(),
        "{e:?}"
    );
    assert!(e.to_string().contains("log_bin_compress=OFF"), "{e}");
    db.exec(&["SET GLOBAL log_bin_compress = OFF"])
        .await
        .unwrap();

    // A statement-based change is an error, never skipped.
    let pos = db.gtid_binlog_pos().await.unwrap();
    let seq: u64 = pos.rsplit('-').next().unwrap().parse().unwrap();
    let mut c = started(config(&url, &["np"]), StartPosition::After(Scn::new(seq))).await;
    let mut conn = db.root_conn().await.unwrap();
    conn.query_drop("SET SESSION binlog_format = STATEMENT")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO np.k VALUES (20, 'stmt')")
        .await
        .unwrap();
    let e = first_error(&mut c).await;
    assert!(
        !e.is_transient() && e.to_string().contains("binlog_format=ROW"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_read_timeout() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE hb",
        "CREATE TABLE hb.t (id INT PRIMARY KEY)",
        "INSERT INTO hb.t VALUES (1)",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["hb"]), StartPosition::Now).await;
    let start = c.last_scn();
    let mut beats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while beats < 5 {
        assert!(tokio::time::Instant::now() < deadline);
        if let ConnectorEvent::Heartbeat { last_scn, .. } = next_event(&mut c).await.unwrap() {
            assert_eq!(last_scn, start);
            beats += 1;
        }
    }
    // Heartbeats keep a quiet connection alive: no read timeout fired, so no reconnect happened.
    let dumps = db
        .query_string(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await
        .unwrap();
    assert_eq!(dumps.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_select_is_one_transaction_and_xa_is_refused() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE cs",
        "CREATE TABLE cs.t (id INT PRIMARY KEY)",
        "INSERT INTO cs.t VALUES (1), (2)",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["cs"]), StartPosition::Now).await;
    db.exec(&[
        "CREATE TABLE cs.c (id INT PRIMARY KEY) SELECT id FROM cs.t",
        "INSERT INTO cs.t VALUES (3)",
    ])
    .await
    .unwrap();
    let t = next_transaction(&mut c).await;
    let ids: Vec<_> = t
        .changes
        .iter()
        .map(|ch| (ch.table.table.clone(), ch.after.clone().unwrap()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("c".to_owned(), vec![Value::Int(1)]),
            ("c".to_owned(), vec![Value::Int(2)])
        ]
    );
    let t = next_transaction(&mut c).await;
    assert_eq!(t.changes[0].after.as_ref().unwrap(), &vec![Value::Int(3)]);

    // Non-transactional engines end their group with QUERY COMMIT instead of XID.
    db.exec(&[
        "CREATE TABLE cs.m (id INT PRIMARY KEY) ENGINE=MyISAM",
        "CREATE TABLE cs.a (id INT PRIMARY KEY) ENGINE=Aria",
        "INSERT INTO cs.m VALUES (1), (2)",
        "INSERT INTO cs.a VALUES (3)",
        "INSERT INTO cs.t VALUES (5)",
    ])
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let t = next_transaction(&mut c).await;
        if !t.changes.is_empty() {
            got.push(
                t.changes
                    .iter()
                    .map(|ch| ch.after.clone().unwrap()[0].clone())
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert_eq!(
        got,
        vec![
            vec![Value::Int(1), Value::Int(2)],
            vec![Value::Int(3)],
            vec![Value::Int(5)]
        ]
    );

    let mut conn = db.root_conn().await.unwrap();
    for sql in [
        "XA START 'x1'",
        "INSERT INTO cs.t VALUES (4)",
        "XA END 'x1'",
        "XA PREPARE 'x1'",
        "XA COMMIT 'x1'",
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let e = first_error(&mut c).await;
    assert!(!e.is_transient() && e.to_string().contains("XA"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_detected_by_the_read_timeout() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE fz",
        "CREATE TABLE fz.t (id INT PRIMARY KEY)",
    ])
    .await
    .unwrap();
    let mut cfg = config(&url, &["fz"]);
    cfg.read_timeout = Duration::from_secs(1);
    let mut c = started(cfg, StartPosition::Now).await;
    let mut last = c.last_scn();
    db.exec(&["INSERT INTO fz.t VALUES (1)"]).await.unwrap();
    read_through(&mut c, &mut last, 1).await;
    assert_eq!(c.reconnects(), 0);

    // Frozen: the connection stays open but silent; heartbeats stop; the read timeout fires.
    db.pause();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.reconnects() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read timeout never fired"
        );
        // next_event is cancel-safe: polling it in slices lets the test watch the counter.
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(200), c.next_event()).await {
            let event = event.unwrap().unwrap();
            assert!(
                matches!(event, ConnectorEvent::Heartbeat { .. }),
                "{event:?}"
            );
        }
    }
    db.resume();
    db.exec(&["INSERT INTO fz.t VALUES (2)"]).await.unwrap();
    read_through(&mut c, &mut last, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_when_several_servers_wrote_the_domain() {
    // A failover history: server ids 1, 2, then 1 again write the same GTID domain.
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE fo",
        "CREATE TABLE fo.t (id INT PRIMARY KEY)",
    ])
    .await
    .unwrap();
    let mut conn = db.root_conn().await.unwrap();
    for (i, server_id) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 1),
        (6, 1),
        (7, 3),
    ] {
        conn.query_drop(format!("SET SESSION server_id = {server_id}"))
            .await
            .unwrap();
        conn.query_drop(format!("INSERT INTO fo.t VALUES ({i})"))
            .await
            .unwrap();
        if i % 3 == 1 {
            conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
        }
    }
    conn.query_drop("SET SESSION server_id = 1").await.unwrap();
    let mut c = started(config(&url, &["fo"]), StartPosition::After(Scn::ZERO)).await;
    let all = transactions_until(&mut c, |t| {
        t.changes
            .first()
            .is_some_and(|ch| ch.after.as_ref().unwrap()[0] == Value::Int(7))
    })
    .await;
    c.shutdown().await.unwrap();
    for k in 0..all.len() - 1 {
        let mut r = started(config(&url, &["fo"]), StartPosition::After(all[k].scn)).await;
        let got = next_transaction(&mut r).await;
        assert_eq!(
            got.scn,
            all[k + 1].scn,
            "after {} ({})",
            all[k].scn,
            all[k].position
        );
        assert_eq!(got.position, all[k + 1].position);
        r.shutdown().await.unwrap();
        let mut r = started(
            config(&url, &["fo"]),
            StartPosition::AfterPosition(all[k].position.clone()),
        )
        .await;
        assert_eq!(next_transaction(&mut r).await.scn, all[k + 1].scn);
        r.shutdown().await.unwrap();
    }
}
