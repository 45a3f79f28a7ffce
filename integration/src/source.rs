//! The scenarios' source database, MariaDB or PostgreSQL ([`SourceKind`]), so that one scenario
//! runs on both: [`Source`] starts a private server with the workload's tables (`shop.items` and
//! `shop.txlog`: database `shop` on MariaDB, schema `shop` on PostgreSQL, with `REPLICA IDENTITY
//! FULL` so deletes carry the whole row), names it to a relay ([`Source::relay_source`]), writes the
//! workload ([`Source::writer`], [`Source::spawn_workload`]), runs DDL ([`Source::exec`]) and reads
//! its rows in the checker's canonical form ([`Source::rows`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use databus_testkit::{MariaDb, MariaDbOptions, Postgres};

use crate::checker::Row;
use crate::process::{Relay, RelaySource, RelaySpec};
use crate::workload::{self, TxRecord, TxWriter, Workload};

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// MariaDB (binlog replication).
    MariaDb,
    /// PostgreSQL (logical replication, `pgoutput`).
    Postgres,
}

/// The workload's tables on PostgreSQL (as [`workload::SCHEMA`] on MariaDB).
pub const PG_SCHEMA: &[&str] = &[
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.items (id INT PRIMARY KEY, seq BIGINT NOT NULL, val VARCHAR(64) NOT NULL, \
     qty INT NULL, pad VARCHAR(1024) NOT NULL DEFAULT '')",
    "ALTER TABLE shop.items REPLICA IDENTITY FULL",
    "CREATE TABLE shop.txlog (seq BIGINT PRIMARY KEY, changes INT NOT NULL)",
    "ALTER TABLE shop.txlog REPLICA IDENTITY FULL",
];

/// The slot and publication of a PostgreSQL scenario's relays.
pub const PG_SLOT: &str = "databus_e2e";

/// A private source database with the workload's tables.
#[derive(Debug)]
pub enum Source {
    /// A MariaDB server.
    MariaDb(MariaDb),
    /// A PostgreSQL server.
    Postgres(Postgres),
}

/// A connection the workload writes on.
#[derive(Debug)]
pub enum Writer {
    /// To MariaDB.
    MariaDb(mysql_async::Conn),
    /// To PostgreSQL.
    Postgres(tokio_postgres::Client),
}

impl TxWriter for Writer {
    async fn write_tx(&mut self, tx: &TxRecord) -> Result<()> {
        match self {
            Writer::MariaDb(conn) => conn.write_tx(tx).await,
            Writer::Postgres(client) => client.write_tx(tx).await,
        }
    }
}

impl Source {
    /// Starts a private server of `kind` with the workload's tables.
    pub async fn start(kind: SourceKind) -> Result<Source> {
        Ok(match kind {
            SourceKind::MariaDb => {
                let db = MariaDb::start(MariaDbOptions::default()).await?;
                db.exec(workload::SCHEMA).await?;
                Source::MariaDb(db)
            }
            SourceKind::Postgres => {
                let pg = Postgres::start().await?;
                pg.exec(PG_SCHEMA).await?;
                Source::Postgres(pg)
            }
        })
    }

    /// Its kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::MariaDb(_) => SourceKind::MariaDb,
            Source::Postgres(_) => SourceKind::Postgres,
        }
    }

    /// The source of a relay capturing it: a replication user (MariaDB, server id 1001) or the
    /// superuser with slot and publication [`PG_SLOT`] (PostgreSQL; the relay creates both).
    pub async fn relay_source(&self) -> Result<RelaySource> {
        Ok(match self {
            Source::MariaDb(db) => RelaySource::Database {
                url: db.create_user_with_grants("repl", "repl-pw").await?,
                server_id: 1001,
            },
            Source::Postgres(pg) => RelaySource::Postgres {
                host: "127.0.0.1".into(),
                port: pg.port(),
                user: "postgres".into(),
                password: Postgres::PASSWORD.into(),
                database: "postgres".into(),
                slot: PG_SLOT.into(),
            },
        })
    }

    /// A new connection for the workload.
    pub async fn writer(&self) -> Result<Writer> {
        Ok(match self {
            Source::MariaDb(db) => Writer::MariaDb(db.root_conn().await?),
            Source::Postgres(pg) => Writer::Postgres(pg.client().await?),
        })
    }

    /// Runs `n` transactions of `work` on a new connection in a task, pausing `pace` between them
    /// ([`Workload::spawn`]).
    pub fn spawn_workload(
        &self,
        work: Workload,
        n: usize,
        pace: Duration,
    ) -> tokio::task::JoinHandle<Result<Workload>> {
        match self {
            Source::MariaDb(db) => work.spawn(db.url(), n, pace),
            Source::Postgres(pg) => work.spawn_pg(pg.config(), n, pace),
        }
    }

    /// Runs statements (DDL), each committed on its own.
    pub async fn exec(&self, statements: &[&str]) -> Result<()> {
        match self {
            Source::MariaDb(db) => db.exec(statements).await?,
            Source::Postgres(pg) => pg.exec(statements).await?,
        }
        Ok(())
    }

    /// Runs statements in one transaction.
    pub async fn exec_tx(&self, statements: &[&str]) -> Result<()> {
        match self {
            Source::MariaDb(db) => db.exec_tx(statements).await?,
            Source::Postgres(pg) => pg.exec_tx(statements).await?,
        }
        Ok(())
    }

    /// Every row of `table` by the text of `key`, in the checker's canonical form.
    pub async fn rows(&self, table: &str, key: &str) -> Result<BTreeMap<String, Row>> {
        match self {
            Source::MariaDb(db) => {
                let mut conn = db.root_conn().await?;
                let rows = crate::checker::source_rows(&mut conn, table, key).await?;
                conn.disconnect().await?;
                Ok(rows)
            }
            Source::Postgres(pg) => crate::pg::pg_rows(pg, table, key).await,
        }
    }
}

/// [`crate::start_pipeline`] on a source of `kind`: the source with the workload's tables and a
/// relay capturing them with a buffer of `buffer_size`, streaming.
pub async fn start_pipeline_on(kind: SourceKind, buffer_size: &str) -> Result<(Source, Relay)> {
    let source = Source::start(kind).await?;
    let relay = Relay::start(RelaySpec {
        source: source.relay_source().await?,
        tables: workload::tables(),
        buffer_size: buffer_size.to_owned(),
    })
    .await?;
    Ok((source, relay))
}
