//! Realistic sample rows for benchmarks: the `shop.orders` table the serving, JSON and client-library
//! benchmarks share (8 columns: integers, strings of 0-200 characters with escapes and non-ASCII text,
//! NULLs, DATETIME(6), DECIMAL(12,2), DOUBLE) and a seeded generator of its rows, so every benchmark
//! measures the same shape of data.

use crate::{Column, ColumnType, TableSchema, Value};

/// A seeded xorshift64 generator: the same seed gives the same rows on every machine.
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    /// The generator for `seed` (zero is replaced, xorshift never leaves it).
    pub fn new(seed: u64) -> SampleRng {
        SampleRng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The `shop.orders` table of the sample rows.
pub fn orders_table() -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "orders".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("customer", ColumnType::Int { unsigned: false }, false),
            Column::new("qty", ColumnType::Int { unsigned: false }, false),
            Column::new(
                "note",
                ColumnType::Text {
                    max_chars: Some(80),
                },
                false,
            ),
            Column::new("created", ColumnType::DateTime { fsp: 6 }, false),
            Column::new(
                "amount",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                false,
            ),
            Column::new("ratio", ColumnType::Double, false),
            Column::new("comment", ColumnType::Text { max_chars: None }, true),
        ],
        primary_key: vec![0],
    }
}

/// A row of [`orders_table`] with key `id`; a quarter of the comments are NULL.
pub fn orders_row(rng: &mut SampleRng, id: i64) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Int(rng.below(100_000) as i64),
        Value::Int(1 + rng.below(20) as i64),
        Value::Text(text(rng, 0, 80)),
        Value::DateTime {
            year: 2024 + rng.below(3) as u16,
            month: 1 + rng.below(12) as u8,
            day: 1 + rng.below(28) as u8,
            hour: rng.below(24) as u8,
            minute: rng.below(60) as u8,
            second: rng.below(60) as u8,
            micros: rng.below(1_000_000) as u32,
        },
        Value::Decimal(format!("{}.{:02}", rng.below(1_000_000), rng.below(100))),
        Value::Double(rng.below(1 << 40) as f64 / 7.0),
        if rng.below(4) == 0 {
            Value::Null
        } else {
            Value::Text(text(rng, 10, 200))
        },
    ]
}

/// Words, some needing JSON escapes or multi-byte UTF-8, joined to `min..=max` characters.
fn text(rng: &mut SampleRng, min: u64, max: u64) -> String {
    const WORDS: &[&str] = &[
        "order",
        "shipped",
        "to",
        "Zürich",
        "\"express\"",
        "customer",
        "note:",
        "gift",
        "wrap",
        "naïve",
        "日本",
        "back\\slash",
        "line",
        "a",
        "delivery",
        "window",
    ];
    let len = min + rng.below(max - min + 1);
    let mut s = String::new();
    while (s.chars().count() as u64) < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s.chars().take(len as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rows_fit_their_table_and_repeat_for_a_seed() {
        let registry = crate::SchemaRegistry::in_memory();
        let schema = registry.register(&orders_table()).unwrap();
        let (mut a, mut b) = (SampleRng::new(7), SampleRng::new(7));
        let mut out = Vec::new();
        for id in 0..200 {
            let row = orders_row(&mut a, id);
            assert_eq!(row, orders_row(&mut b, id));
            out.clear();
            schema.encode(&row, &mut out).unwrap();
        }
    }
}
