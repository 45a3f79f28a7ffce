//! The relay's HTML status page rendered by headless Chromium (`databus_testkit::chromium`), on a
//! relay that ingested from a real MariaDB: the DOM shows the SCN range the binlog's GTIDs give, not a
//! value the test made up.
//!
//! Needs Debian's `chromium` (scripts/setup.sh installs it); without it the test fails saying so.

use crate::common;

use std::time::Duration;

use common::{Relay, wait_status, wait_streaming};
use databus_testkit::{MariaDb, MariaDbOptions, chromium};
use tokio::time::Instant;

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
    let relay = Relay::from_toml(&format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "mysql://relay@127.0.0.1:{port}/?prefer_socket=false", password_file = {pw:?}, server_id = 4343 }}
buffer_size = "8MiB"
tables = [ {{ id = 1, name = "orders", table = "shop.orders" }} ]
"#,
        state = dir.path().join("state").display().to_string(),
        port = db.port(),
        pw = password_file.display().to_string(),
    ))
    .await;
    let addr = relay.addr;
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_streaming(addr, deadline).await;

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
    wait_status(
        addr,
        deadline,
        &format!("relay never reached SCN {after}"),
        |status| status["buffers"][0]["max_scn"] == after,
    )
    .await;

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

    relay.stop().await;
}
