//! Checks: a replica against the source row by row, and a consumer's windows against the workload's
//! log (whole windows, commit order, no gap, no duplicate, per-key order).
//!
//! Rows are compared in a canonical form: column name → text (`NULL` for SQL NULL; integers in
//! decimal; strings as they are), built from the source with `SELECT *` and from events with
//! `DataEvent::json`.
//!
//! How a window is matched to its transaction: a workload transaction's window holds exactly one
//! `shop.txlog` event (its `seq` and `changes`), and its item events are, in order, those of
//! [`TxRecord::ops`]: inserts and updates carry the new row (whose `seq` is the transaction's), deletes
//! the row as it was. A window without a `txlog` event must hold no item event (else a transaction was
//! split). Successive workload windows must have successive `seq`s (no gap, no duplicate, no
//! reorder), and SCNs must increase.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail, ensure};
use databus_client::Phase;
use databus_core::Key;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::workload::{ITEMS, ItemOp, TXLOG, TxRecord};

/// A row in canonical form: column → text.
pub type Row = BTreeMap<String, String>;

/// One data event as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedEvent {
    /// Logical source id.
    pub source: u16,
    /// The key.
    pub key: Key,
    /// A delete (the row is the deleted row's before image).
    pub delete: bool,
    /// The decoded row.
    pub row: Row,
}

/// One window as a consumer saw it (events in delivery order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedWindow {
    /// Its SCN.
    pub scn: u64,
    /// Online, catch-up or snapshot.
    pub phase: Phase,
    /// Its events.
    pub events: Vec<ObservedEvent>,
}

/// A JSON value (from `DataEvent::json`) in canonical text form.
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A decoded event payload (a JSON object) as a canonical row.
pub fn json_row(v: &serde_json::Value) -> Row {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), json_text(v))).collect())
        .unwrap_or_default()
}

fn sql_text(v: &mysql_async::Value) -> String {
    match v {
        mysql_async::Value::NULL => "NULL".to_owned(),
        mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        mysql_async::Value::Int(i) => i.to_string(),
        mysql_async::Value::UInt(u) => u.to_string(),
        other => other.as_sql(true),
    }
}

/// Every row of `table` (`db.table`), by the text of its `key_column`, in canonical form.
pub async fn source_rows(
    conn: &mut Conn,
    table: &str,
    key_column: &str,
) -> Result<BTreeMap<String, Row>> {
    source_rows_keyed(conn, table, &[key_column]).await
}

/// Every row of `table`, by the texts of its `key_columns` joined with `,` ([`row_key`]), in
/// canonical form.
pub async fn source_rows_keyed(
    conn: &mut Conn,
    table: &str,
    key_columns: &[&str],
) -> Result<BTreeMap<String, Row>> {
    let rows: Vec<mysql_async::Row> = conn.query(format!("SELECT * FROM {table}")).await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let columns = row.columns_ref().to_vec();
        let mut canonical = Row::new();
        for (i, c) in columns.iter().enumerate() {
            let v = row.as_ref(i).cloned().unwrap_or(mysql_async::Value::NULL);
            canonical.insert(c.name_str().into_owned(), sql_text(&v));
        }
        let key = row_key(&canonical, key_columns).with_context(|| format!("a row of {table}"))?;
        if out.insert(key.clone(), canonical).is_some() {
            bail!("{table}: two rows with key {key}");
        }
    }
    Ok(out)
}

