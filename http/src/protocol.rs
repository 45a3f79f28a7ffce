//! The wire protocol's names, in one place for every server and follower: the headers of `stream`
//! answers, their content types, and the JSON error envelope both servers answer with
//! (docs/protocol.md, docs/bootstrap-protocol.md).

use serde::{Deserialize, Serialize};

/// The checkpoint to continue from, as JSON (`stream` answers of the relay and the bootstrap server).
pub const CHECKPOINT_HEADER: &str = "x-databus-checkpoint";
/// `true` when the answer stopped at its byte budget: more is available now.
pub const MORE_HEADER: &str = "x-databus-more";
/// Frames in the answer (events and end-of-window markers).
pub const EVENTS_HEADER: &str = "x-databus-events";
/// The machine-readable code of an error answer (also the body's `error`).
pub const ERROR_HEADER: &str = "x-databus-error";
/// The bootstrap phase of an answer: `snapshot` or `catchup`.
pub const BOOTSTRAP_PHASE_HEADER: &str = "x-databus-bootstrap-phase";
/// How the bootstrap server serves a bootstrap: `snapshot`, `delta` or `log_only`.
pub const BOOTSTRAP_PATH_HEADER: &str = "x-databus-bootstrap-path";
/// The SCN a bootstrap's snapshot reads up to.
pub const BOOTSTRAP_START_SCN_HEADER: &str = "x-databus-bootstrap-start-scn";

/// Content type of binary `stream` answers: event frames back to back.
pub const FRAMES_CONTENT_TYPE: &str = "application/vnd.databus.frames";
/// Content type of `format=json` answers: one JSON object per line.
pub const JSON_LINES_CONTENT_TYPE: &str = "application/x-ndjson";

/// The body of every error answer: `{"error": code, "message": ..}` plus details that depend on the
/// code (for `scn_not_found`: `requested_scn`, `min_scn`, `max_scn`, `prev_scn`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The machine-readable code (also in [`ERROR_HEADER`]).
    pub error: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Details of the code.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ErrorEnvelope {
    /// Parses an error answer's body; `None` when it is not an envelope (a proxy's page, say).
    pub fn parse(body: &[u8]) -> Option<ErrorEnvelope> {
        serde_json::from_slice(body).ok()
    }

    /// A detail as an unsigned number (e.g. `prev_scn`).
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.details.get(name).and_then(serde_json::Value::as_u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_keeps_its_details() {
        let body = br#"{"error":"scn_not_found","message":"gone","prev_scn":70,"buffer":"shop"}"#;
        let e = ErrorEnvelope::parse(body).unwrap();
        assert_eq!(
            (e.error.as_str(), e.message.as_str()),
            ("scn_not_found", "gone")
        );
        assert_eq!(e.u64("prev_scn"), Some(70));
        assert_eq!(e.details["buffer"], "shop");
        assert!(ErrorEnvelope::parse(b"<html>").is_none());
    }
}
