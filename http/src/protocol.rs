//! The wire protocol in one place for every server and follower: the headers of `stream` answers,
//! their content types, the JSON error envelope both servers answer with, how a `stream` request is
//! written ([`StreamQuery`]) and what its answer means ([`StreamAnswer`]) (docs/protocol.md,
//! docs/bootstrap-protocol.md). The client library, relay chaining, the bootstrap producer and
//! `databus tail` all read answers through it.

use std::time::Duration;

use bytes::Bytes;
use databus_core::Checkpoint;
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

/// What `GET /health` says, the same on the relay and the bootstrap server (docs/operations.md,
/// "Health"): `ok` and `degraded` answer `200` (the server does its job; when degraded, something is
/// recovering by itself and `problems` says what), `unhealthy` answers `503` (a part stopped doing its
/// job and needs an operator; `problems` names it and the fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything runs.
    Ok,
    /// Serving, with something recovering by itself (e.g. a relay source reconnecting).
    Degraded,
    /// A part stopped doing its job: an operator must act.
    Unhealthy,
}

/// One thing wrong in a [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthProblem {
    /// What is wrong: `source <name>` on the relay, `producer` or `applier` on the bootstrap server.
    pub component: String,
    /// Its state (`failed`, `reconnecting`, `blocked`, `behind`, ...).
    pub state: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The server's own details (the relay's `source`, the bootstrap server's `role`).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The body of `GET /health` on both servers: `{"status": .., "problems": [..]}`; an `unhealthy`
/// answer is also an [`ErrorEnvelope`] (`error: "unavailable"`, `message`, and the
/// [`ERROR_HEADER`]), as every `503` of the servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// What is wrong (empty when `ok`).
    pub problems: Vec<HealthProblem>,
}

impl Health {
    /// The verdict of `problems`: `unhealthy` if one of them is not `recovering`, else `degraded` if
    /// there are any, else `ok`.
    pub fn of(problems: Vec<(HealthProblem, bool)>) -> Health {
        let status = if problems.iter().any(|(_, recovering)| !recovering) {
            HealthStatus::Unhealthy
        } else if problems.is_empty() {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        };
        Health {
            status,
            problems: problems.into_iter().map(|(p, _)| p).collect(),
        }
    }

    /// `200`, or `503` when unhealthy.
    pub fn http_status(&self) -> u16 {
        match self.status {
            HealthStatus::Ok | HealthStatus::Degraded => 200,
            HealthStatus::Unhealthy => 503,
        }
    }

    /// The JSON body (see [`Health`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "status": self.status, "problems": self.problems });
        if self.status == HealthStatus::Unhealthy {
            let message = self
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.component, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            body["error"] = HEALTH_ERROR.into();
            body["message"] = message.into();
        }
        body
    }
}

/// The error code of an unhealthy `/health` answer.
pub const HEALTH_ERROR: &str = "unavailable";

/// A `GET /v1/stream` request of the relay, but for its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// `buffer=`: the physical source (needed when the relay has several and no `sources` names one).
    pub buffer: Option<String>,
    /// `sources=`: logical sources (ids or names, ranges).
    pub sources: Option<String>,
    /// `partition=`: key partitions (`mod:N:b`, `range:W:b`), each repeated.
    pub partitions: Vec<String>,
    /// `format=json` instead of binary frames.
    pub json: bool,
    /// `wait_ms=`: the long poll.
    pub wait: Duration,
    /// `max_bytes=`, when set.
    pub max_bytes: Option<usize>,
    /// A filter already written as query parameters (`sources=..&partition=..&partition.<source>=..`,
    /// as `FilterSpec::to_query` writes it), appended as it is.
    pub filter: Option<String>,
    /// `empty_windows=coalesce`: a run of windows with nothing for this request gets only the end
    /// marker of its last window (default: every window's marker). Relays before this parameter
    /// refuse it with `400`.
    pub coalesce_empty_windows: bool,
}

