//! The contract between a source of changes and the relay: [`SourceConnector`].
//!
//! A connector turns a database's change log into a stream of [`ConnectorEvent`]s:
//!
//! - [`ConnectorEvent::Transaction`]: one committed source transaction, whole, with its [`Scn`]. SCNs
//!   strictly increase along the stream; transactions arrive in commit order. A transaction that touches no
//!   captured table (or a DDL statement) is still emitted, with no changes: its SCN advances the stream (the
//!   relay writes it as an empty "heartbeat" window).
//! - [`ConnectorEvent::SchemaChange`]: the schema a captured table has from this SCN on. It precedes the
//!   first transaction whose changes use that schema (including the first time a connector sees a table
//!   after starting), and carries that transaction's SCN.
//! - [`ConnectorEvent::Heartbeat`]: the source is idle; time advanced. Consumers see time pass.
//!
//! ## Positions and resume
//!
//! [`StartPosition::After`]`(s)` yields exactly the first transaction committed after SCN `s`: no
//! duplicate, no gap, whatever happened in between (a connector or source restart, a dropped
//! connection). A resume point the source no longer has is a definite [`ConnectorError`] naming the oldest
//! available position (consumers must then bootstrap).
//!
//! ## Errors
//!
//! [`ConnectorError::is_transient`] splits errors: transient ones (network, source restarting) may be
//! retried by calling [`SourceConnector::start`] again after a backoff, resuming after the last transaction
//! delivered; definite ones (misconfiguration, purged binlog, undecodable data) stop the relay with a
//! message saying what to fix. Connectors that reconnect by themselves (the MySQL connector does, with
//! exponential backoff) return a transient error only when their own retries are exhausted.
//!
//! ## Shutdown
//!
//! [`SourceConnector::shutdown_token`] gives a [`CancellationToken`]; cancelling it makes a pending
//! [`SourceConnector::next_event`] return `Ok(None)` promptly; [`SourceConnector::shutdown`] closes the
//! source connections. After `Ok(None)` the connector yields nothing more until started again.
//!
//! The conformance suite in [`crate::conformance`] checks all of this against a real source.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use databus_core::Scn;
use databus_serde_formats::model::{Row, TableSchema};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ConnectorError;

/// Where a connector starts reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The first transaction committed after this SCN. `After(Scn::ZERO)`: from the oldest transaction
    /// the source still has.
    After(Scn),
    /// After a full source position (more precise than an SCN across a source failover).
    AfterPosition(SourcePosition),
    /// The first transaction committed after the connector starts.
    Now,
}

/// A source's own coordinates of the end of one transaction: an opaque value that only its connector
/// reads (see each connector for its shape; MySQL/MariaDB: [`crate::mysql::MySqlPosition`]).
///
/// Everyone else keeps it as it is: the relay persists it in its state file (JSON) and hands it back
/// with [`StartPosition::AfterPosition`], and shows it with `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourcePosition(serde_json::Value);

impl SourcePosition {
    /// A position holding `value` (a connector's own position type, serialized).
    pub fn new(value: serde_json::Value) -> Self {
        SourcePosition(value)
    }

    /// The serialized value, for the connector that wrote it.
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl fmt::Display for SourcePosition {
    /// An object as `key value` pairs (`gtid 0-1-42 file mariadb-bin.000001 end_position 812`); other
    /// values as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            serde_json::Value::Object(fields) => {
                let mut first = true;
                for (k, v) in fields {
                    if !first {
                        f.write_str(" ")?;
                    }
                    first = false;
                    match v {
                        serde_json::Value::String(s) => write!(f, "{k} {s}")?,
                        other => write!(f, "{k} {other}")?,
                    }
                }
                Ok(())
            }
            serde_json::Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

/// A table's qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    /// Database (schema) name.
    pub database: String,
    /// Table name.
    pub table: String,
}

impl TableName {
    /// Builds a name.
    pub fn new(database: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            table: table.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

/// What a row change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new row: `after` only.
    Insert,
    /// A changed row: `before` and `after`.
    Update,
    /// A removed row: `before` only.
    Delete,
}

/// One row change of a transaction, with typed images in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// The table's schema at this change.
    pub table: Arc<TableSchema>,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The row before the change (updates and deletes).
    pub before: Option<Row>,
    /// The row after the change (inserts and updates).
    pub after: Option<Row>,
}

/// One committed source transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTransaction {
    /// Its commit sequence number; strictly greater than the previous transaction's.
    pub scn: Scn,
    /// Commit time, nanoseconds since the Unix epoch (MariaDB: second precision).
    pub commit_timestamp_ns: u64,
    /// The source's own coordinates of the transaction.
    pub position: SourcePosition,
    /// Its changes to captured tables, in statement order. Empty for DDL and transactions on other tables.
    pub changes: Vec<RowChange>,
    /// The table-level changes of a DDL statement to captured tables (TRUNCATE, DROP, ALTER, CREATE),
    /// in statement order. Empty for transactions of row changes.
    pub table_changes: Vec<TableDdl>,
}

