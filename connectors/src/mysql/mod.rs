//! The MySQL/MariaDB binlog connector (MariaDB 10.11 is what is tested).
//!
//! It connects as a replica (`COM_BINLOG_DUMP` with `@mariadb_slave_capability=4`, so GTID events are
//! sent), turns every committed transaction into one [`SourceTransaction`] and resumes exactly with
//! `SET @slave_connect_state`: no relay state is needed beyond the last SCN.
//!
//! ## SCN and position
//!
//! The SCN of a transaction is its MariaDB GTID sequence number (`domain-server-seq`: the `seq`). It rises
//! by one per transaction within a replication domain, across binlog rotations and server restarts, and
//! survives a failover to a replica that kept the same GTIDs. A stream with several GTID domains is refused:
//! their sequence numbers are independent. Each transaction also records its full GTID and its binlog
//! file and end position ([`SourcePosition`]).
//!
//! ## Event handling
//!
//! | binlog event | what the connector does |
//! |---|---|
//! | `MARIA_GTID` (0xa2) | opens a transaction (a standalone one is a DDL statement) |
//! | `TABLE_MAP` | derives the table's schema (cached per table id and connection, never persisted) |
//! | `WRITE/UPDATE/DELETE_ROWS` v1/v2 | decodes the rows of captured tables into the open transaction |
//! | compressed rows/query events (0xa5-0xab) | definite error: set `log_bin_compress=OFF` |
//! | `XID`, `QUERY COMMIT`, the DDL `QUERY` | closes the transaction and emits it |
//! | artificial `ROTATE` | the current binlog file name (the first one's trailing CRC is stripped) |
//! | `HEARTBEAT` | a [`ConnectorEvent::Heartbeat`] |
//!
//! A broken connection, a read timeout (no event, heartbeats included, for `read_timeout`; noticed
//! within 1.5 times it, the stream's clock ticking every half of it) or the server
//! closing the stream drops the partial transaction and reconnects with exponential backoff and jitter,
//! resuming after the last transaction completed.

mod checks;
mod config;
mod ddl;
mod rows;
mod schema;
mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use databus_core::Scn;
use databus_serde_formats::model::TableSchema;
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

pub use self::checks::{CheckOutcome, SourceCheck};
use self::config::Validated;
pub use self::config::{MySqlConfig, ReconnectConfig};
use self::rows::Reader;
use self::schema::{Charsets, ColumnFacts, TableInfo};
pub use self::snapshot::{MySqlSnapshot, MySqlSnapshotSource};
use crate::ConnectorError;
use crate::source::{
    ChangeKind, ConnectorEvent, DdlKind, RowChange, SourceConnector, SourcePosition,
    SourceTransaction, StartPosition, TableDdl, TableName,
};

// Raw event type codes (MariaDB-specific ones are not parsed by mysql_common).
const QUERY_EVENT: u8 = 2;
const ROTATE_EVENT: u8 = 4;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const XID_EVENT: u8 = 16;
const TABLE_MAP_EVENT: u8 = 19;
const HEARTBEAT_EVENT: u8 = 27;
const ROWS_EVENTS: [u8; 6] = [23, 24, 25, 30, 31, 32];
const XA_PREPARE_EVENT: u8 = 38;
const MARIA_GTID_EVENT: u8 = 0xa2;
/// QUERY_COMPRESSED (0xa5) and the six compressed rows events (0xa6-0xab).
const COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 0xa5..=0xab;
/// `flags2` bit of a GTID event: a standalone (DDL, non-transactional) event group.
const FL_STANDALONE: u8 = 1;

/// The MySQL/MariaDB connector's [`SourcePosition`]: the transaction's GTID and the binlog file and
/// position just after its commit event. Serialized as
/// `{"gtid":"0-1-42","file":"mariadb-bin.000001","end_position":812}` (the relay's state files hold it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct MySqlPosition {
    /// The transaction's global transaction id (`domain-server-seq`).
    pub gtid: String,
    /// The binlog file holding the transaction.
    pub file: String,
    /// The position just after the transaction in `file`.
    pub end_position: u64,
}

impl MySqlPosition {
    /// As the connector-neutral, opaque [`SourcePosition`].
    pub fn to_position(&self) -> SourcePosition {
        SourcePosition::new(serde_json::to_value(self).expect("a position always serializes"))
    }

    /// Reads a position this connector wrote; a definite error for any other.
    pub fn from_position(position: &SourcePosition) -> Result<Self, ConnectorError> {
        serde_json::from_value(position.value().clone()).map_err(|e| {
            ConnectorError::Config(format!(
                "position {position} is not a MySQL/MariaDB position (gtid, file, end_position): {e}"
            ))
        })
    }
}

/// The domains present in a GTID list such as `0-1-5,1-2-9`.
pub(crate) fn gtid_domains(list: &str) -> Vec<u32> {
    let mut d: Vec<u32> = parse_gtid_list(list)
        .into_iter()
        .map(|g| g.domain)
        .collect();
    d.sort_unstable();
    d.dedup();
    d
}

/// A MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gtid {
    domain: u32,
    server: u32,
    seq: u64,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

fn parse_gtid(s: &str) -> Option<Gtid> {
    let mut it = s.trim().splitn(3, '-');
    Some(Gtid {
        domain: it.next()?.parse().ok()?,
        server: it.next()?.parse().ok()?,
        seq: it.next()?.parse().ok()?,
    })
}

fn parse_gtid_list(s: &str) -> Vec<Gtid> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .filter_map(parse_gtid)
        .collect()
}

