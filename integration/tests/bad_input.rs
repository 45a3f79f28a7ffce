//! Bad input against the real `databus` binary, a real private MariaDB and real loopback HTTP: each case
//! gets a clear error (status, error code, a message naming the thing and the fix), nothing already
//! captured is lost, and the process keeps serving other clients.
//!
//! Cases already covered closer to their code are not repeated here: relay query parameters parsed
//! in-process (`relay/server/tests/http_api.rs`), relay config keys and `check-source` on a STATEMENT
//! server (`cli/tests/cli.rs`), the checkpoint file store's own parsing (`client-lib`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use databus_client::{
    ClientConfig, ClientError, ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer,
    FileCheckpointStore, MemoryCheckpointStore, StartPosition, WindowInfo,
};
use databus_core::{Checkpoint, Event, Key, Opcode, PartitionId, SchemaId, Scn, SourceId};
use databus_integration::faults::{
    DatabusProcess, HttpResponse, RelayProcess, databus, enc, http_get, http_raw, run_within, text,
};
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Runs blocking helper code (std sockets, processes) on a runtime worker without starving it.
fn b<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts a JSON error answer: status, `error` code in the body and the `X-Databus-Error` header, and
/// every `needles` in the message. Returns the body.
fn assert_error(
    what: &str,
    resp: &HttpResponse,
    status: u16,
    code: &str,
    needles: &[&str],
) -> serde_json::Value {
    let body = resp
        .json()
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON: {e:#}"));
    assert_eq!(resp.status, status, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    assert_eq!(
        resp.header("x-databus-error"),
        Some(code),
        "{what}: {:?}",
        resp.headers
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: no message: {body}");
    for needle in needles {
        assert!(message.contains(needle), "{what}: {needle:?} not in {body}");
    }
    body
}

/// `GET path` from `addr`, then [`assert_error`] on the answer as `what`.
fn get_error(
    what: &str,
    addr: SocketAddr,
    path: &str,
    status: u16,
    code: &str,
    needles: &[&str],
) -> serde_json::Value {
    let resp = b(|| http_get(addr, path)).unwrap();
    assert_error(what, &resp, status, code, needles)
}

// ---------------------------------------------------------------------------------------------------
// A relay and a bootstrap server fed by a real MariaDB, a consumer following the relay.
// ---------------------------------------------------------------------------------------------------

/// `(id, seq)` of each delivered row, in delivery order, and the windows.
#[derive(Default)]
struct Rows {
    rows: Mutex<Vec<(i64, i64)>>,
    windows: AtomicUsize,
}

impl DatabusConsumer for Rows {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let Ok(row) = event.json() else {
            return ConsumerOutcome::Fatal;
        };
        let (Some(id), Some(seq)) = (row["id"].as_i64(), row["seq"].as_i64()) else {
            return ConsumerOutcome::Fatal;
        };
        self.rows.lock().unwrap().push((id, seq));
        ConsumerOutcome::Success
    }

    async fn on_end_window(&self, _: &WindowInfo, _: &Checkpoint) -> ConsumerOutcome {
        self.windows.fetch_add(1, Ordering::SeqCst);
        ConsumerOutcome::Success
    }
}

fn fast_client_config(relay: &str) -> ClientConfig {
    let mut config = ClientConfig::with_relays([relay]);
    config.long_poll = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(5);
    config.fetch_backoff.initial = Duration::from_millis(10);
    config.fetch_backoff.max = Duration::from_millis(200);
    config
}

async fn insert_rows(db: &MariaDb, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        db.exec_tx(&[&format!(
            "INSERT INTO shop.orders (id, seq, note) VALUES ({id}, {id}, 'n{id}')"
        )])
        .await
        .unwrap();
    }
}

fn relay_config(dir: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            r#"state_dir = {state:?}
[http]
listen = "127.0.0.1:0"
max_query_bytes = "4KiB"
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = "{url}", password_env = "BAD_INPUT_PW", server_id = 1001 }}
buffer_size = "8MiB"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]
"#,
            state = dir.join("state").display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// The address a bootstrap process logs as `bootstrap server serving addr=Some(ADDR)`.