/// What a DDL statement did to a captured table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdlKind {
    /// `TRUNCATE TABLE`: every row is gone.
    Truncate,
    /// `DROP TABLE` (or the drop half of `CREATE OR REPLACE TABLE`): every row is gone with the table.
    Drop,
    /// `CREATE TABLE`: a new, empty table.
    Create,
    /// `ALTER TABLE`: a new definition; rows of the new version follow with a new schema.
    Alter,
    /// `DROP DATABASE`: every captured table of `table.database` is gone (`table.table` is empty).
    DropDatabase,
}

/// One DDL effect on a captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDdl {
    /// The table.
    pub table: TableName,
    /// What happened to it.
    pub kind: DdlKind,
    /// The statement as the source logged it.
    pub statement: String,
}

/// What a connector produces.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorEvent {
    /// A whole committed transaction.
    Transaction(SourceTransaction),
    /// A captured table's schema from `scn` on (sent before the first transaction that uses it).
    SchemaChange {
        /// The SCN of the first transaction using this schema.
        scn: Scn,
        /// The table.
        table: TableName,
        /// Its schema.
        schema: Arc<TableSchema>,
    },
    /// The source is idle.
    Heartbeat {
        /// The SCN of the last transaction delivered (or the start SCN).
        last_scn: Scn,
        /// The time of the heartbeat, nanoseconds since the Unix epoch.
        timestamp_ns: u64,
    },
}

impl ConnectorEvent {
    /// The transaction, if this is one.
    pub fn as_transaction(&self) -> Option<&SourceTransaction> {
        match self {
            ConnectorEvent::Transaction(t) => Some(t),
            _ => None,
        }
    }
}

/// A source of committed transactions. The relay is generic over it.
///
/// Contract (checked by [`crate::conformance`]):
///
/// | property | rule |
/// |---|---|
/// | order | transactions in commit order, SCNs strictly increasing |
/// | atomicity | one [`ConnectorEvent::Transaction`] per source transaction, never split or merged |
/// | resume | `start(After(s))` yields the first transaction after `s`: no duplicate, no gap |
/// | liveness | [`ConnectorEvent::Heartbeat`]s while the source is idle |
/// | empty | a transaction with no captured change is emitted with empty `changes` |
/// | schema | a [`ConnectorEvent::SchemaChange`] precedes the first transaction using a table's schema |
/// | shutdown | after the shutdown token is cancelled, `next_event` returns `Ok(None)` |
/// | errors | [`ConnectorError::is_transient`]: retry with backoff; otherwise stop and report |
pub trait SourceConnector: Send {
    /// Validates the source and positions the stream. Can be called again after an error or a shutdown
    /// to resume from another position.
    fn start(
        &mut self,
        from: StartPosition,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// The SCN the stream is positioned after. Right after a successful [`start`](Self::start) (the
    /// moment the contract covers): the SCN it continues from, `s` for `After(s)`, the source's current
    /// position for `Now`, 0 for `After(Scn::ZERO)` (from the oldest transaction the source holds). The
    /// first transaction delivered is the first committed after it. Later it follows the stream. The
    /// relay anchors its buffer here, so that it never serves a checkpoint its first window does not
    /// continue.
    fn last_scn(&self) -> Scn;

    /// The next event; `Ok(None)` once the shutdown token is cancelled. Cancel-safe at transaction
    /// granularity: dropping the future loses no delivered transaction.
    fn next_event(
        &mut self,
    ) -> impl Future<Output = Result<Option<ConnectorEvent>, ConnectorError>> + Send;

    /// A token that stops the stream: cancel it from any task.
    fn shutdown_token(&self) -> CancellationToken;

    /// Closes the connections to the source. Idempotent.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    /// History refill: where to start so that about `transactions` transactions committed up to and
    /// including `last` (whose position was `position`, when known) are delivered again (a restarted
    /// relay then serves recent history). The answer may be a position the source no longer has:
    /// [`start`](Self::start) then fails with [`ConnectorError::Purged`] and the caller falls back.
    ///
    /// The default refills nothing (`After(last)`): a source whose positions cannot be counted back
    /// by transactions says so by not overriding it.
    fn refill_start(
        &self,
        last: Scn,
        position: Option<&SourcePosition>,
        transactions: u64,
    ) -> StartPosition {
        let _ = (position, transactions);
        StartPosition::After(last)
    }

    /// The relay has durably recorded every transaction up to and including SCN `durable`: the source
    /// may release what it retains for them. Connectors whose source keeps a per-reader position (a
    /// PostgreSQL replication slot's `confirmed_flush_lsn`) advance it to `durable`, never further, so
    /// a relay killed at any moment resumes from its persisted SCN without loss. Calls with a lower SCN
    /// than before are ignored. The default does nothing (a MariaDB binlog keeps no reader position).
    ///
    /// The relay's ingest calls it after each persist of its SCN, and after each successful
    /// [`start`](Self::start) with the SCN its state file holds.
    fn acknowledge(&mut self, durable: Scn) {
        let _ = durable;
    }

    /// How far the position the source retains for this reader is behind the source's log, in bytes
    /// (a PostgreSQL slot: WAL the server keeps for it), as last seen by the connector; `None` when
    /// the source keeps no per-reader position or the connector has not seen it yet. Cheap: the relay
    /// reads it after every event for its `databus_relay_source_log_lag_bytes` gauge. The default is
    /// `None` (a MariaDB binlog keeps no reader position).
    fn source_lag_bytes(&self) -> Option<u64> {
        None
    }
}
