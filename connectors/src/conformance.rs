//! The conformance suite every [`SourceConnector`] must pass (in the manner of quickwit's
//! `metastore_test_suite!`).
//!
//! A connector's tests implement [`ConformanceHarness`] over a real source and invoke
//! [`connector_conformance_suite!`](crate::connector_conformance_suite), which generates one
//! `#[tokio::test]` per property:
//!
//! | test | property |
//! |---|---|
//! | `commit_order_and_whole_transactions` | one event per transaction, all its changes, commit order, SCNs strictly increase |
//! | `empty_transactions_advance_the_scn` | a transaction on uncaptured tables is emitted with no changes |
//! | `resume_after_is_exact` | `After(s)` yields exactly the transactions after `s`: no duplicate, no gap |
//! | `start_reports_its_position` | after `start`, `last_scn()` is where the stream continues: `s` for `After(s)`, the source's position for `Now` |
//! | `heartbeats_while_idle` | heartbeats arrive while the source is idle, carrying the last SCN |
//! | `clean_shutdown` | cancelling the shutdown token ends a pending `next_event` with `Ok(None)` |
//!
//! Each function panics with a message on a violation. Each test gets a fresh harness (its own source),
//! so the transactions it sees are only its own.
//!
//! ```no_run
//! use databus_connectors::conformance::ConformanceHarness;
//! use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
//! use databus_testkit::{MariaDb, MariaDbOptions};
//!
//! struct MyHarness {
//!     db: MariaDb,
//!     url: String,
//!     next_id: u64,
//! }
//!
//! impl MyHarness {
//!     async fn new() -> Self {
//!         let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
//!         db.exec(&[
//!             "CREATE DATABASE c",
//!             "CREATE TABLE c.a (id BIGINT PRIMARY KEY)",
//!             "CREATE DATABASE other",
//!             "CREATE TABLE other.x (id BIGINT PRIMARY KEY AUTO_INCREMENT)",
//!         ])
//!         .await
//!         .unwrap();
//!         let url = db.create_user_with_grants("relay", "pw").await.unwrap();
//!         MyHarness { db, url, next_id: 0 }
//!     }
//! }
//!
//! impl ConformanceHarness for MyHarness {
//!     type Connector = MySqlConnector;
//!
//!     async fn connector(&mut self) -> MySqlConnector {
//!         let mut config = MySqlConfig::new(self.url.clone(), 100);
//!         config.databases = vec!["c".into()];
//!         MySqlConnector::new(config).unwrap()
//!     }
//!
//!     async fn commit_transaction(&mut self, rows: usize) {
//!         let statements: Vec<String> = (0..rows)
//!             .map(|_| {
//!                 self.next_id += 1;
//!                 format!("INSERT INTO c.a VALUES ({})", self.next_id)
//!             })
//!             .collect();
//!         let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
//!         self.db.exec_tx(&refs).await.unwrap();
//!     }
//!
//!     async fn commit_uncaptured(&mut self) {
//!         self.db.exec_tx(&["INSERT INTO other.x VALUES ()"]).await.unwrap();
//!     }
//! }
//!
//! databus_connectors::connector_conformance_suite!(MyHarness::new());
//! # fn main() {}
//! ```
//!
//! `tests/conformance_mariadb.rs` is the full harness of the MySQL/MariaDB connector.

use std::future::Future;
use std::time::Duration;

use databus_core::Scn;

use crate::source::{ConnectorEvent, SourceConnector, SourceTransaction, StartPosition};

/// How long the suite waits for any expected event.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A source a connector under test reads from.
pub trait ConformanceHarness: Send {
    /// The connector type under test.
    type Connector: SourceConnector;

    /// A new, not yet started connector on this harness's source.
    fn connector(&mut self) -> impl Future<Output = Self::Connector> + Send;

    /// Commits one source transaction with exactly `rows` row changes to captured tables (spread over
    /// several statements and tables where the source allows).
    fn commit_transaction(&mut self, rows: usize) -> impl Future<Output = ()> + Send;

