//! The direct JSON renderer (`json_text`) against the old one (`decode::event_json` through apache-avro
//! values and `serde_json`), which is the oracle: for every event the two must write the same bytes.
//!
//! - tables of the databus mapping with random columns of every type and random rows (strings needing
//!   escapes, non-ASCII, NaN and infinite floats, zero dates, decimals of every width, NULLs), as
//!   upserts, deletes and updates with before images, with every kind of key;
//! - generic Avro schemas the mapping does not produce (nested records, maps, arrays of unions, enums,
//!   fixed, decimals on fixed, time-millis, nested unions) with values generated from the schema;
//! - those payloads with a byte changed or cut, and random bytes (the error path: the direct renderer
//!   must hand those to the old one).

use std::sync::Arc;

use apache_avro::Schema;
use databus_core::{Event, EventView, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};
use databus_serde_formats::avro_schema::avro_schema;
use databus_serde_formats::decode::event_json;
use databus_serde_formats::json_text::{JsonPlan, write_event_json};
use databus_serde_formats::{Column, ColumnType, RowEncoder, TableSchema, Value};
use proptest::prelude::*;

/// Old and new rendering of one event with `payload` and `plan`'s schema; panics with both on a
/// difference.
fn check(plan: &JsonPlan, opcode: Opcode, key: Key, payload: Vec<u8>) -> (String, String) {
    let event = Event {
        scn: Scn::new(77),
        opcode,
        source: SourceId::new(3),
        partition: PartitionId::new(2),
        timestamp_ns: 1_700_000_000_123_456_789,
        schema: SchemaId::new(0x00ab_cdef_0123_4567),
        key,
        payload,
    };
    let frame = event.to_frame();
    let (view, _) = EventView::parse(&frame).unwrap();
    let old = serde_json::to_string(&event_json(&view, Ok(plan.writer()))).unwrap();
    let mut new = Vec::new();
    write_event_json(&view, Ok(plan), &mut new);
    (old, String::from_utf8(new).unwrap())
}

fn opcode_and_payload(opcode: u8, after: Vec<u8>, before: Vec<u8>) -> (Opcode, Vec<u8>) {
    match opcode % 3 {
        0 => (Opcode::Upsert, after),
        1 => (Opcode::Delete, after),
        _ => {
            let mut out = Vec::new();
            databus_core::event::update_payload(&after, &before, &mut out);
            (Opcode::Update, out)
        }
    }
}

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        any::<i64>().prop_map(Key::Int),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Key::Bytes),
        Just(Key::None),
    ]
}

fn text_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z ]{0,40}",
        any::<String>(),
        "[\"\\\\/\u{0}-\u{1f}\u{7f}é日本😀a]{0,12}",
        Just(String::new()),
    ]
    .boxed()
}

fn column_type_strategy() -> BoxedStrategy<ColumnType> {
    use ColumnType as T;
    let names = proptest::collection::vec(text_strategy(), 1..5).prop_map(|mut v| {
        v.sort();
        v.dedup();
        v
    });
    prop_oneof![
        any::<bool>().prop_map(|unsigned| T::TinyInt { unsigned }),
        any::<bool>().prop_map(|unsigned| T::SmallInt { unsigned }),
        any::<bool>().prop_map(|unsigned| T::MediumInt { unsigned }),
        any::<bool>().prop_map(|unsigned| T::Int { unsigned }),
        any::<bool>().prop_map(|unsigned| T::BigInt { unsigned }),
        (1u8..=65)
            .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
            .prop_map(|(precision, scale)| T::Decimal { precision, scale }),
        Just(T::Float),
        Just(T::Double),
        Just(T::Date),
        (0u8..=6).prop_map(|fsp| T::Time { fsp }),
        (0u8..=6).prop_map(|fsp| T::DateTime { fsp }),
        (0u8..=6).prop_map(|fsp| T::Timestamp { fsp }),
        Just(T::Year),
        Just(T::Text { max_chars: None }),
        Just(T::Text {
            max_chars: Some(64)
        }),
        Just(T::Char { chars: 10 }),
        Just(T::Bytes { max_bytes: None }),
        names.clone().prop_map(|values| T::Enum { values }),
        names.prop_map(|members| T::Set { members }),
        (1u8..=64).prop_map(|width| T::Bit { width }),
        Just(T::Json),
    ]
    .boxed()
}

