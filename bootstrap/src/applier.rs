//! The applier: copies log windows into the SNAPSHOT store, in order, a batch of whole windows per
//! store transaction, recording the last window applied in the same transaction (so a crash resumes
//! exactly; re-applying a window would change nothing anyway).

use std::sync::Arc;
use std::time::Duration;

use databus_core::Scn;
use databus_filters::FilterSpec;
use databus_http::backoff::{Backoff, BackoffConfig};
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::health::Reporter;
use crate::store::{BootstrapStore, Role, RoleState, StoredEvent};

/// How the applier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplierSettings {
    /// Windows per transaction at most.
    pub max_windows: usize,
    /// Events per transaction at most (a larger window is still applied whole).
    pub max_events: usize,
    /// Sleep when caught up.
    pub idle_poll: Duration,
}

impl Default for ApplierSettings {
    fn default() -> Self {
        ApplierSettings {
            max_windows: 10_000,
            max_events: 50_000,
            idle_poll: Duration::from_millis(50),
        }
    }
}

/// What one step applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStep {
    /// Windows applied.
    pub windows: u64,
    /// Events applied.
    pub events: u64,
    /// The applied SCN after the step.
    pub applied_scn: Option<Scn>,
}

/// Applies one batch of windows (blocking). Returns zero windows when caught up.
pub fn apply_step(
    store: &dyn BootstrapStore,
    settings: &ApplierSettings,
) -> Result<ApplyStep, BootstrapError> {
    let snap = store.snapshot_status()?;
    let log = store.log_status()?;
    let Some(floor) = log.floor_scn else {
        return Ok(ApplyStep::default());
    };
    let applied = match snap.applied_scn {
        Some(a) => a,
        None => {
            // A new snapshot without a seed: it knows the changes after the log's start.
            store.init_base(floor)?;
            store.apply(&[], floor)?;
            floor
        }
    };
    if applied < floor {
        return Err(BootstrapError::Corrupt(format!(
            "the snapshot is at SCN {applied} but the log only holds windows after {floor}; the log was \
             trimmed past the applier: re-seed the bootstrap database"
        )));
    }
    let windows = store.windows(applied, Scn::MAX, settings.max_windows)?;
    let mut take = 0;
    let mut events = 0usize;
    for w in &windows {
        if take > 0 && events + w.events as usize > settings.max_events {
            break;
        }
        take += 1;
        events += w.events as usize;
    }
    let Some(last) = windows[..take].last() else {
        return Ok(ApplyStep {
            applied_scn: Some(applied),
            ..ApplyStep::default()
        });
    };
    let first_seq = windows[0].first_seq;
    let end_seq = last.first_seq + u64::from(last.events);
    let rows = if end_seq > first_seq {
        store.events(
            first_seq,
            end_seq - 1,
            &FilterSpec::all(),
            usize::MAX,
            usize::MAX,
        )?
    } else {
        Vec::new()
    };
    if rows.len() != events {
        return Err(BootstrapError::Corrupt(format!(
            "log windows {}..={} list {events} events but {} are stored",
            windows[0].scn,
            last.scn,
            rows.len()
        )));
    }
    let parsed = rows
        .iter()
        .map(|r| StoredEvent::from_frame(&r.frame))
        .collect::<Result<Vec<_>, _>>()?;
    store.apply(&parsed, last.scn)?;
    Ok(ApplyStep {
        windows: take as u64,
        events: events as u64,
        applied_scn: Some(last.scn),
    })
}

/// Runs the applier until `shutdown`; returns the totals.
pub async fn run_applier(
    store: Arc<dyn BootstrapStore>,
    settings: ApplierSettings,
    shutdown: CancellationToken,
) -> Result<ApplyStep, BootstrapError> {
    let mut reporter = Reporter::new(store.clone(), Role::Applier);
    let result = apply_until_shutdown(&store, settings, &shutdown, &mut reporter).await;
    match &result {
        Ok(_) => reporter.set(RoleState::Stopped, "shut down".into()).await,
        Err(e) => reporter.set(RoleState::Failed, e.to_string()).await,
    }
    result
}

async fn apply_until_shutdown(
    store: &Arc<dyn BootstrapStore>,
    settings: ApplierSettings,
    shutdown: &CancellationToken,
    reporter: &mut Reporter,
) -> Result<ApplyStep, BootstrapError> {
    let mut total = ApplyStep::default();
    let mut backoff = Backoff::new(BackoffConfig::doubling(
        Duration::from_millis(100),
        Duration::from_secs(10),
    ));
    loop {
        if shutdown.is_cancelled() {
            return Ok(total);
        }
        let s = store.clone();
        let step = tokio::task::spawn_blocking(move || apply_step(s.as_ref(), &settings))
            .await
            .map_err(|e| BootstrapError::Storage(format!("applier task failed: {e}")))?;
        match step {
            Ok(step) => {
                backoff.reset();
                total.windows += step.windows;
                total.events += step.events;
                crate::metrics::applied(step.windows, step.events);
                total.applied_scn = step.applied_scn.or(total.applied_scn);
                reporter.running(step.windows == 0).await;
                if step.windows == 0 {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(total),
                        () = tokio::time::sleep(settings.idle_poll) => {}
                    }
                }
            }
            Err(e @ BootstrapError::Storage(_)) => {
                tracing::warn!(error = %e, "applier: storage error; retrying");
                reporter.running(false).await;
                if !backoff.sleep_or(shutdown.cancelled()).await {
                    return Ok(total);
                }
            }
            Err(e) => return Err(e),
        }
    }
}
