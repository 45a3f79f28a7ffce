//! The client against real relays served over loopback HTTP (in-process relay servers fed through
//! their buffer writers): whole windows, checkpoints, failover, restarts, errors, backpressure,
//! retries, crash replay, parallel dispatch, partitioned groups, the pull API.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use databus_client::{
    CheckpointStore, ClientError, ConsumerOutcome, DatabusClient, FailurePolicy,
    MemoryCheckpointStore, PartitionMember, Phase, StartPosition,
};
use databus_core::{Checkpoint, Scn};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<databus_client::RunSummary, ClientError>>,
}

fn spawn_run(client: &DatabusClient, consumer: Arc<Recorder>) -> Running {
    let shutdown = CancellationToken::new();
    let client = client.clone();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { client.run(consumer, token).await });
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) -> Result<databus_client::RunSummary, ClientError> {
        self.shutdown.cancel();
        self.join().await
    }

    async fn join(self) -> Result<databus_client::RunSummary, ClientError> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("client stops")
            .unwrap()
    }
}

/// Every `(scn, key)` of windows `scns`, `n` events each, keys `scn*100..`.
fn expected(scns: impl IntoIterator<Item = u64>, n: i64) -> Vec<Seen> {
    scns.into_iter()
        .flat_map(|scn| {
            (0..n).map(move |i| Seen {
                scn,
                source: 1,
                key: scn as i64 * 100 + i,
                seq: scn as i64,
            })
        })
        .collect()
}

fn fill(relay: &mut TestRelay, scns: impl IntoIterator<Item = u64>, n: i64) {
    for scn in scns {
        relay.window(scn, &rows(1, scn as i64 * 100, n, scn as i64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_windows_in_order_split_responses_and_checkpoints() {
    let mut relay = TestRelay::start(1 << 20).await;
    // Windows of 1..=9 events plus heartbeats; 300-byte responses split most windows.
    for scn in 1..=40u64 {
        if scn % 7 == 0 {
            relay.writer.end_window(Scn::new(scn), scn).unwrap();
        } else {
            relay.window(
                scn,
                &rows(1, scn as i64 * 100, (scn % 9 + 1) as i64, scn as i64),
            );
        }
    }
    relay.window(41, &[(2, 5, 41), (1, 6, 41), (1, 7, 41), (2, 8, 41)]);
    let store = Arc::new(MemoryCheckpointStore::new());
    let mut config = fast_config(&[relay.url()]);
    config.max_response_bytes = 300;
    config.buffer_bytes = 4096;
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 41", || consumer.last_window() == Some(41)).await;
    let summary = run.stop().await.unwrap();

    {
        let log = consumer.log.lock().unwrap();
        assert_eq!((log.started, log.stopped), (1, 1));
        // Every window whole, once, in order; heartbeats included.
        let scns: Vec<u64> = log.windows.iter().map(|w| w.0).collect();
        assert_eq!(scns, (1..=41).collect::<Vec<_>>());
        assert_eq!(log.ended, scns);
        for &(scn, n) in &log.windows {
            let got = log.events.iter().filter(|e| e.scn == scn).count();
            assert_eq!(got, n, "window {scn}");
            let want = if scn == 41 {
                4
            } else if scn % 7 == 0 {
                0
            } else {
                (scn % 9 + 1) as usize
            };
            assert_eq!(n, want, "window {scn}");
        }
        // Source runs in a window: 2, 1, 2 for window 41.
        let runs: Vec<(u16, bool)> = log
            .sources
            .iter()
            .filter(|s| s.0 == 41)
            .map(|s| (s.1, s.2))
            .collect();
        assert_eq!(
            runs,
            vec![
                (2, true),
                (2, false),
                (1, true),
                (1, false),
                (2, true),
                (2, false)
            ]
        );
        assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(41))));
        assert_eq!(summary.windows, 41);
        assert_eq!(summary.events as usize, log.events.len());
        assert!(client.stats().requests() > 41, "responses were split");
    }

    // A new run resumes after the checkpoint: only new windows arrive.
    relay.window(50, &rows(1, 5000, 3, 50));
    let consumer2 = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer2.clone());
    wait_until("window 50", || consumer2.last_window() == Some(50)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer2.log.lock().unwrap().windows, vec![(50, 3)]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_between_two_relays() {
    let mut a = TestRelay::start(1 << 20).await;
    let mut b = TestRelay::start(1 << 20).await;
    fill(&mut a, 1..=20, 5);
    fill(&mut b, 1..=20, 5);
    let config = fast_config(&[a.url(), b.url()]);
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 20 from a", || consumer.last_window() == Some(20)).await;
    a.stop().await;
    // Only b gets the next windows: the client must fail over to it.
    fill(&mut b, 21..=40, 5);
    wait_until("window 40 from b", || consumer.last_window() == Some(40)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(1..=40, 5));
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(40))));
    b.stop().await;
}

