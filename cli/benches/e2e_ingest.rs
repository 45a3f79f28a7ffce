//! End to end (issue 19): the real release `databus relay` catching up on a binlog of single-row
//! statements, and `databus tail` draining its buffer, against mysql_async's own `BinlogRow` decode of
//! the same binlog in the same run.
//!
//! Workload: `CHANGES` row changes (default 1,000,000; first argument or `E2E_CHANGES`), all of them
//! single-row statements, 10 a transaction: 6 single-row INSERTs, 3 single-row UPDATEs (by id), one
//! single-row DELETE (60/30/10), ~200-byte rows (the table of `connectors/benches/ingest_events.rs`),
//! written by 4 connections (50 transactions per round trip) before any reader starts.
//!
//! Then, in this order:
//! 1. **baseline**: a raw mysql_async binlog stream from the first binlog file that decodes every rows
//!    event into `BinlogRow`s and touches every value (as `ingest_events.rs` does);
//! 2. **connector only**: `MySqlConnector` from `After(Scn::ZERO)` in this process, typed `RowChange`s
//!    and nothing else (the relay's first stage, for reading the next figure);
//! 3. **relay catch-up**: `databus relay` (the binary of this package, `buffer_size = "2GiB"`) starts
//!    with a state file saying SCN 0, so it reads the binlog from its oldest file; timed from the spawn
//!    until `/v1/status` shows `max_scn` at the last transaction's GTID sequence number: binlog ->
//!    Avro events in the buffer;
//! 4. **tail drain**: `databus tail --relay <url> --from-scn 0 --max-events CHANGES` with stdout on
//!    `/dev/null`, twice;
//! 5. **client library drain**: a `DatabusClient` in this process (binary frames, CRCs checked,
//!    windows assembled, one worker) consumes from the oldest event, decoding every payload into an
//!    Avro record, twice;
//! 6. the baseline again (the best of its two rounds is the reference).
//!
//! It lives beside the binary it measures (cargo builds `databus` in release for the bench and gives
//! its path in `CARGO_BIN_EXE_databus`); in `integration/` a release bench would also build that
//! crate's heavy dev-dependencies (tantivy, redis).
//!
//! ```sh
//! cargo bench -p databus-cli --bench e2e_ingest              # 1M row changes
//! cargo bench -p databus-cli --bench e2e_ingest -- 200000    # quick
//! cargo bench -p databus-cli --bench e2e_ingest -- multi     # multi-row statements (or E2E_SHAPE=multi)
//! E2E_RELAY_PERF=/tmp/relay.perf cargo bench -p databus-cli --bench e2e_ingest   # profile the relay
//! E2E_HUGE_PAGES=1 cargo bench -p databus-cli --bench e2e_ingest   # the buffer on huge pages
//! ```
//!
//! Beside each figure: the load average, the relay's CPU per thread (`ring-prefault` is the buffer's
//! page faulting; the source reader has a `tokio-rt-worker` thread of its own) and MariaDB's CPU
//! while the relay catches up (all on the same 2 cores).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use databus_client::{
    ClientConfig, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    MemoryCheckpointStore, WindowInfo,
};
use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
use databus_connectors::{ConnectorEvent, SourceConnector, StartPosition};
use databus_core::{Checkpoint, Scn};
use databus_testkit::{MariaDb, MariaDbOptions};
use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Value as MyValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PER_TXN: usize = 10;
const TXN_PER_QUERY: usize = 50;
const WRITERS: usize = 4;
/// Ids of writer `w` start at `w * ID_SPACE` so the writers never touch each other's rows.
const ID_SPACE: u64 = 1_000_000_000;

fn pad(id: u64) -> String {
    // ~150 bytes of text: with the other columns a row image is ~200 bytes.
    format!(
        "row {id:012} {}",
        "abcdefghijklmnopqrstuvwxyz0123456789".repeat(4)
    )
}

fn row_sql(id: u64) -> String {
    format!(
        "({id}, {}, {}, '{}', '2024-01-02 03:04:05.{:06}', {}.25, {}.5)",
        id % 100_000,
        id * 7,
        pad(id),
        id % 1_000_000,
        id % 10_000_000,
        id
    )
}

/// The statements of a transaction: one row each (most OLTP applications, sysbench) or as few as
/// possible (3 rows events per 10 changes, the shape of "Ingest to encoded events").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    SingleRow,
    MultiRow,
}

