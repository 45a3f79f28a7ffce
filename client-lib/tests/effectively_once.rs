//! Effectively-once with the SQLite checkpoint store: a consumer that commits each window's effect and
//! its checkpoint in one transaction applies every event exactly once, even when its process is
//! killed right after that commit (before the client's own persistence step). The consumer is a child
//! process: this test binary re-executed with the ignored test `child_replica` selected.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use databus_client::checkpoint::SqliteCheckpointStore;
use databus_client::{
    CheckpointStore, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, WindowInfo,
};
use databus_core::{Checkpoint, Scn};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

/// Counts applications per key (a non-idempotent effect: a replay would count twice).
struct Counter {
    conn: Mutex<Connection>,
    pending: Mutex<Vec<i64>>,
    abort_at: Option<Scn>,
}

impl DatabusConsumer for Counter {
    async fn on_start_window(&self, _: &WindowInfo) -> ConsumerOutcome {
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_event(&self, e: &DataEvent<'_>) -> ConsumerOutcome {
        let row: Row = e.decode().unwrap();
        self.pending.lock().unwrap().push(row.id);
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, _: &WindowInfo, cp: &Checkpoint) -> ConsumerOutcome {
        let keys = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().unwrap();
        for key in keys {
            tx.execute(
                "INSERT INTO applied (key, n) VALUES (?1, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1",
                [key],
            )
            .unwrap();
        }
        SqliteCheckpointStore::store_in(&tx, "counter", cp).unwrap();
        tx.commit().unwrap();
        ConsumerOutcome::Success
    }

    async fn on_checkpoint(&self, cp: &Checkpoint) -> ConsumerOutcome {
        // Killed after the window's transaction committed, before the client persists anything.
        if Some(cp.window_scn) == self.abort_at {
            std::process::abort();
        }
        ConsumerOutcome::Success
    }
}

#[test]
#[ignore = "run by effectively_once_across_a_kill_after_commit in a child process"]
fn child_replica() {
    let (url, abort_at) = child_env();
    let db = std::path::PathBuf::from(std::env::var("DATABUS_TEST_DB").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS applied (key INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        )
        .unwrap();
        SqliteCheckpointStore::create_table(&conn).unwrap();
        let store = Arc::new(
            SqliteCheckpointStore::open(&db, "counter")
                .unwrap()
                .committed_by_consumer(),
        );
        let client = DatabusClient::new(fast_config(&[url]), store.clone()).unwrap();
        let consumer = Arc::new(Counter {
            conn: Mutex::new(conn),
            pending: Mutex::new(Vec::new()),
            abort_at,
        });
        let shutdown = CancellationToken::new();
        cancel_when(shutdown.clone(), move || {
            store.load().unwrap() == Some(Checkpoint::after(Scn::new(100)))
        });
        client.run(consumer, shutdown).await.unwrap();
    });
}

fn run_child(relay: &str, db: &Path, abort_at: Option<u64>) -> std::process::ExitStatus {
    child_test(module_path!(), "child_replica", relay, abort_at)
        .env("DATABUS_TEST_DB", db)
        .status()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effectively_once_across_a_kill_after_commit() {
    let mut relay = relay_with_windows(100).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replica.sqlite");
    let url = relay.url();
    let (u, d) = (url.clone(), db.clone());
    let status = tokio::task::spawn_blocking(move || run_child(&u, &d, Some(40)))
        .await
        .unwrap();
    assert!(!status.success(), "the child aborted");
    let conn = Connection::open(&db).unwrap();
    assert_eq!(
        SqliteCheckpointStore::load_from(&conn, "counter").unwrap(),
        Some(Checkpoint::after(Scn::new(40))),
        "window 40 and its checkpoint committed together"
    );
    let (u, d) = (url.clone(), db.clone());
    let status = tokio::task::spawn_blocking(move || run_child(&u, &d, None))
        .await
        .unwrap();
    assert!(status.success());
    let (keys, min, max): (i64, i64, i64) = conn
        .query_row("SELECT COUNT(*), MIN(n), MAX(n) FROM applied", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (keys, min, max),
        (300, 1, 1),
        "every event applied exactly once"
    );
    relay.stop().await;
}
