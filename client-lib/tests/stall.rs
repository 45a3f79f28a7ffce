//! Consumers never spin: when neither the relay nor the bootstrap server can serve a checkpoint yet,
//! the client waits between rounds (jittered backoff), says so in its stats, and under
//! `stall.max_wait` stops with a typed error. Real relay and bootstrap servers over HTTP on loopback;
//! the servers' own counters (the process's Prometheus recorder) count the requests they answered.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use databus_bootstrap::applier::{ApplierSettings, run_applier};
use databus_bootstrap::producer::{ProducerSettings, run_producer};
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::{BootstrapStore, SqliteStore};
use databus_client::{
    BackoffConfig, CheckpointStore, ClientError, ConsumerOutcome, DataEvent, DatabusClient,
    DatabusConsumer, MemoryCheckpointStore, Phase, StallConfig, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Scn};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The sum of the counter `name` over the series whose labels contain `label` (e.g. `path="x"`).
fn counter(handle: &PrometheusHandle, name: &str, label: &str) -> u64 {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Windows and events a consumer received.
#[derive(Default)]
struct Seen {
    windows: Mutex<Vec<(Phase, u64)>>,
    keys: Mutex<Vec<i64>>,
    bootstraps: std::sync::atomic::AtomicU32,
}

impl DatabusConsumer for Seen {
    async fn on_start_bootstrap(&self, _: &databus_client::BootstrapInfo) -> ConsumerOutcome {
        self.bootstraps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let row: Row = event.decode().unwrap();
        self.keys.lock().unwrap().push(row.id);
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, w: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        self.windows.lock().unwrap().push((w.phase, w.scn.get()));
        ConsumerOutcome::Success
    }
}

/// A bootstrap server (HTTP + applier) over a fresh SQLite file; its producer runs only when asked.
struct Bootstrap {
    url: String,
    store: Arc<dyn BootstrapStore>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Bootstrap {
    async fn start() -> Bootstrap {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BootstrapStore> =
            Arc::new(SqliteStore::open(dir.path().join("bootstrap.sqlite")).unwrap());
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(databus_bootstrap::http::serve_with(
            BootstrapService::new(store.clone(), ServeSettings::default()),
            listener,
            databus_relay::ServerSecurity::plain(),
            shutdown.clone(),
        ));
        let (s, t) = (store.clone(), shutdown.clone());
        let applier = ApplierSettings {
            idle_poll: Duration::from_millis(5),
            ..ApplierSettings::default()
        };
        tokio::spawn(async move { run_applier(s, applier, t).await.unwrap() });
        Bootstrap {
            url,
            store,
            shutdown,
            _dir: dir,
        }
    }

    /// Runs a producer copying `relay` until the returned token is cancelled.
    /// Runs a producer until the returned token is cancelled; the handle ends with it.
    fn produce(&self, relay: &TestRelay) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = self.shutdown.child_token();
        let mut settings = ProducerSettings::new(relay.url());
        settings.wait = Duration::from_millis(100);
        let (s, t) = (self.store.clone(), token.clone());
        let task = tokio::spawn(async move {
            run_producer(s, settings, t).await.unwrap();
        });
        (token, task)
    }

    async fn wait_logged(&self, scn: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.store.log_status().unwrap().last_scn < Some(Scn::new(scn)) {
            assert!(Instant::now() < deadline, "producer never logged {scn}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn config(relay: &TestRelay, bootstrap: &Bootstrap) -> databus_client::ClientConfig {
    let mut c = fast_config(&[relay.url()]);
    c.bootstrap_servers = vec![bootstrap.url.clone()];
    c.stall = StallConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            multiplier: 2.0,
        },
        ..StallConfig::default()
    };
    c
}

/// Upper bound of the requests a stalled client may make in `window`: at most one per stall round,
/// and rounds are at least `initial / 2` apart (the first delay's lower bound), plus a few for the
/// round in progress. A client without backoff makes hundreds per second.
fn bound(window: Duration) -> u64 {
    (window.as_millis() / 100) as u64 + 3
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumers_back_off_report_it_and_stop_only_under_max_wait() {
    let metrics = databus_bootstrap::metrics::install().unwrap();
    let mut relay = TestRelay::start(64 << 10).await;
    let bootstrap = Bootstrap::start().await;

    // 1. A stale bootstrap server: its producer logged windows 1..=20, then stopped; the relay moved
    //    on far past 20. A consumer at 10 gets 11..=20 from the bootstrap log, then no server can
    //    take it further: relay 410 at 20, delta since 20 with nothing new, relay 410 at 20...
    for scn in 1..=20 {
        relay.window(scn, &rows(1, scn as i64, 1, scn as i64));
    }
    let (producer, producing) = bootstrap.produce(&relay);
    bootstrap.wait_logged(20).await;
    producer.cancel();
    // The producer is gone before the relay moves on (else it may log a few more windows).
    producing.await.unwrap();
    let mut scn = 21;
    while relay.buffer.stats().min_scn <= Some(Scn::new(30)) {
        relay.window(scn, &rows(1, scn as i64, 3, scn as i64));
        scn += 1;
    }
    let store = Arc::new(MemoryCheckpointStore::new());
    store.store(&Checkpoint::after(Scn::new(10))).unwrap();
    let client = DatabusClient::new(config(&relay, &bootstrap), store.clone()).unwrap();
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (client, seen, token) = (client.clone(), seen.clone(), shutdown.clone());
        async move { client.run(seen, token).await }
    });
    wait_for("three stall rounds", || {
        client.stats().stalled_rounds() >= 3
    })
    .await;
    assert!(client.stats().stalled());
    let gone = || counter(&metrics, "databus_relay_scn_not_found_total", "");
    let log_only = || {
        counter(
            &metrics,
            "databus_bootstrap_stream_requests_total",
            "path=\"log_only\"",
        )
    };
    let bootstraps = || seen.bootstraps.load(std::sync::atomic::Ordering::SeqCst);
    let (gone0, log_only0, bootstraps0, started) =
        (gone(), log_only(), bootstraps(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = started.elapsed();
    let (gone1, log_only1) = (gone(), log_only());
    assert!(
        gone1 - gone0 <= bound(window),
        "relay answered {} scn_not_found in {window:?}: the client spins",
        gone1 - gone0
    );
    assert!(
        log_only1 - log_only0 <= bound(window),
        "bootstrap server answered {} deltas in {window:?}: the client spins",
        log_only1 - log_only0
    );
    // While stalled the consumer is not told again and again that a bootstrap starts (and ends).
    assert_eq!(bootstraps(), bootstraps0, "a bootstrap per stall round");
    // Nothing lost: the consumer got every window the bootstrap log had after its checkpoint.
    let windows: Vec<u64> = seen.windows.lock().unwrap().iter().map(|w| w.1).collect();
    assert_eq!(windows, (11..=20).collect::<Vec<_>>());
    assert!(!task.is_finished(), "by default a stalled client waits");
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // With stall.max_wait the same consumer stops with a typed error naming the checkpoint.
    let mut c = config(&relay, &bootstrap);
    c.stall.max_wait = Some(Duration::from_millis(500));
    let client = DatabusClient::new(c, store.clone()).unwrap();
    let err = client
        .run(Arc::new(Seen::default()), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Stalled { scn, .. } if *scn == Scn::new(20)),
        "{err}"
    );
    assert!(err.to_string().contains("/health"), "{err}");
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_on_not_yet_at_scn_backs_off_then_goes_on() {
    let metrics = databus_bootstrap::metrics::install().unwrap();
    let mut relay = TestRelay::start(1 << 20).await;
    for scn in 1..=10 {
        relay.window(scn, &rows(1, scn as i64 * 10, 2, scn as i64));
    }
    // A bootstrap server whose producer has not started: it holds nothing yet (503 not_yet_at_scn).
    let bootstrap = Bootstrap::start().await;
    let mut c = config(&relay, &bootstrap);
    c.start = StartPosition::Snapshot;
    let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let seen = Arc::new(Seen::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (client, seen, token) = (client.clone(), seen.clone(), shutdown.clone());
        async move { client.run(seen, token).await }
    });
    wait_for("three stall rounds", || {
        client.stats().stalled_rounds() >= 3
    })
    .await;
    assert!(client.stats().stalled());
    let not_yet = || {
        counter(
            &metrics,
            "databus_bootstrap_http_errors_total",
            "kind=\"not_yet_at_scn\"",
        )
    };
    let (before, started) = (not_yet(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = started.elapsed();
    let answered = not_yet() - before;
    assert!(
        answered <= bound(window),
        "bootstrap server answered {answered} not_yet_at_scn in {window:?}: the client spins"
    );

    // The producer starts: the consumer gets the snapshot and follows the relay, stall over.
    let (_producer, _producing) = bootstrap.produce(&relay);
    wait_for("the consumer online at 10", || {
        seen.windows.lock().unwrap().last() == Some(&(Phase::Online, 10))
            || seen.keys.lock().unwrap().len() == 20
    })
    .await;
    let mut keys = seen.keys.lock().unwrap().clone();
    keys.sort_unstable();
    let expected: Vec<i64> = (1..=10).flat_map(|s| [s * 10, s * 10 + 1]).collect();
    assert_eq!(keys, expected);
    wait_for("the stall to end", || !client.stats().stalled()).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    bootstrap.shutdown.cancel();
    relay.stop().await;
}
