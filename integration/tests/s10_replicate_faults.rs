//! Scenario 10, target faults: `databus replicate` against a target that crashes, and a target that
//! refuses a statement.
//!
//! - A MariaDB target killed with SIGKILL mid-run and started again: the running replicator
//!   reconnects with backoff, resumes from the checkpoint committed in the target, and ends with
//!   `CHECKSUM TABLE` equal to the source's, without ever exiting; then a replicator started while
//!   the target is down waits for it and catches up.
//! - A PostgreSQL target whose replica table got a `CHECK` constraint by hand: the source row that
//!   breaks it stops the replicator (exit 1) with an error naming the table, the SCN and the
//!   statement kind, and the checkpoint stays at the window before.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use databus_integration::*;
use databus_testkit::{MariaDb, MariaDbOptions, Postgres};
use mysql_async::prelude::Queryable;

const PASSWORD_ENV: &str = "DATABUS_E2E_TARGET_PASSWORD";

/// A source MariaDB with `shop.item (id INT PRIMARY KEY, v INT, note VARCHAR(40))`, its relay.
async fn source_and_relay() -> Result<(MariaDb, Relay)> {
    let source = MariaDb::start(MariaDbOptions::default()).await?;
    source
        .exec(&[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.item (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40) NULL)",
        ])
        .await?;
    let url = source.create_user_with_grants("repl", "repl-pw").await?;
    let relay = Relay::start(RelaySpec {
        source: RelaySource::Database {
            url,
            server_id: 1001,
        },
        tables: vec![TableSpec {
            id: 1,
            name: "item".into(),
            table: "shop.item".into(),
        }],
        buffer_size: "8MiB".into(),
    })
    .await?;
    Ok((source, relay))
}

/// `n` transactions of 1..=3 changes each (inserts and updates), ids from `first`.
async fn write(conn: &mut mysql_async::Conn, first: i64, n: i64) -> Result<()> {
    for id in first..first + n {
        conn.query_drop("BEGIN").await?;
        conn.query_drop(format!(
            "INSERT INTO shop.item VALUES ({id}, {}, 'n{id}')",
            id * 7
        ))
        .await?;
        conn.query_drop(format!(
            "UPDATE shop.item SET v = v + 1 WHERE id = {}",
            id / 2
        ))
        .await?;
        conn.query_drop("COMMIT").await?;
    }
    Ok(())
}

fn args(relay: &str, to: String) -> Vec<OsString> {
    vec![
        "replicate".into(),
        "--relay".into(),
        relay.into(),
        "--to".into(),
        to.into(),
        "--password-env".into(),
        PASSWORD_ENV.into(),
        "--progress-every".into(),
        "1s".into(),
    ]
}

