//! Consumer checkpoints: where a consumer is in the stream.
//!
//! A checkpoint is owned by the consumer (relays keep no per-consumer state) and persisted as versioned
//! JSON, e.g.
//!
//! ```json
//! {"version":1,"mode":"online","window_scn":120,"window_offset":null,"prev_scn":120}
//! ```
//!
//! Fields:
//!
//! | field | meaning |
//! |-------|---------|
//! | `mode` | `online` (following a relay), `bootstrap_snapshot` or `bootstrap_catchup` |
//! | `window_scn` | the window being consumed, or the last one consumed |
//! | `window_offset` | `null`: window `window_scn` was fully consumed; `k`: its first `k` events were |
//! | `prev_scn` | the last window fully consumed (`null` before the first) |
//! | `bootstrap` | progress through a bootstrap, while one runs |
//!
//! Transitions are methods that check what they are given:
//!
//! | method | accepted when | effect |
//! |--------|---------------|--------|
//! | [`Checkpoint::on_event`] | `scn >= window_scn` (a new window may start only after the last is closed) | counts one event of window `scn` |
//! | [`Checkpoint::on_end_of_window`] | `scn >= window_scn` | window `scn` fully consumed |
//! | [`Checkpoint::start_bootstrap`] | any time | enters `bootstrap_snapshot` (or catch-up for a delta) |
//! | [`Checkpoint::start_catchup`] | in `bootstrap_snapshot` | enters `bootstrap_catchup` up to a target SCN |
//! | [`Checkpoint::finish_bootstrap`] | in `bootstrap_catchup` | back `online` after the target SCN |

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Scn, SourceId};

/// The checkpoint format version this crate writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

/// How the consumer is currently consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumptionMode {
    /// Following a relay.
    Online,
    /// Reading a consistent snapshot (or a consolidated delta) from a bootstrap server.
    BootstrapSnapshot,
    /// Replaying the bootstrap log up to the target SCN.
    BootstrapCatchup,
}

/// Progress through a bootstrap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapProgress {
    /// For a consolidated delta: the SCN the consumer had consumed before falling behind. `None` for a full
    /// snapshot.
    #[serde(default)]
    pub since_scn: Option<Scn>,
    /// The SCN the snapshot phase reads up to (the applier's position when the bootstrap began).
    #[serde(default)]
    pub start_scn: Option<Scn>,
    /// The SCN catch-up replays up to; the consumer returns to the relay there.
    #[serde(default)]
    pub target_scn: Option<Scn>,
    /// The source the snapshot phase is reading.
    #[serde(default)]
    pub snapshot_source: Option<SourceId>,
    /// Opaque resume token inside the snapshot of `snapshot_source` (e.g. the last row id served).
    #[serde(default)]
    pub snapshot_token: Option<String>,
    /// Rows delivered so far in this bootstrap, for progress reporting.
    #[serde(default)]
    pub rows_done: u64,
    /// The bootstrap server's store generation the snapshot phase reads (`None`: generation 0); a
    /// server that re-seeded into another generation since refuses to continue the snapshot, whose
    /// resume token belongs to the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// Where a consumer is in the stream. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version, [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// How the consumer is consuming.
    pub mode: ConsumptionMode,
    /// The window being consumed, or the last one consumed.
    pub window_scn: Scn,
    /// `None` if `window_scn` was fully consumed, else the number of its events consumed.
    #[serde(default)]
    pub window_offset: Option<u32>,
    /// The last window fully consumed.
    #[serde(default)]
    pub prev_scn: Option<Scn>,
    /// Progress through a bootstrap, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapProgress>,
}

