//! The target MariaDB: connection settings, the replica's own tables (checkpoint and the schema of
//! each replicated table), and statement execution.
//!
//! The session runs with `autocommit = 0`: every statement is part of the open transaction until
//! `COMMIT`. MariaDB commits implicitly before and after DDL (`CREATE`, `ALTER`, `TRUNCATE`,
//! `DROP`); the next statement opens a new transaction by itself, so the rest of a window and its
//! checkpoint still commit together (see "Crash safety" in docs/replicate.md).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use databus_client::model::TableSchema;
use databus_core::Checkpoint;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::mapping::{ident, qualified, string_literal};
use crate::UsageError;

/// Table of the replica's checkpoint, one row per replica name.
pub const CHECKPOINT_TABLE: &str = "databus_replica_checkpoint";
/// Table of the schema the replica created each replicated table with.
pub const TABLES_TABLE: &str = "databus_replica_tables";

/// Connection options from a `mysql://user@host:port/` URL and a password given apart from it.
pub fn options(url: &str, password: Option<String>) -> Result<Opts> {
    let opts = Opts::from_url(url)
        .map_err(|e| UsageError(format!("--to {url:?} is not a mysql:// URL: {e}")))?;
    if opts.pass().is_some() {
        return Err(UsageError(
            "--to has a password in the URL, where the process list and logs show it; give it \
             with --password-env NAME or --password-file PATH"
                .into(),
        )
        .into());
    }
    Ok(OptsBuilder::from_opts(opts)
        .pass(password)
        .db_name(None::<String>)
        .stmt_cache_size(0)
        .into())
}

/// A replicated table: the schema the replica's table has, and the source's schema-change
/// statements seen since (they tell a drop and an add from a rename).
#[derive(Debug, Clone, PartialEq)]
pub struct Replicated {
    /// The replica table's schema.
    pub schema: TableSchema,
    /// `ALTER` statements of the source since `schema`.
    pub statements: Vec<String>,
}

/// A connection to the target with the replica's session settings and its own tables.
#[derive(Debug)]
pub struct Target {
    pub(super) conn: Conn,
    /// Database holding the replica's own tables.
    pub(super) meta_db: String,
    /// This replica's name (its row in the checkpoint table).
    pub(super) name: String,
}

impl Target {
    /// Connects, sets up the session and creates the replica's own database and tables.
    pub async fn connect(opts: Opts, meta_db: &str, name: &str) -> Result<Target> {
        let shown = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        let mut conn = Conn::new(opts)
            .await
            .with_context(|| format!("connecting to the target MariaDB at {shown}"))?;
        // UTC for TIMESTAMP literals; zero dates allowed (the source may have them); strict, so a
        // value that does not fit fails instead of being truncated.
        conn.query_drop(
            "SET SESSION autocommit = 0, time_zone = '+00:00', \
             sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO', \
             NAMES utf8mb4",
        )
        .await
        .context("setting up the target session")?;
        // Older servers make the first TIMESTAMP NOT NULL column auto-updating without it.
        let _ = conn
            .query_drop("SET SESSION explicit_defaults_for_timestamp = 1")
            .await;
        let mut target = Target {
            conn,
            meta_db: meta_db.to_owned(),
            name: name.to_owned(),
        };
        let db = ident(meta_db);
        for sql in [
            format!("CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4"),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (replica VARCHAR(255) NOT NULL PRIMARY KEY, \
                 checkpoint LONGTEXT NOT NULL, scn BIGINT UNSIGNED NOT NULL, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
                qualified(meta_db, CHECKPOINT_TABLE)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (replica VARCHAR(255) NOT NULL, \
                 db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL, table_schema LONGTEXT NOT NULL, \
                 statements LONGTEXT NOT NULL, \
                 PRIMARY KEY (replica, db, tbl)) ENGINE=InnoDB",
                qualified(meta_db, TABLES_TABLE)
            ),
        ] {
            target
                .exec(&sql)
                .await
                .with_context(|| format!("creating the replica's tables in database {meta_db}"))?;
        }
        Ok(target)
    }

