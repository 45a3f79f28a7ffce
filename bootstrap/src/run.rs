//! Running the roles: each as its own process (`databus bootstrap producer|applier|server|seed`) or
//! all in one. Every `run_*` returns after `shutdown` is cancelled and its tasks drained.
//!
//! Every role works on the current store generation ([`crate::generation`]): the producer re-seeds
//! into a new one when the log cannot be continued and publishes it once complete; the applier, the
//! cleaner and the server move to it when it is published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use databus_core::SourceId;
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::config::ValidatedConfig;
use crate::generation::Generations;
use crate::health::Reporter;
use crate::relay_client::RelayClient;
use crate::seed::{SeedReport, SeedSettings, SeedTable};
use crate::serve::BootstrapService;
use crate::store::{BootstrapStore, Role, RoleState};

/// The configured database's generations.
pub fn generations(config: &ValidatedConfig) -> Generations {
    Generations::new(&config.db_path)
}

/// Opens the current generation of the configured bootstrap database.
pub fn open_store(config: &ValidatedConfig) -> Result<Arc<dyn BootstrapStore>, BootstrapError> {
    Ok(generations(config).open_current(config.store)?.1)
}

fn need_relay(
    config: &ValidatedConfig,
) -> Result<&crate::producer::ProducerSettings, BootstrapError> {
    config
        .producer
        .as_ref()
        .ok_or_else(|| BootstrapError::Config("this role needs a [relay] section".into()))
}

