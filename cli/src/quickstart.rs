//! `databus quickstart`: the whole pipeline on this machine in under a minute, then cleaned away.
//!
//! It starts a private MariaDB (binlog in ROW format), or with `--source postgres` a private PostgreSQL
//! (`wal_level = logical`), in a temporary directory on a free port, creates a
//! small shop schema and a replication user, starts a relay and a bootstrap server in this process on
//! free ports, follows the relay
//! the way `databus tail` does and prints each change as it arrives while a small write workload runs,
//! then prints how to point databus at your own database. Everything it started is stopped and its
//! temporary directories are removed before it returns.
//!
//! With `--keep-running` it does not stop after the demo: the database, the relay (on 127.0.0.1:11140 when
//! free) and the bootstrap server (127.0.0.1:7100 when free) keep running while a slow workload keeps
//! writing, and it prints their URLs and the exact commands that run the client examples
//! (`client-lib/examples`) against them. Ctrl-C (or SIGTERM) stops and removes everything.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::demo_db::DemoDb;
pub use crate::demo_db::QuickstartSource;
use crate::http::{AnswerJson, RelayUrl, get};
use crate::tail::{Next, Start, TailOptions, tail};

/// Quickstart settings.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    /// Orders written by the workload (customers, updates and deletes are added around them).
    pub rows: u32,
    /// The longest the whole run may take before it gives up.
    pub duration: Duration,
    /// Pause between workload transactions (so the changes are seen arriving).
    pub pace: Duration,
    /// After the demo, keep everything running with a slow workload until interrupted.
    pub keep_running: bool,
    /// The kind of source database the demo runs on.
    pub source: QuickstartSource,
}

/// The relay's port with `--keep-running` (the examples' default `--relay`), when free.
pub const KEEP_RUNNING_RELAY_PORT: u16 = 11140;
/// The bootstrap server's port with `--keep-running` (its default listen port), when free.
pub const KEEP_RUNNING_BOOTSTRAP_PORT: u16 = 7100;

/// Binds `127.0.0.1:port` if `preferred` and the port is free, else a free port.
async fn bind(port: u16, preferred: bool, what: &str) -> Result<tokio::net::TcpListener> {
    if preferred && let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        return Ok(l);
    }
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding 127.0.0.1:0 for the {what}"))
}

struct Style {
    on: bool,
}

impl Style {
    fn detect() -> Style {
        Style {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
    fn step(&self, n: u32, text: &str) {
        crate::outln!("{} {}", self.cyan(&format!("[{n}/6]")), self.bold(text));
    }
}

const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia",
];

/// Runs the quickstart; returns after everything it started is stopped and removed — also when it
/// fails or is interrupted (Ctrl-C, SIGTERM): the private database is killed and the temporary
/// directories are removed on every path.
pub async fn run(opts: QuickstartOptions, interrupt: CancellationToken) -> Result<()> {
    let started = Instant::now();
    let s = Style::detect();
    crate::outln!(
        "\n{}  change data capture from a private {}, end to end\n",
        s.bold("databus quickstart"),
        source_name(opts.source)
    );
    let (events, transactions) = body(&opts, &s, started, &interrupt).await?;
    crate::outln!(
        "\n{} {events} change events from {transactions} transactions, in {:.1} s; \
         {}, relay and bootstrap server stopped, temporary directories removed.\n",
        s.green("done:"),
        started.elapsed().as_secs_f64(),
        source_name(opts.source)
    );
    print_next_steps(&s);
    Ok(())
}

const INTERRUPTED: &str =
    "interrupted; the private database and the relay were stopped and their files removed";

fn source_name(source: QuickstartSource) -> &'static str {
    match source {
        QuickstartSource::Mariadb => "MariaDB",
        QuickstartSource::Postgres => "PostgreSQL",
    }
}

