//! Event buffer benchmarks: a bench binary (`harness = false`) that prints figures and ratios.
//!
//! `cargo bench -p databus-buffer` (add `-- quick` for a shorter run; `-- fresh` for the fresh-ring
//! appends only, `-- lookup` for the SCN lookups only, `-- partitioned` for the partitioned readers
//! only). Figures are recorded in docs/BENCHMARKS.md,
//! section "Event buffer".

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use databus_buffer::{
    BufferConfig, BufferWriter, DEFAULT_PREFAULT_AHEAD, EmptyWindows, EventBuffer, Prefault,
    ReadError, WaitOutcome, event_buffer,
};
use databus_core::{Checkpoint, EventBuilder, FrameHeader, KeyRef, Opcode, Scn};
use databus_filters::{Filter, FilterSpec};

const EVENTS_PER_WINDOW: u64 = 10;

struct Feed {
    scn: u64,
    payload: Vec<u8>,
}

impl Feed {
    fn new(payload_len: usize) -> Self {
        Feed {
            scn: 0,
            payload: vec![0xab; payload_len],
        }
    }

    /// Writes one window of `events` events; returns events written (markers not counted).
    fn window(&mut self, w: &mut BufferWriter, events: u64) -> u64 {
        self.window_after_gap(w, events, 1)
    }

    /// Writes one window of `events` events at an SCN `gap` above the last one.
    fn window_after_gap(&mut self, w: &mut BufferWriter, events: u64, gap: u64) -> u64 {
        self.scn += gap;
        let scn = Scn::new(self.scn);
        for i in 0..events {
            let e = EventBuilder::new(scn, Opcode::Upsert)
                .key(KeyRef::Int(i as i64))
                .payload(&self.payload);
            w.append(&e).expect("fits");
        }
        w.end_window(scn, self.scn).expect("fits");
        events
    }
}

/// Writes for `dur`; returns events per second.
fn write_for(w: &mut BufferWriter, feed: &mut Feed, dur: Duration) -> f64 {
    let start = Instant::now();
    let mut events = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            events += feed.window(w, EVENTS_PER_WINDOW);
        }
    }
    events as f64 / start.elapsed().as_secs_f64()
}

/// The floor under the append rate: encoding the frame alone (two CRC32C checksums and the copy) into a
/// reused scratch buffer, without the buffer.
fn encode_rate(payload_len: usize, dur: Duration) {
    let payload = vec![0xab; payload_len];
    let mut scratch = vec![0u8; 56 + 8 + payload_len];
    let start = Instant::now();
    let mut events = 0u64;
    while start.elapsed() < dur {
        for i in 0..1024 {
            let e = EventBuilder::new(Scn::new(events + 1), Opcode::Upsert)
                .key(KeyRef::Int(i))
                .payload(&payload);
            black_box(e.write(black_box(&mut scratch)));
        }
        events += 1024;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    println!(
        "encode only {payload_len:>5} B payload (no buffer): {:>6.2} M events/s",
        rate / 1e6
    );
}

/// Fills the ring once so that measurements see the steady state of a relay (the ring's pages faulted in,
/// every append evicting), not the operating system's first-touch page faults.
fn warm_up(w: &mut BufferWriter, buf: &EventBuffer, feed: &mut Feed) {
    while buf.stats().prev_scn.is_none() {
        feed.window(w, EVENTS_PER_WINDOW);
    }
}

fn append_rate(payload_len: usize, capacity: usize, dur: Duration) {
    let (mut w, buf) = event_buffer(BufferConfig::new(capacity)).unwrap();
    let mut feed = Feed::new(payload_len);
    warm_up(&mut w, &buf, &mut feed);
    let rate = write_for(&mut w, &mut feed, dur);
    let frame = 56 + 8 + payload_len;
    println!(
        "append {payload_len:>5} B payload ({frame} B frames, {EVENTS_PER_WINDOW} per window, {} MiB ring): {:>6.2} M events/s, {:>5.2} GB/s",
        capacity >> 20,
        rate / 1e6,
        rate * frame as f64 / 1e9
    );
}

/// A reader that follows the stream as a relay client would: reads in 256 KiB batches, sleeps 1 ms when
/// caught up, and with `think` pauses that long after every batch (a slow HTTP client).
fn follower(buf: Arc<EventBuffer>, stop: Arc<AtomicBool>, think: Option<Duration>) -> u64 {
    let mut out = Vec::with_capacity(512 << 10);
    let mut from = Checkpoint::after(Scn::new(buf.stats().max_scn.map_or(0, |s| s.get())));
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        match buf.read(&from, 256 << 10, &mut out) {
            Ok(o) => {
                bytes += o.bytes_copied;
                from = o.checkpoint;
                if let Some(think) = think {
                    std::thread::sleep(think);
                } else if !o.more_available {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(ReadError::ScnNotFound { prev_scn, .. }) => {
                from = Checkpoint::after(prev_scn.unwrap_or(Scn::ZERO));
            }
            Err(e) => panic!("{e}"),
        }
    }
    bytes
}

fn writer_with_readers(dur: Duration) {
    let mut base = 0.0;
    let think = Some(Duration::from_millis(10));
    for (readers, think) in [(0, None), (4, None), (16, None), (4, think), (16, think)] {
        let (mut w, buf) = event_buffer(BufferConfig::new(256 << 20)).unwrap();
        let mut feed = Feed::new(100);
        warm_up(&mut w, &buf, &mut feed);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let (buf, stop) = (buf.clone(), stop.clone());
                std::thread::spawn(move || follower(buf, stop, think))
            })
            .collect();
        let rate = write_for(&mut w, &mut feed, dur);
        stop.store(true, Ordering::Relaxed);
        let read: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        if readers == 0 {
            base = rate;
        }
        println!(
            "writer with {readers:>2} {} readers: {:>6.2} M events/s ({:.2} x the 0-reader rate); readers copied {:.2} GB",
            if think.is_some() {
                "slow (256 KiB per 10 ms)"
            } else {
                "following (as fast as they can)"
            },
            rate / 1e6,
            rate / base,
            read as f64 / 1e9
        );
    }
}

