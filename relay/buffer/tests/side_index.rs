//! The side index: `read_indexed` returns exactly what `read_with` with the filter's `matches` returns
//! (a randomized comparison on wrapping buffers, whose side ring or event ring runs out first), readers
//! that fall behind are refused the same way, and windows with more frames than the side ring holds are
//! refused with a typed error.

#![cfg(not(loom))]

use databus_buffer::{
    AppendError, BufferConfig, BufferWriter, EmptyWindows, EventBuffer, ReadError, ReadOutcome,
    SIDE_ENTRY_BYTES, event_buffer,
};
use databus_core::{
    Checkpoint, EventBuilder, EventView, FrameHeader, KeyRef, Opcode, Scn, SourceId,
};
use databus_filters::{Filter, FilterSpec};
use proptest::prelude::*;

fn config(capacity: usize, block: usize) -> BufferConfig {
    BufferConfig {
        capacity_bytes: capacity,
        index_block_bytes: block,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::OnFirstWrite,
        side_index: true,
        huge_pages: false,
    }
}

/// Both reads of the same buffer: the frame scan with `filter.matches` and the indexed read.
#[allow(clippy::type_complexity)]
fn both(
    buf: &EventBuffer,
    from: &Checkpoint,
    budget: usize,
    filter: &Filter,
    empty: EmptyWindows,
) -> (
    Result<(ReadOutcome, Vec<u8>), ReadError>,
    Result<(ReadOutcome, Vec<u8>), ReadError>,
) {
    let keep = |h: &FrameHeader, k: KeyRef<'_>| filter.matches(h, k);
    let mut a = Vec::new();
    let scanned = buf
        .read_with(from, budget, Some(&keep), empty, &mut a)
        .map(|o| (o, a));
    let mut b = Vec::new();
    let indexed = buf
        .read_indexed(from, budget, filter, empty, &mut b)
        .map(|o| (o, b));
    (scanned, indexed)
}

#[derive(Debug, Clone)]
enum Op {
    /// A window of these events (key kind/value, source, table event?), then its marker; or rolled
    /// back.
    Window {
        events: Vec<(u8, i64, u16, bool)>,
        payload_len: usize,
        rollback: bool,
    },
    /// A heartbeat.
    Heartbeat,
    /// Reads from one of the checkpoints seen so far (or a made-up one) and compares.
    Read {
        pick: usize,
        made_up: Option<(u64, Option<u32>)>,
        budget: usize,
        filter: usize,
        coalesce: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            prop::collection::vec((0u8..4, -50i64..50, 0u16..3, prop::bool::weighted(0.05)), 0..12),
            0usize..120,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(events, payload_len, rollback)| Op::Window {
                events,
                payload_len,
                rollback
            }),
        1 => Just(Op::Heartbeat),
        4 => (
            any::<usize>(),
            prop::option::weighted(0.3, (0u64..400, prop::option::of(0u32..14))),
            prop_oneof![Just(1usize), 60usize..400, Just(1 << 20)],
            0usize..FILTERS.len(),
            any::<bool>(),
        )
            .prop_map(|(pick, made_up, budget, filter, coalesce)| Op::Read {
                pick,
                made_up,
                budget,
                filter,
                coalesce
            }),
    ]
}

const FILTERS: [&str; 6] = [
    "partition=mod:4:1",
    "partition=mod:100:7,40-90",
    "sources=1",
    "sources=0,2&partition.2=mod:3:0-1",
    "partition=mod:2:0&partition=mod:5:3",
    "sources=2&partition=mod:7:6",
];

fn append_window(
    w: &mut BufferWriter,
    scn: u64,
    events: &[(u8, i64, u16, bool)],
    payload: &[u8],
    rollback: bool,
) -> Result<(), AppendError> {
    for &(kind, k, source, table) in events {
        let bytes = k.to_le_bytes();
        let key = match kind {
            0 => KeyRef::None,
            1 => KeyRef::Bytes(&bytes[..(k.unsigned_abs() % 9) as usize]),
            _ => KeyRef::Int(k),
        };
        let opcode = if table {
            Opcode::Truncate
        } else if k % 3 == 0 {
            Opcode::Delete
        } else {
            Opcode::Upsert
        };
        let mut event = EventBuilder::new(Scn::new(scn), opcode)
            .source(SourceId::new(source))
            .payload(payload);
        if !table {
            event = event.key(key);
        }
        w.append(&event)?;
    }
    if rollback {
        w.rollback();
        return Ok(());
    }
    w.end_window(Scn::new(scn), scn).map(drop)
}

