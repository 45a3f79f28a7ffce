//! Ingest throughput of the MariaDB connector: row changes decoded per second.
//!
//! Starts a private MariaDB (databus-testkit), writes `ROWS` rows of ~200 bytes with multi-row INSERTs
//! (100 rows a transaction), then reads them back from the start of the binlog and prints the rate.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target cargo bench -p databus-connectors --bench ingest
//! ```

use std::time::Instant;

use databus_connectors::mysql::{MySqlConfig, MySqlConnector};
use databus_connectors::{ConnectorEvent, SourceConnector, StartPosition};
use databus_core::Scn;
use databus_testkit::{MariaDb, MariaDbOptions};

const ROWS: usize = 300_000;
const PER_TXN: usize = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let db = MariaDb::start(MariaDbOptions::default())
        .await
        .expect("mariadb");
    db.exec(&[
        "CREATE DATABASE b",
        "CREATE TABLE b.t (id BIGINT PRIMARY KEY, a INT, b BIGINT UNSIGNED, c VARCHAR(100), d DATETIME(6), e DECIMAL(12,2), f DOUBLE)",
    ])
    .await
    .expect("schema");
    let url = db
        .create_user_with_grants("relay", "pw")
        .await
        .expect("user");

    let write = Instant::now();
    let mut conn = db.root_conn().await.expect("conn");
    use mysql_async::prelude::Queryable;
    for t in 0..ROWS / PER_TXN {
        let values: Vec<String> = (0..PER_TXN)
            .map(|i| {
                let id = t * PER_TXN + i;
                format!(
                    "({id}, {i}, {}, 'some text value number {id} padded to be a realistic row payload xxxxxxxxxx', \
                     '2024-01-02 03:04:05.{:06}', {}.25, {}.5)",
                    id * 7,
                    id % 1_000_000,
                    id,
                    id
                )
            })
            .collect();
        conn.query_drop(format!("INSERT INTO b.t VALUES {}", values.join(",")))
            .await
            .expect("insert");
    }
    let write_secs = write.elapsed().as_secs_f64();

    let mut config = MySqlConfig::new(url, 100);
    config.databases = vec!["b".into()];
    let mut c = MySqlConnector::new(config).expect("config");
    let read = Instant::now();
    c.start(StartPosition::After(Scn::ZERO))
        .await
        .expect("start");
    let (mut rows, mut txns) = (0usize, 0usize);
    while rows < ROWS {
        if let Some(ConnectorEvent::Transaction(t)) = c.next_event().await.expect("event") {
            rows += t.changes.len();
            txns += 1;
        }
    }
    let read_secs = read.elapsed().as_secs_f64();
    c.shutdown().await.expect("shutdown");
    println!(
        "wrote {ROWS} rows in {} transactions: {write_secs:.2} s",
        ROWS / PER_TXN
    );
    println!(
        "connector decoded {rows} row changes ({txns} transactions): {read_secs:.2} s = {:.0} row changes/s",
        rows as f64 / read_secs
    );
}
