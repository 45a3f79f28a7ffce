//! `databus replicate`: keeps a typed replica of the captured tables in a MariaDB or PostgreSQL
//! target.
//!
//! - [`dialect`]: the SQL of each target kind, one enum over [`mapping`] (MariaDB column types,
//!   `CREATE TABLE`, the `ALTER TABLE` of a schema change, value literals) and [`pg_mapping`]
//!   (the same for PostgreSQL).
//! - [`target`]: the target connection and its transactions, the replica's checkpoint table
//!   (`databus_replica_checkpoint`) and its table of replicated schemas, errors classified by
//!   recovery (a lost connection is reconnected, a refused statement stops).
//! - [`apply`]: one window (or a group of consecutive windows already fetched) as batched
//!   statements, then the checkpoint, then `COMMIT`.
//! - [`metrics`]: Prometheus `/metrics` on `--metrics-listen`.
//!
//! Built on the client library's pull API ([`databus_client::WindowStream`]): the client does the
//! relay → bootstrap → relay switching; the replica loads its checkpoint from the target, hands the
//! client a [`MemoryCheckpointStore`] starting there, and commits every window's checkpoint with
//! the window's rows. docs/replicate.md is the user's guide.

pub mod apply;
pub mod config;
pub mod dialect;
pub mod mapping;
pub mod metrics;
pub mod pg_mapping;
pub mod target;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use databus_client::{
    ClientConfig, DatabusClient, MemoryCheckpointStore, Phase, StartPosition, StreamItem,
    Transition,
};
use databus_core::{ConsumptionMode, SourceId};
use databus_filters::FilterSpec;
use tokio_util::sync::CancellationToken;

use crate::UsageError;
use crate::http::{AnswerJson, RelayUrl};

/// What `databus replicate` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplicateOptions {
    /// Relay base URLs (failover in order).
    pub relays: Vec<String>,
    /// Bootstrap server base URLs: a new replica starts from a snapshot.
    pub bootstrap: Vec<String>,
    /// `mysql://user@host:port/` or `postgres://user@host:port/db` of the target (no password).
    pub to: String,
    /// Environment variable holding the target's password.
    pub password_env: Option<String>,
    /// File holding the target's password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Only these `database.table`s (default: every table of the relay).
    pub tables: Vec<String>,
    /// Exit once caught up with the relay.
    pub once: bool,
    /// The replica's name: its checkpoint row.
    pub name: String,
    /// Database of the replica's own tables in the target.
    pub meta_db: String,
    /// How often progress and lag are logged.
    pub progress_every: Duration,
    /// Serve Prometheus `/metrics` on this address.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long a target that does not answer at start is retried before giving up.
    pub connect_retry_for: Duration,
}

/// The target's password, from the environment or a file.
fn password(opts: &ReplicateOptions) -> Result<Option<String>> {
    match (&opts.password_env, &opts.password_file) {
        (Some(_), Some(_)) => {
            Err(UsageError("give --password-env or --password-file, not both".into()).into())
        }
        (Some(var), None) => std::env::var(var).map(Some).map_err(|_| {
            UsageError(format!("--password-env {var}: the variable is not set")).into()
        }),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("--password-file {}: {e}", path.display())))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// The source ids of `tables` (`database.table`), from the relay's `/v1/sources`.
async fn source_ids(relay: &RelayUrl, tables: &[String]) -> Result<BTreeSet<SourceId>> {
    let answer = crate::http::get(relay, "/v1/sources", Duration::from_secs(10)).await?;
    if answer.status != 200 {
        bail!(
            "/v1/sources answered {}: {}",
            answer.status,
            answer.error_message()
        );
    }
    let body = answer.json()?;
    let empty = Vec::new();
    let sources = body["sources"].as_array().unwrap_or(&empty);
    let mut ids = BTreeSet::new();
    for wanted in tables {
        let found = sources
            .iter()
            .find(|s| s["table"].as_str() == Some(wanted.as_str()))
            .and_then(|s| s["id"].as_u64())
            .and_then(|id| u16::try_from(id).ok());
        match found {
            Some(id) => {
                ids.insert(SourceId::new(id));
            }
            None => {
                let known: Vec<&str> = sources.iter().filter_map(|s| s["table"].as_str()).collect();
                return Err(UsageError(format!(
                    "--tables: the relay captures no table {wanted}; it captures {}",
                    known.join(", ")
                ))
                .into());
            }
        }
    }
    Ok(ids)
}

