//! Client-side throughput: an in-process relay whose buffer is filled directly (no MariaDB), and a
//! client consuming it over loopback HTTP on 1 and on 4 workers, with a no-op consumer (all
//! `<events>`) and with consumers doing real work per event (the first windows only): 20 µs of CPU
//! per event, or a 1 ms await on every 10th key (I/O).
//!
//! ```text
//! cargo bench -p databus-client --bench throughput [-- <events> <events per window>]
//! ```
//!
//! Prints events/s from the first request to the end of the last window (fetch, assembly, dispatch,
//! checkpoint to an in-memory store after every window or every 100).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use databus_buffer::{BufferConfig, event_buffer};
use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, WindowInfo,
};
use databus_core::{Checkpoint, Key, Opcode, SchemaId, Scn, SourceId};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use tokio_util::sync::CancellationToken;

/// What a consumer does per event.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Reads the key, counts the event.
    NoOp,
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

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(1_000_000);
    let per_window = args.get(1).copied().unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut writer, buffer) = event_buffer(BufferConfig::new(512 << 20)).unwrap();
        let payload = [7u8; 24];
        let mut scn = 0;
        let mut written = 0;
        while written < total {
            scn += 1;
            for _ in 0..per_window.min(total - written) {
                let key = Key::Int(written as i64);
                let event = databus_core::EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                    .source(SourceId::new(1))
                    .schema(SchemaId::new(0xabc))
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
            Arc::new(SchemaRegistry::in_memory()),
            HttpSettings::defaults::<RelayHttp>(),
            None,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));
        println!(
            "{total} events in {scn} windows of {per_window} ({} MiB of frames in the relay buffer)",
            bytes >> 20
        );
        // Real work per event on the first windows only (whole windows, at most `total`).
        let windows_of = |events: u64| Scn::new(events.div_ceil(per_window).min(scn));
        let cpu = windows_of(20_000);
        let io = windows_of(10_000);
        let runs = [
            (Work::NoOp, last, total),
            (Work::Cpu(Duration::from_micros(20)), cpu, (cpu.get() * per_window).min(total)),
            (Work::Io(10), io, (io.get() * per_window).min(total)),
        ];
        for (work, last, events_wanted) in runs {
            let everies: &[u32] = if matches!(work, Work::NoOp) { &[1, 100] } else { &[1] };
            // The order of the original bench: 1 worker (every window, every 100), then 4 workers.
            for workers in [1, 4] {
                for &every in everies {
                    let (elapsed, events) =
                        run(&url, work, workers, events_wanted, last, every).await;
                    println!(
                        "{work:?} workers={workers} checkpoint_every_windows={every}: {events} events in {:.2} s = {:.0} events/s",
                        elapsed.as_secs_f64(),
                        events as f64 / elapsed.as_secs_f64()
                    );
                }
            }
        }
        shutdown.cancel();
    });
}
