//! Scenario 2: a cache invalidator following only keys 0..50 of `shop.items` (a server-side source and
//! key-range filter) receives every change of those keys, per key in commit order, and nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use databus_client::{ClientConfig, MemoryCheckpointStore, StartPosition};
use databus_filters::FilterSpec;
use databus_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_invalidator_gets_every_change_of_its_keys_in_commit_order() -> anyhow::Result<()> {
    let (db, relay) = start_pipeline("8MiB").await?;
    let mut config = ClientConfig::with_relays([relay.url()]);
    // From what the relay captured: it started at the source's position, after the schema's DDL.
    config.start = StartPosition::Oldest;
    // Source 1 (items), keys in [0, 50): RANGE partitioning with ranges of 50 keys, range 0.
    config.filter = FilterSpec::from_query("sources=1&partition=range:50:0")?;
    let mut invalidator = Consumer::start(
        config,
        Arc::new(MemoryCheckpointStore::new()),
        Recorder::new(),
    )?;
    let work = Workload::new(2, 150)
        .spawn(db.url(), 1200, Duration::ZERO)
        .await??;
    let keys: BTreeSet<i64> = (0..50).collect();
    let expected: usize = work
        .log()
        .iter()
        .flat_map(|t| &t.ops)
        .filter(|op| keys.contains(&op.key()))
        .count();
    assert!(
        expected > 200,
        "the workload touches the followed keys often: {expected}"
    );
    let rec = invalidator.recorder.clone();
    wait_for(
        &format!("{expected} changes of keys 0..50"),
        Duration::from_secs(120),
        || {
            let n: usize = rec.lock().windows.iter().map(|w| w.events.len()).sum();
            async move { Ok((n >= expected).then_some(())) }
        },
    )
    .await?;
    invalidator.ensure_running().await?;
    let checked = check_key_histories(&rec.windows(), work.log(), &keys)?;
    assert_eq!(checked, expected);
    // What the invalidator saw, applied, is the source's rows of those keys.
    let mut conn = db.root_conn().await?;
    let source: std::collections::BTreeMap<String, Row> =
        source_rows(&mut conn, "shop.items", "id")
            .await?
            .into_iter()
            .filter(|(k, _)| k.parse::<i64>().is_ok_and(|k| keys.contains(&k)))
            .collect();
    compare_tables(
        "shop.items keys 0..50",
        &source,
        &rec.table(workload::ITEMS),
        Columns::Exact,
    )?;
    invalidator.stop().await?;
    Ok(())
}

#[path = "../../client-lib/examples/cache_invalidator.rs"]
#[allow(dead_code)]
mod cache_invalidator;

mod redis_cache {
    //! The cache invalidator example on a real Redis, with a real MariaDB and a real relay process:
    //! read-through readers and a writer (updates, deletes, inserts, key changes, a TRUNCATE) run
    //! together while the invalidator runs; the invalidator is killed (its task aborted at an
    //! arbitrary point) and restarted from its checkpoint in Redis once mid-run. Once it has caught
    //! up, no cached entry reachable by a reader differs from the source.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use clap::Parser;
    use databus_client::CheckpointStore;
    use databus_integration::*;
    use mysql_async::prelude::Queryable;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio_util::sync::CancellationToken;

    use super::cache_invalidator::{self, Read, Reader, RedisCheckpointStore};

    const TABLE: &str = "shop.items";
    /// Keys 1..=KEYS and their key-changed twins 1001..=1000+KEYS.
    const KEYS: i64 = 40;

    fn domain() -> impl Iterator<Item = i64> {
        (1..=KEYS).chain(1001..=1000 + KEYS)
    }

    /// The row as the readers cache it (`None`: no such row).
    async fn load(conn: &mut mysql_async::Conn, id: i64) -> anyhow::Result<Option<String>> {
        Ok(conn
            .exec_first(
                "SELECT JSON_OBJECT('id', id, 'seq', seq, 'val', val, 'qty', qty) \
                 FROM shop.items WHERE id = ?",
                (id,),
            )
            .await?)
    }

    /// Every reachable cache entry that differs from the source: (id, cached, source).
    async fn stale_entries(
        reader: &Reader,
        redis: &mut redis::aio::MultiplexedConnection,
        conn: &mut mysql_async::Conn,
    ) -> anyhow::Result<Vec<(i64, String, Option<String>)>> {
        let mut stale = Vec::new();
        for id in domain() {
            let key = reader.key(TABLE, &[id.into()]).await?;
            let cached: Option<String> = redis::cmd("GET").arg(&key).query_async(redis).await?;
            let Some(cached) = cached else { continue };
            if cached.starts_with("lease:") {
                continue;
            }
            let source = load(conn, id).await?;
            if cached != source.clone().unwrap_or_else(|| "null".into()) {
                stale.push((id, cached, source));
            }
        }
        Ok(stale)
    }

