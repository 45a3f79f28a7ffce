//! The relay's configuration file (`relay.toml`) and its validation into runtime types.
//!
//! The file says what data flows (sources, tables, buffer sizes, where state lives) and the HTTP limits;
//! how the process runs (log level, a listen-address override) belongs to flags and the environment.
//!
//! ```toml
//! state_dir = "/var/lib/databus/relay"
//!
//! [http]
//! listen = "127.0.0.1:11140"
//! max_response_bytes = "16MiB"
//! default_response_bytes = "1MiB"
//! max_wait = "30s"
//! # Optional: HTTPS and bearer tokens (see databus_http::server).
//! tls = { cert = "/etc/databus/relay.crt", key = "/etc/databus/relay.key" }
//! auth = { tokens_file = "/etc/databus/relay.tokens" }
//!
//! [[sources]]
//! name = "shop"
//! buffer_size = "512MiB"
//! tables = [
//!     { id = 1, name = "orders", table = "shop.orders" },
//!     { id = 2, name = "customers", table = "shop.customers" },
//! ]
//! # The database, read by the connector of its `kind`; every field is that connector's own setting
//! # (databus_connectors::ConnectorConfig). Relay chaining uses `upstream = { url = … }` instead.
//! [sources.connector]
//! kind = "mariadb"
//! url = "mysql://repl@db.example:3306"
//! password_env = "SHOP_REPL_PASSWORD"
//! server_id = 1001
//! read_timeout = "10s"
//! ```
//!
//! Parse with [`RelayConfig::from_toml`], then [`RelayConfig::validate`] into a [`ValidatedConfig`]; every
//! error names the field and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bytesize::ByteSize;
use databus_connectors::{ConnectorConfig, TableName};
use databus_core::SourceId;
pub use databus_http::server::config::{format_size, serialize_size};
use databus_http::server::{HttpServerConfig, ServerDefaults, ServerLimits, ServerSecurity};
use databus_http::{ClientOptions, Token};
use serde::{Deserialize, Serialize};

use crate::RelayError;

/// The whole relay configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Directory for the relay's small persisted state (the last SCN of each source). Created if missing.
    pub state_dir: PathBuf,
    /// The HTTP server and its limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// The physical sources (databases) this relay captures; each gets its own event buffer.
    pub sources: Vec<SourceConfig>,
}

/// The relay's defaults of the shared `[http]` section.
#[derive(Debug, Clone, Copy)]
pub struct RelayHttp;

impl ServerDefaults for RelayHttp {
    const PORT: u16 = 11140;
    const MAX_CONCURRENT_STREAMS: usize = 1024;
}

/// `[http]` of relay.toml: the section the bootstrap server has too ([`HttpServerConfig`]).
pub type HttpConfig = HttpServerConfig<RelayHttp>;

/// Validated HTTP settings, in runtime units.
pub type HttpSettings = ServerLimits;

