//! The real `databus` binary against real files, a real private MariaDB and a real relay process.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    BootstrapToml, Killed, RelayToml, databus, free_port, http_get, http_get_body, lines,
    mariadb_with_repl, rt, run, run_within, start_relay, status_json, text, wait_streaming,
};
use databus_testkit::{MariaDb, MariaDbOptions, Postgres};

#[test]
fn help_lists_commands_and_exit_codes() {
    let out = run(databus().arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "relay",
        "check-source",
        "bootstrap",
        "tail",
        "status",
        "quickstart",
        "replicate",
        "Exit codes:",
        "3  check-source found settings or grants to fix",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let out = run(databus().arg("no-such-command"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn replicate_refuses_a_password_in_the_target_url() {
    for url in [
        "mysql://replica:hunter2@127.0.0.1:9/",
        "postgres://replica:hunter2@127.0.0.1:9/replica",
    ] {
        let out = run(databus().args(["replicate", "--relay", "http://127.0.0.1:9", "--to", url]));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--password-env") && !stderr.contains("hunter2"),
            "{stderr}"
        );
    }
}

#[test]
fn replicate_names_an_unreachable_target_at_start() {
    let out = run(databus().args([
        "replicate",
        "--relay",
        "http://127.0.0.1:9",
        "--to",
        "postgres://replica@127.0.0.1:9/replica",
        "--connect-retry-for",
        "0s",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("connecting to the target PostgreSQL") && stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
    let out = run(databus().args([
        "replicate",
        "--relay",
        "http://127.0.0.1:9",
        "--to",
        "redis://127.0.0.1:9/",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("postgres://user@host:port/database"));
}

#[test]
fn replicate_reads_a_config_file_flags_override_it_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replicate.toml");
    std::fs::write(
        &path,
        "relays = [\"http://127.0.0.1:9\"]\nto = \"postgres://replica@127.0.0.1:9/replica\"\n\
         password_env = \"NOPE\"\nname = \"from-file\"\nprogress_every = \"10s\"\n",
    )
    .unwrap();
    let config = path.display().to_string();
    let out = run(databus().args([
        "replicate",
        "--config",
        &config,
        "--name",
        "from-flag",
        "--print-config",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for needle in [
        "relays = [\"http://127.0.0.1:9\"]",
        "name = \"from-flag\"",
        "progress_every = \"10s\"",
        "meta_db = \"databus\"",
        "connect_retry_for = \"30s\"",
    ] {
        assert!(
            printed.contains(needle),
            "{needle} missing from:\n{printed}"
        );
    }
    // The file's settings reach the run: its target is the one named unreachable.
    let out = run(databus().args([
        "replicate",
        "--config",
        &config,
        "--password-file",
        "/dev/null",
        "--connect-retry-for",
        "0s",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("connecting to the target PostgreSQL"));
    // A misspelt key and a missing target are usage errors naming what to fix.
    std::fs::write(&path, "relay = [\"http://127.0.0.1:9\"]\n").unwrap();
    let out = run(databus().args(["replicate", "--config", &config]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&config) && stderr.contains("unknown field `relay`"),
        "{stderr}"
    );
    let out = run(databus().args(["replicate", "--relay", "http://127.0.0.1:9"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("give --to URL"));
}

const CONFIG: &str = r#"
state_dir = "STATE"
[[sources]]
name = "shop"
tables = [{ id = 1, name = "orders", table = "shop.orders" }]
[sources.connector]
kind = "mariadb"
url = "mysql://repl:hunter2@127.0.0.1:3306"
server_id = 1001
"#;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    let text = text.replace("STATE", &dir.join("state").display().to_string());
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, needle) in [
        (
            "server_id = 1001",
            "server_id = 1001\nbogus_key = 1",
            "unknown field `bogus_key`",
        ),
        ("server_id = 1001\n", "", "missing field `server_id`"),
        (
            "kind = \"mariadb\"",
            "kind = \"oracle\"",
            "unknown variant `oracle`",
        ),
        ("state_dir = \"STATE\"\n", "", "missing field `state_dir`"),
        (
            "\"shop.orders\"",
            "\"orders\"",
            "sources[0].tables[0].table",
        ),
    ] {
        assert!(CONFIG.contains(from), "{from}");
        let path = write_config(dir.path(), &CONFIG.replacen(from, to, 1));
        let out = run(databus().arg("relay").arg("--config").arg(&path));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(needle), "{to}: {err}");
        assert!(err.contains("relay.toml"), "the file is named: {err}");
    }
    let out = run(databus().args(["relay", "--config", "/nonexistent/relay.toml"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn durations_on_the_command_line_parse_as_in_the_files() {
    // An overflowing value is a usage error (it used to overflow a multiplication).
    let out = run(databus().args(["quickstart", "--duration", "307445734561825861m"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a duration"), "{err}");
}

#[test]
fn print_config_fills_defaults_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let out = run(databus().arg("relay").arg("--config").arg(&path).args([
        "--print-config",
        "--listen",
        "127.0.0.1:9999",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("repl:***@127.0.0.1:3306"), "{printed}");
    assert!(printed.contains("listen = \"127.0.0.1:9999\""), "{printed}");
    assert!(printed.contains("buffer_size = \"256MiB\""), "{printed}");
    assert!(printed.contains("max_wait = \"30s\""), "{printed}");
    assert!(
        printed
            .contains("[http.connections]\nmax_connections = 1024\nheader_read_timeout = \"10s\""),
        "{printed}"
    );
    // The printed configuration is itself a valid configuration.
    std::fs::write(dir.path().join("printed.toml"), &printed).unwrap();
    let out = run(databus()
        .arg("relay")
        .arg("--config")
        .arg(dir.path().join("printed.toml"))
        .arg("--print-config"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_bootstrap_example_config_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bootstrap.example.toml");
    let out = run(databus()
        .args(["bootstrap", "all", "--print-config", "--config"])
        .arg(&example)
        .env("SEED_PASSWORD", "example-secret"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("max_bytes = \"10GiB\""), "{printed}");
    assert!(printed.contains("max_pins = 1000"), "{printed}");
    assert!(printed.contains("idle_timeout = \"1m\""), "{printed}");
    assert!(!printed.contains("example-secret"), "{printed}");
    // Serialized from the configuration's types: it parses back to itself.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &printed).unwrap();
    let again = run(databus()
        .args(["bootstrap", "all", "--print-config", "--config"])
        .arg(&path)
        .env("SEED_PASSWORD", "example-secret"));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout),
        printed,
        "a fixed point of --print-config"
    );
}

#[test]
fn the_example_config_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/relay.example.toml");
    let out = run(databus()
        .arg("relay")
        .arg("--config")
        .arg(&example)
        .arg("--print-config")
        .env("SHOP_REPL_PASSWORD", "x")
        .env("BILLING_PG_PASSWORD", "y"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The example's effective configuration parses back to the same configuration (the connector's
/// table serialized from its type: every setting, durations in the parser's units), is a fixed point
/// of --print-config, and carries no secret value.
#[test]
fn the_example_config_round_trips_through_print_config() {
    use databus_relay::config::RelayConfig;
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/relay.example.toml");
    let print = |path: &Path| {
        let out = run(databus()
            .arg("relay")
            .arg("--config")
            .arg(path)
            .arg("--print-config")
            .env("SHOP_REPL_PASSWORD", "s3cret-example-pw")
            .env("BILLING_PG_PASSWORD", "s3cret-pg-pw"));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let printed = print(&example);
    assert!(!printed.contains("s3cret-example-pw"), "{printed}");
    assert!(!printed.contains("s3cret-pg-pw"), "{printed}");
    assert!(printed.contains("kind = \"postgres\""), "{printed}");
    assert!(printed.contains("[sources.connector]"), "{printed}");
    assert!(printed.contains("read_timeout = \"10s\""), "{printed}");
    let original = RelayConfig::from_toml(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let parsed = RelayConfig::from_toml(&printed).unwrap();
    assert_eq!(original.sources.len(), parsed.sources.len());
    for (a, b) in original.sources.iter().zip(&parsed.sources) {
        assert_eq!(a.connector, b.connector, "{printed}");
        assert_eq!(a.buffer_size, b.buffer_size);
        assert_eq!(a.history_transactions, b.history_transactions);
    }
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &printed).unwrap();
    assert_eq!(print(&path), printed, "a fixed point of --print-config");
}

#[test]
fn check_source_prints_the_fix_for_statement_format() {
    let rt = rt();
    let db = rt
        .block_on(MariaDb::start(
            MariaDbOptions::default().arg("--binlog-format=STATEMENT"),
        ))
        .unwrap();
    let out = run(databus().args(["check-source", "--url", &db.url(), "--server-id", "1001"]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("FIX   binlog_format: binlog_format is STATEMENT; set binlog_format=ROW"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    log_bin"), "{stdout}");
}

#[test]
fn check_source_postgres_prints_the_replica_identity_statement() {
    let rt = rt();
    let pg = rt.block_on(Postgres::start()).unwrap();
    rt.block_on(pg.exec(&[
        "CREATE TABLE public.orders (id INT PRIMARY KEY)",
        "CREATE TABLE public.lines (id INT PRIMARY KEY)",
        "ALTER TABLE public.lines REPLICA IDENTITY FULL",
    ]))
    .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let check = |tables: &[&str]| {
        let mut cmd = databus();
        cmd.args(["check-source", "--kind", "postgres", "--url", &url])
            .args(["--password-env", "CHECK_PG_PW"])
            .env("CHECK_PG_PW", Postgres::PASSWORD);
        for t in tables {
            cmd.args(["--table", t]);
        }
        run(&mut cmd)
    };
    let out = check(&["public.orders", "public.lines"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "FIX   replica identity: table public.orders has REPLICA IDENTITY DEFAULT; run ALTER TABLE \"public\".\"orders\" REPLICA IDENTITY FULL"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("ok    wal_level"), "{stdout}");
    assert!(stdout.contains("ok    replication privilege"), "{stdout}");
    assert!(!stdout.contains(Postgres::PASSWORD), "{stdout}");
    rt.block_on(pg.exec(&["ALTER TABLE public.orders REPLICA IDENTITY FULL"]))
        .unwrap();
    let out = check(&["public.orders", "public.lines"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ok    publication"), "{stdout}");
    assert!(stdout.contains("ok    replication slot"), "{stdout}");
}

#[test]
fn check_source_passes_a_good_server() {
    let rt = rt();
    let (_db, url) = mariadb_with_repl(&rt, &[], "pw-secret");
    let out = run(databus().args(["check-source", "--url", &url]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("FIX"), "{stdout}");
    assert!(stdout.contains("the source is ready"), "{stdout}");
    assert!(!stdout.contains("pw-secret"), "{stdout}");
    // The password from the environment instead of the URL.
    let bare = url.replace(":pw-secret@", "@");
    let out = run(databus()
        .args(["check-source", "--url", &bare, "--password-env", "CHECK_PW"])
        .env("CHECK_PW", "pw-secret"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A server that is not there is a runtime error, not a failed check.
    let out = run(databus().args(["check-source", "--url", "mysql://root@127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The sources of a relay configuration, each with its connector's own settings.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[[sources]]\nname = \"shop\"\ntables = [{{ id = 1, name = \"t\", table = \"shop.t\" }}]\n\
             [sources.connector]\nkind = \"mariadb\"\nurl = {bare:?}\npassword_env = \"CHECK_PW\"\nserver_id = 1001\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let out = run(databus()
        .arg("check-source")
        .arg("--config")
        .arg(&path)
        .args(["--source", "shop"])
        .env("CHECK_PW", "pw-secret"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("the source is ready"), "{stdout}");
    assert!(!stdout.contains("pw-secret"), "{stdout}");
    let out = run(databus()
        .arg("check-source")
        .arg("--config")
        .arg(&path)
        .args(["--source", "nope"])
        .env("CHECK_PW", "pw-secret"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn tail_and_status_follow_a_real_relay() {
    let rt = rt();
    let (db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
            "CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(32))",
        ],
        "tail-secret-pw",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = RelayToml {
        listen: Some("127.0.0.1:0"),
        url: &url.replace(":tail-secret-pw@", "@"),
        password_env: Some("TAIL_TEST_PW"),
        server_id: 1001,
        tables: &["orders", "notes"],
    }
    .write(dir.path());
    let (mut relay, relay_url, relay_log) = start_relay(
        databus()
            .arg("relay")
            .arg("--config")
            .arg(&path)
            .env("TAIL_TEST_PW", "tail-secret-pw"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_streaming(&relay_url, deadline);

    // Follow only `orders`, from the beginning, until 3 events arrived.
    let mut tail = Killed::spawn_piped(databus().args([
        "tail",
        "--relay",
        &relay_url,
        "--sources",
        "1",
        "--max-events",
        "3",
    ]));
    rt.block_on(db.exec(&[
        "INSERT INTO shop.notes VALUES (1, 'not followed')",
        "INSERT INTO shop.orders VALUES (1, 'apple'), (2, 'pear')",
        "UPDATE shop.orders SET item = 'plum' WHERE id = 2",
    ]))
    .unwrap();
    let status = tail.wait_until(deadline, "tail did not end after 3 events");
    let stdout = tail.stdout_text();
    let stderr = tail.stderr_text();
    assert!(status.success(), "{stdout}{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(events.len(), 3, "{stdout}");
    let items: Vec<(&str, i64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["opcode"].as_str().unwrap(),
                e["key"].as_i64().unwrap(),
                e["payload"]["item"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("upsert", 1, "apple"),
            ("upsert", 2, "pear"),
            ("upsert", 2, "plum")
        ]
    );
    assert!(events.iter().all(|e| e["source"] == 1), "{stdout}");
    let last_scn = events[2]["scn"].as_u64().unwrap();

    // A key-partition filter: integer keys 2..=3 only (RANGE of size 2, range 1).
    let out = run_within(
        databus().args([
            "tail",
            "--relay",
            &relay_url,
            "--sources",
            "1",
            "--partition",
            "range:2:1",
            "--max-events",
            "2",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys: Vec<i64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(keys, [2, 2]);

    // --from-now sees only what is written afterwards.
    let mut from_now = Killed::spawn(
        databus()
            .args([
                "tail",
                "--relay",
                &relay_url,
                "--from-now",
                "--max-events",
                "1",
            ])
            .stdout(Stdio::piped()),
    );
    // Wait until the relay shows the last SCN (so "now" is after it), then write one more row.
    let status_text = loop {
        let out = run(databus().args(["status", "--relay", &relay_url]));
        let t = text(&out.stdout);
        if t.contains(&format!("..={last_scn}")) || t.contains(&format!("..={}", last_scn + 1)) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed SCN {last_scn}: {t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status_text.contains("buffer shop"), "{status_text}");
    assert!(
        status_text.contains("ingest      streaming"),
        "{status_text}"
    );
    assert!(
        status_text.contains("orders (shop.orders, id 1)"),
        "{status_text}"
    );
    // Give the --from-now tail its starting point before writing: it reads /v1/status first; a row
    // written before that would be skipped, so poll the relay's waiting readers.
    loop {
        let (v, _) = status_json(&relay_url);
        let v = v.expect("the relay's status as JSON");
        if v["buffers"][0]["waiting_readers"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the --from-now tail never long-polled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(db.exec(&["INSERT INTO shop.orders VALUES (3, 'fig')"]))
        .unwrap();
    let status = from_now.wait_until(deadline, "--from-now tail did not get the new row");
    let stdout = from_now.stdout_text();
    assert!(status.success());
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["payload"]["item"], "fig", "{stdout}");

    // SIGTERM stops the relay cleanly (exit 0), and it never logged the password.
    assert!(relay.signal("-TERM"));
    let status = relay.wait_until(deadline, "the relay did not stop on SIGTERM");
    assert!(status.success(), "{status}");
    let log = relay_log.join().unwrap();
    assert!(log.contains("relay serving"), "{log}");
    assert!(!log.contains("tail-secret-pw"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "no colours when stderr is not a terminal: {log}"
    );

    // A relay that is not there: runtime error.
    let out = run(databus().args(["status", "--relay", "http://127.0.0.1:1"]));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn quickstart_runs_end_to_end() {
    quickstart_shows_the_demo(&[]);
}

#[test]
fn quickstart_runs_end_to_end_on_postgres() {
    let stdout = quickstart_shows_the_demo(&["--source", "postgres"]);
    assert!(stdout.contains("private PostgreSQL"), "{stdout}");
    assert!(stdout.contains("logical replication slot"), "{stdout}");
}

/// Runs the quickstart with 4 orders and checks what it shows; returns its output.
fn quickstart_shows_the_demo(extra: &[&str]) -> String {
    let out = run(databus()
        .args(["quickstart", "--rows", "4", "--duration", "90s"])
        .args(extra));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // 4 orders, 2 customers, 2 updates in one transaction (the 4th order).
    for needle in [
        "shop.customers  upsert     1",
        "shop.orders     upsert     4",
        "\"status\":\"paid\"",
        "done: 8 change events",
        // The bootstrap server's snapshot: 2 customers and 4 orders.
        "snapshot    6 keys",
        "point databus at your own database",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    // Its temporary directory is gone.
    let dir = stdout
        .split("data in ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .expect("the quickstart names its data directory");
    assert!(!Path::new(dir.trim()).exists(), "{dir} was not removed");
    stdout
}

#[test]
fn an_interrupted_quickstart_leaves_nothing_behind() {
    let mut child =
        Killed::spawn_piped(databus().args(["quickstart", "--rows", "10000", "--duration", "5m"]));
    // Read stdout until the workload runs (the MariaDB data directory is named on the way).
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut datadir = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(dir) = line.split("data in ").nth(1) {
                datadir = Some(vec![dir.trim().to_owned()]);
            }
            if let (Some(dirs), Some(dir)) = (datadir.as_mut(), line.split("state in ").nth(1)) {
                dirs.push(dir.trim().to_owned());
            }
            if line.contains("shop.orders") && line.contains("upsert") {
                let _ = tx.send(datadir.take());
            }
        }
    });
    let Ok(dirs) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = child.0.kill();
        let stderr = child.stderr_text();
        panic!("the quickstart printed no event: {stderr}");
    };
    let dirs = dirs.expect("the quickstart names its data directory");
    assert_eq!(dirs.len(), 2, "the MariaDB and relay directories: {dirs:?}");
    assert!(dirs.iter().all(|d| Path::new(d).exists()), "{dirs:?}");
    assert!(child.signal("-TERM"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = child.wait_until(deadline, "the quickstart did not stop on SIGTERM");
    let stderr = child.stderr_text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for dir in &dirs {
        assert!(!Path::new(dir).exists(), "{dir} was not removed");
    }
    // No mariadbd of this quickstart is left running.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!text(&ps.stdout).contains(&dirs[0]), "mariadbd still runs");
}

/// `tail` shows table events too: a TRUNCATE between two inserts is the second of three events, with
/// its table change as payload; a key change is a delete of the old key then an upsert of the new.
#[test]
fn tail_shows_truncates_and_key_changes() {
    let rt = rt();
    let (db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
        ],
        "trunc-pw",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = RelayToml {
        listen: Some("127.0.0.1:0"),
        url: &url.replace(":trunc-pw@", "@"),
        password_env: Some("TRUNC_TEST_PW"),
        server_id: 1001,
        tables: &["orders"],
    }
    .write(dir.path());
    let (relay, relay_url, _relay_log) = start_relay(
        databus()
            .arg("relay")
            .arg("--config")
            .arg(&path)
            .env("TRUNC_TEST_PW", "trunc-pw"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_streaming(&relay_url, deadline);
    let mut tail =
        Killed::spawn_piped(databus().args(["tail", "--relay", &relay_url, "--max-events", "5"]));
    rt.block_on(db.exec(&[
        "INSERT INTO shop.orders VALUES (1, 'apple')",
        "TRUNCATE TABLE shop.orders",
        "INSERT INTO shop.orders VALUES (2, 'pear')",
        "UPDATE shop.orders SET id = 3 WHERE id = 2",
    ]))
    .unwrap();
    let status = tail.wait_until(deadline, "tail did not end after 5 events");
    let stdout = tail.stdout_text();
    assert!(status.success(), "{stdout}{}", tail.stderr_text());
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let shape: Vec<(&str, serde_json::Value)> = events
        .iter()
        .map(|e| (e["opcode"].as_str().unwrap(), e["key"].clone()))
        .collect();
    assert_eq!(
        shape,
        [
            ("upsert", 1.into()),
            ("truncate", serde_json::Value::Null),
            ("upsert", 2.into()),
            ("delete", 2.into()),
            ("upsert", 3.into()),
        ],
        "{stdout}"
    );
    assert_eq!(events[1]["payload"]["cause"], "truncate", "{stdout}");
    assert_eq!(events[1]["payload"]["table"], "shop.orders", "{stdout}");
    drop(relay);
}

#[test]
fn tail_survives_a_relay_restart() {
    let rt = rt();
    let (db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
        ],
        "pw",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = RelayToml {
        listen: None,
        url: &url,
        password_env: None,
        server_id: 1001,
        tables: &["orders"],
    }
    .write(dir.path());
    // A fixed port, so that the restarted relay is found at the same address.
    let listen = format!("127.0.0.1:{}", free_port());
    let relay_url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let spawn_relay = || {
        let (relay, _, _) = start_relay(
            databus()
                .arg("relay")
                .arg("--config")
                .arg(&config)
                .args(["--listen", &listen]),
        );
        relay
    };
    let mut relay = spawn_relay();
    wait_streaming(&relay_url, deadline);
    rt.block_on(db.exec(&["INSERT INTO shop.orders VALUES (1, 'before')"]))
        .unwrap();
    let mut tail =
        Killed::spawn_piped(databus().args(["tail", "--relay", &relay_url, "--max-events", "2"]));
    let rx = lines(tail.0.stdout.take().unwrap());
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the first event");
    assert!(first.contains("before"), "{first}");
    // Restart the relay (SIGTERM: it persists its position), then write again.
    assert!(relay.signal("-TERM"));
    relay.wait_until(deadline, "the relay did not stop on SIGTERM");
    let _relay = spawn_relay();
    wait_streaming(&relay_url, deadline);
    rt.block_on(db.exec(&["INSERT INTO shop.orders VALUES (2, 'after')"]))
        .unwrap();
    let second = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the event written after the restart");
    assert!(second.contains("after"), "{second}");
    let status = tail.wait_until(deadline, "tail did not end after 2 events");
    let stderr = tail.stderr_text();
    assert!(status.success(), "{stderr}");
}

#[test]
fn bootstrap_server_runs_from_a_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.toml");
    std::fs::write(&path, "db_path = \"x\"\nbogus = 1\n").unwrap();
    let out = run(databus()
        .arg("bootstrap")
        .arg("server")
        .arg("--config")
        .arg(&path));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("bogus"), "{}", text(&out.stderr));

    let port = free_port();
    let path = BootstrapToml {
        db_file: "boot.sqlite",
        listen: Some(&format!("127.0.0.1:{port}")),
        ..Default::default()
    }
    .write(dir.path(), "bootstrap.toml");
    let mut server = Killed::spawn(
        databus()
            .arg("bootstrap")
            .arg("server")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "the bootstrap server exited"
        );
        assert!(
            Instant::now() < deadline,
            "the bootstrap server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.path().join("boot.sqlite").exists());
    // Prometheus metrics with the documented names (docs/operations.md, "Bootstrap server").
    let metrics = http_get(&format!("127.0.0.1:{port}"), "/metrics").expect("GET /metrics");
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    for name in [
        "databus_bootstrap_log_last_scn",
        "databus_bootstrap_applied_scn",
        "databus_bootstrap_snapshot_rows",
    ] {
        assert!(metrics.contains(name), "{name}: {metrics}");
    }
    assert!(server.signal("-TERM"));
    let status = server.wait_until(deadline, "the bootstrap server did not stop on SIGTERM");
    let stderr = server.stderr_text();
    assert!(status.success(), "{stderr}");
}

#[test]
fn quickstart_keep_running_serves_until_interrupted_then_cleans_up() {
    let mut child = Killed::spawn_piped(databus().args([
        "quickstart",
        "--rows",
        "4",
        "--duration",
        "90s",
        "--keep-running",
    ]));
    // Read stdout until the example commands are printed (the raw stream's is the last).
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(line.clone());
            if !sent && line.contains("databus tail ") {
                let _ = tx.send(lines.clone());
                sent = true;
            }
        }
        lines
    });
    let Ok(lines) = rx.recv_timeout(Duration::from_secs(150)) else {
        let _ = child.0.kill();
        let stderr = child.stderr_text();
        panic!("the quickstart printed no example command: {stderr}");
    };
    let all = lines.join("\n");
    let kept = lines
        .iter()
        .position(|l| l.contains("still running (--keep-running)"))
        .unwrap_or_else(|| panic!("no keep-running section in:\n{all}"));
    let url_after = |label: &str| {
        lines[kept..]
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|r| r.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label} line in:\n{all}"))
    };
    let relay = url_after("relay ");
    let bootstrap = url_after("bootstrap ");
    for example in ["search_indexer", "cache_invalidator", "replica"] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("--example {example} ")))
            .unwrap_or_else(|| panic!("no command for {example} in:\n{all}"));
        assert!(line.contains(&format!("-- --relay {relay} ")), "{line}");
        // The invalidator keeps its checkpoint in Redis, with the cache; the indexer in its index.
        match example {
            "cache_invalidator" => assert!(line.contains("--redis redis://"), "{line}"),
            "search_indexer" => assert!(line.contains("--index "), "{line}"),
            _ => assert!(line.contains("--checkpoint "), "{line}"),
        }
        if example != "cache_invalidator" {
            assert!(
                line.contains(&format!("--bootstrap {bootstrap} ")),
                "{line}"
            );
        }
    }
    let replicate = lines
        .iter()
        .find(|l| l.contains("databus replicate "))
        .unwrap_or_else(|| panic!("no databus replicate command in:\n{all}"));
    assert!(
        replicate.contains(&format!("--relay {relay} --bootstrap {bootstrap} ")),
        "{replicate}"
    );
    assert!(replicate.contains("--password-env "), "{replicate}");
    let dir = all
        .split("data in ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .expect("the quickstart names its data directory")
        .trim()
        .to_owned();
    // The relay and the bootstrap server serve, and the slow workload keeps the relay's SCN growing.
    let max_scn = || {
        let body = http_get_body(&relay, "/v1/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["buffers"][0]["max_scn"].as_u64().unwrap()
    };
    let first = max_scn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while max_scn() <= first {
        assert!(
            Instant::now() < deadline,
            "the relay's SCN stays at {first}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(http_get_body(&bootstrap, "/v1/status").contains("applied_scn"));
    assert!(Path::new(&dir).exists());
    // Ctrl-C: everything stops, the directories go, exit code 0.
    assert!(child.signal("-INT"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = child.wait_until(deadline, "the quickstart did not stop on SIGINT");
    let rest = reader.join().unwrap().join("\n");
    let stderr = child.stderr_text();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(rest.contains("done:"), "{rest}");
    assert!(!Path::new(&dir).exists(), "{dir} was not removed");
}

#[test]
fn bootstrap_seed_shows_progress_and_a_summary() {
    let rt = rt();
    let rows = 20_000u64;
    let (_db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note VARCHAR(64))",
            &format!(
                "INSERT INTO shop.orders SELECT seq, CONCAT('note ', seq) FROM shop.seq_1_to_{rows}"
            ),
            "ANALYZE TABLE shop.orders",
        ],
        "seed-secret-pw",
    );
    let bare = url.replace(":seed-secret-pw@", "@");
    let dir = tempfile::tempdir().unwrap();
    let relay_config = RelayToml {
        listen: Some("127.0.0.1:0"),
        url: &bare,
        password_env: Some("SEED_TEST_PW"),
        server_id: 1002,
        tables: &["orders"],
    }
    .write(dir.path());
    let (_relay, relay_url, _relay_log) = start_relay(
        databus()
            .arg("relay")
            .arg("--config")
            .arg(&relay_config)
            .env("SEED_TEST_PW", "seed-secret-pw"),
    );
    let config = BootstrapToml {
        db_file: "shop.sqlite",
        relay: Some(&relay_url),
        seed_url: Some(&bare),
        seed_password_env: Some("SEED_TEST_PW"),
        chunk_rows: Some(1000),
        ..Default::default()
    }
    .write(dir.path(), "bootstrap.toml");
    // The effective configuration never shows the password.
    let out = run(databus()
        .args(["bootstrap", "seed", "--print-config", "--config"])
        .arg(&config)
        .env("SEED_TEST_PW", "seed-secret-pw"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("chunk_rows = 1000"), "{printed}");
    assert!(
        printed.contains("password_env = \"SEED_TEST_PW\""),
        "{printed}"
    );
    assert!(!printed.contains("seed-secret-pw"), "{printed}");
    // Without the password's variable: a configuration error naming it.
    let out = run(databus()
        .args(["bootstrap", "seed", "--config"])
        .arg(&config)
        .env_remove("SEED_TEST_PW"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("SEED_TEST_PW"),
        "{}",
        text(&out.stderr)
    );

    // stderr is a pipe, not a terminal: one log line per progress tick (every chunk with 0s).
    let out = run_within(
        databus()
            .args(["bootstrap", "seed", "--progress-interval", "0s", "--config"])
            .arg(&config)
            .env("SEED_TEST_PW", "seed-secret-pw"),
        Duration::from_secs(120),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("seed-secret-pw"), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "no terminal redraws in a log: {stderr}"
    );
    // `seeding shop.orders (table 1/1): 3000/20000 rows (15%), 95000 rows/s, ETA 1s`
    let mut done = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("seeding shop.orders")) {
        let counts = line
            .split("(table 1/1): ")
            .nth(1)
            .and_then(|r| r.split(" rows").next())
            .unwrap_or_else(|| panic!("progress line: {line}"));
        let (d, total) = counts.split_once('/').unwrap();
        let (d, total): (u64, u64) = (d.parse().unwrap(), total.parse().unwrap());
        assert!(total >= d, "{line}");
        // InnoDB's estimate after ANALYZE is close to the truth.
        assert!(total <= rows * 2, "{line}");
        let rate: u64 = line
            .split(", ")
            .find(|p| p.ends_with(" rows/s"))
            .and_then(|p| p.trim_end_matches(" rows/s").parse().ok())
            .unwrap_or_else(|| panic!("rate in {line}"));
        assert!(rate > 0, "{line}");
        assert!(line.contains("ETA "), "{line}");
        done.push(d);
    }
    assert!(done.len() >= 10, "one line per 1000-row chunk: {stderr}");
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&rows), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("seeded {rows} rows from 1 table in ")),
        "{stdout}"
    );
    assert!(stdout.contains("rows/s), snapshot at SCN "), "{stdout}");
    // Seeding twice is refused: the file is already seeded.
    let out = run(databus()
        .args(["bootstrap", "seed", "--config"])
        .arg(&config)
        .env("SEED_TEST_PW", "seed-secret-pw"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already seeded"),
        "{}",
        text(&out.stderr)
    );

    // On a terminal (a pty from `script`): one line redrawn in place, ending at the total.
    let config2 = dir.path().join("bootstrap2.toml");
    std::fs::write(
        &config2,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("shop.sqlite", "shop2.sqlite"),
    )
    .unwrap();
    let command = format!(
        "'{}' bootstrap seed --config '{}'",
        env!("CARGO_BIN_EXE_databus"),
        config2.display()
    );
    let out = run_within(
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("SEED_TEST_PW", "seed-secret-pw")
            .env_remove("RUST_LOG"),
        Duration::from_secs(120),
    );
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", text(&out.stderr));
    let redraws: Vec<&str> = screen.split("\r\x1b[2K").skip(1).collect();
    assert!(!redraws.is_empty(), "{screen:?}");
    let last = redraws.last().unwrap();
    assert!(
        last.starts_with(&format!("seeding shop.orders (table 1/1): {rows}/")),
        "{screen:?}"
    );
    assert!(
        screen.contains(&format!("seeded {rows} rows")),
        "{screen:?}"
    );
}

#[test]
fn bootstrap_pins_lists_and_drops_the_retention_pins() {
    use databus_bootstrap::store::{LogStore as _, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("boot.sqlite");
    let config = dir.path().join("bootstrap.toml");
    std::fs::write(
        &config,
        format!("db_path = {:?}\n", db.display().to_string()),
    )
    .unwrap();
    let far = 4_000_000_000_000u64; // Unix ms, in 2096
    {
        let store = SqliteStore::open(&db).unwrap();
        store.pin(databus_core::Scn::new(42), far).unwrap();
        store.pin(databus_core::Scn::new(7), far).unwrap();
    }
    let args = ["bootstrap", "pins", "--config"];
    let out = run(databus().args(args).arg(&config));
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("pin after SCN 7,"), "{listed}");
    assert!(lines[1].starts_with("pin after SCN 42,"), "{listed}");
    let out = run(databus().args(args).arg(&config).arg("--drop"));
    assert!(
        text(&out.stdout).contains("dropped 2 pin(s)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(databus().args(args).arg(&config));
    assert!(
        text(&out.stdout).starts_with("no pins"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(SqliteStore::open(&db).unwrap().min_pin(0).unwrap(), None);
}
