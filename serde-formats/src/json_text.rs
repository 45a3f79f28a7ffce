//! JSON text straight from Avro binary: the event rendering of [`crate::decode::event_json`], written
//! into a byte buffer without building apache-avro `Value`s or `serde_json` values.
//!
//! A [`JsonPlan`] is compiled once per writer schema (cache it per schema id, see [`JsonPlanCache`]):
//! for every node of the schema it knows how to read the Avro binary and what JSON to write (the
//! `databus.type` of each field decides TIME, BIT, BIGINT UNSIGNED and JSON columns), and for every
//! record the order in which its keys are written (sorted by name, as `serde_json` maps are).
//! [`write_event_json`] then walks the payload once per record level and appends the JSON document.
//!
//! The output is byte for byte the one of `serde_json::to_string(&decode::event_json(..))`: numbers
//! and strings are written by `serde_json`'s own serializer, and every case the plan does not cover
//! takes the old path for that event:
//!
//! - schemas with named references, records with two fields under one rendered key, `uuid`, `duration`,
//!   `big-decimal` (the plan is not compiled; every event of the schema takes the old path);
//! - payloads that do not decode (truncated, trailing bytes, a union branch or enum index that does
//!   not exist, invalid UTF-8, an int out of range): the old path writes `payload_base64` and
//!   `decode_error` with apache-avro's message;
//! - table events (their payload is JSON), and events whose schema is unknown.
//!
//! The equality is checked by a property test against the old renderer over generated schemas and
//! values and over random bytes (`tests/json_text.rs`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::Schema;
use apache_avro::schema::{DecimalSchema, InnerDecimalSchema};
use base64::Engine as _;
use databus_core::{EventView, KeyRef, Opcode, SchemaId};
use serde_json::Value as Json;

use crate::avro_schema::{ATTR_COLUMN, ATTR_TYPE};
use crate::convert::{ZERO_DATE_DAYS, ZERO_DATETIME_MICROS, civil_from_days, decimal_to_string};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// How to render one Avro schema node.
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long(LongKind),
    Float,
    Double,
    Bytes,
    Fixed(usize),
    /// `json`: the column holds JSON text, rendered as the parsed value.
    Str {
        json: bool,
    },
    Enum {
        symbols: Vec<String>,
        json: bool,
    },
    Union(Vec<Node>),
    Array(Box<Node>),
    Map(Box<Node>),
    Record(Record),
    Date,
    Decimal {
        scale: usize,
        /// BIGINT UNSIGNED: a JSON number when the text is a u64.
        bigint: bool,
        /// `Some(size)` for a decimal on `fixed`, `None` on `bytes`.
        fixed: Option<usize>,
    },
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    LocalTimestampMillis,
    LocalTimestampMicros,
    /// Nanosecond timestamps are rendered as numbers.
    Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LongKind {
    Plain,
    /// `databus.type` `time(n)`: a signed duration in microseconds.
    Time,
    /// `databus.type` `bit(n)`: the u64 of the bits.
    Bit,
}

#[derive(Debug)]
struct Record {
    fields: Vec<Node>,
    /// `(field index, "key":)` in the order the keys are written.
    order: Vec<(usize, Box<[u8]>)>,
    /// Whether `order` is the fields' order (one pass, no spans).
    in_order: bool,
}

/// A writer schema compiled for [`write_event_json`].
#[derive(Debug)]
pub struct JsonPlan {
    writer: Arc<Schema>,
    /// `None`: the schema uses something the plan does not render; every event takes the old path.
    root: Option<Node>,
}

impl JsonPlan {
    /// Compiles `writer`.
    pub fn new(writer: Arc<Schema>) -> JsonPlan {
        let root = compile(&writer, None);
        JsonPlan { writer, root }
    }

    /// The writer schema.
    pub fn writer(&self) -> &Arc<Schema> {
        &self.writer
    }

    /// Whether payloads of this schema are rendered straight from the binary (else through apache-avro
    /// values, the old path).
    pub fn is_direct(&self) -> bool {
        self.root.is_some()
    }
}

/// Plans compiled once per schema id, shared by every request of a server.
#[derive(Debug, Default)]
pub struct JsonPlanCache {
    plans: RwLock<HashMap<SchemaId, Arc<JsonPlan>>>,
}