/// One physical source: a database connection and the tables captured from it, or (relay chaining)
/// a buffer of another relay.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A short name for this source, unique in the relay (`[A-Za-z0-9_-]`); used in URLs, metrics and the
    /// state file name.
    pub name: String,
    /// The database this source captures: a table tagged with the connector's `kind`
    /// (`kind = "mariadb"`), whose other fields are that connector's own settings
    /// ([`ConnectorConfig`]; for MariaDB: `url`, `password_env`/`password_file`, `server_id`,
    /// `read_timeout`, `heartbeat_period`, `max_transaction_rows`, `reconnect`, …). The tables of
    /// `tables` are added to what it captures. Required unless `upstream` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorConfig>,
    /// Relay chaining: follow a buffer of another relay instead of a database, preserving its SCNs,
    /// windows, heartbeats and schemas. Excludes `connector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamConfig>,
    /// Earlier versions' flat database field: refused with the rewrite to `[sources.connector]`.
    #[doc(hidden)]
    #[serde(default, skip_serializing)]
    pub url: Option<toml::Value>,
    /// Earlier versions' flat database field: refused with the rewrite to `[sources.connector]`.
    #[doc(hidden)]
    #[serde(default, skip_serializing)]
    pub password_env: Option<toml::Value>,
    /// Earlier versions' flat database field: refused with the rewrite to `[sources.connector]`.
    #[doc(hidden)]
    #[serde(default, skip_serializing)]
    pub password_file: Option<toml::Value>,
    /// Earlier versions' flat database field: refused with the rewrite to `[sources.connector]`.
    #[doc(hidden)]
    #[serde(default, skip_serializing)]
    pub server_id: Option<toml::Value>,
    /// Byte capacity of this source's event buffer. Default 256 MiB.
    #[serde(default = "default_buffer_size", serialize_with = "serialize_size")]
    pub buffer_size: ByteSize,
    /// History refill: on a restart, re-read this many transactions before the persisted SCN from the
    /// database's binlog (MariaDB SCNs are GTID sequence numbers, one per transaction), so that a
    /// restarted relay serves recent history again. Falls back to the persisted SCN when the binlog no
    /// longer has them. Database sources only. Default 0.
    #[serde(default)]
    pub history_transactions: u64,
    /// Before images: updates are sent as `update` events carrying the row before the change as well
    /// as after it (for consumers that need the prior state: removing old index terms, invalidating a
    /// cache keyed by another column, audit). Costs buffer space and encoding time for every update
    /// (docs/BENCHMARKS.md, "Before images"). Deletes always carry the row as it was. Database sources
    /// only. Default false.
    #[serde(default)]
    pub before_images: bool,
    /// Event buffer on transparent huge pages (2 MiB) instead of 4 KiB pages. Default false: on
    /// virtual machines that hand freed memory back to their host, first faulting huge pages in costs
    /// the relay several times the CPU while it first fills its buffer (docs/operations.md, "Sizing
    /// the relay buffer"); on bare metal they may save TLB misses.
    #[serde(default)]
    pub buffer_huge_pages: bool,
    /// The tables captured, each mapped to a logical source id and name.
    pub tables: Vec<TableConfig>,
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&databus_connectors::redact_url(url))
}

fn default_buffer_size() -> ByteSize {
    ByteSize::mib(256)
}

impl SourceConfig {
    /// The flat MySQL fields a `[[sources]]` entry had before `[sources.connector]`: any of them is an
    /// error that says how to rewrite the entry.
    fn legacy_error(&self, at: &dyn Fn(&str) -> String) -> Option<RelayError> {
        let mut lines = vec!["kind = \"mariadb\"".to_owned()];
        let mut names = Vec::new();
        for (name, value) in [
            ("url", &self.url),
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
            ("server_id", &self.server_id),
        ] {
            if let Some(v) = value {
                names.push(name);
                lines.push(format!("{name} = {v}"));
            }
        }
        (!names.is_empty()).then(|| {
            invalid(
                at(names[0]),
                format!(
                    "the database settings moved into a [sources.connector] table tagged with the \
                     connector's kind; move {} there: [sources.connector] {}",
                    names.join(", "),
                    lines.join(" ")
                ),
            )
        })
    }
}

/// The upstream relay of a chained source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream relay's base URL, `http://host:port` or `https://host:port` (serialized with
    /// any password in it masked).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// The upstream buffer to follow. Default: this source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<String>,
    /// PEM file of the CA (or self-signed certificate) of an `https` upstream; default the web PKI
    /// roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Environment variable holding the bearer token sent to the upstream. At most one of
    /// `token_env` and `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the bearer token sent to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// One captured table, a logical source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The logical source id events of this table carry; unique in the relay.
    pub id: u16,
    /// The logical source name consumers see (e.g. `orders`); unique in the relay.
    pub name: String,
    /// The table, as `database.table`.
    pub table: String,
}

pub use databus_connectors::Secret;

/// A validated configuration: runtime types, credentials resolved.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// Directory for persisted state.
    pub state_dir: PathBuf,
    /// HTTP server settings.
    pub http: HttpSettings,
    /// TLS and bearer-token authentication of the HTTP server (certificate, key and tokens loaded).
    pub security: ServerSecurity,
    /// The sources, in file order.
    pub sources: Vec<ValidatedSource>,
}

/// A validated source.
#[derive(Debug, Clone)]
pub struct ValidatedSource {
    /// Unique name.
    pub name: String,
    /// Where its events come from.
    pub origin: Origin,
    /// Event buffer capacity in bytes.
    pub buffer_bytes: usize,
    /// Transactions before the persisted SCN to re-read on a restart.
    pub history_transactions: u64,
    /// Whether updates carry their before image.
    pub before_images: bool,
    /// Whether the event buffer is on huge pages.
    pub buffer_huge_pages: bool,
    /// The captured tables.
    pub tables: Vec<ValidatedTable>,
}

