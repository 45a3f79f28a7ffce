//! The events of one window, built from a source transaction (see `docs/protocol.md`, "What the
//! events of a window say"):
//!
//! - row changes: an upsert per insert, an upsert (or, with before images, an `update`) per update
//!   that keeps the key, a delete of the old key then an upsert of the new one per update of the key,
//!   a delete per delete;
//! - table events of a DDL statement: a `truncate` per TRUNCATE / DROP TABLE (and per captured table
//!   of a dropped database), a `schema_change` per ALTER; and a `schema_change` with both schema ids
//!   before the first row of a new schema version.

use databus_connectors::{ChangeKind, DdlKind, RowChange, SourceTransaction, TableName};
use databus_core::{EventBuilder, Key, Opcode, SchemaId, SourceId, TableChange, TableChangeCause};
use databus_serde_formats::{RegisteredSchema, Row, TableSchema, event_key};

use super::{Pipeline, append_error_message};
use crate::RelayError;

impl Pipeline {
    pub(super) fn source_of(&self, table: &TableName) -> Option<SourceId> {
        self.by_table
            .get(&(table.database.clone(), table.table.clone()))
            .copied()
    }

    /// Appends the table events of a DDL statement (not yet published): a `truncate` for TRUNCATE and
    /// DROP (every row of the source is gone), a `schema_change` without the new schema for ALTER (the
    /// binlog tells the new columns with the next row, whose window then carries a `schema_change`
    /// with both ids). CREATE needs no event: the table starts empty (a DROP before it cleared it).
    pub(super) fn append_table_changes(
        &mut self,
        tx: &SourceTransaction,
    ) -> Result<(), RelayError> {
        for ddl in &tx.table_changes {
            if ddl.kind == DdlKind::DropDatabase {
                // Every captured table of the database is dropped.
                let mut dropped: Vec<(String, SourceId)> = self
                    .by_table
                    .iter()
                    .filter(|((database, _), _)| *database == ddl.table.database)
                    .map(|((database, table), source)| (format!("{database}.{table}"), *source))
                    .collect();
                dropped.sort_by_key(|(_, source)| *source);
                for (table, source) in dropped {
                    let current = self.current_schema.get(&source).copied();
                    let change = TableChange {
                        table,
                        cause: TableChangeCause::Drop,
                        statement: ddl.statement.clone(),
                        old_schema: None,
                        new_schema: None,
                    };
                    self.append_table_event(tx, source, Opcode::Truncate, current, &change)?;
                }
                continue;
            }
            let Some(source) = self.source_of(&ddl.table) else {
                continue;
            };
            let current = self.current_schema.get(&source).copied();
            let (opcode, change) = match ddl.kind {
                DdlKind::Truncate | DdlKind::Drop => (
                    Opcode::Truncate,
                    TableChange {
                        table: ddl.table.to_string(),
                        cause: if ddl.kind == DdlKind::Drop {
                            TableChangeCause::Drop
                        } else {
                            TableChangeCause::Truncate
                        },
                        statement: ddl.statement.clone(),
                        old_schema: None,
                        new_schema: None,
                    },
                ),
                DdlKind::Alter => (
                    Opcode::SchemaChange,
                    TableChange {
                        table: ddl.table.to_string(),
                        cause: TableChangeCause::Alter,
                        statement: ddl.statement.clone(),
                        old_schema: current,
                        new_schema: None,
                    },
                ),
                DdlKind::Create | DdlKind::DropDatabase => continue,
            };
            self.append_table_event(tx, source, opcode, current, &change)?;
        }
        Ok(())
    }

