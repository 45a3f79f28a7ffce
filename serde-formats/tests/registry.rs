//! The schema registry: versions, idempotence, persistence across restarts, corrupt files, concurrency.

use std::sync::Arc;

use databus_serde_formats::decode::decode_json;
use databus_serde_formats::{Column, ColumnType, Error, SchemaRegistry, TableSchema, Value};
use serde_json::json;

fn orders_v1() -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "orders".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new(
                "status",
                ColumnType::Text {
                    max_chars: Some(16),
                },
                false,
            ),
            Column::new("legacy", ColumnType::Int { unsigned: false }, true),
        ],
        primary_key: vec![0],
    }
}

/// ALTER TABLE orders DROP legacy, MODIFY status ENUM(...), ADD placed DATETIME(3) NULL.
fn orders_v2() -> TableSchema {
    let mut t = orders_v1();
    t.columns.remove(2);
    t.columns[1].column_type = ColumnType::Enum {
        values: vec!["new".into(), "paid".into()],
    };
    t.columns
        .push(Column::new("placed", ColumnType::DateTime { fsp: 3 }, true));
    t
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn alter_gives_new_version_and_every_version_decodes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, id1, id2);
    {
        let registry = SchemaRegistry::open(dir.path()).unwrap();
        assert!(registry.is_empty());
        let v1 = registry.register(&orders_v1()).unwrap();
        assert_eq!(v1.version, 1);
        let again = registry.register(&orders_v1()).unwrap();
        assert_eq!((again.id, again.version), (v1.id, 1));
        let v2 = registry.register(&orders_v2()).unwrap();
        assert_eq!(v2.version, 2);
        assert_ne!(v1.id, v2.id);
        p1 = v1
            .encoder
            .encode_to_vec(&vec![
                Value::Int(1),
                Value::Text("new".into()),
                Value::Int(5),
            ])
            .unwrap();
        p2 = v2
            .encoder
            .encode_to_vec(&vec![
                Value::Int(2),
                Value::Enum(2),
                Value::DateTime {
                    year: 2024,
                    month: 5,
                    day: 6,
                    hour: 7,
                    minute: 8,
                    second: 9,
                    micros: 123_000,
                },
            ])
            .unwrap();
        (id1, id2) = (v1.id, v2.id);
        // A reverted ALTER gets the old version back.
        assert_eq!(registry.register(&orders_v1()).unwrap().version, 1);
        assert_eq!(registry.len(), 2);
    }
    assert_eq!(files(dir.path()).len(), 2, "{:?}", files(dir.path()));
    assert!(
        files(dir.path())
            .iter()
            .all(|f| f.starts_with("shop.orders.v"))
    );

    // "Restart": a new registry over the same directory.
    let registry = SchemaRegistry::open(dir.path()).unwrap();
    assert_eq!(registry.len(), 2);
    let versions = registry.versions("shop", "orders");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.id, v.version))
            .collect::<Vec<_>>(),
        [(id1, 1), (id2, 2)]
    );
    assert_eq!(registry.latest("shop", "orders").unwrap().id, id2);
    assert_eq!(*registry.get(id1).unwrap().table, orders_v1());
    assert_eq!(
        registry.tables(),
        [("shop".to_owned(), "orders".to_owned())]
    );
    let w1 = registry.get(id1).unwrap().avro;
    let w2 = registry.get(id2).unwrap().avro;
    assert_eq!(
        decode_json(&p1, &w1, None).unwrap(),
        json!({"id": 1, "status": "new", "legacy": 5})
    );
    assert_eq!(
        decode_json(&p2, &w2, None).unwrap(),
        json!({"id": 2, "status": "paid", "placed": "2024-05-06T07:08:09.123000"})
    );
    // The old payload in the new shape: `legacy` dropped, `placed` defaults to null.
    assert_eq!(
        decode_json(&p1, &w1, Some(&w2)).unwrap(),
        json!({"id": 1, "status": "new", "placed": null})
    );
    let r2 = registry.get(id2).unwrap();
    assert_eq!(r2.decode_json(&p2).unwrap()["status"], "paid");
    let mut again = Vec::new();
    let row = vec![
        Value::Int(2),
        Value::Enum(2),
        Value::DateTime {
            year: 2024,
            month: 5,
            day: 6,
            hour: 7,
            minute: 8,
            second: 9,
            micros: 123_000,
        },
    ];
    r2.encode(&row, &mut again).unwrap();
    assert_eq!(again, p2);
    // Registering after the restart is still idempotent and continues the numbering.
    assert_eq!(registry.register(&orders_v2()).unwrap().version, 2);
    let mut v3 = orders_v2();
    v3.columns[2].nullable = false;
    assert_eq!(registry.register(&v3).unwrap().version, 3);
    assert_eq!(files(dir.path()).len(), 3);
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = SchemaRegistry::open(dir.path()).unwrap();
        registry.register(&orders_v1()).unwrap();
    }
    let name = files(dir.path()).remove(0);
    let path = dir.path().join(&name);
    let original = std::fs::read_to_string(&path).unwrap();

    let cases = [
        original[..original.len() / 2].to_owned(),
        "{}".to_owned(),
        original.replacen("\"version\": 1", "\"version\": 0", 1),
        // The table no longer matches the id in the file.
        original.replacen("\"status\"", "\"state\"", 1),
    ];
    for (i, text) in cases.iter().enumerate() {
        assert_ne!(text, &original, "case {i} must change the file");
        std::fs::write(&path, text).unwrap();
        let err = SchemaRegistry::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::CorruptSchemaFile { path: p, .. } if *p == path),
            "case {i}: {err}"
        );
        assert!(err.to_string().contains(&name), "case {i}: {err}");
    }

    // Leftover temporary files and unrelated files are ignored.
    std::fs::write(&path, &original).unwrap();
    std::fs::write(dir.path().join(format!(".{name}.tmp-1-0")), "garbage").unwrap();
    std::fs::write(dir.path().join("README"), "notes").unwrap();
    assert_eq!(SchemaRegistry::open(dir.path()).unwrap().len(), 1);

    // A copy under another name duplicates the id.
    std::fs::write(dir.path().join("copy.json"), &original).unwrap();
    let err = SchemaRegistry::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::CorruptSchemaFile { .. }), "{err}");
}

