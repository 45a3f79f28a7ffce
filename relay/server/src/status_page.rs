//! The relay's HTML status page, `GET /` and `GET /status`: one server-rendered page for people, with
//! the same facts as `GET /v1/status` plus rates.
//!
//! Per buffer: the SCN range held (oldest and newest window) and the SCN it serves checkpoints after
//! (`prev_scn`), bytes and events held against the capacity, ingest state and source position, ingest
//! lag (now minus the commit time of the last window or heartbeat), how long ago the last window was
//! written, event and window rates, and the long polls waiting (consumers caught up and connected).
//! Then the logical sources.
//!
//! Invariants: every value from the outside world (names, positions, errors) is HTML-escaped; URLs
//! with a password (`scheme://user:password@host`) have the password replaced by `***` before
//! rendering; the page has no scripts, only inline CSS and a `<meta http-equiv="refresh">`.
//!
//! Rates are measured between page loads: the page keeps, per buffer, samples of the ingest counters
//! from the last minute (and one from when the routes were built), and shows the rate over the span
//! it actually covers.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use databus_http::html::{escape, page_response, show};
use databus_http::human;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::service::{RelayService, now_ns};

/// Seconds between automatic reloads of the page.
pub const REFRESH_SECONDS: u32 = 5;
/// How far back rate samples are kept.
const RATE_SPAN: Duration = Duration::from_secs(60);
/// At most this many samples per buffer (a page loaded very often shortens the span instead).
const MAX_SAMPLES: usize = 256;

/// `GET /` and `GET /status`: the HTML status page of `service`. Rejects other paths (not found) so
/// that it composes with the API routes.
pub fn route(
    service: Arc<RelayService>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let rates = Arc::new(Mutex::new(Rates::default()));
    rates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sample(&service, Instant::now());
    warp::path::end()
        .or(warp::path!("status"))
        .unify()
        .and(warp::get())
        .and(warp::any().map(move || (service.clone(), rates.clone())))
        .map(|(svc, rates): (Arc<RelayService>, Arc<Mutex<Rates>>)| {
            let now = Instant::now();
            let rates = {
                let mut r = rates.lock().unwrap_or_else(|e| e.into_inner());
                r.sample(&svc, now);
                r.current()
            };
            page_response(StatusCode::OK, render(&svc, &rates))
        })
}

/// Samples of `(when, windows_in, events_in)` per buffer.
#[derive(Debug, Default)]
struct Rates(BTreeMap<String, VecDeque<(Instant, u64, u64)>>);

/// A rate over a span: windows/s, events/s, the span.
#[derive(Debug, Clone, Copy)]
struct Rate {
    windows_per_sec: f64,
    events_per_sec: f64,
    span: Duration,
}

impl Rates {
    fn sample(&mut self, svc: &RelayService, now: Instant) {
        for source in svc.sources() {
            let s = source.status.snapshot();
            let samples = self.0.entry(source.name.clone()).or_default();
            samples.push_back((now, s.windows_in, s.events_in));
            // Keep the newest sample older than the span (the rate's start) and those after it.
            while samples.len() > 2
                && (now.duration_since(samples[1].0) >= RATE_SPAN || samples.len() > MAX_SAMPLES)
            {
                samples.pop_front();
            }
        }
    }

