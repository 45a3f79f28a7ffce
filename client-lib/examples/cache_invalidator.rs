//! A cache invalidator: keeps an LRU cache of rows and invalidates keys in commit order.
//!
//! ```text
//! databus quickstart --keep-running      # in another terminal: MariaDB, relay, bootstrap, a workload
//! cargo run -p databus-client --example cache_invalidator -- \
//!     --relay http://127.0.0.1:11140 --checkpoint cache_invalidator.checkpoint.json
//! ```
//!
//! The cache stands for an application's read-through cache: readers fill it (here: keys
//! `1..=--preload` of every source in `--sources` are pre-loaded), the change stream evicts every
//! changed key, one window at a time and in commit order (one worker), so a reader never sees a value
//! older than one it already saw. Starts from "now" (history does not matter to a cache that starts
//! empty-ish) unless the checkpoint file holds a position; `--from-beginning` replays what the relay
//! holds. Prints each invalidation; stops on Ctrl-C or after `--max-windows` windows with data.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use databus_client::{
    BootstrapInfo, ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    FileCheckpointStore, RunSummary, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Key, Scn, SourceId, TableChange};
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Invalidates the keys of an LRU cache from a databus change stream, in commit order"
)]
pub struct Args {
    /// Relay base URL; repeat the flag for failover between relays.
    #[arg(long = "relay", default_value = "http://127.0.0.1:11140")]
    pub relays: Vec<String>,
    /// Bootstrap server base URL, used if the relay no longer holds the checkpoint's position (a
    /// cache only needs to know what changed, so this is rarely needed).
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// Checkpoint file: a restarted invalidator resumes after the last window it processed.
    #[arg(long, default_value = "cache_invalidator.checkpoint.json")]
    pub checkpoint: PathBuf,
    /// Start from the relay's oldest window instead of "now" when there is no checkpoint.
    #[arg(long)]
    pub from_beginning: bool,
    /// Source ids whose keys are pre-loaded in the cache (the quickstart's tables are 1 and 2).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub sources: Vec<u16>,
    /// Keys `1..=N` of each source are pre-loaded.
    #[arg(long, default_value_t = 100)]
    pub preload: i64,
    /// Cache capacity in entries.
    #[arg(long, default_value_t = 10_000)]
    pub capacity: usize,
    /// Stop after this many windows with data events (default: run until Ctrl-C).
    #[arg(long)]
    pub max_windows: Option<u64>,
}

/// A cached row: by source and key.
pub type CacheKey = (SourceId, Key);

/// A least-recently-used cache: a map plus a use counter ordering the entries.
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> Lru<K, V> {
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    pub fn put(&mut self, key: K, value: V) {
        self.invalidate(&key);
        if self.entries.len() == self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
    }

    /// Whether `key` is cached (without touching its recency).
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every key `which` selects; how many were cached.
    pub fn invalidate_where(&mut self, which: impl Fn(&K) -> bool) -> usize {
        let gone: Vec<K> = self.entries.keys().filter(|k| which(k)).cloned().collect();
        for key in &gone {
            self.invalidate(key);
        }
        gone.len()
    }

    /// Drops `key`; whether it was cached.
    pub fn invalidate(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some((_, used)) => {
                self.order.remove(&used);
                true
            }
            None => false,
        }
    }
}

/// The consumer: invalidates each changed key, on one worker, in commit order.
#[derive(Debug)]
pub struct Invalidator {
    /// The cache.
    pub cache: Mutex<Lru<CacheKey, String>>,
    /// Every changed key with its window's SCN, in the order invalidated.
    pub log: Mutex<Vec<(CacheKey, Scn)>>,
    /// Every truncate seen: (source, SCN), in commit order.
    pub truncates: Mutex<Vec<(SourceId, Scn)>>,
    /// How many of them were cached.
    pub hits: AtomicU64,
    data_windows: AtomicU64,
    max_windows: Option<u64>,
    stop: CancellationToken,
}

