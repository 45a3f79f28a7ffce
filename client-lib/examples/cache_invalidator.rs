//! A cache invalidator on Redis: deletes the cached rows a change stream changes, in commit order,
//! with its checkpoint in Redis, written in the same `MULTI`/`EXEC` as each window's deletes.
//!
//! ```text
//! databus quickstart --keep-running      # in another terminal: MariaDB, relay, bootstrap, a workload
//! redis-server --port 6379 --save '' --appendonly no    # or any Redis you own
//! cargo run -p databus-client --example cache_invalidator -- \
//!     --relay http://127.0.0.1:11140 --redis redis://127.0.0.1:6379
//! ```
//!
//! # Cache keys
//!
//! A cached row lives at
//!
//! ```text
//! <prefix>:<db>.<table>:<epoch>.<generation>:<primary key>
//! e.g.  cache:shop.customers:0.0:17        cache:shop.order_lines:0.3:1042:7
//! ```
//!
//! - `<db>.<table>` are the source's original names (the writer schema's namespace and name, or its
//!   `databus.database`/`databus.table` attributes when sanitizing changed them).
//! - `<primary key>`: the primary-key columns' values in key order (the schema's
//!   `databus.primary_key`), joined by `:`; each value as the client's JSON rendering gives it
//!   (`docs/avro-mapping.md`): integers in decimal, text as is, DECIMAL with its scale (`"12.30"`),
//!   dates as `YYYY-MM-DD`, bytes in base64. `%` and `:` inside a value (and in the names) are
//!   written `%25` and `%3A`, so a composite key never reads as another one. A reader renders the
//!   key from the values it looks up by ([`CacheKeys::pk`]), with no knowledge of databus' event key
//!   encoding.
//! - `<epoch>.<generation>`: two counters in the hash `<prefix>:generations`: field `*` (the epoch)
//!   and field `<db>.<table>` (the table's generation), both 0 when absent. A `TRUNCATE` (or `DROP`)
//!   or a schema change of a table increments its generation, and a full-snapshot bootstrap (which
//!   says nothing about what was deleted) increments the epoch, in the window's transaction: every key
//!   of the table (or of the cache) becomes unreachable at once, in O(1), atomically with the
//!   checkpoint. The other way, `SCAN <prefix>:<table>:*` + `DEL`, costs a walk of the whole keyspace,
//!   cannot run inside `MULTI` (so it could not commit with the checkpoint), and races with readers
//!   that fill a key between the scan and the delete. The price: a reader reads the two counters
//!   before each lookup (one `HMGET`), and the entries of an old generation stay in memory until
//!   their TTL (every entry has one) or Redis' eviction removes them.
//!
//! Each data event's payload is the row (after the change for an upsert or update; as it was for a
//! delete), so the event names its key. An `UPDATE` that changes the primary key arrives as a delete
//! of the old key then an upsert of the new one in one window: both keys are deleted. The new key's
//! entry exists when a reader cached "no such row" there: entries hold the row's JSON, or `null` for
//! a row that does not exist (negative caching; an insert deletes it like any change).
//!
//! # Effectively-once
//!
//! The client runs one worker, so windows are applied one at a time in commit order. Each window's
//! `DEL`s and generation increments, in commit order, and `SET <prefix>:checkpoint:<name>` with the
//! window's checkpoint go in one `MULTI`/`EXEC`: Redis applies all or nothing, so a `kill -9` at any
//! moment leaves the cache and the checkpoint in agreement and a restart resumes after the last
//! applied window ([`RedisCheckpointStore`] loads it; phase changes are written by the store). A
//! failed `EXEC` (Redis down, a timeout) makes the window retried (`ConsumerOutcome::Retry`, with
//! backoff, logged) on a new connection; deleting again is harmless. One invalidator per prefix:
//! the generations it increments are kept in memory, and an `EXEC` whose increments do not give the
//! expected values (another writer) fails the window and reloads them.
//!
//! # Readers: read-through with leases
//!
//! [`Reader::read_through`] is how an application fills the cache: read the counters, `GET` the key;
//! on a miss, place a *lease* (`SET key lease:<random> NX PX <lease>`), load the row from the
//! database, and store it only if the key still holds that lease (a compare-and-set script), with a
//! TTL. This closes the classic race: a reader loads the old row, the row changes and its key is
//! deleted, then the reader stores the old row — stale until the TTL. With the lease, the deletion
//! removes the lease too, so the late store is refused. Any deletion after the lease was placed
//! refuses the store; a change whose deletion came before the lease committed before the reader's
//! load started (the relay reads the binlog after the commit), so the load saw it. A reader that
//! finds another reader's lease loads from the database without caching. A truncate moves readers to
//! a new generation, so an old-generation store is never read.
//!
//! Starts from "now" unless the checkpoint in Redis holds a position (`--from-beginning` replays what
//! the relay holds). Logs each window (tracing, `RUST_LOG` overrides `info`); stops on Ctrl-C or after
//! `--max-windows` windows with data.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use databus_client::{
    BootstrapInfo, CheckpointStore, ClientConfig, ConsumerOutcome, DataEvent, DatabusClient,
    DatabusConsumer, RunSummary, StartPosition, WindowInfo, checkpoint::CheckpointStoreError,
};
use databus_core::{Checkpoint, Scn, TableChange};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Deletes the changed rows of a Redis cache from a databus change stream, in commit order"
)]
pub struct Args {
    /// Relay base URL; repeat the flag for failover between relays.
    #[arg(long = "relay", default_value = "http://127.0.0.1:11140")]
    pub relays: Vec<String>,
    /// Bootstrap server base URL, used if the relay no longer holds the checkpoint's position.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// The Redis holding the cache and the checkpoint.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// The first part of every key this invalidator owns.
    #[arg(long, default_value = "cache")]
    pub prefix: String,
    /// The consumer's name: its checkpoint is `<prefix>:checkpoint:<name>`.
    #[arg(long, default_value = "cache_invalidator")]
    pub name: String,
    /// Start from the relay's oldest window instead of "now" when there is no checkpoint.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many windows with data events (default: run until Ctrl-C).
    #[arg(long)]
    pub max_windows: Option<u64>,
}

