//! The fetcher task: long-polls the relays (failing over between them), assembles whole windows,
//! resolves their writer schemas, and hands them to the consumer side through a channel bounded in
//! bytes (a semaphore of `buffer_bytes` permits: a slow consumer stops the fetcher, memory stays
//! bounded by `buffer_bytes` plus one response).

use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use databus_core::{Checkpoint, ConsumptionMode, SchemaId, Scn};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::http::ResponseExt;
use crate::pool::ServerPool;
use crate::stall::Stall;
use crate::stats::{ClientStats, Held};
use crate::window::{Assembler, RawWindow, SchemaCache};
use crate::{BootstrapInfo, ClientConfig, ClientError, Phase, StartPosition, Window};
use databus_http::follow::StreamFollower;
use databus_http::protocol::StreamQuery;

/// What the fetcher hands to the consumer side, in order.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A whole window, with the buffer space it occupies.
    Window(Window, Held),
    /// A bootstrap starts; persist `checkpoint` once the callback succeeded.
    StartBootstrap(BootstrapInfo, Checkpoint),
    /// Catch-up starts, up to the SCN.
    StartCatchup(Scn, Checkpoint),
    /// The bootstrap ended at the SCN; relay windows follow.
    EndBootstrap(Scn, Checkpoint),
    /// A failure the fetcher handles (a failed request it fails over and retries).
    Warning(ClientError),
    /// Fetching stopped for good.
    Failed(ClientError),
}

/// The shared state of the fetcher.
pub(crate) struct Fetcher {
    pub(crate) config: ClientConfig,
    pub(crate) relays: ServerPool,
    pub(crate) bootstrap: Option<ServerPool>,
    pub(crate) schemas: Arc<SchemaCache>,
    pub(crate) space: Arc<Semaphore>,
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
    pub(crate) filter_query: String,
    pub(crate) stats: Arc<ClientStats>,
    /// Waiting while no server can serve the checkpoint (see [`crate::stall`]).
    pub(crate) stall: Stall,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("relay", &self.relays.current_url())
            .finish_non_exhaustive()
    }
}

/// Which edge of the relay's buffer a start is relative to.
#[derive(Debug, Clone, Copy)]
enum Edge {
    Oldest,
    Newest,
}

impl Fetcher {
    /// Runs until `shutdown`, a definite error (sent as [`Delivery::Failed`]) or the receiver closes.
    pub(crate) async fn run(mut self, start: Option<Checkpoint>, shutdown: CancellationToken) {
        let result = tokio::select! {
            r = self.run_inner(start) => r,
            () = shutdown.cancelled() => return,
        };
        if let Err(Ok(e)) = result.map_err(|e| match e {
            FetchStop::Error(e) => Ok(e),
            FetchStop::Closed => Err(()),
        }) {
            let _ = self.tx.send(Delivery::Failed(e));
        }
    }

