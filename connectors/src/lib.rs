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
//! - [`conformance`]: generic checks every connector must pass, run here against a real MariaDB.
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

pub mod conformance;
mod error;
pub mod mysql;
pub mod postgres;
pub mod source;

pub use error::ConnectorError;
pub use source::{
    ChangeKind, ConnectorEvent, DdlKind, RowChange, SourceConnector, SourcePosition,
    SourceTransaction, StartPosition, TableDdl, TableName,
};

/// `docs/connectors.md`: its Rust samples are compiled (and run) as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../docs/connectors.md")]
pub struct ConnectorsGuide;