/// A relay that evicted its first windows, no bootstrap server: from the beginning is a definite error
/// naming both ways forward; `StartPosition::Oldest` starts at the oldest window the relay holds and
/// then follows with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_start_accepts_missing_history_and_the_beginning_says_how() {
    let mut relay = TestRelay::start(64 << 10).await;
    fill(&mut relay, 1..=400, 4);
    let prev = relay
        .buffer
        .stats()
        .prev_scn
        .expect("the small relay evicted")
        .get();

    let client = DatabusClient::new(
        fast_config(&[relay.url()]),
        Arc::new(MemoryCheckpointStore::new()),
    )
    .unwrap();
    let err = spawn_run(&client, Arc::new(Recorder::default()))
        .join()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ClientError::ScnNotFound { .. }), "{message}");
    assert!(message.contains("bootstrap server"), "{message}");
    assert!(message.contains("StartPosition::Oldest"), "{message}");

    let mut config = fast_config(&[relay.url()]);
    config.start = StartPosition::Oldest;
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 400", || consumer.last_window() == Some(400)).await;
    fill(&mut relay, 401..=410, 4);
    wait_until("window 410", || consumer.last_window() == Some(410)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(prev + 1..=410, 4));
    relay.stop().await;
}

/// Two relays with different origins: `a` restarted while its source was down (first not positioned,
/// then positioned after SCN 35, which it never held before), `b` holding 1..=40. A client at SCN 20
/// is never served by `a` from its first window: it fails over to `b` and gets 21..=40 with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_a_relay_that_does_not_continue_its_checkpoint() {
    let mut a = TestRelay::start_unpositioned(1 << 20).await;
    let mut b = TestRelay::start(1 << 20).await;
    fill(&mut b, 1..=20, 5);
    let config = fast_config(&[a.url(), b.url()]);
    let store = Arc::new(MemoryCheckpointStore::new());
    store.store(&Checkpoint::after(Scn::new(20))).unwrap();
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    // `a` answers `503 not_positioned` at its long poll's end: the client moves on to `b`.
    fill(&mut b, 21..=30, 5);
    wait_until("window 30 from b", || consumer.last_window() == Some(30)).await;
    // `a` is positioned after 35 and gets windows 36..=40; `b` goes away. A client at 30 must not be
    // served 36 by `a`: it waits for `b`.
    a.writer.anchor(Scn::new(35)).unwrap();
    fill(&mut a, 36..=40, 5);
    b.stop().await;
    let failed_before = client.stats().failed_requests();
    wait_until("requests refused while b is down", || {
        client.stats().failed_requests() >= failed_before + 3
    })
    .await;
    assert_eq!(
        consumer.last_window(),
        Some(30),
        "a served a window after 30"
    );
    fill(&mut b, 31..=40, 5);
    b.serve().await;
    wait_until("window 40", || consumer.last_window() == Some(40)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(21..=40, 5));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_stopped_and_restarted_on_the_same_port() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=10, 3);
    let client = DatabusClient::new(
        fast_config(&[relay.url()]),
        Arc::new(MemoryCheckpointStore::new()),
    )
    .unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 10", || consumer.last_window() == Some(10)).await;
    relay.stop().await;
    let failed_before = client.stats().failed_requests();
    fill(&mut relay, 11..=20, 3);
    // The client keeps retrying with backoff while the relay is down.
    wait_until("failed requests", || {
        client.stats().failed_requests() >= failed_before + 2
    })
    .await;
    relay.serve().await;
    wait_until("window 20", || consumer.last_window() == Some(20)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(1..=20, 3));
    relay.stop().await;
}

