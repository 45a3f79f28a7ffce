//! The MySQL/MariaDB [`SnapshotSource`]: `START TRANSACTION WITH CONSISTENT SNAPSHOT` (InnoDB,
//! lock-free) and the binlog position that snapshot sees (`binlog_snapshot_file/position`, mapped to a
//! GTID with `BINLOG_GTID_POS`: its sequence number is the SCN, as in the stream).
//!
//! Tables are read in primary-key order (`WHERE (pk) > (cursor) ORDER BY pk LIMIT n`); the
//! [`ChunkCursor`] is the last row's primary key. Schemas come from `information_schema` through
//! [`super::schema::table_info_from_columns`] (the stream's column types, nullability, primary key and
//! JSON detection) and values go through [`super::schema::TableInfo::value_from_sql`] (the stream's
//! value model).

use std::collections::HashMap;
use std::sync::Arc;

use databus_core::Scn;
use databus_serde_formats::model::TableSchema;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row as SqlRow, Statement};

use super::schema::{self, ColumnFacts, TableInfo};
use super::{MySqlConfig, MySqlPosition, gtid_domains, parse_gtid_list};
use crate::ConnectorError;
use crate::snapshot::{ChunkCursor, Snapshot, SnapshotChunk, SnapshotPosition, SnapshotSource};
use crate::source::TableName;

/// Opens consistent snapshots of a MariaDB server (a user with `SELECT` on the tables is enough).
#[derive(Clone)]
pub struct MySqlSnapshotSource {
    opts: Opts,
}

impl std::fmt::Debug for MySqlSnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the driver's options: they hold the password.
        f.debug_struct("MySqlSnapshotSource")
            .finish_non_exhaustive()
    }
}

impl MySqlSnapshotSource {
    /// The snapshot side of `config` (only its connection settings are used).
    pub fn new(config: &MySqlConfig) -> Result<Self, ConnectorError> {
        Ok(MySqlSnapshotSource {
            opts: config.connection_opts()?,
        })
    }
}

fn query_err(what: &str) -> impl Fn(mysql_async::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Query {
        what: what.to_owned(),
        source,
    }
}

impl SnapshotSource for MySqlSnapshotSource {
    type Snapshot = MySqlSnapshot;

    async fn open(&mut self) -> Result<MySqlSnapshot, ConnectorError> {
        let mut conn =
            Conn::new(self.opts.clone())
                .await
                .map_err(|source| ConnectorError::Connection {
                    what: "the source".into(),
                    source,
                })?;
        for sql in [
            // TIMESTAMP values as UTC, the stream's epoch-based values.
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ] {
            conn.query_drop(sql).await.map_err(query_err(sql))?;
        }
        let status: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(query_err("reading binlog_snapshot_* status"))?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (Some(file), Some(pos)) =
            (get("binlog_snapshot_file"), get("binlog_snapshot_position"))
        else {
            return Err(ConnectorError::Misconfigured {
                problems: vec![
                    "SHOW STATUS has no binlog_snapshot_file/position: enable the binary log (log_bin)"
                        .into(),
                ],
            });
        };
        let end_position: u64 = pos.parse().map_err(|_| {
            ConnectorError::Config(format!("binlog_snapshot_position {pos:?} is not a number"))
        })?;
        let gtid: Option<Option<String>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), end_position))
            .await
            .map_err(query_err("BINLOG_GTID_POS"))?;
        let gtid = gtid.flatten().unwrap_or_default();
        if gtid_domains(&gtid).len() > 1 {
            return Err(ConnectorError::MultipleDomains { domains: gtid });
        }
        let scn = parse_gtid_list(&gtid)
            .first()
            .map_or(Scn::ZERO, |g| Scn::new(g.seq));
        let position = SnapshotPosition {
            scn,
            position: Some(
                MySqlPosition {
                    gtid,
                    file,
                    end_position,
                }
                .to_position(),
            ),
        };
        Ok(MySqlSnapshot {
            conn: Some(conn),
            position,
            tables: HashMap::new(),
        })
    }
}

/// A table being read: its schema and codecs, its two prepared reads.
struct SnapshotTable {
    info: Arc<TableInfo>,
    first: Statement,
    next: Statement,
}

/// An open consistent snapshot of a MariaDB server.
pub struct MySqlSnapshot {
    conn: Option<Conn>,
    position: SnapshotPosition,
    tables: HashMap<TableName, SnapshotTable>,
}

impl std::fmt::Debug for MySqlSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSnapshot")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
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

impl MySqlSnapshot {
    fn conn(&mut self) -> Result<&mut Conn, ConnectorError> {
        self.conn
            .as_mut()
            .ok_or_else(|| ConnectorError::Config("the snapshot is closed".into()))
    }

