//! A replica: applies each window to a SQLite database, with the consumer's checkpoint committed in the
//! same transaction (effectively-once: after a crash, data and checkpoint always agree).
//!
//! ```text
//! databus quickstart --keep-running      # in another terminal: MariaDB, relay, bootstrap, a workload
//! cargo run -p databus-client --example replica -- \
//!     --relay http://127.0.0.1:11140 --bootstrap http://127.0.0.1:7100 --checkpoint replica.sqlite
//! sqlite3 replica.sqlite 'SELECT * FROM rows'
//! ```
//!
//! `--checkpoint` names the SQLite file holding both the replica and its checkpoint (table
//! `databus_checkpoint`, `databus_client::checkpoint::CHECKPOINT_TABLE`). With a bootstrap server a new replica starts from a consistent snapshot
//! (then catches up and follows the relay); without one, from the relay's oldest window. Stops on
//! Ctrl-C or after `--max-windows` windows with data.
//!
//! Rows are stored as JSON in `rows(source, key, json, scn)`. Events of a window are collected in
//! memory and written in `on_end_window` in one transaction with the checkpoint; `on_rollback`
//! forgets a failed window's rows. A truncate (TRUNCATE or DROP TABLE at the source) deletes the
//! source's rows; a schema change is recorded in `schema_changes(source, scn, statement, new_schema)`
//! (each row's JSON is the row as of its last change, with the columns of its schema). Snapshot rows from a bootstrap are upserts of the row's current
//! state (the phase tells them from live changes; here both are applied the same way).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use databus_client::checkpoint::SqliteCheckpointStore;
use databus_client::{
    BootstrapInfo, ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, Phase,
    RunSummary, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Scn, TableChange};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(about = "Replicates a databus change stream into SQLite, effectively once")]
pub struct Args {
    /// Relay base URL; repeat the flag for failover between relays.
    #[arg(long = "relay", default_value = "http://127.0.0.1:11140")]
    pub relays: Vec<String>,
    /// Bootstrap server base URL: a new replica starts from its snapshot, and one that fell behind
    /// the relay catches up from it.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// The SQLite file holding the replica and its checkpoint.
    #[arg(long, default_value = "replica.sqlite")]
    pub checkpoint: PathBuf,
    /// Stop after this many windows with data events (default: run until Ctrl-C).
    #[arg(long)]
    pub max_windows: Option<u64>,
}

const CONSUMER: &str = "replica";

enum Op {
    Upsert {
        source: u16,
        key: String,
        json: String,
        scn: Scn,
    },
    Delete {
        source: u16,
        key: String,
    },
    /// Every row of the source is gone (TRUNCATE or DROP TABLE).
    Truncate {
        source: u16,
    },
    /// The source's schema changed: recorded in `schema_changes`.
    SchemaChange {
        source: u16,
        scn: Scn,
        statement: String,
        new_schema: Option<String>,
    },
}

/// The consumer: collects a window's rows, applies them with the checkpoint in one transaction.
struct Replica {
    conn: Arc<Mutex<Connection>>,
    pending: Mutex<Vec<Op>>,
    data_windows: AtomicU64,
    max_windows: Option<u64>,
    stop: CancellationToken,
}

impl DatabusConsumer for Replica {
    async fn on_start_bootstrap(&self, info: &BootstrapInfo) -> ConsumerOutcome {
        if info.since_scn.is_some() {
            return ConsumerOutcome::Success;
        }
        // A full snapshot is the whole state (rows deleted since what this replica holds come as no
        // tombstone): start from empty. A crash before the snapshot's first window takes the same
        // path again, since the stored checkpoint is still the one before the bootstrap.
        let conn = self.conn.clone();
        match tokio::task::spawn_blocking(move || {
            conn.lock().unwrap().execute("DELETE FROM rows", [])
        })
        .await
        {
            Ok(Ok(n)) => {
                eprintln!("full snapshot: {n} replica rows cleared");
                ConsumerOutcome::Success
            }
            Ok(Err(e)) => {
                eprintln!("cannot clear the replica: {e}");
                ConsumerOutcome::Retry
            }
            Err(e) => {
                eprintln!("cannot clear the replica: {e}");
                ConsumerOutcome::Fatal
            }
        }
    }

