//! Decoding Avro payloads: to apache-avro generic values, to serde types, to JSON for humans.
//!
//! Every function takes the payload and its *writer* schema (the one the payload was encoded with, looked
//! up by the event's [`SchemaId`](databus_core::SchemaId) in the registry) and optionally a *reader*
//! schema: then Avro schema resolution turns the writer's datum into the reader's shape (fields added
//! with a default get it, removed fields are skipped, `int` widens to `long`, …). A payload must be
//! exactly one datum: trailing bytes are an error.
//!
//! # JSON rendering
//!
//! [`decode_json`] / [`to_json`] give one JSON object per row, keyed by the *original* column names
//! (the `databus.column` attribute, else the field name; `serde_json` keeps object keys sorted by name,
//! not in column order). Values, by the field's `databus.type` and Avro
//! type:
//!
//! | Column / Avro type | JSON |
//! |---|---|
//! | NULL | `null` |
//! | integers, YEAR, FLOAT, DOUBLE | number (non-finite floats: the strings `"NaN"`, `"Infinity"`, `"-Infinity"`) |
//! | BIGINT UNSIGNED | number (exact u64) |
//! | DECIMAL (Avro `decimal`) | string with exactly `scale` fractional digits: `"-12.30"` |
//! | DATE | `"YYYY-MM-DD"`; the zero date `"0000-00-00"` |
//! | TIME | `"[-]HH:MM:SS.ffffff"`, hours up to 838 |
//! | DATETIME (`local-timestamp-micros`) | `"YYYY-MM-DDTHH:MM:SS.ffffff"`, no zone; zero date `"0000-00-00T00:00:00.000000"` |
//! | TIMESTAMP (`timestamp-micros`) | `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` (RFC 3339, UTC) |
//! | text, ENUM | string |
//! | bytes, Avro `fixed` | standard base64 string |
//! | SET | array of strings |
//! | BIT(n) | number (the u64 value) |
//! | JSON | the parsed JSON value (the text as a string if it does not parse) |
//!
//! Years outside 0000–9999 (possible for arbitrary TIMESTAMP micros) are written with a sign
//! (`"+12345-…"`, `"-0001-…"`).

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{DecimalSchema, RecordSchema};
use apache_avro::types::Value as AvroValue;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use crate::avro_schema::{ATTR_COLUMN, ATTR_TYPE};
use crate::convert::{
    ZERO_DATE_DAYS, ZERO_DATETIME_MICROS, civil_from_days, decimal_to_string, format_date,
    format_datetime, format_local_datetime, format_time,
};
use crate::error::{Error, Result};
use crate::model::{ColumnType, Row, TableSchema, Value};

/// Decodes `payload` (one Avro binary datum written with `writer`) into an apache-avro generic value,
/// resolved to `reader` when given.
pub fn decode_value(payload: &[u8], writer: &Schema, reader: Option<&Schema>) -> Result<AvroValue> {
    // apache-avro reads a missing union index at the end of input as null; walk the datum first so a
    // truncated payload is an error.
    let mut walker = Walker { rest: payload };
    match walker.datum(writer) {
        Ok(()) | Err(Walk::Unsupported) => {}
        Err(Walk::Malformed(reason)) => {
            return Err(Error::decode(format!(
                "payload of {} bytes: {reason}",
                payload.len()
            )));
        }
    }
    let datum_reader = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .map_err(|e| Error::avro("preparing the reader and writer schemas", e))?;
    let mut rest = payload;
    let value = datum_reader
        .read_value(&mut rest)
        .map_err(|e| Error::decode(format!("payload of {} bytes: {e}", payload.len())))?;
    if !rest.is_empty() {
        return Err(Error::decode(format!(
            "payload has {} bytes after the datum; the writer schema is probably not the one it was written with",
            rest.len()
        )));
    }
    Ok(value)
}

/// Decodes `payload` into a serde type, via [`decode_value`] and apache-avro's `from_value`. The type's
/// field names are the Avro field names (sanitized column names). Logical types arrive as their Avro
/// representation (DATE as `i32` days, DATETIME/TIMESTAMP as `i64` microseconds, DECIMAL as bytes); use
/// [`decode_json`] for rendered values.
pub fn decode_serde<T: DeserializeOwned>(
    payload: &[u8],
    writer: &Schema,
    reader: Option<&Schema>,
) -> Result<T> {
    let value = decode_value(payload, writer, reader)?;
    apache_avro::from_value::<T>(&value)
        .map_err(|e| Error::decode(format!("into {}: {e}", std::any::type_name::<T>())))
}