    fn current(&self) -> BTreeMap<String, Rate> {
        self.0
            .iter()
            .filter_map(|(name, samples)| {
                let (t0, w0, e0) = *samples.front()?;
                let (t1, w1, e1) = *samples.back()?;
                let span = t1.duration_since(t0);
                (span >= Duration::from_millis(100)).then(|| {
                    let secs = span.as_secs_f64();
                    (
                        name.clone(),
                        Rate {
                            windows_per_sec: w1.saturating_sub(w0) as f64 / secs,
                            events_per_sec: e1.saturating_sub(e0) as f64 / secs,
                            span,
                        },
                    )
                })
            })
            .collect()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.state-streaming{color:#17692b}.state-failed{color:#b00020;font-weight:600}\
.state-reconnecting{color:#a15c00}.muted{color:#777}";

/// Page head and title: the shared frame of the relay's and the bootstrap server's pages.
fn page_start(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1>"
    );
}

fn render(svc: &RelayService, rates: &BTreeMap<String, Rate>) -> String {
    let now = now_ns();
    let mut out = String::new();
    page_start(&mut out, "databus relay");
    let _ = write!(
        out,
        "<p class=\"muted\">Refreshes every {REFRESH_SECONDS} s. JSON: \
         <a href=\"/v1/status\">/v1/status</a>, <a href=\"/v1/sources\">/v1/sources</a>, \
         <a href=\"/metrics\">/metrics</a>.</p>"
    );
    let _ = write!(
        out,
        "<h2>Buffers</h2><table id=\"buffers\"><thead><tr><th>buffer</th><th>ingest</th>\
         <th>SCN range held</th><th>serves checkpoints after SCN</th><th>windows</th><th>events</th>\
         <th>bytes held</th><th>ingest lag</th><th>last window written</th><th>rate</th>\
         <th>long polls waiting</th><th>source position</th></tr></thead><tbody>"
    );
    for source in svc.sources() {
        let stats = source.buffer.stats();
        let ingest = source.status.snapshot();
        let prev = stats.prev_scn;
        let name = escape(&source.name);
        let state = serde_json::to_value(ingest.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let fill = if stats.capacity_bytes == 0 {
            0.0
        } else {
            stats.bytes_held as f64 * 100.0 / stats.capacity_bytes as f64
        };
        let range = match (stats.min_scn, stats.max_scn) {
            (Some(min), Some(max)) if stats.windows_held > 0 => format!("{min}..={max}"),
            _ => "empty".to_owned(),
        };
        let lag = ingest
            .last_timestamp_ns
            .map(|ts| human::duration_ns(now.saturating_sub(ts)));
        let written = ingest
            .last_write_ns
            .map(|ts| format!("{} ago", human::duration_ns(now.saturating_sub(ts))));
        let rate = rates.get(&source.name).map_or_else(
            || "–".to_owned(),
            |r| {
                format!(
                    "{:.1} events/s, {:.1} windows/s <span class=\"muted\">(last {:.0} s)</span>",
                    r.events_per_sec,
                    r.windows_per_sec,
                    r.span.as_secs_f64()
                )
            },
        );
        let _ = write!(
            out,
            "<tr data-buffer=\"{name}\"><td>{name}</td>\
             <td class=\"state-{state}\">{state}</td>\
             <td class=\"num scn-range\" data-min-scn=\"{min}\" data-max-scn=\"{max}\">{range}</td>\
             <td class=\"num\">{prev}</td><td class=\"num\">{windows}</td><td class=\"num\">{events}</td>\
             <td class=\"num\">{held} of {cap} ({fill:.1}%)</td><td class=\"num\">{lag}</td>\
             <td class=\"num\">{written}</td><td>{rate}</td><td class=\"num\">{waiting}</td>\
             <td>{position}</td></tr>",
            min = opt(stats.min_scn),
            max = opt(stats.max_scn),
            prev = opt(prev),
            windows = stats.windows_held,
            events = stats.events_held,
            held = human::bytes(stats.bytes_held),
            cap = human::bytes(stats.capacity_bytes),
            lag = opt(lag),
            written = opt(written),
            waiting = source.buffer.waiting_readers(),
            position = show(ingest.position.as_deref().unwrap_or("–")),
        );
        if let Some(error) = &ingest.last_error {
            let _ = write!(
                out,
                "<tr class=\"error\"><td colspan=\"12\">last error of {name}: {}</td></tr>",
                show(error)
            );
        }
    }
    let _ = write!(
        out,
        "</tbody></table><h2>Sources</h2><table id=\"sources\"><thead><tr><th>id</th>\
         <th>name</th><th>table</th><th>buffer</th></tr></thead><tbody>"
    );
    for source in svc.sources() {
        for t in &source.tables {
            let _ = write!(
                out,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}.{}</td><td>{}</td></tr>",
                t.id,
                escape(&t.name),
                escape(&t.database),
                escape(&t.table),
                escape(&source.name)
            );
        }
    }
    out.push_str("</tbody></table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn page_shows_the_buffer_escaped_and_redacted() {
        use databus_buffer::{BufferConfig, event_buffer};
        use databus_core::{Event, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};

        use crate::config::{HttpSettings, RelayHttp, ValidatedTable};
        use crate::service::{IngestState, SourceHandle};

        let (mut writer, buffer) = event_buffer(BufferConfig::new(1 << 20)).unwrap();
        for scn in [7u64, 9, 12] {
            let event = Event {
                scn: Scn::new(scn),
                opcode: Opcode::Upsert,
                source: SourceId::new(1),
                partition: PartitionId::new(0),
                timestamp_ns: 5,
                schema: SchemaId::new(1),
                key: Key::Int(scn as i64),
                payload: vec![1; 8],
            };
            writer.append(&event.builder()).unwrap();
            writer.end_window(Scn::new(scn), 5).unwrap();
        }
        let source = SourceHandle {
            name: "shop".into(),
            buffer,
            tables: vec![ValidatedTable {
                id: SourceId::new(1),
                name: "orders".into(),
                database: "shop".into(),
                table: "orders".into(),
            }],
            status: Arc::default(),
        };
        source.status.update(|s| {
            s.state = IngestState::Reconnecting;
            s.count_window(1);
            s.last_error = Some("<script>x</script> mysql://repl:hunter2@db:3306/".into());
        });
        let svc = RelayService::new(
            vec![source],
            Arc::new(databus_serde_formats::SchemaRegistry::in_memory()),
            HttpSettings::defaults::<RelayHttp>(),
            None,
        );
        let routes = crate::http::routes(svc);
        for path in ["/", "/status"] {
            let r = warp::test::request().path(path).reply(&routes).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
            let body = String::from_utf8(r.body().to_vec()).unwrap();
            assert!(body.contains(">7..=12<"), "{body}");
            assert!(body.contains("data-max-scn=\"12\""), "{body}");
            assert!(body.contains("http-equiv=\"refresh\""), "{body}");
            assert!(body.contains("class=\"state-reconnecting\""), "{body}");
            assert!(body.contains("&lt;script&gt;x"), "{body}");
            assert!(!body.contains("<script>"), "{body}");
            assert!(!body.contains("hunter2"), "{body}");
            assert!(body.contains("mysql://repl:***@db:3306/"), "{body}");
            assert!(body.contains("<td>shop.orders</td>"), "{body}");
        }
        // Not found and wrong methods are still the API's typed errors.
        let r = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(r.status(), 404);
        let r = warp::test::request()
            .method("POST")
            .path("/status")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), 405);
    }

    #[test]
    fn rates_cover_the_span_between_samples() {
        let t0 = Instant::now();
        let mut rates = Rates::default();
        rates.0.insert(
            "shop".into(),
            VecDeque::from([(t0, 10, 100), (t0 + Duration::from_secs(4), 30, 500)]),
        );
        // A single fresh sample gives no rate yet.
        rates.0.insert("idle".into(), VecDeque::from([(t0, 0, 0)]));
        let current = rates.current();
        let shop = current["shop"];
        assert_eq!(shop.span, Duration::from_secs(4));
        assert!((shop.windows_per_sec - 5.0).abs() < 1e-9, "{shop:?}");
        assert!((shop.events_per_sec - 100.0).abs() < 1e-9, "{shop:?}");
        assert!(!current.contains_key("idle"));
    }
}
