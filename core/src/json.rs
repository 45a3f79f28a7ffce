//! A JSON rendering of events for humans and `curl | jq`.
//!
//! ```json
//! {"scn":17,"opcode":"upsert","source":1,"partition":0,"timestamp_ns":1700000000000000000,
//!  "schema":"0123456789abcdef","key":42,"payload_base64":"AAEC"}
//! ```
//!
//! `key` is a JSON number for integer keys, `{"bytes_base64": "..."}` for byte keys and `null` for control
//! events. The relay's `format=json` replaces `payload_base64` by the decoded record when it knows the
//! schema.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::{EventView, KeyRef, Opcode};

/// The `opcode` field's text of an opcode.
pub fn opcode_name(opcode: Opcode) -> &'static str {
    match opcode {
        Opcode::Upsert => "upsert",
        Opcode::Delete => "delete",
        Opcode::Truncate => "truncate",
        Opcode::SchemaChange => "schema_change",
        Opcode::Update => "update",
        Opcode::Control(crate::ControlKind::EndOfWindow) => "end_of_window",
    }
}

/// The JSON value of a key.
pub fn key_to_json(key: KeyRef<'_>) -> Value {
    match key {
        KeyRef::Int(v) => json!(v),
        KeyRef::Bytes(b) => {
            json!({ "bytes_base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        KeyRef::None => Value::Null,
    }
}

/// Renders the header fields of an event as a JSON object, without the payload.
pub fn header_to_json(view: &EventView<'_>) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("scn".into(), json!(view.scn().get()));
    map.insert("opcode".into(), json!(opcode_name(view.opcode())));
    map.insert("source".into(), json!(view.source().get()));
    map.insert("partition".into(), json!(view.partition().get()));
    map.insert("timestamp_ns".into(), json!(view.timestamp_ns()));
    map.insert(
        "schema".into(),
        json!(format!("{:016x}", view.schema().get())),
    );
    map.insert("key".into(), key_to_json(view.key()));
    map
}

/// Renders an event as a JSON object with its payload in base64.
pub fn event_to_json(view: &EventView<'_>) -> Value {
    let mut map = header_to_json(view);
    map.insert(
        "payload_base64".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(view.payload())),
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Key, PartitionId, SchemaId, Scn, SourceId};

    #[test]
    fn renders_every_field() {
        let event = Event {
            scn: Scn::new(17),
            opcode: Opcode::Upsert,
            source: SourceId::new(1),
            partition: PartitionId::new(0),
            timestamp_ns: 5,
            schema: SchemaId::new(0x0123_4567_89ab_cdef),
            key: Key::Int(42),
            payload: vec![0, 1, 2],
        };
        let frame = event.to_frame();
        let (view, _) = EventView::parse(&frame).unwrap();
        assert_eq!(
            event_to_json(&view).to_string(),
            r#"{"key":42,"opcode":"upsert","partition":0,"payload_base64":"AAEC","schema":"0123456789abcdef","scn":17,"source":1,"timestamp_ns":5}"#
        );
    }
}
