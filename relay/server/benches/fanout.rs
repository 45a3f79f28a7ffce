//! Partitioned fan-out of a relay over loopback HTTP (issue 19). Prints figures and ratios; no
//! assertions. Run with
//! `cargo bench -p databus-relay --bench fanout` (optional arguments: events, default 1000000; long-poll
//! clients, default 1000; their source pace in windows/s, default 2000; seconds, default 10). `FANOUT_HUGE_PAGES=1` puts the buffers on transparent huge pages.
//!
//! A real relay server (`databus_relay::serve_with`, warp/hyper over loopback) serves a buffer filled
//! beforehand. Every client keeps one HTTP/1.1 connection, reads `Content-Length` bodies, and parses
//! every frame of every body with `EventView::parse` (the parser of the client library's window
//! assembler: both checksums verified), counting the data events it got.
//!
//! Part 1, drain rate: one unfiltered client, then 100 clients each with `partition=mod:100:<b>`,
//! with every window's marker (`empty_windows=every`, the old behaviour) and with
//! `empty_windows=coalesce`; all read the whole buffer from the beginning with 16 MiB responses. The
//! aggregate is the events delivered to all clients per second of wall time, and its ratio to the one
//! client's rate in the same run (the median of three runs of it). Measured twice, on the same events: from a buffer without a side
//! index (every filtered read scans frames and hashes keys) and from one with it, as a relay's buffers
//! have (filtered reads decide on the side entries).
//!
//! Part 2, latency: a writer thread appends windows of one event at a fixed pace (each event's
//! timestamp is its append time) while `N` clients each with `partition=mod:N:<i>` long-poll
//! (`wait_ms=10000`, `empty_windows=coalesce`); each event's latency is from its timestamp to the
//! moment its client has parsed the response holding it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databus_buffer::{BufferConfig, BufferWriter, event_buffer};
use databus_core::{Checkpoint, EventBuilder, EventView, KeyRef, Opcode, Scn, SourceId};
use databus_http::server::{ConnectionLimits, ServerSecurity};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::{
    Column, ColumnType, RegisteredSchema, SchemaRegistry, TableSchema, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const EVENTS_PER_WINDOW: u64 = 10;

/// One keep-alive HTTP/1.1 connection to the relay.
struct Conn {
    stream: BufReader<TcpStream>,
    head: Vec<u8>,
    body: Vec<u8>,
}

/// What one response held, after parsing every frame.
struct Answer {
    checkpoint: Checkpoint,
    data_events: u64,
    frames: u64,
    body_bytes: usize,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream: BufReader::with_capacity(256 << 10, stream),
            head: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Sends one request and reads its answer; `on_event` sees each data event's timestamp.
    async fn get(&mut self, path: &str, mut on_event: impl FnMut(u64)) -> Answer {
        let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .unwrap();
        self.head.clear();
        loop {
            let b = self.stream.read_u8().await.unwrap();
            self.head.push(b);
            if self.head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let head = std::str::from_utf8(&self.head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let header = |name: &str| {
            head.split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        let len: usize = header("content-length").parse().unwrap();
        let checkpoint = Checkpoint::from_json(&header("x-databus-checkpoint")).unwrap();
        self.body.resize(len, 0);
        self.stream.read_exact(&mut self.body).await.unwrap();
        let (mut data_events, mut frames, mut at) = (0, 0, 0);
        while at < self.body.len() {
            let (view, used) = EventView::parse(&self.body[at..]).expect("valid frames");
            if !view.opcode().is_control() {
                data_events += 1;
                on_event(view.timestamp_ns());
            }
            frames += 1;
            at += used;
        }
        Answer {
            checkpoint,
            data_events,
            frames,
            body_bytes: len,
        }
    }
}

fn stream_path(query: &str, cp: &Checkpoint) -> String {
    format!(
        "/v1/stream?{query}&checkpoint={}",
        form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect::<String>()
    )
}

/// Reads everything from the beginning to `last`; returns (data events, frames, body bytes).
async fn drain(addr: SocketAddr, query: String, last: Scn) -> (u64, u64, u64) {
    let mut conn = Conn::open(addr).await;
    let mut cp = Checkpoint::beginning();
    let (mut events, mut frames, mut bytes) = (0, 0, 0);
    while cp.prev_scn != Some(last) {
        let a = conn.get(&stream_path(&query, &cp), |_| {}).await;
        cp = a.checkpoint;
        events += a.data_events;
        frames += a.frames;
        bytes += a.body_bytes as u64;
    }
    (events, frames, bytes)
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

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let events = args.next().unwrap_or(1_000_000);
    let pollers = args.next().unwrap_or(1000);
    let pace = args.next().unwrap_or(2000);
    let seconds = args.next().unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events, pollers, pace, seconds));
}

fn schema(registry: &SchemaRegistry) -> RegisteredSchema {
    let table = TableSchema {
        database: "shop".into(),
        table: "orders".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("qty", ColumnType::Int { unsigned: false }, false),
            Column::new(
                "note",
                ColumnType::Text {
                    max_chars: Some(64),
                },
                true,
            ),
        ],
        primary_key: vec![0],
    };
    registry.register(&table).unwrap()
}

fn append_row(writer: &mut BufferWriter, schema: &RegisteredSchema, scn: u64, id: i64, ts: u64) {
    let mut payload = Vec::with_capacity(128);
    let note = format!("order note number {id:>20} with some text to reach 100 bytes......");
    schema
        .encoder
        .encode(
            &[Value::Int(id), Value::Int(3), Value::Text(note)],
            &mut payload,
        )
        .unwrap();
    let event = EventBuilder::new(Scn::new(scn), Opcode::Upsert)
        .source(SourceId::new(1))
        .schema(schema.id)
        .timestamp_ns(ts)
        .key(KeyRef::Int(id))
        .payload(&payload);
    writer.append(&event).unwrap();
}

async fn start_relay(
    buffer: Arc<databus_buffer::EventBuffer>,
    registry: Arc<SchemaRegistry>,
) -> (SocketAddr, CancellationToken) {
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
    let mut http = HttpSettings::defaults::<RelayHttp>();
    http.max_concurrent_streams = 4096;
    let service = RelayService::new(vec![source], registry, http, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let security = ServerSecurity::plain().with_limits(ConnectionLimits {
        max_connections: 4096,
        ..ConnectionLimits::default()
    });
    tokio::spawn(databus_relay::serve_with(
        service,
        listener,
        security,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

async fn bench(events: u64, pollers: u64, pace: u64, seconds: u64) {
    println!("load average at start: {}", loadavg());
    let registry = Arc::new(SchemaRegistry::in_memory());
    let schema = schema(&registry);
    // The relay's buffers keep a side index (filtered reads decide on it); the same events in a buffer
    // without one measure the frame scan in the same run.
    // FANOUT_HUGE_PAGES=1: the buffers on transparent huge pages (`buffer_huge_pages`), to compare.
    let huge = std::env::var("FANOUT_HUGE_PAGES").is_ok_and(|v| v == "1");
    println!(
        "buffer pages: {}",
        if huge { "huge (2 MiB)" } else { "4 KiB" }
    );
    for side_index in [false, true] {
        let config = if side_index {
            BufferConfig::new(1 << 30).with_side_index()
        } else {
            BufferConfig::new(1 << 30)
        }
        .huge_pages(huge);
        drain_rates(events, config, &registry, &schema).await;
    }
    latency(pollers, pace, seconds).await;
}

async fn drain_rates(
    events: u64,
    config: BufferConfig,
    registry: &Arc<SchemaRegistry>,
    schema: &RegisteredSchema,
) {
    let (mut writer, buffer) = event_buffer(config).unwrap();
    let reads = if buffer.has_side_index() {
        "side index"
    } else {
        "frame scan"
    };
    let windows = events / EVENTS_PER_WINDOW;
    for w in 1..=windows {
        for i in 0..EVENTS_PER_WINDOW {
            append_row(
                &mut writer,
                schema,
                w,
                (w * EVENTS_PER_WINDOW + i) as i64,
                w,
            );
        }
        writer.end_window(Scn::new(w), w).unwrap();
    }
    let last = Scn::new(windows);
    let stats = buffer.stats();
    println!(
        "buffer ({reads}): {} events in {} windows of {EVENTS_PER_WINDOW}, {:.1} MiB held",
        stats.events_held,
        stats.windows_held,
        stats.bytes_held as f64 / (1 << 20) as f64,
    );
    let (addr, shutdown) = start_relay(buffer.clone(), registry.clone()).await;

    let mut one_client = 0.0;
    let clients = 100u32;
    // The one-client figure is the median of three runs (the first one of a process pays for warming up).
    let mut one_client_rates = Vec::new();
    let runs: [(&str, u32, &str); 5] = [
        ("binary, 1 client, no filter (run 1)", 1, ""),
        ("binary, 1 client, no filter (run 2)", 1, ""),
        ("binary, 1 client, no filter (run 3)", 1, ""),
        (
            "binary, 100 MOD clients, every marker",
            clients,
            "&empty_windows=every",
        ),
        (
            "binary, 100 MOD clients, coalesced",
            clients,
            "&empty_windows=coalesce",
        ),
    ];
    for (label, n, extra) in runs {
        let cpu = cpu_seconds();
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|b| {
                let filter = if n == 1 {
                    String::new()
                } else {
                    format!("&partition=mod:{n}:{b}")
                };
                let query = format!("max_bytes=16777216{filter}{extra}");
                tokio::spawn(drain(addr, query, last))
            })
            .collect();
        let (mut delivered, mut frames, mut bytes) = (0, 0, 0);
        for t in tasks {
            let (e, f, b) = t.await.unwrap();
            delivered += e;
            frames += f;
            bytes += b;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = delivered as f64 / secs;
        if n == 1 {
            one_client_rates.push(rate);
            one_client_rates.sort_by(f64::total_cmp);
            one_client = one_client_rates[one_client_rates.len() / 2];
        }
        assert_eq!(delivered, events, "every event delivered once");
        println!(
            "{reads}, {label:<40} {:>6.2} M events/s delivered ({:.1}% of one client's median), {:.2} s, {} frames ({} markers), {:.1} MB of bodies, process CPU {:.2} s, load {}",
            rate / 1e6,
            100.0 * rate / one_client,
            secs,
            frames,
            frames - delivered,
            bytes as f64 / 1e6,
            cpu_seconds() - cpu,
            loadavg(),
        );
    }
    drop(writer);
    shutdown.cancel();
}

async fn latency(pollers: u64, pace: u64, seconds: u64) {
    let registry = Arc::new(SchemaRegistry::in_memory());
    let schema = schema(&registry);
    let (mut writer, buffer) =
        event_buffer(BufferConfig::new(256 << 20).with_side_index()).unwrap();
    writer.end_window(Scn::new(1), now_ns()).unwrap();
    let (addr, shutdown) = start_relay(buffer.clone(), registry).await;
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..pollers {
        let (latencies, stop) = (latencies.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let query = format!("wait_ms=10000&empty_windows=coalesce&partition=mod:{pollers}:{i}");
            let mut cp = Checkpoint::after(Scn::new(1));
            let mut mine = Vec::new();
            let mut answers = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = conn
                    .get(&stream_path(&query, &cp), |ts| {
                        mine.push(Duration::from_nanos(now_ns().saturating_sub(ts)))
                    })
                    .await;
                answers += 1;
                cp = a.checkpoint;
            }
            latencies.lock().unwrap().extend(mine);
            answers
        }));
    }
    // Let every client connect and register its long poll before the source starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "long poll: {pollers} clients connected, {} waiting in the buffer",
        buffer.waiting_readers()
    );
    let cpu = cpu_seconds();
    let started = Instant::now();
    let writer_thread = std::thread::spawn(move || {
        let interval = Duration::from_secs_f64(1.0 / pace as f64);
        let begin = Instant::now();
        let mut scn = 1u64;
        let mut next = begin;
        let mut id = 0i64;
        while begin.elapsed() < Duration::from_secs(seconds) {
            next += interval;
            while Instant::now() < next {
                std::thread::sleep(next - Instant::now());
            }
            scn += 1;
            id += 1;
            append_row(&mut writer, &schema, scn, id, now_ns());
            writer.end_window(Scn::new(scn), now_ns()).unwrap();
        }
        (scn - 1, writer)
    });
    let (written, writer) = tokio::task::spawn_blocking(move || writer_thread.join().unwrap())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    // Give the last answers time to arrive, then end the long polls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds() - cpu;
    stop.store(true, Ordering::Relaxed);
    // One more window wakes every long poll so that each client sees `stop`.
    let mut writer = writer;
    writer.end_window(Scn::new(written + 2), now_ns()).unwrap();
    let mut answers = 0;
    for t in tasks {
        answers += tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("client ends")
            .unwrap();
    }
    shutdown.cancel();
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1e3
    };
    println!(
        "long poll, {pollers} clients with mod:{pollers}:<i>, source at {pace} windows/s of 1 event for {secs:.1} s: \
         {written} events written, {} received; append -> client parsed: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         {answers} answers; process CPU {:.2} s ({:.0}% of 2 cores); load {}",
        all.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        cpu,
        100.0 * cpu / secs / 2.0,
        loadavg(),
    );
}
