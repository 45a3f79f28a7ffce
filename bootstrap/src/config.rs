//! The `bootstrap.toml` file: parsed with serde (unknown fields refused, human units), then validated
//! into the runtime settings of each role.
//!
//! ```toml
//! db_path = "/var/lib/databus/bootstrap/shop.sqlite"   # one SQLite file per bootstrap database
//!
//! [relay]                      # the producer's relay
//! url = "http://127.0.0.1:7000"
//! buffer = "shop"              # optional when the relay has one buffer
//! max_bytes = "4MiB"
//! wait = "500ms"
//!
//! [http]                       # the server
//! listen = "127.0.0.1:7100"
//! log_only_max_events = 100000
//! pin_ttl = "1h"
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
//! password_env = "SEED_PASSWORD"   # or password_file = "/run/secrets/seed"
//! chunk_rows = 10000
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::BootstrapError;
use crate::applier::ApplierSettings;
use crate::producer::ProducerSettings;
use crate::retention::RetentionSettings;
use crate::serve::ServeSettings;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// The bootstrap database file (created if missing).
    pub db_path: PathBuf,
    /// The relay the producer copies (required for the producer and the seed).
    #[serde(default)]
    pub relay: Option<RelaySection>,
    /// The HTTP server.
    #[serde(default)]
    pub http: HttpSection,
    /// The applier.
    #[serde(default)]
    pub applier: ApplierSection,
    /// Log retention.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Seeding from the source database.
    #[serde(default)]
    pub seed: Option<SeedSection>,
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// `http://host:port` of the relay.
    pub url: String,
    /// The relay buffer to copy; optional when the relay has one.
    #[serde(default)]
    pub buffer: Option<String>,
    /// Bytes per relay response.
    #[serde(default = "default_relay_bytes")]
    pub max_bytes: ByteSize,
    /// Long-poll wait per request.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait: Duration,
}

fn default_relay_bytes() -> ByteSize {
    ByteSize::mib(4)
}
fn default_wait() -> Duration {
    Duration::from_millis(500)
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Deltas leaving at most this many log events are served from the log alone.
    #[serde(default = "default_log_only")]
    pub log_only_max_events: u64,
    /// How long a bootstrap's pin on the log lasts after its last request.
    #[serde(default = "default_pin_ttl", with = "humantime_serde")]
    pub pin_ttl: Duration,
    /// Response budget when the request gives none.
    #[serde(default = "default_response_bytes")]
    pub default_response_bytes: ByteSize,
    /// Largest `max_bytes` accepted.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: ByteSize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100))
}
fn default_log_only() -> u64 {
    100_000
}
fn default_pin_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_response_bytes() -> ByteSize {
    ByteSize::mib(1)
}
fn default_max_response_bytes() -> ByteSize {
    ByteSize::mib(16)
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_listen(),
            log_only_max_events: default_log_only(),
            pin_ttl: default_pin_ttl(),
            default_response_bytes: default_response_bytes(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

/// `[applier]`.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Windows committed longer ago than this are trimmed.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// The log is kept under this size.
    #[serde(default)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSection {
    /// `mysql://user@host:port/` of the source (a user with SELECT on the captured tables). A password
    /// may be in the URL, but `password_env` or `password_file` keep it out of the file.
    pub url: String,
    /// Environment variable holding the seed user's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the seed user's password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Rows per chunk.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
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
    /// The server.
    pub serve: ServeSettings,
    /// The applier.
    pub applier: ApplierSettings,
    /// The cleaner.
    pub retention: RetentionSettings,
    /// The seed (if `[seed]` is set).
    pub seed: Option<SeedSection>,
    /// The seed user's password from `password_env` / `password_file`.
    pub seed_password: Option<Password>,
}

/// A password read from the environment or a file; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    /// The password itself, to hand to the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

fn seed_password(s: &SeedSection) -> Result<Option<Password>, BootstrapError> {
    match (&s.password_env, &s.password_file) {
        (Some(_), Some(_)) => Err(BootstrapError::Config(
            "seed: set at most one of password_env and password_file".into(),
        )),
        (Some(var), None) => std::env::var(var).map(|p| Some(Password(p))).map_err(|_| {
            BootstrapError::Config(format!(
                "seed.password_env: environment variable {var} is not set; export it or remove password_env"
            ))
        }),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|p| Some(Password(p.trim_end_matches(['\n', '\r']).to_owned())))
            .map_err(|e| {
                BootstrapError::Config(format!(
                    "seed.password_file: cannot read {}: {e}",
                    path.display()
                ))
            }),
        (None, None) => Ok(None),
    }
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
        toml::from_str(text).map_err(|e| BootstrapError::Config(e.to_string()))
    }

    /// Checks the values and builds the runtime settings.
    pub fn validate(&self) -> Result<ValidatedConfig, BootstrapError> {
        let producer = match &self.relay {
            Some(r) => {
                crate::relay_client::RelayClient::new(&r.url, Duration::from_secs(1))?;
                let mut p = ProducerSettings::new(r.url.clone());
                p.buffer = r.buffer.clone();
                p.max_bytes = bytes("relay.max_bytes", r.max_bytes)?;
                p.wait = r.wait;
                Some(p)
            }
            None => None,
        };
        let max_response_bytes = bytes("http.max_response_bytes", self.http.max_response_bytes)?;
        let default_response_bytes = bytes(
            "http.default_response_bytes",
            self.http.default_response_bytes,
        )?;
        if default_response_bytes > max_response_bytes {
            return Err(BootstrapError::Config(
                "http.default_response_bytes is larger than http.max_response_bytes".into(),
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
        }
        let seed_password = match &self.seed {
            Some(s) => seed_password(s)?,
            None => None,
        };
        Ok(ValidatedConfig {
            seed_password,
            db_path: self.db_path.clone(),
            producer,
            listen: self.http.listen,
            serve: ServeSettings {
                log_only_max_events: self.http.log_only_max_events,
                pin_ttl: self.http.pin_ttl,
                default_response_bytes,
                max_response_bytes,
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
            seed: self.seed.clone(),
        })
    }
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
pin_ttl = "10m"
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
        assert_eq!(v.retention.max_bytes, Some(1 << 30));
        assert_eq!(v.seed.unwrap().chunk_rows, 500);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (text, needle) in [
            ("db_path = 1", "invalid type"),
            ("db_path = \"x\"\nbogus = 1", "unknown field"),
            (
                "db_path = \"x\"\n[relay]\nurl = \"ftp://x\"",
                "http://host:port",
            ),
            (
                "db_path = \"x\"\n[seed]\nurl = \"mysql://x/\"",
                "[seed] needs [relay]",
            ),
            ("db_path = \"x\"\n[applier]\nmax_windows = 0", "at least 1"),
        ] {
            let err = BootstrapConfig::from_toml(text)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
