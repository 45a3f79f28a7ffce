//! End-to-end test harness: a private MariaDB, relays, bootstrap servers and consumers.

#![forbid(unsafe_code)]
