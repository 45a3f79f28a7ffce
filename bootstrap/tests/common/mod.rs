//! Shared fixtures: an in-process relay over a real event buffer, a bootstrap server (producer,
//! applier, HTTP) on a real SQLite file, a consumer driving the bootstrap protocol over loopback HTTP,
//! and a brute-force model of the source.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use databus_bootstrap::applier::{ApplierSettings, run_applier};
use databus_bootstrap::producer::{ProducerSettings, run_producer};
use databus_bootstrap::relay_client::RelayClient;
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::{BootstrapStore, SqliteStore};
use databus_buffer::{BufferConfig, BufferWriter, event_buffer};
use databus_core::{
    Checkpoint, ConsumptionMode, EventBuilder, EventView, Key, Opcode, Scn, SourceId,
};
use databus_filters::{Filter, FilterSpec};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, SourceHandle};
use databus_serde_formats::SchemaRegistry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One change of the model: source, key, upsert payload or delete.
pub type Change = (u16, i64, Option<Vec<u8>>);

/// An in-process relay with one buffer ("shop") holding sources 1 and 2.
pub struct Relay {
    pub addr: SocketAddr,
    pub writer: BufferWriter,
    pub shutdown: CancellationToken,
}

pub async fn start_relay() -> Relay {
    start_relay_with(32 << 20).await
}

