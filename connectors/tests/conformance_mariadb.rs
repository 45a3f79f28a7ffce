//! The connector conformance suite against a real MariaDB (one private server per test).

use std::time::Duration;

use databus_connectors::conformance::ConformanceHarness;
use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
use databus_testkit::{MariaDb, MariaDbOptions};

struct MariaDbHarness {
    db: MariaDb,
    url: String,
    next_id: u64,
}

impl MariaDbHarness {
    async fn new() -> Self {
        let db = MariaDb::start(MariaDbOptions::default())
            .await
            .expect("start mariadb");
        db.exec(&[
            "CREATE DATABASE c",
            "CREATE TABLE c.a (id BIGINT PRIMARY KEY, v VARCHAR(20))",
            "CREATE TABLE c.b (id BIGINT PRIMARY KEY, n INT)",
            "CREATE DATABASE other",
            "CREATE TABLE other.x (id BIGINT PRIMARY KEY AUTO_INCREMENT)",
        ])
        .await
        .expect("schema");
        let url = db
            .create_user_with_grants("relay", "pw")
            .await
            .expect("user");
        Self {
            db,
            url,
            next_id: 0,
        }
    }
}

impl ConformanceHarness for MariaDbHarness {
    type Connector = MySqlConnector;

    async fn connector(&mut self) -> MySqlConnector {
        let mut config = MySqlConfig::new(self.url.clone(), 100);
        config.databases = vec!["c".into()];
        config.heartbeat_period = Duration::from_millis(200);
        config.read_timeout = Duration::from_secs(3);
        MySqlConnector::new(config).expect("config")
    }

    async fn commit_transaction(&mut self, rows: usize) {
        let mut statements = Vec::new();
        for i in 0..rows {
            self.next_id += 1;
            let id = self.next_id;
            statements.push(if i % 2 == 0 {
                format!("INSERT INTO c.a VALUES ({id}, 'row {id}')")
            } else {
                format!("INSERT INTO c.b VALUES ({id}, {i})")
            });
        }
        let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.db.exec_tx(&refs).await.expect("commit");
    }

    async fn commit_uncaptured(&mut self) {
        self.db
            .exec_tx(&["INSERT INTO other.x VALUES ()"])
            .await
            .expect("commit");
    }
}

databus_connectors::connector_conformance_suite!(MariaDbHarness::new());