impl JsonPlanCache {
    /// The plan of `id`, compiled from `writer()` on first use; `None` when `writer()` does not know it.
    pub fn get_or_compile(
        &self,
        id: SchemaId,
        writer: impl FnOnce() -> Option<Arc<Schema>>,
    ) -> Option<Arc<JsonPlan>> {
        if let Some(plan) = self
            .plans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Some(plan.clone());
        }
        let plan = Arc::new(JsonPlan::new(writer()?));
        let mut plans = self.plans.write().unwrap_or_else(PoisonError::into_inner);
        Some(plans.entry(id).or_insert(plan).clone())
    }
}

fn kind_of(dtype: Option<&str>) -> Option<&str> {
    dtype.map(|t| t.split(['(', ' ']).next().unwrap_or(t))
}

/// Compiles `schema`; `dtype` is the enclosing field's `databus.type` (it passes through unions, as in
/// the old renderer, and not into array items, map values or nested records' fields).
fn compile(schema: &Schema, dtype: Option<&str>) -> Option<Node> {
    let kind = kind_of(dtype);
    Some(match schema {
        Schema::Null => Node::Null,
        Schema::Boolean => Node::Boolean,
        Schema::Int => Node::Int,
        Schema::Long => Node::Long(match kind {
            Some("time") => LongKind::Time,
            Some("bit") => LongKind::Bit,
            _ => LongKind::Plain,
        }),
        Schema::Float => Node::Float,
        Schema::Double => Node::Double,
        Schema::Bytes => Node::Bytes,
        Schema::Fixed(f) => Node::Fixed(f.size),
        Schema::String => Node::Str {
            json: kind == Some("json"),
        },
        Schema::Enum(e) => Node::Enum {
            symbols: e.symbols.clone(),
            json: kind == Some("json"),
        },
        Schema::Union(u) => Node::Union(
            u.variants()
                .iter()
                .map(|v| compile(v, dtype))
                .collect::<Option<_>>()?,
        ),
        Schema::Array(a) => Node::Array(Box::new(compile(&a.items, None)?)),
        Schema::Map(m) => Node::Map(Box::new(compile(&m.types, None)?)),
        Schema::Record(r) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            let mut keys = Vec::with_capacity(r.fields.len());
            for (i, f) in r.fields.iter().enumerate() {
                let key = f
                    .custom_attributes
                    .get(ATTR_COLUMN)
                    .and_then(Json::as_str)
                    .unwrap_or(&f.name);
                let dtype = f.custom_attributes.get(ATTR_TYPE).and_then(Json::as_str);
                fields.push(compile(&f.schema, dtype)?);
                keys.push((key.to_owned(), i));
            }
            keys.sort();
            if keys.windows(2).any(|w| w[0].0 == w[1].0) {
                // Two fields rendered under one key: the old path keeps the last; not worth a plan.
                return None;
            }
            let in_order = keys.iter().enumerate().all(|(pos, (_, i))| pos == *i);
            let order = keys
                .into_iter()
                .map(|(key, i)| {
                    let mut text = serde_json::to_vec(&key).ok()?;
                    text.push(b':');
                    Some((i, text.into_boxed_slice()))
                })
                .collect::<Option<_>>()?;
            Node::Record(Record {
                fields,
                order,
                in_order,
            })
        }
        Schema::Date => Node::Date,
        Schema::Decimal(DecimalSchema { scale, inner, .. }) => Node::Decimal {
            scale: *scale,
            bigint: kind == Some("bigint"),
            fixed: match inner {
                InnerDecimalSchema::Bytes => None,
                InnerDecimalSchema::Fixed(f) => Some(f.size),
            },
        },
        Schema::TimeMillis => Node::TimeMillis,
        Schema::TimeMicros => Node::TimeMicros,
        Schema::TimestampMillis => Node::TimestampMillis,
        Schema::TimestampMicros => Node::TimestampMicros,
        Schema::LocalTimestampMillis => Node::LocalTimestampMillis,
        Schema::LocalTimestampMicros => Node::LocalTimestampMicros,
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Node::Nanos,
        // Named references, uuid, duration, big-decimal: the old path.
        _ => return None,
    })
}

/// The payload does not render on the direct path (it may not decode at all): take the old path,
/// which says why.
#[derive(Debug)]
struct Bail;

type R<T> = Result<T, Bail>;

