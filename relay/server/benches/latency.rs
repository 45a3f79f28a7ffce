//! End-to-end latency from a MariaDB commit to an HTTP client's receipt, at a paced transaction rate.
//! Prints percentiles; no assertions. Run with
//! `cargo bench -p databus-relay --bench latency` (optional arguments: transactions/s, seconds; default
//! 2500 and 10).
//!
//! Writers issue single-row autocommit INSERTs from 4 connections, paced to the target rate; each row's
//! latency is from just before its INSERT is sent (so it includes the commit) to the moment the client
//! has parsed the response holding it. MariaDB (databus-testkit), the relay and the client share the
//! machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use databus_core::{Checkpoint, EventView, KeyRef, Scn};
use databus_relay::RelayConfig;
use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WRITERS: u64 = 4;

async fn fetch(addr: SocketAddr, path: &str, buf: &mut Vec<u8>) -> (Checkpoint, usize) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    buf.clear();
    stream.read_to_end(buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&buf[..split]).unwrap();
    let cp = head
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-databus-checkpoint")
                .then(|| Checkpoint::from_json(v.trim()).unwrap())
        })
        .unwrap();
    (cp, split + 4)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let rate = args.next().unwrap_or(2500);
    let seconds = args.next().unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(rate, seconds));
}

async fn bench(rate: u64, seconds: u64) {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, qty INT, note VARCHAR(64))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let text = format!(
        r#"
state_dir = {state:?}
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "mysql://relay@127.0.0.1:{port}/?max_allowed_packet=1073741824&prefer_socket=false", password_file = {pw:?}, server_id = 4243 }}
buffer_size = "256MiB"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
"#,
        state = dir.path().join("state").display().to_string(),
        port = db.port(),
        pw = dir.path().join("pw").display().to_string(),
    );
    let config = RelayConfig::from_toml(&text).unwrap().validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(databus_relay::run_with(
        config,
        listener,
        None,
        shutdown.clone(),
    ));
    // Wait for ingest to stream, then start after the current position.
    let mut buf = Vec::new();
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        buf.clear();
        s.read_to_end(&mut buf).await.unwrap();
        if String::from_utf8_lossy(&buf).contains("\"streaming\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gtid = db.gtid_binlog_pos().await.unwrap();
    let start_scn: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();

    let total = rate * seconds;
    let received: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let client = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut cp = Checkpoint::after(Scn::new(start_scn));
            let mut buf = Vec::new();
            let mut count = 0u64;
            while count < total {
                let path = format!(
                    "/v1/stream?wait_ms=1000&max_bytes=1048576&checkpoint={}",
                    form_urlencoded::byte_serialize(cp.to_json().as_bytes()).collect::<String>()
                );
                let (next, body_at) = fetch(addr, &path, &mut buf).await;
                let now = Instant::now();
                let mut map = received.lock().unwrap();
                for view in EventView::parse_all(&buf[body_at..]).unwrap() {
                    if let KeyRef::Int(id) = view.key() {
                        map.insert(id, now);
                        count += 1;
                    }
                }
                cp = next;
            }
        })
    };

    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut conn = db.root_conn().await.unwrap();
        let sent = sent.clone();
        let per_writer = total / WRITERS;
        let period = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            for i in 0..per_writer {
                tick.tick().await;
                let id = (i * WRITERS + w) as i64;
                let at = Instant::now();
                sent.lock().unwrap().insert(id, at);
                conn.query_drop(format!(
                    "INSERT INTO shop.orders VALUES ({id}, 3, 'a note of some thirty chars..')"
                ))
                .await
                .unwrap();
            }
            conn.disconnect().await.unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let write_secs = started.elapsed().as_secs_f64();
    let expected = (total / WRITERS) * WRITERS;
    tokio::time::timeout(Duration::from_secs(60), async {
        while (received.lock().unwrap().len() as u64) < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every row reached the client");
    client.abort();

    let mut latencies: Vec<Duration> = {
        let sent = sent.lock().unwrap();
        let received = received.lock().unwrap();
        sent.iter()
            .map(|(id, at)| received[id].saturating_duration_since(*at))
            .collect()
    };
    latencies.sort();
    println!(
        "{} transactions from {WRITERS} connections in {:.2} s ({:.0} tx/s achieved, target {rate})",
        latencies.len(),
        write_secs,
        latencies.len() as f64 / write_secs
    );
    println!(
        "commit -> client latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), relay).await;
}
