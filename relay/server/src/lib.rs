//! The relay: ingest from a connector into event buffers and serve consumers over HTTP.
//!
//! Main pieces:
//!
//! - [`config`]: the `relay.toml` file ([`RelayConfig`]), validated into a [`ValidatedConfig`].
//! - [`service`]: [`RelayService`], the state the handlers serve from (buffers, tables, ingest status,
//!   schema registry, metrics handle).
//! - [`http`]: the warp routes (one pure parameter filter per endpoint, one error-to-response mapping);
//!   the protocol is documented in `docs/protocol.md`.
//! - [`serve`]: runs the HTTP server on a listener until a shutdown token fires.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use databus_buffer::{BufferConfig, event_buffer};
//! use databus_core::SourceId;
//! use databus_relay::config::{HttpSettings, ValidatedTable};
//! use databus_relay::{RelayService, SourceHandle, serve};
//! use databus_serde_formats::SchemaRegistry;
//!
//! let (writer, buffer) = event_buffer(BufferConfig::new(64 << 20))?;
//! let source = SourceHandle {
//!     name: "shop".into(),
//!     buffer,
//!     tables: vec![ValidatedTable {
//!         id: SourceId::new(1),
//!         name: "orders".into(),
//!         database: "shop".into(),
//!         table: "orders".into(),
//!     }],
//!     status: Default::default(),
//! };
//! let service = RelayService::new(
//!     vec![source],
//!     Arc::new(SchemaRegistry::in_memory()),
//!     HttpSettings::default(),
//!     None,
//! );
//! // Ingest appends windows through `writer`; the HTTP API serves them.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(service, listener, shutdown).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod http;
mod metrics;
pub mod service;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{RelayConfig, ValidatedConfig};
pub use error::RelayError;
pub use service::{IngestSnapshot, IngestState, IngestStatus, RelayService, SourceHandle};

/// Serves the relay's HTTP API on `listener` until `shutdown` is cancelled, then stops accepting and
/// drains requests in flight.
pub async fn serve(
    service: Arc<RelayService>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    warp::serve(http::routes(service))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled_owned().await })
        .run()
        .await;
}
