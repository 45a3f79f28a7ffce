//! Scenario 10 on a PostgreSQL target: `databus replicate --to postgres://…`.
//!
//! - MariaDB → PostgreSQL: the change-fidelity workload (key changes on single and composite keys,
//!   TRUNCATE, ALTER ADD/DROP/MODIFY COLUMN, DROP + CREATE, rollbacks, multi-table transactions,
//!   NULLs, DECIMAL/DATE/DATETIME/TIME/ENUM/SET/DOUBLE) runs against the source while the real
//!   replicator process, started from a bootstrap snapshot, is killed with SIGKILL at seeded moments
//!   and restarted; once, instead of a kill, the target PostgreSQL restarts under the running
//!   replicator, which must reconnect and go on. At the end every table is equal row by row: both
//!   sides are read as text and compared value by value (doubles as numbers). `/metrics` shows the
//!   applied windows and the last SCN.
//! - PostgreSQL → PostgreSQL: the PostgreSQL workload (inserts, updates, key changes, deletes, a
//!   TRUNCATE every 23rd transaction) plus `ALTER TABLE … ADD COLUMN` and `ALTER COLUMN … TYPE` at
//!   the source, the same SIGKILLs; at the end both sides' rows are equal (`row_to_json`).
//! - Every MariaDB column type of the model, with extreme values (unsigned maxima, ±838:59:59 TIME,
//!   microsecond DATETIME/TIMESTAMP, NUL bytes in BLOBs, emoji, ENUM/SET/BIT/JSON) and NULLs: the
//!   PostgreSQL types the replica created are the documented ones, and every value reads back the same
//!   (through an expression per type that gives both servers the same text).
//!
//! `DATABUS_REPLICATE_SEED=<n>` picks the seed (default 10), `DATABUS_REPLICATE_STEPS=<n>` the
//! workload steps (default 300).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use databus_integration::faults::SeededRng;
use databus_integration::fidelity::{self, FidelityWorkload};
use databus_integration::pg::{PgWorkload, pg_rows};
use databus_integration::process::free_port;
use databus_integration::workload::TXLOG;
use databus_integration::*;
use databus_testkit::Postgres;
use mysql_async::prelude::Queryable;

const TARGET_PASSWORD_ENV: &str = "DATABUS_E2E_TARGET_PASSWORD";
const TARGET_PASSWORD: &str = "replica-pw";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A private PostgreSQL target with a role `replica` that may create schemas and tables in
/// database `postgres` (not a superuser).
async fn pg_target() -> Result<Postgres> {
    let pg = Postgres::start().await?;
    pg.exec(&[
        &format!("CREATE ROLE replica LOGIN PASSWORD '{TARGET_PASSWORD}'"),
        "GRANT CREATE ON DATABASE postgres TO replica",
        "GRANT ALL ON SCHEMA public TO replica",
    ])
    .await?;
    Ok(pg)
}

/// The `databus replicate` command line against `target`.
fn replicate_args(
    relay: &str,
    boot: &str,
    target: &Postgres,
    once: bool,
    metrics: Option<u16>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "replicate".into(),
        "--relay".into(),
        relay.into(),
        "--bootstrap".into(),
        boot.into(),
        "--to".into(),
        format!("postgres://replica@127.0.0.1:{}/postgres", target.port()).into(),
        "--password-env".into(),
        TARGET_PASSWORD_ENV.into(),
        "--progress-every".into(),
        "1s".into(),
    ];
    if once {
        args.push("--once".into());
    }
    if let Some(port) = metrics {
        args.push("--metrics-listen".into());
        args.push(format!("127.0.0.1:{port}").into());
    }
    args
}

