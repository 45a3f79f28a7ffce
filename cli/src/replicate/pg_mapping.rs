//! The PostgreSQL dialect of the model: column types, `CREATE TABLE`, schema-change `ALTER TABLE`s
//! and value literals (docs/replicate.md has the mapping tables, MariaDB → PostgreSQL and
//! PostgreSQL → PostgreSQL).
//!
//! A source database becomes a schema of the target database: `shop.orders` → `"shop"."orders"`.
//! The session runs with `standard_conforming_strings = on` and `TimeZone = 'UTC'`. Everything here
//! is pure text generation, unit-tested below.

use std::fmt::Write as _;

use databus_client::model::{Column, ColumnType, TableSchema, Value};

use super::mapping::{MappingError, schema_diff};

/// `"name"` with double quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"db"."table"`.
pub fn table_ident(table: &TableSchema) -> String {
    format!("{}.{}", ident(&table.database), ident(&table.table))
}

/// `'…'` with `'` doubled (standard-conforming strings: backslashes are plain characters). A NUL,
/// which PostgreSQL text cannot hold, is dropped here; values go through [`literal`], which refuses it.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The PostgreSQL column type of a model type: the narrowest type holding every value of the
/// source type (PostgreSQL has no unsigned integers, no 1- or 3-byte integers, no ENUM/SET of a
/// column, and its `time` holds no negative or >24 h durations).
pub fn sql_type(column_type: &ColumnType) -> String {
    match column_type {
        ColumnType::TinyInt { .. } => "smallint".into(),
        ColumnType::SmallInt { unsigned: false } => "smallint".into(),
        ColumnType::SmallInt { unsigned: true } | ColumnType::MediumInt { .. } => "integer".into(),
        ColumnType::Int { unsigned: false } => "integer".into(),
        ColumnType::Int { unsigned: true } | ColumnType::BigInt { unsigned: false } => {
            "bigint".into()
        }
        ColumnType::BigInt { unsigned: true } => "numeric(20,0)".into(),
        ColumnType::Decimal { precision, scale } => {
            format!("numeric({},{scale})", (*precision).max(1))
        }
        ColumnType::Float => "real".into(),
        ColumnType::Double => "double precision".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time { fsp } => format!("interval({fsp})"),
        ColumnType::DateTime { fsp } => format!("timestamp({fsp})"),
        ColumnType::Timestamp { fsp } => format!("timestamptz({fsp})"),
        ColumnType::Year => "smallint".into(),
        ColumnType::Text { max_chars: Some(n) } => format!("varchar({n})"),
        ColumnType::Text { max_chars: None } => "text".into(),
        // MariaDB's CHAR(n) reads back without its trailing spaces (the values the replica is sent);
        // PostgreSQL's char(n) would pad them again, so the replica keeps the values as read.
        ColumnType::Char { chars } => format!("varchar({chars})"),
        ColumnType::Bytes { .. } => "bytea".into(),
        ColumnType::Enum { .. } | ColumnType::Set { .. } => "text".into(),
        ColumnType::Bit { width } => format!("bit({})", (*width).max(1)),
        ColumnType::Json => "jsonb".into(),
    }
}

/// `"name" type [NOT] NULL`.
pub fn column_def(column: &Column) -> String {
    let null = if column.nullable { "NULL" } else { "NOT NULL" };
    format!(
        "{} {} {null}",
        ident(&column.name),
        sql_type(&column.column_type)
    )
}

/// `CREATE TABLE IF NOT EXISTS` of `table` with its primary key.
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
    let _ = write!(sql, "PRIMARY KEY ({}))", key.join(", "));
    Ok(sql)
}

/// The `ALTER TABLE` taking the replica of `old` to `new` (what [`schema_diff`] accepts):
/// `DROP COLUMN IF EXISTS`, `ADD COLUMN IF NOT EXISTS` (PostgreSQL appends: an added column is last
/// in the replica whatever its source position), `ALTER COLUMN … TYPE … USING …::…` and
/// `SET`/`DROP NOT NULL`. PostgreSQL's DDL is transactional, so it commits with the window.
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
    for (_, column) in &diff.added {
        clauses.push(format!("ADD COLUMN IF NOT EXISTS {}", column_def(column)));
    }
    for (before, after) in &diff.modified {
        let name = ident(&after.name);
        let (from, to) = (sql_type(&before.column_type), sql_type(&after.column_type));
        if from != to {
            clauses.push(format!("ALTER COLUMN {name} TYPE {to} USING {name}::{to}"));
        }
        if before.nullable != after.nullable {
            let verb = if after.nullable { "DROP" } else { "SET" };
            clauses.push(format!("ALTER COLUMN {name} {verb} NOT NULL"));
        }
    }
    if clauses.is_empty() {
        // Only a difference the PostgreSQL types do not show (an ENUM's values: text either way).
        return Ok(None);
    }
    Ok(Some(format!(
        "ALTER TABLE {} {}",
        table_ident(new),
        clauses.join(", ")
    )))
}

