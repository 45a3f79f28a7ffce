//! The bootstrap pipeline over real parts: an in-process relay over a real event buffer, the producer
//! and applier writing a real SQLite file, consumers driving the bootstrap protocol over loopback HTTP.

use crate::common;

use common::*;
use databus_bootstrap::serve::ServeSettings;
use databus_core::{Checkpoint, Scn};
use databus_filters::FilterSpec;
use rand::{Rng, SeedableRng};

fn random_window(rng: &mut rand::rngs::StdRng, scn: u64) -> Vec<Change> {
    let n = rng.random_range(0..6);
    (0..n)
        .map(|i| {
            let source = rng.random_range(1..=2u16);
            let key = rng.random_range(-5..40i64);
            let payload = if rng.random_bool(0.2) {
                None
            } else {
                Some(format!("{scn}-{i}").into_bytes())
            };
            (source, key, payload)
        })
        .collect()
}

fn snapshot_cp(since: Option<u64>) -> Checkpoint {
    let mut cp = match since {
        Some(s) => Checkpoint::after(Scn::new(s)),
        None => Checkpoint::beginning(),
    };
    cp.start_bootstrap(since.map(Scn::new));
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_delta_while_writes_continue_match_the_source() {
    let mut relay = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeSettings {
        log_only_max_events: 20,
        ..ServeSettings::default()
    };
    let mut bs = start_bootstrap(&dir.path().join("shop.sqlite"), relay.addr, serve).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model = Model::default();
    let mut scn = 0u64;
    let mut restarts = 0;
    for _ in 0..150 {
        scn += rng.random_range(1..3);
        let w = random_window(&mut rng, scn);
        relay.write(scn, &w);
        model.windows.push((scn, w));
        if scn > 100 && bs.producer.is_some() && rng.random_bool(0.05) {
            // Kill (abort) or stop the producer and the applier mid-way, then restart them.
            if rng.random_bool(0.5) {
                bs.kill_both().await;
            } else {
                bs.stop_producer().await;
                bs.stop_applier().await;
            }
            restarts += 1;
            bs.start_producer();
            bs.start_applier();
        }
    }
    assert!(restarts > 0);
    bs.wait_caught_up(scn).await;

    // The log holds exactly the relay's windows, each once.
    let ws = bs.store.windows(Scn::ZERO, Scn::MAX, 100_000).unwrap();
    assert_eq!(
        ws.iter()
            .map(|w| (w.scn.get(), w.events as usize))
            .collect::<Vec<_>>(),
        model
            .windows
            .iter()
            .map(|(s, c)| (*s, c.len()))
            .collect::<Vec<_>>()
    );

    for (filter_query, max_bytes) in [
        ("", 300),
        ("&partition=mod:3:1", 150),
        ("&sources=2&partition=range:10:0-1", 100_000),
    ] {
        let spec = FilterSpec::from_query(filter_query).unwrap();
        // Full snapshot while writes continue between responses.
        let mut state = State::new();
        let mut writes = Vec::new();
        let (cp, paths) = run_bootstrap(
            bs.addr,
            &mut state,
            snapshot_cp(None),
            filter_query,
            max_bytes,
            || {
                writes.push(());
            },
        )
        .await;
        assert!(paths.iter().all(|p| p == "snapshot"), "{paths:?}");
        let target = cp.window_scn.get();
        assert!(target >= scn);
        assert_eq!(
            state,
            model.state_at(target, &spec),
            "snapshot with filter {filter_query:?}"
        );

        // Consolidated delta since an old SCN, starting from the source's state there.
        for since in [3u64, scn / 2, scn - 3] {
            let mut state = model.state_at(since, &spec);
            let (cp, paths) = run_bootstrap(
                bs.addr,
                &mut state,
                snapshot_cp(Some(since)),
                filter_query,
                max_bytes,
                || {},
            )
            .await;
            let expect_path = if since >= scn - 3 {
                "log_only"
            } else {
                "delta"
            };
            assert!(
                paths.iter().all(|p| p == expect_path),
                "since {since}: {paths:?}"
            );
            assert_eq!(
                state,
                model.state_at(cp.window_scn.get(), &spec),
                "delta since {since}, filter {filter_query:?}"
            );
        }
        // Writes continue: a bootstrap whose snapshot phase is interleaved with new windows.
        let mut state = State::new();
        let mut pending: Vec<(u64, Vec<Change>)> = Vec::new();
        for _ in 0..30 {
            scn += 1;
            let w = random_window(&mut rng, scn);
            pending.push((scn, w));
        }
        let mut to_write = pending.clone().into_iter();
        let mut written = Vec::new();
        let (cp, _) = run_bootstrap(
            bs.addr,
            &mut state,
            snapshot_cp(None),
            filter_query,
            120,
            || {
                if let Some((s, w)) = to_write.next() {
                    relay.write(s, &w);
                    written.push((s, w));
                }
            },
        )
        .await;
        for (s, w) in to_write {
            relay.write(s, &w);
            written.push((s, w));
        }
        model.windows.extend(written);
        assert_eq!(
            state,
            model.state_at(cp.window_scn.get(), &spec),
            "snapshot during writes, filter {filter_query:?}"
        );
        bs.wait_caught_up(scn).await;
    }
    bs.stop_producer().await;
    bs.stop_applier().await;
    bs.shutdown.cancel();
    relay.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors() {
    let mut relay = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let bs = start_bootstrap(
        &dir.path().join("shop.sqlite"),
        relay.addr,
        ServeSettings {
            log_only_max_events: 0,
            ..ServeSettings::default()
        },
    )
    .await;
    for scn in 1..=20u64 {
        relay.write(scn, &[(1, scn as i64, Some(b"x".to_vec()))]);
    }
    bs.wait_caught_up(20).await;
    let q = |cp: Checkpoint, extra: &str| format!("checkpoint={}{extra}", enc(&cp.to_json()));
    // Not yet at the requested SCN: retry later.
    let p = get_page(bs.addr, &q(snapshot_cp(Some(25)), "")).await;
    assert_eq!(
        (p.status, p.error.as_deref()),
        (503, Some("not_yet_at_scn"))
    );
    // Unknown source.
    let p = get_page(bs.addr, &q(snapshot_cp(None), "&sources=9")).await;
    assert_eq!(
        (p.status, p.error.as_deref()),
        (404, Some("unknown_source"))
    );
    // Bad requests.
    let p = get_page(bs.addr, &q(Checkpoint::after(Scn::new(3)), "")).await;
    assert_eq!((p.status, p.error.as_deref()), (400, Some("bad_parameter")));
    let p = get_page(bs.addr, &q(snapshot_cp(None), "&max_bytes=0")).await;
    assert_eq!((p.status, p.error.as_deref()), (400, Some("bad_parameter")));
    let p = get_page(bs.addr, &q(snapshot_cp(None), "&bogus=1")).await;
    assert_eq!((p.status, p.error.as_deref()), (400, Some("bad_parameter")));
    let p = get_page(bs.addr, "max_bytes=10").await;
    assert_eq!((p.status, p.error.as_deref()), (400, Some("bad_parameter")));
    // The snapshot knows only changes after the log's start (no seed): an older delta needs a snapshot.
    let base = bs.store.snapshot_status().unwrap().base_scn.unwrap();
    if base > Scn::ZERO {
        let p = get_page(bs.addr, &q(snapshot_cp(Some(base.get() - 1)), "")).await;
        assert_eq!(
            (p.status, p.error.as_deref()),
            (410, Some("snapshot_required"))
        );
    }
    // A catch-up whose windows were trimmed (its pin expired).
    let mut cp = snapshot_cp(None);
    let first = get_page(bs.addr, &q(cp.clone(), "&max_bytes=60")).await;
    assert_eq!((first.status, first.phase.as_str()), (200, "snapshot"));
    cp = first.checkpoint.unwrap();
    for scn in 21..=30u64 {
        relay.write(scn, &[(1, scn as i64, Some(b"y".to_vec()))]);
    }
    bs.wait_caught_up(30).await;
    while cp.mode == databus_core::ConsumptionMode::BootstrapSnapshot {
        let p = get_page(bs.addr, &q(cp.clone(), "&max_bytes=60")).await;
        assert_eq!(p.status, 200);
        cp = p.checkpoint.unwrap();
    }
    let progress = cp.bootstrap.clone().unwrap();
    assert_eq!(
        (progress.start_scn, progress.target_scn),
        (Some(Scn::new(20)), Some(Scn::new(30)))
    );
    // The cleaner keeps the pinned windows.
    let retention = databus_bootstrap::retention::RetentionSettings {
        max_age: None,
        max_bytes: Some(0),
        ..Default::default()
    };
    let now_ns = 1_000_000 * 1_000_000;
    databus_bootstrap::retention::clean_once(bs.store.as_ref(), &retention, now_ns).unwrap();
    assert_eq!(bs.store.log_status().unwrap().floor_scn, Some(Scn::new(20)));
    bs.store.min_pin(u64::MAX).unwrap(); // every pin expired
    bs.store.trim(Scn::new(25), 1000).unwrap();
    let p = get_page(bs.addr, &q(cp, "")).await;
    assert_eq!(
        (p.status, p.error.as_deref()),
        (410, Some("log_trimmed")),
        "{}",
        String::from_utf8_lossy(&p.body)
    );
    bs.shutdown.cancel();
    relay.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_from_a_config_file() {
    let mut relay = start_relay().await;
    for scn in 1..=30u64 {
        relay.write(
            scn,
            &[(1, scn as i64 % 7, Some(vec![scn as u8])), (2, 3, None)],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "db_path = {:?}\n[relay]\nurl = \"http://{}\"\nwait = \"100ms\"\n[retention]\nmax_bytes = \"1MiB\"\ninterval = \"50ms\"\n",
        dir.path().join("b.sqlite").display().to_string(),
        relay.addr
    );
    let config = databus_bootstrap::BootstrapConfig::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(databus_bootstrap::run_all_on(
        config,
        listener,
        shutdown.clone(),
    ));
    let client = databus_bootstrap::relay_client::RelayClient::new(
        &format!("http://{addr}"),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get("/v1/status").await {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if v["applied_scn"] == 30 && v["log_last_scn"] == 30 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run_all never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = client.get("/v1/sources").await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        serde_json::json!({"sources":[{"id":1,"name":"orders"},{"id":2,"name":"customers"}]})
    );
    let mut state = State::new();
    let (cp, _) = run_bootstrap(addr, &mut state, snapshot_cp(None), "", 1000, || {}).await;
    assert_eq!(cp, Checkpoint::after(Scn::new(30)));
    let mut model = Model::default();
    for scn in 1..=30u64 {
        model.windows.push((
            scn,
            vec![(1, scn as i64 % 7, Some(vec![scn as u8])), (2, 3, None)],
        ));
    }
    assert_eq!(state, model.state_at(30, &FilterSpec::all()));
    shutdown.cancel();
    task.await.unwrap().unwrap();
    relay.shutdown.cancel();
}
