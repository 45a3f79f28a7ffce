//! Read-ahead: the connector reads and decodes the source's log on its own thread (a task, on a
//! current-thread runtime) while the pipeline encodes and appends what it read before, so the two
//! run on two cores instead of taking turns.
//!
//! The reader owns the connector for one connection: from a successful `start` until the
//! connector ends, fails, or the pipeline stops it; then it hands the connector back (for the next
//! `start` or `shutdown`). It forwards everything in order: events, then the error or end that stopped
//! it, which the pipeline handles after the events before it, exactly as if it had read them itself.
//!
//! | concern | how |
//! |---------|-----|
//! | memory | at most [`READ_AHEAD_CHANGES`] row changes read and not yet written (a larger transaction alone, as before: a window is never split) |
//! | acknowledgement | the pipeline publishes the SCN its state file holds ([`ReadAhead::durable`]); the reader tells the connector before it asks for its next event, so the source is never told more than the file holds |
//! | hand-over | in bursts: when the connector would wait for the source, when [`HELD_ITEMS`] events are held, or when the budget runs out (so the pipeline is woken once per burst while the reader catches up, and at once at the live edge) |
//! | lag gauge | set by the reader after each event |
//! | stop | the pipeline cancels the reader's token; the reader returns between events (what it read ahead and the pipeline did not write is read again after the restart: the state file is behind it) |

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use databus_connectors::{ConnectorError, ConnectorEvent, SourceConnector};
use databus_core::Scn;
use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Row changes read ahead of the pipeline at most (a transaction larger than this is read alone).
pub(crate) const READ_AHEAD_CHANGES: usize = 16 * 1024;

/// Events the reader holds at most before handing them over (see [`Reader::run`]).
const HELD_ITEMS: usize = 256;

/// What the reader forwards: an event (with its share of the read-ahead budget, returned when the
/// pipeline drops it), the connector's end of stream, or the error that stopped it.
pub(crate) enum Item {
    Event(ConnectorEvent, OwnedSemaphorePermit),
    End,
    Failed(ConnectorError),
}

/// The pipeline's side of one connection's reader.
pub(crate) struct ReadAhead<C> {
    items: mpsc::UnboundedReceiver<Item>,
    durable: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<C>,
}

impl<C: SourceConnector + 'static> ReadAhead<C> {
    /// Starts reading from `connector`, which must be started. `durable` is the SCN the state file
    /// holds (already acknowledged to the connector).
    pub(crate) fn spawn(connector: C, name: &str, durable: Scn) -> Self {
        let (tx, items) = mpsc::unbounded_channel();
        let durable = Arc::new(AtomicU64::new(durable.get()));
        let stop = CancellationToken::new();
        let reader = Reader {
            connector,
            items: tx,
            durable: durable.clone(),
            acknowledged: durable.load(Ordering::Relaxed),
            budget: Arc::new(Semaphore::new(READ_AHEAD_CHANGES)),
            stop: stop.clone(),
            lag: m::source_log_lag_gauge(name),
        };
        // On a multi-threaded runtime the reader gets a thread of its own (from the blocking pool;
        // the runtime's workers still drive its socket and timers). As an ordinary task it would
        // mostly run on the pipeline's worker: a task woken by another runs next on the waker's
        // worker and is not stolen from there, so reader and pipeline took turns on one core
        // (measured: 1.48 s of CPU on one worker, 0.11 s on the other, docs/BENCHMARKS.md).
        let runtime = tokio::runtime::Handle::current();
        let task = match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::spawn_blocking(move || runtime.block_on(reader.run()))
            }
            _ => tokio::spawn(reader.run()),
        };
        ReadAhead {
            items,
            durable,
            stop,
            task,
        }
    }

    /// Waits for what the reader forwarded and moves all of it (at most `limit` items) into `into`.
    /// Returns 0 only if the reader is gone without saying why (it panicked).
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<Item>, limit: usize) -> usize {
        self.items.recv_many(into, limit).await
    }

    /// Tells the reader what the state file holds now, for the connector's acknowledgement.
    pub(crate) fn durable(&self, scn: Scn) {
        self.durable.fetch_max(scn.get(), Ordering::Relaxed);
    }

    /// Stops the reader and takes the connector back. `None` if the reader panicked.
    pub(crate) async fn stop(self) -> Option<C> {
        self.stop.cancel();
        drop(self.items);
        self.task.await.ok()
    }
}

struct Reader<C> {
    connector: C,
    items: mpsc::UnboundedSender<Item>,
    durable: Arc<AtomicU64>,
    acknowledged: u64,
    budget: Arc<Semaphore>,
    stop: CancellationToken,
    lag: Gauge,
}

impl<C: SourceConnector> Reader<C> {
    async fn run(mut self) -> C {
        // One cancellation future for the whole run: a fresh one per event would check the token
        // under its lock and register a waiter every time.
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);
        // Events read but not yet handed over: sent in one burst when the connector would wait for
        // the source (or HELD_ITEMS pile up, or the budget runs out), so a pipeline that keeps up is
        // woken once per burst instead of once per event while the reader catches up; at the live
        // edge every event still goes over as soon as it is read.
        let mut held = Vec::with_capacity(HELD_ITEMS);
        loop {
            let durable = self.durable.load(Ordering::Relaxed);
            if durable > self.acknowledged {
                self.acknowledged = durable;
                self.connector.acknowledge(Scn::new(durable));
            }
            let next = {
                let next = self.connector.next_event();
                tokio::pin!(next);
                // Poll once: ready means the connector had it (or its bytes) at hand.
                match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    Poll::Ready(next) => Some(next),
                    Poll::Pending if !hand_over(&self.items, &mut held) => None,
                    Poll::Pending => tokio::select! {
                        biased;
                        () = &mut stopped => None,
                        next = next => Some(next),
                    },
                }
            };
            let Some(next) = next else {
                return self.connector;
            };
            let item = match next {
                Ok(Some(event)) => {
                    if let Some(lag) = self.connector.source_lag_bytes() {
                        self.lag.set(lag as f64);
                    }
                    let cost = match &event {
                        ConnectorEvent::Transaction(tx) => {
                            tx.changes.len().clamp(1, READ_AHEAD_CHANGES)
                        }
                        _ => 1,
                    };
                    let permit = match self.budget.clone().try_acquire_many_owned(cost as u32) {
                        Ok(permit) => permit,
                        Err(_) => {
                            // Out of budget: what is held must go first, for the pipeline to
                            // write and return budget.
                            if !hand_over(&self.items, &mut held) {
                                return self.connector;
                            }
                            tokio::select! {
                                biased;
                                () = &mut stopped => return self.connector,
                                permit = self.budget.clone().acquire_many_owned(cost as u32) => {
                                    permit.expect("the budget is never closed")
                                }
                            }
                        }
                    };
                    Item::Event(event, permit)
                }
                Ok(None) => Item::End,
                Err(e) => Item::Failed(e),
            };
            let last = !matches!(item, Item::Event(..));
            held.push(item);
            if (last || held.len() >= HELD_ITEMS)
                && (!hand_over(&self.items, &mut held) || last || self.stop.is_cancelled())
            {
                return self.connector;
            }
        }
    }
}

/// Sends everything in `held`, in order. False if the pipeline is gone.
fn hand_over(items: &mpsc::UnboundedSender<Item>, held: &mut Vec<Item>) -> bool {
    held.drain(..).all(|item| items.send(item).is_ok())
}
