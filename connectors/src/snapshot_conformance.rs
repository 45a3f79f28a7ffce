//! The conformance suite every [`SnapshotSource`] must pass, beside the streaming one in
//! [`crate::conformance`].
//!
//! A connector's tests implement [`SnapshotHarness`] over a real source and invoke
//! [`snapshot_conformance_suite!`](crate::snapshot_conformance_suite), which generates one
//! `#[tokio::test]` per property:
//!
//! | test | property |
//! |---|---|
//! | `snapshot_rows_and_schemas_equal_the_stream` | the snapshot is at the last committed transaction; its rows are the after images the stream gave for the same inserts, its schemas the stream's (same schema id, a JSON column included) |
//! | `stream_after_the_snapshot_has_no_gap_and_no_overlap` | with a writer running while the snapshot opens, the stream resumed at [`SnapshotPosition::resume`](crate::SnapshotPosition::resume) carries exactly the rows the snapshot lacks |
//! | `chunks_continue_from_a_saved_cursor` | a cursor saved under one snapshot continues the table under a later one |
//!
//! Each test gets a fresh harness (its own source). `tests/snapshot_conformance_mariadb.rs` is the
//! MariaDB harness.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use databus_serde_formats::SchemaRegistry;
use databus_serde_formats::model::{ColumnType, Row, TableSchema};

use crate::conformance::{DEADLINE, next_transaction};
use crate::snapshot::{ChunkCursor, Snapshot, SnapshotSource};
use crate::source::{SourceConnector, StartPosition, TableName};

/// A source the snapshot suite reads from.
pub trait SnapshotHarness: Send {
    /// The snapshot side under test.
    type Source: SnapshotSource;
    /// The stream of the same source.
    type Connector: SourceConnector;

    /// The snapshot side of this harness's source.
    fn snapshot_source(&mut self) -> impl Future<Output = Self::Source> + Send;

    /// A new, not yet started connector capturing [`SnapshotHarness::tables`].
    fn connector(&mut self) -> impl Future<Output = Self::Connector> + Send;

    /// The captured tables: between them every column type the source supports, a JSON column
    /// included, and a composite primary key.
    fn tables(&self) -> Vec<TableName>;

    /// Commits one transaction inserting `rows` new rows (new keys, increasing), with varied values.
    fn insert(&mut self, rows: usize) -> impl Future<Output = ()> + Send;

    /// Starts a writer committing such insert transactions one after the other, concurrently with
    /// the caller, until `stop` is cancelled, and then one more; the handle ends after that one.
    /// (However fast the server and however slow a snapshot is to open, the writer is running while
    /// it opens, and commits after it.)
    fn concurrent_inserts(
        &mut self,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = tokio::task::JoinHandle<()>> + Send;
}

/// A row's primary key, as text (values are not `Ord`).
fn key(schema: &TableSchema, row: &Row) -> String {
    let parts: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| format!("{:?}", row[i]))
        .collect();
    parts.join("|")
}

type Rows = BTreeMap<TableName, BTreeMap<String, Row>>;

