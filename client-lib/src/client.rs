//! [`DatabusClient`]: runs a [`DatabusConsumer`] (push) or yields a [`WindowStream`] (pull).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use apache_avro::Schema;
use databus_core::{Checkpoint, Opcode, SourceId};
use futures::FutureExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointStore;
use crate::fetcher::{Delivery, Fetcher};
use crate::pool::ServerPool;
use crate::stats::{ClientStats, Held};
use crate::transition::{StreamItem, Transition};
use crate::window::SchemaCache;
use crate::{
    ClientConfig, ClientError, ConsumerOutcome, DataEvent, DatabusConsumer, FailurePolicy,
    SkippedEvents, Window, WindowInfo,
};
use databus_http::backoff::Backoff;

/// A configured client: relays, bootstrap servers, checkpoint store, reader schemas.
///
/// ```no_run
/// # async fn demo() -> Result<(), databus_client::ClientError> {
/// use std::sync::Arc;
/// use databus_client::{ClientConfig, DatabusClient, DatabusConsumer, FileCheckpointStore};
///
/// struct Printer;
/// impl DatabusConsumer for Printer {
///     async fn on_event(&self, e: &databus_client::DataEvent<'_>) -> databus_client::ConsumerOutcome {
///         println!("{} {:?}", e.key(), e.json());
///         databus_client::ConsumerOutcome::Success
///     }
/// }
///
/// let config = ClientConfig::with_relays(["http://127.0.0.1:11000"]);
/// let store = Arc::new(FileCheckpointStore::new("state/checkpoint.json")?);
/// let client = DatabusClient::new(config, store)?;
/// let summary = client.run(Arc::new(Printer), tokio_util::sync::CancellationToken::new()).await?;
/// println!("{} windows", summary.windows);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DatabusClient {
    config: ClientConfig,
    store: Arc<dyn CheckpointStore>,
    readers: BTreeMap<SourceId, Arc<Schema>>,
    stats: Arc<ClientStats>,
}

impl std::fmt::Debug for DatabusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabusClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a [`DatabusClient::run`] did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Windows delivered (heartbeats included).
    pub windows: u64,
    /// Data events delivered (each counted once, however often it was replayed).
    pub events: u64,
    /// Window replays after a failure.
    pub retries: u64,
    /// The last persisted checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// Events skipped by the skip-and-record policy.
    pub skipped: Vec<SkippedEvents>,
}

impl DatabusClient {
    /// A client with a validated `config`, persisting checkpoints in `store`.
    pub fn new(config: ClientConfig, store: Arc<dyn CheckpointStore>) -> Result<Self, ClientError> {
        config.validate()?;
        Ok(DatabusClient {
            config,
            store,
            readers: BTreeMap::new(),
            stats: Arc::default(),
        })
    }

    /// Decodes events of `source` through `reader` (Avro schema resolution from each writer schema).
    pub fn with_reader_schema(mut self, source: SourceId, reader: Schema) -> Self {
        self.readers.insert(source, Arc::new(reader));
        self
    }