fn mismatch(value: &Value, column_type: &ColumnType) -> String {
    format!(
        "a {value:?} value does not fit a {} column",
        column_type.sql_name()
    )
}

/// The SQL literal of `value` in a column of `column_type` (the session's time zone is UTC).
pub fn literal(value: &Value, column_type: &ColumnType, out: &mut String) -> Result<(), String> {
    match (value, column_type) {
        (Value::Null, _) => out.push_str("NULL"),
        (Value::Int(v), _) => {
            let _ = write!(out, "{v}");
        }
        (Value::UInt(v), _) => {
            let _ = write!(out, "{v}");
        }
        // The shortest text that reads back as the same f32/f64: PostgreSQL reads the numeric
        // constant and rounds it once to the column's type.
        (Value::Float(v), _) if v.is_finite() => {
            let _ = write!(out, "{v:e}");
        }
        (Value::Double(v), _) if v.is_finite() => {
            let _ = write!(out, "{v:e}");
        }
        (Value::Float(v), _) => special_float(f64::from(*v), out),
        (Value::Double(v), _) => special_float(*v, out),
        (Value::Decimal(text), _) => {
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!("{text:?} is not a decimal"));
            }
            out.push_str(text);
        }
        (Value::Date { year, month, day }, _) => {
            check_date(*year, *month, *day)?;
            let _ = write!(out, "'{year:04}-{month:02}-{day:02}'::date");
        }
        (Value::Time { negative, micros }, _) => {
            let _ = write!(
                out,
                "'{}{} microseconds'::interval",
                if *negative { "-" } else { "" },
                micros
            );
        }
        (
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            },
            _,
        ) => {
            check_date(*year, *month, *day)?;
            let _ = write!(
                out,
                "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}'::timestamp"
            );
        }
        (Value::Timestamp(us), _) => {
            const DAY: i64 = 86_400_000_000;
            let (y, m, d) = databus_client::model::civil_from_days(us.div_euclid(DAY));
            if y < 1 {
                return Err(format!("timestamp {us} µs is before year 1"));
            }
            let rest = us.rem_euclid(DAY);
            let secs = rest / 1_000_000;
            let _ = write!(
                out,
                "'{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}+00'::timestamptz",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                rest % 1_000_000
            );
        }
        (Value::Text(s), _) | (Value::Json(s), ColumnType::Text { .. }) => text(s, out)?,
        (Value::Json(s), _) => {
            text(s, out)?;
            out.push_str("::jsonb");
        }
        (Value::Bytes(b), _) => {
            out.push_str("'\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            out.push_str("'::bytea");
        }
        (Value::Enum(i), ColumnType::Enum { values }) => {
            // Index 0 is MariaDB's error value, the empty string.
            let label = match usize::from(*i) {
                0 => "",
                i => values
                    .get(i - 1)
                    .ok_or_else(|| format!("ENUM index {i} is past the {} values", values.len()))?,
            };
            text(label, out)?;
        }
        (Value::Set(mask), ColumnType::Set { members }) => {
            if members.len() < 64 && mask >> members.len() != 0 {
                return Err(format!(
                    "SET bitmask {mask:#x} names members past the {}",
                    members.len()
                ));
            }
            let chosen: Vec<&str> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| mask >> i & 1 == 1)
                .map(|(_, m)| m.as_str())
                .collect();
            text(&chosen.join(","), out)?;
        }
        (Value::Bit(v), ColumnType::Bit { width }) => {
            let width = u32::from((*width).max(1));
            out.push_str("B'");
            for i in (0..width).rev() {
                out.push(if i < 64 && v >> i & 1 == 1 { '1' } else { '0' });
            }
            out.push('\'');
        }
        (Value::Enum(_) | Value::Set(_) | Value::Bit(_), other) => {
            return Err(mismatch(value, other));
        }
    }
    Ok(())
}

fn special_float(v: f64, out: &mut String) {
    out.push_str(if v.is_nan() {
        "'NaN'"
    } else if v > 0.0 {
        "'Infinity'"
    } else {
        "'-Infinity'"
    });
}

fn text(s: &str, out: &mut String) -> Result<(), String> {
    if s.contains('\0') {
        return Err("the text holds a NUL character, which PostgreSQL text cannot store".into());
    }
    out.push_str(&string_literal(s));
    Ok(())
}

