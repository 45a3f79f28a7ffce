//! Model test: random appends, rollbacks, window ends (with evictions) and reads from random checkpoints
//! with random budgets and filters, checked event for event against a simple reference: a `VecDeque` of
//! whole windows, `prev_scn`, and the documented byte layout (8-byte aligned frames, wrap padding) that
//! decides when windows are evicted. Reads run in both [`EmptyWindows`] modes: the reference of
//! `Coalesce` holds back the marker of each window the read copied nothing of, drops it when an event of
//! a later window is copied or a later marker replaces it, and copies it when the read ends.

#![cfg(not(loom))]

use std::collections::VecDeque;

use databus_buffer::{
    AppendError, BufferConfig, BufferWriter, EmptyWindows, EventBuffer, ReadError, event_buffer,
};
use databus_core::{
    Checkpoint, Event, EventView, FrameHeader, Key, KeyRef, Opcode, PartitionId, SchemaId, Scn,
    SourceId,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        key: i64,
        payload_len: usize,
        gap: u64,
    },
    EndWindow {
        gap: u64,
    },
    Rollback,
    Read {
        from: From,
        budget: usize,
        filter: u8,
        empty_windows: EmptyWindows,
    },
}

#[derive(Debug, Clone)]
enum From {
    Beginning,
    /// After an SCN near the buffer's range (offset from the last SCN, may be past it).
    After(u64),
    /// Inside window `last - back` after `k` events.
    Mid(u64, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0i64..20, 0usize..300, 1u64..4).prop_map(|(key, payload_len, gap)| Op::Append { key, payload_len, gap }),
        3 => (1u64..4).prop_map(|gap| Op::EndWindow { gap }),
        1 => Just(Op::Rollback),
        4 => (
            prop_oneof![
                1 => Just(From::Beginning),
                3 => (0u64..60).prop_map(From::After),
                2 => (0u64..60, 0u32..6).prop_map(|(b, k)| From::Mid(b, k)),
            ],
            prop_oneof![Just(1usize), 1usize..700, Just(1 << 20)],
            0u8..3,
            prop_oneof![Just(EmptyWindows::Every), Just(EmptyWindows::Coalesce)],
        )
            .prop_map(|(from, budget, filter, empty_windows)| Op::Read { from, budget, filter, empty_windows }),
    ]
}

fn keep(filter: u8, key: &Key) -> bool {
    match (filter, key) {
        (0, _) => true,
        (1, Key::Int(k)) => k % 2 == 0,
        (2, Key::Int(k)) => k % 3 != 0,
        _ => false,
    }
}

fn padded(len: u64) -> u64 {
    (len + 7) & !7
}

#[derive(Debug)]
struct Window {
    scn: Scn,
    end: u64,
    events: Vec<Event>,
    marker: Event,
}

/// The reference.
#[derive(Debug, Default)]
struct Model {
    capacity: u64,
    windows: VecDeque<Window>,
    prev_scn: Option<Scn>,
    max_scn: Option<Scn>,
    last_scn: u64,
    open: Option<(Scn, Vec<Event>)>,
    head: u64,
    window_start: u64,
    write_pos: u64,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    checkpoint: Checkpoint,
    events_copied: u64,
    events_scanned: u64,
    windows_completed: u64,
    windows_coalesced: u64,
    bytes_copied: u64,
    more_available: bool,
}

impl Model {
    fn rollback(&mut self) {
        self.open = None;
        self.write_pos = self.window_start;
    }

    /// The documented layout: pad to the ring start when a frame would straddle the end; refuse windows
    /// spanning more than the capacity; evict whole windows from the head.
    fn reserve(&mut self, len: u64, scn: Scn) -> Result<(), AppendError> {
        let padded = padded(len);
        let phys = self.write_pos % self.capacity;
        let pad = if phys + padded > self.capacity {
            self.capacity - phys
        } else {
            0
        };
        let end = self.write_pos + pad + padded;
        if end - self.window_start > self.capacity {
            let unpadded = self.write_pos - self.window_start + padded;
            let window_bytes = if unpadded > self.capacity {
                unpadded
            } else {
                end - self.window_start
            };
            self.rollback();
            return Err(AppendError::WindowTooLarge {
                scn,
                window_bytes,
                capacity_bytes: self.capacity,
            });
        }
        while end > self.head + self.capacity {
            let w = self
                .windows
                .pop_front()
                .expect("the open window never needs more than the capacity");
            self.head = w.end;
            self.prev_scn = Some(w.scn);
        }
        self.write_pos = end;
        Ok(())
    }

