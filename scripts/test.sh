#!/usr/bin/env bash
# The test command: formatting, lints and every test of the workspace (unit, property, real MariaDB,
# real HTTP over loopback), plus the loom model of the event buffer and a short run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Loom model of the event buffer's publish/evict/read protocol (its own target dir: --cfg loom rebuilds
# every dependency).
RUSTFLAGS="--cfg loom" cargo test -p databus-buffer --release --locked --test loom --target-dir target/loom
# The fuzz targets build (plain cargo, coverage-instrumented) and each runs a few seconds over its
# checked-in seeds (docs/testing.md).
scripts/fuzz.sh --ci 5
