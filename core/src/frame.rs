//! The binary event frame, version 1.
//!
//! Every event travels as one frame: in the relay's buffer, on the wire of the `stream` API and in the
//! bootstrap log. All integers are little-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | magic `DBUS` (`0x44 0x42 0x55 0x53`) |
//! | 4 | 1 | version (`1`) |
//! | 5 | 1 | opcode: `1` upsert, `2` delete, `3` truncate, `4` schema change (table events, see [`crate::table_event`]), `5` update (an upsert with the before image, see [`crate::event::update_payload`]), `0x81` end of window |
//! | 6 | 1 | key type: `0` none, `1` integer (8 bytes, i64), `2` bytes |
//! | 7 | 1 | flags (reserved, `0`) |
//! | 8 | 4 | frame length: header + key + payload |
//! | 12 | 8 | SCN |
//! | 20 | 8 | timestamp, ns since the Unix epoch |
//! | 28 | 2 | source id |
//! | 30 | 2 | partition id |
//! | 32 | 8 | schema id |
//! | 40 | 4 | key length |
//! | 44 | 4 | payload length |
//! | 48 | 4 | body checksum: CRC32C of key + payload |
//! | 52 | 4 | header checksum: CRC32C of bytes 0..52 |
//! | 56 | key length | key |
//! | … | payload length | payload (Avro binary) |
//!
//! [`FrameHeader::parse`] checks the header alone (so a reader can filter on it without touching the
//! body); [`EventView::parse`] checks both checksums. Neither panics on any input.

use std::fmt;

use crate::{KeyRef, Opcode, PartitionId, SchemaId, Scn, SourceId};

/// The frame's magic number, `DBUS`.
pub const MAGIC: [u8; 4] = *b"DBUS";
/// The frame version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 56;
/// Largest frame this crate reads or writes: 1 GiB of payload plus a key and the header, in line with
/// MariaDB's largest event.
pub const MAX_FRAME_LEN: usize = (1 << 30) + (1 << 20);

const KEY_NONE: u8 = 0;
const KEY_INT: u8 = 1;
const KEY_BYTES: u8 = 2;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs.
    #[error("truncated event frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The first four bytes are not `DBUS`.
    #[error("bad magic {found:02x?}: not a databus event frame")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A frame version this build does not read.
    #[error("unsupported event frame version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The header checksum does not match.
    #[error("event header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// The checksum in the frame.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The body checksum does not match.
    #[error("event body checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BodyChecksum {
        /// The checksum in the frame.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The lengths in the header disagree or exceed the limit.
    #[error("bad event frame length: {0}")]
    BadLength(String),
    /// An opcode byte no version defines.
    #[error(
        "unknown opcode byte {0:#04x} (an event kind newer than this build: upgrade the reader)"
    )]
    BadOpcode(u8),
    /// A key type byte no version defines, or a key inconsistent with its type.
    #[error("bad key: {0}")]
    BadKey(String),
}

