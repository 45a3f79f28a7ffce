//! The buffer's contract, rule by rule, through the public API.

#![cfg(not(loom))]

use std::collections::BTreeSet;

use databus_buffer::{
    AppendError, BufferConfig, BufferError, BufferWriter, EmptyWindows, EventBuffer, ReadError,
    ReadOutcome, WaitOutcome, event_buffer,
};
use databus_core::frame::HEADER_LEN;
use databus_core::{Checkpoint, Event, EventBuilder, EventView, Key, KeyRef, Opcode, Scn};

fn scn(v: u64) -> Scn {
    Scn::new(v)
}

fn payload(scn: u64, i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{scn}:{i}:").into_bytes();
    p.resize(len.max(p.len()), b'x');
    p
}

/// Appends a window of `n` events with `len`-byte payloads, keys 0..n, and closes it.
fn window(w: &mut BufferWriter, s: u64, n: u64, len: usize) {
    for i in 0..n {
        let p = payload(s, i, len);
        w.append(
            &EventBuilder::new(scn(s), Opcode::Upsert)
                .key(KeyRef::Int(i as i64))
                .payload(&p),
        )
        .unwrap();
    }
    w.end_window(scn(s), s * 1000).unwrap();
}

fn frame_len(len: usize) -> usize {
    HEADER_LEN + 8 + len
}

fn read(
    buf: &EventBuffer,
    from: &Checkpoint,
    budget: usize,
) -> Result<(Vec<Event>, ReadOutcome), ReadError> {
    let mut out = Vec::new();
    let outcome = buf.read(from, budget, &mut out)?;
    let events = EventView::parse_all(&out)
        .unwrap()
        .into_iter()
        .map(Event::from)
        .collect();
    Ok((events, outcome))
}

