//! The switchover paths a real bootstrap server produces only under rare timing, against a small fake
//! bootstrap server on loopback and a real in-process relay: `snapshot_required` restarts with a full
//! snapshot; a relay that evicted the target SCN sends the consumer back for a log-only catch-up.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use databus_client::{
    BootstrapInfo, CheckpointStore, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, Phase, WindowInfo,
};
use databus_core::{BootstrapProgress, Checkpoint, ConsumptionMode, Scn};
use databus_serde_formats::RegisteredSchema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Frames of windows `scns` as the relay holds them (4 events each, keys `scn*100..`).
fn windows(schema: &RegisteredSchema, scns: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for scn in scns {
        for key in 0..4 {
            make_event(schema, scn, 1, scn as i64 * 100 + key, scn as i64)
                .builder()
                .write_to_vec(&mut out);
        }
        databus_core::EventBuilder::end_of_window(Scn::new(scn), scn * 1000).write_to_vec(&mut out);
    }
    out
}

/// The fake server's answer to one checkpoint: status, returned checkpoint, path, body.
type Answer = (u16, Option<Checkpoint>, &'static str, Vec<u8>);

async fn fake_bootstrap(
    answer: impl Fn(&Checkpoint) -> Answer + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Checkpoint>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (answer, log) = (Arc::new(answer), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&raw)
                    .lines()
                    .next()
                    .unwrap()
                    .to_owned();
                let target = line.split(' ').nth(1).unwrap();
                let query = target.split_once('?').map_or("", |q| q.1);
                assert!(target.starts_with("/v1/bootstrap/stream?"), "{target}");
                assert!(
                    !query.contains("buffer="),
                    "relay-only parameter sent: {query}"
                );
                let cp = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "checkpoint")
                    .map(|(_, v)| Checkpoint::from_json(&v).unwrap())
                    .unwrap();
                log.lock().unwrap().push(cp.clone());
                let (status, next, path, body) = answer(&cp);
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                if let Some(next) = next {
                    head.push_str(&format!("x-databus-checkpoint: {}\r\n", next.to_json()));
                }
                head.push_str(&format!("x-databus-bootstrap-path: {path}\r\n\r\n"));
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (url, seen)
}

#[derive(Default)]
struct Log {
    calls: Mutex<Vec<String>>,
    windows: Mutex<Vec<(Phase, u64)>>,
    keys: Mutex<BTreeSet<(i64, i64)>>,
}

impl DatabusConsumer for Log {
    async fn on_event(&self, e: &DataEvent<'_>) -> ConsumerOutcome {
        let row: Row = e.decode().unwrap();
        self.keys.lock().unwrap().insert((row.id, row.seq));
        ConsumerOutcome::Success
    }
    async fn on_end_window(&self, w: &WindowInfo, cp: &Checkpoint) -> ConsumerOutcome {
        let want = match w.phase {
            Phase::Online => ConsumptionMode::Online,
            _ => ConsumptionMode::BootstrapCatchup,
        };
        assert_eq!(cp.mode, want, "window {} {:?}: {cp:?}", w.scn, w.phase);
        self.windows.lock().unwrap().push((w.phase, w.scn.get()));
        ConsumerOutcome::Success
    }
    async fn on_start_bootstrap(&self, i: &BootstrapInfo) -> ConsumerOutcome {
        self.calls
            .lock()
            .unwrap()
            .push(format!("start_bootstrap {:?}", i.since_scn.map(Scn::get)));
        ConsumerOutcome::Success
    }
    async fn on_start_catchup(&self, t: Scn) -> ConsumerOutcome {
        self.calls
            .lock()
            .unwrap()
            .push(format!("start_catchup {t}"));
        ConsumerOutcome::Success
    }
    async fn on_end_bootstrap(&self, t: Scn) -> ConsumerOutcome {
        self.calls
            .lock()
            .unwrap()
            .push(format!("end_bootstrap {t}"));
        ConsumerOutcome::Success
    }
}

