//! The quickstart's private source database: one arm per kind of source (`--source`).
//!
//! Each kind starts its own server in a temporary directory on a free port, creates the demo's `shop`
//! schema and a capture user, and runs the workload's transactions. The quickstart only sees this
//! module's [`DemoDb`] and [`Session`], so a new source kind is one more arm here and one in the
//! relay's `[sources.connector]` table.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;

use crate::mariadb::PrivateMariaDb;

/// The kinds of source database the quickstart demonstrates (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QuickstartSource {
    /// A private MariaDB server (`kind = "mariadb"`): the binlog in ROW format.
    #[default]
    Mariadb,
    /// A private PostgreSQL server (`kind = "postgres"`): logical replication with `pgoutput`.
    Postgres,
}

/// The demo's private database server.
pub enum DemoDb {
    /// `mariadbd` with the binlog in ROW format.
    MariaDb(PrivateMariaDb),
    /// `postgres` with `wal_level = logical`.
    Postgres(databus_testkit::Postgres),
}

/// The capture user's password (written to a file the relay reads; never in a URL).
pub const PASSWORD: &str = "quickstart-secret";

impl DemoDb {
    /// Starts the server; waits until it accepts connections.
    pub async fn start(kind: QuickstartSource, timeout: Duration) -> Result<DemoDb> {
        Ok(match kind {
            QuickstartSource::Mariadb => DemoDb::MariaDb(PrivateMariaDb::start(timeout).await?),
            QuickstartSource::Postgres => {
                let pg = tokio::time::timeout(timeout, databus_testkit::Postgres::start())
                    .await
                    .context("PostgreSQL did not start in time (--duration)")??;
                DemoDb::Postgres(pg)
            }
        })
    }

    /// The database's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            DemoDb::MariaDb(_) => "MariaDB",
            DemoDb::Postgres(_) => "PostgreSQL",
        }
    }

    /// The server process's name and how it is set up, for the step's message.
    pub fn server(&self) -> &'static str {
        match self {
            DemoDb::MariaDb(_) => "mariadbd",
            DemoDb::Postgres(_) => "postgres",
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            DemoDb::MariaDb(db) => db.port(),
            DemoDb::Postgres(pg) => pg.port(),
        }
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        match self {
            DemoDb::MariaDb(db) => db.dir(),
            DemoDb::Postgres(pg) => pg.socket_dir(),
        }
    }

    /// How to connect as the administrator, for `--keep-running`'s listing.
    pub fn admin_url(&self) -> String {
        match self {
            DemoDb::MariaDb(db) => format!("mysql://root@127.0.0.1:{}", db.port()),
            DemoDb::Postgres(pg) => format!(
                "postgres://postgres@127.0.0.1:{}/postgres (password {})",
                pg.port(),
                databus_testkit::Postgres::PASSWORD
            ),
        }
    }

    /// Creates the `shop` schema (`shop.customers`, `shop.orders`) and the capture user `databus`
    /// with what capture needs; returns what was granted, for the step's message.
    pub async fn create_schema_and_user(&self) -> Result<&'static str> {
        match self {
            DemoDb::MariaDb(db) => {
                db.exec(&[
                    "CREATE DATABASE shop",
                    "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, \
                     email VARCHAR(128) NOT NULL, created_at DATETIME NOT NULL)",
                    "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, \
                     total DECIMAL(10,2) NOT NULL, status VARCHAR(16) NOT NULL)",
                ])
                .await
                .context("creating the sample schema")?;
                db.exec(&[
                    &format!("CREATE USER 'databus'@'%' IDENTIFIED BY '{PASSWORD}'"),
                    "GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'databus'@'%'",
                ])
                .await
                .context("creating the replication user")?;
                Ok("REPLICATION SLAVE, BINLOG MONITOR, SELECT")
            }
            DemoDb::Postgres(pg) => {
                pg.exec(&[
                    "CREATE SCHEMA shop",
                    "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, \
                     email VARCHAR(128) NOT NULL, created_at TIMESTAMP NOT NULL)",
                    "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer_id INT NOT NULL, \
                     total NUMERIC(10,2) NOT NULL, status VARCHAR(16) NOT NULL)",
                    // Updates and deletes then carry the whole old row (before images, key changes).
                    "ALTER TABLE shop.customers REPLICA IDENTITY FULL",
                    "ALTER TABLE shop.orders REPLICA IDENTITY FULL",
                ])
                .await
                .context("creating the sample schema")?;
                pg.exec(&[
                    &format!("CREATE ROLE databus LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
                    "GRANT USAGE ON SCHEMA shop TO databus",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA shop TO databus",
                    // The relay would create it if `databus` owned the tables; here the owner does.
                    "CREATE PUBLICATION databus FOR TABLE shop.customers, shop.orders",
                ])
                .await
                .context("creating the replication user and the publication")?;
                Ok("REPLICATION, SELECT; publication databus")
            }
        }
    }

    /// The relay's `[sources.connector]` table for this database (the password in `password_file`).
    pub fn connector_table(&self, password_file: &Path) -> String {
        let file = password_file.display().to_string();
        match self {
            DemoDb::MariaDb(db) => format!(
                "kind = \"mariadb\"\nurl = \"mysql://databus@127.0.0.1:{}\"\npassword_file = {file:?}\nserver_id = 1001\n",
                db.port()
            ),
            DemoDb::Postgres(pg) => format!(
                "kind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"databus\"\n\
                 password_file = {file:?}\ndatabase = \"postgres\"\nslot = \"databus\"\n\
                 publication = \"databus\"\n",
                pg.port()
            ),
        }
    }

    /// One connection for the workload.
    pub async fn session(&self) -> Result<Session> {
        Ok(match self {
            DemoDb::MariaDb(db) => Session::MariaDb(db.root_conn().await?),
            DemoDb::Postgres(pg) => Session::Postgres(pg.client().await?),
        })
    }
}

