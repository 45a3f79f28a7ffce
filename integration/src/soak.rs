//! The seeded fault run shared by `tests/faults.rs` (MariaDB) and `tests/pg_faults.rs`
//! (PostgreSQL): a write workload on five tables of schema/database `shop`, captured by a real `databus
//! relay` process, copied by separate bootstrap producer, applier and server processes, and consumed
//! by a `fault_consumer` process; at points the seed picks, the faults of the source's list
//! ([`SoakSource::FAULTS`]) happen. A source supplies what differs between databases ([`SoakSource`]:
//! its connector entry, how a transaction is written, its SCN, its rows, its restarts); everything
//! else is here.
//!
//! The tables, the same on both sources (source ids in parentheses): `a` (1) and `b` (2)
//! `(id BIGINT PRIMARY KEY, seq BIGINT, tag VARCHAR(64))`, `txlog` (3) `(t BIGINT PRIMARY KEY)`, `ping`
//! (4) `(id INT PRIMARY KEY, n BIGINT)` and `filler` (5) `(id BIGINT PRIMARY KEY, seq BIGINT, body
//! TEXT)`. Transaction `t` ([`TxnPlan`]) inserts `txlog` row `t` and `a` row `t`, with `big` a 100 kB
//! `filler` row, sometimes upserts `b` row `t % 5` and deletes an older row of `a`: one to four
//! tables. Other source ids (the fidelity tables of the MariaDB run) are the source's own
//! ([`SoakSource::compare_extra`]).
//!
//! The consumer's log ([`parse_log`], format in `src/bin/fault_consumer.rs`) is checked by
//! [`check_windows`] (every transaction exactly one window holding exactly its changes, in commit
//! order, no gap outside a bootstrap) and folded by [`fold`] into the replica compared with the
//! source row by row ([`wait_replica`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::faults::{DatabusProcess, RelayProcess, SeededRng, http_get};

/// Source id of `shop.a`.
pub const A: u16 = 1;
/// Source id of `shop.b`.
pub const B: u16 = 2;
/// Source id of `shop.txlog`.
pub const TXLOG: u16 = 3;
/// Source id of `shop.ping`.
pub const PING: u16 = 4;
/// Source id of `shop.filler`.
pub const FILLER: u16 = 5;

/// The password every run's source user has; the processes read it from `FAULT_PW`.
pub const PASSWORD: &str = "fault-pw";

/// One change as the consumer logs it: source, `u`/`d`/`t`, key, seq.
pub type Change = (u16, char, i64, i64);

/// The queries of [`SoakSource::rows`]: `(source, SELECT key, seq)` for `a`, `b` and `txlog`.
pub const ROW_QUERIES: [(u16, &str); 3] = [
    (A, "SELECT id, seq FROM shop.a"),
    (B, "SELECT id, seq FROM shop.b"),
    (TXLOG, "SELECT t, t FROM shop.txlog"),
];

/// Whether `source` is one of the run's own tables (the rest belong to the source's extras).
fn is_workload_source(source: u16) -> bool {
    matches!(source, A | B | TXLOG | PING | FILLER)
}

/// The source database's state and each transaction's expected changes, as the workload wrote them.
#[derive(Debug, Default)]
pub struct Expected {
    /// `shop.a`: id -> seq.
    pub a: BTreeMap<i64, i64>,
    /// `shop.b`: id -> seq.
    pub b: BTreeMap<i64, i64>,
    /// Transaction -> its changes in statement order.
    pub txns: BTreeMap<i64, Vec<Change>>,
}

/// What transaction `t` writes, drawn from the seed before it is written.
#[derive(Debug, Clone)]
pub struct TxnPlan {
    /// Its number (the `txlog` row, the new `a` row's id and seq).
    pub t: i64,
    /// Whether it writes a 100 kB `filler` row.
    pub big: bool,
    /// The `b` row it upserts (`t % 5`), if any.
    pub b: Option<i64>,
    /// The older `a` row it deletes, if any.
    pub delete: Option<i64>,
    /// Its changes in statement order: txlog, a, filler, b, delete.
    pub changes: Vec<Change>,
}

impl TxnPlan {
    /// Draws transaction `t` (40% an upsert of `b`, 25% a delete of an `a` row once there are 4).
    pub fn draw(t: i64, rng: &mut SeededRng, exp: &Expected, big: bool) -> TxnPlan {
        let mut changes = vec![(TXLOG, 'u', t, t), (A, 'u', t, t)];
        if big {
            changes.push((FILLER, 'u', t, t));
        }
        let b = (rng.range(0, 100) < 40).then_some(t % 5);
        if let Some(id) = b {
            changes.push((B, 'u', id, t));
        }
        let mut delete = None;
        if rng.range(0, 100) < 25 && exp.a.len() > 3 {
            let keys: Vec<i64> = exp.a.keys().copied().collect();
            let id = keys[rng.range(0, keys.len() as u64) as usize];
            changes.push((A, 'd', id, exp.a[&id]));
            delete = Some(id);
        }
        TxnPlan {
            t,
            big,
            b,
            delete,
            changes,
        }
    }
}

