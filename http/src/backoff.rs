//! Exponential backoff with jitter: the one retry schedule of every databus process (client library,
//! relay ingest and chaining, the bootstrap roles, `databus tail`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Backoff settings: delays grow from `initial` by `multiplier` up to `max`; each delay is drawn
/// uniformly from `[delay / 2, delay]` so that many clients do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// The first delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The largest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Growth factor per failure (at least 1).
    pub multiplier: f64,
}

impl BackoffConfig {
    /// Delays from `initial` doubling up to `max`.
    pub fn doubling(initial: Duration, max: Duration) -> Self {
        BackoffConfig {
            initial,
            max,
            multiplier: 2.0,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

/// The state of one backoff sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
}

impl Backoff {
    /// A sequence starting at `config.initial`.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            next: config.initial,
        }
    }

    /// The next delay (jittered), growing the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.config.max);
        let grown = base.as_secs_f64() * self.config.multiplier.max(1.0);
        self.next = Duration::from_secs_f64(grown.min(self.config.max.as_secs_f64()));
        let half = base / 2;
        let jitter = rand::random_range(0.0..=1.0f64);
        half + Duration::from_secs_f64(half.as_secs_f64() * jitter)
    }

    /// Waits the next delay, or returns `false` at once when `stop` completes first.
    pub async fn sleep_or(&mut self, stop: impl std::future::Future<Output = ()>) -> bool {
        self.sleep_at_least_or(Duration::ZERO, stop).await
    }

    /// Waits the next delay but at least `floor` (a server's `Retry-After`), or returns `false` at
    /// once when `stop` completes first.
    pub async fn sleep_at_least_or(
        &mut self,
        floor: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        let delay = self.next_delay().max(floor);
        tokio::select! {
            () = stop => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.next = self.config.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            multiplier: 2.0,
        });
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400), (200, 400)];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..={hi} ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
