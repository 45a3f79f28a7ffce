//! A private PostgreSQL server per test: [`Postgres::start`].
//!
//! It runs `initdb` into a temporary directory and starts `postgres` on it with the settings logical
//! replication needs (`wal_level=logical`, `max_replication_slots`, `max_wal_senders`), on a free port of
//! 127.0.0.1 and with its unix socket in the same temporary directory, so instances never meet.
//! The binaries are found on `PATH` or in `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package,
//! installed by `scripts/setup.sh`).
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres` run as the
//! `postgres` system user (the package creates it) and the temporary directory is given to it.
//!
//! The superuser is `postgres` with password [`Postgres::PASSWORD`] (SCRAM over TCP, so connectors test
//! their real authentication path). The server never outlives its [`Postgres`]: [`Drop`] kills it
//! (SIGKILL) and removes the directory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_testkit::TestkitError> {
//! use databus_testkit::Postgres;
//!
//! let pg = Postgres::start().await?;
//! pg.exec(&["CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)"]).await?;
//! assert_eq!(pg.query_string("SELECT count(*)::text FROM t").await?.as_deref(), Some("1"));
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, STATEMENT_TIMEOUT, TestkitError, free_port, io_err};

/// A private PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    bin: PathBuf,
    /// `(uid, gid)` to run the server as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

/// Finds the directory holding `initdb` and `postgres`: on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| TestkitError::Missing {
            what: "PostgreSQL (initdb, postgres)".into(),
            fix: "run scripts/setup.sh (installs Debian's postgresql)".into(),
        })
}

/// The `postgres` user's uid and gid, when this process runs as root (PostgreSQL refuses root).
fn run_as() -> Result<Option<(u32, u32)>> {
    let me = Command::new("id")
        .arg("-u")
        .output()
        .map_err(io_err("run id -u"))?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(io_err("run id postgres"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| TestkitError::Missing {
                what: "the postgres system user (PostgreSQL does not run as root)".into(),
                fix: "run scripts/setup.sh (Debian's postgresql creates it)".into(),
            })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

impl Postgres {
    /// The superuser's password.
    pub const PASSWORD: &'static str = "postgres-test";

    /// Initializes a data directory and starts a server on it; waits until it accepts connections.
    pub async fn start() -> Result<Postgres> {
        let bin = bin_dir()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("databus-postgres-")
            .tempdir()
            .map_err(io_err("create the instance temp dir"))?;
        let mut pg = Postgres {
            dir,
            port: 0,
            child: None,
            bin,
            run_as,
        };
        if let Some((uid, gid)) = run_as {
            let d = pg.dir.path().to_string_lossy().into_owned();
            let status = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(&d)
                .status()
                .map_err(io_err("chown the instance dir"))?;
            if !status.success() {
                return Err(TestkitError::Io {
                    what: format!("chown {d} to postgres"),
                    source: io::Error::other(status.to_string()),
                });
            }
        }
        let pwfile = pg.dir.path().join("pwfile");
        fs::write(&pwfile, Self::PASSWORD).map_err(io_err("write the password file"))?;
        if let Some((uid, gid)) = run_as {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(&pwfile)
                .status();
        }
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.datadir())
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = tokio::task::spawn_blocking(move || initdb.output())
            .await
            .map_err(|e| io_err("initdb task")(io::Error::other(e)))?
            .map_err(io_err(
                "run initdb (install PostgreSQL with scripts/setup.sh)",
            ))?;
        if !out.status.success() {
            return Err(TestkitError::Install {
                status: format!("initdb: {}", out.status),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let mut last_err = None;
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.spawn_and_wait().await {
                Ok(()) => return Ok(pg),
                Err(e) if pg.log_tail().contains("could not bind") => {
                    last_err = Some(e);
                    let _ = fs::remove_file(pg.log_path());
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::NotReady {
            reason: "no free port".into(),
            log: String::new(),
        }))
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("open the server log"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(self.log_path())
                .status();
        }
        let err = log.try_clone().map_err(io_err("clone the log handle"))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.datadir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args([
                "-c",
                "wal_level=logical",
                "-c",
                "max_replication_slots=20",
                "-c",
                "max_wal_senders=20",
                "-c",
                "max_connections=60",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=on",
            ])
            .stdout(log)
            .stderr(err);
        let child = cmd.spawn().map_err(io_err(
            "spawn postgres (install PostgreSQL with scripts/setup.sh)",
        ))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(TestkitError::NotReady {
                    reason: format!("postgres exited with {status}"),
                    log: self.log_tail(),
                });
            }
            match self.client().await {
                Ok(client) => {
                    // Only our own data directory proves the answer came from our server.
                    let ours = client
                        .query_one("SHOW data_directory", &[])
                        .await
                        .ok()
                        .map(|r| r.get::<_, String>(0));
                    if ours.as_deref() == Some(self.datadir().to_string_lossy().as_ref()) {
                        return Ok(());
                    }
                }
                Err(e) if Instant::now() > deadline => {
                    self.kill9();
                    return Err(TestkitError::NotReady {
                        reason: format!("timed out: {e}"),
                        log: self.log_tail(),
                    });
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(TestkitError::NotReady {
                    reason: format!("port {} answers as another server", self.port),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A connection configuration for the superuser over TCP to the `postgres` database.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(Self::PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// A new superuser connection (its connection task runs on the current runtime).
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = self
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(sql_err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs statements in order on one connection, each in its own transaction.
    pub async fn exec(&self, statements: &[&str]) -> Result<()> {
        self.bounded(statements, async {
            let client = self.client().await?;
            for s in statements {
                client.batch_execute(s).await.map_err(sql_err)?;
            }
            Ok(())
        })
        .await
    }

    /// Runs statements in one transaction (`BEGIN` … `COMMIT`).
    pub async fn exec_tx(&self, statements: &[&str]) -> Result<()> {
        self.bounded(statements, async {
            let client = self.client().await?;
            client.batch_execute("BEGIN").await.map_err(sql_err)?;
            for s in statements {
                client.batch_execute(s).await.map_err(sql_err)?;
            }
            client.batch_execute("COMMIT").await.map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    /// The first column of the first row of `sql` as text (`None`: no row or NULL).
    pub async fn query_string(&self, sql: &str) -> Result<Option<String>> {
        self.bounded(&[sql], async {
            let client = self.client().await?;
            let rows = client.simple_query(sql).await.map_err(sql_err)?;
            Ok(rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
                    _ => None,
                })
                .flatten())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        what: &[&str],
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(TestkitError::TimedOut {
                what: what.join("; "),
                after: STATEMENT_TIMEOUT,
                log: self.log_tail(),
            }),
        }
    }

    /// Stops the server: a fast shutdown (SIGINT), escalated to an immediate one (SIGQUIT) after 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SIGINT: "fast" shutdown (disconnects clients, checkpoints). SIGTERM would wait for clients.
        // A fast shutdown waits for logical replication clients to confirm all WAL sent; after 30 s
        // SIGQUIT ("immediate": ends every backend, crash recovery at the next start); SIGKILL last.
        for (signal, wait) in [("-INT", 30), ("-QUIT", 10)] {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(wait);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Kills the server with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly and starts it again on the same data directory and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Starts a stopped or killed server again on the same data directory and port.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        // A killed postmaster leaves its pid file; postgres removes a stale one itself, but its
        // orphaned backends may still hold the shared memory for a moment: retry for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

fn sql_err(e: tokio_postgres::Error) -> TestkitError {
    TestkitError::Postgres(e.to_string())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, which also ends the server's backends (a SIGKILL of the
        // postmaster leaves them to notice its death); SIGKILL if it has not exited in 5 s.
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-QUIT")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
