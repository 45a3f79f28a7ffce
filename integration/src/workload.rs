//! The sequenced workload: deterministic (seeded) transactions on `shop.items`, each also inserting
//! its sequence number into `shop.txlog`.
//!
//! Every transaction `seq` (1, 2, 3, …):
//!
//! - touches 1..=`max_ops` distinct keys of `shop.items` (insert when absent; else update or delete),
//!   writing `seq` into the `seq` column of every row it inserts or updates;
//! - inserts `(seq, changes)` into `shop.txlog`, `changes` being the number of item rows it changed.
//!
//! So a consumer can tell, from the events alone, which transaction a window is (its `txlog` event),
//! whether the window is whole (`changes` item events, all with that `seq` — a delete carries the row
//! as it was, whose `seq` is the previous writer's, see [`crate::checker`]), and whether a transaction
//! is missing, repeated or out of order (the `txlog` sequence numbers). The generator keeps the log
//! of what it committed ([`TxRecord`]) and a model of the table, so the state after any transaction
//! is known ([`Workload::state_at`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::process::TableSpec;

/// Logical source id of `shop.items`.
pub const ITEMS: u16 = 1;
/// Logical source id of `shop.txlog`.
pub const TXLOG: u16 = 2;

/// The statements creating the workload's database and tables.
pub const SCHEMA: &[&str] = &[
    "CREATE DATABASE shop",
    "CREATE TABLE shop.items (id INT PRIMARY KEY, seq BIGINT NOT NULL, val VARCHAR(64) NOT NULL, \
     qty INT NULL, pad VARCHAR(1024) NOT NULL DEFAULT '')",
    "CREATE TABLE shop.txlog (seq BIGINT PRIMARY KEY, changes INT NOT NULL)",
];

/// The relay's table mapping for the workload's tables.
pub fn tables() -> Vec<TableSpec> {
    vec![
        TableSpec {
            id: ITEMS,
            name: "items".into(),
            table: "shop.items".into(),
        },
        TableSpec {
            id: TXLOG,
            name: "txlog".into(),
            table: "shop.txlog".into(),
        },
    ]
}

/// One row of `shop.items` (without its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// The transaction that last wrote the row.
    pub seq: i64,
    /// A random value.
    pub val: String,
    /// Sometimes NULL.
    pub qty: Option<i32>,
    /// Padding (to fill relay buffers).
    pub pad: String,
    /// The `note` column, written only while the table has it (see [`Workload::set_note`]).
    pub note: Option<String>,
}

impl ItemRow {
    /// The row as the checker's canonical text columns (`id` included).
    pub fn canonical(&self, id: i64) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("id".to_owned(), id.to_string()),
            ("seq".to_owned(), self.seq.to_string()),
            ("val".to_owned(), self.val.clone()),
            (
                "qty".to_owned(),
                self.qty
                    .map_or_else(|| "NULL".to_owned(), |q| q.to_string()),
            ),
            ("pad".to_owned(), self.pad.clone()),
        ])
        .into_iter()
        .chain(self.note.clone().map(|n| ("note".to_owned(), n)))
        .collect()
    }
}

/// One change of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOp {
    /// `INSERT` of a new key.
    Insert(i64, ItemRow),
    /// `UPDATE` of an existing key (all columns).
    Update(i64, ItemRow),
    /// `DELETE` of an existing key; carries the row as it was.
    Delete(i64, ItemRow),
}

impl ItemOp {
    /// The key changed.
    pub fn key(&self) -> i64 {
        match self {
            ItemOp::Insert(k, _) | ItemOp::Update(k, _) | ItemOp::Delete(k, _) => *k,
        }
    }

    /// Whether it deletes the key.
    pub fn is_delete(&self) -> bool {
        matches!(self, ItemOp::Delete(..))
    }
}

/// A committed transaction of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    /// Its sequence number (1, 2, …).
    pub seq: i64,
    /// Its item changes, in statement (= binlog) order.
    pub ops: Vec<ItemOp>,
}

/// The workload generator: deterministic for a seed.
#[derive(Debug)]
pub struct Workload {
    rng: StdRng,
    keys: i64,
    max_ops: usize,
    pad_len: usize,
    note: bool,
    next_seq: i64,
    model: BTreeMap<i64, ItemRow>,
    log: Vec<TxRecord>,
}

