//! PostgreSQL scenario support (`tests/pg_relay.rs`, `tests/pg_bootstrap.rs`): [`PgWorkload`], a
//! seeded generator of transactions over `public.acct` (inserts, updates, key changes, deletes, a
//! TRUNCATE every 23rd transaction), each ending with its sequence number in `public.txlog`; and the
//! source's rows as canonical rows ([`pg_rows`]) to compare with a replica.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use databus_testkit::Postgres;

use crate::checker::{Row, json_row, row_key};

/// The workload's tables: `public.acct` (the changes) and `public.txlog` (one row per transaction),
/// with primary keys and `REPLICA IDENTITY FULL`.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE public.acct (id INT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL, note TEXT)",
    "ALTER TABLE public.acct REPLICA IDENTITY FULL",
    "CREATE TABLE public.txlog (seq BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "ALTER TABLE public.txlog REPLICA IDENTITY FULL",
];

/// A seeded generator of transactions over `public.acct`, keeping the model of its rows so every
/// statement applies (a failing statement would fail the test, not skip a change).
#[derive(Debug, Clone)]
pub struct PgWorkload {
    state: u64,
    next_id: i32,
    rows: BTreeSet<i32>,
    /// The sequence number of the last transaction generated.
    pub seq: i64,
    pad: usize,
}

impl PgWorkload {
    /// A workload whose transactions are a function of `seed`.
    pub fn new(seed: u64) -> Self {
        PgWorkload {
            state: seed.wrapping_mul(6364136223846793005).wrapping_add(1),
            next_id: 1,
            rows: BTreeSet::new(),
            seq: 0,
            pad: 0,
        }
    }

    /// Pads each inserted row's `note` with `bytes` characters (0: short notes), to fill a relay
    /// buffer quickly. The sequence of statements is otherwise unchanged.
    pub fn set_pad(&mut self, bytes: usize) {
        self.pad = bytes;
    }

    fn rand(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(2685821657736338717) % n
    }

    fn pick(&mut self) -> Option<i32> {
        if self.rows.is_empty() {
            return None;
        }
        let i = self.rand(self.rows.len() as u64) as usize;
        self.rows.iter().nth(i).copied()
    }

    /// The statements of the next transaction (its `txlog` row last).
    pub fn next_transaction(&mut self) -> Vec<String> {
        self.seq += 1;
        let mut out = Vec::new();
        if self.seq % 23 == 0 {
            out.push("TRUNCATE public.acct".to_owned());
            self.rows.clear();
        }
        let ops = 1 + self.rand(4);
        for _ in 0..ops {
            let op = self.rand(10);
            match (op, self.pick()) {
                (0..=3, _) | (_, None) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let note = if self.rand(3) == 0 {
                        "NULL".to_owned()
                    } else {
                        format!("'n{id} ''q'' é{}'", "p".repeat(self.pad))
                    };
                    out.push(format!(
                        "INSERT INTO public.acct VALUES ({id}, 'owner{}', {}, {note})",
                        self.rand(50),
                        self.rand(1_000_000) as i64 - 500_000
                    ));
                    self.rows.insert(id);
                }
                (4..=6, Some(id)) => {
                    out.push(format!(
                        "UPDATE public.acct SET balance = balance + {}, note = 'u{}' WHERE id = {id}",
                        self.rand(1000),
                        self.seq
                    ));
                }
                (7, Some(id)) => {
                    // A key change: the consumer sees a delete of the old key and an upsert of the new.
                    let new = self.next_id;
                    self.next_id += 1;
                    out.push(format!(
                        "UPDATE public.acct SET id = {new}, owner = 'moved' WHERE id = {id}"
                    ));
                    self.rows.remove(&id);
                    self.rows.insert(new);
                }
                (_, Some(id)) => {
                    out.push(format!("DELETE FROM public.acct WHERE id = {id}"));
                    self.rows.remove(&id);
                }
            }
        }
        out.push(format!(
            "INSERT INTO public.txlog VALUES ({}, 'tx{}')",
            self.seq, self.seq
        ));
        out
    }

    /// Commits `n` transactions, each on a new connection of `pg`.
    pub async fn run(&mut self, pg: &Postgres, n: usize) -> Result<()> {
        for _ in 0..n {
            let statements = self.next_transaction();
            let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
            pg.exec_tx(&refs)
                .await
                .with_context(|| format!("transaction {}: {statements:?}", self.seq))?;
        }
        Ok(())
    }

    /// Commits `n` transactions on `client` (one connection for all: faster than [`PgWorkload::run`]).
    pub async fn run_on(&mut self, client: &tokio_postgres::Client, n: usize) -> Result<()> {
        for _ in 0..n {
            self.commit_next(client).await?;
        }
        Ok(())
    }

    /// Commits the next transaction on `client`.
    pub async fn commit_next(&mut self, client: &tokio_postgres::Client) -> Result<()> {
        let statements = self.next_transaction();
        let mut text = String::from("BEGIN;\n");
        for s in &statements {
            text.push_str(s);
            text.push_str(";\n");
        }
        text.push_str("COMMIT;");
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            client.batch_execute(&text),
        )
        .await
        .with_context(|| format!("transaction {} timed out", self.seq))?
        .with_context(|| format!("transaction {}: {statements:?}", self.seq))
    }
}

/// Every row of `table` as canonical rows keyed by `key`, read as JSON (as the consumer decodes).
pub async fn pg_rows(pg: &Postgres, table: &str, key: &str) -> Result<BTreeMap<String, Row>> {
    let text = pg
        .query_string(&format!(
            "SELECT coalesce(json_agg(row_to_json(t))::text, '[]') FROM {table} t"
        ))
        .await?
        .context("json_agg returned no row")?;
    let rows: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = BTreeMap::new();
    for r in rows.as_array().context("not an array")? {
        let row = json_row(r);
        let k = row_key(&row, &[key])?;
        out.insert(k, row);
    }
    Ok(out)
}

/// An LSN (`X/Y`) as a number (the SCN of a transaction whose commit record is there).
pub fn lsn(text: &str) -> Result<u64> {
    let (hi, lo) = text
        .split_once('/')
        .with_context(|| format!("not an LSN: {text}"))?;
    Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
}
