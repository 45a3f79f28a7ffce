//! PostgreSQL column types onto the model's [`ColumnType`]s, and pgoutput's text values onto
//! [`Value`]s.
//!
//! pgoutput (protocol 1, no `binary` option) sends every value in its type's text output format. The
//! replication session pins the settings that format depends on (`DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`), so the parsing below is exact.
//!
//! | PostgreSQL | [`ColumnType`] | `Value` |
//! |---|---|---|
//! | smallint / integer / bigint | SmallInt / Int / BigInt (signed) | `Int` |
//! | numeric(p,s) | Decimal {p, s} | `Decimal` exact text (`NaN`/`Infinity`: refused) |
//! | numeric (no precision) | Text | `Text` exact decimal text |
//! | real / double precision | Float / Double | `Float` / `Double` (`NaN`, `Infinity` kept) |
//! | boolean | TinyInt (as MariaDB's BOOLEAN) | `Int` 0/1 |
//! | text, varchar(n), char(n), name | Text {max_chars: n} | `Text` (char(n) keeps its padding) |
//! | bytea | Bytes | `Bytes` |
//! | date | Date | `Date` |
//! | time(p) | Time {fsp: p} | `Time` |
//! | timestamp(p) | DateTime {fsp: p} | `DateTime` |
//! | timestamptz(p) | Timestamp {fsp: p} | `Timestamp` micros since the epoch, UTC |
//! | interval | Text | `Text`, ISO 8601 (`P1Y2M3DT4H5M6.5S`) |
//! | uuid | Text {max_chars: 36} | `Text` (lower-case hex with dashes) |
//! | json, jsonb | Json | `Json` text |
//! | enum types | Enum {labels in sort order} | `Enum` 1-based index |
//! | arrays of the types above | Json | a JSON array (nested for several dimensions; numbers and booleans as JSON numbers and booleans, everything else as the element's text) |
//!
//! `infinity`/`-infinity` dates and timestamps and BC dates have no model value: a definite decode error
//! naming the column. Any other type (domains, ranges, geometric, network, composite types) is refused
//! when the table's schema is read, naming the column.

use databus_serde_formats::model::{ColumnType, Value};

/// How one column's text becomes a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Codec {
    Int,
    Bool,
    Float,
    Double,
    Decimal,
    Text,
    Bytes,
    Date,
    Time,
    DateTime,
    Timestamp,
    Json,
    /// Labels in sort order.
    Enum(Vec<String>),
    /// An array whose elements decode with the element codec.
    Array(Box<Codec>),
}

/// What the catalog says about one column's type.
#[derive(Debug, Clone)]
pub(crate) struct TypeFacts {
    pub(crate) oid: u32,
    pub(crate) typmod: i32,
    /// `pg_type.typtype` of the column's type (`b` base, `e` enum, `d` domain, ...).
    pub(crate) typtype: char,
    /// The element type of an array type.
    pub(crate) elem: Option<(u32, char)>,
    /// `format_type(oid, typmod)`, for messages.
    pub(crate) display: String,
    /// Labels of an enum type (or of an array's enum element type), in sort order.
    pub(crate) enum_labels: Vec<String>,
}

fn scalar(oid: u32, typtype: char, typmod: i32, labels: &[String]) -> Option<(ColumnType, Codec)> {
    let fsp = |m: i32| if m < 0 { 6 } else { m.min(6) as u8 };
    Some(match oid {
        16 => (ColumnType::TinyInt { unsigned: false }, Codec::Bool),
        21 => (ColumnType::SmallInt { unsigned: false }, Codec::Int),
        23 => (ColumnType::Int { unsigned: false }, Codec::Int),
        20 => (ColumnType::BigInt { unsigned: false }, Codec::Int),
        700 => (ColumnType::Float, Codec::Float),
        701 => (ColumnType::Double, Codec::Double),
        1700 if typmod >= 4 => {
            let precision = ((typmod - 4) >> 16) & 0xffff;
            let scale = (typmod - 4) & 0xffff;
            match (u8::try_from(precision), u8::try_from(scale)) {
                (Ok(precision), Ok(scale)) if scale <= precision => {
                    (ColumnType::Decimal { precision, scale }, Codec::Decimal)
                }
                // Precision above 255 or a negative scale (PG 15): exact text.
                _ => (ColumnType::Text { max_chars: None }, Codec::Text),
            }
        }
        1700 => (ColumnType::Text { max_chars: None }, Codec::Text),
        25 | 19 => (ColumnType::Text { max_chars: None }, Codec::Text),
        1043 | 1042 => (
            ColumnType::Text {
                max_chars: (typmod >= 4).then(|| (typmod - 4) as u32),
            },
            Codec::Text,
        ),
        17 => (ColumnType::Bytes { max_bytes: None }, Codec::Bytes),
        1082 => (ColumnType::Date, Codec::Date),
        1083 => (ColumnType::Time { fsp: fsp(typmod) }, Codec::Time),
        1114 => (ColumnType::DateTime { fsp: fsp(typmod) }, Codec::DateTime),
        1184 => (ColumnType::Timestamp { fsp: fsp(typmod) }, Codec::Timestamp),
        1186 => (ColumnType::Text { max_chars: None }, Codec::Text),
        2950 => (
            ColumnType::Text {
                max_chars: Some(36),
            },
            Codec::Text,
        ),
        114 | 3802 => (ColumnType::Json, Codec::Json),
        _ if typtype == 'e' => (
            ColumnType::Enum {
                values: labels.to_vec(),
            },
            Codec::Enum(labels.to_vec()),
        ),
        _ => return None,
    })
}

