//! Bootstrap server: log and snapshot stores, consolidated delta and consistent snapshot queries.

#![forbid(unsafe_code)]

pub mod applier;
pub mod config;
mod error;
pub mod http;
pub mod producer;
pub mod relay_client;
pub mod retention;
pub mod run;
pub mod seed;
pub mod serve;
pub mod store;

pub use config::{BootstrapConfig, ValidatedConfig};
pub use error::BootstrapError;
pub use run::{run_all, run_applier, run_producer, run_seed, run_server, run_server_on};
