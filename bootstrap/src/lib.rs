//! Bootstrap server: log and snapshot stores, consolidated delta and consistent snapshot queries.

#![forbid(unsafe_code)]

mod error;
pub mod http;
pub mod serve;
pub mod store;

pub use error::BootstrapError;