/// How many server ids wrote `domain`, per a `gtid_binlog_state`.
fn servers_in_domain(state: &str, domain: u32) -> usize {
    let mut ids: Vec<u32> = parse_gtid_list(state)
        .into_iter()
        .filter(|g| g.domain == domain)
        .map(|g| g.server)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What a table id of the current connection refers to.
#[derive(Debug)]
enum TableEntry {
    Captured(Arc<TableInfo>),
    Ignored,
}

/// A transaction being assembled.
#[derive(Debug)]
struct OpenTxn {
    /// Before the resume point while positioning by scan: read through, emit nothing.
    skip: bool,
    gtid: Gtid,
    standalone: bool,
    timestamp: u32,
    changes: Vec<RowChange>,
    table_changes: Vec<TableDdl>,
    schema_changes: Vec<(TableName, Arc<TableSchema>)>,
    bytes: u64,
}

/// One live replication connection.
struct Live {
    stream: BinlogStream,
    /// The read timeout's clock, ticking every half `read_timeout` (kept here, so a cancelled
    /// `next_event` does not restart it). Reading no clock per event: the stream counts as silent when
    /// two whole ticks pass without an event, i.e. after between `read_timeout` and 1.5 times it.
    quiet_ticker: tokio::time::Interval,
    /// Whether an event (heartbeats included) arrived since the last tick.
    heard: bool,
    /// Ticks in a row without an event.
    quiet_ticks: u8,
    seen_format_description: bool,
    /// The binlog file being read (shared cheaply with error messages built per event).
    file: Arc<str>,
    /// Table id -> (raw table-map bytes, entry). Ids are per server run: never persisted.
    tables: FxHashMap<u64, (Vec<u8>, TableEntry)>,
    txn: Option<OpenTxn>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("file", &self.file)
            .field("txn", &self.txn)
            .finish_non_exhaustive()
    }
}

/// The MySQL/MariaDB binlog connector. See the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> Result<(), databus_connectors::ConnectorError> {
/// use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
/// use databus_connectors::{ConnectorEvent, SourceConnector, StartPosition};
/// use databus_core::Scn;
///
/// let mut config = MySqlConfig::new("mysql://relay:secret@127.0.0.1:3306/", 4001);
/// config.databases = vec!["shop".into()];
/// let mut connector = MySqlConnector::new(config)?;
/// connector.start(StartPosition::After(Scn::new(41))).await?;
/// while let Some(event) = connector.next_event().await? {
///     if let ConnectorEvent::Transaction(txn) = event {
///         println!("scn {} with {} changes", txn.scn, txn.changes.len());
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MySqlConnector {
    config: MySqlConfig,
    valid: Validated,
    cancel: CancellationToken,
    started: bool,
    live: Option<Live>,
    meta: Option<Conn>,
    charsets: Charsets,
    /// The GTID position the next connection resumes after (`""`: the oldest binlog).
    resume_state: String,
    /// Positioning by scan: stream this binlog file from its start and skip GTID groups up to
    /// `skip_through` (used when several server ids wrote the domain, so `After(scn)` has no exact GTID).
    scan_from: Option<String>,
    skip_through: Option<u64>,
    last_scn: Scn,
    domain: Option<u32>,
    pending: VecDeque<ConnectorEvent>,
    /// The schema last announced per table (SchemaChange is sent when it changes).
    announced: FxHashMap<TableName, Arc<TableSchema>>,
    /// What `information_schema` says about each table's columns beyond the binlog (cleared on DDL).
    column_facts: HashMap<TableName, ColumnFacts>,
    failures: u32,
    reconnects: u64,
    /// No reconnection before this instant (backoff).
    retry_at: Option<tokio::time::Instant>,
}