impl Expected {
    /// Records a committed transaction.
    pub fn commit(&mut self, plan: TxnPlan) {
        self.a.insert(plan.t, plan.t);
        if let Some(id) = plan.b {
            self.b.insert(id, plan.t);
        }
        if let Some(id) = plan.delete {
            self.a.remove(&id);
        }
        self.txns.insert(plan.t, plan.changes);
    }
}

/// Parsed consumer log: windows `(scn, phase, changes)` and bootstrap markers, in order.
#[derive(Debug)]
pub enum Line {
    /// `BOOTSTRAP snapshot` or `BOOTSTRAP delta <scn>`.
    Bootstrap {
        /// A full snapshot (the replica restarts from nothing).
        snapshot: bool,
    },
    /// A window.
    Window {
        /// Its SCN.
        scn: u64,
        /// `Online`, `CatchUp`, `Snapshot`.
        phase: String,
        /// Its changes with their rows.
        changes: Vec<(Change, serde_json::Value)>,
    },
}

/// Reads a consumer log (its whole lines: the consumer may be writing the next one).
///
/// # Panics
///
/// On a line that is not the consumer's format.
pub fn parse_log(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("BOOTSTRAP ") {
                return Line::Bootstrap {
                    snapshot: rest.starts_with("snapshot"),
                };
            }
            let mut parts = line.split(' ');
            let scn = parts.next().unwrap().parse().unwrap();
            let phase = parts.next().unwrap().to_owned();
            let changes = parts
                .map(|item| {
                    let mut f = item.splitn(3, ':');
                    let source: u16 = f.next().unwrap().parse().unwrap();
                    let op = f.next().unwrap().chars().next().unwrap();
                    let row: serde_json::Value = serde_json::from_str(f.next().unwrap()).unwrap();
                    let (key, seq) = if op == 't' || !is_workload_source(source) {
                        (0, 0) // the source's extras fold these by the row's key columns
                    } else if source == TXLOG {
                        (row["t"].as_i64().unwrap(), row["t"].as_i64().unwrap())
                    } else if source == PING {
                        (row["id"].as_i64().unwrap(), row["n"].as_i64().unwrap())
                    } else {
                        (row["id"].as_i64().unwrap(), row["seq"].as_i64().unwrap())
                    };
                    ((source, op, key, seq), row)
                })
                .collect();
            Line::Window {
                scn,
                phase,
                changes,
            }
        })
        .collect()
}

/// The replica a log folds to: `(source, key) -> seq` for sources a, b and txlog.
pub fn fold(lines: &[Line]) -> BTreeMap<(u16, i64), i64> {
    let mut replica = BTreeMap::new();
    for line in lines {
        match line {
            Line::Bootstrap { snapshot: true } => replica.clear(),
            Line::Bootstrap { .. } => {}
            Line::Window { changes, .. } => {
                for ((source, op, key, seq), _) in changes {
                    if !matches!(*source, A | B | TXLOG) {
                        continue;
                    }
                    if *op == 'd' {
                        replica.remove(&(*source, *key));
                    } else {
                        replica.insert((*source, *key), *seq);
                    }
                }
            }
        }
    }
    replica
}

/// Checks the windows of a consumer log against the workload: every new window (SCN above every
/// earlier one) of the online or catch-up phase holds exactly one transaction's changes, in order;
/// transaction numbers grow by one, except across a bootstrap (whose data the replica check covers).
/// Returns the last transaction seen and how many windows were replays.
///
/// # Panics
///
/// With the seed and the window at the first violation.
pub fn check_windows(lines: &[Line], exp: &Expected, seed: u64) -> (i64, usize) {
    let mut replays = 0;
    let mut last_scn = 0u64;
    let mut last_t: Option<i64> = None;
    let mut gap_allowed = false;
    for line in lines {
        let (scn, phase, changes) = match line {
            Line::Bootstrap { .. } => {
                gap_allowed = true;
                continue;
            }
            Line::Window {
                scn,
                phase,
                changes,
            } => (*scn, phase, changes),
        };
        if phase == "Snapshot" {
            continue;
        }
        if scn <= last_scn {
            replays += 1;
            continue; // a replay of a window logged before its checkpoint was persisted
        }
        last_scn = scn;
        let plain: Vec<Change> = changes.iter().map(|(c, _)| *c).collect();
        let txlog: Vec<i64> = plain.iter().filter(|c| c.0 == TXLOG).map(|c| c.2).collect();
        match txlog.as_slice() {
            [] => assert!(
                plain
                    .iter()
                    .all(|c| c.0 == PING || !is_workload_source(c.0)),
                "seed {seed}: window {scn} has changes outside any transaction: {plain:?}"
            ),
            [t] => {
                let want = exp.txns.get(t).unwrap_or_else(|| {
                    panic!("seed {seed}: window {scn}: unknown transaction {t}")
                });
                assert_eq!(
                    &plain, want,
                    "seed {seed}: window {scn} is not exactly transaction {t} (split or merged)"
                );
                if let Some(prev) = last_t {
                    if gap_allowed {
                        assert!(
                            *t > prev,
                            "seed {seed}: transaction {t} after {prev} (reorder)"
                        );
                    } else {
                        assert_eq!(
                            *t,
                            prev + 1,
                            "seed {seed}: transaction {t} after {prev} (gap or reorder) at window {scn}"
                        );
                    }
                }
                last_t = Some(*t);
                gap_allowed = false;
            }
            many => panic!("seed {seed}: window {scn} holds several transactions {many:?}"),
        }
    }
    (last_t.unwrap_or(0), replays)
}

