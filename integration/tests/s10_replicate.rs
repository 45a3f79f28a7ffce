//! Scenario 10: `databus replicate` keeps a typed replica in a second MariaDB. The change-fidelity
//! workload (key changes on single and composite keys, TRUNCATE, ALTER ADD/DROP/MODIFY COLUMN, DROP +
//! CREATE, rollbacks, multi-table transactions, NULLs, DECIMAL/DATE/DATETIME/TIME/ENUM/SET/DOUBLE)
//! runs against the source while the real `databus replicate` process, started from a bootstrap
//! snapshot, is killed with SIGKILL at seeded moments and restarted. At the end (`--once` run to
//! completion), `CHECKSUM TABLE` of every replicated table is equal on source and target, and so are
//! the column definitions.
//!
//! `DATABUS_REPLICATE_SEED=<n>` picks the seed (default 10), `DATABUS_REPLICATE_STEPS=<n>` the
//! workload steps (default 300).

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, bail};
use databus_integration::faults::SeededRng;
use databus_integration::fidelity::{self, FidelityWorkload};
use databus_integration::*;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const TARGET_PASSWORD_ENV: &str = "DATABUS_E2E_TARGET_PASSWORD";

async fn checksum(conn: &mut Conn, table: &str) -> anyhow::Result<Option<u64>> {
    let row: Option<(String, Option<u64>)> = conn
        .query_first(format!("CHECKSUM TABLE {table} EXTENDED"))
        .await
        .with_context(|| format!("CHECKSUM TABLE {table}"))?;
    Ok(row.and_then(|(_, sum)| sum))
}

async fn columns(conn: &mut Conn, table: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let (db, name) = table.split_once('.').context("database.table")?;
    Ok(conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, name),
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_survives_sigkill_and_ends_with_equal_checksums() -> anyhow::Result<()> {
    let seed = env_or("DATABUS_REPLICATE_SEED", 10);
    let steps = env_or("DATABUS_REPLICATE_STEPS", 300) as usize;
    let source =
        databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    source.exec(fidelity::SCHEMA).await?;
    let url = source.create_user_with_grants("repl", "repl-pw").await?;
    let target =
        databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    target
        .create_user("replica", "replica-pw", "ALL PRIVILEGES")
        .await?;
    let mut relay = Relay::start(RelaySpec {
        source: RelaySource::Database {
            url,
            server_id: 1001,
        },
        tables: fidelity::tables(),
        buffer_size: "8MiB".into(),
    })
    .await?;
    let mut boot = BootstrapServer::start(&relay.url(), None).await?;

    let mut work = FidelityWorkload::new(seed);
    let mut conn = source.root_conn().await?;
    // Rows before the replica starts: it begins with a snapshot of them.
    work.run(&mut conn, steps / 4).await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(120)).await?;

    let dir = tempfile::tempdir()?;
    let (relay_url, boot_url) = (relay.url(), boot.url());
    let args = |once: bool| -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "replicate".into(),
            "--relay".into(),
            relay_url.clone().into(),
            "--bootstrap".into(),
            boot_url.clone().into(),
            "--to".into(),
            format!("mysql://replica@127.0.0.1:{}/", target.port()).into(),
            "--password-env".into(),
            TARGET_PASSWORD_ENV.into(),
            "--progress-every".into(),
            "1s".into(),
        ];
        if once {
            args.push("--once".into());
        }
        args
    };
    let envs = vec![
        (TARGET_PASSWORD_ENV.to_owned(), "replica-pw".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ];
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        args(false),
        envs.clone(),
        dir.path(),
    )?;

    // The rest of the workload in chunks; after each, the replicator is killed at a seeded moment
    // (while it applies what the chunk wrote) and started again.
    let mut rng = SeededRng::new(seed);
    let mut done = steps / 4;
    let mut kills = 0;
    while done < steps {
        let chunk = (rng.range(10, 40) as usize).min(steps - done);
        work.run(&mut conn, chunk).await?;
        done += chunk;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 800))).await;
        replicator.ensure_running()?;
        replicator.kill9();
        kills += 1;
        replicator.respawn()?;
    }
    // The replica follows a schema change with the first row written in it (the stream carries the
    // new columns only with rows): one row in each table after the workload's last DDL.
    conn.query_drop("INSERT INTO fid.single (id) VALUES (1000000)")
        .await?;
    conn.query_drop("INSERT INTO fid.composite (a, b) VALUES (1000000, 'end')")
        .await?;
    let end = source_scn(&mut conn).await?;
    relay.wait_scn(end, Duration::from_secs(60)).await?;
    replicator.ensure_running()?;
    replicator.kill9();
    kills += 1;

    // The last run catches up and exits (--once).
    let mut last = Proc::spawn(
        "replicate-once",
        databus_bin()?,
        args(true),
        envs,
        dir.path(),
    )?;
    let status = wait_for("replicate --once to exit", Duration::from_secs(180), || {
        let status = last.exited();
        async move { Ok(status) }
    })
    .await
    .with_context(|| format!("replicate log:\n{}", last.log_tail()))?;
    if !status.success() {
        bail!(
            "replicate --once failed ({status}):\n{}\nearlier runs:\n{}",
            last.log_tail(),
            replicator.log_tail()
        );
    }

    let stats = work.stats();
    eprintln!("seed {seed}, {steps} steps, {kills} kills: {stats:?}");
    assert!(kills >= 3, "the replicator was killed several times");
    if steps >= 300 {
        assert!(
            stats.key_changes > 0
                && stats.composite_key_changes > 0
                && stats.truncates > 0
                && stats.alters > 0
                && stats.drop_creates > 0,
            "the workload made every kind of change: {stats:?}"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("replicate.log"))?;
    assert!(
        log.contains("full snapshot"),
        "the new replica started from a snapshot:\n{log}"
    );
    assert!(log.contains("resuming from the target's checkpoint"));
    let mut replica = target.root_conn().await?;
    for (_, table, _) in fidelity::TABLES {
        let (want, got) = (
            columns(&mut conn, table).await?,
            columns(&mut replica, table).await?,
        );
        assert_eq!(got, want, "{table}: the replica's columns");
        let (want, got) = (
            checksum(&mut conn, table).await?,
            checksum(&mut replica, table).await?,
        );
        assert!(want.is_some(), "{table} exists at the source");
        assert_eq!(got, want, "{table}: CHECKSUM TABLE of replica and source");
        eprintln!("{table}: checksum {want:?} on both");
    }
    let checkpoint: Option<u64> = replica
        .query_first("SELECT scn FROM databus.databus_replica_checkpoint WHERE replica = 'replica'")
        .await?;
    assert_eq!(checkpoint, Some(end), "the checkpoint is the last window's");
    Ok(())
}
