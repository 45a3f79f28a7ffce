//! A relay restarted while its source is down (issue 13): the real binary, a real private MariaDB and
//! `databus tail` as a consumer would run it. Before the fix, a tail asking for an old checkpoint while
//! the relay was reconnecting was served the first window written after the source came back, silently
//! skipping every transaction in between.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Killed, RelayToml, databus, free_port, get_json, lines, mariadb_with_repl, rt, start_relay,
    wait_streaming,
};

/// The relay's first buffer as `/v1/status` shows it.
fn buffer(relay: &str) -> Option<serde_json::Value> {
    get_json(relay, "/v1/status").map(|s| s["buffers"][0].clone())
}

#[test]
fn a_relay_restarted_while_its_source_is_down_never_serves_an_old_checkpoint() {
    let rt = rt();
    let (mut db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
        ],
        "pw",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = RelayToml {
        listen: None,
        url: &url,
        password_env: None,
        server_id: 1001,
        tables: &["orders"],
    }
    .write(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let relay_url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let spawn_relay = || {
        start_relay(
            databus()
                .arg("relay")
                .arg("--config")
                .arg(&config)
                .args(["--listen", &listen]),
        )
        .0
    };

    // 1. A relay on the source; 100 transactions; SIGTERM (it persists its last SCN).
    let mut relay = spawn_relay();
    wait_streaming(&relay_url, deadline);
    for i in 0..100 {
        rt.block_on(db.exec(&[&format!("INSERT INTO shop.orders VALUES ({i}, 'old')")]))
            .unwrap();
    }
    let persisted = loop {
        let b = buffer(&relay_url).expect("status");
        if b["ingest"]["last_scn"].as_u64() >= Some(100) && b["windows"].as_u64() >= Some(100) {
            break b["ingest"]["last_scn"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the relay never caught up: {b}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(relay.signal("-TERM"));
    relay.wait_until(deadline, "the relay did not stop on SIGTERM");

    // 2. The source goes down; the relay starts again and keeps reconnecting.
    rt.block_on(db.stop()).unwrap();
    let _relay = spawn_relay();
    let b =
        buffer(&relay_url).expect("the restarted relay answers status while its source is down");
    assert_eq!(b["anchored"], false, "{b}");

    // 3. Two consumers ask while it reconnects: one from an old checkpoint (SCN 55, which this relay
    //    will never hold again), one from exactly where the relay stopped.
    let mut old = Killed::spawn_piped(databus().args([
        "tail",
        "--relay",
        &relay_url,
        "--from-scn",
        "56",
        "--max-events",
        "5",
    ]));
    let old_out = lines(old.0.stdout.take().unwrap());
    let from_persisted = (persisted + 1).to_string();
    let mut current = Killed::spawn_piped(databus().args([
        "tail",
        "--relay",
        &relay_url,
        "--from-scn",
        &from_persisted,
        "--max-events",
        "5",
    ]));
    let current_out = lines(current.0.stdout.take().unwrap());
    // Both are waiting in the relay (a long poll on the unpositioned buffer), not yet answered.
    loop {
        let waiting = buffer(&relay_url).and_then(|b| b["waiting_readers"].as_u64());
        if waiting >= Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tails never waited in the relay"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // 4. The source comes back and 5 more rows are written.
    rt.block_on(db.start_again()).unwrap();
    for i in 100..105 {
        rt.block_on(db.exec(&[&format!("INSERT INTO shop.orders VALUES ({i}, 'new')")]))
            .unwrap();
    }

    // The old checkpoint is refused with the relay's range, and not one event is printed for it.
    let status = old.wait_until(deadline, "the tail from SCN 56 did not end");
    let stderr = old.stderr_text();
    let printed: Vec<String> = old_out.try_iter().collect();
    assert!(
        printed.is_empty(),
        "events served to a checkpoint the relay does not continue: {printed:?}"
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("no longer holds the events after SCN 55"),
        "{stderr}"
    );

    // The consumer at the relay's persisted position gets exactly the 5 new rows, in order.
    let status = current.wait_until(deadline, "the tail from the persisted SCN did not end");
    let stderr = current.stderr_text();
    assert!(status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = current_out
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["payload"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [100, 101, 102, 103, 104], "{events:?}");
    let scns: Vec<u64> = events.iter().map(|e| e["scn"].as_u64().unwrap()).collect();
    assert_eq!(scns[0], persisted + 1, "{events:?}");
    wait_streaming(&relay_url, deadline);
}
