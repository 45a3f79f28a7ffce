//! Client library of databus-rs: consume a change stream from relays (and bootstrap servers) with
//! callbacks or as an async stream of windows.
//!
//! Main types:
//!
//! - [`DatabusClient`]: configured by a [`ClientConfig`] (relay URLs, filters, partitioning, buffer
//!   bytes, workers, retries) and a [`CheckpointStore`]. [`DatabusClient::run`] drives a
//!   [`DatabusConsumer`] (callbacks with async methods and default no-op bodies, returning
//!   [`ConsumerOutcome`]); [`DatabusClient::stream`] gives a [`WindowStream`] (pull API).
//! - [`Window`] / [`DataEvent`]: whole windows in commit order; events with raw frame access and
//!   decoding into serde types, generic Avro records or JSON, optionally through a reader schema.
//! - [`checkpoint`]: stores (file with atomic replace, in-memory, SQLite in the replica's own
//!   transaction for effectively-once).
//! - Bootstrap switchover: when every relay answers `scn_not_found` (or a new consumer starts from a
//!   snapshot) the client reads a consolidated delta or a consistent snapshot from a bootstrap server,
//!   catches up, and returns to the relay at the target SCN, checkpointing progress throughout
//!   (protocol: `docs/bootstrap-protocol.md`; consumer guide: `docs/client.md`).
//! - [`ClientStats`]: counters (requests, failures, windows fetched, bytes buffered).
//!
//! Delivery is at-least-once, in commit order, whole windows: a window's checkpoint is persisted only
//! after every callback of it succeeded; a crash replays from the last persisted checkpoint. Requests
//! fail over between relays with exponential backoff and jitter; fetched windows are bounded in bytes
//! (a slow consumer slows fetching). With `workers > 1`, events are routed to workers by the shared
//! bucket function of their key (per-key order kept), with a barrier at each window end; window
//! callbacks run on one task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_client::ClientError> {
//! use std::sync::Arc;
//! use databus_client::{ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
//!     MemoryCheckpointStore};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: i64, total: String }
//!
//! struct Indexer;
//! impl DatabusConsumer for Indexer {
//!     async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
//!         match event.decode::<Order>() {
//!             Ok(order) => { println!("order {} {}", order.id, order.total); ConsumerOutcome::Success }
//!             Err(_) => ConsumerOutcome::Fatal,
//!         }
//!     }
//! }
//!
//! let mut config = ClientConfig::with_relays(["http://127.0.0.1:11000", "http://127.0.0.1:11001"]);
//! config.workers = 4;
//! let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new()))?;
//! client.run(Arc::new(Indexer), tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod bootstrap;
pub mod checkpoint;
mod client;
mod config;
mod consumer;
mod error;
mod fetcher;
mod http;
mod pool;
mod stall;
mod stats;
mod transition;
mod window;

pub use checkpoint::{
    CheckpointStore, CheckpointStoreError, CommittedOnCheckpoint, FileCheckpointStore,
    MemoryCheckpointStore,
};
pub use client::{DatabusClient, RunSummary, WindowStream};
pub use config::{ClientConfig, FailurePolicy, PartitionMember, RetryConfig, StartPosition};
pub use consumer::{BootstrapInfo, ConsumerOutcome, DatabusConsumer, SkippedEvents, WindowInfo};
pub use databus_http::backoff::BackoffConfig;
pub use error::ClientError;
pub use stall::StallConfig;
pub use stats::ClientStats;
pub use transition::{StreamItem, Transition};
pub use window::{DataEvent, Phase, SchemaCache, Window};

/// The typed model of captured tables ([`DataEvent::table_schema`], [`DataEvent::row`]): column
/// types, table schemas and row values, from `databus-serde-formats`.
pub mod model {
    pub use databus_serde_formats::{Column, ColumnType, Row, TableSchema, Value, civil_from_days};
}
