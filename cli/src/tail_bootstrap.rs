//! `databus tail --bootstrap URL`: follow a relay through a bootstrap server with the client library's
//! switchover (`databus_client`): a consistent snapshot (or a consolidated delta since an SCN the relay
//! no longer holds), then catch-up from the bootstrap server's log, then the relay's live changes.
//!
//! Output, one JSON object per line (pipe into `jq`): the relay's event fields (`scn`, `opcode`,
//! `source`, `partition`, `timestamp_ns`, `schema`, `key`, `payload`) plus `phase`:
//!
//! | `phase` | meaning |
//! |---------|---------|
//! | `snapshot` | a row of the snapshot (or delta): the row's state at the snapshot's SCN, not a change |
//! | `catchup` | a change replayed from the bootstrap server's log, after the snapshot |
//! | `online` | a live change from the relay |
//!
//! Progress goes to stderr while rows of a snapshot arrive (rows done, rate, and an estimate of the
//! time left from the bootstrap server's row count), with one line at each phase change as it happens
//! (even when no window follows, on an idle source): the bootstrap starts, the snapshot is done
//! (catch-up to SCN N), caught up at SCN N (the relay takes over).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use databus_client::{
    ClientConfig, DatabusClient, MemoryCheckpointStore, Phase, StartPosition, StreamItem,
    Transition, Window,
};
use databus_core::{Checkpoint, Scn};
use databus_filters::FilterSpec;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::UsageError;
use crate::http::{AnswerJson, RelayUrl, get};
use crate::tail::{Next, TailEnd};

/// Where a tail through a bootstrap server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapStart {
    /// A consistent snapshot of every row, then the changes after it.
    Snapshot,
    /// The changes from SCN `N` on: from the relay when it still holds them, else a consolidated delta
    /// since `N - 1` from the bootstrap server (the latest state of each row changed since), then on.
    Scn(Scn),
}

impl std::str::FromStr for BootstrapStart {
    type Err = String;

    /// `snapshot` or `scn:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "snapshot" => Ok(BootstrapStart::Snapshot),
            _ => match s.strip_prefix("scn:").map(str::parse::<u64>) {
                Some(Ok(n)) if n > 0 => Ok(BootstrapStart::Scn(Scn::new(n))),
                _ => Err(format!(
                    "{s:?} is not a start position; use snapshot or scn:N (N >= 1)"
                )),
            },
        }
    }
}

/// What `databus tail --bootstrap` follows.
#[derive(Debug, Clone)]
pub struct BootstrapTailOptions {
    /// The relay's base URL.
    pub relay: String,
    /// The bootstrap server's base URL.
    pub bootstrap: String,
    /// Logical source filter, as `--sources`.
    pub sources: Option<String>,
    /// Partition filters, as `--partition` (ORed).
    pub partitions: Vec<String>,
    /// The relay buffer, when it has several.
    pub buffer: Option<String>,
    /// Where to start.
    pub start: BootstrapStart,
    /// Stop after this many data events.
    pub max_events: Option<u64>,
    /// Progress lines on stderr at most this often (`None`: no progress).
    pub progress_every: Option<Duration>,
    /// The CA file of `https` servers and the bearer token sent to both (`--ca-cert`, `--token`).
    pub client: databus_http::ClientOptions,
}

/// The client configuration for `opts`: relay and bootstrap server, filter, start position.
pub fn client_config(opts: &BootstrapTailOptions) -> Result<ClientConfig> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &opts.sources {
        pairs.push(("sources", s));
    }
    for p in &opts.partitions {
        pairs.push(("partition", p));
    }
    let filter = FilterSpec::from_pairs(pairs)
        .map_err(|e| UsageError(format!("--sources/--partition: {e}")))?;
    let mut config = ClientConfig::with_relays([opts.relay.clone()]);
    config.bootstrap_servers = vec![opts.bootstrap.clone()];
    config.filter = filter;
    config.buffer = opts.buffer.clone();
    config.start = match opts.start {
        BootstrapStart::Snapshot => StartPosition::Snapshot,
        BootstrapStart::Scn(_) => StartPosition::Beginning,
    };
    config.ca_cert = opts.client.ca_cert.clone();
    config.token = opts.client.token.clone();
    config.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(config)
}

