//! Real `databus` processes (relays, bootstrap servers) started by a test, and waiting on conditions.
//!
//! Every process is a child of the test, killed by its pid (SIGKILL) when its handle is dropped, also
//! when the test panics. Each gets its own temporary directory (configuration, state, log file) and a
//! free port of 127.0.0.1 chosen up front, so a restarted process is found at the same address.
//! Output (stdout and stderr) goes to `<dir>/<name>.log`; [`Proc::log_tail`] shows it in failure
//! messages.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::http::get_json;

/// Polls `check` every 25 ms until it returns `Some`, failing after `timeout` with `what` and the
/// last error. Tests wait on conditions, never on fixed sleeps.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A free TCP port of 127.0.0.1 (bound and released; a race with another process is unlikely and
/// shows as a process that does not start).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn newest_mtime(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            newest_mtime(&path, newest);
        } else if path.extension().is_some_and(|e| e == "rs")
            && let Ok(m) = entry.metadata().and_then(|m| m.modified())
        {
            *newest = (*newest).max(m);
        }
    }
}

/// The `databus` binary the scenarios run.
///
/// `DATABUS_BIN` wins when set. Otherwise `databus` next to the test executable's profile directory
/// (`target/<profile>/databus`), which `cargo test --workspace` builds before running any test (the
/// CLI package has integration tests, so cargo builds its binary). A binary that is missing, or older
/// than a library source file (`*/src/**.rs`) of a crate it is built from, is an error saying to build it (`cargo build -p databus-cli`)
/// — a stale binary would test old code.
pub fn databus_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DATABUS_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no profile directory")?;
    let bin = profile_dir.join("databus");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "{} is missing: run `cargo build -p databus-cli` (or `cargo test --workspace`, which \
                 builds it) before the integration tests, or set DATABUS_BIN",
                bin.display()
            )
        })?;
    let mut newest = SystemTime::UNIX_EPOCH;
    let root = workspace_root();
    // Only the library sources the binary is built from: a change there always relinks it (tests,
    // benches and manifests may change without a rebuild of the binary).
    for dir in [
        "core/src",
        "filters/src",
        "serde-formats/src",
        "connectors/src",
        "relay/buffer/src",
        "relay/server/src",
        "bootstrap/src",
        "cli/src",
    ] {
        newest_mtime(&root.join(dir), &mut newest);
    }
    if newest > built {
        bail!(
            "{} is older than the sources: run `cargo build -p databus-cli` (or `cargo test \
             --workspace`) so the tests run the current code, or set DATABUS_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A spawned process of the test, killed by pid on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program args` with output appended to `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: PathBuf,
        args: Vec<OsString>,
        envs: Vec<(String, String)>,
        dir: &Path,
    ) -> Result<Proc> {
        let mut proc = Proc {
            name: name.to_owned(),
            program,
            args,
            envs,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        proc.start()?;
        Ok(proc)
    }

    fn start(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let log2 = log.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's name in the test (also its log file's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status, if it exited (reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Fails if the process is not running, with its log.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.child.is_none() {
            bail!("{} is not running", self.name);
        }
        if let Some(status) = self.exited() {
            bail!(
                "{} exited with {status}; log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Kills the process with SIGKILL by its pid and reaps it (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM by pid and waits (up to `timeout`, then SIGKILL) for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name);
        };
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("run kill -TERM")?;
        let waited = wait_for(
            &format!("{} to exit on SIGTERM", self.name),
            timeout,
            || {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                async move { Ok(status) }
            },
        )
        .await;
        match waited {
            Ok(status) => {
                self.child = None;
                Ok(status)
            }
            Err(e) => {
                self.kill9();
                Err(e)
            }
        }
    }

    /// Starts the process again with the same command line (after [`Proc::kill9`] or an exit).
    pub fn respawn(&mut self) -> Result<()> {
        self.kill9();
        self.start()
    }

    /// The last 60 lines of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The whole output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One captured table of a relay: logical source id, logical name, `database.table`.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Logical source id.
    pub id: u16,
    /// Logical source name.
    pub name: String,
    /// `database.table`.
    pub table: String,
}

/// Where a relay reads from.
#[derive(Debug, Clone)]
pub enum RelaySource {
    /// A MariaDB server: URL with user and password, replication server id.
    Database {
        /// `mysql://user:password@127.0.0.1:port/`.
        url: String,
        /// Replication server id.
        server_id: u32,
    },
    /// A PostgreSQL server (`kind = "postgres"`), read by logical replication; the password reaches
    /// the relay in the environment variable [`PG_PASSWORD_ENV`] (`password_env`), never in the file.
    Postgres {
        /// Host (or unix socket directory).
        host: String,
        /// Port.
        port: u16,
        /// A role with REPLICATION (or superuser).
        user: String,
        /// Its password.
        password: String,
        /// The database of the captured tables.
        database: String,
        /// The replication slot (and publication) name.
        slot: String,
    },
    /// Another relay (chaining): its base URL.
    Upstream {
        /// `http://127.0.0.1:port`.
        url: String,
    },
}

/// How to start a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// The source.
    pub source: RelaySource,
    /// Captured tables.
    pub tables: Vec<TableSpec>,
    /// `buffer_size` ("1MiB" is the smallest).
    pub buffer_size: String,
}

impl RelaySpec {
    /// The body of its `[[sources]]` entry (also a bootstrap server's `[source]`).
    pub fn source_entry(&self) -> String {
        let mut text = format!(
            "name = \"{BUFFER}\"\nbuffer_size = \"{}\"\n",
            self.buffer_size
        );
        match &self.source {
            RelaySource::Database { url, server_id } => {
                text.push_str(&format!(
                    "connector = {{ kind = \"mariadb\", url = {url:?}, server_id = {server_id} }}\n"
                ));
            }
            RelaySource::Postgres {
                host,
                port,
                user,
                database,
                slot,
                ..
            } => {
                text.push_str(&format!(
                    "connector = {{ kind = \"postgres\", host = {host:?}, port = {port}, user = {user:?}, \
                     password_env = \"{PG_PASSWORD_ENV}\", database = {database:?}, slot = {slot:?}, \
                     publication = {slot:?}, heartbeat_interval = \"200ms\" }}\n"
                ));
            }
            RelaySource::Upstream { url } => {
                text.push_str(&format!(
                    "upstream = {{ url = {url:?}, buffer = \"{BUFFER}\" }}\n"
                ));
            }
        }
        text.push_str("tables = [\n");
        for t in &self.tables {
            text.push_str(&format!(
                "  {{ id = {}, name = {:?}, table = {:?} }},\n",
                t.id, t.name, t.table
            ));
        }
        text.push_str("]\n");
        text
    }
}

/// The buffer (source) name every harness relay uses.
pub const BUFFER: &str = "shop";

/// The environment variable holding a [`RelaySource::Postgres`] password for the relay process.
pub const PG_PASSWORD_ENV: &str = "DATABUS_E2E_PG_PASSWORD";

/// A `databus relay` process with its own state directory and port.
#[derive(Debug)]
pub struct Relay {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    /// Writes the configuration, starts the relay and waits until its ingest is `streaming` (so rows
    /// written afterwards are captured).
    pub async fn start(spec: RelaySpec) -> Result<Relay> {
        let dir = tempfile::Builder::new()
            .prefix("databus-e2e-relay-")
            .tempdir()?;
        let port = free_port()?;
        let text = format!(
            "state_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_wait = \"30s\"\n\
             [[sources]]\n{}",
            dir.path().join("state").display().to_string(),
            spec.source_entry()
        );
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, text)?;
        let envs = match &spec.source {
            RelaySource::Postgres { password, .. } => {
                vec![(PG_PASSWORD_ENV.to_owned(), password.clone())]
            }
            _ => Vec::new(),
        };
        let proc = Proc::spawn(
            "relay",
            databus_bin()?,
            vec!["relay".into(), "--config".into(), config.into()],
            envs,
            dir.path(),
        )?;
        let mut relay = Relay { proc, port, dir };
        relay.wait_streaming(Duration::from_secs(60)).await?;
        Ok(relay)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The relay's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `GET /v1/status`: the buffer's status object.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let (code, body) = get_json(&self.url(), "/v1/status", Duration::from_secs(5)).await?;
        if code != 200 {
            bail!("relay status answered {code}: {body}");
        }
        body["buffers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == BUFFER).cloned())
            .with_context(|| format!("relay status without buffer {BUFFER}: {body}"))
    }

    /// Waits until the buffer's ingest is `streaming`; a `failed` ingest or an exited process fails
    /// at once.
    pub async fn wait_streaming(&mut self, timeout: Duration) -> Result<()> {
        let url = self.url();
        let res = wait_for("the relay to stream", timeout, || {
            let alive = self.proc.ensure_running();
            let url = url.clone();
            async move {
                alive?;
                let (_, body) = get_json(&url, "/v1/status", Duration::from_secs(5)).await?;
                let buffer = &body["buffers"][0];
                match buffer["ingest"]["state"].as_str() {
                    Some("streaming") => Ok(Some(())),
                    Some("failed") => Err(anyhow::anyhow!("ingest failed: {buffer}")),
                    _ => Ok(None),
                }
            }
        })
        .await;
        res.with_context(|| format!("relay log:\n{}", self.proc.log_tail()))
    }

    /// Waits until the buffer holds a window with SCN `>= scn`.
    pub async fn wait_scn(&mut self, scn: u64, timeout: Duration) -> Result<()> {
        let url = self.url();
        let res = wait_for(&format!("the relay to reach SCN {scn}"), timeout, || {
            let alive = self.proc.ensure_running();
            let url = url.clone();
            async move {
                alive?;
                let (_, body) = get_json(&url, "/v1/status", Duration::from_secs(5)).await?;
                let max = body["buffers"][0]["max_scn"].as_u64().unwrap_or(0);
                Ok((max >= scn).then_some(()))
            }
        })
        .await;
        res.with_context(|| format!("relay log:\n{}", self.proc.log_tail()))
    }

    /// Kills the relay with SIGKILL (a crash).
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Starts a killed or stopped relay again (same port, same state) and waits until it streams.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.respawn()?;
        self.wait_streaming(Duration::from_secs(60)).await
    }
}

/// Settings of a [`BootstrapServer`].
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// Seed the snapshot from this source database first (`[seed] url`).
    pub seed_url: Option<String>,
    /// The password of `seed_url`'s user, handed over apart from the URL (a `postgres://` seed URL
    /// must not hold one).
    pub seed_password: Option<SeedPassword>,
    /// `serve.log_only_max_events`: deltas leaving more log events than this are served as a
    /// consolidated delta (snapshot rows changed since, then catch-up) instead of from the log alone.
    pub log_only_max_events: u64,
    /// Run the producer, the applier and the server as three processes (`databus bootstrap
    /// producer|applier|server`, after `databus bootstrap seed` when seeding) instead of one
    /// `databus bootstrap all`, so each can be killed on its own.
    pub separate_roles: bool,
    /// `[source]`: the database the producer fills relay gaps from (a relay spec with a server id of
    /// its own).
    pub source: Option<RelaySpec>,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            seed_url: None,
            seed_password: None,
            log_only_max_events: 100_000,
            separate_roles: false,
            source: None,
        }
    }
}

