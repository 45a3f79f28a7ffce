//! The bootstrap server's caps against clients that misbehave, on a real SQLite file: a checkpoint
//! claiming an old start cannot pin the log (and stop trimming), pins are bounded in number and can be
//! listed and dropped, and concurrent `stream` requests are bounded (`503 overloaded`, `Retry-After`).

use std::sync::Arc;

use databus_bootstrap::http::routes;
use databus_bootstrap::serve::{BootstrapService, ServeSettings};
use databus_bootstrap::store::{
    BootstrapStore, LogStore, LogWindow, SnapshotStore, SourceInfo, SqliteStore,
};
use databus_core::{Checkpoint, Scn, SourceId};

fn heartbeats(store: &dyn BootstrapStore, scns: std::ops::RangeInclusive<u64>) {
    let windows: Vec<LogWindow> = scns
        .map(|s| LogWindow {
            scn: Scn::new(s),
            timestamp_ns: s * 1_000,
            events: Vec::new(),
        })
        .collect();
    store.append(&windows).unwrap();
}

/// A catch-up checkpoint of a bootstrap that started at `start`, going to `target`, now at `at`.
fn catchup_query(start: u64, target: u64, at: u64) -> String {
    let mut cp = Checkpoint::after(Scn::new(at));
    cp.start_bootstrap(Some(Scn::new(start)));
    cp.start_catchup(Scn::new(start), Scn::new(target)).unwrap();
    cp.window_scn = Scn::new(at);
    let text: String = form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect();
    format!("/v1/bootstrap/stream?checkpoint={text}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn store_with_floor() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("boot.sqlite")).unwrap());
    store.start_log(Scn::ZERO).unwrap();
    store
        .set_sources(&[SourceInfo {
            id: SourceId::new(1),
            name: "t".into(),
        }])
        .unwrap();
    heartbeats(store.as_ref(), 1..=40);
    store.trim(Scn::new(10), 1000).unwrap();
    assert_eq!(store.log_status().unwrap().floor_scn, Some(Scn::new(10)));
    (dir, store)
}

#[tokio::test]
async fn a_checkpoint_claiming_an_old_start_cannot_pin_the_log() {
    let (_dir, store) = store_with_floor();
    let routes = routes(BootstrapService::new(
        store.clone(),
        ServeSettings::default(),
    ));
    let r = warp::test::request()
        .path(&catchup_query(1, 40, 1))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 410, "{:?}", r.body());
    assert_eq!(r.headers()["x-databus-error"], "log_trimmed");
    // Nothing pinned: trimming goes on.
    assert_eq!(store.pins(now_ms()).unwrap(), vec![]);
    assert_eq!(store.min_pin(now_ms()).unwrap(), None);
    // A real bootstrap (start at or after the floor) pins as before.
    let r = warp::test::request()
        .path(&catchup_query(12, 40, 12))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    assert_eq!(store.min_pin(now_ms()).unwrap(), Some(Scn::new(12)));
}

#[tokio::test]
async fn pins_are_bounded_listed_and_dropped() {
    let (_dir, store) = store_with_floor();
    let settings = ServeSettings {
        max_pins: 3,
        ..ServeSettings::default()
    };
    let routes = routes(BootstrapService::new(store.clone(), settings));
    for start in [11, 12, 13] {
        let r = warp::test::request()
            .path(&catchup_query(start, 40, start))
            .reply(&routes)
            .await;
        assert_eq!(r.status(), 200, "{start}: {:?}", r.body());
    }
    // A fourth bootstrap in progress would add a pin: refused, retry later.
    let r = warp::test::request()
        .path(&catchup_query(14, 40, 14))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 503, "{:?}", r.body());
    assert_eq!(r.headers()["x-databus-error"], "overloaded");
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("serve.max_pins"),
        "{body}"
    );
    // The bootstraps already pinned go on.
    let r = warp::test::request()
        .path(&catchup_query(12, 40, 20))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let pins: Vec<u64> = store
        .pins(now_ms())
        .unwrap()
        .iter()
        .map(|p| p.0.get())
        .collect();
    assert_eq!(pins, [11, 12, 13]);
    // An operator drops them; new bootstraps pin again.
    assert_eq!(store.drop_pins().unwrap(), 3);
    let r = warp::test::request()
        .path(&catchup_query(14, 40, 14))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
}

