//! Source validation: each setting capture needs, as a list a `databus check-source` command can print.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::ConnectorError;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The setting is as needed.
    Ok,
    /// The setting is wrong; the text says what it is and what to change.
    Fix(String),
}

/// One checked setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCheck {
    /// The setting, e.g. `binlog_format`.
    pub setting: &'static str,
    /// Whether it is fine, or what to change.
    pub outcome: CheckOutcome,
}

impl SourceCheck {
    fn new(setting: &'static str, ok: bool, fix: impl FnOnce() -> String) -> Self {
        let outcome = if ok {
            CheckOutcome::Ok
        } else {
            CheckOutcome::Fix(fix())
        };
        Self { setting, outcome }
    }
}

async fn var(conn: &mut Conn, name: &str) -> Result<String, ConnectorError> {
    let v: Option<Option<String>> = conn
        .query_first(format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)"))
        .await
        .map_err(|source| ConnectorError::Query {
            what: format!("reading @@{name}"),
            source,
        })?;
    Ok(v.flatten().unwrap_or_default())
}

fn is_on(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("ON")
}

/// Runs every check on `conn` for a connector using replication `server_id`.
pub(crate) async fn run_checks(
    conn: &mut Conn,
    server_id: u32,
) -> Result<Vec<SourceCheck>, ConnectorError> {
    let mut checks = Vec::new();
    let log_bin = var(conn, "log_bin").await?;
    checks.push(SourceCheck::new("log_bin", is_on(&log_bin), || {
        "log_bin is OFF; start the server with --log-bin (log_bin is not dynamic: restart needed)".into()
    }));
    let format = var(conn, "binlog_format").await?;
    checks.push(SourceCheck::new("binlog_format", format.eq_ignore_ascii_case("ROW"), || {
        format!("binlog_format is {format}; set binlog_format=ROW (SET GLOBAL binlog_format=ROW and in my.cnf)")
    }));
    let image = var(conn, "binlog_row_image").await?;
    checks.push(SourceCheck::new("binlog_row_image", image.eq_ignore_ascii_case("FULL"), || {
        format!("binlog_row_image is {image}; set binlog_row_image=FULL (SET GLOBAL binlog_row_image=FULL and in my.cnf)")
    }));
    let metadata = var(conn, "binlog_row_metadata").await?;
    checks.push(SourceCheck::new("binlog_row_metadata", metadata.eq_ignore_ascii_case("FULL"), || {
        format!(
            "binlog_row_metadata is {metadata}; set binlog_row_metadata=FULL (SET GLOBAL binlog_row_metadata=FULL and \
             in my.cnf): without it column names and signedness are missing"
        )
    }));
    let compress = var(conn, "log_bin_compress").await?;
    checks.push(SourceCheck::new("log_bin_compress", !is_on(&compress), || {
        "log_bin_compress is ON; set log_bin_compress=OFF (compressed rows events cannot be decoded)".into()
    }));
    let source_id = var(conn, "server_id").await?;
    checks.push(SourceCheck::new("server_id", source_id != server_id.to_string(), || {
        format!("the connector's server_id {server_id} equals the source's server_id; choose another server_id in the connector config")
    }));
    let gtid_pos = var(conn, "gtid_binlog_pos").await?;
    let domains = super::gtid_domains(&gtid_pos);
    checks.push(SourceCheck::new("gtid_domain_id", domains.len() <= 1, || {
        format!("the binlog has several GTID domains ({gtid_pos}); the connector captures a single gtid_domain_id")
    }));

    let grants: Vec<String> =
        conn.query("SHOW GRANTS")
            .await
            .map_err(|source| ConnectorError::Query {
                what: "SHOW GRANTS".into(),
                source,
            })?;
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_ascii_uppercase())
        .collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    checks.push(SourceCheck::new("grant REPLICATION SLAVE", has("REPLICATION SLAVE"), || {
        "the connector's user lacks REPLICATION SLAVE; GRANT REPLICATION SLAVE ON *.* TO the user".into()
    }));
    checks.push(SourceCheck::new(
        "grant BINLOG MONITOR",
        has("BINLOG MONITOR") || has("REPLICATION CLIENT"),
        || {
            "the connector's user lacks BINLOG MONITOR; GRANT BINLOG MONITOR ON *.* TO the user"
                .into()
        },
    ));
    Ok(checks)
}

/// The problems among `checks` (empty when all pass).
pub(crate) fn problems(checks: &[SourceCheck]) -> Vec<String> {
    checks
        .iter()
        .filter_map(|c| match &c.outcome {
            CheckOutcome::Ok => None,
            CheckOutcome::Fix(m) => Some(m.clone()),
        })
        .collect()
}
