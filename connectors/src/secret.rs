//! [`Secret`]: a password or token that never shows in `Debug`, logs or a printed configuration.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::ConnectorError;

/// What a serialized [`Secret`] looks like (`--print-config` output): the value is never written.
pub const REDACTED: &str = "<redacted>";

/// A secret value. `Debug` prints `Secret(***)`; `Serialize` writes [`REDACTED`]; only
/// [`Secret::expose`] gives the text, for the one place that hands it to a driver.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's text, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from the environment variable `env` or from `file` (trailing newline ignored):
    /// at most one of them may be given; neither gives `None`. Errors name `field` and never the value.
    pub fn from_env_or_file(
        field: &str,
        env_var: Option<&str>,
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, ConnectorError> {
        match (env_var, file) {
            (Some(_), Some(_)) => Err(ConnectorError::Config(format!(
                "{field}_env and {field}_file are both set; keep one"
            ))),
            (Some(var), None) => env(var).map(|v| Some(Secret(v))).ok_or_else(|| {
                ConnectorError::Config(format!(
                    "{field}_env: environment variable {var} is not set; export it or use {field}_file"
                ))
            }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())))
                .map_err(|e| {
                    ConnectorError::Config(format!(
                        "{field}_file: cannot read {}: {e}",
                        PathBuf::from(path).display()
                    ))
                }),
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// `url` with the password of its userinfo (if any) replaced by `***`, for messages and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(
            redact_url("mysql://u:hunter2@h:3306/?a=b"),
            "mysql://u:***@h:3306/?a=b"
        );
        assert_eq!(redact_url("mysql://u@h/"), "mysql://u@h/");
    }

    #[test]
    fn from_env_or_file() {
        let env = |v: &str| (v == "PW").then(|| "x".to_owned());
        assert_eq!(
            Secret::from_env_or_file("password", Some("PW"), None, &env).unwrap(),
            Some(Secret::new("x"))
        );
        let e = Secret::from_env_or_file("password", Some("NOPE"), None, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE is not set"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(
            Secret::from_env_or_file("password", None, Some(&path), &env).unwrap(),
            Some(Secret::new("from-file"))
        );
    }
}
