//! The change-fidelity workload: a seeded random mix of every change a ROW-format MariaDB source can
//! make to captured tables, for checking that consumers rebuild the source exactly.
//!
//! Two tables in database `fid`: `fid.single` (an integer primary key and nullable columns of several
//! types) and `fid.composite` (a two-column primary key, integer and text). Each step of
//! [`FidelityWorkload::run`] is one of:
//!
//! | share | step |
//! |------:|------|
//! | 4 % | `TRUNCATE TABLE` of one table |
//! | 4 % | `ALTER TABLE … ADD COLUMN extra<n> INT NULL` (a new name each time), or `DROP COLUMN` of it when it is there |
//! | 2 % | `ALTER TABLE … MODIFY COLUMN v VARCHAR(60)` (or back to 40) |
//! | 2 % | `DROP TABLE` then `CREATE TABLE` (the base definition) |
//! | 8 % | a transaction of 1..=5 changes, rolled back |
//! | 10 % | a transaction with a savepoint: changes, `SAVEPOINT`, changes, `ROLLBACK TO SAVEPOINT`, changes, `COMMIT` |
//! | 70 % | a committed transaction of 1..=5 changes on either table (multi-table transactions) |
//!
//! A change is an insert of an absent key, an update of non-key columns, a delete, or a key change
//! (`UPDATE … SET id = …` / `SET b = …, a = …`: the row moves to another key, and often to another MOD
//! bucket). Values are NULL a quarter of the time. Keys come from small ranges so rows are often
//! changed, deleted and re-created. The generator keeps a model of which keys exist (rolled-back
//! changes are dropped from it), so every statement succeeds; the state to compare with is read from
//! the source itself ([`crate::checker::source_rows_keyed`]).
//!
//! A column is never re-added under the name of one dropped earlier: rows not written since the drop
//! would keep the dropped column's old values in every consumer and in the bootstrap snapshot (the
//! binlog has no row events for what an ALTER does to existing rows; see "Schema changes" in
//! `docs/protocol.md`). Seed 4 with a re-used name shows it.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::process::TableSpec;

/// Logical source id of `fid.single`.
pub const SINGLE: u16 = 11;
/// Logical source id of `fid.composite`.
pub const COMPOSITE: u16 = 12;

const CREATE_SINGLE: &str = "CREATE TABLE fid.single (id INT PRIMARY KEY, v VARCHAR(40) NULL, \
     n BIGINT NULL, d DECIMAL(12,3) NULL, day DATE NULL, at DATETIME NULL, u INT UNSIGNED NULL, \
     tm TIME NULL, e ENUM('red','green','blue') NULL, s SET('x','y','z') NULL, dbl DOUBLE NULL)";
const CREATE_COMPOSITE: &str = "CREATE TABLE fid.composite (a INT NOT NULL, b VARCHAR(8) NOT NULL, \
     v VARCHAR(40) NULL, n INT NULL, PRIMARY KEY (a, b))";

/// Logical source id of `fid.pad`: large rows that fill relay buffers (not part of the mix).
pub const PAD: u16 = 13;

/// The statements creating the workload's database and tables.
pub const SCHEMA: &[&str] = &[
    "CREATE DATABASE fid CHARACTER SET utf8mb4",
    CREATE_SINGLE,
    CREATE_COMPOSITE,
    "CREATE TABLE fid.pad (id INT PRIMARY KEY, body MEDIUMTEXT NOT NULL)",
];

/// The relay's table mapping for the workload's tables.
pub fn tables() -> Vec<TableSpec> {
    vec![
        TableSpec {
            id: SINGLE,
            name: "single".into(),
            table: "fid.single".into(),
        },
        TableSpec {
            id: COMPOSITE,
            name: "composite".into(),
            table: "fid.composite".into(),
        },
        TableSpec {
            id: PAD,
            name: "pad".into(),
            table: "fid.pad".into(),
        },
    ]
}

/// Writes `transactions` transactions of one ~100 kB row each to `fid.pad` (ids from `first`): pushes
/// older windows out of a small relay buffer.
pub async fn pad(conn: &mut Conn, first: i64, transactions: i64) -> Result<()> {
    for id in first..first + transactions {
        conn.query_drop(format!(
            "INSERT INTO fid.pad VALUES ({id}, REPEAT('p', 100000))"
        ))
        .await
        .context("writing fid.pad")?;
    }
    Ok(())
}

