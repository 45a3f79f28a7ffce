//! The target database: connection settings, the replica's own tables (checkpoint and the schema of
//! each replicated table), and statement execution, for MariaDB and PostgreSQL.
//!
//! Every statement runs in the open transaction until [`Target::commit`]:
//! - MariaDB: the session runs with `autocommit = 0`. MariaDB commits implicitly before and after DDL
//!   (`CREATE`, `ALTER`, `TRUNCATE`, `DROP`); the next statement opens a new transaction by itself,
//!   so the rest of a window and its checkpoint still commit together (see "Crash safety" in
//!   docs/replicate.md).
//! - PostgreSQL: the first statement after a commit sends `BEGIN`; DDL is transactional, so a whole
//!   window, its DDL included, commits with its checkpoint.
//!
//! Errors are classified by recovery ([`TargetError`]): a lost connection (the target restarted) is
//! transient, the replicator reconnects and resumes from the checkpoint in the target; a statement
//! the target refuses is definite and names the table, the SCN and the statement kind.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use databus_client::model::TableSchema;
use databus_core::Checkpoint;
use mysql_async::prelude::Queryable;

use super::dialect::Dialect;
use crate::UsageError;

/// How long a replicator waits for the replica's lock held by another session.
const LOCK_WAIT_SECS: u64 = 60;

/// Table of the replica's checkpoint, one row per replica name.
pub const CHECKPOINT_TABLE: &str = "databus_replica_checkpoint";
/// Table of the schema the replica created each replicated table with.
pub const TABLES_TABLE: &str = "databus_replica_tables";

/// What a statement does, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// The replica's own tables, the session.
    Setup,
    /// `CREATE DATABASE`/`SCHEMA`, `CREATE TABLE`.
    Create,
    /// `ALTER TABLE` of a schema change.
    Alter,
    /// `DROP TABLE`.
    Drop,
    /// `TRUNCATE TABLE`.
    Truncate,
    /// Multi-row upsert of rows.
    Upsert,
    /// `DELETE` of keys.
    Delete,
    /// The replica's checkpoint or table row.
    Checkpoint,
    /// A read.
    Read,
    /// `COMMIT`.
    Commit,
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatementKind::Setup => "setup statement",
            StatementKind::Create => "CREATE",
            StatementKind::Alter => "ALTER TABLE",
            StatementKind::Drop => "DROP TABLE",
            StatementKind::Truncate => "TRUNCATE",
            StatementKind::Upsert => "upsert (INSERT of rows)",
            StatementKind::Delete => "DELETE of keys",
            StatementKind::Checkpoint => "checkpoint write",
            StatementKind::Read => "read",
            StatementKind::Commit => "COMMIT",
        })
    }
}

/// A failure of the target, by recovery.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The connection is gone or the server is shutting down: reconnect and resume from the
    /// checkpoint stored in the target.
    #[error(
        "the connection to the target {dialect} at {address} failed during a {kind}: {message}"
    )]
    Connection {
        /// The target's dialect name.
        dialect: &'static str,
        /// host:port.
        address: String,
        /// What was running.
        kind: StatementKind,
        /// The driver's message.
        message: String,
    },
    /// The target refused a statement (constraint, type, permission…): stop and tell the user.
    #[error(
        "the target {dialect} refused the {kind} of table {table} at SCN {scn}: {message}\n  \
         statement: {statement}"
    )]
    Refused {
        /// The target's dialect name.
        dialect: &'static str,
        /// What the statement does.
        kind: StatementKind,
        /// `database.table` the statement writes (or the replica's meta table).
        table: String,
        /// The SCN of the window being applied (`-` outside a window).
        scn: String,
        /// The server's message.
        message: String,
        /// The statement's beginning.
        statement: String,
    },
}

impl TargetError {
    /// Whether reconnecting may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Connection { .. })
    }
}

/// Whether `error` (anywhere in its chain) is a lost target connection.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|c| {
        c.downcast_ref::<TargetError>()
            .is_some_and(TargetError::is_transient)
    })
}