    async fn on_start_window(&self, _: &WindowInfo) -> ConsumerOutcome {
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }

    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let (source, key) = (event.source().get(), event.key().to_string());
        let op = if event.is_delete() {
            Op::Delete { source, key }
        } else {
            match event.json() {
                Ok(row) => Op::Upsert {
                    source,
                    key,
                    json: row.to_string(),
                    scn: event.scn(),
                },
                Err(e) => {
                    eprintln!("{e}");
                    return ConsumerOutcome::Fatal;
                }
            }
        };
        self.pending.lock().unwrap().push(op);
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, _: &TableChange) -> ConsumerOutcome {
        let source = event.source().get();
        self.pending.lock().unwrap().push(Op::Truncate { source });
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        self.pending.lock().unwrap().push(Op::SchemaChange {
            source: event.source().get(),
            scn: event.scn(),
            statement: change.statement.clone(),
            new_schema: change.new_schema.map(|id| format!("{:016x}", id.get())),
        });
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, checkpoint: &Checkpoint) -> ConsumerOutcome {
        let ops = std::mem::take(&mut *self.pending.lock().unwrap());
        let conn = self.conn.clone();
        let checkpoint = checkpoint.clone();
        let applied = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut conn = conn.lock().unwrap();
            let tx = conn.transaction()?;
            for op in &ops {
                match op {
                    Op::Upsert { source, key, json, scn } => tx.execute(
                        "INSERT INTO rows (source, key, json, scn) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT(source, key) DO UPDATE SET json = excluded.json, scn = excluded.scn",
                        (source, key, json, scn.get() as i64),
                    )?,
                    Op::Delete { source, key } => tx.execute(
                        "DELETE FROM rows WHERE source = ?1 AND key = ?2",
                        (source, key),
                    )?,
                    Op::Truncate { source } => {
                        tx.execute("DELETE FROM rows WHERE source = ?1", [source])?
                    }
                    Op::SchemaChange {
                        source,
                        scn,
                        statement,
                        new_schema,
                    } => tx.execute(
                        "INSERT INTO schema_changes (source, scn, statement, new_schema) \
                         VALUES (?1, ?2, ?3, ?4)",
                        (source, scn.get() as i64, statement, new_schema),
                    )?,
                };
            }
            SqliteCheckpointStore::store_in(&tx, CONSUMER, &checkpoint)?;
            tx.commit()
        })
        .await;
        match applied {
            Ok(Ok(())) => {
                if window.events > 0 {
                    let kind = match window.phase {
                        Phase::Online => "changes",
                        Phase::Snapshot => "snapshot rows",
                        Phase::Catchup => "catch-up changes",
                    };
                    println!(
                        "window {}: applied {} {kind} with the checkpoint in one transaction",
                        window.scn, window.events
                    );
                    let done = self.data_windows.fetch_add(1, Ordering::Relaxed) + 1;
                    if self.max_windows.is_some_and(|max| done >= max) {
                        self.stop.cancel();
                    }
                }
                ConsumerOutcome::Success
            }
            Ok(Err(e)) => {
                eprintln!("applying window {}: {e}", window.scn);
                ConsumerOutcome::Retry
            }
            Err(e) => {
                eprintln!("apply task failed: {e}");
                ConsumerOutcome::Fatal
            }
        }
    }

    async fn on_rollback(&self, _: &Checkpoint) -> ConsumerOutcome {
        self.pending.lock().unwrap().clear();
        ConsumerOutcome::Success
    }
}

/// Opens (creating if needed) the replica database: `rows` and the checkpoint table.
pub fn open(path: &std::path::Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rows (source INTEGER NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL, \
         scn INTEGER NOT NULL, PRIMARY KEY (source, key)); \
         CREATE TABLE IF NOT EXISTS schema_changes (source INTEGER NOT NULL, scn INTEGER NOT NULL, \
         statement TEXT NOT NULL, new_schema TEXT)",
    )?;
    SqliteCheckpointStore::create_table(&conn)?;
    Ok(conn)
}

/// Replicates until `shutdown` is cancelled or `--max-windows` data windows are applied.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let mut config = ClientConfig::with_relays(args.relays.clone());
    config.bootstrap_servers = args.bootstrap.clone();
    config.start = if args.bootstrap.is_empty() {
        println!(
            "no --bootstrap: replicating from the oldest change the relay holds; rows changed before \
             it are missing from the replica (give --bootstrap URL to start from a snapshot)"
        );
        StartPosition::Oldest
    } else {
        StartPosition::Snapshot
    };
    let conn = open(&args.checkpoint)?;
    // The client only loads the checkpoint; the replica commits it with each window.
    let store =
        Arc::new(SqliteCheckpointStore::open(&args.checkpoint, CONSUMER)?.committed_by_consumer());
    let client = DatabusClient::new(config, store)?;
    println!(
        "replica: relays {:?}, bootstrap {:?}, replica and checkpoint in {}",
        args.relays,
        args.bootstrap,
        args.checkpoint.display()
    );
    let replica = Arc::new(Replica {
        conn: Arc::new(Mutex::new(conn)),
        pending: Mutex::new(Vec::new()),
        data_windows: AtomicU64::new(0),
        max_windows: args.max_windows,
        stop: shutdown.clone(),
    });
    Ok(client.run(replica, shutdown).await?)
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
    let db = args.checkpoint.clone();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let summary = run(args, shutdown).await?;
    let rows: i64 = open(&db)?.query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))?;
    println!(
        "{} windows applied; replica holds {rows} rows",
        summary.windows
    );
    Ok(())
}
