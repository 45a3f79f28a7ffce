//! A search indexer: builds an in-memory inverted index (word -> keys) from the change stream.
//!
//! ```text
//! databus quickstart --keep-running      # in another terminal: MariaDB, relay, bootstrap, a workload
//! cargo run -p databus-client --example search_indexer -- \
//!     --relay http://127.0.0.1:11140 --bootstrap http://127.0.0.1:7100 \
//!     --checkpoint search_indexer.checkpoint.json
//! ```
//!
//! Every text column of every row is split into lowercase words; an upsert re-indexes its key, a
//! delete removes it. Runs with 4 workers (per-key order is what an index needs); prints each window's
//! changes and the index size, and a search for `--query` at the end (Ctrl-C, or `--max-windows`).
//! The index lives in memory: a restarted indexer resumes from its checkpoint and so holds only rows
//! changed since (a real one stores its index with the checkpoint); delete the checkpoint file to
//! rebuild from the relay's oldest window, or from a snapshot when a bootstrap server is given.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use databus_client::{
    BootstrapInfo, ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    FileCheckpointStore, RunSummary, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Key, SourceId, TableChange};
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(about = "Builds an in-memory inverted index from a databus change stream")]
pub struct Args {
    /// Relay base URL; repeat the flag for failover between relays.
    #[arg(long = "relay", default_value = "http://127.0.0.1:11140")]
    pub relays: Vec<String>,
    /// Bootstrap server base URL: the index starts from a consistent snapshot of it.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// Checkpoint file (delete it to rebuild the index from the start).
    #[arg(long, default_value = "search_indexer.checkpoint.json")]
    pub checkpoint: PathBuf,
    /// Dispatch workers (events of one key always go to the same one).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Stop after this many windows with data events (default: run until Ctrl-C).
    #[arg(long)]
    pub max_windows: Option<u64>,
    /// The word searched for in the summary at the end.
    #[arg(long, default_value = "ada")]
    pub query: String,
}

/// A document: a row, by source and key.
pub type DocId = (SourceId, Key);

/// The inverted index and the words each document currently has.
#[derive(Debug, Default)]
pub struct Index {
    postings: HashMap<String, BTreeSet<DocId>>,
    docs: HashMap<DocId, Vec<String>>,
}

impl Index {
    fn remove(&mut self, doc: &DocId) {
        for word in self.docs.remove(doc).unwrap_or_default() {
            if let Some(set) = self.postings.get_mut(&word) {
                set.remove(doc);
                if set.is_empty() {
                    self.postings.remove(&word);
                }
            }
        }
    }

    fn insert(&mut self, doc: DocId, words: Vec<String>) {
        self.remove(&doc);
        for word in &words {
            self.postings
                .entry(word.clone())
                .or_default()
                .insert(doc.clone());
        }
        self.docs.insert(doc, words);
    }

    /// Removes every document of `source` (its table was truncated or dropped); how many.
    fn remove_source(&mut self, source: SourceId) -> usize {
        let gone: Vec<DocId> = self
            .docs
            .keys()
            .filter(|d| d.0 == source)
            .cloned()
            .collect();
        for doc in &gone {
            self.remove(doc);
        }
        gone.len()
    }

    /// The documents holding `word`.
    pub fn search(&self, word: &str) -> Vec<DocId> {
        self.postings
            .get(word)
            .map(|docs| docs.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Each indexed document with its words (sorted, distinct).
    pub fn documents(&self) -> impl Iterator<Item = (&DocId, &Vec<String>)> {
        self.docs.iter()
    }

    /// Distinct words.
    pub fn words(&self) -> usize {
        self.postings.len()
    }
}

fn words(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.extend(
            s.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase),
        ),
        serde_json::Value::Object(map) => map.values().for_each(|v| words(v, out)),
        serde_json::Value::Array(items) => items.iter().for_each(|v| words(v, out)),
        _ => {}
    }
}

