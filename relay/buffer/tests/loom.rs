//! Loom model of the publish / evict / read protocol. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p databus-buffer --release --test loom`.
//!
//! A 64-byte ring holds one 56-byte heartbeat window; the writer publishes two, so the second pads to the
//! ring's start, evicts window 1 and overwrites its bytes while a reader may be copying them. (Bigger
//! models explode: every Relaxed load of an overwritten word is a branch.) Loom
//! explores the interleavings (bounded preemptions) and every Relaxed/Acquire/Release outcome of the ring
//! words and cursors: the reader must get whole, checksum-valid windows in order, or `ScnNotFound`.
#![cfg(loom)]

use databus_buffer::{BufferConfig, ReadError, event_buffer};
use databus_core::{Checkpoint, EventView, Scn};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // One preemption is enough to stop the reader mid-copy and let the writer evict and overwrite; it
    // keeps the run well under two minutes. `LOOM_MAX_PREEMPTIONS=2` explores more (about 3 minutes on
    // two cores).
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(1);
    }
    builder.check(f);
}

fn scns(out: &[u8]) -> Vec<u64> {
    EventView::parse_all(out)
        .expect("a reader never returns overwritten or partial frames")
        .iter()
        .map(|v| v.scn().get())
        .collect()
}

#[test]
fn a_reader_from_the_beginning_gets_a_prefix_or_scn_not_found() {
    model(|| {
        let (mut writer, buf) = event_buffer(BufferConfig {
            capacity_bytes: 64,
            index_block_bytes: 64,
            awaits_anchor: false,
            prefault: databus_buffer::Prefault::default(),
            side_index: false,
            huge_pages: false,
        })
        .unwrap();
        let t = loom::thread::spawn(move || {
            for s in 1..=2 {
                writer.end_window(Scn::new(s), s).unwrap();
            }
        });
        let mut out = Vec::new();
        match buf.read(&Checkpoint::beginning(), 1 << 10, &mut out) {
            Ok(outcome) => {
                let got = scns(&out);
                assert!(got.is_empty() || got == [1], "{got:?}");
                assert_eq!(outcome.windows_completed as usize, got.len());
            }
            Err(ReadError::ScnNotFound { prev_scn, .. }) => {
                assert_eq!(prev_scn, Some(Scn::new(1)));
                assert!(out.is_empty());
            }
            Err(other) => panic!("{other}"),
        }
        t.join().unwrap();
    });
}

#[test]
fn a_reader_after_the_evicted_window_is_always_served() {
    model(|| {
        let (mut writer, buf) = event_buffer(BufferConfig {
            capacity_bytes: 64,
            index_block_bytes: 64,
            awaits_anchor: false,
            prefault: databus_buffer::Prefault::default(),
            side_index: false,
            huge_pages: false,
        })
        .unwrap();
        let t = loom::thread::spawn(move || {
            for s in 1..=2 {
                writer.end_window(Scn::new(s), s).unwrap();
            }
        });
        let mut out = Vec::new();
        let outcome = buf
            .read(&Checkpoint::after(Scn::new(1)), 1 << 10, &mut out)
            .unwrap();
        let got = scns(&out);
        assert!(got.is_empty() || got == [2], "{got:?}");
        let expected = got.last().map_or(Checkpoint::after(Scn::new(1)), |&s| {
            Checkpoint::after(Scn::new(s))
        });
        assert_eq!(outcome.checkpoint, expected);
        t.join().unwrap();
    });
}

/// A restarted relay: the writer positions its source at SCN 3, re-positions it at 5 (the refill it
/// tried was purged) and publishes window 6, while a reader asks for the windows after SCN 4, which this
/// buffer never held. Whatever the interleaving and whichever anchor the reader's loads see, it is never
/// served window 6: it gets "not anchored", nothing, or `ScnNotFound` naming an origin after 4.
#[test]
fn a_reader_before_the_origin_is_never_served_the_first_window() {
    model(|| {
        let (mut writer, buf) = event_buffer(BufferConfig {
            capacity_bytes: 64,
            index_block_bytes: 64,
            awaits_anchor: true,
            prefault: databus_buffer::Prefault::default(),
            side_index: false,
            huge_pages: false,
        })
        .unwrap();
        let t = loom::thread::spawn(move || {
            writer.anchor(Scn::new(3)).unwrap();
            writer.anchor(Scn::new(5)).unwrap();
            writer.end_window(Scn::new(6), 6).unwrap();
        });
        let mut out = Vec::new();
        match buf.read(&Checkpoint::after(Scn::new(4)), 1 << 10, &mut out) {
            Ok(outcome) => {
                assert!(scns(&out).is_empty(), "served {:?}", scns(&out));
                assert_eq!(outcome.windows_completed, 0);
            }
            Err(ReadError::NotAnchored) => assert!(out.is_empty()),
            Err(ReadError::ScnNotFound { prev_scn, .. }) => {
                assert_eq!(prev_scn, Some(Scn::new(5)));
                assert!(out.is_empty());
            }
            Err(other) => panic!("{other}"),
        }
        t.join().unwrap();
    });
}

/// The same writer, and a reader at the origin: it gets window 6 whole or nothing yet, never an error
/// other than "not anchored" (which it may see before the first anchor).
#[test]
fn a_reader_at_the_origin_is_served_or_waits() {
    model(|| {
        let (mut writer, buf) = event_buffer(BufferConfig {
            capacity_bytes: 64,
            index_block_bytes: 64,
            awaits_anchor: true,
            prefault: databus_buffer::Prefault::default(),
            side_index: false,
            huge_pages: false,
        })
        .unwrap();
        let t = loom::thread::spawn(move || {
            writer.anchor(Scn::new(3)).unwrap();
            writer.anchor(Scn::new(5)).unwrap();
            writer.end_window(Scn::new(6), 6).unwrap();
        });
        let mut out = Vec::new();
        match buf.read(&Checkpoint::after(Scn::new(5)), 1 << 10, &mut out) {
            Ok(_) => {
                let got = scns(&out);
                assert!(got.is_empty() || got == [6], "{got:?}");
            }
            Err(ReadError::NotAnchored) => assert!(out.is_empty()),
            // The reader may see the first anchor (3) only: 5 is after it, so it is not refused.
            Err(other) => panic!("{other}"),
        }
        t.join().unwrap();
    });
}
