//! The side index: one 16-byte entry per frame, so a filtered reader decides without touching frames.
//!
//! A partitioned reader keeps a small fraction of the frames it scans. Walking the frames themselves
//! costs a header load and a key hash per frame and per reader; the side index moves that work to the
//! writer, once per frame: for every frame it appends, the writer stores an entry holding where the frame
//! is, its kind, its source and the key's [`KeyHash`] (the hash MOD filters bucket, computed once here,
//! with the same function as `databus_filters`). A reader walks the entries, asks the filter about
//! `(source, hash)` and loads only the frames it keeps.
//!
//! # Layout
//!
//! Entry `seq` (a sequence number counting every frame ever appended, like a position counts bytes)
//! lives in slot `seq % slots`, as two [`AtomicU64`] words:
//!
//! | word | bits | field |
//! |-----:|-----:|-------|
//! | 0 | 0..45 | the frame's physical offset in the ring, divided by 8 (so rings up to 256 TiB) |
//! | 0 | 45..48 | [`Kind`] |
//! | 0 | 48..64 | source id |
//! | 1 | 0..64 | [`Kind::Row`]: the key's [`KeyHash`]; [`Kind::EndOfWindow`]: the window's SCN; else 0 |
//!
//! # Invariants
//!
//! - Entries are appended in frame order, one per frame (end-of-window markers included, wrap pads
//!   excluded), so entries `[side_head, side_tail)` describe exactly the frames of the published windows
//!   `[head, tail)`, in order.
//! - `side_head` is the entry of the frame at `head`: the writer moves both in the same eviction, and
//!   evicts windows when either the ring's bytes or the side ring's slots run out. An entry is therefore
//!   valid exactly while its frame is, and a reader validates entries as it validates frames (the
//!   seqlock of the crate docs: read, Acquire fence, `side_head <= first entry read`).
//! - A window needs as many slots as it has frames (its marker included); one that needs more than the
//!   side ring holds is refused with [`AppendError::WindowTooManyFrames`](crate::AppendError::WindowTooManyFrames).
//! - The SCN index's spare word holds the entry sequence number of the window each index entry names,
//!   so a read finds its first entry with the same index search as a frame read.

use databus_core::frame::HEADER_LEN;
use databus_core::{KeyRef, Opcode, SourceId};
use databus_filters::KeyHash;

use crate::sync::{AtomicU64, Ordering};

/// Words per side entry.
pub(crate) const SIDE_STRIDE: usize = 2;
/// Bytes per side entry.
pub const SIDE_ENTRY_BYTES: usize = SIDE_STRIDE * 8;
/// Largest ring capacity a side index can describe (physical offsets are stored in 45 bits, in words).
pub(crate) const MAX_INDEXED_CAPACITY: u64 = 1 << 48;

const PHYS_BITS: u32 = 45;
const KIND_SHIFT: u32 = 45;
const SOURCE_SHIFT: u32 = 48;

/// What kind of frame an entry describes: what a filter needs to know about it besides its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A row change: decided by the source and key filters (entry word 1 is the key hash).
    Row = 0,
    /// A table event (truncate, schema change): decided by the source filter alone.
    Table = 1,
    /// Any other control event: always passes.
    Control = 2,
    /// An end-of-window marker (entry word 1 is the window SCN).
    EndOfWindow = 3,
}

impl Kind {
    fn from_bits(bits: u64) -> Option<Kind> {
        match bits {
            0 => Some(Kind::Row),
            1 => Some(Kind::Table),
            2 => Some(Kind::Control),
            3 => Some(Kind::EndOfWindow),
            _ => None,
        }
    }
}

/// One decoded side entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SideEntry {
    /// Physical offset of the frame in the ring (a multiple of 8).
    pub(crate) phys: u64,
    pub(crate) kind: Kind,
    pub(crate) source: SourceId,
    /// Key hash (rows) or window SCN (end-of-window markers).
    pub(crate) value: u64,
}

impl SideEntry {
    /// The entry of the frame whose first bytes (header and key, at least) are `frame`, stored at `phys`.
    /// `None` if the header does not parse (the writer built it, so never expected).
    pub(crate) fn of_frame(frame: &[u8], phys: u64) -> Option<SideEntry> {
        // The fields are read straight from the header the writer just built (offsets in
        // `databus_core::frame`): parsing it whole costs the writer more than the rest of the entry.
        let header = frame.get(..HEADER_LEN)?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let opcode = Opcode::from_byte(header[5])?;
        let source = SourceId::new(u16_at(28));
        let (kind, value) = if opcode == Opcode::Control(databus_core::ControlKind::EndOfWindow) {
            let scn = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
            (Kind::EndOfWindow, scn)
        } else if opcode.is_control() {
            (Kind::Control, 0)
        } else if opcode.is_table_event() {
            (Kind::Table, 0)
        } else {
            let key_len = u32_at(40) as usize;
            let key_bytes = frame.get(HEADER_LEN..HEADER_LEN + key_len)?;
            // The key type is byte 6 of the header: 1 integer, 2 bytes.
            let key = match header[6] {
                1 => KeyRef::Int(i64::from_le_bytes(key_bytes.try_into().ok()?)),
                2 => KeyRef::Bytes(key_bytes),
                _ => KeyRef::None,
            };
            (Kind::Row, KeyHash::of(key).get())
        };
        Some(SideEntry {
            phys,
            kind,
            source,
            value,
        })
    }

