//! What the HTTP layer needs from an event buffer, and a simple locked in-memory implementation.
//!
//! [`EventStore`] is the narrow interface the `stream` and `status` endpoints are written against: read
//! whole frames after a [`Checkpoint`] within a byte budget, wait (without polling) for data after a
//! checkpoint, and report statistics. The relay's lock-free buffer (`databus-buffer`) implements it; so
//! does [`MemoryStore`], a `Mutex<VecDeque>` of whole windows used by tests and as the reference the
//! HTTP behaviour is specified against.
//!
//! Read semantics (shared by every implementation):
//!
//! - windows are delivered whole and in SCN order; a read may stop mid-window when the budget is spent
//!   and says so in the returned checkpoint (`window_offset = Some(k)`: the first `k` events of the window
//!   were delivered or filtered out);
//! - filtered-out events still advance the checkpoint; end-of-window markers always pass the filter;
//! - a read returns at most `budget` bytes, but always at least one event if one is available;
//! - `prev_scn` is the SCN of the last evicted window: a checkpoint after `S` with `S >= prev_scn` is
//!   served from the oldest window held (nothing was missed); `S < prev_scn` (or a mid-window checkpoint
//!   in an evicted window) is [`StoreError::ScnNotFound`], carrying the buffer's range;
//! - a checkpoint at or after the newest window reads nothing; [`EventStore::wait_for_data_after`] then
//!   waits for the writer to publish a newer window.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use databus_core::{Checkpoint, Event, EventBuilder, EventView, FrameHeader, KeyRef, Scn};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A predicate on an event's header and key, run while scanning; filtered-out events are not copied.
pub type EventFilter<'a> = &'a (dyn Fn(&FrameHeader, KeyRef<'_>) -> bool + Sync);

/// A boxed future, for the object-safe [`EventStore`] trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Where the next read continues.
    pub next: Checkpoint,
    /// Frames copied into the output.
    pub events: usize,
    /// Frames scanned, including filtered-out ones.
    pub scanned: usize,
    /// Whether more data was immediately available when the read stopped.
    pub more: bool,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The checkpoint is older than what the buffer holds: the consumer must bootstrap.
    #[error(
        "no events after SCN {requested} in this buffer (it holds {}..={}, the last evicted window is {}); bootstrap from a snapshot",
        fmt_scn(*min_scn), fmt_scn(*max_scn), fmt_scn(*prev_scn)
    )]
    ScnNotFound {
        /// The checkpoint's SCN.
        requested: Scn,
        /// Oldest SCN held.
        min_scn: Option<Scn>,
        /// Newest SCN held.
        max_scn: Option<Scn>,
        /// SCN of the last evicted window.
        prev_scn: Option<Scn>,
    },
    /// The buffer holds bytes that are not a valid frame: a bug, never bad input.
    #[error("event buffer is corrupt: {0}")]
    Corrupt(String),
}

fn fmt_scn(scn: Option<Scn>) -> String {
    scn.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// Statistics of one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Oldest SCN held.
    pub min_scn: Option<Scn>,
    /// Newest SCN held.
    pub max_scn: Option<Scn>,
    /// SCN of the last evicted window.
    pub prev_scn: Option<Scn>,
    /// Bytes of frames held.
    pub bytes: u64,
    /// Frames held (including end-of-window markers).
    pub events: u64,
    /// Whole windows held.
    pub windows: u64,
    /// Byte capacity.
    pub capacity_bytes: u64,
    /// Commit timestamp (ns since the epoch) of the newest window, for lag.
    pub last_timestamp_ns: Option<u64>,
}

/// A buffer the HTTP layer can stream from. See the [module docs](self) for the read semantics.
pub trait EventStore: Send + Sync + 'static {
    /// Appends to `out` the frames after `from` that pass `filter`, at most `budget_bytes` bytes (at least
    /// one frame if one is available).
    fn read(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: EventFilter<'_>,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StoreError>;

    /// Resolves `true` as soon as data after `from` is available, `false` at `deadline`. Woken by the
    /// writer, never by polling.
    fn wait_for_data_after<'a>(
        &'a self,
        from: &'a Checkpoint,
        deadline: Instant,
    ) -> BoxFuture<'a, bool>;

    /// Current statistics.
    fn stats(&self) -> StoreStats;
}

/// Why [`MemoryStore::append_window`] refused a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The window's SCN is not after the newest window.
    #[error("window SCN {got} is not after the newest window {last}")]
    ScnRegression {
        /// Newest SCN held.
        last: Scn,
        /// The refused SCN.
        got: Scn,
    },
    /// The window alone exceeds the capacity.
    #[error("window of {window_bytes} bytes exceeds the buffer capacity of {capacity_bytes} bytes")]
    WindowTooLarge {
        /// Bytes of the window.
        window_bytes: u64,
        /// Capacity.
        capacity_bytes: u64,
    },
}

#[derive(Debug)]
struct Window {
    scn: Scn,
    timestamp_ns: u64,
    bytes: u64,
    frames: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    windows: VecDeque<Window>,
    prev_scn: Option<Scn>,
    last_scn: Option<Scn>,
    bytes: u64,
    events: u64,
}

/// A locked in-memory [`EventStore`] of whole windows: the reference implementation, for tests.
#[derive(Debug)]
pub struct MemoryStore {
    capacity_bytes: u64,
    state: Mutex<MemoryState>,
    notify: Notify,
    waiting: AtomicUsize,
}

