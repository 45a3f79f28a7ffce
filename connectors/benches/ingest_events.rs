//! Ingest to encoded events (issue 3): the relay's whole pre-buffer path against mysql_async's own
//! `BinlogRow` decode of the same binlog, in the same run.
//!
//! Workload (the notes' "Throughput" mix): `CHANGES` row changes (default 1,000,000), 60/30/10
//! insert/update/delete, 10 row changes a transaction (one 6-row INSERT, one UPDATE of 3 rows by id
//! range, one DELETE of 1 row), ~200-byte rows. Four connections write it with 50 transactions per round
//! trip so the server writes at ~100k+ row changes/s instead of ~25k.
//!
//! Then, over the same binlog:
//! - **baseline**: a raw mysql_async binlog stream from the first binlog file that decodes every rows
//!   event into `BinlogRow`s and touches every value;
//! - **ours**: `MySqlConnector` from `After(Scn::ZERO)`, then for each `RowChange`:
//!   `SchemaRegistry::register_shared` (cached by the schema's `Arc`) -> `RowEncoder::encode` of the
//!   after image (before image for deletes) -> `event_key` -> `EventBuilder` frame written into a
//!   `Vec` (cleared per transaction), i.e. everything the relay does before its buffer. The connector
//!   decodes rows from the rows events' bytes itself (no `BinlogRow`).
//!
//! Each is run twice, alternating (baseline, ours, baseline, ours); the best of each is printed with the
//! ratio.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target cargo bench -p databus-connectors --bench ingest_events          # 1M
//! CARGO_TARGET_DIR=/work/target cargo bench -p databus-connectors --bench ingest_events -- 200000 # quick
//! INGEST_BENCH_BEFORE_IMAGES=1 cargo bench -p databus-connectors --bench ingest_events -- 200000  # + before images
//! ```

use std::time::Instant;

use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
use databus_connectors::{ChangeKind, ConnectorEvent, SourceConnector, StartPosition};
use databus_core::{EventBuilder, Opcode, Scn, SourceId};
use databus_serde_formats::{SchemaRegistry, event_key};
use databus_testkit::{MariaDb, MariaDbOptions};
use futures::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Value as MyValue};

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

/// One transaction number `t` of one writer (ids relative to `base`): insert 6 new rows
/// `6t..6t+6`, update rows `t+1..=t+3` (inserted by earlier or this transaction, not yet deleted),
/// delete row `t`.
fn txn_sql(base: u64, t: u64) -> String {
    let inserts: Vec<String> = (0..6).map(|i| row_sql(base + 6 * t + i)).collect();
    let lo = base + t + 1;
    format!(
        "BEGIN; INSERT INTO b.t VALUES {}; \
         UPDATE b.t SET a = a + 1, c = CONCAT('u', SUBSTRING(c, 2)), f = f + 0.5 WHERE id BETWEEN {lo} AND {}; \
         DELETE FROM b.t WHERE id = {}; COMMIT;",
        inserts.join(","),
        lo + 2,
        base + t
    )
}

