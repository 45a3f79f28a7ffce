//! Windows and events as the consumer sees them, the window assembler, and the schema cache.
//!
//! Invariants: a [`Window`] is whole (every event the filter lets through, then its end marker);
//! windows come in strictly increasing SCN order; a response that ends in the middle of a window is
//! held by the [`Assembler`] until the rest of the window arrives.
//!
//! Every frame is parsed and checksummed once, by the assembler (or the snapshot reader); consumers'
//! views re-read only the frame header ([`EventView::parse_verified`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::types::Value as AvroValue;
use bytes::Bytes;
use databus_core::{Checkpoint, EventView, KeyRef, Opcode, SchemaId, Scn, SourceId, TableChange};
use serde::de::DeserializeOwned;

use crate::ClientError;

/// Which phase of consumption a window belongs to, so a replica can tell a snapshot row from a live
/// change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A live change from a relay.
    Online,
    /// A row of a bootstrap snapshot (or consolidated delta): the state of the row, not a change.
    Snapshot,
    /// A change replayed from the bootstrap server's log during catch-up.
    Catchup,
}

/// Writer schemas by id (fetched from the servers once per id) and the consumer's reader schemas.
#[derive(Debug, Default)]
pub struct SchemaCache {
    writers: RwLock<HashMap<SchemaId, Option<Arc<Schema>>>>,
    readers: BTreeMap<SourceId, Arc<Schema>>,
}

impl SchemaCache {
    pub(crate) fn new(readers: BTreeMap<SourceId, Arc<Schema>>) -> Self {
        SchemaCache {
            writers: RwLock::default(),
            readers,
        }
    }

    /// The writer schema `id`, if known.
    pub fn writer(&self, id: SchemaId) -> Option<Arc<Schema>> {
        self.writers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .flatten()
    }

    /// The reader schema configured for `source`.
    pub fn reader(&self, source: SourceId) -> Option<&Arc<Schema>> {
        self.readers.get(&source)
    }

    pub(crate) fn knows(&self, id: SchemaId) -> bool {
        self.writers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    /// Records schema `id` (`None`: the server does not know it; decoding will say so).
    pub(crate) fn insert(&self, id: SchemaId, schema: Option<Arc<Schema>>) {
        self.writers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, schema);
    }
}

