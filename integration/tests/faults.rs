//! Fault injection, seeded and repeatable: a write workload on a real MariaDB, captured by a real
//! `databus relay` process, copied by separate bootstrap producer, applier and server processes, and
//! consumed by a consumer process (`fault_consumer`, built on the client library). During the
//! workload, at points the seed picks, each of these happens once (three times in the soak), in the
//! seed's order: SIGKILL and
//! restart of the relay, of the bootstrap producer, of the bootstrap applier and of the consumer
//! (each down while some transactions are written); the bootstrap producer down while more than the
//! relay's 1 MiB buffer is written (it fills the gap from the source's binlog, `[source]`), and the
//! same with the binlog purged before it comes back (it re-seeds into a new store generation, `[seed]`,
//! and every role switches to it); a MariaDB
//! restart (clean for odd seeds, SIGKILL for
//! even ones); FLUSH BINARY LOGS and PURGE. Transactions touch one to three tables; the consumer's
//! callback fails (answers retry) for a seeded share of events, and once for good (answers fatal: the
//! consumer process stops with that error and is restarted from its checkpoint).
//!
//! After each run: the consumer's replica equals the source row by row; every transaction arrived as
//! exactly one window holding exactly its changes (no window split), in commit order (no reorder),
//! each exactly once apart from replays of uncheckpointed windows (no gap); and a new consumer that
//! starts from the bootstrap server's snapshot ends equal to the source too.
//!
//! Seeds come from `DATABUS_FAULT_SEEDS` (`3`, `1,5,9`, `1..50`); CI runs the default seeds. The soak:
//!
//! ```text
//! DATABUS_FAULT_SEEDS=1..50 cargo test -p databus-integration --test faults -- --ignored --exact soak
//! ```
//!
//! The small-buffer variant (`soak_small_buffer`) writes a 100 kB row in every transaction, so the
//! relay's 1 MiB buffer covers about ten transactions and every kill can put the producer or the
//! consumer past it: both must repair themselves (the producer from the source, the consumer through
//! the bootstrap server):
//!
//! ```text
//! DATABUS_FAULT_SEEDS=1..10 cargo test -p databus-integration --test faults -- --ignored --exact soak_small_buffer
//! ```
//!
//! With the change-fidelity mix (`faults_during_the_fidelity_workload_lose_nothing`, and the ignored
//! `soak_fidelity`), each transaction of the workload above is followed by one step of
//! [`databus_integration::fidelity::FidelityWorkload`] on two more captured tables: key changes on
//! single and composite keys, TRUNCATE, ALTER, DROP + CREATE, rollbacks and savepoints happen around
//! the kills and restarts, and the replicas must equal those tables too (truncates logged as `t`
//! events). Its soak:
//!
//! ```text
//! DATABUS_FAULT_SEEDS=1..100 cargo test -p databus-integration --test faults soak_fidelity -- --ignored
//! ```
//!
//! A transaction larger than the relay's buffer is its own test: a clear error, nothing of it delivered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use databus_integration::checker::json_row;
use databus_integration::faults::{DatabusProcess, RelayProcess, SeededRng, fault_seeds, http_get};
use databus_integration::fidelity::{self, COMPOSITE, FidelityWorkload, SINGLE};
use databus_integration::{Columns, Row, compare_tables, row_key, source_rows_keyed};
use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

/// Runs blocking helper code (std sockets, processes) on a runtime worker without starving it.
fn b<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

const A: u16 = 1;
const B: u16 = 2;
const TXLOG: u16 = 3;
const PING: u16 = 4;
const FILLER: u16 = 5;

/// One change as the consumer logs it: source, `u`/`d`, key, seq.
type Change = (u16, char, i64, i64);

