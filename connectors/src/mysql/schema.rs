//! Table schemas from table-map events, and binlog values to [`model::Value`].
//!
//! With `binlog_row_metadata=FULL` a table-map event carries column names, signedness, character sets,
//! the primary key and ENUM/SET strings, so a schema is derived from the event itself: replaying old binlog
//! after later `ALTER`s still decodes each row with the schema it was written with. Only what the binlog
//! never says comes from `information_schema`: MariaDB's `JSON` is a `LONGTEXT` with a `json_valid` check.
//!
//! | binlog type | [`ColumnType`] | [`Value`] |
//! |---|---|---|
//! | TINY/SHORT/INT24/LONG/LONGLONG | TinyInt…BigInt {unsigned} | `Int`, or `UInt` when unsigned |
//! | NEWDECIMAL(p,s) | Decimal | `Decimal` exact text |
//! | FLOAT / DOUBLE | Float / Double | `Float` / `Double` |
//! | DATE | Date | `Date` |
//! | TIME2(fsp) | Time | `Time {negative, micros}` |
//! | DATETIME2(fsp) | DateTime | `DateTime` fields |
//! | TIMESTAMP2(fsp) | Timestamp | `Timestamp` micros since the epoch |
//! | YEAR | Year | `Int` (0 for YEAR 0000) |
//! | STRING/VARCHAR/BLOB, text charset | Text | `Text` (utf8mb4, utf8mb3, ascii, latin1) |
//! | STRING/VARCHAR/BLOB, charset 63 | Bytes | `Bytes` (BINARY(n) padded back to n bytes) |
//! | ENUM | Enum {values} | `Enum` 1-based index |
//! | SET | Set {members} | `Set` bitmask |
//! | BIT(n) | Bit | `Bit` |
//! | LONGTEXT with json_valid check (MariaDB JSON), JSON | Json | `Json` text |
//! | NULL | | `Null` |

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use databus_serde_formats::model::{Column, ColumnType, TableSchema, Value};
use mysql_async::Value as MyValue;
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType as T;

use crate::ConnectorError;

/// Character sets by collation id (from `information_schema.COLLATIONS`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Charsets {
    by_id: HashMap<u16, (String, u32)>,
}

impl Charsets {
    pub(crate) fn new(rows: Vec<(u16, String, u32)>) -> Self {
        Self {
            by_id: rows
                .into_iter()
                .map(|(id, name, maxlen)| (id, (name, maxlen.max(1))))
                .collect(),
        }
    }

    fn get(&self, id: u16) -> (String, u32) {
        self.by_id
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (format!("collation #{id}"), 1))
    }
}

/// How a column's binlog value becomes a model value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decode {
    Signed {
        bits: u32,
    },
    Unsigned {
        bits: u32,
    },
    Float,
    Double,
    Decimal,
    Date,
    Time,
    DateTime,
    Timestamp,
    Year,
    Text(TextCharset),
    Bytes,
    /// BINARY(n): the binlog strips trailing zero bytes; the value has exactly n bytes.
    FixedBytes(usize),
    Enum,
    Set,
    Bit,
    Json(TextCharset),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextCharset {
    Utf8,
    Latin1,
    Unsupported(u16),
}

fn text_charset(collation: u16, name: &str) -> TextCharset {
    match name {
        "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => TextCharset::Utf8,
        "latin1" => TextCharset::Latin1,
        _ => TextCharset::Unsupported(collation),
    }
}

/// A captured table as one table-map event describes it.
#[derive(Debug)]
pub(crate) struct TableInfo {
    pub(crate) schema: Arc<TableSchema>,
    decoders: Vec<Decode>,
    charset_names: Vec<String>,
}

fn bad(tme: &TableMapEvent<'_>, col: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Decode {
        table: format!("{}.{}", tme.database_name(), tme.table_name()),
        column: col.to_owned(),
        reason: reason.into(),
    }
}

