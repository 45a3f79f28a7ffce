//! The ingest pipeline of one source: connector -> encoder (schema registry, event key) -> buffer writer.
//!
//! Each source transaction becomes one window: its row changes are encoded as Avro with the table's
//! registered schema version and appended with the table's logical source id and the row's key; the
//! window is published by its end marker. A transaction without captured changes becomes a heartbeat
//! window (its SCN still advances the stream).
//!
//! Failure handling:
//!
//! | what | class | what the pipeline does |
//! |------|-------|------------------------|
//! | connector error with `is_transient()` | transient | drops the open window (rollback), status `reconnecting`, restarts the connector after the last window written, with exponential backoff (100 ms doubling to 30 s) |
//! | other connector errors (misconfigured source, purged binlog, …) | definite | status `failed` with the message; the pipeline stops, the HTTP API keeps serving what the buffer holds, `/health` turns 503 |
//! | a row that does not encode, a window larger than the buffer | definite | as above |
//!
//! History refill: with `history_transactions = N`, a restart re-reads the N transactions before the
//! persisted SCN (if the binlog still has them; otherwise it resumes after the persisted SCN), so the
//! restarted relay can serve recent history again.
//!
//! The last SCN and source position are persisted (see [`crate::state`]) at most once per
//! [`PERSIST_INTERVAL`] and at shutdown; a restarted relay resumes after the persisted SCN.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use databus_buffer::{AppendError, BufferWriter};
use databus_connectors::{
    ChangeKind, ConnectorError, ConnectorEvent, DdlKind, RowChange, SourceConnector,
    SourcePosition, SourceTransaction, StartPosition, TableName,
};
use databus_core::{
    EventBuilder, Key, Opcode, SchemaId, Scn, SourceId, TableChange, TableChangeCause,
};
use databus_serde_formats::{RegisteredSchema, Row, SchemaRegistry, TableSchema, event_key};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::RelayError;
use crate::config::ValidatedTable;
use crate::metrics as m;
use crate::service::{IngestState, IngestStatus, ResumeFloor};
use crate::state::StateFile;

/// How often the last SCN is persisted at most while windows flow.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Everything one source's pipeline needs.
#[derive(Debug)]
pub struct IngestParts {
    /// The source's name (for status, metrics, errors).
    pub name: String,
    /// The single writer of the source's buffer.
    pub writer: BufferWriter,
    /// The schema registry every table schema version is registered in.
    pub registry: Arc<SchemaRegistry>,
    /// The captured tables and their logical source ids.
    pub tables: Vec<ValidatedTable>,
    /// Where the pipeline reports what it does.
    pub status: Arc<IngestStatus>,
    /// The buffer's resume floor (set on start).
    pub floor: Arc<ResumeFloor>,
    /// The persisted last SCN.
    pub state: StateFile,
    /// Transactions before the persisted SCN to re-read on a restart (history refill).
    pub history_transactions: u64,
    /// Whether updates carry their before image (`update` events instead of `upsert`).
    pub before_images: bool,
}

/// Bound of [`Pipeline::tables`] (cleared when reached: only after thousands of DDLs).
const MAX_CACHED_TABLE_VERSIONS: usize = 4096;

struct Pipeline {
    parts: IngestParts,
    by_table: HashMap<(String, String), SourceId>,
    /// Per table schema seen (keyed by the address of its `Arc`, which the entry keeps alive so the
    /// address is not reused): its source id (none: not captured) and registered version. The
    /// connector shares one `Arc` per table version, so a row costs one integer hash lookup.
    tables: HashMap<usize, (Arc<TableSchema>, Option<SourceId>, RegisteredSchema)>,
    payload: Vec<u8>,
    /// The before image of an update being encoded (before images on).
    before: Vec<u8>,
    last_position: Option<SourcePosition>,
    last_persist: Option<Instant>,
    persisted_scn: Scn,
    /// The writer schema of each source's last row written (to announce a new version).
    current_schema: HashMap<SourceId, SchemaId>,
    /// DDL statements of a source seen since its last row (told with the next schema change).
    pending_ddl: HashMap<SourceId, String>,
    /// `current_schema` updates of the open window, applied when it is published.
    window_schemas: Vec<(SourceId, SchemaId)>,
}

impl Pipeline {
    fn definite(&self, message: String) -> RelayError {
        RelayError::Ingest {
            name: self.parts.name.clone(),
            message,
        }
    }