    /// Commits one transaction that changes no captured table.
    fn commit_uncaptured(&mut self) -> impl Future<Output = ()> + Send;
}

/// The next transaction, skipping schema changes and heartbeats; panics after [`DEADLINE`].
pub async fn next_transaction<C: SourceConnector>(c: &mut C) -> SourceTransaction {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, c.next_event())
            .await
            .expect("no transaction before the deadline")
            .expect("the connector failed")
            .expect("the connector stopped");
        if let ConnectorEvent::Transaction(t) = event {
            return t;
        }
    }
}

async fn started<H: ConformanceHarness>(h: &mut H, from: StartPosition) -> H::Connector {
    let mut c = h.connector().await;
    c.start(from).await.expect("start");
    c
}

/// Transactions arrive whole, in commit order, with strictly increasing SCNs.
pub async fn commit_order_and_whole_transactions<H: ConformanceHarness>(h: &mut H) {
    let mut c = started(h, StartPosition::Now).await;
    let sizes = [3usize, 1, 4, 2, 5, 7];
    for &n in &sizes {
        h.commit_transaction(n).await;
    }
    let mut last = Scn::ZERO;
    let mut seen = Vec::new();
    while seen.len() < sizes.len() {
        let t = next_transaction(&mut c).await;
        assert!(
            t.scn > last,
            "scn {} after {}: SCNs must strictly increase",
            t.scn,
            last
        );
        last = t.scn;
        if !t.changes.is_empty() {
            seen.push(t.changes.len());
        }
    }
    assert_eq!(seen, sizes, "each transaction whole and in commit order");
    c.shutdown().await.expect("shutdown");
}

/// A transaction touching no captured table is still emitted, with no changes, and advances the SCN.
pub async fn empty_transactions_advance_the_scn<H: ConformanceHarness>(h: &mut H) {
    let mut c = started(h, StartPosition::Now).await;
    h.commit_uncaptured().await;
    h.commit_transaction(1).await;
    let empty = next_transaction(&mut c).await;
    assert!(
        empty.changes.is_empty(),
        "the uncaptured transaction has no changes: {empty:?}"
    );
    let full = next_transaction(&mut c).await;
    assert!(full.scn > empty.scn);
    assert_eq!(full.changes.len(), 1);
    c.shutdown().await.expect("shutdown");
}

/// `After(s)` yields exactly the transactions after `s`, for several `s`, including the last one.
pub async fn resume_after_is_exact<H: ConformanceHarness>(h: &mut H) {
    let mut c = started(h, StartPosition::Now).await;
    let sizes = [2usize, 3, 1, 2, 4];
    for &n in &sizes {
        h.commit_transaction(n).await;
    }
    let mut all = Vec::new();
    for _ in &sizes {
        all.push(next_transaction(&mut c).await);
    }
    c.shutdown().await.expect("shutdown");
    for k in [0usize, 2, 3] {
        let mut r = started(h, StartPosition::After(all[k].scn)).await;
        for expected in &all[k + 1..] {
            let got = next_transaction(&mut r).await;
            assert_eq!(
                got.scn, expected.scn,
                "resuming after {}: no gap, no duplicate",
                all[k].scn
            );
            assert_eq!(
                got.changes, expected.changes,
                "resuming after {}: same changes",
                all[k].scn
            );
        }
        r.shutdown().await.expect("shutdown");
    }
    // After the last transaction: the next one committed.
    let last = all.last().expect("transactions").scn;
    let mut r = started(h, StartPosition::After(last)).await;
    h.commit_transaction(3).await;
    let got = next_transaction(&mut r).await;
    assert!(got.scn > last);
    assert_eq!(
        got.changes.len(),
        3,
        "the first transaction after the last one delivered"
    );
    r.shutdown().await.expect("shutdown");
}

