//! The PostgreSQL [`SnapshotSource`]: a replication slot's exported snapshot, at the exact SCN of the
//! last transaction the stream delivers before it.
//!
//! # Opening a snapshot
//!
//! 1. On a query session: `pg_copy_logical_replication_slot(<slot>, <copy>, true)`, a temporary copy
//!    of the stream's slot (the relay's `slot`; it must exist). The copy has the slot's confirmed
//!    position `C0`, and keeps the WAL after it.
//! 2. On a replication session: `CREATE_REPLICATION_SLOT <tmp> TEMPORARY LOGICAL pgoutput (SNAPSHOT
//!    'export')`. It returns the slot's consistent point `CP` and a snapshot name. PostgreSQL's
//!    guarantee (the one its own table synchronization relies on): the exported snapshot sees exactly
//!    the transactions whose commit record lies before `CP`, and decoding from a slot at `CP` yields
//!    exactly the transactions whose commit record is at or after it.
//! 3. On the query session: `pg_logical_slot_peek_binary_changes(<copy>, CP, …)` with the stream's
//!    pgoutput options (`proto_version '1'`, the publication, `messages 'true'`) decodes `[C0, CP)`
//!    exactly as the stream does. Its last Commit message before `CP` carries the commit LSN of the
//!    last transaction the stream delivers that the snapshot includes: that is the snapshot's SCN
//!    (the stream's SCN is the commit LSN). The copy is dropped.
//! 4. The query session starts `REPEATABLE READ READ ONLY` and `SET TRANSACTION SNAPSHOT`; then the
//!    replication session ends (its temporary slot goes with it).
//!
//! So the stream after the SCN (`start(After(scn))`: commit LSN `> scn`) is exactly the transactions
//! committed at or after `CP`: none of those is in the snapshot, and every transaction the stream
//! delivers before `CP` is. When the peek finds no transaction (nothing published committed between
//! the slot's confirmed position and `CP`), the SCN is `C0`: the stream after `C0` also starts at
//! `CP`. `consistent_point - 1`, the obvious shortcut, is not a commit: it differs from the SCN of
//! the last transaction included, which the relay and the bootstrap server compare SCNs against.
//!
//! # Reading
//!
//! Schemas come from the catalog in the snapshot, through the stream's own code
//! (`describe_relation`, the published columns in the Relation message's order), so the schema ids
//! are the stream's. Rows are read with the simple query protocol, which returns every value in its
//! type's text output format, the format pgoutput sends, under the same session settings: the stream's
//! codecs ([`super::types::decode`]) convert them. Tables are read in primary-key order
//! (`WHERE (pk) > (cursor) ORDER BY pk LIMIT n`); the [`ChunkCursor`] is the last row's key as text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use databus_core::Scn;
use databus_serde_formats::model::{Row, TableSchema, Value};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::types::{self, Codec};
use super::{PgConfig, PgConnector, SESSION_OPTIONS, describe_relation, lsn_text, pg, quote_ident};
use crate::ConnectorError;
use crate::snapshot::{ChunkCursor, Snapshot, SnapshotChunk, SnapshotPosition, SnapshotSource};
use crate::source::{SourcePosition, TableName};

/// Creating the exported snapshot's slot waits for the transactions running at that moment to end:
/// bounded, but far more generously than a query.
const SLOT_CREATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Opens consistent snapshots of a PostgreSQL database, positioned in the stream of `config.slot`.
///
/// The role needs `REPLICATION` (temporary slots, slot copies and the peek) and `SELECT` on the
/// tables; the slot and the publication must exist (the relay's connector creates them).
#[derive(Debug, Clone)]
pub struct PgSnapshotSource {
    // Debug of PgConfig masks the password. Boxed: keeps `AnySnapshotSource` small.
    config: Box<PgConfig>,
}

impl PgSnapshotSource {
    /// The snapshot side of `config` (connection settings, `slot`, `publication`; validated here).
    pub fn new(config: &PgConfig) -> Result<Self, ConnectorError> {
        config.validate()?;
        Ok(PgSnapshotSource {
            config: Box::new(config.clone()),
        })
    }
}

/// A name for a temporary slot, unique enough across processes and calls.
fn temp_slot_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "databus_snap_{}_{}_{nanos:x}_{kind}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn replication_err(
    what: impl Into<String>,
) -> impl FnOnce(pgwire_replication::PgWireError) -> ConnectorError {
    let what = what.into();
    move |source| ConnectorError::Replication { what, source }
}

