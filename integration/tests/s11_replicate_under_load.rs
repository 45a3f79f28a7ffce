//! Scenario 11: `databus replicate` MariaDB → MariaDB under a real sysbench write load, with SIGKILLs
//! of the replicator, the relay and each bootstrap role (producer, applier, server) at seeded
//! moments, ends with `CHECKSUM TABLE` equal on every sysbench table.
//!
//! - The source is prepared by `sysbench oltp_write_only prepare` ([`TABLES`] tables of
//!   [`TABLE_SIZE`] rows); the relay and a bootstrap server (separate producer, applier and server
//!   processes, seeded from the source, with a `[source]` to fill relay gaps from) start after it,
//!   so the prepared rows reach the replica only through the bootstrap snapshot.
//! - `sysbench oltp_write_only run` (2 threads: per transaction an indexed UPDATE, a non-indexed
//!   UPDATE, a DELETE and an INSERT of the same id, as sysbench issues them) writes while the fault
//!   schedule runs. The replicator is started NEW at a seeded moment of the load: it begins with a
//!   full bootstrap snapshot of rows that are changing meanwhile.
//! - The schedule is seeded ([`SeededRng`]): rounds of a shuffled list of victims (the replicator
//!   twice, the relay, the bootstrap producer, applier and server), each SIGKILLed after a seeded
//!   delay and restarted after a seeded down time. Every victim is killed at least once.
//! - Then sysbench is stopped (SIGKILL by pid: an open transaction rolls back at the source), the
//!   replicator is checked to have survived every other process's crash on its own (it was never
//!   restarted except after its own kills), killed once more, and a `--once` run catches up and exits.
//!   `CHECKSUM TABLE … EXTENDED` and the column definitions of every table are equal on source and
//!   replica, and the replica's checkpoint is the source's last transaction.
//!
//! Seeds: `DATABUS_FAULT_SEEDS` (`3`, `1,5,9`, `1..50`); default 1 in the suite. The soak
//! (`#[ignore]`d) runs seeds 1..=10 with a longer schedule:
//!
//! ```sh
//! cargo build -p databus-cli
//! DATABUS_FAULT_SEEDS=1..10 cargo test -p databus-integration --test it \
//!     s11_replicate_under_load::soak -- --ignored --nocapture
//! ```
//!
//! sysbench is Debian's package (`scripts/setup.sh` installs it).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use databus_integration::faults::{SeededRng, fault_seeds, kill_pid};
use databus_integration::*;
use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// sysbench tables (`sbtest.sbtest1` …).
const TABLES: usize = 4;
/// Rows of each table after `prepare`.
const TABLE_SIZE: usize = 500;
const TARGET_PASSWORD_ENV: &str = "DATABUS_E2E_TARGET_PASSWORD";

fn table_names() -> Vec<String> {
    (1..=TABLES).map(|i| format!("sbtest.sbtest{i}")).collect()
}

/// `sysbench oltp_write_only <command>` against `db` (root over TCP, database `sbtest`).
fn sysbench(db: &MariaDb, seed: u64, command: &str) -> Command {
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_write_only")
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={}", db.port()))
        .arg("--mysql-user=root")
        .arg("--mysql-password=")
        .arg("--mysql-db=sbtest")
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_SIZE}"))
        .arg(format!("--rand-seed={seed}"))
        .arg("--threads=2")
        // Runs until stopped (the schedule decides how long the load lasts).
        .arg("--time=0")
        .arg("--events=0")
        .arg("--report-interval=0")
        .arg(command)
        .stdin(Stdio::null());
    cmd
}

async fn checksum(conn: &mut Conn, table: &str) -> anyhow::Result<Option<u64>> {
    let row: Option<(String, Option<u64>)> = conn
        .query_first(format!("CHECKSUM TABLE {table} EXTENDED"))
        .await
        .with_context(|| format!("CHECKSUM TABLE {table}"))?;
    Ok(row.and_then(|(_, sum)| sum))
}

