#!/usr/bin/env bash
# Live push benchmark (BENCHMARKS.md, "Live push (issue #13)"): SUBS SSE subscribers
# (default 1000, one instrument twin each) on one hub while gRPC clients ingest RATE
# readings/s (default 10000) for SECONDS (default 30): commit-to-delivery p50/p99,
# hub RSS per subscriber, hub CPU. Debug builds (a release build takes ~9 min on the
# 2-core machine); set QI_BIN_DIR=target/release after building release to measure that.
#   scripts/bench-live.sh [SUBS] [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p cloud-hub --bins
cargo build --locked -p e2e-tests --bin live_bench
exec target/debug/live_bench "${1:-1000}" "${2:-10000}" "${3:-30}"