/// How long one Redis round trip may take before the window is retried.
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);
/// How many applied deletions [`Invalidator::log`] keeps (the newest).
const LOG_CAPACITY: usize = 100_000;
/// The hash field of the epoch in `<prefix>:generations`.
const EPOCH: &str = "*";

/// Writes `%` and `:` of `part` as `%25` and `%3A`.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// The layout of the cache's keys (see the module docs).
#[derive(Debug, Clone)]
pub struct CacheKeys {
    prefix: String,
}

impl CacheKeys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        CacheKeys {
            prefix: escape(prefix),
        }
    }

    /// The hash of the epoch (field `*`) and the tables' generations (field `<db>.<table>`).
    pub fn generations(&self) -> String {
        format!("{}:generations", self.prefix)
    }

    /// Where consumer `name` keeps its checkpoint.
    pub fn checkpoint(&self, name: &str) -> String {
        format!("{}:checkpoint:{}", self.prefix, escape(name))
    }

    /// The key of a row of `table` (`db.table`) with rendered primary key `pk` ([`Self::pk`]).
    pub fn row(&self, table: &str, epoch: u64, generation: u64, pk: &str) -> String {
        format!(
            "{}:{}:{epoch}.{generation}:{pk}",
            self.prefix,
            escape(table)
        )
    }

    /// The rendered primary key: each value's text (strings as is, other values as JSON), escaped,
    /// joined by `:` in key order.
    pub fn pk(values: &[Value]) -> String {
        values
            .iter()
            .map(|v| match v {
                Value::String(s) => escape(s),
                other => escape(&other.to_string()),
            })
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// `<db>.<table>` and the primary-key column names of an event's writer schema.
fn table_of(event: &DataEvent<'_>) -> Result<(String, Vec<String>), String> {
    let t = event.table_schema().map_err(|e| e.to_string())?;
    let pk = t
        .primary_key
        .iter()
        .map(|&i| t.columns[i].name.clone())
        .collect();
    Ok((format!("{}.{}", t.database, t.table), pk))
}

/// The rendered primary key of the event's row, or why it cannot be rendered.
fn pk_of(event: &DataEvent<'_>, columns: &[String]) -> Result<String, String> {
    if columns.is_empty() {
        return Err("the table has no primary key".into());
    }
    let row = event.json().map_err(|e| e.to_string())?;
    let values: Vec<Value> = columns
        .iter()
        .map(|c| {
            row.get(c)
                .cloned()
                .ok_or_else(|| format!("the row has no primary-key column {c}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(CacheKeys::pk(&values))
}

/// What a window does to the cache, in commit order.
#[derive(Debug, Clone)]
enum Change {
    /// Delete the row's key.
    Row { table: String, pk: String },
    /// Every row of the table is stale: increment its generation.
    Table { table: String },
}

/// The epoch and generations of the tables, as in `<prefix>:generations`.
type Generations = BTreeMap<String, u64>;

/// A Redis connection made on first use and again after a failure.
#[derive(Debug)]
struct Conn {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Conn {
    fn new(client: redis::Client) -> Self {
        Conn {
            client,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection: the next use connects again.
    async fn reset(&self) {
        *self.conn.lock().await = None;
    }
}

/// Runs `fut` with [`REDIS_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("redis {what}: {e}")),
        Err(_) => Err(format!("redis {what}: no answer in {REDIS_TIMEOUT:?}")),
    }
}

/// The consumer: collects a window's changes, applies them with the checkpoint in one transaction.
#[derive(Debug)]
pub struct Invalidator {
    keys: CacheKeys,
    checkpoint_key: String,
    redis: Conn,
    /// `None`: to be loaded (at the start, after a failed window).
    generations: tokio::sync::Mutex<Option<Generations>>,
    pending: Mutex<Vec<Change>>,
    /// The newest applied deletions: (Redis key, window SCN), in commit order.
    pub log: Mutex<VecDeque<(String, Scn)>>,
    /// Every table-wide invalidation applied: (`db.table`, window SCN), in commit order.
    pub truncates: Mutex<Vec<(String, Scn)>>,
    /// Deletions that removed a cached entry.
    pub hits: AtomicU64,
    /// Windows committed to Redis (with or without data).
    pub committed: AtomicU64,
    data_windows: AtomicU64,
    max_windows: Option<u64>,
    stop: CancellationToken,
}

impl Invalidator {
    /// The generations, loaded from Redis when not known.
    async fn generations(&self) -> Result<Generations, String> {
        let mut slot = self.generations.lock().await;
        if let Some(g) = &*slot {
            return Ok(g.clone());
        }
        let mut conn = bounded("connect", self.redis.get()).await?;
        let loaded: Generations = bounded(
            "HGETALL generations",
            redis::cmd("HGETALL")
                .arg(self.keys.generations())
                .query_async(&mut conn),
        )
        .await?;
        tracing::debug!(?loaded, "generations loaded");
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// Applies `changes` and stores `checkpoint` in one `MULTI`/`EXEC`; returns the keys deleted
    /// and whether each was cached.
    async fn commit(
        &self,
        changes: &[Change],
        checkpoint: &Checkpoint,
    ) -> Result<Vec<(String, bool)>, String> {
        let mut generations = self.generations().await?;
        let epoch = generations.get(EPOCH).copied().unwrap_or(0);
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Per command of the transaction: the key deleted, or the generation an increment must give.
        let mut expect: Vec<Result<String, u64>> = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Row { table, pk } => {
                    let generation = generations.get(table).copied().unwrap_or(0);
                    let key = self.keys.row(table, epoch, generation, pk);
                    pipe.del(&key);
                    expect.push(Ok(key));
                }
                Change::Table { table } => {
                    let generation = generations.entry(table.clone()).or_insert(0);
                    *generation += 1;
                    pipe.hincr(self.keys.generations(), table, 1);
                    expect.push(Err(*generation));
                }
            }
        }
        pipe.set(&self.checkpoint_key, checkpoint.to_json())
            .ignore();
        let mut conn = bounded("connect", self.redis.get()).await?;
        let replies: Vec<i64> = bounded("MULTI/EXEC", pipe.query_async(&mut conn)).await?;
        let mut deleted = Vec::new();
        for (want, got) in expect.into_iter().zip(replies) {
            match want {
                Ok(key) => deleted.push((key, got == 1)),
                Err(generation) if generation as i64 == got => {}
                Err(generation) => {
                    return Err(format!(
                        "a generation became {got} instead of {generation}: another invalidator \
                         writes under prefix {}; run one per prefix",
                        self.keys.prefix
                    ));
                }
            }
        }
        *self.generations.lock().await = Some(generations);
        Ok(deleted)
    }

    /// Forgets what a failed window left: its changes, the connection, the generations.
    async fn reset(&self) {
        self.pending.lock().unwrap().clear();
        self.redis.reset().await;
        *self.generations.lock().await = None;
    }
}

impl DatabusConsumer for Invalidator {
    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        if info.since_scn.is_some() {
            return ConsumerOutcome::Success;
        }
        // A full snapshot: what changed since this consumer's checkpoint is not known key by key
        // (deleted rows come as no tombstone), so every cached entry may be stale: a new epoch.
        // Before the client stores the bootstrap's checkpoint; done twice, it only drops more.
        let result = async {
            let mut conn = bounded("connect", self.redis.get()).await?;
            bounded(
                "HINCRBY epoch",
                redis::cmd("HINCRBY")
                    .arg(self.keys.generations())
                    .arg(EPOCH)
                    .arg(1)
                    .query_async::<i64>(&mut conn),
            )
            .await
        }
        .await;
        match result {
            Ok(epoch) => {
                *self.generations.lock().await = None;
                tracing::info!(
                    epoch,
                    "full snapshot: a new epoch, every cached entry dropped"
                );
                ConsumerOutcome::Success
            }
            Err(e) => {
                tracing::error!(error = %e, "full snapshot: could not start a new epoch");
                self.reset().await;
                ConsumerOutcome::Fatal
            }
        }
    }

    async fn on_start_window(&self, _: &WindowInfo) -> ConsumerOutcome {
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let (table, columns) = match table_of(event) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(scn = %event.scn(), error = %e, "cannot name the cached table");
                return ConsumerOutcome::Fatal;
            }
        };
        let change = match pk_of(event, &columns) {
            Ok(pk) => Change::Row { table, pk },
            Err(why) => {
                // Correct, if coarse: the whole table is dropped.
                tracing::warn!(scn = %event.scn(), %table, %why, "cannot render the row's key: dropping the table's entries");
                Change::Table { table }
            }
        };
        self.pending.lock().unwrap().push(change);
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, change: &TableChange) -> ConsumerOutcome {
        tracing::info!(scn = %event.scn(), table = %change.table, cause = ?change.cause, "every row is gone: a new generation");
        self.pending.lock().unwrap().push(Change::Table {
            table: change.table.clone(),
        });
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        // Cached values are rows of the old shape.
        tracing::info!(scn = %event.scn(), table = %change.table, statement = %change.statement, "schema change: a new generation");
        self.pending.lock().unwrap().push(Change::Table {
            table: change.table.clone(),
        });
        ConsumerOutcome::Success
    }

    async fn on_rollback(&self, to: &Checkpoint) -> ConsumerOutcome {
        // The failed window's EXEC may or may not have run: reload the generations; the replay
        // deletes again (harmless).
        tracing::warn!(to = %to.window_scn, "window failed: replaying it");
        self.reset().await;
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, checkpoint: &Checkpoint) -> ConsumerOutcome {
        let changes = std::mem::take(&mut *self.pending.lock().unwrap());
        let deleted = match self.commit(&changes, checkpoint).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(scn = %window.scn, attempt = window.attempt, error = %e, "window not applied; it will be retried");
                self.reset().await;
                return ConsumerOutcome::Retry;
            }
        };
        self.committed.fetch_add(1, Ordering::Relaxed);
        let hits = deleted.iter().filter(|(_, was)| *was).count();
        self.hits.fetch_add(hits as u64, Ordering::Relaxed);
        let tables: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Table { table } => Some(table.clone()),
                Change::Row { .. } => None,
            })
            .collect();
        if !changes.is_empty() {
            tracing::info!(
                scn = %window.scn,
                keys = deleted.len(),
                cached = hits,
                tables = ?tables,
                "window applied"
            );
            for (key, was) in &deleted {
                tracing::debug!(scn = %window.scn, %key, cached = was, "deleted");
            }
        }
        {
            let mut log = self.log.lock().unwrap();
            for (key, _) in deleted {
                if log.len() == LOG_CAPACITY {
                    log.pop_front();
                }
                log.push_back((key, window.scn));
            }
        }
        self.truncates
            .lock()
            .unwrap()
            .extend(tables.into_iter().map(|t| (t, window.scn)));
        if window.events == 0 {
            return ConsumerOutcome::Success;
        }
        let done = self.data_windows.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_windows.is_some_and(|max| done >= max) {
            self.stop.cancel();
        }
        ConsumerOutcome::Success
    }
}

