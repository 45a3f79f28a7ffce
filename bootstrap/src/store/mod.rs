//! Storage of a bootstrap database: the LOG store and the SNAPSHOT store.
//!
//! Both are traits so that the producer, the applier, the server and the seeder do not care where the
//! rows live. [`SqliteStore`] (one SQLite file per bootstrap database, WAL) is the embedded default;
//! [`MemoryStore`] is the reference implementation the property tests compare against. Every
//! implementation must pass the conformance suite [`store_conformance_suite!`](crate::store_conformance_suite).
//!
//! # Invariants
//!
//! | store | invariant |
//! |-------|-----------|
//! | log | windows are stored whole (one store transaction holds one or more whole windows) and in strictly increasing SCN order; a refused append changes nothing |
//! | log | events get increasing sequence numbers `seq`; the events of a window are `first_seq .. first_seq + events`, so an event's offset in its window is `seq - first_seq` |
//! | log | `floor_scn`: the log holds every window after it (set when the log starts, raised by trimming) |
//! | snapshot | one row per `(source, key)`: the event with the greatest SCN applied for that key; a delete is kept as a tombstone |
//! | snapshot | a truncate (TRUNCATE or DROP TABLE) of a source removes every row of the source applied before it and is kept as the source's *truncate marker*: a tombstone row with no key (`Key::None`), so a delta since an earlier SCN sends it before the rows written after it (they get greater row ids) and full snapshots skip it; events older than the marker change nothing |
//! | snapshot | schema-change events change no row |
//! | snapshot | rows and `applied_scn` change in the same transaction, so a crashed applier resumes exactly; re-applying a window changes nothing |
//! | snapshot | a row keeps its `row_id` when updated, so paging by `row_id` never skips a key that existed when paging began |
//!
//! Filters are pushed down: every stored event keeps `source_id`, `bucket_hash`
//! ([`KeyHash::to_i64`](databus_filters::KeyHash::to_i64)) and `key_int` columns, and reads take a
//! [`FilterSpec`] that the SQL store turns into a `WHERE` fragment with [`FilterSpec::to_sql`].

#[doc(hidden)]
pub mod conformance;
pub mod memory;
pub mod roles;
pub mod sqlite;

use databus_core::{EventView, Key, Opcode, SchemaId, Scn, SourceId};
use databus_filters::sql::TABLE_EVENT_BUCKET_HASH;
use databus_filters::{FilterSpec, KeyHash};
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use roles::{HEARTBEAT, Role, RoleReport, RoleState, RoleStore};
pub use sqlite::{SqliteOptions, SqliteStore};

use crate::BootstrapError;

/// One data event as stored: the relay's frame bytes plus the columns reads filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The window's SCN.
    pub scn: Scn,
    /// The event's source.
    pub source: SourceId,
    /// Upsert or delete.
    pub opcode: Opcode,
    /// The event's key.
    pub key: Key,
    /// The whole frame, exactly as the relay sent it.
    pub frame: Vec<u8>,
}

impl StoredEvent {
    /// Reads the columns out of a data frame. Control frames (end of window) are refused: the log
    /// stores window boundaries separately.
    pub fn from_frame(frame: &[u8]) -> Result<StoredEvent, BootstrapError> {
        let (view, used) = EventView::parse(frame)
            .map_err(|e| BootstrapError::Corrupt(format!("bad event frame: {e}")))?;
        if used != frame.len() {
            return Err(BootstrapError::Corrupt(format!(
                "event frame of {} bytes followed by {} more bytes",
                used,
                frame.len() - used
            )));
        }
        StoredEvent::from_view(&view)
    }

    /// As [`StoredEvent::from_frame`], from a parsed view.
    pub fn from_view(view: &EventView<'_>) -> Result<StoredEvent, BootstrapError> {
        if view.opcode().is_control() {
            return Err(BootstrapError::Corrupt(format!(
                "control event {:?} at SCN {} is not a data event",
                view.opcode(),
                view.scn()
            )));
        }
        Ok(StoredEvent {
            scn: view.scn(),
            source: view.source(),
            opcode: view.opcode(),
            key: view.key().to_owned(),
            frame: view.as_bytes().to_vec(),
        })
    }

