//! Row images decoded straight from a rows event's bytes into model [`Row`]s.
//!
//! mysql_common's `BinlogRow` path allocates per value (and rebuilds column descriptions and the
//! table map's optional metadata per row); this decoder reads each value once from the event's row
//! data with the per-column [`Codec`] derived from the table map, and allocates only the row's `Vec`
//! and the bytes of text, binary and decimal values.
//!
//! ## Row data layout (`WRITE/UPDATE/DELETE_ROWS` v1 and v2)
//!
//! Row after row until the data ends; each row is one image (inserts: after; deletes: before) or two
//! (updates: before then after). An image is a null bitmap of `ceil(columns / 8)` bytes (bit `i` of
//! byte `i / 8`, least significant first, set = NULL) followed by the values of the non-NULL columns in
//! table order. The connector requires every column in every image (`binlog_row_image=FULL`).
//!
//! | codec | bytes | model value |
//! |---|---|---|
//! | `Int {width, unsigned}` | `width` LE | `UInt`, or `Int` sign-extended from `width` bytes |
//! | `Float` / `Double` | 4 / 8 LE IEEE 754 | `Float` / `Double` |
//! | `Decimal {p, s}` | MySQL binary decimal: 9 digits per 4 bytes BE, leading/trailing partial groups in 1-4 bytes, first bit flipped, all bits inverted when negative | `Decimal` text: `-`, integer digits without leading zeros (`0` if none), `.` and exactly `s` digits |
//! | `Date` | 3 LE: `day | month << 5 | year << 9` | `Date` |
//! | `Time {fsp}` | 3 BE + (fsp+1)/2 BE, offset `0x800000` (packed time) | `Time` |
//! | `DateTime {fsp}` | 5 BE + (fsp+1)/2 BE, offset `0x8000000000` | `DateTime` |
//! | `Timestamp {fsp}` | 4 BE seconds + (fsp+1)/2 BE fraction | `Timestamp` micros |
//! | legacy TIME / DATETIME / TIMESTAMP | 3 LE signed `HHMMSS` / 8 LE `YYYYMMDDhhmmss` / 4 LE seconds | as above |
//! | `Year` | 1: year - 1900, 0 = 0000 | `Int` |
//! | `Str {len_bytes, ..}` | `len_bytes` LE length, then the bytes | `Text`/`Json` (charset checked), `Bytes` |
//! | `Enum {width}` / `Set {width}` | `width` LE | `Enum` index / `Set` bitmask |
//! | `Bit {bytes}` | `bytes` BE | `Bit` |
//!
//! Malformed data (a value running past the event, bad decimal digits, invalid UTF-8) is a
//! [`ConnectorError::Decode`] naming the table and column, never a panic.

use databus_serde_formats::model::{Row, Value};

use super::schema::{Codec, Payload, TableInfo, TextCharset};
use crate::ConnectorError;

#[cfg(test)]
mod tests;

/// A cursor over a rows event's row data.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every row was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }
}

/// Little-endian unsigned integer of up to 8 bytes.
#[inline]
fn le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Big-endian unsigned integer of up to 8 bytes.
#[inline]
fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Reads the low `bytes * 8` bits of `x` as a two's-complement integer.
#[inline]
fn sign_extend(x: u64, bytes: u8) -> i64 {
    let shift = 64 - 8 * u32::from(bytes.clamp(1, 8));
    ((x << shift) as i64) >> shift
}

/// `TIMEF_INT_OFS`, `TIMEF_OFS`, `DATETIMEF_INT_OFS` of MySQL's `my_time.h`.
const TIMEF_INT_OFS: i64 = 0x80_0000;
const TIMEF_OFS: i64 = 0x8000_0000_0000;
const DATETIMEF_INT_OFS: i64 = 0x80_0000_0000;

/// Bytes of the fraction of a TIME2/DATETIME2/TIMESTAMP2 with `fsp` digits.
fn frac_bytes(fsp: u8) -> usize {
    match fsp {
        1 | 2 => 1,
        3 | 4 => 2,
        5 | 6 => 3,
        _ => 0,
    }
}

