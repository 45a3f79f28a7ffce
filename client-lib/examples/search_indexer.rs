//! A search indexer on [tantivy](https://docs.rs/tantivy): keeps a full-text index on disk equal to
//! the source tables, with its checkpoint stored in the index's own commits.
//!
//! ```text
//! databus quickstart --keep-running      # in another terminal: MariaDB, relay, bootstrap, a workload
//! cargo run -p databus-client --example search_indexer -- \
//!     --relay http://127.0.0.1:11140 --bootstrap http://127.0.0.1:7100 --index search_index
//! ```
//!
//! # Documents
//!
//! Each row is one document with the fields
//!
//! - `id` (raw string, stored): `<db>.<table>:<primary key>`, e.g. `shop.customers:17` — the
//!   source's original names (the writer schema's `databus.database`/`databus.table`, else its
//!   namespace and name) and the primary-key values in key order (`databus.primary_key`) as the
//!   client's JSON rendering gives them, joined by `:`, with `%` and `:` inside a value written
//!   `%25`/`%3A` (the cache invalidator example renders its keys the same way). A table without a
//!   primary key falls back to the event's databus key.
//! - `table` (raw string, stored): `<db>.<table>`.
//! - `text` (tokenized, not stored): the values of the row's string columns (Avro `string`,
//!   nullable or not), split on non-alphanumerics and lowercased (tantivy's default tokenizer).
//! - `row` (stored): the row as JSON.
//!
//! An upsert replaces its document (`delete_term(id)` then `add_document`), a delete removes it. A
//! key-changing `UPDATE` arrives as a delete of the old key and an upsert of the new one: the old
//! document goes, the new one comes. `TRUNCATE`/`DROP TABLE` removes the table's documents
//! (`delete_term(table)`); a schema change touches nothing indexed (rows written later bring their
//! new columns). A full-snapshot bootstrap (no tombstones for rows deleted meanwhile) clears the index
//! first (`delete_all_documents`), committed with the bootstrap's first checkpoint.
//!
//! # Checkpoint in the index
//!
//! Events are turned into documents on `--workers` tasks (one key always on the same one); a
//! window's operations go to the `IndexWriter` in `on_end_window`, and every `--commit-every`
//! windows (and at each bootstrap phase change, and at shutdown) `on_checkpoint` commits them with
//! the window's checkpoint as the commit's payload (`prepare_commit`, `set_payload`, `commit`). The
//! client's store is a [`CommittedOnCheckpoint`] reading the last commit's payload from the index's
//! `meta.json`. Nothing uncommitted is visible or survives a crash, so a restarted indexer resumes at
//! exactly its last commit: every change after it is applied again and none before it, and the index
//! never holds a document the source does not (the commit is one atomic rename of `meta.json`).
//!
//! Without `--bootstrap` a new index starts from the oldest window the relay holds; with it, from a
//! consistent snapshot. Logs (tracing, `info`; `RUST_LOG` overrides) each window applied, each commit,
//! the resume point, bootstraps and falling off the relay; stops on Ctrl-C or after `--max-windows`
//! windows with data, then prints the documents matching `--query`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use apache_avro::Schema as AvroSchema;
use clap::Parser;
use databus_client::{
    BootstrapInfo, ClientConfig, ClientError, CommittedOnCheckpoint, ConsumerOutcome, DataEvent,
    DatabusClient, DatabusConsumer, RunSummary, StartPosition, WindowInfo,
    checkpoint::CheckpointStoreError,
};
use databus_core::{Checkpoint, Scn, TableChange};
use serde_json::Value as Json;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, Query, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(about = "Keeps a tantivy full-text index equal to the tables of a databus change stream")]
pub struct Args {
    /// Relay base URL; repeat the flag for failover between relays.
    #[arg(long = "relay", default_value = "http://127.0.0.1:11140")]
    pub relays: Vec<String>,
    /// Bootstrap server base URL: a new index starts from its snapshot, and one that fell behind the
    /// relay catches up from it.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// The index directory (created if missing); its commits hold the checkpoint.
    #[arg(long, default_value = "search_index")]
    pub index: PathBuf,
    /// Dispatch workers building documents (events of one key always go to the same one).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Commit the index (with the checkpoint) once per this many windows.
    #[arg(long, default_value_t = 1)]
    pub commit_every: u32,
    /// Stop after this many windows with data events (default: run until Ctrl-C).
    #[arg(long)]
    pub max_windows: Option<u64>,
    /// The query whose documents are printed at the end.
    #[arg(long, default_value = "ada")]
    pub query: String,
}

