//! Test support: in-process relays on 127.0.0.1 fed directly through their buffer writers (or run
//! whole from a configuration), events with real Avro payloads, a recording consumer, running a client
//! until a condition, a crashing checkpoint store, an in-process bootstrap server, consumers in child
//! processes, condition waits with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use databus_bootstrap::applier::{ApplierSettings, run_applier};
use databus_bootstrap::producer::{ProducerSettings, run_producer};
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::BootstrapStore;
use databus_buffer::{BufferConfig, BufferWriter, EventBuffer, event_buffer};
use databus_client::checkpoint::CheckpointStoreError;
use databus_client::{
    CheckpointStore, ClientError, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, RunSummary, WindowInfo,
};
use databus_core::{Checkpoint, Event, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::{
    Column, ColumnType, RegisteredSchema, SchemaRegistry, TableSchema, Value,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The row type of the test table `shop.t1 (id BIGINT PRIMARY KEY, seq BIGINT, name TEXT)`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Row {
    pub id: i64,
    pub seq: i64,
    pub name: String,
}

pub fn table() -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "t1".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("seq", ColumnType::BigInt { unsigned: false }, false),
            Column::new("name", ColumnType::Text { max_chars: None }, false),
        ],
        primary_key: vec![0],
    }
}

/// A relay served in-process from one buffer `shop` (sources 1 and 2), restartable on the same port.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub writer: BufferWriter,
    pub buffer: Arc<EventBuffer>,
    pub registry: Arc<SchemaRegistry>,
    pub schema: RegisteredSchema,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    /// TLS and tokens of the HTTP server (plain by default).
    pub security: databus_relay::ServerSecurity,
}

impl TestRelay {
    pub async fn start(capacity: usize) -> TestRelay {
        Self::start_at(capacity, "127.0.0.1:0".parse().unwrap()).await
    }

    /// A relay serving with TLS and/or tokens.
    #[allow(dead_code)]
    pub async fn start_secure(
        capacity: usize,
        security: databus_relay::ServerSecurity,
    ) -> TestRelay {
        let mut relay = Self::start_at(capacity, "127.0.0.1:0".parse().unwrap()).await;
        relay.stop().await;
        relay.security = security;
        relay.serve().await;
        relay
    }

    pub async fn start_at(capacity: usize, addr: SocketAddr) -> TestRelay {
        Self::start_with(BufferConfig::new(capacity), addr).await
    }

    /// A relay restarted while its source is down: its buffer has no origin until
    /// `relay.writer.anchor(..)`.
    #[allow(dead_code)]
    pub async fn start_unpositioned(capacity: usize) -> TestRelay {
        Self::start_with(
            BufferConfig::new(capacity).awaiting_anchor(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
    }

    async fn start_with(config: BufferConfig, addr: SocketAddr) -> TestRelay {
        let (writer, buffer) = event_buffer(config).unwrap();
        let registry = Arc::new(SchemaRegistry::in_memory());
        let schema = registry.register(&table()).unwrap();
        let mut relay = TestRelay {
            addr,
            writer,
            buffer,
            registry,
            schema,
            shutdown: CancellationToken::new(),
            server: None,
            security: databus_relay::ServerSecurity::plain(),
        };
        relay.serve().await;
        relay
    }

    fn service(&self) -> Arc<RelayService> {
        let tables = [(1, "t1"), (2, "t2")]
            .into_iter()
            .map(|(id, name)| ValidatedTable {
                id: SourceId::new(id),
                name: name.into(),
                database: "shop".into(),
                table: name.into(),
            })
            .collect();
        let source = SourceHandle {
            name: "shop".into(),
            buffer: self.buffer.clone(),
            tables,
            status: Default::default(),
        };
        RelayService::new(
            vec![source],
            self.registry.clone(),
            HttpSettings::defaults::<RelayHttp>(),
            None,
        )
    }

    /// (Re)starts serving on `self.addr` (port 0 the first time).
    pub async fn serve(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.addr = listener.local_addr().unwrap();
        self.shutdown = CancellationToken::new();
        self.server = Some(tokio::spawn(databus_relay::serve_with(
            self.service(),
            listener,
            self.security.clone(),
            self.shutdown.clone(),
        )));
    }

    /// Stops serving (the buffer is kept); open long polls are answered first.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(60), server)
                .await
                .expect("relay stops")
                .unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.security.scheme(), self.addr)
    }