/// The parsed, checksum-verified fixed header of a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    opcode: Opcode,
    key_type: u8,
    frame_len: u32,
    scn: Scn,
    timestamp_ns: u64,
    source: SourceId,
    partition: PartitionId,
    schema: SchemaId,
    key_len: u32,
    payload_len: u32,
    body_crc: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl FrameHeader {
    /// Parses and verifies the header at the start of `bytes` (the body is neither read nor checked).
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        Self::parse_inner(bytes, true)
    }

    /// [`parse`](Self::parse) without recomputing the header checksum: every other check is made. Only
    /// for bytes whose header was written by [`EventBuilder`] or verified before,
    /// and kept where nothing but a bug can alter them (the relay's buffer builds every frame it holds,
    /// and parses millions of headers per second per filtered client when serving them).
    pub fn parse_verified_earlier(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        Self::parse_inner(bytes, false)
    }

    fn parse_inner(bytes: &[u8], verify: bool) -> Result<FrameHeader, FrameError> {
        if bytes.len() < HEADER_LEN {
            // Report a bad magic before a truncation when the magic is already visibly wrong.
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                return Err(FrameError::BadMagic {
                    found: [bytes[0], bytes[1], bytes[2], bytes[3]],
                });
            }
            return Err(FrameError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let h = &bytes[..HEADER_LEN];
        if h[..4] != MAGIC {
            return Err(FrameError::BadMagic {
                found: [h[0], h[1], h[2], h[3]],
            });
        }
        if h[4] != VERSION {
            return Err(FrameError::UnsupportedVersion(h[4]));
        }
        if verify {
            let stored = u32_at(h, 52);
            let computed = crc32c::crc32c(&h[..52]);
            if stored != computed {
                return Err(FrameError::HeaderChecksum { stored, computed });
            }
        }
        let opcode = Opcode::from_byte(h[5]).ok_or(FrameError::BadOpcode(h[5]))?;
        let key_type = h[6];
        let frame_len = u32_at(h, 8);
        let key_len = u32_at(h, 40);
        let payload_len = u32_at(h, 44);
        let expected = HEADER_LEN as u64 + u64::from(key_len) + u64::from(payload_len);
        if expected != u64::from(frame_len) {
            return Err(FrameError::BadLength(format!(
                "frame length {frame_len} != header {HEADER_LEN} + key {key_len} + payload {payload_len}"
            )));
        }
        if frame_len as usize > MAX_FRAME_LEN {
            return Err(FrameError::BadLength(format!(
                "frame length {frame_len} exceeds the limit of {MAX_FRAME_LEN} bytes"
            )));
        }
        match (key_type, key_len) {
            (KEY_NONE, 0) | (KEY_INT, 8) | (KEY_BYTES, _) => {}
            (KEY_NONE | KEY_INT, n) => {
                return Err(FrameError::BadKey(format!(
                    "key type {key_type} with key length {n}"
                )));
            }
            (other, _) => return Err(FrameError::BadKey(format!("unknown key type {other}"))),
        }
        Ok(FrameHeader {
            opcode,
            key_type,
            frame_len,
            scn: Scn::new(u64_at(h, 12)),
            timestamp_ns: u64_at(h, 20),
            source: SourceId::new(u16_at(h, 28)),
            partition: PartitionId::new(u16_at(h, 30)),
            schema: SchemaId::new(u64_at(h, 32)),
            key_len,
            payload_len,
            body_crc: u32_at(h, 48),
        })
    }

    /// Total length of the frame in bytes.
    pub fn frame_len(&self) -> usize {
        self.frame_len as usize
    }

    /// The window's SCN.
    pub fn scn(&self) -> Scn {
        self.scn
    }

    /// What the event does.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// The source id.
    pub fn source(&self) -> SourceId {
        self.source
    }

    /// The partition id.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Commit timestamp in ns since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// The writer schema id.
    pub fn schema(&self) -> SchemaId {
        self.schema
    }

    /// Length of the payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }

    /// Length of the key in bytes.
    pub fn key_len(&self) -> usize {
        self.key_len as usize
    }
}

impl fmt::Debug for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameHeader")
            .field("scn", &self.scn)
            .field("opcode", &self.opcode)
            .field("source", &self.source)
            .field("partition", &self.partition)
            .field("schema", &self.schema)
            .field("frame_len", &self.frame_len)
            .finish_non_exhaustive()
    }
}

/// A verified, zero-copy view of one frame inside a byte slice.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    header: FrameHeader,
    frame: &'a [u8],
}

impl<'a> EventView<'a> {
    /// Parses and verifies the frame at the start of `bytes`; returns it and the number of bytes it uses.
    pub fn parse(bytes: &'a [u8]) -> Result<(EventView<'a>, usize), FrameError> {
        Self::parse_inner(bytes, true)
    }

    fn parse_inner(bytes: &'a [u8], verify: bool) -> Result<(EventView<'a>, usize), FrameError> {
        let header = FrameHeader::parse_inner(bytes, verify)?;
        let len = header.frame_len();
        if bytes.len() < len {
            return Err(FrameError::Truncated {
                needed: len,
                available: bytes.len(),
            });
        }
        let frame = &bytes[..len];
        if verify {
            let computed = crc32c::crc32c(&frame[HEADER_LEN..]);
            if computed != header.body_crc {
                return Err(FrameError::BodyChecksum {
                    stored: header.body_crc,
                    computed,
                });
            }
        }
        let view = EventView { header, frame };
        view.check_layout()?;
        Ok((view, len))
    }

    /// An update's payload must hold its after image's length prefix and that many bytes.
    fn check_layout(&self) -> Result<(), FrameError> {
        if self.opcode() == Opcode::Update
            && crate::event::split_update_payload(self.payload()).is_none()
        {
            return Err(FrameError::BadLength(format!(
                "update event payload of {} bytes does not hold its after image's length prefix \
                 and image",
                self.payload().len()
            )));
        }
        Ok(())
    }

