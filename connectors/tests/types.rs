//! Every column type: the value written equals the value decoded, and the schema says what was declared.

use crate::common;

use databus_connectors::{ChangeKind, ConnectorEvent, StartPosition};
use databus_serde_formats::model::{ColumnType, Value};
use databus_testkit::MariaDbOptions;

use common::*;

const TABLE: &str = "CREATE TABLE ty.t (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  yr YEAR, dec1 DECIMAL(20,6), dec0 DECIMAL(5,0), f FLOAT, d DOUBLE,
  dt DATE, tm TIME(6), tm0 TIME, dtm DATETIME(6), ts TIMESTAMP(3) NULL, ts0 TIMESTAMP NULL,
  c CHAR(10), vc VARCHAR(100), tx TEXT, lat VARCHAR(20) CHARACTER SET latin1,
  bin BINARY(4), vb VARBINARY(10), bl BLOB,
  e ENUM('a','b','c'), st SET('x','y','z'), bt BIT(12), b1 BIT(1), j JSON,
  nn INT NOT NULL DEFAULT 0
)";

fn dt(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32) -> Value {
    Value::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips() {
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&["CREATE DATABASE ty", TABLE]).await.unwrap();
    let mut c = started(config(&url, &["ty"]), StartPosition::Now).await;

    let long_text = "ä".repeat(30_000);
    let blob: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let blob_hex: String = blob.iter().map(|b| format!("{b:02X}")).collect();
    let max_row = format!(
        "INSERT INTO ty.t VALUES (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, \
         9223372036854775807, 18446744073709551615, 2155, 99999999999999.999999, 99999, 3.5, 1.7976931348623157e308, \
         '9999-12-31', '838:59:59.999999', '838:59:59', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999', \
         '2038-01-19 03:14:07', 'abc', '😀 émoji ✓ 𝄞', '{long_text}', 'café€', x'DEADBEEF', x'00FF00', x'{blob_hex}', \
         'c', 'x,z', b'111111111111', b'1', '{{\"k\": [1, 2.5, \"s\"]}}', 7)"
    );
    db.exec_tx(&[
        "SET time_zone = '+00:00'",
        "INSERT INTO ty.t VALUES (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, \
         1901, -99999999999999.999999, -1, -1.25, -2.5e-300, '1000-01-01', '-838:59:59.999999', '-00:00:01', \
         '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000', '1970-01-01 00:00:01', '', '', '', '', \
         x'00010000', x'', x'', 'a', '', b'0', b'0', '[]', -1)",
        &max_row,
        "INSERT INTO ty.t (id) VALUES (3)",
        "INSERT INTO ty.t (id, yr, dec1) VALUES (4, 0, 0.5)",
    ])
    .await
    .unwrap();

    // The schema comes first, then the transaction.
    let schema = match next_event(&mut c).await.unwrap() {
        ConnectorEvent::SchemaChange { schema, table, .. } => {
            assert_eq!(table.to_string(), "ty.t");
            schema
        }
        other => panic!("expected a schema change, got {other:?}"),
    };
    let ty = |name: &str| {
        schema
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("column {name}"))
            .column_type
            .clone()
    };
    assert_eq!(schema.primary_key, vec![0]);
    assert!(!schema.columns[0].nullable && schema.columns[1].nullable);
    assert!(!schema.columns.last().unwrap().nullable);
    assert_eq!(ty("ti"), ColumnType::TinyInt { unsigned: false });
    assert_eq!(ty("biu"), ColumnType::BigInt { unsigned: true });
    assert_eq!(ty("miu"), ColumnType::MediumInt { unsigned: true });
    assert_eq!(
        ty("dec1"),
        ColumnType::Decimal {
            precision: 20,
            scale: 6
        }
    );
    assert_eq!(ty("tm"), ColumnType::Time { fsp: 6 });
    assert_eq!(ty("dtm"), ColumnType::DateTime { fsp: 6 });
    assert_eq!(ty("ts"), ColumnType::Timestamp { fsp: 3 });
    assert_eq!(ty("yr"), ColumnType::Year);
    assert_eq!(ty("c"), ColumnType::Char { chars: 10 });
    assert_eq!(
        ty("vc"),
        ColumnType::Text {
            max_chars: Some(100)
        }
    );
    assert_eq!(
        ty("lat"),
        ColumnType::Text {
            max_chars: Some(20)
        }
    );
    assert_eq!(ty("tx"), ColumnType::Text { max_chars: None });
    assert_eq!(ty("bin"), ColumnType::Bytes { max_bytes: Some(4) });
    assert_eq!(
        ty("vb"),
        ColumnType::Bytes {
            max_bytes: Some(10)
        }
    );
    assert_eq!(ty("bl"), ColumnType::Bytes { max_bytes: None });
    assert_eq!(
        ty("e"),
        ColumnType::Enum {
            values: vec!["a".into(), "b".into(), "c".into()]
        }
    );
    assert_eq!(
        ty("st"),
        ColumnType::Set {
            members: vec!["x".into(), "y".into(), "z".into()]
        }
    );
    assert_eq!(ty("bt"), ColumnType::Bit { width: 12 });
    assert_eq!(ty("j"), ColumnType::Json);

    let t = next_transaction(&mut c).await;
    assert_eq!(t.changes.len(), 4);
    assert!(
        t.changes
            .iter()
            .all(|ch| ch.kind == ChangeKind::Insert && ch.before.is_none())
    );
    let rows: Vec<_> = t
        .changes
        .iter()
        .map(|ch| ch.after.clone().unwrap())
        .collect();

    let min = vec![
        Value::Int(1),
        Value::Int(-128),
        Value::UInt(0),
        Value::Int(-32768),
        Value::UInt(0),
        Value::Int(-8388608),
        Value::UInt(0),
        Value::Int(-2147483648),
        Value::UInt(0),
        Value::Int(i64::MIN),
        Value::UInt(0),
        Value::Int(1901),
        Value::Decimal("-99999999999999.999999".into()),
        Value::Decimal("-1".into()),
        Value::Float(-1.25),
        Value::Double(-2.5e-300),
        Value::Date {
            year: 1000,
            month: 1,
            day: 1,
        },
        Value::Time {
            negative: true,
            micros: 838 * 3_600_000_000 + 59 * 60_000_000 + 59_999_999,
        },
        Value::Time {
            negative: true,
            micros: 1_000_000,
        },
        dt(1000, 1, 1, 0, 0, 0, 1),
        Value::Timestamp(1_000_000),
        Value::Timestamp(1_000_000),
        text(""),
        text(""),
        text(""),
        text(""),
        Value::Bytes(vec![0, 1, 0, 0]),
        Value::Bytes(vec![]),
        Value::Bytes(vec![]),
        Value::Enum(1),
        Value::Set(0),
        Value::Bit(0),
        Value::Bit(0),
        Value::Json("[]".into()),
        Value::Int(-1),
    ];
    let max = vec![
        Value::Int(2),
        Value::Int(127),
        Value::UInt(255),
        Value::Int(32767),
        Value::UInt(65535),
        Value::Int(8388607),
        Value::UInt(16777215),
        Value::Int(2147483647),
        Value::UInt(4294967295),
        Value::Int(i64::MAX),
        Value::UInt(u64::MAX),
        Value::Int(2155),
        Value::Decimal("99999999999999.999999".into()),
        Value::Decimal("99999".into()),
        Value::Float(3.5),
        Value::Double(1.7976931348623157e308),
        Value::Date {
            year: 9999,
            month: 12,
            day: 31,
        },
        Value::Time {
            negative: false,
            micros: 838 * 3_600_000_000 + 59 * 60_000_000 + 59_999_999,
        },
        Value::Time {
            negative: false,
            micros: (838 * 3600 + 59 * 60 + 59) * 1_000_000,
        },
        dt(9999, 12, 31, 23, 59, 59, 999_999),
        Value::Timestamp(2_147_483_647_999_000),
        Value::Timestamp(2_147_483_647_000_000),
        text("abc"),
        text("😀 émoji ✓ 𝄞"),
        Value::Text(long_text.clone()),
        text("café€"),
        Value::Bytes(vec![0xDE, 0xAD, 0xBE, 0xEF]),
        Value::Bytes(vec![0, 0xFF, 0]),
        Value::Bytes(blob.clone()),
        Value::Enum(3),
        Value::Set(0b101),
        Value::Bit(0xFFF),
        Value::Bit(1),
        Value::Json("{\"k\": [1, 2.5, \"s\"]}".into()),
        Value::Int(7),
    ];
    let mut nulls = vec![Value::Null; max.len()];
    nulls[0] = Value::Int(3);
    *nulls.last_mut().unwrap() = Value::Int(0);
    let mut zero_year = nulls.clone();
    zero_year[0] = Value::Int(4);
    zero_year[11] = Value::Int(0);
    zero_year[12] = Value::Decimal("0.500000".into());
    for (i, (got, want)) in rows[0].iter().zip(&min).enumerate() {
        assert_eq!(got, want, "min row, column {}", schema.columns[i].name);
    }
    for (i, (got, want)) in rows[1].iter().zip(&max).enumerate() {
        assert_eq!(got, want, "max row, column {}", schema.columns[i].name);
    }
    assert_eq!(rows[0], min);
    assert_eq!(rows[1], max);
    assert_eq!(rows[2], nulls);
    assert_eq!(rows[3], zero_year);

    // Update and delete carry both images.
    db.exec_tx(&[
        "UPDATE ty.t SET biu = 1 WHERE id = 2",
        "DELETE FROM ty.t WHERE id = 1",
    ])
    .await
    .unwrap();
    let t = next_transaction(&mut c).await;
    assert_eq!(t.changes.len(), 2);
    let (u, d) = (&t.changes[0], &t.changes[1]);
    assert_eq!(u.kind, ChangeKind::Update);
    assert_eq!(u.before.as_ref().unwrap(), &max);
    let mut updated = max.clone();
    updated[10] = Value::UInt(1);
    assert_eq!(u.after.as_ref().unwrap(), &updated);
    assert_eq!(d.kind, ChangeKind::Delete);
    assert_eq!(d.before.as_ref().unwrap(), &min);
    assert!(d.after.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_format_fractional_seconds_are_refused_not_misread() {
    // With mysql56_temporal_format=OFF MariaDB stores TIME(n)/DATETIME(n)/TIMESTAMP(n) in its pre-10.0
    // format, and the table map does not record their width: decoding would misread every later column.
    let (db, url) = server(MariaDbOptions::default()).await;
    db.exec(&[
        "SET GLOBAL mysql56_temporal_format = OFF",
        "CREATE DATABASE ty",
        "CREATE TABLE ty.old (id INT PRIMARY KEY, t TIME(3), x INT)",
        "SET GLOBAL mysql56_temporal_format = ON",
    ])
    .await
    .unwrap();
    let mut c = started(config(&url, &["ty"]), StartPosition::Now).await;
    db.exec(&["INSERT INTO ty.old VALUES (1, '01:02:03.5', 7)"])
        .await
        .unwrap();
    let e = first_error(&mut c).await;
    assert!(!e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("ty.old")
            && text.contains('t')
            && text.contains("mysql56_temporal_format=ON"),
        "{text}"
    );
}
