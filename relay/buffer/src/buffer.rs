//! The shared half of the buffer: the ring, its cursors and index, and the lock-free readers.

use std::fmt;

use crossbeam_utils::CachePadded;
use databus_core::frame::HEADER_LEN;
use databus_core::{Checkpoint, FrameHeader, KeyRef, Scn, SourceId};
use databus_filters::{Filter, HashMatcher, KeyHash};

use crate::error::ReadError;
use crate::ring::{self, HEADER_WORDS, PAD_WORD, RawFrame};
use crate::side::{self, Kind};
use crate::sync::{AtomicU64, AtomicUsize, Ordering, fence};

/// How many times a read restarts after being overtaken before giving up with
/// [`ReadError::Overtaken`]. A restart re-reads `prev_scn`, so a reader whose data was really evicted gets
/// [`ReadError::ScnNotFound`] on its next attempt; only a writer that keeps lapping a slow reader's
/// index search exhausts this.
const MAX_ATTEMPTS: u32 = 16;

/// `prev_scn` of a buffer that has no origin yet (see [`BufferConfig::awaiting_anchor`]). Never a
/// window SCN: those are below it, as `u64::MAX` is refused as a window SCN by the writer.
///
/// [`BufferConfig::awaiting_anchor`]: crate::BufferConfig::awaiting_anchor
pub(crate) const UNANCHORED: u64 = u64::MAX;

/// Words per SCN index entry: scn, start, end, and the side index entry of the window's first frame
/// (unused without a side index). Keeps entries 32-byte aligned.
pub(crate) const INDEX_STRIDE: usize = 4;

/// A predicate on an event's header and key: `true` keeps the event. The header's fields were verified
/// when the writer appended the frame (its checksum is not recomputed on each read).
pub type EventFilter<'a> = dyn Fn(&FrameHeader, KeyRef<'_>) -> bool + 'a;

/// What a read does with the end-of-window marker of a window it copies no data event of (a window the
/// filter dropped everything of, or a heartbeat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmptyWindows {
    /// Copy every window's marker: the reader sees every window boundary and heartbeat.
    #[default]
    Every,
    /// Of a run of consecutive windows this read copies no data event of, copy only the marker of the
    /// run's last window, and none when the read then copies an event of a later window (whose own
    /// marker, or the mid-window checkpoint, covers the run). The checkpoint moves past the whole run
    /// all the same. A read that ends right after such a run (at the tail or at its budget) always
    /// ends with the run's last marker, so its checkpoint is that marker's window and the reader gets a
    /// window boundary for it. The window a mid-window checkpoint points into always keeps its marker
    /// (the reader may hold its first events from an earlier read).
    Coalesce,
}

/// Cursor group moved by evictions. Written only by the writer.
#[derive(Debug)]
pub(crate) struct HeadCursor {
    /// Position of the oldest window held (always a window start). Positions below it may be overwritten.
    pub(crate) pos: AtomicU64,
    /// SCN the held history continues from: the last evicted window, else the origin (0 unless
    /// anchored; [`UNANCHORED`] before an awaited anchor).
    pub(crate) prev_scn: AtomicU64,
    /// SCN of the oldest window held, 0 if the buffer is empty.
    pub(crate) min_scn: AtomicU64,
    /// Sequence number of the oldest SCN index entry still valid.
    pub(crate) index_head: AtomicU64,
    /// Sequence number of the side index entry of the frame at `pos` (the oldest still valid).
    pub(crate) side_head: AtomicU64,
}

/// Cursor group moved by publishing a window. Written only by the writer.
#[derive(Debug)]
pub(crate) struct TailCursor {
    /// End of the last published window: readers never read at or past it.
    pub(crate) pos: AtomicU64,
    /// SCN of the newest published window, 0 if none.
    pub(crate) max_scn: AtomicU64,
    /// One past the sequence number of the last published index entry.
    pub(crate) index_tail: AtomicU64,
    /// One past the sequence number of the last published side index entry.
    pub(crate) side_tail: AtomicU64,
}

/// Statistics, written by the writer, read for reporting only.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) events_held: AtomicU64,
    pub(crate) windows_held: AtomicU64,
}

/// A snapshot of the buffer's state, for metrics and the relay's status endpoint. Fields are read one by
/// one without stopping the writer, so while it runs they may be from slightly different instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    /// Bytes of the event ring: the configured capacity rounded down to a multiple of 8, less the side
    /// index's share when the buffer has one (see [`BufferConfig::side_index`]; windows are then also
    /// evicted when the side index is full, before the ring is).
    ///
    /// [`BufferConfig::side_index`]: crate::BufferConfig::side_index
    pub capacity_bytes: u64,
    /// Bytes held by published windows, including alignment and wrap padding.
    pub bytes_held: u64,
    /// Data events held (end-of-window markers not counted).
    pub events_held: u64,
    /// Windows held.
    pub windows_held: u64,
    /// The oldest window held.
    pub min_scn: Option<Scn>,
    /// The newest window held (or last published, if all were evicted since).
    pub max_scn: Option<Scn>,
    /// The last evicted window, or before any eviction the origin the writer anchored the buffer at:
    /// checkpoints at or after it are served. `None` when it is 0 or the buffer awaits its anchor.
    pub prev_scn: Option<Scn>,
    /// `false` while a buffer made with [`BufferConfig::awaiting_anchor`](crate::BufferConfig::awaiting_anchor)
    /// has no origin yet: it neither serves nor refuses any checkpoint.
    pub anchored: bool,
    /// Total bytes ever published (the tail position); grows forever.
    pub bytes_published: u64,
}

/// What one [`EventBuffer::read`] delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Where to continue from: pass it to the next read. Equal to the input checkpoint when nothing was
    /// read.
    pub checkpoint: Checkpoint,
    /// Data events copied into the output (those the filter kept).
    pub events_copied: u64,
    /// Data events scanned, including those the filter dropped.
    pub events_scanned: u64,
    /// End-of-window markers copied (each completes a window; heartbeats are such windows).
    pub windows_completed: u64,
    /// End-of-window markers left out by [`EmptyWindows::Coalesce`] (windows covered by a later marker
    /// or event of the same read).
    pub windows_coalesced: u64,
    /// Bytes appended to the output.
    pub bytes_copied: u64,
    /// `true` when the read stopped because of its byte budget: more is available right now.
    pub more_available: bool,
}

