//! The MySQL/MariaDB connector's configuration (a TOML table in the relay's config file).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::source::TableName;

/// Configuration of [`super::MySqlConnector`].
///
/// ```toml
/// url = "mysql://relay:secret@db1:3306/"
/// server_id = 4001
/// tables = ["shop.orders", "shop.customers"]   # or databases = ["shop"]
/// heartbeat_period = "1s"
/// read_timeout = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlConfig {
    /// Connection URL of the source (`mysql://user:password@host:port/`). `max_allowed_packet=1073741824`
    /// is added when missing, so large rows events fit.
    pub url: String,
    /// Server id of the connector's replication connection; must differ from the source's `server_id`
    /// and from every other replica's.
    pub server_id: u32,
    /// Captured tables as `database.table`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Captured databases: every table in them.
    #[serde(default)]
    pub databases: Vec<String>,
    /// How often the source sends a heartbeat while idle.
    #[serde(default = "default_heartbeat_period", with = "humantime_serde")]
    pub heartbeat_period: Duration,
    /// A connection with no event (heartbeats included) for this long is dead: reconnect.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How the connector reconnects after a transient error.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Capture tables without a primary key (their events then have no key). Off by default: such tables
    /// are refused with an error.
    #[serde(default)]
    pub allow_tables_without_primary_key: bool,
    /// Largest transaction in row changes; a larger one is a definite error (windows are never split).
    #[serde(default = "default_max_transaction_rows")]
    pub max_transaction_rows: u64,
    /// Largest transaction in bytes of rows events; a larger one is a definite error.
    #[serde(default = "default_max_transaction_bytes")]
    pub max_transaction_bytes: u64,
}

/// Reconnection with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Consecutive failed attempts before the transient error is returned to the caller; absent: retry
    /// forever.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_attempts: None,
        }
    }
}

fn default_heartbeat_period() -> Duration {
    Duration::from_secs(1)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_transaction_rows() -> u64 {
    1_000_000
}
fn default_max_transaction_bytes() -> u64 {
    1 << 30
}

impl MySqlConfig {
    /// A config with defaults for everything but the URL, server id and captured databases.
    pub fn new(url: impl Into<String>, server_id: u32) -> Self {
        Self {
            url: url.into(),
            server_id,
            tables: Vec::new(),
            databases: Vec::new(),
            heartbeat_period: default_heartbeat_period(),
            read_timeout: default_read_timeout(),
            reconnect: ReconnectConfig::default(),
            allow_tables_without_primary_key: false,
            max_transaction_rows: default_max_transaction_rows(),
            max_transaction_bytes: default_max_transaction_bytes(),
        }
    }

    /// Validates into the runtime form.
    pub(crate) fn validate(&self) -> Result<Validated, ConnectorError> {
        let bad = |m: String| Err(ConnectorError::Config(m));
        if self.tables.is_empty() && self.databases.is_empty() {
            return bad(
                "no captured tables; set tables = [\"db.table\", …] or databases = [\"db\"]".into(),
            );
        }
        if self.server_id == 0 {
            return bad(
                "server_id 0 cannot replicate; set a server_id unique among the source's replicas"
                    .into(),
            );
        }
        if self.heartbeat_period.is_zero() || self.read_timeout <= self.heartbeat_period {
            return bad(format!(
                "read_timeout ({:?}) must exceed heartbeat_period ({:?}), which must be positive",
                self.read_timeout, self.heartbeat_period
            ));
        }
        if self.reconnect.initial_backoff.is_zero()
            || self.reconnect.max_backoff < self.reconnect.initial_backoff
        {
            return bad(
                "reconnect.initial_backoff must be positive and at most reconnect.max_backoff"
                    .into(),
            );
        }
        let mut tables = BTreeSet::new();
        for t in &self.tables {
            match t.split_once('.') {
                Some((d, n)) if !d.is_empty() && !n.is_empty() && !n.contains('.') => {
                    tables.insert(TableName::new(d, n));
                }
                _ => {
                    return bad(format!(
                        "captured table {t:?} is not of the form database.table"
                    ));
                }
            }
        }
        let mut url = mysql_async::Opts::from_url(&self.url)
            .map_err(|e| ConnectorError::Config(format!("url is invalid: {e}")))
            .map(|_| self.url.clone())?;
        if !url.contains("max_allowed_packet") {
            url.push_str(if url.contains('?') {
                "&"
            } else if url.ends_with('/') {
                "?"
            } else {
                "/?"
            });
            url.push_str("max_allowed_packet=1073741824");
        }
        let opts = mysql_async::Opts::from_url(&url)
            .map_err(|e| ConnectorError::Config(format!("url is invalid: {e}")))?;
        Ok(Validated {
            opts,
            tables,
            databases: self.databases.iter().cloned().collect(),
        })
    }
}

/// The parsed configuration.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub(crate) opts: mysql_async::Opts,
    pub(crate) tables: BTreeSet<TableName>,
    pub(crate) databases: BTreeSet<String>,
}

impl Validated {
    pub(crate) fn captures(&self, database: &str, table: &str) -> bool {
        self.databases.contains(database)
            || self
                .tables
                .iter()
                .any(|t| t.database == database && t.table == table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults_and_human_units() {
        let c: MySqlConfig = toml::from_str(
            "url = \"mysql://u:p@127.0.0.1:3306/\"\nserver_id = 7\ntables = [\"a.b\"]\nheartbeat_period = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(c.heartbeat_period, Duration::from_millis(250));
        assert_eq!(c.read_timeout, Duration::from_secs(10));
        assert!(!c.allow_tables_without_primary_key);
        let v = c.validate().unwrap();
        assert!(v.captures("a", "b"));
        assert!(!v.captures("a", "c"));
        assert_eq!(v.opts.max_allowed_packet(), Some(1073741824));
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let e =
            toml::from_str::<MySqlConfig>("url = \"x\"\nserver_id = 1\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let mut c = MySqlConfig::new("mysql://u@h/", 3);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("no captured tables")
        );
        c.tables = vec!["nodot".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("database.table")
        );
        c.tables = vec!["a.b".into()];
        c.read_timeout = c.heartbeat_period;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("read_timeout")
        );
    }
}
