//! Filling a relay gap from the source: when the relay no longer holds the windows after the log's
//! last one (the producer was down longer than the relay's buffer covers), the producer reads them
//! from the source database's binlog itself, which still has them (the relay only evicted them from
//! memory), then goes back to the relay.
//!
//! The windows are produced by the relay's own ingest pipeline ([`databus_relay::ingest::run_ingest`]:
//! the same connector, table mapping, Avro encoding, keys and heartbeat windows) writing into a private
//! [`databus_buffer`] event buffer, and read back as whole windows exactly as the relay serves them.
//! So the filled log holds what the relay would have served: the same SCNs (GTID sequence numbers),
//! windows and frames; schema ids are fingerprints of the Avro schema (`databus_serde_formats`), the
//! same in every process.
//!
//! Why the producer and not the relay: the relay stays a cache of recent history with no per-consumer
//! work, and the bootstrap server, whose job is to outlive the relay's memory, repairs its own log.
//! Consumers that fell off the relay by more than its buffer are served by the bootstrap server.
//!
//! | failure | what happens |
//! |---------|--------------|
//! | the source's binlog no longer has the gap (purged) | definite ([`BootstrapError::GapUnfillable`]): the producer reports itself `blocked` (re-seed) and retries |
//! | the source unreachable | transient: the pipeline reconnects with backoff; the producer keeps reporting `running` but not caught up |
//! | the private buffer overtook this reader (the binlog is read faster than the log is written) | the fill restarts after the log's last window (nothing is written twice) |

use std::sync::Arc;
use std::time::Duration;

use databus_buffer::{BufferConfig, ReadError, event_buffer};
use databus_connectors::AnySourceConnector;
use databus_core::{Checkpoint, Scn};
use databus_relay::config::{Origin, ValidatedSource};
use databus_relay::ingest::{IngestParts, run_ingest};
use databus_relay::state::StateFile;
use databus_serde_formats::SchemaRegistry;
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::health::Reporter;
use crate::producer::{Partial, ProducerStats, split_windows};
use crate::store::BootstrapStore;

/// Bytes read from the private buffer per store transaction at most.
const READ_BYTES: usize = 4 << 20;

/// The source database the producer fills relay gaps from: the relay's own `[[sources]]` entry
/// (validated by the relay's configuration code), with its own `server_id`.
#[derive(Debug, Clone)]
pub struct GapSource {
    /// The validated source (a database origin).
    pub source: ValidatedSource,
}

impl GapSource {
    fn connector(&self) -> Result<AnySourceConnector, BootstrapError> {
        let Origin::Connector(connector) = &self.source.origin else {
            return Err(BootstrapError::Config(
                "source: give the database ([source.connector]), not an upstream relay".into(),
            ));
        };
        connector
            .build()
            .map_err(|e| BootstrapError::Config(format!("source: {e}")))
    }
}

/// Appends to the log every window after its last one, read from the source through the relay's
/// pipeline, until the log holds `until` (or a later window). Returns when done, at `shutdown`, or on
/// an error (the log then holds whole windows up to where it got).
pub async fn fill_gap(
    store: &Arc<dyn BootstrapStore>,
    source: &GapSource,
    until: Scn,
    shutdown: &CancellationToken,
    stats: &mut ProducerStats,
    reporter: &mut Reporter,
) -> Result<(), BootstrapError> {
    let last = {
        let store = store.clone();
        crate::producer::blocking(move || store.log_status()).await?
    }
    .last_scn
    .ok_or(BootstrapError::LogNotStarted)?;
    if last >= until {
        return Ok(());
    }
    tracing::warn!(%last, %until, source = %source.source.name, "filling the relay gap from the source's binlog");
    let dir = tempfile::tempdir().map_err(|e| BootstrapError::Io {
        what: "cannot create a temporary directory for the gap filler".into(),
        source: e,
    })?;
    let state = StateFile::new(dir.path(), &source.source.name);
    state
        .store(last, None)
        .map_err(|e| BootstrapError::Storage(format!("gap filler state: {e}")))?;
    let (writer, buffer) = event_buffer(BufferConfig::new(source.source.buffer_bytes))
        .map_err(|e| BootstrapError::Config(format!("source.buffer_size: {e}")))?;
    let parts = IngestParts {
        name: source.source.name.clone(),
        writer,
        registry: Arc::new(SchemaRegistry::in_memory()),
        tables: source.source.tables.clone(),
        status: Arc::default(),
        state,
        history_transactions: 0,
        // Exactly what the relay would have written: the same event kinds.
        before_images: source.source.before_images,
    };
    let token = shutdown.child_token();
    let mut ingest = tokio::spawn(run_ingest(source.connector()?, parts, token.clone()));
    let result = async {
        let mut cp = Checkpoint::after(last);
        let mut partial: Option<Partial> = None;
        let mut out = Vec::new();
        let mut logged = last;
        while logged < until {
            out.clear();
            let outcome = match buffer.read(&cp, READ_BYTES, &mut out) {
                Ok(o) => o,
                Err(e @ (ReadError::ScnNotFound { .. } | ReadError::Overtaken { .. })) => {
                    return Err(BootstrapError::RelayTransient {
                        url: format!("source {}", source.source.name),
                        message: format!(
                            "the gap filler's buffer was overwritten before it was read ({e}); filling again after SCN {logged}"
                        ),
                        retry_after: None,
                    });
                }
                Err(e) => return Err(BootstrapError::Corrupt(format!("gap filler read: {e}"))),
            };
            if outcome.bytes_copied == 0 {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    r = &mut ingest => {
                        let r = r.map_err(|e| BootstrapError::Storage(format!("gap filler task: {e}")))?;
                        return Err(match r {
                            Err(e) => BootstrapError::GapUnfillable { after: logged, message: e.to_string() },
                            Ok(()) => BootstrapError::GapUnfillable { after: logged, message: "the source's stream ended".into() },
                        });
                    }
                    _ = buffer.wait_for_data_after(&cp, deadline) => {}
                }
                reporter.running(false).await;
                continue;
            }
            cp = outcome.checkpoint;
            let windows = split_windows(&out, &mut partial)?;
            if let Some(w) = windows.last() {
                logged = w.scn;
                let n_windows = windows.len() as u64;
                let n_events: u64 = windows.iter().map(|w| w.events.len() as u64).sum();
                let store = store.clone();
                crate::producer::blocking(move || store.append(&windows)).await?;
                stats.windows += n_windows;
                stats.events += n_events;
                crate::metrics::produced(n_windows, n_events);
            }
            reporter.running(false).await;
        }
        tracing::info!(%logged, "relay gap filled from the source; back to the relay");
        Ok(())
    }
    .await;
    token.cancel();
    if !ingest.is_finished() {
        let _ = ingest.await;
    }
    result
}
