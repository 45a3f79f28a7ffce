//! Bounds on the connections a server holds, so that idle, slow or hostile clients can exhaust neither
//! its file descriptors (which the process also needs for its own files and its source connection)
//! nor its memory.
//!
//! | limit | what it stops | default |
//! |---|---|---|
//! | `max_connections` | a flood of connections taking every file descriptor. At the cap a new connection takes the place of one without a request in progress: the oldest that never sent an accepted request (an idle or slowloris connection, one without a valid token), else the least recently active (an idle keep-alive, a client that stopped reading its response). When every connection has a request in progress (long polls), it gets a one-line `503 too_many_connections` and is closed. So a new consumer gets in while connections that do nothing hold the slots, and no request in progress is cut | 1024, and never more than the open-file limit minus [`FD_RESERVE`] |
//! | `header_read_timeout` | slowloris: a request's headers must arrive within it once they start; a connection that sends nothing at all is closed after it too | 10 s |
//! | `idle_timeout` | idle connections, and clients that stop reading a response (its buffered body is freed): closed when nothing was read or written for this long and no request is being handled | 60 s |
//! | `max_http2_streams` | many concurrent requests multiplexed on one cleartext HTTP/2 connection | 16 |

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// File descriptors kept for the process itself (state files, SQLite, the source's connection, logs)
/// when the connection cap is derived from the open-file limit.
pub const FD_RESERVE: usize = 128;

/// `[http.connections]`: bounds on the connections a server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// The most connections open at once. Further ones get `503 too_many_connections` and are closed
    /// until others end. Lowered at start to the process's open-file limit minus 128 when that is
    /// smaller. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client has to send a request's headers, from when it connects or its previous
    /// response ends. Default 10 s.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which nothing was read or written for this long while no request is being
    /// handled is closed (idle keep-alive connections, clients that stopped reading a response).
    /// Default 60 s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The most concurrent requests on one HTTP/2 connection. Default 16.
    #[serde(default = "default_max_http2_streams")]
    pub max_http2_streams: u32,
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_http2_streams() -> u32 {
    16
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_http2_streams: default_max_http2_streams(),
        }
    }
}

