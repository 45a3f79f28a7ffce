//! The callback API: [`DatabusConsumer`], its outcomes and the information passed to it.
//!
//! Lifecycle of one consumption run, mirroring Databus:
//!
//! ```text
//! on_start_consumption
//!   [on_start_bootstrap  (snapshot windows..., on_start_catchup, catch-up windows...)  on_end_bootstrap]
//!   for each window: on_start_window
//!                      (on_start_source, on_event..., on_end_source)...
//!                    on_end_window, on_checkpoint -> checkpoint persisted
//!   on_rollback before a failed window is replayed; on_error for failures the client handles
//! on_stop_consumption
//! ```
//!
//! Every method has a default no-op body returning [`ConsumerOutcome::Success`]. A callback returning
//! [`ConsumerOutcome::Retry`] (or panicking) fails its window: the client calls `on_rollback` and
//! replays the whole window after a backoff, up to the configured retries. [`ConsumerOutcome::Fatal`]
//! stops consumption at once. Nothing of a window is checkpointed until every callback of it succeeded.

use std::future::Future;

use databus_core::{Checkpoint, Scn, SourceId, TableChange};

use crate::{ClientError, DataEvent, Phase};

/// What a callback tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerOutcome {
    /// Done; go on.
    Success,
    /// A transient failure: roll back and replay the window (with backoff, up to the retry limit).
    Retry,
    /// Stop consuming; the checkpoint stays before the current window.
    Fatal,
}

/// A window about to be (or just) delivered.
#[derive(Debug, Clone, Copy)]
pub struct WindowInfo {
    /// The window's SCN.
    pub scn: Scn,
    /// Commit time at the source, ns since the epoch.
    pub timestamp_ns: u64,
    /// Online, snapshot or catch-up.
    pub phase: Phase,
    /// Data events in the window (after filtering).
    pub events: usize,
    /// Which attempt this is (0 the first time, then one more per replay).
    pub attempt: u32,
}

/// A bootstrap the client enters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapInfo {
    /// `Some(scn)`: a consolidated delta since `scn` (changed rows and tombstones for rows deleted
    /// since); `None`: a full snapshot, the whole state at its SCN with no tombstones, so a consumer
    /// holding state starts from empty (a replica clears its tables, an index its documents, a cache
    /// its entries). A bootstrap can start again (`410 log_trimmed`, `generation_changed`,
    /// `snapshot_required` from the server): the callback then comes again.
    pub since_scn: Option<Scn>,
}

/// A window the skip-and-record policy skipped events of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvents {
    /// The window.
    pub scn: Scn,
    /// `(source, key as text, event index in the window)` of each event whose callback still failed;
    /// empty when a window callback (start/end of window or source) failed.
    pub events: Vec<(SourceId, String, usize)>,
    /// The last failure.
    pub reason: String,
}

/// The callbacks of a consumer. Implement the ones you need; methods take `&self` (use interior
/// mutability) because events of different keys run on several workers at once.
///
/// ```
/// use databus_client::{ConsumerOutcome, DataEvent, DatabusConsumer};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// impl DatabusConsumer for Counter {
///     async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
///         let _key = event.key();
///         self.0.fetch_add(1, Ordering::Relaxed);
///         ConsumerOutcome::Success
///     }
/// }
/// ```
pub trait DatabusConsumer: Send + Sync + 'static {
    /// Consumption starts (once per run, before anything else).
    fn on_start_consumption(&self) -> impl Future<Output = ConsumerOutcome> + Send {
        async { ConsumerOutcome::Success }
    }

    /// Consumption stops (once per run, also after an error).
    fn on_stop_consumption(&self) -> impl Future<Output = ConsumerOutcome> + Send {
        async { ConsumerOutcome::Success }
    }

    /// A window starts.
    fn on_start_window(&self, window: &WindowInfo) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = window;
        async { ConsumerOutcome::Success }
    }

    /// A window ended: every event callback of it succeeded. `checkpoint` is the checkpoint that will
    /// be persisted for it (a replica storing its checkpoint with its data commits it here).
    fn on_end_window(
        &self,
        window: &WindowInfo,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = (window, checkpoint);
        async { ConsumerOutcome::Success }
    }

    /// Events of `source` follow; `schema` is the writer schema of the first of them, if known.
    fn on_start_source(
        &self,
        source: SourceId,
        schema: Option<&apache_avro::Schema>,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = (source, schema);
        async { ConsumerOutcome::Success }
    }

    /// The events of `source` in this window (or this run of it) are done.
    fn on_end_source(&self, source: SourceId) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = source;
        async { ConsumerOutcome::Success }
    }

    /// One row change (decoded on demand through [`DataEvent::decode`], [`DataEvent::record`] or
    /// [`DataEvent::json`]; raw bytes through [`DataEvent::raw`]).
    fn on_event(&self, event: &DataEvent<'_>) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = event;
        async { ConsumerOutcome::Success }
    }

    /// Every row of `event.source()` is gone at the source (`change.cause`: `truncate` for TRUNCATE
    /// TABLE, `drop` for DROP TABLE): a consumer that keeps the source's rows removes them all. It
    /// arrives in its own window (online and catch-up), or in a consolidated delta before the rows
    /// written after it. Runs alone, after the events before it and before those after it, even with
    /// several workers. The default does nothing: override it if you keep rows.
    fn on_truncate(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = (event, change);
        async { ConsumerOutcome::Success }
    }

    /// The schema of `event.source()` changed at the source (`change.statement`, e.g. an ALTER TABLE):
    /// once in the statement's own window (`change.new_schema` is `None`: the source tells the new
    /// columns only with the next row) and again, with both ids, right before the first row written
    /// with the new schema. Runs alone, like [`DatabusConsumer::on_truncate`]. Default: nothing.
    fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = (event, change);
        async { ConsumerOutcome::Success }
    }

    /// The client is about to persist `checkpoint`: after every `checkpoint_every_windows` windows,
    /// after each phase change, and at shutdown for windows not yet persisted. Anything but success
    /// skips this persistence (the next one covers it). A consumer that keeps its checkpoint with its
    /// data commits both here (a batch of windows at once) and gives the client a
    /// [`CommittedOnCheckpoint`](crate::CommittedOnCheckpoint) store.
    fn on_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = checkpoint;
        async { ConsumerOutcome::Success }
    }

    /// A window failed and will be replayed from its start; undo any partial effect of it. `to` is the
    /// last checkpoint (everything up to it is consumed).
    fn on_rollback(&self, to: &Checkpoint) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = to;
        async { ConsumerOutcome::Success }
    }

    /// A failure the client handles (fetch errors it retries, failed windows, skipped events).
    fn on_error(&self, error: &ClientError) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = error;
        async { ConsumerOutcome::Success }
    }

    /// A bootstrap starts: snapshot (or consolidated delta) windows follow.
    fn on_start_bootstrap(
        &self,
        info: &BootstrapInfo,
    ) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = info;
        async { ConsumerOutcome::Success }
    }

    /// The snapshot phase is over; catch-up windows up to `target` follow.
    fn on_start_catchup(&self, target: Scn) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = target;
        async { ConsumerOutcome::Success }
    }

    /// The bootstrap is over: the consumer's state is the source's at `scn`; relay windows follow.
    fn on_end_bootstrap(&self, scn: Scn) -> impl Future<Output = ConsumerOutcome> + Send {
        let _ = scn;
        async { ConsumerOutcome::Success }
    }
}