/// The memory of the index writer (one indexing thread; tantivy's minimum is 15 MB per thread).
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

/// The fields of the index's schema.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// `<db>.<table>:<primary key>`.
    pub id: Field,
    /// `<db>.<table>`.
    pub table: Field,
    /// The row's string columns, tokenized.
    pub text: Field,
    /// The row as JSON.
    pub row: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let fields = Fields {
            id: builder.add_text_field("id", STRING | STORED),
            table: builder.add_text_field("table", STRING | STORED),
            text: builder.add_text_field("text", TEXT),
            row: builder.add_text_field("row", STORED),
        };
        (builder.build(), fields)
    }
}

/// A document found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// `<db>.<table>:<primary key>`.
    pub id: String,
    /// `<db>.<table>`.
    pub table: String,
    /// The row as JSON.
    pub row: Json,
}

/// The index on disk, for searching and for its committed checkpoint.
#[derive(Clone)]
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating the directory and an empty index if missing.
    pub fn open(dir: &Path) -> tantivy::Result<SearchIndex> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = Fields::schema();
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            index,
            reader,
            fields,
        })
    }

    /// The checkpoint committed with the index's last commit (`None`: never committed).
    pub fn committed_checkpoint(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| CheckpointStoreError::Other(format!("index meta.json: {e}")))?;
        metas
            .payload
            .map(|text| {
                Checkpoint::from_json(&text).map_err(|e| {
                    CheckpointStoreError::Other(format!(
                        "the checkpoint in the index's last commit is unusable: {e}; \
                         delete the index directory to rebuild it"
                    ))
                })
            })
            .transpose()
    }

    /// The documents matching `query` (tantivy's query syntax over the text; all words required).
    pub fn search(&self, query: &str) -> tantivy::Result<Vec<Hit>> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        parser.set_conjunction_by_default();
        let query = parser.parse_query(query)?;
        self.hits(&*query)
    }

    /// How many documents `table` (`db.table`) has.
    pub fn count(&self, table: &str) -> tantivy::Result<usize> {
        self.reader.reload()?;
        let query = TermQuery::new(
            Term::from_field_text(self.fields.table, table),
            IndexRecordOption::Basic,
        );
        self.reader.searcher().search(&query, &Count)
    }

    /// Every document.
    pub fn documents(&self) -> tantivy::Result<Vec<Hit>> {
        self.hits(&AllQuery)
    }

    fn hits(&self, query: &dyn Query) -> tantivy::Result<Vec<Hit>> {
        self.reader.reload()?;
        let searcher = self.reader.searcher();
        let limit = (searcher.num_docs() as usize).max(1);
        let found = searcher.search(query, &TopDocs::with_limit(limit))?;
        let mut hits = Vec::with_capacity(found.len());
        for (_, address) in found {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            hits.push(Hit {
                id: text(self.fields.id),
                table: text(self.fields.table),
                row: serde_json::from_str(&text(self.fields.row)).unwrap_or(Json::Null),
            });
        }
        hits.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(hits)
    }

    /// How many documents the index holds.
    pub fn len(&self) -> tantivy::Result<usize> {
        self.reader.reload()?;
        Ok(self
            .reader
            .searcher()
            .search(&AllQuery, &DocSetCollector)?
            .len())
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> tantivy::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Writes `%` and `:` of `part` as `%25` and `%3A`.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// The document id of a row of `table` with primary-key values `pk` (in key order).
pub fn doc_id(table: &str, pk: &[Json]) -> String {
    let pk: Vec<String> = pk
        .iter()
        .map(|v| match v {
            Json::String(s) => escape(s),
            other => escape(&other.to_string()),
        })
        .collect();
    format!("{}:{}", escape(table), pk.join(":"))
}

/// What an event's writer schema says: `<db>.<table>`, primary-key columns, string columns.
struct TableInfo {
    table: String,
    pk: Vec<String>,
    text_columns: Vec<String>,
}

fn is_string(schema: &AvroSchema) -> bool {
    match schema {
        AvroSchema::String => true,
        AvroSchema::Union(union) => union.variants().iter().any(is_string),
        _ => false,
    }
}

fn table_info(event: &DataEvent<'_>) -> Result<TableInfo, String> {
    let t = event.table_schema().map_err(|e| e.to_string())?;
    let schema = event
        .writer_schema()
        .ok_or_else(|| format!("writer schema of source {} is unknown", event.source()))?;
    let AvroSchema::Record(record) = &*schema else {
        return Err(format!(
            "writer schema of source {} is not a record",
            event.source()
        ));
    };
    // The JSON row is keyed by the record's field names.
    let text_columns = record
        .fields
        .iter()
        .filter(|f| is_string(&f.schema))
        .map(|f| f.name.clone())
        .collect();
    Ok(TableInfo {
        table: format!("{}.{}", t.database, t.table),
        pk: t
            .primary_key
            .iter()
            .map(|&i| t.columns[i].name.clone())
            .collect(),
        text_columns,
    })
}

/// One change to the index, in commit order (per key).
enum Op {
    /// Replace the document `id`.
    Upsert { id: String, doc: TantivyDocument },
    /// Remove the document `id`.
    Delete { id: String },
    /// Remove every document of `table`.
    Table { table: String },
}

/// What a window did, for the log.
#[derive(Debug, Default, Clone, Copy)]
struct Applied {
    upserts: usize,
    deletes: usize,
    tables: usize,
}

/// The consumer: builds documents on the workers, writes a window's operations to the index in
/// `on_end_window`, commits with the checkpoint in `on_checkpoint`.
pub struct Indexer {
    fields: Fields,
    /// Read-locked to add and delete (the writer takes `&self` for those), write-locked to commit.
    writer: Arc<RwLock<IndexWriter>>,
    pending: Mutex<Vec<Op>>,
    /// Windows written to the writer since the last commit.
    uncommitted: AtomicU64,
    /// The SCN of the last window written to the writer (0: none yet).
    pub applied_scn: AtomicU64,
    /// The SCN of the last commit's checkpoint (0: none yet in this run).
    pub committed_scn: AtomicU64,
    /// Commits made in this run.
    pub commits: AtomicU64,
    data_windows: AtomicU64,
    max_windows: Option<u64>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("applied_scn", &self.applied_scn)
            .field("committed_scn", &self.committed_scn)
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

impl Indexer {
    /// The indexer of `index` (takes its writer lock: one indexer per index).
    pub fn new(
        index: &SearchIndex,
        max_windows: Option<u64>,
        stop: CancellationToken,
    ) -> tantivy::Result<Indexer> {
        let writer = index
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => tantivy::TantivyError::LockFailure(
                    tantivy::directory::error::LockError::LockBusy,
                    Some("another indexer is writing this index; stop it first".into()),
                ),
                e => e,
            })?;
        Ok(Indexer {
            fields: index.fields,
            writer: Arc::new(RwLock::new(writer)),
            pending: Mutex::new(Vec::new()),
            uncommitted: AtomicU64::new(0),
            applied_scn: AtomicU64::new(0),
            committed_scn: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            data_windows: AtomicU64::new(0),
            max_windows,
            stop,
        })
    }

    /// The document (or removal) an event makes.
    fn op(&self, event: &DataEvent<'_>) -> Result<Op, String> {
        let info = table_info(event)?;
        let row = event.json().map_err(|e| e.to_string())?;
        let id = if info.pk.is_empty() {
            format!("{}:{}", escape(&info.table), event.key())
        } else {
            let values: Vec<Json> = info
                .pk
                .iter()
                .map(|c| {
                    row.get(c)
                        .cloned()
                        .ok_or_else(|| format!("the row has no primary-key column {c}"))
                })
                .collect::<Result<_, _>>()?;
            doc_id(&info.table, &values)
        };
        if event.is_delete() {
            return Ok(Op::Delete { id });
        }
        let text: Vec<&str> = info
            .text_columns
            .iter()
            .filter_map(|c| row.get(c).and_then(Json::as_str))
            .collect();
        let mut doc = TantivyDocument::new();
        doc.add_text(self.fields.id, &id);
        doc.add_text(self.fields.table, &info.table);
        doc.add_text(self.fields.text, text.join("\n"));
        doc.add_text(self.fields.row, row.to_string());
        Ok(Op::Upsert { id, doc })
    }

    /// Runs `f` with the writer on a blocking thread (tantivy may wait for its indexing thread).
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RwLock<IndexWriter>) -> tantivy::Result<T> + Send + 'static,
    ) -> tantivy::Result<T> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&writer))
            .await
            .map_err(|e| tantivy::TantivyError::InternalError(format!("index task failed: {e}")))?
    }

    /// Commits what the writer holds with `checkpoint` as the commit's payload.
    async fn commit(&self, checkpoint: &Checkpoint) -> tantivy::Result<()> {
        let payload = checkpoint.to_json();
        self.with_writer(move |writer| {
            let mut writer = writer.write().expect("writer lock poisoned");
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            Ok(())
        })
        .await
    }
}

