//! Client configuration: serde structs with named defaults and human units, validated by
//! [`ClientConfig::validate`].

use std::path::PathBuf;
use std::time::Duration;

use databus_filters::FilterSpec;
use databus_http::{ClientOptions, Token};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::stall::StallConfig;
use databus_http::backoff::BackoffConfig;

/// How a client consumes. Every field has a default; only `relays` is required in practice.
///
/// ```
/// use databus_client::ClientConfig;
///
/// let config: ClientConfig = serde_json::from_value(serde_json::json!({
///     "relays": ["http://127.0.0.1:11000", "http://127.0.0.1:11001"],
///     "workers": 4,
///     "partition": {"instance": 1, "of": 3},
///     "long_poll": "10s",
/// })).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Relay base URLs (`http://host:port` or `https://host:port`), tried in order; the client fails
    /// over to the next on an error or timeout.
    pub relays: Vec<String>,
    /// Bootstrap server base URLs. When empty, falling behind every relay stops the client with
    /// [`ClientError::ScnNotFound`].
    pub bootstrap_servers: Vec<String>,
    /// Which sources and keys to receive (server-side filter); default every event.
    pub filter: FilterSpec,
    /// Partitioned consumption: this instance receives MOD(`of`) bucket `instance` of every key.
    pub partition: Option<PartitionMember>,
    /// The relay buffer to read, when the relay has several and `filter` names no source.
    pub buffer: Option<String>,
    /// Where a consumer without a stored checkpoint starts.
    pub start: StartPosition,
    /// Bytes of fetched, not yet consumed windows held in memory; the fetcher waits beyond this
    /// (a window larger than this is still fetched, alone). Also the largest response accepted: a
    /// single event larger than this stops the client with a protocol error.
    pub buffer_bytes: usize,
    /// `max_bytes` of each stream request.
    pub max_response_bytes: usize,
    /// The largest window (source transaction) held while its end has not arrived; a server sending
    /// more without closing it stops the client with a protocol error instead of exhausting memory.
    /// Default 4 GiB; raise it for larger transactions.
    pub max_window_bytes: usize,
    /// Long-poll wait of a stream request when the client is caught up.
    #[serde(with = "humantime_serde")]
    pub long_poll: Duration,
    /// How long a request may take beyond its long-poll wait before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Delays between failed requests (failover to the next server happens at once, then waits).
    pub fetch_backoff: BackoffConfig,
    /// Give up after this many consecutive failed requests (`None`: retry until shut down).
    pub max_fetch_failures: Option<u32>,
    /// Waiting while no relay and no bootstrap server can serve the checkpoint yet: delays between
    /// rounds, how often it is logged, and when to give up (default: wait until shut down).
    pub stall: StallConfig,
    /// Parallel dispatch: events are routed to this many workers by the bucket of their key.
    pub workers: usize,
    /// Retries of a failed window (a callback returning retry, or panicking).
    pub retry: RetryConfig,
    /// Persist the checkpoint after every this many windows (1: after every window).
    pub checkpoint_every_windows: u32,
    /// With a filter (`filter` or `partition`), ask relays for one window per run of windows that hold
    /// nothing for this client (`empty_windows=coalesce`, docs/protocol.md): such a run is delivered as
    /// its last window, with no events, and the checkpoint moves past the whole run. Default `true`;
    /// set `false` to get every window (heartbeats included) or to read from relays older than the
    /// parameter, which refuse it. Without a filter every window is delivered either way.
    pub coalesce_empty_windows: bool,
    /// PEM file of the CA (or the self-signed certificate) of `https` relays and bootstrap servers;
    /// default the web PKI roots.
    pub ca_cert: Option<PathBuf>,
    /// Environment variable holding the bearer token sent to every server. At most one of
    /// `token_env`, `token_file` and [`token`](Self::token).
    pub token_env: Option<String>,
    /// File holding the bearer token sent to every server.
    pub token_file: Option<PathBuf>,
    /// The bearer token, set in code (never serialized; prints as `***`).
    #[serde(skip)]
    pub token: Option<Token>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            relays: Vec::new(),
            bootstrap_servers: Vec::new(),
            filter: FilterSpec::all(),
            partition: None,
            buffer: None,
            start: StartPosition::Beginning,
            buffer_bytes: 16 << 20,
            max_response_bytes: 1 << 20,
            max_window_bytes: 4 << 30,
            long_poll: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            fetch_backoff: BackoffConfig::default(),
            max_fetch_failures: None,
            stall: StallConfig::default(),
            workers: 1,
            retry: RetryConfig::default(),
            checkpoint_every_windows: 1,
            coalesce_empty_windows: true,
            ca_cert: None,
            token_env: None,
            token_file: None,
            token: None,
        }
    }
}

/// Member `instance` of a group of `of` consumers (instances `0..of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionMember {
    /// This instance, `0..of`.
    pub instance: u32,
    /// The group size.
    pub of: u32,
}

