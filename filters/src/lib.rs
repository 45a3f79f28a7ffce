//! Server-side source and key-partition filters (MOD/RANGE) and the shared bucket function.

#![forbid(unsafe_code)]
