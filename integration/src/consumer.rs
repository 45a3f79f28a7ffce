//! Consumers built with the client library, as applications use it: a [`Recorder`] implements
//! [`DatabusConsumer`] and keeps what it saw (every window, for the checker) and what it built (an
//! in-memory replica of every source: key → row), applying each window in `on_end_window` and
//! forgetting a failed window's events in `on_rollback`, as a search indexer or replica would. A
//! truncate (`on_truncate`) removes every replica row of its source at its place in the window.
//! [`Consumer`] runs a [`DatabusClient`] with a recorder in a task and stops it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use databus_client::{
    BootstrapInfo, CheckpointStore, ClientConfig, ClientError, ConsumerOutcome, DataEvent,
    DatabusClient, DatabusConsumer, Phase, RunSummary, WindowInfo,
};
use databus_core::{Checkpoint, Key, Scn, TableChange};
use tokio_util::sync::CancellationToken;

use crate::checker::{ObservedEvent, ObservedWindow, Row, json_row};
use crate::process::wait_for;
use crate::workload::{ITEMS, TXLOG};

/// What a [`Recorder`] holds.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Events of the window in progress.
    pending: Vec<ObservedEvent>,
    /// Truncates of the window in progress: (source, how many of `pending` came before it).
    pending_truncates: Vec<(u16, usize)>,
    /// Truncates applied: (source, SCN of their window), in order.
    pub truncates: Vec<(u16, u64)>,
    /// Schema changes seen: (source, SCN, statement, new schema known).
    pub schema_changes: Vec<(u16, u64, String, bool)>,
    /// Every online and catch-up window, in delivery order.
    pub windows: Vec<ObservedWindow>,
    /// Snapshot rows received (bootstrap).
    pub snapshot_rows: usize,
    /// Windows applied (all phases).
    pub windows_applied: usize,
    /// The replica: (source, key) → row.
    pub replica: BTreeMap<(u16, Key), Row>,
    /// The SCN of the last applied window.
    pub last_scn: u64,
    /// The greatest workload `seq` applied (from `txlog` events, snapshot rows included).
    pub last_seq: i64,
    /// Bootstraps started (`on_start_bootstrap`), with their `since` SCN.
    pub bootstraps: Vec<Option<Scn>>,
    /// Bootstraps ended (`on_end_bootstrap`), with their target SCN.
    pub bootstraps_ended: Vec<Scn>,
    /// Errors the client reported through `on_error`.
    pub errors: Vec<String>,
    /// Events that did not decode (the consumer stops with `Fatal`).
    pub decode_failures: Vec<String>,
    /// Copies of the `shop.items` replica taken at window ends, with the `seq` they are at (see
    /// [`Recorder::snapshot_every`]).
    pub index_snapshots: Vec<(i64, BTreeMap<String, Row>)>,
}

impl Recorded {
    /// Applies a truncate of `source`: every replica row of it is gone.
    fn truncate(&mut self, source: u16, scn: u64) {
        self.replica.retain(|(s, _), _| *s != source);
        self.truncates.push((source, scn));
    }
}

/// A consumer that records windows and maintains a replica; see the module docs.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Recorded>,
    snapshot_every: usize,
}

impl Recorder {
    /// A recorder.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// A recorder that also copies its `shop.items` replica after every `n`th workload window (for
    /// consistency checks at points in time while writes continue).
    pub fn snapshot_every(n: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner: Mutex::default(),
            snapshot_every: n,
        })
    }

    /// The recorded state (locked).
    pub fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replica of one source, by the text of the key.
    pub fn table(&self, source: u16) -> BTreeMap<String, Row> {
        self.lock()
            .replica
            .iter()
            .filter(|((s, _), _)| *s == source)
            .map(|((_, k), r)| (k.to_string(), r.clone()))
            .collect()
    }

    /// The recorded online/catch-up windows.
    pub fn windows(&self) -> Vec<ObservedWindow> {
        self.lock().windows.clone()
    }
}

impl DatabusConsumer for Recorder {
    async fn on_start_window(&self, _: &WindowInfo) -> ConsumerOutcome {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.pending_truncates.clear();
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, _: &TableChange) -> ConsumerOutcome {
        let mut inner = self.lock();
        let at = inner.pending.len();
        inner.pending_truncates.push((event.source().get(), at));
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        self.lock().schema_changes.push((
            event.source().get(),
            event.scn().get(),
            change.statement.clone(),
            change.new_schema.is_some(),
        ));
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let row = match event.json() {
            Ok(v) => json_row(&v),
            Err(e) => {
                self.lock().decode_failures.push(format!(
                    "scn {} source {} key {}: {e}",
                    event.scn(),
                    event.source(),
                    event.key()
                ));
                return ConsumerOutcome::Fatal;
            }
        };
        let observed = ObservedEvent {
            source: event.source().get(),
            key: event.key().to_owned(),
            delete: event.is_delete(),
            row,
        };
        self.lock().pending.push(observed);
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        let mut inner = self.lock();
        let events = std::mem::take(&mut inner.pending);
        let truncates = std::mem::take(&mut inner.pending_truncates);
        let mut truncates = truncates.into_iter().peekable();
        for (i, e) in events.iter().enumerate() {
            while let Some((source, _)) = truncates.next_if(|(_, at)| *at <= i) {
                inner.truncate(source, window.scn.get());
            }
            let id = (e.source, e.key.clone());
            if e.delete {
                inner.replica.remove(&id);
            } else {
                inner.replica.insert(id, e.row.clone());
            }
            if e.source == TXLOG && !e.delete {
                let seq = e.row.get("seq").and_then(|s| s.parse().ok()).unwrap_or(-1);
                inner.last_seq = inner.last_seq.max(seq);
            }
        }
        for (source, _) in truncates {
            inner.truncate(source, window.scn.get());
        }
        inner.windows_applied += 1;
        inner.last_scn = inner.last_scn.max(window.scn.get());
        if window.phase == Phase::Snapshot {
            inner.snapshot_rows += events.len();
        } else {
            let is_tx = events.iter().any(|e| e.source == TXLOG);
            inner.windows.push(ObservedWindow {
                scn: window.scn.get(),
                phase: window.phase,
                events,
            });
            if is_tx
                && self.snapshot_every > 0
                && inner.last_seq > 0
                && (inner.last_seq as usize).is_multiple_of(self.snapshot_every)
            {
                let items: BTreeMap<String, Row> = inner
                    .replica
                    .iter()
                    .filter(|((s, _), _)| *s == ITEMS)
                    .map(|((_, k), r)| (k.to_string(), r.clone()))
                    .collect();
                let seq = inner.last_seq;
                inner.index_snapshots.push((seq, items));
            }
        }
        ConsumerOutcome::Success
    }

