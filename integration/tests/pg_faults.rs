//! Fault injection on PostgreSQL, seeded and repeatable (issue 17): the run of `faults.rs`
//! ([`databus_integration::soak`]) on a private PostgreSQL captured by logical replication
//! (`kind = "postgres"`, a capture role with `REPLICATION`, a publication of the five tables of schema
//! `shop`, each `REPLICA IDENTITY FULL`), with the bootstrap server seeded from the same PostgreSQL (a
//! `postgres://` `[seed] url` naming the relay's slot and publication).
//!
//! A write workload commits PostgreSQL transactions touching one to three tables (inserts, an
//! `INSERT ... ON CONFLICT DO UPDATE` upsert, deletes; a 100 kB row while a process is to fall off the
//! relay's 1 MiB buffer). At points the seed picks, each of these happens once (three times in the
//! soak), in the seed's order: SIGKILL and restart of the relay, of the bootstrap producer, applier
//! and server, and of the consumer (down while more than the relay's buffer is written, so it comes
//! back through the bootstrap server); a PostgreSQL restart (a clean fast shutdown for odd seeds,
//! SIGKILL of the postmaster, with crash recovery, for even ones); the relay killed while PostgreSQL
//! is down and restarted before it; and the bootstrap producer down while more than the relay's buffer
//! is written. PostgreSQL keeps no history to fill that gap from (a slot releases WAL before its
//! confirmed position, and the relay's slot is the relay's), so the producer has no `[source]`: it
//! re-seeds from PostgreSQL into a new store generation by itself, and the run asserts that it did
//! (MariaDB fills the gap from its binlog instead). There is no binlog purge on PostgreSQL. The
//! consumer's callback fails (retry) for 3% of events, and once for good (fatal: the process stops
//! and is restarted from its checkpoint).
//!
//! After each run: the consumer's replica equals the source row by row; every transaction arrived as
//! exactly one window holding exactly its changes, in commit order, each exactly once apart from
//! replays of uncheckpointed windows (no gap); and a new consumer that starts from the bootstrap
//! server's snapshot ends equal to the source too.
//!
//! The CI test runs the default seeds; the soak (`soak`, ignored) reads `DATABUS_FAULT_SEEDS` (`3`,
//! `1,5,9`, `1..50`; default `1..6`) and runs 400 transactions with each fault three times per seed:
//!
//! ```text
//! cargo build -p databus-cli
//! DATABUS_FAULT_SEEDS=1..6 cargo test -p databus-integration --test it -- --ignored --exact pg_faults::soak --nocapture
//! ```

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use databus_integration::faults::fault_seeds;
use databus_integration::pg::lsn;
use databus_integration::soak::{self, Fault, Load, PASSWORD, ROW_QUERIES, SoakSource, TxnPlan};

use crate::faults::fault_consumer;
use databus_testkit::Postgres;

const SLOT: &str = "databus_fault";

/// The PostgreSQL source of a run: the server, the connection the workload writes on, and the WAL
/// insert position read inside the last transaction before its commit (see [`PgSource::scn`]).
#[derive(Debug)]
struct PgSource {
    pg: Postgres,
    client: Option<tokio_postgres::Client>,
    floor: u64,
}

impl PgSource {
    async fn start() -> Result<PgSource> {
        let pg = Postgres::start().await?;
        pg.exec(&[
            "CREATE SCHEMA shop",
            "CREATE TABLE shop.a (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, tag VARCHAR(64) NOT NULL)",
            "CREATE TABLE shop.b (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, tag VARCHAR(64) NOT NULL)",
            "CREATE TABLE shop.txlog (t BIGINT PRIMARY KEY)",
            "CREATE TABLE shop.ping (id INT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TABLE shop.filler (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, body TEXT NOT NULL)",
            "ALTER TABLE shop.a REPLICA IDENTITY FULL",
            "ALTER TABLE shop.b REPLICA IDENTITY FULL",
            "ALTER TABLE shop.txlog REPLICA IDENTITY FULL",
            "ALTER TABLE shop.ping REPLICA IDENTITY FULL",
            "ALTER TABLE shop.filler REPLICA IDENTITY FULL",
            "INSERT INTO shop.ping VALUES (1, 0)",
            &format!(
                "CREATE PUBLICATION {SLOT} FOR TABLE shop.a, shop.b, shop.txlog, shop.ping, shop.filler"
            ),
            &format!("CREATE ROLE capture LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
            "GRANT USAGE ON SCHEMA shop TO capture",
            "GRANT SELECT ON ALL TABLES IN SCHEMA shop TO capture",
        ])
        .await?;
        Ok(PgSource {
            pg,
            client: None,
            floor: 0,
        })
    }

    async fn client(&mut self) -> Result<&mut tokio_postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.pg.client().await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Commits `tx` after reading the WAL insert position inside it (the floor of its commit LSN).
    async fn commit(tx: tokio_postgres::Transaction<'_>) -> Result<u64> {
        let floor: String = tx
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0);
        tx.commit().await?;
        lsn(&floor)
    }
}

