//! Byte compatibility of [`RowEncoder`] with apache-avro: for every column type, including extremes and
//! NULLs, what we encode equals what apache-avro encodes for the independently built expected value, and
//! apache-avro's decoder reads it back as that value against the generated schema.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use databus_serde_formats::avro_schema::{avro_schema, field_names};
use databus_serde_formats::{Column, ColumnType, RowEncoder, TableSchema, Value};
use num_bigint::BigInt;
use proptest::prelude::*;

/// Days since 1970-01-01, counted year by year (a reference independent of the crate's formula).
fn reference_days(year: i64, month: u8, day: u8) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0i64;
    if year >= 1970 {
        for y in 1970..year {
            days += if leap(y) { 366 } else { 365 };
        }
    } else {
        for y in year..1970 {
            days -= if leap(y) { 366 } else { 365 };
        }
    }
    let months = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += months[..usize::from(month - 1)].iter().sum::<i64>();
    days + i64::from(day) - 1
}

/// Avro decimal bytes sign-extended to the width apache-avro's resolution demands for `precision`.
fn decimal_bytes(unscaled: &str, precision: u8) -> Avro {
    let n: BigInt = unscaled.parse().unwrap();
    let minimal = n.to_signed_bytes_be();
    let len = (1..)
        .find(|&len: &i32| {
            (2.0_f64.powi(8 * len - 1) - 1.0).log10().floor() >= f64::from(precision)
        })
        .unwrap() as usize;
    let fill = if n.sign() == num_bigint::Sign::Minus {
        0xff
    } else {
        0
    };
    let mut bytes = vec![fill; len - minimal.len()];
    bytes.extend_from_slice(&minimal);
    Avro::Decimal(apache_avro::Decimal::from(bytes))
}

/// The apache-avro value a column value must encode as, built without the crate's conversions.
fn expected(column_type: &ColumnType, value: &Value) -> Avro {
    use ColumnType as T;
    let int = |v: &Value| match v {
        Value::Int(i) => i128::from(*i),
        Value::UInt(u) => i128::from(*u),
        other => panic!("not an integer: {other:?}"),
    };
    match (column_type, value) {
        (T::TinyInt { .. } | T::SmallInt { .. } | T::MediumInt { .. } | T::Year, v) => {
            Avro::Int(int(v) as i32)
        }
        (T::Int { unsigned: false }, v) => Avro::Int(int(v) as i32),
        (T::Int { unsigned: true } | T::BigInt { unsigned: false }, v) => Avro::Long(int(v) as i64),
        (T::BigInt { unsigned: true }, v) => decimal_bytes(&int(v).to_string(), 20),
        (T::Decimal { precision, scale }, Value::Decimal(text)) => {
            let (neg, body) = text
                .strip_prefix('-')
                .map_or((false, &text[..]), |b| (true, b));
            let (i, f) = body.split_once('.').unwrap_or((body, ""));
            let mut digits = format!("{i}{f}");
            digits.extend(std::iter::repeat_n('0', usize::from(*scale) - f.len()));
            let digits = digits.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            decimal_bytes(
                &format!("{}{digits}", if neg { "-" } else { "" }),
                *precision,
            )
        }
        (T::Float, Value::Float(v)) => Avro::Float(*v),
        (T::Double, Value::Double(v)) => Avro::Double(*v),
        (T::Date, Value::Date { year, month, day }) => {
            if *month == 0 || *day == 0 {
                Avro::Date(i32::MIN)
            } else {
                Avro::Date(reference_days(i64::from(*year), *month, *day) as i32)
            }
        }
        (T::Time { .. }, Value::Time { negative, micros }) => Avro::Long(if *negative {
            -(*micros as i64)
        } else {
            *micros as i64
        }),
        (
            T::DateTime { .. },
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
            if *month == 0 || *day == 0 {
                Avro::LocalTimestampMicros(i64::MIN)
            } else {
                let days = reference_days(i64::from(*year), *month, *day);
                let secs = days * 86_400
                    + i64::from(*hour) * 3600
                    + i64::from(*minute) * 60
                    + i64::from(*second);
                Avro::LocalTimestampMicros(secs * 1_000_000 + i64::from(*micros))
            }
        }
        (T::Timestamp { .. }, Value::Timestamp(v)) => Avro::TimestampMicros(*v),
        (T::Text { .. } | T::Char { .. }, Value::Text(s))
        | (T::Json, Value::Json(s) | Value::Text(s)) => Avro::String(s.clone()),
        (T::Bytes { .. }, Value::Bytes(b)) => Avro::Bytes(b.clone()),
        (T::Enum { values }, Value::Enum(i)) => Avro::String(if *i == 0 {
            String::new()
        } else {
            values[usize::from(*i) - 1].clone()
        }),
        (T::Enum { .. }, Value::Text(s)) => Avro::String(s.clone()),
        (T::Set { members }, Value::Set(mask)) => Avro::Array(
            members
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, m)| Avro::String(m.clone()))
                .collect(),
        ),
        (T::Bit { .. }, Value::Bit(v)) => Avro::Long(*v as i64),
        (t, v) => panic!("no expectation for {v:?} in {t:?}"),
    }
}

