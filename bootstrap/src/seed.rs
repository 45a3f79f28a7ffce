//! Seeding: loads the captured tables' current rows into the SNAPSHOT store at an exact SCN, so a new
//! replica gets rows that never changed since the relay started. MariaDB only.
//!
//! 1. `START TRANSACTION WITH CONSISTENT SNAPSHOT` (InnoDB, lock-free), then
//!    `SHOW STATUS LIKE 'binlog_snapshot_%'` gives the binlog file and position the snapshot sees;
//!    `BINLOG_GTID_POS(file, pos)` maps it to a GTID, whose sequence number is the SCN (the connector's
//!    SCN, see `databus_connectors::mysql`).
//! 2. Each table is read in primary-key order, in chunks (`WHERE (pk) > (last) ORDER BY pk LIMIT n`),
//!    rows encoded exactly as the relay encodes them (the schema registry's encoder, `event_key`), and
//!    each chunk stored with the seed's progress in one transaction.
//! 3. When every table is loaded, `finish_seed(scn)`: the snapshot is at that SCN and the producer
//!    starts the log right after it.
//!
//! A crashed seed resumes after the last chunk stored, under a new consistent snapshot at `S' >= S`;
//! rows read from then on carry `S'`. The seed still finishes at the first snapshot's `S`, so the log
//! replays every change after `S`: a row stored at `S` then changed is corrected by the applier, and
//! rows read at `S'` are never overwritten by older log events (the greater SCN wins).
//!
//! The table schema is derived from `information_schema` the way the binlog connector derives it from
//! table maps (same column types, lengths, nullability and primary key), so the schema id matches the
//! relay's. Unsupported: MariaDB JSON columns are seeded as text (the relay sees them as JSON, so the
//! schema id differs for such tables), spatial types.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databus_core::{EventBuilder, Opcode, Scn, SourceId};
use databus_serde_formats::{
    Column, ColumnType, RegisteredSchema, SchemaRegistry, TableSchema, Value, event_key,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
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
    /// `mysql://user:password@host:port/`.
    pub url: String,
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
    /// Rows of all the tables, estimated before the first chunk (`information_schema.TABLES`,
    /// InnoDB's estimate); never less than `rows_done`.
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
    /// The last primary key loaded in it.
    after: Option<Vec<serde_json::Value>>,
}

