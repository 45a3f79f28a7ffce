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
                crate::metrics::trimmed(out.windows, out.events);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LogStore, LogWindow, MemoryStore, SnapshotStore};

    fn store_with_windows(n: u64) -> MemoryStore {
        let store = MemoryStore::new();
        store.start_log(Scn::ZERO).unwrap();
        let windows: Vec<LogWindow> = (1..=n)
            .map(|s| LogWindow {
                scn: Scn::new(s),
                timestamp_ns: s * 1_000_000_000, // window s committed at second s
                events: Vec::new(),
            })
            .collect();
        store.append(&windows).unwrap();
        store
    }

    #[test]
    fn age_retention_stops_at_the_applier_and_at_pins() {
        let store = store_with_windows(100);
        let settings = RetentionSettings {
            max_age: Some(Duration::from_secs(30)),
            max_bytes: None,
            interval: Duration::from_secs(1),
            batch_windows: 7,
        };
        let now = 100 * 1_000_000_000;
        // Nothing applied yet: nothing may go.
        assert_eq!(clean_once(&store, &settings, now).unwrap().windows, 0);
        store.apply(&[], Scn::new(50)).unwrap();
        store.pin(Scn::new(40), 200_000).unwrap(); // expires at second 200
        let out = clean_once(&store, &settings, now).unwrap();
        assert_eq!(out.windows, 40, "the pin at 40 wins over the age point 70");
        assert_eq!(store.log_status().unwrap().floor_scn, Some(Scn::new(40)));
        store.min_pin(300_000).unwrap(); // the pin expires
        let out = clean_once(&store, &settings, now).unwrap();
        assert_eq!(out.windows, 10, "then the applier at 50 wins");
        store.apply(&[], Scn::new(100)).unwrap();
        let out = clean_once(&store, &settings, now).unwrap();
        assert_eq!(
            out.windows, 20,
            "then the age: windows committed up to second 70"
        );
        assert_eq!(store.log_status().unwrap().first_scn, Some(Scn::new(71)));
    }
}
