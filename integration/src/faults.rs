//! Process and wire helpers for the bad-input and fault-injection tests: the real `databus` binary
//! (built once per test binary), relay processes started from a TOML file and killed by pid, raw
//! HTTP/1.1 over a `TcpStream`, and a seeded random source for repeatable fault schedules.
//!
//! Everything here waits on conditions with deadlines; nothing sleeps for a fixed time to let
//! something happen.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The path of the `databus` binary: [`crate::process::databus_bin`] (`DATABUS_BIN`, else
/// `target/<profile>/databus`, refused when missing or older than the sources, with the command to
/// build it), resolved once per test process.
///
/// # Panics
///
/// With that message when the binary is missing or stale: build it with `cargo build -p databus-cli`
/// (`cargo test --workspace` does).
pub fn databus_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| crate::process::databus_bin().unwrap_or_else(|e| panic!("{e:#}")))
}

/// A `databus` command with a clean logging environment.
pub fn databus() -> Command {
    let mut cmd = Command::new(databus_bin());
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` to its end with piped output, killing it (and failing) after `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Result<std::process::Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn databus")?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out?),
        Err(_) => {
            kill_pid(pid, "KILL");
            bail!("{cmd:?} did not end within {limit:?}")
        }
    }
}

/// Sends `signal` (e.g. `KILL`, `TERM`) to one process by its id.
pub fn kill_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Text of command output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

static LOG_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Processes spawned from now on also write their stderr to `<dir>/<what>.<pid>.log` (kept for a
/// failed test to be read after its processes are gone); `None` stops that. The setting is
/// process-wide: tests running in parallel in one test binary share it, so a log file may land in the
/// other test's directory (debugging aid only; nothing checks these files).
pub fn set_process_log_dir(dir: Option<&Path>) {
    *LOG_DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir.map(Path::to_path_buf);
}

/// A long-running `databus` process (relay, bootstrap role). Its stderr is collected; it is killed
/// with SIGKILL by pid when dropped.
#[derive(Debug)]
pub struct DatabusProcess {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// What it is, for messages.
    pub what: String,
}

impl DatabusProcess {
    /// Spawns `databus <args>` with extra environment variables.
    pub fn spawn(what: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<DatabusProcess> {
        let mut cmd = databus();
        cmd.args(args).envs(envs.iter().copied());
        DatabusProcess::spawn_command(what, cmd)
    }

    /// Spawns any command (e.g. a consumer binary) with stdin and stdout closed and stderr collected.
    pub fn spawn_command(what: &str, mut cmd: Command) -> Result<DatabusProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {what}"))?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut file = LOG_DIR
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|dir| {
                let name = format!("{}.{}.log", what.replace(' ', "-"), child.id());
                std::fs::File::create(dir.join(name)).ok()
            });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Ok(DatabusProcess {
            child: Some(child),
            log,
            what: what.to_owned(),
        })
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it exited; its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until a stderr line contains `needle`; returns the rest of that line after it.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(rest) = self
                .log()
                .lines()
                .find_map(|l| l.split_once(needle).map(|(_, r)| r.trim().to_owned()))
            {
                return Ok(rest);
            }
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {needle:?} within {limit:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {limit:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL by pid, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid and wait for a clean exit (SIGKILL after `limit`).
    pub fn stop(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.what);
        };
        kill_pid(pid, "TERM");
        let result = self.wait_exit(limit);
        self.kill9();
        result
    }
}

impl Drop for DatabusProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A relay process started from a configuration file; its HTTP address read from its log.
#[derive(Debug)]
pub struct RelayProcess {
    /// The process.
    pub process: DatabusProcess,
    /// The address it listens on.
    pub addr: SocketAddr,
    config: PathBuf,
    envs: Vec<(String, String)>,
}

impl RelayProcess {
    /// Runs `databus relay --config <config> [--listen <listen>]` and waits until it listens.
    pub fn start(config: &Path, listen: Option<SocketAddr>, envs: &[(&str, &str)]) -> Result<Self> {
        let config_arg = config.display().to_string();
        let listen_arg = listen.map(|a| a.to_string());
        let mut args = vec!["relay", "--config", &config_arg];
        if let Some(l) = &listen_arg {
            args.extend(["--listen", l]);
        }
        let mut process = DatabusProcess::spawn("relay", &args, envs)?;
        let addr = process.wait_for_log("listening on http://", Duration::from_secs(60))?;
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("relay address {addr:?}"))?;
        Ok(RelayProcess {
            process,
            addr,
            config: config.to_path_buf(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// The relay's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the relay with SIGKILL.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts it again (after [`RelayProcess::kill9`]) on the same address, retrying while the port is
    /// still held by the dead process' sockets.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match RelayProcess::start(&self.config, Some(self.addr), &envs) {
                Ok(mut again) => {
                    std::mem::swap(&mut self.process, &mut again.process);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline && e.to_string().contains("cannot listen") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET path` on the relay.
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        http_get(self.addr, path)
    }

    /// Waits until `GET /v1/status` shows buffer 0's ingest in `state` (e.g. `streaming`, `failed`);
    /// returns the status JSON.
    pub fn wait_ingest_state(&self, state: &str, limit: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.get("/v1/status").and_then(|r| r.json());
            if let Ok(v) = &last
                && v["buffers"][0]["ingest"]["state"] == state
            {
                return Ok(v.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "relay ingest never reached {state:?} (last status {last:?}); log:\n{}",
                    self.process.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An HTTP response read off a socket.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, text(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("chunk size line without CRLF"))?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end])?.trim(), 16)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("chunk of {size} bytes truncated");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Sends `request` bytes as they are on a new connection, reads until the server closes it (or 30 s),
/// and parses the response. The request should say `Connection: close`.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The server may answer (and close) before reading everything of an oversized request; a failed
    // write is then expected, and the answer is still there to read.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived (the server closed with unread request bytes).
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("read the response"),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete response head in {:?}", text(raw)))?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `GET path` with `Connection: close`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: databus\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Percent-encodes a query value.
pub fn enc(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A small, seeded, deterministic random source (SplitMix64) for repeatable fault schedules.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

/// Seeds from `DATABUS_FAULT_SEEDS` (`3`, `1,5,9`, `1..50`), or `default` when unset.
pub fn fault_seeds(default: &[u64]) -> Result<Vec<u64>> {
    let Ok(spec) = std::env::var("DATABUS_FAULT_SEEDS") else {
        return Ok(default.to_vec());
    };
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once("..") {
            let (a, b): (u64, u64) = (
                a.parse().context("DATABUS_FAULT_SEEDS range start")?,
                b.trim_start_matches('=')
                    .parse()
                    .context("DATABUS_FAULT_SEEDS range end")?,
            );
            seeds.extend(a..=b);
        } else {
            seeds.push(
                part.parse()
                    .with_context(|| format!("DATABUS_FAULT_SEEDS: {part:?} is not a number"))?,
            );
        }
    }
    if seeds.is_empty() {
        bail!("DATABUS_FAULT_SEEDS={spec:?} names no seed; use e.g. 1,2,3 or 1..50");
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_is_repeatable() {
        let a: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.range(0, 100)))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(SeededRng::new(7), |r, _| Some(r.range(0, 100)))
            .collect();
        let c: Vec<u64> = (0..5)
            .scan(SeededRng::new(8), |r, _| Some(r.range(0, 100)))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|x| *x < 100));
    }

    #[test]
    fn responses_parse_with_and_without_chunks() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_err());
    }
}
