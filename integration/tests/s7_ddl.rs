//! Scenario 7: DDL while a consumer runs, on MariaDB and on PostgreSQL ([`SourceKind`]). Between
//! phases of the workload on `shop.items`: a `note` column is added (rows are written with it), the
//! column is dropped, `qty` changes type (INT to BIGINT), the table is truncated, and the table is
//! dropped and created again — all while the consumer consumes. Every event decodes with its own
//! writer schema (old rows without `note`, new rows with it, rows after the drop without it again),
//! each schema change reaches the consumer with its new schema, each truncate and drop empties the
//! consumer's replica of the table, windows stay whole and in order, and the replica ends equal to
//! the source row by row.
//!
//! PostgreSQL does not decode `DROP TABLE`, and a re-created table is not in a `FOR TABLE`
//! publication: there the drop is `DROP`, `CREATE`, `REPLICA IDENTITY FULL` and `ALTER PUBLICATION …
//! ADD TABLE` in one transaction, and the connector sees the drop as the table's new OID
//! (docs/connectors.md): the consumer gets the same truncate (cause `drop`) as on MariaDB.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::source::{PG_SCHEMA, PG_SLOT};
use databus_integration::workload::ITEMS;
use databus_integration::*;

/// Transactions per phase.
const PHASE: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_column_while_consuming() -> anyhow::Result<()> {
    ddl_while_consuming(SourceKind::MariaDb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_while_consuming_on_postgres() -> anyhow::Result<()> {
    ddl_while_consuming(SourceKind::Postgres).await
}

async fn ddl_while_consuming(kind: SourceKind) -> anyhow::Result<()> {
    let (db, relay) = start_pipeline_on(kind, "8MiB").await?;
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
    let mut conn = db.writer().await?;
    // No waiting between the phases: the consumer reads behind the writes.
    work.run(&mut conn, PHASE).await?;
    let before_add = work.last_seq();
    db.exec(&["ALTER TABLE shop.items ADD COLUMN note VARCHAR(32) NULL"])
        .await?;
    work.set_note(true);
    work.run(&mut conn, PHASE).await?;
    let before_drop = work.last_seq();
    work.set_note(false);
    db.exec(&["ALTER TABLE shop.items DROP COLUMN note"])
        .await?;
    work.run(&mut conn, PHASE).await?;
    db.exec(&[match kind {
        SourceKind::MariaDb => "ALTER TABLE shop.items MODIFY qty BIGINT NULL",
        SourceKind::Postgres => "ALTER TABLE shop.items ALTER COLUMN qty TYPE BIGINT",
    }])
    .await?;
    work.run(&mut conn, PHASE).await?;
    db.exec(&["TRUNCATE shop.items"]).await?;
    work.clear();
    work.run(&mut conn, PHASE).await?;
    match kind {
        SourceKind::MariaDb => {
            db.exec(&["DROP TABLE shop.items", workload::SCHEMA[1]])
                .await?
        }
        SourceKind::Postgres => {
            let publish = format!("ALTER PUBLICATION {PG_SLOT} ADD TABLE shop.items");
            db.exec_tx(&[
                "DROP TABLE shop.items",
                PG_SCHEMA[1],
                PG_SCHEMA[2],
                &publish,
            ])
            .await?
        }
    }
    work.clear();
    work.run(&mut conn, PHASE).await?;
    let last = work.last_seq();
    if let Err(e) = consumer.wait_seq(last, Duration::from_secs(120)).await {
        let status = relay.status().await;
        let mut relay = relay;
        anyhow::bail!(
            "{e:#}\nrelay status {status:?}\nrelay log:\n{}",
            relay.proc().log_tail()
        );
    }
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
    assert_eq!(report.last_seq, 6 * PHASE as i64, "{report:?}");
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
    {
        let r = consumer.recorder.lock();
        // The TRUNCATE and the DROP, each once.
        let truncates: Vec<u64> = r
            .truncates
            .iter()
            .filter(|(s, _)| *s == ITEMS)
            .map(|(_, scn)| *scn)
            .collect();
        assert_eq!(truncates.len(), 2, "truncates of shop.items: {truncates:?}");
        // ADD COLUMN, DROP COLUMN and the type change each reached the consumer with the new schema
        // (MariaDB's re-created table may add one).
        let new_schemas = r
            .schema_changes
            .iter()
            .filter(|(s, _, _, known)| *s == ITEMS && *known)
            .count();
        assert!(
            new_schemas >= 3,
            "schema changes of shop.items: {:?}",
            r.schema_changes
        );
    }
    compare_tables(
        "shop.items",
        &db.rows("shop.items", "id").await?,
        &consumer.recorder.table(ITEMS),
        Columns::Evolved,
    )?;
    compare_tables(
        "shop.txlog",
        &db.rows("shop.txlog", "seq").await?,
        &consumer.recorder.table(workload::TXLOG),
        Columns::Exact,
    )?;
    consumer.stop().await?;
    Ok(())
}
