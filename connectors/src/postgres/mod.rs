//! The PostgreSQL source connector: [`PgConnector`], logical replication with the built-in `pgoutput`
//! plugin (protocol version 1).
//!
//! # Crates
//!
//! - Queries (checks, catalog reads, slot and publication setup) use `tokio-postgres`. Its released
//!   0.7 line has no replication mode (no `replication=database` connection, no CopyBoth), so it cannot
//!   carry the stream.
//! - The stream uses `pgwire-replication`: a maintained tokio client of the replication protocol
//!   (`START_REPLICATION … LOGICAL` with CopyBoth, SCRAM, keepalive replies, standby status updates
//!   with a caller-controlled applied position). It hands pgoutput payloads over as bytes;
//!   the private `pgoutput` module decodes them.
//!
//! # Positions
//!
//! The SCN of a transaction is its **commit LSN** (the WAL position of its commit record) as a `u64`.
//! LSNs only grow on one server and its timeline, so SCNs strictly increase in commit order.
//! `start(After(s))` runs `START_REPLICATION` at LSN `s` and drops every transaction whose commit LSN
//! is `<= s`, so it resumes exactly: no duplicate, no gap. [`SourcePosition`] carries the commit LSN in
//! PostgreSQL's text form (`gtid`, e.g. `0/16B3748`), the slot name (`file`) and the end LSN of the
//! commit record (`end_position`).
//!
//! # The slot's confirmed position
//!
//! The slot's `confirmed_flush_lsn` moves only through [`SourceConnector::acknowledge`]: the relay
//! calls it with the SCN it has durably recorded, and the connector reports that LSN as flushed in its
//! standby status updates. A stream (re)started reports the slot's current confirmed position, never the
//! start position. So a relay killed with `kill -9` finds every transaction after its persisted SCN
//! still in the slot. While idle, with every delivered transaction acknowledged, the connector also
//! confirms the position of the server's keepalives (nothing published lies before it unrecorded): the
//! slot keeps moving while only other tables change, and a fast shutdown of the server (whose
//! walsenders wait for their clients to confirm all they sent) finishes. A resume point before the
//! slot's confirmed position therefore continues at that position, except on a slot this start
//! created (first start, or after a failover: PostgreSQL 15 does not replicate slots), where it is
//! [`ConnectorError::Purged`]; a resume point past the server's WAL end is
//! [`ConnectorError::UnknownPosition`].
//!
//! # Time and heartbeats
//!
//! `commit_timestamp_ns` is the commit time pgoutput reports (microsecond precision). A
//! [`ConnectorEvent::Heartbeat`] is emitted every `heartbeat_interval` without a transaction in
//! progress; while idle the connector also checks that every captured table is still in the publication
//! (PostgreSQL does not decode `DROP TABLE`).
//!
//! # Row images
//!
//! Every captured table must have a primary key and `REPLICA IDENTITY FULL`: updates and deletes then
//! carry the whole old row (the before image of the contract), and an unchanged TOASTed value (sent as
//! "unchanged" in the new row) is filled from the old row, so it is never delivered as missing. A table
//! without them is refused at start with the `ALTER TABLE` to run. Protocol-v2 streaming of transactions
//! in progress is not requested: a transaction arrives whole at its commit and becomes one window
//! whatever its size (up to `max_transaction_rows`).
//!
//! # Table events
//!
//! `TRUNCATE` of captured tables becomes [`DdlKind::Truncate`] table changes of its transaction (the
//! changes to the table earlier in the same transaction are dropped: the truncate erased them). A new
//! Relation message whose columns differ from the announced schema becomes a new schema version: a
//! [`ConnectorEvent::SchemaChange`] before the first transaction using it (PostgreSQL does not decode
//! DDL statements, so there is no statement text). A Relation message giving a captured table's OID a
//! name that is not captured is a rename: [`ConnectorError::RenamedAway`].

mod config;
mod pgoutput;
mod snapshot;
mod types;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use databus_core::Scn;
use databus_serde_formats::model::{Column, Row, TableSchema, Value};
use futures::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

pub use config::PgConfig;
pub use snapshot::{PgSnapshot, PgSnapshotSource};

use crate::source::{
    ChangeKind, ConnectorEvent, DdlKind, RowChange, SourceConnector, SourcePosition,
    SourceTransaction, StartPosition, TableDdl, TableName,
};
use crate::{CheckOutcome, ConnectorError, SourceCheck};
use pgoutput::{Datum, Message};
use types::{Codec, TypeFacts};

/// How often, while idle, the connector checks that the captured tables are still published.
const CATALOG_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Session settings of the replication connection that fix the text format of values.
const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 \
                               -c extra_float_digits=3 -c bytea_output=hex";

/// A relation as the stream last described it.
#[derive(Debug)]
struct Relation {
    name: TableName,
    captured: bool,
    /// The columns of its last Relation message.
    columns: Vec<pgoutput::RelColumn>,
    /// For captured tables, once the catalog was read (at the table's first change after its Relation
    /// message): the schema and one codec per column.
    schema: Option<Arc<TableSchema>>,
    codecs: Vec<Codec>,
}

/// What the catalog says about one column, by name.
#[derive(Debug)]
struct CatalogColumn {
    not_null: bool,
    typtype: char,
    elem: Option<(u32, char)>,
    display: String,
    enum_labels: Vec<String>,
}

#[derive(Debug)]
struct OpenTxn {
    commit_lsn: u64,
    skip: bool,
    changes: Vec<RowChange>,
    table_changes: Vec<TableDdl>,
    /// Schemas used by this transaction's changes, in first-use order.
    used: Vec<(TableName, Arc<TableSchema>)>,
    /// The relation (OID) each captured table's changes in this transaction came from, in order.
    oids: Vec<(TableName, u32)>,
}

