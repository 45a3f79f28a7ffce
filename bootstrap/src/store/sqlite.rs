//! The SQLite store: both stores of one bootstrap database in one file (WAL mode).
//!
//! Tables:
//!
//! | table | columns | notes |
//! |-------|---------|-------|
//! | `log_windows` | `scn` PK, `timestamp_ns`, `first_seq`, `events`, `bytes` | one row per window, heartbeats included |
//! | `log_events` | `seq` PK, `scn`, `source_id`, `bucket_hash`, `key_int`, `frame` | one row per data event |
//! | `snapshot` | `(source_id, row_id)` PK (`WITHOUT ROWID`), `key`, `key_int`, `bucket_hash`, `scn`, `deleted`, `frame` | unique `(source_id, key)`; pages read in `(source_id, row_id)` order |
//! | `meta` | `name` PK, `value` | `log_floor`, `next_seq`, `next_row`, `applied_scn`, `base_scn`, `seeded`, `seed_progress` |
//! | `sources`, `pins` | | source names; pins of bootstraps in progress |
//!
//! Writes go through one writer connection (a mutex); reads use a small pool of reader connections, so
//! the server reads while the producer and the applier write (WAL). Statements are prepared once and
//! cached; batches run inside one transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use databus_core::{Opcode, Scn, SourceId};
use databus_filters::{FilterSpec, SqlColumns};
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};

use super::{
    LogRow, LogStatus, LogStore, LogWindow, SeedProgress, SeedWrite, SnapshotQuery, SnapshotRow,
    SnapshotStatus, SnapshotStore, SourceInfo, StoredEvent, StoredSchema, TrimOutcome, WindowInfo,
    key_bytes, key_bytes_into, take_bytes,
};
use crate::BootstrapError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER, text TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_windows(
    scn INTEGER PRIMARY KEY, timestamp_ns INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    events INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_events(
    seq INTEGER PRIMARY KEY, scn INTEGER NOT NULL, source_id INTEGER NOT NULL,
    bucket_hash INTEGER NOT NULL, key_int INTEGER, frame BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot(
    source_id INTEGER NOT NULL, row_id INTEGER NOT NULL, key BLOB NOT NULL, key_int INTEGER,
    bucket_hash INTEGER NOT NULL, scn INTEGER NOT NULL, deleted INTEGER NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (source_id, row_id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS snapshot_key ON snapshot(source_id, key);
CREATE TABLE IF NOT EXISTS sources(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pins(start_scn INTEGER PRIMARY KEY, expires_ms INTEGER NOT NULL,
    deadline_ms INTEGER);
CREATE TABLE IF NOT EXISTS schemas(id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL, tbl TEXT NOT NULL,
    avro TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roles(role TEXT PRIMARY KEY, report TEXT NOT NULL) WITHOUT ROWID;
-- Counters kept by the writes themselves, so that a status is O(1) however large the log and the
-- snapshot grow (no count(*) or sum() over them). A database of an older version gets them counted
-- once, here.
INSERT INTO meta(name, value) SELECT 'snapshot_rows', (SELECT count(*) FROM snapshot)
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE name = 'snapshot_rows');
INSERT INTO meta(name, value) SELECT 'log_windows', (SELECT count(*) FROM log_windows)
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE name = 'log_windows');
INSERT INTO meta(name, value) SELECT 'log_events', (SELECT coalesce(sum(events), 0) FROM log_windows)
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE name = 'log_events');
INSERT INTO meta(name, value) SELECT 'log_bytes', (SELECT coalesce(sum(bytes), 0) FROM log_windows)
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE name = 'log_bytes');
CREATE TRIGGER IF NOT EXISTS snapshot_rows_insert AFTER INSERT ON snapshot BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'snapshot_rows'; END;
CREATE TRIGGER IF NOT EXISTS snapshot_rows_delete AFTER DELETE ON snapshot BEGIN
    UPDATE meta SET value = value - 1 WHERE name = 'snapshot_rows'; END;
CREATE TRIGGER IF NOT EXISTS log_windows_insert AFTER INSERT ON log_windows BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'log_windows';
    UPDATE meta SET value = value + NEW.events WHERE name = 'log_events';
    UPDATE meta SET value = value + NEW.bytes WHERE name = 'log_bytes'; END;
CREATE TRIGGER IF NOT EXISTS log_windows_delete AFTER DELETE ON log_windows BEGIN
    UPDATE meta SET value = value - 1 WHERE name = 'log_windows';
    UPDATE meta SET value = value - OLD.events WHERE name = 'log_events';
    UPDATE meta SET value = value - OLD.bytes WHERE name = 'log_bytes'; END;
";

const UPSERT_SNAPSHOT: &str = "INSERT INTO snapshot(source_id, key, key_int, bucket_hash, scn, deleted, frame, row_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT(source_id, key) DO UPDATE SET scn = excluded.scn, deleted = excluded.deleted, \
     frame = excluded.frame, key_int = excluded.key_int, bucket_hash = excluded.bucket_hash \
     WHERE excluded.scn >= snapshot.scn";

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `PRAGMA synchronous`: `true` = FULL (every commit survives a power loss), `false` = NORMAL (WAL
    /// default: a commit survives a process crash; the last ones may be lost on power loss).
    pub fsync_every_commit: bool,
    /// How long a writer waits for another process's lock.
    pub busy_timeout: Duration,
    /// Reader connections kept open.
    pub max_idle_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            fsync_every_commit: false,
            busy_timeout: Duration::from_secs(30),
            max_idle_readers: 4,
        }
    }
}

