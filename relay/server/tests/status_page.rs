//! The relay's HTML status page rendered by headless Chromium (`databus_testkit::chromium`), on a
//! relay that ingested from a real MariaDB: the DOM shows the SCN range the binlog's GTIDs give, not a
//! value the test made up.
//!
//! Needs Debian's `chromium` (scripts/setup.sh installs it); without it the test fails saying so.

use std::net::SocketAddr;
use std::time::Duration;

use databus_relay::RelayConfig;
use databus_testkit::{MariaDb, MariaDbOptions, chromium};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&raw[split + 4..]).unwrap()
}

/// The sequence number of the (single-domain) GTID position `0-1-N`.
fn gtid_seq(pos: &str) -> u64 {
    pos.rsplit('-').next().unwrap().parse().unwrap()
}

/// The text of the first element with `marker` in its opening tag, tags stripped.
fn element_text<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the DOM:\n{dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_scn_range_of_a_relay_fed_by_mariadb() {
    // Fail at once, with the fix, when Chromium is missing: never skip silently.
    if let Err(e) = chromium::binary() {
        panic!("the status page test needs chromium: {e}");
    }

    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "page-secret-pw")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "page-secret-pw\n").unwrap();
    let text = format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
url = "mysql://relay@127.0.0.1:{port}/?prefer_socket=false"
password_file = {pw:?}
server_id = 4343
buffer_size = "8MiB"
tables = [ {{ id = 1, name = "orders", table = "shop.orders" }} ]
"#,
        state = dir.path().join("state").display().to_string(),
        port = db.port(),
        pw = password_file.display().to_string(),
    );
    let config = RelayConfig::from_toml(&text).unwrap().validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = get_json(addr, "/v1/status").await;
        let state = &status["buffers"][0]["ingest"]["state"];
        if state == "streaming" {
            break;
        }
        assert_ne!(state, "failed", "{status}");
        assert!(Instant::now() < deadline, "relay never connected: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three transactions after the relay's start position: windows at the next three GTIDs.
    let before = gtid_seq(&db.gtid_binlog_pos().await.unwrap());
    db.exec(&["INSERT INTO shop.orders VALUES (1, 'tea')"])
        .await
        .unwrap();
    db.exec_tx(&[
        "INSERT INTO shop.orders VALUES (2, 'milk')",
        "INSERT INTO shop.orders VALUES (3, 'rice')",
    ])
    .await
    .unwrap();
    db.exec(&["UPDATE shop.orders SET item = 'green tea' WHERE id = 1"])
        .await
        .unwrap();
    let after = gtid_seq(&db.gtid_binlog_pos().await.unwrap());
    assert_eq!(after, before + 3);
    loop {
        let status = get_json(addr, "/v1/status").await;
        if status["buffers"][0]["max_scn"] == after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay never reached SCN {after}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("http://{addr}/status");
    let dom =
        tokio::task::spawn_blocking(move || chromium::dump_dom(&url, Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(dom.contains("<title>databus relay</title>"), "{dom}");
    assert_eq!(
        element_text(&dom, "class=\"num scn-range\""),
        format!("{}..={after}", before + 1),
        "{dom}"
    );
    assert!(dom.contains(&format!("data-max-scn=\"{after}\"")), "{dom}");
    let row = &dom[dom.find("data-buffer=\"shop\"").unwrap()..];
    assert!(row.contains("class=\"state-streaming\""), "{dom}");
    // Windows held, then data events held (one row per statement: 1 + 2 + 1).
    assert!(
        row.contains("<td class=\"num\">3</td><td class=\"num\">4</td>"),
        "{dom}"
    );
    assert!(row.contains("events/s"), "{dom}");
    assert!(dom.contains("<td>shop.orders</td>"), "{dom}");
    assert!(!dom.contains("page-secret-pw"), "{dom}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("relay stops")
        .unwrap()
        .unwrap();
}
