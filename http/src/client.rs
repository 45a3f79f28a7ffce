//! The one HTTP/1.1 client of the relay and bootstrap APIs: `http` or `https`, an optional bearer token,
//! one kept-alive connection reused between requests, bounded bodies, a timeout per request.
//!
//! A request is `GET` only (the APIs are read-only). Any status comes back as a [`Response`]: what a
//! `401` or a `410` means is the caller's business. Errors are [`HttpError`]s: refused/broken
//! connections and timeouts are transient; an untrusted certificate, a bad URL or an oversized body are
//! definite.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{HttpError, Token};

/// How a client authenticates and whom it trusts: shared by every server it talks to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// PEM file of the CA (or the self-signed certificate) that signed the servers' certificates;
    /// `None` trusts the web PKI roots. Used by `https://` URLs only.
    pub ca_cert: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<Token>,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS (rustls).
    Https,
}

/// A server's base URL, parsed: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: Scheme,
    host: String,
    authority: String,
    prefix: String,
    url: String,
}

impl Endpoint {
    /// Parses a base URL (default ports 80 and 443; a trailing `/` is dropped; no query).
    pub fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let shown = redact_userinfo(url);
        let bad = |why: &str| HttpError::Config(format!("server url {shown:?} {why}"));
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(&format!("does not parse ({e}); write http://host:port")))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(bad(&format!("has scheme {other}; use http:// or https://")));
            }
            None => return Err(bad("has no scheme; write http://host:port")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host"))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad(
                "carries user information; give a token with --token / token_env instead",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("has a query string; give the base URL only"));
        }
        let port = uri.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let host_only = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Endpoint {
            scheme,
            authority: if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            host: host_only,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host name or address (no brackets, no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path prefix requests go under (empty, or `/something`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The base URL as given, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// A response read whole (bounded).
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` code of a JSON error body (or of the `X-Databus-Error` header).
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .or_else(|| self.header(crate::ERROR_HEADER).map(str::to_owned))
    }

    /// The `message` of a JSON error body, else `HTTP <status>`.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// A client of one server. Cheap to clone (clones share the idle connection); usable from several tasks
/// at once (each request takes the idle connection or opens its own).
#[derive(Clone)]
pub struct HttpClient {
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
    authorization: Option<HeaderValue>,
    user_agent: HeaderValue,
    idle: Arc<Mutex<Option<SendRequest<Empty<Bytes>>>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("token", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

impl HttpClient {
    /// A client of the server at `url` (`http[s]://host[:port][/prefix]`). Reads the CA file now, so a
    /// bad one is reported before the first request.
    pub fn new(url: &str, options: &ClientOptions) -> Result<HttpClient, HttpError> {
        let endpoint = Endpoint::parse(url)?;
        let tls = match endpoint.scheme {
            Scheme::Https => Some(TlsConnector::from(crate::tls::client_config(
                options.ca_cert.as_deref(),
            )?)),
            Scheme::Http => None,
        };
        if tls.is_some() {
            ServerName::try_from(endpoint.host.clone()).map_err(|e| {
                HttpError::Config(format!(
                    "server url {url:?}: {:?} is not a TLS server name: {e}",
                    endpoint.host
                ))
            })?;
        }
        let authorization = options
            .token
            .as_ref()
            .map(|t| {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.expose())).map_err(|_| {
                        HttpError::Config("the bearer token is not a header value".into())
                    })?;
                v.set_sensitive(true);
                Ok::<_, HttpError>(v)
            })
            .transpose()?;
        Ok(HttpClient {
            endpoint,
            tls,
            authorization,
            user_agent: HeaderValue::from_static(concat!("databus/", env!("CARGO_PKG_VERSION"))),
            idle: Arc::default(),
        })
    }

    /// Sets the `User-Agent` (default `databus/<version>`).
    pub fn with_user_agent(mut self, agent: &'static str) -> HttpClient {
        self.user_agent = HeaderValue::from_static(agent);
        self
    }

    /// The parsed base URL.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Whether requests carry a bearer token.
    pub fn has_token(&self) -> bool {
        self.authorization.is_some()
    }

    /// Forgets the idle connection (the next request connects anew).
    pub fn reset(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// `GET <prefix><path_and_query>`, the whole body up to `limit` bytes, within `timeout`.
    pub async fn get(
        &self,
        path_and_query: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<Response, HttpError> {
        match tokio::time::timeout(timeout, self.get_inner(path_and_query, limit)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                url: self.endpoint.url.clone(),
                after: timeout,
            }),
        }
    }

    fn connection_error(&self, message: String) -> HttpError {
        HttpError::Connection {
            url: self.endpoint.url.clone(),
            message,
            source: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, HttpError> {
        let stream = TcpStream::connect(&self.endpoint.authority)
            .await
            .map_err(|e| HttpError::Connection {
                url: self.endpoint.url.clone(),
                message: format!("cannot connect: {e}"),
                source: Some(e),
            })?;
        let _ = stream.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(stream)).await,
            Some(tls) => {
                let name = ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| HttpError::Config(format!("bad TLS server name: {e}")))?;
                let stream = tls.connect(name, stream).await.map_err(|e| {
                    match e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    {
                        Some(
                            err @ (rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented),
                        ) => HttpError::Certificate {
                            url: self.endpoint.url.clone(),
                            message: err.to_string(),
                        },
                        _ => self.connection_error(format!("TLS handshake failed: {e}")),
                    }
                })?;
                handshake(TokioIo::new(stream)).await
            }
        };
        sender.map_err(|e| self.connection_error(format!("HTTP handshake failed: {e}")))
    }

    async fn get_inner(&self, path_and_query: &str, limit: usize) -> Result<Response, HttpError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut sender = match idle {
            Some(mut s) if !s.is_closed() => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            _ => self.connect().await?,
        };
        let mut request = Request::get(format!("{}{path_and_query}", self.endpoint.prefix))
            .header(HOST, &self.endpoint.authority)
            .header(USER_AGENT, self.user_agent.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpError::Config(format!("bad request path {path_and_query:?}: {e}")))?;
        if let Some(auth) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.connection_error(format!("request failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(HttpError::TooLarge {
                    url: self.endpoint.url.clone(),
                    limit,
                });
            }
            Err(e) => return Err(self.connection_error(format!("reading the body: {e}"))),
        };
        let keep = !parts
            .headers
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if keep && !sender.is_closed() {
            *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// `url` with the password of its userinfo replaced by `***` (the user stays), for configurations
/// printed back and messages.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// `url` with any `user:password@` replaced by `***@`, for messages.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Empty<Bytes>>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_password("mysql://u:p@w@h:1/x"),
            "mysql://u:***@h:1/x"
        );
        assert_eq!(redact_password("mysql://u@h:1"), "mysql://u@h:1");
        assert_eq!(redact_password("mysql://h:1/?a=b@c"), "mysql://h:1/?a=b@c");
        assert_eq!(redact_userinfo("http://u:p@h:1/x"), "http://***@h:1/x");
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (e.authority(), e.prefix(), e.url()),
            ("127.0.0.1:8080", "", "http://127.0.0.1:8080")
        );
        let e = Endpoint::parse("https://relay.example/db").unwrap();
        assert_eq!(
            (e.scheme(), e.authority(), e.prefix(), e.host()),
            (Scheme::Https, "relay.example:443", "/db", "relay.example")
        );
        let e = Endpoint::parse("https://[::1]:9/").unwrap();
        assert_eq!((e.authority(), e.host()), ("[::1]:9", "::1"));
        for bad in [
            "ftp://x:1",
            "127.0.0.1:80",
            "http://x:1/?a=b",
            "::",
            "http://u:pw@x:1",
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let c = HttpClient::new(
            "http://127.0.0.1:1",
            &ClientOptions {
                ca_cert: None,
                token: Some(Token::new("hunter2").unwrap()),
            },
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }
}
