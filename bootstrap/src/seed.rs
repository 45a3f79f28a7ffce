//! Seeding: loads the captured tables' current rows into the SNAPSHOT store at an exact SCN, so a new
//! replica gets rows that never changed since the relay started.
//!
//! The source knowledge lives in the connector: a [`databus_connectors::Snapshot`] (for MariaDB,
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` at an exact binlog position; for PostgreSQL, a
//! temporary slot's exported snapshot positioned in the relay slot's stream) gives the SCN of the last
//! transaction it includes, each table's schema exactly as the stream gives it (same schema id) and
//! the rows in chunks, converted exactly as the stream converts row images. This module only
//! orchestrates:
//!
//! 1. open the snapshot; its SCN is the seed's;
//! 2. each table chunk by chunk: rows encoded exactly as the relay encodes them (the schema registry's
//!    encoder, `event_key`), each chunk stored with the seed's progress (the connector's chunk cursor)
//!    in one transaction, a progress tick after each;
//! 3. when every table is loaded, `finish_seed(scn)`: the snapshot is at that SCN and the producer
//!    starts the log right after it.
//!
//! A crashed seed resumes after the last chunk stored, under a new consistent snapshot at `S' >= S`;
//! rows read from then on carry `S'`. The seed still finishes at the first snapshot's `S`, so the log
//! replays every change after `S`: a row stored at `S` then changed is corrected by the applier, and
//! rows read at `S'` are never overwritten by older log events (the greater SCN wins).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databus_connectors::mysql::MySqlConfig;
use databus_connectors::postgres::{PgConfig, PgSnapshotSource};
use databus_connectors::{
    AnySnapshot, AnySnapshotSource, ChunkCursor, ConnectorConfig, ConnectorError, Secret, Snapshot,
    SnapshotSource, TableName,
};
use databus_core::{EventBuilder, Opcode, Scn, SourceId};
use databus_serde_formats::model::Row;
use databus_serde_formats::{RegisteredSchema, SchemaRegistry, TableSchema, event_key};
use serde::{Deserialize, Serialize};

use crate::BootstrapError;
use crate::store::{BootstrapStore, SeedProgress, SeedWrite, StoredEvent};

/// One table to seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedTable {
    /// Its logical source id in the relay.
    pub source: SourceId,
    /// Database name.
    pub database: String,
    /// Table name.
    pub table: String,
}

/// What to seed and how.
#[derive(Debug, Clone)]
pub struct SeedSettings {
    /// The source: `mysql://user@host:port/` (MariaDB) or
    /// `postgres://user@host:port/database[?slot=databus&publication=databus]` (PostgreSQL: the
    /// relay's slot and publication, which must exist). See [`snapshot_source`].
    pub url: String,
    /// The password of `url`'s user, when it is not in `url` (`[seed] password_env`/`password_file`).
    pub password: Option<databus_connectors::Secret>,
    /// The tables, in the order they are loaded.
    pub tables: Vec<SeedTable>,
    /// Rows per chunk (one store transaction each).
    pub chunk_rows: usize,
}

/// What a seed did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// The SCN the snapshot store is at.
    pub scn: Scn,
    /// Rows loaded by this run.
    pub rows: u64,
    /// Whether this run resumed an interrupted seed.
    pub resumed: bool,
    /// Tables seeded.
    pub tables: usize,
    /// How long this run took (connecting included).
    pub elapsed: Duration,
}

impl SeedReport {
    /// Rows per second of this run.
    pub fn rows_per_sec(&self) -> u64 {
        rate(self.rows, self.elapsed)
    }
}

impl std::fmt::Display for SeedReport {
    /// `seeded 300000 rows from 2 tables in 2.4 s (125000 rows/s), snapshot at SCN 1042`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seeded {} rows from {} table{} in {:.1} s ({} rows/s){}, snapshot at SCN {}",
            self.rows,
            self.tables,
            if self.tables == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
            self.rows_per_sec(),
            if self.resumed { " (resumed)" } else { "" },
            self.scn
        )
    }
}

fn rate(rows: u64, elapsed: Duration) -> u64 {
    (rows as f64 / elapsed.as_secs_f64().max(1e-6)) as u64
}

