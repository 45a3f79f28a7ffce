//! Scenario 1: a search indexer (callbacks, 4 parallel workers) stays consistent with the source under
//! continuous writes: at many points in time its index equals the source's state after the
//! transaction it has reached, every window is whole and in order, and at the end it equals the
//! source row by row. `tantivy_index`: the search indexer example on a tantivy index, killed and
//! restarted twice mid-run, ends holding exactly the source's rows, each found by its own word.

use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_integration::workload::{ITEMS, TXLOG};
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_indexer_stays_consistent_under_continuous_writes() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    // From what the relay captured: it started at the source's position, after the schema's DDL.
    config.start = StartPosition::Oldest;
    config.workers = 4;
    let mut indexer = Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::snapshot_every(20),
    )?;
    // Writes run while the indexer consumes.
    let writer = Workload::new(1, 200).spawn(db.url(), 1500, Duration::ZERO);
    let work = writer.await??;
    indexer
        .wait_seq(work.last_seq(), Duration::from_secs(120))
        .await?;
    indexer.ensure_running().await?;

    let report = check_windows(
        &indexer.recorder.windows(),
        work.log(),
        StreamCheck {
            first_seq: Some(1),
            unordered: true,
            allow_redelivery: false,
        },
    )?;
    assert_eq!(report.last_seq, 1500, "{report:?}");
    assert_eq!(report.tx_windows, 1500, "{report:?}");

    // Consistent at points in time: the index at the end of transaction `seq` is the source's state
    // after `seq`.
    let snapshots = indexer.recorder.lock().index_snapshots.clone();
    assert_eq!(snapshots.len(), 1500 / 20, "one copy every 20 transactions");
    for (seq, index) in &snapshots {
        compare_tables(
            &format!("shop.items after transaction {seq}"),
            &canonical(&work.state_at(*seq)),
            index,
            Columns::Exact,
        )?;
    }

    let mut conn = db.root_conn().await?;
    compare_tables(
        "shop.items",
        &source_rows(&mut conn, "shop.items", "id").await?,
        &indexer.recorder.table(ITEMS),
        Columns::Exact,
    )?;
    compare_tables(
        "shop.txlog",
        &source_rows(&mut conn, "shop.txlog", "seq").await?,
        &indexer.recorder.table(TXLOG),
        Columns::Exact,
    )?;
    // The generator's model is the source's state too (the workload wrote what it logged).
    compare_tables(
        "shop.items (model)",
        &canonical(work.model()),
        &indexer.recorder.table(ITEMS),
        Columns::Exact,
    )?;
    let summary = indexer.stop().await?;
    assert!(summary.windows >= 1500, "{summary:?}");
    Ok(())
}

#[path = "../../client-lib/examples/search_indexer.rs"]
#[allow(dead_code)]
mod search_indexer;

mod tantivy_index {
    //! The search indexer example (a tantivy index on disk, its checkpoint in the index's commits)
    //! against a real MariaDB and the relay process: a writer inserts, updates, deletes and moves
    //! (key changes) rows with text columns and truncates the table once, while the indexer runs;
    //! it is killed (its task aborted at an arbitrary point, mid-window or mid-batch) twice and each
    //! time restarted from its index's last commit. At the end every source row is found by its own
    //! distinctive word, as exactly one document equal to the row, and the index holds exactly the
    //! source's rows, table by table.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use clap::Parser;
    use databus_integration::*;
    use mysql_async::prelude::Queryable;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio_util::sync::CancellationToken;

    use super::search_indexer::{self, Indexer, SearchIndex};

    /// Keys 1..=KEYS and their key-changed twins 1001..=1000+KEYS.
    const KEYS: i64 = 60;
    const WORDS: &[&str] = &["lamp", "chair", "table", "kettle", "blue", "red"];

    type Run = tokio::task::JoinHandle<anyhow::Result<databus_client::RunSummary>>;

    /// A row's text: shared words and one distinctive word (`u<seq>i<id>r<random>`).
    fn text(rng: &mut StdRng, seq: i64, id: i64) -> (String, String) {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        let val = format!("{word} u{seq}i{id}r{}", rng.random_range(0..1_000_000));
        let pad = format!(
            "{} and {}",
            WORDS[rng.random_range(0..WORDS.len())],
            WORDS[rng.random_range(0..WORDS.len())]
        );
        (val, pad)
    }