async fn body(
    opts: &QuickstartOptions,
    s: &Style,
    started: Instant,
    interrupt: &CancellationToken,
) -> Result<(u64, u64)> {
    let deadline = started + opts.duration;
    let step = match opts.source {
        QuickstartSource::Mariadb => "starting a private MariaDB with binlog_format=ROW",
        QuickstartSource::Postgres => "starting a private PostgreSQL with wal_level=logical",
    };
    s.step(1, step);
    // Dropping the start future on an interrupt kills what it started and removes its directory.
    let db = tokio::select! {
        db = DemoDb::start(opts.source, opts.duration) => {
            db.with_context(|| format!(
                "cannot start a private {} (install it with scripts/setup.sh)",
                source_name(opts.source)
            ))?
        }
        _ = interrupt.cancelled() => bail!(INTERRUPTED),
    };
    crate::outln!(
        "      {} on 127.0.0.1:{}, data in {}",
        s.dim(db.server()),
        db.port(),
        db.dir().display()
    );

    s.step(2, "creating the sample schema: shop.customers, shop.orders");
    let granted = db.create_schema_and_user().await?;
    crate::outln!("      user {} with {granted}", s.dim("databus"));

    s.step(3, "starting a relay in this process");
    let work = tempfile::Builder::new()
        .prefix("databus-quickstart-")
        .tempdir()
        .context("creating a temporary directory")?;
    let password_file = work.path().join("password");
    std::fs::write(&password_file, crate::demo_db::PASSWORD)
        .context("writing the password file")?;
    let toml = relay_toml(
        &db.connector_table(&password_file),
        &work.path().join("state"),
    );
    let config = databus_relay::RelayConfig::from_toml(&toml)
        .and_then(|c| c.validate())
        .context("the quickstart's relay configuration")?;
    let listener = bind(KEEP_RUNNING_RELAY_PORT, opts.keep_running, "relay").await?;
    let relay = RelayUrl::parse(&format!("http://{}", listener.local_addr()?))?;
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        stop_relay.clone(),
    ));
    let bootstrap_listener = bind(
        KEEP_RUNNING_BOOTSTRAP_PORT,
        opts.keep_running,
        "bootstrap server",
    )
    .await?;
    let bootstrap = RelayUrl::parse(&format!("http://{}", bootstrap_listener.local_addr()?))?;
    let bootstrap_config = databus_bootstrap::BootstrapConfig::from_toml(&format!(
        "db_path = {:?}\n[relay]\nurl = \"{relay}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
        work.path().join("bootstrap.sqlite").display().to_string()
    ))
    .and_then(|c| c.validate())
    .context("the quickstart's bootstrap configuration")?;
    let bootstrap_task = tokio::spawn(databus_bootstrap::run_all_on(
        bootstrap_config,
        bootstrap_listener,
        stop_relay.clone(),
    ));
    let demo = async {
        wait_streaming(&relay, deadline).await?;
        crate::outln!(
            "      relay {} follows the {} of 127.0.0.1:{}, state in {}",
            s.dim(&relay.to_string()),
            match opts.source {
                QuickstartSource::Mariadb => "binlog",
                QuickstartSource::Postgres => "logical replication slot",
            },
            db.port(),
            work.path().display()
        );
        s.step(4, "starting a bootstrap server in this process");
        crate::outln!(
            "      bootstrap {} copies the relay's windows into SQLite and keeps a snapshot,",
            s.dim(&bootstrap.to_string())
        );
        crate::outln!("      for consumers that fall behind what the relay's memory holds");
        let tables = source_tables(&relay).await?;
        let shown = show(&db, &relay, &tables, opts, deadline, s).await?;
        let (status, sources) = crate::status::fetch(&relay).await?;
        crate::outln!(
            "\n{}",
            s.bold("the relay's view (what `databus status` prints)")
        );
        for line in crate::status::render(&relay, &status, &sources).lines() {
            if line.is_empty() {
                crate::outln!();
            } else {
                crate::outln!("      {line}");
            }
        }
        let target = status["buffers"][0]["max_scn"].as_u64().unwrap_or(0);
        let boot = wait_bootstrap(&bootstrap, target, deadline).await?;
        crate::outln!(
            "\n{}",
            s.bold("the bootstrap server's view (GET /v1/status)")
        );
        crate::outln!(
            "      log         {} windows, {} events, SCN {}..={}",
            boot["log_windows"],
            boot["log_events"],
            boot["log_first_scn"],
            boot["log_last_scn"]
        );
        crate::outln!(
            "      snapshot    {} keys (deleted rows kept as tombstones), applied through SCN {}",
            boot["snapshot_rows"],
            boot["applied_scn"]
        );
        anyhow::Ok(shown)
    };
    // On an interrupt the demo is dropped, and the cleanup below runs all the same.
    let outcome = tokio::select! {
        outcome = demo => outcome,
        _ = interrupt.cancelled() => Err(anyhow::anyhow!(INTERRUPTED)),
    };
    let outcome = match outcome {
        Ok(shown) if opts.keep_running => {
            keep_running(&db, &relay, &bootstrap, work.path(), opts, s, interrupt)
                .await
                .map(|transactions| (shown.0, shown.1 + transactions))
        }
        other => other,
    };

    // The relay and the bootstrap server stop (and persist their state) before their directory and
    // the database go away.
    stop_relay.cancel();
    match bootstrap_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "bootstrap server stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "bootstrap task failed"),
    }
    match relay_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "relay stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "relay task failed"),
    }
    drop(db);
    drop(work);
    outcome
}

