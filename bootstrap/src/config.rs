//! The `bootstrap.toml` file: parsed with serde (unknown fields refused, human units), then validated
//! into the runtime settings of each role.
//!
//! ```toml
//! db_path = "/var/lib/databus/bootstrap/shop.sqlite"   # one SQLite file per bootstrap database
//!
//! [relay]                      # the producer's relay
//! url = "http://127.0.0.1:7000"    # or https://..., with ca_cert for a self-signed certificate
//! buffer = "shop"              # optional when the relay has one buffer
//! max_bytes = "4MiB"
//! wait = "500ms"
//! # token_env = "DATABUS_RELAY_TOKEN"   # bearer token sent to the relay (or token_file)
//!
//! [http]                       # the server
//! listen = "127.0.0.1:7100"
//! log_only_max_events = 100000
//! pin_ttl = "1h"
//! # tls = { cert = "/etc/databus/bootstrap.crt", key = "/etc/databus/bootstrap.key" }
//! # auth = { tokens_file = "/etc/databus/bootstrap.tokens" }
//!
//! [applier]
//! max_windows = 10000
//! max_events = 50000
//!
//! [retention]
//! max_age = "14d"
//! max_bytes = "10GiB"
//! interval = "1m"
//!
//! [seed]                       # databus bootstrap seed
//! url = "mysql://seed@127.0.0.1:3306/"
//! password_env = "SEED_PASSWORD"   # or password_file; keeps the password out of this file
//! chunk_rows = 10000
//! auto_reseed = true           # re-seed into a new generation when the log cannot be continued
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use databus_http::server::config::serialize_size;
use databus_http::server::{HttpServerConfig, ServerDefaults, ServerSecurity};
use databus_http::{ClientOptions, Token};
use serde::{Deserialize, Serialize};

use crate::BootstrapError;
use crate::applier::ApplierSettings;
use crate::producer::ProducerSettings;
use crate::retention::RetentionSettings;
use crate::serve::ServeSettings;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// The bootstrap database file (created if missing).
    pub db_path: PathBuf,
    /// The relay the producer copies (required for the producer and the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySection>,
    /// The HTTP server (the same section as the relay's).
    #[serde(default)]
    pub http: HttpSection,
    /// How bootstrap requests are answered: log-only deltas, retention pins.
    #[serde(default)]
    pub serve: ServeSection,
    /// The applier.
    #[serde(default)]
    pub applier: ApplierSection,
    /// Log retention.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Seeding from the source database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSection>,
    /// When `/health` reports the roles as not ok.
    #[serde(default)]
    pub health: HealthSection,
    /// How the bootstrap database is written.
    #[serde(default)]
    pub store: StoreSection,
    /// The source database the producer fills relay gaps from: the relay's `[[sources]]` entry for
    /// this buffer (same fields, parsed and validated by the relay's code), with its own `server_id`.
    /// Optional: without it a producer that fell off the relay is blocked until re-seeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<databus_relay::config::SourceConfig>,
}

/// `[store]`: how the bootstrap database is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite's `synchronous`: `"normal"` (default; a commit survives a crash of the process, the last
    /// ones may be lost on a power loss, and the log re-copies them from the relay) or `"full"` (every
    /// commit survives a power loss, at the cost of an fsync per commit).
    #[serde(default)]
    pub synchronous: Synchronous,
}

/// SQLite's `synchronous` setting of the bootstrap database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// `NORMAL`: durable across process crashes.
    #[default]
    Normal,
    /// `FULL`: durable across power loss.
    Full,
}

/// `[health]`: when `/health` answers `503` (see [`crate::health`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// A producer not at the relay's newest window (an applier not at the log's last) for longer than
    /// this is behind.
    #[serde(default = "default_max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    /// A running role that has not reported for this long is not running (killed, crashed).
    #[serde(default = "default_stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
}

fn default_max_lag() -> Duration {
    crate::health::HealthSettings::default().max_lag
}
fn default_stale_after() -> Duration {
    crate::health::HealthSettings::default().stale_after
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            max_lag: default_max_lag(),
            stale_after: default_stale_after(),
        }
    }
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// `http://host:port` of the relay.
    pub url: String,
    /// The relay buffer to copy; optional when the relay has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<String>,
    /// Bytes per relay response.
    #[serde(default = "default_relay_bytes", serialize_with = "serialize_size")]
    pub max_bytes: ByteSize,
    /// Long-poll wait per request.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// PEM file of the CA (or self-signed certificate) of an `https` relay; default the web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Environment variable holding the bearer token sent to the relay. At most one of `token_env`
    /// and `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the bearer token sent to the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