/// Derives the schema of a table from its table-map event. `json_columns`: the names of columns that
/// `information_schema` says are JSON.
pub(crate) fn table_info(
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
    json_columns: &HashSet<String>,
) -> Result<TableInfo, ConnectorError> {
    let n = tme.columns_count() as usize;
    let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| bad(tme, "*", format!("bad table-map metadata: {e}")))?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|r| r.map(|c| c.name().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(tme, "*", format!("bad column names: {e}")))?;
    if names.len() != n {
        return Err(bad(
            tme,
            "*",
            "the table map carries no column names; set binlog_row_metadata=FULL on the source (old binlog \
             written with MINIMAL metadata cannot be captured)",
        ));
    }
    let mut signedness = meta.iter_signedness();
    let mut char_charsets = meta.iter_charset();
    let mut enum_charsets = meta.iter_enum_and_set_charset();
    let mut enum_values: Vec<Vec<String>> = Vec::new();
    let mut set_values: Vec<Vec<String>> = Vec::new();
    for field in tme.iter_optional_meta() {
        match field.map_err(|e| bad(tme, "*", format!("bad table-map metadata: {e}")))? {
            OptionalMetadataField::EnumStrValue(v) => {
                for e in v.iter_values() {
                    let e = e.map_err(|e| bad(tme, "*", format!("bad enum values: {e}")))?;
                    enum_values.push(e.values().iter().map(|s| s.value().into_owned()).collect());
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for e in v.iter_values() {
                    let e = e.map_err(|e| bad(tme, "*", format!("bad set values: {e}")))?;
                    set_values.push(e.values().iter().map(|s| s.value().into_owned()).collect());
                }
            }
            _ => {}
        }
    }
    let (mut enum_values, mut set_values) = (enum_values.into_iter(), set_values.into_iter());
    let nullable = tme.null_bitmask();
    let mut columns = Vec::with_capacity(n);
    let mut decoders = Vec::with_capacity(n);
    let mut charset_names = Vec::with_capacity(n);
    for (i, name) in names.into_iter().enumerate() {
        let ty = match tme.get_column_type(i) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(bad(tme, &name, "no column type")),
            Err(e) => return Err(bad(tme, &name, format!("unknown column type: {e}"))),
        };
        let m = tme.get_column_metadata(i).unwrap_or(&[]);
        let unsigned = if ty.is_numeric_type() {
            signedness.next().unwrap_or(false)
        } else {
            false
        };
        let collation = if ty.is_character_type() {
            char_charsets
                .next()
                .transpose()
                .map_err(|e| bad(tme, &name, e.to_string()))?
                .unwrap_or(0)
        } else if ty.is_enum_or_set_type() {
            enum_charsets
                .next()
                .transpose()
                .map_err(|e| bad(tme, &name, e.to_string()))?
                .unwrap_or(0)
        } else {
            0
        };
        let (cs_name, maxlen) = charsets.get(collation);
        let byte = |k: usize| m.get(k).copied().unwrap_or(0);
        let int = |t: fn(bool) -> ColumnType, bits| {
            (
                t(unsigned),
                if unsigned {
                    Decode::Unsigned { bits }
                } else {
                    Decode::Signed { bits }
                },
            )
        };
        let text_or_bytes = |max_bytes: Option<u32>| {
            if collation == 63 {
                (ColumnType::Bytes { max_bytes }, Decode::Bytes)
            } else if json_columns.contains(&name) {
                (
                    ColumnType::Json,
                    Decode::Json(text_charset(collation, &cs_name)),
                )
            } else {
                (
                    ColumnType::Text {
                        max_chars: max_bytes.map(|b| b / maxlen),
                    },
                    Decode::Text(text_charset(collation, &cs_name)),
                )
            }
        };
        let (column_type, decode) = match ty {
            T::MYSQL_TYPE_TINY => int(|unsigned| ColumnType::TinyInt { unsigned }, 8),
            T::MYSQL_TYPE_SHORT => int(|unsigned| ColumnType::SmallInt { unsigned }, 16),
            T::MYSQL_TYPE_INT24 => int(|unsigned| ColumnType::MediumInt { unsigned }, 24),
            T::MYSQL_TYPE_LONG => int(|unsigned| ColumnType::Int { unsigned }, 32),
            T::MYSQL_TYPE_LONGLONG => int(|unsigned| ColumnType::BigInt { unsigned }, 64),
            T::MYSQL_TYPE_NEWDECIMAL => (
                ColumnType::Decimal {
                    precision: byte(0),
                    scale: byte(1),
                },
                Decode::Decimal,
            ),
            T::MYSQL_TYPE_FLOAT => (ColumnType::Float, Decode::Float),
            T::MYSQL_TYPE_DOUBLE => (ColumnType::Double, Decode::Double),
            T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => (ColumnType::Date, Decode::Date),
            T::MYSQL_TYPE_TIME2 => (ColumnType::Time { fsp: byte(0) }, Decode::Time),
            T::MYSQL_TYPE_TIME => (ColumnType::Time { fsp: 0 }, Decode::Time),
            T::MYSQL_TYPE_DATETIME2 => (ColumnType::DateTime { fsp: byte(0) }, Decode::DateTime),
            T::MYSQL_TYPE_DATETIME => (ColumnType::DateTime { fsp: 0 }, Decode::DateTime),
            T::MYSQL_TYPE_TIMESTAMP2 => (ColumnType::Timestamp { fsp: byte(0) }, Decode::Timestamp),
            T::MYSQL_TYPE_TIMESTAMP => (ColumnType::Timestamp { fsp: 0 }, Decode::Timestamp),
            T::MYSQL_TYPE_YEAR => (ColumnType::Year, Decode::Year),
            T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
                text_or_bytes(Some(u32::from(u16::from_le_bytes([byte(0), byte(1)]))))
            }
            T::MYSQL_TYPE_STRING => {
                let (b0, b1) = (u32::from(byte(0)), u32::from(byte(1)));
                let len = if b0 & 0x30 != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                };
                match text_or_bytes(Some(len)) {
                    (t, Decode::Bytes) => (t, Decode::FixedBytes(len as usize)),
                    other => other,
                }
            }
            T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
            | T::MYSQL_TYPE_GEOMETRY => {
                if ty == T::MYSQL_TYPE_GEOMETRY {
                    (ColumnType::Bytes { max_bytes: None }, Decode::Bytes)
                } else {
                    text_or_bytes(None)
                }
            }
            T::MYSQL_TYPE_ENUM => (
                ColumnType::Enum {
                    values: enum_values.next().unwrap_or_default(),
                },
                Decode::Enum,
            ),
            T::MYSQL_TYPE_SET => (
                ColumnType::Set {
                    members: set_values.next().unwrap_or_default(),
                },
                Decode::Set,
            ),
            T::MYSQL_TYPE_BIT => (
                ColumnType::Bit {
                    width: byte(1).saturating_mul(8).saturating_add(byte(0)),
                },
                Decode::Bit,
            ),
            T::MYSQL_TYPE_JSON => (ColumnType::Json, Decode::Json(TextCharset::Utf8)),
            other => {
                return Err(bad(
                    tme,
                    &name,
                    format!("column type {other:?} is not supported"),
                ));
            }
        };
        columns.push(Column {
            name,
            column_type,
            nullable: nullable.get(i).as_deref().copied().unwrap_or(true),
        });
        decoders.push(decode);
        charset_names.push(cs_name);
    }
    let primary_key = meta
        .iter_primary_key()
        .map(|r| r.map(|i| i as usize))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(tme, "*", format!("bad primary key metadata: {e}")))?;
    let schema = TableSchema {
        database: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
        columns,
        primary_key,
    };
    Ok(TableInfo {
        schema: Arc::new(schema),
        decoders,
        charset_names,
    })
}