impl DatabusConsumer for Indexer {
    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        let Some(since) = info.since_scn else {
            // A full snapshot is the whole state with no tombstones: the index starts from empty.
            // Committed with the bootstrap's checkpoint (on_checkpoint comes next).
            return match self
                .with_writer(|w| {
                    w.read()
                        .expect("writer lock poisoned")
                        .delete_all_documents()
                })
                .await
            {
                Ok(_) => {
                    tracing::info!("full snapshot bootstrap: the index starts from empty");
                    ConsumerOutcome::Success
                }
                Err(e) => {
                    tracing::error!(error = %e, "full snapshot bootstrap: cannot clear the index");
                    ConsumerOutcome::Fatal
                }
            };
        };
        tracing::info!(%since, "bootstrap: a consolidated delta since the checkpoint");
        ConsumerOutcome::Success
    }

    async fn on_start_catchup(&self, target: Scn) -> ConsumerOutcome {
        tracing::info!(%target, "bootstrap: snapshot done, catching up");
        ConsumerOutcome::Success
    }

    async fn on_end_bootstrap(&self, scn: Scn) -> ConsumerOutcome {
        tracing::info!(%scn, "bootstrap done: following the relay");
        ConsumerOutcome::Success
    }

    async fn on_start_window(&self, _: &WindowInfo) -> ConsumerOutcome {
        // A replayed window starts over (nothing of a failed window reached the writer).
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        match self.op(event) {
            Ok(op) => {
                self.pending.lock().unwrap().push(op);
                ConsumerOutcome::Success
            }
            Err(e) => {
                tracing::error!(scn = %event.scn(), source = %event.source(), key = %event.key(), error = %e, "cannot index the row");
                ConsumerOutcome::Fatal
            }
        }
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, change: &TableChange) -> ConsumerOutcome {
        tracing::info!(scn = %event.scn(), table = %change.table, cause = ?change.cause, "every row is gone: removing the table's documents");
        self.pending.lock().unwrap().push(Op::Table {
            table: change.table.clone(),
        });
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        // Indexed documents keep their text; rows written later are indexed with their new columns.
        tracing::info!(scn = %event.scn(), table = %change.table, statement = %change.statement, "schema change");
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        let ops = std::mem::take(&mut *self.pending.lock().unwrap());
        let fields = self.fields;
        let applied = self
            .with_writer(move |writer| {
                let writer = writer.read().expect("writer lock poisoned");
                let mut applied = Applied::default();
                for op in ops {
                    match op {
                        Op::Upsert { id, doc } => {
                            writer.delete_term(Term::from_field_text(fields.id, &id));
                            writer.add_document(doc)?;
                            applied.upserts += 1;
                        }
                        Op::Delete { id } => {
                            writer.delete_term(Term::from_field_text(fields.id, &id));
                            applied.deletes += 1;
                        }
                        Op::Table { table } => {
                            writer.delete_term(Term::from_field_text(fields.table, &table));
                            applied.tables += 1;
                        }
                    }
                }
                Ok(applied)
            })
            .await;
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                // The writer is unusable (tantivy stops it on a failed add): stop; a restart resumes
                // from the last commit.
                tracing::error!(scn = %window.scn, error = %e, "cannot write the window to the index");
                return ConsumerOutcome::Fatal;
            }
        };
        self.applied_scn.store(window.scn.get(), Ordering::Relaxed);
        let uncommitted = self.uncommitted.fetch_add(1, Ordering::Relaxed) + 1;
        if window.events > 0 {
            tracing::info!(
                scn = %window.scn,
                phase = ?window.phase,
                upserts = applied.upserts,
                deletes = applied.deletes,
                tables_cleared = applied.tables,
                uncommitted_windows = uncommitted,
                "window applied"
            );
            let done = self.data_windows.fetch_add(1, Ordering::Relaxed) + 1;
            if self.max_windows.is_some_and(|max| done >= max) {
                self.stop.cancel();
            }
        }
        ConsumerOutcome::Success
    }

    async fn on_checkpoint(&self, checkpoint: &Checkpoint) -> ConsumerOutcome {
        match self.commit(checkpoint).await {
            Ok(()) => {
                let windows = self.uncommitted.swap(0, Ordering::Relaxed);
                self.committed_scn
                    .store(checkpoint.window_scn.get(), Ordering::Relaxed);
                self.commits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(scn = %checkpoint.window_scn, mode = ?checkpoint.mode, windows, "index committed with its checkpoint");
                ConsumerOutcome::Success
            }
            Err(e) => {
                // The client skips this checkpoint; the next commit covers it (or, if the writer is
                // broken, the next window stops the indexer).
                tracing::error!(scn = %checkpoint.window_scn, error = %e, "index commit failed");
                ConsumerOutcome::Retry
            }
        }
    }

    async fn on_rollback(&self, to: &Checkpoint) -> ConsumerOutcome {
        tracing::warn!(to = %to.window_scn, "window failed: replaying it");
        ConsumerOutcome::Success
    }

    async fn on_error(&self, error: &ClientError) -> ConsumerOutcome {
        match error {
            ClientError::ScnNotFound { .. } => tracing::warn!(
                %error,
                "fell off the relay: it no longer holds the checkpoint (a bootstrap server, if \
                 given, serves what is missing)"
            ),
            _ => tracing::warn!(%error, "client error"),
        }
        ConsumerOutcome::Success
    }
}

