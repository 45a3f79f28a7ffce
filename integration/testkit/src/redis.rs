//! A private Redis server per test: [`Redis::start`].
//!
//! It runs Debian's `redis-server` (installed by `scripts/setup.sh`) on a free port of 127.0.0.1 with
//! its working directory in a temporary directory and no persistence (`--save '' --appendonly no`):
//! a cache that starts empty, as the tests want, and instances never meet. [`Redis::start`] waits
//! until the server answers `PING` with `+PONG` and its `CONFIG GET dir` names this instance's
//! directory (so the answer came from our server, not another one that took the port first).
//!
//! The server never outlives its [`Redis`]: [`Drop`] kills it (SIGKILL) and removes the directory.
//! The test kit speaks the two commands it needs in RESP over a `TcpStream` itself; tests talk to the
//! server with a Redis client crate through [`Redis::url`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_testkit::TestkitError> {
//! use databus_testkit::Redis;
//!
//! let redis = Redis::start().await?;
//! assert!(redis.url().starts_with("redis://127.0.0.1:"));
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, TestkitError, free_port, io_err};

/// A private Redis server.
#[derive(Debug)]
pub struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// Finds `redis-server` on `PATH` or in `/usr/bin` (Debian's `redis-server` package).
fn server_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("redis-server");
            if bin.is_file() {
                return Ok(bin);
            }
        }
    }
    let bin = PathBuf::from("/usr/bin/redis-server");
    if bin.is_file() {
        return Ok(bin);
    }
    Err(TestkitError::Missing {
        what: "redis-server".into(),
        fix: "run scripts/setup.sh (installs Debian's redis-server)".into(),
    })
}

/// Sends one RESP command on a new connection and reads the reply (bounded: 64 KiB, 2 s).
fn command(port: u16, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A reply to PING or CONFIG GET ends with "\r\n"; read until the reply is complete enough.
    while reply.len() < 64 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.ends_with(b"\r\n") && complete(&reply) {
            break;
        }
    }
    Ok(reply)
}

/// Whether `reply` holds a whole simple reply or a whole two-element array of bulk strings.
fn complete(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'*') => {
            // "*2\r\n$3\r\ndir\r\n$N\r\n<path>\r\n": 6 lines ("*0\r\n": 1 line).
            let lines = reply.windows(2).filter(|w| w == b"\r\n").count();
            reply.starts_with(b"*0\r\n") || lines >= 5
        }
        _ => true,
    }
}

impl Redis {
    /// Starts a server with its own directory on a free port; waits until it answers `PING`.
    /// A port taken between choosing it and the server binding it is retried with another.
    pub async fn start() -> Result<Redis> {
        let bin = server_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("databus-redis-")
            .tempdir()
            .map_err(io_err("create the instance temp dir"))?;
        let mut redis = Redis {
            dir,
            port: 0,
            child: None,
        };
        let mut last_err = None;
        for _ in 0..5 {
            redis.port = free_port()?;
            match redis.spawn_and_wait(&bin).await {
                Ok(()) => return Ok(redis),
                Err(e) => {
                    // Most likely the port was taken: try another (the log says if not).
                    last_err = Some(e);
                    let _ = fs::remove_file(redis.log_path());
                }
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::NotReady {
            reason: "redis-server: no free port".into(),
            log: String::new(),
        }))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's working directory (empty: it persists nothing).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn spawn_and_wait(&mut self, bin: &Path) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("open the server log"))?;
        let err = log.try_clone().map_err(io_err("clone the log handle"))?;
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no"])
            // The tests write a few thousand keys; bound it anyway.
            .args(["--maxmemory", "256mb", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io_err(
                "spawn redis-server (install it with scripts/setup.sh)",
            ))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let want_dir = self.dir.path().to_string_lossy().into_owned();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(TestkitError::NotReady {
                    reason: format!("redis-server exited with {status}"),
                    log: self.log_tail(),
                });
            }
            let port = self.port;
            let dir = want_dir.clone();
            let ours = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
                let pong = command(port, &["PING"])?;
                if !pong.starts_with(b"+PONG") {
                    return Ok(false);
                }
                let reply = command(port, &["CONFIG", "GET", "dir"])?;
                Ok(String::from_utf8_lossy(&reply).contains(&dir))
            })
            .await
            .map_err(|e| io_err("redis ping task")(std::io::Error::other(e)))?;
            match ours {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if Instant::now() > deadline => {
                    self.kill9();
                    return Err(TestkitError::NotReady {
                        reason: format!(
                            "redis-server on port {} did not answer PING as this instance: {ours:?}",
                            self.port
                        ),
                        log: self.log_tail(),
                    });
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`: the URL a Redis client connects to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and reaps it (everything cached is lost: no persistence).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn a_reply_is_complete_when_whole() {
        assert!(complete(b"+PONG\r\n"));
        assert!(complete(b"*0\r\n"));
        assert!(!complete(b"*2\r\n$3\r\ndir\r\n"));
        assert!(complete(b"*2\r\n$3\r\ndir\r\n$4\r\n/tmp\r\n"));
    }
}