/// The source database's state and each transaction's expected changes, as the workload wrote them.
#[derive(Default)]
struct Expected {
    a: BTreeMap<i64, i64>,
    b: BTreeMap<i64, i64>,
    txns: BTreeMap<i64, Vec<Change>>,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct World {
    db: MariaDb,
    dir: PathBuf,
    relay: RelayProcess,
    producer: DatabusProcess,
    applier: DatabusProcess,
    server: DatabusProcess,
    boot_addr: SocketAddr,
    consumer: DatabusProcess,
    consumer_args: Vec<String>,
    /// `consumer_args` plus `--fatal-after N`.
    fatal_args: Vec<String>,
}

fn bootstrap_role(role: &str, config: &Path) -> DatabusProcess {
    let config = config.display().to_string();
    DatabusProcess::spawn(
        &format!("bootstrap {role}"),
        &["bootstrap", role, "--config", &config],
        // The password of [source] (the database the producer fills relay gaps from).
        &[("FAULT_PW", "fault-pw")],
    )
    .unwrap()
}

fn spawn_consumer(args: &[String]) -> DatabusProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fault_consumer"));
    cmd.args(args);
    DatabusProcess::spawn_command("consumer", cmd).unwrap()
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

fn is_fidelity_source(source: u16) -> bool {
    source == SINGLE || source == COMPOSITE
}

async fn start_world(seed: u64, buffer_size: &str, with_fidelity: bool) -> World {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    if with_fidelity {
        db.exec(fidelity::SCHEMA).await.unwrap();
    }
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.a (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, tag VARCHAR(64) NOT NULL)",
        "CREATE TABLE shop.b (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, tag VARCHAR(64) NOT NULL)",
        "CREATE TABLE shop.txlog (t BIGINT PRIMARY KEY)",
        "CREATE TABLE shop.ping (id INT PRIMARY KEY, n BIGINT NOT NULL)",
        "CREATE TABLE shop.filler (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, body MEDIUMTEXT NOT NULL)",
        "INSERT INTO shop.ping VALUES (1, 0)",
    ])
    .await
    .unwrap();
    let url = db
        .create_user_with_grants("repl", "fault-pw")
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix(&format!("databus-faults-{seed}-"))
        .tempdir()
        .unwrap()
        .keep();
    databus_integration::faults::set_process_log_dir(Some(&dir));
    let relay_toml = dir.join("relay.toml");
    let source_entry = format!(
        r#"name = "shop"
connector = {{ kind = "mariadb", url = "{bare}", password_env = "FAULT_PW", server_id = 1001 }}
buffer_size = "{buffer_size}"
history_transactions = 100000
tables = [
    {{ id = 1, name = "a", table = "shop.a" }},
    {{ id = 2, name = "b", table = "shop.b" }},
    {{ id = 3, name = "txlog", table = "shop.txlog" }},
    {{ id = 4, name = "ping", table = "shop.ping" }},
    {{ id = 5, name = "filler", table = "shop.filler" }},{fid}
]
"#,
        bare = url.replace(":fault-pw@", "@"),
        fid = if with_fidelity {
            format!(
                "\n    {{ id = {SINGLE}, name = \"single\", table = \"fid.single\" }},\n    \
                 {{ id = {COMPOSITE}, name = \"composite\", table = \"fid.composite\" }},"
            )
        } else {
            String::new()
        },
    );
    std::fs::write(
        &relay_toml,
        format!(
            "state_dir = {state:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[[sources]]\n{source_entry}",
            state = dir.join("relay-state").display().to_string(),
        ),
    )
    .unwrap();
    let relay = b(|| RelayProcess::start(&relay_toml, None, &[("FAULT_PW", "fault-pw")])).unwrap();
    b(|| relay.wait_ingest_state("streaming", Duration::from_secs(60))).unwrap();
    let boot_addr = free_addr();
    let boot_toml = dir.join("bootstrap.toml");
    std::fs::write(
        &boot_toml,
        format!(
            "db_path = {:?}\n[relay]\nurl = \"{}\"\nwait = \"200ms\"\n[http]\nlisten = \"{boot_addr}\"\n[applier]\nmax_windows = 20\n\
             [seed]\nurl = \"{}\"\npassword_env = \"FAULT_PW\"\nchunk_rows = 500\n[source]\n{}",
            dir.join("bootstrap.sqlite").display().to_string(),
            relay.url(),
            // The source, for a re-seed when the gap is purged from the binlog too.
            url.replace(":fault-pw@", "@"),
            // The relay's own entry, with a server id of its own: a producer that fell off the
            // relay fills the gap from the binlog.
            source_entry
                .replace("server_id = 1001", "server_id = 1003")
                .replace("history_transactions = 100000\n", "")
        ),
    )
    .unwrap();
    let producer = b(|| bootstrap_role("producer", &boot_toml));
    let applier = b(|| bootstrap_role("applier", &boot_toml));
    let server = b(|| bootstrap_role("server", &boot_toml));
    let args = consumer_args(&relay.url(), boot_addr, &dir, "replica", "now", Some(seed));
    // The first consumer process answers fatal after some windows (a callback failing for good): it
    // stops with that error and is restarted from its checkpoint by the run.
    let mut first_args = args.clone();
    first_args.extend(["--fatal-after".into(), (10 + seed % 25).to_string()]);
    let consumer = b(|| spawn_consumer(&first_args));
    let world = World {
        db,
        dir,
        relay,
        producer,
        applier,
        server,
        boot_addr,
        consumer,
        consumer_args: args,
        fatal_args: first_args,
    };
    // The consumer starts from the relay's newest window: write pings until it has logged one, so
    // that every transaction of the workload comes after its start.
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = world.dir.join("replica.log");
    loop {
        world
            .db
            .exec(&["UPDATE shop.ping SET n = n + 1 WHERE id = 1"])
            .await
            .unwrap();
        if std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never logged a window: {}",
            world.consumer.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world
}

