//! The `databus` binary: parses the command line, sets up logging, and calls into the libraries.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use databus_cli::http::RelayUrl;
use databus_cli::tail::{Next, Start, TailOptions};
use databus_cli::{
    UsageError, bootstrap_cmd, check, exit, quickstart, relay_cmd, replicate, status, tail,
    tail_bootstrap,
};
use databus_core::Scn;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: the relay's ingest allocates on one thread (the connector's
/// reader) and frees on another (the pipeline), which cost glibc's malloc 2-3x the relay's CPU. Built
/// without transparent huge pages (`no_thp`), which raised the RSS of many connections by half
/// (docs/BENCHMARKS.md, "Ingest on two cores").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime error (connection lost, relay or database failure)
  2  usage or configuration error (bad flags, unknown or invalid config key)
  3  check-source found settings or grants to fix
Errors print their cause chain once on stderr, then the fix when one is known (docs/operations.md).

Logging: RUST_LOG (e.g. RUST_LOG=debug) or --log-level; logs go to stderr, data to stdout.";

/// databus: change data capture from MySQL/MariaDB, in the design of LinkedIn's Databus.
#[derive(Debug, Parser)]
#[command(name = "databus", version, after_help = EXIT_CODES)]
struct Cli {
    /// Log level for stderr (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a relay: capture the configured sources into event buffers and serve them over HTTP.
    Relay(RelayArgs),
    /// Run a bootstrap server role (producer, applier, server, seed, or all in one) from bootstrap.toml.
    Bootstrap(BootstrapArgs),
    /// Check that a source database is ready for capture (MariaDB: binlog settings, grants;
    /// PostgreSQL: wal_level, replication privilege, primary keys and REPLICA IDENTITY).
    CheckSource(CheckArgs),
    /// Follow a relay and print its change events as JSON lines (like kcat; pipe into jq).
    Tail(TailArgs),
    /// Show a relay's buffers: SCN ranges, fill, ingest state and lag.
    Status(StatusArgs),
    /// Run the whole pipeline against a private MariaDB and show changes flowing, then clean up.
    Quickstart(QuickstartArgs),
    /// Keep a typed replica of the captured tables in a MariaDB or PostgreSQL target, each source transaction
    /// applied with the replica's checkpoint in one target transaction (docs/replicate.md).
    Replicate(ReplicateArgs),
}

#[derive(Debug, Args)]
struct ReplicateArgs {
    /// A configuration file with these settings (TOML; docs/replicate.example.toml); flags given
    /// on the command line override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the effective settings (file, flags and defaults) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Relay base URL; repeat for failover between relays.
    #[arg(long = "relay")]
    relays: Vec<String>,
    /// Bootstrap server base URL: a new replica starts from its consistent snapshot, and one that
    /// fell off the relay catches up through it. Repeatable.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// The target, without a password: mysql://user@host:3306/ (MariaDB) or
    /// postgres://user@host:5432/database (PostgreSQL).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Environment variable holding the target user's password.
    #[arg(long, value_name = "NAME")]
    password_env: Option<String>,
    /// File holding the target user's password.
    #[arg(long, value_name = "PATH", conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Only these tables, database.table, comma-separated (default: every table of the relay).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Exit once caught up with the relay.
    #[arg(long)]
    once: bool,
    /// The replica's name: its row in databus_replica_checkpoint (several replicas may share a
    /// target). Default: replica.
    #[arg(long)]
    name: Option<String>,
    /// Database of the replica's own tables (checkpoint, replicated schemas) in the target.
    /// Default: databus.
    #[arg(long)]
    meta_db: Option<String>,
    /// How often progress and lag are logged. Default: 5s.
    #[arg(long, value_parser = humantime_duration)]
    progress_every: Option<Duration>,
    /// Serve Prometheus /metrics (applied windows and rows, last SCN, lag) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// How long a target that does not answer at start (not up yet, restarting) is retried before
    /// giving up; once running, a lost target is retried until it answers. Default: 30s.
    #[arg(long, value_parser = humantime_duration)]
    connect_retry_for: Option<Duration>,
}

