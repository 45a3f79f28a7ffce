//! A consumer process for the fault-injection tests: follows relays (and a bootstrap server) with the
//! client library, and appends each delivered window as one line to a log file before its checkpoint
//! is persisted (a file store), so a SIGKILL at any moment leaves whole lines and replays from the last
//! checkpoint.
//!
//! ```text
//! fault_consumer --relay URL [--relay URL] [--bootstrap URL] --checkpoint FILE --log FILE
//!     [--start beginning|now|snapshot] [--fail-seed N --fail-percent P] [--fatal-after N]
//! ```
//!
//! A bootstrap writes `BOOTSTRAP snapshot` or `BOOTSTRAP delta <scn>` first. A window line is `<scn> <phase> <event> <event> ...` with each event `<source>:<opcode>:<json row>`
//! (`opcode` is `u` or `d`, or `t` for a truncate of the source with the row `{}`; spaces in the row
//! are written as `\u0020`). With `--fail-percent`, `on_event` answers
//! `Retry` for that share of first attempts (seeded), at most 5 times a window (inside the client's
//! retry budget), exercising window rollback and retry. With
//! `--fatal-after N`, the first event after N logged windows answers `Fatal`: the client stops with
//! that error and the process exits with status 1 (to be restarted from its checkpoint).

#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use databus_client::{
    BootstrapInfo, ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    FileCheckpointStore, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, TableChange};
use databus_integration::faults::SeededRng;
use tokio_util::sync::CancellationToken;

/// The most retries injected into one window: well inside the client's default retry budget (20).
const MAX_INJECTED: u32 = 5;

struct LogConsumer {
    file: Mutex<std::fs::File>,
    pending: Mutex<Vec<String>>,
    fail: Option<(Mutex<SeededRng>, u64)>,
    attempts: Mutex<std::collections::BTreeSet<String>>,
    /// The SCN of the window being delivered, and the retries injected into each window so far.
    window: AtomicU64,
    injected: Mutex<std::collections::BTreeMap<u64, u32>>,
    windows: AtomicU64,
    fatal_after: Option<u64>,
}

impl DatabusConsumer for LogConsumer {
    async fn on_start_window(&self, info: &WindowInfo) -> ConsumerOutcome {
        self.window.store(info.scn.get(), Ordering::Relaxed);
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let row = match event.json() {
            Ok(row) => row,
            Err(e) => {
                eprintln!(
                    "fault_consumer: cannot decode an event of window {}: {e}",
                    event.scn()
                );
                return ConsumerOutcome::Fatal;
            }
        };
        if self
            .fatal_after
            .is_some_and(|n| self.windows.load(Ordering::Relaxed) >= n)
        {
            return ConsumerOutcome::Fatal;
        }
        let op = if event.is_delete() { 'd' } else { 'u' };
        let item = format!("{}:{op}:{}", event.source(), no_spaces(&row));
        if let Some((rng, percent)) = &self.fail {
            // Fail a share of first attempts only, and at most MAX_INJECTED times a window, so every
            // window eventually passes within the client's retry budget (a snapshot window of
            // hundreds of rows would otherwise fail about 3% of its rows' first attempts: more than
            // the budget).
            let first = self
                .attempts
                .lock()
                .unwrap()
                .insert(format!("{} {item}", event.scn()));
            if first && rng.lock().unwrap().range(0, 100) < *percent {
                let mut injected = self.injected.lock().unwrap();
                let n = injected
                    .entry(self.window.load(Ordering::Relaxed))
                    .or_default();
                if *n < MAX_INJECTED {
                    *n += 1;
                    return ConsumerOutcome::Retry;
                }
            }
        }
        self.pending.lock().unwrap().push(item);
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, _: &TableChange) -> ConsumerOutcome {
        self.pending
            .lock()
            .unwrap()
            .push(format!("{}:t:{{}}", event.source()));
        ConsumerOutcome::Success
    }

    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        // A full snapshot replaces the replica's state; a consolidated delta updates it.
        let line = match info.since_scn {
            Some(scn) => format!("BOOTSTRAP delta {scn}\n"),
            None => "BOOTSTRAP snapshot\n".to_owned(),
        };
        match self.file.lock().unwrap().write_all(line.as_bytes()) {
            Ok(()) => ConsumerOutcome::Success,
            Err(_) => ConsumerOutcome::Fatal,
        }
    }

    async fn on_rollback(&self, _: &Checkpoint) -> ConsumerOutcome {
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        let events = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut line = format!("{} {:?}", window.scn, window.phase);
        for e in events {
            line.push(' ');
            line.push_str(&e);
        }
        line.push('\n');
        // One write per window on an O_APPEND file. A SIGKILL can still cut a large write short (the
        // kernel stops copying at a fatal signal); the next start drops that torn line, and the window
        // is replayed because its checkpoint was never stored.
        match self.file.lock().unwrap().write_all(line.as_bytes()) {
            Ok(()) => {
                self.windows.fetch_add(1, Ordering::Relaxed);
                ConsumerOutcome::Success
            }
            Err(e) => {
                eprintln!("fault_consumer: cannot write the log: {e}");
                ConsumerOutcome::Fatal
            }
        }
    }
}

