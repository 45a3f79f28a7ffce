//! `databus check-source`: connect to a MySQL/MariaDB server and report each setting and grant capture
//! needs as OK or what to change.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use databus_connectors::mysql::{CheckOutcome, MySqlConfig, MySqlConnector, SourceCheck};
use databus_http::redact_password;

/// Runs the checks against `url` for a replication connection with `server_id`.
pub async fn check(url: &str, server_id: u32) -> Result<Vec<SourceCheck>> {
    let mut config = MySqlConfig::new(url.to_owned(), server_id);
    // The checks concern the server and the user, not a table; the connector's configuration still
    // wants something captured to be valid.
    config.databases = vec!["mysql".to_owned()];
    MySqlConnector::check_source(&config)
        .await
        .with_context(|| format!("cannot check the source at {}", redact_password(url)))
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
