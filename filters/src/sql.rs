//! Pushing a filter down to SQL, for the bootstrap server's SQLite stores.
//!
//! The fragment expects one row per data event with these columns (names configurable with
//! [`SqlColumns`]):
//!
//! | column | type | value |
//! |--------|------|-------|
//! | `source_id` | `INTEGER NOT NULL` | the event's [`SourceId`](databus_core::SourceId) |
//! | `bucket_hash` | `INTEGER NOT NULL` | [`KeyHash::of(key).to_i64()`](crate::KeyHash::to_i64), in `0 ..= 2^63 - 1`; [`TABLE_EVENT_BUCKET_HASH`] (`-1`) for table events |
//! | `key_int` | `INTEGER` | the key for integer keys, `NULL` for byte keys and keyless events |
//!
//! Table events (truncate, schema change) pass every key filter but not a source filter that excludes
//! them, as [`Filter::matches`] decides: stored with `bucket_hash = -1` (a value no key hashes to), a
//! key filter becomes `(<key conditions> OR bucket_hash < 0)`.
//!
//! MOD becomes `(bucket_hash % n) BETWEEN lo AND hi` — both operands are non-negative, so SQL's `%`
//! gives exactly [`KeyHash::bucket`](crate::KeyHash::bucket). RANGE becomes `key_int BETWEEN lo AND hi`,
//! which is never true for `NULL`, matching the in-memory rule that RANGE accepts integer keys only.
//!
//! Values are never interpolated: the fragment uses anonymous `?` placeholders, and
//! [`SqlWhere::params`] holds their values in order. OR/AND chains are nested as balanced trees, so a
//! spec at the crate's limits stays far below SQLite's expression depth limit (1000) and its parameter
//! limit (32766).

use crate::filter::{KeyFilter, Part};
use crate::{Filter, FilterError, FilterSpec};

/// The `bucket_hash` a store records for a table event (truncate, schema change), so pushed-down
/// filters let it through every key filter. No key hashes to a negative value.
pub const TABLE_EVENT_BUCKET_HASH: i64 = -1;

/// The names of the columns a SQL fragment refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlColumns<'a> {
    source_id: &'a str,
    bucket_hash: &'a str,
    key_int: &'a str,
}

impl SqlColumns<'static> {
    /// `source_id`, `bucket_hash`, `key_int`.
    pub const DEFAULT: SqlColumns<'static> = SqlColumns {
        source_id: "source_id",
        bucket_hash: "bucket_hash",
        key_int: "key_int",
    };
}

impl Default for SqlColumns<'static> {
    fn default() -> Self {
        SqlColumns::DEFAULT
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|part| {
            let mut bytes = part.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

impl<'a> SqlColumns<'a> {
    /// Custom column names: plain identifiers, optionally qualified (`l.source_id`).
    pub fn new(
        source_id: &'a str,
        bucket_hash: &'a str,
        key_int: &'a str,
    ) -> Result<SqlColumns<'a>, FilterError> {
        for name in [source_id, bucket_hash, key_int] {
            if !is_identifier(name) {
                return Err(FilterError::BadColumn(name.to_owned()));
            }
        }
        Ok(SqlColumns {
            source_id,
            bucket_hash,
            key_int,
        })
    }
}

/// A parameterized SQL boolean expression: use it as `... WHERE <sql>` and bind `params` in order.
///
/// ```
/// use databus_filters::{FilterSpec, SqlColumns};
///
/// let spec = FilterSpec::from_query("sources=1&partition=mod:8:0,2-3").unwrap();
/// let w = spec.to_sql(&SqlColumns::DEFAULT);
/// assert_eq!(
///     w.sql,
///     "(source_id = ? AND (bucket_hash < 0 OR ((bucket_hash % ?) = ? OR (bucket_hash % ?) BETWEEN ? AND ?)))"
/// );
/// assert_eq!(w.params, vec![1, 8, 0, 8, 2, 3]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlWhere {
    /// The expression, with anonymous `?` placeholders; `1` when everything passes.
    pub sql: String,
    /// The placeholders' values, in order.
    pub params: Vec<i64>,
}