    /// The client's counters (shared by every run of this client and its clones).
    pub fn stats(&self) -> Arc<ClientStats> {
        self.stats.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn start_fetcher(
        &self,
        start: Option<Checkpoint>,
        shutdown: CancellationToken,
    ) -> Result<
        (
            mpsc::UnboundedReceiver<Delivery>,
            tokio::task::JoinHandle<()>,
        ),
        ClientError,
    > {
        let c = &self.config;
        let options = c.client_options()?;
        let relays = ServerPool::new(
            &c.relays,
            &options,
            c.fetch_backoff,
            c.max_fetch_failures,
            c.request_timeout,
            self.stats.clone(),
        )?;
        let bootstrap = if c.bootstrap_servers.is_empty() {
            None
        } else {
            Some(ServerPool::new(
                &c.bootstrap_servers,
                &options,
                c.fetch_backoff,
                c.max_fetch_failures,
                c.request_timeout,
                self.stats.clone(),
            )?)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut relays = relays;
        let mut bootstrap = bootstrap;
        relays.report_to(tx.clone());
        relays.set_body_limit(c.buffer_bytes);
        if let Some(b) = &mut bootstrap {
            b.report_to(tx.clone());
            b.set_body_limit(c.buffer_bytes);
        }
        let fetcher = Fetcher {
            stall: crate::stall::Stall::new(c.stall),
            config: c.clone(),
            relays,
            bootstrap,
            schemas: Arc::new(SchemaCache::new(self.readers.clone())),
            space: Arc::new(Semaphore::new(c.buffer_bytes.min(u32::MAX as usize))),
            tx,
            filter_query: c.filter_query(true),
            stats: self.stats.clone(),
        };
        let task = tokio::spawn(fetcher.run(start, shutdown));
        Ok((rx, task))
    }

    async fn load(&self) -> Result<Option<Checkpoint>, ClientError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| ClientError::Config(format!("checkpoint load task failed: {e}")))??)
    }

    /// Runs `consumer` from the stored checkpoint until `shutdown` is cancelled (returns `Ok`) or a
    /// definite error (returns it). Always calls `on_start_consumption` first and
    /// `on_stop_consumption` last.
    pub async fn run<C: DatabusConsumer>(
        &self,
        consumer: Arc<C>,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, ClientError> {
        let start = self.load().await?;
        let fetch_token = shutdown.child_token();
        let (rx, fetcher) = self.start_fetcher(start.clone(), fetch_token.clone())?;
        let mut dispatcher = Dispatcher {
            consumer: consumer.clone(),
            config: self.config.clone(),
            store: self.store.clone(),
            last: start.unwrap_or_else(Checkpoint::beginning),
            unpersisted: 0,
            summary: RunSummary::default(),
            pool: (self.config.workers > 1)
                .then(|| WorkerPool::start(&consumer, self.config.workers)),
        };
        let result = match call(consumer.on_start_consumption(), "on_start_consumption").await {
            Ok(()) => dispatcher.run(rx, &shutdown).await,
            Err(f) => Err(f.into_error(dispatcher.last.window_scn)),
        };
        fetch_token.cancel();
        let _ = fetcher.await;
        let result = match result {
            Ok(()) => dispatcher.flush().await,
            Err(e) => Err(e),
        };
        if let Some(pool) = dispatcher.pool.take() {
            pool.stop().await;
        }
        let _ = call(consumer.on_stop_consumption(), "on_stop_consumption").await;
        result.map(|()| dispatcher.summary)
    }

    /// The pull API: an async [`Stream`](futures::Stream) of whole windows from the stored checkpoint.
    /// Call [`WindowStream::commit`] with a window once it is processed to persist its checkpoint.
    pub async fn stream(&self, shutdown: CancellationToken) -> Result<WindowStream, ClientError> {
        let start = self.load().await?;
        let (rx, task) = self.start_fetcher(start, shutdown.child_token())?;
        Ok(WindowStream {
            rx,
            held: None,
            store: self.store.clone(),
            task,
        })
    }
}

/// Stores `cp`, on `spawn_blocking` unless the store says it does not block.
async fn store(store: &Arc<dyn CheckpointStore>, cp: &Checkpoint) -> Result<(), ClientError> {
    if !store.store_blocks() {
        return Ok(store.store(cp)?);
    }
    let (store, cp) = (store.clone(), cp.clone());
    tokio::task::spawn_blocking(move || store.store(&cp))
        .await
        .map_err(|e| ClientError::Config(format!("checkpoint store task failed: {e}")))??;
    Ok(())
}

/// Stores the checkpoint of a phase change ([`CheckpointStore::store_transition`]), on
/// `spawn_blocking`.
async fn store_transition(
    store: &Arc<dyn CheckpointStore>,
    cp: &Checkpoint,
) -> Result<(), ClientError> {
    let (store, cp) = (store.clone(), cp.clone());
    tokio::task::spawn_blocking(move || store.store_transition(&cp))
        .await
        .map_err(|e| ClientError::Config(format!("checkpoint store task failed: {e}")))??;
    Ok(())
}

/// A failed callback.
#[derive(Debug)]
enum Failure {
    Retry(String),
    Fatal(&'static str),
}

impl Failure {
    fn into_error(self, scn: databus_core::Scn) -> ClientError {
        match self {
            Failure::Fatal(callback) => ClientError::Fatal { callback, scn },
            Failure::Retry(last) => ClientError::RetriesExhausted {
                scn,
                attempts: 1,
                last,
            },
        }
    }
}

/// Awaits a callback, turning a panic into a failure.
async fn call(
    fut: impl Future<Output = ConsumerOutcome> + Send,
    name: &'static str,
) -> Result<(), Failure> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(ConsumerOutcome::Success) => Ok(()),
        Ok(ConsumerOutcome::Retry) => Err(Failure::Retry(format!("{name} returned retry"))),
        Ok(ConsumerOutcome::Fatal) => Err(Failure::Fatal(name)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".into());
            Err(Failure::Retry(format!("{name} panicked: {msg}")))
        }
    }
}