impl ConnectionLimits {
    /// Checks the values; `section` names the configuration section in the error.
    pub fn validate(&self, section: &str) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err(format!(
                "{section}.max_connections is 0; allow at least 1 connection"
            ));
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(format!("{section}.{name} is {value:?}; use at least 100ms"));
            }
        }
        if self.max_http2_streams == 0 {
            return Err(format!(
                "{section}.max_http2_streams is 0; allow at least 1"
            ));
        }
        Ok(())
    }

    /// `max_connections`, lowered to the open-file limit minus [`FD_RESERVE`] when that is smaller.
    pub fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) => self
                .max_connections
                .min(limit.saturating_sub(FD_RESERVE as u64).max(1) as usize),
            None => self.max_connections,
        }
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`), if known.
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What one connection shares with its watchdog: when bytes last moved, and how many requests are
/// being handled.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last read or write.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests started on the connection.
    requests: AtomicU64,
    /// Whether a request on it passed authentication (any request, without authentication).
    trusted: AtomicBool,
    /// Signalled when the connection is displaced by a newer one at the cap.
    evicted: tokio::sync::Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            evicted: tokio::sync::Notify::new(),
        })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        // Relaxed: a timestamp read by the watchdog; a slightly stale value only delays a close.
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection should be closed as idle: no request being handled, and no bytes moved
    /// for `before_first` while no request ever came (a client that connects and sends nothing), or
    /// for `timeout` after one.
    pub(crate) fn idle(&self, before_first: Duration, timeout: Duration) -> bool {
        // Relaxed: see `touch`; the counters are read on their own.
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let limit = if self.requests.load(Ordering::Relaxed) == 0 {
            before_first
        } else {
            timeout
        };
        self.in_flight.load(Ordering::Relaxed) == 0 && self.origin.elapsed() >= last + limit
    }

    /// Marks the connection as one that sent an accepted request: it is never displaced.
    pub(crate) fn trust(&self) {
        // Relaxed: read under the registry's lock, which orders nothing else.
        self.trusted.store(true, Ordering::Relaxed);
    }

    /// Completes when the connection was displaced (see [`Registry::admit`]).
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }

    fn evictable(&self) -> bool {
        // Relaxed: a decision taken on the values of the moment.
        !self.trusted.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Counts a request being handled until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// The open connections of one server, bounded by `max`.
#[derive(Debug)]
pub(crate) struct Registry {
    max: usize,
    open: Mutex<(u64, BTreeMap<u64, Arc<Activity>>)>,
    /// Connections whose task has not ended: those in `open` and those displaced but still closing.
    /// Bounded by `max` plus a quarter, so that a flood displacing faster than closed connections
    /// wind down cannot take more descriptors.
    alive: AtomicUsize,
}

/// A connection's place in the [`Registry`], given back when dropped.
pub(crate) struct Admitted {
    registry: Arc<Registry>,
    id: u64,
}

impl Registry {
    pub(crate) fn new(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max,
            open: Mutex::new((0, BTreeMap::new())),
            alive: AtomicUsize::new(0),
        })
    }

    /// A place for a new connection: a free one, else the place of a connection without a request in
    /// progress (which is told to close): the oldest that never sent an accepted request, else the
    /// least recently active. `None` when every connection has a request in progress: the new one is
    /// refused.
    pub(crate) fn admit(self: &Arc<Self>, activity: &Arc<Activity>) -> Option<Admitted> {
        // The map is only ever updated whole under the lock: a poisoned lock still holds a valid map.
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        // Relaxed: updated under the lock (admit) or on its own (drop); a stale value errs either way
        // by one connection.
        if self.alive.load(Ordering::Relaxed) >= self.max + self.max.div_ceil(4) {
            return None;
        }
        if open.len() >= self.max {
            // The oldest connection that never sent an accepted request, else the one with no request
            // in progress that moved bytes least recently (an idle keep-alive, a client that stopped
            // reading). Connections with a request in progress (long polls) keep their place.
            let victim = open
                .iter()
                .find(|(_, a)| a.evictable())
                .or_else(|| {
                    open.iter()
                        .filter(|(_, a)| a.in_flight.load(Ordering::Relaxed) == 0)
                        .min_by_key(|(_, a)| a.last_ms.load(Ordering::Relaxed))
                })
                .map(|(&id, _)| id)?;
            if let Some(a) = open.remove(&victim) {
                a.evicted.notify_one();
            }
        }
        let id = *next;
        *next += 1;
        open.insert(id, activity.clone());
        self.alive.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            registry: self.clone(),
            id,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut guard = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&self.id);
        self.registry.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request being handled (see [`Activity::request`]).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An I/O stream that records its activity.
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        activity.touch();
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The answer to a connection over the cap, written once without waiting, before closing it.
pub(crate) fn too_many_connections(max: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": "too_many_connections",
        "message": format!(
            "the server holds its maximum of {max} connections (http.connections.max_connections); retry shortly"
        ),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         {}: too_many_connections\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::ERROR_HEADER,
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_over_the_cap_is_a_whole_json_503() {
        let text = String::from_utf8(too_many_connections(7)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("max_connections")
        );
    }

    #[test]
    fn at_the_cap_an_idle_connection_gives_its_place_untrusted_first() {
        let registry = Registry::new(3);
        let conns: Vec<_> = (0..3).map(|_| Activity::new()).collect();
        let mut places: Vec<_> = conns.iter().map(|a| registry.admit(a).unwrap()).collect();
        // 0: a consumer (trusted); 1: busy with a request; 2: silent.
        conns[0].trust();
        let busy = conns[1].request();
        let newcomer = Activity::new();
        let place = registry
            .admit(&newcomer)
            .expect("the silent one gives its place");
        assert_eq!(registry.open.lock().unwrap().1.len(), 3);
        // Told to close: its `evicted` completes at once.
        futures_lite_block_on(conns[2].evicted());
        drop(places.pop());
        places.push(place);
        // Now every connection is trusted or busy (the newcomer is silent: it goes first).
        let another = Activity::new();
        let p = registry
            .admit(&another)
            .expect("the silent newcomer gives its place");
        futures_lite_block_on(newcomer.evicted());
        // Its task ends (the place counts until then).
        drop(places.pop());
        another.trust();
        // No untrusted connection is left; 1 is busy: the least recently active idle one (0) gives
        // its place.
        let third = Activity::new();
        let q = registry
            .admit(&third)
            .expect("an idle trusted connection gives its place");
        futures_lite_block_on(conns[0].evicted());
        drop(places.remove(0));
        // Every connection has a request in progress: refused.
        let busy_third = third.request();
        let busy_another = another.request();
        assert!(
            registry.admit(&Activity::new()).is_none(),
            "all busy: refused"
        );
        drop((busy, busy_third, busy_another, q, p, places));
        assert!(
            registry.admit(&Activity::new()).is_some(),
            "a freed place is taken"
        );
    }

    #[test]
    fn displaced_connections_count_until_they_are_closed() {
        let registry = Registry::new(4);
        let mut places: Vec<_> = (0..4)
            .map(|_| registry.admit(&Activity::new()).unwrap())
            .collect();
        // Each newcomer displaces an idle one, but the displaced ones have not closed yet: at 4 + 1
        // connections alive, further ones are refused until some close.
        places.push(registry.admit(&Activity::new()).expect("one displacement"));
        assert!(registry.admit(&Activity::new()).is_none());
        drop(places.remove(0));
        assert!(registry.admit(&Activity::new()).is_some());
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), f)
                    .await
                    .unwrap()
            })
    }

    #[test]
    fn the_open_file_limit_is_read_and_caps_connections() {
        let limit = open_file_limit().expect("/proc/self/limits");
        let limits = ConnectionLimits {
            max_connections: usize::MAX,
            ..ConnectionLimits::default()
        };
        assert_eq!(
            limits.effective_max_connections() as u64,
            limit.saturating_sub(FD_RESERVE as u64).max(1)
        );
    }
}
