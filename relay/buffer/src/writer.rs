//! The single writer: appends frames to the open window, publishes windows, evicts old ones.

use std::fmt;

use databus_core::frame::HEADER_LEN;
use databus_core::{EventBuilder, Scn};

use crate::buffer::{EventBuffer, INDEX_STRIDE, UNANCHORED};
use crate::error::AppendError;
use crate::ring::{self, PAD_WORD, RawFrame};
use crate::side::{self, SideEntry};
use crate::sync::{Arc, Ordering, fence};

/// What [`BufferWriter::end_window`] published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowInfo {
    /// The window's SCN.
    pub scn: Scn,
    /// Its data events (0 for a heartbeat).
    pub events: u32,
    /// Bytes it occupies, end marker and padding included.
    pub bytes: u64,
    /// Windows evicted from the head to make room for it.
    pub evicted_windows: u64,
}

#[derive(Debug, Clone, Copy)]
struct OpenWindow {
    scn: Scn,
    events: u32,
}

/// The buffer's only writer. Not `Clone`: one writer per buffer is what makes the hot path lock-free.
///
/// Events go into the *open window* with [`append`](Self::append); [`end_window`](Self::end_window)
/// appends the end marker and makes the whole window visible to readers at once;
/// [`rollback`](Self::rollback) discards it. Room is made by evicting whole windows from the head, oldest
/// first, never the open window.
pub struct BufferWriter {
    buf: Arc<EventBuffer>,
    scratch: Vec<u8>,
    /// End of what was written (open window included).
    write_pos: u64,
    /// `write_pos % capacity`, kept incrementally (no division per event).
    write_phys: u64,
    /// Start of the open window = the published tail.
    window_start: u64,
    window_start_phys: u64,
    /// The index entry added for the open window, if its start opened a new block.
    open_entry: Option<u64>,
    open: Option<OpenWindow>,
    last_scn: Scn,
    evicted_in_window: u64,
    // Private copies of what only this writer stores, so it never reloads shared cursors.
    head: u64,
    prev_scn: u64,
    min_scn: u64,
    index_head: u64,
    /// Next index entry sequence number (unpublished entries of the open window included).
    index_next: u64,
    index_published: u64,
    /// Block of the newest index entry, written / published.
    last_block: Option<u64>,
    last_block_published: Option<u64>,
    events_held: u64,
    windows_held: u64,
    /// Side index (when the buffer has one): the next entry's sequence number (the open window's
    /// included), the first of the open window (= published `side_tail`), and the oldest held
    /// (`side_head`, the entry of the frame at `head`).
    side_next: u64,
    side_published: u64,
    side_head: u64,
}

impl fmt::Debug for BufferWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferWriter")
            .field("write_pos", &self.write_pos)
            .field("window_start", &self.window_start)
            .field("open", &self.open)
            .field("last_scn", &self.last_scn)
            .finish_non_exhaustive()
    }
}

impl BufferWriter {
    pub(crate) fn new(buf: Arc<EventBuffer>) -> Self {
        // Relaxed: nothing else has the buffer yet.
        let prev_scn = buf.head.prev_scn.load(Ordering::Relaxed);
        BufferWriter {
            buf,
            scratch: Vec::new(),
            write_pos: 0,
            write_phys: 0,
            window_start: 0,
            window_start_phys: 0,
            open_entry: None,
            open: None,
            last_scn: Scn::ZERO,
            evicted_in_window: 0,
            head: 0,
            prev_scn,
            min_scn: 0,
            index_head: 0,
            index_next: 0,
            index_published: 0,
            last_block: None,
            last_block_published: None,
            events_held: 0,
            windows_held: 0,
            side_next: 0,
            side_published: 0,
            side_head: 0,
        }
    }

    /// The shared read side.
    pub fn buffer(&self) -> &Arc<EventBuffer> {
        &self.buf
    }

    /// The SCN of the open window, if one is open.
    pub fn open_window(&self) -> Option<Scn> {
        self.open.map(|w| w.scn)
    }

    /// The SCN of the last published window (0 before the first).
    pub fn last_scn(&self) -> Scn {
        self.last_scn
    }