fn envs() -> Vec<(String, String)> {
    vec![
        (TARGET_PASSWORD_ENV.to_owned(), TARGET_PASSWORD.to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]
}

/// A table as `key → column → text value` (NULL: `None`).
type TextRows = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn key_of(row: &BTreeMap<String, Option<String>>, key: &[&str]) -> Result<String> {
    let parts: Result<Vec<String>> = key
        .iter()
        .map(|k| {
            row.get(*k)
                .cloned()
                .flatten()
                .with_context(|| format!("row without key column {k}: {row:?}"))
        })
        .collect();
    Ok(parts?.join("\u{1f}"))
}

/// Every row of a MariaDB table, as MariaDB's text protocol renders each value.
async fn mariadb_rows(conn: &mut mysql_async::Conn, table: &str, key: &[&str]) -> Result<TextRows> {
    let rows: Vec<mysql_async::Row> = conn.query(format!("SELECT * FROM {table}")).await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let mut values = BTreeMap::new();
        for (i, column) in row.columns_ref().iter().enumerate() {
            let value = match row.as_ref(i) {
                None | Some(mysql_async::Value::NULL) => None,
                Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8(b.clone())?),
                Some(other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
            };
            values.insert(column.name_str().into_owned(), value);
        }
        out.insert(key_of(&values, key)?, values);
    }
    Ok(out)
}

/// Every row of a PostgreSQL table, as PostgreSQL's text output renders each value.
async fn postgres_rows(
    client: &tokio_postgres::Client,
    table: &str,
    key: &[&str],
) -> Result<TextRows> {
    let (schema, name) = table.split_once('.').context("database.table")?;
    let messages = client
        .simple_query(&format!("SELECT * FROM \"{schema}\".\"{name}\""))
        .await
        .with_context(|| format!("reading {table} from the target"))?;
    let mut out = BTreeMap::new();
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let mut values = BTreeMap::new();
            for (i, column) in r.columns().iter().enumerate() {
                values.insert(column.name().to_owned(), r.get(i).map(str::to_owned));
            }
            out.insert(key_of(&values, key)?, values);
        }
    }
    Ok(out)
}

/// Two renderings of one value agree: the same text, or (a double, whose text differs between
/// MariaDB and PostgreSQL) the same number.
fn same_value(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a != b => {
            let exponent = |s: &str| s.contains(['e', 'E']);
            (exponent(a) || exponent(b))
                && matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
        }
        _ => a == b,
    }
}

/// Compares a source and a replica table row by row and value by value.
fn compare(table: &str, source: &TextRows, replica: &TextRows) -> Result<()> {
    let missing: Vec<&String> = source
        .keys()
        .filter(|k| !replica.contains_key(*k))
        .collect();
    let extra: Vec<&String> = replica
        .keys()
        .filter(|k| !source.contains_key(*k))
        .collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "{table}: keys missing from the replica {missing:?}, keys only in the replica {extra:?}"
    );
    for (key, want) in source {
        let got = &replica[key];
        ensure!(
            want.keys().eq(got.keys()),
            "{table} key {key}: columns {:?} at the source, {:?} in the replica",
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        );
        for (column, value) in want {
            ensure!(
                same_value(value, &got[column]),
                "{table} key {key} column {column}: {value:?} at the source, {:?} in the replica",
                got[column]
            );
        }
    }
    Ok(())
}

