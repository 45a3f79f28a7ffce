//! Counters of a client, readable while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::OwnedSemaphorePermit;

/// Counters shared by a client's fetcher and consumer side. All are monotonic except
/// `buffered_bytes` and `stalled`. Relaxed atomics: each is an independent statistic, read for reporting and tests.
#[derive(Debug, Default)]
pub struct ClientStats {
    requests: AtomicU64,
    failed_requests: AtomicU64,
    fetched_windows: AtomicU64,
    buffered_bytes: AtomicU64,
    max_buffered_bytes: AtomicU64,
    stalled_rounds: AtomicU64,
    stalled: AtomicBool,
}

impl ClientStats {
    /// Requests answered (stream, schema and status requests).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that failed (and were failed over / retried).
    pub fn failed_requests(&self) -> u64 {
        self.failed_requests.load(Ordering::Relaxed)
    }

    /// Whole windows fetched (handed to the consumer side).
    pub fn fetched_windows(&self) -> u64 {
        self.fetched_windows.load(Ordering::Relaxed)
    }

    /// Bytes of windows fetched and not yet consumed.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes.load(Ordering::Relaxed)
    }

    /// The most `buffered_bytes` ever reached.
    pub fn max_buffered_bytes(&self) -> u64 {
        self.max_buffered_bytes.load(Ordering::Relaxed)
    }

    /// Rounds spent waiting because no server could serve the checkpoint yet (see
    /// [`StallConfig`](crate::StallConfig)).
    pub fn stalled_rounds(&self) -> u64 {
        self.stalled_rounds.load(Ordering::Relaxed)
    }

    /// Whether the client is waiting right now because no server can serve its checkpoint yet.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    pub(crate) fn on_stall_round(&self) {
        self.stalled_rounds.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    pub(crate) fn on_request(&self, ok: bool) {
        if ok {
            self.requests.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Buffer space held by one fetched window; released (and accounted) on drop.
#[derive(Debug)]
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    stats: Arc<ClientStats>,
}

impl Held {
    pub(crate) fn new(permit: OwnedSemaphorePermit, bytes: u64, stats: Arc<ClientStats>) -> Held {
        let now = stats.buffered_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        stats.max_buffered_bytes.fetch_max(now, Ordering::Relaxed);
        stats.fetched_windows.fetch_add(1, Ordering::Relaxed);
        Held {
            _permit: permit,
            bytes,
            stats,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats
            .buffered_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