/// The PostgreSQL connector. See the [module docs](self).
pub struct PgConnector {
    config: PgConfig,
    tables: Vec<TableName>,
    token: CancellationToken,
    query: Option<Client>,
    stream: Option<ReplicationClient>,
    last_scn: Scn,
    /// Transactions with a commit LSN at or below this are dropped (resume point).
    skip_through: u64,
    /// The highest SCN acknowledged as durable.
    acked: Scn,
    /// The highest position confirmed while idle (see `idle_confirm`); at start, the slot's confirmed
    /// position.
    confirmed_idle: u64,
    /// The highest WAL position the server reported on this stream (keepalives, commit ends): the
    /// base of [`SourceConnector::source_lag_bytes`]. 0 until the stream reports one.
    server_wal_end: u64,
    /// The OIDs the captured tables had at start: a Relation message naming one of them differently
    /// is a rename.
    captured_oids: HashSet<u32>,
    /// When the publication is checked next (while idle).
    next_catalog_check: tokio::time::Instant,
    relations: HashMap<u32, Relation>,
    announced: HashMap<TableName, Arc<TableSchema>>,
    /// The relation (OID) the last delivered changes of each captured table came from. Kept across
    /// stream restarts (they resume right after the last delivered transaction): a later change of
    /// the table from another OID means it was dropped and created again in between (see
    /// [`PgConnector::note_relation`]).
    table_oids: HashMap<TableName, u32>,
    txn: Option<OpenTxn>,
    /// An event taken from the stream and not yet fully applied: applied first by the next call, so a
    /// dropped `next_event` future loses nothing.
    inflight: Option<ReplicationEvent>,
    pending: VecDeque<ConnectorEvent>,
    next_heartbeat: tokio::time::Instant,
    ended: bool,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("config", &self.config)
            .field("streaming", &self.stream.is_some())
            .field("last_scn", &self.last_scn)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ConnectorError {
    let what = what.into();
    move |source| ConnectorError::Postgres { what, source }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn lsn_text(v: u64) -> String {
    Lsn(v).to_pg_string()
}

/// The requirements `databus check-source` lists, in order; the last two are checked only when the
/// others pass.
const CHECKED: [&str; 7] = [
    "wal_level",
    "replication privilege",
    "tables",
    "primary key",
    "replica identity",
    "publication",
    "replication slot",
];

/// The requirement a problem of `prepare` breaks (its message's subject).
fn requirement_of(problem: &str) -> &'static str {
    if problem.starts_with("wal_level") {
        "wal_level"
    } else if problem.starts_with("role ") {
        "replication privilege"
    } else if problem.contains("REPLICA IDENTITY") {
        "replica identity"
    } else if problem.contains("has no primary key") {
        "primary key"
    } else if problem.starts_with("publication ") {
        "publication"
    } else if problem.starts_with("table ") {
        "tables"
    } else {
        "replication slot"
    }
}

/// One finding per requirement: each problem under its requirement, the rest `Ok`.
fn checks_of(problems: &[String]) -> Vec<SourceCheck> {
    let mut checks: Vec<SourceCheck> = problems
        .iter()
        .map(|p| SourceCheck {
            setting: requirement_of(p),
            outcome: CheckOutcome::Fix(p.clone()),
        })
        .collect();
    let first_pass = !checks.iter().any(|c| CHECKED[..5].contains(&c.setting));
    let listed = if first_pass {
        &CHECKED[..]
    } else {
        &CHECKED[..5]
    };
    for (i, setting) in listed.iter().enumerate() {
        if !checks.iter().any(|c| c.setting == *setting) {
            let at = checks
                .iter()
                .position(|c| CHECKED.iter().position(|s| *s == c.setting) > Some(i))
                .unwrap_or(checks.len());
            checks.insert(
                at,
                SourceCheck {
                    setting,
                    outcome: CheckOutcome::Ok,
                },
            );
        }
    }
    checks
}

impl PgConnector {
    /// A connector for `config` (validated here; nothing connects before [`SourceConnector::start`]).
    pub fn new(config: PgConfig) -> Result<Self, ConnectorError> {
        let tables = config.validate()?;
        Ok(Self {
            config,
            tables,
            token: CancellationToken::new(),
            query: None,
            stream: None,
            last_scn: Scn::ZERO,
            skip_through: 0,
            acked: Scn::ZERO,
            confirmed_idle: 0,
            server_wal_end: 0,
            captured_oids: HashSet::new(),
            next_catalog_check: tokio::time::Instant::now(),
            relations: HashMap::new(),
            announced: HashMap::new(),
            table_oids: HashMap::new(),
            txn: None,
            inflight: None,
            pending: VecDeque::new(),
            next_heartbeat: tokio::time::Instant::now(),
            ended: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Checks every setting capture needs, without starting and without creating anything: for
    /// `databus check-source`. An empty list: ready. Each problem names its fix.
    pub async fn check_source(config: &PgConfig) -> Result<Vec<String>, ConnectorError> {
        let connector = Self::new(config.clone())?;
        let client = connector.connect_query().await?;
        let checked = connector
            .bounded("checking the source", connector.prepare(&client, false))
            .await;
        match checked {
            Ok(_) => Ok(Vec::new()),
            Err(ConnectorError::Misconfigured { problems }) => Ok(problems),
            Err(e) => Err(e),
        }
    }

    /// [`PgConnector::check_source`] as one finding per requirement (`databus check-source`): each
    /// problem under the requirement it breaks (its text names the fix, e.g. the `ALTER TABLE …
    /// REPLICA IDENTITY FULL` to run), the others `Ok`. The publication and the slot are checked only
    /// once the server, role and tables pass (as at start), so they are listed only then.
    pub async fn source_checks(config: &PgConfig) -> Result<Vec<SourceCheck>, ConnectorError> {
        let problems = Self::check_source(config).await?;
        Ok(checks_of(&problems))
    }

    /// The slot's lag: bytes of WAL the server keeps for it (`pg_current_wal_lsn()` minus the slot's
    /// confirmed position), for the relay's metrics. `None` when the slot does not exist.
    pub async fn slot_lag_bytes(&self) -> Result<Option<u64>, ConnectorError> {
        let client = self.query.as_ref().ok_or(ConnectorError::NotStarted)?;
        let row = self
            .bounded("reading the slot lag", async {
                client
                    .query_opt(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 \
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&self.config.slot],
                    )
                    .await
                    .map_err(pg("reading the slot lag"))
            })
            .await?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(|v| v.max(0) as u64))
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        tokio::time::timeout(self.config.read_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectorError::Timeout {
                    what: what.to_owned(),
                    after: self.config.read_timeout,
                })
            })
    }