/// The replicator's `/metrics` text.
async fn metrics_text(port: u16) -> Result<String> {
    let (status, body) = http::get(
        &format!("http://127.0.0.1:{port}"),
        "/metrics",
        Duration::from_secs(5),
    )
    .await?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(String::from_utf8(body)?)
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres_survives_sigkill_and_a_target_restart_and_ends_equal() -> Result<()> {
    let seed = env_or("DATABUS_REPLICATE_SEED", 10);
    let steps = env_or("DATABUS_REPLICATE_STEPS", 300) as usize;
    let source =
        databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    source.exec(fidelity::SCHEMA).await?;
    let url = source.create_user_with_grants("repl", "repl-pw").await?;
    let mut target = pg_target().await?;
    let mut relay = Relay::start(RelaySpec {
        source: RelaySource::Database {
            url,
            server_id: 1001,
        },
        tables: fidelity::tables(),
        buffer_size: "8MiB".into(),
    })
    .await?;
    let mut boot = BootstrapServer::start(&relay.url(), None).await?;

    let mut work = FidelityWorkload::new(seed);
    let mut conn = source.root_conn().await?;
    work.run(&mut conn, steps / 4).await?;
    let scn = source_scn(&mut conn).await?;
    boot.wait_applied(scn, Duration::from_secs(120)).await?;

    let dir = tempfile::tempdir()?;
    let metrics_port = free_port()?;
    let (relay_url, boot_url) = (relay.url(), boot.url());
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        replicate_args(&relay_url, &boot_url, &target, false, Some(metrics_port)),
        envs(),
        dir.path(),
    )?;

    // The rest of the workload in chunks; after each, the replicator is killed at a seeded moment
    // and started again, but once the target restarts under it instead.
    let mut rng = SeededRng::new(seed);
    let mut done = steps / 4;
    let mut kills = 0;
    let mut restarted = false;
    while done < steps {
        let chunk = (rng.range(10, 40) as usize).min(steps - done);
        work.run(&mut conn, chunk).await?;
        done += chunk;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 800))).await;
        replicator.ensure_running()?;
        if !restarted && done >= steps / 2 {
            restarted = true;
            // The replicator is connected and has applied everything the relay holds: the restart
            // breaks a live connection.
            let scn = source_scn(&mut conn).await?;
            relay.wait_scn(scn, Duration::from_secs(60)).await?;
            let relay_max = relay.status().await?["max_scn"].as_u64().unwrap_or(0);
            wait_for(
                "the replicator to apply what the relay holds",
                Duration::from_secs(120),
                || {
                    let running = replicator.ensure_running();
                    let read = target
                        .query_string("SELECT scn::text FROM databus.databus_replica_checkpoint");
                    async move {
                        running?;
                        let at = read
                            .await
                            .ok()
                            .flatten()
                            .and_then(|s| s.parse::<u64>().ok());
                        Ok(at.filter(|at| *at >= relay_max).map(|_| ()))
                    }
                },
            )
            .await?;
            target.restart().await?;
            // The replicator reconnects and applies what the source writes meanwhile.
            work.run(&mut conn, 20).await?;
            done += 20;
            let scn = source_scn(&mut conn).await?;
            relay.wait_scn(scn, Duration::from_secs(60)).await?;
            wait_for(
                "the replicator to apply past the target restart",
                Duration::from_secs(120),
                || {
                    let running = replicator.ensure_running();
                    let log = replicator.log();
                    async move {
                        running?;
                        Ok(log
                            .contains("target connection lost; reconnecting")
                            .then_some(()))
                    }
                },
            )
            .await?;
            continue;
        }
        replicator.kill9();
        kills += 1;
        replicator.respawn()?;
    }
    // The replica follows a schema change with the first row written in it: one row in each table
    // after the workload's last DDL.
    conn.query_drop("INSERT INTO fid.single (id) VALUES (1000000)")
        .await?;
    conn.query_drop("INSERT INTO fid.composite (a, b) VALUES (1000000, 'end')")
        .await?;
    let end = source_scn(&mut conn).await?;
    relay.wait_scn(end, Duration::from_secs(60)).await?;
    // The running replicator reaches the end; its /metrics say so.
    wait_for(
        "the replicator's /metrics to show the last SCN",
        Duration::from_secs(120),
        || {
            let running = replicator.ensure_running();
            async move {
                running?;
                let text = metrics_text(metrics_port).await.unwrap_or_default();
                Ok(
                    (metric(&text, "databus_replicate_last_scn") == Some(end as f64))
                        .then_some(text),
                )
            }
        },
    )
    .await
    .map(|text| {
        assert!(
            metric(&text, "databus_replicate_windows_total").unwrap_or(0.0) >= 1.0,
            "/metrics counts applied windows:\n{text}"
        );
        assert!(text.contains("databus_replicate_lag_seconds"), "{text}");
    })?;
    replicator.kill9();
    kills += 1;

    let mut last = Proc::spawn(
        "replicate-once",
        databus_bin()?,
        replicate_args(&relay_url, &boot_url, &target, true, None),
        envs(),
        dir.path(),
    )?;
    let status = wait_for("replicate --once to exit", Duration::from_secs(180), || {
        let status = last.exited();
        async move { Ok(status) }
    })
    .await?;
    if !status.success() {
        bail!(
            "replicate --once failed ({status}):\n{}\nearlier runs:\n{}",
            last.log_tail(),
            replicator.log_tail()
        );
    }

    let stats = work.stats();
    eprintln!("seed {seed}, {steps} steps, {kills} kills, a target restart: {stats:?}");
    assert!(kills >= 3, "the replicator was killed several times");
    if steps >= 300 {
        assert!(
            stats.key_changes > 0
                && stats.composite_key_changes > 0
                && stats.truncates > 0
                && stats.alters > 0
                && stats.drop_creates > 0,
            "the workload made every kind of change: {stats:?}"
        );
    }
    let log = replicator.log();
    assert!(
        log.contains("full snapshot"),
        "started from a snapshot:\n{log}"
    );
    assert!(log.contains("resuming from the target's checkpoint"));
    let client = target.client().await?;
    for (_, table, key) in fidelity::TABLES {
        let want = mariadb_rows(&mut conn, table, key).await?;
        let got = postgres_rows(&client, table, key).await?;
        ensure!(!want.is_empty(), "{table} has rows at the source");
        compare(table, &want, &got)?;
        eprintln!("{table}: {} rows equal on both sides", want.len());
    }
    let checkpoint = target
        .query_string(
            "SELECT scn::text FROM databus.databus_replica_checkpoint WHERE replica = 'replica'",
        )
        .await?;
    assert_eq!(
        checkpoint,
        Some(end.to_string()),
        "the checkpoint is the last window's"
    );
    Ok(())
}

