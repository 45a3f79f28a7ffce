//! Event keys derived from a row's primary key.
//!
//! [`event_key`] gives:
//!
//! - **A single integer primary-key column** (TINYINT … BIGINT, signed or unsigned): [`Key::Int`] with the
//!   value. BIGINT UNSIGNED values are the u64's bits read as i64 (lossless: values ≥ 2^63 become
//!   negative keys; `key as u64` gives the value back).
//! - **A single text or bytes primary-key column** (CHAR/VARCHAR/TEXT/BINARY/BLOB): [`Key::Bytes`] with
//!   the value's bytes unchanged (UTF-8 for text).
//! - **Anything else** (composite keys, a single DECIMAL/DATE/ENUM/… key): [`Key::Bytes`] in the *tuple
//!   encoding* below.
//! - **No primary key**: [`Error::NoPrimaryKey`], unless the caller passes [`NoPkPolicy::FullRow`]: then
//!   the tuple encoding of *all* columns of the row.
//!
//! # Tuple encoding
//!
//! The concatenation, in key order, of one component per column: a tag byte `0x00` for NULL (no
//! payload) or `0x01` for a value, then the value:
//!
//! | Column type | Bytes |
//! |---|---|
//! | signed integers, YEAR | 8 bytes big-endian of the i64 with the sign bit flipped |
//! | unsigned integers, BIT, SET (bitmask) | 8 bytes big-endian of the u64 |
//! | DECIMAL(p,s) | the unscaled integer, two's complement with the sign bit flipped, 16 bytes big-endian if p ≤ 38, else 32 |
//! | FLOAT / DOUBLE | 4 / 8 bytes big-endian of the IEEE bits, all bits flipped if negative, else the sign bit flipped |
//! | DATE | 4 bytes big-endian of the encoded day number (as in Avro, zero date = `i32::MIN`) with the sign bit flipped |
//! | TIME, DATETIME, TIMESTAMP | 8 bytes big-endian of the encoded microseconds with the sign bit flipped |
//! | ENUM | 2 bytes big-endian of the 1-based index (0 for the error value) |
//! | text, bytes, JSON | the bytes with each `0x00` written as `0x00 0xFF`, then a terminating `0x00` |
//!
//! Every component is self-delimiting, so the encoding is unambiguous. Byte-wise comparison of two keys of
//! the same table orders them like their column values compared one after the other, NULL first — with
//! text compared by code point (UTF-8 bytes), not by the column's collation, and ENUM/SET by index/bitmask
//! as MariaDB sorts them.

use databus_core::Key;

use crate::convert::{date_days, datetime_micros, parse_decimal, time_micros};
use crate::error::{Error, Result};
use crate::model::{Column, ColumnType, TableSchema, Value};

/// What [`event_key_with`] does for a table without a primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoPkPolicy {
    /// Fail with [`Error::NoPrimaryKey`].
    #[default]
    Reject,
    /// Key the event by the tuple encoding of the whole row.
    FullRow,
}

/// The key of `row` of `table` (see the module docs); a table without a primary key is an error.
///
/// ```
/// use databus_core::Key;
/// use databus_serde_formats::{Column, ColumnType, TableSchema, Value};
/// use databus_serde_formats::key::event_key;
///
/// let table = TableSchema {
///     database: "shop".into(),
///     table: "orders".into(),
///     columns: vec![Column::new("id", ColumnType::BigInt { unsigned: true }, false)],
///     primary_key: vec![0],
/// };
/// assert_eq!(event_key(&table, &[Value::UInt(u64::MAX)]).unwrap(), Key::Int(-1));
/// ```
pub fn event_key(table: &TableSchema, row: &[Value]) -> Result<Key> {
    event_key_with(table, row, NoPkPolicy::Reject)
}