impl StreamQuery {
    /// The path and query after `checkpoint` (none: after SCN 0, the beginning).
    pub fn path(&self, checkpoint: Option<&Checkpoint>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(b) = &self.buffer {
            q.append_pair("buffer", b);
        }
        if let Some(s) = &self.sources {
            q.append_pair("sources", s);
        }
        for p in &self.partitions {
            q.append_pair("partition", p);
        }
        if self.json {
            q.append_pair("format", "json");
        }
        if self.coalesce_empty_windows {
            q.append_pair("empty_windows", "coalesce");
        }
        q.append_pair("wait_ms", &self.wait.as_millis().to_string());
        if let Some(m) = self.max_bytes {
            q.append_pair("max_bytes", &m.to_string());
        }
        if let Some(cp) = checkpoint {
            q.append_pair("checkpoint", &cp.to_json());
        }
        let mut query = q.finish();
        if let Some(filter) = self.filter.as_deref().filter(|f| !f.is_empty()) {
            query.push('&');
            query.push_str(filter);
        }
        format!("/v1/stream?{query}")
    }
}

/// What a `stream` answer (relay or bootstrap server) means to a follower.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamAnswer {
    /// `200`: the body (frames, or JSON lines), the checkpoint to continue from, and whether more is
    /// available now.
    Data {
        /// Whole frames back to back (or JSON lines).
        body: Bytes,
        /// Where to continue.
        checkpoint: Checkpoint,
        /// The answer stopped at its byte budget.
        more: bool,
    },
    /// `410`: the server does not hold what follows the checkpoint (`scn_not_found`; the bootstrap
    /// server's `snapshot_required`, `log_trimmed`): a definite answer for this checkpoint on this
    /// server.
    Gone(ErrorEnvelope),
    /// `503` or another `5xx` (`overloaded`, `not_positioned`, `too_many_connections`,
    /// `not_yet_at_scn`, ...): retry later, with backoff, or on another server.
    Busy(ErrorEnvelope),
    /// `401`: the token is missing or not accepted (definite: retrying sends the same token).
    Unauthorized(ErrorEnvelope),
    /// Another `4xx`: the request itself is wrong (definite).
    Refused {
        /// The status.
        status: u16,
        /// The server's explanation.
        envelope: ErrorEnvelope,
    },
}

