//! Table schemas from table-map events, and how each column's binlog value becomes a model
//! [`Value`](databus_serde_formats::model::Value) (decoded by [`super::rows`]).
//!
//! With `binlog_row_metadata=FULL` a table-map event carries column names, signedness, character sets,
//! the primary key and ENUM/SET strings, so a schema is derived from the event itself: replaying old binlog
//! after later `ALTER`s still decodes each row with the schema it was written with. Only what the binlog
//! never says comes from `information_schema`: MariaDB's `JSON` is a `LONGTEXT` with a `json_valid` check.
//!
//! | binlog type | [`ColumnType`] | `Value` |
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
//! | LONGTEXT with json_valid check (MariaDB JSON) | Json | `Json` text |
//! | JSON (MySQL's binary JSON) | refused: a definite error naming the column | |
//! | NULL | | `Null` |

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use databus_serde_formats::model::{Column, ColumnType, TableSchema};
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType as T;

use crate::ConnectorError;
use crate::source::TableName;

/// The collations query whose rows make [`Charsets`].
pub(crate) const COLLATIONS_SQL: &str = "SELECT co.ID, co.CHARACTER_SET_NAME, cs.MAXLEN FROM information_schema.COLLATIONS co \
     JOIN information_schema.CHARACTER_SETS cs ON cs.CHARACTER_SET_NAME = co.CHARACTER_SET_NAME \
     WHERE co.ID IS NOT NULL";

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

/// How one column's value is laid out in a rows event and which model value it becomes (see
/// [`super::rows`]). Derived once per table map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Codec {
    /// TINY/SHORT/INT24/LONG/LONGLONG: `width` bytes little-endian.
    Int { width: u8, unsigned: bool },
    /// 4 bytes little-endian IEEE 754.
    Float,
    /// 8 bytes little-endian IEEE 754.
    Double,
    /// NEWDECIMAL in MySQL's binary decimal format.
    Decimal { precision: u8, scale: u8 },
    /// 3 bytes little-endian: day | month << 5 | year << 9.
    Date,
    /// TIME2(fsp): 3 bytes big-endian + (fsp + 1) / 2 fraction bytes.
    Time { fsp: u8 },
    /// Old TIME: 3 bytes little-endian signed HHMMSS.
    TimeLegacy,
    /// DATETIME2(fsp): 5 bytes big-endian + fraction bytes.
    DateTime { fsp: u8 },
    /// Old DATETIME: 8 bytes little-endian YYYYMMDDhhmmss.
    DateTimeLegacy,
    /// TIMESTAMP2(fsp): 4 bytes big-endian seconds + fraction bytes.
    Timestamp { fsp: u8 },
    /// Old TIMESTAMP: 4 bytes little-endian seconds.
    TimestampLegacy,
    /// 1 byte: year - 1900 (0 = YEAR 0000).
    Year,
    /// CHAR/VARCHAR/BINARY/VARBINARY/BLOB/TEXT/GEOMETRY: a `len_bytes` little-endian length, then the bytes.
    Str { len_bytes: u8, payload: Payload },
    /// ENUM: a 1- or 2-byte little-endian index.
    Enum { width: u8 },
    /// SET: a `width`-byte little-endian bitmask.
    Set { width: u8 },
    /// BIT: `bytes` bytes big-endian.
    Bit { bytes: u8 },
}

/// What the bytes of a string-like column become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    Text(TextCharset),
    Json(TextCharset),
    Bytes,
    /// BINARY(n): the binlog strips trailing zero bytes; the value has exactly n bytes.
    FixedBytes(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextCharset {
    Utf8,
    Latin1,
    Unsupported(u16),
}

/// A CHAR column's type: the text type of its values, kept as [`ColumnType::Char`] (its length
/// declared) so that a replica creates a `CHAR` and not a `VARCHAR`. Other types pass through.
fn fixed_text((ty, codec): (ColumnType, Codec)) -> (ColumnType, Codec) {
    match ty {
        ColumnType::Text {
            max_chars: Some(chars),
        } => (ColumnType::Char { chars }, codec),
        other => (other, codec),
    }
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
    /// `database.table` (built once, not per rows event).
    pub(crate) name: TableName,
    /// One codec per column, in table order.
    pub(crate) codecs: Vec<Codec>,
    /// Each column's character set name, for messages.
    pub(crate) charset_names: Vec<String>,
}

fn bad(tme: &TableMapEvent<'_>, col: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Decode {
        table: format!("{}.{}", tme.database_name(), tme.table_name()),
        column: col.to_owned(),
        reason: reason.into(),
    }
}