const PG_SLOT: &str = "databus_rep";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres_survives_sigkill_and_ends_equal() -> Result<()> {
    let seed = env_or("DATABUS_REPLICATE_SEED", 10);
    let transactions = env_or("DATABUS_REPLICATE_STEPS", 300) as usize;
    let source = Postgres::start().await?;
    source.exec(databus_integration::pg::SCHEMA).await?;
    source
        .exec(&[
            &format!("CREATE PUBLICATION {PG_SLOT} FOR TABLE public.acct, public.txlog"),
            "CREATE ROLE capture LOGIN REPLICATION PASSWORD 'capture-pw'",
            "GRANT SELECT ON public.acct, public.txlog TO capture",
        ])
        .await?;
    let target = pg_target().await?;
    let relay = Relay::start(RelaySpec {
        source: RelaySource::Postgres {
            host: "127.0.0.1".into(),
            port: source.port(),
            user: "capture".into(),
            password: "capture-pw".into(),
            database: "postgres".into(),
            slot: PG_SLOT.into(),
        },
        tables: vec![
            TableSpec {
                id: 1,
                name: "acct".into(),
                table: "public.acct".into(),
            },
            TableSpec {
                id: TXLOG,
                name: "txlog".into(),
                table: "public.txlog".into(),
            },
        ],
        buffer_size: "8MiB".into(),
    })
    .await?;
    let boot = BootstrapServer::start(&relay.url(), None).await?;

    let mut work = PgWorkload::new(seed);
    let writer = source.client().await?;
    work.run_on(&writer, transactions / 4).await?;

    let dir = tempfile::tempdir()?;
    let (relay_url, boot_url) = (relay.url(), boot.url());
    let mut replicator = Proc::spawn(
        "replicate",
        databus_bin()?,
        replicate_args(&relay_url, &boot_url, &target, false, None),
        envs(),
        dir.path(),
    )?;
    let mut rng = SeededRng::new(seed);
    let mut done = transactions / 4;
    let mut kills = 0;
    let mut altered = 0;
    while done < transactions {
        let chunk = (rng.range(10, 40) as usize).min(transactions - done);
        work.run_on(&writer, chunk).await?;
        done += chunk;
        // Schema changes at the source: a new column (written by the next updates), then a type
        // change of a column.
        if altered == 0 && done >= transactions / 2 {
            writer
                .batch_execute(
                    "ALTER TABLE public.acct ADD COLUMN extra integer; \
                     UPDATE public.acct SET extra = id * 2 WHERE id % 3 = 0",
                )
                .await?;
            altered += 1;
        } else if altered == 1 && done >= transactions * 3 / 4 {
            writer
                .batch_execute(
                    "ALTER TABLE public.acct ALTER COLUMN balance TYPE numeric(20,2); \
                     UPDATE public.acct SET balance = balance + 0.25 WHERE id % 2 = 0",
                )
                .await?;
            altered += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 800))).await;
        replicator.ensure_running()?;
        replicator.kill9();
        kills += 1;
        replicator.respawn()?;
    }
    // The last transaction's txlog row in the target: everything before it was applied (it commits
    // in the same target transaction as its window's other rows, after every earlier window).
    let last_seq = work.seq;
    wait_for(
        "the replica to apply the last transaction",
        Duration::from_secs(180),
        || {
            let running = replicator.ensure_running();
            let read = target.query_string("SELECT max(seq)::text FROM public.txlog");
            async move {
                running?;
                let seq = read.await.ok().flatten();
                Ok((seq == Some(last_seq.to_string())).then_some(()))
            }
        },
    )
    .await
    .with_context(|| format!("replicate log:\n{}", replicator.log_tail()))?;
    replicator.terminate(Duration::from_secs(30)).await?;

    eprintln!("seed {seed}, {transactions} transactions, {kills} kills, {altered} ALTERs");
    assert!(kills >= 3 && altered == 2);
    let log = replicator.log();
    assert!(
        log.contains("full snapshot"),
        "started from a snapshot:\n{log}"
    );
    assert!(log.contains("followed a schema change"), "{log}");
    for (table, key) in [("public.acct", "id"), ("public.txlog", "seq")] {
        let want = pg_rows(&source, table, key).await?;
        let got = pg_rows(&target, table, key).await?;
        // `acct` may end empty (a TRUNCATE every 23rd transaction, deletes after it); `txlog` has
        // one row per transaction.
        ensure!(
            table != "public.txlog" || want.len() == last_seq as usize,
            "{table} has a row per transaction at the source"
        );
        ensure!(
            want == got,
            "{table}: the replica differs from the source ({} rows vs {})",
            want.len(),
            got.len()
        );
        eprintln!("{table}: {} rows equal on both sides", want.len());
    }
    let column_type = target
        .query_string(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'public.acct'::regclass AND attname = 'balance'",
        )
        .await?;
    assert_eq!(column_type.as_deref(), Some("numeric(20,2)"));
    Ok(())
}

