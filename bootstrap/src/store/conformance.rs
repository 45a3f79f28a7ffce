//! The conformance suite every store implementation must pass. Instantiate it with
//! [`store_conformance_suite!`](crate::store_conformance_suite):
//!
//! ```
//! use databus_bootstrap::store::SqliteStore;
//!
//! databus_bootstrap::store_conformance_suite!(sqlite, || {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
//!     (store, dir) // the second value is kept alive for the test's duration
//! });
//! # fn main() {}
//! ```

use databus_core::{EventBuilder, EventView, Key, Opcode, Scn, SourceId};
use databus_filters::{Filter, FilterSpec};

use super::{
    BootstrapStore, LogWindow, SeedProgress, SeedWrite, SnapshotQuery, SourceInfo, StoredEvent,
};
use crate::BootstrapError;

/// Generates one `#[test]` per conformance check for a store built by `$make` (a closure returning
/// `(store, guard)`; the guard, e.g. a temporary directory, lives as long as the test).
#[macro_export]
macro_rules! store_conformance_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_conformance_suite!(@tests $make;
                log_append_and_read, log_refuses_regressions_atomically, log_trim_and_retention_points,
                pins_expire, pins_have_a_max_age, snapshot_keeps_latest_per_key, snapshot_applies_key_changes, snapshot_applies_truncates, snapshot_paging_and_delta,
                filters_push_down, seed_progress_and_finish, sources_round_trip, schemas_round_trip,
                roles_round_trip, reads_stop_at_the_byte_budget, paged_reads_equal_one_read,
                status_counts_follow_every_write);
        }
    };
    (@tests $make:expr; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                let (store, _guard) = ($make)();
                $crate::store::conformance::$test(&store);
            }
        )*
    };
}

/// A data event of `source` with an integer or byte key.
pub fn event(scn: u64, source: u16, key: Key, opcode: Opcode, payload: &[u8]) -> StoredEvent {
    let mut frame = Vec::new();
    EventBuilder::new(Scn::new(scn), opcode)
        .source(SourceId::new(source))
        .key(key.as_ref())
        .timestamp_ns(scn * 1_000)
        .payload(payload)
        .write_to_vec(&mut frame);
    StoredEvent::from_frame(&frame).expect("a frame we just built parses")
}

fn window(scn: u64, events: Vec<StoredEvent>) -> LogWindow {
    LogWindow {
        scn: Scn::new(scn),
        timestamp_ns: scn * 1_000,
        events,
    }
}

fn up(scn: u64, key: i64) -> StoredEvent {
    event(
        scn,
        1,
        Key::Int(key),
        Opcode::Upsert,
        format!("v{scn}").as_bytes(),
    )
}

fn scns(frames: &[Vec<u8>]) -> Vec<(u64, Key)> {
    frames
        .iter()
        .map(|f| {
            let (v, _) = EventView::parse(f).expect("stored frame parses");
            (v.scn().get(), v.key().to_owned())
        })
        .collect()
}