/// Where a source's events come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A database, read by the connector this configuration builds (secrets resolved, the relay's
    /// tables added to what it captures): [`ConnectorConfig::build`].
    Connector(ConnectorConfig),
    /// Another relay's buffer (relay chaining).
    Relay {
        /// The upstream relay's base URL (`http[s]://host:port`).
        url: String,
        /// The upstream buffer's name.
        buffer: String,
        /// Its CA file and the token to send (never printed).
        client: ClientOptions,
    },
}

/// A validated table mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedTable {
    /// Logical source id.
    pub id: SourceId,
    /// Logical source name.
    pub name: String,
    /// Database name.
    pub database: String,
    /// Table name.
    pub table: String,
}

/// The smallest event buffer a source may configure.
pub const MIN_BUFFER_BYTES: u64 = 1 << 20;
pub use databus_http::server::config::{MAX_RESPONSE_BYTES_LIMIT, MAX_WAIT_LIMIT};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RelayError {
    RelayError::Config {
        field: field.into(),
        message: message.into(),
    }
}

fn to_usize(field: &str, size: ByteSize) -> Result<usize, RelayError> {
    usize::try_from(size.as_u64())
        .map_err(|_| invalid(field, format!("{size} does not fit this platform's memory")))
}

/// A `field: message` error of `databus_http` as a configuration error of that field.
fn http_config_error(e: databus_http::HttpError) -> RelayError {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((field, message)) if !field.contains(' ') => invalid(field, message),
        _ => invalid("http", text),
    }
}