fn parse_lsn(what: &str, text: &str) -> Result<u64, ConnectorError> {
    Lsn::parse(text)
        .map(|l| l.as_u64())
        .map_err(|e| ConnectorError::Config(format!("{what}: bad lsn {text:?}: {}", e.0)))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

impl SnapshotSource for PgSnapshotSource {
    type Snapshot = PgSnapshot;

    async fn open(&mut self) -> Result<PgSnapshot, ConnectorError> {
        // The connector's own connection code: same settings, same session options.
        let helper = PgConnector::new(PgConfig::clone(&self.config))?;
        let client = helper.connect_query().await?;
        let slot = &self.config.slot;
        let publication = &self.config.publication;
        let row = helper
            .bounded("reading the replication slot", async {
                client
                    .query_opt(
                        "SELECT plugin::text, database::text FROM pg_replication_slots \
                         WHERE slot_name = $1 AND slot_type = 'logical'",
                        &[slot],
                    )
                    .await
                    .map_err(pg("reading replication slots"))
            })
            .await?;
        let Some(row) = row else {
            return Err(ConnectorError::Misconfigured {
                problems: vec![format!(
                    "logical replication slot {slot} does not exist: a snapshot is positioned in the stream \
                     of the relay's slot; start the relay (its connector creates the slot and the \
                     publication) before seeding"
                )],
            });
        };
        let (plugin, database): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        if plugin.as_deref() != Some("pgoutput")
            || database.as_deref() != Some(&self.config.database)
        {
            return Err(ConnectorError::Misconfigured {
                problems: vec![format!(
                    "replication slot {slot} is not a pgoutput slot of database {} (plugin {plugin:?}, \
                     database {database:?}); name the relay's slot",
                    self.config.database
                )],
            });
        }
        // 1. A temporary copy of the stream's slot: it decodes what the stream delivers from the slot's
        //    confirmed position on.
        let copy = temp_slot_name("c");
        let confirmed: Option<String> = helper
            .bounded("copying the replication slot", async {
                client
                    .execute(
                        "SELECT pg_copy_logical_replication_slot($1::text::name, $2::text::name, true)",
                        &[slot, &copy],
                    )
                    .await
                    .map_err(pg(format!("copying replication slot {slot}")))?;
                client
                    .query_one(
                        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                        &[&copy],
                    )
                    .await
                    .map_err(pg("reading the slot copy"))
                    .map(|r| r.get(0))
            })
            .await?;
        let c0 = parse_lsn(
            "the slot's confirmed position",
            confirmed.as_deref().unwrap_or("0/0"),
        )?;
        // 2. The exported snapshot, on a replication session that stays idle until it is imported.
        let export = temp_slot_name("x");
        let rc = ReplicationConfig::new(
            self.config.host.clone(),
            self.config.user.clone(),
            self.config.password_text().to_owned(),
            self.config.database.clone(),
            export.clone(),
            publication.as_str(),
        )
        .with_port(self.config.port)
        .with_options(SESSION_OPTIONS)
        .with_application_name("databus-snapshot");
        let mut repl = ReplicationClient::connect_gated(rc)
            .await
            .map_err(replication_err("connecting for a snapshot"))?;
        let created = tokio::time::timeout(
            SLOT_CREATE_TIMEOUT,
            repl.simple_query(&format!(
                "CREATE_REPLICATION_SLOT {export} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
            )),
        )
        .await
        .map_err(|_| ConnectorError::Timeout {
            what:
                "creating the snapshot's slot (it waits for the transactions running then to end)"
                    .into(),
            after: SLOT_CREATE_TIMEOUT,
        })?
        .map_err(replication_err(
            "CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')",
        ))?;
        let text = |i: usize| -> Result<String, ConnectorError> {
            created
                .first()
                .and_then(|r| r.get(i))
                .and_then(|v| v.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "CREATE_REPLICATION_SLOT returned no column {i}"
                    ))
                })
        };
        let consistent_point = parse_lsn("consistent_point", &text(1)?)?;
        let snapshot_name = text(2)?;
        if snapshot_name.is_empty()
            || !snapshot_name
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(ConnectorError::Config(format!(
                "CREATE_REPLICATION_SLOT exported an unexpected snapshot name {snapshot_name:?}"
            )));
        }
        // 3. The last transaction the stream delivers before the consistent point: the Commit
        //    messages (tag 'C', flags, then the commit LSN as 8 big-endian bytes) of the copy's
        //    decoding up to it, with the stream's pgoutput options.
        let last: Option<Vec<u8>> = helper
            .bounded("finding the last transaction before the snapshot", async {
                let row = client
                    .query_opt(
                        "SELECT substring(data FROM 3 FOR 8) AS commit_lsn \
                         FROM pg_logical_slot_peek_binary_changes($1::text::name, $2::text::pg_lsn, NULL, \
                              'proto_version', '1', 'publication_names', $3::text, 'messages', 'true') \
                         WHERE get_byte(data, 0) = 67 AND substring(data FROM 3 FOR 8) < $4 \
                         ORDER BY commit_lsn DESC LIMIT 1",
                        &[
                            &copy,
                            &lsn_text(consistent_point),
                            publication,
                            &consistent_point.to_be_bytes().to_vec(),
                        ],
                    )
                    .await
                    .map_err(pg("decoding the slot copy up to the snapshot"))?;
                client
                    .execute("SELECT pg_drop_replication_slot($1::text::name)", &[&copy])
                    .await
                    .map_err(pg("dropping the slot copy"))?;
                Ok(row.map(|r| r.get(0)))
            })
            .await?;
        let scn = match last {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    ConnectorError::Config(format!(
                        "a pgoutput Commit message holds a {}-byte commit lsn",
                        bytes.len()
                    ))
                })?;
                u64::from_be_bytes(bytes)
            }
            // Nothing the stream delivers committed in [C0, CP): after C0 the stream starts at CP.
            None => c0,
        };
        // 4. Import the snapshot; then the exporting session may end.
        helper
            .bounded("importing the snapshot", async {
                client
                    .batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot_name}'"
                    ))
                    .await
                    .map_err(pg("importing the exported snapshot"))
            })
            .await?;
        drop(repl);
        tracing::info!(
            slot = %slot,
            scn,
            lsn = %lsn_text(scn),
            consistent_point = %lsn_text(consistent_point),
            "postgresql snapshot opened"
        );
        let position = SnapshotPosition {
            scn: Scn::new(scn),
            position: Some(SourcePosition::new(serde_json::json!({
                "lsn": lsn_text(scn),
                "slot": slot,
                "consistent_point": lsn_text(consistent_point),
            }))),
        };
        Ok(PgSnapshot {
            client: Some(client),
            publication: publication.clone(),
            read_timeout: self.config.read_timeout,
            position,
            tables: HashMap::new(),
        })
    }
}

