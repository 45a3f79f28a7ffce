//! The relay's only persisted state: per source, the SCN (and source position) of the last window
//! written to its buffer, so that a restarted relay resumes from the database's log after it.
//!
//! One JSON file per source, `<state_dir>/<source>.state.json`, written atomically (temporary file,
//! fsync, rename, fsync of the directory):
//!
//! ```json
//! {"version":1,"source":"shop","last_scn":1042,"position":{"gtid":"0-1-1042","file":"mariadb-bin.000003","end_position":8812}}
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use databus_connectors::SourcePosition;
use databus_core::Scn;
use serde::{Deserialize, Serialize};

use crate::RelayError;

const STATE_VERSION: u32 = 1;

/// The persisted record of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceState {
    /// Format version (1).
    pub version: u32,
    /// The source's name.
    pub source: String,
    /// The SCN of the last window written.
    pub last_scn: Scn,
    /// The source position of that window, when known.
    #[serde(default)]
    pub position: Option<SourcePosition>,
}

/// The state file of one source.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    source: String,
}

impl StateFile {
    /// The state file of `source` in `dir`.
    pub fn new(dir: &Path, source: &str) -> Self {
        StateFile {
            path: dir.join(format!("{source}.state.json")),
            source: source.to_owned(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, reason: impl Into<String>) -> RelayError {
        RelayError::State {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Reads the record; `None` when the file does not exist (a first start).
    pub fn load(&self) -> Result<Option<SourceState>, RelayError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.corrupt(e.to_string())),
        };
        let state: SourceState =
            serde_json::from_str(&text).map_err(|e| self.corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(self.corrupt(format!(
                "unsupported version {} (this build reads {STATE_VERSION})",
                state.version
            )));
        }
        if state.source != self.source {
            return Err(self.corrupt(format!(
                "it belongs to source {:?}, not {:?}",
                state.source, self.source
            )));
        }
        Ok(Some(state))
    }

    /// Writes the record atomically: a crash leaves either the old or the new file.
    pub fn store(&self, last_scn: Scn, position: Option<SourcePosition>) -> Result<(), RelayError> {
        let state = SourceState {
            version: STATE_VERSION,
            source: self.source.clone(),
            last_scn,
            position,
        };
        let io = |what: &str, e: std::io::Error| RelayError::Io {
            what: format!("{what} {}", self.path.display()),
            source: e,
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
        let text = serde_json::to_string(&state).expect("the state always serializes");
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| io("cannot replace", e))?;
        if let Some(dir) = self.path.parent() {
            // Make the rename durable.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync the directory of", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "shop");
        assert_eq!(file.load().unwrap(), None);
        let position = SourcePosition {
            gtid: "0-1-9".into(),
            file: "bin.000001".into(),
            end_position: 77,
        };
        file.store(Scn::new(9), Some(position.clone())).unwrap();
        file.store(Scn::new(10), Some(position.clone())).unwrap();
        let state = file.load().unwrap().unwrap();
        assert_eq!(state.last_scn, Scn::new(10));
        assert_eq!(state.position, Some(position));
        assert!(!dir.path().join("shop.state.json.tmp").exists());

        std::fs::write(file.path(), b"{\"version\":1,\"sou").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("shop.state.json"), "{err}");
        assert!(err.contains("fix or remove it"), "{err}");

        let other = StateFile::new(dir.path(), "other");
        std::fs::copy(file.path(), other.path()).unwrap();
        file.store(Scn::new(3), None).unwrap();
        std::fs::copy(file.path(), other.path()).unwrap();
        let err = other.load().unwrap_err().to_string();
        assert!(err.contains("belongs to source \"shop\""), "{err}");
    }
}