/// Where to connect and how, from `--to`.
#[derive(Debug, Clone)]
pub enum TargetOptions {
    /// `mysql://user@host:port/`.
    MariaDb(mysql_async::Opts),
    /// `postgres://user@host:port/db`.
    Postgres(Box<tokio_postgres::Config>),
}

impl TargetOptions {
    /// The dialect the target speaks.
    pub fn dialect(&self) -> Dialect {
        match self {
            TargetOptions::MariaDb(_) => Dialect::MariaDb,
            TargetOptions::Postgres(_) => Dialect::Postgres,
        }
    }

    fn address(&self) -> String {
        match self {
            TargetOptions::MariaDb(o) => format!("{}:{}", o.ip_or_hostname(), o.tcp_port()),
            TargetOptions::Postgres(c) => {
                let host = c.get_hosts().first().map_or_else(
                    || "localhost".to_owned(),
                    |h| match h {
                        tokio_postgres::config::Host::Tcp(h) => h.clone(),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    },
                );
                let port = c.get_ports().first().copied().unwrap_or(5432);
                format!("{host}:{port}")
            }
        }
    }
}

const PASSWORD_IN_URL: &str = "--to has a password in the URL, where the process list and logs \
     show it; give it with --password-env NAME or --password-file PATH";

/// Connection options from a `mysql://user@host:port/` or `postgres://user@host:port/db` URL and a
/// password given apart from it.
pub fn options(url: &str, password: Option<String>) -> Result<TargetOptions> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            UsageError(format!(
                "--to {url:?} is not a postgres://user@host:port/database URL: {e}"
            ))
        })?;
        if config.get_password().is_some() {
            return Err(UsageError(PASSWORD_IN_URL.into()).into());
        }
        if config.get_dbname().is_none() {
            return Err(UsageError(format!(
                "--to {url:?} names no database; give postgres://user@host:port/DATABASE (the \
                 replica's tables go into schemas of it)"
            ))
            .into());
        }
        if !matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer
        ) {
            return Err(UsageError(format!(
                "--to {url:?} asks for TLS (sslmode); replicate connects to a PostgreSQL target \
                 without TLS for now: drop sslmode (or set sslmode=disable) and reach the target \
                 over a trusted network or a tunnel"
            ))
            .into());
        }
        if let Some(pw) = password {
            config.password(pw);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("databus replicate");
        return Ok(TargetOptions::Postgres(Box::new(config)));
    }
    if !url.starts_with("mysql://") {
        return Err(UsageError(format!(
            "--to {url:?}: give mysql://user@host:port/ (MariaDB) or \
             postgres://user@host:port/database (PostgreSQL)"
        ))
        .into());
    }
    let opts = mysql_async::Opts::from_url(url)
        .map_err(|e| UsageError(format!("--to {url:?} is not a mysql:// URL: {e}")))?;
    if opts.pass().is_some() {
        return Err(UsageError(PASSWORD_IN_URL.into()).into());
    }
    Ok(TargetOptions::MariaDb(
        mysql_async::OptsBuilder::from_opts(opts)
            .pass(password)
            .db_name(None::<String>)
            .stmt_cache_size(0)
            .into(),
    ))
}

/// A replicated table: the schema the replica's table has, and the source's schema-change
/// statements seen since (they tell a drop and an add from a rename).
#[derive(Debug, Clone, PartialEq)]
pub struct Replicated {
    /// The replica table's schema.
    pub schema: TableSchema,
    /// `ALTER` statements of the source since `schema`.
    pub statements: Vec<String>,
}

/// The open connection.
enum Connection {
    MariaDb(mysql_async::Conn),
    Postgres {
        client: tokio_postgres::Client,
        /// A `BEGIN` was sent and no `COMMIT`/`ROLLBACK` since.
        in_transaction: bool,
    },
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connection::MariaDb(_) => f.write_str("MariaDb"),
            Connection::Postgres { in_transaction, .. } => f
                .debug_struct("Postgres")
                .field("in_transaction", in_transaction)
                .finish(),
        }
    }
}