/// The faults a run can inject. Each source lists those it supports ([`SoakSource::FAULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the relay, restarted after some transactions.
    KillRelay,
    /// SIGKILL of the bootstrap producer, restarted after some transactions.
    KillProducer,
    /// SIGKILL of the bootstrap applier, restarted after some transactions.
    KillApplier,
    /// SIGKILL of the bootstrap server (the HTTP role), restarted after some transactions.
    KillServer,
    /// SIGKILL of the consumer, down while more than the relay's buffer is written: it comes back
    /// through the bootstrap server.
    KillConsumer,
    /// A restart of the source database: clean for odd seeds, SIGKILL for even ones.
    RestartSource,
    /// FLUSH BINARY LOGS and PURGE of what the relay and the producer have (MariaDB).
    FlushAndPurge,
    /// The relay dies while its source is down too, and comes back before the source: consumers and
    /// the producer wait in a relay that has not positioned its source (issue 13).
    RestartRelayWhileSourceDown,
    /// The bootstrap producer is SIGKILLed and stays down while more than the relay's buffer is
    /// written: restarted, it fills the gap from the source (`[source]`) where the source keeps
    /// history ([`SoakSource::FILLS_GAPS`]), else it re-seeds into a new store generation (`[seed]`).
    ProducerPastBuffer,
    /// As `ProducerPastBuffer`, and the source purges its binlog before the producer comes back: the
    /// gap exists nowhere, so the producer re-seeds into a new store generation by itself and every
    /// role switches to it (`[seed]`; MariaDB).
    ProducerPastBinlog,
}

/// How much a run writes per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Small transactions; 100 kB ones only while a consumer (or the producer) is to fall off.
    Normal,
    /// The small-buffer variant: every transaction carries a 100 kB row, so the 1 MiB relay buffer
    /// covers about ten transactions and any kill can put the producer or the consumer past it.
    Heavy,
}

/// A source database of the run: what differs between MariaDB and PostgreSQL. The connection the
/// workload writes on is the source's own (a restart replaces it).
// The futures are awaited in place by one test task, never spawned: no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait SoakSource {
    /// The faults a run on this source injects, each once per round.
    const FAULTS: &'static [Fault];
    /// Whether a bootstrap producer that fell off the relay can fill the gap from the source (else
    /// it re-seeds).
    const FILLS_GAPS: bool;
    /// A name for temporary directories and messages.
    const NAME: &'static str;

    /// The relay's `connector = { ... }` line (its password in `FAULT_PW`).
    fn connector(&self) -> String;
    /// More `tables` entries of the relay (after the five of the run).
    fn extra_tables(&self) -> String {
        String::new()
    }
    /// The bootstrap configuration's `[seed]` (and `[source]`) sections, given the relay's
    /// `[[sources]]` entry.
    fn bootstrap_sections(&self, relay_source_entry: &str) -> String;
    /// Writes and commits `plan`.
    async fn write(&mut self, plan: &TxnPlan) -> Result<()>;
    /// Commits `UPDATE shop.ping SET n = n + 1 WHERE id = 1`.
    async fn ping(&mut self) -> Result<()>;
    /// Runs after each workload transaction (the MariaDB run's fidelity step).
    async fn after_txn(&mut self) -> Result<()> {
        Ok(())
    }
    /// A position the relay (and the bootstrap log) reaches exactly when it has every transaction
    /// committed so far: at least the SCN of the last one, below any later one's.
    async fn scn(&mut self) -> Result<u64>;
    /// The rows of `a`, `b` and `txlog` as `(source, key) -> seq`.
    async fn rows(&mut self) -> Result<BTreeMap<(u16, i64), i64>>;
    /// Compares the source's extra tables with a replica's log.
    async fn compare_extra(&mut self, _lines: &[Line]) -> Result<(), String> {
        Ok(())
    }
    /// Restarts the server: cleanly, or after a SIGKILL (`crash`).
    async fn restart(&mut self, crash: bool) -> Result<()> {
        self.stop(crash).await?;
        self.start_again().await
    }
    /// Stops the server: cleanly, or with a SIGKILL (`crash`).
    async fn stop(&mut self, crash: bool) -> Result<()>;
    /// Starts a stopped server again.
    async fn start_again(&mut self) -> Result<()>;
    /// FLUSH BINARY LOGS and purges what the relay has persisted ([`Fault::FlushAndPurge`]).
    async fn purge(&mut self, _relay: &RelayProcess, _state_file: &Path, seed: u64) -> Result<()> {
        anyhow::bail!(
            "seed {seed}: {} has no binlog to purge; do not schedule FlushAndPurge",
            Self::NAME
        )
    }
    /// A summary of the extras for the run's last line.
    fn stats(&self) -> String {
        String::new()
    }
}

