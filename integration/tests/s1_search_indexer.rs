//! Scenario 1: a search indexer (callbacks, 4 parallel workers) stays consistent with the source under
//! continuous writes: at many points in time its index equals the source's state after the
//! transaction it has reached, every window is whole and in order, and at the end it equals the
//! source row by row.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_indexer_stays_consistent_under_continuous_writes() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    // From what the relay captured: it started at the source's position, after the schema's DDL.
    config.start = StartPosition::Oldest;
    config.workers = 4;
    let mut indexer = Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::snapshot_every(20),
    )?;
    // Writes run while the indexer consumes.
    let writer = Workload::new(1, 200).spawn(db.url(), 1500, Duration::ZERO);
    let work = writer.await??;
    indexer
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    indexer.ensure_running().await?;

    let report = check_windows(
        &indexer.recorder.windows(),
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            unordered: true,
            allow_redelivery: false,
        },
    )?;
    assert_eq!(report.last_seq, 1500, "{report:?}");
    assert_eq!(report.tx_windows, 1500, "{report:?}");

    // Consistent at points in time: the index at the end of transaction `seq` is the source's state
    // after `seq`.
    let snapshots = indexer.recorder.lock().index_snapshots.clone();
    assert_eq!(snapshots.len(), 1500 / 20, "one copy every 20 transactions");
    for (seq, index) in &snapshots {
        compare_tables(
            &format!("shop.items after transaction {seq}"),
            &canonical(&work.state_at(*seq)),
            index,
            Columns::Exact,
        )?;
    }

    let mut conn = db.root_conn().await?;
    compare_tables(
        "shop.items",
        &source_rows(&mut conn, "shop.items", "id").await?,
        &indexer.recorder.table(ITEMS),
        Columns::Exact,
    )?;
    compare_tables(
        "shop.txlog",
        &source_rows(&mut conn, "shop.txlog", "seq").await?,
        &indexer.recorder.table(TXLOG),
        Columns::Exact,
    )?;
    // The generator's model is the source's state too (the workload wrote what it logged).
    compare_tables(
        "shop.items (model)",
        &canonical(work.model()),
        &indexer.recorder.table(ITEMS),
        Columns::Exact,
    )?;
    let summary = indexer.stop().await?;
    assert!(summary.windows >= 1500, "{summary:?}");
    Ok(())
}