    async fn run_inner(&mut self, start: Option<Checkpoint>) -> Result<(), FetchStop> {
        let mut checkpoint = match start {
            Some(cp) => cp,
            None => match self.config.start {
                StartPosition::Beginning => Checkpoint::beginning(),
                StartPosition::Oldest => Checkpoint::after(self.relay_edge(Edge::Oldest).await?),
                StartPosition::Now => Checkpoint::after(self.relay_edge(Edge::Newest).await?),
                StartPosition::Snapshot => {
                    let mut cp = Checkpoint::beginning();
                    cp.start_bootstrap(None);
                    self.send(Delivery::StartBootstrap(
                        BootstrapInfo { since_scn: None },
                        cp.clone(),
                    ))?;
                    cp
                }
            },
        };
        let mut oldest_retries = 0;
        loop {
            if checkpoint.mode != ConsumptionMode::Online {
                checkpoint = self.bootstrap(checkpoint).await?;
            }
            match self.follow_relay(&mut checkpoint).await {
                Err(FetchStop::Error(ClientError::ScnNotFound { requested, message }))
                    if self.bootstrap.is_some() =>
                {
                    if self.stall.relay_gone(requested, &self.stats) {
                        // The last bootstrap brought nothing past `requested`: wait, then bootstrap
                        // again only once the bootstrap server's log has something after it (an empty
                        // bootstrap per round would only repeat the phase callbacks); else ask the
                        // relay again.
                        let reason = format!(
                            "every relay answered scn_not_found ({message}) and the bootstrap server has nothing after SCN {requested}: its producer is behind or stopped; check the bootstrap server's /health"
                        );
                        let delay = self.stall.round(requested, &reason, &self.stats)?;
                        tokio::time::sleep(delay).await;
                        if self.bootstrap_log_last().await? <= Some(requested) {
                            continue;
                        }
                    } else {
                        tracing::warn!(%requested, %message, "fell behind every relay; bootstrapping");
                    }
                    let since = checkpoint.prev_scn;
                    checkpoint = Checkpoint::after(since.unwrap_or(Scn::ZERO));
                    checkpoint.start_bootstrap(since);
                    self.send(Delivery::StartBootstrap(
                        BootstrapInfo { since_scn: since },
                        checkpoint.clone(),
                    ))?;
                }
                // Flexible start: the relay evicted its oldest window between our reading of it and
                // our first request; ask again (only before anything was delivered).
                Err(FetchStop::Error(ClientError::ScnNotFound { requested, .. }))
                    if self.config.start == StartPosition::Oldest
                        && checkpoint.prev_scn.is_none_or(|p| p == requested)
                        && oldest_retries < 5 =>
                {
                    oldest_retries += 1;
                    checkpoint = Checkpoint::after(self.relay_edge(Edge::Oldest).await?);
                }
                other => return other,
            }
        }
    }

    /// The newest window of the bootstrap server's log (`log_last_scn` of its `/v1/status`).
    async fn bootstrap_log_last(&mut self) -> Result<Option<Scn>, FetchStop> {
        let Some(pool) = self.bootstrap.as_mut() else {
            return Ok(None);
        };
        let status = pool.get_json("/v1/status").await?;
        Ok(status["log_last_scn"].as_u64().map(Scn::new))
    }

    pub(crate) fn send(&self, delivery: Delivery) -> Result<(), FetchStop> {
        self.tx.send(delivery).map_err(|_| FetchStop::Closed)
    }

    /// An edge of the relay's buffer: its newest window (or where its empty buffer's history starts)
    /// for [`StartPosition::Now`], or where its history starts (the last evicted window, or its
    /// origin) for [`StartPosition::Oldest`]. A relay restarted while its source is down does not
    /// know them yet: that answer is transient (retried with backoff, on the next relay if there is
    /// one).
    async fn relay_edge(&mut self, edge: Edge) -> Result<Scn, FetchStop> {
        let buffer_name = self.config.buffer.clone();
        let scn = self
            .relays
            .request("/v1/status", Duration::ZERO, 16 << 20, |resp, url| {
                if resp.status == 410 {
                    return Err(resp.into_error(url));
                }
                let status = resp.json(url)?;
                let buffers = status["buffers"].as_array().cloned().unwrap_or_default();
                let buffer = match &buffer_name {
                    Some(name) => buffers.iter().find(|b| b["name"] == name.as_str()),
                    None if buffers.len() == 1 => buffers.first(),
                    None => None,
                };
                let Some(buffer) = buffer else {
                    return Err(ClientError::Config(
                        "the start is relative to the relay's buffer, which is ambiguous or unknown; set buffer"
                            .into(),
                    ));
                };
                if buffer["anchored"] == false {
                    return Err(ClientError::Transient {
                        server: url.to_owned(),
                        message: "the relay has not positioned its source yet".into(),
                    });
                }
                let prev = buffer["prev_scn"].as_u64();
                Ok(match edge {
                    Edge::Newest => buffer["max_scn"].as_u64().or(prev),
                    Edge::Oldest => prev,
                }
                .unwrap_or(0))
            })
            .await?;
        Ok(Scn::new(scn))
    }

