//! Store generations: how a bootstrap database is re-seeded without stopping service.
//!
//! When the log can no longer be continued (the relay evicted what follows it and the source's binlog
//! purged it too), the only repair is a new consistent snapshot. The producer seeds it into a **new
//! generation**: a new database file beside the configured one, while every other role keeps serving
//! the current generation. Once the new generation holds a complete seed and its log has caught up with
//! the relay, the producer publishes it and every role (in this process or another one on the same
//! files) switches to it.
//!
//! | generation | file |
//! |------------|------|
//! | 0 | `db_path` itself (databases made before generations existed are generation 0) |
//! | n ≥ 1 | `db_path` + `.g<n>` |
//! | current | named by `db_path` + `.generation` (one decimal number; absent: 0), replaced atomically |
//!
//! A consumer in the middle of a snapshot carries the generation it started in (the checkpoint's
//! `bootstrap.generation`); the server refuses to continue it in another generation (`410
//! generation_changed`: its rows and resume tokens belong to the old file) and the client starts that
//! bootstrap again. Catch-up and log-only deltas continue across a switch: log windows are the relay's
//! windows, the same in every generation, and the new log says (`log_trimmed`) when it does not reach
//! back far enough.
//!
//! The previous generation's file is kept until the next switch (a server in another process may still
//! be finishing a request on it); older ones are deleted when a generation is published.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::BootstrapError;
use crate::store::{BootstrapStore, SqliteOptions, SqliteStore};

/// How often roles look at the generation pointer.
pub const POLL: Duration = Duration::from_millis(200);

/// The generations of one bootstrap database.
#[derive(Debug, Clone)]
pub struct Generations {
    base: PathBuf,
}

