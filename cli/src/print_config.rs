//! What `databus relay --print-config` and `databus bootstrap … --print-config` share: TOML values and
//! the `[http]` security fields, printed without any secret.

use std::fmt::Write as _;

use databus_http::server::{AuthConfig, TlsConfig};

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