/// The signed fraction of a DATETIME2/TIMESTAMP2 in microseconds.
fn frac_micros(b: &[u8]) -> i64 {
    match b.len() {
        1 => sign_extend(be(b), 1) * 10_000,
        2 => sign_extend(be(b), 2) * 100,
        3 => sign_extend(be(b), 3),
        _ => 0,
    }
}

/// MySQL's `my_time_packed_from_binary`: a TIME2 as a packed time (`hms << 24 | micros`, signed).
fn time2_packed(b: &[u8]) -> i64 {
    let int = |b: &[u8]| be(&b[..3]) as i64 - TIMEF_INT_OFS;
    match b.len() {
        4 => {
            let (mut intpart, mut frac) = (int(b), i64::from(b[3]));
            if intpart < 0 && frac > 0 {
                intpart += 1;
                frac -= 0x100;
            }
            (intpart << 24) + frac * 10_000
        }
        5 => {
            let (mut intpart, mut frac) = (int(b), be(&b[3..]) as i64);
            if intpart < 0 && frac > 0 {
                intpart += 1;
                frac -= 0x1_0000;
            }
            (intpart << 24) + frac * 100
        }
        6 => be(b) as i64 - TIMEF_OFS,
        _ => int(b) << 24,
    }
}

/// Bytes of a group of 0..=9 decimal digits in MySQL's binary decimal.
const DIG_TO_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Bytes of a binary `DECIMAL(precision, scale)` (`scale <= precision`).
pub(crate) fn decimal_bin_size(precision: u8, scale: u8) -> usize {
    let (intg, frac) = (
        usize::from(precision.saturating_sub(scale)),
        usize::from(scale),
    );
    intg / 9 * 4 + DIG_TO_BYTES[intg % 9] + frac / 9 * 4 + DIG_TO_BYTES[frac % 9]
}

/// Appends `v` in decimal, zero-padded to `width` digits (at most 9; 0 = no padding).
fn push_digits(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let (mut n, mut i) = (v, buf.len());
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(9));
    out.extend_from_slice(&buf[start..]);
}