/// Refuses a name that is not 1 to 64 characters of `[A-Za-z0-9_-]`, naming the field.
fn check_name(field: String, name: &str) -> Result<(), RelayError> {
    if valid_name(name) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!("{name:?} is not a valid name; use 1 to 64 characters of [A-Za-z0-9_-]"),
    ))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RelayConfig {
    /// Parses the TOML text of a configuration file (no validation yet).
    pub fn from_toml(text: &str) -> Result<Self, RelayError> {
        toml::from_str(text).map_err(|e| RelayError::ConfigSyntax(e.to_string()))
    }

    /// Reads and parses a configuration file.
    pub fn read_file(path: &std::path::Path) -> Result<Self, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|e| RelayError::Io {
            what: format!("cannot read config file {}", path.display()),
            source: e,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            RelayError::ConfigSyntax(msg) => {
                RelayError::ConfigSyntax(format!("{}: {msg}", path.display()))
            }
            other => other,
        })
    }

    /// Validates every field and resolves credentials, reading the environment through `env`.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ValidatedConfig, RelayError> {
        let http = self
            .http
            .validate()
            .map_err(|e| invalid(e.key, e.message))?;
        let security = ServerSecurity::from_config(
            "http",
            self.http.tls.as_ref(),
            self.http.auth.as_ref(),
            &self.http.connections,
            env,
        )
        .map_err(http_config_error)?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid(
                "state_dir",
                "is empty; set a directory the relay may write",
            ));
        }
        if self.sources.is_empty() {
            return Err(invalid(
                "sources",
                "no source configured; add a [[sources]] table",
            ));
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeMap::new();
        let mut logical_names = BTreeSet::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, source) in self.sources.iter().enumerate() {
            let at = |field: &str| format!("sources[{i}].{field}");
            check_name(at("name"), &source.name)?;
            if !names.insert(source.name.clone()) {
                return Err(invalid(
                    at("name"),
                    format!(
                        "{:?} is used by two sources; names must be unique",
                        source.name
                    ),
                ));
            }
            if let Some(e) = source.legacy_error(&at) {
                return Err(e);
            }
            if source.upstream.is_some() && source.before_images {
                return Err(invalid(
                    at("before_images"),
                    "applies to database sources only (a chained relay serves what its upstream \
                     sends); set it on the upstream relay's source",
                ));
            }
            let origin = match (&source.upstream, &source.connector) {
                (Some(up), None) => {
                    let token = Token::read_one(
                        &at("upstream"),
                        up.token_env.as_deref(),
                        up.token_file.as_deref(),
                        env,
                    )
                    .map_err(http_config_error)?;
                    let client = ClientOptions {
                        ca_cert: up.ca_cert.clone(),
                        token,
                    };
                    // Parses the URL and reads the CA file now, so that mistakes stop the start.
                    let upstream = databus_http::HttpClient::new(&up.url, &client)
                        .map_err(|e| invalid(at("upstream.url"), e.to_string()))?;
                    if !upstream.endpoint().prefix().is_empty() {
                        return Err(invalid(
                            at("upstream.url"),
                            format!("{:?} has a path; give http[s]://host:port", up.url),
                        ));
                    }
                    let buffer = up.buffer.clone().unwrap_or_else(|| source.name.clone());
                    if !valid_name(&buffer) {
                        return Err(invalid(
                            at("upstream.buffer"),
                            format!("{buffer:?} is not a buffer name"),
                        ));
                    }
                    Origin::Relay {
                        url: upstream.url().to_owned(),
                        buffer,
                        client,
                    }
                }
                (Some(_), _) if source.history_transactions > 0 => {
                    return Err(invalid(
                        at("history_transactions"),
                        "applies to database sources only; remove it from the chained source",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at("upstream"),
                        "a chained source takes no connector; keep one of upstream and connector",
                    ));
                }
                (None, Some(connector)) => {
                    let mut connector = connector.clone();
                    connector
                        .resolve_secrets(env)
                        .map_err(|e| invalid(at("connector"), connector_message(e)))?;
                    connector.capture_tables(source.tables.iter().filter_map(|t| {
                        t.table.split_once('.').map(|(d, n)| TableName::new(d, n))
                    }));
                    Origin::Connector(connector)
                }
                (None, None) => {
                    return Err(invalid(
                        at("connector"),
                        "missing; add a [sources.connector] table with the database's kind (kind = \"mariadb\" with \
                         url, server_id, …; or kind = \"postgres\" with host, user, database, …), or upstream to chain another relay",
                    ));
                }
            };
            if source.buffer_size.as_u64() < MIN_BUFFER_BYTES {
                return Err(invalid(
                    at("buffer_size"),
                    format!("{} is too small; use at least 1MiB", source.buffer_size),
                ));
            }
            if source.tables.is_empty() {
                return Err(invalid(
                    at("tables"),
                    "no table captured; list at least one",
                ));
            }
            let mut tables = Vec::with_capacity(source.tables.len());
            for (j, table) in source.tables.iter().enumerate() {
                let at = |field: &str| format!("sources[{i}].tables[{j}].{field}");
                if let Some(other) = ids.insert(table.id, source.name.clone()) {
                    return Err(invalid(
                        at("id"),
                        format!(
                            "source id {} is already used (source {other:?}); ids are unique in a relay",
                            table.id
                        ),
                    ));
                }
                check_name(at("name"), &table.name)?;
                if !logical_names.insert(table.name.clone()) {
                    return Err(invalid(
                        at("name"),
                        format!(
                            "{:?} is used twice; logical source names are unique",
                            table.name
                        ),
                    ));
                }
                let Some((database, name)) = table
                    .table
                    .split_once('.')
                    .filter(|(d, t)| !d.is_empty() && !t.is_empty() && !t.contains('.'))
                else {
                    return Err(invalid(
                        at("table"),
                        format!("{:?} is not of the form database.table", table.table),
                    ));
                };
                tables.push(ValidatedTable {
                    id: SourceId::new(table.id),
                    name: table.name.clone(),
                    database: database.to_owned(),
                    table: name.to_owned(),
                });
            }
            if let Origin::Connector(connector) = &origin {
                // Builds (and drops) the connector: its own validation stops the start.
                connector
                    .build()
                    .map_err(|e| invalid(at("connector"), connector_message(e)))?;
            }
            sources.push(ValidatedSource {
                name: source.name.clone(),
                origin,
                buffer_bytes: to_usize(&at("buffer_size"), source.buffer_size)?,
                history_transactions: source.history_transactions,
                before_images: source.before_images,
                buffer_huge_pages: source.buffer_huge_pages,
                tables,
            });
        }
        Ok(ValidatedConfig {
            state_dir: self.state_dir.clone(),
            http,
            security,
            sources,
        })
    }

    /// Validates against the process environment.
    pub fn validate(&self) -> Result<ValidatedConfig, RelayError> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }
}