impl MySqlConnector {
    /// Builds a connector from its configuration (validated here; nothing is connected yet).
    pub fn new(config: MySqlConfig) -> Result<Self, ConnectorError> {
        let valid = config.validate()?;
        Ok(Self {
            config,
            valid,
            cancel: CancellationToken::new(),
            started: false,
            live: None,
            meta: None,
            charsets: Charsets::default(),
            resume_state: String::new(),
            scan_from: None,
            skip_through: None,
            last_scn: Scn::ZERO,
            domain: None,
            pending: VecDeque::new(),
            announced: FxHashMap::default(),
            column_facts: HashMap::new(),
            failures: 0,
            reconnects: 0,
            retry_at: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MySqlConfig {
        &self.config
    }

    /// How many times the connector dropped its connection after a transient error and reconnected.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Checks every setting capture needs, without starting: for `databus check-source`.
    pub async fn check_source(config: &MySqlConfig) -> Result<Vec<SourceCheck>, ConnectorError> {
        let mut conn = Conn::new(config.connection_opts()?)
            .await
            .map_err(|source| ConnectorError::Connection {
                what: "the source".into(),
                source,
            })?;
        let checks = checks::run_checks(&mut conn, config.server_id).await;
        let _ = conn.disconnect().await;
        checks
    }

    async fn meta_conn(&mut self) -> Result<&mut Conn, ConnectorError> {
        if self.meta.is_none() {
            self.meta = Some(connect(&self.valid).await?);
        }
        Ok(self.meta.as_mut().expect("set above"))
    }

    async fn meta_query<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        what: &str,
        sql: String,
    ) -> Result<Vec<T>, ConnectorError> {
        self.meta_exec(what, sql, mysql_async::Params::Empty).await
    }

    /// A metadata query with its values bound as parameters (never spliced into the text).
    async fn meta_exec<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        what: &str,
        sql: String,
        params: mysql_async::Params,
    ) -> Result<Vec<T>, ConnectorError> {
        /// How one try ended.
        enum Try<T> {
            Rows(Vec<T>),
            /// The metadata connection could not be opened (already classified).
            Connect(ConnectorError),
            /// The query failed on an open connection.
            Driver(mysql_async::Error),
        }
        // The metadata connection may have idled out (wait_timeout) or outlived a server restart: a
        // transient failure is retried once on a fresh connection. Each try is bounded by the read
        // timeout, so a query the server never answers cannot stall the stream: it becomes a
        // transient error (reconnect with backoff) like a silent binlog stream.
        let limit = self.config.read_timeout;
        let mut retried = false;
        loop {
            let attempt = tokio::time::timeout(limit, async {
                let conn = match self.meta_conn().await {
                    Ok(conn) => conn,
                    Err(e) => return Try::Connect(e),
                };
                let rows = if params == mysql_async::Params::Empty {
                    conn.query(sql.as_str()).await
                } else {
                    conn.exec(sql.as_str(), params.clone()).await
                };
                match rows {
                    Ok(rows) => Try::Rows(rows),
                    Err(e) => Try::Driver(e),
                }
            })
            .await;
            let source = match attempt {
                Ok(Try::Rows(rows)) => return Ok(rows),
                Ok(Try::Connect(e)) => return Err(e),
                Ok(Try::Driver(source)) => source,
                Err(_) => {
                    self.meta = None;
                    return Err(ConnectorError::Timeout {
                        what: format!("{what} (a metadata query on the source)"),
                        after: limit,
                    });
                }
            };
            self.meta = None;
            if retried || !crate::error::is_transient_driver_error(&source) {
                return Err(ConnectorError::Query {
                    what: what.to_owned(),
                    source,
                });
            }
            retried = true;
        }
    }

    async fn close_live(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), live.stream.close()).await;
        }
    }

    /// The server id that wrote sequence number `seq` in `domain`, from `gtid_binlog_state` (the server
    /// with the smallest last sequence number at or above `seq`).
    fn server_for(state: &str, domain: u32, seq: u64) -> Option<u32> {
        let mut in_domain: Vec<Gtid> = parse_gtid_list(state)
            .into_iter()
            .filter(|g| g.domain == domain)
            .collect();
        in_domain.sort_by_key(|g| g.seq);
        in_domain
            .iter()
            .find(|g| g.seq >= seq)
            .or(in_domain.last())
            .map(|g| g.server)
    }

    async fn open_stream(&mut self) -> Result<(), ConnectorError> {
        let mut conn = connect(&self.valid).await?;
        let heartbeat_ns = self.config.heartbeat_period.as_nanos();
        let mut setup = vec![
            "SET @mariadb_slave_capability=4".to_owned(),
            format!("SET @master_heartbeat_period={heartbeat_ns}"),
        ];
        if self.scan_from.is_none() {
            // Interpolated into SQL: only a GTID list (`domain-server-seq[,...]`) may get there.
            if !self
                .resume_state
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
            {
                return Err(ConnectorError::Config(format!(
                    "resume position {:?} is not a GTID list",
                    self.resume_state
                )));
            }
            setup.push(format!("SET @slave_connect_state='{}'", self.resume_state));
        }
        for sql in setup {
            conn.query_drop(&sql)
                .await
                .map_err(|source| ConnectorError::Query {
                    what: sql.clone(),
                    source,
                })?;
        }
        let mut request = BinlogStreamRequest::new(self.config.server_id);
        if let Some(file) = &self.scan_from {
            request = request.with_filename(file.as_bytes()).with_pos(4u64);
        }
        let stream =
            conn.get_binlog_stream(request)
                .await
                .map_err(|source| ConnectorError::Connection {
                    what: "the binlog stream".into(),
                    source,
                })?;
        tracing::info!(resume_after = %self.resume_state, scan_from = ?self.scan_from, "binlog stream opened");
        self.live = Some(Live {
            stream,
            quiet_ticker: quiet_ticker(self.config.read_timeout),
            heard: false,
            quiet_ticks: 0,
            seen_format_description: false,
            file: Arc::from(""),
            tables: FxHashMap::default(),
            txn: None,
        });
        Ok(())
    }

    /// [`Self::open_stream`] within the read timeout: a server that accepts the connection but never
    /// answers is a transient [`ConnectorError::Timeout`], not a hang.
    async fn open_stream_bounded(&mut self) -> Result<(), ConnectorError> {
        let limit = self.config.read_timeout;
        tokio::time::timeout(limit, self.open_stream())
            .await
            .map_err(|_| ConnectorError::Timeout {
                what: "connecting the binlog stream".into(),
                after: limit,
            })?
    }

    /// The last binlog file whose first transaction comes after at most `scn` (so it holds the
    /// transaction after `scn`). A definite error when `scn` is purged or beyond the binlog.
    async fn file_holding(
        &mut self,
        domain: u32,
        scn: Scn,
        current: &str,
    ) -> Result<String, ConnectorError> {
        let requested = format!("scn {scn}");
        let last = parse_gtid_list(current)
            .into_iter()
            .filter(|g| g.domain == domain)
            .map(|g| g.seq)
            .max();
        if last.is_none_or(|l| l < scn.get()) {
            return Err(ConnectorError::UnknownPosition {
                requested,
                detail: format!("the binlog ends at gtid position '{current}'"),
            });
        }
        let files: Vec<(String, u64)> = self
            .meta_query("SHOW BINARY LOGS", "SHOW BINARY LOGS".into())
            .await?;
        let mut chosen = None;
        for (file, _) in files {
            let before: Vec<Option<String>> = self
                .meta_exec(
                    "BINLOG_GTID_POS",
                    "SELECT BINLOG_GTID_POS(?, 4)".into(),
                    (file.clone(),).into(),
                )
                .await?;
            let before = before.into_iter().next().flatten().unwrap_or_default();
            let start_seq = parse_gtid_list(&before)
                .into_iter()
                .filter(|g| g.domain == domain)
                .map(|g| g.seq)
                .max()
                .unwrap_or(0);
            if start_seq > scn.get() {
                break;
            }
            chosen = Some(file);
        }
        match chosen {
            Some(file) => Ok(file),
            None => {
                let (oldest, resume_after) = self.oldest_position().await;
                Err(ConnectorError::Purged {
                    requested,
                    oldest,
                    resume_after,
                })
            }
        }
    }

    /// Maps a server error of the stream: 1236 is a bad resume point, definite.
    async fn stream_error(&mut self, source: mysql_async::Error) -> ConnectorError {
        let requested = if let Some(file) = &self.scan_from {
            format!("scn {} (scanning from binlog file {file})", self.last_scn)
        } else if self.resume_state.is_empty() {
            "the start of the binlog".into()
        } else {
            format!("gtid {}", self.resume_state)
        };
        match &source {
            mysql_async::Error::Server(s) if s.code == 1236 => {
                if s.message.contains("purged") || s.message.contains("Could not find GTID state") {
                    let (oldest, resume_after) = self.oldest_position().await;
                    ConnectorError::Purged {
                        requested,
                        oldest,
                        resume_after,
                    }
                } else {
                    ConnectorError::UnknownPosition {
                        requested,
                        detail: s.message.clone(),
                    }
                }
            }
            _ => ConnectorError::Connection {
                what: "the binlog stream".into(),
                source,
            },
        }
    }

    async fn oldest_position(&mut self) -> (String, Option<Scn>) {
        let files: Result<Vec<(String, u64)>, _> = self
            .meta_query("SHOW BINARY LOGS", "SHOW BINARY LOGS".into())
            .await;
        let Some((file, _)) = files.ok().and_then(|f| f.into_iter().next()) else {
            return ("unknown (SHOW BINARY LOGS failed)".into(), None);
        };
        let pos: Vec<Option<String>> = self
            .meta_exec(
                "BINLOG_GTID_POS",
                "SELECT BINLOG_GTID_POS(?, 4)".into(),
                (file.clone(),).into(),
            )
            .await
            .unwrap_or_default();
        let Some(before) = pos.into_iter().next().flatten() else {
            return (
                format!("binlog file {file} (its GTID position is unknown)"),
                None,
            );
        };
        // The captured domain's sequence number at the start of the oldest file.
        let domain = self.domain;
        let scn = parse_gtid_list(&before)
            .into_iter()
            .filter(|g| domain.is_none_or(|d| d == g.domain))
            .map(|g| g.seq)
            .max()
            .unwrap_or(0);
        (
            format!(
                "binlog file {file}, which starts after gtid position '{before}' (resume from SCN {scn} or later)"
            ),
            Some(Scn::new(scn)),
        )
    }

    /// Reads and handles one binlog event.
    async fn step(&mut self) -> Result<(), ConnectorError> {
        if self.live.is_none() {
            self.open_stream_bounded().await?;
        }
        let read_timeout = self.config.read_timeout;
        let live = self.live.as_mut().expect("opened above");
        let next = loop {
            tokio::select! {
                biased;
                next = live.stream.next() => break next,
                _ = live.quiet_ticker.tick() => {
                    live.quiet_ticks = if std::mem::take(&mut live.heard) { 0 } else { live.quiet_ticks + 1 };
                    if live.quiet_ticks >= 2 {
                        return Err(ConnectorError::ReadTimeout(read_timeout));
                    }
                }
            }
        };
        live.heard = true;
        let event = match next {
            None => return Err(ConnectorError::StreamClosed),
            Some(Err(e)) => return Err(self.stream_error(e).await),
            Some(Ok(e)) => e,
        };
        self.failures = 0;
        let header = event.header();
        let kind = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        // The position text is built only for an error (this runs for every binlog event).
        let file = Arc::clone(&live.file);
        let undecodable = |event: String, reason: String| ConnectorError::UndecodableEvent {
            event,
            position: format!("{file}:{log_pos}"),
            reason,
        };
        match kind {
            MARIA_GTID_EVENT => {
                let data = event.data();
                if data.len() < 13 {
                    return Err(undecodable("MARIA_GTID".into(), "event too short".into()));
                }
                let seq = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
                let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
                let gtid = Gtid {
                    domain,
                    server: header.server_id(),
                    seq,
                };
                match self.domain {
                    Some(d) if d != domain => {
                        return Err(ConnectorError::MultipleDomains {
                            domains: format!("{d} and {domain}"),
                        });
                    }
                    _ => self.domain = Some(domain),
                }
                let skip = self.skip_through.is_some_and(|n| seq <= n);
                if !skip && Scn::new(seq) <= self.last_scn {
                    return Err(ConnectorError::ScnRegression {
                        previous: self.last_scn.get(),
                        next: seq,
                        gtid: gtid.to_string(),
                    });
                }
                let live = self.live.as_mut().expect("live");
                if let Some(open) = &live.txn {
                    return Err(undecodable(
                        "MARIA_GTID".into(),
                        format!(
                            "transaction {} has no commit event before {gtid}",
                            open.gtid
                        ),
                    ));
                }
                live.txn = Some(OpenTxn {
                    skip,
                    gtid,
                    standalone: data[12] & FL_STANDALONE != 0,
                    timestamp: header.timestamp(),
                    changes: Vec::new(),
                    table_changes: Vec::new(),
                    schema_changes: Vec::new(),
                    bytes: 0,
                });
            }
            XID_EVENT => self.commit(log_pos)?,
            QUERY_EVENT => {
                let (query, default_db) = match event.read_data() {
                    Ok(Some(EventData::QueryEvent(q))) => {
                        (q.query().trim().to_owned(), q.schema().into_owned())
                    }
                    other => {
                        return Err(undecodable(
                            "QUERY".into(),
                            format!("unparsable: {other:?}"),
                        ));
                    }
                };
                let upper = query
                    .get(..query.len().min(16))
                    .unwrap_or("")
                    .to_ascii_uppercase();
                let live = self.live.as_mut().expect("live");
                let standalone = live.txn.as_ref().is_some_and(|t| t.standalone);
                if standalone
                    || upper.starts_with("COMMIT")
                    || upper.starts_with("ROLLBACK") && !upper.contains(" TO")
                {
                    if standalone {
                        // A DDL statement: table-map-derived schemas pick up the change; JSON-ness is re-read.
                        self.column_facts.clear();
                        self.ddl(&query, &default_db)?;
                    }
                    self.commit(log_pos)?;
                } else if ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"]
                    .iter()
                    .any(|k| upper.starts_with(k))
                {
                    return Err(undecodable(
                        "QUERY".into(),
                        format!(
                            "a statement-based change ({query:.60}) is in the binlog; its rows cannot be captured: set \
                             binlog_format=ROW on the source"
                        ),
                    ));
                }
            }
            TABLE_MAP_EVENT => self.table_map(&event).await?,
            k if ROWS_EVENTS.contains(&k) => self.rows(&event, k)?,
            k if COMPRESSED_EVENTS.contains(&k) => {
                return Err(undecodable(
                    format!("0x{k:02x} (compressed)"),
                    "compressed binlog events cannot be decoded; set log_bin_compress=OFF on the source".into(),
                ));
            }
            XA_PREPARE_EVENT => {
                return Err(undecodable(
                    "XA_PREPARE".into(),
                    "XA transactions are not supported: their prepared and committed parts are separate \
                     binlog groups; commit changes to captured tables without XA"
                        .into(),
                ));
            }
            ROTATE_EVENT => {
                let live = self.live.as_mut().expect("live");
                let data = event.data();
                // Before the format description the stream does not know checksums are on, so the
                // first artificial rotate still carries its 4-byte CRC at the end.
                let end = if live.seen_format_description {
                    data.len()
                } else {
                    data.len().saturating_sub(4)
                };
                let name = data.get(8..end).unwrap_or_default();
                live.file = String::from_utf8_lossy(name).into();
            }
            FORMAT_DESCRIPTION_EVENT => {
                self.live.as_mut().expect("live").seen_format_description = true
            }
            HEARTBEAT_EVENT if self.live.as_ref().is_some_and(|l| l.txn.is_none()) => {
                self.pending.push_back(ConnectorEvent::Heartbeat {
                    last_scn: self.last_scn,
                    timestamp_ns: now_ns(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Records what a DDL statement of the open (standalone) group does to captured tables. A rename
    /// of a captured table to an uncaptured name is a definite error: its changes would be lost.
    fn ddl(&mut self, statement: &str, default_db: &str) -> Result<(), ConnectorError> {
        let Some(ddl) = ddl::parse(statement, default_db) else {
            return Ok(());
        };
        let valid = &self.valid;
        let captured = |t: &TableName| valid.captures(&t.database, &t.table);
        let live = self.live.as_mut().expect("live");
        let Some(txn) = live.txn.as_mut() else {
            return Ok(());
        };
        if txn.skip {
            return Ok(());
        }
        let mut effects = Vec::new();
        let mut renames = Vec::new();
        match ddl {
            ddl::Ddl::Truncate(t) => effects.push((t, DdlKind::Truncate)),
            ddl::Ddl::Drop(ts) => effects.extend(ts.into_iter().map(|t| (t, DdlKind::Drop))),
            ddl::Ddl::Create { table, replace } => {
                if replace {
                    effects.push((table.clone(), DdlKind::Drop));
                }
                effects.push((table, DdlKind::Create));
            }
            ddl::Ddl::Alter { table, renamed_to } => {
                if let Some(to) = renamed_to {
                    renames.push((table.clone(), to));
                }
                effects.push((table, DdlKind::Alter));
            }
            ddl::Ddl::Rename(pairs) => renames.extend(pairs),
            ddl::Ddl::DropDatabase(db) => {
                if valid.databases.contains(&db) || valid.tables.iter().any(|t| t.database == db) {
                    txn.table_changes.push(TableDdl {
                        table: TableName::new(db, ""),
                        kind: DdlKind::DropDatabase,
                        statement: statement.to_owned(),
                    });
                }
                return Ok(());
            }
        }
        for (from, to) in renames {
            if captured(&from) && !captured(&to) {
                return Err(ConnectorError::RenamedAway {
                    from: from.to_string(),
                    to: to.to_string(),
                    gtid: txn.gtid.to_string(),
                    statement: statement.to_owned(),
                });
            }
        }
        txn.table_changes
            .extend(
                effects
                    .into_iter()
                    .filter(|(t, _)| captured(t))
                    .map(|(table, kind)| TableDdl {
                        table,
                        kind,
                        statement: statement.to_owned(),
                    }),
            );
        Ok(())
    }

    async fn table_map(
        &mut self,
        event: &mysql_async::binlog::events::Event,
    ) -> Result<(), ConnectorError> {
        let data = event.data();
        // The common case, a table mapped again by every statement: the same bytes under the same id
        // (the id is the first 6 bytes of the post-header). Compared before parsing the event.
        if let Some(id) = data.get(..6).map(|b| {
            let mut id = [0u8; 8];
            id[..6].copy_from_slice(b);
            u64::from_le_bytes(id)
        }) && let Some((raw, _)) = self.live.as_ref().and_then(|l| l.tables.get(&id))
            && raw.as_slice() == data
        {
            return Ok(());
        }
        let tme = match event.read_data() {
            Ok(Some(EventData::TableMapEvent(t))) => t,
            other => {
                return Err(ConnectorError::UndecodableEvent {
                    event: "TABLE_MAP".into(),
                    position: live_file(&self.live),
                    reason: format!("unparsable: {other:?}"),
                });
            }
        };
        let id = tme.table_id();
        if self
            .live
            .as_ref()
            .and_then(|l| l.txn.as_ref())
            .is_some_and(|t| t.skip)
        {
            return Ok(());
        }
        if let Some((raw, _)) = self.live.as_ref().and_then(|l| l.tables.get(&id)) {
            if raw.as_slice() == data {
                return Ok(());
            }
        }
        let name = TableName::new(tme.database_name(), tme.table_name());
        let entry = if self.valid.captures(&name.database, &name.table) {
            if !self.column_facts.contains_key(&name) {
                let table = || (name.database.clone(), name.table.clone()).into();
                let json = schema::json_columns(
                    self.meta_exec(
                        "reading JSON columns",
                        schema::JSON_COLUMNS_SQL.into(),
                        table(),
                    )
                    .await?,
                );
                let fractional = self
                    .meta_exec(
                        "reading fractional-second columns",
                        schema::FRACTIONAL_COLUMNS_SQL.into(),
                        table(),
                    )
                    .await?
                    .into_iter()
                    .collect();
                self.column_facts
                    .insert(name.clone(), ColumnFacts { json, fractional });
            }
            let info = schema::table_info(&tme, &self.charsets, &self.column_facts[&name])?;
            if info.schema.primary_key.is_empty() && !self.config.allow_tables_without_primary_key {
                return Err(ConnectorError::NoPrimaryKey {
                    table: name.to_string(),
                });
            }
            TableEntry::Captured(Arc::new(info))
        } else {
            TableEntry::Ignored
        };
        if let Some(live) = self.live.as_mut() {
            live.tables.insert(id, (data.to_vec(), entry));
        }
        Ok(())
    }

    fn rows(
        &mut self,
        event: &mysql_async::binlog::events::Event,
        kind: u8,
    ) -> Result<(), ConnectorError> {
        let max_rows = self.config.max_transaction_rows;
        let max_bytes = self.config.max_transaction_bytes;
        let live = self.live.as_mut().expect("live");
        // Built only for an error (this runs for every rows event).
        let (file, log_pos) = (Arc::clone(&live.file), event.header().log_pos());
        let undecodable = |reason: String| ConnectorError::UndecodableEvent {
            event: format!("rows event {kind}"),
            position: format!("{file}:{log_pos}"),
            reason,
        };
        let rows = match event.read_data() {
            Ok(Some(EventData::RowsEvent(r))) => r,
            other => return Err(undecodable(format!("the library returned {other:?}"))),
        };
        let table_id = rows.table_id();
        if live.txn.as_ref().is_some_and(|t| t.skip) {
            return Ok(());
        }
        let info = match live.tables.get(&table_id) {
            Some((_, TableEntry::Ignored)) => return Ok(()),
            Some((_, TableEntry::Captured(info))) => Arc::clone(info),
            None => return Err(undecodable(format!("no table map for table id {table_id}"))),
        };
        let Some(txn) = live.txn.as_mut() else {
            return Err(undecodable("rows event outside a transaction".into()));
        };
        let change_kind = match &rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                ChangeKind::Insert
            }
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => {
                ChangeKind::Update
            }
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                ChangeKind::Delete
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(undecodable(
                    "partial JSON updates are not supported; set binlog_row_value_options=''"
                        .into(),
                ));
            }
        };
        let name = &info.name;
        let announced = txn
            .schema_changes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .or_else(|| self.announced.get(name));
        // Pointer equality first: the table map cache hands out the same Arc while the table is unchanged.
        if announced.is_none_or(|s| !Arc::ptr_eq(s, &info.schema) && **s != *info.schema) {
            txn.schema_changes
                .push((name.clone(), Arc::clone(&info.schema)));
        }
        txn.bytes += event.data().len() as u64;
        if txn.bytes > max_bytes {
            return Err(ConnectorError::TransactionTooLarge {
                gtid: txn.gtid.to_string(),
                limit: format!("{max_bytes} bytes"),
                setting: "max_transaction_bytes",
            });
        }
        // Every column in every image (binlog_row_image=FULL): the decoder reads whole rows.
        let columns = info.codecs.len();
        let (before_cols, after_cols) = (rows.columns_before_image(), rows.columns_after_image());
        if rows.num_columns() != columns as u64
            || before_cols.is_some_and(|c| !c.all())
            || after_cols.is_some_and(|c| !c.all())
        {
            return Err(info.err(
                0,
                format!(
                    "the rows event carries {} of the table's {columns} columns or not all of them in \
                     each image; set binlog_row_image=FULL on the source",
                    rows.num_columns()
                ),
            ));
        }
        let (has_before, has_after) = (before_cols.is_some(), after_cols.is_some());
        let mut reader = Reader::new(rows.rows_data());
        while !reader.is_empty() {
            let before = has_before
                .then(|| info.decode_image(&mut reader))
                .transpose()?;
            let after = has_after
                .then(|| info.decode_image(&mut reader))
                .transpose()?;
            txn.changes.push(RowChange {
                table: Arc::clone(&info.schema),
                kind: change_kind,
                before,
                after,
            });
            if txn.changes.len() as u64 > max_rows {
                return Err(ConnectorError::TransactionTooLarge {
                    gtid: txn.gtid.to_string(),
                    limit: format!("{max_rows} row changes"),
                    setting: "max_transaction_rows",
                });
            }
        }
        Ok(())
    }

    fn commit(&mut self, end_position: u64) -> Result<(), ConnectorError> {
        let live = self.live.as_mut().expect("live");
        let Some(txn) = live.txn.take() else {
            // A COMMIT outside a GTID group cannot happen with capability 4; ignore it.
            return Ok(());
        };
        if txn.skip {
            return Ok(());
        }
        // From the first transaction delivered on, resume by its exact GTID.
        self.scan_from = None;
        self.skip_through = None;
        let scn = Scn::new(txn.gtid.seq);
        for (table, schema) in txn.schema_changes {
            self.announced.insert(table.clone(), Arc::clone(&schema));
            self.pending
                .push_back(ConnectorEvent::SchemaChange { scn, table, schema });
        }
        let gtid = txn.gtid.to_string();
        let position = MySqlPosition {
            gtid: gtid.clone(),
            file: live.file.to_string(),
            end_position,
        }
        .to_position();
        self.resume_state = gtid;
        self.last_scn = scn;
        self.pending
            .push_back(ConnectorEvent::Transaction(SourceTransaction {
                scn,
                commit_timestamp_ns: u64::from(txn.timestamp) * 1_000_000_000,
                position,
                changes: txn.changes,
                table_changes: txn.table_changes,
            }));
        Ok(())
    }

    fn backoff(&self) -> Duration {
        let r = &self.config.reconnect;
        let exp = r
            .initial_backoff
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(20));
        let capped = exp.min(r.max_backoff);
        // Jitter: 50-100% of the delay, so relays restarting together do not reconnect in lockstep.
        capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// The clock of [`Live::quiet_ticker`]: a tick every half `read_timeout`, the first one half of it
/// from now (not at once, as `interval` would).
fn quiet_ticker(read_timeout: Duration) -> tokio::time::Interval {
    let period = (read_timeout / 2).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

fn live_file(live: &Option<Live>) -> String {
    live.as_ref()
        .map(|l| l.file.to_string())
        .unwrap_or_default()
}

async fn connect(valid: &Validated) -> Result<Conn, ConnectorError> {
    Conn::new(valid.opts.clone())
        .await
        .map_err(|source| ConnectorError::Connection {
            what: "the source".into(),
            source,
        })
}

impl SourceConnector for MySqlConnector {
    fn last_scn(&self) -> Scn {
        self.last_scn
    }

    async fn start(&mut self, from: StartPosition) -> Result<(), ConnectorError> {
        self.close_live().await;
        // A fresh metadata connection per start: the old one may predate a server restart.
        if let Some(conn) = self.meta.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
        }
        if self.cancel.is_cancelled() {
            self.cancel = CancellationToken::new();
        }
        self.started = false;
        self.pending.clear();
        self.announced.clear();
        self.column_facts.clear();
        self.failures = 0;
        self.retry_at = None;
        self.scan_from = None;
        self.skip_through = None;
        self.domain = None;
        let server_id = self.config.server_id;
        let checks = checks::run_checks(self.meta_conn().await?, server_id).await?;
        let problems = checks::problems(&checks);
        if !problems.is_empty() {
            return Err(ConnectorError::Misconfigured { problems });
        }
        let collations: Vec<(u16, String, u32)> = self
            .meta_query("reading collations", schema::COLLATIONS_SQL.into())
            .await?;
        self.charsets = Charsets::new(collations);
        let state: Vec<(String, String, u32)> = self
            .meta_query(
                "reading the binlog's GTID state",
                "SELECT CAST(@@GLOBAL.gtid_binlog_pos AS CHAR), CAST(@@GLOBAL.gtid_binlog_state AS CHAR), \
                 @@GLOBAL.server_id"
                    .into(),
            )
            .await?;
        let (pos, binlog_state, source_server_id) = state.into_iter().next().unwrap_or_default();
        let domains = gtid_domains(&pos);
        if domains.len() > 1 {
            return Err(ConnectorError::MultipleDomains { domains: pos });
        }
        let domain = domains.first().copied();
        (self.resume_state, self.last_scn) = match from {
            StartPosition::Now => {
                let seq = parse_gtid_list(&pos).first().map(|g| g.seq).unwrap_or(0);
                (pos.clone(), Scn::new(seq))
            }
            StartPosition::After(s) if s == Scn::ZERO => (String::new(), Scn::ZERO),
            StartPosition::After(s)
                if servers_in_domain(&binlog_state, domain.unwrap_or(0)) > 1 =>
            {
                // Several servers wrote this domain (a failover history): the GTID of `s` is not
                // known exactly, so stream from the file holding `s` and skip up to it.
                let file = self.file_holding(domain.unwrap_or(0), s, &pos).await?;
                self.scan_from = Some(file);
                self.skip_through = Some(s.get());
                (String::new(), s)
            }
            StartPosition::After(s) => {
                let domain = domain.unwrap_or(0);
                let server =
                    Self::server_for(&binlog_state, domain, s.get()).unwrap_or(source_server_id);
                (
                    Gtid {
                        domain,
                        server,
                        seq: s.get(),
                    }
                    .to_string(),
                    s,
                )
            }
            StartPosition::AfterPosition(p) => {
                let p = MySqlPosition::from_position(&p)?;
                let g = parse_gtid(&p.gtid).ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "position gtid {:?} is not domain-server-seq",
                        p.gtid
                    ))
                })?;
                (g.to_string(), Scn::new(g.seq))
            }
        };
        self.domain = domain;
        self.open_stream_bounded().await?;
        self.started = true;
        Ok(())
    }

    async fn next_event(&mut self) -> Result<Option<ConnectorEvent>, ConnectorError> {
        if !self.started {
            return Err(ConnectorError::NotStarted);
        }
        let cancel = self.cancel.clone();
        // One cancellation future for the whole call (not one per binlog event): registering and
        // unregistering with the token's waiter list costs two lock round trips each time.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            if cancel.is_cancelled() {
                self.close_live().await;
                return Ok(None);
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Some(at) = self.retry_at {
                tokio::select! {
                    biased;
                    _ = &mut cancelled => continue,
                    _ = tokio::time::sleep_until(at) => self.retry_at = None,
                }
            }
            let result = tokio::select! {
                biased;
                _ = &mut cancelled => continue,
                r = self.step() => r,
            };
            let Err(e) = result else { continue };
            // The partial transaction is dropped with the connection; completed ones stay queued.
            self.close_live().await;
            if !e.is_transient() {
                self.started = false;
                return Err(e);
            }
            self.failures += 1;
            self.reconnects += 1;
            if self
                .config
                .reconnect
                .max_attempts
                .is_some_and(|m| self.failures > m)
            {
                return Err(e);
            }
            let delay = self.backoff();
            tracing::warn!(error = %e, attempt = self.failures, ?delay, "source connection lost; reconnecting");
            // Kept in state, so a cancelled next_event does not skip the backoff.
            self.retry_at = Some(tokio::time::Instant::now() + delay);
        }
    }

    fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// SCNs are GTID sequence numbers, one per transaction in the domain: count back. Never
    /// `After(0)` (that means "from the oldest transaction the source has", which cannot tell whether
    /// older ones were purged); after SCN 1 it is a resume point `start` checks.
    fn refill_start(
        &self,
        last: Scn,
        _position: Option<&SourcePosition>,
        transactions: u64,
    ) -> StartPosition {
        if transactions == 0 {
            return StartPosition::After(last);
        }
        StartPosition::After(Scn::new(last.get().saturating_sub(transactions).max(1)))
    }

    async fn shutdown(&mut self) -> Result<(), ConnectorError> {
        self.cancel.cancel();
        self.close_live().await;
        if let Some(conn) = self.meta.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_counts_back_gtid_sequence_numbers_and_positions_round_trip() {
        let c = MySqlConnector::new({
            let mut c = MySqlConfig::new("mysql://u@h/", 9);
            c.tables = vec!["a.b".into()];
            c
        })
        .unwrap();
        let at = |n| StartPosition::After(Scn::new(n));
        assert_eq!(c.refill_start(Scn::new(106), None, 50), at(56));
        assert_eq!(c.refill_start(Scn::new(10), None, 50), at(1));
        assert_eq!(c.refill_start(Scn::new(10), None, 0), at(10));
        let p = MySqlPosition {
            gtid: "0-1-9".into(),
            file: "mariadb-bin.000002".into(),
            end_position: 812,
        };
        let opaque = p.to_position();
        assert_eq!(
            opaque.to_string(),
            "end_position 812 file mariadb-bin.000002 gtid 0-1-9"
        );
        assert_eq!(MySqlPosition::from_position(&opaque).unwrap(), p);
        let other = SourcePosition::new(serde_json::json!({ "lsn": "0/16B3748" }));
        assert!(MySqlPosition::from_position(&other).is_err());
    }

    #[test]
    fn gtid_lists_parse() {
        assert_eq!(gtid_domains("0-1-5,1-2-9"), vec![0, 1]);
        assert_eq!(gtid_domains(""), Vec::<u32>::new());
        assert_eq!(
            parse_gtid("0-1-42"),
            Some(Gtid {
                domain: 0,
                server: 1,
                seq: 42
            })
        );
        assert_eq!(parse_gtid("x"), None);
    }

    #[test]
    fn the_server_of_a_seq_is_found_in_the_binlog_state() {
        assert_eq!(
            MySqlConnector::server_for("0-1-100,0-2-250", 0, 50),
            Some(1)
        );
        assert_eq!(
            MySqlConnector::server_for("0-1-100,0-2-250", 0, 101),
            Some(2)
        );
        assert_eq!(
            MySqlConnector::server_for("0-1-100,0-2-250", 0, 900),
            Some(2)
        );
        assert_eq!(MySqlConnector::server_for("", 0, 9), None);
    }
}
