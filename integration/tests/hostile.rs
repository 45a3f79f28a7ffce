//! Hostile and broken clients against the real relay binary, with its open-file limit lowered to 256
//! and bearer tokens on: floods of idle connections, slowloris headers, clients that request the
//! largest JSON responses and never read them, malformed requests at the HTTP level. Meanwhile a
//! source writes and an authenticated `databus tail` follows. The non-reading clients alone are more
//! than the relay's connection cap. Capture never stops, the consumer gets
//! every row in order, and the relay's descriptors and memory stay bounded. The figures it prints
//! (descriptors held, RSS, the consumer's delay) are recorded in docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use databus_integration::faults::{DatabusProcess, databus_bin, http_raw};
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TOKEN: &str = "s3cret-consumer-token";
const ROWS: i64 = 300;

fn b<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Open descriptors of a process.
fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn authed(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Keeps `n` connections open that send nothing, reopening those the relay closes, until `stop`.
async fn idle_flood(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (stop, opened) = (stop.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut sock) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 512];
                // Wait until the relay closes it (or answers 503 over the cap), then reopen.
                let _ = tokio::time::timeout(Duration::from_secs(30), async {
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// `n` clients sending a request's headers one byte every 200 ms, reconnecting when cut, until `stop`.
async fn slowloris(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let request = format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
                "a".repeat(500)
            );
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut sock) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                for b in request.bytes() {
                    if stop.load(Ordering::Relaxed) || sock.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// `n` authenticated clients asking for the largest JSON response from the start of the buffer and
/// never reading it, reconnecting when the relay drops them, until `stop`.
async fn non_readers(addr: SocketAddr, n: usize, origin: u64, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let checkpoint = databus_core::Checkpoint::after(databus_core::Scn::new(origin));
            let path = format!(
                "/v1/stream?format=json&max_bytes=16777216&wait_ms=0&checkpoint={}",
                databus_integration::faults::enc(&checkpoint.to_json())
            );
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut sock) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if sock.write_all(&authed(&path)).await.is_err() {
                    continue;
                }
                // Never read: hold it a while (the relay drops it once its writes stall for its idle
                // timeout), then start over.
                for _ in 0..25 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // Drop it unread.
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_neither_stop_capture_nor_starve_a_consumer() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.t (id BIGINT PRIMARY KEY, body VARCHAR(2000) NOT NULL)",
    ])
    .await
    .unwrap();
    let url = db.create_user_with_grants("repl", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = {state:?}
[http]
listen = "127.0.0.1:0"
[http.auth]
tokens_env = "RELAY_TOKENS"
[http.connections]
max_connections = 100
header_read_timeout = "1s"
idle_timeout = "2s"
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "{bare}", password_env = "PW", server_id = 1001 }}
buffer_size = "64MiB"
tables = [ {{ id = 1, name = "t", table = "shop.t" }} ]
"#,
            state = dir.path().join("state").display().to_string(),
            bare = url.replace(":pw@", "@"),
        ),
    )
    .unwrap();
    // The relay under a low open-file limit, as a busy host would give it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" relay --config \"$1\"")
        .arg(databus_bin())
        .arg(&config)
        .env("RELAY_TOKENS", TOKEN)
        .env("PW", "pw")
        .env_remove("RUST_LOG");
    let mut relay = DatabusProcess::spawn_command("relay", cmd).unwrap();
    let addr: SocketAddr =
        b(|| relay.wait_for_log("listening on http://", Duration::from_secs(60)))
            .unwrap()
            .parse()
            .unwrap();
    let pid = relay.pid().unwrap();
    let status = || {
        http_raw(addr, &authed("/v1/status"))
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| r.json().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while b(status).is_none_or(|s| s["buffers"][0]["ingest"]["state"] != "streaming") {
        assert!(
            Instant::now() < deadline,
            "the relay never streamed:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A first half of the rows, so that the non-readers have large responses to not read.
    let mut conn = db.root_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    for id in 0..ROWS / 2 {
        conn.exec_drop("INSERT INTO shop.t VALUES (?, ?)", (id, "x".repeat(1500)))
            .await
            .unwrap();
    }
    let rss_before = rss_kib(pid);
    // Where the relay's history starts (it started from the source's position then).
    let origin = b(status).unwrap()["buffers"][0]["prev_scn"]
        .as_u64()
        .unwrap_or(0);

    // The consumer: every row from the start, authenticated.
    let mut tail = tokio::process::Command::new(databus_bin())
        .args([
            "tail",
            "--relay",
            &format!("http://{addr}"),
            "--from-scn",
            &(origin + 1).to_string(),
        ])
        .args(["--max-events", &ROWS.to_string()])
        .env("DATABUS_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let attack = tokio::spawn({
        let (stop, opened) = (stop.clone(), opened.clone());
        async move {
            tokio::join!(
                idle_flood(addr, 300, stop.clone(), opened),
                slowloris(addr, 40, stop.clone()),
                non_readers(addr, 150, origin, stop.clone()),
            );
        }
    });
    // Malformed requests at the HTTP level get an HTTP answer, not a hang.
    for raw in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        format!(
            "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
            "h".repeat(200_000)
        )
        .as_bytes(),
    ] {
        let raw = raw.to_vec();
        let answer = b(|| http_raw(addr, &raw));
        if let Ok(r) = answer {
            assert!((400..600).contains(&r.status), "{}", r.status);
        }
    }

    // The rest of the rows, during the attack.
    let (mut peak_fds, mut peak_rss) = (0, 0);
    let started = Instant::now();
    for id in ROWS / 2..ROWS {
        conn.exec_drop("INSERT INTO shop.t VALUES (?, ?)", (id, "y".repeat(1500)))
            .await
            .unwrap();
        peak_fds = peak_fds.max(fds(pid));
        peak_rss = peak_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep attacking while the consumer finishes.
    let out = tokio::time::timeout(Duration::from_secs(120), async {
        let mut stdout = tail.stdout.take().unwrap();
        let mut text = String::new();
        loop {
            peak_fds = peak_fds.max(fds(pid));
            peak_rss = peak_rss.max(rss_kib(pid));
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout(Duration::from_millis(200), stdout.read(&mut chunk)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {}
            }
        }
        text
    })
    .await
    .expect("the consumer got every row during the attack");
    let consumer_done = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(40), attack).await;
    let tail_status = tail.wait().await.unwrap();
    let mut tail_err = String::new();
    let _ = tail
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut tail_err)
        .await;
    assert!(tail_status.success(), "{tail_err}");

    let ids: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..ROWS).collect::<Vec<_>>(), "every row, in order");
    // Capture never stopped and the relay is still there.
    assert!(relay.exited().is_none(), "{}", relay.log());
    let s = b(status).expect("status after the attack");
    assert_eq!(s["buffers"][0]["ingest"]["state"], "streaming", "{s}");
    assert!(!relay.log().contains("ingest stopped"), "{}", relay.log());
    // Descriptors stayed under the limit the relay was given; memory under its bound.
    assert!(peak_fds < 256, "{peak_fds} descriptors");
    assert!(peak_rss < 1 << 20, "peak RSS {peak_rss} KiB");
    eprintln!(
        "hostile: {} attacking connections opened; relay peak {peak_fds} descriptors (limit 256, cap 100), \
         RSS {rss_before} KiB before, peak {peak_rss} KiB; the consumer got {ROWS} rows, the last {} s after the attack began",
        opened.load(Ordering::Relaxed),
        consumer_done.as_secs_f64()
    );
}
