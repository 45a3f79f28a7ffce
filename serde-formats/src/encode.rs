//! Avro binary encoding of rows, without building apache-avro values.
//!
//! A [`RowEncoder`] is compiled once per table schema version and then writes each [`Row`] as one Avro
//! binary datum of the record schema [`avro_schema`](crate::avro_schema::avro_schema) maps the table
//! to, appending to a `Vec<u8>`. The encoding is the Avro specification's: `int`/`long` as zig-zag
//! varints, `float`/`double` little-endian IEEE 754, `string`/`bytes` as a length varint then the bytes,
//! a union as the branch index varint (`0` = null, `1` = the value) then the value, an array as one
//! block (count varint, items, then `0`; an empty array is just `0`).
//!
//! Which [`Value`] variants each column type accepts:
//!
//! | Column type | Accepted values |
//! |---|---|
//! | integer types, YEAR | `Int` or `UInt` within the column's range (YEAR: 0–2155) |
//! | DECIMAL | `Decimal` text within the precision, no rounding |
//! | FLOAT / DOUBLE | `Float` / `Double` |
//! | DATE, TIME, DATETIME, TIMESTAMP | `Date`, `Time`, `DateTime`, `Timestamp` |
//! | text / bytes | `Text` / `Bytes` |
//! | ENUM | `Enum(index)` (0..=number of values) or `Text` naming a value or `""` |
//! | SET | `Set(bitmask)` with no bit beyond the members |
//! | BIT(n) | `Bit`, `UInt` or non-negative `Int` below 2^n |
//! | JSON | `Json` or `Text` |
//!
//! Anything else, and `Null` in a NOT NULL column, is an [`Error`] naming the column; on error the
//! output vector is left as it was before the call.

use crate::avro_schema::validate;
use crate::convert::{
    Unscaled, date_days, datetime_micros, decimal_len, parse_decimal, time_micros,
};
use crate::error::{Error, Result};
use crate::model::{ColumnType, Row, TableSchema, Value};

/// What to write for one column.
#[derive(Debug, Clone)]
enum Op {
    /// Avro `int` or `long` holding an integer in `min..=max`.
    Integer {
        min: i128,
        max: i128,
    },
    /// BIGINT UNSIGNED as `decimal(20,0)` bytes (9 bytes).
    U64Decimal,
    /// DECIMAL as `len` bytes (see `convert::decimal_len`).
    Decimal {
        precision: u8,
        scale: u8,
        len: usize,
    },
    Float,
    Double,
    Date,
    Time,
    DateTime,
    Timestamp,
    Text,
    Bytes,
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit {
        width: u8,
    },
    Json,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    sql: &'static str,
    nullable: bool,
    op: Op,
}

/// Writes rows of one table schema version as Avro binary. Cheap to share (`Arc`) across threads.
///
/// ```
/// use databus_serde_formats::{Column, ColumnType, TableSchema, Value};
/// use databus_serde_formats::encode::RowEncoder;
///
/// let table = TableSchema {
///     database: "shop".into(),
///     table: "orders".into(),
///     columns: vec![
///         Column::new("id", ColumnType::BigInt { unsigned: false }, false),
///         Column::new("note", ColumnType::Text { max_chars: None }, true),
///     ],
///     primary_key: vec![0],
/// };
/// let encoder = RowEncoder::new(&table).unwrap();
/// let mut buf = Vec::new();
/// encoder.encode(&[Value::Int(-1), Value::Text("hi".into())], &mut buf).unwrap();
/// assert_eq!(buf, [0x01, 0x02, 0x04, b'h', b'i']);
/// encoder.encode(&[Value::Int(1), Value::Null], &mut buf).unwrap();
/// assert_eq!(&buf[5..], [0x02, 0x00]);
/// ```
#[derive(Debug, Clone)]
pub struct RowEncoder {
    table: String,
    fields: Vec<Field>,
}