    /// Runs one statement (in the open transaction).
    pub async fn exec(&mut self, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).await.with_context(|| {
            let shown: String = sql.chars().take(300).collect();
            format!("target statement failed: {shown}")
        })
    }

    /// `COMMIT`.
    pub async fn commit(&mut self) -> Result<()> {
        self.exec("COMMIT").await
    }

    /// `ROLLBACK`, errors ignored (the connection may be gone).
    pub async fn rollback(&mut self) {
        let _ = self.conn.query_drop("ROLLBACK").await;
    }

    /// The replica's stored checkpoint.
    pub async fn load_checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        let sql = format!(
            "SELECT checkpoint FROM {} WHERE replica = {}",
            qualified(&self.meta_db, CHECKPOINT_TABLE),
            string_literal(&self.name)
        );
        let text: Option<String> = self.conn.query_first(sql).await?;
        self.rollback().await;
        text.map(|t| {
            Checkpoint::from_json(&t).with_context(|| {
                format!(
                    "the checkpoint of replica {} in {}.{CHECKPOINT_TABLE} is unusable; fix or \
                     delete the row (a deleted row makes the replica start over)",
                    self.name, self.meta_db
                )
            })
        })
        .transpose()
    }

    /// Writes the checkpoint in the open transaction.
    pub async fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (replica, checkpoint, scn) VALUES ({}, {}, {}) ON DUPLICATE KEY UPDATE \
             checkpoint = VALUES(checkpoint), scn = VALUES(scn), updated_at = CURRENT_TIMESTAMP(6)",
            qualified(&self.meta_db, CHECKPOINT_TABLE),
            string_literal(&self.name),
            string_literal(&checkpoint.to_json()),
            checkpoint.window_scn.get()
        );
        self.exec(&sql).await
    }

    /// The schema each replicated table was last created or altered to, by `(database, table)`,
    /// with the source's schema-change statements seen since.
    pub async fn load_tables(&mut self) -> Result<BTreeMap<(String, String), Replicated>> {
        let sql = format!(
            "SELECT db, tbl, table_schema, statements FROM {} WHERE replica = {}",
            qualified(&self.meta_db, TABLES_TABLE),
            string_literal(&self.name)
        );
        let rows: Vec<(String, String, String, String)> = self.conn.query(sql).await?;
        self.rollback().await;
        let mut tables = BTreeMap::new();
        for (db, tbl, json, statements) in rows {
            let (Ok(schema), Ok(statements)) = (
                serde_json::from_str::<TableSchema>(&json),
                serde_json::from_str::<Vec<String>>(&statements),
            ) else {
                bail!(
                    "the schema of {db}.{tbl} in {}.{TABLES_TABLE} is unusable; delete the row and \
                     the replica's table, then restart (the table is created again)",
                    self.meta_db
                );
            };
            tables.insert((db, tbl), Replicated { schema, statements });
        }
        Ok(tables)
    }

    /// Records the replica's schema of a table and the statements since (in the open transaction).
    pub async fn store_table(&mut self, table: &Replicated) -> Result<()> {
        let schema = &table.schema;
        let json = serde_json::to_string(schema)?;
        let statements = serde_json::to_string(&table.statements)?;
        let sql = format!(
            "INSERT INTO {} (replica, db, tbl, table_schema, statements) VALUES ({}, {}, {}, {}, {}) \
             ON DUPLICATE KEY UPDATE table_schema = VALUES(table_schema), statements = VALUES(statements)",
            qualified(&self.meta_db, TABLES_TABLE),
            string_literal(&self.name),
            string_literal(&schema.database),
            string_literal(&schema.table),
            string_literal(&json),
            string_literal(&statements)
        );
        self.exec(&sql).await
    }

    /// Forgets a dropped table (in the open transaction).
    pub async fn forget_table(&mut self, database: &str, table: &str) -> Result<()> {
        let sql = format!(
            "DELETE FROM {} WHERE replica = {} AND db = {} AND tbl = {}",
            qualified(&self.meta_db, TABLES_TABLE),
            string_literal(&self.name),
            string_literal(database),
            string_literal(table)
        );
        self.exec(&sql).await
    }
}
