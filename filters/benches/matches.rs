//! Cost of the hot path: hashing a key and deciding one event.
//!
//! `cargo bench -p databus-filters --bench matches`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use databus_core::{EventBuilder, EventView, KeyRef, Opcode, Scn, SourceId};
use databus_filters::{Filter, FilterSpec, KeyHash};

fn frame(key: KeyRef<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    EventBuilder::new(Scn::new(1), Opcode::Upsert)
        .source(SourceId::new(1))
        .key(key)
        .payload(&[0; 100])
        .write_to_vec(&mut buf);
    buf
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_hash");
    g.bench_function("int", |b| {
        b.iter(|| KeyHash::of(black_box(KeyRef::Int(123_456_789))))
    });
    g.bench_function("bytes_16", |b| {
        b.iter(|| KeyHash::of(black_box(KeyRef::Bytes(b"user-0000001234"))))
    });
    let long = [7u8; 512];
    g.bench_function("bytes_512", |b| {
        b.iter(|| KeyHash::of(black_box(KeyRef::Bytes(&long))))
    });
    g.finish();

    let int_frame = frame(KeyRef::Int(123_456_789));
    let (view, _) = EventView::parse(&int_frame).unwrap();
    let mut g = c.benchmark_group("matches");
    for (name, query) in [
        ("all", ""),
        ("sources", "sources=1,3,5-9"),
        ("mod_8", "sources=1,2&partition=mod:8:0,2-3"),
        ("range", "partition=range:1000:0-4,100-200"),
        (
            "mod_1024_of_1M",
            &format!(
                "partition=mod:1000000:{}",
                (0..1024)
                    .map(|i| (i * 977).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
    ] {
        let filter = Filter::new(&FilterSpec::from_query(query).unwrap());
        g.bench_function(name, |b| {
            b.iter(|| filter.matches(black_box(view.header()), black_box(view.key())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