fn expected_record(table: &TableSchema, row: &[Value]) -> Avro {
    Avro::Record(
        field_names(table)
            .into_iter()
            .zip(table.columns.iter().zip(row))
            .map(|(name, (column, value))| {
                let v = match (column.nullable, value) {
                    (true, Value::Null) => Avro::Union(0, Box::new(Avro::Null)),
                    (true, v) => Avro::Union(1, Box::new(expected(&column.column_type, v))),
                    (false, v) => expected(&column.column_type, v),
                };
                (name, v)
            })
            .collect(),
    )
}

/// Encodes `row` with the crate and checks it against apache-avro both ways.
fn check(table: &TableSchema, row: &[Value]) -> Result<(), TestCaseError> {
    let schema: Schema = avro_schema(table).unwrap();
    let encoder = RowEncoder::new(table).unwrap();
    let mut ours = vec![0xAA]; // appending must not disturb what is already there
    encoder.encode(row, &mut ours).unwrap();
    prop_assert_eq!(ours.remove(0), 0xAA);

    let expected = expected_record(table, row);
    let theirs = GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(expected.clone())
        .unwrap();
    prop_assert_eq!(
        &ours,
        &theirs,
        "bytes differ from apache-avro's for {:?}",
        row
    );

    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let mut rest = &ours[..];
    let decoded = reader.read_value(&mut rest).unwrap();
    prop_assert!(rest.is_empty());
    prop_assert_eq!(&decoded, &expected);

    // Resolving against the same schema (the path of every reader-schema decode) accepts it too.
    let resolving = GenericDatumReader::builder(&schema)
        .reader_schema(&schema)
        .build()
        .unwrap();
    let mut rest = &ours[..];
    prop_assert_eq!(&resolving.read_value(&mut rest).unwrap(), &expected);
    Ok(())
}

fn single(column_type: ColumnType, nullable: bool) -> TableSchema {
    TableSchema {
        database: "db".into(),
        table: "t".into(),
        columns: vec![Column::new("c", column_type, nullable)],
        primary_key: vec![],
    }
}

fn check_all(column_type: ColumnType, values: &[Value]) {
    for nullable in [false, true] {
        let table = single(column_type.clone(), nullable);
        for value in values {
            check(&table, std::slice::from_ref(value)).unwrap();
        }
        if nullable {
            check(&table, &[Value::Null]).unwrap();
        }
    }
}

