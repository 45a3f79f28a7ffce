//! Bootstrap server: log and snapshot stores, consolidated delta and consistent snapshot queries.

#![forbid(unsafe_code)]

pub mod applier;
mod error;
pub mod http;
pub mod producer;
pub mod relay_client;
pub mod retention;
pub mod serve;
pub mod store;

pub use error::BootstrapError;
