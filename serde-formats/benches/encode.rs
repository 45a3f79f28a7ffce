//! Encode rate of ~200-byte rows: `RowEncoder` vs apache-avro's own path (build a `types::Value` record,
//! then `to_avro_datum`, and the same with a reused `GenericDatumWriter`), in one run.
//!
//! Run: `cargo bench -p databus-serde-formats --bench encode` (optional argument: seconds per case,
//! default 3).

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use databus_serde_formats::avro_schema::avro_schema;
use databus_serde_formats::{Column, ColumnType, Row, RowEncoder, TableSchema, Value, event_key};

fn table() -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "orders".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("customer_id", ColumnType::Int { unsigned: false }, false),
            Column::new("quantity", ColumnType::Int { unsigned: false }, false),
            Column::new(
                "title",
                ColumnType::Text {
                    max_chars: Some(64),
                },
                false,
            ),
            Column::new("placed_at", ColumnType::DateTime { fsp: 0 }, false),
            Column::new(
                "total",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                false,
            ),
            Column::new("weight", ColumnType::Double, false),
            Column::new("note", ColumnType::Text { max_chars: None }, true),
        ],
        primary_key: vec![0],
    }
}

fn rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let i64v = i as i64;
            vec![
                Value::Int(1_000_000_000 + i64v),
                Value::Int(i64v % 50_000),
                Value::Int(i64v % 17),
                Value::Text(format!("order {i:08} for a customer with a longish title text..")),
                Value::DateTime {
                    year: 2024,
                    month: (i % 12 + 1) as u8,
                    day: (i % 28 + 1) as u8,
                    hour: (i % 24) as u8,
                    minute: (i % 60) as u8,
                    second: (i % 60) as u8,
                    micros: 0,
                },
                Value::Decimal(format!("{}.{:02}", i % 100_000, i % 100)),
                Value::Double(i as f64 * 0.25),
                if i % 4 == 0 {
                    Value::Null
                } else {
                    Value::Text(format!(
                        "note {i}: deliver to the back door, ring twice, leave the parcel with the neighbour at number 12 if nobody is at home, thanks {i:06}"
                    ))
                },
            ]
        })
        .collect()
}

/// The apache-avro value of a row of `table()` (conversion is part of that path's cost).
fn to_avro(row: &Row) -> Avro {
    let field = |name: &str, v: Avro| (name.to_owned(), v);
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        _ => 0,
    };
    let text = |v: &Value| match v {
        Value::Text(s) => s.clone(),
        _ => String::new(),
    };
    let micros = match &row[4] {
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            // Days from civil (same as the crate's, inlined for the comparison path).
            let (y, m, d) = (i64::from(*year), i64::from(*month), i64::from(*day));
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
            let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
            (days * 86_400 + i64::from(*hour) * 3600 + i64::from(*minute) * 60 + i64::from(*second))
                * 1_000_000
                + i64::from(*micros)
        }
        _ => 0,
    };
    let total = match &row[5] {
        Value::Decimal(s) => {
            let unscaled: i64 = s.replace('.', "").parse().unwrap_or(0);
            let bytes = unscaled.to_be_bytes();
            apache_avro::Decimal::from(&bytes[3..]) // 5 bytes, as DECIMAL(10,2) needs
        }
        _ => apache_avro::Decimal::from([0u8]),
    };
    let weight = match &row[6] {
        Value::Double(v) => *v,
        _ => 0.0,
    };
    let note = match &row[7] {
        Value::Null => Avro::Union(0, Box::new(Avro::Null)),
        v => Avro::Union(1, Box::new(Avro::String(text(v)))),
    };
    Avro::Record(vec![
        field("id", Avro::Long(int(&row[0]))),
        field("customer_id", Avro::Int(int(&row[1]) as i32)),
        field("quantity", Avro::Int(int(&row[2]) as i32)),
        field("title", Avro::String(text(&row[3]))),
        field("placed_at", Avro::LocalTimestampMicros(micros)),
        field("total", Avro::Decimal(total)),
        field("weight", Avro::Double(weight)),
        field("note", note),
    ])
}

/// Runs `f` over the rows repeatedly for about `budget`; returns rows per second.
fn rate(rows: &[Row], budget: Duration, mut f: impl FnMut(&Row)) -> f64 {
    // Warm-up pass.
    rows.iter().for_each(&mut f);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        for row in rows {
            f(row);
        }
        done += rows.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(secs);
    let table = table();
    let schema = avro_schema(&table).unwrap();
    let encoder = RowEncoder::new(&table).unwrap();
    let rows = rows(10_000);

    // Both paths must produce the same bytes.
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let mut total_bytes = 0usize;
    for row in &rows {
        let ours = encoder.encode_to_vec(row).unwrap();
        let theirs = writer.write_value_to_vec(to_avro(row)).unwrap();
        assert_eq!(ours, theirs, "paths disagree on {row:?}");
        total_bytes += ours.len();
    }
    let avg = total_bytes as f64 / rows.len() as f64;

    let mut buf = Vec::with_capacity(1 << 20);
    let ours = rate(&rows, budget, |row| {
        if buf.len() > (1 << 20) - 512 {
            buf.clear();
        }
        encoder.encode(black_box(row), &mut buf).unwrap();
    });
    let ours_key = rate(&rows, budget, |row| {
        buf.clear();
        encoder.encode(black_box(row), &mut buf).unwrap();
        black_box(event_key(&table, row).unwrap());
    });
    #[allow(deprecated)]
    let avro_datum = rate(&rows, budget, |row| {
        black_box(apache_avro::to_avro_datum(&schema, to_avro(black_box(row))).unwrap());
    });
    let avro_writer = rate(&rows, budget, |row| {
        black_box(writer.write_value_to_vec(to_avro(black_box(row))).unwrap());
    });

    println!(
        "row: 8 columns, {avg:.1} bytes of Avro on average, {} distinct rows, {secs}s per case",
        rows.len()
    );
    println!(
        "RowEncoder::encode                      {:>12.0} rows/s  {:>7.1} MB/s",
        ours,
        ours * avg / 1e6
    );
    println!(
        "RowEncoder::encode + event_key          {:>12.0} rows/s",
        ours_key
    );
    println!(
        "apache-avro Value + to_avro_datum       {:>12.0} rows/s  ratio {:.1}x",
        avro_datum,
        ours / avro_datum
    );
    println!(
        "apache-avro Value + reused DatumWriter  {:>12.0} rows/s  ratio {:.1}x",
        avro_writer,
        ours / avro_writer
    );
}
