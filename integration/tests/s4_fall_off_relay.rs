//! Scenario 4: a consumer stopped long enough to fall off the relay (a 1 MiB buffer) comes back through
//! the bootstrap server's consolidated delta (rows changed since its checkpoint, then catch-up), then
//! follows the relay again; it ends identical to the source. The same through the bootstrap server's
//! log alone (the delta path for a small gap): every missed window, whole and in order.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, FileCheckpointStore, StartPosition};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_consumer_returns_through_the_consolidated_delta() -> anyhow::Result<()> {
    // Small deltas are served from the bootstrap log alone: make every delta consolidated.
    fall_off_and_return(10, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_consumer_returns_through_the_bootstrap_log() -> anyhow::Result<()> {
    // The default threshold: this delta is replayed from the bootstrap server's log (catch-up only).
    fall_off_and_return(100_000, false).await
}

async fn fall_off_and_return(log_only_max_events: u64, consolidated: bool) -> anyhow::Result<()> {
    let (db, mut relay) = start_pipeline("1MiB").await?;
    // A bootstrap server copying the relay from its start.
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            log_only_max_events,
            ..BootstrapOptions::default()
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let checkpoints = dir.path().join("consumer.checkpoint");
    let mut config = ClientConfig::with_relays([relay.url()]);
    config.bootstrap_servers = vec![boot.url()];
    // From what the relay captured (it started after the schema's DDL): the one bootstrap this test
    // counts is the return after falling off.
    config.start = StartPosition::Oldest;
    let recorder = Recorder::new();
    let consumer = |recorder: Arc<Recorder>| -> anyhow::Result<Consumer> {
        Consumer::start(
            config.clone(),
            Arc::new(FileCheckpointStore::new(&checkpoints)?),
            recorder,
        )
    };
    let mut c = consumer(recorder.clone())?;
    let mut work = Workload::new(4, 200);
    let mut conn = db.root_conn().await?;
    work.run(&mut conn, 300).await?;
    c.wait_seq(300, Duration::from_secs(60)).await?;
    c.stop().await?;
    let stopped_at = recorder.lock().last_scn;
    let before = recorder.windows().len();
    check_windows(
        &recorder.windows(),
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            ..StreamCheck::default()
        },
    )?;

    // While it is stopped, write well over a buffer's worth (rows padded to ~1 KiB).
    work.set_pad(1000);
    work.run(&mut conn, 1500).await?;
    let scn = source_scn(&mut conn).await?;
    relay.wait_scn(scn, Duration::from_secs(60)).await?;
    let min = relay.status().await?["min_scn"].as_u64().unwrap_or(0);
    assert!(
        min > stopped_at + 1,
        "the relay evicted the consumer's position: min {min}, consumer at {stopped_at}"
    );
    boot.wait_applied(scn, Duration::from_secs(60)).await?;

    // Back: every relay answers scn_not_found, the client bootstraps with a delta since its checkpoint.
    let mut c = consumer(recorder.clone())?;
    c.wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    // And follows the relay afterwards.
    work.set_pad(0);
    work.run(&mut conn, 50).await?;
    c.wait_seq(work.last_seq(), Duration::from_secs(60)).await?;
    c.ensure_running().await?;
    {
        let r = recorder.lock();
        assert_eq!(r.bootstraps.len(), 1, "{:?}", r.bootstraps);
        let since = r.bootstraps[0].expect("a delta, not a snapshot").get();
        assert_eq!(
            since, stopped_at,
            "the delta starts at the consumer's checkpoint"
        );
        if consolidated {
            assert!(r.snapshot_rows > 0, "delta rows arrived");
        } else {
            assert_eq!(r.snapshot_rows, 0, "log-only: windows, no rows");
        }
    }
    let after: Vec<ObservedWindow> = recorder.windows().split_off(before);
    // From the log alone, every window after the checkpoint comes back: no gap at all.
    let first_seq = (!consolidated).then_some(301);
    let report = check_windows(
        &after,
        work.log(),
        StreamCheck {
            first_seq,
            ..StreamCheck::default()
        },
    )?;
    assert_eq!(report.last_seq, work.last_seq(), "{report:?}");
    compare_tables(
        "shop.items",
        &source_rows(&mut conn, "shop.items", "id").await?,
        &recorder.table(ITEMS),
        Columns::Exact,
    )?;
    compare_tables(
        "shop.txlog",
        &source_rows(&mut conn, "shop.txlog", "seq").await?,
        &recorder.table(TXLOG),
        Columns::Exact,
    )?;
    c.stop().await?;
    Ok(())
}