/// A raw HTTP/1.1 server on loopback: `answer(request head)` gives the status line, extra header lines
/// and body of each response (one request per connection). Counts requests.
async fn scripted_server(
    answer: impl Fn(&str) -> (&'static str, String, Vec<u8>) + Send + Sync + 'static,
) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (counter, answer) = (counter.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let (status, headers, body) = answer(&String::from_utf8_lossy(&got));
                let head = format!(
                    "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// A server answering every request with `503 unavailable`, counting requests.
async fn failing_server() -> (String, Arc<std::sync::atomic::AtomicU64>) {
    scripted_server(|_| {
        (
            "503 Service Unavailable",
            "content-type: application/json\r\n".into(),
            br#"{"error":"unavailable","message":"overloaded"}"#.to_vec(),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_does_not_match_its_id_is_refused() {
    let relay = TestRelay::start(1 << 20).await;
    let mut frames = Vec::new();
    make_event(&relay.schema, 5, 1, 500, 5)
        .builder()
        .write_to_vec(&mut frames);
    databus_core::EventBuilder::end_of_window(Scn::new(5), 5000).write_to_vec(&mut frames);
    let id = relay.schema.id;
    let (url, _) = scripted_server(move |request| {
        if request.contains("/v1/schemas/") {
            // Another table's schema, served under this id.
            let other = r#"{"avro":{"type":"record","name":"other","namespace":"x","fields":[{"name":"a","type":"string"}]}}"#;
            ("200 OK", "content-type: application/json\r\n".into(), other.as_bytes().to_vec())
        } else {
            let cp = Checkpoint::after(Scn::new(5)).to_json();
            (
                "200 OK",
                format!("content-type: application/vnd.databus.frames\r\nx-databus-checkpoint: {cp}\r\nx-databus-more: false\r\n"),
                frames.clone(),
            )
        }
    })
    .await;
    let client =
        DatabusClient::new(fast_config(&[url]), Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Recorder::default());
    let err = spawn_run(&client, consumer.clone())
        .join()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ClientError::Protocol { .. }), "{message}");
    assert!(
        message.contains(&format!("schema {:016x}", id.get())),
        "{message}"
    );
    assert_eq!(
        consumer.event_count(),
        0,
        "nothing decoded with the wrong schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_returning_errors_and_scn_not_found() {
    // A relay answering 503 is failed over to the healthy one.
    let (bad, hits) = failing_server().await;
    let mut good = TestRelay::start(1 << 20).await;
    fill(&mut good, 1..=5, 2);
    let client = DatabusClient::new(
        fast_config(&[bad.clone(), good.url()]),
        Arc::new(MemoryCheckpointStore::new()),
    )
    .unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 5", || consumer.last_window() == Some(5)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(1..=5, 2));
    assert!(hits.load(Ordering::SeqCst) >= 1);
    // The failed request reached on_error (failures are never silent).
    let errors = consumer.log.lock().unwrap().errors.clone();
    assert!(
        errors.iter().any(|e| e.contains("503 unavailable")),
        "{errors:?}"
    );

    // Only failing relays and a failure budget: the client gives up with the last error.
    let mut config = fast_config(&[bad]);
    config.max_fetch_failures = Some(3);
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let err = spawn_run(&client, Arc::new(Recorder::default()))
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("503"), "{err}");

    // A checkpoint older than what the relay holds, no bootstrap server: a definite error.
    let mut small = TestRelay::start(64 << 10).await;
    fill(&mut small, 1..=400, 4);
    let store = Arc::new(MemoryCheckpointStore::new());
    store.store(&Checkpoint::after(Scn::new(1))).unwrap();
    let client =
        DatabusClient::new(fast_config(&[small.url(), good.url()]), store.clone()).unwrap();
    // `good` holds windows 1..=5 only: it answers (with nothing new) and is not behind, so make both
    // relays evict: use `small` twice.
    drop(client);
    let client =
        DatabusClient::new(fast_config(&[small.url(), small.url()]), store.clone()).unwrap();
    let consumer = Arc::new(Recorder::default());
    let err = spawn_run(&client, consumer.clone())
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ScnNotFound { requested, .. } if requested == Scn::new(1)),
        "{err}"
    );
    assert!(err.to_string().contains("bootstrap"), "{err}");
    assert_eq!(consumer.event_count(), 0);
    assert_eq!(
        store.load().unwrap(),
        Some(Checkpoint::after(Scn::new(1))),
        "checkpoint untouched"
    );
    {
        let log = consumer.log.lock().unwrap();
        assert_eq!((log.started, log.stopped), (1, 1));
        // The first relay's 410 (a warning: the next relay may hold it), then the definite error.
        assert_eq!(log.errors.len(), 2, "{:?}", log.errors);
        assert!(
            log.errors
                .iter()
                .all(|e| e.contains("no relay holds the events after SCN 1"))
        );
    }
    good.stop().await;
    small.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_keeps_memory_bounded() {
    let mut relay = TestRelay::start(8 << 20).await;
    // About 2 MB of windows of ~2 KB each.
    fill(&mut relay, 1..=1000, 30);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut config = fast_config(&[relay.url()]);
    config.buffer_bytes = 64 << 10;
    config.max_response_bytes = 16 << 10;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Recorder::default());
    let gated = Arc::new(Gated {
        inner: consumer.clone(),
        gate: gate.clone(),
    });
    let shutdown = CancellationToken::new();
    let task = {
        let client = client.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { client.run(gated, token).await })
    };
    let stats = client.stats();
    // The consumer is stuck on its first window: the fetcher fills the buffer and stops.
    wait_until("buffer full", || stats.buffered_bytes() > (64 << 10) - 4096).await;
    let fetched = stats.fetched_windows();
    let requests = stats.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats.fetched_windows(), fetched, "fetcher waits for space");
    assert!(
        stats.requests() <= requests + 1,
        "at most the request in flight"
    );
    assert!(
        fetched < 100,
        "fetched {fetched} windows of 1000 with 64 KiB of buffer"
    );
    gate.add_permits(1_000_000);
    wait_until("window 1000", || consumer.last_window() == Some(1000)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        stats.max_buffered_bytes() <= 64 << 10,
        "max {}",
        stats.max_buffered_bytes()
    );
    assert_eq!(consumer.event_count(), 30_000);
    relay.stop().await;
}