/// Both stores in one SQLite file. See the [module docs](self).
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> BootstrapError + '_ {
    move |e| BootstrapError::Storage(format!("{what}: {e}"))
}

fn scn_of(v: i64) -> Scn {
    Scn::new(v as u64)
}

fn sql_scn(scn: Scn) -> i64 {
    // SCNs above i64::MAX cannot be stored; they are refused on append.
    i64::try_from(scn.get()).unwrap_or(i64::MAX)
}

/// Unix milliseconds as SQLite stores them (`u64::MAX`, "never", saturates).
fn sql_ms(ms: u64) -> i64 {
    ms.min(i64::MAX as u64 / 2) as i64
}

fn get_meta(conn: &Connection, name: &str) -> Result<Option<i64>, BootstrapError> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([name], |r| r.get::<_, Option<i64>>(0))
                .optional()
        })
        .map(Option::flatten)
        .map_err(db_err("read meta"))
}

fn set_meta(conn: &Connection, name: &str, value: i64) -> Result<(), BootstrapError> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta(name, value) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![name, value]))
        .map(|_| ())
        .map_err(db_err("write meta"))
}

impl SqliteStore {
    /// Opens (creating if needed) the bootstrap database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, BootstrapError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// As [`SqliteStore::open`], with options.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, BootstrapError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                BootstrapError::Storage(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let conn = open_conn(&path, &options)?;
        retry_busy(options.busy_timeout, || conn.execute_batch(SCHEMA)).map_err(|e| {
            BootstrapError::Storage(format!(
                "cannot create the tables of {}: {e}; is it a bootstrap database?",
                path.display()
            ))
        })?;
        add_pin_deadlines(&conn, options.busy_timeout)
            .map_err(db_err("add the deadline column to the pins table"))?;
        Ok(SqliteStore {
            path,
            options,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, BootstrapError>,
    ) -> Result<T, BootstrapError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| BootstrapError::Storage("writer connection poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err("begin"))?;
        let out = f(&tx)?;
        tx.commit().map_err(db_err("commit"))?;
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BootstrapError>,
    ) -> Result<T, BootstrapError> {
        let conn = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path, &self.options)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < self.options.max_idle_readers {
                pool.push(conn);
            }
        }
        out
    }
}