/// A table being read.
#[derive(Debug)]
struct SnapshotTable {
    oid: u32,
    schema: Arc<TableSchema>,
    codecs: Vec<Codec>,
    /// `"a", "b", …`: the published columns.
    select: String,
    /// The primary-key columns, quoted, and their types for the cursor's literals.
    key: Vec<(String, String)>,
}

/// An open consistent snapshot of a PostgreSQL database.
pub struct PgSnapshot {
    client: Option<Client>,
    publication: String,
    read_timeout: Duration,
    position: SnapshotPosition,
    tables: HashMap<TableName, SnapshotTable>,
}

impl std::fmt::Debug for PgSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSnapshot")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl PgSnapshot {
    fn client(&self) -> Result<&Client, ConnectorError> {
        self.client
            .as_ref()
            .ok_or_else(|| ConnectorError::Config("the snapshot is closed".into()))
    }

    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        tokio::time::timeout(self.read_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectorError::Timeout {
                    what: what.to_owned(),
                    after: self.read_timeout,
                })
            })
    }

    async fn table(&mut self, name: &TableName) -> Result<&SnapshotTable, ConnectorError> {
        if !self.tables.contains_key(name) {
            let t = self
                .bounded("reading a table's catalog", self.describe(name))
                .await?;
            self.tables.insert(name.clone(), t);
        }
        Ok(&self.tables[name])
    }

    async fn describe(&self, name: &TableName) -> Result<SnapshotTable, ConnectorError> {
        let client = self.client()?;
        let oid = client
            .query_opt(
                "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r'",
                &[&name.database, &name.table],
            )
            .await
            .map_err(pg(format!("reading table {name}")))?
            .map(|r| r.get::<_, i64>(0) as u32)
            .ok_or_else(|| ConnectorError::Misconfigured {
                problems: vec![format!("table {name} does not exist")],
            })?;
        // The columns pgoutput's Relation message lists: published (the publication's column list;
        // generated columns are never published), in attribute order, with type oid and typmod.
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, format_type(a.atttypid, NULL) \
                 FROM pg_attribute a \
                 WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                   AND a.attname = ANY ((SELECT p.attnames FROM pg_publication_tables p \
                                         WHERE p.pubname = $2 AND p.schemaname = $3 AND p.tablename = $4)::name[]) \
                 ORDER BY a.attnum",
                &[&(oid as i64), &self.publication, &name.database, &name.table],
            )
            .await
            .map_err(pg(format!("reading the columns of {name}")))?;
        if rows.is_empty() {
            return Err(ConnectorError::Misconfigured {
                problems: vec![format!(
                    "table {name} is not in publication {}: the stream does not carry it; run ALTER \
                     PUBLICATION {} ADD TABLE {}.{}",
                    self.publication,
                    quote_ident(&self.publication),
                    quote_ident(&name.database),
                    quote_ident(&name.table)
                )],
            });
        }
        let columns: Vec<super::pgoutput::RelColumn> = rows
            .iter()
            .map(|r| super::pgoutput::RelColumn {
                name: r.get(0),
                type_oid: r.get::<_, i64>(1) as u32,
                typmod: r.get(2),
            })
            .collect();
        let (schema, codecs) = describe_relation(client, oid, name, &columns).await?;
        let select = columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let key = schema
            .primary_key
            .iter()
            .map(|&i| (quote_ident(&columns[i].name), rows[i].get::<_, String>(3)))
            .collect();
        Ok(SnapshotTable {
            oid,
            schema,
            codecs,
            select,
            key,
        })
    }
}