/// `--keep-running`: prints the URLs and the examples' commands, then writes a slow workload until
/// `interrupt`; returns the transactions written.
async fn keep_running(
    db: &DemoDb,
    relay: &RelayUrl,
    bootstrap: &RelayUrl,
    work: &std::path::Path,
    opts: &QuickstartOptions,
    s: &Style,
    interrupt: &CancellationToken,
) -> Result<u64> {
    let state = |name: &str| work.join(name).display().to_string();
    crate::outln!(
        "\n{}",
        s.bold(&format!(
            "still running (--keep-running): {}, the relay and the bootstrap server",
            db.name()
        ))
    );
    crate::outln!("      relay       {relay}");
    crate::outln!("      bootstrap   {bootstrap}");
    crate::outln!(
        "      {:<11} {} (tables shop.customers = source 1, shop.orders = source 2)",
        db.name(),
        db.admin_url()
    );
    crate::outln!(
        "      a slow workload keeps writing (one transaction every {:.1} s); Ctrl-C stops and removes everything",
        (opts.pace * 6).as_secs_f64()
    );
    crate::outln!(
        "\n{}",
        s.bold(
            "run the client examples against it (from the databus-rs checkout, in another terminal)"
        )
    );
    for (what, command) in [
        (
            "a tantivy search index (its checkpoint in its commits), from a snapshot of the bootstrap server:",
            format!(
                "cargo run -p databus-client --example search_indexer -- --relay {relay} --bootstrap {bootstrap} --index {}",
                state("search_index")
            ),
        ),
        (
            "a Redis cache invalidated in commit order, from now on (start a Redis first: \
             redis-server --port 6379 --save '' --appendonly no):",
            format!(
                "cargo run -p databus-client --example cache_invalidator -- --relay {relay} --redis redis://127.0.0.1:6379"
            ),
        ),
        (
            "a SQLite replica with its checkpoint in the same transaction:",
            format!(
                "cargo run -p databus-client --example replica -- --relay {relay} --bootstrap {bootstrap} --checkpoint {}",
                state("replica.sqlite")
            ),
        ),
        (
            "a typed replica in a MariaDB of yours (docs/replicate.md), from a snapshot, then following:",
            format!(
                "REPLICA_PW=... databus replicate --relay {relay} --bootstrap {bootstrap} \
                 --to mysql://replica@127.0.0.1:3306/ --password-env REPLICA_PW"
            ),
        ),
        (
            "or in a PostgreSQL of yours (each source database becomes a schema of `replica`):",
            format!(
                "REPLICA_PW=... databus replicate --relay {relay} --bootstrap {bootstrap} \
                 --to postgres://replica@127.0.0.1:5432/replica --password-env REPLICA_PW"
            ),
        ),
        (
            "the raw stream:",
            format!("databus tail --relay {relay} --from-now"),
        ),
    ] {
        crate::outln!("      {}", s.dim(what));
        crate::outln!("        {command}");
    }
    crate::outln!();
    tokio::select! {
        r = slow_workload(db, opts) => r,
        _ = interrupt.cancelled() => Ok(0),
    }
}

/// Writes one transaction every `6 * pace` forever (orders after the demo's, updates, a delete now
/// and then); returns only on an error.
async fn slow_workload(db: &DemoDb, opts: &QuickstartOptions) -> Result<u64> {
    let mut session = db
        .session()
        .await
        .context("connecting for the slow workload")?;
    let customers = opts.rows.div_ceil(3).max(1);
    let mut n = 0u64;
    loop {
        // Each new order is inserted, paid, then shipped (or deleted), one transaction each.
        let (id, step) = (u64::from(opts.rows) + 1 + n / 3, n % 3);
        n += 1;
        let sql = match step {
            0 => format!(
                "INSERT INTO shop.orders (id, customer_id, total, status) VALUES ({id}, {}, {}, 'new')",
                1 + id % u64::from(customers),
                total(id)
            ),
            1 => format!("UPDATE shop.orders SET status = 'paid' WHERE id = {id}"),
            _ if id % 4 == 0 => format!("DELETE FROM shop.orders WHERE id = {id}"),
            _ => format!("UPDATE shop.orders SET status = 'shipped' WHERE id = {id}"),
        };
        session
            .transaction(&[sql])
            .await
            .context("writing the slow workload")?;
        tokio::time::sleep(opts.pace * 6).await;
    }
}