/// The model type and codec of a column, or why it is not supported.
pub(crate) fn column_type(facts: &TypeFacts) -> Result<(ColumnType, Codec), String> {
    if let Some((elem_oid, elem_typtype)) = facts.elem {
        return match scalar(elem_oid, elem_typtype, -1, &facts.enum_labels) {
            Some((_, codec)) => Ok((ColumnType::Json, Codec::Array(Box::new(codec)))),
            None => Err(format!(
                "arrays of this element type ({}) are not supported",
                facts.display
            )),
        };
    }
    scalar(facts.oid, facts.typtype, facts.typmod, &facts.enum_labels).ok_or_else(|| {
        format!(
            "type {} is not supported (supported: integers, numeric, real, double precision, boolean, \
             text/varchar/char, bytea, date, time, timestamp, timestamptz, interval, uuid, json, jsonb, \
             enums and arrays of these)",
            facts.display
        )
    })
}

/// Parses one text value.
pub(crate) fn decode(codec: &Codec, text: &str) -> Result<Value, String> {
    Ok(match codec {
        Codec::Int => Value::Int(text.parse().map_err(|e| format!("{text:?}: {e}"))?),
        Codec::Bool => match text {
            "t" => Value::Int(1),
            "f" => Value::Int(0),
            _ => return Err(format!("{text:?} is not a boolean")),
        },
        // Parsed as f32 directly: through f64 a decimal could round twice.
        Codec::Float => Value::Float(match text {
            "NaN" => f32::NAN,
            "Infinity" => f32::INFINITY,
            "-Infinity" => f32::NEG_INFINITY,
            _ => text.parse().map_err(|e| format!("{text:?}: {e}"))?,
        }),
        Codec::Double => Value::Double(parse_float(text)?),
        Codec::Decimal => {
            if text.chars().any(|c| c.is_ascii_alphabetic()) {
                return Err(format!(
                    "{text} has no DECIMAL value (NaN and infinities cannot be encoded)"
                ));
            }
            Value::Decimal(text.to_owned())
        }
        Codec::Text => Value::Text(text.to_owned()),
        Codec::Json => Value::Json(text.to_owned()),
        Codec::Bytes => Value::Bytes(parse_bytea(text)?),
        Codec::Date => {
            let (year, month, day) = parse_date(text)?;
            Value::Date { year, month, day }
        }
        Codec::Time => Value::Time {
            negative: false,
            micros: parse_time(text)?,
        },
        Codec::DateTime => {
            let (date, time) = text
                .split_once(' ')
                .ok_or_else(|| format!("{text:?} is not a timestamp"))?;
            let (year, month, day) = parse_date(date)?;
            let t = parse_time(time)?;
            Value::DateTime {
                year,
                month,
                day,
                hour: (t / 3_600_000_000) as u8,
                minute: (t / 60_000_000 % 60) as u8,
                second: (t / 1_000_000 % 60) as u8,
                micros: (t % 1_000_000) as u32,
            }
        }
        Codec::Timestamp => {
            let (date, rest) = text
                .split_once(' ')
                .ok_or_else(|| format!("{text:?} is not a timestamptz"))?;
            let (year, month, day) = parse_date(date)?;
            // With TimeZone=UTC the offset is `+00`; accept any `±hh[:mm[:ss]]`.
            let split = rest
                .rfind(['+', '-'])
                .ok_or_else(|| format!("{text:?} has no UTC offset"))?;
            let (time, offset) = rest.split_at(split);
            let t = parse_time(time)? as i64;
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let mut off = 0i64;
            for (i, part) in offset[1..].split(':').enumerate() {
                let v: i64 = part
                    .parse()
                    .map_err(|_| format!("bad offset in {text:?}"))?;
                off += v * [3600, 60, 1].get(i).copied().unwrap_or(0);
            }
            let days = days_from_civil(year as i64, month as i64, day as i64);
            Value::Timestamp(days * 86_400_000_000 + t - sign * off * 1_000_000)
        }
        Codec::Enum(labels) => match labels.iter().position(|l| l == text) {
            Some(i) => Value::Enum(i as u16 + 1),
            None => return Err(format!("enum label {text:?} unknown")),
        },
        Codec::Array(elem) => Value::Json(array_to_json(elem, text)?),
    })
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|e| format!("{text:?}: {e}")),
    }
}

