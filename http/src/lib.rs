//! The HTTP layer shared by every databus process: one client and the servers' security.
//!
//! - [`follow`]: [`follow::StreamFollower`], the one follower of a relay's `/v1/stream` (long poll,
//!   checkpoint, typed answers, jittered retry honouring `Retry-After`).
//! - [`client`]: [`HttpClient`], the one HTTP/1.1 client of the relay and bootstrap APIs — `http://` or
//!   `https://` (rustls; the web PKI roots, or a custom CA file for self-signed certificates), an
//!   optional bearer token, one kept-alive connection, bounded bodies and timeouts. The client library,
//!   relay chaining, the bootstrap producer and the CLI all use it.
//! - [`server`] (feature `server`): [`server::serve`] runs a warp filter over plain TCP or TLS, with
//!   optional bearer-token authentication in front of every route (`/health` always open, `/metrics`
//!   configurable), and graceful draining on shutdown. Configured by [`server::TlsConfig`] and
//!   [`server::AuthConfig`], validated into [`server::ServerSecurity`].
//! - [`html`] (feature `server`) and [`human`]: what the HTML status pages and `databus status` share
//!   (escaping, password redaction, human-readable sizes and durations).
//! - [`Token`]: a bearer token that never prints (`Debug` and `Display` show `***`).
//!
//! Errors are one enum, [`HttpError`], classified by [`HttpError::is_transient`]: a refused connection
//! or a timeout may heal, a certificate the client does not trust will not.
//!
//! ```no_run
//! # async fn demo() -> Result<(), databus_http::HttpError> {
//! use std::time::Duration;
//! use databus_http::{ClientOptions, HttpClient, Token};
//!
//! let options = ClientOptions {
//!     ca_cert: Some("/etc/databus/ca.pem".into()),
//!     token: Some(Token::new("s3cr3t-t0ken")?),
//! };
//! let relay = HttpClient::new("https://relay.example:11140", &options)?;
//! let answer = relay.get("/v1/status", Duration::from_secs(10), 1 << 20).await?;
//! println!("{} {}", answer.status, String::from_utf8_lossy(&answer.body));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
mod error;
pub mod follow;
#[cfg(feature = "server")]
pub mod html;
pub mod human;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
mod tls;
mod token;

pub use client::{ClientOptions, Endpoint, HttpClient, Response, Scheme, redact_password};
pub use error::HttpError;
pub use token::Token;

/// The response header naming the machine-readable error code, as the relay and bootstrap set it.
pub use protocol::ERROR_HEADER;