/// A relay whose buffer holds `capacity` bytes.
pub async fn start_relay_with(capacity: usize) -> Relay {
    let (writer, buffer) = event_buffer(BufferConfig::new(capacity)).unwrap();
    let table = |id: u16, name: &str| ValidatedTable {
        id: SourceId::new(id),
        name: name.into(),
        database: "shop".into(),
        table: name.into(),
    };
    let source = SourceHandle {
        name: "shop".into(),
        buffer,
        tables: vec![table(1, "orders"), table(2, "customers")],
        status: Default::default(),
    };
    let service = RelayService::new(
        vec![source],
        Arc::new(SchemaRegistry::in_memory()),
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(databus_relay::serve(service, listener, shutdown.clone()));
    Relay {
        addr,
        writer,
        shutdown,
    }
}

impl Relay {
    /// Publishes one window.
    pub fn write(&mut self, scn: u64, changes: &[Change]) {
        for (source, key, payload) in changes {
            let op = if payload.is_some() {
                Opcode::Upsert
            } else {
                Opcode::Delete
            };
            let empty = Vec::new();
            let event = EventBuilder::new(Scn::new(scn), op)
                .source(SourceId::new(*source))
                .timestamp_ns(scn * 1000)
                .key(databus_core::KeyRef::Int(*key))
                .payload(payload.as_ref().unwrap_or(&empty));
            self.writer.append(&event).unwrap();
        }
        self.writer.end_window(Scn::new(scn), scn * 1000).unwrap();
    }
}

/// The source's history, for brute-force answers.
#[derive(Default, Clone)]
pub struct Model {
    pub windows: Vec<(u64, Vec<Change>)>,
}

pub type State = BTreeMap<(u16, i64), Vec<u8>>;

impl Model {
    /// The state at `scn` by replaying every window, filtered.
    pub fn state_at(&self, scn: u64, filter: &FilterSpec) -> State {
        let f = Filter::new(filter);
        let mut state = State::new();
        for (s, changes) in self.windows.iter().filter(|(s, _)| *s <= scn) {
            let _ = s;
            for (source, key, payload) in changes {
                if !f.matches_key(SourceId::new(*source), Key::Int(*key).as_ref()) {
                    continue;
                }
                match payload {
                    Some(p) => state.insert((*source, *key), p.clone()),
                    None => state.remove(&(*source, *key)),
                };
            }
        }
        state
    }
}

/// A running bootstrap server (producer, applier, HTTP) over one SQLite file.
pub struct Bootstrap {
    pub addr: SocketAddr,
    pub store: Arc<dyn BootstrapStore>,
    pub shutdown: CancellationToken,
    pub producer: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub applier: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub relay_url: String,
}

pub async fn start_bootstrap(
    path: &std::path::Path,
    relay: SocketAddr,
    serve: ServeSettings,
) -> Bootstrap {
    let store: Arc<dyn BootstrapStore> = Arc::new(SqliteStore::open(path).unwrap());
    let service = BootstrapService::new(store.clone(), serve);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(databus_bootstrap::http::serve(
        service,
        listener,
        shutdown.clone(),
    ));
    let mut b = Bootstrap {
        addr,
        store,
        shutdown,
        producer: None,
        applier: None,
        relay_url: format!("http://{relay}"),
    };
    b.start_producer();
    b.start_applier();
    b
}

impl Bootstrap {
    pub fn start_producer(&mut self) {
        let token = CancellationToken::new();
        let mut settings = ProducerSettings::new(self.relay_url.clone());
        settings.max_bytes = 2000; // many responses ending mid-window
        settings.wait = Duration::from_millis(200);
        let store = self.store.clone();
        let t = token.clone();
        let task = tokio::spawn(async move {
            run_producer(store, settings, t)
                .await
                .expect("producer runs");
        });
        self.producer = Some((token, task));
    }

    pub fn start_applier(&mut self) {
        let token = CancellationToken::new();
        let settings = ApplierSettings {
            max_windows: 7,
            max_events: 40,
            idle_poll: Duration::from_millis(10),
        };
        let store = self.store.clone();
        let t = token.clone();
        let task = tokio::spawn(async move {
            run_applier(store, settings, t).await.expect("applier runs");
        });
        self.applier = Some((token, task));
    }

    pub async fn stop_producer(&mut self) {
        if let Some((t, task)) = self.producer.take() {
            t.cancel();
            task.await.unwrap();
        }
    }

    /// Aborts the producer and the applier at whatever await point they are (a crash, as far as a
    /// task can crash: a storage transaction already handed to the blocking pool still completes or
    /// rolls back as a whole).
    pub async fn kill_both(&mut self) {
        for (_, task) in [self.producer.take(), self.applier.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn stop_applier(&mut self) {
        if let Some((t, task)) = self.applier.take() {
            t.cancel();
            task.await.unwrap();
        }
    }

    /// Waits until the log and the snapshot reached `scn`.
    pub async fn wait_caught_up(&self, scn: u64) {
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One bootstrap response.
pub struct Page {
    pub status: u16,
    pub checkpoint: Option<Checkpoint>,
    pub more: bool,
    pub phase: String,
    pub path: String,
    pub body: Vec<u8>,
    pub error: Option<String>,
}

pub async fn get_page(addr: SocketAddr, query: &str) -> Page {
    let client = RelayClient::new(&format!("http://{addr}"), Duration::from_secs(30)).unwrap();
    let r = client
        .get(&format!("/v1/bootstrap/stream?{query}"))
        .await
        .unwrap();
    Page {
        status: r.status,
        checkpoint: r
            .header("x-databus-checkpoint")
            .map(|c| Checkpoint::from_json(c).unwrap()),
        more: r.header("x-databus-more") == Some("true"),
        phase: r.header("x-databus-bootstrap-phase").unwrap_or("").into(),
        path: r.header("x-databus-bootstrap-path").unwrap_or("").into(),
        error: r.header("x-databus-error").map(str::to_owned),
        body: r.body.to_vec(),
    }
}

/// Applies frames to a consumer's state.
pub fn apply_frames(state: &mut State, body: &[u8]) {
    for v in EventView::parse_all(body).unwrap() {
        if v.opcode().is_control() {
            continue;
        }
        let k = key_int(&v).0;
        match v.opcode() {
            Opcode::Delete => {
                state.remove(&(v.source().get(), k));
            }
            _ => {
                state.insert((v.source().get(), k), v.payload().to_vec());
            }
        }
    }
}

pub struct KeyRefInt(pub i64);

fn key_int(v: &EventView<'_>) -> KeyRefInt {
    match v.key() {
        databus_core::KeyRef::Int(k) => KeyRefInt(k),
        other => panic!("unexpected key {other:?}"),
    }
}

/// Runs a whole bootstrap from `cp` with `filter_query`, calling `between` after every response
/// (to write more to the relay meanwhile). Returns the final checkpoint and the path headers seen.
pub async fn run_bootstrap(
    addr: SocketAddr,
    state: &mut State,
    mut cp: Checkpoint,
    filter_query: &str,
    max_bytes: usize,
    mut between: impl FnMut(),
) -> (Checkpoint, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut paths = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "bootstrap did not finish");
        let q = format!(
            "checkpoint={}&max_bytes={max_bytes}{filter_query}",
            enc(&cp.to_json())
        );
        let page = get_page(addr, &q).await;
        assert_eq!(
            page.status,
            200,
            "{:?}: {}",
            page.error,
            String::from_utf8_lossy(&page.body)
        );
        apply_frames(state, &page.body);
        paths.push(page.path.clone());
        cp = page.checkpoint.unwrap();
        if cp.mode == ConsumptionMode::Online {
            assert_eq!(page.phase, "online");
            assert!(!page.more);
            return (cp, paths);
        }
        between();
    }
}
