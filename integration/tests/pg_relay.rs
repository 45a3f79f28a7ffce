//! A relay capturing PostgreSQL (`kind = "postgres"`): the real `databus relay` binary on a private
//! server, a seeded workload of inserts, updates (key changes included), deletes and TRUNCATEs in many
//! transactions, each with its sequence number in `public.txlog`; a consumer built with the client
//! library ends equal to the source row by row, through a `kill -9` of the relay mid-workload
//! (transactions commit while it is down) and a fast restart of PostgreSQL itself.
//!
//! The slot: sampled all along, its `confirmed_flush_lsn` never passes a transaction the relay has
//! not persisted (the state file's SCN); beyond that SCN it may only have confirmed WAL holding no
//! published transaction (the connector confirms keepalive positions while idle, see
//! docs/connectors.md "Idle confirmation"). A consumer started on the restarted relay from its
//! oldest window sees every transaction after the persisted SCN, so the restart lost nothing; and
//! the slot ends at the last transaction (the WAL it holds does not grow without bound).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use databus_client::{BackoffConfig, ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::http::get;
use databus_integration::pg::{PgWorkload, SCHEMA, lsn, pg_rows};
use databus_integration::process::BUFFER;
use databus_integration::workload::TXLOG;
use databus_integration::*;
use databus_testkit::Postgres;

const ACCT: u16 = 1;
const SLOT: &str = "databus_e2e";

/// The slot's `confirmed_flush_lsn`.
async fn slot_confirmed(pg: &Postgres) -> Result<u64> {
    let text = pg
        .query_string(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
        ))
        .await?
        .context("no slot")?;
    lsn(&text)
}