/// (scn, key) of data events, and scn of end markers as key -1.
fn ids(events: &[Event]) -> Vec<(u64, i64)> {
    events
        .iter()
        .map(|e| match (&e.opcode, &e.key) {
            (Opcode::Control(_), _) => (e.scn.get(), -1),
            (_, Key::Int(k)) => (e.scn.get(), *k),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn mid(s: u64, k: u32, prev: Option<u64>) -> Checkpoint {
    let mut c = Checkpoint::after(Scn::ZERO);
    c.window_scn = scn(s);
    c.window_offset = Some(k);
    c.prev_scn = prev.map(scn);
    c
}

#[test]
fn config_is_validated() {
    let err = event_buffer(BufferConfig::new(63)).unwrap_err();
    assert!(
        matches!(err, BufferError::InvalidConfig(ref m) if m.contains("63")),
        "{err}"
    );
    let err = event_buffer(BufferConfig {
        capacity_bytes: 4096,
        index_block_bytes: 8,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index: false,
        huge_pages: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("index_block_bytes 8"), "{err}");
    let (_, buf) = event_buffer(BufferConfig::new(1001)).unwrap();
    assert_eq!(buf.stats().capacity_bytes, 1000);
}

#[test]
fn events_become_visible_only_when_their_window_ends() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    for i in 0..3 {
        w.append(&EventBuilder::new(scn(5), Opcode::Upsert).key(KeyRef::Int(i)))
            .unwrap();
        let (events, outcome) = read(&buf, &Checkpoint::beginning(), 1 << 20).unwrap();
        assert!(events.is_empty());
        assert_eq!(outcome.checkpoint, Checkpoint::beginning());
        assert!(!buf.has_data_after(&Checkpoint::beginning()));
    }
    assert_eq!(buf.stats().windows_held, 0);
    let info = w.end_window(scn(5), 77).unwrap();
    assert_eq!((info.scn, info.events), (scn(5), 3));
    let (events, outcome) = read(&buf, &Checkpoint::beginning(), 1 << 20).unwrap();
    assert_eq!(ids(&events), vec![(5, 0), (5, 1), (5, 2), (5, -1)]);
    assert_eq!(events[3].timestamp_ns, 77);
    assert_eq!(outcome.checkpoint, Checkpoint::after(scn(5)));
    assert_eq!((outcome.events_copied, outcome.windows_completed), (3, 1));
    assert!(!outcome.more_available);
    let stats = buf.stats();
    assert_eq!((stats.windows_held, stats.events_held), (1, 3));
    assert_eq!(
        (stats.min_scn, stats.max_scn, stats.prev_scn),
        (Some(scn(5)), Some(scn(5)), None)
    );
}

#[test]
fn rollback_discards_the_open_window_only() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 3, 2, 10);
    for i in 0..4 {
        w.append(&EventBuilder::new(scn(4), Opcode::Upsert).key(KeyRef::Int(100 + i)))
            .unwrap();
    }
    w.rollback();
    assert_eq!(w.open_window(), None);
    // The same SCN may be written again after a rollback (the connector retries the transaction).
    window(&mut w, 4, 1, 10);
    let (events, _) = read(&buf, &Checkpoint::beginning(), 1 << 20).unwrap();
    assert_eq!(ids(&events), vec![(3, 0), (3, 1), (3, -1), (4, 0), (4, -1)]);
    assert_eq!(buf.stats().events_held, 3);
}

#[test]
fn empty_windows_are_heartbeats() {
    let (mut w, buf) = event_buffer(BufferConfig::new(4096)).unwrap();
    let info = w.end_window(scn(9), 1).unwrap();
    assert_eq!((info.events, info.bytes), (0, HEADER_LEN as u64));
    let (events, outcome) = read(&buf, &Checkpoint::beginning(), 1).unwrap();
    assert_eq!(ids(&events), vec![(9, -1)]);
    assert_eq!(outcome.checkpoint, Checkpoint::after(scn(9)));
}

#[test]
fn window_scns_must_increase_and_match() {
    let (mut w, _buf) = event_buffer(BufferConfig::new(4096)).unwrap();
    window(&mut w, 10, 1, 1);
    let regress = |w: &mut BufferWriter, s| {
        w.append(&EventBuilder::new(scn(s), Opcode::Delete))
            .unwrap_err()
    };
    assert_eq!(
        regress(&mut w, 10),
        AppendError::ScnRegression {
            last: scn(10),
            got: scn(10)
        }
    );
    assert_eq!(
        regress(&mut w, 3),
        AppendError::ScnRegression {
            last: scn(10),
            got: scn(3)
        }
    );
    assert_eq!(
        w.end_window(scn(10), 0).unwrap_err(),
        AppendError::ScnRegression {
            last: scn(10),
            got: scn(10)
        }
    );
    w.append(&EventBuilder::new(scn(11), Opcode::Delete))
        .unwrap();
    assert_eq!(
        regress(&mut w, 12),
        AppendError::ScnMismatch {
            open: scn(11),
            got: scn(12)
        }
    );
    assert_eq!(
        w.end_window(scn(12), 0).unwrap_err(),
        AppendError::ScnMismatch {
            open: scn(11),
            got: scn(12)
        }
    );
    assert_eq!(
        w.append(&EventBuilder::end_of_window(scn(11), 0))
            .unwrap_err(),
        AppendError::ControlEvent
    );
    // The failed calls left the open window as it was.
    assert_eq!(w.end_window(scn(11), 0).unwrap().events, 1);
    // SCN 0 is "before everything": never a window.
    let (mut w, _buf) = event_buffer(BufferConfig::new(4096)).unwrap();
    assert_eq!(
        regress(&mut w, 0),
        AppendError::ScnRegression {
            last: scn(0),
            got: scn(0)
        }
    );
}

#[test]
fn a_window_larger_than_the_buffer_is_refused_naming_both_sizes() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1024)).unwrap();
    window(&mut w, 1, 1, 100);
    let p = vec![7u8; 300];
    let mut err = None;
    for i in 0..10 {
        match w.append(
            &EventBuilder::new(scn(2), Opcode::Upsert)
                .key(KeyRef::Int(i))
                .payload(&p),
        ) {
            Ok(()) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("a 10 x 364-byte window cannot fit 1024 bytes");
    let AppendError::WindowTooLarge {
        scn: s,
        window_bytes,
        capacity_bytes,
    } = err.clone()
    else {
        panic!("{err:?}")
    };
    assert_eq!((s, capacity_bytes), (scn(2), 1024));
    assert!(window_bytes > 1024);
    let msg = err.to_string();
    assert!(
        msg.contains(&window_bytes.to_string()) && msg.contains("1024"),
        "{msg}"
    );
    // Nothing of the window is visible, and the writer carries on.
    assert_eq!(w.open_window(), None);
    assert!(!buf.has_data_after(&Checkpoint::after(scn(1))));
    w.end_window(scn(2), 0).unwrap();
    let (events, _) = read(&buf, &Checkpoint::after(scn(1)), 1 << 20).unwrap();
    assert_eq!(ids(&events), vec![(2, -1)]);
    // A single event larger than the buffer.
    let big = vec![0u8; 2000];
    let err = w
        .append(&EventBuilder::new(scn(3), Opcode::Upsert).payload(&big))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::WindowTooLarge {
                window_bytes: 2056,
                capacity_bytes: 1024,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn eviction_removes_whole_windows_oldest_first() {
    let (mut w, buf) = event_buffer(BufferConfig {
        capacity_bytes: 2048,
        index_block_bytes: 64,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index: false,
        huge_pages: false,
    })
    .unwrap();
    // Each window: 3 events of 64+8+56 = 128 bytes + a 56-byte marker = 440 bytes.
    let mut evicted = 0;
    for s in 1..=40u64 {
        window(&mut w, s * 10, 3, 64);
        let stats = buf.stats();
        assert!(stats.bytes_held <= 2048);
        assert_eq!(stats.events_held, 3 * stats.windows_held);
        if let Some(prev) = stats.prev_scn {
            evicted += 1;
            assert_eq!(prev.get() + 10, stats.min_scn.unwrap().get());
        }
    }
    assert!(evicted > 30);
    let stats = buf.stats();
    assert_eq!(stats.max_scn, Some(scn(400)));
    assert_eq!(stats.windows_held, 4);
    let min = stats.min_scn.unwrap().get();
    let (events, outcome) =
        read(&buf, &Checkpoint::after(stats.prev_scn.unwrap()), 1 << 20).unwrap();
    let mut expected = Vec::new();
    for s in (min..=400).step_by(10) {
        expected.extend([(s, 0), (s, 1), (s, 2), (s, -1)]);
    }
    assert_eq!(ids(&events), expected);
    assert_eq!(outcome.checkpoint, Checkpoint::after(scn(400)));
}

#[test]
fn prev_scn_decides_between_serving_from_the_head_and_scn_not_found() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1024)).unwrap();
    for s in (10..=200).step_by(10) {
        window(&mut w, s, 2, 100);
    }
    let stats = buf.stats();
    let (prev, min, max) = (
        stats.prev_scn.unwrap(),
        stats.min_scn.unwrap(),
        stats.max_scn.unwrap(),
    );
    assert!(prev < min);
    // At prev_scn, or between prev_scn and min_scn (SCNs are sparse): nothing was missed.
    for s in [prev.get(), prev.get() + 1, min.get() - 1] {
        let (events, _) = read(&buf, &Checkpoint::after(scn(s)), 1 << 20).unwrap();
        assert_eq!(events[0].scn, min, "after {s}");
    }
    // Before prev_scn: the client missed window prev_scn.
    for from in [
        Checkpoint::after(scn(prev.get() - 1)),
        Checkpoint::beginning(),
        mid(prev.get(), 1, None),
    ] {
        let err = read(&buf, &from, 1 << 20).unwrap_err();
        assert_eq!(
            err,
            ReadError::ScnNotFound {
                requested: from.window_scn,
                min_scn: Some(min),
                max_scn: Some(max),
                prev_scn: Some(prev)
            }
        );
        assert!(
            buf.has_data_after(&from),
            "a long poll returns at once on ScnNotFound"
        );
    }
    let msg = read(&buf, &Checkpoint::beginning(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("{min}..={max}")) && msg.contains("bootstrap"),
        "{msg}"
    );
}