/// Compact JSON with every space written as the escape `\u0020` (spaces only occur inside strings),
/// so a log line splits on spaces.
fn no_spaces(row: &serde_json::Value) -> String {
    row.to_string().replace(' ', "\\u0020")
}

/// Cuts the log back to its last whole line: what a killed run was writing when it died (its window
/// was not checkpointed, so it comes again), like a replica rolling back an uncommitted transaction.
fn drop_torn_line(path: &std::path::Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        eprintln!(
            "fault_consumer: dropping a torn last line of {} bytes",
            bytes.len() - whole
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole as u64))
            .with_context(|| format!("truncate {}", path.display()))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut relays = Vec::new();
    let mut bootstrap = Vec::new();
    let (mut checkpoint, mut log, mut start) = (None, None, StartPosition::Beginning);
    let (mut fail_seed, mut fail_percent) = (0u64, 0u64);
    let mut fatal_after = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--relay" => relays.push(value()?),
            "--bootstrap" => bootstrap.push(value()?),
            "--checkpoint" => checkpoint = Some(value()?),
            "--log" => log = Some(value()?),
            "--start" => {
                start = match value()?.as_str() {
                    "beginning" => StartPosition::Beginning,
                    "now" => StartPosition::Now,
                    "snapshot" => StartPosition::Snapshot,
                    other => bail!("--start {other}: use beginning, now or snapshot"),
                }
            }
            "--fail-seed" => fail_seed = value()?.parse()?,
            "--fail-percent" => fail_percent = value()?.parse()?,
            "--fatal-after" => fatal_after = Some(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let checkpoint = checkpoint.context("--checkpoint FILE is required")?;
    let log = log.context("--log FILE is required")?;
    let mut config = ClientConfig::with_relays(relays);
    config.bootstrap_servers = bootstrap;
    config.start = start;
    config.long_poll = std::time::Duration::from_millis(500);
    config.request_timeout = std::time::Duration::from_secs(5);
    config.fetch_backoff.initial = std::time::Duration::from_millis(20);
    config.fetch_backoff.max = std::time::Duration::from_millis(500);
    config.retry.max_retries = 20;
    config.retry.backoff.initial = std::time::Duration::from_millis(1);
    config.retry.backoff.max = std::time::Duration::from_millis(20);
    drop_torn_line(std::path::Path::new(&log))?;
    let consumer = Arc::new(LogConsumer {
        file: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("open {log}"))?,
        ),
        pending: Mutex::new(Vec::new()),
        fail: (fail_percent > 0).then(|| (Mutex::new(SeededRng::new(fail_seed)), fail_percent)),
        attempts: Mutex::new(Default::default()),
        window: AtomicU64::new(0),
        injected: Mutex::new(Default::default()),
        windows: AtomicU64::new(0),
        fatal_after,
    });
    let store = Arc::new(FileCheckpointStore::new(&checkpoint)?);
    let client = DatabusClient::new(config, store)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        eprintln!("fault_consumer: started");
        client.run(consumer.clone(), stop).await
    })?;
    Ok(())
}
