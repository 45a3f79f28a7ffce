//! A cache invalidator: keeps an LRU cache of rows and invalidates keys in commit order.
//!
//! ```text
//! cargo run -p databus-client --example cache_invalidator -- http://127.0.0.1:11000
//! ```
//!
//! The cache stands for an application's read-through cache: readers fill it (here: a few keys are
//! pre-loaded), the change stream evicts every changed key, one window at a time and in commit order
//! (one worker), so a reader never sees a value older than one it already saw. Starts from "now":
//! history does not matter to a cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Key, SourceId};
use tokio_util::sync::CancellationToken;

/// A least-recently-used cache: a map plus a use counter ordering the entries.
struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + std::hash::Hash, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    fn put(&mut self, key: K, value: V) {
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

    fn invalidate(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some((_, used)) => {
                self.order.remove(&used);
                true
            }
            None => false,
        }
    }
}

struct Invalidator {
    cache: Mutex<Lru<(SourceId, Key), String>>,
    invalidated: Mutex<u64>,
}

impl DatabusConsumer for Invalidator {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let key = (event.source(), event.key().to_owned());
        if self.cache.lock().unwrap().invalidate(&key) {
            *self.invalidated.lock().unwrap() += 1;
            println!("invalidated {}:{} at SCN {}", key.0, key.1, event.scn());
        }
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        // A reader refilling the cache after the window: what it reads is at least this fresh.
        let mut cache = self.cache.lock().unwrap();
        let probe = (SourceId::new(1), Key::Int(1));
        if cache.get(&probe).is_none() {
            cache.put(probe, format!("row as of SCN {}", window.scn));
        }
        ConsumerOutcome::Success
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let relays: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        !relays.is_empty(),
        "usage: cache_invalidator <relay url>..."
    );
    let mut config = ClientConfig::with_relays(relays);
    config.start = StartPosition::Now;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new()))?;
    let mut lru = Lru::new(10_000);
    for id in 1..=100 {
        lru.put((SourceId::new(1), Key::Int(id)), format!("cached row {id}"));
    }
    let invalidator = Arc::new(Invalidator {
        cache: Mutex::new(lru),
        invalidated: Mutex::new(0),
    });
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let summary = client.run(invalidator.clone(), shutdown).await?;
    println!(
        "{} windows; {} cached keys invalidated",
        summary.windows,
        invalidator.invalidated.lock().unwrap()
    );
    Ok(())
}
