#!/usr/bin/env bash
# The load benchmark (examples/load/): installs wrk, which drives the rows that carry no state
# from one request to the next, when it is missing, then runs the benchmark with these arguments,
# e.g. bench/run.sh --seconds 10. Set TEST_DATABASE_URL for the PostgreSQL rows, and run
# tests/interop/run.sh once (it installs oidc-provider) for the reference row.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wrk >/dev/null
fi
exec cargo run --locked --release --example load -- "$@"
