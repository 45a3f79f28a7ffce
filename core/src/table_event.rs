//! Table events: changes to a whole table rather than to one row.
//!
//! Two opcodes carry them ([`Opcode::Truncate`](crate::Opcode::Truncate) and
//! [`Opcode::SchemaChange`](crate::Opcode::SchemaChange)). Their frames have the table's source id, no
//! key, the table's current writer schema id (or [`SchemaId::NONE`]) and, as payload, the JSON of a
//! [`TableChange`]:
//!
//! ```json
//! {"table":"shop.orders","cause":"truncate","statement":"TRUNCATE TABLE shop.orders"}
//! {"table":"shop.orders","cause":"alter","statement":"ALTER TABLE shop.orders ADD COLUMN w INT",
//!  "old_schema":"5c1f0e2a9b7d3c41","new_schema":"0d9a8e7f6c5b4a39"}
//! ```
//!
//! | opcode | meaning for a consumer that applies changes by key |
//! |--------|------------------------------------------------------|
//! | `truncate` (`3`) | remove every row of the source (cause `truncate`, or `drop`: the table was dropped) |
//! | `schema_change` (`4`) | rows of the source after this event use `new_schema`; nothing to remove |
//!
//! Table events pass every partition filter (a truncate removes rows of every partition) but not a
//! source filter that excludes their source. Readers built before these opcodes existed refuse their
//! frames with [`FrameError::BadOpcode`](crate::FrameError::BadOpcode) rather than skip them: a
//! consumer never silently keeps rows the source removed.
//!
//! Unknown JSON fields are ignored, so later versions can add fields.

use serde::{Deserialize, Serialize};

use crate::SchemaId;

/// Why a table event was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableChangeCause {
    /// `TRUNCATE TABLE`: every row is gone, the table stays.
    Truncate,
    /// `DROP TABLE`: every row is gone with the table (a later `CREATE` starts it empty).
    Drop,
    /// `ALTER TABLE` (or another statement that changes the table's definition).
    Alter,
}

/// The payload of a table event. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableChange {
    /// `database.table` at the source.
    pub table: String,
    /// What happened.
    pub cause: TableChangeCause,
    /// The source statement, as the source logged it (may be empty when unknown).
    #[serde(default)]
    pub statement: String,
    /// The writer schema the source's rows used before (schema changes; `None` when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_schema")]
    pub old_schema: Option<SchemaId>,
    /// The writer schema the source's rows use from this event on (schema changes).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_schema")]
    pub new_schema: Option<SchemaId>,
}

/// Why a table event's payload is not a [`TableChange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad table event payload: {0}")]
pub struct TableChangeError(String);

impl TableChange {
    /// The JSON bytes to put in the frame.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a TableChange always serializes")
    }

    /// Reads a table event's payload.
    pub fn from_payload(payload: &[u8]) -> Result<TableChange, TableChangeError> {
        serde_json::from_slice(payload).map_err(|e| TableChangeError(e.to_string()))
    }
}

mod hex_schema {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::SchemaId;

    pub fn serialize<S: Serializer>(id: &Option<SchemaId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(&format!("{:016x}", id.get())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SchemaId>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            u64::from_str_radix(&t, 16)
                .map(SchemaId::new)
                .map_err(|e| serde::de::Error::custom(format!("schema id {t:?}: {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_ignore_unknown_fields() {
        let change = TableChange {
            table: "shop.t".into(),
            cause: TableChangeCause::Alter,
            statement: "ALTER TABLE t ADD COLUMN w INT".into(),
            old_schema: Some(SchemaId::new(0x5c1f_0e2a_9b7d_3c41)),
            new_schema: Some(SchemaId::new(7)),
        };
        let bytes = change.to_payload();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""old_schema":"5c1f0e2a9b7d3c41""#),
            "{text}"
        );
        assert!(
            text.contains(r#""new_schema":"0000000000000007""#),
            "{text}"
        );
        assert_eq!(TableChange::from_payload(&bytes).unwrap(), change);
        let truncate =
            TableChange::from_payload(br#"{"table":"a.b","cause":"truncate","later":1}"#).unwrap();
        assert_eq!(truncate.cause, TableChangeCause::Truncate);
        assert_eq!(truncate.old_schema, None);
        assert!(TableChange::from_payload(b"{").is_err());
    }
}
