//! The one error type of this crate, split by recovery: [`ConnectorError::is_transient`].

use std::time::Duration;

use databus_core::Scn;

/// Errors of a source connector.
///
/// Transient errors (a dropped connection, a source restarting, a read timeout) are retried with backoff,
/// resuming after the last transaction delivered. Definite errors stop the stream; their message says what
/// to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The connector's configuration is invalid.
    #[error("invalid connector config: {0}")]
    Config(String),
    /// A captured table was renamed to a name the connector does not capture: its later changes would
    /// be lost. Definite: the configuration must say what to follow.
    #[error(
        "captured table {from} was renamed to {to} at gtid {gtid} ({statement:.120}); its changes \
         can no longer be captured under the old name: add {to} to the captured tables with the same \
         source id in place of {from} (the relay then follows the table), or rename it back, and \
         restart"
    )]
    RenamedAway {
        /// The captured name.
        from: String,
        /// The new, uncaptured name.
        to: String,
        /// The GTID of the rename.
        gtid: String,
        /// The statement.
        statement: String,
    },
    /// The source's settings or grants do not allow capture. Each problem names its fix.
    #[error("source is not ready for capture: {}", .problems.join("; "))]
    Misconfigured {
        /// One entry per failed check, e.g. `binlog_format is STATEMENT; set binlog_format=ROW`.
        problems: Vec<String>,
    },
    /// Connecting to the source failed or the connection broke.
    #[error("connection to {what} failed: {source}")]
    Connection {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// A query the connector needs failed on the server.
    #[error("{what} failed: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// Nothing arrived for longer than the read timeout (heartbeats included): the connection is dead.
    #[error("no event from the source for {0:?} (read timeout, heartbeats included); reconnecting")]
    ReadTimeout(Duration),
    /// Connecting or setting up the stream took longer than the read timeout.
    #[error("{what} took longer than {after:?}; reconnecting")]
    Timeout {
        /// What was being done.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The source ended the stream (e.g. it is shutting down).
    #[error("the source closed the binlog stream")]
    StreamClosed,
    /// The resume point is no longer in the source's log.
    #[error(
        "resume point {requested} was purged from the source's binlog; oldest available: {oldest}; consumers past it must bootstrap from a snapshot"
    )]
    Purged {
        /// The requested position.
        requested: String,
        /// The oldest position the source still has.
        oldest: String,
        /// The earliest SCN the stream can resume after, when the source tells it (a relay's history
        /// refill starts there instead).
        resume_after: Option<Scn>,
    },
    /// The resume point is not in the source's log (e.g. a diverged or different server).
    #[error("resume point {requested} is not in the source's binlog: {detail}")]
    UnknownPosition {
        /// The requested position.
        requested: String,
        /// The server's explanation.
        detail: String,
    },
    /// The stream mixes several GTID replication domains; SCNs would not be one sequence.
    #[error(
        "the binlog has several GTID domains ({domains}); capture one domain: run the relay on a server whose binlog has a single gtid_domain_id"
    )]
    MultipleDomains {
        /// The domains seen.
        domains: String,
    },
    /// SCNs went backwards: the source is not the one the stream started on.
    #[error(
        "scn went from {previous} to {next} at gtid {gtid}; the source's history diverged (failover to a server without these transactions?)"
    )]
    ScnRegression {
        /// Last SCN delivered.
        previous: u64,
        /// The SCN that arrived.
        next: u64,
        /// The transaction's GTID.
        gtid: String,
    },
    /// An event the connector cannot decode (never skipped).
    #[error("cannot decode binlog event {event} at {position}: {reason}")]
    UndecodableEvent {
        /// The event type.
        event: String,
        /// Where it is.
        position: String,
        /// Why, and what to change.
        reason: String,
    },
    /// A captured table has no primary key.
    #[error(
        "table {table} has no primary key; add one, or set allow_tables_without_primary_key = true"
    )]
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// A transaction exceeds the configured maximum size.
    #[error(
        "transaction {gtid} exceeds {limit}; raise the connector's {setting} (windows are never split)"
    )]
    TransactionTooLarge {
        /// The transaction's GTID.
        gtid: String,
        /// The limit reached.
        limit: String,
        /// The config setting to raise.
        setting: &'static str,
    },
    /// A value does not match its column's type.
    #[error("cannot decode column {table}.{column}: {reason}")]
    Decode {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Why.
        reason: String,
    },
    /// A PostgreSQL query (metadata, slot or publication setup) or connection failed.
    #[error("postgresql: {what} failed: {source}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The PostgreSQL replication stream failed.
    #[error("postgresql replication: {what} failed: {source}")]
    Replication {
        /// What was being done.
        what: String,
        /// The replication client's error.
        #[source]
        source: pgwire_replication::PgWireError,
    },
    /// A row used a catalog fact (an enum label) newer than the schema read for its table: a restart of
    /// the stream reads the catalog again. Transient.
    #[error(
        "the schema read for {table} is older than its rows ({reason}); restarting the stream re-reads it"
    )]
    StaleSchema {
        /// The table.
        table: String,
        /// What did not match.
        reason: String,
    },
    /// `next_event` was called before `start`.
    #[error("the connector is not started; call start() first")]
    NotStarted,
}