/// Every row of the tables, read in chunks of `chunk` rows; with their schemas.
async fn read_all<S: Snapshot>(
    snapshot: &mut S,
    tables: &[TableName],
    chunk: usize,
) -> (Rows, BTreeMap<TableName, Arc<TableSchema>>) {
    let mut rows = Rows::new();
    let mut schemas = BTreeMap::new();
    for t in tables {
        let schema = snapshot.schema(t).await.expect("schema");
        let mut from: Option<ChunkCursor> = None;
        let table = rows.entry(t.clone()).or_default();
        loop {
            let c = snapshot
                .read_chunk(t, from.as_ref(), chunk)
                .await
                .expect("read a chunk");
            assert!(c.rows.len() <= chunk, "at most {chunk} rows a chunk");
            for row in c.rows {
                assert_eq!(row.len(), schema.columns.len(), "a value per column");
                let k = key(&schema, &row);
                assert!(
                    table.insert(k.clone(), row).is_none(),
                    "row {k} of {t} twice"
                );
            }
            match c.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        schemas.insert(t.clone(), schema);
    }
    (rows, schemas)
}

/// The snapshot's rows and schemas are the stream's for the same data.
pub async fn snapshot_rows_and_schemas_equal_the_stream<H: SnapshotHarness>(h: &mut H) {
    let tables = h.tables();
    let mut c = h.connector().await;
    c.start(StartPosition::Now).await.expect("start");
    for n in [3usize, 1, 5, 4] {
        h.insert(n).await;
    }
    let mut stream = Rows::new();
    let mut stream_schemas: BTreeMap<TableName, Arc<TableSchema>> = BTreeMap::new();
    let mut last = None;
    while stream.values().map(BTreeMap::len).sum::<usize>() < 13 {
        let t = next_transaction(&mut c).await;
        last = Some(t.scn);
        for change in t.changes {
            let name = TableName::new(&change.table.database, &change.table.table);
            let after = change.after.expect("inserts have an after image");
            stream
                .entry(name.clone())
                .or_default()
                .insert(key(&change.table, &after), after);
            stream_schemas.insert(name, change.table);
        }
    }
    c.shutdown().await.expect("shutdown");
    let mut source = h.snapshot_source().await;
    let mut snapshot = source.open().await.expect("open a snapshot");
    assert_eq!(
        Some(snapshot.position().scn),
        last,
        "the snapshot is at the last committed transaction"
    );
    let (rows, schemas) = read_all(&mut snapshot, &tables, 2).await;
    snapshot.close().await.expect("close");
    let registry = SchemaRegistry::in_memory();
    let mut json = false;
    for t in &tables {
        let from_stream = stream_schemas.get(t).expect("the stream saw every table");
        assert_eq!(&schemas[t], from_stream, "schema of {t}");
        assert_eq!(
            registry.register(&schemas[t]).expect("register").id,
            registry.register(from_stream).expect("register").id,
            "schema id of {t}"
        );
        json |= schemas[t]
            .columns
            .iter()
            .any(|c| c.column_type == ColumnType::Json);
        assert_eq!(rows.get(t), stream.get(t), "rows of {t}");
    }
    assert!(json, "the harness's tables have a JSON column");
}

/// A stream resumed at the snapshot's position carries exactly the rows the snapshot lacks.
pub async fn stream_after_the_snapshot_has_no_gap_and_no_overlap<H: SnapshotHarness>(h: &mut H) {
    let tables = h.tables();
    h.insert(4).await;
    let stop_writer = tokio_util::sync::CancellationToken::new();
    let writer = h.concurrent_inserts(stop_writer.clone()).await;
    // Let the writer get going, so that it commits while the snapshot opens (the assertions do not
    // depend on when).
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let mut source = h.snapshot_source().await;
    let mut snapshot = source.open().await.expect("open a snapshot");
    let at = snapshot.position().clone();
    let (before, _) = read_all(&mut snapshot, &tables, 7).await;
    snapshot.close().await.expect("close");
    stop_writer.cancel();
    tokio::time::timeout(DEADLINE, writer)
        .await
        .expect("the writer finishes")
        .expect("the writer");
    let mut last = source.open().await.expect("open the final snapshot");
    let end = last.position().scn;
    let (after, _) = read_all(&mut last, &tables, 50).await;
    last.close().await.expect("close");
    assert!(
        end > at.scn,
        "the writer committed after the first snapshot"
    );
    let mut c = h.connector().await;
    c.start(at.resume()).await.expect("start at the snapshot");
    let mut streamed = Rows::new();
    let mut scn = at.scn;
    while scn < end {
        let t = next_transaction(&mut c).await;
        assert!(t.scn > scn, "scns increase");
        scn = t.scn;
        for change in t.changes {
            let name = TableName::new(&change.table.database, &change.table.table);
            let row = change.after.expect("inserts");
            let k = key(&change.table, &row);
            assert!(
                !before.get(&name).is_some_and(|r| r.contains_key(&k)),
                "overlap: row {k} of {name} is in the snapshot and in the stream after it"
            );
            streamed.entry(name).or_default().insert(k, row);
        }
    }
    c.shutdown().await.expect("shutdown");
    assert_eq!(scn, end, "the stream reaches the final snapshot exactly");
    for t in &tables {
        let mut union = before.get(t).cloned().unwrap_or_default();
        union.extend(streamed.get(t).cloned().unwrap_or_default());
        assert_eq!(
            Some(&union),
            after.get(t),
            "no gap: snapshot + stream after it = the final rows of {t}"
        );
    }
}

/// A cursor saved under one snapshot continues the table under a later one.
pub async fn chunks_continue_from_a_saved_cursor<H: SnapshotHarness>(h: &mut H) {
    let tables = h.tables();
    h.insert(9).await;
    let t = &tables[0];
    let mut source = h.snapshot_source().await;
    let mut first = source.open().await.expect("open");
    let c = first.read_chunk(t, None, 2).await.expect("chunk");
    assert_eq!(c.rows.len(), 2);
    let cursor = c.next.expect("more rows");
    // Saved and read back, as a crashed seed does.
    let cursor: ChunkCursor =
        serde_json::from_str(&serde_json::to_string(&cursor).expect("serialize")).expect("parse");
    let schema = first.schema(t).await.expect("schema");
    first.close().await.expect("close");
    h.insert(3).await;
    let mut second = source.open().await.expect("open");
    let mut resumed: Vec<Row> = c.rows;
    let mut from = Some(cursor);
    while let Some(cursor) = from.take() {
        let c = second.read_chunk(t, Some(&cursor), 2).await.expect("chunk");
        resumed.extend(c.rows);
        from = c.next;
    }
    let (all, _) = read_all(&mut second, std::slice::from_ref(t), 100).await;
    second.close().await.expect("close");
    let resumed: BTreeMap<String, Row> =
        resumed.into_iter().map(|r| (key(&schema, &r), r)).collect();
    assert_eq!(Some(&resumed), all.get(t));
}

/// Generates one `#[tokio::test]` per snapshot property. `$make` is an expression evaluating to a
/// future of a fresh [`SnapshotHarness`].
#[macro_export]
macro_rules! snapshot_conformance_suite {
    ($make:expr) => {
        mod snapshot_conformance {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn snapshot_rows_and_schemas_equal_the_stream() {
                let mut h = $make.await;
                $crate::snapshot_conformance::snapshot_rows_and_schemas_equal_the_stream(&mut h)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stream_after_the_snapshot_has_no_gap_and_no_overlap() {
                let mut h = $make.await;
                $crate::snapshot_conformance::stream_after_the_snapshot_has_no_gap_and_no_overlap(
                    &mut h,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chunks_continue_from_a_saved_cursor() {
                let mut h = $make.await;
                $crate::snapshot_conformance::chunks_continue_from_a_saved_cursor(&mut h).await;
            }
        }
    };
}
