//! Scenario 8: change-stream fidelity. A seeded random workload ([`fidelity::FidelityWorkload`]: key
//! changes on single and composite keys, TRUNCATE, ALTER ADD/DROP/MODIFY COLUMN, DROP + CREATE,
//! rollbacks, savepoints, multi-table transactions, NULLs and several column types) runs against a
//! relay and a bootstrap server. Three consumers end equal to the source, row by row: one following the
//! relay from the start (4 workers), one starting from a bootstrap snapshot taken mid-run, and a group
//! of 4 MOD-partitioned consumers whose union is compared; and a fourth, stopped mid-run while the
//! relay's 1 MiB buffer moves past its checkpoint, that comes back through a consolidated delta
//! (`log_only_max_events` is tiny, so the delta is served from the snapshot store: tombstones, truncate
//! markers, then catch-up).
//!
//! `DATABUS_FIDELITY_SEED=<n>` picks the seed (default 14), `DATABUS_FIDELITY_STEPS=<n>` the number of
//! workload steps (default 400).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, PartitionMember, StartPosition};
use databus_integration::fidelity::{self, FidelityWorkload};
use databus_integration::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_rebuild_the_source_through_key_changes_truncates_and_ddl() -> anyhow::Result<()>
{
    let seed = env_or("DATABUS_FIDELITY_SEED", 14);
    let steps = env_or("DATABUS_FIDELITY_STEPS", 400) as usize;
    let db = databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    db.exec(fidelity::SCHEMA).await?;
    let url = db.create_user_with_grants("repl", "repl-pw").await?;
    let relay = Relay::start(RelaySpec {
        source: RelaySource::Database {
            url,
            server_id: 1001,
        },
        tables: fidelity::tables(),
        buffer_size: "1MiB".into(),
    })
    .await?;
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            log_only_max_events: 5,
            ..BootstrapOptions::default()
        },
    )
    .await?;
    // Every consumer may fall off the small relay buffer: each has the bootstrap server.
    let client = |relay: &Relay, boot: &BootstrapServer| {
        let mut config = ClientConfig::with_relays([relay.url()]);
        config.bootstrap_servers = vec![boot.url()];
        config
    };

    let mut follower_config = client(&relay, &boot);
    follower_config.workers = 4;
    let mut consumers = vec![Consumer::start(
        follower_config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?];
    for instance in 0..4 {
        let mut config = client(&relay, &boot);
        config.partition = Some(PartitionMember { instance, of: 4 });
        consumers.push(Consumer::start(
            config,
            Arc::new(MemoryCheckpointStore::new()),
            Recorder::new(),
        )?);
    }

    // The one that stops mid-run and comes back through a consolidated delta.
    let delta_store: Arc<MemoryCheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let delta_recorder = Recorder::new();
    let delta = Consumer::start(
        client(&relay, &boot),
        delta_store.clone(),
        delta_recorder.clone(),
    )?;

    let mut work = FidelityWorkload::new(seed);
    let mut conn = db.root_conn().await?;
    work.run(&mut conn, steps / 4).await?;
    let quarter = source_scn(&mut conn).await?;
    let mut delta = delta;
    delta.wait_scn(quarter, Duration::from_secs(120)).await?;
    delta.stop().await?;
    let truncates_before_stop = delta_recorder.lock().truncates.len();
    work.run(&mut conn, steps / 2 - steps / 4).await?;
    // A new consumer from a snapshot taken mid-run, while the second half is written.
    let mid = source_scn(&mut conn).await?;
    boot.wait_applied(mid, Duration::from_secs(120)).await?;
    let mut config = client(&relay, &boot);
    config.start = StartPosition::Snapshot;
    config.max_response_bytes = 4 << 10;
    consumers.push(Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?);
    work.run(&mut conn, steps - steps / 2).await?;
    // 2.4 MB through the 1 MiB relay buffer: the stopped consumer's checkpoint is long gone from it.
    // (The bootstrap server must keep up, or its producer would fall off the relay too.)
    for id in 1..=24 {
        fidelity::pad(&mut conn, id, 1).await?;
        let scn = source_scn(&mut conn).await?;
        boot.wait_applied(scn, Duration::from_secs(60)).await?;
    }
    let end = source_scn(&mut conn).await?;
    boot.wait_applied(end, Duration::from_secs(120)).await?;
    consumers.push(Consumer::start(
        client(&relay, &boot),
        delta_store,
        delta_recorder.clone(),
    )?);
    for c in &mut consumers {
        c.wait_scn(end, Duration::from_secs(180)).await?;
        c.ensure_running().await?;
    }

    let stats = work.stats();
    eprintln!("seed {seed}, {steps} steps: {stats:?}");
    if steps >= 400 {
        assert!(
            stats.key_changes > 0
                && stats.composite_key_changes > 0
                && stats.truncates > 0
                && stats.alters > 0
                && stats.drop_creates > 0
                && stats.rollbacks > 0
                && stats.savepoints > 0
                && stats.multi_table > 0,
            "the workload made every kind of change: {stats:?}"
        );
    }
    let (follower, group, snapshot, delta) = (
        &consumers[0],
        &consumers[1..5],
        &consumers[5],
        &consumers[6],
    );
    {
        let r = snapshot.recorder.lock();
        assert_eq!(r.bootstraps.first(), Some(&None), "a snapshot bootstrap");
        assert!(r.snapshot_rows > 0);
    }
    {
        let r = delta.recorder.lock();
        assert!(
            r.bootstraps.iter().any(Option::is_some),
            "the stopped consumer came back through a delta: {:?}",
            r.bootstraps
        );
        assert!(
            r.snapshot_rows > 0,
            "served from the snapshot store (not log-only)"
        );
        eprintln!(
            "delta consumer: bootstraps {:?}, {} snapshot rows, truncates {} before its stop and {} after",
            r.bootstraps,
            r.snapshot_rows,
            truncates_before_stop,
            r.truncates.len() - truncates_before_stop
        );
    }
    assert!(
        !follower.recorder.lock().truncates.is_empty(),
        "truncates reached the follower"
    );
    for (source, table, keys) in fidelity::TABLES {
        let want = source_rows_keyed(&mut conn, table, keys).await?;
        compare_tables(
            &format!("{table} (relay follower)"),
            &want,
            &fidelity::replica_table(&follower.recorder, source, keys)?,
            Columns::Evolved,
        )?;
        compare_tables(
            &format!("{table} (snapshot mid-run)"),
            &want,
            &fidelity::replica_table(&snapshot.recorder, source, keys)?,
            Columns::Evolved,
        )?;
        compare_tables(
            &format!("{table} (back through a consolidated delta)"),
            &want,
            &fidelity::replica_table(&delta.recorder, source, keys)?,
            Columns::Evolved,
        )?;
        let mut union = BTreeMap::new();
        for (i, member) in group.iter().enumerate() {
            for (key, row) in fidelity::replica_table(&member.recorder, source, keys)? {
                if let Some(other) = union.insert(key.clone(), row) {
                    anyhow::bail!("{table}: key {key} held by member {i} and another ({other:?})");
                }
            }
        }
        compare_tables(
            &format!("{table} (union of mod:4 members)"),
            &want,
            &union,
            Columns::Evolved,
        )?;
    }
    for c in consumers {
        c.stop().await?;
    }
    Ok(())
}
