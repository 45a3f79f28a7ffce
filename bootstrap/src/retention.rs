//! The retention cleaner: trims the log by age and by size, never past what is still needed.
//!
//! The trim point is the larger of the age point (the newest window committed before `now - max_age`)
//! and the size point (the newest window such that the windows after it fit in `max_bytes`), capped
//! by the applier's position (the applier still needs what it has not applied) and by the lowest pinned
//! start SCN of the bootstraps in progress (their catch-up replays the windows after it).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use databus_core::Scn;
use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::store::{BootstrapStore, TrimOutcome};

/// Retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Windows committed longer ago than this go (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// The log is kept under this many bytes of frames (`None`: no size limit).
    pub max_bytes: Option<u64>,
    /// How often the cleaner runs.
    pub interval: Duration,
    /// Windows deleted per transaction (short transactions keep writers flowing).
    pub batch_windows: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            max_age: Some(Duration::from_secs(14 * 24 * 3600)),
            max_bytes: None,
            interval: Duration::from_secs(60),
            batch_windows: 10_000,
        }
    }
}

/// One cleaning pass (blocking) at `now_ns` (Unix ns).
pub fn clean_once(
    store: &dyn BootstrapStore,
    settings: &RetentionSettings,
    now_ns: u64,
) -> Result<TrimOutcome, BootstrapError> {
    let by_age = match settings.max_age {
        Some(age) => store.last_window_before(now_ns.saturating_sub(age.as_nanos() as u64))?,
        None => None,
    };
    let by_size = match settings.max_bytes {
        Some(max) => store.trim_point_for_bytes(max)?,
        None => None,
    };
    let Some(mut point) = by_age.max(by_size) else {
        return Ok(TrimOutcome::default());
    };
    let applied = store.snapshot_status()?.applied_scn.unwrap_or(Scn::ZERO);
    point = point.min(applied);
    if let Some(pin) = store.min_pin(now_ns / 1_000_000)? {
        point = point.min(pin);
    }
    let mut total = TrimOutcome::default();
    loop {
        let out = store.trim(point, settings.batch_windows.max(1))?;
        total.windows += out.windows;
        total.events += out.events;
        if out.windows == 0 {
            return Ok(total);
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the cleaner every `interval` until `shutdown`.
pub async fn run_cleaner(
    store: Arc<dyn BootstrapStore>,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) -> Result<(), BootstrapError> {
    loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || clean_once(s.as_ref(), &settings, now_ns())).await
        {
            Ok(Ok(out)) if out.windows > 0 => {
                tracing::info!(
                    windows = out.windows,
                    events = out.events,
                    "retention: log trimmed"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retention pass failed; retrying next interval")
            }
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}
