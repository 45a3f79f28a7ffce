//! `databus tail --bootstrap` with the real binary against a real MariaDB, a relay process and an
//! all-in-one bootstrap server process (seeded from the database); and one exit code per class.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    BootstrapToml, Killed, RelayToml, databus, free_port, get_json, lines, mariadb_with_repl, rt,
    run, text, wait_streaming,
};
use serde_json::Value;

#[test]
fn tail_through_bootstrap_marks_snapshot_rows_then_live_changes() {
    let rt = rt();
    // Rows written before the relay starts: only a snapshot has them.
    let (db, url) = mariadb_with_repl(
        &rt,
        &[
            "CREATE DATABASE shop",
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(32))",
            "INSERT INTO shop.orders VALUES (1, 'apple'), (2, 'pear'), (3, 'fig')",
        ],
        "boot-secret-pw",
    );
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let relay_toml = RelayToml {
        listen: Some(&format!("127.0.0.1:{relay_port}")),
        url: &url.replace(":boot-secret-pw@", "@"),
        password_env: Some("BOOT_TEST_PW"),
        server_id: 1002,
        tables: &["orders"],
    }
    .write(dir.path());
    let _relay = Killed::spawn(
        databus()
            .arg("relay")
            .arg("--config")
            .arg(&relay_toml)
            .env("BOOT_TEST_PW", "boot-secret-pw")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_streaming(&relay_url, deadline);

    let boot_port = free_port();
    let boot_addr = format!("127.0.0.1:{boot_port}");
    let boot_toml = BootstrapToml {
        db_file: "boot.sqlite",
        relay: Some(&relay_url),
        listen: Some(&boot_addr),
        seed_url: Some(&db.url()),
        ..Default::default()
    }
    .write(dir.path(), "bootstrap.toml");
    let _bootstrap = Killed::spawn(
        databus()
            .args(["bootstrap", "all", "--config"])
            .arg(&boot_toml)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    while get_json(&boot_addr, "/v1/status").is_none_or(|v| v["seeded"] != true) {
        assert!(
            Instant::now() < deadline,
            "the bootstrap server never seeded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let boot_url = format!("http://127.0.0.1:{boot_port}");
    let mut tail = Killed::spawn_piped(databus().args([
        "tail",
        "--relay",
        &relay_url,
        "--bootstrap",
        &boot_url,
        "--from",
        "snapshot",
        "--max-events",
        "4",
    ]));
    let out = lines(tail.0.stdout.take().unwrap());
    let err = lines(tail.0.stderr.take().unwrap());
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = out
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("3 snapshot rows never came; got {events:?}"));
        events.push(serde_json::from_str(&line).expect("each line is JSON"));
    }
    // The source is idle: tail still says when the snapshot is done and when it is caught up,
    // without waiting for a next window.
    let mut stderr: Vec<String> = Vec::new();
    while !(stderr.iter().any(|l| l.contains("snapshot done, 3 rows"))
        && stderr
            .iter()
            .any(|l| l.contains("bootstrap: caught up at SCN")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = err
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no snapshot-done and caught-up lines; got {stderr:?}"));
        stderr.push(line);
    }
    // The snapshot was read; a change written now is a change, not a snapshot row.
    rt.block_on(db.exec(&["INSERT INTO shop.orders VALUES (4, 'kiwi')"]))
        .unwrap();
    let left = deadline.saturating_duration_since(Instant::now());
    let line = out.recv_timeout(left).expect("the live change never came");
    events.push(serde_json::from_str(&line).unwrap());
    let status = tail.wait_until(deadline, "tail did not end after 4 events");
    stderr.extend(err.try_iter());
    assert!(status.success(), "{stderr:?}");
    assert!(out.try_iter().next().is_none(), "more than 4 lines");

    let mut snapshot: Vec<(i64, &str, &str)> = events[..3]
        .iter()
        .map(|e| {
            (
                e["key"].as_i64().unwrap(),
                e["payload"]["item"].as_str().unwrap(),
                e["phase"].as_str().unwrap(),
            )
        })
        .collect();
    snapshot.sort();
    assert_eq!(
        snapshot,
        [
            (1, "apple", "snapshot"),
            (2, "pear", "snapshot"),
            (3, "fig", "snapshot")
        ]
    );
    let live = &events[3];
    assert_eq!(live["key"], 4, "{live}");
    assert_eq!(live["opcode"], "upsert", "{live}");
    assert_eq!(live["payload"]["item"], "kiwi", "{live}");
    assert!(
        live["phase"] == "online" || live["phase"] == "catchup",
        "{live}"
    );
    assert!(events.iter().all(|e| e["source"] == 1));
    // Progress on stderr: the snapshot phase and its row count.
    let stderr = stderr.join("\n");
    assert!(
        stderr.contains("bootstrap: reading a snapshot from the bootstrap server"),
        "{stderr}"
    );
    assert!(stderr.contains("snapshot done, 3 rows"), "{stderr}");
    assert!(!stderr.contains("boot-secret-pw"), "{stderr}");

    // From an SCN the relay holds: live changes only, marked online.
    let scn = live["scn"].as_u64().unwrap();
    let out = run(databus().args([
        "tail",
        "--relay",
        &relay_url,
        "--bootstrap",
        &boot_url,
        "--from",
        &format!("scn:{scn}"),
        "--max-events",
        "1",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&line["key"], &line["phase"], line["scn"].as_u64()),
        (&Value::from(4), &Value::from("online"), Some(scn)),
        "{line}"
    );

    // The bootstrap server's status page in headless Chromium: the log and snapshot SCNs of what
    // it copied from the relay (the live row's SCN once applied).
    while get_json(&boot_addr, "/v1/status").is_none_or(|v| v["applied_scn"] != scn) {
        assert!(
            Instant::now() < deadline,
            "the bootstrap server never applied {scn}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = get_json(&boot_addr, "/v1/status").unwrap();
    let dom = databus_testkit::chromium::dump_dom(&format!("{boot_url}/"), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dom.contains("<title>databus bootstrap server</title>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<td id=\"applied-scn\">{scn}</td>")),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            ">{}..={scn}</td>",
            st["log_first_scn"].as_u64().expect("the log holds windows")
        )),
        "{dom}"
    );
    assert!(
        dom.contains("<td id=\"applier-lag\">caught up</td>"),
        "{dom}"
    );
    assert!(dom.contains("<td>orders</td>"), "{dom}");
    assert!(dom.contains("<td id=\"health-status\">ok</td>"), "{dom}");

    // `databus status --bootstrap`: health first, then each role's report.
    let out = run(databus().args(["status", "--bootstrap", &boot_url]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("  health      ok\n"), "{stdout}");
    assert!(stdout.contains("  producer    running"), "{stdout}");
    assert!(stdout.contains("  applier     running"), "{stdout}");
    assert!(stdout.contains(&format!("..={scn}")), "{stdout}");
}

/// One exit code per class (3, "check-source found settings to fix", is checked against a real
/// MariaDB with binlog_format=STATEMENT in tests/cli.rs).
#[test]
fn exit_codes_by_class() {
    // 0: success.
    let out = run(databus().args(["tail", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--bootstrap <URL>"));

    // 2: usage. --from needs --bootstrap; a bad --from value names what is accepted.
    let out = run(databus().args(["tail", "--from", "scn:5"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(databus().args([
        "tail",
        "--bootstrap",
        "http://127.0.0.1:1",
        "--from",
        "yesterday",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("use snapshot or scn:N"),
        "{}",
        text(&out.stderr)
    );
    let out = run(databus().args([
        "tail",
        "--relay",
        "127.0.0.1:1",
        "--bootstrap",
        "http://127.0.0.1:1",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("\"127.0.0.1:1\" has no scheme; write http://host:port"),
        "{}",
        text(&out.stderr)
    );

    // 1: runtime. The bootstrap server's address is taken: the cause once, then the fix.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = BootstrapToml {
        db_file: "boot.sqlite",
        listen: Some(&format!("127.0.0.1:{port}")),
        ..Default::default()
    }
    .write(dir.path(), "bootstrap.toml");
    let out = run(databus()
        .args(["bootstrap", "server", "--config"])
        .arg(&path));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("  fix: another process listens on that address"),
        "{stderr}"
    );
    // 1: runtime. Nothing listens where the relay should be.
    drop(taken);
    let out = run(databus().args([
        "tail",
        "--relay",
        &format!("http://127.0.0.1:{port}"),
        "--bootstrap",
        &format!("http://127.0.0.1:{port}"),
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("caused by: Connection refused"), "{stderr}");
}