impl RowEncoder {
    /// Compiles the encoder of `table` (which must map to Avro, see
    /// [`avro_schema`](crate::avro_schema::avro_schema)).
    pub fn new(table: &TableSchema) -> Result<Self> {
        validate(table)?;
        let fields = table
            .columns
            .iter()
            .map(|column| {
                let int = |min: i128, max: i128| Op::Integer { min, max };
                let op = match &column.column_type {
                    ColumnType::TinyInt { unsigned: false } => int(-128, 127),
                    ColumnType::TinyInt { unsigned: true } => int(0, 255),
                    ColumnType::SmallInt { unsigned: false } => int(-32_768, 32_767),
                    ColumnType::SmallInt { unsigned: true } => int(0, 65_535),
                    ColumnType::MediumInt { unsigned: false } => int(-8_388_608, 8_388_607),
                    ColumnType::MediumInt { unsigned: true } => int(0, 16_777_215),
                    ColumnType::Int { unsigned: false } => int(i32::MIN.into(), i32::MAX.into()),
                    ColumnType::Int { unsigned: true } => int(0, u32::MAX.into()),
                    ColumnType::BigInt { unsigned: false } => int(i64::MIN.into(), i64::MAX.into()),
                    ColumnType::BigInt { unsigned: true } => Op::U64Decimal,
                    ColumnType::Decimal { precision, scale } => Op::Decimal {
                        precision: *precision,
                        scale: *scale,
                        len: decimal_len(*precision),
                    },
                    ColumnType::Float => Op::Float,
                    ColumnType::Double => Op::Double,
                    ColumnType::Date => Op::Date,
                    ColumnType::Time { .. } => Op::Time,
                    ColumnType::DateTime { .. } => Op::DateTime,
                    ColumnType::Timestamp { .. } => Op::Timestamp,
                    ColumnType::Year => int(0, 2155),
                    ColumnType::Text { .. } | ColumnType::Char { .. } => Op::Text,
                    ColumnType::Bytes { .. } => Op::Bytes,
                    ColumnType::Enum { values } => Op::Enum(values.clone()),
                    ColumnType::Set { members } => Op::Set(members.clone()),
                    ColumnType::Bit { width } => Op::Bit { width: *width },
                    ColumnType::Json => Op::Json,
                };
                Field {
                    name: column.name.clone(),
                    sql: column.column_type.sql_name(),
                    nullable: column.nullable,
                    op,
                }
            })
            .collect();
        Ok(RowEncoder {
            table: table.qualified_name(),
            fields,
        })
    }

    /// Appends the Avro binary datum of `row` to `out`. On error `out` is truncated back to its length
    /// before the call.
    pub fn encode(&self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let result = self.encode_inner(row, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The Avro binary datum of `row` in a new vector.
    pub fn encode_to_vec(&self, row: &Row) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + 16 * row.len());
        self.encode(row, &mut out)?;
        Ok(out)
    }

    /// `database.table` of the schema this encoder was compiled from.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn encode_inner(&self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        if row.len() != self.fields.len() {
            return Err(Error::RowLength {
                table: self.table.clone(),
                expected: self.fields.len(),
                found: row.len(),
            });
        }
        for (field, value) in self.fields.iter().zip(row) {
            if field.nullable {
                if matches!(value, Value::Null) {
                    out.push(0);
                    continue;
                }
                out.push(2); // zig-zag of branch 1
            } else if matches!(value, Value::Null) {
                return Err(Error::NullInNotNull {
                    column: field.name.clone(),
                });
            }
            field.write(value, out)?;
        }
        Ok(())
    }
}

impl Field {
    fn mismatch(&self, value: &Value) -> Error {
        Error::TypeMismatch {
            column: self.name.clone(),
            expected: self.sql,
            found: value.kind_name(),
        }
    }

    fn out_of_range(&self, reason: String) -> Error {
        Error::OutOfRange {
            column: self.name.clone(),
            reason,
        }
    }