#[test]
fn a_buffer_that_never_evicted_serves_every_checkpoint() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 100, 1, 1);
    let (events, _) = read(&buf, &Checkpoint::beginning(), 1 << 20).unwrap();
    assert_eq!(events.len(), 2);
    let (events, _) = read(&buf, &Checkpoint::after(scn(50)), 1 << 20).unwrap();
    assert_eq!(events.len(), 2);
    // An empty buffer: nothing yet, no error.
    let (_, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    let (events, outcome) = read(&buf, &Checkpoint::after(scn(7)), 1 << 20).unwrap();
    assert!(events.is_empty() && !outcome.more_available);
}

#[test]
fn sparse_scns_continue_at_the_next_window_through_the_index() {
    let (mut w, buf) = event_buffer(BufferConfig {
        capacity_bytes: 128 << 10,
        index_block_bytes: 256,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index: false,
        huge_pages: false,
    })
    .unwrap();
    let scns: Vec<u64> = (1..=3000u64).map(|i| i * 7 + (i % 3)).collect();
    for &s in &scns {
        window(&mut w, s, s % 3, 20);
    }
    assert!(buf.stats().prev_scn.is_some(), "the test should wrap");
    let stats = buf.stats();
    let held: Vec<u64> = scns
        .iter()
        .copied()
        .filter(|&s| s >= stats.min_scn.unwrap().get())
        .collect();
    for probe in (stats.prev_scn.unwrap().get()..=scns[scns.len() - 1] + 2).step_by(3) {
        let (events, _) = read(&buf, &Checkpoint::after(scn(probe)), 1).unwrap();
        let next = held.iter().find(|&&s| s > probe);
        assert_eq!(
            events.first().map(|e| e.scn.get()),
            next.copied(),
            "after {probe}"
        );
    }
}