    /// `key_int`: the key for integer keys, else `None` (RANGE filters never match those).
    pub fn key_int(&self) -> Option<i64> {
        match self.key {
            Key::Int(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this event deletes its key.
    pub fn is_delete(&self) -> bool {
        self.opcode == Opcode::Delete
    }

    /// Whether this is a table event (truncate, schema change): no key, concerns the whole source.
    pub fn is_table_event(&self) -> bool {
        self.opcode.is_table_event()
    }

    /// `bucket_hash`: the key's hash, or [`TABLE_EVENT_BUCKET_HASH`] for a table event (so pushed-down
    /// filters let it through every key filter).
    pub fn bucket_hash(&self) -> i64 {
        if self.is_table_event() {
            TABLE_EVENT_BUCKET_HASH
        } else {
            KeyHash::of(self.key.as_ref()).to_i64()
        }
    }
}

/// One window to append to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWindow {
    /// The window's SCN.
    pub scn: Scn,
    /// Its commit time (from its end marker).
    pub timestamp_ns: u64,
    /// Its data events, in order (empty for a heartbeat).
    pub events: Vec<StoredEvent>,
}

/// A window held by the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowInfo {
    /// The window's SCN.
    pub scn: Scn,
    /// Its commit time.
    pub timestamp_ns: u64,
    /// The sequence number of its first event (of where it would be, for a heartbeat).
    pub first_seq: u64,
    /// How many data events it holds.
    pub events: u32,
    /// Bytes of its frames.
    pub bytes: u64,
}

/// A log event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// Its sequence number.
    pub seq: u64,
    /// Its frame.
    pub frame: Vec<u8>,
}

/// Where the log is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// The log holds every window after this SCN (`None`: the log was never started).
    pub floor_scn: Option<Scn>,
    /// Its oldest window.
    pub first_scn: Option<Scn>,
    /// Its newest window: the producer's position.
    pub last_scn: Option<Scn>,
    /// Windows held.
    pub windows: u64,
    /// Data events held.
    pub events: u64,
    /// Bytes of frames held.
    pub bytes: u64,
}

/// What a trim removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimOutcome {
    /// Windows removed.
    pub windows: u64,
    /// Events removed.
    pub events: u64,
}

/// A logical source of the bootstrap database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Its id.
    pub id: SourceId,
    /// Its name.
    pub name: String,
}

