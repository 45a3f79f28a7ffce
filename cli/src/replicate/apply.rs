//! Applying windows to the target: each window's changes, reduced to the last change of each key,
//! as batched statements, then its checkpoint, then `COMMIT`.
//!
//! Within a window, changes of different keys commute and the last change of a key decides its
//! state, so the window is applied as one multi-row `INSERT … ON DUPLICATE KEY UPDATE` of the
//! upserted rows and one `DELETE … WHERE <key> IN (…)` of the deleted keys per table (in chunks of
//! at most [`MAX_STATEMENT_BYTES`]). A key change (delete of the old key, upsert of the new one)
//! is two keys. Table events and a row of a new schema are barriers: the changes before them are
//! written first. Applying a window again (after a crash before its commit) gives the same state.
//!
//! [`Replica::apply_group`] applies consecutive windows the same way in one transaction with the
//! last one's checkpoint: the reduction runs over all of them together (a replica behind the relay
//! pays one `COMMIT` for many source transactions).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use databus_client::model::{Column, ColumnType, Row, TableSchema, Value};
use databus_client::{DataEvent, Window};
use databus_core::{Checkpoint, Key, SchemaId, TableChangeCause};

use super::dialect::Dialect;
use super::mapping;
use super::target::{Replicated, StatementKind, Target};

/// Statements are cut at about this many bytes (MariaDB's `max_allowed_packet` is 16 MiB by default).
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// `(database, table)`.
type TableName = (String, String);

/// The last change of a key in the window so far: the row, or the deleted key's values.
enum Change {
    Upsert(Row),
    Delete(Vec<Value>),
}

/// What one window did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    /// Rows written (after reducing to the last change per key).
    pub upserts: u64,
    /// Keys deleted.
    pub deletes: u64,
    /// Tables truncated or dropped, and schema changes followed.
    pub table_events: u64,
}

/// The replica's state: the target connection and the schema of every replicated table.
#[derive(Debug)]
pub struct Replica {
    target: Target,
    tables: BTreeMap<TableName, Replicated>,
    schemas: HashMap<SchemaId, Arc<TableSchema>>,
}

fn split_table(qualified: &str) -> Result<TableName> {
    let (db, table) = qualified
        .split_once('.')
        .with_context(|| format!("table event names {qualified:?}, not database.table"))?;
    Ok((db.to_owned(), table.to_owned()))
}

impl Replica {
    /// The replica on `target`, with the tables it replicated so far.
    pub async fn open(mut target: Target) -> Result<Replica> {
        let mut tables = target.load_tables().await?;
        if target.dialect() == Dialect::MariaDb {
            reconcile(&mut target, &mut tables).await?;
        }
        Ok(Replica {
            target,
            tables,
            schemas: HashMap::new(),
        })
    }

    /// The target connection.
    pub fn target(&mut self) -> &mut Target {
        &mut self.target
    }

    /// A full snapshot starts: it is the whole state with no tombstones, so every replicated table
    /// is emptied first. The checkpoint (the bootstrap's start) commits after: a crash in between
    /// starts the same snapshot again, which empties them again.
    pub async fn clear_for_snapshot(&mut self, checkpoint: &Checkpoint) -> Result<usize> {
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        let d = self.target.dialect();
        for (db, table) in &tables {
            self.target
                .exec(
                    &format!("TRUNCATE TABLE {}", d.qualified(db, table)),
                    StatementKind::Truncate,
                    &format!("{db}.{table}"),
                )
                .await?;
        }
        self.store_transition(checkpoint).await?;
        Ok(tables.len())
    }

    /// Commits the checkpoint of a phase change (no data).
    pub async fn store_transition(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.target.store_checkpoint(checkpoint).await?;
        self.target.commit().await
    }

    /// Applies `window` and its checkpoint in one transaction (DDL aside, see the module docs).
    /// On an error the transaction is rolled back and the in-memory table schemas are reloaded.
    pub async fn apply(&mut self, window: &Window) -> Result<Applied> {
        self.apply_group(std::slice::from_ref(window)).await
    }