#[test]
fn a_read_after_the_newest_window_returns_nothing() {
    let (mut w, buf) = event_buffer(BufferConfig::new(4096)).unwrap();
    window(&mut w, 5, 2, 5);
    for from in [Checkpoint::after(scn(5)), Checkpoint::after(scn(500))] {
        let (events, outcome) = read(&buf, &from, 1 << 20).unwrap();
        assert!(events.is_empty());
        assert_eq!(outcome.checkpoint, from);
        assert!(!outcome.more_available);
        assert!(!buf.has_data_after(&from));
    }
}

#[test]
fn mid_window_checkpoints_resume_after_the_events_delivered() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 10, 2, 5);
    window(&mut w, 20, 5, 5);
    window(&mut w, 30, 1, 5);
    let (events, outcome) = read(&buf, &mid(20, 2, Some(10)), 1 << 20).unwrap();
    assert_eq!(
        ids(&events),
        vec![(20, 2), (20, 3), (20, 4), (20, -1), (30, 0), (30, -1)]
    );
    assert_eq!(outcome.checkpoint.prev_scn, Some(scn(30)));
    // Every event delivered: only the end marker remains.
    let (events, _) = read(&buf, &mid(20, 5, Some(10)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (20, -1));
    // A window that does not exist: continue at the next one.
    let (events, _) = read(&buf, &mid(25, 1, Some(20)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (30, 0));
}

#[test]
fn reads_respect_the_byte_budget_and_resume_exactly() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 1, 10, 136); // 200-byte frames
    window(&mut w, 2, 3, 136);
    let (all, _) = read(&buf, &Checkpoint::beginning(), 1 << 20).unwrap();
    let (events, outcome) = read(&buf, &Checkpoint::beginning(), 500).unwrap();
    assert_eq!(ids(&events), vec![(1, 0), (1, 1)]);
    assert_eq!(outcome.bytes_copied, 400);
    assert!(outcome.more_available);
    assert_eq!(outcome.checkpoint, mid(1, 2, None));
    // A budget below one event still makes progress: exactly one frame.
    let (events, outcome) = read(&buf, &Checkpoint::beginning(), 1).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(outcome.bytes_copied, frame_len(136) as u64);
    // Following checkpoints with small budgets yields exactly the whole stream.
    for budget in [1, 199, 200, 456, 1000] {
        let mut from = Checkpoint::beginning();
        let mut got = Vec::new();
        loop {
            let (events, outcome) = read(&buf, &from, budget).unwrap();
            if events.is_empty() {
                break;
            }
            assert!(outcome.bytes_copied as usize <= budget.max(frame_len(136)));
            got.extend(events);
            from = outcome.checkpoint;
        }
        assert_eq!(got, all, "budget {budget}");
        assert_eq!(from, Checkpoint::after(scn(2)));
    }
}

