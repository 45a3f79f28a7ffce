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
//! DATABUS_FAULT_SEEDS=1..50 cargo test -p databus-integration --test it -- --ignored --exact faults::soak
//! ```
//!
//! The small-buffer variant (`soak_small_buffer`) writes a 100 kB row in every transaction, so the
//! relay's 1 MiB buffer covers about ten transactions and every kill can put the producer or the
//! consumer past it: both must repair themselves (the producer from the source, the consumer through
//! the bootstrap server):
//!
//! ```text
//! DATABUS_FAULT_SEEDS=1..10 cargo test -p databus-integration --test it -- --ignored --exact faults::soak_small_buffer
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
//! DATABUS_FAULT_SEEDS=1..100 cargo test -p databus-integration --test it faults::soak_fidelity -- --ignored
//! ```
//!
//! A transaction larger than the relay's buffer is its own test: a clear error, nothing of it delivered.
//!
//! The run itself (the tables, the workload, the schedule, the processes and the checks) is
//! [`databus_integration::soak`], shared with the PostgreSQL run (`pg_faults.rs`); this file is the
//! MariaDB source ([`MariaSource`]) and its extras (the fidelity tables, the binlog purge).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use databus_integration::checker::json_row;
use databus_integration::faults::{RelayProcess, SeededRng, fault_seeds};
use databus_integration::fidelity::{self, COMPOSITE, FidelityWorkload, SINGLE};
use databus_integration::soak::{
    self, A, Expected, Fault, Line, Load, PASSWORD, ROW_QUERIES, SoakSource, TXLOG, TxnPlan, World,
    b, check_windows, fold, parse_log, wait_relay_at,
};
use databus_integration::{Columns, Row, compare_tables, row_key, source_rows_keyed};
use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

/// The MariaDB source of a run: the server, the connection the workload writes on, and with the
/// fidelity mix its workload on two more captured tables.
#[derive(Debug)]
struct MariaSource {
    db: MariaDb,
    conn: Option<mysql_async::Conn>,
    /// `mysql://repl@127.0.0.1:port/` (the password in `FAULT_PW`).
    url: String,
    fid: Option<FidelityWorkload>,
}

impl MariaSource {
    async fn start(seed: u64, with_fidelity: bool) -> MariaSource {
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
        let url = db.create_user_with_grants("repl", PASSWORD).await.unwrap();
        let conn = Some(db.root_conn().await.unwrap());
        MariaSource {
            db,
            conn,
            url: url.replace(&format!(":{PASSWORD}@"), "@"),
            fid: with_fidelity.then(|| FidelityWorkload::new(seed)),
        }
    }