/// How a [`BootstrapServer`]'s seed gets its database password (`[seed] password_env` or
/// `password_file`).
#[derive(Debug, Clone)]
pub enum SeedPassword {
    /// In the environment variable [`SEED_PASSWORD_ENV`] of the bootstrap processes.
    Env(String),
    /// In the file `seed.password` of the server's directory (mode 0600).
    File(String),
}

/// The environment variable holding a [`SeedPassword::Env`] password for the bootstrap processes.
pub const SEED_PASSWORD_ENV: &str = "DATABUS_E2E_SEED_PASSWORD";

/// A process of a [`BootstrapServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BootstrapRole {
    /// `databus bootstrap all`: producer, applier, cleaner and server in one process.
    All,
    /// `databus bootstrap producer`.
    Producer,
    /// `databus bootstrap applier`.
    Applier,
    /// `databus bootstrap server`.
    Server,
}

impl BootstrapRole {
    fn arg(self) -> &'static str {
        match self {
            BootstrapRole::All => "all",
            BootstrapRole::Producer => "producer",
            BootstrapRole::Applier => "applier",
            BootstrapRole::Server => "server",
        }
    }
}

/// A bootstrap server: `databus bootstrap all` (seeded first when a seed URL is given), or its roles
/// as separate processes ([`BootstrapOptions::separate_roles`]), with its own SQLite file and port.
#[derive(Debug)]
pub struct BootstrapServer {
    procs: Vec<(BootstrapRole, Proc)>,
    port: u16,
    dir: tempfile::TempDir,
}

