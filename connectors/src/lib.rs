//! Sources of change events for databus-rs: the [`SourceConnector`] contract, its conformance suite and
//! the MySQL/MariaDB binlog and PostgreSQL logical replication connectors.
//!
//! - [`source`]: the contract. A connector yields [`ConnectorEvent`]s — whole committed
//!   [`SourceTransaction`]s in commit order with strictly increasing [`Scn`](databus_core::Scn)s, schema
//!   changes and heartbeats — and resumes exactly after any SCN.
//! - [`mysql`]: [`MySqlConnector`](mysql::MySqlConnector), which tails a MariaDB binlog as a replica,
//!   with SCN = GTID sequence number, typed row images and server validation.
//! - [`postgres`]: [`PgConnector`](postgres::PgConnector), logical replication with `pgoutput`, with
//!   SCN = commit LSN and a slot that advances only as far as the relay acknowledges.
//! - [`ConnectorConfig`]: a source's settings as a table tagged by `kind` (each variant is its
//!   connector's own config struct), and the one factory: [`ConnectorConfig::build`] gives an
//!   [`AnySourceConnector`], [`ConnectorConfig::snapshot_source`] its snapshot side,
//!   [`ConnectorConfig::check`] the source's readiness findings.
//! - [`snapshot`]: the snapshot contract ([`Snapshot`]: a consistent snapshot at an exact stream
//!   position, read in chunks, rows converted as the stream converts them) that seeding drives.
//! - [`SourcePosition`]: opaque to everyone but its connector; [`Secret`]: never shown.
//! - [`conformance`] and [`snapshot_conformance`]: generic checks every connector must pass, run
//!   here against a real MariaDB (and the streaming suite against PostgreSQL).
//! - [`ConnectorError`]: one error type; [`ConnectorError::is_transient`] says whether to retry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_connectors::ConnectorError> {
//! use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
//! use databus_connectors::{SourceConnector, StartPosition};
//!
//! let mut config = MySqlConfig::new("mysql://relay:secret@127.0.0.1:3306/", 4001);
//! config.tables = vec!["shop.orders".into()];
//! let mut connector = MySqlConnector::new(config)?;
//! connector.start(StartPosition::Now).await?;
//! let shutdown = connector.shutdown_token();
//! # shutdown.cancel();
//! while let Some(event) = connector.next_event().await? {
//!     println!("{event:?}");
//! }
//! connector.shutdown().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod any;
pub mod conformance;
mod error;
pub mod mysql;
pub mod postgres;
mod secret;
pub mod snapshot;
pub mod snapshot_conformance;
pub mod source;

pub use any::{AnySourceConnector, ConnectorConfig};
pub use error::ConnectorError;
pub use mysql::{CheckOutcome, SourceCheck};
pub use secret::{REDACTED, Secret, redact_url};
pub use snapshot::{
    AnySnapshot, AnySnapshotSource, ChunkCursor, Snapshot, SnapshotChunk, SnapshotPosition,
    SnapshotSource,
};
pub use source::{
    ChangeKind, ConnectorEvent, DdlKind, RowChange, SourceConnector, SourcePosition,
    SourceTransaction, StartPosition, TableDdl, TableName,
};

/// `docs/connectors.md`: its Rust samples are compiled (and run) as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../docs/connectors.md")]
pub struct ConnectorsGuide;
