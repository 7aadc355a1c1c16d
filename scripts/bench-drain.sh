#!/usr/bin/env bash
# Store-and-forward benchmark (BENCHMARKS.md): buffer append rate, backlog drain to a live
# hub, agent RSS, and the database's raw insert rate in the same run.
#   scripts/bench-drain.sh [READINGS]     (default 10,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p edge-agent -p cloud-hub --bins
cargo build --release --locked -p e2e-tests --bin drain_bench
exec target/release/drain_bench "${1:-10000000}"
