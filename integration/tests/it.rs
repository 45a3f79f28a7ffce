//! One test binary for the crate (each file below is a module): one link instead of one per file,
//! which keeps the build's disk and link time small. Run one file's tests with
//! `cargo test -p <crate> --test it <module>::`.

mod bad_input;
mod fanout_memory;
mod faults;
mod hostile;
mod pg_bootstrap;
mod pg_faults;
mod pg_relay;
mod s10_replicate;
mod s10_replicate_faults;
mod s10_replicate_pg;
mod s11_replicate_under_load;
mod s1_search_indexer;
mod s2_cache_invalidator;
mod s3_snapshot_bootstrap;
mod s4_fall_off_relay;
mod s5_partitioned_group;
mod s6_chained_relays;
mod s7_ddl;
mod s8_change_fidelity;
mod s8_producer_falls_off_relay;
mod s9_bootstrap_reseeds_itself;