async fn checksum(conn: &mut mysql_async::Conn) -> Result<Option<u64>> {
    let row: Option<(String, Option<u64>)> = conn
        .query_first("CHECKSUM TABLE shop.item EXTENDED")
        .await?;
    Ok(row.and_then(|(_, sum)| sum))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_survives_a_mariadb_target_crash() -> Result<()> {
    let (source, mut relay) = source_and_relay().await?;
    let mut target = MariaDb::start(MariaDbOptions::default()).await?;
    target
        .create_user("replica", "replica-pw", "ALL PRIVILEGES")
        .await?;
    let mut conn = source.root_conn().await?;
    write(&mut conn, 1, 50).await?;

    let dir = tempfile::tempdir()?;
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        args(
            &relay.url(),
            format!("mysql://replica@127.0.0.1:{}/", target.port()),
        ),
        vec![
            (PASSWORD_ENV.to_owned(), "replica-pw".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ],
        dir.path(),
    )?;
    wait_for(
        "the first rows in the target",
        Duration::from_secs(60),
        || {
            let running = replicator.ensure_running();
            let n = target.count_rows("shop.item");
            async move {
                running?;
                Ok((n.await.unwrap_or(0) > 0).then_some(()))
            }
        },
    )
    .await?;
    // The target crashes while the source keeps writing, and comes back.
    let writer = tokio::spawn(async move { write(&mut conn, 51, 150).await.map(|()| conn) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    target.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicator.ensure_running()?;
    target.start_again().await?;
    let mut conn = writer.await??;
    write(&mut conn, 201, 50).await?;
    let end = source_scn(&mut conn).await?;
    relay.wait_scn(end, Duration::from_secs(60)).await?;

    let want = checksum(&mut conn).await?;
    ensure!(want.is_some());
    wait_for(
        "the target to equal the source",
        Duration::from_secs(120),
        || {
            let running = replicator.ensure_running();
            let got = target.query_string(
                "SELECT scn FROM databus.databus_replica_checkpoint WHERE replica = 'replica'",
            );
            async move {
                running?;
                let scn = got.await.ok().flatten();
                Ok((scn == Some(end.to_string())).then_some(()))
            }
        },
    )
    .await
    .with_context(|| replicator.log_tail())?;
    let mut replica = target.root_conn().await?;
    assert_eq!(
        checksum(&mut replica).await?,
        want,
        "CHECKSUM TABLE of replica and source"
    );
    let log = replicator.log();
    assert!(
        log.contains("target connection lost; reconnecting"),
        "the replicator saw the crash:\n{log}"
    );
    assert!(
        log.contains("resuming from the target's checkpoint"),
        "{log}"
    );

    // A replicator started while the target is down waits for it (`--connect-retry-for`).
    replicator.kill9();
    target.kill9();
    replicator.respawn()?;
    write(&mut conn, 251, 20).await?;
    wait_for(
        "the replicator to retry the target",
        Duration::from_secs(30),
        || {
            let running = replicator.ensure_running();
            let log = replicator.log();
            async move {
                running?;
                Ok(log
                    .contains("the target does not answer yet; retrying")
                    .then_some(()))
            }
        },
    )
    .await?;
    target.start_again().await?;
    let end = source_scn(&mut conn).await?;
    let want = checksum(&mut conn).await?;
    wait_for(
        "the late target to catch up",
        Duration::from_secs(120),
        || {
            let running = replicator.ensure_running();
            let got = target.query_string(
                "SELECT scn FROM databus.databus_replica_checkpoint WHERE replica = 'replica'",
            );
            async move {
                running?;
                Ok((got.await.ok().flatten() == Some(end.to_string())).then_some(()))
            }
        },
    )
    .await
    .with_context(|| replicator.log_tail())?;
    let mut replica = target.root_conn().await?;
    assert_eq!(checksum(&mut replica).await?, want);
    replicator.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_stops_with_the_table_scn_and_kind() -> Result<()> {
    let (source, mut relay) = source_and_relay().await?;
    let target = Postgres::start().await?;
    target
        .exec(&[
            "CREATE ROLE replica LOGIN PASSWORD 'replica-pw'",
            "GRANT CREATE ON DATABASE postgres TO replica",
        ])
        .await?;
    let mut conn = source.root_conn().await?;
    write(&mut conn, 1, 5).await?;
    let dir = tempfile::tempdir()?;
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        args(
            &relay.url(),
            format!("postgres://replica@127.0.0.1:{}/postgres", target.port()),
        ),
        vec![
            (PASSWORD_ENV.to_owned(), "replica-pw".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ],
        dir.path(),
    )?;
    let before = source_scn(&mut conn).await?;
    wait_for("the rows in the target", Duration::from_secs(60), || {
        let running = replicator.ensure_running();
        let scn = target.query_string("SELECT scn::text FROM databus.databus_replica_checkpoint");
        async move {
            running?;
            Ok((scn.await.ok().flatten() == Some(before.to_string())).then_some(()))
        }
    })
    .await?;
    // By hand, the replica's table gets a constraint the source does not have.
    target
        .exec(&["ALTER TABLE shop.item ADD CONSTRAINT v_small CHECK (v < 1000)"])
        .await?;
    conn.query_drop("INSERT INTO shop.item VALUES (100, 5000, 'too big')")
        .await?;
    let bad = source_scn(&mut conn).await?;
    relay.wait_scn(bad, Duration::from_secs(60)).await?;
    let status = wait_for("the replicator to stop", Duration::from_secs(60), || {
        let status = replicator.exited();
        async move { Ok(status) }
    })
    .await?;
    ensure!(!status.success(), "the replicator stopped with an error");
    let log = replicator.log();
    let expected = format!("refused the upsert (INSERT of rows) of table shop.item at SCN {bad}");
    assert!(log.contains(&expected), "{expected:?} in:\n{log}");
    assert!(log.contains("v_small"), "the server's message:\n{log}");
    assert_eq!(
        target
            .query_string("SELECT scn::text FROM databus.databus_replica_checkpoint")
            .await?,
        Some(before.to_string()),
        "the checkpoint stays at the last applied window"
    );
    Ok(())
}
