//! Lock-free, SCN-indexed circular event buffer (one writer, many readers): the heart of the relay.
//!
//! The relay's connector thread writes change events into the buffer window by window (one window per
//! source transaction, closed by an end-of-window marker); the relay's HTTP `stream` handlers read from
//! it, each from its client's [`Checkpoint`](databus_core::Checkpoint), without ever blocking the writer.
//!
//! - [`event_buffer`] creates a buffer of a fixed byte capacity and returns its single [`BufferWriter`]
//!   and the shared [`EventBuffer`] readers use.
//! - [`BufferWriter::append`] adds an event to the open window, [`BufferWriter::end_window`] publishes it
//!   (an empty window is a heartbeat), [`BufferWriter::rollback`] discards it.
//! - [`EventBuffer::read`] / [`EventBuffer::read_filtered`] / [`EventBuffer::read_with`] (which may coalesce
//!   the end markers of windows with nothing kept, [`EmptyWindows`]) copy the events after a checkpoint, within a
//!   byte budget, and return the checkpoint to continue from. [`EventBuffer::wait_for_data_after`] is the
//!   long poll.
//! - [`EventBuffer::read_indexed`] is `read_with` for a relay's compiled
//!   [`Filter`](databus_filters::Filter): with a side index ([`BufferConfig::with_side_index`]; one
//!   16-byte entry per frame, the key's hash computed once when it is appended) it decides each event
//!   without touching its frame, which is what makes many partitioned readers cheap.
//!
//! ```
//! use databus_buffer::{BufferConfig, event_buffer};
//! use databus_core::{Checkpoint, EventBuilder, EventView, Key, Opcode, Scn};
//!
//! let (mut writer, buffer) = event_buffer(BufferConfig::new(1 << 20)).unwrap();
//! writer.append(&EventBuilder::new(Scn::new(10), Opcode::Upsert).key(Key::Int(1).as_ref()).payload(b"a"))
//!     .unwrap();
//! writer.end_window(Scn::new(10), 1_700_000_000_000_000_000).unwrap();
//!
//! let mut out = Vec::new();
//! let got = buffer.read(&Checkpoint::beginning(), 64 * 1024, &mut out).unwrap();
//! let frames = EventView::parse_all(&out).unwrap();
//! assert_eq!(frames.len(), 2); // the event and the end-of-window marker
//! assert_eq!(got.checkpoint, Checkpoint::after(Scn::new(10)));
//! ```
//!
//! # Invariants
//!
//! - **Positions.** Every byte ever written has a 64-bit logical position that only grows; the ring holds
//!   positions `[head, tail)` (published) and `[tail, write_pos)` (the open window, private to the
//!   writer). `tail - head <= capacity` and `write_pos - head <= capacity` at all times. See [`ring`'s
//!   layout](#ring-layout) for frames, alignment and wrap padding.
//! - **Visibility.** Readers read only below `tail`, which the writer moves once per window, after the
//!   end marker: a window is visible whole or not at all. [`BufferWriter::rollback`] just forgets
//!   `[tail, write_pos)`.
//! - **Eviction.** Before writing bytes up to position `end`, the writer moves `head` past whole windows
//!   until `end - head <= capacity`, updating `prev_scn` (the last evicted window). `head` is always a window
//!   start. The open window is never evicted: a window that would span more than the capacity is refused
//!   with [`AppendError::WindowTooLarge`].
//! - **SCN index.** A ring of `(scn, position)` entries, at most one per `index_block_bytes` block of
//!   positions, each naming a window start; lookups binary-search it (`O(log n)`) and then scan forward at
//!   most about one block plus the window found.
//! - **Side index.** Optional: a second ring of one entry per frame, evicted with the frames it
//!   describes (see the `side` module). A window needs an entry per frame, or it is refused with
//!   [`AppendError::WindowTooManyFrames`].
//! - **Windows.** Window SCNs strictly increase and are never 0; all frames of a window carry its SCN.
//! - **Memory.** The ring is allocated zeroed (the kernel maps pages on first write and zeroes them then).
//!   [`Prefault`] (in [`BufferConfig`]) decides who pays for that zeroing: by default a `ring-prefault`
//!   thread faults pages in ahead of the tail (`MADV_POPULATE_WRITE`, or one atomic no-op write per page
//!   on older kernels) so the writer does not; it changes no byte the writer or readers see.
//! - **Origin.** `prev_scn` is the SCN the held history continues from: the last evicted window, or,
//!   before any eviction, the buffer's origin (0 by default). A checkpoint before it gets
//!   [`ReadError::ScnNotFound`], decided inside the read that would serve it (never by an earlier check
//!   that the writer could overtake). A buffer made with [`BufferConfig::awaiting_anchor`] has no origin
//!   until [`BufferWriter::anchor`] gives it one; until then every read answers
//!   [`ReadError::NotAnchored`] and long polls wait. The writer may re-anchor only while it has published
//!   nothing, and cannot publish before it anchored.
//!
//! # Concurrency protocol (a seqlock over positions)
//!
//! The ring is an array of `AtomicU64` words accessed only with `Relaxed` loads and stores, so racing
//! readers and the writer never perform a data race (which would be undefined behaviour even if the bytes
//! were discarded). Ordering comes from three cursors:
//!
//! - *Publish*: the writer stores a window's words (Relaxed), then `tail` with `Release`. A reader loads
//!   `tail` with `Acquire` and reads only below it, so it sees every word of every published window.
//!   The reader loads `prev_scn` after `tail`, so it sees the origin (or a later eviction) the writer
//!   stored before publishing the windows it reads: a stale origin can never admit a checkpoint.
//! - *Evict*: the writer stores `prev_scn`, `index_head`, then `head` with `Release`, then issues a
//!   `Release` fence, and only then overwrites the evicted bytes and index slots.
//! - *Validate*: a reader copies (Relaxed loads), then issues an `Acquire` fence and reloads `head` and
//!   `index_head`. If any load saw an overwrite, fence-to-fence synchronization guarantees it sees the moved
//!   cursors: the copy is valid iff `head <= first position read` and `index_head <= first index entry
//!   read`. An invalid attempt is discarded and the read restarts; by then `prev_scn` has moved past the
//!   checkpoint if the data it needed is gone, and the reader gets [`ReadError::ScnNotFound`]. A reader
//!   therefore never returns overwritten bytes, and never takes a lock.
//!
//! This is the design of crossbeam's `SeqLock` and of `atomic-memcpy`, with positions as the sequence
//! numbers. It is model-checked with loom (`tests/loom.rs`) and stress-tested (`tests/stress.rs`).
//!
//! # Ring layout
//!
//! See the `ring` module: frames start at multiples of 8 and occupy their length rounded up to 8; a frame
//! never straddles the end of the ring (a pad word sends readers to the ring's start).
//!
//! # Long polls
//!
//! [`EventBuffer::wait_for_data_after`] waits on a `tokio::sync::Notify`; the writer notifies only when a
//! waiter is registered (a counter checked after a `SeqCst` fence), so a relay without long-polling
//! clients never touches `Notify`'s internal lock.