/// The key of `row` of `table`, with `policy` for tables without a primary key.
pub fn event_key_with(table: &TableSchema, row: &[Value], policy: NoPkPolicy) -> Result<Key> {
    if row.len() != table.columns.len() {
        return Err(Error::RowLength {
            table: table.qualified_name(),
            expected: table.columns.len(),
            found: row.len(),
        });
    }
    let column_at = |i: usize| {
        table.columns.get(i).ok_or_else(|| Error::InvalidSchema {
            table: table.qualified_name(),
            reason: format!("primary key refers to column index {i} which does not exist"),
        })
    };
    match table.primary_key.as_slice() {
        [] => match policy {
            NoPkPolicy::Reject => Err(Error::NoPrimaryKey {
                table: table.qualified_name(),
            }),
            NoPkPolicy::FullRow => {
                let mut out = Vec::with_capacity(16 * row.len());
                for (column, value) in table.columns.iter().zip(row) {
                    push_component(column, value, &mut out)?;
                }
                Ok(Key::Bytes(out))
            }
        },
        [i] => {
            let column = column_at(*i)?;
            let value = &row[*i];
            if matches!(value, Value::Null) {
                return Err(Error::NullInNotNull {
                    column: column.name.clone(),
                });
            }
            match (&column.column_type, value) {
                (
                    ColumnType::TinyInt { unsigned }
                    | ColumnType::SmallInt { unsigned }
                    | ColumnType::MediumInt { unsigned }
                    | ColumnType::Int { unsigned }
                    | ColumnType::BigInt { unsigned },
                    _,
                ) => integer(column, value, *unsigned).map(|v| {
                    Key::Int(match v {
                        // Documented: the u64's bits as i64.
                        Int::Unsigned(u) => u as i64,
                        Int::Signed(s) => s,
                    })
                }),
                (ColumnType::Text { .. } | ColumnType::Char { .. }, Value::Text(s)) => {
                    Ok(Key::Bytes(s.as_bytes().to_vec()))
                }
                (ColumnType::Bytes { .. }, Value::Bytes(b)) => Ok(Key::Bytes(b.clone())),
                _ => {
                    let mut out = Vec::with_capacity(24);
                    push_component(column, value, &mut out)?;
                    Ok(Key::Bytes(out))
                }
            }
        }
        indexes => {
            let mut out = Vec::with_capacity(16 * indexes.len());
            for &i in indexes {
                push_component(column_at(i)?, &row[i], &mut out)?;
            }
            Ok(Key::Bytes(out))
        }
    }
}

enum Int {
    Signed(i64),
    Unsigned(u64),
}

fn out_of_range(column: &Column, reason: String) -> Error {
    Error::OutOfRange {
        column: column.name.clone(),
        reason,
    }
}

fn mismatch(column: &Column, value: &Value) -> Error {
    Error::TypeMismatch {
        column: column.name.clone(),
        expected: column.column_type.sql_name(),
        found: value.kind_name(),
    }
}

fn integer(column: &Column, value: &Value, unsigned: bool) -> Result<Int> {
    match (value, unsigned) {
        (Value::Int(v), false) => Ok(Int::Signed(*v)),
        (Value::UInt(v), false) => i64::try_from(*v)
            .map(Int::Signed)
            .map_err(|_| out_of_range(column, format!("{v} does not fit a signed integer"))),
        (Value::UInt(v), true) => Ok(Int::Unsigned(*v)),
        (Value::Int(v), true) => u64::try_from(*v)
            .map(Int::Unsigned)
            .map_err(|_| out_of_range(column, format!("{v} is negative in an unsigned column"))),
        _ => Err(mismatch(column, value)),
    }
}

fn flip64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn push_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.push(0);
}

