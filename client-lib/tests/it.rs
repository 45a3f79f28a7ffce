//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod bootstrap;
mod bootstrap_fake;
mod common;
mod effectively_once;
mod examples;
mod kill;
mod mariadb;
mod relay;
mod security;
mod table_events;