/// A position in one payload.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Bail)?;
        let bytes = self.data.get(self.pos..end).ok_or(Bail)?;
        self.pos = end;
        Ok(bytes)
    }

    /// A zig-zag varint, as apache-avro reads it (at most 10 bytes).
    fn long(&mut self) -> R<i64> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = *self.data.get(self.pos).ok_or(Bail)?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(Bail)
    }

    fn int(&mut self) -> R<i32> {
        i32::try_from(self.long()?).map_err(|_| Bail)
    }

    fn len(&mut self) -> R<usize> {
        usize::try_from(self.long()?).map_err(|_| Bail)
    }

    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> R<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Bail)
    }

    /// The item count of the next array or map block (0 ends it).
    fn block(&mut self) -> R<usize> {
        let count = self.long()?;
        if count < 0 {
            self.long()?; // the block's size in bytes
        }
        usize::try_from(count.checked_abs().ok_or(Bail)?).map_err(|_| Bail)
    }

    /// Skips one datum of `node`, checking its structure (lengths, union branches, enum indexes)
    /// but not the UTF-8 of its strings: every skipped datum is rendered afterwards.
    fn skip(&mut self, node: &Node) -> R<()> {
        match node {
            Node::Null => Ok(()),
            Node::Boolean => match self.take(1)?[0] {
                0 | 1 => Ok(()),
                _ => Err(Bail),
            },
            Node::Int | Node::Date | Node::TimeMillis => self.int().map(drop),
            Node::Enum { symbols, .. } => {
                let i = self.int()?;
                usize::try_from(i)
                    .ok()
                    .filter(|&i| i < symbols.len())
                    .map(drop)
                    .ok_or(Bail)
            }
            Node::Long(_)
            | Node::TimeMicros
            | Node::TimestampMillis
            | Node::TimestampMicros
            | Node::LocalTimestampMillis
            | Node::LocalTimestampMicros
            | Node::Nanos => self.long().map(drop),
            Node::Float => self.take(4).map(drop),
            Node::Double => self.take(8).map(drop),
            Node::Bytes | Node::Decimal { fixed: None, .. } => self.bytes().map(drop),
            // Skipped fields are rendered afterwards, which checks their UTF-8: here only the length.
            Node::Str { .. } => self.bytes().map(drop),
            Node::Fixed(n) | Node::Decimal { fixed: Some(n), .. } => self.take(*n).map(drop),
            Node::Union(variants) => {
                let i = self.long()?;
                let v = usize::try_from(i)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or(Bail)?;
                self.skip(v)
            }
            Node::Array(items) => loop {
                let n = self.block()?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    self.skip(items)?;
                }
            },
            Node::Map(values) => loop {
                let n = self.block()?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    self.bytes()?;
                    self.skip(values)?;
                }
            },
            Node::Record(r) => r.fields.iter().try_for_each(|f| self.skip(f)),
        }
    }
}

