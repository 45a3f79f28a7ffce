//! Server validation: each bad setting is refused with its fix in the message.

use crate::common;

use databus_connectors::mysql::{CheckOutcome, MySqlConnector};
use databus_connectors::{ConnectorError, SourceConnector, StartPosition};
use databus_testkit::MariaDbOptions;
use mysql_async::prelude::Queryable;

use common::*;

async fn refused(config: databus_connectors::mysql::MySqlConfig) -> String {
    let mut c = MySqlConnector::new(config).unwrap();
    let e = c
        .start(StartPosition::Now)
        .await
        .expect_err("start must refuse");
    assert!(matches!(e, ConnectorError::Misconfigured { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e}");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_setting_is_refused_with_its_fix() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&["CREATE DATABASE v"]).await.unwrap();
    let good = config(&url, &["v"]);

    let checks = MySqlConnector::check_source(&good).await.unwrap();
    assert!(
        checks.iter().all(|c| c.outcome == CheckOutcome::Ok),
        "{checks:?}"
    );
    let settings: Vec<_> = checks.iter().map(|c| c.setting).collect();
    for s in [
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "log_bin_compress",
        "server_id",
    ] {
        assert!(settings.contains(&s), "{s} is checked: {settings:?}");
    }

    let cases = [
        ("binlog_format", "STATEMENT", "set binlog_format=ROW"),
        ("binlog_format", "MIXED", "set binlog_format=ROW"),
        ("binlog_row_image", "MINIMAL", "set binlog_row_image=FULL"),
        (
            "binlog_row_metadata",
            "MINIMAL",
            "set binlog_row_metadata=FULL",
        ),
        ("log_bin_compress", "ON", "set log_bin_compress=OFF"),
    ];
    for (var, bad, fix) in cases {
        let original = db
            .query_string(&format!("SELECT @@GLOBAL.{var}"))
            .await
            .unwrap()
            .unwrap();
        db.exec(&[&format!("SET GLOBAL {var} = {bad}")])
            .await
            .unwrap();
        let msg = refused(good.clone()).await;
        assert!(msg.contains(fix), "{var}={bad}: {msg}");
        let checks = MySqlConnector::check_source(&good).await.unwrap();
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| c.outcome != CheckOutcome::Ok)
            .map(|c| c.setting)
            .collect();
        assert_eq!(failed, vec![var], "exactly the bad setting fails");
        let original = match original.as_str() {
            "0" => "OFF".to_owned(),
            "1" => "ON".to_owned(),
            o => format!("'{o}'"),
        };
        db.exec(&[&format!("SET GLOBAL {var} = {original}")])
            .await
            .unwrap();
    }

    // The connector's server id must differ from the source's.
    let mut same_id = good.clone();
    same_id.server_id = 1;
    let msg = refused(same_id).await;
    assert!(
        msg.contains("server_id") && msg.contains("choose another server_id"),
        "{msg}"
    );

    // Missing grants: each one named.
    let select_only = db.create_user("reader", "pw", "SELECT").await.unwrap();
    let msg = refused(config(&select_only, &["v"])).await;
    assert!(msg.contains("GRANT REPLICATION SLAVE"), "{msg}");
    assert!(msg.contains("GRANT BINLOG MONITOR"), "{msg}");
    let no_monitor = db
        .create_user("half", "pw", "SELECT, REPLICATION SLAVE")
        .await
        .unwrap();
    let msg = refused(config(&no_monitor, &["v"])).await;
    assert!(
        !msg.contains("REPLICATION SLAVE") && msg.contains("GRANT BINLOG MONITOR"),
        "{msg}"
    );

    // The good config still starts.
    let mut c = MySqlConnector::new(good).unwrap();
    c.start(StartPosition::Now).await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_binlog_or_with_statement_format_is_refused() {
    let (db, url) = server(MariaDbOptions {
        no_log_bin: true,
        ..Default::default()
    })
    .await;
    let msg = refused(config(&url, &["v"])).await;
    assert!(
        msg.contains("log_bin is OFF") && msg.contains("--log-bin"),
        "{msg}"
    );
    drop(db);

    let (_db, url) = server(MariaDbOptions::default().arg("--binlog-format=STATEMENT")).await;
    let msg = refused(config(&url, &["v"])).await;
    assert!(
        msg.contains("binlog_format is STATEMENT; set binlog_format=ROW"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_gtid_domains_are_refused() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "CREATE DATABASE gd",
        "CREATE TABLE gd.t (id INT PRIMARY KEY)",
        "INSERT INTO gd.t VALUES (1)",
    ])
    .await
    .unwrap();
    // Mid-stream: a transaction in another domain stops the stream.
    let mut c = started(config(&url, &["gd"]), StartPosition::Now).await;
    let mut conn = db.root_conn().await.unwrap();
    conn.query_drop("SET SESSION gtid_domain_id = 7")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO gd.t VALUES (2)")
        .await
        .unwrap();
    let e = first_error(&mut c).await;
    assert!(
        matches!(e, ConnectorError::MultipleDomains { .. }) && !e.is_transient(),
        "{e:?}"
    );
    // At start: the binlog now has two domains.
    let mut c = MySqlConnector::new(config(&url, &["gd"])).unwrap();
    let e = c.start(StartPosition::Now).await.unwrap_err();
    assert!(e.to_string().contains("several GTID domains"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_event_before_start_is_an_error_and_config_errors_are_definite() {
    let mut c = MySqlConnector::new(config("mysql://u:p@127.0.0.1:1/", &["x"])).unwrap();
    assert!(matches!(
        c.next_event().await,
        Err(ConnectorError::NotStarted)
    ));
    // Nothing listens on port 1: a transient connection error.
    let e = c.start(StartPosition::Now).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let e = MySqlConnector::new(config("not a url", &["x"])).unwrap_err();
    assert!(
        matches!(e, ConnectorError::Config(_)) && !e.is_transient(),
        "{e:?}"
    );
}
