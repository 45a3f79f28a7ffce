//! The MariaDB dialect of the model: column types, `CREATE TABLE`, schema-change `ALTER TABLE`s and
//! value literals (docs/replicate.md has the mapping table).
//!
//! Everything here is pure text generation, unit-tested below; the target module runs it.

use std::fmt::Write as _;

use databus_client::model::{Column, ColumnType, TableSchema, Value};

/// Why a table cannot be created or followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}: {reason}")]
pub struct MappingError {
    /// `database.table`.
    pub table: String,
    /// What the replica cannot do, and what to do about it.
    pub reason: String,
}

/// `` `name` `` with backticks doubled.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `db`.`table` ``.
pub fn table_ident(table: &TableSchema) -> String {
    qualified(&table.database, &table.table)
}

/// `` `db`.`table` `` of names.
pub fn qualified(database: &str, table: &str) -> String {
    format!("{}.{}", ident(database), ident(table))
}

/// A string literal: `'…'` with `\`, `'`, NUL, newlines and Ctrl-Z escaped as
/// `mysql_real_escape_string` does (the session keeps backslash escapes on).
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|v| string_literal(v))
        .collect::<Vec<_>>()
        .join(",")
}

/// The MariaDB column type of a model type.
pub fn sql_type(column_type: &ColumnType) -> String {
    fn int(name: &str, unsigned: bool) -> String {
        if unsigned {
            format!("{name} UNSIGNED")
        } else {
            name.to_owned()
        }
    }
    match column_type {
        ColumnType::TinyInt { unsigned } => int("TINYINT", *unsigned),
        ColumnType::SmallInt { unsigned } => int("SMALLINT", *unsigned),
        ColumnType::MediumInt { unsigned } => int("MEDIUMINT", *unsigned),
        ColumnType::Int { unsigned } => int("INT", *unsigned),
        ColumnType::BigInt { unsigned } => int("BIGINT", *unsigned),
        ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Float => "FLOAT".to_owned(),
        ColumnType::Double => "DOUBLE".to_owned(),
        ColumnType::Date => "DATE".to_owned(),
        ColumnType::Time { fsp } => format!("TIME({fsp})"),
        ColumnType::DateTime { fsp } => format!("DATETIME({fsp})"),
        ColumnType::Timestamp { fsp } => format!("TIMESTAMP({fsp})"),
        ColumnType::Year => "YEAR".to_owned(),
        ColumnType::Text { max_chars: Some(n) } => format!("VARCHAR({n})"),
        ColumnType::Text { max_chars: None } => "LONGTEXT".to_owned(),
        ColumnType::Char { chars } => format!("CHAR({chars})"),
        ColumnType::Bytes { max_bytes: Some(n) } => format!("VARBINARY({n})"),
        ColumnType::Bytes { max_bytes: None } => "LONGBLOB".to_owned(),
        ColumnType::Enum { values } => format!("ENUM({})", list(values)),
        ColumnType::Set { members } => format!("SET({})", list(members)),
        ColumnType::Bit { width } => format!("BIT({width})"),
        ColumnType::Json => "JSON".to_owned(),
    }
}

/// `` `name` TYPE [NOT] NULL `` (no DEFAULT: every row the replica writes names every column).
pub fn column_def(column: &Column) -> String {
    let null = if column.nullable { "NULL" } else { "NOT NULL" };
    format!(
        "{} {} {null}",
        ident(&column.name),
        sql_type(&column.column_type)
    )
}

/// `CREATE TABLE IF NOT EXISTS` of `table`, with its primary key, InnoDB, utf8mb4 with a binary
/// collation (two keys distinct at the source are distinct here whatever the source's collation).
pub fn create_table(table: &TableSchema) -> Result<String, MappingError> {
    if table.primary_key.is_empty() {
        return Err(MappingError {
            table: table.qualified_name(),
            reason:
                "has no primary key; the replica applies changes by key, so only tables with a \
                     primary key can be replicated (leave it out with --tables)"
                    .into(),
        });
    }
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", table_ident(table));
    for column in &table.columns {
        let _ = write!(sql, "{}, ", column_def(column));
    }
    let key: Vec<String> = table
        .primary_key
        .iter()
        .map(|&i| ident(&table.columns[i].name))
        .collect();
    let _ = write!(
        sql,
        "PRIMARY KEY ({})) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        key.join(", ")
    );
    Ok(sql)
}