/// A connection of the workload.
pub enum Session {
    /// MariaDB.
    MariaDb(mysql_async::Conn),
    /// PostgreSQL.
    Postgres(tokio_postgres::Client),
}

impl Session {
    /// Runs `statements` as one transaction; returns an SCN that the transaction's own SCN is at
    /// least, and every earlier transaction's is below: a consumer that has seen an SCN this high has
    /// seen the transaction.
    pub async fn transaction(&mut self, statements: &[String]) -> Result<u64> {
        match self {
            Session::MariaDb(conn) => {
                let mut tx = conn
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .context("starting a transaction")?;
                for s in statements {
                    tx.query_drop(s).await.with_context(|| s.clone())?;
                }
                tx.commit().await.context("committing")?;
                // MariaDB SCNs are GTID sequence numbers: the last one written is this transaction's.
                let pos: Option<String> = conn
                    .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                    .await
                    .context("reading gtid_binlog_pos")?;
                let pos = pos.unwrap_or_default();
                pos.split(',')
                    .filter_map(|g| g.rsplit('-').next()?.trim().parse::<u64>().ok())
                    .max()
                    .with_context(|| format!("cannot read an SCN from gtid_binlog_pos {pos:?}"))
            }
            Session::Postgres(client) => {
                let tx = client
                    .transaction()
                    .await
                    .context("starting a transaction")?;
                for s in statements {
                    tx.batch_execute(s).await.with_context(|| s.clone())?;
                }
                // PostgreSQL SCNs are commit LSNs: the commit record goes after the WAL written so
                // far, and every earlier commit record before it.
                let row = tx
                    .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                    .await
                    .context("reading pg_current_wal_insert_lsn")?;
                let lsn: String = row.get(0);
                tx.commit().await.context("committing")?;
                parse_lsn(&lsn)
            }
        }
    }
}

impl std::fmt::Debug for DemoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoDb")
            .field("kind", &self.name())
            .field("port", &self.port())
            .finish()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Session::MariaDb(_) => "Session(MariaDB)",
            Session::Postgres(_) => "Session(PostgreSQL)",
        })
    }
}

/// `"16/B374D848"` → its 64-bit position.
fn parse_lsn(text: &str) -> Result<u64> {
    let Some((hi, lo)) = text.split_once('/') else {
        bail!("cannot read an LSN from {text:?}");
    };
    let hi = u64::from_str_radix(hi, 16).with_context(|| format!("LSN {text:?}"))?;
    let lo = u64::from_str_radix(lo, 16).with_context(|| format!("LSN {text:?}"))?;
    Ok(hi << 32 | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_as_the_connector_numbers_them() {
        assert_eq!(parse_lsn("0/16B3F28").unwrap(), 0x16B_3F28);
        assert_eq!(
            parse_lsn("16/B374D848").unwrap(),
            (0x16 << 32) | 0xB374_D848
        );
        assert!(parse_lsn("nonsense").is_err());
    }
}