fn err(what: &str) -> impl Fn(mysql_async::Error) -> BootstrapError + '_ {
    move |e| BootstrapError::Seed(format!("{what}: {e}"))
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Derives a table's schema from `information_schema`, as the binlog connector derives it.
async fn table_schema(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<TableSchema, BootstrapError> {
    type ColRow = (
        String,
        String,
        String,
        String,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        String,
    );
    let rows: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH, \
             CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, \
             COALESCE(CHARACTER_SET_NAME, '') \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(err("read information_schema.COLUMNS"))?;
    if rows.is_empty() {
        return Err(BootstrapError::Seed(format!(
            "table {db}.{table} does not exist or is not visible to the seed user; grant SELECT on it"
        )));
    }
    let mut columns = Vec::new();
    for (
        name,
        data_type,
        column_type,
        nullable,
        max_chars,
        octets,
        precision,
        scale,
        fsp,
        charset,
    ) in rows
    {
        let unsigned = column_type.contains("unsigned");
        let binary = charset.is_empty() || charset == "binary";
        let text = |limit: Option<u64>| {
            if binary {
                ColumnType::Bytes {
                    max_bytes: limit.map(|l| l as u32),
                }
            } else {
                ColumnType::Text {
                    max_chars: limit.map(|l| l as u32),
                }
            }
        };
        let ty = match data_type.as_str() {
            "tinyint" => ColumnType::TinyInt { unsigned },
            "smallint" => ColumnType::SmallInt { unsigned },
            "mediumint" => ColumnType::MediumInt { unsigned },
            "int" => ColumnType::Int { unsigned },
            "bigint" => ColumnType::BigInt { unsigned },
            "decimal" => ColumnType::Decimal {
                precision: precision.unwrap_or(10) as u8,
                scale: scale.unwrap_or(0) as u8,
            },
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time {
                fsp: fsp.unwrap_or(0) as u8,
            },
            "datetime" => ColumnType::DateTime {
                fsp: fsp.unwrap_or(0) as u8,
            },
            "timestamp" => ColumnType::Timestamp {
                fsp: fsp.unwrap_or(0) as u8,
            },
            "year" => ColumnType::Year,
            "varchar" | "char" => text(max_chars),
            "varbinary" | "binary" => ColumnType::Bytes {
                max_bytes: octets.map(|l| l as u32),
            },
            "tinytext" | "text" | "mediumtext" | "longtext" => text(None),
            "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnType::Bytes { max_bytes: None }
            }
            "enum" | "set" => {
                let inner = column_type
                    .strip_prefix(&format!("{data_type}("))
                    .and_then(|s| s.strip_suffix(')'))
                    .unwrap_or("");
                let values: Vec<String> = inner
                    .split("','")
                    .map(|v| v.trim_matches('\'').replace("''", "'"))
                    .collect();
                if data_type == "enum" {
                    ColumnType::Enum { values }
                } else {
                    ColumnType::Set { members: values }
                }
            }
            "bit" => ColumnType::Bit {
                width: precision.unwrap_or(1) as u8,
            },
            "json" => ColumnType::Json,
            other => {
                return Err(BootstrapError::Seed(format!(
                    "column {db}.{table}.{name} has type {other}, which seeding does not support"
                )));
            }
        };
        columns.push(Column {
            name,
            column_type: ty,
            nullable: nullable == "YES",
        });
    }
    let pk: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? \
             AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(err("read information_schema.KEY_COLUMN_USAGE"))?;
    if pk.is_empty() {
        return Err(BootstrapError::Seed(format!(
            "table {db}.{table} has no primary key; seeding reads in primary-key order (add one)"
        )));
    }
    let primary_key = pk
        .iter()
        .map(|n| columns.iter().position(|c| &c.name == n))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            BootstrapError::Seed(format!("primary key of {db}.{table} names unknown columns"))
        })?;
    Ok(TableSchema {
        database: db.into(),
        table: table.into(),
        columns,
        primary_key,
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Converts one binary-protocol value to the model value of `ty`.
fn convert(ty: &ColumnType, v: mysql_async::Value, col: &str) -> Result<Value, BootstrapError> {
    use mysql_async::Value as M;
    let bad =
        |v: &M| BootstrapError::Seed(format!("column {col}: unexpected value {v:?} for {ty:?}"));
    let text = |b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| BootstrapError::Seed(format!("column {col}: not UTF-8")))
    };
    Ok(match (ty, v) {
        (_, M::NULL) => Value::Null,
        (
            ColumnType::TinyInt { unsigned }
            | ColumnType::SmallInt { unsigned }
            | ColumnType::MediumInt { unsigned }
            | ColumnType::Int { unsigned }
            | ColumnType::BigInt { unsigned },
            v,
        ) => match (v, unsigned) {
            (M::Int(i), false) => Value::Int(i),
            (M::Int(i), true) => Value::UInt(i as u64),
            (M::UInt(u), true) => Value::UInt(u),
            (M::UInt(u), false) => Value::Int(u as i64),
            (v, _) => return Err(bad(&v)),
        },
        (ColumnType::Year, M::Int(i)) => Value::Int(i),
        (ColumnType::Year, M::UInt(u)) => Value::Int(u as i64),
        (ColumnType::Decimal { .. }, M::Bytes(b)) => Value::Decimal(text(b)?),
        (ColumnType::Float, M::Float(f)) => Value::Float(f),
        (ColumnType::Float, M::Double(f)) => Value::Float(f as f32),
        (ColumnType::Double, M::Double(f)) => Value::Double(f),
        (ColumnType::Double, M::Float(f)) => Value::Double(f64::from(f)),
        (ColumnType::Date, M::Date(y, m, d, ..)) => Value::Date {
            year: y,
            month: m,
            day: d,
        },
        (ColumnType::DateTime { .. }, M::Date(year, month, day, hour, minute, second, micros)) => {
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            }
        }
        (ColumnType::Timestamp { .. }, M::Date(y, mo, d, h, mi, s, us)) => {
            // The session runs in UTC (set in `seed`).
            if y == 0 {
                Value::Timestamp(0)
            } else {
                let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
                let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                Value::Timestamp(secs * 1_000_000 + i64::from(us))
            }
        }
        (ColumnType::Time { .. }, M::Time(negative, days, h, m, s, us)) => Value::Time {
            negative,
            micros: ((u64::from(days) * 24 + u64::from(h)) * 3600
                + u64::from(m) * 60
                + u64::from(s))
                * 1_000_000
                + u64::from(us),
        },
        (ColumnType::Text { .. }, M::Bytes(b)) => Value::Text(text(b)?),
        (ColumnType::Json, M::Bytes(b)) => Value::Json(text(b)?),
        (ColumnType::Bytes { .. }, M::Bytes(b)) => Value::Bytes(b),
        (ColumnType::Enum { values }, M::Bytes(b)) => {
            let s = text(b)?;
            Value::Enum(
                values
                    .iter()
                    .position(|v| *v == s)
                    .map_or(0, |i| i as u16 + 1),
            )
        }
        (ColumnType::Set { members }, M::Bytes(b)) => {
            let s = text(b)?;
            let mut mask = 0u64;
            for part in s.split(',').filter(|p| !p.is_empty()) {
                if let Some(i) = members.iter().position(|m| m == part) {
                    mask |= 1 << i;
                }
            }
            Value::Set(mask)
        }
        (ColumnType::Bit { .. }, M::Bytes(b)) => {
            Value::Bit(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
        }
        (ColumnType::Bit { .. }, M::UInt(u)) => Value::Bit(u),
        (ColumnType::Bit { .. }, M::Int(i)) => Value::Bit(i as u64),
        (_, v) => return Err(bad(&v)),
    })
}