/// A `200` answer that breaks the protocol (transient: the next request may do better).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl StreamAnswer {
    /// Reads an answer from its status, headers (by lowercase name) and body.
    pub fn from_parts<'a>(
        status: u16,
        header: impl Fn(&str) -> Option<&'a str>,
        body: Bytes,
    ) -> Result<StreamAnswer, ProtocolError> {
        let envelope = || {
            ErrorEnvelope::parse(&body).unwrap_or_else(|| ErrorEnvelope {
                error: header(ERROR_HEADER).unwrap_or("unknown").to_owned(),
                message: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ),
                details: serde_json::Map::new(),
            })
        };
        Ok(match status {
            200 => {
                let text = header(CHECKPOINT_HEADER).ok_or_else(|| {
                    ProtocolError("stream answer without X-Databus-Checkpoint".into())
                })?;
                let checkpoint = Checkpoint::from_json(text)
                    .map_err(|e| ProtocolError(format!("bad X-Databus-Checkpoint: {e}")))?;
                let more = header(MORE_HEADER) == Some("true");
                StreamAnswer::Data {
                    body,
                    checkpoint,
                    more,
                }
            }
            410 => StreamAnswer::Gone(envelope()),
            401 => StreamAnswer::Unauthorized(envelope()),
            500..=599 => StreamAnswer::Busy(envelope()),
            status => StreamAnswer::Refused {
                status,
                envelope: envelope(),
            },
        })
    }

    /// From a response of [`crate::HttpClient`].
    pub fn from_response(r: crate::Response) -> Result<StreamAnswer, ProtocolError> {
        let headers = r.headers;
        StreamAnswer::from_parts(
            r.status,
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            r.body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::Scn;

    #[test]
    fn a_query_names_every_parameter_and_encodes_the_checkpoint() {
        let q = StreamQuery {
            buffer: Some("shop".into()),
            partitions: vec!["mod:4:1".into()],
            wait: Duration::from_millis(1500),
            max_bytes: Some(4096),
            ..StreamQuery::default()
        };
        let path = q.path(Some(&Checkpoint::after(Scn::new(7))));
        assert!(path.starts_with("/v1/stream?buffer=shop&partition=mod%3A4%3A1&wait_ms=1500&max_bytes=4096&checkpoint=%7B"), "{path}");
        let back: Vec<(String, String)> =
            form_urlencoded::parse(path.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        let cp = &back.iter().find(|(k, _)| k == "checkpoint").unwrap().1;
        assert_eq!(
            Checkpoint::from_json(cp).unwrap(),
            Checkpoint::after(Scn::new(7))
        );
        assert!(!StreamQuery::default().path(None).contains("checkpoint"));
        assert!(!StreamQuery::default().path(None).contains("empty_windows"));
        let coalescing = StreamQuery {
            coalesce_empty_windows: true,
            ..StreamQuery::default()
        };
        assert!(
            coalescing
                .path(None)
                .contains("?empty_windows=coalesce&wait_ms=0")
        );
    }

    #[test]
    fn answers_are_classified_by_status_with_their_envelope() {
        let cp = Checkpoint::after(Scn::new(9)).to_json();
        let h = |name: &str| match name {
            CHECKPOINT_HEADER => Some(cp.as_str()),
            MORE_HEADER => Some("true"),
            _ => None,
        };
        match StreamAnswer::from_parts(200, h, Bytes::from_static(b"frames")).unwrap() {
            StreamAnswer::Data {
                checkpoint,
                more,
                body,
            } => {
                assert_eq!(checkpoint, Checkpoint::after(Scn::new(9)));
                assert!(more);
                assert_eq!(&body[..], b"frames");
            }
            other => panic!("{other:?}"),
        }
        assert!(StreamAnswer::from_parts(200, |_| None, Bytes::new()).is_err());
        let gone = br#"{"error":"scn_not_found","message":"gone","prev_scn":70}"#;
        match StreamAnswer::from_parts(410, |_| None, Bytes::from_static(gone)).unwrap() {
            StreamAnswer::Gone(e) => assert_eq!(e.u64("prev_scn"), Some(70)),
            other => panic!("{other:?}"),
        }
        for (status, kind) in [
            (503, "busy"),
            (502, "busy"),
            (401, "unauthorized"),
            (400, "refused"),
        ] {
            let a =
                StreamAnswer::from_parts(status, |_| None, Bytes::from_static(b"<html>")).unwrap();
            let got = match a {
                StreamAnswer::Busy(_) => "busy",
                StreamAnswer::Unauthorized(_) => "unauthorized",
                StreamAnswer::Refused { .. } => "refused",
                _ => "other",
            };
            assert_eq!(got, kind, "{status}");
        }
    }

    #[test]
    fn health_means_the_same_everywhere() {
        let problem = |component: &str| HealthProblem {
            component: component.into(),
            state: "x".into(),
            message: "fix it".into(),
            details: serde_json::Map::new(),
        };
        let ok = Health::of(vec![]);
        assert_eq!((ok.status, ok.http_status()), (HealthStatus::Ok, 200));
        assert_eq!(
            ok.to_json(),
            serde_json::json!({"status": "ok", "problems": []})
        );
        let degraded = Health::of(vec![(problem("source a"), true)]);
        assert_eq!(
            (degraded.status, degraded.http_status()),
            (HealthStatus::Degraded, 200)
        );
        assert!(degraded.to_json().get("error").is_none());
        let bad = Health::of(vec![
            (problem("source a"), true),
            (problem("producer"), false),
        ]);
        assert_eq!(
            (bad.status, bad.http_status()),
            (HealthStatus::Unhealthy, 503)
        );
        let body = bad.to_json();
        assert_eq!(body["status"], "unhealthy");
        let envelope = ErrorEnvelope::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(envelope.error, "unavailable");
        assert!(envelope.message.contains("producer: fix it"), "{body}");
        let back: Health = serde_json::from_value(body).unwrap();
        assert_eq!(back, bad);
    }

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
