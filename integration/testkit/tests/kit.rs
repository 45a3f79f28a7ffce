//! The test kit's own behaviour: start, SQL helpers, restart, kill, cleanup.

use databus_testkit::{MariaDb, MariaDbOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_restarts_and_cleans_up() {
    let mut db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&["CREATE DATABASE k", "CREATE TABLE k.t (id INT PRIMARY KEY)"])
        .await
        .unwrap();
    db.exec_tx(&["INSERT INTO k.t VALUES (1)", "INSERT INTO k.t VALUES (2)"])
        .await
        .unwrap();
    assert_eq!(db.count_rows("k.t").await.unwrap(), 2);
    assert_eq!(
        db.query_string("SELECT @@binlog_format")
            .await
            .unwrap()
            .as_deref(),
        Some("ROW")
    );
    assert_eq!(
        db.query_string("SELECT @@binlog_row_metadata")
            .await
            .unwrap()
            .as_deref(),
        Some("FULL")
    );
    let url = db.create_user_with_grants("relay", "pw").await.unwrap();
    let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    use mysql_async::prelude::Queryable;
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM k.t").await.unwrap();
    assert_eq!(n, Some(2));
    drop(c);

    let port = db.port();
    db.restart().await.unwrap();
    assert_eq!(db.port(), port);
    assert_eq!(db.count_rows("k.t").await.unwrap(), 2);

    db.kill9();
    assert!(db.pid().is_none());
    assert!(db.root_conn().await.is_err());
    db.start_again().await.unwrap();
    assert_eq!(db.count_rows("k.t").await.unwrap(), 2);

    let pid = db.pid().unwrap();
    let dir = db.dir().to_owned();
    drop(db);
    assert!(!dir.exists(), "the temp dir is removed on drop");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server is gone after drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_args_and_no_log_bin() {
    let db = MariaDb::start(
        MariaDbOptions {
            no_log_bin: true,
            ..Default::default()
        }
        .arg("--binlog-format=STATEMENT"),
    )
    .await
    .unwrap();
    assert_eq!(
        db.query_string("SELECT @@log_bin")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        db.query_string("SELECT @@binlog_format")
            .await
            .unwrap()
            .as_deref(),
        Some("STATEMENT")
    );
}