/// The checkpoint in Redis: loaded at the start; window checkpoints are written by the
/// [`Invalidator`] with each window's deletions, so [`CheckpointStore::store`] does nothing; phase
/// changes (no data) are written here.
#[derive(Debug)]
pub struct RedisCheckpointStore {
    client: redis::Client,
    key: String,
}

impl RedisCheckpointStore {
    /// The checkpoint at `key` of the Redis of `client`.
    pub fn new(client: redis::Client, key: String) -> Self {
        RedisCheckpointStore { client, key }
    }

    fn conn(&self) -> Result<redis::Connection, CheckpointStoreError> {
        let conn = self
            .client
            .get_connection_with_timeout(REDIS_TIMEOUT)
            .map_err(|e| self.err(e))?;
        conn.set_read_timeout(Some(REDIS_TIMEOUT))
            .map_err(|e| self.err(e))?;
        Ok(conn)
    }

    fn err(&self, e: redis::RedisError) -> CheckpointStoreError {
        CheckpointStoreError::Other(format!("redis key {}: {e}", self.key))
    }
}

impl CheckpointStore for RedisCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        let text: Option<String> = redis::cmd("GET")
            .arg(&self.key)
            .query(&mut self.conn()?)
            .map_err(|e| self.err(e))?;
        text.map(|t| {
            Checkpoint::from_json(&t).map_err(|e| {
                CheckpointStoreError::Other(format!(
                    "checkpoint in redis key {} is unusable: {e}; fix or delete the key",
                    self.key
                ))
            })
        })
        .transpose()
    }

    fn store(&self, _: &Checkpoint) -> Result<(), CheckpointStoreError> {
        // Written with the window's deletions (Invalidator::commit).
        Ok(())
    }

    fn store_blocks(&self) -> bool {
        false
    }

    fn store_transition(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        redis::cmd("SET")
            .arg(&self.key)
            .arg(checkpoint.to_json())
            .query::<()>(&mut self.conn()?)
            .map_err(|e| self.err(e))
    }
}