impl ReadOutcome {
    /// A read that found nothing after `from`.
    fn nothing(from: &Checkpoint) -> ReadOutcome {
        ReadOutcome {
            checkpoint: from.clone(),
            events_copied: 0,
            events_scanned: 0,
            windows_completed: 0,
            windows_coalesced: 0,
            bytes_copied: 0,
            more_available: false,
        }
    }
}

/// How a long poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A read from the checkpoint would now return something (events, or [`ReadError::ScnNotFound`]).
    Ready,
    /// The deadline passed first.
    TimedOut,
}

/// The shared, read side of the event buffer: any number of threads or tasks read concurrently through an
/// `Arc<EventBuffer>` without locks. Created with its single writer by [`event_buffer`](crate::event_buffer).
pub struct EventBuffer {
    pub(crate) ring: Box<[AtomicU64]>,
    pub(crate) capacity: u64,
    pub(crate) block_bytes: u64,
    /// SCN index: entry `seq` lives in slot `seq % index_slots`, as [`INDEX_STRIDE`] words: the window's
    /// SCN, its start position and its end position (stored when the window is published). Entries are
    /// appended in position and SCN order, at most one per `block_bytes` block of positions, each naming
    /// a window start. Interleaved so that a binary-search probe touches one cache line.
    pub(crate) index: Box<[AtomicU64]>,
    pub(crate) index_slots: u64,
    /// Side index (see the `side` module): entry `seq` in slot `seq % side_slots`; no slots without one.
    pub(crate) side: Box<[AtomicU64]>,
    pub(crate) side_slots: u64,
    pub(crate) head: CachePadded<HeadCursor>,
    pub(crate) tail: CachePadded<TailCursor>,
    pub(crate) counters: CachePadded<Counters>,
    /// Long-poll waiters currently registered; the writer only touches `notify` when it is non-zero.
    pub(crate) waiters: CachePadded<AtomicUsize>,
    #[cfg(not(loom))]
    pub(crate) notify: tokio::sync::Notify,
}

impl fmt::Debug for EventBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBuffer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn opt_scn(raw: u64) -> Option<Scn> {
    (raw != 0).then_some(Scn::new(raw))
}

/// The cursors as one reader saw them at the start of an attempt.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    head: u64,
    prev_scn: u64,
    index_head: u64,
    tail: u64,
    index_tail: u64,
    /// The newest window's SCN: only a hint for the index search's first guess.
    max_scn: u64,
    /// Side index entries held: `[side_head, side_tail)` (equal, 0, without a side index). `side_tail`
    /// may be newer than `tail`: an indexed read serves entries up to it, never positions.
    side_head: u64,
    side_tail: u64,
}

/// Side entries the indexed scan's fast pass takes at a time (see `EventBuffer::scan_indexed`).
const STOP_BLOCK: usize = 256;
/// Bytes of a kept frame prefetched ahead of its copy (most row changes are smaller).
const PREFETCH_BYTES: u64 = 256;

/// What `EventBuffer::stop_at` decides with, fixed for a read.
struct StopContext<'a> {
    filter: &'a Filter,
    matcher: &'a HashMatcher<'a>,
    budget: u64,
    coalesce: bool,
}

/// What `EventBuffer::stop_at` updates: the read's outcome and its window state (see `scan`).
struct StopState<'a> {
    outcome: &'a mut ReadOutcome,
    in_window: &'a mut u32,
    keep_marker: &'a mut bool,
    held: &'a mut Option<(u64, u64)>,
}

/// A side entry's sequence number and its slot, advanced together so the hot loop never divides.
#[derive(Debug, Clone, Copy)]
struct SideCursor {
    seq: u64,
    slot: u64,
}

impl SideCursor {
    fn new(seq: u64, slots: u64) -> SideCursor {
        SideCursor {
            seq,
            slot: seq % slots,
        }
    }

    #[inline]
    fn advance(&mut self, slots: u64) {
        self.seq += 1;
        self.slot += 1;
        if self.slot == slots {
            self.slot = 0;
        }
    }

    /// Moves `by` entries on (at most [`STOP_BLOCK`], so a few subtractions at most).
    #[inline]
    fn skip(&mut self, by: u32, slots: u64) {
        self.seq += u64::from(by);
        self.slot += u64::from(by);
        while self.slot >= slots {
            self.slot -= slots;
        }
    }
}

/// Logical position plus its physical offset, advanced together so the hot loop never divides.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    pos: u64,
    phys: u64,
}

enum Attempt {
    Done(ReadOutcome),
    Overtaken,
    Failed(ReadError),
}

/// Something in the ring that is not a frame: either the writer overtook us or (never expected) a bug.
struct Anomaly {
    position: u64,
    reason: &'static str,
}

impl EventBuffer {
    /// Reads the events after checkpoint `from` into `out` (appended as whole frames, back to back,
    /// without padding), at most `budget_bytes` bytes but always at least one frame when one is available.
    ///
    /// Same as [`read_filtered`](Self::read_filtered) with a filter that keeps everything, and faster:
    /// headers are not verified on the way (every frame was verified when it was written).
    pub fn read(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_inner(from, budget_bytes, None, EmptyWindows::Every, out)
    }

