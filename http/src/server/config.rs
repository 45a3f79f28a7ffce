//! `[http]`: the one server section of the relay and the bootstrap server.
//!
//! Both servers parse, print (`--print-config`) and validate the same type; only the defaults that
//! must differ (the port, and how many `stream` requests run at once: a bootstrap `stream` holds a
//! SQLite reader, a relay's is a long poll on memory) come from the server, through [`ServerDefaults`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{AuthConfig, ConnectionLimits, TlsConfig};

/// The largest response budget a server accepts in its configuration.
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 1 << 30;
/// The longest long-poll wait a server accepts in its configuration.
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// The defaults that differ between the servers.
pub trait ServerDefaults {
    /// The port of the default listen address (on 127.0.0.1).
    const PORT: u16;
    /// The default of `max_concurrent_streams`.
    const MAX_CONCURRENT_STREAMS: usize;
}

/// `[http]`: where a server listens, what a response may hold, and how it defends itself.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct HttpServerConfig<D: ServerDefaults> {
    /// Listen address. Default 127.0.0.1 and the server's port (relay 11140, bootstrap 7100).
    #[serde(default = "default_listen::<D>")]
    pub listen: SocketAddr,
    /// The largest response budget a request may ask for (`max_bytes`). Default 16 MiB.
    #[serde(
        default = "default_max_response_bytes",
        serialize_with = "serialize_size"
    )]
    pub max_response_bytes: ByteSize,
    /// The budget of a request that gives none. Default 1 MiB.
    #[serde(default = "default_response_bytes", serialize_with = "serialize_size")]
    pub default_response_bytes: ByteSize,
    /// The longest long-poll wait a request may ask for (`wait_ms`; the relay's `stream`: the
    /// bootstrap server answers at once). Default 30 s.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// The longest accepted query string. Default 8 KiB.
    #[serde(default = "default_max_query_bytes", serialize_with = "serialize_size")]
    pub max_query_bytes: ByteSize,
    /// The most `stream` requests served at once; more get `503 overloaded` with `Retry-After`.
    /// Default: relay 1024, bootstrap 64.
    #[serde(default = "default_max_concurrent_streams::<D>")]
    pub max_concurrent_streams: usize,
    /// Serve HTTPS with this certificate (`cert`) and private key (`key`), PEM files. Default: plain
    /// HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Require a bearer token on every request but `/health` (`tokens_env` and/or `tokens_file`;
    /// several tokens for rotation; `open_metrics = true` leaves `/metrics` open). Default: no
    /// authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// `[http.connections]`: the most connections held, how long a client has to send a request's
    /// headers, when an idle connection is closed, HTTP/2 streams per connection. Defaults: 1024
    /// (lowered to the open-file limit minus 128), 10 s, 60 s, 16.
    #[serde(default)]
    pub connections: ConnectionLimits,
    #[serde(skip)]
    defaults: PhantomData<fn() -> D>,
}

/// A validated `[http]`, in runtime units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest `max_bytes`.
    pub max_response_bytes: usize,
    /// Budget when `max_bytes` is absent.
    pub default_response_bytes: usize,
    /// Longest long-poll wait.
    pub max_wait: Duration,
    /// Longest query string.
    pub max_query_bytes: usize,
    /// Most `stream` requests at once.
    pub max_concurrent_streams: usize,
}

impl ServerLimits {
    /// The limits of a server's default `[http]`.
    pub fn defaults<D: ServerDefaults>() -> Self {
        HttpServerConfig::<D>::default()
            .validate()
            .expect("the default [http] section is valid")
    }
}