#[test]
fn integers_at_their_extremes() {
    use ColumnType as T;
    check_all(
        T::TinyInt { unsigned: false },
        &[Value::Int(-128), Value::Int(127), Value::UInt(0)],
    );
    check_all(
        T::TinyInt { unsigned: true },
        &[Value::UInt(0), Value::UInt(255), Value::Int(7)],
    );
    check_all(
        T::SmallInt { unsigned: false },
        &[Value::Int(-32_768), Value::Int(32_767)],
    );
    check_all(T::SmallInt { unsigned: true }, &[Value::UInt(65_535)]);
    check_all(
        T::MediumInt { unsigned: false },
        &[Value::Int(-8_388_608), Value::Int(8_388_607)],
    );
    check_all(T::MediumInt { unsigned: true }, &[Value::UInt(16_777_215)]);
    check_all(
        T::Int { unsigned: false },
        &[
            Value::Int(i32::MIN.into()),
            Value::Int(i32::MAX.into()),
            Value::Int(0),
        ],
    );
    check_all(
        T::Int { unsigned: true },
        &[Value::UInt(u32::MAX.into()), Value::UInt(0)],
    );
    check_all(
        T::BigInt { unsigned: false },
        &[Value::Int(i64::MIN), Value::Int(i64::MAX), Value::Int(-1)],
    );
    check_all(
        T::BigInt { unsigned: true },
        &[
            Value::UInt(u64::MAX),
            Value::UInt(0),
            Value::UInt(1 << 63),
            Value::Int(5),
        ],
    );
    check_all(
        T::Year,
        &[Value::Int(0), Value::Int(1901), Value::Int(2155)],
    );
}

#[test]
fn decimals_up_to_65_digits_and_negative() {
    let max65 = "9".repeat(65);
    check_all(
        ColumnType::Decimal {
            precision: 65,
            scale: 0,
        },
        &[
            Value::Decimal(max65.clone()),
            Value::Decimal(format!("-{max65}")),
            Value::Decimal("0".into()),
        ],
    );
    let frac = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    check_all(
        ColumnType::Decimal {
            precision: 65,
            scale: 30,
        },
        &[
            Value::Decimal(frac.clone()),
            Value::Decimal(format!("-{frac}")),
            Value::Decimal("-0.000000000000000000000000000001".into()),
        ],
    );
    check_all(
        ColumnType::Decimal {
            precision: 10,
            scale: 2,
        },
        &[
            Value::Decimal("-12.34".into()),
            Value::Decimal("99999999.99".into()),
            Value::Decimal("-99999999.99".into()),
            Value::Decimal("0.01".into()),
            Value::Decimal("-0.5".into()),
            Value::Decimal("7".into()),
        ],
    );
    check_all(
        ColumnType::Decimal {
            precision: 1,
            scale: 1,
        },
        &[Value::Decimal("-0.9".into())],
    );
    check_all(
        ColumnType::Decimal {
            precision: 38,
            scale: 10,
        },
        &[Value::Decimal(format!(
            "-{}.{}",
            "9".repeat(28),
            "9".repeat(10)
        ))],
    );
}

#[test]
fn floats_dates_times() {
    check_all(
        ColumnType::Float,
        &[
            Value::Float(f32::MIN),
            Value::Float(f32::MAX),
            Value::Float(-0.0),
            Value::Float(1.5),
        ],
    );
    check_all(
        ColumnType::Double,
        &[
            Value::Double(f64::MIN_POSITIVE),
            Value::Double(f64::MAX),
            Value::Double(-2.25),
        ],
    );
    let date = |year, month, day| Value::Date { year, month, day };
    check_all(
        ColumnType::Date,
        &[
            date(0, 1, 1),
            date(9999, 12, 31),
            date(1970, 1, 1),
            date(1969, 12, 31),
            date(2024, 2, 29),
            date(0, 0, 0),
            date(2024, 0, 5),
        ],
    );
    let time = |negative, micros| Value::Time { negative, micros };
    let max_time = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
    check_all(
        ColumnType::Time { fsp: 6 },
        &[
            time(true, max_time),
            time(false, max_time),
            time(false, 0),
            time(true, 1),
        ],
    );
    let dt = |year, month, day, hour, minute, second, micros| Value::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
    };
    check_all(
        ColumnType::DateTime { fsp: 6 },
        &[
            dt(1000, 1, 1, 0, 0, 0, 0),
            dt(9999, 12, 31, 23, 59, 59, 999_999),
            dt(0, 1, 1, 0, 0, 0, 0),
            dt(1969, 12, 31, 23, 59, 59, 1),
            dt(0, 0, 0, 0, 0, 0, 0),
        ],
    );
    check_all(
        ColumnType::Timestamp { fsp: 3 },
        &[
            Value::Timestamp(0),
            Value::Timestamp(i64::MIN),
            Value::Timestamp(i64::MAX),
            Value::Timestamp(1_700_000_000_123_000),
        ],
    );
}