fn open_conn(path: &Path, options: &SqliteOptions) -> Result<Connection, BootstrapError> {
    let conn = Connection::open(path).map_err(|e| {
        BootstrapError::Storage(format!(
            "cannot open bootstrap database {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(db_err("busy_timeout"))?;
    let sync = if options.fsync_every_commit {
        "FULL"
    } else {
        "NORMAL"
    };
    let setup = format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-65536; \
         PRAGMA temp_store=MEMORY;"
    );
    retry_busy(options.busy_timeout, || conn.execute_batch(&setup)).map_err(|e| {
        BootstrapError::Storage(format!(
            "cannot set up bootstrap database {}: {e}",
            path.display()
        ))
    })?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A database of an older version has pins without deadlines: adds the column (its pins get none).
fn add_pin_deadlines(conn: &Connection, timeout: Duration) -> Result<(), rusqlite::Error> {
    let has = |conn: &Connection| -> Result<bool, rusqlite::Error> {
        let mut s =
            conn.prepare("SELECT 1 FROM pragma_table_info('pins') WHERE name = 'deadline_ms'")?;
        s.exists([])
    };
    if has(conn)? {
        return Ok(());
    }
    match retry_busy(timeout, || {
        conn.execute_batch("ALTER TABLE pins ADD COLUMN deadline_ms INTEGER")
    }) {
        Ok(()) => Ok(()),
        // Another process added it meanwhile.
        Err(_) if has(conn)? => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `step` again while another connection holds the lock it needs, for up to `timeout`.
///
/// The busy timeout does not cover everything: switching a new file to WAL and creating its schema
/// while another process (the producer, applier and server of a split deployment start together) does
/// the same can fail with `SQLITE_BUSY`/`SQLITE_LOCKED` at once, without SQLite's busy handler being
/// called. Every setup step is idempotent, so retrying is safe.
fn retry_busy<T>(
    timeout: Duration,
    mut step: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

impl LogStore for SqliteStore {
    fn start_log(&self, floor: Scn) -> Result<(), BootstrapError> {
        self.write(|tx| {
            if get_meta(tx, "log_floor")?.is_none() {
                set_meta(tx, "log_floor", sql_scn(floor))?;
            }
            Ok(())
        })
    }

    fn append(&self, windows: &[LogWindow]) -> Result<(), BootstrapError> {
        if windows.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let Some(floor) = get_meta(tx, "log_floor")? else {
                return Err(BootstrapError::LogNotStarted);
            };
            let last: Option<i64> = tx
                .query_row("SELECT max(scn) FROM log_windows", [], |r| r.get(0))
                .map_err(db_err("read last window"))?;
            let mut last = scn_of(last.unwrap_or(floor));
            let mut seq = get_meta(tx, "next_seq")?.unwrap_or(1);
            let mut win = tx
                .prepare_cached(
                    "INSERT INTO log_windows(scn, timestamp_ns, first_seq, events, bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err("prepare"))?;
            let mut ev = tx
                .prepare_cached(
                    "INSERT INTO log_events(seq, scn, source_id, bucket_hash, key_int, frame) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_err("prepare"))?;
            for w in windows {
                if w.scn <= last || w.scn.get() > i64::MAX as u64 {
                    return Err(BootstrapError::ScnRegression { last, got: w.scn });
                }
                let first_seq = seq;
                let mut bytes = 0u64;
                for e in &w.events {
                    if e.scn != w.scn {
                        return Err(BootstrapError::Corrupt(format!(
                            "event of SCN {} inside window {}",
                            e.scn, w.scn
                        )));
                    }
                    bytes += e.frame.len() as u64;
                    ev.execute(params![
                        seq,
                        sql_scn(w.scn),
                        e.source.get(),
                        e.bucket_hash(),
                        e.key_int(),
                        e.frame
                    ])
                    .map_err(db_err("insert log event"))?;
                    seq += 1;
                }
                win.execute(params![
                    sql_scn(w.scn),
                    w.timestamp_ns as i64,
                    first_seq,
                    w.events.len() as i64,
                    bytes as i64
                ])
                .map_err(db_err("insert log window"))?;
                last = w.scn;
            }
            set_meta(tx, "next_seq", seq)?;
            Ok(())
        })
    }

    fn log_status(&self) -> Result<LogStatus, BootstrapError> {
        self.read(|c| {
            let floor = get_meta(c, "log_floor")?.map(scn_of);
            // Each edge alone, so that SQLite reads it off the primary key (one seek each); the
            // totals are the counters the triggers keep.
            let edge = |sql: &str| -> Result<Option<i64>, BootstrapError> {
                c.prepare_cached(sql)
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(db_err("read log status"))
            };
            let first = edge("SELECT min(scn) FROM log_windows")?;
            let last = edge("SELECT max(scn) FROM log_windows")?;
            let counter =
                |name| Ok::<_, BootstrapError>(get_meta(c, name)?.unwrap_or(0).max(0) as u64);
            Ok(LogStatus {
                floor_scn: floor,
                first_scn: first.map(scn_of),
                last_scn: last.map(scn_of).or(floor),
                windows: counter("log_windows")?,
                events: counter("log_events")?,
                bytes: counter("log_bytes")?,
            })
        })
    }

    fn windows(
        &self,
        after: Scn,
        upto: Scn,
        limit: usize,
    ) -> Result<Vec<WindowInfo>, BootstrapError> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT scn, timestamp_ns, first_seq, events, bytes FROM log_windows \
                     WHERE scn > ?1 AND scn <= ?2 ORDER BY scn LIMIT ?3",
                )
                .map_err(db_err("prepare"))?;
            let rows = s
                .query_map(params![sql_scn(after), sql_scn(upto), limit as i64], |r| {
                    Ok(WindowInfo {
                        scn: scn_of(r.get(0)?),
                        timestamp_ns: r.get::<_, i64>(1)? as u64,
                        first_seq: r.get::<_, i64>(2)? as u64,
                        events: r.get::<_, i64>(3)? as u32,
                        bytes: r.get::<_, i64>(4)? as u64,
                    })
                })
                .map_err(db_err("read windows"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("read windows"))
        })
    }

    fn events(
        &self,
        first_seq: u64,
        last_seq: u64,
        filter: &FilterSpec,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogRow>, BootstrapError> {
        let w = filter.to_sql(&SqlColumns::DEFAULT);
        let sql = format!(
            "SELECT seq, frame FROM log_events WHERE seq >= ? AND seq <= ? AND ({}) ORDER BY seq LIMIT ?",
            w.sql
        );
        self.read(|c| {
            let mut s = c.prepare_cached(&sql).map_err(db_err("prepare"))?;
            let mut values: Vec<i64> = vec![first_seq as i64, last_seq as i64];
            values.extend_from_slice(&w.params);
            values.push(limit.min(i64::MAX as usize) as i64);
            let rows = s
                .query_map(params_from_iter(values), |r| {
                    Ok(LogRow {
                        seq: r.get::<_, i64>(0)? as u64,
                        frame: r.get(1)?,
                    })
                })
                .map_err(db_err("read log events"))?;
            // Rows are stepped one at a time: those past the byte budget are never loaded.
            take_bytes(rows, max_bytes, |r| r.frame.len()).map_err(db_err("read log events"))
        })
    }

    fn trim(&self, upto: Scn, max_windows: usize) -> Result<TrimOutcome, BootstrapError> {
        self.write(|tx| {
            let bound: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT max(scn), max(first_seq + events) FROM (SELECT scn, first_seq, events \
                     FROM log_windows WHERE scn <= ?1 ORDER BY scn LIMIT ?2)",
                    params![sql_scn(upto), max_windows as i64],
                    |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
                )
                .map_err(db_err("find trim bound"))?;
            let Some((scn, end_seq)) = bound else {
                return Ok(TrimOutcome::default());
            };
            let events = tx
                .execute("DELETE FROM log_events WHERE seq < ?1", [end_seq])
                .map_err(db_err("trim log events"))?;
            let windows = tx
                .execute("DELETE FROM log_windows WHERE scn <= ?1", [scn])
                .map_err(db_err("trim log windows"))?;
            let floor = get_meta(tx, "log_floor")?.unwrap_or(0);
            set_meta(tx, "log_floor", floor.max(scn))?;
            Ok(TrimOutcome {
                windows: windows as u64,
                events: events as u64,
            })
        })
    }

    fn trim_point_for_bytes(&self, max_bytes: u64) -> Result<Option<Scn>, BootstrapError> {
        self.read(|c| {
            // The newest window whose own bytes plus every newer window's exceed the budget: it and
            // everything before it must go.
            c.query_row(
                "SELECT max(scn) FROM (SELECT scn, sum(bytes) OVER (ORDER BY scn DESC) AS tail \
                 FROM log_windows) WHERE tail > ?1",
                [max_bytes.min(i64::MAX as u64) as i64],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(scn_of))
            .map_err(db_err("size retention"))
        })
    }

    fn last_window_before(&self, timestamp_ns: u64) -> Result<Option<Scn>, BootstrapError> {
        self.read(|c| {
            // Windows are in commit order, so the SCN order is the time order.
            c.query_row(
                "SELECT max(scn) FROM log_windows WHERE timestamp_ns <= ?1",
                [timestamp_ns.min(i64::MAX as u64) as i64],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(scn_of))
            .map_err(db_err("age retention"))
        })
    }

    fn pin_until(
        &self,
        start_scn: Scn,
        expires_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), BootstrapError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO pins(start_scn, expires_ms, deadline_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(start_scn) DO UPDATE SET expires_ms = max(expires_ms, excluded.expires_ms), \
                 deadline_ms = coalesce(deadline_ms, excluded.deadline_ms)",
                params![
                    sql_scn(start_scn),
                    sql_ms(expires_ms),
                    sql_ms(deadline_ms)
                ],
            )
            .map(|_| ())
            .map_err(db_err("pin"))
        })
    }

    fn min_pin(&self, now_ms: u64) -> Result<Option<Scn>, BootstrapError> {
        self.write(|tx| {
            tx.execute("DELETE FROM pins WHERE expires_ms < ?1", [sql_ms(now_ms)])
                .map_err(db_err("drop expired pins"))?;
            tx.query_row(
                "SELECT min(start_scn) FROM pins WHERE coalesce(deadline_ms, ?1 + 1) > ?1",
                [sql_ms(now_ms)],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(scn_of))
            .map_err(db_err("read pins"))
        })
    }

    fn pins(&self, now_ms: u64) -> Result<Vec<(Scn, u64)>, BootstrapError> {
        self.write(|tx| {
            tx.execute("DELETE FROM pins WHERE expires_ms < ?1", [sql_ms(now_ms)])
                .map_err(db_err("drop expired pins"))?;
            let mut stmt = tx
                .prepare(
                    "SELECT start_scn, expires_ms FROM pins \
                     WHERE coalesce(deadline_ms, ?1 + 1) > ?1 ORDER BY start_scn",
                )
                .map_err(db_err("read pins"))?;
            let rows = stmt
                .query_map([sql_ms(now_ms)], |r| {
                    Ok((scn_of(r.get(0)?), r.get::<_, i64>(1)? as u64))
                })
                .map_err(db_err("read pins"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(db_err("read pins"))
        })
    }

    fn drop_pins(&self) -> Result<u64, BootstrapError> {
        self.write(|tx| {
            tx.execute("DELETE FROM pins", [])
                .map(|n| n as u64)
                .map_err(db_err("drop pins"))
        })
    }

    fn set_sources(&self, sources: &[SourceInfo]) -> Result<(), BootstrapError> {
        self.write(|tx| {
            for s in sources {
                tx.execute(
                    "INSERT OR REPLACE INTO sources(id, name) VALUES (?1, ?2)",
                    params![s.id.get(), s.name],
                )
                .map_err(db_err("write sources"))?;
            }
            Ok(())
        })
    }

    fn sources(&self) -> Result<Vec<SourceInfo>, BootstrapError> {
        self.read(|c| {
            let mut s = c
                .prepare_cached("SELECT id, name FROM sources ORDER BY id")
                .map_err(db_err("prepare"))?;
            let rows = s
                .query_map([], |r| {
                    Ok(SourceInfo {
                        id: SourceId::new(r.get(0)?),
                        name: r.get(1)?,
                    })
                })
                .map_err(db_err("read sources"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("read sources"))
        })
    }
}

/// The SCN of `source`'s truncate marker (its row with no key), if it has one.
fn marker_scn(tx: &Transaction<'_>, source: SourceId) -> Result<Option<Scn>, BootstrapError> {
    tx.query_row(
        "SELECT scn FROM snapshot WHERE source_id = ?1 AND key = ?2",
        params![source.get(), key_bytes(&databus_core::Key::None)],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|scn| scn.map(scn_of))
    .map_err(db_err("read truncate marker"))
}

/// Applies events in order: runs of row changes by key, each truncate by removing its source's rows
/// and storing it as the source's marker (see the module docs of `store`), schema changes skipped.
fn upsert_rows(tx: &Transaction<'_>, events: &[StoredEvent]) -> Result<(), BootstrapError> {
    let mut markers: std::collections::HashMap<SourceId, Option<Scn>> =
        std::collections::HashMap::new();
    for e in events.iter().filter(|e| e.opcode == Opcode::Truncate) {
        if let std::collections::hash_map::Entry::Vacant(v) = markers.entry(e.source) {
            v.insert(marker_scn(tx, e.source)?);
        }
    }
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        if !e.is_table_event() {
            continue;
        }
        upsert_run(tx, &events[start..i], &markers)?;
        start = i + 1;
        if e.opcode != Opcode::Truncate {
            continue;
        }
        if markers[&e.source].is_some_and(|m| e.scn < m) {
            continue; // an older truncate, applied again
        }
        tx.execute(
            "DELETE FROM snapshot WHERE source_id = ?1 AND scn <= ?2",
            params![e.source.get(), sql_scn(e.scn)],
        )
        .map_err(db_err("truncate snapshot rows"))?;
        upsert_run(tx, std::slice::from_ref(e), &markers)?;
        markers.insert(e.source, Some(e.scn));
    }
    upsert_run(tx, &events[start..], &markers)
}

/// Upserts a run of row changes (and truncate markers) by key; events older than their source's
/// truncate marker change nothing.
fn upsert_run(
    tx: &Transaction<'_>,
    events: &[StoredEvent],
    markers: &std::collections::HashMap<SourceId, Option<Scn>>,
) -> Result<(), BootstrapError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut known: std::collections::HashMap<SourceId, Option<Scn>> = markers.clone();
    let mut marker = |source: SourceId| -> Result<Option<Scn>, BootstrapError> {
        if let Some(m) = known.get(&source) {
            return Ok(*m);
        }
        let m = marker_scn(tx, source)?;
        known.insert(source, m);
        Ok(m)
    };
    // Keep only the last event per key of the batch: fewer statements, same result.
    let mut last: std::collections::HashMap<(SourceId, &databus_core::Key), usize> =
        std::collections::HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if e.opcode != Opcode::Truncate && marker(e.source)?.is_some_and(|m| e.scn < m) {
            continue;
        }
        let slot = last.entry((e.source, &e.key)).or_insert(i);
        if events[*slot].scn <= e.scn {
            *slot = i;
        }
    }
    let mut order: Vec<usize> = last.into_values().collect();
    order.sort_unstable();
    // Row ids are assigned here (a new key takes the next one; an updated key keeps its own).
    let mut next_row = get_meta(tx, "next_row")?.unwrap_or(1);
    let mut s = tx
        .prepare_cached(UPSERT_SNAPSHOT)
        .map_err(db_err("prepare"))?;
    for i in order {
        let e = &events[i];
        s.execute(params![
            e.source.get(),
            key_bytes(&e.key),
            e.key_int(),
            e.bucket_hash(),
            sql_scn(e.scn),
            !e.opcode.writes_row(),
            e.frame,
            next_row
        ])
        .map_err(db_err("upsert snapshot row"))?;
        next_row += 1;
    }
    set_meta(tx, "next_row", next_row)
}

/// Rows per multi-row `INSERT` of a fresh seed chunk (8 parameters each, far below SQLite's limit of
/// 32766 parameters per statement).
const INSERT_BATCH: usize = 128;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO snapshot(source_id, key, key_int, bucket_hash, scn, deleted, frame, row_id) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Plain inserts (no conflict handling) for keys known to be new: a fresh seed chunk. A key already
/// stored violates the unique `(source_id, key)` index and fails the transaction.
fn insert_rows(tx: &Transaction<'_>, events: &[StoredEvent]) -> Result<(), BootstrapError> {
    use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
    let mut next_row = get_meta(tx, "next_row")?.unwrap_or(1);
    // The batch's encoded keys, end to end in one buffer (no allocation per row).
    let mut keys = Vec::new();
    let mut ends = Vec::with_capacity(INSERT_BATCH);
    for batch in events.chunks(INSERT_BATCH) {
        let mut s = tx
            .prepare_cached(&insert_sql(batch.len()))
            .map_err(db_err("prepare"))?;
        keys.clear();
        ends.clear();
        for e in batch {
            key_bytes_into(&e.key, &mut keys);
            ends.push(keys.len());
        }
        let mut params: Vec<ToSqlOutput<'_>> = Vec::with_capacity(batch.len() * 8);
        let mut start = 0;
        for (e, &end) in batch.iter().zip(&ends) {
            let key = &keys[start..end];
            start = end;
            params.extend([
                ToSqlOutput::Owned(SqlValue::Integer(i64::from(e.source.get()))),
                ToSqlOutput::Borrowed(ValueRef::Blob(key)),
                ToSqlOutput::Owned(e.key_int().map_or(SqlValue::Null, SqlValue::Integer)),
                ToSqlOutput::Owned(SqlValue::Integer(e.bucket_hash())),
                ToSqlOutput::Owned(SqlValue::Integer(sql_scn(e.scn))),
                ToSqlOutput::Owned(SqlValue::Integer(i64::from(e.opcode == Opcode::Delete))),
                ToSqlOutput::Borrowed(ValueRef::Blob(&e.frame)),
                ToSqlOutput::Owned(SqlValue::Integer(next_row)),
            ]);
            next_row += 1;
        }
        s.execute(params_from_iter(params.iter()))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => BootstrapError::Storage(format!(
                    "a fresh seed chunk holds a key already in the snapshot ({e}); \
                     seed into a new file"
                )),
                _ => BootstrapError::Storage(format!("insert snapshot rows: {e}")),
            })?;
    }
    set_meta(tx, "next_row", next_row)
}