/// What the binlog does not say about a table's columns, from `information_schema`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnFacts {
    /// Columns that are JSON (MariaDB: `LONGTEXT` with a `json_valid` check).
    pub(crate) json: HashSet<String>,
    /// TIME/DATETIME/TIMESTAMP columns with fractional seconds. With a pre-10.0 binlog type (TIME,
    /// DATETIME, TIMESTAMP rather than TIME2…) their width is not in the table map: refused.
    pub(crate) fractional: HashSet<String>,
}

/// `information_schema` query of a table's JSON columns (MariaDB: a `json_valid` check), bound to
/// `(database, table)`; its rows go through [`json_columns`].
pub(crate) const JSON_COLUMNS_SQL: &str = "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
     WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND LEVEL = 'Column'";

/// `information_schema` query of a table's TIME/DATETIME/TIMESTAMP columns with fractional seconds,
/// bound to `(database, table)`.
pub(crate) const FRACTIONAL_COLUMNS_SQL: &str = "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
     AND TABLE_NAME = ? AND DATA_TYPE IN ('time', 'datetime', 'timestamp') AND DATETIME_PRECISION > 0";

/// The JSON columns among the rows of [`JSON_COLUMNS_SQL`].
pub(crate) fn json_columns(rows: Vec<(String, String)>) -> HashSet<String> {
    rows.into_iter()
        .filter(|(col, clause)| {
            clause
                .to_ascii_lowercase()
                .starts_with(&format!("json_valid(`{}`)", col.to_ascii_lowercase()))
        })
        .map(|(col, _)| col)
        .collect()
}

/// One column as `information_schema.COLUMNS` describes it (what a snapshot knows without a table
/// map): `COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH,
/// CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME`.
pub(crate) type InfoColumn = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

/// The query giving [`InfoColumn`]s of `(database, table)` in table order.
pub(crate) const INFO_COLUMNS_SQL: &str = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH, \
     CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";

/// The query giving the primary key's column names of `(database, table)` in key order.
pub(crate) const PRIMARY_KEY_SQL: &str = "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? \
     AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION";