/// Every MariaDB column type the model has, with extreme values, and how to read it as comparable
/// text on each side: `(name, MariaDB type, MariaDB read expression, PostgreSQL read expression)`.
const TYPED_COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("ti", "TINYINT", "CAST(ti AS CHAR)", "ti::text"),
    ("tiu", "TINYINT UNSIGNED", "CAST(tiu AS CHAR)", "tiu::text"),
    ("si", "SMALLINT UNSIGNED", "CAST(si AS CHAR)", "si::text"),
    ("mi", "MEDIUMINT", "CAST(mi AS CHAR)", "mi::text"),
    (
        "miu",
        "MEDIUMINT UNSIGNED",
        "CAST(miu AS CHAR)",
        "miu::text",
    ),
    ("iu", "INT UNSIGNED", "CAST(iu AS CHAR)", "iu::text"),
    ("bi", "BIGINT", "CAST(bi AS CHAR)", "bi::text"),
    ("biu", "BIGINT UNSIGNED", "CAST(biu AS CHAR)", "biu::text"),
    (
        "dec",
        "DECIMAL(30,10)",
        "CAST(`dec` AS CHAR)",
        "\"dec\"::text",
    ),
    // Floats are compared as numbers (the two servers print them differently).
    ("f", "FLOAT", "CAST(f AS DOUBLE)", "f::float8::text"),
    ("d", "DOUBLE", "d", "d::text"),
    ("dt", "DATE", "CAST(dt AS CHAR)", "dt::text"),
    (
        "tm",
        "TIME(6)",
        "CAST(TIME_TO_SEC(tm) * 1000000 AS SIGNED)",
        "(extract(epoch from tm) * 1000000)::bigint::text",
    ),
    (
        "dtm",
        "DATETIME(6)",
        "DATE_FORMAT(dtm, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(dtm, 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    (
        "ts",
        "TIMESTAMP(6) NULL",
        "CAST(UNIX_TIMESTAMP(ts) * 1000000 AS SIGNED)",
        "(extract(epoch from ts) * 1000000)::bigint::text",
    ),
    ("y", "YEAR", "CAST(y AS CHAR)", "y::text"),
    ("c", "CHAR(4)", "c", "c"),
    ("v", "VARCHAR(10)", "v", "v"),
    ("tx", "TEXT", "tx", "tx"),
    ("vb", "VARBINARY(8)", "HEX(vb)", "upper(encode(vb, 'hex'))"),
    ("bl", "BLOB", "HEX(bl)", "upper(encode(bl, 'hex'))"),
    ("e", "ENUM('red','it''s')", "e", "e"),
    ("s", "SET('x','y','z')", "s", "s"),
    ("bt", "BIT(5)", "LPAD(BIN(bt), 5, '0')", "bt::text"),
    // JSON is compared as parsed JSON (jsonb normalizes spacing and key order).
    ("j", "JSON", "j", "j::text"),
];

