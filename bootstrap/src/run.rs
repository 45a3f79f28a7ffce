//! Running the roles: each as its own process (`databus bootstrap producer|applier|server|seed`) or
//! all in one. Every `run_*` returns after `shutdown` is cancelled and its tasks drained.

use std::sync::Arc;

use databus_core::SourceId;
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::config::ValidatedConfig;
use crate::relay_client::RelayClient;
use crate::seed::{SeedReport, SeedSettings, SeedTable};
use crate::serve::BootstrapService;
use crate::store::{BootstrapStore, SqliteStore};

/// Opens the configured bootstrap database.
pub fn open_store(config: &ValidatedConfig) -> Result<Arc<dyn BootstrapStore>, BootstrapError> {
    Ok(Arc::new(SqliteStore::open_with(
        &config.db_path,
        config.store,
    )?))
}

fn need_relay(
    config: &ValidatedConfig,
) -> Result<&crate::producer::ProducerSettings, BootstrapError> {
    config
        .producer
        .as_ref()
        .ok_or_else(|| BootstrapError::Config("this role needs a [relay] section".into()))
}

/// The producer role.
pub async fn run_producer(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let settings = need_relay(&config)?.clone();
    let stats = crate::producer::run_producer(open_store(&config)?, settings, shutdown).await?;
    tracing::info!(
        windows = stats.windows,
        events = stats.events,
        "producer stopped"
    );
    Ok(())
}

/// The applier role.
pub async fn run_applier(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let total = crate::applier::run_applier(open_store(&config)?, config.applier, shutdown).await?;
    tracing::info!(
        windows = total.windows,
        events = total.events,
        "applier stopped"
    );
    Ok(())
}

/// Binds the configured listen address.
async fn bind(config: &ValidatedConfig) -> Result<tokio::net::TcpListener, BootstrapError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| BootstrapError::Io {
            what: format!("cannot listen on {}", config.listen),
            source: e,
        })
}

/// The HTTP server role, with the retention cleaner.
pub async fn run_server(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let listener = bind(&config).await?;
    run_server_on(config, listener, shutdown).await
}

/// As [`run_server`], on an already bound listener.
pub async fn run_server_on(
    config: ValidatedConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let store = open_store(&config)?;
    let cleaner = tokio::spawn(crate::retention::run_cleaner(
        store.clone(),
        config.retention,
        shutdown.clone(),
    ));
    // Writer schemas for `format=json` (rows the relay captured); a short timeout so an unreachable
    // relay only slows JSON answers a little (payloads then go out in base64).
    let relay = match &config.producer {
        Some(p) => Some(RelayClient::with_options(
            &p.relay_url,
            std::time::Duration::from_secs(5),
            &p.client,
        )?),
        None => None,
    };
    let service = BootstrapService::with_relay(store, config.serve, relay);
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        scheme = config.security.scheme(),
        token_required = config.security.requires_token(),
        "bootstrap server serving"
    );
    crate::http::serve_with(service, listener, config.security, shutdown).await;
    cleaner
        .await
        .map_err(|e| BootstrapError::Storage(format!("cleaner task failed: {e}")))?
}

/// Seeds the database from the source (tables taken from the relay's sources), logging progress with
/// `tracing` every 5 seconds. Refuses when the log already started without a seed: the producer would
/// miss rows.
pub async fn run_seed(config: &ValidatedConfig) -> Result<SeedReport, BootstrapError> {
    let mut last: Option<std::time::Instant> = None;
    let report = run_seed_with(config, |t| {
        if last.is_none_or(|l| l.elapsed() >= std::time::Duration::from_secs(5)) {
            last = Some(std::time::Instant::now());
            tracing::info!("seeding {t}");
        }
    })
    .await?;
    tracing::info!("{report}");
    Ok(report)
}