impl Snapshot for PgSnapshot {
    fn position(&self) -> &SnapshotPosition {
        &self.position
    }

    async fn schema(&mut self, table: &TableName) -> Result<Arc<TableSchema>, ConnectorError> {
        Ok(Arc::clone(&self.table(table).await?.schema))
    }

    async fn estimate_rows(&mut self, table: &TableName) -> Result<u64, ConnectorError> {
        let oid = self.table(table).await?.oid;
        let row = self
            .client()?
            .query_one(
                "SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = $1::int8::oid",
                &[&(oid as i64)],
            )
            .await
            .map_err(pg("reading pg_class.reltuples"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    async fn read_chunk(
        &mut self,
        table: &TableName,
        from: Option<&ChunkCursor>,
        max_rows: usize,
    ) -> Result<SnapshotChunk, ConnectorError> {
        let max_rows = max_rows.max(1);
        let t = self.table(table).await?;
        let order = t
            .key
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let filter = match from {
            None => String::new(),
            Some(cursor) => {
                let key: Option<Vec<&str>> = cursor
                    .value()
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect());
                let key = key.filter(|k| k.len() == t.key.len()).ok_or_else(|| {
                    ConnectorError::Config(format!(
                        "snapshot cursor {} of {table} is not a primary key of {} columns",
                        cursor.value(),
                        t.key.len()
                    ))
                })?;
                let values: Vec<String> = key
                    .iter()
                    .zip(&t.key)
                    .map(|(v, (_, ty))| format!("{}::{ty}", literal(v)))
                    .collect();
                format!("WHERE ({order}) > ({}) ", values.join(", "))
            }
        };
        let sql = format!(
            "SELECT {} FROM {}.{} {filter}ORDER BY {order} LIMIT {max_rows}",
            t.select,
            quote_ident(&table.database),
            quote_ident(&table.table),
        );
        let client = self.client()?;
        let messages = self
            .bounded("reading a snapshot chunk", async {
                client
                    .simple_query(&sql)
                    .await
                    .map_err(pg(format!("reading a chunk of {table}")))
            })
            .await?;
        let t = &self.tables[table];
        let mut rows = Vec::new();
        let mut last_key = None;
        for m in messages {
            let SimpleQueryMessage::Row(r) = m else {
                continue;
            };
            let row = (0..t.codecs.len())
                .map(|i| match r.get(i) {
                    None => Ok(Value::Null),
                    Some(text) => {
                        types::decode(&t.codecs[i], text).map_err(|reason| ConnectorError::Decode {
                            table: table.to_string(),
                            column: t.schema.columns[i].name.clone(),
                            reason,
                        })
                    }
                })
                .collect::<Result<Row, _>>()?;
            last_key = Some(
                t.schema
                    .primary_key
                    .iter()
                    .map(|&i| serde_json::Value::from(r.get(i).unwrap_or_default()))
                    .collect::<Vec<_>>(),
            );
            rows.push(row);
        }
        let next = match last_key {
            Some(key) if rows.len() >= max_rows => {
                Some(ChunkCursor::new(serde_json::Value::Array(key)))
            }
            _ => None,
        };
        Ok(SnapshotChunk { rows, next })
    }

    async fn close(mut self) -> Result<(), ConnectorError> {
        if let Some(client) = self.client.take() {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(pg("ending the snapshot"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("a'b"), "'a''b'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn temporary_slot_names_are_valid_and_distinct() {
        let (a, b) = (temp_slot_name("x"), temp_slot_name("x"));
        assert_ne!(a, b);
        for n in [a, b] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
        }
    }
}
