//! The ring's storage and the few frame fields the buffer reads straight from it.
//!
//! # Layout
//!
//! The ring is `capacity / 8` [`AtomicU64`] words. Byte `b` of a word is byte `8 * word + b` of the
//! ring (little-endian), so a frame stored in words reads back as the frame's bytes. A logical *position*
//! is a `u64` byte count since the buffer was created: it only grows and never wraps; its physical offset
//! is `position % capacity`.
//!
//! - Every frame starts at a multiple of 8 and occupies its length rounded up to 8 (the padding bytes are
//!   zero and are never handed out).
//! - A frame never straddles the end of the ring: when the next frame does not fit before the end, the
//!   writer stores [`PAD_WORD`] at the current offset and the frame starts at the beginning of the ring
//!   (Databus does the same). A reader that finds `PAD_WORD` where a frame should start skips to the next
//!   multiple of `capacity`. `PAD_WORD` cannot be the first word of a frame: its first four bytes are not
//!   the frame magic `DBUS`.
//!
//! Words are only ever accessed with `Relaxed` atomic loads and stores, so a reader racing with the writer
//! reads stale or new values but never performs a data race; whether what it read is still valid is
//! decided afterwards by comparing positions (see the crate docs).

use databus_core::frame::{HEADER_LEN, MAGIC, MAX_FRAME_LEN};
use databus_core::{ControlKind, Opcode, Scn};

use crate::sync::{AtomicU64, Ordering};

/// Marks "the rest of the ring up to its end is padding; the next frame starts at offset 0".
pub(crate) const PAD_WORD: u64 = u64::from_le_bytes(*b"dbus-pad");
const MAGIC_U32: u32 = u32::from_le_bytes(MAGIC);
const EOW_BYTE: u8 = Opcode::Control(ControlKind::EndOfWindow).to_byte();
/// Words of the fixed frame header.
pub(crate) const HEADER_WORDS: usize = HEADER_LEN / 8;

/// `len` rounded up to a multiple of 8.
pub(crate) const fn padded(len: u64) -> u64 {
    (len + 7) & !7
}

/// A zeroed array of atomic words, on huge pages or not (see [`BufferConfig::huge_pages`](crate::BufferConfig::huge_pages)).
pub(crate) fn zeroed_words(n: usize, huge_pages: bool) -> Box<[AtomicU64]> {
    #[cfg(not(loom))]
    {
        const {
            assert!(std::mem::size_of::<u64>() == std::mem::size_of::<AtomicU64>());
            assert!(std::mem::align_of::<u64>() == std::mem::align_of::<AtomicU64>());
        }
        // `vec![0; n]` asks the allocator for zeroed memory, which for large rings maps fresh zero pages
        // lazily instead of touching gigabytes at start-up.
        let words: Box<[u64]> = vec![0u64; n].into_boxed_slice();
        #[cfg(target_os = "linux")]
        advise_page_size(&words, huge_pages);
        #[cfg(not(target_os = "linux"))]
        let _ = huge_pages;
        let raw = Box::into_raw(words) as *mut [AtomicU64];
        // SAFETY: `AtomicU64` has the same size and bit validity as `u64` (std docs), and the same alignment
        // here (checked at compile time above), so the allocation has the layout `Box<[AtomicU64]>` will
        // free it with, and every zero `u64` is a valid `AtomicU64`. The raw pointer came from
        // `Box::into_raw` and is used exactly once.
        #[allow(unsafe_code)]
        unsafe {
            Box::from_raw(raw)
        }
    }
    #[cfg(loom)]
    {
        let _ = huge_pages;
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }
}

/// Tells Linux whether to back a large, not yet touched allocation with transparent huge pages
/// (`MADV_HUGEPAGE`, honoured when `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or
/// `always`) or not (`MADV_NOHUGEPAGE`: without it the allocator or `enabled = always` may choose huge
/// pages anyway). Purely advisory; failures are ignored.
#[cfg(all(target_os = "linux", not(loom)))]
fn advise_page_size(words: &[u64], huge: bool) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(words);
    if bytes < 2 * HUGE {
        return;
    }
    let start = words.as_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end <= aligned {
        return;
    }
    // SAFETY: `[aligned, end)` lies inside `words`' allocation, which is alive for the whole call.
    // MADV_HUGEPAGE and MADV_NOHUGEPAGE only change how the kernel backs those pages; neither changes
    // their contents or validity, so no Rust reference can observe it. The return value is
    // deliberately ignored.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            },
        );
    }
}

