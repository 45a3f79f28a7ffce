//! Whether the bootstrap database is kept up to date: each role reports its state
//! ([`Reporter`], into the store's [`RoleStore`](crate::store::RoleStore)), and the server judges the
//! reports ([`assess`]) for `GET /health`, `GET /v1/status`, the status page and `databus status`.
//!
//! | report | problem |
//! |--------|---------|
//! | `failed` or `stopped` | the role does not run: the log (or the snapshot) no longer advances |
//! | `blocked` | the role runs but retries something it cannot fix alone (e.g. a relay gap with no source to fill it from); the message says what to do |
//! | `running`, no heartbeat for longer than `stale_after` | the role's process is gone (killed, crashed) |
//! | `running`, not caught up for longer than `max_lag` | the role is behind (the producer behind the relay, the applier behind the log) |
//!
//! A role that never reported (e.g. a server whose producer has not started yet) is not a problem;
//! its absence shows in the status.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::store::{BootstrapStore, HEARTBEAT, Role, RoleReport, RoleState};

/// When reports count as problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// A role not caught up for longer than this is behind.
    pub max_lag: Duration,
    /// A running role whose report is older than this is not running (its process is gone).
    pub stale_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            max_lag: Duration::from_secs(120),
            stale_after: Duration::from_secs(15),
        }
    }
}

/// One thing wrong, for `/health` and the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The role.
    pub role: Role,
    /// `failed`, `stopped`, `blocked`, `reseeding`, `not_running` or `behind`.
    pub state: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn secs(ms: u64) -> String {
    databus_http::human::duration_ms(ms)
}

/// The problems of `reports` at `now_ms` (empty: healthy).
pub fn assess(reports: &[RoleReport], now_ms: u64, settings: &HealthSettings) -> Vec<Problem> {
    let mut problems = Vec::new();
    for r in reports {
        let name = r.role.name();
        let message = r.message.clone().unwrap_or_default();
        let problem = match r.state {
            RoleState::Failed => Some((
                "failed",
                format!("the {name} stopped: {message}; fix it and start the {name} again"),
            )),
            RoleState::Stopped => Some((
                "stopped",
                format!(
                    "the {name} was shut down; start it again (databus bootstrap {name} or all)"
                ),
            )),
            RoleState::Blocked => Some(("blocked", format!("the {name} cannot go on: {message}"))),
            RoleState::Reseeding
                if now_ms.saturating_sub(r.updated_ms)
                    > settings.stale_after.as_millis() as u64 =>
            {
                Some((
                    "not_running",
                    format!(
                        "the {name} was re-seeding ({message}) but has not reported for {} (killed or crashed?); start it again: the re-seed resumes",
                        secs(now_ms.saturating_sub(r.updated_ms))
                    ),
                ))
            }
            RoleState::Reseeding => Some((
                "reseeding",
                format!(
                    "the {name} is {message}; the server answers from the previous generation meanwhile, which is behind the source"
                ),
            )),
            RoleState::Running => {
                let silent = now_ms.saturating_sub(r.updated_ms);
                let behind = now_ms.saturating_sub(r.caught_up_ms.unwrap_or(r.since_ms));
                if silent > settings.stale_after.as_millis() as u64 {
                    Some((
                        "not_running",
                        format!(
                            "the {name} has not reported for {} (killed or crashed?); start it again (databus bootstrap {name} or all)",
                            secs(silent)
                        ),
                    ))
                } else if behind > settings.max_lag.as_millis() as u64 {
                    let what = match r.role {
                        Role::Producer => "the relay's newest window",
                        Role::Applier => "the log's last window",
                    };
                    Some((
                        "behind",
                        format!(
                            "the {name} has not reached {what} for {} (more than health.max_lag {})",
                            secs(behind),
                            secs(settings.max_lag.as_millis() as u64)
                        ),
                    ))
                } else {
                    None
                }
            }
        };
        if let Some((state, message)) = problem {
            problems.push(Problem {
                role: r.role,
                state,
                message,
            });
        }
    }
    problems
}