fn float_strategy() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        (-1e6f64..1e6),
    ]
    .boxed()
}

fn value_strategy(ty: &ColumnType, nullable: bool) -> BoxedStrategy<Value> {
    use ColumnType as T;
    let int = |lo: i64, hi: i64| (lo..=hi).prop_map(Value::Int).boxed();
    let uint = |hi: u64| (0..=hi).prop_map(Value::UInt).boxed();
    let value = match ty {
        T::TinyInt { unsigned: false } => int(-128, 127),
        T::TinyInt { unsigned: true } => uint(255),
        T::SmallInt { unsigned: false } => int(-32_768, 32_767),
        T::SmallInt { unsigned: true } => uint(65_535),
        T::MediumInt { unsigned: false } => int(-8_388_608, 8_388_607),
        T::MediumInt { unsigned: true } => uint(16_777_215),
        T::Int { unsigned: false } => int(i32::MIN.into(), i32::MAX.into()),
        T::Int { unsigned: true } => uint(u32::MAX.into()),
        T::BigInt { unsigned: false } => any::<i64>().prop_map(Value::Int).boxed(),
        T::BigInt { unsigned: true } => any::<u64>().prop_map(Value::UInt).boxed(),
        T::Decimal { precision, scale } => {
            let (p, s) = (usize::from(*precision), usize::from(*scale));
            (
                any::<bool>(),
                proptest::collection::vec(0u8..10, p..=p),
                0..=p,
            )
                .prop_map(move |(negative, digits, keep)| {
                    // Some leading digits zeroed: small values of wide columns too.
                    let digits: String = digits
                        .iter()
                        .enumerate()
                        .map(|(i, d)| char::from(b'0' + if i < p - keep { 0 } else { *d }))
                        .collect();
                    let (i, f) = digits.split_at(p - s);
                    let i = if i.is_empty() { "0" } else { i };
                    let sign = if negative { "-" } else { "" };
                    Value::Decimal(if f.is_empty() {
                        format!("{sign}{i}")
                    } else {
                        format!("{sign}{i}.{f}")
                    })
                })
                .boxed()
        }
        T::Float => float_strategy()
            .prop_map(|f| Value::Float(f as f32))
            .boxed(),
        T::Double => float_strategy().prop_map(Value::Double).boxed(),
        T::Date => prop_oneof![
            (0u16..=9999, 1u8..=12, 1u8..=28).prop_map(|(year, month, day)| Value::Date {
                year,
                month,
                day
            }),
            Just(Value::Date {
                year: 0,
                month: 0,
                day: 0
            }),
        ]
        .boxed(),
        T::Time { .. } => (any::<bool>(), 0u64..=3_020_399_999_999)
            .prop_map(|(negative, micros)| Value::Time { negative, micros })
            .boxed(),
        T::DateTime { .. } => prop_oneof![
            (
                (0u16..=9999, 1u8..=12, 1u8..=28),
                (0u8..24, 0u8..60, 0u8..60, 0u32..1_000_000)
            )
                .prop_map(|((year, month, day), (hour, minute, second, micros))| {
                    Value::DateTime {
                        year,
                        month,
                        day,
                        hour,
                        minute,
                        second,
                        micros,
                    }
                }),
            Just(Value::DateTime {
                year: 0,
                month: 0,
                day: 0,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0
            }),
        ]
        .boxed(),
        T::Timestamp { .. } => prop_oneof![
            (0i64..=253_402_300_799_999_999).prop_map(Value::Timestamp),
            any::<i64>().prop_map(Value::Timestamp),
        ]
        .boxed(),
        T::Year => prop_oneof![Just(Value::Int(0)), (1901i64..=2155).prop_map(Value::Int)].boxed(),
        T::Text { .. } | T::Char { .. } => text_strategy().prop_map(Value::Text).boxed(),
        T::Bytes { .. } => proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(Value::Bytes)
            .boxed(),
        T::Enum { values } => (0..=values.len() as u16).prop_map(Value::Enum).boxed(),
        T::Set { members } => (0..(1u64 << members.len())).prop_map(Value::Set).boxed(),
        T::Bit { width } => {
            let max = if *width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            (0..=max).prop_map(Value::Bit).boxed()
        }
        T::Json => prop_oneof![
            Just(r#"{"b": [1, 2.50, "x\u00e9"], "a": null, "c": {"z": 1e3, "y": -0}}"#.to_owned()),
            Just("[1, 2, 3]".to_owned()),
            Just("12345678901234567890123".to_owned()),
            text_strategy(),
        ]
        .prop_map(Value::Json)
        .boxed(),
    };
    if nullable {
        prop_oneof![1 => Just(Value::Null), 4 => value].boxed()
    } else {
        value
    }
}

fn column_name_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z_]{1,8}",
        Just("id".to_owned()),
        Just("order-items".to_owned()),
        Just("2fa".to_owned()),
        Just("naïve".to_owned()),
        Just("日本".to_owned()),
        Just("quote\"back\\slash".to_owned()),
        Just("tab\tnew\nline\u{1}".to_owned()),
        Just("Z".to_owned()),
    ]
    .boxed()
}

