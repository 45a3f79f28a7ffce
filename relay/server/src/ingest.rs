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
//! | connector error with `is_transient()` | transient | drops the open window (rollback), status `reconnecting`, restarts the connector after the last window written, with exponential backoff (100 ms doubling to 30 s, jittered) |
//! | other connector errors (misconfigured source, purged binlog, …) | definite | status `failed` with the message; the pipeline stops, the HTTP API keeps serving what the buffer holds, `/health` turns 503 |
//! | a row that does not encode, a window larger than the buffer | definite | as above |
//!
//! History refill: with `history_transactions = N`, a restart asks the connector where to start to
//! re-read about N transactions before the persisted SCN ([`SourceConnector::refill_start`]; if the
//! source no longer has them it resumes after the persisted SCN), so the restarted relay can serve
//! recent history again.
//!
//! The last SCN and source position are persisted (see [`crate::state`]) at most once per
//! [`PERSIST_INTERVAL`] and at shutdown; a restarted relay resumes after the persisted SCN.
//!
//! Acknowledgement: after each persist, and after each successful start of the connector, the
//! pipeline calls [`SourceConnector::acknowledge`] with the SCN the state file holds, never a later
//! one: a source that retains its log per reader (a PostgreSQL slot) releases only what this relay has
//! durably recorded, so a relay killed at any moment resumes without loss, and the retained log does
//! not grow while the relay keeps up. After each event the connector's
//! [`SourceConnector::source_lag_bytes`] goes to the `databus_relay_source_log_lag_bytes` gauge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use databus_buffer::{AppendError, BufferWriter};
use databus_connectors::{
    ConnectorError, ConnectorEvent, SourceConnector, SourcePosition, SourceTransaction,
    StartPosition,
};
use databus_core::{SchemaId, Scn, SourceId};
use databus_http::backoff::{Backoff, BackoffConfig};
use databus_serde_formats::{RegisteredSchema, SchemaRegistry, TableSchema};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use crate::RelayError;
use crate::config::ValidatedTable;
use crate::metrics as m;
use crate::service::{IngestState, IngestStatus};
use crate::state::{Persister, StateFile};

mod events;
mod read_ahead;

use read_ahead::{Item, ReadAhead};

pub use crate::state::PERSIST_INTERVAL;
/// Reconnects after transient source errors: 100 ms doubling to 30 s, jittered.
pub(crate) const RECONNECT_BACKOFF: BackoffConfig = BackoffConfig {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(30),
    multiplier: 2.0,
};

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
    /// The persisted last SCN.
    pub state: StateFile,
    /// Transactions before the persisted SCN to re-read on a restart (history refill).
    pub history_transactions: u64,
    /// Whether updates carry their before image (`update` events instead of `upsert`).
    pub before_images: bool,
}

/// Bound of [`Pipeline::tables`] (cleared when reached: only after thousands of DDLs).
const MAX_CACHED_TABLE_VERSIONS: usize = 4096;

/// A table schema the pipeline has seen: the schema (kept alive), its source (none: not captured) and
/// its registered version.
type CachedTable = (Arc<TableSchema>, Option<SourceId>, Arc<RegisteredSchema>);

