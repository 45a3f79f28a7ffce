//! The PostgreSQL connector's configuration (a TOML table in the relay's config file).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::TableName;
use crate::{ConnectorError, Secret};

/// Configuration of [`super::PgConnector`].
///
/// ```toml
/// host = "db1"                 # or a unix socket directory: "/var/run/postgresql"
/// port = 5432
/// user = "databus"
/// password_env = "PG_PASSWORD" # or password_file = "/run/secrets/pg"; never printed
/// database = "shop"
/// slot = "databus"             # created (pgoutput) when missing
/// publication = "databus"      # created FOR TABLE <tables> when missing
/// tables = ["public.orders", "public.customers"]
/// heartbeat_interval = "1s"
/// read_timeout = "10s"
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// Host name or address of the source; a value starting with `/` is a unix socket directory.
    pub host: String,
    /// Port of the source.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The role the connector logs in as: it needs the `REPLICATION` attribute (or superuser), `SELECT`
    /// on the captured tables, and ownership of them when the connector creates the publication.
    pub user: String,
    /// Name of an environment variable holding the password. At most one of `password_env` and
    /// `password_file`; neither: no password (trust or peer authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password itself (SCRAM-SHA-256, MD5 or cleartext, as the server asks): set by code, or
    /// read from `password_env` / `password_file` by [`PgConfig::resolve_password`]. Never read from
    /// or written to a file, never in `Debug`.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// The database holding the captured tables (a logical slot belongs to one database).
    pub database: String,
    /// The logical replication slot (plugin `pgoutput`); created when missing.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// The publication the slot decodes; created `FOR TABLE` the captured tables when missing. An
    /// existing one must include every captured table; it may include more (their transactions are then
    /// delivered with no changes, which advances the SCN).
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Captured tables as `schema.table` (at least one; in a relay's configuration the tables of its
    /// `[[sources]]` entry are added).
    #[serde(default)]
    pub tables: Vec<String>,
    /// How often a [`Heartbeat`](crate::ConnectorEvent::Heartbeat) is emitted while the source is idle.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Limit on connecting, setting up the stream and each catalog query.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How often the acknowledged position is reported to the server (standby status updates).
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
    /// Largest transaction in row changes; a larger one is a definite error (windows are never split).
    #[serde(default = "default_max_transaction_rows")]
    pub max_transaction_rows: u64,
}

fn default_port() -> u16 {
    5432
}
fn default_slot() -> String {
    "databus".into()
}
fn default_publication() -> String {
    "databus".into()
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_transaction_rows() -> u64 {
    1_000_000
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("tables", &self.tables)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("read_timeout", &self.read_timeout)
            .field("status_interval", &self.status_interval)
            .field("max_transaction_rows", &self.max_transaction_rows)
            .finish()
    }
}

impl PgConfig {
    /// A configuration with the defaults for everything but where the source is and what to capture.
    /// An empty `password` means none.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password_env: None,
            password_file: None,
            password: Some(password.into())
                .filter(|p: &String| !p.is_empty())
                .map(Secret::new),
            database: database.into(),
            slot: default_slot(),
            publication: default_publication(),
            tables: Vec::new(),
            heartbeat_interval: default_heartbeat_interval(),
            read_timeout: default_read_timeout(),
            status_interval: default_status_interval(),
            max_transaction_rows: default_max_transaction_rows(),
        }
    }

    /// Reads the password from `password_env` / `password_file` (looked up with `env`) into
    /// [`PgConfig::password`]; nothing to do when neither is set.
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

    /// The password's text for the driver ("" when there is none).
    pub(crate) fn password_text(&self) -> &str {
        self.password.as_ref().map_or("", Secret::expose)
    }

    /// Where the source is, for messages: `postgresql://user@host:port/database` (no password).
    pub fn describe(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// Checks the settings and parses the captured tables.
    pub(crate) fn validate(&self) -> Result<Vec<TableName>, ConnectorError> {
        let ident = |what: &str, v: &str| {
            if v.is_empty() || v.len() > 63 {
                return Err(ConnectorError::Config(format!(
                    "{what} {v:?} must have 1 to 63 characters"
                )));
            }
            if !v
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(ConnectorError::Config(format!(
                    "{what} {v:?} may only use a-z, 0-9 and _ (PostgreSQL folds unquoted names to lower case)"
                )));
            }
            Ok(())
        };
        ident("slot", &self.slot)?;
        ident("publication", &self.publication)?;
        if self.host.is_empty() || self.user.is_empty() || self.database.is_empty() {
            return Err(ConnectorError::Config(
                "host, user and database must be set".into(),
            ));
        }
        if self.tables.is_empty() {
            return Err(ConnectorError::Config(
                "no table to capture: set tables = [\"schema.table\", ...]".into(),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.read_timeout.is_zero() {
            return Err(ConnectorError::Config(
                "heartbeat_interval and read_timeout must be positive".into(),
            ));
        }
        self.tables
            .iter()
            .map(|t| match t.split_once('.') {
                Some((s, n)) if !s.is_empty() && !n.is_empty() && !n.contains('.') => {
                    Ok(TableName::new(s, n))
                }
                _ => Err(ConnectorError::Config(format!(
                    "table {t:?} must be written schema.table (e.g. public.orders)"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = PgConfig::new("h", 5432, "u", "s3cret", "d");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!toml::to_string(&c).unwrap().contains("s3cret"));
        assert!(!c.describe().contains("s3cret"));
    }

    #[test]
    fn the_password_comes_from_env_or_file_never_inline() {
        let mut c: PgConfig = toml::from_str(
            "host = \"h\"\nuser = \"u\"\npassword_env = \"PW\"\ndatabase = \"d\"\ntables = [\"public.t\"]\n",
        )
        .unwrap();
        assert_eq!(c.password, None);
        c.resolve_password(&|v| (v == "PW").then(|| "pw".to_owned()))
            .unwrap();
        assert_eq!(c.password_text(), "pw");
        let printed = toml::to_string(&c).unwrap();
        assert!(
            printed.contains("password_env = \"PW\"") && !printed.contains("\"pw\""),
            "{printed}"
        );
        let inline: Result<PgConfig, _> = toml::from_str(
            "host = \"h\"\nuser = \"u\"\npassword = \"pw\"\ndatabase = \"d\"\ntables = [\"public.t\"]\n",
        );
        assert!(inline.is_err(), "an inline password is refused");
    }

    #[test]
    fn toml_round_trip_with_defaults() {
        let c: PgConfig = toml::from_str(
            "host = \"h\"\nuser = \"u\"\ndatabase = \"d\"\ntables = [\"public.t\"]\n",
        )
        .unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.slot, "databus");
        assert_eq!(c.validate().unwrap(), vec![TableName::new("public", "t")]);
        let bad: Result<PgConfig, _> = toml::from_str("host = \"h\"\nurl = \"x\"\n");
        assert!(bad.is_err());
    }
}
