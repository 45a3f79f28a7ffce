//! Stress: one writer wrapping a small buffer many times while 16 readers follow it. Every reader checks
//! every frame's checksums, that windows arrive whole and in order (each event carries its window's SCN,
//! its index and the window's event count; end markers carry the count as timestamp), that SCNs increase,
//! and that rolled-back windows never appear. Readers that fall behind get `ScnNotFound` and restart from
//! the buffer's `prev_scn`, never garbage. Run twice: frame scans (`read`, `read_filtered`), and with a
//! side index, where a third of the readers use `read_indexed` with a MOD filter (each checking it got
//! exactly the events of its buckets).

#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::num::NonZeroU32;

use databus_buffer::{BufferConfig, EmptyWindows, EventBuffer, ReadError, event_buffer};
use databus_core::{Checkpoint, EventBuilder, EventView, FrameHeader, KeyRef, Opcode, Scn};
use databus_filters::{Filter, FilterSpec, bucket_of};

const READERS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(3);

/// Payload: scn (8) | index (4) | count (4) | rolled-back flag (1) | filler.
fn payload(scn: u64, i: u32, n: u32, doomed: bool, filler: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(17 + filler);
    p.extend_from_slice(&scn.to_le_bytes());
    p.extend_from_slice(&i.to_le_bytes());
    p.extend_from_slice(&n.to_le_bytes());
    p.push(doomed as u8);
    p.resize(17 + filler, (scn as u8) ^ (i as u8));
    p
}

/// A tiny deterministic PRNG (xorshift), so the writer's pattern is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, Default)]
struct ReaderReport {
    windows: u64,
    events: u64,
    restarts: u64,
    overtaken: u64,
    last_scn: u64,
}

/// How a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `read`: every event.
    All,
    /// `read_filtered` keeping even keys.
    Even,
    /// `read_indexed` with `partition=mod:3:1`.
    IndexedMod,
}

/// Follows the stream from `checkpoint`, checking every frame, until `stop` and caught up with `final_scn`.
fn follow(
    buf: &EventBuffer,
    id: usize,
    mode: Mode,
    stop: &AtomicBool,
    final_scn: &AtomicU64,
) -> ReaderReport {
    let mut report = ReaderReport::default();
    let mut checkpoint = Checkpoint::beginning();
    let mut last_complete = 0u64;
    let mut out = Vec::new();
    let filtered = mode != Mode::All;
    let even = |_: &FrameHeader, key: KeyRef<'_>| matches!(key, KeyRef::Int(k) if k % 2 == 0);
    let by_mod = Filter::new(&FilterSpec::from_query("partition=mod:3:1").unwrap());
    let three = NonZeroU32::new(3).unwrap();
    // Whether the reader gets event `i` of a window (its key is `i`).
    let kept = |i: u32| match mode {
        Mode::All => true,
        Mode::Even => i % 2 == 0,
        Mode::IndexedMod => bucket_of(KeyRef::Int(i64::from(i)), three) == 1,
    };
    let budget = [1usize, 700, 4096, 1 << 20][id % 4];
    loop {
        out.clear();
        let result = match mode {
            Mode::All => buf.read(&checkpoint, budget, &mut out),
            Mode::Even => buf.read_filtered(&checkpoint, budget, &even, &mut out),
            Mode::IndexedMod => {
                buf.read_indexed(&checkpoint, budget, &by_mod, EmptyWindows::Every, &mut out)
            }
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(ReadError::ScnNotFound {
                prev_scn: Some(prev),
                requested,
                ..
            }) => {
                assert!(
                    requested <= prev,
                    "reader {id}: ScnNotFound for {requested} after prev {prev}"
                );
                report.restarts += 1;
                checkpoint = Checkpoint::after(prev);
                last_complete = prev.get();
                continue;
            }
            Err(ReadError::Overtaken { .. }) => {
                report.overtaken += 1;
                continue;
            }
            Err(other) => panic!("reader {id}: {other}"),
        };
        // Where this read resumes inside a window.
        let mut window: Option<(u64, u32)> = checkpoint
            .window_offset
            .map(|k| (checkpoint.window_scn.get(), k));
        let mut rest = &out[..];
        while !rest.is_empty() {
            let (view, used) = EventView::parse(rest)
                .unwrap_or_else(|e| panic!("reader {id}: garbage frame: {e}"));
            rest = &rest[used..];
            let scn = view.scn().get();
            if view.opcode().is_end_of_window() {
                let n = view.timestamp_ns() as u32;
                let seen = match window {
                    Some((w, next)) => {
                        assert_eq!(w, scn, "reader {id}: end of {scn} inside window {w}");
                        next
                    }
                    None => 0,
                };
                assert!(
                    scn > last_complete,
                    "reader {id}: window {scn} after {last_complete}"
                );
                // With a filter, `seen` is the index after the last event seen: every later event of
                // the window is one the filter drops.
                if filtered {
                    assert!(
                        seen <= n && (seen..n).all(|i| !kept(i)),
                        "reader {id}: window {scn} saw up to {seen} of {n}"
                    );
                } else {
                    assert_eq!(
                        seen, n,
                        "reader {id}: window {scn} delivered {seen} of {n} events"
                    );
                }
                last_complete = scn;
                window = None;
                report.windows += 1;
            } else {
                let p = view.payload();
                assert_eq!(u64::from_le_bytes(p[..8].try_into().unwrap()), scn);
                let i = u32::from_le_bytes(p[8..12].try_into().unwrap());
                let n = u32::from_le_bytes(p[12..16].try_into().unwrap());
                assert_eq!(p[16], 0, "reader {id}: saw rolled-back window {scn}");
                assert!(i < n);
                assert_eq!(view.key(), KeyRef::Int(i as i64));
                let expected = match window {
                    Some((w, next)) if w == scn => next,
                    Some((w, _)) => panic!("reader {id}: window {scn} started inside window {w}"),
                    None => {
                        assert!(
                            scn > last_complete,
                            "reader {id}: window {scn} after {last_complete}"
                        );
                        0
                    }
                };
                if filtered {
                    // Exactly the next event the filter keeps.
                    assert!(
                        i >= expected && kept(i) && (expected..i).all(|j| !kept(j)),
                        "reader {id}: {scn}:{i} after {expected}"
                    );
                } else {
                    assert_eq!(
                        i, expected,
                        "reader {id}: window {scn} skipped from {expected} to {i}"
                    );
                }
                window = Some((scn, i + 1));
                report.events += 1;
            }
        }
        if let Some((w, next)) = window {
            // The checkpoint counts every event of the window scanned, kept or not.
            assert_eq!(outcome.checkpoint.window_scn.get(), w);
            assert!(outcome.checkpoint.window_offset.unwrap() >= next);
        }
        checkpoint = outcome.checkpoint;
        report.last_scn = last_complete;
        if !outcome.more_available
            && stop.load(Ordering::Acquire)
            && last_complete >= final_scn.load(Ordering::Acquire)
        {
            return report;
        }
        if out.is_empty() {
            std::thread::yield_now();
        }
    }
}