/// Progress of a seed, given to the caller after every chunk stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedTick<'a> {
    /// The table being loaded.
    pub table: &'a SeedTable,
    /// Its position in the list (0-based).
    pub table_index: usize,
    /// How many tables the seed loads.
    pub tables: usize,
    /// Rows stored by this run so far.
    pub rows: u64,
    /// Rows stored by every run of this seed so far (an interrupted run's rows included).
    pub rows_done: u64,
    /// Rows of all the tables, estimated before the first chunk (MariaDB: `information_schema.TABLES`,
    /// InnoDB's estimate; PostgreSQL: `pg_class.reltuples`); never less than `rows_done`.
    pub rows_estimate: u64,
    /// Rows per second of this run so far.
    pub rows_per_sec: u64,
    /// Time since this run started.
    pub elapsed: Duration,
}

impl SeedTick<'_> {
    /// Estimated time left at this run's rate (`None` before any row).
    pub fn eta(&self) -> Option<Duration> {
        let left = self.rows_estimate.saturating_sub(self.rows_done);
        (self.rows_per_sec > 0)
            .then(|| Duration::from_secs_f64(left as f64 / self.rows_per_sec as f64))
    }
}

impl std::fmt::Display for SeedTick<'_> {
    /// `shop.orders (table 1/2): 120000/300000 rows (40%), 95000 rows/s, ETA 2s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = self
            .rows_done
            .saturating_mul(100)
            .checked_div(self.rows_estimate)
            .map_or(100, |p| p.min(100));
        write!(
            f,
            "{}.{} (table {}/{}): {}/{} rows ({pct}%), {} rows/s, ETA ",
            self.table.database,
            self.table.table,
            self.table_index + 1,
            self.tables,
            self.rows_done,
            self.rows_estimate,
            self.rows_per_sec,
        )?;
        match self.eta() {
            Some(eta) => write!(f, "{}s", eta.as_secs_f64().ceil() as u64),
            None => f.write_str("?"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Token {
    /// Index of the table being loaded.
    table: usize,
    /// Where the next chunk of it starts (the connector's cursor: for MariaDB the last primary key
    /// loaded, as earlier versions stored it).
    after: Option<ChunkCursor>,
}

fn seed_error(e: ConnectorError) -> BootstrapError {
    BootstrapError::Seed(e.to_string())
}

fn table_name(t: &SeedTable) -> TableName {
    TableName::new(&t.database, &t.table)
}

/// The snapshot side of the source at `url`, reading `tables`:
///
/// - `mysql://user@host:port/`: a MariaDB (or MySQL) server;
/// - `postgres://user@host:port/database` (or `postgresql://`), with optional query parameters
///   `slot` and `publication` (both default to `databus`, the connector's defaults): a PostgreSQL
///   database. The snapshot is positioned in the stream of that slot (the relay's), so the slot and
///   the publication must exist, and the user needs `REPLICATION` (see docs/connectors.md).
///
/// The password comes from `password` (`[seed] password_env`/`password_file`), never from the URL.
pub fn snapshot_source(
    url: &str,
    password: Option<&Secret>,
    tables: &[SeedTable],
) -> Result<AnySnapshotSource, BootstrapError> {
    let bad = |e: ConnectorError| BootstrapError::Config(format!("seed url: {e}"));
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config = pg_config(url, password, tables)?;
        return PgSnapshotSource::new(&config)
            .map(AnySnapshotSource::Postgres)
            .map_err(bad);
    }
    // Only the connection settings of the config matter to a snapshot.
    let mut mysql = MySqlConfig::new(url, 1);
    mysql.password = password.cloned();
    ConnectorConfig::MariaDb(mysql)
        .snapshot_source()
        .map_err(bad)
}

/// The PostgreSQL connector settings of a `postgres://user@host:port/database?slot=…&publication=…`
/// seed URL.
fn pg_config(
    url: &str,
    password: Option<&Secret>,
    tables: &[SeedTable],
) -> Result<PgConfig, BootstrapError> {
    let bad = |m: &str| {
        BootstrapError::Config(format!(
            "seed url {}: {m} (the form is postgres://user@host:port/database?slot=databus&publication=databus)",
            databus_connectors::redact_url(url)
        ))
    };
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("no scheme"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (database, query) = path.split_once('?').unwrap_or((path, ""));
    let (user, host_port) = authority
        .rsplit_once('@')
        .ok_or_else(|| bad("names no user"))?;
    if user.contains(':') {
        return Err(bad(
            "contains a password; remove it and give password_env or password_file",
        ));
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: [::1] or [::1]:5432.
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, 5432),
            Some((host, rest)) => (
                host,
                port(rest.strip_prefix(':').ok_or_else(|| bad("bad port"))?)?,
            ),
            None => return Err(bad("an IPv6 host needs its closing ]")),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, p)) => (host, port(p)?),
            None => (host_port, 5432),
        },
    };
    if user.is_empty() || host.is_empty() || database.is_empty() {
        return Err(bad("user, host and database are required"));
    }
    let mut config = PgConfig::new(host, port, user, "", database);
    config.password = password.cloned();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "slot" => config.slot = v.into_owned(),
            "publication" => config.publication = v.into_owned(),
            other => return Err(bad(&format!("unknown parameter {other:?}"))),
        }
    }
    config.tables = tables
        .iter()
        .map(|t| format!("{}.{}", t.database, t.table))
        .collect();
    Ok(config)
}

