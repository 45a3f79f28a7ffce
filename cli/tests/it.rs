//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod cli;
mod common;
mod docs;
mod restart_floor;
mod security;
mod tail_bootstrap;
