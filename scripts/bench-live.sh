#!/usr/bin/env bash
# Live push benchmark (BENCHMARKS.md, "Live push (issue #13)"): SUBS SSE subscribers
# (default 1000, one instrument twin each) on one hub while gRPC clients ingest RATE
# readings/s (default 10000) for SECONDS (default 30): commit-to-delivery p50/p99,
# hub RSS per subscriber, hub CPU. Release builds of the hub and the bench client.
#   scripts/bench-live.sh [SUBS] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked -p cloud-hub --bins
cargo build --release --locked -p e2e-tests --bin live_bench
QI_BIN_DIR="$PWD/target/release" exec target/release/live_bench "${1:-1000}" "${2:-10000}" "${3:-30}"
