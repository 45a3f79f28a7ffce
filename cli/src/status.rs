//! `databus status`: a relay's buffers (SCN ranges, fill, ingest state, lag) in human-readable form.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::http::{RelayUrl, get};

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

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn lag(ms: &Value) -> String {
    match ms.as_u64() {
        None => "-".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min", ms / 60_000),
    }
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
            bytes(used),
            bytes(cap)
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

#[cfg(test)]
mod tests {
    use super::*;

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