fn check_date(year: u16, month: u8, day: u8) -> Result<(), String> {
    if year == 0 || month == 0 || day == 0 {
        return Err(format!(
            "{year:04}-{month:02}-{day:02} (a MariaDB zero or partial date) has no PostgreSQL \
             value; fix the source row or leave the table out with --tables"
        ));
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
    fn types_hold_every_source_value() {
        let cases = [
            (ColumnType::TinyInt { unsigned: true }, "smallint"),
            (ColumnType::SmallInt { unsigned: true }, "integer"),
            (ColumnType::MediumInt { unsigned: true }, "integer"),
            (ColumnType::Int { unsigned: true }, "bigint"),
            (ColumnType::BigInt { unsigned: true }, "numeric(20,0)"),
            (
                ColumnType::Decimal {
                    precision: 12,
                    scale: 3,
                },
                "numeric(12,3)",
            ),
            (ColumnType::Time { fsp: 0 }, "interval(0)"),
            (ColumnType::Timestamp { fsp: 6 }, "timestamptz(6)"),
            (ColumnType::Bytes { max_bytes: Some(4) }, "bytea"),
            (ColumnType::Set { members: vec![] }, "text"),
            (ColumnType::Bit { width: 5 }, "bit(5)"),
            (ColumnType::Json, "jsonb"),
        ];
        for (ty, want) in cases {
            assert_eq!(sql_type(&ty), want, "{ty:?}");
        }
    }

    #[test]
    fn create_and_alter_tables() {
        let old = table(vec![
            int("id"),
            Column::new(
                "v",
                ColumnType::Text {
                    max_chars: Some(40),
                },
                true,
            ),
            int("b"),
        ]);
        assert_eq!(
            create_table(&old).unwrap(),
            "CREATE TABLE IF NOT EXISTS \"d\".\"t\" (\"id\" integer NOT NULL, \"v\" varchar(40) \
             NULL, \"b\" integer NOT NULL, PRIMARY KEY (\"id\"))"
        );
        let new = table(vec![
            int("id"),
            Column::new(
                "v",
                ColumnType::Text {
                    max_chars: Some(60),
                },
                false,
            ),
            int("x"),
        ]);
        assert_eq!(
            alter_table(&old, &new, true).unwrap().unwrap(),
            "ALTER TABLE \"d\".\"t\" DROP COLUMN IF EXISTS \"b\", ADD COLUMN IF NOT EXISTS \"x\" \
             integer NOT NULL, ALTER COLUMN \"v\" TYPE varchar(60) USING \"v\"::varchar(60), \
             ALTER COLUMN \"v\" SET NOT NULL"
        );
        assert!(
            alter_table(&old, &new, false)
                .unwrap_err()
                .reason
                .contains("rename")
        );
        assert_eq!(alter_table(&old, &old, false).unwrap(), None);
    }

    #[test]
    fn literals_are_exact() {
        let show = |v: Value, ty: ColumnType| {
            let mut s = String::new();
            literal(&v, &ty, &mut s).unwrap();
            s
        };
        let any = ColumnType::Json;
        assert_eq!(show(Value::Text("a'b\\c".into()), any.clone()), "'a''b\\c'");
        assert_eq!(
            show(Value::Bytes(vec![0, 0xab]), any.clone()),
            "'\\x00ab'::bytea"
        );
        assert_eq!(show(Value::Json("{}".into()), any.clone()), "'{}'::jsonb");
        assert_eq!(show(Value::Double(f64::NAN), any.clone()), "'NaN'");
        assert_eq!(show(Value::Float(0.1), any.clone()), "1e-1");
        assert_eq!(
            show(Value::Timestamp(1_000_001), any.clone()),
            "'1970-01-01 00:00:01.000001+00'::timestamptz"
        );
        assert_eq!(
            show(
                Value::Time {
                    negative: true,
                    micros: 43_384_000_000
                },
                any.clone()
            ),
            "'-43384000000 microseconds'::interval"
        );
        let members = ColumnType::Set {
            members: vec!["x".into(), "y".into(), "z".into()],
        };
        assert_eq!(show(Value::Set(0b101), members), "'x,z'");
        let values = ColumnType::Enum {
            values: vec!["red".into(), "it's".into()],
        };
        assert_eq!(show(Value::Enum(2), values.clone()), "'it''s'");
        assert_eq!(show(Value::Enum(0), values), "''");
        assert_eq!(show(Value::Bit(5), ColumnType::Bit { width: 4 }), "B'0101'");
        assert_eq!(
            show(Value::UInt(u64::MAX), any.clone()),
            "18446744073709551615"
        );
        let zero = Value::Date {
            year: 0,
            month: 0,
            day: 0,
        };
        assert!(
            literal(&zero, &any, &mut String::new())
                .unwrap_err()
                .contains("zero")
        );
        assert!(literal(&Value::Text("a\0".into()), &any, &mut String::new()).is_err());
    }
}