#[test]
fn sixteen_readers_follow_a_wrapping_writer_without_ever_seeing_garbage() {
    run(false);
}

#[test]
fn sixteen_readers_with_a_side_index_follow_a_wrapping_writer_without_ever_seeing_garbage() {
    run(true);
}

fn run(side_index: bool) {
    let (mut writer, buf) = event_buffer(BufferConfig {
        capacity_bytes: 64 << 10,
        index_block_bytes: 512,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index,
        huge_pages: false,
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let final_scn = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|id| {
            let (buf, stop, final_scn) = (buf.clone(), stop.clone(), final_scn.clone());
            let mode = match (side_index, id % 3) {
                (false, _) if id % 2 == 0 => Mode::All,
                (false, _) => Mode::Even,
                (true, 0) => Mode::All,
                (true, 1) => Mode::Even,
                (true, _) => Mode::IndexedMod,
            };
            std::thread::spawn(move || follow(&buf, id, mode, &stop, &final_scn))
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut scn = 0u64;
    let mut windows = 0u64;
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        scn += 1 + rng.next() % 3;
        let n = (rng.next() % 9) as u32;
        let doomed = rng.next() % 20 == 0;
        for i in 0..n {
            let p = payload(scn, i, n, doomed, (rng.next() % 200) as usize);
            writer
                .append(
                    &EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                        .key(KeyRef::Int(i as i64))
                        .payload(&p),
                )
                .unwrap();
        }
        if doomed {
            writer.rollback();
            continue;
        }
        writer.end_window(Scn::new(scn), u64::from(n)).unwrap();
        windows += 1;
    }
    final_scn.store(writer.last_scn().get(), Ordering::Release);
    stop.store(true, Ordering::Release);
    let stats = buf.stats();
    assert!(stats.prev_scn.is_some(), "the buffer should have wrapped");
    let mut total = ReaderReport::default();
    for (id, reader) in readers.into_iter().enumerate() {
        let r = reader
            .join()
            .unwrap_or_else(|_| panic!("reader {id} failed"));
        assert_eq!(
            r.last_scn,
            writer.last_scn().get(),
            "reader {id} did not reach the end"
        );
        assert!(r.windows > 0, "reader {id} verified no window");
        total.windows += r.windows;
        total.events += r.events;
        total.restarts += r.restarts;
        total.overtaken += r.overtaken;
    }
    println!(
        "writer: {windows} windows, {} bytes through a {} byte ring; readers: {} windows, {} events verified, \
         {} ScnNotFound restarts, {} overtaken retries",
        stats.bytes_published,
        stats.capacity_bytes,
        total.windows,
        total.events,
        total.restarts,
        total.overtaken
    );
}