fn default_relay_bytes() -> ByteSize {
    ByteSize::mib(4)
}
fn default_wait() -> Duration {
    Duration::from_millis(500)
}

/// The bootstrap server's defaults of the shared `[http]` section.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapHttp;

impl ServerDefaults for BootstrapHttp {
    const PORT: u16 = 7100;
    // Each `stream` request holds a SQLite reader (and its page cache) while it runs.
    const MAX_CONCURRENT_STREAMS: usize = 64;
}

/// `[http]`: the section the relay has too ([`HttpServerConfig`]).
pub type HttpSection = HttpServerConfig<BootstrapHttp>;

/// `[serve]`: how bootstrap requests are answered, and what they may hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Deltas leaving at most this many log events are served from the log alone. Default 100000.
    #[serde(default = "default_log_only")]
    pub log_only_max_events: u64,
    /// How long a bootstrap's pin on the log lasts after its last request. Default 1 h.
    #[serde(default = "default_pin_ttl", with = "humantime_serde")]
    pub pin_ttl: Duration,
    /// How long a pin holds retention at most after the bootstrap's first request, however often it
    /// is refreshed (a client that keeps asking cannot stop trimming for longer). Default 24 h; raise
    /// it above the longest snapshot plus catch-up.
    #[serde(default = "default_pin_max_age", with = "humantime_serde")]
    pub pin_max_age: Duration,
    /// The most bootstraps in progress (retention pins, one per start SCN); a bootstrap that would add
    /// one more gets `503 overloaded`. Default 1000.
    #[serde(default = "default_max_pins")]
    pub max_pins: usize,
}

fn default_log_only() -> u64 {
    100_000
}
fn default_max_pins() -> usize {
    1000
}
fn default_pin_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_pin_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for ServeSection {
    fn default() -> Self {
        ServeSection {
            log_only_max_events: default_log_only(),
            pin_ttl: default_pin_ttl(),
            pin_max_age: default_pin_max_age(),
            max_pins: default_max_pins(),
        }
    }
}

/// The settings that moved from `[http]` to `[serve]` when both servers came to share `[http]`.
const MOVED_TO_SERVE: [&str; 4] = ["log_only_max_events", "pin_ttl", "pin_max_age", "max_pins"];

/// `[applier]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplierSection {
    /// Windows per transaction at most.
    #[serde(default = "default_max_windows")]
    pub max_windows: usize,
    /// Events per transaction at most.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Sleep when caught up.
    #[serde(default = "default_idle_poll", with = "humantime_serde")]
    pub idle_poll: Duration,
}

fn default_max_windows() -> usize {
    10_000
}
fn default_max_events() -> usize {
    50_000
}
fn default_idle_poll() -> Duration {
    Duration::from_millis(50)
}

impl Default for ApplierSection {
    fn default() -> Self {
        ApplierSection {
            max_windows: default_max_windows(),
            max_events: default_max_events(),
            idle_poll: default_idle_poll(),
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Windows committed longer ago than this are trimmed.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// The log is kept under this size.
    #[serde(
        default,
        serialize_with = "serialize_opt_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<ByteSize>,
    /// How often the cleaner runs.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_max_age() -> Option<Duration> {
    Some(Duration::from_secs(14 * 24 * 3600))
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            max_age: default_max_age(),
            max_bytes: None,
            interval: default_interval(),
        }
    }
}