    async fn connect_query(&self) -> Result<Client, ConnectorError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.config.host)
            .port(self.config.port)
            .user(&self.config.user)
            .password(self.config.password_text())
            .dbname(&self.config.database)
            .application_name("databus-connector")
            .options(SESSION_OPTIONS)
            .connect_timeout(self.config.read_timeout);
        let (client, conn) = self
            .bounded("connecting to postgresql", async {
                c.connect(NoTls).await.map_err(pg("connecting"))
            })
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "postgresql query connection ended");
            }
        });
        Ok(client)
    }

    /// Server settings, privileges, tables (primary key, replica identity), publication and slot. Returns
    /// the slot's confirmed flush LSN, whether the slot was created now, and the captured tables' OIDs.
    /// With `create` false nothing is created (a missing publication or slot is not a problem then: the
    /// connector creates them at start).
    async fn prepare(
        &self,
        client: &Client,
        create: bool,
    ) -> Result<(u64, bool, HashSet<u32>), ConnectorError> {
        let mut problems = Vec::new();
        let mut oids = HashSet::new();
        let wal_level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(pg("reading wal_level"))?
            .get(0);
        if wal_level != "logical" {
            problems.push(format!(
                "wal_level is {wal_level}; set wal_level = logical in postgresql.conf and restart the server"
            ));
        }
        let role = client
            .query_one(
                "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(pg("reading the role's attributes"))?;
        if !role.get::<_, bool>(0) {
            problems.push(format!(
                "role {} may not replicate; run ALTER ROLE {} REPLICATION",
                self.config.user,
                quote_ident(&self.config.user)
            ));
        }
        for t in &self.tables {
            let qualified = format!("{}.{}", quote_ident(&t.database), quote_ident(&t.table));
            let row = client
                .query_opt(
                    "SELECT c.relreplident::text, \
                            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                            c.oid::int8, c.relkind::text \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                    &[&t.database, &t.table],
                )
                .await
                .map_err(pg(format!("reading table {t}")))?;
            let Some(row) = row else {
                problems.push(format!(
                    "table {t} does not exist in database {}",
                    self.config.database
                ));
                continue;
            };
            let identity: String = row.get(0);
            let has_pk: bool = row.get(1);
            oids.insert(row.get::<_, i64>(2) as u32);
            if row.get::<_, String>(3) == "p" {
                problems.push(format!(
                    "table {t} is partitioned: its changes are published under each partition's name, \
                     which this connector does not map back yet; capture its partitions (each with a \
                     primary key and REPLICA IDENTITY FULL) instead"
                ));
                continue;
            }
            if !has_pk {
                problems.push(format!(
                    "table {t} has no primary key; add one (ALTER TABLE {qualified} ADD PRIMARY KEY (…)): \
                     changes are delivered by key"
                ));
            }
            if identity != "f" {
                problems.push(format!(
                    "table {t} has REPLICA IDENTITY {}; run ALTER TABLE {qualified} REPLICA IDENTITY FULL \
                     (updates and deletes must carry the whole old row: before images, and unchanged \
                     TOASTed values are filled from it)",
                    match identity.as_str() {
                        "d" => "DEFAULT",
                        "n" => "NOTHING",
                        "i" => "USING INDEX",
                        _ => "?",
                    }
                ));
            }
        }
        if !problems.is_empty() {
            return Err(ConnectorError::Misconfigured { problems });
        }
        // The publication: created when missing; an existing one must cover every captured table.
        let publication = &self.config.publication;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await
            .map_err(pg("reading publications"))?
            .is_some();
        if !exists && create {
            let list: Vec<String> = self
                .tables
                .iter()
                .map(|t| format!("{}.{}", quote_ident(&t.database), quote_ident(&t.table)))
                .collect();
            client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(publication),
                    list.join(", ")
                ))
                .await
                .map_err(pg(format!("creating publication {publication}")))?;
        } else if exists {
            let ops = client
                .query_one(
                    "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM pg_publication WHERE pubname = $1",
                    &[publication],
                )
                .await
                .map_err(pg("reading the publication"))?;
            if !ops.get::<_, bool>(0) {
                problems.push(format!(
                    "publication {publication} does not publish every kind of change (changes it leaves out \
                     would be lost); run ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')",
                    quote_ident(publication)
                ));
            }
            for t in &self.tables {
                let covered = client
                    .query_opt(
                        "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3 \
                         AND rowfilter IS NULL",
                        &[publication, &t.database, &t.table],
                    )
                    .await
                    .map_err(pg("reading the publication's tables"))?
                    .is_some();
                if !covered {
                    problems.push(format!(
                        "publication {publication} does not include {t}, or only with a row filter (WHERE); run \
                         ALTER PUBLICATION {} SET TABLE … or ADD TABLE {}.{} without a WHERE clause",
                        quote_ident(publication),
                        quote_ident(&t.database),
                        quote_ident(&t.table)
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(ConnectorError::Misconfigured { problems });
            }
        }
        // The slot: created when missing.
        let slot = &self.config.slot;
        let mut row = client
            .query_opt(
                "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await
            .map_err(pg("reading replication slots"))?;
        let created = row.is_none();
        if created && !create {
            return Ok((0, false, oids));
        }
        if created {
            client
                .query_one(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[slot],
                )
                .await
                .map_err(pg(format!("creating replication slot {slot}")))?;
            row = client
                .query_opt(
                    "SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                    &[slot],
                )
                .await
                .map_err(pg("reading replication slots"))?;
        }
        let row = row.ok_or_else(|| ConnectorError::Misconfigured {
            problems: vec![format!(
                "replication slot {slot} vanished after its creation"
            )],
        })?;
        let plugin: Option<String> = row.get(0);
        let database: Option<String> = row.get(1);
        if plugin.as_deref() != Some("pgoutput")
            || database.as_deref() != Some(&self.config.database)
        {
            return Err(ConnectorError::Misconfigured {
                problems: vec![format!(
                    "replication slot {slot} is not a pgoutput slot of database {} (plugin {plugin:?}, database {database:?}); \
                     name another slot, or drop it with SELECT pg_drop_replication_slot('{slot}')",
                    self.config.database
                )],
            })?;
        }
        let confirmed: Option<String> = row.get(2);
        confirmed
            .as_deref()
            .map(|s| Lsn::parse(s).map(|l| l.as_u64()))
            .transpose()
            .map_err(|e| ConnectorError::Misconfigured {
                problems: vec![format!(
                    "slot {slot} has an unreadable confirmed_flush_lsn: {}",
                    e.0
                )],
            })
            .map(|v| (v.unwrap_or(0), created, oids))
    }

    /// Every captured table must still be in the publication: PostgreSQL does not decode DROP TABLE
    /// (a dropped table leaves the publication, and a re-created one is not in a `FOR TABLE`
    /// publication), so its absence is the only trace. A definite error instead of silent loss.
    async fn check_publication(&self) -> Result<(), ConnectorError> {
        let client = self.query.as_ref().ok_or(ConnectorError::NotStarted)?;
        let rows = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[&self.config.publication],
            )
            .await
            .map_err(pg("reading the publication's tables"))?;
        let published: HashSet<TableName> = rows
            .iter()
            .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let problems: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !published.contains(t))
            .map(|t| {
                format!(
                    "captured table {t} left publication {} (dropped, or dropped and re-created: \
                     PostgreSQL does not stream DROP TABLE); its consumers must bootstrap; re-add it with \
                     ALTER PUBLICATION {} ADD TABLE {}.{}, or stop capturing it, and restart",
                    self.config.publication,
                    quote_ident(&self.config.publication),
                    quote_ident(&t.database),
                    quote_ident(&t.table)
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::Misconfigured { problems })
        }
    }

    async fn start_inner(&mut self, from: StartPosition) -> Result<(), ConnectorError> {
        self.close().await;
        self.token = if self.token.is_cancelled() {
            CancellationToken::new()
        } else {
            self.token.clone()
        };
        self.ended = false;
        self.txn = None;
        self.inflight = None;
        self.pending.clear();
        self.relations.clear();
        self.announced.clear();
        let client = self.connect_query().await?;
        let (confirmed, created, oids) = self
            .bounded("checking the source", self.prepare(&client, true))
            .await?;
        let current: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(pg("reading the current WAL position"))?
            .get(0);
        let now = matches!(from, StartPosition::Now);
        let current = Lsn::parse(&current)
            .map_err(|e| ConnectorError::Config(format!("bad lsn {current}: {}", e.0)))?
            .as_u64();
        let after = match from {
            StartPosition::After(s) => s.get(),
            StartPosition::AfterPosition(p) => p
                .value()
                .get("lsn")
                .and_then(|v| v.as_str())
                .and_then(|t| Lsn::parse(t).ok())
                .ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "position {p} is not a PostgreSQL position (an object whose lsn is like 0/16B3748)"
                    ))
                })?
                .as_u64(),
            StartPosition::Now => {
                let row = client
                    .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                    .await
                    .map_err(pg("reading the current WAL position"))?;
                let text: String = row.get(0);
                let lsn = Lsn::parse(&text)
                    .map_err(|e| ConnectorError::Config(format!("bad lsn {text}: {}", e.0)))?
                    .as_u64();
                // A commit after this moment writes its record at or after `lsn`.
                lsn.saturating_sub(1).max(confirmed)
            }
        };
        if !now && after > current {
            return Err(ConnectorError::UnknownPosition {
                requested: format!("scn {after} (lsn {})", lsn_text(after)),
                detail: format!(
                    "the server's WAL ends at {}: this is not the server the position came from (a \
                     failover to a standby that had not replayed it?); consumers must bootstrap, and the \
                     relay must start afresh on this server",
                    lsn_text(current)
                ),
            });
        }
        if created && after != 0 && after < confirmed {
            // A new slot holds nothing before its creation (first start with an old position, or a
            // failover: PostgreSQL 15 does not replicate slots to standbys).
            return Err(ConnectorError::Purged {
                requested: format!("scn {after} (lsn {})", lsn_text(after)),
                oldest: format!(
                    "scn {confirmed} (lsn {}, where slot {} was created just now)",
                    lsn_text(confirmed),
                    self.config.slot
                ),
                resume_after: Some(Scn::new(confirmed)),
            });
        }
        if after != 0 && after < confirmed {
            // The slot moved past `after` through an idle confirmation (see `idle_confirm`): nothing
            // published committed between the last acknowledged transaction and that position, so
            // resuming at the slot's position loses nothing. The slot cannot tell this apart from a
            // resume point older than what this slot's reader acknowledged (a relay state restored from
            // an old copy, or a slot shared by two relays): documented as unsupported.
            tracing::info!(
                slot = %self.config.slot,
                requested = %lsn_text(after),
                confirmed = %lsn_text(confirmed),
                "resuming before the slot's confirmed position: the stream continues at the slot's position"
            );
        }
        let mut rc = ReplicationConfig::new(
            self.config.host.clone(),
            self.config.user.clone(),
            self.config.password_text().to_owned(),
            self.config.database.clone(),
            self.config.slot.clone(),
            self.config.publication.as_str(),
        )
        .with_port(self.config.port)
        .with_start_lsn(Lsn(after))
        .with_status_interval(self.config.status_interval)
        .with_wakeup_interval(self.config.status_interval)
        .with_options(SESSION_OPTIONS)
        .with_application_name("databus-connector");
        // Report what the relay acknowledged, never the start position.
        rc.ack_lsn = Some(Lsn(confirmed.max(self.acked.get())));
        self.confirmed_idle = confirmed;
        self.server_wal_end = 0;
        let stream = self
            .bounded("starting replication", async {
                ReplicationClient::connect(rc)
                    .await
                    .map_err(|source| ConnectorError::Replication {
                        what: format!("START_REPLICATION on slot {}", self.config.slot),
                        source,
                    })
            })
            .await?;
        self.query = Some(client);
        self.stream = Some(stream);
        self.captured_oids = oids;
        self.next_catalog_check = tokio::time::Instant::now() + CATALOG_CHECK_INTERVAL;
        self.skip_through = after;
        self.last_scn = Scn::new(after);
        self.next_heartbeat = tokio::time::Instant::now() + self.config.heartbeat_interval;
        tracing::info!(slot = %self.config.slot, after = %lsn_text(after), "postgresql stream started");
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(mut s) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
            s.abort();
        }
        self.query = None;
    }

    /// Reads the catalog facts of a captured relation and builds its schema.
    async fn describe(
        &self,
        oid: u32,
        name: &TableName,
        columns: &[pgoutput::RelColumn],
    ) -> Result<(Arc<TableSchema>, Vec<Codec>), ConnectorError> {
        let client = self.query.as_ref().ok_or(ConnectorError::NotStarted)?;
        describe_relation(client, oid, name, columns).await
    }
    fn row(rel: &Relation, tuple: &[Datum], fill: Option<&Row>) -> Result<Row, ConnectorError> {
        let schema = rel.schema.as_ref().ok_or(ConnectorError::NotStarted)?;
        if tuple.len() != rel.codecs.len() {
            return Err(ConnectorError::StaleSchema {
                table: rel.name.to_string(),
                reason: format!(
                    "a row has {} values for {} columns",
                    tuple.len(),
                    rel.codecs.len()
                ),
            });
        }
        tuple
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Datum::Null => Ok(Value::Null),
                Datum::Text(t) => types::decode(&rel.codecs[i], t).map_err(|reason| {
                    if let Codec::Enum(_) = rel.codecs[i] {
                        ConnectorError::StaleSchema {
                            table: rel.name.to_string(),
                            reason: format!("column {}: {reason}", schema.columns[i].name),
                        }
                    } else {
                        ConnectorError::Decode {
                            table: rel.name.to_string(),
                            column: schema.columns[i].name.clone(),
                            reason,
                        }
                    }
                }),
                Datum::Unchanged => fill.and_then(|old| old.get(i).cloned()).ok_or_else(|| {
                    ConnectorError::Decode {
                        table: rel.name.to_string(),
                        column: schema.columns[i].name.clone(),
                        reason: format!(
                            "an unchanged TOASTed value arrived without the old row to take it from; run \
                             ALTER TABLE {}.{} REPLICA IDENTITY FULL",
                            quote_ident(&rel.name.database),
                            quote_ident(&rel.name.table)
                        ),
                    }
                }),
            })
            .collect()
    }

    fn full_identity_error(rel: &Relation) -> ConnectorError {
        ConnectorError::Misconfigured {
            problems: vec![format!(
                "table {} no longer has REPLICA IDENTITY FULL (a change arrived without the whole old row); \
                 run ALTER TABLE {}.{} REPLICA IDENTITY FULL and resume from before this change",
                rel.name,
                quote_ident(&rel.name.database),
                quote_ident(&rel.name.table)
            )],
        }
    }

    async fn handle_xlog(&mut self, data: &[u8]) -> Result<(), ConnectorError> {
        let msg = pgoutput::parse(data).map_err(|reason| ConnectorError::UndecodableEvent {
            event: format!("pgoutput {:?}", data.first().map(|&b| b as char)),
            position: self
                .txn
                .as_ref()
                .map(|t| lsn_text(t.commit_lsn))
                .unwrap_or_default(),
            reason,
        })?;
        match msg {
            Message::Relation {
                oid,
                namespace,
                name,
                columns,
                ..
            } => {
                let name = TableName::new(namespace, name);
                let captured = self.tables.contains(&name);
                if !captured && self.captured_oids.contains(&oid) {
                    let from = self
                        .relations
                        .get(&oid)
                        .map(|r| r.name.to_string())
                        .unwrap_or_else(|| format!("the captured table with oid {oid}"));
                    return Err(ConnectorError::RenamedAway {
                        from,
                        to: name.to_string(),
                        gtid: self
                            .txn
                            .as_ref()
                            .map(|t| lsn_text(t.commit_lsn))
                            .unwrap_or_default(),
                        statement: "ALTER TABLE … RENAME (seen in a pgoutput Relation message)"
                            .into(),
                    });
                }
                self.relations.insert(
                    oid,
                    Relation {
                        name,
                        captured,
                        columns,
                        schema: None,
                        codecs: Vec::new(),
                    },
                );
            }
            Message::Insert { oid, new } => {
                if let Some(rel) = self.captured(oid).await? {
                    let after = Self::row(rel, &new, None)?;
                    self.push_change(oid, ChangeKind::Insert, None, Some(after))?;
                }
            }
            Message::Update { oid, old, new } => {
                if let Some(rel) = self.captured(oid).await? {
                    let before = match old {
                        Some((b'O', old)) => Self::row(rel, &old, None)?,
                        _ => return Err(Self::full_identity_error(rel)),
                    };
                    let after = Self::row(rel, &new, Some(&before))?;
                    self.push_change(oid, ChangeKind::Update, Some(before), Some(after))?;
                }
            }
            Message::Delete { oid, kind, old } => {
                if let Some(rel) = self.captured(oid).await? {
                    if kind != b'O' {
                        return Err(Self::full_identity_error(rel));
                    }
                    let before = Self::row(rel, &old, None)?;
                    self.push_change(oid, ChangeKind::Delete, Some(before), None)?;
                }
            }
            Message::Truncate { options, oids } => {
                for oid in oids {
                    let Some(rel) = self.captured(oid).await? else {
                        continue;
                    };
                    let name = rel.name.clone();
                    self.note_relation(oid, &name);
                    let mut statement = format!(
                        "TRUNCATE {}.{}",
                        quote_ident(&name.database),
                        quote_ident(&name.table)
                    );
                    if options & 2 != 0 {
                        statement.push_str(" RESTART IDENTITY");
                    }
                    if options & 1 != 0 {
                        statement.push_str(" CASCADE");
                    }
                    if let Some(txn) = self.txn.as_mut() {
                        // The truncate erased this transaction's earlier changes to the table; table
                        // changes come before row changes in a window.
                        txn.changes.retain(|c| {
                            !(c.table.database == name.database && c.table.table == name.table)
                        });
                        txn.table_changes.push(TableDdl {
                            table: name,
                            kind: DdlKind::Truncate,
                            statement,
                        });
                    }
                }
            }
            Message::Other(_) => {}
        }
        Ok(())
    }

    /// The relation if it is captured and the open transaction is not skipped; reads its schema from
    /// the catalog on its first change after a Relation message (only this await changes no state
    /// before it completes, so an interrupted call is simply repeated).
    async fn captured(&mut self, oid: u32) -> Result<Option<&Relation>, ConnectorError> {
        if self.txn.as_ref().is_none_or(|t| t.skip) {
            return Ok(None);
        }
        let undescribed = match self.relations.get(&oid) {
            Some(rel) if rel.captured && rel.schema.is_none() => {
                Some((rel.name.clone(), rel.columns.clone()))
            }
            _ => None,
        };
        if let Some((name, columns)) = undescribed {
            let (schema, codecs) = self
                .bounded(
                    "reading a table's catalog",
                    self.describe(oid, &name, &columns),
                )
                .await?;
            if let Some(rel) = self.relations.get_mut(&oid) {
                rel.schema = Some(schema);
                rel.codecs = codecs;
            }
        }
        let rel = self
            .relations
            .get(&oid)
            .ok_or_else(|| ConnectorError::UndecodableEvent {
                event: "pgoutput change".into(),
                position: self
                    .txn
                    .as_ref()
                    .map(|t| lsn_text(t.commit_lsn))
                    .unwrap_or_default(),
                reason: format!("relation {oid} was not described before its change"),
            })?;
        Ok(rel.captured.then_some(rel))
    }

    fn push_change(
        &mut self,
        oid: u32,
        kind: ChangeKind,
        before: Option<Row>,
        after: Option<Row>,
    ) -> Result<(), ConnectorError> {
        let rel = &self.relations[&oid];
        let schema = Arc::clone(rel.schema.as_ref().ok_or(ConnectorError::NotStarted)?);
        let name = rel.name.clone();
        self.note_relation(oid, &name);
        let limit = self.config.max_transaction_rows;
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        if txn.changes.len() as u64 >= limit {
            return Err(ConnectorError::TransactionTooLarge {
                gtid: lsn_text(txn.commit_lsn),
                limit: format!("{limit} rows"),
                setting: "max_transaction_rows",
            });
        }
        if !txn
            .used
            .iter()
            .any(|(t, s)| *t == name && Arc::ptr_eq(s, &schema))
        {
            txn.used.push((name, Arc::clone(&schema)));
        }
        txn.changes.push(RowChange {
            table: schema,
            kind,
            before,
            after,
        });
        Ok(())
    }

    /// Notes that the open transaction changes captured table `name` through relation `oid`.
    /// PostgreSQL does not decode `DROP TABLE`; a table dropped and created again under its name (and
    /// published again) shows only as a new OID. So when the table's changes so far (delivered, or
    /// earlier in this transaction) came from another OID, a `Drop` table change comes first (the
    /// relay's truncate event with cause `drop`: consumers remove the old table's rows) and erases
    /// this transaction's earlier changes to it. Not seen: a drop between the last change a relay
    /// process delivered before it restarted and the first after (the OID of the last delivered
    /// changes is not persisted); nor one whose table gets no change afterwards.
    fn note_relation(&mut self, oid: u32, name: &TableName) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let prev = txn
            .oids
            .iter()
            .rev()
            .find(|(t, _)| t == name)
            .map(|(_, o)| *o)
            .or_else(|| self.table_oids.get(name).copied());
        if prev == Some(oid) {
            return;
        }
        if prev.is_some() {
            txn.changes
                .retain(|c| !(c.table.database == name.database && c.table.table == name.table));
            txn.table_changes.push(TableDdl {
                table: name.clone(),
                kind: DdlKind::Drop,
                statement: format!(
                    "DROP TABLE {}.{} (seen as a new relation of that name, OID {oid}, in a pgoutput Relation message)",
                    quote_ident(&name.database),
                    quote_ident(&name.table)
                ),
            });
        }
        txn.oids.push((name.clone(), oid));
    }

    fn commit(
        &mut self,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_micros: i64,
    ) -> Result<(), ConnectorError> {
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        if txn.skip || commit_lsn <= self.skip_through {
            return Ok(());
        }
        if commit_lsn <= self.last_scn.get() {
            return Err(ConnectorError::ScnRegression {
                previous: self.last_scn.get(),
                next: commit_lsn,
                gtid: lsn_text(commit_lsn),
            });
        }
        let scn = Scn::new(commit_lsn);
        for (table, oid) in txn.oids {
            self.table_oids.insert(table, oid);
        }
        for (table, schema) in txn.used {
            if self.announced.get(&table) != Some(&schema) {
                self.announced.insert(table.clone(), Arc::clone(&schema));
                self.pending
                    .push_back(ConnectorEvent::SchemaChange { scn, table, schema });
            }
        }
        let micros = commit_time_micros.saturating_add(PG_EPOCH_MICROS).max(0) as u64;
        self.pending
            .push_back(ConnectorEvent::Transaction(SourceTransaction {
                scn,
                commit_timestamp_ns: micros.saturating_mul(1000),
                // The position's shape: `{"lsn": "<commit LSN>", "end_lsn": <u64>, "slot": "<slot>"}`.
                position: SourcePosition::new(serde_json::json!({
                    "lsn": lsn_text(commit_lsn),
                    "end_lsn": end_lsn,
                    "slot": self.config.slot,
                })),
                changes: txn.changes,
                table_changes: txn.table_changes,
            }));
        self.last_scn = scn;
        Ok(())
    }

    /// A keepalive says the server has decoded (and sent) everything up to `wal_end`. When no
    /// transaction is open and every transaction delivered has been acknowledged as durable, no
    /// published transaction committed before `wal_end` is left unrecorded, so the slot may confirm
    /// `wal_end`. This keeps the slot moving while only unpublished tables change (the server can
    /// recycle their WAL), and lets a fast shutdown of the server finish: a walsender waits for its
    /// client to confirm everything it sent.
    fn idle_confirm(&mut self, wal_end: u64) {
        let idle = self.txn.is_none() && self.pending.is_empty();
        let all_durable = self.acked >= self.last_scn && self.acked > Scn::ZERO;
        if idle && all_durable && wal_end > self.confirmed_idle.max(self.acked.get()) {
            self.confirmed_idle = wal_end;
            if let Some(s) = &self.stream {
                s.update_applied_lsn(Lsn(wal_end));
            }
        }
    }

    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), ConnectorError> {
        match event {
            ReplicationEvent::Begin { final_lsn, .. } => {
                let lsn = final_lsn.as_u64();
                self.txn = Some(OpenTxn {
                    commit_lsn: lsn,
                    skip: lsn <= self.skip_through,
                    changes: Vec::new(),
                    table_changes: Vec::new(),
                    used: Vec::new(),
                    oids: Vec::new(),
                });
            }
            ReplicationEvent::XLogData { data, .. } => self.handle_xlog(&data).await?,
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => {
                self.server_wal_end = self.server_wal_end.max(end_lsn.as_u64());
                self.commit(lsn.as_u64(), end_lsn.as_u64(), commit_time_micros)?
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.server_wal_end = self.server_wal_end.max(wal_end.as_u64());
                self.idle_confirm(wal_end.as_u64())
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }
}

impl SourceConnector for PgConnector {
    async fn start(&mut self, from: StartPosition) -> Result<(), ConnectorError> {
        let r = self.start_inner(from).await;
        if r.is_err() {
            self.close().await;
        }
        r
    }

    fn last_scn(&self) -> Scn {
        self.last_scn
    }

    async fn next_event(&mut self) -> Result<Option<ConnectorEvent>, ConnectorError> {
        loop {
            if self.ended || self.token.is_cancelled() {
                self.ended = true;
                return Ok(None);
            }
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            if let Some(event) = self.inflight.clone() {
                let in_txn = self.txn.is_some();
                if let Err(e) = self.handle(event).await {
                    // The stream is mid-transaction: it cannot go on without skipping the rest of it.
                    // A new start() resumes after the last transaction delivered.
                    self.inflight = None;
                    self.txn = None;
                    if let Some(mut stream) = self.stream.take() {
                        stream.abort();
                    }
                    return Err(e);
                }
                self.inflight = None;
                if in_txn && self.txn.is_none() {
                    self.next_heartbeat =
                        tokio::time::Instant::now() + self.config.heartbeat_interval;
                }
                continue;
            }
            let deadline = self.next_heartbeat;
            let stream = self.stream.as_mut().ok_or(ConnectorError::NotStarted)?;
            // A message already received is taken without arming a timer (the stream's channel is
            // cancel-safe); only an empty channel waits with the heartbeat deadline and the token.
            let got = match stream.recv().now_or_never() {
                Some(r) => Some(r),
                None => {
                    let token = self.token.clone();
                    tokio::select! {
                        _ = token.cancelled() => {
                            self.ended = true;
                            return Ok(None);
                        }
                        _ = tokio::time::sleep_until(deadline) => None,
                        r = stream.recv() => Some(r),
                    }
                }
            };
            match got {
                None => {
                    self.next_heartbeat =
                        tokio::time::Instant::now() + self.config.heartbeat_interval;
                    if self.txn.is_none() {
                        if tokio::time::Instant::now() >= self.next_catalog_check {
                            self.next_catalog_check =
                                tokio::time::Instant::now() + CATALOG_CHECK_INTERVAL;
                            self.bounded("checking the publication", self.check_publication())
                                .await?;
                        }
                        return Ok(Some(ConnectorEvent::Heartbeat {
                            last_scn: self.last_scn,
                            timestamp_ns: now_ns(),
                        }));
                    }
                }
                Some(Ok(Some(event))) => self.inflight = Some(event),
                Some(Ok(None)) => {
                    self.stream = None;
                    return Err(ConnectorError::StreamClosed);
                }
                Some(Err(source)) => {
                    self.stream = None;
                    return Err(ConnectorError::Replication {
                        what: "reading the stream".into(),
                        source,
                    });
                }
            }
        }
    }

    fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    async fn shutdown(&mut self) -> Result<(), ConnectorError> {
        self.token.cancel();
        self.close().await;
        Ok(())
    }

    fn acknowledge(&mut self, durable: Scn) {
        if durable > self.acked {
            self.acked = durable;
            if let Some(s) = &self.stream {
                // Monotonic in the client: a lower value than an idle confirmation is ignored.
                s.update_applied_lsn(Lsn(durable.get()));
            }
        }
    }

    /// The server's WAL position last reported on the stream (keepalives, commits) minus the position
    /// the connector confirms for the slot (what the relay acknowledged, or an idle confirmation):
    /// about the WAL the server keeps for this slot, without a query. `None` while no stream runs or
    /// before the server reported a position. It lags the server's own `pg_current_wal_lsn()` by what
    /// the walsender has not sent yet (during a catch-up); [`PgConnector::slot_lag_bytes`] queries it.
    fn source_lag_bytes(&self) -> Option<u64> {
        if self.stream.is_none() || self.server_wal_end == 0 {
            return None;
        }
        let confirmed = self.confirmed_idle.max(self.acked.get());
        Some(self.server_wal_end.saturating_sub(confirmed))
    }
}

/// Reads the catalog facts of relation `oid` (through `client`, so in its transaction's snapshot) and
/// builds its schema from `columns` (a Relation message's, or the same read from the catalog by the
/// snapshot): the one place the stream and the snapshot get a table's schema and codecs from.
async fn describe_relation(
    client: &Client,
    oid: u32,
    name: &TableName,
    columns: &[pgoutput::RelColumn],
) -> Result<(Arc<TableSchema>, Vec<Codec>), ConnectorError> {
    let mut facts = catalog_columns(client, &oid.to_string(), name).await?;
    let mut key_of = oid.to_string();
    // The catalog is today's, the Relation message is of its WAL position: a relation dropped since
    // (DROP TABLE, or DROP + CREATE under the same name, read by a relay behind the source) has no
    // catalog rows under its OID any more, and a column dropped since is gone from them. Re-reading
    // the catalog never brings them back, so they are not a stale-schema retry (that looped forever
    // on the dropped table's rows or TRUNCATE): a dropped relation takes its nullability and key from
    // the table that has its name now, if any; a dropped column its type facts from the message's
    // type OID, and it is nullable.
    let by_oid = !facts.is_empty();
    if !by_oid {
        let qualified = format!(
            "{}.{}",
            quote_ident(&name.database),
            quote_ident(&name.table)
        );
        key_of = format!("to_regclass('{}')", qualified.replace('\'', "''"));
        facts = catalog_columns(client, &key_of, name).await?;
    }
    for c in columns {
        let known = facts.get(&c.name);
        if by_oid && known.is_some() {
            continue;
        }
        let not_null = known.is_some_and(|f| f.not_null);
        let mut f = type_facts(client, c, name).await?;
        f.not_null = not_null;
        facts.insert(c.name.clone(), f);
    }
    let pk_rows = client
        .query(
            &format!(
                "SELECT a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = {key_of} AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)"
            ),
            &[],
        )
        .await
        .map_err(pg(format!("reading the primary key of {name}")))?;
    let bad = |column: &str, reason: String| ConnectorError::Decode {
        table: name.to_string(),
        column: column.to_owned(),
        reason,
    };
    let mut out_columns = Vec::with_capacity(columns.len());
    let mut codecs = Vec::with_capacity(columns.len());
    for c in columns {
        let Some(f) = facts.remove(&c.name) else {
            return Err(bad(
                &c.name,
                "the column appears twice in the Relation message".into(),
            ));
        };
        let tf = TypeFacts {
            oid: c.type_oid,
            typmod: c.typmod,
            typtype: f.typtype,
            elem: f.elem,
            display: f.display,
            enum_labels: f.enum_labels,
        };
        let (column_type, codec) = types::column_type(&tf).map_err(|r| bad(&c.name, r))?;
        out_columns.push(Column::new(c.name.clone(), column_type, !f.not_null));
        codecs.push(codec);
    }
    let mut primary_key = Vec::new();
    for r in pk_rows {
        let col: String = r.get(0);
        let i = columns.iter().position(|c| c.name == col).ok_or_else(|| {
            bad(
                &col,
                "the primary-key column is not published (a column list that leaves out the key)"
                    .into(),
            )
        })?;
        primary_key.push(i);
    }
    if primary_key.is_empty() && !by_oid {
        return Err(ConnectorError::Misconfigured {
            problems: vec![format!(
                "table {name} was dropped before the relay read its changes, and no table of that \
                 name with a primary key exists now; re-create it (and add it to the publication), \
                 or stop capturing it; consumers that need its rows bootstrap"
            )],
        });
    }
    if primary_key.is_empty() {
        return Err(ConnectorError::Misconfigured {
            problems: vec![format!("table {name} has no primary key; add one")],
        });
    }
    Ok((
        Arc::new(TableSchema {
            database: name.database.clone(),
            table: name.table.clone(),
            columns: out_columns,
            primary_key,
        }),
        codecs,
    ))
}

/// The columns of relation `rel` (an OID, or a `to_regclass(…)` expression) by name: nullability and
/// type facts. Empty when the relation does not exist (any more).
async fn catalog_columns(
    client: &Client,
    rel: &str,
    name: &TableName,
) -> Result<HashMap<String, CatalogColumn>, ConnectorError> {
    let rows = client
        .query(
            &format!(
                "SELECT a.attname::text, a.attnotnull, t.typtype::text, \
                        COALESCE(e.oid::int8, 0), COALESCE(e.typtype::text, ''), \
                        format_type(a.atttypid, a.atttypmod), {ENUM_LABELS} \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
                 WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            &[],
        )
        .await
        .map_err(pg(format!("reading the columns of {name}")))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), catalog_column(r.get(1), r, 2)))
        .collect())
}