impl ReplicateArgs {
    /// The flags' settings over the file's (if any).
    fn settings(self) -> anyhow::Result<(replicate::config::ReplicateSettings, bool, bool)> {
        let file = match &self.config {
            Some(path) => replicate::config::ReplicateSettings::load(path)?,
            None => Default::default(),
        };
        let flags = replicate::config::ReplicateSettings {
            relays: self.relays,
            bootstrap: self.bootstrap,
            to: self.to,
            password_env: self.password_env,
            password_file: self.password_file,
            tables: self.tables,
            name: self.name,
            meta_db: self.meta_db,
            progress_every: self.progress_every,
            metrics_listen: self.metrics_listen,
            connect_retry_for: self.connect_retry_for,
        };
        Ok((flags.over(file), self.once, self.print_config))
    }
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// The relay configuration file (TOML; see docs/relay.example.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Print the effective configuration (defaults filled in, secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Listen address, overriding `http.listen` of the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct BootstrapArgs {
    /// Which role to run.
    #[arg(value_enum)]
    role: BootstrapRole,
    /// The bootstrap configuration file (TOML; see docs/operations.md, "Bootstrap server").
    #[arg(long, short)]
    config: PathBuf,
    /// Print the effective configuration (defaults filled in, secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Listen address of the server (server, all), overriding `http.listen` of the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve Prometheus `/metrics` on this address (producer, applier, seed; the server and `all`
    /// serve it on their HTTP listener).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Seeding progress: seconds between progress log lines when stderr is not a terminal (on a
    /// terminal one line is redrawn in place).
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    progress_interval: Duration,
    /// With `pins`: remove every pin (bootstraps in progress then restart if the log they need is
    /// trimmed meanwhile).
    #[arg(long)]
    drop: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BootstrapRole {
    /// Producer, applier, retention cleaner and server in one process (seeding first when the file has a `seed` section).
    All,
    /// Copy the relay's windows into the log store.
    Producer,
    /// Apply the log store to the snapshot store.
    Applier,
    /// Serve snapshots and consolidated deltas over HTTP.
    Server,
    /// Load a consistent snapshot of the source database, then exit.
    Seed,
    /// List the log's retention pins (bootstraps in progress); with --drop, remove them.
    Pins,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Check the sources of this relay configuration file, each with its own connector settings
    /// (instead of --url).
    #[arg(long, conflicts_with_all = ["url", "password_env", "kind", "table"])]
    config: Option<PathBuf>,
    /// With --config: only this source (default: every database source of the file).
    #[arg(long, requires = "config")]
    source: Option<String>,
    /// The source's kind, as `kind` in a relay.toml `[sources.connector]` table.
    #[arg(long, default_value = "mariadb")]
    kind: String,
    /// Connection URL of the server, without the password: mysql://repl@db.example:3306, or for
    /// postgres postgres://repl@db.example:5432/database.
    #[arg(long, required_unless_present = "config")]
    url: Option<String>,
    /// A captured table, `database.table` (postgres: `schema.table`; required there: its primary key
    /// and REPLICA IDENTITY are checked). Repeat for several.
    #[arg(long)]
    table: Vec<String>,
    /// Environment variable holding the password (instead of putting it in the URL).
    #[arg(long)]
    password_env: Option<String>,
    /// Server id the relay's replication connection will use (checked against the server's).
    #[arg(long, default_value_t = 1001)]
    server_id: u32,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// The relay's base URL.
    #[arg(long, default_value = "http://127.0.0.1:11140")]
    relay: String,
    /// Source filter: logical source ids and ranges, e.g. 1,2,5-7.
    #[arg(long)]
    sources: Option<String>,
    /// Key partition filter, e.g. mod:4:0 (bucket 0 of 4) or range:1000:0,2; may repeat (ORed).
    #[arg(long)]
    partition: Vec<String>,
    /// The buffer to read, when the relay has several.
    #[arg(long)]
    buffer: Option<String>,
    /// Start at the first window whose SCN is at least N.
    #[arg(long, value_name = "N", conflicts_with_all = ["from_now", "bootstrap"])]
    from_scn: Option<u64>,
    /// Start after the newest window the relay holds now (default: the oldest it holds).
    #[arg(long, conflicts_with = "bootstrap")]
    from_now: bool,
    /// Tail through this bootstrap server (snapshot or delta, catch-up, then the relay); each line
    /// gets a "phase": snapshot (a row's state), catchup or online (changes).
    #[arg(long, value_name = "URL")]
    bootstrap: Option<String>,
    /// With --bootstrap: start from a consistent snapshot, or from SCN N (served by the relay while
    /// it holds N, else as a delta of the rows changed since, from the bootstrap server).
    #[arg(
        long,
        value_name = "snapshot|scn:N",
        requires = "bootstrap",
        default_value = "snapshot"
    )]
    from: databus_cli::tail_bootstrap::BootstrapStart,
    /// With --bootstrap: no progress lines on stderr.
    #[arg(long, requires = "bootstrap")]
    no_progress: bool,
    /// Output format (JSON lines).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Exit after printing this many events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How `tail` and `status` reach a server that uses TLS or tokens.