/// The newest SCN the relay holds (`max_scn` of its first buffer).
async fn relay_max_scn(relay: &RelayUrl) -> Result<Option<u64>> {
    let answer = crate::http::get(relay, "/v1/status", Duration::from_secs(10)).await?;
    if answer.status != 200 {
        return Ok(None);
    }
    Ok(answer.json()?["buffers"][0]["max_scn"].as_u64())
}

/// Progress counters between two log lines, and where the replica is; kept across reconnects.
#[derive(Debug, Default)]
struct Progress {
    windows: u64,
    rows: u64,
    total_windows: u64,
    total_rows: u64,
    last_scn: Option<u64>,
    last_timestamp_ns: u64,
    /// Windows applied since the last (re)connect: a session that applied some resets the backoff.
    session_windows: u64,
}

/// Waits before reconnect attempt `attempt` (0-based): 0.5 s doubling up to 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(10))
}

/// The first connection to the target. A target that does not answer (not up yet, restarting) is
/// retried with backoff for `--connect-retry-for`; a refusal (password, grants) or a target still
/// unreachable after that stops with the error: a wrong address or password is the user's to fix.
/// `None`: shut down while waiting.
async fn first_connection(
    opts: &ReplicateOptions,
    target_opts: &target::TargetOptions,
    shutdown: &CancellationToken,
) -> Result<Option<target::Target>> {
    let deadline = Instant::now() + opts.connect_retry_for;
    let mut attempt = 0u32;
    loop {
        match target::Target::connect(target_opts, &opts.meta_db, &opts.name).await {
            Ok(t) => return Ok(Some(t)),
            Err(e) => {
                let wait = backoff(attempt);
                attempt = attempt.saturating_add(1);
                if !target::is_transient(&e) || Instant::now() + wait > deadline {
                    return Err(e).with_context(|| {
                        format!("connecting to the target {}", target_opts.dialect().name())
                    });
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "the target does not answer yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Replicates until `shutdown` is cancelled, or with `once` until caught up with the relay. A lost
/// target connection (the target restarted) is made again with backoff, and the replica resumes
/// from the checkpoint committed in the target: nothing is lost or applied twice.
pub async fn run(opts: ReplicateOptions, shutdown: CancellationToken) -> Result<()> {
    if opts.relays.is_empty() {
        return Err(UsageError("give at least one --relay URL".into()).into());
    }
    let password = password(&opts)?;
    let target_opts = target::options(&opts.to, password)?;
    let relay =
        RelayUrl::parse(&opts.relays[0]).map_err(|e| UsageError(format!("--relay: {e:#}")))?;
    if let Some(addr) = opts.metrics_listen {
        let bound = metrics::serve(addr, shutdown.clone()).await?;
        tracing::info!("replicate metrics on http://{bound}/metrics");
    }
    let target = first_connection(&opts, &target_opts, &shutdown).await?;
    let Some(target) = target else {
        return Ok(());
    };
    let mut target = Some(target);
    let mut progress = Progress::default();
    let mut attempt = 0u32;
    loop {
        let connected = match target.take() {
            Some(t) => Ok(t),
            None => target::Target::connect(&target_opts, &opts.meta_db, &opts.name).await,
        };
        let result = match connected {
            Ok(t) => {
                progress.session_windows = 0;
                session(&opts, &relay, t, &mut progress, &shutdown).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => break,
            Err(e) if target::is_transient(&e) && !shutdown.is_cancelled() => {
                if progress.session_windows > 0 {
                    attempt = 0;
                }
                let wait = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    error = %format!("{e:#}"),
                    retry_in = ?wait,
                    "target connection lost; reconnecting, then resuming from the checkpoint in the target"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                metrics::reconnected();
            }
            Err(e) => return Err(e),
        }
    }
    progress.total_windows += progress.windows;
    progress.total_rows += progress.rows;
    crate::outln!(
        "replica {}: {} windows ({} rows) applied this run, at SCN {}",
        opts.name,
        progress.total_windows,
        progress.total_rows,
        progress
            .last_scn
            .map_or_else(|| "-".to_owned(), |s| s.to_string())
    );
    Ok(())
}

/// One connection's worth of replication: loads the checkpoint from the target, starts the client
/// there and applies windows until caught up (`--once`), shut down, or an error.
async fn session(
    opts: &ReplicateOptions,
    relay: &RelayUrl,
    target: target::Target,
    progress: &mut Progress,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut replica = apply::Replica::open(target).await?;
    let checkpoint = replica.target().load_checkpoint().await?;

    let mut config = ClientConfig::with_relays(opts.relays.clone());
    config.bootstrap_servers = opts.bootstrap.clone();
    config.start = if opts.bootstrap.is_empty() {
        if checkpoint.is_none() {
            tracing::warn!(
                "no --bootstrap: a new replica starts from the oldest change the relay holds; rows \
                 written before it are missing (give --bootstrap URL to start from a snapshot)"
            );
        }
        StartPosition::Oldest
    } else {
        StartPosition::Snapshot
    };
    if !opts.tables.is_empty() {
        let ids = source_ids(relay, &opts.tables).await?;
        config.filter = FilterSpec::new(Some(ids), Vec::new(), Default::default())
            .map_err(|e| UsageError(format!("--tables: {e}")))?;
    }
    match &checkpoint {
        Some(cp) => {
            tracing::info!(replica = %opts.name, scn = %cp.window_scn, mode = ?cp.mode, "resuming from the target's checkpoint")
        }
        None => tracing::info!(replica = %opts.name, "new replica: no checkpoint in the target"),
    }
    let store = Arc::new(MemoryCheckpointStore::starting_at(checkpoint.clone()));
    let client = DatabusClient::new(config, store).context("configuring the client")?;
    // Dropped at the end of the session (a reconnect starts a new stream at the target's checkpoint).
    let stream_stop = shutdown.child_token();
    let _stop_on_drop = stream_stop.clone().drop_guard();
    let mut stream = client.stream(stream_stop).await?;

    if let Some(cp) = &checkpoint {
        progress.last_scn = Some(cp.window_scn.get());
    }
    // Following the relay (not inside a bootstrap): --once may stop only then.
    let mut online = match &checkpoint {
        Some(c) => c.mode == ConsumptionMode::Online,
        None => opts.bootstrap.is_empty(),
    };
    metrics::online(online);
    let mut last_check = Instant::now();
    let mut last_log = Instant::now();
    let mut idle_since = Instant::now();
    let tick = Duration::from_millis(500);
    // An item taken from the stream while gathering a group of windows, handled next.
    let mut next = None;
    loop {
        let item = match next.take() {
            Some(item) => Ok(item),
            None => tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                item = tokio::time::timeout(tick, stream.next_item()) => item,
            },
        };
        match item {
            Err(_elapsed) => {}
            Ok(None) => {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                bail!("the change stream ended");
            }
            Ok(Some(Err(e))) => return Err(e).context("following the change stream"),
            Ok(Some(Ok(StreamItem::Transition(t)))) => {
                idle_since = Instant::now();
                match &t {
                    Transition::StartBootstrap { info, checkpoint } => {
                        online = false;
                        if info.since_scn.is_none() {
                            let n = replica.clear_for_snapshot(checkpoint).await?;
                            tracing::info!(
                                tables = n,
                                "full snapshot: emptied the replicated tables first"
                            );
                        } else {
                            replica.store_transition(checkpoint).await?;
                            tracing::info!(since = ?info.since_scn, "bootstrap: a delta since the checkpoint");
                        }
                    }
                    Transition::StartCatchup { target, checkpoint } => {
                        replica.store_transition(checkpoint).await?;
                        tracing::info!(target = %target, "snapshot loaded; catching up");
                    }
                    Transition::EndBootstrap { scn, checkpoint } => {
                        replica.store_transition(checkpoint).await?;
                        online = true;
                        progress.last_scn = Some(scn.get());
                        tracing::info!(scn = %scn, "bootstrap done; following the relay");
                    }
                }
                metrics::online(online);
                stream.commit_transition(&t).await?;
            }
            Ok(Some(Ok(StreamItem::Window(window)))) => {
                idle_since = Instant::now();
                // The windows the client already holds go into the same target transaction.
                let (group, item) = gather(&mut stream, window);
                next = item;
                let applied = replica.apply_group(&group).await?;
                let last = group.last().context("a group holds its first window")?;
                stream.commit(last).await?;
                online = last.phase() == Phase::Online;
                progress.last_scn = Some(last.scn().get());
                progress.last_timestamp_ns = last.timestamp_ns();
                progress.windows += group.len() as u64;
                progress.session_windows += group.len() as u64;
                progress.rows += applied.upserts + applied.deletes;
                metrics::windows(group.len() as u64, &applied, last.scn().get());
                metrics::lag(lag_of(progress.last_timestamp_ns));
                metrics::online(online);
            }
        }
        if last_log.elapsed() >= opts.progress_every {
            let secs = last_log.elapsed().as_secs_f64();
            let lag = lag_of(progress.last_timestamp_ns);
            metrics::lag(lag);
            progress.total_windows += progress.windows;
            progress.total_rows += progress.rows;
            tracing::info!(
                scn = ?progress.last_scn,
                online,
                windows_per_s = format!("{:.0}", progress.windows as f64 / secs),
                rows_per_s = format!("{:.0}", progress.rows as f64 / secs),
                windows = progress.total_windows,
                rows = progress.total_rows,
                lag = lag.map_or_else(|| "-".to_owned(), |l| format!("{:.1}s", l.as_secs_f64())),
                "replicating"
            );
            progress.windows = 0;
            progress.rows = 0;
            last_log = Instant::now();
        }
        if opts.once && online && last_check.elapsed() >= tick {
            last_check = Instant::now();
            // Caught up: the relay holds nothing newer than what was applied. With --tables the
            // relay's newest windows may all be filtered out: two quiet seconds count too.
            let quiet = idle_since.elapsed() >= Duration::from_secs(2);
            let max = relay_max_scn(relay).await.ok().flatten();
            let caught_up = matches!((max, progress.last_scn), (Some(max), Some(at)) if at >= max)
                || (quiet && (max.is_none() || !opts.tables.is_empty()));
            if caught_up {
                tracing::info!(scn = ?progress.last_scn, "caught up with the relay (--once)");
                return Ok(());
            }
        }
    }
}

/// At most this many windows are applied in one target transaction.
const MAX_GROUP_WINDOWS: usize = 1000;
/// ... and windows of at most about this many bytes.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// `first` and the windows that follow it without waiting (the client fetched them already), up
/// to [`MAX_GROUP_WINDOWS`] and [`MAX_GROUP_BYTES`]; a phase change or error met on the way is
/// handed back to be handled after the group.
fn gather(
    stream: &mut databus_client::WindowStream,
    first: databus_client::Window,
) -> (
    Vec<databus_client::Window>,
    Option<Option<Result<StreamItem, databus_client::ClientError>>>,
) {
    use futures::FutureExt;
    let mut bytes = first.bytes();
    let mut group = vec![first];
    while group.len() < MAX_GROUP_WINDOWS && bytes < MAX_GROUP_BYTES {
        // `next_item` only polls the client's channel: taking it when ready loses nothing.
        match stream.next_item().now_or_never() {
            None => break,
            Some(Some(Ok(StreamItem::Window(window)))) => {
                bytes += window.bytes();
                group.push(window);
            }
            Some(other) => return (group, Some(other)),
        }
    }
    (group, None)
}

/// Now minus a commit time in ns since the epoch.
fn lag_of(timestamp_ns: u64) -> Option<Duration> {
    if timestamp_ns == 0 {
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    now.checked_sub(Duration::from_nanos(timestamp_ns))
}