#[tokio::test]
async fn concurrent_stream_requests_are_bounded() {
    let (_dir, store) = store_with_floor();
    let settings = ServeSettings {
        max_concurrent_streams: 2,
        ..ServeSettings::default()
    };
    let service = BootstrapService::new(store.clone(), settings);
    let routes = routes(service.clone());
    // Two requests in progress (their permits held).
    let held = [
        service.try_stream_permit().unwrap(),
        service.try_stream_permit().unwrap(),
    ];
    let r = warp::test::request()
        .path(&catchup_query(12, 40, 12))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-databus-error"], "overloaded");
    assert_eq!(r.headers()["retry-after"], "1");
    drop(held);
    let r = warp::test::request()
        .path(&catchup_query(12, 40, 12))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_refreshed_pin_stops_holding_retention_at_its_max_age() {
    let (_dir, store) = store_with_floor();
    let settings = ServeSettings {
        pin_max_age: std::time::Duration::from_millis(300),
        ..ServeSettings::default()
    };
    let routes = routes(BootstrapService::new(store.clone(), settings));
    let ask = |at: u64| {
        let routes = routes.clone();
        async move {
            let r = warp::test::request()
                .path(&catchup_query(12, 40, at))
                .reply(&routes)
                .await;
            assert_eq!(r.status(), 200, "{:?}", r.body());
        }
    };
    ask(12).await;
    assert_eq!(store.min_pin(now_ms()).unwrap(), Some(Scn::new(12)));
    // The bootstrap keeps asking (each request refreshes its pin for pin_ttl, an hour) ...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut at = 13;
    while store.min_pin(now_ms()).unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pin still holds retention long after pin_max_age"
        );
        ask(at).await;
        at = (at + 1).min(39);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ... but past its max age the pin holds nothing, and retention trims past its start.
    ask(at).await;
    assert_eq!(store.min_pin(now_ms()).unwrap(), None);
    assert_eq!(store.pins(now_ms()).unwrap(), vec![]);
    let settings = databus_bootstrap::retention::RetentionSettings {
        max_age: Some(std::time::Duration::from_secs(1)),
        max_bytes: None,
        ..Default::default()
    };
    store.apply(&[], Scn::new(40)).unwrap();
    databus_bootstrap::retention::clean_once(store.as_ref(), &settings, now_ms() * 1_000_000)
        .unwrap();
    assert!(
        store.log_status().unwrap().floor_scn > Some(Scn::new(12)),
        "retention trims past the aged pin"
    );
}

/// The producer waits a busy relay out: a `503 too_many_connections` with `Retry-After: 2` (the relay's
/// connection limit) is asked again no sooner than 2 s later, on top of the shared backoff (100 ms
/// doubling otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_retries_a_busy_relay_no_sooner_than_its_retry_after() {
    use std::time::{Duration, Instant};
    use warp::Filter;
    let asked: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let seen = asked.clone();
    let sources = warp::path!("v1" / "sources").map(|| {
        warp::reply::json(&serde_json::json!({
            "sources": [{"id": 1, "name": "t", "table": "shop.t", "buffer": "shop"}]
        }))
    });
    let stream = warp::path!("v1" / "stream").map(move || {
        seen.lock().unwrap().push(Instant::now());
        warp::http::Response::builder()
            .status(503)
            .header("retry-after", "2")
            .header("x-databus-error", "too_many_connections")
            .body(r#"{"error":"too_many_connections","message":"the relay holds its most connections"}"#)
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(sources.or(stream)).incoming(listener).run());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("boot.sqlite")).unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let producer = tokio::spawn(databus_bootstrap::producer::run_producer(
        store,
        databus_bootstrap::producer::ProducerSettings::new(format!("http://{addr}")),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while asked.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the producer stopped asking");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    producer.await.unwrap().unwrap();
    let times = asked.lock().unwrap().clone();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1990),
            "asked again after {gap:?}, before the relay's Retry-After of 2 s"
        );
    }
}

#[tokio::test]
async fn a_query_string_longer_than_http_max_query_bytes_is_refused() {
    let (_dir, store) = store_with_floor();
    let settings = ServeSettings {
        max_query_bytes: 1024,
        ..ServeSettings::default()
    };
    let routes = routes(BootstrapService::new(store, settings));
    let query = catchup_query(11, 40, 11);
    assert!(query.len() < 1024, "{query}");
    let r = warp::test::request().path(&query).reply(&routes).await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    let long = format!("{query}&sources={}", "1,".repeat(600));
    let r = warp::test::request().path(&long).reply(&routes).await;
    assert_eq!(r.status(), 400, "{:?}", r.body());
    assert_eq!(r.headers()["x-databus-error"], "bad_parameter");
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("http.max_query_bytes"),
        "{body}"
    );
}