impl SnapshotStore for SqliteStore {
    fn snapshot_status(&self) -> Result<SnapshotStatus, BootstrapError> {
        self.read(|c| {
            // Kept by the triggers: no count over the snapshot.
            let rows = get_meta(c, "snapshot_rows")?.unwrap_or(0).max(0);
            Ok(SnapshotStatus {
                applied_scn: get_meta(c, "applied_scn")?.map(scn_of),
                base_scn: get_meta(c, "base_scn")?.map(scn_of),
                rows: rows as u64,
                seeded: get_meta(c, "seeded")?.unwrap_or(0) != 0,
            })
        })
    }

    fn init_base(&self, base: Scn) -> Result<(), BootstrapError> {
        self.write(|tx| {
            if get_meta(tx, "base_scn")?.is_none() {
                set_meta(tx, "base_scn", sql_scn(base))?;
            }
            Ok(())
        })
    }

    fn apply(&self, events: &[StoredEvent], applied_scn: Scn) -> Result<(), BootstrapError> {
        self.write(|tx| {
            upsert_rows(tx, events)?;
            let prev = get_meta(tx, "applied_scn")?.unwrap_or(0);
            set_meta(tx, "applied_scn", prev.max(sql_scn(applied_scn)))
        })
    }

    fn read(&self, q: &SnapshotQuery<'_>) -> Result<Vec<SnapshotRow>, BootstrapError> {
        let w = q.filter.to_sql(&SqlColumns::DEFAULT);
        let sql = format!(
            "SELECT row_id, scn, frame FROM snapshot WHERE source_id = ? AND row_id > ? AND scn > ? \
             {} AND ({}) ORDER BY row_id LIMIT ?",
            if q.tombstones { "" } else { "AND deleted = 0" },
            w.sql
        );
        SqliteStore::read(self, |c| {
            let mut s = c.prepare_cached(&sql).map_err(db_err("prepare"))?;
            let since = q.since.map_or(-1, sql_scn);
            let mut values: Vec<i64> = vec![
                i64::from(q.source.get()),
                q.after_row.min(i64::MAX as u64) as i64,
                since,
            ];
            values.extend_from_slice(&w.params);
            values.push(q.limit.min(i64::MAX as usize) as i64);
            let rows = s
                .query_map(params_from_iter(values), |r| {
                    Ok(SnapshotRow {
                        row_id: r.get::<_, i64>(0)? as u64,
                        scn: scn_of(r.get(1)?),
                        frame: r.get(2)?,
                    })
                })
                .map_err(db_err("read snapshot"))?;
            // Rows are stepped one at a time: those past the byte budget are never loaded.
            take_bytes(rows, q.max_bytes, |r| r.frame.len()).map_err(db_err("read snapshot"))
        })
    }

