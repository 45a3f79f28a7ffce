//! The servers' side: TLS and bearer-token authentication around a warp service, and the accept loop
//! that serves it with graceful draining.
//!
//! # Authentication
//!
//! With tokens configured, every request must carry `Authorization: Bearer <token>` matching one of
//! them (compared in constant time; several tokens allow rotation without downtime). Otherwise the
//! answer is `401` with `WWW-Authenticate: Bearer realm="databus"`, `X-Databus-Error: unauthorized` and
//! a JSON body `{"error": "unauthorized", "message": ..}`, before any route runs. `/health` is always
//! open (load balancers probe it); `/metrics` is open only with `open_metrics = true`. Tokens never
//! appear in logs or responses.
//!
//! # TLS
//!
//! With `tls.cert` and `tls.key`, connections are TLS 1.2/1.3 (rustls, ring); the handshake has 10 s.
//! Plain HTTP is served when TLS is not configured.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use warp::reply::Response;

use crate::{HttpError, Token};

pub mod config;
pub mod limits;

pub use config::{HttpServerConfig, InvalidSetting, ServerDefaults, ServerLimits};
pub use limits::ConnectionLimits;
use limits::{Activity, Registry, Watched};

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[http.tls]`: serve HTTPS with this certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server certificate, followed by any intermediate certificates.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1). Keep it readable by the
    /// service user only.
    pub key: PathBuf,
}

/// `[http.auth]`: require a bearer token on every request but `/health` (and `/metrics` if open).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Environment variable holding the accepted tokens (separated by commas or whitespace).
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// File holding the accepted tokens, one per line. Both may be set; their tokens add up.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Serve `/metrics` without a token (for scrapers that cannot send one). Default false.
    #[serde(default)]
    pub open_metrics: bool,
}

/// The accepted tokens and which paths need none.
#[derive(Debug)]
struct Auth {
    tokens: Vec<Token>,
    open_metrics: bool,
}

/// Validated TLS and authentication of one server. The default is plain HTTP without tokens.
#[derive(Clone, Default)]
pub struct ServerSecurity {
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<Auth>>,
    /// Called for every request refused with `401` (the server's error metric).
    on_refused: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Bounds on the connections held (hostile or broken clients).
    limits: ConnectionLimits,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("tls", &self.tls.is_some())
            .field("tokens", &self.auth.as_ref().map(|a| a.tokens.len()))
            .field("open_metrics", &self.auth.as_ref().map(|a| a.open_metrics))
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServerSecurity {
    /// Plain HTTP, no authentication.
    pub fn plain() -> ServerSecurity {
        ServerSecurity::default()
    }

    /// Loads the certificate and key and the tokens (through `env` for `tokens_env`). `section` names
    /// the configuration section in errors (e.g. `http`).
    pub fn from_config(
        section: &str,
        tls: Option<&TlsConfig>,
        auth: Option<&AuthConfig>,
        connections: &ConnectionLimits,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServerSecurity, HttpError> {
        let prefix = |e: HttpError| HttpError::Config(format!("{section}.{e}"));
        connections
            .validate(&format!("{section}.connections"))
            .map_err(HttpError::Config)?;
        let mut security = ServerSecurity::plain().with_limits(*connections);
        if let Some(tls) = tls {
            security.tls = Some(crate::tls::server_config(&tls.cert, &tls.key).map_err(prefix)?);
        }
        if let Some(auth) = auth {
            if auth.tokens_env.is_none() && auth.tokens_file.is_none() {
                return Err(HttpError::Config(format!(
                    "{section}.auth: no tokens_env or tokens_file; set one (or remove [{section}.auth])"
                )));
            }
            let tokens = Token::read_all(
                &format!("{section}.auth"),
                auth.tokens_env.as_deref(),
                auth.tokens_file.as_deref(),
                env,
            )?;
            security = security.with_tokens(tokens, auth.open_metrics);
        }
        Ok(security)
    }

    /// Serves TLS with the certificate chain and key of these PEM files.
    pub fn with_tls_files(
        mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<ServerSecurity, HttpError> {
        self.tls = Some(crate::tls::server_config(cert, key)?);
        Ok(self)
    }

    /// Requires one of `tokens` (none: no authentication); `open_metrics` leaves `/metrics` open.
    pub fn with_tokens(mut self, tokens: Vec<Token>, open_metrics: bool) -> ServerSecurity {
        self.auth = (!tokens.is_empty()).then(|| {
            Arc::new(Auth {
                tokens,
                open_metrics,
            })
        });
        self
    }

    /// Calls `count` for every request refused with `401`, before the answer is sent (servers count
    /// refusals in their error metric with it).
    pub fn on_refused(mut self, count: impl Fn() + Send + Sync + 'static) -> ServerSecurity {
        self.on_refused = Some(Arc::new(count));
        self
    }

    /// Bounds the connections served (see [`limits`]).
    pub fn with_limits(mut self, limits: ConnectionLimits) -> ServerSecurity {
        self.limits = limits;
        self
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests need a token.
    pub fn requires_token(&self) -> bool {
        self.auth.is_some()
    }

    /// `http` or `https`, for URLs in messages.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

impl Auth {
    /// `None` when `req` may pass, else the `401` to send.
    fn refuse<B>(&self, req: &Request<B>) -> Option<Response> {
        let path = req.uri().path();
        if path == "/health" || (self.open_metrics && path == "/metrics") {
            return None;
        }
        let (problem, message) = match req.headers().get(AUTHORIZATION) {
            None => (
                None,
                "this server requires a bearer token; send Authorization: Bearer <token> (databus --token or DATABUS_TOKEN, token_env in configs)",
            ),
            Some(value) => {
                let bytes = value.as_bytes();
                let given = bytes
                    .get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
                    .map(|_| bytes[7..].trim_ascii());
                match given {
                    Some(token)
                        if self
                            .tokens
                            .iter()
                            .fold(false, |ok, t| t.matches(token) | ok) =>
                    {
                        return None;
                    }
                    Some(_) => (
                        Some("invalid_token"),
                        "the bearer token is not accepted by this server; check the client's token against the server's auth tokens",
                    ),
                    None => (
                        Some("invalid_request"),
                        "the Authorization header is not a bearer token; send Authorization: Bearer <token>",
                    ),
                }
            }
        };
        tracing::info!(
            path,
            reason = problem.unwrap_or("missing_token"),
            "request refused: unauthorized"
        );
        let body = serde_json::json!({ "error": "unauthorized", "message": message });
        let mut response = Response::new(body.to_string().into());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let challenge = match problem {
            Some(code) => format!("Bearer realm=\"databus\", error=\"{code}\""),
            None => "Bearer realm=\"databus\"".to_owned(),
        };
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            headers.insert(WWW_AUTHENTICATE, v);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            crate::ERROR_HEADER,
            HeaderValue::from_static("unauthorized"),
        );
        Some(response)
    }
}

/// Serves `service` (e.g. `warp::service(routes)`) on `listener` with `security` until `shutdown`
/// completes; then stops accepting and waits for the connections in flight to finish their requests.
/// Connections are bounded by the security's [`ConnectionLimits`] (see [`limits`]).
pub async fn serve<S>(
    service: S,
    listener: TcpListener,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = security.tls.clone().map(TlsAcceptor::from);
    let limits = security.limits;
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
        && (security.tls.is_none() || security.auth.is_none())
    {
        tracing::warn!(
            %addr,
            tls = security.tls.is_some(),
            tokens = security.auth.is_some(),
            "listening beyond loopback without TLS and tokens: anyone who reaches this address can read the change stream (or sniff it); set http.tls and http.auth"
        );
    }
    let max_connections = limits.effective_max_connections();
    if max_connections < limits.max_connections {
        tracing::warn!(
            max_connections,
            configured = limits.max_connections,
            "the open-file limit lowers http.connections.max_connections (raise it with ulimit -n)"
        );
    }
    let registry = Registry::new(max_connections);
    let over_cap: Arc<[u8]> = limits::too_many_connections(max_connections).into();
    // Connections over the cap being answered (each for at most a second), within the descriptors
    // kept for the process.
    let lingering = Arc::new(tokio::sync::Semaphore::new(limits::FD_RESERVE / 4));
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        // E.g. out of file descriptors: wait for connections to close.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        let activity = Activity::new();
        let Some(place) = registry.admit(&activity) else {
            // Over the cap: answer without waiting (a client that does not read loses the answer,
            // not our time) and close, so the descriptor is free again at once.
            if acceptor.is_none() {
                refuse_over_cap(stream, over_cap.clone(), &lingering);
            }
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(%remote, max_connections, "connection refused: too many connections");
                last_refusal_log = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Watched::new(stream, activity.clone());
        let auth = security.auth.clone();
        let on_refused = security.on_refused.clone();
        let inner = service.clone();
        let requests = activity.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let refused = auth.as_ref().and_then(|a| a.refuse(&req));
            if let (Some(_), Some(count)) = (&refused, &on_refused) {
                count();
            }
            let mut inner = inner.clone();
            if refused.is_none() {
                requests.trust();
            }
            let in_flight = requests.request();
            async move {
                let _in_flight = in_flight;
                match refused {
                    Some(response) => Ok::<_, Infallible>(response),
                    None => inner.call(req).await,
                }
            }
        });
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _place = place;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_http2_streams);
            let idle = idle_watch(&activity, limits);
            let serve = async {
                match acceptor {
                    None => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            let result = tokio::select! {
                r = serve => r,
                () = idle => {
                    tracing::debug!(%remote, "closing an idle connection");
                    Ok(())
                }
                () = activity.evicted() => {
                    tracing::debug!(%remote, "closing a connection displaced by a newer one at the cap");
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Completes once the connection is idle (see [`limits::Activity::idle`]).
async fn idle_watch(activity: &Activity, limits: ConnectionLimits) {
    let tick =
        (limits.header_read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(25));
    loop {
        tokio::time::sleep(tick).await;
        if activity.idle(limits.header_read_timeout, limits.idle_timeout) {
            return;
        }
    }
}

/// Answers a connection over the cap: `answer` written without waiting, then what the client sent is
/// read and dropped for up to a second so that closing does not reset the connection before the
/// client reads the answer. At most `lingering` such connections at once; beyond that they are just
/// closed.
fn refuse_over_cap(
    mut stream: tokio::net::TcpStream,
    answer: Arc<[u8]>,
    lingering: &Arc<tokio::sync::Semaphore>,
) {
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _permit = permit;
        if stream.try_write(&answer).is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}
