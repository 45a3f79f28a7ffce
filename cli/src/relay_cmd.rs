//! `databus relay`: load `relay.toml`, optionally print the effective configuration, run the relay.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use databus_relay::config::RelayConfig;

/// Reads and parses `path` (unknown keys are rejected) and validates it against the environment.
/// Every failure is a [`UsageError`](crate::UsageError) naming the file and the field.
pub fn load(path: &Path) -> Result<(RelayConfig, databus_relay::ValidatedConfig)> {
    crate::load_config(path, RelayConfig::from_toml, RelayConfig::validate)
}

/// The effective configuration as TOML, serialized from the parsed configuration's own types (so it
/// cannot drift from what was parsed): every default filled in, the listen override applied, sizes and
/// durations in the units the parser reads, passwords and tokens never shown (only where they come
/// from), a password written in a URL masked.
pub fn render_effective(raw: &RelayConfig, listen: std::net::SocketAddr) -> String {
    let mut effective = raw.clone();
    effective.http.listen = listen;
    let mut out =
        String::from("# effective relay configuration (defaults filled in, secrets redacted)\n");
    match toml::to_string(&effective) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "# cannot print the configuration: {e}");
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
