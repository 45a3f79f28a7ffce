//! Scenario 2: a cache invalidator following only keys 0..50 of `shop.items` (a server-side source and
//! key-range filter) receives every change of those keys, per key in commit order, and nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_filters::FilterSpec;
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_invalidator_gets_every_change_of_its_keys_in_commit_order() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    // From what the relay captured: it started at the source's position, after the schema's DDL.
    config.start = StartPosition::Oldest;
    // Source 1 (items), keys in [0, 50): RANGE partitioning with ranges of 50 keys, range 0.
    config.filter = FilterSpec::from_query("sources=1&partition=range:50:0")?;
    let mut invalidator = Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;
    let work = Workload::new(2, 150)
        .spawn(db.url(), 1200, Duration::ZERO)
        .await??;
    let keys: BTreeSet<i64> = (0..50).collect();
    let expected: usize = work
        .log()
        .iter()
        .flat_map(|t| &t.ops)
        .filter(|op| keys.contains(&op.key()))
        .count();
    assert!(
        expected > 200,
        "the workload touches the followed keys often: {expected}"
    );
    let rec = invalidator.recorder.clone();
    wait_for(
        &format!("{expected} changes of keys 0..50"),
        Duration::from_secs(120),
        || {
            let n: usize = rec.lock().windows.iter().map(|w| w.events.len()).sum();
            async move { Ok((n >= expected).then_some(())) }
        },
    )
    .await?;
    invalidator.ensure_running().await?;
    let checked = check_key_histories(&rec.windows(), work.log(), &keys)?;
    assert_eq!(checked, expected);
    // What the invalidator saw, applied, is the source's rows of those keys.
    let mut conn = db.root_conn().await?;
    let source: std::collections::BTreeMap<String, Row> =
        source_rows(&mut conn, "shop.items", "id")
            .await?
            .into_iter()
            .filter(|(k, _)| k.parse::<i64>().is_ok_and(|k| keys.contains(&k)))
            .collect();
    compare_tables(
        "shop.items keys 0..50",
        &source,
        &rec.table(workload::ITEMS),
        Columns::Exact,
    )?;
    invalidator.stop().await?;
    Ok(())
}
