//! What `databus relay --print-config` and `databus bootstrap … --print-config` share: TOML values and
//! the `[http]` security fields, printed without any secret.

use std::fmt::Write as _;

use databus_http::server::{AuthConfig, ConnectionLimits, TlsConfig};

/// A byte count in the largest exact binary unit (`"512MiB"`).
pub(crate) fn size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// A TOML string.
pub(crate) fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The `tls` and `auth` lines of an `[http]` section: file paths and variable names, never tokens.
pub(crate) fn security(out: &mut String, tls: Option<&TlsConfig>, auth: Option<&AuthConfig>) {
    if let Some(tls) = tls {
        let _ = writeln!(
            out,
            "tls = {{ cert = {}, key = {} }}",
            q(&tls.cert.display().to_string()),
            q(&tls.key.display().to_string())
        );
    }
    if let Some(auth) = auth {
        let mut fields = Vec::new();
        if let Some(var) = &auth.tokens_env {
            fields.push(format!("tokens_env = {}", q(var)));
        }
        if let Some(path) = &auth.tokens_file {
            fields.push(format!("tokens_file = {}", q(&path.display().to_string())));
        }
        fields.push(format!("open_metrics = {}", auth.open_metrics));
        let _ = writeln!(out, "auth = {{ {} }}  # tokens redacted", fields.join(", "));
    }
}

/// A duration in the largest exact unit (`"14d"`, `"1h"`, `"30s"`, `"500ms"`), as both printed
/// configurations write it.
pub(crate) fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= per && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// `[http] connections`, as an inline table of the `[http]` section.
pub(crate) fn connections(out: &mut String, c: &ConnectionLimits) {
    let _ = writeln!(
        out,
        "connections = {{ max_connections = {}, header_read_timeout = {}, idle_timeout = {}, max_http2_streams = {} }}",
        c.max_connections,
        q(&duration(c.header_read_timeout)),
        q(&duration(c.idle_timeout)),
        c.max_http2_streams
    );
}
