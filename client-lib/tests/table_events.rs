//! Table events and before images through the client library, from a relay over loopback HTTP:
//! truncates and schema changes go to `on_truncate` / `on_schema_change` (not `on_event`), in order
//! with the rows around them even with several workers; an `update` event's payload reads as the row
//! after the change and `before_json` as the row before it.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use databus_client::{
    ConsumerOutcome, DataEvent, DatabusClient, DatabusConsumer, MemoryCheckpointStore,
};
use databus_core::{EventBuilder, Key, Opcode, Scn, SourceId, TableChange, TableChangeCause};
use databus_serde_formats::Value;

/// What a consumer saw, in delivery order: `(scn, what)`.
#[derive(Default)]
struct Calls(Mutex<Vec<(u64, String)>>);

impl DatabusConsumer for Calls {
    async fn on_event(&self, event: &DataEvent<'_>) -> ConsumerOutcome {
        let row = event.json().unwrap();
        let before = event.before_json().map(|b| b.unwrap()["name"].clone());
        self.0.lock().unwrap().push((
            event.scn().get(),
            format!(
                "{:?} {} {} before={before:?}",
                event.opcode(),
                event.key(),
                row["name"]
            ),
        ));
        ConsumerOutcome::Success
    }

    async fn on_truncate(&self, event: &DataEvent<'_>, change: &TableChange) -> ConsumerOutcome {
        self.0.lock().unwrap().push((
            event.scn().get(),
            format!(
                "truncate {} {:?} {}",
                event.source(),
                change.cause,
                change.table
            ),
        ));
        ConsumerOutcome::Success
    }

    async fn on_schema_change(
        &self,
        event: &DataEvent<'_>,
        change: &TableChange,
    ) -> ConsumerOutcome {
        self.0.lock().unwrap().push((
            event.scn().get(),
            format!("schema_change {} {}", event.source(), change.statement),
        ));
        ConsumerOutcome::Success
    }
}

fn table_event(
    scn: u64,
    source: u16,
    opcode: Opcode,
    cause: TableChangeCause,
    statement: &str,
) -> Vec<u8> {
    let change = TableChange {
        table: "shop.t1".into(),
        cause,
        statement: statement.into(),
        old_schema: None,
        new_schema: None,
    };
    let mut frame = Vec::new();
    EventBuilder::new(Scn::new(scn), opcode)
        .source(SourceId::new(source))
        .payload(&change.to_payload())
        .write_to_vec(&mut frame);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_events_reach_their_callbacks_in_order_and_updates_carry_before_images() {
    let mut relay = TestRelay::start(8 << 20).await;
    relay.window(1, &rows(1, 1, 6, 1));
    // Window 2: a truncate of source 1 between rows (a delta page can look like this), then rows.
    let schema = relay.schema.clone();
    let upsert = |scn: u64, key: i64| make_event(&schema, scn, 1, key, scn as i64);
    let mut frames: Vec<Vec<u8>> = vec![upsert(2, 10).to_frame()];
    frames.push(table_event(
        2,
        1,
        Opcode::Truncate,
        TableChangeCause::Truncate,
        "TRUNCATE TABLE t1",
    ));
    for key in 11..16 {
        frames.push(upsert(2, key).to_frame());
    }
    for frame in &frames {
        let (view, _) = databus_core::EventView::parse(frame).unwrap();
        relay
            .writer
            .append(&databus_core::Event::from(view).builder())
            .unwrap();
    }
    relay.writer.end_window(Scn::new(2), 2000).unwrap();
    // Window 3: a schema change alone.
    let alter = table_event(
        3,
        1,
        Opcode::SchemaChange,
        TableChangeCause::Alter,
        "ALTER TABLE t1 ADD COLUMN w INT",
    );
    let (view, _) = databus_core::EventView::parse(&alter).unwrap();
    relay
        .writer
        .append(&databus_core::Event::from(view).builder())
        .unwrap();
    relay.writer.end_window(Scn::new(3), 3000).unwrap();
    // Window 4: an update with its before image.
    let encode = |name: &str| {
        let mut out = Vec::new();
        schema
            .encoder
            .encode(
                &[Value::Int(11), Value::Int(4), Value::Text(name.into())],
                &mut out,
            )
            .unwrap();
        out
    };
    let mut payload = Vec::new();
    databus_core::event::update_payload(&encode("after"), &encode("before"), &mut payload);
    relay
        .writer
        .append(
            &EventBuilder::new(Scn::new(4), Opcode::Update)
                .source(SourceId::new(1))
                .schema(schema.id)
                .key(Key::Int(11).as_ref())
                .payload(&payload),
        )
        .unwrap();
    relay.writer.end_window(Scn::new(4), 4000).unwrap();

    let mut config = fast_config(&[relay.url()]);
    config.workers = 4;
    let client = DatabusClient::new(config, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let calls = Arc::new(Calls::default());
    run_until(&client, calls.clone(), |c| {
        c.0.lock().unwrap().iter().any(|(scn, _)| *scn == 4)
    })
    .await
    .unwrap();
    let calls = calls.0.lock().unwrap().clone();
    let window2: Vec<&str> = calls
        .iter()
        .filter(|(scn, _)| *scn == 2)
        .map(|(_, what)| what.as_str())
        .collect();
    // In commit order even with 4 workers: the truncate after key 10 and before keys 11..16.
    assert_eq!(window2.len(), 7, "{window2:?}");
    assert!(window2[0].starts_with("Upsert 10 "), "{window2:?}");
    assert_eq!(window2[1], "truncate 1 Truncate shop.t1");
    for (i, key) in (11..16).enumerate() {
        assert!(
            window2[2 + i].starts_with(&format!("Upsert {key} ")),
            "{window2:?}"
        );
    }
    assert!(calls.contains(&(3, "schema_change 1 ALTER TABLE t1 ADD COLUMN w INT".into())));
    let update = calls.iter().find(|(scn, _)| *scn == 4).unwrap();
    assert_eq!(
        update.1, "Update 11 \"after\" before=Some(String(\"before\"))",
        "the row after the change, and before_json the row before it"
    );
    // Upserts carry no before image.
    assert!(
        calls
            .iter()
            .filter(|(scn, _)| *scn == 1)
            .all(|(_, w)| w.ends_with("before=None"))
    );
}
