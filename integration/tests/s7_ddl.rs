//! Scenario 7: DDL while a consumer runs. `shop.items` gets a `note` column, rows are written with it,
//! the column is dropped, rows are written without it — all while the consumer consumes. Every event
//! decodes with its own writer schema (old rows without `note`, new rows with it, rows after the drop
//! without it again), windows stay whole and in order, and the replica ends equal to the source.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::workload::ITEMS;
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_column_while_consuming() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut consumer = Consumer::start(
        ClientConfig {
            // From what the relay captured: it started after the schema's DDL.
            start: StartPosition::Oldest,
            ..ClientConfig::with_relays([relay.url()])
        },
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;
    let mut work = Workload::new(7, 100);
    let mut conn = db.root_conn().await?;
    // No waiting between the phases: the consumer reads behind the writes.
    work.run(&mut conn, 300).await?;
    let before_add = work.last_seq();
    db.exec(&["ALTER TABLE shop.items ADD COLUMN note VARCHAR(32) NULL"])
        .await?;
    work.set_note(true);
    work.run(&mut conn, 300).await?;
    let before_drop = work.last_seq();
    work.set_note(false);
    db.exec(&["ALTER TABLE shop.items DROP COLUMN note"])
        .await?;
    work.run(&mut conn, 300).await?;
    consumer
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    consumer.ensure_running().await?;

    let windows = consumer.recorder.windows();
    let report = check_windows(
        &windows,
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            ..StreamCheck::default()
        },
    )?;
    assert_eq!(report.last_seq, 900, "{report:?}");
    // Which schema each event decoded with: `note` only between the two ALTERs.
    let mut with_note = 0;
    for w in &windows {
        let seq: i64 = match w.events.iter().find(|e| e.source == workload::TXLOG) {
            Some(t) => t.row["seq"].parse()?,
            None => continue,
        };
        for e in w.events.iter().filter(|e| e.source == ITEMS && !e.delete) {
            let has = e.row.contains_key("note");
            let want = seq > before_add && seq <= before_drop;
            assert_eq!(has, want, "transaction {seq}: row {:?}", e.row);
            if has {
                assert_eq!(e.row["note"], format!("n{seq}"));
                with_note += 1;
            }
        }
    }
    assert!(with_note > 100, "{with_note} rows written with a note");
    compare_tables(
        "shop.items",
        &source_rows(&mut conn, "shop.items", "id").await?,
        &consumer.recorder.table(ITEMS),
        Columns::Evolved,
    )?;
    consumer.stop().await?;
    Ok(())
}