/// The enum labels of `t` (or of `e`, its element type, for an array), as a text array.
const ENUM_LABELS: &str = "COALESCE((SELECT array_agg(l.enumlabel::text ORDER BY l.enumsortorder) \
     FROM pg_enum l WHERE l.enumtypid = CASE WHEN e.oid IS NULL THEN t.oid ELSE e.oid END), '{}')";

/// A column's facts from row `r`: typtype, element OID and typtype, display type and enum labels
/// from column `at` on.
fn catalog_column(not_null: bool, r: &tokio_postgres::Row, at: usize) -> CatalogColumn {
    let typtype: String = r.get(at);
    let elem: i64 = r.get(at + 1);
    let elem_typtype: String = r.get(at + 2);
    CatalogColumn {
        not_null,
        typtype: typtype.chars().next().unwrap_or('b'),
        elem: (elem != 0).then(|| (elem as u32, elem_typtype.chars().next().unwrap_or('b'))),
        display: r.get(at + 3),
        enum_labels: r.get(at + 4),
    }
}

/// The type facts of a column the catalog no longer has (its relation or itself dropped since the
/// Relation message), from the message's type OID and modifier; nullable.
async fn type_facts(
    client: &Client,
    c: &pgoutput::RelColumn,
    name: &TableName,
) -> Result<CatalogColumn, ConnectorError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT t.typtype::text, COALESCE(e.oid::int8, 0), COALESCE(e.typtype::text, ''), \
                        format_type(t.oid, {typmod}), {ENUM_LABELS} \
                 FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
                 WHERE t.oid = {oid}",
                typmod = c.typmod,
                oid = c.type_oid,
            ),
            &[],
        )
        .await
        .map_err(pg(format!("reading the type of {name}.{}", c.name)))?;
    let row = row.ok_or_else(|| ConnectorError::Decode {
        table: name.to_string(),
        column: c.name.clone(),
        reason: format!(
            "the column and its type (OID {}) were dropped before the relay read its rows",
            c.type_oid
        ),
    })?;
    Ok(catalog_column(false, &row, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_source_findings_sort_problems_under_their_requirement() {
        let problems = vec![
            "wal_level is replica; set wal_level = logical in postgresql.conf and restart the server"
                .to_owned(),
            "table public.t has REPLICA IDENTITY DEFAULT; run ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL (…)"
                .to_owned(),
        ];
        let checks = checks_of(&problems);
        let settings: Vec<_> = checks.iter().map(|c| c.setting).collect();
        assert_eq!(
            settings,
            [
                "wal_level",
                "replication privilege",
                "tables",
                "primary key",
                "replica identity"
            ]
        );
        assert!(
            matches!(&checks[4].outcome, CheckOutcome::Fix(f) if f.contains("ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL"))
        );
        assert_eq!(checks[1].outcome, CheckOutcome::Ok);
        let all_ok = checks_of(&[]);
        assert_eq!(all_ok.len(), CHECKED.len());
        assert!(all_ok.iter().all(|c| c.outcome == CheckOutcome::Ok));
        let later = checks_of(&["publication databus does not include public.t".to_owned()]);
        assert_eq!(later[5].setting, "publication");
        assert!(matches!(later[5].outcome, CheckOutcome::Fix(_)));
    }
}
