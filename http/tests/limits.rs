//! The server's connection limits over real loopback, against clients that misbehave: idle
//! connections, headers sent a byte at a time (slowloris), clients that never read their response,
//! more connections than allowed. Each test fails without the limit it checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use databus_http::server::{ConnectionLimits, ServerSecurity, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warp::Filter;

/// Routes: `/small`, `/big` (8 MiB), `/slow` (answers after 1.5 s, like a long poll).
async fn start(limits: ConnectionLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let routes = warp::path!("small")
        .map(|| "ok".to_owned())
        .or(warp::path!("big").map(|| "x".repeat(8 << 20)))
        .unify()
        .or(warp::path!("slow").then(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "late".to_owned()
        }))
        .unify();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(
        warp::service(routes),
        listener,
        ServerSecurity::plain().with_limits(limits),
        async {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

fn limits(max_connections: usize, header: u64, idle: u64) -> ConnectionLimits {
    ConnectionLimits {
        max_connections,
        header_read_timeout: Duration::from_millis(header),
        idle_timeout: Duration::from_millis(idle),
        ..ConnectionLimits::default()
    }
}

/// Reads until the server closes the connection; how long that took. Fails after `within`.
async fn closed_within(sock: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(within, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {within:?}"),
        }
    }
}

/// A whole `GET path` on a new connection: the response text.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut text))
        .await
        .expect("a response")
        .unwrap();
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn a_client_that_never_sends_its_headers_is_disconnected() {
    let (addr, _stop) = start(limits(64, 300, 60_000)).await;
    // Connected, silent.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(10)).await;
    // Slowloris: one byte of the request line every 100 ms, never the end of the headers.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for b in
            b"GET /small HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the trickling client was served for {:?}",
        started.elapsed()
    );
    // A well-behaved client is still served.
    assert!(get(addr, "/small").await.ends_with("ok"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_long_poll_is_not() {
    let (addr, _stop) = start(limits(64, 5_000, 400)).await;
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
    // Kept alive, then idle: closed after the idle timeout, long before the header timeout.
    let took = closed_within(&mut sock, Duration::from_secs(4)).await;
    assert!(took < Duration::from_secs(4), "{took:?}");
    // A request being handled for longer than the idle timeout is not cut.
    assert!(get(addr, "/slow").await.ends_with("late"));
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_disconnected_and_frees_its_slot() {
    let (addr, _stop) = start(limits(2, 5_000, 500)).await;
    // Two clients ask for 8 MiB each and never read: their connections are the server's whole quota.
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        stuck.push(sock);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new client is served at once: a stalled connection gives its place.
    assert!(get(addr, "/small").await.ends_with("ok"));
    // Both stalled connections are closed (displaced, or after the idle timeout), their bodies freed.
    for mut sock in stuck {
        closed_within(&mut sock, Duration::from_secs(10)).await;
    }
}

/// A kept-alive connection that has been served a request (a consumer's).
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
    sock
}

#[tokio::test]
async fn connections_over_the_cap_get_503_while_every_one_has_a_request_in_progress() {
    let (addr, _stop) = start(limits(3, 60_000, 60_000)).await;
    // Three long polls in progress: the whole cap, none of which may be cut.
    let polls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(addr, "/slow").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let answer = get(addr, "/small").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
    }
    for poll in polls {
        assert!(poll.await.unwrap().ends_with("late"), "a long poll was cut");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(addr, "/small").await.ends_with("ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "finished requests never freed their slots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn silent_connections_at_the_cap_give_their_place_to_a_client_that_asks() {
    let (addr, _stop) = start(limits(3, 60_000, 60_000)).await;
    let consumer = served_connection(addr).await;
    // Two silent connections fill the cap (and would hold it for the minute of their timeouts).
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two new consumers are served (and keep their connections), each displacing the oldest silent
    // connection, which is closed.
    let mut newcomers = Vec::new();
    for _ in 0..2 {
        newcomers.push(served_connection(addr).await);
    }
    for mut sock in silent {
        closed_within(&mut sock, Duration::from_secs(5)).await;
    }
    // The consumer's connection was never displaced: it is still served.
    let mut consumer = consumer;
    consumer
        .write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = consumer.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
}

#[test]
fn limits_are_validated_with_the_setting_named() {
    let bad = ConnectionLimits {
        max_connections: 0,
        ..ConnectionLimits::default()
    };
    let err = bad.validate("http.connections").unwrap_err();
    assert!(err.contains("http.connections.max_connections"), "{err}");
    let bad = ConnectionLimits {
        idle_timeout: Duration::from_millis(1),
        ..ConnectionLimits::default()
    };
    let err = bad.validate("http.connections").unwrap_err();
    assert!(err.contains("idle_timeout"), "{err}");
}
