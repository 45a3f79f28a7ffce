//! `databus replicate` (issue 18): the replica's apply rate beside the source's own write rate for
//! the same workload, measured in the same run. Target: apply ≥ 1x the source, so a replica never
//! falls behind steadily.
//!
//! Setup: two private MariaDB servers (testkit defaults: binlog on, `innodb_flush_log_at_trx_commit
//! = 1`; both with the same buffer pool and log size), `sysbench oltp_write_only prepare` of
//! `TABLES` tables of `TABLE_SIZE` rows on both (same `--rand-seed`: the same rows, checked by
//! `CHECKSUM TABLE`), and a release `databus relay` capturing the source's tables from then on.
//!
//! Two workloads, each measured twice over:
//! 1. **single-row statements, as sysbench issues them**: `sysbench oltp_write_only run` with
//!    `--threads=4 --events=EVENTS` (default 20,000 transactions; first argument or
//!    `REPLICATE_EVENTS`). Each transaction is an indexed `UPDATE`, a non-indexed `UPDATE`, a `DELETE`
//!    and an `INSERT` of the deleted id: 4 row changes.
//! 2. **multi-row statements**: 4 connections, each transaction a 100-row `INSERT` of new ids, a
//!    `UPDATE … WHERE id BETWEEN` of 100 rows and a `DELETE … WHERE id BETWEEN` of 100 other rows:
//!    300 row changes (`EVENTS / 20` transactions).
//!
//! (a) **source write rate**: row changes / wall seconds of the writers (sysbench's own run).
//! (b) **replica apply rate**: after the relay holds every change, `databus replicate --once`
//!     (release binary, into the second server) is started and timed from spawn to exit; row
//!     changes of the workload / those seconds. It starts from a standing start: its checkpoint is
//!     the end of the previous workload (the first run: no checkpoint, the relay's oldest change,
//!     the prepared rows already present in the target).
//!
//! After each workload `CHECKSUM TABLE` of every table must be equal on both servers (else the
//! figure is void and the bench panics). The ratio (b)/(a) is printed per workload.
//!
//! ```sh
//! cargo bench -p databus-cli --bench replicate_apply            # 20,000 sysbench transactions
//! cargo bench -p databus-cli --bench replicate_apply -- 5000    # quick
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use databus_testkit::{MariaDb, MariaDbOptions};
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TABLES: usize = 4;
const TABLE_SIZE: usize = 10_000;
const SEED: u64 = 7;
/// Rows per multi-row statement.
const BATCH: u64 = 100;
const WRITERS: u64 = 4;

/// The 1-minute load average (what else the machine was doing).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// CPU seconds (user + system) of process `pid` from `/proc/<pid>/stat` (0 elsewhere).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

fn sysbench(db: &MariaDb, command: &str, threads: usize, events: usize, seed: u64) -> Command {
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_write_only")
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={}", db.port()))
        .arg("--mysql-user=root")
        .arg("--mysql-password=")
        .arg("--mysql-db=sbtest")
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_SIZE}"))
        .arg(format!("--rand-seed={seed}"))
        .arg(format!("--threads={threads}"))
        .arg(format!("--events={events}"))
        .arg("--time=0")
        .arg(command)
        .stdin(Stdio::null());
    cmd
}

fn run_sysbench(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .expect("run sysbench (install it with scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn checksums(db: &MariaDb) -> Vec<Option<u64>> {
    let mut conn = db.root_conn().await.expect("conn");
    let mut out = Vec::new();
    for i in 1..=TABLES {
        let row: Option<(String, Option<u64>)> = conn
            .query_first(format!("CHECKSUM TABLE sbtest.sbtest{i} EXTENDED"))
            .await
            .expect("checksum");
        out.push(row.and_then(|(_, s)| s));
    }
    out
}

/// Creates sysbench's tables in `target` as they are in `source` and copies their rows.
async fn copy_tables(source: &MariaDb, target: &MariaDb) {
    let (mut from, mut to) = (
        source.root_conn().await.expect("conn"),
        target.root_conn().await.expect("conn"),
    );
    to.query_drop("CREATE DATABASE sbtest CHARACTER SET utf8mb4")
        .await
        .expect("database");
    for i in 1..=TABLES {
        let table = format!("sbtest.sbtest{i}");
        let (_, ddl): (String, String) = from
            .query_first(format!("SHOW CREATE TABLE {table}"))
            .await
            .expect("show create")
            .expect("a table");
        to.query_drop(format!("USE sbtest; {ddl}"))
            .await
            .expect("create");
        let rows: Vec<(i64, i64, String, String)> = from
            .query(format!("SELECT id, k, c, pad FROM {table}"))
            .await
            .expect("rows");
        for chunk in rows.chunks(1000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, k, c, pad)| format!("({id}, {k}, '{c}', '{pad}')"))
                .collect();
            to.query_drop(format!(
                "INSERT INTO {table} (id, k, c, pad) VALUES {}",
                values.join(", ")
            ))
            .await
            .expect("copy rows");
        }
    }
}