/// Reusable scratch space of one rendering thread.
#[derive(Default)]
struct Scratch {
    /// Field spans of the records being rendered (a stack: each record pushes its fields' spans).
    spans: Vec<(usize, usize)>,
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        write_json(out, &v);
    } else if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v > 0.0 {
        out.extend_from_slice(b"\"Infinity\"");
    } else {
        out.extend_from_slice(b"\"-Infinity\"");
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

fn write_str(out: &mut Vec<u8>, s: &str, json: bool) {
    if json && let Ok(value) = serde_json::from_str::<Json>(s) {
        write_json(out, &value);
        return;
    }
    // `s` is UTF-8 already.
    let _ = write_utf8_string(out, s.as_bytes());
}

/// How [`write_utf8_string`] treats a byte: written as it is, escaped (the second byte of the escape,
/// `u` for `\u00XX`), or the first byte of a multi-byte UTF-8 sequence (or not UTF-8 at all).
const PLAIN: u8 = 0;
const LEAD: u8 = 1;

/// Per byte: [`PLAIN`], [`LEAD`] (0x80 and up), or the letter of its escape, exactly as `serde_json`
/// escapes strings: `"` and `\`, and the control characters below 0x20 (`\b \t \n \f \r`, the others
/// `\u00XX` with lowercase hex digits); 0x7f and everything non-ASCII are written as they are.
static CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    let mut b = 0x80;
    while b < 0x100 {
        t[b] = LEAD;
        b += 1;
    }
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `w` (little-endian) that `serde_json` escapes: below 0x20, `"` or
/// `\\`. The lowest flag is exact (the first such byte); above it these tricks may flag other bytes too
/// (a borrow carries into the next byte), and none is ever missed.
#[inline]
fn escapes(w: u64) -> u64 {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = has_zero(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash
}

/// The bits of the first `n` bytes of a little-endian word (`n` up to 8).
#[inline]
fn low_bytes(n: usize) -> u64 {
    u64::MAX
        .checked_shl(8 * n as u32)
        .map_or(u64::MAX, |high| !high)
}

/// The length of the UTF-8 sequence that starts `s` (its first byte is 0x80 or more), or `None` when
/// `s` does not start with one (the rules of `std::str::from_utf8`: no overlong forms, no surrogates,
/// nothing above U+10FFFF).
#[inline]
fn utf8_sequence(s: &[u8]) -> Option<usize> {
    let cont = |i: usize| s.get(i).is_some_and(|&b| b & 0xc0 == 0x80);
    let second = |lo: u8, hi: u8| s.get(1).is_some_and(|&b| (lo..=hi).contains(&b));
    match s[0] {
        0xc2..=0xdf if cont(1) => Some(2),
        0xe0 if second(0xa0, 0xbf) && cont(2) => Some(3),
        0xe1..=0xec | 0xee..=0xef if cont(1) && cont(2) => Some(3),
        0xed if second(0x80, 0x9f) && cont(2) => Some(3),
        0xf0 if second(0x90, 0xbf) && cont(2) && cont(3) => Some(4),
        0xf1..=0xf3 if cont(1) && cont(2) && cont(3) => Some(4),
        0xf4 if second(0x80, 0x8f) && cont(2) && cont(3) => Some(4),
        _ => None,
    }
}

/// Appends `s` as a JSON string, checking that it is UTF-8 and escaping it in one pass over its bytes;
/// the bytes of `serde_json::to_writer(out, s)`.
///
/// Eight bytes at a time: the bytes before the first one to escape are checked (each multi-byte
/// character that starts among them is validated where it starts, found by its high bit) and written
/// whole, the output cut back to them (no call to copy a short run). Then the byte to escape is
/// escaped, or a character that crosses the eight bytes is checked and copied, and the next eight
/// follow. On `Err` (`s` is not UTF-8) `out` holds a part of the string: the caller drops the event's
/// text.
fn write_utf8_string(out: &mut Vec<u8>, s: &[u8]) -> R<()> {
    out.reserve(s.len() + 10);
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let rest = s.len() - i;
        let chunk: [u8; 8] = match s.get(i..i + 8) {
            Some(chunk) => chunk.try_into().map_err(|_| Bail)?,
            None => {
                // The last bytes, padded with plain ones that are cut off below.
                let mut padded = [b' '; 8];
                padded[..rest].copy_from_slice(&s[i..]);
                padded
            }
        };
        let w = u64::from_le_bytes(chunk);
        // Bytes before the first to escape (or the end of `s`) ...
        let mut plain = ((escapes(w).trailing_zeros() / 8) as usize).min(rest);
        // ... whose multi-byte characters are checked where they start. A continuation byte is
        // never reached here: each character's bytes are cleared from `high` once checked.
        let mut high = w & HIGH & low_bytes(plain);
        while high != 0 {
            let at = (high.trailing_zeros() / 8) as usize;
            let len = utf8_sequence(&s[i + at..]).ok_or(Bail)?;
            if at + len > plain {
                // The character crosses the eight bytes (a byte to escape is never inside one: it
                // is not a continuation byte, and the check above refused that): copied below.
                plain = at;
                break;
            }
            high &= !low_bytes(at + len);
        }
        out.extend_from_slice(&chunk);
        out.truncate(out.len() - 8 + plain);
        i += plain;
        if plain == 8 {
            continue;
        }
        let Some(&b) = s.get(i) else { break };
        match CLASS[usize::from(b)] {
            // Not reached (the first flag is exact); written as it is, as it is plain.
            PLAIN => {
                out.push(b);
                i += 1;
            }
            LEAD => match utf8_sequence(&s[i..]).ok_or(Bail)? {
                2 => {
                    out.extend_from_slice(&[b, s[i + 1]]);
                    i += 2;
                }
                3 => {
                    out.extend_from_slice(&[b, s[i + 1], s[i + 2]]);
                    i += 3;
                }
                _ => {
                    out.extend_from_slice(&[b, s[i + 1], s[i + 2], s[i + 3]]);
                    i += 4;
                }
            },
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
                i += 1;
            }
            escape => {
                out.extend_from_slice(&[b'\\', escape]);
                i += 1;
            }
        }
    }
    out.push(b'"');
    Ok(())
}