fn parse_bytea(text: &str) -> Result<Vec<u8>, String> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| format!("bytea {text:.20?} is not in hex format (bytea_output=hex)"))?;
    if hex.len() % 2 != 0 {
        return Err("bytea hex has an odd length".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn parse_date(text: &str) -> Result<(u16, u8, u8), String> {
    let bad = || {
        format!(
            "{text:?} has no model value (infinity and BC dates, or years past 9999, cannot be encoded)"
        )
    };
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next(), parts.next(), parts.next());
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return Err(bad());
    };
    if y.len() != 4 || d.len() != 2 {
        return Err(bad());
    }
    Ok((
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    ))
}

/// `HH:MM:SS[.ffffff]` as microseconds (24:00:00 allowed, as PostgreSQL does).
fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a time");
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut it = hms.split(':');
    let h: u64 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let m: u64 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let s: u64 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if frac.len() > 6 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let micros: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    Ok(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An array literal (`{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`, optionally prefixed by
/// dimension bounds `[0:1]=`) as a JSON array.
fn array_to_json(elem: &Codec, text: &str) -> Result<String, String> {
    let body = match text.find("={") {
        Some(i) if text.starts_with('[') => &text[i + 1..],
        _ => text,
    };
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    parse_array_level(elem, &chars, &mut i, &mut out)?;
    if i != chars.len() {
        return Err(format!("trailing text in array literal {text:.40?}"));
    }
    Ok(out)
}

fn parse_array_level(
    elem: &Codec,
    c: &[char],
    i: &mut usize,
    out: &mut String,
) -> Result<(), String> {
    if c.get(*i) != Some(&'{') {
        return Err("array literal does not start with {".into());
    }
    *i += 1;
    out.push('[');
    let mut first = true;
    loop {
        match c.get(*i) {
            None => return Err("unterminated array literal".into()),
            Some('}') => {
                *i += 1;
                out.push(']');
                return Ok(());
            }
            Some(',') => {
                *i += 1;
                continue;
            }
            _ => {}
        }
        if !first {
            out.push(',');
        }
        first = false;
        if c[*i] == '{' {
            parse_array_level(elem, c, i, out)?;
            continue;
        }
        let (item, quoted) = if c[*i] == '"' {
            *i += 1;
            let mut s = String::new();
            loop {
                match c.get(*i) {
                    None => return Err("unterminated quoted array element".into()),
                    Some('\\') => {
                        s.push(*c.get(*i + 1).ok_or("dangling escape in array literal")?);
                        *i += 2;
                    }
                    Some('"') => {
                        *i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        *i += 1;
                    }
                }
            }
            (s, true)
        } else {
            let start = *i;
            while let Some(&ch) = c.get(*i) {
                if ch == ',' || ch == '}' {
                    break;
                }
                *i += 1;
            }
            (c[start..*i].iter().collect::<String>(), false)
        };
        if !quoted && item == "NULL" {
            out.push_str("null");
            continue;
        }
        // Validate the element with its scalar codec, then render it.
        let value = decode(elem, &item)?;
        match (elem, value) {
            (Codec::Int, Value::Int(v)) => out.push_str(&v.to_string()),
            (Codec::Bool, Value::Int(v)) => out.push_str(if v == 1 { "true" } else { "false" }),
            (Codec::Float | Codec::Double | Codec::Decimal, _)
                if item
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || "-+.eE".contains(ch)) =>
            {
                out.push_str(&item)
            }
            (Codec::Json, _) => out.push_str(&item),
            _ => json_string(&item, out),
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_dates() {
        assert_eq!(
            decode(&Codec::Timestamp, "1970-01-01 00:00:01.5+00").unwrap(),
            Value::Timestamp(1_500_000)
        );
        assert_eq!(
            decode(&Codec::Timestamp, "2000-01-01 01:00:00+01").unwrap(),
            Value::Timestamp(946_684_800_000_000)
        );
        assert!(decode(&Codec::Date, "infinity").is_err());
        assert!(decode(&Codec::Date, "0044-03-15 BC").is_err());
        assert_eq!(
            decode(&Codec::Time, "23:59:59.25").unwrap(),
            Value::Time {
                negative: false,
                micros: 86_399_250_000
            }
        );
    }

    #[test]
    fn arrays_become_json() {
        assert_eq!(
            array_to_json(&Codec::Int, "{{1,2},{NULL,4}}").unwrap(),
            "[[1,2],[null,4]]"
        );
        assert_eq!(
            array_to_json(&Codec::Text, r#"{"a b","c\"d",NULL,"NULL",x}"#).unwrap(),
            r#"["a b","c\"d",null,"NULL","x"]"#
        );
        assert_eq!(
            array_to_json(&Codec::Bool, "[0:1]={t,f}").unwrap(),
            "[true,false]"
        );
        assert_eq!(array_to_json(&Codec::Int, "{}").unwrap(), "[]");
    }
}
