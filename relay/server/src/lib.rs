//! The relay: ingest from a connector into event buffers and serve consumers over HTTP.

#![forbid(unsafe_code)]