#[test]
fn text_bytes_enum_set_bit_json() {
    check_all(
        ColumnType::Text {
            max_chars: Some(64),
        },
        &[
            Value::Text(String::new()),
            Value::Text("𝄞 😀 ü".into()),
            Value::Text("x".repeat(300)),
        ],
    );
    check_all(
        ColumnType::Bytes { max_bytes: None },
        &[
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 255, 0]),
            Value::Bytes(vec![7; 1000]),
        ],
    );
    let values: Vec<String> = vec!["in stock".into(), "".into(), "1".into(), "ünï".into()];
    check_all(
        ColumnType::Enum {
            values: values.clone(),
        },
        &[
            Value::Enum(0),
            Value::Enum(1),
            Value::Enum(4),
            Value::Text("1".into()),
        ],
    );
    let members: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
    check_all(
        ColumnType::Set { members },
        &[
            Value::Set(0),
            Value::Set(u64::MAX),
            Value::Set(1 << 63),
            Value::Set(0b101),
        ],
    );
    check_all(
        ColumnType::Bit { width: 64 },
        &[Value::Bit(u64::MAX), Value::Bit(0), Value::Bit(1 << 63)],
    );
    check_all(
        ColumnType::Bit { width: 1 },
        &[Value::Bit(1), Value::Bit(0)],
    );
    check_all(
        ColumnType::Json,
        &[
            Value::Json(r#"{"a":[1,"😀"]}"#.into()),
            Value::Json(String::new()),
            Value::Text("null".into()),
        ],
    );
}

// ---- property test over a table with every column type ----

fn every_type() -> Vec<ColumnType> {
    use ColumnType as T;
    vec![
        T::TinyInt { unsigned: false },
        T::TinyInt { unsigned: true },
        T::SmallInt { unsigned: false },
        T::SmallInt { unsigned: true },
        T::MediumInt { unsigned: false },
        T::MediumInt { unsigned: true },
        T::Int { unsigned: false },
        T::Int { unsigned: true },
        T::BigInt { unsigned: false },
        T::BigInt { unsigned: true },
        T::Decimal {
            precision: 10,
            scale: 2,
        },
        T::Decimal {
            precision: 65,
            scale: 30,
        },
        T::Decimal {
            precision: 5,
            scale: 0,
        },
        T::Float,
        T::Double,
        T::Date,
        T::Time { fsp: 6 },
        T::DateTime { fsp: 6 },
        T::Timestamp { fsp: 6 },
        T::Year,
        T::Text { max_chars: None },
        T::Char { chars: 20 },
        T::Bytes { max_bytes: None },
        T::Enum {
            values: vec!["a".into(), "b c".into(), "".into()],
        },
        T::Set {
            members: vec!["x".into(), "y".into(), "z".into()],
        },
        T::Bit { width: 64 },
        T::Bit { width: 5 },
        T::Json,
    ]
}

fn int_in(min: i64, max: i64) -> BoxedStrategy<Value> {
    prop_oneof![Just(min), Just(max), min..=max]
        .prop_map(Value::Int)
        .boxed()
}

fn uint_in(max: u64) -> BoxedStrategy<Value> {
    prop_oneof![Just(0), Just(max), 0..=max]
        .prop_map(Value::UInt)
        .boxed()
}

fn decimal(precision: u8, scale: u8) -> BoxedStrategy<Value> {
    let int_digits = usize::from(precision - scale);
    let scale = usize::from(scale);
    (
        any::<bool>(),
        proptest::collection::vec(0u8..10, 0..=int_digits),
        proptest::collection::vec(0u8..10, 0..=scale),
    )
        .prop_filter("at least one digit", |(_, i, f)| {
            !i.is_empty() || !f.is_empty()
        })
        .prop_map(|(neg, i, f)| {
            let d = |v: Vec<u8>| {
                v.into_iter()
                    .map(|x| char::from(b'0' + x))
                    .collect::<String>()
            };
            let f = d(f);
            let mut s = format!("{}{}", if neg { "-" } else { "" }, d(i));
            if !f.is_empty() {
                s.push('.');
                s.push_str(&f);
            }
            Value::Decimal(s)
        })
        .boxed()
}