/// Where a consumer with no stored checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// From the oldest event the relay holds (a relay that evicted the start answers `scn_not_found`,
    /// which leads to a bootstrap when one is configured).
    #[default]
    Beginning,
    /// From the oldest window the relay still holds, accepting that the history before it is missing
    /// (Databus' "flexible checkpoint"): for consumers that only need recent changes and have no
    /// bootstrap server. Only the start is flexible: once consuming, falling off the relay is still an
    /// error (or a bootstrap), never a silent skip.
    Oldest,
    /// From the relay's newest window: only changes from now on.
    Now,
    /// From a consistent snapshot of the bootstrap server, then the relay.
    Snapshot,
}

/// What happens when a window still fails after every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Stop consumption with [`ClientError::RetriesExhausted`]; the checkpoint stays before the window.
    #[default]
    Stop,
    /// Skip the failed events of the window, record them (see
    /// [`RunSummary::skipped`](crate::RunSummary::skipped) and the `on_error` callback) and go on.
    SkipAndRecord,
}

/// Retries of failed windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delays between attempts.
    pub backoff: BackoffConfig,
    /// What to do when retries are exhausted.
    pub policy: FailurePolicy,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            backoff: BackoffConfig {
                initial: Duration::from_millis(10),
                max: Duration::from_secs(2),
                multiplier: 2.0,
            },
            policy: FailurePolicy::Stop,
        }
    }
}

impl ClientConfig {
    /// A configuration reading from these relays, defaults otherwise.
    pub fn with_relays<S: Into<String>>(relays: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            relays: relays.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    /// Checks the fields against each other; errors name the field and the fix.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: String| Err(ClientError::Config(m));
        if self.relays.is_empty() {
            return bad("relays is empty; give at least one relay URL".into());
        }
        let options = self.client_options()?;
        for url in self.relays.iter().chain(&self.bootstrap_servers) {
            crate::http::HttpServer::new(url, &options)?;
        }
        if self.workers == 0 || self.workers > 1024 {
            return bad(format!("workers is {}; use 1..=1024", self.workers));
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > 16 << 20 {
            return bad(format!(
                "max_response_bytes is {}; use 1..=16777216",
                self.max_response_bytes
            ));
        }
        if self.buffer_bytes < self.max_response_bytes {
            return bad(format!(
                "buffer_bytes ({}) is smaller than max_response_bytes ({}); raise buffer_bytes",
                self.buffer_bytes, self.max_response_bytes
            ));
        }
        if self.long_poll > Duration::from_secs(30) {
            return bad(format!(
                "long_poll is {:?}; the relay allows at most 30s",
                self.long_poll
            ));
        }
        if self.checkpoint_every_windows == 0 {
            return bad("checkpoint_every_windows is 0; use at least 1".into());
        }
        if let Some(p) = self.partition {
            if p.of == 0 || p.instance >= p.of {
                return bad(format!(
                    "partition instance {} of {} is impossible; use 0 <= instance < of",
                    p.instance, p.of
                ));
            }
            if !self.filter.partition().is_empty() || !self.filter.per_source().is_empty() {
                return bad(
                    "partition and a key filter in filter are both set; use one of them".into(),
                );
            }
        }
        if self.start == StartPosition::Snapshot && self.bootstrap_servers.is_empty() {
            return bad("start is snapshot but bootstrap_servers is empty".into());
        }
        Ok(())
    }

    /// The CA file and the token (read from `token_env` or `token_file` now) the servers are asked with.
    pub fn client_options(&self) -> Result<ClientOptions, ClientError> {
        let from_config = Token::read_one(
            "client",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
            &|name| std::env::var(name).ok(),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        let token = match (&self.token, from_config) {
            (Some(_), Some(_)) => {
                return Err(ClientError::Config(
                    "token and token_env/token_file are both set; keep one".into(),
                ));
            }
            (Some(t), None) => Some(t.clone()),
            (None, t) => t,
        };
        Ok(ClientOptions {
            ca_cert: self.ca_cert.clone(),
            token,
        })
    }

    /// The filter (and, for relays, buffer) query parameters of stream requests, without a leading
    /// `&`.
    pub(crate) fn filter_query(&self, with_buffer: bool) -> String {
        let mut parts = Vec::new();
        let spec = self.filter.to_query();
        if !spec.is_empty() {
            parts.push(spec);
        }
        if let Some(p) = self.partition {
            parts.push(format!("partition=mod:{}:{}", p.of, p.instance));
        }
        if let Some(buffer) = self.buffer.as_ref().filter(|_| with_buffer) {
            let enc: String = form_urlencoded::byte_serialize(buffer.as_bytes()).collect();
            parts.push(format!("buffer={enc}"));
        }
        parts.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_with_a_relay_and_errors_name_the_field() {
        let mut c = ClientConfig::with_relays(["http://127.0.0.1:1"]);
        c.validate().unwrap();
        c.partition = Some(PartitionMember { instance: 3, of: 3 });
        assert!(c.validate().unwrap_err().to_string().contains("partition"));
        c.partition = Some(PartitionMember { instance: 2, of: 3 });
        c.validate().unwrap();
        assert_eq!(c.filter_query(true), "partition=mod:3:2");
        c.workers = 0;
        assert!(c.validate().unwrap_err().to_string().contains("workers"));
        let err = ClientConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("relays"), "{err}");
        let err = serde_json::from_str::<ClientConfig>(r#"{"relay":[]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
