//! Serving rate of the real relay server over loopback HTTP, measured at a client that does what a
//! user's process does with each answer. Prints figures and ratios; asserts nothing about time. Run
//! with `cargo bench -p databus-relay --bench serve` (arguments: number of events, default 1000000;
//! `secs=<n>` the shortest measurement per case, default 4; `only=<text>` the cases whose label
//! contains the text, and the first).
//!
//! The buffer holds rows of a realistic table (BIGINT id, 2 INTs, VARCHAR of 0-80 characters with some
//! non-ASCII and quotes, DATETIME(6), DECIMAL(12,2), DOUBLE, nullable TEXT of 10-200 characters),
//! 85% upserts, 10% deletes, 5% updates with before images, 10 events a window. Clients go through
//! `databus-http`'s `HttpClient` (the client library's HTTP stack: kept-alive connection, whole bodies)
//! with `max_bytes` = 1 MiB (the client library's default), and take each checkpoint from the
//! `X-Databus-Checkpoint` header so the next request goes out while the answer is being consumed
//! (one answer in flight, one being consumed):
//!
//! - **binary**: every frame parsed and its header and body CRC32C checked with
//!   `databus_core::EventView::parse`, the parser the client library's window assembler uses; SCNs
//!   checked to never go back; events and end-of-window markers counted;
//! - **json, parsed**: every line parsed with `serde_json` into a `serde_json::Value` (as a Python or
//!   `jq` consumer would), the last line checked to be the checkpoint;
//! - **json, typed**: every line parsed with `serde_json` into typed structs of the event and its row
//!   (strings borrowed unless escaped), as a Rust consumer of the JSON would; SCNs checked;
//! - **json, read only**: the body read and its lines counted (newlines found as `BufRead` finds
//!   them), nothing parsed: what the relay itself delivers.
//!
//! JSON is measured with both of the relay's renderers in the same run: `direct` (JSON written from
//! the Avro binary, the default) and `values` (apache-avro `Value`s and `serde_json`, the renderer
//! before it; `RelayService::use_value_json_renderer`); `direct 1 thread` renders each answer on one
//! thread (`RelayService::split_json_rendering(false)`) where the default renders answers of 64 KiB
//! or more in two halves on two threads. Each case drains the whole buffer from the
//! beginning, repeatedly, until at least `secs` seconds have passed; two rounds per case.
//!
//! With `SERVE_BENCH_TAIL=<path to a release databus binary>`, `databus tail --from-scn 0
//! --max-events <all>` with stdout on /dev/null also drains the buffer, with each renderer.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use databus_buffer::{BufferConfig, event_buffer};
use databus_core::{Checkpoint, EventBuilder, EventView, KeyRef, Opcode, Scn, SourceId};
use databus_http::protocol::StreamAnswer;
use databus_http::{ClientOptions, HttpClient};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::sample::{SampleRng, orders_row, orders_table};
use tokio_util::sync::CancellationToken;

const EVENTS_PER_WINDOW: u64 = 10;
const MAX_BYTES: usize = 1 << 20;

/// How the relay renders `format=json`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Render {
    /// Straight from the Avro binary, answers of 64 KiB or more in two halves on two threads (the
    /// default).
    Direct,
    /// Straight from the Avro binary, on one thread (`RelayService::split_json_rendering(false)`).
    DirectOneThread,
    /// Through apache-avro `Value`s and `serde_json` (the renderer before the direct one).
    Values,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Consume {
    /// Parse and check every frame.
    Frames,
    /// Parse every JSON line into a `serde_json::Value`.
    JsonParsed,
    /// Parse every JSON line into typed structs (the event and its row, strings borrowed when they
    /// have no escapes), as a Rust consumer of the JSON would.
    JsonTyped,
    /// Count the lines only.
    JsonRead,
    /// Nothing: the body is read and dropped (the serving bench's client before issue 19, which
    /// trusted the response headers).
    Nothing,
}

/// One JSON line as a typed consumer reads it.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read to be parsed, as a consumer would
struct Line<'a> {
    scn: Option<u64>,
    #[serde(borrow)]
    opcode: Option<std::borrow::Cow<'a, str>>,
    key: Option<i64>,
    #[serde(borrow)]
    payload: Option<Row<'a>>,
    #[serde(borrow)]
    before: Option<Row<'a>>,
    checkpoint: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)] // read to be parsed, as a consumer would
