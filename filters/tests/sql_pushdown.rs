//! The SQL push-down against a real SQLite file: for random specs, the rows the SQL selects are exactly
//! the events the in-memory filter accepts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use databus_core::{Key, SourceId};
use databus_filters::{
    Filter, FilterSpec, IdRange, KeyHash, MAX_LIST_ITEMS, MAX_PER_SOURCE, ModSpec, PartitionSpec,
    RangeSpec, SqlColumns,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use rusqlite::{Connection, params, params_from_iter};

use common::{filter_spec, key};

/// The events table as the bootstrap server keeps it: one row per data event.
fn store(dir: &tempfile::TempDir, events: &[(u16, Key)]) -> Connection {
    let conn = Connection::open(dir.path().join("events.sqlite")).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (
             id INTEGER PRIMARY KEY,
             source_id INTEGER NOT NULL,
             bucket_hash INTEGER NOT NULL,
             key_int INTEGER,
             key_bytes BLOB
         );",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO events (id, source_id, bucket_hash, key_int, key_bytes) VALUES (?, ?, ?, ?, ?)",
            )
            .unwrap();
        for (id, (source, key)) in events.iter().enumerate() {
            let (key_int, key_bytes) = match key {
                Key::Int(v) => (Some(*v), None),
                Key::Bytes(b) => (None, Some(b.clone())),
                Key::None => (None, None),
            };
            insert
                .execute(params![
                    id as i64,
                    i64::from(*source),
                    KeyHash::of(key.as_ref()).to_i64(),
                    key_int,
                    key_bytes
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn
}

fn random_events(count: usize) -> Vec<(u16, Key)> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| ((0u16..14), key()).new_tree(&mut runner).unwrap().current())
        .collect()
}

fn selected(conn: &Connection, spec: &FilterSpec) -> Vec<usize> {
    let w = spec.to_sql(&SqlColumns::DEFAULT);
    let sql = format!("SELECT id FROM events WHERE {} ORDER BY id", w.sql);
    let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    stmt.query_map(params_from_iter(w.params.iter()), |row| {
        row.get::<_, i64>(0)
    })
    .unwrap()
    .map(|id| id.unwrap() as usize)
    .collect()
}

fn accepted(events: &[(u16, Key)], spec: &FilterSpec) -> Vec<usize> {
    let filter = Filter::new(spec);
    events
        .iter()
        .enumerate()
        .filter(|(_, (source, key))| filter.matches_key(SourceId::new(*source), key.as_ref()))
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn sql_selects_exactly_what_the_filter_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let events = random_events(3000);
    let conn = store(&dir, &events);
    let mut runner = TestRunner::new(Config::with_cases(300));
    let result = runner.run(&filter_spec(), |spec| {
        prop_assert_eq!(
            selected(&conn, &spec),
            accepted(&events, &spec),
            "spec {}",
            spec
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The test can fail: the generated specs select neither nothing nor everything every time.
    let counts: BTreeSet<usize> = (0..50)
        .map(|_| {
            selected(
                &conn,
                &filter_spec().new_tree(&mut runner).unwrap().current(),
            )
            .len()
        })
        .collect();
    assert!(counts.len() > 10, "specs select too uniformly: {counts:?}");
}

#[test]
fn sqlite_remainder_gives_the_rust_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let events = random_events(2000);
    let conn = store(&dir, &events);
    for n in [1u32, 2, 3, 7, 8, 1000, 999_983, 1_000_000] {
        let mut stmt = conn
            .prepare("SELECT id, bucket_hash % ? FROM events ORDER BY id")
            .unwrap();
        let rows: Vec<(i64, i64)> = stmt
            .query_map([i64::from(n)], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), events.len());
        for (id, bucket) in rows {
            let key = &events[id as usize].1;
            let want = databus_filters::bucket_of(key.as_ref(), NonZeroU32::new(n).unwrap());
            assert_eq!(bucket, i64::from(want), "key {key} among {n}");
        }
    }
    // The stored value reads back as the same hash.
    let stored: i64 = conn
        .query_row("SELECT bucket_hash FROM events WHERE id = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        KeyHash::from_i64(stored),
        Some(KeyHash::of(events[0].1.as_ref()))
    );
}

#[test]
fn a_spec_at_every_limit_runs_in_sqlite() {
    // 256 per-source filters over sparse sources, and the default filter, filling the item budget.
    let sources: BTreeSet<SourceId> = (0..MAX_LIST_ITEMS as u16)
        .flat_map(|i| [SourceId::new(i * 3), SourceId::new(i * 3 + 1)])
        .collect();
    let sparse =
        |n: u64| -> Vec<IdRange> { (0..n).map(|i| IdRange::new(i * 3, i * 3 + 1)).collect() };
    let per_source: BTreeMap<SourceId, Vec<PartitionSpec>> = sources
        .iter()
        .take(MAX_PER_SOURCE)
        .map(|&s| {
            (
                s,
                vec![PartitionSpec::Mod(ModSpec::new(1_000_000, sparse(2)).unwrap()); 2],
            )
        })
        .collect();
    let default = vec![
        PartitionSpec::Range(RangeSpec::new(3, sparse(MAX_LIST_ITEMS as u64)).unwrap()),
        PartitionSpec::Mod(ModSpec::new(1_000_000, sparse(MAX_LIST_ITEMS as u64)).unwrap()),
    ];
    // 1024 source runs + 256 * 2 * 2 + 2 * 1024 = 4096 items: the whole budget.
    let spec = FilterSpec::new(Some(sources), default, per_source).unwrap();
    let w = spec.to_sql(&SqlColumns::DEFAULT);
    assert!(w.params.len() > 9_000, "{} params", w.params.len());
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<(u16, Key)> = (0..4000)
        .map(|i| ((i % 3100) as u16, Key::Int(i64::from(i) * 3)))
        .collect();
    let conn = store(&dir, &events);
    assert_eq!(selected(&conn, &spec), accepted(&events, &spec));
    assert!(!accepted(&events, &spec).is_empty());
}