struct Pipeline {
    parts: IngestParts,
    by_table: FxHashMap<(String, String), SourceId>,
    /// Per table schema seen (keyed by the address of its `Arc`, which the entry keeps alive so the
    /// address is not reused): its source id (none: not captured) and registered version. The
    /// connector shares one `Arc` per table version, so a row costs one integer hash lookup.
    tables: FxHashMap<usize, CachedTable>,
    payload: Vec<u8>,
    /// The before image of an update being encoded (before images on).
    before: Vec<u8>,
    last_position: Option<SourcePosition>,
    persister: Persister,
    counters: m::IngestCounters,
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
    ) -> Result<Option<(SourceId, Arc<RegisteredSchema>)>, RelayError> {
        let address = Arc::as_ptr(table) as usize;
        if let Some((_, source, registered)) = self.tables.get(&address) {
            return Ok(source.map(|s| (s, registered.clone())));
        }
        let source = self
            .by_table
            .get(&(table.database.clone(), table.table.clone()))
            .copied();
        let registered = Arc::new(self.parts.registry.register(table).map_err(|e| {
            self.definite(format!(
                "cannot register the schema of {}: {e}",
                table.qualified_name()
            ))
        })?);
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
        self.counters.window(u64::from(info.events), info.bytes);
        self.published(tx);
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
        self.persister
            .persist(last, self.last_position.clone(), force)
            .await
    }

    /// Persists (see [`Pipeline::persist`]), then tells the connector what the state file holds: the
    /// only SCN it may release the source's log up to.
    async fn persist_and_acknowledge<C: SourceConnector>(
        &mut self,
        connector: &mut C,
        force: bool,
    ) -> Result<(), RelayError> {
        self.persist(force).await?;
        self.acknowledge(connector);
        Ok(())
    }

    fn acknowledge<C: SourceConnector>(&self, connector: &mut C) {
        let durable = self.persister.persisted();
        if durable > Scn::ZERO {
            connector.acknowledge(durable);
        }
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

    /// Writes what `reader` reads until shutdown or the connector's end (`Ok(None)`), a transient
    /// error (`Ok(Some)`: reconnect) or a definite one; then stops the reader and takes the
    /// connector back. Everything the reader forwarded before the error is written first. The state
    /// file is persisted (at most once per interval) after each batch, and the reader told what it
    /// holds.
    async fn follow<C: SourceConnector + 'static>(
        &mut self,
        mut reader: ReadAhead<C>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> (Option<C>, Result<Option<ConnectorError>, RelayError>) {
        let mut items = Vec::new();
        let followed = 'follow: loop {
            let n = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(None),
                n = reader.recv_many(&mut items, 1024) => n,
            };
            if n == 0 {
                break Err(self.definite("the source's reader task panicked".into()));
            }
            for item in items.drain(..) {
                match item {
                    Item::Event(event, _budget) => {
                        if let Err(e) = self.handle(event) {
                            break 'follow Err(e);
                        }
                    }
                    Item::End => break 'follow Ok(None),
                    Item::Failed(e) if e.is_transient() => break 'follow Ok(Some(e)),
                    Item::Failed(e) => break 'follow Err(connector_error(&self.parts.name, e)),
                }
            }
            if let Err(e) = self.persist(false).await {
                break Err(e);
            }
            reader.durable(self.persister.persisted());
            backoff.reset();
        };
        (reader.stop().await, followed)
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
pub async fn run_ingest<C: SourceConnector + 'static>(
    connector: C,
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
        Some(state) if parts.history_transactions > 0 => (
            // History refill is the connector's question: only it knows how its positions count back.
            connector.refill_start(
                state.last_scn,
                state.position.as_ref(),
                parts.history_transactions,
            ),
            Some(StartPosition::After(state.last_scn)),
        ),
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
        tables: FxHashMap::default(),
        payload: Vec::new(),
        before: Vec::new(),
        last_position: persisted.as_ref().and_then(|s| s.position.clone()),
        persister: Persister::new(
            parts.state.clone(),
            &parts.name,
            persisted.as_ref().map_or(Scn::ZERO, |s| s.last_scn),
        ),
        current_schema: HashMap::new(),
        pending_ddl: HashMap::new(),
        window_schemas: Vec::new(),
        counters: m::IngestCounters::new(&parts.name),
        parts,
    };
    let mut connector = Some(connector);
    let mut result = pump(&mut connector, &mut p, start, &shutdown).await;
    if let Some(fallback) = fallback {
        // The refill's start was purged before anything was written: refill from the oldest point the
        // source can still resume after, if that is before the persisted SCN; else (or if that was
        // purged meanwhile too) resume after the persisted SCN.
        let persisted = p.persister.persisted();
        if let Some(Some(oldest)) = purged_before_any_window(&result, &p)
            && oldest < persisted
        {
            tracing::warn!(source = %p.parts.name, %oldest, "history refill: its start was purged; refilling from what the source still has");
            result = pump(
                &mut connector,
                &mut p,
                StartPosition::After(oldest),
                &shutdown,
            )
            .await;
        }
        if purged_before_any_window(&result, &p).is_some() {
            tracing::warn!(source = %p.parts.name, "history refill impossible; resuming after the persisted SCN");
            result = pump(&mut connector, &mut p, fallback, &shutdown).await;
        }
    }
    if let Err(e) = &result {
        p.fail(e);
    }
    // Persist before closing the connector, so that the acknowledgement of the last window goes to the
    // source with the stream's last status update.
    let persisted = match connector.as_mut() {
        Some(connector) => {
            let persisted = p.persist_and_acknowledge(connector, true).await;
            if let Err(e) = connector.shutdown().await {
                tracing::warn!(source = %p.parts.name, error = %e, "connector shutdown failed");
            }
            persisted
        }
        // Its reader panicked with it (the error says so): persist what was written.
        None => p.persist(true).await,
    };
    if result.is_ok() {
        p.parts.status.update(|s| s.state = IngestState::Stopped);
    }
    result.and(persisted)
}

