//! 1,000 partitioned long-polling clients against the real relay binary (issue 19, memory): the relay
//! runs under `ulimit -n 4096` with a 64 MiB buffer that the source fills and wraps; then 1,000
//! clients, each with `partition=mod:1000:<i>` and `empty_windows=coalesce`, long-poll from the newest
//! window while more rows are written. Every client parses every frame (checksums
//! verified) and the clients together get every row written after the origin exactly once. The
//! relay's `VmRSS` (sampled) and `VmHWM` are printed against the documented bound (buffer size + 10% +
//! 64 MiB, docs/operations.md) and recorded in docs/BENCHMARKS.md; the test asserts that bound.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use databus_core::{Checkpoint, EventView, KeyRef, Scn};
use databus_integration::faults::{DatabusProcess, databus_bin, http_raw};
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CLIENTS: u64 = 1000;
const BUFFER_MIB: u64 = 64;
const ROW_BYTES: usize = 1500;

fn b<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `text` with every byte but ASCII letters and digits as `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// One client: a keep-alive connection following its partition; records the keys it got.
async fn follow(
    addr: SocketAddr,
    instance: u64,
    origin: Scn,
    stop: Arc<AtomicBool>,
    keys: Arc<Mutex<Vec<i64>>>,
) -> Checkpoint {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut stream = BufReader::new(stream);
    let mut cp = Checkpoint::after(origin);
    let mut head = Vec::new();
    let mut body = Vec::new();
    let mut mine = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let path = format!(
            "/v1/stream?wait_ms=1000&empty_windows=coalesce&partition=mod:{CLIENTS}:{instance}&checkpoint={}",
            percent_encoded(&cp.to_json())
        );
        let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
        stream.get_mut().write_all(req.as_bytes()).await.unwrap();
        head.clear();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let text = std::str::from_utf8(&head).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "client {instance}: {text}"
        );
        let header = |name: &str| {
            text.split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap()
        };
        body.resize(header("content-length").parse().unwrap(), 0);
        stream.read_exact(&mut body).await.unwrap();
        for view in EventView::parse_all(&body).expect("valid frames, checksums verified") {
            if let KeyRef::Int(k) = view.key() {
                mine.push(k);
            }
        }
        cp = Checkpoint::from_json(&header("x-databus-checkpoint")).unwrap();
    }
    keys.lock().unwrap().extend(mine);
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_partitioned_long_polls_keep_the_relay_within_its_memory_bound() {
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
max_concurrent_streams = 2048
[http.connections]
max_connections = 2048
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "{bare}", password_env = "PW", server_id = 1001 }}
buffer_size = "{BUFFER_MIB}MiB"
tables = [ {{ id = 1, name = "t", table = "shop.t" }} ]
"#,
            state = dir.path().join("state").display().to_string(),
            bare = url.replace(":pw@", "@"),
        ),
    )
    .unwrap();
    // Two descriptors per client at most (the connection, and one being accepted), plus slack.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 4096 && exec \"$0\" relay --config \"$1\"")
        .arg(databus_bin())
        .arg(&config)
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
        http_raw(
            addr,
            &b"GET /v1/status HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"[..],
        )
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
    let rss_idle = status_kib(pid, "VmRSS:");
    // Fill and wrap the buffer: 1.5 times its size of rows, 100 rows per statement.
    let mut conn = db.root_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    let body = "x".repeat(ROW_BYTES);
    let insert = |first: i64, n: i64| {
        let values: Vec<String> = (first..first + n)
            .map(|id| format!("({id}, '{body}')"))
            .collect();
        format!("INSERT INTO shop.t VALUES {}", values.join(","))
    };
    let fill_rows = (BUFFER_MIB << 20) as i64 * 3 / 2 / ROW_BYTES as i64;
    let mut next_id = 0i64;
    while next_id < fill_rows {
        conn.query_drop(insert(next_id, 100)).await.unwrap();
        next_id += 100;
    }
    let fill_end = next_id;
    // Wait until the relay has ingested every row (its newest window stays put), then start the
    // clients from there: connected long-pollers at the source's pace, the buffer full and wrapped.
    let settled = async |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (0, Instant::now());
        loop {
            let s = b(status).unwrap();
            let max = s["buffers"][0]["max_scn"].as_u64().unwrap_or(0);
            if max != last.0 {
                last = (max, Instant::now());
            } else if max > 0 && last.1.elapsed() > Duration::from_secs(1) {
                return (max, s["buffers"][0]["prev_scn"].as_u64().unwrap_or(0));
            }
            assert!(Instant::now() < deadline, "{what}:\n{}", relay.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (newest, evicted) = settled("the relay never ingested the first rows").await;
    assert!(evicted > 0, "the buffer wrapped");
    let origin = Scn::new(newest);
    let rss_filled = status_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(follow(addr, i, origin, stop.clone(), keys.clone())))
        .collect();
    let mut peak = 0;
    // Rows written while the clients are connected: a quarter of the buffer, in 100-row statements,
    // with the RSS sampled between them.
    let live_rows = (BUFFER_MIB << 20) as i64 / 4 / ROW_BYTES as i64;
    let end_id = next_id + live_rows;
    while next_id < end_id {
        conn.query_drop(insert(next_id, 100)).await.unwrap();
        next_id += 100;
        peak = peak.max(status_kib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (last_scn, _) = settled("the relay never ingested the live rows").await;
    peak = peak.max(status_kib(pid, "VmRSS:"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    tokio::time::sleep(Duration::from_secs(3)).await;
    peak = peak.max(status_kib(pid, "VmRSS:"));
    stop.store(true, Ordering::Relaxed);
    // A last row wakes every long poll so that each client sees `stop`.
    conn.query_drop(insert(next_id, 1)).await.unwrap();
    let mut behind = 0;
    for c in clients {
        let cp = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("client ends")
            .unwrap();
        if cp.window_scn.get() < last_scn {
            behind += 1;
        }
    }
    let hwm = status_kib(pid, "VmHWM:");
    let rss_end = status_kib(pid, "VmRSS:");
    let bound_kib = (BUFFER_MIB << 10) * 11 / 10 + (64 << 10);
    let keys = keys.lock().unwrap();
    let distinct: BTreeSet<i64> = keys.iter().copied().collect();
    println!(
        "relay (debug binary) with a {BUFFER_MIB} MiB buffer, {CLIENTS} partitioned long-poll clients over {:.1} s: \
         RSS idle {} MiB, buffer filled {} MiB, peak sampled {} MiB, VmHWM {} MiB, at the end {} MiB; \
         bound (buffer + 10% + 64 MiB) {} MiB; {fds} descriptors; rows {} (from id {}), delivered {} ({} distinct); \
         clients behind the last window at stop: {behind}",
        started.elapsed().as_secs_f64(),
        rss_idle >> 10,
        rss_filled >> 10,
        peak >> 10,
        hwm >> 10,
        rss_end >> 10,
        bound_kib >> 10,
        next_id + 1,
        distinct.first().copied().unwrap_or(-1),
        keys.len(),
        distinct.len(),
    );
    // Every row written while the clients were connected, once (the wake-up row may or may not be in).
    assert_eq!(keys.len(), distinct.len(), "no row delivered twice");
    let want: BTreeSet<i64> = (fill_end..end_id).collect();
    let got: BTreeSet<i64> = distinct.range(..end_id).copied().collect();
    assert_eq!(got, want, "the rows written while connected");
    assert!(
        hwm <= bound_kib,
        "VmHWM {hwm} KiB exceeds the bound of {bound_kib} KiB"
    );
    let _ = relay.stop(Duration::from_secs(10));
}