struct Dispatcher<C> {
    consumer: Arc<C>,
    config: ClientConfig,
    store: Arc<dyn CheckpointStore>,
    /// The last checkpoint reached (persisted unless `unpersisted > 0`).
    last: Checkpoint,
    unpersisted: u32,
    summary: RunSummary,
    /// The dispatch workers when `workers > 1`.
    pool: Option<WorkerPool>,
}

/// Events that failed in skip mode: `(index in window, reason)`.
type Skips = Vec<(usize, String)>;

impl<C: DatabusConsumer> Dispatcher<C> {
    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Delivery>,
        shutdown: &CancellationToken,
    ) -> Result<(), ClientError> {
        loop {
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                d = rx.recv() => d,
            };
            let Some(delivery) = delivery else {
                return Ok(());
            };
            let c = self.consumer.clone();
            match delivery {
                Delivery::Window(window, permit) => {
                    self.window(&window).await?;
                    drop(permit);
                }
                Delivery::StartBootstrap(info, cp) => {
                    self.phase(c.on_start_bootstrap(&info), "on_start_bootstrap", cp)
                        .await?;
                }
                Delivery::StartCatchup(target, cp) => {
                    self.phase(c.on_start_catchup(target), "on_start_catchup", cp)
                        .await?;
                }
                Delivery::EndBootstrap(scn, cp) => {
                    self.phase(c.on_end_bootstrap(scn), "on_end_bootstrap", cp)
                        .await?;
                }
                Delivery::Warning(e) => {
                    let _ = call(c.on_error(&e), "on_error").await;
                }
                Delivery::Failed(e) => {
                    let _ = call(c.on_error(&e), "on_error").await;
                    return Err(e);
                }
            }
        }
    }

    /// A phase change: its callback (a failure is fatal: phases are not replayed), then its checkpoint.
    async fn phase(
        &mut self,
        fut: impl Future<Output = ConsumerOutcome> + Send,
        name: &'static str,
        checkpoint: Checkpoint,
    ) -> Result<(), ClientError> {
        if let Err(f) = call(fut, name).await {
            let scn = checkpoint.window_scn;
            return Err(match f {
                Failure::Fatal(callback) => ClientError::Fatal { callback, scn },
                Failure::Retry(last) => ClientError::RetriesExhausted {
                    scn,
                    attempts: 1,
                    last,
                },
            });
        }
        self.last = checkpoint;
        self.persist_as(true).await
    }

    /// Persists the last checkpoint if any window is not yet persisted (at shutdown).
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.unpersisted > 0 {
            self.persist().await?;
        }
        Ok(())
    }

    async fn persist(&mut self) -> Result<(), ClientError> {
        self.persist_as(false).await
    }

    /// Persists the last checkpoint, as a phase change's (`transition`) or a window's.
    async fn persist_as(&mut self, transition: bool) -> Result<(), ClientError> {
        let cp = self.last.clone();
        if call(self.consumer.on_checkpoint(&cp), "on_checkpoint")
            .await
            .is_err()
        {
            tracing::debug!(scn = %cp.window_scn, "consumer declined the checkpoint");
            return Ok(());
        }
        if transition {
            store_transition(&self.store, &cp).await?;
        } else {
            store(&self.store, &cp).await?;
        }
        self.unpersisted = 0;
        self.summary.last_checkpoint = Some(cp);
        Ok(())
    }

    /// Delivers one window with retries, then checkpoints it.
    async fn window(&mut self, window: &Window) -> Result<(), ClientError> {
        let retry = self.config.retry;
        let mut backoff = Backoff::new(retry.backoff);
        let mut attempt = 0u32;
        loop {
            let skip_mode =
                attempt == retry.max_retries && retry.policy == FailurePolicy::SkipAndRecord;
            match self.attempt(window, attempt, skip_mode).await {
                Ok(skips) => {
                    if !skips.is_empty() {
                        self.record_skips(window, skips).await;
                    }
                    break;
                }
                Err(Failure::Fatal(callback)) => {
                    return Err(ClientError::Fatal {
                        callback,
                        scn: window.scn(),
                    });
                }
                Err(Failure::Retry(reason)) => {
                    let error = ClientError::RetriesExhausted {
                        scn: window.scn(),
                        attempts: attempt + 1,
                        last: reason.clone(),
                    };
                    if attempt >= retry.max_retries {
                        if retry.policy == FailurePolicy::SkipAndRecord {
                            // A window callback failed even in skip mode: the whole window is skipped.
                            self.record_skips(window, vec![(usize::MAX, reason)]).await;
                            break;
                        }
                        let _ = call(self.consumer.on_error(&error), "on_error").await;
                        return Err(error);
                    }
                    tracing::warn!(scn = %window.scn(), attempt, %reason, "window failed; rolling back and replaying");
                    let _ = call(self.consumer.on_error(&error), "on_error").await;
                    if let Err(Failure::Fatal(callback)) =
                        call(self.consumer.on_rollback(&self.last), "on_rollback").await
                    {
                        return Err(ClientError::Fatal {
                            callback,
                            scn: window.scn(),
                        });
                    }
                    self.summary.retries += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                    attempt += 1;
                }
            }
        }
        self.summary.windows += 1;
        self.summary.events += window.len() as u64;
        self.last = window.checkpoint().clone();
        self.unpersisted += 1;
        if self.unpersisted >= self.config.checkpoint_every_windows {
            self.persist().await?;
        }
        Ok(())
    }

    async fn record_skips(&mut self, window: &Window, skips: Skips) {
        let reason = skips.last().map(|s| s.1.clone()).unwrap_or_default();
        let events = skips
            .iter()
            .filter(|(i, _)| *i < window.len())
            .map(|(i, _)| {
                let e = window.event(*i);
                (e.source(), e.key().to_string(), *i)
            })
            .collect();
        let skipped = SkippedEvents {
            scn: window.scn(),
            events,
            reason,
        };
        tracing::error!(
            ?skipped,
            "skip-and-record: events skipped after every retry"
        );
        let error = ClientError::RetriesExhausted {
            scn: window.scn(),
            attempts: self.config.retry.max_retries + 1,
            last: format!("skipped and recorded: {skipped:?}"),
        };
        let _ = call(self.consumer.on_error(&error), "on_error").await;
        self.summary.skipped.push(skipped);
    }

    /// One attempt at a window. In skip mode, failed event callbacks are collected instead of failing
    /// the window.
    async fn attempt(
        &mut self,
        window: &Window,
        attempt: u32,
        skip_mode: bool,
    ) -> Result<Skips, Failure> {
        let info = WindowInfo {
            scn: window.scn(),
            timestamp_ns: window.timestamp_ns(),
            phase: window.phase(),
            events: window.len(),
            attempt,
        };
        let c = &*self.consumer;
        call(c.on_start_window(&info), "on_start_window").await?;
        let skips = match &mut self.pool {
            // A table event concerns every key: such a window is delivered in order by one task.
            Some(pool) if window.len() >= 2 && !window.events().any(|e| e.is_table_event()) => {
                Self::parallel(c, pool, window, skip_mode).await?
            }
            _ => serial(c, window, skip_mode).await?,
        };
        call(c.on_end_window(&info, window.checkpoint()), "on_end_window").await?;
        Ok(skips)
    }

    /// One attempt at a window's events on the workers: worker 0 is this task (it delivers its share
    /// after handing the others theirs), workers 1.. are the pool's tasks; each gets the indices of
    /// its keys' events as one batch, and the window waits for every worker's ack (the barrier).
    async fn parallel(
        c: &C,
        pool: &mut WorkerPool,
        window: &Window,
        skip_mode: bool,
    ) -> Result<Skips, Failure> {
        for &(source, first) in window.sources.iter() {
            let schema = window.event(first as usize).writer_schema();
            call(
                c.on_start_source(source, schema.as_deref()),
                "on_start_source",
            )
            .await?;
        }
        let workers = pool.senders.len() + 1;
        let buckets = NonZeroU32::new(workers as u32).expect("validated >= 1");
        let mut routes: Vec<Vec<u32>> = vec![Vec::new(); workers];
        for (i, event) in window.events().enumerate() {
            routes[databus_filters::bucket_of(event.key(), buckets) as usize].push(i as u32);
        }
        let mut first_failure = None;
        let fail = |f: Failure, first: &mut Option<Failure>| {
            if matches!(f, Failure::Fatal(_)) || first.is_none() {
                *first = Some(f);
            }
        };
        let mut routes = routes.into_iter();
        let own = routes.next().unwrap_or_default();
        let mut pending = 0;
        for (worker, indices) in routes.enumerate() {
            if indices.is_empty() {
                continue;
            }
            let batch = Batch {
                window: window.clone(),
                indices,
                skip_mode,
            };
            match pool.senders[worker].send(batch).await {
                Ok(()) => pending += 1,
                Err(_) => fail(
                    Failure::Retry(format!("dispatch worker {} is gone", worker + 1)),
                    &mut first_failure,
                ),
            }
        }
        let mut skips = Skips::new();
        match deliver(c, window, &own, skip_mode).await {
            Ok(s) => skips.extend(s),
            Err(f) => fail(f, &mut first_failure),
        }
        // The barrier: every worker acknowledges its batch before the window ends.
        for _ in 0..pending {
            match pool.acks.recv().await {
                Some(Ok(s)) => skips.extend(s),
                Some(Err(f)) => fail(f, &mut first_failure),
                None => {
                    fail(
                        Failure::Retry("every dispatch worker is gone".into()),
                        &mut first_failure,
                    );
                    break;
                }
            }
        }
        if let Some(f) = first_failure {
            return Err(f);
        }
        for &(source, _) in window.sources.iter() {
            call(c.on_end_source(source), "on_end_source").await?;
        }
        skips.sort_by_key(|s| s.0);
        Ok(skips)
    }
}

