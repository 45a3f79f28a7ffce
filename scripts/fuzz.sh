#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and optionally runs each for a while.
#
#   scripts/fuzz.sh            build every target (what CI does)
#   scripts/fuzz.sh 60         build, then run each target for 60 seconds
#   scripts/fuzz.sh 60 filter_parser   ... only the named targets
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer=address, sancov), which
# RUSTC_BOOTSTRAP=1 unlocks on stable. Installs cargo-fuzz from crates.io when it is missing. Corpora go
# to fuzz/corpus/<target> and crashes to fuzz/artifacts/<target> (both ignored by git); a crash makes the
# script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

seconds=${1:-0}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Release code with debug assertions and overflow checks, under AddressSanitizer (cargo-fuzz's default).
cargo fuzz build
if [ "$seconds" -gt 0 ]; then
  for target in "${targets[@]}"; do
    echo "fuzz: running $target for ${seconds}s" >&2
    mkdir -p "corpus/$target"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1
  done
fi