fn catchup_cp(since: Option<u64>, start: u64, target: u64) -> Checkpoint {
    Checkpoint {
        mode: ConsumptionMode::BootstrapCatchup,
        bootstrap: Some(BootstrapProgress {
            since_scn: since.map(Scn::new),
            start_scn: Some(Scn::new(start)),
            target_scn: Some(Scn::new(target)),
            ..BootstrapProgress::default()
        }),
        ..Checkpoint::after(Scn::new(start))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_required_then_relay_beyond_target_repeats_catch_up_from_the_log() {
    let mut relay = TestRelay::start(64 << 10).await;
    for scn in 1..=400u64 {
        relay.window(scn, &rows(1, scn as i64 * 100, 4, scn as i64));
    }
    let oldest = relay.buffer.stats().min_scn.unwrap().get();
    assert!(oldest > 100, "the relay evicted windows up to {oldest}");
    let schema = relay.schema.clone();
    let (url, requests) = fake_bootstrap(move |cp| {
        let progress = cp.bootstrap.clone().unwrap();
        match (
            cp.mode,
            progress.since_scn.map(Scn::get),
            progress.start_scn,
        ) {
            // A delta since 10 is too old for this server.
            (ConsumptionMode::BootstrapSnapshot, Some(10), None) => {
                let body = br#"{"error":"snapshot_required","message":"too old"}"#.to_vec();
                (410, None, "delta", body)
            }
            // Full snapshot: three rows as of SCN 50, then catch-up (50, 60].
            (ConsumptionMode::BootstrapSnapshot, None, None) => {
                let mut body = Vec::new();
                for key in 1..=3 {
                    make_event(&schema, 50, 1, key, 50)
                        .builder()
                        .write_to_vec(&mut body);
                }
                (200, Some(catchup_cp(None, 50, 60)), "snapshot", body)
            }
            (ConsumptionMode::BootstrapCatchup, None, Some(_)) => (
                200,
                Some(Checkpoint::after(Scn::new(60))),
                "snapshot",
                windows(&schema, 51..=60),
            ),
            // Back from the relay (it evicted 60): log-only catch-up (60, oldest] in the first answer.
            (ConsumptionMode::BootstrapSnapshot, Some(60), None) => (
                200,
                Some(Checkpoint::after(Scn::new(oldest))),
                "log_only",
                windows(&schema, 61..=oldest),
            ),
            other => panic!("unexpected request {other:?}: {cp:?}"),
        }
    })
    .await;

    let store = Arc::new(MemoryCheckpointStore::new());
    store.store(&Checkpoint::after(Scn::new(10))).unwrap();
    let mut config = fast_config(&[relay.url()]);
    config.bootstrap_servers = vec![url];
    config.buffer = Some("shop".into());
    let client = DatabusClient::new(config, store.clone()).unwrap();
    let consumer = Arc::new(Log::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (client, consumer, token) = (client.clone(), consumer.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(consumer, token).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.windows.lock().unwrap().last() != Some(&(Phase::Online, 400)) {
        assert!(
            !task.is_finished(),
            "client stopped: {:?}",
            consumer.calls.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "timed out: {:?}",
            consumer.calls.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(
        *consumer.calls.lock().unwrap(),
        vec![
            "start_bootstrap Some(10)".to_owned(),
            "start_bootstrap None".into(),
            "start_catchup 60".into(),
            "end_bootstrap 60".into(),
            "start_bootstrap Some(60)".into(),
            format!("start_catchup {oldest}"),
            format!("end_bootstrap {oldest}"),
        ]
    );
    let windows = consumer.windows.lock().unwrap().clone();
    let mut want = vec![(Phase::Snapshot, 50)];
    want.extend((51..=oldest).map(|s| (Phase::Catchup, s)));
    want.extend((oldest + 1..=400).map(|s| (Phase::Online, s)));
    assert_eq!(windows, want);
    let keys = consumer.keys.lock().unwrap().clone();
    let mut want: BTreeSet<(i64, i64)> = (1..=3).map(|k| (k, 50)).collect();
    for scn in 51..=400i64 {
        want.extend((0..4).map(|k| (scn * 100 + k, scn)));
    }
    assert_eq!(keys, want);
    assert_eq!(
        store.load().unwrap(),
        Some(Checkpoint::after(Scn::new(400)))
    );
    assert_eq!(requests.lock().unwrap().len(), 4);
    relay.stop().await;
}
