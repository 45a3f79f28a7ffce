//! A SQLite checkpoint store, usable inside the consumer's own transaction (effectively-once).

use std::path::Path;
use std::sync::Mutex;

use databus_core::Checkpoint;
use rusqlite::{Connection, OptionalExtension};

use super::{CheckpointStore, CheckpointStoreError};

/// The table holding checkpoints, one row per consumer name.
pub const CHECKPOINT_TABLE: &str = "databus_checkpoint";

/// Stores checkpoints in a SQLite table `databus_checkpoint(consumer TEXT PRIMARY KEY, checkpoint
/// TEXT)`.
///
/// For effectively-once delivery a replica keeps its data in the same database and, in its
/// `on_end_window` callback, writes the window's rows **and** [`SqliteCheckpointStore::store_in`] in
/// one transaction. Open the client's store with [`SqliteCheckpointStore::committed_by_consumer`]: then
/// [`CheckpointStore::load`] reads what the replica committed and [`CheckpointStore::store`] does
/// nothing, so the data and the checkpoint can never disagree after a crash. Checkpoints of phase
/// changes (a bootstrap starting, its catch-up starting, its end), which carry no data, are written by
/// the store itself ([`CheckpointStore::store_transition`]).
///
/// ```
/// use databus_client::checkpoint::{CheckpointStore, SqliteCheckpointStore};
/// use databus_core::{Checkpoint, Scn};
///
/// let mut conn = rusqlite::Connection::open_in_memory().unwrap();
/// SqliteCheckpointStore::create_table(&conn).unwrap();
/// conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)").unwrap();
/// let tx = conn.transaction().unwrap();
/// tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
/// SqliteCheckpointStore::store_in(&tx, "replica", &Checkpoint::after(Scn::new(9))).unwrap();
/// tx.commit().unwrap();
/// assert_eq!(
///     SqliteCheckpointStore::load_from(&conn, "replica").unwrap(),
///     Some(Checkpoint::after(Scn::new(9)))
/// );
/// ```
#[derive(Debug)]
pub struct SqliteCheckpointStore {
    conn: Mutex<Connection>,
    consumer: String,
    external: bool,
    path: String,
}

fn sql_err(path: &str, e: rusqlite::Error) -> CheckpointStoreError {
    CheckpointStoreError::Other(format!("sqlite checkpoint store {path}: {e}"))
}

impl SqliteCheckpointStore {
    /// A store in the database file `path` for consumer `consumer`; creates the table if missing.
    pub fn open(path: impl AsRef<Path>, consumer: &str) -> Result<Self, CheckpointStoreError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| sql_err(&shown, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| sql_err(&shown, e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sql_err(&shown, e))?;
        // The consumer's own connection may hold the write lock for a moment (its window's
        // transaction) when a phase checkpoint is written.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| sql_err(&shown, e))?;
        Self::create_table(&conn).map_err(|e| sql_err(&shown, e))?;
        Ok(SqliteCheckpointStore {
            conn: Mutex::new(conn),
            consumer: consumer.to_owned(),
            external: false,
            path: shown,
        })
    }

    /// The same store, but [`CheckpointStore::store`] does nothing: the consumer commits each
    /// checkpoint with its data through [`SqliteCheckpointStore::store_in`].
    pub fn committed_by_consumer(mut self) -> Self {
        self.external = true;
        self
    }

    /// Creates the checkpoint table if missing.
    pub fn create_table(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (consumer TEXT PRIMARY KEY, checkpoint TEXT NOT NULL)"
        ))
    }

    /// Writes `checkpoint` for `consumer` on `conn` — pass the consumer's open transaction so the
    /// checkpoint commits with its data.
    pub fn store_in(
        conn: &Connection,
        consumer: &str,
        checkpoint: &Checkpoint,
    ) -> rusqlite::Result<()> {
        conn.execute(
            &format!(
                "INSERT INTO {CHECKPOINT_TABLE} (consumer, checkpoint) VALUES (?1, ?2) \
                 ON CONFLICT(consumer) DO UPDATE SET checkpoint = excluded.checkpoint"
            ),
            (consumer, checkpoint.to_json()),
        )?;
        Ok(())
    }

    /// Reads the checkpoint of `consumer`; a corrupt one is an error naming the table and consumer.
    pub fn load_from(
        conn: &Connection,
        consumer: &str,
    ) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        let text: Option<String> = conn
            .query_row(
                &format!("SELECT checkpoint FROM {CHECKPOINT_TABLE} WHERE consumer = ?1"),
                [consumer],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| sql_err("(connection)", e))?;
        text.map(|t| {
            Checkpoint::from_json(&t).map_err(|e| {
                CheckpointStoreError::Other(format!(
                    "checkpoint of consumer {consumer} in table {CHECKPOINT_TABLE} is unusable: {e}; fix or delete the row"
                ))
            })
        })
        .transpose()
    }
}

impl CheckpointStore for SqliteCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Self::load_from(&conn, &self.consumer)
    }

    fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        if self.external {
            return Ok(());
        }
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Self::store_in(&conn, &self.consumer, checkpoint).map_err(|e| sql_err(&self.path, e))
    }

    fn store_blocks(&self) -> bool {
        // Committed by the consumer: storing does nothing.
        !self.external
    }

    fn store_transition(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        // Even when the consumer commits window checkpoints: a phase change has no data to commit
        // with, and every window before it is committed already.
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Self::store_in(&conn, &self.consumer, checkpoint).map_err(|e| sql_err(&self.path, e))
    }
}
