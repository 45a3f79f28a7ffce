//! The MySQL/MariaDB connector's configuration (a TOML table in the relay's config file).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::TableName;
use crate::{ConnectorError, Secret};

/// Configuration of [`super::MySqlConnector`] (in `relay.toml`: a source's `[sources.connector]` table
/// with `kind = "mariadb"`).
///
/// The password is never part of the URL the driver gets or of `Debug`: give it with `password_env` or
/// `password_file` (resolved by [`MySqlConfig::resolve_password`]) or set [`MySqlConfig::password`].
///
/// ```toml
/// url = "mysql://relay@db1:3306/"
/// password_env = "RELAY_DB_PASSWORD"
/// server_id = 4001
/// tables = ["shop.orders", "shop.customers"]   # or databases = ["shop"]
/// heartbeat_period = "1s"
/// read_timeout = "10s"
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlConfig {
    /// Connection URL of the source, without the password (`mysql://user@host:port/`).
    /// `max_allowed_packet=1073741824` is set when the URL does not say, so large rows events fit.
    /// Serialized (`--print-config`) with any password in it masked.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Name of an environment variable holding the password. At most one of `password_env` and
    /// `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password itself: set by code, or read from `password_env` / `password_file` by
    /// [`MySqlConfig::resolve_password`]. Never read from or written to a file.
    #[serde(skip)]
    pub password: Option<Secret>,
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
    /// A connection with no event (heartbeats included) for this long is dead: reconnect (noticed
    /// within 1.5 times this long).
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

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::secret::redact_url(url))
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
            password_env: None,
            password_file: None,
            password: None,
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

    /// Reads the password from `password_env` / `password_file` (looked up with `env`) into
    /// [`MySqlConfig::password`]; nothing to do when neither is set.
    pub fn resolve_password(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConnectorError> {
        if let Some(secret) = Secret::from_env_or_file(
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
            env,
        )? {
            self.password = Some(secret);
        }
        Ok(())
    }

    /// The driver's connection options: the URL's, the password set apart from it, a large
    /// `max_allowed_packet` unless the URL sets one. Checks only what a connection needs.
    pub(crate) fn connection_opts(&self) -> Result<mysql_async::Opts, ConnectorError> {
        let opts = mysql_async::Opts::from_url(&self.url).map_err(|e| {
            ConnectorError::Config(format!(
                "url {} is invalid: {e}",
                crate::secret::redact_url(&self.url)
            ))
        })?;
        let in_url = opts.pass().is_some();
        let mut builder = mysql_async::OptsBuilder::from_opts(opts.clone());
        if let Some(password) = &self.password {
            if in_url {
                return Err(ConnectorError::Config(
                    "url already contains a password; remove it from the URL and keep password_env or \
                     password_file"
                        .into(),
                ));
            }
            builder = builder.pass(Some(password.expose()));
        }
        if opts.max_allowed_packet().is_none() {
            builder = builder.max_allowed_packet(Some(1_073_741_824));
        }
        Ok(builder.into())
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
        let opts = self.connection_opts()?;
        Ok(Validated {
            opts,
            tables,
            databases: self.databases.iter().cloned().collect(),
        })
    }
}

impl fmt::Debug for MySqlConfig {
    /// Everything but a password: the URL's is masked, [`MySqlConfig::password`] shows as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("url", &crate::secret::redact_url(&self.url))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password)
            .field("server_id", &self.server_id)
            .field("tables", &self.tables)
            .field("databases", &self.databases)
            .field("heartbeat_period", &self.heartbeat_period)
            .field("read_timeout", &self.read_timeout)
            .field("reconnect", &self.reconnect)
            .field(
                "allow_tables_without_primary_key",
                &self.allow_tables_without_primary_key,
            )
            .field("max_transaction_rows", &self.max_transaction_rows)
            .field("max_transaction_bytes", &self.max_transaction_bytes)
            .finish()
    }
}

/// The parsed configuration.
#[derive(Clone)]
pub(crate) struct Validated {
    pub(crate) opts: mysql_async::Opts,
    pub(crate) tables: BTreeSet<TableName>,
    pub(crate) databases: BTreeSet<String>,
}

impl fmt::Debug for Validated {
    /// Not the driver's options: they hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("tables", &self.tables)
            .field("databases", &self.databases)
            .finish_non_exhaustive()
    }
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
    fn the_password_goes_to_the_driver_apart_from_the_url_and_never_into_debug() {
        let mut c = MySqlConfig::new("mysql://repl@db:3306/", 7);
        c.tables = vec!["a.b".into()];
        c.password_env = Some("PW".into());
        c.resolve_password(&|v| (v == "PW").then(|| "p@ss:w/rd".to_owned()))
            .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.opts.pass(), Some("p@ss:w/rd"));
        assert_eq!(v.opts.user(), Some("repl"));
        for shown in [format!("{c:?}"), format!("{v:?}")] {
            assert!(!shown.contains("p@ss"), "{shown}");
        }
        let text = toml::to_string(&c).unwrap();
        assert!(
            !text.contains("p@ss") && text.contains("password_env = \"PW\""),
            "{text}"
        );
        // A password in the URL is masked in Debug, and refused next to a configured one.
        let inline = MySqlConfig::new("mysql://repl:inline@db:3306/", 7);
        assert!(!format!("{inline:?}").contains("inline"));
        c.url = "mysql://repl:inline@db:3306/".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("already contains a password") && !e.contains("inline"),
            "{e}"
        );
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