    async fn conn(&mut self) -> Result<&mut mysql_async::Conn> {
        if self.conn.is_none() {
            self.conn = Some(self.db.root_conn().await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

impl SoakSource for MariaSource {
    const FAULTS: &'static [Fault] = &[
        Fault::KillRelay,
        Fault::KillProducer,
        Fault::KillApplier,
        Fault::KillConsumer,
        Fault::RestartSource,
        Fault::FlushAndPurge,
        Fault::RestartRelayWhileSourceDown,
        Fault::ProducerPastBuffer,
        Fault::ProducerPastBinlog,
    ];
    const FILLS_GAPS: bool = true;
    const NAME: &'static str = "mariadb";

    fn connector(&self) -> String {
        format!(
            r#"connector = {{ kind = "mariadb", url = "{}", password_env = "FAULT_PW", server_id = 1001 }}"#,
            self.url
        )
    }

    fn extra_tables(&self) -> String {
        if self.fid.is_none() {
            return String::new();
        }
        format!(
            "\n    {{ id = {SINGLE}, name = \"single\", table = \"fid.single\" }},\n    \
             {{ id = {COMPOSITE}, name = \"composite\", table = \"fid.composite\" }},"
        )
    }

    fn bootstrap_sections(&self, relay_source_entry: &str) -> String {
        format!(
            "[seed]\nurl = \"{}\"\npassword_env = \"FAULT_PW\"\nchunk_rows = 500\n[source]\n{}",
            // The source, for a re-seed when the gap is purged from the binlog too.
            self.url,
            // The relay's own entry, with a server id of its own: a producer that fell off the
            // relay fills the gap from the binlog.
            relay_source_entry
                .replace("server_id = 1001", "server_id = 1003")
                .replace("history_transactions = 100000\n", "")
        )
    }

    async fn write(&mut self, plan: &TxnPlan) -> Result<()> {
        let t = plan.t;
        let mut tx = self
            .conn()
            .await?
            .start_transaction(Default::default())
            .await?;
        tx.exec_drop("INSERT INTO shop.txlog VALUES (?)", (t,))
            .await?;
        tx.exec_drop(
            "INSERT INTO shop.a VALUES (?, ?, ?)",
            (t, t, format!("a{t}")),
        )
        .await?;
        if plan.big {
            tx.exec_drop(
                "INSERT INTO shop.filler VALUES (?, ?, REPEAT('z', 100000))",
                (t, t),
            )
            .await?;
        }
        if let Some(id) = plan.b {
            tx.exec_drop(
                "INSERT INTO shop.b VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE seq = VALUES(seq), tag = VALUES(tag)",
                (id, t, format!("b{t}")),
            )
            .await?;
        }
        if let Some(id) = plan.delete {
            tx.exec_drop("DELETE FROM shop.a WHERE id = ?", (id,))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&mut self) -> Result<()> {
        self.conn()
            .await?
            .query_drop("UPDATE shop.ping SET n = n + 1 WHERE id = 1")
            .await?;
        Ok(())
    }

    async fn after_txn(&mut self) -> Result<()> {
        let Some(fid) = self.fid.as_mut() else {
            return Ok(());
        };
        if self.conn.is_none() {
            self.conn = Some(self.db.root_conn().await?);
        }
        fid.run(self.conn.as_mut().expect("connected above"), 1)
            .await?;
        Ok(())
    }

    /// The source's current GTID sequence number (the SCN of its last transaction).
    async fn scn(&mut self) -> Result<u64> {
        let pos = self.db.gtid_binlog_pos().await?;
        Ok(pos
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    async fn rows(&mut self) -> Result<BTreeMap<(u16, i64), i64>> {
        let mut conn = self.db.root_conn().await?;
        let mut rows = BTreeMap::new();
        for (source, sql) in ROW_QUERIES {
            let r: Vec<(i64, i64)> = conn.query(sql).await?;
            for (k, s) in r {
                rows.insert((source, k), s);
            }
        }
        conn.disconnect().await?;
        Ok(rows)
    }

    async fn compare_extra(&mut self, lines: &[Line]) -> Result<(), String> {
        if self.fid.is_none() {
            return Ok(());
        }
        compare_fidelity(&self.db, lines).await
    }

    async fn stop(&mut self, crash: bool) -> Result<()> {
        self.conn = None;
        if crash {
            self.db.kill9();
        } else {
            self.db.stop().await?;
        }
        Ok(())
    }

    async fn start_again(&mut self) -> Result<()> {
        Ok(self.db.start_again().await?)
    }

    /// FLUSH BINARY LOGS, then purges every binlog but the newest once the relay has persisted what
    /// they hold (a restarted relay resumes after its persisted SCN, which trails what it has read by
    /// up to a second), as an operator purging by age would. Pings keep events flowing until it is.
    async fn purge(&mut self, relay: &RelayProcess, state_file: &Path, seed: u64) -> Result<()> {
        self.conn().await?.query_drop("FLUSH BINARY LOGS").await?;
        let scn = self.scn().await?;
        wait_relay_at(relay, scn).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let persisted = std::fs::read_to_string(state_file)
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
            self.ping().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let row: Option<mysql_async::Row> =
            self.conn().await?.query_first("SHOW MASTER STATUS").await?;
        let file: String = row
            .context("no SHOW MASTER STATUS row")?
            .get(0)
            .context("no file")?;
        self.db.purge_binary_logs_to(&file).await?;
        Ok(())
    }

    fn stats(&self) -> String {
        self.fid
            .as_ref()
            .map(|f| format!(", fidelity mix {:?}", f.stats()))
            .unwrap_or_default()
    }
}

fn is_fidelity_source(source: u16) -> bool {
    source == SINGLE || source == COMPOSITE
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

async fn run_seed_with(seed: u64, txns: i64, rounds: usize, load: Load, with_fidelity: bool) {
    let db = MariaSource::start(seed, with_fidelity).await;
    soak::run_seed(db, fault_consumer(), seed, txns, rounds, load).await
}

/// The `fault_consumer` binary of this package (cargo builds it for the tests).
pub(crate) fn fault_consumer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fault_consumer"))
}

async fn run_seed(seed: u64, txns: i64, rounds: usize, with_fidelity: bool) {
    run_seed_with(seed, txns, rounds, Load::Normal, with_fidelity).await
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
    let db = MariaSource::start(0, false).await;
    let mut w = World::start(db, 0, "1MiB", fault_consumer()).await;
    let mut rng = SeededRng::new(0);
    let mut exp = Expected::default();
    for t in 1..=5 {
        let txn = TxnPlan::draw(t, &mut rng, &exp, false);
        w.db.write(&txn).await.unwrap();
        exp.commit(txn);
    }
    let scn = w.db.scn().await.unwrap();
    wait_relay_at(&w.relay, scn).await;
    // About 3 MB in one transaction: 12000 rows of ~250 bytes.
    let mut conn = w.db.db.root_conn().await.unwrap();
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
    w.finish();
}
