//! Property tests on random histories: the consolidated delta equals a brute-force replay of the log
//! followed by "last write per key", with filters pushed down to SQL equal to the in-memory filter, and
//! a whole bootstrap (delta or snapshot, then catch-up, paged at random sizes) ends at the source's
//! state at the target SCN. Run against the SQLite store and the memory store.

use std::collections::BTreeMap;
use std::sync::Arc;

use databus_bootstrap::applier::{ApplierSettings, apply_step};
use databus_bootstrap::serve::{BootstrapService, Phase, ServeSettings};
use databus_bootstrap::store::{
    BootstrapStore, LogWindow, MemoryStore, SourceInfo, SqliteStore, StoredEvent,
};
use databus_core::{
    Checkpoint, ConsumptionMode, EventBuilder, EventView, Key, Opcode, Scn, SourceId,
};
use databus_filters::{Filter, FilterSpec};
use proptest::prelude::*;

/// (source, key, payload or delete)
type Change = (u16, i64, Option<u8>);

fn frame(scn: u64, c: &Change) -> StoredEvent {
    let (source, key, payload) = *c;
    let mut out = Vec::new();
    let p = payload.map(|p| vec![p]).unwrap_or_default();
    EventBuilder::new(
        Scn::new(scn),
        if payload.is_some() {
            Opcode::Upsert
        } else {
            Opcode::Delete
        },
    )
    .source(SourceId::new(source))
    .key(Key::Int(key).as_ref())
    .payload(&p)
    .write_to_vec(&mut out);
    StoredEvent::from_frame(&out).unwrap()
}

type Row = (u16, i64, u64, bool, Vec<u8>);

fn rows_of(body: &[u8]) -> Vec<Row> {
    EventView::parse_all(body)
        .unwrap()
        .into_iter()
        .filter(|v| !v.opcode().is_control())
        .map(|v| {
            let Key::Int(k) = v.key().to_owned() else {
                panic!("int keys only")
            };
            (
                v.source().get(),
                k,
                v.scn().get(),
                v.opcode() == Opcode::Delete,
                v.payload().to_vec(),
            )
        })
        .collect()
}

fn history() -> impl Strategy<Value = Vec<Vec<Change>>> {
    let change = (
        1u16..=3,
        -6i64..12,
        proptest::option::weighted(0.75, any::<u8>()),
    );
    proptest::collection::vec(proptest::collection::vec(change, 0..5), 1..40)
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("sources=1,3".to_owned()),
        (1u32..6)
            .prop_flat_map(|n| (Just(n), 0..n))
            .prop_map(|(n, b)| format!("partition=mod:{n}:{b}")),
        (1u64..5, 0u64..3)
            .prop_map(|(size, id)| format!("partition=range:{size}:{id}&partition.2=mod:2:1")),
    ]
}