/// What failed: the driver's message and whether it was the connection.
struct Failure {
    lost: bool,
    message: String,
}

fn mariadb_failure(e: &mysql_async::Error) -> Failure {
    use mysql_async::{DriverError, Error};
    let lost = match e {
        Error::Io(_) => true,
        // Only the driver errors of a broken connection: the others (a packet too large, a
        // conversion) would fail the same way after a reconnect.
        Error::Driver(d) => matches!(
            d,
            DriverError::ConnectionClosed
                | DriverError::PoolDisconnected
                | DriverError::PacketOutOfOrder
                | DriverError::UnexpectedPacket { .. }
                | DriverError::BadCompressedPacketHeader
        ),
        // Server shutdown, connection killed, lock wait timeout, deadlock.
        Error::Server(s) => matches!(s.code, 1053 | 1927 | 2006 | 2013 | 1205 | 1213),
        Error::Other(_) | Error::Url(_) => false,
    };
    Failure {
        lost,
        message: e.to_string(),
    }
}

fn postgres_failure(e: &tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect now;
            // 40001/40P01: serialization failure, deadlock (the window is simply applied again).
            let lost = code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01");
            let mut message = format!("{} ({code})", db.message());
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; {detail}"));
            }
            Failure { lost, message }
        }
        None => Failure {
            lost: true,
            message: e.to_string(),
        },
    }
}

/// A connection to the target with the replica's session settings and its own tables.
#[derive(Debug)]
pub struct Target {
    conn: Connection,
    dialect: Dialect,
    address: String,
    /// Database (PostgreSQL: schema) holding the replica's own tables.
    pub(super) meta_db: String,
    /// This replica's name (its row in the checkpoint table).
    pub(super) name: String,
    /// The SCN of the window being applied, for error messages.
    pub(super) scn: Option<u64>,
}

