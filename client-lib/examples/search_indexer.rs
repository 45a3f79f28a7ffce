//! A search indexer: builds an in-memory inverted index (word -> keys) from the change stream.
//!
//! ```text
//! cargo run -p databus-client --example search_indexer -- http://127.0.0.1:11000 [more relays...]
//! ```
//!
//! Every text column of every row is split into lowercase words; an upsert re-indexes its key, a
//! delete removes it. Runs with 4 workers (per-key order is what an index needs); prints the index
//! size every 1000 windows and on Ctrl-C. Checkpoints go to `search_indexer.checkpoint.json`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, FileCheckpointStore,
    WindowInfo,
};
use databus_core::{Checkpoint, Key, SourceId};
use tokio_util::sync::CancellationToken;

type DocId = (SourceId, Key);

/// The inverted index and the words each document currently has.
#[derive(Default)]
struct Index {
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

    fn search(&self, word: &str) -> usize {
        self.postings.get(word).map_or(0, BTreeSet::len)
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

#[derive(Default)]
struct Indexer {
    index: Mutex<Index>,
}

impl DatabusConsumer for Indexer {
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

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        if window.scn.get() % 1000 == 0 {
            let index = self.index.lock().unwrap();
            println!(
                "window {}: {} words, {} documents",
                window.scn,
                index.postings.len(),
                index.docs.len()
            );
        }
        ConsumerOutcome::Success
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let relays: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!relays.is_empty(), "usage: search_indexer <relay url>...");
    let mut config = ClientConfig::with_relays(relays);
    config.workers = 4;
    let store = Arc::new(FileCheckpointStore::new("search_indexer.checkpoint.json")?);
    let client = DatabusClient::new(config, store)?;
    let indexer = Arc::new(Indexer::default());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let summary = client.run(indexer.clone(), shutdown).await?;
    let index = indexer.index.lock().unwrap();
    println!(
        "{} windows, {} events; {} words; documents with \"the\": {}",
        summary.windows,
        summary.events,
        index.postings.len(),
        index.search("the")
    );
    Ok(())
}