#[test]
fn filters_skip_events_without_copying_them_and_offsets_count_all_events() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 1, 6, 100);
    let bytes_key = b"user-7".to_vec();
    w.append(&EventBuilder::new(scn(2), Opcode::Delete).key(KeyRef::Bytes(&bytes_key)))
        .unwrap();
    w.end_window(scn(2), 0).unwrap();
    let seen = std::cell::RefCell::new(BTreeSet::new());
    let even = |h: &databus_core::FrameHeader, key: KeyRef<'_>| {
        seen.borrow_mut().insert(format!("{}:{key}", h.scn()));
        match key {
            KeyRef::Int(k) => k % 2 == 0,
            KeyRef::Bytes(b) => b == b"user-7",
            KeyRef::None => false,
        }
    };
    let mut out = Vec::new();
    let outcome = buf
        .read_filtered(&Checkpoint::beginning(), 1 << 20, &even, &mut out)
        .unwrap();
    let events: Vec<Event> = EventView::parse_all(&out)
        .unwrap()
        .into_iter()
        .map(Event::from)
        .collect();
    assert_eq!(ids(&events[..4]), vec![(1, 0), (1, 2), (1, 4), (1, -1)]);
    assert_eq!(events[4].key, Key::Bytes(bytes_key.clone()));
    assert_eq!(
        (
            outcome.events_copied,
            outcome.events_scanned,
            outcome.windows_completed
        ),
        (4, 7, 2)
    );
    assert_eq!(outcome.bytes_copied as usize, out.len());
    assert_eq!(
        out.len(),
        3 * frame_len(100) + 2 * HEADER_LEN + HEADER_LEN + bytes_key.len()
    );
    assert!(seen.borrow().contains("1:5") && seen.borrow().contains("2:\"user-7\""));
    // Budget for two kept events: the checkpoint counts the dropped events scanned before the stop.
    let mut out = Vec::new();
    let outcome = buf
        .read_filtered(
            &Checkpoint::beginning(),
            2 * frame_len(100),
            &even,
            &mut out,
        )
        .unwrap();
    assert_eq!(outcome.events_copied, 2);
    assert_eq!(outcome.checkpoint, mid(1, 4, None));
    let mut out = Vec::new();
    buf.read_filtered(&outcome.checkpoint, 1 << 20, &even, &mut out)
        .unwrap();
    let events: Vec<Event> = EventView::parse_all(&out)
        .unwrap()
        .into_iter()
        .map(Event::from)
        .collect();
    assert_eq!(ids(&events[..2]), vec![(1, 4), (1, -1)]);
}

#[test]
fn errors_leave_the_output_untouched() {
    let (mut w, buf) = event_buffer(BufferConfig::new(512)).unwrap();
    for s in 1..=10 {
        window(&mut w, s, 1, 100);
    }
    let mut out = vec![1, 2, 3];
    assert!(
        buf.read(&Checkpoint::beginning(), 1 << 20, &mut out)
            .is_err()
    );
    assert_eq!(out, vec![1, 2, 3]);
    // Successful reads append.
    let from = Checkpoint::after(buf.stats().prev_scn.unwrap());
    buf.read(&from, 1 << 20, &mut out).unwrap();
    assert_eq!(&out[..3], &[1, 2, 3]);
    assert!(EventView::parse_all(&out[3..]).is_ok());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_long_poll_is_woken_by_the_writer() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 1, 1, 1);
    let from = Checkpoint::after(scn(1));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    let waiter = {
        let buf = buf.clone();
        let from = from.clone();
        tokio::spawn(async move { buf.wait_for_data_after(&from, deadline).await })
    };
    // Let the waiter register (the clock is paused and only moves when every task is idle, so a waiter
    // that was not woken would time out and fail the assertion below).
    while buf.waiting_readers() == 0 {
        tokio::task::yield_now().await;
    }
    window(&mut w, 2, 1, 1);
    assert_eq!(waiter.await.unwrap(), WaitOutcome::Ready);
    assert!(tokio::time::Instant::now() < deadline);
    assert_eq!(buf.waiting_readers(), 0);
    // Data already there: returns at once.
    assert_eq!(
        buf.wait_for_data_after(&from, deadline).await,
        WaitOutcome::Ready
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_long_poll_times_out_at_its_deadline() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    window(&mut w, 1, 1, 1);
    let start = tokio::time::Instant::now();
    let deadline = start + std::time::Duration::from_millis(1500);
    let outcome = buf
        .wait_for_data_after(&Checkpoint::after(scn(1)), deadline)
        .await;
    assert_eq!(outcome, WaitOutcome::TimedOut);
    assert!(tokio::time::Instant::now() >= deadline);
    // A heartbeat counts as data (clients need it to advance).
    w.end_window(scn(2), 0).unwrap();
    assert_eq!(
        buf.wait_for_data_after(&Checkpoint::after(scn(1)), deadline)
            .await,
        WaitOutcome::Ready
    );
}

