//! Bootstrap switchover end to end: an in-process relay with a small buffer, the real bootstrap server
//! (producer, applier, HTTP over SQLite) following it, and the client switching between them.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use databus_bootstrap::applier::ApplierSettings;
use databus_bootstrap::producer::ProducerSettings;
use databus_bootstrap::serve::ServeSettings;
use databus_bootstrap::store::{
    BootstrapStore, SeedProgress, SqliteStore, StoredEvent, StoredSchema,
};
use databus_client::{
    BootstrapInfo, CheckpointStore, ClientError, ConsumerOutcome, DataEvent, DatabusClient,
    DatabusConsumer, MemoryCheckpointStore, Phase, StartPosition, StreamItem, Transition,
    WindowInfo,
};
use databus_core::{Checkpoint, ConsumptionMode, EventBuilder, Opcode, Scn, SourceId};
use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema, Value, event_key};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A bootstrap server following `relay`.
struct Bootstrap {
    url: String,
    store: Arc<dyn BootstrapStore>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Bootstrap {
    async fn start(relay: &TestRelay) -> Bootstrap {
        Self::start_seeded(relay, |_| {}).await
    }

    /// Like [`Bootstrap::start`], with `seed` loading the store first (as `databus_bootstrap::seed`
    /// does before the producer starts).
    async fn start_seeded(relay: &TestRelay, seed: impl FnOnce(&dyn BootstrapStore)) -> Bootstrap {
        Self::start_with(
            relay,
            seed,
            ServeSettings {
                // Take the snapshot path for deltas (the log-only path is exercised too, by small gaps).
                log_only_max_events: 20,
                ..ServeSettings::default()
            },
        )
        .await
    }

    /// Like [`Bootstrap::start_seeded`], answering with `settings`.
    async fn start_with(
        relay: &TestRelay,
        seed: impl FnOnce(&dyn BootstrapStore),
        settings: ServeSettings,
    ) -> Bootstrap {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn BootstrapStore> =
            Arc::new(SqliteStore::open(dir.path().join("bootstrap.sqlite")).unwrap());
        seed(store.as_ref());
        let shutdown = CancellationToken::new();
        let mut producer = ProducerSettings::new(relay.url());
        producer.max_bytes = 4000;
        producer.wait = Duration::from_millis(100);
        let applier = ApplierSettings {
            max_windows: 5,
            max_events: 100,
            idle_poll: Duration::from_millis(5),
        };
        let url = spawn_bootstrap(
            store.clone(),
            settings,
            databus_relay::ServerSecurity::plain(),
            producer,
            applier,
            &shutdown,
        )
        .await;
        Bootstrap {
            url,
            store,
            shutdown,
            _dir: dir,
        }
    }

    async fn wait_caught_up(&self, scn: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.store.log_status().unwrap();
            let snap = self.store.snapshot_status().unwrap();
            if log.last_scn >= Some(Scn::new(scn)) && snap.applied_scn >= Some(Scn::new(scn)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bootstrap never reached {scn}: {log:?} {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The source's state: key -> seq of its last upsert.
type State = BTreeMap<i64, i64>;

/// Writes windows `scns` to the relay (and the model): 6 changes each over 40 keys, some deletes.
fn write(relay: &mut TestRelay, model: &mut State, scns: std::ops::RangeInclusive<u64>) {
    for scn in scns {
        let ops: Vec<(u16, i64, i64, bool)> = (0..6)
            .map(|i| {
                let key = ((scn * 7 + i * 13) % 40) as i64;
                let delete = (scn + i) % 5 == 0;
                (1, key, scn as i64, delete)
            })
            .collect();
        for &(_, key, seq, delete) in &ops {
            if delete {
                model.remove(&key);
            } else {
                model.insert(key, seq);
            }
        }
        let schema = relay.schema.clone();
        append_ops(&mut relay.writer, &schema, scn, &ops);
    }
}

/// Writes `chunks` chunks of 30 windows from SCN `first` on, waiting after each chunk until every
/// bootstrap server in `following` has caught up with it.
async fn write_in_chunks(
    relay: &mut TestRelay,
    model: &mut State,
    first: u64,
    chunks: u64,
    following: &[&Bootstrap],
) {
    for chunk in 0..chunks {
        let last = first + chunk * 30 + 29;
        write(relay, model, first + chunk * 30..=last);
        for bootstrap in following {
            bootstrap.wait_caught_up(last).await;
        }
    }
}

/// A replica-like consumer: applies upserts and deletes, records phases and bootstrap callbacks.
#[derive(Default)]
struct Replica {
    state: Mutex<State>,
    phases: Mutex<Vec<Phase>>,
    calls: Mutex<Vec<String>>,
    last_window: Mutex<Option<(Phase, u64)>>,
    /// Every window that ended, in order.
    windows: Mutex<Vec<u64>>,
}

impl DatabusConsumer for Replica {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let row: Row = event.decode().expect("decodes with the relay's schema");
        let mut state = self.state.lock().unwrap();
        if event.is_delete() {
            state.remove(&row.id);
        } else {
            state.insert(row.id, row.seq);
        }
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, w: &WindowInfo, cp: &Checkpoint) -> ConsumerOutcome {
        let mut phases = self.phases.lock().unwrap();
        if phases.last() != Some(&w.phase) {
            phases.push(w.phase);
        }
        let expected_mode = match w.phase {
            Phase::Online => ConsumptionMode::Online,
            Phase::Catchup => ConsumptionMode::BootstrapCatchup,
            Phase::Snapshot => cp.mode, // the last snapshot page may already carry catch-up mode
        };
        assert_eq!(cp.mode, expected_mode, "{cp:?}");
        *self.last_window.lock().unwrap() = Some((w.phase, w.scn.get()));
        self.windows.lock().unwrap().push(w.scn.get());
        ConsumerOutcome::Success
    }

    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        self.calls.lock().unwrap().push(format!(
            "start_bootstrap {:?}",
            info.since_scn.map(|s| s.get())
        ));
        ConsumerOutcome::Success
    }

    async fn on_start_catchup(&self, target: Scn) -> ConsumerOutcome {
        self.calls
            .lock()
            .unwrap()
            .push(format!("start_catchup {target}"));
        ConsumerOutcome::Success
    }

    async fn on_end_bootstrap(&self, scn: Scn) -> ConsumerOutcome {
        self.calls
            .lock()
            .unwrap()
            .push(format!("end_bootstrap {scn}"));
        ConsumerOutcome::Success
    }
}

impl Replica {
    /// The SCNs of `scns` no window ended with.
    fn never_delivered(&self, scns: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        let seen: std::collections::BTreeSet<u64> =
            self.windows.lock().unwrap().iter().copied().collect();
        scns.filter(|s| !seen.contains(s)).collect()
    }

    /// Whether the replica holds the source's state at `scn` and follows the relay: an online window
    /// `scn`, or a bootstrap that ended at `scn`.
    fn online_at(&self, scn: u64) -> bool {
        *self.last_window.lock().unwrap() == Some((Phase::Online, scn))
            || self.calls.lock().unwrap().last() == Some(&format!("end_bootstrap {scn}"))
    }
}

fn config(relay: &TestRelay, bootstrap: &Bootstrap) -> databus_client::ClientConfig {
    let mut c = fast_config(&[relay.url()]);
    c.bootstrap_servers = vec![bootstrap.url.clone()];
    c.max_response_bytes = 2000;
    c.buffer_bytes = 64 << 10;
    c
}

/// [`common::run_until`], naming the replica's bootstrap calls on a time-out.
async fn run_until(
    client: &DatabusClient,
    consumer: Arc<Replica>,
    done: impl Fn(&Replica) -> bool,
) -> Result<databus_client::RunSummary, ClientError> {
    run_until_or(client, consumer, done, |r| {
        format!("; calls {:?}", r.calls.lock().unwrap())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_consumer_starts_from_a_snapshot_then_follows_the_relay() {
    let mut relay = TestRelay::start(64 << 10).await;
    let bootstrap = Bootstrap::start(&relay).await;
    let mut model = State::new();
    write_in_chunks(&mut relay, &mut model, 1, 10, &[&bootstrap]).await;
    let mut c = config(&relay, &bootstrap);
    c.start = StartPosition::Snapshot;
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(c, store.clone()).unwrap();
    let replica = Arc::new(Replica::default());
    // Follow until online at 300, then write more and follow those through the relay.
    run_until(&client, replica.clone(), |r| r.online_at(300))
        .await
        .unwrap();
    assert_eq!(*replica.state.lock().unwrap(), model);
    write(&mut relay, &mut model, 301..=310);
    run_until(&client, replica.clone(), |r| r.online_at(310))
        .await
        .unwrap();
    assert_eq!(*replica.state.lock().unwrap(), model);
    let calls = replica.calls.lock().unwrap().clone();
    assert_eq!(calls[0], "start_bootstrap None");
    assert!(calls[1].starts_with("start_catchup "), "{calls:?}");
    assert!(calls[2].starts_with("end_bootstrap "), "{calls:?}");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(replica.phases.lock().unwrap()[0], Phase::Snapshot);
    assert_eq!(
        *replica.phases.lock().unwrap().last().unwrap(),
        Phase::Online
    );
    assert_eq!(
        store.load().unwrap(),
        Some(Checkpoint::after(Scn::new(310)))
    );
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_behind_every_relay_bootstraps_a_delta_and_returns() {
    let mut relay = TestRelay::start(64 << 10).await;
    let bootstrap = Bootstrap::start(&relay).await;
    let mut model = State::new();
    write(&mut relay, &mut model, 1..=20);
    bootstrap.wait_caught_up(20).await;
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(config(&relay, &bootstrap), store.clone()).unwrap();
    let replica = Arc::new(Replica::default());
    run_until(&client, replica.clone(), |r| r.online_at(20))
        .await
        .unwrap();
    assert_eq!(*replica.state.lock().unwrap(), model);
    assert!(
        replica.calls.lock().unwrap().is_empty(),
        "no bootstrap while the relay holds everything"
    );

    // The consumer is away while the relay evicts far past its checkpoint (20).
    write_in_chunks(&mut relay, &mut model, 21, 10, &[&bootstrap]).await;
    let oldest = relay.buffer.stats().min_scn;
    assert!(
        oldest.is_some_and(|s| s > Scn::new(21)),
        "relay evicted: {oldest:?}"
    );
    run_until(&client, replica.clone(), |r| r.online_at(320))
        .await
        .unwrap();
    assert_eq!(*replica.state.lock().unwrap(), model);
    let calls = replica.calls.lock().unwrap().clone();
    assert_eq!(calls[0], "start_bootstrap Some(20)", "{calls:?}");
    assert!(
        calls.iter().any(|c| c.starts_with("end_bootstrap")),
        "{calls:?}"
    );
    assert_eq!(
        store.load().unwrap(),
        Some(Checkpoint::after(Scn::new(320)))
    );
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_snapshot_resumes_not_restarts() {
    let mut relay = TestRelay::start(64 << 10).await;
    let bootstrap = Bootstrap::start(&relay).await;
    let mut model = State::new();
    write_in_chunks(&mut relay, &mut model, 1, 4, &[&bootstrap]).await;
    let mut c = config(&relay, &bootstrap);
    c.start = StartPosition::Snapshot;
    c.max_response_bytes = 300; // a few rows per snapshot page
    // start_bootstrap, two snapshot pages, then the crash
    let store = Arc::new(CrashingStore::failing_at(4));
    let client = DatabusClient::new(c, store.clone()).unwrap();
    let replica = Arc::new(Replica::default());
    let err = run_until(&client, replica.clone(), |_| false)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Store(_)), "{err}");
    let saved = store.load().unwrap().unwrap();
    assert_eq!(saved.mode, ConsumptionMode::BootstrapSnapshot);
    let progress = saved.bootstrap.clone().unwrap();
    assert!(
        progress.rows_done > 0 && progress.snapshot_token.is_some(),
        "{progress:?}"
    );

    // The replica keeps its state (it would have committed it with the checkpoint); the next run
    // resumes the snapshot where the checkpoint says, without a new start_bootstrap.
    let calls_before = replica.calls.lock().unwrap().len();
    run_until(&client, replica.clone(), |r| r.online_at(120))
        .await
        .unwrap();
    assert_eq!(*replica.state.lock().unwrap(), model);
    let calls = replica.calls.lock().unwrap().clone();
    assert!(
        !calls[calls_before..]
            .iter()
            .any(|c| c.starts_with("start_bootstrap")),
        "{calls:?}"
    );
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

/// A crash right after catch-up starts must not lose the windows of that first response: the
/// checkpoint persisted with `on_start_catchup` stands before them (found by the fault soak, seed 43:
/// a log-only catch-up whose first response ended mid-window persisted that end, and the restarted
/// consumer skipped ten windows). Two response sizes: several pages, and one response that ends the
/// bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_start_of_log_only_catch_up_loses_no_window() {
    let mut relay = TestRelay::start(64 << 10).await;
    // Default settings: a delta this small is served from the log alone.
    let bootstrap = Bootstrap::start_with(&relay, |_| {}, ServeSettings::default()).await;
    let mut model = State::new();
    write_in_chunks(&mut relay, &mut model, 1, 11, &[&bootstrap]).await;
    let oldest = relay.buffer.stats().min_scn;
    assert!(
        oldest.is_some_and(|s| s > Scn::new(21)),
        "relay evicted: {oldest:?}"
    );
    for max_response_bytes in [2000, 1 << 20] {
        let mut c = config(&relay, &bootstrap);
        c.max_response_bytes = max_response_bytes;
        c.buffer_bytes = c.buffer_bytes.max(max_response_bytes);
        // start_bootstrap, start_catchup, then the crash at the first window
        let store = Arc::new(CrashingStore::failing_at(3));
        store.inner.store(&Checkpoint::after(Scn::new(20))).unwrap();
        let client = DatabusClient::new(c, store.clone()).unwrap();
        let replica = Arc::new(Replica::default());
        let err = run_until(&client, replica.clone(), |_| false)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Store(_)), "{err}");
        let delivered = replica.windows.lock().unwrap().clone();
        let saved = store.load().unwrap().unwrap();
        // At-least-once: the saved checkpoint is never past a window the consumer has not finished.
        let consumed = delivered.last().copied().unwrap_or(20);
        assert!(
            saved.window_scn.get() <= consumed && saved.mode != ConsumptionMode::Online,
            "max_response_bytes {max_response_bytes}: saved {saved:?} but only windows {delivered:?} were consumed"
        );

        run_until(&client, replica.clone(), |r| r.online_at(330))
            .await
            .unwrap();
        let missing = replica.never_delivered(21..=330);
        assert!(
            missing.is_empty(),
            "max_response_bytes {max_response_bytes}: windows never delivered: {missing:?}"
        );
        assert!(
            !replica.phases.lock().unwrap().contains(&Phase::Snapshot),
            "served from the log alone"
        );
        assert_eq!(replica.calls.lock().unwrap()[0], "start_bootstrap Some(20)");
    }
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

/// A crash at every kind of checkpoint of a bootstrap, on each path (log-only delta, consolidated
/// delta, full snapshot): the store fails its `fail_at`-th write (the process dies before that
/// checkpoint is saved), the client runs again from what was saved, and the replica ends equal to
/// the source with every window after its old checkpoint delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_checkpoint_of_a_bootstrap_resumes_without_loss() {
    let mut relay = TestRelay::start(64 << 10).await;
    let log_only = Bootstrap::start_with(&relay, |_| {}, ServeSettings::default()).await;
    // Deltas of more than 20 events take the snapshot (consolidated delta) path here.
    let consolidated = Bootstrap::start(&relay).await;
    let mut model = State::new();
    write_in_chunks(&mut relay, &mut model, 1, 11, &[&log_only, &consolidated]).await;
    assert!(relay.buffer.stats().min_scn > Some(Scn::new(21)));
    let cases: [(&str, &Bootstrap, Option<u64>); 3] = [
        ("log-only delta since 20", &log_only, Some(20)),
        ("consolidated delta since 20", &consolidated, Some(20)),
        ("full snapshot", &consolidated, None),
    ];
    for (name, bootstrap, since) in cases {
        for fail_at in [1u32, 2, 3, 4, 5, 6, 8, 12, 20, 40, 80, 160, 250, 320] {
            let mut c = config(&relay, bootstrap);
            c.max_response_bytes = 1000; // many pages: a crash lands mid-snapshot and mid-catch-up
            if since.is_none() {
                c.start = StartPosition::Snapshot;
            }
            let store = Arc::new(CrashingStore::failing_at(fail_at));
            if let Some(since) = since {
                store
                    .inner
                    .store(&Checkpoint::after(Scn::new(since)))
                    .unwrap();
            }
            let client = DatabusClient::new(c, store.clone()).unwrap();
            let replica = Arc::new(Replica::default());
            let first = run_until(&client, replica.clone(), |r| r.online_at(330)).await;
            let saved = store.load().unwrap();
            if first.is_ok() {
                // Fewer checkpoints than `fail_at` in this bootstrap: nothing crashed.
                assert_eq!(*replica.state.lock().unwrap(), model, "{name}");
                continue;
            }
            assert!(
                matches!(first, Err(ClientError::Store(_))),
                "{name}, fail_at {fail_at}: {first:?}"
            );
            if let (Some(cp), Some(since)) = (&saved, since) {
                // At-least-once: never a checkpoint past the windows the consumer finished (on the
                // consolidated path snapshot pages stand for rows up to the snapshot's SCN).
                let consumed = replica.windows.lock().unwrap().clone();
                let last = consumed.last().copied().unwrap_or(since).max(since);
                if name.starts_with("log-only") {
                    assert!(
                        cp.window_scn.get() <= last,
                        "{name}, fail_at {fail_at}: saved {cp:?} past the consumed windows {consumed:?}"
                    );
                }
            }
            run_until(&client, replica.clone(), |r| r.online_at(330))
                .await
                .unwrap_or_else(|e| panic!("{name}, fail_at {fail_at}: resume failed: {e}"));
            assert_eq!(
                *replica.state.lock().unwrap(),
                model,
                "{name}, fail_at {fail_at}: saved {saved:?}"
            );
            if since.is_some() && name.starts_with("log-only") {
                let missing = replica.never_delivered(21..=330);
                assert!(
                    missing.is_empty(),
                    "{name}, fail_at {fail_at}: never delivered {missing:?}"
                );
            }
        }
    }
    log_only.shutdown.cancel();
    consolidated.shutdown.cancel();
    relay.stop().await;
}

/// Records what it decoded of source 2 (the seeded table) and when the bootstrap ended.
#[derive(Default)]
struct SeededReader {
    /// id -> the row as JSON, for every source-2 event that decoded.
    decoded: Mutex<BTreeMap<i64, serde_json::Value>>,
    /// Decode errors of source-2 events.
    failures: Mutex<Vec<String>>,
    ended_bootstrap: Mutex<Option<Scn>>,
}

impl DatabusConsumer for SeededReader {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        if event.source() == SourceId::new(2) {
            match event.json() {
                Ok(json) => {
                    let id = json["id"].as_i64().expect("id is a number");
                    self.decoded.lock().unwrap().insert(id, json);
                }
                Err(e) => self.failures.lock().unwrap().push(e.to_string()),
            }
        }
        ConsumerOutcome::Success
    }

    async fn on_end_bootstrap(&self, scn: Scn) -> ConsumerOutcome {
        *self.ended_bootstrap.lock().unwrap() = Some(scn);
        ConsumerOutcome::Success
    }
}

/// Rows a bootstrap server seeded straight from the database carry a writer schema only the bootstrap
/// store knows (the relay registers it when it first sees a change to that table): a consumer starting
/// from the snapshot fetches it from the bootstrap server and decodes those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_rows_decode_with_the_schema_only_the_bootstrap_server_knows() {
    let mut relay = TestRelay::start(64 << 10).await;
    let mut model = State::new();
    write(&mut relay, &mut model, 1..=10);
    // `shop.t2` (source 2), registered and encoded apart from the relay, as the seed does.
    let t2 = TableSchema {
        database: "shop".into(),
        table: "t2".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("label", ColumnType::Text { max_chars: None }, false),
            Column::new("qty", ColumnType::Int { unsigned: false }, true),
        ],
        primary_key: vec![0],
    };
    let registered = SchemaRegistry::in_memory().register(&t2).unwrap();
    assert!(
        relay.registry.get(registered.id).is_none(),
        "the relay must not know the seeded schema"
    );
    let seed_scn = Scn::new(10);
    let expected: BTreeMap<i64, serde_json::Value> = (1..=25i64)
        .map(|id| {
            let qty = if id % 4 == 0 {
                serde_json::Value::Null
            } else {
                (id * 3).into()
            };
            let json = serde_json::json!({ "id": id, "label": format!("seeded-{id}"), "qty": qty });
            (id, json)
        })
        .collect();
    let bootstrap = Bootstrap::start_seeded(&relay, |store| {
        store
            .put_schema(&StoredSchema {
                id: registered.id,
                source: SourceId::new(2),
                table: "shop.t2".into(),
                avro_json: registered.avro_json.to_string(),
            })
            .unwrap();
        let events: Vec<StoredEvent> = (1..=25i64)
            .map(|id| {
                let qty = if id % 4 == 0 {
                    Value::Null
                } else {
                    Value::Int(id * 3)
                };
                let values = vec![Value::Int(id), Value::Text(format!("seeded-{id}")), qty];
                let key = event_key(&t2, &values).unwrap();
                let mut payload = Vec::new();
                registered.encoder.encode(&values, &mut payload).unwrap();
                let mut frame = Vec::new();
                EventBuilder::new(seed_scn, Opcode::Upsert)
                    .source(SourceId::new(2))
                    .timestamp_ns(1)
                    .schema(registered.id)
                    .key(key.as_ref())
                    .payload(&payload)
                    .write_to_vec(&mut frame);
                StoredEvent {
                    scn: seed_scn,
                    source: SourceId::new(2),
                    opcode: Opcode::Upsert,
                    key,
                    frame,
                }
            })
            .collect();
        let progress = SeedProgress {
            scn: seed_scn,
            token: "{}".into(),
        };
        store.seed_chunk(&events, &progress).unwrap();
        store.finish_seed(seed_scn).unwrap();
    })
    .await;
    write(&mut relay, &mut model, 11..=20);
    bootstrap.wait_caught_up(20).await;

    let mut c = config(&relay, &bootstrap);
    c.start = StartPosition::Snapshot;
    let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let reader = Arc::new(SeededReader::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (client, reader, token) = (client.clone(), reader.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(reader, token).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.ended_bootstrap.lock().unwrap().is_none() && !task.is_finished() {
        assert!(Instant::now() < deadline, "the bootstrap never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let failures = reader.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} seeded rows did not decode, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(*reader.decoded.lock().unwrap(), expected);
    bootstrap.shutdown.cancel();
    relay.stop().await;
}

/// A replica keeping its checkpoint in its own SQLite file, committed with each window (the store
/// given to the client is `committed_by_consumer`).
struct Committing {
    conn: Mutex<rusqlite::Connection>,
    ended: Mutex<Vec<Scn>>,
}

impl DatabusConsumer for Committing {
    async fn on_end_window(&self, _: &WindowInfo, checkpoint: &Checkpoint) -> ConsumerOutcome {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().unwrap();
        databus_client::checkpoint::SqliteCheckpointStore::store_in(&tx, "replica", checkpoint)
            .unwrap();
        tx.commit().unwrap();
        ConsumerOutcome::Success
    }

    async fn on_end_bootstrap(&self, scn: Scn) -> ConsumerOutcome {
        self.ended.lock().unwrap().push(scn);
        ConsumerOutcome::Success
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_checkpoint_is_persisted_when_a_bootstrap_ends_on_an_idle_source() {
    let mut relay = TestRelay::start(64 << 10).await;
    let bootstrap = Bootstrap::start(&relay).await;
    let mut model = State::new();
    write(&mut relay, &mut model, 1..=20);
    bootstrap.wait_caught_up(20).await;
    let online = Some(Checkpoint::after(Scn::new(20)));

    // Push API, checkpoints committed by the consumer: no window follows the bootstrap's end, yet the
    // stored checkpoint is online at its target (not the last snapshot or catch-up window's).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.sqlite");
    let store = Arc::new(
        databus_client::checkpoint::SqliteCheckpointStore::open(&path, "replica")
            .unwrap()
            .committed_by_consumer(),
    );
    let consumer = Arc::new(Committing {
        conn: Mutex::new(rusqlite::Connection::open(&path).unwrap()),
        ended: Mutex::default(),
    });
    let mut c = config(&relay, &bootstrap);
    c.start = StartPosition::Snapshot;
    let client = DatabusClient::new(c.clone(), store.clone()).unwrap();
    common::run_until(&client, consumer.clone(), |c| {
        !c.ended.lock().unwrap().is_empty()
    })
    .await
    .unwrap();
    assert_eq!(*consumer.ended.lock().unwrap(), [Scn::new(20)]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        databus_client::checkpoint::SqliteCheckpointStore::load_from(&conn, "replica").unwrap(),
        online
    );

    // Pull API: the phase changes come between the windows, each with the checkpoint to commit.
    let store = Arc::new(MemoryCheckpointStore::new());
    let client = DatabusClient::new(c, store.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let mut stream = client.stream(shutdown.clone()).await.unwrap();
    let mut transitions = Vec::new();
    let mut rows = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, stream.next_item())
            .await
            .expect("the bootstrap ends")
            .expect("the stream goes on")
            .unwrap();
        match item {
            StreamItem::Window(w) => {
                rows += w.len();
                stream.commit(&w).await.unwrap();
            }
            StreamItem::Transition(t) => {
                stream.commit_transition(&t).await.unwrap();
                let end = matches!(t, Transition::EndBootstrap { .. });
                transitions.push(t);
                if end {
                    break;
                }
            }
        }
    }
    assert_eq!(rows, model.len());
    assert!(
        matches!(
            &transitions[..],
            [
                Transition::StartBootstrap { info, .. },
                Transition::StartCatchup { target, .. },
                Transition::EndBootstrap { scn, checkpoint },
            ] if info.since_scn.is_none() && *target == Scn::new(20) && *scn == Scn::new(20)
                && Some(checkpoint) == online.as_ref()
        ),
        "{transitions:?}"
    );
    assert_eq!(store.load().unwrap(), online);
    shutdown.cancel();
    bootstrap.shutdown.cancel();
    relay.stop().await;
}