/// The JSON line of one event: the relay's fields, the decoded payload and the phase.
fn event_line(event: &databus_client::DataEvent<'_>) -> Value {
    let mut map = databus_core::json::header_to_json(event.raw());
    if let Some(change) = event.table_change() {
        // A truncate or schema change: its JSON table change is the payload.
        match change {
            Ok(change) => {
                map.insert(
                    "payload".into(),
                    serde_json::to_value(change).unwrap_or(Value::Null),
                );
            }
            Err(e) => {
                map.insert("decode_error".into(), e.to_string().into());
            }
        }
        map.insert("phase".into(), phase_name(event.phase()).into());
        return Value::Object(map);
    }
    if event.opcode() == databus_core::Opcode::Update {
        match event.before_json() {
            Some(Ok(before)) => {
                map.insert("before".into(), before);
            }
            Some(Err(e)) => {
                map.insert("decode_error".into(), format!("before image: {e}").into());
            }
            None => {}
        }
    }
    match event.json() {
        Ok(payload) => {
            map.insert("payload".into(), payload);
        }
        Err(e) => {
            use base64::Engine as _;
            map.insert(
                "payload_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(event.payload())
                    .into(),
            );
            map.insert("decode_error".into(), e.to_string().into());
        }
    }
    map.insert("phase".into(), phase_name(event.phase()).into());
    Value::Object(map)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Snapshot => "snapshot",
        Phase::Catchup => "catchup",
        Phase::Online => "online",
    }
}

/// Progress of a bootstrapping consumer, printed to stderr.
#[derive(Debug)]
struct Progress {
    every: Option<Duration>,
    /// Rows the bootstrap server holds (tombstones included): the estimate for the time left.
    total_hint: Option<u64>,
    rows: u64,
    started: Option<Instant>,
    last_print: Option<Instant>,
}

impl Progress {
    fn rate(&self, now: Instant) -> f64 {
        let secs = self
            .started
            .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        }
    }

    fn line(&self, now: Instant) -> String {
        let rate = self.rate(now);
        let mut line = format!("bootstrap: {} snapshot rows, {rate:.0} rows/s", self.rows);
        if let Some(total) = self.total_hint.filter(|&t| t > self.rows && rate > 0.0) {
            let left = (total - self.rows) as f64 / rate;
            line.push_str(&format!(
                ", about {} left (server holds {total} rows)",
                human_secs(left)
            ));
        }
        line
    }

    /// Called at each phase change: one line each (on an idle source no window may follow).
    fn transition(&mut self, transition: &Transition) {
        if self.every.is_none() {
            return;
        }
        let now = Instant::now();
        match transition {
            Transition::StartBootstrap { info, .. } => {
                self.started = Some(now);
                self.last_print = Some(now);
                self.rows = 0;
                match info.since_scn {
                    None => eprintln!("bootstrap: reading a snapshot from the bootstrap server"),
                    Some(scn) => eprintln!(
                        "bootstrap: reading the changes since SCN {scn} from the bootstrap server"
                    ),
                }
            }
            Transition::StartCatchup { target, .. } => {
                let secs = self
                    .started
                    .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
                eprintln!(
                    "bootstrap: snapshot done, {} rows in {secs:.1} s ({:.0} rows/s); catching up from the bootstrap server's log to SCN {target}",
                    self.rows,
                    self.rate(now)
                );
            }
            Transition::EndBootstrap { scn, .. } => {
                eprintln!("bootstrap: caught up at SCN {scn}; following the relay");
            }
        }
    }

    /// Called for each window before its events are printed.
    fn window(&mut self, window: &Window) {
        let Some(every) = self.every else { return };
        if window.phase() != Phase::Snapshot {
            return;
        }
        let now = Instant::now();
        self.rows += window.len() as u64;
        if self
            .last_print
            .is_none_or(|t| now.duration_since(t) >= every)
        {
            self.last_print = Some(now);
            eprintln!("{}", self.line(now));
        }
    }
}