/// The key of a canonical row: the texts of `key_columns`, joined with `,`.
pub fn row_key(row: &Row, key_columns: &[&str]) -> Result<String> {
    let parts = key_columns
        .iter()
        .map(|c| {
            row.get(*c)
                .cloned()
                .with_context(|| format!("no column {c}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.join(","))
}

/// Rows keyed by [`row_key`] (e.g. a replica keyed by its event keys, re-keyed by column values).
pub fn rekey(rows: &BTreeMap<String, Row>, key_columns: &[&str]) -> Result<BTreeMap<String, Row>> {
    let mut out = BTreeMap::new();
    for row in rows.values() {
        let key = row_key(row, key_columns)?;
        if out.insert(key.clone(), row.clone()).is_some() {
            bail!("two replica rows with key {key}");
        }
    }
    Ok(out)
}

/// How [`compare_tables`] treats columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Every source column must be in the replica row with the same value, and nothing else.
    Exact,
    /// Every source column must match; a source column missing from a replica row must be `NULL` in
    /// the source (a row last written before `ADD COLUMN … NULL`); replica columns the source no
    /// longer has (dropped) are ignored.
    Evolved,
}

/// Compares a replica's rows with the source's, row by row; the error lists the first differences.
pub fn compare_tables(
    table: &str,
    source: &BTreeMap<String, Row>,
    replica: &BTreeMap<String, Row>,
    columns: Columns,
) -> Result<()> {
    let mut diffs = Vec::new();
    for (key, want) in source {
        match replica.get(key) {
            None => diffs.push(format!(
                "key {key}: missing from the replica (source {want:?})"
            )),
            Some(got) => {
                for (col, v) in want {
                    match (got.get(col), columns) {
                        (Some(g), _) if g == v => {}
                        (None, Columns::Evolved) if v == "NULL" => {}
                        (g, _) => diffs.push(format!(
                            "key {key} column {col}: source {v:?}, replica {g:?}"
                        )),
                    }
                }
                if columns == Columns::Exact {
                    for col in got.keys().filter(|c| !want.contains_key(*c)) {
                        diffs.push(format!("key {key}: replica has extra column {col}"));
                    }
                }
            }
        }
    }
    for key in replica.keys().filter(|k| !source.contains_key(*k)) {
        diffs.push(format!("key {key}: in the replica, not in the source"));
    }
    if !diffs.is_empty() {
        let n = diffs.len();
        diffs.truncate(20);
        bail!(
            "{table}: replica differs from the source in {n} places ({} source rows, {} replica \
             rows):\n  {}",
            source.len(),
            replica.len(),
            diffs.join("\n  ")
        );
    }
    Ok(())
}

/// What [`check_windows`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamReport {
    /// The first workload `seq` seen (0: none).
    pub first_seq: i64,
    /// The last workload `seq` seen (0: none).
    pub last_seq: i64,
    /// Workload windows checked.
    pub tx_windows: usize,
    /// Other windows (heartbeats, DDL, other tables), all without item events.
    pub other_windows: usize,
    /// Windows seen again after a replay (at-least-once), each identical to the first delivery.
    pub redelivered: usize,
}

/// Options of [`check_windows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamCheck {
    /// The first `seq` the stream must start with (`None`: wherever it starts).
    pub first_seq: Option<i64>,
    /// Events of a window may arrive in any order (parallel dispatch, merged partitions): compare
    /// them as sets. Per-key order is unaffected: a transaction changes each key at most once.
    pub unordered: bool,
    /// Accept a window delivered again after a replay if it is identical to its first delivery.
    pub allow_redelivery: bool,
}

fn expected_events(tx: &TxRecord) -> Vec<(Key, bool, Row)> {
    tx.ops
        .iter()
        .map(|op| match op {
            ItemOp::Insert(k, r) | ItemOp::Update(k, r) => (Key::Int(*k), false, r.canonical(*k)),
            ItemOp::Delete(k, r) => (Key::Int(*k), true, r.canonical(*k)),
        })
        .collect()
}

fn same_event(got: &ObservedEvent, want: &(Key, bool, Row)) -> bool {
    got.source == ITEMS
        && got.key == want.0
        && got.delete == want.1
        // Columns of the workload; a column added by DDL may come along.
        && want.2.iter().all(|(c, v)| got.row.get(c) == Some(v))
}

/// Checks a consumer's online and catch-up windows against the workload's log (snapshot windows are
/// skipped: they are row states, not transactions). See the module docs for the rules.
pub fn check_windows(
    windows: &[ObservedWindow],
    log: &[TxRecord],
    opts: StreamCheck,
) -> Result<StreamReport> {
    let mut report = StreamReport::default();
    let mut last_scn: Option<u64> = None;
    let mut seen: BTreeMap<u64, &ObservedWindow> = BTreeMap::new();
    let mut expect_seq = opts.first_seq;
    for w in windows.iter().filter(|w| w.phase != Phase::Snapshot) {
        if let Some(last) = last_scn
            && w.scn <= last
        {
            match (opts.allow_redelivery, seen.get(&w.scn)) {
                (true, Some(first)) if first.events == w.events => {
                    report.redelivered += 1;
                    continue;
                }
                (true, Some(first)) => bail!(
                    "window {} delivered again with other events:\nfirst {:?}\nagain {:?}",
                    w.scn,
                    first.events,
                    w.events
                ),
                _ => bail!(
                    "window {} after window {last}: SCNs go back (reorder)",
                    w.scn
                ),
            }
        }
        last_scn = Some(w.scn);
        seen.insert(w.scn, w);
        let txlog: Vec<&ObservedEvent> = w.events.iter().filter(|e| e.source == TXLOG).collect();
        let items: Vec<&ObservedEvent> = w.events.iter().filter(|e| e.source == ITEMS).collect();
        ensure!(
            items.len() + txlog.len() == w.events.len(),
            "window {} has events of unknown sources: {:?}",
            w.scn,
            w.events
        );
        let tx = match txlog.as_slice() {
            [] => {
                ensure!(
                    items.is_empty(),
                    "window {} has {} item events but no txlog event: a transaction was split \
                     (events {:?})",
                    w.scn,
                    items.len(),
                    items
                );
                report.other_windows += 1;
                continue;
            }
            [one] => one,
            more => bail!(
                "window {} holds {} txlog events: transactions were merged ({more:?})",
                w.scn,
                more.len()
            ),
        };
        ensure!(!tx.delete, "window {}: a txlog row was deleted", w.scn);
        let seq: i64 = tx.row.get("seq").and_then(|s| s.parse().ok()).unwrap_or(-1);
        if let Some(want) = expect_seq {
            ensure!(
                seq == want,
                "window {} is transaction {seq}, expected {want}: {}",
                w.scn,
                if seq > want {
                    "a gap"
                } else {
                    "a duplicate or reorder"
                }
            );
        }
        expect_seq = Some(seq + 1);
        let Some(record) = usize::try_from(seq - 1).ok().and_then(|i| log.get(i)) else {
            bail!(
                "window {} is transaction {seq}, which the workload never wrote",
                w.scn
            );
        };
        let want = expected_events(record);
        ensure!(
            tx.row.get("changes") == Some(&want.len().to_string()),
            "window {}: txlog row {:?} does not match the workload's {} changes",
            w.scn,
            tx.row,
            want.len()
        );
        ensure!(
            items.len() == want.len(),
            "window {} (transaction {seq}) has {} item events, the transaction made {}: the \
             window is not whole\n got {items:?}\nwant {want:?}",
            w.scn,
            items.len(),
            want.len()
        );
        let matches = if opts.unordered {
            let mut used = vec![false; items.len()];
            want.iter().all(|wv| {
                let found = items
                    .iter()
                    .enumerate()
                    .find(|(i, g)| !used[*i] && same_event(g, wv));
                found.map(|(i, _)| used[i] = true).is_some()
            })
        } else {
            items.iter().zip(&want).all(|(g, wv)| same_event(g, wv))
        };
        ensure!(
            matches,
            "window {} (transaction {seq}) differs from what the workload wrote:\n got {items:?}\n\
             want {want:?}",
            w.scn
        );
        if report.first_seq == 0 {
            report.first_seq = seq;
        }
        report.last_seq = seq;
        report.tx_windows += 1;
    }
    Ok(report)
}

/// Merges the windows of a partitioned group (each member's windows in delivery order) into one
/// stream by SCN, checking that each member's SCNs increase and that no event reached two members
/// (exactly once per window). Events of a merged window are in no particular order: check it with
/// [`StreamCheck::unordered`].
pub fn merge_group(members: &[Vec<ObservedWindow>]) -> Result<Vec<ObservedWindow>> {
    let mut merged: BTreeMap<u64, ObservedWindow> = BTreeMap::new();
    for (i, windows) in members.iter().enumerate() {
        let mut last = 0u64;
        for w in windows.iter().filter(|w| w.phase != Phase::Snapshot) {
            ensure!(
                w.scn > last,
                "member {i}: window {} after window {last} (reorder or duplicate)",
                w.scn
            );
            last = w.scn;
            let m = merged.entry(w.scn).or_insert_with(|| ObservedWindow {
                scn: w.scn,
                phase: w.phase,
                events: Vec::new(),
            });
            for e in &w.events {
                ensure!(
                    !m.events
                        .iter()
                        .any(|o| o.source == e.source && o.key == e.key),
                    "window {}: event of source {} key {} reached two members",
                    w.scn,
                    e.source,
                    e.key
                );
                m.events.push(e.clone());
            }
        }
    }
    Ok(merged.into_values().collect())
}

/// Checks that the item events of `windows` for the keys `keys` are exactly the workload's changes of
/// those keys, per key in commit order, starting with the first transaction (a consumer that saw the
/// whole history, e.g. a cache invalidator with a key filter). Returns the number of changes checked.
pub fn check_key_histories(
    windows: &[ObservedWindow],
    log: &[TxRecord],
    keys: &BTreeSet<i64>,
) -> Result<usize> {
    let mut want: BTreeMap<i64, Vec<(Key, bool, Row)>> = BTreeMap::new();
    for tx in log {
        let events = expected_events(tx);
        for (op, ev) in tx.ops.iter().zip(events) {
            if keys.contains(&op.key()) {
                want.entry(op.key()).or_default().push(ev);
            }
        }
    }
    let mut got: BTreeMap<i64, Vec<&ObservedEvent>> = BTreeMap::new();
    let mut last = 0u64;
    for w in windows.iter().filter(|w| w.phase != Phase::Snapshot) {
        ensure!(w.scn > last, "window {} after window {last}", w.scn);
        last = w.scn;
        for e in &w.events {
            let Key::Int(k) = e.key else {
                bail!("window {}: unexpected key {}", w.scn, e.key);
            };
            ensure!(
                e.source == ITEMS && keys.contains(&k),
                "window {}: event of source {} key {k} is outside the filter",
                w.scn,
                e.source
            );
            got.entry(k).or_default().push(e);
        }
    }
    let mut checked = 0;
    for k in keys {
        let w = want.get(k).map(Vec::as_slice).unwrap_or_default();
        let g = got.get(k).map(Vec::as_slice).unwrap_or_default();
        for (i, wv) in w.iter().enumerate() {
            let Some(gv) = g.get(i) else {
                bail!(
                    "key {k}: {} changes received, the workload made {} (first missing: {wv:?})",
                    g.len(),
                    w.len()
                );
            };
            ensure!(
                same_event(gv, wv),
                "key {k}: change {i} is {gv:?}, the workload's is {wv:?} (out of order or wrong)"
            );
        }
        ensure!(
            g.len() == w.len(),
            "key {k}: {} changes received, the workload made {}",
            g.len(),
            w.len()
        );
        checked += w.len();
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    /// A workload's log without a database: `n` generated transactions.
    fn log(n: usize) -> Vec<TxRecord> {
        let mut w = Workload::new(11, 5);
        for _ in 0..n {
            let tx = w.generate();
            w.commit_model(tx);
        }
        w.log().to_vec()
    }

    /// The windows a correct relay would deliver for `log` (SCN = 100 + 10 seq).
    fn windows(log: &[TxRecord]) -> Vec<ObservedWindow> {
        log.iter()
            .map(|tx| {
                let mut events: Vec<ObservedEvent> = expected_events(tx)
                    .into_iter()
                    .map(|(key, delete, row)| ObservedEvent {
                        source: ITEMS,
                        key,
                        delete,
                        row,
                    })
                    .collect();
                events.push(ObservedEvent {
                    source: TXLOG,
                    key: Key::Int(tx.seq),
                    delete: false,
                    row: Row::from([
                        ("seq".to_owned(), tx.seq.to_string()),
                        ("changes".to_owned(), tx.ops.len().to_string()),
                    ]),
                });
                ObservedWindow {
                    scn: 100 + 10 * tx.seq as u64,
                    phase: Phase::Online,
                    events,
                }
            })
            .collect()
    }

    fn err(r: Result<StreamReport>) -> String {
        format!("{:#}", r.expect_err("the check must fail"))
    }

    const FROM_1: StreamCheck = StreamCheck {
        first_seq: Some(1),
        unordered: false,
        allow_redelivery: false,
    };

    #[test]
    fn a_correct_stream_passes_and_every_fault_is_caught() {
        let log = log(6);
        let good = windows(&log);
        let report = check_windows(&good, &log, FROM_1).unwrap();
        assert_eq!(
            (report.first_seq, report.last_seq, report.tx_windows),
            (1, 6, 6)
        );

        // A heartbeat (empty window) is fine.
        let mut w = good.clone();
        let heartbeat = ObservedWindow {
            scn: w[1].scn + 5,
            phase: Phase::Online,
            events: vec![],
        };
        w.insert(2, heartbeat);
        assert_eq!(check_windows(&w, &log, FROM_1).unwrap().other_windows, 1);

        // Gap: transaction 3 missing.
        let mut w = good.clone();
        w.remove(2);
        assert!(err(check_windows(&w, &log, FROM_1)).contains("a gap"));
        // Missing from the start.
        assert!(err(check_windows(&good[1..], &log, FROM_1)).contains("expected 1"));
        // Duplicate under a new SCN.
        let mut w = good.clone();
        let mut dup = w[2].clone();
        dup.scn = 200;
        w.push(dup);
        assert!(err(check_windows(&w, &log, FROM_1)).contains("duplicate or reorder"));
        // Reorder: SCNs going back.
        let mut w = good.clone();
        w.swap(2, 3);
        assert!(err(check_windows(&w, &log, FROM_1)).contains("a gap"));
        let mut w = good.clone();
        w[3].scn = w[1].scn + 1;
        assert!(err(check_windows(&w, &log, FROM_1)).contains("go back"));
        // A split window: the last item event of a transaction arrives in a window of its own.
        let mut w = good.clone();
        let i = w.iter().position(|w| w.events.len() >= 2).unwrap();
        let moved = w[i].events.remove(0);
        let scn = w[i].scn;
        w[i].scn = scn + 1000;
        w.insert(
            i,
            ObservedWindow {
                scn,
                phase: Phase::Online,
                events: vec![moved],
            },
        );
        for later in &mut w[i + 2..] {
            later.scn += 1000;
        }
        assert!(err(check_windows(&w, &log, FROM_1)).contains("split"));
        // A changed value.
        let mut w = good.clone();
        let e = w[0].events.iter_mut().find(|e| e.source == ITEMS).unwrap();
        e.row.insert("val".into(), "other".into());
        assert!(err(check_windows(&w, &log, FROM_1)).contains("differs"));
        // Events of a window in another order: only accepted unordered.
        let mut w = good.clone();
        let i = w.iter().position(|w| w.events.len() >= 3).unwrap();
        w[i].events.swap(0, 1);
        assert!(err(check_windows(&w, &log, FROM_1)).contains("differs"));
        let unordered = StreamCheck {
            unordered: true,
            ..FROM_1
        };
        assert!(check_windows(&w, &log, unordered).is_ok());
        // Redelivery after a replay: accepted only when asked for, and only if identical.
        let mut w = good.clone();
        w.insert(3, good[2].clone());
        assert!(check_windows(&w, &log, FROM_1).is_err());
        let replays = StreamCheck {
            allow_redelivery: true,
            ..FROM_1
        };
        assert_eq!(check_windows(&w, &log, replays).unwrap().redelivered, 1);
        w[3].events.pop();
        assert!(err(check_windows(&w, &log, replays)).contains("delivered again"));
    }

    #[test]
    fn merged_group_rejects_an_event_delivered_twice() {
        let log = log(4);
        let all = windows(&log);
        // Member 0 gets items, member 1 txlog rows: merged, the stream is whole.
        let split = |source: u16| -> Vec<ObservedWindow> {
            all.iter()
                .map(|w| ObservedWindow {
                    events: w
                        .events
                        .iter()
                        .filter(|e| e.source == source)
                        .cloned()
                        .collect(),
                    ..w.clone()
                })
                .collect()
        };
        let merged = merge_group(&[split(ITEMS), split(TXLOG)]).unwrap();
        let unordered = StreamCheck {
            unordered: true,
            ..FROM_1
        };
        assert_eq!(check_windows(&merged, &log, unordered).unwrap().last_seq, 4);
        let e = merge_group(&[split(ITEMS), split(TXLOG), split(TXLOG)]).unwrap_err();
        assert!(e.to_string().contains("two members"), "{e}");
        // A member that lost a window leaves a gap in the merged stream.
        let mut lossy = split(TXLOG);
        lossy.remove(1);
        let merged = merge_group(&[split(ITEMS), lossy]).unwrap();
        assert!(check_windows(&merged, &log, unordered).is_err());
    }

    #[test]
    fn key_histories_catch_missing_and_foreign_changes() {
        let log = log(8);
        let keys: BTreeSet<i64> = (1..=5).collect();
        let items: Vec<ObservedWindow> = windows(&log)
            .into_iter()
            .map(|mut w| {
                w.events.retain(|e| e.source == ITEMS);
                w
            })
            .collect();
        let n: usize = log.iter().map(|t| t.ops.len()).sum();
        assert_eq!(check_key_histories(&items, &log, &keys).unwrap(), n);
        let mut w = items.clone();
        w.remove(3);
        assert!(check_key_histories(&w, &log, &keys).is_err());
        let fewer: BTreeSet<i64> = (1..=4).collect();
        assert!(check_key_histories(&items, &log, &fewer).is_err());
    }

    #[test]
    fn tables_compare_row_by_row() {
        let row = |id: &str, v: &str| {
            Row::from([
                ("id".to_owned(), id.to_owned()),
                ("v".to_owned(), v.to_owned()),
            ])
        };
        let source = BTreeMap::from([
            ("1".to_owned(), row("1", "a")),
            ("2".to_owned(), row("2", "b")),
        ]);
        assert!(compare_tables("t", &source, &source.clone(), Columns::Exact).is_ok());
        let mut replica = source.clone();
        replica.insert("2".into(), row("2", "c"));
        let e = compare_tables("t", &source, &replica, Columns::Exact)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key 2 column v"), "{e}");
        replica.remove("2");
        assert!(compare_tables("t", &source, &replica, Columns::Exact).is_err());
        let mut extra = source.clone();
        extra.insert("3".into(), row("3", "x"));
        assert!(compare_tables("t", &source, &extra, Columns::Exact).is_err());
        // Evolved: a column added later is NULL for rows written before it; any other value differs.
        let mut with_note = source.clone();
        with_note
            .get_mut("1")
            .unwrap()
            .insert("note".into(), "NULL".into());
        assert!(compare_tables("t", &with_note, &source, Columns::Exact).is_err());
        assert!(compare_tables("t", &with_note, &source, Columns::Evolved).is_ok());
        with_note
            .get_mut("1")
            .unwrap()
            .insert("note".into(), "n1".into());
        assert!(compare_tables("t", &with_note, &source, Columns::Evolved).is_err());
    }
}
