//! `databus relay`: load `relay.toml`, optionally print the effective configuration, run the relay.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use databus_relay::config::RelayConfig;

use crate::print_config::{duration as dur, q, size};

/// Reads and parses `path` (unknown keys are rejected) and validates it against the environment.
/// Every failure is a [`UsageError`](crate::UsageError) naming the file and the field.
pub fn load(path: &Path) -> Result<(RelayConfig, databus_relay::ValidatedConfig)> {
    crate::load_config(path, RelayConfig::from_toml, RelayConfig::validate)
}

/// The effective configuration as TOML: every default filled in, the listen override applied,
/// passwords never shown (only where they come from).
pub fn render_effective(raw: &RelayConfig, listen: std::net::SocketAddr) -> String {
    let mut out =
        String::from("# effective relay configuration (defaults filled in, secrets redacted)\n");
    let _ = writeln!(
        out,
        "state_dir = {}",
        q(&raw.state_dir.display().to_string())
    );
    let h = &raw.http;
    let _ = writeln!(out, "\n[http]");
    let _ = writeln!(out, "listen = {}", q(&listen.to_string()));
    let _ = writeln!(
        out,
        "max_response_bytes = {}",
        q(&size(h.max_response_bytes.as_u64()))
    );
    let _ = writeln!(
        out,
        "default_response_bytes = {}",
        q(&size(h.default_response_bytes.as_u64()))
    );
    let _ = writeln!(out, "max_wait = {}", q(&dur(h.max_wait)));
    let _ = writeln!(
        out,
        "max_query_bytes = {}",
        q(&size(h.max_query_bytes.as_u64()))
    );
    let _ = writeln!(out, "max_concurrent_streams = {}", h.max_concurrent_streams);
    crate::print_config::security(&mut out, h.tls.as_ref(), h.auth.as_ref());
    crate::print_config::connections(&mut out, &h.connections);
    // The sources serialized from their own types (connector settings included, secrets only as
    // where they come from, sizes and durations in the parser's units).
    let sources = toml::Value::try_from(&raw.sources).map(|v| {
        let mut table = toml::Table::new();
        table.insert("sources".to_owned(), v);
        table
    });
    match sources.and_then(|t| toml::to_string(&t)) {
        Ok(text) => {
            out.push('\n');
            out.push_str(&text);
        }
        Err(e) => {
            let _ = writeln!(out, "# cannot print the sources: {e}");
        }
    }
    out
}

/// Binds `listen`, installs the Prometheus recorder and runs the relay until `shutdown`.
pub async fn run(
    mut config: databus_relay::ValidatedConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let listen = config.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; choose another address with --listen")
        })?;
    config.http.listen = listener.local_addr().unwrap_or(listen);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    if config.security.requires_token() {
        eprintln!("databus relay requires a bearer token on every endpoint but /health");
    }
    eprintln!(
        "databus relay listening on {}://{}",
        config.security.scheme(),
        config.http.listen
    );
    databus_relay::run_with(config, listener, Some(metrics), shutdown).await?;
    Ok(())
}
