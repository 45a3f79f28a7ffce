//! Decoded values checked against MariaDB's own decoder: the row images the connector decodes from a
//! binlog equal what `mariadb-binlog --verbose` prints for the same binlog, column by column, for a
//! sample of every column type — seeded random values, NULLs and extremes; inserts, updates (both
//! images) and deletes. So the value checks do not rest on our decoder alone.
//!
//! `mariadb-binlog`'s rendering: integers signed, with the unsigned reading in parentheses when
//! negative (`-1 (255)`); DECIMAL as exact text; FLOAT with `%g` (6 significant digits), DOUBLE with
//! `%.20g`; DATE `'YYYY:MM:DD'`; TIME and DATETIME quoted with their fractional digits; TIMESTAMP as
//! epoch seconds with the fractional digits; strings and bytes quoted, bytes below 0x20 as `\xNN`, all
//! others raw; ENUM as its index; SET and BIT as `b'<bits>'` (SET over whole bytes).

use crate::common;

use std::path::{Path, PathBuf};

use databus_connectors::{ChangeKind, StartPosition};
use databus_serde_formats::model::{ColumnType, Value};
use databus_testkit::MariaDbOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::*;

const TABLE: &str = "CREATE TABLE vb.t (
  id INT PRIMARY KEY, ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, yr YEAR,
  dec1 DECIMAL(20,6), dec0 DECIMAL(5,0), f FLOAT, d DOUBLE,
  dt DATE, tm TIME(6), tm0 TIME, dtm DATETIME(6), dtm0 DATETIME, ts TIMESTAMP(3) NULL,
  c CHAR(10), vc VARCHAR(100), vb VARBINARY(16), bl BLOB,
  e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(12)
) CHARACTER SET utf8mb4";

/// A string literal's body: backslashes and quotes escaped.
fn sql_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "''")
}