/// A relay consumer: long-polls with `wait_for_data_after`, then reads what is new with a 256 KiB budget
/// (the relay's default response size) until caught up, and polls again. Returns bytes copied.
async fn long_poll_consumer(buf: Arc<EventBuffer>, stop: Arc<AtomicBool>) -> u64 {
    let mut out = Vec::with_capacity(512 << 10);
    let mut from = Checkpoint::after(Scn::new(buf.stats().max_scn.map_or(0, |s| s.get())));
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        if buf.wait_for_data_after(&from, deadline).await == WaitOutcome::TimedOut {
            continue;
        }
        out.clear();
        match buf.read(&from, 256 << 10, &mut out) {
            Ok(o) => {
                bytes += o.bytes_copied;
                from = o.checkpoint;
            }
            Err(ReadError::ScnNotFound { prev_scn, .. }) => {
                from = Checkpoint::after(prev_scn.unwrap_or(Scn::ZERO));
            }
            Err(e) => panic!("{e}"),
        }
        // An HTTP handler returns here and the client sends its next request: yield like one.
        tokio::task::yield_now().await;
    }
    bytes
}

/// This thread's (time on a CPU, time waiting for a CPU) in ns, from Linux's `/proc/thread-self/schedstat`
/// (zeros elsewhere).
fn thread_sched() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

