//! Scenario 9: the bootstrap producer is SIGKILLed and stays down while the relay (a 1 MiB buffer)
//! evicts far past what it logged, and the source purges that binlog too: the log can no longer be
//! continued from anywhere. Restarted (the real binary, roles as separate processes, `[seed]` and
//! `[source]` configured), the producer re-seeds into a new store generation by itself while the
//! server keeps answering from the old one, then every role switches to the new generation: a
//! snapshot begun in the old generation is told to restart (`410 generation_changed`, never a mix of
//! two generations' rows), a replica whose checkpoint is older than the new snapshot comes back
//! through a full snapshot, and both end equal to the source row by row, deletes made during the
//! outage included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, FileCheckpointStore, StartPosition};
use databus_core::Checkpoint;
use databus_integration::faults::{enc, http_get, text};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;
use mysql_async::prelude::Queryable;

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    Ok(url.trim_start_matches("http://").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_continued_is_reseeded_into_a_new_generation() -> anyhow::Result<()> {
    let db = databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    db.exec(workload::SCHEMA).await?;
    let url = db.create_user_with_grants("repl", "repl-pw").await?;
    let spec = |server_id: u32, buffer: &str| RelaySpec {
        source: RelaySource::Database {
            url: url.clone(),
            server_id,
        },
        tables: workload::tables(),
        buffer_size: buffer.to_owned(),
    };
    let mut relay = Relay::start(spec(1001, "1MiB")).await?;
    let mut work = Workload::new(4, 200);
    let mut conn = db.root_conn().await?;
    work.run(&mut conn, 300).await?;
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            separate_roles: true,
            seed_url: Some(url.clone()),
            source: Some(spec(1002, "64MiB")),
            ..BootstrapOptions::default()
        },
    )
    .await?;
    let boot_addr = addr_of(&boot.url())?;
    let dir = tempfile::tempdir()?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    config.bootstrap_servers = vec![boot.url()];
    let checkpoints = dir.path().join("replica.checkpoint");
    let replica_rec = Recorder::new();
    let start_replica = |rec| -> anyhow::Result<Consumer> {
        Consumer::start(
            config.clone(),
            Arc::new(FileCheckpointStore::new(&checkpoints)?),
            rec,
        )
    };
    let mut replica = start_replica(replica_rec.clone())?;
    work.run(&mut conn, 100).await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(60)).await?;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(60))
        .await?;
    replica.stop().await?;
    assert_eq!(boot.status().await?["generation"], 0);

    // A snapshot consumer reads its first page from generation 0.
    let mut begin = Checkpoint::beginning();
    begin.start_bootstrap(None);
    let first = http_get(
        boot_addr,
        &format!(
            "/v1/bootstrap/stream?checkpoint={}&max_bytes=2000",
            enc(&begin.to_json())
        ),
    )?;
    assert_eq!(first.status, 200, "{}", text(&first.body));
    let mid_snapshot = first
        .header("x-databus-checkpoint")
        .expect("a checkpoint")
        .to_owned();
    assert!(
        mid_snapshot.contains("bootstrap_snapshot") && mid_snapshot.contains("snapshot_token"),
        "{mid_snapshot}"
    );

    // The producer crashes and stays down past the relay's buffer; rows are deleted meanwhile.
    boot.kill9(BootstrapRole::Producer)?;
    let logged = boot.status().await?["log_last_scn"].as_u64().unwrap_or(0);
    work.set_pad(1000);
    work.run(&mut conn, 1500).await?;
    conn.query_drop("DELETE FROM shop.items WHERE id % 5 = 0")
        .await?;
    work.set_pad(0);
    work.run(&mut conn, 20).await?;
    let scn = source_scn(&mut conn).await?;
    relay.wait_scn(scn, Duration::from_secs(60)).await?;
    let min = relay.status().await?["min_scn"].as_u64().unwrap_or(0);
    assert!(
        min > logged + 1,
        "the relay evicted what the producer needs next: min {min}, log at {logged}"
    );
    // ... and the source purges its binlog: the gap exists nowhere any more.
    conn.query_drop("FLUSH BINARY LOGS").await?;
    work.run(&mut conn, 5).await?;
    let scn = source_scn(&mut conn).await?;
    relay.wait_scn(scn, Duration::from_secs(60)).await?;
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let file: String = row.expect("binlog on").get(0).expect("file");
    db.purge_binary_logs_to(&file).await?;

    // Restarted: no manual step. It re-seeds generation 1 and switches every role to it.
    boot.restart(BootstrapRole::Producer).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        boot.ensure_running()
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", boot.log_tails()))?;
        let st = boot.status().await?;
        if st["generation"] == 1 {
            break st;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the bootstrap server never served generation 1: {st}\n{}",
            boot.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["seeded"], true, "{status}");
    let producer_log = boot
        .role(BootstrapRole::Producer)
        .expect("separate roles")
        .log();
    assert!(
        producer_log.contains("re-seeding into a new generation"),
        "{producer_log}"
    );
    work.run(&mut conn, 30).await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(120)).await?;
    let st = boot.status().await?;
    let (floor, last) = (
        st["log_floor_scn"].as_u64().unwrap(),
        st["log_last_scn"].as_u64().unwrap(),
    );
    assert_eq!(
        st["log_windows"].as_u64(),
        Some(last - floor),
        "the new generation's log has one window per transaction after its seed: {st}"
    );
    assert!(
        floor > logged,
        "the new generation starts after the purged gap: {st}"
    );
    assert_eq!(st["health"]["status"], "ok", "{st}");

    // The snapshot begun in generation 0 cannot continue in generation 1.
    let again = http_get(
        boot_addr,
        &format!(
            "/v1/bootstrap/stream?checkpoint={}&max_bytes=2000",
            enc(&mid_snapshot)
        ),
    )?;
    assert_eq!(again.status, 410, "{}", text(&again.body));
    assert_eq!(again.header("x-databus-error"), Some("generation_changed"));

    // The replica's checkpoint is older than anything kept: it comes back through a full snapshot.
    let mut replica = start_replica(replica_rec.clone())?;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    replica.ensure_running().await?;
    assert!(
        replica_rec.lock().bootstraps.contains(&None),
        "the replica took a full snapshot: {:?}",
        replica_rec.lock().bootstraps
    );
    let mut snap_config = config.clone();
    snap_config.start = StartPosition::Snapshot;
    let mut snapshot = Consumer::start(
        snap_config,
        Arc::new(FileCheckpointStore::new(
            dir.path().join("snapshot.checkpoint"),
        )?),
        Recorder::new(),
    )?;
    snapshot
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    for (what, rec) in [
        ("replica", &replica_rec),
        ("snapshot consumer", &snapshot.recorder),
    ] {
        for (table, source, key) in [("shop.items", ITEMS, "id"), ("shop.txlog", TXLOG, "seq")] {
            compare_tables(
                &format!("{what}: {table}"),
                &source_rows(&mut conn, table, key).await?,
                &rec.table(source),
                Columns::Exact,
            )?;
        }
    }
    eprintln!(
        "generation 1 at {st}; replica bootstraps {:?}",
        replica_rec.lock().bootstraps
    );
    replica.stop().await?;
    snapshot.stop().await?;
    Ok(())
}