impl Workload {
    /// A workload over keys `1..=keys`, transactions of 1..=3 changes, no padding.
    pub fn new(seed: u64, keys: i64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            keys,
            max_ops: 3,
            pad_len: 0,
            note: false,
            next_seq: 1,
            model: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Sets the `pad` length of written rows (bytes), to fill buffers faster.
    pub fn with_pad(mut self, pad_len: usize) -> Workload {
        self.pad_len = pad_len.min(1024);
        self
    }

    /// Sets the largest number of changes of a transaction.
    pub fn with_max_ops(mut self, max_ops: usize) -> Workload {
        self.max_ops = max_ops.clamp(1, self.keys as usize);
        self
    }

    /// Sets the pad length for the transactions generated from now on.
    pub fn set_pad(&mut self, pad_len: usize) {
        self.pad_len = pad_len.min(1024);
    }

    /// Whether inserts and updates also write the `note` column (after `ALTER TABLE shop.items ADD
    /// COLUMN note VARCHAR(32) NULL`). Turning it off means the column is dropped: the model's rows
    /// lose their notes too (a later delete's before image has no `note`).
    pub fn set_note(&mut self, on: bool) {
        self.note = on;
        if !on {
            for row in self.model.values_mut() {
                row.note = None;
            }
        }
    }

    /// The last committed sequence number (0: none).
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Every committed transaction, in order.
    pub fn log(&self) -> &[TxRecord] {
        &self.log
    }

    /// The table as the generator believes it is now.
    pub fn model(&self) -> &BTreeMap<i64, ItemRow> {
        &self.model
    }

    /// The table after transaction `seq` (0: empty), replayed from the log.
    pub fn state_at(&self, seq: i64) -> BTreeMap<i64, ItemRow> {
        let mut state = BTreeMap::new();
        for tx in self.log.iter().take_while(|t| t.seq <= seq) {
            for op in &tx.ops {
                match op {
                    ItemOp::Insert(k, r) | ItemOp::Update(k, r) => {
                        state.insert(*k, r.clone());
                    }
                    ItemOp::Delete(k, _) => {
                        state.remove(k);
                    }
                }
            }
        }
        state
    }

    fn row(&mut self, seq: i64) -> ItemRow {
        let n: u32 = self.rng.random_range(0..1_000_000);
        ItemRow {
            seq,
            val: format!("v{seq}-{n}"),
            qty: if self.rng.random_bool(0.2) {
                None
            } else {
                Some(self.rng.random_range(-1000..1000))
            },
            pad: "p".repeat(self.pad_len),
            note: self.note.then(|| format!("n{seq}")),
        }
    }

    /// Generates the next transaction (not yet written).
    pub(crate) fn generate(&mut self) -> TxRecord {
        let seq = self.next_seq;
        let n = self.rng.random_range(1..=self.max_ops);
        let mut keys: Vec<i64> = Vec::with_capacity(n);
        while keys.len() < n {
            let k = self.rng.random_range(1..=self.keys);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let mut ops = Vec::with_capacity(n);
        for k in keys {
            let op = match self.model.get(&k).cloned() {
                None => ItemOp::Insert(k, self.row(seq)),
                Some(old) if self.rng.random_bool(0.25) => ItemOp::Delete(k, old),
                Some(_) => ItemOp::Update(k, self.row(seq)),
            };
            ops.push(op);
        }
        TxRecord { seq, ops }
    }

    pub(crate) fn commit_model(&mut self, tx: TxRecord) {
        for op in &tx.ops {
            match op {
                ItemOp::Insert(k, r) | ItemOp::Update(k, r) => {
                    self.model.insert(*k, r.clone());
                }
                ItemOp::Delete(k, _) => {
                    self.model.remove(k);
                }
            }
        }
        self.next_seq += 1;
        self.log.push(tx);
    }

    /// Writes `n` transactions on `conn` (a MariaDB connection or a PostgreSQL client, see
    /// [`TxWriter`]), each committed before the next.
    pub async fn run<W: TxWriter>(&mut self, conn: &mut W, n: usize) -> Result<()> {
        for _ in 0..n {
            let tx = self.generate();
            conn.write_tx(&tx)
                .await
                .with_context(|| format!("workload transaction {}", tx.seq))?;
            self.commit_model(tx);
        }
        Ok(())
    }

    /// Writes `n` transactions on `conn`, pausing `pace` between them.
    async fn drive<W: TxWriter>(&mut self, conn: &mut W, n: usize, pace: Duration) -> Result<()> {
        for _ in 0..n {
            self.run(conn, 1).await?;
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
        Ok(())
    }

    /// Runs `n` transactions on a new connection to `url` (MariaDB) in a task, pausing `pace`
    /// between them; the task hands the workload back when done.
    pub fn spawn(
        mut self,
        url: String,
        n: usize,
        pace: Duration,
    ) -> tokio::task::JoinHandle<Result<Workload>> {
        tokio::spawn(async move {
            let mut conn = Conn::new(Opts::from_url(&url)?).await?;
            self.drive(&mut conn, n, pace).await?;
            conn.disconnect().await?;
            Ok(self)
        })
    }

    /// As [`Workload::spawn`], on a new connection to the PostgreSQL of `config`.
    pub fn spawn_pg(
        mut self,
        config: tokio_postgres::Config,
        n: usize,
        pace: Duration,
    ) -> tokio::task::JoinHandle<Result<Workload>> {
        tokio::spawn(async move {
            let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            self.drive(&mut client, n, pace).await?;
            Ok(self)
        })
    }

    /// Forgets every row of the model (after `TRUNCATE shop.items`, or `DROP` + `CREATE`).
    pub fn clear(&mut self) {
        self.model.clear();
    }
}

/// Where the workload's transactions are written: a MariaDB connection or a PostgreSQL client (the
/// same tables, `shop.items` and `shop.txlog`, in database or schema `shop`).
pub trait TxWriter: Send {
    /// Writes one transaction: its item changes in order, then its `txlog` row, then `COMMIT`.
    fn write_tx(&mut self, tx: &TxRecord) -> impl Future<Output = Result<()>> + Send;
}

impl TxWriter for Conn {
    async fn write_tx(&mut self, tx: &TxRecord) -> Result<()> {
        write_tx(self, tx).await
    }
}

impl TxWriter for tokio_postgres::Client {
    /// One batch of literal statements (a column's type may change mid-run: no typed parameters).
    async fn write_tx(&mut self, tx: &TxRecord) -> Result<()> {
        fn text(s: &str) -> String {
            format!("'{}'", s.replace('\'', "''"))
        }
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
        }
        let mut sql = String::from("BEGIN;\n");
        for op in &tx.ops {
            sql.push_str(&match op {
                ItemOp::Insert(k, r) => format!(
                    "INSERT INTO shop.items (id, seq, val, qty, pad{}) VALUES ({k}, {}, {}, {}, {}{});\n",
                    if r.note.is_some() { ", note" } else { "" },
                    r.seq,
                    text(&r.val),
                    opt(r.qty),
                    text(&r.pad),
                    r.note.as_deref().map(|n| format!(", {}", text(n))).unwrap_or_default(),
                ),
                ItemOp::Update(k, r) => format!(
                    "UPDATE shop.items SET seq = {}, val = {}, qty = {}, pad = {}{} WHERE id = {k};\n",
                    r.seq,
                    text(&r.val),
                    opt(r.qty),
                    text(&r.pad),
                    r.note.as_deref().map(|n| format!(", note = {}", text(n))).unwrap_or_default(),
                ),
                ItemOp::Delete(k, _) => format!("DELETE FROM shop.items WHERE id = {k};\n"),
            });
        }
        sql.push_str(&format!(
            "INSERT INTO shop.txlog (seq, changes) VALUES ({}, {});\nCOMMIT;",
            tx.seq,
            tx.ops.len()
        ));
        tokio::time::timeout(Duration::from_secs(60), self.batch_execute(&sql))
            .await
            .context("the transaction timed out")??;
        Ok(())
    }
}

/// Writes one transaction: its item changes in order, then its `txlog` row, then `COMMIT`.
async fn write_tx(conn: &mut Conn, tx: &TxRecord) -> Result<()> {
    conn.query_drop("BEGIN").await?;
    for op in &tx.ops {
        match op {
            ItemOp::Insert(k, r) if r.note.is_some() => {
                conn.exec_drop(
                    "INSERT INTO shop.items (id, seq, val, qty, pad, note) VALUES (?, ?, ?, ?, ?, ?)",
                    (k, r.seq, &r.val, r.qty, &r.pad, &r.note),
                )
                .await?
            }
            ItemOp::Update(k, r) if r.note.is_some() => {
                conn.exec_drop(
                    "UPDATE shop.items SET seq = ?, val = ?, qty = ?, pad = ?, note = ? WHERE id = ?",
                    (r.seq, &r.val, r.qty, &r.pad, &r.note, k),
                )
                .await?
            }
            ItemOp::Insert(k, r) => {
                conn.exec_drop(
                    "INSERT INTO shop.items (id, seq, val, qty, pad) VALUES (?, ?, ?, ?, ?)",
                    (k, r.seq, &r.val, r.qty, &r.pad),
                )
                .await?
            }
            ItemOp::Update(k, r) => {
                conn.exec_drop(
                    "UPDATE shop.items SET seq = ?, val = ?, qty = ?, pad = ? WHERE id = ?",
                    (r.seq, &r.val, r.qty, &r.pad, k),
                )
                .await?
            }
            ItemOp::Delete(k, _) => {
                conn.exec_drop("DELETE FROM shop.items WHERE id = ?", (k,))
                    .await?
            }
        }
    }
    conn.exec_drop(
        "INSERT INTO shop.txlog (seq, changes) VALUES (?, ?)",
        (tx.seq, tx.ops.len() as i64),
    )
    .await?;
    conn.query_drop("COMMIT").await?;
    Ok(())
}

/// The SCN of the source's newest transaction: the sequence number of `@@gtid_binlog_pos` (the
/// connector's SCN; one replication domain).
pub async fn source_scn(conn: &mut Conn) -> Result<u64> {
    let pos: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await?;
    let pos = pos.unwrap_or_default();
    let seq = pos
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(seq)
}