struct Row<'a> {
    id: i64,
    customer: i64,
    qty: i64,
    #[serde(borrow)]
    note: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    created: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    amount: std::borrow::Cow<'a, str>,
    ratio: f64,
    #[serde(borrow)]
    comment: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Default, Clone, Copy)]
struct Drained {
    events: u64,
    body_bytes: u64,
    requests: u64,
}

/// Consumes one answer's body; returns the data events in it.
fn consume(body: &[u8], how: Consume, last_scn: &mut u64) -> u64 {
    match how {
        Consume::Frames => {
            let mut rest = body;
            let mut events = 0;
            while !rest.is_empty() {
                let (view, used) = EventView::parse(rest).expect("frame parses, CRCs match");
                let scn = view.scn().get();
                assert!(scn >= *last_scn, "SCN went back from {last_scn} to {scn}");
                *last_scn = scn;
                if !view.opcode().is_control() {
                    events += 1;
                }
                rest = &rest[used..];
            }
            events
        }
        Consume::JsonParsed => {
            let mut events = 0;
            let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
            let mut last = None;
            for line in lines.by_ref() {
                let value: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
                if let Some(prev) = last.replace(value)
                    && prev.get("opcode").and_then(|o| o.as_str()) != Some("end_of_window")
                {
                    events += 1;
                }
            }
            let last = last.expect("at least the checkpoint line");
            assert!(last.get("checkpoint").is_some(), "last line: {last}");
            events
        }
        Consume::JsonTyped => {
            let mut events = 0;
            let mut checkpoint = false;
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line: Line<'_> = serde_json::from_slice(line).expect("a JSON line");
                match line.opcode.as_deref() {
                    Some("end_of_window") => {}
                    Some(_) => {
                        let scn = line.scn.expect("an event has an SCN");
                        assert!(scn >= *last_scn, "SCN went back from {last_scn} to {scn}");
                        *last_scn = scn;
                        std::hint::black_box(&line.payload);
                        events += 1;
                    }
                    None => checkpoint = line.checkpoint.is_some(),
                }
            }
            assert!(checkpoint, "the last line is the checkpoint");
            events
        }
        Consume::Nothing => 0,
        Consume::JsonRead => {
            // Lines minus the checkpoint line minus end-of-window lines (key null, opcode
            // end_of_window: the keys are sorted).
            // The next line found as `BufRead` finds it (std's word-at-a-time newline search), not
            // byte by byte (which cost this client more than the relay's own work per event).
            use std::io::BufRead as _;
            let mut events = 0;
            let mut rest = body;
            while !rest.is_empty() {
                if !rest.starts_with(b"\n")
                    && !rest.starts_with(b"{\"key\":null,\"opcode\":\"end_of_window\"")
                    && !rest.starts_with(b"{\"checkpoint\"")
                {
                    events += 1;
                }
                rest.skip_until(b'\n').expect("reading a slice");
            }
            events
        }
    }
}

/// Reads everything from the beginning to `last`, consuming on a thread of its own while the next
/// request is in flight.
async fn drain(client: &HttpClient, query: &str, last: Scn, how: Consume) -> Drained {
    let (tx, rx) = std_mpsc::sync_channel::<bytes::Bytes>(1);
    let consumer = std::thread::spawn(move || {
        let mut last_scn = 0;
        let mut events = 0;
        for body in rx {
            events += consume(&body, how, &mut last_scn);
        }
        events
    });
    let mut cp = Checkpoint::beginning();
    let mut d = Drained::default();
    while cp.prev_scn != Some(last) {
        let path = format!(
            "/v1/stream?max_bytes={MAX_BYTES}{query}&checkpoint={}",
            form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect::<String>()
        );
        let response = client
            .get(&path, Duration::from_secs(60), 64 << 20)
            .await
            .expect("stream request");
        let StreamAnswer::Data {
            body, checkpoint, ..
        } = StreamAnswer::from_response(response).expect("a stream answer")
        else {
            panic!("not a data answer");
        };
        cp = checkpoint;
        d.body_bytes += body.len() as u64;
        d.requests += 1;
        // Blocks while the consumer is one answer behind: at most one answer in flight and one
        // being consumed.
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || tx.send(body))
            .await
            .unwrap()
            .expect("consumer alive");
    }
    drop(tx);
    d.events = tokio::task::spawn_blocking(move || consumer.join().unwrap())
        .await
        .unwrap();
    if how == Consume::Nothing {
        // Not counted: the drain reached the last window, so every event was sent.
        d.events = last.get() * EVENTS_PER_WINDOW;
    }
    d
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process (server and clients together), in clock ticks of 1/100 s.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let events: u64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secs: f64 = args
        .iter()
        .find_map(|a| a.strip_prefix("secs=")?.parse().ok())
        .unwrap_or(4.0);
    // `only=<text>`: the cases whose label contains it (the binary case is always run, for the ratios).
    let only = args
        .iter()
        .find_map(|a| a.strip_prefix("only="))
        .map(str::to_owned);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events, secs, only));
}