#[derive(Debug, Args)]
struct ClientArgs {
    /// Bearer token sent to the server (prefer the DATABUS_TOKEN environment variable: a flag is
    /// visible to other users in the process list).
    #[arg(long, env = "DATABUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA (or the self-signed certificate) of an https:// server.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    /// The CA file and token; a malformed token is a usage error.
    fn options(&self) -> Result<databus_http::ClientOptions> {
        let token = self
            .token
            .as_deref()
            .map(databus_http::Token::new)
            .transpose()
            .map_err(|e| UsageError(format!("--token: {e}")))?;
        Ok(databus_http::ClientOptions {
            ca_cert: self.ca_cert.clone(),
            token,
        })
    }

    /// The server URL with these settings; mistakes are usage errors.
    fn url(&self, flag: &str, url: &str) -> Result<RelayUrl> {
        RelayUrl::with_options(url, &self.options()?)
            .map_err(|e| UsageError(format!("{flag}: {e:#}")).into())
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One JSON object per event, per line.
    Json,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The relay's base URL.
    #[arg(long, default_value = "http://127.0.0.1:11140")]
    relay: String,
    /// Show this bootstrap server instead (its health, roles, log and snapshot).
    #[arg(long, value_name = "URL")]
    bootstrap: Option<String>,
    /// Print the relay's raw status JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct QuickstartArgs {
    /// Orders the workload writes (customers, updates and a few deletes are added around them).
    #[arg(long, default_value_t = 24)]
    rows: u32,
    /// The longest the quickstart may run before giving up.
    #[arg(long, default_value = "2m", value_parser = humantime_duration)]
    duration: Duration,
    /// After the demo, keep MariaDB, the relay (127.0.0.1:11140 when free) and the bootstrap server
    /// (127.0.0.1:7100 when free) running with a slow workload, and print the commands that run the
    /// client examples against them; Ctrl-C stops and cleans up.
    #[arg(long)]
    keep_running: bool,
    /// The kind of source database to run the demo on.
    #[arg(long, value_enum, default_value_t = quickstart::QuickstartSource::Mariadb)]
    source: quickstart::QuickstartSource,
}

/// A duration as the configuration files write them (`30s`, `2m`, `1h 30m`, `500ms`): the same parser,
/// so the command line and the files agree, and an overflowing value is an error, not a panic.
/// A bare number is seconds, as before.
fn humantime_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 30s, 2m or 1h 30m: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        // The quickstart's output is the show; keep library logs to warnings.
        Command::Quickstart(_) if cli.log_level == "info" => "warn".to_owned(),
        _ => cli.log_level.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", databus_cli::report::render(&e));
            ExitCode::from(databus_cli::exit_code_of(&e))
        }
    }
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        t.cancel();
    });
    token
}

