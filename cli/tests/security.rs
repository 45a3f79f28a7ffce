//! Security end to end with the real binary: an in-process upstream relay with TLS and tokens, a
//! `databus relay` process chaining it over https with a token and serving TLS with its own tokens, and
//! `databus tail` / `databus status` with `--ca-cert` and `DATABUS_TOKEN`. Then every output of the
//! processes is searched for the secrets: tokens and a database password never appear.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{databus, rt, run_within, start_relay, text};
use databus_buffer::{BufferConfig, event_buffer};
use databus_core::{EventBuilder, KeyRef, Opcode, Scn, SourceId};
use databus_http::{ClientOptions, HttpClient, Token};
use databus_relay::config::{HttpSettings, RelayHttp, ValidatedTable};
use databus_relay::{RelayService, ServerSecurity, SourceHandle};
use databus_serde_formats::{Column, ColumnType, SchemaRegistry, TableSchema, Value as Cell};

const UPSTREAM_TOKEN: &str = "upstream-token-7f3a";
const RELAY_TOKEN_NEW: &str = "relay-token-new-91c2";
const RELAY_TOKEN_OLD: &str = "relay-token-old-55d0";
const DB_PASSWORD: &str = "db-pass-e1b9";

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn table() -> TableSchema {
    TableSchema {
        database: "shop".into(),
        table: "orders".into(),
        columns: vec![
            Column::new("id", ColumnType::BigInt { unsigned: false }, false),
            Column::new("note", ColumnType::Text { max_chars: None }, true),
        ],
        primary_key: vec![0],
    }
}