    /// One writer transaction of 1..=3 changes: insert/upsert, update, delete, key change.
    async fn write_tx(
        conn: &mut mysql_async::Conn,
        rng: &mut StdRng,
        seq: i64,
    ) -> anyhow::Result<()> {
        conn.query_drop("BEGIN").await?;
        for _ in 0..rng.random_range(1..=3) {
            let id = if rng.random_bool(0.7) {
                rng.random_range(1..=KEYS)
            } else {
                rng.random_range(1001..=1000 + KEYS)
            };
            let val = format!("v{seq}-{}", rng.random_range(0..1_000_000));
            match rng.random_range(0..10) {
                0..=2 => {
                    conn.exec_drop(
                        "INSERT INTO shop.items (id, seq, val, qty) VALUES (?, ?, ?, ?) \
                         ON DUPLICATE KEY UPDATE seq = VALUES(seq), val = VALUES(val)",
                        (id, seq, &val, rng.random_range(0..100)),
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
        conn.query_drop("COMMIT").await?;
        Ok(())
    }

    #[derive(Debug, Default)]
    struct ReadStats {
        hits: AtomicU64,
        filled: AtomicU64,
        not_filled: AtomicU64,
    }

    fn args(relay: &str, redis: &str) -> cache_invalidator::Args {
        cache_invalidator::Args::parse_from([
            "cache_invalidator",
            "--relay",
            relay,
            "--redis",
            redis,
            "--from-beginning",
        ])
    }

    /// Waits until the invalidator's checkpoint in Redis is at the source's newest transaction.
    async fn caught_up(
        store: &Arc<RedisCheckpointStore>,
        conn: &mut mysql_async::Conn,
        task: &tokio::task::JoinHandle<
            anyhow::Result<(
                Arc<cache_invalidator::Invalidator>,
                databus_client::RunSummary,
            )>,
        >,
    ) -> anyhow::Result<()> {
        let scn = source_scn(conn).await?;
        let store = store.clone();
        wait_for(
            &format!("the invalidator's checkpoint at SCN {scn}"),
            Duration::from_secs(120),
            || {
                let store = store.clone();
                let finished = task.is_finished();
                async move {
                    anyhow::ensure!(!finished, "the invalidator stopped");
                    let cp = tokio::task::spawn_blocking(move || store.load()).await??;
                    Ok(cp.filter(|cp| cp.window_scn.get() >= scn).map(|_| ()))
                }
            },
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_stale_entry_survives_writers_readers_and_an_invalidator_kill() -> anyhow::Result<()>
    {
        let (db, relay) = start_pipeline("8MiB").await?;
        let redis_server = databus_testkit::Redis::start().await?;
        let client = redis::Client::open(redis_server.url())?;
        let mut redis = client.get_multiplexed_async_connection().await?;
        let keys = cache_invalidator::CacheKeys::new("cache");
        let store = Arc::new(RedisCheckpointStore::new(
            client.clone(),
            keys.checkpoint("cache_invalidator"),
        ));
        let mut conn = db.root_conn().await?;
        for id in 1..=KEYS {
            conn.exec_drop(
                "INSERT INTO shop.items (id, seq, val) VALUES (?, 0, ?)",
                (id, format!("initial {id}")),
            )
            .await?;
        }

        let stop_first = CancellationToken::new();
        let first = tokio::spawn(cache_invalidator::run(
            args(&relay.url(), &redis_server.url()),
            stop_first.clone(),
        ));

        // Readers: read-through on random keys until stopped.
        let stop_readers = CancellationToken::new();
        let stats = Arc::new(ReadStats::default());
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let reader = Reader::new("cache", client.get_multiplexed_async_connection().await?);
            let mut conn = db.root_conn().await?;
            let stop = stop_readers.clone();
            let stats = stats.clone();
            readers.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + r);
                while !stop.is_cancelled() {
                    let id = if rng.random_bool(0.8) {
                        rng.random_range(1..=KEYS)
                    } else {
                        rng.random_range(1001..=1000 + KEYS)
                    };
                    let c = &mut conn;
                    let (_, read) = reader
                        .read_through(TABLE, &[id.into()], move || load(c, id))
                        .await?;
                    match read {
                        Read::Hit => &stats.hits,
                        Read::Filled => &stats.filled,
                        Read::NotFilled => &stats.not_filled,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                anyhow::Ok(())
            }));
        }

        // The writer; the invalidator is killed and restarted after transaction 120, the table
        // truncated at 200.
        let mut rng = StdRng::seed_from_u64(7);
        let mut second = None;
        let stop_second = CancellationToken::new();
        for seq in 1..=300i64 {
            write_tx(&mut conn, &mut rng, seq).await?;
            if seq == 120 {
                caught_up(&store, &mut conn, &first).await?;
                for _ in 0..5 {
                    write_tx(&mut conn, &mut rng, seq).await?;
                }
                // kill -9: the task stops wherever it is (mid-window, mid-EXEC even); the client's
                // fetcher is then stopped too.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
                first.abort();
                stop_first.cancel();
                first_join(&first).await;
                let resumed = {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || store.load()).await??
                };
                assert!(resumed.is_some(), "a checkpoint in Redis before the kill");
                second = Some(tokio::spawn(cache_invalidator::run(
                    args(&relay.url(), &redis_server.url()),
                    stop_second.clone(),
                )));
            }
            if seq == 200 {
                conn.query_drop("TRUNCATE TABLE shop.items").await?;
            }
        }
        let second = second.expect("restarted");
        caught_up(&store, &mut conn, &second).await?;
        stop_readers.cancel();
        for r in readers {
            r.await??;
        }
        let reader = Reader::new("cache", redis.clone());
        let stale = stale_entries(&reader, &mut redis, &mut conn).await?;
        assert_eq!(stale, vec![], "cached entries differing from the source");
        let cached = {
            let mut n = 0;
            for id in domain() {
                let key = reader.key(TABLE, &[id.into()]).await?;
                let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut redis).await?;
                n += usize::from(v.is_some());
            }
            n
        };
        eprintln!("readers: {stats:?}; {cached} keys cached at the end");
        assert!(
            stats.hits.load(Ordering::Relaxed) > 0 && stats.filled.load(Ordering::Relaxed) > 0,
            "the readers used the cache: {stats:?}"
        );

        // The classic race, forced: a reader loads a row, the row changes and the invalidator
        // deletes its key, then the reader stores what it loaded. A plain GET/SET reader leaves a
        // stale entry, which the check above finds; the lease refuses the store.
        let id = 7;
        conn.exec_drop(
            "INSERT INTO shop.items (id, seq, val) VALUES (?, 1, 'before') \
             ON DUPLICATE KEY UPDATE val = 'before'",
            (id,),
        )
        .await?;
        caught_up(&store, &mut conn, &second).await?;
        let key = reader.key(TABLE, &[id.into()]).await?;
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await?;
        let old = load(&mut conn, id).await?.expect("row 7");
        conn.exec_drop("UPDATE shop.items SET val = 'after' WHERE id = ?", (id,))
            .await?;
        caught_up(&store, &mut conn, &second).await?;
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&old)
            .query_async(&mut redis)
            .await?;
        let stale = stale_entries(&reader, &mut redis, &mut conn).await?;
        assert_eq!(
            stale.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![id],
            "the check finds a plain reader's stale entry"
        );
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await?;
        let mut writer = db.root_conn().await?;
        let (row, read) = reader
            .read_through(TABLE, &[id.into()], || async {
                let old = load(&mut conn, id).await?;
                writer
                    .exec_drop("UPDATE shop.items SET val = 'later' WHERE id = ?", (id,))
                    .await?;
                caught_up(&store, &mut writer, &second).await?;
                Ok(old)
            })
            .await?;
        assert_eq!(read, Read::NotFilled, "the lease refused the late store");
        assert!(row.is_some_and(|r| r.contains("after")));
        assert_eq!(
            stale_entries(&reader, &mut redis, &mut conn).await?,
            vec![],
            "no stale entry with leases"
        );

        stop_second.cancel();
        let (invalidator, _) = second.await??;
        let truncates = invalidator.truncates.lock().unwrap().clone();
        assert!(
            truncates.iter().any(|(t, _)| t == TABLE),
            "the restarted invalidator applied the TRUNCATE: {truncates:?}"
        );
        let deleted = invalidator.hits.load(Ordering::Relaxed);
        eprintln!("restarted invalidator: {deleted} cached keys deleted, truncates {truncates:?}");
        assert!(deleted > 0, "the invalidator deleted cached keys");
        drop(relay);
        Ok(())
    }

    /// Awaits an aborted task (its result is the cancellation).
    async fn first_join<T>(task: &tokio::task::JoinHandle<T>) {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