/// An order's total, a decimal literal.
fn total(id: u64) -> String {
    format!("{}.{:02}", 10 + (id * 7) % 90, (id * 13) % 100)
}

/// Waits until the bootstrap server has applied `target`; returns its status.
async fn wait_bootstrap(bootstrap: &RelayUrl, target: u64, deadline: Instant) -> Result<Value> {
    loop {
        let answer = get(bootstrap, "/v1/status", Duration::from_secs(5)).await;
        if let Ok(a) = &answer
            && let Ok(v) = a.json()
            && v["applied_scn"].as_u64().is_some_and(|scn| scn >= target)
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "the bootstrap server did not apply SCN {target} in time (last answer: {answer:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_streaming(relay: &RelayUrl, deadline: Instant) -> Result<()> {
    loop {
        let answer = get(relay, "/v1/status", Duration::from_secs(5)).await;
        if let Ok(a) = &answer
            && let Ok(v) = a.json()
        {
            let state = v["buffers"][0]["ingest"]["state"].as_str().unwrap_or("");
            if state == "streaming" {
                return Ok(());
            }
            if state == "failed" {
                bail!(
                    "the relay's ingest failed: {}",
                    v["buffers"][0]["ingest"]["last_error"]
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the relay did not start streaming in time (last answer: {answer:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn source_tables(relay: &RelayUrl) -> Result<Vec<(u64, String)>> {
    let v = get(relay, "/v1/sources", Duration::from_secs(5))
        .await?
        .json()?;
    Ok(v["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["id"].as_u64().unwrap_or(0),
                        s["table"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Runs the workload while a consumer prints what arrives; returns (events shown, transactions).
async fn show(
    db: &DemoDb,
    relay: &RelayUrl,
    tables: &[(u64, String)],
    opts: &QuickstartOptions,
    deadline: Instant,
    s: &Style,
) -> Result<(u64, u64)> {
    s.step(
        5,
        "following the relay as a consumer (what `databus tail` does)",
    );
    s.step(
        6,
        &format!(
            "writing a small workload ({} orders) and printing each change as it arrives",
            opts.rows
        ),
    );
    for line in [
        "one line per change event: the SCN of its transaction (events of one transaction share it),",
        "the table, the operation (upsert = insert or update), the primary key and the decoded row",
    ] {
        crate::outln!("      {}", s.dim(line));
    }
    crate::outln!(
        "\n      {}",
        s.dim(&format!(
            "{:>5}  {:<15} {:<7} {:>4}  row",
            "scn", "table", "op", "key"
        ))
    );
    let seen_scn = Arc::new(AtomicU64::new(0));
    let stop_tail = CancellationToken::new();
    let tail_opts = TailOptions {
        relay: relay.clone(),
        sources: None,
        partitions: Vec::new(),
        buffer: None,
        start: Start::Beginning,
        max_events: None,
        wait: Duration::from_millis(500),
    };
    let printer = {
        let seen = seen_scn.clone();
        let stop = stop_tail.clone();
        let tables = tables.to_vec();
        let on = s.on;
        tokio::spawn(async move {
            let s = Style { on };
            let mut count = 0u64;
            tail(&tail_opts, &stop, |event| {
                let Some(event) = event else {
                    return Ok(Next::More);
                };
                count += 1;
                crate::outln!("{}", event_line(event, &tables, &s));
                if let Some(scn) = event["scn"].as_u64() {
                    seen.fetch_max(scn, Ordering::Release);
                }
                Ok(Next::More)
            })
            .await
            .map(|_| count)
        })
    };
    let workload = workload(db, opts).await;
    let result = async {
        let (transactions, last_scn) = workload?;
        // Wait until the consumer has printed the last transaction's events.
        while seen_scn.load(Ordering::Acquire) < last_scn {
            if printer.is_finished() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the consumer saw SCN {} but the workload ended at SCN {last_scn} when the time ran out (--duration)",
                    seen_scn.load(Ordering::Acquire)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(transactions)
    }
    .await;
    stop_tail.cancel();
    let events = printer.await.context("the consumer task failed")??;
    Ok((events, result?))
}

fn event_line(event: &Value, tables: &[(u64, String)], s: &Style) -> String {
    let scn = event["scn"].as_u64().unwrap_or(0);
    let source = event["source"].as_u64().unwrap_or(0);
    let table = tables
        .iter()
        .find(|(id, _)| *id == source)
        .map_or_else(|| format!("source {source}"), |(_, t)| t.clone());
    let op = event["opcode"].as_str().unwrap_or("?");
    let op_text = format!("{op:<7}");
    let op_text = if op == "delete" {
        s.red(&op_text)
    } else {
        s.green(&op_text)
    };
    let key = match &event["key"] {
        Value::Null => "-".to_owned(),
        k => k.to_string(),
    };
    let row = match event.get("payload") {
        Some(p) => p.to_string(),
        None => s.dim("(no payload)"),
    };
    format!("      {scn:>5}  {table:<15} {op_text} {key:>4}  {row}")
}

/// Writes the workload; returns (transactions, an SCN the consumer has seen all of it at).
async fn workload(db: &DemoDb, opts: &QuickstartOptions) -> Result<(u64, u64)> {
    let mut session = db.session().await.context("connecting for the workload")?;
    let mut transactions = 0u64;
    let mut last_scn = 0u64;
    let mut customers = 0u32;
    let mut commit = async |statements: &[String]| -> Result<()> {
        last_scn = session.transaction(statements).await?;
        transactions += 1;
        tokio::time::sleep(opts.pace).await;
        Ok(())
    };
    for i in 1..=opts.rows {
        if i % 3 == 1 {
            customers += 1;
            let name = NAMES[(customers as usize - 1) % NAMES.len()];
            commit(&[format!(
                "INSERT INTO shop.customers (id, name, email, created_at) \
                 VALUES ({customers}, '{name}', '{}@example.com', NOW())",
                name.to_lowercase()
            )])
            .await
            .context("inserting a customer")?;
        }
        commit(&[format!(
            "INSERT INTO shop.orders (id, customer_id, total, status) VALUES ({i}, {}, {}, 'new')",
            1 + (i % customers),
            total(u64::from(i))
        )])
        .await
        .context("inserting an order")?;
        if i % 4 == 0 {
            // One transaction touching two rows: both events carry the same SCN.
            commit(&[
                format!(
                    "UPDATE shop.orders SET status = 'shipped' WHERE id = {}",
                    i - 1
                ),
                format!("UPDATE shop.orders SET status = 'paid' WHERE id = {i}"),
            ])
            .await
            .context("shipping and paying orders")?;
        }
        if i % 7 == 0 {
            commit(&[format!("DELETE FROM shop.orders WHERE id = {}", i - 2)])
                .await
                .context("deleting an order")?;
        }
    }
    Ok((transactions, last_scn))
}

fn relay_toml(connector: &str, state: &std::path::Path) -> String {
    format!(
        r#"state_dir = {state:?}

[[sources]]
name = "shop"
buffer_size = "16MiB"
tables = [
    {{ id = 1, name = "customers", table = "shop.customers" }},
    {{ id = 2, name = "orders", table = "shop.orders" }},
]

[sources.connector]
{connector}"#,
        state = state.display().to_string(),
    )
}

fn print_next_steps(s: &Style) {
    crate::outln!("{}", s.bold("point databus at your own database"));
    crate::outln!(
        r#"
  1. check that the server is ready for capture (binlog in ROW format, grants):

       databus check-source --url mysql://repl@db.example:3306 --password-env DB_PASSWORD

  2. write a relay.toml (every field is documented in docs/relay.example.toml):

       state_dir = "/var/lib/databus/relay"
       [http]
       listen = "127.0.0.1:11140"
       [[sources]]
       name = "shop"
       tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
       [sources.connector]
       kind = "mariadb"
       url = "mysql://repl@db.example:3306"
       password_env = "DB_PASSWORD"
       server_id = 1001

  3. run the relay, and follow it:

       databus relay --config relay.toml
       databus tail --relay http://127.0.0.1:11140 --from-now | jq .
       databus status --relay http://127.0.0.1:11140
"#
    );
}
