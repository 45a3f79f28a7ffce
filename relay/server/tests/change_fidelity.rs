//! Change-stream fidelity against a real MariaDB: every change a ROW-format source can make reaches
//! consumers in a form they can apply by key — key changes (a delete of the old key and an upsert of the
//! new one in one window, each routed by its own key through partition filters), TRUNCATE, DROP and
//! schema changes as table events.

use crate::common;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use common::{Relay, enc, wait_streaming};
use databus_core::{Checkpoint, Event, Key, Opcode, Scn};
use databus_testkit::{MariaDb, MariaDbOptions};
use tokio::time::Instant;

async fn start_relay(db: &MariaDb, state_dir: &Path, password_file: &Path, extra: &str) -> Relay {
    let url = format!(
        "mysql://relay@127.0.0.1:{}/?max_allowed_packet=1073741824&prefer_socket=false",
        db.port()
    );
    let relay = Relay::from_toml(&format!(
        r#"
state_dir = {state:?}
[http]
max_wait = "30s"
[[sources]]
name = "shop"
connector = {{ kind = "mariadb", url = {url:?}, password_file = {pw:?}, server_id = 4243 }}
buffer_size = "8MiB"
{extra}
tables = [
    {{ id = 1, name = "t", table = "shop.t" }},
    {{ id = 2, name = "u", table = "shop.u" }},
]
"#,
        state = state_dir.display().to_string(),
        pw = password_file.display().to_string(),
    ))
    .await;
    wait_streaming(relay.addr, Instant::now() + Duration::from_secs(60)).await;
    relay
}