    /// The source id and registered schema of `table` (none: a table this relay does not capture).
    fn table(
        &mut self,
        table: &Arc<TableSchema>,
    ) -> Result<Option<(SourceId, RegisteredSchema)>, RelayError> {
        let address = Arc::as_ptr(table) as usize;
        if let Some((_, source, registered)) = self.tables.get(&address) {
            return Ok(source.map(|s| (s, registered.clone())));
        }
        let source = self
            .by_table
            .get(&(table.database.clone(), table.table.clone()))
            .copied();
        let registered = self.parts.registry.register(table).map_err(|e| {
            self.definite(format!(
                "cannot register the schema of {}: {e}",
                table.qualified_name()
            ))
        })?;
        if self.tables.len() >= MAX_CACHED_TABLE_VERSIONS {
            self.tables.clear();
        }
        self.tables
            .insert(address, (table.clone(), source, registered.clone()));
        Ok(source.map(|s| (s, registered)))
    }

    /// Writes one transaction as one window; on error nothing of it is visible.
    fn write_transaction(&mut self, tx: &SourceTransaction) -> Result<(), RelayError> {
        self.window_schemas.clear();
        if let Err(e) = self
            .append_table_changes(tx)
            .and_then(|()| self.append_changes(tx))
        {
            self.parts.writer.rollback();
            return Err(e);
        }
        let info = self
            .parts
            .writer
            .end_window(tx.scn, tx.commit_timestamp_ns)
            .map_err(|e| self.definite(format!("cannot publish window {}: {e}", tx.scn)))?;
        m::ingest_window(&self.parts.name, u64::from(info.events), info.bytes);
        for (source, schema) in self.window_schemas.drain(..) {
            self.current_schema.insert(source, schema);
            self.pending_ddl.remove(&source);
        }
        for ddl in &tx.table_changes {
            if let Some(source) = self.source_of(&ddl.table) {
                if matches!(ddl.kind, DdlKind::Alter | DdlKind::Create) {
                    let pending = self.pending_ddl.entry(source).or_default();
                    if !pending.is_empty() {
                        pending.push_str("; ");
                    }
                    pending.push_str(&ddl.statement);
                }
            }
        }
        // A relay started from the source's current position: checkpoints before the first window were
        // never in this buffer.
        self.parts
            .floor
            .set_if_unset(Scn::new(tx.scn.get().saturating_sub(1)));
        self.last_position = Some(tx.position.clone());
        self.parts.status.update(|s| {
            s.count_window(u64::from(info.events));
            s.last_scn = Some(tx.scn);
            s.last_timestamp_ns = Some(tx.commit_timestamp_ns);
            s.position = Some(tx.position.to_string());
        });
        Ok(())
    }

    fn source_of(&self, table: &TableName) -> Option<SourceId> {
        self.by_table
            .get(&(table.database.clone(), table.table.clone()))
            .copied()
    }

    /// Appends the table events of a DDL statement (not yet published): a `truncate` for TRUNCATE and
    /// DROP (every row of the source is gone), a `schema_change` without the new schema for ALTER (the
    /// binlog tells the new columns with the next row, whose window then carries a `schema_change`
    /// with both ids). CREATE needs no event: the table starts empty (a DROP before it cleared it).
    fn append_table_changes(&mut self, tx: &SourceTransaction) -> Result<(), RelayError> {
        for ddl in &tx.table_changes {
            if ddl.kind == DdlKind::DropDatabase {
                // Every captured table of the database is dropped.
                let mut dropped: Vec<(String, SourceId)> = self
                    .by_table
                    .iter()
                    .filter(|((database, _), _)| *database == ddl.table.database)
                    .map(|((database, table), source)| (format!("{database}.{table}"), *source))
                    .collect();
                dropped.sort_by_key(|(_, source)| *source);
                for (table, source) in dropped {
                    let current = self.current_schema.get(&source).copied();
                    let change = TableChange {
                        table,
                        cause: TableChangeCause::Drop,
                        statement: ddl.statement.clone(),
                        old_schema: None,
                        new_schema: None,
                    };
                    self.append_table_event(tx, source, Opcode::Truncate, current, &change)?;
                }
                continue;
            }
            let Some(source) = self.source_of(&ddl.table) else {
                continue;
            };
            let current = self.current_schema.get(&source).copied();
            let (opcode, change) = match ddl.kind {
                DdlKind::Truncate | DdlKind::Drop => (
                    Opcode::Truncate,
                    TableChange {
                        table: ddl.table.to_string(),
                        cause: if ddl.kind == DdlKind::Drop {
                            TableChangeCause::Drop
                        } else {
                            TableChangeCause::Truncate
                        },
                        statement: ddl.statement.clone(),
                        old_schema: None,
                        new_schema: None,
                    },
                ),
                DdlKind::Alter => (
                    Opcode::SchemaChange,
                    TableChange {
                        table: ddl.table.to_string(),
                        cause: TableChangeCause::Alter,
                        statement: ddl.statement.clone(),
                        old_schema: current,
                        new_schema: None,
                    },
                ),
                DdlKind::Create | DdlKind::DropDatabase => continue,
            };
            self.append_table_event(tx, source, opcode, current, &change)?;
        }
        Ok(())
    }