/// Writes transaction `t`: a txlog row, a row of `a`, with `big` a 100 kB row of `filler`, sometimes
/// an upsert of `b` and a delete of an older row of `a`.
async fn write_txn(
    conn: &mut mysql_async::Conn,
    t: i64,
    rng: &mut SeededRng,
    exp: &mut Expected,
    big: bool,
) -> Result<(), mysql_async::Error> {
    let mut changes = vec![(TXLOG, 'u', t, t)];
    let mut tx = conn.start_transaction(Default::default()).await?;
    tx.exec_drop("INSERT INTO shop.txlog VALUES (?)", (t,))
        .await?;
    tx.exec_drop(
        "INSERT INTO shop.a VALUES (?, ?, ?)",
        (t, t, format!("a{t}")),
    )
    .await?;
    changes.push((A, 'u', t, t));
    if big {
        tx.exec_drop(
            "INSERT INTO shop.filler VALUES (?, ?, REPEAT('z', 100000))",
            (t, t),
        )
        .await?;
        changes.push((FILLER, 'u', t, t));
    }
    let mut b_change = None;
    if rng.range(0, 100) < 40 {
        let id = t % 5;
        tx.exec_drop(
            "INSERT INTO shop.b VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE seq = VALUES(seq), tag = VALUES(tag)",
            (id, t, format!("b{t}")),
        )
        .await?;
        changes.push((B, 'u', id, t));
        b_change = Some(id);
    }
    let mut deleted = None;
    if rng.range(0, 100) < 25 && exp.a.len() > 3 {
        let keys: Vec<i64> = exp.a.keys().copied().collect();
        let id = keys[rng.range(0, keys.len() as u64) as usize];
        tx.exec_drop("DELETE FROM shop.a WHERE id = ?", (id,))
            .await?;
        changes.push((A, 'd', id, exp.a[&id]));
        deleted = Some(id);
    }
    tx.commit().await?;
    exp.a.insert(t, t);
    if let Some(id) = b_change {
        exp.b.insert(id, t);
    }
    if let Some(id) = deleted {
        exp.a.remove(&id);
    }
    exp.txns.insert(t, changes);
    Ok(())
}