/// The PostgreSQL types the replica must have created, in `TYPED_COLUMNS` order.
const PG_TYPES: &[&str] = &[
    "smallint",
    "smallint",
    "integer",
    "integer",
    "integer",
    "bigint",
    "bigint",
    "numeric(20,0)",
    "numeric(30,10)",
    "real",
    "double precision",
    "date",
    "interval(6)",
    "timestamp(6) without time zone",
    "timestamp(6) with time zone",
    "smallint",
    "character varying(4)",
    "character varying(10)",
    "text",
    "bytea",
    "bytea",
    "text",
    "text",
    "bit(5)",
    "jsonb",
];

const TYPED_ROWS: &[&str] = &[
    "(1, -128, 255, 65535, -8388608, 16777215, 4294967295, -9223372036854775808, \
     18446744073709551615, '-12345678901234567890.0123456789', 3.4028234e38, -2.2250738585072014e-308, \
     '1000-01-01', '-838:59:59.000000', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', \
     2155, 'ab', 'it''s \\\\ é', 'long text ✓ 😀', X'00FF10', X'DEADBEEF00', 'it''s', 'x,z', b'10101', \
     '{\"b\": [1, 2.5, null], \"a\": \"q\\\\\"x\"}')",
    "(2, 127, 0, 0, 8388607, 0, 0, 9223372036854775807, 0, '0.0000000001', -1.17549435e-38, \
     0.1, '2026-02-28', '838:59:59.999999', '1970-01-01 00:00:00.000001', '1970-01-01 00:00:01', \
     1901, '', '', '', X'', X'', 'red', '', b'00000', '[]')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mariadb_type_arrives_in_postgresql_with_its_value() -> Result<()> {
    let source =
        databus_testkit::MariaDb::start(databus_testkit::MariaDbOptions::default()).await?;
    let columns: Vec<String> = TYPED_COLUMNS
        .iter()
        .map(|(name, ty, _, _)| format!("`{name}` {ty}"))
        .collect();
    source
        .exec(&[
            "CREATE DATABASE ty CHARACTER SET utf8mb4",
            &format!(
                "CREATE TABLE ty.all_types (id INT PRIMARY KEY, {})",
                columns.join(", ")
            ),
        ])
        .await?;
    let url = source.create_user_with_grants("repl", "repl-pw").await?;
    let target = pg_target().await?;
    let mut relay = Relay::start(RelaySpec {
        source: RelaySource::Database {
            url,
            server_id: 1001,
        },
        tables: vec![TableSpec {
            id: 1,
            name: "all_types".into(),
            table: "ty.all_types".into(),
        }],
        buffer_size: "8MiB".into(),
    })
    .await?;
    let mut conn = source.root_conn().await?;
    conn.query_drop("SET time_zone = '+00:00'").await?;
    for row in TYPED_ROWS {
        conn.query_drop(format!("INSERT INTO ty.all_types VALUES {row}"))
            .await?;
    }
    let end = source_scn(&mut conn).await?;
    relay.wait_scn(end, Duration::from_secs(60)).await?;

    let dir = tempfile::tempdir()?;
    let mut args = replicate_args(&relay.url(), "", &target, true, None);
    args.drain(3..5); // no --bootstrap: the relay holds every change since the table was created
    let mut once = Proc::spawn("replicate", databus_bin()?, args, envs(), dir.path())?;
    let status = wait_for("replicate --once to exit", Duration::from_secs(120), || {
        let status = once.exited();
        async move { Ok(status) }
    })
    .await?;
    ensure!(status.success(), "replicate failed:\n{}", once.log_tail());

    let client = target.client().await?;
    let types = client
        .simple_query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'ty.all_types'::regclass AND attnum > 1 ORDER BY attnum",
        )
        .await?;
    let got_types: Vec<String> = types
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(got_types, PG_TYPES, "the replica's column types");

    let my_exprs: Vec<&str> = TYPED_COLUMNS.iter().map(|c| c.2).collect();
    let pg_exprs: Vec<&str> = TYPED_COLUMNS.iter().map(|c| c.3).collect();
    let source_rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT id, {} FROM ty.all_types ORDER BY id",
            my_exprs.join(", ")
        ))
        .await?;
    let replica_rows = client
        .simple_query(&format!(
            "SELECT id::text, {} FROM ty.all_types ORDER BY id",
            pg_exprs.join(", ")
        ))
        .await?;
    let replica_rows: Vec<Vec<Option<String>>> = replica_rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(replica_rows.len(), TYPED_ROWS.len(), "every row replicated");
    for (source_row, replica_row) in source_rows.iter().zip(&replica_rows) {
        let id = replica_row[0].clone().unwrap_or_default();
        for (i, (name, ty, _, _)) in TYPED_COLUMNS.iter().enumerate() {
            let want = match source_row.as_ref(i + 1) {
                None | Some(mysql_async::Value::NULL) => None,
                Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8(b.clone())?),
                Some(other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
            };
            let got = replica_row[i + 1].clone();
            let equal = match (&want, &got) {
                (Some(w), Some(g)) if *ty == "JSON" => {
                    serde_json::from_str::<serde_json::Value>(w)?
                        == serde_json::from_str::<serde_json::Value>(g)?
                }
                (Some(w), Some(g)) if matches!(*ty, "FLOAT" | "DOUBLE") => {
                    w.parse::<f64>()? == g.parse::<f64>()?
                }
                _ => want == got,
            };
            assert!(
                equal,
                "row {id} column {name} ({ty}): {want:?} at the source, {got:?} in the replica"
            );
        }
    }
    eprintln!(
        "{} rows × {} typed columns equal",
        replica_rows.len(),
        TYPED_COLUMNS.len()
    );
    Ok(())
}