/// How [`Reader::read_through`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// From the cache.
    Hit,
    /// Loaded from the database and stored in the cache.
    Filled,
    /// Loaded from the database, not stored: the key changed (or another reader held it) meanwhile.
    NotFilled,
}

/// Stores `ARGV[2]` at `KEYS[1]` with a TTL of `ARGV[3]` ms only if the key still holds lease
/// `ARGV[1]`.
const STORE_IF_LEASED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// A read-through reader of the cache (see "Readers" in the module docs).
#[derive(Debug, Clone)]
pub struct Reader {
    keys: CacheKeys,
    conn: MultiplexedConnection,
    /// How long a stored row lives (a bound on any entry's life, e.g. an old generation's).
    pub ttl: Duration,
    /// How long a lease holds a missing key for the reader loading it.
    pub lease: Duration,
}

impl Reader {
    /// A reader of the cache under `prefix` on `conn`.
    pub fn new(prefix: &str, conn: MultiplexedConnection) -> Self {
        Reader {
            keys: CacheKeys::new(prefix),
            conn,
            ttl: Duration::from_secs(3600),
            lease: Duration::from_secs(10),
        }
    }

    /// The key of a row now (the current epoch and generation of `table`).
    pub async fn key(&self, table: &str, pk: &[Value]) -> redis::RedisResult<String> {
        let mut conn = self.conn.clone();
        let counters: (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.generations())
            .arg(EPOCH)
            .arg(table)
            .query_async(&mut conn)
            .await?;
        Ok(self.keys.row(
            table,
            counters.0.unwrap_or(0),
            counters.1.unwrap_or(0),
            &CacheKeys::pk(pk),
        ))
    }