/// The consumer: indexes each event on one of the workers.
#[derive(Debug, Default)]
pub struct Indexer {
    /// The index.
    pub index: Mutex<Index>,
    data_windows: AtomicU64,
    max_windows: Option<u64>,
    stop: CancellationToken,
}

impl DatabusConsumer for Indexer {
    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        if info.since_scn.is_none() {
            // A full snapshot is the whole state: documents of rows deleted meanwhile get no
            // tombstone, so the index starts from empty.
            *self.index.lock().unwrap() = Index::default();
        }
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let doc = (event.source(), event.key().to_owned());
        if event.is_delete() {
            self.index.lock().unwrap().remove(&doc);
            return ConsumerOutcome::Success;
        }
        match event.json() {
            Ok(row) => {
                let mut found = Vec::new();
                words(&row, &mut found);
                found.sort();
                found.dedup();
                self.index.lock().unwrap().insert(doc, found);
                ConsumerOutcome::Success
            }
            Err(e) => {
                eprintln!("cannot index {doc:?}: {e}");
                ConsumerOutcome::Fatal
            }
        }
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, change: &TableChange) -> ConsumerOutcome {
        let removed = self.index.lock().unwrap().remove_source(event.source());
        println!(
            "SCN {}: {:?} of {}: {removed} documents removed from the index",
            event.scn(),
            change.cause,
            change.table
        );
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        // Documents are the words of every column: a new schema changes nothing already indexed;
        // rows written later are indexed with their new columns.
        println!(
            "SCN {}: schema change of {}: {}",
            event.scn(),
            change.table,
            change.statement
        );
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        if window.events == 0 {
            return ConsumerOutcome::Success;
        }
        let done = self.data_windows.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let index = self.index.lock().unwrap();
            println!(
                "window {} ({:?}): {} events indexed; {} words, {} documents",
                window.scn,
                window.phase,
                window.events,
                index.words(),
                index.docs.len()
            );
        }
        if self.max_windows.is_some_and(|max| done >= max) {
            self.stop.cancel();
        }
        ConsumerOutcome::Success
    }
}

/// Indexes the stream until `shutdown` is cancelled or `--max-windows` data windows are indexed;
/// returns the index and what the client did.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<(Index, RunSummary)> {
    let mut config = ClientConfig::with_relays(args.relays.clone());
    config.bootstrap_servers = args.bootstrap.clone();
    config.start = if args.bootstrap.is_empty() {
        println!(
            "no --bootstrap: indexing from the oldest change the relay holds; rows changed before it \
             are not indexed (give --bootstrap URL to index the whole tables)"
        );
        StartPosition::Oldest
    } else {
        StartPosition::Snapshot
    };
    config.workers = args.workers;
    let store = Arc::new(FileCheckpointStore::new(&args.checkpoint)?);
    if let Some(cp) = databus_client::CheckpointStore::load(&*store)? {
        println!(
            "resuming after SCN {} from {}: the in-memory index holds only rows changed since; \
             delete the file to rebuild it whole",
            cp.window_scn,
            args.checkpoint.display()
        );
    }
    let client = DatabusClient::new(config, store)?;
    println!(
        "search_indexer: relays {:?}, bootstrap {:?}, {} workers, checkpoints in {}",
        args.relays,
        args.bootstrap,
        args.workers,
        args.checkpoint.display()
    );
    let indexer = Arc::new(Indexer {
        max_windows: args.max_windows,
        stop: shutdown.clone(),
        ..Indexer::default()
    });
    let summary = client.run(indexer.clone(), shutdown).await?;
    let index = std::mem::take(&mut *indexer.index.lock().unwrap());
    Ok((index, summary))
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
    let query = args.query.to_lowercase();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let (index, summary) = run(args, shutdown).await?;
    let hits = index.search(&query);
    println!(
        "{} windows, {} events; {} words, {} documents; {} documents with {query:?}: {:?}",
        summary.windows,
        summary.events,
        index.words(),
        index.docs.len(),
        hits.len(),
        hits.iter()
            .map(|(source, key)| format!("{source}:{key}"))
            .collect::<Vec<_>>()
    );
    Ok(())
}
