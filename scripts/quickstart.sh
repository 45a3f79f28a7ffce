#!/usr/bin/env bash
# The README's first command: see databus capture changes from a private MariaDB, end to end.
# It runs scripts/setup.sh (which installs Debian's mariadb-server only if it is missing, and nothing
# else), builds the databus binary, and runs `databus quickstart`: a private MariaDB in a temporary
# directory, a relay, a small workload, and each change printed as it arrives. Everything it starts is
# stopped and removed when it ends. Extra arguments go to `databus quickstart` (e.g. --rows 50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "quickstart: building databus (the first build takes a few minutes)" >&2
cargo build --quiet --locked -p databus-cli
exec "${CARGO_TARGET_DIR:-target}/debug/databus" quickstart "$@"