/// Blocks every window start on a semaphore.
struct Gated {
    inner: Arc<Recorder>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl databus_client::DatabusConsumer for Gated {
    async fn on_start_window(&self, w: &databus_client::WindowInfo) -> ConsumerOutcome {
        self.gate.acquire().await.unwrap().forget();
        self.inner.on_start_window(w).await
    }
    async fn on_end_window(
        &self,
        w: &databus_client::WindowInfo,
        cp: &Checkpoint,
    ) -> ConsumerOutcome {
        self.inner.on_end_window(w, cp).await
    }
    async fn on_event(&self, e: &databus_client::DataEvent<'_>) -> ConsumerOutcome {
        self.inner.on_event(e).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_retry_then_success_stop_and_skip_policies() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=6, 4);

    // Key 302 (window 3) asks for a retry 3 times, then succeeds; a panic on 501 once.
    let consumer = Arc::new(Recorder::with_hook(|seen, before| {
        match (seen.key, before) {
            (302, 0..3) => ConsumerOutcome::Retry,
            (501, 0) => panic!("boom on 501"),
            _ => ConsumerOutcome::Success,
        }
    }));
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(fast_config(&[relay.url()]), store.clone()).unwrap();
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 6", || consumer.last_window() == Some(6)).await;
    let summary = run.stop().await.unwrap();
    assert_eq!(summary.retries, 4);
    {
        let log = consumer.log.lock().unwrap();
        // Rollbacks go to the last checkpoint before the failed window.
        let to: Vec<Scn> = log.rollbacks.iter().map(|c| c.window_scn).collect();
        assert_eq!(to, vec![Scn::new(2), Scn::new(2), Scn::new(2), Scn::new(4)]);
        assert!(
            log.errors
                .iter()
                .any(|e| e.contains("on_event panicked: boom on 501")),
            "{:?}",
            log.errors
        );
        // Window 3 started 4 times; events before the failing key were replayed (at-least-once), and
        // every event was delivered successfully at least once, in order of first success.
        assert_eq!(log.windows.iter().filter(|w| w.0 == 3).count(), 4);
        let firsts: BTreeSet<Seen> = log.events.iter().cloned().collect();
        assert_eq!(firsts, expected(1..=6, 4).into_iter().collect());
        assert_eq!(log.ended, vec![1, 2, 3, 4, 5, 6]);
    }

    // Policy stop (default): key 203 always fails; consumption stops with the window's error and the
    // checkpoint stays before it.
    let consumer = Arc::new(Recorder::with_hook(|seen, _| {
        if seen.key == 203 {
            ConsumerOutcome::Retry
        } else {
            ConsumerOutcome::Success
        }
    }));
    let store = Arc::new(MemoryCheckpointStore::new());
    let mut config = fast_config(&[relay.url()]);
    config.retry.max_retries = 2;
    let client = DatabusClient::new(config.clone(), store.clone()).unwrap();
    let err = spawn_run(&client, consumer.clone())
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RetriesExhausted { scn, attempts: 3, .. } if scn == Scn::new(2)),
        "{err}"
    );
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(1))));
    assert_eq!(consumer.log.lock().unwrap().ended, vec![1]);

    // A fatal outcome stops at once, without retries.
    let consumer = Arc::new(Recorder::with_hook(|seen, _| {
        if seen.key == 400 {
            ConsumerOutcome::Fatal
        } else {
            ConsumerOutcome::Success
        }
    }));
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config.clone(), store.clone()).unwrap();
    let err = spawn_run(&client, consumer.clone())
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Fatal { callback: "on_event", scn } if scn == Scn::new(4)),
        "{err}"
    );
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(3))));
    assert!(consumer.log.lock().unwrap().rollbacks.is_empty());

    // Skip-and-record (opt-in): the failing event is skipped, recorded, reported; the rest goes on.
    config.retry.policy = FailurePolicy::SkipAndRecord;
    let consumer = Arc::new(Recorder::with_hook(|seen, _| {
        if seen.key == 203 {
            ConsumerOutcome::Retry
        } else {
            ConsumerOutcome::Success
        }
    }));
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 6", || consumer.last_window() == Some(6)).await;
    let summary = run.stop().await.unwrap();
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].scn, Scn::new(2));
    assert_eq!(
        summary.skipped[0].events,
        vec![(databus_core::SourceId::new(1), "203".to_owned(), 3)]
    );
    let got: BTreeSet<Seen> = consumer.events().into_iter().collect();
    let mut want: BTreeSet<Seen> = expected(1..=6, 4).into_iter().collect();
    want.retain(|s| s.key != 203);
    assert_eq!(got, want);
    assert!(
        consumer
            .log
            .lock()
            .unwrap()
            .errors
            .iter()
            .any(|e| e.contains("skipped and recorded"))
    );
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(6))));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_callbacks_and_checkpoint_replays_the_window() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=10, 3);
    let store = Arc::new(CrashingStore::failing_at(5));
    let client = DatabusClient::new(fast_config(&[relay.url()]), store.clone()).unwrap();
    let first = Arc::new(Recorder::default());
    let err = spawn_run(&client, first.clone()).join().await.unwrap_err();
    assert!(matches!(err, ClientError::Store(_)), "{err}");
    // Every callback of window 5 succeeded, but its checkpoint was not persisted.
    assert_eq!(first.last_window(), Some(5));
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(4))));

    let second = Arc::new(Recorder::default());
    let run = spawn_run(&client, second.clone());
    wait_until("window 10", || second.last_window() == Some(10)).await;
    run.stop().await.unwrap();
    // Window 5 is replayed; nothing is lost.
    assert_eq!(second.events(), expected(5..=10, 3));
    let mut all: Vec<Seen> = first.events();
    all.extend(second.events());
    let unique: BTreeSet<Seen> = all.into_iter().collect();
    assert_eq!(unique, expected(1..=10, 3).into_iter().collect());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_order_under_8_workers() {
    let mut relay = TestRelay::start(8 << 20).await;
    // 200 windows of 48 events over 16 keys: each key appears 3 times per window.
    for scn in 1..=200u64 {
        let events: Vec<(u16, i64, i64)> = (0..48)
            .map(|i| (1, i % 16, (scn * 100 + i as u64) as i64))
            .collect();
        relay.window(scn, &events);
    }
    let mut config = fast_config(&[relay.url()]);
    config.workers = 8;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Recorder {
        delay: Some(Duration::from_micros(200)),
        ..Recorder::default()
    });
    let run = spawn_run(&client, consumer.clone());
    wait_until("window 200", || consumer.last_window() == Some(200)).await;
    run.stop().await.unwrap();
    let events = consumer.events();
    assert_eq!(events.len(), 9600);
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for e in &events {
        per_key.entry(e.key).or_default().push(e.seq);
    }
    assert_eq!(per_key.len(), 16);
    for (key, seqs) in per_key {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order"
        );
        assert_eq!(seqs.len(), 600);
    }
    // Events of a window never leak past its end (barrier): window order of first events holds.
    let mut last_scn = 0;
    for e in &events {
        assert!(
            e.scn >= last_scn,
            "event of window {} after window {last_scn}",
            e.scn
        );
        last_scn = e.scn;
    }
    assert!(
        consumer.max_in_flight.load(Ordering::SeqCst) > 1,
        "workers ran in parallel"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_group_of_3_covers_every_event_once() {
    let mut relay = TestRelay::start(8 << 20).await;
    for scn in 1..=100u64 {
        relay.window(scn, &rows(1, scn as i64 * 1000, 17, scn as i64));
    }
    let consumers: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    let mut runs = Vec::new();
    for (i, consumer) in consumers.iter().enumerate() {
        let mut config = fast_config(&[relay.url()]);
        config.partition = Some(PartitionMember {
            instance: i as u32,
            of: 3,
        });
        let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
        runs.push(spawn_run(&client, consumer.clone()));
    }
    for consumer in &consumers {
        // Heartbeats keep every member's window sequence complete, whatever its share.
        wait_until("window 100", || consumer.last_window() == Some(100)).await;
    }
    for run in runs {
        run.stop().await.unwrap();
    }
    let mut all = Vec::new();
    for (i, consumer) in consumers.iter().enumerate() {
        let events = consumer.events();
        assert!(events.len() > 300, "member {i} got {} events", events.len());
        for e in &events {
            let bucket = databus_filters::bucket_of(
                databus_core::KeyRef::Int(e.key),
                std::num::NonZeroU32::new(3).unwrap(),
            );
            assert_eq!(bucket, i as u32);
        }
        all.extend(events);
    }
    all.sort();
    let mut want = Vec::new();
    for scn in 1..=100u64 {
        want.extend((0..17).map(|i| Seen {
            scn,
            source: 1,
            key: scn as i64 * 1000 + i,
            seq: scn as i64,
        }));
    }
    assert_eq!(all, want);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_api_stream_of_windows_with_commit() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=8, 3);
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(fast_config(&[relay.url()]), store.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let mut stream = client.stream(shutdown.clone()).await.unwrap();
    let mut seen = Vec::new();
    while let Some(window) = stream.next().await {
        let window = window.unwrap();
        assert_eq!(window.phase(), Phase::Online);
        for event in window.events() {
            let row: Row = event.decode().unwrap();
            let json = event.json().unwrap();
            assert_eq!(json["name"], row.name);
            seen.push(Seen {
                scn: window.scn().get(),
                source: event.source().get(),
                key: row.id,
                seq: row.seq,
            });
        }
        stream.commit(&window).await.unwrap();
        if window.scn() == Scn::new(5) {
            break;
        }
    }
    drop(stream);
    assert_eq!(seen, expected(1..=5, 3));
    assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(5))));
    // Resumes after the committed window.
    let mut stream = client.stream(shutdown.clone()).await.unwrap();
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(next.scn(), Scn::new(6));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_now_skips_history() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=5, 2);
    let mut config = fast_config(&[relay.url()]);
    config.start = StartPosition::Now;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Recorder::default());
    let run = spawn_run(&client, consumer.clone());
    let stats = client.stats();
    wait_until("first poll", || stats.requests() >= 1).await;
    fill(&mut relay, 6..=7, 2);
    wait_until("window 7", || consumer.last_window() == Some(7)).await;
    run.stop().await.unwrap();
    assert_eq!(consumer.events(), expected(6..=7, 2));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_schema_resolves_every_writer_version() {
    let mut relay = TestRelay::start(1 << 20).await;
    fill(&mut relay, 1..=3, 2);
    // The consumer's view of the table: `seq` dropped, `extra` added with a default.
    let mut reader: serde_json::Value = serde_json::from_str(&relay.schema.avro_json).unwrap();
    let fields = reader["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "seq");
    fields.push(serde_json::json!({"name": "extra", "type": "string", "default": "none"}));
    let reader = apache_avro::Schema::parse(&reader).unwrap();

    #[derive(Debug, serde::Deserialize)]
    struct View {
        id: i64,
        name: String,
        extra: String,
    }
    let client = DatabusClient::new(
        fast_config(&[relay.url()]),
        Arc::new(MemoryCheckpointStore::new()),
    )
    .unwrap()
    .with_reader_schema(databus_core::SourceId::new(1), reader.clone());
    let mut stream = client.stream(CancellationToken::new()).await.unwrap();
    let mut views = Vec::new();
    while views.len() < 6 {
        let window = stream.next().await.unwrap().unwrap();
        for event in window.events() {
            let view: View = event.decode().unwrap();
            assert_eq!(view.name, format!("name-{}-{}", view.id, window.scn()));
            // The generic record and JSON have the reader's shape too.
            let json = event.json().unwrap();
            assert!(json.get("seq").is_none(), "{json}");
            assert_eq!(json["extra"], "none");
            // Without the configured reader, per call.
            let raw = event.record_with(&reader).unwrap();
            assert!(matches!(raw, apache_avro::types::Value::Record(ref f) if f.len() == 3));
            views.push((view.id, view.extra));
        }
    }
    assert_eq!(views[0], (100, "none".to_owned()));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_larger_than_a_response_arrive_and_oversized_ones_are_a_clear_error() {
    let mut relay = TestRelay::start(4 << 20).await;
    for (scn, len) in [(1u64, 100 << 10), (2, 300 << 10)] {
        let mut event = make_event(&relay.schema, scn, 1, scn as i64, 0);
        event.payload = vec![7; len];
        relay.writer.append(&event.builder()).unwrap();
        relay.writer.end_window(Scn::new(scn), scn).unwrap();
    }
    let mut config = fast_config(&[relay.url()]);
    config.max_response_bytes = 16 << 10;
    config.buffer_bytes = 128 << 10;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let mut stream = client.stream(CancellationToken::new()).await.unwrap();
    // 100 KiB > max_response_bytes: the relay sends it alone, the client takes it.
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.event(0).payload().len(), 100 << 10);
    // 300 KiB > buffer_bytes: a definite error naming the fix, not an endless retry.
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("raise buffer_bytes"), "{err}");
    relay.stop().await;
}

