//! Test support for databus-rs: a private MariaDB server per test, a private PostgreSQL server per test
//! ([`Postgres`], in [`postgres`]), a private Redis server per test ([`Redis`], in [`redis`]), and
//! headless Chromium
//! ([`chromium::dump_dom`]) for the HTML status pages.
//!
//! [`MariaDb::start`] runs `mariadbd` (MariaDB 10.11, installed by `scripts/setup.sh`) on its own data
//! directory in a temporary directory, on a free port of 127.0.0.1 and its own socket, with the binlog
//! settings a relay needs (`--log-bin --binlog-format=ROW --binlog-row-image=FULL
//! --binlog-row-metadata=FULL --server-id=1`, utf8mb4 as the server's character set) plus any extra arguments from [`MariaDbOptions`] (tests of
//! bad settings pass e.g. `--binlog-format=STATEMENT`).
//!
//! Initializing a data directory with `mariadb-install-db` takes seconds, so it is done once per machine
//! into a template directory under the system temp dir (guarded by an exclusive file lock so parallel
//! tests and test binaries do not race) and copied for each instance (about 20 MB).
//!
//! The server process never outlives its [`MariaDb`]: [`Drop`] kills it by pid (SIGKILL) and removes the
//! temporary directory. [`MariaDb::restart`], [`MariaDb::stop`] and [`MariaDb::kill9`] exercise the
//! connector's failure handling.
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_testkit::TestkitError> {
//! use databus_testkit::{MariaDb, MariaDbOptions};
//!
//! let db = MariaDb::start(MariaDbOptions::default()).await?;
//! db.exec(&["CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY)"]).await?;
//! db.exec(&["INSERT INTO shop.t VALUES (1), (2)"]).await?;
//! assert_eq!(db.count_rows("shop.t").await?, 2);
//! let url = db.create_user_with_grants("relay", "secret").await?;
//! # let _ = url;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod chromium;
pub mod postgres;
pub mod redis;

pub use postgres::Postgres;
pub use redis::Redis;

use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

/// Errors of the test kit. They name what failed and, where it helps, the server's error log.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `mariadb-install-db` failed.
    #[error(
        "mariadb-install-db failed ({status}); is MariaDB installed (scripts/setup.sh)? output:\n{output}"
    )]
    Install {
        /// Exit status.
        status: String,
        /// Its output.
        output: String,
    },
    /// The server did not accept connections in time or exited.
    #[error("the server did not become ready: {reason}; error log tail:\n{log}")]
    NotReady {
        /// Why.
        reason: String,
        /// The end of the server's error log.
        log: String,
    },
    /// A SQL statement failed.
    #[error("sql failed: {0}")]
    Sql(#[from] mysql_async::Error),
    /// A PostgreSQL statement or connection failed.
    #[error("postgres: {0}")]
    Postgres(String),
    /// A statement did not finish in time (a test would otherwise hang without saying why).
    #[error("{what} did not finish in {after:?}; error log tail:\n{log}")]
    TimedOut {
        /// The statements.
        what: String,
        /// The limit.
        after: Duration,
        /// The end of the server's error log.
        log: String,
    },
    /// A tool the test needs is not installed.
    #[error("{what} is not installed; {fix}")]
    Missing {
        /// The tool.
        what: String,
        /// How to install it.
        fix: String,
    },
    /// Headless Chromium failed.
    #[error("chromium {reason}; its stderr:\n{stderr}")]
    Chromium {
        /// What went wrong.
        reason: String,
        /// Its stderr.
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, TestkitError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// How to start a [`MariaDb`].
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// Extra `mariadbd` arguments, appended after the defaults (later arguments win), e.g.
    /// `--binlog-format=STATEMENT`.
    pub extra_args: Vec<String>,
    /// Drop the default `--log-bin` argument (a server without a binlog).
    pub no_log_bin: bool,
    /// How long to wait for the server to accept connections.
    pub startup_timeout: Duration,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        Self {
            extra_args: Vec::new(),
            no_log_bin: false,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl MariaDbOptions {
    /// Adds one extra `mariadbd` argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// A private MariaDB server for one test. Killed and removed on drop.
#[derive(Debug)]
pub struct MariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    opts: MariaDbOptions,
}

const MARIADBD_CANDIDATES: &[&str] = &[
    "/usr/sbin/mariadbd",
    "/usr/bin/mariadbd",
    "/usr/local/bin/mariadbd",
];

fn mariadbd_path() -> PathBuf {
    MARIADBD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mariadbd"))
}

/// Small InnoDB files keep the per-instance copy and startup cheap.
const INNODB_ARGS: &[&str] = &["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=32M"];

/// Returns the template data directory, creating it once per machine under an exclusive lock.
fn template_datadir() -> Result<PathBuf> {
    // One template per server version: an upgraded MariaDB gets a fresh one.
    let version = Command::new(mariadbd_path())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let version: String = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("unknown")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let root = std::env::temp_dir().join(format!("databus-testkit-mariadb-{version}"));
    fs::create_dir_all(&root).map_err(io_err(format!("create {}", root.display())))?;
    let data = root.join("data");
    let lock_path = root.join("lock");
    let lock =
        File::create(&lock_path).map_err(io_err(format!("create {}", lock_path.display())))?;
    // An flock: released by the kernel even if this process dies while holding it.
    lock.lock()
        .map_err(io_err(format!("lock {}", lock_path.display())))?;
    if data.join("mysql").join("user.frm").exists()
        || data.join("mysql").join("global_priv.frm").exists()
    {
        return Ok(data);
    }
    let staging = root.join("data.staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(format!("remove {}", staging.display())))?;
    }
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--user=root")
        .args(INNODB_ARGS)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(
            "run mariadb-install-db (install MariaDB with scripts/setup.sh)",
        ))?;
    if !out.status.success() {
        return Err(TestkitError::Install {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    fs::rename(&staging, &data).map_err(io_err("move the template datadir into place"))?;
    drop(lock);
    Ok(data)
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// How long the helpers' statements may take before they fail instead of hanging the test.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(io_err("local_addr"))?.port())
}

impl MariaDb {
    /// Starts a fresh server with its own data directory, port and socket, and waits until it accepts
    /// connections. A port taken between choosing it and the server binding it is retried with another.
    pub async fn start(opts: MariaDbOptions) -> Result<MariaDb> {
        let template = tokio::task::spawn_blocking(template_datadir)
            .await
            .map_err(|e| io_err("template task")(io::Error::other(e)))??;
        let dir = tempfile::Builder::new()
            .prefix("databus-mariadb-")
            .tempdir()
            .map_err(io_err("create the instance temp dir"))?;
        let datadir = dir.path().join("data");
        let (t, d) = (template.clone(), datadir.clone());
        tokio::task::spawn_blocking(move || copy_dir(&t, &d))
            .await
            .map_err(|e| io_err("copy task")(io::Error::other(e)))?
            .map_err(io_err("copy the template datadir"))?;
        let mut db = MariaDb {
            dir,
            port: 0,
            child: None,
            opts,
        };
        let mut last_err = None;
        for _ in 0..5 {
            db.port = free_port()?;
            match db.spawn_and_wait().await {
                Ok(()) => return Ok(db),
                Err(e) if db.log_tail().contains("Address already in use") => {
                    last_err = Some(e);
                    let _ = fs::remove_file(db.error_log());
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::NotReady {
            reason: "no free port".into(),
            log: String::new(),
        }))
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// The last lines of the server's error log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn args(&self) -> Vec<String> {
        let d = self.dir.path();
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", d.join("data").display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--socket={}", self.socket_path().display()),
            format!("--pid-file={}", d.join("mariadb.pid").display()),
            format!("--log-error={}", self.error_log().display()),
            // A private tmpdir: a starting server deletes every `#sql*` file in its tmpdir, which in
            // a shared /tmp are the internal temporary tables other tests' servers are using.
            format!("--tmpdir={}", self.tmp_path().display()),
            "--skip-name-resolve".to_owned(),
            "--user=root".to_owned(),
            "--server-id=1".to_owned(),
            "--binlog-format=ROW".to_owned(),
            "--binlog-row-image=FULL".to_owned(),
            "--binlog-row-metadata=FULL".to_owned(),
            "--max-allowed-packet=1G".to_owned(),
            "--character-set-server=utf8mb4".to_owned(),
            "--collation-server=utf8mb4_general_ci".to_owned(),
        ];
        if !self.opts.no_log_bin {
            args.push("--log-bin=mariadb-bin".to_owned());
        }
        args.extend(INNODB_ARGS.iter().map(|s| (*s).to_owned()));
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        fs::create_dir_all(self.tmp_path()).map_err(io_err("create the server's tmpdir"))?;
        let child = Command::new(mariadbd_path())
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(
                "spawn mariadbd (install MariaDB with scripts/setup.sh)",
            ))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.opts.startup_timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(TestkitError::NotReady {
                    reason: format!("mariadbd exited with {status}"),
                    log: self.log_tail(),
                });
            }
            match Conn::new(self.root_opts()).await {
                Ok(mut conn) => {
                    // The port may belong to another test's server: a concurrent start can pick the
                    // same free port, and our server fails to bind it only after InnoDB starts. Only
                    // our own socket path proves the answer came from our server.
                    let socket: Option<String> = conn
                        .query_first("SELECT @@GLOBAL.socket")
                        .await
                        .ok()
                        .flatten();
                    let _ = conn.disconnect().await;
                    if socket.as_deref() == Some(self.socket_path().to_string_lossy().as_ref()) {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        self.kill_child();
                        return Err(TestkitError::NotReady {
                            reason: format!("port {} answers as another server", self.port),
                            log: self.log_tail(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) if Instant::now() > deadline => {
                    self.kill_child();
                    return Err(TestkitError::NotReady {
                        reason: format!("timed out: {e}"),
                        log: self.log_tail(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn root_opts(&self) -> Opts {
        Opts::from_url(&self.url()).expect("the test kit builds a valid url")
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory holding the data directory, socket and error log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `mysql://root@127.0.0.1:<port>` with `max_allowed_packet` at 1 GiB.
    pub fn url(&self) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/?max_allowed_packet=1073741824&prefer_socket=false",
            self.port
        )
    }

    /// A URL for another user of this server.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!(
            "mysql://{user}:{password}@127.0.0.1:{}/?max_allowed_packet=1073741824&prefer_socket=false",
            self.port
        )
    }

    /// A new connection as root.
    pub async fn root_conn(&self) -> Result<Conn> {
        Ok(Conn::new(self.root_opts()).await?)
    }

    /// Creates `user@'%'` with the grants a relay needs (`REPLICATION SLAVE, BINLOG MONITOR, SELECT`) and
    /// returns its URL.
    pub async fn create_user_with_grants(&self, user: &str, password: &str) -> Result<String> {
        self.create_user(user, password, "REPLICATION SLAVE, BINLOG MONITOR, SELECT")
            .await
    }

    /// Creates `user@'%'` with exactly `grants` on `*.*` (e.g. `"SELECT"` to test missing grants).
    pub async fn create_user(&self, user: &str, password: &str, grants: &str) -> Result<String> {
        self.exec(&[
            &format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
            &format!("GRANT {grants} ON *.* TO '{user}'@'%'"),
        ])
        .await?;
        Ok(self.url_for(user, password))
    }

    /// Runs statements in order on one root connection.
    pub async fn exec(&self, statements: &[&str]) -> Result<()> {
        self.bounded(statements, async {
            let mut conn = self.root_conn().await?;
            for s in statements {
                conn.query_drop(*s).await?;
            }
            conn.disconnect().await?;
            Ok(())
        })
        .await
    }

    /// Runs statements in one transaction (`BEGIN` … `COMMIT`) on one root connection.
    pub async fn exec_tx(&self, statements: &[&str]) -> Result<()> {
        self.bounded(statements, async {
            let mut conn = self.root_conn().await?;
            conn.query_drop("BEGIN").await?;
            for s in statements {
                conn.query_drop(*s).await?;
            }
            conn.query_drop("COMMIT").await?;
            conn.disconnect().await?;
            Ok(())
        })
        .await
    }

    /// `SELECT COUNT(*)` of a table (`db.table`).
    pub async fn count_rows(&self, table: &str) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        self.bounded(&[&sql], async {
            let mut conn = self.root_conn().await?;
            let n: Option<u64> = conn.query_first(&sql).await?;
            conn.disconnect().await?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    /// The first column of the first row of a query, as text (`None` for no row or NULL).
    pub async fn query_string(&self, sql: &str) -> Result<Option<String>> {
        self.bounded(&[sql], async {
            let mut conn = self.root_conn().await?;
            let row: Option<mysql_async::Row> = conn.query_first(sql).await?;
            conn.disconnect().await?;
            Ok(row
                .and_then(|mut r| r.take::<Option<String>, _>(0))
                .flatten())
        })
        .await
    }

    /// `PURGE BINARY LOGS TO 'file'`, repeated until the oldest binlog file is `file`. The server keeps
    /// (silently) a file it still needs: until its binlog checkpoint moved on after a `FLUSH BINARY LOGS`,
    /// or while a binlog dump thread reads it. Under load that lasts a moment, and a test that goes on
    /// believing the file is gone waits forever for a "purged" error.
    pub async fn purge_binary_logs_to(&self, file: &str) -> Result<()> {
        let purge = format!("PURGE BINARY LOGS TO '{}'", file.replace('\'', "''"));
        let deadline = Instant::now() + STATEMENT_TIMEOUT;
        loop {
            self.exec(&[&purge]).await?;
            let oldest = self
                .bounded(&["SHOW BINARY LOGS"], async {
                    let mut conn = self.root_conn().await?;
                    let rows: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await?;
                    conn.disconnect().await?;
                    Ok(rows.into_iter().next().map(|r| r.0))
                })
                .await?;
            if oldest.as_deref() == Some(file) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::TimedOut {
                    what: format!("{purge} (the oldest binlog is still {oldest:?})"),
                    after: STATEMENT_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `work` (on statements `what`) within [`STATEMENT_TIMEOUT`].
    async fn bounded<T>(
        &self,
        what: &[&str],
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(STATEMENT_TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(TestkitError::TimedOut {
                what: format!("{what:?}"),
                after: STATEMENT_TIMEOUT,
                log: self.log_tail(),
            }),
        }
    }

    /// The server's `gtid_binlog_pos`, e.g. `0-1-42` (empty before the first transaction).
    pub async fn gtid_binlog_pos(&self) -> Result<String> {
        Ok(self
            .query_string("SELECT @@gtid_binlog_pos")
            .await?
            .unwrap_or_default())
    }

    fn kill_child(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM by pid) and waits for it to exit (SIGKILL after 60 s).
    pub async fn stop(&mut self) -> Result<()> {
        self.resume();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is sent, like a dead network path.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-STOP")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Resumes a server frozen by [`MariaDb::pause`] (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Kills the server with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        self.kill_child();
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
        self.spawn_and_wait().await
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill_child();
    }
}