async fn open_snapshot(
    url: &str,
    password: Option<&Secret>,
    tables: &[SeedTable],
) -> Result<AnySnapshot, BootstrapError> {
    snapshot_source(url, password, tables)?
        .open()
        .await
        .map_err(seed_error)
}

/// A table being read: what the encoder needs to turn its rows into events.
struct TableCtx {
    index: usize,
    source: SourceId,
    name: String,
    schema: Arc<TableSchema>,
    registered: RegisteredSchema,
}

/// A chunk read from the source (rows converted by the connector), on its way to the encoder.
struct RawChunk {
    table: Arc<TableCtx>,
    rows: Vec<Row>,
    /// The resume token once this chunk is stored.
    token: Token,
}

/// A chunk encoded, on its way to the store.
struct EncodedChunk {
    table_index: usize,
    events: Vec<StoredEvent>,
    progress: SeedProgress,
}

/// Chunks in flight between two stages (read -> encode -> store): each stage works on its own chunk
/// while the next waits in the channel.
const CHANNEL_CHUNKS: usize = 1;

/// Reads every table from the consistent snapshot, chunk by chunk, sending each chunk to the
/// encoder; ends the snapshot when done (or when the encoder went away).
async fn read_tables(
    mut snapshot: AnySnapshot,
    store: Arc<dyn BootstrapStore>,
    tables: Vec<SeedTable>,
    chunk: usize,
    mut token: Token,
    tx: tokio::sync::mpsc::Sender<RawChunk>,
) -> Result<(), BootstrapError> {
    let registry = SchemaRegistry::in_memory();
    while token.table < tables.len() {
        let t = &tables[token.table];
        let name = table_name(t);
        let schema = snapshot.schema(&name).await.map_err(seed_error)?;
        let registered = registry.register(&schema).map_err(|e| {
            BootstrapError::Seed(format!("schema of {}.{}: {e}", t.database, t.table))
        })?;
        let stored = crate::store::StoredSchema {
            id: registered.id,
            source: t.source,
            table: format!("{}.{}", t.database, t.table),
            avro_json: registered.avro_json.to_string(),
        };
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.put_schema(&stored))
            .await
            .map_err(|e| BootstrapError::Storage(format!("seed schema task failed: {e}")))??;
        let ctx = Arc::new(TableCtx {
            index: token.table,
            source: t.source,
            name: name.to_string(),
            schema,
            registered,
        });
        loop {
            let read = snapshot
                .read_chunk(&name, token.after.as_ref(), chunk)
                .await
                .map_err(seed_error)?;
            let done = read.next.is_none();
            if done {
                token.table += 1;
                token.after = None;
            } else {
                token.after = read.next;
            }
            let raw = RawChunk {
                table: ctx.clone(),
                rows: read.rows,
                token: token.clone(),
            };
            if tx.send(raw).await.is_err() {
                // The encoder stopped; its error is reported by the caller.
                return Ok(());
            }
            if done {
                break;
            }
        }
    }
    snapshot.close().await.map_err(seed_error)
}

/// Turns raw rows into stored events, exactly as the relay encodes them (runs on its own thread).
fn encode_chunks(
    mut rx: tokio::sync::mpsc::Receiver<RawChunk>,
    tx: tokio::sync::mpsc::Sender<Result<EncodedChunk, BootstrapError>>,
    scn: Scn,
    first_scn: Scn,
) {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut payload = Vec::new();
    while let Some(raw) = rx.blocking_recv() {
        let encoded = encode_chunk(raw, scn, first_scn, now_ns, &mut payload);
        let failed = encoded.is_err();
        if tx.blocking_send(encoded).is_err() || failed {
            return;
        }
    }
}