#[test]
fn index_lookups_land_on_the_right_event() {
    // Small blocks: every window gets its own index entry, so lookups jump straight to the window (or to
    // its end when the checkpoint covers it).
    let (mut w, buf) = event_buffer(BufferConfig {
        capacity_bytes: 1 << 16,
        index_block_bytes: 64,
        awaits_anchor: false,
        prefault: databus_buffer::Prefault::default(),
        side_index: false,
        huge_pages: false,
    })
    .unwrap();
    for s in [10, 20, 30] {
        window(&mut w, s, 5, 50);
    }
    let (events, _) = read(&buf, &mid(20, 2, Some(10)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[..2], [(20, 2), (20, 3)]);
    let (events, _) = read(&buf, &mid(20, 0, Some(10)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (20, 0));
    let (events, _) = read(&buf, &Checkpoint::after(scn(20)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (30, 0));
    let (events, _) = read(&buf, &Checkpoint::after(scn(25)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (30, 0));
    let (events, _) = read(&buf, &mid(25, 3, Some(20)), 1 << 20).unwrap();
    assert_eq!(ids(&events)[0], (30, 0));
}

#[test]
fn the_writer_moves_to_its_thread_and_the_buffer_is_shared() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<BufferWriter>();
    send_sync::<EventBuffer>();
    send_sync::<std::sync::Arc<EventBuffer>>();
}

#[test]
fn a_buffer_awaiting_its_anchor_neither_serves_nor_refuses_and_refuses_windows() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16).awaiting_anchor()).unwrap();
    let mut out = Vec::new();
    for from in [Checkpoint::beginning(), Checkpoint::after(scn(55))] {
        assert_eq!(
            buf.read(&from, 1 << 20, &mut out),
            Err(ReadError::NotAnchored)
        );
        assert!(!buf.has_data_after(&from));
    }
    assert!(!buf.stats().anchored);
    assert_eq!(buf.stats().prev_scn, None);
    // Nothing can be published before the origin is known.
    let event = EventBuilder::new(scn(107), Opcode::Upsert).key(KeyRef::Int(1));
    assert_eq!(
        w.append(&event),
        Err(AppendError::NotAnchored { scn: scn(107) })
    );
    assert_eq!(
        w.end_window(scn(107), 0),
        Err(AppendError::NotAnchored { scn: scn(107) })
    );
    assert!(out.is_empty());
}

#[test]
fn an_anchored_buffer_refuses_checkpoints_before_its_origin_and_serves_those_after() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16).awaiting_anchor()).unwrap();
    // The relay persisted SCN 106 before its restart; it positions its source there.
    w.anchor(scn(106)).unwrap();
    assert!(buf.stats().anchored);
    assert_eq!(buf.stats().prev_scn, Some(scn(106)));
    let mut out = Vec::new();
    // Before any window: an old checkpoint is refused at once, the origin itself waits.
    assert!(matches!(
        buf.read(&Checkpoint::after(scn(55)), 1 << 20, &mut out),
        Err(ReadError::ScnNotFound { requested, prev_scn: Some(p), .. }) if requested == scn(55) && p == scn(106)
    ));
    assert!(buf.has_data_after(&Checkpoint::after(scn(55))));
    assert_eq!(
        buf.read(&Checkpoint::after(scn(106)), 1 << 20, &mut out)
            .map(|o| o.events_copied),
        Ok(0)
    );
    // A window at or before the origin cannot be published.
    assert_eq!(
        w.end_window(scn(106), 0),
        Err(AppendError::ScnRegression {
            last: scn(106),
            got: scn(106)
        })
    );
    window(&mut w, 112, 2, 8);
    // The first new window is served to the origin, never to the old checkpoint.
    let o = buf
        .read(&Checkpoint::after(scn(106)), 1 << 20, &mut out)
        .unwrap();
    assert_eq!((o.events_copied, o.windows_completed), (2, 1));
    out.clear();
    assert!(matches!(
        buf.read(&Checkpoint::after(scn(55)), 1 << 20, &mut out),
        Err(ReadError::ScnNotFound { .. })
    ));
    assert!(out.is_empty());
    // Once a window is published the origin is history: it cannot move.
    assert_eq!(
        w.anchor(scn(111)),
        Err(AppendError::AlreadyPublished { last: scn(112) })
    );
}

