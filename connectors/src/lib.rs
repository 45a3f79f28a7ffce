//! The SourceConnector contract and the MySQL/MariaDB binlog connector.

#![forbid(unsafe_code)]
