//! Errors at the edge: the whole cause chain printed once, then the fix when one is known.
//!
//! ```text
//! error: starting the relay
//!   caused by: cannot listen on 127.0.0.1:11140: Address already in use (os error 98)
//!   fix: another process listens on that address; stop it or choose another address (--listen, or listen in the [http] section of the config)
//! ```
//!
//! Library errors often repeat their source in their own message (`"{what}: {source}"`); a cause whose
//! text is already part of an earlier line is not printed again.

use std::fmt::Write as _;
use std::io::ErrorKind;

/// Renders `error` for stderr: `error: ..`, one `caused by: ..` per new cause, and a `fix: ..` line
/// when the chain holds a cause with a known remedy. Ends with a newline.
pub fn render(error: &anyhow::Error) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || shown.iter().any(|s| s.contains(text)) {
            continue;
        }
        shown.push(text.to_owned());
    }
    let mut out = String::new();
    for (i, line) in shown.iter().enumerate() {
        let label = if i == 0 { "error" } else { "  caused by" };
        let _ = writeln!(out, "{label}: {line}");
    }
    let already_fixed = shown.iter().any(|s| mentions_a_fix(s));
    if let Some(fix) = fix_for(error).filter(|_| !already_fixed) {
        let _ = writeln!(out, "  fix: {fix}");
    }
    out
}

/// Whether a message already tells the user what to do (the codebase's messages name the fix after a
/// `;`, e.g. "binlog_format is STATEMENT; set binlog_format=ROW").
fn mentions_a_fix(message: &str) -> bool {
    message.contains("; ")
}

/// The remedy for the first cause in the chain that has a known one.
pub fn fix_for(error: &anyhow::Error) -> Option<&'static str> {
    error.chain().find_map(|cause| {
        let io = cause.downcast_ref::<std::io::Error>()?;
        Some(match io.kind() {
            ErrorKind::ConnectionRefused => {
                "nothing listens at that address: start the server (databus relay / databus bootstrap) or correct the URL"
            }
            ErrorKind::AddrInUse => {
                "another process listens on that address; stop it or choose another address (--listen, or listen in the [http] section of the config)"
            }
            ErrorKind::AddrNotAvailable => {
                "that address is not on this machine; listen on 127.0.0.1 or one of its interfaces"
            }
            ErrorKind::PermissionDenied => {
                "permission denied: run as a user that may access the file or port (ports below 1024 need privileges)"
            }
            ErrorKind::NotFound => "the file or directory does not exist; check the path",
            ErrorKind::TimedOut => {
                "the server did not answer in time: check that it runs and that no firewall drops the connection"
            }
            _ => return None,
        })
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {source}")]
    struct Listen {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_once_then_the_fix() {
        let io = std::io::Error::new(ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(Listen { source: io }).context("starting the relay");
        assert_eq!(
            render(&error),
            "error: starting the relay\n  caused by: cannot listen on 127.0.0.1:1: Address already in use\n  \
             fix: another process listens on that address; stop it or choose another address (--listen, or listen in the [http] section of the config)\n"
        );
    }

    #[test]
    fn a_chain_without_known_fix_prints_only_its_causes() {
        let error = anyhow::anyhow!("bad frame").context("reading the relay");
        assert_eq!(
            render(&error),
            "error: reading the relay\n  caused by: bad frame\n"
        );
        assert_eq!(fix_for(&error), None);
    }

    #[test]
    fn a_message_with_its_own_fix_gets_no_second_one() {
        let io = std::io::Error::new(ErrorKind::ConnectionRefused, "Connection refused");
        let error = anyhow::Error::new(io)
            .context("cannot connect to the relay at http://127.0.0.1:1; is it running?");
        let text = render(&error);
        assert!(!text.contains("fix:"), "{text}");
        let io = std::io::Error::new(ErrorKind::ConnectionRefused, "Connection refused");
        let error = anyhow::Error::new(io).context("GET /v1/status");
        let text = render(&error);
        assert!(
            text.contains("caused by: Connection refused\n  fix: nothing listens"),
            "{text}"
        );
    }
}