/// Derives a table's schema and codecs from `information_schema` (for a snapshot, which has no table
/// map), giving exactly what [`table_info`] derives from the table map of the same table definition:
/// the same [`ColumnType`]s, nullability, primary key and JSON detection (`facts`), so the schema id is
/// the stream's. The codecs say how values convert ([`TableInfo::value_from_sql`]).
pub(crate) fn table_info_from_columns(
    name: &TableName,
    rows: Vec<InfoColumn>,
    primary_key: &[String],
    facts: &ColumnFacts,
) -> Result<TableInfo, ConnectorError> {
    let bad = |col: &str, reason: String| ConnectorError::Decode {
        table: name.to_string(),
        column: col.to_owned(),
        reason,
    };
    if rows.is_empty() {
        return Err(ConnectorError::Config(format!(
            "table {name} does not exist or is not visible to the source user; grant SELECT on it"
        )));
    }
    let mut columns = Vec::with_capacity(rows.len());
    let mut codecs = Vec::with_capacity(rows.len());
    let mut charset_names = Vec::with_capacity(rows.len());
    for (
        col,
        data_type,
        column_type,
        nullable,
        max_chars,
        octets,
        precision,
        scale,
        fsp,
        charset,
    ) in rows
    {
        let unsigned = column_type.contains("unsigned");
        let charset = charset.unwrap_or_default();
        let binary = charset.is_empty() || charset == "binary";
        let cs = text_charset(0, &charset);
        let to_u32 = |v: Option<u64>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        let fsp = fsp.unwrap_or(0) as u8;
        let int = |t: fn(bool) -> ColumnType, width| (t(unsigned), Codec::Int { width, unsigned });
        // As the binlog's string types: binary charset -> Bytes, a JSON check -> Json, else Text.
        let string = |max_chars: Option<u32>, max_bytes: Option<u32>, fixed: bool| {
            if binary {
                (
                    ColumnType::Bytes { max_bytes },
                    Codec::Str {
                        len_bytes: 4,
                        payload: match (fixed, max_bytes) {
                            (true, Some(n)) => Payload::FixedBytes(n as usize),
                            _ => Payload::Bytes,
                        },
                    },
                )
            } else if facts.json.contains(&col) {
                (
                    ColumnType::Json,
                    Codec::Str {
                        len_bytes: 4,
                        payload: Payload::Json(cs),
                    },
                )
            } else {
                (
                    ColumnType::Text { max_chars },
                    Codec::Str {
                        len_bytes: 4,
                        payload: Payload::Text(cs),
                    },
                )
            }
        };
        let (ty, codec) = match data_type.as_str() {
            "tinyint" => int(|unsigned| ColumnType::TinyInt { unsigned }, 1),
            "smallint" => int(|unsigned| ColumnType::SmallInt { unsigned }, 2),
            "mediumint" => int(|unsigned| ColumnType::MediumInt { unsigned }, 3),
            "int" => int(|unsigned| ColumnType::Int { unsigned }, 4),
            "bigint" => int(|unsigned| ColumnType::BigInt { unsigned }, 8),
            "decimal" => {
                let (precision, scale) = (precision.unwrap_or(10) as u8, scale.unwrap_or(0) as u8);
                (
                    ColumnType::Decimal { precision, scale },
                    Codec::Decimal { precision, scale },
                )
            }
            "float" => (ColumnType::Float, Codec::Float),
            "double" => (ColumnType::Double, Codec::Double),
            "date" => (ColumnType::Date, Codec::Date),
            "time" => (ColumnType::Time { fsp }, Codec::Time { fsp }),
            "datetime" => (ColumnType::DateTime { fsp }, Codec::DateTime { fsp }),
            "timestamp" => (ColumnType::Timestamp { fsp }, Codec::Timestamp { fsp }),
            "year" => (ColumnType::Year, Codec::Year),
            "varchar" => string(to_u32(max_chars), to_u32(octets), false),
            "char" => fixed_text(string(to_u32(max_chars), to_u32(octets), !binary)),
            "varbinary" => string(None, to_u32(octets), false),
            "binary" => string(None, to_u32(octets), true),
            "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob"
            | "mediumblob" | "longblob" => string(None, None, false),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => (
                ColumnType::Bytes { max_bytes: None },
                Codec::Str {
                    len_bytes: 4,
                    payload: Payload::Bytes,
                },
            ),
            "enum" | "set" => {
                let inner = column_type
                    .strip_prefix(&format!("{data_type}("))
                    .and_then(|s| s.strip_suffix(')'))
                    .unwrap_or("");
                let values: Vec<String> = inner
                    .split("','")
                    .map(|v| v.trim_matches('\'').replace("''", "'"))
                    .collect();
                if data_type == "enum" {
                    let width = if values.len() > 255 { 2 } else { 1 };
                    (ColumnType::Enum { values }, Codec::Enum { width })
                } else {
                    let width = values.len().div_ceil(8).max(1) as u8;
                    (ColumnType::Set { members: values }, Codec::Set { width })
                }
            }
            "bit" => {
                let width = precision.unwrap_or(1) as u8;
                (
                    ColumnType::Bit { width },
                    Codec::Bit {
                        bytes: width.div_ceil(8),
                    },
                )
            }
            "json" => string(None, None, false),
            other => {
                return Err(bad(&col, format!("column type {other} is not supported")));
            }
        };
        columns.push(Column {
            name: col,
            column_type: ty,
            nullable: nullable == "YES",
        });
        codecs.push(codec);
        charset_names.push(charset);
    }
    let primary_key = primary_key
        .iter()
        .map(|n| columns.iter().position(|c| &c.name == n))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ConnectorError::Config(format!("the primary key of {name} names unknown columns"))
        })?;
    let schema = TableSchema {
        database: name.database.clone(),
        table: name.table.clone(),
        columns,
        primary_key,
    };
    Ok(TableInfo {
        name: name.clone(),
        schema: Arc::new(schema),
        codecs,
        charset_names,
    })
}