/// Writes one role's report: at each state change, and as a heartbeat at most once per
/// [`HEARTBEAT`] while running. A failed write is logged, never fatal (the role's own store
/// calls report storage failures).
#[derive(Debug)]
pub struct Reporter {
    store: Arc<dyn BootstrapStore>,
    report: RoleReport,
    last_write: Option<Instant>,
}

impl Reporter {
    /// A reporter for `role`, running from now.
    pub fn new(store: Arc<dyn BootstrapStore>, role: Role) -> Reporter {
        let now = now_ms();
        Reporter {
            store,
            report: RoleReport {
                role,
                state: RoleState::Running,
                message: None,
                updated_ms: now,
                since_ms: now,
                caught_up_ms: None,
            },
            last_write: None,
        }
    }

    /// Running; `caught_up` when the role has nothing left to do right now.
    pub async fn running(&mut self, caught_up: bool) {
        let changed = self.report.state != RoleState::Running;
        if changed {
            self.enter(RoleState::Running, None);
        }
        if caught_up {
            self.report.caught_up_ms = Some(now_ms());
        }
        if changed || self.last_write.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            self.write().await;
        }
    }

    /// A state other than running, with the message naming the fix (written at once when it changes,
    /// then as a heartbeat).
    pub async fn set(&mut self, state: RoleState, message: String) {
        let changed = self.report.state != state || self.report.message.as_ref() != Some(&message);
        if changed {
            self.enter(state, Some(message));
        }
        if changed || self.last_write.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            self.write().await;
        }
    }

    fn enter(&mut self, state: RoleState, message: Option<String>) {
        self.report.state = state;
        self.report.message = message;
        self.report.since_ms = now_ms();
        self.report.caught_up_ms = None;
    }

    async fn write(&mut self) {
        self.report.updated_ms = now_ms();
        self.last_write = Some(Instant::now());
        let (store, report) = (self.store.clone(), self.report.clone());
        let result = tokio::task::spawn_blocking(move || store.put_role(&report)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(role = self.report.role.name(), error = %e, "cannot record the role's state")
            }
            Err(e) => {
                tracing::warn!(role = self.report.role.name(), error = %e, "cannot record the role's state")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: RoleState, updated_ms: u64, caught_up_ms: Option<u64>) -> RoleReport {
        RoleReport {
            role: Role::Producer,
            state,
            message: Some("relay gap; configure [source]".into()),
            updated_ms,
            since_ms: 0,
            caught_up_ms,
        }
    }

    #[test]
    fn each_state_and_age_is_judged() {
        let s = HealthSettings {
            max_lag: Duration::from_secs(60),
            stale_after: Duration::from_secs(10),
        };
        let now = 1_000_000;
        let judge = |r: RoleReport| {
            assess(&[r], now, &s)
                .into_iter()
                .map(|p| p.state)
                .collect::<Vec<_>>()
        };
        assert!(judge(report(RoleState::Running, now - 500, Some(now - 1000))).is_empty());
        assert_eq!(
            judge(report(RoleState::Running, now - 11_000, Some(now - 11_000))),
            ["not_running"]
        );
        assert_eq!(
            judge(report(RoleState::Running, now, Some(now - 61_000))),
            ["behind"]
        );
        // Never caught up since it started (since_ms = 0): behind.
        assert_eq!(judge(report(RoleState::Running, now, None)), ["behind"]);
        assert_eq!(judge(report(RoleState::Blocked, now, None)), ["blocked"]);
        assert_eq!(judge(report(RoleState::Failed, now, None)), ["failed"]);
        assert_eq!(judge(report(RoleState::Stopped, now, None)), ["stopped"]);
        let p = assess(&[report(RoleState::Blocked, now, None)], now, &s);
        assert!(p[0].message.contains("configure [source]"), "{p:?}");
        assert!(assess(&[], now, &s).is_empty());
    }
}
