//! The bootstrap path on PostgreSQL, end to end, with faults (issue 17): a private PostgreSQL with
//! a capture role and a seed role (each `REPLICATION` and `SELECT`, neither a superuser), the real
//! `databus relay` on it (`kind = "postgres"`, a 1 MiB buffer), and a real `databus bootstrap all`
//! seeded from the PostgreSQL (a `postgres://` `[seed] url` naming the relay's slot and publication,
//! the password in `password_file`) while a writer commits inserts, updates, key changes, deletes
//! and TRUNCATEs; 1000 transactions committed before the relay started reach consumers only through
//! the seed.
//!
//! - Consumer A starts from a bootstrap snapshot (small pages) while the writer runs; the bootstrap
//!   server is killed with `kill -9` while A bootstraps, and restarted; A catches up and follows the
//!   relay.
//! - Consumer B starts from a snapshot too, is stopped, and while it is stopped: the relay is killed
//!   with `kill -9` (transactions commit while it is down) and restarted, PostgreSQL restarts (fast
//!   stop, start on the same port and data directory), and more than a relay buffer of padded rows is
//!   written, so the relay evicts B's position. B comes back through a consolidated delta (rows
//!   changed since its checkpoint, then catch-up) and follows the relay again.
//! - At the end both replicas equal the source row by row; every window either consumer got from the
//!   relay or the bootstrap log carries exactly one transaction, in commit order, with no gap and no
//!   duplicate; and a snapshot consumer started once everything is applied gets, from the snapshot
//!   store alone (no window), exactly the source's rows.
//!
//! Not exercised: the producer filling a relay gap from the source (`[source]`), which PostgreSQL
//! cannot do (a slot keeps no history before its confirmed position, docs/operations.md): the
//! bootstrap server is restarted before the relay evicts its position.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use databus_client::{BackoffConfig, ClientConfig, FileCheckpointStore, Phase, StartPosition};
use databus_integration::pg::{PgWorkload, SCHEMA, lsn, pg_rows};
use databus_integration::process::BUFFER;
use databus_integration::workload::TXLOG;
use databus_integration::*;
use databus_testkit::Postgres;

const ACCT: u16 = 1;
const SLOT: &str = "databus_boot";
const CAPTURE_PW: &str = "capture-pw";
const SEED_PW: &str = "seeder-pw";

fn relay_spec(pg: &Postgres) -> RelaySpec {
    RelaySpec {
        source: RelaySource::Postgres {
            host: "127.0.0.1".into(),
            port: pg.port(),
            user: "capture".into(),
            password: CAPTURE_PW.into(),
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
        // The smallest buffer: a stopped consumer falls off it after about a megabyte of changes.
        buffer_size: "1MiB".into(),
    }
}

/// A client that starts from a bootstrap snapshot, in small pages.
fn consumer_config(relay: &Relay, boot: &BootstrapServer) -> ClientConfig {
    let mut config = ClientConfig::with_relays([relay.url()]);
    config.bootstrap_servers = vec![boot.url()];
    config.start = StartPosition::Snapshot;
    config.max_response_bytes = 8 << 10;
    config.long_poll = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(5);
    config.fetch_backoff = BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(300),
        multiplier: 2.0,
    };
    config
}

/// A writer committing the workload's transactions on its own connection, 10 ms apart, until told
/// to stop; `progress` holds the last committed seq.
fn spawn_writer(
    mut work: PgWorkload,
    client: tokio_postgres::Client,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<Result<PgWorkload>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            work.commit_next(&client).await?;
            progress.store(work.seq, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(work)
    })
}

async fn wait_progress(progress: &AtomicI64, seq: i64) -> Result<()> {
    wait_for(
        &format!("the writer to commit transaction {seq}"),
        Duration::from_secs(60),
        || async move { Ok((progress.load(Ordering::Relaxed) >= seq).then_some(())) },
    )
    .await
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
                _ => bail!(
                    "window {} ({:?}) carries txlog seqs {seqs:?}",
                    w.scn,
                    w.phase
                ),
            }
        })
        .collect()
}