/// The LOG store: every window, in SCN order. See the [module docs](self) for the invariants.
pub trait LogStore: Send + Sync + std::fmt::Debug {
    /// Starts an empty log "after `scn`" (it will hold every window after it). Does nothing if the log
    /// was already started.
    fn start_log(&self, floor: Scn) -> Result<(), BootstrapError>;
    /// Appends whole windows in one transaction. Refused (nothing stored) if a window's SCN is not
    /// greater than the last one stored, or the log was not started.
    fn append(&self, windows: &[LogWindow]) -> Result<(), BootstrapError>;
    /// Where the log is.
    fn log_status(&self) -> Result<LogStatus, BootstrapError>;
    /// Up to `limit` windows with `after < scn <= upto`, in SCN order.
    fn windows(
        &self,
        after: Scn,
        upto: Scn,
        limit: usize,
    ) -> Result<Vec<WindowInfo>, BootstrapError>;
    /// Up to `limit` events with `first_seq <= seq <= last_seq` that pass `filter`, in order, and
    /// no more once their frames hold `max_bytes` (the event reaching the budget is the last one read:
    /// a read returns at least one event when there is one, so paging always progresses).
    fn events(
        &self,
        first_seq: u64,
        last_seq: u64,
        filter: &FilterSpec,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogRow>, BootstrapError>;
    /// Deletes up to `max_windows` of the oldest windows with `scn <= upto` and raises the floor to the
    /// last one deleted.
    fn trim(&self, upto: Scn, max_windows: usize) -> Result<TrimOutcome, BootstrapError>;
    /// The greatest SCN `s` such that the windows after `s` hold at most `max_bytes` (`None` if the
    /// whole log fits).
    fn trim_point_for_bytes(&self, max_bytes: u64) -> Result<Option<Scn>, BootstrapError>;
    /// The newest window committed at or before `timestamp_ns` (`None` if there is none).
    fn last_window_before(&self, timestamp_ns: u64) -> Result<Option<Scn>, BootstrapError>;
    /// Pins the log after `start_scn` until `expires_ms` (Unix ms) for a bootstrap in progress, with
    /// no maximum age (see [`LogStore::pin_until`]).
    fn pin(&self, start_scn: Scn, expires_ms: u64) -> Result<(), BootstrapError> {
        self.pin_until(start_scn, expires_ms, u64::MAX)
    }
    /// Pins the log after `start_scn` until `expires_ms` (Unix ms; a later refresh extends it, an
    /// earlier one changes nothing), and at the latest until `deadline_ms`: the deadline is fixed by
    /// the pin's first request, later ones keep it. From its deadline on, a pin holds no retention
    /// even while refreshed (and is not listed); it stays stored, so that its refreshes cannot create
    /// it anew, until it expires.
    fn pin_until(
        &self,
        start_scn: Scn,
        expires_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), BootstrapError>;
    /// The lowest pinned start SCN among pins live at `now_ms` (not expired, before their deadline);
    /// expired pins are dropped.
    fn min_pin(&self, now_ms: u64) -> Result<Option<Scn>, BootstrapError>;
    /// The pins live at `now_ms` (not expired, before their deadline) as `(start SCN, expiry in Unix
    /// ms)`, lowest SCN first; expired pins are dropped.
    fn pins(&self, now_ms: u64) -> Result<Vec<(Scn, u64)>, BootstrapError>;
    /// Removes every pin (an operator releasing retention); how many there were.
    fn drop_pins(&self) -> Result<u64, BootstrapError>;
    /// Records the sources (id, name) of the bootstrap database.
    fn set_sources(&self, sources: &[SourceInfo]) -> Result<(), BootstrapError>;
    /// The recorded sources, by id.
    fn sources(&self) -> Result<Vec<SourceInfo>, BootstrapError>;
}

/// Where the snapshot is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// The last window applied (or the seed's SCN).
    pub applied_scn: Option<Scn>,
    /// The oldest SCN a consolidated delta can start from.
    pub base_scn: Option<Scn>,
    /// Rows held, tombstones included.
    pub rows: u64,
    /// Whether a seed completed.
    pub seeded: bool,
}

/// A page request on the snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotQuery<'a> {
    /// The source to read.
    pub source: SourceId,
    /// Rows with `row_id > after_row`.
    pub after_row: u64,
    /// Only rows with `scn > since` (a delta), or every row.
    pub since: Option<Scn>,
    /// Whether tombstones are returned (deltas) or skipped (full snapshots).
    pub tombstones: bool,
    /// The consumer's filter.
    pub filter: &'a FilterSpec,
    /// At most this many rows.
    pub limit: usize,
    /// No more rows once their frames hold this many bytes (the row reaching the budget is the last
    /// one read: a read returns at least one row when there is one, so paging always progresses).
    pub max_bytes: usize,
}

/// Takes items from `rows` while their `bytes` stay under `max_bytes`: the item reaching the budget
/// is the last one taken (so at least one is, when there is one); the rest is never read.
pub(crate) fn take_bytes<T, E>(
    rows: impl Iterator<Item = Result<T, E>>,
    max_bytes: usize,
    bytes: impl Fn(&T) -> usize,
) -> Result<Vec<T>, E> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for row in rows {
        let row = row?;
        total = total.saturating_add(bytes(&row));
        out.push(row);
        if total >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// A snapshot row read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// Its paging id.
    pub row_id: u64,
    /// The SCN of its event.
    pub scn: Scn,
    /// The event (an upsert, or a delete for a tombstone).
    pub frame: Vec<u8>,
}

