//! Shared helpers of the connector's tests: a private server, a connector on it, event collection.

#![allow(dead_code)]

use std::time::Duration;

use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
use databus_connectors::{
    ConnectorError, ConnectorEvent, SourceConnector, SourceTransaction, StartPosition,
};
use databus_testkit::{MariaDb, MariaDbOptions};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// The connector's log lines go to the test's captured output (shown when a test fails), so a stall
/// or a reconnect loop explains itself.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("databus_connectors=debug")),
        )
        .with_test_writer()
        .try_init();
}

/// A server with the relay user, and the user's URL.
pub async fn server(opts: MariaDbOptions) -> (MariaDb, String) {
    init_tracing();
    let db = MariaDb::start(opts).await.expect("start mariadb");
    let url = db
        .create_user_with_grants("relay", "pw")
        .await
        .expect("user");
    (db, url)
}

pub fn config(url: &str, databases: &[&str]) -> MySqlConfig {
    let mut c = MySqlConfig::new(url, 100);
    c.databases = databases.iter().map(|d| (*d).to_owned()).collect();
    c.heartbeat_period = Duration::from_millis(200);
    c.read_timeout = Duration::from_secs(3);
    c.reconnect.initial_backoff = Duration::from_millis(50);
    c.reconnect.max_backoff = Duration::from_millis(500);
    c
}

pub async fn started(config: MySqlConfig, from: StartPosition) -> MySqlConnector {
    let mut c = MySqlConnector::new(config).expect("config");
    tokio::time::timeout(DEADLINE, c.start(from))
        .await
        .expect("start before the deadline")
        .expect("start");
    c
}

/// The next event, with a deadline.
pub async fn next_event(c: &mut MySqlConnector) -> Result<ConnectorEvent, ConnectorError> {
    tokio::time::timeout(DEADLINE, c.next_event())
        .await
        .expect("an event before the deadline")
        .map(|e| e.expect("the connector stopped"))
}

/// The next transaction (skipping heartbeats and schema changes).
pub async fn next_transaction(c: &mut MySqlConnector) -> SourceTransaction {
    loop {
        if let ConnectorEvent::Transaction(t) = next_event(c).await.expect("no error") {
            return t;
        }
    }
}

/// Transactions until one with changes satisfies `done`; returns all transactions seen.
pub async fn transactions_until(
    c: &mut MySqlConnector,
    mut done: impl FnMut(&SourceTransaction) -> bool,
) -> Vec<SourceTransaction> {
    let mut all = Vec::new();
    loop {
        let t = next_transaction(c).await;
        let stop = done(&t);
        all.push(t);
        if stop {
            return all;
        }
    }
}

/// The first error of the connector (panics when none comes within the deadline: heartbeats and
/// transactions keep coming from a healthy stream, so the deadline is for the whole wait).
pub async fn first_error(c: &mut MySqlConnector) -> ConnectorError {
    let wait = async {
        loop {
            match c.next_event().await {
                Err(e) => return e,
                Ok(None) => panic!("the connector stopped without an error"),
                Ok(Some(_)) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("an error before the deadline")
}
