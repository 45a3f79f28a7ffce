//! Waiting when no server can serve the checkpoint yet, instead of spinning.
//!
//! A consumer is **stalled** when every relay answers `410 scn_not_found` and the bootstrap server
//! cannot take it further either:
//!
//! | what the servers answer | why | stall round |
//! |-------------------------|-----|-------------|
//! | relay `410` at SCN `s`, bootstrap delta since `s` ends at `s` (nothing new), relay `410` at `s` again | the bootstrap log ends before what the relay holds (its producer is behind, stopped or filling a gap) | the second `410` at the same (or a lower) SCN; after its delay the client bootstraps again only once the bootstrap server's `/v1/status` shows windows after `s` (else it asks the relay again), so phase callbacks are not repeated per round |
//! | bootstrap `503 not_yet_at_scn` | the bootstrap database has not reached the checkpoint yet (or holds nothing yet) | every such answer |
//!
//! Each stall round waits a delay of [`StallConfig::backoff`] (exponential, jittered: the shared
//! [`Backoff`]) before the client asks again; any progress (a window delivered, a relay answer with
//! data, a relay `410` further on) ends the stall and resets the delay. The first round and then at
//! most one round per [`StallConfig::log_every`] are logged at `warn` with the reason and what to
//! check; the rounds are counted in [`ClientStats`](crate::ClientStats) (`stalled_rounds`, `stalled`)
//! and in the `metrics` facade (`databus_client_stalled_rounds_total`, `databus_client_stalled`).
//!
//! Policy: by default the client waits until shut down (a bootstrap server repairs itself: its
//! producer fills the gap and the consumer goes on). With [`StallConfig::max_wait`] set, a stall that
//! lasts longer ends `run` (and the pull stream) with [`ClientError::Stalled`].

use std::time::{Duration, Instant};

use databus_core::Scn;
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::stats::ClientStats;
use databus_http::backoff::{Backoff, BackoffConfig};

/// What the client does while no server can serve its checkpoint (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// Delays between stall rounds (default 200 ms doubling to 30 s, jittered).
    pub backoff: BackoffConfig,
    /// End consumption with [`ClientError::Stalled`] once stalled this long (`None`, the default:
    /// wait until shut down).
    #[serde(with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// At most one `warn` line per this interval while stalled (default 30 s).
    #[serde(with = "humantime_serde")]
    pub log_every: Duration,
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            backoff: BackoffConfig {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
                multiplier: 2.0,
            },
            max_wait: None,
            log_every: Duration::from_secs(30),
        }
    }
}

/// The stall state of one fetcher.
#[derive(Debug)]
pub(crate) struct Stall {
    config: StallConfig,
    backoff: Backoff,
    /// When the current stall began (`None`: not stalled).
    since: Option<Instant>,
    /// Rounds of the current stall.
    rounds: u64,
    last_log: Option<Instant>,
    /// The SCN of the last relay `410` with no progress since.
    gone_at: Option<Scn>,
}

impl Stall {
    pub(crate) fn new(config: StallConfig) -> Stall {
        Stall {
            config,
            backoff: Backoff::new(config.backoff),
            since: None,
            rounds: 0,
            last_log: None,
            gone_at: None,
        }
    }

    /// Whether a stall is in progress.
    #[cfg(test)]
    pub(crate) fn is_stalled(&self) -> bool {
        self.since.is_some()
    }

    /// Something moved: ends a stall in progress (logging how long it lasted).
    pub(crate) fn progress(&mut self, stats: &ClientStats) {
        self.gone_at = None;
        if let Some(since) = self.since.take() {
            tracing::info!(
                rounds = self.rounds,
                waited = ?since.elapsed(),
                "a server serves the checkpoint again; consumption goes on"
            );
            stats.set_stalled(false);
            metrics::gauge!("databus_client_stalled").set(0.0);
            self.rounds = 0;
            self.last_log = None;
            self.backoff.reset();
        }
    }