impl TableInfo {
    /// Converts one decoded binlog row (all columns present: binlog_row_image=FULL) to a model row.
    pub(crate) fn convert_row(
        &self,
        values: Vec<BinlogValue<'static>>,
    ) -> Result<Vec<Value>, ConnectorError> {
        if values.len() != self.decoders.len() {
            return Err(self.err(
                0,
                format!(
                    "row image has {} columns, the table {}; set binlog_row_image=FULL on the source",
                    values.len(),
                    self.decoders.len()
                ),
            ));
        }
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| self.convert(i, v))
            .collect()
    }

    fn err(&self, i: usize, reason: impl Into<String>) -> ConnectorError {
        ConnectorError::Decode {
            table: format!("{}.{}", self.schema.database, self.schema.table),
            column: self
                .schema
                .columns
                .get(i)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            reason: reason.into(),
        }
    }

    fn convert(&self, i: usize, v: BinlogValue<'static>) -> Result<Value, ConnectorError> {
        let v = MyValue::try_from(v).map_err(|e| self.err(i, e.to_string()))?;
        let unexpected = |v: &MyValue| {
            self.err(
                i,
                format!("unexpected binlog value {v:?} for this column type"),
            )
        };
        if v == MyValue::NULL {
            return Ok(Value::Null);
        }
        let decode = &self.decoders[i];
        Ok(match (decode, v) {
            (Decode::Signed { bits }, MyValue::Int(x)) => Value::Int(sign_extend(x, *bits)),
            (Decode::Signed { .. }, MyValue::UInt(x)) => {
                Value::Int(i64::try_from(x).map_err(|_| self.err(i, "signed value out of range"))?)
            }
            (Decode::Unsigned { bits }, MyValue::Int(x)) => {
                let mask = if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                Value::UInt((x as u64) & mask)
            }
            (Decode::Unsigned { .. }, MyValue::UInt(x)) => Value::UInt(x),
            (Decode::Float, MyValue::Float(x)) => Value::Float(x),
            (Decode::Double, MyValue::Double(x)) => Value::Double(x),
            (Decode::Double, MyValue::Float(x)) => Value::Double(f64::from(x)),
            (Decode::Decimal, MyValue::Bytes(b)) => Value::Decimal(
                String::from_utf8(b).map_err(|_| self.err(i, "decimal text is not ASCII"))?,
            ),
            (Decode::Date, MyValue::Date(year, month, day, ..)) => Value::Date { year, month, day },
            (Decode::DateTime, MyValue::Date(year, month, day, hour, minute, second, micros)) => {
                Value::DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    micros,
                }
            }
            (Decode::Time, MyValue::Time(negative, days, h, m, s, us)) => {
                let secs =
                    ((u64::from(days) * 24 + u64::from(h)) * 60 + u64::from(m)) * 60 + u64::from(s);
                Value::Time {
                    negative,
                    micros: secs * 1_000_000 + u64::from(us),
                }
            }
            (Decode::Timestamp, MyValue::Int(secs)) => Value::Timestamp(secs * 1_000_000),
            (Decode::Timestamp, MyValue::Bytes(b)) => {
                Value::Timestamp(parse_timestamp(&b).ok_or_else(|| {
                    self.err(
                        i,
                        format!("bad timestamp text {:?}", String::from_utf8_lossy(&b)),
                    )
                })?)
            }
            (Decode::Year, MyValue::Bytes(b)) => {
                let y: i64 = std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| self.err(i, "bad year text"))?;
                // The binlog stores YEAR as year-1900 in one byte; 0 is YEAR 0000.
                Value::Int(if y == 1900 { 0 } else { y })
            }
            (Decode::Year, MyValue::Int(y)) => Value::Int(y),
            (Decode::Text(cs), MyValue::Bytes(b)) => Value::Text(self.text(i, *cs, b)?),
            (Decode::Json(cs), MyValue::Bytes(b)) => Value::Json(self.text(i, *cs, b)?),
            (Decode::Bytes, MyValue::Bytes(b)) => Value::Bytes(b),
            (Decode::FixedBytes(n), MyValue::Bytes(mut b)) => {
                if b.len() < *n {
                    b.resize(*n, 0);
                }
                Value::Bytes(b)
            }
            (Decode::Enum, MyValue::Int(x)) => {
                Value::Enum(u16::try_from(x).map_err(|_| self.err(i, "enum index out of range"))?)
            }
            (Decode::Set, MyValue::Bytes(b)) if b.len() <= 8 => Value::Set(
                b.iter()
                    .rev()
                    .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
            ),
            (Decode::Bit, MyValue::Bytes(b)) if b.len() <= 8 => {
                Value::Bit(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
            }
            (_, v) => return Err(unexpected(&v)),
        })
    }

    fn text(&self, i: usize, cs: TextCharset, b: Vec<u8>) -> Result<String, ConnectorError> {
        match cs {
            TextCharset::Utf8 => String::from_utf8(b).map_err(|e| self.err(i, format!("invalid UTF-8: {e}"))),
            TextCharset::Latin1 => Ok(b.iter().map(|&x| cp1252(x)).collect()),
            TextCharset::Unsupported(id) => Err(self.err(
                i,
                format!(
                    "character set {} (collation id {id}) is not supported; convert the column to utf8mb4",
                    self.charset_names[i]
                ),
            )),
        }
    }
}