impl DatabusConsumer for Invalidator {
    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        if info.since_scn.is_none() {
            // A full snapshot: what changed since this consumer's checkpoint is not known key by
            // key (deletes come as no tombstone), so every cached entry may be stale.
            let dropped = self.cache.lock().unwrap().invalidate_where(|_| true);
            println!("full snapshot: {dropped} cached keys invalidated");
        }
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let key = (event.source(), event.key().to_owned());
        let was_cached = self.cache.lock().unwrap().invalidate(&key);
        if was_cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        println!(
            "SCN {}: {:?} {}:{} -> {}",
            event.scn(),
            event.opcode(),
            key.0,
            key.1,
            if was_cached {
                "invalidated"
            } else {
                "not cached"
            }
        );
        self.log.lock().unwrap().push((key, event.scn()));
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, change: &TableChange) -> ConsumerOutcome {
        // Every row of the source is gone: every cached key of it is stale.
        let source = event.source();
        let dropped = self
            .cache
            .lock()
            .unwrap()
            .invalidate_where(|(s, _)| *s == source);
        println!(
            "SCN {}: {:?} of {} ({}) -> {dropped} cached keys invalidated",
            event.scn(),
            change.cause,
            change.table,
            source
        );
        self.truncates.lock().unwrap().push((source, event.scn()));
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        // Cached values are rows of the old shape: drop them.
        let source = event.source();
        self.cache
            .lock()
            .unwrap()
            .invalidate_where(|(s, _)| *s == source);
        println!(
            "SCN {}: schema change of {} ({}) -> cache of the source dropped",
            event.scn(),
            change.table,
            change.statement
        );
        ConsumerOutcome::Success
    }

    async fn on_rollback(&self, to: &Checkpoint) -> ConsumerOutcome {
        // A replayed window invalidates its keys again (harmless); forget its log entries.
        self.log
            .lock()
            .unwrap()
            .retain(|(_, scn)| *scn <= to.window_scn);
        self.truncates
            .lock()
            .unwrap()
            .retain(|(_, scn)| *scn <= to.window_scn);
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
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

/// Runs the invalidator until `shutdown` is cancelled or `--max-windows` data windows are done;
/// returns it (cache and log) and what the client did.
pub async fn run(
    args: Args,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Invalidator>, RunSummary)> {
    let mut config = ClientConfig::with_relays(args.relays.clone());
    config.bootstrap_servers = args.bootstrap.clone();
    config.start = if args.from_beginning {
        StartPosition::Oldest
    } else {
        StartPosition::Now
    };
    let store = Arc::new(FileCheckpointStore::new(&args.checkpoint)?);
    let client = DatabusClient::new(config, store)?;
    let mut lru = Lru::new(args.capacity);
    for &source in &args.sources {
        for id in 1..=args.preload {
            lru.put(
                (SourceId::new(source), Key::Int(id)),
                format!("cached row {source}:{id}"),
            );
        }
    }
    println!(
        "cache_invalidator: relays {:?}, {} keys cached, checkpoints in {}, starting from {}",
        args.relays,
        lru.len(),
        args.checkpoint.display(),
        if args.from_beginning {
            "the beginning"
        } else {
            "now"
        }
    );
    let invalidator = Arc::new(Invalidator {
        cache: Mutex::new(lru),
        log: Mutex::new(Vec::new()),
        truncates: Mutex::new(Vec::new()),
        hits: AtomicU64::new(0),
        data_windows: AtomicU64::new(0),
        max_windows: args.max_windows,
        stop: shutdown.clone(),
    });
    let summary = client.run(invalidator.clone(), shutdown).await?;
    Ok((invalidator, summary))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The client's warnings (failovers, a bootstrap, waiting while no server can serve the
    // checkpoint) on stderr; RUST_LOG overrides the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
    println!(
        "{} windows; {} changed keys, {} of them cached and invalidated; {} keys still cached",
        summary.windows,
        invalidator.log.lock().unwrap().len(),
        invalidator.hits.load(Ordering::Relaxed),
        invalidator.cache.lock().unwrap().len()
    );
    Ok(())
}
