//! The configuration-file form of `databus replicate` (`--config replicate.toml`): the same settings
//! as the flags, under the same names (`relay` → `relays`, `--to` → `to`, ...). A flag given on the
//! command line overrides the file's value (a list flag replaces the file's whole list; either
//! password flag replaces both password keys). `--once` is a run mode and stays a flag.
//! docs/replicate.example.toml is the documented example.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ReplicateOptions;
use crate::UsageError;

/// Defaults of the settings a file and the flags may both leave out.
pub const DEFAULT_NAME: &str = "replica";
/// Default database of the replica's own tables in the target.
pub const DEFAULT_META_DB: &str = "databus";
/// Default interval between progress lines.
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Default time a target that does not answer at start is retried.
pub const DEFAULT_CONNECT_RETRY_FOR: Duration = Duration::from_secs(30);

/// The settings of one replicator, each optional: as read from a file, or as given by flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSettings {
    /// Relay base URLs (failover in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Bootstrap server base URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<String>,
    /// The target URL, without a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Environment variable holding the target's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the target's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Only these `database.table`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// The replica's name (its checkpoint row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Database of the replica's own tables in the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_db: Option<String>,
    /// How often progress and lag are logged.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_every: Option<Duration>,
    /// Serve Prometheus `/metrics` on this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long a target that does not answer at start is retried.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_retry_for: Option<Duration>,
}

impl ReplicateSettings {
    /// Parses a file's text (unknown keys are refused, naming them).
    pub fn parse(text: &str) -> Result<ReplicateSettings, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads and parses the file at `path`; every failure is a [`UsageError`] naming the file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<ReplicateSettings> {
        let (settings, ()) =
            crate::load_config(path, Self::parse, |_| Ok::<_, std::convert::Infallible>(()))?;
        Ok(settings)
    }

    /// `self` (the flags) over `file`: each setting the flags give wins.
    pub fn over(self, file: ReplicateSettings) -> ReplicateSettings {
        let list =
            |flags: Vec<String>, file: Vec<String>| if flags.is_empty() { file } else { flags };
        let (password_env, password_file) =
            if self.password_env.is_some() || self.password_file.is_some() {
                (self.password_env, self.password_file)
            } else {
                (file.password_env, file.password_file)
            };
        ReplicateSettings {
            relays: list(self.relays, file.relays),
            bootstrap: list(self.bootstrap, file.bootstrap),
            to: self.to.or(file.to),
            password_env,
            password_file,
            tables: list(self.tables, file.tables),
            name: self.name.or(file.name),
            meta_db: self.meta_db.or(file.meta_db),
            progress_every: self.progress_every.or(file.progress_every),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            connect_retry_for: self.connect_retry_for.or(file.connect_retry_for),
        }
    }

    /// Every default filled in: what `--print-config` prints.
    pub fn with_defaults(self) -> ReplicateSettings {
        ReplicateSettings {
            name: Some(self.name.unwrap_or_else(|| DEFAULT_NAME.to_owned())),
            meta_db: Some(self.meta_db.unwrap_or_else(|| DEFAULT_META_DB.to_owned())),
            progress_every: Some(self.progress_every.unwrap_or(DEFAULT_PROGRESS_EVERY)),
            connect_retry_for: Some(self.connect_retry_for.unwrap_or(DEFAULT_CONNECT_RETRY_FOR)),
            ..self
        }
    }

    /// The options of a run, or what is missing or contradictory.
    pub fn into_options(self, once: bool) -> Result<ReplicateOptions, UsageError> {
        if self.relays.is_empty() {
            return Err(UsageError(
                "no relay: give --relay URL or `relays = [\"http://host:11140\"]` in the --config file"
                    .into(),
            ));
        }
        let Some(to) = self.to.clone() else {
            return Err(UsageError(
                "no target: give --to URL or `to = \"mysql://user@host:3306/\"` in the --config file"
                    .into(),
            ));
        };
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(UsageError(
                "give password_env or password_file (--password-env or --password-file), not both"
                    .into(),
            ));
        }
        let s = self.with_defaults();
        Ok(ReplicateOptions {
            relays: s.relays,
            bootstrap: s.bootstrap,
            to,
            password_env: s.password_env,
            password_file: s.password_file,
            tables: s.tables,
            once,
            name: s.name.unwrap_or_default(),
            meta_db: s.meta_db.unwrap_or_default(),
            progress_every: s.progress_every.unwrap_or(DEFAULT_PROGRESS_EVERY),
            metrics_listen: s.metrics_listen,
            connect_retry_for: s.connect_retry_for.unwrap_or(DEFAULT_CONNECT_RETRY_FOR),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/replicate.example.toml");

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let file = ReplicateSettings::parse(EXAMPLE).unwrap();
        let opts = file.clone().into_options(false).unwrap();
        assert_eq!(opts.relays, ["http://127.0.0.1:11140"]);
        assert_eq!(opts.to, "mysql://replica@127.0.0.1:3306/");
        assert_eq!(opts.password_env.as_deref(), Some("REPLICA_PASSWORD"));
        assert_eq!(opts.progress_every, Duration::from_secs(10));
        let printed = toml::to_string(&file.clone().with_defaults()).unwrap();
        assert_eq!(
            ReplicateSettings::parse(&printed).unwrap(),
            file.with_defaults()
        );
    }

    #[test]
    fn flags_win_over_the_file_and_lists_replace_lists() {
        let file = ReplicateSettings::parse(EXAMPLE).unwrap();
        let flags = ReplicateSettings {
            tables: vec!["shop.orders".into()],
            password_file: Some("/run/secrets/replica".into()),
            name: Some("second".into()),
            ..Default::default()
        };
        let opts = flags.over(file).into_options(true).unwrap();
        assert_eq!(opts.tables, ["shop.orders"]);
        assert_eq!(opts.name, "second");
        assert_eq!(opts.relays, ["http://127.0.0.1:11140"]);
        // One password flag replaces both password keys of the file.
        assert_eq!(opts.password_env, None);
        assert_eq!(
            opts.password_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/replica"))
        );
        assert!(opts.once);
    }

    #[test]
    fn unknown_keys_and_missing_settings_are_named() {
        let err = ReplicateSettings::parse("relay = [\"http://x\"]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `relay`"), "{err}");
        let err = ReplicateSettings::parse("progress_every = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("progress_every"), "{err}");
        let err = ReplicateSettings::default()
            .into_options(false)
            .unwrap_err();
        assert!(err.0.contains("--relay"), "{err}");
        let only_relay = ReplicateSettings {
            relays: vec!["http://x".into()],
            ..Default::default()
        };
        let err = only_relay.into_options(false).unwrap_err();
        assert!(err.0.contains("--to"), "{err}");
    }
}