    /// Applies consecutive `windows` and the last one's checkpoint in one transaction, as if each
    /// were applied in turn and only the last committed: the changes of all of them are reduced to
    /// the last change of each key together. A replica behind the relay applies the windows it
    /// already holds this way, with one `COMMIT` (one log flush) for many source transactions.
    pub async fn apply_group(&mut self, windows: &[Window]) -> Result<Applied> {
        let Some(last) = windows.last() else {
            return Ok(Applied::default());
        };
        self.target.scn = Some(last.scn().get());
        let result = self.apply_inner(windows).await;
        self.target.scn = None;
        match result {
            Ok(applied) => Ok(applied),
            Err(e) => {
                self.target.rollback().await;
                if let Ok(tables) = self.target.load_tables().await {
                    self.tables = tables;
                }
                let what = match windows.first() {
                    Some(first) if windows.len() > 1 => {
                        format!("windows {} to {}", first.scn(), last.scn())
                    }
                    _ => format!("window {}", last.scn()),
                };
                Err(e).with_context(|| format!("applying {what}"))
            }
        }
    }

    async fn apply_inner(&mut self, windows: &[Window]) -> Result<Applied> {
        let mut applied = Applied::default();
        let mut pending: BTreeMap<TableName, BTreeMap<Key, Change>> = BTreeMap::new();
        for event in windows.iter().flat_map(Window::events) {
            if event.is_table_event() {
                self.flush(&mut pending, &mut applied).await?;
                self.table_event(&event).await?;
                applied.table_events += 1;
                continue;
            }
            let schema = self.schema_of(&event)?;
            let name = (schema.database.clone(), schema.table.clone());
            let known = self.tables.get(&name);
            if event.is_delete() {
                // A delete needs the key only; a table the replica never created holds no row.
                let Some(current) = known.map(|t| &t.schema) else {
                    continue;
                };
                let key_names = |t: &TableSchema| -> Vec<String> {
                    t.primary_key
                        .iter()
                        .map(|&i| t.columns[i].name.clone())
                        .collect()
                };
                if key_names(current) != key_names(&schema) {
                    bail!(
                        "table {}.{}: a delete carries a primary key ({}) other than the replica's ({})",
                        name.0,
                        name.1,
                        key_names(&schema).join(", "),
                        key_names(current).join(", ")
                    );
                }
                let row = event.row(&schema)?;
                let key: Vec<Value> = schema.primary_key.iter().map(|&i| row[i].clone()).collect();
                pending
                    .entry(name)
                    .or_default()
                    .insert(event.key().to_owned(), Change::Delete(key));
                continue;
            }
            if known.map(|t| &t.schema) != Some(&*schema) {
                self.flush(&mut pending, &mut applied).await?;
                self.evolve(&schema).await?;
            }
            let row = event.row(&schema)?;
            pending
                .entry(name)
                .or_default()
                .insert(event.key().to_owned(), Change::Upsert(row));
        }
        self.flush(&mut pending, &mut applied).await?;
        if let Some(last) = windows.last() {
            self.target.store_checkpoint(last.checkpoint()).await?;
        }
        self.target.commit().await?;
        Ok(applied)
    }

    /// The table schema of an event's writer schema (cached by schema id).
    fn schema_of(&mut self, event: &DataEvent<'_>) -> Result<Arc<TableSchema>> {
        let id = event.raw().schema();
        if let Some(schema) = self.schemas.get(&id) {
            return Ok(schema.clone());
        }
        let schema = Arc::new(event.table_schema()?);
        self.schemas.insert(id, schema.clone());
        Ok(schema)
    }