    /// Appends one table event of `source`.
    fn append_table_event(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        opcode: Opcode,
        schema: Option<SchemaId>,
        change: &TableChange,
    ) -> Result<(), RelayError> {
        let payload = change.to_payload();
        let event = EventBuilder::new(tx.scn, opcode)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.unwrap_or(SchemaId::NONE))
            .payload(&payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    /// Before the first row of a new schema version of `source` in this run, a `schema_change` event
    /// with both schema ids (and the DDL statements seen since the previous version's last row).
    fn announce_schema(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
    ) -> Result<(), RelayError> {
        let staged = self
            .window_schemas
            .iter()
            .rev()
            .find(|(s, _)| *s == source)
            .map(|(_, id)| *id);
        let Some(old) = staged.or_else(|| self.current_schema.get(&source).copied()) else {
            // The first row of the source since the relay started: nothing to compare with.
            self.window_schemas.push((source, schema.id));
            return Ok(());
        };
        if old == schema.id {
            return Ok(());
        }
        let change = TableChange {
            table: schema.table.qualified_name(),
            cause: TableChangeCause::Alter,
            statement: self.pending_ddl.get(&source).cloned().unwrap_or_default(),
            old_schema: Some(old),
            new_schema: Some(schema.id),
        };
        self.append_table_event(tx, source, Opcode::SchemaChange, Some(schema.id), &change)?;
        self.window_schemas.push((source, schema.id));
        Ok(())
    }

    /// Appends the window's events (not yet published).
    ///
    /// An update that changes the row's key becomes two events of the window, in this order: a delete
    /// of the old key (payload: the before image) and an upsert of the new key, so every consumer that
    /// applies changes by key drops the old key (each event passes the partition filters by its own
    /// key).
    fn append_changes(&mut self, tx: &SourceTransaction) -> Result<(), RelayError> {
        for change in &tx.changes {
            let table = &change.table;
            let Some((source, schema)) = self.table(table)? else {
                // The connector captures exactly the configured tables; anything else is skipped.
                tracing::warn!(table = %table.qualified_name(), "change to an unmapped table skipped");
                continue;
            };
            self.announce_schema(tx, source, &schema)?;
            match change.kind {
                ChangeKind::Insert => {
                    let row = self.image(tx, change, change.after.as_ref())?;
                    let key = self.key_of(table, row)?;
                    self.append_row(tx, source, &schema, Opcode::Upsert, &key, row)?;
                }
                ChangeKind::Update => {
                    let after = self.image(tx, change, change.after.as_ref())?;
                    let key = self.key_of(table, after)?;
                    // A key change: the old key is deleted in the same window, before the new row
                    // (the delete carries the before image).
                    let mut with_before = None;
                    if let Some(before) = change.before.as_ref() {
                        let old_key = self.key_of(table, before)?;
                        if old_key != key {
                            self.append_row(tx, source, &schema, Opcode::Delete, &old_key, before)?;
                        } else if self.parts.before_images {
                            with_before = Some(before);
                        }
                    }
                    match with_before {
                        Some(before) => {
                            self.append_update(tx, source, &schema, &key, after, before)?
                        }
                        None => {
                            self.append_row(tx, source, &schema, Opcode::Upsert, &key, after)?
                        }
                    }
                }
                ChangeKind::Delete => {
                    let row = self.image(tx, change, change.before.as_ref())?;
                    let key = self.key_of(table, row)?;
                    self.append_row(tx, source, &schema, Opcode::Delete, &key, row)?;
                }
            }
        }
        Ok(())
    }

    /// The row image a change must carry.
    fn image<'r>(
        &self,
        tx: &SourceTransaction,
        change: &RowChange,
        row: Option<&'r Row>,
    ) -> Result<&'r Row, RelayError> {
        row.ok_or_else(|| {
            self.definite(format!(
                "{:?} of {} at SCN {} has no row image",
                change.kind,
                change.table.qualified_name(),
                tx.scn
            ))
        })
    }

    /// The event key of `row`.
    fn key_of(&self, table: &TableSchema, row: &Row) -> Result<Key, RelayError> {
        event_key(table, row)
            .map_err(|e| self.definite(format!("key of a row of {}: {e}", table.qualified_name())))
    }

    /// Encodes an update with its before image (an [`Opcode::Update`] event) and appends it.
    fn append_update(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
        key: &Key,
        after: &Row,
        before: &Row,
    ) -> Result<(), RelayError> {
        self.before.clear();
        if let Err(e) = schema.encoder.encode(after, &mut self.before) {
            return Err(self.definite(format!(
                "cannot encode a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        let after_len = self.before.len();
        if let Err(e) = schema.encoder.encode(before, &mut self.before) {
            return Err(self.definite(format!(
                "cannot encode the before image of a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        self.payload.clear();
        let (after_bytes, before_bytes) = self.before.split_at(after_len);
        databus_core::event::update_payload(after_bytes, before_bytes, &mut self.payload);
        let event = EventBuilder::new(tx.scn, Opcode::Update)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.id)
            .key(key.as_ref())
            .payload(&self.payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    /// Encodes `row` and appends it as one event of the open window.
    fn append_row(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
        opcode: Opcode,
        key: &Key,
        row: &Row,
    ) -> Result<(), RelayError> {
        self.payload.clear();
        if let Err(e) = schema.encoder.encode(row, &mut self.payload) {
            return Err(self.definite(format!(
                "cannot encode a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        let event = EventBuilder::new(tx.scn, opcode)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.id)
            .key(key.as_ref())
            .payload(&self.payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    async fn persist(&mut self, force: bool) -> Result<(), RelayError> {
        let last = self.parts.writer.last_scn();
        if last == Scn::ZERO || last == self.persisted_scn {
            return Ok(());
        }
        if !force
            && self
                .last_persist
                .is_some_and(|t| t.elapsed() < PERSIST_INTERVAL)
        {
            return Ok(());
        }
        let file = self.parts.state.clone();
        let position = self.last_position.clone();
        tokio::task::spawn_blocking(move || file.store(last, position))
            .await
            .map_err(|e| self.definite(format!("state writer panicked: {e}")))??;
        self.persisted_scn = last;
        self.last_persist = Some(Instant::now());
        Ok(())
    }

    fn handle(&mut self, event: ConnectorEvent) -> Result<(), RelayError> {
        match event {
            ConnectorEvent::Transaction(tx) => self.write_transaction(&tx),
            ConnectorEvent::SchemaChange { schema, .. } => self.table(&schema).map(|_| ()),
            ConnectorEvent::Heartbeat { timestamp_ns, .. } => {
                // The source is idle and we are caught up with it as of the heartbeat.
                self.parts
                    .status
                    .update(|s| s.last_timestamp_ns = Some(timestamp_ns));
                Ok(())
            }
        }
    }

    fn fail(&self, error: &RelayError) {
        tracing::error!(source = %self.parts.name, %error, "ingest stopped");
        let message = error.to_string();
        self.parts.status.update(|s| {
            s.state = IngestState::Failed;
            s.last_error = Some(message);
        });
    }
}

fn connector_error(name: &str, e: ConnectorError) -> RelayError {
    RelayError::Connector {
        name: name.to_owned(),
        error: e,
    }
}

/// Runs one source's pipeline until `shutdown` is cancelled (returns `Ok`) or a definite error stops it
/// (returns the error, also shown in the status). Resumes after the persisted last SCN, if any, else
/// from the source's current position.
pub async fn run_ingest<C: SourceConnector>(
    mut connector: C,
    parts: IngestParts,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let persisted = match parts.state.load() {
        Ok(state) => state,
        Err(e) => {
            let message = e.to_string();
            parts.status.update(|s| {
                s.state = IngestState::Failed;
                s.last_error = Some(message);
            });
            return Err(e);
        }
    };
    let (start, fallback) = match &persisted {
        Some(state) if parts.history_transactions > 0 => {
            let refill = Scn::new(
                state
                    .last_scn
                    .get()
                    .saturating_sub(parts.history_transactions),
            );
            (
                StartPosition::After(refill),
                Some(StartPosition::After(state.last_scn)),
            )
        }
        Some(state) => (StartPosition::After(state.last_scn), None),
        None => (StartPosition::Now, None),
    };
    let by_table = parts
        .tables
        .iter()
        .map(|t| ((t.database.clone(), t.table.clone()), t.id))
        .collect();
    let mut p = Pipeline {
        by_table,
        tables: HashMap::new(),
        payload: Vec::new(),
        before: Vec::new(),
        last_position: persisted.as_ref().and_then(|s| s.position.clone()),
        last_persist: None,
        persisted_scn: persisted.as_ref().map_or(Scn::ZERO, |s| s.last_scn),
        current_schema: HashMap::new(),
        pending_ddl: HashMap::new(),
        window_schemas: Vec::new(),
        parts,
    };
    let mut result = pump(&mut connector, &mut p, start, &shutdown).await;
    if let (Some(fallback), Err(RelayError::Connector { error, .. })) = (fallback, &result) {
        if matches!(error, ConnectorError::Purged { .. }) && p.parts.writer.last_scn() == Scn::ZERO
        {
            tracing::warn!(source = %p.parts.name, %error, "history refill impossible; resuming after the persisted SCN");
            result = pump(&mut connector, &mut p, fallback, &shutdown).await;
        }
    }
    if let Err(e) = &result {
        p.fail(e);
    }
    if let Err(e) = connector.shutdown().await {
        tracing::warn!(source = %p.parts.name, error = %e, "connector shutdown failed");
    }
    let persisted = p.persist(true).await;
    if result.is_ok() {
        p.parts.status.update(|s| s.state = IngestState::Stopped);
    }
    result.and(persisted)
}

async fn pump<C: SourceConnector>(
    connector: &mut C,
    p: &mut Pipeline,
    start: StartPosition,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let mut backoff = INITIAL_BACKOFF;
    'connect: loop {
        let from = match p.parts.writer.last_scn() {
            Scn::ZERO => start.clone(),
            last => StartPosition::After(last),
        };
        let started = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = connector.start(from.clone()) => r,
        };
        let transient = match started {
            Ok(()) => {
                // Checkpoints before the start position were never in this buffer.
                if let StartPosition::After(scn) = &from {
                    p.parts.floor.set_if_unset(*scn);
                }
                p.parts.status.update(|s| {
                    s.state = IngestState::Streaming;
                    s.last_error = None;
                });
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        r = connector.next_event() => r,
                    };
                    match next {
                        Ok(Some(event)) => {
                            p.handle(event)?;
                            p.persist(false).await?;
                            backoff = INITIAL_BACKOFF;
                        }
                        Ok(None) => return Ok(()),
                        Err(e) if e.is_transient() => break e,
                        Err(e) => return Err(connector_error(&p.parts.name, e)),
                    }
                }
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(connector_error(&p.parts.name, e)),
        };
        p.parts.writer.rollback();
        tracing::warn!(source = %p.parts.name, error = %transient, ?backoff, "source error; reconnecting");
        let message = transient.to_string();
        p.parts.status.update(|s| {
            s.state = IngestState::Reconnecting;
            s.last_error = Some(message);
        });
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        continue 'connect;
    }
}

/// The message of a failed append. A window larger than the whole buffer names the setting to raise:
/// the relay never splits a transaction.
fn append_error_message(scn: Scn, e: &AppendError) -> String {
    match e {
        AppendError::WindowTooLarge { window_bytes, .. } => format!(
            "cannot append to the event buffer at SCN {scn}: {e}; set this source's buffer_size in the relay configuration above the transaction's size (more than {}; windows are never split)",
            bytesize::ByteSize::b(*window_bytes)
        ),
        _ => format!("cannot append to the event buffer at SCN {scn}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_larger_than_the_buffer_names_the_setting_to_raise() {
        let e = AppendError::WindowTooLarge {
            scn: Scn::new(16),
            window_bytes: 3 << 20,
            capacity_bytes: 1 << 20,
        };
        let message = append_error_message(Scn::new(16), &e);
        assert!(message.contains("at SCN 16"), "{message}");
        assert!(message.contains("buffer_size"), "{message}");
        assert!(message.contains("3.0 MiB"), "{message}");
        assert!(message.contains("never split"), "{message}");
    }
}
