//! `/health` tells the truth: the real producer and applier report their state into the SQLite file
//! and the HTTP server (real, on loopback) answers `503` with the role and the reason while one of
//! them is stopped or blocked on a relay gap, and `200` while both run and are caught up.

use crate::common;

use std::time::Duration;

use common::*;
use databus_bootstrap::relay_client::RelayClient;
use databus_bootstrap::serve::ServeSettings;
use tokio::time::Instant;

/// `GET /health` until `cond` holds on (status, body), with a deadline; returns the last answer.
async fn health_until(
    b: &Bootstrap,
    what: &str,
    cond: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = RelayClient::new(&format!("http://{}", b.addr), Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get("/health").await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if cond(r.status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last /health: {} {body}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn problem<'a>(body: &'a serde_json::Value, role: &str) -> Option<&'a serde_json::Value> {
    body["problems"]
        .as_array()?
        .iter()
        .find(|p| p["role"] == role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_ok_while_a_role_is_stopped_or_blocked_on_a_relay_gap() {
    let mut relay = start_relay_with(64 << 10).await;
    let dir = tempfile::tempdir().unwrap();
    let mut b = start_bootstrap(
        &dir.path().join("shop.sqlite"),
        relay.addr,
        ServeSettings::default(),
    )
    .await;
    for scn in 1..=20u64 {
        relay.write(scn, &[(1, scn as i64, Some(vec![1; 50]))]);
    }
    b.wait_caught_up(20).await;
    health_until(&b, "ok with both roles caught up", |s, _| s == 200).await;

    // The applier shut down: not ok, and the applier is named.
    b.stop_applier().await;
    let body = health_until(&b, "the applier reported stopped", |s, body| {
        s == 503 && problem(body, "applier").is_some()
    })
    .await;
    assert_eq!(problem(&body, "applier").unwrap()["state"], "stopped");
    b.start_applier();
    health_until(&b, "ok again", |s, _| s == 200).await;

    // The producer is down while the relay evicts what it needs next; started again, it cannot
    // continue. It stays alive and says so, instead of stopping while /health says ok.
    b.stop_producer().await;
    let body = health_until(&b, "the producer reported stopped", |s, body| {
        s == 503 && problem(body, "producer").is_some()
    })
    .await;
    assert_eq!(problem(&body, "producer").unwrap()["state"], "stopped");
    let mut scn = 21;
    while relay.writer.buffer().stats().min_scn <= Some(databus_core::Scn::new(22)) {
        relay.write(scn, &[(1, scn as i64, Some(vec![2; 200]))]);
        scn += 1;
    }
    b.start_producer();
    let body = health_until(&b, "the producer reported blocked", |s, body| {
        s == 503 && problem(body, "producer").is_some_and(|p| p["state"] == "blocked")
    })
    .await;
    let message = problem(&body, "producer").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("no longer holds the events after SCN 20"),
        "{message}"
    );
    assert!(message.contains("re-seed"), "{message}");
    assert!(
        !b.producer.as_ref().unwrap().1.is_finished(),
        "the blocked producer keeps running (and retrying)"
    );
    b.kill_both().await;
    b.shutdown.cancel();
    relay.shutdown.cancel();
}