/// Transaction `t` of one writer (ids relative to `base`), ten row changes: insert rows `6t..6t+6`,
/// update rows `t+1`, `t+2`, `t+3` (inserted by earlier or this transaction, not yet deleted), delete
/// row `t`; as ten single-row statements, or as one statement of each kind.
fn txn_sql(shape: Shape, base: u64, t: u64) -> String {
    if shape == Shape::MultiRow {
        let rows: Vec<String> = (0..6).map(|i| row_sql(base + 6 * t + i)).collect();
        return format!(
            "BEGIN;INSERT INTO b.t VALUES {};UPDATE b.t SET a = a + 1, c = CONCAT('u', SUBSTRING(c, 2)), \
             f = f + 0.5 WHERE id IN ({}, {}, {});DELETE FROM b.t WHERE id = {}; COMMIT;",
            rows.join(","),
            base + t + 1,
            base + t + 2,
            base + t + 3,
            base + t
        );
    }
    let mut sql = String::from("BEGIN;");
    for i in 0..6 {
        sql.push_str(&format!(
            "INSERT INTO b.t VALUES {};",
            row_sql(base + 6 * t + i)
        ));
    }
    for i in 1..=3 {
        sql.push_str(&format!(
            "UPDATE b.t SET a = a + 1, c = CONCAT('u', SUBSTRING(c, 2)), f = f + 0.5 WHERE id = {};",
            base + t + i
        ));
    }
    sql.push_str(&format!("DELETE FROM b.t WHERE id = {}; COMMIT;", base + t));
    sql
}