/// `Some(resume_after)` when `result` is a purged start and nothing was written yet (so the buffer's
/// origin can still move): the connector's earliest resume point, if it gave one.
fn purged_before_any_window(result: &Result<(), RelayError>, p: &Pipeline) -> Option<Option<Scn>> {
    match result {
        Err(RelayError::Connector {
            error: ConnectorError::Purged { resume_after, .. },
            ..
        }) if p.parts.writer.last_scn() == Scn::ZERO => Some(*resume_after),
        _ => None,
    }
}

/// Connects (and reconnects after transient errors) and follows the source until shutdown, its end, or
/// a definite error. `slot` holds the connector between connections; while one is followed, its
/// reader task has it ([`read_ahead`]). It is `None` afterwards only if that task panicked.
async fn pump<C: SourceConnector + 'static>(
    slot: &mut Option<C>,
    p: &mut Pipeline,
    start: StartPosition,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF);
    let mut from = start;
    'connect: loop {
        let Some(connector) = slot.as_mut() else {
            return Err(p.definite("the source's reader task panicked".into()));
        };
        let started = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = connector.start(from.clone()) => r,
        };
        let transient = match started {
            Ok(()) => {
                // The buffer's history continues after where the source is now positioned: from here
                // on, checkpoints before it are refused by every read instead of being served the
                // first new window. Until the first window is published a later start (a reconnect,
                // the purged-refill fallback) moves it.
                if p.parts.writer.last_scn() == Scn::ZERO {
                    let origin = connector.last_scn();
                    p.parts.writer.anchor(origin).map_err(|e| {
                        p.definite(format!("cannot anchor the buffer at SCN {origin}: {e}"))
                    })?;
                }
                // A restarted relay (or connector) tells the source what it has durably recorded.
                p.acknowledge(connector);
                p.parts.status.update(|s| {
                    s.state = IngestState::Streaming;
                    s.last_error = None;
                });
                let taken = slot.take().expect("checked above");
                let reader = ReadAhead::spawn(taken, &p.parts.name, p.persister.persisted());
                let (back, followed) = p.follow(reader, shutdown, &mut backoff).await;
                *slot = back;
                match followed? {
                    Some(transient) => transient,
                    None => return Ok(()),
                }
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(connector_error(&p.parts.name, e)),
        };
        p.parts.writer.rollback();
        tracing::warn!(source = %p.parts.name, error = %transient, "source error; reconnecting");
        let message = transient.to_string();
        p.parts.status.update(|s| {
            s.state = IngestState::Reconnecting;
            s.last_error = Some(message);
        });
        if !backoff.sleep_or(shutdown.cancelled()).await {
            return Ok(());
        }
        // Resume exactly where the buffer's history ends: after the last window written, or after the
        // origin when nothing was written since (never `Now` again: that would skip what the source
        // committed while we were away).
        from = match (p.parts.writer.last_scn(), p.parts.writer.origin()) {
            (Scn::ZERO, Some(origin)) => StartPosition::After(origin),
            (Scn::ZERO, None) => from,
            (last, _) => StartPosition::After(last),
        };
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
        AppendError::WindowTooManyFrames { frames, .. } => format!(
            "cannot append to the event buffer at SCN {scn}: {e}; set this source's buffer_size in the relay configuration higher (its side index holds one entry per 16 bytes of a ninth of buffer_size; this transaction needs more than {frames}; windows are never split)"
        ),
        _ => format!("cannot append to the event buffer at SCN {scn}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use databus_buffer::{BufferConfig, EventBuffer, ReadError, event_buffer};
    use databus_core::Checkpoint;

    /// A scripted source for the pipeline above it: each `start` takes the next outcome (an error, or
    /// the SCN the stream is positioned after: `None` keeps the requested `After(s)`), then each
    /// `next_event` the next step of that start's script; when a script runs out the connector idles
    /// until shutdown.
    /// One scripted `start`: its outcome and the events that follow it.
    type Start = (Result<Option<u64>, ConnectorError>, Vec<Step>);

    struct Scripted {
        starts: VecDeque<Start>,
        script: VecDeque<Step>,
        asked: Arc<std::sync::Mutex<Vec<StartPosition>>>,
        position: Scn,
        shutdown: CancellationToken,
        /// Each acknowledged SCN, with the SCN the state file held when it was acknowledged.
        acks: Arc<std::sync::Mutex<Vec<(Scn, Scn)>>>,
        state: StateFile,
    }

    enum Step {
        Window(u64),
        Fail(ConnectorError),
    }

    fn transient() -> ConnectorError {
        ConnectorError::ReadTimeout(Duration::from_secs(1))
    }

    fn purged() -> ConnectorError {
        ConnectorError::Purged {
            requested: "0-1-56".into(),
            oldest: "0-1-90".into(),
            resume_after: None,
        }
    }

    impl SourceConnector for Scripted {
        async fn start(&mut self, from: StartPosition) -> Result<(), ConnectorError> {
            self.asked.lock().unwrap().push(from.clone());
            let (outcome, script) = self.starts.pop_front().expect("an unscripted start");
            self.script = script.into();
            let position = outcome?;
            self.position = match (position, from) {
                (Some(p), _) => Scn::new(p),
                (None, StartPosition::After(s)) => s,
                (None, other) => panic!("script a position for {other:?}"),
            };
            Ok(())
        }

        fn last_scn(&self) -> Scn {
            self.position
        }

        async fn next_event(&mut self) -> Result<Option<ConnectorEvent>, ConnectorError> {
            match self.script.pop_front() {
                Some(Step::Window(scn)) => {
                    self.position = Scn::new(scn);
                    Ok(Some(ConnectorEvent::Transaction(SourceTransaction {
                        scn: Scn::new(scn),
                        commit_timestamp_ns: scn,
                        position: SourcePosition::new(serde_json::json!({ "scn": scn })),
                        changes: Vec::new(),
                        table_changes: Vec::new(),
                    })))
                }
                Some(Step::Fail(e)) => Err(e),
                None => {
                    self.shutdown.cancelled().await;
                    Ok(None)
                }
            }
        }

        fn shutdown_token(&self) -> CancellationToken {
            self.shutdown.clone()
        }

        /// Counts back like a source with one SCN per transaction.
        fn refill_start(
            &self,
            last: Scn,
            _position: Option<&SourcePosition>,
            transactions: u64,
        ) -> StartPosition {
            StartPosition::After(Scn::new(last.get().saturating_sub(transactions).max(1)))
        }

        async fn shutdown(&mut self) -> Result<(), ConnectorError> {
            Ok(())
        }

        fn acknowledge(&mut self, durable: Scn) {
            let on_file = self.state.load().unwrap().map_or(Scn::ZERO, |s| s.last_scn);
            self.acks.lock().unwrap().push((durable, on_file));
        }
    }

    struct Run {
        buffer: Arc<EventBuffer>,
        asked: Vec<StartPosition>,
        acks: Vec<(Scn, Scn)>,
    }

    /// Runs the pipeline over `starts` with `persisted` as the state file's last SCN, until the
    /// buffer's newest window is `until`.
    async fn run(persisted: Option<u64>, history: u64, starts: Vec<Start>, until: u64) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path(), "src");
        if let Some(scn) = persisted {
            state.store(Scn::new(scn), None).unwrap();
        }
        let (writer, buffer) = event_buffer(BufferConfig::new(1 << 20).awaiting_anchor()).unwrap();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connector = Scripted {
            starts: starts.into(),
            script: VecDeque::new(),
            asked: asked.clone(),
            position: Scn::ZERO,
            shutdown: shutdown.clone(),
            acks: acks.clone(),
            state: state.clone(),
        };
        let parts = IngestParts {
            name: "src".into(),
            writer,
            registry: Arc::new(SchemaRegistry::open(dir.path().join("schemas")).unwrap()),
            tables: Vec::new(),
            status: Arc::default(),
            state,
            history_transactions: history,
            before_images: false,
        };
        let task = tokio::spawn(run_ingest(connector, parts, shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        while buffer.stats().max_scn < Some(Scn::new(until)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {until}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
        let asked = asked.lock().unwrap().clone();
        let acks = acks.lock().unwrap().clone();
        Run {
            buffer,
            asked,
            acks,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_source_is_acknowledged_only_what_the_state_file_holds() {
        // Persisted 106; a transient failure after 108 restarts the connector; the run ends at 111.
        let r = run(
            Some(106),
            0,
            vec![
                (
                    Ok(None),
                    vec![
                        Step::Window(107),
                        Step::Window(108),
                        Step::Fail(transient()),
                    ],
                ),
                (
                    Ok(None),
                    vec![Step::Window(109), Step::Window(110), Step::Window(111)],
                ),
            ],
            111,
        )
        .await;
        let acks: Vec<u64> = r.acks.iter().map(|(a, _)| a.get()).collect();
        // Right after the first start: what the file held.
        assert_eq!(acks.first(), Some(&106), "{acks:?}");
        // Never past the file, never backwards.
        for (acked, on_file) in &r.acks {
            assert!(
                acked <= on_file,
                "acknowledged {acked} with {on_file} on file"
            );
        }
        assert!(acks.windows(2).all(|w| w[0] <= w[1]), "{acks:?}");
        // The shutdown's persist is acknowledged too.
        assert_eq!(acks.last(), Some(&111), "{acks:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_runtime_the_reader_thread_delivers_every_window_in_order() {
        // Here the reader runs on a thread of its own. More windows in a row than it holds before a
        // hand-over, a transient failure (the reader stops and hands the connector back), a restart.
        let first: Vec<Step> = (107..=706)
            .map(Step::Window)
            .chain([Step::Fail(transient())])
            .collect();
        let second: Vec<Step> = (707..=1000).map(Step::Window).collect();
        let r = run(
            Some(106),
            0,
            vec![(Ok(None), first), (Ok(None), second)],
            1000,
        )
        .await;
        let mut out = Vec::new();
        r.buffer
            .read(&Checkpoint::after(Scn::new(106)), 1 << 20, &mut out)
            .unwrap();
        let windows: Vec<u64> = databus_core::EventView::parse_all(&out)
            .unwrap()
            .iter()
            .filter(|e| e.opcode().is_end_of_window())
            .map(|e| e.scn().get())
            .collect();
        assert_eq!(windows, (107..=1000).collect::<Vec<_>>());
        assert_eq!(r.asked.len(), 2, "one restart: {:?}", r.asked);
        for (acked, on_file) in &r.acks {
            assert!(
                acked <= on_file,
                "acknowledged {acked} with {on_file} on file"
            );
        }
    }

    fn first_after(buffer: &EventBuffer, scn: u64) -> Result<Option<Scn>, ReadError> {
        let mut out = Vec::new();
        buffer.read(&Checkpoint::after(Scn::new(scn)), 1 << 20, &mut out)?;
        Ok(databus_core::EventView::parse_all(&out)
            .unwrap()
            .first()
            .map(databus_core::EventView::scn))
    }

    #[tokio::test(start_paused = true)]
    async fn a_purged_refill_anchors_the_buffer_after_the_persisted_scn() {
        // Persisted 106, refill of 50: the source no longer has 56, so the relay resumes after 106.
        let r = run(
            Some(106),
            50,
            vec![
                (Err(purged()), vec![]),
                (Ok(None), vec![Step::Window(107), Step::Window(108)]),
            ],
            108,
        )
        .await;
        assert_eq!(
            r.asked,
            [
                StartPosition::After(Scn::new(56)),
                StartPosition::After(Scn::new(106))
            ]
        );
        assert!(matches!(
            first_after(&r.buffer, 55),
            Err(ReadError::ScnNotFound { .. })
        ));
        assert!(matches!(
            first_after(&r.buffer, 100),
            Err(ReadError::ScnNotFound { .. })
        ));
        assert_eq!(first_after(&r.buffer, 106), Ok(Some(Scn::new(107))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partly_purged_refill_refills_what_the_source_still_has() {
        // Persisted 106, refill of 50: the source can still resume after 90, so history 91..106 is
        // served again and checkpoints before 90 are refused.
        let oldest_90 = ConnectorError::Purged {
            requested: "0-1-56".into(),
            oldest: "0-1-90".into(),
            resume_after: Some(Scn::new(90)),
        };
        let r = run(
            Some(106),
            50,
            vec![
                (Err(oldest_90), vec![]),
                (Ok(None), vec![Step::Window(91), Step::Window(107)]),
            ],
            107,
        )
        .await;
        assert_eq!(
            r.asked,
            [
                StartPosition::After(Scn::new(56)),
                StartPosition::After(Scn::new(90))
            ]
        );
        assert!(matches!(
            first_after(&r.buffer, 89),
            Err(ReadError::ScnNotFound { .. })
        ));
        assert_eq!(first_after(&r.buffer, 90), Ok(Some(Scn::new(91))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refill_purged_after_it_started_moves_the_origin_before_anything_is_served() {
        // The refill's start succeeded (anchored at 56), then the stream reported the purge before
        // any window: the fallback re-anchors after 106.
        let r = run(
            Some(106),
            50,
            vec![
                (Ok(None), vec![Step::Fail(purged())]),
                (Ok(None), vec![Step::Window(107)]),
            ],
            107,
        )
        .await;
        assert_eq!(r.asked.len(), 2);
        assert!(matches!(
            first_after(&r.buffer, 60),
            Err(ReadError::ScnNotFound { .. })
        ));
        assert_eq!(first_after(&r.buffer, 106), Ok(Some(Scn::new(107))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_relay_reconnecting_before_its_first_window_resumes_after_its_origin() {
        // Started from the source's position 500, the connection drops before any transaction: the
        // reconnect asks for what follows 500 (not "now" again, which would skip what was committed
        // meanwhile), and checkpoints before 500 are refused.
        let r = run(
            None,
            0,
            vec![
                (Ok(Some(500)), vec![Step::Fail(transient())]),
                (Err(transient()), vec![]),
                (Ok(None), vec![Step::Window(501), Step::Window(502)]),
            ],
            502,
        )
        .await;
        assert_eq!(
            r.asked,
            [
                StartPosition::Now,
                StartPosition::After(Scn::new(500)),
                StartPosition::After(Scn::new(500))
            ]
        );
        assert!(matches!(
            first_after(&r.buffer, 499),
            Err(ReadError::ScnNotFound { .. })
        ));
        assert_eq!(first_after(&r.buffer, 500), Ok(Some(Scn::new(501))));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_served_until_the_source_is_positioned() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path(), "src");
        state.store(Scn::new(106), None).unwrap();
        let (writer, buffer) = event_buffer(BufferConfig::new(1 << 20).awaiting_anchor()).unwrap();
        let shutdown = CancellationToken::new();
        // The source stays down: every start fails transiently.
        let connector = Scripted {
            starts: (0..1000).map(|_| (Err(transient()), vec![])).collect(),
            script: VecDeque::new(),
            asked: Arc::default(),
            position: Scn::ZERO,
            shutdown: shutdown.clone(),
            acks: Arc::default(),
            state: state.clone(),
        };
        let status: Arc<IngestStatus> = Arc::default();
        let parts = IngestParts {
            name: "src".into(),
            writer,
            registry: Arc::new(SchemaRegistry::open(dir.path().join("schemas")).unwrap()),
            tables: Vec::new(),
            status: status.clone(),
            state,
            history_transactions: 0,
            before_images: false,
        };
        let task = tokio::spawn(run_ingest(connector, parts, shutdown.clone()));
        while status.snapshot().state != IngestState::Reconnecting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mut out = Vec::new();
        for scn in [0, 55, 106, 200] {
            assert_eq!(
                buffer.read(&Checkpoint::after(Scn::new(scn)), 1 << 20, &mut out),
                Err(ReadError::NotAnchored)
            );
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

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