/// A connector's configuration error without its "invalid connector config: " prefix (the field is
/// named by the relay's error).
fn connector_message(e: databus_connectors::ConnectorError) -> String {
    match e {
        databus_connectors::ConnectorError::Config(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GOOD: &str = r#"
state_dir = "/tmp/relay-state"

[http]
listen = "127.0.0.1:0"
max_response_bytes = "8MiB"
default_response_bytes = "512KiB"
max_wait = "10s"

[[sources]]
name = "shop"
buffer_size = "64MiB"
tables = [
    { id = 1, name = "orders", table = "shop.orders" },
    { id = 2, name = "customers", table = "shop.customers" },
]
[sources.connector]
kind = "mariadb"
url = "mysql://repl@127.0.0.1:3306"
password_env = "SHOP_PW"
server_id = 1001
read_timeout = "20s"
max_transaction_rows = 5000
"#;

    fn env(name: &str) -> Option<String> {
        (name == "SHOP_PW").then(|| "s3cret".to_owned())
    }

    #[test]
    fn good_config_validates_into_runtime_units() {
        let cfg = RelayConfig::from_toml(GOOD)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        assert_eq!(cfg.http.max_response_bytes, 8 << 20);
        assert_eq!(cfg.http.default_response_bytes, 512 << 10);
        assert_eq!(cfg.http.max_wait, Duration::from_secs(10));
        let source = &cfg.sources[0];
        assert_eq!(source.buffer_bytes, 64 << 20);
        let Origin::Connector(ConnectorConfig::MariaDb(mysql)) = &source.origin else {
            panic!("{source:?}")
        };
        assert_eq!(mysql.password.as_ref().unwrap().expose(), "s3cret");
        // Every connector setting reaches the connector; the relay's tables are captured.
        assert_eq!(mysql.read_timeout, Duration::from_secs(20));
        assert_eq!(mysql.max_transaction_rows, 5000);
        assert_eq!(mysql.tables, ["shop.orders", "shop.customers"]);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(source.tables[1].database, "shop");
        assert_eq!(source.tables[1].table, "customers");
        assert_eq!(source.tables[1].id, SourceId::new(2));
    }

    #[test]
    fn sizes_print_in_the_units_the_parser_reads() {
        for (n, text) in [
            (4 << 20, "4MiB"),
            (1500, "1500B"),
            (3 << 30, "3GiB"),
            (2048, "2KiB"),
        ] {
            assert_eq!(format_size(n), text);
            assert_eq!(text.parse::<ByteSize>().unwrap().as_u64(), n);
        }
    }

    #[test]
    fn the_old_flat_database_fields_are_refused_with_the_rewrite() {
        let text = r#"
state_dir = "s"
[[sources]]
name = "a"
url = "mysql://repl@db:3306"
password_env = "SHOP_PW"
server_id = 7
tables = [{ id = 1, name = "t", table = "d.t" }]
"#;
        let err = RelayConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources[0].url")
                && err.contains("[sources.connector] kind = \"mariadb\" url = \"mysql://repl@db:3306\" password_env = \"SHOP_PW\" server_id = 7"),
            "{err}"
        );
    }

    #[test]
    fn defaults_apply() {
        let text = r#"
state_dir = "s"
[[sources]]
name = "a"
tables = [{ id = 1, name = "t", table = "d.t" }]
connector = { kind = "mariadb", url = "mysql://x@h/", server_id = 7 }
"#;
        let cfg = RelayConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        assert_eq!(cfg.http, HttpSettings::defaults::<RelayHttp>());
        // Secure defaults: loopback only, plain HTTP, no tokens unless configured.
        assert!(cfg.http.listen.ip().is_loopback(), "{}", cfg.http.listen);
        assert!(!cfg.security.is_tls() && !cfg.security.requires_token());
        assert_eq!(cfg.sources[0].buffer_bytes, 256 << 20);
        assert!(
            !cfg.sources[0].buffer_huge_pages,
            "4 KiB pages unless asked"
        );
        let huge = RelayConfig::from_toml(
            &text.replace("name = \"a\"", "name = \"a\"\nbuffer_huge_pages = true"),
        )
        .unwrap()
        .validate_with_env(&env)
        .unwrap();
        assert!(huge.sources[0].buffer_huge_pages);
        let Origin::Connector(ConnectorConfig::MariaDb(mysql)) = &cfg.sources[0].origin else {
            panic!()
        };
        assert_eq!((mysql.password.as_ref(), mysql.server_id), (None, 7));
        assert_eq!(
            mysql.read_timeout,
            Duration::from_secs(10),
            "the connector's default"
        );
    }

    #[test]
    fn password_file_is_read_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = GOOD.replace(
            "password_env = \"SHOP_PW\"",
            &format!("password_file = {:?}", path.display().to_string()),
        );
        let cfg = RelayConfig::from_toml(&text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        let Origin::Connector(ConnectorConfig::MariaDb(mysql)) = &cfg.sources[0].origin else {
            panic!()
        };
        assert_eq!(mysql.password.as_ref().unwrap().expose(), "from-file");
    }

    #[test]
    fn chained_source() {
        let text = r#"
state_dir = "s"
[[sources]]
name = "shop"
upstream = { url = "http://127.0.0.1:11140" }
tables = [{ id = 1, name = "t", table = "d.t" }]
"#;
        let cfg = RelayConfig::from_toml(text)
            .unwrap()
            .validate_with_env(&env)
            .unwrap();
        let Origin::Relay {
            url,
            buffer,
            client,
        } = &cfg.sources[0].origin
        else {
            panic!()
        };
        assert_eq!(url, "http://127.0.0.1:11140");
        assert_eq!(client, &ClientOptions::default());
        assert_eq!(buffer, "shop");
        for (from, to, needle) in [
            (
                "upstream = {",
                "server_id = 3\nupstream = {",
                "moved into a [sources.connector]",
            ),
            (
                "upstream = {",
                "connector = { kind = \"mariadb\", url = \"mysql://u@h/\", server_id = 3 }\nupstream = {",
                "keep one of upstream and connector",
            ),
            (
                "http://127.0.0.1:11140",
                "ftp://x:1",
                "use http:// or https://",
            ),
            ("http://127.0.0.1:11140", "http://x:1/a", "has a path"),
            (
                "upstream = { url = \"http://127.0.0.1:11140\" }",
                "",
                "sources[0].connector: missing",
            ),
        ] {
            let text = text.replacen(from, &to.replace("\\n", "\n"), 1);
            let err = RelayConfig::from_toml(&text)
                .and_then(|c| c.validate_with_env(&env))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn bad_configs_name_the_field_and_the_fix() {
        for (from, to, needle) in [
            (
                "server_id = 1001",
                "server_id = 1001\nbogus = 1",
                "unknown field `bogus`",
            ),
            (
                "buffer_size = \"64MiB\"",
                "buffer_size = \"64MiB\"\nbogus = 1",
                "unknown field `bogus`",
            ),
            ("\"mariadb\"", "\"oracle\"", "unknown variant `oracle`"),
            (
                "read_timeout = \"20s\"",
                "read_timeout = \"1ms\"",
                "sources[0].connector: read_timeout",
            ),
            ("\"8MiB\"", "\"2GiB\"", "http.max_response_bytes"),
            ("\"512KiB\"", "\"9MiB\"", "http.default_response_bytes"),
            ("\"10s\"", "\"1h\"", "http.max_wait"),
            ("\"10s\"", "\"ten seconds\"", "max_wait"),
            (
                "\"64MiB\"",
                "\"12KiB\"",
                "sources[0].buffer_size: 12.0 KiB is too small",
            ),
            (
                "SHOP_PW",
                "NOT_SET_PW",
                "environment variable NOT_SET_PW is not set",
            ),
            (
                "id = 2,",
                "id = 1,",
                "sources[0].tables[1].id: source id 1 is already used",
            ),
            (
                "\"shop.customers\"",
                "\"customers\"",
                "not of the form database.table",
            ),
            ("name = \"shop\"", "name = \"sh op\"", "sources[0].name"),
            ("name = \"customers\"", "name = \"orders\"", "is used twice"),
            (
                "server_id = 1001",
                "server_id = 0",
                "sources[0].connector: server_id 0",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let err = RelayConfig::from_toml(&text)
                .and_then(|c| c.validate_with_env(&env))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
    }
}