/// Right after `start`, `last_scn()` is the SCN the stream continues after: the source's current
/// position for `Now` (the first transaction committed later follows it, and resuming after it yields
/// that same transaction), `s` for `After(s)`.
pub async fn start_reports_its_position<H: ConformanceHarness>(h: &mut H) {
    h.commit_transaction(1).await;
    let mut c = started(h, StartPosition::Now).await;
    let now = c.last_scn();
    assert!(now > Scn::ZERO, "after Now: the source's current position");
    h.commit_transaction(2).await;
    let first = next_transaction(&mut c).await;
    assert!(first.scn > now, "{} follows the position {now}", first.scn);
    c.shutdown().await.expect("shutdown");
    let mut r = started(h, StartPosition::After(now)).await;
    assert_eq!(r.last_scn(), now, "after After(s): s");
    let again = next_transaction(&mut r).await;
    assert_eq!(
        again.scn, first.scn,
        "the first transaction after the reported position is the first one committed after start"
    );
    r.shutdown().await.expect("shutdown");
}

/// While the source is idle, heartbeats arrive, carrying the last SCN, with advancing time.
pub async fn heartbeats_while_idle<H: ConformanceHarness>(h: &mut H) {
    h.commit_transaction(1).await;
    let mut c = started(h, StartPosition::Now).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut beats: Vec<(Scn, u64)> = Vec::new();
    while beats.len() < 3 {
        let event = tokio::time::timeout_at(deadline, c.next_event())
            .await
            .expect("heartbeats before the deadline")
            .expect("the connector failed")
            .expect("the connector stopped");
        match event {
            ConnectorEvent::Heartbeat {
                last_scn,
                timestamp_ns,
            } => beats.push((last_scn, timestamp_ns)),
            ConnectorEvent::Transaction(t) => panic!("no transaction was committed, got {t:?}"),
            ConnectorEvent::SchemaChange { .. } => {}
        }
    }
    assert!(
        beats
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
        "{beats:?}"
    );
    assert!(beats[0].0 > Scn::ZERO, "heartbeats carry the last SCN");
    c.shutdown().await.expect("shutdown");
}

/// Cancelling the shutdown token ends a pending `next_event` with `Ok(None)`, and it stays ended.
pub async fn clean_shutdown<H: ConformanceHarness>(h: &mut H) {
    let mut c = started(h, StartPosition::Now).await;
    let token = c.shutdown_token();
    let canceller = tokio::spawn(async move {
        // Give next_event time to be pending on the source; the assertion does not depend on timing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        token.cancel();
    });
    loop {
        let event = tokio::time::timeout(DEADLINE, c.next_event())
            .await
            .expect("next_event returns promptly after cancellation")
            .expect("no error on shutdown");
        if event.is_none() {
            break;
        }
    }
    canceller.await.expect("canceller");
    assert!(c.next_event().await.expect("still no error").is_none());
    c.shutdown().await.expect("shutdown");
    c.shutdown().await.expect("shutdown is idempotent");
}

/// Generates one `#[tokio::test]` per conformance property. `$make` is an expression evaluating to a
/// future of a fresh [`ConformanceHarness`].
#[macro_export]
macro_rules! connector_conformance_suite {
    ($make:expr) => {
        mod connector_conformance {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_order_and_whole_transactions() {
                let mut h = $make.await;
                $crate::conformance::commit_order_and_whole_transactions(&mut h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn empty_transactions_advance_the_scn() {
                let mut h = $make.await;
                $crate::conformance::empty_transactions_advance_the_scn(&mut h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn resume_after_is_exact() {
                let mut h = $make.await;
                $crate::conformance::resume_after_is_exact(&mut h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn start_reports_its_position() {
                let mut h = $make.await;
                $crate::conformance::start_reports_its_position(&mut h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn heartbeats_while_idle() {
                let mut h = $make.await;
                $crate::conformance::heartbeats_while_idle(&mut h).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clean_shutdown() {
                let mut h = $make.await;
                $crate::conformance::clean_shutdown(&mut h).await;
            }
        }
    };
}