async fn source_scn(db: &MariaDb) -> u64 {
    let gtid = db.gtid_binlog_pos().await.expect("gtid_binlog_pos");
    gtid.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected gtid_binlog_pos {gtid:?}"))
}

/// `GET path` over HTTP/1.0; the body as JSON (`Null` when it is not JSON).
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

/// A child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_relay(bin: &str, dir: &Path, port: u16, url: &str) -> Child {
    let tables: String = (1..=TABLES)
        .map(|i| format!("{{ id = {i}, name = \"sb{i}\", table = \"sbtest.sbtest{i}\" }}, "))
        .collect();
    let config = format!(
        "state_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[sources]]\nname = \"shop\"\n\
         buffer_size = \"2GiB\"\nconnector = {{ kind = \"mariadb\", url = {url:?}, server_id = 1001 }}\n\
         tables = [ {tables} ]\n",
        dir.join("state").display().to_string()
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, config).expect("config");
    let log = std::fs::File::create(dir.join("relay.log")).expect("log");
    Child(
        Command::new(bin)
            .arg("relay")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn databus relay"),
    )
}

/// Waits until the relay's buffer holds SCN `scn` (or, with `scn` 0, until it streams).
async fn wait_relay(authority: &str, relay: &mut Child, dir: &Path, scn: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(body) = get_json(authority, "/v1/status").await {
            let buffer = &body["buffers"][0];
            let streaming = buffer["ingest"]["state"] == "streaming";
            if streaming && buffer["max_scn"].as_u64().unwrap_or(0) >= scn {
                return;
            }
        }
        if let Ok(Some(exit)) = relay.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default();
            panic!("the relay exited ({exit}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not reach SCN {scn}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `databus replicate --once` to its exit: (wall seconds, CPU seconds, its last lines).
async fn replicate_once(
    bin: &str,
    dir: &Path,
    relay: &str,
    target: &MariaDb,
) -> (f64, f64, String) {
    let log_path = dir.join("replicate.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "replicate",
            "--relay",
            relay,
            "--once",
            "--progress-every",
            "1s",
        ])
        .arg("--to")
        .arg(format!("mysql://root@127.0.0.1:{}/", target.port()))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn databus replicate");
    let pid = child.id().to_string();
    let mut cpu = 0.0f64;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        cpu = cpu.max(cpu_secs(&pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(exit.success(), "databus replicate failed ({exit}):\n{text}");
    let last = text
        .lines()
        .rfind(|l| l.starts_with("replica ") || l.contains("replicating"))
        .unwrap_or("")
        .to_owned();
    (secs, cpu, last)
}

fn row_sql(id: u64) -> String {
    format!(
        "({id}, {}, '{:011}-{:011}-{:011}-{:011}-{:011}-{:011}-{:011}-{:011}-{:011}-{:011}', \
         '{:011}-{:011}-{:011}-{:011}-{:011}')",
        id % 10_000,
        id,
        id + 1,
        id + 2,
        id + 3,
        id + 4,
        id + 5,
        id + 6,
        id + 7,
        id + 8,
        id + 9,
        id * 3,
        id * 3 + 1,
        id * 3 + 2,
        id * 3 + 3,
        id * 3 + 4
    )
}

/// The multi-row workload: `txns` transactions over `WRITERS` connections. Writer `w`'s
/// transaction `t` inserts 100 new rows, updates the 100 it inserted in its previous transaction
/// and deletes the 100 before those. Returns (row changes, wall seconds).
async fn multi_row(db: &MariaDb, txns: u64, first_id: u64) -> (u64, f64) {
    let per_writer = txns / WRITERS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let changes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for w in 0..WRITERS {
        let mut conn = db.root_conn().await.expect("conn");
        let changes = changes.clone();
        tasks.push(tokio::spawn(async move {
            let table = format!("sbtest.sbtest{}", w as usize % TABLES + 1);
            let base = first_id + w * 100_000_000;
            for t in 0..per_writer {
                let ids = |t: u64| (base + t * BATCH, base + (t + 1) * BATCH - 1);
                let (lo, hi) = ids(t);
                let values: Vec<String> = (lo..=hi).map(row_sql).collect();
                let mut sql = format!(
                    "BEGIN; INSERT INTO {table} (id, k, c, pad) VALUES {};",
                    values.join(", ")
                );
                let mut n = BATCH;
                if t >= 1 {
                    let (lo, hi) = ids(t - 1);
                    sql.push_str(&format!(
                        "UPDATE {table} SET k = k + 1, c = CONCAT('u', SUBSTRING(c, 2)) \
                         WHERE id BETWEEN {lo} AND {hi};"
                    ));
                    n += BATCH;
                }
                if t >= 2 {
                    let (lo, hi) = ids(t - 2);
                    sql.push_str(&format!(
                        "DELETE FROM {table} WHERE id BETWEEN {lo} AND {hi};"
                    ));
                    n += BATCH;
                }
                sql.push_str("COMMIT;");
                conn.query_drop(sql).await.expect("write");
                changes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let secs = start.elapsed().as_secs_f64();
    (changes.load(std::sync::atomic::Ordering::Relaxed), secs)
}

struct Figures {
    what: String,
    source: f64,
    apply: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("REPLICATE_EVENTS").ok())
        .map(|a| a.parse().expect("EVENTS must be a number"))
        .unwrap_or(20_000);
    let bin = env!("CARGO_BIN_EXE_databus");
    let opts = || {
        MariaDbOptions::default()
            .arg("--innodb-log-file-size=256M")
            .arg("--innodb-buffer-pool-size=256M")
    };
    let (source, target) = (
        MariaDb::start(opts()).await.expect("source"),
        MariaDb::start(opts()).await.expect("target"),
    );
    source
        .exec(&["CREATE DATABASE sbtest CHARACTER SET utf8mb4"])
        .await
        .expect("database");
    run_sysbench(sysbench(&source, "prepare", 1, 0, SEED));
    copy_tables(&source, &target).await;
    assert_eq!(
        checksums(&source).await,
        checksums(&target).await,
        "the target starts with the source's rows"
    );
    let url = source
        .create_user_with_grants("relay", "pw")
        .await
        .expect("user");
    let dir = tempfile::Builder::new()
        .prefix("databus-replicate-bench-")
        .tempdir()
        .expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let authority = format!("127.0.0.1:{port}");
    let relay_url = format!("http://{authority}");
    let mut relay = start_relay(bin, dir.path(), port, &url);
    wait_relay(&authority, &mut relay, dir.path(), 0).await;
    println!(
        "{TABLES} tables of {TABLE_SIZE} rows prepared on source and target; load {}",
        load_average()
    );

    let mut figures = Vec::new();
    let mut next_id = 1_000_000u64;
    for round in 1..=2 {
        // 1. Single-row statements: sysbench oltp_write_only.
        let start = Instant::now();
        let out = run_sysbench(sysbench(&source, "run", 4, events, SEED + round));
        let secs = start.elapsed().as_secs_f64();
        let txns: u64 = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("transactions:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("sysbench's transaction count");
        let changes = txns * 4;
        let source_rate = changes as f64 / secs;
        println!(
            "round {round} single-row: sysbench oltp_write_only --threads=4: {txns} transactions, \
             {changes} row changes in {secs:.2} s = {source_rate:.0} row changes/s; load {}",
            load_average()
        );
        let scn = source_scn(&source).await;
        wait_relay(&authority, &mut relay, dir.path(), scn).await;
        let (apply_secs, cpu, last) = replicate_once(bin, dir.path(), &relay_url, &target).await;
        let apply_rate = changes as f64 / apply_secs;
        println!(
            "round {round} single-row: replicate --once applied them in {apply_secs:.2} s = \
             {apply_rate:.0} row changes/s ({:.2}x the source); replicate CPU >= {cpu:.2} s; load {}\n  {last}",
            apply_rate / source_rate,
            load_average()
        );
        assert_eq!(
            checksums(&source).await,
            checksums(&target).await,
            "CHECKSUM TABLE after the single-row workload"
        );
        figures.push(Figures {
            what: format!("round {round} single-row (sysbench)"),
            source: source_rate,
            apply: apply_rate,
        });

        // 2. Multi-row statements.
        let txns = (events as u64 / 20).max(WRITERS * 3);
        let (changes, secs) = multi_row(&source, txns, next_id).await;
        next_id += 10_000_000;
        let source_rate = changes as f64 / secs;
        println!(
            "round {round} multi-row: {txns} transactions of 100-row INSERT/UPDATE/DELETE over {WRITERS} \
             connections: {changes} row changes in {secs:.2} s = {source_rate:.0} row changes/s; load {}",
            load_average()
        );
        let scn = source_scn(&source).await;
        wait_relay(&authority, &mut relay, dir.path(), scn).await;
        let (apply_secs, cpu, last) = replicate_once(bin, dir.path(), &relay_url, &target).await;
        let apply_rate = changes as f64 / apply_secs;
        println!(
            "round {round} multi-row: replicate --once applied them in {apply_secs:.2} s = \
             {apply_rate:.0} row changes/s ({:.2}x the source); replicate CPU >= {cpu:.2} s; load {}\n  {last}",
            apply_rate / source_rate,
            load_average()
        );
        assert_eq!(
            checksums(&source).await,
            checksums(&target).await,
            "CHECKSUM TABLE after the multi-row workload"
        );
        figures.push(Figures {
            what: format!("round {round} multi-row"),
            source: source_rate,
            apply: apply_rate,
        });
    }
    drop(relay);
    println!("summary (row changes/s; CHECKSUM TABLE equal after every step):");
    for f in &figures {
        println!(
            "  {:<36} source {:>8.0}  replica apply {:>8.0}  ratio {:.2}x",
            f.what,
            f.source,
            f.apply,
            f.apply / f.source
        );
    }
}