/// `[seed]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSection {
    /// The source: `mysql://user@host:port/` (MariaDB; a user with SELECT on the captured tables) or
    /// `postgres://user@host:port/database[?slot=databus&publication=databus]` (PostgreSQL: the
    /// relay's slot and publication, which must exist; a user with `REPLICATION` and SELECT). A
    /// MariaDB password may be written in the URL, but `password_env` or `password_file` keep it out
    /// of the file (a PostgreSQL URL must not hold one).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Environment variable holding the password of `url`'s user. At most one of `password_env`
    /// and `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding that password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Rows per chunk.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// When the producer cannot continue the log (the relay evicted what follows it and `[source]`
    /// is not set or its binlog is purged too), re-seed into a new store generation by itself and
    /// switch to it once complete (`false`: report `blocked` and wait for an operator).
    #[serde(default = "default_true")]
    pub auto_reseed: bool,
    /// The password read from `password_env` / `password_file` at validation: handed to the driver
    /// as a password, never put into `url`, never serialized, never shown.
    #[serde(skip)]
    pub password: Option<databus_connectors::Secret>,
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for SeedSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSection")
            .field("url", &redact_password(&self.url))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("chunk_rows", &self.chunk_rows)
            .field("auto_reseed", &self.auto_reseed)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

pub use databus_http::redact_password;

impl SeedSection {
    /// This section with the password of `password_env` / `password_file` put into `url`
    /// (percent-encoded); errors name the field and never show the password.
    fn resolved(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SeedSection, BootstrapError> {
        let bad = |m: String| BootstrapError::Config(m);
        let password = match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "seed: both password_env and password_file are set; keep one".into(),
                ));
            }
            (Some(var), None) => env(var).ok_or_else(|| {
                bad(format!(
                    "seed.password_env: environment variable {var} is not set; export it or use password_file"
                ))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    bad(format!(
                        "seed.password_file: cannot read {}: {e}",
                        path.display()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => return Ok(self.clone()),
        };
        let (_, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| {
                bad("seed.url is not of the form mysql://user@host:port/ or postgres://user@host:port/database".into())
            })?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let at = rest[..end]
            .rfind('@')
            .ok_or_else(|| {
                bad("seed.url names no user; use mysql://user@host:port/ or postgres://user@host:port/database".into())
            })?;
        let user = &rest[..at];
        if user.contains(':') {
            return Err(bad(
                "seed.url already contains a password; remove it and keep password_env or password_file"
                    .into(),
            ));
        }
        Ok(SeedSection {
            password: Some(databus_connectors::Secret::new(password)),
            ..self.clone()
        })
    }
}

fn default_chunk_rows() -> usize {
    10_000
}

/// The settings of every role, validated.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The database file.
    pub db_path: PathBuf,
    /// The producer (if `[relay]` is set).
    pub producer: Option<ProducerSettings>,
    /// The server's listen address.
    pub listen: SocketAddr,
    /// The server's TLS and bearer-token authentication (certificate, key and tokens loaded).
    pub security: ServerSecurity,
    /// The server.
    pub serve: ServeSettings,
    /// The applier.
    pub applier: ApplierSettings,
    /// The cleaner.
    pub retention: RetentionSettings,
    /// The seed (if `[seed]` is set).
    pub seed: Option<SeedSection>,
    /// How the database is opened.
    pub store: crate::store::SqliteOptions,
}

fn bytes(field: &str, b: ByteSize) -> Result<usize, BootstrapError> {
    usize::try_from(b.as_u64())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| BootstrapError::Config(format!("{field}: {b} is out of range")))
}

impl BootstrapConfig {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, BootstrapError> {
        if let Ok(file) = text.parse::<toml::Table>()
            && let Some(toml::Value::Table(http)) = file.get("http")
            && let Some(key) = MOVED_TO_SERVE.iter().find(|k| http.contains_key(**k))
        {
            return Err(BootstrapError::Config(format!(
                "[http] {key} has moved to [serve] ([http] is now the section the relay has too): \
                 write it under [serve]"
            )));
        }
        toml::from_str(text).map_err(|e| BootstrapError::Config(e.to_string()))
    }

