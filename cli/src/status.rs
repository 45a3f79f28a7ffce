//! `databus status`: a relay's buffers (SCN ranges, fill, ingest state, lag), or with `--bootstrap` a
//! bootstrap server's health, roles, log and snapshot, in human-readable form.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::http::{AnswerJson, RelayUrl, get};

/// Fetches `/v1/status` and `/v1/sources` from `relay`.
pub async fn fetch(relay: &RelayUrl) -> Result<(Value, Value)> {
    let status = get(relay, "/v1/status", Duration::from_secs(10)).await?;
    if status.status != 200 {
        bail!(
            "/v1/status answered {}: {}",
            status.status,
            status.error_message()
        );
    }
    let sources = get(relay, "/v1/sources", Duration::from_secs(10)).await?;
    if sources.status != 200 {
        bail!(
            "/v1/sources answered {}: {}",
            sources.status,
            sources.error_message()
        );
    }
    Ok((status.json()?, sources.json()?))
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lag(ms: &Value) -> String {
    ms.as_u64()
        .map_or_else(|| "-".to_owned(), databus_http::human::duration_ms)
}

/// Renders the status for a terminal.
pub fn render(relay: &RelayUrl, status: &Value, sources: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "relay {relay}   (in a browser: {relay}/)");
    let empty = Vec::new();
    for b in status["buffers"].as_array().unwrap_or(&empty) {
        let name = b["name"].as_str().unwrap_or("?");
        let ingest = &b["ingest"];
        let _ = writeln!(out, "\nbuffer {name}");
        let _ = writeln!(out, "  ingest      {}", opt(&ingest["state"]));
        let _ = writeln!(out, "  position    {}", opt(&ingest["position"]));
        let _ = writeln!(
            out,
            "  scn range   {}..={}   (last evicted: {})",
            opt(&b["min_scn"]),
            opt(&b["max_scn"]),
            opt(&b["prev_scn"])
        );
        let used = b["bytes"].as_u64().unwrap_or(0);
        let cap = b["capacity_bytes"].as_u64().unwrap_or(0);
        let pct = if cap > 0 {
            used as f64 * 100.0 / cap as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  held        {} events in {} windows, {} of {} ({pct:.1}%)",
            opt(&b["events"]),
            opt(&b["windows"]),
            databus_http::human::bytes(used),
            databus_http::human::bytes(cap)
        );
        let _ = writeln!(out, "  ingest lag  {}", lag(&b["ingest_lag_ms"]));
        let _ = writeln!(out, "  long polls  {} waiting", opt(&b["waiting_readers"]));
        if !ingest["last_error"].is_null() {
            let _ = writeln!(out, "  last error  {}", opt(&ingest["last_error"]));
        }
        let tables: Vec<String> = sources["sources"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter(|s| s["buffer"].as_str() == Some(name))
            .map(|s| {
                format!(
                    "{} ({}, id {})",
                    opt(&s["name"]),
                    opt(&s["table"]),
                    opt(&s["id"])
                )
            })
            .collect();
        if !tables.is_empty() {
            let _ = writeln!(out, "  sources     {}", tables.join(", "));
        }
    }
    out
}

/// Fetches a bootstrap server's `/v1/status`.
pub async fn fetch_bootstrap(server: &RelayUrl) -> Result<Value> {
    let status = get(server, "/v1/status", Duration::from_secs(10)).await?;
    if status.status != 200 {
        bail!(
            "/v1/status answered {}: {}",
            status.status,
            status.error_message()
        );
    }
    status.json()
}

/// Renders a bootstrap server's status for a terminal: health first (each problem with its fix), then
/// each role's report, the log and the snapshot.
pub fn render_bootstrap(server: &RelayUrl, status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bootstrap server {server}   (in a browser: {server}/)");
    let empty = Vec::new();
    let problems = status["health"]["problems"].as_array().unwrap_or(&empty);
    if problems.is_empty() {
        let _ = writeln!(out, "  health      ok");
    } else {
        let _ = writeln!(out, "  health      NOT OK (/health answers 503)");
        for p in problems {
            let _ = writeln!(
                out,
                "    {} {}: {}",
                opt(&p["role"]),
                opt(&p["state"]),
                opt(&p["message"])
            );
        }
    }
    let roles = status["roles"].as_array().unwrap_or(&empty);
    for role in ["producer", "applier"] {
        let text = match roles.iter().find(|r| r["role"] == role) {
            None => "not reported (never ran on this database)".to_owned(),
            Some(r) => {
                let mut t = opt(&r["state"]);
                if !r["message"].is_null() {
                    t.push_str(&format!(": {}", opt(&r["message"])));
                }
                t
            }
        };
        let _ = writeln!(out, "  {role:<11} {text}");
    }
    let _ = writeln!(
        out,
        "  log         {}..={}   (complete after {}; {} windows, {} events)",
        opt(&status["log_first_scn"]),
        opt(&status["log_last_scn"]),
        opt(&status["log_floor_scn"]),
        opt(&status["log_windows"]),
        opt(&status["log_events"])
    );
    let _ = writeln!(
        out,
        "  snapshot    applied {}, base {}, {} rows, seeded {}, generation {}",
        opt(&status["applied_scn"]),
        opt(&status["snapshot_base_scn"]),
        opt(&status["snapshot_rows"]),
        opt(&status["seeded"]),
        opt(&status["generation"])
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bootstrap_server_with_its_problems() {
        let status = serde_json::json!({"log_floor_scn":0,"log_first_scn":1,"log_last_scn":20,
            "log_windows":20,"log_events":20,"applied_scn":20,"snapshot_base_scn":0,"snapshot_rows":20,
            "seeded":false,"health":{"status":"unhealthy","problems":[{"role":"producer","state":"blocked",
            "message":"the producer cannot go on: relay x no longer holds the events after SCN 20"}]},
            "roles":[{"role":"producer","state":"blocked","message":"relay x no longer holds the events after SCN 20",
            "updated_ms":1,"since_ms":1,"caught_up_ms":null}]});
        let text = render_bootstrap(&RelayUrl::parse("http://127.0.0.1:2").unwrap(), &status);
        assert!(text.contains("health      NOT OK"), "{text}");
        assert!(
            text.contains("    producer blocked: the producer cannot go on: relay x"),
            "{text}"
        );
        assert!(text.contains("  applier     not reported"), "{text}");
        assert!(text.contains("log         1..=20"), "{text}");
    }

    #[test]
    fn renders_a_buffer() {
        let status = serde_json::json!({"buffers":[{"name":"shop","min_scn":7,"max_scn":10,"prev_scn":null,
            "bytes":1344,"events":5,"windows":4,"capacity_bytes":8388608,"waiting_readers":0,"ingest_lag_ms":850,
            "ingest":{"state":"streaming","position":"gtid 0-1-10","last_scn":10,"last_error":null}}]});
        let sources = serde_json::json!({"sources":[{"id":1,"name":"orders","table":"shop.orders","buffer":"shop"}]});
        let text = render(
            &RelayUrl::parse("http://127.0.0.1:1").unwrap(),
            &status,
            &sources,
        );
        assert!(text.contains("scn range   7..=10"), "{text}");
        assert!(text.contains("1.3 KiB of 8.0 MiB"), "{text}");
        assert!(text.contains("850 ms"), "{text}");
        assert!(text.contains("orders (shop.orders, id 1)"), "{text}");
        assert!(
            text.starts_with("relay http://127.0.0.1:1   (in a browser: http://127.0.0.1:1/)\n"),
            "{text}"
        );
    }
}