    /// The row image to apply: the payload, or for an [`Opcode::Update`] its after image.
    pub fn row_image(&self) -> &'a [u8] {
        let payload = self.payload();
        match self.opcode() {
            Opcode::Update => crate::event::split_update_payload(payload).map_or(payload, |p| p.0),
            _ => payload,
        }
    }

    /// The row's before image, when the event carries one: an [`Opcode::Update`]'s, or a delete's
    /// payload (the row as it was).
    pub fn before_image(&self) -> Option<&'a [u8]> {
        match self.opcode() {
            Opcode::Update => crate::event::split_update_payload(self.payload()).map(|p| p.1),
            Opcode::Delete if !self.payload().is_empty() => Some(self.payload()),
            _ => None,
        }
    }

    /// [`parse`](Self::parse) without recomputing either checksum: the frame at the start of `bytes`
    /// and the number of bytes it uses. Only for frames built by [`EventBuilder`] and kept where
    /// nothing but a bug can alter them (the relay rendering frames of its own buffer, which
    /// checked that its copy of them is consistent); untrusted bytes go through
    /// [`EventView::parse`].
    pub fn parse_verified_earlier(bytes: &'a [u8]) -> Result<(EventView<'a>, usize), FrameError> {
        Self::parse_inner(bytes, false)
    }

    /// Parses one whole frame that was verified by [`EventView::parse`] before and kept unchanged
    /// since (a client re-reading frames it holds in memory): the header is parsed and checked again,
    /// the body checksum is not recomputed. Untrusted bytes go through [`EventView::parse`].
    pub fn parse_verified(frame: &'a [u8]) -> Result<EventView<'a>, FrameError> {
        let header = FrameHeader::parse(frame)?;
        if frame.len() != header.frame_len() {
            return Err(FrameError::BadLength(format!(
                "frame of {} bytes but its header says {}",
                frame.len(),
                header.frame_len()
            )));
        }
        let view = EventView { header, frame };
        view.check_layout()?;
        Ok(view)
    }

    /// Parses every frame of `bytes`, which must hold whole frames only.
    pub fn parse_all(mut bytes: &'a [u8]) -> Result<Vec<EventView<'a>>, FrameError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (view, used) = EventView::parse(bytes)?;
            out.push(view);
            bytes = &bytes[used..];
        }
        Ok(out)
    }

    /// The verified header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The whole frame's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.frame
    }

    /// The window's SCN.
    pub fn scn(&self) -> Scn {
        self.header.scn
    }

    /// What the event does.
    pub fn opcode(&self) -> Opcode {
        self.header.opcode
    }

    /// The source id.
    pub fn source(&self) -> SourceId {
        self.header.source
    }

    /// The partition id.
    pub fn partition(&self) -> PartitionId {
        self.header.partition
    }

    /// Commit timestamp in ns since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        self.header.timestamp_ns
    }

    /// The writer schema id.
    pub fn schema(&self) -> SchemaId {
        self.header.schema
    }

    /// The key, borrowed from the frame.
    pub fn key(&self) -> KeyRef<'a> {
        let key = &self.frame[HEADER_LEN..HEADER_LEN + self.header.key_len()];
        match self.header.key_type {
            KEY_INT => KeyRef::Int(i64::from_le_bytes(key.try_into().unwrap_or([0; 8]))),
            KEY_BYTES => KeyRef::Bytes(key),
            _ => KeyRef::None,
        }
    }

    /// The Avro binary payload, borrowed from the frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.frame[HEADER_LEN + self.header.key_len()..]
    }
}

impl fmt::Debug for EventView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventView")
            .field("scn", &self.scn())
            .field("opcode", &self.opcode())
            .field("source", &self.source())
            .field("key", &self.key())
            .field("payload_len", &self.header.payload_len)
            .finish()
    }
}

/// Writes one frame. Defaults: source 0, partition 0, timestamp 0, no schema, no key, empty payload.
#[derive(Debug, Clone, Copy)]
pub struct EventBuilder<'a> {
    scn: Scn,
    opcode: Opcode,
    source: SourceId,
    partition: PartitionId,
    timestamp_ns: u64,
    schema: SchemaId,
    key: KeyRef<'a>,
    payload: &'a [u8],
}

impl<'a> EventBuilder<'a> {
    /// Starts a frame for window `scn`.
    pub fn new(scn: Scn, opcode: Opcode) -> Self {
        EventBuilder {
            scn,
            opcode,
            source: SourceId::new(0),
            partition: PartitionId::new(0),
            timestamp_ns: 0,
            schema: SchemaId::NONE,
            key: KeyRef::None,
            payload: &[],
        }
    }