/// Why a checkpoint is invalid or a transition is refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not valid checkpoint JSON.
    #[error("checkpoint is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this build does not read.
    #[error(
        "unsupported checkpoint version {found} (this build reads version {CHECKPOINT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// Fields that contradict each other.
    #[error("inconsistent checkpoint: {0}")]
    Inconsistent(String),
    /// An SCN going backwards.
    #[error("SCN regression: checkpoint is at window {current}, got an event of window {got}")]
    ScnRegression {
        /// Where the checkpoint is.
        current: Scn,
        /// What it was given.
        got: Scn,
    },
    /// An event of a new window before the previous window was closed.
    #[error("window {open} is still open, got an event of window {got}")]
    WindowNotClosed {
        /// The open window.
        open: Scn,
        /// The new window.
        got: Scn,
    },
    /// A transition not allowed in the current mode.
    #[error("cannot {action} in mode {mode:?}")]
    BadTransition {
        /// What was attempted.
        action: &'static str,
        /// The current mode.
        mode: ConsumptionMode,
    },
    /// A checkpoint file that cannot be read or parsed.
    #[error(
        "checkpoint file {path} is unusable: {reason}; fix or remove it (a previous version may be kept beside it)"
    )]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Checkpoint {
    /// A checkpoint that consumes every window after `scn`, online.
    pub fn after(scn: Scn) -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            mode: ConsumptionMode::Online,
            window_scn: scn,
            window_offset: None,
            prev_scn: (scn != Scn::ZERO).then_some(scn),
            bootstrap: None,
        }
    }

    /// A new consumer's checkpoint: everything from the beginning of the stream.
    pub fn beginning() -> Self {
        Checkpoint::after(Scn::ZERO)
    }

    /// Parses and validates checkpoint JSON.
    pub fn from_json(text: &str) -> Result<Self, CheckpointError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let probe: VersionOnly = serde_json::from_str(text)?;
        if probe.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                found: probe.version,
            });
        }
        let checkpoint: Checkpoint = serde_json::from_str(text)?;
        checkpoint.validate()?;
        Ok(checkpoint)
    }

    /// Renders this checkpoint as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint always serializes")
    }

    /// Reads and validates a checkpoint file; every failure names the file.
    pub fn read_file(path: &Path) -> Result<Self, CheckpointError> {
        let file_err = |reason: String| CheckpointError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        Checkpoint::from_json(&text).map_err(|e| file_err(e.to_string()))
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if let Some(prev) = self.prev_scn {
            if prev > self.window_scn {
                return Err(CheckpointError::Inconsistent(format!(
                    "prev_scn {prev} is after window_scn {}",
                    self.window_scn
                )));
            }
            if self.window_offset.is_none() && prev != self.window_scn {
                return Err(CheckpointError::Inconsistent(format!(
                    "window {} is fully consumed but prev_scn is {prev}",
                    self.window_scn
                )));
            }
            if self.window_offset.is_some() && prev == self.window_scn {
                return Err(CheckpointError::Inconsistent(format!(
                    "window {} is both in progress and fully consumed",
                    self.window_scn
                )));
            }
        }
        if self.mode != ConsumptionMode::Online && self.bootstrap.is_none() {
            return Err(CheckpointError::Inconsistent(format!(
                "mode {:?} needs bootstrap progress",
                self.mode
            )));
        }
        Ok(())
    }

    /// Whether the consumer is in the middle of a window.
    pub fn is_mid_window(&self) -> bool {
        self.window_offset.is_some()
    }

    /// Records one consumed event of window `scn`.
    pub fn on_event(&mut self, scn: Scn) -> Result<(), CheckpointError> {
        match self.window_offset {
            Some(k) if scn == self.window_scn => self.window_offset = Some(k + 1),
            Some(_) if scn > self.window_scn => {
                return Err(CheckpointError::WindowNotClosed {
                    open: self.window_scn,
                    got: scn,
                });
            }
            None if scn > self.window_scn
                || (scn == self.window_scn && self.prev_scn.is_none()) =>
            {
                self.window_scn = scn;
                self.window_offset = Some(1);
            }
            _ => {
                return Err(CheckpointError::ScnRegression {
                    current: self.window_scn,
                    got: scn,
                });
            }
        }
        Ok(())
    }

    /// Records that window `scn` was fully consumed.
    pub fn on_end_of_window(&mut self, scn: Scn) -> Result<(), CheckpointError> {
        if scn < self.window_scn {
            return Err(CheckpointError::ScnRegression {
                current: self.window_scn,
                got: scn,
            });
        }
        if self.window_offset.is_some() && scn != self.window_scn {
            return Err(CheckpointError::WindowNotClosed {
                open: self.window_scn,
                got: scn,
            });
        }
        if self.window_offset.is_none() && self.prev_scn == Some(scn) {
            return Err(CheckpointError::ScnRegression {
                current: self.window_scn,
                got: scn,
            });
        }
        self.window_scn = scn;
        self.window_offset = None;
        self.prev_scn = Some(scn);
        Ok(())
    }

    /// Enters a bootstrap. `since_scn` is the last SCN consumed for a consolidated delta, `None` for a
    /// full snapshot.
    pub fn start_bootstrap(&mut self, since_scn: Option<Scn>) {
        self.mode = ConsumptionMode::BootstrapSnapshot;
        self.bootstrap = Some(BootstrapProgress {
            since_scn,
            ..BootstrapProgress::default()
        });
    }

    /// Leaves the snapshot phase for catch-up from the log up to `target_scn`.
    pub fn start_catchup(
        &mut self,
        start_scn: Scn,
        target_scn: Scn,
    ) -> Result<(), CheckpointError> {
        if self.mode != ConsumptionMode::BootstrapSnapshot {
            return Err(CheckpointError::BadTransition {
                action: "start catch-up",
                mode: self.mode,
            });
        }
        if target_scn < start_scn {
            return Err(CheckpointError::Inconsistent(format!(
                "catch-up target {target_scn} is before its start {start_scn}"
            )));
        }
        let progress = self
            .bootstrap
            .get_or_insert_with(BootstrapProgress::default);
        progress.start_scn = Some(start_scn);
        progress.target_scn = Some(target_scn);
        progress.snapshot_source = None;
        progress.snapshot_token = None;
        self.mode = ConsumptionMode::BootstrapCatchup;
        Ok(())
    }

    /// Ends a bootstrap: the consumer's state is the source's at `target_scn`, and it follows the relay
    /// from there.
    pub fn finish_bootstrap(&mut self, target_scn: Scn) -> Result<(), CheckpointError> {
        if self.mode != ConsumptionMode::BootstrapCatchup {
            return Err(CheckpointError::BadTransition {
                action: "finish bootstrap",
                mode: self.mode,
            });
        }
        *self = Checkpoint::after(target_scn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_shape() {
        let cp = Checkpoint::after(Scn::new(120));
        let json = cp.to_json();
        assert_eq!(
            json,
            r#"{"version":1,"mode":"online","window_scn":120,"window_offset":null,"prev_scn":120}"#
        );
        assert_eq!(Checkpoint::from_json(&json).unwrap(), cp);
    }

    #[test]
    fn transitions_follow_windows() {
        let mut cp = Checkpoint::beginning();
        cp.on_event(Scn::new(5)).unwrap();
        cp.on_event(Scn::new(5)).unwrap();
        assert_eq!(cp.window_offset, Some(2));
        assert!(cp.validate().is_ok());
        assert!(matches!(
            cp.on_event(Scn::new(6)),
            Err(CheckpointError::WindowNotClosed { .. })
        ));
        cp.on_end_of_window(Scn::new(5)).unwrap();
        assert_eq!(cp, Checkpoint::after(Scn::new(5)));
        assert!(matches!(
            cp.on_event(Scn::new(4)),
            Err(CheckpointError::ScnRegression { .. })
        ));
        assert!(matches!(
            cp.on_end_of_window(Scn::new(5)),
            Err(CheckpointError::ScnRegression { .. })
        ));
        // A heartbeat: an empty window.
        cp.on_end_of_window(Scn::new(9)).unwrap();
        assert_eq!(cp.prev_scn, Some(Scn::new(9)));
    }

    #[test]
    fn bootstrap_transitions() {
        let mut cp = Checkpoint::after(Scn::new(3));
        assert!(cp.start_catchup(Scn::new(1), Scn::new(2)).is_err());
        cp.start_bootstrap(Some(Scn::new(3)));
        assert_eq!(cp.mode, ConsumptionMode::BootstrapSnapshot);
        assert!(cp.validate().is_ok());
        assert!(cp.finish_bootstrap(Scn::new(9)).is_err());
        cp.start_catchup(Scn::new(7), Scn::new(9)).unwrap();
        let json = cp.to_json();
        assert_eq!(Checkpoint::from_json(&json).unwrap(), cp);
        cp.finish_bootstrap(Scn::new(9)).unwrap();
        assert_eq!(cp, Checkpoint::after(Scn::new(9)));
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        for (text, needle) in [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            (r#"{"version":2}"#, "unsupported checkpoint version 2"),
            (
                r#"{"version":1,"mode":"online","window_scn":1,"prev_scn":2}"#,
                "prev_scn 2 is after",
            ),
            (
                r#"{"version":1,"mode":"warp","window_scn":1}"#,
                "unknown variant",
            ),
            (
                r#"{"version":1,"mode":"online","window_scn":1,"extra":0}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"mode":"bootstrap_snapshot","window_scn":1,"prev_scn":1}"#,
                "needs bootstrap progress",
            ),
        ] {
            let err = Checkpoint::from_json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn corrupt_file_names_the_file() {
        let dir = std::env::temp_dir().join(format!("databus-cp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.json");
        std::fs::write(&path, b"{\"version\":1,\"mo").unwrap();
        let err = Checkpoint::read_file(&path).unwrap_err().to_string();
        assert!(err.contains("checkpoint.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