/// The exact text of a binary `DECIMAL(precision, scale)` held in `b` (exactly
/// [`decimal_bin_size`] bytes), as mysql_common's `Decimal` prints it; `None` when a digit group is
/// out of range.
pub(crate) fn decimal_text(b: &[u8], precision: u8, scale: u8) -> Option<String> {
    let (scale, intg) = (
        usize::from(scale),
        usize::from(precision.checked_sub(scale)?),
    );
    if b.len() != decimal_bin_size(precision, scale as u8) || b.is_empty() {
        return None;
    }
    // The sign is the first bit (set = non-negative); a negative value has every bit inverted.
    let negative = b[0] & 0x80 == 0;
    let mask = if negative { 0xff } else { 0 };
    let mut pos = 0;
    let mut group = |digits: usize| -> Option<u32> {
        let len = DIG_TO_BYTES[digits];
        let mut v = 0u32;
        for (k, &x) in b.get(pos..pos + len)?.iter().enumerate() {
            let x = x ^ mask ^ if pos + k == 0 { 0x80 } else { 0 };
            v = (v << 8) | u32::from(x);
        }
        pos += len;
        (v < POW10[digits]).then_some(v)
    };
    // ASCII only (sign, digits, point), made a `String` at the end.
    let mut out = Vec::with_capacity(usize::from(precision) + 3);
    if negative {
        out.push(b'-');
    }
    let mut started = false;
    let groups = std::iter::once(intg % 9)
        .filter(|&d| d > 0)
        .chain(std::iter::repeat_n(9, intg / 9));
    for digits in groups {
        let v = group(digits)?;
        if started {
            push_digits(&mut out, v, digits);
        } else if v != 0 {
            push_digits(&mut out, v, 0);
            started = true;
        }
    }
    if !started {
        if scale == 0 {
            // A zero without fraction has no sign.
            out.clear();
        }
        out.push(b'0');
    }
    if scale > 0 {
        out.push(b'.');
        for _ in 0..scale / 9 {
            push_digits(&mut out, group(9)?, 9);
        }
        if scale % 9 > 0 {
            push_digits(&mut out, group(scale % 9)?, scale % 9);
        }
    }
    String::from_utf8(out).ok()
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

impl TableInfo {
    /// Decodes one row image (null bitmap and values of every column) from `r`.
    pub(crate) fn decode_image(&self, r: &mut Reader<'_>) -> Result<Row, ConnectorError> {
        let n = self.codecs.len();
        let nulls = r
            .take(n.div_ceil(8))
            .ok_or_else(|| self.err(0, "the rows event ends inside a row's null bitmap"))?;
        let mut row = Vec::with_capacity(n);
        for (i, codec) in self.codecs.iter().enumerate() {
            if (nulls[i / 8] >> (i % 8)) & 1 != 0 {
                row.push(Value::Null);
            } else {
                row.push(self.value(i, codec, r)?);
            }
        }
        Ok(row)
    }

    pub(crate) fn err(&self, i: usize, reason: impl Into<String>) -> ConnectorError {
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

    #[inline]
    fn value(&self, i: usize, codec: &Codec, r: &mut Reader<'_>) -> Result<Value, ConnectorError> {
        let short = || self.err(i, "the rows event ends inside this column's value");
        Ok(match *codec {
            Codec::Int { width, unsigned } => {
                let raw = le(r.take(usize::from(width)).ok_or_else(short)?);
                if unsigned {
                    Value::UInt(raw)
                } else {
                    Value::Int(sign_extend(raw, width))
                }
            }
            Codec::Float => Value::Float(f32::from_le_bytes(r.array().ok_or_else(short)?)),
            Codec::Double => Value::Double(f64::from_le_bytes(r.array().ok_or_else(short)?)),
            Codec::Decimal { precision, scale } => {
                let b = r
                    .take(decimal_bin_size(precision, scale))
                    .ok_or_else(short)?;
                Value::Decimal(decimal_text(b, precision, scale).ok_or_else(|| {
                    self.err(i, format!("bad binary DECIMAL({precision},{scale}) digits"))
                })?)
            }
            Codec::Date => {
                let v = le(r.take(3).ok_or_else(short)?);
                Value::Date {
                    year: (v >> 9) as u16,
                    month: ((v >> 5) & 15) as u8,
                    day: (v & 31) as u8,
                }
            }
            Codec::Time { fsp } => {
                let packed = time2_packed(r.take(3 + frac_bytes(fsp)).ok_or_else(short)?);
                let abs = packed.unsigned_abs();
                let hms = abs >> 24;
                let (h, m, s) = (
                    (hms >> 12) % (1 << 10),
                    (hms >> 6) % (1 << 6),
                    hms % (1 << 6),
                );
                Value::Time {
                    negative: packed < 0,
                    micros: ((h * 60 + m) * 60 + s) * 1_000_000 + abs % (1 << 24),
                }
            }
            Codec::TimeLegacy => {
                let v = sign_extend(le(r.take(3).ok_or_else(short)?), 3);
                let a = v.unsigned_abs();
                let (h, m, s) = (a / 10_000, a % 10_000 / 100, a % 100);
                Value::Time {
                    negative: v < 0,
                    micros: ((h * 60 + m) * 60 + s) * 1_000_000,
                }
            }
            Codec::DateTime { fsp } => {
                let b = r.take(5 + frac_bytes(fsp)).ok_or_else(short)?;
                let intpart = be(&b[..5]) as i64 - DATETIMEF_INT_OFS;
                // Wrapping: only malformed bytes come near the i64 range (never a panic on input).
                let packed = (intpart << 24)
                    .wrapping_add(frac_micros(&b[5..]))
                    .unsigned_abs();
                let (ymdhms, micros) = (packed >> 24, packed % (1 << 24));
                let (ymd, hms) = (ymdhms >> 17, ymdhms % (1 << 17));
                let ym = ymd >> 5;
                Value::DateTime {
                    year: (ym / 13) as u16,
                    month: (ym % 13) as u8,
                    day: (ymd % (1 << 5)) as u8,
                    hour: (hms >> 12) as u8,
                    minute: ((hms >> 6) % (1 << 6)) as u8,
                    second: (hms % (1 << 6)) as u8,
                    micros: micros as u32,
                }
            }
            Codec::DateTimeLegacy => {
                let raw = le(r.take(8).ok_or_else(short)?);
                let (d, t) = (raw / 1_000_000, raw % 1_000_000);
                Value::DateTime {
                    year: (d / 10_000) as u16,
                    month: (d % 10_000 / 100) as u8,
                    day: (d % 100) as u8,
                    hour: (t / 10_000) as u8,
                    minute: (t % 10_000 / 100) as u8,
                    second: (t % 100) as u8,
                    micros: 0,
                }
            }
            Codec::Timestamp { fsp } => {
                let b = r.take(4 + frac_bytes(fsp)).ok_or_else(short)?;
                Value::Timestamp(be(&b[..4]) as i64 * 1_000_000 + frac_micros(&b[4..]))
            }
            Codec::TimestampLegacy => {
                Value::Timestamp(le(r.take(4).ok_or_else(short)?) as i64 * 1_000_000)
            }
            Codec::Year => match r.take(1).ok_or_else(short)?[0] {
                0 => Value::Int(0),
                y => Value::Int(1900 + i64::from(y)),
            },
            Codec::Str { len_bytes, payload } => {
                let len = le(r.take(usize::from(len_bytes)).ok_or_else(short)?);
                let b = usize::try_from(len)
                    .ok()
                    .and_then(|len| r.take(len))
                    .ok_or_else(short)?;
                match payload {
                    Payload::Text(cs) => Value::Text(self.text(i, cs, b)?),
                    Payload::Json(cs) => Value::Json(self.text(i, cs, b)?),
                    Payload::Bytes => Value::Bytes(b.to_vec()),
                    Payload::FixedBytes(n) => {
                        let mut v = Vec::with_capacity(n.max(b.len()));
                        v.extend_from_slice(b);
                        if v.len() < n {
                            v.resize(n, 0);
                        }
                        Value::Bytes(v)
                    }
                }
            }
            Codec::Enum { width } => {
                Value::Enum(le(r.take(usize::from(width)).ok_or_else(short)?) as u16)
            }
            Codec::Set { width } => Value::Set(le(r.take(usize::from(width)).ok_or_else(short)?)),
            Codec::Bit { bytes } => Value::Bit(be(r.take(usize::from(bytes)).ok_or_else(short)?)),
        })
    }

    fn text(&self, i: usize, cs: TextCharset, b: &[u8]) -> Result<String, ConnectorError> {
        match cs {
            TextCharset::Utf8 => std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|e| self.err(i, format!("invalid UTF-8: {e}"))),
            // ASCII (most latin1 text) is the same bytes in UTF-8: one validation and one copy.
            TextCharset::Latin1 if b.is_ascii() => Ok(String::from_utf8_lossy(b).into_owned()),
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

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl TableInfo {
    /// Converts one value a snapshot's `SELECT` returned (binary protocol, session time zone UTC) to
    /// the model value the stream's row image carries for the same data: same column codec, same
    /// [`Value`] variant and units (see the table above).
    pub(crate) fn value_from_sql(
        &self,
        i: usize,
        v: mysql_async::Value,
    ) -> Result<Value, ConnectorError> {
        use databus_serde_formats::model::ColumnType;
        use mysql_async::Value as M;
        let codec = &self.codecs[i];
        let unexpected = |v: &M| self.err(i, format!("unexpected value {v:?} for {codec:?}"));
        Ok(match (codec, v) {
            (_, M::NULL) => Value::Null,
            (Codec::Int { unsigned, .. }, v) => match (v, *unsigned) {
                (M::Int(x), false) => Value::Int(x),
                (M::Int(x), true) => Value::UInt(x as u64),
                (M::UInt(x), true) => Value::UInt(x),
                (M::UInt(x), false) => Value::Int(x as i64),
                (v, _) => return Err(unexpected(&v)),
            },
            (Codec::Float, M::Float(f)) => Value::Float(f),
            (Codec::Float, M::Double(f)) => Value::Float(f as f32),
            (Codec::Double, M::Double(f)) => Value::Double(f),
            (Codec::Double, M::Float(f)) => Value::Double(f64::from(f)),
            (Codec::Decimal { .. }, M::Bytes(b)) => {
                Value::Decimal(self.text(i, TextCharset::Utf8, &b)?)
            }
            (Codec::Date, M::Date(year, month, day, ..)) => Value::Date { year, month, day },
            (Codec::Time { .. } | Codec::TimeLegacy, M::Time(negative, days, h, m, s, us)) => {
                Value::Time {
                    negative,
                    micros: ((u64::from(days) * 24 + u64::from(h)) * 3600
                        + u64::from(m) * 60
                        + u64::from(s))
                        * 1_000_000
                        + u64::from(us),
                }
            }
            (
                Codec::DateTime { .. } | Codec::DateTimeLegacy,
                M::Date(year, month, day, hour, minute, second, micros),
            ) => Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            },
            (Codec::Timestamp { .. } | Codec::TimestampLegacy, M::Date(y, mo, d, h, mi, s, us)) => {
                if y == 0 {
                    Value::Timestamp(0)
                } else {
                    let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
                    let secs =
                        days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                    Value::Timestamp(secs * 1_000_000 + i64::from(us))
                }
            }
            (Codec::Year, M::Int(y)) => Value::Int(y),
            (Codec::Year, M::UInt(y)) => Value::Int(y as i64),
            (Codec::Str { payload, .. }, M::Bytes(b)) => match *payload {
                // The server converts text to the connection's utf8mb4.
                Payload::Text(cs) => Value::Text(self.text(i, utf8_if_supported(cs), &b)?),
                Payload::Json(cs) => Value::Json(self.text(i, utf8_if_supported(cs), &b)?),
                Payload::Bytes => Value::Bytes(b),
                Payload::FixedBytes(n) => {
                    let mut b = b;
                    if b.len() < n {
                        b.resize(n, 0);
                    }
                    Value::Bytes(b)
                }
            },
            (Codec::Enum { .. }, M::Bytes(b)) => {
                let ColumnType::Enum { values } = &self.schema.columns[i].column_type else {
                    return Err(self.err(i, "an ENUM codec on a non-ENUM column"));
                };
                let s = self.text(i, TextCharset::Utf8, &b)?;
                // 0 is MariaDB's index of the invalid value ''.
                Value::Enum(
                    values
                        .iter()
                        .position(|v| *v == s)
                        .map_or(0, |p| p as u16 + 1),
                )
            }
            (Codec::Set { .. }, M::Bytes(b)) => {
                let ColumnType::Set { members } = &self.schema.columns[i].column_type else {
                    return Err(self.err(i, "a SET codec on a non-SET column"));
                };
                let s = self.text(i, TextCharset::Utf8, &b)?;
                let mut mask = 0u64;
                for part in s.split(',').filter(|p| !p.is_empty()) {
                    match members.iter().position(|m| m == part) {
                        Some(p) => mask |= 1 << p,
                        None => return Err(self.err(i, format!("{part:?} is not a member"))),
                    }
                }
                Value::Set(mask)
            }
            (Codec::Bit { .. }, M::Bytes(b)) => Value::Bit(be(&b)),
            (Codec::Bit { .. }, M::UInt(u)) => Value::Bit(u),
            (Codec::Bit { .. }, M::Int(x)) => Value::Bit(x as u64),
            (_, v) => return Err(unexpected(&v)),
        })
    }
}

/// A supported text charset arrives as UTF-8 from a `SELECT`; an unsupported one stays refused as in
/// the stream.
fn utf8_if_supported(cs: TextCharset) -> TextCharset {
    match cs {
        TextCharset::Unsupported(_) => cs,
        _ => TextCharset::Utf8,
    }
}