/// Decodes `payload` into JSON for humans (see the module docs for the rendering).
pub fn decode_json(payload: &[u8], writer: &Schema, reader: Option<&Schema>) -> Result<Json> {
    let value = decode_value(payload, writer, reader)?;
    Ok(to_json(&value, reader.unwrap_or(writer)))
}

/// Renders a decoded value of `schema` as JSON (see the module docs).
pub fn to_json(value: &AvroValue, schema: &Schema) -> Json {
    render(value, Some(schema), None)
}

fn render_record(fields: &[(String, AvroValue)], schema: Option<&RecordSchema>) -> Json {
    let mut map = Map::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        let field = schema
            .and_then(|s| s.fields.get(i))
            .filter(|f| f.name == *name);
        let key = field
            .and_then(|f| f.custom_attributes.get(ATTR_COLUMN))
            .and_then(Json::as_str)
            .unwrap_or(name);
        let dtype = field
            .and_then(|f| f.custom_attributes.get(ATTR_TYPE))
            .and_then(Json::as_str);
        map.insert(
            key.to_owned(),
            render(value, field.map(|f| &f.schema), dtype),
        );
    }
    Json::Object(map)
}

fn float(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or_else(
        || {
            Json::String(
                if v.is_nan() {
                    "NaN"
                } else if v > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .to_owned(),
            )
        },
        Json::Number,
    )
}

fn base64(bytes: &[u8]) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn render(value: &AvroValue, schema: Option<&Schema>, dtype: Option<&str>) -> Json {
    let kind = dtype.map(|t| t.split(['(', ' ']).next().unwrap_or(t));
    match value {
        AvroValue::Null => Json::Null,
        AvroValue::Boolean(b) => Json::Bool(*b),
        AvroValue::Int(v) => Json::from(*v),
        AvroValue::Long(v) => match kind {
            Some("time") => Json::String(format_time(*v)),
            Some("bit") => Json::from(*v as u64),
            _ => Json::from(*v),
        },
        AvroValue::Float(v) => float(f64::from(*v)),
        AvroValue::Double(v) => float(*v),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => base64(b),
        AvroValue::String(s) | AvroValue::Enum(_, s) => {
            if kind == Some("json") {
                serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone()))
            } else {
                Json::String(s.clone())
            }
        }
        AvroValue::Union(index, inner) => {
            let branch = match schema {
                Some(Schema::Union(u)) => u.variants().get(*index as usize),
                _ => None,
            };
            render(inner, branch, dtype)
        }
        AvroValue::Array(items) => {
            let item_schema = match schema {
                Some(Schema::Array(a)) => Some(&*a.items),
                _ => None,
            };
            Json::Array(items.iter().map(|v| render(v, item_schema, None)).collect())
        }
        AvroValue::Map(map) => {
            let value_schema = match schema {
                Some(Schema::Map(m)) => Some(&*m.types),
                _ => None,
            };
            let sorted: std::collections::BTreeMap<_, _> = map.iter().collect();
            Json::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), render(v, value_schema, None)))
                    .collect(),
            )
        }
        AvroValue::Record(fields) => {
            let record = match schema {
                Some(Schema::Record(r)) => Some(r),
                _ => None,
            };
            render_record(fields, record)
        }
        AvroValue::Date(days) => Json::String(format_date(*days)),
        AvroValue::Decimal(d) => {
            let scale = match schema {
                Some(Schema::Decimal(DecimalSchema { scale, .. })) => *scale,
                _ => 0,
            };
            let bytes = Vec::<u8>::try_from(d).unwrap_or_default();
            let text = decimal_to_string(&bytes, scale);
            if kind == Some("bigint") {
                text.parse::<u64>().map_or(Json::String(text), Json::from)
            } else {
                Json::String(text)
            }
        }
        AvroValue::BigDecimal(d) => Json::String(d.to_string()),
        AvroValue::TimeMillis(ms) => Json::String(format_time(i64::from(*ms) * 1000)),
        AvroValue::TimeMicros(us) => Json::String(format_time(*us)),
        AvroValue::TimestampMillis(ms) => {
            Json::String(format!("{}Z", format_datetime(ms.saturating_mul(1000))))
        }
        AvroValue::TimestampMicros(us) => Json::String(format!("{}Z", format_datetime(*us))),
        AvroValue::LocalTimestampMillis(ms) => {
            Json::String(format_datetime(ms.saturating_mul(1000)))
        }
        AvroValue::LocalTimestampMicros(us) => Json::String(format_local_datetime(*us)),
        AvroValue::TimestampNanos(ns) | AvroValue::LocalTimestampNanos(ns) => Json::from(*ns),
        AvroValue::Uuid(u) => Json::String(u.to_string()),
        other => Json::String(format!("{other:?}")),
    }
}