/// The producer role: copies the relay into the current generation's log; when that log cannot be
/// continued and `[seed] auto_reseed` is on, seeds a new generation, produces into it, and publishes it
/// once its log has caught up with the relay (the other roles switch then).
pub async fn run_producer(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let settings = need_relay(&config)?.clone();
    let generations = generations(&config);
    // The generation to produce into, when it is not (yet) the current one.
    let mut next: Option<(u64, Arc<dyn BootstrapStore>)> = None;
    loop {
        let current = generations.current()?;
        let (n, store) = match next.take() {
            Some(x) => x,
            None => (current, generations.open(current, config.store)?),
        };
        let publisher = (n > current).then(|| {
            tokio::spawn(publish_when_caught_up(
                generations.clone(),
                n,
                store.clone(),
                shutdown.clone(),
            ))
        });
        let result =
            crate::producer::run_producer(store.clone(), settings.clone(), shutdown.clone()).await;
        if let Some(p) = publisher {
            p.abort();
        }
        match result {
            Ok(stats) => {
                tracing::info!(
                    windows = stats.windows,
                    events = stats.events,
                    generation = n,
                    "producer stopped"
                );
                return Ok(());
            }
            Err(e @ (BootstrapError::RelayGap { .. } | BootstrapError::GapUnfillable { .. }))
                if settings.reseed =>
            {
                let target = n.max(generations.current()?) + 1;
                tracing::warn!(error = %e, generation = target, "producer: the log cannot be continued; re-seeding into a new generation");
                match reseed(&config, &generations, target, &e.to_string(), &shutdown).await? {
                    Some(store) => next = Some((target, store)),
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Seeds generation `target` (resuming an interrupted seed of it), reporting `reseeding` on the
/// current generation meanwhile. `None` at shutdown.
async fn reseed(
    config: &ValidatedConfig,
    generations: &Generations,
    target: u64,
    why: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn BootstrapStore>>, BootstrapError> {
    crate::metrics::reseed_started();
    let mut store = generations.open(target, config.store)?;
    if store.snapshot_status()?.seeded {
        tracing::info!(
            generation = target,
            "producer: generation already seeded (an interrupted re-seed); continuing its log"
        );
        return Ok(Some(store));
    }
    if store.log_status()?.floor_scn.is_some() && store.seed_progress()?.is_none() {
        // Not a seed's leftovers: start that generation afresh.
        drop(store);
        generations.remove_files(target);
        store = generations.open(target, config.store)?;
    }
    let (_, current) = generations.open_current(config.store)?;
    let mut reporter = Reporter::new(current, Role::Producer);
    let progress = Arc::new(Mutex::new(format!(
        "re-seeding into generation {target} (the log could not be continued: {why})"
    )));
    let mut logged: Option<std::time::Instant> = None;
    let seed = seed_store(config, store.clone(), {
        let progress = progress.clone();
        move |t| {
            let text = format!("re-seeding into generation {target}: {t}");
            if logged.is_none_or(|l| l.elapsed() >= Duration::from_secs(5)) {
                logged = Some(std::time::Instant::now());
                tracing::info!("{text}");
            }
            *progress.lock().unwrap_or_else(|p| p.into_inner()) = text;
        }
    });
    tokio::pin!(seed);
    let mut tick = tokio::time::interval(crate::store::HEARTBEAT);
    let report = loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            r = &mut seed => break r?,
            _ = tick.tick() => {
                let message = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
                reporter.set(RoleState::Reseeding, message).await;
            }
        }
    };
    tracing::info!(
        generation = target,
        "re-seed done: {report}; following the relay into the new generation"
    );
    reporter
        .set(
            RoleState::Reseeding,
            format!("re-seeded generation {target} at SCN {}; its log is catching up with the relay before it is served", report.scn),
        )
        .await;
    Ok(Some(store))
}

/// Publishes generation `n` once its producer has caught up with the relay (a report written after
/// this call began), then removes the generations before the previous one.
async fn publish_when_caught_up(
    generations: Generations,
    n: u64,
    store: Arc<dyn BootstrapStore>,
    shutdown: CancellationToken,
) {
    let since = crate::health::now_ms();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(crate::generation::POLL) => {}
        }
        let s = store.clone();
        let roles = match crate::producer::blocking(move || s.roles()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the new generation's reports");
                continue;
            }
        };
        let caught_up = roles.iter().any(|r| {
            r.role == Role::Producer
                && r.state == RoleState::Running
                && r.caught_up_ms.is_some_and(|t| t >= since)
        });
        if !caught_up {
            continue;
        }
        match generations.publish(n) {
            Ok(()) => {
                tracing::info!(
                    generation = n,
                    "bootstrap generation complete and published: every role serves it now"
                );
                crate::metrics::generation(n);
                // A server in another process may still finish a request on the previous one.
                generations.remove_before(n.saturating_sub(1));
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, generation = n, "cannot publish the new generation; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The applier role, on the current generation (moving to each new one).
pub async fn run_applier(
    config: ValidatedConfig,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    let settings = config.applier;
    crate::generation::follow(
        &generations(&config),
        config.store,
        &shutdown,
        "applier",
        |store, token| async move {
            let total = crate::applier::run_applier(store, settings, token).await?;
            tracing::info!(
                windows = total.windows,
                events = total.events,
                "applier stopped"
            );
            Ok(())
        },
    )
    .await
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
    let cleaner = tokio::spawn({
        let (generations, options, retention, shutdown) = (
            generations(&config),
            config.store,
            config.retention,
            shutdown.clone(),
        );
        async move {
            crate::generation::follow(
                &generations,
                options,
                &shutdown,
                "cleaner",
                |store, token| crate::retention::run_cleaner(store, retention, token),
            )
            .await
        }
    });
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
    let service =
        BootstrapService::following(generations(&config), config.store, config.serve, relay)?;
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
    seed_store(config, store, progress).await
}

/// Seeds `store` (a new or partly seeded database) from `[seed]`, with the tables the relay captures.
async fn seed_store(
    config: &ValidatedConfig,
    store: Arc<dyn BootstrapStore>,
    progress: impl FnMut(crate::seed::SeedTick<'_>),
) -> Result<SeedReport, BootstrapError> {
    let seed = config
        .seed
        .as_ref()
        .ok_or_else(|| BootstrapError::Config("seeding needs a [seed] section".into()))?;
    let relay_settings = need_relay(config)?;
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
        password: seed.password.clone(),
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