fn date_parts() -> impl Strategy<Value = (u16, u8, u8)> {
    prop_oneof![
        8 => (0u16..=9999, 1u8..=12, 1u8..=28),
        1 => Just((0, 0, 0)),
        1 => Just((9999, 12, 31)),
        1 => Just((2000, 2, 29)),
    ]
}

fn value_of(column_type: &ColumnType) -> BoxedStrategy<Value> {
    use ColumnType as T;
    match column_type {
        T::TinyInt { unsigned: false } => int_in(-128, 127),
        T::TinyInt { unsigned: true } => uint_in(255),
        T::SmallInt { unsigned: false } => int_in(-32_768, 32_767),
        T::SmallInt { unsigned: true } => uint_in(65_535),
        T::MediumInt { unsigned: false } => int_in(-8_388_608, 8_388_607),
        T::MediumInt { unsigned: true } => uint_in(16_777_215),
        T::Int { unsigned: false } => int_in(i32::MIN.into(), i32::MAX.into()),
        T::Int { unsigned: true } => uint_in(u32::MAX.into()),
        T::BigInt { unsigned: false } => int_in(i64::MIN, i64::MAX),
        T::BigInt { unsigned: true } => uint_in(u64::MAX),
        T::Decimal { precision, scale } => decimal(*precision, *scale),
        T::Float => any::<f32>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Float)
            .boxed(),
        T::Double => any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Double)
            .boxed(),
        T::Date => date_parts()
            .prop_map(|(year, month, day)| Value::Date { year, month, day })
            .boxed(),
        T::Time { .. } => (any::<bool>(), 0u64..=3_020_399_999_999)
            .prop_map(|(negative, micros)| Value::Time { negative, micros })
            .boxed(),
        T::DateTime { .. } => (date_parts(), 0u8..24, 0u8..60, 0u8..60, 0u32..1_000_000)
            .prop_map(|((year, month, day), hour, minute, second, micros)| {
                let zero = month == 0;
                Value::DateTime {
                    year,
                    month,
                    day,
                    hour: if zero { 0 } else { hour },
                    minute: if zero { 0 } else { minute },
                    second: if zero { 0 } else { second },
                    micros: if zero { 0 } else { micros },
                }
            })
            .boxed(),
        T::Timestamp { .. } => any::<i64>().prop_map(Value::Timestamp).boxed(),
        T::Year => prop_oneof![Just(0i64), 1901i64..=2155]
            .prop_map(Value::Int)
            .boxed(),
        T::Text { .. } | T::Char { .. } => any::<String>().prop_map(Value::Text).boxed(),
        T::Bytes { .. } => proptest::collection::vec(any::<u8>(), 0..100)
            .prop_map(Value::Bytes)
            .boxed(),
        T::Enum { values } => (0..=values.len() as u16).prop_map(Value::Enum).boxed(),
        T::Set { members } => (0u64..(1 << members.len())).prop_map(Value::Set).boxed(),
        T::Bit { width: 64 } => any::<u64>().prop_map(Value::Bit).boxed(),
        T::Bit { width } => (0u64..(1 << width)).prop_map(Value::Bit).boxed(),
        T::Json => any::<String>().prop_map(Value::Json).boxed(),
    }
}

fn table_and_rows() -> impl Strategy<Value = (TableSchema, Vec<Vec<Value>>)> {
    proptest::collection::vec(any::<bool>(), every_type().len()).prop_flat_map(|nullable| {
        let columns: Vec<Column> = every_type()
            .into_iter()
            .zip(nullable)
            .enumerate()
            .map(|(i, (t, n))| Column::new(format!("c{i} {}", t.sql_name()), t, n))
            .collect();
        let row = columns
            .iter()
            .map(|c| {
                if c.nullable {
                    prop_oneof![1 => Just(Value::Null), 3 => value_of(&c.column_type)].boxed()
                } else {
                    value_of(&c.column_type)
                }
            })
            .collect::<Vec<_>>();
        let table = TableSchema {
            database: "prop-db".into(),
            table: "all types".into(),
            columns,
            primary_key: vec![0],
        };
        (Just(table), proptest::collection::vec(row, 1..4))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_type_matches_apache_avro((table, rows) in table_and_rows()) {
        for row in &rows {
            check(&table, row)?;
        }
    }
}