fn pk_json(v: &mysql_async::Value) -> serde_json::Value {
    use mysql_async::Value as M;
    match v {
        M::Int(i) => serde_json::json!(i),
        M::UInt(u) => serde_json::json!(u),
        M::Bytes(b) => serde_json::json!({ "b": b }),
        other => serde_json::json!({ "s": other.as_sql(true) }),
    }
}

fn pk_param(v: &serde_json::Value) -> mysql_async::Value {
    use mysql_async::Value as M;
    if let Some(i) = v.as_i64() {
        return M::Int(i);
    }
    if let Some(u) = v.as_u64() {
        return M::UInt(u);
    }
    if let Some(b) = v
        .get("b")
        .and_then(|b| serde_json::from_value::<Vec<u8>>(b.clone()).ok())
    {
        return M::Bytes(b);
    }
    // Other key types travel as their SQL literal text, compared by the server.
    M::Bytes(
        v.get("s")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .trim_matches('\'')
            .as_bytes()
            .to_vec(),
    )
}

/// Opens the consistent snapshot; returns its SCN.
async fn open_snapshot(conn: &mut Conn) -> Result<Scn, BootstrapError> {
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(err("set time_zone"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(err("set isolation level"))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(err("start a consistent snapshot"))?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(err("read binlog_snapshot_* status"))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(pos)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position"))
    else {
        return Err(BootstrapError::Seed(
            "SHOW STATUS has no binlog_snapshot_file/position: enable the binary log (log_bin) on the source".into(),
        ));
    };
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos.clone()))
        .await
        .map_err(err("BINLOG_GTID_POS"))?;
    let gtid = gtid.flatten().unwrap_or_default();
    let mut seqs = gtid.split(',').filter(|g| !g.trim().is_empty()).map(|g| {
        g.trim()
            .rsplit('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
    });
    let scn = match (seqs.next(), seqs.next()) {
        (None, _) => Scn::ZERO,
        (Some(Some(seq)), None) => Scn::new(seq),
        _ => {
            return Err(BootstrapError::Seed(format!(
                "binlog position {file}:{pos} maps to GTID list {gtid:?}; seeding supports one GTID domain \
                 (like the connector)"
            )));
        }
    };
    Ok(scn)
}

/// A table being read: what the encoder needs to turn its rows into events.
struct TableCtx {
    index: usize,
    source: SourceId,
    name: String,
    schema: TableSchema,
    registered: RegisteredSchema,
}

/// A chunk read from the source, on its way to the encoder.
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

/// Reads every table in primary-key order from the consistent snapshot, chunk by chunk, sending
/// each chunk to the encoder; ends the snapshot when done (or when the encoder went away).
async fn read_tables(
    mut conn: Conn,
    store: Arc<dyn BootstrapStore>,
    tables: Vec<SeedTable>,
    chunk: usize,
    mut token: Token,
    tx: tokio::sync::mpsc::Sender<RawChunk>,
) -> Result<(), BootstrapError> {
    let registry = SchemaRegistry::in_memory();
    while token.table < tables.len() {
        let t = &tables[token.table];
        let schema = table_schema(&mut conn, &t.database, &t.table).await?;
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
        let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let pk_cols: Vec<String> = schema
            .primary_key
            .iter()
            .map(|&i| quote(&schema.columns[i].name))
            .collect();
        let pk_list = pk_cols.join(", ");
        let placeholders = vec!["?"; pk_cols.len()].join(", ");
        let from = format!("{}.{}", quote(&t.database), quote(&t.table));
        let first_sql = format!(
            "SELECT {} FROM {from} ORDER BY {pk_list} LIMIT {chunk}",
            cols.join(", ")
        );
        let next_sql = format!(
            "SELECT {} FROM {from} WHERE ({pk_list}) > ({placeholders}) ORDER BY {pk_list} LIMIT {chunk}",
            cols.join(", ")
        );
        let first_stmt = conn.prep(&first_sql).await.map_err(err("prepare a read"))?;
        let next_stmt = conn.prep(&next_sql).await.map_err(err("prepare a read"))?;
        let ctx = Arc::new(TableCtx {
            index: token.table,
            source: t.source,
            name: format!("{}.{}", t.database, t.table),
            schema,
            registered,
        });
        loop {
            let rows: Vec<Row> = match &token.after {
                None => conn.exec(&first_stmt, ()).await,
                Some(after) => {
                    conn.exec(&next_stmt, after.iter().map(pk_param).collect::<Vec<_>>())
                        .await
                }
            }
            .map_err(err("read a chunk"))?;
            let n = rows.len();
            if let Some(last) = rows.last() {
                let pk = ctx
                    .schema
                    .primary_key
                    .iter()
                    .map(|&i| {
                        last.as_ref(i).map(pk_json).ok_or_else(|| {
                            BootstrapError::Seed(format!("a row of {} has no column {i}", ctx.name))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                token.after = Some(pk);
            }
            if n < chunk {
                token.table += 1;
                token.after = None;
            }
            let raw = RawChunk {
                table: ctx.clone(),
                rows,
                token: token.clone(),
            };
            if tx.send(raw).await.is_err() {
                // The encoder stopped; its error is reported by the caller.
                return Ok(());
            }
            if n < chunk {
                break;
            }
        }
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(err("end the snapshot"))?;
    let _ = conn.disconnect().await;
    Ok(())
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
    for row in raw.rows {
        let values = row
            .unwrap()
            .into_iter()
            .zip(&t.schema.columns)
            .map(|(v, c)| convert(&c.column_type, v, &c.name))
            .collect::<Result<Vec<_>, _>>()?;
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

/// InnoDB's estimate of a table's rows (`information_schema.TABLES.TABLE_ROWS`; 0 if unknown).
async fn estimate_rows(conn: &mut Conn, t: &SeedTable) -> Result<u64, BootstrapError> {
    let n: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (t.database.as_str(), t.table.as_str()),
        )
        .await
        .map_err(err("read information_schema.TABLES"))?;
    Ok(n.flatten().unwrap_or(0))
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
    let opts = Opts::from_url(&settings.url)
        .map_err(|e| BootstrapError::Config(format!("seed url is not a MySQL URL: {e}")))?;
    let mut conn = Conn::new(opts)
        .await
        .map_err(err("connect to the source"))?;
    let previous = store.seed_progress()?;
    let snapshot_scn = open_snapshot(&mut conn).await?;
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
        rows_estimate += estimate_rows(&mut conn, t).await?;
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
        conn,
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
    table: &SeedTable,
) -> Result<Vec<(databus_core::Key, databus_core::SchemaId, Vec<u8>)>, BootstrapError> {
    let opts =
        Opts::from_url(url).map_err(|e| BootstrapError::Config(format!("not a MySQL URL: {e}")))?;
    let mut conn = Conn::new(opts)
        .await
        .map_err(err("connect to the source"))?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(err("set time_zone"))?;
    let schema = table_schema(&mut conn, &table.database, &table.table).await?;
    let registered = SchemaRegistry::in_memory()
        .register(&schema)
        .map_err(|e| BootstrapError::Seed(e.to_string()))?;
    let cols: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        quote(&table.database),
        quote(&table.table)
    );
    let rows: Vec<Row> = conn.exec(sql, ()).await.map_err(err("dump"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let values = row
            .unwrap()
            .into_iter()
            .zip(&schema.columns)
            .map(|(v, c)| convert(&c.column_type, v, &c.name))
            .collect::<Result<Vec<_>, _>>()?;
        let key = event_key(&schema, &values).map_err(|e| BootstrapError::Seed(e.to_string()))?;
        let mut payload = Vec::new();
        registered
            .encoder
            .encode(&values, &mut payload)
            .map_err(|e| BootstrapError::Seed(e.to_string()))?;
        out.push((key, registered.id, payload));
    }
    let _ = conn.disconnect().await;
    Ok(out)
}