impl SoakSource for PgSource {
    const FAULTS: &'static [Fault] = &[
        Fault::KillRelay,
        Fault::KillProducer,
        Fault::KillApplier,
        Fault::KillServer,
        Fault::KillConsumer,
        Fault::RestartSource,
        Fault::RestartRelayWhileSourceDown,
        Fault::ProducerPastBuffer,
    ];
    const FILLS_GAPS: bool = false;
    const NAME: &'static str = "postgres";

    fn connector(&self) -> String {
        format!(
            r#"connector = {{ kind = "postgres", host = "127.0.0.1", port = {}, user = "capture", password_env = "FAULT_PW", database = "postgres", slot = "{SLOT}", publication = "{SLOT}", heartbeat_interval = "200ms" }}"#,
            self.pg.port()
        )
    }

    /// A `[seed]` from the relay's slot; no `[source]` (PostgreSQL cannot fill a relay gap: the
    /// producer re-seeds).
    fn bootstrap_sections(&self, _relay_source_entry: &str) -> String {
        format!(
            "[seed]\nurl = \"postgres://capture@127.0.0.1:{}/postgres?slot={SLOT}&publication={SLOT}\"\n\
             password_env = \"FAULT_PW\"\nchunk_rows = 500\n",
            self.pg.port()
        )
    }

    async fn write(&mut self, plan: &TxnPlan) -> Result<()> {
        let t = plan.t;
        let client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("INSERT INTO shop.txlog VALUES ($1)", &[&t])
            .await?;
        tx.execute(
            "INSERT INTO shop.a VALUES ($1, $2, $3)",
            &[&t, &t, &format!("a{t}")],
        )
        .await?;
        if plan.big {
            tx.execute(
                "INSERT INTO shop.filler VALUES ($1, $2, repeat('z', 100000))",
                &[&t, &t],
            )
            .await?;
        }
        if let Some(id) = plan.b {
            tx.execute(
                "INSERT INTO shop.b VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, tag = EXCLUDED.tag",
                &[&id, &t, &format!("b{t}")],
            )
            .await?;
        }
        if let Some(id) = plan.delete {
            tx.execute("DELETE FROM shop.a WHERE id = $1", &[&id])
                .await?;
        }
        self.floor = PgSource::commit(tx).await?;
        Ok(())
    }

    async fn ping(&mut self) -> Result<()> {
        let client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("UPDATE shop.ping SET n = n + 1 WHERE id = 1", &[])
            .await?;
        self.floor = PgSource::commit(tx).await?;
        Ok(())
    }

    /// The WAL insert position read inside the last transaction before its `COMMIT`: its commit
    /// record (its SCN, the commit LSN) comes at or after it, every earlier transaction's before it.
    /// So the relay's `max_scn` reaches it exactly when the relay holds that transaction.
    async fn scn(&mut self) -> Result<u64> {
        Ok(self.floor)
    }

    async fn rows(&mut self) -> Result<BTreeMap<(u16, i64), i64>> {
        let client = self.pg.client().await?;
        let mut rows = BTreeMap::new();
        for (source, sql) in ROW_QUERIES {
            for r in client.query(sql, &[]).await.context(sql)? {
                rows.insert((source, r.get::<_, i64>(0)), r.get::<_, i64>(1));
            }
        }
        Ok(rows)
    }

    async fn stop(&mut self, crash: bool) -> Result<()> {
        self.client = None;
        if crash {
            self.pg.kill9();
        } else {
            self.pg.stop().await?;
        }
        Ok(())
    }

    async fn start_again(&mut self) -> Result<()> {
        Ok(self.pg.start_again().await?)
    }
}

async fn run_seed(seed: u64, txns: i64, rounds: usize) {
    let db = PgSource::start().await.unwrap();
    soak::run_seed(db, fault_consumer(), seed, txns, rounds, Load::Normal).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_a_postgres_write_workload_lose_nothing() {
    for seed in fault_seeds(&[1, 2, 3, 4]).unwrap() {
        run_seed(seed, 150, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the PostgreSQL soak: many seeds, longer workloads (see the module docs)"]
async fn soak() {
    for seed in fault_seeds(&(1..=6).collect::<Vec<_>>()).unwrap() {
        run_seed(seed, 400, 3).await;
    }
}
