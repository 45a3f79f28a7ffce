//! The relay: ingest from a connector into event buffers and serve consumers over HTTP.
//!
//! Main pieces:
//!
//! - [`config`]: the `relay.toml` file ([`RelayConfig`]), validated into a [`ValidatedConfig`].
//! - [`service`]: [`RelayService`], the state the handlers serve from (buffers, tables, ingest status,
//!   schema registry, metrics handle).
//! - [`http`]: the warp routes (one pure parameter filter per endpoint, one error-to-response mapping);
//!   the protocol is documented in `docs/protocol.md`.
//! - [`ingest`]: the pipeline of one source (connector -> Avro encoder -> buffer writer), with
//!   reconnection on transient errors; [`chain`]: a source that follows another relay (relay
//!   chaining); [`state`]: the persisted last SCN per source.
//! - [`status_page`]: the HTML status page (`GET /`), for people.
//! - [`run`] / [`run_with`]: the whole relay process; [`serve`]: just the HTTP server.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use databus_buffer::{BufferConfig, event_buffer};
//! use databus_core::SourceId;
//! use databus_relay::config::{RelayHttp, HttpSettings, ValidatedTable};
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
//!     HttpSettings::defaults::<RelayHttp>(),
//!     None,
//! );
//! // Ingest appends windows through `writer`; the HTTP API serves them.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(service, listener, shutdown).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod chain;
pub mod config;
mod error;
pub mod http;
pub mod ingest;
mod metrics;
pub mod service;
pub mod state;
pub mod status_page;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{RelayConfig, ValidatedConfig};
pub use databus_http::server::ServerSecurity;
pub use error::RelayError;
pub use service::{IngestSnapshot, IngestState, IngestStatus, RelayService, SourceHandle};

/// Serves the relay's HTTP API on `listener` (plain HTTP, no authentication) until `shutdown` is
/// cancelled, then stops accepting and drains requests in flight (long polls in progress answer at
/// once with what they have).
pub async fn serve(
    service: Arc<RelayService>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    serve_with(service, listener, ServerSecurity::plain(), shutdown).await;
}

/// As [`serve`], with TLS and/or bearer-token authentication (`http.tls`, `http.auth`; see
/// [`databus_http::server`]).
pub async fn serve_with(
    service: Arc<RelayService>,
    listener: tokio::net::TcpListener,
    security: ServerSecurity,
    shutdown: CancellationToken,
) {
    let stopping = service.stopping().clone();
    databus_http::server::serve(
        warp::service(http::routes(service)),
        listener,
        security.on_refused(|| metrics::http_error("unauthorized")),
        async move {
            shutdown.cancelled_owned().await;
            // End long polls in progress so that draining takes no longer than one buffer read.
            stopping.cancel();
        },
    )
    .await;
}

/// Runs the relay described by `config` until `shutdown` is cancelled: binds `config.http.listen`,
/// installs the Prometheus recorder (unless the process already has a recorder), then
/// [`run_with`].
pub async fn run(config: ValidatedConfig, shutdown: CancellationToken) -> Result<(), RelayError> {
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| RelayError::Io {
            what: format!("cannot listen on {}", config.http.listen),
            source: e,
        })?;
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "prometheus exporter not installed; /metrics answers 503");
            None
        }
    };
    run_with(config, listener, metrics, shutdown).await
}

/// Runs the relay on `listener`: one event buffer and one ingest pipeline per configured source (the
/// connector its `[sources.connector]` kind builds, or another relay for a chained source, see [`chain`]), the schema registry under `<state_dir>/schemas`, and the HTTP API. Returns after
/// `shutdown` is cancelled and everything drained. A source whose ingest fails with a definite error
/// stops alone (status `failed`, `/health` 503); the relay keeps serving its buffer.
pub async fn run_with(
    config: ValidatedConfig,
    listener: tokio::net::TcpListener,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    use databus_buffer::{BufferConfig, event_buffer};

    std::fs::create_dir_all(&config.state_dir).map_err(|e| RelayError::Io {
        what: format!("cannot create state_dir {}", config.state_dir.display()),
        source: e,
    })?;
    let registry = Arc::new(
        databus_serde_formats::SchemaRegistry::open(config.state_dir.join("schemas"))
            .map_err(|e| RelayError::Setup(e.to_string()))?,
    );
    // Refuse to start on a corrupt state file rather than silently starting from the current position.
    for source in &config.sources {
        state::StateFile::new(&config.state_dir, &source.name).load()?;
    }
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for source in &config.sources {
        let (writer, buffer) = event_buffer(
            BufferConfig::new(source.buffer_bytes)
                .huge_pages(source.buffer_huge_pages)
                .awaiting_anchor()
                .with_side_index(),
        )
        .map_err(|e| RelayError::Setup(format!("buffer of source {}: {e}", source.name)))?;
        let handle = SourceHandle {
            name: source.name.clone(),
            buffer,
            tables: source.tables.clone(),
            status: Arc::default(),
        };
        let parts = ingest::IngestParts {
            name: source.name.clone(),
            writer,
            registry: registry.clone(),
            tables: source.tables.clone(),
            status: handle.status.clone(),
            state: state::StateFile::new(&config.state_dir, &source.name),
            history_transactions: source.history_transactions,
            before_images: source.before_images,
        };
        handles.push(handle);
        let name = source.name.clone();
        let token = shutdown.child_token();
        match &source.origin {
            config::Origin::Connector(connector) => {
                // The one factory: the connector of the source's kind.
                let connector = connector.build().map_err(|e| RelayError::Connector {
                    name: source.name.clone(),
                    error: e,
                })?;
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = ingest::run_ingest(connector, parts, token).await {
                        tracing::error!(source = %name, error = %e, "ingest stopped");
                    }
                }));
            }
            config::Origin::Relay {
                url,
                buffer,
                client,
            } => {
                let upstream = chain::Upstream {
                    url: url.clone(),
                    buffer: buffer.clone(),
                    client: client.clone(),
                };
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = chain::run_chain(upstream, parts, token).await {
                        tracing::error!(source = %name, error = %e, "chained ingest stopped");
                    }
                }));
            }
        }
    }
    let service = RelayService::new(handles, registry, config.http, metrics);
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        scheme = config.security.scheme(),
        token_required = config.security.requires_token(),
        "relay serving"
    );
    serve_with(service, listener, config.security, shutdown).await;
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "ingest task panicked");
        }
    }
    Ok(())
}