    #[inline]
    fn put_integer(&self, v: i128, min: i128, max: i128, out: &mut Vec<u8>) -> Result<()> {
        if v < min || v > max {
            return Err(self.out_of_range(format!("{v} is outside {}'s {min}..={max}", self.sql)));
        }
        // In range of the column, hence of i64.
        put_long(out, v as i64);
        Ok(())
    }

    #[inline]
    fn write(&self, value: &Value, out: &mut Vec<u8>) -> Result<()> {
        match (&self.op, value) {
            (Op::Integer { min, max }, Value::Int(v)) => {
                self.put_integer(i128::from(*v), *min, *max, out)?;
            }
            (Op::Integer { min, max }, Value::UInt(v)) => {
                self.put_integer(i128::from(*v), *min, *max, out)?;
            }
            (Op::U64Decimal, Value::UInt(v)) => put_decimal_i128(out, i128::from(*v)),
            (Op::U64Decimal, Value::Int(v)) if *v >= 0 => put_decimal_i128(out, i128::from(*v)),
            (Op::U64Decimal, Value::Int(v)) => {
                return Err(self.out_of_range(format!("{v} is negative in a BIGINT UNSIGNED")));
            }
            (
                Op::Decimal {
                    precision,
                    scale,
                    len,
                },
                Value::Decimal(text),
            ) => {
                let unscaled = parse_decimal(text, *precision, *scale)
                    .map_err(|reason| self.out_of_range(reason))?;
                put_long(out, *len as i64);
                unscaled.write_be_fixed(*len, out);
            }
            (Op::Float, Value::Float(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (Op::Double, Value::Double(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (Op::Date, Value::Date { year, month, day }) => {
                let days = date_days(*year, *month, *day).map_err(|r| self.out_of_range(r))?;
                put_long(out, i64::from(days));
            }
            (Op::Time, Value::Time { negative, micros }) => {
                let v = time_micros(*negative, *micros).map_err(|r| self.out_of_range(r))?;
                put_long(out, v);
            }
            (
                Op::DateTime,
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
                    .map_err(|r| self.out_of_range(r))?;
                put_long(out, v);
            }
            (Op::Timestamp, Value::Timestamp(v)) => put_long(out, *v),
            (Op::Text, Value::Text(s)) | (Op::Json, Value::Json(s) | Value::Text(s)) => {
                put_bytes(out, s.as_bytes());
            }
            (Op::Bytes, Value::Bytes(b)) => put_bytes(out, b),
            (Op::Enum(values), Value::Enum(index)) => {
                let name = match usize::from(*index) {
                    0 => "",
                    i => values.get(i - 1).map(String::as_str).ok_or_else(|| {
                        self.out_of_range(format!(
                            "ENUM index {i} is beyond its {} values",
                            values.len()
                        ))
                    })?,
                };
                put_bytes(out, name.as_bytes());
            }
            (Op::Enum(values), Value::Text(name)) => {
                if !name.is_empty() && !values.iter().any(|v| v == name) {
                    return Err(self.out_of_range(format!("{name:?} is not a value of the ENUM")));
                }
                put_bytes(out, name.as_bytes());
            }
            (Op::Set(members), Value::Set(mask)) => {
                if members.len() < 64 && mask >> members.len() != 0 {
                    return Err(self.out_of_range(format!(
                        "SET bitmask {mask:#x} has bits beyond its {} members",
                        members.len()
                    )));
                }
                let count = mask.count_ones();
                if count > 0 {
                    put_long(out, i64::from(count));
                    for (i, member) in members.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            put_bytes(out, member.as_bytes());
                        }
                    }
                }
                out.push(0);
            }
            (Op::Bit { width }, Value::Bit(_) | Value::UInt(_) | Value::Int(_)) => {
                let bits = match value {
                    Value::Bit(v) | Value::UInt(v) => *v,
                    Value::Int(v) if *v >= 0 => *v as u64,
                    _ => return Err(self.out_of_range(format!("{value:?} is negative in a BIT"))),
                };
                if *width < 64 && bits >> width != 0 {
                    return Err(self.out_of_range(format!("{bits:#x} does not fit BIT({width})")));
                }
                // Documented: the u64's bits reinterpreted as i64.
                put_long(out, bits as i64);
            }
            _ => return Err(self.mismatch(value)),
        }
        Ok(())
    }
}

/// Appends `v` as an Avro `long`/`int`: zig-zag, then a little-endian base-128 varint.
#[inline]
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut buf = [0u8; 10];
    let mut len = 0;
    while n >= 0x80 {
        buf[len] = (n as u8) | 0x80;
        n >>= 7;
        len += 1;
    }
    buf[len] = n as u8;
    out.extend_from_slice(&buf[..=len]);
}

/// Appends Avro `bytes`/`string`: the length as a `long`, then the bytes.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A slice is at most isize::MAX bytes long: fits i64.
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// BIGINT UNSIGNED: `decimal(20,0)` needs 9 bytes.
fn put_decimal_i128(out: &mut Vec<u8>, v: i128) {
    put_long(out, U64_DECIMAL_LEN as i64);
    Unscaled::Small(v).write_be_fixed(U64_DECIMAL_LEN, out);
}

const U64_DECIMAL_LEN: usize = 9;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn one(column_type: ColumnType, nullable: bool) -> RowEncoder {
        RowEncoder::new(&TableSchema {
            database: "db".into(),
            table: "t".into(),
            columns: vec![Column::new("c", column_type, nullable)],
            primary_key: vec![],
        })
        .unwrap()
    }