/// Where a seed is, persisted so a crashed seed resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedProgress {
    /// The SCN the seed's consistent snapshot is at.
    pub scn: Scn,
    /// Seeder-specific resume state (JSON).
    pub token: String,
}

/// The SNAPSHOT store: the latest event per `(source, key)`. See the [module docs](self).
pub trait SnapshotStore: Send + Sync + std::fmt::Debug {
    /// Where the snapshot is.
    fn snapshot_status(&self) -> Result<SnapshotStatus, BootstrapError>;
    /// Sets the base SCN if it is not set yet.
    fn init_base(&self, base: Scn) -> Result<(), BootstrapError>;
    /// Applies events (in log order) and records `applied_scn`, in one transaction. For each key the
    /// event with the greatest SCN wins (the later one in `events` at equal SCN); older ones change
    /// nothing, so re-applying is harmless. A truncate removes the source's rows and becomes its marker
    /// (see the [module docs](self)); schema changes are skipped.
    fn apply(&self, events: &[StoredEvent], applied_scn: Scn) -> Result<(), BootstrapError>;
    /// A page of rows in `row_id` order.
    fn read(&self, query: &SnapshotQuery<'_>) -> Result<Vec<SnapshotRow>, BootstrapError>;
    /// Loads a chunk of seed rows and records the seed's progress, in one transaction (upserts, as
    /// [`SeedWrite::Upsert`]).
    fn seed_chunk(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
    ) -> Result<(), BootstrapError>;
    /// As [`SnapshotStore::seed_chunk`], saying whether the keys are known to be new. With
    /// [`SeedWrite::Fresh`] a store may insert without looking for existing rows; [`SqliteStore`] and
    /// [`MemoryStore`] refuse a key already in the snapshot (or twice in `events`): the whole chunk
    /// fails and nothing is stored. The default upserts (always correct, never faster).
    fn seed_chunk_with(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
        write: SeedWrite,
    ) -> Result<(), BootstrapError> {
        let _ = write;
        self.seed_chunk(events, progress)
    }
    /// The progress of an unfinished seed.
    fn seed_progress(&self) -> Result<Option<SeedProgress>, BootstrapError>;
    /// Completes a seed at `scn`: `applied_scn` and `base_scn` become `scn`.
    fn finish_seed(&self, scn: Scn) -> Result<(), BootstrapError>;
    /// Records a writer schema the seed encoded rows with (the relay may never have seen it).
    fn put_schema(&self, schema: &StoredSchema) -> Result<(), BootstrapError>;
    /// A recorded writer schema.
    fn schema(&self, id: SchemaId) -> Result<Option<StoredSchema>, BootstrapError>;
}

/// How a seed chunk meets the rows already in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedWrite {
    /// The snapshot may hold some of these keys (a resumed seed): as [`SnapshotStore::apply`], the
    /// greater SCN wins per key.
    Upsert,
    /// None of these keys is in the snapshot yet and each appears once (the first run of a seed into
    /// an empty snapshot, rows read in primary-key order): the store may insert without looking for
    /// an existing row. A key that is there after all is an error, never an overwrite.
    Fresh,
}

/// A writer schema recorded by the seed, served as the relay serves schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// Its id.
    pub id: SchemaId,
    /// The source whose rows use it.
    pub source: SourceId,
    /// `database.table`.
    pub table: String,
    /// The Avro schema, JSON text.
    pub avro_json: String,
}

/// Both stores of one bootstrap database, and its roles' reports.
pub trait BootstrapStore: LogStore + SnapshotStore + RoleStore {}

impl<T: LogStore + SnapshotStore + RoleStore> BootstrapStore for T {}

/// As [`key_bytes`], appended to `out`.
pub(crate) fn key_bytes_into(key: &Key, out: &mut Vec<u8>) {
    match key {
        Key::None => out.push(0),
        Key::Int(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Key::Bytes(b) => {
            out.push(2);
            out.extend_from_slice(b);
        }
    }
}

/// Encodes a key for the unique `(source, key)` index: the key type byte then the value.
pub(crate) fn key_bytes(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    key_bytes_into(key, &mut out);
    out
}