    fn append(&mut self, event: Event) -> Result<(), AppendError> {
        match &self.open {
            Some((open, _)) if *open != event.scn => {
                return Err(AppendError::ScnMismatch {
                    open: *open,
                    got: event.scn,
                });
            }
            None if event.scn.get() <= self.last_scn => {
                return Err(AppendError::ScnRegression {
                    last: Scn::new(self.last_scn),
                    got: event.scn,
                });
            }
            _ => {}
        }
        self.reserve(event.to_frame().len() as u64, event.scn)?;
        self.open
            .get_or_insert_with(|| (event.scn, Vec::new()))
            .1
            .push(event);
        Ok(())
    }

    fn end_window(&mut self, scn: Scn, ts: u64) -> Result<(), AppendError> {
        match &self.open {
            Some((open, _)) if *open != scn => {
                return Err(AppendError::ScnMismatch {
                    open: *open,
                    got: scn,
                });
            }
            None if scn.get() <= self.last_scn => {
                return Err(AppendError::ScnRegression {
                    last: Scn::new(self.last_scn),
                    got: scn,
                });
            }
            _ => {}
        }
        let marker = Event::end_of_window(scn, ts);
        self.reserve(marker.to_frame().len() as u64, scn)?;
        let events = self.open.take().map(|(_, e)| e).unwrap_or_default();
        self.windows.push_back(Window {
            scn,
            end: self.write_pos,
            events,
            marker,
        });
        self.window_start = self.write_pos;
        self.last_scn = scn.get();
        self.max_scn = Some(scn);
        Ok(())
    }

    fn read(
        &self,
        from: &Checkpoint,
        budget: u64,
        filter: u8,
        empty_windows: EmptyWindows,
    ) -> Result<Outcome, ReadError> {
        let s = from.window_scn;
        if let Some(prev) = self.prev_scn {
            let missed = if from.window_offset.is_some() {
                s <= prev
            } else {
                s < prev
            };
            if missed {
                return Err(ReadError::ScnNotFound {
                    requested: s,
                    min_scn: self.windows.front().map(|w| w.scn),
                    max_scn: self.max_scn,
                    prev_scn: self.prev_scn,
                });
            }
        }
        let mut o = Outcome {
            events: Vec::new(),
            checkpoint: from.clone(),
            events_copied: 0,
            events_scanned: 0,
            windows_completed: 0,
            windows_coalesced: 0,
            bytes_copied: 0,
            more_available: false,
        };
        let coalesce = empty_windows == EmptyWindows::Coalesce;
        // The marker held back for the run of windows the read copied nothing of (Coalesce only).
        let mut held: Option<&Event> = None;
        let end = |o: &mut Outcome, held: Option<&Event>, more: bool| {
            if let Some(marker) = held {
                o.events.push(marker.clone());
                o.bytes_copied += marker.to_frame().len() as u64;
                o.windows_completed += 1;
            }
            o.more_available = more;
        };
        for w in &self.windows {
            let skip = match from.window_offset {
                _ if w.scn < s => continue,
                None if w.scn == s => continue,
                Some(k) if w.scn == s => (k as usize).min(w.events.len()),
                _ => 0,
            };
            let mut in_window = skip as u32;
            // A window the read starts inside keeps its marker: the reader may hold its first events.
            let mut copied_in_window = from.window_offset.is_some() && w.scn == s;
            for e in &w.events[skip..] {
                let len = e.to_frame().len() as u64;
                if keep(filter, &e.key) {
                    if o.bytes_copied > 0 && o.bytes_copied + len > budget {
                        end(&mut o, held, true);
                        return Ok(o);
                    }
                    if held.take().is_some() {
                        o.windows_coalesced += 1;
                    }
                    copied_in_window = true;
                    o.events.push(e.clone());
                    o.bytes_copied += len;
                    o.events_copied += 1;
                }
                o.events_scanned += 1;
                in_window += 1;
                o.checkpoint.window_scn = w.scn;
                o.checkpoint.window_offset = Some(in_window);
            }
            let len = w.marker.to_frame().len() as u64;
            if o.bytes_copied > 0 && o.bytes_copied + len > budget {
                end(&mut o, held, true);
                return Ok(o);
            }
            if coalesce && !copied_in_window {
                if held.replace(&w.marker).is_some() {
                    o.windows_coalesced += 1;
                }
            } else {
                o.events.push(w.marker.clone());
                o.bytes_copied += len;
                o.windows_completed += 1;
            }
            o.checkpoint.window_scn = w.scn;
            o.checkpoint.window_offset = None;
            o.checkpoint.prev_scn = Some(w.scn);
        }
        end(&mut o, held, false);
        Ok(o)
    }
}