/// Decodes `payload` (written with `writer`, whose table schema is `table`, see
/// [`crate::avro_schema::table_schema`]) into model values in column order: the inverse of the
/// encoder, so a consumer can write the row into another database with its exact types (DECIMAL as
/// its exact text, BIGINT UNSIGNED as `u64`, zero dates as zero dates, ENUM by index, SET as a
/// bitmask).
pub fn decode_row(payload: &[u8], writer: &Schema, table: &TableSchema) -> Result<Row> {
    to_row(&decode_value(payload, writer, None)?, table)
}

/// Converts a decoded record of `table`'s Avro schema into model values (see [`decode_row`]).
pub fn to_row(value: &AvroValue, table: &TableSchema) -> Result<Row> {
    let AvroValue::Record(fields) = value else {
        return Err(Error::decode(format!(
            "a row of {} is not an avro record",
            table.qualified_name()
        )));
    };
    if fields.len() != table.columns.len() {
        return Err(Error::RowLength {
            table: table.qualified_name(),
            expected: table.columns.len(),
            found: fields.len(),
        });
    }
    fields
        .iter()
        .zip(&table.columns)
        .map(|((_, v), column)| {
            model_value(v, &column.column_type).ok_or_else(|| Error::TypeMismatch {
                column: column.name.clone(),
                expected: column.column_type.sql_name(),
                found: avro_kind(v),
            })
        })
        .collect()
}

fn avro_kind(v: &AvroValue) -> &'static str {
    match v {
        AvroValue::Int(_) => "avro int",
        AvroValue::Long(_) => "avro long",
        AvroValue::String(_) => "avro string",
        AvroValue::Bytes(_) => "avro bytes",
        AvroValue::Decimal(_) => "avro decimal",
        _ => "other avro",
    }
}

fn model_value(v: &AvroValue, ty: &ColumnType) -> Option<Value> {
    use ColumnType as T;
    if let AvroValue::Union(_, inner) = v {
        return model_value(inner, ty);
    }
    if matches!(v, AvroValue::Null) {
        return Some(Value::Null);
    }
    Some(match (ty, v) {
        (
            T::TinyInt { unsigned: false }
            | T::SmallInt { unsigned: false }
            | T::MediumInt { unsigned: false }
            | T::Int { unsigned: false }
            | T::Year,
            AvroValue::Int(i),
        ) => Value::Int(i64::from(*i)),
        (
            T::TinyInt { unsigned: true }
            | T::SmallInt { unsigned: true }
            | T::MediumInt { unsigned: true },
            AvroValue::Int(i),
        ) => Value::UInt(u64::try_from(*i).ok()?),
        (T::Int { unsigned: true }, AvroValue::Long(i)) => Value::UInt(u64::try_from(*i).ok()?),
        (T::BigInt { unsigned: false }, AvroValue::Long(i)) => Value::Int(*i),
        (T::BigInt { unsigned: true }, AvroValue::Decimal(d)) => {
            let bytes = Vec::<u8>::try_from(d).ok()?;
            Value::UInt(decimal_to_string(&bytes, 0).parse().ok()?)
        }
        (T::Decimal { scale, .. }, AvroValue::Decimal(d)) => {
            let bytes = Vec::<u8>::try_from(d).ok()?;
            Value::Decimal(decimal_to_string(&bytes, usize::from(*scale)))
        }
        (T::Float, AvroValue::Float(f)) => Value::Float(*f),
        (T::Double, AvroValue::Double(f)) => Value::Double(*f),
        (T::Date, AvroValue::Date(days)) => {
            if *days == ZERO_DATE_DAYS {
                Value::Date {
                    year: 0,
                    month: 0,
                    day: 0,
                }
            } else {
                let (year, month, day) = civil_from_days(i64::from(*days));
                Value::Date {
                    year: u16::try_from(year).ok()?,
                    month: month as u8,
                    day: day as u8,
                }
            }
        }
        (T::Time { .. }, AvroValue::Long(us)) => Value::Time {
            negative: *us < 0,
            micros: us.unsigned_abs(),
        },
        (T::DateTime { .. }, AvroValue::LocalTimestampMicros(us)) => {
            if *us == ZERO_DATETIME_MICROS {
                Value::DateTime {
                    year: 0,
                    month: 0,
                    day: 0,
                    hour: 0,
                    minute: 0,
                    second: 0,
                    micros: 0,
                }
            } else {
                const DAY: i64 = 86_400_000_000;
                let (year, month, day) = civil_from_days(us.div_euclid(DAY));
                let rest = us.rem_euclid(DAY);
                let secs = rest / 1_000_000;
                Value::DateTime {
                    year: u16::try_from(year).ok()?,
                    month: month as u8,
                    day: day as u8,
                    hour: (secs / 3600) as u8,
                    minute: (secs / 60 % 60) as u8,
                    second: (secs % 60) as u8,
                    micros: (rest % 1_000_000) as u32,
                }
            }
        }
        (T::Timestamp { .. }, AvroValue::TimestampMicros(us)) => Value::Timestamp(*us),
        (T::Text { .. } | T::Char { .. }, AvroValue::String(s)) => Value::Text(s.clone()),
        (T::Json, AvroValue::String(s)) => Value::Json(s.clone()),
        (T::Bytes { .. }, AvroValue::Bytes(b) | AvroValue::Fixed(_, b)) => Value::Bytes(b.clone()),
        (T::Enum { values }, AvroValue::String(s)) => {
            if s.is_empty() && !values.iter().any(String::is_empty) {
                Value::Enum(0)
            } else {
                let i = values.iter().position(|v| v == s)?;
                Value::Enum(u16::try_from(i + 1).ok()?)
            }
        }
        (T::Set { members }, AvroValue::Array(items)) => {
            let mut mask = 0u64;
            for item in items {
                let AvroValue::String(name) = item else {
                    return None;
                };
                let i = members.iter().position(|m| m == name)?;
                mask |= 1u64.checked_shl(u32::try_from(i).ok()?)?;
            }
            Value::Set(mask)
        }
        (T::Bit { .. }, AvroValue::Long(v)) => Value::Bit(*v as u64),
        _ => return None,
    })
}