/// `(source, table, key columns)` of each table: what a checker compares.
pub const TABLES: [(u16, &str, &[&str]); 2] = [
    (SINGLE, "fid.single", &["id"]),
    (COMPOSITE, "fid.composite", &["a", "b"]),
];

const B_VALUES: [&str; 4] = ["x", "y", "zz", "w\u{e9}"];

/// How many steps of each kind a run made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FidelityStats {
    /// Transactions committed.
    pub commits: u64,
    /// Transactions rolled back.
    pub rollbacks: u64,
    /// Savepoints rolled back to.
    pub savepoints: u64,
    /// Row changes committed (inserts, updates, deletes, key changes).
    pub changes: u64,
    /// Key changes committed.
    pub key_changes: u64,
    /// Key changes committed on the composite-key table.
    pub composite_key_changes: u64,
    /// TRUNCATE statements.
    pub truncates: u64,
    /// ALTER TABLE statements.
    pub alters: u64,
    /// DROP + CREATE pairs.
    pub drop_creates: u64,
    /// Transactions touching both tables.
    pub multi_table: u64,
}

/// Which keys exist and which optional columns the tables have.
#[derive(Debug, Clone, Default)]
struct Model {
    single: BTreeSet<i64>,
    composite: BTreeSet<(i64, String)>,
    /// The added column, if any, per table (single, composite).
    extra: [Option<String>; 2],
}

/// The generator. See the [module docs](self).
#[derive(Debug)]
pub struct FidelityWorkload {
    rng: StdRng,
    model: Model,
    wide: [bool; 2],
    /// Added columns so far (names `extra1`, `extra2`, …).
    added: u64,
    stats: FidelityStats,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

impl FidelityWorkload {
    /// A generator with `seed`, for the tables as [`SCHEMA`] creates them (empty).
    pub fn new(seed: u64) -> FidelityWorkload {
        FidelityWorkload {
            rng: StdRng::seed_from_u64(seed),
            model: Model::default(),
            wide: [false; 2],
            added: 0,
            stats: FidelityStats::default(),
        }
    }

    /// What the runs so far did.
    pub fn stats(&self) -> FidelityStats {
        self.stats
    }

    fn maybe<T>(&mut self, v: T) -> Option<T> {
        (self.rng.random_range(0..4) != 0).then_some(v)
    }

    fn sql_opt(v: Option<String>) -> String {
        v.unwrap_or_else(|| "NULL".into())
    }

    fn text(&mut self) -> String {
        let words = [
            "lamp",
            "O'Brien",
            "caf\u{e9}",
            "\u{1f600}",
            "a\\b",
            "",
            "blue widget",
        ];
        let n = self.rng.random_range(0..words.len());
        let k = self.rng.random_range(0..1000);
        format!("{} {k}", words[n])
    }