    /// Appends one table event of `source`.
    fn append_table_event(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        opcode: Opcode,
        schema: Option<SchemaId>,
        change: &TableChange,
    ) -> Result<(), RelayError> {
        let payload = change.to_payload();
        let event = EventBuilder::new(tx.scn, opcode)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.unwrap_or(SchemaId::NONE))
            .payload(&payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    /// Before the first row of a new schema version of `source` in this run, a `schema_change` event
    /// with both schema ids (and the DDL statements seen since the previous version's last row).
    fn announce_schema(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
    ) -> Result<(), RelayError> {
        let staged = self
            .window_schemas
            .iter()
            .rev()
            .find(|(s, _)| *s == source)
            .map(|(_, id)| *id);
        let Some(old) = staged.or_else(|| self.current_schema.get(&source).copied()) else {
            // The first row of the source since the relay started: nothing to compare with.
            self.window_schemas.push((source, schema.id));
            return Ok(());
        };
        if old == schema.id {
            return Ok(());
        }
        let change = TableChange {
            table: schema.table.qualified_name(),
            cause: TableChangeCause::Alter,
            statement: self.pending_ddl.get(&source).cloned().unwrap_or_default(),
            old_schema: Some(old),
            new_schema: Some(schema.id),
        };
        self.append_table_event(tx, source, Opcode::SchemaChange, Some(schema.id), &change)?;
        self.window_schemas.push((source, schema.id));
        Ok(())
    }

    /// Appends the window's events (not yet published).
    ///
    /// An update that changes the row's key becomes two events of the window, in this order: a delete
    /// of the old key (payload: the before image) and an upsert of the new key, so every consumer that
    /// applies changes by key drops the old key (each event passes the partition filters by its own
    /// key).
    pub(super) fn append_changes(&mut self, tx: &SourceTransaction) -> Result<(), RelayError> {
        for change in &tx.changes {
            let table = &change.table;
            let Some((source, schema)) = self.table(table)? else {
                // The connector captures exactly the configured tables; anything else is skipped.
                tracing::warn!(table = %table.qualified_name(), "change to an unmapped table skipped");
                continue;
            };
            self.announce_schema(tx, source, &schema)?;
            match change.kind {
                ChangeKind::Insert => {
                    let row = self.image(tx, change, change.after.as_ref())?;
                    let key = self.key_of(table, row)?;
                    self.append_row(tx, source, &schema, Opcode::Upsert, &key, row)?;
                }
                ChangeKind::Update => {
                    let after = self.image(tx, change, change.after.as_ref())?;
                    let key = self.key_of(table, after)?;
                    // A key change: the old key is deleted in the same window, before the new row
                    // (the delete carries the before image).
                    let mut with_before = None;
                    if let Some(before) = change.before.as_ref() {
                        let old_key = self.key_of(table, before)?;
                        if old_key != key {
                            self.append_row(tx, source, &schema, Opcode::Delete, &old_key, before)?;
                        } else if self.parts.before_images {
                            with_before = Some(before);
                        }
                    }
                    match with_before {
                        Some(before) => {
                            self.append_update(tx, source, &schema, &key, after, before)?
                        }
                        None => {
                            self.append_row(tx, source, &schema, Opcode::Upsert, &key, after)?
                        }
                    }
                }
                ChangeKind::Delete => {
                    let row = self.image(tx, change, change.before.as_ref())?;
                    let key = self.key_of(table, row)?;
                    self.append_row(tx, source, &schema, Opcode::Delete, &key, row)?;
                }
            }
        }
        Ok(())
    }

    /// The row image a change must carry.
    fn image<'r>(
        &self,
        tx: &SourceTransaction,
        change: &RowChange,
        row: Option<&'r Row>,
    ) -> Result<&'r Row, RelayError> {
        row.ok_or_else(|| {
            self.definite(format!(
                "{:?} of {} at SCN {} has no row image",
                change.kind,
                change.table.qualified_name(),
                tx.scn
            ))
        })
    }

    /// The event key of `row`.
    fn key_of(&self, table: &TableSchema, row: &Row) -> Result<Key, RelayError> {
        event_key(table, row)
            .map_err(|e| self.definite(format!("key of a row of {}: {e}", table.qualified_name())))
    }

    /// Encodes an update with its before image (an [`Opcode::Update`] event) and appends it.
    fn append_update(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
        key: &Key,
        after: &Row,
        before: &Row,
    ) -> Result<(), RelayError> {
        self.before.clear();
        if let Err(e) = schema.encoder.encode(after, &mut self.before) {
            return Err(self.definite(format!(
                "cannot encode a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        let after_len = self.before.len();
        if let Err(e) = schema.encoder.encode(before, &mut self.before) {
            return Err(self.definite(format!(
                "cannot encode the before image of a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        self.payload.clear();
        let (after_bytes, before_bytes) = self.before.split_at(after_len);
        databus_core::event::update_payload(after_bytes, before_bytes, &mut self.payload);
        let event = EventBuilder::new(tx.scn, Opcode::Update)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.id)
            .key(key.as_ref())
            .payload(&self.payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    /// Encodes `row` and appends it as one event of the open window.
    fn append_row(
        &mut self,
        tx: &SourceTransaction,
        source: SourceId,
        schema: &RegisteredSchema,
        opcode: Opcode,
        key: &Key,
        row: &Row,
    ) -> Result<(), RelayError> {
        self.payload.clear();
        if let Err(e) = schema.encoder.encode(row, &mut self.payload) {
            return Err(self.definite(format!(
                "cannot encode a row of {} at SCN {}: {e}",
                schema.table.qualified_name(),
                tx.scn
            )));
        }
        let event = EventBuilder::new(tx.scn, opcode)
            .source(source)
            .timestamp_ns(tx.commit_timestamp_ns)
            .schema(schema.id)
            .key(key.as_ref())
            .payload(&self.payload);
        self.parts
            .writer
            .append(&event)
            .map_err(|e| self.definite(append_error_message(tx.scn, &e)))
    }

    /// Bookkeeping after the window of `tx` was published: the schema versions its rows used, and
    /// the DDL statements to tell with the next schema change of their source.
    pub(super) fn published(&mut self, tx: &SourceTransaction) {
        for (source, schema) in self.window_schemas.drain(..) {
            self.current_schema.insert(source, schema);
            self.pending_ddl.remove(&source);
        }
        for ddl in &tx.table_changes {
            if let Some(source) = self.source_of(&ddl.table) {
                if matches!(ddl.kind, DdlKind::Alter | DdlKind::Create) {
                    let pending = self.pending_ddl.entry(source).or_default();
                    if !pending.is_empty() {
                        pending.push_str("; ");
                    }
                    pending.push_str(&ddl.statement);
                }
            }
        }
    }
}