fn encode_chunk(
    raw: RawChunk,
    scn: Scn,
    first_scn: Scn,
    now_ns: u64,
    payload: &mut Vec<u8>,
) -> Result<EncodedChunk, BootstrapError> {
    let t = &raw.table;
    let mut events = Vec::with_capacity(raw.rows.len());
    for values in raw.rows {
        let key = event_key(&t.schema, &values)
            .map_err(|e| BootstrapError::Seed(format!("key of a row of {}: {e}", t.name)))?;
        payload.clear();
        t.registered
            .encoder
            .encode(&values, payload)
            .map_err(|e| BootstrapError::Seed(format!("encode a row of {}: {e}", t.name)))?;
        let mut frame = Vec::with_capacity(payload.len() + 64);
        EventBuilder::new(scn, Opcode::Upsert)
            .source(t.source)
            .timestamp_ns(now_ns)
            .schema(t.registered.id)
            .key(key.as_ref())
            .payload(payload)
            .write_to_vec(&mut frame);
        events.push(StoredEvent {
            scn,
            source: t.source,
            opcode: Opcode::Upsert,
            key,
            frame,
        });
    }
    Ok(EncodedChunk {
        table_index: t.index,
        events,
        progress: SeedProgress {
            scn: first_scn,
            token: serde_json::to_string(&raw.token)
                .map_err(|e| BootstrapError::Seed(e.to_string()))?,
        },
    })
}

async fn join<T>(
    what: &str,
    handle: tokio::task::JoinHandle<Result<T, BootstrapError>>,
) -> Result<T, BootstrapError> {
    handle
        .await
        .map_err(|e| BootstrapError::Storage(format!("seed {what} task failed: {e}")))?
}