fn real_read(
    buf: &EventBuffer,
    from: &Checkpoint,
    budget: usize,
    filter: u8,
    empty_windows: EmptyWindows,
) -> Result<Outcome, ReadError> {
    let mut out = Vec::new();
    let f = |_: &FrameHeader, key: KeyRef<'_>| keep(filter, &key.to_owned());
    let r = match (filter, empty_windows) {
        (0, EmptyWindows::Every) => buf.read(from, budget, &mut out)?,
        (_, EmptyWindows::Every) => buf.read_filtered(from, budget, &f, &mut out)?,
        (0, _) => buf.read_with(from, budget, None, empty_windows, &mut out)?,
        (_, _) => buf.read_with(from, budget, Some(&f), empty_windows, &mut out)?,
    };
    let events = EventView::parse_all(&out)
        .expect("whole, valid frames")
        .into_iter()
        .map(Event::from)
        .collect();
    Ok(Outcome {
        events,
        checkpoint: r.checkpoint,
        events_copied: r.events_copied,
        events_scanned: r.events_scanned,
        windows_completed: r.windows_completed,
        windows_coalesced: r.windows_coalesced,
        bytes_copied: r.bytes_copied,
        more_available: r.more_available,
    })
}

fn run(capacity: usize, block: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut writer, buf): (BufferWriter, _) = event_buffer(BufferConfig {
        capacity_bytes: capacity,
        index_block_bytes: block,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index: false,
        huge_pages: false,
    })
    .unwrap();
    let mut model = Model {
        capacity: capacity as u64,
        ..Model::default()
    };
    let mut ts = 0;
    for op in ops {
        ts += 1;
        match op {
            Op::Append {
                key,
                payload_len,
                gap,
            } => {
                let scn = model
                    .open
                    .as_ref()
                    .map_or(Scn::new(model.last_scn + gap), |(s, _)| *s);
                let event = Event {
                    scn,
                    opcode: Opcode::Upsert,
                    source: SourceId::new(1),
                    partition: PartitionId::new(0),
                    timestamp_ns: ts,
                    schema: SchemaId::new(3),
                    key: Key::Int(key),
                    payload: vec![key as u8; payload_len],
                };
                let real = writer.append(&event.builder());
                let expected = model.append(event);
                prop_assert_eq!(real, expected);
            }
            Op::EndWindow { gap } => {
                let scn = model
                    .open
                    .as_ref()
                    .map_or(Scn::new(model.last_scn + gap), |(s, _)| *s);
                let real = writer.end_window(scn, ts).map(|_| ());
                prop_assert_eq!(real, model.end_window(scn, ts));
            }
            Op::Rollback => {
                writer.rollback();
                model.rollback();
            }
            Op::Read {
                from,
                budget,
                filter,
                empty_windows,
            } => {
                let checkpoint = match from {
                    From::Beginning => Checkpoint::beginning(),
                    From::After(back) => {
                        Checkpoint::after(Scn::new((model.last_scn + 2).saturating_sub(back)))
                    }
                    From::Mid(back, k) => {
                        let mut c = Checkpoint::beginning();
                        c.window_scn = Scn::new((model.last_scn + 1).saturating_sub(back));
                        c.window_offset = Some(k);
                        c
                    }
                };
                let real = real_read(&buf, &checkpoint, budget, filter, empty_windows);
                let expected = model.read(&checkpoint, budget as u64, filter, empty_windows);
                prop_assert_eq!(
                    real,
                    expected,
                    "read from {:?} budget {} filter {} {:?}",
                    checkpoint,
                    budget,
                    filter,
                    empty_windows
                );
            }
        }
        let stats = buf.stats();
        prop_assert_eq!(stats.prev_scn, model.prev_scn);
        prop_assert_eq!(stats.min_scn, model.windows.front().map(|w| w.scn));
        prop_assert_eq!(stats.max_scn, model.max_scn);
        prop_assert_eq!(stats.windows_held, model.windows.len() as u64);
        prop_assert_eq!(
            stats.events_held,
            model
                .windows
                .iter()
                .map(|w| w.events.len() as u64)
                .sum::<u64>()
        );
        prop_assert!(stats.bytes_held <= stats.capacity_bytes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn buffer_agrees_with_the_model(
        capacity in prop_oneof![Just(512usize), Just(1000), Just(2048), Just(4096)],
        block in prop_oneof![Just(64usize), Just(200), Just(512)],
        ops in prop::collection::vec(op(), 1..250),
    ) {
        run(capacity, block, ops)?;
    }
}