/// What changed between the schema the replica gave a table and a new one, when the difference
/// is clear: columns only added, only dropped, or changed in type or nullability (any mix but adds
/// together with drops, which may be a rename), the primary key and the order of the kept columns
/// unchanged. Each dialect writes its `ALTER TABLE` from it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaDiff<'a> {
    /// Columns of the old schema no longer there.
    pub dropped: Vec<&'a Column>,
    /// New columns, with their index in the new schema.
    pub added: Vec<(usize, &'a Column)>,
    /// Kept columns whose type or nullability changed: (old, new).
    pub modified: Vec<(&'a Column, &'a Column)>,
}

/// The [`SchemaDiff`] from `old` to `new` (`Ok(None)`: nothing changed), or why it is not clear.
///
/// `drops_and_adds_known`: the source statements since `old` are known and rename nothing, so
/// columns both dropped and added are a drop and an add.
pub fn schema_diff<'a>(
    old: &'a TableSchema,
    new: &'a TableSchema,
    drops_and_adds_known: bool,
) -> Result<Option<SchemaDiff<'a>>, MappingError> {
    let fail = |reason: String| MappingError {
        table: new.qualified_name(),
        reason,
    };
    let names = |t: &TableSchema| -> Vec<String> {
        t.primary_key
            .iter()
            .map(|&i| t.columns[i].name.clone())
            .collect()
    };
    if names(old) != names(new) {
        return Err(fail(format!(
            "the primary key changed from ({}) to ({}); the replica cannot follow a key change of \
             the table: drop the replica's table and bootstrap it again",
            names(old).join(", "),
            names(new).join(", ")
        )));
    }
    let find = |t: &'a TableSchema, name: &str| t.columns.iter().find(|c| c.name == name);
    let added: Vec<(usize, &Column)> = new
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| find(old, &c.name).is_none())
        .collect();
    let dropped: Vec<&Column> = old
        .columns
        .iter()
        .filter(|c| find(new, &c.name).is_none())
        .collect();
    if !added.is_empty() && !dropped.is_empty() && !drops_and_adds_known {
        let show = |cs: &mut dyn Iterator<Item = &Column>| {
            cs.map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        return Err(fail(format!(
            "the new schema drops column(s) {} and adds {}: that may be a rename (values kept) or a \
             drop and an add (values lost), which the schema alone does not tell; the replica \
             stopped here — apply the change to the replica's table by hand, then restart",
            show(&mut dropped.iter().copied()),
            show(&mut added.iter().map(|(_, c)| *c))
        )));
    }
    let kept_old: Vec<&str> = old
        .columns
        .iter()
        .filter(|c| find(new, &c.name).is_some())
        .map(|c| c.name.as_str())
        .collect();
    let kept_new: Vec<&str> = new
        .columns
        .iter()
        .filter(|c| find(old, &c.name).is_some())
        .map(|c| c.name.as_str())
        .collect();
    if kept_old != kept_new {
        return Err(fail(format!(
            "columns were reordered ({} -> {}); the replica cannot tell the change from the schema \
             alone: apply it to the replica's table by hand, then restart",
            kept_old.join(", "),
            kept_new.join(", ")
        )));
    }
    let modified: Vec<(&Column, &Column)> = new
        .columns
        .iter()
        .filter_map(|c| {
            find(old, &c.name)
                .filter(|before| *before != c)
                .map(|b| (b, c))
        })
        .collect();
    if added.is_empty() && dropped.is_empty() && modified.is_empty() {
        return Ok(None);
    }
    Ok(Some(SchemaDiff {
        dropped,
        added,
        modified,
    }))
}

/// The MariaDB `ALTER TABLE` taking the replica of `old` to `new` ([`schema_diff`]). `Ok(None)`:
/// nothing to change. Idempotent (`ADD COLUMN IF NOT EXISTS … AFTER`, `DROP COLUMN IF EXISTS`,
/// `MODIFY`), so it can run again after a crash between it and the window's commit (MariaDB commits
/// DDL at once).
pub fn alter_table(
    old: &TableSchema,
    new: &TableSchema,
    drops_and_adds_known: bool,
) -> Result<Option<String>, MappingError> {
    let Some(diff) = schema_diff(old, new, drops_and_adds_known)? else {
        return Ok(None);
    };
    let mut clauses = Vec::new();
    for column in &diff.dropped {
        clauses.push(format!("DROP COLUMN IF EXISTS {}", ident(&column.name)));
    }
    for (i, column) in new.columns.iter().enumerate() {
        if let Some((_, added)) = diff.added.iter().find(|(at, _)| *at == i) {
            let place = match i {
                0 => "FIRST".to_owned(),
                _ => format!("AFTER {}", ident(&new.columns[i - 1].name)),
            };
            clauses.push(format!(
                "ADD COLUMN IF NOT EXISTS {} {place}",
                column_def(added)
            ));
        } else if diff.modified.iter().any(|(_, c)| c.name == column.name) {
            clauses.push(format!("MODIFY COLUMN {}", column_def(column)));
        }
    }
    Ok(Some(format!(
        "ALTER TABLE {} {}",
        table_ident(new),
        clauses.join(", ")
    )))
}

