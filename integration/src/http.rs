//! A minimal HTTP/1.0 `GET` for status polling (the harness talks to relays and bootstrap servers
//! only through their public HTTP API, like an operator would).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET base + path` (base is `http://host:port`); returns the status code and the body as JSON
/// (`Null` when the body is not JSON). Fails on connection errors and after `timeout`.
pub async fn get_json(
    base: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, serde_json::Value)> {
    let (status, body) = get(base, path, timeout).await?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// `GET base + path`: the status code and the raw body (e.g. `/metrics`).
pub async fn get(base: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("{base} is not an http:// URL"))?
        .trim_end_matches('/')
        .to_owned();
    let fetch = async {
        let mut conn = TcpStream::connect(&authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: */*\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, fetch)
        .await
        .with_context(|| format!("GET {base}{path}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET {base}{path}"))?;
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("GET {base}{path}: response without a header end");
    };
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {base}{path}: malformed status line in {head}"))?;
    Ok((status, raw[head_end + 4..].to_vec()))
}