    /// Reads the events after checkpoint `from` that `filter` keeps into `out`.
    ///
    /// # Where a read starts
    /// - `from.window_offset == None`: at the first window whose SCN is greater than `from.window_scn`.
    ///   SCNs are sparse: an SCN that never existed continues at the next window.
    /// - `from.window_offset == Some(k)`: inside window `from.window_scn`, after its first `k` data events
    ///   (then the rest of it). If that window does not exist, at the next window.
    /// - Checkpoints older than the buffer: served from the oldest window when nothing was missed, that is
    ///   when `from.window_scn >= prev_scn` (strictly greater for a mid-window checkpoint, whose window
    ///   must still be held); otherwise [`ReadError::ScnNotFound`] with the buffer's range. Before any
    ///   eviction `prev_scn` is the buffer's origin: 0 by default (every checkpoint is served), or the
    ///   SCN given to [`BufferWriter::anchor`](crate::BufferWriter::anchor). A buffer that awaits its
    ///   anchor answers [`ReadError::NotAnchored`] to every read.
    /// - Checkpoints at or after the newest window: nothing is returned (`events_copied == 0`,
    ///   `more_available == false`, checkpoint unchanged); wait with
    ///   [`wait_for_data_after`](Self::wait_for_data_after).
    ///
    /// # What is returned
    /// Frames are appended to `out` in stream order. End-of-window markers always pass the filter (clients
    /// need window boundaries and heartbeats). The read stops before the frame that would take the output
    /// past `budget_bytes`, unless no frame was copied yet, so it may stop in the middle of a window; the
    /// returned checkpoint then has `window_offset = Some(k)`.
    ///
    /// Window offsets count *every* data event of the window, kept or dropped by the filter, so a reader
    /// that resumes with the same filter skips exactly the events it already saw. Dropped events are never
    /// copied. The filter must be a pure function: it may be called on an event that is then discarded
    /// because the writer overtook this reader (the read restarts).
    ///
    /// # Errors
    /// [`ReadError::ScnNotFound`] when events after `from` were evicted (also when they are evicted while
    /// being copied: a reader never returns overwritten bytes) or precede the buffer's origin;
    /// [`ReadError::NotAnchored`] before the origin is known. On any error `out` is left as it was.
    pub fn read_filtered(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: &EventFilter<'_>,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_inner(from, budget_bytes, Some(filter), EmptyWindows::Every, out)
    }

    /// [`read_filtered`](Self::read_filtered) (or [`read`](Self::read) when `filter` is `None`) with a
    /// choice of what to do with the markers of windows the read copies nothing of (see
    /// [`EmptyWindows`]). With [`EmptyWindows::Coalesce`] a partitioned reader that gets one event in a
    /// hundred windows receives one marker for the hundred instead of a hundred.
    pub fn read_with(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: Option<&EventFilter<'_>>,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReadError> {
        self.read_inner(from, budget_bytes, filter, empty_windows, out)
    }

