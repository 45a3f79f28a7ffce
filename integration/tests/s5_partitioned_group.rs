//! Scenario 5: a partitioned group of 3 consumers (`partition = mod:3:i`) covers every event exactly
//! once per window: merged by SCN, their windows are the workload's transactions, whole, in order, with
//! no gap; each member gets only keys of its bucket, per key in commit order. It runs on MariaDB and on
//! PostgreSQL ([`SourceKind`]).

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, PartitionMember, StartPosition};
use databus_core::KeyRef;
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_group_covers_every_event_exactly_once() -> anyhow::Result<()> {
    partitioned_group(SourceKind::MariaDb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_group_covers_every_event_exactly_once_on_postgres() -> anyhow::Result<()> {
    partitioned_group(SourceKind::Postgres).await
}

async fn partitioned_group(kind: SourceKind) -> anyhow::Result<()> {
    let (db, relay) = start_pipeline_on(kind, "8MiB").await?;
    let mut members = Vec::new();
    for instance in 0..3 {
        let mut config = ClientConfig::with_relays([relay.url()]);
        // From what the relay captured: it started at the source's position, after the schema's DDL.
        config.start = StartPosition::Oldest;
        config.partition = Some(PartitionMember { instance, of: 3 });
        members.push(Consumer::start(
            config,
            Arc::new(MemoryCheckpointStore::new()),
            Recorder::new(),
        )?);
    }
    let work = db
        .spawn_workload(Workload::new(5, 120), 1000, Duration::ZERO)
        .await??;
    // Every item change and every txlog row, once across the group.
    let expected: usize = work.log().iter().map(|t| t.ops.len() + 1).sum();
    let recorders: Vec<_> = members.iter().map(|m| m.recorder.clone()).collect();
    wait_for(
        &format!("{expected} events across the group"),
        Duration::from_secs(120),
        || {
            let n: usize = recorders
                .iter()
                .map(|r| {
                    r.lock()
                        .windows
                        .iter()
                        .map(|w| w.events.len())
                        .sum::<usize>()
                })
                .sum();
            async move { Ok((n >= expected).then_some(())) }
        },
    )
    .await?;
    for m in &mut members {
        m.ensure_running().await?;
    }
    let windows: Vec<Vec<ObservedWindow>> = recorders.iter().map(|r| r.windows()).collect();
    let merged = merge_group(&windows)?;
    let report = check_windows(
        &merged,
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            unordered: true,
            allow_redelivery: false,
        },
    )?;
    assert_eq!((report.first_seq, report.last_seq), (1, 1000), "{report:?}");
    let three = NonZeroU32::new(3).unwrap();
    for (i, member) in windows.iter().enumerate() {
        let mut counts = [0usize; 2];
        for w in member {
            for e in &w.events {
                assert_eq!(
                    databus_filters::bucket_of(e.key.as_ref(), three),
                    i as u32,
                    "member {i} got key {} of another bucket",
                    e.key
                );
                counts[usize::from(e.source == TXLOG)] += 1;
            }
        }
        assert!(counts[0] > 0 && counts[1] > 0, "member {i} got {counts:?}");
        // Per key in commit order: the member's item events are exactly its keys' histories.
        let keys: BTreeSet<i64> = (1..=120)
            .filter(|k| databus_filters::bucket_of(KeyRef::Int(*k), three) == i as u32)
            .collect();
        let items: Vec<ObservedWindow> = member
            .iter()
            .map(|w| ObservedWindow {
                events: w
                    .events
                    .iter()
                    .filter(|e| e.source == ITEMS)
                    .cloned()
                    .collect(),
                ..w.clone()
            })
            .collect();
        check_key_histories(&items, work.log(), &keys)?;
    }
    // Together the group's replicas are the source.
    let mut union = std::collections::BTreeMap::new();
    for r in &recorders {
        union.extend(r.table(ITEMS));
    }
    compare_tables(
        "shop.items",
        &db.rows("shop.items", "id").await?,
        &union,
        Columns::Exact,
    )?;
    for m in members {
        m.stop().await?;
    }
    Ok(())
}