    fn seed_chunk(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
    ) -> Result<(), BootstrapError> {
        self.seed_chunk_with(events, progress, SeedWrite::Upsert)
    }

    fn seed_chunk_with(
        &self,
        events: &[StoredEvent],
        progress: &SeedProgress,
        write: SeedWrite,
    ) -> Result<(), BootstrapError> {
        let text = serde_json::to_string(progress)
            .map_err(|e| BootstrapError::Storage(format!("seed progress: {e}")))?;
        self.write(|tx| {
            match write {
                SeedWrite::Upsert => upsert_rows(tx, events)?,
                SeedWrite::Fresh => insert_rows(tx, events)?,
            }
            tx.execute(
                "INSERT OR REPLACE INTO meta(name, value, text) VALUES ('seed_progress', NULL, ?1)",
                [text],
            )
            .map(|_| ())
            .map_err(db_err("write seed progress"))
        })
    }

    fn seed_progress(&self) -> Result<Option<SeedProgress>, BootstrapError> {
        let text: Option<String> = SqliteStore::read(self, |c| {
            c.query_row(
                "SELECT text FROM meta WHERE name = 'seed_progress'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(db_err("read seed progress"))
        })?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                BootstrapError::Corrupt(format!("seed progress {t:?} does not parse: {e}"))
            })
        })
        .transpose()
    }

    fn finish_seed(&self, scn: Scn) -> Result<(), BootstrapError> {
        self.write(|tx| {
            let prev = get_meta(tx, "applied_scn")?.unwrap_or(0);
            set_meta(tx, "applied_scn", prev.max(sql_scn(scn)))?;
            set_meta(tx, "base_scn", sql_scn(scn))?;
            set_meta(tx, "seeded", 1)?;
            tx.execute("DELETE FROM meta WHERE name = 'seed_progress'", [])
                .map(|_| ())
                .map_err(db_err("clear seed progress"))
        })
    }

    fn put_schema(&self, schema: &StoredSchema) -> Result<(), BootstrapError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO schemas(id, source_id, tbl, avro) VALUES (?1, ?2, ?3, ?4)",
                params![
                    schema.id.get() as i64,
                    schema.source.get(),
                    schema.table,
                    schema.avro_json
                ],
            )
            .map(|_| ())
            .map_err(db_err("write schema"))
        })
    }

    fn schema(&self, id: databus_core::SchemaId) -> Result<Option<StoredSchema>, BootstrapError> {
        SqliteStore::read(self, |c| {
            c.query_row(
                "SELECT source_id, tbl, avro FROM schemas WHERE id = ?1",
                [id.get() as i64],
                |r| {
                    Ok(StoredSchema {
                        id,
                        source: SourceId::new(r.get(0)?),
                        table: r.get(1)?,
                        avro_json: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db_err("read schema"))
        })
    }
}

impl super::RoleStore for SqliteStore {
    fn put_role(&self, report: &super::RoleReport) -> Result<(), BootstrapError> {
        let text = serde_json::to_string(report)
            .map_err(|e| BootstrapError::Storage(format!("encode role report: {e}")))?;
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO roles(role, report) VALUES (?1, ?2)",
                params![report.role.name(), text],
            )
            .map_err(db_err("write role report"))?;
            Ok(())
        })
    }

    fn roles(&self) -> Result<Vec<super::RoleReport>, BootstrapError> {
        let texts: Vec<String> = self.read(|c| {
            let mut s = c
                .prepare_cached("SELECT report FROM roles")
                .map_err(db_err("prepare"))?;
            let rows = s
                .query_map([], |r| r.get(0))
                .map_err(db_err("read role reports"))?;
            rows.collect::<Result<_, _>>()
                .map_err(db_err("read role reports"))
        })?;
        let mut reports = texts
            .iter()
            .map(|t| {
                serde_json::from_str::<super::RoleReport>(t).map_err(|e| {
                    BootstrapError::Corrupt(format!("role report {t:?} does not parse: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        reports.sort_by_key(|r| r.role);
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA synchronous` of the writer connection: 1 = NORMAL, 2 = FULL.
    fn synchronous_of(store: &SqliteStore) -> i64 {
        let conn = store.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_durability_option_reaches_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let normal = SqliteStore::open(dir.path().join("a.sqlite")).unwrap();
        assert_eq!(synchronous_of(&normal), 1);
        let full = SqliteStore::open_with(
            dir.path().join("b.sqlite"),
            SqliteOptions {
                fsync_every_commit: true,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(synchronous_of(&full), 2);
    }

    /// A database written by the previous version (no counters, no triggers, pins without deadlines)
    /// opens with its totals counted once and its pins kept; the counters follow writes from then on.
    #[test]
    fn an_older_database_gets_its_counters_and_pin_deadlines() {
        use crate::store::conformance::event;
        use crate::store::{LogStore, LogWindow, SnapshotStore};
        use databus_core::Key;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.start_log(Scn::ZERO).unwrap();
            let e = |scn, key| event(scn, 1, Key::Int(key), Opcode::Upsert, b"payload");
            store
                .append(&[LogWindow {
                    scn: Scn::new(1),
                    timestamp_ns: 1,
                    events: vec![e(1, 1), e(1, 2)],
                }])
                .unwrap();
            store
                .apply(&[e(1, 1), e(1, 2), e(1, 3)], Scn::new(1))
                .unwrap();
            store.pin(Scn::new(1), 1_000).unwrap();
            let conn = store.writer.lock().unwrap();
            conn.execute_batch(
                "DROP TRIGGER snapshot_rows_insert; DROP TRIGGER snapshot_rows_delete; \
                 DROP TRIGGER log_windows_insert; DROP TRIGGER log_windows_delete; \
                 DELETE FROM meta WHERE name IN ('snapshot_rows', 'log_windows', 'log_events', 'log_bytes'); \
                 ALTER TABLE pins DROP COLUMN deadline_ms;",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.snapshot_status().unwrap().rows, 3);
        let log = store.log_status().unwrap();
        assert_eq!((log.windows, log.events), (1, 2));
        assert!(log.bytes > 0);
        assert_eq!(
            store.min_pin(10).unwrap(),
            Some(Scn::new(1)),
            "pins are kept"
        );
        store
            .apply(
                &[event(2, 1, Key::Int(4), Opcode::Upsert, b"p")],
                Scn::new(2),
            )
            .unwrap();
        assert_eq!(store.snapshot_status().unwrap().rows, 4);
        store.pin_until(Scn::new(2), 1_000, 50).unwrap();
        assert_eq!(store.pins(60).unwrap(), vec![(Scn::new(1), 1_000)]);
    }
}
