//! Mapping of a [`TableSchema`] to one Avro record schema.
//!
//! One table schema version gives one Avro `record`:
//!
//! - `namespace` = the database name, `name` = the table name, both *sanitized* to Avro's name rule
//!   `[A-Za-z_][A-Za-z0-9_]*` (see [`sanitize_name`]). When sanitizing changed a name, the original is
//!   kept in a custom attribute: `databus.database` / `databus.table` on the record, `databus.column` on a
//!   field. Field names that collide after sanitizing get a suffix `_2`, `_3`, … in column order.
//! - The record carries `databus.primary_key`: the original names of the primary-key columns in key order
//!   (an empty array when the table has none).
//! - One field per column, in table order. Every field carries `databus.type`, a compact text form of the
//!   column's [`ColumnType`] (e.g. `"bigint unsigned"`, `"decimal(10,2)"`, `"datetime(3)"`,
//!   `"enum('a','b')"`); it makes the Avro schema self-describing (the JSON rendering uses it) and makes
//!   every difference between two table schemas a different schema id.
//! - A nullable column becomes the union `["null", T]` with `"default": null`, so that a column added as
//!   nullable resolves against older payloads.
//!
//! # Type mapping
//!
//! | Column type | Avro type | Value encoded |
//! |---|---|---|
//! | TINYINT, SMALLINT, MEDIUMINT (signed or not), INT | `int` | the integer |
//! | INT UNSIGNED, BIGINT | `long` | the integer |
//! | BIGINT UNSIGNED | `bytes` + `decimal(20,0)` | the integer as an exact decimal, 9 bytes (no value is lost) |
//! | DECIMAL(p,s) | `bytes` + `decimal(p,s)` | unscaled value, big-endian two's complement, fixed width per column (below) |
//! | FLOAT | `float` | |
//! | DOUBLE | `double` | |
//! | DATE | `int` + `date` | days since 1970-01-01; zero dates: see below |
//! | TIME(n) | `long`, `databus.type` = `time(n)` | signed duration in microseconds (±838:59:59.999999) |
//! | DATETIME(n) | `long` + `local-timestamp-micros` | wall-clock microseconds since 1970-01-01T00:00, no zone |
//! | TIMESTAMP(n) | `long` + `timestamp-micros` | microseconds since the Unix epoch, UTC |
//! | YEAR | `int` | the year (0 for MariaDB's zero year) |
//! | CHAR/VARCHAR/TEXT | `string` | |
//! | BINARY/VARBINARY/BLOB | `bytes` | |
//! | ENUM | `string` | the value's name (`""` for MariaDB's error value 0) |
//! | SET | `array` of `string` | member names in declaration order |
//! | BIT(n) | `long`, `databus.type` = `bit(n)` | the bits as a u64 reinterpreted as i64 (BIT(64) values ≥ 2^63 are negative longs) |
//! | JSON | `string`, `databus.type` = `json` | the JSON text |
//!
//! Decimal bytes have the same width for every value of a column: the smallest `n` with
//! `floor(log10(2^(8n-1) - 1)) >= p` (DECIMAL(10,2): 5 bytes, DECIMAL(65,30): 28 bytes). Avro allows any
//! width, but apache-avro (and Java) reject, when resolving against a reader schema, a decimal whose
//! byte length cannot hold the declared precision.
//!
//! ENUM is not an Avro `enum` because MariaDB enum values (`'in stock'`, `'1'`, `''`) are not valid Avro
//! symbols.
//!
//! # Zero dates
//!
//! MariaDB accepts `0000-00-00` (and dates with a zero month or day) in DATE and DATETIME columns. They
//! are not calendar dates, so they are encoded as a sentinel that no real date reaches: `i32::MIN` days
//! for DATE and `i64::MIN` microseconds for DATETIME, in nullable and NOT NULL columns alike (so NULL and
//! the zero date stay distinct). The JSON rendering shows them as `"0000-00-00"` and
//! `"0000-00-00T00:00:00.000000"`. A partially zero date (`2024-00-15`) is encoded as the same sentinel,
//! which loses its non-zero parts. TIMESTAMP has no separate zero value: MariaDB stores its zero timestamp
//! as epoch second 0, which arrives as `Value::Timestamp(0)` and is encoded as such.