/// Reads the low `bits` of `x` as a two's-complement integer (mysql_common returns a signed MEDIUMINT
/// without sign extension). Idempotent for values already in range.
fn sign_extend(x: i64, bits: u32) -> i64 {
    if bits >= 64 {
        return x;
    }
    let shift = 64 - bits;
    (x << shift) >> shift
}

/// `"secs"` or `"secs.micros"` (mysql_common's TIMESTAMP2 text) to microseconds since the epoch.
fn parse_timestamp(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().ok()?;
    if frac.is_empty() || frac.len() > 6 {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// MariaDB's `latin1` is Windows-1252.
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}',
        '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}',
        '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    if (0x80..0xA0).contains(&b) {
        HIGH[usize::from(b - 0x80)]
    } else {
        char::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_text_parses_to_micros() {
        assert_eq!(
            parse_timestamp(b"1704067201.500000"),
            Some(1_704_067_201_500_000)
        );
        assert_eq!(parse_timestamp(b"0"), Some(0));
        assert_eq!(parse_timestamp(b"12.5"), Some(12_500_000));
        assert_eq!(parse_timestamp(b"x"), None);
        assert_eq!(parse_timestamp(b"1.1234567"), None);
    }

    #[test]
    fn sign_extension_of_narrow_integers() {
        assert_eq!(sign_extend(8_388_608, 24), -8_388_608);
        assert_eq!(sign_extend(-8_388_608, 24), -8_388_608);
        assert_eq!(sign_extend(8_388_607, 24), 8_388_607);
        assert_eq!(sign_extend(-1, 8), -1);
        assert_eq!(sign_extend(i64::MIN, 64), i64::MIN);
    }

    #[test]
    fn latin1_is_cp1252() {
        assert_eq!(cp1252(b'a'), 'a');
        assert_eq!(cp1252(0x80), '€');
        assert_eq!(cp1252(0xE9), 'é');
    }
}