    #[test]
    fn varints_follow_the_spec() {
        let enc = |v| {
            let mut out = Vec::new();
            put_long(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(-64), [0x7f]);
        assert_eq!(enc(64), [0x80, 0x01]);
        assert_eq!(
            enc(i64::MIN),
            [0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn mismatches_are_typed_errors_and_leave_the_buffer_alone() {
        let mut out = vec![9];
        let e = one(ColumnType::Int { unsigned: false }, false);
        let err = e.encode(&[Value::Text("x".into())], &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TypeMismatch {
                    expected: "INT",
                    found: "Text",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(out, [9]);
        let err = e.encode(&[Value::Null], &mut out).unwrap_err();
        assert!(matches!(err, Error::NullInNotNull { .. }), "{err}");
        let err = e
            .encode(&[Value::Int(i64::from(i32::MAX) + 1)], &mut out)
            .unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
        let err = e.encode(&[], &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RowLength {
                    expected: 1,
                    found: 0,
                    ..
                }
            ),
            "{err}"
        );
        let tiny = one(ColumnType::TinyInt { unsigned: true }, true);
        assert!(tiny.encode(&[Value::Int(-1)], &mut out).is_err());
        assert!(tiny.encode(&[Value::UInt(256)], &mut out).is_err());
        assert_eq!(out, [9]);
        let set = one(
            ColumnType::Set {
                members: vec!["a".into()],
            },
            false,
        );
        assert!(set.encode(&[Value::Set(2)], &mut out).is_err());
        let en = one(
            ColumnType::Enum {
                values: vec!["a".into()],
            },
            false,
        );
        assert!(en.encode(&[Value::Enum(2)], &mut out).is_err());
        assert!(en.encode(&[Value::Text("b".into())], &mut out).is_err());
        let bit = one(ColumnType::Bit { width: 3 }, false);
        assert!(bit.encode(&[Value::Bit(8)], &mut out).is_err());
        let dec = one(
            ColumnType::Decimal {
                precision: 4,
                scale: 2,
            },
            false,
        );
        assert!(
            dec.encode(&[Value::Decimal("100.00".into())], &mut out)
                .is_err()
        );
        assert_eq!(out, [9]);
    }
}