    /// `[source]` validated by the relay's configuration code (a database source).
    fn gap_source(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::gap::GapSource>, BootstrapError> {
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let relay = databus_relay::config::RelayConfig {
            state_dir: PathBuf::from("."),
            http: Default::default(),
            sources: vec![source.clone()],
        };
        let mut validated = relay
            .validate_with_env(env)
            .map_err(|e| BootstrapError::Config(format!("[source]: {e}")))?;
        let source = validated.sources.remove(0);
        if !matches!(source.origin, databus_relay::config::Origin::Connector(_)) {
            return Err(BootstrapError::Config(
                "[source]: give the database ([source.connector]), not upstream".into(),
            ));
        }
        Ok(Some(crate::gap::GapSource { source }))
    }

    /// Checks the values and builds the runtime settings, reading secrets from the process
    /// environment.
    pub fn validate(&self) -> Result<ValidatedConfig, BootstrapError> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// As [`validate`](Self::validate), reading the environment through `env`.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ValidatedConfig, BootstrapError> {
        let http_error = |e: databus_http::HttpError| BootstrapError::Config(e.to_string());
        let min_stale = crate::store::HEARTBEAT * 3;
        if self.health.stale_after < min_stale {
            return Err(BootstrapError::Config(format!(
                "health.stale_after is {:?}; use at least {min_stale:?} (roles report every {:?})",
                self.health.stale_after,
                crate::store::HEARTBEAT
            )));
        }
        let security = ServerSecurity::from_config(
            "http",
            self.http.tls.as_ref(),
            self.http.auth.as_ref(),
            &self.http.connections,
            env,
        )
        .map_err(http_error)?;
        let producer = match &self.relay {
            Some(r) => {
                let client = ClientOptions {
                    ca_cert: r.ca_cert.clone(),
                    token: Token::read_one(
                        "relay",
                        r.token_env.as_deref(),
                        r.token_file.as_deref(),
                        env,
                    )
                    .map_err(http_error)?,
                };
                crate::relay_client::RelayClient::with_options(
                    &r.url,
                    Duration::from_secs(1),
                    &client,
                )?;
                let mut p = ProducerSettings::new(r.url.clone());
                p.gap_source = self.gap_source(env)?;
                p.reseed = self.seed.as_ref().is_some_and(|s| s.auto_reseed);
                p.client = client;
                p.buffer = r.buffer.clone();
                p.max_bytes = bytes("relay.max_bytes", r.max_bytes)?;
                p.wait = r.wait;
                Some(p)
            }
            None => None,
        };
        let limits = self
            .http
            .validate()
            .map_err(|e| BootstrapError::Config(e.to_string()))?;
        if self.serve.max_pins == 0 {
            return Err(BootstrapError::Config(
                "serve.max_pins is 0; allow at least 1".into(),
            ));
        }
        if self.serve.pin_max_age.is_zero() {
            return Err(BootstrapError::Config(
                "serve.pin_max_age is 0: no pin would hold retention; give a duration such as \"24h\""
                    .into(),
            ));
        }
        if self.applier.max_windows == 0 || self.applier.max_events == 0 {
            return Err(BootstrapError::Config(
                "applier.max_windows and applier.max_events must be at least 1".into(),
            ));
        }
        if let Some(s) = &self.seed {
            if s.chunk_rows == 0 {
                return Err(BootstrapError::Config(
                    "seed.chunk_rows must be at least 1".into(),
                ));
            }
            if self.relay.is_none() {
                return Err(BootstrapError::Config(
                    "[seed] needs [relay]: the seed takes the captured tables from the relay"
                        .into(),
                ));
            }
            let postgres = s.url.starts_with("postgres://") || s.url.starts_with("postgresql://");
            if !postgres && !s.url.starts_with("mysql://") {
                return Err(BootstrapError::Config(format!(
                    "seed.url {} names no source kind: use mysql://user@host:port/ (MariaDB) or \
                     postgres://user@host:port/database (PostgreSQL)",
                    redact_password(&s.url)
                )));
            }
            let userinfo = s
                .url
                .split_once("://")
                .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
                .and_then(|authority| authority.rsplit_once('@'))
                .map(|(userinfo, _)| userinfo);
            if postgres && userinfo.is_some_and(|u| u.contains(':')) {
                return Err(BootstrapError::Config(
                    "seed.url contains a password; a postgres:// seed url takes it from password_env or \
                     password_file only"
                        .into(),
                ));
            }
        }
        Ok(ValidatedConfig {
            db_path: self.db_path.clone(),
            store: crate::store::SqliteOptions {
                fsync_every_commit: self.store.synchronous == Synchronous::Full,
                ..crate::store::SqliteOptions::default()
            },
            producer,
            listen: limits.listen,
            security,
            serve: ServeSettings {
                log_only_max_events: self.serve.log_only_max_events,
                pin_ttl: self.serve.pin_ttl,
                pin_max_age: self.serve.pin_max_age,
                default_response_bytes: limits.default_response_bytes,
                max_response_bytes: limits.max_response_bytes,
                max_pins: self.serve.max_pins,
                max_concurrent_streams: limits.max_concurrent_streams,
                max_query_bytes: limits.max_query_bytes,
                health: crate::health::HealthSettings {
                    max_lag: self.health.max_lag,
                    stale_after: self.health.stale_after,
                },
            },
            applier: ApplierSettings {
                max_windows: self.applier.max_windows,
                max_events: self.applier.max_events,
                idle_poll: self.applier.idle_poll,
            },
            retention: RetentionSettings {
                max_age: self.retention.max_age,
                max_bytes: self.retention.max_bytes.map(|b| b.as_u64()),
                interval: self.retention.interval,
                ..RetentionSettings::default()
            },
            seed: self.seed.as_ref().map(|s| s.resolved(env)).transpose()?,
        })
    }
}