/// The events of one window that one worker delivers, in commit order.
struct Batch {
    window: Window,
    indices: Vec<u32>,
    skip_mode: bool,
}

/// A worker's answer to one [`Batch`].
type Ack = Result<Skips, Failure>;

/// The dispatch workers 1.. of one consumption run (worker 0 is the dispatching task itself):
/// spawned once, fed one batch per window each through a bounded channel, answering on a shared ack
/// channel. Dropping the pool closes the channels; the workers finish their batch and exit.
struct WorkerPool {
    senders: Vec<mpsc::Sender<Batch>>,
    acks: mpsc::Receiver<Ack>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerPool {
    /// A pool for `workers` workers in all (`workers - 1` tasks).
    fn start<C: DatabusConsumer>(consumer: &Arc<C>, workers: usize) -> WorkerPool {
        let tasks_wanted = workers.saturating_sub(1).max(1);
        // One batch in flight per worker (the window barrier) plus one ack each.
        let (ack_tx, acks) = mpsc::channel(tasks_wanted);
        let mut senders = Vec::with_capacity(tasks_wanted);
        let mut tasks = Vec::with_capacity(tasks_wanted);
        for _ in 0..tasks_wanted {
            let (tx, rx) = mpsc::channel(1);
            senders.push(tx);
            tasks.push(tokio::spawn(work(consumer.clone(), rx, ack_tx.clone())));
        }
        WorkerPool {
            senders,
            acks,
            tasks,
        }
    }

    /// Closes the workers' channels and waits for them to exit.
    async fn stop(self) {
        drop(self.senders);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A worker: delivers each batch's events in order and acks it.
async fn work<C: DatabusConsumer>(
    consumer: Arc<C>,
    mut batches: mpsc::Receiver<Batch>,
    acks: mpsc::Sender<Ack>,
) {
    while let Some(batch) = batches.recv().await {
        // Callback panics are caught by `call`; this catches anything else, so a batch is always acked.
        let ack = AssertUnwindSafe(deliver(
            &*consumer,
            &batch.window,
            &batch.indices,
            batch.skip_mode,
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Failure::Retry("dispatch worker panicked".into())));
        drop(batch);
        if acks.send(ack).await.is_err() {
            return;
        }
    }
}

/// Delivers the events `indices` of `window`, in order (one worker's share of a window).
async fn deliver<C: DatabusConsumer>(
    c: &C,
    window: &Window,
    indices: &[u32],
    skip_mode: bool,
) -> Result<Skips, Failure> {
    let mut skips = Skips::new();
    for &i in indices {
        let event = window.event(i as usize);
        match deliver_one(c, &event).await {
            Ok(()) => {}
            Err(Failure::Retry(reason)) if skip_mode => skips.push((i as usize, reason)),
            Err(f) => return Err(f),
        }
    }
    Ok(skips)
}

/// One event to its callback: row changes to `on_event`, table events to `on_truncate` or
/// `on_schema_change` (a table event whose payload does not parse is fatal: the server is broken).
async fn deliver_one<C: DatabusConsumer>(c: &C, event: &DataEvent<'_>) -> Result<(), Failure> {
    match event.table_change() {
        None => call(c.on_event(event), "on_event").await,
        Some(Err(e)) => {
            tracing::error!(error = %e, "a table event does not parse");
            Err(Failure::Fatal("table event payload"))
        }
        Some(Ok(change)) if event.opcode() == Opcode::Truncate => {
            call(c.on_truncate(event, &change), "on_truncate").await
        }
        Some(Ok(change)) => call(c.on_schema_change(event, &change), "on_schema_change").await,
    }
}

async fn serial<C: DatabusConsumer>(
    c: &C,
    window: &Window,
    skip_mode: bool,
) -> Result<Skips, Failure> {
    let mut skips = Skips::new();
    let mut current: Option<SourceId> = None;
    for (i, event) in window.events().enumerate() {
        if current != Some(event.source()) {
            if let Some(prev) = current {
                call(c.on_end_source(prev), "on_end_source").await?;
            }
            current = Some(event.source());
            let schema = event.writer_schema();
            call(
                c.on_start_source(event.source(), schema.as_deref()),
                "on_start_source",
            )
            .await?;
        }
        match deliver_one(c, &event).await {
            Ok(()) => {}
            Err(Failure::Retry(reason)) if skip_mode => skips.push((i, reason)),
            Err(f) => return Err(f),
        }
    }
    if let Some(prev) = current {
        call(c.on_end_source(prev), "on_end_source").await?;
    }
    Ok(skips)
}

/// The pull API: whole windows in commit order. Holding a window keeps its bytes counted against
/// `buffer_bytes` until the next one is asked for.
pub struct WindowStream {
    rx: mpsc::UnboundedReceiver<Delivery>,
    held: Option<Held>,
    store: Arc<dyn CheckpointStore>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WindowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStream").finish_non_exhaustive()
    }
}

impl WindowStream {
    /// Persists `window`'s checkpoint: it and everything before it are consumed.
    pub async fn commit(&self, window: &Window) -> Result<(), ClientError> {
        store(&self.store, window.checkpoint()).await
    }

    /// Persists the checkpoint of a phase change (as the push API does after `on_start_bootstrap`,
    /// `on_start_catchup` and `on_end_bootstrap`): after [`Transition::EndBootstrap`] the stored
    /// checkpoint is online at the bootstrap's target, not catch-up.
    pub async fn commit_transition(&self, transition: &Transition) -> Result<(), ClientError> {
        store_transition(&self.store, transition.checkpoint()).await
    }

    /// The next window or phase change (`None` when fetching stopped). Unlike the [`Stream`]
    /// implementation, which yields windows only, this tells when a snapshot is done and when a
    /// bootstrap is caught up even if no window follows (an idle source).
    ///
    /// [`Stream`]: futures::Stream
    pub async fn next_item(&mut self) -> Option<Result<StreamItem, ClientError>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Polls the next window, phase change or error.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<StreamItem, ClientError>>> {
        self.held = None;
        loop {
            let transition = match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Delivery::Window(window, permit))) => {
                    self.held = Some(permit);
                    return Poll::Ready(Some(Ok(StreamItem::Window(window))));
                }
                Poll::Ready(Some(Delivery::Failed(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Delivery::StartBootstrap(info, checkpoint))) => {
                    Transition::StartBootstrap { info, checkpoint }
                }
                Poll::Ready(Some(Delivery::StartCatchup(target, checkpoint))) => {
                    Transition::StartCatchup { target, checkpoint }
                }
                Poll::Ready(Some(Delivery::EndBootstrap(scn, checkpoint))) => {
                    Transition::EndBootstrap { scn, checkpoint }
                }
                // Warnings are logged where they happen.
                Poll::Ready(Some(Delivery::Warning(_))) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            return Poll::Ready(Some(Ok(StreamItem::Transition(transition))));
        }
    }
}

impl Drop for WindowStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for WindowStream {
    type Item = Result<Window, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.poll_item(cx) {
                Poll::Ready(Some(Ok(StreamItem::Window(window)))) => Poll::Ready(Some(Ok(window))),
                // Phase changes show in the windows' phase and checkpoints (`next_item` yields them).
                Poll::Ready(Some(Ok(StreamItem::Transition(_)))) => continue,
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
