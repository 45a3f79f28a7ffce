//! What the tests of the `databus` binary share: running it, waiting for its processes, the
//! configuration files they read, and bare HTTP requests to what they serve.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `databus` binary with a predictable environment: no `RUST_LOG`, no `DATABUS_TOKEN`, no colours.
pub fn databus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_databus"));
    cmd.env_remove("RUST_LOG")
        .env_remove("DATABUS_TOKEN")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run databus")
}

/// Runs `cmd` to its end, failing the test (and killing it) if it takes longer than `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = Killed(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run databus"),
    );
    let what = format!("{cmd:?} did not end within {limit:?}");
    let status = child.wait_until(Instant::now() + limit, &what);
    Output {
        status,
        stdout: read_to_end(child.0.stdout.take()),
        stderr: read_to_end(child.0.stderr.take()),
    }
}

fn read_to_end(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    pipe.expect("a piped output")
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Bytes of an output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A multi-threaded runtime (2 workers) for the async parts of a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Kills the child (by its own handle) when dropped, so a failed assertion leaves no process behind.
pub struct Killed(pub Child);

impl Killed {
    /// Spawns `cmd` (its stdio as the caller set it).
    pub fn spawn(cmd: &mut Command) -> Killed {
        Killed(cmd.spawn().expect("spawn databus"))
    }

    /// Spawns `cmd` with stdout and stderr piped.
    pub fn spawn_piped(cmd: &mut Command) -> Killed {
        Killed::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
    }

    /// Waits for the process to exit, failing the test with `what` once `deadline` passes.
    pub fn wait_until(&mut self, deadline: Instant, what: &str) -> ExitStatus {
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`-TERM`, `-INT`) with kill(1); whether kill succeeded.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    }

    /// All of the piped stdout, to its end.
    pub fn stdout_text(&mut self) -> String {
        text(&read_to_end(self.0.stdout.as_mut()))
    }

    /// All of the piped stderr, to its end.
    pub fn stderr_text(&mut self) -> String {
        text(&read_to_end(self.0.stderr.as_mut()))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's pipe, read on a thread.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads the server's URL from its "listening on URL" line on stderr; the thread returned collects
/// all of stderr until the process exits.
pub fn listening_address(child: &mut Child) -> (String, JoinHandle<String>) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let collector = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the relay prints its address");
    (addr, collector)
}

/// Spawns `cmd` (a prepared `databus relay ...`) with stderr piped and waits for its "listening on"
/// line: the process, its URL and the thread collecting its whole log.
pub fn start_relay(cmd: &mut Command) -> (Killed, String, JoinHandle<String>) {
    let mut relay = Killed::spawn(cmd.stdout(Stdio::null()).stderr(Stdio::piped()));
    let (url, log) = listening_address(&mut relay.0);
    (relay, url, log)
}

/// A port that was free a moment ago (for a server that must keep its address across restarts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `databus status --relay URL --json`, parsed; `None` while the relay does not answer with JSON.
/// The command's stderr comes along for messages.
pub fn status_json(relay_url: &str) -> (Option<Value>, String) {
    let out = run(databus().args(["status", "--relay", relay_url, "--json"]));
    (serde_json::from_slice(&out.stdout).ok(), text(&out.stderr))
}

/// Polls `databus status` until the relay's first buffer streams (the relay starts capturing at the
/// binlog's current position: write only once it streams).
pub fn wait_streaming(relay_url: &str, deadline: Instant) {
    loop {
        let (status, stderr) = status_json(relay_url);
        if status.is_some_and(|v| v["buffers"][0]["ingest"]["state"] == "streaming") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never streamed: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` from `addr` (`host:port` or `http://host:port`) as a bare HTTP/1.0 request: the whole
/// response, status line and headers included; `None` if the connection or the read fails.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let host = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut sock = std::net::TcpStream::connect(host).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).ok()?;
    Some(text(&raw))
}

/// The body of `GET path` from `addr` (see [`http_get`]); the test fails if the request does.
pub fn http_get_body(addr: &str, path: &str) -> String {
    let raw = http_get(addr, path).unwrap_or_else(|| panic!("GET {path} from {addr} failed"));
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(raw)
}

/// `GET path` from `addr` as JSON; `None` if the request fails or the body is not JSON.
pub fn get_json(addr: &str, path: &str) -> Option<Value> {
    let raw = http_get(addr, path)?;
    let (_, body) = raw.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// A relay configuration with one MariaDB source named `shop` (buffer 8MiB), its tables `shop.<name>`
/// with ids 1, 2, ... in order. [`RelayToml::write`] puts it in `DIR/relay.toml`, state in `DIR/state`.
pub struct RelayToml<'a> {
    /// `[http] listen`, if any.
    pub listen: Option<&'a str>,
    /// The source's URL.
    pub url: &'a str,
    /// The variable holding the source's password, if any.
    pub password_env: Option<&'a str>,
    pub server_id: u32,
    pub tables: &'a [&'a str],
}

impl RelayToml<'_> {
    pub fn write(&self, dir: &Path) -> PathBuf {
        let mut toml = format!(
            "state_dir = {:?}\n",
            dir.join("state").display().to_string()
        );
        if let Some(listen) = self.listen {
            toml.push_str(&format!("[http]\nlisten = {listen:?}\n"));
        }
        let password = self
            .password_env
            .map(|var| format!(", password_env = {var:?}"))
            .unwrap_or_default();
        toml.push_str(&format!(
            "[[sources]]\nname = \"shop\"\nbuffer_size = \"8MiB\"\nconnector = {{ kind = \"mariadb\", url = {:?}, server_id = {}{password} }}\n",
            self.url, self.server_id
        ));
        toml.push_str("tables = [\n");
        for (i, name) in self.tables.iter().enumerate() {
            toml.push_str(&format!(
                "    {{ id = {}, name = {name:?}, table = \"shop.{name}\" }},\n",
                i + 1
            ));
        }
        toml.push_str("]\n");
        let path = dir.join("relay.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// A bootstrap server configuration, its SQLite file `DIR/<db_file>`; each section only if given.
/// [`BootstrapToml::write`] puts it in `DIR/<file>`.
#[derive(Default)]
pub struct BootstrapToml<'a> {
    pub db_file: &'a str,
    /// `[relay] url`.
    pub relay: Option<&'a str>,
    /// `[http] listen`.
    pub listen: Option<&'a str>,
    /// `[seed] url`.
    pub seed_url: Option<&'a str>,
    /// `[seed] password_env`.
    pub seed_password_env: Option<&'a str>,
    /// `[seed] chunk_rows`.
    pub chunk_rows: Option<u64>,
}

impl BootstrapToml<'_> {
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let mut toml = format!(
            "db_path = {:?}\n",
            dir.join(self.db_file).display().to_string()
        );
        if let Some(url) = self.relay {
            toml.push_str(&format!("[relay]\nurl = {url:?}\n"));
        }
        if let Some(listen) = self.listen {
            toml.push_str(&format!("[http]\nlisten = {listen:?}\n"));
        }
        if let Some(url) = self.seed_url {
            toml.push_str(&format!("[seed]\nurl = {url:?}\n"));
            if let Some(var) = self.seed_password_env {
                toml.push_str(&format!("password_env = {var:?}\n"));
            }
            if let Some(rows) = self.chunk_rows {
                toml.push_str(&format!("chunk_rows = {rows}\n"));
            }
        }
        let path = dir.join(file);
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// A private MariaDB with `statements` run, and a user `repl` with password `password` and the
/// grants a relay needs: the server and that user's URL.
pub fn mariadb_with_repl(
    rt: &tokio::runtime::Runtime,
    statements: &[&str],
    password: &str,
) -> (databus_testkit::MariaDb, String) {
    let db = rt
        .block_on(databus_testkit::MariaDb::start(
            databus_testkit::MariaDbOptions::default(),
        ))
        .unwrap();
    if !statements.is_empty() {
        rt.block_on(db.exec(statements)).unwrap();
    }
    let url = rt
        .block_on(db.create_user_with_grants("repl", password))
        .unwrap();
    (db, url)
}