    /// [`read_with`](Self::read_with) with `filter` (the relay's compiled filter), deciding each event
    /// from the side index when the buffer has one ([`BufferConfig::side_index`]) and the filter
    /// [`decides_by_hash`](Filter::decides_by_hash): the entries' source and key hash, computed once
    /// when the writer appended the event, instead of each frame's header and key, so frames the filter
    /// drops are never touched. Returns exactly what `read_with` with `filter.matches` returns (same
    /// bytes, same outcome); otherwise (no side index, a RANGE filter, or a filter that keeps
    /// everything) it is that call.
    ///
    /// [`BufferConfig::side_index`]: crate::BufferConfig::side_index
    pub fn read_indexed(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: &Filter,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReadError> {
        if filter.is_all() {
            return self.read_inner(from, budget_bytes, None, empty_windows, out);
        }
        if self.side_slots == 0 || !filter.decides_by_hash() {
            let keep = |header: &FrameHeader, key: KeyRef<'_>| filter.matches(header, key);
            return self.read_inner(from, budget_bytes, Some(&keep), empty_windows, out);
        }
        self.retry(out, |out| {
            self.try_read_indexed(from, budget_bytes as u64, filter, empty_windows, out)
        })
    }

    /// Whether this buffer keeps a side index (see [`read_indexed`](Self::read_indexed)).
    pub fn has_side_index(&self) -> bool {
        self.side_slots > 0
    }

    /// The ring position a read from `from` would start at: the snapshot of the cursors and the SCN
    /// index search of [`read`](Self::read), without scanning, copying or validating. `None` when the
    /// buffer holds nothing. For diagnostics and benchmarks (it times the lookup alone); the position
    /// may already be overwritten when the caller looks at it.
    pub fn lookup_position(&self, from: &Checkpoint) -> Option<u64> {
        let snap = self.snapshot();
        if snap.head == snap.tail {
            return None;
        }
        Some(self.lookup(from, &snap).0)
    }

    fn read_inner(
        &self,
        from: &Checkpoint,
        budget_bytes: usize,
        filter: Option<&EventFilter<'_>>,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, ReadError> {
        self.retry(out, |out| {
            self.try_read(from, budget_bytes as u64, filter, empty_windows, out)
        })
    }

    /// Runs read attempts until one is not overtaken (at most [`MAX_ATTEMPTS`]), leaving `out` as it
    /// was after an error.
    fn retry(
        &self,
        out: &mut Vec<u8>,
        mut attempt: impl FnMut(&mut Vec<u8>) -> Attempt,
    ) -> Result<ReadOutcome, ReadError> {
        let out_len = out.len();
        for _ in 0..MAX_ATTEMPTS {
            match attempt(out) {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Overtaken => out.truncate(out_len),
                Attempt::Failed(err) => {
                    out.truncate(out_len);
                    return Err(err);
                }
            }
        }
        Err(ReadError::Overtaken {
            attempts: MAX_ATTEMPTS,
        })
    }

    fn snapshot(&self) -> Snapshot {
        // Acquire on head: pairs with the writer's Release store of head, so the prev_scn and index_head
        // stored before it are seen (or newer values, which only make this reader more conservative).
        let head = self.head.pos.load(Ordering::Acquire);
        let index_head = self.head.index_head.load(Ordering::Relaxed);
        // Acquire on tail: pairs with the writer's Release store when it publishes a window, so every
        // ring word and index entry of the published windows is visible. Loaded after head, so
        // head <= tail in this snapshot.
        let tail = self.tail.pos.load(Ordering::Acquire);
        // Relaxed, and after the tail: the writer stores the origin (`BufferWriter::anchor`) before it
        // publishes any window, so a reader that sees a window sees its origin, never an older one (an
        // anchor may be raised while nothing is published). Evictions store it before `head`'s Release
        // store; a value newer than `head` only makes this reader more conservative.
        let prev_scn = self.head.prev_scn.load(Ordering::Relaxed);
        // Relaxed: stored before the tail's Release store, so the Acquire load above makes it visible.
        let index_tail = self.tail.index_tail.load(Ordering::Relaxed);
        // Relaxed: used only to aim the first probe of the index search; any value gives a correct result.
        let max_scn = self.tail.max_scn.load(Ordering::Relaxed);
        // Relaxed: stored before head's Release store, like index_head; validated like it.
        let side_head = self.head.side_head.load(Ordering::Relaxed);
        // Acquire: pairs with the writer's Release store of side_tail, so every entry below it, and the
        // ring words of their frames, are visible (even when it is newer than the tail loaded above).
        let side_tail = self.tail.side_tail.load(Ordering::Acquire);
        Snapshot {
            head,
            prev_scn,
            index_head,
            tail,
            index_tail,
            max_scn,
            side_head,
            side_tail,
        }
    }

    /// Whether what this attempt read from ring positions >= `first_pos` and index entries >= `first_seq`
    /// is still what the writer published (the seqlock validation).
    fn still_valid(&self, first_pos: u64, first_seq: u64) -> bool {
        // Acquire fence: if any Relaxed load of this attempt saw a word the writer stored after evicting
        // (the writer stores head/index_head, then a Release fence, then overwrites), this fence
        // synchronizes with that Release fence and the loads below see the advanced cursors.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the fence above.
        let head = self.head.pos.load(Ordering::Relaxed);
        let index_head = self.head.index_head.load(Ordering::Relaxed);
        head <= first_pos && index_head <= first_seq
    }

    fn scn_not_found(&self, requested: Scn) -> ReadError {
        let stats = self.stats();
        ReadError::ScnNotFound {
            requested,
            min_scn: stats.min_scn,
            max_scn: stats.max_scn,
            prev_scn: stats.prev_scn,
        }
    }

    /// What an attempt answers before looking for its start: refused (no origin yet, or the checkpoint
    /// precedes the held history), or nothing when the buffer is empty. `None`: go on.
    fn refuse_or_empty(&self, from: &Checkpoint, snap: &Snapshot) -> Option<Attempt> {
        let requested = from.window_scn;
        if snap.prev_scn == UNANCHORED {
            return Some(Attempt::Failed(ReadError::NotAnchored));
        }
        if snap.prev_scn != 0 {
            let prev = Scn::new(snap.prev_scn);
            let missed = match from.window_offset {
                None => requested < prev,
                Some(_) => requested <= prev,
            };
            if missed {
                return Some(Attempt::Failed(self.scn_not_found(requested)));
            }
        }
        (snap.head == snap.tail).then(|| Attempt::Done(ReadOutcome::nothing(from)))
    }

    fn try_read(
        &self,
        from: &Checkpoint,
        budget: u64,
        filter: Option<&EventFilter<'_>>,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Attempt {
        let snap = self.snapshot();
        if let Some(early) = self.refuse_or_empty(from, &snap) {
            return early;
        }
        let (start, first_seq) = self.lookup(from, &snap);
        if start >= snap.tail {
            return if self.still_valid(snap.head, first_seq) {
                Attempt::Done(ReadOutcome::nothing(from))
            } else {
                Attempt::Overtaken
            };
        }
        match self.scan(from, start, &snap, budget, filter, empty_windows, out) {
            Ok(outcome) => {
                if self.still_valid(start, first_seq) {
                    Attempt::Done(outcome)
                } else {
                    Attempt::Overtaken
                }
            }
            Err(anomaly) => {
                if self.still_valid(start, first_seq) {
                    Attempt::Failed(ReadError::Corrupt {
                        position: anomaly.position,
                        reason: anomaly.reason.to_owned(),
                    })
                } else {
                    Attempt::Overtaken
                }
            }
        }
    }

    fn try_read_indexed(
        &self,
        from: &Checkpoint,
        budget: u64,
        filter: &Filter,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Attempt {
        let snap = self.snapshot();
        if let Some(early) = self.refuse_or_empty(from, &snap) {
            return early;
        }
        let (found, first_index_seq) = self.search_index(from, &snap);
        // The side entry of the window the index entry names (a window start), or of the head (also a
        // window start) when that is later or no entry qualifies.
        let start_seq = found.map_or(snap.side_head, |(_, _, base)| {
            // Relaxed: validated with the index entry (`first_index_seq`).
            self.index[base + 3]
                .load(Ordering::Relaxed)
                .max(snap.side_head)
        });
        let scanned = self.scan_indexed(from, start_seq, &snap, budget, filter, empty_windows, out);
        // Acquire fence, then the cursors: as `still_valid`, for index entries and side entries. A side
        // entry is overwritten only after `side_head` passed it, and its frame only after `head` (moved in
        // the same eviction) did, so valid entries name valid frames.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the fence above.
        let valid = self.head.side_head.load(Ordering::Relaxed) <= start_seq
            && self.head.index_head.load(Ordering::Relaxed) <= first_index_seq;
        match (scanned, valid) {
            (_, false) => Attempt::Overtaken,
            (Ok(outcome), true) => Attempt::Done(outcome),
            (Err(anomaly), true) => Attempt::Failed(ReadError::Corrupt {
                position: anomaly.position,
                reason: anomaly.reason.to_owned(),
            }),
        }
    }

    /// The side entry at `cur`, or why it cannot be one.
    #[inline]
    fn side_entry(&self, cur: &SideCursor) -> Result<side::SideEntry, Anomaly> {
        side::load(&self.side, cur.slot).ok_or(Anomaly {
            position: cur.seq,
            reason: "side index entry of an unknown kind (position is the entry's sequence number)",
        })
    }

    /// The frame a side entry names at ring offset `phys`, checked to lie inside the ring.
    #[inline]
    fn frame_at_offset(&self, phys: u64) -> Result<RawFrame, Anomaly> {
        let anomaly = |reason| Anomaly {
            position: phys,
            reason,
        };
        if phys + ring::padded(HEADER_LEN as u64) > self.capacity {
            return Err(anomaly(
                "side entry names a frame past the end of the ring (position is its ring offset)",
            ));
        }
        let frame = RawFrame::decode(
            ring::load(&self.ring, phys),
            ring::load(&self.ring, phys + 8),
            ring::load(&self.ring, phys + 16),
        )
        .map_err(anomaly)?;
        if phys + frame.padded_len() > self.capacity {
            return Err(anomaly(
                "frame straddles the end of the ring (position is its ring offset)",
            ));
        }
        Ok(frame)
    }

    /// [`scan`](Self::scan) over side entries from `start_seq` (a window start): the same frames, the
    /// same checkpoint and counts, with the filter decided on each entry and only kept frames loaded.
    #[allow(clippy::too_many_arguments)]
    fn scan_indexed(
        &self,
        from: &Checkpoint,
        start_seq: u64,
        snap: &Snapshot,
        budget: u64,
        filter: &Filter,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, Anomaly> {
        let requested = from.window_scn;
        let tail = snap.side_tail;
        let mut outcome = ReadOutcome::nothing(from);
        // Skip what the checkpoint covers, a window at a time (a window's SCN is in its marker's
        // entry): whole windows up to `requested`, then the first `k` data events of window `requested`
        // for a mid-window checkpoint.
        let slots = self.side_slots;
        let mut cur = SideCursor::new(start_seq, slots);
        let mut in_window: u32 = 0;
        let mut started_inside = false;
        loop {
            let mut marker = cur;
            let scn = loop {
                if marker.seq >= tail {
                    return Ok(outcome);
                }
                let e = self.side_entry(&marker)?;
                if e.kind == Kind::EndOfWindow {
                    break Scn::new(e.value);
                }
                marker.advance(slots);
            };
            if scn < requested || (scn == requested && from.window_offset.is_none()) {
                cur = marker;
                cur.advance(slots);
                continue;
            }
            if scn == requested {
                let skip = u64::from(from.window_offset.unwrap_or(0)).min(marker.seq - cur.seq);
                cur = SideCursor::new(cur.seq + skip, slots);
                in_window = skip as u32;
                started_inside = true;
            }
            break;
        }
        let coalesce = empty_windows == EmptyWindows::Coalesce;
        // As in `scan`.
        let mut keep_marker = started_inside;
        let mut held: Option<(u64, u64)> = None;
        let flush = |held: Option<(u64, u64)>, outcome: &mut ReadOutcome, out: &mut Vec<u8>| {
            if let Some((phys, len)) = held {
                self.copy_out(phys, len, out);
                outcome.bytes_copied += len;
                outcome.windows_completed += 1;
            }
        };
        // The checkpoint's window SCN is set from kept frames and markers only; after a dropped event
        // of a new window it is stale until the read stops, where it is set from the frame it stops at
        // (a read stops at its budget, in that window, or at the tail, after a marker).
        let matcher = filter.hash_matcher();
        let one_run = matcher.one_run();
        // Entries are taken a block at a time. First the fast pass, the bulk of a partitioned read:
        // rows the filter drops cost two loads and a bucket, and the rest (the block's "stops") are
        // listed, with the frames that will be copied prefetched. Then each stop is handled below; the
        // counts and the checkpoint are brought up to date once per run of dropped rows.
        let mut stops = [0u64; STOP_BLOCK];
        while cur.seq < tail {
            let end = (cur.seq + STOP_BLOCK as u64).min(tail);
            let found = match &one_run {
                Some(run) => self.find_stops(cur, end, &mut stops, |_, hash| run.matches(hash)),
                None => self.find_stops(cur, end, &mut stops, |source, hash| {
                    matcher.matches(source, hash)
                }),
            };
            for &stop in stops[..found].iter().chain(std::iter::once(&end)) {
                let dropped = (stop - cur.seq) as u32;
                if dropped > 0 {
                    outcome.events_scanned += u64::from(dropped);
                    in_window += dropped;
                    outcome.checkpoint.window_offset = Some(in_window);
                    cur.skip(dropped, slots);
                }
                if stop == end {
                    break;
                }
                self.stop_at(
                    &cur,
                    &StopContext {
                        filter,
                        matcher: &matcher,
                        budget,
                        coalesce,
                    },
                    &mut StopState {
                        outcome: &mut outcome,
                        in_window: &mut in_window,
                        keep_marker: &mut keep_marker,
                        held: &mut held,
                    },
                    out,
                )?;
                if outcome.more_available {
                    return Ok(outcome);
                }
                cur.advance(slots);
            }
        }
        flush(held, &mut outcome, out);
        Ok(outcome)
    }

    /// Handles the entry at `cur` that the fast pass of [`scan_indexed`](Self::scan_indexed) stopped at
    /// (a marker, a kept row, a table or control event): copies it, holds it (a coalesced marker) or
    /// drops it, and updates the read's state. Sets `more_available` when the budget ends the read
    /// here (the entry is then not consumed).
    fn stop_at(
        &self,
        cur: &SideCursor,
        ctx: &StopContext<'_>,
        st: &mut StopState<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Anomaly> {
        let outcome = &mut *st.outcome;
        let flush = |held: Option<(u64, u64)>, outcome: &mut ReadOutcome, out: &mut Vec<u8>| {
            if let Some((phys, len)) = held {
                self.copy_out(phys, len, out);
                outcome.bytes_copied += len;
                outcome.windows_completed += 1;
            }
        };
        let e = self.side_entry(cur)?;
        if e.kind == Kind::EndOfWindow {
            let len = HEADER_LEN as u64;
            let scn = Scn::new(e.value);
            let fits = outcome.bytes_copied == 0 || outcome.bytes_copied + len <= ctx.budget;
            if !fits {
                flush(st.held.take(), outcome, out);
                outcome.more_available = true;
                if *st.in_window > 0 {
                    outcome.checkpoint.window_scn = scn;
                }
                return Ok(());
            }
            if e.phys + ring::padded(len) > self.capacity {
                return Err(Anomaly {
                    position: e.phys,
                    reason: "side entry names a marker past the end of the ring (position is its ring offset)",
                });
            }
            if ctx.coalesce && !*st.keep_marker {
                if st.held.replace((e.phys, len)).is_some() {
                    outcome.windows_coalesced += 1;
                }
            } else {
                self.copy_out(e.phys, len, out);
                outcome.bytes_copied += len;
                outcome.windows_completed += 1;
            }
            let ck = &mut outcome.checkpoint;
            ck.window_scn = scn;
            ck.window_offset = None;
            ck.prev_scn = Some(scn);
            *st.in_window = 0;
            *st.keep_marker = false;
            return Ok(());
        }
        let keep = if e.kind == Kind::Row {
            let hash = KeyHash::from_i64(e.value as i64).ok_or(Anomaly {
                position: cur.seq,
                reason: "side index entry with an invalid key hash (position is the entry's sequence number)",
            })?;
            ctx.matcher.matches(e.source, hash)
        } else if e.kind == Kind::Table {
            ctx.filter.matches_source(e.source)
        } else {
            true
        };
        if keep {
            let frame = self.frame_at_offset(e.phys)?;
            if frame.end_of_window {
                return Err(Anomaly {
                    position: e.phys,
                    reason: "side entry of an event names an end-of-window marker (position is its ring offset)",
                });
            }
            let fits = outcome.bytes_copied == 0 || outcome.bytes_copied + frame.len <= ctx.budget;
            if !fits {
                flush(st.held.take(), outcome, out);
                outcome.more_available = true;
                if *st.in_window > 0 {
                    outcome.checkpoint.window_scn = frame.scn;
                }
                return Ok(());
            }
            // This event's window, or the checkpoint inside it, covers the held marker's run.
            if st.held.take().is_some() {
                outcome.windows_coalesced += 1;
            }
            *st.keep_marker = true;
            self.copy_out(e.phys, frame.len, out);
            outcome.bytes_copied += frame.len;
            outcome.events_copied += 1;
            outcome.checkpoint.window_scn = frame.scn;
        }
        outcome.events_scanned += 1;
        *st.in_window += 1;
        outcome.checkpoint.window_offset = Some(*st.in_window);
        Ok(())
    }

    /// The fast pass of [`scan_indexed`](Self::scan_indexed) over entries `[cur, end)` (at most
    /// [`STOP_BLOCK`]): writes to `stops` the sequence numbers of the entries that are not rows `keeps`
    /// drops, in order, and returns how many; prefetches the frames of kept rows and the markers of
    /// their windows (what the read will copy). Generic so that the loop is compiled with the filter's
    /// test inlined.
    #[inline(always)]
    fn find_stops(
        &self,
        mut cur: SideCursor,
        end: u64,
        stops: &mut [u64; STOP_BLOCK],
        keeps: impl Fn(SourceId, KeyHash) -> bool,
    ) -> usize {
        let slots = self.side_slots;
        let mut found = 0;
        let mut window_kept = false;
        while cur.seq < end {
            // The entries up to `end` or the ring's end, whichever is first, as one slice: no wrap test
            // and no bounds check per entry.
            let n = (end - cur.seq).min(slots - cur.slot);
            let base = cur.slot as usize * side::SIDE_STRIDE;
            let words = &self.side[base..base + n as usize * side::SIDE_STRIDE];
            for (i, entry) in words.chunks_exact(side::SIDE_STRIDE).enumerate() {
                // Relaxed: validated afterwards, like every load of a read (see `still_valid`).
                let w0 = entry[0].load(Ordering::Relaxed);
                if side::is_row(w0) {
                    // The mask keeps a torn or overwritten value a valid hash; such a read is
                    // discarded by the validation anyway.
                    let w1 = entry[1].load(Ordering::Relaxed) & (u64::MAX >> 1);
                    let hash = KeyHash::from_i64(w1 as i64).expect("63 bits");
                    if keeps(side::source_of(w0), hash) {
                        stops[found] = cur.seq + i as u64;
                        found += 1;
                        ring::prefetch(&self.ring, side::phys_of(w0), PREFETCH_BYTES);
                        window_kept = true;
                    }
                } else {
                    stops[found] = cur.seq + i as u64;
                    found += 1;
                    if side::is_marker(w0) {
                        if window_kept {
                            ring::prefetch(&self.ring, side::phys_of(w0), HEADER_LEN as u64);
                        }
                        window_kept = false;
                    }
                }
            }
            cur.skip(n as u32, slots);
        }
        found
    }

    /// Binary search of the SCN index for the last window start whose SCN is <= `scn`. Returns where to
    /// start scanning and the lowest entry sequence number probed. When the window found is entirely
    /// covered by the checkpoint (SCN below it, or equal to it without an offset), the scan starts at
    /// that window's end instead of walking its frames; otherwise at its start, or at the head when no
    /// entry qualifies.
    fn lookup(&self, from: &Checkpoint, snap: &Snapshot) -> (u64, u64) {
        let (found, first_seq) = self.search_index(from, snap);
        let Some((entry_scn, entry_start, base)) = found else {
            return (snap.head, first_seq);
        };
        let scn = from.window_scn.get();
        let covered = entry_scn < scn || from.window_offset.is_none();
        let start = if covered {
            // Relaxed: as in `search_index`. Published with the window, so it is set for every entry
            // below index_tail.
            let end = self.index[base + 2].load(Ordering::Relaxed);
            if end > entry_start && end <= snap.tail {
                end
            } else {
                entry_start
            }
        } else {
            entry_start
        };
        (start.max(snap.head), first_seq)
    }

    /// The index search of [`lookup`](Self::lookup): the last entry whose window SCN is <= the
    /// checkpoint's and that starts below the tail (its SCN, start position and word offset), and the
    /// lowest entry sequence number probed.
    #[allow(clippy::type_complexity)]
    fn search_index(&self, from: &Checkpoint, snap: &Snapshot) -> (Option<(u64, u64, usize)>, u64) {
        let scn = from.window_scn.get();
        let mut first_seq = u64::MAX;
        // Relaxed loads: validated afterwards by `still_valid(_, first_seq)`.
        let mut entry = |seq: u64| {
            first_seq = first_seq.min(seq);
            let base = (seq % self.index_slots) as usize * INDEX_STRIDE;
            let entry_scn = self.index[base].load(Ordering::Relaxed);
            let entry_start = self.index[base + 1].load(Ordering::Relaxed);
            (entry_scn, entry_start, base)
        };
        let keeps = |(entry_scn, entry_start, _): (u64, u64, usize)| {
            entry_scn <= scn && entry_start < snap.tail
        };
        // Search [lo, hi) for the last entry that `keeps`: entries below `lo` keep, from `hi` on they don't.
        let (mut lo, mut hi) = (snap.index_head, snap.index_tail);
        let mut found = None;
        // SCNs usually grow about evenly, so a few interpolation steps between the SCNs bounding the range
        // land next to the target, saving most of the cache misses of a binary search over a large index
        // (each probe of a large index is a DRAM miss). The first guess interpolates between the snapshot's
        // prev_scn (just below the oldest entry) and max_scn (the newest window), so it costs no probe; the
        // later ones between the SCNs of the entries probed. The guesses only choose which entries are
        // probed: `lo`/`hi` move only on what a probe saw, so a bad guess costs time, never correctness.
        // Binary search finishes.
        let (mut lo_scn, mut hi_scn) = (snap.prev_scn, snap.max_scn.saturating_add(1));
        for _ in 0..5 {
            if hi - lo <= 8 {
                break;
            }
            let guess = match (lo_scn, hi_scn) {
                (lo_scn, hi_scn) if scn >= lo_scn && hi_scn > lo_scn => {
                    // Entry lo - 1 has lo_scn, entry hi has hi_scn: interpolate in between.
                    let span = u128::from(hi - lo + 1);
                    let ahead =
                        (u128::from(scn - lo_scn) * span / u128::from(hi_scn - lo_scn)) as u64;
                    (lo + ahead.saturating_sub(1)).min(hi - 1)
                }
                _ => break,
            };
            let e = entry(guess);
            if keeps(e) {
                found = Some(e);
                lo_scn = e.0;
                lo = guess + 1;
            } else {
                hi_scn = e.0;
                hi = guess;
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = entry(mid);
            if keeps(e) {
                found = Some(e);
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (found, first_seq)
    }

    /// The frame starting at `cur` (after skipping a wrap pad), or `None` at the tail.
    fn frame_at(&self, cur: &mut Cursor, tail: u64) -> Result<Option<RawFrame>, Anomaly> {
        if cur.pos >= tail {
            return Ok(None);
        }
        let mut w0 = ring::load(&self.ring, cur.phys);
        if w0 == PAD_WORD {
            cur.pos += self.capacity - cur.phys;
            cur.phys = 0;
            if cur.pos >= tail {
                return Ok(None);
            }
            w0 = ring::load(&self.ring, 0);
        }
        let anomaly = |reason| Anomaly {
            position: cur.pos,
            reason,
        };
        if cur.phys + ring::padded(databus_core::frame::HEADER_LEN as u64) > self.capacity {
            return Err(anomaly("frame header straddles the end of the ring"));
        }
        let w1 = ring::load(&self.ring, cur.phys + 8);
        let w2 = ring::load(&self.ring, cur.phys + 16);
        let frame = RawFrame::decode(w0, w1, w2).map_err(anomaly)?;
        if cur.phys + frame.padded_len() > self.capacity {
            return Err(anomaly("frame straddles the end of the ring"));
        }
        if cur.pos + frame.padded_len() > tail {
            return Err(anomaly("frame extends past the published tail"));
        }
        Ok(Some(frame))
    }

    fn advance(&self, cur: &mut Cursor, by: u64) {
        cur.pos += by;
        cur.phys += by;
        if cur.phys == self.capacity {
            cur.phys = 0;
        }
    }

    /// Appends the `len` bytes at `phys` to `out`.
    fn copy_out(&self, phys: u64, len: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let padded = ring::padded(len) as usize;
        out.resize(start + padded, 0);
        let first = (phys / 8) as usize;
        let words = &self.ring[first..first + padded / 8];
        for (chunk, word) in out[start..].chunks_exact_mut(8).zip(words) {
            // Relaxed: validated afterwards, see `still_valid`.
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(start + len as usize);
    }

    /// Decodes the verified header and the key of the frame at `phys` for a filter.
    fn filter_keeps(
        &self,
        cur: &Cursor,
        frame_len: u64,
        filter: &EventFilter<'_>,
        key_scratch: &mut Vec<u8>,
    ) -> Result<bool, Anomaly> {
        let mut header = [0u8; HEADER_WORDS * 8];
        for (i, chunk) in header.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&ring::load(&self.ring, cur.phys + 8 * i as u64).to_le_bytes());
        }
        let anomaly = |reason| Anomaly {
            position: cur.pos,
            reason,
        };
        // The checksum is not recomputed: the writer built this header (see `EventFilter`). What was read
        // is validated by position afterwards like every other load of the read.
        let parsed = FrameHeader::parse_verified_earlier(&header)
            .map_err(|_| anomaly("frame header does not parse"))?;
        // The header was loaded again: if the writer overtook us in between it may describe another
        // frame, whose key must not be read past this frame's bounds (checked by `frame_at`).
        if parsed.frame_len() as u64 != frame_len {
            return Err(anomaly("frame header changed while reading"));
        }
        // The key type is byte 6 of the header (see `databus_core::frame`): 1 integer, 2 bytes.
        let key = match header[6] {
            1 => KeyRef::Int(ring::load(&self.ring, cur.phys + HEADER_WORDS as u64 * 8) as i64),
            2 => {
                key_scratch.clear();
                self.copy_out(
                    cur.phys + HEADER_WORDS as u64 * 8,
                    parsed.key_len() as u64,
                    key_scratch,
                );
                KeyRef::Bytes(key_scratch)
            }
            _ => KeyRef::None,
        };
        Ok(filter(&parsed, key))
    }

    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        from: &Checkpoint,
        start: u64,
        snap: &Snapshot,
        budget: u64,
        filter: Option<&EventFilter<'_>>,
        empty_windows: EmptyWindows,
        out: &mut Vec<u8>,
    ) -> Result<ReadOutcome, Anomaly> {
        let requested = from.window_scn;
        let mut cur = Cursor {
            pos: start,
            phys: start % self.capacity,
        };
        let mut outcome = ReadOutcome::nothing(from);
        // Skip what the checkpoint already covers: whole windows up to `requested`, then the first `k`
        // data events of window `requested` for a mid-window checkpoint.
        let mut window: Option<Scn> = None;
        let mut in_window: u32 = 0;
        let skip_in_requested = from.window_offset;
        loop {
            let Some(frame) = self.frame_at(&mut cur, snap.tail)? else {
                return Ok(outcome);
            };
            if frame.scn < requested || (frame.scn == requested && skip_in_requested.is_none()) {
                self.advance(&mut cur, frame.padded_len());
                continue;
            }
            if frame.scn == requested {
                let k = skip_in_requested.unwrap_or(0);
                if !frame.end_of_window && in_window < k {
                    in_window += 1;
                    self.advance(&mut cur, frame.padded_len());
                    continue;
                }
                window = Some(requested);
            }
            break;
        }
        let coalesce = empty_windows == EmptyWindows::Coalesce;
        // Whether the current window's marker must be copied: this read copied an event of it, or the
        // read started inside it (the reader may hold its first events from an earlier read).
        let mut keep_marker = window.is_some();
        // With `Coalesce`: the marker of the last window of the current run of windows this read copied
        // nothing of, not yet copied. Its bytes fitted the budget when it was held, and nothing was
        // copied since, so it still fits when it is copied at the end of the read.
        let mut held: Option<(u64, u64)> = None;
        let flush = |held: Option<(u64, u64)>, outcome: &mut ReadOutcome, out: &mut Vec<u8>| {
            if let Some((phys, len)) = held {
                self.copy_out(phys, len, out);
                outcome.bytes_copied += len;
                outcome.windows_completed += 1;
            }
        };
        let mut key_scratch = Vec::new();
        loop {
            let Some(frame) = self.frame_at(&mut cur, snap.tail)? else {
                flush(held, &mut outcome, out);
                return Ok(outcome);
            };
            let fits = outcome.bytes_copied == 0 || outcome.bytes_copied + frame.len <= budget;
            if frame.end_of_window {
                if !fits {
                    flush(held, &mut outcome, out);
                    outcome.more_available = true;
                    return Ok(outcome);
                }
                if coalesce && !keep_marker {
                    if held.replace((cur.phys, frame.len)).is_some() {
                        outcome.windows_coalesced += 1;
                    }
                } else {
                    self.copy_out(cur.phys, frame.len, out);
                    outcome.bytes_copied += frame.len;
                    outcome.windows_completed += 1;
                }
                let ck = &mut outcome.checkpoint;
                ck.window_scn = frame.scn;
                ck.window_offset = None;
                ck.prev_scn = Some(frame.scn);
                window = None;
                in_window = 0;
                keep_marker = false;
            } else {
                if window != Some(frame.scn) {
                    window = Some(frame.scn);
                    in_window = 0;
                }
                let keep = match filter {
                    None => true,
                    Some(filter) => self.filter_keeps(&cur, frame.len, filter, &mut key_scratch)?,
                };
                if keep {
                    if !fits {
                        flush(held, &mut outcome, out);
                        outcome.more_available = true;
                        return Ok(outcome);
                    }
                    // This event's window, or the checkpoint inside it, covers the held marker's run.
                    if held.take().is_some() {
                        outcome.windows_coalesced += 1;
                    }
                    keep_marker = true;
                    self.copy_out(cur.phys, frame.len, out);
                    outcome.bytes_copied += frame.len;
                    outcome.events_copied += 1;
                }
                outcome.events_scanned += 1;
                in_window += 1;
                let ck = &mut outcome.checkpoint;
                ck.window_scn = frame.scn;
                ck.window_offset = Some(in_window);
            }
            self.advance(&mut cur, frame.padded_len());
        }
    }

    /// Waits until a read from `from` would return something (events after it, or
    /// [`ReadError::ScnNotFound`]) or until `deadline`. Woken by the writer when it publishes a window,
    /// without polling. Cancel-safe: dropping the future unregisters it.
    #[cfg(not(loom))]
    pub async fn wait_for_data_after(
        &self,
        from: &Checkpoint,
        deadline: tokio::time::Instant,
    ) -> WaitOutcome {
        let _registered = WaiterGuard::new(&self.waiters);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register with `Notify` before checking, so a window published after the check wakes us.
            notified.as_mut().enable();
            // SeqCst fence: with the writer's SeqCst fence between publishing and reading `waiters`, either
            // the writer sees our registration (and notifies) or we see its window below (Dekker).
            fence(Ordering::SeqCst);
            if self.has_data_after(from) {
                return WaitOutcome::Ready;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return if self.has_data_after(from) {
                    WaitOutcome::Ready
                } else {
                    WaitOutcome::TimedOut
                };
            }
        }
    }

    /// Whether a read from `from` would return events or an error right now (`false` while the buffer
    /// awaits its anchor: long polls keep waiting, and the anchor wakes them).
    pub fn has_data_after(&self, from: &Checkpoint) -> bool {
        // Acquire: pairs with the writer's Release stores, like `snapshot`.
        let max = self.tail.max_scn.load(Ordering::Acquire);
        let prev = self.head.prev_scn.load(Ordering::Acquire);
        if prev == UNANCHORED {
            // Nothing can be decided before the origin is known; `anchor` wakes the waiters.
            return false;
        }
        let scn = from.window_scn.get();
        let new_window = match from.window_offset {
            None => max > scn,
            Some(_) => max >= scn,
        };
        let missed = prev != 0
            && match from.window_offset {
                None => scn < prev,
                Some(_) => scn <= prev,
            };
        new_window || missed
    }

    /// The buffer's current range and occupancy.
    pub fn stats(&self) -> BufferStats {
        // Acquire, as in `snapshot`; the counters are reporting only and Relaxed.
        let head = self.head.pos.load(Ordering::Acquire);
        let tail = self.tail.pos.load(Ordering::Acquire);
        // Relaxed, after the tail: as in `snapshot`.
        let prev_scn = self.head.prev_scn.load(Ordering::Relaxed);
        BufferStats {
            capacity_bytes: self.capacity,
            bytes_held: tail.saturating_sub(head),
            events_held: self.counters.events_held.load(Ordering::Relaxed),
            windows_held: self.counters.windows_held.load(Ordering::Relaxed),
            min_scn: opt_scn(self.head.min_scn.load(Ordering::Relaxed)),
            max_scn: opt_scn(self.tail.max_scn.load(Ordering::Relaxed)),
            prev_scn: opt_scn(prev_scn).filter(|_| prev_scn != UNANCHORED),
            anchored: prev_scn != UNANCHORED,
            bytes_published: tail,
        }
    }

    /// Long-poll waiters currently registered (for metrics and tests).
    pub fn waiting_readers(&self) -> usize {
        // Relaxed: a gauge.
        self.waiters.load(Ordering::Relaxed)
    }

    /// The SCN index's block size in bytes.
    pub fn index_block_bytes(&self) -> u64 {
        self.block_bytes
    }
}

/// Counts a long-poll waiter for as long as it lives (also when its future is dropped).
#[cfg(not(loom))]
struct WaiterGuard<'a>(&'a AtomicUsize);

#[cfg(not(loom))]
impl<'a> WaiterGuard<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        // SeqCst: part of the Dekker pair described in `wait_for_data_after`.
        waiters.fetch_add(1, Ordering::SeqCst);
        WaiterGuard(waiters)
    }
}

#[cfg(not(loom))]
impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        // Relaxed: a stale non-zero count only costs the writer one needless notify.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
