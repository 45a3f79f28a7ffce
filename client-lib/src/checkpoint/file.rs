//! A checkpoint file replaced atomically, keeping the previous version.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use databus_core::Checkpoint;

use super::{CheckpointStore, CheckpointStoreError};

/// Stores the checkpoint as JSON in one file.
///
/// `store` writes `<file>.tmp`, fsyncs it, moves the current file to `<file>.prev`, renames the temporary
/// file over `<file>` and fsyncs the directory. At every instant `<file>` or `<file>.prev` holds a whole
/// checkpoint. `load` never falls back silently: a corrupt `<file>` is an error naming it (the operator
/// may then restore `<file>.prev` by hand, knowing the consumer will replay from there).
#[derive(Debug)]
pub struct FileCheckpointStore {
    path: PathBuf,
    // Serializes writers inside this process; different processes must not share a checkpoint file.
    write_lock: Mutex<()>,
}

fn io_err(path: &Path, source: io::Error) -> CheckpointStoreError {
    CheckpointStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

impl FileCheckpointStore {
    /// A store at `path`; its directory is created if missing.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, CheckpointStoreError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        Ok(FileCheckpointStore {
            path,
            write_lock: Mutex::new(()),
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file that keeps the previous checkpoint.
    pub fn previous_path(&self) -> PathBuf {
        sibling(&self.path, ".prev")
    }

    /// The previous checkpoint, if one is kept.
    pub fn load_previous(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        read_optional(&self.previous_path())
    }
}

fn read_optional(path: &Path) -> Result<Option<Checkpoint>, CheckpointStoreError> {
    match fs::metadata(path) {
        Ok(_) => Ok(Some(Checkpoint::read_file(path)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointStoreError> {
        read_optional(&self.path)
    }

    fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = sibling(&self.path, ".tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        file.write_all(checkpoint.to_json().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        drop(file);
        if self.path.exists() {
            let prev = self.previous_path();
            // A hard link keeps `path` in place until the rename below replaces it.
            let _ = fs::remove_file(&prev);
            fs::hard_link(&self.path, &prev)
                .or_else(|_| fs::copy(&self.path, &prev).map(|_| ()))
                .map_err(|e| io_err(&prev, e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| io_err(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use databus_core::Scn;

    #[test]
    fn stores_loads_and_keeps_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("sub/consumer.json")).unwrap();
        assert!(store.load().unwrap().is_none());
        store.store(&Checkpoint::after(Scn::new(5))).unwrap();
        assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(5))));
        assert!(store.load_previous().unwrap().is_none());
        store.store(&Checkpoint::after(Scn::new(9))).unwrap();
        assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(9))));
        assert_eq!(
            store.load_previous().unwrap(),
            Some(Checkpoint::after(Scn::new(5)))
        );
        // A fresh store over the same file (a restarted process) sees the same checkpoint.
        let again = FileCheckpointStore::new(store.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(Checkpoint::after(Scn::new(9))));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it_not_a_restart_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer.json");
        let store = FileCheckpointStore::new(&path).unwrap();
        store.store(&Checkpoint::after(Scn::new(5))).unwrap();
        fs::write(&path, b"{\"version\":1,\"mode\":\"onl").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("consumer.json"), "{err}");
        assert!(err.contains("not valid JSON"), "{err}");
        // Truncated to nothing: still an error, never "no checkpoint".
        fs::write(&path, b"").unwrap();
        assert!(store.load().is_err());
    }

    #[test]
    fn a_leftover_temporary_file_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer.json");
        let store = FileCheckpointStore::new(&path).unwrap();
        store.store(&Checkpoint::after(Scn::new(5))).unwrap();
        // A crash after writing the temporary file but before the rename leaves it behind.
        fs::write(dir.path().join("consumer.json.tmp"), b"garbage").unwrap();
        assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(5))));
        store.store(&Checkpoint::after(Scn::new(6))).unwrap();
        assert_eq!(store.load().unwrap(), Some(Checkpoint::after(Scn::new(6))));
    }
}
