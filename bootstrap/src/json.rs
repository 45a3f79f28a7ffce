//! `format=json` on the bootstrap stream: the relay's JSON-lines rendering (`docs/protocol.md`).
//!
//! One JSON object per frame, per line, as the relay renders it: `databus_core::json::header_to_json`'s
//! fields (`scn`, `opcode`, `source`, `partition`, `timestamp_ns`, `schema`, `key`) plus, for data
//! events, `payload`: the record decoded with its writer schema, or `payload_base64` and
//! `decode_error` when the schema is unknown or the payload does not decode. The last line is
//! `{"checkpoint":{...},"more":bool,"phase":"...","path":"..."}`.
//!
//! Writer schemas are looked up in the bootstrap database (schemas a seed wrote rows with), then at
//! the relay (`GET /v1/schemas/<id>`) when the server knows one (`[relay]` in its configuration);
//! both are cached for the life of the process.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use databus_core::{EventView, SchemaId};
use serde_json::{Value, json};

use crate::BootstrapError;
use crate::relay_client::RelayClient;
use crate::serve::StreamReply;
use crate::store::BootstrapStore;

pub use databus_http::protocol::JSON_LINES_CONTENT_TYPE;

/// Most schemas kept in the cache (ids are fingerprints: a table's schema changes rarely).
const MAX_CACHED: usize = 4096;

/// Where writer schemas come from, cached.
#[derive(Debug, Default)]
pub struct SchemaSource {
    relay: Option<RelayClient>,
    cache: Mutex<HashMap<SchemaId, Option<Arc<Schema>>>>,
}

impl SchemaSource {
    /// Schemas from the bootstrap database, then from `relay` if given.
    pub fn new(relay: Option<RelayClient>) -> SchemaSource {
        SchemaSource {
            relay,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: SchemaId) -> Option<Option<Arc<Schema>>> {
        self.cache.lock().ok().and_then(|c| c.get(&id).cloned())
    }

    fn remember(&self, id: SchemaId, schema: Option<Arc<Schema>>) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= MAX_CACHED {
                c.clear();
            }
            c.insert(id, schema);
        }
    }

    /// Looks up every schema `frames` use that is not cached yet. A schema found nowhere is cached as
    /// unknown only when the relay answered (`404`); a relay that cannot be reached is asked again
    /// next time.
    pub async fn resolve(&self, store: &Arc<dyn BootstrapStore>, frames: &[u8]) {
        let mut wanted: Vec<SchemaId> = Vec::new();
        if let Ok(views) = EventView::parse_all(frames) {
            for v in views {
                if !v.opcode().is_control()
                    && !wanted.contains(&v.schema())
                    && self.cached(v.schema()).is_none()
                {
                    wanted.push(v.schema());
                }
            }
        }
        for id in wanted {
            let s = store.clone();
            let stored = tokio::task::spawn_blocking(move || s.schema(id))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            if let Some(stored) = stored {
                match Schema::parse_str(&stored.avro_json) {
                    Ok(schema) => self.remember(id, Some(Arc::new(schema))),
                    Err(e) => {
                        tracing::warn!(schema = %format!("{:016x}", id.get()), error = %e, "stored writer schema does not parse");
                        self.remember(id, None);
                    }
                }
                continue;
            }
            let Some(relay) = &self.relay else {
                continue;
            };
            match relay.get(&format!("/v1/schemas/{:016x}", id.get())).await {
                Ok(r) if r.status == 200 => {
                    let schema = serde_json::from_slice::<Value>(&r.body)
                        .ok()
                        .and_then(|v| Schema::parse(&v["avro"]).ok())
                        .map(Arc::new);
                    self.remember(id, schema);
                }
                Ok(r) if r.status == 404 => self.remember(id, None),
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn get(&self, id: SchemaId) -> Option<Arc<Schema>> {
        self.cached(id).flatten()
    }
}

/// One event as JSON, as the relay renders it.
pub fn event_json(schemas: &SchemaSource, view: &EventView<'_>) -> Value {
    let schema = schemas.get(view.schema());
    let writer = schema.as_deref().ok_or_else(|| {
        format!(
            "schema {:016x} is not known to this bootstrap server (nor to its relay)",
            view.schema().get()
        )
    });
    databus_serde_formats::decode::event_json(view, writer)
}

/// The JSON-lines body of a stream reply: one line per frame, then the checkpoint line.
pub fn render(schemas: &SchemaSource, reply: &StreamReply) -> Result<String, BootstrapError> {
    let mut text = String::with_capacity(reply.body.len() * 2);
    let views = EventView::parse_all(&reply.body)
        .map_err(|e| BootstrapError::Corrupt(format!("stored frame does not parse: {e}")))?;
    for view in views {
        let _ = writeln!(text, "{}", event_json(schemas, &view));
    }
    let _ = writeln!(
        text,
        "{}",
        json!({
            "checkpoint": reply.checkpoint,
            "more": reply.more,
            "phase": reply.phase.as_str(),
            "path": reply.path.as_str(),
        })
    );
    Ok(text)
}
