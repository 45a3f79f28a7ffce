//! Schema ids: the 64-bit Rabin fingerprint (CRC-64-AVRO) of a schema's canonical form.
//!
//! A [`SchemaId`] is `CRC-64-AVRO(canonical_form(schema))`, the fingerprint algorithm of the Avro
//! specification ("Schema Fingerprints", the 64-bit Rabin fingerprint with the empty value
//! `0xc15d213aa4d7a795`), read as a `u64` (the spec's `long`).
//!
//! The canonical form is the Avro *Parsing Canonical Form* (PCF) with two rules relaxed:
//!
//! - `logicalType` is kept (after `size`, before `precision`/`scale`), and
//! - attributes whose name starts with `databus.` are kept, after the PCF attributes, sorted by name,
//!   their values as compact JSON.
//!
//! Why not plain PCF: PCF drops logical types and custom attributes, so a DATETIME column and a BIGINT
//! column, or a table before and after `ALTER … MODIFY d TIMESTAMP`, would get the same id although a
//! consumer must read them differently. For a schema without logical types and `databus.*` attributes
//! the canonical form *is* the PCF and the id equals apache-avro's `fingerprint::<Rabin>()` (tested).

use apache_avro::Schema;
use databus_core::SchemaId;
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// The 64-bit Rabin fingerprint (CRC-64-AVRO) of `bytes`.
///
/// ```
/// use databus_serde_formats::fingerprint::rabin64;
/// // The fingerprint of the canonical form of the schema "int", from the Avro test suite.
/// assert_eq!(rabin64(br#""int""#) as i64, 8247732601305521295);
/// ```
pub fn rabin64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// The canonical form of `schema` that its [`SchemaId`] fingerprints (see the module docs).
pub fn canonical_form(schema: &Schema) -> Result<String> {
    let json = serde_json::to_value(schema).map_err(|e| Error::InvalidSchema {
        table: "?".into(),
        reason: format!("the avro schema does not serialize to JSON: {e}"),
    })?;
    let mut defined = std::collections::HashSet::new();
    let mut out = String::new();
    canonical(&json, None, &mut defined, &mut out);
    Ok(out)
}

/// The [`SchemaId`] of `schema`: `rabin64(canonical_form(schema))`.
pub fn schema_id(schema: &Schema) -> Result<SchemaId> {
    Ok(SchemaId::new(rabin64(canonical_form(schema)?.as_bytes())))
}

const ORDER: [&str; 10] = [
    "name",
    "type",
    "fields",
    "symbols",
    "items",
    "values",
    "size",
    "logicalType",
    "precision",
    "scale",
];

fn quote(s: &str, out: &mut String) {
    // Serializing a &str to JSON cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn is_named(ty: Option<&str>) -> bool {
    matches!(ty, Some("record" | "enum" | "fixed"))
}

fn canonical(
    json: &Json,
    namespace: Option<&str>,
    defined: &mut std::collections::HashSet<String>,
    out: &mut String,
) {
    match json {
        Json::String(s) => quote(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, namespace, defined, out);
            }
            out.push(']');
        }
        Json::Object(map) => canonical_object(map, namespace, defined, out),
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_object(
    map: &Map<String, Json>,
    namespace: Option<&str>,
    defined: &mut std::collections::HashSet<String>,
    out: &mut String,
) {
    let ty = map.get("type").and_then(Json::as_str);
    let mut own_namespace = namespace.map(str::to_owned);
    let full_name = if is_named(ty) {
        let name = map.get("name").and_then(Json::as_str).unwrap_or_default();
        if name.contains('.') {
            own_namespace = name.rsplit_once('.').map(|(ns, _)| ns.to_owned());
            Some(name.to_owned())
        } else {
            let ns = map
                .get("namespace")
                .and_then(Json::as_str)
                .map(str::to_owned)
                .or(own_namespace.clone());
            own_namespace = ns.clone();
            Some(match ns.as_deref() {
                Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
                _ => name.to_owned(),
            })
        }
    } else {
        None
    };
    if let Some(name) = &full_name {
        if !defined.insert(name.clone()) {
            quote(name, out);
            return;
        }
    }
    let attrs: Vec<(&String, &Json)> = map
        .iter()
        .filter(|(k, _)| k.starts_with("databus."))
        .collect();
    // [PRIMITIVE]: {"type": "int"} is "int".
    let kept = ORDER.iter().filter(|k| map.contains_key(**k)).count();
    if kept == 1 && attrs.is_empty() {
        if let Some(Json::String(s)) = map.get("type") {
            quote(s, out);
            return;
        }
    }
    out.push('{');
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    for key in ORDER {
        let Some(value) = map.get(key) else { continue };
        sep(out);
        quote(key, out);
        out.push(':');
        match key {
            "name" => match &full_name {
                Some(name) => quote(name, out),
                None => canonical(value, own_namespace.as_deref(), defined, out),
            },
            "size" | "precision" | "scale" => match value {
                Json::String(s) => out.push_str(s.trim()),
                other => out.push_str(&other.to_string()),
            },
            "fields" => match value {
                Json::Array(fields) => {
                    out.push('[');
                    for (i, field) in fields.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        match field {
                            Json::Object(f) => {
                                canonical_field(f, own_namespace.as_deref(), defined, out)
                            }
                            other => canonical(other, own_namespace.as_deref(), defined, out),
                        }
                    }
                    out.push(']');
                }
                other => canonical(other, own_namespace.as_deref(), defined, out),
            },
            _ => canonical(value, own_namespace.as_deref(), defined, out),
        }
    }
    for (key, value) in attrs {
        sep(out);
        quote(key, out);
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
}