/// Every event after `cp` until `windows` windows (heartbeats included) have been seen.
async fn follow(addr: SocketAddr, mut cp: Checkpoint, extra: &str, windows: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events: Vec<Event> = Vec::new();
    while events
        .iter()
        .filter(|e| e.opcode.is_end_of_window())
        .count()
        < windows
    {
        assert!(Instant::now() < deadline, "timed out; got {events:?}");
        let resp = common::get(
            addr,
            &format!(
                "/v1/stream?wait_ms=5000{extra}&checkpoint={}",
                enc(&cp.to_json())
            ),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        events.extend(resp.events());
        cp = resp.checkpoint();
    }
    events
}

fn data(events: &[Event]) -> Vec<(u64, u16, Opcode, Key)> {
    events
        .iter()
        .filter(|e| !e.opcode.is_control())
        .map(|e| (e.scn.get(), e.source.get(), e.opcode, e.key.clone()))
        .collect()
}

struct Setup {
    db: MariaDb,
    relay: Relay,
    start: Checkpoint,
    start_scn: u64,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with("").await
}

async fn setup_with(extra: &str) -> Setup {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.exec(&[
        "CREATE DATABASE shop",
        "CREATE TABLE shop.t (id BIGINT PRIMARY KEY, v VARCHAR(16))",
        "CREATE TABLE shop.u (a INT, b INT, v VARCHAR(16), PRIMARY KEY (a, b))",
    ])
    .await
    .unwrap();
    db.create_user_with_grants("relay", "pw").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw\n").unwrap();
    let relay = start_relay(&db, &dir.path().join("state"), &password_file, extra).await;
    let gtid = db.gtid_binlog_pos().await.unwrap();
    let start_scn: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();
    Setup {
        db,
        relay,
        start: Checkpoint::after(Scn::new(start_scn)),
        start_scn,
        _dir: dir,
    }
}

/// The bucket of `key` among `n` MOD buckets (the relay's and the client's function).
fn bucket(key: &Key, n: u32) -> u32 {
    databus_filters::bucket_of(key.as_ref(), NonZeroU32::new(n).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_deletes_the_old_key_in_the_same_window_for_every_partition() {
    let s = setup().await;
    // Two keys of t in different MOD 2 buckets, so the change moves the row between partitions.
    let (old, new) = (1..100i64)
        .flat_map(|a| (1..100i64).map(move |b| (a, b)))
        .find(|(a, b)| bucket(&Key::Int(*a), 2) != bucket(&Key::Int(*b), 2))
        .unwrap();
    s.db.exec(&[
        &format!("INSERT INTO shop.t VALUES ({old}, 'a')"),
        "INSERT INTO shop.u VALUES (1, 1, 'x')",
    ])
    .await
    .unwrap();
    s.db.exec(&[&format!("UPDATE shop.t SET id = {new} WHERE id = {old}")])
        .await
        .unwrap();
    s.db.exec(&["UPDATE shop.u SET b = 2 WHERE a = 1 AND b = 1"])
        .await
        .unwrap();
    // An update that keeps the key stays one upsert.
    s.db.exec(&[&format!("UPDATE shop.t SET v = 'b' WHERE id = {new}")])
        .await
        .unwrap();

    let events = follow(s.relay.addr, s.start.clone(), "", 5).await;
    let d = data(&events);
    let scn = s.start_scn;
    let u_old = d[1].3.clone();
    let u_new = d[5].3.clone();
    assert_ne!(u_old, u_new, "the composite key (1,1) became (1,2)");
    assert_eq!(
        d,
        vec![
            (scn + 1, 1, Opcode::Upsert, Key::Int(old)),
            (scn + 2, 2, Opcode::Upsert, u_old.clone()),
            (scn + 3, 1, Opcode::Delete, Key::Int(old)),
            (scn + 3, 1, Opcode::Upsert, Key::Int(new)),
            (scn + 4, 2, Opcode::Delete, u_old),
            (scn + 4, 2, Opcode::Upsert, u_new),
            (scn + 5, 1, Opcode::Upsert, Key::Int(new)),
        ]
    );
    // The delete of the old key carries the before image (the row as it was).
    let delete = events
        .iter()
        .find(|e| e.opcode == Opcode::Delete && e.source.get() == 1)
        .unwrap();
    assert!(
        !delete.payload.is_empty(),
        "the delete carries the before image"
    );

    // Partitioned: the consumer owning the old key's bucket gets the delete, the one owning the new
    // key's bucket the upsert, both in window scn + 3.
    for instance in 0..2u32 {
        let events = follow(
            s.relay.addr,
            s.start.clone(),
            &format!("&partition=mod:2:{instance}"),
            5,
        )
        .await;
        let got: Vec<(u64, Opcode, Key)> = data(&events)
            .into_iter()
            .filter(|e| e.0 == scn + 3)
            .map(|e| (e.0, e.2, e.3))
            .collect();
        let mut want = Vec::new();
        if bucket(&Key::Int(old), 2) == instance {
            want.push((scn + 3, Opcode::Delete, Key::Int(old)));
        }
        if bucket(&Key::Int(new), 2) == instance {
            want.push((scn + 3, Opcode::Upsert, Key::Int(new)));
        }
        assert_eq!(got, want, "partition mod:2:{instance}");
    }
    s.relay.stop().await;
}

fn table_change(e: &Event) -> databus_core::TableChange {
    databus_core::TableChange::from_payload(&e.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_drop_and_alter_reach_every_partition_as_table_events() {
    let s = setup().await;
    s.db.exec(&[
        "INSERT INTO shop.t VALUES (1, 'a'), (2, 'b')",
        "TRUNCATE TABLE shop.t",
        "DROP TABLE shop.u",
        "CREATE TABLE shop.u (a INT, b INT, v VARCHAR(16), PRIMARY KEY (a, b))",
        "INSERT INTO shop.u VALUES (1, 1, 'x')",
        "ALTER TABLE shop.t ADD COLUMN w INT",
        "INSERT INTO shop.t VALUES (3, 'c', 5)",
    ])
    .await
    .unwrap();
    let scn = s.start_scn;
    let events = follow(s.relay.addr, s.start.clone(), "", 7).await;
    let d = data(&events);
    assert_eq!(
        d.iter()
            .map(|e| (e.0, e.1, e.2, e.3.clone()))
            .collect::<Vec<_>>(),
        vec![
            (scn + 1, 1, Opcode::Upsert, Key::Int(1)),
            (scn + 1, 1, Opcode::Upsert, Key::Int(2)),
            (scn + 2, 1, Opcode::Truncate, Key::None),
            (scn + 3, 2, Opcode::Truncate, Key::None),
            (scn + 5, 2, Opcode::Upsert, d[4].3.clone()),
            (scn + 6, 1, Opcode::SchemaChange, Key::None),
            (scn + 7, 1, Opcode::SchemaChange, Key::None),
            (scn + 7, 1, Opcode::Upsert, Key::Int(3)),
        ]
    );
    let tables: Vec<databus_core::TableChange> = events
        .iter()
        .filter(|e| e.opcode.is_table_event())
        .map(table_change)
        .collect();
    use databus_core::TableChangeCause as C;
    assert_eq!(
        (tables[0].table.as_str(), tables[0].cause),
        ("shop.t", C::Truncate)
    );
    assert_eq!(tables[0].statement, "TRUNCATE TABLE shop.t");
    assert_eq!(
        (tables[1].table.as_str(), tables[1].cause),
        ("shop.u", C::Drop)
    );
    // The ALTER's own window says it happened (the new schema is known with the next row).
    let v1 = events
        .iter()
        .find(|e| e.opcode == Opcode::Upsert && e.source.get() == 1)
        .unwrap()
        .schema;
    assert_eq!(tables[2].cause, C::Alter);
    assert_eq!(tables[2].statement, "ALTER TABLE shop.t ADD COLUMN w INT");
    assert_eq!(
        (tables[2].old_schema, tables[2].new_schema),
        (Some(v1), None)
    );
    // The first row of the new version is preceded by the change with both ids.
    let v2 = d_schema(&events, scn + 7, Opcode::Upsert);
    assert_ne!(v1, v2);
    assert_eq!(
        (tables[3].old_schema, tables[3].new_schema),
        (Some(v1), Some(v2))
    );
    assert_eq!(tables[3].statement, "ALTER TABLE shop.t ADD COLUMN w INT");

    // Table events pass every partition filter, and the source filter decides.
    for instance in 0..2 {
        let events = follow(
            s.relay.addr,
            s.start.clone(),
            &format!("&partition=mod:2:{instance}&sources=1"),
            7,
        )
        .await;
        let kinds: Vec<(u64, Opcode)> = data(&events)
            .into_iter()
            .filter(|e| e.2.is_table_event())
            .map(|e| (e.0, e.2))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (scn + 2, Opcode::Truncate),
                (scn + 6, Opcode::SchemaChange),
                (scn + 7, Opcode::SchemaChange)
            ],
            "partition mod:2:{instance}"
        );
    }
    // The JSON rendering shows the table change.
    let resp = common::get(
        s.relay.addr,
        &format!(
            "/v1/stream?format=json&checkpoint={}",
            enc(&Checkpoint::after(Scn::new(scn + 1)).to_json())
        ),
    )
    .await;
    let first: serde_json::Value =
        serde_json::from_str(resp.text().lines().next().unwrap()).unwrap();
    assert_eq!(first["opcode"], "truncate");
    assert_eq!(first["payload"]["cause"], "truncate");
    assert_eq!(first["payload"]["table"], "shop.t");

    // Renaming a captured table away stops ingest with an error naming the fix.
    s.db.exec(&["RENAME TABLE shop.t TO shop.t_old"])
        .await
        .unwrap();
    let status = common::wait_status(
        s.relay.addr,
        Instant::now() + Duration::from_secs(60),
        "ingest never failed on the rename",
        |b| b["buffers"][0]["ingest"]["state"] == "failed",
    )
    .await;
    let error = status["buffers"][0]["ingest"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("shop.t was renamed to shop.t_old"),
        "{error}"
    );
    assert!(
        error.contains("add shop.t_old to the captured tables"),
        "{error}"
    );
    s.relay.stop().await;
}

fn d_schema(events: &[Event], scn: u64, opcode: Opcode) -> databus_core::SchemaId {
    events
        .iter()
        .find(|e| e.scn.get() == scn && e.opcode == opcode)
        .unwrap()
        .schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_before_images_updates_carry_the_row_as_it_was() {
    let s = setup_with("before_images = true").await;
    s.db.exec(&[
        "INSERT INTO shop.t VALUES (1, 'old')",
        "UPDATE shop.t SET v = 'new' WHERE id = 1",
        "UPDATE shop.t SET id = 2 WHERE id = 1",
        "DELETE FROM shop.t WHERE id = 2",
    ])
    .await
    .unwrap();
    let scn = s.start_scn;
    let events = follow(s.relay.addr, s.start.clone(), "", 4).await;
    assert_eq!(
        data(&events),
        vec![
            (scn + 1, 1, Opcode::Upsert, Key::Int(1)),
            (scn + 2, 1, Opcode::Update, Key::Int(1)),
            // A key change: the delete carries the before image, the new key's row is an upsert.
            (scn + 3, 1, Opcode::Delete, Key::Int(1)),
            (scn + 3, 1, Opcode::Upsert, Key::Int(2)),
            (scn + 4, 1, Opcode::Delete, Key::Int(2)),
        ]
    );
    let resp = common::get(
        s.relay.addr,
        &format!(
            "/v1/stream?format=json&checkpoint={}",
            enc(&s.start.to_json())
        ),
    )
    .await;
    let lines: Vec<serde_json::Value> = resp
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let update = lines.iter().find(|l| l["opcode"] == "update").unwrap();
    assert_eq!(update["payload"]["v"], "new", "{update}");
    assert_eq!(update["before"]["v"], "old", "{update}");
    assert_eq!(update["before"]["id"], 1, "{update}");
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_clears_every_captured_table_of_it() {
    let s = setup().await;
    s.db.exec(&[
        "INSERT INTO shop.t VALUES (1, 'a')",
        "INSERT INTO shop.u VALUES (1, 1, 'x')",
        "DROP DATABASE shop",
    ])
    .await
    .unwrap();
    let scn = s.start_scn;
    let events = follow(s.relay.addr, s.start.clone(), "", 3).await;
    let d = data(&events);
    assert_eq!(
        d[2..].to_vec(),
        vec![
            (scn + 3, 1, Opcode::Truncate, Key::None),
            (scn + 3, 2, Opcode::Truncate, Key::None),
        ]
    );
    let changes: Vec<databus_core::TableChange> = events
        .iter()
        .filter(|e| e.opcode == Opcode::Truncate)
        .map(table_change)
        .collect();
    assert_eq!(changes[0].table, "shop.t");
    assert_eq!(changes[1].table, "shop.u");
    assert!(
        changes
            .iter()
            .all(|c| c.cause == databus_core::TableChangeCause::Drop
                && c.statement == "DROP DATABASE shop")
    );
    s.relay.stop().await;
}