/// How the ring's pages get their memory. A fresh anonymous page is zeroed by the kernel on its first
/// write (`clear_page_erms`, 2 MiB at a time for the transparent huge pages asked for above); done by
/// the writer, that is ingest time spent zeroing, once per page of the ring, until the ring has been
/// written once (measured at 22-50% of a relay's CPU during a catch-up into a fresh buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefault {
    /// The writer faults each page in on its first write (the operating system's default).
    OnFirstWrite,
    /// A background thread (`ring-prefault`) faults pages in up to `ahead_bytes` beyond the published
    /// tail, so the writer finds them ready; the thread ends when the ring has been written once or the
    /// buffer is dropped. Memory grows with what the buffer holds, plus `ahead_bytes`. A side index
    /// is faulted in the same way, an eighth of `ahead_bytes` ahead of its newest entry.
    Ahead {
        /// How far beyond the tail pages are faulted in.
        ahead_bytes: usize,
    },
    /// Every page (the side index's too) before [`event_buffer`](crate::event_buffer) returns: creation takes the time the
    /// writer would have spent (about 0.1-0.2 s per GiB) and the whole capacity is resident at once.
    AtCreation,
}

impl Default for Prefault {
    fn default() -> Self {
        Prefault::Ahead {
            ahead_bytes: DEFAULT_PREFAULT_AHEAD,
        }
    }
}

/// [`Prefault::Ahead`]'s default: 64 MiB, about 20-30 ms of the fastest writer measured, while the
/// thread looks again every [`PREFAULT_POLL`].
pub const DEFAULT_PREFAULT_AHEAD: usize = 64 << 20;
#[cfg(not(loom))]
const PREFAULT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Faults in the pages lying wholly inside bytes `range` of `ring` for writing, without changing what
/// they hold (safe while the writer and readers use them).
#[cfg(not(loom))]
pub(crate) fn prefault(ring: &[AtomicU64], range: std::ops::Range<u64>) {
    const PAGE: usize = 4096;
    let base = ring.as_ptr() as usize;
    let len = std::mem::size_of_val(ring);
    let start = (base + (range.start as usize).min(len)).next_multiple_of(PAGE);
    let end = (base + (range.end as usize).min(len)) / PAGE * PAGE;
    if end <= start {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        /// `MADV_POPULATE_WRITE` (Linux 5.14; not in the libc crate yet): fault the range in as if
        /// written, without writing.
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: `[start, end)` lies inside `ring`'s allocation (clamped to its length and rounded
        // inwards to whole pages), which is borrowed, so alive, for the whole call. MADV_POPULATE_WRITE
        // only makes the kernel allocate the pages now instead of on the first write; it never changes
        // their contents, so concurrent atomic loads and stores of the writer and readers see no
        // difference.
        #[allow(unsafe_code)]
        let done =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_WRITE) }
                == 0;
        if done {
            return;
        }
    }
    // Older kernels: one atomic no-op write per page. `fetch_or(0)` leaves the word as it is even
    // while the writer stores to it (an atomic read-modify-write never loses a concurrent store).
    let first = (start - base) / 8;
    let last = (end - base) / 8;
    for i in (first..last).step_by(PAGE / 8) {
        // Relaxed: the value does not change; only the page fault matters.
        ring[i].fetch_or(0, Ordering::Relaxed);
    }
}

