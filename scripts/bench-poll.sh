#!/usr/bin/env bash
# Polling benchmark (BENCHMARKS.md): agent vs a libmodbus C loop, same simulators, same run.
#   scripts/bench-poll.sh [SECONDS]     (default 15 s per side)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-peers.sh >/dev/null
cargo build --release --locked -p edge-agent -p instrument-sim --bins
cargo build --release --locked -p e2e-tests --bin poll_bench
exec target/release/poll_bench "${1:-15}"
