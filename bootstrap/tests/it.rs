//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod caps;
mod common;
mod concurrent_open;
mod delta_prop;
mod gap;
mod health;
mod mariadb;
mod pipeline;
mod postgres;
mod store_conformance;