/// Runs `indexer` on the index in `args.index` until `shutdown` is cancelled, `--max-windows` data
/// windows are applied, or an error; the last windows are committed at shutdown.
pub async fn run_indexer(
    args: &Args,
    index: &SearchIndex,
    indexer: Arc<Indexer>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let mut config = ClientConfig::with_relays(args.relays.clone());
    config.bootstrap_servers = args.bootstrap.clone();
    config.start = if args.bootstrap.is_empty() {
        StartPosition::Oldest
    } else {
        StartPosition::Snapshot
    };
    config.workers = args.workers;
    config.checkpoint_every_windows = args.commit_every;
    let resume = index.committed_checkpoint()?;
    match &resume {
        Some(cp) => tracing::info!(
            index = %args.index.display(),
            scn = %cp.window_scn,
            mode = ?cp.mode,
            "resuming from the checkpoint of the index's last commit"
        ),
        None if args.bootstrap.is_empty() => tracing::warn!(
            index = %args.index.display(),
            "new index, no --bootstrap: indexing from the oldest change the relay holds; rows \
             changed before it are not indexed (give --bootstrap URL to index the whole tables)"
        ),
        None => tracing::info!(
            index = %args.index.display(),
            "new index: starting from a snapshot of the bootstrap server"
        ),
    }
    tracing::info!(
        relays = ?args.relays,
        bootstrap = ?args.bootstrap,
        workers = args.workers,
        commit_every = args.commit_every,
        "search_indexer starting"
    );
    // Loads the last commit's checkpoint (the client loads it when `run` starts).
    let meta = index.clone();
    let store = CommittedOnCheckpoint::new(move || meta.committed_checkpoint());
    let client = DatabusClient::new(config, Arc::new(store))?;
    let summary = client.run(indexer.clone(), shutdown).await?;
    tracing::info!(
        windows = summary.windows,
        events = summary.events,
        commits = indexer.commits.load(Ordering::Relaxed),
        committed_scn = indexer.committed_scn.load(Ordering::Relaxed),
        "search_indexer stopped"
    );
    Ok(summary)
}

/// Opens (or creates) the index, indexes the stream (see [`run_indexer`]); returns the index and
/// what the client did.
pub async fn run(
    args: Args,
    shutdown: CancellationToken,
) -> anyhow::Result<(SearchIndex, RunSummary)> {
    let index = SearchIndex::open(&args.index)?;
    let indexer = Arc::new(Indexer::new(&index, args.max_windows, shutdown.clone())?);
    let summary = run_indexer(&args, &index, indexer.clone(), shutdown).await?;
    // Releases the writer (and its lock) off the async threads: dropping it joins its threads.
    tokio::task::spawn_blocking(move || drop(indexer)).await?;
    Ok((index, summary))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // What the indexer does per window and per commit, and the client's warnings (failovers, a
    // bootstrap, waiting while no server can serve the checkpoint), on stderr; RUST_LOG overrides
    // the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let query = args.query.clone();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let (index, summary) = run(args, shutdown).await?;
    let hits = index.search(&query)?;
    println!(
        "{} windows, {} events; {} documents; {} with {query:?}: {:?}",
        summary.windows,
        summary.events,
        index.len()?,
        hits.len(),
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>()
    );
    Ok(())
}
