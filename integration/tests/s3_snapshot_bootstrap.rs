//! Scenario 3: a new replica bootstraps from a consistent snapshot (a seeded bootstrap server, its
//! seed, producer, applier and server run as separate processes) while
//! writes continue, catches up, then follows the relay; it ends identical to the source, row by row,
//! and every window after the snapshot is whole and in order with no gap.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, FileCheckpointStore, StartPosition};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_replica_bootstraps_from_a_snapshot_then_follows_the_relay() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut work = Workload::new(3, 300);
    let mut conn = db.root_conn().await?;
    work.run(&mut conn, 400).await?;
    // The seed reads the source at a consistent point; the producer copies the relay after it.
    let seed_url = db.create_user("seed", "seed-pw", "SELECT").await?;
    // Its roles as separate processes: `databus bootstrap seed`, then producer, applier and server.
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            seed_url: Some(seed_url),
            separate_roles: true,
            ..BootstrapOptions::default()
        },
    )
    .await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(60)).await?;

    // Writes continue while the replica takes its snapshot and catches up.
    let writer = work.spawn(db.url(), 600, Duration::from_millis(2));
    wait_for("the writer to start", Duration::from_secs(30), || {
        let url = db.url();
        async move {
            let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url)?).await?;
            Ok((source_scn(&mut c).await? > scn).then_some(()))
        }
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    config.bootstrap_servers = vec![boot.url()];
    config.start = StartPosition::Snapshot;
    // Small responses: the snapshot comes in many pages while the writer runs.
    config.max_response_bytes = 16 << 10;
    let mut replica = Consumer::start(
        config,
        Arc::new(FileCheckpointStore::new(
            dir.path().join("replica.checkpoint"),
        )?),
        Recorder::new(),
    )?;
    let work = writer.await??;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    replica.ensure_running().await?;

    let rec = replica.recorder.clone();
    {
        let r = rec.lock();
        assert_eq!(r.bootstraps, vec![None], "one snapshot bootstrap");
        assert_eq!(r.bootstraps_ended.len(), 1, "the bootstrap ended");
        assert!(r.snapshot_rows > 300, "{} snapshot rows", r.snapshot_rows);
    }
    let report = check_windows(&rec.windows(), work.log(), StreamCheck::default())?;
    assert_eq!(report.last_seq, 1000, "{report:?}");
    // Write more: the replica follows the relay after the bootstrap.
    let mut work = work;
    work.run(&mut conn, 50).await?;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(60))
        .await?;
    let windows = rec.windows();
    let report = check_windows(&windows, work.log(), StreamCheck::default())?;
    assert_eq!(report.last_seq, 1050, "{report:?}");
    assert!(
        windows
            .iter()
            .rev()
            .take(50)
            .all(|w| w.phase == databus_client::Phase::Online),
        "the last windows come from the relay"
    );
    compare_tables(
        "shop.items",
        &source_rows(&mut conn, "shop.items", "id").await?,
        &rec.table(ITEMS),
        Columns::Exact,
    )?;
    compare_tables(
        "shop.txlog",
        &source_rows(&mut conn, "shop.txlog", "seq").await?,
        &rec.table(TXLOG),
        Columns::Exact,
    )?;
    replica.stop().await?;
    Ok(())
}
