//! End-to-end test harness of databus-rs: a private MariaDB, real `databus` relay and bootstrap
//! processes on loopback, consumers built with the client library, a sequenced workload and a checker.
//!
//! - [`process`]: [`Relay`] and [`BootstrapServer`] run the real `databus` binary (`databus relay`,
//!   `databus bootstrap all`) as child processes with their own temporary directories and ports,
//!   killed by pid when dropped (also on panic); [`wait_for`] waits on conditions with deadlines.
//! - [`workload`]: [`Workload`] writes seeded transactions to `shop.items`, each carrying its sequence
//!   number (`seq` column, and a `shop.txlog` row in the same transaction), and keeps the log of what it
//!   committed.
//! - [`checker`]: replica vs source row by row ([`compare_tables`]), whole windows in commit order with
//!   no gap, duplicate or reorder ([`check_windows`]), exactly-once across a partitioned group
//!   ([`merge_group`]), per-key order ([`check_key_histories`]).
//! - [`fidelity`]: [`fidelity::FidelityWorkload`], a seeded random mix of every change a ROW-format
//!   source makes (key changes on single and composite keys, TRUNCATE, ALTER, DROP + CREATE,
//!   rollbacks, savepoints, multi-table transactions, NULLs) on two tables of database `fid`.
//! - [`pg`]: the PostgreSQL scenarios' workload ([`pg::PgWorkload`]: inserts, updates, key changes,
//!   deletes and TRUNCATEs on `public.acct`, a `public.txlog` row per transaction) and the source's
//!   rows as canonical rows ([`pg::pg_rows`]).
//! - [`consumer`]: [`Recorder`] (a [`databus_client::DatabusConsumer`] keeping every window and an
//!   in-memory replica) and [`Consumer`] (a running client).
//! - [`faults`]: support of the bad-input and fault-injection tests (`tests/bad_input.rs`,
//!   `tests/faults.rs`): [`faults::databus_bin`] (the checked binary of [`process::databus_bin`]),
//!   [`faults::RelayProcess`] started from a TOML file and killed/restarted by pid on its port,
//!   [`faults::DatabusProcess`] for bootstrap roles and the `fault_consumer` binary, raw HTTP/1.1
//!   over a `TcpStream` ([`faults::http_raw`]) and seeded schedules ([`faults::SeededRng`],
//!   [`faults::fault_seeds`]).
//! - [`source`]: the scenarios' source, MariaDB or PostgreSQL ([`Source`], [`SourceKind`],
//!   [`start_pipeline_on`]), so that a scenario runs on both.
//! - [`soak`]: the seeded fault run of `tests/faults.rs` (MariaDB) and `tests/pg_faults.rs`
//!   (PostgreSQL): the workload, the schedule, the processes ([`soak::World`]), the consumer-log
//!   checks; a database plugs in through [`soak::SoakSource`].
//!
//! The scenarios are in `integration/tests/` (one file each, see `docs/testing.md`). MariaDB comes
//! from `databus-testkit` ([`databus_testkit::MariaDb`]).
//!
//! ## The `databus` binary
//!
//! Tests of this package cannot name another package's binary (`CARGO_BIN_EXE_*`), and artifact
//! dependencies are unstable, so [`process::databus_bin`] looks for `databus` in the test
//! executable's profile directory (`target/<profile>/databus`). `cargo test --workspace` builds it
//! before running any test (the CLI package has integration tests, so cargo builds its binary); to run
//! only this package, build it first: `cargo build -p databus-cli && cargo test -p
//! databus-integration`. A missing binary, or one older than a source file of the workspace, fails
//! with that instruction instead of testing stale code; `DATABUS_BIN=/path/to/databus` overrides the
//! lookup.
//!
//! Errors are `anyhow` (this is test support: every error ends as a test failure message).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use databus_integration::*;
//!
//! let db = databus_testkit::MariaDb::start(Default::default()).await?;
//! db.exec(workload::SCHEMA).await?;
//! let url = db.create_user_with_grants("repl", "pw").await?;
//! let mut relay = Relay::start(RelaySpec {
//!     source: RelaySource::Database { url, server_id: 1001 },
//!     tables: workload::tables(),
//!     buffer_size: "8MiB".into(),
//! })
//! .await?;
//! let mut consumer = Consumer::start(
//!     databus_client::ClientConfig::with_relays([relay.url()]),
//!     std::sync::Arc::new(databus_client::MemoryCheckpointStore::new()),
//!     Recorder::new(),
//! )?;
//! let mut work = Workload::new(7, 100);
//! work.run(&mut db.root_conn().await?, 200).await?;
//! consumer.wait_seq(work.last_seq(), Duration::from_secs(60)).await?;
//! check_windows(&consumer.recorder.windows(), work.log(), StreamCheck::default())?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod checker;
pub mod consumer;
pub mod faults;
pub mod fidelity;
pub mod http;
pub mod pg;
pub mod process;
pub mod soak;
pub mod source;
pub mod workload;

pub use checker::{
    Columns, ObservedEvent, ObservedWindow, Row, StreamCheck, StreamReport, check_key_histories,
    check_windows, compare_tables, merge_group, rekey, row_key, source_rows, source_rows_keyed,
};
pub use consumer::{Consumer, Recorded, Recorder};
pub use process::{
    BootstrapOptions, BootstrapRole, BootstrapServer, Proc, Relay, RelaySource, RelaySpec,
    SeedPassword, TableSpec, databus_bin, free_port, wait_for,
};
pub use source::{Source, SourceKind, start_pipeline_on};
pub use workload::{ItemOp, ItemRow, TxRecord, TxWriter, Workload, source_scn};

/// The usual start of a scenario: a private MariaDB with the workload's schema, a replication user,
/// and a relay capturing the workload's tables with a buffer of `buffer_size`, streaming.
pub async fn start_pipeline(
    buffer_size: &str,
) -> anyhow::Result<(databus_testkit::MariaDb, Relay)> {
    match start_pipeline_on(SourceKind::MariaDb, buffer_size).await? {
        (Source::MariaDb(db), relay) => Ok((db, relay)),
        (other, _) => anyhow::bail!("a MariaDB pipeline started on {:?}", other.kind()),
    }
}

/// The workload model as canonical rows keyed by the key's text (to compare with a replica).
pub fn canonical(
    state: &std::collections::BTreeMap<i64, ItemRow>,
) -> std::collections::BTreeMap<String, Row> {
    state
        .iter()
        .map(|(k, r)| (k.to_string(), r.canonical(*k)))
        .collect()
}