fn check(
    store: Arc<dyn BootstrapStore>,
    windows: &[Vec<Change>],
    since_idx: usize,
    query: &str,
    page: usize,
    batch: usize,
) {
    let spec = FilterSpec::from_query(query).unwrap();
    let f = Filter::new(&spec);
    store
        .set_sources(&[1, 2, 3].map(|id| SourceInfo {
            id: SourceId::new(id),
            name: format!("s{id}"),
        }))
        .unwrap();
    store.start_log(Scn::ZERO).unwrap();
    let scn_of = |i: usize| 2 * i as u64 + 1; // sparse SCNs
    let logw: Vec<LogWindow> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| LogWindow {
            scn: Scn::new(scn_of(i)),
            timestamp_ns: 0,
            events: w.iter().map(|c| frame(scn_of(i), c)).collect(),
        })
        .collect();
    store.append(&logw).unwrap();
    let settings = ApplierSettings {
        max_windows: batch,
        max_events: batch * 3,
        ..ApplierSettings::default()
    };
    while apply_step(store.as_ref(), &settings).unwrap().windows > 0 {}
    let last = scn_of(windows.len() - 1);
    let since = if since_idx >= windows.len() {
        None
    } else {
        Some(scn_of(since_idx))
    };

    // Brute force: replay, then last write per key; the state at an SCN.
    let state_at = |scn: u64| {
        let mut s: BTreeMap<(u16, i64), Vec<u8>> = BTreeMap::new();
        for (i, w) in windows
            .iter()
            .enumerate()
            .filter(|(i, _)| scn_of(*i) <= scn)
        {
            let _ = i;
            for &(src, k, p) in w {
                if f.matches_key(SourceId::new(src), Key::Int(k).as_ref()) {
                    match p {
                        Some(p) => s.insert((src, k), vec![p]),
                        None => s.remove(&(src, k)),
                    };
                }
            }
        }
        s
    };
    let mut last_write: BTreeMap<(u16, i64), Row> = BTreeMap::new();
    for (i, w) in windows.iter().enumerate() {
        for &(src, k, p) in w {
            if since.is_some_and(|t| scn_of(i) <= t)
                || !f.matches_key(SourceId::new(src), Key::Int(k).as_ref())
            {
                continue;
            }
            last_write.insert(
                (src, k),
                (
                    src,
                    k,
                    scn_of(i),
                    p.is_none(),
                    p.map(|p| vec![p]).unwrap_or_default(),
                ),
            );
        }
    }
    if since.is_none() {
        last_write.retain(|_, r| !r.3); // a full snapshot has no tombstones
    }

    let service = BootstrapService::new(
        store,
        ServeSettings {
            log_only_max_events: 0,
            ..ServeSettings::default()
        },
    );
    let mut cp = match since {
        Some(t) => Checkpoint::after(Scn::new(t)),
        None => Checkpoint::beginning(),
    };
    cp.start_bootstrap(since.map(Scn::new));
    let mut state = since.map_or_else(BTreeMap::new, &state_at);
    let mut snapshot_rows: Vec<Row> = Vec::new();
    let mut log_only = false;
    for _ in 0..10_000 {
        let was_snapshot = cp.mode == ConsumptionMode::BootstrapSnapshot;
        let r = service.stream(cp.clone(), &spec, page).unwrap();
        let rows = rows_of(&r.body);
        if was_snapshot {
            log_only |= r.phase == Phase::Catchup
                && rows.is_empty()
                && r.checkpoint
                    .bootstrap
                    .as_ref()
                    .is_some_and(|b| b.start_scn == since.map(Scn::new));
            snapshot_rows.extend(rows.iter().cloned());
        }
        for (src, k, _, del, p) in rows {
            if del {
                state.remove(&(src, k));
            } else {
                state.insert((src, k), p);
            }
        }
        cp = r.checkpoint;
        if cp.mode == ConsumptionMode::Online {
            break;
        }
    }
    assert_eq!(cp.mode, ConsumptionMode::Online, "bootstrap did not finish");
    assert_eq!(
        cp.window_scn.get(),
        last,
        "target is the producer's position"
    );
    assert_eq!(state, state_at(last), "consumer state at the target");
    if !log_only {
        snapshot_rows.sort();
        let want: Vec<Row> = last_write.into_values().collect();
        assert_eq!(
            snapshot_rows, want,
            "delta rows = last write per key after since"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn delta_equals_brute_force_sqlite(windows in history(), since in 0usize..45, query in filter(), page in 1usize..400, batch in 1usize..6) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BootstrapStore> = Arc::new(SqliteStore::open(dir.path().join("p.sqlite")).unwrap());
        check(store, &windows, since, &query, page, batch);
    }

    #[test]
    fn delta_equals_brute_force_memory(windows in history(), since in 0usize..45, query in filter(), page in 1usize..400, batch in 1usize..6) {
        check(Arc::new(MemoryStore::new()), &windows, since, &query, page, batch);
    }
}