async fn bench(events: u64, secs: f64, only: Option<String>) {
    let registry = Arc::new(SchemaRegistry::in_memory());
    let table = orders_table();
    let schema = registry.register(&table).unwrap();
    let (mut writer, buffer) = event_buffer(BufferConfig::new(2 << 30)).unwrap();
    let mut rng = SampleRng::new(0x9e37_79b9_7f4a_7c15);
    let (mut after, mut before, mut payload) = (Vec::new(), Vec::new(), Vec::new());
    let windows = events / EVENTS_PER_WINDOW;
    let mut payload_bytes = 0;
    for w in 1..=windows {
        for i in 0..EVENTS_PER_WINDOW {
            let id = (w * EVENTS_PER_WINDOW + i) as i64;
            after.clear();
            schema
                .encode(&orders_row(&mut rng, id), &mut after)
                .unwrap();
            let opcode = match rng.below(20) {
                0 => {
                    before.clear();
                    schema
                        .encode(&orders_row(&mut rng, id), &mut before)
                        .unwrap();
                    payload.clear();
                    databus_core::event::update_payload(&after, &before, &mut payload);
                    Opcode::Update
                }
                1 | 2 => {
                    payload.clone_from(&after);
                    Opcode::Delete
                }
                _ => {
                    payload.clone_from(&after);
                    Opcode::Upsert
                }
            };
            payload_bytes += payload.len();
            let event = EventBuilder::new(Scn::new(w), opcode)
                .source(SourceId::new(1))
                .schema(schema.id)
                .key(KeyRef::Int(id))
                .payload(&payload);
            writer.append(&event).unwrap();
        }
        writer.end_window(Scn::new(w), w).unwrap();
    }
    let last = Scn::new(windows);
    let stats = buffer.stats();
    println!(
        "buffer: {} events in {} windows, {:.1} MiB held, payload {} B/event; load average {}",
        stats.events_held,
        stats.windows_held,
        stats.bytes_held as f64 / (1 << 20) as f64,
        payload_bytes as u64 / (windows * EVENTS_PER_WINDOW),
        load_average()
    );
    let source = SourceHandle {
        name: "shop".into(),
        buffer,
        tables: vec![ValidatedTable {
            id: SourceId::new(1),
            name: "orders".into(),
            database: "shop".into(),
            table: "orders".into(),
        }],
        status: Default::default(),
    };
    let service = RelayService::new(
        vec![source],
        registry,
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(databus_relay::serve(
        service.clone(),
        listener,
        shutdown.clone(),
    ));
    let client = HttpClient::new(&format!("http://{addr}"), &ClientOptions::default()).unwrap();

    // (label, query, renderer, consumer); the ratios printed below use these indexes.
    let cases: [(&str, &str, Render, Consume); 10] = [
        (
            "binary, frames parsed + CRCs",
            "",
            Render::Direct,
            Consume::Frames,
        ),
        (
            "binary, not parsed (old client)",
            "",
            Render::Direct,
            Consume::Nothing,
        ),
        (
            "json values, lines parsed",
            "&format=json",
            Render::Values,
            Consume::JsonParsed,
        ),
        (
            "json direct, lines parsed",
            "&format=json",
            Render::Direct,
            Consume::JsonParsed,
        ),
        (
            "json values, lines typed",
            "&format=json",
            Render::Values,
            Consume::JsonTyped,
        ),
        (
            "json direct, lines typed",
            "&format=json",
            Render::Direct,
            Consume::JsonTyped,
        ),
        (
            "json values, read only",
            "&format=json",
            Render::Values,
            Consume::JsonRead,
        ),
        (
            "json direct, read only",
            "&format=json",
            Render::Direct,
            Consume::JsonRead,
        ),
        (
            "json direct 1 thread, typed",
            "&format=json",
            Render::DirectOneThread,
            Consume::JsonTyped,
        ),
        (
            "json direct 1 thread, read only",
            "&format=json",
            Render::DirectOneThread,
            Consume::JsonRead,
        ),
    ];
    let mut rates = vec![Vec::new(); cases.len()];
    for round in 1..=2 {
        for (i, (label, query, render, how)) in cases.iter().enumerate() {
            if i > 0
                && only
                    .as_ref()
                    .is_some_and(|only| !label.contains(only.as_str()))
            {
                rates[i].push(f64::NAN);
                continue;
            }
            service.use_value_json_renderer(*render == Render::Values);
            service.split_json_rendering(*render != Render::DirectOneThread);
            let cpu = cpu_seconds();
            let start = Instant::now();
            let mut total = Drained::default();
            let mut drains = 0;
            while drains == 0 || start.elapsed().as_secs_f64() < secs {
                let d = drain(&client, query, last, *how).await;
                assert_eq!(
                    d.events,
                    windows * EVENTS_PER_WINDOW,
                    "every event consumed"
                );
                total.events += d.events;
                total.body_bytes += d.body_bytes;
                total.requests += d.requests;
                drains += 1;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let rate = total.events as f64 / elapsed;
            rates[i].push(rate);
            println!(
                "round {round}: {label:<30} {:>10.0} events/s {:>7.1} MB/s body ({} drains, {} requests, {:.2} s, process CPU {:.2} s = {:.2} us/event; load {})",
                rate,
                total.body_bytes as f64 / elapsed / 1e6,
                drains,
                total.requests,
                elapsed,
                cpu_seconds() - cpu,
                (cpu_seconds() - cpu) / total.events as f64 * 1e6,
                load_average()
            );
        }
    }
    let best = |i: usize| rates[i].iter().copied().fold(0.0, f64::max);
    println!("best of 2 rounds, and ratios:");
    for (i, (label, ..)) in cases.iter().enumerate() {
        println!(
            "  {label:<30} {:>10.0} events/s  ({:.2}x binary)",
            best(i),
            best(i) / best(0)
        );
    }
    println!(
        "  json direct / json values: lines parsed {:.2}x, lines typed {:.2}x, read only {:.2}x",
        best(3) / best(2),
        best(5) / best(4),
        best(7) / best(6)
    );
    println!(
        "  json direct, two threads / one thread per large answer: lines typed {:.2}x, read only {:.2}x",
        best(5) / best(8),
        best(7) / best(9)
    );
    service.split_json_rendering(true);
    if let Some(databus) = std::env::var_os("SERVE_BENCH_TAIL") {
        // `databus tail` (a release binary) draining the same buffer, stdout to /dev/null: the JSON
        // path end to end through the real CLI (which parses every line and prints it).
        let total = windows * EVENTS_PER_WINDOW;
        for round in 1..=2 {
            for values in [true, false] {
                service.use_value_json_renderer(values);
                let cpu = cpu_seconds();
                let start = Instant::now();
                let databus = databus.clone();
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new(&databus)
                        .args(["tail", "--relay", &format!("http://{addr}")])
                        .args(["--from-scn", "0", "--max-events", &total.to_string()])
                        .stdout(std::process::Stdio::null())
                        .status()
                })
                .await
                .unwrap()
                .expect("databus tail runs");
                assert!(status.success(), "databus tail failed: {status}");
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "round {round}: databus tail -> /dev/null, json {:<6}  {:>10.0} events/s ({total} events, {secs:.2} s, relay process CPU {:.2} s; load {})",
                    if values { "values" } else { "direct" },
                    total as f64 / secs,
                    cpu_seconds() - cpu,
                    load_average()
                );
            }
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