use std::collections::HashSet;

use apache_avro::Schema;
use serde_json::{Map, Value as Json, json};

use crate::error::{Error, Result};
use crate::model::{ColumnType, TableSchema};

/// Attribute on a field: the column's type in compact text form.
pub const ATTR_TYPE: &str = "databus.type";
/// Attribute on a field: the original column name, when sanitizing changed it.
pub const ATTR_COLUMN: &str = "databus.column";
/// Attribute on the record: the original database name, when sanitizing changed it.
pub const ATTR_DATABASE: &str = "databus.database";
/// Attribute on the record: the original table name, when sanitizing changed it.
pub const ATTR_TABLE: &str = "databus.table";
/// Attribute on the record: the original names of the primary-key columns, in key order.
pub const ATTR_PRIMARY_KEY: &str = "databus.primary_key";

/// Maps `s` onto Avro's name rule `[A-Za-z_][A-Za-z0-9_]*`: every other character becomes `_`, and a
/// name that is empty or starts with a digit gets a leading `_`.
///
/// ```
/// use databus_serde_formats::avro_schema::sanitize_name;
/// assert_eq!(sanitize_name("order-items"), "order_items");
/// assert_eq!(sanitize_name("2fa"), "_2fa");
/// assert_eq!(sanitize_name("prix_€"), "prix__");
/// assert_eq!(sanitize_name("ok_Name1"), "ok_Name1");
/// ```
pub fn sanitize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// The Avro field names of `table`'s columns, in column order: sanitized, then made unique.
pub fn field_names(table: &TableSchema) -> Vec<String> {
    let mut used = HashSet::with_capacity(table.columns.len());
    table
        .columns
        .iter()
        .map(|column| {
            let base = sanitize_name(&column.name);
            let mut name = base.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// The compact text form of a column type, as written in the `databus.type` attribute.
///
/// ```
/// use databus_serde_formats::ColumnType;
/// use databus_serde_formats::avro_schema::type_descriptor;
/// assert_eq!(type_descriptor(&ColumnType::BigInt { unsigned: true }), "bigint unsigned");
/// assert_eq!(type_descriptor(&ColumnType::Decimal { precision: 10, scale: 2 }), "decimal(10,2)");
/// assert_eq!(
///     type_descriptor(&ColumnType::Enum { values: vec!["a".into(), "it's".into()] }),
///     "enum('a','it''s')"
/// );
/// ```
pub fn type_descriptor(column_type: &ColumnType) -> String {
    fn int(name: &str, unsigned: bool) -> String {
        if unsigned {
            format!("{name} unsigned")
        } else {
            name.to_owned()
        }
    }
    fn list(name: &str, items: &[String]) -> String {
        let quoted: Vec<String> = items
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect();
        format!("{name}({})", quoted.join(","))
    }
    match column_type {
        ColumnType::TinyInt { unsigned } => int("tinyint", *unsigned),
        ColumnType::SmallInt { unsigned } => int("smallint", *unsigned),
        ColumnType::MediumInt { unsigned } => int("mediumint", *unsigned),
        ColumnType::Int { unsigned } => int("int", *unsigned),
        ColumnType::BigInt { unsigned } => int("bigint", *unsigned),
        ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        ColumnType::Float => "float".to_owned(),
        ColumnType::Double => "double".to_owned(),
        ColumnType::Date => "date".to_owned(),
        ColumnType::Time { fsp } => format!("time({fsp})"),
        ColumnType::DateTime { fsp } => format!("datetime({fsp})"),
        ColumnType::Timestamp { fsp } => format!("timestamp({fsp})"),
        ColumnType::Year => "year".to_owned(),
        ColumnType::Text { max_chars: None } => "text".to_owned(),
        ColumnType::Text { max_chars: Some(n) } => format!("text({n})"),
        ColumnType::Char { chars } => format!("char({chars})"),
        ColumnType::Bytes { max_bytes: None } => "bytes".to_owned(),
        ColumnType::Bytes { max_bytes: Some(n) } => format!("bytes({n})"),
        ColumnType::Enum { values } => list("enum", values),
        ColumnType::Set { members } => list("set", members),
        ColumnType::Bit { width } => format!("bit({width})"),
        ColumnType::Json => "json".to_owned(),
    }
}

/// Checks what Avro and the encoder need from a table schema.
pub(crate) fn validate(table: &TableSchema) -> Result<()> {
    let invalid = |reason: String| Error::InvalidSchema {
        table: table.qualified_name(),
        reason,
    };
    if table.columns.is_empty() {
        return Err(invalid("has no columns".to_owned()));
    }
    let mut seen = HashSet::new();
    for &index in &table.primary_key {
        if index >= table.columns.len() {
            return Err(invalid(format!(
                "primary key refers to column index {index} but the table has {} columns",
                table.columns.len()
            )));
        }
        if !seen.insert(index) {
            return Err(invalid(format!(
                "primary key lists column {} twice",
                table.columns[index].name
            )));
        }
    }
    for column in &table.columns {
        let reason = match &column.column_type {
            ColumnType::Decimal { precision, scale }
                if *precision == 0 || *precision > 65 || scale > precision =>
            {
                Some(format!(
                    "DECIMAL({precision},{scale}) needs 1 <= precision <= 65 and scale <= precision"
                ))
            }
            ColumnType::Time { fsp }
            | ColumnType::DateTime { fsp }
            | ColumnType::Timestamp { fsp }
                if *fsp > 6 =>
            {
                Some(format!("fractional-second digits {fsp} is above 6"))
            }
            ColumnType::Bit { width } if *width == 0 || *width > 64 => {
                Some(format!("BIT({width}) is outside 1-64"))
            }
            ColumnType::Set { members } if members.len() > 64 => {
                Some(format!("SET has {} members, at most 64 fit", members.len()))
            }
            ColumnType::Enum { values } if values.len() > usize::from(u16::MAX) => Some(format!(
                "ENUM has {} values, at most 65535 fit",
                values.len()
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(invalid(format!("column {}: {reason}", column.name)));
        }
    }
    Ok(())
}

fn avro_type(column_type: &ColumnType) -> Json {
    fn decimal(precision: u8, scale: u8) -> Json {
        json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
    }
    match column_type {
        ColumnType::TinyInt { .. }
        | ColumnType::SmallInt { .. }
        | ColumnType::MediumInt { .. }
        | ColumnType::Int { unsigned: false }
        | ColumnType::Year => json!("int"),
        ColumnType::Int { unsigned: true }
        | ColumnType::BigInt { unsigned: false }
        | ColumnType::Time { .. }
        | ColumnType::Bit { .. } => json!("long"),
        ColumnType::BigInt { unsigned: true } => decimal(20, 0),
        ColumnType::Decimal { precision, scale } => decimal(*precision, *scale),
        ColumnType::Float => json!("float"),
        ColumnType::Double => json!("double"),
        ColumnType::Date => json!({"type": "int", "logicalType": "date"}),
        ColumnType::DateTime { .. } => {
            json!({"type": "long", "logicalType": "local-timestamp-micros"})
        }
        ColumnType::Timestamp { .. } => json!({"type": "long", "logicalType": "timestamp-micros"}),
        ColumnType::Text { .. }
        | ColumnType::Char { .. }
        | ColumnType::Enum { .. }
        | ColumnType::Json => json!("string"),
        ColumnType::Bytes { .. } => json!("bytes"),
        ColumnType::Set { .. } => json!({"type": "array", "items": "string"}),
    }
}

/// The Avro schema of `table` as JSON (see the module docs for the mapping).
pub fn avro_schema_json(table: &TableSchema) -> Result<Json> {
    validate(table)?;
    let names = field_names(table);
    let fields: Vec<Json> = table
        .columns
        .iter()
        .zip(&names)
        .map(|(column, name)| {
            let mut field = Map::new();
            field.insert("name".into(), json!(name));
            let ty = avro_type(&column.column_type);
            if column.nullable {
                field.insert("type".into(), json!(["null", ty]));
                field.insert("default".into(), Json::Null);
            } else {
                field.insert("type".into(), ty);
            }
            field.insert(
                ATTR_TYPE.into(),
                json!(type_descriptor(&column.column_type)),
            );
            if *name != column.name {
                field.insert(ATTR_COLUMN.into(), json!(column.name));
            }
            Json::Object(field)
        })
        .collect();
    let mut record = Map::new();
    record.insert("type".into(), json!("record"));
    let name = sanitize_name(&table.table);
    if name != table.table {
        record.insert(ATTR_TABLE.into(), json!(table.table));
    }
    record.insert("name".into(), json!(name));
    if !table.database.is_empty() {
        let namespace = sanitize_name(&table.database);
        if namespace != table.database {
            record.insert(ATTR_DATABASE.into(), json!(table.database));
        }
        record.insert("namespace".into(), json!(namespace));
    }
    let pk: Vec<&str> = table
        .primary_key
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    record.insert(ATTR_PRIMARY_KEY.into(), json!(pk));
    record.insert("fields".into(), Json::Array(fields));
    Ok(Json::Object(record))
}

/// The Avro schema of `table`, parsed by apache-avro.
///
/// ```
/// use databus_serde_formats::{Column, ColumnType, TableSchema};
/// use databus_serde_formats::avro_schema::avro_schema;
///
/// let table = TableSchema {
///     database: "shop".into(),
///     table: "orders".into(),
///     columns: vec![
///         Column::new("id", ColumnType::BigInt { unsigned: false }, false),
///         Column::new("note", ColumnType::Text { max_chars: None }, true),
///     ],
///     primary_key: vec![0],
/// };
/// let schema = avro_schema(&table).unwrap();
/// assert!(schema.canonical_form().starts_with(r#"{"name":"shop.orders","type":"record""#));
/// ```
pub fn avro_schema(table: &TableSchema) -> Result<Schema> {
    let json = avro_schema_json(table)?;
    Schema::parse(&json).map_err(|e| {
        Error::avro(
            format!("mapping table {} to an avro schema", table.qualified_name()),
            e,
        )
    })
}

/// Parses the compact type text of a `databus.type` attribute back into a [`ColumnType`] (the
/// inverse of [`type_descriptor`]); `None` when the text is not one it writes.
///
/// ```
/// use databus_serde_formats::ColumnType;
/// use databus_serde_formats::avro_schema::{parse_type_descriptor, type_descriptor};
/// let t = ColumnType::Enum { values: vec!["a".into(), "it's".into(), "x,y".into()] };
/// assert_eq!(parse_type_descriptor(&type_descriptor(&t)), Some(t));
/// assert_eq!(parse_type_descriptor("int unsigned"), Some(ColumnType::Int { unsigned: true }));
/// assert_eq!(parse_type_descriptor("varchar(3)"), None);
/// ```
pub fn parse_type_descriptor(text: &str) -> Option<ColumnType> {
    let (base, unsigned) = match text.strip_suffix(" unsigned") {
        Some(base) => (base, true),
        None => (text, false),
    };
    let int_type = match base {
        "tinyint" => Some(ColumnType::TinyInt { unsigned }),
        "smallint" => Some(ColumnType::SmallInt { unsigned }),
        "mediumint" => Some(ColumnType::MediumInt { unsigned }),
        "int" => Some(ColumnType::Int { unsigned }),
        "bigint" => Some(ColumnType::BigInt { unsigned }),
        _ => None,
    };
    if int_type.is_some() || unsigned {
        return int_type;
    }
    let simple = match text {
        "float" => Some(ColumnType::Float),
        "double" => Some(ColumnType::Double),
        "date" => Some(ColumnType::Date),
        "year" => Some(ColumnType::Year),
        "text" => Some(ColumnType::Text { max_chars: None }),
        "bytes" => Some(ColumnType::Bytes { max_bytes: None }),
        "json" => Some(ColumnType::Json),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    let open = text.find('(')?;
    let (name, args) = (&text[..open], text[open + 1..].strip_suffix(')')?);
    let number = |s: &str| s.parse::<u32>().ok();
    let small = |s: &str| s.parse::<u8>().ok();
    match name {
        "decimal" => {
            let (p, s) = args.split_once(',')?;
            Some(ColumnType::Decimal {
                precision: small(p)?,
                scale: small(s)?,
            })
        }
        "time" => Some(ColumnType::Time { fsp: small(args)? }),
        "datetime" => Some(ColumnType::DateTime { fsp: small(args)? }),
        "timestamp" => Some(ColumnType::Timestamp { fsp: small(args)? }),
        "text" => Some(ColumnType::Text {
            max_chars: Some(number(args)?),
        }),
        "char" => Some(ColumnType::Char {
            chars: number(args)?,
        }),
        "bytes" => Some(ColumnType::Bytes {
            max_bytes: Some(number(args)?),
        }),
        "bit" => Some(ColumnType::Bit {
            width: small(args)?,
        }),
        "enum" => Some(ColumnType::Enum {
            values: parse_quoted_list(args)?,
        }),
        "set" => Some(ColumnType::Set {
            members: parse_quoted_list(args)?,
        }),
        _ => None,
    }
}

/// `'a','it''s'` -> `["a", "it's"]` (the list form of [`type_descriptor`]).
fn parse_quoted_list(text: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        if chars.next()? != '\'' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    item.push('\'');
                }
                '\'' => break,
                c => item.push(c),
            }
        }
        items.push(item);
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// The [`TableSchema`] an Avro record schema of this crate describes (the inverse of
/// [`avro_schema`]): original names from the `databus.*` attributes, column types from
/// `databus.type`, nullability from the `["null", T]` unions, the primary key from
/// `databus.primary_key`. A schema not written by [`avro_schema`] is an [`Error::InvalidSchema`]
/// naming what is missing.
///
/// ```
/// use databus_serde_formats::{Column, ColumnType, TableSchema};
/// use databus_serde_formats::avro_schema::{avro_schema, table_schema};
///
/// let table = TableSchema {
///     database: "shop-eu".into(),
///     table: "orders".into(),
///     columns: vec![
///         Column::new("id", ColumnType::BigInt { unsigned: true }, false),
///         Column::new("total €", ColumnType::Decimal { precision: 10, scale: 2 }, true),
///     ],
///     primary_key: vec![0],
/// };
/// assert_eq!(table_schema(&avro_schema(&table).unwrap()).unwrap(), table);
/// ```
pub fn table_schema(schema: &Schema) -> Result<TableSchema> {
    let Schema::Record(record) = schema else {
        return Err(Error::InvalidSchema {
            table: "(unknown)".to_owned(),
            reason: "the schema is not an avro record".to_owned(),
        });
    };
    let attr = |key: &str| record.attributes.get(key).and_then(Json::as_str);
    let database = attr(ATTR_DATABASE)
        .map(str::to_owned)
        .or_else(|| record.name.namespace().map(str::to_owned))
        .unwrap_or_default();
    let table = attr(ATTR_TABLE)
        .map(str::to_owned)
        .unwrap_or_else(|| record.name.name().to_owned());
    let invalid = |reason: String| Error::InvalidSchema {
        table: format!("{database}.{table}"),
        reason,
    };
    let mut columns = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let name = field
            .custom_attributes
            .get(ATTR_COLUMN)
            .and_then(Json::as_str)
            .unwrap_or(&field.name)
            .to_owned();
        let descriptor = field
            .custom_attributes
            .get(ATTR_TYPE)
            .and_then(Json::as_str)
            .ok_or_else(|| invalid(format!("field {} has no {ATTR_TYPE} attribute", field.name)))?;
        let column_type = parse_type_descriptor(descriptor).ok_or_else(|| {
            invalid(format!(
                "field {} has the unknown {ATTR_TYPE} {descriptor:?}",
                field.name
            ))
        })?;
        let nullable = matches!(&field.schema, Schema::Union(u) if u.is_nullable());
        columns.push(crate::model::Column {
            name,
            column_type,
            nullable,
        });
    }
    let key_names = record
        .attributes
        .get(ATTR_PRIMARY_KEY)
        .and_then(Json::as_array)
        .ok_or_else(|| invalid(format!("the record has no {ATTR_PRIMARY_KEY} attribute")))?;
    let primary_key = key_names
        .iter()
        .map(|n| {
            let n = n.as_str().unwrap_or_default();
            columns
                .iter()
                .position(|c| c.name == n)
                .ok_or_else(|| invalid(format!("primary key column {n:?} is not a field")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableSchema {
        database,
        table,
        columns,
        primary_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn table(columns: Vec<Column>) -> TableSchema {
        TableSchema {
            database: "db".into(),
            table: "t".into(),
            columns,
            primary_key: vec![],
        }
    }

    #[test]
    fn colliding_sanitized_names_get_suffixes_and_keep_originals() {
        let t = TableSchema {
            database: "my-db".into(),
            table: "1 table".into(),
            columns: vec![
                Column::new("a-b", ColumnType::Json, false),
                Column::new("a_b", ColumnType::Json, false),
                Column::new("a b", ColumnType::Json, false),
            ],
            primary_key: vec![1],
        };
        assert_eq!(field_names(&t), ["a_b", "a_b_2", "a_b_3"]);
        let json = avro_schema_json(&t).unwrap();
        assert_eq!(json["name"], "_1_table");
        assert_eq!(json["namespace"], "my_db");
        assert_eq!(json[ATTR_TABLE], "1 table");
        assert_eq!(json[ATTR_DATABASE], "my-db");
        assert_eq!(json[ATTR_PRIMARY_KEY], json!(["a_b"]));
        assert_eq!(json["fields"][0][ATTR_COLUMN], "a-b");
        assert_eq!(json["fields"][1][ATTR_COLUMN], "a_b");
        assert_eq!(json["fields"][2][ATTR_COLUMN], "a b");
        avro_schema(&t).unwrap();
    }

    #[test]
    fn invalid_tables_are_errors_naming_the_table_and_column() {
        let err = avro_schema(&table(vec![Column::new(
            "price",
            ColumnType::Decimal {
                precision: 4,
                scale: 5,
            },
            false,
        )]))
        .unwrap_err();
        assert!(
            err.to_string().contains("db.t") && err.to_string().contains("price"),
            "{err}"
        );
        let mut t = table(vec![Column::new("a", ColumnType::Year, false)]);
        t.primary_key = vec![3];
        assert!(matches!(avro_schema(&t), Err(Error::InvalidSchema { .. })));
        assert!(avro_schema(&table(vec![])).is_err());
        let bit = table(vec![Column::new("b", ColumnType::Bit { width: 65 }, false)]);
        assert!(avro_schema(&bit).is_err());
    }

    #[test]
    fn nullable_columns_are_unions_with_null_default() {
        let json =
            avro_schema_json(&table(vec![Column::new("d", ColumnType::Date, true)])).unwrap();
        assert_eq!(
            json["fields"][0]["type"],
            json!(["null", {"type": "int", "logicalType": "date"}])
        );
        assert_eq!(json["fields"][0]["default"], Json::Null);
        assert_eq!(json["fields"][0][ATTR_TYPE], "date");
    }
}