    /// The row of `table` (`db.table`) with primary key `pk` as JSON text (`None`: no such row),
    /// from the cache, else from `load` (which reads the database; `None` for no row), then cached.
    pub async fn read_through<F, Fut>(
        &self,
        table: &str,
        pk: &[Value],
        load: F,
    ) -> anyhow::Result<(Option<String>, Read)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<String>>>,
    {
        let mut conn = self.conn.clone();
        let key = self.key(table, pk).await?;
        let cached: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        // Another reader's lease is a miss.
        if let Some(v) = cached.as_deref().filter(|v| !v.starts_with("lease:")) {
            return Ok((decode_entry(v), Read::Hit));
        }
        let lease = format!("lease:{:016x}", rand::random::<u64>());
        let leased: bool = redis::cmd("SET")
            .arg(&key)
            .arg(&lease)
            .arg("NX")
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        // Loaded only after the lease is in place: see the module docs.
        let row = load().await?;
        if !leased {
            return Ok((row, Read::NotFilled));
        }
        let entry = row.clone().unwrap_or_else(|| "null".to_owned());
        let stored: i64 = redis::Script::new(STORE_IF_LEASED)
            .key(&key)
            .arg(&lease)
            .arg(&entry)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((
            row,
            if stored == 1 {
                Read::Filled
            } else {
                Read::NotFilled
            },
        ))
    }
}