async fn write_workload(db: &MariaDb, changes: usize) -> f64 {
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
                    .map(|t| txn_sql(w as u64 * ID_SPACE, *t))
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

/// CPU seconds (user + system) this process used so far, from Linux's `/proc/self/stat` (0 elsewhere).
/// On a shared machine this is steadier than wall time: it excludes the time waiting for a CPU.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends at the last ')'): utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
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
async fn baseline(url: &str, first_file: &str, changes: usize) -> (f64, u64) {
    let mut conn = mysql_async::Conn::from_url(url).await.expect("conn");
    conn.query_drop("SET @mariadb_slave_capability=4")
        .await
        .expect("capability");
    let request = BinlogStreamRequest::new(4242)
        .with_filename(first_file.as_bytes())
        .with_pos(4u64);
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
    drop(stream);
    (secs, sum)
}

/// Ours: the connector, then register/encode/key/frame for every row change. With `before_images`,
/// as a relay source with `before_images = true`: an update is encoded with its before image too, as
/// an `update` event.
async fn ours(url: &str, changes: usize, before_images: bool) -> (f64, u64) {
    let mut config = MySqlConfig::new(url.to_owned(), 4243);
    config.databases = vec!["b".into()];
    let mut c = MySqlConnector::new(config).expect("config");
    let registry = SchemaRegistry::in_memory();
    let source = SourceId::new(1);
    let (mut payload, mut frames) = (Vec::with_capacity(1024), Vec::with_capacity(64 * 1024));
    let mut images = Vec::with_capacity(1024);
    let (mut rows, mut bytes) = (0usize, 0u64);
    let start = Instant::now();
    c.start(StartPosition::After(Scn::ZERO))
        .await
        .expect("start");
    while rows < changes {
        let Some(ConnectorEvent::Transaction(t)) = c.next_event().await.expect("event") else {
            continue;
        };
        frames.clear();
        for change in &t.changes {
            let schema = registry.register_shared(&change.table).expect("register");
            let (opcode, image) = match change.kind {
                ChangeKind::Delete => (Opcode::Delete, change.before.as_ref()),
                ChangeKind::Update if before_images => (Opcode::Update, change.after.as_ref()),
                ChangeKind::Insert | ChangeKind::Update => (Opcode::Upsert, change.after.as_ref()),
            };
            let image = image.expect("row image");
            payload.clear();
            if opcode == Opcode::Update {
                images.clear();
                schema.encoder.encode(image, &mut images).expect("encode");
                let after_len = images.len();
                let before = change.before.as_ref().expect("before image");
                schema.encoder.encode(before, &mut images).expect("encode");
                let (after, before) = images.split_at(after_len);
                databus_core::event::update_payload(after, before, &mut payload);
            } else {
                schema.encoder.encode(image, &mut payload).expect("encode");
            }
            let key = event_key(&change.table, image).expect("key");
            EventBuilder::new(t.scn, opcode)
                .source(source)
                .timestamp_ns(t.commit_timestamp_ns)
                .schema(schema.id)
                .key(key.as_ref())
                .payload(&payload)
                .write_to_vec(&mut frames);
        }
        bytes += frames.len() as u64;
        rows += t.changes.len();
    }
    let secs = start.elapsed().as_secs_f64();
    c.shutdown().await.expect("shutdown");
    (secs, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("CHANGES must be a number"))
        .unwrap_or(1_000_000);
    let changes = changes / PER_TXN * PER_TXN;
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
    let write_secs = write_workload(&db, changes).await;
    println!(
        "wrote {changes} row changes ({} transactions, 60/30/10 insert/update/delete) in {write_secs:.1} s \
         ({:.0} row changes/s)",
        changes / PER_TXN,
        changes as f64 / write_secs
    );
    let first_file = db
        .query_string("SELECT SUBSTRING_INDEX(@@log_bin_basename, '/', -1)")
        .await
        .expect("basename")
        .expect("log_bin_basename");
    let first_file = format!("{first_file}.000001");

    // Best wall time and least CPU time of each side over the rounds.
    let (mut base_wall, mut base_cpu, mut ours_wall, mut ours_cpu) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    // INGEST_BENCH_BEFORE_IMAGES=1 adds a third side: ours with before images on.
    let with_before = std::env::var("INGEST_BENCH_BEFORE_IMAGES").as_deref() == Ok("1");
    let (mut before_wall, mut before_cpu, mut bytes_plain, mut bytes_before) =
        (f64::MAX, f64::MAX, 0u64, 0u64);
    let n = changes as f64;
    for round in 1..=2 {
        let cpu = cpu_secs();
        // INGEST_BENCH_ONLY=ours|baseline runs one side only (to profile it alone with `perf record`).
        let (b, sum) = if std::env::var("INGEST_BENCH_ONLY").as_deref() == Ok("ours") {
            (f64::NAN, 0)
        } else {
            baseline(&url, &first_file, changes).await
        };
        let bc = cpu_secs() - cpu;
        println!(
            "round {round}: baseline mysql_async BinlogRow decode: {b:.2} s = {:.0} row changes/s; \
             {bc:.2} CPU s = {:.0} row changes per CPU s (checksum {sum})",
            n / b,
            n / bc
        );
        let cpu = cpu_secs();
        let (o, bytes) = if std::env::var("INGEST_BENCH_ONLY").as_deref() == Ok("baseline") {
            (f64::NAN, 0)
        } else {
            ours(&url, changes, false).await
        };
        bytes_plain = bytes;
        let oc = cpu_secs() - cpu;
        println!(
            "round {round}: ours connector+register+encode+key+frame: {o:.2} s = {:.0} row changes/s; \
             {oc:.2} CPU s = {:.0} row changes per CPU s ({:.1} bytes of frame per change)",
            n / o,
            n / oc,
            bytes as f64 / n
        );
        if with_before {
            let cpu = cpu_secs();
            let (w, bytes) = ours(&url, changes, true).await;
            let wc = cpu_secs() - cpu;
            println!(
                "round {round}: ours with before images: {w:.2} s = {:.0} row changes/s; \
                 {wc:.2} CPU s = {:.0} row changes per CPU s ({:.1} bytes of frame per change)",
                n / w,
                n / wc,
                bytes as f64 / n
            );
            before_wall = before_wall.min(w);
            before_cpu = before_cpu.min(wc);
            bytes_before = bytes;
        }
        base_wall = base_wall.min(b);
        base_cpu = base_cpu.min(bc);
        ours_wall = ours_wall.min(o);
        ours_cpu = ours_cpu.min(oc);
    }
    println!(
        "best of 2, wall: baseline {:.0} row changes/s, ours {:.0} row changes/s, ratio ours/baseline {:.2}x",
        n / base_wall,
        n / ours_wall,
        base_wall / ours_wall
    );
    println!(
        "best of 2, CPU of this process: baseline {:.0}, ours {:.0} row changes per CPU s, ratio {:.2}x",
        n / base_cpu,
        n / ours_cpu,
        base_cpu / ours_cpu
    );
    if with_before {
        println!(
            "before images, best of 2: {:.0} row changes/s wall, {:.0} per CPU s; CPU per change {:+.1}% \
             and frame bytes {:+.1}% vs ours without ({:.1} -> {:.1} bytes per change)",
            n / before_wall,
            n / before_cpu,
            (before_cpu / ours_cpu - 1.0) * 100.0,
            (bytes_before as f64 / bytes_plain as f64 - 1.0) * 100.0,
            bytes_plain as f64 / n,
            bytes_before as f64 / n
        );
    }
}