    /// Follows the relays from `checkpoint` (online) until an error; `checkpoint` advances with every
    /// window handed over.
    async fn follow_relay(&mut self, checkpoint: &mut Checkpoint) -> Result<(), FetchStop> {
        let query = StreamQuery {
            wait: self.config.long_poll,
            max_bytes: Some(self.config.max_response_bytes),
            filter: Some(self.filter_query.clone()),
            coalesce_empty_windows: self.config.coalesce_empty_windows
                && (!self.config.filter.is_all() || self.config.partition.is_some()),
            ..StreamQuery::default()
        };
        let mut follower = StreamFollower::new(query, Some(checkpoint.clone()));
        let mut assembler =
            Assembler::after(checkpoint.prev_scn).bounded(self.config.max_window_bytes);
        loop {
            let (batch, server) = self.relays.stream(&mut follower).await?;
            self.stall.progress(&self.stats);
            let windows = assembler.push(&batch.body, &server)?;
            for raw in windows {
                *checkpoint = Checkpoint::after(raw.scn);
                self.deliver(raw, Phase::Online, checkpoint.clone()).await?;
            }
        }
    }

    /// Resolves the window's schemas, waits for buffer space and sends it.
    pub(crate) async fn deliver(
        &mut self,
        raw: RawWindow,
        phase: Phase,
        checkpoint: Checkpoint,
    ) -> Result<(), FetchStop> {
        self.stall.progress(&self.stats);
        for id in &raw.schema_ids {
            if !self.schemas.knows(*id) {
                let schema = self.fetch_schema(*id).await?;
                self.schemas.insert(*id, schema);
            }
        }
        let cap = self.space_capacity();
        let permits = u32::try_from(raw.bytes.clamp(1, cap)).unwrap_or(u32::MAX);
        let permits_held = self
            .space
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| FetchStop::Closed)?;
        let window = Window {
            scn: raw.scn,
            timestamp_ns: raw.timestamp_ns,
            phase,
            events: raw.events.into(),
            bytes: raw.bytes,
            sources: raw.sources.into(),
            checkpoint,
            schemas: self.schemas.clone(),
        };
        let held = Held::new(permits_held, u64::from(permits), self.stats.clone());
        self.send(Delivery::Window(window, held))
    }

    fn space_capacity(&self) -> usize {
        self.config.buffer_bytes.min(u32::MAX as usize)
    }

    /// Writer schema `id`: from the relays' registry first, then from the bootstrap servers (rows a
    /// bootstrap server seeded straight from the database carry a schema the relays register only once
    /// they see a change to that table).
    async fn fetch_schema(&mut self, id: SchemaId) -> Result<Option<Arc<Schema>>, FetchStop> {
        let path = format!("/v1/schemas/{:016x}", id.get());
        let json = match self.relays.get_json(&path).await {
            Ok(json) => json,
            Err(ClientError::Refused { status: 404, .. }) => match self.bootstrap.as_mut() {
                None => return Ok(None),
                Some(pool) => match pool.get_json(&path).await {
                    Ok(json) => json,
                    Err(ClientError::Refused { status: 404, .. }) => return Ok(None),
                    Err(e) => return Err(FetchStop::Error(e)),
                },
            },
            Err(e) => return Err(FetchStop::Error(e)),
        };
        match Schema::parse(&json["avro"]) {
            Ok(schema) => {
                // A schema id is the fingerprint of its schema: a server answering another schema (a
                // corrupt or mixed-up registry) would make every payload decode wrongly, silently.
                match databus_serde_formats::fingerprint::schema_id(&schema) {
                    Ok(actual) if actual == id => Ok(Some(Arc::new(schema))),
                    Ok(actual) => Err(FetchStop::Error(ClientError::Protocol {
                        server: self.relays.current_url().to_owned(),
                        message: format!(
                            "schema {:016x} as served fingerprints as {:016x}: the server's schema registry does not match its events; fix or rebuild the registry (relay state_dir/schemas)",
                            id.get(),
                            actual.get()
                        ),
                    })),
                    Err(e) => {
                        tracing::warn!(schema = %format!("{:016x}", id.get()), error = %e, "schema has no fingerprint; events of it will not decode");
                        Ok(None)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(schema = %format!("{:016x}", id.get()), error = %e, "schema does not parse; events of it will not decode");
                Ok(None)
            }
        }
    }
}

/// Why the fetcher stopped.
#[derive(Debug)]
pub(crate) enum FetchStop {
    /// A definite error, reported to the consumer side.
    Error(ClientError),
    /// The consumer side is gone.
    Closed,
}

impl From<ClientError> for FetchStop {
    fn from(e: ClientError) -> Self {
        FetchStop::Error(e)
    }
}
