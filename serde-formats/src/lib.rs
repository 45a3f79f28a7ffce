//! Table schemas, the mapping of source column types to Avro, Avro encoding/decoding and the schema
//! registry.

#![forbid(unsafe_code)]

pub mod model;

pub use model::{Column, ColumnType, Row, TableSchema, Value};
