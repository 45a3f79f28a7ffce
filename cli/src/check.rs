//! `databus check-source`: connect to a source and report each setting and grant capture needs as OK
//! or what to change. The checks are the connector's own ([`ConnectorConfig::check`]); this module
//! only builds the configuration from flags and renders the findings.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use databus_connectors::mysql::MySqlConfig;
use databus_connectors::postgres::PgConfig;
use databus_connectors::{CheckOutcome, ConnectorConfig, SourceCheck};
use databus_http::redact_password;

use crate::UsageError;

/// The connector configuration of the flags: `kind` (as in relay.toml), URL, password variable,
/// replication server id (MariaDB) and captured tables. Adding a kind is one arm here.
pub fn connector_config(
    kind: &str,
    url: &str,
    password_env: Option<&str>,
    server_id: u32,
    tables: &[String],
) -> Result<ConnectorConfig, UsageError> {
    match kind {
        "mariadb" => {
            let mut c = MySqlConfig::new(url, server_id);
            c.password_env = password_env.map(str::to_owned);
            c.tables = tables.to_vec();
            Ok(ConnectorConfig::MariaDb(c))
        }
        "postgres" => {
            let mut c = pg_config_of_url(url)?;
            if tables.is_empty() {
                return Err(UsageError(
                    "--kind postgres needs the captured tables: --table schema.table (repeat it)"
                        .into(),
                ));
            }
            c.password_env = password_env.map(str::to_owned);
            c.tables = tables.to_vec();
            Ok(ConnectorConfig::Postgres(c))
        }
        other => Err(UsageError(format!(
            "--kind {other:?} is not a source kind; use mariadb or postgres"
        ))),
    }
}

/// `postgres://user@host[:port]/database` (or `postgresql://`) as a [`PgConfig`]. A password in the
/// URL is refused: it goes in the variable `--password-env` names.
pub fn pg_config_of_url(url: &str) -> Result<PgConfig, UsageError> {
    let usage = |why: &str| {
        UsageError(format!(
            "--url {}: {why}; write postgres://user@host:port/database",
            redact_password(url)
        ))
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| usage("not a postgres:// URL"))?;
    let (authority, database) = rest.split_once('/').ok_or_else(|| usage("no database"))?;
    let database = database.split(['?', '#']).next().unwrap_or_default();
    let (user, host_port) = authority.rsplit_once('@').ok_or_else(|| usage("no user"))?;
    if user.contains(':') {
        return Err(usage(
            "the password does not go in the URL (give the name of a variable holding it with --password-env)",
        ));
    }
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| usage("the port is not a number"))?,
        ),
        None => (host_port, 5432),
    };
    if user.is_empty() || host.is_empty() || database.is_empty() {
        return Err(usage("user, host and database are required"));
    }
    Ok(PgConfig::new(host, port, user, "", database))
}

/// The connector configurations of a validated relay configuration (secrets resolved): its source
/// named `only`, or every database source.
pub fn sources_of(
    config: &databus_relay::ValidatedConfig,
    only: Option<&str>,
) -> Result<Vec<ConnectorConfig>, UsageError> {
    let picked: Vec<ConnectorConfig> = config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|name| s.name == name))
        .filter_map(|s| match &s.origin {
            databus_relay::config::Origin::Connector(c) => Some(c.clone()),
            databus_relay::config::Origin::Relay { .. } => None,
        })
        .collect();
    if picked.is_empty() {
        return Err(UsageError(match only {
            Some(name) => format!("--source {name:?}: no database source of that name in --config"),
            None => "--config has no database source ([sources.connector])".into(),
        }));
    }
    Ok(picked)
}

/// Runs the connector's checks of the source.
pub async fn check(config: &ConnectorConfig) -> Result<Vec<SourceCheck>> {
    config
        .check()
        .await
        .with_context(|| format!("cannot check the source at {}", config.describe()))
}

/// Renders the checks, one line each; returns the text and whether every check passed.
pub fn render(url: &str, checks: &[SourceCheck]) -> (String, bool) {
    let mut out = format!("checking {}\n", redact_password(url));
    let mut all_ok = true;
    for check in checks {
        match &check.outcome {
            CheckOutcome::Ok => {
                let _ = writeln!(out, "  ok    {}", check.setting);
            }
            CheckOutcome::Fix(fix) => {
                all_ok = false;
                let _ = writeln!(out, "  FIX   {}: {fix}", check.setting);
            }
        }
    }
    if all_ok {
        out.push_str("the source is ready for databus\n");
    } else {
        out.push_str("the source needs the changes above before databus can capture it\n");
    }
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls() {
        let c = pg_config_of_url("postgres://relay@db.example:5433/shop").unwrap();
        assert_eq!(
            (
                c.user.as_str(),
                c.host.as_str(),
                c.port,
                c.database.as_str()
            ),
            ("relay", "db.example", 5433, "shop")
        );
        let c = pg_config_of_url("postgresql://relay@db/shop?sslmode=disable").unwrap();
        assert_eq!((c.port, c.database.as_str()), (5432, "shop"));
        let e = pg_config_of_url("postgres://relay:hunter2@db/shop")
            .unwrap_err()
            .0;
        assert!(
            e.contains("--password-env") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(pg_config_of_url("mysql://relay@db/shop").is_err());
        assert!(pg_config_of_url("postgres://relay@db").is_err());
        let e = connector_config("postgres", "postgres://relay@db/shop", None, 1, &[])
            .unwrap_err()
            .0;
        assert!(e.contains("--table"), "{e}");
    }

    #[test]
    fn renders_fixes() {
        let checks = vec![
            SourceCheck {
                setting: "log_bin",
                outcome: CheckOutcome::Ok,
            },
            SourceCheck {
                setting: "binlog_format",
                outcome: CheckOutcome::Fix("set binlog_format=ROW".into()),
            },
        ];
        let (text, ok) = render("mysql://u:secret@h:1", &checks);
        assert!(!ok);
        assert!(
            text.contains("  FIX   binlog_format: set binlog_format=ROW"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