    /// Creates the table, or alters it from the schema the replica has to `schema`.
    async fn evolve(&mut self, schema: &TableSchema) -> Result<()> {
        let name = (schema.database.clone(), schema.table.clone());
        let d = self.target.dialect();
        let shown = schema.qualified_name();
        let mut ran_ddl = true;
        match self.tables.get(&name).cloned() {
            None => {
                let sql = d.create_table(schema)?;
                self.target
                    .exec(
                        &d.create_namespace(&schema.database),
                        StatementKind::Create,
                        &shown,
                    )
                    .await?;
                self.target
                    .exec(&sql, StatementKind::Create, &shown)
                    .await?;
                tracing::info!(table = %schema.qualified_name(), "created the replica's table");
            }
            Some(old) => {
                let known = !mapping::may_rename(&old.statements);
                match d.alter_table(&old.schema, schema, known) {
                    Ok(Some(sql)) => {
                        self.target.exec(&sql, StatementKind::Alter, &shown).await?;
                        tracing::info!(table = %schema.qualified_name(), statement = %sql, "followed a schema change");
                    }
                    Ok(None) => ran_ddl = false,
                    // An empty table (truncated, or emptied for a snapshot) is simply made anew.
                    Err(e) if self.target.is_empty(schema).await? => {
                        let target_name = d.table_ident(schema);
                        self.target
                            .exec(
                                &format!("DROP TABLE IF EXISTS {target_name}"),
                                StatementKind::Drop,
                                &shown,
                            )
                            .await?;
                        self.target
                            .exec(&d.create_table(schema)?, StatementKind::Create, &shown)
                            .await?;
                        tracing::info!(table = %schema.qualified_name(), "created the empty replica table again for its new schema ({})", e.reason);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let replicated = Replicated {
            schema: schema.clone(),
            statements: Vec::new(),
        };
        self.target.store_table(&replicated).await?;
        if ran_ddl {
            self.ddl_committed().await?;
        }
        self.tables.insert(name, replicated);
        Ok(())
    }

    /// After DDL on a target that commits it at once (MariaDB), commits the replica's record of the
    /// table's schema at once too, so the record always matches the table: otherwise a second DDL in
    /// the window would commit the first record implicitly, a crash before the window's commit would
    /// leave a record one change behind the table, and the replay would write rows of the recorded
    /// schema into the changed table. Only the record is in the transaction here (the DDL committed
    /// what came before it). PostgreSQL's DDL is transactional: nothing to do.
    async fn ddl_committed(&mut self) -> Result<()> {
        if self.target.dialect() == Dialect::MariaDb {
            self.target.commit().await?;
        }
        Ok(())
    }

    async fn table_event(&mut self, event: &DataEvent<'_>) -> Result<()> {
        let Some(change) = event.table_change() else {
            return Ok(());
        };
        let change = change?;
        let name = split_table(&change.table)?;
        let target_name = self.target.dialect().qualified(&name.0, &name.1);
        match change.cause {
            TableChangeCause::Truncate => {
                if self.tables.contains_key(&name) {
                    self.target
                        .exec(
                            &format!("TRUNCATE TABLE {target_name}"),
                            StatementKind::Truncate,
                            &change.table,
                        )
                        .await?;
                    tracing::info!(table = %change.table, "truncated the replica's table");
                }
            }
            TableChangeCause::Drop => {
                self.target
                    .exec(
                        &format!("DROP TABLE IF EXISTS {target_name}"),
                        StatementKind::Drop,
                        &change.table,
                    )
                    .await?;
                self.target.forget_table(&name.0, &name.1).await?;
                self.ddl_committed().await?;
                self.tables.remove(&name);
                tracing::info!(table = %change.table, "dropped the replica's table (dropped at the source)");
            }
            TableChangeCause::Alter => {
                // Every statement is kept, an empty one (PostgreSQL sources log no DDL text) too:
                // it makes a later drop-and-add unclear (`mapping::may_rename`).
                if let Some(table) = self.tables.get_mut(&name) {
                    table.statements.push(change.statement.clone());
                    let table = table.clone();
                    self.target.store_table(&table).await?;
                }
                // The new columns arrive with the next row (`evolve`); only what the rows can never
                // tell is refused here.
                if change.new_schema.is_none() && mapping::adds_with_default(&change.statement) {
                    bail!(
                        "table {}: {:?} adds a column with a DEFAULT: existing rows hold that \
                         default at the source, which the change stream does not carry; apply the \
                         statement to the replica's table by hand and restart, or bootstrap the \
                         replica again",
                        change.table,
                        change.statement
                    );
                }
            }
        }
        Ok(())
    }

    /// Writes the pending changes of every table: deletes, then upserts, in bounded statements.
    async fn flush(
        &mut self,
        pending: &mut BTreeMap<TableName, BTreeMap<Key, Change>>,
        applied: &mut Applied,
    ) -> Result<()> {
        for (name, changes) in std::mem::take(pending) {
            let schema = self
                .tables
                .get(&name)
                .with_context(|| format!("table {}.{} has no replica schema", name.0, name.1))?
                .schema
                .clone();
            let mut deletes = Vec::new();
            let mut upserts = Vec::new();
            for change in changes.into_values() {
                match change {
                    Change::Delete(key) => deletes.push(key),
                    Change::Upsert(row) => upserts.push(row),
                }
            }
            applied.deletes += deletes.len() as u64;
            applied.upserts += upserts.len() as u64;
            let d = self.target.dialect();
            let shown = schema.qualified_name();
            for sql in delete_statements(d, &schema, &deletes)? {
                self.target
                    .exec(&sql, StatementKind::Delete, &shown)
                    .await?;
            }
            for sql in upsert_statements(d, &schema, &upserts)? {
                self.target
                    .exec(&sql, StatementKind::Upsert, &shown)
                    .await?;
            }
        }
        Ok(())
    }
}

/// MariaDB commits DDL at once: a crash between a schema change and the commit of its record (or
/// between a `DROP TABLE` and its forgetting) leaves a record that does not match the table. Each
/// recorded table is checked against the table's columns at start: a missing table is forgotten (its
/// next row creates it), and a record with other column names is replaced by the table's columns —
/// those the record knows with their recorded type, the others with a stand-in type that the next
/// schema change replaces (`MODIFY`) — so the replay's `ALTER`s start from the table as it is.
async fn reconcile(
    target: &mut Target,
    tables: &mut BTreeMap<TableName, Replicated>,
) -> Result<()> {
    let names: Vec<TableName> = tables.keys().cloned().collect();
    for name in names {
        let columns = target.table_columns(&name.0, &name.1).await?;
        let Some(record) = tables.get_mut(&name) else {
            continue;
        };
        if columns.is_empty() {
            tracing::warn!(table = %format!("{}.{}", name.0, name.1), "the replica's table is missing (a crash after dropping it): forgotten; its next row creates it");
            tables.remove(&name);
            continue;
        }
        let recorded: Vec<&str> = record
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if recorded == columns.iter().map(String::as_str).collect::<Vec<_>>() {
            continue;
        }
        tracing::warn!(
            table = %format!("{}.{}", name.0, name.1),
            recorded = %recorded.join(", "),
            actual = %columns.join(", "),
            "the recorded schema does not match the table (a crash between a schema change and its record); following the table's columns"
        );
        let key: Vec<String> = record
            .schema
            .primary_key
            .iter()
            .map(|&i| record.schema.columns[i].name.clone())
            .collect();
        let new_columns: Vec<Column> = columns
            .iter()
            .map(|c| {
                record
                    .schema
                    .columns
                    .iter()
                    .find(|r| &r.name == c)
                    .cloned()
                    .unwrap_or_else(|| Column::new(c.clone(), ColumnType::Json, true))
            })
            .collect();
        record.schema.primary_key = key
            .iter()
            .filter_map(|k| new_columns.iter().position(|c| &c.name == k))
            .collect();
        record.schema.columns = new_columns;
    }
    Ok(())
}

/// `DELETE FROM t WHERE k IN (…)` (composite keys: `(a = … AND b = …) OR …`), chunked.
pub fn delete_statements(
    dialect: Dialect,
    schema: &TableSchema,
    keys: &[Vec<Value>],
) -> Result<Vec<String>> {
    let head = format!("DELETE FROM {} WHERE ", dialect.table_ident(schema));
    let key_cols: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| dialect.ident(&schema.columns[i].name))
        .collect();
    let key_types: Vec<_> = schema
        .primary_key
        .iter()
        .map(|&i| &schema.columns[i].column_type)
        .collect();
    let literal = |value: &Value, i: usize, out: &mut String| -> Result<()> {
        dialect.literal(value, key_types[i], out).map_err(|e| {
            anyhow::anyhow!(
                "table {} column {}: {e}",
                schema.qualified_name(),
                schema.columns[schema.primary_key[i]].name
            )
        })
    };
    let mut out = Vec::new();
    let mut sql = String::new();
    for key in keys {
        let mut term = String::new();
        if key_cols.len() == 1 {
            literal(&key[0], 0, &mut term)?;
        } else {
            term.push('(');
            for (i, (col, value)) in key_cols.iter().zip(key).enumerate() {
                if i > 0 {
                    term.push_str(" AND ");
                }
                let _ = write!(term, "{col} = ");
                literal(value, i, &mut term)?;
            }
            term.push(')');
        }
        if !sql.is_empty() && sql.len() + term.len() > MAX_STATEMENT_BYTES {
            out.push(close_delete(std::mem::take(&mut sql), &key_cols));
        }
        if sql.is_empty() {
            sql.push_str(&head);
            if key_cols.len() == 1 {
                let _ = write!(sql, "{} IN (", key_cols[0]);
            }
        } else {
            sql.push_str(if key_cols.len() == 1 { ", " } else { " OR " });
        }
        sql.push_str(&term);
    }
    if !sql.is_empty() {
        out.push(close_delete(sql, &key_cols));
    }
    Ok(out)
}

fn close_delete(mut sql: String, key_cols: &[String]) -> String {
    if key_cols.len() == 1 {
        sql.push(')');
    }
    sql
}

/// Multi-row upserts of whole rows, chunked: MariaDB `INSERT … ON DUPLICATE KEY UPDATE`
/// (`INSERT IGNORE` when every column is in the key), PostgreSQL `INSERT … ON CONFLICT (key) DO
/// UPDATE SET c = EXCLUDED.c` (`DO NOTHING`). The rows have distinct keys (one change per key), as
/// PostgreSQL requires of one statement.
pub fn upsert_statements(
    dialect: Dialect,
    schema: &TableSchema,
    rows: &[Row],
) -> Result<Vec<String>> {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| dialect.ident(&c.name))
        .collect();
    let (verb, tail) = dialect.upsert_parts(schema);
    let head = format!(
        "{verb} INTO {} ({}) VALUES ",
        dialect.table_ident(schema),
        cols.join(", ")
    );
    let mut out = Vec::new();
    let mut sql = String::new();
    for row in rows {
        if row.len() != cols.len() {
            bail!(
                "a row of {} has {} values for {} columns",
                schema.qualified_name(),
                row.len(),
                cols.len()
            );
        }
        let mut tuple = String::from("(");
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                tuple.push_str(", ");
            }
            dialect
                .literal(value, &schema.columns[i].column_type, &mut tuple)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "table {} column {}: {e}",
                        schema.qualified_name(),
                        schema.columns[i].name
                    )
                })?;
        }
        tuple.push(')');
        if !sql.is_empty() && sql.len() + tuple.len() + tail.len() > MAX_STATEMENT_BYTES {
            sql.push_str(&tail);
            out.push(std::mem::take(&mut sql));
        }
        if sql.is_empty() {
            sql.push_str(&head);
        } else {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    if !sql.is_empty() {
        sql.push_str(&tail);
        out.push(sql);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use databus_client::model::{Column, ColumnType};

    use super::*;

    fn schema(key: Vec<usize>) -> TableSchema {
        TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: vec![
                Column::new("a", ColumnType::Int { unsigned: false }, false),
                Column::new("b", ColumnType::Text { max_chars: Some(8) }, false),
            ],
            primary_key: key,
        }
    }

    #[test]
    fn statements_are_batched_by_table() {
        let rows = vec![
            vec![Value::Int(1), Value::Text("x".into())],
            vec![Value::Int(2), Value::Text("y".into())],
        ];
        assert_eq!(
            upsert_statements(Dialect::MariaDb, &schema(vec![0]), &rows).unwrap(),
            vec![
                "INSERT INTO `d`.`t` (`a`, `b`) VALUES (1, 'x'), (2, 'y') ON DUPLICATE KEY UPDATE \
                 `b` = VALUES(`b`)"
            ]
        );
        assert_eq!(
            upsert_statements(Dialect::MariaDb, &schema(vec![0, 1]), &rows).unwrap(),
            vec!["INSERT IGNORE INTO `d`.`t` (`a`, `b`) VALUES (1, 'x'), (2, 'y')"]
        );
        assert_eq!(
            delete_statements(
                Dialect::MariaDb,
                &schema(vec![0]),
                &[vec![Value::Int(1)], vec![Value::Int(2)]]
            )
            .unwrap(),
            vec!["DELETE FROM `d`.`t` WHERE `a` IN (1, 2)"]
        );
        assert_eq!(
            delete_statements(
                Dialect::MariaDb,
                &schema(vec![0, 1]),
                &[rows[0].clone(), rows[1].clone()]
            )
            .unwrap(),
            vec!["DELETE FROM `d`.`t` WHERE (`a` = 1 AND `b` = 'x') OR (`a` = 2 AND `b` = 'y')"]
        );
    }

    #[test]
    fn postgres_statements_use_on_conflict_and_typed_literals() {
        let rows = vec![
            vec![Value::Int(1), Value::Text("x".into())],
            vec![Value::Int(2), Value::Text("it's".into())],
        ];
        assert_eq!(
            upsert_statements(Dialect::Postgres, &schema(vec![0]), &rows).unwrap(),
            vec![
                "INSERT INTO \"d\".\"t\" (\"a\", \"b\") VALUES (1, 'x'), (2, 'it''s') ON CONFLICT \
                 (\"a\") DO UPDATE SET \"b\" = EXCLUDED.\"b\""
            ]
        );
        assert_eq!(
            upsert_statements(Dialect::Postgres, &schema(vec![0, 1]), &rows).unwrap(),
            vec![
                "INSERT INTO \"d\".\"t\" (\"a\", \"b\") VALUES (1, 'x'), (2, 'it''s') ON CONFLICT \
                 (\"a\", \"b\") DO NOTHING"
            ]
        );
        assert_eq!(
            delete_statements(Dialect::Postgres, &schema(vec![0, 1]), &rows).unwrap(),
            vec![
                "DELETE FROM \"d\".\"t\" WHERE (\"a\" = 1 AND \"b\" = 'x') OR (\"a\" = 2 AND \
                 \"b\" = 'it''s')"
            ]
        );
        let nul = vec![vec![Value::Int(1), Value::Text("a\0b".into())]];
        let err = upsert_statements(Dialect::Postgres, &schema(vec![0]), &nul)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("table d.t column b") && err.contains("NUL"),
            "{err}"
        );
    }

    #[test]
    fn long_batches_are_cut_below_the_statement_bound() {
        let rows: Vec<Row> = (0..100_000)
            .map(|i| vec![Value::Int(i), Value::Text("some text".into())])
            .collect();
        let statements = upsert_statements(Dialect::MariaDb, &schema(vec![0]), &rows).unwrap();
        assert!(statements.len() > 1);
        assert!(
            statements
                .iter()
                .all(|s| s.len() <= MAX_STATEMENT_BYTES + 100)
        );
        let deletes: Vec<Vec<Value>> = (0..200_000).map(|i| vec![Value::Int(i)]).collect();
        let statements = delete_statements(Dialect::MariaDb, &schema(vec![0]), &deletes).unwrap();
        assert!(statements.len() > 1 && statements.iter().all(|s| s.ends_with(')')));
    }
}
