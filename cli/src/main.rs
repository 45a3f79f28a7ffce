//! The `databus` binary: parses the command line and calls into the libraries.

#![forbid(unsafe_code)]

fn main() {
    println!("databus {}", env!("CARGO_PKG_VERSION"));
}