impl BootstrapServer {
    /// Starts `databus bootstrap all` copying `relay_url`, seeding from `seed_url` first if given,
    /// and waits until its HTTP server answers.
    pub async fn start(relay_url: &str, seed_url: Option<&str>) -> Result<BootstrapServer> {
        BootstrapServer::start_with(
            relay_url,
            BootstrapOptions {
                seed_url: seed_url.map(str::to_owned),
                ..BootstrapOptions::default()
            },
        )
        .await
    }

    /// [`BootstrapServer::start`] with more settings.
    pub async fn start_with(relay_url: &str, opts: BootstrapOptions) -> Result<BootstrapServer> {
        let dir = tempfile::Builder::new()
            .prefix("databus-e2e-boot-")
            .tempdir()?;
        let port = free_port()?;
        let mut text = format!(
            "db_path = {:?}\n[relay]\nurl = {relay_url:?}\nbuffer = \"{BUFFER}\"\nwait = \"200ms\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[serve]\nlog_only_max_events = {}\n\
             [applier]\nidle_poll = \"20ms\"\n",
            dir.path().join("bootstrap.sqlite").display().to_string(),
            opts.log_only_max_events
        );
        let mut envs = Vec::new();
        if let Some(url) = &opts.seed_url {
            text.push_str(&format!("[seed]\nurl = {url:?}\nchunk_rows = 500\n"));
            match &opts.seed_password {
                Some(SeedPassword::Env(password)) => {
                    text.push_str(&format!("password_env = \"{SEED_PASSWORD_ENV}\"\n"));
                    envs.push((SEED_PASSWORD_ENV.to_owned(), password.clone()));
                }
                Some(SeedPassword::File(password)) => {
                    let path = dir.path().join("seed.password");
                    std::fs::write(&path, format!("{password}\n"))?;
                    {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                    }
                    text.push_str(&format!(
                        "password_file = {:?}\n",
                        path.display().to_string()
                    ));
                }
                None => {}
            }
        }
        if let Some(source) = &opts.source {
            text.push_str(&format!("[source]\n{}", source.source_entry()));
        }
        let config = dir.path().join("bootstrap.toml");
        std::fs::write(&config, text)?;
        let bin = databus_bin()?;
        let args = |role: &str| -> Vec<OsString> {
            vec![
                "bootstrap".into(),
                role.into(),
                "--config".into(),
                config.clone().into(),
            ]
        };
        let roles: &[BootstrapRole] = if opts.separate_roles {
            if opts.seed_url.is_some() {
                let out = Command::new(&bin)
                    .args(args("seed"))
                    .env_remove("RUST_LOG")
                    .env("NO_COLOR", "1")
                    .envs(envs.iter().map(|(k, v)| (k, v)))
                    .output()
                    .context("run databus bootstrap seed")?;
                if !out.status.success() {
                    bail!(
                        "databus bootstrap seed failed ({}): {}{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            &[
                BootstrapRole::Producer,
                BootstrapRole::Applier,
                BootstrapRole::Server,
            ]
        } else {
            &[BootstrapRole::All]
        };
        let mut procs = Vec::new();
        for role in roles {
            let name = format!("bootstrap-{}", role.arg());
            let proc = Proc::spawn(
                &name,
                bin.clone(),
                args(role.arg()),
                envs.clone(),
                dir.path(),
            )?;
            procs.push((*role, proc));
        }
        let mut server = BootstrapServer { procs, port, dir };
        server.wait_answering().await?;
        Ok(server)
    }

    async fn wait_answering(&mut self) -> Result<()> {
        let url = self.url();
        let res = wait_for(
            "the bootstrap server to answer",
            Duration::from_secs(60),
            || {
                let alive = self.ensure_running();
                let url = url.clone();
                async move {
                    alive?;
                    let (code, _) = get_json(&url, "/health", Duration::from_secs(5)).await?;
                    Ok((code == 200).then_some(()))
                }
            },
        )
        .await;
        res.with_context(|| format!("bootstrap logs:\n{}", self.log_tails()))
    }

    /// Fails if one of its processes is not running.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.procs
            .iter_mut()
            .try_for_each(|(_, p)| p.ensure_running())
    }

    /// The log tails of its processes.
    pub fn log_tails(&self) -> String {
        self.procs
            .iter()
            .map(|(_, p)| format!("--- {}\n{}", p.name(), p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The process serving HTTP (`all` or `server`).
    pub fn proc(&mut self) -> &mut Proc {
        let i = self
            .procs
            .iter()
            .position(|(r, _)| matches!(r, BootstrapRole::All | BootstrapRole::Server))
            .unwrap_or(0);
        &mut self.procs[i].1
    }

    /// The process of `role`, if this server runs it.
    pub fn role(&mut self, role: BootstrapRole) -> Option<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p)
    }

    /// Kills the process of `role` with SIGKILL (a crash).
    pub fn kill9(&mut self, role: BootstrapRole) -> Result<()> {
        self.role(role)
            .with_context(|| format!("no {role:?} process"))?
            .kill9();
        Ok(())
    }

    /// Starts the process of `role` again (same configuration and file) and waits until the server
    /// answers.
    pub async fn restart(&mut self, role: BootstrapRole) -> Result<()> {
        self.role(role)
            .with_context(|| format!("no {role:?} process"))?
            .respawn()?;
        self.wait_answering().await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its directory (configuration, SQLite file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let (code, body) = get_json(&self.url(), "/v1/status", Duration::from_secs(5)).await?;
        if code != 200 {
            bail!("bootstrap status answered {code}: {body}");
        }
        Ok(body)
    }

    /// Waits until the snapshot store has applied SCN `>= scn`.
    pub async fn wait_applied(&mut self, scn: u64, timeout: Duration) -> Result<()> {
        let url = self.url();
        let res = wait_for(
            &format!("the bootstrap server to apply SCN {scn}"),
            timeout,
            || {
                let alive = self.ensure_running();
                let url = url.clone();
                async move {
                    alive?;
                    let (_, body) = get_json(&url, "/v1/status", Duration::from_secs(5)).await?;
                    let applied = body["applied_scn"].as_u64().unwrap_or(0);
                    Ok((applied >= scn).then_some(()))
                }
            },
        )
        .await;
        res.with_context(|| format!("bootstrap logs:\n{}", self.log_tails()))
    }
}
