//! Event keys: integer keys, and the tuple encoding's order preservation and unambiguity (proptest).

use std::cmp::Ordering;

use databus_core::Key;
use databus_serde_formats::{
    Column, ColumnType, Error, NoPkPolicy, TableSchema, Value, event_key, event_key_with,
};
use proptest::prelude::*;

fn bytes(key: Key) -> Vec<u8> {
    match key {
        Key::Bytes(b) => b,
        other => panic!("expected a byte key, got {other:?}"),
    }
}

#[test]
fn integer_primary_keys() {
    for (column_type, value, key) in [
        (
            ColumnType::TinyInt { unsigned: false },
            Value::Int(-128),
            -128,
        ),
        (
            ColumnType::Int { unsigned: true },
            Value::UInt(u32::MAX.into()),
            i64::from(u32::MAX),
        ),
        (
            ColumnType::BigInt { unsigned: false },
            Value::Int(i64::MIN),
            i64::MIN,
        ),
        (
            ColumnType::BigInt { unsigned: true },
            Value::UInt(u64::MAX),
            -1,
        ),
        (
            ColumnType::BigInt { unsigned: true },
            Value::UInt(1 << 63),
            i64::MIN,
        ),
        (ColumnType::BigInt { unsigned: true }, Value::Int(7), 7),
    ] {
        let table = TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: vec![Column::new("id", column_type, false)],
            primary_key: vec![0],
        };
        assert_eq!(event_key(&table, &[value]).unwrap(), Key::Int(key));
    }
    let table = TableSchema {
        database: "d".into(),
        table: "t".into(),
        columns: vec![Column::new(
            "id",
            ColumnType::BigInt { unsigned: false },
            false,
        )],
        primary_key: vec![0],
    };
    assert!(matches!(
        event_key(&table, &[Value::UInt(u64::MAX)]),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        event_key(&table, &[]),
        Err(Error::RowLength { .. })
    ));
}

#[test]
fn single_non_integer_keys_use_the_tuple_encoding() {
    let table = TableSchema {
        database: "d".into(),
        table: "t".into(),
        columns: vec![
            Column::new("x", ColumnType::Text { max_chars: None }, true),
            Column::new("day", ColumnType::Date, false),
        ],
        primary_key: vec![1],
    };
    let row = [
        Value::Null,
        Value::Date {
            year: 1970,
            month: 1,
            day: 2,
        },
    ];
    assert_eq!(bytes(event_key(&table, &row).unwrap()), [1, 0x80, 0, 0, 1]);
}

/// A composite key of every orderable kind, and the same values compared in Rust.
#[derive(Debug, Clone)]
struct Composite {
    a: i64,
    b: String,
    c: u64,
    d: f64,
    e: Vec<u8>,
    f: (bool, u64), // TIME: (negative, micros)
    g: i64,         // DECIMAL(20,4) unscaled
}

fn table() -> TableSchema {
    TableSchema {
        database: "d".into(),
        table: "t".into(),
        columns: vec![
            Column::new("a", ColumnType::BigInt { unsigned: false }, false),
            Column::new("b", ColumnType::Text { max_chars: None }, false),
            Column::new("c", ColumnType::BigInt { unsigned: true }, false),
            Column::new("d", ColumnType::Double, false),
            Column::new("e", ColumnType::Bytes { max_bytes: None }, false),
            Column::new("f", ColumnType::Time { fsp: 6 }, false),
            Column::new(
                "g",
                ColumnType::Decimal {
                    precision: 20,
                    scale: 4,
                },
                false,
            ),
        ],
        primary_key: vec![0, 1, 2, 3, 4, 5, 6],
    }
}

fn decimal_text(unscaled: i64) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let abs = unscaled.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

fn row(k: &Composite) -> Vec<Value> {
    vec![
        Value::Int(k.a),
        Value::Text(k.b.clone()),
        Value::UInt(k.c),
        Value::Double(k.d),
        Value::Bytes(k.e.clone()),
        Value::Time {
            negative: k.f.0,
            micros: k.f.1,
        },
        Value::Decimal(decimal_text(k.g)),
    ]
}

fn time_value(t: (bool, u64)) -> i64 {
    if t.0 { -(t.1 as i64) } else { t.1 as i64 }
}

fn compare(x: &Composite, y: &Composite) -> Ordering {
    x.a.cmp(&y.a)
        .then_with(|| x.b.as_bytes().cmp(y.b.as_bytes()))
        .then_with(|| x.c.cmp(&y.c))
        .then_with(|| x.d.total_cmp(&y.d))
        .then_with(|| x.e.cmp(&y.e))
        .then_with(|| time_value(x.f).cmp(&time_value(y.f)))
        .then_with(|| x.g.cmp(&y.g))
}

fn composite() -> impl Strategy<Value = Composite> {
    // Small domains so that equal prefixes (and hence later columns) are exercised often.
    (
        prop_oneof![Just(i64::MIN), Just(i64::MAX), -2i64..3],
        prop_oneof![
            Just(String::new()),
            Just("a\0".to_owned()),
            Just("a".to_owned()),
            "[a\0ü😀]{0,3}"
        ],
        prop_oneof![Just(u64::MAX), Just(1u64 << 63), 0u64..3],
        prop_oneof![
            Just(-0.5f64),
            Just(0.0),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(1e-300),
            Just(-1e300)
        ],
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255)], 0..3),
        (
            any::<bool>(),
            prop_oneof![Just(0u64), Just(1), Just(3_020_399_999_999)],
        )
            .prop_map(|(n, m)| (n && m != 0, m)),
        prop_oneof![
            Just(-99_999_999_999_999_999i64),
            Just(-1),
            Just(0),
            Just(1),
            Just(99_999_999_999_999_999)
        ],
    )
        .prop_map(|(a, b, c, d, e, f, g)| Composite {
            a,
            b,
            c,
            d,
            e,
            f,
            g,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tuple_keys_preserve_order_and_are_unambiguous(x in composite(), y in composite()) {
        let t = table();
        let kx = bytes(event_key(&t, &row(&x)).unwrap());
        let ky = bytes(event_key(&t, &row(&y)).unwrap());
        prop_assert_eq!(kx.cmp(&ky), compare(&x, &y), "{:?} vs {:?}", x, y);
    }

    #[test]
    fn full_row_keys_order_nulls_first(a in proptest::option::of(-3i64..3), b in proptest::option::of("[a\0]{0,2}"),
                                       c in proptest::option::of(-3i64..3), d in proptest::option::of("[a\0]{0,2}")) {
        let t = TableSchema {
            database: "d".into(),
            table: "t".into(),
            columns: vec![
                Column::new("a", ColumnType::Int { unsigned: false }, true),
                Column::new("b", ColumnType::Json, true),
            ],
            primary_key: vec![],
        };
        let r = |a: &Option<i64>, b: &Option<String>| vec![
            a.map_or(Value::Null, Value::Int),
            b.clone().map_or(Value::Null, Value::Json),
        ];
        let rejected = matches!(event_key(&t, &r(&a, &b)), Err(Error::NoPrimaryKey { .. }));
        prop_assert!(rejected);
        let k1 = bytes(event_key_with(&t, &r(&a, &b), NoPkPolicy::FullRow).unwrap());
        let k2 = bytes(event_key_with(&t, &r(&c, &d), NoPkPolicy::FullRow).unwrap());
        // Option orders None first, like the NULL tag.
        prop_assert_eq!(k1.cmp(&k2), (a, b.as_deref().map(str::as_bytes)).cmp(&(c, d.as_deref().map(str::as_bytes))));
    }
}
