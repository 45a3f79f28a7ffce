//! Bootstrap server: log and snapshot stores, consolidated delta and consistent snapshot queries.
//!
//! A bootstrap database is the copy of one relay buffer that outlives the relay's memory: a consumer
//! that fell off the relay (`410 scn_not_found`), or a brand-new replica, catches up from it without
//! touching the source database. The HTTP protocol is `docs/bootstrap-protocol.md`.
//!
//! Roles (each a `run_*` function taking the validated [`config`] and a shutdown token; [`run_all`] runs
//! them in one process):
//!
//! - [`producer`]: a relay client (its fetch loop is isolated in [`relay_client`]) appending every
//!   window to the LOG store, one store transaction per response's whole windows.
//! - [`applier`]: copies log windows into the SNAPSHOT store (latest event per `(source, key)`, deletes
//!   as tombstones), recording the applied SCN in the same transaction.
//! - [`serve`] + [`http`]: the queries — consistent snapshot, consolidated delta since `T`, or log-only
//!   catch-up when `T` is recent — paged and resumable through the consumer's [`Checkpoint`]
//!   (`databus_core`), with the relay's source/MOD/RANGE filters pushed down into SQL.
//! - [`status_page`]: the HTML status page (`GET /`): log and snapshot SCNs, applier lag, retention.
//! - [`retention`]: trims the log by age and size, never past the applier nor a bootstrap in progress.
//! - [`seed`]: loads the source's current rows (MariaDB consistent snapshot mapped to an exact SCN) into
//!   the snapshot store, resumable, with progress ticks ([`seed::SeedTick`]: rows done, estimate,
//!   rate, ETA); the producer continues from that SCN.
//! - [`json`]: `format=json` on the stream, rendered as the relay renders it; [`metrics`]: the
//!   Prometheus metrics of every role (`GET /metrics`), named in `docs/operations.md`.
//!
//! Storage is behind the [`store::LogStore`] and [`store::SnapshotStore`] traits:
//! [`store::SqliteStore`] (one SQLite file per database, WAL) and the reference [`store::MemoryStore`];
//! both pass the conformance suite [`store_conformance_suite!`].
//!
//! [`Checkpoint`]: databus_core::Checkpoint
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use databus_bootstrap::applier::{ApplierSettings, apply_step};
//! use databus_bootstrap::serve::{BootstrapService, Phase, ServeSettings};
//! use databus_bootstrap::store::{BootstrapStore, LogWindow, MemoryStore, SourceInfo, StoredEvent};
//! use databus_core::{Checkpoint, EventBuilder, KeyRef, Opcode, Scn, SourceId};
//! use databus_filters::FilterSpec;
//!
//! let store: Arc<dyn BootstrapStore> = Arc::new(MemoryStore::new());
//! store.set_sources(&[SourceInfo { id: SourceId::new(1), name: "orders".into() }])?;
//! // What the producer does with each window it reads from the relay:
//! store.start_log(Scn::ZERO)?;
//! let mut frame = Vec::new();
//! EventBuilder::new(Scn::new(5), Opcode::Upsert)
//!     .source(SourceId::new(1))
//!     .key(KeyRef::Int(42))
//!     .payload(b"avro")
//!     .write_to_vec(&mut frame);
//! let event = StoredEvent::from_frame(&frame)?;
//! store.append(&[LogWindow { scn: Scn::new(5), timestamp_ns: 0, events: vec![event] }])?;
//! // What the applier does:
//! apply_step(store.as_ref(), &ApplierSettings::default())?;
//! // A new consumer asks for a consistent snapshot.
//! let service = BootstrapService::new(store, ServeSettings::default());
//! let mut cp = Checkpoint::beginning();
//! cp.start_bootstrap(None);
//! let reply = service.stream(cp, &FilterSpec::all(), 1 << 20).unwrap();
//! assert_eq!((reply.events, reply.phase), (1, Phase::Catchup));
//! let reply = service.stream(reply.checkpoint, &FilterSpec::all(), 1 << 20).unwrap();
//! assert_eq!(reply.phase, Phase::Online);
//! assert_eq!(reply.checkpoint, Checkpoint::after(Scn::new(5)));
//! # Ok::<(), databus_bootstrap::BootstrapError>(())
//! ```

#![forbid(unsafe_code)]

pub mod applier;
pub mod config;
mod error;
pub mod gap;
pub mod generation;
pub mod health;
pub mod http;
pub mod json;
pub mod metrics;
pub mod producer;
pub mod relay_client;
pub mod retention;
pub mod run;
pub mod seed;
pub mod serve;
pub mod status_page;
pub mod store;

pub use config::{BootstrapConfig, ValidatedConfig};
pub use error::BootstrapError;
pub use run::{
    run_all, run_all_on, run_applier, run_producer, run_seed, run_seed_with, run_server,
    run_server_on,
};