impl Target {
    /// Connects, sets up the session and creates the replica's own database and tables.
    pub async fn connect(opts: &TargetOptions, meta_db: &str, name: &str) -> Result<Target> {
        let dialect = opts.dialect();
        let address = opts.address();
        let lost = |message: String| TargetError::Connection {
            dialect: dialect.name(),
            address: address.clone(),
            kind: StatementKind::Setup,
            message,
        };
        let conn = match opts {
            TargetOptions::MariaDb(o) => {
                let conn = mysql_async::Conn::new(o.clone())
                    .await
                    .map_err(|e| lost(e.to_string()))?;
                Connection::MariaDb(conn)
            }
            TargetOptions::Postgres(config) => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| lost(postgres_failure(&e).message))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "the target PostgreSQL connection ended");
                    }
                });
                Connection::Postgres {
                    client,
                    in_transaction: false,
                }
            }
        };
        let mut target = Target {
            conn,
            dialect,
            address,
            meta_db: meta_db.to_owned(),
            name: name.to_owned(),
            scn: None,
        };
        let session: &[&str] = match dialect {
            // UTC for TIMESTAMP literals; zero dates allowed (the source may have them); strict, so
            // a value that does not fit fails instead of being truncated.
            Dialect::MariaDb => &["SET SESSION autocommit = 0, time_zone = '+00:00', \
                 sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO', \
                 NAMES utf8mb4"],
            Dialect::Postgres => &[
                "SET TIME ZONE 'UTC'",
                "SET standard_conforming_strings = on",
                "SET client_encoding = 'UTF8'",
                "SET IntervalStyle = 'postgres'",
            ],
        };
        for sql in session {
            target.exec(sql, StatementKind::Setup, "-").await?;
        }
        if dialect == Dialect::MariaDb {
            // Older servers make the first TIMESTAMP NOT NULL column auto-updating without it.
            let _ = target
                .exec(
                    "SET SESSION explicit_defaults_for_timestamp = 1",
                    StatementKind::Setup,
                    "-",
                )
                .await;
        }
        for sql in dialect.meta_tables(meta_db, CHECKPOINT_TABLE, TABLES_TABLE) {
            target
                .exec(&sql, StatementKind::Setup, meta_db)
                .await
                .with_context(|| format!("creating the replica's tables in {meta_db}"))?;
        }
        target.commit().await?;
        target.lock_replica().await?;
        Ok(target)
    }

    /// Takes the replica's session lock (MariaDB `GET_LOCK`, PostgreSQL `pg_try_advisory_lock`),
    /// held until the connection ends. Two replicators of one name never write at once, and a
    /// restarted replicator waits for the statement its killed predecessor left running in the
    /// server (a SIGKILLed client does not stop an `ALTER` the server already received; it would
    /// otherwise change the table after the new process looked at it).
    async fn lock_replica(&mut self) -> Result<()> {
        let key = format!("databus_replica:{}:{}", self.meta_db, self.name);
        let d = self.dialect;
        let wait = Duration::from_secs(LOCK_WAIT_SECS);
        let deadline = std::time::Instant::now() + wait;
        loop {
            let sql = match d {
                Dialect::MariaDb => {
                    // GET_LOCK names are at most 64 characters.
                    let key: String = key.chars().take(64).collect();
                    format!("SELECT GET_LOCK({}, 1)", d.string_literal(&key))
                }
                Dialect::Postgres => format!(
                    "SELECT pg_try_advisory_lock(hashtext({}))::int",
                    d.string_literal(&key)
                ),
            };
            let rows = self.query(&sql).await?;
            let got = rows.first().and_then(|r| r.first()).cloned().flatten();
            if got.as_deref() == Some("1") {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "another session holds the lock of replica {} in the target ({key}) after \
                     {LOCK_WAIT_SECS} s: another replicator with --name {} is running against \
                     this target; stop it, or give this one another --name",
                    self.name,
                    self.name
                );
            }
            if d == Dialect::Postgres {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// The target's SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn error(&self, failure: Failure, kind: StatementKind, table: &str, sql: &str) -> TargetError {
        if failure.lost {
            return TargetError::Connection {
                dialect: self.dialect.name(),
                address: self.address.clone(),
                kind,
                message: failure.message,
            };
        }
        let mut statement: String = sql.chars().take(300).collect();
        if statement.len() < sql.len() {
            statement.push('…');
        }
        TargetError::Refused {
            dialect: self.dialect.name(),
            kind,
            table: table.to_owned(),
            scn: self.scn.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            message: failure.message,
            statement,
        }
    }

    /// Runs one statement of `kind` writing `table` (in the open transaction).
    pub async fn exec(&mut self, sql: &str, kind: StatementKind, table: &str) -> Result<()> {
        let failure = match &mut self.conn {
            Connection::MariaDb(conn) => conn
                .query_drop(sql)
                .await
                .err()
                .map(|e| mariadb_failure(&e)),
            Connection::Postgres {
                client,
                in_transaction,
            } => {
                let mut result = Ok(());
                if !*in_transaction {
                    result = client.batch_execute("BEGIN").await;
                    *in_transaction = result.is_ok();
                }
                if result.is_ok() {
                    result = client.batch_execute(sql).await;
                }
                result.err().map(|e| postgres_failure(&e))
            }
        };
        match failure {
            None => Ok(()),
            Some(f) => Err(self.error(f, kind, table, sql).into()),
        }
    }

    /// Rows of a query, every column as text (`None`: NULL), in a transaction of their own.
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let result: Result<Vec<Vec<Option<String>>>, Failure> = match &mut self.conn {
            Connection::MariaDb(conn) => match conn.query::<mysql_async::Row, _>(sql).await {
                Ok(rows) => rows
                    .into_iter()
                    .map(|mut row| {
                        (0..row.len())
                            .map(|i| match row.take_opt::<Option<String>, _>(i) {
                                Some(Ok(v)) => Ok(v),
                                _ => Err(Failure {
                                    lost: false,
                                    message: format!("column {i} is not text"),
                                }),
                            })
                            .collect()
                    })
                    .collect(),
                Err(e) => Err(mariadb_failure(&e)),
            },
            Connection::Postgres { client, .. } => match client.simple_query(sql).await {
                Ok(messages) => Ok(messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect()),
                Err(e) => Err(postgres_failure(&e)),
            },
        };
        let rows = result.map_err(|f| self.error(f, StatementKind::Read, &self.meta_db, sql));
        self.rollback().await;
        Ok(rows?)
    }

    /// `COMMIT`.
    pub async fn commit(&mut self) -> Result<()> {
        match &mut self.conn {
            Connection::MariaDb(_) => self.exec("COMMIT", StatementKind::Commit, "-").await,
            Connection::Postgres {
                client,
                in_transaction,
            } => {
                if !*in_transaction {
                    return Ok(());
                }
                *in_transaction = false;
                match client.batch_execute("COMMIT").await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let f = postgres_failure(&e);
                        Err(self.error(f, StatementKind::Commit, "-", "COMMIT").into())
                    }
                }
            }
        }
    }

    /// `ROLLBACK`, errors ignored (the connection may be gone).
    pub async fn rollback(&mut self) {
        match &mut self.conn {
            Connection::MariaDb(conn) => {
                let _ = conn.query_drop("ROLLBACK").await;
            }
            Connection::Postgres {
                client,
                in_transaction,
            } => {
                if *in_transaction {
                    *in_transaction = false;
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
        }
    }

    fn meta(&self, table: &str) -> String {
        self.dialect.qualified(&self.meta_db, table)
    }

    /// The replica's stored checkpoint.
    pub async fn load_checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        let sql = format!(
            "SELECT checkpoint FROM {} WHERE replica = {}",
            self.meta(CHECKPOINT_TABLE),
            self.dialect.string_literal(&self.name)
        );
        let rows = self.query(&sql).await?;
        let text = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten());
        text.map(|t| {
            Checkpoint::from_json(&t).with_context(|| {
                format!(
                    "the checkpoint of replica {} in {}.{CHECKPOINT_TABLE} is unusable; fix or \
                     delete the row (a deleted row makes the replica start over)",
                    self.name, self.meta_db
                )
            })
        })
        .transpose()
    }

    /// Writes the checkpoint in the open transaction.
    pub async fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let d = self.dialect;
        let sql = d.meta_upsert(
            &self.meta(CHECKPOINT_TABLE),
            &["replica", "checkpoint", "scn"],
            &["replica"],
            &[
                d.string_literal(&self.name),
                d.string_literal(&checkpoint.to_json()),
                checkpoint.window_scn.get().to_string(),
            ],
            &format!("updated_at = {}", d.now()),
        );
        let table = format!("{}.{CHECKPOINT_TABLE}", self.meta_db);
        self.exec(&sql, StatementKind::Checkpoint, &table).await
    }

    /// The schema each replicated table was last created or altered to, by `(database, table)`,
    /// with the source's schema-change statements seen since.
    pub async fn load_tables(&mut self) -> Result<BTreeMap<(String, String), Replicated>> {
        let sql = format!(
            "SELECT db, tbl, table_schema, statements FROM {} WHERE replica = {}",
            self.meta(TABLES_TABLE),
            self.dialect.string_literal(&self.name)
        );
        let rows = self.query(&sql).await?;
        let mut tables = BTreeMap::new();
        for row in rows {
            let [Some(db), Some(tbl), Some(json), Some(statements)] =
                <[Option<String>; 4]>::try_from(row).unwrap_or_default()
            else {
                bail!("{}.{TABLES_TABLE} has a row with NULLs", self.meta_db);
            };
            let (Ok(schema), Ok(statements)) = (
                serde_json::from_str::<TableSchema>(&json),
                serde_json::from_str::<Vec<String>>(&statements),
            ) else {
                bail!(
                    "the schema of {db}.{tbl} in {}.{TABLES_TABLE} is unusable; delete the row and \
                     the replica's table, then restart (the table is created again)",
                    self.meta_db
                );
            };
            tables.insert((db, tbl), Replicated { schema, statements });
        }
        Ok(tables)
    }

    /// Records the replica's schema of a table and the statements since (in the open transaction).
    pub async fn store_table(&mut self, table: &Replicated) -> Result<()> {
        let d = self.dialect;
        let schema = &table.schema;
        let json = serde_json::to_string(schema)?;
        let statements = serde_json::to_string(&table.statements)?;
        let sql = d.meta_upsert(
            &self.meta(TABLES_TABLE),
            &["replica", "db", "tbl", "table_schema", "statements"],
            &["replica", "db", "tbl"],
            &[
                d.string_literal(&self.name),
                d.string_literal(&schema.database),
                d.string_literal(&schema.table),
                d.string_literal(&json),
                d.string_literal(&statements),
            ],
            "",
        );
        let name = format!("{}.{TABLES_TABLE}", self.meta_db);
        self.exec(&sql, StatementKind::Checkpoint, &name).await
    }

    /// Forgets a dropped table (in the open transaction).
    pub async fn forget_table(&mut self, database: &str, table: &str) -> Result<()> {
        let d = self.dialect;
        let sql = format!(
            "DELETE FROM {} WHERE replica = {} AND db = {} AND tbl = {}",
            self.meta(TABLES_TABLE),
            d.string_literal(&self.name),
            d.string_literal(database),
            d.string_literal(table)
        );
        let name = format!("{}.{TABLES_TABLE}", self.meta_db);
        self.exec(&sql, StatementKind::Checkpoint, &name).await
    }

    /// The column names of a table in the target, in order (empty: no such table).
    pub async fn table_columns(&mut self, database: &str, table: &str) -> Result<Vec<String>> {
        let d = self.dialect;
        let sql = format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = {} AND \
             table_name = {} ORDER BY ordinal_position",
            d.string_literal(database),
            d.string_literal(table)
        );
        let rows = self.query(&sql).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }

    /// Whether the replica's table of `schema` holds no row (read in the open transaction).
    pub async fn is_empty(&mut self, schema: &TableSchema) -> Result<bool> {
        let sql = format!("SELECT 1 FROM {} LIMIT 1", self.dialect.table_ident(schema));
        let failure = match &mut self.conn {
            Connection::MariaDb(conn) => match conn.query_first::<i64, _>(&sql).await {
                Ok(row) => return Ok(row.is_none()),
                Err(e) => mariadb_failure(&e),
            },
            Connection::Postgres { client, .. } => match client.simple_query(&sql).await {
                Ok(messages) => {
                    return Ok(!messages
                        .iter()
                        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
                }
                Err(e) => postgres_failure(&e),
            },
        };
        Err(self
            .error(failure, StatementKind::Read, &schema.qualified_name(), &sql)
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_dialect_and_refuse_passwords() {
        let t = options("mysql://u@h:3307/", Some("pw".into())).unwrap();
        assert_eq!(t.dialect(), Dialect::MariaDb);
        assert_eq!(t.address(), "h:3307");
        let t = options("postgres://u@h:5433/db", Some("pw".into())).unwrap();
        assert_eq!(t.dialect(), Dialect::Postgres);
        assert_eq!(t.address(), "h:5433");
        for url in ["mysql://u:secret@h/", "postgres://u:secret@h/db"] {
            let e = options(url, None).unwrap_err().to_string();
            assert!(e.contains("--password-env"), "{e}");
        }
        let e = options("postgres://u@h:5433", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no database"), "{e}");
        let e = options("postgres://u@h/db?sslmode=require", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode"), "{e}");
        let e = options("redis://h/", None).unwrap_err().to_string();
        assert!(e.contains("postgres://"), "{e}");
    }
}