impl ConnectorError {
    /// Whether retrying (reconnecting with backoff) can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectorError::Connection { source, .. } | ConnectorError::Query { source, .. } => {
                is_transient_driver_error(source)
            }
            ConnectorError::Postgres { source, .. } => is_transient_postgres_error(source),
            ConnectorError::Replication { source, .. } => is_transient_replication_error(source),
            ConnectorError::ReadTimeout(_)
            | ConnectorError::Timeout { .. }
            | ConnectorError::StaleSchema { .. }
            | ConnectorError::StreamClosed => true,
            _ => false,
        }
    }
}

/// Network and protocol-level failures are transient; server errors (access denied, bad syntax, unknown
/// GTID) are not, except the ones a restarting or momentarily short server sends.
pub(crate) fn is_transient_driver_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(_) => true,
        mysql_async::Error::Server(s) => is_transient_server_code(s.code),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs worth a reconnect: connection exceptions (class 08), insufficient resources
/// (53), operator intervention (57: shutdown, crash, cannot connect now), serialization failures and
/// deadlocks (40001, 40P01), and 55006 (object in use: the slot is still held by the walsender of a
/// previous connection that the server has not noticed is gone).
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || matches!(code, "40001" | "40P01" | "55006")
}

/// A connection-level error (no server error) is transient; a server error by its SQLSTATE.
pub(crate) fn is_transient_postgres_error(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => is_transient_sqlstate(db.code().code()),
        None => true,
    }
}

/// I/O and a stopped worker are transient; a server error by the SQLSTATE in its message; protocol,
/// authentication and TLS errors are not.
pub(crate) fn is_transient_replication_error(e: &pgwire_replication::PgWireError) -> bool {
    use pgwire_replication::PgWireError as E;
    match e {
        E::Io(_) | E::Task(_) => true,
        E::Server(message) => message
            .rsplit_once("(SQLSTATE ")
            .and_then(|(_, code)| code.strip_suffix(')'))
            .is_some_and(is_transient_sqlstate),
        _ => false,
    }
}

/// Server error codes worth a reconnect with backoff rather than stopping capture.
fn is_transient_server_code(code: u16) -> bool {
    matches!(
        code,
        // The server's own file and memory errors (mysys `EE_*`: cannot create, read, write or delete a
        // temporary file, out of memory, ...), e.g. `ERROR 6 Error on delete of '/tmp/#sql-temptable-…'`
        // on an information_schema query.
        1..=35
        // 1021 disk full, 1030 storage engine error, 1037/1038/1041 out of memory.
        | 1021 | 1030 | 1037 | 1038 | 1041
        // 1040 too many connections, 1043 bad handshake on a starting server, 1053 shutdown in
        // progress.
        | 1040 | 1043 | 1053
        // 1205 lock wait timeout, 1213 deadlock, 1317 query interrupted, 1927 connection killed.
        | 1205 | 1213 | 1317 | 1927
        // 2006/2013 gone away / lost connection.
        | 2006 | 2013
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: format!("error {code}"),
            state: "HY000".into(),
        })
    }

    #[test]
    fn server_resource_errors_are_transient_and_configuration_errors_are_not() {
        // Seen in the fault soak: a metadata query failing on the server's temporary file.
        for code in [6, 1021, 1030, 1040, 1053, 1205, 1213, 1317, 1927, 2013] {
            assert!(is_transient_driver_error(&server(code)), "{code}");
        }
        // Access denied, unknown table, bad syntax, binlog position errors stay definite.
        for code in [1044, 1045, 1142, 1146, 1064, 1236, 1227] {
            assert!(!is_transient_driver_error(&server(code)), "{code}");
        }
        let e = ConnectorError::Query {
            what: "reading JSON columns".into(),
            source: server(6),
        };
        assert!(e.is_transient());
    }
}
