#!/usr/bin/env bash
# Installs what building and testing databus-rs needs on a fresh Debian machine: the Rust toolchain is
# expected; this adds Debian's MariaDB server, Debian's PostgreSQL and Debian's redis-server (the tests
# start private instances of all three), Debian's sysbench (the write load of the replica's tests and
# benchmark), Debian's
# chromium (the status page tests render pages headless) and g++ (libFuzzer, for the fuzz targets) when
# missing.
# Safe to run again: it only installs what is absent.
set -euo pipefail

have_mariadbd() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]
}

if ! have_mariadbd; then
  echo "setup: installing Debian's mariadb-server (the tests start private MariaDB instances)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    mariadb-server mariadb-client >/dev/null
  # The package starts a system-wide server; the project never uses it.
  $SUDO service mariadb stop >/dev/null 2>&1 || true
fi

have_postgres() {
  { command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; } ||
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}

if ! have_postgres; then
  echo "setup: installing Debian's postgresql (the tests start private PostgreSQL instances)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    postgresql >/dev/null
  # The package starts a system-wide cluster; the project never uses it.
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

# The cache invalidator example and its tests use a private redis-server (databus-testkit's Redis).
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  echo "setup: installing Debian's redis-server (the cache invalidator's tests start private Redis servers)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system-wide server; the project never uses it.
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

# `databus replicate`'s load test and benchmark drive the source MariaDB with sysbench's OLTP workload.
if ! command -v sysbench >/dev/null 2>&1; then
  echo "setup: installing Debian's sysbench (the replica's load test writes with sysbench oltp_write_only)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends sysbench >/dev/null
fi

# The fuzz targets (scripts/fuzz.sh --ci) link libFuzzer, which libfuzzer-sys compiles from C++.
if ! command -v c++ >/dev/null 2>&1; then
  echo "setup: installing g++ (libFuzzer for the fuzz targets is C++)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

# Headless Chromium renders the HTML status pages in their tests.
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium (the status page tests render pages in headless Chromium)" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

for tool in cargo rustfmt cargo-clippy; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup: $tool is missing; install the Rust toolchain with rustfmt and clippy (rustup)" >&2
    exit 1
  fi
done