enum Walk {
    /// The schema has named references: leave the checking to apache-avro.
    Unsupported,
    Malformed(String),
}

/// Checks the structure of one datum against its writer schema, without building values.
struct Walker<'a> {
    rest: &'a [u8],
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> Result<(), Walk> {
        if self.rest.len() < n {
            return Err(Walk::Malformed(format!(
                "needs {n} more bytes, {} left; the payload is truncated",
                self.rest.len()
            )));
        }
        self.rest = &self.rest[n..];
        Ok(())
    }

    fn long(&mut self) -> Result<i64, Walk> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.rest.split_first() else {
                return Err(Walk::Malformed(
                    "the payload is truncated inside a varint".into(),
                ));
            };
            self.rest = rest;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(Walk::Malformed("a varint is longer than 10 bytes".into()))
    }

    fn len(&mut self) -> Result<usize, Walk> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| Walk::Malformed(format!("negative length {n}")))
    }

    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), Walk>) -> Result<(), Walk> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?; // block size in bytes
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }

    fn datum(&mut self, schema: &Schema) -> Result<(), Walk> {
        use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.take(1),
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.take(4),
            Schema::Double => self.take(8),
            Schema::Bytes
            | Schema::String
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::String | UuidSchema::Bytes)
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Bytes,
                ..
            }) => {
                let n = self.len()?;
                self.take(n)
            }
            Schema::Fixed(f)
            | Schema::Uuid(UuidSchema::Fixed(f))
            | Schema::Duration(f)
            | Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Fixed(f),
                ..
            }) => self.take(f.size),
            Schema::Union(u) => {
                let index = self.long()?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| {
                        Walk::Malformed(format!(
                            "union branch {index} of {} does not exist",
                            u.variants().len()
                        ))
                    })?;
                self.datum(variant)
            }
            Schema::Array(a) => self.blocks(|w| w.datum(&a.items)),
            Schema::Map(m) => self.blocks(|w| {
                let n = w.len()?;
                w.take(n)?;
                w.datum(&m.types)
            }),
            Schema::Record(r) => r.fields.iter().try_for_each(|f| self.datum(&f.schema)),
            _ => Err(Walk::Unsupported),
        }
    }
}

