#!/usr/bin/env bash
# Polling benchmark (BENCHMARKS.md): agent vs a libmodbus C loop, same simulators, same run.
#   scripts/bench-poll.sh [SECONDS] [POLL_INTERVAL_MS]
#     SECONDS per side (default 15); POLL_INTERVAL_MS 1 = as fast as possible (default),
#     100 = 100k tags/s (10 devices x 1000 points x 10/s) to read the CPU cost at that rate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-peers.sh >/dev/null
cargo build --release --locked -p edge-agent -p instrument-sim --bins
cargo build --release --locked -p e2e-tests --bin poll_bench
exec target/release/poll_bench "${1:-15}" "${2:-1}"