    fn encode(&self) -> [u64; SIDE_STRIDE] {
        debug_assert!(self.phys % 8 == 0 && self.phys < MAX_INDEXED_CAPACITY);
        [
            (self.phys / 8)
                | ((self.kind as u64) << KIND_SHIFT)
                | (u64::from(self.source.get()) << SOURCE_SHIFT),
            self.value,
        ]
    }

    fn decode(words: [u64; SIDE_STRIDE]) -> Option<SideEntry> {
        let [w0, value] = words;
        Some(SideEntry {
            phys: phys_of(w0),
            kind: Kind::from_bits((w0 >> KIND_SHIFT) & 0b111)?,
            source: source_of(w0),
            value,
        })
    }
}

/// Stores entry `seq` (the writer only).
pub(crate) fn store(side: &[AtomicU64], slots: u64, seq: u64, entry: &SideEntry) {
    let base = (seq % slots) as usize * SIDE_STRIDE;
    for (word, value) in side[base..base + SIDE_STRIDE].iter().zip(entry.encode()) {
        // Relaxed: published by the Release stores of `side_tail` and `tail` when its window is;
        // overwrites of evicted entries are ordered after the cursors by the fence in `evict_until`.
        word.store(value, Ordering::Relaxed);
    }
}

/// Loads the entry in `slot` (entry `seq` is in slot `seq % slots`); `None` if its kind bits are not a
/// kind (the writer overtook the reader mid-load, or a bug; the read's validation tells which).
#[inline]
pub(crate) fn load(side: &[AtomicU64], slot: u64) -> Option<SideEntry> {
    SideEntry::decode(load_raw(side, slot))
}

/// The two words of the entry in `slot`, undecoded (for the scan's fast path).
#[inline]
pub(crate) fn load_raw(side: &[AtomicU64], slot: u64) -> [u64; SIDE_STRIDE] {
    let base = slot as usize * SIDE_STRIDE;
    // Relaxed: validated afterwards, like every load of a read (see `EventBuffer::still_valid`).
    [
        side[base].load(Ordering::Relaxed),
        side[base + 1].load(Ordering::Relaxed),
    ]
}

/// Whether word 0 of an entry says [`Kind::Row`].
#[inline]
pub(crate) fn is_row(w0: u64) -> bool {
    (w0 >> KIND_SHIFT) & 0b111 == Kind::Row as u64
}

/// Whether word 0 of an entry says [`Kind::EndOfWindow`].
#[inline]
pub(crate) fn is_marker(w0: u64) -> bool {
    (w0 >> KIND_SHIFT) & 0b111 == Kind::EndOfWindow as u64
}

/// The ring offset in word 0 of an entry.
#[inline]
pub(crate) fn phys_of(w0: u64) -> u64 {
    (w0 & ((1 << PHYS_BITS) - 1)) * 8
}

/// The source id in word 0 of an entry.
#[inline]
pub(crate) fn source_of(w0: u64) -> SourceId {
    SourceId::new((w0 >> SOURCE_SHIFT) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::{EventBuilder, Scn};

    #[test]
    fn entries_round_trip() {
        for (phys, kind, source, value) in [
            (0, Kind::Row, 0, 0),
            (8, Kind::Table, 1, u64::MAX >> 1),
            (
                MAX_INDEXED_CAPACITY - 8,
                Kind::EndOfWindow,
                u16::MAX,
                u64::MAX,
            ),
            (4096, Kind::Control, 300, 7),
        ] {
            let e = SideEntry {
                phys,
                kind,
                source: SourceId::new(source),
                value,
            };
            assert_eq!(SideEntry::decode(e.encode()), Some(e));
        }
        assert_eq!(SideEntry::decode([7 << KIND_SHIFT, 0]), None);
        let row = SideEntry {
            phys: 64,
            kind: Kind::Row,
            source: SourceId::new(513),
            value: 9,
        }
        .encode();
        assert!(is_row(row[0]));
        assert_eq!(source_of(row[0]), SourceId::new(513));
        let table = SideEntry {
            phys: 64,
            kind: Kind::Table,
            source: SourceId::new(513),
            value: 0,
        }
        .encode();
        assert!(!is_row(table[0]));
    }

    #[test]
    fn entry_of_a_frame_holds_the_filters_key_hash() {
        let mut buf = Vec::new();
        for key in [KeyRef::Int(-5), KeyRef::Bytes(b"user-17"), KeyRef::None] {
            buf.clear();
            EventBuilder::new(Scn::new(3), Opcode::Upsert)
                .source(SourceId::new(9))
                .key(key)
                .payload(b"xyz")
                .write_to_vec(&mut buf);
            let e = SideEntry::of_frame(&buf, 64).unwrap();
            assert_eq!(e.kind, Kind::Row);
            assert_eq!(e.source, SourceId::new(9));
            assert_eq!(e.value, KeyHash::of(key).get());
            assert_eq!(e.phys, 64);
        }
        buf.clear();
        EventBuilder::end_of_window(Scn::new(77), 5).write_to_vec(&mut buf);
        let e = SideEntry::of_frame(&buf, 0).unwrap();
        assert_eq!((e.kind, e.value), (Kind::EndOfWindow, 77));
        buf.clear();
        EventBuilder::new(Scn::new(3), Opcode::Truncate)
            .source(SourceId::new(2))
            .payload(b"{}")
            .write_to_vec(&mut buf);
        let e = SideEntry::of_frame(&buf, 0).unwrap();
        assert_eq!((e.kind, e.source), (Kind::Table, SourceId::new(2)));
    }
}