    /// Appends window `scn` with one upsert per `(source, key, seq)`.
    pub fn window(&mut self, scn: u64, events: &[(u16, i64, i64)]) {
        append(&mut self.writer, &self.schema, scn, events);
    }
}

pub fn append(
    writer: &mut BufferWriter,
    schema: &RegisteredSchema,
    scn: u64,
    events: &[(u16, i64, i64)],
) {
    for &(source, key, seq) in events {
        let event = make_event(schema, scn, source, key, seq);
        writer.append(&event.builder()).unwrap();
    }
    writer.end_window(Scn::new(scn), scn * 1000).unwrap();
}

pub fn make_event(schema: &RegisteredSchema, scn: u64, source: u16, key: i64, seq: i64) -> Event {
    let row = vec![
        Value::Int(key),
        Value::Int(seq),
        Value::Text(format!("name-{key}-{seq}")),
    ];
    let mut payload = Vec::new();
    schema.encoder.encode(&row, &mut payload).unwrap();
    Event {
        scn: Scn::new(scn),
        opcode: Opcode::Upsert,
        source: SourceId::new(source),
        partition: PartitionId::new(0),
        timestamp_ns: scn * 1000,
        schema: schema.id,
        key: Key::Int(key),
        payload,
    }
}

/// One delivered event as recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub scn: u64,
    pub source: u16,
    pub key: i64,
    pub seq: i64,
}

/// What a [`Recorder`] saw.
#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<Seen>,
    pub windows: Vec<(u64, usize)>,
    pub ended: Vec<u64>,
    pub rollbacks: Vec<Checkpoint>,
    pub errors: Vec<String>,
    pub started: u32,
    pub stopped: u32,
    pub sources: Vec<(u64, u16, bool)>,
}

type Hook = Box<dyn Fn(&Seen, u32) -> ConsumerOutcome + Send + Sync>;

/// A consumer recording every callback; `hook` decides the outcome of `on_event` (given the event and
/// how many times this exact event was seen before).
#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Log>,
    pub hook: Option<Hook>,
    pub seen_count: Mutex<BTreeMap<Seen, u32>>,
    pub delay: Option<Duration>,
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: std::sync::atomic::AtomicUsize,
    pub current_window: Mutex<u64>,
}

impl Recorder {
    pub fn with_hook(hook: impl Fn(&Seen, u32) -> ConsumerOutcome + Send + Sync + 'static) -> Self {
        Recorder {
            hook: Some(Box::new(hook)),
            ..Recorder::default()
        }
    }

    pub fn events(&self) -> Vec<Seen> {
        self.log.lock().unwrap().events.clone()
    }

    pub fn event_count(&self) -> usize {
        self.log.lock().unwrap().events.len()
    }

    pub fn last_window(&self) -> Option<u64> {
        self.log.lock().unwrap().ended.last().copied()
    }
}

impl DatabusConsumer for Recorder {
    async fn on_start_consumption(&self) -> ConsumerOutcome {
        self.log.lock().unwrap().started += 1;
        ConsumerOutcome::Success
    }

    async fn on_stop_consumption(&self) -> ConsumerOutcome {
        self.log.lock().unwrap().stopped += 1;
        ConsumerOutcome::Success
    }

    async fn on_start_window(&self, window: &WindowInfo) -> ConsumerOutcome {
        *self.current_window.lock().unwrap() = window.scn.get();
        self.log
            .lock()
            .unwrap()
            .windows
            .push((window.scn.get(), window.events));
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, checkpoint: &Checkpoint) -> ConsumerOutcome {
        assert_eq!(checkpoint, &Checkpoint::after(window.scn));
        self.log.lock().unwrap().ended.push(window.scn.get());
        ConsumerOutcome::Success
    }

    async fn on_start_source(
        &self,
        source: SourceId,
        schema: Option<&apache_avro::Schema>,
    ) -> ConsumerOutcome {
        assert!(schema.is_some(), "the writer schema is resolved");
        let w = *self.current_window.lock().unwrap();
        self.log
            .lock()
            .unwrap()
            .sources
            .push((w, source.get(), true));
        ConsumerOutcome::Success
    }