/// Row count and an order-independent digest of the rows' values (independent of column types, so
/// a difference of values is told apart from a difference of storage).
async fn content(conn: &mut Conn, table: &str) -> anyhow::Result<(u64, String)> {
    let row: Option<(u64, Option<String>)> = conn
        .query_first(format!(
            "SELECT COUNT(*), CAST(SUM(CRC32(CONCAT_WS('#', id, k, c, pad))) AS CHAR) FROM {table}"
        ))
        .await?;
    let (n, sum) = row.context("a count")?;
    Ok((n, sum.unwrap_or_default()))
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

/// What the schedule kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    Replicator,
    Relay,
    Bootstrap(BootstrapRole),
}

const VICTIMS: [Victim; 6] = [
    Victim::Replicator,
    Victim::Replicator,
    Victim::Relay,
    Victim::Bootstrap(BootstrapRole::Producer),
    Victim::Bootstrap(BootstrapRole::Applier),
    Victim::Bootstrap(BootstrapRole::Server),
];

/// The running sysbench load; killed by pid when dropped.
struct Load {
    child: Option<Child>,
    out: std::path::PathBuf,
}

impl Load {
    fn start(db: &MariaDb, seed: u64, dir: &Path) -> anyhow::Result<Load> {
        let out = dir.join("sysbench.out");
        let file = std::fs::File::create(&out)?;
        let child = sysbench(db, seed, "run")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawn sysbench (install it with scripts/setup.sh)")?;
        Ok(Load {
            child: Some(child),
            out,
        })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Fails if sysbench stopped by itself (an error of the load, not of the replica).
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("sysbench exited by itself ({status}):\n{}", self.output());
        }
        Ok(())
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.ensure_running()?;
        if let Some(mut child) = self.child.take() {
            kill_pid(child.id(), "KILL");
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_pid(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

/// Shuffles `items` with the seeded generator (Fisher–Yates).
fn shuffle<T>(rng: &mut SeededRng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// One seed: the whole scenario. `rounds` rounds of the shuffled victim list.
async fn run_seed(seed: u64, rounds: usize) -> anyhow::Result<()> {
    let mut rng = SeededRng::new(seed);
    let source = MariaDb::start(MariaDbOptions::default()).await?;
    source
        .exec(&["CREATE DATABASE sbtest CHARACTER SET utf8mb4"])
        .await?;
    let out = sysbench(&source, seed, "prepare")
        .output()
        .context("run sysbench prepare (install sysbench with scripts/setup.sh)")?;
    ensure!(
        out.status.success(),
        "sysbench prepare failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let url = source.create_user_with_grants("repl", "repl-pw").await?;
    let target = MariaDb::start(MariaDbOptions::default()).await?;
    target
        .create_user("replica", "replica-pw", "ALL PRIVILEGES")
        .await?;
    let tables: Vec<TableSpec> = table_names()
        .into_iter()
        .enumerate()
        .map(|(i, table)| TableSpec {
            id: 40 + i as u16,
            name: format!("sb{}", i + 1),
            table,
        })
        .collect();
    let spec = |server_id: u32, buffer: &str| RelaySpec {
        source: RelaySource::Database {
            url: url.clone(),
            server_id,
        },
        tables: tables.clone(),
        buffer_size: buffer.to_owned(),
    };
    let mut relay = Relay::start(spec(1001, "8MiB")).await?;
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            separate_roles: true,
            seed_url: Some(url.clone()),
            source: Some(spec(1002, "8MiB")),
            ..BootstrapOptions::default()
        },
    )
    .await?;

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

    let mut load = Load::start(&source, seed, dir.path())?;
    // The replica is new in the middle of the load: it starts from a snapshot of changing rows.
    sleep_ms(rng.range(500, 3000)).await;
    load.ensure_running()?;
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        args(false),
        envs.clone(),
        dir.path(),
    )?;

    let mut killed = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..rounds {
        let mut victims = VICTIMS;
        shuffle(&mut rng, &mut victims);
        for victim in victims {
            sleep_ms(rng.range(200, 2000)).await;
            load.ensure_running()?;
            // Every process runs by itself until it is killed: nothing but the schedule restarts
            // them, so a process that gave up on a crashed neighbour fails here.
            replicator
                .ensure_running()
                .context("the replicator stopped by itself")?;
            relay.proc().ensure_running()?;
            boot.ensure_running()?;
            let down = rng.range(0, 1500);
            match victim {
                Victim::Replicator => {
                    replicator.kill9();
                    sleep_ms(down).await;
                    replicator.respawn()?;
                }
                Victim::Relay => {
                    relay.kill9();
                    sleep_ms(down).await;
                    relay.restart().await?;
                }
                Victim::Bootstrap(role) => {
                    boot.kill9(role)?;
                    sleep_ms(down).await;
                    boot.restart(role).await?;
                }
            }
            *killed.entry(format!("{victim:?}")).or_default() += 1;
        }
    }
    // A last stretch of load with nothing down.
    sleep_ms(rng.range(200, 1500)).await;
    load.stop()?;
    let mut conn = source.root_conn().await?;
    // A COMMIT the server had received when sysbench died still completes: the last SCN is read
    // once sysbench's sessions are gone.
    wait_for(
        "sysbench's sessions to end at the source",
        Duration::from_secs(60),
        || {
            let source = &source;
            async move {
                let left: Option<u64> = source
                    .root_conn()
                    .await?
                    .query_first(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                         WHERE DB = 'sbtest' AND ID <> CONNECTION_ID()",
                    )
                    .await?;
                Ok((left == Some(0)).then_some(()))
            }
        },
    )
    .await?;
    let end = source_scn(&mut conn).await?;
    relay.wait_scn(end, Duration::from_secs(120)).await?;
    replicator
        .ensure_running()
        .context("the replicator stopped by itself")?;
    boot.ensure_running()?;
    replicator.kill9();

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

    let log = std::fs::read_to_string(dir.path().join("replicate.log"))?;
    assert!(
        log.contains("full snapshot"),
        "the new replica started from a snapshot:\n{log}"
    );
    assert!(log.contains("resuming from the target's checkpoint"));
    for victim in VICTIMS {
        assert!(
            killed.contains_key(&format!("{victim:?}")),
            "seed {seed}: {victim:?} was killed: {killed:?}"
        );
    }
    let transactions: u64 = conn
        .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'COM_COMMIT'")
        .await?
        .map(|v: String| v.parse().unwrap_or(0))
        .unwrap_or(0);
    let mut replica = target.root_conn().await?;
    for table in table_names() {
        let (want, got) = (
            columns(&mut conn, &table).await?,
            columns(&mut replica, &table).await?,
        );
        assert_eq!(got, want, "seed {seed}: {table}: the replica's columns");
        let (want, got) = (
            content(&mut conn, &table).await?,
            content(&mut replica, &table).await?,
        );
        assert_eq!(
            got, want,
            "seed {seed}: {table}: rows (count, digest) of replica and source"
        );
        let (want, got) = (
            checksum(&mut conn, &table).await?,
            checksum(&mut replica, &table).await?,
        );
        assert!(want.is_some(), "{table} exists at the source");
        assert_eq!(
            got, want,
            "seed {seed}: {table}: CHECKSUM TABLE of replica and source"
        );
        eprintln!("seed {seed}: {table}: checksum {want:?} on both");
    }
    let checkpoint: Option<u64> = replica
        .query_first("SELECT scn FROM databus.databus_replica_checkpoint WHERE replica = 'replica'")
        .await?;
    assert_eq!(
        checkpoint,
        Some(end),
        "seed {seed}: the checkpoint is the source's last transaction"
    );
    eprintln!(
        "seed {seed}: kills {killed:?}; {transactions} commits at the source; last SCN {end}; \
         replica equal"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_under_sysbench_load_with_kills_ends_with_equal_checksums() -> anyhow::Result<()> {
    for seed in fault_seeds(&[1])? {
        run_seed(seed, 1)
            .await
            .with_context(|| format!("seed {seed} (rerun with DATABUS_FAULT_SEEDS={seed})"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: many seeds, three rounds of kills each (see the module docs)"]
async fn soak() -> anyhow::Result<()> {
    for seed in fault_seeds(&(1..=10).collect::<Vec<_>>())? {
        run_seed(seed, 3)
            .await
            .with_context(|| format!("seed {seed} (rerun with DATABUS_FAULT_SEEDS={seed})"))?;
    }
    Ok(())
}
