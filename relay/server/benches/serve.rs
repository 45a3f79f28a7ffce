//! Serving rate of the relay over loopback HTTP: one binary client, one JSON client, and 100 concurrent
//! clients with MOD filters. Prints figures; no assertions. Run with
//! `cargo bench -p databus-relay --bench serve` (optional argument: number of events, default 1000000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use databus_buffer::{BufferConfig, event_buffer};
use databus_core::{Checkpoint, EventBuilder, KeyRef, Opcode, Scn, SourceId};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const EVENTS_PER_WINDOW: u64 = 10;

/// One request on a fresh connection; returns (checkpoint header, body length, frames).
async fn fetch(addr: SocketAddr, path: &str, buf: &mut Vec<u8>) -> (Checkpoint, usize, u64) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    buf.clear();
    stream.read_to_end(buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&buf[..split]).unwrap();
    let header = |name: &str| {
        head.split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    let cp = Checkpoint::from_json(&header("x-databus-checkpoint")).unwrap();
    let frames = header("x-databus-events").parse().unwrap();
    (cp, buf.len() - split - 4, frames)
}

/// Reads everything from the beginning to `last`; returns (frames, body bytes, requests).
async fn drain(addr: SocketAddr, query: &str, last: Scn) -> (u64, u64, u64) {
    let mut cp = Checkpoint::beginning();
    let mut buf = Vec::new();
    let (mut frames, mut bytes, mut requests) = (0, 0, 0);
    while cp.prev_scn != Some(last) {
        let path = format!(
            "/v1/stream?max_bytes=16777216{query}&checkpoint={}",
            form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect::<String>()
        );
        let (next, len, n) = fetch(addr, &path, &mut buf).await;
        cp = next;
        frames += n;
        bytes += len as u64;
        requests += 1;
    }
    (frames, bytes, requests)
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

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(events));
}

async fn bench(events: u64) {
    let registry = Arc::new(SchemaRegistry::in_memory());
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
    let schema = registry.register(&table).unwrap();
    let (mut writer, buffer) = event_buffer(BufferConfig::new(1 << 30)).unwrap();
    let mut payload = Vec::new();
    let windows = events / EVENTS_PER_WINDOW;
    let mut payload_bytes = 0;
    for w in 1..=windows {
        for i in 0..EVENTS_PER_WINDOW {
            let id = (w * EVENTS_PER_WINDOW + i) as i64;
            payload.clear();
            let note =
                format!("order note number {id:>20} with some text to reach 100 bytes......");
            schema
                .encoder
                .encode(
                    &[Value::Int(id), Value::Int(3), Value::Text(note)],
                    &mut payload,
                )
                .unwrap();
            payload_bytes += payload.len();
            let event = EventBuilder::new(Scn::new(w), Opcode::Upsert)
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
        "buffer: {} events in {} windows, {:.1} MiB held, payload {} B/event",
        stats.events_held,
        stats.windows_held,
        stats.bytes_held as f64 / (1 << 20) as f64,
        payload_bytes as u64 / (windows * EVENTS_PER_WINDOW)
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
    let server = tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));

    for (label, query) in [("binary, 1 client", ""), ("json, 1 client", "&format=json")] {
        let cpu = cpu_seconds();
        let start = Instant::now();
        let (frames, bytes, requests) = drain(addr, query, last).await;
        let secs = start.elapsed().as_secs_f64();
        let data = frames - windows;
        println!(
            "{label:<26} {:>10.0} events/s {:>8.1} MB/s body  ({data} events, {requests} requests of <=16 MiB, {:.2} s, process CPU {:.2} s)",
            data as f64 / secs,
            bytes as f64 / secs / 1e6,
            secs,
            cpu_seconds() - cpu
        );
    }

    let clients = 100u32;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|b| {
            tokio::spawn(async move {
                drain(addr, &format!("&partition=mod:{clients}:{b}"), last).await
            })
        })
        .collect();
    let (mut frames, mut bytes) = (0, 0);
    for t in tasks {
        let (f, b, _) = t.await.unwrap();
        frames += f;
        bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    let data = frames - windows * u64::from(clients);
    println!(
        "binary, {clients} MOD clients     {:>10.0} events/s delivered (aggregate), {:.0} events/s scanned, {:.1} MB/s; {data} events, {:.2} s, process CPU {:.2} s",
        data as f64 / secs,
        (windows * EVENTS_PER_WINDOW * u64::from(clients)) as f64 / secs,
        bytes as f64 / secs / 1e6,
        secs,
        cpu_seconds() - cpu
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