/// As [`run_seed`], calling `progress` after every chunk stored instead of logging.
pub async fn run_seed_with(
    config: &ValidatedConfig,
    progress: impl FnMut(crate::seed::SeedTick<'_>),
) -> Result<SeedReport, BootstrapError> {
    let seed = config
        .seed
        .as_ref()
        .ok_or_else(|| BootstrapError::Config("seeding needs a [seed] section".into()))?;
    let relay_settings = need_relay(config)?;
    let store = open_store(config)?;
    let (log, snap) = (store.log_status()?, store.snapshot_status()?);
    if snap.seeded {
        return Err(BootstrapError::Config(format!(
            "{} is already seeded (at SCN {}); seed a new file instead",
            config.db_path.display(),
            snap.base_scn.map_or_else(|| "?".into(), |s| s.to_string())
        )));
    }
    if log.floor_scn.is_some() && store.seed_progress()?.is_none() {
        return Err(BootstrapError::Config(format!(
            "the log of {} already started without a seed; seed a new file before starting its producer",
            config.db_path.display()
        )));
    }
    let relay = RelayClient::with_options(
        &relay_settings.relay_url,
        relay_settings.timeout,
        &relay_settings.client,
    )?;
    let sources = relay.sources().await?;
    let buffers: std::collections::BTreeSet<&str> =
        sources.iter().map(|s| s.buffer.as_str()).collect();
    let buffer = match (&relay_settings.buffer, buffers.len()) {
        (Some(b), _) => b.clone(),
        (None, 1) => buffers
            .iter()
            .next()
            .map(|b| (*b).to_owned())
            .unwrap_or_default(),
        (None, _) => {
            return Err(BootstrapError::Config(format!(
                "relay has buffers {buffers:?}; set relay.buffer"
            )));
        }
    };
    let tables = sources
        .iter()
        .filter(|s| s.buffer == buffer)
        .map(|s| {
            let (db, table) = s.table.split_once('.').ok_or_else(|| {
                BootstrapError::Corrupt(format!("relay source {} has table {:?}", s.name, s.table))
            })?;
            Ok(SeedTable {
                source: SourceId::new(s.id),
                database: db.into(),
                table: table.into(),
            })
        })
        .collect::<Result<Vec<_>, BootstrapError>>()?;
    store.set_sources(
        &sources
            .iter()
            .filter(|s| s.buffer == buffer)
            .map(|s| crate::store::SourceInfo {
                id: SourceId::new(s.id),
                name: s.name.clone(),
            })
            .collect::<Vec<_>>(),
    )?;
    let settings = SeedSettings {
        url: seed.url.clone(),
        tables,
        chunk_rows: seed.chunk_rows,
    };
    crate::seed::seed(store, &settings, progress).await
}

/// Every role in one process: the seed first (if `[seed]` is set and the database is new), then the
/// producer, the applier, the cleaner and the server.
pub async fn run_all(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let listener = bind(&config).await?;
    run_all_on(config, listener, shutdown).await
}

/// As [`run_all`], serving on an already bound listener.
pub async fn run_all_on(
    config: ValidatedConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let store = open_store(&config)?;
    if config.seed.is_some()
        && !store.snapshot_status()?.seeded
        && store.log_status()?.floor_scn.is_none()
    {
        run_seed(&config).await?;
    }
    drop(store);
    let logged = |role: &'static str, r: Result<(), BootstrapError>| {
        if let Err(e) = &r {
            tracing::error!(role, error = %e, "bootstrap role stopped");
        }
        r
    };
    let producer = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move { logged("producer", run_producer(config, shutdown).await) }
    });
    let applier = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move { logged("applier", run_applier(config, shutdown).await) }
    });
    let server = run_server_on(config, listener, shutdown.clone()).await;
    let join = |r: Result<Result<(), BootstrapError>, tokio::task::JoinError>| {
        r.map_err(|e| BootstrapError::Storage(format!("task failed: {e}")))?
    };
    let p = join(producer.await);
    let a = join(applier.await);
    server.and(p).and(a)
}