    /// Appends a data event to the open window, opening one if none is. The event's SCN is the window's:
    /// it must be greater than the last published window's SCN to open a window, and equal to the open
    /// window's SCN otherwise (window SCNs are never 0). Nothing becomes visible before
    /// [`end_window`](Self::end_window).
    ///
    /// May evict old windows to make room. [`AppendError::WindowTooLarge`] discards the open window.
    pub fn append(&mut self, event: &EventBuilder<'_>) -> Result<(), AppendError> {
        event.check()?;
        let len = event.encoded_len() as u64;
        let padded = ring::padded(len);
        if self.scratch.len() < padded as usize {
            self.scratch.resize(padded as usize, 0);
        }
        event.write(&mut self.scratch[..len as usize]);
        self.scratch[len as usize..padded as usize].fill(0);
        // The builder does not expose its fields: read the opcode and SCN back from the frame header.
        let head = &self.scratch;
        let raw = RawFrame::decode(
            u64::from_le_bytes(word(head, 0)),
            u64::from_le_bytes(word(head, 1)),
            u64::from_le_bytes(word(head, 2)),
        )
        .map_err(|reason| {
            AppendError::Frame(databus_core::FrameError::BadLength(reason.to_owned()))
        })?;
        if raw.end_of_window
            || databus_core::Opcode::from_byte(head[5]).is_none_or(|o| o.is_control())
        {
            return Err(AppendError::ControlEvent);
        }
        let scn = raw.scn;
        let entry = self.side_entry(len)?;
        match self.open {
            Some(w) if w.scn != scn => {
                return Err(AppendError::ScnMismatch {
                    open: w.scn,
                    got: scn,
                });
            }
            Some(w) if w.events == u32::MAX => {
                return Err(AppendError::TooManyEvents { scn, max: u32::MAX });
            }
            None => self.check_new_window(scn)?,
            _ => {}
        }
        let phys = self.reserve(padded, scn, false)?;
        if self.open.is_none() {
            self.open = Some(OpenWindow { scn, events: 0 });
            self.add_index_entry(scn);
        }
        self.store_scratch(phys, padded);
        self.store_side_entry(entry, phys);
        if let Some(w) = &mut self.open {
            w.events += 1;
        }
        Ok(())
    }

    /// Appends window `scn`'s end marker and publishes the window: readers see all its events at once.
    /// With no open window this publishes a heartbeat (a window holding only its end marker), whose SCN
    /// must be greater than the last window's.
    pub fn end_window(&mut self, scn: Scn, timestamp_ns: u64) -> Result<WindowInfo, AppendError> {
        let events = match self.open {
            Some(w) if w.scn != scn => {
                return Err(AppendError::ScnMismatch {
                    open: w.scn,
                    got: scn,
                });
            }
            Some(w) => w.events,
            None => {
                self.check_new_window(scn)?;
                0
            }
        };
        let marker = EventBuilder::end_of_window(scn, timestamp_ns);
        let len = marker.encoded_len() as u64;
        debug_assert_eq!(len, HEADER_LEN as u64);
        let padded = ring::padded(len);
        if self.scratch.len() < padded as usize {
            self.scratch.resize(padded as usize, 0);
        }
        marker.write(&mut self.scratch[..len as usize]);
        let entry = self.side_entry(len)?;
        let phys = self.reserve(padded, scn, true)?;
        if self.open.is_none() {
            self.add_index_entry(scn);
        }
        self.store_scratch(phys, padded);
        self.store_side_entry(entry, phys);
        let info = WindowInfo {
            scn,
            events,
            bytes: self.write_pos - self.window_start,
            evicted_windows: self.evicted_in_window,
        };
        self.publish(scn, events);
        Ok(info)
    }