/// A consumer whose `slow` key blocks until released.
struct SlowKey {
    slow: i64,
    release: tokio::sync::Semaphore,
    fast_seen: std::sync::Mutex<Vec<i64>>,
    slow_done: std::sync::atomic::AtomicBool,
    ended: std::sync::Mutex<Vec<u64>>,
}

impl databus_client::DatabusConsumer for SlowKey {
    async fn on_event(&self, event: &databus_client::DataEvent<'_>) -> ConsumerOutcome {
        let databus_core::KeyRef::Int(key) = event.key() else {
            return ConsumerOutcome::Fatal;
        };
        if key == self.slow {
            match tokio::time::timeout(Duration::from_secs(20), self.release.acquire()).await {
                Ok(Ok(_)) => self.slow_done.store(true, Ordering::SeqCst),
                _ => return ConsumerOutcome::Fatal,
            }
        } else {
            self.fast_seen.lock().unwrap().push(key);
        }
        ConsumerOutcome::Success
    }

    async fn on_end_window(
        &self,
        window: &databus_client::WindowInfo,
        _: &Checkpoint,
    ) -> ConsumerOutcome {
        assert!(
            self.slow_done.load(Ordering::SeqCst),
            "window {} ended before its slow event",
            window.scn
        );
        self.ended.lock().unwrap().push(window.scn.get());
        ConsumerOutcome::Success
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_key_on_one_worker_does_not_block_another_but_holds_the_checkpoint() {
    let buckets = std::num::NonZeroU32::new(2).unwrap();
    let bucket = |k: i64| databus_filters::bucket_of(databus_core::KeyRef::Int(k), buckets);
    let slow = 1;
    let fast: Vec<i64> = (2..100)
        .filter(|&k| bucket(k) != bucket(slow))
        .take(3)
        .collect();
    let mut relay = TestRelay::start(1 << 20).await;
    // Window 1: the slow key first, then two keys of the other worker; window 2: another fast key.
    relay.window(1, &[(1, slow, 1), (1, fast[0], 1), (1, fast[1], 1)]);
    relay.window(2, &[(1, fast[2], 2)]);
    let mut config = fast_config(&[relay.url()]);
    config.workers = 2;
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(SlowKey {
        slow,
        release: tokio::sync::Semaphore::new(0),
        fast_seen: Default::default(),
        slow_done: Default::default(),
        ended: Default::default(),
    });
    let shutdown = CancellationToken::new();
    let task = {
        let (client, consumer, token) = (client.clone(), consumer.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(consumer, token).await })
    };
    // The other worker delivers its events of window 1 while the slow key's worker is stuck.
    wait_until("the fast keys of window 1", || {
        consumer.fast_seen.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*consumer.fast_seen.lock().unwrap(), fast[..2].to_vec());
    // The window does not end, nothing is checkpointed, the next window waits (the barrier).
    assert!(consumer.ended.lock().unwrap().is_empty());
    assert_eq!(store.load().unwrap(), None);
    assert!(!consumer.slow_done.load(Ordering::SeqCst));
    consumer.release.add_permits(1);
    wait_until("window 2", || consumer.ended.lock().unwrap().len() == 2).await;
    assert_eq!(*consumer.ended.lock().unwrap(), vec![1, 2]);
    assert_eq!(*consumer.fast_seen.lock().unwrap(), fast);
    wait_until("checkpoint of window 2", || {
        store.load().unwrap() == Some(Checkpoint::after(Scn::new(2)))
    })
    .await;
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("client stops")
        .unwrap()
        .unwrap();
    assert_eq!((summary.windows, summary.events), (2, 4));
    relay.stop().await;
}

/// The bucket among 8 of an integer key.
fn bucket8(key: i64) -> u32 {
    databus_filters::bucket_of(
        databus_core::KeyRef::Int(key),
        std::num::NonZeroU32::new(8).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_consumers_with_coalesced_windows_end_equal_to_an_unfiltered_consumers_partitions()
 {
    let mut relay = TestRelay::start(8 << 20).await;
    // 400 windows of 1 or 2 events (some heartbeats): a member of 8 gets something in about one window
    // in five, so most of its windows are coalesced. Keys repeat with changing seqs, so order matters.
    let last = 400u64;
    for scn in 1..=last {
        let events: Vec<(u16, i64, i64)> = match scn % 7 {
            0 => Vec::new(),
            3 => vec![
                (1, (scn % 50) as i64, scn as i64),
                (1, (scn * 7 % 50) as i64, scn as i64),
            ],
            _ => vec![(1, (scn % 50) as i64, scn as i64)],
        };
        relay.window(scn, &events);
    }
    let mut unfiltered_config = fast_config(&[relay.url()]);
    unfiltered_config.max_response_bytes = 4096;
    let all = Arc::new(Recorder::default());
    let client =
        DatabusClient::new(unfiltered_config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let run = spawn_run(&client, all.clone());
    let members: Vec<(Arc<Recorder>, Arc<MemoryCheckpointStore>)> = (0..8)
        .map(|_| {
            (
                Arc::new(Recorder::default()),
                Arc::new(MemoryCheckpointStore::new()),
            )
        })
        .collect();
    let mut runs = vec![run];
    for (i, (consumer, store)) in members.iter().enumerate() {
        let mut config = fast_config(&[relay.url()]);
        // Small responses: runs of empty windows are cut by response ends as well as by events.
        config.max_response_bytes = 512;
        config.partition = Some(PartitionMember {
            instance: i as u32,
            of: 8,
        });
        assert!(config.coalesce_empty_windows, "the default");
        let client = DatabusClient::new(config, store.clone()).unwrap();
        runs.push(spawn_run(&client, consumer.clone()));
    }
    wait_until("the unfiltered consumer's last window", || {
        all.last_window() == Some(last)
    })
    .await;
    for (consumer, _) in &members {
        // The last window is always delivered: a read ends with the marker of the run it coalesced.
        wait_until("each member's last window", || {
            consumer.last_window() == Some(last)
        })
        .await;
    }
    for run in runs {
        run.stop().await.unwrap();
    }
    let everything = all.events();
    let every_window: Vec<u64> = all.log.lock().unwrap().ended.clone();
    assert_eq!(
        every_window,
        (1..=last).collect::<Vec<_>>(),
        "no filter: every window"
    );
    let mut union = Vec::new();
    for (i, (consumer, store)) in members.iter().enumerate() {
        let events = consumer.events();
        // Exactly the unfiltered consumer's events of this bucket, in the same order.
        let want: Vec<Seen> = everything
            .iter()
            .filter(|e| bucket8(e.key) == i as u32)
            .cloned()
            .collect();
        assert_eq!(events, want, "member {i}");
        let log = consumer.log.lock().unwrap();
        // Every window holding events of the bucket is delivered, with exactly those events.
        let with_events: BTreeSet<u64> = want.iter().map(|e| e.scn).collect();
        let delivered: BTreeSet<u64> = log.ended.iter().copied().collect();
        assert!(with_events.is_subset(&delivered), "member {i}");
        for &(scn, n) in &log.windows {
            assert_eq!(
                n,
                want.iter().filter(|e| e.scn == scn).count(),
                "member {i} window {scn}"
            );
        }
        // Windows strictly grow and runs with nothing were coalesced: far fewer windows than 400.
        assert!(log.ended.windows(2).all(|w| w[0] < w[1]), "member {i}");
        assert!(
            log.ended.len() < last as usize / 2,
            "member {i} got {} windows of {last}",
            log.ended.len()
        );
        // The persisted checkpoint covers every window: a restarted member re-reads nothing.
        assert_eq!(
            store.load().unwrap(),
            Some(Checkpoint::after(Scn::new(last))),
            "member {i}"
        );
        union.extend(events);
    }
    union.sort();
    let mut sorted = everything.clone();
    sorted.sort();
    assert_eq!(union, sorted, "the members together got every event once");
    relay.stop().await;
}