    /// An end-of-window marker for window `scn`.
    pub fn end_of_window(scn: Scn, timestamp_ns: u64) -> Self {
        EventBuilder::new(scn, Opcode::Control(crate::ControlKind::EndOfWindow))
            .timestamp_ns(timestamp_ns)
    }

    /// Sets the source id.
    pub fn source(mut self, source: SourceId) -> Self {
        self.source = source;
        self
    }

    /// Sets the partition id.
    pub fn partition(mut self, partition: PartitionId) -> Self {
        self.partition = partition;
        self
    }

    /// Sets the commit timestamp.
    pub fn timestamp_ns(mut self, timestamp_ns: u64) -> Self {
        self.timestamp_ns = timestamp_ns;
        self
    }

    /// Sets the writer schema id.
    pub fn schema(mut self, schema: SchemaId) -> Self {
        self.schema = schema;
        self
    }

    /// Sets the key.
    pub fn key(mut self, key: KeyRef<'a>) -> Self {
        self.key = key;
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: &'a [u8]) -> Self {
        self.payload = payload;
        self
    }

    fn key_len(&self) -> usize {
        match self.key {
            KeyRef::Int(_) => 8,
            KeyRef::Bytes(b) => b.len(),
            KeyRef::None => 0,
        }
    }

    /// The number of bytes [`EventBuilder::write`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.key_len() + self.payload.len()
    }

    /// Checks the frame fits the format's limits.
    pub fn check(&self) -> Result<(), FrameError> {
        if self.encoded_len() > MAX_FRAME_LEN {
            return Err(FrameError::BadLength(format!(
                "event of {} bytes exceeds the limit of {MAX_FRAME_LEN} bytes",
                self.encoded_len()
            )));
        }
        Ok(())
    }

    /// Writes the frame into the first [`encoded_len`](Self::encoded_len) bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than `encoded_len()` or the frame exceeds [`MAX_FRAME_LEN`] (see
    /// [`check`](Self::check)): both are programming errors of the caller.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let key_len = self.key_len();
        let len = self.encoded_len();
        assert!(
            len <= MAX_FRAME_LEN,
            "event frame of {len} bytes is too large"
        );
        let out = &mut out[..len];
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let (key_out, payload_out) = body.split_at_mut(key_len);
        let key_type = match self.key {
            KeyRef::Int(v) => {
                key_out.copy_from_slice(&v.to_le_bytes());
                KEY_INT
            }
            KeyRef::Bytes(b) => {
                key_out.copy_from_slice(b);
                KEY_BYTES
            }
            KeyRef::None => KEY_NONE,
        };
        payload_out.copy_from_slice(self.payload);
        let body_crc = crc32c::crc32c(body);
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[5] = self.opcode.to_byte();
        header[6] = key_type;
        header[7] = 0;
        header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        header[12..20].copy_from_slice(&self.scn.get().to_le_bytes());
        header[20..28].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        header[28..30].copy_from_slice(&self.source.get().to_le_bytes());
        header[30..32].copy_from_slice(&self.partition.get().to_le_bytes());
        header[32..40].copy_from_slice(&self.schema.get().to_le_bytes());
        header[40..44].copy_from_slice(&(key_len as u32).to_le_bytes());
        header[44..48].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        header[48..52].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&header[..52]);
        header[52..56].copy_from_slice(&header_crc.to_le_bytes());
        len
    }

    /// Appends the frame to `out`.
    pub fn write_to_vec(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        self.write(&mut out[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ControlKind, Event, Key};

    fn sample() -> Event {
        Event {
            scn: Scn::new(1234),
            opcode: Opcode::Delete,
            source: SourceId::new(7),
            partition: PartitionId::new(3),
            timestamp_ns: 1_700_000_000_000_000_000,
            schema: SchemaId::new(0xdead_beef_0102_0304),
            key: Key::Bytes(b"user-17".to_vec()),
            payload: vec![1, 2, 3, 4, 5],
        }
    }

    #[test]
    fn round_trips_every_field() {
        for key in [
            Key::Int(-5),
            Key::Int(i64::MAX),
            Key::Bytes(vec![]),
            Key::None,
        ] {
            let mut event = sample();
            event.key = key;
            let frame = event.to_frame();
            let (view, used) = EventView::parse(&frame).unwrap();
            assert_eq!(used, frame.len());
            assert_eq!(Event::from(view), event);
        }
    }

    #[test]
    fn parse_verified_rechecks_the_header_and_length_only() {
        let frame = sample().to_frame();
        let view = EventView::parse_verified(&frame).unwrap();
        assert_eq!(Event::from(view), sample());
        // A flipped body byte is not noticed (the body was verified before)...
        let mut body_flip = frame.clone();
        *body_flip.last_mut().unwrap() ^= 1;
        assert!(EventView::parse_verified(&body_flip).is_ok());
        assert!(EventView::parse(&body_flip).is_err());
        // ...but a damaged header and a wrong length are.
        let mut header_flip = frame.clone();
        header_flip[13] ^= 1;
        assert!(EventView::parse_verified(&header_flip).is_err());
        let mut longer = frame.clone();
        longer.push(0);
        assert!(EventView::parse_verified(&longer).is_err());
    }

    #[test]
    fn parse_verified_earlier_walks_frames_without_checksums() {
        let (a, b) = (sample().to_frame(), {
            let mut e = sample();
            e.key = Key::Int(9);
            e.to_frame()
        });
        let both = [a.clone(), b.clone()].concat();
        let (first, used) = EventView::parse_verified_earlier(&both).unwrap();
        assert_eq!((Event::from(first), used), (sample(), a.len()));
        let (second, used) = EventView::parse_verified_earlier(&both[a.len()..]).unwrap();
        assert_eq!((second.key(), used), (KeyRef::Int(9), b.len()));
        // Neither checksum is recomputed...
        let mut flipped = a.clone();
        *flipped.last_mut().unwrap() ^= 1;
        flipped[13] ^= 1;
        assert!(EventView::parse_verified_earlier(&flipped).is_ok());
        // ...but the magic, the version and the length still are.
        assert!(matches!(
            EventView::parse_verified_earlier(&a[..a.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        let mut bad = a.clone();
        bad[0] = b'X';
        assert!(EventView::parse_verified_earlier(&bad).is_err());
    }

    #[test]
    fn end_of_window_is_a_control_event() {
        let mut buf = Vec::new();
        EventBuilder::end_of_window(Scn::new(9), 5).write_to_vec(&mut buf);
        let (view, _) = EventView::parse(&buf).unwrap();
        assert_eq!(view.opcode(), Opcode::Control(ControlKind::EndOfWindow));
        assert!(view.opcode().is_end_of_window());
        assert_eq!(view.key(), KeyRef::None);
        assert_eq!(buf.len(), HEADER_LEN);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let frame = sample().to_frame();
        for len in 0..frame.len() {
            let err = EventView::parse(&frame[..len]).unwrap_err();
            assert!(matches!(err, FrameError::Truncated { .. }), "{len}: {err}");
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let frame = sample().to_frame();
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    EventView::parse(&bad).is_err(),
                    "flip at {byte}:{bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn specific_errors() {
        let frame = sample().to_frame();
        let mut bad = frame.clone();
        bad[0] = b'X';
        assert!(matches!(
            EventView::parse(&bad),
            Err(FrameError::BadMagic { .. })
        ));
        let mut bad = frame.clone();
        bad[4] = 2;
        assert_eq!(
            EventView::parse(&bad).unwrap_err(),
            FrameError::UnsupportedVersion(2)
        );
        let mut bad = frame.clone();
        *bad.last_mut().unwrap() ^= 0xff;
        assert!(matches!(
            EventView::parse(&bad),
            Err(FrameError::BodyChecksum { .. })
        ));
        let mut bad = frame.clone();
        bad[8] ^= 1;
        assert!(matches!(
            EventView::parse(&bad),
            Err(FrameError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn header_with_valid_checksum_but_inconsistent_lengths_is_bad_length() {
        let mut frame = sample().to_frame();
        frame[8..12].copy_from_slice(&1000u32.to_le_bytes());
        let crc = crc32c::crc32c(&frame[..52]);
        frame[52..56].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            EventView::parse(&frame),
            Err(FrameError::BadLength(_))
        ));
    }

    #[test]
    fn parse_all_reads_concatenated_frames() {
        let mut buf = sample().to_frame();
        EventBuilder::end_of_window(Scn::new(1234), 0).write_to_vec(&mut buf);
        let views = EventView::parse_all(&buf).unwrap();
        assert_eq!(views.len(), 2);
        assert!(views[1].opcode().is_end_of_window());
    }
}