/// Writes windows of 10 events; with `pace` (events per second) it sleeps between batches of 16 windows
/// to hold that rate, like a relay fed by a source. Returns events/s and, per event, the writer thread's
/// CPU time and its time waiting for a CPU (ns).
fn paced_writer(
    w: &mut BufferWriter,
    feed: &mut Feed,
    dur: Duration,
    pace: Option<f64>,
) -> (f64, f64, f64) {
    let sched = thread_sched();
    let start = Instant::now();
    let mut events = 0u64;
    while start.elapsed() < dur {
        for _ in 0..16 {
            events += feed.window(w, EVENTS_PER_WINDOW);
        }
        if let Some(rate) = pace {
            let due = start + Duration::from_secs_f64(events as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    let (cpu, wait) = thread_sched();
    (
        rate,
        (cpu - sched.0) as f64 / events as f64,
        (wait - sched.1) as f64 / events as f64,
    )
}

/// Relay-like readers: 16 long-polling consumers as tasks on a 2-worker tokio runtime (the relay's HTTP
/// server), the writer on its own thread; unpaced and paced at a source-like rate.
fn writer_with_long_poll_readers(dur: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for pace in [None, Some(250_000.0)] {
        let mut base = (0.0, 0.0, 0.0);
        for readers in [0usize, 16] {
            let (mut w, buf) = event_buffer(BufferConfig::new(256 << 20)).unwrap();
            let mut feed = Feed::new(100);
            warm_up(&mut w, &buf, &mut feed);
            let stop = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> = (0..readers)
                .map(|_| rt.spawn(long_poll_consumer(buf.clone(), stop.clone())))
                .collect();
            let (rate, cpu, wait) = paced_writer(&mut w, &mut feed, dur, pace);
            stop.store(true, Ordering::Relaxed);
            let read: u64 = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).sum();
            if readers == 0 {
                base = (rate, cpu, wait);
            }
            println!(
                "writer {} with {readers:>2} long-poll readers (2 runtime threads): {:>6.3} M events/s ({:.2} x); \
                 writer CPU {:>4.0} ns/event ({:.2} x), waiting for a CPU {:>4.0} ns/event; readers copied {:.2} GB",
                match pace {
                    None => "unpaced".to_owned(),
                    Some(p) => format!("paced at {:.2} M events/s", p / 1e6),
                },
                rate / 1e6,
                rate / base.0,
                cpu,
                cpu / base.1,
                wait,
                read as f64 / 1e9
            );
        }
    }
}

fn scan_rate(dur: Duration) {
    let (mut w, buf) = event_buffer(BufferConfig::new(512 << 20)).unwrap();
    let mut feed = Feed::new(1024);
    while buf.stats().prev_scn.is_none() {
        feed.window(&mut w, EVENTS_PER_WINDOW);
    }
    let from = Checkpoint::after(buf.stats().prev_scn.unwrap());
    let mut out = Vec::with_capacity(2 << 20);
    let odd = |_: &FrameHeader, key: KeyRef<'_>| matches!(key, KeyRef::Int(k) if k % 2 == 1);
    for (name, filter) in [("no filter", false), ("filter keeping half", true)] {
        let start = Instant::now();
        let mut scanned = 0u64;
        let mut copied = 0u64;
        while start.elapsed() < dur {
            let mut at = from.clone();
            loop {
                out.clear();
                let o = if filter {
                    buf.read_filtered(&at, 1 << 20, &odd, &mut out).unwrap()
                } else {
                    buf.read(&at, 1 << 20, &mut out).unwrap()
                };
                black_box(&out);
                copied += o.bytes_copied;
                // Bytes walked: every event's frame (kept or dropped) and every marker.
                scanned += o.events_scanned * (56 + 8 + 1024) + o.windows_completed * 56;
                at = o.checkpoint;
                if !o.more_available {
                    break;
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "scan 1 KiB events, one reader, {name}: {:.2} GB/s scanned, {:.2} GB/s copied",
            scanned as f64 / secs / 1e9,
            copied as f64 / secs / 1e9
        );
    }
}

/// The fan-out shape in the buffer alone (no HTTP): 1M events of about 150 bytes (integer keys 0..1M,
/// windows of 10), read whole by one unfiltered reader, then by 100 readers each with
/// `partition=mod:100:<b>` and coalesced markers, one after the other on one thread: by frame scan
/// (`read_with` with the filter's `matches`) and by the side index (`read_indexed`). Also the cost of
/// the side index to the writer (filling the buffer with and without it).
fn partitioned_readers() {
    const EVENTS: u64 = 1_000_000;
    let payload = vec![0x5a; 90];
    let mut fills = Vec::new();
    let mut buffers = Vec::new();
    for side_index in [false, true] {
        let config = BufferConfig::new(512 << 20).prefault(Prefault::AtCreation);
        let config = if side_index {
            config.with_side_index()
        } else {
            config
        };
        let (mut w, buf) = event_buffer(config).unwrap();
        let start = Instant::now();
        for win in 0..EVENTS / EVENTS_PER_WINDOW {
            let scn = Scn::new(win + 1);
            for i in 0..EVENTS_PER_WINDOW {
                let e = EventBuilder::new(scn, Opcode::Upsert)
                    .key(KeyRef::Int((win * EVENTS_PER_WINDOW + i) as i64))
                    .payload(&payload);
                w.append(&e).unwrap();
            }
            w.end_window(scn, 0).unwrap();
        }
        fills.push(EVENTS as f64 / start.elapsed().as_secs_f64());
        buffers.push((w, buf));
    }
    println!(
        "fill 1M events of ~150 bytes: {:.2} M events/s without a side index, {:.2} M/s with it ({:.2}x)",
        fills[0] / 1e6,
        fills[1] / 1e6,
        fills[1] / fills[0]
    );
    let (_, indexed) = &buffers[1];
    let mut out = Vec::with_capacity(20 << 20);
    let drain = |buf: &EventBuffer, filter: &Filter, indexed: bool, out: &mut Vec<u8>| {
        let mut at = Checkpoint::beginning();
        let mut events = 0;
        loop {
            out.clear();
            let o = if indexed {
                buf.read_indexed(&at, 16 << 20, filter, EmptyWindows::Coalesce, out)
            } else {
                let keep = |h: &FrameHeader, k: KeyRef<'_>| filter.matches(h, k);
                buf.read_with(&at, 16 << 20, Some(&keep), EmptyWindows::Coalesce, out)
            }
            .unwrap();
            black_box(&out);
            events += o.events_copied;
            at = o.checkpoint;
            if !o.more_available {
                return events;
            }
        }
    };
    let all = Filter::all();
    let mut one = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(drain(indexed, &all, true, &mut out), EVENTS);
        one = one.min(start.elapsed().as_secs_f64());
    }
    println!(
        "one unfiltered reader: {:.2} M events/s (best of 3)",
        EVENTS as f64 / one / 1e6
    );
    for (name, use_index) in [("frame scan", false), ("side index", true)] {
        let start = Instant::now();
        let mut got = 0;
        for b in 0..100 {
            let filter =
                Filter::new(&FilterSpec::from_query(&format!("partition=mod:100:{b}")).unwrap());
            got += drain(indexed, &filter, use_index, &mut out);
        }
        assert_eq!(got, EVENTS);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "100 MOD readers, coalesced, {name}: {:.2} M events/s in aggregate ({:.1}% of one reader), {:.2} ns per frame per reader",
            EVENTS as f64 / secs / 1e6,
            100.0 * one / secs,
            secs * 1e9 / (100.0 * 1.1 * EVENTS as f64),
        );
    }
}

/// xorshift64.
fn next_random(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// SCN lookups in a full buffer of 1 KiB events. `uneven = false`: windows of 4 events at SCNs 1, 2,
/// 3, ... (interpolation's best case: the first probe lands on the entry). `uneven = true`: what a
/// source produces: windows of 1..50 events, SCNs that jump by 1..20 mostly and by up to 100,000 one
/// window in 100 (a burst of writes elsewhere in the source's database, a GTID domain switch).
fn lookup(capacity: usize, probes: u64, uneven: bool) {
    let (mut w, buf) = event_buffer(BufferConfig::new(capacity)).unwrap();
    let mut feed = Feed::new(1024);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut scns = Vec::new();
    let fill = Instant::now();
    while buf.stats().prev_scn.is_none() {
        if uneven {
            let events = 1 + next_random(&mut x) % 50;
            let gap = if next_random(&mut x) % 100 == 0 {
                1 + next_random(&mut x) % 100_000
            } else {
                1 + next_random(&mut x) % 20
            };
            feed.window_after_gap(&mut w, events, gap);
        } else {
            feed.window(&mut w, 4);
        }
        scns.push(feed.scn);
    }
    let fill = fill.elapsed();
    let stats = buf.stats();
    // Windows still held: those after prev_scn (the last evicted one).
    let prev = stats.prev_scn.unwrap().get();
    let first_held = scns.partition_point(|&s| s <= prev);
    let held = &scns[first_held..];
    let shape = if uneven {
        "uneven SCNs, windows of 1-50 events"
    } else {
        "even SCNs, windows of 4 events"
    };
    let mut out = Vec::with_capacity(64 << 10);
    for (name, span) in [
        ("a random window", held.len() - 1),
        ("a window among the newest 10,000", 10_000),
    ] {
        // After window `held[i]`, i in the last `span` windows but not the newest (nothing follows it).
        let pick = |x: &mut u64| held[held.len() - 1 - 1 - (next_random(x) % span as u64) as usize];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let start = Instant::now();
        for _ in 0..probes {
            let s = pick(&mut x);
            out.clear();
            let o = buf
                .read(&Checkpoint::after(Scn::new(s)), 1, &mut out)
                .unwrap();
            debug_assert!(o.checkpoint.window_scn.get() > s);
            black_box(&out);
        }
        let per = start.elapsed().as_secs_f64() / probes as f64;
        println!(
            "lookup in a {:.1} GiB buffer ({shape}; {} windows, filled in {:.1} s), after {name}: {:.0} ns per read \
             (index search + jump + copy of the first 1 KiB event)",
            capacity as f64 / (1u64 << 30) as f64,
            stats.windows_held,
            fill.as_secs_f64(),
            per * 1e9
        );
        // The SCN index search alone (cursor snapshot + search; no scan, copy or validation), with the
        // same kind of SCNs: a fresh sequence so the entries probed are not cache-warm from the reads above.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut sum = 0u64;
        let start = Instant::now();
        for _ in 0..probes {
            let s = pick(&mut x);
            sum = sum.wrapping_add(
                buf.lookup_position(&Checkpoint::after(Scn::new(s)))
                    .expect("not empty"),
            );
        }
        black_box(sum);
        let per = start.elapsed().as_secs_f64() / probes as f64;
        println!(
            "SCN index search alone ({shape}; {} windows), after {name}: {:.0} ns per lookup",
            stats.windows_held,
            per * 1e9
        );
    }
}

/// CPU seconds (user + system) of this process, all threads (the prefault thread included).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Appends into a ring that was just created, until it is full once (every page written for the first
/// time), as a relay does when it starts and catches up; for each way of faulting the pages in.
/// Then the same writer keeps appending for `dur` into the now warm ring.
fn fresh_append(payload_len: usize, capacity: usize, prefault: Prefault, dur: Duration) {
    let cpu = process_cpu();
    let start = Instant::now();
    let (mut w, buf) = event_buffer(BufferConfig::new(capacity).prefault(prefault)).unwrap();
    let created = start.elapsed();
    let (writer_cpu0, _) = thread_sched();
    let fill_start = Instant::now();
    let mut feed = Feed::new(payload_len);
    let mut events = 0u64;
    while buf.stats().prev_scn.is_none() {
        events += feed.window(&mut w, EVENTS_PER_WINDOW);
    }
    let fill = fill_start.elapsed().as_secs_f64();
    let (writer_cpu1, _) = thread_sched();
    let total_cpu = process_cpu() - cpu;
    let warm = write_for(&mut w, &mut feed, dur);
    let frame = 56 + 8 + payload_len;
    let name = match prefault {
        Prefault::OnFirstWrite => "on first write (no prefault)".to_owned(),
        Prefault::Ahead { ahead_bytes } => format!("thread {} MiB ahead", ahead_bytes >> 20),
        Prefault::AtCreation => "all at creation".to_owned(),
    };
    println!(
        "fresh ring {} MiB, {payload_len} B payload, pages {name:<29}: created in {:>6.1} ms, first fill {:>6.2} M events/s ({:.2} GB/s), create + fill {:>6.2} M events/s; writer CPU {:>5.1} ns/event, process CPU {:.2} s; then warm {:>6.2} M events/s",
        capacity >> 20,
        created.as_secs_f64() * 1e3,
        events as f64 / fill / 1e6,
        events as f64 * frame as f64 / fill / 1e9,
        events as f64 / (fill + created.as_secs_f64()) / 1e6,
        (writer_cpu1 - writer_cpu0) as f64 / events as f64,
        total_cpu,
        warm / 1e6
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let dur = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(4)
    };
    let only = |part: &str| std::env::args().any(|a| a == part);
    let (fresh_only, lookup_only) = (only("fresh"), only("lookup"));
    if only("partitioned") {
        partitioned_readers();
        return;
    }
    let fresh = if quick { 256 << 20 } else { 1 << 30 };
    if !lookup_only {
        for prefault in [
            Prefault::OnFirstWrite,
            Prefault::Ahead {
                ahead_bytes: DEFAULT_PREFAULT_AHEAD,
            },
            Prefault::AtCreation,
        ] {
            fresh_append(100, fresh, prefault, dur);
        }
    }
    if fresh_only || lookup_only {
        if lookup_only {
            for uneven in [false, true] {
                lookup(
                    if quick { 256 << 20 } else { 4 << 30 },
                    if quick { 100_000 } else { 1_000_000 },
                    uneven,
                );
            }
        }
        return;
    }
    encode_rate(100, dur);
    append_rate(100, 256 << 20, dur);
    append_rate(100, 4 << 20, dur);
    append_rate(1024, 256 << 20, dur);
    writer_with_readers(dur);
    writer_with_long_poll_readers(dur);
    scan_rate(dur);
    partitioned_readers();
    for uneven in [false, true] {
        lookup(
            if quick { 256 << 20 } else { 4 << 30 },
            if quick { 100_000 } else { 1_000_000 },
            uneven,
        );
    }
}
