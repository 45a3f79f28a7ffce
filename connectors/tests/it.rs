//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod binlog_verbose;
mod common;
mod conformance_mariadb;
mod conformance_postgres;
mod postgres;
mod postgres_ingest_rate;
mod snapshot_conformance_mariadb;
mod snapshot_conformance_postgres;
mod stream;
mod types;
mod validation;