/// A table of 1..12 columns (unique names) and two rows of it (after and before image).
fn table_and_rows() -> impl Strategy<Value = (TableSchema, Vec<Value>, Vec<Value>)> {
    proptest::collection::vec(
        (
            column_name_strategy(),
            column_type_strategy(),
            any::<bool>(),
        ),
        1..12,
    )
    .prop_flat_map(|cols| {
        let mut seen = std::collections::BTreeSet::new();
        let columns: Vec<Column> = cols
            .into_iter()
            .enumerate()
            .map(|(i, (name, ty, nullable))| {
                let name = if seen.insert(name.clone()) {
                    name
                } else {
                    format!("{name}{i}")
                };
                seen.insert(name.clone());
                Column::new(&name, ty, nullable)
            })
            .collect();
        let row = |columns: &[Column]| {
            columns
                .iter()
                .map(|c| value_strategy(&c.column_type, c.nullable))
                .collect::<Vec<_>>()
        };
        let table = TableSchema {
            database: "shop db".into(),
            table: "orders".into(),
            columns: columns.clone(),
            primary_key: vec![0],
        };
        (Just(table), row(&columns), row(&columns))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Every row of every table of the mapping renders to the same bytes, whatever the opcode and key;
    /// the plan is direct for every table of the mapping.
    #[test]
    fn mapping_rows_render_as_the_old_renderer(
        (table, after, before) in table_and_rows(),
        opcode in any::<u8>(),
        key in key_strategy(),
    ) {
        let schema = Arc::new(avro_schema(&table).unwrap());
        let plan = JsonPlan::new(schema);
        prop_assert!(plan.is_direct());
        let encoder = RowEncoder::new(&table).unwrap();
        let after = encoder.encode_to_vec(&after).unwrap();
        let before = encoder.encode_to_vec(&before).unwrap();
        let (opcode, payload) = opcode_and_payload(opcode, after, before);
        let (old, new) = check(&plan, opcode, key, payload);
        prop_assert!(!old.contains("decode_error"), "{old}");
        prop_assert_eq!(old, new);
    }

    /// The same payloads with one byte changed or cut off: both renderers agree, also on errors.
    #[test]
    fn damaged_payloads_render_as_the_old_renderer(
        (table, after, _before) in table_and_rows(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let schema = Arc::new(avro_schema(&table).unwrap());
        let plan = JsonPlan::new(schema);
        let mut payload = RowEncoder::new(&table).unwrap().encode_to_vec(&after).unwrap();
        if !payload.is_empty() {
            let at = at % payload.len();
            if cut {
                payload.truncate(at);
            } else {
                payload[at] = byte;
            }
        }
        let (old, new) = check(&plan, Opcode::Upsert, Key::Int(1), payload);
        prop_assert_eq!(old, new);
    }

    /// Generic Avro schemas with generated values, then damaged: same bytes, errors included.
    #[test]
    fn generic_schemas_render_as_the_old_renderer(
        which in 0usize..GENERIC_SCHEMAS.len(),
        seed in any::<u64>(),
        damage in proptest::option::of((any::<usize>(), any::<u8>(), any::<bool>())),
    ) {
        let schema = Arc::new(Schema::parse_str(GENERIC_SCHEMAS[which]).unwrap());
        let plan = JsonPlan::new(schema.clone());
        let mut rng = Rng(seed | 1);
        let mut payload = Vec::new();
        generate(&schema, &mut rng, &mut payload, 0);
        if let Some((at, byte, cut)) = damage && !payload.is_empty() {
            let at = at % payload.len();
            if cut {
                payload.truncate(at);
            } else {
                payload[at] = byte;
            }
        }
        let (old, new) = check(&plan, Opcode::Upsert, Key::Int(5), payload);
        // The generator writes valid data: undamaged, it decodes (so the direct path is exercised).
        prop_assert!(damage.is_some() || !old.contains("decode_error"), "{old}");
        prop_assert_eq!(plan.is_direct(), which < 4);
        prop_assert_eq!(old, new);
    }

    /// Random bytes against the every-type table's schema.
    #[test]
    fn random_bytes_render_as_the_old_renderer(
        (table, _after, _before) in table_and_rows(),
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let plan = JsonPlan::new(Arc::new(avro_schema(&table).unwrap()));
        let (old, new) = check(&plan, Opcode::Upsert, Key::None, bytes);
        prop_assert_eq!(old, new);
    }
}

/// Schemas the mapping does not produce but an Avro writer might.
const GENERIC_SCHEMAS: &[&str] = &[
    r#"{"type":"record","name":"r","fields":[
        {"name":"m","type":{"type":"map","values":["null","long","string"]}},
        {"name":"a","type":{"type":"array","items":{"type":"record","name":"inner","fields":[
            {"name":"z","type":"double"},{"name":"b","type":"boolean"},{"name":"e","type":{"type":"enum","name":"color","symbols":["RED","GREEN","BLUE"]}}]}}},
        {"name":"f","type":{"type":"fixed","name":"f4","size":4}},
        {"name":"d","type":{"type":"fixed","name":"f9","size":9,"logicalType":"decimal","precision":20,"scale":3}},
        {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
        {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
        {"name":"tsm","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"ltm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
        {"name":"ns","type":{"type":"long","logicalType":"timestamp-nanos"}},
        {"name":"Aa","type":"float"}
    ]}"#,
    r#"{"type":"record","name":"outer","fields":[
        {"name":"nested","type":{"type":"record","name":"n1","fields":[
            {"name":"y","type":["null",{"type":"array","items":["null","int","bytes"]}]},
            {"name":"x","type":{"type":"map","values":{"type":"map","values":"int"}}}]}},
        {"name":"b","type":["string","null"], "databus.type":"json"},
        {"name":"a","type":["null","long"], "databus.type":"time(3)"},
        {"name":"c","type":"long", "databus.type":"bit(64)"},
        {"name":"dd","type":{"type":"bytes","logicalType":"decimal","precision":40,"scale":10}},
        {"name":"big","type":{"type":"bytes","logicalType":"decimal","precision":20,"scale":0}, "databus.type":"bigint unsigned"}
    ]}"#,
    r#"{"type":"array","items":{"type":"map","values":"string"}}"#,
    r#"["null","string",{"type":"int","logicalType":"date"}]"#,
    r#"{"type":"record","name":"refs","fields":[
        {"name":"p","type":{"type":"record","name":"pt","fields":[{"name":"x","type":"int"}]}},
        {"name":"q","type":"pt"}]}"#,
    r#"{"type":"record","name":"dup","fields":[
        {"name":"a","type":"int","databus.column":"same"},
        {"name":"b","type":"int","databus.column":"same"}]}"#,
];

