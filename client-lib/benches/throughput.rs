//! Client-side throughput: an in-process relay whose buffer is filled directly (no MariaDB) with rows
//! of a realistic table (BIGINT id, 2 INTs, VARCHAR of 0-80 characters, DATETIME(6), DECIMAL(12,2),
//! DOUBLE, nullable TEXT of 10-200 characters; ~190 bytes of Avro a row, registered in the relay's
//! schema registry), and a client consuming it over loopback HTTP on 1 and on 4 workers:
//!
//! - `NoOp`: reads the key, counts the event (what the client library itself costs);
//! - `Decode`: what a consumer of rows does: decodes every event's Avro payload with apache-avro
//!   (`DataEvent::record`, writer schema fetched from the relay once) and reads every field;
//! - `Cpu(20µs)` / `Io(10)`: real work per event on the first windows only: 20 µs of CPU per event, or
//!   a 1 ms await on every 10th key.
//!
//! ```text
//! cargo bench -p databus-client --bench throughput [-- <events> <events per window> secs=<n>]
//! ```
//!
//! Prints events/s from the first request to the end of the last window (fetch, frame parsing and
//! CRC checks, assembly, dispatch, checkpoint to an in-memory store after every window or every 100).
//! `NoOp` and `Decode` runs are repeated (a new client from the beginning each time) until at least
//! `secs` seconds (default 3) have been measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use databus_buffer::{BufferConfig, event_buffer};
use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, WindowInfo,
};
use databus_core::{Checkpoint, Key, Opcode, Scn, SourceId};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::sample::{SampleRng, orders_row, orders_table};
use tokio_util::sync::CancellationToken;

/// What a consumer does per event.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Reads the key, counts the event.
    NoOp,
    /// Decodes the payload with apache-avro and reads every field.
    Decode,
    /// Spins for this long on the CPU.
    Cpu(Duration),
    /// Awaits a 1 ms sleep for every key divisible by this.
    Io(i64),
}

struct Bench {
    work: Work,
    events: AtomicU64,
    last: Scn,
    done: tokio::sync::Notify,
}

impl DatabusConsumer for Bench {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let key = std::hint::black_box(event.key());
        match self.work {
            Work::NoOp => {}
            Work::Decode => {
                let record = event.record().expect("the payload decodes");
                let apache_avro::types::Value::Record(fields) = record else {
                    panic!("not a record: {record:?}");
                };
                for (name, value) in &fields {
                    std::hint::black_box((name, value));
                }
            }
            Work::Cpu(d) => {
                let start = Instant::now();
                while start.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
            Work::Io(every) => {
                if matches!(key, databus_core::KeyRef::Int(k) if k % every == 0) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        // Windows after the last measured one may start before the run is stopped: not counted.
        if event.scn() <= self.last {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        if window.scn == self.last {
            self.done.notify_one();
        }
        ConsumerOutcome::Success
    }
}

async fn run(
    url: &str,
    work: Work,
    workers: usize,
    total: u64,
    last: Scn,
    every: u32,
) -> (Duration, u64) {
    let mut config = ClientConfig::with_relays([url]);
    config.workers = workers;
    config.max_response_bytes = 1 << 20;
    config.buffer_bytes = 8 << 20;
    config.checkpoint_every_windows = every;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Bench {
        work,
        events: AtomicU64::new(0),
        last,
        done: tokio::sync::Notify::new(),
    });
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = {
        let (consumer, token) = (consumer.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(consumer, token).await })
    };
    consumer.done.notified().await;
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let events = consumer.events.load(Ordering::Relaxed);
    assert_eq!(events, total);
    (elapsed, events)
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
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = raw
        .iter()
        .find_map(|a| a.strip_prefix("secs=")?.parse().ok())
        .unwrap_or(3.0);
    let args: Vec<u64> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(1_000_000);
    let per_window = args.get(1).copied().unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let registry = Arc::new(SchemaRegistry::in_memory());
        let schema = registry.register(&orders_table()).unwrap();
        let (mut writer, buffer) = event_buffer(BufferConfig::new(1 << 30)).unwrap();
        let mut rng = SampleRng::new(0x9e37_79b9_7f4a_7c15);
        let mut payload = Vec::new();
        let mut payload_bytes = 0;
        let mut scn = 0;
        let mut written = 0;
        while written < total {
            scn += 1;
            for _ in 0..per_window.min(total - written) {
                let key = Key::Int(written as i64);
                payload.clear();
                schema.encode(&orders_row(&mut rng, written as i64), &mut payload).unwrap();
                payload_bytes += payload.len();
                let event = databus_core::EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                    .source(SourceId::new(1))
                    .schema(schema.id)
                    .key(key.as_ref())
                    .payload(&payload);
                writer.append(&event).unwrap();
                written += 1;
            }
            writer.end_window(Scn::new(scn), scn).unwrap();
        }
        let last = Scn::new(scn);
        let bytes = buffer.stats().bytes_held;
        let source = SourceHandle {
            name: "bench".into(),
            buffer,
            tables: vec![ValidatedTable {
                id: SourceId::new(1),
                name: "t".into(),
                database: "bench".into(),
                table: "t".into(),
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
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));
        println!(
            "{total} events in {scn} windows of {per_window} ({} MiB of frames in the relay buffer, {} B of Avro per row); load average {}",
            bytes >> 20,
            payload_bytes as u64 / total,
            load_average()
        );
        // Real work per event on the first windows only (whole windows, at most `total`).
        let windows_of = |events: u64| Scn::new(events.div_ceil(per_window).min(scn));
        let cpu = windows_of(20_000);
        let io = windows_of(10_000);
        let runs = [
            (Work::NoOp, last, total),
            (Work::Decode, last, total),
            (Work::Cpu(Duration::from_micros(20)), cpu, (cpu.get() * per_window).min(total)),
            (Work::Io(10), io, (io.get() * per_window).min(total)),
        ];
        for (work, last, events_wanted) in runs {
            let everies: &[u32] = if matches!(work, Work::NoOp) { &[1, 100] } else { &[1] };
            // The order of the original bench: 1 worker (every window, every 100), then 4 workers.
            for workers in [1, 4] {
                for &every in everies {
                    let repeat = matches!(work, Work::NoOp | Work::Decode);
                    let (mut elapsed, mut events, mut runs) = (Duration::ZERO, 0, 0);
                    while runs == 0 || (repeat && elapsed.as_secs_f64() < secs) {
                        let (e, n) = run(&url, work, workers, events_wanted, last, every).await;
                        elapsed += e;
                        events += n;
                        runs += 1;
                    }
                    println!(
                        "{work:?} workers={workers} checkpoint_every_windows={every}: {events} events ({runs} runs) in {:.2} s = {:.0} events/s (load {})",
                        elapsed.as_secs_f64(),
                        events as f64 / elapsed.as_secs_f64(),
                        load_average()
                    );
                }
            }
        }
        shutdown.cancel();
    });
}
