//! Table schemas, the mapping of source column types to Avro, Avro encoding/decoding, event keys and the
//! schema registry.
//!
//! Connectors describe tables and rows in the typed [`model`] ([`TableSchema`], [`Row`] of [`Value`]s).
//! This crate turns them into what travels through databus:
//!
//! - [`avro_schema`]: one Avro record schema per table schema version (the mapping table is in the
//!   module docs and in `docs/avro-mapping.md`).
//! - [`fingerprint`]: the [`SchemaId`](databus_core::SchemaId) of an Avro schema, a 64-bit Rabin
//!   fingerprint (CRC-64-AVRO) of its canonical form.
//! - [`encode`]: [`RowEncoder`], compiled once per schema version, writes rows as Avro binary straight
//!   into a `Vec<u8>` (the relay's hot path).
//! - [`decode`]: payload + writer schema (+ optional reader schema) to apache-avro values, serde types or
//!   JSON for humans.
//! - [`json_text`]: the same JSON for events, written straight from the Avro binary by a plan compiled
//!   once per writer schema (the relay's `format=json`).
//! - [`key`]: [`event_key`], an event's [`Key`](databus_core::Key) from the row's primary key.
//! - [`registry`]: [`SchemaRegistry`], every version of every table's schema by id and by table,
//!   persisted one JSON file per version.
//!
//! ```
//! use databus_core::Key;
//! use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema, Value};
//! use databus_serde_formats::{decode::decode_json, event_key};
//!
//! let table = TableSchema {
//!     database: "shop".into(),
//!     table: "orders".into(),
//!     columns: vec![
//!         Column::new("id", ColumnType::BigInt { unsigned: false }, false),
//!         Column::new("total", ColumnType::Decimal { precision: 10, scale: 2 }, false),
//!     ],
//!     primary_key: vec![0],
//! };
//! let registry = SchemaRegistry::in_memory();
//! let schema = registry.register(&table).unwrap();
//!
//! let row = vec![Value::Int(7), Value::Decimal("-12.5".into())];
//! let mut payload = Vec::new();
//! schema.encoder.encode(&row, &mut payload).unwrap();
//! assert_eq!(event_key(&table, &row).unwrap(), Key::Int(7));
//!
//! let writer = registry.get(schema.id).unwrap().avro;
//! let json = decode_json(&payload, &writer, None).unwrap();
//! assert_eq!(json, serde_json::json!({"id": 7, "total": "-12.50"}));
//! ```

#![forbid(unsafe_code)]

pub mod avro_schema;
mod convert;
pub mod decode;
pub mod encode;
mod error;
pub mod fingerprint;
pub mod json_text;
pub mod key;
pub mod model;
pub mod registry;
pub mod sample;

pub use convert::civil_from_days;
pub use encode::RowEncoder;
pub use error::{Error, Result};
pub use key::{NoPkPolicy, event_key, event_key_with};
pub use model::{Column, ColumnType, Row, TableSchema, Value};
pub use registry::{RegisteredSchema, SchemaRegistry};