    /// The non-key column values of `fid.single`, as SQL literals, in column order.
    fn single_values(&mut self) -> Vec<(String, String)> {
        let v = self.text();
        let v = self.maybe(quote(&v));
        let n = self.rng.random_range(-5_000_000_000i64..5_000_000_000);
        let n = self.maybe(n.to_string());
        let d = format!(
            "{}.{:03}",
            self.rng.random_range(-99_999i64..99_999),
            self.rng.random_range(0..1000)
        );
        let d = self.maybe(d);
        let day = format!(
            "'{:04}-{:02}-{:02}'",
            self.rng.random_range(1970..2100),
            self.rng.random_range(1..13),
            self.rng.random_range(1..29)
        );
        let day = self.maybe(day);
        let at = format!(
            "'2026-{:02}-{:02} {:02}:{:02}:{:02}'",
            self.rng.random_range(1..13),
            self.rng.random_range(1..29),
            self.rng.random_range(0..24),
            self.rng.random_range(0..60),
            self.rng.random_range(0..60)
        );
        let at = self.maybe(at);
        let u = self.rng.random_range(0..=u32::MAX).to_string();
        let u = self.maybe(u);
        let tm = format!(
            "'{}{}:{:02}:{:02}'",
            if self.rng.random_bool(0.2) { "-" } else { "" },
            self.rng.random_range(0..839),
            self.rng.random_range(0..60),
            self.rng.random_range(0..60)
        );
        let tm = self.maybe(tm);
        let e = format!(
            "'{}'",
            ["red", "green", "blue"][self.rng.random_range(0..3)]
        );
        let e = self.maybe(e);
        let s = format!(
            "'{}'",
            ["", "x", "y,z", "x,z", "x,y,z"][self.rng.random_range(0..5)]
        );
        let s = self.maybe(s);
        // Quarters: exact in binary and printed alike by MariaDB and JSON.
        let dbl = format!(
            "{}.{}",
            self.rng.random_range(-100_000i64..100_000),
            ["25", "5", "75"][self.rng.random_range(0..3)]
        );
        let dbl = self.maybe(dbl);
        let mut out = vec![
            ("v".to_owned(), Self::sql_opt(v)),
            ("n".to_owned(), Self::sql_opt(n)),
            ("d".to_owned(), Self::sql_opt(d)),
            ("day".to_owned(), Self::sql_opt(day)),
            ("at".to_owned(), Self::sql_opt(at)),
            ("u".to_owned(), Self::sql_opt(u)),
            ("tm".to_owned(), Self::sql_opt(tm)),
            ("e".to_owned(), Self::sql_opt(e)),
            ("s".to_owned(), Self::sql_opt(s)),
            ("dbl".to_owned(), Self::sql_opt(dbl)),
        ];
        if let Some(column) = self.model.extra[0].clone() {
            let e = self.rng.random_range(-100..100).to_string();
            out.push((column, Self::sql_opt(self.maybe(e))));
        }
        out
    }

    fn composite_values(&mut self) -> Vec<(String, String)> {
        let v = self.text();
        let v = self.maybe(quote(&v));
        let n = self.rng.random_range(-1000..1000).to_string();
        let n = self.maybe(n);
        let mut out = vec![
            ("v".to_owned(), Self::sql_opt(v)),
            ("n".to_owned(), Self::sql_opt(n)),
        ];
        if let Some(column) = self.model.extra[1].clone() {
            let e = self.rng.random_range(-100..100).to_string();
            out.push((column, Self::sql_opt(self.maybe(e))));
        }
        out
    }

    fn composite_key(&mut self) -> (i64, String) {
        let a = self.rng.random_range(1..9);
        let b = B_VALUES[self.rng.random_range(0..B_VALUES.len())].to_owned();
        (a, b)
    }

    /// One row change on the model `m`, as SQL; counts key changes in `keys`.
    fn change(&mut self, m: &mut Model, keys: &mut (u64, u64), table: usize) -> String {
        let kind = self.rng.random_range(0..10);
        if table == 0 {
            let id = self.rng.random_range(1..80i64);
            if !m.single.contains(&id) {
                let values = self.single_values();
                m.single.insert(id);
                let cols: Vec<&str> = values.iter().map(|(c, _)| c.as_str()).collect();
                let vals: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
                return format!(
                    "INSERT INTO fid.single (id, {}) VALUES ({id}, {})",
                    cols.join(", "),
                    vals.join(", ")
                );
            }
            match kind {
                0..=2 => {
                    m.single.remove(&id);
                    format!("DELETE FROM fid.single WHERE id = {id}")
                }
                3..=5 => {
                    let to = (1..200i64)
                        .map(|_| self.rng.random_range(1..80i64))
                        .find(|k| !m.single.contains(k));
                    match to {
                        Some(to) => {
                            m.single.remove(&id);
                            m.single.insert(to);
                            keys.0 += 1;
                            // Sometimes other columns change with the key.
                            let also = if self.rng.random_bool(0.5) {
                                let v = self.text();
                                format!(", v = {}", quote(&v))
                            } else {
                                String::new()
                            };
                            format!("UPDATE fid.single SET id = {to}{also} WHERE id = {id}")
                        }
                        None => format!("DELETE FROM fid.single WHERE id = {id}"),
                    }
                }
                _ => {
                    let values = self.single_values();
                    let n = self.rng.random_range(1..=values.len());
                    let set: Vec<String> = values
                        .into_iter()
                        .take(n)
                        .map(|(c, v)| format!("{c} = {v}"))
                        .collect();
                    format!("UPDATE fid.single SET {} WHERE id = {id}", set.join(", "))
                }
            }
        } else {
            let (a, b) = self.composite_key();
            let at = format!("a = {a} AND b = {}", quote(&b));
            if !m.composite.contains(&(a, b.clone())) {
                let values = self.composite_values();
                m.composite.insert((a, b.clone()));
                let cols: Vec<&str> = values.iter().map(|(c, _)| c.as_str()).collect();
                let vals: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
                return format!(
                    "INSERT INTO fid.composite (a, b, {}) VALUES ({a}, {}, {})",
                    cols.join(", "),
                    quote(&b),
                    vals.join(", ")
                );
            }
            match kind {
                0..=2 => {
                    m.composite.remove(&(a, b));
                    format!("DELETE FROM fid.composite WHERE {at}")
                }
                3..=5 => {
                    let to = (1..200)
                        .map(|_| self.composite_key())
                        .find(|k| !m.composite.contains(k));
                    match to {
                        Some((ta, tb)) => {
                            m.composite.remove(&(a, b));
                            m.composite.insert((ta, tb.clone()));
                            keys.0 += 1;
                            keys.1 += 1;
                            format!(
                                "UPDATE fid.composite SET a = {ta}, b = {} WHERE {at}",
                                quote(&tb)
                            )
                        }
                        None => format!("DELETE FROM fid.composite WHERE {at}"),
                    }
                }
                _ => {
                    let values = self.composite_values();
                    let set: Vec<String> = values
                        .into_iter()
                        .map(|(c, v)| format!("{c} = {v}"))
                        .collect();
                    format!("UPDATE fid.composite SET {} WHERE {at}", set.join(", "))
                }
            }
        }
    }