/// A boolean expression tree, simplified while built.
enum Expr {
    True,
    False,
    Atom(String, Vec<i64>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn and(items: Vec<Expr>) -> Expr {
        if items.iter().any(|e| matches!(e, Expr::False)) {
            return Expr::False;
        }
        let mut items: Vec<Expr> = items
            .into_iter()
            .filter(|e| !matches!(e, Expr::True))
            .collect();
        match items.len() {
            0 => Expr::True,
            1 => items.pop().unwrap_or(Expr::True),
            _ => Expr::And(items),
        }
    }

    fn or(items: Vec<Expr>) -> Expr {
        if items.iter().any(|e| matches!(e, Expr::True)) {
            return Expr::True;
        }
        let mut items: Vec<Expr> = items
            .into_iter()
            .filter(|e| !matches!(e, Expr::False))
            .collect();
        match items.len() {
            0 => Expr::False,
            1 => items.pop().unwrap_or(Expr::False),
            _ => Expr::Or(items),
        }
    }

    fn render(&self, out: &mut SqlWhere) {
        match self {
            Expr::True => out.sql.push('1'),
            Expr::False => out.sql.push('0'),
            Expr::Atom(sql, params) => {
                out.sql.push_str(sql);
                out.params.extend_from_slice(params);
            }
            Expr::And(items) => render_balanced(items, " AND ", out),
            Expr::Or(items) => render_balanced(items, " OR ", out),
        }
    }
}

/// Renders `items` joined by `op` as a balanced tree of parenthesized pairs (depth log2(n)).
fn render_balanced(items: &[Expr], op: &str, out: &mut SqlWhere) {
    match items {
        [] => {}
        [one] => one.render(out),
        _ => {
            let (left, right) = items.split_at(items.len() / 2);
            out.sql.push('(');
            render_balanced(left, op, out);
            out.sql.push_str(op);
            render_balanced(right, op, out);
            out.sql.push(')');
        }
    }
}

fn key_expr(filter: &KeyFilter, cols: &SqlColumns<'_>) -> Expr {
    let mut atoms = Vec::new();
    for part in filter.parts.iter() {
        match part {
            Part::Mod {
                num_buckets,
                buckets,
            } => {
                let n = i64::from(num_buckets.n().get());
                for &(lo, hi) in buckets.iter() {
                    if lo == 0 && i64::from(hi) == n - 1 {
                        return Expr::True;
                    }
                    let h = cols.bucket_hash;
                    atoms.push(if lo == hi {
                        Expr::Atom(format!("({h} % ?) = ?"), vec![n, i64::from(lo)])
                    } else {
                        Expr::Atom(
                            format!("({h} % ?) BETWEEN ? AND ?"),
                            vec![n, i64::from(lo), i64::from(hi)],
                        )
                    });
                }
            }
            Part::Range { keys } => {
                for &(lo, hi) in keys.iter() {
                    atoms.push(Expr::Atom(
                        format!("{} BETWEEN ? AND ?", cols.key_int),
                        vec![lo, hi],
                    ));
                }
            }
        }
    }
    if filter.parts.is_empty() {
        Expr::True
    } else {
        // Table events pass every key filter (see the module docs).
        let table_events = Expr::Atom(format!("{} < 0", cols.bucket_hash), Vec::new());
        Expr::or(vec![table_events, Expr::or(atoms)])
    }
}

fn sources_expr(sources: impl IntoIterator<Item = u16>, cols: &SqlColumns<'_>) -> Expr {
    let runs = crate::spec::runs(sources.into_iter().map(u64::from));
    let col = cols.source_id;
    Expr::or(
        runs.into_iter()
            .map(|r| {
                // Source ids are u16, so they fit.
                let (first, last) = (r.first as i64, r.last as i64);
                if first == last {
                    Expr::Atom(format!("{col} = ?"), vec![first])
                } else {
                    Expr::Atom(format!("{col} BETWEEN ? AND ?"), vec![first, last])
                }
            })
            .collect(),
    )
}

impl Filter {
    /// The filter as a parameterized SQL expression over `columns` (see the [module docs](crate::sql)).
    /// Rows it selects are exactly the events [`Filter::matches`] accepts (row changes by key and
    /// source, table events by source).
    pub fn to_sql(&self, columns: &SqlColumns<'_>) -> SqlWhere {
        let mut groups = Vec::new();
        for (source, filter) in self.per_source.iter() {
            groups.push(Expr::and(vec![
                sources_expr([source.get()], columns),
                key_expr(filter, columns),
            ]));
        }
        let is_overridden = |s: u16| {
            self.per_source
                .binary_search_by_key(&s, |(p, _)| p.get())
                .is_ok()
        };
        let rest = match &self.sources {
            Some(sources) => sources_expr(
                sources
                    .iter()
                    .map(|s| s.get())
                    .filter(|&s| !is_overridden(s)),
                columns,
            ),
            None if self.per_source.is_empty() => Expr::True,
            None => {
                let marks = vec!["?"; self.per_source.len()].join(", ");
                Expr::Atom(
                    format!("{} NOT IN ({marks})", columns.source_id),
                    self.per_source
                        .iter()
                        .map(|(s, _)| i64::from(s.get()))
                        .collect(),
                )
            }
        };
        groups.push(Expr::and(vec![rest, key_expr(&self.default, columns)]));
        let mut out = SqlWhere {
            sql: String::new(),
            params: Vec::new(),
        };
        Expr::or(groups).render(&mut out);
        out
    }
}

impl FilterSpec {
    /// The spec as a parameterized SQL expression over `columns` (see the [module docs](crate::sql)).
    pub fn to_sql(&self, columns: &SqlColumns<'_>) -> SqlWhere {
        Filter::new(self).to_sql(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(query: &str) -> (String, Vec<i64>) {
        let w = FilterSpec::from_query(query)
            .unwrap()
            .to_sql(&SqlColumns::DEFAULT);
        (w.sql, w.params)
    }

    #[test]
    fn shapes() {
        assert_eq!(sql(""), ("1".to_owned(), vec![]));
        assert_eq!(sql("partition=mod:4:0-3"), ("1".to_owned(), vec![]));
        assert_eq!(
            sql("sources=1-3,7"),
            (
                "(source_id BETWEEN ? AND ? OR source_id = ?)".to_owned(),
                vec![1, 3, 7]
            )
        );
        assert_eq!(
            sql("partition=range:10:0-1,5"),
            (
                "(bucket_hash < 0 OR (key_int BETWEEN ? AND ? OR key_int BETWEEN ? AND ?))"
                    .to_owned(),
                vec![0, 19, 50, 59]
            )
        );
        assert_eq!(
            sql("partition.2=mod:4:1"),
            (
                "((source_id = ? AND (bucket_hash < 0 OR (bucket_hash % ?) = ?)) OR source_id NOT IN (?))".to_owned(),
                vec![2, 4, 1, 2]
            )
        );
        // Source 1 MOD, source 2 everything.
        assert_eq!(
            sql("sources=1,2&partition.1=mod:4:1"),
            (
                "((source_id = ? AND (bucket_hash < 0 OR (bucket_hash % ?) = ?)) OR source_id = ?)"
                    .to_owned(),
                vec![1, 4, 1, 2]
            )
        );
        // Every source overridden: no default group.
        assert_eq!(
            sql("sources=1&partition.1=range:5:0"),
            (
                "(source_id = ? AND (bucket_hash < 0 OR key_int BETWEEN ? AND ?))".to_owned(),
                vec![1, 0, 4]
            )
        );
    }

    #[test]
    fn balanced_nesting_keeps_parameter_order() {
        let (text, params) = sql("partition=range:1:0,2,4,6,8");
        assert_eq!(
            text,
            "(bucket_hash < 0 OR ((key_int BETWEEN ? AND ? OR key_int BETWEEN ? AND ?) OR \
             (key_int BETWEEN ? AND ? OR (key_int BETWEEN ? AND ? OR key_int BETWEEN ? AND ?))))"
        );
        assert_eq!(params, vec![0, 0, 2, 2, 4, 4, 6, 6, 8, 8]);
    }

    #[test]
    fn columns_are_checked_identifiers() {
        let cols = SqlColumns::new("l.src", "h", "k_1").unwrap();
        let w = FilterSpec::from_query("sources=4").unwrap().to_sql(&cols);
        assert_eq!(w.sql, "l.src = ?");
        for bad in ["", "a b", "1a", "a;drop", "a.b.c", "a.", "\"x\""] {
            let err = SqlColumns::new("source_id", bad, "key_int").unwrap_err();
            assert_eq!(err, FilterError::BadColumn(bad.to_owned()));
            assert!(!err.is_client_error());
        }
    }
}
