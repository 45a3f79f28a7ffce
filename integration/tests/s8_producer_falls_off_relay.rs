//! Scenario 8: the bootstrap producer is SIGKILLed and stays down while the relay (a 1 MiB buffer)
//! evicts far past what it logged, under a write load. Restarted (the real binary, roles as separate
//! processes, `[source]` configured), it fills the gap from the source's binlog and follows the relay
//! again, with no manual step: the bootstrap log has every window, a replica that fell off the relay
//! meanwhile comes back through the bootstrap server, and a new snapshot consumer ends equal to the
//! source row by row.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, FileCheckpointStore, StartPosition};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_down_past_the_relay_buffer_repairs_the_log_by_itself() -> anyhow::Result<()> {
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
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            separate_roles: true,
            source: Some(spec(1002, "64MiB")),
            ..BootstrapOptions::default()
        },
    )
    .await?;
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
    let mut work = Workload::new(4, 200);
    let mut conn = db.root_conn().await?;
    work.run(&mut conn, 300).await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(60)).await?;

    // The producer crashes; the replica goes on from the relay for a while, then stops too.
    boot.kill9(BootstrapRole::Producer)?;
    let logged = boot.status().await?["log_last_scn"].as_u64().unwrap_or(0);
    work.run(&mut conn, 200).await?;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(60))
        .await?;
    replica.stop().await?;
    // Well over a buffer's worth while both are away (rows padded to ~1 KiB).
    work.set_pad(1000);
    work.run(&mut conn, 1500).await?;
    let scn = source_scn(&mut conn).await?;
    relay.wait_scn(scn, Duration::from_secs(60)).await?;
    let min = relay.status().await?["min_scn"].as_u64().unwrap_or(0);
    assert!(
        min > logged + 1,
        "the relay evicted what the producer needs next: min {min}, log at {logged}"
    );

    // Restarted: no manual step. The log fills from the source, then follows the relay.
    boot.restart(BootstrapRole::Producer).await?;
    boot.wait_applied(scn, Duration::from_secs(120)).await?;
    let st = boot.status().await?;
    let (floor, last) = (
        st["log_floor_scn"].as_u64().unwrap(),
        st["log_last_scn"].as_u64().unwrap(),
    );
    assert_eq!(
        st["log_windows"].as_u64(),
        Some(last - floor),
        "one window per transaction, none missing: {st}"
    );
    assert_eq!(st["health"]["status"], "ok", "{st}");

    // The replica fell off the relay: it comes back through the bootstrap server.
    let mut replica = start_replica(replica_rec.clone())?;
    work.set_pad(0);
    work.run(&mut conn, 50).await?;
    replica
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    replica.ensure_running().await?;
    assert!(
        !replica_rec.lock().bootstraps.is_empty(),
        "the replica needed the bootstrap server"
    );
    // A new consumer from a snapshot.
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
    replica.stop().await?;
    snapshot.stop().await?;
    Ok(())
}