    async fn on_end_source(&self, source: SourceId) -> ConsumerOutcome {
        let w = *self.current_window.lock().unwrap();
        self.log
            .lock()
            .unwrap()
            .sources
            .push((w, source.get(), false));
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        use std::sync::atomic::Ordering;
        let row: Row = match event.decode() {
            Ok(row) => row,
            Err(e) => panic!("decode failed: {e}"),
        };
        assert_eq!(event.key(), databus_core::KeyRef::Int(row.id));
        let seen = Seen {
            scn: event.scn().get(),
            source: event.source().get(),
            key: row.id,
            seq: row.seq,
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let before = {
            let mut counts = self.seen_count.lock().unwrap();
            let c = counts.entry(seen.clone()).or_default();
            *c += 1;
            *c - 1
        };
        let outcome = self
            .hook
            .as_ref()
            .map_or(ConsumerOutcome::Success, |h| h(&seen, before));
        if outcome == ConsumerOutcome::Success {
            self.log.lock().unwrap().events.push(seen);
        }
        outcome
    }

    async fn on_rollback(&self, to: &Checkpoint) -> ConsumerOutcome {
        self.log.lock().unwrap().rollbacks.push(to.clone());
        ConsumerOutcome::Success
    }

    async fn on_error(&self, error: &databus_client::ClientError) -> ConsumerOutcome {
        self.log.lock().unwrap().errors.push(error.to_string());
        ConsumerOutcome::Success
    }
}

/// Waits for `cond` with a deadline.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(source, key, seq)` events of a window of `n` events with keys `key0..key0+n`.
pub fn rows(source: u16, key0: i64, n: i64, seq: i64) -> Vec<(u16, i64, i64)> {
    (key0..key0 + n).map(|k| (source, k, seq)).collect()
}

pub fn fast_config(urls: &[String]) -> databus_client::ClientConfig {
    let mut config = databus_client::ClientConfig::with_relays(urls.iter().cloned());
    config.long_poll = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(2);
    config.fetch_backoff.initial = Duration::from_millis(10);
    config.fetch_backoff.max = Duration::from_millis(200);
    config.retry.backoff.initial = Duration::from_millis(1);
    config.retry.backoff.max = Duration::from_millis(10);
    config
}

/// The scheme id of the test table, for tests that build frames by hand.
pub fn schema_id(relay: &TestRelay) -> SchemaId {
    relay.schema.id
}

/// Appends window `scn` of `(source, key, seq, delete)` changes.
pub fn append_ops(
    writer: &mut BufferWriter,
    schema: &RegisteredSchema,
    scn: u64,
    ops: &[(u16, i64, i64, bool)],
) {
    for &(source, key, seq, delete) in ops {
        let mut event = make_event(schema, scn, source, key, seq);
        if delete {
            event.opcode = Opcode::Delete;
        }
        writer.append(&event.builder()).unwrap();
    }
    writer.end_window(Scn::new(scn), scn * 1000).unwrap();
}

/// A relay with `windows` windows `1..=windows` of 3 upserts each (source 1, keys `scn*100..+3`,
/// seq `scn`).
pub async fn relay_with_windows(windows: u64) -> TestRelay {
    let mut relay = TestRelay::start(8 << 20).await;
    for scn in 1..=windows {
        relay.window(scn, &rows(1, scn as i64 * 100, 3, scn as i64));
    }
    relay
}

/// Runs `client` until `done` holds for `consumer` or the client stops by itself (the test fails
/// after 60 s); then shuts it down and returns its result.
pub async fn run_until<C: DatabusConsumer + 'static>(
    client: &DatabusClient,
    consumer: Arc<C>,
    done: impl Fn(&C) -> bool,
) -> Result<RunSummary, ClientError> {
    run_until_or(client, consumer, done, |_| String::new()).await
}

