//! Client library: callbacks and pull API, checkpoints, failover, parallel dispatch, bootstrap switchover.

#![forbid(unsafe_code)]