fn push_digits(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

fn push_year(out: &mut Vec<u8>, y: i64) {
    if (0..=9999).contains(&y) {
        push_digits(out, y as u64, 4);
    } else if y < 0 {
        out.push(b'-');
        push_digits(out, y.unsigned_abs(), 4);
    } else {
        out.push(b'+');
        push_digits(out, y as u64, 1);
    }
}

/// The last `N` decimal digits of `v`, zero-padded: a fixed-size piece of text (copied into the output
/// without a call to copy a variable length).
fn digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut text = [b'0'; N];
    for d in text.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    text
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` (as `convert::format_datetime`).
fn push_datetime(out: &mut Vec<u8>, micros: i64) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY) as u64;
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1_000_000;
    if (0..=9999).contains(&y) {
        // The usual years: the text in one fixed-size piece.
        let mut text = *b"0000-00-00T00:00:00.000000";
        text[0..4].copy_from_slice(&digits::<4>(y as u64));
        text[5..7].copy_from_slice(&digits::<2>(u64::from(m)));
        text[8..10].copy_from_slice(&digits::<2>(u64::from(d)));
        text[11..13].copy_from_slice(&digits::<2>(secs / 3600));
        text[14..16].copy_from_slice(&digits::<2>(secs / 60 % 60));
        text[17..19].copy_from_slice(&digits::<2>(secs % 60));
        text[20..26].copy_from_slice(&digits::<6>(rest % 1_000_000));
        out.extend_from_slice(&text);
        return;
    }
    push_year(out, y);
    out.push(b'-');
    push_digits(out, u64::from(m), 2);
    out.push(b'-');
    push_digits(out, u64::from(d), 2);
    out.push(b'T');
    push_digits(out, secs / 3600, 2);
    out.push(b':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(b':');
    push_digits(out, secs % 60, 2);
    out.push(b'.');
    push_digits(out, rest % 1_000_000, 6);
}

/// `[-]HH:MM:SS.ffffff` (as `convert::format_time`).
fn push_time(out: &mut Vec<u8>, micros: i64) {
    if micros < 0 {
        out.push(b'-');
    }
    let abs = micros.unsigned_abs();
    let secs = abs / 1_000_000;
    if secs / 3600 < 100 {
        let mut text = *b"00:00:00.000000";
        text[0..2].copy_from_slice(&digits::<2>(secs / 3600));
        text[3..5].copy_from_slice(&digits::<2>(secs / 60 % 60));
        text[6..8].copy_from_slice(&digits::<2>(secs % 60));
        text[9..15].copy_from_slice(&digits::<6>(abs % 1_000_000));
        out.extend_from_slice(&text);
        return;
    }
    push_digits(out, secs / 3600, 2);
    out.push(b':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(b':');
    push_digits(out, secs % 60, 2);
    out.push(b'.');
    push_digits(out, abs % 1_000_000, 6);
}

/// The decimal text of an unscaled big-endian two's-complement integer with `scale` fractional digits
/// (as `convert::decimal_to_string`), without allocating for up to 8 bytes.
fn push_decimal(out: &mut Vec<u8>, bytes: &[u8], scale: usize) {
    if bytes.is_empty() || bytes.len() > 8 || scale > 20 {
        out.extend_from_slice(decimal_to_string(bytes, scale).as_bytes());
        return;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut buf = [fill; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    let v = i64::from_be_bytes(buf);
    if v < 0 {
        out.push(b'-');
    }
    let abs = v.unsigned_abs();
    if scale == 0 {
        push_digits(out, abs, 1);
        return;
    }
    let pow = 10u64.checked_pow(scale as u32);
    match pow {
        Some(pow) => {
            push_digits(out, abs / pow, 1);
            out.push(b'.');
            push_digits(out, abs % pow, scale);
        }
        None => {
            // scale of 20: every u64 has fewer digits than the scale.
            out.extend_from_slice(b"0.");
            push_digits(out, abs, scale);
        }
    }
}

struct Renderer<'s> {
    scratch: &'s mut Scratch,
}

impl Renderer<'_> {
    fn value(&mut self, node: &Node, input: &mut Input<'_>, out: &mut Vec<u8>) -> R<()> {
        match node {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Boolean => match input.take(1)?[0] {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                _ => return Err(Bail),
            },
            Node::Int => write_json(out, &input.int()?),
            Node::Long(kind) => {
                let v = input.long()?;
                match kind {
                    LongKind::Plain => write_json(out, &v),
                    LongKind::Bit => write_json(out, &(v as u64)),
                    LongKind::Time => {
                        out.push(b'"');
                        push_time(out, v);
                        out.push(b'"');
                    }
                }
            }
            Node::Float => {
                let b = input.take(4)?;
                write_float(out, f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            Node::Double => {
                let b: [u8; 8] = input.take(8)?.try_into().map_err(|_| Bail)?;
                write_float(out, f64::from_le_bytes(b));
            }
            Node::Bytes => write_base64(out, input.bytes()?),
            Node::Fixed(n) => write_base64(out, input.take(*n)?),
            Node::Str { json: false } => write_utf8_string(out, input.bytes()?)?,
            Node::Str { json: true } => write_str(out, input.str()?, true),
            Node::Enum { symbols, json } => {
                let i = input.int()?;
                let symbol = usize::try_from(i)
                    .ok()
                    .and_then(|i| symbols.get(i))
                    .ok_or(Bail)?;
                write_str(out, symbol, *json);
            }
            Node::Union(variants) => {
                let i = input.long()?;
                let v = usize::try_from(i)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or(Bail)?;
                self.value(v, input, out)?;
            }
            Node::Array(items) => {
                out.push(b'[');
                let mut first = true;
                loop {
                    let n = input.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        self.value(items, input, out)?;
                    }
                }
                out.push(b']');
            }
            Node::Map(values) => self.map(values, input, out)?,
            Node::Record(r) => self.record(r, input, out)?,
            Node::Date => {
                let days = input.int()?;
                out.push(b'"');
                if days == ZERO_DATE_DAYS {
                    out.extend_from_slice(b"0000-00-00");
                } else {
                    let (y, m, d) = civil_from_days(i64::from(days));
                    push_year(out, y);
                    out.push(b'-');
                    push_digits(out, u64::from(m), 2);
                    out.push(b'-');
                    push_digits(out, u64::from(d), 2);
                }
                out.push(b'"');
            }
            Node::Decimal {
                scale,
                bigint,
                fixed,
            } => {
                let bytes = match fixed {
                    None => input.bytes()?,
                    Some(n) => input.take(*n)?,
                };
                let start = out.len();
                out.push(b'"');
                push_decimal(out, bytes, *scale);
                if *bigint
                    && let Some(n) = std::str::from_utf8(&out[start + 1..])
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                {
                    out.truncate(start);
                    write_json(out, &n);
                } else {
                    out.push(b'"');
                }
            }
            Node::TimeMillis => {
                out.push(b'"');
                push_time(out, i64::from(input.int()?) * 1000);
                out.push(b'"');
            }
            Node::TimeMicros => {
                out.push(b'"');
                push_time(out, input.long()?);
                out.push(b'"');
            }
            Node::TimestampMillis => {
                out.push(b'"');
                push_datetime(out, input.long()?.saturating_mul(1000));
                out.extend_from_slice(b"Z\"");
            }
            Node::TimestampMicros => {
                out.push(b'"');
                push_datetime(out, input.long()?);
                out.extend_from_slice(b"Z\"");
            }
            Node::LocalTimestampMillis => {
                out.push(b'"');
                push_datetime(out, input.long()?.saturating_mul(1000));
                out.push(b'"');
            }
            Node::LocalTimestampMicros => {
                let v = input.long()?;
                out.push(b'"');
                if v == ZERO_DATETIME_MICROS {
                    out.extend_from_slice(b"0000-00-00T00:00:00.000000");
                } else {
                    push_datetime(out, v);
                }
                out.push(b'"');
            }
            Node::Nanos => write_json(out, &input.long()?),
        }
        Ok(())
    }

    fn record(&mut self, r: &Record, input: &mut Input<'_>, out: &mut Vec<u8>) -> R<()> {
        out.push(b'{');
        if r.in_order {
            for (pos, (i, key)) in r.order.iter().enumerate() {
                if pos > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                self.value(&r.fields[*i], input, out)?;
            }
        } else {
            // Keys are written sorted, fields come in schema order: find each field's bytes first.
            let base = self.scratch.spans.len();
            for f in &r.fields {
                let start = input.pos;
                input.skip(f)?;
                self.scratch.spans.push((start, input.pos));
            }
            let end = input.pos;
            for (pos, (i, key)) in r.order.iter().enumerate() {
                if pos > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                let (start, stop) = self.scratch.spans[base + i];
                input.pos = start;
                self.value(&r.fields[*i], input, out)?;
                if input.pos != stop {
                    return Err(Bail);
                }
            }
            self.scratch.spans.truncate(base);
            input.pos = end;
        }
        out.push(b'}');
        Ok(())
    }

    /// A map: keys sorted, the last value of a repeated key wins (as apache-avro's `HashMap` and the
    /// old renderer's `BTreeMap`). The databus mapping has no maps, so this path allocates.
    fn map(&mut self, values: &Node, input: &mut Input<'_>, out: &mut Vec<u8>) -> R<()> {
        // (key, rendered value's range in `text`), in the order read.
        let mut entries: Vec<(&str, usize, usize)> = Vec::new();
        let mut text = Vec::new();
        let data = input.data;
        loop {
            let n = input.block()?;
            if n == 0 {
                break;
            }
            for _ in 0..n {
                let key_len = input.len()?;
                let key_start = input.pos;
                input.take(key_len)?;
                let key =
                    std::str::from_utf8(&data[key_start..key_start + key_len]).map_err(|_| Bail)?;
                let start = text.len();
                self.value(values, input, &mut text)?;
                entries.push((key, start, text.len()));
            }
        }
        // Stable: among equal keys the last one read stays last.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        out.push(b'{');
        let mut first = true;
        for (i, (key, start, end)) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_json(out, key);
            out.push(b':');
            out.extend_from_slice(&text[*start..*end]);
        }
        out.push(b'}');
        Ok(())
    }

    /// The whole payload as one datum (trailing bytes: not this schema's datum).
    fn payload(&mut self, root: &Node, payload: &[u8], out: &mut Vec<u8>) -> R<()> {
        let mut input = Input {
            data: payload,
            pos: 0,
        };
        self.value(root, &mut input, out)?;
        if input.pos == payload.len() {
            Ok(())
        } else {
            Err(Bail)
        }
    }
}

fn write_key(out: &mut Vec<u8>, key: KeyRef<'_>) {
    match key {
        KeyRef::Int(v) => write_json(out, &v),
        KeyRef::Bytes(b) => {
            out.extend_from_slice(b"{\"bytes_base64\":");
            write_base64(out, b);
            out.push(b'}');
        }
        KeyRef::None => out.extend_from_slice(b"null"),
    }
}

/// The header fields after `key` (`opcode`, `partition`), in key order.
fn write_opcode_partition(out: &mut Vec<u8>, view: &EventView<'_>) {
    out.extend_from_slice(b",\"opcode\":\"");
    out.extend_from_slice(databus_core::json::opcode_name(view.opcode()).as_bytes());
    out.extend_from_slice(b"\",\"partition\":");
    write_json(out, &view.partition().get());
}

/// The header fields after `payload` (`schema`, `scn`, `source`, `timestamp_ns`) and the closing brace.
fn write_header_tail(out: &mut Vec<u8>, view: &EventView<'_>) {
    out.extend_from_slice(b",\"schema\":\"");
    let id = view.schema().get();
    for shift in (0..16).rev() {
        out.push(b"0123456789abcdef"[((id >> (shift * 4)) & 0xf) as usize]);
    }
    out.extend_from_slice(b"\",\"scn\":");
    write_json(out, &view.scn().get());
    out.extend_from_slice(b",\"source\":");
    write_json(out, &view.source().get());
    out.extend_from_slice(b",\"timestamp_ns\":");
    write_json(out, &view.timestamp_ns());
    out.push(b'}');
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Appends the JSON document of one event to `out` (no newline): the same bytes as
/// `serde_json::to_writer(out, &decode::event_json(view, writer))`, with `writer` the event's plan or
/// why there is none.
pub fn write_event_json(
    view: &EventView<'_>,
    writer: std::result::Result<&JsonPlan, String>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let direct = match &writer {
        Ok(plan) if !view.opcode().is_table_event() => match (&plan.root, view.opcode()) {
            (_, op) if op.is_control() => {
                write_header_only(view, out);
                true
            }
            (Some(root), op) => SCRATCH
                .with(|s| {
                    let mut scratch = s.borrow_mut();
                    let mut r = Renderer {
                        scratch: &mut scratch,
                    };
                    let done = write_data_event(&mut r, root, op, view, out);
                    if done.is_err() {
                        scratch.spans.clear();
                    }
                    done
                })
                .is_ok(),
            (None, _) => false,
        },
        Err(_) if view.opcode().is_control() => {
            write_header_only(view, out);
            true
        }
        _ => false,
    };
    if !direct {
        out.truncate(start);
        let json = crate::decode::event_json(view, writer.map(|p| p.writer.as_ref()));
        write_json(out, &json);
    }
}

fn write_header_only(view: &EventView<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"key\":");
    write_key(out, view.key());
    write_opcode_partition(out, view);
    write_header_tail(out, view);
}

fn write_data_event(
    r: &mut Renderer<'_>,
    root: &Node,
    op: Opcode,
    view: &EventView<'_>,
    out: &mut Vec<u8>,
) -> R<()> {
    // Once per event: the header fields take under 256 bytes, and the payload's text is about twice its
    // Avro binary (more only with many escapes; `Vec` then grows as usual).
    out.reserve(256 + 2 * view.payload().len());
    out.push(b'{');
    if op == Opcode::Update
        && let Some(before) = view.before_image()
    {
        out.extend_from_slice(b"\"before\":");
        r.payload(root, before, out)?;
        out.push(b',');
    }
    out.extend_from_slice(b"\"key\":");
    write_key(out, view.key());
    write_opcode_partition(out, view);
    out.extend_from_slice(b",\"payload\":");
    r.payload(root, view.row_image(), out)?;
    write_header_tail(out, view);
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::write_utf8_string;

    /// `write_utf8_string` against `serde_json` (the old renderer's string writer): the same bytes
    /// for UTF-8 input, an error exactly when `std::str::from_utf8` refuses the bytes.
    fn same_as_serde_json(bytes: &[u8]) {
        let mut new = b"prefix".to_vec();
        let done = write_utf8_string(&mut new, bytes);
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                assert!(done.is_ok(), "{bytes:?} refused");
                let mut old = b"prefix".to_vec();
                serde_json::to_writer(&mut old, s).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&new),
                    String::from_utf8_lossy(&old),
                    "{bytes:?}"
                );
                assert_eq!(new, old, "{bytes:?}");
            }
            Err(_) => assert!(done.is_err(), "{bytes:?} is not UTF-8 but was accepted"),
        }
    }

    #[test]
    fn every_byte_value_at_every_offset_of_the_eight_byte_chunks() {
        for b in 0..=255u8 {
            same_as_serde_json(&[b]);
            same_as_serde_json(&[b; 9]);
            for len in 1..=17 {
                for at in 0..len {
                    let mut s = b"abcdefghijklmnopq"[..len].to_vec();
                    s[at] = b;
                    same_as_serde_json(&s);
                }
            }
        }
    }

    #[test]
    fn every_char_and_every_two_byte_start() {
        let mut s = String::new();
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            s.clear();
            s.push_str("abcdefg");
            s.push(c);
            s.push('"');
            same_as_serde_json(s.as_bytes());
        }
        // Every pair of bytes, followed by continuation bytes and by ASCII: the UTF-8 checks of
        // every lead byte against every second byte, truncated sequences included.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                same_as_serde_json(&[a, b]);
                same_as_serde_json(&[a, b, 0x80, 0x80, b'x']);
                same_as_serde_json(&[a, b, 0xbf, 0xbf]);
                same_as_serde_json(&[b'x', a, b, 0x80]);
            }
        }
    }

    /// Mostly valid UTF-8 with escapes and multi-byte characters, sometimes damaged.
    fn text_bytes() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            any::<String>(),
            "[a-z ]{0,40}",
            "[\"\\\\/\u{0}-\u{1f}\u{7f}é日本😀a-z]{0,40}",
            "([a-z]{0,12}[\"\\\\\n\t\u{1}é]){0,8}",
        ];
        (
            text,
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            proptest::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(text, damage, cut)| {
                let mut bytes = text.into_bytes();
                if let (Some((at, b)), false) = (damage, bytes.is_empty()) {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
                if let (Some(at), false) = (cut, bytes.is_empty()) {
                    bytes.truncate(at.index(bytes.len()));
                }
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn generated_strings_render_as_serde_json(bytes in text_bytes()) {
            same_as_serde_json(&bytes);
        }

        #[test]
        fn random_bytes_are_refused_exactly_when_not_utf8(
            bytes in proptest::collection::vec(any::<u8>(), 0..40)
        ) {
            same_as_serde_json(&bytes);
        }
    }
}
