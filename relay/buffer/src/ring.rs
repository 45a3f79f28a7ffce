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

/// A zeroed array of atomic words.
pub(crate) fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
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
        advise_huge_pages(&words);
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
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }
}

/// Asks Linux to back a large, not yet touched allocation with transparent huge pages (honoured when
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or `always`): a multi-GiB ring then costs
/// far fewer TLB misses on lookups and copies. Purely advisory; failures are ignored.
#[cfg(all(target_os = "linux", not(loom)))]
fn advise_huge_pages(words: &[u64]) {
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
    // MADV_HUGEPAGE only changes how the kernel backs those pages; it never changes their contents or
    // their validity, so no Rust reference can observe it. The return value is deliberately ignored.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        );
    }
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

/// Loads the word at byte offset `phys` (a multiple of 8).
#[inline]
pub(crate) fn load(ring: &[AtomicU64], phys: u64) -> u64 {
    // Relaxed: the ring's words carry no synchronization of their own; ordering comes from the cursors
    // (Acquire/Release) and the fences around them, see the crate docs.
    ring[(phys / 8) as usize].load(Ordering::Relaxed)
}