    /// Gives a buffer made with [`BufferConfig::awaiting_anchor`](crate::BufferConfig::awaiting_anchor)
    /// its origin: the windows this writer will publish continue the stream after SCN `after`, so
    /// readers are served from checkpoints at or after it and refused ([`ReadError::ScnNotFound`]) before
    /// it. Waiting long polls are woken. Allowed until the first window is published (a writer that
    /// repositions its source before publishing anything may move its origin); afterwards the origin is
    /// what was published and evicted, and this returns [`AppendError::AlreadyPublished`].
    ///
    /// [`ReadError::ScnNotFound`]: crate::ReadError::ScnNotFound
    pub fn anchor(&mut self, after: Scn) -> Result<(), AppendError> {
        if self.last_scn != Scn::ZERO || self.open.is_some() {
            return Err(AppendError::AlreadyPublished {
                last: self.last_scn.max(self.open.map_or(Scn::ZERO, |w| w.scn)),
            });
        }
        if after.get() == UNANCHORED {
            return Err(AppendError::ScnRegression {
                last: after,
                got: after,
            });
        }
        self.prev_scn = after.get();
        // Release: a reader that Acquire-loads it in `has_data_after` after being woken sees a settled
        // value; readers of windows see it through the tail's Release store in `publish` (it precedes
        // every publish).
        self.buf
            .head
            .prev_scn
            .store(self.prev_scn, Ordering::Release);
        #[cfg(not(loom))]
        {
            // SeqCst fence: as in `publish`, a waiter either sees the origin or is notified.
            fence(Ordering::SeqCst);
            if self.buf.waiters.load(Ordering::Relaxed) > 0 {
                self.buf.notify.notify_waiters();
            }
        }
        Ok(())
    }

    /// The origin this buffer was anchored at, while nothing is published (then the stream's position
    /// is [`last_scn`](Self::last_scn)). `None` for a buffer still awaiting its anchor.
    pub fn origin(&self) -> Option<Scn> {
        (self.prev_scn != UNANCHORED && self.last_scn == Scn::ZERO)
            .then_some(Scn::new(self.prev_scn))
    }

    /// Whether a window `scn` may open now: the buffer has an origin and `scn` follows both it and the
    /// last published window.
    fn check_new_window(&self, scn: Scn) -> Result<(), AppendError> {
        if self.prev_scn == UNANCHORED {
            return Err(AppendError::NotAnchored { scn });
        }
        let last = self.last_scn.max(Scn::new(self.prev_scn));
        if scn <= last || scn.get() == UNANCHORED {
            return Err(AppendError::ScnRegression { last, got: scn });
        }
        Ok(())
    }

    /// Discards the open window (e.g. after a connector error in the middle of a transaction). Readers
    /// never saw any of it. Windows evicted to make room for it stay evicted.
    pub fn rollback(&mut self) {
        self.write_pos = self.window_start;
        self.write_phys = self.window_start_phys;
        self.open_entry = None;
        self.open = None;
        self.index_next = self.index_published;
        self.last_block = self.last_block_published;
        self.evicted_in_window = 0;
        self.side_next = self.side_published;
    }

    fn publish(&mut self, scn: Scn, events: u32) {
        let buf = &*self.buf;
        self.events_held += u64::from(events);
        self.windows_held += 1;
        if self.min_scn == 0 {
            self.min_scn = scn.get();
            // Relaxed: reporting only (readers decide with prev_scn and positions, never with min_scn).
            buf.head.min_scn.store(self.min_scn, Ordering::Relaxed);
        }
        // Relaxed: reporting only.
        buf.counters
            .events_held
            .store(self.events_held, Ordering::Relaxed);
        buf.counters
            .windows_held
            .store(self.windows_held, Ordering::Relaxed);
        if let Some(seq) = self.open_entry.take() {
            // Relaxed: made visible by the Release store of the tail below.
            let base = (seq % buf.index_slots) as usize * INDEX_STRIDE;
            buf.index[base + 2].store(self.write_pos, Ordering::Relaxed);
        }
        // Relaxed: made visible by the Release store of the tail below.
        buf.tail
            .index_tail
            .store(self.index_next, Ordering::Relaxed);
        buf.tail.max_scn.store(scn.get(), Ordering::Relaxed);
        // Release: publishes the window's side entries (and its ring words, stored before) to readers
        // that Acquire-load `side_tail`, which they do after `tail` and may see newer than it.
        buf.tail.side_tail.store(self.side_next, Ordering::Release);
        // Release: publishes the window's ring words and index entries (all stored Relaxed before) to
        // readers that load the tail with Acquire. This single store is what makes a window visible.
        buf.tail.pos.store(self.write_pos, Ordering::Release);
        self.window_start = self.write_pos;
        self.window_start_phys = self.write_phys;
        self.index_published = self.index_next;
        self.side_published = self.side_next;
        self.last_block_published = self.last_block;
        self.last_scn = scn;
        self.open = None;
        self.evicted_in_window = 0;
        #[cfg(not(loom))]
        {
            // SeqCst fence: orders the tail store before the `waiters` load (a Dekker pair with the fence
            // in `wait_for_data_after`): either a waiter sees this window or we see the waiter. Only then
            // is Notify (which takes a lock internally) touched, so a relay with no long-polling client
            // never locks.
            fence(Ordering::SeqCst);
            if buf.waiters.load(Ordering::Relaxed) > 0 {
                buf.notify.notify_waiters();
            }
        }
    }