/// The source's current GTID sequence number (the SCN of its last transaction).
async fn source_scn(db: &MariaDb) -> u64 {
    let pos = db.gtid_binlog_pos().await.unwrap();
    pos.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn wait_relay_at(relay: &RelayProcess, scn: u64) {
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

async fn wait_bootstrap_log_at(addr: SocketAddr, scn: u64, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = b(|| http_get(addr, "/v1/status").and_then(|r| r.json()));
        if let Ok(st) = &st
            && st["log_last_scn"].as_u64().is_some_and(|m| m >= scn)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the bootstrap log never reached SCN {scn}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// FLUSH BINARY LOGS, then purges every binlog but the newest once the relay has persisted what they
/// hold (a restarted relay resumes after its persisted SCN, which trails what it has read by up to a
/// second), as an operator purging by age would. Pings keep events flowing until it is.
async fn purge_what_the_relay_persisted(w: &World, conn: &mut mysql_async::Conn, seed: u64) {
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    // Purge only what the relay has persisted (a restarted relay resumes after its
    // persisted SCN, which trails what it has read by up to a second), as an
    // operator purging by age would. Pings keep events flowing until it is.
    let scn = source_scn(&w.db).await;
    wait_relay_at(&w.relay, scn).await;
    let state = w.dir.join("relay-state").join("shop.state.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let persisted = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["last_scn"].as_u64());
        if persisted.is_some_and(|p| p >= scn) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the relay never persisted SCN {scn} ({persisted:?})"
        );
        conn.query_drop("UPDATE shop.ping SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await.unwrap();
    let file: String = row.unwrap().get(0).unwrap();
    w.db.purge_binary_logs_to(&file).await.unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillRelay,
    KillProducer,
    KillApplier,
    KillConsumer,
    RestartMariaDb,
    FlushAndPurge,
    /// The relay dies while its source is down too, and comes back before the source: consumers and
    /// the producer wait in a relay that has not positioned its source (issue 13).
    RestartRelayWhileSourceDown,
    /// The bootstrap producer is SIGKILLed and stays down while more than the relay's buffer is
    /// written: restarted, it fills the gap from the source's binlog (`[source]`).
    ProducerPastBuffer,
    /// As `ProducerPastBuffer`, and the source purges its binlog before the producer comes back: the
    /// gap exists nowhere, so the producer re-seeds into a new store generation by itself and every
    /// role switches to it (`[seed]`).
    ProducerPastBinlog,
}

const ALL_FAULTS: [Fault; 9] = [
    Fault::KillRelay,
    Fault::KillProducer,
    Fault::KillApplier,
    Fault::KillConsumer,
    Fault::RestartMariaDb,
    Fault::FlushAndPurge,
    Fault::RestartRelayWhileSourceDown,
    Fault::ProducerPastBuffer,
    Fault::ProducerPastBinlog,
];

/// The seed's schedule: each fault `rounds` times, in a shuffled order, at a transaction index, with a downtime
/// in transactions for the kills.
fn schedule(rng: &mut SeededRng, txns: i64, rounds: usize) -> Vec<(i64, Fault, i64)> {
    let mut faults: Vec<Fault> = (0..rounds).flat_map(|_| ALL_FAULTS).collect();
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

/// Parsed consumer log: windows `(scn, phase, changes)` and bootstrap markers, in order.
#[derive(Debug)]
enum Line {
    Bootstrap {
        snapshot: bool,
    },
    Window {
        scn: u64,
        phase: String,
        changes: Vec<(Change, serde_json::Value)>,
    },
}

fn parse_log(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only whole lines: the consumer may be writing the next one.
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
                    let (key, seq) = if op == 't' || is_fidelity_source(source) {
                        (0, 0) // folded by `fold_fidelity`, by the row's key columns
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
fn fold(lines: &[Line]) -> BTreeMap<(u16, i64), i64> {
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

/// The replica of the fidelity tables a log folds to: `(source, key) -> row` (key columns joined).
fn fold_fidelity(lines: &[Line]) -> BTreeMap<u16, BTreeMap<String, Row>> {
    let mut replica: BTreeMap<u16, BTreeMap<String, Row>> = BTreeMap::new();
    for line in lines {
        match line {
            Line::Bootstrap { snapshot: true } => replica.clear(),
            Line::Bootstrap { .. } => {}
            Line::Window { changes, .. } => {
                for ((source, op, _, _), row) in changes {
                    if !is_fidelity_source(*source) {
                        continue;
                    }
                    let table = replica.entry(*source).or_default();
                    if *op == 't' {
                        table.clear();
                        continue;
                    }
                    let keys = fidelity::TABLES
                        .iter()
                        .find(|(s, _, _)| s == source)
                        .map(|(_, _, k)| *k)
                        .unwrap();
                    let row = fidelity::source_form(&json_row(row));
                    let key = row_key(&row, keys).unwrap();
                    if *op == 'd' {
                        table.remove(&key);
                    } else {
                        table.insert(key, row);
                    }
                }
            }
        }
    }
    replica
}

/// Compares the fidelity tables of a folded log with the source; the first differences.
async fn compare_fidelity(db: &MariaDb, lines: &[Line]) -> Result<(), String> {
    let got = fold_fidelity(lines);
    let mut conn = db.root_conn().await.unwrap();
    let mut result = Ok(());
    for (source, table, keys) in fidelity::TABLES {
        let want = source_rows_keyed(&mut conn, table, keys).await.unwrap();
        let empty = BTreeMap::new();
        if let Err(e) = compare_tables(
            table,
            &want,
            got.get(&source).unwrap_or(&empty),
            Columns::Evolved,
        ) {
            result = Err(format!("{e:#}"));
            break;
        }
    }
    conn.disconnect().await.unwrap();
    result
}

async fn source_rows(db: &MariaDb) -> BTreeMap<(u16, i64), i64> {
    let mut conn = db.root_conn().await.unwrap();
    let mut rows = BTreeMap::new();
    for (source, sql) in [
        (A, "SELECT id, seq FROM shop.a"),
        (B, "SELECT id, seq FROM shop.b"),
        (TXLOG, "SELECT t, t FROM shop.txlog"),
    ] {
        let r: Vec<(i64, i64)> = conn.query(sql).await.unwrap();
        for (k, s) in r {
            rows.insert((source, k), s);
        }
    }
    conn.disconnect().await.unwrap();
    rows
}

/// Checks the windows of a consumer log against the workload: every new window (SCN above every
/// earlier one) of the online or catch-up phase holds exactly one transaction's changes, in order;
/// transaction numbers grow by one, except across a bootstrap (whose data the replica check covers).
/// Returns the last transaction seen and how many windows were replays.
fn check_windows(lines: &[Line], exp: &Expected, seed: u64) -> (i64, usize) {
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
                plain.iter().all(|c| c.0 == PING || is_fidelity_source(c.0)),
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

async fn wait_replica(
    log: &Path,
    db: &MariaDb,
    seed: u64,
    what: &str,
    consumer: &mut DatabusProcess,
    with_fidelity: bool,
) -> Vec<Line> {
    let want = source_rows(db).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fidelity_diff = String::new();
    loop {
        let lines = parse_log(log);
        if fold(&lines) == want {
            if !with_fidelity {
                return lines;
            }
            match compare_fidelity(db, &lines).await {
                Ok(()) => return lines,
                Err(e) => fidelity_diff = e,
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
                "seed {seed}: {what} never matched the source ({} vs {} rows); missing or different {missing:?}, extra {extra:?}; fidelity tables: {fidelity_diff}; log:\n{}",
                got.len(),
                want.len(),
                consumer.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts a producer that was down while more than the relay's buffer was written (unless the next
/// fault cut its downtime short): it comes back behind the relay and must fill the gap from the source
/// by itself before the run goes on (a purge scheduled later must not take the binlog it reads).
async fn restart_producer_past_buffer(w: &mut World, seed: u64) {
    // The relay may still be reconnecting after a fault of its own or of MariaDB: let it read what
    // was written, so that it evicts what it will evict.
    let scn = source_scn(&w.db).await;
    wait_relay_at(&w.relay, scn).await;
    let logged = b(|| http_get(w.boot_addr, "/v1/status"))
        .unwrap()
        .json()
        .unwrap()["log_last_scn"]
        .as_u64()
        .unwrap_or(0);
    let relay = b(|| w.relay.get("/v1/status")).unwrap().json().unwrap();
    let min = relay["buffers"][0]["min_scn"].as_u64().unwrap_or(0);
    w.producer = b(|| bootstrap_role("producer", &w.dir.join("bootstrap.toml")));
    let scn = source_scn(&w.db).await;
    wait_bootstrap_log_at(w.boot_addr, scn, seed).await;
    if min > logged + 1 {
        eprintln!(
            "seed {seed}: the producer filled the relay gap after SCN {logged} from the source"
        );
    } else {
        // The next fault came before a buffer's worth was written (its restart comes first): this
        // one was a plain producer kill.
        eprintln!(
            "seed {seed}: the relay still held the producer's position (min {min}, log at {logged})"
        );
    }
}

/// Purges the binlog past the producer's log (it stays down meanwhile), then restarts it: it cannot
/// fill the gap from anywhere and re-seeds into a new generation, which the server then serves.
async fn restart_producer_past_binlog(w: &mut World, conn: &mut mysql_async::Conn, seed: u64) {
    let scn = source_scn(&w.db).await;
    wait_relay_at(&w.relay, scn).await;
    let before = b(|| http_get(w.boot_addr, "/v1/status"))
        .unwrap()
        .json()
        .unwrap();
    let logged = before["log_last_scn"].as_u64().unwrap_or(0);
    let relay = b(|| w.relay.get("/v1/status")).unwrap().json().unwrap();
    let min = relay["buffers"][0]["min_scn"].as_u64().unwrap_or(0);
    purge_what_the_relay_persisted(w, conn, seed).await;
    w.producer = b(|| bootstrap_role("producer", &w.dir.join("bootstrap.toml")));
    let scn = source_scn(&w.db).await;
    // The old generation's log never moves again; the new one's reaches `scn` once published.
    let deadline = Instant::now() + Duration::from_secs(120);
    let generation = loop {
        let st = b(|| http_get(w.boot_addr, "/v1/status").and_then(|r| r.json()));
        if let Ok(st) = &st
            && st["log_last_scn"].as_u64().is_some_and(|m| m >= scn)
        {
            break st["generation"].as_u64().unwrap_or(0);
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the bootstrap log never reached SCN {scn}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let was = before["generation"].as_u64().unwrap_or(0);
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

/// How much a run writes per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Small transactions; 100 kB ones only while a consumer (or the producer) is to fall off.
    Normal,
    /// The small-buffer variant: every transaction carries a 100 kB row, so the 1 MiB relay buffer
    /// covers about ten transactions and any kill can put the producer or the consumer past it.
    Heavy,
}

async fn run_seed(seed: u64, txns: i64, rounds: usize, with_fidelity: bool) {
    run_seed_with(seed, txns, rounds, Load::Normal, with_fidelity).await
}

async fn run_seed_with(seed: u64, txns: i64, rounds: usize, load: Load, with_fidelity: bool) {
    let started = std::time::Instant::now();
    let mut rng = SeededRng::new(seed);
    let plan = schedule(&mut rng, txns, rounds);
    eprintln!("seed {seed}: {load:?} load, plan {plan:?}");
    let mut w = start_world(seed, "1MiB", with_fidelity).await;
    let mut fid = with_fidelity.then(|| FidelityWorkload::new(seed));
    let mut exp = Expected::default();
    let mut pending_restart: Option<(i64, Fault)> = None;
    let mut fatal_stops = 0;
    // Whether the running consumer process still has its fatal callback ahead.
    let mut fatal_armed = true;
    let mut conn = w.db.root_conn().await.unwrap();
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
            w.consumer = b(|| spawn_consumer(&w.consumer_args));
        }
        let fault_now = plan.iter().any(|(at, _, _)| *at == t);
        if let Some((at, fault)) = pending_restart
            && (t >= at || fault_now)
        {
            match fault {
                Fault::KillRelay => b(|| w.relay.restart()).unwrap(),
                Fault::KillProducer => {
                    w.producer = b(|| bootstrap_role("producer", &w.dir.join("bootstrap.toml")))
                }
                Fault::ProducerPastBuffer => restart_producer_past_buffer(&mut w, seed).await,
                Fault::ProducerPastBinlog => {
                    restart_producer_past_binlog(&mut w, &mut conn, seed).await
                }
                Fault::KillApplier => {
                    w.applier = b(|| bootstrap_role("applier", &w.dir.join("bootstrap.toml")))
                }
                Fault::KillConsumer => {
                    // Killed before its fatal callback: keep it armed unless the run is nearly over.
                    fatal_armed &= t < txns - 40;
                    let args = if fatal_armed {
                        &w.fatal_args
                    } else {
                        &w.consumer_args
                    };
                    w.consumer = b(|| spawn_consumer(args));
                }
                _ => {}
            }
            pending_restart = None;
        }
        if let Some(&(_, fault, down)) = plan.iter().find(|(at, _, _)| *at == t) {
            eprintln!("seed {seed}: {fault:?} at transaction {t}");
            match fault {
                Fault::KillRelay => w.relay.kill9(),
                Fault::KillProducer | Fault::ProducerPastBuffer | Fault::ProducerPastBinlog => {
                    w.producer.kill9()
                }
                Fault::KillApplier => w.applier.kill9(),
                Fault::KillConsumer => w.consumer.kill9(),
                Fault::RestartMariaDb => {
                    drop(conn);
                    // Odd seeds stop the server cleanly, even ones crash it (SIGKILL).
                    if seed % 2 == 1 {
                        w.db.restart().await.unwrap();
                    } else {
                        w.db.kill9();
                        w.db.start_again().await.unwrap();
                    }
                    conn = w.db.root_conn().await.unwrap();
                }
                Fault::RestartRelayWhileSourceDown => {
                    // The fault is about a reader waiting at the head of the restarted relay. A
                    // reader behind it when it restarts (empty buffer: the source it would refill
                    // from is down) falls off it instead: the consumer to the bootstrap server, the
                    // producer to the source, which is down, so nobody would wait. Under load (small
                    // buffer, 100 kB rows) both can trail, so let the producer catch up first.
                    let scn = source_scn(&w.db).await;
                    wait_bootstrap_log_at(w.boot_addr, scn, seed).await;
                    drop(conn);
                    w.relay.kill9();
                    // Odd seeds stop the server cleanly, even ones crash it (SIGKILL).
                    if seed % 2 == 1 {
                        w.db.stop().await.unwrap();
                    } else {
                        w.db.kill9();
                    }
                    b(|| w.relay.restart()).unwrap();
                    // The replica and the producer (whichever is up) come back to the relay and wait
                    // in it before its source is back.
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
                    conn = w.db.root_conn().await.unwrap();
                }
                Fault::FlushAndPurge => {
                    // Purge only what the bootstrap producer has logged too, as docs/operations.md
                    // asks (a producer that falls off the relay fills the gap from the binlog); a
                    // source that purged it as well is the ProducerPastBinlog fault (a re-seed). A
                    // producer killed earlier was restarted before this fault (fault_now above).
                    let scn = source_scn(&w.db).await;
                    wait_bootstrap_log_at(w.boot_addr, scn, seed).await;
                    purge_what_the_relay_persisted(&w, &mut conn, seed).await;
                }
            }
            if matches!(
                fault,
                Fault::KillRelay
                    | Fault::KillProducer
                    | Fault::KillApplier
                    | Fault::KillConsumer
                    | Fault::ProducerPastBuffer
                    | Fault::ProducerPastBinlog
            ) {
                // The consumer (or the producer) stays down while more than the relay's buffer is
                // written, so that it comes back behind the relay: the consumer catches up through
                // the bootstrap server, the producer fills the gap from the source.
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
        write_txn(&mut conn, t, &mut rng, &mut exp, big)
            .await
            .unwrap();
        if let Some(fid) = &mut fid {
            fid.run(&mut conn, 1).await.unwrap();
        }
        if load == Load::Normal && matches!(pending_restart, Some((_, Fault::KillConsumer))) {
            // The consumer is to fall off the relay here, not the bootstrap producer (that is
            // ProducerPastBuffer's part).
            let scn = source_scn(&w.db).await;
            wait_bootstrap_log_at(w.boot_addr, scn, seed).await;
        }
        // Pacing of the workload (not a wait for a condition): a few ms between transactions.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 12))).await;
    }
    if let Some((_, fault)) = pending_restart.take() {
        match fault {
            Fault::KillRelay => b(|| w.relay.restart()).unwrap(),
            Fault::KillProducer => {
                w.producer = b(|| bootstrap_role("producer", &w.dir.join("bootstrap.toml")))
            }
            Fault::ProducerPastBuffer => restart_producer_past_buffer(&mut w, seed).await,
            Fault::ProducerPastBinlog => {
                let mut conn = w.db.root_conn().await.unwrap();
                restart_producer_past_binlog(&mut w, &mut conn, seed).await
            }
            Fault::KillApplier => {
                w.applier = b(|| bootstrap_role("applier", &w.dir.join("bootstrap.toml")))
            }
            Fault::KillConsumer => {
                fatal_armed = false;
                w.consumer = b(|| spawn_consumer(&w.consumer_args));
            }
            _ => {}
        }
    }
    conn.disconnect().await.unwrap();

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
        w.consumer = b(|| spawn_consumer(&w.consumer_args));
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
    let lines = wait_replica(
        &log,
        &w.db,
        seed,
        "the replica",
        &mut w.consumer,
        with_fidelity,
    )
    .await;
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
    let mut fresh = b(|| spawn_consumer(&args));
    wait_replica(
        &w.dir.join("fresh.log"),
        &w.db,
        seed,
        "the snapshot consumer",
        &mut fresh,
        with_fidelity,
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
        "seed {seed}: ok in {:?}: {} consumer log lines, {replays} replayed windows, {bootstraps} bootstraps{}",
        started.elapsed(),
        lines.len(),
        fid.map(|f| format!(", fidelity mix {:?}", f.stats()))
            .unwrap_or_default()
    );
    // Stop every process (by pid) before removing the directory they write to.
    let dir = w.dir.clone();
    drop(w);
    databus_integration::faults::set_process_log_dir(None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_a_write_workload_lose_nothing() {
    for seed in fault_seeds(&[1, 2]).unwrap() {
        run_seed(seed, 150, 1, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: many seeds, longer workloads (see the module docs)"]
async fn soak() {
    for seed in fault_seeds(&(1..=20).collect::<Vec<_>>()).unwrap() {
        run_seed(seed, 400, 3, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_the_fidelity_workload_lose_nothing() {
    for seed in fault_seeds(&[3, 4]).unwrap() {
        run_seed(seed, 150, 1, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the fidelity soak: many seeds, longer workloads (see the module docs)"]
async fn soak_fidelity() {
    for seed in fault_seeds(&(1..=20).collect::<Vec<_>>()).unwrap() {
        run_seed(seed, 400, 3, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the small-buffer soak: every transaction 100 kB against a 1 MiB relay buffer"]
async fn soak_small_buffer() {
    for seed in fault_seeds(&(1..=10).collect::<Vec<_>>()).unwrap() {
        run_seed_with(seed, 200, 2, Load::Heavy, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_the_relay_buffer_is_a_clear_error_and_nothing_partial() {
    let mut w = start_world(0, "1MiB", false).await;
    let mut rng = SeededRng::new(0);
    let mut exp = Expected::default();
    let mut conn = w.db.root_conn().await.unwrap();
    for t in 1..=5 {
        write_txn(&mut conn, t, &mut rng, &mut exp, false)
            .await
            .unwrap();
    }
    let scn = source_scn(&w.db).await;
    wait_relay_at(&w.relay, scn).await;
    // About 3 MB in one transaction: 12000 rows of ~250 bytes.
    let mut tx = conn.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("INSERT INTO shop.txlog VALUES (6)", ())
        .await
        .unwrap();
    for chunk in 0..12 {
        let values: Vec<String> = (0..1000)
            .map(|i| format!("({}, 6, '{}')", 1000 + chunk * 1000 + i, "y".repeat(60)))
            .collect();
        tx.query_drop(format!("INSERT INTO shop.a VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let status = b(|| w.relay.wait_ingest_state("failed", Duration::from_secs(60))).unwrap();
    let error = status["buffers"][0]["ingest"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("buffer_size"), "the fix is named: {error}");
    let health = b(|| w.relay.get("/health")).unwrap();
    assert_eq!(health.status, 503);
    // Everything before it arrived whole; nothing of it did.
    let log = w.dir.join("replica.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = parse_log(&log);
        if check_windows(&lines, &exp, 0).0 == 5 {
            let replica = fold(&lines);
            assert!(
                !replica.contains_key(&(TXLOG, 6)),
                "nothing of the big transaction"
            );
            assert!(replica.keys().all(|(s, k)| *s != A || *k < 1000));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "transactions 1..=5 never arrived: {}",
            w.consumer.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The relay keeps serving what it holds.
    assert_eq!(b(|| w.relay.get("/v1/sources")).unwrap().status, 200);
    assert!(
        w.consumer.exited().is_none(),
        "the consumer waits: {}",
        w.consumer.log()
    );
    // Stop every process (by pid) before removing the directory they write to.
    let dir = w.dir.clone();
    drop(w);
    databus_integration::faults::set_process_log_dir(None);
    let _ = std::fs::remove_dir_all(&dir);
}