/// Starts the [`Prefault::Ahead`] thread of `buffer`. It holds the buffer only while it faults pages
/// in, so dropping every handle of the buffer ends it within [`PREFAULT_POLL`].
#[cfg(not(loom))]
pub(crate) fn spawn_prefaulter(
    buffer: &std::sync::Arc<crate::EventBuffer>,
    ahead_bytes: usize,
) -> std::io::Result<()> {
    const CHUNK: u64 = 2 << 20;
    let weak = std::sync::Arc::downgrade(buffer);
    let capacity = buffer.capacity;
    let side_bytes = std::mem::size_of_val(&*buffer.side) as u64;
    let ahead = ahead_bytes as u64;
    std::thread::Builder::new()
        .name("ring-prefault".into())
        .spawn(move || {
            let mut done = 0u64;
            // The side index (if any) is faulted in the same way, as far ahead in entries as the
            // ring is in bytes, scaled to its share.
            let side_ahead = ahead / 8;
            let mut side_done = 0u64;
            while let Some(buffer) = weak.upgrade() {
                // Relaxed: only a hint of how far the writer got; a stale value means faulting a
                // little less far ahead this time.
                let tail = buffer.tail.pos.load(Ordering::Relaxed);
                let side_tail = buffer.tail.side_tail.load(Ordering::Relaxed)
                    * crate::side::SIDE_ENTRY_BYTES as u64;
                if tail >= capacity && side_tail >= side_bytes {
                    return; // the writer has written every page once
                }
                let target = tail.saturating_add(ahead).min(capacity);
                while done < target {
                    let next = (done + CHUNK).min(target);
                    prefault(&buffer.ring, done..next);
                    done = next;
                }
                let side_target = side_tail.saturating_add(side_ahead).min(side_bytes);
                while side_done < side_target {
                    let next = (side_done + CHUNK).min(side_target);
                    prefault(&buffer.side, side_done..next);
                    side_done = next;
                }
                if done >= capacity && side_done >= side_bytes {
                    return;
                }
                drop(buffer);
                std::thread::sleep(PREFAULT_POLL);
            }
        })
        .map(drop)
}

/// The fields of a frame header the buffer itself needs, decoded from its first three words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFrame {
    /// Exact frame length in bytes.
    pub(crate) len: u64,
    /// The frame's window SCN.
    pub(crate) scn: Scn,
    /// Whether it is an end-of-window marker.
    pub(crate) end_of_window: bool,
}

impl RawFrame {
    /// Decodes words 0..3 of a frame, or says why they cannot start a frame. Cheap plausibility checks
    /// only; the header checksum is verified by [`databus_core::FrameHeader::parse`] where the header is
    /// handed to a filter, and readers validate positions before trusting anything.
    pub(crate) fn decode(w0: u64, w1: u64, w2: u64) -> Result<RawFrame, &'static str> {
        if w0 as u32 != MAGIC_U32 {
            return Err("bad frame magic");
        }
        let len = w1 & 0xffff_ffff;
        if len < HEADER_LEN as u64 || len > MAX_FRAME_LEN as u64 {
            return Err("frame length out of range");
        }
        Ok(RawFrame {
            len,
            // Bytes 12..20: the high half of word 1 and the low half of word 2.
            scn: Scn::new((w1 >> 32) | (w2 << 32)),
            end_of_window: (w0 >> 40) as u8 == EOW_BYTE,
        })
    }

    /// Bytes the frame occupies in the ring.
    pub(crate) fn padded_len(&self) -> u64 {
        padded(self.len)
    }
}

/// Asks the CPU to start loading the cache lines of ring bytes `phys..phys + len` (clamped to the
/// ring) without waiting for them: a partitioned reader that knows, from the side index, which frames
/// it will copy fetches many at once instead of missing on each in turn. A hint only: it changes no
/// value and cannot fault.
#[inline(always)]
pub(crate) fn prefetch(ring: &[AtomicU64], phys: u64, len: u64) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (phys + len).min(std::mem::size_of_val(ring) as u64);
        let mut at = phys;
        while at < end {
            let p = ring[(at / 8) as usize].as_ptr() as *const i8;
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the target's
            // baseline features). A prefetch does not access memory in the language's sense: it never
            // faults and changes no value, so it cannot race with the writer's stores; `p` points into
            // `ring`, borrowed for the whole call.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p)
            };
            at += 64;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = (ring, phys, len);
}

/// Loads the word at byte offset `phys` (a multiple of 8).
#[inline]
pub(crate) fn load(ring: &[AtomicU64], phys: u64) -> u64 {
    // Relaxed: the ring's words carry no synchronization of their own; ordering comes from the cursors
    // (Acquire/Release) and the fences around them, see the crate docs.
    ring[(phys / 8) as usize].load(Ordering::Relaxed)
}
