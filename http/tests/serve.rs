//! The shared server and client over real loopback: plain HTTP, TLS with a self-signed certificate made
//! here, bearer tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use databus_http::server::{AuthConfig, ConnectionLimits, ServerSecurity, TlsConfig, serve};
use databus_http::{ClientOptions, HttpClient, HttpError, Token};
use tokio_util_shim::Shutdown;
use warp::Filter;

/// A tiny oneshot-based shutdown signal (this crate has no tokio-util dependency).
mod tokio_util_shim {
    pub struct Shutdown(pub Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Shutdown {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
}

const LIMIT: usize = 1 << 20;
const T: Duration = Duration::from_secs(10);

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn self_signed() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        _dir: dir,
        cert,
        key,
    }
}

async fn start(security: ServerSecurity) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
    let routes = warp::path!("v1" / "status")
        .map(|| warp::reply::json(&serde_json::json!({"ok": true})).into_response())
        .or(warp::path!("health").map(|| warp::reply::html("ok").into_response()))
        .unify()
        .or(warp::path!("metrics").map(|| warp::reply::html("m 1").into_response()))
        .unify();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve(warp::service(routes), listener, security, async {
        let _ = rx.await;
    }));
    (addr, Shutdown(Some(tx)), task)
}

use warp::Reply as _;

fn options(ca: Option<&Certs>, token: Option<&str>) -> ClientOptions {
    ClientOptions {
        ca_cert: ca.map(|c| c.cert.clone()),
        token: token.map(|t| Token::new(t).unwrap()),
    }
}

#[tokio::test]
async fn plain_http_without_tokens_still_works() {
    let (addr, stop, task) = start(ServerSecurity::plain()).await;
    let client = HttpClient::new(&format!("http://{addr}"), &ClientOptions::default()).unwrap();
    for _ in 0..3 {
        let r = client.get("/v1/status", T, LIMIT).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &br#"{"ok":true}"#[..]));
    }
    drop(stop);
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_and_tokens() {
    let certs = self_signed();
    let env = |v: &str| (v == "TOKENS").then(|| "new-token,old-token".to_owned());
    let security = ServerSecurity::from_config(
        "http",
        Some(&TlsConfig {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        }),
        Some(&AuthConfig {
            tokens_env: Some("TOKENS".into()),
            tokens_file: None,
            open_metrics: false,
        }),
        &ConnectionLimits::default(),
        &env,
    )
    .unwrap();
    assert!(security.is_tls() && security.requires_token());
    assert!(!format!("{security:?}").contains("token,"));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = refused.clone();
    let security = security.on_refused(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let (addr, stop, task) = start(security).await;
    let url = format!("https://127.0.0.1:{}", addr.port());

    // Both tokens of a rotation are accepted, over one kept-alive TLS connection each.
    for token in ["new-token", "old-token"] {
        let client = HttpClient::new(&url, &options(Some(&certs), Some(token))).unwrap();
        for _ in 0..2 {
            let r = client.get("/v1/status", T, LIMIT).await.unwrap();
            assert_eq!(r.status, 200, "{token}");
        }
        let r = client.get("/metrics", T, LIMIT).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // The host name works as well as the address.
    let by_name = format!("https://localhost:{}", addr.port());
    let client = HttpClient::new(&by_name, &options(Some(&certs), Some("new-token"))).unwrap();
    assert_eq!(
        client.get("/v1/status", T, LIMIT).await.unwrap().status,
        200
    );

    // Missing and wrong tokens: 401 with a Bearer challenge and a JSON error; /health stays open.
    for (token, challenge) in [
        (None, "Bearer realm=\"databus\""),
        (
            Some("wrong-token"),
            "Bearer realm=\"databus\", error=\"invalid_token\"",
        ),
    ] {
        let client = HttpClient::new(&url, &options(Some(&certs), token)).unwrap();
        for path in ["/v1/status", "/metrics", "/nope"] {
            let r = client.get(path, T, LIMIT).await.unwrap();
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(r.header("www-authenticate"), Some(challenge));
            assert_eq!(r.header("x-databus-error"), Some("unauthorized"));
            assert_eq!(r.error_code().as_deref(), Some("unauthorized"));
            let message = r.error_message();
            assert!(message.contains("bearer token"), "{message}");
            assert!(!message.contains("new-token") && !message.contains("wrong-token"));
        }
        let r = client.get("/health", T, LIMIT).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // Every 401 was counted (for the server's error metric), nothing else.
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 6);

    // A client that does not trust the certificate: a definite error naming the fix.
    let untrusting = HttpClient::new(&url, &options(None, Some("new-token"))).unwrap();
    let err = untrusting.get("/v1/status", T, LIMIT).await.unwrap_err();
    assert!(matches!(err, HttpError::Certificate { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("--ca-cert"), "{err}");
    // Plain HTTP against the TLS port gets no HTTP answer.
    let plain = HttpClient::new(&format!("http://{addr}"), &options(None, None)).unwrap();
    assert!(plain.get("/health", T, LIMIT).await.is_err());

    drop(stop);
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn open_metrics_and_config_errors() {
    let security = ServerSecurity::plain().with_tokens(vec![Token::new("t0k3n").unwrap()], true);
    let (addr, _stop, _task) = start(security).await;
    let client = HttpClient::new(&format!("http://{addr}"), &ClientOptions::default()).unwrap();
    assert_eq!(client.get("/metrics", T, LIMIT).await.unwrap().status, 200);
    assert_eq!(
        client.get("/v1/status", T, LIMIT).await.unwrap().status,
        401
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = ServerSecurity::from_config(
        "http",
        Some(&TlsConfig {
            cert: missing.clone(),
            key: missing.clone(),
        }),
        None,
        &ConnectionLimits::default(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("http.tls.cert: cannot read"), "{err}");
    let err = ServerSecurity::from_config(
        "http",
        None,
        Some(&AuthConfig::default()),
        &ConnectionLimits::default(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no tokens_env or tokens_file"), "{err}");
    let err = HttpClient::new(
        "https://127.0.0.1:1",
        &ClientOptions {
            ca_cert: Some(missing),
            token: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ca_cert: cannot read"), "{err}");
    // A key that does not belong to the certificate.
    let (a, b) = (self_signed(), self_signed());
    let err = ServerSecurity::plain()
        .with_tls_files(&a.cert, &b.key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
}