    /// One transaction of 1..=3 changes (insert or upsert, update, delete, key change) and its
    /// `shop.txlog` row.
    async fn write_tx(
        conn: &mut mysql_async::Conn,
        rng: &mut StdRng,
        seq: i64,
    ) -> anyhow::Result<()> {
        conn.query_drop("BEGIN").await?;
        let changes = rng.random_range(1..=3);
        for _ in 0..changes {
            let id = if rng.random_bool(0.7) {
                rng.random_range(1..=KEYS)
            } else {
                rng.random_range(1001..=1000 + KEYS)
            };
            let (val, pad) = text(rng, seq, id);
            match rng.random_range(0..10) {
                0..=2 => {
                    conn.exec_drop(
                        "INSERT INTO shop.items (id, seq, val, pad) VALUES (?, ?, ?, ?) \
                         ON DUPLICATE KEY UPDATE seq = VALUES(seq), val = VALUES(val), \
                         pad = VALUES(pad)",
                        (id, seq, &val, &pad),
                    )
                    .await?
                }
                3..=5 => {
                    conn.exec_drop(
                        "UPDATE shop.items SET seq = ?, val = ? WHERE id = ?",
                        (seq, &val, id),
                    )
                    .await?
                }
                6..=7 => {
                    conn.exec_drop("DELETE FROM shop.items WHERE id = ?", (id,))
                        .await?
                }
                _ => {
                    // A key change (skipped by IGNORE when the new key exists).
                    let to = if id > 1000 { id - 1000 } else { id + 1000 };
                    conn.exec_drop(
                        "UPDATE IGNORE shop.items SET id = ?, seq = ? WHERE id = ?",
                        (to, seq, id),
                    )
                    .await?
                }
            }
        }
        conn.exec_drop(
            "INSERT INTO shop.txlog (seq, changes) VALUES (?, ?)",
            (seq, changes),
        )
        .await?;
        conn.query_drop("COMMIT").await?;
        Ok(())
    }

    fn args(relay: &str, index: &Path) -> search_indexer::Args {
        search_indexer::Args::parse_from([
            "search_indexer",
            "--relay",
            relay,
            "--index",
            index.to_str().unwrap(),
            // Batches of windows: a kill loses (and the restart re-applies) up to 3 of them.
            "--commit-every",
            "3",
        ])
    }

    /// Starts an indexer on the index, once the previous one released the writer's lock (an aborted
    /// one may still be finishing a commit on its blocking thread, as a killed process's
    /// last write would be).
    async fn start(
        relay: &str,
        dir: &Path,
        index: &SearchIndex,
    ) -> anyhow::Result<(Arc<Indexer>, Run, CancellationToken)> {
        let stop = CancellationToken::new();
        let indexer = wait_for(
            "the index writer's lock is free",
            Duration::from_secs(30),
            || {
                let got = Indexer::new(index, None, stop.clone());
                async move {
                    Ok(match got {
                        Ok(i) => Some(Arc::new(i)),
                        Err(tantivy::TantivyError::LockFailure(..)) => None,
                        Err(e) => return Err(e.into()),
                    })
                }
            },
        )
        .await?;
        let task = {
            let (args, index, indexer, stop) = (
                args(relay, dir),
                index.clone(),
                indexer.clone(),
                stop.clone(),
            );
            tokio::spawn(
                async move { search_indexer::run_indexer(&args, &index, indexer, stop).await },
            )
        };
        Ok((indexer, task, stop))
    }

    /// The SCN of the index's last commit (0: none).
    fn committed(index: &SearchIndex) -> anyhow::Result<u64> {
        Ok(index
            .committed_checkpoint()?
            .map_or(0, |cp| cp.window_scn.get()))
    }

    /// Waits until the indexer has written every window up to SCN `scn` to the index (not
    /// necessarily committed: `--commit-every 3`).
    async fn applied_at(indexer: &Indexer, scn: u64, task: &Run) -> anyhow::Result<()> {
        wait_for(
            &format!("the indexer at SCN {scn}"),
            Duration::from_secs(120),
            || {
                let at = indexer.applied_scn.load(Ordering::Relaxed);
                let finished = task.is_finished();
                async move {
                    anyhow::ensure!(!finished, "the indexer stopped");
                    Ok((at >= scn).then_some(()))
                }
            },
        )
        .await
    }