/// Windows with consecutive seqs ending at `last` and increasing SCNs: no gap, duplicate or
/// reorder. Returns the first seq.
fn check_contiguous(who: &str, windows: &[ObservedWindow], last: i64) -> Result<i64> {
    let seqs = window_seqs(windows)?;
    let first = seqs.first().map(|(_, s)| *s).context("no window")?;
    let got: Vec<i64> = seqs.iter().map(|(_, s)| *s).collect();
    let want: Vec<i64> = (first..=last).collect();
    ensure!(
        got == want,
        "{who}: window seqs {got:?}, want {first}..={last}"
    );
    ensure!(
        seqs.windows(2).all(|w| w[0].0 < w[1].0),
        "{who}: SCNs not increasing: {seqs:?}"
    );
    Ok(first)
}

async fn compare_with_source(pg: &Postgres, who: &str, rec: &Recorder) -> Result<()> {
    compare_tables(
        &format!("{who}: public.acct"),
        &pg_rows(pg, "public.acct", "id").await?,
        &rec.table(ACCT),
        Columns::Exact,
    )?;
    compare_tables(
        &format!("{who}: public.txlog"),
        &pg_rows(pg, "public.txlog", "seq").await?,
        &rec.table(TXLOG),
        Columns::Exact,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bootstrap_snapshot_and_delta_through_kill9s_and_a_server_restart() -> Result<()> {
    let mut pg = Postgres::start().await?;
    pg.exec(SCHEMA).await?;
    pg.exec(&[
        &format!("CREATE PUBLICATION {SLOT} FOR TABLE public.acct, public.txlog"),
        &format!("CREATE ROLE capture LOGIN REPLICATION PASSWORD '{CAPTURE_PW}'"),
        &format!("CREATE ROLE seeder LOGIN REPLICATION PASSWORD '{SEED_PW}'"),
        "GRANT SELECT ON public.acct, public.txlog TO capture, seeder",
    ])
    .await?;

    // History the relay never sees: only the seed carries it to consumers.
    let mut work = PgWorkload::new(1717);
    let client = pg.client().await?;
    work.run_on(&client, 1000).await?;

    let mut relay = Relay::start(relay_spec(&pg)).await?;

    // The writer runs while the bootstrap server seeds, while A bootstraps and the bootstrap server
    // is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicI64::new(work.seq));
    let writer = spawn_writer(work, client, stop.clone(), progress.clone());
    wait_progress(&progress, 1010).await?;
    let lsn_before_seed = lsn(&pg
        .query_string("SELECT pg_current_wal_lsn()::text")
        .await?
        .context("no WAL position")?)?;
    let seed_url = format!(
        "postgres://seeder@127.0.0.1:{}/postgres?slot={SLOT}&publication={SLOT}",
        pg.port()
    );
    let mut boot = BootstrapServer::start_with(
        &relay.url(),
        BootstrapOptions {
            seed_url: Some(seed_url),
            seed_password: Some(SeedPassword::File(SEED_PW.into())),
            // Every delta of more than 10 log events is consolidated (rows changed since, then
            // catch-up).
            log_only_max_events: 10,
            ..BootstrapOptions::default()
        },
    )
    .await?;
    let status = boot.status().await?;
    let base = status["snapshot_base_scn"].as_u64().unwrap_or(0);
    ensure!(
        status["seeded"] == true && base > lsn_before_seed,
        "the seed's position {base} is not after the writes before it (WAL at {lsn_before_seed}): {status}"
    );
    let seeded_at = progress.load(Ordering::Relaxed);
    ensure!(!writer.is_finished(), "the writer stopped during the seed");

    // Consumer A: a snapshot, in pages, during which the bootstrap server is killed (kill -9) and
    // restarted.
    let dir = tempfile::tempdir()?;
    let mut a = Consumer::start(
        consumer_config(&relay, &boot),
        Arc::new(FileCheckpointStore::new(dir.path().join("a.checkpoint"))?),
        Recorder::new(),
    )?;
    wait_for(
        "consumer A to receive snapshot rows",
        Duration::from_secs(60),
        || {
            let r = a.recorder.lock();
            let done = r.snapshot_rows > 0 || !r.bootstraps_ended.is_empty();
            async move { Ok(done.then_some(())) }
        },
    )
    .await?;
    let mid_snapshot = a.recorder.lock().bootstraps_ended.is_empty();
    boot.kill9(BootstrapRole::All)?;
    wait_progress(&progress, progress.load(Ordering::Relaxed) + 20).await?;
    boot.restart(BootstrapRole::All).await?;
    wait_progress(&progress, progress.load(Ordering::Relaxed) + 50).await?;
    stop.store(true, Ordering::Relaxed);
    let mut work = writer.await??;
    eprintln!(
        "seeded at about seq {seeded_at} (SCN {base}); bootstrap server killed {} A's snapshot; writer \
         ended at seq {}",
        if mid_snapshot { "during" } else { "after" },
        work.seq
    );
    a.wait_seq(work.seq, Duration::from_secs(120)).await?;

    // Consumer B: a snapshot, then the relay.
    let checkpoint_b = dir.path().join("b.checkpoint");
    let recorder_b = Recorder::new();
    let mut b = Consumer::start(
        consumer_config(&relay, &boot),
        Arc::new(FileCheckpointStore::new(&checkpoint_b)?),
        recorder_b.clone(),
    )?;
    b.wait_seq(work.seq, Duration::from_secs(120)).await?;

    // The relay: kill -9 after a burst both consumers received, transactions while it is down,
    // restart.
    let client = pg.client().await?;
    work.run_on(&client, 20).await?;
    a.wait_seq(work.seq, Duration::from_secs(60)).await?;
    b.wait_seq(work.seq, Duration::from_secs(60)).await?;
    relay.kill9();
    eprintln!(
        "relay kill -9: persisted SCN {}, consumers at {}",
        persisted_scn(&relay)?,
        a.recorder.lock().last_scn
    );
    work.run_on(&client, 30).await?;
    relay.restart().await?;
    work.run_on(&client, 20).await?;
    drop(client);

    // PostgreSQL: a fast restart on the same port and data directory.
    pg.restart().await?;
    let client = pg.client().await?;
    work.run_on(&client, 30).await?;
    a.wait_seq(work.seq, Duration::from_secs(120)).await?;
    b.wait_seq(work.seq, Duration::from_secs(120)).await?;

    // B stops. The relay holds its position now: only the writes below can evict it.
    b.stop().await?;
    let (stopped_at, b_windows_before, b_snapshot_rows_before) = {
        let r = recorder_b.lock();
        (r.last_scn, r.windows.len(), r.snapshot_rows)
    };
    // The relay serves a checkpoint at or after its `prev_scn` (the last window it evicted).
    let prev_at_stop = relay.status().await?["prev_scn"].as_u64().unwrap_or(0);
    ensure!(
        prev_at_stop <= stopped_at,
        "the relay does not hold B's position at its stop: prev {prev_at_stop}, B at {stopped_at}"
    );

    // More than a buffer's worth of padded rows while B is stopped: the relay evicts B's position.
    work.set_pad(1000);
    let mut prev = prev_at_stop;
    let mut batches = 0;
    while batches < 10 && prev <= stopped_at {
        work.run_on(&client, 300).await?;
        batches += 1;
        a.wait_seq(work.seq, Duration::from_secs(120)).await?;
        prev = relay.status().await?["prev_scn"].as_u64().unwrap_or(0);
    }
    ensure!(
        prev > stopped_at,
        "the relay still holds consumer B's position: prev {prev}, B at {stopped_at}"
    );
    eprintln!(
        "B stopped at SCN {stopped_at}; after {batches} padded batches of 300 the relay has evicted up to {prev}"
    );
    work.set_pad(0);
    let relay_max = relay.status().await?["max_scn"].as_u64().unwrap_or(0);
    boot.wait_applied(relay_max, Duration::from_secs(120))
        .await?;

    // B returns: the relay answers scn_not_found, the bootstrap server a consolidated delta.
    let mut b = Consumer::start(
        consumer_config(&relay, &boot),
        Arc::new(FileCheckpointStore::new(&checkpoint_b)?),
        recorder_b.clone(),
    )?;
    b.wait_seq(work.seq, Duration::from_secs(120)).await?;
    eprintln!(
        "B's consolidated delta: {} rows",
        recorder_b.lock().snapshot_rows - b_snapshot_rows_before
    );
    work.run_on(&client, 50).await?;
    let last = work.seq;
    a.wait_seq(last, Duration::from_secs(120)).await?;
    b.wait_seq(last, Duration::from_secs(120)).await?;
    a.ensure_running().await?;
    b.ensure_running().await?;
    relay.proc().ensure_running()?;
    boot.ensure_running()?;

    // A: one snapshot, then every transaction after it once, in order; its replica is the source.
    {
        let r = a.recorder.lock();
        ensure!(
            r.bootstraps == vec![None],
            "A's bootstraps: {:?}",
            r.bootstraps
        );
        ensure!(r.bootstraps_ended.len() == 1, "A's bootstrap ended once");
        ensure!(
            r.snapshot_rows > 1000,
            "A got {} snapshot rows",
            r.snapshot_rows
        );
        ensure!(
            !r.truncates.is_empty(),
            "the workload's TRUNCATEs reached A"
        );
        ensure!(r.decode_failures.is_empty(), "{:?}", r.decode_failures);
    }
    check_contiguous("A", &a.recorder.windows(), last)?;
    compare_with_source(&pg, "A", &a.recorder).await?;

    // B: a snapshot, then a consolidated delta from its checkpoint; its replica is the source.
    {
        let r = recorder_b.lock();
        ensure!(
            r.bootstraps
                .iter()
                .map(|s| s.map(|s| s.get()))
                .collect::<Vec<_>>()
                == vec![None, Some(stopped_at)],
            "B's bootstraps: {:?} (stopped at {stopped_at})",
            r.bootstraps
        );
        ensure!(r.bootstraps_ended.len() == 2, "B's bootstraps ended");
        ensure!(
            r.snapshot_rows > b_snapshot_rows_before,
            "the consolidated delta sent rows"
        );
        ensure!(r.decode_failures.is_empty(), "{:?}", r.decode_failures);
    }
    let b_windows = recorder_b.windows();
    let (before, after) = b_windows.split_at(b_windows_before);
    check_contiguous("B before it stopped", before, before_last(before)?)?;
    check_contiguous("B after its delta", after, last)?;
    ensure!(
        after.iter().any(|w| w.phase == Phase::Online),
        "B follows the relay after the delta"
    );
    compare_with_source(&pg, "B", &recorder_b).await?;

    // The snapshot store: a snapshot taken once everything is applied is the source, row by row,
    // with no window to complete it.
    let last_scn = a.recorder.lock().last_scn;
    boot.wait_applied(last_scn, Duration::from_secs(60)).await?;
    let mut c = Consumer::start(
        consumer_config(&relay, &boot),
        Arc::new(FileCheckpointStore::new(dir.path().join("c.checkpoint"))?),
        Recorder::new(),
    )?;
    c.wait_seq(last, Duration::from_secs(120)).await?;
    wait_for(
        "the snapshot consumer's bootstrap to end",
        Duration::from_secs(60),
        || {
            let ended = !c.recorder.lock().bootstraps_ended.is_empty();
            async move { Ok(ended.then_some(())) }
        },
    )
    .await?;
    ensure!(
        c.recorder.windows().iter().all(|w| w.events.is_empty()),
        "the final snapshot needed windows: {:?}",
        c.recorder
            .windows()
            .iter()
            .map(|w| (w.scn, w.phase))
            .collect::<Vec<_>>()
    );
    compare_with_source(&pg, "the snapshot store", &c.recorder).await?;
    // The producer never fell off the relay (it would have re-seeded into a new generation).
    let status = boot.status().await?;
    ensure!(
        status["generation"] == 0,
        "the bootstrap server re-seeded: {status}"
    );

    a.stop().await?;
    b.stop().await?;
    c.stop().await?;
    relay.proc().terminate(Duration::from_secs(30)).await?;
    boot.proc().terminate(Duration::from_secs(30)).await?;
    Ok(())
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

/// The seq of the last window of `windows`.
fn before_last(windows: &[ObservedWindow]) -> Result<i64> {
    window_seqs(windows)?
        .last()
        .map(|(_, s)| *s)
        .context("no window")
}
