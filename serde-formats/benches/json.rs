//! Rendering one event as a JSON line, the relay's `format=json` per event: `json_text` (JSON written
//! from the Avro binary by a compiled plan) against the renderer before it (`decode::event_json`:
//! apache-avro `Value`s, then `serde_json`), in one run, same events; the two outputs are checked to be
//! the same bytes first. Rows of the serving bench's table (8 columns, strings of 0-200 characters,
//! NULLs, DATETIME(6), DECIMAL(12,2), DOUBLE), 85% upserts, 10% deletes, 5% updates with before images.
//!
//! Run: `cargo bench -p databus-serde-formats --bench json` (optional argument: seconds per case,
//! default 3).

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use databus_core::{Event, EventView, Key, Opcode, PartitionId, Scn, SourceId};
use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::decode::event_json;
use databus_serde_formats::json_text::{JsonPlan, write_event_json};
use databus_serde_formats::sample::{SampleRng, orders_row, orders_table};

/// CPU time of this thread in ns (Linux `/proc/thread-self/schedstat`; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .filter(|a| a != "new")
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let table = orders_table();
    let registry = SchemaRegistry::in_memory();
    let schema = registry.register(&table).unwrap();
    let plan = JsonPlan::new(Arc::clone(&schema.avro));
    assert!(plan.is_direct());
    let mut rng = SampleRng::new(0x9e37_79b9_7f4a_7c15);
    let mut frames = Vec::new();
    for id in 0..10_000i64 {
        let mut after = Vec::new();
        schema
            .encode(&orders_row(&mut rng, id), &mut after)
            .unwrap();
        let (opcode, payload) = match rng.below(20) {
            0 => {
                let mut before = Vec::new();
                schema
                    .encode(&orders_row(&mut rng, id), &mut before)
                    .unwrap();
                let mut p = Vec::new();
                databus_core::event::update_payload(&after, &before, &mut p);
                (Opcode::Update, p)
            }
            1 | 2 => (Opcode::Delete, after),
            _ => (Opcode::Upsert, after),
        };
        frames.push(
            Event {
                scn: Scn::new(id as u64 / 10 + 1),
                opcode,
                source: SourceId::new(1),
                partition: PartitionId::new(0),
                timestamp_ns: 1_700_000_000_000_000_000 + id as u64,
                schema: schema.id,
                key: Key::Int(id),
                payload,
            }
            .to_frame(),
        );
    }
    let views: Vec<EventView<'_>> = frames
        .iter()
        .map(|f| EventView::parse(f).unwrap().0)
        .collect();
    let mut out = Vec::with_capacity(8 << 20);
    for view in &views {
        out.clear();
        write_event_json(view, Ok(&plan), &mut out);
        let old = serde_json::to_vec(&event_json(view, Ok(&schema.avro))).unwrap();
        assert_eq!(out, old, "the renderers differ");
    }
    let run = |name: &str, render: &dyn Fn(&EventView<'_>, &mut Vec<u8>)| {
        let mut out = Vec::with_capacity(8 << 20);
        let (mut events, mut bytes) = (0u64, 0u64);
        let cpu = thread_cpu_ns();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            for view in &views {
                render(view, &mut out);
                out.push(b'\n');
            }
            events += views.len() as u64;
            bytes += out.len() as u64;
            out.clear();
        }
        let s = start.elapsed().as_secs_f64();
        let cpu_per_event = (thread_cpu_ns() - cpu) as f64 / events as f64;
        let rate = events as f64 / s;
        println!(
            "{name:<52} {:>10.0} events/s  {:>6.0} ns/event wall, {:>6.0} ns/event of CPU  {:>6.1} MB/s of JSON",
            rate,
            1e9 / rate,
            cpu_per_event,
            bytes as f64 / s / 1e6
        );
        cpu_per_event
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "10,000 events, {} B of JSON per event on average; load average {}",
        {
            let mut total = 0;
            for view in &views {
                out.clear();
                write_event_json(view, Ok(&plan), &mut out);
                total += out.len() + 1;
            }
            total / views.len()
        },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // `-- new`: the new renderer only (for profiling it).
    let values = if std::env::args().any(|a| a == "new") {
        f64::NAN
    } else {
        run(
            "old: apache-avro Values + serde_json (event_json)",
            &|view, out| {
                serde_json::to_writer(&mut *out, &event_json(view, Ok(&schema.avro))).unwrap();
            },
        )
    };
    let direct = run(
        "new: JSON from the Avro binary (json_text)",
        &|view, out| {
            write_event_json(view, Ok(&plan), out);
        },
    );
    println!(
        "CPU per event, old / new: {:.2}x (the figure to read on a loaded machine; wall time counts waiting for a CPU)",
        values / direct
    );
}