fn run(capacity: usize, block: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut w, buf) = event_buffer(config(capacity, block)).unwrap();
    assert!(buf.has_side_index());
    let filters: Vec<Filter> = FILTERS
        .iter()
        .map(|q| Filter::new(&FilterSpec::from_query(q).unwrap()))
        .collect();
    let mut scn = 0u64;
    let mut checkpoints = vec![Checkpoint::beginning()];
    let mut compared = 0;
    for op in ops {
        match op {
            Op::Window {
                events,
                payload_len,
                rollback,
            } => {
                scn += 1 + events.len() as u64 % 3;
                let payload = vec![scn as u8; payload_len];
                match append_window(&mut w, scn, &events, &payload, rollback) {
                    Ok(()) => {}
                    Err(
                        AppendError::WindowTooLarge { .. }
                        | AppendError::WindowTooManyFrames { .. },
                    ) => {
                        prop_assert_eq!(w.open_window(), None);
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Op::Heartbeat => {
                scn += 1;
                w.end_window(Scn::new(scn), scn).unwrap();
            }
            Op::Read {
                pick,
                made_up,
                budget,
                filter,
                coalesce,
            } => {
                let from = match made_up {
                    Some((s, offset)) => Checkpoint {
                        window_scn: Scn::new(s),
                        window_offset: offset,
                        ..Checkpoint::beginning()
                    },
                    None => checkpoints[pick % checkpoints.len()].clone(),
                };
                let empty = if coalesce {
                    EmptyWindows::Coalesce
                } else {
                    EmptyWindows::Every
                };
                let (scanned, indexed) = both(&buf, &from, budget, &filters[filter], empty);
                prop_assert_eq!(&scanned, &indexed, "from {:?} budget {}", from, budget);
                if let Ok((outcome, bytes)) = indexed {
                    // Whole, valid frames.
                    prop_assert!(EventView::parse_all(&bytes).is_ok());
                    checkpoints.push(outcome.checkpoint);
                }
                compared += 1;
            }
        }
    }
    // Finally, every checkpoint seen, with every filter, draining to the end in small reads.
    for from in checkpoints.iter().rev().take(8) {
        for (i, filter) in filters.iter().enumerate() {
            let mut at = from.clone();
            for _ in 0..10_000 {
                let empty = if i % 2 == 0 {
                    EmptyWindows::Coalesce
                } else {
                    EmptyWindows::Every
                };
                let (scanned, indexed) = both(&buf, &at, 300, filter, empty);
                prop_assert_eq!(&scanned, &indexed, "from {:?}", at);
                match indexed {
                    Ok((outcome, _)) if outcome.checkpoint != at => at = outcome.checkpoint,
                    _ => break,
                }
            }
        }
    }
    let _ = compared;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Big frames: the event ring runs out before the side ring.
    #[test]
    fn indexed_reads_equal_frame_scans_on_a_wrapping_buffer(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(6 << 10, 256, ops)?;
    }

    /// A buffer too small for the windows generated: evictions on every window, windows refused.
    #[test]
    fn indexed_reads_equal_frame_scans_on_a_tiny_buffer(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(2 << 10, 64, ops)?;
    }
}

/// Small keyless frames (56 bytes) fill the side ring (one entry per 128 bytes of ring) before the
/// event ring: windows are evicted when it is full, and reads stay equal.
#[test]
fn the_side_ring_running_out_first_evicts_windows() {
    let (mut w, buf) = event_buffer(config(9 << 10, 256)).unwrap();
    let filter = Filter::new(&FilterSpec::from_query("partition=mod:3:2").unwrap());
    let ring_bytes = buf.stats().capacity_bytes;
    let entries = (9u64 << 10) - ring_bytes;
    assert_eq!(entries % SIDE_ENTRY_BYTES as u64, 0);
    let entries = entries / SIDE_ENTRY_BYTES as u64;
    for scn in 1..=400u64 {
        for k in 0..3 {
            w.append(
                &EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                    .key(KeyRef::Int(scn as i64 * 3 + k)),
            )
            .unwrap();
        }
        w.end_window(Scn::new(scn), 0).unwrap();
    }
    let stats = buf.stats();
    // Four frames per window: the side ring bounds what is held, not the bytes.
    assert!(stats.windows_held * 4 <= entries, "{stats:?}");
    assert!(stats.windows_held * 4 > entries - 4, "{stats:?}");
    assert!(stats.bytes_held < ring_bytes / 2, "{stats:?}");
    let prev = stats.prev_scn.unwrap();
    let (scanned, indexed) = both(
        &buf,
        &Checkpoint::after(prev),
        1 << 20,
        &filter,
        EmptyWindows::Every,
    );
    assert_eq!(scanned, indexed);
    let (outcome, bytes) = indexed.unwrap();
    assert_eq!(outcome.checkpoint, Checkpoint::after(Scn::new(400)));
    assert_eq!(outcome.windows_completed, stats.windows_held);
    let frames = EventView::parse_all(&bytes).unwrap();
    assert!(frames.len() as u64 > stats.windows_held);
}

/// A reader whose checkpoint was evicted gets `ScnNotFound` from an indexed read, as from a scan.
#[test]
fn readers_falling_behind_are_refused() {
    let (mut w, buf) = event_buffer(config(4 << 10, 64)).unwrap();
    let filter = Filter::new(&FilterSpec::from_query("partition=mod:2:1").unwrap());
    let mut scn = 0;
    let mut window = |w: &mut BufferWriter| {
        scn += 1;
        for k in 0..4 {
            w.append(
                &EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                    .key(KeyRef::Int(k))
                    .payload(&[7; 40]),
            )
            .unwrap();
        }
        w.end_window(Scn::new(scn), 0).unwrap();
    };
    for _ in 0..3 {
        window(&mut w);
    }
    let mut out = Vec::new();
    let first = buf
        .read_indexed(
            &Checkpoint::beginning(),
            200,
            &filter,
            EmptyWindows::Every,
            &mut out,
        )
        .unwrap();
    assert!(first.more_available);
    assert!(first.checkpoint.window_offset.is_some());
    for _ in 0..100 {
        window(&mut w);
    }
    let (scanned, indexed) = both(
        &buf,
        &first.checkpoint,
        1 << 20,
        &filter,
        EmptyWindows::Every,
    );
    assert_eq!(scanned, indexed);
    assert!(
        matches!(indexed, Err(ReadError::ScnNotFound { requested, .. }) if requested == Scn::new(1)),
        "{indexed:?}"
    );
}

/// A window with more frames than the side ring has entries is refused, and discarded; the writer
/// goes on with the next window.
#[test]
fn windows_with_too_many_frames_are_refused() {
    let (mut w, buf) = event_buffer(config(64 << 10, 4096)).unwrap();
    let entries = ((64u64 << 10) - buf.stats().capacity_bytes) / SIDE_ENTRY_BYTES as u64;
    let event =
        |scn: u64, k: i64| EventBuilder::new(Scn::new(scn), Opcode::Upsert).key(KeyRef::Int(k));
    // `entries - 1` events and the marker fit exactly.
    for k in 0..entries - 1 {
        w.append(&event(1, k as i64)).unwrap();
    }
    w.end_window(Scn::new(1), 0).unwrap();
    for k in 0..entries - 1 {
        w.append(&event(2, k as i64)).unwrap();
    }
    let err = w.append(&event(2, -1)).unwrap_err();
    assert_eq!(
        err,
        AppendError::WindowTooManyFrames {
            scn: Scn::new(2),
            frames: entries + 1,
            entries,
        }
    );
    assert!(err.to_string().contains("side index holds only"), "{err}");
    assert_eq!(w.open_window(), None);
    // Window 1 was evicted to make room for window 2's frames (evictions stay, as for bytes); the
    // next window goes in and is read whole.
    assert_eq!(buf.stats().prev_scn, Some(Scn::new(1)));
    w.append(&event(3, 5)).unwrap();
    w.end_window(Scn::new(3), 0).unwrap();
    let filter = Filter::new(&FilterSpec::from_query("partition=mod:2:0").unwrap());
    let (scanned, indexed) = both(
        &buf,
        &Checkpoint::after(Scn::new(1)),
        1 << 20,
        &filter,
        EmptyWindows::Every,
    );
    assert_eq!(scanned, indexed);
    let (outcome, _) = indexed.unwrap();
    assert_eq!(outcome.checkpoint, Checkpoint::after(Scn::new(3)));
    assert_eq!(outcome.events_scanned, 1);
    assert_eq!(outcome.windows_completed, 1);
}

/// Too small a buffer for a side index is refused at creation, naming the fix.
#[test]
fn a_side_index_needs_room() {
    let err = event_buffer(config(128, 64)).unwrap_err();
    assert!(err.to_string().contains("side index"), "{err}");
    assert!(event_buffer(config(1 << 10, 64)).is_ok());
}