    /// 1..=5 changes on a copy of the model: (statements, the model after them, tables touched, key
    /// changes (all, composite)).
    fn changes(&mut self, base: &Model) -> (Vec<String>, Model, [bool; 2], (u64, u64)) {
        let mut m = base.clone();
        let mut touched = [false; 2];
        let mut keys = (0, 0);
        let n = self.rng.random_range(1..=5);
        let stmts = (0..n)
            .map(|_| {
                let table = self.rng.random_range(0..2);
                touched[table] = true;
                self.change(&mut m, &mut keys, table)
            })
            .collect();
        (stmts, m, touched, keys)
    }

    async fn exec(conn: &mut Conn, sql: &str) -> Result<()> {
        conn.query_drop(sql)
            .await
            .with_context(|| format!("executing {sql}"))
    }

    /// Runs `steps` steps (see the module docs) on `conn` (autocommit on).
    pub async fn run(&mut self, conn: &mut Conn, steps: usize) -> Result<()> {
        for _ in 0..steps {
            self.step(conn).await?;
        }
        Ok(())
    }

    async fn step(&mut self, conn: &mut Conn) -> Result<()> {
        let roll = self.rng.random_range(0..100);
        let table = self.rng.random_range(0..2usize);
        let name = ["fid.single", "fid.composite"][table];
        match roll {
            0..=3 => {
                Self::exec(conn, &format!("TRUNCATE TABLE {name}")).await?;
                self.clear(table);
                self.stats.truncates += 1;
            }
            4..=7 => {
                let sql = match self.model.extra[table].take() {
                    Some(column) => format!("ALTER TABLE {name} DROP COLUMN {column}"),
                    None => {
                        self.added += 1;
                        let column = format!("extra{}", self.added);
                        let sql = format!("ALTER TABLE {name} ADD COLUMN {column} INT NULL");
                        self.model.extra[table] = Some(column);
                        sql
                    }
                };
                Self::exec(conn, &sql).await?;
                self.stats.alters += 1;
            }
            8..=9 => {
                let width = if self.wide[table] { 40 } else { 60 };
                Self::exec(
                    conn,
                    &format!("ALTER TABLE {name} MODIFY COLUMN v VARCHAR({width}) NULL"),
                )
                .await?;
                self.wide[table] = !self.wide[table];
                self.stats.alters += 1;
            }
            10..=11 => {
                Self::exec(conn, &format!("DROP TABLE {name}")).await?;
                Self::exec(conn, [CREATE_SINGLE, CREATE_COMPOSITE][table]).await?;
                self.clear(table);
                self.model.extra[table] = None;
                self.wide[table] = false;
                self.stats.drop_creates += 1;
            }
            12..=19 => {
                let (stmts, _, _, _) = self.changes(&self.model.clone());
                Self::exec(conn, "BEGIN").await?;
                for s in &stmts {
                    Self::exec(conn, s).await?;
                }
                Self::exec(conn, "ROLLBACK").await?;
                self.stats.rollbacks += 1;
            }
            20..=29 => {
                let (first, m1, t1, k1) = self.changes(&self.model.clone());
                let (undone, _, _, _) = self.changes(&m1);
                let (last, m2, t2, k2) = self.changes(&m1);
                Self::exec(conn, "BEGIN").await?;
                for s in &first {
                    Self::exec(conn, s).await?;
                }
                Self::exec(conn, "SAVEPOINT sp").await?;
                for s in &undone {
                    Self::exec(conn, s).await?;
                }
                Self::exec(conn, "ROLLBACK TO SAVEPOINT sp").await?;
                for s in &last {
                    Self::exec(conn, s).await?;
                }
                Self::exec(conn, "COMMIT").await?;
                self.model = m2;
                self.commit(
                    first.len() + last.len(),
                    [t1[0] || t2[0], t1[1] || t2[1]],
                    (k1.0 + k2.0, k1.1 + k2.1),
                );
                self.stats.savepoints += 1;
            }
            _ => {
                let (stmts, m, touched, keys) = self.changes(&self.model.clone());
                Self::exec(conn, "BEGIN").await?;
                for s in &stmts {
                    Self::exec(conn, s).await?;
                }
                Self::exec(conn, "COMMIT").await?;
                self.model = m;
                self.commit(stmts.len(), touched, keys);
            }
        }
        Ok(())
    }