    async fn table(&mut self, name: &TableName) -> Result<&SnapshotTable, ConnectorError> {
        if !self.tables.contains_key(name) {
            let conn = self.conn()?;
            let key = (name.database.as_str(), name.table.as_str());
            let columns: Vec<schema::InfoColumn> =
                conn.exec(schema::INFO_COLUMNS_SQL, key)
                    .await
                    .map_err(query_err("reading information_schema.COLUMNS"))?;
            let primary_key: Vec<String> = conn
                .exec(schema::PRIMARY_KEY_SQL, key)
                .await
                .map_err(query_err("reading information_schema.KEY_COLUMN_USAGE"))?;
            let json = schema::json_columns(
                conn.exec(schema::JSON_COLUMNS_SQL, key)
                    .await
                    .map_err(query_err("reading JSON columns"))?,
            );
            let facts = ColumnFacts {
                json,
                ..ColumnFacts::default()
            };
            let info = schema::table_info_from_columns(name, columns, &primary_key, &facts)?;
            if info.schema.primary_key.is_empty() {
                return Err(ConnectorError::NoPrimaryKey {
                    table: name.to_string(),
                });
            }
            let cols: Vec<String> = info.schema.columns.iter().map(|c| quote(&c.name)).collect();
            let pk: Vec<String> = info
                .schema
                .primary_key
                .iter()
                .map(|&i| quote(&info.schema.columns[i].name))
                .collect();
            let pk_list = pk.join(", ");
            let from = format!("{}.{}", quote(&name.database), quote(&name.table));
            let placeholders = vec!["?"; pk.len()].join(", ");
            let first = conn
                .prep(format!(
                    "SELECT {} FROM {from} ORDER BY {pk_list} LIMIT ?",
                    cols.join(", ")
                ))
                .await
                .map_err(query_err("preparing a snapshot read"))?;
            let next = conn
                .prep(format!(
                    "SELECT {} FROM {from} WHERE ({pk_list}) > ({placeholders}) ORDER BY {pk_list} LIMIT ?",
                    cols.join(", ")
                ))
                .await
                .map_err(query_err("preparing a snapshot read"))?;
            self.tables.insert(
                name.clone(),
                SnapshotTable {
                    info: Arc::new(info),
                    first,
                    next,
                },
            );
        }
        Ok(&self.tables[name])
    }
}

impl Snapshot for MySqlSnapshot {
    fn position(&self) -> &SnapshotPosition {
        &self.position
    }

    async fn schema(&mut self, table: &TableName) -> Result<Arc<TableSchema>, ConnectorError> {
        Ok(Arc::clone(&self.table(table).await?.info.schema))
    }

    async fn estimate_rows(&mut self, table: &TableName) -> Result<u64, ConnectorError> {
        let n: Option<Option<u64>> = self
            .conn()?
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (table.database.as_str(), table.table.as_str()),
            )
            .await
            .map_err(query_err("reading information_schema.TABLES"))?;
        Ok(n.flatten().unwrap_or(0))
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        from: Option<&ChunkCursor>,
        max_rows: usize,
    ) -> Result<SnapshotChunk, ConnectorError> {
        let max_rows = max_rows.max(1);
        let t = self.table(table).await?;
        let (info, first, next) = (Arc::clone(&t.info), t.first.clone(), t.next.clone());
        let conn = self.conn()?;
        let rows: Vec<SqlRow> = match from {
            None => conn.exec(&first, (max_rows as u64,)).await,
            Some(cursor) => {
                let Some(key) = cursor.value().as_array() else {
                    return Err(ConnectorError::Config(format!(
                        "snapshot cursor {:?} of {table} is not a primary key",
                        cursor.value()
                    )));
                };
                let mut params: Vec<mysql_async::Value> = key.iter().map(pk_param).collect();
                params.push(mysql_async::Value::UInt(max_rows as u64));
                conn.exec(&next, params).await
            }
        }
        .map_err(query_err("reading a snapshot chunk"))?;
        let full = rows.len() >= max_rows;
        let next = match rows.last() {
            Some(last) if full => Some(ChunkCursor::new(serde_json::Value::Array(
                info.schema
                    .primary_key
                    .iter()
                    .map(|&i| last.as_ref(i).map(pk_json).unwrap_or_default())
                    .collect(),
            ))),
            _ => None,
        };
        let rows = rows
            .into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| info.value_from_sql(i, v))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SnapshotChunk { rows, next })
    }

    async fn close(mut self) -> Result<(), ConnectorError> {
        if let Some(mut conn) = self.conn.take() {
            conn.query_drop("COMMIT")
                .await
                .map_err(query_err("ending the snapshot"))?;
            let _ = conn.disconnect().await;
        }
        Ok(())
    }
}
