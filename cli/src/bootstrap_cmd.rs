//! `databus bootstrap <role>`: load `bootstrap.toml`, optionally print the effective configuration, run
//! a role; seeding shows its progress.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use databus_bootstrap::config::BootstrapConfig;
use databus_bootstrap::seed::SeedTick;

/// Reads and parses `path` (unknown keys are rejected) and validates it. Every failure is a
/// [`UsageError`](crate::UsageError) naming the file and the field.
pub fn load(path: &Path) -> Result<(BootstrapConfig, databus_bootstrap::ValidatedConfig)> {
    crate::load_config(path, BootstrapConfig::from_toml, BootstrapConfig::validate)
}

/// The effective configuration as TOML, serialized from the parsed configuration's own types (so it
/// cannot drift from what was parsed): every default filled in, the listen override applied, sizes and
/// durations in the units the parser reads, passwords and tokens never shown (only where they come
/// from), a password written in a URL masked.
pub fn render_effective(raw: &BootstrapConfig, listen: std::net::SocketAddr) -> String {
    let mut effective = raw.clone();
    effective.http.listen = listen;
    let mut out = String::from(
        "# effective bootstrap configuration (defaults filled in, secrets redacted)\n",
    );
    match toml::to_string(&effective) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "# cannot print the configuration: {e}");
        }
    }
    out
}

/// Shows a seed's progress on stderr: on a terminal one line redrawn in place (at most 10 times a
/// second), otherwise a log line every `interval`; the last tick is always shown.
#[derive(Debug)]
pub struct SeedProgress {
    terminal: bool,
    interval: Duration,
    last: Option<Instant>,
    pending: Option<String>,
}

impl SeedProgress {
    /// Progress output for this process's stderr.
    pub fn new(interval: Duration) -> SeedProgress {
        SeedProgress::with_terminal(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            interval,
        )
    }

    /// As [`SeedProgress::new`], saying whether stderr is a terminal.
    pub fn with_terminal(terminal: bool, interval: Duration) -> SeedProgress {
        SeedProgress {
            terminal,
            interval: if terminal {
                Duration::from_millis(100)
            } else {
                interval
            },
            last: None,
            pending: None,
        }
    }

    /// One chunk stored.
    pub fn tick(&mut self, t: &SeedTick<'_>) {
        let line = format!("seeding {t}");
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.interval)
        {
            self.pending = Some(line);
            return;
        }
        self.last = Some(now);
        self.pending = None;
        self.show(&line);
    }

    fn show(&self, line: &str) {
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else {
            tracing::info!("{line}");
        }
    }

    /// The seed ended: shows the last tick if it was held back, and ends the terminal line.
    pub fn finish(&mut self) {
        if let Some(line) = self.pending.take() {
            self.show(&line);
        }
        if self.terminal && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Serves `/metrics` on `addr` for a role without the HTTP server, until `shutdown`.
pub async fn serve_metrics(
    config: &databus_bootstrap::ValidatedConfig,
    addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for --metrics-listen"))?;
    let store = databus_bootstrap::run::open_store(config)?;
    eprintln!(
        "databus bootstrap metrics on http://{}/metrics",
        listener.local_addr().unwrap_or(addr)
    );
    Ok(tokio::spawn(databus_bootstrap::metrics::serve(
        store, listener, shutdown,
    )))
}

/// `databus bootstrap pins`: the retention pins of the bootstrap database (one per bootstrap in
/// progress, by start SCN, with when it expires), removed first with `drop`. Reads the database file
/// directly, so it works with the server running or stopped.
pub fn pins(
    config: &databus_bootstrap::ValidatedConfig,
    drop: bool,
) -> Result<String, databus_bootstrap::BootstrapError> {
    use databus_bootstrap::store::{LogStore as _, SqliteStore};
    let store = SqliteStore::open_with(&config.db_path, config.store)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let pins = store.pins(now_ms)?;
    let mut out = String::new();
    if pins.is_empty() {
        out.push_str("no pins: nothing holds the log's retention back\n");
    }
    for (scn, expires_ms) in &pins {
        let _ = writeln!(
            out,
            "pin after SCN {scn}, expires in {}",
            databus_http::human::duration_ms(expires_ms.saturating_sub(now_ms))
        );
    }
    if drop {
        let n = store.drop_pins()?;
        let _ = writeln!(
            out,
            "dropped {n} pin(s): retention trims past them at its next run"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_config_fills_defaults_and_redacts() {
        let raw = BootstrapConfig::from_toml(
            "db_path = \"/tmp/b.sqlite\"\n[relay]\nurl = \"http://127.0.0.1:7000\"\n\
             token_env = \"RELAY_T\"\n[http]\nauth = { tokens_env = \"BS_T\" }\n\
             [seed]\nurl = \"mysql://seed:hunter2@db:3306/\"\n",
        )
        .unwrap();
        let text = render_effective(&raw, "127.0.0.1:9".parse().unwrap());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("mysql://seed:***@db:3306/"), "{text}");
        for needle in [
            "listen = \"127.0.0.1:9\"",
            "max_age = \"14days\"",
            "chunk_rows = 10000",
            "max_events = 50000",
            "pin_ttl = \"1h\"",
            "token_env = \"RELAY_T\"",
            "[http.auth]\ntokens_env = \"BS_T\"\nopen_metrics = false",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        // The rendering is a valid bootstrap.toml that means the same.
        let again = BootstrapConfig::from_toml(&text).unwrap();
        assert_eq!(
            render_effective(&again, "127.0.0.1:9".parse().unwrap()),
            text
        );
    }
}
