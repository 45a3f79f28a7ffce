//! Bearer tokens: validated, never printed, compared in constant time, read from the environment or a
//! file like every other secret.

use std::fmt;
use std::path::Path;

use crate::HttpError;

/// A bearer token (RFC 6750 `b64token` characters: `A-Z a-z 0-9 - . _ ~ + /`, then `=` padding), 1 to
/// 4096 bytes. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Checks and wraps a token. The error never repeats the token.
    pub fn new(text: impl Into<String>) -> Result<Token, HttpError> {
        let text = text.into();
        let body = text.trim_end_matches('=');
        let ok = !body.is_empty()
            && text.len() <= 4096
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if ok {
            Ok(Token(text))
        } else {
            Err(HttpError::Config(format!(
                "a bearer token of {} bytes is not valid; use 1 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / (e.g. openssl rand -hex 32)",
                text.len()
            )))
        }
    }

    /// The token's text, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }

    /// Reads tokens from the environment variable `env_var` and/or the file `file`: one or more
    /// tokens separated by whitespace or commas (several while rotating). `what` names the setting in
    /// errors. `None` for both gives no tokens.
    pub fn read_all(
        what: &str,
        env_var: Option<&str>,
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Token>, HttpError> {
        let mut texts = Vec::new();
        if let Some(var) = env_var {
            let value = env(var).ok_or_else(|| {
                HttpError::Config(format!(
                    "{what}: environment variable {var} is not set; export it or use a token file"
                ))
            })?;
            texts.push((format!("environment variable {var}"), value));
        }
        if let Some(path) = file {
            let value = std::fs::read_to_string(path).map_err(|e| {
                HttpError::Config(format!(
                    "{what}: cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            texts.push((format!("file {}", path.display()), value));
        }
        let mut tokens = Vec::new();
        for (from, text) in texts {
            let before = tokens.len();
            for part in text
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
            {
                tokens.push(
                    Token::new(part)
                        .map_err(|e| HttpError::Config(format!("{what}: {from}: {e}")))?,
                );
            }
            if tokens.len() == before {
                return Err(HttpError::Config(format!(
                    "{what}: {from} holds no token; write one (or several, separated by newlines)"
                )));
            }
        }
        Ok(tokens)
    }

    /// The single token a client sends, from an environment variable or a file (at most one of them).
    pub fn read_one(
        what: &str,
        env_var: Option<&str>,
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Token>, HttpError> {
        if env_var.is_some() && file.is_some() {
            return Err(HttpError::Config(format!(
                "{what}: both token_env and token_file are set; keep one"
            )));
        }
        let mut tokens = Token::read_all(what, env_var, file, env)?;
        if tokens.len() > 1 {
            return Err(HttpError::Config(format!(
                "{what}: holds {} tokens; a client sends one",
                tokens.len()
            )));
        }
        Ok(tokens.pop())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `a == b` without an early exit on the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimizer from turning the fold back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_never_printed() {
        let t = Token::new("abc-DEF_1.2~3+4/5==").unwrap();
        assert_eq!(format!("{t:?} {t}"), "Token(***) ***");
        assert!(t.matches(b"abc-DEF_1.2~3+4/5=="));
        assert!(!t.matches(b"abc-DEF_1.2~3+4/5=!"));
        assert!(!t.matches(b"abc"));
        for bad in [
            "",
            "===",
            "has space",
            "a\r\nX-Evil: 1",
            "ä",
            &"x".repeat(4097),
        ] {
            let err = Token::new(bad).unwrap_err().to_string();
            assert!(!err.contains("X-Evil") && !err.contains("space"), "{err}");
        }
    }

    #[test]
    fn tokens_come_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "new-token\nold-token\n").unwrap();
        let env = |v: &str| (v == "T").then(|| "env-token".to_owned());
        let all = Token::read_all("auth", Some("T"), Some(&file), &env).unwrap();
        let texts: Vec<_> = all.iter().map(Token::expose).collect();
        assert_eq!(texts, ["env-token", "new-token", "old-token"]);
        let err = Token::read_one("upstream", None, Some(&file), &env).unwrap_err();
        assert!(err.to_string().contains("holds 2 tokens"), "{err}");
        let err = Token::read_all("auth", Some("UNSET"), None, &env).unwrap_err();
        assert!(err.to_string().contains("UNSET is not set"), "{err}");
        std::fs::write(&file, "\n").unwrap();
        let err = Token::read_all("auth", None, Some(&file), &env).unwrap_err();
        assert!(err.to_string().contains("holds no token"), "{err}");
        assert_eq!(Token::read_one("x", None, None, &env).unwrap(), None);
    }
}
