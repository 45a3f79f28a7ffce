//! The one factory: a source's configuration as a table tagged with its `kind`
//! ([`ConnectorConfig`]), and the connector built from it ([`AnySourceConnector`]).
//!
//! [`SourceConnector`] uses `impl Future`, so it is not object-safe: [`AnySourceConnector`] is an enum
//! that dispatches to each connector. Adding a connector is one variant in each enum here and one arm
//! in each `match` below; the relay, the bootstrap producer and the CLI only see these types.
//!
//! ```
//! use databus_connectors::ConnectorConfig;
//!
//! let config: ConnectorConfig = toml::from_str(
//!     "kind = \"mariadb\"\nurl = \"mysql://repl@db:3306/\"\nserver_id = 1001\nread_timeout = \"20s\"\n",
//! )
//! .unwrap();
//! assert_eq!(config.kind(), "mariadb");
//! ```

use databus_core::Scn;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::mysql::{MySqlConfig, MySqlConnector, MySqlSnapshotSource};
use crate::postgres::{PgConfig, PgConnector, PgSnapshotSource};
use crate::snapshot::AnySnapshotSource;
use crate::source::{ConnectorEvent, SourceConnector, SourcePosition, StartPosition, TableName};
use crate::{ConnectorError, SourceCheck};

/// A source's configuration, tagged by `kind`. Each variant is its connector's own settings struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum ConnectorConfig {
    /// `kind = "mariadb"`: a MariaDB (or MySQL) binlog, [`MySqlConfig`].
    #[serde(rename = "mariadb")]
    MariaDb(MySqlConfig),
    /// `kind = "postgres"`: PostgreSQL logical replication (`pgoutput`), [`PgConfig`].
    #[serde(rename = "postgres")]
    Postgres(PgConfig),
}

impl ConnectorConfig {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorConfig::MariaDb(_) => "mariadb",
            ConnectorConfig::Postgres(_) => "postgres",
        }
    }

    /// Where the source is, for messages (no password).
    pub fn describe(&self) -> String {
        match self {
            ConnectorConfig::MariaDb(c) => crate::secret::redact_url(&c.url),
            ConnectorConfig::Postgres(c) => c.describe(),
        }
    }

    /// Reads the secrets the configuration refers to (`password_env`, `password_file`).
    pub fn resolve_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConnectorError> {
        match self {
            ConnectorConfig::MariaDb(c) => c.resolve_password(env),
            ConnectorConfig::Postgres(c) => c.resolve_password(env),
        }
    }

    /// Adds `tables` to what the connector captures (the relay adds the tables it maps to source ids).
    pub fn capture_tables(&mut self, tables: impl IntoIterator<Item = TableName>) {
        let captured = match self {
            ConnectorConfig::MariaDb(c) => &mut c.tables,
            ConnectorConfig::Postgres(c) => &mut c.tables,
        };
        for t in tables {
            let name = t.to_string();
            if !captured.contains(&name) {
                captured.push(name);
            }
        }
    }

    /// Builds the connector (validating its configuration; nothing is connected yet).
    pub fn build(&self) -> Result<AnySourceConnector, ConnectorError> {
        match self {
            ConnectorConfig::MariaDb(c) => {
                MySqlConnector::new(c.clone()).map(AnySourceConnector::MariaDb)
            }
            ConnectorConfig::Postgres(c) => {
                PgConnector::new(c.clone()).map(AnySourceConnector::Postgres)
            }
        }
    }

    /// The snapshot side of the same source (for seeding a bootstrap server).
    pub fn snapshot_source(&self) -> Result<AnySnapshotSource, ConnectorError> {
        match self {
            ConnectorConfig::MariaDb(c) => {
                MySqlSnapshotSource::new(c).map(AnySnapshotSource::MariaDb)
            }
            ConnectorConfig::Postgres(c) => {
                PgSnapshotSource::new(c).map(AnySnapshotSource::Postgres)
            }
        }
    }

    /// Checks every setting and grant capture needs, one finding per setting (`databus check-source`).
    pub async fn check(&self) -> Result<Vec<SourceCheck>, ConnectorError> {
        match self {
            ConnectorConfig::MariaDb(c) => MySqlConnector::check_source(c).await,
            ConnectorConfig::Postgres(c) => PgConnector::source_checks(c).await,
        }
    }
}

/// The connector of a [`ConnectorConfig`]: dispatches [`SourceConnector`] to the connector of its kind.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySourceConnector {
    /// The MySQL/MariaDB binlog connector.
    MariaDb(MySqlConnector),
    /// The PostgreSQL logical replication connector.
    Postgres(PgConnector),
}

