//! The connector conformance suite against a real PostgreSQL (one private server per test).
//!
//! The publication covers `c.a`, `c.b` and `other.x`, and the connector captures `c.a` and `c.b`: a
//! transaction on `other.x` is then decoded and delivered with no changes. (PostgreSQL 15's pgoutput
//! does not send transactions that touch only unpublished tables at all; see docs/connectors.md.)

use std::time::Duration;

use databus_connectors::conformance::ConformanceHarness;
use databus_connectors::postgres::{PgConfig, PgConnector};
use databus_testkit::Postgres;

struct PgHarness {
    pg: Postgres,
    next_id: u64,
}

impl PgHarness {
    async fn new() -> Self {
        let pg = Postgres::start().await.expect("start postgres");
        pg.exec(&[
            "CREATE SCHEMA c",
            "CREATE TABLE c.a (id BIGINT PRIMARY KEY, v VARCHAR(20))",
            "CREATE TABLE c.b (id BIGINT PRIMARY KEY, n INT)",
            "ALTER TABLE c.a REPLICA IDENTITY FULL",
            "ALTER TABLE c.b REPLICA IDENTITY FULL",
            "CREATE SCHEMA other",
            "CREATE TABLE other.x (id BIGSERIAL PRIMARY KEY)",
            "CREATE PUBLICATION databus FOR TABLE c.a, c.b, other.x",
        ])
        .await
        .expect("schema");
        Self { pg, next_id: 0 }
    }
}

impl ConformanceHarness for PgHarness {
    type Connector = PgConnector;

    async fn connector(&mut self) -> PgConnector {
        let mut config = PgConfig::new(
            "127.0.0.1",
            self.pg.port(),
            "postgres",
            Postgres::PASSWORD,
            "postgres",
        );
        config.tables = vec!["c.a".into(), "c.b".into()];
        config.heartbeat_interval = Duration::from_millis(200);
        config.read_timeout = Duration::from_secs(10);
        PgConnector::new(config).expect("config")
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
        self.pg.exec_tx(&refs).await.expect("commit");
    }

    async fn commit_uncaptured(&mut self) {
        self.pg
            .exec_tx(&["INSERT INTO other.x DEFAULT VALUES"])
            .await
            .expect("commit");
    }
}

databus_connectors::connector_conformance_suite!(PgHarness::new());