/// A setting of `[http]` that is out of range: `key` names it as written in the file
/// (`http.max_wait`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    /// The setting, as `http.<name>`.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl<D: ServerDefaults> HttpServerConfig<D> {
    /// Checks every bound and converts to runtime units.
    pub fn validate(&self) -> Result<ServerLimits, InvalidSetting> {
        let invalid = |key, message: String| InvalidSetting { key, message };
        let max = self.max_response_bytes.as_u64();
        if !(1024..=MAX_RESPONSE_BYTES_LIMIT).contains(&max) {
            return Err(invalid(
                "http.max_response_bytes",
                format!(
                    "{} is out of range; use 1KiB to 1GiB",
                    self.max_response_bytes
                ),
            ));
        }
        let default = self.default_response_bytes.as_u64();
        if default == 0 || default > max {
            return Err(invalid(
                "http.default_response_bytes",
                format!(
                    "{} must be between 1 byte and http.max_response_bytes ({})",
                    self.default_response_bytes, self.max_response_bytes
                ),
            ));
        }
        if self.max_wait > MAX_WAIT_LIMIT {
            return Err(invalid(
                "http.max_wait",
                format!(
                    "{} is too long; use at most {}",
                    humantime::format_duration(self.max_wait),
                    humantime::format_duration(MAX_WAIT_LIMIT)
                ),
            ));
        }
        let query = self.max_query_bytes.as_u64();
        if !(256..=1 << 20).contains(&query) {
            return Err(invalid(
                "http.max_query_bytes",
                format!("{} is out of range; use 256B to 1MiB", self.max_query_bytes),
            ));
        }
        if !(1..=100_000).contains(&self.max_concurrent_streams) {
            return Err(invalid(
                "http.max_concurrent_streams",
                format!(
                    "{} is out of range; use 1 to 100000",
                    self.max_concurrent_streams
                ),
            ));
        }
        // Every bound above is at most 1 GiB, which fits any platform's usize.
        let size = |b: ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        Ok(ServerLimits {
            listen: self.listen,
            max_response_bytes: size(self.max_response_bytes),
            default_response_bytes: size(self.default_response_bytes),
            max_wait: self.max_wait,
            max_query_bytes: size(self.max_query_bytes),
            max_concurrent_streams: self.max_concurrent_streams,
        })
    }
}

impl<D: ServerDefaults> Default for HttpServerConfig<D> {
    fn default() -> Self {
        HttpServerConfig {
            listen: default_listen::<D>(),
            max_response_bytes: default_max_response_bytes(),
            default_response_bytes: default_response_bytes(),
            max_wait: default_max_wait(),
            max_query_bytes: default_max_query_bytes(),
            max_concurrent_streams: default_max_concurrent_streams::<D>(),
            tls: None,
            auth: None,
            connections: ConnectionLimits::default(),
            defaults: PhantomData,
        }
    }
}

impl<D: ServerDefaults> Clone for HttpServerConfig<D> {
    fn clone(&self) -> Self {
        HttpServerConfig {
            listen: self.listen,
            max_response_bytes: self.max_response_bytes,
            default_response_bytes: self.default_response_bytes,
            max_wait: self.max_wait,
            max_query_bytes: self.max_query_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            connections: self.connections,
            defaults: PhantomData,
        }
    }
}

impl<D: ServerDefaults> std::fmt::Debug for HttpServerConfig<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerConfig")
            .field("listen", &self.listen)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("default_response_bytes", &self.default_response_bytes)
            .field("max_wait", &self.max_wait)
            .field("max_query_bytes", &self.max_query_bytes)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("connections", &self.connections)
            .finish()
    }
}

fn default_listen<D: ServerDefaults>() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], D::PORT))
}
fn default_max_response_bytes() -> ByteSize {
    ByteSize::mib(16)
}
fn default_response_bytes() -> ByteSize {
    ByteSize::mib(1)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_max_query_bytes() -> ByteSize {
    ByteSize::kib(8)
}
fn default_max_concurrent_streams<D: ServerDefaults>() -> usize {
    D::MAX_CONCURRENT_STREAMS
}

/// A size as the configuration files write it: `16MiB`, `8KiB`, `100B`.
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// Serializes a size with [`format_size`] (for `serialize_with`).
pub fn serialize_size<S: serde::Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_size(size.as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Small;
    impl ServerDefaults for Small {
        const PORT: u16 = 9;
        const MAX_CONCURRENT_STREAMS: usize = 3;
    }

    #[test]
    fn defaults_come_from_the_server_and_round_trip() {
        let parsed: HttpServerConfig<Small> = toml::from_str("").unwrap();
        assert_eq!(parsed.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(parsed.max_concurrent_streams, 3);
        let text = toml::to_string(&parsed).unwrap();
        let again: HttpServerConfig<Small> = toml::from_str(&text).unwrap();
        assert_eq!(again.validate(), parsed.validate());
        assert!(text.contains("max_response_bytes = \"16MiB\""), "{text}");
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let parsed: HttpServerConfig<Small> = toml::from_str("max_wait = \"1h\"").unwrap();
        assert_eq!(parsed.validate().unwrap_err().key, "http.max_wait");
        let parsed: HttpServerConfig<Small> =
            toml::from_str("default_response_bytes = \"32MiB\"").unwrap();
        assert_eq!(
            parsed.validate().unwrap_err().key,
            "http.default_response_bytes"
        );
        assert!(toml::from_str::<HttpServerConfig<Small>>("pin_ttl = \"1h\"").is_err());
    }
}
