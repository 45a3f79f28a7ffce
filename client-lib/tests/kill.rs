//! A consumer process killed between the success of a window's callbacks and the persistence of its
//! checkpoint (and killed with SIGKILL at an arbitrary moment) replays from its last checkpoint file
//! and loses nothing. The consumer runs in a child process: this test binary re-executed with the
//! ignored test `child_consumer` selected.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use databus_client::{
    CheckpointStore, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    FileCheckpointStore,
};
use databus_core::{Checkpoint, Scn};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Appends `scn key` lines (flushed per event) and aborts the process in `on_checkpoint` of window
/// `abort_at`: every callback of that window succeeded, its checkpoint is not persisted yet.
struct FileLog {
    file: Mutex<std::fs::File>,
    abort_at: Option<Scn>,
}

impl DatabusConsumer for FileLog {
    async fn on_event(&self, e: &DataEvent<'_>) -> ConsumerOutcome {
        let row: Row = e.decode().unwrap();
        // One write(2) per line (O_APPEND): a kill never leaves half a line.
        let line = format!("{} {}\n", e.scn(), row.id);
        self.file
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        ConsumerOutcome::Success
    }

    async fn on_checkpoint(&self, cp: &Checkpoint) -> ConsumerOutcome {
        if Some(cp.window_scn) == self.abort_at {
            std::process::abort();
        }
        ConsumerOutcome::Success
    }
}

#[test]
#[ignore = "run by the kill tests in a child process"]
fn child_consumer() {
    let (url, abort_at) = child_env();
    let dir = std::path::PathBuf::from(std::env::var("DATABUS_TEST_DIR").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Arc::new(FileCheckpointStore::new(dir.join("cp.json")).unwrap());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.log"))
            .unwrap();
        let consumer = Arc::new(FileLog {
            file: Mutex::new(file),
            abort_at,
        });
        let client = DatabusClient::new(fast_config(&[url]), store).unwrap();
        // Runs until killed or the last window (400) is checkpointed.
        let shutdown = CancellationToken::new();
        let dir2 = dir.clone();
        cancel_when(shutdown.clone(), move || {
            matches!(
                FileCheckpointStore::new(dir2.join("cp.json")).unwrap().load(),
                Ok(Some(cp)) if cp.window_scn == Scn::new(400)
            )
        });
        client.run(consumer, shutdown).await.unwrap();
    });
}

fn spawn_child(relay: &str, dir: &Path, abort_at: Option<u64>) -> Child {
    child_test(module_path!(), "child_consumer", relay, abort_at)
        .arg("--nocapture")
        .env("DATABUS_TEST_DIR", dir)
        .spawn()
        .unwrap()
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(scn, key)` lines of the event log, with how often each was delivered.
fn delivered(dir: &Path) -> BTreeMap<(u64, i64), u32> {
    let text = std::fs::read_to_string(dir.join("events.log")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (scn, key) = line.split_once(' ').unwrap();
        *out.entry((scn.parse().unwrap(), key.parse().unwrap()))
            .or_default() += 1;
    }
    out
}

fn all_events() -> Vec<(u64, i64)> {
    (1..=400u64)
        .flat_map(|scn| (0..3).map(move |i| (scn, scn as i64 * 100 + i)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_callbacks_before_checkpoint_replays_that_window() {
    let mut relay = relay_with_windows(400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child(&relay.url(), dir.path(), Some(250));
    let status = wait_exit(&mut child).await;
    assert!(!status.success(), "the child aborted: {status}");
    let store = FileCheckpointStore::new(dir.path().join("cp.json")).unwrap();
    assert_eq!(
        store.load().unwrap(),
        Some(Checkpoint::after(Scn::new(249)))
    );
    let first = delivered(dir.path());
    assert!(
        first.contains_key(&(250, 25000)),
        "window 250 was delivered before the abort"
    );

    let mut child = spawn_child(&relay.url(), dir.path(), None);
    assert!(wait_exit(&mut child).await.success());
    let all = delivered(dir.path());
    for event in all_events() {
        let n = all.get(&event).copied().unwrap_or(0);
        let want = if event.0 == 250 { 2 } else { 1 };
        assert_eq!(n, want, "event {event:?} delivered {n} times");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_nothing() {
    let mut relay = relay_with_windows(400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut killed = 0;
    for round in 0..5u64 {
        let mut child = spawn_child(&relay.url(), dir.path(), None);
        // Kill after the log grew by some events (a different amount each round).
        let before = delivered(dir.path()).values().sum::<u32>();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = false;
        loop {
            if child.try_wait().unwrap().is_some() {
                done = true;
                break;
            }
            let now = delivered(dir.path()).values().sum::<u32>();
            if now >= before + 40 + 37 * round as u32 {
                break;
            }
            assert!(Instant::now() < deadline, "child made no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if done {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
    }
    assert!(killed >= 1);
    let mut child = spawn_child(&relay.url(), dir.path(), None);
    assert!(wait_exit(&mut child).await.success());
    let all = delivered(dir.path());
    for event in all_events() {
        assert!(all.contains_key(&event), "event {event:?} lost");
    }
    assert_eq!(all.len(), 1200);
    // A checkpoint is persisted after every window, before the next starts: a kill replays at most
    // the one window in flight (3 events).
    let replayed: u32 = all.values().map(|n| n - 1).sum();
    assert!(
        replayed <= killed * 3,
        "replayed {replayed} events over {killed} kills"
    );
    relay.stop().await;
}