/// The SCN in the relay's state file (0 before the first persist).
fn persisted_scn(relay: &Relay) -> Result<u64> {
    let path = relay.state_dir().join(format!("{BUFFER}.state.json"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            v["last_scn"].as_u64().context("state without last_scn")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn consumer_config(relay: &Relay) -> ClientConfig {
    let mut config = ClientConfig::with_relays([relay.url()]);
    config.start = StartPosition::Oldest;
    config.long_poll = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    config.fetch_backoff = BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
    };
    config
}

/// The `txlog` seqs of each window, in order; every window must carry exactly one.
fn window_seqs(windows: &[ObservedWindow]) -> Result<Vec<(u64, i64)>> {
    windows
        .iter()
        .map(|w| {
            let seqs: Vec<i64> = w
                .events
                .iter()
                .filter(|e| e.source == TXLOG && !e.delete)
                .filter_map(|e| e.row.get("seq").and_then(|s| s.parse().ok()))
                .collect();
            match seqs.as_slice() {
                [seq] => Ok((w.scn, *seq)),
                _ => bail!("window {} carries txlog seqs {seqs:?}", w.scn),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_survives_kill9_and_a_server_restart() -> Result<()> {
    let mut pg = Postgres::start().await?;
    pg.exec(SCHEMA).await?;
    let spec = RelaySpec {
        source: RelaySource::Postgres {
            host: "127.0.0.1".into(),
            port: pg.port(),
            user: "postgres".into(),
            password: Postgres::PASSWORD.into(),
            database: "postgres".into(),
            slot: SLOT.into(),
        },
        tables: vec![
            TableSpec {
                id: ACCT,
                name: "acct".into(),
                table: "public.acct".into(),
            },
            TableSpec {
                id: TXLOG,
                name: "txlog".into(),
                table: "public.txlog".into(),
            },
        ],
        buffer_size: "8MiB".into(),
    };
    let mut relay = Relay::start(spec).await?;
    let mut a = Consumer::start(
        consumer_config(&relay),
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;

    // The slot sampler: (confirmed_flush_lsn, then the state file's SCN), all along.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let state_path = relay.state_dir().join(format!("{BUFFER}.state.json"));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        let config = pg.config();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A fresh connection each time: the server restarts mid-test.
                if let Ok(Ok((client, conn))) = tokio::time::timeout(
                    Duration::from_secs(2),
                    config.connect(tokio_postgres::NoTls),
                )
                .await
                {
                    let task = tokio::spawn(conn);
                    while !stop.load(Ordering::Relaxed) {
                        let row = client
                            .query_opt(
                                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                                &[&SLOT],
                            )
                            .await;
                        let Ok(Some(row)) = row else { break };
                        let Some(text) = row.get::<_, Option<String>>(0) else {
                            break;
                        };
                        let confirmed = lsn(&text).expect("an LSN");
                        // Read after the slot: the file only grows, so this bounds what was acknowledged.
                        let persisted = std::fs::read_to_string(&state_path)
                            .ok()
                            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                            .and_then(|v| v["last_scn"].as_u64())
                            .unwrap_or(0);
                        samples.lock().unwrap().push((confirmed, persisted));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    task.abort();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Phase 1: 60 transactions, all consumed.
    let mut work = PgWorkload::new(17);
    work.run(&pg, 60).await?;
    a.wait_seq(60, Duration::from_secs(60)).await?;

    // A burst, consumed, then at once kill -9 of the relay: it persists at most once a second, so its
    // state file is usually behind the windows it served (which the restart must read again). Then
    // 40 transactions commit while it is down.
    work.run(&pg, 5).await?;
    a.wait_seq(65, Duration::from_secs(60)).await?;
    relay.kill9();
    let persisted_at_kill = persisted_scn(&relay)?;
    ensure!(
        persisted_at_kill > 0,
        "the relay persisted nothing in phase 1"
    );
    let served_at_kill = a.recorder.lock().last_scn;
    eprintln!(
        "kill -9: persisted SCN {persisted_at_kill}, served up to {served_at_kill} ({} windows to read again)",
        a.recorder
            .windows()
            .iter()
            .filter(|w| w.scn > persisted_at_kill)
            .count()
    );
    work.run(&pg, 40).await?;
    relay.restart().await?;
    // A second consumer on the restarted relay, from its oldest window: the restart re-read everything
    // after the persisted SCN.
    let mut b = Consumer::start(
        consumer_config(&relay),
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;
    work.run(&pg, 20).await?;

    // A fast restart of PostgreSQL mid-workload (same port and data directory).
    pg.restart().await?;
    work.run(&pg, 30).await?;
    let last = work.seq;
    a.wait_seq(last, Duration::from_secs(120)).await?;
    b.wait_seq(last, Duration::from_secs(120)).await?;
    a.ensure_running().await?;
    b.ensure_running().await?;

    // Consumer A: every transaction once, in commit order, one window each; its replica equals the
    // source row by row.
    let a_windows = a.recorder.windows();
    let a_seqs = window_seqs(&a_windows)?;
    let expected: Vec<i64> = (1..=last).collect();
    ensure!(
        a_seqs.iter().map(|(_, s)| *s).collect::<Vec<_>>() == expected,
        "consumer A's transactions: {a_seqs:?}"
    );
    ensure!(
        a_seqs.windows(2).all(|w| w[0].0 < w[1].0),
        "SCNs not increasing: {a_seqs:?}"
    );
    compare_tables(
        "public.acct",
        &pg_rows(&pg, "public.acct", "id").await?,
        &a.recorder.table(ACCT),
        Columns::Exact,
    )?;
    compare_tables(
        "public.txlog",
        &pg_rows(&pg, "public.txlog", "seq").await?,
        &a.recorder.table(TXLOG),
        Columns::Exact,
    )?;
    {
        let r = a.recorder.lock();
        ensure!(
            !r.truncates.is_empty(),
            "the workload's TRUNCATEs reached the consumer"
        );
        ensure!(r.decode_failures.is_empty(), "{:?}", r.decode_failures);
    }

    // Consumer B: exactly the transactions after the SCN persisted at the kill, the same windows as A.
    let b_windows = b.recorder.windows();
    let a_after: Vec<&ObservedWindow> = a_windows
        .iter()
        .filter(|w| w.scn > persisted_at_kill)
        .collect();
    ensure!(
        b_windows.len() == a_after.len(),
        "consumer B saw {} windows after SCN {persisted_at_kill}, consumer A {}",
        b_windows.len(),
        a_after.len()
    );
    for (got, want) in b_windows.iter().zip(&a_after) {
        ensure!(
            got.scn == want.scn && got.events == want.events,
            "window {} differs from A's {}",
            got.scn,
            want.scn
        );
    }

    // The slot ends at the last transaction: it advances as the relay persists (idle confirmations
    // may take it further).
    let last_scn = a_seqs.last().map(|(scn, _)| *scn).unwrap_or(0);
    wait_for(
        "the slot to confirm the last transaction",
        Duration::from_secs(30),
        || async { Ok((slot_confirmed(&pg).await? >= last_scn).then_some(())) },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;

    // The slot never passed a transaction the relay had not persisted.
    let scns: BTreeSet<u64> = a_seqs.iter().map(|(scn, _)| *scn).collect();
    let samples = samples.lock().unwrap().clone();
    ensure!(
        samples.len() > 20,
        "too few slot samples: {}",
        samples.len()
    );
    for (confirmed, persisted) in &samples {
        if confirmed > persisted {
            let passed: Vec<&u64> = scns.range(persisted + 1..=*confirmed).collect();
            ensure!(
                passed.is_empty(),
                "the slot confirmed {confirmed} with the relay's state at {persisted}: transactions {passed:?} were \
                 not persisted"
            );
        }
    }

    // Slot lag on /metrics.
    let (_, body) = get(&relay.url(), "/metrics", Duration::from_secs(5)).await?;
    let body = String::from_utf8_lossy(&body);
    ensure!(
        body.lines().any(|l| l.starts_with(&format!(
            "databus_relay_source_log_lag_bytes{{buffer=\"{BUFFER}\"}}"
        ))),
        "no slot lag gauge in /metrics:\n{body}"
    );
    a.stop().await?;
    b.stop().await?;
    relay.proc().terminate(Duration::from_secs(30)).await?;
    Ok(())
}
