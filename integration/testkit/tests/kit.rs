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

/// A private Redis: answers on its own port, two instances never meet, and Drop kills the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_starts_on_its_own_port_and_dies_with_its_handle() {
    use std::io::{Read, Write};
    let a = databus_testkit::Redis::start().await.unwrap();
    let b = databus_testkit::Redis::start().await.unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}", a.port()));
    let ping = |port: u16| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(ping(a.port()).unwrap(), "+PONG\r\n");
    let pid = a.pid().unwrap();
    let port = a.port();
    drop(a);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} outlived its handle"
    );
    assert!(ping(port).is_err(), "port {port} still answers");
    assert_eq!(ping(b.port()).unwrap(), "+PONG\r\n");
}