/// Derives the schema of a table from its table-map event and the `facts` `information_schema` gives.
pub(crate) fn table_info(
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
    facts: &ColumnFacts,
) -> Result<TableInfo, ConnectorError> {
    let json_columns = &facts.json;
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
    let mut codecs = Vec::with_capacity(n);
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
        let legacy_temporal = [
            T::MYSQL_TYPE_TIME,
            T::MYSQL_TYPE_DATETIME,
            T::MYSQL_TYPE_TIMESTAMP,
        ];
        if legacy_temporal.contains(&ty) && facts.fractional.contains(&name) {
            return Err(bad(
                tme,
                &name,
                "the column has fractional seconds in MariaDB's pre-10.0 format, whose width the binlog does \
                 not record; rebuild the table with mysql56_temporal_format=ON (ALTER TABLE … FORCE)",
            ));
        }
        let (cs_name, maxlen) = charsets.get(collation);
        let byte = |k: usize| m.get(k).copied().unwrap_or(0);
        let int = |t: fn(bool) -> ColumnType, width| (t(unsigned), Codec::Int { width, unsigned });
        let payload = |len_bytes: u8, max_bytes: Option<u32>| {
            if collation == 63 {
                (
                    ColumnType::Bytes { max_bytes },
                    Codec::Str {
                        len_bytes,
                        payload: Payload::Bytes,
                    },
                )
            } else if json_columns.contains(&name) {
                (
                    ColumnType::Json,
                    Codec::Str {
                        len_bytes,
                        payload: Payload::Json(text_charset(collation, &cs_name)),
                    },
                )
            } else {
                (
                    ColumnType::Text {
                        max_chars: max_bytes.map(|b| b / maxlen),
                    },
                    Codec::Str {
                        len_bytes,
                        payload: Payload::Text(text_charset(collation, &cs_name)),
                    },
                )
            }
        };
        let (column_type, codec) = match ty {
            T::MYSQL_TYPE_TINY => int(|unsigned| ColumnType::TinyInt { unsigned }, 1),
            T::MYSQL_TYPE_SHORT => int(|unsigned| ColumnType::SmallInt { unsigned }, 2),
            T::MYSQL_TYPE_INT24 => int(|unsigned| ColumnType::MediumInt { unsigned }, 3),
            T::MYSQL_TYPE_LONG => int(|unsigned| ColumnType::Int { unsigned }, 4),
            T::MYSQL_TYPE_LONGLONG => int(|unsigned| ColumnType::BigInt { unsigned }, 8),
            T::MYSQL_TYPE_NEWDECIMAL => {
                let (precision, scale) = (byte(0), byte(1));
                if scale > precision || precision == 0 || precision > 65 {
                    return Err(bad(
                        tme,
                        &name,
                        format!(
                            "DECIMAL({precision},{scale}) in the table map is not a valid decimal type"
                        ),
                    ));
                }
                (
                    ColumnType::Decimal { precision, scale },
                    Codec::Decimal { precision, scale },
                )
            }
            T::MYSQL_TYPE_FLOAT => (ColumnType::Float, Codec::Float),
            T::MYSQL_TYPE_DOUBLE => (ColumnType::Double, Codec::Double),
            T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => (ColumnType::Date, Codec::Date),
            T::MYSQL_TYPE_TIME2 => (
                ColumnType::Time { fsp: byte(0) },
                Codec::Time { fsp: byte(0) },
            ),
            T::MYSQL_TYPE_TIME => (ColumnType::Time { fsp: 0 }, Codec::TimeLegacy),
            T::MYSQL_TYPE_DATETIME2 => (
                ColumnType::DateTime { fsp: byte(0) },
                Codec::DateTime { fsp: byte(0) },
            ),
            T::MYSQL_TYPE_DATETIME => (ColumnType::DateTime { fsp: 0 }, Codec::DateTimeLegacy),
            T::MYSQL_TYPE_TIMESTAMP2 => (
                ColumnType::Timestamp { fsp: byte(0) },
                Codec::Timestamp { fsp: byte(0) },
            ),
            T::MYSQL_TYPE_TIMESTAMP => (ColumnType::Timestamp { fsp: 0 }, Codec::TimestampLegacy),
            T::MYSQL_TYPE_YEAR => (ColumnType::Year, Codec::Year),
            T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
                let max = u16::from_le_bytes([byte(0), byte(1)]);
                payload(if max < 256 { 1 } else { 2 }, Some(u32::from(max)))
            }
            T::MYSQL_TYPE_STRING => {
                let (b0, b1) = (u32::from(byte(0)), u32::from(byte(1)));
                let len = if b0 == 0 {
                    u32::from(u16::from_le_bytes([byte(0), byte(1)]))
                } else if b0 & 0x30 != 0x30 {
                    // A CHAR longer than 255 bytes keeps the high bits of its length in byte 0.
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                };
                match payload(if len < 256 { 1 } else { 2 }, Some(len)) {
                    (
                        t,
                        Codec::Str {
                            len_bytes,
                            payload: Payload::Bytes,
                        },
                    ) => (
                        t,
                        Codec::Str {
                            len_bytes,
                            payload: Payload::FixedBytes(len as usize),
                        },
                    ),
                    other => fixed_text(other),
                }
            }
            T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
            | T::MYSQL_TYPE_GEOMETRY => {
                let len_bytes = byte(0);
                if !(1..=4).contains(&len_bytes) {
                    return Err(bad(
                        tme,
                        &name,
                        format!("a BLOB length of {len_bytes} bytes in the table map is not 1-4"),
                    ));
                }
                if ty == T::MYSQL_TYPE_GEOMETRY {
                    (
                        ColumnType::Bytes { max_bytes: None },
                        Codec::Str {
                            len_bytes,
                            payload: Payload::Bytes,
                        },
                    )
                } else {
                    payload(len_bytes, None)
                }
            }
            T::MYSQL_TYPE_ENUM => {
                let width = byte(1);
                if !(1..=2).contains(&width) {
                    return Err(bad(
                        tme,
                        &name,
                        format!("an ENUM of {width} bytes in the table map is not 1-2"),
                    ));
                }
                (
                    ColumnType::Enum {
                        values: enum_values.next().unwrap_or_default(),
                    },
                    Codec::Enum { width },
                )
            }
            T::MYSQL_TYPE_SET => {
                let width = byte(1);
                if !(1..=8).contains(&width) {
                    return Err(bad(
                        tme,
                        &name,
                        format!("a SET of {width} bytes in the table map is not 1-8"),
                    ));
                }
                (
                    ColumnType::Set {
                        members: set_values.next().unwrap_or_default(),
                    },
                    Codec::Set { width },
                )
            }
            T::MYSQL_TYPE_BIT => {
                let width = u32::from(byte(1)) * 8 + u32::from(byte(0));
                if width > 64 {
                    return Err(bad(
                        tme,
                        &name,
                        format!("BIT({width}) is wider than 64 bits"),
                    ));
                }
                (
                    ColumnType::Bit { width: width as u8 },
                    Codec::Bit {
                        bytes: width.div_ceil(8) as u8,
                    },
                )
            }
            T::MYSQL_TYPE_JSON => {
                return Err(bad(
                    tme,
                    &name,
                    "MySQL's binary JSON columns are not supported (MariaDB's JSON is text); capture from MariaDB \
                     or convert the column to LONGTEXT",
                ));
            }
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
        codecs.push(codec);
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
        name: TableName::new(&schema.database, &schema.table),
        schema: Arc::new(schema),
        codecs,
        charset_names,
    })
}

#[cfg(test)]
impl TableInfo {
    /// A table `t.t` of columns `c0`, `c1`… (all nullable) decoded with `codecs`.
    pub(crate) fn for_tests(codecs: Vec<Codec>) -> Self {
        let columns = (0..codecs.len())
            .map(|i| Column::new(format!("c{i}"), ColumnType::Int { unsigned: false }, true))
            .collect();
        TableInfo {
            name: TableName::new("t", "t"),
            schema: Arc::new(TableSchema {
                database: "t".into(),
                table: "t".into(),
                columns,
                primary_key: vec![],
            }),
            charset_names: vec!["utf8mb4".into(); codecs.len()],
            codecs,
        }
    }
}