async fn write_workload(db: &MariaDb, shape: Shape, changes: usize) -> f64 {
    let txns = changes / PER_TXN;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut conn = db.root_conn().await.expect("conn");
        let mine: Vec<u64> = (0..txns as u64)
            .filter(|t| *t as usize % WRITERS == w)
            .map(|t| t / WRITERS as u64)
            .collect();
        tasks.push(tokio::spawn(async move {
            for chunk in mine.chunks(TXN_PER_QUERY) {
                let sql: String = chunk
                    .iter()
                    .map(|t| txn_sql(shape, w as u64 * ID_SPACE, *t))
                    .collect();
                conn.query_drop(sql).await.expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    start.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) of process `pid` (`self` for this one) from Linux's `/proc/<pid>/stat`
/// (0 elsewhere).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// CPU seconds of each thread of process `pid` that used any, busiest first, e.g.
/// `tokio-rt-worker 0.85 s, tokio-rt-worker 0.25 s, ring-prefault 0.10 s` (one entry per thread: how
/// the work spread over the cores).
fn thread_cpu(pid: &str) -> String {
    let mut threads: Vec<(String, f64)> = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let secs = cpu_secs(&format!("{pid}/task/{tid}"));
        if secs > 0.0 {
            threads.push((name, secs));
        }
    }
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds the hypervisor gave to others while this machine wanted to run (the `steal` column of
/// `/proc/stat`, all CPUs).
fn steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let steal: u64 = cpu
        .split_whitespace()
        .nth(8)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    steal as f64 / 100.0
}

/// The 1-minute load average (what else the machine was doing).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A value's bytes, read so the compiler cannot skip the decode.
fn touch(v: &MyValue) -> u64 {
    match v {
        MyValue::NULL => 1,
        MyValue::Bytes(b) => b.len() as u64 + u64::from(b.first().copied().unwrap_or(0)),
        MyValue::Int(i) => *i as u64,
        MyValue::UInt(u) => *u,
        MyValue::Float(f) => f.to_bits() as u64,
        MyValue::Double(d) => d.to_bits(),
        MyValue::Date(y, m, d, h, i, s, us) => {
            u64::from(*y) + u64::from(*m + *d + *h + *i + *s) + u64::from(*us)
        }
        MyValue::Time(neg, d, h, m, s, us) => {
            u64::from(*neg) + u64::from(*d) + u64::from(*h + *m + *s) + u64::from(*us)
        }
    }
}

/// Baseline: mysql_async decodes every rows event into `BinlogRow`s; every value is touched.
/// Returns (wall seconds, CPU seconds of this process).
async fn baseline(url: &str, first_file: &str, changes: usize) -> (f64, f64) {
    let mut conn = mysql_async::Conn::from_url(url).await.expect("conn");
    conn.query_drop("SET @mariadb_slave_capability=4")
        .await
        .expect("capability");
    let request = BinlogStreamRequest::new(4242)
        .with_filename(first_file.as_bytes())
        .with_pos(4u64);
    let cpu = cpu_secs("self");
    let start = Instant::now();
    let mut stream = conn.get_binlog_stream(request).await.expect("stream");
    let (mut rows, mut sum) = (0usize, 0u64);
    while rows < changes {
        let event = stream.next().await.expect("end of stream").expect("event");
        if let Ok(Some(EventData::RowsEvent(r))) = event.read_data() {
            let Some(tme) = stream.get_tme(r.table_id()) else {
                continue;
            };
            for row in r.rows(tme) {
                let (before, after) = row.expect("row");
                for image in [before, after].into_iter().flatten() {
                    for i in 0..image.len() {
                        if let Some(mysql_async::binlog::value::BinlogValue::Value(v)) =
                            image.as_ref(i)
                        {
                            sum = sum.wrapping_add(touch(v));
                        }
                    }
                }
                rows += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu;
    std::hint::black_box(sum);
    drop(stream);
    (secs, cpu)
}

/// The MariaDB connector alone (what the relay runs before encoding): typed `RowChange`s of whole
/// transactions from `After(Scn::ZERO)`. Returns (wall seconds, CPU seconds of this process).
async fn connector_only(url: &str, changes: usize) -> (f64, f64) {
    let mut config = MySqlConfig::new(url.to_owned(), 4243);
    config.databases = vec!["b".into()];
    let mut c = MySqlConnector::new(config).expect("config");
    let cpu = cpu_secs("self");
    let start = Instant::now();
    c.start(StartPosition::After(Scn::ZERO))
        .await
        .expect("start");
    let mut rows = 0usize;
    while rows < changes {
        if let Some(ConnectorEvent::Transaction(t)) = c.next_event().await.expect("event") {
            rows += t.changes.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu;
    c.shutdown().await.expect("shutdown");
    (secs, cpu)
}

/// `GET base + path` over HTTP/1.0; the body as JSON (`Null` when it is not JSON).
async fn get_json(authority: &str, path: &str) -> std::io::Result<serde_json::Value> {
    let mut conn = tokio::net::TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&raw[..0], |p| &raw[p + 4..]);
    Ok(serde_json::from_slice(body).unwrap_or(serde_json::Value::Null))
}

/// The relay process, killed by pid when dropped.
struct RelayProc(std::process::Child);

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `databus relay` on `port` with a state file at SCN 0 (so it reads from the oldest binlog).
fn start_relay(bin: &str, dir: &Path, port: u16, url: &str) -> RelayProc {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(
        state.join("shop.state.json"),
        r#"{"version":1,"source":"shop","last_scn":0}"#,
    )
    .expect("state file");
    // E2E_HUGE_PAGES=1: the buffer on transparent huge pages (`buffer_huge_pages`), to compare.
    let huge = std::env::var("E2E_HUGE_PAGES").is_ok_and(|v| v == "1");
    let config = format!(
        "state_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[sources]]\nname = \"shop\"\n\
         buffer_size = \"2GiB\"\nbuffer_huge_pages = {huge}\nconnector = {{ kind = \"mariadb\", url = {url:?}, server_id = 1001 }}\n\
         tables = [ {{ id = 1, name = \"t\", table = \"b.t\" }} ]\n",
        state.display().to_string()
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, config).expect("config");
    let log = std::fs::File::create(dir.join("relay.log")).expect("log");
    let child = Command::new(bin)
        .arg("relay")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn databus relay");
    RelayProc(child)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("E2E_CHANGES").ok())
        .map(|a| a.parse().expect("CHANGES must be a number"))
        .unwrap_or(1_000_000);
    let changes = changes / PER_TXN * PER_TXN;
    let shape = if std::env::args().skip(1).any(|a| a == "multi")
        || std::env::var("E2E_SHAPE").is_ok_and(|s| s == "multi")
    {
        Shape::MultiRow
    } else {
        Shape::SingleRow
    };
    let bin = env!("CARGO_BIN_EXE_databus");
    let opts = MariaDbOptions::default()
        .arg("--innodb-log-file-size=512M")
        .arg("--innodb-buffer-pool-size=512M")
        .arg("--innodb-flush-log-at-trx-commit=0")
        .arg("--sync-binlog=0")
        .arg("--max-binlog-size=1G");
    let db = MariaDb::start(opts).await.expect("mariadb");
    db.exec(&[
        "CREATE DATABASE b",
        "CREATE TABLE b.t (id BIGINT PRIMARY KEY, a INT, b BIGINT UNSIGNED, c VARCHAR(200), \
         d DATETIME(6), e DECIMAL(12,2), f DOUBLE)",
    ])
    .await
    .expect("schema");
    let url = db
        .create_user_with_grants("relay", "pw")
        .await
        .expect("user");
    let write_secs = write_workload(&db, shape, changes).await;
    let gtid = db.gtid_binlog_pos().await.expect("gtid_binlog_pos");
    let last_scn: u64 = gtid
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected gtid_binlog_pos {gtid:?}"));
    println!(
        "wrote {changes} row changes as {} ({} transactions of 10, 60/30/10 insert/update/delete) in \
         {write_secs:.1} s ({:.0} row changes/s); last GTID {gtid}; load {}",
        match shape {
            Shape::SingleRow => "single-row statements",
            Shape::MultiRow => "multi-row statements (3 a transaction)",
        },
        changes / PER_TXN,
        changes as f64 / write_secs,
        load_average()
    );
    let first_file = db
        .query_string("SELECT SUBSTRING_INDEX(@@log_bin_basename, '/', -1)")
        .await
        .expect("basename")
        .expect("log_bin_basename");
    let first_file = format!("{first_file}.000001");
    let n = changes as f64;

    let (b1, b1_cpu) = baseline(&url, &first_file, changes).await;
    println!(
        "baseline round 1, mysql_async BinlogRow decode: {b1:.2} s = {:.0} row changes/s; \
         {b1_cpu:.2} CPU s = {:.0} per CPU s; load {}",
        n / b1,
        n / b1_cpu,
        load_average()
    );

    let (c1, c1_cpu) = connector_only(&url, changes).await;
    println!(
        "connector only (MySqlConnector -> typed RowChanges, no encoding, in this process): {c1:.2} s = \
         {:.0} row changes/s ({:.2}x baseline round 1); {c1_cpu:.2} CPU s = {:.0} per CPU s; load {}",
        n / c1,
        b1 / c1,
        n / c1_cpu,
        load_average()
    );

    let dir = tempfile::Builder::new()
        .prefix("databus-e2e-bench-")
        .tempdir()
        .expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let authority = format!("127.0.0.1:{port}");
    // The source shares the 2 cores: its CPU while it streams the binlog to the relay says how much of
    // the machine the relay had.
    let mysqld_pid = db.pid().map(|p| p.to_string()).unwrap_or_default();
    let mysqld_before = cpu_secs(&mysqld_pid);
    let steal_before = steal_secs();
    let start = Instant::now();
    let mut relay = start_relay(bin, dir.path(), port, &url);
    let pid = relay.0.id().to_string();
    // E2E_RELAY_PERF=<file>: a `perf record -g` of the relay during its catch-up, for profiling.
    let perf = std::env::var("E2E_RELAY_PERF").ok().map(|out| {
        Command::new("perf")
            .args(["record", "-F", "999", "-g", "-o", &out, "-p", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run perf record (E2E_RELAY_PERF)")
    });
    let deadline = start + Duration::from_secs(600);
    let mut status = serde_json::Value::Null;
    // When the status first showed an event in the buffer: what came before is the relay's start-up
    // (process, buffer, connecting, the source's schemas), not its ingest rate.
    let mut first_event = None;
    loop {
        if let Ok(body) = get_json(&authority, "/v1/status").await {
            let max = body["buffers"][0]["max_scn"].as_u64().unwrap_or(0);
            if first_event.is_none() && max > 0 {
                first_event = Some(start.elapsed().as_secs_f64());
            }
            status = body;
            if max >= last_scn {
                break;
            }
        }
        if let Ok(Some(exit)) = relay.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default();
            panic!("the relay exited ({exit}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not reach SCN {last_scn} in 600 s; last status {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let catchup = start.elapsed().as_secs_f64();
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let relay_cpu = cpu_secs(&pid);
    let threads = thread_cpu(&pid);
    let mysqld_cpu = cpu_secs(&mysqld_pid) - mysqld_before;
    let steal = steal_secs() - steal_before;
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_default();
    println!(
        "relay catch-up from SCN 0 (spawn to max_scn {last_scn}): {catchup:.2} s = {:.0} row changes/s \
         ({:.2}x baseline round 1); relay CPU {relay_cpu:.2} s = {:.0} row changes per CPU s; \
         RSS {rss_kb} kB; load {}",
        n / catchup,
        b1 / catchup,
        n / relay_cpu,
        load_average()
    );
    let startup = first_event.unwrap_or(0.0);
    println!(
        "  of which start-up (spawn to the first event in the buffer) {startup:.2} s; after it \
         {:.0} row changes/s ({:.2}x baseline round 1); mariadbd CPU meanwhile {mysqld_cpu:.2} s \
         (relay + mariadbd = {:.0}% of the 2 cores)",
        n / (catchup - startup),
        b1 / (catchup - startup),
        (relay_cpu + mysqld_cpu) / (2.0 * catchup) * 100.0
    );
    println!(
        "  relay CPU by thread: {threads}; the hypervisor took {steal:.2} CPU s from this machine \
         meanwhile (steal)"
    );
    println!("relay buffer status: {}", status["buffers"][0]);

    let mut tails = Vec::new();
    for round in 1..=2 {
        let relay_cpu0 = cpu_secs(&pid);
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(["tail", "--relay", &format!("http://{authority}")])
            .args(["--from-scn", "0", "--max-events", &changes.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run databus tail");
        // The tail's CPU time: its last sample before it exits (sampled every 10 ms).
        let tail_pid = child.id().to_string();
        let mut tail_cpu = 0.0f64;
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait for databus tail") {
                break exit;
            }
            tail_cpu = tail_cpu.max(cpu_secs(&tail_pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let secs = start.elapsed().as_secs_f64();
        assert!(exit.success(), "databus tail failed: {exit}");
        let served_cpu = cpu_secs(&pid) - relay_cpu0;
        println!(
            "tail drain round {round} (--from-scn 0 --max-events {changes} > /dev/null): {secs:.2} s = \
             {:.0} events/s; tail CPU >= {tail_cpu:.2} s, relay CPU while serving {served_cpu:.2} s; load {}",
            n / secs,
            load_average()
        );
        tails.push(secs);
    }

    let mut drains = Vec::new();
    for round in 1..=2 {
        let relay_cpu0 = cpu_secs(&pid);
        let (secs, events, decoded) = client_drain(&authority, Scn::new(last_scn)).await;
        let served_cpu = cpu_secs(&pid) - relay_cpu0;
        assert_eq!(
            events, changes as u64,
            "the client library delivered every change once"
        );
        println!(
            "client library drain round {round} (DatabusClient, binary, 1 worker, every payload decoded to \
             an Avro record): {secs:.2} s = {:.0} events/s ({decoded} records decoded); relay CPU while \
             serving {served_cpu:.2} s; load {}",
            n / secs,
            load_average()
        );
        drains.push(secs);
    }

    let (b2, b2_cpu) = baseline(&url, &first_file, changes).await;
    println!(
        "baseline round 2, mysql_async BinlogRow decode: {b2:.2} s = {:.0} row changes/s; \
         {b2_cpu:.2} CPU s = {:.0} per CPU s; load {}",
        n / b2,
        n / b2_cpu,
        load_average()
    );
    drop(relay);

    let base = b1.min(b2);
    let base_cpu = b1_cpu.min(b2_cpu);
    let tail = tails.iter().copied().fold(f64::MAX, f64::min);
    let drain = drains.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "summary: baseline (best of 2) {:.0} row changes/s ({:.0} per CPU s); relay catch-up {:.0} row \
         changes/s = {:.2}x baseline wall ({:.0} per relay CPU s = {:.2}x baseline per CPU s); tail drain \
         (best of 2) {:.0} events/s = {:.2}x baseline; client library drain (best of 2) {:.0} events/s = \
         {:.2}x baseline",
        n / base,
        n / base_cpu,
        n / catchup,
        base / catchup,
        n / relay_cpu,
        base_cpu / relay_cpu,
        n / tail,
        base / tail,
        n / drain,
        base / drain
    );
}

/// Counts (and decodes) what the client library delivers until the window `last`.
struct Drain {
    last: Scn,
    events: AtomicU64,
    decoded: AtomicU64,
    done: tokio::sync::Notify,
}

impl DatabusConsumer for Drain {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        if event.scn() > self.last {
            return ConsumerOutcome::Success;
        }
        let record = event.record().expect("every payload decodes");
        std::hint::black_box(&record);
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, window: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        if window.scn >= self.last {
            self.done.notify_one();
        }
        ConsumerOutcome::Success
    }
}

/// One consumer draining the relay from its oldest event through the client library (binary frames,
/// CRCs checked, windows assembled, each payload decoded): (seconds, events, records decoded).
async fn client_drain(authority: &str, last: Scn) -> (f64, u64, u64) {
    let config = ClientConfig::with_relays([format!("http://{authority}")]);
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new()))
        .expect("client configuration");
    let consumer = Arc::new(Drain {
        last,
        events: AtomicU64::new(0),
        decoded: AtomicU64::new(0),
        done: tokio::sync::Notify::new(),
    });
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = {
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        tokio::spawn(async move { client.run(consumer, shutdown).await })
    };
    tokio::time::timeout(Duration::from_secs(600), consumer.done.notified())
        .await
        .expect("the client library drained the relay within 600 s");
    let secs = start.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await.expect("client task").expect("client run");
    (
        secs,
        consumer.events.load(Ordering::Relaxed),
        consumer.decoded.load(Ordering::Relaxed),
    )
}
