//! Opcodes and the owned event.

use serde::{Deserialize, Serialize};

use crate::frame::{EventBuilder, EventView};
use crate::{Key, PartitionId, SchemaId, Scn, SourceId};

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opcode {
    /// Insert or update: the payload is the row's after image.
    Upsert,
    /// Delete: the payload is the row's before image (or empty).
    Delete,
    /// An upsert that also carries the row's before image (sources with before images on): the
    /// payload is [`update_payload`] — a 4-byte little-endian length of the after image, the after
    /// image, then the before image (both Avro datums of the event's writer schema). Applied like an
    /// upsert.
    Update,
    /// Every row of the event's source is gone (TRUNCATE or DROP TABLE); the payload is a
    /// [`TableChange`](crate::TableChange) as JSON; no key.
    Truncate,
    /// The event's source changes its schema (DDL); the payload is a
    /// [`TableChange`](crate::TableChange) as JSON; no key.
    SchemaChange,
    /// A control event of the stream itself.
    Control(ControlKind),
}

/// The kinds of control events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Closes a window. A window made of this event alone is a heartbeat.
    EndOfWindow,
}

impl Opcode {
    /// The opcode's byte in the frame.
    pub const fn to_byte(self) -> u8 {
        match self {
            Opcode::Upsert => 1,
            Opcode::Delete => 2,
            Opcode::Truncate => 3,
            Opcode::SchemaChange => 4,
            Opcode::Update => 5,
            Opcode::Control(ControlKind::EndOfWindow) => 0x81,
        }
    }

    /// Reads an opcode byte; `None` for a byte no version of the frame defines.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Opcode::Upsert),
            2 => Some(Opcode::Delete),
            3 => Some(Opcode::Truncate),
            4 => Some(Opcode::SchemaChange),
            5 => Some(Opcode::Update),
            0x81 => Some(Opcode::Control(ControlKind::EndOfWindow)),
            _ => None,
        }
    }

    /// Whether this is a control event.
    pub const fn is_control(self) -> bool {
        matches!(self, Opcode::Control(_))
    }

    /// Whether this is a row change (upsert, update or delete), keyed by the row's key.
    pub const fn is_row_change(self) -> bool {
        matches!(self, Opcode::Upsert | Opcode::Update | Opcode::Delete)
    }

    /// Whether this event writes its key's row (upsert, or update with a before image).
    pub const fn writes_row(self) -> bool {
        matches!(self, Opcode::Upsert | Opcode::Update)
    }

    /// Whether this is a table event (truncate, schema change): it concerns its whole source, has no
    /// key and passes every partition filter. See [`crate::table_event`].
    pub const fn is_table_event(self) -> bool {
        matches!(self, Opcode::Truncate | Opcode::SchemaChange)
    }

    /// Whether this event closes a window.
    pub const fn is_end_of_window(self) -> bool {
        matches!(self, Opcode::Control(ControlKind::EndOfWindow))
    }
}

/// Builds the payload of an [`Opcode::Update`] event: the after image's length (u32, little-endian),
/// the after image, the before image.
pub fn update_payload(after: &[u8], before: &[u8], out: &mut Vec<u8>) {
    out.reserve(4 + after.len() + before.len());
    out.extend_from_slice(&(after.len() as u32).to_le_bytes());
    out.extend_from_slice(after);
    out.extend_from_slice(before);
}

/// Splits an [`Opcode::Update`] payload into (after image, before image); `None` when the length
/// prefix does not fit the payload.
pub fn split_update_payload(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let rest = &payload[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// An owned event: every field of a frame. Use [`EventView`] on hot paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The window's SCN.
    pub scn: Scn,
    /// What the event does.
    pub opcode: Opcode,
    /// The source (table) it belongs to.
    pub source: SourceId,
    /// The physical partition.
    pub partition: PartitionId,
    /// Commit time at the source, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The writer schema of the payload.
    pub schema: SchemaId,
    /// The key.
    pub key: Key,
    /// Avro binary payload.
    pub payload: Vec<u8>,
}

impl Event {
    /// An end-of-window control event for the window `scn`.
    pub fn end_of_window(scn: Scn, timestamp_ns: u64) -> Self {
        Event {
            scn,
            opcode: Opcode::Control(ControlKind::EndOfWindow),
            source: SourceId::new(0),
            partition: PartitionId::new(0),
            timestamp_ns,
            schema: SchemaId::NONE,
            key: Key::None,
            payload: Vec::new(),
        }
    }

    /// A builder that writes this event as a frame.
    pub fn builder(&self) -> EventBuilder<'_> {
        EventBuilder::new(self.scn, self.opcode)
            .source(self.source)
            .partition(self.partition)
            .timestamp_ns(self.timestamp_ns)
            .schema(self.schema)
            .key(self.key.as_ref())
            .payload(&self.payload)
    }

    /// Encodes this event as a frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.builder().encoded_len());
        self.builder().write_to_vec(&mut out);
        out
    }
}

impl From<EventView<'_>> for Event {
    fn from(view: EventView<'_>) -> Self {
        Event {
            scn: view.scn(),
            opcode: view.opcode(),
            source: view.source(),
            partition: view.partition(),
            timestamp_ns: view.timestamp_ns(),
            schema: view.schema(),
            key: view.key().to_owned(),
            payload: view.payload().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_payloads_split_into_after_and_before_and_bad_ones_are_refused() {
        let mut payload = Vec::new();
        update_payload(b"after", b"before!", &mut payload);
        assert_eq!(
            split_update_payload(&payload),
            Some((&b"after"[..], &b"before!"[..]))
        );
        assert_eq!(split_update_payload(&[9, 0, 0, 0, 1]), None);
        assert_eq!(split_update_payload(&[1, 0]), None);
        let mut frame = Vec::new();
        EventBuilder::new(Scn::new(3), Opcode::Update)
            .key(Key::Int(1).as_ref())
            .payload(&payload)
            .write_to_vec(&mut frame);
        let (view, _) = EventView::parse(&frame).unwrap();
        assert_eq!(view.row_image(), b"after");
        assert_eq!(view.before_image(), Some(&b"before!"[..]));
        assert!(view.opcode().writes_row() && view.opcode().is_row_change());
        let mut bad = Vec::new();
        EventBuilder::new(Scn::new(3), Opcode::Update)
            .payload(&[200, 0, 0, 0, 1, 2])
            .write_to_vec(&mut bad);
        let err = EventView::parse(&bad).err().unwrap();
        assert!(err.to_string().contains("update event payload"), "{err}");
        // A delete's payload is its before image; an upsert has none.
        let mut del = Vec::new();
        EventBuilder::new(Scn::new(3), Opcode::Delete)
            .payload(b"row")
            .write_to_vec(&mut del);
        assert_eq!(
            EventView::parse(&del).unwrap().0.before_image(),
            Some(&b"row"[..])
        );
    }
}