/// `12 s`, `3 min`.
fn human_secs(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

/// The bootstrap server's snapshot row count, for the estimate; `None` when it cannot be read.
async fn snapshot_rows(bootstrap: &str, client: &databus_http::ClientOptions) -> Option<u64> {
    let url = RelayUrl::with_options(bootstrap, client).ok()?;
    let answer = get(&url, "/v1/status", Duration::from_secs(5)).await.ok()?;
    (answer.status == 200)
        .then(|| answer.json().ok()?["snapshot_rows"].as_u64())
        .flatten()
}

/// Follows the relay through the bootstrap server, calling `on_event` with each data event's JSON line,
/// and with `None` after each window (the moment to flush buffered output), until `max_events` were
/// delivered, `on_event` returns [`Next::Stop`] or `shutdown` is cancelled.
pub async fn tail(
    opts: &BootstrapTailOptions,
    shutdown: &CancellationToken,
    mut on_event: impl FnMut(Option<&Value>) -> Result<Next>,
) -> Result<TailEnd> {
    let config = client_config(opts)?;
    // Fail at once on a wrong URL or a server that is down; once both answered, the client retries
    // lost connections (a restart) with backoff, as the relay tail does.
    for (flag, url, path) in [
        ("--relay", &opts.relay, "/v1/sources"),
        ("--bootstrap", &opts.bootstrap, "/v1/status"),
    ] {
        let parsed = RelayUrl::with_options(url, &opts.client)
            .map_err(|e| UsageError(format!("{flag}: {e:#}")))?;
        let answer = get(&parsed, path, Duration::from_secs(10)).await?;
        if answer.status != 200 {
            anyhow::bail!(
                "{flag} {url}: GET {path} answered {}: {}",
                answer.status,
                answer.error_message()
            );
        }
    }
    let store = Arc::new(MemoryCheckpointStore::new());
    if let BootstrapStart::Scn(scn) = opts.start {
        databus_client::CheckpointStore::store(
            store.as_ref(),
            &Checkpoint::after(Scn::new(scn.get() - 1)),
        )?;
    }
    let client = DatabusClient::new(config, store).context("starting the client")?;
    let mut progress = Progress {
        every: opts.progress_every,
        total_hint: match (opts.start, opts.progress_every) {
            (BootstrapStart::Snapshot, Some(_)) => {
                snapshot_rows(&opts.bootstrap, &opts.client).await
            }
            _ => None,
        },
        rows: 0,
        started: None,
        last_print: None,
    };
    let token = shutdown.child_token();
    let mut windows = client.stream(token.clone()).await?;
    let mut delivered = 0u64;
    let end = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break TailEnd::Shutdown,
            w = windows.next_item() => w,
        };
        let window = match next {
            None => break TailEnd::Shutdown,
            Some(item) => match item.with_context(|| {
                format!(
                    "following relay {} through bootstrap server {}",
                    opts.relay, opts.bootstrap
                )
            })? {
                StreamItem::Window(window) => window,
                StreamItem::Transition(t) => {
                    progress.transition(&t);
                    continue;
                }
            },
        };
        progress.window(&window);
        let mut stop = None;
        for event in window.events() {
            if opts.max_events.is_some_and(|max| delivered >= max) {
                stop = Some(TailEnd::Count);
                break;
            }
            delivered += 1;
            if on_event(Some(&event_line(&event)))? == Next::Stop {
                stop = Some(TailEnd::Stopped);
                break;
            }
        }
        if stop.is_none() && on_event(None)? == Next::Stop {
            stop = Some(TailEnd::Stopped);
        }
        if let Some(end) = stop {
            break end;
        }
        if opts.max_events.is_some_and(|max| delivered >= max) {
            break TailEnd::Count;
        }
    };
    token.cancel();
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(
            "snapshot".parse::<BootstrapStart>(),
            Ok(BootstrapStart::Snapshot)
        );
        assert_eq!(
            "scn:42".parse::<BootstrapStart>(),
            Ok(BootstrapStart::Scn(Scn::new(42)))
        );
        for bad in ["scn:0", "scn:", "scn:x", "now", ""] {
            let err = bad.parse::<BootstrapStart>().unwrap_err();
            assert!(err.contains("snapshot or scn:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn config_carries_filter_and_start() {
        let opts = BootstrapTailOptions {
            relay: "http://127.0.0.1:1".into(),
            bootstrap: "http://127.0.0.1:2".into(),
            sources: Some("1,2".into()),
            partitions: vec!["mod:4:0".into()],
            buffer: None,
            start: BootstrapStart::Snapshot,
            max_events: None,
            progress_every: None,
            client: databus_http::ClientOptions {
                ca_cert: None,
                token: Some(databus_http::Token::new("t0k").unwrap()),
            },
        };
        let config = client_config(&opts).unwrap();
        assert_eq!(config.token.as_ref().map(|t| t.expose()), Some("t0k"));
        assert_eq!(config.start, StartPosition::Snapshot);
        assert_eq!(config.bootstrap_servers, ["http://127.0.0.1:2"]);
        assert_eq!(config.filter.to_query(), "sources=1-2&partition=mod:4:0");
        let bad = BootstrapTailOptions {
            partitions: vec!["mod:0:1".into()],
            ..opts
        };
        let err = client_config(&bad).unwrap_err();
        assert!(err.is::<UsageError>(), "{err:#}");
    }

    #[test]
    fn progress_line_estimates_the_time_left() {
        let now = Instant::now();
        let p = Progress {
            every: Some(Duration::from_secs(1)),
            total_hint: Some(3000),
            rows: 1000,
            started: Some(now - Duration::from_secs(2)),
            last_print: None,
        };
        assert_eq!(
            p.line(now),
            "bootstrap: 1000 snapshot rows, 500 rows/s, about 4 s left (server holds 3000 rows)"
        );
    }
}