    async fn on_rollback(&self, _: &Checkpoint) -> ConsumerOutcome {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.pending_truncates.clear();
        ConsumerOutcome::Success
    }

    async fn on_error(&self, error: &ClientError) -> ConsumerOutcome {
        self.lock().errors.push(error.to_string());
        ConsumerOutcome::Success
    }

    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        let mut inner = self.lock();
        inner.bootstraps.push(info.since_scn);
        if info.since_scn.is_none() {
            // A full snapshot is the whole state: rows deleted since what the replica holds are
            // not sent as tombstones, so it starts from empty (docs/client.md).
            inner.replica.clear();
        }
        drop(inner);
        ConsumerOutcome::Success
    }

    async fn on_end_bootstrap(&self, scn: Scn) -> ConsumerOutcome {
        self.lock().bootstraps_ended.push(scn);
        ConsumerOutcome::Success
    }
}

/// A running client with its recorder.
#[derive(Debug)]
pub struct Consumer {
    /// What it saw and built.
    pub recorder: Arc<Recorder>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<RunSummary, ClientError>>>,
}

impl Consumer {
    /// Starts `DatabusClient::run` with `recorder` in a task.
    pub fn start(
        config: ClientConfig,
        store: Arc<dyn CheckpointStore>,
        recorder: Arc<Recorder>,
    ) -> Result<Consumer> {
        let client = DatabusClient::new(config, store)?;
        let shutdown = CancellationToken::new();
        let (rec, token) = (recorder.clone(), shutdown.clone());
        let task = tokio::spawn(async move { client.run(rec, token).await });
        Ok(Consumer {
            recorder,
            shutdown,
            task: Some(task),
        })
    }

    /// Fails if the client stopped (it runs until stopped).
    pub async fn ensure_running(&mut self) -> Result<()> {
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            let task = self.task.take().context("no task")?;
            let outcome = task.await;
            let rec = self.recorder.lock();
            bail!(
                "the consumer stopped: {outcome:?}; decode failures {:?}; errors {:?}",
                rec.decode_failures,
                rec.errors.iter().rev().take(5).collect::<Vec<_>>()
            );
        }
        if self.task.is_none() {
            bail!("the consumer was stopped");
        }
        Ok(())
    }

    /// Waits until the consumer applied workload transaction `seq` (or later).
    pub async fn wait_seq(&mut self, seq: i64, timeout: Duration) -> Result<()> {
        let what = format!("the consumer to apply transaction {seq}");
        wait_for(&what, timeout, || {
            let done = self.recorder.lock().last_seq >= seq;
            let running = if done {
                Ok(())
            } else {
                self.task
                    .as_ref()
                    .filter(|t| !t.is_finished())
                    .map(|_| ())
                    .context("the consumer stopped")
            };
            async move { running.map(|()| done.then_some(())) }
        })
        .await
        .with_context(|| {
            let rec = self.recorder.lock();
            format!(
                "last seq {}, last scn {}, errors {:?}, decode failures {:?}",
                rec.last_seq,
                rec.last_scn,
                rec.errors.iter().rev().take(5).collect::<Vec<_>>(),
                rec.decode_failures
            )
        })
    }

    /// Waits until the consumer applied a window with SCN `>= scn`.
    pub async fn wait_scn(&mut self, scn: u64, timeout: Duration) -> Result<()> {
        let what = format!("the consumer to reach SCN {scn}");
        wait_for(&what, timeout, || {
            let done = self.recorder.lock().last_scn >= scn;
            let running = self
                .task
                .as_ref()
                .filter(|t| done || !t.is_finished())
                .map(|_| ())
                .context("the consumer stopped");
            async move { running.map(|()| done.then_some(())) }
        })
        .await
    }

    /// Stops the client (cancels it) and returns how its run ended.
    pub async fn stop(mut self) -> Result<RunSummary> {
        self.shutdown.cancel();
        let task = self.task.take().context("already stopped")?;
        let summary = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .context("the consumer did not stop within 30s")???;
        Ok(summary)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
