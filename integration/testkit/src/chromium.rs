//! Headless Chromium for tests of the HTML status pages: [`dump_dom`] loads a page and returns the DOM
//! as Chromium rendered it (`--dump-dom`).
//!
//! Chromium is Debian's `chromium` package, installed by `scripts/setup.sh`. When it is missing,
//! [`dump_dom`] returns an error saying so: a test that needs it fails, never passes silently.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, TestkitError, io_err};

/// Where Chromium is looked for, in order (`$CHROMIUM` first when set).
const CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// The Chromium binary: `$CHROMIUM`, else the first of the Debian paths that exists; an error naming
/// `scripts/setup.sh` when there is none.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(TestkitError::Missing {
                what: format!("chromium at CHROMIUM={}", path.display()),
                fix: "run scripts/setup.sh, which installs Debian's chromium package, or point CHROMIUM at it".into(),
            })
        };
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| TestkitError::Missing {
            what: "chromium (looked for /usr/bin/chromium and /usr/bin/chromium-browser)".into(),
            fix: "run scripts/setup.sh, which installs Debian's chromium package, or set CHROMIUM to its path".into(),
        })
}

/// Loads `url` in headless Chromium (a fresh profile in a temporary directory, no network services
/// of its own) and returns the DOM after load, serialized as HTML. Fails if Chromium is missing,
/// exits with an error, or takes longer than `limit`.
pub fn dump_dom(url: &str, limit: Duration) -> Result<String> {
    let chromium = binary()?;
    let profile = tempfile::tempdir().map_err(io_err("creating a chromium profile directory"))?;
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("starting {}", chromium.display())))?;
    // Read the pipes on their own threads so a full pipe never blocks Chromium.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_err("waiting for chromium"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestkitError::Chromium {
                reason: format!("did not finish loading {url} within {limit:?}"),
                stderr: err.join().unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dom = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() || dom.trim().is_empty() {
        return Err(TestkitError::Chromium {
            reason: format!(
                "exited with {status} and {} bytes of DOM for {url}",
                dom.len()
            ),
            stderr,
        });
    }
    Ok(dom)
}