/// A record field: `name`, `type`, then `databus.*` attributes (PCF drops `default`, `doc`, `aliases`,
/// `order`).
fn canonical_field(
    field: &Map<String, Json>,
    namespace: Option<&str>,
    defined: &mut std::collections::HashSet<String>,
    out: &mut String,
) {
    out.push('{');
    let mut first = true;
    if let Some(Json::String(name)) = field.get("name") {
        out.push_str("\"name\":");
        quote(name, out);
        first = false;
    }
    if let Some(ty) = field.get("type") {
        if !first {
            out.push(',');
        }
        out.push_str("\"type\":");
        canonical(ty, namespace, defined, out);
        first = false;
    }
    for (key, value) in field.iter().filter(|(k, _)| k.starts_with("databus.")) {
        if !first {
            out.push(',');
        }
        quote(key, out);
        out.push(':');
        out.push_str(&value.to_string());
        first = false;
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::rabin::Rabin;

    fn avro_fp(schema: &Schema) -> u64 {
        let fp = schema.fingerprint::<Rabin>();
        u64::from_le_bytes(fp.bytes.try_into().unwrap())
    }

    #[test]
    fn equals_avro_pcf_fingerprint_without_logical_types_or_attributes() {
        for text in [
            r#""int""#,
            r#"{"type":"record","name":"r","namespace":"ns","doc":"x","fields":[
                {"name":"a","type":"long","default":1},
                {"name":"b","type":["null","string"]},
                {"name":"c","type":{"type":"array","items":"bytes"}},
                {"name":"d","type":{"type":"enum","name":"e","symbols":["A","B"]}},
                {"name":"f","type":{"type":"fixed","name":"fx","size":4}},
                {"name":"g","type":"fx"},
                {"name":"h","type":{"type":"record","name":"inner","fields":[{"name":"x","type":"float"}]}}
            ]}"#,
        ] {
            let schema = Schema::parse_str(text).unwrap();
            assert_eq!(canonical_form(&schema).unwrap(), schema.canonical_form());
            assert_eq!(schema_id(&schema).unwrap().get(), avro_fp(&schema));
        }
    }

    #[test]
    fn logical_types_and_databus_attributes_change_the_id() {
        let plain = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"}]}"#,
        )
        .unwrap();
        let logical = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#,
        )
        .unwrap();
        let attr = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long","databus.type":"time(0)"}]}"#,
        )
        .unwrap();
        let other_attr = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long","other":"x"}]}"#,
        )
        .unwrap();
        let ids: Vec<u64> = [&plain, &logical, &attr]
            .iter()
            .map(|s| schema_id(s).unwrap().get())
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert_ne!(ids[1], ids[2]);
        assert_eq!(schema_id(&other_attr).unwrap().get(), ids[0]);
        assert_eq!(
            canonical_form(&logical).unwrap(),
            r#"{"name":"r","type":"record","fields":[{"name":"a","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#
        );
    }
}