    /// Makes room for `padded` bytes at the end of the open window and returns their physical offset
    /// (after a wrap pad if they would straddle the end of the ring); `write_pos` then covers them.
    ///
    /// With a side index, also makes room for the frame's entry, and refuses a window whose frames (its
    /// end marker counted even before it comes, `closes_window` says whether this frame is it) cannot
    /// all have one.
    fn reserve(&mut self, padded: u64, scn: Scn, closes_window: bool) -> Result<u64, AppendError> {
        let capacity = self.buf.capacity;
        let slots = self.buf.side_slots;
        let side_end = self.side_next + 1;
        if slots > 0 {
            let frames = side_end - self.side_published + u64::from(!closes_window);
            if frames > slots {
                self.rollback();
                return Err(AppendError::WindowTooManyFrames {
                    scn,
                    frames,
                    entries: slots,
                });
            }
        }
        let phys = self.write_phys;
        let pad = if phys + padded > capacity {
            capacity - phys
        } else {
            0
        };
        let end = self.write_pos + pad + padded;
        if end - self.window_start > capacity {
            // Name the window's own bytes when they alone are too many, so the figure does not depend on
            // where the ring happened to wrap.
            let unpadded = self.write_pos - self.window_start + padded;
            let window_bytes = if unpadded > capacity {
                unpadded
            } else {
                end - self.window_start
            };
            self.rollback();
            return Err(AppendError::WindowTooLarge {
                scn,
                window_bytes,
                capacity_bytes: capacity,
            });
        }
        if end > self.head + capacity || (slots > 0 && side_end > self.side_head + slots) {
            self.evict_until(end, side_end);
        }
        let at = if pad > 0 {
            self.buf.ring[(phys / 8) as usize].store(PAD_WORD, Ordering::Relaxed);
            0
        } else {
            phys
        };
        self.write_pos = end;
        self.write_phys = at + padded;
        if self.write_phys == capacity {
            self.write_phys = 0;
        }
        Ok(at)
    }

    /// Evicts whole windows from the head until `end - head <= capacity` and, with a side index,
    /// `side_end - side_head <= side_slots`, then publishes the new head.
    fn evict_until(&mut self, end: u64, side_end: u64) {
        let capacity = self.buf.capacity;
        let slots = self.buf.side_slots;
        let ring_words = &self.buf.ring;
        let mut evicted_events = 0;
        let mut evicted_windows = 0;
        // `end - window_start <= capacity` and `side_end - side_published <= slots` were checked, so the
        // loop stops at the latest at the open window.
        while (end > self.head + capacity || (slots > 0 && side_end > self.side_head + slots))
            && self.head < self.window_start
        {
            let mut pos = self.head;
            loop {
                let phys = pos % capacity;
                let w0 = ring::load(ring_words, phys);
                if w0 == PAD_WORD {
                    pos += capacity - phys;
                    continue;
                }
                let frame = RawFrame::decode(
                    w0,
                    ring::load(ring_words, phys + 8),
                    ring::load(ring_words, phys + 16),
                )
                .expect("the writer only stores whole frames");
                pos += frame.padded_len();
                self.side_head += 1;
                if frame.end_of_window {
                    self.prev_scn = frame.scn.get();
                    break;
                }
                evicted_events += 1;
            }
            self.head = pos;
            evicted_windows += 1;
        }
        let slots = self.buf.index_slots;
        while self.index_head < self.index_next
            && self.buf.index[(self.index_head % slots) as usize * INDEX_STRIDE + 1]
                .load(Ordering::Relaxed)
                < self.head
        {
            self.index_head += 1;
        }
        self.min_scn = if self.head < self.window_start {
            self.first_scn_at(self.head)
        } else {
            0
        };
        self.events_held -= evicted_events;
        self.windows_held -= evicted_windows;
        self.evicted_in_window += evicted_windows;
        let buf = &*self.buf;
        // Relaxed: reporting only.
        buf.counters
            .events_held
            .store(self.events_held, Ordering::Relaxed);
        buf.counters
            .windows_held
            .store(self.windows_held, Ordering::Relaxed);
        buf.head.min_scn.store(self.min_scn, Ordering::Relaxed);
        // Relaxed: made visible together with the head by its Release store below.
        buf.head.prev_scn.store(self.prev_scn, Ordering::Relaxed);
        buf.head
            .index_head
            .store(self.index_head, Ordering::Relaxed);
        buf.head.side_head.store(self.side_head, Ordering::Relaxed);
        // Release: a reader that Acquire-loads this head also sees the prev_scn and index_head above.
        buf.head.pos.store(self.head, Ordering::Release);
        // Release fence: every ring word or index slot stored after this point (the overwrites) is ordered
        // after the cursor stores above. A reader whose Relaxed load sees an overwrite and then issues an
        // Acquire fence (`EventBuffer::still_valid`) is guaranteed to see the new head / index_head and
        // discard what it read. This is the write side of the seqlock.
        fence(Ordering::Release);
    }