impl SourceConnector for AnySourceConnector {
    async fn start(&mut self, from: StartPosition) -> Result<(), ConnectorError> {
        match self {
            AnySourceConnector::MariaDb(c) => c.start(from).await,
            AnySourceConnector::Postgres(c) => c.start(from).await,
        }
    }

    fn last_scn(&self) -> Scn {
        match self {
            AnySourceConnector::MariaDb(c) => c.last_scn(),
            AnySourceConnector::Postgres(c) => c.last_scn(),
        }
    }

    async fn next_event(&mut self) -> Result<Option<ConnectorEvent>, ConnectorError> {
        match self {
            AnySourceConnector::MariaDb(c) => c.next_event().await,
            AnySourceConnector::Postgres(c) => c.next_event().await,
        }
    }

    fn shutdown_token(&self) -> CancellationToken {
        match self {
            AnySourceConnector::MariaDb(c) => c.shutdown_token(),
            AnySourceConnector::Postgres(c) => c.shutdown_token(),
        }
    }

    async fn shutdown(&mut self) -> Result<(), ConnectorError> {
        match self {
            AnySourceConnector::MariaDb(c) => c.shutdown().await,
            AnySourceConnector::Postgres(c) => c.shutdown().await,
        }
    }

    fn refill_start(
        &self,
        last: Scn,
        position: Option<&SourcePosition>,
        transactions: u64,
    ) -> StartPosition {
        match self {
            AnySourceConnector::MariaDb(c) => c.refill_start(last, position, transactions),
            AnySourceConnector::Postgres(c) => c.refill_start(last, position, transactions),
        }
    }

    fn acknowledge(&mut self, durable: Scn) {
        match self {
            AnySourceConnector::MariaDb(c) => c.acknowledge(durable),
            AnySourceConnector::Postgres(c) => c.acknowledge(durable),
        }
    }

    fn source_lag_bytes(&self) -> Option<u64> {
        match self {
            AnySourceConnector::MariaDb(c) => c.source_lag_bytes(),
            AnySourceConnector::Postgres(c) => c.source_lag_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connector_setting_is_reachable_and_round_trips() {
        let text = r#"
kind = "mariadb"
url = "mysql://repl@db:3306/"
password_env = "PW"
server_id = 1001
databases = ["shop"]
heartbeat_period = "500ms"
read_timeout = "20s"
max_transaction_rows = 5000
max_transaction_bytes = 1048576
allow_tables_without_primary_key = true
reconnect = { initial_backoff = "200ms", max_backoff = "5s", max_attempts = 3 }
"#;
        let config: ConnectorConfig = toml::from_str(text).unwrap();
        let ConnectorConfig::MariaDb(c) = &config else {
            panic!("{config:?}")
        };
        assert_eq!(c.read_timeout, std::time::Duration::from_secs(20));
        assert_eq!(c.max_transaction_rows, 5000);
        assert_eq!(c.reconnect.max_attempts, Some(3));
        let printed = toml::to_string(&config).unwrap();
        let back: ConnectorConfig = toml::from_str(&printed).unwrap();
        assert_eq!(back, config, "{printed}");
        let err = toml::from_str::<ConnectorConfig>("kind = \"oracle\"\nurl = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("oracle") && err.contains("mariadb"), "{err}");
        let err = toml::from_str::<ConnectorConfig>(&format!("{text}bogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn the_postgres_kind_round_trips_without_its_password() {
        let text = r#"
kind = "postgres"
host = "db1"
port = 5433
user = "databus"
password_env = "PG_PW"
database = "shop"
slot = "relay_shop"
publication = "relay_shop"
tables = ["public.orders"]
heartbeat_interval = "500ms"
read_timeout = "20s"
status_interval = "2s"
max_transaction_rows = 5000
"#;
        let mut config: ConnectorConfig = toml::from_str(text).unwrap();
        assert_eq!(config.kind(), "postgres");
        config
            .resolve_secrets(&|v| (v == "PG_PW").then(|| "s3cret".to_owned()))
            .unwrap();
        config.capture_tables([TableName::new("public", "lines")]);
        let ConnectorConfig::Postgres(c) = &config else {
            panic!("{config:?}")
        };
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(c.tables, ["public.orders", "public.lines"]);
        assert_eq!(config.describe(), "postgresql://databus@db1:5433/shop");
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("s3cret") && !format!("{config:?}").contains("s3cret"));
        let mut back: ConnectorConfig = toml::from_str(&printed).unwrap();
        back.resolve_secrets(&|v| (v == "PG_PW").then(|| "s3cret".to_owned()))
            .unwrap();
        assert_eq!(back, config, "{printed}");
        assert!(matches!(
            config.build(),
            Ok(AnySourceConnector::Postgres(_))
        ));
    }
}
