//! The SQL dialect of a target: quoting, literals, column types, `CREATE`/`ALTER TABLE`, upserts and
//! the replica's own tables. Pure text generation: [`mapping`] holds MariaDB's,
//! [`pg_mapping`] PostgreSQL's; the target module runs what they write.

use databus_client::model::{ColumnType, TableSchema, Value};

use super::mapping::{self, MappingError};
use super::pg_mapping;

/// Which SQL a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MariaDB (and MySQL): backtick identifiers, `ON DUPLICATE KEY UPDATE`, DDL commits implicitly.
    MariaDb,
    /// PostgreSQL: double-quoted identifiers, `ON CONFLICT … DO UPDATE`, transactional DDL. A
    /// source database becomes a schema of the target database.
    Postgres,
}

impl Dialect {
    /// The target's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::MariaDb => "MariaDB",
            Dialect::Postgres => "PostgreSQL",
        }
    }

    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::MariaDb => mapping::ident(name),
            Dialect::Postgres => pg_mapping::ident(name),
        }
    }

    /// `database.table` quoted.
    pub fn qualified(self, database: &str, table: &str) -> String {
        format!("{}.{}", self.ident(database), self.ident(table))
    }

    /// The quoted name of a replicated table.
    pub fn table_ident(self, table: &TableSchema) -> String {
        self.qualified(&table.database, &table.table)
    }

    /// A string literal (text of the replica's own tables).
    pub fn string_literal(self, s: &str) -> String {
        match self {
            Dialect::MariaDb => mapping::string_literal(s),
            Dialect::Postgres => pg_mapping::string_literal(s),
        }
    }

    /// The literal of `value` in a column of `column_type`, appended to `out`.
    pub fn literal(
        self,
        value: &Value,
        column_type: &ColumnType,
        out: &mut String,
    ) -> Result<(), String> {
        match self {
            Dialect::MariaDb => mapping::literal(value, out),
            Dialect::Postgres => pg_mapping::literal(value, column_type, out),
        }
    }

    /// Creates the namespace (MariaDB database, PostgreSQL schema) of a source database.
    pub fn create_namespace(self, database: &str) -> String {
        match self {
            Dialect::MariaDb => format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                mapping::ident(database)
            ),
            Dialect::Postgres => {
                format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    pg_mapping::ident(database)
                )
            }
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` of a replicated table.
    pub fn create_table(self, table: &TableSchema) -> Result<String, MappingError> {
        match self {
            Dialect::MariaDb => mapping::create_table(table),
            Dialect::Postgres => pg_mapping::create_table(table),
        }
    }

    /// The `ALTER TABLE` from `old` to `new` (see [`mapping::alter_table`]).
    pub fn alter_table(
        self,
        old: &TableSchema,
        new: &TableSchema,
        drops_and_adds_known: bool,
    ) -> Result<Option<String>, MappingError> {
        match self {
            Dialect::MariaDb => mapping::alter_table(old, new, drops_and_adds_known),
            Dialect::Postgres => pg_mapping::alter_table(old, new, drops_and_adds_known),
        }
    }

    /// The verb and the tail of a multi-row upsert of whole rows of `table`:
    /// `INSERT INTO t (…) VALUES (…), (…)` + tail.
    pub fn upsert_parts(self, table: &TableSchema) -> (&'static str, String) {
        let key: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| self.ident(&table.columns[i].name))
            .collect();
        let non_key: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !table.primary_key.contains(i))
            .map(|(_, c)| self.ident(&c.name))
            .collect();
        match (self, non_key.is_empty()) {
            (Dialect::MariaDb, true) => ("INSERT IGNORE", String::new()),
            (Dialect::MariaDb, false) => {
                let sets: Vec<String> = non_key
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                (
                    "INSERT",
                    format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
                )
            }
            (Dialect::Postgres, true) => (
                "INSERT",
                format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")),
            ),
            (Dialect::Postgres, false) => {
                let sets: Vec<String> = non_key
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                (
                    "INSERT",
                    format!(
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        key.join(", "),
                        sets.join(", ")
                    ),
                )
            }
        }
    }

    /// The statements creating the replica's own tables in `meta_db` (checkpoint, tables).
    pub fn meta_tables(self, meta_db: &str, checkpoint: &str, tables: &str) -> Vec<String> {
        let (cp, tb) = (
            self.qualified(meta_db, checkpoint),
            self.qualified(meta_db, tables),
        );
        match self {
            Dialect::MariaDb => vec![
                self.create_namespace(meta_db),
                format!(
                    "CREATE TABLE IF NOT EXISTS {cp} (replica VARCHAR(255) NOT NULL PRIMARY KEY, \
                     checkpoint LONGTEXT NOT NULL, scn BIGINT UNSIGNED NOT NULL, \
                     updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {tb} (replica VARCHAR(255) NOT NULL, \
                     db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, table_schema LONGTEXT NOT NULL, \
                     statements LONGTEXT NOT NULL, \
                     PRIMARY KEY (replica, db, tbl)) ENGINE=InnoDB"
                ),
            ],
            Dialect::Postgres => vec![
                self.create_namespace(meta_db),
                format!(
                    "CREATE TABLE IF NOT EXISTS {cp} (replica varchar(255) NOT NULL PRIMARY KEY, \
                     checkpoint text NOT NULL, scn numeric(20,0) NOT NULL, \
                     updated_at timestamptz(6) NOT NULL DEFAULT now())"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {tb} (replica varchar(255) NOT NULL, \
                     db varchar(255) NOT NULL, tbl varchar(255) NOT NULL, table_schema text NOT NULL, \
                     statements text NOT NULL, PRIMARY KEY (replica, db, tbl))"
                ),
            ],
        }
    }

    /// Insert-or-replace of one row of a meta table by its key columns (`values` are literals).
    pub fn meta_upsert(
        self,
        table: &str,
        columns: &[&str],
        key: &[&str],
        values: &[String],
        also: &str,
    ) -> String {
        let updates: Vec<&&str> = columns.iter().filter(|c| !key.contains(c)).collect();
        let head = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            values.join(", ")
        );
        match self {
            Dialect::MariaDb => {
                let mut sets: Vec<String> = updates
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                if !also.is_empty() {
                    sets.push(also.to_owned());
                }
                format!("{head} ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            Dialect::Postgres => {
                let mut sets: Vec<String> = updates
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                if !also.is_empty() {
                    sets.push(also.to_owned());
                }
                format!(
                    "{head} ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    sets.join(", ")
                )
            }
        }
    }

    /// The expression of "now" for the checkpoint's `updated_at`.
    pub fn now(self) -> &'static str {
        match self {
            Dialect::MariaDb => "CURRENT_TIMESTAMP(6)",
            Dialect::Postgres => "now()",
        }
    }
}