/// Decrements the waiter count when a wait ends (also when its future is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Relaxed: a statistic, no memory it publishes.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MemoryStore {
    /// An empty store holding at most `capacity_bytes` of frames.
    pub fn new(capacity_bytes: u64) -> Arc<Self> {
        Arc::new(MemoryStore {
            capacity_bytes,
            state: Mutex::new(MemoryState::default()),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// How many readers are waiting in [`EventStore::wait_for_data_after`] (registered for a wake-up),
    /// so tests can wait for a long poll to be parked before publishing.
    pub fn waiting_readers(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave the state half-updated (updates are a few field
        // assignments after all checks), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a whole window: `events` (their SCN and timestamp are set to the window's) and its end
    /// marker, evicting the oldest windows as needed, then wakes long-polling readers.
    pub fn append_window(
        &self,
        scn: Scn,
        timestamp_ns: u64,
        events: &[Event],
    ) -> Result<(), AppendError> {
        let mut frames = Vec::with_capacity(events.len() + 1);
        for event in events {
            let mut event = event.clone();
            event.scn = scn;
            event.timestamp_ns = timestamp_ns;
            frames.push(event.to_frame());
        }
        let mut end = Vec::new();
        EventBuilder::end_of_window(scn, timestamp_ns).write_to_vec(&mut end);
        frames.push(end);
        let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        if bytes > self.capacity_bytes {
            return Err(AppendError::WindowTooLarge {
                window_bytes: bytes,
                capacity_bytes: self.capacity_bytes,
            });
        }
        {
            let mut st = self.lock();
            if let Some(last) = st.last_scn.filter(|last| scn <= *last) {
                return Err(AppendError::ScnRegression { last, got: scn });
            }
            while st.bytes + bytes > self.capacity_bytes {
                let Some(old) = st.windows.pop_front() else {
                    break;
                };
                st.bytes -= old.bytes;
                st.events -= old.frames.len() as u64;
                st.prev_scn = Some(old.scn);
            }
            st.bytes += bytes;
            st.events += frames.len() as u64;
            st.last_scn = Some(scn);
            st.windows.push_back(Window {
                scn,
                timestamp_ns,
                bytes,
                frames,
            });
        }
        self.notify.notify_waiters();
        Ok(())
    }

    fn has_data_after(&self, from: &Checkpoint) -> bool {
        let st = self.lock();
        match st.windows.back() {
            None => false,
            Some(last) => match from.window_offset {
                None => last.scn > from.window_scn,
                Some(k) => {
                    last.scn > from.window_scn
                        || (last.scn == from.window_scn && last.frames.len() > k as usize)
                }
            },
        }
    }
}

impl EventStore for MemoryStore {
    fn read(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: EventFilter<'_>,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, StoreError> {
        let st = self.lock();
        let s = from.window_scn;
        let not_found = || StoreError::ScnNotFound {
            requested: s,
            min_scn: st.windows.front().map(|w| w.scn),
            max_scn: st.windows.back().map(|w| w.scn),
            prev_scn: st.prev_scn,
        };
        if let Some(prev) = st.prev_scn {
            let missed = match from.window_offset {
                None => s < prev,
                Some(_) => s <= prev,
            };
            if missed {
                return Err(not_found());
            }
        }
        let start = st.windows.partition_point(|w| match from.window_offset {
            None => w.scn <= s,
            Some(_) => w.scn < s,
        });
        if let Some(k) = from.window_offset {
            // A mid-window checkpoint must name a window this buffer holds (or one not yet written).
            let held = st.windows.get(start).is_some_and(|w| w.scn == s);
            let future = st.windows.back().is_none_or(|w| w.scn < s);
            if !held && !future {
                return Err(not_found());
            }
            if held && st.windows[start].frames.len() < k as usize {
                return Err(StoreError::Corrupt(format!(
                    "checkpoint offset {k} is past the end of window {s}"
                )));
            }
        }
        let mut next = from.clone();
        let (mut events, mut scanned, mut used) = (0usize, 0usize, 0usize);
        for window in st.windows.iter().skip(start) {
            let skip = match from.window_offset {
                Some(k) if window.scn == s => k as usize,
                _ => 0,
            };
            for frame in window.frames.iter().skip(skip) {
                let (view, _) =
                    EventView::parse(frame).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let end = view.opcode().is_end_of_window();
                let pass = end || filter(view.header(), view.key());
                if pass {
                    if events > 0 && used + frame.len() > budget_bytes {
                        return Ok(ReadOutcome {
                            next,
                            events,
                            scanned,
                            more: true,
                        });
                    }
                    out.extend_from_slice(frame);
                    used += frame.len();
                    events += 1;
                }
                scanned += 1;
                let step = if end {
                    next.on_end_of_window(window.scn)
                } else {
                    next.on_event(window.scn)
                };
                step.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
        }
        Ok(ReadOutcome {
            next,
            events,
            scanned,
            more: false,
        })
    }

    fn wait_for_data_after<'a>(
        &'a self,
        from: &'a Checkpoint,
        deadline: Instant,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            // Relaxed: a statistic, no memory it publishes.
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let _waiting = Waiting(&self.waiting);
            loop {
                let notified = self.notify.notified();
                tokio::pin!(notified);
                // Register before checking, so a window published in between still wakes us.
                notified.as_mut().enable();
                if self.has_data_after(from) {
                    return true;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return self.has_data_after(from);
                }
            }
        })
    }

    fn stats(&self) -> StoreStats {
        let st = self.lock();
        StoreStats {
            min_scn: st.windows.front().map(|w| w.scn),
            max_scn: st.windows.back().map(|w| w.scn),
            prev_scn: st.prev_scn,
            bytes: st.bytes,
            events: st.events,
            windows: st.windows.len() as u64,
            capacity_bytes: self.capacity_bytes,
            last_timestamp_ns: st.windows.back().map(|w| w.timestamp_ns),
        }
    }
}