/// Appends, status, windows and events by sequence.
pub fn log_append_and_read(store: &dyn BootstrapStore) {
    assert!(matches!(
        store.append(&[window(11, vec![up(11, 1)])]),
        Err(BootstrapError::LogNotStarted)
    ));
    store.start_log(Scn::new(10)).unwrap();
    store.start_log(Scn::new(3)).unwrap(); // no effect once started
    let st = store.log_status().unwrap();
    assert_eq!(
        (st.floor_scn, st.last_scn, st.windows),
        (Some(Scn::new(10)), Some(Scn::new(10)), 0)
    );
    store
        .append(&[window(11, vec![up(11, 1), up(11, 2)]), window(12, vec![])])
        .unwrap();
    store.append(&[window(15, vec![up(15, 1)])]).unwrap();
    let st = store.log_status().unwrap();
    assert_eq!(st.first_scn, Some(Scn::new(11)));
    assert_eq!(st.last_scn, Some(Scn::new(15)));
    assert_eq!((st.windows, st.events), (3, 3));
    assert!(st.bytes > 0);
    let ws = store.windows(Scn::new(10), Scn::MAX, 10).unwrap();
    assert_eq!(
        ws.iter().map(|w| w.scn.get()).collect::<Vec<_>>(),
        vec![11, 12, 15]
    );
    assert_eq!(
        ws.iter().map(|w| w.events).collect::<Vec<_>>(),
        vec![2, 0, 1]
    );
    assert_eq!(ws[1].first_seq, ws[0].first_seq + 2);
    assert_eq!(ws[2].first_seq, ws[1].first_seq);
    assert_eq!(ws[0].timestamp_ns, 11_000);
    let ws = store.windows(Scn::new(11), Scn::new(14), 10).unwrap();
    assert_eq!(ws.iter().map(|w| w.scn.get()).collect::<Vec<_>>(), vec![12]);
    assert_eq!(store.windows(Scn::new(10), Scn::MAX, 1).unwrap().len(), 1);
    let first = store.windows(Scn::ZERO, Scn::MAX, 1).unwrap()[0].first_seq;
    let rows = store
        .events(first, first + 2, &FilterSpec::all(), 10, usize::MAX)
        .unwrap();
    let frames: Vec<Vec<u8>> = rows.iter().map(|r| r.frame.clone()).collect();
    assert_eq!(
        scns(&frames),
        vec![(11, Key::Int(1)), (11, Key::Int(2)), (15, Key::Int(1))]
    );
    assert_eq!(rows[2].seq, first + 2);
    assert_eq!(
        store
            .events(first, first + 2, &FilterSpec::all(), 2, usize::MAX)
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .events(first + 1, first, &FilterSpec::all(), 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

/// A refused append stores nothing.
pub fn log_refuses_regressions_atomically(store: &dyn BootstrapStore) {
    store.start_log(Scn::new(0)).unwrap();
    store.append(&[window(5, vec![up(5, 1)])]).unwrap();
    let err = store
        .append(&[window(6, vec![up(6, 1)]), window(5, vec![up(5, 2)])])
        .unwrap_err();
    assert!(matches!(err, BootstrapError::ScnRegression { .. }), "{err}");
    assert!(store.append(&[window(5, vec![])]).is_err());
    let bad = window(7, vec![up(8, 1)]);
    assert!(store.append(&[bad]).is_err());
    let st = store.log_status().unwrap();
    assert_eq!(
        (st.last_scn, st.windows, st.events),
        (Some(Scn::new(5)), 1, 1)
    );
    store.append(&[window(6, vec![up(6, 3)])]).unwrap();
    let ws = store.windows(Scn::ZERO, Scn::MAX, 10).unwrap();
    assert_eq!(
        ws[1].first_seq,
        ws[0].first_seq + 1,
        "no sequence numbers leaked"
    );
}

/// Trimming raises the floor; the size and age retention points.
pub fn log_trim_and_retention_points(store: &dyn BootstrapStore) {
    store.start_log(Scn::new(0)).unwrap();
    for scn in 1..=10 {
        store
            .append(&[window(scn, vec![up(scn, scn as i64)])])
            .unwrap();
    }
    let per_window = store.windows(Scn::ZERO, Scn::MAX, 1).unwrap()[0].bytes;
    assert_eq!(store.trim_point_for_bytes(per_window * 100).unwrap(), None);
    // Window 10 carries a one-byte longer payload ("v10" vs "v1").
    assert_eq!(
        store.trim_point_for_bytes(per_window * 3 + 1).unwrap(),
        Some(Scn::new(7))
    );
    assert_eq!(
        store.trim_point_for_bytes(per_window * 3).unwrap(),
        Some(Scn::new(8))
    );
    assert_eq!(store.last_window_before(4_500).unwrap(), Some(Scn::new(4)));
    assert_eq!(store.last_window_before(10).unwrap(), None);
    let out = store.trim(Scn::new(7), 2).unwrap();
    assert_eq!((out.windows, out.events), (2, 2));
    assert_eq!(store.log_status().unwrap().floor_scn, Some(Scn::new(2)));
    let out = store.trim(Scn::new(7), 100).unwrap();
    assert_eq!((out.windows, out.events), (5, 5));
    let st = store.log_status().unwrap();
    assert_eq!(
        (st.floor_scn, st.first_scn, st.windows, st.events),
        (Some(Scn::new(7)), Some(Scn::new(8)), 3, 3)
    );
    let first = store.windows(Scn::ZERO, Scn::MAX, 1).unwrap()[0].first_seq;
    assert_eq!(
        store
            .events(0, first - 1, &FilterSpec::all(), 100, usize::MAX)
            .unwrap()
            .len(),
        0
    );
    assert_eq!(store.trim(Scn::new(7), 100).unwrap().windows, 0);
    // Trimming everything keeps the position: appends continue after the last SCN.
    store.trim(Scn::MAX, 100).unwrap();
    let st = store.log_status().unwrap();
    assert_eq!(
        (st.floor_scn, st.last_scn, st.windows),
        (Some(Scn::new(10)), Some(Scn::new(10)), 0)
    );
    assert!(store.append(&[window(9, vec![])]).is_err());
    store.append(&[window(11, vec![up(11, 1)])]).unwrap();
}

/// A pin holds retention until its deadline at most, however often it is refreshed: the deadline of
/// its first request stays, refreshes cannot create it anew while it is stored, and it goes once it
/// expires; a pin without a deadline holds until it expires.
pub fn pins_have_a_max_age(store: &dyn BootstrapStore) {
    store.pin_until(Scn::new(5), 100, 150).unwrap();
    store.pin(Scn::new(8), 1_000).unwrap();
    assert_eq!(store.min_pin(10).unwrap(), Some(Scn::new(5)));
    // Refreshed past its deadline: a later deadline given by a refresh changes nothing.
    for now in [100, 140, 149] {
        store.pin_until(Scn::new(5), now + 100, now + 50).unwrap();
    }
    assert_eq!(store.min_pin(149).unwrap(), Some(Scn::new(5)));
    assert_eq!(
        store.min_pin(150).unwrap(),
        Some(Scn::new(8)),
        "past its max age"
    );
    assert_eq!(store.pins(150).unwrap(), vec![(Scn::new(8), 1_000)]);
    // Still refreshed: it holds nothing again.
    store.pin_until(Scn::new(5), 400, 450).unwrap();
    assert_eq!(store.min_pin(300).unwrap(), Some(Scn::new(8)));
    // Once expired (no refresh for its TTL) it is gone; a new bootstrap from there pins anew.
    assert_eq!(store.min_pin(401).unwrap(), Some(Scn::new(8)));
    store.pin_until(Scn::new(5), 900, 950).unwrap();
    assert_eq!(store.min_pin(500).unwrap(), Some(Scn::new(5)));
    assert_eq!(store.drop_pins().unwrap(), 2);
}

/// Pins expire.
pub fn pins_expire(store: &dyn BootstrapStore) {
    assert_eq!(store.min_pin(0).unwrap(), None);
    store.pin(Scn::new(5), 100).unwrap();
    store.pin(Scn::new(3), 50).unwrap();
    assert_eq!(store.min_pin(40).unwrap(), Some(Scn::new(3)));
    assert_eq!(store.min_pin(60).unwrap(), Some(Scn::new(5)));
    store.pin(Scn::new(5), 90).unwrap(); // never shortens
    assert_eq!(store.min_pin(95).unwrap(), Some(Scn::new(5)));
    assert_eq!(store.min_pin(101).unwrap(), None);
    // Listed lowest first, expired ones dropped; an operator can drop them all.
    store.pin(Scn::new(9), 500).unwrap();
    store.pin(Scn::new(7), 300).unwrap();
    store.pin(Scn::new(8), 150).unwrap();
    assert_eq!(
        store.pins(200).unwrap(),
        vec![(Scn::new(7), 300), (Scn::new(9), 500)]
    );
    assert_eq!(store.drop_pins().unwrap(), 2);
    assert_eq!(store.pins(0).unwrap(), vec![]);
    assert_eq!(store.min_pin(0).unwrap(), None);
}

fn all_rows(
    store: &dyn BootstrapStore,
    source: u16,
    since: Option<u64>,
    tombstones: bool,
    filter: &FilterSpec,
) -> Vec<(u64, Key)> {
    let q = SnapshotQuery {
        source: SourceId::new(source),
        after_row: 0,
        since: since.map(Scn::new),
        tombstones,
        filter,
        max_bytes: usize::MAX,
        limit: 1_000_000,
    };
    let rows = store.read(&q).unwrap();
    scns(&rows.into_iter().map(|r| r.frame).collect::<Vec<_>>())
}

/// Latest event per key, tombstones, idempotent re-application, applied SCN.
pub fn snapshot_keeps_latest_per_key(store: &dyn BootstrapStore) {
    let st = store.snapshot_status().unwrap();
    assert_eq!(
        (st.applied_scn, st.base_scn, st.rows, st.seeded),
        (None, None, 0, false)
    );
    store.init_base(Scn::new(2)).unwrap();
    store.init_base(Scn::new(9)).unwrap();
    let del = event(4, 1, Key::Int(2), Opcode::Delete, b"");
    store
        .apply(&[up(3, 1), up(3, 2), up(4, 1), del], Scn::new(4))
        .unwrap();
    let st = store.snapshot_status().unwrap();
    assert_eq!(
        (st.applied_scn, st.base_scn, st.rows),
        (Some(Scn::new(4)), Some(Scn::new(2)), 2)
    );
    assert_eq!(
        all_rows(store, 1, None, false, &FilterSpec::all()),
        vec![(4, Key::Int(1))]
    );
    assert_eq!(
        all_rows(store, 1, None, true, &FilterSpec::all()),
        vec![(4, Key::Int(1)), (4, Key::Int(2))]
    );
    // Re-applying older events changes nothing, nor does a lower applied SCN.
    store.apply(&[up(3, 1), up(3, 2)], Scn::new(3)).unwrap();
    assert_eq!(
        store.snapshot_status().unwrap().applied_scn,
        Some(Scn::new(4))
    );
    assert_eq!(
        all_rows(store, 1, None, true, &FilterSpec::all()),
        vec![(4, Key::Int(1)), (4, Key::Int(2))]
    );
    // Resurrection after a delete, a second source, byte keys.
    store
        .apply(
            &[
                up(6, 2),
                event(6, 2, Key::Bytes(b"k".to_vec()), Opcode::Upsert, b"x"),
            ],
            Scn::new(6),
        )
        .unwrap();
    assert_eq!(
        all_rows(store, 1, None, false, &FilterSpec::all()),
        vec![(4, Key::Int(1)), (6, Key::Int(2))]
    );
    assert_eq!(
        all_rows(store, 2, None, false, &FilterSpec::all()),
        vec![(6, Key::Bytes(b"k".to_vec()))]
    );
    // The frame stored is the winning event's.
    let q = SnapshotQuery {
        source: SourceId::new(1),
        after_row: 0,
        since: Some(Scn::new(5)),
        tombstones: true,
        filter: &FilterSpec::all(),
        max_bytes: usize::MAX,
        limit: 10,
    };
    let rows = store.read(&q).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(EventView::parse(&rows[0].frame).unwrap().0.payload(), b"v6");
}

/// A key change is a delete of the old key and an upsert of the new one in one window (the relay's
/// representation of an UPDATE of the primary key): the snapshot keeps only the new key, and a delta
/// spanning it carries the old key's tombstone. Keys swapped back and forth inside one window end as
/// the window's last events say.
pub fn snapshot_applies_key_changes(store: &dyn BootstrapStore) {
    let del = |scn, key| event(scn, 1, Key::Int(key), Opcode::Delete, b"before");
    store.init_base(Scn::new(1)).unwrap();
    store.apply(&[up(2, 1), up(2, 2)], Scn::new(2)).unwrap();
    // UPDATE SET id = 100 WHERE id = 1.
    store.apply(&[del(3, 1), up(3, 100)], Scn::new(3)).unwrap();
    assert_eq!(
        all_rows(store, 1, None, false, &FilterSpec::all()),
        vec![(2, Key::Int(2)), (3, Key::Int(100))]
    );
    assert_eq!(
        all_rows(store, 1, Some(2), true, &FilterSpec::all()),
        vec![(3, Key::Int(1)), (3, Key::Int(100))]
    );
    // One window: 2 -> 50, then 50 -> 2 (a swap back), then 100 -> 7.
    store
        .apply(
            &[
                del(4, 2),
                up(4, 50),
                del(4, 50),
                up(4, 2),
                del(4, 100),
                up(4, 7),
            ],
            Scn::new(4),
        )
        .unwrap();
    let live: Vec<Key> = all_rows(store, 1, None, false, &FilterSpec::all())
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let mut live_sorted = live.clone();
    live_sorted.sort_by_key(|k| match k {
        Key::Int(v) => *v,
        _ => i64::MAX,
    });
    assert_eq!(live_sorted, vec![Key::Int(2), Key::Int(7)], "{live:?}");
}

/// A truncate of a source at `scn` (a table event: no key).
pub fn truncate(scn: u64, source: u16) -> StoredEvent {
    event(
        scn,
        source,
        Key::None,
        Opcode::Truncate,
        br#"{"table":"s.t","cause":"truncate"}"#,
    )
}

/// A truncate removes every row of its source applied before it and stays as the source's marker:
/// full snapshots skip it, a delta since an earlier SCN sends it before the later rows, every
/// partition filter passes it (a source filter may not); re-applied older events change nothing.
/// The log passes table events through every key filter too.
pub fn snapshot_applies_truncates(store: &dyn BootstrapStore) {
    let schema_change = event(
        4,
        1,
        Key::None,
        Opcode::SchemaChange,
        br#"{"table":"s.t","cause":"alter"}"#,
    );
    store.init_base(Scn::new(1)).unwrap();
    store
        .apply(
            &[
                up(2, 1),
                up(2, 2),
                up(2, 3),
                event(2, 2, Key::Int(1), Opcode::Upsert, b"other"),
            ],
            Scn::new(2),
        )
        .unwrap();
    store
        .apply(
            &[event(3, 1, Key::Int(3), Opcode::Delete, b""), schema_change],
            Scn::new(4),
        )
        .unwrap();
    // One batch: the truncate, then a row after it.
    store
        .apply(&[truncate(5, 1), up(6, 9)], Scn::new(6))
        .unwrap();
    let all = FilterSpec::all();
    assert_eq!(
        all_rows(store, 1, None, false, &all),
        vec![(6, Key::Int(9))]
    );
    assert_eq!(
        all_rows(store, 2, None, false, &all),
        vec![(2, Key::Int(1))]
    );
    assert_eq!(
        all_rows(store, 1, Some(4), true, &all),
        vec![(5, Key::None), (6, Key::Int(9))],
        "a delta spanning the truncate: the marker, then the later rows"
    );
    assert_eq!(
        all_rows(store, 1, Some(5), true, &all),
        vec![(6, Key::Int(9))]
    );
    for instance in 0..2 {
        let spec = FilterSpec::from_query(&format!("partition=mod:2:{instance}")).unwrap();
        let rows = all_rows(store, 1, Some(4), true, &spec);
        assert_eq!(rows[0], (5, Key::None), "mod:2:{instance}");
    }
    let only_2 = FilterSpec::from_query("sources=2").unwrap();
    assert_eq!(all_rows(store, 1, Some(4), true, &only_2), vec![]);
    // Re-applying what came before changes nothing; so does the truncate itself.
    store
        .apply(&[up(2, 1), up(2, 2), truncate(5, 1)], Scn::new(5))
        .unwrap();
    assert_eq!(
        all_rows(store, 1, None, false, &all),
        vec![(6, Key::Int(9))]
    );
    // A second truncate replaces the marker; rows after it follow it.
    store
        .apply(&[truncate(7, 1), up(8, 1)], Scn::new(8))
        .unwrap();
    assert_eq!(
        all_rows(store, 1, Some(0), true, &all),
        vec![(7, Key::None), (8, Key::Int(1))]
    );
    // The log keeps table events and passes them through key filters.
    store.start_log(Scn::new(10)).unwrap();
    store
        .append(&[
            window(11, vec![truncate(11, 1)]),
            window(12, vec![up(12, 4)]),
        ])
        .unwrap();
    let ws = store.windows(Scn::new(10), Scn::MAX, 10).unwrap();
    for instance in 0..2 {
        let spec = FilterSpec::from_query(&format!("partition=mod:2:{instance}")).unwrap();
        let rows = store
            .events(ws[0].first_seq, ws[0].first_seq, &spec, 10, usize::MAX)
            .unwrap();
        assert_eq!(rows.len(), 1, "mod:2:{instance}");
    }
    let rows = store
        .events(ws[0].first_seq, ws[0].first_seq, &only_2, 10, usize::MAX)
        .unwrap();
    assert!(rows.is_empty());
}

/// Paging by row id keeps updated keys in place; deltas by SCN.
pub fn snapshot_paging_and_delta(store: &dyn BootstrapStore) {
    let batch: Vec<StoredEvent> = (0..50).map(|k| up(10, k)).collect();
    store.apply(&batch, Scn::new(10)).unwrap();
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let q = SnapshotQuery {
            source: SourceId::new(1),
            after_row: after,
            since: None,
            tombstones: false,
            filter: &FilterSpec::all(),
            max_bytes: usize::MAX,
            limit: 7,
        };
        let rows = store.read(&q).unwrap();
        if rows.is_empty() {
            break;
        }
        pages += 1;
        if pages == 2 {
            // Updates while paging: keys already seen and keys not yet seen keep their place.
            store
                .apply(&[up(11, 0), up(11, 40), up(11, 100)], Scn::new(11))
                .unwrap();
        }
        assert!(rows.windows(2).all(|w| w[0].row_id < w[1].row_id));
        after = rows.last().unwrap().row_id;
        seen.extend(scns(&rows.into_iter().map(|r| r.frame).collect::<Vec<_>>()));
    }
    let mut keys: Vec<i64> = seen
        .iter()
        .map(|(_, k)| match k {
            Key::Int(v) => *v,
            _ => -1,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys,
        (0..50).chain([100]).collect::<Vec<_>>(),
        "every key exactly once"
    );
    assert!(seen.contains(&(11, Key::Int(40))));
    assert_eq!(
        all_rows(store, 1, Some(10), true, &FilterSpec::all()),
        vec![(11, Key::Int(0)), (11, Key::Int(40)), (11, Key::Int(100))]
    );
    assert!(all_rows(store, 1, Some(11), true, &FilterSpec::all()).is_empty());
}

/// Reads with a filter return exactly what the in-memory filter accepts.
pub fn filters_push_down(store: &dyn BootstrapStore) {
    store.start_log(Scn::ZERO).unwrap();
    let mut events = Vec::new();
    for k in -20i64..60 {
        events.push(event(
            1,
            1 + (k.rem_euclid(3)) as u16,
            Key::Int(k),
            Opcode::Upsert,
            b"p",
        ));
        events.push(event(
            1,
            2,
            Key::Bytes(format!("user-{k}").into_bytes()),
            Opcode::Upsert,
            b"p",
        ));
    }
    events.push(event(1, 3, Key::None, Opcode::Upsert, b"p"));
    store.append(&[window(1, events.clone())]).unwrap();
    store.apply(&events, Scn::new(1)).unwrap();
    for query in [
        "",
        "sources=1,3",
        "partition=mod:4:1",
        "partition=mod:7:0,2-3&sources=2",
        "partition=range:10:0-2,5",
        "partition=range:7:1&partition=mod:3:2",
        "partition.2=mod:2:0&partition=range:20:0",
    ] {
        let spec = FilterSpec::from_query(query).unwrap();
        let filter = Filter::new(&spec);
        let expected: Vec<(u64, Key)> = events
            .iter()
            .filter(|e| filter.matches_key(e.source, e.key.as_ref()))
            .map(|e| (e.scn.get(), e.key.clone()))
            .collect();
        let first = store.windows(Scn::ZERO, Scn::MAX, 1).unwrap()[0].first_seq;
        let log: Vec<Vec<u8>> = store
            .events(first, u64::MAX >> 1, &spec, 10_000, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.frame)
            .collect();
        assert_eq!(scns(&log), expected, "log, filter {query:?}");
        let mut snap = Vec::new();
        for source in 1..=3 {
            snap.extend(all_rows(store, source, None, false, &spec));
        }
        let mut want = expected.clone();
        want.sort_by_key(|(_, k)| format!("{k:?}"));
        snap.sort_by_key(|(_, k)| format!("{k:?}"));
        assert_eq!(snap, want, "snapshot, filter {query:?}");
    }
}

/// Seed progress survives, finishing sets the SCNs.
pub fn seed_progress_and_finish(store: &dyn BootstrapStore) {
    assert_eq!(store.seed_progress().unwrap(), None);
    let p = SeedProgress {
        scn: Scn::new(40),
        token: r#"{"table":0,"after":[5]}"#.into(),
    };
    store
        .seed_chunk_with(&[up(40, 1), up(40, 2)], &p, SeedWrite::Fresh)
        .unwrap();
    assert_eq!(store.seed_progress().unwrap(), Some(p.clone()));
    // A fresh chunk never overwrites: a key already stored (or twice in the chunk) fails it whole.
    let p2 = SeedProgress {
        scn: Scn::new(40),
        token: r#"{"table":0,"after":[9]}"#.into(),
    };
    for chunk in [vec![up(40, 3), up(40, 2)], vec![up(40, 4), up(40, 4)]] {
        assert!(
            store
                .seed_chunk_with(&chunk, &p2, SeedWrite::Fresh)
                .is_err()
        );
        assert_eq!(store.seed_progress().unwrap(), Some(p.clone()));
        assert_eq!(store.snapshot_status().unwrap().rows, 2);
    }
    // A resumed seed upserts: the greater SCN wins, new keys are added.
    store
        .seed_chunk(&[up(41, 2), up(39, 1), up(40, 3)], &p2)
        .unwrap();
    assert_eq!(store.seed_progress().unwrap(), Some(p2));
    let rows = all_rows(store, 1, None, false, &FilterSpec::all());
    assert_eq!(
        rows,
        vec![(40, Key::Int(1)), (41, Key::Int(2)), (40, Key::Int(3))]
    );
    assert_eq!(store.snapshot_status().unwrap().applied_scn, None);
    store.finish_seed(Scn::new(40)).unwrap();
    let st = store.snapshot_status().unwrap();
    assert_eq!(
        (st.applied_scn, st.base_scn, st.rows, st.seeded),
        (Some(Scn::new(40)), Some(Scn::new(40)), 3, true)
    );
    assert_eq!(store.seed_progress().unwrap(), None);
}

/// Sources are recorded and listed by id.
pub fn sources_round_trip(store: &dyn BootstrapStore) {
    assert!(store.sources().unwrap().is_empty());
    let s = |id, name: &str| SourceInfo {
        id: SourceId::new(id),
        name: name.into(),
    };
    store.set_sources(&[s(2, "b"), s(1, "a")]).unwrap();
    store.set_sources(&[s(2, "b2")]).unwrap();
    assert_eq!(store.sources().unwrap(), vec![s(1, "a"), s(2, "b2")]);
}

/// Seed schemas are recorded and read back by id.
pub fn schemas_round_trip(store: &dyn BootstrapStore) {
    use databus_core::SchemaId;
    let id = SchemaId::new(0xfedc_ba98_7654_3210);
    assert_eq!(store.schema(id).unwrap(), None);
    let s = super::StoredSchema {
        id,
        source: SourceId::new(3),
        table: "shop.orders".into(),
        avro_json: r#"{"type":"record"}"#.into(),
    };
    store.put_schema(&s).unwrap();
    store.put_schema(&s).unwrap();
    assert_eq!(store.schema(id).unwrap(), Some(s));
    assert_eq!(store.schema(SchemaId::new(1)).unwrap(), None);
}

/// Role reports: one per role, the last written wins, listed by role.
pub fn roles_round_trip(store: &dyn BootstrapStore) {
    use super::{Role, RoleReport, RoleState};
    assert!(store.roles().unwrap().is_empty());
    let report = |role, state, message: Option<&str>| RoleReport {
        role,
        state,
        message: message.map(str::to_owned),
        updated_ms: 20,
        since_ms: 10,
        caught_up_ms: Some(15),
    };
    store
        .put_role(&report(Role::Applier, RoleState::Running, None))
        .unwrap();
    store
        .put_role(&report(Role::Producer, RoleState::Running, None))
        .unwrap();
    let failed = report(
        Role::Producer,
        RoleState::Failed,
        Some("disk full; free space"),
    );
    store.put_role(&failed).unwrap();
    assert_eq!(
        store.roles().unwrap(),
        vec![failed, report(Role::Applier, RoleState::Running, None)]
    );
}

/// An upsert of `key` at `scn` whose frame carries `size` bytes of payload.
fn big(scn: u64, source: u16, key: i64, size: usize) -> StoredEvent {
    event(
        scn,
        source,
        Key::Int(key),
        Opcode::Upsert,
        &vec![b'x'; size],
    )
}

/// Reads load what the byte budget asks, not a fixed number of rows: with rows of 64 KiB, a 100 KB
/// budget reads two (the one reaching the budget is the last), a budget of 1 byte one; the row limit
/// still holds.
pub fn reads_stop_at_the_byte_budget(store: &dyn BootstrapStore) {
    const ROW: usize = 64 << 10;
    store.start_log(Scn::new(0)).unwrap();
    let windows: Vec<LogWindow> = (1..=40)
        .map(|scn| window(scn, vec![big(scn, 1, scn as i64, ROW)]))
        .collect();
    store.append(&windows).unwrap();
    let first = store.windows(Scn::ZERO, Scn::MAX, 1).unwrap()[0].first_seq;
    let all = FilterSpec::all();
    let read = |limit, max_bytes| {
        store
            .events(first, first + 39, &all, limit, max_bytes)
            .unwrap()
    };
    let rows = read(2048, 100_000);
    assert_eq!(rows.len(), 2, "two 64 KiB rows reach a 100 KB budget");
    assert!(rows.iter().map(|r| r.frame.len()).sum::<usize>() < 100_000 + ROW + 100);
    assert_eq!(
        read(2048, 1).len(),
        1,
        "at least one row, whatever the budget"
    );
    assert_eq!(read(2048, 0).len(), 1);
    assert_eq!(read(3, usize::MAX).len(), 3, "the row limit holds");
    assert_eq!(read(2048, usize::MAX).len(), 40);

    let events: Vec<StoredEvent> = (1..=40).map(|k| big(50, 2, k, ROW)).collect();
    store.apply(&events, Scn::new(50)).unwrap();
    let snap = |max_bytes| {
        store
            .read(&SnapshotQuery {
                source: SourceId::new(2),
                after_row: 0,
                since: None,
                tombstones: false,
                filter: &all,
                limit: 2048,
                max_bytes,
            })
            .unwrap()
    };
    assert_eq!(
        snap(100_000).len(),
        2,
        "two 64 KiB rows reach a 100 KB budget"
    );
    assert_eq!(snap(1).len(), 1, "at least one row, whatever the budget");
    assert_eq!(snap(usize::MAX).len(), 40);
}

/// Paging through the log and the snapshot with small byte budgets (as catch-up and snapshot pages
/// do) gives exactly the events of one unbounded read, filtered or not.
pub fn paged_reads_equal_one_read(store: &dyn BootstrapStore) {
    store.start_log(Scn::new(0)).unwrap();
    let windows: Vec<LogWindow> = (1..=60u64)
        .map(|scn| {
            let events = (0..scn % 4)
                .map(|i| {
                    big(
                        scn,
                        1 + (i % 2) as u16,
                        (scn * 10 + i) as i64,
                        (scn as usize * 37) % 900,
                    )
                })
                .collect();
            window(scn, events)
        })
        .collect();
    store.append(&windows).unwrap();
    let ws = store.windows(Scn::ZERO, Scn::MAX, usize::MAX).unwrap();
    let (first, end) = (
        ws[0].first_seq,
        ws.last()
            .map(|w| w.first_seq + u64::from(w.events))
            .unwrap(),
    );
    let only_1 = FilterSpec::from_query("sources=1").unwrap();
    for filter in [FilterSpec::all(), only_1] {
        let whole = store
            .events(first, end - 1, &filter, usize::MAX, usize::MAX)
            .unwrap();
        assert!(!whole.is_empty());
        for budget in [1, 300, 1000, 5000] {
            let mut paged = Vec::new();
            let mut next = first;
            while next < end {
                let rows = store.events(next, end - 1, &filter, 2048, budget).unwrap();
                let Some(last) = rows.last() else { break };
                next = last.seq + 1;
                paged.extend(rows);
            }
            assert_eq!(paged, whole, "log paged with a budget of {budget} bytes");
        }
    }
    let events: Vec<StoredEvent> = (1..=50)
        .map(|k| big(70, 3, k, (k as usize * 53) % 700))
        .collect();
    store.apply(&events, Scn::new(70)).unwrap();
    let all = FilterSpec::all();
    let query = |after_row, max_bytes| SnapshotQuery {
        source: SourceId::new(3),
        after_row,
        since: None,
        tombstones: false,
        filter: &all,
        limit: 2048,
        max_bytes,
    };
    let whole = store.read(&query(0, usize::MAX)).unwrap();
    assert_eq!(whole.len(), 50);
    for budget in [1, 300, 2000] {
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let rows = store.read(&query(after, budget)).unwrap();
            let Some(last) = rows.last() else { break };
            after = last.row_id;
            paged.extend(rows);
        }
        assert_eq!(
            paged, whole,
            "snapshot paged with a budget of {budget} bytes"
        );
    }
}

/// The status totals (kept as counters, not counted per status) follow appends, trims, upserts,
/// deletes and truncates.
pub fn status_counts_follow_every_write(store: &dyn BootstrapStore) {
    store.start_log(Scn::new(0)).unwrap();
    store
        .append(&[
            window(1, vec![big(1, 1, 1, 10), big(1, 1, 2, 20)]),
            window(2, vec![]),
            window(3, vec![big(3, 1, 3, 30)]),
        ])
        .unwrap();
    let ws = store.windows(Scn::ZERO, Scn::MAX, 10).unwrap();
    let st = store.log_status().unwrap();
    assert_eq!((st.windows, st.events), (3, 3));
    assert_eq!(st.bytes, ws.iter().map(|w| w.bytes).sum::<u64>());
    store.trim(Scn::new(1), 10).unwrap();
    let st = store.log_status().unwrap();
    assert_eq!((st.windows, st.events), (2, 1));
    assert_eq!(st.bytes, ws[1].bytes + ws[2].bytes);
    assert_eq!(st.first_scn, Some(Scn::new(2)));
    store.trim(Scn::new(3), 10).unwrap();
    let st = store.log_status().unwrap();
    assert_eq!((st.windows, st.events, st.bytes), (0, 0, 0));

    assert_eq!(store.snapshot_status().unwrap().rows, 0);
    store
        .apply(&[up(5, 1), up(5, 2), up(6, 1)], Scn::new(6))
        .unwrap();
    assert_eq!(
        store.snapshot_status().unwrap().rows,
        2,
        "an update adds no row"
    );
    store
        .apply(
            &[event(7, 1, Key::Int(3), Opcode::Upsert, b"v")],
            Scn::new(7),
        )
        .unwrap();
    assert_eq!(store.snapshot_status().unwrap().rows, 3);
    store.apply(&[truncate(8, 1)], Scn::new(8)).unwrap();
    let after_truncate = store.snapshot_status().unwrap().rows;
    assert!(
        after_truncate <= 1,
        "only the truncate marker may stay: {after_truncate}"
    );
}
