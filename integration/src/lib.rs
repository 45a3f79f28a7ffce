//! End-to-end test harness: a private MariaDB, relays, bootstrap servers and consumers.
//!
//! - [`faults`]: the real `databus` binary ([`faults::databus_bin`]), relay processes started from a
//!   TOML file and killed by pid ([`faults::RelayProcess`]), raw HTTP/1.1 over a `TcpStream`
//!   ([`faults::http_raw`]) and seeded schedules ([`faults::SeededRng`], [`faults::fault_seeds`]) for
//!   the bad-input and fault-injection tests in `tests/`.

#![forbid(unsafe_code)]

pub mod faults;