mod buffer;
mod error;
mod ring;
mod side;
mod sync;
mod writer;

pub use buffer::{BufferStats, EmptyWindows, EventBuffer, EventFilter, ReadOutcome, WaitOutcome};
pub use error::{AppendError, BufferError, ReadError};
pub use ring::{DEFAULT_PREFAULT_AHEAD, Prefault};
pub use side::SIDE_ENTRY_BYTES;
pub use writer::{BufferWriter, WindowInfo};

use crossbeam_utils::CachePadded;

use crate::buffer::{Counters, HeadCursor, INDEX_STRIDE, TailCursor, UNANCHORED};
use crate::sync::{Arc, AtomicU64, AtomicUsize};

/// Default size of an SCN index block: one index entry per 4 KiB of positions at most.
pub const DEFAULT_INDEX_BLOCK_BYTES: usize = 4096;
/// Smallest accepted capacity.
pub const MIN_CAPACITY_BYTES: usize = 64;
/// Fewest side index entries a buffer with a side index may have.
const MIN_SIDE_ENTRIES: u64 = 4;

/// Sizes of an event buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Capacity in bytes, rounded down to a multiple of 8; at least [`MIN_CAPACITY_BYTES`]. Bounds the
    /// largest window (transaction) the relay can hold.
    pub capacity_bytes: usize,
    /// One SCN index entry at most per block of this many bytes (default [`DEFAULT_INDEX_BLOCK_BYTES`]);
    /// at least 64 and at most the capacity. Smaller blocks mean shorter scans after the index lookup and
    /// a larger index (16 bytes per block).
    pub index_block_bytes: usize,
    /// `false` (the default): the buffer's history starts at SCN 0, so a buffer that never evicted
    /// serves every checkpoint. `true`: the buffer starts without an origin and reads answer
    /// [`ReadError::NotAnchored`] until the writer calls [`BufferWriter::anchor`] with the SCN its history
    /// continues from. A relay uses this: until its source is positioned it cannot know which
    /// checkpoints its first window continues, and serving any of them would skip windows silently.
    pub awaits_anchor: bool,
    /// How the ring's pages are faulted in (default: [`Prefault::Ahead`] by
    /// [`DEFAULT_PREFAULT_AHEAD`], a background thread keeping the first write of each page off the
    /// writer).
    pub prefault: Prefault,
    /// `true`: keep a side index (see the `side` module), one [`SIDE_ENTRY_BYTES`] entry per frame
    /// holding its source and key hash, so [`EventBuffer::read_indexed`] decides filters without
    /// touching frames. It takes [`SIDE_INDEX_SHARE`] of `capacity_bytes` from the event ring (the total
    /// stays within `capacity_bytes`); a window with more frames than it has entries is refused with
    /// [`AppendError::WindowTooManyFrames`]. `false` (the default of [`BufferConfig::new`]): the whole
    /// capacity is the event ring and `read_indexed` scans frames.
    pub side_index: bool,
    /// `false` (the default): the buffer's memory is on ordinary 4 KiB pages, even where the
    /// allocator or the system's `transparent_hugepage` setting would choose huge pages. `true`: on
    /// transparent huge pages (2 MiB). The kernel zeroes each page on its first write; on a virtual
    /// machine whose host takes freed memory back (free page reporting, common in clouds), a fresh
    /// huge page costs about 2 s per GiB to fault in against 0.3 s for small pages (measured on the
    /// project's 2-core KVM guest, docs/BENCHMARKS.md "Ingest on two cores"), which a relay pays while it
    /// first fills its buffer. Reads showed no measurable difference.
    pub huge_pages: bool,
}