/// Every process of a run, on `source`.
#[derive(Debug)]
pub struct World<S> {
    /// The source database.
    pub db: S,
    /// The run's directory (configs, logs, state).
    pub dir: PathBuf,
    /// The relay.
    pub relay: RelayProcess,
    /// `databus bootstrap producer`.
    pub producer: DatabusProcess,
    /// `databus bootstrap applier`.
    pub applier: DatabusProcess,
    /// `databus bootstrap server`.
    pub server: DatabusProcess,
    /// The bootstrap server's address.
    pub boot_addr: SocketAddr,
    /// The `fault_consumer` process.
    pub consumer: DatabusProcess,
    consumer_bin: PathBuf,
    consumer_args: Vec<String>,
    /// `consumer_args` plus `--fatal-after N`.
    fatal_args: Vec<String>,
}

/// Runs blocking helper code (std sockets, processes) on a runtime worker without starving it.
pub fn b<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn consumer_args(
    relay: &str,
    boot: SocketAddr,
    dir: &Path,
    name: &str,
    start: &str,
    fail: Option<u64>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--relay".into(),
        relay.into(),
        "--bootstrap".into(),
        format!("http://{boot}"),
        "--checkpoint".into(),
        dir.join(format!("{name}.checkpoint.json"))
            .display()
            .to_string(),
        "--log".into(),
        dir.join(format!("{name}.log")).display().to_string(),
        "--start".into(),
        start.into(),
    ];
    if let Some(seed) = fail {
        args.extend([
            "--fail-seed".into(),
            seed.to_string(),
            "--fail-percent".into(),
            "3".into(),
        ]);
    }
    args
}