/// One whole window (a source transaction, or a batch of snapshot rows), owned and cheap to clone.
#[derive(Clone)]
pub struct Window {
    pub(crate) scn: Scn,
    pub(crate) timestamp_ns: u64,
    pub(crate) phase: Phase,
    pub(crate) events: Arc<[Bytes]>,
    pub(crate) bytes: usize,
    /// Each source of the window with the index of its first event, in order of first appearance.
    pub(crate) sources: Arc<[(SourceId, u32)]>,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) schemas: Arc<SchemaCache>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("scn", &self.scn)
            .field("phase", &self.phase)
            .field("events", &self.events.len())
            .field("bytes", &self.bytes)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Window {
    /// The window's SCN.
    pub fn scn(&self) -> Scn {
        self.scn
    }

    /// Commit time at the source (ns since the Unix epoch), from the end marker.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// Online, snapshot or catch-up.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Data events in the window (end marker excluded). A heartbeat has none.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether this is a heartbeat (no data event).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Frame bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The checkpoint that stands for "this window and everything before it consumed".
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The `i`-th event.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`, like slice indexing.
    pub fn event(&self, i: usize) -> DataEvent<'_> {
        DataEvent::new(&self.events[i], self.phase, &self.schemas)
    }

    /// The events in commit order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = DataEvent<'_>> + '_ {
        self.events
            .iter()
            .map(|frame| DataEvent::new(frame, self.phase, &self.schemas))
    }
}

/// One data event: raw frame access plus decoding with the writer schema (and the consumer's reader
/// schema for its source, when configured).
#[derive(Debug, Clone, Copy)]
pub struct DataEvent<'a> {
    view: EventView<'a>,
    phase: Phase,
    schemas: &'a SchemaCache,
}

impl<'a> DataEvent<'a> {
    fn new(frame: &'a [u8], phase: Phase, schemas: &'a SchemaCache) -> Self {
        // The assembler parsed (and checksummed) every frame it kept; only its header is read again.
        let view = EventView::parse_verified(frame).expect("frames are validated by the assembler");
        DataEvent {
            view,
            phase,
            schemas,
        }
    }

    /// The raw frame.
    pub fn raw(&self) -> &EventView<'a> {
        &self.view
    }

    /// The window's SCN.
    pub fn scn(&self) -> Scn {
        self.view.scn()
    }

    /// The source (table).
    pub fn source(&self) -> SourceId {
        self.view.source()
    }

    /// The key.
    pub fn key(&self) -> KeyRef<'a> {
        self.view.key()
    }

    /// Upsert, update (an upsert with its before image), delete, or a table event (truncate, schema
    /// change: delivered to their own callbacks).
    pub fn opcode(&self) -> Opcode {
        self.view.opcode()
    }

    /// Whether this is a delete.
    pub fn is_delete(&self) -> bool {
        self.view.opcode() == Opcode::Delete
    }

    /// Whether this is a table event (truncate, schema change), delivered to
    /// [`DatabusConsumer::on_truncate`](crate::DatabusConsumer::on_truncate) or
    /// [`DatabusConsumer::on_schema_change`](crate::DatabusConsumer::on_schema_change).
    pub fn is_table_event(&self) -> bool {
        self.view.opcode().is_table_event()
    }

    /// The table change a table event describes (`None` for row changes).
    pub fn table_change(&self) -> Option<Result<TableChange, ClientError>> {
        self.is_table_event().then(|| {
            TableChange::from_payload(self.payload()).map_err(|e| self.decode_err(e.to_string()))
        })
    }

    /// Online change, snapshot row or catch-up change.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The Avro payload: the row image to apply (for an [`Opcode::Update`], its after image; the raw
    /// frame payload is `raw().payload()`).
    pub fn payload(&self) -> &'a [u8] {
        self.view.row_image()
    }

    /// The row as it was before the change, when the event carries it: deletes (their payload), and
    /// updates from a source whose relay sends before images (`before_images = true`). Decoded with
    /// the writer schema like [`DataEvent::json`].
    pub fn before_json(&self) -> Option<Result<serde_json::Value, ClientError>> {
        let before = self.view.before_image()?;
        Some(self.writer_or_err().and_then(|writer| {
            let reader = self.schemas.reader(self.source()).map(Arc::as_ref);
            databus_serde_formats::decode::decode_json(before, &writer, reader)
                .map_err(|e| self.decode_err(e.to_string()))
        }))
    }

    /// As [`DataEvent::before_json`], as a generic Avro record.
    pub fn before_record(&self) -> Option<Result<AvroValue, ClientError>> {
        let before = self.view.before_image()?;
        Some(self.writer_or_err().and_then(|writer| {
            let reader = self.schemas.reader(self.source()).map(Arc::as_ref);
            databus_serde_formats::decode::decode_value(before, &writer, reader)
                .map_err(|e| self.decode_err(e.to_string()))
        }))
    }

    /// The writer schema of the payload, if the server knew it.
    pub fn writer_schema(&self) -> Option<Arc<Schema>> {
        self.schemas.writer(self.view.schema())
    }

    fn decode_err(&self, message: String) -> ClientError {
        ClientError::Decode {
            scn: self.scn(),
            message,
        }
    }

    fn writer_or_err(&self) -> Result<Arc<Schema>, ClientError> {
        self.writer_schema().ok_or_else(|| {
            self.decode_err(format!(
                "writer schema {:016x} of source {} is unknown to the servers",
                self.view.schema().get(),
                self.source()
            ))
        })
    }

    /// The payload as a generic Avro record, resolved to the configured reader schema of the source.
    pub fn record(&self) -> Result<AvroValue, ClientError> {
        let writer = self.writer_or_err()?;
        let reader = self.schemas.reader(self.source()).map(Arc::as_ref);
        databus_serde_formats::decode::decode_value(self.payload(), &writer, reader)
            .map_err(|e| self.decode_err(e.to_string()))
    }

    /// The payload resolved to `reader` (schema evolution chosen per call).
    pub fn record_with(&self, reader: &Schema) -> Result<AvroValue, ClientError> {
        let writer = self.writer_or_err()?;
        databus_serde_formats::decode::decode_value(self.payload(), &writer, Some(reader))
            .map_err(|e| self.decode_err(e.to_string()))
    }

    /// The payload decoded into a serde type (fields named like the Avro fields), through the reader
    /// schema of the source when configured.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        let writer = self.writer_or_err()?;
        let reader = self.schemas.reader(self.source()).map(Arc::as_ref);
        databus_serde_formats::decode::decode_serde(self.payload(), &writer, reader)
            .map_err(|e| self.decode_err(e.to_string()))
    }

    /// The table schema of the payload's writer schema: original database, table and column names,
    /// exact column types, nullability and primary key (what a replica creates its table from).
    pub fn table_schema(&self) -> Result<databus_serde_formats::TableSchema, ClientError> {
        let writer = self.writer_or_err()?;
        databus_serde_formats::avro_schema::table_schema(&writer)
            .map_err(|e| self.decode_err(e.to_string()))
    }

    /// The payload as model values in column order of `table` (the event's
    /// [`DataEvent::table_schema`]), exact: DECIMAL as its text, BIGINT UNSIGNED as `u64`, zero
    /// dates kept, ENUM by index, SET as a bitmask. Ignores the reader schema.
    pub fn row(
        &self,
        table: &databus_serde_formats::TableSchema,
    ) -> Result<databus_serde_formats::Row, ClientError> {
        let writer = self.writer_or_err()?;
        databus_serde_formats::decode::decode_row(self.payload(), &writer, table)
            .map_err(|e| self.decode_err(e.to_string()))
    }

    /// The payload as JSON keyed by column name (see `databus_serde_formats::decode`).
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        let writer = self.writer_or_err()?;
        let reader = self.schemas.reader(self.source()).map(Arc::as_ref);
        databus_serde_formats::decode::decode_json(self.payload(), &writer, reader)
            .map_err(|e| self.decode_err(e.to_string()))
    }
}

/// A window as assembled from frames, before it gets its phase and checkpoint.
#[derive(Debug)]
pub(crate) struct RawWindow {
    pub(crate) scn: Scn,
    pub(crate) timestamp_ns: u64,
    pub(crate) events: Vec<Bytes>,
    pub(crate) bytes: usize,
    /// Distinct writer schemas of the events.
    pub(crate) schema_ids: Vec<SchemaId>,
    /// Distinct sources with the index of their first event.
    pub(crate) sources: Vec<(SourceId, u32)>,
}

impl RawWindow {
    pub(crate) fn new(scn: Scn) -> Self {
        RawWindow {
            scn,
            timestamp_ns: 0,
            events: Vec::new(),
            bytes: 0,
            schema_ids: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Adds a data event: `frame` holds exactly the frame `view` was parsed (and verified) from.
    pub(crate) fn push_event(&mut self, view: &EventView<'_>, frame: Bytes) {
        let schema = view.schema();
        if schema != SchemaId::NONE && !self.schema_ids.contains(&schema) {
            self.schema_ids.push(schema);
        }
        let source = view.source();
        if !self.sources.iter().any(|s| s.0 == source) {
            self.sources.push((source, self.events.len() as u32));
        }
        self.events.push(frame);
    }
}

/// Turns response bodies into whole windows, holding a window split across responses.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    open: Option<RawWindow>,
    last: Option<Scn>,
    max_window_bytes: usize,
}

impl Assembler {
    /// An assembler that accepts only windows after `last`.
    pub(crate) fn after(last: Option<Scn>) -> Self {
        Assembler {
            open: None,
            last,
            max_window_bytes: usize::MAX,
        }
    }

    /// The same assembler, refusing an open window larger than `max_window_bytes`.
    pub(crate) fn bounded(mut self, max_window_bytes: usize) -> Self {
        self.max_window_bytes = max_window_bytes;
        self
    }

    /// Bytes held in an incomplete window.
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> usize {
        self.open.as_ref().map_or(0, |w| w.bytes)
    }

    /// Parses `body` (whole frames) and returns the windows it completes.
    pub(crate) fn push(
        &mut self,
        body: &Bytes,
        server: &str,
    ) -> Result<Vec<RawWindow>, ClientError> {
        let protocol = |message: String| ClientError::Protocol {
            server: server.to_owned(),
            message,
        };
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < body.len() {
            let (view, used) = EventView::parse(&body[offset..])
                .map_err(|e| protocol(format!("bad frame at byte {offset} of a response: {e}")))?;
            let scn = view.scn();
            let frame = body.slice(offset..offset + used);
            offset += used;
            match &mut self.open {
                Some(open) if open.scn != scn => {
                    return Err(protocol(format!(
                        "event of window {scn} inside open window {}",
                        open.scn
                    )));
                }
                Some(_) => {}
                None => {
                    if self.last.is_some_and(|last| scn <= last) {
                        return Err(protocol(format!(
                            "window {scn} after window {}: SCNs must grow",
                            self.last.unwrap_or_default()
                        )));
                    }
                    self.open = Some(RawWindow::new(scn));
                }
            }
            let open = self.open.as_mut().expect("opened above");
            open.bytes += used;
            if open.bytes > self.max_window_bytes {
                return Err(protocol(format!(
                    "window {scn} holds more than max_window_bytes ({} bytes) without its end; raise \
                     max_window_bytes if the source has transactions this large",
                    self.max_window_bytes
                )));
            }
            if view.opcode().is_end_of_window() {
                open.timestamp_ns = view.timestamp_ns();
                self.last = Some(scn);
                out.push(self.open.take().expect("open"));
            } else {
                open.push_event(&view, frame);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use databus_core::{EventBuilder, Key};

    use super::*;

    #[test]
    fn an_open_window_past_the_bound_is_a_protocol_error() {
        // Window 1 whole, then window 2's events without its end, response after response.
        let mut a = Assembler::after(None).bounded(1000);
        assert_eq!(
            a.push(&frames(&[(1, false), (1, true)]), "s")
                .unwrap()
                .len(),
            1
        );
        let mut err = None;
        for _ in 0..100 {
            match a.push(&frames(&[(2, false)]), "s") {
                Ok(done) => assert!(done.is_empty()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("the open window was refused").to_string();
        assert!(
            err.contains("window 2") && err.contains("max_window_bytes"),
            "{err}"
        );
    }

    fn frames(spec: &[(u64, bool)]) -> Bytes {
        let mut out = Vec::new();
        for (scn, end) in spec {
            if *end {
                EventBuilder::end_of_window(Scn::new(*scn), 7).write_to_vec(&mut out);
            } else {
                EventBuilder::new(Scn::new(*scn), Opcode::Upsert)
                    .key(Key::Int(1).as_ref())
                    .write_to_vec(&mut out);
            }
        }
        Bytes::from(out)
    }

    #[test]
    fn holds_split_windows_and_checks_order() {
        let mut a = Assembler::after(None);
        let w = a
            .push(&frames(&[(1, false), (1, true), (2, false)]), "r")
            .unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].scn, w[0].events.len()), (Scn::new(1), 1));
        assert!(a.pending_bytes() > 0);
        let w = a
            .push(&frames(&[(2, false), (2, true), (3, true)]), "r")
            .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].scn, w[0].events.len()), (Scn::new(2), 2));
        assert_eq!((w[1].scn, w[1].events.len()), (Scn::new(3), 0));
        assert_eq!(a.pending_bytes(), 0);
        let err = a.push(&frames(&[(3, true)]), "r").unwrap_err();
        assert!(err.to_string().contains("SCNs must grow"), "{err}");
        let mut a = Assembler::after(None);
        let err = a.push(&frames(&[(4, false), (5, true)]), "r").unwrap_err();
        assert!(err.to_string().contains("inside open window 4"), "{err}");
        let mut bad = frames(&[(4, true)]).to_vec();
        bad[10] ^= 1;
        let err = Assembler::after(None)
            .push(&Bytes::from(bad), "r")
            .unwrap_err();
        assert!(err.to_string().contains("bad frame"), "{err}");
    }

    proptest::proptest! {
        /// Model test: any sequence of windows, cut into responses at any frame boundaries, comes out
        /// as exactly the same whole windows, in order.
        #[test]
        fn any_split_yields_the_same_windows(
            sizes in proptest::collection::vec(0usize..6, 1..30),
            gaps in proptest::collection::vec(1u64..5, 30),
            cuts in proptest::collection::vec(proptest::bool::ANY, 200),
        ) {
            let mut frames = Vec::new();
            let mut want = Vec::new();
            let mut scn = 0;
            for (i, &n) in sizes.iter().enumerate() {
                scn += gaps[i];
                for k in 0..n {
                    let mut f = Vec::new();
                    EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                        .key(Key::Int(k as i64).as_ref())
                        .schema(SchemaId::new(1 + (k as u64 % 2)))
                        .write_to_vec(&mut f);
                    frames.push(f);
                }
                let mut f = Vec::new();
                EventBuilder::end_of_window(Scn::new(scn), scn).write_to_vec(&mut f);
                frames.push(f);
                want.push((scn, n));
            }
            let mut a = Assembler::after(None);
            let mut got = Vec::new();
            let mut body = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                body.extend_from_slice(f);
                if cuts[i % cuts.len()] || i + 1 == frames.len() {
                    for w in a.push(&Bytes::from(std::mem::take(&mut body)), "r").unwrap() {
                        proptest::prop_assert_eq!(w.bytes, w.events.iter().map(Bytes::len).sum::<usize>() + HEADER);
                        proptest::prop_assert!(w.schema_ids.len() <= 2);
                        got.push((w.scn.get(), w.events.len()));
                    }
                }
            }
            proptest::prop_assert_eq!(a.pending_bytes(), 0);
            proptest::prop_assert_eq!(got, want);
        }
    }

    const HEADER: usize = databus_core::frame::HEADER_LEN;
}