/// Seeds `store`, resuming an interrupted seed. `tick` is called after every chunk stored.
///
/// Three stages overlap, each on its own chunk: the source is read (this task's runtime), rows are
/// converted and Avro-encoded on a dedicated thread, and chunks are stored on the blocking pool, one
/// store transaction at a time and in order. A first run into an empty snapshot stores with
/// [`SeedWrite::Fresh`] (plain inserts); a resumed run upserts.
pub async fn seed(
    store: Arc<dyn BootstrapStore>,
    settings: &SeedSettings,
    mut tick: impl FnMut(SeedTick<'_>),
) -> Result<SeedReport, BootstrapError> {
    let started = Instant::now();
    let previous = store.seed_progress()?;
    let mut snapshot =
        open_snapshot(&settings.url, settings.password.as_ref(), &settings.tables).await?;
    let snapshot_scn = snapshot.position().scn;
    let (first_scn, token) = match &previous {
        Some(p) => {
            let token: Token = serde_json::from_str(&p.token)
                .map_err(|e| BootstrapError::Corrupt(format!("seed progress token: {e}")))?;
            (p.scn, token)
        }
        None => (snapshot_scn, Token::default()),
    };
    let rows_before = store.snapshot_status()?.rows;
    let write = if previous.is_none() && rows_before == 0 {
        SeedWrite::Fresh
    } else {
        SeedWrite::Upsert
    };
    let mut rows_estimate = 0u64;
    for t in &settings.tables {
        rows_estimate += snapshot
            .estimate_rows(&table_name(t))
            .await
            .map_err(seed_error)?;
    }
    // The server needs the sources; the producer later records the relay's names for them.
    let known = store.sources()?;
    let missing: Vec<crate::store::SourceInfo> = settings
        .tables
        .iter()
        .filter(|t| !known.iter().any(|k| k.id == t.source))
        .map(|t| crate::store::SourceInfo {
            id: t.source,
            name: t.table.clone(),
        })
        .collect();
    store.set_sources(&missing)?;
    let chunk = settings.chunk_rows.max(1);
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let (enc_tx, mut enc_rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let reader = tokio::spawn(read_tables(
        snapshot,
        store.clone(),
        settings.tables.clone(),
        chunk,
        token,
        raw_tx,
    ));
    let encoder = std::thread::Builder::new()
        .name("seed-encoder".into())
        .spawn(move || encode_chunks(raw_rx, enc_tx, snapshot_scn, first_scn))
        .map_err(|e| BootstrapError::Io {
            what: "cannot start the seed encoder thread".into(),
            source: e,
        })?;
    let run_started = Instant::now();
    let mut rows_stored = 0u64;
    // The chunk being stored: its write, its table, its rows.
    type Write = (
        tokio::task::JoinHandle<Result<(), BootstrapError>>,
        usize,
        u64,
    );
    let mut writing: Option<Write> = None;
    let mut failure = None;
    loop {
        let next = enc_rx.recv().await;
        // Store chunks in order: the previous one is stored (and reported) before the next starts.
        let mut stored = None;
        if let Some((handle, table_index, rows)) = writing.take() {
            stored = Some((table_index, rows));
            join("writer", handle).await?;
            rows_stored += rows;
            crate::metrics::seeded(rows);
        }
        // A table ending exactly at a chunk boundary ends with an empty chunk (stored: it moves
        // the resume point to the next table), which is no progress to report.
        if let Some((table_index, _)) = stored.take().filter(|(_, rows)| *rows > 0) {
            let elapsed = run_started.elapsed();
            let rows_done = rows_before + rows_stored;
            tick(SeedTick {
                table: &settings.tables[table_index],
                table_index,
                tables: settings.tables.len(),
                rows: rows_stored,
                rows_done,
                rows_estimate: rows_estimate.max(rows_done),
                rows_per_sec: rate(rows_stored, elapsed),
                elapsed,
            });
        }
        match next {
            Some(Ok(encoded)) => {
                let s = store.clone();
                let rows = encoded.events.len() as u64;
                writing = Some((
                    tokio::task::spawn_blocking(move || {
                        s.seed_chunk_with(&encoded.events, &encoded.progress, write)
                    }),
                    encoded.table_index,
                    rows,
                ));
            }
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            None => break,
        }
    }
    drop(enc_rx);
    let read = join("reader", reader).await;
    let _ = encoder.join();
    if let Some(e) = failure {
        return Err(e);
    }
    read?;
    store.finish_seed(first_scn)?;
    Ok(SeedReport {
        scn: first_scn,
        rows: rows_stored,
        resumed: previous.is_some(),
        tables: settings.tables.len(),
        elapsed: started.elapsed(),
    })
}

/// Every row of `table` now, as `(key, schema id, Avro payload)` in primary-key order, encoded exactly
/// as the seed encodes it — for checking a replica against its source.
pub async fn dump_table(
    url: &str,
    password: Option<&Secret>,
    table: &SeedTable,
) -> Result<Vec<(databus_core::Key, databus_core::SchemaId, Vec<u8>)>, BootstrapError> {
    let mut snapshot = open_snapshot(url, password, std::slice::from_ref(table)).await?;
    let name = table_name(table);
    let schema = snapshot.schema(&name).await.map_err(seed_error)?;
    let registered = SchemaRegistry::in_memory()
        .register(&schema)
        .map_err(|e| BootstrapError::Seed(e.to_string()))?;
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let chunk = snapshot
            .read_chunk(&name, from.as_ref(), 10_000)
            .await
            .map_err(seed_error)?;
        for values in chunk.rows {
            let key =
                event_key(&schema, &values).map_err(|e| BootstrapError::Seed(e.to_string()))?;
            let mut payload = Vec::new();
            registered
                .encoder
                .encode(&values, &mut payload)
                .map_err(|e| BootstrapError::Seed(e.to_string()))?;
            out.push((key, registered.id, payload));
        }
        match chunk.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    snapshot.close().await.map_err(seed_error)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<SeedTable> {
        vec![SeedTable {
            source: SourceId::new(1),
            database: "public".into(),
            table: "orders".into(),
        }]
    }

    #[test]
    fn postgres_urls() {
        let pw = Secret::new("pw");
        let c = pg_config(
            "postgres://seed@db.example:6543/shop?slot=relay_slot&publication=pub1",
            Some(&pw),
            &tables(),
        )
        .unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.database.as_str()
            ),
            ("db.example", 6543, "seed", "shop")
        );
        assert_eq!(
            (c.slot.as_str(), c.publication.as_str()),
            ("relay_slot", "pub1")
        );
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(c.tables, vec!["public.orders".to_owned()]);
        let c = pg_config("postgresql://seed@[::1]/shop", None, &tables()).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.slot.as_str()),
            ("::1", 5432, "databus")
        );
        let c = pg_config("postgres://seed@[::1]:6000/shop", None, &tables()).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 6000));
        let c = pg_config("postgres://seed@db/shop", None, &tables()).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("db", 5432));
        for (url, why) in [
            ("postgres://seed:inline@db/shop", "contains a password"),
            ("postgres://db/shop", "names no user"),
            ("postgres://seed@db:x/shop", "bad port"),
            ("postgres://seed@db/", "required"),
            (
                "postgres://seed@db/shop?sslmode=require",
                "unknown parameter",
            ),
        ] {
            let e = pg_config(url, None, &tables()).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("inline"), "{e}");
        }
        assert!(matches!(
            snapshot_source("postgres://seed@db/shop", None, &tables()).unwrap(),
            AnySnapshotSource::Postgres(_)
        ));
        assert!(matches!(
            snapshot_source("mysql://seed@db:3306/", None, &tables()).unwrap(),
            AnySnapshotSource::MariaDb(_)
        ));
    }
}