/// The share of [`BufferConfig::capacity_bytes`] a side index takes: one ninth, one 16-byte entry per
/// 128 bytes of ring, which covers frames of a small row change (56-byte header, 8-byte key, a few dozen
/// bytes of payload). With smaller frames the side ring fills first and windows are evicted when it does.
pub const SIDE_INDEX_SHARE: (usize, usize) = (1, 9);

impl BufferConfig {
    /// A buffer of `capacity_bytes` with the default index block size (or the capacity, if smaller).
    pub fn new(capacity_bytes: usize) -> Self {
        BufferConfig {
            capacity_bytes,
            index_block_bytes: DEFAULT_INDEX_BLOCK_BYTES.min(capacity_bytes & !7).max(64),
            awaits_anchor: false,
            prefault: Prefault::default(),
            side_index: false,
            huge_pages: false,
        }
    }

    /// The same buffer on huge pages or not (see [`huge_pages`](Self::huge_pages)).
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// The same buffer with a side index (see [`side_index`](Self::side_index)).
    pub fn with_side_index(mut self) -> Self {
        self.side_index = true;
        self
    }

    /// The event ring's capacity and the side index's entries this configuration gives.
    fn split(&self) -> (u64, u64) {
        let total = (self.capacity_bytes & !7) as u64;
        if !self.side_index {
            return (total, 0);
        }
        let (num, den) = SIDE_INDEX_SHARE;
        let side_bytes =
            total / den as u64 * num as u64 / SIDE_ENTRY_BYTES as u64 * SIDE_ENTRY_BYTES as u64;
        (
            (total - side_bytes) & !7,
            side_bytes / SIDE_ENTRY_BYTES as u64,
        )
    }

