//! Scenario 6: two chained relays (relay 2 follows relay 1's buffer). A consumer reads relay 2 and, when
//! relay 2 is killed (SIGKILL) in the middle of a write workload, fails over to relay 1 with the same
//! checkpoint: no window lost, repeated or reordered, and the replica ends identical to the source.
//! Then relay 2 comes back, relay 1 is killed, and the consumer fails over back to relay 2. It runs on
//! MariaDB and on PostgreSQL (relay 1 then reads a replication slot; [`SourceKind`]).

use std::sync::Arc;
use std::time::Duration;

use databus_client::{BackoffConfig, ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::http::get;
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

/// `databus_relay_stream_requests_total` of a relay (sum over formats).
async fn stream_requests(relay: &Relay) -> anyhow::Result<u64> {
    let (_, body) = get(&relay.url(), "/metrics", Duration::from_secs(5)).await?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("databus_relay_stream_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_fails_over_between_chained_relays() -> anyhow::Result<()> {
    chained_relays(SourceKind::MariaDb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_fails_over_between_relays_chained_from_postgres() -> anyhow::Result<()> {
    chained_relays(SourceKind::Postgres).await
}

async fn chained_relays(kind: SourceKind) -> anyhow::Result<()> {
    let (db, mut relay1) = start_pipeline_on(kind, "8MiB").await?;
    let mut relay2 = Relay::start(RelaySpec {
        source: RelaySource::Upstream { url: relay1.url() },
        tables: workload::tables(),
        buffer_size: "8MiB".into(),
    })
    .await?;
    let mut config = ClientConfig::with_relays([relay2.url(), relay1.url()]);
    // From what the relay captured: it started at the source's position, after the schema's DDL.
    config.start = StartPosition::Oldest;
    config.long_poll = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    config.fetch_backoff = BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
    };
    let mut consumer = Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;
    let mut writer = Some(db.spawn_workload(Workload::new(6, 150), 1500, Duration::from_millis(1)));

    // Reading relay 2 (the first in the list) ...
    consumer.wait_seq(200, Duration::from_secs(60)).await?;
    let served_by_2 = stream_requests(&relay2).await?;
    assert!(served_by_2 > 0, "the consumer reads relay 2 first");
    // ... which dies mid-stream: the consumer goes on with relay 1.
    relay2.kill9();
    let at_kill = consumer.recorder.lock().last_seq;
    consumer
        .wait_seq((at_kill + 300).min(1500), Duration::from_secs(60))
        .await?;
    // (Relay 2 is dead: only relay 1 can have served those 300 transactions.)
    assert!(
        !consumer.recorder.lock().errors.is_empty(),
        "the failed requests to relay 2 were reported"
    );

    // Relay 2 comes back (it resumes after its persisted SCN, or from relay 1's oldest window);
    // relay 1 dies after relay 2 caught up: the consumer fails over back to relay 2.
    relay2.restart().await?;
    let work = writer.take().expect("the writer").await??;
    // The SCN of the last transaction: the last window the consumer got (from either relay).
    consumer
        .wait_seq(work.last_seq(), Duration::from_secs(60))
        .await?;
    let scn = consumer.recorder.lock().last_scn;
    relay2.wait_scn(scn, Duration::from_secs(60)).await?;
    relay1.kill9();
    let mut work = work;
    // New writes reach no relay while relay 1 is down; restart it (it resumes from its state) so
    // relay 2 can copy them.
    let mut conn = db.writer().await?;
    work.run(&mut conn, 100).await?;
    relay1.restart().await?;
    consumer
        .wait_seq(work.last_seq(), Duration::from_secs(60))
        .await?;
    consumer.ensure_running().await?;
    // Only the consumer reads relay 2: its restarted process served it.
    assert!(
        stream_requests(&relay2).await? > 0,
        "the consumer failed over back to relay 2"
    );

    let report = check_windows(
        &consumer.recorder.windows(),
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            ..StreamCheck::default()
        },
    )?;
    assert_eq!(report.last_seq, 1600, "{report:?}");
    compare_tables(
        "shop.items",
        &db.rows("shop.items", "id").await?,
        &consumer.recorder.table(ITEMS),
        Columns::Exact,
    )?;
    compare_tables(
        "shop.txlog",
        &db.rows("shop.txlog", "seq").await?,
        &consumer.recorder.table(TXLOG),
        Columns::Exact,
    )?;
    consumer.stop().await?;
    Ok(())
}