#[test]
fn the_origin_may_move_until_the_first_window() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16).awaiting_anchor()).unwrap();
    // A history refill from 56 turned out purged: the relay moves to after its persisted 106.
    w.anchor(scn(56)).unwrap();
    assert_eq!(w.origin(), Some(scn(56)));
    w.anchor(scn(106)).unwrap();
    assert_eq!(w.origin(), Some(scn(106)));
    window(&mut w, 107, 1, 8);
    assert_eq!(w.origin(), None);
    let mut out = Vec::new();
    assert!(matches!(
        buf.read(&Checkpoint::after(scn(60)), 1 << 20, &mut out),
        Err(ReadError::ScnNotFound { .. })
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn anchoring_wakes_long_polls_whose_checkpoint_it_refuses() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16).awaiting_anchor()).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    let waiter = {
        let buf = buf.clone();
        tokio::spawn(async move {
            buf.wait_for_data_after(&Checkpoint::after(scn(55)), deadline)
                .await
        })
    };
    while buf.waiting_readers() == 0 {
        tokio::task::yield_now().await;
    }
    w.anchor(scn(106)).unwrap();
    assert_eq!(waiter.await.unwrap(), WaitOutcome::Ready);
    assert!(tokio::time::Instant::now() < deadline);
}

/// Appends a window whose events have the given keys (8-byte payloads), and closes it.
fn keyed_window(w: &mut BufferWriter, s: u64, keys: &[i64]) {
    for &k in keys {
        w.append(
            &EventBuilder::new(scn(s), Opcode::Upsert)
                .key(KeyRef::Int(k))
                .payload(b"12345678"),
        )
        .unwrap();
    }
    w.end_window(scn(s), s * 1000).unwrap();
}

fn parse(out: &[u8]) -> Vec<Event> {
    EventView::parse_all(out)
        .unwrap()
        .into_iter()
        .map(Event::from)
        .collect()
}

#[test]
fn coalescing_sends_one_marker_per_run_of_windows_with_nothing_kept() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    keyed_window(&mut w, 1, &[1, 3]);
    keyed_window(&mut w, 2, &[5]);
    keyed_window(&mut w, 3, &[7, 8, 9]);
    keyed_window(&mut w, 4, &[11]);
    w.end_window(scn(5), 5000).unwrap(); // a heartbeat
    keyed_window(&mut w, 6, &[13]);
    let even = |_: &databus_core::FrameHeader, key: KeyRef<'_>| matches!(key, KeyRef::Int(k) if k % 2 == 0);
    let mut out = Vec::new();
    let o = buf
        .read_with(
            &Checkpoint::beginning(),
            1 << 20,
            Some(&even),
            EmptyWindows::Coalesce,
            &mut out,
        )
        .unwrap();
    // Windows 1-2 are covered by window 3's event; 4-6 by window 6's marker, the last of the read.
    assert_eq!(ids(&parse(&out)), vec![(3, 8), (3, -1), (6, -1)]);
    assert_eq!(o.checkpoint, Checkpoint::after(scn(6)));
    assert_eq!(
        (
            o.events_copied,
            o.events_scanned,
            o.windows_completed,
            o.windows_coalesced
        ),
        (1, 8, 2, 4)
    );
    assert_eq!(o.bytes_copied as usize, out.len());
    // The same read with every marker, for comparison: one per window.
    let mut every = Vec::new();
    let o = buf
        .read_filtered(&Checkpoint::beginning(), 1 << 20, &even, &mut every)
        .unwrap();
    assert_eq!((o.windows_completed, o.windows_coalesced), (6, 0));
    assert_eq!(o.checkpoint, Checkpoint::after(scn(6)));
    // A reader resuming from the coalesced read's checkpoint gets nothing more: nothing is re-read.
    let mut more = Vec::new();
    let o = buf
        .read_with(
            &Checkpoint::after(scn(6)),
            1 << 20,
            Some(&even),
            EmptyWindows::Coalesce,
            &mut more,
        )
        .unwrap();
    assert!(more.is_empty() && o.checkpoint == Checkpoint::after(scn(6)));
}

