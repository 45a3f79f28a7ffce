//! The typed model of captured tables: column types, table schemas and row values.
//!
//! Connectors produce rows in this model; this crate maps it to Avro. A connector for another database
//! maps its types onto these.

use serde::{Deserialize, Serialize};

/// The type of one column, as precise as the source declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ColumnType {
    /// TINYINT (8 bits).
    TinyInt {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// SMALLINT (16 bits).
    SmallInt {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// MEDIUMINT (24 bits).
    MediumInt {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// INT (32 bits).
    Int {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// BIGINT (64 bits).
    BigInt {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// DECIMAL(precision, scale).
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// FLOAT (single precision).
    Float,
    /// DOUBLE.
    Double,
    /// DATE.
    Date,
    /// TIME(fsp).
    Time {
        /// Fractional-second digits, 0-6.
        fsp: u8,
    },
    /// DATETIME(fsp): a wall-clock time without a time zone.
    DateTime {
        /// Fractional-second digits, 0-6.
        fsp: u8,
    },
    /// TIMESTAMP(fsp): an instant, stored as UTC.
    Timestamp {
        /// Fractional-second digits, 0-6.
        fsp: u8,
    },
    /// YEAR.
    Year,
    /// VARCHAR/TEXT of any length: text (UTF-8 in the model).
    Text {
        /// Declared maximum length in characters, if any.
        max_chars: Option<u32>,
    },
    /// CHAR(n): text of a fixed length (MariaDB stores it padded with spaces and strips trailing
    /// spaces when read). Its values are [`Value::Text`], as for [`ColumnType::Text`]; the type is
    /// kept apart so a replica can create the same column (a `VARCHAR` holds the same values but
    /// stores, sorts and checksums them differently).
    Char {
        /// Declared length in characters.
        chars: u32,
    },
    /// BINARY/VARBINARY/BLOB of any length.
    Bytes {
        /// Declared maximum length in bytes, if any.
        max_bytes: Option<u32>,
    },
    /// ENUM, with its values in declaration order.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// SET, with its members in declaration order.
    Set {
        /// The allowed members.
        members: Vec<String>,
    },
    /// BIT(width), 1-64.
    Bit {
        /// Width in bits.
        width: u8,
    },
    /// JSON (text).
    Json,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column type.
    pub column_type: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// The schema of a captured table at one point of its history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableSchema {
    /// Database (schema) name; the Avro namespace.
    pub database: String,
    /// Table name; the Avro record name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order. Empty: no primary key.
    pub primary_key: Vec<usize>,
}

/// One column value. The variant matches the column's [`ColumnType`] (or is `Null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A signed integer of any width (also YEAR).
    Int(i64),
    /// An unsigned integer of any width.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL as its exact decimal text, e.g. `"-12.340"`.
    Decimal(String),
    /// DATE.
    Date {
        /// Year.
        year: u16,
        /// Month 1-12 (0 for MariaDB's zero date).
        month: u8,
        /// Day 1-31 (0 for MariaDB's zero date).
        day: u8,
    },
    /// TIME: a signed duration.
    Time {
        /// Negative duration.
        negative: bool,
        /// Total microseconds (absolute).
        micros: u64,
    },
    /// DATETIME: wall-clock fields without a zone.
    DateTime {
        /// Year.
        year: u16,
        /// Month.
        month: u8,
        /// Day.
        day: u8,
        /// Hour.
        hour: u8,
        /// Minute.
        minute: u8,
        /// Second.
        second: u8,
        /// Microsecond.
        micros: u32,
    },
    /// TIMESTAMP: microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// ENUM by its 1-based index (0 = the empty error value).
    Enum(u16),
    /// SET as a bitmask of members.
    Set(u64),
    /// BIT as an unsigned integer.
    Bit(u64),
    /// JSON text.
    Json(String),
}

/// A row image: one value per column, in table order.
pub type Row = Vec<Value>;

impl ColumnType {
    /// The SQL name of this type's family, for messages: `"BIGINT UNSIGNED"`, `"DECIMAL"`, `"DATETIME"`.
    pub fn sql_name(&self) -> &'static str {
        match self {
            ColumnType::TinyInt { unsigned: false } => "TINYINT",
            ColumnType::TinyInt { unsigned: true } => "TINYINT UNSIGNED",
            ColumnType::SmallInt { unsigned: false } => "SMALLINT",
            ColumnType::SmallInt { unsigned: true } => "SMALLINT UNSIGNED",
            ColumnType::MediumInt { unsigned: false } => "MEDIUMINT",
            ColumnType::MediumInt { unsigned: true } => "MEDIUMINT UNSIGNED",
            ColumnType::Int { unsigned: false } => "INT",
            ColumnType::Int { unsigned: true } => "INT UNSIGNED",
            ColumnType::BigInt { unsigned: false } => "BIGINT",
            ColumnType::BigInt { unsigned: true } => "BIGINT UNSIGNED",
            ColumnType::Decimal { .. } => "DECIMAL",
            ColumnType::Float => "FLOAT",
            ColumnType::Double => "DOUBLE",
            ColumnType::Date => "DATE",
            ColumnType::Time { .. } => "TIME",
            ColumnType::DateTime { .. } => "DATETIME",
            ColumnType::Timestamp { .. } => "TIMESTAMP",
            ColumnType::Year => "YEAR",
            ColumnType::Text { .. } => "TEXT",
            ColumnType::Char { .. } => "CHAR",
            ColumnType::Bytes { .. } => "BLOB",
            ColumnType::Enum { .. } => "ENUM",
            ColumnType::Set { .. } => "SET",
            ColumnType::Bit { .. } => "BIT",
            ColumnType::Json => "JSON",
        }
    }
}

impl Column {
    /// A column named `name` of type `column_type`.
    pub fn new(name: impl Into<String>, column_type: ColumnType, nullable: bool) -> Self {
        Column {
            name: name.into(),
            column_type,
            nullable,
        }
    }
}

impl TableSchema {
    /// `database.table`, for messages and registry lookups.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

impl Value {
    /// The variant's name, for messages: `"Int"`, `"Text"`, `"Null"`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Int(_) => "Int",
            Value::UInt(_) => "UInt",
            Value::Float(_) => "Float",
            Value::Double(_) => "Double",
            Value::Decimal(_) => "Decimal",
            Value::Date { .. } => "Date",
            Value::Time { .. } => "Time",
            Value::DateTime { .. } => "DateTime",
            Value::Timestamp(_) => "Timestamp",
            Value::Text(_) => "Text",
            Value::Bytes(_) => "Bytes",
            Value::Enum(_) => "Enum",
            Value::Set(_) => "Set",
            Value::Bit(_) => "Bit",
            Value::Json(_) => "Json",
        }
    }
}