    fn clear(&mut self, table: usize) {
        if table == 0 {
            self.model.single.clear();
        } else {
            self.model.composite.clear();
        }
    }

    fn commit(&mut self, changes: usize, touched: [bool; 2], keys: (u64, u64)) {
        self.stats.commits += 1;
        self.stats.changes += changes as u64;
        self.stats.key_changes += keys.0;
        self.stats.composite_key_changes += keys.1;
        if touched[0] && touched[1] {
            self.stats.multi_table += 1;
        }
    }
}

/// A replica row (decoded events) in the source's text form for the workload's column types (JSON
/// rendering in `docs/avro-mapping.md`): a DATETIME `2026-01-28T22:27:54.000000` becomes MariaDB's
/// `2026-01-28 22:27:54` and a TIME `-12:03:04.000000` becomes `-12:03:04` (the workload writes whole
/// seconds), a SET `["x","z"]` becomes `x,z`; everything else is kept.
pub fn source_form(row: &crate::checker::Row) -> crate::checker::Row {
    row.iter()
        .map(|(column, value)| {
            if let Some(members) = value
                .starts_with('[')
                .then(|| serde_json::from_str::<Vec<String>>(value).ok())
                .flatten()
            {
                return (column.clone(), members.join(","));
            }
            let time = value.trim_start_matches('-');
            if let Some(whole) = time.strip_suffix(".000000") {
                let parts: Vec<&str> = whole.split(':').collect();
                if parts.len() == 3 && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
                    let sign = if value.starts_with('-') { "-" } else { "" };
                    return (column.clone(), format!("{sign}{whole}"));
                }
            }
            let b = value.as_bytes();
            let is_datetime = b.len() == 26
                && b[10] == b'T'
                && value.ends_with(".000000")
                && b[..10].iter().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        *c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                });
            let value = if is_datetime {
                format!("{} {}", &value[..10], &value[11..19])
            } else {
                value.clone()
            };
            (column.clone(), value)
        })
        .collect()
}

/// The replica of `source` kept by `recorder`, in [`source_form`], keyed by its key columns.
pub fn replica_table(
    recorder: &crate::consumer::Recorder,
    source: u16,
    key_columns: &[&str],
) -> Result<std::collections::BTreeMap<String, crate::checker::Row>> {
    let rows = recorder
        .table(source)
        .into_iter()
        .map(|(k, row)| (k, source_form(&row)))
        .collect();
    crate::checker::rekey(&rows, key_columns)
}