    /// The SCN of the window starting at `pos` (skipping a wrap pad).
    fn first_scn_at(&self, pos: u64) -> u64 {
        let capacity = self.buf.capacity;
        let mut phys = pos % capacity;
        if ring::load(&self.buf.ring, phys) == PAD_WORD {
            phys = 0;
        }
        let w1 = ring::load(&self.buf.ring, phys + 8);
        let w2 = ring::load(&self.buf.ring, phys + 16);
        (w1 >> 32) | (w2 << 32)
    }

    /// Adds an index entry for the window opening at `window_start`, unless its block already has one.
    fn add_index_entry(&mut self, scn: Scn) {
        let block = self.window_start / self.buf.block_bytes;
        if self.last_block == Some(block) {
            return;
        }
        let slots = self.buf.index_slots;
        // Entries live at positions in [head, head + capacity], at most one per block, and `slots` is
        // `capacity / block + 2`, so the slot is free: its previous entry's window was evicted and
        // index_head passed it (published before the Release fence in `evict_until`).
        debug_assert!(
            self.index_next - self.index_head < slots,
            "SCN index overflow"
        );
        let base = (self.index_next % slots) as usize * INDEX_STRIDE;
        // Relaxed: published by the tail's Release store in `publish`; overwrites of evicted entries are
        // ordered after the index_head store by the fence in `evict_until`. The end word is stored by
        // `publish`; until then it holds an older entry's end, which readers never see (unpublished).
        self.buf.index[base].store(scn.get(), Ordering::Relaxed);
        self.buf.index[base + 1].store(self.window_start, Ordering::Relaxed);
        // The side entry of the window's first frame (stored right after this).
        self.buf.index[base + 3].store(self.side_next, Ordering::Relaxed);
        self.open_entry = Some(self.index_next);
        self.index_next += 1;
        self.last_block = Some(block);
    }

    /// The side index entry of the frame in `scratch[..len]` (its offset set when stored), or `None`
    /// when the buffer has no side index.
    fn side_entry(&self, len: u64) -> Result<Option<SideEntry>, AppendError> {
        if self.buf.side_slots == 0 {
            return Ok(None);
        }
        SideEntry::of_frame(&self.scratch[..len as usize], 0)
            .map(Some)
            .ok_or_else(|| {
                AppendError::Frame(databus_core::FrameError::BadLength(
                    "frame header does not parse".to_owned(),
                ))
            })
    }

    /// Stores the entry of the frame just stored at `phys` as the next side entry.
    fn store_side_entry(&mut self, entry: Option<SideEntry>, phys: u64) {
        if let Some(mut entry) = entry {
            entry.phys = phys;
            // `reserve` evicted up to this entry's slot: `side_next < side_head + side_slots`.
            side::store(&self.buf.side, self.buf.side_slots, self.side_next, &entry);
            self.side_next += 1;
        }
    }

    fn store_scratch(&mut self, phys: u64, padded: u64) {
        let first = (phys / 8) as usize;
        let words = &self.buf.ring[first..first + (padded / 8) as usize];
        for (word, chunk) in words.iter().zip(self.scratch.chunks_exact(8)) {
            // Relaxed: published by the tail's Release store; see `evict_until` for overwrites.
            word.store(
                u64::from_le_bytes(chunk.try_into().expect("chunks of 8")),
                Ordering::Relaxed,
            );
        }
    }
}

fn word(bytes: &[u8], i: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
    w
}