    /// Every relay answered `410` at `scn`: whether that is a stall round (a `410` at the same or a
    /// lower SCN as the last one, with no progress in between). Arms the check for the next `410`.
    pub(crate) fn relay_gone(&mut self, scn: Scn, stats: &ClientStats) -> bool {
        match self.gone_at {
            Some(last) if scn <= last => true,
            _ => {
                if self.gone_at.is_some() {
                    self.progress(stats);
                }
                self.gone_at = Some(scn);
                false
            }
        }
    }

    /// A stall round at checkpoint `scn` for `reason` (which names what to check): the delay to wait
    /// before asking again, or [`ClientError::Stalled`] once stalled longer than `max_wait`.
    pub(crate) fn round(
        &mut self,
        scn: Scn,
        reason: &str,
        stats: &ClientStats,
    ) -> Result<Duration, ClientError> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.rounds += 1;
        stats.on_stall_round();
        stats.set_stalled(true);
        metrics::counter!("databus_client_stalled_rounds_total").increment(1);
        metrics::gauge!("databus_client_stalled").set(1.0);
        let waited = now.duration_since(since);
        if self.config.max_wait.is_some_and(|max| waited >= max) {
            return Err(ClientError::Stalled {
                scn,
                waited,
                reason: reason.to_owned(),
            });
        }
        let delay = self.backoff.next_delay();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= self.config.log_every)
        {
            self.last_log = Some(now);
            tracing::warn!(
                %scn,
                rounds = self.rounds,
                ?waited,
                next_try_in = ?delay,
                "no server can serve the checkpoint yet: {reason}"
            );
        } else {
            tracing::debug!(%scn, rounds = self.rounds, ?delay, "still stalled: {reason}");
        }
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_wait: Option<Duration>) -> StallConfig {
        StallConfig {
            backoff: BackoffConfig {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                multiplier: 2.0,
            },
            max_wait,
            log_every: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_second_gone_at_the_same_scn_is_a_stall_and_moving_on_is_not() {
        let stats = ClientStats::default();
        let mut stall = Stall::new(config(None));
        assert!(!stall.relay_gone(Scn::new(10), &stats));
        assert!(stall.relay_gone(Scn::new(10), &stats));
        stall.round(Scn::new(10), "test", &stats).unwrap();
        assert!(stall.is_stalled() && stats.stalled());
        assert_eq!(stats.stalled_rounds(), 1);
        // The position moved: not a stall round, and the stall ended.
        assert!(!stall.relay_gone(Scn::new(12), &stats));
        assert!(!stall.is_stalled() && !stats.stalled());
        assert!(stall.relay_gone(Scn::new(12), &stats));
        stall.progress(&stats);
        assert!(!stall.relay_gone(Scn::new(12), &stats));
    }

    #[test]
    fn parses_with_human_units_and_defaults() {
        let c: StallConfig =
            serde_json::from_value(serde_json::json!({"max_wait": "1h", "backoff": {"max": "5s"}}))
                .unwrap();
        assert_eq!(c.max_wait, Some(Duration::from_secs(3600)));
        assert_eq!(c.backoff.max, Duration::from_secs(5));
        assert_eq!(c.log_every, StallConfig::default().log_every);
        assert_eq!(
            serde_json::from_value::<StallConfig>(serde_json::json!({})).unwrap(),
            StallConfig::default()
        );
        assert!(serde_json::from_value::<StallConfig>(serde_json::json!({"max": "1s"})).is_err());
    }

    #[test]
    fn delays_grow_and_max_wait_ends_with_a_typed_error() {
        let stats = ClientStats::default();
        let mut stall = Stall::new(config(Some(Duration::ZERO)));
        let err = stall.round(Scn::new(7), "why", &stats).unwrap_err();
        assert!(
            matches!(err, ClientError::Stalled { scn, .. } if scn == Scn::new(7)),
            "{err}"
        );
        let mut stall = Stall::new(config(None));
        let delays: Vec<Duration> = (0..4)
            .map(|_| stall.round(Scn::new(7), "why", &stats).unwrap())
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(4)));
        assert!(delays[3] >= Duration::from_millis(2), "{delays:?}");
    }
}