/// xorshift64: deterministic values from proptest's seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn random_long(rng: &mut Rng) -> i64 {
    match rng.below(4) {
        0 => rng.next() as i64,
        1 => rng.below(2000) as i64 - 1000,
        2 => i64::from(rng.next() as i32),
        _ => (rng.below(4_000_000_000_000_000) as i64) - 1_000_000_000_000_000,
    }
}

fn random_bytes(rng: &mut Rng, out: &mut Vec<u8>, text: bool) {
    const PIECES: &[&str] = &[
        "a", "é", "\"", "\\", "\n", "\u{1}", "日本", "😀", "key", "x",
    ];
    let n = rng.below(6);
    let mut s = Vec::new();
    for _ in 0..n {
        if text {
            s.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize].as_bytes());
        } else {
            s.push(rng.next() as u8);
        }
    }
    put_long(out, s.len() as i64);
    out.extend_from_slice(&s);
}

/// Appends a valid datum of `schema` (named references resolved by name for the `refs` schema only).
fn generate(schema: &Schema, rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    use apache_avro::schema::{DecimalSchema, InnerDecimalSchema};
    match schema {
        Schema::Null => {}
        Schema::Boolean => out.push(rng.below(2) as u8),
        Schema::Int | Schema::Date | Schema::TimeMillis | Schema::Enum(_) => {
            let v = match schema {
                Schema::Enum(e) => rng.below(e.symbols.len() as u64) as i64,
                _ => i64::from(random_long(rng) as i32),
            };
            put_long(out, v);
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => put_long(out, random_long(rng)),
        Schema::Float => out.extend_from_slice(&(rng.next() as u32).to_le_bytes()),
        Schema::Double => out.extend_from_slice(&rng.next().to_le_bytes()),
        Schema::Bytes
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Bytes,
            ..
        }) => random_bytes(rng, out, false),
        Schema::String => random_bytes(rng, out, true),
        Schema::Fixed(f)
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(f),
            ..
        }) => {
            for _ in 0..f.size {
                out.push(rng.next() as u8);
            }
        }
        Schema::Union(u) => {
            let i = rng.below(u.variants().len() as u64);
            put_long(out, i as i64);
            generate(&u.variants()[i as usize], rng, out, depth + 1);
        }
        Schema::Array(a) => {
            let blocks = if depth > 3 { 0 } else { rng.below(3) };
            for _ in 0..blocks {
                let n = 1 + rng.below(3) as i64;
                if rng.below(2) == 0 {
                    put_long(out, n);
                    for _ in 0..n {
                        generate(&a.items, rng, out, depth + 1);
                    }
                } else {
                    let mut body = Vec::new();
                    for _ in 0..n {
                        generate(&a.items, rng, &mut body, depth + 1);
                    }
                    put_long(out, -n);
                    put_long(out, body.len() as i64);
                    out.extend_from_slice(&body);
                }
            }
            put_long(out, 0);
        }
        Schema::Map(m) => {
            let blocks = if depth > 3 { 0 } else { rng.below(3) };
            for _ in 0..blocks {
                let n = 1 + rng.below(3) as i64;
                put_long(out, n);
                for _ in 0..n {
                    // Few distinct keys: repeated keys happen.
                    let key = ["k", "a", "é", "Z"][rng.below(4) as usize];
                    put_long(out, key.len() as i64);
                    out.extend_from_slice(key.as_bytes());
                    generate(&m.types, rng, out, depth + 1);
                }
            }
            put_long(out, 0);
        }
        Schema::Record(r) => {
            for f in &r.fields {
                generate(&f.schema, rng, out, depth + 1);
            }
        }
        Schema::Ref { .. } => put_long(out, random_long(rng) as i32 as i64),
        other => panic!("no generator for {other:?}"),
    }
}