/// The non-key column values of a random row, as SQL literals (a quarter of them NULL).
fn random_values(rng: &mut StdRng) -> Vec<String> {
    let texts = [
        "",
        "ab",
        "café",
        "a'b",
        "back\\slash",
        "tab\there",
        "nl\nx",
        "😀 ✓ 𝄞",
        "\"q\"",
    ];
    let mut v: Vec<String> = vec![
        rng.random_range(-128..=127i64).to_string(),
        rng.random_range(0..=255u64).to_string(),
        rng.random_range(-32768..=32767i64).to_string(),
        rng.random_range(0..=16_777_215u64).to_string(),
        rng.random_range(i32::MIN..=i32::MAX).to_string(),
        rng.random_range(0..=u32::MAX).to_string(),
        rng.random::<i64>().to_string(),
        rng.random::<u64>().to_string(),
        rng.random_range(1901..=2155).to_string(),
        format!(
            "{}{}.{:06}",
            if rng.random_bool(0.5) { "-" } else { "" },
            rng.random_range(0..99_999_999_999_999u64),
            rng.random_range(0..1_000_000)
        ),
        rng.random_range(-99_999..=99_999).to_string(),
        format!("{}", rng.random_range(-1_000_000..1_000_000) as f32 / 64.0),
        format!("{:e}", rng.random::<f64>() * 1e10 - 5e9),
        format!(
            "'{:04}-{:02}-{:02}'",
            rng.random_range(1000..=9999),
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        ),
        format!(
            "'{}{}:{:02}:{:02}.{:06}'",
            if rng.random_bool(0.3) { "-" } else { "" },
            rng.random_range(0..=838),
            rng.random_range(0..60),
            rng.random_range(0..60),
            rng.random_range(0..1_000_000)
        ),
        format!(
            "'{:02}:{:02}:{:02}'",
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60)
        ),
        format!(
            "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
            rng.random_range(1000..=9999),
            rng.random_range(1..=12),
            rng.random_range(1..=28),
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60),
            rng.random_range(0..1_000_000)
        ),
        format!(
            "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}'",
            rng.random_range(1000..=9999),
            rng.random_range(1..=12),
            rng.random_range(1..=28),
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60)
        ),
        format!(
            "FROM_UNIXTIME({}.{:03})",
            rng.random_range(1..2_000_000_000u64),
            rng.random_range(0..1000)
        ),
        format!("'{}'", sql_text(texts[rng.random_range(0..texts.len())])),
        format!(
            "'{} {}'",
            sql_text(texts[rng.random_range(0..texts.len())]),
            rng.random_range(0..1000)
        ),
        format!(
            "x'{}'",
            (0..rng.random_range(0..16))
                .map(|_| format!("{:02X}", rng.random::<u8>()))
                .collect::<String>()
        ),
        format!(
            "x'{}'",
            (0..rng.random_range(0..300))
                .map(|_| format!("{:02X}", rng.random::<u8>()))
                .collect::<String>()
        ),
        format!("'{}'", ["a", "b", "c"][rng.random_range(0..3)]),
        format!(
            "'{}'",
            ["", "x", "y", "z", "x,z", "x,y,z"][rng.random_range(0..6)]
        ),
        format!("b'{:b}'", rng.random_range(0..4096)),
    ];
    for value in &mut v {
        if rng.random_range(0..4) == 0 {
            *value = "NULL".into();
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_values_equal_mariadb_binlog_verbose() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&["CREATE DATABASE vb", TABLE]).await.unwrap();
    let mut c = started(config(&url, &["vb"]), StartPosition::Now).await;
    // The extremes, then seeded random rows, updates and deletes.
    let mut statements = vec![
        "SET time_zone = '+00:00'".to_owned(),
        "INSERT INTO vb.t VALUES (1, -128, 255, -32768, 16777215, -2147483648, 4294967295, \
         -9223372036854775808, 18446744073709551615, 2155, -99999999999999.999999, 99999, \
         -3.402823466e38, -1.7976931348623157e308, '9999-12-31', '-838:59:59.999999', '838:59:59', \
         '9999-12-31 23:59:59.999999', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999', \
         'abcdefghij', '', x'00', x'', 'c', 'x,y,z', b'111111111111')"
            .to_owned(),
    ];
    let mut rng = StdRng::seed_from_u64(14);
    for id in 2..=60 {
        statements.push(format!(
            "INSERT INTO vb.t VALUES ({id}, {})",
            random_values(&mut rng).join(", ")
        ));
    }
    let columns = [
        "ti", "tiu", "si", "miu", "i", "iu", "bi", "biu", "yr", "dec1", "dec0", "f", "d", "dt",
        "tm", "tm0", "dtm", "dtm0", "ts", "c", "vc", "vb", "bl", "e", "st", "bt",
    ];
    for _ in 0..20 {
        let id = rng.random_range(1..=60);
        let values = random_values(&mut rng);
        let set: Vec<String> = columns
            .iter()
            .zip(&values)
            .filter(|_| rng.random_bool(0.4))
            .map(|(c, v)| format!("{c} = {v}"))
            .collect();
        if !set.is_empty() {
            statements.push(format!(
                "UPDATE vb.t SET {} WHERE id = {id}",
                set.join(", ")
            ));
        }
    }
    statements.push("DELETE FROM vb.t WHERE id % 7 = 0".into());
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    db.exec_tx(&refs).await.unwrap();

    let t = next_transaction(&mut c).await;
    let schema = t.changes[0].table.clone();
    let ours: Vec<(ChangeKind, Image, Image)> = t
        .changes
        .iter()
        .map(|ch| {
            let render = |row: &Option<Vec<Value>>| {
                row.as_ref()
                    .map(|r| {
                        r.iter()
                            .zip(&schema.columns)
                            .map(|(v, col)| render(v, &col.column_type))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            (ch.kind, render(&ch.before), render(&ch.after))
        })
        .collect();
    assert!(ours.len() > 70, "{} row changes", ours.len());

    let out = std::process::Command::new("mariadb-binlog")
        .args(["--verbose", "--base64-output=DECODE-ROWS"])
        .args(binlogs(db.dir()))
        .output()
        .expect("run mariadb-binlog (MariaDB's client tools are installed with the server)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse_verbose(&out.stdout);
    assert_eq!(theirs.len(), ours.len(), "row changes decoded by each");
    let mut compared = 0;
    for (i, ((kind, before, after), (their_kind, their_before, their_after))) in
        ours.iter().zip(&theirs).enumerate()
    {
        assert_eq!(kind, their_kind, "row change {i}");
        for (ours, theirs, image) in [
            (before, their_before, "before"),
            (after, their_after, "after"),
        ] {
            assert_eq!(ours.len(), theirs.len(), "row change {i} {image} image");
            for (col, (a, b)) in ours.iter().zip(theirs).enumerate() {
                let column = &schema.columns[col];
                assert!(
                    same(a, b, &column.column_type),
                    "row change {i} ({kind:?}) {image} image, column {}: ours {:?}, mariadb-binlog {:?}",
                    column.name,
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                );
                compared += 1;
            }
        }
    }
    eprintln!(
        "{compared} values compared with mariadb-binlog over {} row changes",
        ours.len()
    );
}

/// Our value in `mariadb-binlog --verbose`'s text.
fn render(value: &Value, ty: &ColumnType) -> Vec<u8> {
    let quoted = |bytes: &[u8]| {
        let mut out = vec![b'\''];
        for &b in bytes {
            if b < 0x20 {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
        }
        out.push(b'\'');
        out
    };
    let fraction = |micros: u64, fsp: u8| {
        if fsp == 0 {
            String::new()
        } else {
            let digits = format!("{micros:06}");
            format!(".{}", &digits[..fsp as usize])
        }
    };
    let text = match (value, ty) {
        (Value::Null, _) => "NULL".to_owned(),
        (Value::Int(v), _) => v.to_string(),
        (Value::UInt(v), _) => v.to_string(),
        (Value::Decimal(d), _) => d.clone(),
        (Value::Float(f), _) => f.to_string(),
        (Value::Double(d), _) => d.to_string(),
        (Value::Date { year, month, day }, _) => format!("'{year:04}:{month:02}:{day:02}'"),
        (Value::Time { negative, micros }, ColumnType::Time { fsp }) => {
            let secs = micros / 1_000_000;
            format!(
                "'{}{:02}:{:02}:{:02}{}'",
                if *negative { "-" } else { "" },
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                fraction(micros % 1_000_000, *fsp)
            )
        }
        (
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            },
            ColumnType::DateTime { fsp },
        ) => format!(
            "'{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{}'",
            fraction(u64::from(*micros), *fsp)
        ),
        (Value::Timestamp(micros), ColumnType::Timestamp { fsp }) => format!(
            "{}{}",
            micros.div_euclid(1_000_000),
            fraction(micros.rem_euclid(1_000_000) as u64, *fsp)
        ),
        (Value::Text(s), _) => return quoted(s.as_bytes()),
        (Value::Bytes(b), _) => return quoted(b),
        (Value::Enum(i), _) => i.to_string(),
        (Value::Set(bits), ColumnType::Set { members }) => {
            let width = members.len().div_ceil(8) * 8;
            format!("b'{bits:0width$b}'")
        }
        (Value::Bit(bits), ColumnType::Bit { width }) => {
            let width = *width as usize;
            format!("b'{bits:0width$b}'")
        }
        (other, ty) => panic!("no rendering of {other:?} for {ty:?}"),
    };
    text.into_bytes()
}

/// Whether our rendering `ours` says the same as mariadb-binlog's `theirs` for a column of `ty`.
fn same(ours: &[u8], theirs: &[u8], ty: &ColumnType) -> bool {
    let theirs_text = String::from_utf8_lossy(theirs);
    let theirs_text = theirs_text.trim_end();
    let ours_text = String::from_utf8_lossy(ours);
    if ours_text == "NULL" || theirs_text == "NULL" {
        return ours_text == theirs_text;
    }
    match ty {
        // Signed, then the unsigned reading in parentheses when the signed one is negative.
        ColumnType::TinyInt { unsigned: true }
        | ColumnType::SmallInt { unsigned: true }
        | ColumnType::MediumInt { unsigned: true }
        | ColumnType::Int { unsigned: true }
        | ColumnType::BigInt { unsigned: true } => {
            let unsigned = theirs_text
                .split_once(" (")
                .map_or(theirs_text, |(_, u)| u.trim_end_matches(')'));
            unsigned == ours_text
        }
        ColumnType::TinyInt { .. }
        | ColumnType::SmallInt { .. }
        | ColumnType::MediumInt { .. }
        | ColumnType::Int { .. }
        | ColumnType::BigInt { .. } => theirs_text.split(' ').next() == Some(ours_text.as_ref()),
        // `%g`: 6 significant digits.
        ColumnType::Float => {
            let (a, b): (f64, f64) = (ours_text.parse().unwrap(), theirs_text.parse().unwrap());
            a == b || ((a - b) / a).abs() < 5e-6
        }
        // `%.20g` reads back to the same double.
        ColumnType::Double => {
            ours_text.parse::<f64>().unwrap() == theirs_text.parse::<f64>().unwrap()
        }
        _ => ours == theirs,
    }
}

type Image = Vec<Vec<u8>>;

/// The row changes of `vb.t` in `mariadb-binlog --verbose` output: (kind, before, after) with each
/// column's text as printed.
fn parse_verbose(out: &[u8]) -> Vec<(ChangeKind, Image, Image)> {
    let mut changes: Vec<(ChangeKind, Image, Image)> = Vec::new();
    let mut in_after = false;
    for line in out.split(|b| *b == b'\n') {
        let Some(rest) = line.strip_prefix(b"### ") else {
            continue;
        };
        if rest.starts_with(b"INSERT INTO `vb`.`t`") {
            changes.push((ChangeKind::Insert, Vec::new(), Vec::new()));
        } else if rest.starts_with(b"UPDATE `vb`.`t`") {
            changes.push((ChangeKind::Update, Vec::new(), Vec::new()));
        } else if rest.starts_with(b"DELETE FROM `vb`.`t`") {
            changes.push((ChangeKind::Delete, Vec::new(), Vec::new()));
        } else if rest == b"SET" {
            in_after = true;
        } else if rest == b"WHERE" {
            in_after = false;
        } else if let Some(column) = rest.strip_prefix(b"  @") {
            let at = column.iter().position(|b| *b == b'=').expect("@N=value");
            let value = column[at + 1..].to_vec();
            let change = changes.last_mut().expect("a value after its statement");
            if in_after {
                change.2.push(value);
            } else {
                change.1.push(value);
            }
        }
    }
    changes
}

/// The server's binlog files, in order.
fn binlogs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mariadb-bin.0"))
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
