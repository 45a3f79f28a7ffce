//! The relay's only persisted state: per source, the SCN (and source position) of the last window
//! written to its buffer, so that a restarted relay resumes from the database's log after it.
//!
//! One JSON file per source, `<state_dir>/<source>.state.json`, written atomically (temporary file,
//! fsync, rename, fsync of the directory):
//!
//! ```json
//! {"version":1,"source":"shop","last_scn":1042,"position":{"gtid":"0-1-1042","file":"mariadb-bin.000003","end_position":8812}}
//! ```
//!
//! `position` is the connector's opaque [`SourcePosition`], stored as the connector serialized it (the
//! MariaDB connector's is the object above, so files written before positions became opaque read
//! unchanged).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use databus_connectors::SourcePosition;
use databus_core::Scn;
use databus_http::backoff::{Backoff, BackoffConfig};
use serde::{Deserialize, Serialize};

use crate::RelayError;

const STATE_VERSION: u32 = 1;

/// How often the last SCN is persisted at most while windows flow.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts of a forced write (at shutdown) when it fails transiently.
const FORCED_ATTEMPTS: u32 = 6;

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

/// Keeps a source's state file up to date: at most once per [`PERSIST_INTERVAL`] while windows flow,
/// and on demand (shutdown).
///
/// The file is a resume hint: a write that fails for a passing reason (out of file descriptors, a
/// momentarily full disk; see [`RelayError::is_transient_io`]) is logged and tried again later, never
/// a reason to stop capture. A restart meanwhile resumes from the older record it left, which re-reads
/// a few windows (never skips any). Other failures are definite.
#[derive(Debug)]
pub struct Persister {
    file: StateFile,
    name: String,
    persisted: Scn,
    last_attempt: Option<tokio::time::Instant>,
    failures: u64,
}

impl Persister {
    /// A persister of `file` for source `name`, whose file holds `persisted` (0: nothing yet).
    pub fn new(file: StateFile, name: &str, persisted: Scn) -> Self {
        Persister {
            file,
            name: name.to_owned(),
            persisted,
            last_attempt: None,
            failures: 0,
        }
    }

    /// The SCN the file holds.
    pub fn persisted(&self) -> Scn {
        self.persisted
    }

    /// Writes `last` (and its source position) when it is new and the interval has passed, or now
    /// with `force` (retrying a transient failure a few times with backoff).
    pub async fn persist(
        &mut self,
        last: Scn,
        position: Option<SourcePosition>,
        force: bool,
    ) -> Result<(), RelayError> {
        if last == Scn::ZERO || last == self.persisted {
            return Ok(());
        }
        if !force
            && self
                .last_attempt
                .is_some_and(|t| t.elapsed() < PERSIST_INTERVAL)
        {
            return Ok(());
        }
        let mut backoff = Backoff::new(BackoffConfig::doubling(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ));
        let mut attempt = 1;
        loop {
            self.last_attempt = Some(tokio::time::Instant::now());
            let file = self.file.clone();
            let position = position.clone();
            let stored = tokio::task::spawn_blocking(move || file.store(last, position))
                .await
                .map_err(|e| RelayError::Ingest {
                    name: self.name.clone(),
                    message: format!("state writer panicked: {e}"),
                })?;
            match stored {
                Ok(()) => {
                    if self.failures > 0 {
                        tracing::info!(source = %self.name, failures = self.failures, "state file written again");
                        self.failures = 0;
                    }
                    self.persisted = last;
                    return Ok(());
                }
                Err(e) if e.is_transient_io() => {
                    self.failures += 1;
                    crate::metrics::state_write_failed(&self.name);
                    tracing::warn!(source = %self.name, error = %e, failures = self.failures, "cannot write the state file for now; capture goes on and it is tried again");
                    if !force || attempt >= FORCED_ATTEMPTS {
                        return if force { Err(e) } else { Ok(()) };
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_io_errors_are_transient_and_others_are_not() {
        let io = |code: i32| RelayError::Io {
            what: "cannot create state".into(),
            source: std::io::Error::from_raw_os_error(code),
        };
        // EMFILE, ENFILE, ENOSPC, EDQUOT, EAGAIN, EINTR, ENOMEM.
        for code in [24, 23, 28, 122, 11, 4, 12] {
            assert!(io(code).is_transient_io(), "errno {code}");
        }
        // EACCES, ENOENT, EROFS, ENOTDIR: an operator must act.
        for code in [13, 2, 30, 20] {
            assert!(!io(code).is_transient_io(), "errno {code}");
        }
        assert!(!RelayError::Setup("x".into()).is_transient_io());
    }

    /// Out of file descriptors: the write fails transiently, capture is not stopped (the call
    /// succeeds, nothing is written), and a later write goes through once descriptors are free.
    #[tokio::test]
    async fn a_write_failing_for_lack_of_descriptors_is_retried_not_fatal() {
        const CHILD: &str = "DATABUS_STATE_EMFILE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            // Exhausting descriptors would disturb the other tests of this process: run this one
            // alone in a child process with a low open-file limit.
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg("ulimit -n 64 && exec \"$0\" --exact state::tests::a_write_failing_for_lack_of_descriptors_is_retried_not_fatal --nocapture")
                .arg(&exe)
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "shop");
        let mut persister = Persister::new(file.clone(), "shop", Scn::ZERO);
        let held = exhaust_descriptors();
        let r = persister.persist(Scn::new(5), None, false).await;
        drop(held);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(persister.persisted(), Scn::ZERO, "nothing was written");
        assert_eq!(file.load().unwrap(), None);
        // Within the interval nothing is tried; a forced write goes through now.
        persister.persist(Scn::new(6), None, false).await.unwrap();
        assert_eq!(persister.persisted(), Scn::ZERO);
        persister.persist(Scn::new(6), None, true).await.unwrap();
        assert_eq!(persister.persisted(), Scn::new(6));
        assert_eq!(file.load().unwrap().unwrap().last_scn, Scn::new(6));
    }

    /// Opens files until the process has no descriptor left; they close when dropped.
    fn exhaust_descriptors() -> Vec<std::fs::File> {
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
            assert!(held.len() < 100_000, "the open-file limit was not lowered");
        }
        held
    }

    #[test]
    fn a_state_file_written_before_positions_were_opaque_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "shop");
        std::fs::write(
            file.path(),
            r#"{"version":1,"source":"shop","last_scn":1042,"position":{"gtid":"0-1-1042","file":"mariadb-bin.000003","end_position":8812}}"#,
        )
        .unwrap();
        let state = file.load().unwrap().unwrap();
        assert_eq!(state.last_scn, Scn::new(1042));
        let position = databus_connectors::mysql::MySqlPosition::from_position(
            state.position.as_ref().unwrap(),
        )
        .unwrap();
        assert_eq!(position.gtid, "0-1-1042");
        assert_eq!(position.end_position, 8812);
    }

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "shop");
        assert_eq!(file.load().unwrap(), None);
        let position = SourcePosition::new(serde_json::json!({
            "gtid": "0-1-9",
            "file": "bin.000001",
            "end_position": 77
        }));
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