impl Generations {
    /// The generations of the database configured at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Generations {
        Generations {
            base: db_path.into(),
        }
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut name = self.base.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }

    /// The file naming the current generation.
    pub fn pointer_path(&self) -> PathBuf {
        self.with_suffix(".generation")
    }

    /// The database file of generation `n`.
    pub fn path_of(&self, n: u64) -> PathBuf {
        if n == 0 {
            self.base.clone()
        } else {
            self.with_suffix(&format!(".g{n}"))
        }
    }

    /// The current generation (0 when no generation was ever published).
    pub fn current(&self) -> Result<u64, BootstrapError> {
        let path = self.pointer_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                BootstrapError::Corrupt(format!(
                    "{} holds {:?}, not a generation number; write the number of the newest complete generation file ({}.g<n>) into it, or 0 for {}",
                    path.display(),
                    text.trim(),
                    self.base.display(),
                    self.base.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(BootstrapError::Io {
                what: format!("cannot read {}", path.display()),
                source: e,
            }),
        }
    }

    /// Opens generation `n`'s database (created if missing).
    pub fn open(
        &self,
        n: u64,
        options: SqliteOptions,
    ) -> Result<Arc<dyn BootstrapStore>, BootstrapError> {
        Ok(Arc::new(SqliteStore::open_with(self.path_of(n), options)?))
    }

    /// The current generation and its database.
    pub fn open_current(
        &self,
        options: SqliteOptions,
    ) -> Result<(u64, Arc<dyn BootstrapStore>), BootstrapError> {
        let n = self.current()?;
        Ok((n, self.open(n, options)?))
    }

    /// Makes `n` the current generation: the pointer is written to a temporary file, synced, and
    /// renamed over the old one (atomic on POSIX file systems), then the directory is synced.
    pub fn publish(&self, n: u64) -> Result<(), BootstrapError> {
        let path = self.pointer_path();
        let tmp = self.with_suffix(".generation.tmp");
        let io = |what: &str, e| BootstrapError::Io {
            what: format!("{what} {}", path.display()),
            source: e,
        };
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot write", e))?;
            writeln!(f, "{n}").map_err(|e| io("cannot write", e))?;
            f.sync_all().map_err(|e| io("cannot sync", e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Deletes the files (database, WAL, shared memory) of every generation before `keep_from`.
    pub fn remove_before(&self, keep_from: u64) {
        for n in 0..keep_from {
            self.remove_files(n);
        }
    }

    /// Deletes the files (database, WAL, shared memory) of generation `n`.
    pub fn remove_files(&self, n: u64) {
        let db = self.path_of(n);
        for path in [db.clone(), suffixed(&db, "-wal"), suffixed(&db, "-shm")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a bootstrap generation's file")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a bootstrap generation's file")
                }
            }
        }
    }

    /// Waits until the current generation is no longer `n` (or `stop` is cancelled), checking every
    /// [`POLL`]. Errors reading the pointer are logged and retried.
    pub async fn wait_change(&self, n: u64, stop: &CancellationToken) -> Option<u64> {
        loop {
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
            match self.current() {
                Ok(m) if m != n => return Some(m),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the bootstrap generation"),
            }
        }
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.to_path_buf().into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Runs `role` on the current generation's database and again on the next one each time another
/// generation is published, until `shutdown`. The role gets a token that is cancelled at a switch (it
/// must then return); an error it returns ends this function.
pub async fn follow<F, Fut>(
    generations: &Generations,
    options: SqliteOptions,
    shutdown: &CancellationToken,
    what: &'static str,
    mut role: F,
) -> Result<(), BootstrapError>
where
    F: FnMut(Arc<dyn BootstrapStore>, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), BootstrapError>>,
{
    loop {
        let (n, store) = generations.open_current(options)?;
        let token = shutdown.child_token();
        let watcher = tokio::spawn({
            let (generations, token) = (generations.clone(), token.clone());
            async move {
                if let Some(m) = generations.wait_change(n, &token).await {
                    tracing::info!(
                        role = what,
                        from = n,
                        to = m,
                        "switching to a new bootstrap generation"
                    );
                    token.cancel();
                }
            }
        });
        let result = role(store, token.clone()).await;
        watcher.abort();
        if shutdown.is_cancelled() || result.is_err() || !token.is_cancelled() {
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_round_trips_and_names_its_fix_when_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::new(dir.path().join("b.sqlite"));
        assert_eq!(g.current().unwrap(), 0);
        assert_eq!(g.path_of(0), dir.path().join("b.sqlite"));
        assert_eq!(g.path_of(3), dir.path().join("b.sqlite.g3"));
        g.publish(3).unwrap();
        assert_eq!(g.current().unwrap(), 3);
        g.publish(4).unwrap();
        assert_eq!(g.current().unwrap(), 4);
        std::fs::write(g.pointer_path(), "four").unwrap();
        let e = g.current().unwrap_err().to_string();
        assert!(
            e.contains("not a generation number") && e.contains("b.sqlite.g<n>"),
            "{e}"
        );
    }

    #[test]
    fn old_generations_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::new(dir.path().join("b.sqlite"));
        for n in 0..3 {
            g.open(n, SqliteOptions::default()).unwrap();
        }
        g.remove_before(2);
        assert!(!g.path_of(0).exists() && !g.path_of(1).exists());
        assert!(g.path_of(2).exists());
    }

    #[tokio::test]
    async fn a_following_role_moves_to_the_published_generation() {
        let dir = tempfile::tempdir().unwrap();
        let g = Generations::new(dir.path().join("b.sqlite"));
        let shutdown = CancellationToken::new();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (g, shutdown, seen) = (g.clone(), shutdown.clone(), seen.clone());
            async move {
                follow(
                    &g,
                    SqliteOptions::default(),
                    &shutdown,
                    "test",
                    |store, token| {
                        let seen = seen.clone();
                        async move {
                            seen.lock().unwrap().push(store.log_status()?.floor_scn);
                            token.cancelled().await;
                            Ok(())
                        }
                    },
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = g.open(1, SqliteOptions::default()).unwrap();
        next.start_log(databus_core::Scn::new(7)).unwrap();
        g.publish(1).unwrap();
        for _ in 0..100 {
            if seen.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![None, Some(databus_core::Scn::new(7))]
        );
    }
}
