//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod chain;
mod change_fidelity;
mod common;
mod http_api;
mod mariadb;
mod status_page;
