#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and optionally runs each for a while.
#
#   scripts/fuzz.sh                  build every target with cargo-fuzz (AddressSanitizer)
#   scripts/fuzz.sh 60               build, then run each target for 60 seconds
#   scripts/fuzz.sh 60 filter_parser ... only the named targets
#   scripts/fuzz.sh --ci [SECONDS]   what CI does (scripts/test.sh): build the targets with plain cargo
#                                    (no cargo-fuzz install, no sanitizer), then run each libFuzzer
#                                    binary for SECONDS (default 5) over the checked-in seeds
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 unlocks on stable;
# it is installed from crates.io when missing. The --ci mode needs neither: coverage instrumentation
# (sancov) uses stable -C flags, and libfuzzer-sys links libFuzzer itself. Seeds live in
# fuzz/seeds/<target> (checked in); new inputs go to fuzz/corpus/<target> and crashes to
# fuzz/artifacts/<target> (both ignored by git). A crash makes the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if [ "${1:-}" = "--ci" ]; then
  seconds=${2:-5}
  host=$(rustc -vV | sed -n 's/^host: //p')
  # The flags cargo-fuzz passes, minus the sanitizer. --target keeps them off build scripts.
  export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
  target_dir=target/ci
  cargo build --release --locked --bins --target "$host" --target-dir "$target_dir"
  for target in frame_decoder checkpoint_parser filter_parser; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "fuzz: running $target for ${seconds}s over seeds/$target" >&2
    "$target_dir/$host/release/$target" "corpus/$target" "seeds/$target" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" 2>"artifacts/$target.log" || {
      tail -n 40 "artifacts/$target.log" >&2
      echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
      exit 1
    }
    grep -E '^stat::number_of_executed_units' "artifacts/$target.log" >&2 || true
  done
  exit 0
fi

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
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1
  done
fi
