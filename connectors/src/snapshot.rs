//! The snapshot contract: a consistent snapshot of a source's tables at an exact stream position,
//! read table by table in chunks, rows converted exactly as the stream converts them.
//!
//! A bootstrap server is seeded from a [`Snapshot`]: every row of the captured tables as of one
//! transaction, then the stream from right after it. The contract (checked by
//! [`crate::snapshot_conformance_suite!`]):
//!
//! | property | rule |
//! |---|---|
//! | exact position | [`Snapshot::position`] is the last transaction the snapshot includes: a stream started with [`SnapshotPosition::resume`] delivers exactly the transactions it does not include (no gap, no overlap) |
//! | same schemas | [`Snapshot::schema`] is the schema the stream gives the table (same schema id) |
//! | same values | rows are the values the stream's row images carry for the same data |
//! | chunks | [`Snapshot::read_chunk`] reads up to `max_rows` rows in a stable order and returns a [`ChunkCursor`] to continue after them: a cursor saved by a crashed reader continues under a later snapshot |
//!
//! A source implements it with its own mechanism: MariaDB with `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` and the binlog position that snapshot sees ([`crate::mysql::MySqlSnapshotSource`]);
//! PostgreSQL with a temporary slot's exported snapshot (`SET TRANSACTION SNAPSHOT`), at the commit
//! LSN of the last transaction the stream delivers before the slot's consistent point
//! ([`crate::postgres::PgSnapshotSource`]).

use std::future::Future;
use std::sync::Arc;

use databus_core::Scn;
use databus_serde_formats::model::{Row, TableSchema};
use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::mysql::{MySqlSnapshot, MySqlSnapshotSource};
use crate::postgres::{PgSnapshot, PgSnapshotSource};
use crate::source::{SourcePosition, StartPosition, TableName};

/// Where a snapshot is in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPosition {
    /// The SCN of the last transaction the snapshot includes (0: it includes none).
    pub scn: Scn,
    /// The source's own position of that point, when it has one (opaque, like every
    /// [`SourcePosition`]).
    pub position: Option<SourcePosition>,
}

impl SnapshotPosition {
    /// Where a stream starts to continue the snapshot exactly: the first transaction it does not
    /// include.
    pub fn resume(&self) -> StartPosition {
        StartPosition::After(self.scn)
    }
}

/// Where the next chunk of a table starts: an opaque value of the connector (MariaDB: the primary key
/// of the last row read), serializable so that an interrupted reader can save it and continue later,
/// under a later snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkCursor(serde_json::Value);

impl ChunkCursor {
    /// A cursor holding `value`.
    pub fn new(value: serde_json::Value) -> Self {
        ChunkCursor(value)
    }

    /// The value, for the connector that wrote it.
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

/// Rows of one table read from a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotChunk {
    /// The rows, each in the table's column order ([`Snapshot::schema`]), converted as the stream
    /// converts row images.
    pub rows: Vec<Row>,
    /// Where the next chunk starts; `None` once the table is read to its end.
    pub next: Option<ChunkCursor>,
}

/// Something that can open consistent snapshots of a source.
pub trait SnapshotSource: Send {
    /// The snapshot type.
    type Snapshot: Snapshot;

    /// Opens a consistent snapshot (a long read transaction on the source until [`Snapshot::close`]).
    fn open(&mut self) -> impl Future<Output = Result<Self::Snapshot, ConnectorError>> + Send;
}

/// One open consistent snapshot.
pub trait Snapshot: Send {
    /// Where the snapshot is in the stream.
    fn position(&self) -> &SnapshotPosition;

    /// The table's schema, as the stream gives it.
    fn schema(
        &mut self,
        table: &TableName,
    ) -> impl Future<Output = Result<Arc<TableSchema>, ConnectorError>> + Send;

    /// An estimate of the table's rows (for progress), 0 if unknown.
    fn estimate_rows(
        &mut self,
        table: &TableName,
    ) -> impl Future<Output = Result<u64, ConnectorError>> + Send;

    /// Up to `max_rows` rows of `table` after `from` (`None`: from its start), in a stable order.
    fn read_chunk(
        &mut self,
        table: &TableName,
        from: Option<&ChunkCursor>,
        max_rows: usize,
    ) -> impl Future<Output = Result<SnapshotChunk, ConnectorError>> + Send;

    /// Ends the snapshot.
    fn close(self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// The snapshot side of a [`crate::ConnectorConfig`]: dispatches to the connector of its kind.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySnapshotSource {
    /// MariaDB / MySQL.
    MariaDb(MySqlSnapshotSource),
    /// PostgreSQL.
    Postgres(PgSnapshotSource),
}

/// A snapshot of an [`AnySnapshotSource`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySnapshot {
    /// MariaDB / MySQL.
    MariaDb(MySqlSnapshot),
    /// PostgreSQL.
    Postgres(PgSnapshot),
}

impl SnapshotSource for AnySnapshotSource {
    type Snapshot = AnySnapshot;

    async fn open(&mut self) -> Result<AnySnapshot, ConnectorError> {
        match self {
            AnySnapshotSource::MariaDb(s) => s.open().await.map(AnySnapshot::MariaDb),
            AnySnapshotSource::Postgres(s) => s.open().await.map(AnySnapshot::Postgres),
        }
    }
}

impl Snapshot for AnySnapshot {
    fn position(&self) -> &SnapshotPosition {
        match self {
            AnySnapshot::MariaDb(s) => s.position(),
            AnySnapshot::Postgres(s) => s.position(),
        }
    }

    async fn schema(&mut self, table: &TableName) -> Result<Arc<TableSchema>, ConnectorError> {
        match self {
            AnySnapshot::MariaDb(s) => s.schema(table).await,
            AnySnapshot::Postgres(s) => s.schema(table).await,
        }
    }

    async fn estimate_rows(&mut self, table: &TableName) -> Result<u64, ConnectorError> {
        match self {
            AnySnapshot::MariaDb(s) => s.estimate_rows(table).await,
            AnySnapshot::Postgres(s) => s.estimate_rows(table).await,
        }
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        from: Option<&ChunkCursor>,
        max_rows: usize,
    ) -> Result<SnapshotChunk, ConnectorError> {
        match self {
            AnySnapshot::MariaDb(s) => s.read_chunk(table, from, max_rows).await,
            AnySnapshot::Postgres(s) => s.read_chunk(table, from, max_rows).await,
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        match self {
            AnySnapshot::MariaDb(s) => s.close().await,
            AnySnapshot::Postgres(s) => s.close().await,
        }
    }
}