#[test]
fn concurrent_registration_and_lookups_agree() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(SchemaRegistry::open(dir.path()).unwrap());
    let tables: Vec<TableSchema> = (0..8)
        .map(|n| {
            let mut t = orders_v1();
            for i in 0..n {
                t.columns
                    .push(Column::new(format!("extra{i}"), ColumnType::Double, true));
            }
            t
        })
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let registry = Arc::clone(&registry);
            let tables = tables.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for round in 0..tables.len() {
                    let t = &tables[(round + thread * 3) % tables.len()];
                    let r = registry.register(t).unwrap();
                    assert_eq!(*r.table, *t);
                    assert_eq!(registry.get(r.id).unwrap().version, r.version);
                    ids.push((r.id, r.version));
                }
                ids
            })
        })
        .collect();
    let mut seen = std::collections::HashMap::new();
    for h in handles {
        for (id, version) in h.join().unwrap() {
            assert_eq!(*seen.entry(id).or_insert(version), version);
        }
    }
    assert_eq!(seen.len(), 8);
    let mut versions: Vec<u32> = seen.values().copied().collect();
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    assert_eq!(files(dir.path()).len(), 8);
    assert_eq!(SchemaRegistry::open(dir.path()).unwrap().len(), 8);
}

#[test]
fn register_shared_finds_a_schema_by_its_arc_and_never_confuses_two() {
    let registry = SchemaRegistry::in_memory();
    let v1 = Arc::new(orders_v1());
    let first = registry.register_shared(&v1).unwrap();
    assert_eq!(first.version, 1);
    // Same Arc: the cached registration; an equal schema in another Arc or by reference: the same one.
    let again = registry.register_shared(&v1).unwrap();
    assert_eq!((again.id, again.version), (first.id, 1));
    let copy = Arc::new(orders_v1());
    assert_eq!(registry.register_shared(&copy).unwrap().id, first.id);
    assert_eq!(registry.register(&orders_v1()).unwrap().id, first.id);
    // Many short-lived Arcs of alternating schemas: each gets its own schema's registration, also
    // after the caller dropped an earlier Arc (the registry holds it, so its address is not reused).
    drop(v1);
    let v2 = registry.register(&orders_v2()).unwrap();
    for i in 0..10_000 {
        let (schema, expected) = if i % 2 == 0 {
            (orders_v1(), first.id)
        } else {
            (orders_v2(), v2.id)
        };
        let arc = Arc::new(schema);
        assert_eq!(registry.register_shared(&arc).unwrap().id, expected, "{i}");
        assert_eq!(registry.register_shared(&arc).unwrap().id, expected, "{i}");
    }
    assert_eq!(registry.versions("shop", "orders").len(), 2);
}

/// Prints the schema ids of `orders_v1` and `orders_v2` registered in a fresh in-memory registry, when
/// run as the child of `schema_ids_are_the_same_in_every_process`.
#[test]
fn print_schema_ids_for_the_parent() {
    if std::env::var_os("DATABUS_PRINT_SCHEMA_IDS").is_none() {
        return;
    }
    let registry = SchemaRegistry::in_memory();
    for t in [orders_v2(), orders_v1()] {
        println!("schema-id {}", registry.register(&t).unwrap().id.get());
    }
}

/// Schema ids are fingerprints of the Avro schema, not registration order or process state: a relay,
/// a bootstrap producer filling a relay gap with the relay's pipeline (issue 15) and a seed all give a
/// table the same id. Checked across processes (this test binary run again as a child, registering in
/// the other order) and across registries (on disk and in memory).
#[test]
fn schema_ids_are_the_same_in_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = SchemaRegistry::open(dir.path()).unwrap();
    let v1 = on_disk.register(&orders_v1()).unwrap().id.get();
    let v2 = on_disk.register(&orders_v2()).unwrap().id.get();
    assert_ne!(v1, v2);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "print_schema_ids_for_the_parent", "--nocapture"])
        .env("DATABUS_PRINT_SCHEMA_IDS", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("schema-id ")?.parse().ok())
        .collect();
    assert_eq!(ids, vec![v2, v1], "{text}");
}
