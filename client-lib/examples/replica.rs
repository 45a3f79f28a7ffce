//! A replica: applies each window to a SQLite database, with the consumer's checkpoint committed in the
//! same transaction (effectively-once: after a crash, data and checkpoint always agree).
//!
//! ```text
//! cargo run -p databus-client --example replica -- replica.sqlite http://127.0.0.1:11000 \
//!     [--bootstrap http://127.0.0.1:11100]
//! ```
//!
//! Rows are stored as JSON in `rows(source, key, json, scn)`. Events of a window are collected in
//! memory and written in `on_end_window` in one transaction with the checkpoint; `on_rollback`
//! forgets a failed window's rows. Snapshot rows from a bootstrap are upserts of the row's current
//! state (the phase tells them from live changes; here both are applied the same way).

use std::sync::{Arc, Mutex};

use databus_client::checkpoint::SqliteCheckpointStore;
use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, Phase, WindowInfo,
};
use databus_core::{Checkpoint, Scn};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

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
}

struct Replica {
    conn: Arc<Mutex<Connection>>,
    pending: Mutex<Vec<Op>>,
}

impl DatabusConsumer for Replica {
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
                };
            }
            SqliteCheckpointStore::store_in(&tx, CONSUMER, &checkpoint)?;
            tx.commit()
        })
        .await;
        match applied {
            Ok(Ok(())) => {
                if window.phase != Phase::Online && window.scn.get() % 100 == 0 {
                    println!(
                        "bootstrap {:?}: applied up to SCN {}",
                        window.phase, window.scn
                    );
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: replica <db file> <relay url>... [--bootstrap <url>]")
    })?;
    let mut config = ClientConfig::default();
    while let Some(arg) = args.next() {
        if arg == "--bootstrap" {
            config
                .bootstrap_servers
                .push(args.next().unwrap_or_default());
        } else {
            config.relays.push(arg);
        }
    }
    let conn = Connection::open(&db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS rows (source INTEGER NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL, \
         scn INTEGER NOT NULL, PRIMARY KEY (source, key))",
    )?;
    SqliteCheckpointStore::create_table(&conn)?;
    // The client only loads the checkpoint; the replica commits it with each window.
    let store = Arc::new(SqliteCheckpointStore::open(&db, CONSUMER)?.committed_by_consumer());
    let client = DatabusClient::new(config, store)?;
    let replica = Arc::new(Replica {
        conn: Arc::new(Mutex::new(conn)),
        pending: Mutex::new(Vec::new()),
    });
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    let summary = client.run(replica.clone(), shutdown).await?;
    let rows: i64 =
        replica
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))?;
    println!(
        "{} windows applied; replica holds {rows} rows",
        summary.windows
    );
    Ok(())
}