fn serialize_opt_size<S: serde::Serializer>(
    size: &Option<ByteSize>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match size {
        Some(size) => serialize_size(size, s),
        None => s.serialize_none(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_password(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses_and_validates() {
        let text = r#"
db_path = "/tmp/x.sqlite"
[relay]
url = "http://127.0.0.1:7000"
max_bytes = "2MiB"
wait = "250ms"
[http]
listen = "127.0.0.1:0"
max_query_bytes = "4KiB"
[serve]
pin_ttl = "10m"
pin_max_age = "2h"
[retention]
max_age = "1d"
max_bytes = "1GiB"
[seed]
url = "mysql://root@127.0.0.1:3306/"
chunk_rows = 500
"#;
        let v = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap();
        let p = v.producer.unwrap();
        assert_eq!((p.max_bytes, p.wait), (2 << 20, Duration::from_millis(250)));
        assert_eq!(v.serve.pin_ttl, Duration::from_secs(600));
        assert_eq!(v.serve.pin_max_age, Duration::from_secs(7200));
        assert_eq!(v.serve.max_query_bytes, 4096);
        assert_eq!(v.retention.max_bytes, Some(1 << 30));
        assert_eq!(v.seed.unwrap().chunk_rows, 500);
    }

    #[test]
    fn store_durability_is_configurable() {
        let parse = |text: &str| BootstrapConfig::from_toml(text).and_then(|c| c.validate());
        assert!(!parse("db_path = \"x\"").unwrap().store.fsync_every_commit);
        let full = parse("db_path = \"x\"\n[store]\nsynchronous = \"full\"").unwrap();
        assert!(full.store.fsync_every_commit);
        let Err(err) = parse("db_path = \"x\"\n[store]\nsynchronous = \"off\"") else {
            panic!("synchronous = \"off\" was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("synchronous") || err.contains("off"), "{err}");
    }

    #[test]
    fn secure_defaults_and_security_settings() {
        let v = BootstrapConfig::from_toml("db_path = \"x\"")
            .unwrap()
            .validate()
            .unwrap();
        assert!(v.listen.ip().is_loopback(), "{}", v.listen);
        assert!(!v.security.is_tls() && !v.security.requires_token());
        let text = r#"
db_path = "x"
[relay]
url = "https://127.0.0.1:7000"
token_env = "RELAY_T"
[http]
auth = { tokens_env = "BS_T", open_metrics = true }
"#;
        let env = |v: &str| match v {
            "RELAY_T" => Some("relay-t".to_owned()),
            "BS_T" => Some("a-token b-token".to_owned()),
            _ => None,
        };
        let v = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        assert!(v.security.requires_token());
        let p = v.producer.unwrap();
        assert_eq!(p.client.token.as_ref().unwrap().expose(), "relay-t");
        assert!(!format!("{p:?}").contains("relay-t"));
        let err = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("BS_T is not set"), "{err}");
        let err = BootstrapConfig::from_toml(&text.replace("tokens_env", "tokens_envv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn seed_password_from_env_or_file_never_printed() {
        let text = "db_path = \"x\"\n[relay]\nurl = \"http://127.0.0.1:1\"\n[seed]\nurl = \"mysql://seed@db:3306/\"\npassword_env = \"SEED_PW\"\n";
        let env = |v: &str| (v == "SEED_PW").then(|| "p@ss:w/rd".to_owned());
        let v = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        let seed = v.seed.unwrap();
        // The password stays out of the URL: it goes to the driver as a password.
        assert_eq!(seed.url, "mysql://seed@db:3306/");
        assert_eq!(
            seed.password
                .as_ref()
                .map(databus_connectors::Secret::expose),
            Some("p@ss:w/rd")
        );
        let shown = format!("{seed:?}");
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        let err = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SEED_PW is not set"), "{err}");
        let err = BootstrapConfig::from_toml(&text.replace("seed@db", "seed:inline@db"))
            .unwrap()
            .validate_with_env(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already contains a password") && !err.contains("inline"),
            "{err}"
        );
    }

    #[test]
    fn seed_from_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "pg-secret\n").unwrap();
        let text = format!(
            "db_path = \"x\"\n[relay]\nurl = \"http://127.0.0.1:1\"\n[seed]\n\
             url = \"postgres://seed@db:5432/shop?slot=databus\"\npassword_file = {:?}\n",
            pw.display().to_string()
        );
        let v = BootstrapConfig::from_toml(&text)
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap();
        let seed = v.seed.unwrap();
        assert_eq!(seed.url, "postgres://seed@db:5432/shop?slot=databus");
        assert_eq!(
            seed.password
                .as_ref()
                .map(databus_connectors::Secret::expose),
            Some("pg-secret")
        );
        assert!(!format!("{seed:?}").contains("pg-secret"));
        let err = BootstrapConfig::from_toml(&text.replace("seed@db", "seed:inline@db"))
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("contains a password") && !err.contains("inline"),
            "{err}"
        );
        let err = BootstrapConfig::from_toml(&text.replace("postgres://", "oracle://"))
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no source kind"), "{err}");
    }

    #[test]
    fn source_is_the_relays_entry_validated_by_the_relays_code() {
        let text = "db_path = \"x\"\n[relay]\nurl = \"http://127.0.0.1:1\"\n[source]\nname = \"shop\"\nbuffer_size = \"2MiB\"\ntables = [{ id = 1, name = \"orders\", table = \"shop.orders\" }]\n[source.connector]\nkind = \"mariadb\"\nurl = \"mysql://repl@db:3306/\"\npassword_env = \"SRC_PW\"\nserver_id = 7\n";
        let env = |v: &str| (v == "SRC_PW").then(|| "s3cret".to_owned());
        let v = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        let gap = v.producer.unwrap().gap_source.unwrap();
        assert_eq!(gap.source.buffer_bytes, 2 << 20);
        assert_eq!(gap.source.tables[0].table, "orders");
        assert!(!format!("{gap:?}").contains("s3cret"));
        let err = BootstrapConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[source]") && err.contains("SRC_PW"), "{err}");
        let chained = text.replace(
            "[source.connector]\nkind = \"mariadb\"\nurl = \"mysql://repl@db:3306/\"\npassword_env = \"SRC_PW\"\nserver_id = 7\n",
            "upstream = { url = \"http://127.0.0.1:2\" }\n",
        );
        let err = BootstrapConfig::from_toml(&chained)
            .unwrap()
            .validate_with_env(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not upstream"), "{err}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, needle) in [
            ("db_path = 1", "invalid type"),
            ("db_path = \"x\"\nbogus = 1", "unknown field"),
            (
                "db_path = \"x\"\n[relay]\nurl = \"ftp://x\"",
                "use http:// or https://",
            ),
            (
                "db_path = \"x\"\n[seed]\nurl = \"mysql://x/\"",
                "[seed] needs [relay]",
            ),
            ("db_path = \"x\"\n[applier]\nmax_windows = 0", "at least 1"),
            // The keys that moved from [http] to [serve] name their new home.
            (
                "db_path = \"x\"\n[http]\npin_ttl = \"1h\"",
                "[http] pin_ttl has moved to [serve]",
            ),
            // [http] is the relay's section: the same bounds, named the same way.
            (
                "db_path = \"x\"\n[http]\nmax_wait = \"1h\"",
                "http.max_wait: 1h is too long",
            ),
            (
                "db_path = \"x\"\n[serve]\nmax_pins = 0",
                "serve.max_pins is 0",
            ),
        ] {
            let err = BootstrapConfig::from_toml(text)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