/// A cache entry's row: `null` is a cached "no such row".
fn decode_entry(v: &str) -> Option<String> {
    (v != "null").then(|| v.to_owned())
}

/// Runs the invalidator until `shutdown` is cancelled or `--max-windows` data windows are done;
/// returns it and what the client did.
pub async fn run(
    args: Args,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Invalidator>, RunSummary)> {
    let keys = CacheKeys::new(&args.prefix);
    let client = redis::Client::open(args.redis.as_str())?;
    let checkpoint_key = keys.checkpoint(&args.name);
    let store = Arc::new(RedisCheckpointStore::new(
        client.clone(),
        checkpoint_key.clone(),
    ));
    let mut config = ClientConfig::with_relays(args.relays.clone());
    config.bootstrap_servers = args.bootstrap.clone();
    config.start = if args.from_beginning {
        StartPosition::Oldest
    } else {
        StartPosition::Now
    };
    // One worker: windows, and the keys in them, are applied in commit order.
    config.workers = 1;
    let resume = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.load()).await??
    };
    tracing::info!(
        relays = ?args.relays,
        redis = %args.redis,
        checkpoint = %checkpoint_key,
        from = %match &resume {
            Some(cp) => format!("the checkpoint (SCN {})", cp.window_scn),
            None if args.from_beginning => "the oldest window the relay holds".into(),
            None => "now".into(),
        },
        "cache_invalidator starting"
    );
    let client_lib = DatabusClient::new(config, store)?;
    let invalidator = Arc::new(Invalidator {
        keys,
        checkpoint_key,
        redis: Conn::new(client),
        generations: tokio::sync::Mutex::new(None),
        pending: Mutex::new(Vec::new()),
        log: Mutex::new(VecDeque::new()),
        truncates: Mutex::new(Vec::new()),
        hits: AtomicU64::new(0),
        committed: AtomicU64::new(0),
        data_windows: AtomicU64::new(0),
        max_windows: args.max_windows,
        stop: shutdown.clone(),
    });
    let summary = client_lib.run(invalidator.clone(), shutdown).await?;
    Ok((invalidator, summary))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // What the invalidator does per window, and the client's warnings (failovers, falling off the
    // relay, a bootstrap, retries, waiting while no server can serve the checkpoint), on stderr;
    // RUST_LOG overrides the level (e.g. RUST_LOG=debug shows every deleted key).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let (invalidator, summary) = run(args, shutdown).await?;
    tracing::info!(
        windows = summary.windows,
        committed = invalidator.committed.load(Ordering::Relaxed),
        cached_keys_deleted = invalidator.hits.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}
