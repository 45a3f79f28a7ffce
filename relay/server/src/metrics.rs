//! The relay's metrics, through the `metrics` facade. Every name is documented in
//! `docs/operations.md`; labels are bounded (buffer names from the configuration, error codes).

use metrics::{Counter, Gauge, counter, gauge};

use databus_buffer::BufferStats;

/// `databus_relay_stream_requests_total{buffer, format}`.
pub(crate) fn stream_request(buffer: &str, json: bool) {
    let format = if json { "json" } else { "binary" };
    counter!("databus_relay_stream_requests_total", "buffer" => buffer.to_owned(), "format" => format)
        .increment(1);
}

/// `databus_relay_events_out_total{buffer}` (frames, end markers included),
/// `databus_relay_windows_out_total{buffer}` and `databus_relay_bytes_out_total{buffer}`.
pub(crate) fn stream_out(buffer: &str, events: u64, windows: u64, bytes: usize) {
    counter!("databus_relay_windows_out_total", "buffer" => buffer.to_owned()).increment(windows);
    counter!("databus_relay_events_out_total", "buffer" => buffer.to_owned()).increment(events);
    counter!("databus_relay_bytes_out_total", "buffer" => buffer.to_owned())
        .increment(bytes as u64);
}

/// `databus_relay_scn_not_found_total{buffer}`.
pub(crate) fn scn_not_found(buffer: &str) {
    counter!("databus_relay_scn_not_found_total", "buffer" => buffer.to_owned()).increment(1);
}

/// `databus_relay_state_write_failures_total{buffer}`.
pub(crate) fn state_write_failed(buffer: &str) {
    counter!("databus_relay_state_write_failures_total", "buffer" => buffer.to_owned())
        .increment(1);
}

/// `databus_relay_http_errors_total{kind}`.
pub(crate) fn http_error(kind: &'static str) {
    counter!("databus_relay_http_errors_total", "kind" => kind).increment(1);
}

/// `databus_relay_events_in_total{buffer}`, `databus_relay_bytes_in_total{buffer}`,
/// `databus_relay_windows_in_total{buffer}`: registered once per pipeline (looking a labelled counter
/// up costs more than the increment, and this runs for every window).
pub(crate) struct IngestCounters {
    events: Counter,
    bytes: Counter,
    windows: Counter,
}

impl IngestCounters {
    pub(crate) fn new(buffer: &str) -> Self {
        IngestCounters {
            events: counter!("databus_relay_events_in_total", "buffer" => buffer.to_owned()),
            bytes: counter!("databus_relay_bytes_in_total", "buffer" => buffer.to_owned()),
            windows: counter!("databus_relay_windows_in_total", "buffer" => buffer.to_owned()),
        }
    }

    /// One window of `events` events and `bytes` bytes written.
    pub(crate) fn window(&self, events: u64, bytes: u64) {
        self.events.increment(events);
        self.bytes.increment(bytes);
        self.windows.increment(1);
    }
}

/// `databus_relay_source_log_lag_bytes{buffer}`: how far the position the source retains for this
/// relay is behind its log (a PostgreSQL slot's WAL), when the connector knows it. Registered once
/// per connection's reader, set after every event.
pub(crate) fn source_log_lag_gauge(buffer: &str) -> Gauge {
    gauge!("databus_relay_source_log_lag_bytes", "buffer" => buffer.to_owned())
}

/// Gauges of one buffer, refreshed at each scrape.
pub(crate) fn buffer_gauges(buffer: &str, stats: &BufferStats, last_timestamp_ns: Option<u64>) {
    let b = buffer.to_owned();
    let scn = |s: Option<databus_core::Scn>| s.map_or(0.0, |s| s.get() as f64);
    gauge!("databus_relay_buffer_min_scn", "buffer" => b.clone()).set(scn(stats.min_scn));
    gauge!("databus_relay_buffer_max_scn", "buffer" => b.clone()).set(scn(stats.max_scn));
    gauge!("databus_relay_buffer_prev_scn", "buffer" => b.clone()).set(scn(stats.prev_scn));
    gauge!("databus_relay_buffer_bytes", "buffer" => b.clone()).set(stats.bytes_held as f64);
    gauge!("databus_relay_buffer_events", "buffer" => b.clone()).set(stats.events_held as f64);
    gauge!("databus_relay_buffer_capacity_bytes", "buffer" => b.clone())
        .set(stats.capacity_bytes as f64);
    let fill = if stats.capacity_bytes == 0 {
        0.0
    } else {
        stats.bytes_held as f64 / stats.capacity_bytes as f64
    };
    gauge!("databus_relay_buffer_fill_ratio", "buffer" => b.clone()).set(fill);
    if let Some(ts) = last_timestamp_ns {
        let lag = crate::service::now_ns().saturating_sub(ts) as f64 / 1e9;
        gauge!("databus_relay_source_lag_seconds", "buffer" => b).set(lag);
    }
}

/// Counts a long poll in progress (`databus_relay_long_polls_in_progress{buffer}`) while alive.
pub(crate) struct LongPoll(String);

impl LongPoll {
    pub(crate) fn start(buffer: &str) -> LongPoll {
        gauge!("databus_relay_long_polls_in_progress", "buffer" => buffer.to_owned())
            .increment(1.0);
        counter!("databus_relay_long_polls_total", "buffer" => buffer.to_owned()).increment(1);
        LongPoll(buffer.to_owned())
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        gauge!("databus_relay_long_polls_in_progress", "buffer" => self.0.clone()).decrement(1.0);
    }
}
