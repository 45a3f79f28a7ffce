//! The `databus` command-line tool's library: the pieces `main` calls, one module per subcommand.
//!
//! - [`relay_cmd`]: load and validate `relay.toml`, print the effective configuration, run a relay.
//! - [`bootstrap_cmd`]: the same for `bootstrap.toml`, plus seeding progress and a `/metrics` listener.
//! - [`check`]: `check-source`, the source checks of the MySQL/MariaDB connector rendered for a terminal.
//! - [`tail`]: follow a relay's `stream` endpoint in JSON with long polls ([`tail::tail`]);
//!   [`tail_bootstrap`]: follow it through a bootstrap server (snapshot, catch-up, then the relay).
//! - [`status`]: a relay's buffers in human-readable form.
//! - [`quickstart`]: the whole pipeline against a private MariaDB, then cleaned away.
//! - [`report`]: errors at the edge, each cause once, then the fix when known.
//! - [`http`]: the small HTTP/1.1 client the others use; [`mariadb`]: the quickstart's private MariaDB.
//!
//! Exit codes ([`exit`]): 0 success, 1 runtime error, 2 usage or configuration error ([`UsageError`]),
//! 3 the source check found settings to fix.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use databus_cli::http::RelayUrl;
//! use databus_cli::tail::{Next, Start, TailOptions, tail};
//!
//! let opts = TailOptions {
//!     relay: RelayUrl::parse("http://127.0.0.1:11140")?,
//!     sources: None,
//!     partitions: vec![],
//!     buffer: None,
//!     start: Start::Now,
//!     max_events: Some(10),
//!     wait: Duration::from_secs(10),
//! };
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tail(&opts, &shutdown, |event| {
//!     // `None` marks a flush point (the end of a response or a window).
//!     if let Some(event) = event {
//!         println!("{event}");
//!     }
//!     Ok(Next::More)
//! })
//! .await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

/// `println!` that ignores a closed stdout (`databus ... | head` must not panic).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::outln!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod bootstrap_cmd;
pub mod check;
pub mod demo_db;
pub mod http;
pub mod mariadb;
pub mod quickstart;
pub mod relay_cmd;
pub mod replicate;
pub mod report;
pub mod status;
pub mod tail;
pub mod tail_bootstrap;

/// A usage or configuration error: the command line or a file is wrong (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Reads the TOML file at `path`, parses it with `parse` (unknown keys rejected there) and validates it
/// with `validate`. Every failure is a [`UsageError`] naming the file (and, from the parser or the
/// validation, the field).
pub(crate) fn load_config<R, V, P, Q>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<R, P>,
    validate: impl FnOnce(&R) -> Result<V, Q>,
) -> anyhow::Result<(R, V)>
where
    P: std::fmt::Display,
    Q: std::fmt::Display,
{
    let in_file = |e: &dyn std::fmt::Display| UsageError(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read the configuration {}: {e}",
            path.display()
        ))
    })?;
    let raw = parse(&text).map_err(|e| in_file(&e))?;
    let valid = validate(&raw).map_err(|e| in_file(&e))?;
    Ok((raw, valid))
}

/// The process exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime error (connection lost, relay failed, ...).
    pub const RUNTIME: u8 = 1;
    /// A usage or configuration error (bad flags, bad config file).
    pub const USAGE: u8 = 2;
    /// `check-source` found settings or grants to fix.
    pub const SOURCE_CHECK_FAILED: u8 = 3;
}

/// The exit code for an error: [`exit::USAGE`] when its chain holds a [`UsageError`], else
/// [`exit::RUNTIME`].
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.is::<UsageError>()) {
        exit::USAGE
    } else {
        exit::RUNTIME
    }
}
