//! The snapshot conformance suite against a real MariaDB (one private server per test): every column
//! type the connector supports, a JSON column, a composite primary key; the password set apart from
//! the URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use databus_connectors::mysql::{MySqlConfig, MySqlConnector, MySqlSnapshotSource};
use databus_connectors::snapshot_conformance::SnapshotHarness;
use databus_connectors::{Secret, TableName};
use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::prelude::Queryable;

struct MariaDbHarness {
    db: MariaDb,
    next_id: Arc<AtomicU64>,
}

/// The statements inserting row `k` into both tables.
fn insert_statements(k: u64) -> [String; 2] {
    [
        format!(
            "INSERT INTO s.t1 VALUES ({k}, {i}, {u}, '{k}.{c:02}', 1.5, {k}/3.0, '2024-01-{d:02}', \
             '-12:34:56.789', '2024-02-03 04:05:06.123456', '2024-01-01 00:00:{d:02}.500', 2024, \
             'héllo {k}', 'ab', 0x01020300, 0x00ff, 'text {k}', 0x000102, '{e}', 'x,z', b'1010101010', \
             '{{\"k\": {k}, \"a\": [1, 2]}}', 'café', NULL)",
            i = k as i64 * 7 - 100,
            u = u64::MAX - k,
            c = k % 100,
            d = k % 28 + 1,
            e = ["a", "b", "c"][(k % 3) as usize],
        ),
        format!("INSERT INTO s.t2 VALUES ({}, 'b{k}', {k})", k % 3),
    ]
}

async fn commit(conn: &mut mysql_async::Conn, next_id: &AtomicU64, rows: usize) {
    conn.query_drop("BEGIN").await.expect("begin");
    for i in 0..rows {
        let k = next_id.fetch_add(1, Ordering::SeqCst);
        let [t1, t2] = insert_statements(k);
        conn.query_drop(if i % 2 == 0 { t1 } else { t2 })
            .await
            .expect("insert");
    }
    conn.query_drop("COMMIT").await.expect("commit");
}

impl MariaDbHarness {
    async fn new() -> Self {
        let db = MariaDb::start(MariaDbOptions::default())
            .await
            .expect("start mariadb");
        db.exec(&[
            "CREATE DATABASE s",
            "CREATE TABLE s.t1 (id BIGINT PRIMARY KEY, i INT, u BIGINT UNSIGNED, d DECIMAL(10,2), \
             f FLOAT, db DOUBLE, dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR, \
             vc VARCHAR(40), ch CHAR(5), bin BINARY(4), vb VARBINARY(10), tx TEXT, bl BLOB, \
             e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(10), j JSON, \
             l1 VARCHAR(10) CHARACTER SET latin1, n INT NULL)",
            "CREATE TABLE s.t2 (a INT, b VARCHAR(10), v BIGINT, PRIMARY KEY (a, b))",
        ])
        .await
        .expect("schema");
        db.create_user_with_grants("relay", "pw")
            .await
            .expect("user");
        Self {
            db,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn config(&self) -> MySqlConfig {
        let mut config = MySqlConfig::new(
            format!(
                "mysql://relay@127.0.0.1:{}/?prefer_socket=false",
                self.db.port()
            ),
            100,
        );
        config.password = Some(Secret::new("pw"));
        config.databases = vec!["s".into()];
        config.heartbeat_period = Duration::from_millis(200);
        config.read_timeout = Duration::from_secs(3);
        config
    }
}

impl SnapshotHarness for MariaDbHarness {
    type Source = MySqlSnapshotSource;
    type Connector = MySqlConnector;

    async fn snapshot_source(&mut self) -> MySqlSnapshotSource {
        MySqlSnapshotSource::new(&self.config()).expect("config")
    }

    async fn connector(&mut self) -> MySqlConnector {
        MySqlConnector::new(self.config()).expect("config")
    }

    fn tables(&self) -> Vec<TableName> {
        vec![TableName::new("s", "t1"), TableName::new("s", "t2")]
    }

    async fn insert(&mut self, rows: usize) {
        let mut conn = self.db.root_conn().await.expect("connect");
        commit(&mut conn, &self.next_id, rows).await;
        let _ = conn.disconnect().await;
    }

    async fn concurrent_inserts(
        &mut self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut conn = self.db.root_conn().await.expect("connect");
        let next_id = self.next_id.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let last = stop.is_cancelled();
                commit(&mut conn, &next_id, 1 + n % 3).await;
                n += 1;
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = conn.disconnect().await;
        })
    }
}

databus_connectors::snapshot_conformance_suite!(MariaDbHarness::new());

/// The password never shows in `Debug` of the connector, its snapshot side or its configuration.
#[test]
fn the_password_is_not_in_debug_output() {
    let mut config = MySqlConfig::new("mysql://relay@127.0.0.1:1/", 100);
    config.password = Some(Secret::new("s3cret-pw"));
    config.databases = vec!["s".into()];
    let shown = [
        format!("{config:?}"),
        format!("{:?}", MySqlConnector::new(config.clone()).unwrap()),
        format!("{:?}", MySqlSnapshotSource::new(&config).unwrap()),
    ];
    for s in shown {
        assert!(!s.contains("s3cret-pw"), "{s}");
    }
}
