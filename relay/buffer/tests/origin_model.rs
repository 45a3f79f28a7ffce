//! Model test of a relay's buffer across its lives: restarts (a new buffer awaiting its origin),
//! positioning of the source (history refill, a refill that turns out purged and is moved, reconnects),
//! windows published with evictions, and consumers reading from random checkpoints at any moment.
//!
//! The property is the relay's promise (issue: a restarted relay served an old checkpoint from its
//! first new window): a read either serves the windows that follow the checkpoint *in the source*
//! (the first one served is the checkpoint's successor, and each next one the successor of the one
//! before), or serves nothing yet, or answers `ScnNotFound` / `NotAnchored`. It never skips a window.
//! And it never refuses what it holds: from the buffer's reported `prev_scn` on, reads are served.

#![cfg(not(loom))]

use databus_buffer::{BufferConfig, BufferWriter, EventBuffer, ReadError, event_buffer};
use databus_core::{
    Checkpoint, Event, EventView, Key, Opcode, PartitionId, SchemaId, Scn, SourceId,
};
use proptest::prelude::*;
use std::sync::Arc;

/// The source's windows: sparse SCNs (a checkpoint between two continues at the next).
fn source_scn(i: usize) -> u64 {
    3 * (i as u64 + 1) + (i as u64 % 2)
}

#[derive(Debug, Clone)]
enum Op {
    /// The relay restarts: a new buffer; it had persisted the window `back` before its last one.
    Restart { back: usize },
    /// The connector starts `refill` windows before the persisted one (clamped), and `purged` of those
    /// are gone so it is moved that far forward before anything is published.
    Position { refill: usize, purged: usize },
    /// The next source window, with `events` data events.
    Publish { events: u8 },
    /// A consumer asks for the windows after source window `back` before the newest one (or after 0).
    Read { back: usize, budget: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0usize..6).prop_map(|back| Op::Restart { back }),
        2 => (0usize..8, 0usize..4).prop_map(|(refill, purged)| Op::Position { refill, purged }),
        6 => (0u8..5).prop_map(|events| Op::Publish { events }),
        6 => (0usize..30, prop_oneof![Just(1usize), 100usize..2000]).prop_map(|(back, budget)| Op::Read { back, budget }),
    ]
}

struct Relay {
    writer: BufferWriter,
    buf: Arc<EventBuffer>,
    /// Index of the source window the stream is positioned after (`None`: after SCN 0), once positioned.
    positioned: Option<Option<usize>>,
    published: bool,
    /// The persisted last window when this life started.
    persisted: Option<usize>,
}

fn new_relay(capacity: usize, persisted: Option<usize>) -> Relay {
    let (writer, buf) = event_buffer(BufferConfig::new(capacity).awaiting_anchor()).unwrap();
    Relay {
        writer,
        buf,
        positioned: None,
        published: false,
        persisted,
    }
}

fn scn_after(pos: Option<usize>) -> Scn {
    Scn::new(pos.map_or(0, source_scn))
}

fn run(capacity: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut relay = new_relay(capacity, None);
    // The newest source window any life of the relay wrote (the source itself moves on meanwhile).
    let mut newest: Option<usize> = None;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Restart { back } => {
                let persisted = newest.map(|n| n.saturating_sub(back));
                relay = new_relay(capacity, persisted);
            }
            Op::Position { refill, purged } => {
                if relay.published {
                    // A reconnect: the stream resumes after the last window written; no new origin.
                    continue;
                }
                let base = match relay.persisted {
                    // A fresh relay starts from the source's current position.
                    None => newest,
                    Some(p) => Some(p),
                };
                let start = base.and_then(|b| b.checked_sub(refill));
                let first = relay.writer.anchor(scn_after(start));
                prop_assert_eq!(first, Ok(()));
                relay.positioned = Some(start);
                if purged > 0 {
                    // The refill's start was purged: the connector is moved forward, still before any
                    // window is published.
                    let moved = start
                        .map_or(purged - 1, |s| s + purged)
                        .min(base.unwrap_or(0));
                    prop_assert_eq!(relay.writer.anchor(scn_after(Some(moved))), Ok(()));
                    relay.positioned = Some(Some(moved));
                }
            }
            Op::Publish { events } => {
                let Some(pos) = relay.positioned else {
                    continue;
                };
                let next = pos.map_or(0, |p| p + 1);
                let scn = Scn::new(source_scn(next));
                for k in 0..events {
                    let e = Event {
                        scn,
                        opcode: Opcode::Upsert,
                        source: SourceId::new(1),
                        partition: PartitionId::new(0),
                        timestamp_ns: step as u64,
                        schema: SchemaId::new(3),
                        key: Key::Int(i64::from(k)),
                        payload: vec![k; 40],
                    };
                    prop_assert_eq!(relay.writer.append(&e.builder()), Ok(()));
                }
                prop_assert!(relay.writer.end_window(scn, step as u64).is_ok());
                relay.positioned = Some(Some(next));
                relay.published = true;
                newest = Some(newest.map_or(next, |n| n.max(next)));
                // Once published, the origin cannot move any more.
                prop_assert!(relay.writer.anchor(Scn::new(1)).is_err());
            }
            Op::Read { back, budget } => {
                let from = newest.and_then(|n| n.checked_sub(back));
                let checkpoint = Checkpoint::after(scn_after(from));
                let mut out = Vec::new();
                let stats = relay.buf.stats();
                match relay.buf.read(&checkpoint, budget, &mut out) {
                    Ok(outcome) => {
                        prop_assert!(
                            relay.positioned.is_some(),
                            "served before the origin was known"
                        );
                        let views = EventView::parse_all(&out).unwrap();
                        let mut expected = from.map_or(0, |f| f + 1);
                        for v in &views {
                            prop_assert_eq!(
                                v.scn().get(),
                                source_scn(expected),
                                "after {:?}: got window {} where the source's next is {}",
                                checkpoint.window_scn,
                                v.scn(),
                                source_scn(expected)
                            );
                            if v.opcode().is_control() {
                                expected += 1;
                            }
                        }
                        prop_assert_eq!(
                            outcome.windows_completed as usize,
                            expected - from.map_or(0, |f| f + 1)
                        );
                    }
                    Err(ReadError::NotAnchored) => {
                        prop_assert!(!stats.anchored);
                        prop_assert!(relay.positioned.is_none());
                    }
                    Err(ReadError::ScnNotFound { prev_scn, .. }) => {
                        // Refused only before where the held history starts.
                        let prev = prev_scn.expect("a refusal names the history's start");
                        prop_assert!(
                            checkpoint.window_scn < prev,
                            "{:?} refused with prev {}",
                            checkpoint,
                            prev
                        );
                    }
                    Err(other) => prop_assert!(false, "{}", other),
                }
                // What the buffer reports as its history's start is served.
                let stats = relay.buf.stats();
                if stats.anchored {
                    let from = Checkpoint::after(stats.prev_scn.unwrap_or(Scn::ZERO));
                    let mut out = Vec::new();
                    prop_assert!(relay.buf.read(&from, 1 << 20, &mut out).is_ok());
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_relay_never_serves_a_window_that_does_not_follow_the_checkpoint(
        capacity in prop_oneof![Just(600usize), Just(1500), Just(1 << 16)],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(capacity, ops)?;
    }
}