#[test]
fn tls_tokens_and_chaining_through_the_binary_leak_no_secret() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());

    // The upstream relay, in process: TLS, one token; 3 windows of 2 rows.
    let registry = Arc::new(SchemaRegistry::in_memory());
    let schema = registry.register(&table()).unwrap();
    let (mut writer, buffer) = event_buffer(BufferConfig::new(4 << 20)).unwrap();
    for scn in 1..=3u64 {
        for i in 0..2 {
            let id = (scn * 10 + i) as i64;
            let mut payload = Vec::new();
            schema
                .encoder
                .encode(
                    &[Cell::Int(id), Cell::Text(format!("row {id}"))],
                    &mut payload,
                )
                .unwrap();
            let event = EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                .source(SourceId::new(1))
                .schema(schema.id)
                .key(KeyRef::Int(id))
                .payload(&payload);
            writer.append(&event).unwrap();
        }
        writer.end_window(Scn::new(scn), scn * 1000).unwrap();
    }
    let service = RelayService::new(
        vec![SourceHandle {
            name: "shop".into(),
            buffer,
            tables: vec![ValidatedTable {
                id: SourceId::new(1),
                name: "orders".into(),
                database: "shop".into(),
                table: "orders".into(),
            }],
            status: Default::default(),
        }],
        registry,
        HttpSettings::defaults::<RelayHttp>(),
        None,
    );
    let security = ServerSecurity::plain()
        .with_tls_files(&cert, &key)
        .unwrap()
        .with_tokens(vec![Token::new(UPSTREAM_TOKEN).unwrap()], false);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let upstream = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(databus_relay::serve_with(
            service,
            listener,
            security,
            shutdown.clone(),
        ));
        addr
    });

    // The relay process: chains the upstream over https with a token; serves TLS with two tokens (a
    // rotation); a second source is a database that is down, configured with a password.
    let tokens = dir.path().join("relay.tokens");
    std::fs::write(&tokens, format!("{RELAY_TOKEN_NEW}\n{RELAY_TOKEN_OLD}\n")).unwrap();
    let config = format!(
        r#"state_dir = {state:?}
[http]
listen = "127.0.0.1:0"
tls = {{ cert = {cert:?}, key = {key:?} }}
auth = {{ tokens_file = {tokens:?} }}

[[sources]]
name = "shop"
upstream = {{ url = "https://127.0.0.1:{port}", ca_cert = {cert:?}, token_env = "UPSTREAM_TOKEN" }}
buffer_size = "4MiB"
tables = [{{ id = 1, name = "orders", table = "shop.orders" }}]

[[sources]]
name = "down"
connector = {{ kind = "mariadb", url = "mysql://repl@127.0.0.1:1", password_env = "DOWN_DB_PASSWORD", server_id = 1001 }}
buffer_size = "1MiB"
tables = [{{ id = 2, name = "things", table = "db.things" }}]
"#,
        state = dir.path().join("state").display().to_string(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
        tokens = tokens.display().to_string(),
        port = upstream.port(),
    );
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();

    let printed = run_within(
        databus()
            .arg("relay")
            .arg("--config")
            .arg(&path)
            .arg("--print-config")
            .env("UPSTREAM_TOKEN", UPSTREAM_TOKEN)
            .env("DOWN_DB_PASSWORD", DB_PASSWORD),
        Duration::from_secs(30),
    );
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let printed = text(&printed.stdout);
    assert!(printed.contains("tokens_file = "), "{printed}");
    assert!(
        printed.contains("token_env = \"UPSTREAM_TOKEN\""),
        "{printed}"
    );

    let (mut relay, url, log) = start_relay(
        databus()
            .arg("--log-level")
            .arg("debug")
            .arg("relay")
            .arg("--config")
            .arg(&path)
            .env("UPSTREAM_TOKEN", UPSTREAM_TOKEN)
            .env("DOWN_DB_PASSWORD", DB_PASSWORD),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // `databus tail` over TLS with the CA and the token from DATABUS_TOKEN: the upstream's rows.
    let out = run_within(
        databus()
            .args([
                "tail",
                "--relay",
                &url,
                "--max-events",
                "6",
                "--sources",
                "1",
            ])
            .arg("--ca-cert")
            .arg(&cert)
            .env("DATABUS_TOKEN", RELAY_TOKEN_OLD),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| l["payload"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [10, 11, 20, 21, 30, 31], "{lines:?}");

    // `databus status` with the other token of the rotation, as a flag.
    let status = run_within(
        databus()
            .args([
                "status",
                "--relay",
                &url,
                "--json",
                "--token",
                RELAY_TOKEN_NEW,
            ])
            .arg("--ca-cert")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status_json = text(&status.stdout);

    // Wrong and missing tokens: exit 2 (usage), a message naming the fix, no retry.
    for token in [Some("not-the-token"), None] {
        let mut cmd = databus();
        cmd.args(["tail", "--relay", &url])
            .arg("--ca-cert")
            .arg(&cert);
        if let Some(t) = token {
            cmd.env("DATABUS_TOKEN", t);
        }
        let out = run_within(&mut cmd, Duration::from_secs(30));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("401") && err.contains("token"), "{err}");
        assert!(!err.contains("not-the-token"), "{err}");
    }
    // Without the CA: the certificate is refused, exit 2.
    let out = run_within(
        databus()
            .args(["status", "--relay", &url])
            .env("DATABUS_TOKEN", RELAY_TOKEN_NEW),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );

    // The status page, metrics and health, as a client with the token sees them; /health is open.
    let (pages, health) = rt.block_on(async {
        let with = HttpClient::new(
            &url,
            &ClientOptions {
                ca_cert: Some(cert.clone()),
                token: Some(Token::new(RELAY_TOKEN_NEW).unwrap()),
            },
        )
        .unwrap();
        let without = HttpClient::new(
            &url,
            &ClientOptions {
                ca_cert: Some(cert.clone()),
                token: None,
            },
        )
        .unwrap();
        let t = Duration::from_secs(10);
        // Wait until the down database's reconnection errors are in the status (and the logs).
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let r = with.get("/v1/status", t, 1 << 20).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if v["buffers"][1]["ingest"]["last_error"].is_string() {
                break text(&r.body);
            }
            assert!(Instant::now() < deadline, "no ingest error shown: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let metrics = with.get("/metrics", t, 1 << 20).await.unwrap();
        let health = without.get("/health", t, 1 << 20).await.unwrap();
        let refused = without.get("/metrics", t, 1 << 20).await.unwrap();
        assert_eq!(refused.status, 401);
        (
            format!("{status}\n{}\n{}", text(&metrics.body), text(&refused.body)),
            health.status,
        )
    });
    assert_eq!(health, 200);

    // Stop the relay and search everything it and the CLI printed or served.
    relay.signal("-TERM");
    let _ = relay.0.wait();
    let log = log.join().unwrap();
    assert!(
        log.contains("source=down"),
        "the down source is logged: {log}"
    );
    let everything = format!("{log}\n{printed}\n{status_json}\n{pages}");
    for secret in [
        UPSTREAM_TOKEN,
        RELAY_TOKEN_NEW,
        RELAY_TOKEN_OLD,
        DB_PASSWORD,
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    shutdown.cancel();
}