/// Whether the source statements `statements` since the replica's schema may rename a column:
/// one says `RENAME` or `CHANGE`, or one is unknown (empty: PostgreSQL sources log no DDL text).
/// Unless false, a schema with columns both dropped and added is not clear. No statement at all
/// counts as clear: windows replayed from the bootstrap log carry rows but no table events, and a
/// MariaDB source logs every ALTER with its text.
pub fn may_rename(statements: &[String]) -> bool {
    statements.iter().any(|s| {
        let upper = s.to_ascii_uppercase();
        upper.trim().is_empty()
            || upper
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|word| word == "RENAME" || word == "CHANGE")
    })
}

/// Whether the source statement of an added column gave it a DEFAULT other than NULL: existing
/// rows then hold that default at the source, which the stream never carries.
pub fn adds_with_default(statement: &str) -> bool {
    let upper = statement.to_ascii_uppercase();
    upper.contains("ADD")
        && upper
            .match_indices("DEFAULT")
            .any(|(i, _)| !upper[i + 7..].trim_start().starts_with("NULL"))
}

/// The SQL literal of a value (the session runs with `time_zone = '+00:00'`).
pub fn literal(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Value::UInt(v) | Value::Set(v) | Value::Bit(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Enum(i) => {
            let _ = write!(out, "{i}");
        }
        // `{:e}` is the shortest text that parses back to the same f64, and an exponent makes
        // MariaDB read it as a DOUBLE (not a DECIMAL); a FLOAT's exact value as f64 fits a FLOAT.
        Value::Float(v) if v.is_finite() => {
            let _ = write!(out, "{:e}", f64::from(*v));
        }
        Value::Double(v) if v.is_finite() => {
            let _ = write!(out, "{v:e}");
        }
        Value::Float(_) | Value::Double(_) => {
            return Err("a NaN or infinite float has no MariaDB value".into());
        }
        Value::Decimal(text) => {
            if !text
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!("{text:?} is not a decimal"));
            }
            out.push_str(text);
        }
        Value::Date { year, month, day } => {
            let _ = write!(out, "'{year:04}-{month:02}-{day:02}'");
        }
        Value::Time { negative, micros } => {
            let secs = micros / 1_000_000;
            let _ = write!(
                out,
                "'{}{:02}:{:02}:{:02}.{:06}'",
                if *negative { "-" } else { "" },
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                micros % 1_000_000
            );
        }
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            let _ = write!(
                out,
                "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}'"
            );
        }
        // MariaDB's zero TIMESTAMP is stored as second 0.
        Value::Timestamp(0) => out.push_str("'0000-00-00 00:00:00'"),
        Value::Timestamp(us) => {
            const DAY: i64 = 86_400_000_000;
            let (y, m, d) = databus_client::model::civil_from_days(us.div_euclid(DAY));
            let rest = us.rem_euclid(DAY);
            let secs = rest / 1_000_000;
            let _ = write!(
                out,
                "'{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}'",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                rest % 1_000_000
            );
        }
        Value::Text(s) | Value::Json(s) => out.push_str(&string_literal(s)),
        Value::Bytes(b) => {
            out.push_str("X'");
            for byte in b {
                let _ = write!(out, "{byte:02X}");
            }
            out.push('\'');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: Vec<Column>) -> TableSchema {
        TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns,
            primary_key: vec![0],
        }
    }

    fn int(name: &str) -> Column {
        Column::new(name, ColumnType::Int { unsigned: false }, false)
    }

    #[test]
    fn char_stays_char() {
        // A VARCHAR holds the same values but stores and checksums them differently.
        assert_eq!(sql_type(&ColumnType::Char { chars: 120 }), "CHAR(120)");
        assert_eq!(
            sql_type(&ColumnType::Text {
                max_chars: Some(120)
            }),
            "VARCHAR(120)"
        );
    }

    #[test]
    fn create_table_keeps_types_nullability_and_key() {
        let mut t = table(vec![
            int("id"),
            Column::new(
                "v",
                ColumnType::Text {
                    max_chars: Some(40),
                },
                true,
            ),
            Column::new(
                "e",
                ColumnType::Enum {
                    values: vec!["a".into(), "it's".into()],
                },
                true,
            ),
            Column::new("u", ColumnType::BigInt { unsigned: true }, false),
        ]);
        t.primary_key = vec![0, 3];
        assert_eq!(
            create_table(&t).unwrap(),
            "CREATE TABLE IF NOT EXISTS `d`.`t` (`id` INT NOT NULL, `v` VARCHAR(40) NULL, \
             `e` ENUM('a','it\\'s') NULL, `u` BIGINT UNSIGNED NOT NULL, PRIMARY KEY (`id`, `u`)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
        t.primary_key.clear();
        assert!(
            create_table(&t)
                .unwrap_err()
                .reason
                .contains("no primary key")
        );
    }

    #[test]
    fn alter_follows_adds_drops_and_modifies_and_refuses_what_is_unclear() {
        let old = table(vec![int("id"), int("a"), int("b")]);
        let add = table(vec![int("id"), int("a"), int("x"), int("b")]);
        assert_eq!(
            alter_table(&old, &add, false).unwrap().unwrap(),
            "ALTER TABLE `d`.`t` ADD COLUMN IF NOT EXISTS `x` INT NOT NULL AFTER `a`"
        );
        let drop = table(vec![int("id"), int("b")]);
        assert_eq!(
            alter_table(&old, &drop, false).unwrap().unwrap(),
            "ALTER TABLE `d`.`t` DROP COLUMN IF EXISTS `a`"
        );
        let modify = table(vec![
            int("id"),
            Column::new("a", ColumnType::BigInt { unsigned: false }, true),
            int("b"),
        ]);
        assert_eq!(
            alter_table(&old, &modify, false).unwrap().unwrap(),
            "ALTER TABLE `d`.`t` MODIFY COLUMN `a` BIGINT NULL"
        );
        assert_eq!(alter_table(&old, &old, false).unwrap(), None);
        let rename = table(vec![int("id"), int("a2"), int("b")]);
        let err = alter_table(&old, &rename, false).unwrap_err().to_string();
        assert!(err.contains("table d.t") && err.contains("rename"), "{err}");
        assert_eq!(
            alter_table(&old, &rename, true).unwrap().unwrap(),
            "ALTER TABLE `d`.`t` DROP COLUMN IF EXISTS `a`, ADD COLUMN IF NOT EXISTS `a2` INT NOT \
             NULL AFTER `id`"
        );
        assert!(may_rename(&["alter table t change a a2 int".into()]));
        assert!(may_rename(&["ALTER TABLE t RENAME COLUMN a TO a2".into()]));
        assert!(!may_rename(&[
            "ALTER TABLE t DROP COLUMN a, ADD COLUMN changed INT".into()
        ]));
        assert!(may_rename(&[
            "ALTER TABLE t DROP COLUMN a".into(),
            String::new()
        ]));
        let reorder = table(vec![int("id"), int("b"), int("a")]);
        assert!(
            alter_table(&old, &reorder, true)
                .unwrap_err()
                .reason
                .contains("reordered")
        );
        let mut rekey = old.clone();
        rekey.primary_key = vec![1];
        assert!(
            alter_table(&old, &rekey, true)
                .unwrap_err()
                .reason
                .contains("primary key")
        );
    }

    #[test]
    fn defaults_of_added_columns_are_noticed() {
        assert!(adds_with_default(
            "ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 5"
        ));
        assert!(!adds_with_default(
            "alter table t add column c int null default null"
        ));
        assert!(!adds_with_default("ALTER TABLE t ADD COLUMN c INT NULL"));
    }

    #[test]
    fn literals_are_exact() {
        let show = |v: Value| {
            let mut s = String::new();
            literal(&v, &mut s).unwrap();
            s
        };
        assert_eq!(show(Value::Text("a'b\\c\0".into())), "'a\\'b\\\\c\\0'");
        assert_eq!(show(Value::Bytes(vec![0, 0xab])), "X'00AB'");
        assert_eq!(show(Value::Float(0.1)), format!("{:e}", f64::from(0.1f32)));
        assert_eq!(show(Value::Double(0.1)), "1e-1");
        assert_eq!(
            show(Value::Timestamp(1_000_001)),
            "'1970-01-01 00:00:01.000001'"
        );
        assert_eq!(
            show(Value::Time {
                negative: true,
                micros: 3_020_399_999_999
            }),
            "'-838:59:59.999999'"
        );
        assert_eq!(show(Value::UInt(u64::MAX)), "18446744073709551615");
        assert!(literal(&Value::Double(f64::NAN), &mut String::new()).is_err());
    }
}