fn bootstrap_addr(process: &mut DatabusProcess) -> SocketAddr {
    let rest = process
        .wait_for_log("bootstrap server serving", Duration::from_secs(60))
        .unwrap();
    let addr = rest
        .split("Some(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no address in {rest:?}"));
    addr.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_nothing_is_lost() {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(32))",
    ])
    .await
    .unwrap();
    let url = db
        .create_user_with_grants("repl", "bad-input-pw")
        .await
        .unwrap();
    let bare = url.replace(":bad-input-pw@", "@");
    let dir = tempfile::tempdir().unwrap();
    let config = relay_config(dir.path(), &bare);
    let mut relay =
        b(|| RelayProcess::start(&config, None, &[("BAD_INPUT_PW", "bad-input-pw")])).unwrap();
    b(|| relay.wait_ingest_state("streaming", Duration::from_secs(60))).unwrap();

    // A bootstrap server (producer, applier and server in one process) copying the relay.
    let boot_toml = dir.path().join("bootstrap.toml");
    std::fs::write(
        &boot_toml,
        format!(
            "db_path = {:?}\n[relay]\nurl = \"{}\"\nwait = \"200ms\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("boot.sqlite").display().to_string(),
            relay.url()
        ),
    )
    .unwrap();
    let boot_arg = boot_toml.display().to_string();
    let mut boot = b(|| {
        DatabusProcess::spawn(
            "bootstrap",
            &["bootstrap", "all", "--config", &boot_arg],
            &[],
        )
    })
    .unwrap();
    let boot_addr = b(|| bootstrap_addr(&mut boot));

    // A consumer following the relay all along.
    // It starts from the relay's newest window (a fresh relay does not hold the DDL before it), then
    // every row is written.
    let consumer = Arc::new(Rows::default());
    let mut config = fast_client_config(&relay.url());
    config.start = StartPosition::Now;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let stats = client.stats();
    let stop = CancellationToken::new();
    let run = {
        let (consumer, stop) = (consumer.clone(), stop.clone());
        tokio::spawn(async move { client.run(consumer, stop).await })
    };
    wait_until(
        "the consumer's first request",
        Duration::from_secs(30),
        || stats.requests() >= 1,
    )
    .await;
    insert_rows(&db, 1..=10).await;
    wait_until("the first 10 rows", Duration::from_secs(60), || {
        run.is_finished() || consumer.rows.lock().unwrap().len() >= 10
    })
    .await;
    assert!(!run.is_finished(), "the consumer stopped: {:?}", run.await);

    let relay_addr = relay.addr;
    // Malformed requests at the HTTP level: hyper answers them before any handler; the connection
    // is closed, the process goes on.
    for (what, request, status) in [
        ("garbage request line", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "binary garbage",
            vec![0u8, 0xff, 0xfe, 13, 10, 13, 10, 0x80, 0x81],
            400,
        ),
        (
            "bad HTTP version",
            b"GET /v1/status HTTP/9.7\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "huge header",
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(1 << 20)
            )
            .into_bytes(),
            431,
        ),
        (
            "too many headers",
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                (0..500)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
        ),
    ] {
        for addr in [relay_addr, boot_addr] {
            let resp = b(|| http_raw(addr, &request)).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(resp.status, status, "{what} to {addr}: {resp:?}");
        }
    }

    // Oversized request URI and body-carrying methods.
    let long = format!("/v1/stream?buffer=shop&sources={}", "1,".repeat(4000));
    get_error(
        "long query",
        relay_addr,
        &long,
        414,
        "query_too_long",
        &["max_query_bytes"],
    );
    let resp = b(|| {
        http_raw(
            relay_addr,
            format!(
                "POST /v1/stream?buffer=shop HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n{}",
                "x".repeat(4096)
            )
            .as_bytes(),
        )
    })
    .unwrap();
    assert_error(
        "POST with a big body",
        &resp,
        405,
        "method_not_allowed",
        &[],
    );

    // Bad parameters, bad filter specs and unknown sources on the relay: each one a 400
    // bad_parameter naming the parameter.
    for (query, parameter, needles) in [
        ("sources=99", "sources", &["99"][..]),
        ("sources=orderz", "sources", &["orderz"][..]),
        ("buffer=nope", "buffer", &["nope"][..]),
        ("buffer=shop&partition=mod:0:1", "partition", &[][..]),
        ("buffer=shop&partition=mod:4:9", "partition", &[][..]),
        ("buffer=shop&partition=range:x", "partition", &[][..]),
        ("buffer=shop&partition=banana", "partition", &[][..]),
        ("buffer=shop&sources=1-", "sources", &[][..]),
        (
            "buffer=shop&checkpoint=%7B%22version%22%3A99%7D",
            "checkpoint",
            &["version"][..],
        ),
        ("buffer=shop&checkpoint=null", "checkpoint", &[][..]),
        ("buffer=shop&max_bytes=1e99", "max_bytes", &[][..]),
        ("buffer=shop&wait_ms=-5", "wait_ms", &[][..]),
    ] {
        let path = format!("/v1/stream?{query}");
        let body = get_error(query, relay_addr, &path, 400, "bad_parameter", needles);
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    for (what, path, status, code) in [
        ("bad schema id", "/v1/schemas/zz", 400, "bad_parameter"),
        (
            "unknown schema id",
            "/v1/schemas/00000000000000ff",
            404,
            "schema_not_found",
        ),
    ] {
        get_error(what, relay_addr, path, status, code, &[]);
    }

    // The same on the bootstrap server (its checkpoints are in a bootstrap mode).
    let cp = {
        let mut c = Checkpoint::beginning();
        c.start_bootstrap(None);
        enc(&c.to_json())
    };
    for (query, status, code) in [
        ("".to_owned(), 400, "bad_parameter"),
        (format!("checkpoint={cp}&sources=99"), 404, "unknown_source"),
        (
            format!("checkpoint={cp}&partition=mod:0:1"),
            400,
            "bad_parameter",
        ),
        (format!("checkpoint={cp}&max_bytes=0"), 400, "bad_parameter"),
        (format!("checkpoint={cp}&what=1"), 400, "bad_parameter"),
        ("checkpoint=%7B".to_owned(), 400, "bad_parameter"),
        (
            format!("checkpoint={cp}&sources={}", "1,".repeat(8000)),
            400,
            "bad_parameter",
        ),
    ] {
        let path = format!("/v1/bootstrap/stream?{query}");
        let shown = &path[..path.len().min(80)];
        get_error(shown, boot_addr, &path, status, code, &[]);
    }
    get_error(
        "unknown bootstrap path",
        boot_addr,
        "/v1/nothing",
        404,
        "not_found",
        &["docs/bootstrap-protocol.md"],
    );

    // Nothing lost, everyone still served: more rows flow to the consumer, the relay holds every one,
    // the bootstrap producer copied every window.
    insert_rows(&db, 11..=20).await;
    wait_until("all 20 rows", Duration::from_secs(60), || {
        consumer.rows.lock().unwrap().len() >= 20
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let rows = consumer.rows.lock().unwrap().clone();
    assert_eq!(rows, (1..=20).map(|i| (i, i)).collect::<Vec<_>>());
    let status = b(|| relay.get("/v1/status")).unwrap().json().unwrap();
    assert_eq!(
        status["buffers"][0]["ingest"]["state"], "streaming",
        "{status}"
    );
    let max_scn = status["buffers"][0]["max_scn"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = b(|| http_get(boot_addr, "/v1/status"))
            .unwrap()
            .json()
            .unwrap();
        if st["log_last_scn"].as_u64() == Some(max_scn) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bootstrap never caught up to {max_scn}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b(|| http_get(boot_addr, "/health")).unwrap().status, 200);
    assert_eq!(b(|| relay.get("/health")).unwrap().status, 200);
    for (what, log) in [("relay", relay.process.log()), ("bootstrap", boot.log())] {
        assert!(!log.contains("panicked"), "{what} panicked:\n{log}");
    }
    assert!(boot.exited().is_none() && relay.process.exited().is_none());
    drop(boot);
    drop(relay);
}

// ---------------------------------------------------------------------------------------------------
// Corrupt checkpoint files and corrupt frames fed to the client.
// ---------------------------------------------------------------------------------------------------

/// An HTTP server on 127.0.0.1 answering the n-th request (from 0) with `answer(n)`, one request per
/// connection. Returns its URL and the request count.
async fn fake_relay(
    answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (count, answer) = (hits.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (count, answer) = (count.clone(), answer.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let n = count.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(&answer(n)).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

fn frames(scn: u64, keys: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &key in keys {
        out.extend(
            Event {
                scn: Scn::new(scn),
                opcode: Opcode::Upsert,
                source: SourceId::new(1),
                partition: PartitionId::new(0),
                timestamp_ns: scn,
                schema: SchemaId::NONE,
                key: Key::Int(key),
                payload: vec![1, 2, 3],
            }
            .to_frame(),
        );
    }
    out.extend(Event::end_of_window(Scn::new(scn), scn).to_frame());
    out
}

fn stream_answer(checkpoint: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.databus.frames\r\n".to_owned();
    if let Some(cp) = checkpoint {
        head.push_str(&format!("X-Databus-Checkpoint: {cp}\r\n"));
    }
    head.push_str(&format!(
        "X-Databus-More: false\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `(scn, key)` of every delivered event.
#[derive(Default)]
struct Keys(Mutex<Vec<(u64, i64)>>);

impl DatabusConsumer for Keys {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let Key::Int(k) = event.key().to_owned() else {
            return ConsumerOutcome::Fatal;
        };
        self.0.lock().unwrap().push((event.scn().get(), k));
        ConsumerOutcome::Success
    }
}

/// Runs `client` until it stops, which must be with an error within 30 s.
async fn run_to_error(what: &str, client: DatabusClient, consumer: Arc<Keys>) -> ClientError {
    tokio::time::timeout(
        Duration::from_secs(30),
        client.run(consumer, CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the client kept running"))
    .expect_err(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_frames_stop_the_client_after_the_last_whole_window() {
    let good = frames(1, &[10, 11]);
    let bad_window = frames(2, &[20, 21]);
    let cp1 = Checkpoint::after(Scn::new(1)).to_json();
    let cp2 = Checkpoint::after(Scn::new(2)).to_json();
    let mut flipped = bad_window.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    let truncated = bad_window[..bad_window.len() - 7].to_vec();
    let mut bad_magic = bad_window.clone();
    bad_magic[0] ^= 0xff;
    // A window that ends without its end-of-window frame, then a different window.
    let mut interleaved = frames(2, &[20]);
    interleaved.truncate(interleaved.len() - Event::end_of_window(Scn::new(2), 2).to_frame().len());
    interleaved.extend(frames(3, &[30]));
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("a flipped bit", flipped, Some(cp2.clone()), "bad frame"),
        (
            "a truncated frame",
            truncated,
            Some(cp2.clone()),
            "bad frame",
        ),
        ("a bad magic", bad_magic, Some(cp2.clone()), "bad frame"),
        (
            "an unclosed window",
            interleaved,
            Some(cp2.clone()),
            "inside open window",
        ),
        (
            "SCNs going back",
            frames(1, &[12]),
            Some(cp2.clone()),
            "SCNs must grow",
        ),
        (
            "no checkpoint header",
            bad_window.clone(),
            None,
            "X-Databus-Checkpoint",
        ),
        (
            "a garbage checkpoint",
            bad_window.clone(),
            Some("{nope".into()),
            "X-Databus-Checkpoint",
        ),
    ];
    for (what, body, checkpoint, needle) in cases {
        let first = stream_answer(Some(&cp1), &good);
        let second = stream_answer(checkpoint.as_deref(), &body);
        let (url, hits) = fake_relay(move |n| {
            if n == 0 {
                first.clone()
            } else {
                second.clone()
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer.json");
        let store = Arc::new(FileCheckpointStore::new(&path).unwrap());
        let mut config = fast_client_config(&url);
        config.max_fetch_failures = Some(3);
        let client = DatabusClient::new(config, store.clone()).unwrap();
        let consumer = Arc::new(Keys::default());
        let err = run_to_error(what, client, consumer.clone()).await;
        assert!(matches!(err, ClientError::Protocol { .. }), "{what}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(&url),
            "{what}: the server is named: {message}"
        );
        assert!(message.contains(needle), "{what}: {message}");
        // The whole first window was delivered and checkpointed; nothing of the bad one.
        assert_eq!(
            *consumer.0.lock().unwrap(),
            vec![(1, 10), (1, 11)],
            "{what}"
        );
        use databus_client::CheckpointStore as _;
        assert_eq!(
            store.load().unwrap(),
            Some(Checkpoint::after(Scn::new(1))),
            "{what}"
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "{what}: one bad answer, no retry loop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_checkpoint_files_stop_the_consumer_naming_the_file() {
    let (url, hits) = fake_relay(|_| stream_answer(None, b"")).await;
    let good = Checkpoint::after(Scn::new(41)).to_json();
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes) in [
        ("truncated", good.as_bytes()[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("binary garbage", vec![0xff, 0x00, 0x13, 0x37]),
        (
            "another version",
            good.replace("\"version\":1", "\"version\":7").into_bytes(),
        ),
        (
            "inconsistent",
            good.replace("\"prev_scn\":41", "\"prev_scn\":99")
                .into_bytes(),
        ),
        ("not a checkpoint", b"[1,2,3]".to_vec()),
    ] {
        let path = dir.path().join(format!("{}.json", what.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        let previous = Checkpoint::after(Scn::new(40)).to_json();
        let prev_path = dir
            .path()
            .join(format!("{}.json.prev", what.replace(' ', "-")));
        std::fs::write(&prev_path, &previous).unwrap();
        let store = Arc::new(FileCheckpointStore::new(&path).unwrap());
        let client = DatabusClient::new(fast_client_config(&url), store).unwrap();
        let consumer = Arc::new(Keys::default());
        let err = run_to_error(what, client, consumer.clone()).await;
        let message = err.to_string();
        assert!(matches!(err, ClientError::Store(_)), "{what}: {message}");
        assert!(
            message.contains(&path.display().to_string()),
            "{what}: the file is named: {message}"
        );
        assert!(message.contains("fix or remove it"), "{what}: {message}");
        // Nothing overwritten, nothing fetched, nothing delivered.
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}");
        assert_eq!(
            std::fs::read_to_string(&prev_path).unwrap(),
            previous,
            "{what}"
        );
        assert!(
            !dir.path()
                .join(format!("{}.json.tmp", what.replace(' ', "-")))
                .exists()
        );
        assert!(consumer.0.lock().unwrap().is_empty(), "{what}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request with an unusable checkpoint"
    );
}

// ---------------------------------------------------------------------------------------------------
// Bad configurations, wrong credentials, sources not ready for capture.
// ---------------------------------------------------------------------------------------------------

#[test]
fn bad_configs_exit_2_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let relay_base = format!(
        "state_dir = {state:?}\n[[sources]]\nname = \"shop\"\nconnector = {{ kind = \"mariadb\", url = \"mysql://r@127.0.0.1:1\", server_id = 7 }}\ntables = [{{ id = 1, name = \"o\", table = \"shop.o\" }}]\n"
    );
    let boot_base = format!(
        "db_path = {:?}\n[relay]\nurl = \"http://127.0.0.1:1\"\n",
        dir.path().join("b.sqlite").display().to_string()
    );
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "relay",
            "unknown key in [http]",
            format!("{relay_base}[http]\nlisten_on = \"x\"\n"),
            "listen_on",
        ),
        (
            "relay",
            "bad size unit",
            relay_base.replace(
                "name = \"shop\"",
                "name = \"shop\"\nbuffer_size = \"12 potatoes\"",
            ),
            "buffer_size",
        ),
        (
            "relay",
            "bad duration",
            format!("{relay_base}[http]\nmax_wait = \"soon\"\n"),
            "max_wait",
        ),
        (
            "relay",
            "bad listen address",
            format!("{relay_base}[http]\nlisten = \"nowhere\"\n"),
            "listen",
        ),
        (
            "relay",
            "missing tables",
            relay_base.replace(
                "tables = [{ id = 1, name = \"o\", table = \"shop.o\" }]\n",
                "",
            ),
            "tables",
        ),
        (
            "relay",
            "duplicate source id",
            relay_base.replace("}]", "}, { id = 1, name = \"p\", table = \"shop.p\" }]"),
            "id",
        ),
        (
            "relay",
            "not TOML",
            "state_dir = [\n".to_owned(),
            "relay.toml",
        ),
        ("relay", "empty file", String::new(), "state_dir"),
        (
            "bootstrap",
            "unknown key in [relay]",
            boot_base.replace("[relay]\n", "[relay]\nbufer = \"shop\"\n"),
            "bufer",
        ),
        (
            "bootstrap",
            "missing db_path",
            boot_base
                .lines()
                .skip(1)
                .map(|l| format!("{l}\n"))
                .collect(),
            "db_path",
        ),
        (
            "bootstrap",
            "bad size unit",
            format!("{boot_base}max_bytes = \"lots\"\n"),
            "max_bytes",
        ),
        (
            "bootstrap",
            "unknown section",
            format!("{boot_base}[replay]\nx = 1\n"),
            "replay",
        ),
    ];
    for (command, what, toml, needle) in cases {
        let file = if command == "relay" {
            "relay.toml"
        } else {
            "bootstrap.toml"
        };
        let path = dir.path().join(file);
        std::fs::write(&path, &toml).unwrap();
        let path_arg = path.display().to_string();
        let mut cmd = databus();
        if command == "relay" {
            cmd.args(["relay", "--config", &path_arg]);
        } else {
            cmd.args(["bootstrap", "producer", "--config", &path_arg]);
        }
        let out = run_within(&mut cmd, Duration::from_secs(30)).unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command} {what}: {err}");
        assert!(
            err.contains(needle),
            "{command} {what}: {needle:?} not in {err}"
        );
        assert!(
            err.contains(file),
            "{command} {what}: the file is named: {err}"
        );
        assert!(
            err.lines().count() <= 12,
            "{command} {what}: one short error (the TOML snippet at most): {err}"
        );
        assert!(!err.contains("panicked"), "{command} {what}: {err}");
    }
}

/// `databus check-source --url URL`, within a minute.
fn check_source(url: &str) -> std::process::Output {
    b(|| {
        run_within(
            databus().args(["check-source", "--url", url]),
            Duration::from_secs(60),
        )
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_unready_sources_are_refused_with_the_fix() {
    let no_binlog = MariaDb::start(MariaDbOptions {
        no_log_bin: true,
        ..MariaDbOptions::default()
    })
    .await
    .unwrap();
    let statement = MariaDb::start(MariaDbOptions::default().arg("--binlog-format=STATEMENT"))
        .await
        .unwrap();
    for db in [&no_binlog, &statement] {
        db.exec(&[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, note VARCHAR(32))",
        ])
        .await
        .unwrap();
    }
    let nb_url = no_binlog
        .create_user_with_grants("repl", "nb-secret-1")
        .await
        .unwrap();
    let st_url = statement
        .create_user_with_grants("repl", "st-secret-2")
        .await
        .unwrap();

    // check-source: the server without a binlog needs --log-bin (exit 3, the fix printed).
    let out = check_source(&nb_url);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("FIX   log_bin: log_bin is OFF; start the server with --log-bin"),
        "{stdout}"
    );

    // check-source with a wrong password: a runtime error naming the refusal, and no password shown.
    let wrong = st_url.replace(":st-secret-2@", ":not-the-password@");
    let out = check_source(&wrong);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}{}", text(&out.stdout));
    assert!(err.contains("Access denied"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    // The relay refuses each source with the fix in its status; /health is 503; the relay keeps
    // serving its API.
    let dir = tempfile::tempdir().unwrap();
    for (what, url, password, needles) in [
        (
            "no binlog",
            nb_url.replace(":nb-secret-1@", "@"),
            "nb-secret-1",
            &["log_bin is OFF", "--log-bin"][..],
        ),
        (
            "statement format",
            st_url.replace(":st-secret-2@", "@"),
            "st-secret-2",
            &["binlog_format is STATEMENT; set binlog_format=ROW"][..],
        ),
        (
            "wrong password",
            st_url.replace(":st-secret-2@", "@"),
            "wrong-secret-3",
            &["Access denied", "password"][..],
        ),
    ] {
        let sub = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&sub).unwrap();
        let config = relay_config(&sub, &url);
        let relay =
            b(|| RelayProcess::start(&config, None, &[("BAD_INPUT_PW", password)])).unwrap();
        let status = b(|| relay.wait_ingest_state("failed", Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let error = status["buffers"][0]["ingest"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for needle in needles {
            assert!(
                error.contains(needle),
                "{what}: {needle:?} not in {error:?}"
            );
        }
        assert!(
            !error.contains(password),
            "{what}: the password leaks: {error}"
        );
        let health = b(|| relay.get("/health")).unwrap();
        assert_error(what, &health, 503, "unavailable", &["shop", "/v1/status"]);
        assert_eq!(
            b(|| relay.get("/v1/sources")).unwrap().status,
            200,
            "{what}"
        );
        let log = relay.process.log();
        assert!(log.contains(needles[0]), "{what}: the log says why: {log}");
        assert!(!log.contains(password), "{what}: the password leaks: {log}");
    }
}
