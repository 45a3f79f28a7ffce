//! Decoding: JSON rendering of every type, schema evolution with reader schemas, serde targets, and
//! malformed payloads.

use apache_avro::types::Value as Avro;
use databus_serde_formats::avro_schema::avro_schema;
use databus_serde_formats::decode::{decode_json, decode_serde, decode_value};
use databus_serde_formats::{Column, ColumnType, Error, RowEncoder, TableSchema, Value};
use serde_json::json;

fn table(columns: Vec<Column>) -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "items".into(),
        columns,
        primary_key: vec![0],
    }
}

fn encode(table: &TableSchema, row: &[Value]) -> Vec<u8> {
    RowEncoder::new(table)
        .unwrap()
        .encode_to_vec(&row.to_vec())
        .unwrap()
}

#[test]
fn json_rendering_of_every_type() {
    use ColumnType as T;
    let t = table(vec![
        Column::new("id", T::BigInt { unsigned: true }, false),
        Column::new("small", T::TinyInt { unsigned: false }, false),
        Column::new(
            "price",
            T::Decimal {
                precision: 65,
                scale: 30,
            },
            false,
        ),
        Column::new(
            "neg",
            T::Decimal {
                precision: 5,
                scale: 3,
            },
            false,
        ),
        Column::new("f", T::Float, false),
        Column::new("d", T::Double, true),
        Column::new("day", T::Date, false),
        Column::new("zero day", T::Date, false),
        Column::new("dur", T::Time { fsp: 6 }, false),
        Column::new("local", T::DateTime { fsp: 6 }, false),
        Column::new("zero local", T::DateTime { fsp: 0 }, false),
        Column::new("at", T::Timestamp { fsp: 6 }, false),
        Column::new("y", T::Year, false),
        Column::new(
            "name",
            T::Text {
                max_chars: Some(64),
            },
            false,
        ),
        Column::new("blob", T::Bytes { max_bytes: None }, false),
        Column::new(
            "state",
            T::Enum {
                values: vec!["new".into(), "in stock".into()],
            },
            false,
        ),
        Column::new(
            "tags",
            T::Set {
                members: vec!["a".into(), "b".into(), "c".into()],
            },
            false,
        ),
        Column::new("flags", T::Bit { width: 64 }, false),
        Column::new("doc", T::Json, false),
        Column::new("missing", T::Text { max_chars: None }, true),
    ]);
    let row = vec![
        Value::UInt(u64::MAX),
        Value::Int(-128),
        Value::Decimal(format!("-{}.{}", "9".repeat(35), "0".repeat(29) + "1")),
        Value::Decimal("-0.05".into()),
        Value::Float(1.5),
        Value::Double(-2.25),
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
            second: 59,
            micros: 5,
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
        Value::Text("😀 ü".into()),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::Enum(2),
        Value::Set(0b101),
        Value::Bit(u64::MAX),
        Value::Json(r#"{"k":[1,2]}"#.into()),
        Value::Null,
    ];
    let schema = avro_schema(&t).unwrap();
    let json = decode_json(&encode(&t, &row), &schema, None).unwrap();
    assert_eq!(
        json,
        json!({
            "id": 18_446_744_073_709_551_615u64,
            "small": -128,
            "price": format!("-{}.{}", "9".repeat(35), "0".repeat(29) + "1"),
            "neg": "-0.050",
            "f": 1.5,
            "d": -2.25,
            "day": "2024-02-29",
            "zero day": "0000-00-00",
            "dur": "-838:59:59.999999",
            "local": "1969-12-31T23:59:59.000005",
            "zero local": "0000-00-00T00:00:00.000000",
            "at": "2023-11-14T22:13:20.123456Z",
            "y": 2155,
            "name": "😀 ü",
            "blob": "AAEC/w==",
            "state": "in stock",
            "tags": ["a", "c"],
            "flags": 18_446_744_073_709_551_615u64,
            "doc": {"k": [1, 2]},
            "missing": null,
        })
    );
}

#[test]
fn evolution_add_drop_and_widen_with_reader_schemas() {
    let v1 = table(vec![
        Column::new("id", ColumnType::Int { unsigned: false }, false),
        Column::new("name", ColumnType::Text { max_chars: None }, false),
        Column::new("old", ColumnType::Int { unsigned: false }, false),
    ]);
    // ALTER: drop `old`, widen id to BIGINT, add a nullable column.
    let v2 = table(vec![
        Column::new("id", ColumnType::BigInt { unsigned: false }, false),
        Column::new("name", ColumnType::Text { max_chars: None }, false),
        Column::new("note", ColumnType::Text { max_chars: None }, true),
    ]);
    let (s1, s2) = (avro_schema(&v1).unwrap(), avro_schema(&v2).unwrap());
    let p1 = encode(
        &v1,
        &[Value::Int(7), Value::Text("a".into()), Value::Int(9)],
    );
    let p2 = encode(
        &v2,
        &[
            Value::Int(8),
            Value::Text("b".into()),
            Value::Text("n".into()),
        ],
    );

    // Each payload with its own writer schema.
    assert_eq!(
        decode_json(&p1, &s1, None).unwrap(),
        json!({"id": 7, "name": "a", "old": 9})
    );
    assert_eq!(
        decode_json(&p2, &s2, None).unwrap(),
        json!({"id": 8, "name": "b", "note": "n"})
    );
    // The old payload read as the new shape.
    assert_eq!(
        decode_json(&p1, &s1, Some(&s2)).unwrap(),
        json!({"id": 7, "name": "a", "note": null})
    );
    let value = decode_value(&p1, &s1, Some(&s2)).unwrap();
    let Avro::Record(fields) = value else {
        panic!("{value:?}")
    };
    assert_eq!(fields[0], ("id".to_owned(), Avro::Long(7)));
    // The new payload read as the old shape fails: `old` has no default.
    assert!(decode_value(&p2, &s2, Some(&s1)).is_err());
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Item {
    id: i64,
    name: String,
    note: Option<String>,
    price: apache_avro::Decimal,
}

#[test]
fn typed_serde_decoding() {
    let t = table(vec![
        Column::new("id", ColumnType::BigInt { unsigned: false }, false),
        Column::new("name", ColumnType::Text { max_chars: None }, false),
        Column::new("note", ColumnType::Text { max_chars: None }, true),
        Column::new(
            "price",
            ColumnType::Decimal {
                precision: 6,
                scale: 2,
            },
            false,
        ),
    ]);
    let schema = avro_schema(&t).unwrap();
    let payload = encode(
        &t,
        &[
            Value::Int(-3),
            Value::Text("x".into()),
            Value::Null,
            Value::Decimal("12.34".into()),
        ],
    );
    let item: Item = decode_serde(&payload, &schema, None).unwrap();
    assert_eq!(item.id, -3);
    assert_eq!(item.name, "x");
    assert_eq!(item.note, None);
    assert_eq!(item.price, apache_avro::Decimal::from([0x04, 0xd2]));
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let t = table(vec![
        Column::new("id", ColumnType::BigInt { unsigned: false }, false),
        Column::new("name", ColumnType::Text { max_chars: None }, true),
    ]);
    let schema = avro_schema(&t).unwrap();
    let good = encode(&t, &[Value::Int(1), Value::Text("abc".into())]);
    let mut trailing = good.clone();
    trailing.push(0);
    let err = decode_value(&trailing, &schema, None).unwrap_err();
    assert!(
        matches!(err, Error::Decode { .. }) && err.to_string().contains("after the datum"),
        "{err}"
    );
    for cut in 0..good.len() {
        let r = decode_value(&good[..cut], &schema, None);
        assert!(r.is_err(), "prefix of {cut} bytes: {r:?}");
    }
    // A union branch that does not exist, a huge string length.
    assert!(decode_value(&[0x02, 0x08], &schema, None).is_err());
    assert!(decode_value(&[0x02, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f], &schema, None).is_err());
}

fn all_types_table() -> TableSchema {
    use ColumnType as T;
    table(vec![
        Column::new("a", T::BigInt { unsigned: true }, false),
        Column::new(
            "b",
            T::Decimal {
                precision: 65,
                scale: 30,
            },
            true,
        ),
        Column::new("c", T::Date, true),
        Column::new("d", T::Time { fsp: 6 }, false),
        Column::new("e", T::DateTime { fsp: 6 }, true),
        Column::new("f", T::Timestamp { fsp: 6 }, false),
        Column::new("g", T::Text { max_chars: None }, true),
        Column::new(
            "h",
            T::Set {
                members: vec!["x".into(), "y".into()],
            },
            false,
        ),
        Column::new("i", T::Bit { width: 64 }, true),
        Column::new("j", T::Json, false),
        Column::new("k", T::Double, true),
        Column::new("l", T::Bytes { max_bytes: None }, false),
    ])
}

fn sample_payload(t: &TableSchema) -> Vec<u8> {
    encode(
        t,
        &[
            Value::UInt(5),
            Value::Decimal("-1.5".into()),
            Value::Date {
                year: 2020,
                month: 1,
                day: 1,
            },
            Value::Time {
                negative: false,
                micros: 1,
            },
            Value::Null,
            Value::Timestamp(-1),
            Value::Text("t".into()),
            Value::Set(3),
            Value::Bit(9),
            Value::Json("[1]".into()),
            Value::Double(0.5),
            Value::Bytes(vec![1, 2]),
        ],
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the decoders (errors are fine).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let t = all_types_table();
        let schema = avro_schema(&t).unwrap();
        let _ = decode_value(&bytes, &schema, None);
        let _ = decode_json(&bytes, &schema, Some(&schema));
    }

    /// Valid payloads with one byte changed or cut never panic either.
    #[test]
    fn mutated_payloads_never_panic(at in 0usize..1000, byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
        let t = all_types_table();
        let schema = avro_schema(&t).unwrap();
        let mut payload = sample_payload(&t);
        let at = at % payload.len();
        if cut {
            payload.truncate(at);
            proptest::prop_assert!(decode_json(&payload, &schema, None).is_err());
        } else {
            payload[at] = byte;
            let _ = decode_json(&payload, &schema, None);
        }
    }
}

#[test]
fn sample_payload_decodes() {
    let t = all_types_table();
    let schema = avro_schema(&t).unwrap();
    let json = decode_json(&sample_payload(&t), &schema, None).unwrap();
    assert_eq!(json["b"], "-1.500000000000000000000000000000");
    assert_eq!(json["f"], "1969-12-31T23:59:59.999999Z");
    assert_eq!(json["h"], json!(["x", "y"]));
    assert_eq!(json["l"], "AQI=");
}