impl<S: SoakSource> World<S> {
    /// Starts the relay (a `buffer_size` buffer) on `db`, the three bootstrap roles seeded from it,
    /// and a consumer (`consumer_bin`, the `fault_consumer` binary) from the relay's newest window
    /// whose callback fails (retry) for 3% of events and once for good (fatal) after 10 to 34
    /// windows; returns once the consumer logged a window.
    pub async fn start(mut db: S, seed: u64, buffer_size: &str, consumer_bin: &Path) -> World<S> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("databus-faults-{}-{seed}-", S::NAME))
            .tempdir()
            .unwrap()
            .keep();
        crate::faults::set_process_log_dir(Some(&dir));
        let relay_toml = dir.join("relay.toml");
        let source_entry = format!(
            r#"name = "shop"
{connector}
buffer_size = "{buffer_size}"
history_transactions = 100000
tables = [
    {{ id = 1, name = "a", table = "shop.a" }},
    {{ id = 2, name = "b", table = "shop.b" }},
    {{ id = 3, name = "txlog", table = "shop.txlog" }},
    {{ id = 4, name = "ping", table = "shop.ping" }},
    {{ id = 5, name = "filler", table = "shop.filler" }},{extra}
]
"#,
            connector = db.connector(),
            extra = db.extra_tables(),
        );
        std::fs::write(
            &relay_toml,
            format!(
                "state_dir = {state:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[sources]]\n{source_entry}",
                state = dir.join("relay-state").display().to_string(),
            ),
        )
        .unwrap();
        let relay =
            b(|| RelayProcess::start(&relay_toml, None, &[("FAULT_PW", PASSWORD)])).unwrap();
        b(|| relay.wait_ingest_state("streaming", Duration::from_secs(60))).unwrap();
        let boot_addr = free_addr();
        let boot_toml = dir.join("bootstrap.toml");
        std::fs::write(
            &boot_toml,
            format!(
                "db_path = {:?}\n[relay]\nurl = \"{}\"\nwait = \"200ms\"\n[http]\nlisten = \"{boot_addr}\"\n[applier]\nmax_windows = 20\n{}",
                dir.join("bootstrap.sqlite").display().to_string(),
                relay.url(),
                db.bootstrap_sections(&source_entry),
            ),
        )
        .unwrap();
        let producer = b(|| bootstrap_role("producer", &boot_toml));
        let applier = b(|| bootstrap_role("applier", &boot_toml));
        let server = b(|| bootstrap_role("server", &boot_toml));
        let args = consumer_args(&relay.url(), boot_addr, &dir, "replica", "now", Some(seed));
        // The first consumer process answers fatal after some windows (a callback failing for good):
        // it stops with that error and is restarted from its checkpoint by the run.
        let mut first_args = args.clone();
        first_args.extend(["--fatal-after".into(), (10 + seed % 25).to_string()]);
        let consumer = b(|| spawn_consumer(consumer_bin, &first_args));
        // The consumer starts from the relay's newest window: write pings until it has logged one, so
        // that every transaction of the workload comes after its start.
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = dir.join("replica.log");
        loop {
            db.ping().await.unwrap();
            if std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the consumer never logged a window: {}",
                consumer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        World {
            db,
            dir,
            relay,
            producer,
            applier,
            server,
            boot_addr,
            consumer,
            consumer_bin: consumer_bin.to_path_buf(),
            consumer_args: args,
            fatal_args: first_args,
        }
    }

    /// Restarts a bootstrap role.
    fn restart_role(&self, role: &str) -> DatabusProcess {
        b(|| bootstrap_role(role, &self.dir.join("bootstrap.toml")))
    }

    /// Stops every process (by pid), then removes the run's directory.
    pub fn finish(self) {
        let dir = self.dir.clone();
        drop(self);
        crate::faults::set_process_log_dir(None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The relay's state file (its persisted SCN).
    pub fn relay_state_file(&self) -> PathBuf {
        self.dir.join("relay-state").join("shop.state.json")
    }
}

fn bootstrap_role(role: &str, config: &Path) -> DatabusProcess {
    let config = config.display().to_string();
    DatabusProcess::spawn(
        &format!("bootstrap {role}"),
        &["bootstrap", role, "--config", &config],
        // The password of [seed] and [source].
        &[("FAULT_PW", PASSWORD)],
    )
    .unwrap()
}

fn spawn_consumer(bin: &Path, args: &[String]) -> DatabusProcess {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    DatabusProcess::spawn_command("consumer", cmd).unwrap()
}

/// Waits until the relay's buffer holds SCN `scn`.
pub async fn wait_relay_at(relay: &RelayProcess, scn: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = b(|| relay.get("/v1/status").and_then(|r| r.json()));
        if let Ok(st) = &st
            && st["buffers"][0]["max_scn"]
                .as_u64()
                .is_some_and(|m| m >= scn)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay never reached SCN {scn}: {st:?}\n{}",
            relay.process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the bootstrap server's log (of its current generation) holds SCN `scn`; returns its
/// status then.
pub async fn wait_bootstrap_log_at(
    addr: SocketAddr,
    scn: u64,
    seed: u64,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let st = b(|| http_get(addr, "/v1/status").and_then(|r| r.json()));
        if let Ok(st) = &st
            && st["log_last_scn"].as_u64().is_some_and(|m| m >= scn)
        {
            return st.clone();
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the bootstrap log never reached SCN {scn}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the replica a consumer log folds to equals the source (and its extras); returns the
/// log's lines then.
pub async fn wait_replica<S: SoakSource>(
    db: &mut S,
    log: &Path,
    seed: u64,
    what: &str,
    consumer: &mut DatabusProcess,
) -> Vec<Line> {
    let want = db.rows().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut extra_diff = String::new();
    loop {
        let lines = parse_log(log);
        if fold(&lines) == want {
            match db.compare_extra(&lines).await {
                Ok(()) => return lines,
                Err(e) => extra_diff = e,
            }
        }
        if let Some(status) = consumer.exited() {
            panic!("seed {seed}: {what} exited ({status}):\n{}", consumer.log());
        }
        if Instant::now() > deadline {
            let got = fold(&lines);
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(k) != Some(v))
                .take(10)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, v)| want.get(k) != Some(v))
                .take(10)
                .collect();
            panic!(
                "seed {seed}: {what} never matched the source ({} vs {} rows); missing or different {missing:?}, extra {extra:?}; extra tables: {extra_diff}; log:\n{}",
                got.len(),
                want.len(),
                consumer.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seed's schedule: each fault of `faults` `rounds` times, in a shuffled order, at a transaction
/// index, with a downtime in transactions for the kills.
pub fn schedule(
    rng: &mut SeededRng,
    faults: &[Fault],
    txns: i64,
    rounds: usize,
) -> Vec<(i64, Fault, i64)> {
    let mut faults: Vec<Fault> = (0..rounds).flat_map(|_| faults.iter().copied()).collect();
    for i in (1..faults.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        faults.swap(i, j);
    }
    let slot = (txns - 10) / faults.len() as i64;
    faults
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = 5 + i as i64 * slot + rng.range(0, (slot / 2).max(1) as u64) as i64;
            let down = rng.range(2, (slot / 2).max(3) as u64) as i64;
            (at, f, down)
        })
        .collect()
}

/// The relay's buffer `min_scn` and the bootstrap log's `log_last_scn` and `generation`, once the
/// relay holds everything written (so that it evicted what it will evict).
async fn positions<S: SoakSource>(w: &mut World<S>) -> (u64, u64, u64) {
    let scn = w.db.scn().await.unwrap();
    wait_relay_at(&w.relay, scn).await;
    let boot = b(|| http_get(w.boot_addr, "/v1/status"))
        .unwrap()
        .json()
        .unwrap();
    let relay = b(|| w.relay.get("/v1/status")).unwrap().json().unwrap();
    (
        relay["buffers"][0]["min_scn"].as_u64().unwrap_or(0),
        boot["log_last_scn"].as_u64().unwrap_or(0),
        boot["generation"].as_u64().unwrap_or(0),
    )
}

/// Restarts a producer that was down while more than the relay's buffer was written (unless the next
/// fault cut its downtime short): it comes back behind the relay and must fill the gap from the
/// source ([`SoakSource::FILLS_GAPS`]), or re-seed into a new generation, by itself before the run
/// goes on (a purge scheduled later must not take the binlog it reads).
async fn restart_producer_past_buffer<S: SoakSource>(w: &mut World<S>, seed: u64) {
    let (min, logged, was) = positions(w).await;
    w.producer = w.restart_role("producer");
    let scn = w.db.scn().await.unwrap();
    let st = wait_bootstrap_log_at(w.boot_addr, scn, seed, Duration::from_secs(120)).await;
    let generation = st["generation"].as_u64().unwrap_or(0);
    if min <= logged + 1 {
        // The next fault came before a buffer's worth was written (its restart comes first): this
        // one was a plain producer kill.
        eprintln!(
            "seed {seed}: the relay still held the producer's position (min {min}, log at {logged})"
        );
    } else if S::FILLS_GAPS {
        eprintln!(
            "seed {seed}: the producer filled the relay gap after SCN {logged} from the source"
        );
    } else {
        assert!(
            generation > was,
            "seed {seed}: the producer fell off the relay (min {min}, log at {logged}), {} keeps no history to fill from, yet generation {generation} is still served",
            S::NAME
        );
        eprintln!(
            "seed {seed}: the producer fell off the relay (min {min}, log at {logged}): re-seeded into generation {generation}"
        );
    }
}

/// Purges the binlog past the producer's log (it stays down meanwhile), then restarts it: it cannot
/// fill the gap from anywhere and re-seeds into a new generation, which the server then serves.
async fn restart_producer_past_binlog<S: SoakSource>(w: &mut World<S>, seed: u64) {
    let (min, logged, was) = positions(w).await;
    let state = w.relay_state_file();
    w.db.purge(&w.relay, &state, seed).await.unwrap();
    w.producer = w.restart_role("producer");
    let scn = w.db.scn().await.unwrap();
    // The old generation's log never moves again; the new one's reaches `scn` once published.
    let st = wait_bootstrap_log_at(w.boot_addr, scn, seed, Duration::from_secs(120)).await;
    let generation = st["generation"].as_u64().unwrap_or(0);
    if min > logged + 1 {
        assert!(
            generation > was,
            "seed {seed}: the producer fell off the relay (min {min}, log at {logged}) and the binlog was purged, yet generation {generation} is still served"
        );
        eprintln!(
            "seed {seed}: binlog purged past the producer (log at {logged}): re-seeded into generation {generation}"
        );
    } else {
        eprintln!(
            "seed {seed}: the relay still held the producer's position (min {min}, log at {logged}); generation {generation}"
        );
    }
}

/// Brings back what `fault` took down (the end of its downtime).
async fn end_fault<S: SoakSource>(w: &mut World<S>, fault: Fault, seed: u64, fatal_armed: bool) {
    match fault {
        Fault::KillRelay => b(|| w.relay.restart()).unwrap(),
        Fault::KillProducer => w.producer = w.restart_role("producer"),
        Fault::ProducerPastBuffer => restart_producer_past_buffer(w, seed).await,
        Fault::ProducerPastBinlog => restart_producer_past_binlog(w, seed).await,
        Fault::KillApplier => w.applier = w.restart_role("applier"),
        Fault::KillServer => w.server = w.restart_role("server"),
        Fault::KillConsumer => {
            let args = if fatal_armed {
                &w.fatal_args
            } else {
                &w.consumer_args
            };
            w.consumer = b(|| spawn_consumer(&w.consumer_bin, args));
        }
        Fault::RestartSource | Fault::FlushAndPurge | Fault::RestartRelayWhileSourceDown => {}
    }
}

/// Injects `fault` (its downtime, if any, ends in [`end_fault`]).
async fn begin_fault<S: SoakSource>(w: &mut World<S>, fault: Fault, seed: u64) {
    match fault {
        Fault::KillRelay => w.relay.kill9(),
        Fault::KillProducer | Fault::ProducerPastBuffer | Fault::ProducerPastBinlog => {
            w.producer.kill9()
        }
        Fault::KillApplier => w.applier.kill9(),
        Fault::KillServer => w.server.kill9(),
        Fault::KillConsumer => w.consumer.kill9(),
        // Odd seeds stop the server cleanly, even ones crash it (SIGKILL).
        Fault::RestartSource => w.db.restart(seed.is_multiple_of(2)).await.unwrap(),
        Fault::RestartRelayWhileSourceDown => {
            // The fault is about a reader waiting at the head of the restarted relay. A reader
            // behind it when it restarts (empty buffer: the source it would refill from is down)
            // falls off it instead: the consumer to the bootstrap server, the producer to the
            // source, which is down, so nobody would wait. Under load (small buffer, 100 kB rows)
            // both can trail (soak_small_buffer seed 3), so let the producer catch up first.
            let scn = w.db.scn().await.unwrap();
            wait_bootstrap_log_at(w.boot_addr, scn, seed, Duration::from_secs(60)).await;
            w.relay.kill9();
            w.db.stop(seed.is_multiple_of(2)).await.unwrap();
            b(|| w.relay.restart()).unwrap();
            // The replica and the producer (whichever is up) come back to the relay and wait in it
            // before its source is back.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let waiting = b(|| w.relay.get("/v1/status"))
                    .and_then(|r| r.json())
                    .ok()
                    .and_then(|v| v["buffers"][0]["waiting_readers"].as_u64());
                if waiting >= Some(1) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: nobody waited in the restarted relay ({waiting:?}); relay:\n{}\nproducer:\n{}\nconsumer:\n{}",
                    w.relay.process.log(),
                    w.producer.log(),
                    w.consumer.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            w.db.start_again().await.unwrap();
        }
        Fault::FlushAndPurge => {
            // Purge only what the bootstrap producer has logged too, as docs/operations.md asks (a
            // producer that falls off the relay fills the gap from the binlog); a source that purged
            // it as well is the ProducerPastBinlog fault (a re-seed). A producer killed earlier was
            // restarted before this fault (`fault_now` in `run_seed`).
            let scn = w.db.scn().await.unwrap();
            wait_bootstrap_log_at(w.boot_addr, scn, seed, Duration::from_secs(60)).await;
            let state = w.relay_state_file();
            w.db.purge(&w.relay, &state, seed).await.unwrap();
        }
    }
}

/// One seeded run on `db`: `txns` transactions, each fault of [`SoakSource::FAULTS`] `rounds` times,
/// then the checks (see the module docs). `consumer_bin` is the `fault_consumer` binary.
pub async fn run_seed<S: SoakSource>(
    db: S,
    consumer_bin: &Path,
    seed: u64,
    txns: i64,
    rounds: usize,
    load: Load,
) {
    let started = std::time::Instant::now();
    let mut rng = SeededRng::new(seed);
    let plan = schedule(&mut rng, S::FAULTS, txns, rounds);
    eprintln!("seed {seed}: {} {load:?} load, plan {plan:?}", S::NAME);
    let mut w = World::start(db, seed, "1MiB", consumer_bin).await;
    let mut exp = Expected::default();
    let mut pending_restart: Option<(i64, Fault)> = None;
    let mut fatal_stops = 0;
    // Whether the running consumer process still has its fatal callback ahead.
    let mut fatal_armed = true;
    for t in 1..=txns {
        // A consumer that stopped on its fatal callback is restarted (without the failing callback).
        if pending_restart.is_none_or(|(_, f)| f != Fault::KillConsumer)
            && let Some(status) = w.consumer.exited()
        {
            let log = w.consumer.log();
            assert!(
                !status.success() && log.contains("returned fatal"),
                "seed {seed}: the consumer exited ({status}) without its fatal callback:\n{log}"
            );
            eprintln!("seed {seed}: the consumer stopped on its fatal callback at transaction {t}");
            fatal_stops += 1;
            fatal_armed = false;
            w.consumer = b(|| spawn_consumer(&w.consumer_bin, &w.consumer_args));
        }
        let fault_now = plan.iter().any(|(at, _, _)| *at == t);
        if let Some((at, fault)) = pending_restart
            && (t >= at || fault_now)
        {
            if fault == Fault::KillConsumer {
                // Killed before its fatal callback: keep it armed unless the run is nearly over.
                fatal_armed &= t < txns - 40;
            }
            end_fault(&mut w, fault, seed, fatal_armed).await;
            pending_restart = None;
        }
        if let Some(&(_, fault, down)) = plan.iter().find(|(at, _, _)| *at == t) {
            eprintln!("seed {seed}: {fault:?} at transaction {t}");
            begin_fault(&mut w, fault, seed).await;
            if matches!(
                fault,
                Fault::KillRelay
                    | Fault::KillProducer
                    | Fault::KillApplier
                    | Fault::KillServer
                    | Fault::KillConsumer
                    | Fault::ProducerPastBuffer
                    | Fault::ProducerPastBinlog
            ) {
                // The consumer (or the producer) stays down while more than the relay's buffer is
                // written, so that it comes back behind the relay: the consumer catches up through
                // the bootstrap server, the producer fills the gap from the source or re-seeds.
                let down = if matches!(
                    fault,
                    Fault::KillConsumer | Fault::ProducerPastBuffer | Fault::ProducerPastBinlog
                ) {
                    down.max(14)
                } else {
                    down
                };
                pending_restart = Some((t + down, fault));
            }
        }
        let big = load == Load::Heavy
            || matches!(
                pending_restart,
                Some((
                    _,
                    Fault::KillConsumer | Fault::ProducerPastBuffer | Fault::ProducerPastBinlog
                ))
            );
        let txn = TxnPlan::draw(t, &mut rng, &exp, big);
        w.db.write(&txn)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: transaction {t}: {e:#}"));
        exp.commit(txn);
        w.db.after_txn().await.unwrap();
        if load == Load::Normal && matches!(pending_restart, Some((_, Fault::KillConsumer))) {
            // The consumer is to fall off the relay here, not the bootstrap producer (that is
            // ProducerPastBuffer's part).
            let scn = w.db.scn().await.unwrap();
            wait_bootstrap_log_at(w.boot_addr, scn, seed, Duration::from_secs(60)).await;
        }
        // Pacing of the workload (not a wait for a condition): a few ms between transactions.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 12))).await;
    }
    if let Some((_, fault)) = pending_restart.take() {
        if fault == Fault::KillConsumer {
            fatal_armed = false;
        }
        end_fault(&mut w, fault, seed, fatal_armed).await;
    }

    if fatal_armed {
        // Its fatal callback is still ahead (at most 34 windows after its start, and at least 40
        // transactions followed): wait for that stop, then restart it for the checks.
        let status = b(|| w.consumer.wait_exit(Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        let log = w.consumer.log();
        assert!(
            !status.success() && log.contains("returned fatal"),
            "seed {seed}: the consumer exited ({status}) without its fatal callback:\n{log}"
        );
        fatal_stops += 1;
        w.consumer = b(|| spawn_consumer(&w.consumer_bin, &w.consumer_args));
    }
    assert!(
        fatal_stops <= 1,
        "seed {seed}: the consumer failed fatally {fatal_stops} times"
    );
    eprintln!("seed {seed}: the fatal callback stopped the consumer {fatal_stops} time(s)");

    // Every process is still up: none died of a fault it should have survived.
    for p in [
        &mut w.relay.process,
        &mut w.producer,
        &mut w.applier,
        &mut w.server,
        &mut w.consumer,
    ] {
        if let Some(status) = p.exited() {
            panic!(
                "seed {seed}: {} exited ({status}) during the run:\n{}",
                p.what,
                p.log()
            );
        }
    }

    // The replica converges to the source, and the windows are the transactions.
    let log = w.dir.join("replica.log");
    let lines = wait_replica(&mut w.db, &log, seed, "the replica", &mut w.consumer).await;
    let (last, replays) = check_windows(&lines, &exp, seed);
    let bootstraps = lines
        .iter()
        .filter(|l| matches!(l, Line::Bootstrap { .. }))
        .count();
    assert_eq!(
        last, txns,
        "seed {seed}: the last transaction delivered online"
    );

    // A new consumer from the bootstrap server's snapshot (the producer and applier were killed too).
    let args = consumer_args(
        &w.relay.url(),
        w.boot_addr,
        &w.dir,
        "fresh",
        "snapshot",
        None,
    );
    let mut fresh = b(|| spawn_consumer(&w.consumer_bin, &args));
    let fresh_log = w.dir.join("fresh.log");
    wait_replica(
        &mut w.db,
        &fresh_log,
        seed,
        "the snapshot consumer",
        &mut fresh,
    )
    .await;
    for p in [
        &w.relay.process,
        &w.producer,
        &w.applier,
        &w.server,
        &w.consumer,
        &fresh,
    ] {
        assert!(
            !p.log().contains("panicked"),
            "seed {seed}: {} panicked:\n{}",
            p.what,
            p.log()
        );
    }
    assert_eq!(b(|| http_get(w.boot_addr, "/health")).unwrap().status, 200);
    eprintln!(
        "seed {seed}: {} ok in {:?}: {} consumer log lines, {replays} replayed windows, {bootstraps} bootstraps{}",
        S::NAME,
        started.elapsed(),
        lines.len(),
        w.db.stats()
    );
    drop(fresh);
    w.finish();
}