async fn run(command: Command) -> Result<u8> {
    match command {
        Command::Relay(args) => {
            let (raw, mut config) = relay_cmd::load(&args.config)?;
            if let Some(listen) = args.listen {
                config.http.listen = listen;
            }
            if args.print_config {
                databus_cli::out!("{}", relay_cmd::render_effective(&raw, config.http.listen));
                return Ok(exit::OK);
            }
            relay_cmd::run(config, shutdown_on_signal()).await?;
            Ok(exit::OK)
        }
        Command::Bootstrap(args) => {
            let (raw, mut config) = bootstrap_cmd::load(&args.config)?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if args.print_config {
                databus_cli::out!("{}", bootstrap_cmd::render_effective(&raw, config.listen));
                return Ok(exit::OK);
            }
            let with_server = matches!(args.role, BootstrapRole::All | BootstrapRole::Server);
            if with_server && args.metrics_listen.is_some() {
                return Err(UsageError(
                    "--metrics-listen is for producer, applier and seed; the server serves /metrics on http.listen".into(),
                )
                .into());
            }
            if with_server || args.metrics_listen.is_some() {
                databus_bootstrap::metrics::install()?;
            }
            // A role refusing its configuration or database (already seeded, missing section) is a
            // configuration error (exit 2), like a bad file.
            let config_error = |e: databus_bootstrap::BootstrapError| -> anyhow::Error {
                match e {
                    databus_bootstrap::BootstrapError::Config(_) => {
                        UsageError(e.to_string()).into()
                    }
                    other => other.into(),
                }
            };
            let shutdown = shutdown_on_signal();
            let metrics = match args.metrics_listen {
                Some(addr) => {
                    Some(bootstrap_cmd::serve_metrics(&config, addr, shutdown.clone()).await?)
                }
                None => None,
            };
            let result = match args.role {
                BootstrapRole::All => databus_bootstrap::run_all(config, shutdown.clone()).await,
                BootstrapRole::Producer => {
                    databus_bootstrap::run_producer(config, shutdown.clone()).await
                }
                BootstrapRole::Applier => {
                    databus_bootstrap::run_applier(config, shutdown.clone()).await
                }
                BootstrapRole::Server => {
                    databus_bootstrap::run_server(config, shutdown.clone()).await
                }
                BootstrapRole::Pins => {
                    bootstrap_cmd::pins(&config, args.drop).map(|text| databus_cli::out!("{text}"))
                }
                BootstrapRole::Seed => {
                    let mut progress = bootstrap_cmd::SeedProgress::new(args.progress_interval);
                    let report =
                        databus_bootstrap::run_seed_with(&config, |t| progress.tick(&t)).await;
                    progress.finish();
                    report.map(|r| databus_cli::outln!("{r}"))
                }
            };
            result.map_err(config_error)?;
            shutdown.cancel();
            if let Some(m) = metrics {
                let _ = m.await;
            }
            Ok(exit::OK)
        }
        Command::CheckSource(args) => {
            let configs = match (&args.config, &args.url) {
                (Some(path), _) => {
                    let (_, validated) = relay_cmd::load(path)?;
                    check::sources_of(&validated, args.source.as_deref())?
                }
                (None, Some(url)) => {
                    let mut config = check::connector_config(
                        &args.kind,
                        url,
                        args.password_env.as_deref(),
                        args.server_id,
                        &args.table,
                    )?;
                    config
                        .resolve_secrets(&|var| std::env::var(var).ok())
                        .map_err(|e| UsageError(format!("--password-env: {e}")))?;
                    vec![config]
                }
                (None, None) => return Err(UsageError("give --url or --config".into()).into()),
            };
            let mut all_ok = true;
            for config in &configs {
                let checks = check::check(config).await?;
                let (text, ok) = check::render(&config.describe(), &checks);
                databus_cli::out!("{text}");
                all_ok &= ok;
            }
            Ok(if all_ok {
                exit::OK
            } else {
                exit::SOURCE_CHECK_FAILED
            })
        }
        Command::Tail(args) => {
            let Format::Json = args.format;
            let signal = shutdown_on_signal();
            let never = CancellationToken::new();
            // Buffered, flushed after each response (or window) rather than after each event: a
            // catch-up of a million events is not a million writes.
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let print = |event: Option<&serde_json::Value>| match match event {
                Some(event) => writeln!(out, "{event}"),
                None => out.flush(),
            } {
                Ok(()) => Ok(Next::More),
                // The reader went away (`| head`): stop quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Next::Stop),
                Err(e) => Err(e).context("writing to stdout"),
            };
            if let Some(bootstrap) = args.bootstrap {
                let opts = tail_bootstrap::BootstrapTailOptions {
                    relay: args.relay,
                    bootstrap,
                    sources: args.sources,
                    partitions: args.partition,
                    buffer: args.buffer,
                    start: args.from,
                    max_events: args.max_events,
                    progress_every: (!args.no_progress).then_some(Duration::from_secs(2)),
                    client: args.client.options()?,
                };
                tail_bootstrap::tail(&opts, &signal, print).await?;
                return Ok(exit::OK);
            }
            let opts = TailOptions {
                relay: args.client.url("--relay", &args.relay)?,
                sources: args.sources,
                partitions: args.partition,
                buffer: args.buffer,
                start: match (args.from_scn, args.from_now) {
                    (Some(n), _) => Start::FromScn(Scn::new(n)),
                    (None, true) => Start::Now,
                    (None, false) => Start::Beginning,
                },
                max_events: args.max_events,
                wait: Duration::from_secs(10),
            };
            let follow = tail::tail(&opts, &never, print);
            // Ctrl-C stops at once, even in the middle of a long poll.
            tokio::select! {
                result = follow => { result?; }
                _ = signal.cancelled() => {}
            }
            Ok(exit::OK)
        }
        Command::Status(args) if args.bootstrap.is_some() => {
            let url = args.bootstrap.as_deref().unwrap_or_default();
            let server = args.client.url("--bootstrap", url)?;
            let st = status::fetch_bootstrap(&server).await?;
            if args.json {
                databus_cli::outln!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                databus_cli::out!("{}", status::render_bootstrap(&server, &st));
            }
            Ok(exit::OK)
        }
        Command::Status(args) => {
            let relay = args.client.url("--relay", &args.relay)?;
            let (st, sources) = status::fetch(&relay).await?;
            if args.json {
                databus_cli::outln!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                databus_cli::out!("{}", status::render(&relay, &st, &sources));
            }
            Ok(exit::OK)
        }
        Command::Replicate(args) => {
            let (settings, once, print_config) = args.settings()?;
            if print_config {
                databus_cli::out!("{}", toml::to_string(&settings.with_defaults())?);
                return Ok(exit::OK);
            }
            replicate::run(settings.into_options(once)?, shutdown_on_signal()).await?;
            Ok(exit::OK)
        }
        Command::Quickstart(args) => {
            quickstart::run(
                quickstart::QuickstartOptions {
                    rows: args.rows,
                    duration: args.duration,
                    pace: Duration::from_millis(150),
                    keep_running: args.keep_running,
                    source: args.source,
                },
                shutdown_on_signal(),
            )
            .await?;
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_configuration_files() {
        assert_eq!(humantime_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(humantime_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(humantime_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(humantime_duration("7"), Ok(Duration::from_secs(7)));
        assert!(humantime_duration("307445734561825861m").is_err());
        assert!(humantime_duration("soon").is_err());
    }
}