/// One event as JSON, the rendering every server and the CLI share: `core::json`'s header fields plus
/// `payload`, the record decoded with `writer` (its schema id resolved by the caller), or, when the
/// schema is unknown (`writer` is `Err` with why) or the payload does not decode, `payload_base64`
/// with `decode_error` saying why. Control events are the header alone; table events (truncate, schema
/// change) carry their JSON payload as `payload`.
pub fn event_json(
    view: &databus_core::EventView<'_>,
    writer: std::result::Result<&Schema, String>,
) -> Json {
    let mut map = databus_core::json::header_to_json(view);
    if view.opcode().is_control() {
        return Json::Object(map);
    }
    if view.opcode().is_table_event() {
        // A table event's payload is JSON already (`databus_core::table_event`).
        match serde_json::from_slice::<Json>(view.payload()) {
            Ok(change) => {
                map.insert("payload".into(), change);
            }
            Err(e) => {
                map.insert(
                    "decode_error".into(),
                    Json::String(format!("bad table event payload: {e}")),
                );
            }
        }
        return Json::Object(map);
    }
    if view.opcode() == databus_core::Opcode::Update {
        // An update's before image: shown as `before` (an undecodable one says so in `decode_error`).
        if let (Ok(schema), Some(before)) = (&writer, view.before_image()) {
            match decode_json(before, schema, None) {
                Ok(record) => {
                    map.insert("before".into(), record);
                }
                Err(e) => {
                    map.insert(
                        "decode_error".into(),
                        Json::String(format!("before image: {e}")),
                    );
                }
            }
        }
    }
    match writer
        .and_then(|schema| decode_json(view.row_image(), schema, None).map_err(|e| e.to_string()))
    {
        Ok(record) => {
            map.insert("payload".into(), record);
        }
        Err(reason) => {
            use base64::Engine as _;
            map.insert(
                "payload_base64".into(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(view.payload())),
            );
            map.insert("decode_error".into(), Json::String(reason));
        }
    }
    Json::Object(map)
}

#[cfg(test)]
mod row_tests {
    use super::*;
    use crate::RowEncoder;
    use crate::avro_schema::{avro_schema, table_schema};
    use crate::model::Column;

    #[test]
    fn decode_row_inverts_the_encoder_for_every_type() {
        let cols = vec![
            Column::new("id", ColumnType::BigInt { unsigned: true }, false),
            Column::new("t", ColumnType::TinyInt { unsigned: false }, true),
            Column::new("tu", ColumnType::SmallInt { unsigned: true }, true),
            Column::new("iu", ColumnType::Int { unsigned: true }, true),
            Column::new(
                "d",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 3,
                },
                true,
            ),
            Column::new("f", ColumnType::Float, true),
            Column::new("dbl", ColumnType::Double, true),
            Column::new("day", ColumnType::Date, true),
            Column::new("zero day", ColumnType::Date, true),
            Column::new("tm", ColumnType::Time { fsp: 6 }, true),
            Column::new("at", ColumnType::DateTime { fsp: 3 }, true),
            Column::new("zero at", ColumnType::DateTime { fsp: 0 }, true),
            Column::new("ts", ColumnType::Timestamp { fsp: 6 }, true),
            Column::new("y", ColumnType::Year, true),
            Column::new("v", ColumnType::Text { max_chars: Some(9) }, true),
            Column::new("b", ColumnType::Bytes { max_bytes: None }, true),
            Column::new(
                "e",
                ColumnType::Enum {
                    values: vec!["r".into(), "it's".into()],
                },
                true,
            ),
            Column::new(
                "s",
                ColumnType::Set {
                    members: vec!["x".into(), "y".into(), "z".into()],
                },
                true,
            ),
            Column::new("bits", ColumnType::Bit { width: 64 }, true),
            Column::new("j", ColumnType::Json, true),
            Column::new("n", ColumnType::Int { unsigned: false }, true),
        ];
        let table = TableSchema {
            database: "db-1".into(),
            table: "t".into(),
            columns: cols,
            primary_key: vec![0],
        };
        let row = vec![
            Value::UInt(u64::MAX),
            Value::Int(-128),
            Value::UInt(65535),
            Value::UInt(4_294_967_295),
            Value::Decimal("-123456789.125".into()),
            Value::Float(0.1),
            Value::Double(-2.5e300),
            Value::Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
            Value::Time {
                negative: true,
                micros: 3_020_399_999_999,
            },
            Value::DateTime {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 58,
                micros: 123_000,
            },
            Value::DateTime {
                year: 0,
                month: 0,
                day: 0,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
            },
            Value::Timestamp(1_700_000_000_123_456),
            Value::Int(2155),
            Value::Text("héllo'\\".into()),
            Value::Bytes(vec![0, 255, 39]),
            Value::Enum(2),
            Value::Set(0b101),
            Value::Bit(u64::MAX),
            Value::Json("{\"a\": [1, 2]}".into()),
            Value::Null,
        ];
        let schema = avro_schema(&table).unwrap();
        assert_eq!(table_schema(&schema).unwrap(), table);
        let payload = RowEncoder::new(&table)
            .unwrap()
            .encode_to_vec(&row)
            .unwrap();
        assert_eq!(decode_row(&payload, &schema, &table).unwrap(), row);
    }
}