/// [`run_until`], with `context(consumer)` appended to the time-out message.
pub async fn run_until_or<C: DatabusConsumer + 'static>(
    client: &DatabusClient,
    consumer: Arc<C>,
    done: impl Fn(&C) -> bool,
    context: impl Fn(&C) -> String,
) -> Result<RunSummary, ClientError> {
    let shutdown = CancellationToken::new();
    let task = {
        let (client, consumer, token) = (client.clone(), consumer.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(consumer, token).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&consumer) && !task.is_finished() {
        assert!(Instant::now() < deadline, "timed out{}", context(&consumer));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
}

/// A checkpoint store that fails (as a crash before the write would) on its `fail_at`-th store.
pub struct CrashingStore {
    pub inner: MemoryCheckpointStore,
    pub calls: AtomicU32,
    pub fail_at: u32,
}

impl CrashingStore {
    pub fn failing_at(fail_at: u32) -> CrashingStore {
        CrashingStore {
            inner: MemoryCheckpointStore::new(),
            calls: AtomicU32::new(0),
            fail_at,
        }
    }
}

impl CheckpointStore for CrashingStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        self.inner.load()
    }

    fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.fail_at {
            return Err(CheckpointStoreError::Other(
                "simulated crash before the write".into(),
            ));
        }
        self.inner.store(checkpoint)
    }
}

/// A bootstrap server in process over `store`: its HTTP API (`serve` settings, `security`), a
/// producer copying a relay and an applier, all running until `shutdown`. Returns its URL.
pub async fn spawn_bootstrap(
    store: Arc<dyn BootstrapStore>,
    serve: ServeSettings,
    security: databus_relay::ServerSecurity,
    producer: ProducerSettings,
    applier: ApplierSettings,
    shutdown: &CancellationToken,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{}://{}", security.scheme(), listener.local_addr().unwrap());
    tokio::spawn(databus_bootstrap::http::serve_with(
        BootstrapService::new(store.clone(), serve),
        listener,
        security,
        shutdown.clone(),
    ));
    let (s, t) = (store.clone(), shutdown.clone());
    tokio::spawn(async move { run_producer(s, producer, t).await.expect("producer runs") });
    let (s, t) = (store, shutdown.clone());
    tokio::spawn(async move { run_applier(s, applier, t).await.expect("applier runs") });
    url
}

/// The command re-running this test binary for the ignored test `test` only (a consumer in a child
/// process), following `relay`, aborting at window `abort_at` if given; its output discarded.
/// `module` is the caller's `module_path!()`: the test's name in the harness is its path without the
/// crate's own name.
pub fn child_test(
    module: &str,
    test: &str,
    relay: &str,
    abort_at: Option<u64>,
) -> std::process::Command {
    let name = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    };
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", &name, "--test-threads=1"])
        .env("DATABUS_TEST_RELAY", relay)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(scn) = abort_at {
        cmd.env("DATABUS_TEST_ABORT_AT", scn.to_string());
    }
    cmd
}

/// In a child test run by [`child_test`]: the relay URL and the window to abort at.
pub fn child_env() -> (String, Option<Scn>) {
    let url = std::env::var("DATABUS_TEST_RELAY").expect("run by the parent test");
    let abort_at = std::env::var("DATABUS_TEST_ABORT_AT")
        .ok()
        .map(|s| Scn::new(s.parse().unwrap()));
    (url, abort_at)
}

/// Cancels `token` once `done` holds (polled every 5 ms on a task).
pub fn cancel_when(token: CancellationToken, done: impl Fn() -> bool + Send + 'static) {
    tokio::spawn(async move {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        token.cancel();
    });
}

/// A whole relay (`databus_relay::run_with`) run in process from a TOML configuration.
pub struct ConfiguredRelay {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), databus_relay::RelayError>>,
}

/// Runs a relay from `toml` on `addr`, binding again until it is free (a restart on the same port).
pub async fn run_relay(toml: &str, addr: &str) -> ConfiguredRelay {
    let config = databus_relay::RelayConfig::from_toml(toml)
        .unwrap()
        .validate()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "bind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    ConfiguredRelay {
        addr,
        shutdown,
        task,
    }
}

/// Waits until the relay's ingest streams (`/v1/status`).
pub async fn wait_streaming(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /v1/status HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        sock.read_to_string(&mut raw).await.unwrap();
        if raw.contains(r#""state":"streaming""#) {
            return;
        }
        assert!(Instant::now() < deadline, "relay never streamed: {raw}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