    /// Aborts the indexer's task wherever it is (kill -9) and stops what it started.
    async fn kill(indexer: Arc<Indexer>, task: Run, stop: CancellationToken) {
        task.abort();
        stop.cancel();
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(indexer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_index_equals_the_source_across_two_indexer_kills() -> anyhow::Result<()> {
        let (db, relay) = start_pipeline("8MiB").await?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("index");
        let index = SearchIndex::open(&path)?;
        let mut conn = db.root_conn().await?;
        let mut rng = StdRng::seed_from_u64(18);
        for id in 1..=KEYS {
            let (val, pad) = text(&mut rng, 0, id);
            conn.exec_drop(
                "INSERT INTO shop.items (id, seq, val, pad) VALUES (?, 0, ?, ?)",
                (id, &val, &pad),
            )
            .await?;
        }

        let (mut indexer, mut task, mut stop) = start(&relay.url(), &path, &index).await?;
        let mut restarts = 0;
        let mut seq = 0i64;
        for step in 1..=300 {
            seq += 1;
            write_tx(&mut conn, &mut rng, seq).await?;
            if step == 150 {
                conn.query_drop("TRUNCATE TABLE shop.items").await?;
            }
            if step == 100 || step == 220 {
                // Killed while it works: once it reached the source's position, with 5 more
                // transactions on their way (mid-window, mid-batch or mid-commit).
                let scn = source_scn(&mut conn).await?;
                applied_at(&indexer, scn, &task).await?;
                let before = committed(&index)?;
                for _ in 0..5 {
                    seq += 1;
                    write_tx(&mut conn, &mut rng, seq).await?;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
                kill(indexer, task, stop).await;
                let resumed = committed(&index)?;
                assert!(
                    resumed >= before && resumed > 0,
                    "the restart resumes from the index's last commit: {resumed}"
                );
                eprintln!(
                    "indexer killed after SCN {scn}; its last commit: SCN {resumed}; restarting"
                );
                (indexer, task, stop) = start(&relay.url(), &path, &index).await?;
                restarts += 1;
            }
        }
        assert_eq!(restarts, 2);

        // Caught up: every window up to the source's position is written to the index; stopping
        // commits the last batch.
        let scn = source_scn(&mut conn).await?;
        applied_at(&indexer, scn, &task).await?;
        stop.cancel();
        let summary = task.await??;
        assert!(summary.windows > 0, "{summary:?}");
        assert!(committed(&index)? >= scn);
        tokio::task::spawn_blocking(move || drop(indexer)).await?;

        // The source's rows.
        let items: Vec<(i64, String, String)> = conn
            .query("SELECT id, val, pad FROM shop.items ORDER BY id")
            .await?;
        let txlog: Vec<i64> = conn.query("SELECT seq FROM shop.txlog").await?;
        assert!(
            items.len() > 10,
            "rows survive the truncate: {}",
            items.len()
        );
        assert!(
            items.iter().any(|(id, ..)| *id > 1000),
            "key-changed rows exist"
        );

        // Exactly the source's rows: per table counts, and the documents' ids.
        assert_eq!(index.count("shop.items")?, items.len());
        assert_eq!(index.count("shop.txlog")?, txlog.len());
        assert_eq!(index.len()?, items.len() + txlog.len());
        let ids: BTreeSet<String> = index.documents()?.into_iter().map(|h| h.id).collect();
        let want: BTreeSet<String> = items
            .iter()
            .map(|(id, ..)| format!("shop.items:{id}"))
            .chain(txlog.iter().map(|seq| format!("shop.txlog:{seq}")))
            .collect();
        assert_eq!(ids, want, "the documents are the source's rows");

        // Each row is found by its distinctive word, as exactly its document, holding the row.
        let mut found = BTreeMap::new();
        for (id, val, pad) in &items {
            let word = val.split(' ').nth(1).expect("a distinctive word");
            let hits = index.search(word)?;
            assert_eq!(hits.len(), 1, "{word} (row {id}): {hits:?}");
            let hit = &hits[0];
            assert_eq!(hit.id, format!("shop.items:{id}"), "{word}");
            assert_eq!(hit.table, "shop.items");
            assert_eq!(hit.row["val"], val.as_str(), "{hit:?}");
            assert_eq!(hit.row["pad"], pad.as_str(), "{hit:?}");
            found.insert(*id, word.to_owned());
        }
        assert_eq!(found.len(), items.len());
        // A shared word finds exactly the rows holding it.
        for word in WORDS {
            let got: BTreeSet<String> = index.search(word)?.into_iter().map(|h| h.id).collect();
            let want: BTreeSet<String> = items
                .iter()
                .filter(|(_, val, pad)| val.split(' ').chain(pad.split(' ')).any(|w| w == *word))
                .map(|(id, ..)| format!("shop.items:{id}"))
                .collect();
            assert_eq!(got, want, "documents with {word:?}");
        }
        drop(relay);
        Ok(())
    }
}