    /// The same buffer, with its pages faulted in as `prefault` says.
    pub fn prefault(mut self, prefault: Prefault) -> Self {
        self.prefault = prefault;
        self
    }

    /// The same buffer, starting without an origin (see [`awaits_anchor`](Self::awaits_anchor)).
    pub fn awaiting_anchor(mut self) -> Self {
        self.awaits_anchor = true;
        self
    }

    /// The ring capacity, the index block size and the side index's entries (0: none).
    fn validate(&self) -> Result<(u64, u64, u64), BufferError> {
        let (ring, side_slots) = self.split();
        let capacity = ring as usize;
        if capacity < MIN_CAPACITY_BYTES {
            return Err(BufferError::InvalidConfig(format!(
                "capacity_bytes {} is too small; use at least {MIN_CAPACITY_BYTES} bytes",
                self.capacity_bytes
            )));
        }
        if self.side_index && (side_slots < MIN_SIDE_ENTRIES || ring >= side::MAX_INDEXED_CAPACITY)
        {
            return Err(BufferError::InvalidConfig(format!(
                "capacity_bytes {} is out of range for a side index; use at least {} bytes and less than 256 TiB, \
                 or turn the side index off",
                self.capacity_bytes,
                MIN_SIDE_ENTRIES as usize * SIDE_ENTRY_BYTES * SIDE_INDEX_SHARE.1
                    / SIDE_INDEX_SHARE.0
            )));
        }
        if self.index_block_bytes < 64 || self.index_block_bytes > capacity {
            return Err(BufferError::InvalidConfig(format!(
                "index_block_bytes {} must be between 64 and the capacity ({capacity} bytes)",
                self.index_block_bytes
            )));
        }
        Ok((capacity as u64, self.index_block_bytes as u64, side_slots))
    }
}

/// Creates an event buffer: its single writer and the shared read side.
///
/// The ring is allocated zeroed up front (the operating system maps the pages lazily).
pub fn event_buffer(config: BufferConfig) -> Result<(BufferWriter, Arc<EventBuffer>), BufferError> {
    let (capacity, block_bytes, side_slots) = config.validate()?;
    let slots = (capacity / block_bytes + 2) as usize;
    let buffer = Arc::new(EventBuffer {
        ring: ring::zeroed_words((capacity / 8) as usize, config.huge_pages),
        capacity,
        block_bytes,
        index: ring::zeroed_words(slots * INDEX_STRIDE, config.huge_pages),
        index_slots: slots as u64,
        side: ring::zeroed_words(side_slots as usize * side::SIDE_STRIDE, config.huge_pages),
        side_slots,
        head: CachePadded::new(HeadCursor {
            pos: AtomicU64::new(0),
            prev_scn: AtomicU64::new(if config.awaits_anchor { UNANCHORED } else { 0 }),
            min_scn: AtomicU64::new(0),
            index_head: AtomicU64::new(0),
            side_head: AtomicU64::new(0),
        }),
        tail: CachePadded::new(TailCursor {
            pos: AtomicU64::new(0),
            max_scn: AtomicU64::new(0),
            index_tail: AtomicU64::new(0),
            side_tail: AtomicU64::new(0),
        }),
        counters: CachePadded::new(Counters {
            events_held: AtomicU64::new(0),
            windows_held: AtomicU64::new(0),
        }),
        waiters: CachePadded::new(AtomicUsize::new(0)),
        #[cfg(not(loom))]
        notify: tokio::sync::Notify::new(),
    });
    #[cfg(not(loom))]
    match config.prefault {
        Prefault::OnFirstWrite => {}
        Prefault::AtCreation => {
            ring::prefault(&buffer.ring, 0..capacity);
            ring::prefault(&buffer.side, 0..side_slots * SIDE_ENTRY_BYTES as u64);
        }
        Prefault::Ahead { ahead_bytes } => {
            // Purely a speed-up, like the huge-page advice: if no thread can be started the writer
            // faults the pages in itself, as with `OnFirstWrite`.
            let _ = ring::spawn_prefaulter(&buffer, ahead_bytes);
        }
    }
    Ok((BufferWriter::new(Arc::clone(&buffer)), buffer))
}