#[test]
fn coalescing_keeps_the_marker_of_a_window_the_read_starts_inside() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    keyed_window(&mut w, 1, &[2, 3, 5]);
    keyed_window(&mut w, 2, &[7]);
    let even = |_: &databus_core::FrameHeader, key: KeyRef<'_>| matches!(key, KeyRef::Int(k) if k % 2 == 0);
    // The budget stops the first read after the first kept event: the reader holds part of window 1.
    let mut out = Vec::new();
    let o = buf
        .read_with(
            &Checkpoint::beginning(),
            1,
            Some(&even),
            EmptyWindows::Coalesce,
            &mut out,
        )
        .unwrap();
    assert_eq!(ids(&parse(&out)), vec![(1, 2)]);
    // The dropped events after it were scanned before the marker, which did not fit.
    assert_eq!(o.checkpoint, mid(1, 3, None));
    assert!(o.more_available);
    // The rest of window 1 has nothing kept, but its marker closes what the reader holds; window 2's
    // marker, the last of the read, follows.
    let mut out = Vec::new();
    let o = buf
        .read_with(
            &o.checkpoint,
            1 << 20,
            Some(&even),
            EmptyWindows::Coalesce,
            &mut out,
        )
        .unwrap();
    assert_eq!(ids(&parse(&out)), vec![(1, -1), (2, -1)]);
    assert_eq!(o.checkpoint, Checkpoint::after(scn(2)));
}

#[test]
fn coalescing_stops_at_the_budget_with_the_held_marker() {
    let (mut w, buf) = event_buffer(BufferConfig::new(1 << 16)).unwrap();
    keyed_window(&mut w, 1, &[2]);
    keyed_window(&mut w, 2, &[3]);
    keyed_window(&mut w, 3, &[5]);
    keyed_window(&mut w, 4, &[6]);
    let even = |_: &databus_core::FrameHeader, key: KeyRef<'_>| matches!(key, KeyRef::Int(k) if k % 2 == 0);
    // Room for window 1 and one marker: window 4's event does not fit, so the read ends with the marker
    // of window 3, covering windows 2-3.
    let event = HEADER_LEN + 8 + 8;
    let mut out = Vec::new();
    let o = buf
        .read_with(
            &Checkpoint::beginning(),
            event + 2 * HEADER_LEN,
            Some(&even),
            EmptyWindows::Coalesce,
            &mut out,
        )
        .unwrap();
    assert_eq!(ids(&parse(&out)), vec![(1, 2), (1, -1), (3, -1)]);
    assert_eq!(o.checkpoint, Checkpoint::after(scn(3)));
    assert!(o.more_available);
    assert_eq!(o.bytes_copied as usize, out.len());
}

/// However the ring's pages are faulted in (by the writer, by the prefault thread racing ahead of it,
/// or all at creation), a reader gets back exactly what was written, across several laps of a ring
/// large enough (8 MiB) for the prefault thread to work in 2 MiB steps while the writer runs.
#[test]
fn every_prefault_mode_keeps_the_contents() {
    use databus_buffer::Prefault;
    for prefault in [
        Prefault::OnFirstWrite,
        Prefault::Ahead {
            ahead_bytes: 2 << 20,
        },
        Prefault::AtCreation,
    ] {
        let (mut w, buf) = event_buffer(BufferConfig::new(8 << 20).prefault(prefault)).unwrap();
        let mut from = Checkpoint::after(Scn::ZERO);
        let mut expect_scn = 1;
        let mut expect_key = 0;
        // ~25 MiB of frames: three laps of the ring, each window read back before it can be evicted.
        for s in 1..=2_000u64 {
            window(&mut w, s, 10, 1200);
            loop {
                let (events, outcome) = read(&buf, &from, 64 << 10).unwrap();
                for e in &events {
                    assert_eq!(e.scn.get(), expect_scn, "{prefault:?}");
                    match e.key {
                        Key::Int(k) => {
                            assert_eq!(k, expect_key, "{prefault:?}");
                            assert_eq!(e.payload, payload(expect_scn, k as u64, 1200));
                            expect_key += 1;
                        }
                        _ => {
                            assert_eq!(expect_key, 10, "{prefault:?}: marker after 10 events");
                            expect_scn += 1;
                            expect_key = 0;
                        }
                    }
                }
                from = outcome.checkpoint;
                if !outcome.more_available {
                    break;
                }
            }
        }
        assert_eq!(expect_scn, 2_001, "{prefault:?}: every window read");
        assert!(buf.stats().prev_scn.is_some(), "the ring was lapped");
    }
}