fn push_component(column: &Column, value: &Value, out: &mut Vec<u8>) -> Result<()> {
    if matches!(value, Value::Null) {
        out.push(0);
        return Ok(());
    }
    out.push(1);
    let range = |r: String| out_of_range(column, r);
    match (&column.column_type, value) {
        (
            ColumnType::TinyInt { unsigned }
            | ColumnType::SmallInt { unsigned }
            | ColumnType::MediumInt { unsigned }
            | ColumnType::Int { unsigned }
            | ColumnType::BigInt { unsigned },
            _,
        ) => match integer(column, value, *unsigned)? {
            Int::Signed(v) => out.extend_from_slice(&flip64(v)),
            Int::Unsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
        },
        (ColumnType::Year, Value::Int(_) | Value::UInt(_)) => {
            match integer(column, value, false)? {
                Int::Signed(v) => out.extend_from_slice(&flip64(v)),
                Int::Unsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            }
        }
        (ColumnType::Bit { .. }, Value::Bit(v) | Value::UInt(v))
        | (ColumnType::Set { .. }, Value::Set(v)) => {
            out.extend_from_slice(&v.to_be_bytes());
        }
        (ColumnType::Decimal { precision, scale }, Value::Decimal(text)) => {
            let width = if *precision <= 38 { 16 } else { 32 };
            let unscaled = parse_decimal(text, *precision, *scale).map_err(range)?;
            let start = out.len();
            unscaled.write_be_fixed(width, out);
            out[start] ^= 0x80;
        }
        (ColumnType::Float, Value::Float(v)) => {
            let bits = v.to_bits();
            let bits = if bits >> 31 == 1 {
                !bits
            } else {
                bits ^ (1 << 31)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        (ColumnType::Double, Value::Double(v)) => {
            let bits = v.to_bits();
            let bits = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        (ColumnType::Date, Value::Date { year, month, day }) => {
            let days = date_days(*year, *month, *day).map_err(range)?;
            out.extend_from_slice(&((days as u32) ^ (1 << 31)).to_be_bytes());
        }
        (ColumnType::Time { .. }, Value::Time { negative, micros }) => {
            out.extend_from_slice(&flip64(time_micros(*negative, *micros).map_err(range)?));
        }
        (
            ColumnType::DateTime { .. },
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            },
        ) => {
            let v = datetime_micros(*year, *month, *day, *hour, *minute, *second, *micros)
                .map_err(range)?;
            out.extend_from_slice(&flip64(v));
        }
        (ColumnType::Timestamp { .. }, Value::Timestamp(v)) => out.extend_from_slice(&flip64(*v)),
        (ColumnType::Enum { values }, Value::Enum(i)) => {
            if usize::from(*i) > values.len() {
                return Err(range(format!(
                    "ENUM index {i} is beyond its {} values",
                    values.len()
                )));
            }
            out.extend_from_slice(&i.to_be_bytes());
        }
        (ColumnType::Enum { values }, Value::Text(name)) => {
            let index = if name.is_empty() {
                0
            } else {
                values
                    .iter()
                    .position(|v| v == name)
                    .map(|p| p + 1)
                    .ok_or_else(|| range(format!("{name:?} is not a value of the ENUM")))?
            };
            // At most u16::MAX values (checked by the schema validation).
            out.extend_from_slice(&(index as u16).to_be_bytes());
        }
        (ColumnType::Text { .. } | ColumnType::Char { .. }, Value::Text(s))
        | (ColumnType::Json, Value::Json(s) | Value::Text(s)) => {
            push_escaped(s.as_bytes(), out);
        }
        (ColumnType::Bytes { .. }, Value::Bytes(b)) => push_escaped(b, out),
        _ => return Err(mismatch(column, value)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: Vec<Column>, primary_key: Vec<usize>) -> TableSchema {
        TableSchema {
            database: "db".into(),
            table: "t".into(),
            columns,
            primary_key,
        }
    }

    #[test]
    fn single_integer_and_text_keys() {
        let t = table(
            vec![Column::new(
                "id",
                ColumnType::Int { unsigned: false },
                false,
            )],
            vec![0],
        );
        assert_eq!(event_key(&t, &[Value::Int(-5)]).unwrap(), Key::Int(-5));
        let t = table(
            vec![Column::new(
                "id",
                ColumnType::Text { max_chars: None },
                false,
            )],
            vec![0],
        );
        assert_eq!(
            event_key(&t, &[Value::Text("ab".into())]).unwrap(),
            Key::Bytes(b"ab".to_vec())
        );
        assert!(matches!(
            event_key(&t, &[Value::Null]),
            Err(Error::NullInNotNull { .. })
        ));
        assert!(matches!(
            event_key(&t, &[Value::Int(1)]),
            Err(Error::TypeMismatch { .. })
        ));
    }

    #[test]
    fn no_primary_key_needs_opt_in() {
        let t = table(
            vec![Column::new("a", ColumnType::Text { max_chars: None }, true)],
            vec![],
        );
        let err = event_key(&t, &[Value::Null]).unwrap_err();
        assert!(matches!(err, Error::NoPrimaryKey { .. }), "{err}");
        assert_eq!(
            event_key_with(&t, &[Value::Null], NoPkPolicy::FullRow).unwrap(),
            Key::Bytes(vec![0])
        );
        assert_eq!(
            event_key_with(&t, &[Value::Text("a\0".into())], NoPkPolicy::FullRow).unwrap(),
            Key::Bytes(vec![1, b'a', 0, 0xff, 0])
        );
    }

    #[test]
    fn decimal_components_are_fixed_width_and_ordered() {
        let t = table(
            vec![Column::new(
                "d",
                ColumnType::Decimal {
                    precision: 65,
                    scale: 30,
                },
                false,
            )],
            vec![0],
        );
        let key = |s: &str| match event_key(&t, &[Value::Decimal(s.into())]).unwrap() {
            Key::Bytes(b) => b,
            other => panic!("{other:?}"),
        };
        let big = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        let values = [
            format!("-{big}"),
            "-1".into(),
            "0".into(),
            "0.5".into(),
            big,
        ];
        let keys: Vec<Vec<u8>> = values.iter().map(|v| key(v)).collect();
        assert!(keys.iter().all(|k| k.len() == 33));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }
}
