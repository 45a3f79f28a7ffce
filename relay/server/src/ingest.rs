//! The ingest pipeline of one source: connector -> encoder (schema registry, event key) -> buffer writer.
//!
//! Each source transaction becomes one window: its row changes are encoded as Avro with the table's
//! registered schema version and appended with the table's logical source id and the row's key; the
//! window is published by its end marker. A transaction without captured changes becomes a heartbeat
//! window (its SCN still advances the stream).
//!
//! Which events a transaction's window holds (key changes, before images, truncates, schema changes)
//! is the job of the `events` submodule.
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
    ConnectorError, ConnectorEvent, SourceConnector, SourcePosition, SourceTransaction,
    StartPosition,
};
use databus_core::{SchemaId, Scn, SourceId};
use databus_serde_formats::{RegisteredSchema, SchemaRegistry, TableSchema};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::RelayError;
use crate::config::ValidatedTable;
use crate::metrics as m;
use crate::service::{IngestState, IngestStatus, ResumeFloor};
use crate::state::StateFile;

mod events;

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
        self.published(tx);
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
