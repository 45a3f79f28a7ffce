//! A private MariaDB server for the quickstart: its own data directory under a temporary directory, a
//! free port of 127.0.0.1, the binlog settings a relay needs. Stopped (SIGKILL; nothing in it is worth
//! keeping) and removed on drop.
//!
//! The same recipe as the test kit (`databus_testkit::MariaDb`), without its machine-wide template cache:
//! the quickstart leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;

/// A running private server.
#[derive(Debug)]
pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

fn find(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

impl PrivateMariaDb {
    /// Initializes a data directory and starts `mariadbd` on it; waits until it accepts connections.
    pub async fn start(timeout: Duration) -> Result<PrivateMariaDb> {
        let dir = tempfile::Builder::new()
            .prefix("databus-quickstart-mariadb-")
            .tempdir()
            .context("creating a temporary directory for MariaDB")?;
        let datadir = dir.path().join("data");
        // Initializing occasionally fails on a machine busy with other MariaDB instances; one retry
        // on a fresh directory, and the output of both attempts in the error.
        let mut failures = Vec::new();
        for attempt in 0..2 {
            if attempt > 0 {
                let _ = std::fs::remove_dir_all(&datadir);
            }
            let install = tokio::process::Command::new(find("mariadb-install-db"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--user=root",
                    "--innodb-log-file-size=4M",
                    "--innodb-buffer-pool-size=32M",
                ])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .context("running mariadb-install-db; install MariaDB with scripts/setup.sh")?;
            if install.status.success() {
                break;
            }
            failures.push(format!(
                "{}: {}{}",
                install.status,
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            ));
            tracing::warn!(output = %failures.last().map_or("", String::as_str), "mariadb-install-db failed");
        }
        if failures.len() == 2 {
            bail!(
                "mariadb-install-db failed twice:\n{}",
                failures.join("\n---\n")
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("choosing a free port")?
            .port();
        let d = dir.path();
        // A private tmpdir: a starting server deletes every `#sql*` file in its tmpdir, which in a
        // shared /tmp may be another MariaDB's temporary tables.
        let tmpdir = d.join("tmp");
        std::fs::create_dir_all(&tmpdir)
            .with_context(|| format!("creating {}", tmpdir.display()))?;
        let socket = d.join("mariadb.sock");
        let child = Command::new(find("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .arg(format!("--pid-file={}", d.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--skip-name-resolve",
                "--user=root",
                "--server-id=1",
                "--log-bin=mariadb-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-log-file-size=4M",
                "--innodb-buffer-pool-size=32M",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd; install MariaDB with scripts/setup.sh")?;
        let mut db = PrivateMariaDb { dir, port, child };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = db.child.try_wait().context("waiting on mariadbd")? {
                bail!("mariadbd exited with {status}; its log:\n{}", db.log_tail());
            }
            match mysql_async::Conn::from_url(db.root_url()).await {
                Ok(mut conn) => {
                    // The free port may have been taken by another server meanwhile (ours then fails
                    // to bind it): only our socket path proves the answer came from our server.
                    use mysql_async::prelude::Queryable;
                    let theirs: Option<String> = conn
                        .query_first("SELECT @@GLOBAL.socket")
                        .await
                        .ok()
                        .flatten();
                    let _ = conn.disconnect().await;
                    if theirs.as_deref() == Some(socket.to_string_lossy().as_ref()) {
                        return Ok(db);
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "port {port} answers as another MariaDB server; run the quickstart again"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "mariadbd did not accept connections in time: {e}; its log:\n{}",
                        db.log_tail()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The root user's URL (no password; the server listens on loopback only).
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/?prefer_socket=false", self.port)
    }

    /// A new root connection.
    pub async fn root_conn(&self) -> Result<mysql_async::Conn> {
        mysql_async::Conn::from_url(self.root_url())
            .await
            .context("connecting to the private MariaDB")
    }

    /// Runs statements in order on one root connection.
    pub async fn exec(&self, statements: &[&str]) -> Result<()> {
        let mut conn = self.root_conn().await?;
        for s in statements {
            conn.query_drop(*s)
                .await
                .with_context(|| format!("running {s}"))?;
        }
        let _ = conn.disconnect().await;
        Ok(())
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
